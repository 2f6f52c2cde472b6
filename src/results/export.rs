//! Results layout writer (DESIGN.md "Results"; upstream container runner, reference §5.7).
//!
//! ```text
//! <results>/<test_id>/run-data-<i>.json        pretty JSON, upstream list shape (+ "details")
//! <results>/<test_id>/logs/result_summary.log   human summary of every run at DEBUG level
//! <results>/<test_id>/logs/crash.log            when the test errored or a run raised
//! <results>/<test_id>/raw/<name>                raw tool output
//! <results>/summary.json, junit.xml, results.zip
//! ```
//! Runs are numbered from 0 (`run-data-0.json`), as upstream's `enumerate`.

use super::format::{exception_json, human_summary, json_summary_value, py_json, result_json};
use super::model::{RecipeRun, ResultKind, ResultLevel, ResultType, TestOutcome};
use crate::config::FormatterKind;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Name of the archive written last by [`Exporter::finish`].
pub const ZIP_NAME: &str = "results.zip";
const RESERVED: &[&str] = &["summary.json", "junit.xml", ZIP_NAME];

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("results directory {} is not writable: {source}; if it is a bind mount on an SELinux host, add ':z' to the volume (-v ./results:/root/.lnst/results:z) or run the container with --security-opt label=disable", path.display())]
    NotWritable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("test id '{0}' cannot be used as a directory name (empty, '.', '..', reserved, or contains '/', '\\' or NUL)")]
    UnsafeId(String),
    #[error("raw file name '{0}' of test {1} is not a safe relative path")]
    UnsafeRawName(String, String),
    #[error("writing {}: {source}", path.display())]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `id` is a single safe path component.
pub fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 200
        && !RESERVED.contains(&id)
        && !id.chars().any(|c| c == '/' || c == '\\' || c == '\0')
}

/// A relative path without `..`, root or prefix components.
fn safe_relative(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('\0') || name.contains('\\') {
        return None;
    }
    let p = Path::new(name);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    }
}

/// PASS, or FAIL for anything else (WARNING is reported as FAIL, as upstream's runner).
fn pass_fail(r: ResultType) -> &'static str {
    if r == ResultType::Pass {
        "PASS"
    } else {
        "FAIL"
    }
}

fn overall(tests: &[TestOutcome]) -> ResultType {
    tests.iter().fold(ResultType::Pass, |acc, t| {
        acc.max_severity(t.overall_result())
    })
}

/// 0 iff every test PASSed, else 1.
pub fn exit_code(tests: &[TestOutcome]) -> i32 {
    if overall(tests) == ResultType::Pass {
        0
    } else {
        1
    }
}

/// `run-data-<i>.json` list: the JSON summary, measurements carrying `details` (full data).
pub fn run_data_value(run: &RecipeRun) -> Value {
    let mut list: Vec<Value> = Vec::with_capacity(run.results.len() + 1);
    for r in &run.results {
        let mut v = result_json(r);
        // Measurements carry their full data; so do plain results that have data (the
        // runner's per-agent results: kernel release, agent source, accelerator).
        if let (
            ResultKind::Measurement { .. } | ResultKind::Generic,
            Some(data),
            Value::Object(o),
        ) = (&r.kind, &r.data, &mut v)
        {
            o.insert("details".to_string(), data.clone());
        }
        list.push(v);
    }
    if let Some(exc) = &run.exception {
        list.push(exception_json(exc));
    }
    Value::Array(list)
}

/// Writes the results layout under one directory.
#[derive(Debug, Clone)]
pub struct Exporter {
    dir: PathBuf,
}

