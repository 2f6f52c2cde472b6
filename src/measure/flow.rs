//! Flows: specs, per-iteration results, time alignment, aggregation and report lines
//! (upstream `RecipeCommon/Perf/Measurements/BaseFlowMeasurement.py`, `Results/`,
//! `RecipeCommon/Perf/Recipe.py`).

use super::cpu::CpuStat;
use super::iperf::IperfRun;
use super::perf::{num, EmptySlice, PerfResult};
use serde_json::{json, Value};
use std::fmt;

/// One perf flow (upstream `Flow`). `generator`/`receiver` are host ids.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FlowSpec {
    /// `tcp_stream`, `udp_stream`, `sctp_stream`, `mptcp_stream`, ...
    pub kind: String,
    pub generator: String,
    pub generator_bind: String,
    pub generator_port: Option<u16>,
    pub receiver: String,
    pub receiver_bind: String,
    /// 0 means "none" (used by the aggregate of parallel flows, which has no port).
    pub receiver_port: u16,
    pub msg_size: Option<u32>,
    pub duration: u32,
    pub warmup: u32,
    pub parallel_streams: u32,
    /// CPUs of the generator, and of the receiver unless `receiver_cpupin` says otherwise.
    pub cpupin: Option<Vec<u32>>,
    /// The receiver's own CPUs when they differ from the generator's (upstream
    /// FlowMeasurementMultiCpupinGenerator); `Some([])` = receiver not pinned. None: the
    /// receiver is pinned as `cpupin` says (FlowMeasurementGenerator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver_cpupin: Option<Vec<u32>>,
}

impl FlowSpec {
    /// The generator's CPUs (upstream `Flow.generator_cpupin`).
    pub fn generator_cpus(&self) -> Option<Vec<u32>> {
        self.cpupin.clone().filter(|c| !c.is_empty())
    }

    /// The receiver's CPUs (upstream `Flow.receiver_cpupin`).
    pub fn receiver_cpus(&self) -> Option<Vec<u32>> {
        match &self.receiver_cpupin {
            None => self.generator_cpus(),
            Some(c) if c.is_empty() => None,
            Some(c) => Some(c.clone()),
        }
    }

    /// A request/response flow (`tcp_rr`, `tcp_crr`, `udp_rr`: neper's workloads, run by
    /// lnst-agent's generator); its results count transactions, not bits.
    pub fn is_rr(&self) -> bool {
        matches!(self.kind.as_str(), "tcp_rr" | "tcp_crr" | "udp_rr")
    }
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "None".to_string(), |x| x.to_string())
}

fn cpus_repr(v: Option<&Vec<u32>>) -> String {
    v.map_or_else(
        || "None".to_string(),
        |v| {
            format!(
                "[{}]",
                v.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    )
}

impl fmt::Display for FlowSpec {
    /// Multi-line repr in the spirit of upstream's `Flow(...)`; separate generator and receiver
    /// pinning shows as upstream's two fields.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpupin = cpus_repr(self.cpupin.as_ref());
        let receiver_port = if self.receiver_port == 0 {
            "None".to_string()
        } else {
            self.receiver_port.to_string()
        };
        writeln!(f, "Flow(")?;
        writeln!(f, "    type={},", self.kind)?;
        writeln!(f, "    generator={},", self.generator)?;
        writeln!(f, "    generator_bind={},", self.generator_bind)?;
        writeln!(f, "    generator_port={},", opt(&self.generator_port))?;
        writeln!(f, "    receiver={},", self.receiver)?;
        writeln!(f, "    receiver_bind={},", self.receiver_bind)?;
        writeln!(f, "    receiver_port={receiver_port},")?;
        writeln!(f, "    msg_size={},", opt(&self.msg_size))?;
        writeln!(f, "    duration={},", self.duration)?;
        writeln!(f, "    parallel_streams={},", self.parallel_streams)?;
        match &self.receiver_cpupin {
            None => writeln!(f, "    cpupin={cpupin},")?,
            Some(_) => {
                writeln!(
                    f,
                    "    generator_cpupin={},",
                    cpus_repr(self.generator_cpus().as_ref())
                )?;
                writeln!(
                    f,
                    "    receiver_cpupin={},",
                    cpus_repr(self.receiver_cpus().as_ref())
                )?;
            }
        }
        writeln!(f, "    warmup_duration={}", self.warmup)?;
        write!(f, ")")
    }
}

/// One flow's results in one iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowIteration {
    /// Client throughput, `Parallel[Sequential(stream)[intervals]]`, unit "bits".
    pub generator_results: PerfResult,
    /// Client process CPU, unit "cpu_percent".
    pub generator_cpu_stats: PerfResult,
    pub receiver_results: PerfResult,
    pub receiver_cpu_stats: PerfResult,
    /// Both jobs passed.
    pub success: bool,
}

