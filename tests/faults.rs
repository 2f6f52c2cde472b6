//! Faults on the embedded namespace pool: SIGTERM in each phase of a run (provision, configure,
//! measure, teardown), an agent that stops answering, and a second runner started while a
//! first one runs. Real namespaces, agents, iperf3 and ping; needs root (fails under CI when a
//! prerequisite is missing). Addresses: 198.18.40.0/22 and fd00:40::/64.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Processes named `lnst-agent` anywhere on the machine.
fn agent_processes() -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        if let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) {
            if comm.trim() == "lnst-agent" {
                n += 1;
            }
        }
    }
    n
}

/// What a run may leave behind, to compare before and after.
#[derive(Debug, PartialEq)]
struct Footprint {
    namespaces: Vec<String>,
    agents: usize,
    links: Vec<String>,
    secrets: usize,
}

fn footprint() -> Footprint {
    Footprint {
        namespaces: netns_with_prefix("lnst-"),
        agents: agent_processes(),
        links: root_links(),
        secrets: std::fs::read_dir("/run/lnst-runner")
            .map(|rd| rd.flatten().count())
            .unwrap_or(0),
    }
}

fn home_with_pool() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    home
}

fn params(subnet: u8, iterations: u32, duration: u32) -> String {
    format!(
        "perf_iterations={iterations};perf_duration={duration};perf_tests=['tcp_stream'];\
         offload_combinations=();net_ipv4='198.18.{subnet}.0/24';net_ipv6='fd00:{subnet}::/64';\
         ping_count=2;ping_interval=0.2"
    )
}

fn assert_exported(home: &Path, text: &str) -> serde_json::Value {
    let res = home.join("results");
    assert!(res.join("results.zip").exists(), "no results.zip\n{text}");
    read_json(&res.join("summary.json"))
}

#[test]
fn sigterm_in_each_phase_leaves_nothing() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let before = footprint();
    // (phase, the stderr line that shows the runner is in it)
    let phases = [
        ("provision", "provisioning "),
        ("configure", "configuring the test network"),
        ("measure", "iter 1/"),
        ("teardown", "tearing down the netns agents"),
    ];
    for (phase, marker) in phases {
        let home = home_with_pool();
        let (out, elapsed) =
            run_recipe_and_interrupt(home.path(), &params(40, 2, 2), marker, sigterm);
        let text = format!("phase {phase}: {}", output_text(&out));
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            elapsed < Duration::from_secs(15),
            "took {elapsed:?} to stop\n{text}"
        );
        let summary = assert_exported(home.path(), &text);
        if phase != "teardown" {
            assert_eq!(summary["overall"], "FAIL", "{text}");
            assert!(summary.to_string().contains("SIGTERM"), "{summary}\n{text}");
        } else {
            // The test itself finished; the signal is reported and the exit code says so.
            assert!(text.contains("SIGTERM received during teardown"), "{text}");
        }
        assert_eq!(before, footprint(), "left behind after SIGTERM in {phase}");
    }
    assert_nothing_to_clean_up(home_with_pool().path(), &[]);
}

#[test]
fn silent_agent_fails_the_test_within_the_keepalive_bound() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let before = footprint();
    let home = home_with_pool();
    let mut stopped = Vec::new();
    let (out, elapsed) =
        run_recipe_and_interrupt(home.path(), &params(41, 3, 4), "iter 1/", |pid| {
            let agents = children_named(pid, "lnst-agent");
            assert_eq!(agents.len(), 2, "two agents run under the runner");
            // Frozen, not dead: its connection stays open and says nothing.
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(agents[0] as i32),
                nix::sys::signal::Signal::SIGSTOP,
            )
            .unwrap();
            stopped.push(agents[0]);
        });
    let text = output_text(&out);
    for pid in stopped {
        // If teardown failed to remove it, let it go rather than leave a frozen process.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
    assert_eq!(out.status.code(), Some(1), "{text}");
    // Keepalive bound 10 s, plus the rest of a 4 s iteration and the teardown.
    assert!(
        elapsed < Duration::from_secs(25),
        "took {elapsed:?}\n{text}"
    );
    let summary = assert_exported(home.path(), &text);
    assert_eq!(summary["overall"], "FAIL");
    let crash = std::fs::read_to_string(
        home.path()
            .join("results/0_SimpleNetworkRecipe/logs/crash.log"),
    )
    .unwrap_or_default();
    assert!(
        crash.contains("keepalive") || summary.to_string().contains("keepalive"),
        "the failure names the silent agent: {crash}\n{summary}"
    );
    assert_eq!(before, footprint(), "left behind after a silent agent");
}

#[test]
fn second_runner_does_not_disturb_the_first() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let before = footprint();
    let home_a = home_with_pool();
    let a = Watched::start(runner(
        home_a.path(),
        &[
            ("RECIPE", "SimpleNetworkRecipe"),
            ("RECIPE_PARAMS", &params(42, 3, 3)),
        ],
    ));
    a.wait_for("iter 1/", Duration::from_secs(60));
    let mine = netns_with_prefix("lnst-");
    assert!(
        mine.len() > before.namespaces.len(),
        "first runner has namespaces"
    );

    // A second run, complete, while the first measures.
    let home_b = home_with_pool();
    let t0 = Instant::now();
    let b = runner(
        home_b.path(),
        &[
            ("RECIPE", "SimpleNetworkRecipe"),
            ("RECIPE_PARAMS", &params(43, 1, 1)),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(
        b.status.code(),
        Some(0),
        "second runner: {}",
        output_text(&b)
    );
    // And a cleanup: the first runner is alive, so none of its resources are leftovers.
    assert_nothing_to_clean_up(home_b.path(), &[]);
    for ns in &mine {
        assert!(
            netns_with_prefix("lnst-").contains(ns),
            "namespace {ns} of the first runner vanished after {:?}",
            t0.elapsed()
        );
    }
    let out = a.finish();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "first runner: {text}");
    let summary = assert_exported(home_a.path(), &text);
    assert_eq!(summary["overall"], "PASS");
    // Every iteration of the first run measured traffic.
    let run_data = read_json(
        &home_a
            .path()
            .join("results/0_SimpleNetworkRecipe/run-data-0.json"),
    );
    let flows: Vec<&serde_json::Value> = run_data
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["measurement_type"] == "flow")
        .collect();
    assert!(!flows.is_empty(), "{run_data}");
    assert_eq!(before, footprint(), "left behind after two runs");
}

#[test]
fn closed_output_pipes_do_not_stop_the_run() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let before = footprint();
    let home = home_with_pool();
    // `lnst-runner | head -3`: the reader goes away in the middle of the run.
    let mut child = runner(
        home.path(),
        &[
            ("RECIPE", "SimpleNetworkRecipe"),
            ("RECIPE_PARAMS", &params(47, 2, 1)),
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    {
        use std::io::BufRead;
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        for _ in 0..3 {
            let _ = lines.next();
        }
        drop(child.stdout.take());
    } // both pipes closed here
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "the run goes on without its readers"
    );
    let summary = read_json(&home.path().join("results/summary.json"));
    assert_eq!(summary["overall"], "PASS");
    assert_eq!(before, footprint(), "left behind after closed pipes");
}
