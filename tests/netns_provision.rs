//! netns provisioner end to end (needs root; skipped with a reason otherwise, failing in CI).
//! Addresses are from 198.18.0.0/15; traffic stays inside namespaces these tests create.

use lnst_runner::provision::netns::{
    all_lnst_namespaces, cleanup_leftovers, namespaces_of_run, remove_run, state_file_path,
    NetnsProvisioner, NETNS_DIR,
};
use lnst_runner::provision::{AgentEndpoint, Provisioner};
use lnst_runner::requirements::{HostReq, Requirements};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

mod common;
use common::require;

fn prerequisites() -> bool {
    require(
        NetnsProvisioner::check_root().is_ok(),
        "netns tests need root with CAP_SYS_ADMIN",
    ) && require(
        Command::new("ip").arg("-V").output().is_ok(),
        "netns tests need the `ip` binary (iproute2) to inspect and configure namespaces",
    ) && require(
        Command::new("ping").arg("-V").output().is_ok(),
        "netns tests need `ping`",
    )
}

fn new_run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Removes everything of a run on drop, also when the test fails.
struct RunGuard(String);

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Err(e) = remove_run(&self.0) {
            eprintln!("cleanup of run {} left errors: {e}", self.0);
        }
    }
}

fn argv(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

fn reqs(hosts: &[(&str, &[(&str, &str)])]) -> Requirements {
    let mut r = Requirements::default();
    for (host, ifaces) in hosts {
        let mut h = HostReq::default();
        for (id, label) in *ifaces {
            h = h.with_interface(id, label, BTreeMap::new());
        }
        r.hosts.insert(host.to_string(), h);
    }
    r
}

/// Run `ip` with an argv; Ok(stdout) on success.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ping_ok(ns: &str, addr: &str, count: &str, wait: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-n", "-q", "-c", count, "-W", wait, addr,
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn configure(ns: &str, ifname: &str, cidr: &str) {
    ip(&["-n", ns, "addr", "add", cidr, "dev", ifname]).unwrap_or_else(|e| panic!("{e}"));
    ip(&["-n", ns, "link", "set", ifname, "up"]).unwrap_or_else(|e| panic!("{e}"));
}

/// The MAC `ip` reports for `ifname` in `ns`.
fn mac_in(ns: &str, ifname: &str) -> Option<String> {
    let out = ip(&["-n", ns, "-o", "link", "show", "dev", ifname]).ok()?;
    let mut words = out.split_whitespace();
    words.find(|w| *w == "link/ether")?;
    words.next().map(str::to_string)
}

fn ep<'a>(eps: &'a [AgentEndpoint], host: &str) -> &'a AgentEndpoint {
    eps.iter()
        .find(|e| e.host_id == host)
        .unwrap_or_else(|| panic!("no endpoint for {host}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_one_segment_agents_in_namespaces() {
    if !prerequisites() {
        return;
    }
    let run = new_run_id();
    let _guard = RunGuard(run.clone());
    let agent = argv(&[
        "sh",
        "-c",
        "readlink /proc/self/ns/net; ls /sys/class/net | sort | tr '\\n' ' '; echo; exec cat",
    ]);
    let mut p = NetnsProvisioner::new(&run, agent);
    let r = reqs(&[
        ("host1", &[("eth0", "net1")]),
        ("host2", &[("eth0", "net1")]),
    ]);

    let t0 = Instant::now();
    let mut eps = p.provision(&r).await.unwrap_or_else(|e| panic!("{e}"));
    let took = t0.elapsed();
    eprintln!("provisioning 2 hosts took {took:?}");
    assert!(took < Duration::from_secs(3), "provisioning took {took:?}");

    let ns1 = format!("lnst-{run}-host1");
    let ns2 = format!("lnst-{run}-host2");
    let sw = format!("lnst-{run}-sw");
    let mut expected = vec![ns1.clone(), ns2.clone(), sw.clone()];
    expected.sort();
    assert_eq!(namespaces_of_run(&run), expected);
    assert!(state_file_path(&run).exists());
    assert_eq!(eps.len(), 2);

    for e in eps.iter_mut() {
        let ns = format!("lnst-{run}-{}", e.host_id);
        assert_eq!(e.target, ns);
        assert_eq!(e.hostname, ns);
        assert!(e.secret.is_none());
        let b = e
            .interfaces
            .get("eth0")
            .unwrap_or_else(|| panic!("no eth0"));
        assert_eq!(b.ifname.as_deref(), Some("eth0"));
        assert_eq!(b.target, "eth0");
        assert_eq!(b.hwaddr, b.hwaddr.to_lowercase());
        assert_eq!(mac_in(&ns, "eth0").as_deref(), Some(b.hwaddr.as_str()));
        // The host end stays down until the recipe configures it.
        let link = ip(&["-n", &ns, "-o", "link", "show", "dev", "eth0"]).unwrap_or_default();
        assert!(link.contains("state DOWN"), "{link}");

        // The agent runs in the host namespace: compare its netns inode with the file's.
        let ino = std::fs::metadata(Path::new(NETNS_DIR).join(&ns))
            .unwrap_or_else(|err| panic!("{err}"))
            .ino();
        let mut reader = tokio::io::BufReader::new(&mut e.transport.reader);
        let mut first = String::new();
        tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut first))
            .await
            .unwrap_or_else(|_| panic!("agent printed nothing"))
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            first.trim(),
            format!("net:[{ino}]"),
            "agent of {}",
            e.host_id
        );

        // It sees the namespace's devices in /sys too (like `ip netns exec`).
        let mut sys = String::new();
        tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut sys))
            .await
            .unwrap_or_else(|_| panic!("agent printed no device list"))
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(sys.trim(), "eth0 lo", "agent of {}", e.host_id);

        // And the transport is wired to it (cat echoes).
        let msg = format!("hello {}\n", e.host_id);
        e.transport
            .writer
            .write_all(msg.as_bytes())
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        e.transport
            .writer
            .flush()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), reader.read_exact(&mut back))
            .await
            .unwrap_or_else(|_| panic!("no echo"))
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(back, msg.as_bytes());
    }

    // Both peers sit on the label's bridge in the switch namespace.
    let ports = ip(&["-n", &sw, "-o", "link", "show", "master", "br0"]).unwrap_or_default();
    assert_eq!(ports.lines().count(), 2, "{ports}");

    // The L2 segment works.
    configure(&ns1, "eth0", "198.18.30.1/24");
    configure(&ns2, "eth0", "198.18.30.2/24");
    assert!(
        ping_ok(&ns1, "198.18.30.2", "2", "2"),
        "ping over net1 failed"
    );

    let t1 = Instant::now();
    p.teardown().await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("teardown took {:?}", t1.elapsed());
    assert!(
        namespaces_of_run(&run).is_empty(),
        "{:?}",
        namespaces_of_run(&run)
    );
    assert!(!state_file_path(&run).exists());
    // The transport's writer is closed by teardown.
    assert!(ep(&eps, "host1").interfaces.contains_key("eth0"));
    let w = eps[0].transport.writer.write_all(b"x").await;
    assert!(w.is_err(), "writer still open after teardown");
    // Second teardown: no-op success.
    p.teardown()
        .await
        .unwrap_or_else(|e| panic!("second teardown: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_are_isolated_segments() {
    if !prerequisites() {
        return;
    }
    let run = new_run_id();
    let _guard = RunGuard(run.clone());
    let mut p = NetnsProvisioner::new(&run, argv(&["cat"]));
    let r = reqs(&[
        ("host1", &[("eth0", "net1"), ("eth1", "net2")]),
        ("host2", &[("eth0", "net1")]),
        ("host3", &[("eth0", "net2")]),
    ]);
    let eps = p.provision(&r).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(eps.len(), 3);
    let h1 = ep(&eps, "host1");
    assert_eq!(
        h1.interfaces.keys().cloned().collect::<Vec<_>>(),
        vec!["eth0".to_string(), "eth1".to_string()]
    );
    assert_ne!(
        h1.interfaces.get("eth0").map(|b| &b.hwaddr),
        h1.interfaces.get("eth1").map(|b| &b.hwaddr)
    );
    for e in &eps {
        let ns = format!("lnst-{run}-{}", e.host_id);
        for (id, b) in &e.interfaces {
            assert_eq!(mac_in(&ns, id).as_deref(), Some(b.hwaddr.as_str()));
        }
    }
    let ns = |h: &str| format!("lnst-{run}-{h}");
    let sw = ns("sw");
    // net1 → br0, net2 → br1 (sorted labels), two ports each.
    for br in ["br0", "br1"] {
        let ports = ip(&["-n", &sw, "-o", "link", "show", "master", br]).unwrap_or_default();
        assert_eq!(ports.lines().count(), 2, "{br}: {ports}");
    }

    configure(&ns("host1"), "eth0", "198.18.32.1/24");
    configure(&ns("host1"), "eth1", "198.18.33.1/24");
    configure(&ns("host2"), "eth0", "198.18.32.2/24");
    configure(&ns("host3"), "eth0", "198.18.33.3/24");
    // Put host2 and host3 in one extra subnet too: only L2 isolation can stop them.
    ip(&[
        "-n",
        &ns("host2"),
        "addr",
        "add",
        "198.18.31.2/24",
        "dev",
        "eth0",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    ip(&[
        "-n",
        &ns("host3"),
        "addr",
        "add",
        "198.18.31.3/24",
        "dev",
        "eth0",
    ])
    .unwrap_or_else(|e| panic!("{e}"));

    assert!(
        ping_ok(&ns("host1"), "198.18.32.2", "2", "2"),
        "host1→host2 on net1"
    );
    assert!(
        ping_ok(&ns("host1"), "198.18.33.3", "2", "2"),
        "host1→host3 on net2"
    );
    assert!(
        !ping_ok(&ns("host2"), "198.18.31.3", "2", "1"),
        "host2 (net1) reached host3 (net2): segments are not isolated"
    );

    p.teardown().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(namespaces_of_run(&run).is_empty());
    assert!(!state_file_path(&run).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_dead_runs_are_removed_live_runs_kept() {
    if !prerequisites() {
        return;
    }
    let r = reqs(&[
        ("host1", &[("eth0", "net1")]),
        ("host2", &[("eth0", "net1")]),
    ]);

    let live = new_run_id();
    let _g1 = RunGuard(live.clone());
    let mut live_p = NetnsProvisioner::new(&live, argv(&["cat"]));
    let _live_eps = live_p.provision(&r).await.unwrap_or_else(|e| panic!("{e}"));

    let dead = new_run_id();
    let _g2 = RunGuard(dead.clone());
    {
        let mut dead_p = NetnsProvisioner::new(&dead, argv(&["cat"]));
        let _eps = dead_p.provision(&r).await.unwrap_or_else(|e| panic!("{e}"));
        // Fake the owner: a pid that has exited.
        let mut child = Command::new("true")
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let dead_pid = child.id();
        child.wait().unwrap_or_else(|e| panic!("{e}"));
        let path = state_file_path(&dead);
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_else(|e| panic!("{e}"));
        v["pid"] = serde_json::json!(dead_pid);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        // Dropped without teardown, as if the run was killed.
    }
    let dead_ns = namespaces_of_run(&dead);
    assert_eq!(dead_ns.len(), 3, "{dead_ns:?}");
    let live_ns = namespaces_of_run(&live);
    assert_eq!(live_ns.len(), 3, "{live_ns:?}");

    // A stray process left inside a dead run's namespace is ended by the cleanup.
    let mut stray = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("lnst-{dead}-host1"),
            "sleep",
            "30",
        ])
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stray_started = false;
    for _ in 0..50 {
        if stray.try_wait().ok().flatten().is_some() {
            break;
        }
        let in_ns = std::fs::read_link(format!("/proc/{}/exe", stray.id()))
            .map(|p| p.ends_with("sleep"))
            .unwrap_or(false);
        if in_ns {
            stray_started = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(stray_started, "stray sleep did not start");

    let removed = cleanup_leftovers().unwrap_or_else(|e| panic!("{e}"));
    let status = stray.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !status.success(),
        "stray process was not killed: {status:?}"
    );
    eprintln!("removed: {removed:?}");
    for ns in &dead_ns {
        assert!(removed.contains(ns), "{ns} not removed: {removed:?}");
    }
    let dead_state = state_file_path(&dead).display().to_string();
    assert!(removed.contains(&dead_state), "{removed:?}");
    assert!(
        !removed.iter().any(|x| x.contains(&live)),
        "a live run was touched: {removed:?}"
    );
    assert!(namespaces_of_run(&dead).is_empty());
    assert!(!state_file_path(&dead).exists());
    assert_eq!(namespaces_of_run(&live), live_ns);
    assert!(state_file_path(&live).exists());
    // Every removed entry is ours (lnst- prefix or a state file).
    for x in &removed {
        assert!(x.starts_with("lnst-") || x.ends_with(".json"), "{x}");
    }
    // Nothing of the live run is gone afterwards either.
    assert!(
        all_lnst_namespaces()
            .iter()
            .filter(|n| n.contains(&live))
            .count()
            == 3
    );

    live_p.teardown().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(namespaces_of_run(&live).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_way_failure_is_torn_down() {
    if !prerequisites() {
        return;
    }
    let run = new_run_id();
    let _guard = RunGuard(run.clone());
    let mut p = NetnsProvisioner::new(&run, argv(&["/nonexistent/lnst-agent-missing", "--stdio"]));
    let r = reqs(&[
        ("host1", &[("eth0", "net1")]),
        ("host2", &[("eth0", "net1")]),
    ]);
    let err = match p.provision(&r).await {
        Ok(_) => panic!("provisioning with a missing agent binary succeeded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("lnst-agent-missing"), "{err}");
    // It failed after creating namespaces...
    assert_eq!(
        namespaces_of_run(&run).len(),
        3,
        "{:?}",
        namespaces_of_run(&run)
    );
    assert!(state_file_path(&run).exists());
    // ...and teardown removes them.
    p.teardown().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(namespaces_of_run(&run).is_empty());
    assert!(!state_file_path(&run).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_run_id_is_refused_and_harmless() {
    if !prerequisites() {
        return;
    }
    let run = new_run_id();
    let _guard = RunGuard(run.clone());
    let r = reqs(&[("host1", &[("eth0", "net1")])]);
    let mut first = NetnsProvisioner::new(&run, argv(&["cat"]));
    let _eps = first.provision(&r).await.unwrap_or_else(|e| panic!("{e}"));
    let before = namespaces_of_run(&run);
    assert_eq!(before.len(), 2, "{before:?}");

    let mut second = NetnsProvisioner::new(&run, argv(&["cat"]));
    let err = match second.provision(&r).await {
        Ok(_) => panic!("a second run with the same id was provisioned"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("already in use"), "{err}");
    // Tearing down the refused run must not touch the first run.
    second.teardown().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(namespaces_of_run(&run), before);
    assert!(state_file_path(&run).exists());

    first.teardown().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(namespaces_of_run(&run).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_ignoring_eof_is_killed_after_grace() {
    if !prerequisites() {
        return;
    }
    let run = new_run_id();
    let _guard = RunGuard(run.clone());
    let r = reqs(&[("host1", &[("eth0", "net1")])]);
    let mut p = NetnsProvisioner::new(&run, argv(&["sleep", "30"]));
    let _eps = p.provision(&r).await.unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    p.teardown().await.unwrap_or_else(|e| panic!("{e}"));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "teardown took {took:?}"
    );
    assert!(namespaces_of_run(&run).is_empty());
}
