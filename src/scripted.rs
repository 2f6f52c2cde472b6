//! A scripted in-memory agent for recipe tests without root.
//!
//! [`ScriptedAgent::endpoint`] hands back an [`AgentEndpoint`] whose transport is one end of an
//! in-memory duplex; a task on the other end speaks the real protocol ([`crate::protocol`]):
//! hello, requests, responses, keepalive pongs. Device operations change a small in-memory
//! device model (addresses, MTU, link state, offloads) and always succeed unless the script
//! says an operation fails; jobs are answered from the script: ping prints iputils-style
//! output, iperf3 prints `-J` JSON, the CPU sampler returns `/proc/stat` samples. Time is
//! virtual (it starts at [`T0`] and advances only by the jobs' durations), so a run's figures
//! are the same every time.
//!
//! Every request is appended to a shared [`Journal`], so a test can check the order of what a
//! recipe did (configuration, deconfiguration) and the jobs it started.

use crate::protocol::{
    self, ErrorKind, ErrorReply, HelloInfo, InterfaceInfo, JobResult, JobSpec, Message, Offload,
    Op, Reply, PROTOCOL_VERSION,
};
use crate::provision::{AgentEndpoint, IfaceBinding, Transport};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Virtual start time of every scripted agent (Unix seconds).
pub const T0: f64 = 1_700_000_000.0;

/// One recorded request.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub host: String,
    pub op: Op,
}

/// Every request every scripted agent of a test received, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<JournalEntry>>>);

impl Journal {
    fn push(&self, host: &str, op: &Op) {
        lock(&self.0).push(JournalEntry {
            host: host.to_string(),
            op: op.clone(),
        });
    }

    /// A copy of the entries so far.
    pub fn entries(&self) -> Vec<JournalEntry> {
        lock(&self.0).clone()
    }

    /// `host:OpName` for every request except the keepalive-free bookkeeping ones
    /// (ListInterfaces, WaitJob, StopJob), in order.
    pub fn ops(&self) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter(|e| {
                !matches!(
                    e.op,
                    Op::ListInterfaces | Op::WaitJob { .. } | Op::StopJob { .. }
                )
            })
            .map(|e| format!("{}:{}", e.host, e.op.name()))
            .collect()
    }

    /// The job specs started, with their host.
    pub fn jobs(&self) -> Vec<(String, JobSpec)> {
        self.entries()
            .into_iter()
            .filter_map(|e| match e.op {
                Op::StartJob { spec } => Some((e.host, spec)),
                _ => None,
            })
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a scripted job does: its output and exit code, and how long it runs (virtual seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub duration: f64,
    pub data: Option<serde_json::Value>,
}

/// A job as the script sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCall {
    pub host: String,
    pub spec: JobSpec,
    /// Virtual Unix time the job started.
    pub started: f64,
    /// Virtual Unix time its result is collected (a server or sampler runs until then).
    pub now: f64,
}

type JobFn = dyn Fn(&JobCall) -> JobOutput + Send + Sync;

/// How the scripted agents answer.
#[derive(Clone)]
pub struct Script {
    /// Percentage of pings answered (per destination address; default: 100 for all).
    pub ping_received: Arc<dyn Fn(&str) -> u32 + Send + Sync>,
    /// Throughput of each iperf3 stream, bit/s.
    pub iperf_bps: f64,
    /// Requests (`host`, op name) answered with an error.
    pub failing_ops: Vec<(String, &'static str)>,
    /// Replaces the built-in job answers when set.
    pub jobs: Option<Arc<JobFn>>,
    /// The hosts' tunables (pause frames, coalescing, IRQs, CPUs, turbo boost, idle states).
    pub hw: HwScript,
    /// Transactions per second of each request/response flow (RrClient/RrServer jobs).
    pub rr_tps: f64,
    /// The matched NICs have 4 combined channels, RSS and rx-flow-hash, like a multi-queue
    /// virtio-net with RSS (otherwise they have none of these).
    pub multiqueue: bool,
    /// Stdout of a Capture job (tcpdump's lines) by its device; default: nothing captured.
    pub capture: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// Packets per second of every pktgen device, xdp-bench and interface counter.
    pub pps: f64,
}

/// The device and host tunables the scripted agents have. By default their NICs are like
/// veth (no pause frames, no coalescing, no IRQs) on 2-CPU hosts without turbo boost control,
/// idle states or irqbalance.
#[derive(Debug, Clone, PartialEq)]
pub struct HwScript {
    /// The matched NICs have pause frames (rx and tx on), coalescing (adaptive on, rx-usecs 3,
    /// rx-frames, tx-usecs, tx-frames 0) and three IRQs each, spread over every CPU.
    pub nic_hw: bool,
    /// Online CPUs per host (0 to n-1).
    pub cpus: u32,
    /// The hosts have a turbo boost switch (on).
    pub turbo: bool,
    /// The hosts have two idle states per CPU (latency 0 and 10 µs, enabled).
    pub idle_states: bool,
    /// irqbalance runs on the hosts.
    pub irqbalance: bool,
    /// With `nic_hw`: pause autonegotiation is on and the NICs ignore rx/tx while it is (as
    /// e1000e): a `SetPause` without `autoneg` off fails as the real agent's does when the
    /// values do not read back.
    pub pause_autoneg_sticky: bool,
}

impl Default for HwScript {
    fn default() -> Self {
        HwScript {
            nic_hw: false,
            cpus: 2,
            turbo: false,
            idle_states: false,
            irqbalance: false,
            pause_autoneg_sticky: false,
        }
    }
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script")
            .field("iperf_bps", &self.iperf_bps)
            .field("failing_ops", &self.failing_ops)
            .finish_non_exhaustive()
    }
}

impl Default for Script {
    fn default() -> Self {
        Script {
            ping_received: Arc::new(|_| 100),
            iperf_bps: 1e9,
            failing_ops: Vec::new(),
            jobs: None,
            capture: Arc::new(|_| String::new()),
            hw: HwScript::default(),
            rr_tps: 10_000.0,
            multiqueue: false,
            pps: 1e6,
        }
    }
}

impl Script {
    /// Pings to `dst` get `pct` % answers; others all.
    pub fn ping_received_to(mut self, dst: &str, pct: u32) -> Self {
        let dst = dst.to_string();
        let prev = self.ping_received.clone();
        self.ping_received = Arc::new(move |d| if d == dst { pct } else { prev(d) });
        self
    }

    /// Capture jobs print `lines(device)` (tcpdump's one line per packet).
    pub fn capture(mut self, lines: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.capture = Arc::new(lines);
        self
    }

