//! Controller-side agent client.
//!
//! [`AgentClient::connect`] runs the handshake on a [`Transport`], then spawns a reader task
//! (responses, events, pongs), a writer task and a keepalive task. Every call has a deadline;
//! when the agent stops answering keepalives or the transport closes, every pending and future
//! call fails promptly with [`SessionError::AgentLost`].

use crate::protocol::{
    self, ErrorKind, ErrorReply, Event, HelloInfo, InterfaceInfo, JobResult, JobSpec, LogLevel,
    Message, Op, Reply, PROTOCOL_VERSION,
};
use crate::provision::Transport;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Client timing.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline of each request (waits add their own timeout on top).
    pub request_timeout: Duration,
    /// How often a keepalive ping is sent.
    pub keepalive_interval: Duration,
    /// The agent is lost when nothing arrived from it for this long.
    pub keepalive_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(2),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// Errors of the agent client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("agent {host} lost: {reason}")]
    AgentLost { host: String, reason: String },
    #[error("authentication with agent {host} failed: {reason}")]
    AuthFailed { host: String, reason: String },
    #[error("agent {host} speaks protocol version {agent}, this controller speaks {ours}")]
    VersionMismatch { host: String, agent: u32, ours: u32 },
    #[error("agent {host}: handshake failed: {reason}")]
    Handshake { host: String, reason: String },
    #[error("agent {host} refused the connection: {reason}")]
    Busy { host: String, reason: String },
    #[error("agent {host}: {op} failed: {message}")]
    Remote {
        host: String,
        op: &'static str,
        kind: ErrorKind,
        message: String,
    },
    #[error("agent {host}: job {job_id} still running after {} s", .after.as_secs_f64())]
    JobTimeout {
        host: String,
        job_id: u64,
        after: Duration,
    },
    #[error("agent {host}: {op} got no reply within {} s", .after.as_secs_f64())]
    Timeout {
        host: String,
        op: &'static str,
        after: Duration,
    },
    #[error("agent {host}: unexpected reply to {op}")]
    UnexpectedReply { host: String, op: &'static str },
}

/// State shared with the background tasks.
struct Shared {
    host: String,
    state: Mutex<State>,
    out: mpsc::UnboundedSender<Message>,
    next_id: AtomicU64,
    last_rx: Mutex<Instant>,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, oneshot::Sender<Result<Reply, ErrorReply>>>,
    lost: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Mark the agent lost (first reason wins) and fail every pending call.
    fn mark_lost(&self, reason: String) {
        let mut st = lock(&self.state);
        if st.lost.is_none() {
            if reason.contains("(bye)") {
                tracing::debug!(host = %self.host, "agent {}: {reason}", self.host);
            } else {
                tracing::warn!(host = %self.host, "agent {} lost: {reason}", self.host);
            }
            st.lost = Some(reason);
        }
        // Dropping the senders wakes every waiter, which then reads `lost`.
        st.pending.clear();
    }

