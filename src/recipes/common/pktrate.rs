//! The packet-rate perf test (upstream `XDPBenchMeasurement`, `XDPRedirectCPUMeasurement`,
//! `ForwardingMeasurement` under `Perf/Recipe.py`'s loop): per iteration the CPU samplers, the
//! receiver (xdp-bench), the forwarder's counters, pktgen on the generator; finish; parse; then
//! the time alignment ([`align_packet_iteration`]: [latest start, earliest end], no warm-up
//! trim), the report (CPU results, then the packet results) and the non-zero evaluation.

use super::perf::{apply_udp_tweak, PerfConf, JOB_GRACE};
use crate::measure::cpu::parse_cpu_samples;
use crate::measure::flow::{CpuIteration, FlowSpec};
use crate::measure::perf::PerfResult;
use crate::measure::pktrate::{
    align_packet_iteration, parse_ifstats, parse_pktgen, parse_redirect_cpu, parse_xdp_bench,
    AggregatedPackets, PacketDataError, PacketIteration, PacketKind,
};
use crate::protocol::{
    JobResult, JobSpec, PktgenDevice, XdpBenchCommand, XdpLoadMode, XdpMode, XdpPacketOperation,
    XdpRedirectProgram, XdpRemoteAction,
};
use crate::recipes::context::{Dev, RecipeError, RunContext};
use crate::results::{ResultEntry, ResultType};
use std::collections::BTreeMap;
use std::time::Duration;

/// pktgen's default UDP port (upstream `PktgenDevice`: 9, the discard port) for the XDP
/// recipes, whose flows do not set ports.
pub const PKTGEN_PORT: u16 = 9;
/// pktgen's default burst (upstream `PktgenDevice.burst`).
pub const PKTGEN_BURST: u32 = 8;
/// How much longer xdp-bench runs than pktgen: the agent starts xdp-bench's clock once its
/// program is attached, and pktgen starts after that (loading the module and configuring
/// its devices took over a second in a TCG guest); without the margin xdp-bench stopped
/// before the generator did and missed its last intervals. The time alignment cuts the
/// results to their common span as upstream's does.
pub const RECEIVER_MARGIN_S: u32 = 2;
/// How long pktgen may take beyond its run (upstream's `runtime_estimate` adds 5 s; a TCG
/// guest needs more).
const PKTGEN_GRACE: Duration = Duration::from_secs(5);

/// Which measurement the perf phase runs, with its settings (upstream's
/// `net_perf_tool_class` of the XDP and forwarding generators).
#[derive(Debug, Clone, PartialEq)]
pub enum PacketMeasurement {
    /// XDPBenchMeasurement: per flow, `xdp-bench <command>` on the receiver NIC and one
    /// pktgen device per CPU of the flow's pinning.
    XdpBench {
        command: XdpBenchCommand,
        xdp_mode: XdpMode,
        load_mode: Option<XdpLoadMode>,
        packet_operation: Option<XdpPacketOperation>,
        remote_action: Option<XdpRemoteAction>,
    },
    /// XDPRedirectCPUMeasurement: one `xdp-bench redirect-cpu` for all flows, one pktgen
    /// device per flow.
    XdpRedirectCpu {
        cpus: Vec<u32>,
        program: XdpRedirectProgram,
        remote_action: XdpRemoteAction,
        backlog_size: u32,
        ratep: i64,
        burst: u32,
    },
    /// ForwardingMeasurement: pktgen towards the forwarder's ingress MAC, `xdp-bench drop` on
    /// the receiver, the forwarder's rx/tx packet counters.
    Forwarding {
        ratep: i64,
        burst: u32,
        forwarder_rx: Dev,
        forwarder_tx: Dev,
    },
}

impl PacketMeasurement {
    pub fn kind(&self) -> PacketKind {
        match self {
            PacketMeasurement::XdpBench { .. } => PacketKind::XdpBench,
            PacketMeasurement::XdpRedirectCpu { .. } => PacketKind::XdpRedirectCpu,
            PacketMeasurement::Forwarding { .. } => PacketKind::Forwarding,
        }
    }
}