    /// Every iperf3 stream measures `bps`.
    pub fn iperf_rate(mut self, bps: f64) -> Self {
        self.iperf_bps = bps;
        self
    }

    /// The hosts' tunables.
    pub fn hw(mut self, hw: HwScript) -> Self {
        self.hw = hw;
        self
    }

    /// Every request/response flow makes `tps` transactions per second (0: none, a report
    /// without transactions and without error).
    pub fn rr_rate(mut self, tps: f64) -> Self {
        self.rr_tps = tps;
        self
    }

    /// The matched NICs have channels, RSS and rx-flow-hash (see [`Script::multiqueue`]).
    pub fn multiqueue(mut self) -> Self {
        self.multiqueue = true;
        self
    }

    /// Every packet job measures `pps` packets per second.
    pub fn packet_rate(mut self, pps: f64) -> Self {
        self.pps = pps;
        self
    }

    /// `op` on `host` fails with an error reply.
    pub fn failing(mut self, host: &str, op: &'static str) -> Self {
        self.failing_ops.push((host.to_string(), op));
        self
    }

    /// The answer to a job: the script's own, or the built-in one.
    pub fn answer(&self, call: &JobCall) -> JobOutput {
        if let Some(f) = &self.jobs {
            return f(call);
        }
        self.builtin_answer(call)
    }

    /// The built-in answer to a job (what a custom `jobs` function can fall back to).
    pub fn builtin_answer(&self, call: &JobCall) -> JobOutput {
        match &call.spec {
            JobSpec::Ping {
                dst,
                src,
                count,
                interval_s,
                ..
            } => ping_output(
                dst,
                src.as_deref(),
                *count,
                *interval_s,
                (self.ping_received)(dst),
            ),
            JobSpec::IperfClient {
                duration_s,
                parallel,
                ..
            } => iperf_output(
                call.started,
                f64::from(*duration_s),
                parallel.unwrap_or(1),
                self.iperf_bps,
            ),
            // The server runs until its client is done (the virtual time of the collection).
            JobSpec::IperfServer { .. } => {
                iperf_output(call.started, call.now - call.started, 1, self.iperf_bps)
            }
            JobSpec::LinuxPerf { .. } => {
                use base64::Engine;
                let bytes = format!("PERFILE2 {} {}", call.host, call.started);
                JobOutput {
                    exit_code: 0,
                    stdout: String::new(),
                    stderr: String::new(),
                    duration: call.now - call.started,
                    data: Some(serde_json::json!({
                        "perf_data_b64": base64::engine::general_purpose::STANDARD.encode(bytes.as_bytes()),
                        "bytes": bytes.len(),
                        "perf_version": "scripted",
                    })),
                }
            }
            // A client runs its test length; a server until its client is done.
            JobSpec::RrClient {
                workload,
                duration_ms,
                ..
            } => rr_output(
                "client",
                *workload,
                call.started,
                *duration_ms as f64 / 1000.0,
                self.rr_tps,
            ),
            JobSpec::RrServer { workload, .. } => rr_output(
                "server",
                *workload,
                call.started,
                call.now - call.started,
                self.rr_tps,
            ),
            JobSpec::Capture { device, .. } => JobOutput {
                exit_code: 0,
                stdout: (self.capture)(device),
                stderr: String::new(),
                duration: call.now - call.started,
                data: None,
            },
            JobSpec::Pktgen { .. }
            | JobSpec::XdpBench { .. }
            | JobSpec::XdpBenchRedirectCpu { .. }
            | JobSpec::IfStats { .. }
            | JobSpec::XdpForward { .. } => packet_job_output(call, self.pps),
            JobSpec::CpuStat { .. } => {
                // One sample per whole second from the start to the collection.
                let n = (call.now - call.started).floor().max(1.0) as u64;
                JobOutput {
                    exit_code: 0,
                    stdout: String::new(),
                    stderr: String::new(),
                    duration: n as f64,
                    data: Some(serde_json::Value::Array(
                        (0..=n)
                            .map(|k| {
                                serde_json::json!({"t": call.started + k as f64, "text": proc_stat_at(k)})
                            })
                            .collect(),
                    )),
                }
            }
        }
    }
}

/// A pktgen device file (`/proc/net/pktgen/<if>@<cpu>`) after `sofar` packets, in the kernel's
/// layout.
pub fn pktgen_file(name: &str, sofar: u64) -> String {
    format!(
        "Params: count 0  min_pkt_size: 123  max_pkt_size: 123\n     frags: 0  delay: 0  clone_skb: 0  ifname: {name}\n     flows: 0 flowlen: 0\n     Flags: NO_TIMESTAMP  QUEUE_MAP_CPU\nCurrent:\n     pkts-sofar: {sofar}  errors: 0\n     started: 100us  stopped: 0us idle: 0us\n     seq_num: {}  cur_dst_mac_offset: 0  cur_src_mac_offset: 0\nResult: OK: {sofar}\n",
        sofar + 1
    )
}

