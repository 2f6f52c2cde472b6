//! Hostile results directories (issue 14 item 1) and message shapes (issue 14 item 8).
//!
//! A results directory may hold links planted by someone who can write into it; the runner
//! runs as root. Every entry the exporter creates (`summary.json`, `junit.xml`, `results.zip`
//! and its temporary file, `<test_id>/`, `run-data-*.json`, `logs/`, `logs/*.log`, `raw/...`,
//! the write check) must be created without following a link: a victim file or directory
//! outside the results directory stays unchanged, and a result entry that is already a link is
//! reported by name. A link found before the run is bad input (exit 2, one line, nothing
//! contacted); one planted while the run is under way fails the export (an error line, exit 1
//! even when every test passed).
//!
//! The runs here use a pool of two machines on 127.0.0.1 pointing at a listener of the test
//! that closes every connection: the test FAILs at once, nothing leaves the machine. One test
//! (netns agents, root) shows a passing run whose export fails. Addresses: 198.18.60.0/24,
//! fd00:60::/64.

mod common;

use common::*;
use lnst_runner::results::export::{ExportError, Exporter};
use lnst_runner::results::{MatchDescription, RecipeRun, ResultEntry, ResultType, TestOutcome};
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PRECIOUS: &str = "precious victim content\n";
const ID: &str = "0_SimpleNetworkRecipe";

/// A test outcome that writes every kind of entry: run data, both logs, nested raw files.
fn outcome() -> TestOutcome {
    let mut run = RecipeRun::new("SimpleNetworkRecipe", MatchDescription::default());
    run.add(ResultEntry::generic(ResultType::Fail, "ping failed"));
    run.exception = Some("agent host2 disconnected".into());
    TestOutcome {
        id: ID.into(),
        recipe: "SimpleNetworkRecipe".into(),
        params: serde_json::json!({}),
        runs: vec![run],
        error: Some("teardown failed".into()),
        raw: vec![
            ("iperf3/client-0.json".into(), b"{}".to_vec()),
            ("ping.txt".into(), b"3 packets".to_vec()),
        ],
        duration_s: 1.0,
        tool_time_s: 0.5,
        agents_s: 0.0,
        phases: Default::default(),
    }
}

/// The whole export of [`outcome`] under `root`: the first error, if any.
fn export_all(root: &Path) -> Result<(), ExportError> {
    let ex = Exporter::new(root)?;
    let t = outcome();
    ex.write_test(&t)?;
    ex.finish(std::slice::from_ref(&t))
}

/// A scratch area: `results/` (the results dir) and victims beside it.
struct Scene {
    tmp: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join("results")).expect("mkdir results");
        std::fs::create_dir(tmp.path().join("victim-dir")).expect("mkdir victim-dir");
        std::fs::write(tmp.path().join("victim"), PRECIOUS).expect("victim");
        Scene { tmp }
    }
    fn root(&self) -> PathBuf {
        self.tmp.path().join("results")
    }
    fn victim(&self) -> PathBuf {
        self.tmp.path().join("victim")
    }
    fn victim_dir(&self) -> PathBuf {
        self.tmp.path().join("victim-dir")
    }
    /// `results/<rel>` -> the victim file (or directory), parents created as real dirs.
    fn plant(&self, rel: &str, to_dir: bool) {
        let at = self.root().join(rel);
        if let Some(p) = at.parent() {
            std::fs::create_dir_all(p).expect("parents");
        }
        let target = if to_dir {
            self.victim_dir()
        } else {
            self.victim()
        };
        symlink(target, &at).expect("plant link");
    }
    /// Neither victim changed: same content, the directory still empty.
    fn assert_victims_intact(&self, what: &str) {
        let text = std::fs::read_to_string(self.victim()).expect("victim");
        assert_eq!(text, PRECIOUS, "victim file written through {what}");
        let entries: Vec<_> = std::fs::read_dir(self.victim_dir())
            .expect("victim dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            entries.is_empty(),
            "victim directory written through {what}: {entries:?}"
        );
        let meta = std::fs::symlink_metadata(self.victim()).expect("victim");
        assert!(meta.file_type().is_file());
    }
}

fn assert_refused(res: Result<(), ExportError>, rel: &str) {
    let e = res.expect_err(&format!("a link at {rel} is an error"));
    let msg = e.to_string();
    assert!(
        msg.contains(rel) && msg.contains("symbolic link"),
        "the error names {rel} and says why: {msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg:?}");
}

