//! The test agent (`lnst-agent`): serves one controller at a time over stdin/stdout or TCP,
//! with the protocol of [`crate::protocol`].
//!
//! Per connection: send Hello, complete the handshake (authentication when a secret is
//! configured), then serve requests concurrently (each in its own task, so keepalive pings are
//! answered while a long wait runs). When the controller says Bye or disconnects, the session is
//! cleaned up: jobs are killed and the interface snapshot and sysctls are restored.
//!
//! The agent survives every failing operation: a request that fails, and a well-framed
//! `Request` whose op cannot be decoded (unknown op, missing or mistyped field), get an error
//! `Response` for their id and the session goes on. A frame that is not a decodable message
//! and not such a request (garbage, an unknown message type, an oversized or truncated frame)
//! gets an `Error` and ends this connection, never the agent.

pub mod jobs;
pub mod net;

use crate::protocol::JobSpec;
use crate::protocol::{
    self, ErrorKind, ErrorReply, Event, HelloInfo, LogLevel, Message, Offload, Op, Reply,
    ShellOutput, PROTOCOL_VERSION,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Error of one operation, sent back as an [`ErrorReply`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OpError {
    pub kind: ErrorKind,
    pub message: String,
}

impl OpError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        OpError {
            kind,
            message: message.into(),
        }
    }
}

impl From<OpError> for ErrorReply {
    fn from(e: OpError) -> Self {
        ErrorReply::new(e.kind, e.message)
    }
}

/// Errors that end the agent (not a connection).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Config(String),
}

/// Environment variable holding the shared secret itself (how the runner hands its fresh
/// per-run secret to the agents it starts); `--secret-file` takes precedence.
pub const AGENT_SECRET_ENV: &str = "LNST_AGENT_SECRET";

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Shared secret; Some → controllers must authenticate.
    pub secret: Option<Vec<u8>>,
    /// Serve the Shell op.
    pub allow_shell: bool,
    /// A controller must finish the handshake within this time.
    pub handshake_timeout: Duration,
    /// A controller silent this long (no request, no ping) is considered gone.
    pub idle_timeout: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            secret: None,
            allow_shell: false,
            handshake_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

impl AgentConfig {
    /// Read a secret file (surrounding whitespace stripped; empty is an error).
    pub fn load_secret(path: &std::path::Path) -> Result<Vec<u8>, AgentError> {
        let raw = std::fs::read(path).map_err(|e| {
            AgentError::Config(format!("cannot read secret file {}: {e}", path.display()))
        })?;
        protocol::normalize_secret(&raw)
            .ok_or_else(|| AgentError::Config(format!("secret file {} is empty", path.display())))
    }
}

// ---------------------------------------------------------------------------------------------
// Log forwarding to the connected controller
// ---------------------------------------------------------------------------------------------

static LOG_SINK: Mutex<Option<mpsc::UnboundedSender<Out>>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A `tracing` layer that sends this crate's log events to the connected controller as
/// `Event::Log` (install it in the agent binary next to the stderr formatter).
pub struct ForwardLayer;

struct MsgVisitor(String);

impl tracing::field::Visit for MsgVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ForwardLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = event.metadata();
        if !meta.target().starts_with("lnst_runner") && !meta.target().starts_with("lnst_agent") {
            return;
        }
        let Some(tx) = lock(&LOG_SINK).clone() else {
            return;
        };
        let mut v = MsgVisitor(String::new());
        event.record(&mut v);
        let level = match *meta.level() {
            tracing::Level::ERROR => LogLevel::Error,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::DEBUG => LogLevel::Debug,
            tracing::Level::TRACE => LogLevel::Trace,
        };
        let _ = tx.send(Out::Msg(Message::Event {
            event: Event::Log {
                level,
                target: meta.target().to_string(),
                message: v.0,
            },
        }));
    }
}

// ---------------------------------------------------------------------------------------------
// Session state and operations
// ---------------------------------------------------------------------------------------------

/// Writer-task commands.
enum Out {
    Msg(Message),
    Close,
}

#[derive(Debug, Clone)]
struct IfaceSnapshot {
    name: String,
    mtu: u32,
    up: bool,
    addrs: Vec<net::Addr>,
    offloads: Option<Vec<Offload>>,
}