/// The scripted packet jobs: `pps` packets per second, one sample per second.
fn packet_job_output(call: &JobCall, pps: f64) -> JobOutput {
    use serde_json::json;
    let ok = |duration: f64, data: Option<serde_json::Value>| JobOutput {
        exit_code: 0,
        stdout: String::new(),
        stderr: String::new(),
        duration,
        data,
    };
    let t0 = call.started;
    match &call.spec {
        JobSpec::Pktgen {
            devices,
            duration_s,
        } => {
            let mut m = serde_json::Map::new();
            for d in devices {
                let name = d.name();
                let samples: Vec<serde_json::Value> = (0..=u64::from(*duration_s))
                    .map(|k| json!({"t": t0 + k as f64, "text": pktgen_file(&name, (pps * k as f64) as u64)}))
                    .collect();
                m.insert(name, serde_json::Value::Array(samples));
            }
            ok(f64::from(*duration_s), Some(serde_json::Value::Object(m)))
        }
        JobSpec::XdpBench { duration_s, .. } => {
            let mut lines: Vec<serde_json::Value> = (1..=u64::from(*duration_s))
                .map(|k| json!({"t": t0 + k as f64, "line": format!("Summary    {:>10} rx/s          0 err/s", pps as u64)}))
                .collect();
            lines.push(
                json!({"t": t0 + f64::from(*duration_s), "line": "  Packets received    : 1"}),
            );
            ok(
                f64::from(*duration_s),
                Some(serde_json::Value::Array(lines)),
            )
        }
        JobSpec::XdpBenchRedirectCpu {
            interface,
            cpus,
            duration_s,
            ..
        } => {
            let mut lines = Vec::new();
            let per = pps as u64 / cpus.len().max(1) as u64;
            for k in 1..=u64::from(*duration_s) {
                let t = t0 + k as f64;
                let mut push = |l: String| lines.push(json!({"t": t, "line": l}));
                push(format!(
                    "{interface}->?         {:>10} rx/s          0 err,drop/s",
                    pps as u64
                ));
                push(format!(
                    "  receive total        {:>10} pkt/s          0 drop/s          0 error/s",
                    pps as u64
                ));
                push(format!(
                    "  kthread total        {:>10} pkt/s          0 drop/s          0 sched",
                    per * cpus.len() as u64
                ));
                for c in cpus {
                    push(format!(
                        "    cpu:{c:<14} {per:>10} pkt/s          0 drop/s          0 sched"
                    ));
                }
                push(String::new());
            }
            ok(
                f64::from(*duration_s),
                Some(serde_json::Value::Array(lines)),
            )
        }
        JobSpec::IfStats {
            interfaces,
            interval_ms,
        } => {
            let step = (*interval_ms as f64 / 1000.0).max(0.001);
            let n = ((call.now - t0) / step).floor().max(1.0) as u64;
            let samples: Vec<serde_json::Value> = (0..=n)
                .map(|k| {
                    let c = (pps * step * k as f64) as u64;
                    let ifaces: serde_json::Map<String, serde_json::Value> = interfaces
                        .iter()
                        .map(|i| (i.clone(), json!({"rx_packets": c, "tx_packets": c, "rx_bytes": 123 * c, "tx_bytes": 123 * c})))
                        .collect();
                    json!({"t": t0 + step * k as f64, "ifaces": ifaces})
                })
                .collect();
            ok(step * n as f64, Some(serde_json::Value::Array(samples)))
        }
        _ => ok(0.0, None),
    }
}

/// iputils-style ping output: `count` requests, `pct` % of them answered.
pub fn ping_output(dst: &str, src: Option<&str>, count: u32, interval: f64, pct: u32) -> JobOutput {
    let recv = u64::from(count) * u64::from(pct.min(100)) / 100;
    let mut s = format!(
        "PING {dst} ({dst}) from {} : 56(84) bytes of data.\n",
        src.unwrap_or("0.0.0.0")
    );
    for i in 1..=recv {
        s.push_str(&format!(
            "64 bytes from {dst}: icmp_seq={i} ttl=64 time=0.050 ms\n"
        ));
    }
    let loss = 100 - pct.min(100);
    s.push_str(&format!(
        "\n--- {dst} ping statistics ---\n{count} packets transmitted, {recv} received, {loss}% packet loss, time {}ms\n",
        (f64::from(count.saturating_sub(1)) * interval * 1000.0) as u64
    ));
    if recv > 0 {
        s.push_str("rtt min/avg/max/mdev = 0.040/0.050/0.060/0.005 ms\n");
    }
    JobOutput {
        exit_code: if recv == 0 { 1 } else { 0 },
        stdout: s,
        stderr: String::new(),
        duration: f64::from(count) * interval,
        data: None,
    }
}

/// iperf3 `-J` output of a run of `duration` s with `streams` streams at `bps` each, one
/// interval per second, starting at the whole second of `started`.
pub fn iperf_output(started: f64, duration: f64, streams: u32, bps: f64) -> JobOutput {
    let secs = duration.max(1.0).ceil() as u64;
    let bytes = (bps / 8.0).round();
    let intervals: Vec<serde_json::Value> = (0..secs)
        .map(|k| {
            let st: Vec<serde_json::Value> = (0..streams)
                .map(|i| {
                    serde_json::json!({"socket": 5 + i, "start": k, "end": k + 1, "seconds": 1.0,
                        "bytes": bytes, "bits_per_second": bps})
                })
                .collect();
            serde_json::json!({"streams": st,
                "sum": {"start": k, "end": k + 1, "seconds": 1.0,
                    "bytes": bytes * f64::from(streams), "bits_per_second": bps * f64::from(streams)}})
        })
        .collect();
    let end_streams: Vec<serde_json::Value> = (0..streams)
        .map(|i| serde_json::json!({"sender": {"socket": 5 + i, "bytes": bytes * secs as f64}}))
        .collect();
    let total = bytes * secs as f64 * f64::from(streams);
    let doc = serde_json::json!({
        "start": {"timestamp": {"timesecs": started.floor()},
                  "test_start": {"protocol": "TCP", "num_streams": streams, "duration": secs}},
        "intervals": intervals,
        "end": {"streams": end_streams,
                "sum_sent": {"seconds": secs, "bytes": total, "bits_per_second": bps * f64::from(streams)},
                "cpu_utilization_percent": {"host_total": 25.0}}
    });
    JobOutput {
        exit_code: 0,
        stdout: serde_json::to_string_pretty(&doc).unwrap_or_default(),
        stderr: String::new(),
        duration,
        data: None,
    }
}

/// The request/response generator's report of a `role` run of `duration` s at `tps`
/// transactions per second, one sample per second from `started` (latency 1/tps each on the
/// client; none without transactions).
pub fn rr_output(
    role: &str,
    workload: protocol::RrWorkload,
    started: f64,
    duration: f64,
    tps: f64,
) -> JobOutput {
    let secs = duration.max(1.0).ceil() as u64;
    let per = tps.max(0.0).round() as u64;
    let lat = if per > 0 { 1.0 / per as f64 } else { 0.0 };
    let samples: Vec<serde_json::Value> = (0..=secs)
        .map(|k| {
            let n = per * k;
            serde_json::json!({"time": started + k as f64, "transactions": n,
                "cpu_s": 0.2 * k as f64, "latency_sum_s": n as f64 * lat,
                "latency_sumsq_s2": n as f64 * lat * lat})
        })
        .collect();
    let total = per * secs;
    let client = role == "client" && total > 0;
    let l = |v: f64| {
        if client {
            serde_json::json!(v)
        } else {
            serde_json::Value::Null
        }
    };
    let doc = serde_json::json!({
        "tool": "lnst-agent rr", "version": "scripted", "role": role,
        "workload": workload.name(),
        "config": {}, "start_time": started, "end_time": started + secs as f64,
        "samples": samples,
        "summary": {"num_transactions": total, "duration_s": secs, "throughput": per,
            "cpu_s": 0.2 * secs as f64, "lost": 0, "stale": 0, "connections": 1,
            "latency_min": l(lat), "latency_mean": l(lat), "latency_max": l(lat),
            "latency_stddev": l(0.0), "latency_p50": l(lat), "latency_p90": l(lat),
            "latency_p99": l(lat), "latency_p99.9": l(lat)},
        "flows": [], "error": null
    });
    JobOutput {
        exit_code: 0,
        stdout: serde_json::to_string_pretty(&doc).unwrap_or_default(),
        stderr: String::new(),
        duration: secs as f64,
        data: None,
    }
}