    fn lost_error(&self) -> SessionError {
        let reason = lock(&self.state)
            .lost
            .clone()
            .unwrap_or_else(|| "connection closed".into());
        SessionError::AgentLost {
            host: self.host.clone(),
            reason,
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    hello: HelloInfo,
    opts: ClientOptions,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Handle to one connected agent; cheap to clone. Dropping the last clone closes the
/// transport (the agent then cleans up).
#[derive(Clone)]
pub struct AgentClient {
    inner: Arc<Inner>,
    /// The agent namespace every request of this handle runs in ([`AgentClient::in_netns`]).
    netns: Option<Arc<str>>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("host", &self.inner.shared.host)
            .finish()
    }
}

type Reader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
type Writer = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// Where a handshake waits, for the reason of a timeout.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Hello,
    AuthOk,
}

async fn handshake(
    host: &str,
    reader: &mut Reader,
    writer: &mut Writer,
    secret: Option<&[u8]>,
    stage: &std::cell::Cell<Stage>,
) -> Result<HelloInfo, SessionError> {
    let hs = |reason: String| SessionError::Handshake {
        host: host.to_string(),
        reason,
    };
    let auth = |reason: &str| SessionError::AuthFailed {
        host: host.to_string(),
        reason: reason.to_string(),
    };
    let first = protocol::read_message_limited(reader, protocol::MAX_HANDSHAKE_FRAME)
        .await
        .map_err(|e| hs(e.to_string()))?
        .ok_or_else(|| hs("connection closed before the agent said hello".into()))?;
    let hello = match first {
        Message::Hello(h) => h,
        Message::Error(e) if e.kind == ErrorKind::Busy => {
            return Err(SessionError::Busy {
                host: host.to_string(),
                reason: e.message,
            })
        }
        Message::Error(e) => return Err(hs(e.message)),
        _ => return Err(hs("the agent did not start with Hello".into())),
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        let _ = protocol::write_message(
            writer,
            &Message::Error(ErrorReply::new(
                ErrorKind::VersionMismatch,
                format!(
                    "protocol version mismatch: controller speaks {PROTOCOL_VERSION}, agent speaks {}",
                    hello.protocol_version
                ),
            )),
        )
        .await;
        return Err(SessionError::VersionMismatch {
            host: host.to_string(),
            agent: hello.protocol_version,
            ours: PROTOCOL_VERSION,
        });
    }
    match (hello.auth_required, secret) {
        (false, None) => {
            let m = Message::Start {
                protocol_version: PROTOCOL_VERSION,
            };
            protocol::write_message(writer, &m)
                .await
                .map_err(|e| hs(e.to_string()))?;
            Ok(hello)
        }
        (false, Some(_)) => {
            let _ = protocol::write_message(
                writer,
                &Message::Error(ErrorReply::new(
                    ErrorKind::AuthFailed,
                    "controller requires authentication but the agent has no secret",
                )),
            )
            .await;
            Err(auth("the agent does not require authentication but a secret is configured (refusing an unauthenticated agent)"))
        }
        (true, None) => {
            let _ = protocol::write_message(
                writer,
                &Message::Error(ErrorReply::new(
                    ErrorKind::AuthFailed,
                    "controller has no secret for this agent",
                )),
            )
            .await;
            Err(auth("the agent requires a secret and none is configured"))
        }
        (true, Some(secret)) => {
            let agent_nonce = protocol::parse_nonce(&hello.nonce)
                .ok_or_else(|| hs("malformed agent nonce".into()))?;
            let client_nonce = protocol::new_nonce();
            let mac = protocol::client_mac(secret, &agent_nonce, &client_nonce);
            protocol::write_message(
                writer,
                &Message::Auth {
                    protocol_version: PROTOCOL_VERSION,
                    client_nonce: hex::encode(client_nonce),
                    mac: hex::encode(mac),
                },
            )
            .await
            .map_err(|e| hs(e.to_string()))?;
            stage.set(Stage::AuthOk);
            match protocol::read_message_limited(reader, protocol::MAX_HANDSHAKE_FRAME).await {
                Ok(Some(Message::AuthOk {
                    mac,
                    agent_version,
                    kernel_release,
                    hostname,
                })) => {
                    if protocol::verify_agent_mac(secret, &client_nonce, &agent_nonce, &mac) {
                        // The agent's identity comes after the proof, not in its Hello.
                        let mut hello = hello;
                        for (field, value) in [
                            (&mut hello.agent_version, agent_version),
                            (&mut hello.kernel_release, kernel_release),
                            (&mut hello.hostname, hostname),
                        ] {
                            if !value.is_empty() {
                                *field = value;
                            }
                        }
                        Ok(hello)
                    } else {
                        Err(auth("the agent did not prove the secret"))
                    }
                }
                Ok(Some(Message::Error(e))) if e.kind == ErrorKind::AuthFailed => {
                    Err(auth(&e.message))
                }
                // Another controller completed its handshake first.
                Ok(Some(Message::Error(e))) if e.kind == ErrorKind::Busy => {
                    Err(SessionError::Busy {
                        host: host.to_string(),
                        reason: e.message,
                    })
                }
                Ok(Some(Message::Error(e))) => Err(hs(e.message)),
                Ok(Some(_)) => Err(hs("unexpected message during authentication".into())),
                Ok(None) => Err(auth("the agent closed the connection")),
                Err(e) => Err(hs(e.to_string())),
            }
        }
    }
}

fn log_event(host: &str, level: LogLevel, target: &str, message: &str) {
    match level {
        LogLevel::Error => tracing::error!(host = %host, agent_target = %target, "{message}"),
        LogLevel::Warn => tracing::warn!(host = %host, agent_target = %target, "{message}"),
        LogLevel::Info => tracing::debug!(host = %host, agent_target = %target, "{message}"),
        LogLevel::Debug => tracing::debug!(host = %host, agent_target = %target, "{message}"),
        LogLevel::Trace => tracing::trace!(host = %host, agent_target = %target, "{message}"),
    }
}

async fn reader_task(shared: Arc<Shared>, mut reader: Reader) {
    loop {
        let msg = match protocol::read_message(&mut reader).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                shared.mark_lost("connection closed by the agent".into());
                return;
            }
            Err(e) => {
                shared.mark_lost(format!("bad frame from the agent: {e}"));
                return;
            }
        };
        *lock(&shared.last_rx) = Instant::now();
        match msg {
            Message::Response { id, result } => {
                let tx = lock(&shared.state).pending.remove(&id);
                match tx {
                    Some(tx) => {
                        let _ = tx.send(result);
                    }
                    None => tracing::debug!(host = %shared.host, "late reply to request {id}"),
                }
            }
            Message::Event {
                event:
                    Event::Log {
                        level,
                        target,
                        message,
                    },
            } => log_event(&shared.host, level, &target, &message),
            Message::Event {
                event: Event::JobFinished { result },
            } => tracing::debug!(
                host = %shared.host,
                "job {} finished (passed: {})",
                result.job_id,
                result.passed
            ),
            Message::Ping { seq } => {
                let _ = shared.out.send(Message::Pong { seq });
            }
            Message::Pong { .. } => {}
            Message::Error(e) => {
                shared.mark_lost(format!("agent reported: {}", e.message));
                return;
            }
            other => {
                shared.mark_lost(format!(
                    "unexpected message from the agent: {}",
                    serde_json::to_string(&other)
                        .map(|s| crate::text::clip(&s, 80))
                        .unwrap_or_default()
                ));
                return;
            }
        }
    }
}

async fn writer_task(
    shared: Arc<Shared>,
    mut writer: Writer,
    mut rx: mpsc::UnboundedReceiver<Message>,
) {
    while let Some(m) = rx.recv().await {
        if let Err(e) = protocol::write_message(&mut writer, &m).await {
            shared.mark_lost(format!("write failed: {e}"));
            break;
        }
    }
    let _ = writer.shutdown().await;
}

