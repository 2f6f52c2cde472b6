//! Controller↔agent wire protocol (see `docs/PROTOCOL.md`).
//!
//! A connection carries *frames*: a 4-byte big-endian payload length followed by that many
//! bytes of UTF-8 JSON encoding one [`Message`]. Frames larger than [`MAX_FRAME`] are an error
//! on both sides and are never allocated.
//!
//! The agent speaks first with [`Message::Hello`]; the controller answers with
//! [`Message::Auth`] (when the agent requires authentication) or [`Message::Start`]; then
//! requests flow. Authentication is a mutual HMAC-SHA256 challenge–response over fresh
//! per-connection nonces ([`client_mac`], [`agent_mac`]).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Version of this protocol; both sides must speak the same one.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame payload accepted or sent (16 MiB).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Largest frame accepted before the peer is authenticated (Hello, Auth, Start, AuthOk, Error).
pub const MAX_HANDSHAKE_FRAME: usize = 64 * 1024;

/// Default TCP port of an agent.
pub const DEFAULT_PORT: u16 = 9999;

/// Domain-separation labels of the two MACs of the handshake.
pub const AUTH_LABEL_CLIENT: &[u8] = b"lnst-agent-auth-v1";
pub const AUTH_LABEL_AGENT: &[u8] = b"lnst-agent-auth-v1-agent";

/// Nonce length in bytes (hex-encoded on the wire: 64 characters).
pub const NONCE_LEN: usize = 32;

/// Errors of the frame codec.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("malformed frame: {0}")]
    Json(#[from] serde_json::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// One frame's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum Message {
    /// agent → controller, first frame of every connection.
    Hello(HelloInfo),
    /// controller → agent, answers a Hello with `auth_required`.
    Auth {
        protocol_version: u32,
        /// 32 bytes, hex.
        client_nonce: String,
        /// HMAC-SHA256(secret, "lnst-agent-auth-v1" ‖ agent_nonce ‖ client_nonce), hex.
        mac: String,
    },
    /// controller → agent, answers a Hello without `auth_required`.
    Start {
        protocol_version: u32,
    },
    /// agent → controller, answers a valid Auth. An agent that requires authentication sends
    /// its identity here, not in the (unauthenticated) Hello.
    AuthOk {
        /// HMAC-SHA256(secret, "lnst-agent-auth-v1-agent" ‖ client_nonce ‖ agent_nonce), hex.
        mac: String,
        #[serde(default)]
        agent_version: String,
        #[serde(default)]
        kernel_release: String,
        #[serde(default)]
        hostname: String,
    },
    /// Either side: fatal error (authentication, version, busy, malformed frame); the sender
    /// closes the connection after it.
    Error(ErrorReply),
    /// controller → agent.
    Request {
        id: u64,
        op: Op,
    },
    /// agent → controller, exactly one per request id.
    Response {
        id: u64,
        result: Result<Reply, ErrorReply>,
    },
    /// agent → controller, unsolicited.
    Event {
        event: Event,
    },
    /// Keepalive; the peer answers with `Pong` carrying the same `seq`.
    Ping {
        seq: u64,
    },
    Pong {
        seq: u64,
    },
}

/// What the agent says about itself in its first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelloInfo {
    pub protocol_version: u32,
    pub agent_version: String,
    pub kernel_release: String,
    pub hostname: String,
    pub auth_required: bool,
    /// 32 random bytes, hex; fresh per connection.
    pub nonce: String,
}

/// Error reply of a request, or a fatal connection error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
}

