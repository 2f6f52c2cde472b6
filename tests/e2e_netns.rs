//! End to end on the embedded namespace pool: real namespaces, real agents, real iperf3 and
//! ping. Needs root; under CI a missing prerequisite fails instead of skipping.

mod common;
use common::*;
use std::time::Duration;

const ISSUE_PARAMS: &str = "perf_iterations=2;perf_duration=2;perf_tests=['tcp_stream','udp_stream'];offload_combinations=[{'gro':'on','gso':'on','tso':'on','tx':'on','rx':'on'},{'gro':'off','gso':'on','tso':'on','tx':'on','rx':'on'}];net_ipv4='198.18.20.0/24';net_ipv6='fd00:1:2::/64';ping_count=5;ping_interval=0.2";

fn flows_of(run_data: &serde_json::Value) -> Vec<serde_json::Value> {
    run_data
        .as_array()
        .expect("run-data is a list")
        .iter()
        .filter(|r| r["type"] == "measurement" && r["measurement_type"] == "flow")
        .cloned()
        .collect()
}

#[test]
fn embedded_simple_network_recipe_passes_and_leaves_nothing() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let before = netns_with_prefix("lnst-");
    let out = runner(
        home.path(),
        &[
            ("RECIPE", "SimpleNetworkRecipe"),
            ("RECIPE_PARAMS", ISSUE_PARAMS),
            ("FORMATTERS", "human;json"),
        ],
    )
    .output()
    .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("Overall result: PASS"), "{text}");
    // Progress lines name the phase.
    assert!(text.contains("[sub 2/2] tcp_stream ipv6"), "{text}");

    let res = home.path().join("results");
    let t = res.join("0_SimpleNetworkRecipe");
    for f in ["run-data-0.json", "logs/result_summary.log", "raw"] {
        assert!(t.join(f).exists(), "missing {f}\n{text}");
    }
    for f in ["summary.json", "junit.xml", "results.zip"] {
        assert!(res.join(f).exists(), "missing {f}");
    }
    assert!(!t.join("logs/crash.log").exists());
    let summary = read_json(&res.join("summary.json"));
    assert_eq!(summary["overall"], "PASS");
    // Where the time went: every orchestration phase took some time (two sub-configurations
    // of offloads), and phases, tools and agents together fit in the test's duration.
    let test = &summary["tests"][0];
    let phase = |k: &str| test["phases_s"][k].as_f64().unwrap_or(-1.0);
    for k in [
        "connect",
        "configure",
        "sub_configure",
        "deconfigure",
        "end",
    ] {
        assert!(phase(k) > 0.0, "{k}: {test:#}");
    }
    let parts: f64 = [
        "connect",
        "configure",
        "sub_configure",
        "deconfigure",
        "end",
    ]
    .iter()
    .map(|k| phase(k))
    .sum::<f64>()
        + test["tool_time_s"].as_f64().unwrap()
        + test["agents_s"].as_f64().unwrap();
    assert!(parts <= test["duration_s"].as_f64().unwrap(), "{test:#}");

    let data = read_json(&t.join("run-data-0.json"));
    let flows = flows_of(&data);
    // 2 sub-configurations × 2 IP versions × 2 tests.
    assert_eq!(flows.len(), 8, "{data:#}");
    let mut v4 = 0;
    let mut v6 = 0;
    for f in &flows {
        let g = f["data"]["generator_results"].as_f64().unwrap();
        let r = f["data"]["receiver_results"].as_f64().unwrap();
        assert!(g > 0.0 && r > 0.0, "flow with zero throughput: {f:#}");
        let bind = f["details"]["flow"]["receiver_bind"]
            .as_str()
            .unwrap_or_default();
        if bind.starts_with("198.18.20.") {
            v4 += 1;
        } else if bind.starts_with("fd00:1:2::") {
            v6 += 1;
        }
    }
    assert_eq!((v4, v6), (4, 4), "both IP versions are tested");
    // Pings: one per IP version per sub-configuration, all PASS.
    let pings: Vec<_> = data
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["measurement_type"] == "ping")
        .collect();
    assert_eq!(pings.len(), 4);
    assert!(pings
        .iter()
        .all(|p| p["result"] == "PASS" && p["data"]["rate"] == 100));
    // Raw tool output is kept and traceable: every iperf3 client JSON parses.
    let raw: Vec<_> = std::fs::read_dir(t.join("raw"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let clients: Vec<_> = raw
        .iter()
        .filter(|p| p.to_string_lossy().ends_with("_client.json"))
        .collect();
    assert_eq!(clients.len(), 16, "2 iterations × 8 flows");
    for c in clients {
        let j = read_json(c);
        assert!(
            j["end"]["sum_sent"]["bytes"].as_f64().unwrap_or(0.0) > 0.0
                || j["end"]["sum"]["bytes"].as_f64().unwrap_or(0.0) > 0.0
        );
    }
    // This run's namespaces are gone (other runs on the machine may come and go meanwhile).
    let ids = run_ids_in_results(&res);
    assert_eq!(ids.len(), 1, "one run id in the results: {ids:?}");
    let left = netns_with_prefix(&format!("lnst-{}-", ids[0]));
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let _ = before;
}

#[test]
fn agent_killed_mid_iteration_fails_the_test_and_cleans_up() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let before = netns_with_prefix("lnst-");
    let params = "perf_iterations=3;perf_duration=3;perf_tests=['tcp_stream'];offload_combinations=();ip_versions=('ipv4',);net_ipv4='198.18.21.0/24';net_ipv6='fd00:21::/64';ping_count=2;ping_interval=0.2";
    let (out, elapsed) = run_recipe_and_interrupt(home.path(), params, "iter 1/3", |pid| {
        let agents = children_named(pid, "lnst-agent");
        assert_eq!(agents.len(), 2, "two agents run under the runner");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agents[1] as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    });
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        elapsed < Duration::from_secs(30),
        "took {elapsed:?}\n{text}"
    );
    assert!(text.contains("Overall result: FAIL"), "{text}");
    let res = home.path().join("results");
    let summary = read_json(&res.join("summary.json"));
    assert_eq!(summary["overall"], "FAIL");
    let t = res.join("0_SimpleNetworkRecipe");
    let crash = std::fs::read_to_string(t.join("logs/crash.log")).unwrap();
    assert!(
        crash.contains("agent"),
        "crash log names the agent failure: {crash}"
    );
    assert!(res.join("results.zip").exists());
    assert_eq!(before, netns_with_prefix("lnst-"), "namespaces left behind");
}