/// Each planted link (file entries to the victim file, directory entries to the victim dir).
const PLANTED: &[(&str, bool)] = &[
    ("summary.json", false),
    ("junit.xml", false),
    ("results.zip", false),
    (ID, true),
    ("0_SimpleNetworkRecipe/run-data-0.json", false),
    ("0_SimpleNetworkRecipe/logs", true),
    ("0_SimpleNetworkRecipe/logs/crash.log", false),
    ("0_SimpleNetworkRecipe/logs/result_summary.log", false),
    ("0_SimpleNetworkRecipe/raw", true),
    ("0_SimpleNetworkRecipe/raw/iperf3", true),
    ("0_SimpleNetworkRecipe/raw/iperf3/client-0.json", false),
    ("0_SimpleNetworkRecipe/raw/ping.txt", false),
];

#[test]
fn exporter_refuses_every_planted_result_link() {
    for (rel, to_dir) in PLANTED {
        let s = Scene::new();
        s.plant(rel, *to_dir);
        assert_refused(export_all(&s.root()), rel);
        s.assert_victims_intact(rel);
        // The link itself is left alone (not replaced, not removed): it is reported.
        assert!(
            std::fs::symlink_metadata(s.root().join(rel))
                .expect("link")
                .file_type()
                .is_symlink(),
            "{rel}"
        );
    }
}

#[test]
fn links_planted_between_tests_are_refused_at_write_time() {
    // Exporter::new passed; the link appears while the test runs.
    for (rel, to_dir) in PLANTED {
        let s = Scene::new();
        let ex = Exporter::new(&s.root()).expect("exporter");
        s.plant(rel, *to_dir);
        let t = outcome();
        let res = ex
            .write_test(&t)
            .and_then(|()| ex.finish(std::slice::from_ref(&t)));
        assert_refused(res, rel);
        s.assert_victims_intact(rel);
    }
}

#[test]
fn zip_temporary_name_is_not_followed() {
    let s = Scene::new();
    // The names an earlier version used for the archive's temporary file.
    s.plant(".results.zip.tmp", false);
    s.plant(".lnst-write-test-0", false);
    export_all(&s.root()).expect("export");
    s.assert_victims_intact(".results.zip.tmp");
    let zip = s.root().join("results.zip");
    assert!(std::fs::symlink_metadata(&zip)
        .expect("zip")
        .file_type()
        .is_file());
    let z = zip::ZipArchive::new(std::fs::File::open(&zip).expect("open")).expect("valid zip");
    let names: Vec<String> = z
        .file_names()
        .map(|n| n.expect("utf-8 name").into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "summary.json"), "{names:?}");
    // A planted link is not an entry of the archive either.
    assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");
}

#[test]
fn write_check_is_not_a_predictable_file() {
    let s = Scene::new();
    // The name the check used to write for this very process.
    s.plant(&format!(".lnst-write-test-{}", std::process::id()), false);
    Exporter::new(&s.root()).expect("exporter");
    s.assert_victims_intact("the write check");
    // And it leaves nothing behind but the planted link.
    let planted = format!(".lnst-write-test-{}", std::process::id());
    let left: Vec<_> = std::fs::read_dir(s.root())
        .expect("results")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| *n != planted)
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn hard_linked_result_is_replaced_not_written_through() {
    let s = Scene::new();
    std::fs::hard_link(s.victim(), s.root().join("summary.json")).expect("hard link");
    std::fs::create_dir_all(s.root().join(ID).join("logs")).expect("mkdir");
    std::fs::hard_link(s.victim(), s.root().join(ID).join("logs/crash.log")).expect("link");
    export_all(&s.root()).expect("export");
    s.assert_victims_intact("a hard link");
    let summary = std::fs::read_to_string(s.root().join("summary.json")).expect("summary");
    assert!(summary.contains("\"overall\""), "{summary}");
}

#[test]
fn results_dir_that_is_a_link_is_refused_but_linked_parents_are_fine() {
    let s = Scene::new();
    let link = s.tmp.path().join("results-link");
    symlink(s.victim_dir(), &link).expect("link");
    let e = Exporter::new(&link).expect_err("the results dir itself is a link");
    let msg = e.to_string();
    assert!(
        msg.contains("results-link") && msg.contains("symbolic link"),
        "{msg}"
    );
    s.assert_victims_intact("the results dir");
    // A link among the parents is the user's own path: followed.
    let parent_link = s.tmp.path().join("parent-link");
    symlink(s.tmp.path().join("results"), &parent_link).expect("link");
    export_all(&parent_link.join("sub")).expect("export below a linked parent");
    assert!(s.root().join("sub/summary.json").is_file());
}

