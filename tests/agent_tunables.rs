//! The real agent changing device and host tunables and putting them back.
//!
//! Devices are veth pairs in a test namespace: veth has channels (`ethtool -l/-L`) but no
//! pause frames, coalescing, RSS or IRQs on this kernel, so the channel changes are checked
//! for exact restoration after an abrupt end of the connection (and at EndRecipe, and through
//! an agent namespace), and the other device settings for their `Unsupported` replies and the
//! explicit-off rule; what veth lacks is asked of ethtool on the same kernel first, so the
//! expectations follow the kernel. Host settings (IRQ affinity of a NIC of this machine, CPU
//! idle states, turbo boost) are changed by an agent in the root namespace and must be back
//! after the connection drops; a host without them must answer `Unsupported` naming what is
//! missing. `perf record` jobs return their file.

mod common;

use common::{have, is_root, require, sh, Testbed};
use lnst_runner::protocol::{
    ChannelCounts, Coalesce, DropCachesWhat, ErrorKind, FlowType, IrqPolicy, JobSpec, PerfData,
    Previous, SetOutcome,
};
use lnst_runner::provision::Transport;
use lnst_runner::session::{AgentClient, ClientOptions, SessionError};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn prerequisites() -> bool {
    require(is_root(), "needs root for network namespaces")
        && require(have("ip"), "needs iproute2 (ip)")
        && require(have("ethtool"), "needs ethtool")
}

fn opts() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(20),
        keepalive_interval: Duration::from_millis(500),
        keepalive_timeout: Duration::from_secs(10),
    }
}

fn ok<T>(r: Result<T, SessionError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The kind and message of a remote error.
fn remote(r: Result<impl std::fmt::Debug, SessionError>) -> (ErrorKind, String) {
    match r {
        Err(SessionError::Remote { kind, message, .. }) => (kind, message),
        other => panic!("expected a remote error, got {other:?}"),
    }
}

/// An agent on stdio, inside `ns` (or the root namespace).
async fn agent(ns: Option<&str>) -> (tokio::process::Child, AgentClient) {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_lnst-agent")]);
            c
        }
        None => tokio::process::Command::new(env!("CARGO_BIN_EXE_lnst-agent")),
    };
    cmd.arg("--stdio")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn agent: {e}"));
    let (Some(out), Some(inp)) = (child.stdout.take(), child.stdin.take()) else {
        panic!("no pipes")
    };
    let t = Transport {
        reader: Box::new(out),
        writer: Box::new(inp),
    };
    let c = ok(
        AgentClient::connect("host1", t, None, opts()).await,
        "connect",
    );
    (child, c)
}

/// Drop the connection without Bye and wait for the agent to finish its cleanup and exit.
async fn drop_abruptly(mut child: tokio::process::Child, client: AgentClient) {
    drop(client);
    match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
        Ok(Ok(s)) => assert!(s.success(), "agent exited with {s}"),
        other => panic!("agent did not exit after the connection dropped: {other:?}"),
    }
}

fn ip(ns: &str, args: &[&str]) -> String {
    let mut v = vec!["ip", "-n", ns];
    v.extend_from_slice(args);
    sh(&v)
}