impl Exporter {
    /// Create (if needed) the results directory and check that it is writable.
    pub fn new(results_dir: &Path) -> Result<Exporter, ExportError> {
        let not_writable = |source| ExportError::NotWritable {
            path: results_dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(results_dir).map_err(not_writable)?;
        let probe = results_dir.join(format!(".lnst-write-test-{}", std::process::id()));
        fs::write(&probe, b"").map_err(not_writable)?;
        let _ = fs::remove_file(&probe);
        Ok(Exporter {
            dir: results_dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Directory of one test (validates the id).
    pub fn test_dir(&self, id: &str) -> Result<PathBuf, ExportError> {
        if !is_safe_id(id) {
            return Err(ExportError::UnsafeId(id.to_string()));
        }
        Ok(self.dir.join(id))
    }

    fn write(&self, path: &Path, data: &[u8]) -> Result<(), ExportError> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        fs::write(path, data).map_err(io_err(path))
    }

    /// Write one test's directory: run data, summary log, crash log, raw files.
    pub fn write_test(&self, t: &TestOutcome) -> Result<(), ExportError> {
        let dir = self.test_dir(&t.id)?;
        // Validate every raw name before writing anything.
        let mut raw = Vec::with_capacity(t.raw.len());
        for (name, data) in &t.raw {
            let rel = safe_relative(name)
                .ok_or_else(|| ExportError::UnsafeRawName(name.clone(), t.id.clone()))?;
            raw.push((rel, data));
        }
        let logs = dir.join("logs");
        fs::create_dir_all(&logs).map_err(io_err(&logs))?;

        let mut summary = String::new();
        let mut crash = String::new();
        if let Some(e) = &t.error {
            let _ = writeln!(crash, "test {} ({}) failed: {e}", t.id, t.recipe);
        }
        for (i, run) in t.runs.iter().enumerate() {
            let mut text = py_json(&run_data_value(run), true);
            if text == "null" {
                let msg = format!("could not format the results of run {i}");
                text = py_json(&json!([exception_json(&msg)]), true);
            }
            self.write(&dir.join(format!("run-data-{i}.json")), text.as_bytes())?;
            summary.push_str(&human_summary(run, ResultLevel::Debug));
            summary.push('\n');
            if let Some(exc) = &run.exception {
                let _ = writeln!(
                    crash,
                    "test {} ({}) run {i}: Recipe execution terminated by unexpected exception:\n{exc}",
                    t.id, t.recipe
                );
            }
        }
        self.write(&logs.join("result_summary.log"), summary.as_bytes())?;
        if !crash.is_empty() {
            self.write(&logs.join("crash.log"), crash.as_bytes())?;
        }
        let raw_dir = dir.join("raw");
        for (rel, data) in raw {
            self.write(&raw_dir.join(rel), data)?;
        }
        tracing::debug!(test = %t.id, dir = %dir.display(), "test results written");
        Ok(())
    }

    /// Write `summary.json`, `junit.xml` and last `results.zip`.
    pub fn finish(&self, tests: &[TestOutcome]) -> Result<(), ExportError> {
        let summary = json!({
            "overall": pass_fail(overall(tests)),
            "tests": tests.iter().map(|t| json!({
                "id": t.id,
                "recipe": t.recipe,
                "result": t.overall_result().as_str(),
                "duration_s": t.duration_s,
                "tool_time_s": t.tool_time_s,
                "error": t.error,
                "runs": t.runs.iter().map(|r| {
                    let mut run = json!({
                        "result": r.overall_result().as_str(),
                        "exception": r.exception,
                    });
                    // Each agent's kernel release, source and (VMs) accelerator, when known.
                    if let (false, Value::Object(o)) = (r.agents.is_empty(), &mut run) {
                        o.insert("agents".into(), json!(r.agents));
                    }
                    run
                }).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        let mut text = py_json(&summary, true);
        text.push('\n');
        self.write(&self.dir.join("summary.json"), text.as_bytes())?;
        self.write(&self.dir.join("junit.xml"), junit_xml(tests).as_bytes())?;
        self.write_zip()
    }

    fn write_zip(&self) -> Result<(), ExportError> {
        let final_path = self.dir.join(ZIP_NAME);
        let tmp_name = format!(".{ZIP_NAME}.tmp");
        let tmp_path = self.dir.join(&tmp_name);
        let mut files = Vec::new();
        collect_files(&self.dir, Path::new(""), &mut files).map_err(io_err(&self.dir))?;
        files.retain(|rel| {
            rel.as_path() != Path::new(ZIP_NAME) && rel.as_path() != Path::new(&tmp_name)
        });
        files.sort();
        let zip_err = |source| ExportError::Zip {
            path: final_path.clone(),
            source,
        };
        let f = fs::File::create(&tmp_path).map_err(io_err(&tmp_path))?;
        let mut zw = zip::ZipWriter::new(io::BufWriter::new(f));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        for rel in &files {
            let name = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            zw.start_file(name, opts).map_err(zip_err)?;
            let src = self.dir.join(rel);
            let mut input = fs::File::open(&src).map_err(io_err(&src))?;
            io::copy(&mut input, &mut zw).map_err(io_err(&tmp_path))?;
        }
        let mut w = zw.finish().map_err(zip_err)?;
        io::Write::flush(&mut w).map_err(io_err(&tmp_path))?;
        drop(w);
        fs::rename(&tmp_path, &final_path).map_err(io_err(&final_path))?;
        tracing::info!(path = %final_path.display(), files = files.len(), "results archive written");
        Ok(())
    }
}

/// Regular files under `root/rel`, relative to `root`; symlinks are not followed.
fn collect_files(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let ft = entry.file_type()?;
        let child = rel.join(entry.file_name());
        if ft.is_dir() {
            collect_files(root, &child, out)?;
        } else if ft.is_file() {
            out.push(child);
        }
    }
    Ok(())
}

/// XML-escape text or an attribute value; characters XML 1.0 cannot carry are dropped.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' => o.push_str("&#10;"),
            '\r' => o.push_str("&#13;"),
            '\t' => o.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => o.push(c),
        }
    }
    o
}

/// Why a test did not pass: its error, each run's exception, failing/warning results.
fn failure_reasons(t: &TestOutcome) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(e) = &t.error {
        v.push(e.clone());
    }
    if t.error.is_none() && t.runs.is_empty() {
        v.push("no run".to_string());
    }
    for (i, run) in t.runs.iter().enumerate() {
        for r in &run.results {
            if r.result != ResultType::Pass {
                v.push(format!("run {i}: {} {}", r.result, r.description));
            }
        }
        if let Some(exc) = &run.exception {
            v.push(format!("run {i}: exception: {exc}"));
        }
    }
    v
}

/// JUnit XML: one testsuite `lnst-runner`, one testcase per test.
pub fn junit_xml(tests: &[TestOutcome]) -> String {
    let failures = tests
        .iter()
        .filter(|t| t.overall_result() != ResultType::Pass)
        .count();
    let total: f64 = tests.iter().map(|t| t.duration_s).sum();
    let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        o,
        "<testsuites name=\"lnst-runner\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{total:.3}\">",
        tests.len()
    );
    let _ = writeln!(
        o,
        "  <testsuite name=\"lnst-runner\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{total:.3}\">",
        tests.len()
    );
    for t in tests {
        let _ = write!(
            o,
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            xml_escape(&t.id),
            xml_escape(&t.recipe),
            t.duration_s.max(0.0)
        );
        let result = t.overall_result();
        if result == ResultType::Pass {
            o.push_str("/>\n");
            continue;
        }
        let reasons = failure_reasons(t);
        let message = reasons.join("; ");
        let body = reasons
            .iter()
            .map(|r| xml_escape(r))
            .collect::<Vec<_>>()
            .join("\n");
        let _ = write!(
            o,
            ">\n      <failure message=\"{}\" type=\"{}\">{body}</failure>\n    </testcase>\n",
            xml_escape(&message),
            result.as_str()
        );
    }
    o.push_str("  </testsuite>\n</testsuites>\n");
    o
}

/// What the runner prints on stdout at the end: per formatter, human first, then JSON.
pub fn stdout_summary(tests: &[TestOutcome], formatters: &[FormatterKind]) -> String {
    let mut out = String::new();
    if formatters.contains(&FormatterKind::Human) {
        for t in tests {
            if let Some(e) = &t.error {
                let _ = writeln!(out, "Test {} ({}) failed: {e}", t.id, t.recipe);
            }
            for run in &t.runs {
                out.push_str(&human_summary(run, ResultLevel::Important));
                out.push('\n');
            }
        }
        for t in tests {
            let _ = writeln!(out, "  {}: {}", t.id, pass_fail(t.overall_result()));
        }
        let _ = writeln!(out, "Overall result: {}", pass_fail(overall(tests)));
    }
    if formatters.contains(&FormatterKind::Json) {
        let list: Vec<Value> = tests
            .iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "recipe": t.recipe,
                    "result": t.overall_result().as_str(),
                    "error": t.error,
                    "runs": t.runs.iter().map(json_summary_value).collect::<Vec<_>>(),
                })
            })
            .collect();
        out.push_str(&py_json(&list, false));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_safe_id("0_SimpleNetworkRecipe"));
        assert!(is_safe_id("a1b2-uuid"));
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/x",
            "a\\b",
            "a\0b",
            "summary.json",
            "results.zip",
        ] {
            assert!(!is_safe_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn raw_names() {
        assert_eq!(
            safe_relative("iperf/0.json"),
            Some(PathBuf::from("iperf/0.json"))
        );
        assert_eq!(safe_relative("./ping.txt"), Some(PathBuf::from("ping.txt")));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", ".", "a\\b"] {
            assert_eq!(safe_relative(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(
            xml_escape("a<b>&\"c'\n\u{1}"),
            "a&lt;b&gt;&amp;&quot;c&apos;&#10;"
        );
    }

    #[test]
    fn exit_codes() {
        let mut pass = TestOutcome {
            id: "a".into(),
            ..Default::default()
        };
        pass.runs.push(RecipeRun::default());
        assert_eq!(exit_code(&[pass.clone()]), 0);
        let mut warn = pass.clone();
        if let Some(r) = warn.runs.first_mut() {
            r.results.push(super::super::model::ResultEntry::generic(
                ResultType::Warning,
                "w",
            ));
        }
        assert_eq!(exit_code(&[pass.clone(), warn]), 1);
        assert_eq!(exit_code(&[TestOutcome::default()]), 1);
    }
}
