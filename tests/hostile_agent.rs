//! Hostile controllers against the real agent (issue 14, items 2, 6, 7, 8 and 9): sysctl
//! paths outside the allow-list, argv elements that are options, a flood of requests whose
//! replies are never read, silent and reconnecting connections that would hold the session
//! slot, concurrent secret guesses, an oversized handshake frame and whitespace-only secrets.

mod common;

use common::{have, is_root, require};
use lnst_runner::protocol::{self, ErrorKind, JobSpec, Message, Op, Reply, PROTOCOL_VERSION};
use lnst_runner::provision::Transport;
use lnst_runner::session::{AgentClient, ClientOptions, SessionError};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

const SECRET: &[u8] = b"hostile-agent test secret";

fn opts() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(20),
        keepalive_interval: Duration::from_millis(500),
        keepalive_timeout: Duration::from_secs(10),
    }
}

// ---------------------------------------------------------------------------------------------
// A TCP agent on 127.0.0.1
// ---------------------------------------------------------------------------------------------

/// The agent process, killed on drop; its stderr goes to a file.
struct Agent {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn start(dir: &Path, secret: Option<&[u8]>) -> Agent {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = dir.join(format!("agent-{n}.log"));
        let logf = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lnst-agent"));
        cmd.args(["--port", "0", "--bind", "127.0.0.1"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(logf)
            .env_remove("LNST_AGENT_SECRET_FILE")
            .env_remove("LNST_AGENT_SECRET");
        if let Some(s) = secret {
            let f = dir.join(format!("secret-{n}"));
            std::fs::write(&f, s).unwrap_or_else(|e| panic!("secret: {e}"));
            cmd.arg("--secret-file").arg(&f);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn agent: {e}"));
        let mut agent = Agent {
            child,
            port: 0,
            log,
        };
        for _ in 0..400 {
            let text = agent.log_text();
            if let Some(rest) = text.split("listening on 127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                agent.port = digits.parse().unwrap_or(0);
                if agent.port != 0 {
                    return agent;
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("agent did not report its port: {}", agent.log_text())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn tcp(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap_or_else(|e| panic!("connect to agent: {e}"))
    }

    async fn transport(&self) -> Transport {
        let (r, w) = self.tcp().await.into_split();
        Transport {
            reader: Box::new(r),
            writer: Box::new(w),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

async fn read_within(s: &mut TcpStream, limit: Duration) -> Option<Message> {
    tokio::time::timeout(limit, protocol::read_message(s))
        .await
        .unwrap_or_else(|_| panic!("no frame within {limit:?}"))
        .unwrap_or_else(|e| panic!("frame: {e}"))
}

async fn read(s: &mut TcpStream) -> Option<Message> {
    read_within(s, Duration::from_secs(5)).await
}

async fn send(s: &mut TcpStream, m: &Message) {
    protocol::write_message(s, m)
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
}

/// A raw connection and its Hello (panics on anything else, Busy included).
async fn hello(agent: &Agent) -> (TcpStream, protocol::HelloInfo) {
    let mut s = agent.tcp().await;
    match read(&mut s).await {
        Some(Message::Hello(h)) => (s, h),
        other => panic!("expected Hello, got {other:?}"),
    }
}

fn auth(h: &protocol::HelloInfo, secret: &[u8]) -> Message {
    let an = protocol::parse_nonce(&h.nonce).unwrap_or_else(|| panic!("nonce"));
    let cn = protocol::new_nonce();
    Message::Auth {
        protocol_version: PROTOCOL_VERSION,
        client_nonce: hex::encode(cn),
        mac: hex::encode(protocol::client_mac(secret, &an, &cn)),
    }
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}: {status}"))
}

// ---------------------------------------------------------------------------------------------
// Item 6: back-pressure and memory per session
// ---------------------------------------------------------------------------------------------

/// A controller that floods cheap requests (Ping frames and KillAllJobs requests) and never
/// reads a reply. Before the fix the agent queued every reply: 2M pings took it from 8 to
/// 366 MiB, and 262 MiB stayed after the connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_without_reading_replies_keeps_agent_memory_bounded() {
    const LIMIT_KIB: u64 = 64 * 1024;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::start(dir.path(), None);
    let (mut s, _) = hello(&agent).await;
    send(
        &mut s,
        &Message::Start {
            protocol_version: PROTOCOL_VERSION,
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = rss_kib(agent.pid());

    // 4096 frames per write: 3 of 4 are Pings, 1 of 4 a KillAllJobs request.
    let mut chunk = Vec::new();
    for i in 0..4096u64 {
        let m = if i % 4 == 3 {
            Message::Request {
                id: i + 1,
                op: Op::KillAllJobs,
            }
        } else {
            Message::Ping { seq: i }
        };
        chunk.extend(protocol::encode_message(&m).unwrap_or_else(|e| panic!("{e}")));
    }
    let t0 = Instant::now();
    let mut sent_frames = 0u64;
    let mut peak = base;
    let mut blocked_for = Duration::ZERO;
    // Partial writes are resumed where they stopped: the stream stays well framed.
    let mut off = 0;
    while t0.elapsed() < Duration::from_secs(15) && sent_frames < 2_000_000 {
        match tokio::time::timeout(Duration::from_millis(500), s.write(&chunk[off..])).await {
            Ok(Ok(n)) => {
                off += n;
                if off == chunk.len() {
                    off = 0;
                    sent_frames += 4096;
                }
            }
            Ok(Err(e)) => panic!(
                "agent closed the flood connection: {e}\n{}",
                agent.log_text()
            ),
            // The agent stopped reading (back-pressure): that is the point.
            Err(_) => blocked_for += Duration::from_millis(500),
        }
        peak = peak.max(rss_kib(agent.pid()));
        if blocked_for >= Duration::from_secs(3) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    peak = peak.max(rss_kib(agent.pid()));
    eprintln!(
        "flood: {sent_frames} frames written in {:?}; agent RSS {} KiB before, peak {} KiB",
        t0.elapsed(),
        base,
        peak
    );
    assert!(
        peak < LIMIT_KIB,
        "agent RSS grew to {peak} KiB (base {base} KiB) under a flood of {sent_frames} frames"
    );

    // Close: the session's buffers go with it.
    drop(s);
    let mut after = u64::MAX;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = rss_kib(agent.pid());
        if after <= base + 8 * 1024 {
            break;
        }
    }
    eprintln!("flood: agent RSS {after} KiB after close");
    assert!(
        after <= base + 8 * 1024,
        "agent kept {after} KiB after the flood connection closed (base {base} KiB)"
    );
    // And it serves the next controller.
    let c = AgentClient::connect("host1", agent.transport().await, None, opts())
        .await
        .unwrap_or_else(|e| panic!("connect after flood: {e}\n{}", agent.log_text()));
    assert!(c.list_interfaces().await.is_ok());
    c.bye().await.unwrap_or_else(|e| panic!("bye: {e}"));
}

// ---------------------------------------------------------------------------------------------
// Item 7: the unauthenticated phase does not hold the session slot
// ---------------------------------------------------------------------------------------------

/// A connection that says nothing after Hello is closed within a few seconds (it was 30 s).
#[tokio::test]
async fn silent_connection_is_closed_by_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::start(dir.path(), Some(SECRET));
    let (mut s, _) = hello(&agent).await;
    let t0 = Instant::now();
    match read_within(&mut s, Duration::from_secs(6)).await {
        Some(Message::Error(e)) => {
            assert_eq!(e.kind, ErrorKind::Protocol, "{e:?}");
            assert!(e.message.contains("handshake timed out"), "{e:?}");
        }
        other => panic!("expected a handshake timeout, got {other:?}"),
    }
    assert!(
        read_within(&mut s, Duration::from_secs(2)).await.is_none(),
        "connection must close"
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "silent connection closed after {took:?}"
    );
}

/// While one connection sits silent after Hello, the real controller with the secret gets
/// its session at once (it used to get Busy for 30 s).
#[tokio::test]
async fn silent_connection_does_not_lock_out_the_controller() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::start(dir.path(), Some(SECRET));
    let (_silent, _) = hello(&agent).await;
    let t0 = Instant::now();
    let c = AgentClient::connect("host1", agent.transport().await, Some(SECRET), opts())
        .await
        .unwrap_or_else(|e| panic!("controller locked out by a silent connection: {e}"));
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(c.list_interfaces().await.is_ok());
    // Now that a controller holds the session, others are refused at once.
    let mut s = agent.tcp().await;
    match read(&mut s).await {
        Some(Message::Error(e)) => assert_eq!(e.kind, ErrorKind::Busy, "{e:?}"),
        other => panic!("expected Busy while a session runs, got {other:?}"),
    }
    c.bye().await.unwrap_or_else(|e| panic!("bye: {e}"));
}

/// Several loops that connect, stay silent, and reconnect as soon as they are closed or
/// refused do not keep the real controller out for more than a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_loops_do_not_lock_out_the_controller() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::start(dir.path(), Some(SECRET));
    let port = agent.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..8 {
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            let mut held = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
                    continue;
                };
                // Hold the connection silently until the agent closes it.
                let r = tokio::time::timeout(Duration::from_secs(8), async {
                    while let Ok(Some(_)) = protocol::read_message(&mut s).await {}
                })
                .await;
                if r.is_ok() {
                    held += 1;
                }
            }
            held
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < Duration::from_secs(6) {
        match AgentClient::connect("host1", agent.transport().await, Some(SECRET), opts()).await {
            Err(SessionError::Busy { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            other => {
                last = Some(other);
                break;
            }
        }
    }
    let took = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let c = match last {
        Some(Ok(c)) => c,
        other => panic!(
            "controller did not get a session within {took:?}: {other:?}\n{}",
            agent.log_text()
        ),
    };
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(c.list_interfaces().await.is_ok());
    c.bye().await.unwrap_or_else(|e| panic!("bye: {e}"));
    for l in loops {
        l.abort();
    }
}

/// Concurrent wrong guesses are answered about one per second in all: guessing on several
/// connections at once does not multiply the rate. The right secret still gets in afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_are_serialised() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::start(dir.path(), Some(SECRET));
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(hello(&agent).await);
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (mut s, h) in conns {
        tasks.push(tokio::spawn(async move {
            send(&mut s, &auth(&h, b"a wrong guess")).await;
            match read_within(&mut s, Duration::from_secs(8)).await {
                Some(Message::Error(e)) => assert_eq!(e.kind, ErrorKind::AuthFailed, "{e:?}"),
                other => panic!("expected AuthFailed, got {other:?}"),
            }
            t0.elapsed()
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.push(t.await.unwrap_or_else(|e| panic!("{e}")));
    }
    times.sort();
    eprintln!("answers to 3 concurrent wrong guesses after {times:?}");
    assert!(times[0] >= Duration::from_millis(950), "{times:?}");
    assert!(
        times[2] >= Duration::from_millis(2900),
        "3 guesses answered within {:?}: more than one guess per second",
        times[2]
    );
    let c = AgentClient::connect("host1", agent.transport().await, Some(SECRET), opts())
        .await
        .unwrap_or_else(|e| panic!("right secret after guesses: {e}"));
    c.bye().await.unwrap_or_else(|e| panic!("bye: {e}"));
}

// ---------------------------------------------------------------------------------------------
// Item 8: the handshake frame limit is named as it is
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_handshake_frame_names_the_handshake_limit() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::start(dir.path(), Some(SECRET));
    let (mut s, _) = hello(&agent).await;
    let len = (protocol::MAX_HANDSHAKE_FRAME + 1) as u32;
    s.write_all(&len.to_be_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    match read(&mut s).await {
        Some(Message::Error(e)) => {
            assert_eq!(e.kind, ErrorKind::Protocol, "{e:?}");
            assert_eq!(
                e.message,
                "frame of 65537 bytes exceeds the 65536-byte limit"
            );
        }
        other => panic!("expected a Protocol error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Item 9: whitespace-only secrets
// ---------------------------------------------------------------------------------------------

/// A secret of nothing but whitespace (ASCII or Unicode) is refused like an empty one: exit 2,
/// one line naming the source.
#[test]
fn whitespace_only_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cases: &[&[u8]] = &[
        b"",
        b"\n",
        b"\x0b",
        b" \x0b\n",
        "\u{a0}".as_bytes(),
        "\u{a0}\n".as_bytes(),
        "\u{2003}\u{3000}".as_bytes(),
        "\u{feff}\u{200b}".as_bytes(),
        "\u{85}\u{2028}".as_bytes(),
    ];
    let run = |cmd: &mut Command| {
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .env_remove("LNST_AGENT_SECRET_FILE")
            .env("RUST_BACKTRACE", "1");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn: {e}"));
        // A secret that was accepted leaves the agent serving: bound the wait.
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("wait: {e}"))
    };
    for (i, secret) in cases.iter().enumerate() {
        let f = dir.path().join(format!("secret-{i}"));
        std::fs::write(&f, secret).unwrap_or_else(|e| panic!("{e}"));
        let o = run(Command::new(env!("CARGO_BIN_EXE_lnst-agent"))
            .args(["--port", "0", "--bind", "127.0.0.1", "--secret-file"])
            .arg(&f)
            .env_remove("LNST_AGENT_SECRET"));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "secret {secret:?}: {err}");
        assert_eq!(err.lines().count(), 1, "secret {secret:?}: {err}");
        assert!(
            err.contains(&f.display().to_string()) && err.contains("empty"),
            "secret {secret:?}: {err}"
        );
        if let Ok(text) = std::str::from_utf8(secret) {
            let o = run(Command::new(env!("CARGO_BIN_EXE_lnst-agent"))
                .args(["--port", "0", "--bind", "127.0.0.1"])
                .env("LNST_AGENT_SECRET", text));
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            assert_eq!(o.status.code(), Some(2), "env secret {text:?}: {err}");
            assert_eq!(err.lines().count(), 1, "env secret {text:?}: {err}");
            assert!(err.contains("LNST_AGENT_SECRET"), "{err}");
        }
    }
    // Still fine: a secret with surrounding newline and inner no-break space.
    let f = dir.path().join("good");
    std::fs::write(&f, "a\u{a0}b\n").unwrap_or_else(|e| panic!("{e}"));
    let o = run(Command::new(env!("CARGO_BIN_EXE_lnst-agent"))
        .args(["--port", "0", "--bind", "127.0.0.1", "--secret-file"])
        .arg(&f)
        .env_remove("LNST_AGENT_SECRET"));
    assert_eq!(
        o.status.code(),
        None,
        "a good secret must leave the agent running: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Item 2: sysctls and other controller-supplied names (stdio agent in its own netns)
// ---------------------------------------------------------------------------------------------

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
    fn spawn_agent(&self) -> (tokio::process::Child, Transport) {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.0,
            env!("CARGO_BIN_EXE_lnst-agent"),
            "--stdio",
        ])
        .env_remove("LNST_AGENT_SECRET_FILE")
        .env_remove("LNST_AGENT_SECRET")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
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
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn remote_kind<T: std::fmt::Debug>(r: Result<T, SessionError>) -> Option<ErrorKind> {
    match r {
        Err(SessionError::Remote { kind, .. }) => Some(kind),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysctl_writes_are_limited_to_the_allow_list() {
    if !require(is_root(), "needs root for network namespaces") || !require(have("ip"), "ip") {
        return;
    }
    let Some(ns) = Netns::new(format!("lnsttest-hsys-{}", std::process::id())) else {
        assert!(require(false, "cannot create a network namespace"));
        return;
    };
    // veth pairs (the dummy driver is not everywhere); one name has a dot, like a VLAN.
    for (name, peer) in [("d0", "d0p"), ("d0.5", "d0.5p")] {
        let o = ns.exec(&[
            "ip", "link", "add", name, "type", "veth", "peer", "name", peer,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (mut child, t) = ns.spawn_agent();
    let c = AgentClient::connect("host1", t, None, opts())
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));

    // Outside the allow-list: refused with NotAllowed, nothing written. Values are the
    // current ones, so that a vulnerable agent changes nothing on this machine either.
    let core = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let core = core.trim_end_matches('\n');
    let host = ns.read("/proc/sys/kernel/hostname");
    let somaxconn = ns.read("/proc/sys/net/core/somaxconn");
    for (path, value) in [
        ("kernel.core_pattern", core),
        ("kernel/core_pattern", core),
        ("/proc/sys/kernel/core_pattern", core),
        ("/proc/sys/net/../kernel/core_pattern", core),
        ("net/ipv4/../../kernel/core_pattern", core),
        ("net.ipv4.conf.d0/../../../../kernel.core_pattern", core),
        ("kernel.hostname", host.as_str()),
        ("net.core.somaxconn", somaxconn.as_str()),
        ("net/ipv4/conf/d0/../../../../kernel/core_pattern", core),
        ("/proc/self/root/proc/sys/kernel/core_pattern", core),
        ("/etc/passwd", ""),
        ("net.ipv4.conf.a:b.rp_filter", "0"),
        ("net.ipv4.conf..rp_filter", "0"),
        ("net.ipv4.conf.d0.rp_filter.x", "0"),
        ("net.ipv4.conf.0123456789abcdef.rp_filter", "0"),
        ("net.ipv4.tcp_congestion_control", "reno"),
        ("net", "0"),
        ("", "0"),
    ] {
        let k = remote_kind(c.sysctl_write(path, value).await);
        assert_eq!(k, Some(ErrorKind::NotAllowed), "{path:?}");
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern")
            .unwrap_or_default()
            .trim_end_matches('\n'),
        core
    );

    // Values that are not plain numbers/words are bad requests.
    for value in ["1; reboot", "1\n2", "\0", "", &"1".repeat(300)] {
        let k = remote_kind(c.sysctl_write("net.ipv4.ip_forward", value).await);
        assert_eq!(k, Some(ErrorKind::BadRequest), "{value:?}");
    }

    // On the allow-list, in each spelling, per device (a name with a dot included).
    let fwd0 = ns.read("/proc/sys/net/ipv4/ip_forward");
    let old = c
        .sysctl_write("net.ipv4.ip_forward", "1")
        .await
        .unwrap_or_else(|e| panic!("ip_forward: {e}"));
    assert_eq!(old, fwd0);
    assert_eq!(ns.read("/proc/sys/net/ipv4/ip_forward"), "1");
    for (path, file, value) in [
        (
            "net.ipv4.conf.d0.5.rp_filter",
            "/proc/sys/net/ipv4/conf/d0.5/rp_filter",
            "2",
        ),
        (
            "net/ipv6/conf/d0/accept_dad",
            "/proc/sys/net/ipv6/conf/d0/accept_dad",
            "0",
        ),
        (
            "/proc/sys/net/ipv6/conf/all/forwarding",
            "/proc/sys/net/ipv6/conf/all/forwarding",
            "1",
        ),
        (
            "net.ipv4.tcp_rmem",
            "/proc/sys/net/ipv4/tcp_rmem",
            "4096\t131072\t6291456",
        ),
        (
            "/proc/sys/net/ipv4/ipfrag_time",
            "/proc/sys/net/ipv4/ipfrag_time",
            "7",
        ),
    ] {
        c.sysctl_write(path, value)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(ns.read(file), value, "{path}");
    }
    // A key on the list that this kernel lacks for the device: NotFound.
    let k = remote_kind(
        c.sysctl_write("net.ipv4.conf.nosuchdev.rp_filter", "0")
            .await,
    );
    assert_eq!(k, Some(ErrorKind::NotFound));
    // vm.drop_caches is write-only: 1, 2 or 3, no old value.
    assert_eq!(
        c.sysctl_write("/proc/sys/vm/drop_caches", "1")
            .await
            .unwrap_or_else(|e| panic!("drop_caches: {e}")),
        ""
    );
    let k = remote_kind(c.sysctl_write("vm.drop_caches", "4").await);
    assert_eq!(k, Some(ErrorKind::BadRequest));

    // The session went on through all of that; ending it restores the values.
    assert!(c.list_interfaces().await.is_ok());
    c.end_recipe()
        .await
        .unwrap_or_else(|e| panic!("end_recipe: {e}"));
    assert_eq!(ns.read("/proc/sys/net/ipv4/ip_forward"), fwd0);
    c.bye().await.unwrap_or_else(|e| panic!("bye: {e}"));
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}

/// Names and argv elements a controller sends end up in argv or paths: each is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argv_and_names_from_the_controller_are_checked() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::start(dir.path(), None);
    let c = AgentClient::connect("host1", agent.transport().await, None, opts())
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let call = |op: Op| c.call(op, Duration::from_secs(10));
    let bad = |r: Result<Reply, SessionError>, what: &str| match r {
        Err(SessionError::Remote { kind, message, .. }) => {
            assert_eq!(kind, ErrorKind::BadRequest, "{what}: {message}")
        }
        other => panic!("{what}: expected BadRequest, got {other:?}"),
    };
    let ping = |dst: &str, src: Option<&str>| JobSpec::Ping {
        dst: dst.into(),
        src: src.map(String::from),
        count: 1,
        interval_s: 0.2,
        size: None,
        ipv6: false,
    };
    for (spec, what) in [
        (ping("--help", None), "option as ping destination"),
        (ping("localhost", None), "host name as ping destination"),
        (ping("198.18.0.1 -f", None), "two words as destination"),
        (ping("198.18.0.1", Some("-f")), "option as ping source"),
        (ping("198.18.0.1", Some("a b")), "bad ping source"),
        (
            JobSpec::IperfServer {
                bind: "--logfile=/etc/passwd".into(),
                port: 5201,
                cpus: None,
                oneoff: true,
            },
            "option as iperf3 bind address",
        ),
        (
            JobSpec::IperfServer {
                bind: "localhost".into(),
                port: 45201,
                cpus: None,
                oneoff: true,
            },
            "host name as iperf3 bind address",
        ),
        (
            JobSpec::IperfClient {
                server: "-J".into(),
                port: 5201,
                cport: None,
                duration_s: 1,
                proto: lnst_runner::protocol::IperfProto::Tcp,
                blksize: None,
                parallel: None,
                cpus: None,
            },
            "option as iperf3 server",
        ),
        (
            JobSpec::CpuStat { interval_ms: 1 },
            "CPU sampler faster than 10 ms",
        ),
    ] {
        bad(call(Op::StartJob { spec }).await, what);
    }
    // ethtool feature names that are options or odd characters.
    for f in ["-s", "--set-priv-flags", "gro\non", "a b", "x;y", ""] {
        bad(
            call(Op::SetOffloads {
                ifname: "lo".into(),
                features: vec![(f.to_string(), true)],
            })
            .await,
            &format!("feature {f:?}"),
        );
    }
    // Interface names the kernel would take but that are options or control characters.
    for n in ["-s", "--help", "a\x1bb", "x\x7f"] {
        bad(
            call(Op::GetOffloads { ifname: n.into() }).await,
            &format!("ifname {n:?}"),
        );
    }
    // A huge DAD timeout is clamped, not a panic in the agent: the reply comes.
    assert!(call(Op::WaitDad {
        ifname: "lo".into(),
        timeout_ms: u64::MAX,
    })
    .await
    .is_ok());
    // The session is still fine.
    assert!(c.list_interfaces().await.is_ok());
    c.bye().await.unwrap_or_else(|e| panic!("bye: {e}"));
}