/// `ethtool ARGS` inside `ns`: (success, stdout + stderr).
fn ethtool_in(ns: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "ethtool"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ethtool: {e}"));
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn channels_text(ns: &str, dev: &str) -> String {
    let (ok, text) = ethtool_in(ns, &["-l", dev]);
    assert!(ok, "ethtool -l {dev}: {text}");
    text
}

/// A test namespace with veth pairs p0/p0x and p1/p1x, up.
fn testbed(tag: &str) -> (Testbed, String) {
    let ns = format!("lnsttest-tun-{tag}-{}", std::process::id());
    let mut tb = Testbed::default();
    tb.add_ns(&ns);
    for p in ["p0", "p1"] {
        let peer = format!("{p}x");
        ip(
            &ns,
            &["link", "add", p, "type", "veth", "peer", "name", &peer],
        );
        ip(&ns, &["link", "set", p, "up"]);
        ip(&ns, &["link", "set", &peer, "up"]);
    }
    (tb, ns)
}

fn counts(rx: Option<u32>, tx: Option<u32>) -> ChannelCounts {
    ChannelCounts {
        rx,
        tx,
        ..ChannelCounts::default()
    }
}

/// Channels of a veth change, reply with what they were, refuse counts beyond the maximum
/// and channel kinds veth lacks, and are exactly back after the connection drops, also when
/// one device was changed several times and another through an agent namespace it was moved
/// into (the journal undoes the change in the namespace, then moves the link back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_restored_after_abrupt_drop() {
    if !prerequisites() {
        return;
    }
    let (_tb, ns) = testbed("ch");
    let before = (channels_text(&ns, "p0"), channels_text(&ns, "p1"));
    let links_before = ip(&ns, &["-o", "link", "show"]);
    let (child, c) = agent(Some(&ns)).await;

    let ch = ok(c.get_channels("p0").await, "GetChannels");
    assert_eq!(ch.max, counts(Some(2), Some(2)), "{ch:?}");
    assert_eq!(ch.current, counts(Some(1), Some(1)), "{ch:?}");

    let r = ok(c.set_channels("p0", counts(Some(2), None)).await, "rx 2");
    assert_eq!(
        r,
        SetOutcome::Applied {
            previous: Previous::Channels(counts(Some(1), None))
        }
    );
    let r = ok(c.set_channels("p0", counts(None, Some(2))).await, "tx 2");
    assert_eq!(
        r,
        SetOutcome::Applied {
            previous: Previous::Channels(counts(None, Some(1)))
        }
    );
    // Already so: nothing changes, nothing is journaled.
    let r = ok(
        c.set_channels("p0", counts(Some(2), Some(2))).await,
        "again",
    );
    assert_eq!(r, SetOutcome::Unchanged);
    let now = channels_text(&ns, "p0");
    assert!(
        now.split("Current hardware settings:")
            .nth(1)
            .is_some_and(|cur| cur.contains("RX:\t\t2") && cur.contains("TX:\t\t2")),
        "{now}"
    );
    // Beyond the maximum, or a kind veth does not have.
    let (kind, msg) = remote(c.set_channels("p0", counts(Some(5), None)).await);
    assert_eq!(kind, ErrorKind::BadRequest);
    assert!(
        msg.contains("p0: rx 5 exceeds the device's maximum 2"),
        "{msg}"
    );
    let (kind, msg) = remote(
        c.set_channels(
            "p0",
            ChannelCounts {
                combined: Some(1),
                ..ChannelCounts::default()
            },
        )
        .await,
    );
    assert_eq!(kind, ErrorKind::Unsupported);
    assert!(
        msg.contains("p0") && msg.contains("veth") && msg.contains("combined"),
        "{msg}"
    );
    // Bad names never reach ethtool's command line.
    for bad in ["-h", "a b", "", "p0:1"] {
        let (kind, msg) = remote(c.get_channels(bad).await);
        assert_eq!(kind, ErrorKind::BadRequest, "{bad:?}: {msg}");
    }
    let (kind, _) = remote(c.get_channels("nosuch0").await);
    assert_eq!(kind, ErrorKind::NotFound);

    // p1 moves into an agent namespace and is tuned there.
    ok(c.create_netns("a1").await, "CreateNetns");
    ok(c.move_link("p1", Some("a1")).await, "MoveLink");
    let a1 = c.in_netns("a1");
    let r = ok(
        a1.set_channels("p1", counts(Some(2), Some(2))).await,
        "in a1",
    );
    assert!(matches!(r, SetOutcome::Applied { .. }), "{r:?}");
    let ch = ok(a1.get_channels("p1").await, "GetChannels in a1");
    assert_eq!(ch.current, counts(Some(2), Some(2)));

    drop(a1);
    drop_abruptly(child, c).await;
    assert_eq!(
        (channels_text(&ns, "p0"), channels_text(&ns, "p1")),
        before,
        "channels not restored"
    );
    assert_eq!(ip(&ns, &["-o", "link", "show"]), links_before);
}

