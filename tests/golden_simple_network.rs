//! Golden tests of SimpleNetworkRecipe: `lnst-runner plan` and `lnst-runner recipes` output for
//! several parameter sets, and the run-data JSON, the human summary and the raw file names of
//! runs against scripted in-memory agents, compared with fixtures captured before the ENRT
//! framework port (tests/fixtures/golden/). `LNST_BLESS_GOLDEN=1` rewrites the fixtures.

use lnst_runner::plan::plan_from_test_db;
use lnst_runner::results::export::run_data_value;
use lnst_runner::results::format::human_summary;
use lnst_runner::results::{MatchDescription, ResultLevel};
use lnst_runner::runner::run_on_endpoints;
use lnst_runner::scripted::{Script, ScriptedAgent};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

fn bless() -> bool {
    std::env::var_os("LNST_BLESS_GOLDEN").is_some_and(|v| v == "1")
}

/// Compare `actual` with the fixture `rel` (or write it when blessing).
fn check(rel: &str, actual: &str) {
    let path = golden_dir().join(rel);
    if bless() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (LNST_BLESS_GOLDEN=1 writes it)", path.display()));
    if want != actual {
        let line = want
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| want.lines().count().min(actual.lines().count()));
        panic!(
            "{rel} differs from the golden fixture at line {}:\n  want: {:?}\n  got:  {:?}",
            line + 1,
            want.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

/// `lnst-runner ARGS` with exactly `vars` in the environment; exit code, stdout and stderr.
fn runner(vars: &[(&str, &str)], args: &[&str]) -> String {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_lnst-runner"))
        .args(args)
        .env_clear()
        .env("HOME", home.path())
        .env("LNST_POOL_DIR", "/nonexistent/lnst-golden/pool")
        .env("LNST_RESULTS_DIR", "/nonexistent/lnst-golden/results")
        .envs(vars.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot start lnst-runner: {e}"));
    format!(
        "exit: {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const SNR: (&str, &str) = ("RECIPE", "SimpleNetworkRecipe");

/// Parameter sets of the plan golden tests: name → RECIPE_PARAMS.
const PLAN_CASES: &[(&str, &str)] = &[
    ("defaults", ""),
    (
        "e2e_issue",
        "perf_iterations=2;perf_duration=2;perf_tests=['tcp_stream','udp_stream'];offload_combinations=[{'gro':'on','gso':'on','tso':'on','tx':'on','rx':'on'},{'gro':'off','gso':'on','tso':'on','tx':'on','rx':'on'}];net_ipv4='198.18.20.0/24';net_ipv6='fd00:1:2::/64';ping_count=5;ping_interval=0.2",
    ),
    (
        "perf_heavy",
        "perf_parallel_processes=2;perf_parallel_streams=4;perf_tool_cpu=[0,1];perf_tool_cpu_policy='round-robin';perf_msg_sizes=[123, 16384];mtu=1400;ip_versions=['ipv6'];ping_parallel=True;ping_bidirect=True;drop_caches=True;perf_test_simulation=True;driver='veth';nic_speed='10000';perf_warmup_duration=1;udp_fragmentation_time=30;net_ipv6='fd00:5::/64'",
    ),
    (
        "tuple_forms",
        "ip_versions=('ipv4',);perf_tests=('tcp_stream',);offload_combinations=();ping_interval=1;ping_psize=1400;cpu_perf_tool='StatCPUMeasurement';net_ipv4=' 198.18.30.0/24 ';coalescing_settings={'host1':{'eth0':{'adaptive-rx':'off','rx-usecs':16}}}",
    ),
    ("err_unknown", "perf_iteration=1"),
    ("err_type", "perf_iterations='1'"),
    ("err_range", "perf_parallel_streams=129"),
    ("err_host_bits", "net_ipv4='198.18.0.1/24'"),
    ("err_bare_string", "ip_versions='ipv4'"),
    ("err_offload_value", "offload_combinations=[{'gro': 1}]"),
    ("err_syntax", "perf_iterations"),
];

#[test]
fn plan_output_is_unchanged() {
    for (name, params) in PLAN_CASES {
        let out = runner(&[SNR, ("RECIPE_PARAMS", params)], &["plan"]);
        check(&format!("plan/{name}.txt"), &out);
    }
    let out = runner(
        &[
            SNR,
            ("RECIPE_PARAMS", "perf_iterations=1"),
            ("MULTIMATCH", "1"),
            ("DEBUG", "0"),
            ("FORMATTERS", "json;human"),
        ],
        &["plan"],
    );
    check("plan/env_flags.txt", &out);
}

#[test]
fn plan_output_from_test_db_is_unchanged() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("test_db.json");
    std::fs::write(
        &db,
        r#"[
  {"uuid": "snr-v4", "recipe_name": "SimpleNetworkRecipe",
   "params": {"perf_tool_cpu": [6], "dev_intr_cpu": [0], "perf_parallel_processes": 1,
     "offload_combinations": [{"gro":"on","gso":"on","tso":"on","tx":"on","rx":"on"}],
     "perf_duration": 60, "ip_versions": ["ipv4"], "perf_tests": ["tcp_stream"],
     "perf_msg_sizes": [131072], "rx_pause_frames": false, "tx_pause_frames": false,
     "perf_iterations": 1, "net_ipv4": "198.18.220.0/24"}},
  {"uuid": "snr-v6", "recipe_name": "SimpleNetworkRecipe",
   "params": {"ip_versions": ["ipv6"], "net_ipv6": "fd00:0:b100::/64", "ping_interval": 1}},
  {"recipe_name": "SimpleNetworkRecipe"}
]"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = runner(&[("TEST_DB", &db.to_string_lossy())], &["plan"]);
    check("plan/test_db.txt", &out);
}

#[test]
fn recipe_schema_is_unchanged() {
    check(
        "recipes/SimpleNetworkRecipe.txt",
        &runner(&[], &["recipes", "SimpleNetworkRecipe"]),
    );
}

/// The run-data list with the wall-clock `timestamp` of each result removed (the agents' time
/// is virtual, the controller's is not).
fn normalized_run_data(v: &serde_json::Value) -> String {
    let mut v = v.clone();
    if let Some(list) = v.as_array_mut() {
        for r in list {
            if let Some(o) = r.as_object_mut() {
                o.remove("timestamp");
            }
        }
    }
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

/// Run SimpleNetworkRecipe with `params` (TEST_DB JSON object) against scripted agents.
fn scripted_run(params: &str, script: Script) -> (String, String, String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let plan = plan_from_test_db(
        format!(r#"[{{"recipe_name": "SimpleNetworkRecipe", "params": {params}}}]"#).as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let spec = plan
        .tests
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("no test"));
    let (run, raw, _) = rt.block_on(async {
        let agents = ScriptedAgent::new(script);
        let eps = vec![
            agents.endpoint("host1", &[("eth0", "veth-a")]),
            agents.endpoint("host2", &[("eth0", "veth-b")]),
        ];
        run_on_endpoints(
            &spec,
            eps,
            MatchDescription::default(),
            Duration::ZERO,
            None,
            ("scripted", None),
        )
        .await
    });
    let mut names: Vec<String> = raw.iter().map(|(n, _)| n.clone()).collect();
    names.push(String::new());
    (
        normalized_run_data(&run_data_value(&run)),
        human_summary(&run, ResultLevel::Normal) + "\n",
        names.join("\n"),
    )
}

const RUN_PARAMS: &str = r#"{"perf_iterations": 2, "perf_duration": 1, "ip_versions": ["ipv4"],
    "perf_tests": ["tcp_stream", "sctp_stream"],
    "offload_combinations": [{"gro":"on","gso":"on","tso":"on","tx":"on","rx":"on"},
                             {"gro":"off","gso":"on","tso":"on","tx":"on","rx":"on"}],
    "perf_parallel_processes": 2, "perf_tool_cpu": [0, 1], "perf_tool_cpu_policy": "round-robin",
    "mtu": 1400, "ping_count": 5, "ping_interval": 0.2, "drop_caches": true,
    "net_ipv4": "198.18.20.0/24", "net_ipv6": "fd00:1:2::/64"}"#;

#[test]
fn scripted_run_data_and_summary_are_unchanged() {
    let (data, human, raw) = scripted_run(RUN_PARAMS, Script::default());
    check("run/full_run_data.json", &data);
    check("run/full_summary.txt", &human);
    check("run/full_raw_names.txt", &raw);
}

#[test]
fn scripted_failing_run_is_unchanged() {
    // IPv6 pings mostly lost, zero throughput (the non-zero evaluator fails the flows).
    let params = r#"{"perf_iterations": 1, "perf_duration": 1, "perf_tests": ["tcp_stream"],
        "offload_combinations": [], "ping_count": 4,
        "ping_bidirect": true, "net_ipv4": "198.18.21.0/24", "net_ipv6": "fd00:21::/64"}"#;
    let script = Script::default()
        .ping_received_to("fd00:21::2", 25)
        .iperf_rate(0.0);
    let (data, human, raw) = scripted_run(params, script);
    check("run/failing_run_data.json", &data);
    check("run/failing_summary.txt", &human);
    check("run/failing_raw_names.txt", &raw);
}

/// A parameter the devices cannot honour: `dev_intr_cpu` on veth (no IRQs) FAILs after the
/// test-wide configuration and before any traffic, naming the device.
#[test]
fn scripted_unsupported_param_is_unchanged() {
    let (data, human, _) = scripted_run(
        r#"{"dev_intr_cpu": [0], "net_ipv4": "198.18.22.0/24"}"#,
        Script::default(),
    );
    check("run/unsupported_run_data.json", &data);
    check("run/unsupported_summary.txt", &human);
}