/// One flow with its devices (upstream `Flow.generator_nic`, `Flow.receiver_nic`).
#[derive(Debug, Clone, PartialEq)]
pub struct PacketFlow {
    pub spec: FlowSpec,
    pub generator_nic: Dev,
    pub receiver_nic: Dev,
}

/// pktgen's per-device rate: upstream divides the rate by the burst (pktgen sends `ratep`
/// bursts); unlimited when negative or zero.
pub fn pktgen_ratep(ratep: i64, burst: u32) -> Option<u64> {
    if ratep <= 0 {
        return None;
    }
    let r = ratep / i64::from(burst.max(1));
    (r > 0).then_some(r as u64)
}

/// The aggregate flow of a one-result-for-all-flows measurement (upstream's `flow` property
/// of the redirect-cpu and forwarding results): the first flow with no receiver address or
/// port, `parallel_streams` = the number of flows, the pinnings concatenated.
pub fn aggregate_flow(flows: &[PacketFlow]) -> FlowSpec {
    let mut f = flows[0].spec.clone();
    f.receiver_bind = "None".into();
    f.receiver_port = 0;
    f.generator_port = None;
    f.parallel_streams = flows.len() as u32;
    let pins: Vec<u32> = flows
        .iter()
        .flat_map(|f| f.spec.cpupin.clone().unwrap_or_default())
        .collect();
    f.cpupin = (!pins.is_empty()).then_some(pins);
    f
}

async fn mac(ctx: &RunContext, dev: &Dev) -> Result<String, RecipeError> {
    let name = ctx.ifname(dev)?;
    let ifaces = ctx.client(&dev.host)?.list_interfaces().await?;
    ifaces
        .into_iter()
        .find(|i| i.name == name)
        .map(|i| i.mac)
        .ok_or_else(|| RecipeError::Run(format!("{dev} ({name}) not found on its agent")))
}

/// The CPUs pktgen runs on for a flow; upstream needs them (it iterates the pinning).
fn cpus_of(f: &PacketFlow) -> Result<Vec<u32>, RecipeError> {
    f.spec
        .cpupin
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            RecipeError::Param(
                "perf_tool_cpu: pktgen needs the CPUs its threads run on (e.g. perf_tool_cpu=[0])"
                    .into(),
            )
        })
}

/// Apply the tweaks, run the iterations, take the tweaks back, report and evaluate.
pub async fn perf_test(
    ctx: &mut RunContext,
    conf: &PerfConf,
    flows: &[PacketFlow],
    m: &PacketMeasurement,
) -> Result<(), RecipeError> {
    if flows.is_empty() {
        return Ok(());
    }
    let mark = ctx.mark();
    let mut result = Ok(());
    if flows[0].spec.kind == "udp_stream" && !conf.simulate {
        if let Some((thresh, time)) = conf.tweaks.udp_fragmentation {
            result = apply_udp_tweak(ctx, conf.ip_version, thresh, time).await;
        }
    }
    if result.is_ok() {
        result = iterations(ctx, conf, flows, m).await;
    }
    let removed = ctx.unwind(mark).await;
    result?;
    removed
}

type Iteration = (Vec<PacketIteration>, Vec<CpuIteration>);

