//! The built-in request/response generator through the real agent protocol: two agents on
//! stdio in two network namespaces joined by a veth pair (198.18.77.0/24, fd00:77::/64), one
//! runs RrServer jobs and the other RrClient jobs; plus both sides inside one agent on its
//! loopback.

mod common;

use common::{have, is_root, require, sh, Testbed};
use lnst_runner::measure::flow::FlowIteration;
use lnst_runner::measure::parse_rr;
use lnst_runner::protocol::{ErrorKind, JobResult, JobSpec, RrWorkload};
use lnst_runner::provision::Transport;
use lnst_runner::session::{AgentClient, ClientOptions, SessionError};
use std::time::{Duration, Instant};

fn spawn_agent(ns: &str) -> (tokio::process::Child, Transport) {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        ns,
        env!("CARGO_BIN_EXE_lnst-agent"),
        "--stdio",
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::inherit())
    .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn agent: {e}"));
    let (Some(out), Some(inp)) = (child.stdout.take(), child.stdin.take()) else {
        panic!("no pipes")
    };
    (
        child,
        Transport {
            reader: Box::new(out),
            writer: Box::new(inp),
        },
    )
}

async fn connect(host: &str, ns: &str) -> (tokio::process::Child, AgentClient) {
    let (child, t) = spawn_agent(ns);
    let opts = ClientOptions {
        request_timeout: Duration::from_secs(30),
        keepalive_interval: Duration::from_millis(500),
        keepalive_timeout: Duration::from_secs(10),
    };
    let c = AgentClient::connect(host, t, None, opts)
        .await
        .unwrap_or_else(|e| panic!("connect {host}: {e}"));
    (child, c)
}

fn ok<T>(r: Result<T, SessionError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn server(w: RrWorkload, bind: &str, port: u16, size: u32, duration_ms: u64) -> JobSpec {
    JobSpec::RrServer {
        workload: w,
        bind: bind.into(),
        port,
        request_size: size,
        response_size: size,
        duration_ms,
        flows: Some(2),
        threads: None,
        interval_ms: Some(250),
        cpus: None,
    }
}

fn client(
    w: RrWorkload,
    dst: &str,
    port: u16,
    size: u32,
    duration_ms: u64,
    transactions: Option<u64>,
) -> JobSpec {
    JobSpec::RrClient {
        workload: w,
        server: dst.into(),
        port,
        bind: None,
        request_size: size,
        response_size: size,
        duration_ms,
        flows: Some(2),
        threads: None,
        transactions,
        interval_ms: Some(250),
        loss_timeout_ms: Some(200),
        cpus: Some(vec![0]),
    }
}

fn summary(r: &JobResult, key: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("report JSON: {e}\n{}", r.stdout));
    v["summary"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("summary.{key}: {}", r.stdout))
}