/// `/proc/stat` cpu lines after `secs` seconds of 25 % load on each of 2 CPUs.
fn proc_stat_at(secs: u64) -> String {
    let per = |load: u64| {
        format!(
            "{} 0 {} {} 0 0 {} 0 0 0",
            1000 + load,
            500 + load,
            9000 + 4 * load,
            load
        )
    };
    let l = 10 * secs;
    format!("cpu  {}\ncpu0 {}\ncpu1 {}\n", per(2 * l), per(l), per(l))
}

/// One scripted host: its devices (by requirement id) and current state.
#[derive(Debug, Clone)]
struct Device {
    info: InterfaceInfo,
    offloads: Vec<(String, bool)>,
    /// None: no pause frames (veth).
    pause: Option<protocol::PauseParams>,
    /// None: no coalescing (veth).
    coalesce: Option<protocol::Coalesce>,
    /// Empty: no IRQs (veth).
    irqs: Vec<protocol::IrqInfo>,
}

impl Device {
    fn plain(info: InterfaceInfo, offloads: Vec<(String, bool)>) -> Device {
        Device {
            info,
            offloads,
            pause: None,
            coalesce: None,
            irqs: Vec::new(),
        }
    }
}

/// Channels, RSS and rx-flow-hash of a multi-queue NIC ([`Script::multiqueue`]).
#[derive(Debug, Clone)]
struct Multiqueue {
    channels: protocol::Channels,
    rss: protocol::RssInfo,
    flow_hash: BTreeMap<&'static str, String>,
}

impl Multiqueue {
    /// A virtio-net with 4 queue pairs and RSS: toeplitz (on) and xor, symmetric-xor on (so
    /// that fields that are not symmetric turn it off first), every flow type hashed on
    /// addresses and ports.
    fn virtio() -> Self {
        let four = protocol::ChannelCounts {
            combined: Some(4),
            ..Default::default()
        };
        Multiqueue {
            channels: protocol::Channels {
                max: four,
                current: four,
            },
            rss: protocol::RssInfo {
                hfuncs: vec![
                    protocol::NamedFlag {
                        name: "toeplitz".into(),
                        on: true,
                    },
                    protocol::NamedFlag {
                        name: "xor".into(),
                        on: false,
                    },
                ],
                key: Some(vec!["6d"; 40].join(":")),
                xfrm: Some(vec![protocol::NamedFlag {
                    name: "symmetric-xor".into(),
                    on: true,
                }]),
            },
            flow_hash: protocol::FlowType::ALL
                .iter()
                .map(|f| (f.name(), "dfns".to_string()))
                .collect(),
        }
    }
}

struct AgentState {
    host: String,
    /// Multi-queue NICs by agent name.
    multiqueue: BTreeMap<String, Multiqueue>,
    devices: Vec<Device>,
    jobs: HashMap<u64, JobCall>,
    next_job: u64,
    sysctls: BTreeMap<String, String>,
    now: f64,
    cpus: u32,
    /// Turbo boost enabled; None: no switch.
    turbo: Option<bool>,
    idle: Vec<protocol::IdleState>,
    irqbalance: bool,
    pause_autoneg_sticky: bool,
}

/// Builds scripted agents that share one [`Journal`] and one [`Script`].
#[derive(Debug, Clone, Default)]
pub struct ScriptedAgent {
    pub script: Script,
    pub journal: Journal,
}

impl ScriptedAgent {
    pub fn new(script: Script) -> Self {
        ScriptedAgent {
            script,
            journal: Journal::default(),
        }
    }

