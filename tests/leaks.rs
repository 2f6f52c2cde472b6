//! Leaks: back-to-back short runs, each followed by a look at what the machine holds, compared
//! with the baseline taken before the first run:
//!   - embedded pool: network namespaces (named and held by processes), root-namespace links,
//!     our processes (lnst-agent, iperf3, ping), files under /run/lnst-runner;
//!   - pool XML over TCP: additionally the long-lived agents' open fds and threads (the only
//!     processes here that outlive a run, so the only ones that can accumulate);
//!   - Podman: additionally the engine's containers and networks.
//!
//! CI runs a few of each (LNST_LEAK_RUNS, LNST_LEAK_POOL_RUNS, LNST_LEAK_PODMAN_RUNS raise the
//! counts; bench/leaks.sh runs 100/100/20 and writes bench/leaks-report.md from the lines these
//! tests print). Addresses: 198.18.44.0/24 (embedded), 198.18.45.0/24 (pool),
//! 198.18.46.0/24 (Podman).

mod common;
use common::lab::*;
use common::podman::*;
use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

fn runs(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const OURS: [&str; 3] = ["lnst-agent", "iperf3", "ping"];

/// What the machine holds that a run could leave behind.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    /// Distinct network namespaces: held by processes or bind-mounted under /run/netns.
    netns: BTreeSet<u64>,
    links: Vec<String>,
    /// (name, count) of our processes.
    procs: Vec<(String, usize)>,
    run_files: Vec<String>,
    containers: String,
    networks: String,
}

/// Figures reported but not compared: they move with whatever else runs on the machine.
struct Noise {
    processes: usize,
    files_open: u64,
    /// Podman's conmon processes: runs make no exec sessions, but the conmon of an exec session
    /// made by another test waits 300 s (its `--exit-delay`) before it exits.
    conmon: usize,
}

fn ns_inode(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.ino())
}

fn snapshot(podman: bool) -> (Snapshot, Noise) {
    let mut netns = BTreeSet::new();
    let mut counts = vec![0usize; OURS.len()];
    let mut processes = 0;
    let mut conmon = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        processes += 1;
        if let Some(ino) = ns_inode(&e.path().join("ns/net")) {
            netns.insert(ino);
        }
        if let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) {
            if let Some(i) = OURS.iter().position(|n| *n == comm.trim()) {
                counts[i] += 1;
            }
            if comm.trim() == "conmon" {
                conmon += 1;
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/run/netns") {
        for e in rd.flatten() {
            if let Some(ino) = ns_inode(&e.path()) {
                netns.insert(ino);
            }
        }
    }
    let links = root_links();
    let mut run_files: Vec<String> = std::fs::read_dir("/run/lnst-runner")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    run_files.sort();
    let (containers, networks) = if podman {
        leftovers()
    } else {
        (String::new(), String::new())
    };
    let files_open = std::fs::read_to_string("/proc/sys/fs/file-nr")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    (
        Snapshot {
            netns,
            links,
            procs: OURS.iter().map(|n| n.to_string()).zip(counts).collect(),
            run_files,
            containers,
            networks,
        },
        Noise {
            processes,
            files_open,
            conmon,
        },
    )
}

/// The snapshot after a run may lag the runner's exit by a moment (the kernel frees a
/// namespace when its last process is reaped): poll briefly for the baseline.
fn settle(base: &Snapshot, podman: bool, extra: impl Fn() -> bool) -> (Snapshot, Noise, bool) {
    settle_within(base, podman, Duration::from_secs(3), extra)
}

