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

mod links;
pub use links::*;
mod tunables;
pub use tunables::*;
mod xdp;
pub use xdp::*;
mod xfrm;
pub use xfrm::*;

/// Version of this protocol; both sides must speak the same one.
pub const PROTOCOL_VERSION: u32 = 2;

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
    /// A frame longer than the limit in force (the handshake's is lower than [`MAX_FRAME`]).
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
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
    /// The agent's kernel lacks a feature the operation needs (no 802.1Q, bonding or team
    /// support, no bridge VLAN filtering); the message names the feature and kernel module.
    Unsupported,
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
    /// End the session: the agent answers, cleans up and closes the connection.
    Bye,
    // --- Links, routes, neighbours and namespaces (src/agent/links.rs, src/agent/netns.rs).
    // Everything these create or change is journaled and undone in reverse order at
    // EndRecipe and when the connection ends.
    /// Create a link (down unless `up`); replies `Interfaces` with it (and a veth's peer).
    CreateLink {
        ifname: String,
        link: LinkSpec,
        /// Port of this master from the start (`ip link add … master BR`).
        #[serde(default)]
        master: Option<String>,
        #[serde(default)]
        mtu: Option<u32>,
        #[serde(default)]
        up: bool,
    },
    /// Delete a link this session created (a veth: the pair).
    DeleteLink {
        ifname: String,
    },
    /// Make `ifname` a port of `master` (bridge, bond or team).
    Enslave {
        ifname: String,
        master: String,
        /// Team ports only: teamd per-port options.
        #[serde(default)]
        team_port: Option<TeamPortConfig>,
    },
    /// Detach `ifname` from its master.
    Release {
        ifname: String,
    },
    BridgeVlanAdd {
        vlan: BridgeVlan,
    },
    BridgeVlanDel {
        vlan: BridgeVlan,
    },
    AddRoute {
        route: RouteSpec,
    },
    DelRoute {
        route: RouteSpec,
    },
    /// Add or replace a neighbour entry.
    AddNeighbour {
        neighbour: NeighbourSpec,
    },
    DelNeighbour {
        neighbour: NeighbourSpec,
    },
    /// Remove one address from an interface.
    DelAddress {
        ifname: String,
        addr: String,
    },
    /// Create a static L2TPv3 tunnel (`ip l2tp add tunnel …`), deleted with its sessions when
    /// the recipe ends.
    AddL2tpTunnel {
        tunnel: L2tpTunnelSpec,
    },
    /// Create a session of an L2TP tunnel with its Ethernet device (`ip l2tp add session name
    /// IFNAME …`); it goes with its tunnel.
    AddL2tpSession {
        session: L2tpSessionSpec,
    },
    /// Create a network namespace inside the agent (`[A-Za-z0-9_-]`, 1–32 characters).
    CreateNetns {
        name: String,
    },
    /// Delete an agent namespace: its jobs are killed, links it holds that existed before
    /// are moved back, links created in it are deleted.
    DeleteNetns {
        name: String,
    },
    /// Move a link into an agent namespace, or (`netns` null) into the agent's own.
    MoveLink {
        ifname: String,
        #[serde(default)]
        netns: Option<String>,
    },
    /// Run `op` inside an agent namespace (not StartRecipe, EndRecipe, Bye, CreateNetns,
    /// DeleteNetns or another InNetns). Job ids are agent-wide.
    InNetns {
        netns: String,
        /// (Not `op`: that is the tag of this object.)
        inner: Box<Op>,
    },
    // --- Device and host tunables (src/agent/tunables.rs, docs/PROTOCOL.md §6.2). Every
    // change is journaled with the links and undone in reverse order at EndRecipe and when
    // the connection ends.
    /// Pause-frame parameters (`ethtool -a`); `Unsupported` when the device has none.
    GetPause {
        ifname: String,
    },
    /// Set pause frames (`ethtool -A`); unset fields are left alone.
    SetPause {
        ifname: String,
        #[serde(default)]
        autoneg: Option<bool>,
        #[serde(default)]
        rx: Option<bool>,
        #[serde(default)]
        tx: Option<bool>,
    },
    GetCoalesce {
        ifname: String,
    },
    /// Set interrupt coalescing (`ethtool -C`); only the parameters present change.
    SetCoalesce {
        ifname: String,
        /// Boxed: 20 optional numbers would size every message.
        settings: Box<Coalesce>,
    },
    GetChannels {
        ifname: String,
    },
    /// Set channel counts (`ethtool -L`); only the counts present change.
    SetChannels {
        ifname: String,
        channels: ChannelCounts,
    },
    /// RSS hash function, key and input transformations (`ethtool -x`).
    GetRss {
        ifname: String,
    },
    /// Set the RSS hash function, key or input transformations (`ethtool -X`).
    SetRss {
        ifname: String,
        #[serde(default)]
        hfunc: Option<String>,
        /// `aa:bb:…`, as long as the device's key.
        #[serde(default)]
        key: Option<String>,
        /// The input transformations to have on (`[]`: `xfrm none`).
        #[serde(default)]
        xfrm: Option<Vec<String>>,
    },
    /// The header fields hashed for a flow type (`ethtool -n DEV rx-flow-hash TYPE`), as
    /// ethtool's letters (`sdfn`).
    GetRxFlowHash {
        ifname: String,
        flow_type: FlowType,
    },
    /// `ethtool -N DEV rx-flow-hash TYPE FIELDS`.
    SetRxFlowHash {
        ifname: String,
        flow_type: FlowType,
        fields: String,
    },
    /// The device's IRQs with their affinity.
    GetIrqs {
        ifname: String,
    },
    /// Pin the device's IRQs to `cpus` (/proc/irq/N/smp_affinity_list).
    SetIrqAffinity {
        ifname: String,
        cpus: Vec<u32>,
        #[serde(default)]
        policy: IrqPolicy,
        /// Stop irqbalance (systemctl) for the session first, as upstream does.
        #[serde(default)]
        stop_irqbalance: bool,
    },
    /// The host's online CPUs and the agent's CPU affinity.
    GetCpus,
    /// Write /proc/sys/vm/drop_caches (nothing to restore).
    DropCaches {
        #[serde(default)]
        what: DropCachesWhat,
    },
    /// Turbo boost on or off (intel_pstate `no_turbo` or cpufreq `boost`).
    SetTurboBoost {
        enabled: bool,
    },
    /// Disable every CPU idle state whose exit latency is at least `min_latency_us` on every
    /// CPU (`cpupower idle-set -D`; 0 disables all).
    DisableIdleStates {
        min_latency_us: u64,
    },
    /// Give each listed IRQ of the device its own affinity list (the `previous` lists of an
    /// `IrqsPinned` reply, to put a pinning back). Every IRQ must be one of the device's.
    RestoreIrqAffinity {
        ifname: String,
        irqs: Vec<IrqAffinity>,
    },
    /// Enable the listed CPU idle states again (the `states` of a `DisableIdleStates`
    /// reply).
    EnableIdleStates {
        states: Vec<IdleStateId>,
    },
    // --- IPsec (src/agent/xfrm.rs). What these add is deleted in reverse order at EndRecipe
    // and when the connection ends; nothing else of the host's IPsec configuration is
    // touched.
    /// Add IPsec states, then policies (`ip xfrm state add`, `ip xfrm policy add`); all or
    /// nothing.
    XfrmAdd {
        #[serde(default)]
        states: Vec<XfrmState>,
        #[serde(default)]
        policies: Vec<XfrmPolicy>,
    },
    /// Delete policies, then states, that this session added.
    XfrmDel {
        #[serde(default)]
        states: Vec<XfrmStateId>,
        #[serde(default)]
        policies: Vec<XfrmPolicyId>,
    },
    /// Give a MACsec link (one made with CreateLink) its receive channel and SAs (`ip macsec
    /// add`); they go with the link.
    MacsecConfigure {
        ifname: String,
        sas: MacsecSas,
    },
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
            Op::Bye => "Bye",
            Op::CreateLink { .. } => "CreateLink",
            Op::DeleteLink { .. } => "DeleteLink",
            Op::Enslave { .. } => "Enslave",
            Op::Release { .. } => "Release",
            Op::BridgeVlanAdd { .. } => "BridgeVlanAdd",
            Op::BridgeVlanDel { .. } => "BridgeVlanDel",
            Op::AddRoute { .. } => "AddRoute",
            Op::DelRoute { .. } => "DelRoute",
            Op::AddNeighbour { .. } => "AddNeighbour",
            Op::DelNeighbour { .. } => "DelNeighbour",
            Op::DelAddress { .. } => "DelAddress",
            Op::AddL2tpTunnel { .. } => "AddL2tpTunnel",
            Op::AddL2tpSession { .. } => "AddL2tpSession",
            Op::CreateNetns { .. } => "CreateNetns",
            Op::DeleteNetns { .. } => "DeleteNetns",
            Op::MoveLink { .. } => "MoveLink",
            Op::InNetns { inner, .. } => inner.name(),
            Op::GetPause { .. } => "GetPause",
            Op::SetPause { .. } => "SetPause",
            Op::GetCoalesce { .. } => "GetCoalesce",
            Op::SetCoalesce { .. } => "SetCoalesce",
            Op::GetChannels { .. } => "GetChannels",
            Op::SetChannels { .. } => "SetChannels",
            Op::GetRss { .. } => "GetRss",
            Op::SetRss { .. } => "SetRss",
            Op::GetRxFlowHash { .. } => "GetRxFlowHash",
            Op::SetRxFlowHash { .. } => "SetRxFlowHash",
            Op::GetIrqs { .. } => "GetIrqs",
            Op::SetIrqAffinity { .. } => "SetIrqAffinity",
            Op::GetCpus => "GetCpus",
            Op::DropCaches { .. } => "DropCaches",
            Op::SetTurboBoost { .. } => "SetTurboBoost",
            Op::DisableIdleStates { .. } => "DisableIdleStates",
            Op::RestoreIrqAffinity { .. } => "RestoreIrqAffinity",
            Op::EnableIdleStates { .. } => "EnableIdleStates",
            Op::XfrmAdd { .. } => "XfrmAdd",
            Op::XfrmDel { .. } => "XfrmDel",
            Op::MacsecConfigure { .. } => "MacsecConfigure",
        }
    }
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
    // --- Tunables (docs/PROTOCOL.md §6.2).
    Pause(PauseParams),
    Coalesce(Box<Coalesce>),
    Channels(Channels),
    Rss(RssInfo),
    /// GetRxFlowHash: ethtool's letters, sorted (`dfns`); empty when nothing is hashed.
    FlowHash(String),
    Irqs(Vec<IrqInfo>),
    IrqsPinned(IrqPinning),
    Cpus(CpuInfo),
    /// A `Set…` tunable's outcome.
    Tuned(SetOutcome),
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
    /// `perf record -a -o perf.data [-g] [-F freq] [-C cpus] [-e event]… [-- sleep N]` in a
    /// directory the agent chooses; without `duration_s` it records until StopJob (SIGINT).
    /// The file comes back in `JobResult.data` ([`PerfData`]), size-capped.
    LinuxPerf {
        #[serde(default)]
        duration_s: Option<u32>,
        /// CPUs to record (`-C`); all when unset.
        #[serde(default)]
        record_cpus: Option<Vec<u32>>,
        /// Events (`-e`), perf's syntax (`cycles`, `sched:sched_switch`).
        #[serde(default)]
        events: Vec<String>,
        /// Call graphs (`-g`).
        #[serde(default)]
        call_graph: bool,
        /// Sampling frequency in Hz (`-F`).
        #[serde(default)]
        frequency: Option<u32>,
    },
    /// Packet capture for upstream's `PacketAssert`: `tcpdump -n -l --immediate-mode -p -i DEV FILTER`, one
    /// stdout line per packet, until stopped (StopJob, SIGINT). The filter is built by the
    /// agent from typed fields, never sent as text.
    Capture {
        /// The device to capture on (in the job's namespace).
        device: String,
        #[serde(default)]
        filter: CaptureFilter,
    },
    /// Built-in request/response generator, server side (our replacement for neper's
    /// `tcp_rr`/`tcp_crr`/`udp_rr` without `-c`; see `agent::rr` and docs/PROTOCOL.md).
    /// Listening when StartJob returns; ends when stopped or when its clients are done.
    /// The result's stdout is the generator's JSON report.
    RrServer {
        workload: RrWorkload,
        /// IP address to bind (no host names).
        bind: String,
        port: u16,
        /// Bytes of one request (read) and one response (written), 1..=1 MiB (UDP: 65507).
        request_size: u32,
        response_size: u32,
        /// The clients' test length; the server ends once it has served traffic for this
        /// long and then seen none for 2 s.
        duration_ms: u64,
        /// tcp_rr: connections to expect (the server ends when that many came and all closed).
        flows: Option<u32>,
        /// tcp_crr, udp_rr: serving threads (default 1); tcp_rr: one thread per connection.
        threads: Option<u32>,
        /// Sample interval (default 1000).
        interval_ms: Option<u64>,
        /// Pin every thread of the job to these CPUs.
        cpus: Option<Vec<u32>>,
    },
    /// Built-in request/response generator, client side (neper's `-c`).
    RrClient {
        workload: RrWorkload,
        /// Server IP address (no host names).
        server: String,
        port: u16,
        /// Local IP address to bind before connecting.
        bind: Option<String>,
        request_size: u32,
        response_size: u32,
        /// Test length (neper `-l`).
        duration_ms: u64,
        /// Flows (neper `-F`, default 1) spread over `threads` (neper `-T`, default = flows).
        flows: Option<u32>,
        threads: Option<u32>,
        /// Stop each flow after this many transactions (or at `duration_ms`, if first).
        transactions: Option<u64>,
        /// Sample interval (default 1000).
        interval_ms: Option<u64>,
        /// udp_rr: a response not back within this long is lost (default 200).
        loss_timeout_ms: Option<u64>,
        cpus: Option<Vec<u32>>,
    },
    /// The kernel's packet generator (module `pktgen`, loaded with `modprobe pktgen`), driven
    /// by the agent itself through /proc/net/pktgen (no shell): `reset`, the devices and their
    /// settings ([`PktgenDevice::commands`]), `start` for `duration_s` (or until stopped),
    /// `stop`, `rem_device_all`, `reset`. One pktgen job per namespace at a time. The result's
    /// data: `{"<if>@<cpu>": [{"t": unix_secs, "text": "<the device's pktgen file>"}, …]}`,
    /// read every second from the start (the first read is the baseline).
    Pktgen {
        devices: Vec<PktgenDevice>,
        duration_s: u32,
    },
    /// `xdp-bench <command> <interface> …` ([`xdp_bench_argv`]); the agent sends SIGINT after
    /// `duration_s` (xdp-bench detaches its program on SIGINT). The result's data: every
    /// stdout line with the time it was read, `[{"t": unix_secs, "line": "…"}, …]`.
    XdpBench {
        command: XdpBenchCommand,
        interface: String,
        xdp_mode: XdpMode,
        #[serde(default)]
        load_mode: Option<XdpLoadMode>,
        #[serde(default)]
        packet_operation: Option<XdpPacketOperation>,
        #[serde(default)]
        remote_action: Option<XdpRemoteAction>,
        interval_s: u32,
        duration_s: u32,
    },
    /// `xdp-bench redirect-cpu <interface> -c <cpu>… …` ([`xdp_bench_redirect_cpu_argv`]);
    /// SIGINT after `duration_s`; data as [`JobSpec::XdpBench`].
    XdpBenchRedirectCpu {
        interface: String,
        cpus: Vec<u32>,
        program: XdpRedirectProgram,
        remote_action: XdpRemoteAction,
        qsize: u32,
        interval_s: u32,
        duration_s: u32,
        #[serde(default)]
        xdp_mode: Option<XdpMode>,
    },
    /// `xdp-forward load|unload <ingress> <egress>` (xdp-tools ≥ 1.5).
    XdpForward {
        load: bool,
        ingress: String,
        egress: String,
    },
    /// In-process sampler of interface packet and byte counters (/proc/net/dev of the job's
    /// namespace) every `interval_ms` until stopped (upstream `InterfaceStatsMonitor`). The
    /// result's data: `[{"t": unix_secs, "ifaces": {"<if>": {"rx_packets": n, "tx_packets": n,
    /// "rx_bytes": n, "tx_bytes": n}}}, …]`.
    IfStats {
        interfaces: Vec<String>,
        interval_ms: u64,
    },
}