    /// An endpoint for requirement host `host_id` whose requirement interfaces `devices`
    /// (requirement id → agent-side name) exist on the scripted agent. Spawns the agent task
    /// on the current tokio runtime.
    pub fn endpoint(&self, host_id: &str, devices: &[(&str, &str)]) -> AgentEndpoint {
        let hostno = host_id
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .parse::<u8>()
            .unwrap_or(0);
        let mut interfaces = BTreeMap::new();
        let mut devs = Vec::new();
        for (i, (req_id, ifname)) in devices.iter().enumerate() {
            let mac = format!("02:00:00:00:{hostno:02x}:{:02x}", i + 1);
            interfaces.insert(
                req_id.to_string(),
                IfaceBinding {
                    ifname: Some(ifname.to_string()),
                    hwaddr: mac.clone(),
                    target: format!("{host_id}-{ifname}"),
                },
            );
            let hw = &self.script.hw;
            let all_cpus =
                crate::agent::tunables::format_cpu_list(&(0..hw.cpus).collect::<Vec<_>>());
            let mut d = Device::plain(
                InterfaceInfo {
                    name: ifname.to_string(),
                    ifindex: 10 + i as u32,
                    mac,
                    mtu: 1500,
                    up: false,
                    driver: Some("veth".into()),
                    kind: Some("veth".into()),
                    addresses: Vec::new(),
                },
                [
                    ("rx-checksumming", true),
                    ("tx-checksumming", true),
                    ("scatter-gather", true),
                    ("tcp-segmentation-offload", true),
                    ("generic-segmentation-offload", true),
                    ("generic-receive-offload", false),
                    ("large-receive-offload", false),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            );
            if hw.nic_hw {
                d.info.driver = Some("e1000e".into());
                d.info.kind = None;
                d.pause = Some(protocol::PauseParams {
                    autoneg: Some(hw.pause_autoneg_sticky),
                    rx: true,
                    tx: true,
                });
                d.coalesce = Some(protocol::Coalesce {
                    adaptive_rx: Some(true),
                    adaptive_tx: Some(true),
                    rx_usecs: Some(3),
                    rx_frames: Some(0),
                    tx_usecs: Some(0),
                    tx_frames: Some(0),
                    ..protocol::Coalesce::default()
                });
                d.irqs = (0..3u32)
                    .map(|q| protocol::IrqInfo {
                        irq: 24 + 10 * i as u32 + q,
                        name: format!("{ifname}-q{q}"),
                        affinity: all_cpus.clone(),
                    })
                    .collect();
            }
            devs.push(d);
        }
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let state = AgentState {
            host: host_id.to_string(),
            multiqueue: if self.script.multiqueue {
                devices
                    .iter()
                    .map(|(_, ifname)| (ifname.to_string(), Multiqueue::virtio()))
                    .collect()
            } else {
                BTreeMap::new()
            },
            devices: devs,
            jobs: HashMap::new(),
            next_job: 1,
            sysctls: BTreeMap::new(),
            now: T0,
            cpus: self.script.hw.cpus,
            turbo: self.script.hw.turbo.then_some(true),
            idle: if self.script.hw.idle_states {
                (0..self.script.hw.cpus)
                    .flat_map(|cpu| {
                        [(0, "POLL", 0), (1, "C1", 10)].map(|(state, name, latency_us)| {
                            protocol::IdleState {
                                cpu,
                                state,
                                name: name.into(),
                                latency_us,
                                disabled: false,
                            }
                        })
                    })
                    .collect()
            } else {
                Vec::new()
            },
            irqbalance: self.script.hw.irqbalance,
            pause_autoneg_sticky: self.script.hw.pause_autoneg_sticky,
        };
        tokio::spawn(serve(
            theirs,
            state,
            self.script.clone(),
            self.journal.clone(),
        ));
        let (r, w) = tokio::io::split(ours);
        AgentEndpoint {
            host_id: host_id.to_string(),
            target: format!("scripted-{host_id}"),
            hostname: format!("scripted-{host_id}"),
            transport: Transport {
                reader: Box::new(r),
                writer: Box::new(w),
            },
            secret: None,
            interfaces,
            console_log: None,
            control_socket: None,
        }
    }
}

async fn serve(
    stream: tokio::io::DuplexStream,
    mut st: AgentState,
    script: Script,
    journal: Journal,
) {
    let (mut r, mut w) = tokio::io::split(stream);
    let hello = Message::Hello(HelloInfo {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "scripted".into(),
        kernel_release: "scripted".into(),
        hostname: format!("scripted-{}", st.host),
        auth_required: false,
        nonce: hex::encode([0u8; protocol::NONCE_LEN]),
    });
    if protocol::write_message(&mut w, &hello).await.is_err() {
        return;
    }
    while let Ok(Some(msg)) = protocol::read_message(&mut r).await {
        let reply = match msg {
            Message::Start { .. } | Message::Pong { .. } => continue,
            Message::Ping { seq } => Message::Pong { seq },
            Message::Request { id, op } => {
                journal.push(&st.host, &op);
                let bye = matches!(op, Op::Bye);
                let failing = script
                    .failing_ops
                    .iter()
                    .any(|(h, name)| *h == st.host && *name == op.name());
                let result = if failing {
                    Err(ErrorReply::new(
                        ErrorKind::Failed,
                        format!("scripted failure of {}", op.name()),
                    ))
                } else {
                    handle(&mut st, &script, op)
                };
                let m = Message::Response { id, result };
                if protocol::write_message(&mut w, &m).await.is_err() || bye {
                    return;
                }
                continue;
            }
            _ => return,
        };
        if protocol::write_message(&mut w, &reply).await.is_err() {
            return;
        }
    }
}

fn not_found(what: String) -> ErrorReply {
    ErrorReply::new(ErrorKind::NotFound, what)
}

fn device<'a>(st: &'a mut AgentState, ifname: &str) -> Result<&'a mut Device, ErrorReply> {
    // Every host has a loopback device (upstream's LoopbackDevice binds it): it appears when
    // a recipe first uses it, so runs that do not see no extra interface.
    if ifname == "lo" && !st.devices.iter().any(|d| d.info.name == "lo") {
        st.devices.push(Device::plain(
            InterfaceInfo {
                name: "lo".into(),
                ifindex: 1,
                mac: "00:00:00:00:00:00".into(),
                mtu: 65536,
                up: true,
                driver: None,
                kind: None,
                addresses: vec!["127.0.0.1/8".into(), "::1/128".into()],
            },
            Vec::new(),
        ));
    }
    st.devices
        .iter_mut()
        .find(|d| d.info.name == ifname)
        .ok_or_else(|| not_found(format!("no interface {ifname}")))
}

fn finish(
    st: &mut AgentState,
    script: &Script,
    id: u64,
    stopped: bool,
) -> Result<Reply, ErrorReply> {
    let mut call = st
        .jobs
        .get(&id)
        .cloned()
        .ok_or_else(|| not_found(format!("no job {id}")))?;
    call.now = st.now;
    let out = script.answer(&call);
    let end = call.started + out.duration;
    let res = JobResult {
        job_id: id,
        passed: call.spec.exit_code_passes(out.exit_code),
        exit_code: Some(out.exit_code),
        signal: None,
        stdout: out.stdout,
        stderr: out.stderr,
        started_at: call.started,
        finished_at: end,
        killed: stopped,
        error: None,
        data: out.data,
    };
    st.now = st.now.max(end);
    Ok(Reply::JobResult(res))
}