async fn keepalive_task(shared: Arc<Shared>, opts: ClientOptions) {
    let mut seq = 0u64;
    loop {
        tokio::time::sleep(opts.keepalive_interval.min(opts.keepalive_timeout)).await;
        if lock(&shared.state).lost.is_some() {
            return;
        }
        let silent = lock(&shared.last_rx).elapsed();
        if silent >= opts.keepalive_timeout {
            shared.mark_lost(format!(
                "no answer to keepalive for {:.1} s",
                silent.as_secs_f64()
            ));
            return;
        }
        seq += 1;
        if shared.out.send(Message::Ping { seq }).is_err() {
            shared.mark_lost("writer stopped".into());
            return;
        }
    }
}

impl AgentClient {
    /// Handshake (bounded by `opts.request_timeout`) and start the background tasks.
    pub async fn connect(
        host_id: &str,
        transport: Transport,
        secret: Option<&[u8]>,
        opts: ClientOptions,
    ) -> Result<AgentClient, SessionError> {
        let Transport {
            mut reader,
            mut writer,
        } = transport;
        let stage = std::cell::Cell::new(Stage::Hello);
        let hello = tokio::time::timeout(
            opts.request_timeout,
            handshake(host_id, &mut reader, &mut writer, secret, &stage),
        )
        .await
        .map_err(|_| SessionError::Handshake {
            host: host_id.to_string(),
            reason: format!(
                "{} within {} s",
                match stage.get() {
                    Stage::Hello => "no Hello from the agent",
                    Stage::AuthOk => "the agent said Hello but did not answer the authentication",
                },
                opts.request_timeout.as_secs_f64()
            ),
        })??;
        tracing::info!(
            host = %host_id,
            "connected to agent {host_id} ({}, kernel {}, agent {})",
            hello.hostname,
            hello.kernel_release,
            hello.agent_version
        );
        let (out, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            host: host_id.to_string(),
            state: Mutex::new(State::default()),
            out,
            next_id: AtomicU64::new(1),
            last_rx: Mutex::new(Instant::now()),
        });
        let tasks = vec![
            tokio::spawn(reader_task(shared.clone(), reader)).abort_handle(),
            tokio::spawn(writer_task(shared.clone(), writer, rx)).abort_handle(),
            tokio::spawn(keepalive_task(shared.clone(), opts.clone())).abort_handle(),
        ];
        Ok(AgentClient {
            inner: Arc::new(Inner {
                shared,
                hello,
                opts,
                tasks,
            }),
            netns: None,
        })
    }

    /// What the agent said about itself.
    pub fn hello(&self) -> &HelloInfo {
        &self.inner.hello
    }

    /// Requirement host id of this agent.
    pub fn host(&self) -> &str {
        &self.inner.shared.host
    }

    /// Send a request and wait for its reply, at most `deadline`.
    pub async fn call(&self, op: Op, deadline: Duration) -> Result<Reply, SessionError> {
        let shared = &self.inner.shared;
        let name = op.name();
        let op = match &self.netns {
            Some(n) => Op::InNetns {
                netns: n.to_string(),
                inner: Box::new(op),
            },
            None => op,
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let sent = std::time::Instant::now();
        {
            let mut st = lock(&shared.state);
            if st.lost.is_some() {
                drop(st);
                return Err(shared.lost_error());
            }
            st.pending.insert(id, tx);
        }
        if shared.out.send(Message::Request { id, op }).is_err() {
            shared.mark_lost("writer stopped".into());
            return Err(shared.lost_error());
        }
        let reply = tokio::time::timeout(deadline, rx).await;
        tracing::trace!(
            host = %shared.host,
            "{name}: reply after {:.1} ms",
            sent.elapsed().as_secs_f64() * 1e3
        );
        match reply {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(e))) => Err(SessionError::Remote {
                host: match &self.netns {
                    Some(n) => format!("{}.{n}", shared.host),
                    None => shared.host.clone(),
                },
                op: name,
                kind: e.kind,
                message: e.message,
            }),
            Ok(Err(_)) => Err(shared.lost_error()),
            Err(_) => {
                lock(&shared.state).pending.remove(&id);
                Err(SessionError::Timeout {
                    host: shared.host.clone(),
                    op: name,
                    after: deadline,
                })
            }
        }
    }

    async fn call_default(&self, op: Op) -> Result<Reply, SessionError> {
        self.call(op, self.inner.opts.request_timeout).await
    }

    fn unexpected(&self, op: &'static str) -> SessionError {
        SessionError::UnexpectedReply {
            host: self.inner.shared.host.clone(),
            op,
        }
    }

    async fn call_ok(&self, op: Op) -> Result<(), SessionError> {
        let name = op.name();
        match self.call_default(op).await? {
            Reply::Ok => Ok(()),
            _ => Err(self.unexpected(name)),
        }
    }

    fn job_result(&self, r: Reply, op: &'static str) -> Result<JobResult, SessionError> {
        match r {
            Reply::JobResult(j) => Ok(j),
            _ => Err(self.unexpected(op)),
        }
    }

    pub async fn list_interfaces(&self) -> Result<Vec<InterfaceInfo>, SessionError> {
        match self.call_default(Op::ListInterfaces).await? {
            Reply::Interfaces(v) => Ok(v),
            _ => Err(self.unexpected("ListInterfaces")),
        }
    }

    pub async fn set_link(&self, ifname: &str, up: bool) -> Result<(), SessionError> {
        self.call_ok(Op::SetLink {
            ifname: ifname.into(),
            up,
        })
        .await
    }

    pub async fn set_mtu(&self, ifname: &str, mtu: u32) -> Result<(), SessionError> {
        self.call_ok(Op::SetMtu {
            ifname: ifname.into(),
            mtu,
        })
        .await
    }

    pub async fn add_address(&self, ifname: &str, addr: &str) -> Result<(), SessionError> {
        self.call_ok(Op::AddAddress {
            ifname: ifname.into(),
            addr: addr.into(),
        })
        .await
    }

    pub async fn flush_addresses(&self, ifname: &str) -> Result<(), SessionError> {
        self.call_ok(Op::FlushAddresses {
            ifname: ifname.into(),
        })
        .await
    }

    /// Features as `ethtool -k` names them (long names; see [`protocol::offload_long_name`]).
    pub async fn get_offloads(&self, ifname: &str) -> Result<Vec<(String, bool)>, SessionError> {
        match self
            .call_default(Op::GetOffloads {
                ifname: ifname.into(),
            })
            .await?
        {
            Reply::Offloads(v) => Ok(v.into_iter().map(|o| (o.name, o.enabled)).collect()),
            _ => Err(self.unexpected("GetOffloads")),
        }
    }

    pub async fn set_offloads(
        &self,
        ifname: &str,
        features: &[(String, bool)],
    ) -> Result<(), SessionError> {
        self.call_ok(Op::SetOffloads {
            ifname: ifname.into(),
            features: features.to_vec(),
        })
        .await
    }

    pub async fn wait_dad(&self, ifname: &str, timeout: Duration) -> Result<(), SessionError> {
        let op = Op::WaitDad {
            ifname: ifname.into(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        match self
            .call(op, timeout + self.inner.opts.request_timeout)
            .await?
        {
            Reply::Ok => Ok(()),
            _ => Err(self.unexpected("WaitDad")),
        }
    }

    /// Write a sysctl (restored at recipe/session end); returns the old value.
    pub async fn sysctl_write(&self, path: &str, value: &str) -> Result<String, SessionError> {
        match self
            .call_default(Op::SysctlWrite {
                path: path.into(),
                value: value.into(),
            })
            .await?
        {
            Reply::OldValue(v) => Ok(v),
            _ => Err(self.unexpected("SysctlWrite")),
        }
    }

    pub async fn start_recipe(&self, ifnames: &[String]) -> Result<(), SessionError> {
        self.call_ok(Op::StartRecipe {
            interfaces: ifnames.to_vec(),
        })
        .await
    }

    pub async fn end_recipe(&self) -> Result<(), SessionError> {
        self.call_ok(Op::EndRecipe).await
    }

    pub async fn start_job(&self, spec: JobSpec) -> Result<u64, SessionError> {
        match self.call_default(Op::StartJob { spec }).await? {
            Reply::JobId(id) => Ok(id),
            _ => Err(self.unexpected("StartJob")),
        }
    }

    /// Wait for a job; [`SessionError::JobTimeout`] when it still runs after `timeout`.
    pub async fn wait_job(
        &self,
        job_id: u64,
        timeout: Duration,
    ) -> Result<JobResult, SessionError> {
        let op = Op::WaitJob {
            job_id,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        match self
            .call(op, timeout + self.inner.opts.request_timeout)
            .await
        {
            Ok(r) => self.job_result(r, "WaitJob"),
            Err(SessionError::Remote {
                kind: ErrorKind::Timeout,
                host,
                ..
            }) => Err(SessionError::JobTimeout {
                host,
                job_id,
                after: timeout,
            }),
            Err(e) => Err(e),
        }
    }

    /// SIGINT (or end the CPU sampler), SIGKILL after 2 s; returns the result.
    pub async fn stop_job(&self, job_id: u64) -> Result<JobResult, SessionError> {
        let r = self.call_default(Op::StopJob { job_id }).await?;
        self.job_result(r, "StopJob")
    }

    pub async fn kill_job(&self, job_id: u64) -> Result<JobResult, SessionError> {
        let r = self.call_default(Op::KillJob { job_id }).await?;
        self.job_result(r, "KillJob")
    }

    pub async fn kill_all_jobs(&self) -> Result<(), SessionError> {
        self.call_ok(Op::KillAllJobs).await
    }

    /// Run an argv on the agent (only if it was started with `--allow-shell`).
    pub async fn shell(&self, argv: &[String]) -> Result<protocol::ShellOutput, SessionError> {
        match self
            .call_default(Op::Shell {
                argv: argv.to_vec(),
            })
            .await?
        {
            Reply::Shell(o) => Ok(o),
            _ => Err(self.unexpected("Shell")),
        }
    }

    /// End the session: the agent restores state and closes the connection. Later calls fail
    /// with AgentLost ("session ended").
    pub async fn bye(&self) -> Result<(), SessionError> {
        let r = self.call_ok(Op::Bye).await;
        self.inner.shared.mark_lost("session ended (bye)".into());
        r
    }

    // --- Links, routes, neighbours and agent namespaces (docs/PROTOCOL.md §6.1) -----------

    /// A handle whose every request runs inside the agent namespace `netns` (`host1.ns1`):
    /// addresses, links, routes, jobs. Errors name the host as `host1.ns1`.
    pub fn in_netns(&self, netns: &str) -> AgentClient {
        AgentClient {
            inner: self.inner.clone(),
            netns: Some(Arc::from(netns)),
        }
    }

    /// The agent namespace of this handle (None: the agent's own).
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    fn interfaces(&self, r: Reply, op: &'static str) -> Result<Vec<InterfaceInfo>, SessionError> {
        match r {
            Reply::Interfaces(v) => Ok(v),
            _ => Err(self.unexpected(op)),
        }
    }

    /// Create a link (down); returns it (and a veth's peer when it is in the same namespace).
    pub async fn create_link(
        &self,
        ifname: &str,
        link: protocol::LinkSpec,
    ) -> Result<Vec<InterfaceInfo>, SessionError> {
        self.create_link_with(ifname, link, None, None, false).await
    }

    /// [`AgentClient::create_link`] with a master, an MTU and the link state.
    pub async fn create_link_with(
        &self,
        ifname: &str,
        link: protocol::LinkSpec,
        master: Option<&str>,
        mtu: Option<u32>,
        up: bool,
    ) -> Result<Vec<InterfaceInfo>, SessionError> {
        let op = Op::CreateLink {
            ifname: ifname.into(),
            link,
            master: master.map(String::from),
            mtu,
            up,
        };
        // A team waits for teamd to start.
        let r = self
            .call(
                op,
                self.inner.opts.request_timeout + Duration::from_secs(30),
            )
            .await?;
        self.interfaces(r, "CreateLink")
    }

    /// Delete a link this session created.
    pub async fn delete_link(&self, ifname: &str) -> Result<(), SessionError> {
        self.call_ok(Op::DeleteLink {
            ifname: ifname.into(),
        })
        .await
    }

    /// Make `ifname` a port of the bridge, bond or team `master`.
    pub async fn enslave(&self, ifname: &str, master: &str) -> Result<(), SessionError> {
        self.call_ok(Op::Enslave {
            ifname: ifname.into(),
            master: master.into(),
            team_port: None,
        })
        .await
    }

    /// Make `ifname` a port of the team `master` with teamd port options.
    pub async fn enslave_team_port(
        &self,
        ifname: &str,
        master: &str,
        port: protocol::TeamPortConfig,
    ) -> Result<(), SessionError> {
        self.call_ok(Op::Enslave {
            ifname: ifname.into(),
            master: master.into(),
            team_port: Some(port),
        })
        .await
    }

    pub async fn release(&self, ifname: &str) -> Result<(), SessionError> {
        self.call_ok(Op::Release {
            ifname: ifname.into(),
        })
        .await
    }

    pub async fn bridge_vlan_add(&self, vlan: protocol::BridgeVlan) -> Result<(), SessionError> {
        self.call_ok(Op::BridgeVlanAdd { vlan }).await
    }

    pub async fn bridge_vlan_del(&self, vlan: protocol::BridgeVlan) -> Result<(), SessionError> {
        self.call_ok(Op::BridgeVlanDel { vlan }).await
    }

    /// Add IPsec states and policies (deleted with [`AgentClient::xfrm_del`] or at the end of
    /// the recipe).
    pub async fn xfrm_add(
        &self,
        states: Vec<protocol::XfrmState>,
        policies: Vec<protocol::XfrmPolicy>,
    ) -> Result<(), SessionError> {
        self.call_ok(Op::XfrmAdd { states, policies }).await
    }

    /// Give a MACsec link its receive channel and SAs.
    pub async fn macsec_configure(
        &self,
        ifname: &str,
        sas: protocol::MacsecSas,
    ) -> Result<(), SessionError> {
        self.call_ok(Op::MacsecConfigure {
            ifname: ifname.to_string(),
            sas,
        })
        .await
    }

    /// Delete IPsec policies and states this session added.
    pub async fn xfrm_del(
        &self,
        states: Vec<protocol::XfrmStateId>,
        policies: Vec<protocol::XfrmPolicyId>,
    ) -> Result<(), SessionError> {
        self.call_ok(Op::XfrmDel { states, policies }).await
    }

    pub async fn add_route(&self, route: protocol::RouteSpec) -> Result<(), SessionError> {
        self.call_ok(Op::AddRoute { route }).await
    }

    /// A static L2TPv3 tunnel (deleted with its sessions when the recipe ends).
    pub async fn add_l2tp_tunnel(
        &self,
        tunnel: protocol::L2tpTunnelSpec,
    ) -> Result<(), SessionError> {
        self.call_ok(Op::AddL2tpTunnel { tunnel }).await
    }

    /// A session of an L2TP tunnel with its Ethernet device.
    pub async fn add_l2tp_session(
        &self,
        session: protocol::L2tpSessionSpec,
    ) -> Result<(), SessionError> {
        self.call_ok(Op::AddL2tpSession { session }).await
    }

    pub async fn del_route(&self, route: protocol::RouteSpec) -> Result<(), SessionError> {
        self.call_ok(Op::DelRoute { route }).await
    }

    pub async fn add_neighbour(
        &self,
        neighbour: protocol::NeighbourSpec,
    ) -> Result<(), SessionError> {
        self.call_ok(Op::AddNeighbour { neighbour }).await
    }

    pub async fn del_neighbour(
        &self,
        neighbour: protocol::NeighbourSpec,
    ) -> Result<(), SessionError> {
        self.call_ok(Op::DelNeighbour { neighbour }).await
    }

    pub async fn del_address(&self, ifname: &str, addr: &str) -> Result<(), SessionError> {
        self.call_ok(Op::DelAddress {
            ifname: ifname.into(),
            addr: addr.into(),
        })
        .await
    }

    /// Create a namespace inside the agent; use it through [`AgentClient::in_netns`].
    pub async fn create_netns(&self, name: &str) -> Result<(), SessionError> {
        self.call_ok(Op::CreateNetns { name: name.into() }).await
    }

    pub async fn delete_netns(&self, name: &str) -> Result<(), SessionError> {
        self.call_ok(Op::DeleteNetns { name: name.into() }).await
    }

    /// Move a link from this handle's namespace into the agent namespace `netns` (None: the
    /// agent's own).
    pub async fn move_link(&self, ifname: &str, netns: Option<&str>) -> Result<(), SessionError> {
        self.call_ok(Op::MoveLink {
            ifname: ifname.into(),
            netns: netns.map(String::from),
        })
        .await
    }

    // --- Device and host tunables (docs/PROTOCOL.md §6.2) ---------------------------------

    fn tuned(&self, r: Reply, op: &'static str) -> Result<protocol::SetOutcome, SessionError> {
        match r {
            Reply::Tuned(o) => Ok(o),
            _ => Err(self.unexpected(op)),
        }
    }

    /// Pause-frame parameters; `Unsupported` when the device has none.
    pub async fn get_pause(&self, ifname: &str) -> Result<protocol::PauseParams, SessionError> {
        match self
            .call_default(Op::GetPause {
                ifname: ifname.into(),
            })
            .await?
        {
            Reply::Pause(p) => Ok(p),
            _ => Err(self.unexpected("GetPause")),
        }
    }

    /// Set pause frames (unset values stay); `NotApplicable` when the device has none and
    /// every value asked is off.
    pub async fn set_pause(
        &self,
        ifname: &str,
        autoneg: Option<bool>,
        rx: Option<bool>,
        tx: Option<bool>,
    ) -> Result<protocol::SetOutcome, SessionError> {
        let op = Op::SetPause {
            ifname: ifname.into(),
            autoneg,
            rx,
            tx,
        };
        let r = self.call(
            op,
            self.inner.opts.request_timeout + Duration::from_secs(10),
        );
        self.tuned(r.await?, "SetPause")
    }

    pub async fn get_coalesce(&self, ifname: &str) -> Result<protocol::Coalesce, SessionError> {
        match self
            .call_default(Op::GetCoalesce {
                ifname: ifname.into(),
            })
            .await?
        {
            Reply::Coalesce(c) => Ok(*c),
            _ => Err(self.unexpected("GetCoalesce")),
        }
    }

    pub async fn set_coalesce(
        &self,
        ifname: &str,
        settings: protocol::Coalesce,
    ) -> Result<protocol::SetOutcome, SessionError> {
        let op = Op::SetCoalesce {
            ifname: ifname.into(),
            settings: Box::new(settings),
        };
        let r = self.call_default(op).await?;
        self.tuned(r, "SetCoalesce")
    }

    pub async fn get_channels(&self, ifname: &str) -> Result<protocol::Channels, SessionError> {
        match self
            .call_default(Op::GetChannels {
                ifname: ifname.into(),
            })
            .await?
        {
            Reply::Channels(c) => Ok(c),
            _ => Err(self.unexpected("GetChannels")),
        }
    }

    pub async fn set_channels(
        &self,
        ifname: &str,
        channels: protocol::ChannelCounts,
    ) -> Result<protocol::SetOutcome, SessionError> {
        let op = Op::SetChannels {
            ifname: ifname.into(),
            channels,
        };
        let r = self.call_default(op).await?;
        self.tuned(r, "SetChannels")
    }

    pub async fn get_rss(&self, ifname: &str) -> Result<protocol::RssInfo, SessionError> {
        match self
            .call_default(Op::GetRss {
                ifname: ifname.into(),
            })
            .await?
        {
            Reply::Rss(r) => Ok(r),
            _ => Err(self.unexpected("GetRss")),
        }
    }

    /// Set the RSS hash function, key (`aa:bb:…`) or input transformations (`Some([])`:
    /// none).
    pub async fn set_rss(
        &self,
        ifname: &str,
        hfunc: Option<&str>,
        key: Option<&str>,
        xfrm: Option<Vec<String>>,
    ) -> Result<protocol::SetOutcome, SessionError> {
        let op = Op::SetRss {
            ifname: ifname.into(),
            hfunc: hfunc.map(String::from),
            key: key.map(String::from),
            xfrm,
        };
        let r = self.call_default(op).await?;
        self.tuned(r, "SetRss")
    }

    /// The hashed fields of a flow type as ethtool's letters, sorted (`dfns`).
    pub async fn get_rx_flow_hash(
        &self,
        ifname: &str,
        flow_type: protocol::FlowType,
    ) -> Result<String, SessionError> {
        match self
            .call_default(Op::GetRxFlowHash {
                ifname: ifname.into(),
                flow_type,
            })
            .await?
        {
            Reply::FlowHash(f) => Ok(f),
            _ => Err(self.unexpected("GetRxFlowHash")),
        }
    }

    pub async fn set_rx_flow_hash(
        &self,
        ifname: &str,
        flow_type: protocol::FlowType,
        fields: &str,
    ) -> Result<protocol::SetOutcome, SessionError> {
        let op = Op::SetRxFlowHash {
            ifname: ifname.into(),
            flow_type,
            fields: fields.into(),
        };
        let r = self.call_default(op).await?;
        self.tuned(r, "SetRxFlowHash")
    }

    /// The device's IRQs; `Unsupported` naming the device when it has none.
    pub async fn get_irqs(&self, ifname: &str) -> Result<Vec<protocol::IrqInfo>, SessionError> {
        match self
            .call_default(Op::GetIrqs {
                ifname: ifname.into(),
            })
            .await?
        {
            Reply::Irqs(v) => Ok(v),
            _ => Err(self.unexpected("GetIrqs")),
        }
    }

    pub async fn set_irq_affinity(
        &self,
        ifname: &str,
        cpus: &[u32],
        policy: protocol::IrqPolicy,
        stop_irqbalance: bool,
    ) -> Result<protocol::IrqPinning, SessionError> {
        let op = Op::SetIrqAffinity {
            ifname: ifname.into(),
            cpus: cpus.to_vec(),
            policy,
            stop_irqbalance,
        };
        match self
            .call(
                op,
                self.inner.opts.request_timeout + Duration::from_secs(30),
            )
            .await?
        {
            Reply::IrqsPinned(p) => Ok(p),
            _ => Err(self.unexpected("SetIrqAffinity")),
        }
    }

    /// The host's online CPUs and the agent's own CPU set.
    pub async fn get_cpus(&self) -> Result<protocol::CpuInfo, SessionError> {
        match self.call_default(Op::GetCpus).await? {
            Reply::Cpus(c) => Ok(c),
            _ => Err(self.unexpected("GetCpus")),
        }
    }

    pub async fn drop_caches(&self, what: protocol::DropCachesWhat) -> Result<(), SessionError> {
        self.call_ok(Op::DropCaches { what }).await
    }

    pub async fn set_turbo_boost(
        &self,
        enabled: bool,
    ) -> Result<protocol::SetOutcome, SessionError> {
        let r = self.call_default(Op::SetTurboBoost { enabled }).await?;
        self.tuned(r, "SetTurboBoost")
    }

    /// Disable the CPU idle states with an exit latency of at least `min_latency_us`.
    pub async fn disable_idle_states(
        &self,
        min_latency_us: u64,
    ) -> Result<protocol::SetOutcome, SessionError> {
        let r = self
            .call_default(Op::DisableIdleStates { min_latency_us })
            .await?;
        self.tuned(r, "DisableIdleStates")
    }

    /// Give each listed IRQ of the device its own affinity list (the `previous` lists of a
    /// `set_irq_affinity` reply put a pinning back).
    pub async fn restore_irq_affinity(
        &self,
        ifname: &str,
        irqs: Vec<protocol::IrqAffinity>,
    ) -> Result<protocol::IrqPinning, SessionError> {
        let op = Op::RestoreIrqAffinity {
            ifname: ifname.into(),
            irqs,
        };
        match self.call_default(op).await? {
            Reply::IrqsPinned(p) => Ok(p),
            _ => Err(self.unexpected("RestoreIrqAffinity")),
        }
    }

    /// Enable CPU idle states again (the states a `disable_idle_states` reply lists).
    pub async fn enable_idle_states(
        &self,
        states: Vec<protocol::IdleStateId>,
    ) -> Result<protocol::SetOutcome, SessionError> {
        let r = self.call_default(Op::EnableIdleStates { states }).await?;
        self.tuned(r, "EnableIdleStates")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn transport(stream: tokio::io::DuplexStream) -> Transport {
        let (r, w) = tokio::io::split(stream);
        Transport {
            reader: Box::new(r),
            writer: Box::new(w),
        }
    }

    fn hello(auth: bool) -> HelloInfo {
        HelloInfo {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "test".into(),
            kernel_release: "k".into(),
            hostname: "fake".into(),
            auth_required: auth,
            nonce: hex::encode([5u8; 32]),
        }
    }

    /// A fake agent that says hello, then reads forever and never answers (a hung agent).
    #[tokio::test]
    async fn silent_agent_is_lost_within_keepalive_bound() {
        let (ours, theirs) = duplex(1 << 16);
        let fake = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(theirs);
            protocol::write_message(&mut w, &Message::Hello(hello(false)))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            while let Ok(Some(_)) = protocol::read_message(&mut r).await {}
            drop(w);
        });
        let opts = ClientOptions {
            request_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_millis(100),
            keepalive_timeout: Duration::from_millis(500),
        };
        let c = AgentClient::connect("host1", transport(ours), None, opts)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.hello().hostname, "fake");
        let t0 = Instant::now();
        let e = c.list_interfaces().await.err();
        let took = t0.elapsed();
        match &e {
            Some(SessionError::AgentLost { host, reason }) => {
                assert_eq!(host, "host1");
                assert!(reason.contains("keepalive"), "{reason}");
            }
            other => panic!("expected AgentLost, got {other:?}"),
        }
        assert!(took < Duration::from_secs(2), "took {took:?}");
        // Future calls fail at once.
        let t1 = Instant::now();
        assert!(matches!(
            c.set_mtu("x", 1500).await,
            Err(SessionError::AgentLost { .. })
        ));
        assert!(t1.elapsed() < Duration::from_millis(100));
        drop(c);
        let _ = tokio::time::timeout(Duration::from_secs(2), fake).await;
    }

    /// An agent that answers pings keeps the session alive past the keepalive timeout, and a
    /// closed transport fails pending calls at once.
    #[tokio::test]
    async fn pongs_keep_alive_and_eof_fails_pending() {
        let (ours, theirs) = duplex(1 << 16);
        let (close_tx, close_rx) = oneshot::channel::<()>();
        let fake = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(theirs);
            protocol::write_message(&mut w, &Message::Hello(hello(false)))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let serve = async {
                while let Ok(Some(m)) = protocol::read_message(&mut r).await {
                    if let Message::Ping { seq } = m {
                        let _ = protocol::write_message(&mut w, &Message::Pong { seq }).await;
                    }
                }
            };
            tokio::select! {
                _ = serve => {}
                _ = close_rx => {}
            }
        });
        let opts = ClientOptions {
            request_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_millis(50),
            keepalive_timeout: Duration::from_millis(300),
        };
        let c = AgentClient::connect("h2", transport(ours), None, opts)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let c2 = c.clone();
        let pending = tokio::spawn(async move { c2.list_interfaces().await });
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(
            !pending.is_finished(),
            "answered pings must keep the session"
        );
        let _ = close_tx.send(());
        let _ = fake.await;
        let r = tokio::time::timeout(Duration::from_secs(1), pending).await;
        match r {
            Ok(Ok(Err(SessionError::AgentLost { reason, .. }))) => {
                assert!(reason.contains("closed"), "{reason}")
            }
            other => panic!("expected AgentLost, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn version_mismatch_and_busy_are_clear() {
        let (ours, theirs) = duplex(1 << 16);
        tokio::spawn(async move {
            let (_r, mut w) = tokio::io::split(theirs);
            let mut h = hello(false);
            h.protocol_version = 99;
            let _ = protocol::write_message(&mut w, &Message::Hello(h)).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let e = AgentClient::connect("h3", transport(ours), None, ClientOptions::default())
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("agent h3 speaks protocol version 99, this controller speaks 2")
        );

        let (ours, theirs) = duplex(1 << 16);
        tokio::spawn(async move {
            let (_r, mut w) = tokio::io::split(theirs);
            let _ = protocol::write_message(
                &mut w,
                &Message::Error(ErrorReply::new(ErrorKind::Busy, "agent is busy")),
            )
            .await;
        });
        let e = AgentClient::connect("h4", transport(ours), None, ClientOptions::default()).await;
        assert!(matches!(e, Err(SessionError::Busy { .. })), "{e:?}");

        // Busy in place of AuthOk: another controller authenticated first.
        let (ours, theirs) = duplex(1 << 16);
        tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(theirs);
            let _ = protocol::write_message(&mut w, &Message::Hello(hello(true))).await;
            if let Ok(Some(Message::Auth { .. })) = protocol::read_message(&mut r).await {
                let busy = ErrorReply::new(ErrorKind::Busy, "agent is busy serving controller x");
                let _ = protocol::write_message(&mut w, &Message::Error(busy)).await;
            }
        });
        let e =
            AgentClient::connect("h4", transport(ours), Some(b"k"), ClientOptions::default()).await;
        assert!(matches!(e, Err(SessionError::Busy { .. })), "{e:?}");
    }

    #[tokio::test]
    async fn agent_without_mac_proof_is_rejected() {
        // An impostor agent that asks for auth but cannot compute the reply MAC.
        let (ours, theirs) = duplex(1 << 16);
        tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(theirs);
            let _ = protocol::write_message(&mut w, &Message::Hello(hello(true))).await;
            if let Ok(Some(Message::Auth { .. })) = protocol::read_message(&mut r).await {
                let _ = protocol::write_message(
                    &mut w,
                    &Message::AuthOk {
                        mac: hex::encode([0u8; 32]),
                        agent_version: String::new(),
                        kernel_release: String::new(),
                        hostname: String::new(),
                    },
                )
                .await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let e = AgentClient::connect("h5", transport(ours), Some(b"k"), ClientOptions::default())
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("authentication with agent h5 failed: the agent did not prove the secret")
        );
    }

    #[tokio::test]
    async fn a_handshake_timeout_names_what_the_agent_did_not_send() {
        let opts = ClientOptions {
            request_timeout: Duration::from_millis(300),
            ..ClientOptions::default()
        };
        // Silent from the start: no Hello.
        let (ours, _theirs) = duplex(1 << 16);
        let e = AgentClient::connect("h6", transport(ours), Some(b"k"), opts.clone())
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("no Hello from the agent within 0.3 s"), "{e}");
        // Hello, then no answer to Auth.
        let (ours, theirs) = duplex(1 << 16);
        let agent = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(theirs);
            let _ = protocol::write_message(&mut w, &Message::Hello(hello(true))).await;
            let _ = protocol::read_message(&mut r).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let e = AgentClient::connect("h7", transport(ours), Some(b"k"), opts)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("the agent said Hello but did not answer the authentication within 0.3 s"),
            "{e}"
        );
        agent.abort();
    }
}