/// EndRecipe restores too, and the session goes on; so does deleting the agent namespace a
/// device was tuned in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_restored_at_end_recipe() {
    if !prerequisites() {
        return;
    }
    let (_tb, ns) = testbed("er");
    let before = channels_text(&ns, "p0");
    let (child, c) = agent(Some(&ns)).await;
    ok(c.start_recipe(&["p0".to_string()]).await, "StartRecipe");
    ok(
        c.set_channels("p0", counts(Some(2), Some(2))).await,
        "SetChannels",
    );
    assert_ne!(channels_text(&ns, "p0"), before);
    ok(c.end_recipe().await, "EndRecipe");
    assert_eq!(channels_text(&ns, "p0"), before);
    // A second recipe on the same connection starts from the restored state.
    let ch = ok(c.get_channels("p0").await, "GetChannels");
    assert_eq!(ch.current, counts(Some(1), Some(1)));
    // Deleting an agent namespace restores what was tuned in it before the link goes back.
    ok(c.create_netns("a2").await, "CreateNetns");
    ok(c.move_link("p0", Some("a2")).await, "MoveLink");
    let a2 = c.in_netns("a2");
    ok(
        a2.set_channels("p0", counts(None, Some(2))).await,
        "SetChannels in a2",
    );
    drop(a2);
    ok(c.delete_netns("a2").await, "DeleteNetns");
    assert_eq!(channels_text(&ns, "p0"), before);
    ok(c.bye().await, "Bye");
    drop_abruptly(child, c).await;
}

