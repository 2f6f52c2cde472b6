//! The real agent on stdio inside a fresh network namespace, driven through AgentClient.

use lnst_runner::protocol::{ErrorKind, IperfProto, JobSpec};
use lnst_runner::provision::Transport;
use lnst_runner::session::{AgentClient, ClientOptions, SessionError};
use std::process::Command;
use std::time::Duration;

fn require(cond: bool, why: &str) -> bool {
    if cond {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("required in CI: {why}")
    }
    eprintln!("SKIP: {why}");
    false
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A network namespace deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Option<Netns> {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(Netns(name))
    }
    fn exec(&self, argv: &[&str]) -> std::process::Output {
        let mut args = vec!["netns", "exec", self.0.as_str()];
        args.extend_from_slice(argv);
        Command::new("ip")
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec: {e}"))
    }
    fn read(&self, path: &str) -> String {
        String::from_utf8_lossy(&self.exec(&["cat", path]).stdout)
            .trim()
            .to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn spawn_agent(ns: &Netns, extra: &[&str]) -> (tokio::process::Child, Transport) {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &ns.0,
        env!("CARGO_BIN_EXE_lnst-agent"),
        "--stdio",
    ])
    .args(extra)
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
    (child, t)
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

/// `N packets transmitted, M received` from ping output.
fn ping_counts(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let t = nums.next()?.parse().ok()?;
    let r = nums.next()?.parse().ok()?;
    Some((t, r))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_over_stdio_in_netns() {
    if !require(
        nix::unistd::geteuid().is_root(),
        "needs root for network namespaces",
    ) || !require(have("ip"), "needs iproute2 (ip)")
        || !require(have("ethtool"), "needs ethtool")
        || !require(have("ping"), "needs ping")
    {
        return;
    }
    let Some(ns) = Netns::new(format!("lnsttest-agent-{}", std::process::id())) else {
        assert!(require(false, "cannot create a network namespace"));
        return;
    };
    // A dummy link when the kernel has the dummy driver, else a veth pair (peer d0p up, so
    // that the link has carrier and IPv6 DAD can finish).
    let dummy = ns
        .exec(&["ip", "link", "add", "d0", "type", "dummy"])
        .status
        .success();
    if !dummy {
        eprintln!("note: no dummy driver here; using a veth pair d0/d0p");
        let o = ns.exec(&[
            "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d0p",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(ns
            .exec(&["ip", "link", "set", "d0p", "up"])
            .status
            .success());
    }

    let (mut child, t) = spawn_agent(&ns, &[]);
    let c = ok(
        AgentClient::connect("host1", t, None, opts()).await,
        "connect",
    );

    // Hello.
    let h = c.hello().clone();
    assert_eq!(h.protocol_version, lnst_runner::protocol::PROTOCOL_VERSION);
    assert!(!h.auth_required);
    assert_eq!(
        h.kernel_release,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );

    // Interfaces: lo and d0, as netlink sees them in the namespace.
    let ifs = ok(c.list_interfaces().await, "list");
    let lo = ifs.iter().find(|i| i.name == "lo").cloned();
    assert!(lo.is_some(), "{ifs:?}");
    assert_eq!(lo.map(|l| l.ifindex), Some(1));
    let d0 = ifs.iter().find(|i| i.name == "d0").cloned();
    let Some(d0) = d0 else {
        panic!("d0 missing: {ifs:?}")
    };
    let expect_kind = if dummy { "dummy" } else { "veth" };
    assert_eq!(d0.kind.as_deref(), Some(expect_kind));
    assert_eq!(d0.driver.as_deref(), Some(expect_kind));
    assert_eq!(d0.mac.len(), 17);
    assert!(!d0.up);
    let orig_mtu = d0.mtu;
    assert_ne!(orig_mtu, 1400);

    // Snapshot, then change things.
    ok(c.start_recipe(&["d0".to_string()]).await, "start_recipe");
    let fwd = "net/ipv4/ip_forward";
    let before = ns.read("/proc/sys/net/ipv4/ip_forward");
    let new = if before == "1" { "0" } else { "1" };
    assert_eq!(ok(c.sysctl_write(fwd, new).await, "sysctl"), before);
    assert_eq!(ns.read("/proc/sys/net/ipv4/ip_forward"), new);

    // Traffic to a local address goes through lo, which starts down in a new namespace.
    ok(c.set_link("lo", true).await, "lo up");
    ok(c.set_link("d0", true).await, "up");
    ok(c.set_mtu("d0", 1400).await, "mtu");
    ok(c.add_address("d0", "198.18.99.1/24").await, "addr4");
    ok(c.add_address("d0", "fd00:99::1/64").await, "addr6");
    ok(c.wait_dad("d0", Duration::from_secs(10)).await, "dad");
    let ifs = ok(c.list_interfaces().await, "list");
    let d0 = ifs.iter().find(|i| i.name == "d0").cloned();
    let Some(d0) = d0 else { panic!("d0 gone") };
    assert!(d0.up);
    assert_eq!(d0.mtu, 1400);
    assert!(
        d0.addresses.contains(&"198.18.99.1/24".to_string()),
        "{d0:?}"
    );
    assert!(
        d0.addresses.contains(&"fd00:99::1/64".to_string()),
        "{d0:?}"
    );
    // Cross-check with iproute2.
    let ip_out =
        String::from_utf8_lossy(&ns.exec(&["ip", "addr", "show", "d0"]).stdout).into_owned();
    assert!(
        ip_out.contains("198.18.99.1/24") && ip_out.contains("mtu 1400"),
        "{ip_out}"
    );

    // Offloads: read, set with the upstream short name, read back.
    let offs = ok(c.get_offloads("d0").await, "get_offloads");
    let gro = |v: &[(String, bool)]| {
        v.iter()
            .find(|(n, _)| n == "generic-receive-offload")
            .map(|(_, on)| *on)
    };
    let gro0 = gro(&offs);
    assert!(gro0.is_some(), "{offs:?}");
    let want = !gro0.unwrap_or(false);
    ok(
        c.set_offloads("d0", &[("gro".to_string(), want)]).await,
        "set_offloads",
    );
    assert_eq!(gro(&ok(c.get_offloads("d0").await, "get")), Some(want));

    // A failing op gets an error reply; the agent keeps serving.
    match c.set_mtu("nosuch0", 1400).await {
        Err(SessionError::Remote { kind, message, .. }) => {
            assert_eq!(kind, ErrorKind::NotFound);
            assert!(message.contains("nosuch0"), "{message}");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    match c.add_address("d0", "not-an-address").await {
        Err(SessionError::Remote { kind, .. }) => assert_eq!(kind, ErrorKind::BadRequest),
        other => panic!("expected BadRequest, got {other:?}"),
    }
    assert!(ok(c.list_interfaces().await, "list after errors").len() >= 2);

    // Shell is refused without --allow-shell.
    match c.shell(&["true".to_string()]).await {
        Err(SessionError::Remote { kind, message, .. }) => {
            assert_eq!(kind, ErrorKind::NotAllowed);
            assert!(message.contains("--allow-shell"), "{message}");
        }
        other => panic!("expected NotAllowed, got {other:?}"),
    }

    // Ping job.
    let id = ok(
        c.start_job(JobSpec::Ping {
            dst: "198.18.99.1".into(),
            src: None,
            count: 3,
            interval_s: 0.2,
            size: Some(56),
            ipv6: false,
        })
        .await,
        "ping",
    );
    let r = ok(c.wait_job(id, Duration::from_secs(15)).await, "wait ping");
    assert!(r.passed, "{r:?}");
    assert_eq!(r.exit_code, Some(0), "{}", r.stdout);
    assert_eq!(ping_counts(&r.stdout), Some((3, 3)), "{}", r.stdout);
    assert!(r.finished_at >= r.started_at);

    // A long job: wait times out, stop ends it within the grace period.
    let id = ok(
        c.start_job(JobSpec::Ping {
            dst: "198.18.99.1".into(),
            src: Some("198.18.99.1".into()),
            count: 1000,
            interval_s: 0.2,
            size: None,
            ipv6: false,
        })
        .await,
        "long ping",
    );
    match c.wait_job(id, Duration::from_millis(300)).await {
        Err(SessionError::JobTimeout { job_id, .. }) => assert_eq!(job_id, id),
        other => panic!("expected JobTimeout, got {other:?}"),
    }
    let t0 = std::time::Instant::now();
    let r = ok(c.stop_job(id).await, "stop");
    assert!(t0.elapsed() < Duration::from_secs(4));
    assert!(r.killed);
    assert!(r.stdout.contains("PING 198.18.99.1"), "{}", r.stdout);

    // CPU sampler.
    let id = ok(
        c.start_job(JobSpec::CpuStat { interval_ms: 100 }).await,
        "cpu",
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    let r = ok(c.stop_job(id).await, "stop cpu");
    assert!(r.passed, "{r:?}");
    let samples = r
        .data
        .as_ref()
        .and_then(|d| d.as_array())
        .cloned()
        .unwrap_or_default();
    assert!(
        (3..=7).contains(&samples.len()),
        "{} samples",
        samples.len()
    );
    for s in &samples {
        let text = s["text"].as_str().unwrap_or("");
        assert!(text.starts_with("cpu "), "{text}");
        assert!(text.lines().all(|l| l.starts_with("cpu")));
    }

    // iperf3 server + client.
    if require(have("iperf3"), "iperf3 not installed") {
        let port = 15201 + (std::process::id() % 1000) as u16;
        let srv = ok(
            c.start_job(JobSpec::IperfServer {
                bind: "198.18.99.1".into(),
                port,
                cpus: Some(vec![0]),
                oneoff: true,
            })
            .await,
            "iperf server",
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        let cli = ok(
            c.start_job(JobSpec::IperfClient {
                server: "198.18.99.1".into(),
                port,
                cport: None,
                duration_s: 1,
                proto: IperfProto::Tcp,
                blksize: None,
                parallel: None,
                cpus: None,
            })
            .await,
            "iperf client",
        );
        let rc = ok(
            c.wait_job(cli, Duration::from_secs(20)).await,
            "wait client",
        );
        let rs = ok(
            c.wait_job(srv, Duration::from_secs(10)).await,
            "wait server",
        );
        assert!(rc.passed, "client: {}\n{}", rc.stdout, rc.stderr);
        assert!(rs.passed, "server: {}\n{}", rs.stdout, rs.stderr);
        for (who, r) in [("client", &rc), ("server", &rs)] {
            let v: serde_json::Value = serde_json::from_str(&r.stdout)
                .unwrap_or_else(|e| panic!("{who} JSON: {e}\n{}", r.stdout));
            assert!(v["end"].is_object(), "{who}: no end");
            assert!(
                v["intervals"].as_array().is_some_and(|a| !a.is_empty()),
                "{who}: no intervals"
            );
        }
    }

    // End of recipe: MTU, link state, addresses, offloads and the sysctl are back.
    ok(c.end_recipe().await, "end_recipe");
    let ifs = ok(c.list_interfaces().await, "list");
    let d0 = ifs.iter().find(|i| i.name == "d0").cloned();
    let Some(d0) = d0 else { panic!("d0 gone") };
    assert_eq!(d0.mtu, orig_mtu);
    assert!(!d0.up);
    assert!(
        !d0.addresses.iter().any(|a| a.starts_with("198.18.99.1")),
        "{d0:?}"
    );
    assert!(
        !d0.addresses.iter().any(|a| a.starts_with("fd00:99::1")),
        "{d0:?}"
    );
    assert_eq!(gro(&ok(c.get_offloads("d0").await, "get")), gro0);
    assert_eq!(ns.read("/proc/sys/net/ipv4/ip_forward"), before);

    ok(c.bye().await, "bye");
    assert!(matches!(
        c.list_interfaces().await,
        Err(SessionError::AgentLost { .. })
    ));
    let st = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    assert!(
        matches!(st, Ok(Ok(s)) if s.success()),
        "agent did not exit cleanly after bye: {st:?}"
    );

    // A controller that vanishes without EndRecipe: the agent restores state on its own.
    let (mut child, t) = spawn_agent(&ns, &[]);
    let c = ok(
        AgentClient::connect("host1", t, None, opts()).await,
        "connect 2",
    );
    ok(c.start_recipe(&["d0".to_string()]).await, "start_recipe 2");
    ok(c.set_mtu("d0", 1300).await, "mtu 2");
    ok(c.add_address("d0", "198.18.99.7/24").await, "addr 2");
    ok(c.sysctl_write(fwd, new).await, "sysctl 2");
    let job = ok(
        c.start_job(JobSpec::Ping {
            dst: "198.18.99.7".into(),
            src: None,
            count: 1000,
            interval_s: 0.5,
            size: None,
            ipv6: false,
        })
        .await,
        "ping 2",
    );
    assert!(job > 0);
    drop(c);
    let st = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    assert!(
        matches!(st, Ok(Ok(_))),
        "agent did not exit after EOF: {st:?}"
    );
    let link = String::from_utf8_lossy(&ns.exec(&["ip", "addr", "show", "d0"]).stdout).into_owned();
    assert!(link.contains(&format!("mtu {orig_mtu}")), "{link}");
    assert!(!link.contains("198.18.99.7"), "{link}");
    assert_eq!(ns.read("/proc/sys/net/ipv4/ip_forward"), before);
    let pings = ns.exec(&["sh", "-c", "pgrep -x ping || true"]);
    // pgrep sees every namespace; only check that no ping to our address survives.
    let ours = ns.exec(&["sh", "-c", "pgrep -af 'ping 198.18.99.7' || true"]);
    assert!(
        !String::from_utf8_lossy(&ours.stdout).contains("-c 1000"),
        "job survived the session: {} {}",
        String::from_utf8_lossy(&ours.stdout),
        String::from_utf8_lossy(&pings.stdout)
    );
}
