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
    /// Packets per second of every pktgen device, xdp-bench and interface counter.
    pub pps: f64,
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

    /// Every iperf3 stream measures `bps`.
    pub fn iperf_rate(mut self, bps: f64) -> Self {
        self.iperf_bps = bps;
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

    fn answer(&self, call: &JobCall) -> JobOutput {
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
            JobSpec::LinuxPerf { .. } | JobSpec::RrServer { .. } | JobSpec::RrClient { .. } => {
                JobOutput {
                    exit_code: 0,
                    stdout: String::new(),
                    stderr: String::new(),
                    duration: call.now - call.started,
                    data: None,
                }
            }
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
}

struct AgentState {
    host: String,
    devices: Vec<Device>,
    jobs: HashMap<u64, JobCall>,
    next_job: u64,
    sysctls: BTreeMap<String, String>,
    now: f64,
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
            devs.push(Device {
                info: InterfaceInfo {
                    name: ifname.to_string(),
                    ifindex: 10 + i as u32,
                    mac,
                    mtu: 1500,
                    up: false,
                    driver: Some("veth".into()),
                    kind: Some("veth".into()),
                    addresses: Vec::new(),
                },
                offloads: [
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
            });
        }
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let state = AgentState {
            host: host_id.to_string(),
            devices: devs,
            jobs: HashMap::new(),
            next_job: 1,
            sysctls: BTreeMap::new(),
            now: T0,
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
                st.devices.push(Device {
                    info,
                    offloads: Vec::new(),
                });
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
        Op::AddNeighbour { .. } | Op::DelNeighbour { .. } => Ok(Reply::Ok),
        Op::InNetns { inner, .. } => handle(st, script, *inner),
        // Tunable operations are not scripted yet: a recipe test that needs them gets a clear
        // refusal instead of a made-up answer.
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