struct Session {
    cfg: Arc<AgentConfig>,
    nl: net::Netlink,
    jobs: jobs::Jobs,
    /// Original values of written sysctls, in first-write order.
    sysctls: Mutex<Vec<(PathBuf, String)>>,
    snapshot: tokio::sync::Mutex<Vec<IfaceSnapshot>>,
    /// Links made by CreateLink (ifindex, name), deleted at the end of the recipe.
    created_links: Mutex<Vec<(u32, String)>>,
    out: mpsc::UnboundedSender<Out>,
}

/// Resolve a sysctl name to a path under /proc/sys, refusing anything that could escape it.
pub fn sysctl_path(p: &str) -> Result<PathBuf, OpError> {
    let bad = || {
        OpError::new(
            ErrorKind::BadRequest,
            format!("invalid sysctl path {p:?}: expected a path under /proc/sys"),
        )
    };
    let rel: String = if let Some(r) = p.strip_prefix("/proc/sys/") {
        r.to_string()
    } else if p.starts_with('/') {
        return Err(bad());
    } else if !p.contains('/') {
        p.replace('.', "/")
    } else {
        p.to_string()
    };
    if rel.is_empty()
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'))
    {
        return Err(bad());
    }
    Ok(PathBuf::from("/proc/sys").join(rel))
}

impl Session {
    async fn handle(self: Arc<Self>, id: u64, op: Op) {
        let name = op.name();
        let result = self.dispatch(op).await.map_err(|e| {
            tracing::warn!("{name} failed: {}", e.message);
            ErrorReply::from(e)
        });
        let _ = self.out.send(Out::Msg(Message::Response { id, result }));
    }

    async fn dispatch(&self, op: Op) -> Result<Reply, OpError> {
        tracing::debug!("request {}", op.name());
        match op {
            Op::ListInterfaces => Ok(Reply::Interfaces(self.nl.list_interfaces().await?)),
            Op::SetLink { ifname, up } => {
                self.nl.set_link(&ifname, up).await?;
                Ok(Reply::Ok)
            }
            Op::SetMtu { ifname, mtu } => {
                self.nl.set_mtu(&ifname, mtu).await?;
                Ok(Reply::Ok)
            }
            Op::AddAddress { ifname, addr } => {
                self.nl.add_address(&ifname, &addr).await?;
                Ok(Reply::Ok)
            }
            Op::FlushAddresses { ifname } => {
                self.nl.flush_addresses(&ifname).await?;
                Ok(Reply::Ok)
            }
            Op::GetOffloads { ifname } => {
                self.nl.link(&ifname).await?;
                Ok(Reply::Offloads(net::get_offloads(&ifname).await?))
            }
            Op::SetOffloads { ifname, features } => {
                self.nl.link(&ifname).await?;
                net::set_offloads(&ifname, &features).await?;
                Ok(Reply::Ok)
            }
            Op::WaitDad { ifname, timeout_ms } => {
                self.nl
                    .wait_dad(&ifname, Duration::from_millis(timeout_ms))
                    .await?;
                Ok(Reply::Ok)
            }
            Op::SysctlWrite { path, value } => {
                Ok(Reply::OldValue(self.sysctl_write(&path, &value).await?))
            }
            Op::StartRecipe { interfaces } => {
                self.start_recipe(&interfaces).await?;
                Ok(Reply::Ok)
            }
            Op::EndRecipe => {
                self.end_recipe().await?;
                Ok(Reply::Ok)
            }
            Op::StartJob { spec } => {
                let listen_port = match &spec {
                    JobSpec::IperfServer { port, .. } => Some(*port),
                    _ => None,
                };
                let out = self.out.clone();
                let id = self.jobs.start(
                    spec,
                    Arc::new(move |result| {
                        let _ = out.send(Out::Msg(Message::Event {
                            event: Event::JobFinished { result },
                        }));
                    }),
                )?;
                // An iperf3 server is started once it listens (the controller then pauses
                // briefly before its clients; see recipes::simple_network::SERVER_SETTLE).
                if let Some(port) = listen_port {
                    jobs::wait_listening(port, Duration::from_secs(5)).await;
                }
                Ok(Reply::JobId(id))
            }
            Op::WaitJob { job_id, timeout_ms } => Ok(Reply::JobResult(
                self.jobs
                    .wait(job_id, Duration::from_millis(timeout_ms))
                    .await?,
            )),
            Op::StopJob { job_id } => Ok(Reply::JobResult(self.jobs.stop(job_id).await?)),
            Op::KillJob { job_id } => Ok(Reply::JobResult(self.jobs.kill(job_id).await?)),
            Op::KillAllJobs => {
                self.jobs.kill_all().await;
                Ok(Reply::Ok)
            }
            Op::Shell { argv } => self.shell(argv).await,
            Op::CreateLink { ifname, spec } => {
                let idx = self.nl.create_link(&ifname, &spec).await?;
                lock(&self.created_links).push((idx, ifname.clone()));
                tracing::info!("created link {ifname} ({spec:?})");
                Ok(Reply::Ok)
            }
            // Handled by the connection loop; answering here keeps dispatch total.
            Op::Bye => Ok(Reply::Ok),
        }
    }

