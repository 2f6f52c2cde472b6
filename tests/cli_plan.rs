//! `lnst-runner plan` (and friends) run as a real process with a cleared environment.

use std::path::Path;
use std::process::{Command, Output};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run_in(home: &Path, vars: &[(&str, &str)], args: &[&str]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_lnst-runner"))
        .args(args)
        .env_clear()
        .env("HOME", home)
        .envs(vars.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot start lnst-runner: {e}"));
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn home() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn plan_ok(home: &Path, vars: &[(&str, &str)]) -> serde_json::Value {
    let r = run_in(home, vars, &["plan"]);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", r.stdout))
}

/// Exit 2 with exactly one stderr line starting with `lnst-runner: ` and containing `needle`.
fn bad_input(r: &Run, needle: &str) {
    assert_eq!(r.code, Some(2), "stdout: {} stderr: {}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {:?}", r.stderr);
    assert!(lines[0].starts_with("lnst-runner: "), "{}", lines[0]);
    assert!(lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
    assert!(r.stdout.is_empty(), "stdout: {}", r.stdout);
}

const SNR: (&str, &str) = ("RECIPE", "SimpleNetworkRecipe");

#[test]
fn xdp_example_param_is_rejected_for_simple_network() {
    let h = home();
    let r = run_in(
        h.path(),
        &[
            SNR,
            (
                "RECIPE_PARAMS",
                "perf_iterations=1;perf_tool_cpu=[0,1];multi_dev_interrupt_config={'host1':{'eth0':{'cpus':[0],'cpu_policy':'round-robin'}}}",
            ),
        ],
        &["plan"],
    );
    bad_input(&r, "multi_dev_interrupt_config");
}

#[test]
fn plan_fills_defaults() {
    let h = home();
    let j = plan_ok(
        h.path(),
        &[
            SNR,
            ("RECIPE_PARAMS", "perf_iterations=1;perf_tool_cpu=[0,1]"),
        ],
    );
    assert_eq!(j["agents"], "netns");
    assert_eq!(j["debug"], false);
    assert_eq!(j["multimatch"], false);
    assert_eq!(j["formatters"], serde_json::json!(["human"]));
    assert_eq!(
        j["pool_dir"].as_str().map(Path::new),
        Some(h.path().join(".lnst/pool").as_path())
    );
    assert_eq!(
        j["results_dir"].as_str().map(Path::new),
        Some(h.path().join(".lnst/results").as_path())
    );
    let tests = j["tests"].as_array().cloned().unwrap_or_default();
    assert_eq!(tests.len(), 1);
    let t = &tests[0];
    assert_eq!(t["id"], "0_SimpleNetworkRecipe");
    assert_eq!(t["recipe"], "SimpleNetworkRecipe");
    let p = &t["params"];
    assert_eq!(p["perf_tool_cpu"], serde_json::json!([0, 1]));
    assert_eq!(p["perf_iterations"], 1);
    assert_eq!(p["perf_duration"], 60);
    assert_eq!(p["ping_count"], 100);
    assert_eq!(p["ping_interval"], 0.2);
    assert_eq!(p["net_ipv4"], "192.168.101.0/24");
    assert_eq!(p["net_perf_tool"], "iperf");
    assert_eq!(p["ip_versions"], serde_json::json!(["ipv4", "ipv6"]));
    assert_eq!(
        p["perf_tests"],
        serde_json::json!(["tcp_stream", "udp_stream", "sctp_stream"])
    );
    assert_eq!(p["offload_combinations"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        p["offload_combinations"][1],
        serde_json::json!({"gro": "off", "gso": "on", "tso": "on", "tx": "on", "rx": "on"})
    );
    assert_eq!(p["coalescing_settings"], serde_json::json!({}));
    assert!(
        p.get("mtu").is_none(),
        "mtu has no default and must be absent"
    );
    assert!(p.get("perf_tool_cpu_policy").is_none());
}

#[test]
fn import_is_never_evaluated() {
    let h = home();
    let marker = h.path().join("pwned");
    let value = format!("__import__('os').system('touch {}')", marker.display());
    let params = format!("perf_iterations={value}");
    let r = run_in(h.path(), &[SNR, ("RECIPE_PARAMS", &params)], &["plan"]);
    bad_input(&r, "names are not allowed ('__import__')");
    assert!(!marker.exists(), "the value was executed");
    // The same through `run`: rejected before anything runs.
    let r = run_in(h.path(), &[SNR, ("RECIPE_PARAMS", &params)], &["run"]);
    bad_input(&r, "perf_iterations: column 1");
    assert!(!marker.exists(), "the value was executed");
}

#[test]
fn unknown_recipe_lists_known_ones() {
    let h = home();
    let r = run_in(h.path(), &[("RECIPE", "NoSuchRecipe")], &["plan"]);
    bad_input(&r, "known recipes: ");
    assert!(r.stderr.contains("SimpleNetworkRecipe"), "{}", r.stderr);
    let r = run_in(h.path(), &[], &["recipes", "NoSuchRecipe"]);
    bad_input(&r, "SimpleNetworkRecipe");
}

#[test]
fn debug_truthiness() {
    let h = home();
    let r = run_in(h.path(), &[SNR, ("DEBUG", "maybe")], &["plan"]);
    bad_input(&r, "DEBUG");
    let j = plan_ok(h.path(), &[SNR, ("DEBUG", "0")]);
    assert_eq!(j["debug"], false);
    let j = plan_ok(h.path(), &[SNR, ("DEBUG", "yes"), ("MULTIMATCH", "1")]);
    assert_eq!(j["debug"], true);
    assert_eq!(j["multimatch"], true);
}

#[test]
fn agents_selection() {
    let h = home();
    let j = plan_ok(h.path(), &[SNR, ("PODMAN_URI", "unix:/run/x")]);
    assert_eq!(j["agents"], "podman");
    let r = run_in(h.path(), &[SNR, ("PODMAN_URI", "http://x")], &["plan"]);
    bad_input(&r, "PODMAN_URI");
    let pool = h.path().join("pool");
    std::fs::create_dir(&pool).unwrap_or_else(|e| panic!("{e}"));
    let pool_s = pool.to_string_lossy().to_string();
    let j = plan_ok(h.path(), &[SNR, ("LNST_POOL_DIR", &pool_s)]);
    assert_eq!(j["agents"], "netns");
    std::fs::write(pool.join("m1.xml"), "<agentmachine/>").unwrap_or_else(|e| panic!("{e}"));
    let j = plan_ok(h.path(), &[SNR, ("LNST_POOL_DIR", &pool_s)]);
    assert_eq!(j["agents"], "pool");
    assert_eq!(j["pool_dir"], pool_s.as_str());
}

#[test]
fn formatters_in_plan() {
    let h = home();
    let j = plan_ok(
        h.path(),
        &[SNR, ("FORMATTERS", "JsonRunSummaryFormatter;human")],
    );
    assert_eq!(j["formatters"], serde_json::json!(["json", "human"]));
    let j = plan_ok(h.path(), &[SNR, ("FORMATTERS", "")]);
    assert_eq!(j["formatters"], serde_json::json!([]));
    let r = run_in(h.path(), &[SNR, ("FORMATTERS", "xml")], &["plan"]);
    bad_input(&r, "FORMATTERS");
}

#[test]
fn test_db_file_with_two_entries() {
    let h = home();
    let db = h.path().join("test_db.json");
    std::fs::write(
        &db,
        r#"[
          {"uuid": "5f0c-one", "recipe_name": "SimpleNetworkRecipe",
           "params": {"perf_iterations": 1, "perf_duration": 10, "driver": "ice"}},
          {"recipe_name": "SimpleNetworkRecipe",
           "params": {"ip_versions": ["ipv6"], "net_ipv6": "fd00:0:b100::/64"}}
        ]"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let db_s = db.to_string_lossy().to_string();
    let j = plan_ok(h.path(), &[("TEST_DB", &db_s)]);
    let tests = j["tests"].as_array().cloned().unwrap_or_default();
    let ids: Vec<&str> = tests.iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, ["5f0c-one", "1_SimpleNetworkRecipe"]);
    assert_eq!(tests[0]["params"]["perf_duration"], 10);
    assert_eq!(tests[0]["params"]["driver"], "ice");
    assert_eq!(tests[1]["params"]["perf_duration"], 60);
    assert_eq!(
        tests[1]["params"]["ip_versions"],
        serde_json::json!(["ipv6"])
    );

    std::fs::write(
        &db,
        r#"[{"recipe_name": "SimpleNetworkRecipe", "params": {"net_ipv4": "198.18.0.1/24"}}]"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = run_in(h.path(), &[("TEST_DB", &db_s)], &["plan"]);
    bad_input(&r, "TEST_DB: entry 0: params: net_ipv4");
}

#[test]
fn nothing_to_run_and_bad_params() {
    let h = home();
    let r = run_in(h.path(), &[], &["plan"]);
    bad_input(&r, "nothing to run");
    let r = run_in(h.path(), &[], &[]);
    bad_input(&r, "nothing to run");
    let r = run_in(
        h.path(),
        &[SNR, ("RECIPE_PARAMS", "perf_iteration=2")],
        &["plan"],
    );
    bad_input(&r, "did you mean 'perf_iterations'?");
    let deep = format!("perf_tests={}", "[".repeat(60_000));
    let r = run_in(h.path(), &[SNR, ("RECIPE_PARAMS", &deep)], &["plan"]);
    bad_input(&r, "nesting deeper than 32");
    let r = run_in(
        h.path(),
        &[SNR, ("RECIPE_PARAMS", "rule='a\nb';x=")],
        &["plan"],
    );
    assert_eq!(r.code, Some(2));
    assert_eq!(r.stderr.lines().count(), 1, "{:?}", r.stderr);
}

#[test]
fn non_utf8_env_is_an_error_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let h = home();
    let out = Command::new(env!("CARGO_BIN_EXE_lnst-runner"))
        .arg("plan")
        .env_clear()
        .env("HOME", h.path())
        .env("RECIPE", std::ffi::OsStr::from_bytes(b"Simple\xffNetwork"))
        .env("UNRELATED", std::ffi::OsStr::from_bytes(b"\xfe"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    bad_input(&r, "RECIPE: value is not valid UTF-8");
}

#[test]
fn recipes_command() {
    let h = home();
    let r = run_in(h.path(), &[], &["recipes"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r
        .stdout
        .lines()
        .any(|l| l.starts_with("SimpleNetworkRecipe ")));
    let r = run_in(h.path(), &[], &["recipes", "SimpleNetworkRecipe"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 40); // header, requirements, 38 parameters
    assert!(r.stdout.lines().any(|l| l.split_whitespace().take(3).eq([
        "perf_iterations",
        "int",
        "5"
    ])));
}

#[test]
fn upstream_style_test_db_fixture() {
    let h = home();
    let db = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/params/test_db.json"
    );
    let j = plan_ok(h.path(), &[("TEST_DB", db)]);
    let tests = j["tests"].as_array().cloned().unwrap_or_default();
    let ids: Vec<&str> = tests.iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, ["3a1f-ipv4", "3a1f-ipv6"]);
    assert_eq!(tests[0]["params"]["net_ipv4"], "198.18.220.0/24");
    assert_eq!(tests[1]["params"]["net_ipv6"], "fd00:0:b100::/64");
    assert_eq!(tests[1]["params"]["net_ipv4"], "192.168.101.0/24");
    assert_eq!(
        tests[0]["params"]["offload_combinations"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    let h = home();
    bad_input(&run_in(h.path(), &[], &["bogus"]), "bogus");
    bad_input(&run_in(h.path(), &[], &["recipes", "a", "b"]), "'b'");
    bad_input(
        &run_in(h.path(), &[], &["plan", "--no-such-flag"]),
        "--no-such-flag",
    );
    let help = run_in(h.path(), &[], &["--help"]);
    assert_eq!(help.code, Some(0));
    assert!(help.stdout.contains("RECIPE_PARAMS"), "{}", help.stdout);
}