/// What a [`JobSpec::Capture`] keeps: every field set must match (`and`); none set: every
/// packet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureFilter {
    /// IP protocol (next header) number: 47 GRE, 4 IPIP, 41 IPv6, 17 UDP, 50 ESP.
    #[serde(default)]
    pub proto: Option<u8>,
    /// Source address of the outer IP header.
    #[serde(default)]
    pub src: Option<std::net::IpAddr>,
    /// Destination address of the outer IP header.
    #[serde(default)]
    pub dst: Option<std::net::IpAddr>,
    /// UDP destination port.
    #[serde(default)]
    pub udp_dport: Option<u16>,
}

impl CaptureFilter {
    /// The pcap filter expression as argv words (`ip proto 47 and src host A and …`); the
    /// family is the addresses' (IPv4 without addresses).
    pub fn words(&self) -> Vec<String> {
        let v6 = self.src.or(self.dst).is_some_and(|a| a.is_ipv6());
        let fam = if v6 { "ip6" } else { "ip" };
        let mut terms: Vec<String> = Vec::new();
        if let Some(p) = self.proto {
            terms.push(format!("{fam} proto {p}"));
        }
        if let Some(a) = self.src {
            terms.push(format!("src host {a}"));
        }
        if let Some(a) = self.dst {
            terms.push(format!("dst host {a}"));
        }
        if let Some(p) = self.udp_dport {
            terms.push(format!("udp dst port {p}"));
        }
        let mut out = Vec::new();
        for (i, t) in terms.iter().enumerate() {
            if i > 0 {
                out.push("and".to_string());
            }
            out.extend(t.split(' ').map(str::to_string));
        }
        out
    }
}