    async fn shell(&self, argv: Vec<String>) -> Result<Reply, OpError> {
        if !self.cfg.allow_shell {
            return Err(OpError::new(
                ErrorKind::NotAllowed,
                "Shell is disabled on this agent (start lnst-agent with --allow-shell)",
            ));
        }
        let Some((prog, args)) = argv.split_first() else {
            return Err(OpError::new(ErrorKind::BadRequest, "empty argv"));
        };
        tracing::info!("shell: {}", argv.join(" "));
        let out = tokio::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    OpError::new(ErrorKind::Failed, format!("{prog}: not found in PATH"))
                } else {
                    OpError::new(ErrorKind::Failed, format!("{prog}: {e}"))
                }
            })?;
        Ok(Reply::Shell(ShellOutput {
            exit_code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }))
    }

    async fn sysctl_write(&self, path: &str, value: &str) -> Result<String, OpError> {
        let p = sysctl_path(path)?;
        let old = tokio::fs::read_to_string(&p).await.map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::Failed
            };
            OpError::new(kind, format!("reading {}: {e}", p.display()))
        })?;
        let old = old.trim_end_matches('\n').to_string();
        tokio::fs::write(&p, value.as_bytes()).await.map_err(|e| {
            OpError::new(ErrorKind::Failed, format!("writing {}: {e}", p.display()))
        })?;
        let mut s = lock(&self.sysctls);
        if !s.iter().any(|(q, _)| *q == p) {
            s.push((p.clone(), old.clone()));
        }
        tracing::info!("sysctl {} = {value} (was {old})", p.display());
        Ok(old)
    }

    async fn restore_sysctls(&self, errors: &mut Vec<String>) {
        let saved: Vec<(PathBuf, String)> = std::mem::take(&mut *lock(&self.sysctls));
        for (p, v) in saved.into_iter().rev() {
            match tokio::fs::write(&p, v.as_bytes()).await {
                Ok(()) => tracing::info!("restored sysctl {} = {v}", p.display()),
                Err(e) => errors.push(format!("restoring {}: {e}", p.display())),
            }
        }
    }

    async fn start_recipe(&self, ifnames: &[String]) -> Result<(), OpError> {
        let mut snap = self.snapshot.lock().await;
        for name in ifnames {
            if snap.iter().any(|s| s.name == *name) {
                continue; // the earliest state wins
            }
            let link = self.nl.link(name).await?;
            let addrs = self.nl.addresses(link.ifindex).await?;
            let offloads = match net::get_offloads(name).await {
                Ok(o) => Some(o),
                Err(e) => {
                    tracing::warn!("{name}: offloads not snapshotted: {}", e.message);
                    None
                }
            };
            snap.push(IfaceSnapshot {
                name: name.clone(),
                mtu: link.mtu,
                up: link.up,
                addrs,
                offloads,
            });
        }
        tracing::info!("recipe started; snapshot of {}", ifnames.join(", "));
        Ok(())
    }

    async fn restore_iface(&self, s: &IfaceSnapshot, errors: &mut Vec<String>) {
        let mut err = |e: OpError| errors.push(format!("{}: {}", s.name, e.message));
        let link = match self.nl.link(&s.name).await {
            Ok(l) => l,
            Err(e) => return err(e),
        };
        if let Some(orig) = &s.offloads {
            match net::get_offloads(&s.name).await {
                Ok(now) => {
                    let changes: Vec<(String, bool)> = orig
                        .iter()
                        .filter(|o| !o.fixed)
                        .filter(|o| {
                            now.iter()
                                .any(|n| n.name == o.name && n.enabled != o.enabled && !n.fixed)
                        })
                        .map(|o| (o.name.clone(), o.enabled))
                        .collect();
                    if let Err(e) = net::set_offloads(&s.name, &changes).await {
                        err(e);
                    }
                }
                Err(e) => err(e),
            }
        }
        if link.mtu != s.mtu {
            if let Err(e) = self.nl.set_mtu(&s.name, s.mtu).await {
                err(e);
            }
        }
        if link.up != s.up {
            if let Err(e) = self.nl.set_link(&s.name, s.up).await {
                err(e);
            }
        }
        match self.nl.addresses(link.ifindex).await {
            Ok(now) => {
                let same = |a: &net::Addr, b: &net::Addr| a.ip == b.ip && a.prefix == b.prefix;
                for a in now.iter().filter(|a| !a.is_link_local()) {
                    if !s.addrs.iter().any(|o| same(o, a)) {
                        if let Err(e) = self.nl.del_address(link.ifindex, a).await {
                            err(e);
                        }
                    }
                }
                for o in s.addrs.iter().filter(|a| !a.is_link_local()) {
                    if !now.iter().any(|a| same(o, a)) {
                        if let Err(e) = self.nl.add_address(&s.name, &o.cidr()).await {
                            err(e);
                        }
                    }
                }
            }
            Err(e) => err(e),
        }
    }

    /// Kill jobs, restore the interface snapshot and the sysctls. Continues past errors and
    /// reports them all.
    async fn end_recipe(&self) -> Result<(), OpError> {
        self.jobs.kill_all().await;
        let mut errors = Vec::new();
        // Links the recipe created go first (a VLAN on a snapshotted NIC, say), newest first.
        let created: Vec<(u32, String)> = std::mem::take(&mut *lock(&self.created_links));
        for (idx, name) in created.into_iter().rev() {
            match self.nl.delete_link(idx).await {
                Ok(()) => tracing::info!("deleted link {name}"),
                Err(e) => errors.push(format!("{name}: {}", e.message)),
            }
        }
        let snap: Vec<IfaceSnapshot> = std::mem::take(&mut *self.snapshot.lock().await);
        for s in snap.iter().rev() {
            self.restore_iface(s, &mut errors).await;
        }
        self.restore_sysctls(&mut errors).await;
        if errors.is_empty() {
            tracing::info!("recipe ended; state restored");
            Ok(())
        } else {
            Err(OpError::new(
                ErrorKind::Failed,
                format!("restore incomplete: {}", errors.join("; ")),
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connection handling
// ---------------------------------------------------------------------------------------------

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Agent version, kernel release and hostname.
fn identity() -> (String, String, String) {
    (
        env!("CARGO_PKG_VERSION").to_string(),
        read_trimmed("/proc/sys/kernel/osrelease"),
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
    )
}

/// The first frame. An agent that requires authentication tells nobody who it is before the
/// controller has proved the secret: its identity goes in AuthOk instead.
fn hello(cfg: &AgentConfig, nonce: &[u8; protocol::NONCE_LEN]) -> HelloInfo {
    let (agent_version, kernel_release, hostname) = if cfg.secret.is_some() {
        Default::default()
    } else {
        identity()
    };
    HelloInfo {
        protocol_version: PROTOCOL_VERSION,
        agent_version,
        kernel_release,
        hostname,
        auth_required: cfg.secret.is_some(),
        nonce: hex::encode(nonce),
    }
}

fn version_check(v: u32) -> Result<(), ErrorReply> {
    if v == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(ErrorReply::new(
            ErrorKind::VersionMismatch,
            format!(
                "protocol version mismatch: agent speaks {PROTOCOL_VERSION}, controller speaks {v}"
            ),
        ))
    }
}

/// Outcome of a failed handshake: whether to tell the peer.
struct HandshakeFail {
    reply: ErrorReply,
    tell_peer: bool,
}

impl From<ErrorReply> for HandshakeFail {
    fn from(reply: ErrorReply) -> Self {
        HandshakeFail {
            reply,
            tell_peer: true,
        }
    }
}

/// How long an agent holds a connection that proved a wrong secret before it answers. A TCP
/// agent serves one controller at a time, so this also bounds online guessing of a weak pool
/// secret to about one attempt per second per agent.
pub const WRONG_SECRET_DELAY: Duration = Duration::from_secs(1);

async fn handshake<R: AsyncRead + Unpin>(
    reader: &mut R,
    out: &mpsc::UnboundedSender<Out>,
    cfg: &AgentConfig,
    nonce: &[u8; protocol::NONCE_LEN],
) -> Result<(), HandshakeFail> {
    let auth_fail = |m: &str| ErrorReply::new(ErrorKind::AuthFailed, m);
    let msg = match protocol::read_message_limited(reader, protocol::MAX_HANDSHAKE_FRAME).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Err(HandshakeFail {
                reply: ErrorReply::new(ErrorKind::Protocol, "controller closed the connection"),
                tell_peer: false,
            })
        }
        Err(e) => return Err(ErrorReply::new(ErrorKind::Protocol, e.to_string()).into()),
    };
    match msg {
        Message::Start { protocol_version } => {
            version_check(protocol_version)?;
            if cfg.secret.is_some() {
                return Err(auth_fail(
                    "authentication required: this agent needs the shared secret",
                )
                .into());
            }
            Ok(())
        }
        Message::Auth {
            protocol_version,
            client_nonce,
            mac,
        } => {
            version_check(protocol_version)?;
            let Some(secret) = &cfg.secret else {
                return Err(auth_fail("this agent has no secret configured").into());
            };
            let Some(cn) = protocol::parse_nonce(&client_nonce) else {
                return Err(auth_fail("malformed client nonce").into());
            };
            if !protocol::verify_client_mac(secret, nonce, &cn, &mac) {
                tokio::time::sleep(WRONG_SECRET_DELAY).await;
                return Err(auth_fail("wrong secret").into());
            }
            let mac = hex::encode(protocol::agent_mac(secret, &cn, nonce));
            let (agent_version, kernel_release, hostname) = identity();
            let _ = out.send(Out::Msg(Message::AuthOk {
                mac,
                agent_version,
                kernel_release,
                hostname,
            }));
            Ok(())
        }
        Message::Error(e) => Err(HandshakeFail {
            reply: e,
            tell_peer: false,
        }),
        other => Err(auth_fail(&format!(
            "handshake not complete: expected Auth or Start, got {}",
            message_name(&other)
        ))
        .into()),
    }
}

fn message_name(m: &Message) -> &'static str {
    match m {
        Message::Hello(_) => "Hello",
        Message::Auth { .. } => "Auth",
        Message::Start { .. } => "Start",
        Message::AuthOk { .. } => "AuthOk",
        Message::Error(_) => "Error",
        Message::Request { .. } => "Request",
        Message::Response { .. } => "Response",
        Message::Event { .. } => "Event",
        Message::Ping { .. } => "Ping",
        Message::Pong { .. } => "Pong",
    }
}