impl FlowIteration {
    /// Build one iteration from the parsed client (generator) and server (receiver) runs, as
    /// upstream's IperfFlowMeasurement does: `None` means the job failed (non-zero exit or
    /// unparsable/incomplete JSON) and gives the placeholders `PerfResult::failed("bits", now)`
    /// and `PerfInterval(0, 1, "cpu_percent", now)`; `success` = both jobs passed.
    pub fn from_iperf(client: Option<&IperfRun>, server: Option<&IperfRun>, now: f64) -> Self {
        let tput = |r: Option<&IperfRun>| {
            r.map_or_else(|| PerfResult::failed("bits", now), |r| r.throughput())
        };
        let cpu = |r: Option<&IperfRun>| {
            r.map_or_else(
                || PerfResult::interval(0.0, 1.0, "cpu_percent", now),
                |r| r.cpu(),
            )
        };
        FlowIteration {
            generator_results: tput(client),
            generator_cpu_stats: cpu(client),
            receiver_results: tput(server),
            receiver_cpu_stats: cpu(server),
            success: client.is_some() && server.is_some(),
        }
    }

    /// Upstream simulation mode (`perf_test_simulation`): `2*warmup + duration` one-second
    /// intervals of 0 bits (a request/response flow: 0 transactions) starting at `now` for
    /// both sides; CPU `0` over the same span.
    pub fn simulated(spec: &FlowSpec, now: f64) -> Self {
        let secs = 2 * u64::from(spec.warmup) + u64::from(spec.duration);
        let unit = if spec.is_rr() {
            super::rr::TRANSACTIONS_UNIT
        } else {
            "bits"
        };
        let zeros = || {
            PerfResult::Parallel(vec![PerfResult::Sequential(
                (0..secs)
                    .map(|k| PerfResult::interval(0.0, 1.0, unit, now + k as f64))
                    .collect(),
            )])
        };
        let cpu = || PerfResult::interval(0.0, secs as f64, "cpu_percent", now);
        FlowIteration {
            generator_results: zeros(),
            generator_cpu_stats: cpu(),
            receiver_results: zeros(),
            receiver_cpu_stats: cpu(),
            success: true,
        }
    }

    fn metrics(&self) -> [&PerfResult; 4] {
        [
            &self.generator_results,
            &self.generator_cpu_stats,
            &self.receiver_results,
            &self.receiver_cpu_stats,
        ]
    }
    /// Earliest start over the 4 metrics (NaN-free when any metric has data).
    pub fn start(&self) -> f64 {
        self.metrics()
            .iter()
            .map(|m| m.start())
            .fold(f64::NAN, f64::min)
    }
    /// Latest end over the 4 metrics.
    pub fn end(&self) -> f64 {
        self.metrics()
            .iter()
            .map(|m| m.end())
            .fold(f64::NAN, f64::max)
    }
    fn time_slice(&self, start: f64, end: f64) -> Result<FlowIteration, EmptySlice> {
        Ok(FlowIteration {
            generator_results: self.generator_results.time_slice(start, end)?,
            generator_cpu_stats: self.generator_cpu_stats.time_slice(start, end)?,
            receiver_results: self.receiver_results.time_slice(start, end)?,
            receiver_cpu_stats: self.receiver_cpu_stats.time_slice(start, end)?,
            success: self.success,
        })
    }
}

/// One host's CPU results in one iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuIteration {
    pub host: String,
    pub stats: Vec<CpuStat>,
}