/// Workload of the built-in request/response generator (upstream's neper workload names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RrWorkload {
    /// Persistent TCP connection: request, response, repeat.
    TcpRr,
    /// Per transaction: connect, request, response, close.
    TcpCrr,
    /// UDP datagram request and response.
    UdpRr,
}

impl JobSpec {
    /// The job's argv (None for the in-process CPU sampler). A job's command line is part of
    /// the protocol: the agent runs it, the controller records it in the results.
    pub fn argv(&self) -> Option<Vec<String>> {
        match self {
            JobSpec::Ping {
                dst,
                src,
                count,
                interval_s,
                size,
                ipv6,
            } => {
                let mut v = vec!["ping".to_string(), dst.clone()];
                if *ipv6 {
                    v.push("-6".into());
                }
                v.extend(["-c".into(), count.to_string()]);
                v.extend(["-i".into(), format!("{interval_s:.6}")]);
                if let Some(s) = src {
                    v.extend(["-I".into(), s.clone()]);
                }
                if let Some(s) = size {
                    v.extend(["-s".into(), s.to_string()]);
                }
                Some(v)
            }
            JobSpec::IperfServer {
                bind, port, oneoff, ..
            } => {
                let mut v: Vec<String> = ["iperf3", "-s", "-B", bind, "-J", "-p"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                v.push(port.to_string());
                if *oneoff {
                    v.push("-1".into());
                }
                Some(v)
            }
            JobSpec::IperfClient {
                server,
                port,
                cport,
                duration_s,
                proto,
                blksize,
                parallel,
                ..
            } => {
                let mut v: Vec<String> = ["iperf3", "-c", server, "-b", "0/1000", "-J", "-t"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                v.push(duration_s.to_string());
                match proto {
                    IperfProto::Tcp => {}
                    IperfProto::Udp => v.push("--udp".into()),
                    IperfProto::Sctp => v.push("--sctp".into()),
                }
                if let Some(l) = blksize {
                    v.extend(["-l".into(), l.to_string()]);
                }
                if let Some(p) = parallel {
                    v.extend(["-P".into(), p.to_string()]);
                }
                v.extend(["-p".into(), port.to_string()]);
                if let Some(c) = cport {
                    v.extend(["--cport".into(), c.to_string()]);
                }
                Some(v)
            }
            JobSpec::CpuStat { .. } => None,
            JobSpec::Capture { device, filter } => {
                // Immediate mode: each packet is printed when it arrives, not when a buffer fills
                // or times out, so a stop right after the traffic loses nothing.
                let mut v: Vec<String> = [
                    "tcpdump",
                    "-n",
                    "-l",
                    "--immediate-mode",
                    "-p",
                    "-i",
                    device,
                ]
                .into_iter()
                .map(str::to_string)
                .collect();
                v.extend(filter.words());
                Some(v)
            }
            JobSpec::LinuxPerf { .. } => crate::agent::tunables::perf_argv(self),
            // In-process generator: no program to run.
            JobSpec::RrServer { .. } | JobSpec::RrClient { .. } => None,
            JobSpec::XdpBench {
                command,
                interface,
                xdp_mode,
                load_mode,
                packet_operation,
                remote_action,
                interval_s,
                ..
            } => Some(line_buffered(xdp_bench_argv(
                *command,
                interface,
                *interval_s,
                *load_mode,
                *packet_operation,
                *remote_action,
                *xdp_mode,
            ))),
            JobSpec::XdpBenchRedirectCpu {
                interface,
                cpus,
                program,
                remote_action,
                qsize,
                interval_s,
                xdp_mode,
                ..
            } => Some(line_buffered(xdp_bench_redirect_cpu_argv(
                interface,
                cpus,
                *program,
                *remote_action,
                *interval_s,
                *qsize,
                *xdp_mode,
            ))),
            JobSpec::XdpForward {
                load,
                ingress,
                egress,
            } => Some(vec![
                "xdp-forward".into(),
                if *load { "load" } else { "unload" }.into(),
                ingress.clone(),
                egress.clone(),
            ]),
            // In-process: the agent writes /proc/net/pktgen and reads /proc/net/dev itself.
            JobSpec::Pktgen { .. } | JobSpec::IfStats { .. } => None,
        }
    }

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

/// The one table of offload feature names: `ethtool -K`'s legacy aliases as
/// `(short name, the name `ethtool -k` prints, the kernel's feature name)`.
pub const OFFLOAD_ALIASES: &[(&str, &str, &str)] = &[
    ("rx", "rx-checksumming", "rx-checksum"),
    ("tx", "tx-checksumming", "tx-checksum-ip-generic"),
    ("sg", "scatter-gather", "tx-scatter-gather"),
    ("tso", "tcp-segmentation-offload", "tx-tcp-segmentation"),
    ("ufo", "udp-fragmentation-offload", "tx-udp-fragmentation"),
    (
        "gso",
        "generic-segmentation-offload",
        "tx-generic-segmentation",
    ),
    ("gro", "generic-receive-offload", "rx-gro"),
    ("lro", "large-receive-offload", "rx-lro"),
    ("rxvlan", "rx-vlan-offload", "rx-vlan-hw-parse"),
    ("txvlan", "tx-vlan-offload", "tx-vlan-hw-insert"),
    ("ntuple", "ntuple-filters", "rx-ntuple-filter"),
    ("rxhash", "receive-hashing", "rx-hashing"),
];

/// The kernel's netdev feature names (net/ethtool/common.c `netdev_features_strings`) that
/// `ethtool -K` accepts besides the aliases.
pub const KERNEL_FEATURES: &[&str] = &[
    "tx-scatter-gather",
    "tx-checksum-ipv4",
    "tx-checksum-ip-generic",
    "tx-checksum-ipv6",
    "highdma",
    "tx-scatter-gather-fraglist",
    "tx-vlan-hw-insert",
    "rx-vlan-hw-parse",
    "rx-vlan-filter",
    "tx-vlan-stag-hw-insert",
    "rx-vlan-stag-hw-parse",
    "rx-vlan-stag-filter",
    "vlan-challenged",
    "tx-generic-segmentation",
    "tx-lockless",
    "netns-local",
    "rx-gro",
    "rx-gro-hw",
    "rx-lro",
    "tx-tcp-segmentation",
    "tx-gso-robust",
    "tx-tcp-ecn-segmentation",
    "tx-tcp-mangleid-segmentation",
    "tx-tcp6-segmentation",
    "tx-tcp-accecn-segmentation",
    "tx-fcoe-segmentation",
    "tx-gre-segmentation",
    "tx-gre-csum-segmentation",
    "tx-ipxip4-segmentation",
    "tx-ipxip6-segmentation",
    "tx-udp_tnl-segmentation",
    "tx-udp_tnl-csum-segmentation",
    "tx-gso-partial",
    "tx-tunnel-remcsum-segmentation",
    "tx-sctp-segmentation",
    "tx-esp-segmentation",
    "tx-udp-segmentation",
    "tx-udp-fragmentation",
    "tx-gso-list",
    "tx-checksum-fcoe-crc",
    "tx-checksum-sctp",
    "fcoe-mtu",
    "rx-ntuple-filter",
    "rx-hashing",
    "rx-checksum",
    "tx-nocache-copy",
    "loopback",
    "rx-fcs",
    "rx-all",
    "l2-fwd-offload",
    "hw-tc-offload",
    "esp-hw-offload",
    "esp-tx-csum-hw-offload",
    "rx-udp_tunnel-port-offload",
    "tls-hw-record",
    "tls-hw-tx-offload",
    "tls-hw-rx-offload",
    "rx-gro-list",
    "macsec-hw-offload",
    "rx-udp-gro-forwarding",
    "hsr-tag-ins-offload",
    "hsr-tag-rm-offload",
    "hsr-fwd-offload",
    "hsr-dup-offload",
];

/// Whether `ethtool -K` knows the feature name (a short or long alias, or a kernel name).
pub fn is_offload_name(name: &str) -> bool {
    OFFLOAD_ALIASES
        .iter()
        .any(|(short, long, _)| *short == name || *long == name)
        || KERNEL_FEATURES.contains(&name)
}

/// Map an upstream/ethtool short feature name (`gro`) to the long name `ethtool -k` prints
/// (`generic-receive-offload`); other names are returned unchanged.
pub fn offload_long_name(name: &str) -> &str {
    OFFLOAD_ALIASES
        .iter()
        .find(|(short, _, _)| *short == name)
        .map_or(name, |(_, long, _)| long)
}

/// Map the long name `ethtool -k` prints (`generic-receive-offload`) to the short name
/// upstream's offload combinations use (`gro`); other names are returned unchanged.
pub fn offload_short_name(name: &str) -> &str {
    OFFLOAD_ALIASES
        .iter()
        .find(|(_, long, _)| *long == name)
        .map_or(name, |(short, _, _)| short)
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
    let max = max.min(MAX_FRAME);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
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
    let too_large = || FrameError::TooLarge {
        len: payload.len(),
        max: MAX_FRAME,
    };
    if payload.len() > MAX_FRAME {
        return Err(too_large());
    }
    let len = u32::try_from(payload.len()).map_err(|_| too_large())?;
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
/// nothing is left, or if what is left is blank: only whitespace in the Unicode sense (`\v`,
/// no-break space U+00A0, U+2003, U+3000, …) or invisible format characters (zero-width space,
/// byte-order mark). Both sides apply it: the agent to its secret, the controller to the pool's.
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
    if is_blank_secret(s) {
        None
    } else {
        Some(s.to_vec())
    }
}

/// Whether a secret has no visible content: empty, or (as UTF-8) only whitespace and
/// zero-width characters. Bytes that are not UTF-8 are content.
fn is_blank_secret(s: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(s) else {
        return false;
    };
    text.chars().all(|c| {
        c.is_whitespace()
            || matches!(
                c,
                '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{180e}'
            )
    })
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
                Err(FrameError::TooLarge { len, max }) => {
                    assert_eq!((len, max), (0xffff_ffff, MAX_FRAME))
                }
                other => panic!("expected TooLarge, got {other:?}"),
            }
            let just_over = ((MAX_FRAME + 1) as u32).to_be_bytes();
            let mut rd = &just_over[..];
            assert!(matches!(
                read_frame_bytes(&mut rd).await,
                Err(FrameError::TooLarge { .. })
            ));
        });
    }

    #[test]
    fn handshake_limit_and_lazy_buffer() {
        rt().block_on(async {
            // Over the handshake limit: refused on the length alone.
            let over = ((MAX_HANDSHAKE_FRAME + 1) as u32).to_be_bytes();
            let mut rd = &over[..];
            let e = read_message_limited(&mut rd, MAX_HANDSHAKE_FRAME).await;
            assert!(matches!(
                e,
                Err(FrameError::TooLarge { len, max })
                    if len == MAX_HANDSHAKE_FRAME + 1 && max == MAX_HANDSHAKE_FRAME
            ));
            // The message names the limit in force, not MAX_FRAME.
            assert_eq!(
                e.err().map(|e| e.to_string()).unwrap_or_default(),
                "frame of 65537 bytes exceeds the 65536-byte limit"
            );
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
        assert!(matches!(
            encode_message(&big),
            Err(FrameError::TooLarge { max: MAX_FRAME, .. })
        ));
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
        // Blank in the Unicode sense is empty too (issue 14, item 9).
        for blank in [
            "\x0b",
            " \x0b\n",
            "\u{a0}",
            "\u{a0}\n",
            "\u{2003}\u{3000}",
            "\u{85}\u{2028}\u{2029}",
            "\u{feff}",
            "\u{200b}\u{200d}",
        ] {
            assert_eq!(normalize_secret(blank.as_bytes()), None, "{blank:?}");
        }
        // Content keeps its inner (and non-ASCII outer) whitespace; only ASCII is stripped.
        assert_eq!(
            normalize_secret("a\u{a0}b\n".as_bytes()),
            Some("a\u{a0}b".as_bytes().to_vec())
        );
        assert_eq!(
            normalize_secret("\u{a0}x".as_bytes()),
            Some("\u{a0}x".as_bytes().to_vec())
        );
        assert_eq!(normalize_secret(b"\xff"), Some(b"\xff".to_vec()));
        assert_eq!(normalize_secret(b"\x0bx"), Some(b"\x0bx".to_vec()));
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
