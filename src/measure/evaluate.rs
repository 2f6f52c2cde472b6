//! Flow evaluators (upstream `RecipeCommon/Perf/Evaluators/`): NonzeroFlowEvaluator, and a baseline evaluator backed
//! by a JSON baseline file (upstream leaves `get_baseline`/`get_threshold` to subclasses).

use super::flow::{AggregatedFlow, FlowSpec};
use super::perf::result_averages_difference;
use std::collections::BTreeSet;
use std::path::Path;

/// Metrics the flow evaluators look at (upstream default).
pub const EVALUATED_METRICS: [&str; 2] = ["generator_results", "receiver_results"];

/// NonzeroFlowEvaluator: per metric (skipped when it has no iterations) — average = +inf →
/// FAIL "reported invalid value"; average > 0 → PASS unless some iteration's value is 0;
/// anything else → FAIL "reported zero throughput".
pub fn nonzero_flow_evaluator(flow: &AggregatedFlow) -> (bool, String) {
    let mut ok = true;
    let mut lines = vec![
        "Nonzero evaluation of flow:".to_string(),
        flow.spec.to_string(),
    ];
    for name in EVALUATED_METRICS {
        let Some(metric) = flow.metric(name) else {
            continue;
        };
        if metric.is_empty_list() {
            continue;
        }
        let avg = metric.average();
        if avg == f64::INFINITY {
            ok = false;
            lines.push(format!("{name} reported invalid value"));
        } else if avg > 0.0 {
            let zero_iterations: Vec<usize> = metric
                .items()
                .iter()
                .enumerate()
                .filter(|(_, it)| it.value() == 0.0)
                .map(|(k, _)| k + 1)
                .collect();
            if zero_iterations.is_empty() {
                lines.push(format!("{name} reported non-zero throughput"));
            } else {
                ok = false;
                let list = zero_iterations
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                lines.push(format!(
                    "{name} reported non-zero average throughput but zero throughput in iteration(s) {list}"
                ));
            }
        } else {
            ok = false;
            lines.push(format!("{name} reported zero throughput"));
        }
    }
    (ok, lines.join("\n"))
}

/// Largest baseline file read.
pub const BASELINE_FILE_LIMIT: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The file cannot be read (missing, not a regular file, larger than
    /// [`BASELINE_FILE_LIMIT`]); the message names it.
    #[error("{0}")]
    Read(#[from] crate::fsread::FsReadError),
    #[error("not valid JSON: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
    /// A parse or validation error of the file at `path`.
    #[error("{}: {source}", path.display())]
    InFile {
        path: std::path::PathBuf,
        #[source]
        source: Box<BaselineError>,
    },
}

/// One baseline entry: the expected aggregate averages (bits per second) of a flow.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineEntry {
    pub key: String,
    #[serde(default)]
    pub generator_results: Option<f64>,
    #[serde(default)]
    pub receiver_results: Option<f64>,
    /// Allowed |difference| in percent; the file's default when absent.
    #[serde(default)]
    pub threshold_pct: Option<f64>,
}

/// `{"default_threshold_pct": 5.0, "flows": [{"key", "generator_results", "receiver_results", "threshold_pct"}]}`
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineFile {
    pub default_threshold_pct: f64,
    #[serde(default)]
    pub flows: Vec<BaselineEntry>,
}

fn valid_pct(v: f64) -> bool {
    v.is_finite() && v >= 0.0
}

impl BaselineFile {
    /// Parse and validate: thresholds finite and ≥ 0, baselines finite and > 0, keys unique.
    pub fn from_json_str(text: &str) -> Result<Self, BaselineError> {
        Self::from_json_slice(text.as_bytes())
    }