async fn iterations(
    ctx: &mut RunContext,
    conf: &PerfConf,
    flows: &[PacketFlow],
    m: &PacketMeasurement,
) -> Result<(), RecipeError> {
    for f in flows {
        cpus_of(f)?;
    }
    let kind = m.kind();
    let cpu_hosts: Vec<String> = {
        let mut h: Vec<String> = match &conf.cpu_hosts {
            Some(h) => h.clone(),
            None => flows
                .iter()
                .flat_map(|f| [&f.spec.generator, &f.spec.receiver])
                .map(|h| ctx.root_host(h).to_string())
                .collect(),
        };
        h.sort();
        h.dedup();
        h
    };
    let spec0 = &flows[0].spec;
    let n = conf.iterations;
    let mut measured: Vec<Iteration> = Vec::new();
    for it in 0..n as usize {
        if conf.tweaks.drop_caches {
            for host in ctx.host_ids() {
                ctx.client(&host)?
                    .sysctl_write("/proc/sys/vm/drop_caches", "1")
                    .await
                    .map_err(|e| {
                        RecipeError::Run(format!(
                            "{host}: writing /proc/sys/vm/drop_caches = 1 failed: {e}"
                        ))
                    })?;
            }
        }
        let iteration = if conf.simulate && kind == PacketKind::XdpBench {
            simulated(flows)
        } else {
            run_iteration(ctx, conf, flows, m, &cpu_hosts, it).await?
        };
        let mut shown = iteration.clone();
        let _ = align_packet_iteration(&mut shown.0, &mut shown.1);
        let rate: f64 = shown
            .0
            .iter()
            .map(|r| r.metrics.first().map_or(0.0, PerfResult::average))
            .sum();
        ctx.progress(&format!(
            "{} {} {} {} msg {} iter {}/{n}: {:.0} packets/s generated",
            kind.name(),
            spec0.kind,
            conf.ip_version,
            flows.len(),
            spec0.msg_size.map_or("default".into(), |s| s.to_string()),
            it + 1,
            rate
        ));
        measured.push(iteration);
    }
    // Upstream `time_aligned_results`: every iteration or none.
    let mut aligned = measured.clone();
    let mut windows = Vec::new();
    for (k, (res, cpus)) in aligned.iter_mut().enumerate() {
        match align_packet_iteration(res, cpus) {
            Ok(w) => windows.push(w),
            Err(e) => {
                tracing::error!(
                    "Result time alignment impossible (iteration {}: {e}), falling back to unaligned results",
                    k + 1
                );
                aligned = measured.clone();
                windows.clear();
                break;
            }
        }
    }
    report_and_evaluate(ctx, flows, kind, aligned, &windows);
    Ok(())
}

/// XDPBenchMeasurement's simulation: `duration + 2·warmup` zero intervals per side.
fn simulated(flows: &[PacketFlow]) -> Iteration {
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let res = flows
        .iter()
        .map(|f| {
            let secs = u64::from(f.spec.duration + 2 * f.spec.warmup);
            let zeros = || {
                PerfResult::Parallel(vec![PerfResult::Sequential(
                    (0..secs)
                        .map(|k| PerfResult::interval(0.0, 1.0, "packets", t0 + k as f64))
                        .collect(),
                )])
            };
            PacketIteration {
                metrics: vec![zeros(), zeros()],
                success: true,
            }
        })
        .collect();
    (res, Vec::new())
}

fn now() -> f64 {
    crate::protocol::unix_now()
}

/// Why a job gave nothing: its error, or exit code and last stderr line.
fn job_failure(res: &JobResult) -> String {
    res.error.clone().unwrap_or_else(|| {
        let tail: Vec<&str> = res.stderr.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "exit code {:?}{}: {}",
            res.exit_code,
            res.signal
                .map_or(String::new(), |s| format!(", signal {s}")),
            tail.join(" | ")
        )
    })
}

