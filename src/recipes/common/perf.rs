//! The perf test (upstream `RecipeCommon/Perf/Recipe.py`): the perf test tweaks, the
//! iterations (CPU samplers, iperf3 servers, clients; finish in reverse order; collect), time
//! alignment, the report (CPU results first, then flows) and the evaluators.

use crate::measure::cpu::parse_cpu_samples;
use crate::measure::evaluate::{baseline_evaluate, flow_key, nonzero_flow_evaluator};
use crate::measure::flow::{
    aggregate_multi_flow, align_iteration, AggregatedCpu, AggregatedFlow, CpuIteration,
    FlowIteration, FlowSpec,
};
use crate::measure::iperf::parse_iperf;
use crate::measure::perf::PerfResult;
use crate::measure::rr::{parse_rr, RrRun};
use crate::protocol::{IperfProto, JobResult, JobSpec, RrWorkload};
use crate::recipes::context::{RecipeError, RunContext};
use crate::recipes::typed::IpVersion;
use crate::results::{ResultEntry, ResultType};
use std::collections::BTreeMap;
use std::time::Duration;

/// How the flows of a perf configuration are judged (upstream `net_perf_evaluators`). A
/// baseline file, when given, adds its evaluation to every flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEvaluator {
    /// `NonzeroFlowEvaluator`: every iteration of the generator and receiver measured
    /// something.
    Nonzero,
}

/// Perf test tweaks (upstream CommonPerfTestTweakMixin), applied on every matched host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PerfTweaks {
    /// `echo 1 > /proc/sys/vm/drop_caches` before each iteration.
    pub drop_caches: bool,
    /// For udp_stream: (ipfrag_high_thresh, ipfrag_time) during the test.
    pub udp_fragmentation: Option<(u32, u32)>,
}

/// One perf configuration: flows measured in parallel, `iterations` times.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfConf {
    pub flows: Vec<FlowSpec>,
    pub ip_version: IpVersion,
    pub iterations: u32,
    /// `perf_test_simulation`: zero-valued results, nothing runs.
    pub simulate: bool,
    pub tweaks: PerfTweaks,
    pub evaluators: Vec<FlowEvaluator>,
    /// The sub-configuration in the baseline key (`gro=on ...`; empty without offloads).
    pub sub_desc: String,
    /// Prefix of the raw file names (`sub1_`).
    pub raw_prefix: String,
    /// Where the CPU is measured (upstream `HypervisorsStatCPUMeasurementGenerator`: host1 and
    /// host2 for the virtual recipes); None: the hosts of the flows' endpoints, a namespace
    /// counting as its host (upstream `FlowEndpointsStatCPUMeasurementGenerator`).
    pub cpu_hosts: Option<Vec<String>>,
    /// `do_linuxperf_measurement`: `perf record` of all CPUs on every host of the CPU
    /// measurement's host list given (`cpu_hosts`), else on every matched host, during each
    /// iteration; the perf.data files are kept under raw/.
    pub linuxperf: bool,
}

/// One host's `perf record` of one iteration.
#[derive(Debug, Clone)]
struct LinuxPerfRecord {
    host: String,
    /// The raw file (under raw/) when perf returned its data.
    file: Option<String>,
    /// Why it failed.
    error: Option<String>,
}

/// How long an iperf3 job may take beyond its measured time (connection setup, the final
/// result exchange) before it is killed: generous, because a TCG guest on a busy machine
/// needed more than 5 s for a 1 s run; a hung tool still ends.
pub const JOB_GRACE: Duration = Duration::from_secs(30);

fn fmt_rate(bps: f64) -> String {
    if !bps.is_finite() {
        return format!("{bps}");
    }
    let (v, u) = if bps >= 1e9 {
        (bps / 1e9, "Gbit/s")
    } else if bps >= 1e6 {
        (bps / 1e6, "Mbit/s")
    } else if bps >= 1e3 {
        (bps / 1e3, "kbit/s")
    } else {
        (bps, "bit/s")
    };
    format!("{v:.2} {u}")
}

