//! Faults on the embedded namespace pool: SIGTERM in each phase of a run (provision, configure,
//! measure, teardown), an agent that stops answering, and a second runner started while a
//! first one runs. Real namespaces, agents, iperf3 and ping; needs root (fails under CI when a
//! prerequisite is missing). Addresses: 198.18.40.0/22 and fd00:40::/64. What is checked for
//! leftovers is what *these* runs made ([`Runs`]): other runners and agents on the machine
//! come and go meanwhile.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The runs one test made, told apart from everything else on the machine (other tests and
/// other users run runners and agents meanwhile). Every run gets its own HOME (a fresh
/// temporary directory), which its agents inherit; a watcher reads the run ids from the state
/// files (`/run/lnst-runner/<id>.json`, written before any namespace is made and kept while
/// one is left) of runners whose environment holds one of these HOMEs.
struct Runs {
    homes: Arc<Mutex<Vec<Vec<u8>>>>,
    ids: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
    links_before: Vec<String>,
}

/// Whether the environment of `pid` holds one of `entries` (`HOME=...`).
fn environ_has(pid: u32, entries: &[Vec<u8>]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| {
            env.split(|b| *b == 0)
                .any(|var| entries.iter().any(|e| e.as_slice() == var))
        })
        .unwrap_or(false)
}

fn state_files() -> Vec<PathBuf> {
    std::fs::read_dir(STATE_DIR)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}

const STATE_DIR: &str = "/run/lnst-runner";

impl Runs {
    fn start() -> Runs {
        let homes: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let ids: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (h, i, st) = (homes.clone(), ids.clone(), stop.clone());
        let watcher = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let known = i.lock().unwrap().clone();
                let marks = h.lock().unwrap().clone();
                for path in state_files() {
                    let Some(id) = path.file_stem().map(|s| s.to_string_lossy().into_owned())
                    else {
                        continue;
                    };
                    if known.contains(&id) {
                        continue;
                    }
                    let Ok(text) = std::fs::read_to_string(&path) else {
                        continue;
                    };
                    let Ok(state) = serde_json::from_str::<serde_json::Value>(&text) else {
                        continue;
                    };
                    let pid = state["pid"].as_u64().unwrap_or(0) as u32;
                    if pid != 0 && environ_has(pid, &marks) {
                        i.lock().unwrap().insert(id);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Runs {
            homes,
            ids,
            stop,
            watcher: Some(watcher),
            links_before: root_links(),
        }
    }

    /// A fresh HOME with an empty pool directory (netns agents), known as one of ours.
    fn home(&self) -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join("pool")).unwrap();
        let mut mark = b"HOME=".to_vec();
        mark.extend_from_slice(home.path().as_os_str().as_bytes());
        self.homes.lock().unwrap().push(mark);
        home
    }

    fn ids(&self) -> BTreeSet<String> {
        self.ids.lock().unwrap().clone()
    }

    /// Namespaces of our runs.
    fn namespaces(&self) -> Vec<String> {
        let ids = self.ids();
        netns_with_prefix("lnst-")
            .into_iter()
            .filter(|ns| ids.iter().any(|id| ns.starts_with(&format!("lnst-{id}-"))))
            .collect()
    }

    /// `lnst-agent` processes started by our runs (orphans included: they keep the HOME).
    fn agents(&self) -> Vec<u32> {
        let marks = self.homes.lock().unwrap().clone();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let is_agent = std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| c.trim() == "lnst-agent");
            if is_agent && environ_has(pid, &marks) {
                out.push(pid);
            }
        }
        out
    }

    /// What our runs left: namespaces, agents, state files, and links in the root namespace
    /// named as the netns provisioner names its links (`br<i>`, `h<i>i<j>`) or the recipe's
    /// interfaces (`eth<i>`) that were not there at the start.
    fn footprint(&self) -> Footprint {
        let ids = self.ids();
        let ours = |l: &str| {
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            l.strip_prefix("br").is_some_and(digits)
                || l.strip_prefix("eth").is_some_and(digits)
                || l.strip_prefix('h')
                    .and_then(|r| r.split_once('i'))
                    .is_some_and(|(a, b)| digits(a) && digits(b))
        };
        Footprint {
            namespaces: self.namespaces(),
            agents: self.agents(),
            links: root_links()
                .into_iter()
                .filter(|l| ours(l) && !self.links_before.contains(l))
                .collect(),
            state_files: state_files()
                .into_iter()
                .filter(|p| {
                    p.file_stem()
                        .is_some_and(|s| ids.contains(s.to_string_lossy().as_ref()))
                })
                .collect(),
        }
    }

    fn assert_clean(&self, what: &str) {
        assert_eq!(
            self.footprint(),
            Footprint::default(),
            "left behind {what} (runs {:?})",
            self.ids()
        );
    }

    /// `lnst-runner cleanup` removes nothing of our runs (other runs' leftovers are not this
    /// test's business).
    fn assert_cleanup_spares_ours(&self, home: &Path) {
        let c = runner(home, &[]).arg("cleanup").output().unwrap();
        let text = output_text(&c);
        let ids = self.ids();
        for line in String::from_utf8_lossy(&c.stdout).lines() {
            assert!(
                !ids.iter().any(|id| line.contains(id.as_str())),
                "cleanup touched a run of this test: {line}\n{text}"
            );
        }
    }
}

impl Drop for Runs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

/// What a run may leave behind.
#[derive(Debug, Default, PartialEq)]
struct Footprint {
    namespaces: Vec<String>,
    agents: Vec<u32>,
    links: Vec<String>,
    state_files: Vec<PathBuf>,
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
    let runs = Runs::start();
    // (phase, the stderr line that shows the runner is in it)
    let phases = [
        ("provision", "provisioning "),
        ("configure", "configuring the test network"),
        ("measure", "iter 1/"),
        ("teardown", "tearing down the netns agents"),
    ];
    for (phase, marker) in phases {
        let home = runs.home();
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
        runs.assert_clean(&format!("after SIGTERM in {phase}"));
    }
    assert!(!runs.ids().is_empty(), "the runs were seen");
    runs.assert_cleanup_spares_ours(runs.home().path());
}

#[test]
fn silent_agent_fails_the_test_within_the_keepalive_bound() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let runs = Runs::start();
    let home = runs.home();
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
    runs.assert_clean("after a silent agent");
}

#[test]
fn second_runner_does_not_disturb_the_first() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let runs = Runs::start();
    let home_a = runs.home();
    let a = Watched::start(runner(
        home_a.path(),
        &[
            ("RECIPE", "SimpleNetworkRecipe"),
            ("RECIPE_PARAMS", &params(42, 3, 3)),
        ],
    ));
    a.wait_for("iter 1/", Duration::from_secs(60));
    let mine = runs.namespaces();
    assert!(!mine.is_empty(), "first runner has namespaces");
    // What the footprint looks at is seen while it exists: the first run's two agents.
    assert_eq!(runs.agents().len(), 2, "agents of the first runner");
    assert_eq!(runs.footprint().state_files.len(), 1, "its state file");

    // A second run, complete, while the first measures.
    let home_b = runs.home();
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
    runs.assert_cleanup_spares_ours(home_b.path());
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
    assert_eq!(runs.ids().len(), 2, "both runs were seen");
    runs.assert_clean("after two runs");
}

#[test]
fn closed_output_pipes_do_not_stop_the_run() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let runs = Runs::start();
    let home = runs.home();
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
    runs.assert_clean("after closed pipes");
}