/// A job's parsed metric, or a FAIL result naming the job and why.
fn parsed<T>(
    ctx: &mut RunContext,
    what: &str,
    host: &str,
    res: &JobResult,
    parse: impl FnOnce(&JobResult) -> Result<T, PacketDataError>,
) -> Option<T> {
    if !res.passed {
        ctx.add(ResultEntry::generic(
            ResultType::Fail,
            format!("{what} on {host} failed: {}", job_failure(res)),
        ));
        return None;
    }
    match parse(res) {
        Ok(v) => Some(v),
        Err(e) => {
            ctx.add(ResultEntry::generic(
                ResultType::Fail,
                format!("{what} on {host}: unusable output: {e}"),
            ));
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn pktgen_device(
    f: &PacketFlow,
    ifname: &str,
    src_mac: &str,
    dst_mac: &str,
    cpu: u32,
    ports: (u16, u16),
    burst: u32,
    ratep: Option<u64>,
) -> PktgenDevice {
    PktgenDevice {
        ifname: ifname.to_string(),
        cpu,
        src_mac: src_mac.to_string(),
        dst_mac: dst_mac.to_string(),
        src_ip: f.spec.generator_bind.clone(),
        dst_ip: f.spec.receiver_bind.clone(),
        src_port: ports.0,
        dst_port: ports.1,
        // Upstream passes msg_size as pkt_size (pktgen's default is 60).
        pkt_size: f.spec.msg_size.unwrap_or(60),
        burst,
        ratep,
        vlan_id: None,
    }
}

/// Pktgen on the first flow's generator, one device per flow (on the flow's first CPU, from
/// `gen_if` with the `macs`), `(burst, ratep)` as the recipe gives them, for `secs`; waits up
/// to `wait` for it.
async fn run_pktgen(
    ctx: &mut RunContext,
    flows: &[PacketFlow],
    gen_if: &str,
    (src_mac, dst_mac): (&str, &str),
    (burst, ratep): (u32, i64),
    secs: u32,
    wait: Duration,
) -> Result<JobResult, RecipeError> {
    let mut devices = Vec::new();
    for f in flows {
        let cpu = cpus_of(f)?[0];
        let ports = (
            f.spec.generator_port.unwrap_or(PKTGEN_PORT),
            f.spec.receiver_port,
        );
        devices.push(pktgen_device(
            f,
            gen_if,
            src_mac,
            dst_mac,
            cpu,
            ports,
            burst,
            pktgen_ratep(ratep, burst),
        ));
    }
    let host = &flows[0].generator_nic.host;
    let client = ctx
        .start_job(
            host,
            JobSpec::Pktgen {
                devices,
                duration_s: secs,
            },
        )
        .await?;
    ctx.finish_job(host, client, wait).await
}

async fn start_cpu(
    ctx: &mut RunContext,
    cpu_hosts: &[String],
) -> Result<Vec<(String, u64)>, RecipeError> {
    let mut jobs = Vec::new();
    for h in cpu_hosts {
        let id = ctx
            .start_job(h, JobSpec::CpuStat { interval_ms: 1000 })
            .await?;
        jobs.push((h.clone(), id));
    }
    Ok(jobs)
}

async fn finish_cpu(
    ctx: &mut RunContext,
    jobs: Vec<(String, u64)>,
    raw: &str,
) -> Result<Vec<CpuIteration>, RecipeError> {
    let mut cpus = Vec::new();
    for (h, id) in jobs {
        let res = ctx.stop_job(&h, id).await?;
        let samples: Vec<(f64, String)> = res
            .data
            .as_ref()
            .and_then(|d| d.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| {
                        Some((s.get("t")?.as_f64()?, s.get("text")?.as_str()?.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let stats = match parse_cpu_samples(&samples) {
            Ok(s) => s,
            Err(e) => {
                ctx.add(ResultEntry::generic(
                    ResultType::Fail,
                    format!("CPU measurement on {h} failed: {e}"),
                ));
                Vec::new()
            }
        };
        ctx.save_raw(
            format!("{raw}_cpu_{h}.json"),
            serde_json::to_vec_pretty(&res.data)
                .unwrap_or_default()
                .as_slice(),
        );
        cpus.push(CpuIteration { host: h, stats });
    }
    Ok(cpus)
}

fn save_job(ctx: &mut RunContext, name: String, res: &JobResult) {
    let doc = serde_json::json!({
        "passed": res.passed, "exit_code": res.exit_code, "error": res.error,
        "stderr": res.stderr, "started_at": res.started_at, "finished_at": res.finished_at,
        "data": res.data,
    });
    ctx.save_raw(
        name,
        serde_json::to_vec_pretty(&doc)
            .unwrap_or_default()
            .as_slice(),
    );
}

async fn run_iteration(
    ctx: &mut RunContext,
    conf: &PerfConf,
    flows: &[PacketFlow],
    m: &PacketMeasurement,
    cpu_hosts: &[String],
    it: usize,
) -> Result<Iteration, RecipeError> {
    let f0 = &flows[0];
    let raw = format!(
        "{}{}_{}_{}_{}_iter{}",
        conf.raw_prefix,
        m.kind().name(),
        f0.spec.kind,
        conf.ip_version,
        f0.spec.msg_size.map_or("default".into(), |s| s.to_string()),
        it + 1
    );
    let secs = f0.spec.duration + 2 * f0.spec.warmup;
    let wait = Duration::from_secs(u64::from(secs)) + PKTGEN_GRACE + JOB_GRACE;
    let t0 = std::time::Instant::now();
    let cpu_jobs = start_cpu(ctx, cpu_hosts).await?;
    let results = match m {
        PacketMeasurement::XdpBench {
            command,
            xdp_mode,
            load_mode,
            packet_operation,
            remote_action,
        } => {
            // Per flow: the server, then the client (no head start, as upstream).
            let mut started = Vec::new();
            for f in flows {
                let rec_if = ctx.ifname(&f.receiver_nic)?;
                let gen_if = ctx.ifname(&f.generator_nic)?;
                let (src_mac, dst_mac) = (
                    mac(ctx, &f.generator_nic).await?,
                    mac(ctx, &f.receiver_nic).await?,
                );
                let server = ctx
                    .start_job(
                        &f.receiver_nic.host,
                        JobSpec::XdpBench {
                            command: *command,
                            interface: rec_if,
                            xdp_mode: *xdp_mode,
                            load_mode: *load_mode,
                            packet_operation: *packet_operation,
                            remote_action: *remote_action,
                            interval_s: 1,
                            duration_s: f.spec.duration + 2 * f.spec.warmup + RECEIVER_MARGIN_S,
                        },
                    )
                    .await?;
                let devices = cpus_of(f)?
                    .into_iter()
                    .map(|cpu| {
                        pktgen_device(
                            f,
                            &gen_if,
                            &src_mac,
                            &dst_mac,
                            cpu,
                            (PKTGEN_PORT, PKTGEN_PORT),
                            PKTGEN_BURST,
                            None,
                        )
                    })
                    .collect();
                let client = ctx
                    .start_job(
                        &f.generator_nic.host,
                        JobSpec::Pktgen {
                            devices,
                            duration_s: f.spec.duration + 2 * f.spec.warmup,
                        },
                    )
                    .await?;
                started.push((server, client));
            }
            let mut out = Vec::new();
            for (i, (f, (server, client))) in flows.iter().zip(started).enumerate() {
                let c = ctx.finish_job(&f.generator_nic.host, client, wait).await?;
                let s = ctx
                    .finish_job(&f.receiver_nic.host, server, JOB_GRACE)
                    .await?;
                save_job(ctx, format!("{raw}_flow{}_pktgen.json", i + 1), &c);
                save_job(ctx, format!("{raw}_flow{}_xdp-bench.json", i + 1), &s);
                let t = now();
                let gen = parsed(ctx, "pktgen", &f.generator_nic.host, &c, |r| {
                    parse_pktgen(r.data.as_ref())
                });
                let rec = parsed(ctx, "xdp-bench", &f.receiver_nic.host, &s, |r| {
                    parse_xdp_bench(r.data.as_ref(), r.started_at)
                });
                let success = gen.is_some() && rec.is_some();
                out.push(PacketIteration {
                    metrics: vec![
                        gen.unwrap_or_else(|| PerfResult::failed("packets", t)),
                        rec.map_or_else(
                            || PerfResult::failed("packets", t),
                            |r| PerfResult::Parallel(vec![r]),
                        ),
                    ],
                    success,
                });
            }
            out
        }
        PacketMeasurement::XdpRedirectCpu {
            cpus,
            program,
            remote_action,
            backlog_size,
            ratep,
            burst,
        } => {
            let rec_if = ctx.ifname(&f0.receiver_nic)?;
            let gen_if = ctx.ifname(&f0.generator_nic)?;
            let (src_mac, dst_mac) = (
                mac(ctx, &f0.generator_nic).await?,
                mac(ctx, &f0.receiver_nic).await?,
            );
            let server = ctx
                .start_job(
                    &f0.receiver_nic.host,
                    JobSpec::XdpBenchRedirectCpu {
                        interface: rec_if,
                        cpus: cpus.clone(),
                        program: *program,
                        remote_action: *remote_action,
                        qsize: *backlog_size,
                        interval_s: 1,
                        duration_s: secs + RECEIVER_MARGIN_S,
                        xdp_mode: None,
                    },
                )
                .await?;
            let c = run_pktgen(
                ctx,
                flows,
                &gen_if,
                (&src_mac, &dst_mac),
                (*burst, *ratep),
                secs,
                wait,
            )
            .await?;
            let s = ctx
                .finish_job(&f0.receiver_nic.host, server, JOB_GRACE)
                .await?;
            save_job(ctx, format!("{raw}_pktgen.json"), &c);
            save_job(ctx, format!("{raw}_xdp-bench.json"), &s);
            let gen = parsed(ctx, "pktgen", &f0.generator_nic.host, &c, |r| {
                parse_pktgen(r.data.as_ref())
            });
            let rec = parsed(
                ctx,
                "xdp-bench redirect-cpu",
                &f0.receiver_nic.host,
                &s,
                |r| parse_redirect_cpu(r.data.as_ref(), r.started_at, cpus),
            );
            let success = gen.is_some() && rec.is_some();
            let (per_cpu, fwd) =
                rec.unwrap_or((PerfResult::Parallel(vec![]), PerfResult::Parallel(vec![])));
            vec![PacketIteration {
                metrics: vec![gen.unwrap_or(PerfResult::Parallel(vec![])), per_cpu, fwd],
                success,
            }]
        }
        PacketMeasurement::Forwarding {
            ratep,
            burst,
            forwarder_rx,
            forwarder_tx,
        } => {
            let rec_if = ctx.ifname(&f0.receiver_nic)?;
            let gen_if = ctx.ifname(&f0.generator_nic)?;
            let (rx_if, tx_if) = (ctx.ifname(forwarder_rx)?, ctx.ifname(forwarder_tx)?);
            let (src_mac, dst_mac) = (
                mac(ctx, &f0.generator_nic).await?,
                mac(ctx, forwarder_rx).await?,
            );
            // dropper, rx monitor, tx monitor, generator.
            let dropper = ctx
                .start_job(
                    &f0.receiver_nic.host,
                    JobSpec::XdpBench {
                        command: XdpBenchCommand::Drop,
                        interface: rec_if,
                        xdp_mode: XdpMode::Native,
                        load_mode: None,
                        packet_operation: None,
                        remote_action: None,
                        interval_s: 1,
                        duration_s: secs + RECEIVER_MARGIN_S,
                    },
                )
                .await?;
            let rx_mon = ctx
                .start_job(
                    &forwarder_rx.host,
                    JobSpec::IfStats {
                        interfaces: vec![rx_if.clone()],
                        interval_ms: 1000,
                    },
                )
                .await?;
            let tx_mon = ctx
                .start_job(
                    &forwarder_tx.host,
                    JobSpec::IfStats {
                        interfaces: vec![tx_if.clone()],
                        interval_ms: 1000,
                    },
                )
                .await?;
            let c = run_pktgen(
                ctx,
                flows,
                &gen_if,
                (&src_mac, &dst_mac),
                (*burst, *ratep),
                secs,
                wait,
            )
            .await?;
            let rx = ctx.stop_job(&forwarder_rx.host, rx_mon).await?;
            let tx = ctx.stop_job(&forwarder_tx.host, tx_mon).await?;
            let d = ctx
                .finish_job(&f0.receiver_nic.host, dropper, JOB_GRACE)
                .await?;
            for (name, r) in [
                ("pktgen", &c),
                ("fwd-rx", &rx),
                ("fwd-tx", &tx),
                ("xdp-bench", &d),
            ] {
                save_job(ctx, format!("{raw}_{name}.json"), r);
            }
            let empty = || PerfResult::Sequential(vec![]);
            let gen = parsed(ctx, "pktgen", &f0.generator_nic.host, &c, |r| {
                parse_pktgen(r.data.as_ref())
            })
            .unwrap_or(PerfResult::Parallel(vec![]));
            let rec = parsed(ctx, "xdp-bench", &f0.receiver_nic.host, &d, |r| {
                parse_xdp_bench(r.data.as_ref(), r.started_at)
            })
            .unwrap_or_else(empty);
            let frx = parsed(ctx, "interface counters", &forwarder_rx.host, &rx, |r| {
                parse_ifstats(r.data.as_ref(), &rx_if, "rx_packets")
            })
            .unwrap_or_else(empty);
            let ftx = parsed(ctx, "interface counters", &forwarder_tx.host, &tx, |r| {
                parse_ifstats(r.data.as_ref(), &tx_if, "tx_packets")
            })
            .unwrap_or_else(empty);
            let success = [&gen, &rec, &frx, &ftx].iter().all(|m| !m.is_empty_list());
            vec![PacketIteration {
                metrics: vec![gen, rec, frx, ftx],
                success,
            }]
        }
    };
    ctx.tool_time_s += t0.elapsed().as_secs_f64();
    let cpus = finish_cpu(ctx, cpu_jobs, &raw).await?;
    Ok((results, cpus))
}

/// CPU results first, then the packet results, then the non-zero evaluation.
fn report_and_evaluate(
    ctx: &mut RunContext,
    flows: &[PacketFlow],
    kind: PacketKind,
    iterations: Vec<Iteration>,
    windows: &[(f64, f64)],
) {
    let mut per_cpu: super::perf::CpuSeries = BTreeMap::new();
    let n_results = match kind {
        PacketKind::XdpBench => flows.len(),
        _ => 1,
    };
    let mut per_result: Vec<Vec<PacketIteration>> = vec![Vec::new(); n_results];
    for (res, cpus) in iterations {
        for (i, r) in res.into_iter().enumerate() {
            if let Some(v) = per_result.get_mut(i) {
                v.push(r);
            }
        }
        for c in cpus {
            for s in c.stats {
                per_cpu
                    .entry((c.host.clone(), s.cpu.clone()))
                    .or_default()
                    .push(s.utilization);
            }
        }
    }
    super::perf::report_cpu(ctx, per_cpu);
    let descs: Vec<String> = match kind {
        PacketKind::XdpBench => flows.iter().map(|f| f.spec.to_string()).collect(),
        _ => vec![aggregate_flow(flows).to_string()],
    };
    let aggregated: Vec<AggregatedPackets> = descs
        .into_iter()
        .zip(per_result)
        .map(|(flow_desc, iterations)| AggregatedPackets {
            kind,
            flow_desc,
            iterations,
        })
        .collect();
    for a in &aggregated {
        let mut desc = Vec::new();
        if kind == PacketKind::Forwarding && flows.len() > 1 {
            // Per-flow generator lines: each pktgen device's intervals over the iterations.
            for (i, f) in flows.iter().enumerate() {
                let per_flow = PerfResult::Sequential(
                    a.iterations
                        .iter()
                        .filter_map(|it| it.metrics.first()?.items().get(i).cloned())
                        .collect(),
                );
                desc.push(f.spec.to_string());
                desc.push(format!(
                    "Generator generated (generator_results): {} +-{:.2}({:.2}%) packets per second.",
                    crate::measure::pktrate::py_grouped(per_flow.average(), 2, ' '),
                    per_flow.std_deviation(),
                    per_flow.deviation_percentage()
                ));
            }
        }
        desc.extend(a.report_lines());
        let mut details = a.details_json();
        if let Some(o) = details.as_object_mut() {
            o.insert(
                "aligned_windows".into(),
                serde_json::json!(windows
                    .iter()
                    .map(|(s, e)| serde_json::json!([s, e]))
                    .collect::<Vec<_>>()),
            );
        }
        ctx.add(ResultEntry::measurement(
            kind.name(),
            ResultType::from_bool(a.passed()),
            desc.join("\n"),
            a.summary_json(),
            Some(details),
        ));
    }
    for a in &aggregated {
        let (ok, text) = a.nonzero_evaluation();
        ctx.add(ResultEntry::generic(ResultType::from_bool(ok), text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pktgen_rate_is_per_burst() {
        assert_eq!(pktgen_ratep(-1, 1), None);
        assert_eq!(pktgen_ratep(0, 1), None);
        assert_eq!(pktgen_ratep(1000, 8), Some(125));
        assert_eq!(
            pktgen_ratep(3, 8),
            None,
            "int(3/8) = 0: unlimited, as upstream"
        );
    }
}