/// Apply the tweaks, run the iterations, take the tweaks back (also after a failure), report
/// and evaluate.
pub async fn perf_test(ctx: &mut RunContext, conf: &PerfConf) -> Result<(), RecipeError> {
    let Some(first) = conf.flows.first() else {
        return Ok(());
    };
    let mark = ctx.mark();
    let mut result = Ok(());
    if first.kind == "udp_stream" && !conf.simulate {
        if let Some((thresh, time)) = conf.tweaks.udp_fragmentation {
            result = apply_udp_tweak(ctx, conf.ip_version, thresh, time).await;
        }
    }
    if result.is_ok() {
        result = iterations(ctx, conf).await;
    }
    // remove_perf_test_tweak always runs.
    let removed = ctx.unwind(mark).await;
    result?;
    removed
}

/// Per-host sysctl tweaks for udp_stream (UdpFragmentationPerfTestMixin).
pub(crate) async fn apply_udp_tweak(
    ctx: &mut RunContext,
    ipv: IpVersion,
    thresh: u32,
    time: u32,
) -> Result<(), RecipeError> {
    let (t_path, time_path) = match ipv {
        IpVersion::Ipv6 => (
            "/proc/sys/net/ipv6/ip6frag_high_thresh",
            "/proc/sys/net/ipv6/ip6frag_time",
        ),
        IpVersion::Ipv4 => (
            "/proc/sys/net/ipv4/ipfrag_high_thresh",
            "/proc/sys/net/ipv4/ipfrag_time",
        ),
    };
    let hosts = ctx.host_ids();
    ctx.begin_undo_group();
    for host in &hosts {
        for (path, value) in [(t_path, thresh.to_string()), (time_path, time.to_string())] {
            ctx.sysctl(host, path, &value).await?;
        }
    }
    ctx.add(ResultEntry::generic(
        ResultType::Pass,
        format!(
            "Perf test tweak description:\nUDP fragmentation: {t_path} = {thresh}, {time_path} = {time} on {}",
            hosts.join(" and ")
        ),
    ));
    Ok(())
}

async fn iterations(ctx: &mut RunContext, conf: &PerfConf) -> Result<(), RecipeError> {
    let flows = &conf.flows;
    let spec0 = &flows[0];
    let warmup = spec0.warmup;
    let kind = spec0.kind.clone();
    let ipv = conf.ip_version;
    let proto = match kind.as_str() {
        "udp_stream" => IperfProto::Udp,
        "sctp_stream" => IperfProto::Sctp,
        _ => IperfProto::Tcp,
    };
    let cpu_hosts: Vec<String> = {
        let mut h: Vec<String> = match &conf.cpu_hosts {
            Some(h) => h.clone(),
            None => flows
                .iter()
                .flat_map(|f| [&f.generator, &f.receiver])
                .map(|h| ctx.root_host(h).to_string())
                .collect(),
        };
        h.sort();
        h.dedup();
        h
    };
    let size_desc = spec0
        .msg_size
        .map(|s| format!("msg {s}"))
        .unwrap_or_else(|| "msg default".into());
    let n = conf.iterations;
    let mut measured: Vec<Iteration> = Vec::new();
    let mut perf_records: Vec<LinuxPerfRecord> = Vec::new();
    let mut rr_log: RrLog = vec![Vec::new(); flows.len()];
    for it in 0..n as usize {
        if conf.tweaks.drop_caches {
            for host in ctx.host_ids() {
                // Not taken back: dropping caches is an action, not a setting.
                let client = ctx.hosts.get(&host).map(|h| h.client.clone());
                if let Some(client) = client {
                    client
                        .sysctl_write("/proc/sys/vm/drop_caches", "1")
                        .await
                        .map_err(|e| {
                            RecipeError::Run(format!(
                                "{host}: writing /proc/sys/vm/drop_caches = 1 failed: {e}"
                            ))
                        })?;
                }
            }
        }
        let (its, cpus) = if conf.simulate {
            simulated_iteration(flows, &cpu_hosts)
        } else {
            run_iteration(
                ctx,
                conf,
                &cpu_hosts,
                proto,
                it,
                &mut perf_records,
                &mut rr_log,
            )
            .await?
        };
        // The progress line shows the iteration as it will be reported when it aligns.
        let mut shown = (its.clone(), cpus.clone());
        let shown = match align_iteration(&mut shown.0, &mut shown.1, f64::from(warmup)) {
            Ok(()) => shown.0,
            Err(_) => its.clone(),
        };
        let total: f64 = shown.iter().map(|f| f.generator_results.average()).sum();
        let rate = if spec0.is_rr() {
            format!("{total:.0} transactions/s")
        } else {
            fmt_rate(total)
        };
        ctx.progress(&format!(
            "{kind} {ipv} {size_desc} iter {}/{n}: {rate}",
            it + 1
        ));
        measured.push((its, cpus));
    }
    let (per_flow, per_cpu) = aggregate(time_aligned(measured, f64::from(warmup)), flows.len());
    report_and_evaluate(ctx, conf, per_flow, per_cpu, &perf_records, &rr_log);
    Ok(())
}