    /// [`BaselineFile::from_json_str`] on bytes (not UTF-8: a JSON error).
    pub fn from_json_slice(text: &[u8]) -> Result<Self, BaselineError> {
        let file: BaselineFile = serde_json::from_slice(text)?;
        if !valid_pct(file.default_threshold_pct) {
            return Err(BaselineError::Invalid(format!(
                "default_threshold_pct must be a non-negative number, got {}",
                file.default_threshold_pct
            )));
        }
        let mut seen = BTreeSet::new();
        for e in &file.flows {
            if !seen.insert(e.key.as_str()) {
                return Err(BaselineError::Invalid(format!("duplicate key {:?}", e.key)));
            }
            if let Some(t) = e.threshold_pct {
                if !valid_pct(t) {
                    return Err(BaselineError::Invalid(format!(
                        "{:?}: threshold_pct must be a non-negative number, got {t}",
                        e.key
                    )));
                }
            }
            for (name, v) in [
                ("generator_results", e.generator_results),
                ("receiver_results", e.receiver_results),
            ] {
                if let Some(v) = v {
                    if !(v.is_finite() && v > 0.0) {
                        return Err(BaselineError::Invalid(format!(
                            "{:?}: {name} must be a positive number, got {v}",
                            e.key
                        )));
                    }
                }
            }
        }
        Ok(file)
    }

