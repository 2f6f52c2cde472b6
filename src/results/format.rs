//! Run summary formatters in upstream LNST's shapes (`lnst/Controller/RunSummaryFormatters/`:
//! HumanReadableRunSummaryFormatter, JsonRunSummaryFormatter).
//!
//! Deviation: when `run.exception` is set, the human summary has a line
//! `FAIL <n>_Exception: <message>` (n = number of results) before the overall line; upstream
//! only shows the exception in the crash log.

use super::model::{DeviceAction, JobAction, RecipeRun, ResultEntry, ResultKind, ResultLevel};
use crate::mapper::describe_match;
use serde::Serialize;
use serde_json::{json, Value};
use std::io;

const PAD: &str = "    ";

/// Python `repr(float)` (also `str()` and what `json.dumps` writes).
pub fn py_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    // Shortest round-trip digits, as `d.ddde<exp>`.
    let e = format!("{:e}", v.abs());
    let (mant, exp) = e.split_once('e').unwrap_or((e.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if v.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = (exp + 1) as usize;
            let mut d = digits.clone();
            while d.len() < int_len {
                d.push('0');
            }
            let (ip, fp) = d.split_at(int_len);
            let fp = if fp.is_empty() { "0" } else { fp };
            format!("{sign}{ip}.{fp}")
        } else {
            let zeros = "0".repeat((-exp - 1) as usize);
            format!("{sign}0.{zeros}{digits}")
        }
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.abs())
    }
}

/// A serde_json formatter that writes what Python's `json.dumps` writes: `", "`/`": "`
/// separators when compact, 4-space indent when pretty, `ensure_ascii` escaping, Python
/// float repr.
struct PyFormatter {
    pretty: bool,
    level: usize,
    has_value: bool,
}

impl PyFormatter {
    fn newline_indent<W: ?Sized + io::Write>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(b"\n")?;
        for _ in 0..self.level {
            w.write_all(PAD.as_bytes())?;
        }
        Ok(())
    }
    fn begin<W: ?Sized + io::Write>(&mut self, w: &mut W, c: &[u8]) -> io::Result<()> {
        self.level += 1;
        self.has_value = false;
        w.write_all(c)
    }
    fn end<W: ?Sized + io::Write>(&mut self, w: &mut W, c: &[u8]) -> io::Result<()> {
        self.level = self.level.saturating_sub(1);
        if self.pretty && self.has_value {
            self.newline_indent(w)?;
        }
        w.write_all(c)
    }
    fn item<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if self.pretty {
            if !first {
                w.write_all(b",")?;
            }
            self.newline_indent(w)
        } else if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
}