/// The hosts `perf record` runs on (LinuxPerfMeasurementGenerator: the hypervisors of a
/// virtual recipe, else every matched host).
fn linuxperf_hosts(ctx: &RunContext, conf: &PerfConf) -> Vec<String> {
    conf.cpu_hosts.clone().unwrap_or_else(|| ctx.host_ids())
}

/// Upstream `LinuxPerfMeasurement.report_results`: one result per host naming its files.
fn report_linuxperf(ctx: &mut RunContext, records: &[LinuxPerfRecord]) {
    let mut hosts: Vec<&str> = Vec::new();
    for r in records {
        if !hosts.contains(&r.host.as_str()) {
            hosts.push(&r.host);
        }
    }
    for host in hosts {
        let mine: Vec<&LinuxPerfRecord> = records.iter().filter(|r| r.host == host).collect();
        let files: Vec<String> = mine
            .iter()
            .filter_map(|r| r.file.as_ref().map(|f| format!("raw/{f}")))
            .collect();
        let errors: Vec<String> = mine.iter().filter_map(|r| r.error.clone()).collect();
        let mut desc = format!(
            "perf-record recorded all CPUs on {host} to files:\n    {}",
            files.join("\n    ")
        );
        for e in &errors {
            desc.push_str(&format!("\nperf-record on {host} failed: {e}"));
        }
        ctx.add(ResultEntry::measurement(
            "linuxperf",
            ResultType::from_bool(errors.is_empty()),
            desc,
            serde_json::json!({"host": host, "files": files}),
            None,
        ));
    }
}

/// One iteration's flows and CPU samplers.
type Iteration = (Vec<FlowIteration>, Vec<CpuIteration>);

/// Per flow, per iteration: the request/response generator's client and server reports (None
/// where that side failed), for the latency lines and details of the flow's result.
type RrLog = Vec<Vec<(Option<RrRun>, Option<RrRun>)>>;

/// Per (host, CPU line), the utilization of every iteration.
pub(crate) type CpuSeries = BTreeMap<(String, String), Vec<PerfResult>>;

/// One `CPU Utilization on host …` measurement per host, every CPU line of it aggregated over
/// the iterations (upstream's CPU results, reported before the flows).
pub(crate) fn report_cpu(ctx: &mut RunContext, per_cpu: CpuSeries) {
    let mut by_host: BTreeMap<String, Vec<AggregatedCpu>> = BTreeMap::new();
    for ((host, cpu), iters) in per_cpu {
        by_host
            .entry(host.clone())
            .or_default()
            .push(AggregatedCpu {
                host,
                cpu,
                iterations: iters,
            });
    }
    for (host, cpus) in &by_host {
        let lines: Vec<String> = cpus.iter().map(|c| c.report_line()).collect();
        // Every CPU line, as upstream's `{cpu: utilization}` (`cpu` = all CPUs, `cpuN`).
        let mut data = serde_json::Map::new();
        let mut details = serde_json::Map::new();
        for c in cpus {
            data.insert(c.cpu.clone(), crate::measure::perf::num(c.average()));
            details.insert(c.cpu.clone(), c.details_json());
        }
        ctx.add(ResultEntry::measurement(
            "cpu",
            ResultType::Pass,
            format!("CPU Utilization on host {host}:\n{}", lines.join("\n")),
            serde_json::Value::Object(data),
            Some(serde_json::json!({"host": host, "cpus": details})),
        ));
    }
}