/// One workload between the two agents: the client's count and the server's agree, the
/// report parses into nonzero flow results.
async fn one_flow(
    srv: &AgentClient,
    cli: &AgentClient,
    w: RrWorkload,
    dst: &str,
    port: u16,
    size: u32,
    transactions: Option<u64>,
) -> (JobResult, JobResult) {
    let s = ok(
        srv.start_job(server(w, dst, port, size, 1000)).await,
        "server",
    );
    let c = ok(
        cli.start_job(client(w, dst, port, size, 1000, transactions))
            .await,
        "client",
    );
    let rc = ok(
        cli.wait_job(c, Duration::from_secs(20)).await,
        "wait client",
    );
    assert!(
        rc.passed,
        "{w:?} {dst} client: {}\n{}",
        rc.stderr, rc.stdout
    );
    assert!(!rc.killed);
    // A tcp_rr server ends by itself once its 2 connections closed; the others are stopped,
    // as a controller does once its clients are done.
    let rs = if w == RrWorkload::TcpRr {
        ok(srv.wait_job(s, Duration::from_secs(5)).await, "wait server")
    } else {
        ok(srv.stop_job(s).await, "stop server")
    };
    assert!(
        rs.passed,
        "{w:?} {dst} server: {}\n{}",
        rs.stderr, rs.stdout
    );
    let cr = parse_rr(&rc.stdout).unwrap_or_else(|e| panic!("{e}\n{}", rc.stdout));
    let sr = parse_rr(&rs.stdout).unwrap_or_else(|e| panic!("{e}\n{}", rs.stdout));
    assert_eq!(cr.role, "client");
    assert_eq!(sr.role, "server");
    assert_eq!(cr.workload, w_name(w));
    let it = FlowIteration::from_rr(Some(&cr), Some(&sr), 0.0);
    assert!(it.success);
    assert!(it.generator_results.average() > 0.0);
    assert!(it.receiver_results.average() > 0.0);
    assert!(it.generator_cpu_stats.average() > 0.0);
    // Both sides time only their traffic, so they report the same rate (a fixed-count run
    // lasts milliseconds, where the client's start-up weighs).
    let (g, r) = (
        it.generator_results.average(),
        it.receiver_results.average(),
    );
    assert!(
        transactions.is_some() || (g / r - 1.0).abs() < 0.1,
        "{w:?} {dst}: generator {g}/s, receiver {r}/s\n{:?}\n{:?}",
        cr.samples,
        sr.samples
    );
    let lost = summary(&rc, "lost");
    // Every request reached the server once: answered (a transaction) or lost on the way back.
    assert_eq!(
        summary(&rs, "num_transactions"),
        summary(&rc, "num_transactions") + lost,
        "{w:?} {dst}"
    );
    if w != RrWorkload::UdpRr {
        assert_eq!(lost, 0);
    }
    (rc, rs)
}

