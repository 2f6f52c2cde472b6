//! The test agent (`lnst-agent`): serves one controller at a time over stdin/stdout or TCP,
//! with the protocol of [`crate::protocol`].
//!
//! Per connection: send Hello, complete the handshake (authentication when a secret is
//! configured), then serve requests concurrently (each in its own task, so keepalive pings are
//! answered while a long wait runs). When the controller says Bye or disconnects, the session is
//! cleaned up: jobs are killed and the interface snapshot and sysctls are restored.
//!
//! A TCP agent gives its one session slot only to a controller that has completed the
//! handshake: up to [`MAX_PREAUTH`] connections may be in their handshake at once, each for at
//! most [`TCP_HANDSHAKE_TIMEOUT`], and the first to authenticate wins. Secret checks of all
//! connections go through one gate, so a wrong secret costs [`WRONG_SECRET_DELAY`] per agent
//! however many connections guess at once.
//!
//! Back-pressure: replies wait in a queue of [`OUT_QUEUE`] messages and at most
//! [`MAX_INFLIGHT`] requests run at once; when the controller does not read its replies the
//! queue fills, request tasks wait, and the agent stops reading requests until it drains.
//!
//! The agent survives every failing operation: a request that fails, and a well-framed
//! `Request` whose op cannot be decoded (unknown op, missing or mistyped field), get an error
//! `Response` for their id and the session goes on. A frame that is not a decodable message
//! and not such a request (garbage, an unknown message type, an oversized or truncated frame)
//! gets an `Error` and ends this connection, never the agent.

pub mod ethtool_ioctl;
pub mod jobs;
pub mod kmod;
pub mod l2tp;
pub mod links;
pub mod net;
pub mod netns;
pub mod pktgen;
pub mod rr;
pub mod stdin_relay;
pub mod sysctl;
pub mod tunables;
pub mod tunnels;
pub mod xfrm;