/// Upstream `RecipeResults.time_aligned_results` and its caller: every iteration sliced to
/// its window, or, when any iteration cannot be (an empty slice), every iteration unaligned,
/// never a mix of the two.
fn time_aligned(measured: Vec<Iteration>, warmup: f64) -> Vec<Iteration> {
    let mut aligned = measured.clone();
    for (k, (its, cpus)) in aligned.iter_mut().enumerate() {
        if let Err(e) = align_iteration(its, cpus, warmup) {
            tracing::error!(
                "Result time alignment impossible (iteration {}: {e}), falling back to unaligned results",
                k + 1
            );
            return measured;
        }
    }
    aligned
}

/// Per flow its iterations; per (host, CPU line) its utilizations.
fn aggregate(iterations: Vec<Iteration>, n_flows: usize) -> (Vec<Vec<FlowIteration>>, CpuSeries) {
    let mut per_flow: Vec<Vec<FlowIteration>> = vec![Vec::new(); n_flows];
    let mut per_cpu = CpuSeries::new();
    for (its, cpus) in iterations {
        for (i, f) in its.into_iter().enumerate() {
            if let Some(v) = per_flow.get_mut(i) {
                v.push(f);
            }
        }
        for c in cpus {
            for stat in c.stats {
                per_cpu
                    .entry((c.host.clone(), stat.cpu.clone()))
                    .or_default()
                    .push(stat.utilization);
            }
        }
    }
    (per_flow, per_cpu)
}

/// CPU results first, then flows (upstream measurement order), then the evaluators.
fn report_and_evaluate(
    ctx: &mut RunContext,
    conf: &PerfConf,
    per_flow: Vec<Vec<FlowIteration>>,
    per_cpu: CpuSeries,
    perf_records: &[LinuxPerfRecord],
    rr_log: &RrLog,
) {
    report_cpu(ctx, per_cpu);
    report_linuxperf(ctx, perf_records);
    let aggregated: Vec<AggregatedFlow> = conf
        .flows
        .iter()
        .zip(per_flow)
        .map(|(spec, iterations)| AggregatedFlow {
            spec: spec.clone(),
            iterations,
        })
        .collect();
    let mut to_evaluate: Vec<&AggregatedFlow> = aggregated.iter().collect();
    let multi;
    if aggregated.len() > 1 {
        multi = aggregate_multi_flow(&aggregated);
        to_evaluate.push(&multi);
    }
    for (i, flow) in to_evaluate.iter().enumerate() {
        let rr = rr_log
            .get(i)
            .filter(|_| flow.spec.is_rr() && i < aggregated.len());
        report_flow(ctx, flow, rr.map(Vec::as_slice));
    }
    let baseline = ctx.baseline.clone();
    for flow in &to_evaluate {
        for ev in &conf.evaluators {
            let (ok, text) = match ev {
                FlowEvaluator::Nonzero => nonzero_flow_evaluator(flow),
            };
            ctx.add(ResultEntry::generic(ResultType::from_bool(ok), text));
        }
        if let Some(base) = &baseline {
            let key = flow_key(&flow.spec, conf.ip_version.as_str(), &conf.sub_desc);
            if let Some((ok, text)) = baseline_evaluate(base, &key, flow) {
                ctx.add(ResultEntry::generic(ResultType::from_bool(ok), text));
            }
        }
    }
}