fn handle(st: &mut AgentState, script: &Script, op: Op) -> Result<Reply, ErrorReply> {
    match op {
        Op::ListInterfaces => Ok(Reply::Interfaces(
            st.devices.iter().map(|d| d.info.clone()).collect(),
        )),
        Op::SetLink { ifname, up } => {
            device(st, &ifname)?.info.up = up;
            Ok(Reply::Ok)
        }
        Op::SetMtu { ifname, mtu } => {
            device(st, &ifname)?.info.mtu = mtu;
            Ok(Reply::Ok)
        }
        Op::AddAddress { ifname, addr } => {
            device(st, &ifname)?.info.addresses.push(addr);
            Ok(Reply::Ok)
        }
        Op::DelAddress { ifname, addr } => {
            let dev = device(st, &ifname)?;
            let had = dev.info.addresses.len();
            dev.info.addresses.retain(|a| *a != addr);
            if dev.info.addresses.len() == had {
                return Err(not_found(format!("{ifname} has no address {addr}")));
            }
            Ok(Reply::Ok)
        }
        Op::FlushAddresses { ifname } => {
            device(st, &ifname)?.info.addresses.clear();
            Ok(Reply::Ok)
        }
        Op::GetOffloads { ifname } => Ok(Reply::Offloads(
            device(st, &ifname)?
                .offloads
                .iter()
                .map(|(name, enabled)| Offload {
                    name: name.clone(),
                    enabled: *enabled,
                    fixed: false,
                })
                .collect(),
        )),
        Op::SetOffloads { ifname, features } => {
            let dev = device(st, &ifname)?;
            for (name, on) in features {
                let long = protocol::offload_long_name(&name).to_string();
                match dev.offloads.iter_mut().find(|(k, _)| *k == long) {
                    Some(slot) => slot.1 = on,
                    None => dev.offloads.push((long, on)),
                }
            }
            Ok(Reply::Ok)
        }
        Op::WaitDad { ifname, .. } => device(st, &ifname).map(|_| Reply::Ok),
        Op::SysctlWrite { path, value } => {
            let old = st.sysctls.insert(path, value).unwrap_or_else(|| "0".into());
            Ok(Reply::OldValue(old))
        }
        Op::StartRecipe { .. } | Op::EndRecipe | Op::KillAllJobs | Op::Bye => Ok(Reply::Ok),
        Op::StartJob { spec } => {
            let id = st.next_job;
            st.next_job += 1;
            let call = JobCall {
                host: st.host.clone(),
                spec,
                started: st.now,
                now: st.now,
            };
            st.jobs.insert(id, call);
            Ok(Reply::JobId(id))
        }
        Op::WaitJob { job_id, .. } => finish(st, script, job_id, false),
        Op::StopJob { job_id } | Op::KillJob { job_id } => finish(st, script, job_id, true),
        Op::Shell { .. } => Err(ErrorReply::new(
            ErrorKind::NotAllowed,
            "the scripted agent runs no shell",
        )),
        // Soft devices, ports, namespaces and routes: bookkept enough for recipe logic (the
        // names exist, a deleted device is gone); the kernel's part is tested on real agents.
        Op::CreateLink { ifname, link, .. } => {
            if st.devices.iter().any(|d| d.info.name == ifname) {
                return Err(ErrorReply::new(
                    ErrorKind::Failed,
                    format!("{ifname} exists"),
                ));
            }
            let mut made = vec![ifname.clone()];
            if let crate::protocol::LinkSpec::Veth { peer, .. } = &link {
                made.push(peer.clone());
            }
            let mut infos = Vec::new();
            for name in made {
                let i = st.devices.len() as u32;
                let info = InterfaceInfo {
                    name,
                    ifindex: 100 + i,
                    mac: format!("02:00:00:01:00:{:02x}", i),
                    mtu: 1500,
                    up: false,
                    driver: None,
                    kind: Some(link.kind_name().into()),
                    addresses: Vec::new(),
                };
                infos.push(info.clone());
                st.devices.push(Device::plain(info, Vec::new()));
            }
            Ok(Reply::Interfaces(infos))
        }
        Op::DeleteLink { ifname } => {
            device(st, &ifname)?;
            st.devices.retain(|d| d.info.name != ifname);
            Ok(Reply::Ok)
        }
        Op::Enslave { ifname, master, .. } => {
            device(st, &ifname)?;
            device(st, &master)?;
            Ok(Reply::Ok)
        }
        Op::Release { ifname } | Op::MoveLink { ifname, .. } => {
            device(st, &ifname).map(|_| Reply::Ok)
        }
        Op::CreateNetns { .. } | Op::DeleteNetns { .. } => Ok(Reply::Ok),
        Op::AddRoute { .. } | Op::DelRoute { .. } => Ok(Reply::Ok),
        Op::AddL2tpTunnel { .. } => Ok(Reply::Ok),
        Op::AddL2tpSession { session } => {
            let i = st.devices.len() as u32;
            st.devices.push(Device::plain(
                InterfaceInfo {
                    name: session.ifname,
                    ifindex: 100 + i,
                    mac: format!("02:00:00:02:00:{:02x}", i),
                    mtu: 1500,
                    up: false,
                    driver: None,
                    kind: Some("l2tp_eth".into()),
                    addresses: Vec::new(),
                },
                Vec::new(),
            ));
            Ok(Reply::Ok)
        }
        Op::AddNeighbour { .. } | Op::DelNeighbour { .. } => Ok(Reply::Ok),
        Op::XfrmAdd { .. } | Op::XfrmDel { .. } => Ok(Reply::Ok),
        Op::MacsecConfigure { ifname, .. } => device(st, &ifname).map(|_| Reply::Ok),
        Op::InNetns { inner, .. } => handle(st, script, *inner),
        op @ (Op::GetChannels { .. }
        | Op::SetChannels { .. }
        | Op::GetRss { .. }
        | Op::SetRss { .. }
        | Op::GetRxFlowHash { .. }
        | Op::SetRxFlowHash { .. }) => multiqueue_op(st, op),
        op if crate::agent::tunables::is_tunable(&op) => tunable(st, op),
        // Anything else is not scripted: a recipe test that needs it gets a clear refusal
        // instead of a made-up answer.
        other => Err(ErrorReply::new(
            ErrorKind::Unsupported,
            format!("the scripted agent does not script {}", other.name()),
        )),
    }
}

/// A recipe run against scripted agents.
#[derive(Debug)]
pub struct ScriptedRun {
    pub run: crate::results::RecipeRun,
    /// Raw tool output: file name → bytes.
    pub raw: Vec<(String, Vec<u8>)>,
    pub journal: Journal,
}

/// Run the planned test `spec` against scripted agents: one per `(host id, [(requirement
/// interface id, agent device name)])`, all answering from `script`. Goes through the
/// runner's own connect-bind-run-restore path, without the pause between iperf3 servers and
/// clients.
pub async fn run_test(
    spec: &crate::plan::TestSpec,
    script: Script,
    hosts: &[(&str, &[(&str, &str)])],
) -> ScriptedRun {
    let agents = ScriptedAgent::new(script);
    let eps = hosts
        .iter()
        .map(|(h, devs)| agents.endpoint(h, devs))
        .collect();
    let (run, raw, _) = crate::runner::run_on_endpoints(
        spec,
        eps,
        crate::results::MatchDescription::default(),
        std::time::Duration::ZERO,
        None,
        ("scripted", None),
    )
    .await;
    ScriptedRun {
        run,
        raw,
        journal: agents.journal,
    }
}

fn unsupported(m: String) -> ErrorReply {
    ErrorReply::new(ErrorKind::Unsupported, m)
}

fn bad(m: String) -> ErrorReply {
    ErrorReply::new(ErrorKind::BadRequest, m)
}

fn tuned(o: protocol::SetOutcome) -> Result<Reply, ErrorReply> {
    Ok(Reply::Tuned(o))
}