#[test]
fn links_and_special_files_in_the_tree_stay_out_of_the_zip() {
    let s = Scene::new();
    std::fs::create_dir_all(s.root().join("old")).expect("mkdir");
    symlink(s.victim(), s.root().join("old/leak")).expect("link");
    symlink(s.victim_dir(), s.root().join("old/leakdir")).expect("link");
    std::fs::write(s.victim_dir().join("inside"), PRECIOUS).expect("write");
    nix::unistd::mkfifo(
        &s.root().join("old/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("fifo");
    export_all(&s.root()).expect("export");
    let mut z = zip::ZipArchive::new(std::fs::File::open(s.root().join("results.zip")).unwrap())
        .expect("zip");
    for i in 0..z.len() {
        let mut e = z.by_index(i).expect("entry");
        let name = e.name().unwrap_or_default().to_string();
        assert!(!name.starts_with("old/"), "{name}");
        let mut text = String::new();
        let _ = e.read_to_string(&mut text);
        assert!(!text.contains("precious"), "{name} carries the victim");
    }
}

#[test]
fn hostile_raw_names_are_refused_or_stay_inside() {
    let long = "x".repeat(300);
    let names = [
        "..",
        "../victim",
        "a/../../victim",
        "/etc/passwd",
        "./../victim",
        "a\\..\\..\\victim",
        "a\0b",
        "",
        ".",
        "./.",
        "a//b",
        "a/./b",
        ".lnst-tmp-0000000000000000",
        long.as_str(),
    ];
    for name in names {
        let s = Scene::new();
        let ex = Exporter::new(&s.root()).expect("exporter");
        let mut t = outcome();
        t.raw = vec![(name.to_string(), b"raw".to_vec())];
        let res = ex.write_test(&t);
        s.assert_victims_intact(name);
        // Whatever happened, nothing appeared beside the results directory.
        let beside: Vec<String> = std::fs::read_dir(s.tmp.path())
            .expect("tmp")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(beside.len(), 3, "{name:?}: {beside:?}");
        if res.is_ok() {
            // Kept only as a plain path below raw/.
            let kept = walk(&s.root().join(ID).join("raw"));
            assert_eq!(kept.len(), 1, "{name:?}: {kept:?}");
        }
    }
}

/// Regular files below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let ft = e.file_type().expect("type");
            if ft.is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The runner binary.

/// Two TCP listeners (127.0.0.1 and 127.0.0.2, one per pool machine) that accept and close
/// every connection, counting them; `on_accept` runs once, at the first connection, before
/// it is closed.
struct Closer {
    addrs: Vec<std::net::SocketAddr>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

type Hook = Arc<std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>>;

impl Closer {
    fn start(on_accept: impl FnOnce() + Send + 'static) -> Closer {
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let hook: Hook = Arc::new(std::sync::Mutex::new(Some(Box::new(on_accept))));
        let mut addrs = Vec::new();
        let mut threads = Vec::new();
        for ip in ["127.0.0.1", "127.0.0.2"] {
            let l = TcpListener::bind((ip, 0)).expect("bind");
            addrs.push(l.local_addr().expect("addr"));
            let (a, st, h) = (accepted.clone(), stop.clone(), hook.clone());
            threads.push(std::thread::spawn(move || {
                for conn in l.incoming() {
                    if st.load(Ordering::SeqCst) {
                        break;
                    }
                    a.fetch_add(1, Ordering::SeqCst);
                    let f = h.lock().map(|mut g| g.take()).unwrap_or(None);
                    if let Some(f) = f {
                        f();
                    }
                    drop(conn);
                }
            }));
        }
        Closer {
            addrs,
            accepted,
            stop,
            threads,
        }
    }
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for a in &self.addrs {
            let _ = std::net::TcpStream::connect(a);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Two pool machines (one NIC each on `net1`) whose agents are the closer's listeners.
fn write_loopback_pool(dir: &Path, closer: &Closer) {
    std::fs::create_dir_all(dir).expect("pool dir");
    for (i, a) in closer.addrs.iter().enumerate() {
        let xml = format!(
            r#"<agentmachine>
  <params><param name="hostname" value="{}"/><param name="rpc_port" value="{}"/></params>
  <interfaces><eth id="eth0" label="net1"><params><param name="hwaddr" value="52:54:00:60:00:0{}"/></params></eth></interfaces>
</agentmachine>
"#,
            a.ip(),
            a.port(),
            i + 1
        );
        std::fs::write(dir.join(format!("m{i}.xml")), xml).expect("pool xml");
    }
}

const PARAMS: &str = "perf_iterations=1;perf_duration=1;perf_tests=['tcp_stream'];\
    offload_combinations=();net_ipv4='198.18.60.0/24';net_ipv6='fd00:60::/64';ping_count=1";

/// The runner on the loopback pool, results in `results/` of the scene.
fn run_on_pool(s: &Scene, closer: &Closer, extra: &[(&str, &str)]) -> Output {
    let home = s.tmp.path();
    write_loopback_pool(&home.join("pool"), closer);
    let mut vars = vec![("RECIPE", "SimpleNetworkRecipe"), ("RECIPE_PARAMS", PARAMS)];
    vars.extend_from_slice(extra);
    runner(home, &vars).output().expect("runner")
}

#[test]
fn runner_refuses_planted_links_before_contacting_anything() {
    let links: &[(&str, bool)] = &[
        ("summary.json", false),
        ("junit.xml", false),
        ("results.zip", false),
        (ID, true),
        ("0_SimpleNetworkRecipe/logs", true),
        ("0_SimpleNetworkRecipe/logs/crash.log", false),
        ("0_SimpleNetworkRecipe/raw", true),
    ];
    for (rel, to_dir) in links {
        let s = Scene::new();
        s.plant(rel, *to_dir);
        let closer = Closer::start(|| {});
        let out = run_on_pool(&s, &closer, &[]);
        let text = format!("link {rel}: {}", output_text(&out));
        assert_eq!(out.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(
            lines[0].starts_with("lnst-runner: ")
                && lines[0].contains(rel)
                && lines[0].contains("symbolic link"),
            "{text}"
        );
        assert_eq!(closer.accepted(), 0, "no agent contacted: {text}");
        s.assert_victims_intact(rel);
    }
}

/// The next `n` pids after the last one the kernel handed out (wrapping at pid_max).
fn next_pids(n: u32) -> Vec<u32> {
    let read = |p: &str| -> u32 {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let last = read("/proc/sys/kernel/ns_last_pid");
    let max = read("/proc/sys/kernel/pid_max").max(32768);
    (1..=n)
        .map(|i| (last + i) % max)
        .filter(|p| *p > 1)
        .collect()
}

#[test]
fn runner_does_not_follow_write_check_or_zip_temp_links() {
    let s = Scene::new();
    // Every name the write check could have used for the runner's pid, and the archive's
    // old temporary name.
    for pid in next_pids(3000) {
        symlink(s.victim(), s.root().join(format!(".lnst-write-test-{pid}"))).expect("plant");
    }
    s.plant(".results.zip.tmp", false);
    let closer = Closer::start(|| {});
    let out = run_on_pool(&s, &closer, &[]);
    let text = output_text(&out);
    // The test fails (its agents hang up at once); the results are exported normally.
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(closer.accepted() > 0, "{text}");
    s.assert_victims_intact("the write check or the zip's temporary file");
    let zip = s.root().join("results.zip");
    assert!(
        std::fs::symlink_metadata(&zip)
            .map(|m| m.file_type().is_file())
            .unwrap_or(false),
        "{text}"
    );
    let summary = read_json(&s.root().join("summary.json"));
    assert_eq!(summary["overall"], "FAIL");
}

#[test]
fn link_planted_during_the_run_fails_the_export_with_a_clear_line() {
    let s = Scene::new();
    let (root, victim_dir) = (s.root(), s.victim_dir());
    // Planted when the runner contacts its first agent: after every check before the run.
    let closer = Closer::start(move || {
        symlink(&victim_dir, root.join(ID)).expect("plant");
    });
    let out = run_on_pool(&s, &closer, &[]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    s.assert_victims_intact("a test directory planted during the run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let culprit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("symbolic link"))
        .collect();
    assert_eq!(culprit.len(), 1, "{text}");
    assert!(
        culprit[0].starts_with("lnst-runner: ") && culprit[0].contains(ID),
        "{text}"
    );
    // What could be written was: the summary says the test failed.
    let summary = read_json(&s.root().join("summary.json"));
    assert_eq!(summary["overall"], "FAIL");
}

#[test]
fn passing_run_whose_export_fails_exits_1() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let s = Scene::new();
    let home = s.tmp.path();
    std::fs::create_dir_all(home.join("pool")).expect("empty pool dir");
    let w = Watched::start(runner(
        home,
        &[("RECIPE", "SimpleNetworkRecipe"), ("RECIPE_PARAMS", PARAMS)],
    ));
    w.wait_for("iter 1/", Duration::from_secs(60));
    symlink(s.victim_dir(), s.root().join(ID)).expect("plant");
    let out = w.finish();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Overall result: PASS"),
        "the test itself passed: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("lnst-runner: ") && l.contains("symbolic link")),
        "{text}"
    );
    s.assert_victims_intact("a test directory planted during a passing run");
}

// ---------------------------------------------------------------------------------------
// Messages (issue 14 item 8).

/// Exit 2 and exactly one stderr line `lnst-runner: ...` containing `needle`.
fn one_line_exit_2(out: &Output, needle: &str) -> String {
    let text = output_text(out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].starts_with("lnst-runner: "), "{text}");
    assert!(lines[0].contains(needle), "{needle:?} missing: {text}");
    lines[0].to_string()
}

#[test]
fn home_that_is_not_a_directory_is_blamed_on_home() {
    let s = Scene::new();
    let mut cmd = runner(s.tmp.path(), &[("RECIPE", "SimpleNetworkRecipe")]);
    cmd.env("HOME", "/dev/null").env_remove("LNST_POOL_DIR");
    let out = cmd.arg("plan").output().expect("runner");
    let line = one_line_exit_2(&out, "/dev/null");
    assert!(line.starts_with("lnst-runner: HOME: "), "{line}");
    // LNST_POOL_DIR was not set: it is named only as the way out, not as the culprit.
    assert!(!line.starts_with("lnst-runner: LNST_POOL_DIR"), "{line}");
}

#[test]
fn pool_without_a_subcommand_is_a_one_line_usage_error() {
    let s = Scene::new();
    let out = runner(s.tmp.path(), &[])
        .arg("pool")
        .output()
        .expect("runner");
    let line = one_line_exit_2(&out, "check");
    assert!(line.contains("pool"), "{line}");
    assert!(out.stdout.is_empty(), "{}", output_text(&out));
}

/// A pool of `n` machines (valid, unused: the run stops before any contact).
fn big_pool(dir: &Path, n: u32) {
    std::fs::create_dir_all(dir).expect("pool dir");
    for i in 0..n {
        let xml = format!(
            r#"<agentmachine><params><param name="hostname" value="198.18.{}.{}"/></params><interfaces><eth id="eth0" label="net1"><params><param name="hwaddr" value="52:54:00:61:{:02x}:{:02x}"/></params></eth></interfaces></agentmachine>"#,
            i / 250,
            i % 250 + 1,
            i / 256,
            i % 256
        );
        std::fs::write(dir.join(format!("m{i}.xml")), xml).expect("xml");
    }
}

#[test]
fn debug_does_not_multiply_a_preflight_error() {
    let s = Scene::new();
    big_pool(&s.tmp.path().join("pool"), 1000);
    // The results directory cannot be created (below a regular file): a preflight error after
    // the whole pool was loaded.
    let results = s.victim().join("results");
    let results = results.to_string_lossy();
    for debug in ["0", "1"] {
        let out = runner(
            s.tmp.path(),
            &[
                ("RECIPE", "SimpleNetworkRecipe"),
                ("RECIPE_PARAMS", PARAMS),
                ("DEBUG", debug),
                ("LNST_RESULTS_DIR", &results),
            ],
        )
        .output()
        .expect("runner");
        one_line_exit_2(&out, "not writable");
    }
    s.assert_victims_intact("an unwritable results dir");
}

#[test]
fn log_lines_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let s = Scene::new();
    let closer = Closer::start(|| {});
    let out = run_on_pool(&s, &closer, &[("DEBUG", "1")]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    // DEBUG=1 after the preflight: the log lines are there, plain.
    assert!(text.contains("DEBUG"), "{text}");
    assert!(!text.contains('\u{1b}'), "{text}");
}