/// The flow's result; a request/response flow adds its client's latency per iteration (to
/// the description and, with both reports' summaries, to the details).
fn report_flow(
    ctx: &mut RunContext,
    flow: &AggregatedFlow,
    rr: Option<&[(Option<RrRun>, Option<RrRun>)]>,
) {
    let mut desc = vec![flow.spec.to_string()];
    desc.extend(flow.report_lines());
    let mut details = flow.details_json();
    if let Some(rr) = rr {
        let mut per_it = Vec::new();
        for (k, (c, s)) in rr.iter().enumerate() {
            desc.push(latency_line(k + 1, c.as_ref()));
            per_it.push(serde_json::json!({
                "iteration": k + 1,
                "generator": c.as_ref().map(RrRun::summary_json),
                "receiver": s.as_ref().map(RrRun::summary_json),
            }));
        }
        if let Some(d) = details.as_object_mut() {
            d.insert("rr".into(), serde_json::Value::Array(per_it));
        }
    }
    ctx.add(ResultEntry::measurement(
        "flow",
        ResultType::from_bool(flow.success()),
        desc.join("\n"),
        flow.summary_json(),
        Some(details),
    ));
}

/// Seconds as µs (or ms from 1 ms on).
fn fmt_latency(s: f64) -> String {
    if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.2} µs", s * 1e6)
    }
}