/// veth has no pause frames, coalescing, RSS or flow hashing on this kernel (checked with
/// ethtool first): Get is `Unsupported` naming the device and driver; Set of "off" is
/// `NotApplicable` (not a failure), Set of "on" or of a number is `Unsupported`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veth_lacks_pause_coalescing_rss() {
    if !prerequisites() {
        return;
    }
    let (_tb, ns) = testbed("un");
    let (child, c) = agent(Some(&ns)).await;

    let (pause_ok, pause_text) = ethtool_in(&ns, &["-a", "p0"]);
    if pause_ok {
        // A future veth with pause frames: the reply must match ethtool.
        let p = ok(c.get_pause("p0").await, "GetPause");
        assert!(pause_text.contains(&format!("RX:\t\t{}", if p.rx { "on" } else { "off" })));
    } else {
        let (kind, msg) = remote(c.get_pause("p0").await);
        assert_eq!(kind, ErrorKind::Unsupported, "{msg}");
        assert!(
            msg.contains("p0 (driver veth) has no pause-frame settings"),
            "{msg}"
        );
        let r = ok(
            c.set_pause("p0", None, Some(false), Some(false)).await,
            "SetPause off",
        );
        let SetOutcome::NotApplicable { reason } = r else {
            panic!("explicit off on a device without pause frames: {r:?}")
        };
        assert!(reason.contains("p0"), "{reason}");
        let (kind, msg) = remote(c.set_pause("p0", None, Some(true), Some(false)).await);
        assert_eq!(kind, ErrorKind::Unsupported, "{msg}");
        let (kind, _) = remote(c.set_pause("p0", None, None, None).await);
        assert_eq!(kind, ErrorKind::BadRequest);
    }

    let (coal_ok, _) = ethtool_in(&ns, &["-c", "p0"]);
    if !coal_ok {
        let (kind, msg) = remote(c.get_coalesce("p0").await);
        assert_eq!(kind, ErrorKind::Unsupported);
        assert!(
            msg.contains("p0 (driver veth) has no interrupt coalescing settings"),
            "{msg}"
        );
        let off = Coalesce {
            adaptive_rx: Some(false),
            adaptive_tx: Some(false),
            ..Coalesce::default()
        };
        let r = ok(c.set_coalesce("p0", off).await, "adaptive off");
        assert!(matches!(r, SetOutcome::NotApplicable { .. }), "{r:?}");
        let usecs = Coalesce {
            adaptive_rx: Some(false),
            rx_usecs: Some(16),
            ..Coalesce::default()
        };
        let (kind, msg) = remote(c.set_coalesce("p0", usecs).await);
        assert_eq!(kind, ErrorKind::Unsupported, "{msg}");
    }

    let (rss_ok, _) = ethtool_in(&ns, &["-x", "p0"]);
    if !rss_ok {
        let (kind, msg) = remote(c.get_rss("p0").await);
        assert_eq!(kind, ErrorKind::Unsupported);
        assert!(
            msg.contains("p0 (driver veth) has no RSS settings"),
            "{msg}"
        );
        let (kind, _) = remote(c.set_rss("p0", Some("toeplitz"), None, None).await);
        assert_eq!(kind, ErrorKind::Unsupported);
    }
    let (kind, msg) = remote(c.set_rss("p0", Some("-x"), None, None).await);
    assert_eq!(kind, ErrorKind::BadRequest, "{msg}");
    let (kind, msg) = remote(c.set_rss("p0", None, Some("zz:1"), None).await);
    assert_eq!(kind, ErrorKind::BadRequest, "{msg}");

    let (fh_ok, _) = ethtool_in(&ns, &["-n", "p0", "rx-flow-hash", "tcp4"]);
    if !fh_ok {
        let (kind, msg) = remote(c.get_rx_flow_hash("p0", FlowType::Tcp4).await);
        assert_eq!(kind, ErrorKind::Unsupported, "{msg}");
        assert!(msg.contains("p0 (driver veth)"), "{msg}");
        let (kind, _) = remote(c.set_rx_flow_hash("p0", FlowType::Udp4, "sdfn").await);
        assert_eq!(kind, ErrorKind::Unsupported);
    }
    let (kind, msg) = remote(c.set_rx_flow_hash("p0", FlowType::Tcp4, "sd;x").await);
    assert_eq!(kind, ErrorKind::BadRequest, "{msg}");

    // A veth has no IRQs; CPUs the host lacks are named.
    let (kind, msg) = remote(c.get_irqs("p0").await);
    assert_eq!(kind, ErrorKind::Unsupported);
    assert!(
        msg.starts_with("p0 (driver veth) has no IRQs to pin"),
        "{msg}"
    );
    let (kind, msg) = remote(
        c.set_irq_affinity("p0", &[0], IrqPolicy::RoundRobin, false)
            .await,
    );
    assert_eq!(kind, ErrorKind::Unsupported, "{msg}");
    let (kind, msg) = remote(
        c.set_irq_affinity("p0", &[9999], IrqPolicy::All, false)
            .await,
    );
    assert_eq!(kind, ErrorKind::BadRequest);
    assert!(
        msg.starts_with("host has no CPU 9999 (online CPUs: "),
        "{msg}"
    );
    // The same for a job pinned to it.
    let (kind, msg) = remote(
        c.start_job(JobSpec::IperfServer {
            bind: "198.18.0.1".into(),
            port: 5201,
            cpus: Some(vec![9999]),
            oneoff: true,
        })
        .await,
    );
    assert_eq!(kind, ErrorKind::BadRequest);
    assert!(msg.starts_with("host has no CPU 9999"), "{msg}");
    drop_abruptly(child, c).await;
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Every IRQ affinity list of the machine.
fn all_affinities() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir("/proc/irq")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("smp_affinity_list").is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                read(&e.path().join("smp_affinity_list")),
            )
        })
        .collect();
    v.sort();
    v
}

/// Every CPU idle state's `disable` of the machine.
fn idle_disables() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for cpu in std::fs::read_dir("/sys/devices/system/cpu")
        .into_iter()
        .flatten()
        .flatten()
    {
        for st in std::fs::read_dir(cpu.path().join("cpuidle"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = st.path().join("disable");
            v.push((p.display().to_string(), read(&p)));
        }
    }
    v.sort();
    v
}

