//! The real agent on TCP (127.0.0.1) with a secret file: mutual authentication, replay,
//! busy refusal, malformed frames. Hostile handshakes (silent connections, reconnect loops,
//! concurrent guesses) are in tests/hostile_agent.rs.

use lnst_runner::protocol::{self, ErrorKind, Message, Op, PROTOCOL_VERSION};
use lnst_runner::provision::Transport;
use lnst_runner::session::{AgentClient, ClientOptions, SessionError};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

const SECRET: &[u8] = b"correct horse battery staple";

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
        // Port 0: the kernel picks a free port and the agent logs it (no port races).
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = dir.join(format!("agent-{n}.log"));
        let logf = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lnst-agent"));
        cmd.args(["--port", "0", "--bind", "127.0.0.1"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(logf)
            .env_remove("LNST_AGENT_SECRET_FILE");
        if let Some(s) = secret {
            let f = dir.join(format!("secret-{n}"));
            // Trailing newline as `echo` writes it: the agent strips it.
            let mut content = s.to_vec();
            content.push(b'\n');
            std::fs::write(&f, content).unwrap_or_else(|e| panic!("secret: {e}"));
            cmd.arg("--secret-file").arg(&f);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn agent: {e}"));
        let mut agent = Agent {
            child,
            port: 0,
            log,
        };
        for _ in 0..200 {
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

    async fn tcp(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap_or_else(|e| panic!("connect to agent: {e}"))
    }

    /// A raw connection and the agent's Hello, retrying while the agent is still busy with
    /// the previous controller.
    async fn raw(&self) -> (TcpStream, protocol::HelloInfo) {
        for _ in 0..100 {
            let mut s = self.tcp().await;
            match read(&mut s).await {
                Some(Message::Hello(h)) => return (s, h),
                Some(Message::Error(e)) if e.kind == ErrorKind::Busy => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => panic!("expected Hello, got {other:?}"),
            }
        }
        panic!("agent stayed busy")
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

fn opts() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(10),
        keepalive_interval: Duration::from_millis(500),
        keepalive_timeout: Duration::from_secs(5),
    }
}

async fn read(s: &mut TcpStream) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(5), protocol::read_message(s))
        .await
        .unwrap_or_else(|_| panic!("no frame within 5 s"))
        .unwrap_or_else(|e| panic!("frame: {e}"))
}

/// Next frame that is not an Event (agents push log events at any time).
async fn read_reply(s: &mut TcpStream) -> Option<Message> {
    loop {
        match read(s).await {
            Some(Message::Event { .. }) => continue,
            other => return other,
        }
    }
}

async fn send(s: &mut TcpStream, m: &Message) {
    protocol::write_message(s, m)
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
}

async fn wait_for_log(a: &Agent, needle: &str) -> bool {
    for _ in 0..50 {
        if a.log_text().contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Connect as a controller, retrying while the agent is still busy with a previous session.
async fn connect_when_free(
    agent: &Agent,
    secret: Option<&[u8]>,
) -> Result<AgentClient, SessionError> {
    for _ in 0..60 {
        match AgentClient::connect("host1", agent.transport().await, secret, opts()).await {
            Err(SessionError::Busy { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            other => return other,
        }
    }
    panic!("agent stayed busy")
}

#[tokio::test]
async fn tcp_agent_authentication() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::start(dir.path(), Some(SECRET));

    // Right secret: works (mutual proof checked inside connect).
    let c = AgentClient::connect("host1", agent.transport().await, Some(SECRET), opts())
        .await
        .unwrap_or_else(|e| panic!("connect with the right secret: {e}"));
    assert!(c.hello().auth_required);
    // Identity after the proof: the session's hello is completed from AuthOk.
    assert!(!c.hello().hostname.is_empty() && !c.hello().kernel_release.is_empty());
    let ifs = c
        .list_interfaces()
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    assert!(ifs.iter().any(|i| i.name == "lo"));

    // A second controller while the first is connected is refused with a clear error.
    match AgentClient::connect("host1", agent.transport().await, Some(SECRET), opts()).await {
        Err(SessionError::Busy { reason, .. }) => assert!(reason.contains("busy"), "{reason}"),
        other => panic!("expected Busy, got {other:?}"),
    }
    c.bye().await.unwrap_or_else(|e| panic!("bye: {e}"));
    drop(c);

    // Wrong secret: clear error on both sides, after the agent's delay.
    let guessed_at = std::time::Instant::now();
    match connect_when_free(&agent, Some(b"nope")).await {
        Err(e @ SessionError::AuthFailed { .. }) => assert_eq!(
            e.to_string(),
            "authentication with agent host1 failed: wrong secret"
        ),
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    assert!(
        guessed_at.elapsed() >= lnst_runner::agent::WRONG_SECRET_DELAY,
        "a wrong secret was answered after {:?}",
        guessed_at.elapsed()
    );
    assert!(
        wait_for_log(&agent, "handshake failed: wrong secret").await,
        "agent log: {}",
        agent.log_text()
    );

    // While it delays a wrong guess, another connection is served (an unauthenticated
    // connection holds no session slot), but its guess waits: one guess per second at most,
    // on any number of connections (tests/hostile_agent.rs has the concurrent case). The
    // Hello says nothing about the agent before a proof.
    let (mut s, h) = agent.raw().await;
    assert!(
        h.auth_required
            && h.hostname.is_empty()
            && h.kernel_release.is_empty()
            && h.agent_version.is_empty(),
        "{h:?}"
    );
    let wrong = |h: &protocol::HelloInfo| {
        let an = protocol::parse_nonce(&h.nonce).unwrap_or_else(|| panic!("nonce"));
        let cn = protocol::new_nonce();
        Message::Auth {
            protocol_version: PROTOCOL_VERSION,
            client_nonce: hex::encode(cn),
            mac: hex::encode(protocol::client_mac(b"guess", &an, &cn)),
        }
    };
    let t0 = std::time::Instant::now();
    send(&mut s, &wrong(&h)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut second, h2) = agent.raw().await;
    send(&mut second, &wrong(&h2)).await;
    match read(&mut s).await {
        Some(Message::Error(e)) => assert_eq!(e.kind, ErrorKind::AuthFailed, "{e:?}"),
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    match read(&mut second).await {
        Some(Message::Error(e)) => assert_eq!(e.kind, ErrorKind::AuthFailed, "{e:?}"),
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    assert!(
        t0.elapsed() >= 2 * lnst_runner::agent::WRONG_SECRET_DELAY,
        "two guesses answered within {:?}",
        t0.elapsed()
    );
    drop(s);
    drop(second);

    // No secret: rejected by the controller before anything is sent.
    match connect_when_free(&agent, None).await {
        Err(e @ SessionError::AuthFailed { .. }) => assert!(
            e.to_string()
                .starts_with("authentication with agent host1 failed: the agent requires a secret"),
            "{e}"
        ),
        other => panic!("expected AuthFailed, got {other:?}"),
    }

    // A raw client that skips the handshake gets no service.
    let (mut s, _) = agent.raw().await;
    send(
        &mut s,
        &Message::Request {
            id: 1,
            op: Op::ListInterfaces,
        },
    )
    .await;
    match read(&mut s).await {
        Some(Message::Error(e)) => assert_eq!(e.kind, ErrorKind::AuthFailed, "{e:?}"),
        other => panic!("expected an AuthFailed error, got {other:?}"),
    }
    assert!(read(&mut s).await.is_none(), "connection must close");
    // `Start` (unauthenticated) is refused too.
    let (mut s, _) = agent.raw().await;
    send(
        &mut s,
        &Message::Start {
            protocol_version: PROTOCOL_VERSION,
        },
    )
    .await;
    match read(&mut s).await {
        Some(Message::Error(e)) => {
            assert_eq!(e.kind, ErrorKind::AuthFailed);
            assert!(e.message.contains("authentication required"), "{e:?}");
        }
        other => panic!("expected an AuthFailed error, got {other:?}"),
    }

    // Replay: record a valid Auth from one connection, replay it on the next.
    let (mut s, h) = agent.raw().await;
    let an = protocol::parse_nonce(&h.nonce).unwrap_or_else(|| panic!("nonce"));
    let cn = protocol::new_nonce();
    let auth = Message::Auth {
        protocol_version: PROTOCOL_VERSION,
        client_nonce: hex::encode(cn),
        mac: hex::encode(protocol::client_mac(SECRET, &an, &cn)),
    };
    send(&mut s, &auth).await;
    match read(&mut s).await {
        Some(Message::AuthOk { mac, hostname, .. }) => {
            assert!(!hostname.is_empty(), "AuthOk carries the agent's identity");
            assert!(protocol::verify_agent_mac(SECRET, &cn, &an, &mac))
        }
        other => panic!("expected AuthOk, got {other:?}"),
    }
    send(&mut s, &Message::Request { id: 9, op: Op::Bye }).await;
    assert!(matches!(
        read_reply(&mut s).await,
        Some(Message::Response { id: 9, .. })
    ));
    drop(s);
    let mut replayed = None;
    for _ in 0..40 {
        let mut s = agent.tcp().await;
        match read(&mut s).await {
            Some(Message::Hello(h2)) => {
                assert_ne!(h2.nonce, h.nonce, "nonces must be fresh per connection");
                send(&mut s, &auth).await;
                replayed = read(&mut s).await;
                break;
            }
            Some(Message::Error(e)) if e.kind == ErrorKind::Busy => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    match replayed {
        Some(Message::Error(e)) => {
            assert_eq!(e.kind, ErrorKind::AuthFailed);
            assert_eq!(e.message, "wrong secret");
        }
        other => panic!("replayed auth must fail, got {other:?}"),
    }

    // A malformed frame closes that connection, not the agent.
    let (mut s, h) = agent.raw().await;
    send(&mut s, &auth_for(&h)).await;
    assert!(matches!(read(&mut s).await, Some(Message::AuthOk { .. })));
    let garbage = b"\x00\x00\x00\x05{{{{{";
    s.write_all(garbage).await.unwrap_or_else(|e| panic!("{e}"));
    match read_reply(&mut s).await {
        Some(Message::Error(e)) => assert_eq!(e.kind, ErrorKind::Protocol),
        other => panic!("expected a Protocol error, got {other:?}"),
    }
    assert!(read_reply(&mut s).await.is_none(), "connection must close");
    drop(s);
    let mut last = None;
    for _ in 0..40 {
        match AgentClient::connect("host1", agent.transport().await, Some(SECRET), opts()).await {
            Err(SessionError::Busy { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            other => {
                last = Some(other);
                break;
            }
        }
    }
    let Some(Ok(c)) = last else {
        panic!("agent must keep serving after a malformed frame: {last:?}")
    };
    assert!(c.list_interfaces().await.is_ok());
    c.bye().await.unwrap_or_else(|e| panic!("bye: {e}"));
}

/// A valid Auth for the connection whose Hello is `h`.
fn auth_for(h: &protocol::HelloInfo) -> Message {
    let cn = protocol::new_nonce();
    let an = protocol::parse_nonce(&h.nonce).unwrap_or_else(|| panic!("nonce"));
    let mac = hex::encode(protocol::client_mac(SECRET, &an, &cn));
    Message::Auth {
        protocol_version: PROTOCOL_VERSION,
        client_nonce: hex::encode(cn),
        mac,
    }
}

#[tokio::test]
async fn tcp_agent_without_secret() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::start(dir.path(), None);
    // No secret on either side: works.
    let c = AgentClient::connect("host2", agent.transport().await, None, opts())
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\nagent log:\n{}", agent.log_text()));
    assert!(!c.hello().auth_required);
    assert!(c.list_interfaces().await.is_ok());
    c.bye().await.unwrap_or_else(|e| panic!("bye: {e}"));
    drop(c);
    // A controller with a secret refuses an agent that cannot prove it.
    let mut res = None;
    for _ in 0..40 {
        match AgentClient::connect("host2", agent.transport().await, Some(SECRET), opts()).await {
            Err(SessionError::Busy { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            other => {
                res = Some(other);
                break;
            }
        }
    }
    match res {
        Some(Err(SessionError::AuthFailed { reason, .. })) => {
            assert!(
                reason.contains("does not require authentication"),
                "{reason}"
            )
        }
        other => panic!("expected AuthFailed, got {other:?}"),
    }
}

/// Wait (up to 5 s) until every thread of `pid` is in the stopped state (`T` in
/// /proc/PID/task/TID/stat).
fn wait_stopped(pid: i32) {
    let all_stopped = || {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        rd.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
                })
                .is_some_and(|state| state == "T")
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !all_stopped() {
        assert!(
            std::time::Instant::now() < deadline,
            "agent {pid} did not stop within 5 s of SIGSTOP"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test]
async fn sigstopped_agent_is_lost_within_keepalive_bound() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::start(dir.path(), None);
    let o = ClientOptions {
        request_timeout: Duration::from_secs(30),
        keepalive_interval: Duration::from_millis(200),
        keepalive_timeout: Duration::from_secs(1),
    };
    let c = AgentClient::connect("host3", agent.transport().await, None, o)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let pid = Pid::from_raw(agent.child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap_or_else(|e| panic!("SIGSTOP: {e}"));
    // kill(2) returns before every thread has stopped: a thread running on another core stops
    // only when the kernel's kick reaches it, which a loaded machine can delay long enough for
    // the agent to answer one more request. Wait until each thread shows as stopped.
    wait_stopped(pid.as_raw());
    let t0 = std::time::Instant::now();
    let r = c.list_interfaces().await;
    let took = t0.elapsed();
    let _ = kill(pid, Signal::SIGCONT);
    match r {
        Err(SessionError::AgentLost { host, reason }) => {
            assert_eq!(host, "host3");
            assert!(reason.contains("keepalive"), "{reason}");
        }
        other => panic!("expected AgentLost, got {other:?}"),
    }
    assert!(took < Duration::from_secs(3), "took {took:?}");
}