/// `Generator measured latency (iteration 1): mean … (stddev …), min …, p50 …, …, max ….`
fn latency_line(iteration: usize, client: Option<&RrRun>) -> String {
    match client.and_then(|c| c.latency) {
        Some(l) => format!(
            "Generator measured latency (iteration {iteration}): mean {} (stddev {}), min {}, p50 {}, p90 {}, p99 {}, p99.9 {}, max {}.",
            fmt_latency(l.mean),
            fmt_latency(l.stddev),
            fmt_latency(l.min),
            fmt_latency(l.p50),
            fmt_latency(l.p90),
            fmt_latency(l.p99),
            fmt_latency(l.p99_9),
            fmt_latency(l.max)
        ),
        None => format!("Generator measured latency (iteration {iteration}): none (no transaction completed or no report)."),
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// perf_test_simulation: no flows run; zero-valued one-second intervals (upstream
/// `BaseFlowMeasurement.collect_simulated_results`).
fn simulated_iteration(
    flows: &[FlowSpec],
    cpu_hosts: &[String],
) -> (Vec<FlowIteration>, Vec<CpuIteration>) {
    let t0 = now();
    let its = flows
        .iter()
        .map(|f| FlowIteration::simulated(f, t0))
        .collect();
    let cpus = cpu_hosts
        .iter()
        .map(|h| CpuIteration {
            host: h.clone(),
            stats: Vec::new(),
        })
        .collect();
    (its, cpus)
}

/// One real iteration: CPU samplers, all iperf3 servers, a pause of
/// [`RunContext::server_settle`], then all clients; finish in reverse order; parse.
async fn run_iteration(
    ctx: &mut RunContext,
    conf: &PerfConf,
    cpu_hosts: &[String],
    proto: IperfProto,
    it: usize,
    perf_records: &mut Vec<LinuxPerfRecord>,
    rr_log: &mut RrLog,
) -> Result<(Vec<FlowIteration>, Vec<CpuIteration>), RecipeError> {
    let flows = &conf.flows;
    // Every raw file of this measurement starts with the same unique name: the
    // sub-configuration, the flow type, the IP version, the message size and the iteration.
    let measurement = format!(
        "{}{}_{}_{}_iter{}",
        conf.raw_prefix,
        flows[0].kind,
        conf.ip_version,
        flows[0]
            .msg_size
            .map(|m| m.to_string())
            .unwrap_or_else(|| "default".into()),
        it + 1
    );
    let t0 = std::time::Instant::now();
    let mut cpu_jobs = Vec::new();
    for h in cpu_hosts {
        let id = ctx
            .start_job(h, JobSpec::CpuStat { interval_ms: 1000 })
            .await?;
        cpu_jobs.push((h.clone(), id));
    }
    // LinuxPerfMeasurement: after the CPU samplers, before the flows; stopped after them.
    let mut perf_jobs = Vec::new();
    if conf.linuxperf {
        for h in linuxperf_hosts(ctx, conf) {
            let spec = JobSpec::LinuxPerf {
                duration_s: None,
                record_cpus: None,
                events: Vec::new(),
                call_graph: false,
                frequency: None,
            };
            let id = ctx.start_job(&h, spec).await?;
            perf_jobs.push((h, id));
        }
    }
    let mut servers = Vec::new();
    for f in flows {
        let id = ctx.start_job(&f.receiver, server_spec(f)).await?;
        servers.push(id);
    }
    tokio::time::sleep(ctx.server_settle).await;
    let mut clients = Vec::new();
    for f in flows {
        let id = ctx.start_job(&f.generator, client_spec(f, proto)).await?;
        clients.push(id);
    }
    // finish(): flows first (reverse of start order), CPU monitors last.
    let mut client_res: Vec<JobResult> = Vec::new();
    for (f, id) in flows.iter().zip(&clients) {
        let wait = Duration::from_secs(u64::from(f.duration + 2 * f.warmup)) + JOB_GRACE;
        client_res.push(ctx.finish_job(&f.generator, *id, wait).await?);
    }
    ctx.tool_time_s += t0.elapsed().as_secs_f64();
    let mut server_res: Vec<JobResult> = Vec::new();
    for (f, id) in flows.iter().zip(&servers) {
        // An iperf3 server (`-1`) ends with its client. A request/response server is stopped
        // once its client is done (upstream waits up to 10 s for neper's server to end, then
        // kills it); its report counts every transaction it served.
        let res = if f.is_rr() {
            ctx.stop_job(&f.receiver, *id).await?
        } else {
            ctx.finish_job(&f.receiver, *id, JOB_GRACE).await?
        };
        server_res.push(res);
    }
    for (h, id) in perf_jobs {
        let res = ctx.stop_job(&h, id).await?;
        let file = format!("{measurement}_linuxperf_{h}.data");
        let data = res
            .data
            .clone()
            .and_then(|d| serde_json::from_value::<crate::protocol::PerfData>(d).ok())
            .and_then(|d| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(d.perf_data_b64.as_bytes())
                    .ok()
            });
        let error = match (&data, &res.error) {
            (_, Some(e)) => Some(e.clone()),
            // A perf.data starts with its magic; an empty file is a perf that never started
            // recording.
            (Some(b), None) if !b.starts_with(b"PERFILE2") => Some(format!(
                "perf record wrote no recording in {:.1} s ({} bytes without a perf.data header; exit {:?}, signal {:?}{}): it had not started recording when the iteration ended (perf starts slowly on a slow machine such as a TCG guest: a longer perf_duration gives it time)",
                res.finished_at - res.started_at,
                b.len(),
                res.exit_code,
                res.signal,
                res.stderr
                    .lines()
                    .last()
                    .map(|l| format!("; {l}"))
                    .unwrap_or_default()
            )),
            (None, None) => Some(format!(
                "no perf.data came back (exit {:?}): {}",
                res.exit_code,
                res.stderr.lines().last().unwrap_or_default()
            )),
            (Some(_), None) if !res.passed => Some(format!(
                "perf record failed (exit {:?}): {}",
                res.exit_code,
                res.stderr.lines().last().unwrap_or_default()
            )),
            _ => None,
        };
        let saved = data.map(|bytes| {
            ctx.save_raw(file.clone(), &bytes);
            file
        });
        perf_records.push(LinuxPerfRecord {
            host: h,
            file: saved,
            error,
        });
    }
    let mut cpus = Vec::new();
    for (h, id) in cpu_jobs {
        let res = ctx.stop_job(&h, id).await?;
        let samples = cpu_samples(&res);
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
            format!("{measurement}_cpu_{h}.json"),
            serde_json::to_vec_pretty(&res.data)
                .unwrap_or_default()
                .as_slice(),
        );
        cpus.push(CpuIteration { host: h, stats });
    }
    let mut its = Vec::new();
    for (i, f) in flows.iter().enumerate() {
        let (c, s) = (&client_res[i], &server_res[i]);
        let base = format!("{measurement}_flow{}", i + 1);
        ctx.save_raw(format!("{base}_client.json"), c.stdout.as_bytes());
        ctx.save_raw(format!("{base}_server.json"), s.stdout.as_bytes());
        let t = now();
        if f.is_rr() {
            let gen = rr_side(ctx, &f.generator, "client", c);
            let rec = rr_side(ctx, &f.receiver, "server", s);
            its.push(FlowIteration::from_rr(gen.as_ref(), rec.as_ref(), t));
            if let Some(log) = rr_log.get_mut(i) {
                log.push((gen, rec));
            }
            continue;
        }
        let gen = flow_side(ctx, &f.generator, "client", c);
        let rec = flow_side(ctx, &f.receiver, "server", s);
        let success = gen.is_some() && rec.is_some();
        let (gr, gc) = gen.unwrap_or_else(|| {
            (
                PerfResult::failed("bits", t),
                PerfResult::failed("cpu_percent", t),
            )
        });
        let (rr, rc) = rec.unwrap_or_else(|| {
            (
                PerfResult::failed("bits", t),
                PerfResult::failed("cpu_percent", t),
            )
        });
        its.push(FlowIteration {
            generator_results: gr,
            generator_cpu_stats: gc,
            receiver_results: rr,
            receiver_cpu_stats: rc,
            success,
        });
    }
    Ok((its, cpus))
}