fn turbo_files() -> Vec<(String, String)> {
    [
        "/sys/devices/system/cpu/intel_pstate/no_turbo",
        "/sys/devices/system/cpu/cpufreq/boost",
    ]
    .iter()
    .filter(|p| Path::new(p).is_file())
    .map(|p| (p.to_string(), read(Path::new(p))))
    .collect()
}

/// NICs of the root namespace with a bus device (candidates for IRQs).
fn root_nics() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("device").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Host-wide state through an agent in the root namespace: a NIC's IRQs pinned round-robin
/// (when this machine has a NIC with IRQs) and the CPU idle states disabled (when it has
/// any), all back after the connection drops; turbo boost and idle states missing are
/// `Unsupported` naming the files. The agent's CPU view matches sysfs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_tunables_restored_after_abrupt_drop() {
    if !prerequisites() {
        return;
    }
    let irq_before = all_affinities();
    let idle_before = idle_disables();
    let turbo_before = turbo_files();
    let (child, c) = agent(None).await;

    let cpus = ok(c.get_cpus().await, "GetCpus");
    let online_text = read(Path::new("/sys/devices/system/cpu/online"));
    assert!(!cpus.online.is_empty());
    assert_eq!(
        Some(cpus.online.clone()),
        lnst_runner::agent::tunables::parse_cpu_list(&online_text),
        "{online_text}"
    );
    assert!(cpus.allowed.iter().all(|c| cpus.online.contains(c)));

    // IRQs: the first NIC that has some gets pinned round-robin over the online CPUs.
    let mut pinned = None;
    for nic in root_nics() {
        match c.get_irqs(&nic).await {
            Ok(irqs) => {
                assert!(!irqs.is_empty());
                let r = ok(
                    c.set_irq_affinity(&nic, &cpus.online, IrqPolicy::RoundRobin, false)
                        .await,
                    "SetIrqAffinity",
                );
                assert_eq!(r.irqs.len(), irqs.len());
                for (i, p) in r.irqs.iter().enumerate() {
                    let want = cpus.online[i % cpus.online.len()].to_string();
                    assert_eq!(p.requested, want);
                    if p.skipped.is_none() {
                        assert_eq!(
                            read(Path::new(&format!("/proc/irq/{}/smp_affinity_list", p.irq))),
                            want,
                            "IRQ {} ({})",
                            p.irq,
                            p.name
                        );
                    }
                }
                eprintln!("pinned {nic}: {r:?}");
                pinned = Some(nic);
                break;
            }
            Err(e) => {
                let (kind, msg) = remote(Err::<(), _>(e));
                assert_eq!(kind, ErrorKind::Unsupported, "{msg}");
                assert!(msg.starts_with(&nic), "{msg}");
            }
        }
    }
    eprintln!("IRQ pinning exercised on: {pinned:?}");

    // CPU idle states with an exit latency of at least 1 µs.
    if idle_before.is_empty() {
        let (kind, msg) = remote(c.disable_idle_states(1).await);
        assert_eq!(kind, ErrorKind::Unsupported);
        assert!(msg.contains("cpuidle"), "{msg}");
    } else {
        let r = ok(c.disable_idle_states(1).await, "DisableIdleStates");
        if let SetOutcome::Applied {
            previous: Previous::IdleStates { states },
        } = &r
        {
            for s in states {
                assert!(s.latency_us >= 1 && !s.disabled);
                let p = format!(
                    "/sys/devices/system/cpu/cpu{}/cpuidle/state{}/disable",
                    s.cpu, s.state
                );
                assert_eq!(read(Path::new(&p)), "1", "{p}");
            }
        } else {
            assert_eq!(r, SetOutcome::Unchanged);
        }
    }

    // Turbo boost.
    if turbo_before.is_empty() {
        let (kind, msg) = remote(c.set_turbo_boost(false).await);
        assert_eq!(kind, ErrorKind::Unsupported);
        assert!(
            msg.contains("no turbo boost control")
                && msg.contains("intel_pstate/no_turbo")
                && msg.contains("cpufreq/boost"),
            "{msg}"
        );
    } else {
        let r = ok(c.set_turbo_boost(false).await, "SetTurboBoost");
        assert!(
            matches!(r, SetOutcome::Applied { .. } | SetOutcome::Unchanged),
            "{r:?}"
        );
    }

    // Slab objects only: the page cache of the other tests' builds stays.
    ok(c.drop_caches(DropCachesWhat::Slab).await, "DropCaches");

    drop_abruptly(child, c).await;
    assert_eq!(all_affinities(), irq_before, "IRQ affinity not restored");
    assert_eq!(idle_disables(), idle_before, "idle states not restored");
    assert_eq!(turbo_files(), turbo_before, "turbo boost not restored");
}