/// The tunables, on the model of [`HwScript`], answering as the real agent does (the same
/// outcomes and refusals; docs/PROTOCOL.md §6.2).
fn tunable(st: &mut AgentState, op: Op) -> Result<Reply, ErrorReply> {
    use crate::agent::tunables::{format_cpu_list, irq_targets, parse_cpu_list};
    use protocol::{Previous, SetOutcome};
    let sticky = st.pause_autoneg_sticky;
    let online: Vec<u32> = (0..st.cpus).collect();
    let check_cpus = |cpus: &[u32]| -> Result<(), ErrorReply> {
        match cpus.iter().find(|c| !online.contains(c)) {
            Some(c) => Err(bad(format!(
                "host has no CPU {c} (online CPUs: {})",
                format_cpu_list(&online)
            ))),
            None if cpus.is_empty() => Err(bad("empty CPU list".into())),
            None => Ok(()),
        }
    };
    match op {
        Op::GetPause { ifname } => {
            let d = device(st, &ifname)?;
            d.pause
                .map(Reply::Pause)
                .ok_or_else(|| unsupported(format!("{ifname} (driver veth) has no pause-frame settings")))
        }
        Op::SetPause {
            ifname,
            autoneg,
            rx,
            tx,
        } => {
            let d = device(st, &ifname)?;
            let Some(cur) = d.pause else {
                let why = format!("{ifname} (driver veth) has no pause-frame settings");
                return if [rx, tx].into_iter().flatten().all(|v| !v) {
                    tuned(SetOutcome::NotApplicable { reason: why })
                } else {
                    Err(unsupported(why))
                };
            };
            let mut new = protocol::PauseParams {
                autoneg: autoneg.or(cur.autoneg),
                rx: rx.unwrap_or(cur.rx),
                tx: tx.unwrap_or(cur.tx),
            };
            if new == cur {
                return tuned(SetOutcome::Unchanged);
            }
            // Autonegotiation on (or turned on): the driver's default, rx and tx on, whatever
            // was asked; what was asked and is not so does not read back.
            if new.autoneg == Some(true) && sticky {
                new.rx = true;
                new.tx = true;
                d.pause = Some(new);
                if rx.is_some_and(|v| !v) || tx.is_some_and(|v| !v) {
                    return Err(ErrorReply::new(
                        ErrorKind::Failed,
                        format!("{ifname}: pause frames are rx on tx on 5 s after ethtool -A"),
                    ));
                }
            }
            d.pause = Some(new);
            tuned(SetOutcome::Applied {
                previous: Previous::Pause(cur),
            })
        }
        Op::GetCoalesce { ifname } => {
            let d = device(st, &ifname)?;
            d.coalesce.clone().map(|c| Reply::Coalesce(Box::new(c))).ok_or_else(|| {
                unsupported(format!("{ifname} (driver veth) has no interrupt coalescing settings"))
            })
        }
        Op::SetCoalesce { ifname, settings } => {
            let d = device(st, &ifname)?;
            let only_off = settings.numbers().iter().all(|(_, v)| v.is_none())
                && settings.flags().iter().all(|(_, v)| *v != Some(true));
            let Some(cur) = d.coalesce.clone() else {
                let why = format!("{ifname} (driver veth) has no interrupt coalescing settings");
                return if only_off {
                    tuned(SetOutcome::NotApplicable { reason: why })
                } else {
                    Err(unsupported(why))
                };
            };
            let mut new = cur.clone();
            let mut old = protocol::Coalesce::default();
            let mut changed = false;
            for (name, w) in settings.flags() {
                let Some(w) = w else { continue };
                let (slot, was) = match name {
                    "adaptive-rx" => (&mut new.adaptive_rx, &mut old.adaptive_rx),
                    _ => (&mut new.adaptive_tx, &mut old.adaptive_tx),
                };
                match *slot {
                    None if w => return Err(unsupported(format!("{ifname} does not support coalescing parameter {name}"))),
                    Some(c) if c != w => {
                        *was = Some(c);
                        *slot = Some(w);
                        changed = true;
                    }
                    _ => {}
                }
            }
            for (name, w) in settings.numbers() {
                let Some(w) = w else { continue };
                let c = cur.numbers().into_iter().find(|(n, _)| *n == name).and_then(|(_, v)| v);
                match c {
                    None => return Err(unsupported(format!("{ifname} does not support coalescing parameter {name} (ethtool -c shows n/a)"))),
                    Some(c) if c != w => {
                        if let Some(s) = new.number_mut(name) {
                            *s = Some(w);
                        }
                        if let Some(s) = old.number_mut(name) {
                            *s = Some(c);
                        }
                        changed = true;
                    }
                    Some(_) => {}
                }
            }
            if !changed {
                return tuned(SetOutcome::Unchanged);
            }
            d.coalesce = Some(new);
            tuned(SetOutcome::Applied {
                previous: Previous::Coalesce(Box::new(old)),
            })
        }
        Op::GetIrqs { ifname } => {
            let d = device(st, &ifname)?;
            if d.irqs.is_empty() {
                return Err(unsupported(format!("{ifname} (driver veth) has no IRQs to pin: it has no bus device and no /proc/interrupts line names it")));
            }
            Ok(Reply::Irqs(d.irqs.clone()))
        }
        Op::SetIrqAffinity {
            ifname,
            cpus,
            policy,
            stop_irqbalance,
        } => {
            check_cpus(&cpus)?;
            let running = st.irqbalance;
            let d = device(st, &ifname)?;
            if d.irqs.is_empty() {
                return Err(unsupported(format!("{ifname} (driver veth) has no IRQs to pin: it has no bus device and no /proc/interrupts line names it")));
            }
            let targets = irq_targets(d.irqs.len(), &cpus, policy);
            let mut pins = Vec::new();
            for (info, t) in d.irqs.iter_mut().zip(targets) {
                pins.push(protocol::IrqPin {
                    irq: info.irq,
                    name: info.name.clone(),
                    previous: info.affinity.clone(),
                    requested: t.clone(),
                    now: t.clone(),
                    skipped: None,
                });
                info.affinity = t;
            }
            let stopped = stop_irqbalance && running;
            if stopped {
                st.irqbalance = false;
            }
            Ok(Reply::IrqsPinned(protocol::IrqPinning {
                irqs: pins,
                irqbalance_running: running && !stopped,
                irqbalance_stopped: stopped,
            }))
        }
        Op::RestoreIrqAffinity { ifname, irqs } => {
            let running = st.irqbalance;
            let mut plan = Vec::new();
            for w in &irqs {
                let cpus = parse_cpu_list(&w.affinity).unwrap_or_default();
                check_cpus(&cpus)?;
                plan.push((w.irq, format_cpu_list(&cpus)));
            }
            let d = device(st, &ifname)?;
            let mut pins = Vec::new();
            for (irq, list) in plan {
                let info = d
                    .irqs
                    .iter_mut()
                    .find(|i| i.irq == irq)
                    .ok_or_else(|| bad(format!("IRQ {irq} is not one of {ifname}'s")))?;
                pins.push(protocol::IrqPin {
                    irq,
                    name: info.name.clone(),
                    previous: info.affinity.clone(),
                    requested: list.clone(),
                    now: list.clone(),
                    skipped: None,
                });
                info.affinity = list;
            }
            Ok(Reply::IrqsPinned(protocol::IrqPinning {
                irqs: pins,
                irqbalance_running: running,
                irqbalance_stopped: false,
            }))
        }
        Op::GetCpus => Ok(Reply::Cpus(protocol::CpuInfo {
            online: online.clone(),
            allowed: online,
        })),
        Op::DropCaches { .. } => Ok(Reply::Ok),
        Op::SetTurboBoost { enabled } => match st.turbo {
            None => Err(unsupported("this host has no turbo boost control: neither /sys/devices/system/cpu/intel_pstate/no_turbo nor /sys/devices/system/cpu/cpufreq/boost exists".into())),
            Some(cur) if cur == enabled => tuned(SetOutcome::Unchanged),
            Some(cur) => {
                st.turbo = Some(enabled);
                tuned(SetOutcome::Applied {
                    previous: Previous::TurboBoost { enabled: cur },
                })
            }
        },
        Op::DisableIdleStates { min_latency_us } => {
            if st.idle.is_empty() {
                return Err(unsupported("this host has no CPU idle states to disable: /sys/devices/system/cpu/cpu0/cpuidle is missing (no cpuidle driver)".into()));
            }
            let mut changed = Vec::new();
            for s in st.idle.iter_mut() {
                if s.latency_us >= min_latency_us && !s.disabled {
                    changed.push(s.clone());
                    s.disabled = true;
                }
            }
            if changed.is_empty() {
                return tuned(SetOutcome::Unchanged);
            }
            tuned(SetOutcome::Applied {
                previous: Previous::IdleStates { states: changed },
            })
        }
        Op::EnableIdleStates { states } => {
            let mut changed = Vec::new();
            for w in states {
                let s = st
                    .idle
                    .iter_mut()
                    .find(|s| s.cpu == w.cpu && s.state == w.state)
                    .ok_or_else(|| bad(format!("this host has no idle state {} on CPU {}", w.state, w.cpu)))?;
                if s.disabled {
                    changed.push(s.clone());
                    s.disabled = false;
                }
            }
            if changed.is_empty() {
                return tuned(SetOutcome::Unchanged);
            }
            tuned(SetOutcome::Applied {
                previous: Previous::IdleStates { states: changed },
            })
        }
        other => Err(unsupported(format!(
            "the scripted agent does not script {}",
            other.name()
        ))),
    }
}