/// The workload of a request/response flow type.
fn rr_workload(kind: &str) -> Option<RrWorkload> {
    match kind {
        "tcp_rr" => Some(RrWorkload::TcpRr),
        "tcp_crr" => Some(RrWorkload::TcpCrr),
        "udp_rr" => Some(RrWorkload::UdpRr),
        _ => None,
    }
}

/// Bytes of a request and of a response: the message size (neper's `-Q` and `-R`, as
/// upstream passes them), neper's default of 1 without one.
fn rr_size(f: &FlowSpec) -> u32 {
    f.msg_size.unwrap_or(1)
}

/// How long the generator runs: the measured time plus the warm-up trimmed from both ends,
/// as for iperf3 (upstream's neper runs `-l duration` only and trims the warm-up out of it).
fn run_ms(f: &FlowSpec) -> u64 {
    (u64::from(f.duration) + 2 * u64::from(f.warmup)) * 1000
}

/// The receiver's job: iperf3 `-s -1`, or the built-in request/response server (upstream:
/// neper without `-c`).
fn server_spec(f: &FlowSpec) -> JobSpec {
    match rr_workload(&f.kind) {
        Some(workload) => JobSpec::RrServer {
            workload,
            bind: f.receiver_bind.clone(),
            port: f.receiver_port,
            request_size: rr_size(f),
            response_size: rr_size(f),
            duration_ms: run_ms(f),
            flows: None,
            threads: None,
            interval_ms: None,
            cpus: f.receiver_cpus(),
        },
        None => JobSpec::IperfServer {
            bind: f.receiver_bind.clone(),
            port: f.receiver_port,
            cpus: f.receiver_cpus(),
            oneoff: true,
        },
    }
}

/// The generator's job: iperf3 `-c`, or the built-in request/response client (upstream:
/// neper `-c`; like upstream, one flow in one thread, `perf_parallel_streams` unused).
fn client_spec(f: &FlowSpec, proto: IperfProto) -> JobSpec {
    match rr_workload(&f.kind) {
        Some(workload) => JobSpec::RrClient {
            workload,
            server: f.receiver_bind.clone(),
            port: f.receiver_port,
            bind: None,
            request_size: rr_size(f),
            response_size: rr_size(f),
            duration_ms: run_ms(f),
            flows: None,
            threads: None,
            transactions: None,
            interval_ms: None,
            loss_timeout_ms: None,
            cpus: f.generator_cpus(),
        },
        None => JobSpec::IperfClient {
            server: f.receiver_bind.clone(),
            port: f.receiver_port,
            cport: f.generator_port,
            duration_s: f.duration + 2 * f.warmup,
            proto,
            blksize: f.msg_size,
            parallel: (f.parallel_streams > 1).then_some(f.parallel_streams),
            cpus: f.generator_cpus(),
        },
    }
}