use crate::protocol::JobSpec;
use crate::protocol::{
    self, ErrorKind, ErrorReply, Event, HelloInfo, LogLevel, Message, Offload, Op, Reply,
    ShellOutput, PROTOCOL_VERSION,
};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify, Semaphore};

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
    /// `--secret-file` cannot be read (missing, not a regular file, too large).
    #[error("cannot read secret file {0}")]
    SecretFile(#[source] crate::fsread::FsReadError),
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
    /// A controller must send its Auth or Start within this time (a TCP agent uses at most
    /// [`TCP_HANDSHAKE_TIMEOUT`]).
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

/// How long a TCP connection may take, from its Hello, to send Auth or Start. A silent
/// connection is closed after it.
pub const TCP_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// TCP connections that may be in their handshake at once. When a new one comes and this many
/// are there, the oldest that has not yet said anything is closed to make room (none: Busy).
pub const MAX_PREAUTH: usize = 4;

/// Messages queued for the controller before anything that produces one waits.
pub const OUT_QUEUE: usize = 64;

/// Requests handled at once; the agent reads no further request while this many run or wait
/// to queue their reply.
pub const MAX_INFLIGHT: usize = 64;

/// Busy refusals being written at once; connections beyond are closed without a word.
const MAX_BUSY_REPLIES: usize = 64;

/// Longest an error reply's message may be (some echo the controller's input).
const MAX_ERROR_MESSAGE: usize = 1000;

/// How long the end of a connection waits for queued frames to be written.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

impl AgentConfig {
    /// Read a secret file (surrounding whitespace stripped; empty or blank is an error): a
    /// regular file of at most [`SECRET_FILE_LIMIT`](crate::fsread::SECRET_FILE_LIMIT) bytes (a
    /// FIFO would block the agent's start, `/dev/zero` would fill its memory).
    pub fn load_secret(path: &std::path::Path) -> Result<Vec<u8>, AgentError> {
        let raw = crate::fsread::read_regular_file(path, crate::fsread::SECRET_FILE_LIMIT)
            .map_err(AgentError::SecretFile)?;
        protocol::normalize_secret(&raw).ok_or_else(|| {
            AgentError::Config(format!(
                "secret file {} is empty or only whitespace",
                path.display()
            ))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Log forwarding to the connected controller
// ---------------------------------------------------------------------------------------------

static LOG_SINK: Mutex<Option<mpsc::Sender<Out>>> = Mutex::new(None);

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
        // Best effort: a log line is dropped when the controller is not reading.
        let _ = tx.try_send(Out::Msg(Message::Event {
            event: Event::Log {
                level,
                target: meta.target().to_string(),
                message: clip_message(&v.0, MAX_ERROR_MESSAGE),
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
    sysctls: Mutex<Vec<(sysctl::Key, String)>>,
    snapshot: tokio::sync::Mutex<Vec<IfaceSnapshot>>,
    out: mpsc::Sender<Out>,
    /// Links, routes, neighbours, namespaces and their journal (links.rs).
    links: Arc<links::Links>,
    /// IPsec states and policies added (xfrm.rs).
    xfrm: xfrm::Xfrm,
}

impl Session {
    async fn handle(self: Arc<Self>, id: u64, op: Op) {
        let name = op.name();
        let started = std::time::Instant::now();
        let result = self.dispatch(op).await.map_err(|e| {
            // Some messages quote the controller's input: keep them short.
            let message = clip_message(&e.message, MAX_ERROR_MESSAGE);
            tracing::warn!("{name} failed: {message}");
            ErrorReply::new(e.kind, message)
        });
        tracing::debug!(
            "{name}: done in {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        // Waits while the reply queue is full (back-pressure).
        let _ = self
            .out
            .send(Out::Msg(Message::Response { id, result }))
            .await;
    }

    async fn dispatch(&self, op: Op) -> Result<Reply, OpError> {
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
                let id = self.jobs.start(spec, job_finished_events(&self.out))?;
                // xdp-bench: started once its program is attached.
                self.jobs.wait_ready(id).await;
                // An iperf3 server is started once it listens (the controller then pauses
                // briefly before its clients; see recipes::context::SERVER_SETTLE).
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
            // Handled by the connection loop; answering here keeps dispatch total.
            Op::Bye => Ok(Reply::Ok),
            op @ (Op::CreateLink { .. }
            | Op::DeleteLink { .. }
            | Op::Enslave { .. }
            | Op::Release { .. }
            | Op::BridgeVlanAdd { .. }
            | Op::BridgeVlanDel { .. }
            | Op::AddRoute { .. }
            | Op::DelRoute { .. }
            | Op::AddNeighbour { .. }
            | Op::DelNeighbour { .. }
            | Op::DelAddress { .. }
            | Op::AddL2tpTunnel { .. }
            | Op::AddL2tpSession { .. }
            | Op::CreateNetns { .. }
            | Op::DeleteNetns { .. }
            | Op::MoveLink { .. }
            | Op::InNetns { .. }) => self.dispatch_links(op).await,
            op @ (Op::GetPause { .. }
            | Op::SetPause { .. }
            | Op::GetCoalesce { .. }
            | Op::SetCoalesce { .. }
            | Op::GetChannels { .. }
            | Op::SetChannels { .. }
            | Op::GetRss { .. }
            | Op::SetRss { .. }
            | Op::GetRxFlowHash { .. }
            | Op::SetRxFlowHash { .. }
            | Op::GetIrqs { .. }
            | Op::SetIrqAffinity { .. }
            | Op::GetCpus
            | Op::DropCaches { .. }
            | Op::SetTurboBoost { .. }
            | Op::DisableIdleStates { .. }
            | Op::RestoreIrqAffinity { .. }
            | Op::EnableIdleStates { .. }) => self.dispatch_tunables(None, op).await,
            Op::XfrmAdd { states, policies } => {
                self.xfrm.add(states, policies).await?;
                Ok(Reply::Ok)
            }
            Op::XfrmDel { states, policies } => {
                self.xfrm.delete(states, policies).await?;
                Ok(Reply::Ok)
            }
            Op::MacsecConfigure { ifname, sas } => {
                xfrm::macsec_configure(&ifname, &sas).await?;
                Ok(Reply::Ok)
            }
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

    /// Write an allowed sysctl (see [`sysctl`]); returns the old value ("" for a write-only
    /// key, which is not restored either).
    async fn sysctl_write(&self, path: &str, value: &str) -> Result<String, OpError> {
        let key = sysctl::Key::parse(path)?;
        key.check_value(value)?;
        let value = value.to_string();
        let k = key.clone();
        let old = tokio::task::spawn_blocking(move || {
            let root = Path::new(sysctl::SYSCTL_ROOT);
            let old = if k.write_only {
                String::new()
            } else {
                sysctl::read(root, &k)?
            };
            sysctl::write(root, &k, &value)?;
            Ok::<_, OpError>(old)
        })
        .await
        .map_err(|e| OpError::new(ErrorKind::Internal, format!("sysctl task: {e}")))??;
        if !key.write_only {
            let mut s = lock(&self.sysctls);
            if !s.iter().any(|(q, _)| *q == key) {
                s.push((key.clone(), old.clone()));
            }
        }
        tracing::info!("sysctl {key} written (was {old:?})");
        Ok(old)
    }

    async fn restore_sysctls(&self, errors: &mut Vec<String>) {
        let saved: Vec<(sysctl::Key, String)> = std::mem::take(&mut *lock(&self.sysctls));
        let res = tokio::task::spawn_blocking(move || {
            let root = Path::new(sysctl::SYSCTL_ROOT);
            let mut errs = Vec::new();
            for (k, v) in saved.into_iter().rev() {
                match sysctl::write(root, &k, &v) {
                    Ok(()) => tracing::info!("restored sysctl {k} = {v}"),
                    Err(e) => errs.push(format!("restoring {k}: {}", e.message)),
                }
            }
            errs
        })
        .await;
        match res {
            Ok(errs) => errors.extend(errs),
            Err(e) => errors.push(format!("sysctl restore task: {e}")),
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
            // By kernel feature name, read in-process (see ethtool_ioctl).
            let offloads = match ethtool_ioctl::features(name) {
                Ok(o) => Some(o),
                Err(e) => {
                    tracing::warn!("{name}: offloads not snapshotted: {e}");
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
            match ethtool_ioctl::features(&s.name) {
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
                Err(e) => err(OpError::new(
                    ErrorKind::Failed,
                    format!("reading its features: {e}"),
                )),
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

    /// Kill jobs, restore the sysctls, undo the link journal, restore the interface snapshot.
    /// Continues past errors and reports them all.
    async fn end_recipe(&self) -> Result<(), OpError> {
        self.jobs.kill_all().await;
        let mut errors = Vec::new();
        // Sysctls first: one of a link the recipe created must be restored before the link
        // goes; the snapshot last, after ports were released and moved links came back.
        self.restore_sysctls(&mut errors).await;
        // IPsec before the links: its policies name the addresses of the links.
        self.xfrm.undo_all(&mut errors).await;
        self.undo_links(&mut errors).await;
        let snap: Vec<IfaceSnapshot> = std::mem::take(&mut *self.snapshot.lock().await);
        for s in snap.iter().rev() {
            self.restore_iface(s, &mut errors).await;
        }
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

/// The callback of a job: its result goes to the controller as a `JobFinished` event, queued
/// from its own task (a full reply queue must not hold up the job's bookkeeping; the task ends
/// when the connection's writer is gone).
fn job_finished_events(
    out: &mpsc::Sender<Out>,
) -> Arc<dyn Fn(crate::protocol::JobResult) + Send + Sync> {
    let out = out.clone();
    Arc::new(move |result| {
        let out = out.clone();
        tokio::spawn(async move {
            let _ = out
                .send(Out::Msg(Message::Event {
                    event: Event::JobFinished { result },
                }))
                .await;
        });
    })
}

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

/// How long a wrong secret costs. The connection that proved it gets its answer after this
/// delay, and the agent checks no other secret meanwhile (see [`GuessGate`]): online guessing
/// of a weak pool secret runs at about one attempt per second per agent, on any number of
/// connections.
pub const WRONG_SECRET_DELAY: Duration = Duration::from_secs(1);

/// Serialises the secret checks of all connections of an agent. After a wrong secret the next
/// check waits until [`WRONG_SECRET_DELAY`] has passed; checks queue in arrival order.
struct GuessGate(tokio::sync::Mutex<tokio::time::Instant>);

impl GuessGate {
    fn new() -> GuessGate {
        GuessGate(tokio::sync::Mutex::new(tokio::time::Instant::now()))
    }

    /// Run `verify` when the gate is open; close it for a while when it fails.
    async fn check(&self, verify: impl FnOnce() -> bool) -> bool {
        let mut next = self.0.lock().await;
        tokio::time::sleep_until(*next).await;
        let ok = verify();
        if !ok {
            *next = tokio::time::Instant::now() + WRONG_SECRET_DELAY;
        }
        ok
    }
}

/// A TCP connection still in its handshake.
struct PreAuth {
    id: u64,
    /// Nothing received yet after Hello.
    silent: bool,
    /// Fired to close it when room is needed.
    evict: Arc<Notify>,
}

#[derive(Default)]
struct Slots {
    /// The connection (id, peer) holding the session, once its handshake succeeded.
    session: Option<(u64, SocketAddr)>,
    /// Connections in their handshake, oldest first.
    preauth: Vec<PreAuth>,
}

/// Who may talk to a TCP agent.
struct Gatekeeper {
    slots: Mutex<Slots>,
    gate: Arc<GuessGate>,
    busy_replies: AtomicUsize,
}

enum Admission {
    Admitted(Arc<Notify>),
    Busy(String),
}

fn busy_with(peer: SocketAddr) -> String {
    format!("agent is busy serving controller {peer}; try again later")
}

impl Gatekeeper {
    fn new() -> Gatekeeper {
        Gatekeeper {
            slots: Mutex::new(Slots::default()),
            gate: Arc::new(GuessGate::new()),
            busy_replies: AtomicUsize::new(0),
        }
    }

    /// Let a new connection start its handshake, or say why not.
    fn admit(&self, id: u64) -> Admission {
        let mut s = lock(&self.slots);
        if let Some((_, peer)) = s.session {
            return Admission::Busy(busy_with(peer));
        }
        if s.preauth.len() >= MAX_PREAUTH {
            // Make room: close the oldest connection that has not said anything yet.
            match s.preauth.iter().position(|p| p.silent) {
                Some(i) => {
                    let old = s.preauth.remove(i);
                    old.evict.notify_one();
                }
                None => {
                    return Admission::Busy(format!(
                        "agent is busy with {MAX_PREAUTH} handshakes; try again later"
                    ))
                }
            }
        }
        let evict = Arc::new(Notify::new());
        s.preauth.push(PreAuth {
            id,
            silent: true,
            evict: evict.clone(),
        });
        Admission::Admitted(evict)
    }

    /// The connection sent its first frame: it is no longer the first to be closed for room.
    fn spoke(&self, id: u64) {
        if let Some(p) = lock(&self.slots).preauth.iter_mut().find(|p| p.id == id) {
            p.silent = false;
        }
    }

    /// Take the session slot after a successful handshake; the holder's address when another
    /// controller was first.
    fn claim(&self, id: u64, peer: SocketAddr) -> Result<(), SocketAddr> {
        let mut s = lock(&self.slots);
        s.preauth.retain(|p| p.id != id);
        match s.session {
            Some((_, holder)) => Err(holder),
            None => {
                s.session = Some((id, peer));
                Ok(())
            }
        }
    }

    /// The connection is gone: out of the handshake list, and the session slot is free again
    /// if it held it.
    fn release(&self, id: u64) {
        let mut s = lock(&self.slots);
        s.preauth.retain(|p| p.id != id);
        if s.session.is_some_and(|(i, _)| i == id) {
            s.session = None;
        }
    }
}

/// A TCP connection's place at its agent.
struct TcpConn {
    gk: Arc<Gatekeeper>,
    id: u64,
    addr: SocketAddr,
    evict: Arc<Notify>,
}

/// What one connection needs besides its streams.
struct Conn {
    peer: String,
    handshake_timeout: Duration,
    gate: Arc<GuessGate>,
    tcp: Option<TcpConn>,
}

impl Conn {
    /// Take the session slot (TCP); Busy when another controller authenticated first.
    fn claim(&self) -> Result<(), HandshakeFail> {
        match &self.tcp {
            Some(t) => {
                t.gk.claim(t.id, t.addr)
                    .map_err(|holder| ErrorReply::new(ErrorKind::Busy, busy_with(holder)).into())
            }
            None => Ok(()),
        }
    }
}

async fn handshake<R: AsyncRead + Unpin>(
    reader: &mut R,
    out: &mpsc::Sender<Out>,
    cfg: &AgentConfig,
    nonce: &[u8; protocol::NONCE_LEN],
    conn: &Conn,
) -> Result<(), HandshakeFail> {
    let auth_fail = |m: &str| ErrorReply::new(ErrorKind::AuthFailed, m);
    let evicted = async {
        match &conn.tcp {
            Some(t) => t.evict.notified().await,
            None => std::future::pending().await,
        }
    };
    let read = tokio::time::timeout(
        conn.handshake_timeout,
        protocol::read_message_limited(reader, protocol::MAX_HANDSHAKE_FRAME),
    );
    // A handshake that stalls says so where the agent's side can be read (a VM's console):
    // it tells a controller's message that never arrived from one the agent never answered.
    let peer = conn.peer.clone();
    let stalled = tokio::spawn(async move {
        tokio::time::sleep(HANDSHAKE_STALL_NOTE).await;
        tracing::info!(
            "controller {peer}: no Auth or Start within {} s of the Hello",
            HANDSHAKE_STALL_NOTE.as_secs()
        );
    });
    let _stop_note = AbortOnDrop(stalled);
    let first = tokio::select! {
        r = read => match r {
            Ok(r) => r,
            Err(_) => {
                return Err(ErrorReply::new(ErrorKind::Protocol, "handshake timed out").into())
            }
        },
        () = evicted => {
            return Err(ErrorReply::new(
                ErrorKind::Busy,
                "handshake cut short: too many unauthenticated connections; try again",
            )
            .into())
        }
    };
    if let Some(t) = &conn.tcp {
        t.gk.spoke(t.id);
    }
    let msg = match first {
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
            conn.claim()
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
            let right = conn
                .gate
                .check(|| protocol::verify_client_mac(secret, nonce, &cn, &mac))
                .await;
            if !right {
                tokio::time::sleep(WRONG_SECRET_DELAY).await;
                return Err(auth_fail("wrong secret").into());
            }
            conn.claim()?;
            let mac = hex::encode(protocol::agent_mac(secret, &cn, nonce));
            let (agent_version, kernel_release, hostname) = identity();
            let _ = out
                .send(Out::Msg(Message::AuthOk {
                    mac,
                    agent_version,
                    kernel_release,
                    hostname,
                }))
                .await;
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
async fn writer_task<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Out>) {
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
        drop(msg);
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

/// Queue a message, waiting at most `limit` for room; false when the controller has not read
/// for that long (or the writer is gone).
async fn emit(out: &mpsc::Sender<Out>, msg: Message, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, out.send(Out::Msg(msg))).await,
        Ok(Ok(()))
    )
}

/// Let the writer flush what is queued and close, within [`CLOSE_GRACE`]; then drop it (and
/// with it the stream and anything still queued) whatever state it is in.
async fn close_writer(out: mpsc::Sender<Out>, mut wtask: tokio::task::JoinHandle<()>) {
    let done = tokio::time::timeout(CLOSE_GRACE, async {
        let _ = out.send(Out::Close).await;
        drop(out);
        let _ = (&mut wtask).await;
    })
    .await;
    if done.is_err() {
        wtask.abort();
        let _ = wtask.await;
    }
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

/// Keep the first `max` characters of a message that may echo the peer's input (an unknown op
/// name may be megabytes).
fn clip_message(m: &str, max: usize) -> String {
    crate::text::clip(m, max)
}

/// Give the memory a finished session freed back to the system: glibc keeps freed heap pages
/// of its arenas otherwise, and a flood's worth of buffers would stay resident.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Serve one controller on a reader/writer pair until it says Bye or goes away. Never fails
/// because an operation failed; a malformed frame ends only this connection.
pub async fn serve_connection<R, W>(reader: R, writer: W, cfg: Arc<AgentConfig>, peer: &str)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let conn = Conn {
        peer: peer.to_string(),
        handshake_timeout: cfg.handshake_timeout,
        gate: Arc::new(GuessGate::new()),
        tcp: None,
    };
    serve(reader, writer, cfg, conn).await;
    release_freed_memory();
}

async fn serve<R, W>(mut reader: R, writer: W, cfg: Arc<AgentConfig>, conn: Conn)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer.as_str();
    let (out, rx) = mpsc::channel(OUT_QUEUE);
    let wtask = tokio::spawn(writer_task(writer, rx));
    let nonce = protocol::new_nonce();
    let _ = out
        .send(Out::Msg(Message::Hello(hello(&cfg, &nonce))))
        .await;

    if let Err(f) = handshake(&mut reader, &out, &cfg, &nonce, &conn).await {
        tracing::warn!("controller {peer}: handshake failed: {}", f.reply.message);
        if f.tell_peer {
            let _ = emit(&out, Message::Error(f.reply), CLOSE_GRACE).await;
        }
        close_writer(out, wtask).await;
        return;
    }

    let session = match net::Netlink::new() {
        Ok(nl) => Arc::new(Session {
            cfg: cfg.clone(),
            nl,
            jobs: jobs::Jobs::default(),
            sysctls: Mutex::new(Vec::new()),
            snapshot: tokio::sync::Mutex::new(Vec::new()),
            out: out.clone(),
            links: Arc::default(),
            xfrm: xfrm::Xfrm::default(),
        }),
        Err(e) => {
            tracing::error!("{}", e.message);
            let _ = emit(&out, Message::Error(e.into()), CLOSE_GRACE).await;
            close_writer(out, wtask).await;
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

    let not_reading = || {
        tracing::warn!(
            "controller {peer} has not read its replies for {} s; closing",
            cfg.idle_timeout.as_secs()
        )
    };
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT));
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
                    let m = Message::Error(ErrorReply::new(ErrorKind::Protocol, e.to_string()));
                    let _ = emit(&out, m, CLOSE_GRACE).await;
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
                    let m = clip_message(&format!("malformed request: {e}"), 300);
                    tracing::warn!("controller {peer}: request {id}: {m}");
                    let reply = Message::Response {
                        id,
                        result: Err(ErrorReply::new(ErrorKind::BadRequest, m)),
                    };
                    if !emit(&out, reply, cfg.idle_timeout).await {
                        not_reading();
                        break;
                    }
                    continue;
                }
                let e = protocol::FrameError::Json(e);
                tracing::warn!("controller {peer}: {e}; closing the connection");
                let m = Message::Error(ErrorReply::new(
                    ErrorKind::Protocol,
                    clip_message(&e.to_string(), 300),
                ));
                let _ = emit(&out, m, CLOSE_GRACE).await;
                break;
            }
        };
        drop(frame);
        match msg {
            Message::Request { id, op: Op::Bye } => {
                tracing::info!("controller {peer} said bye");
                tasks.abort_all();
                if let Err(e) = session.end_recipe().await {
                    tracing::warn!("{}", e.message);
                }
                let bye = Message::Response {
                    id,
                    result: Ok(Reply::Ok),
                };
                let _ = emit(&out, bye, CLOSE_GRACE).await;
                break;
            }
            Message::Request { id, op } => {
                // Back-pressure: with MAX_INFLIGHT requests running or waiting to queue their
                // reply, read nothing more until one is done.
                let permit =
                    match tokio::time::timeout(cfg.idle_timeout, inflight.clone().acquire_owned())
                        .await
                    {
                        Ok(Ok(p)) => p,
                        _ => {
                            not_reading();
                            break;
                        }
                    };
                let s = session.clone();
                tasks.spawn(async move {
                    s.handle(id, op).await;
                    drop(permit);
                });
            }
            Message::Ping { seq } => {
                if !emit(&out, Message::Pong { seq }, cfg.idle_timeout).await {
                    not_reading();
                    break;
                }
            }
            Message::Pong { .. } => {}
            other => {
                let m = format!("unexpected {} message", message_name(&other));
                tracing::warn!("controller {peer}: {m}; closing the connection");
                let _ = emit(
                    &out,
                    Message::Error(ErrorReply::new(ErrorKind::Protocol, m)),
                    CLOSE_GRACE,
                )
                .await;
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
    drop(session);
    close_writer(out, wtask).await;
}

/// After this long without the controller's Auth or Start the agent logs it (once).
const HANDSHAKE_STALL_NOTE: Duration = Duration::from_secs(10);

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a stdio agent waits for its controller's Auth or Start after its Hello. Only the
/// controller that started the agent can reach it, and that controller may still be starting
/// the run's other agents: VMs booting under TCG on a busy machine take tens of seconds each,
/// and 30 s here made a VM agent give up on a controller that was still booting the other VM
/// ("handshake timed out" on the guest's console; seen in about 1 of 15 VM runs). A controller
/// that dies closes the channel, which ends the agent anyway.
pub const STDIO_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(600);

/// The configuration a stdio agent serves with: `cfg` with at least
/// [`STDIO_HANDSHAKE_TIMEOUT`] for the handshake.
pub fn stdio_config(mut cfg: AgentConfig) -> AgentConfig {
    cfg.handshake_timeout = cfg.handshake_timeout.max(STDIO_HANDSHAKE_TIMEOUT);
    cfg
}

/// Serve one controller on stdin/stdout, then return.
pub async fn run_stdio(cfg: AgentConfig) -> Result<(), AgentError> {
    serve_connection(
        stdin_relay::stdin()?,
        tokio::io::stdout(),
        Arc::new(stdio_config(cfg)),
        "stdio",
    )
    .await;
    Ok(())
}

/// Refuse a TCP connection with one Busy frame (or, when many refusals are being written
/// already, with nothing).
fn refuse(stream: tokio::net::TcpStream, peer: SocketAddr, reason: String, gk: &Arc<Gatekeeper>) {
    if gk.busy_replies.fetch_add(1, Ordering::SeqCst) >= MAX_BUSY_REPLIES {
        gk.busy_replies.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    tracing::warn!("refusing controller {peer}: {reason}");
    let gk = gk.clone();
    tokio::spawn(async move {
        let mut stream = stream;
        let msg = Message::Error(ErrorReply::new(ErrorKind::Busy, reason));
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            let _ = protocol::write_message(&mut stream, &msg).await;
            let _ = stream.shutdown().await;
        })
        .await;
        drop(stream);
        gk.busy_replies.fetch_sub(1, Ordering::SeqCst);
    });
}

/// Listen on TCP and serve one controller at a time; others get a Busy error. The session
/// slot goes to the first connection that completes its handshake (see [`MAX_PREAUTH`]).
pub async fn run_tcp(addr: SocketAddr, cfg: AgentConfig) -> Result<(), AgentError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("listening on {}", listener.local_addr()?);
    let mut cfg = cfg;
    cfg.handshake_timeout = cfg.handshake_timeout.min(TCP_HANDSHAKE_TIMEOUT);
    let cfg = Arc::new(cfg);
    let gk = Arc::new(Gatekeeper::new());
    let mut next_id: u64 = 0;
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
        next_id += 1;
        let id = next_id;
        let evict = match gk.admit(id) {
            Admission::Admitted(evict) => evict,
            Admission::Busy(reason) => {
                refuse(stream, peer, reason, &gk);
                continue;
            }
        };
        let (r, w) = stream.into_split();
        let conn = Conn {
            peer: peer.to_string(),
            handshake_timeout: cfg.handshake_timeout,
            gate: gk.gate.clone(),
            tcp: Some(TcpConn {
                gk: gk.clone(),
                id,
                addr: peer,
                evict,
            }),
        };
        let cfg = cfg.clone();
        let gk = gk.clone();
        tokio::spawn(async move {
            serve(r, w, cfg, conn).await;
            gk.release(id);
            release_freed_memory();
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stdio_agent_waits_for_its_controller_as_long_as_a_run_may_start_agents() {
        let cfg = stdio_config(AgentConfig::default());
        assert!(cfg.handshake_timeout >= STDIO_HANDSHAKE_TIMEOUT);
        // TCP agents keep their short limit (run_tcp).
        assert!(AgentConfig::default().handshake_timeout < STDIO_HANDSHAKE_TIMEOUT);
    }

    use super::*;

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
        assert_eq!(clip_message(&"x".repeat(1000), 300).chars().count(), 301);
    }

    #[test]
    fn version_check_message() {
        assert!(version_check(PROTOCOL_VERSION).is_ok());
        let e = version_check(PROTOCOL_VERSION + 1).err();
        assert_eq!(e.as_ref().map(|e| e.kind), Some(ErrorKind::VersionMismatch));
        assert!(e
            .map(|e| e.message)
            .unwrap_or_default()
            .contains("agent speaks 2, controller speaks 3"));
    }
}
