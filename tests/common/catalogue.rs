//! Smoke runs of catalogue recipes: a TEST_DB of short tests, and checks of what each left in
//! the results.
use super::*;
use serde_json::{json, Value};
use std::path::Path;

/// The smoke parameters every catalogue run shares: one iteration of a 1 s tcp_stream per IP
/// version, five pings, no offload sub-configurations.
pub fn smoke(extra: Value) -> Value {
    let mut p = json!({
        "perf_iterations": 1,
        "perf_duration": 1,
        "perf_tests": ["tcp_stream"],
        "offload_combinations": [],
        "ping_count": 5,
        "ping_interval": 0.2,
    });
    if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            p.insert(k.clone(), v.clone());
        }
    }
    p
}

/// [`smoke`] without `offload_combinations` (recipes without OffloadSubConfigMixin).
pub fn smoke_no_offloads(extra: Value) -> Value {
    let mut p = smoke(extra);
    if let Some(o) = p.as_object_mut() {
        o.remove("offload_combinations");
    }
    p
}

/// Write a TEST_DB of `(recipe, params)` into `home`; returns its path.
pub fn test_db(home: &Path, tests: &[(&str, Value)]) -> String {
    let db: Vec<Value> = tests
        .iter()
        .map(|(r, p)| json!({"recipe_name": r, "params": p}))
        .collect();
    let path = home.join("test_db.json");
    std::fs::write(&path, serde_json::to_string_pretty(&db).unwrap()).unwrap();
    path.to_string_lossy().into_owned()
}

/// What one test's run data holds.
#[derive(Debug, Default)]
pub struct RunSummary {
    pub pings: usize,
    pub flows: usize,
    pub failed: Vec<String>,
}

/// Check test `idx` (`<idx>_<recipe>`) PASSed with `pings` ping results and `flows` flow
/// measurements, every flow with non-zero generator and receiver throughput, and every
/// ping result with replies.
pub fn assert_passed(results: &Path, idx: usize, recipe: &str, pings: usize, flows: usize) {
    assert_passed_isolated(results, idx, recipe, pings, 0, flows)
}

/// [`assert_passed`] where `isolated` of the ping results are between endpoints that must not
/// reach each other: exactly that many got no reply (and PASSed, as the whole test did).
pub fn assert_passed_isolated(
    results: &Path,
    idx: usize,
    recipe: &str,
    pings: usize,
    isolated: usize,
    flows: usize,
) {
    let path = results.join(format!("{idx}_{recipe}/run-data-0.json"));
    let data = read_json(&path);
    let list = data.as_array().cloned().unwrap_or_default();
    // The whole failed entry: device and job results have no description.
    let failed: Vec<String> = list
        .iter()
        .filter(|r| r["result"] == "FAIL")
        .map(|r| r.to_string())
        .collect();
    assert!(failed.is_empty(), "{recipe}: FAIL results: {failed:#?}");
    let flow: Vec<&Value> = list
        .iter()
        .filter(|r| r["measurement_type"] == "flow")
        .collect();
    assert_eq!(flow.len(), flows, "{recipe}: flows in {}", path.display());
    for f in &flow {
        for side in ["generator_results", "receiver_results"] {
            assert!(
                f["data"][side].as_f64().unwrap_or(0.0) > 0.0,
                "{recipe}: {side} zero: {f:#}"
            );
        }
    }
    let ping: Vec<&Value> = list
        .iter()
        .filter(|r| r["measurement_type"] == "ping")
        .collect();
    assert_eq!(
        ping.len(),
        pings,
        "{recipe}: ping results in {}",
        path.display()
    );
    let silent = ping
        .iter()
        .filter(|p| p["data"]["recv_pkts"].as_u64().unwrap_or(0) == 0)
        .count();
    assert_eq!(
        silent, isolated,
        "{recipe}: pings without reply (only the isolated pairs may have none): {ping:#?}"
    );
    let summary = read_json(&results.join("summary.json"));
    let t = summary["tests"]
        .as_array()
        .and_then(|a| a.get(idx))
        .cloned()
        .unwrap_or_default();
    assert_eq!(t["result"], "PASS", "{recipe}: {t:#}");
}

/// The packet asserts of test `idx`: each PASSed and matched at least `min` packets; their
/// number.
pub fn packet_asserts(results: &Path, idx: usize, recipe: &str, min: u64) -> usize {
    let path = results.join(format!("{idx}_{recipe}/run-data-0.json"));
    let data = read_json(&path);
    let asserts: Vec<&Value> = data
        .as_array()
        .map(|a| a.iter().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| {
            r["description"]
                .as_str()
                .is_some_and(|d| d.starts_with("PacketAssert"))
        })
        .collect();
    for a in &asserts {
        assert_eq!(a["result"], "PASS", "{recipe}: {a:#}");
        let d = a["description"].as_str().unwrap_or_default();
        let n: u64 = d
            .split(": ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!(n >= min, "{recipe}: {d}");
    }
    asserts.len()
}