/// [`settle`] with its own deadline.
fn settle_within(
    base: &Snapshot,
    podman: bool,
    within: Duration,
    extra: impl Fn() -> bool,
) -> (Snapshot, Noise, bool) {
    let deadline = Instant::now() + within;
    loop {
        let (s, n) = snapshot(podman);
        let same = s == *base && extra();
        if same || Instant::now() > deadline {
            return (s, n, same);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// tokio's default `thread_keep_alive` (10 s) with a margin.
const TOKIO_KEEP_ALIVE: Duration = Duration::from_secs(11);

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn short_params(subnet: u8) -> String {
    format!(
        "perf_iterations=1;perf_duration=1;perf_tests=['tcp_stream'];offload_combinations=();\
         ip_versions=('ipv4',);net_ipv4='198.18.{subnet}.0/24';\
         net_ipv6='fd00:{subnet}::/64';ping_count=1;ping_interval=0.2"
    )
}

fn report_line(kind: &str, i: usize, n: &Noise, extra: &str, ok: bool) {
    println!(
        "LEAK {kind} run {i}: processes={} files_open={} conmon={}{extra} {}",
        n.processes,
        n.files_open,
        n.conmon,
        if ok { "baseline" } else { "DIFFERS" }
    );
}

/// `n` short runs with `vars`, each compared with the baseline taken before the first.
fn runs_return_to_baseline(kind: &str, n: usize, vars: &[(&str, &str)], podman: bool) {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let (base, noise) = snapshot(podman);
    report_line(kind, 0, &noise, "", true);
    assert!(
        base.containers.is_empty() && base.networks.is_empty(),
        "leftovers before the test: {base:?}"
    );
    let t0 = Instant::now();
    for i in 1..=n {
        let out = runner(home.path(), vars).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "run {i}: {}", output_text(&out));
        let (s, noise, same) = settle(&base, podman, || true);
        report_line(kind, i, &noise, "", same);
        assert_eq!(base, s, "after run {i} of {n}");
    }
    println!(
        "LEAK {kind} summary: {n} runs in {:.1} s, every one back to the baseline",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn embedded_runs_return_to_baseline() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let params = short_params(44);
    runs_return_to_baseline(
        "embedded",
        runs("LNST_LEAK_RUNS", 5),
        &[
            ("RECIPE", "SimpleNetworkRecipe"),
            ("RECIPE_PARAMS", &params),
        ],
        false,
    );
}

#[test]
fn pool_runs_leave_long_lived_agents_as_they_were() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let n = runs("LNST_LEAK_POOL_RUNS", 5);
    let home = tempfile::tempdir().unwrap();
    let secret = home.path().join("secret");
    std::fs::write(&secret, "leak-test-secret").unwrap();
    let lab = build_lab(&format!("{}", (std::process::id() + 3) % 10000), &secret);
    write_pool(
        &home.path().join("pool"),
        &lab,
        &password_file_security(&secret),
    );
    let agents: Vec<u32> = lab.bed.children.iter().map(|c| c.id()).collect();
    let agent_state =
        || -> Vec<(usize, usize)> { agents.iter().map(|p| (open_fds(*p), threads(*p))).collect() };
    // A first run warms the agents up (lazily created runtime threads, netlink sockets):
    // the baseline is what they hold between runs.
    let params = format!("{};driver='veth'", short_params(45));
    let run = |i: usize| {
        let out = runner(
            home.path(),
            &[
                ("RECIPE", "SimpleNetworkRecipe"),
                ("RECIPE_PARAMS", &params),
            ],
        )
        .output()
        .unwrap();
        assert_eq!(out.status.code(), Some(0), "run {i}: {}", output_text(&out));
    };
    run(0);
    // An agent's tokio runtime keeps an idle blocking-pool thread for 10 s (its
    // thread_keep_alive) before ending it: such a thread is not a leak. The baseline is taken
    // once it has gone, and each later run gets as long to come back to it.
    std::thread::sleep(TOKIO_KEEP_ALIVE);
    let (base, noise) = snapshot(false);
    let agents_base = agent_state();
    let rss0: Vec<u64> = agents.iter().map(|p| rss_kib(*p)).collect();
    report_line(
        "pool",
        0,
        &noise,
        &format!(" agents(fds,threads)={agents_base:?} rss_kib={rss0:?}"),
        true,
    );
    let t0 = Instant::now();
    for i in 1..=n {
        run(i);
        let (s, noise, same) = settle_within(&base, false, TOKIO_KEEP_ALIVE, || {
            agent_state() == agents_base
        });
        let now = agent_state();
        let rss: Vec<u64> = agents.iter().map(|p| rss_kib(*p)).collect();
        report_line(
            "pool",
            i,
            &noise,
            &format!(" agents(fds,threads)={now:?} rss_kib={rss:?}"),
            same,
        );
        assert_eq!(base, s, "after run {i} of {n}");
        assert_eq!(agents_base, now, "agent fds/threads after run {i} of {n}");
    }
    let rss: Vec<u64> = agents.iter().map(|p| rss_kib(*p)).collect();
    println!(
        "LEAK pool summary: {n} runs in {:.1} s; agent RSS KiB {rss0:?} -> {rss:?}",
        t0.elapsed().as_secs_f64()
    );
    drop(lab);
}

#[test]
fn podman_runs_return_to_baseline() {
    if !require_podman() {
        return;
    }
    let _g = serial();
    let params = short_params(46);
    runs_return_to_baseline(
        "podman",
        runs("LNST_LEAK_PODMAN_RUNS", 2),
        &[
            ("RECIPE", "SimpleNetworkRecipe"),
            ("RECIPE_PARAMS", &params),
            ("PODMAN_URI", URI),
        ],
        true,
    );
}