impl ErrorReply {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorReply {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Class of an [`ErrorReply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request was malformed or a parameter invalid.
    BadRequest,
    /// A named object (interface, job) does not exist.
    NotFound,
    /// The operation ran and failed (netlink error, tool failure).
    Failed,
    /// A wait ran out of time (the job still runs).
    Timeout,
    /// The agent does not allow this operation (e.g. Shell without `--allow-shell`).
    NotAllowed,
    /// Authentication failed or was required and missing.
    AuthFailed,
    /// Protocol versions differ.
    VersionMismatch,
    /// The agent already serves another controller.
    Busy,
    /// A frame could not be decoded or came out of order.
    Protocol,
    /// Anything else.
    Internal,
}

/// A request's operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum Op {
    ListInterfaces,
    SetLink {
        ifname: String,
        up: bool,
    },
    SetMtu {
        ifname: String,
        mtu: u32,
    },
    AddAddress {
        ifname: String,
        /// `198.18.0.1/24`, `fd00::1/64`.
        addr: String,
    },
    /// Remove every address of the interface except link-local ones.
    FlushAddresses {
        ifname: String,
    },
    GetOffloads {
        ifname: String,
    },
    SetOffloads {
        ifname: String,
        /// ethtool `-K` names (`gro`, `tso`, or long names as `-k` prints them).
        features: Vec<(String, bool)>,
    },
    /// Wait until the interface has no tentative IPv6 address.
    WaitDad {
        ifname: String,
        timeout_ms: u64,
    },
    /// Write a value under /proc/sys (path relative to /proc/sys, absolute under it, or dotted
    /// `net.ipv4.ip_forward`); returns the old value; restored at session end.
    SysctlWrite {
        path: String,
        value: String,
    },
    /// Snapshot MTU, link state, addresses and offloads of these interfaces.
    StartRecipe {
        interfaces: Vec<String>,
    },
    /// Kill jobs and restore the snapshot and sysctls.
    EndRecipe,
    StartJob {
        spec: JobSpec,
    },
    WaitJob {
        job_id: u64,
        timeout_ms: u64,
    },
    /// SIGINT, then SIGKILL after 2 s; ends a CPU sampler.
    StopJob {
        job_id: u64,
    },
    KillJob {
        job_id: u64,
    },
    KillAllJobs,
    /// Run an argv (no shell); only with `--allow-shell`.
    Shell {
        argv: Vec<String>,
    },
    /// Create a software link (its kernel module loads on demand); it is deleted again when
    /// the recipe ends.
    CreateLink {
        ifname: String,
        spec: LinkSpec,
    },
    /// End the session: the agent answers, cleans up and closes the connection.
    Bye,
}

impl Op {
    /// Short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::ListInterfaces => "ListInterfaces",
            Op::SetLink { .. } => "SetLink",
            Op::SetMtu { .. } => "SetMtu",
            Op::AddAddress { .. } => "AddAddress",
            Op::FlushAddresses { .. } => "FlushAddresses",
            Op::GetOffloads { .. } => "GetOffloads",
            Op::SetOffloads { .. } => "SetOffloads",
            Op::WaitDad { .. } => "WaitDad",
            Op::SysctlWrite { .. } => "SysctlWrite",
            Op::StartRecipe { .. } => "StartRecipe",
            Op::EndRecipe => "EndRecipe",
            Op::StartJob { .. } => "StartJob",
            Op::WaitJob { .. } => "WaitJob",
            Op::StopJob { .. } => "StopJob",
            Op::KillJob { .. } => "KillJob",
            Op::KillAllJobs => "KillAllJobs",
            Op::Shell { .. } => "Shell",
            Op::CreateLink { .. } => "CreateLink",
            Op::Bye => "Bye",
        }
    }
}

/// A link [`Op::CreateLink`] creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LinkSpec {
    /// 802.1Q VLAN `id` (1-4094) on `parent`.
    Vlan { parent: String, id: u16 },
    /// A bond in `mode` (balance-rr, active-backup, balance-xor, broadcast, 802.3ad,
    /// balance-tlb, balance-alb; default balance-rr).
    Bond {
        #[serde(default)]
        mode: Option<String>,
    },
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", content = "value", deny_unknown_fields)]
pub enum Reply {
    Ok,
    Interfaces(Vec<InterfaceInfo>),
    Offloads(Vec<Offload>),
    /// SysctlWrite: the previous value.
    OldValue(String),
    JobId(u64),
    JobResult(JobResult),
    Shell(ShellOutput),
}

/// One network interface as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceInfo {
    pub name: String,
    pub ifindex: u32,
    /// Lower-case `aa:bb:cc:dd:ee:ff`; empty when the link has no hardware address.
    pub mac: String,
    pub mtu: u32,
    /// Administrative state (IFF_UP).
    pub up: bool,
    pub driver: Option<String>,
    /// rtnetlink link kind (`veth`, `dummy`, `bridge`); None for hardware NICs.
    pub kind: Option<String>,
    /// `198.18.0.1/24`, `fd00::1/64`, link-local included.
    pub addresses: Vec<String>,
}

/// One ethtool feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offload {
    pub name: String,
    pub enabled: bool,
    /// `[fixed]`: cannot be changed.
    pub fixed: bool,
}

/// Output of a Shell op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellOutput {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Transport protocol of an iperf3 client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IperfProto {
    Tcp,
    Udp,
    Sctp,
}

/// A job the agent runs (argv only, never through a shell).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum JobSpec {
    /// `ping <dst> [-6] -c N -i %f [-I src] [-s size]`
    Ping {
        dst: String,
        src: Option<String>,
        count: u32,
        interval_s: f64,
        size: Option<u32>,
        ipv6: bool,
    },
    /// `iperf3 -s -B bind -J -p port [-1]`
    IperfServer {
        bind: String,
        port: u16,
        cpus: Option<Vec<u32>>,
        oneoff: bool,
    },
    /// `iperf3 -c server -b 0/1000 -J -t D [--udp|--sctp] [-l blksize] [-P n] -p port [--cport c]`
    IperfClient {
        server: String,
        port: u16,
        cport: Option<u16>,
        duration_s: u32,
        proto: IperfProto,
        blksize: Option<u32>,
        parallel: Option<u32>,
        cpus: Option<Vec<u32>>,
    },
    /// In-process sampler of the `cpu*` lines of /proc/stat, until stopped.
    CpuStat { interval_ms: u64 },
}

impl JobSpec {
    /// Whether an exit code means success (ping: ≤ 1, like upstream; others: 0).
    pub fn exit_code_passes(&self, code: i32) -> bool {
        match self {
            JobSpec::Ping { .. } => (0..=1).contains(&code),
            _ => code == 0,
        }
    }
}

/// Outcome of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobResult {
    pub job_id: u64,
    pub passed: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Unix time, seconds.
    pub started_at: f64,
    pub finished_at: f64,
    /// The agent ended the job (StopJob, KillJob, KillAllJobs, EndRecipe, session end).
    pub killed: bool,
    /// Why the job could not run or failed inside the agent (`iperf3: not found in PATH`).
    pub error: Option<String>,
    /// CpuStat: `[{"t": unix_secs, "text": "<cpu lines>"}]`.
    pub data: Option<serde_json::Value>,
}

/// Unsolicited agent → controller notifications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum Event {
    JobFinished {
        result: JobResult,
    },
    Log {
        level: LogLevel,
        target: String,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Map an upstream/ethtool short feature name (`gro`) to the long name `ethtool -k` prints
/// (`generic-receive-offload`); other names are returned unchanged.
pub fn offload_long_name(name: &str) -> &str {
    match name {
        "rx" => "rx-checksumming",
        "tx" => "tx-checksumming",
        "sg" => "scatter-gather",
        "tso" => "tcp-segmentation-offload",
        "ufo" => "udp-fragmentation-offload",
        "gso" => "generic-segmentation-offload",
        "gro" => "generic-receive-offload",
        "lro" => "large-receive-offload",
        "rxvlan" => "rx-vlan-offload",
        "txvlan" => "tx-vlan-offload",
        "ntuple" => "ntuple-filters",
        "rxhash" => "receive-hashing",
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// Frame codec
// ---------------------------------------------------------------------------------------------

/// Read one frame's payload. `Ok(None)`: clean EOF before the first byte of a frame.
pub async fn read_frame_bytes<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
) -> Result<Option<Vec<u8>>, FrameError> {
    read_frame_bytes_limited(r, MAX_FRAME).await
}

/// [`read_frame_bytes`] with a lower limit than [`MAX_FRAME`] (the handshake uses
/// [`MAX_HANDSHAKE_FRAME`]). The buffer grows with the bytes that arrive: an announced length
/// alone allocates nothing.
pub async fn read_frame_bytes_limited<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len_buf = [0u8; 4];
    let mut got = 0;
    while got < len_buf.len() {
        let slot = len_buf.get_mut(got..).unwrap_or_default();
        let n = r.read(slot).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len_buf) as usize;
    if len > max.min(MAX_FRAME) {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    let mut limited = r.take(len as u64);
    limited.read_to_end(&mut buf).await?;
    if buf.len() < len {
        return Err(FrameError::Truncated);
    }
    Ok(Some(buf))
}

/// Read and decode one [`Message`]. `Ok(None)`: clean EOF.
pub async fn read_message<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
) -> Result<Option<Message>, FrameError> {
    read_message_limited(r, MAX_FRAME).await
}

/// [`read_message`] with a frame limit below [`MAX_FRAME`].
pub async fn read_message_limited<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    max: usize,
) -> Result<Option<Message>, FrameError> {
    match read_frame_bytes_limited(r, max).await? {
        None => Ok(None),
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
    }
}

/// Encode a message as a complete frame (length prefix included).
pub fn encode_message(msg: &Message) -> Result<Vec<u8>, FrameError> {
    let payload = serde_json::to_vec(msg)?;
    if payload.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(payload.len()));
    }
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge(payload.len()))?;
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Write one message as a frame and flush.
pub async fn write_message<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    msg: &Message,
) -> Result<(), FrameError> {
    let frame = encode_message(msg)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Handshake MACs
// ---------------------------------------------------------------------------------------------

type HmacSha256 = Hmac<Sha256>;

fn keyed(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable_hmac(),
    }
}

#[cold]
fn unreachable_hmac() -> HmacSha256 {
    // `new_from_slice` for HMAC never rejects a key; keep a total function anyway.
    <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default())
}

/// The controller's proof: HMAC-SHA256(secret, "lnst-agent-auth-v1" ‖ agent_nonce ‖ client_nonce).
pub fn client_mac(
    secret: &[u8],
    agent_nonce: &[u8; NONCE_LEN],
    client_nonce: &[u8; NONCE_LEN],
) -> [u8; 32] {
    let mut m = keyed(secret);
    m.update(AUTH_LABEL_CLIENT);
    m.update(agent_nonce);
    m.update(client_nonce);
    m.finalize().into_bytes().into()
}

/// The agent's proof: HMAC-SHA256(secret, "lnst-agent-auth-v1-agent" ‖ client_nonce ‖ agent_nonce).
pub fn agent_mac(
    secret: &[u8],
    client_nonce: &[u8; NONCE_LEN],
    agent_nonce: &[u8; NONCE_LEN],
) -> [u8; 32] {
    let mut m = keyed(secret);
    m.update(AUTH_LABEL_AGENT);
    m.update(client_nonce);
    m.update(agent_nonce);
    m.finalize().into_bytes().into()
}

/// Check the controller's MAC (hex) in constant time.
pub fn verify_client_mac(
    secret: &[u8],
    agent_nonce: &[u8; NONCE_LEN],
    client_nonce: &[u8; NONCE_LEN],
    mac_hex: &str,
) -> bool {
    let Ok(mac) = hex::decode(mac_hex) else {
        return false;
    };
    let mut m = keyed(secret);
    m.update(AUTH_LABEL_CLIENT);
    m.update(agent_nonce);
    m.update(client_nonce);
    m.verify_slice(&mac).is_ok()
}

/// Check the agent's MAC (hex) in constant time.
pub fn verify_agent_mac(
    secret: &[u8],
    client_nonce: &[u8; NONCE_LEN],
    agent_nonce: &[u8; NONCE_LEN],
    mac_hex: &str,
) -> bool {
    let Ok(mac) = hex::decode(mac_hex) else {
        return false;
    };
    let mut m = keyed(secret);
    m.update(AUTH_LABEL_AGENT);
    m.update(client_nonce);
    m.update(agent_nonce);
    m.verify_slice(&mac).is_ok()
}

/// A fresh random nonce from the OS.
pub fn new_nonce() -> [u8; NONCE_LEN] {
    use rand::RngCore;
    let mut n = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// Decode a hex nonce; None unless it is exactly 32 bytes.
pub fn parse_nonce(s: &str) -> Option<[u8; NONCE_LEN]> {
    let v = hex::decode(s).ok()?;
    <[u8; NONCE_LEN]>::try_from(v.as_slice()).ok()
}

/// Strip surrounding ASCII whitespace from a secret (so `echo secret > file` works); None if
/// nothing is left. Both sides apply it: the agent to its secret, the controller to the pool's.
pub fn normalize_secret(raw: &[u8]) -> Option<Vec<u8>> {
    let start = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(raw.len());
    let end = raw
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map(|p| p + 1)
        .unwrap_or(start);
    let s = raw.get(start..end)?;
    if s.is_empty() {
        None
    } else {
        Some(s.to_vec())
    }
}

/// Seconds since the Unix epoch, as f64.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        match tokio::runtime::Builder::new_current_thread().build() {
            Ok(r) => r,
            Err(e) => panic!("runtime: {e}"),
        }
    }

    fn sample_messages() -> Vec<Message> {
        vec![
            Message::Hello(HelloInfo {
                protocol_version: PROTOCOL_VERSION,
                agent_version: "0.1.0".into(),
                kernel_release: "6.1".into(),
                hostname: "h".into(),
                auth_required: true,
                nonce: hex::encode([7u8; 32]),
            }),
            Message::Request {
                id: 3,
                op: Op::SetOffloads {
                    ifname: "eth0".into(),
                    features: vec![("gro".into(), false), ("tso".into(), true)],
                },
            },
            Message::Request {
                id: 4,
                op: Op::StartJob {
                    spec: JobSpec::IperfClient {
                        server: "198.18.0.2".into(),
                        port: 12000,
                        cport: Some(12001),
                        duration_s: 10,
                        proto: IperfProto::Udp,
                        blksize: None,
                        parallel: Some(2),
                        cpus: Some(vec![0, 1]),
                    },
                },
            },
            Message::Request {
                id: 5,
                op: Op::EndRecipe,
            },
            Message::Response {
                id: 3,
                result: Ok(Reply::Interfaces(vec![InterfaceInfo {
                    name: "lo".into(),
                    ifindex: 1,
                    mac: "00:00:00:00:00:00".into(),
                    mtu: 65536,
                    up: true,
                    driver: None,
                    kind: None,
                    addresses: vec!["127.0.0.1/8".into()],
                }])),
            },
            Message::Response {
                id: 9,
                result: Err(ErrorReply::new(ErrorKind::NotFound, "no such interface")),
            },
            Message::Response {
                id: 10,
                result: Ok(Reply::Ok),
            },
            Message::Event {
                event: Event::JobFinished {
                    result: JobResult {
                        job_id: 1,
                        passed: true,
                        exit_code: Some(0),
                        signal: None,
                        stdout: "out\n\u{1}".into(),
                        stderr: String::new(),
                        started_at: 1.5,
                        finished_at: 2.25,
                        killed: false,
                        error: None,
                        data: Some(serde_json::json!([{"t": 1.0, "text": "cpu 1 2"}])),
                    },
                },
            },
            Message::Ping { seq: 42 },
        ]
    }

    #[test]
    fn frame_round_trip() {
        rt().block_on(async {
            let msgs = sample_messages();
            let mut buf: Vec<u8> = Vec::new();
            for m in &msgs {
                write_message(&mut buf, m)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            // Length prefix is big-endian and matches the payload.
            let first_len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            let first: serde_json::Value =
                serde_json::from_slice(&buf[4..4 + first_len]).unwrap_or_default();
            assert_eq!(first["type"], "Hello");
            let mut rd = buf.as_slice();
            let mut back = Vec::new();
            while let Some(m) = read_message(&mut rd)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
            {
                back.push(m);
            }
            assert_eq!(back, msgs);
        });
    }

    #[test]
    fn oversized_length_rejected_without_allocating() {
        rt().block_on(async {
            // Claims 4 GiB - 1; only the 4 prefix bytes exist. Allocating would abort the test.
            let data = [0xffu8, 0xff, 0xff, 0xff];
            let mut rd = &data[..];
            match read_frame_bytes(&mut rd).await {
                Err(FrameError::TooLarge(n)) => assert_eq!(n, 0xffff_ffff),
                other => panic!("expected TooLarge, got {other:?}"),
            }
            let just_over = ((MAX_FRAME + 1) as u32).to_be_bytes();
            let mut rd = &just_over[..];
            assert!(matches!(
                read_frame_bytes(&mut rd).await,
                Err(FrameError::TooLarge(_))
            ));
        });
    }

    #[test]
    fn handshake_limit_and_lazy_buffer() {
        rt().block_on(async {
            // Over the handshake limit: refused on the length alone.
            let over = ((MAX_HANDSHAKE_FRAME + 1) as u32).to_be_bytes();
            let mut rd = &over[..];
            assert!(matches!(
                read_message_limited(&mut rd, MAX_HANDSHAKE_FRAME).await,
                Err(FrameError::TooLarge(n)) if n == MAX_HANDSHAKE_FRAME + 1
            ));
            // Announces the full MAX_FRAME but sends 10 bytes: truncated, and the buffer never
            // grew to the announced size.
            let mut data = (MAX_FRAME as u32).to_be_bytes().to_vec();
            data.extend_from_slice(b"0123456789");
            let mut rd = &data[..];
            assert!(matches!(
                read_frame_bytes(&mut rd).await,
                Err(FrameError::Truncated)
            ));
            // Exactly at the limit is fine.
            let payload = vec![b' '; 100];
            let mut data = 100u32.to_be_bytes().to_vec();
            data.extend_from_slice(&payload);
            let mut rd = &data[..];
            let got = read_frame_bytes_limited(&mut rd, 100)
                .await
                .unwrap_or_default();
            assert_eq!(got.map(|b| b.len()), Some(100));
        });
    }

    #[test]
    fn oversized_message_not_encoded() {
        let big = Message::Event {
            event: Event::Log {
                level: LogLevel::Info,
                target: "t".into(),
                message: "x".repeat(MAX_FRAME),
            },
        };
        assert!(matches!(encode_message(&big), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn truncated_frames() {
        rt().block_on(async {
            // Partial length prefix.
            let mut rd = &[0u8, 0][..];
            assert!(matches!(
                read_frame_bytes(&mut rd).await,
                Err(FrameError::Truncated)
            ));
            // Full prefix, short payload.
            let mut data = 10u32.to_be_bytes().to_vec();
            data.extend_from_slice(b"{\"a\"");
            let mut rd = data.as_slice();
            assert!(matches!(
                read_frame_bytes(&mut rd).await,
                Err(FrameError::Truncated)
            ));
            // Clean EOF.
            let mut rd = &[][..];
            assert!(matches!(read_frame_bytes(&mut rd).await, Ok(None)));
        });
    }

    #[test]
    fn garbage_json_rejected() {
        rt().block_on(async {
            for payload in [
                &b"not json"[..],
                b"{\"type\":\"Nope\"}",
                b"{\"type\":\"Ping\",\"seq\":1,\"extra\":2}",
                b"{\"type\":\"Request\",\"id\":1,\"op\":{\"op\":\"SetMtu\",\"ifname\":\"x\"}}",
                b"\xff\xfe",
            ] {
                let mut data = (payload.len() as u32).to_be_bytes().to_vec();
                data.extend_from_slice(payload);
                let mut rd = data.as_slice();
                assert!(
                    matches!(read_message(&mut rd).await, Err(FrameError::Json(_))),
                    "payload {:?} accepted",
                    String::from_utf8_lossy(payload)
                );
            }
        });
    }

    #[test]
    fn wire_shape_is_documented_shape() {
        let m = Message::Request {
            id: 7,
            op: Op::SetMtu {
                ifname: "eth0".into(),
                mtu: 1400,
            },
        };
        let v = serde_json::to_value(&m).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({"type":"Request","id":7,"op":{"op":"SetMtu","ifname":"eth0","mtu":1400}})
        );
        let r = Message::Response {
            id: 7,
            result: Ok(Reply::JobId(3)),
        };
        let v = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({"type":"Response","id":7,"result":{"Ok":{"reply":"JobId","value":3}}})
        );
    }

    // Known answers computed independently with
    // openssl dgst -sha256 -hmac s3cret over label ‖ [1;32] ‖ [2;32] (and Python's hmac module).
    const KAT_CLIENT: &str = "8213826dab10bcab5fd1f4043e6a160885c65993540dc056e90bced88dea10ac";
    const KAT_AGENT: &str = "0bdf7b5252a3524e87f7f29684312d6ce55c546e7ba6d3bbd565b123f9638ea5";

    #[test]
    fn handshake_mac_math() {
        let secret = b"s3cret";
        let an = [1u8; 32];
        let cn = [2u8; 32];
        let c = client_mac(secret, &an, &cn);
        let a = agent_mac(secret, &cn, &an);
        assert_eq!(hex::encode(c), KAT_CLIENT);
        assert_eq!(hex::encode(a), KAT_AGENT);
        assert_ne!(c, a, "the two directions must differ");
        assert!(verify_client_mac(secret, &an, &cn, &hex::encode(c)));
        assert!(verify_agent_mac(secret, &cn, &an, &hex::encode(a)));
        // Wrong secret, swapped nonces, reflected MAC, garbage hex all fail.
        assert!(!verify_client_mac(b"other", &an, &cn, &hex::encode(c)));
        assert!(!verify_client_mac(secret, &cn, &an, &hex::encode(c)));
        assert!(!verify_client_mac(secret, &an, &cn, &hex::encode(a)));
        assert!(!verify_agent_mac(secret, &cn, &an, &hex::encode(c)));
        assert!(!verify_client_mac(secret, &an, &cn, "zz"));
        assert!(!verify_client_mac(secret, &an, &cn, &hex::encode(&c[..16])));
        // A replay against a fresh agent nonce fails.
        let an2 = [3u8; 32];
        assert!(!verify_client_mac(secret, &an2, &cn, &hex::encode(c)));
    }

    #[test]
    fn nonces_and_secrets() {
        let a = new_nonce();
        let b = new_nonce();
        assert_ne!(a, b);
        assert_eq!(parse_nonce(&hex::encode(a)), Some(a));
        assert_eq!(parse_nonce("abcd"), None);
        assert_eq!(parse_nonce("zz"), None);
        assert_eq!(normalize_secret(b"abc\n"), Some(b"abc".to_vec()));
        assert_eq!(normalize_secret(b"  a b\r\n"), Some(b"a b".to_vec()));
        assert_eq!(normalize_secret(b"\n \n"), None);
        assert_eq!(normalize_secret(b""), None);
    }

    #[test]
    fn ping_pass_rule() {
        let ping = JobSpec::Ping {
            dst: "198.18.0.1".into(),
            src: None,
            count: 1,
            interval_s: 1.0,
            size: None,
            ipv6: false,
        };
        assert!(ping.exit_code_passes(0));
        assert!(ping.exit_code_passes(1));
        assert!(!ping.exit_code_passes(2));
        let cpu = JobSpec::CpuStat { interval_ms: 10 };
        assert!(cpu.exit_code_passes(0));
        assert!(!cpu.exit_code_passes(1));
    }
}
