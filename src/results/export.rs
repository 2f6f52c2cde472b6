//! Results layout writer (README "Results"; upstream `container_files/controller/container_runner.py`).
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
use super::nofollow::{DirFd, EntryError, Kind, TEMP_PREFIX};
use crate::config::FormatterKind;
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

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
    #[error("results directory {} is a symbolic link: set LNST_RESULTS_DIR to the directory itself (links inside it are never followed)", path.display())]
    DirIsLink { path: PathBuf },
    #[error("{0}")]
    Entry(#[from] EntryError),
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

/// Writes the results layout under one directory, never through a link (see
/// [`super::nofollow`]): a result entry that is a symbolic link is an error.
#[derive(Debug, Clone)]
pub struct Exporter {
    dir: PathBuf,
    root: Arc<DirFd>,
}

/// Entries examined when checking an existing test directory before the run; the check is
/// an early report only (every write checks again), so a huge old tree is not walked whole.
const CHECK_LIMIT: usize = 10_000;

impl Exporter {
    /// Create (if needed) the results directory, open it (it must not itself be a link; links
    /// among its parents are the user's path and are followed), check that a file can be
    /// created in it, and that `summary.json`, `junit.xml` and `results.zip` are not links.
    pub fn new(results_dir: &Path) -> Result<Exporter, ExportError> {
        let not_writable = |source| ExportError::NotWritable {
            path: results_dir.to_path_buf(),
            source,
        };
        if let Err(e) = fs::create_dir_all(results_dir) {
            // A link to a directory passes create_dir_all; a dangling one does not.
            let is_link = fs::symlink_metadata(results_dir)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false);
            if !is_link {
                return Err(not_writable(e));
            }
        }
        let root = DirFd::open(results_dir).map_err(|e| match e {
            EntryError::Io { source, .. } => not_writable(source),
            EntryError::Symlink { path } => ExportError::DirIsLink { path },
            other => ExportError::Entry(other),
        })?;
        // The write check: an unnamed-in-advance file, created exclusively and removed.
        let (probe, f) = root.create_temp().map_err(|e| match e {
            EntryError::Io { source, .. } => not_writable(source),
            other => ExportError::Entry(other),
        })?;
        drop(f);
        root.remove_quietly(&probe);
        for name in RESERVED {
            root.check_file_slot(OsStr::new(name))?;
        }
        Ok(Exporter {
            dir: results_dir.to_path_buf(),
            root: Arc::new(root),
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

    /// Before the run: the directories of these tests, where they exist already (an earlier
    /// run), hold no links. Reports what [`Exporter::write_test`] would refuse after the run.
    pub fn check_tests<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ExportError> {
        let mut budget = CHECK_LIMIT;
        for id in ids {
            self.test_dir(id)?;
            match self.root.kind(OsStr::new(id))? {
                None => {}
                Some(Kind::Dir) => {
                    let d = self.root.open_subdir(OsStr::new(id))?;
                    check_tree(&d, &mut budget)?;
                }
                Some(Kind::Symlink) => {
                    return Err(ExportError::Entry(EntryError::Symlink {
                        path: self.dir.join(id),
                    }))
                }
                Some(_) => {
                    return Err(ExportError::Entry(EntryError::NotPlain {
                        path: self.dir.join(id),
                        expected: "directory",
                    }))
                }
            }
        }
        Ok(())
    }

    /// Write one test's directory: run data, summary log, crash log, raw files.
    pub fn write_test(&self, t: &TestOutcome) -> Result<(), ExportError> {
        self.test_dir(&t.id)?;
        // Validate every raw name before writing anything.
        let mut raw = Vec::with_capacity(t.raw.len());
        for (name, data) in &t.raw {
            let rel = safe_relative(name)
                .ok_or_else(|| ExportError::UnsafeRawName(name.clone(), t.id.clone()))?;
            raw.push((rel, data));
        }
        let dir = self.root.subdir(OsStr::new(&t.id))?;
        let logs = dir.subdir(OsStr::new("logs"))?;

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
            dir.write_file(OsStr::new(&format!("run-data-{i}.json")), text.as_bytes())?;
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
        logs.write_file(OsStr::new("result_summary.log"), summary.as_bytes())?;
        if !crash.is_empty() {
            logs.write_file(OsStr::new("crash.log"), crash.as_bytes())?;
        }
        if !raw.is_empty() {
            let raw_dir = dir.subdir(OsStr::new("raw"))?;
            for (rel, data) in raw {
                let parts: Vec<&OsStr> = rel.iter().collect();
                let Some((file, parents)) = parts.split_last() else {
                    continue;
                };
                let mut d = None;
                for p in parents {
                    let next = d.as_ref().unwrap_or(&raw_dir).subdir(p)?;
                    d = Some(next);
                }
                d.as_ref().unwrap_or(&raw_dir).write_file(file, data)?;
            }
        }
        tracing::debug!(test = %t.id, dir = %dir.path().display(), "test results written");
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
                "agents_s": t.agents_s,
                "phases_s": t.phases,
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
        self.root
            .write_file(OsStr::new("summary.json"), text.as_bytes())?;
        self.root
            .write_file(OsStr::new("junit.xml"), junit_xml(tests).as_bytes())?;
        self.write_zip()
    }

    fn write_zip(&self) -> Result<(), ExportError> {
        let final_path = self.dir.join(ZIP_NAME);
        self.root.check_file_slot(OsStr::new(ZIP_NAME))?;
        let (tmp, f) = self.root.create_temp()?;
        let tmp_path = self.dir.join(&tmp);
        let result = (|| {
            let zip_err = |source| ExportError::Zip {
                path: final_path.clone(),
                source,
            };
            let mut zw = zip::ZipWriter::new(io::BufWriter::new(f));
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .large_file(true);
            let mut count = 0usize;
            add_tree(&self.root, "", &mut |name, mut input| {
                zw.start_file(name, opts).map_err(zip_err)?;
                io::copy(&mut input, &mut zw).map_err(io_err(&tmp_path))?;
                count += 1;
                Ok(())
            })?;
            let mut w = zw.finish().map_err(zip_err)?;
            io::Write::flush(&mut w).map_err(io_err(&tmp_path))?;
            Ok(count)
        })();
        let count = match result {
            Ok(c) => c,
            Err(e) => {
                self.root.remove_quietly(&tmp);
                return Err(e);
            }
        };
        self.root.rename_into_place(&tmp, OsStr::new(ZIP_NAME))?;
        tracing::info!(path = %final_path.display(), files = count, "results archive written");
        Ok(())
    }
}

/// No link anywhere below `d` (a test directory of an earlier run), within `budget` entries.
fn check_tree(d: &DirFd, budget: &mut usize) -> Result<(), ExportError> {
    for (name, kind) in d.entries()? {
        if *budget == 0 {
            return Ok(());
        }
        *budget -= 1;
        match kind {
            Kind::Symlink => {
                return Err(ExportError::Entry(EntryError::Symlink {
                    path: d.path().join(&name),
                }))
            }
            Kind::Dir => check_tree(&d.open_subdir(&name)?, budget)?,
            Kind::File | Kind::Other => {}
        }
    }
    Ok(())
}

/// Every regular file below `d`, in path order, as (`prefix` + relative name, open file);
/// links, FIFOs, devices, temporary files and the archive itself are left out.
fn add_tree(
    d: &DirFd,
    prefix: &str,
    add: &mut dyn FnMut(String, fs::File) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    for (name, kind) in d.entries()? {
        let text = name.to_string_lossy();
        if text.starts_with(TEMP_PREFIX) || (prefix.is_empty() && text == ZIP_NAME) {
            continue;
        }
        let rel = format!("{prefix}{text}");
        match kind {
            Kind::Dir => match d.open_subdir(&name) {
                Ok(sub) => add_tree(&sub, &format!("{rel}/"), add)?,
                // Replaced by a link since it was listed: skipped, as links are.
                Err(EntryError::Symlink { .. }) => {}
                Err(e) => return Err(e.into()),
            },
            Kind::File => {
                if let Some(f) = d.open_regular(&name)? {
                    add(rel, f)?;
                }
            }
            Kind::Symlink | Kind::Other => {
                tracing::debug!(entry = %d.path().join(&name).display(), "not a regular file: left out of the archive");
            }
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