/// Write queued messages; an over-large reply becomes an error reply instead.
async fn writer_task<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::UnboundedReceiver<Out>) {
    while let Some(cmd) = rx.recv().await {
        let msg = match cmd {
            Out::Msg(m) => m,
            Out::Close => break,
        };
        let frame = match protocol::encode_message(&msg) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("cannot send {}: {e}", message_name(&msg));
                let Message::Response { id, .. } = msg else {
                    continue;
                };
                let repl = Message::Response {
                    id,
                    result: Err(ErrorReply::new(
                        ErrorKind::Internal,
                        format!("reply not sendable: {e}"),
                    )),
                };
                match protocol::encode_message(&repl) {
                    Ok(f) => f,
                    Err(_) => continue,
                }
            }
        };
        if let Err(e) = w.write_all(&frame).await {
            tracing::debug!("write to controller failed: {e}");
            break;
        }
        if w.flush().await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

/// The id of a frame that is a `Request` (`{"type": "Request", "id": N, ...}`) even when its
/// op cannot be decoded. Other fields are skipped without recursion (serde_json ignores
/// values iteratively), so deeply nested garbage costs no stack.
fn request_id_of(frame: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        ty: String,
        id: u64,
    }
    serde_json::from_slice::<Probe>(frame)
        .ok()
        .filter(|p| p.ty == "Request")
        .map(|p| p.id)
}