impl serde_json::ser::Formatter for PyFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, v: f64) -> io::Result<()> {
        w.write_all(py_float(v).as_bytes())
    }
    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, v: f32) -> io::Result<()> {
        w.write_all(py_float(f64::from(v)).as_bytes())
    }
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        for c in fragment.chars() {
            if (' '..='~').contains(&c) {
                let mut b = [0u8; 4];
                w.write_all(c.encode_utf8(&mut b).as_bytes())?;
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(w, "\\u{:04x}", u)?;
                }
            }
        }
        Ok(())
    }
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.begin(w, b"[")
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.end(w, b"]")
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.item(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.begin(w, b"{")
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.end(w, b"}")
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.item(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

/// Serialize like Python `json.dumps(v, indent=4 if pretty else None)`.
pub fn py_json<T: Serialize + ?Sized>(v: &T, pretty: bool) -> String {
    let mut out = Vec::new();
    let fmt = PyFormatter {
        pretty,
        level: 0,
        has_value: false,
    };
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    if let Err(e) = v.serialize(&mut ser) {
        tracing::warn!("JSON formatting failed: {e}");
        return "null".to_string();
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Python `str()` of a JSON scalar.
fn py_str(v: &Value) -> String {
    match v {
        Value::Null => "None".to_string(),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::Number(n) => {
            if n.is_f64() {
                n.as_f64().map(py_float).unwrap_or_else(|| n.to_string())
            } else {
                n.to_string()
            }
        }
        Value::String(s) => s.clone(),
        // Not reached for containers; kept total.
        other => py_json(other, false),
    }
}

/// Recursive data dump: 4 spaces per level; `key: value` when the child is a single-line
/// scalar, else `key:` followed by the child's lines one level deeper (an empty dict or list
/// gives just `key:`).
fn dump_data(v: &Value, depth: usize, out: &mut Vec<String>) {
    let pad = PAD.repeat(depth);
    let child = |label: String, val: &Value, out: &mut Vec<String>| {
        let mut lines = Vec::new();
        dump_data(val, depth + 1, &mut lines);
        let inner_pad = PAD.repeat(depth + 1);
        let scalar = !matches!(val, Value::Object(_) | Value::Array(_));
        if scalar && lines.len() == 1 {
            let line = lines.pop().unwrap_or_default();
            let line = line.strip_prefix(&inner_pad).unwrap_or(&line);
            out.push(format!("{pad}{label}: {line}"));
        } else {
            out.push(format!("{pad}{label}:"));
            out.extend(lines);
        }
    };
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                child(k.clone(), val, out);
            }
        }
        Value::Array(a) => {
            for (i, val) in a.iter().enumerate() {
                child(format!("item {i}"), val, out);
            }
        }
        scalar => {
            for line in py_str(scalar).split('\n') {
                out.push(format!("{pad}{line}"));
            }
        }
    }
}

/// The `src` column of the human summary.
fn source_name(r: &ResultEntry) -> String {
    match &r.kind {
        ResultKind::Job { host, job_id, .. } => format!("Host {host} job {job_id}"),
        ResultKind::Generic | ResultKind::Measurement { .. } => "TestResult:".to_string(),
        ResultKind::DeviceConfig { action, .. } => match action {
            DeviceAction::Create { .. } => "DeviceCreateResult",
            DeviceAction::MethodCall { .. } => "DeviceMethodCallResult",
            DeviceAction::AttrSet { .. } => "DeviceAttrSetResult",
        }
        .to_string(),
    }
}

fn describe(desc: &str) -> String {
    if desc.contains('\n') {
        let lines: Vec<String> = desc
            .split('\n')
            .map(|l| {
                if l.is_empty() {
                    String::new()
                } else {
                    format!("{PAD}{l}")
                }
            })
            .collect();
        format!("\n{}", lines.join("\n"))
    } else {
        format!("\t{desc}")
    }
}

fn is_job(r: &ResultEntry, want: JobAction) -> Option<(&str, u64)> {
    match &r.kind {
        ResultKind::Job {
            host,
            job_id,
            action,
            ..
        } if *action == want => Some((host.as_str(), *job_id)),
        _ => None,
    }
}

/// Upstream `HumanReadableRunSummaryFormatter(level).format_run(run)` (no colours), with
/// the exception line described in the module docs. No trailing newline.
pub fn human_summary(run: &RecipeRun, level: ResultLevel) -> String {
    use super::model::ResultType;
    let mut lines = vec!["RUN SUMMARY".to_string(), "Description:".to_string()];
    if let Some(d) = &run.description {
        lines.extend(d.split('\n').map(str::to_string));
    }
    lines.extend(describe_match(&run.matched));

    let filtered: Vec<(usize, &ResultEntry)> = run
        .results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.result == ResultType::Fail || r.level <= level)
        .collect();
    for (pos, (idx, r)) in filtered.iter().enumerate() {
        if let Some(start) = is_job(r, JobAction::Start) {
            let folded = filtered
                .get(pos + 1)
                .and_then(|(_, next)| is_job(next, JobAction::End))
                .is_some_and(|end| end == start);
            if folded && r.result != ResultType::Fail {
                continue;
            }
        }
        lines.push(format!(
            "{} {idx}_{}{}",
            r.result,
            source_name(r),
            describe(&r.description)
        ));
        if r.data_level <= level {
            if let Some(data) = r.data.as_ref().filter(|d| !d.is_null()) {
                dump_data(data, 1, &mut lines);
            }
        }
    }
    if let Some(exc) = &run.exception {
        let body = if exc.contains('\n') {
            describe(exc)
        } else {
            format!(" {exc}")
        };
        lines.push(format!("FAIL {}_Exception:{body}", run.results.len()));
    }
    lines.push(format!(
        "Overall result of this Run: {}",
        run.overall_result()
    ));
    lines.join("\n")
}

