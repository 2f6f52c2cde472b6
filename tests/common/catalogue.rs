//! Smoke runs of catalogue recipes: a TEST_DB of short tests, and checks of what each left in
//! the results.
use super::vm::{assert_no_vm_leftovers, guest_release, require_vm_e2e, vm_vars};
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

/// The prerequisites of a VM TEST_DB run with packet asserts: the VM ones and tcpdump. The
/// guest kernel and its modules, or `None` to skip (under CI a missing one fails instead).
pub fn require_vm_tcpdump() -> Option<(String, String)> {
    let k = require_vm_e2e()?;
    require(
        have("tcpdump"),
        "tcpdump is not installed (.ci/run installs it)",
    )
    .then_some(k)
}

/// One TEST_DB run, finished: its home (an empty pool, its results), the runner's output.
pub struct DbRun {
    pub home: tempfile::TempDir,
    pub out: Output,
    pub text: String,
    /// `<home>/results`.
    pub res: PathBuf,
}

/// Run the TEST_DB of `tests` with the runner's environment `vars`, in a fresh home with an
/// empty pool.
pub fn run_test_db(vars: &[(&str, &str)], tests: &[(&str, Value)]) -> DbRun {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let db = test_db(home.path(), tests);
    let mut vars = vars.to_vec();
    vars.push(("TEST_DB", &db));
    let out = runner(home.path(), &vars).output().unwrap();
    let text = output_text(&out);
    let res = home.path().join("results");
    DbRun {
        home,
        out,
        text,
        res,
    }
}

impl DbRun {
    /// The runner exited with `code`.
    pub fn assert_exit(&self, code: i32) {
        assert_eq!(self.out.status.code(), Some(code), "{}", self.text);
    }

    /// Every agent of every test ran the guest kernel `k`.
    pub fn assert_guest_kernel(&self, k: &(String, String)) {
        let summary = read_json(&self.res.join("summary.json"));
        let release = guest_release(&k.1);
        for t in summary["tests"].as_array().unwrap() {
            for (h, a) in t["runs"][0]["agents"].as_object().unwrap() {
                assert_eq!(a["kernel_release"], release.as_str(), "{h}: {t:#}");
            }
        }
    }

    /// Nothing of the VM runs that the results mention is left, and `lnst-runner cleanup`
    /// (on VM agents with the guest kernel `k`) finds nothing.
    pub fn assert_no_vm_leftovers(&self, k: &(String, String)) {
        for id in run_ids_in_results(&self.res) {
            assert_no_vm_leftovers(&id, &self.text);
        }
        assert_nothing_to_clean_up(self.home.path(), &vm_vars(k));
    }
}

/// A smoke test's (recipe, parameters, pings, flows, packet asserts).
pub type Smoke<R> = (R, Value, usize, usize, usize);

/// The TEST_DB entries of `all`.
pub fn smoke_tests<R: AsRef<str>>(all: &[Smoke<R>]) -> Vec<(&str, Value)> {
    all.iter()
        .map(|(r, p, ..)| (r.as_ref(), p.clone()))
        .collect()
}

/// Tests 0.. of `results` are `all`, in order: each PASSed with its pings and flows
/// ([`assert_passed`]) and its number of packet asserts, each of which matched at least one
/// captured packet per ping sent (ping_count 5; AH/ESP: 10).
pub fn assert_smoke_passed<R: AsRef<str>>(results: &Path, all: &[Smoke<R>]) {
    for (i, (recipe, _, pings, flows, asserts)) in all.iter().enumerate() {
        let recipe = recipe.as_ref();
        assert_passed(results, i, recipe, *pings, *flows);
        assert_eq!(
            packet_asserts(results, i, recipe, 5),
            *asserts,
            "{recipe}: packet asserts"
        );
    }
}

/// The descriptions of test `idx`'s (`<idx>_<recipe>`) FAIL results.
pub fn failed_descriptions(results: &Path, idx: usize, recipe: &str) -> Vec<String> {
    let data = read_json(&results.join(format!("{idx}_{recipe}/run-data-0.json")));
    data.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|r| r["result"] == "FAIL")
        .filter_map(|r| r["description"].as_str().map(str::to_string))
        .collect()
}