fn w_name(w: RrWorkload) -> &'static str {
    match w {
        RrWorkload::TcpRr => "tcp_rr",
        RrWorkload::TcpCrr => "tcp_crr",
        RrWorkload::UdpRr => "udp_rr",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rr_jobs_between_two_agents() {
    if !require(is_root(), "needs root for network namespaces")
        || !require(have("ip"), "needs iproute2 (ip)")
    {
        return;
    }
    let pid = std::process::id();
    let (a, b) = (
        format!("lnsttest-rr-a-{pid}"),
        format!("lnsttest-rr-b-{pid}"),
    );
    let mut bed = Testbed::default();
    bed.add_ns(&a);
    bed.add_ns(&b);
    sh(&[
        "ip", "-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b,
    ]);
    for (ns, v4, v6) in [
        (&a, "198.18.77.1/24", "fd00:77::1/64"),
        (&b, "198.18.77.2/24", "fd00:77::2/64"),
    ] {
        sh(&["ip", "-n", ns, "addr", "add", v4, "dev", "eth0"]);
        sh(&["ip", "-n", ns, "addr", "add", v6, "dev", "eth0", "nodad"]);
        sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
    }
    let (mut ca, cli) = connect("host1", &a).await;
    let (mut cb, srv) = connect("host2", &b).await;

    // Every workload, both address families, duration mode.
    let mut port = 12000;
    for w in [RrWorkload::TcpRr, RrWorkload::TcpCrr, RrWorkload::UdpRr] {
        for dst in ["198.18.77.2", "fd00:77::2"] {
            port += 1;
            let (rc, _) = one_flow(&srv, &cli, w, dst, port, 1000, None).await;
            let v: serde_json::Value = serde_json::from_str(&rc.stdout).unwrap_or_default();
            assert_eq!(v["config"]["cpus"], serde_json::json!([0]));
            if w == RrWorkload::TcpCrr {
                assert_eq!(
                    summary(&rc, "connections"),
                    summary(&rc, "num_transactions")
                );
            }
        }
    }
    // Fixed count: exactly that many per flow, on both sides.
    for w in [RrWorkload::TcpRr, RrWorkload::TcpCrr, RrWorkload::UdpRr] {
        port += 1;
        let (rc, rs) = one_flow(&srv, &cli, w, "198.18.77.2", port, 1, Some(300)).await;
        let lost = summary(&rc, "lost");
        assert_eq!(summary(&rc, "num_transactions"), 600, "{w:?}");
        assert_eq!(summary(&rs, "num_transactions"), 600 + lost, "{w:?}");
    }

    // Bad requests are refused with the culprit named; nothing starts.
    let mut bad = client(RrWorkload::TcpRr, "198.18.77.2", 1, 1, 1000, None);
    if let JobSpec::RrClient { server, .. } = &mut bad {
        *server = "198.18.77.2; reboot".into();
    }
    for (spec, want) in [
        (bad, "is not an IP address"),
        (
            client(RrWorkload::TcpRr, "198.18.77.2", 1, 2 << 20, 1000, None),
            "request_size",
        ),
        (
            client(RrWorkload::UdpRr, "198.18.77.2", 1, 65_508, 1000, None),
            "request_size",
        ),
        (
            server(RrWorkload::TcpRr, "198.18.77.2", 1, 1, 86_400_001),
            "duration_ms",
        ),
    ] {
        match cli.start_job(spec).await {
            Err(SessionError::Remote { kind, message, .. }) => {
                assert_eq!(kind, ErrorKind::BadRequest);
                assert!(message.contains(want), "{message}");
            }
            other => panic!("expected BadRequest naming {want}, got {other:?}"),
        }
    }
    // A server that cannot bind is a failed job with the reason.
    let j = ok(
        srv.start_job(server(RrWorkload::UdpRr, "198.18.77.1", 5000, 1, 1000))
            .await,
        "unbindable",
    );
    let r = ok(srv.wait_job(j, Duration::from_secs(5)).await, "wait");
    assert!(!r.passed);
    assert!(
        r.error.as_deref().is_some_and(|e| e.contains("bind")),
        "{r:?}"
    );

    // A long client is killed promptly; its report covers what it did.
    port += 1;
    let s = ok(
        srv.start_job(server(RrWorkload::TcpRr, "198.18.77.2", port, 64, 60_000))
            .await,
        "server",
    );
    let c = ok(
        cli.start_job(client(
            RrWorkload::TcpRr,
            "198.18.77.2",
            port,
            64,
            60_000,
            None,
        ))
        .await,
        "client",
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let t0 = Instant::now();
    let rc = ok(cli.kill_job(c).await, "kill client");
    assert!(t0.elapsed() < Duration::from_secs(4));
    assert!(rc.killed && rc.passed, "{rc:?}");
    assert!(summary(&rc, "num_transactions") > 0);
    // Its server sees both connections close and ends by itself.
    let rs = ok(srv.wait_job(s, Duration::from_secs(5)).await, "server ends");
    assert!(rs.passed);
    assert_eq!(
        summary(&rs, "num_transactions"),
        summary(&rc, "num_transactions")
    );

    // Both sides inside one agent, over its loopback.
    sh(&["ip", "-n", &a, "link", "set", "lo", "up"]);
    for dst in ["127.0.0.1", "::1"] {
        port += 1;
        one_flow(&cli, &cli, RrWorkload::UdpRr, dst, port, 64, Some(100)).await;
    }

    // A session that ends with a job running: the agent ends it (no thread left behind).
    port += 1;
    let _s = ok(
        srv.start_job(server(RrWorkload::UdpRr, "198.18.77.2", port, 1, 60_000))
            .await,
        "server",
    );
    ok(srv.bye().await, "bye");
    ok(cli.bye().await, "bye");
    for (name, child) in [("server", &mut cb), ("client", &mut ca)] {
        let st = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        assert!(
            matches!(st, Ok(Ok(s)) if s.success()),
            "{name} agent did not exit cleanly: {st:?}"
        );
    }
    drop(bed);
}