/// Time-align one iteration, as upstream's `RecipeResults._get_measurement_timestamps`:
/// with flows, the window is `[start + warmup, end − warmup]` of the **last** flow (the one
/// started last; start and end over its 4 metrics), so with `perf_parallel_processes` > 1 the
/// earlier flows' warm-up is not in the window but the later flows' warm-up is not either;
/// without flows it is `[max start, min end]` over the CPU utilizations. Every flow metric and CPU
/// utilization is sliced to the window. All-or-nothing: on [`EmptySlice`] nothing is changed
/// and the caller keeps (and should report) the unaligned data.
pub fn align_iteration(
    flows: &mut [FlowIteration],
    cpus: &mut [CpuIteration],
    warmup: f64,
) -> Result<(), EmptySlice> {
    let (start, end) = if flows.is_empty() {
        let utils = cpus
            .iter()
            .flat_map(|c| c.stats.iter().map(|s| &s.utilization));
        let (mut s, mut e) = (f64::NAN, f64::NAN);
        for u in utils {
            s = s.max(u.start());
            e = e.min(u.end());
        }
        (s, e)
    } else {
        let last = flows
            .last()
            .map_or((f64::NAN, f64::NAN), |f| (f.start(), f.end()));
        (last.0 + warmup, last.1 - warmup)
    };
    if start.is_nan() || end.is_nan() {
        return Err(EmptySlice { start, end });
    }
    let new_flows = flows
        .iter()
        .map(|f| f.time_slice(start, end))
        .collect::<Result<Vec<_>, _>>()?;
    let new_cpus = cpus
        .iter()
        .map(|c| {
            Ok(CpuIteration {
                host: c.host.clone(),
                stats: c
                    .stats
                    .iter()
                    .map(|s| {
                        Ok(CpuStat {
                            cpu: s.cpu.clone(),
                            utilization: s.utilization.time_slice(start, end)?,
                        })
                    })
                    .collect::<Result<Vec<_>, EmptySlice>>()?,
            })
        })
        .collect::<Result<Vec<_>, EmptySlice>>()?;
    for (slot, new) in flows.iter_mut().zip(new_flows) {
        *slot = new;
    }
    for (slot, new) in cpus.iter_mut().zip(new_cpus) {
        *slot = new;
    }
    Ok(())
}

/// The four flow metrics, by upstream attribute name.
pub const FLOW_METRICS: [&str; 4] = [
    "generator_results",
    "generator_cpu_stats",
    "receiver_results",
    "receiver_cpu_stats",
];

/// One flow over all iterations.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregatedFlow {
    pub spec: FlowSpec,
    pub iterations: Vec<FlowIteration>,
}

fn stat_json(r: &PerfResult) -> Value {
    json!({
        "average": num(r.average()),
        "std_deviation": num(r.std_deviation()),
        "deviation_percentage": num(r.deviation_percentage()),
        "unit": r.unit(),
    })
}

impl AggregatedFlow {
    pub fn new(spec: FlowSpec, iterations: Vec<FlowIteration>) -> Self {
        AggregatedFlow { spec, iterations }
    }

    fn collect(&self, pick: fn(&FlowIteration) -> &PerfResult) -> PerfResult {
        PerfResult::Sequential(self.iterations.iter().map(|i| pick(i).clone()).collect())
    }

    /// `Sequential[per-iteration generator throughput]`: average = Σbits/Σduration,
    /// std_deviation = sample stdev of the per-iteration averages.
    pub fn generator_results(&self) -> PerfResult {
        self.collect(|i| &i.generator_results)
    }
    pub fn generator_cpu_stats(&self) -> PerfResult {
        self.collect(|i| &i.generator_cpu_stats)
    }
    pub fn receiver_results(&self) -> PerfResult {
        self.collect(|i| &i.receiver_results)
    }
    pub fn receiver_cpu_stats(&self) -> PerfResult {
        self.collect(|i| &i.receiver_cpu_stats)
    }

    /// A metric by its upstream name (see [`FLOW_METRICS`]).
    pub fn metric(&self, name: &str) -> Option<PerfResult> {
        match name {
            "generator_results" => Some(self.generator_results()),
            "generator_cpu_stats" => Some(self.generator_cpu_stats()),
            "receiver_results" => Some(self.receiver_results()),
            "receiver_cpu_stats" => Some(self.receiver_cpu_stats()),
            _ => None,
        }
    }

    /// Every iteration's jobs passed (true for no iterations, like Python's `all([])`).
    pub fn success(&self) -> bool {
        self.iterations.iter().all(|i| i.success)
    }

    /// Upstream's 4 description lines, plus `<metric> has invalid duration!` for each metric
    /// whose aggregate duration is ≤ 0.
    pub fn report_lines(&self) -> Vec<String> {
        let unit = |r: &PerfResult, dflt: &str| r.unit().unwrap_or(dflt).to_string();
        let g = self.generator_results();
        let gc = self.generator_cpu_stats();
        let r = self.receiver_results();
        let rc = self.receiver_cpu_stats();
        let mut lines = vec![
            format!(
                "Generator measured throughput (generator_results): {:.2} +-{:.2}({:.2}%) {} per second.",
                g.average(),
                g.std_deviation(),
                g.deviation_percentage(),
                unit(&g, "bits")
            ),
            format!(
                "Generator process CPU data (generator_cpu_stats): {:.2} +-{:.2} {} per second.",
                gc.average(),
                gc.std_deviation(),
                unit(&gc, "cpu_percent")
            ),
            format!(
                "Receiver measured throughput (receiver_results): {:.2} +-{:.2}({:.2}%) {} per second.",
                r.average(),
                r.std_deviation(),
                r.deviation_percentage(),
                unit(&r, "bits")
            ),
            format!(
                "Receiver process CPU data (receiver_cpu_stats): {:.2} +-{:.2} {} per second.",
                rc.average(),
                rc.std_deviation(),
                unit(&rc, "cpu_percent")
            ),
        ];
        for (name, m) in FLOW_METRICS.iter().zip([&g, &gc, &r, &rc]) {
            let d = m.duration();
            if d.is_nan() || d <= 0.0 {
                lines.push(format!("{name} has invalid duration!"));
            }
        }
        lines
    }