/// One result in the upstream JSON shape (JsonRunSummaryFormatter).
pub fn result_json(r: &ResultEntry) -> Value {
    let result = r.result.as_str();
    match &r.kind {
        ResultKind::Job {
            action, command, ..
        } => json!({
            "result": result,
            "type": "job",
            "action": match action { JobAction::Start => "start", JobAction::End => "end" },
            "job": {"type": "shell", "command": command},
        }),
        ResultKind::DeviceConfig {
            host,
            netns,
            dev_id,
            action,
        } => {
            let mut o = serde_json::Map::new();
            o.insert("result".into(), json!(result));
            o.insert("type".into(), json!("device_config"));
            o.insert("host".into(), json!(host));
            o.insert("netns".into(), json!(netns));
            o.insert("dev_id".into(), json!(dev_id));
            match action {
                DeviceAction::Create {
                    cls_name,
                    args,
                    kwargs,
                } => {
                    o.insert("action".into(), json!("create"));
                    o.insert(
                        "device".into(),
                        json!({"cls_name": cls_name, "args": args, "kwargs": kwargs}),
                    );
                }
                DeviceAction::MethodCall { name, args, kwargs } => {
                    o.insert("action".into(), json!("method_call"));
                    o.insert(
                        "method".into(),
                        json!({"name": name, "args": args, "kwargs": kwargs}),
                    );
                }
                DeviceAction::AttrSet {
                    name,
                    value,
                    old_value,
                } => {
                    o.insert("action".into(), json!("attr_set"));
                    o.insert(
                        "attr".into(),
                        json!({"name": name, "value": value, "old_value": old_value}),
                    );
                }
            }
            Value::Object(o)
        }
        ResultKind::Measurement {
            measurement_type,
            summary,
        } => json!({
            "result": result,
            "type": "measurement",
            "measurement_type": measurement_type,
            "data": summary,
        }),
        ResultKind::Generic => json!({
            "result": result,
            "type": "unknown",
            "description": r.description,
        }),
    }
}

/// The exception object appended when `run.exception` is set.
pub fn exception_json(message: &str) -> Value {
    json!({"result": "FAIL", "type": "exception", "message": message})
}

/// The JSON summary list of a run as a value (used by the exporter too).
pub fn json_summary_value(run: &RecipeRun) -> Value {
    let mut list: Vec<Value> = run.results.iter().map(result_json).collect();
    if let Some(exc) = &run.exception {
        list.push(exception_json(exc));
    }
    Value::Array(list)
}

/// Upstream `JsonRunSummaryFormatter(pretty).format_run(run)`.
pub fn json_summary(run: &RecipeRun, pretty: bool) -> String {
    py_json(&json_summary_value(run), pretty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr() {
        for (v, s) in [
            (9.4, "9.4"),
            (9.0, "9.0"),
            (-0.0, "-0.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e16, "1e+16"),
            (1.2345e17, "1.2345e+17"),
            (123456789012345.6, "123456789012345.6"),
            (1e15, "1000000000000000.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-2.5, "-2.5"),
            (1e300, "1e+300"),
        ] {
            assert_eq!(py_float(v), s, "{v}");
        }
    }

    #[test]
    fn python_json_separators_and_ascii() {
        let v = json!({"a": [1, 2.0, "é\u{1F600}\u{7f}"], "b": {}, "c": []});
        assert_eq!(
            py_json(&v, false),
            r#"{"a": [1, 2.0, "\u00e9\ud83d\ude00\u007f"], "b": {}, "c": []}"#
        );
        assert_eq!(
            py_json(&v, true),
            "{\n    \"a\": [\n        1,\n        2.0,\n        \"\\u00e9\\ud83d\\ude00\\u007f\"\n    ],\n    \"b\": {},\n    \"c\": []\n}"
        );
        assert_eq!(py_json(&json!("a\"b\\\n\t"), false), r#""a\"b\\\n\t""#);
    }

    #[test]
    fn data_dump() {
        let mut out = Vec::new();
        dump_data(
            &json!({"a": "x\ny", "b": [], "c": [{"d": 1}], "e": null, "f": true}),
            1,
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                "    a:",
                "        x",
                "        y",
                "    b:",
                "    c:",
                "        item 0:",
                "            d: 1",
                "    e: None",
                "    f: True",
            ]
        );
    }
}