/// Decoder messages echo the peer's input (an unknown op name may be megabytes): keep 300
/// characters.
fn clip_message(m: &str) -> String {
    let mut t: String = m.chars().take(300).collect();
    if m.chars().nth(300).is_some() {
        t.push('…');
    }
    t
}

/// Serve one controller on a reader/writer pair until it says Bye or goes away. Never fails
/// because an operation failed; a malformed frame ends only this connection.
pub async fn serve_connection<R, W>(mut reader: R, writer: W, cfg: Arc<AgentConfig>, peer: &str)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out, rx) = mpsc::unbounded_channel();
    let wtask = tokio::spawn(writer_task(writer, rx));
    let nonce = protocol::new_nonce();
    let _ = out.send(Out::Msg(Message::Hello(hello(&cfg, &nonce))));

    let hs = tokio::time::timeout(
        cfg.handshake_timeout,
        handshake(&mut reader, &out, &cfg, &nonce),
    )
    .await
    .unwrap_or_else(|_| Err(ErrorReply::new(ErrorKind::Protocol, "handshake timed out").into()));
    if let Err(f) = hs {
        tracing::warn!("controller {peer}: handshake failed: {}", f.reply.message);
        if f.tell_peer {
            let _ = out.send(Out::Msg(Message::Error(f.reply)));
        }
        let _ = out.send(Out::Close);
        let _ = tokio::time::timeout(Duration::from_secs(5), wtask).await;
        return;
    }

    let session = match net::Netlink::new() {
        Ok(nl) => Arc::new(Session {
            cfg: cfg.clone(),
            nl,
            jobs: jobs::Jobs::default(),
            sysctls: Mutex::new(Vec::new()),
            snapshot: tokio::sync::Mutex::new(Vec::new()),
            created_links: Mutex::new(Vec::new()),
            out: out.clone(),
        }),
        Err(e) => {
            tracing::error!("{}", e.message);
            let _ = out.send(Out::Msg(Message::Error(e.into())));
            let _ = out.send(Out::Close);
            let _ = tokio::time::timeout(Duration::from_secs(5), wtask).await;
            return;
        }
    };
    *lock(&LOG_SINK) = Some(out.clone());
    tracing::info!(
        "controller {peer} connected{}",
        if cfg.secret.is_some() {
            " (authenticated)"
        } else {
            ""
        }
    );

    let mut tasks = tokio::task::JoinSet::new();
    loop {
        // Reap finished request tasks so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
        let frame =
            match tokio::time::timeout(cfg.idle_timeout, protocol::read_frame_bytes(&mut reader))
                .await
            {
                Err(_) => {
                    tracing::warn!(
                        "controller {peer} silent for {} s; closing",
                        cfg.idle_timeout.as_secs()
                    );
                    break;
                }
                Ok(Ok(None)) => {
                    tracing::info!("controller {peer} disconnected");
                    break;
                }
                Ok(Err(e)) => {
                    tracing::warn!("controller {peer}: {e}; closing the connection");
                    let _ = out.send(Out::Msg(Message::Error(ErrorReply::new(
                        ErrorKind::Protocol,
                        e.to_string(),
                    ))));
                    break;
                }
                Ok(Ok(Some(bytes))) => bytes,
            };
        let msg = match serde_json::from_slice::<Message>(&frame) {
            Ok(m) => m,
            Err(e) => {
                // A well-framed request the agent cannot decode (unknown op, bad field) fails
                // like any other operation: an error reply, and the session goes on. Anything
                // else undecodable ends the connection.
                if let Some(id) = request_id_of(&frame) {
                    let m = clip_message(&format!("malformed request: {e}"));
                    tracing::warn!("controller {peer}: request {id}: {m}");
                    let _ = out.send(Out::Msg(Message::Response {
                        id,
                        result: Err(ErrorReply::new(ErrorKind::BadRequest, m)),
                    }));
                    continue;
                }
                let e = protocol::FrameError::Json(e);
                tracing::warn!("controller {peer}: {e}; closing the connection");
                let _ = out.send(Out::Msg(Message::Error(ErrorReply::new(
                    ErrorKind::Protocol,
                    clip_message(&e.to_string()),
                ))));
                break;
            }
        };
        match msg {
            Message::Request { id, op: Op::Bye } => {
                tracing::info!("controller {peer} said bye");
                tasks.abort_all();
                if let Err(e) = session.end_recipe().await {
                    tracing::warn!("{}", e.message);
                }
                let _ = out.send(Out::Msg(Message::Response {
                    id,
                    result: Ok(Reply::Ok),
                }));
                break;
            }
            Message::Request { id, op } => {
                tasks.spawn(session.clone().handle(id, op));
            }
            Message::Ping { seq } => {
                let _ = out.send(Out::Msg(Message::Pong { seq }));
            }
            Message::Pong { .. } => {}
            other => {
                let m = format!("unexpected {} message", message_name(&other));
                tracing::warn!("controller {peer}: {m}; closing the connection");
                let _ = out.send(Out::Msg(Message::Error(ErrorReply::new(
                    ErrorKind::Protocol,
                    m,
                ))));
                break;
            }
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    // Cleanup (a no-op after Bye): kill jobs, restore snapshot and sysctls.
    if let Err(e) = session.end_recipe().await {
        tracing::warn!("cleanup after {peer}: {}", e.message);
    }
    *lock(&LOG_SINK) = None;
    let _ = out.send(Out::Close);
    let _ = tokio::time::timeout(Duration::from_secs(5), wtask).await;
}

/// Serve one controller on stdin/stdout, then return.
pub async fn run_stdio(cfg: AgentConfig) -> Result<(), AgentError> {
    serve_connection(
        tokio::io::stdin(),
        tokio::io::stdout(),
        Arc::new(cfg),
        "stdio",
    )
    .await;
    Ok(())
}

/// Listen on TCP and serve one controller at a time; others get a Busy error.
pub async fn run_tcp(addr: SocketAddr, cfg: AgentConfig) -> Result<(), AgentError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("listening on {}", listener.local_addr()?);
    let cfg = Arc::new(cfg);
    let current: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let busy_with = {
            let mut cur = lock(&current);
            match *cur {
                Some(p) => Some(p),
                None => {
                    *cur = Some(peer);
                    None
                }
            }
        };
        let (r, w) = stream.into_split();
        if let Some(other) = busy_with {
            tracing::warn!("refusing controller {peer}: busy with {other}");
            tokio::spawn(async move {
                let mut w = w;
                let msg = Message::Error(ErrorReply::new(
                    ErrorKind::Busy,
                    format!("agent is busy serving controller {other}; try again later"),
                ));
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    protocol::write_message(&mut w, &msg),
                )
                .await;
                let _ = w.shutdown().await;
                drop(r);
            });
            continue;
        }
        let cfg = cfg.clone();
        let current = current.clone();
        tokio::spawn(async move {
            serve_connection(r, w, cfg, &peer.to_string()).await;
            *lock(&current) = None;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_paths() {
        let ok = |p: &str| sysctl_path(p).map(|p| p.to_string_lossy().into_owned());
        assert_eq!(
            ok("net/ipv4/ip_forward"),
            Ok("/proc/sys/net/ipv4/ip_forward".into())
        );
        assert_eq!(
            ok("/proc/sys/net/ipv4/ip_forward"),
            Ok("/proc/sys/net/ipv4/ip_forward".into())
        );
        assert_eq!(
            ok("net.ipv6.conf.all.forwarding"),
            Ok("/proc/sys/net/ipv6/conf/all/forwarding".into())
        );
        for bad in [
            "",
            "/etc/passwd",
            "/proc/sys/../../etc/passwd",
            "net/../../etc",
            "net//x",
            "/proc/sys/",
            "./net",
        ] {
            assert!(sysctl_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn undecodable_requests_are_answered_by_id() {
        assert_eq!(
            request_id_of(br#"{"type":"Request","id":7,"op":{"op":"RunShell","cmd":"id"}}"#),
            Some(7)
        );
        assert_eq!(
            request_id_of(br#"{"op":{"op":"SetMtu","mtu":-1},"id":8,"type":"Request"}"#),
            Some(8)
        );
        let deep = format!(
            r#"{{"type":"Request","id":9,"op":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(request_id_of(deep.as_bytes()), Some(9));
        for not_a_request in [
            &br#"{"type":"Frobnicate","id":1}"#[..],
            br#"{"type":"Request","id":-1,"op":{}}"#,
            br#"{"type":"Request","op":{}}"#,
            b"{{{{",
            b"",
            b"\xff",
        ] {
            assert_eq!(request_id_of(not_a_request), None);
        }
        assert_eq!(clip_message(&"x".repeat(1000)).chars().count(), 301);
    }

    #[test]
    fn version_check_message() {
        assert!(version_check(PROTOCOL_VERSION).is_ok());
        let e = version_check(PROTOCOL_VERSION + 1).err();
        assert_eq!(e.as_ref().map(|e| e.kind), Some(ErrorKind::VersionMismatch));
        assert!(e
            .map(|e| e.message)
            .unwrap_or_default()
            .contains("agent speaks 1, controller speaks 2"));
    }
}