#[test]
fn sigterm_mid_run_tears_down_and_exports() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let before = netns_with_prefix("lnst-");
    let params = "perf_iterations=5;perf_duration=5;perf_tests=['tcp_stream'];offload_combinations=();ip_versions=('ipv4',);net_ipv4='198.18.22.0/24';net_ipv6='fd00:22::/64';ping_count=2;ping_interval=0.2";
    let (out, elapsed) = run_recipe_and_interrupt(home.path(), params, "ping ipv4", |pid| {
        std::thread::sleep(Duration::from_millis(500));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    });
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    let res = home.path().join("results");
    let summary = read_json(&res.join("summary.json"));
    assert_eq!(summary["overall"], "FAIL");
    assert!(summary.to_string().contains("SIGTERM"), "{summary}");
    assert!(res.join("results.zip").exists());
    assert_eq!(before, netns_with_prefix("lnst-"), "namespaces left behind");
    // Nothing for cleanup to do afterwards.
    assert_nothing_to_clean_up(home.path(), &[]);
}

#[test]
fn not_root_is_exit_2() {
    if !require(is_root(), "needs root to drop to another user") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let mut cmd = runner(home.path(), &[("RECIPE", "SimpleNetworkRecipe")]);
    use std::os::unix::process::CommandExt;
    cmd.uid(65534).gid(65534);
    // nobody may not be able to create the results dir under a root-owned temp dir.
    cmd.env("LNST_RESULTS_DIR", "/tmp");
    let out = cmd.output().unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("root"),
        "{text}"
    );
}