    /// The flow repr followed by [`Self::report_lines`], newline-joined (the description of
    /// the `flow` measurement result).
    pub fn description(&self) -> String {
        let mut s = self.spec.to_string();
        for l in self.report_lines() {
            s.push('\n');
            s.push_str(&l);
        }
        s
    }

    /// Upstream JSON formatter data for a `flow` measurement: the 4 aggregate averages
    /// (`null` when not finite).
    pub fn summary_json(&self) -> Value {
        json!({
            "generator_results": num(self.generator_results().average()),
            "generator_cpu_stats": num(self.generator_cpu_stats().average()),
            "receiver_results": num(self.receiver_results().average()),
            "receiver_cpu_stats": num(self.receiver_cpu_stats().average()),
        })
    }

    /// Spec, every iteration's full trees, and the aggregate statistics per metric.
    pub fn details_json(&self) -> Value {
        let iterations: Vec<Value> = self
            .iterations
            .iter()
            .map(|i| {
                json!({
                    "success": i.success,
                    "generator_results": i.generator_results.to_json(),
                    "generator_cpu_stats": i.generator_cpu_stats.to_json(),
                    "receiver_results": i.receiver_results.to_json(),
                    "receiver_cpu_stats": i.receiver_cpu_stats.to_json(),
                })
            })
            .collect();
        json!({
            "flow": self.spec,
            "success": self.success(),
            "aggregate": {
                "generator_results": stat_json(&self.generator_results()),
                "generator_cpu_stats": stat_json(&self.generator_cpu_stats()),
                "receiver_results": stat_json(&self.receiver_results()),
                "receiver_cpu_stats": stat_json(&self.receiver_cpu_stats()),
            },
            "iterations": iterations,
        })
    }
}

/// The aggregate of flows run in parallel (upstream `aggregate_multi_flow_results`): per
/// iteration, each metric is a `Parallel` over the flows' results of that iteration; the
/// iteration succeeds when every flow did. Iterations beyond the shortest flow are dropped.
/// The spec is the first flow's with no ports and no pinning (`receiver_port` 0 = none).
pub fn aggregate_multi_flow(flows: &[AggregatedFlow]) -> AggregatedFlow {
    let n = flows.iter().map(|f| f.iterations.len()).min().unwrap_or(0);
    let spec = flows.first().map_or_else(
        || FlowSpec {
            kind: String::new(),
            generator: String::new(),
            generator_bind: String::new(),
            generator_port: None,
            receiver: String::new(),
            receiver_bind: String::new(),
            receiver_port: 0,
            msg_size: None,
            duration: 0,
            warmup: 0,
            parallel_streams: 0,
            cpupin: None,
            receiver_cpupin: None,
        },
        |f| FlowSpec {
            generator_port: None,
            receiver_port: 0,
            cpupin: None,
            receiver_cpupin: None,
            ..f.spec.clone()
        },
    );
    let iterations = (0..n)
        .map(|k| {
            let its: Vec<&FlowIteration> =
                flows.iter().filter_map(|f| f.iterations.get(k)).collect();
            let par = |pick: fn(&FlowIteration) -> &PerfResult| {
                PerfResult::Parallel(its.iter().map(|i| pick(i).clone()).collect())
            };
            FlowIteration {
                generator_results: par(|i| &i.generator_results),
                generator_cpu_stats: par(|i| &i.generator_cpu_stats),
                receiver_results: par(|i| &i.receiver_results),
                receiver_cpu_stats: par(|i| &i.receiver_cpu_stats),
                success: its.iter().all(|i| i.success),
            }
        })
        .collect();
    AggregatedFlow { spec, iterations }
}

/// One CPU line of one host over all iterations.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregatedCpu {
    pub host: String,
    pub cpu: String,
    /// Per-iteration utilization.
    pub iterations: Vec<PerfResult>,
}

