//! Shared helpers of the end-to-end tests.
#![allow(dead_code)]

pub mod agent_ns;
pub mod catalogue;
pub mod lab;
pub mod podman;
pub mod vm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

/// End-to-end scenarios share the machine's CPUs and namespaces: run them one at a time.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    clean_slate();
    g
}

/// Once per test binary, before its first end-to-end scenario: `lnst-runner cleanup`, so that
/// leftovers of a process killed before this binary started (a killed earlier test run, an
/// interrupted CI job on the same machine) are not blamed on the scenarios here, which assert
/// that their own runs leave nothing behind. Cleanup never touches a live run's resources.
fn clean_slate() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(home) = tempfile::tempdir() else {
            return;
        };
        let mut vars = Vec::new();
        let uri = std::env::var("PODMAN_URI").unwrap_or_default();
        if !uri.is_empty() {
            vars.push(("PODMAN_URI", uri.as_str()));
        }
        if let Ok(out) = runner(home.path(), &vars).arg("cleanup").output() {
            let said = String::from_utf8_lossy(&out.stdout);
            if !said.contains("nothing to clean up") {
                eprintln!("before the first scenario, lnst-runner cleanup: {said}");
            }
        }
    });
}

/// True when the prerequisite holds. Missing: skip with a reason, except under CI, where
/// a skipped end-to-end test is a failure.
pub fn require(cond: bool, why: &str) -> bool {
    if cond {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("required in CI: {why}");
    }
    eprintln!("SKIP: {why}");
    false
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Root plus the tools the embedded pool needs.
pub fn require_netns_e2e() -> bool {
    require(is_root(), "end-to-end tests need root")
        && require(have("iperf3"), "iperf3 is not installed")
        && require(have("ping"), "ping is not installed")
        && require(have("ethtool"), "ethtool is not installed")
        && require(have("ip"), "iproute2 is not installed")
}

pub fn runner_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lnst-runner"))
}

pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lnst-agent"))
}

/// A runner command with a clean environment: only PATH, the given HOME and variables.
pub fn runner(home: &Path, vars: &[(&str, &str)]) -> Command {
    let mut c = Command::new(runner_bin());
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("LNST_AGENT_BIN", agent_bin())
        .env("LNST_POOL_DIR", home.join("pool"))
        .env("LNST_RESULTS_DIR", home.join("results"));
    for (k, v) in vars {
        c.env(k, v);
    }
    c.stdin(Stdio::null());
    c
}

pub fn output_text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Names of network namespaces whose name starts with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs a command, panicking with its output when it fails (test setup only).
pub fn sh(args: &[&str]) -> String {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(o.status.success(), "{args:?}: {}", output_text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Network namespaces (and a root-side bridge) a test made; removed on drop.
#[derive(Default)]
pub struct Testbed {
    pub namespaces: Vec<String>,
    pub root_links: Vec<String>,
    pub children: Vec<std::process::Child>,
}

impl Testbed {
    pub fn add_ns(&mut self, name: &str) {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_string());
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for l in &self.root_links {
            let _ = Command::new("ip").args(["link", "del", l]).output();
        }
        for n in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// The MAC of a link inside a namespace.
pub fn mac_of(ns: &str, dev: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/address")).ok();
    let out = sh(&["ip", "-n", ns, "-o", "link", "show", dev]);
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

pub fn read_json(p: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Pids of the direct children of `parent` whose command name is `name`.
pub fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = &stat[stat.find('(').unwrap_or(0) + 1..close];
        let ppid: u32 = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if ppid == parent && comm == name {
            out.push(pid);
        }
    }
    out
}

/// A running runner whose stderr is read line by line.
pub struct Watched {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<String>,
}

impl Watched {
    /// Start `cmd` with piped output.
    pub fn start(mut cmd: Command) -> Watched {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut all = String::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
            all
        });
        Watched {
            child,
            lines,
            reader,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Block until a stderr line contains `marker` (panics after `limit`).
    pub fn wait_for(&self, marker: &str, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            match self
                .lines
                .recv_timeout(std::time::Duration::from_millis(200))
            {
                Ok(l) if l.contains(marker) => return,
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("runner exited before printing {marker:?}")
                }
                Err(_) if std::time::Instant::now() > deadline => {
                    panic!("marker {marker:?} never seen")
                }
                Err(_) => {}
            }
        }
    }

    /// Wait for the exit; stderr holds every line the runner printed.
    pub fn finish(self) -> Output {
        let out = self.child.wait_with_output().unwrap();
        let err = self.reader.join().unwrap();
        Output {
            status: out.status,
            stdout: out.stdout,
            stderr: err.into_bytes(),
        }
    }
}

pub fn sigterm(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

/// Start SimpleNetworkRecipe on the embedded pool, wait until stderr shows `marker`, then call
/// `act(pid)`; returns the output and the time from `act` to the exit.
pub fn run_recipe_and_interrupt(
    home: &Path,
    params: &str,
    marker: &str,
    act: impl FnOnce(u32),
) -> (Output, std::time::Duration) {
    let w = Watched::start(runner(
        home,
        &[("RECIPE", "SimpleNetworkRecipe"), ("RECIPE_PARAMS", params)],
    ));
    w.wait_for(marker, std::time::Duration::from_secs(60));
    let t0 = std::time::Instant::now();
    act(w.pid());
    let out = w.finish();
    (out, t0.elapsed())
}

/// `lnst-runner cleanup` (with `vars`) finds nothing left by earlier runs.
pub fn assert_nothing_to_clean_up(home: &Path, vars: &[(&str, &str)]) {
    let c = runner(home, vars).arg("cleanup").output().unwrap();
    assert!(
        String::from_utf8_lossy(&c.stdout).contains("nothing to clean up"),
        "{}",
        output_text(&c)
    );
}

/// Links in the root namespace, sorted.
pub fn root_links() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The run ids (`lnst-<id>-…` names) that a run's results (JSON and logs) mention: what that run created, so
/// that a test checks its own leftovers and not other runs' on a shared machine.
pub fn run_ids_in_results(results: &std::path::Path) -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "json" || x == "log") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                for (i, _) in text.match_indices("lnst-") {
                    let id: String = text[i + 5..].chars().take(9).collect();
                    let hex = &id[..id.len().min(8)];
                    if id.len() == 9
                        && id.ends_with('-')
                        && hex.chars().all(|c| c.is_ascii_hexdigit())
                        && !out.iter().any(|o| o == hex)
                    {
                        out.push(hex.to_string());
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(results, &mut out);
    out
}