/// Parse one request/response job's report; a failed job or an unusable report gives None and
/// a FAIL result with the reason.
fn rr_side(ctx: &mut RunContext, host: &str, role: &str, res: &JobResult) -> Option<RrRun> {
    let parsed = parse_rr(&res.stdout);
    let why = match (&res.error, res.passed, &parsed) {
        (Some(e), _, _) => e.clone(),
        (None, true, Ok(_)) => return parsed.ok(),
        (None, _, Err(e)) => e.to_string(),
        (None, false, Ok(_)) => format!("the job failed: {}", res.stderr.trim()),
    };
    ctx.add(ResultEntry::generic(
        ResultType::Fail,
        format!("request/response {role} on {host} failed: {why}"),
    ));
    None
}

fn cpu_samples(res: &JobResult) -> Vec<(f64, String)> {
    res.data
        .as_ref()
        .and_then(|d| d.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| Some((s.get("t")?.as_f64()?, s.get("text")?.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Parse one iperf3 job's JSON; a failed job or unparsable output gives None and a FAIL
/// result with the reason.
fn flow_side(
    ctx: &mut RunContext,
    host: &str,
    role: &str,
    res: &JobResult,
) -> Option<(PerfResult, PerfResult)> {
    if !res.passed {
        let why = res
            .error
            .clone()
            .or_else(|| parse_iperf(&res.stdout).err().map(|e| e.to_string()))
            .unwrap_or_else(|| {
                format!(
                    "exit code {:?}: {}",
                    res.exit_code,
                    res.stderr.lines().last().unwrap_or("")
                )
            });
        ctx.add(ResultEntry::generic(
            ResultType::Fail,
            format!("iperf3 {role} on {host} failed: {why}"),
        ));
        return None;
    }
    match parse_iperf(&res.stdout) {
        Ok(run) => Some((run.throughput(), run.cpu())),
        Err(e) => {
            ctx.add(ResultEntry::generic(
                ResultType::Fail,
                format!("iperf3 {role} on {host}: unusable output: {e}"),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One flow of `secs` one-second intervals of 1e9 bits from `t0`.
    fn flow(t0: f64, secs: usize) -> FlowIteration {
        let bits = PerfResult::Parallel(vec![PerfResult::Sequential(
            (0..secs)
                .map(|k| PerfResult::interval(1e9, 1.0, "bits", t0 + k as f64))
                .collect(),
        )]);
        let cpu = PerfResult::interval(10.0 * secs as f64, secs as f64, "cpu_percent", t0);
        FlowIteration {
            generator_results: bits.clone(),
            generator_cpu_stats: cpu.clone(),
            receiver_results: bits,
            receiver_cpu_stats: cpu,
            success: true,
        }
    }

    #[test]
    fn one_iteration_that_cannot_be_aligned_leaves_every_iteration_untrimmed() {
        // Warm-up 2 s: iteration 1 (6 s) aligns to 2 s, iteration 2 (3 s) cannot.
        let measured = vec![
            (vec![flow(100.0, 6)], Vec::new()),
            (vec![flow(200.0, 3)], Vec::new()),
        ];
        let out = time_aligned(measured.clone(), 2.0);
        assert_eq!(out, measured, "a mix of trimmed and untrimmed iterations");
        // Both alignable: both trimmed.
        let measured = vec![
            (vec![flow(100.0, 6)], Vec::new()),
            (vec![flow(200.0, 5)], Vec::new()),
        ];
        let out = time_aligned(measured, 2.0);
        let d: Vec<f64> = out
            .iter()
            .map(|(f, _)| f[0].generator_results.duration())
            .collect();
        assert_eq!(d, [2.0, 1.0]);
        let (per_flow, per_cpu) = aggregate(out, 1);
        assert_eq!(per_flow[0].len(), 2);
        assert!(per_cpu.is_empty());
    }

    #[test]
    fn rates_are_human() {
        assert_eq!(fmt_latency(2.5e-5), "25.00 µs");
        assert_eq!(fmt_latency(4.0087e-3), "4.01 ms");
        assert_eq!(fmt_rate(9.41e9), "9.41 Gbit/s");
        assert_eq!(fmt_rate(12.5e6), "12.50 Mbit/s");
    }
}