impl AggregatedCpu {
    /// `Sequential[per-iteration utilization]`.
    pub fn utilization(&self) -> PerfResult {
        PerfResult::Sequential(self.iterations.clone())
    }
    pub fn average(&self) -> f64 {
        self.utilization().average()
    }
    pub fn std_deviation(&self) -> f64 {
        self.utilization().std_deviation()
    }
    /// `host host1 cpu 'cpu0' utilization: 12.34 +-0.56 time units per second`
    pub fn report_line(&self) -> String {
        let u = self.utilization();
        format!(
            "host {} cpu '{}' utilization: {:.2} +-{:.2} {} per second",
            self.host,
            self.cpu,
            u.average(),
            u.std_deviation(),
            u.unit().unwrap_or(super::cpu::CPU_UNIT)
        )
    }
    /// Full trees per iteration plus aggregate statistics.
    pub fn details_json(&self) -> Value {
        let u = self.utilization();
        json!({
            "host": self.host,
            "cpu": self.cpu,
            "aggregate": stat_json(&u),
            "iterations": self.iterations.iter().map(|i| i.to_json()).collect::<Vec<_>>(),
        })
    }
}

/// Upstream JSON formatter data for one host's `cpu` measurement:
/// `{"utilization": <average of the aggregate "cpu" line>}` (`null` if absent or not finite).
pub fn cpu_summary_json(host_cpus: &[AggregatedCpu]) -> Value {
    let avg = host_cpus
        .iter()
        .find(|c| c.cpu == "cpu")
        .map_or(Value::Null, |c| num(c.average()));
    json!({ "utilization": avg })
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FlowError {
    #[error("iteration {iteration}: CPU results do not match the first iteration (expected {expected}, found {found})")]
    CpuMismatch {
        iteration: usize,
        expected: String,
        found: String,
    },
}

/// Zip per-iteration CPU results (outer: iterations; inner: hosts) into one
/// [`AggregatedCpu`] per (host, cpu), in the first iteration's order. Like upstream, each
/// iteration must list the same hosts and CPUs in the same order.
pub fn aggregate_cpu(per_iteration: &[Vec<CpuIteration>]) -> Result<Vec<AggregatedCpu>, FlowError> {
    let Some(first) = per_iteration.first() else {
        return Ok(Vec::new());
    };
    let keys: Vec<(String, String)> = first
        .iter()
        .flat_map(|h| h.stats.iter().map(move |s| (h.host.clone(), s.cpu.clone())))
        .collect();
    let mut out: Vec<AggregatedCpu> = keys
        .iter()
        .map(|(host, cpu)| AggregatedCpu {
            host: host.clone(),
            cpu: cpu.clone(),
            iterations: Vec::new(),
        })
        .collect();
    for (k, hosts) in per_iteration.iter().enumerate() {
        let these: Vec<(&str, &CpuStat)> = hosts
            .iter()
            .flat_map(|h| h.stats.iter().map(move |s| (h.host.as_str(), s)))
            .collect();
        let label = |v: &mut dyn Iterator<Item = (&str, &str)>| {
            v.map(|(h, c)| format!("{h}/{c}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let same = these.len() == keys.len()
            && these
                .iter()
                .zip(&keys)
                .all(|((h, s), (kh, kc))| h == kh && &s.cpu == kc);
        if !same {
            return Err(FlowError::CpuMismatch {
                iteration: k,
                expected: label(&mut keys.iter().map(|(h, c)| (h.as_str(), c.as_str()))),
                found: label(&mut these.iter().map(|(h, s)| (*h, s.cpu.as_str()))),
            });
        }
        for (agg, (_, s)) in out.iter_mut().zip(these) {
            agg.iterations.push(s.utilization.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tcp_stream flow between 198.18.0.1 and 198.18.0.2 (unit-test fixture).
    pub(crate) fn spec() -> FlowSpec {
        FlowSpec {
            kind: "tcp_stream".into(),
            generator: "host1".into(),
            generator_bind: "198.18.0.1".into(),
            generator_port: Some(12000),
            receiver: "host2".into(),
            receiver_bind: "198.18.0.2".into(),
            receiver_port: 12000,
            msg_size: None,
            duration: 10,
            warmup: 2,
            parallel_streams: 1,
            cpupin: Some(vec![0, 1]),
            receiver_cpupin: None,
        }
    }

    /// One-stream throughput of `secs` one-second intervals of `per_sec` bits from `t0`.
    fn tput(t0: f64, secs: usize, per_sec: f64) -> PerfResult {
        PerfResult::Parallel(vec![PerfResult::Sequential(
            (0..secs)
                .map(|k| PerfResult::interval(per_sec, 1.0, "bits", t0 + k as f64))
                .collect(),
        )])
    }

    fn cpu(t0: f64, secs: f64, pct: f64) -> PerfResult {
        PerfResult::interval(pct * secs, secs, "cpu_percent", t0)
    }

    fn iteration(t0: f64, secs: usize, per_sec: f64) -> FlowIteration {
        FlowIteration {
            generator_results: tput(t0, secs, per_sec),
            generator_cpu_stats: cpu(t0, secs as f64, 40.0),
            receiver_results: tput(t0, secs, per_sec * 0.99),
            receiver_cpu_stats: cpu(t0, secs as f64, 30.0),
            success: true,
        }
    }

    #[test]
    fn display_repr() {
        let s = spec().to_string();
        assert!(s.starts_with("Flow(\n    type=tcp_stream,\n"));
        assert!(s.contains("generator_bind=198.18.0.1,"));
        assert!(s.contains("msg_size=None,"));
        assert!(s.contains("cpupin=[0, 1],"));
        assert!(s.ends_with("warmup_duration=2\n)"));
    }

    #[test]
    fn separate_receiver_pinning() {
        let same = spec();
        assert_eq!(same.receiver_cpus(), Some(vec![0, 1]));
        let split = FlowSpec {
            receiver_cpupin: Some(vec![3]),
            ..spec()
        };
        assert_eq!(
            (split.generator_cpus(), split.receiver_cpus()),
            (Some(vec![0, 1]), Some(vec![3]))
        );
        let s = split.to_string();
        assert!(
            s.contains("    generator_cpupin=[0, 1],\n    receiver_cpupin=[3],\n"),
            "{s}"
        );
        // Generator pinned, receiver not.
        let unpinned = FlowSpec {
            receiver_cpupin: Some(vec![]),
            ..spec()
        };
        assert_eq!(unpinned.receiver_cpus(), None);
        assert!(unpinned.to_string().contains("receiver_cpupin=None,"));
        // The field is left out of the JSON unless the receiver has its own pinning.
        let j = serde_json::to_value(&same).unwrap_or_default();
        assert!(j.get("receiver_cpupin").is_none(), "{j}");
        let j = serde_json::to_value(&split).unwrap_or_default();
        assert_eq!(j["receiver_cpupin"], serde_json::json!([3]));
        assert!(!same.is_rr());
        assert!(FlowSpec {
            kind: "tcp_crr".into(),
            ..spec()
        }
        .is_rr());
    }

    #[test]
    fn aggregate_is_time_weighted() {
        // iteration 1: 10 s at 9e9; iteration 2: 5 s at 6e9
        let f = AggregatedFlow::new(
            spec(),
            vec![iteration(1000.0, 10, 9e9), iteration(2000.0, 5, 6e9)],
        );
        let g = f.generator_results();
        assert!((g.average() - 120e9 / 15.0).abs() < 1.0);
        assert!((g.std_deviation() - 3e9 / 2f64.sqrt()).abs() < 1e-3);
        let s = f.summary_json();
        assert!((s["generator_results"].as_f64().unwrap() - 8e9).abs() < 1.0);
        assert!((s["generator_cpu_stats"].as_f64().unwrap() - 40.0).abs() < 1e-9);
        assert!((s["receiver_cpu_stats"].as_f64().unwrap() - 30.0).abs() < 1e-9);
        assert!(f.success());
    }

    #[test]
    fn report_lines_format() {
        let f = AggregatedFlow::new(
            spec(),
            vec![iteration(0.0, 2, 100.0), iteration(10.0, 2, 300.0)],
        );
        let lines = f.report_lines();
        // averages 100 and 300 over equal durations → 200 ± 141.42 (70.71 %)
        assert_eq!(
            lines[0],
            "Generator measured throughput (generator_results): 200.00 +-141.42(70.71%) bits per second."
        );
        assert_eq!(
            lines[1],
            "Generator process CPU data (generator_cpu_stats): 40.00 +-0.00 cpu_percent per second."
        );
        assert_eq!(
            lines[2],
            "Receiver measured throughput (receiver_results): 198.00 +-140.01(70.71%) bits per second."
        );
        assert_eq!(lines.len(), 4);
        assert!(f.description().starts_with("Flow(\n"));
        assert!(f.description().ends_with("cpu_percent per second."));
    }

    #[test]
    fn invalid_duration_line() {
        let mut it = iteration(0.0, 2, 100.0);
        it.receiver_cpu_stats = PerfResult::interval(0.0, 0.0, "cpu_percent", 0.0);
        let f = AggregatedFlow::new(spec(), vec![it]);
        let lines = f.report_lines();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[4], "receiver_cpu_stats has invalid duration!");
        assert!(f.summary_json()["receiver_cpu_stats"].is_null());
        let empty = AggregatedFlow::new(spec(), vec![]);
        assert_eq!(empty.report_lines().len(), 8);
    }

    #[test]
    fn alignment_trims_warmup() {
        // flow runs [1000, 1014] (10 s + 2×2 s warmup); CPU monitor covers [999, 1016]
        let mut flows = vec![iteration(1000.0, 14, 1e9)];
        let util = PerfResult::Parallel(vec![PerfResult::Sequential(
            (0..17)
                .map(|k| PerfResult::interval(50.0, 1.0, "time units", 999.0 + k as f64))
                .collect(),
        )]);
        let mut cpus = vec![CpuIteration {
            host: "host1".into(),
            stats: vec![CpuStat {
                cpu: "cpu".into(),
                utilization: util,
            }],
        }];
        align_iteration(&mut flows, &mut cpus, 2.0).unwrap();
        let g = &flows[0].generator_results;
        assert_eq!(g.start(), 1002.0);
        assert_eq!(g.end(), 1012.0);
        assert_eq!(g.value(), 10e9);
        assert_eq!(g.duration(), 10.0);
        let gc = &flows[0].generator_cpu_stats;
        assert_eq!((gc.start(), gc.duration()), (1002.0, 10.0));
        assert!((gc.average() - 40.0).abs() < 1e-12);
        let u = &cpus[0].stats[0].utilization;
        assert_eq!((u.start(), u.end()), (1002.0, 1012.0));
        assert_eq!(u.value(), 500.0);
    }

    #[test]
    fn alignment_window_of_parallel_flows_is_the_last_flows() {
        // perf_parallel_processes = 2: the second flow started 3 s after the first; both run
        // 14 s (10 s + 2×2 s warm-up). Upstream trims to the last flow's window
        // [1003 + 2, 1017 − 2]; a window over all flows, [1000 + 2, 1017 − 2], would keep the
        // second flow's warm-up (1003..1005) in the first flow's figures.
        let mut flows = vec![iteration(1000.0, 14, 1e9), iteration(1003.0, 14, 1e9)];
        align_iteration(&mut flows, &mut [], 2.0).unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (&flows[0].generator_results, &flows[1].generator_results);
        assert_eq!((a.start(), a.end()), (1005.0, 1014.0));
        assert_eq!((b.start(), b.end()), (1005.0, 1015.0));
        assert_eq!(a.value(), 9e9);
        assert_eq!(b.value(), 10e9);
    }

    #[test]
    fn alignment_failure_leaves_data_unchanged() {
        let mut flows = vec![iteration(1000.0, 4, 1e9)];
        let before = flows.clone();
        // warmup 3 on a 4 s flow → window [1003, 1001] is empty
        assert!(align_iteration(&mut flows, &mut [], 3.0).is_err());
        assert_eq!(flows, before);
        // CPU results outside the flow window → error, nothing changed
        let mut flows = vec![iteration(1000.0, 4, 1e9)];
        let mut cpus = vec![CpuIteration {
            host: "h".into(),
            stats: vec![CpuStat {
                cpu: "cpu".into(),
                utilization: PerfResult::interval(1.0, 1.0, "time units", 500.0),
            }],
        }];
        assert!(align_iteration(&mut flows, &mut cpus, 0.0).is_err());
        assert_eq!(flows, before);
    }

    #[test]
    fn alignment_without_flows_uses_cpu_overlap() {
        let mk = |t0: f64, n: usize| CpuIteration {
            host: "h".into(),
            stats: vec![CpuStat {
                cpu: "cpu".into(),
                utilization: PerfResult::Sequential(
                    (0..n)
                        .map(|k| PerfResult::interval(10.0, 1.0, "time units", t0 + k as f64))
                        .collect(),
                ),
            }],
        };
        let mut cpus = vec![mk(0.0, 10), mk(3.0, 10)];
        align_iteration(&mut [], &mut cpus, 5.0).unwrap();
        for c in &cpus {
            let u = &c.stats[0].utilization;
            assert_eq!((u.start(), u.end()), (3.0, 10.0));
        }
    }

    #[test]
    fn multi_flow_aggregate() {
        let a = AggregatedFlow::new(
            spec(),
            vec![iteration(0.0, 2, 100.0), iteration(10.0, 2, 100.0)],
        );
        let mut it = iteration(10.0, 2, 300.0);
        it.success = false;
        let b = AggregatedFlow::new(
            FlowSpec {
                generator_port: Some(12001),
                receiver_port: 12001,
                ..spec()
            },
            vec![iteration(0.0, 2, 300.0), it],
        );
        let m = aggregate_multi_flow(&[a, b]);
        assert_eq!(m.iterations.len(), 2);
        // per iteration: 2 s × (100+300) bits per second, concurrent → 400/s
        assert_eq!(m.iterations[0].generator_results.value(), 800.0);
        assert_eq!(m.iterations[0].generator_results.duration(), 2.0);
        assert_eq!(m.generator_results().average(), 400.0);
        assert!(m.iterations[0].success);
        assert!(!m.success());
        assert_eq!(m.spec.receiver_port, 0);
        assert!(m.spec.to_string().contains("receiver_port=None,"));
        assert!(aggregate_multi_flow(&[]).iterations.is_empty());
    }

    #[test]
    fn cpu_aggregate_and_line() {
        let it = |v: f64| {
            vec![CpuIteration {
                host: "host1".into(),
                stats: vec![CpuStat {
                    cpu: "cpu0".into(),
                    utilization: PerfResult::interval(v * 10.0, 10.0, "time units", 0.0),
                }],
            }]
        };
        let agg = aggregate_cpu(&[it(12.0), it(13.0)]).unwrap();
        assert_eq!(agg.len(), 1);
        assert_eq!(agg[0].average(), 12.5);
        assert_eq!(
            agg[0].report_line(),
            "host host1 cpu 'cpu0' utilization: 12.50 +-0.71 time units per second"
        );
        let mut other = it(1.0);
        other[0].stats[0].cpu = "cpu1".into();
        assert!(matches!(
            aggregate_cpu(&[it(1.0), other]),
            Err(FlowError::CpuMismatch { iteration: 1, .. })
        ));
        let d = agg[0].details_json();
        assert_eq!(d["iterations"].as_array().map(|a| a.len()), Some(2));
    }

    #[test]
    fn from_iperf_and_placeholders() {
        let run =
            crate::measure::iperf::parse_iperf(include_str!("fixtures/iperf_tcp_1stream.json"))
                .unwrap();
        let ok = FlowIteration::from_iperf(Some(&run), Some(&run), 5.0);
        assert!(ok.success);
        assert_eq!(ok.generator_results.value(), 3_532_193_792.0 * 8.0);
        assert!((ok.receiver_cpu_stats.average() - 45.123).abs() < 1e-9);
        let failed = FlowIteration::from_iperf(Some(&run), None, 5.0);
        assert!(!failed.success);
        assert_eq!(failed.receiver_results, PerfResult::failed("bits", 5.0));
        assert_eq!(
            failed.receiver_cpu_stats,
            PerfResult::interval(0.0, 1.0, "cpu_percent", 5.0)
        );
    }

    #[test]
    fn simulated_iteration_is_zero() {
        let it = FlowIteration::simulated(&spec(), 100.0);
        // 2*2 + 10 = 14 one-second intervals from 100
        assert_eq!(it.generator_results.items()[0].items().len(), 14);
        assert_eq!(it.generator_results.duration(), 14.0);
        assert_eq!(it.generator_results.value(), 0.0);
        assert_eq!(it.receiver_results.end(), 114.0);
        let (ok, _) = crate::measure::evaluate::nonzero_flow_evaluator(&AggregatedFlow::new(
            spec(),
            vec![it],
        ));
        assert!(
            !ok,
            "simulation reports zeros, so the nonzero evaluator fails like upstream"
        );
    }

    #[test]
    fn cpu_summary() {
        let c = |cpu: &str, v: f64| AggregatedCpu {
            host: "host1".into(),
            cpu: cpu.into(),
            iterations: vec![PerfResult::interval(v, 1.0, "time units", 0.0)],
        };
        assert_eq!(
            cpu_summary_json(&[c("cpu0", 3.0), c("cpu", 7.0)])["utilization"],
            7.0
        );
        assert!(cpu_summary_json(&[c("cpu0", 3.0)])["utilization"].is_null());
    }

    #[test]
    fn details_json_has_trees() {
        let f = AggregatedFlow::new(spec(), vec![iteration(0.0, 2, 100.0)]);
        let d = f.details_json();
        assert_eq!(d["flow"]["kind"], "tcp_stream");
        assert_eq!(d["iterations"][0]["generator_results"]["kind"], "parallel");
        assert_eq!(
            d["iterations"][0]["generator_results"]["items"][0]["items"][1]["timestamp"],
            1.0
        );
        assert_eq!(d["aggregate"]["generator_results"]["average"], 100.0);
    }
}