/// `perf record` as a job: for a fixed time, and until StopJob; the file comes back whole
/// and the agent's directory for it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_record_returns_its_file() {
    if !prerequisites() || !require(have("perf"), "needs perf (Debian: linux-perf)") {
        return;
    }
    let (_tb, ns) = testbed("perf");
    let (child, c) = agent(Some(&ns)).await;
    let agent_pid = child.id().unwrap_or_default();
    let dirs = || -> Vec<String> {
        std::fs::read_dir("/run/lnst-agent")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("perf-"))
            .collect()
    };
    let check = |r: &lnst_runner::protocol::JobResult| {
        assert!(r.passed, "{r:?}");
        let data: PerfData = serde_json::from_value(r.data.clone().unwrap_or_default())
            .unwrap_or_else(|e| panic!("data: {e}"));
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&data.perf_data_b64)
            .unwrap_or_default();
        assert_eq!(bytes.len() as u64, data.bytes);
        assert!(bytes.starts_with(b"PERFILE2"), "not a perf.data file");
        assert!(data
            .perf_version
            .unwrap_or_default()
            .starts_with("perf version"));
    };
    let spec = |d: Option<u32>| JobSpec::LinuxPerf {
        duration_s: d,
        record_cpus: Some(vec![0]),
        events: vec![],
        call_graph: true,
        frequency: Some(49),
    };
    let id = ok(c.start_job(spec(Some(1))).await, "StartJob");
    let r = ok(c.wait_job(id, Duration::from_secs(30)).await, "WaitJob");
    check(&r);
    let id = ok(c.start_job(spec(None)).await, "StartJob");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = ok(c.stop_job(id).await, "StopJob");
    check(&r);
    assert!(
        !dirs()
            .iter()
            .any(|d| d.starts_with(&format!("perf-{agent_pid}-"))),
        "{:?}",
        dirs()
    );
    // The controller names no file and no option.
    let (kind, _) = remote(
        c.start_job(JobSpec::LinuxPerf {
            duration_s: Some(1),
            record_cpus: None,
            events: vec!["--output=/etc/x".into()],
            call_graph: false,
            frequency: None,
        })
        .await,
    );
    assert_eq!(kind, ErrorKind::BadRequest);
    drop_abruptly(child, c).await;
}