    /// Read a baseline file (the only I/O in this module): a regular file of at most
    /// [`BASELINE_FILE_LIMIT`] bytes.
    pub fn load(path: &Path) -> Result<Self, BaselineError> {
        let bytes = crate::fsread::read_regular_file(path, BASELINE_FILE_LIMIT)?;
        Self::from_json_slice(&bytes).map_err(|e| BaselineError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    pub fn entry(&self, key: &str) -> Option<&BaselineEntry> {
        self.flows.iter().find(|e| e.key == key)
    }
}

/// The key a flow's baseline is stored under:
/// `<kind>/<ip_version>/<generator>-><receiver>/msg_size=<n|None>/streams=<n>/cpupin=<a,b|None>/<sub_config>`.
/// Addresses, ports and durations are left out (they do not change the expected rate).
pub fn flow_key(spec: &FlowSpec, ip_version: &str, sub_config: &str) -> String {
    let msg = spec
        .msg_size
        .map_or_else(|| "None".to_string(), |m| m.to_string());
    let pin = spec.cpupin.as_ref().map_or_else(
        || "None".to_string(),
        |v| {
            v.iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        },
    );
    format!(
        "{}/{}/{}->{}/msg_size={}/streams={}/cpupin={}/{}",
        spec.kind,
        ip_version,
        spec.generator,
        spec.receiver,
        msg,
        spec.parallel_streams,
        pin,
        sub_config
    )
}

/// Compare a flow's aggregate averages with its baseline entry. `None` when the file has no
/// entry for `key` (the caller decides whether that is a failure). Only the metrics the
/// entry lists are compared; an entry listing none is a FAIL ("No baseline found"). Each
/// metric passes iff `|current/baseline×100 − 100| ≤ threshold`.
pub fn baseline_evaluate(
    base: &BaselineFile,
    key: &str,
    flow: &AggregatedFlow,
) -> Option<(bool, String)> {
    let entry = base.entry(key)?;
    let threshold = entry.threshold_pct.unwrap_or(base.default_threshold_pct);
    let mut ok = true;
    let mut lines = vec![
        format!("Baseline evaluation of flow (key {key}):"),
        flow.spec.to_string(),
    ];
    let mut compared = 0;
    for (name, baseline) in [
        ("generator_results", entry.generator_results),
        ("receiver_results", entry.receiver_results),
    ] {
        let Some(baseline) = baseline else { continue };
        let Some(metric) = flow.metric(name) else {
            continue;
        };
        compared += 1;
        let current = metric.average();
        if !current.is_finite() {
            ok = false;
            lines.push(format!(
                "{name}: current average is not a valid value ({current})"
            ));
            continue;
        }
        let diff = result_averages_difference(current, baseline);
        let direction = if diff < 0.0 { "lower" } else { "higher" };
        let pass = diff.abs() <= threshold;
        ok &= pass;
        lines.push(format!(
            "New {name} average is {:.2}% {direction} from the baseline. Allowed difference: {threshold}%",
            diff.abs()
        ));
    }
    if compared == 0 {
        ok = false;
        lines.push("No baseline found".to_string());
    }
    Some((ok, lines.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::flow::FlowIteration;
    use crate::measure::perf::PerfResult;

    fn spec() -> FlowSpec {
        FlowSpec {
            warmup: 0,
            cpupin: None,
            ..crate::measure::flow::tests::spec()
        }
    }

    fn it(t0: f64, gen_bits: f64, recv_bits: f64, dur: f64) -> FlowIteration {
        let r = |v: f64| {
            PerfResult::Parallel(vec![PerfResult::Sequential(vec![PerfResult::interval(
                v, dur, "bits", t0,
            )])])
        };
        FlowIteration {
            generator_results: r(gen_bits),
            generator_cpu_stats: PerfResult::interval(10.0 * dur, dur, "cpu_percent", t0),
            receiver_results: r(recv_bits),
            receiver_cpu_stats: PerfResult::interval(10.0 * dur, dur, "cpu_percent", t0),
            success: true,
        }
    }

    #[test]
    fn nonzero_pass() {
        let f = AggregatedFlow::new(
            spec(),
            vec![it(0.0, 10.0, 9.0, 1.0), it(5.0, 20.0, 19.0, 1.0)],
        );
        let (ok, text) = nonzero_flow_evaluator(&f);
        assert!(ok, "{text}");
        assert!(text.starts_with("Nonzero evaluation of flow:\nFlow(\n"));
        assert!(text.contains("generator_results reported non-zero throughput"));
        assert!(text.contains("receiver_results reported non-zero throughput"));
    }

    #[test]
    fn nonzero_one_zero_iteration_fails() {
        let f = AggregatedFlow::new(
            spec(),
            vec![it(0.0, 10.0, 9.0, 1.0), it(5.0, 0.0, 9.0, 1.0)],
        );
        let (ok, text) = nonzero_flow_evaluator(&f);
        assert!(!ok);
        assert!(text.contains("generator_results reported non-zero average throughput but zero throughput in iteration(s) 2"));
        assert!(text.contains("receiver_results reported non-zero throughput"));
    }

    #[test]
    fn nonzero_all_zero_fails() {
        let f = AggregatedFlow::new(spec(), vec![it(0.0, 0.0, 0.0, 1.0)]);
        let (ok, text) = nonzero_flow_evaluator(&f);
        assert!(!ok);
        assert!(text.contains("generator_results reported zero throughput"));
        assert!(text.contains("receiver_results reported zero throughput"));
    }

    #[test]
    fn nonzero_infinite_fails() {
        // zero duration → +inf average
        let f = AggregatedFlow::new(spec(), vec![it(0.0, 5.0, 5.0, 0.0)]);
        let (ok, text) = nonzero_flow_evaluator(&f);
        assert!(!ok);
        assert!(text.contains("generator_results reported invalid value"));
    }

    #[test]
    fn nonzero_no_iterations_is_skipped() {
        let f = AggregatedFlow::new(spec(), vec![]);
        let (ok, text) = nonzero_flow_evaluator(&f);
        assert!(ok);
        assert_eq!(text.lines().count(), 1 + spec().to_string().lines().count());
    }

    #[test]
    fn key_format() {
        assert_eq!(
            flow_key(&spec(), "ipv4", "offload gro=on"),
            "tcp_stream/ipv4/host1->host2/msg_size=None/streams=1/cpupin=None/offload gro=on"
        );
        let s = FlowSpec {
            msg_size: Some(1400),
            cpupin: Some(vec![2, 3]),
            ..spec()
        };
        assert_eq!(
            flow_key(&s, "ipv6", ""),
            "tcp_stream/ipv6/host1->host2/msg_size=1400/streams=1/cpupin=2,3/"
        );
    }

    fn baseline() -> BaselineFile {
        BaselineFile::from_json_str(
            r#"{"default_threshold_pct": 5.0, "flows": [
                {"key": "k1", "generator_results": 100.0, "receiver_results": 100.0},
                {"key": "k2", "generator_results": 100.0, "threshold_pct": 2.5}
            ]}"#,
        )
        .unwrap()
    }

    #[test]
    fn baseline_within_threshold() {
        // generator 96.79/s (−3.21 %), receiver 104/s (+4 %): both within 5 %
        let f = AggregatedFlow::new(spec(), vec![it(0.0, 96.79, 104.0, 1.0)]);
        let (ok, text) = baseline_evaluate(&baseline(), "k1", &f).unwrap();
        assert!(ok, "{text}");
        assert!(text.contains(
            "New generator_results average is 3.21% lower from the baseline. Allowed difference: 5%"
        ));
        assert!(text.contains(
            "New receiver_results average is 4.00% higher from the baseline. Allowed difference: 5%"
        ));
    }

    #[test]
    fn baseline_outside_threshold() {
        let f = AggregatedFlow::new(spec(), vec![it(0.0, 96.79, 104.0, 1.0)]);
        // k2: threshold 2.5 %, only generator compared
        let (ok, text) = baseline_evaluate(&baseline(), "k2", &f).unwrap();
        assert!(!ok);
        assert!(text.contains("3.21% lower from the baseline. Allowed difference: 2.5%"));
        assert!(!text.contains("receiver_results average"));
        // time-weighted: 1 s at 90 and 3 s at 322/3 → 412/4 = 103 (+3 %); the plain mean of
        // the two averages would be 98.67 (−1.33 %). Receiver: 400/4 = 100 (0 %).
        let f = AggregatedFlow::new(
            spec(),
            vec![it(0.0, 90.0, 100.0, 1.0), it(5.0, 322.0, 300.0, 3.0)],
        );
        let (ok, text) = baseline_evaluate(&baseline(), "k1", &f).unwrap();
        assert!(ok, "{text}");
        assert!(text.contains("New generator_results average is 3.00% higher"));
        assert!(text.contains("New receiver_results average is 0.00% higher"));
        assert!(baseline_evaluate(&baseline(), "nope", &f).is_none());
    }

    #[test]
    fn baseline_entry_without_metrics_fails() {
        let b =
            BaselineFile::from_json_str(r#"{"default_threshold_pct": 5, "flows": [{"key": "k"}]}"#)
                .unwrap();
        let f = AggregatedFlow::new(spec(), vec![it(0.0, 1.0, 1.0, 1.0)]);
        let (ok, text) = baseline_evaluate(&b, "k", &f).unwrap();
        assert!(!ok);
        assert!(text.ends_with("No baseline found"));
    }

    #[test]
    fn baseline_file_validation() {
        assert!(BaselineFile::from_json_str("{").is_err());
        assert!(BaselineFile::from_json_str(r#"{"default_threshold_pct": -1}"#).is_err());
        assert!(BaselineFile::from_json_str(
            r#"{"default_threshold_pct": 5, "flows": [{"key": "a"}, {"key": "a"}]}"#
        )
        .is_err());
        assert!(BaselineFile::from_json_str(
            r#"{"default_threshold_pct": 5, "flows": [{"key": "a", "generator_results": 0}]}"#
        )
        .is_err());
        assert!(BaselineFile::from_json_str(
            r#"{"default_threshold_pct": 5, "flows": [{"key": "a", "typo": 1}]}"#
        )
        .is_err());
    }

    #[test]
    fn baseline_load_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("baseline.json");
        std::fs::write(&p, r#"{"default_threshold_pct": 5.0, "flows": []}"#).unwrap();
        assert_eq!(BaselineFile::load(&p).unwrap().default_threshold_pct, 5.0);
        assert!(matches!(
            BaselineFile::load(&dir.path().join("missing.json")),
            Err(BaselineError::Read(_))
        ));
        // Special files are refused at once, not read forever (/dev/zero grew to 1.5 GiB).
        let e = BaselineFile::load(Path::new("/dev/zero"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("/dev/zero: not a regular file (a character device)")
        );
        std::fs::write(&p, r#"{"default_threshold_pct": -1}"#).unwrap();
        let e = BaselineFile::load(&p)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            e,
            format!(
                "{}: default_threshold_pct must be a non-negative number, got -1",
                p.display()
            )
        );
    }
}