/// Channels, RSS and rx-flow-hash on the model of [`Multiqueue`], with the real agent's
/// outcomes (docs/PROTOCOL.md §6.2); a NIC without the model refuses as veth does.
fn multiqueue_op(st: &mut AgentState, op: Op) -> Result<Reply, ErrorReply> {
    use protocol::{Previous, SetOutcome};
    let ifname = match &op {
        Op::GetChannels { ifname }
        | Op::SetChannels { ifname, .. }
        | Op::GetRss { ifname }
        | Op::SetRss { ifname, .. }
        | Op::GetRxFlowHash { ifname, .. }
        | Op::SetRxFlowHash { ifname, .. } => ifname.clone(),
        _ => return Err(not_found(format!("not a NIC operation: {}", op.name()))),
    };
    device(st, &ifname)?;
    let unsupported = |what: &str| {
        ErrorReply::new(
            ErrorKind::Unsupported,
            format!("{ifname} (driver veth) has no {what}"),
        )
    };
    let bad = |m: String| ErrorReply::new(ErrorKind::BadRequest, m);
    let Some(m) = st.multiqueue.get_mut(&ifname) else {
        return Err(match op {
            Op::GetChannels { .. } | Op::SetChannels { .. } => unsupported("channel settings"),
            Op::GetRss { .. } | Op::SetRss { .. } => unsupported("RSS settings"),
            _ => unsupported("rx-flow-hash settings"),
        });
    };
    let tuned = |o: SetOutcome| Ok(Reply::Tuned(o));
    match op {
        Op::GetChannels { .. } => Ok(Reply::Channels(m.channels)),
        Op::SetChannels { channels, .. } => {
            let mut old = protocol::ChannelCounts::default();
            let mut new = m.channels.current;
            for (name, w) in channels.named() {
                let Some(w) = w else { continue };
                let max = m
                    .channels
                    .max
                    .named()
                    .iter()
                    .find(|(n, _)| *n == name)
                    .and_then(|(_, v)| *v);
                let Some(max) = max else {
                    return Err(unsupported(&format!("separate {name} channels")));
                };
                if w > max {
                    return Err(bad(format!(
                        "{ifname}: {name} {w} exceeds the device's maximum {max}"
                    )));
                }
                let cur = new.get_mut(name).and_then(|c| c.replace(w));
                if cur != Some(w) {
                    if let Some(o) = old.get_mut(name) {
                        *o = Some(cur.unwrap_or(0));
                    }
                }
            }
            if old.named().iter().all(|(_, v)| v.is_none()) {
                return tuned(SetOutcome::Unchanged);
            }
            m.channels.current = new;
            tuned(SetOutcome::Applied {
                previous: Previous::Channels(old),
            })
        }
        Op::GetRss { .. } => Ok(Reply::Rss(m.rss.clone())),
        Op::SetRss { hfunc, xfrm, .. } => {
            let before = m.rss.clone();
            if let Some(h) = hfunc {
                if !m.rss.hfuncs.iter().any(|f| f.name == h) {
                    return Err(bad(format!(
                        "{ifname} offers the hash functions toeplitz, xor, not {h}"
                    )));
                }
                for f in &mut m.rss.hfuncs {
                    f.on = f.name == h;
                }
            }
            if let (Some(want), Some(have)) = (xfrm, m.rss.xfrm.as_mut()) {
                for f in have.iter_mut() {
                    f.on = want.contains(&f.name);
                }
            }
            if m.rss == before {
                return tuned(SetOutcome::Unchanged);
            }
            tuned(SetOutcome::Applied {
                previous: Previous::Rss(before),
            })
        }
        Op::GetRxFlowHash { flow_type, .. } => Ok(Reply::FlowHash(
            m.flow_hash
                .get(flow_type.name())
                .cloned()
                .unwrap_or_default(),
        )),
        Op::SetRxFlowHash {
            flow_type, fields, ..
        } => {
            let sorted = crate::agent::tunables::check_flow_fields(&fields)
                .map_err(|e| bad(e.to_string()))?;
            let old = m
                .flow_hash
                .insert(flow_type.name(), sorted.clone())
                .unwrap_or_default();
            if old == sorted {
                return tuned(SetOutcome::Unchanged);
            }
            tuned(SetOutcome::Applied {
                previous: Previous::FlowHash { fields: old },
            })
        }
        _ => Err(not_found("not a NIC operation".into())),
    }
}