/// `ethtool ARGS` in the root namespace: (success, stdout).
fn ethtool_root(args: &[&str]) -> (bool, String) {
    let o = Command::new("ethtool")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ethtool: {e}"));
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// `name: value` lines of an ethtool text, after the line starting with `from` when given.
fn numbers_after(text: &str, from: Option<&str>) -> Vec<(String, Option<u64>)> {
    let mut on = from.is_none();
    let mut v = Vec::new();
    for l in text.lines() {
        if let Some(f) = from {
            if l.starts_with(f) {
                on = true;
                continue;
            }
        }
        if !on {
            continue;
        }
        if let Some((k, val)) = l.split_once(':') {
            let val = val.trim();
            if val == "n/a" || val.parse::<u64>().is_ok() {
                v.push((k.trim().to_string(), val.parse().ok()));
            }
        }
    }
    v
}

/// What the agent reads from this machine's NICs (read only: nothing is changed) agrees with
/// ethtool's own output, line by line: channels, coalescing, RSS hash functions, pause
/// frames (or `Unsupported` exactly when ethtool fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_nic_readings_match_ethtool() {
    if !prerequisites() {
        return;
    }
    let (child, c) = agent(None).await;
    for nic in root_nics() {
        let (ok_l, text) = ethtool_root(&["-l", &nic]);
        match c.get_channels(&nic).await {
            Ok(ch) => {
                assert!(ok_l, "{nic}: agent read channels ethtool could not");
                let cur = serde_json::to_value(ch.current).unwrap_or_default();
                for (k, v) in numbers_after(&text, Some("Current hardware settings")) {
                    let k = k.to_ascii_lowercase();
                    assert_eq!(cur.get(&k).and_then(|x| x.as_u64()), v, "{nic} {k}: {text}");
                }
            }
            Err(e) => {
                assert!(!ok_l, "{nic}: {e}");
                let (kind, msg) = remote(Err::<(), _>(e));
                assert_eq!(kind, ErrorKind::Unsupported, "{msg}");
            }
        }
        let (ok_c, text) = ethtool_root(&["-c", &nic]);
        match c.get_coalesce(&nic).await {
            Ok(co) => {
                assert!(ok_c);
                let j = serde_json::to_value(&co).unwrap_or_default();
                let lines = numbers_after(&text, None);
                assert!(!lines.is_empty(), "{text}");
                for (k, v) in lines {
                    // ethtool -c prints rx-frame-low for -C's rx-frames-low.
                    let k = k.replace("-frame-", "-frames-");
                    assert_eq!(j.get(&k).and_then(|x| x.as_u64()), v, "{nic} {k}: {text}");
                }
                let adaptive_rx = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Adaptive RX: "))
                    .and_then(|r| r.split_whitespace().next())
                    .map(|w| w == "on");
                if text.contains("Adaptive RX: n/a") {
                    assert_eq!(co.adaptive_rx, None);
                } else {
                    assert_eq!(co.adaptive_rx, adaptive_rx, "{text}");
                }
            }
            Err(e) => {
                assert!(!ok_c, "{nic}: {e}");
                assert_eq!(remote(Err::<(), _>(e)).0, ErrorKind::Unsupported);
            }
        }
        let (ok_x, text) = ethtool_root(&["-x", &nic]);
        match c.get_rss(&nic).await {
            Ok(r) => {
                assert!(ok_x);
                for f in &r.hfuncs {
                    let line = format!("    {}: {}", f.name, if f.on { "on" } else { "off" });
                    assert!(text.contains(&line), "{nic}: {line:?} not in {text}");
                }
                if let Some(k) = &r.key {
                    assert!(text.to_ascii_lowercase().contains(k.as_str()));
                }
            }
            Err(e) => {
                assert!(!ok_x, "{nic}: {e}");
                assert_eq!(remote(Err::<(), _>(e)).0, ErrorKind::Unsupported);
            }
        }
        let (ok_a, text) = ethtool_root(&["-a", &nic]);
        match c.get_pause(&nic).await {
            Ok(p) => {
                assert!(ok_a);
                let rx = format!("RX:\t\t{}", if p.rx { "on" } else { "off" });
                assert!(text.contains(&rx), "{nic}: {text}");
            }
            Err(e) => {
                assert!(!ok_a, "{nic}: {e}");
                let (kind, msg) = remote(Err::<(), _>(e));
                assert_eq!(kind, ErrorKind::Unsupported);
                assert!(msg.starts_with(&format!("{nic} (driver ")), "{msg}");
            }
        }
        eprintln!("{nic}: readings agree with ethtool");
    }
    ok(c.bye().await, "Bye");
    drop_abruptly(child, c).await;
}
