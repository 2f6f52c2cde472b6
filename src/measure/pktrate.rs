//! Packet-rate measurements (upstream `RecipeCommon/Perf/Measurements/XDPBenchMeasurement.py`,
//! `XDPRedirectCPUMeasurement.py`, `ForwardingMeasurement.py` and their `Results/`): parsing
//! the agent's pktgen, xdp-bench and interface-counter data into result trees, the time
//! alignment of an iteration, the aggregation over iterations, the report lines and the
//! non-zero evaluation.
//!
//! Units are "packets": an average is packets per second. The receiver's xdp-bench values are
//! its own per-interval rates taken as counts over the measured interval (≈ 1 s), as upstream.
//! Deliberate difference: upstream stamps an xdp-bench sample and an interface-counter sample
//! with the time it was *read* (the end of its interval) and uses that as the interval's start;
//! we start each interval where it starts (read time − its duration, the previous read), so
//! receiver and generator intervals line up in time.

use super::cpu::CpuStat;
use super::flow::CpuIteration;
use super::perf::{num, EmptySlice, PerfResult};
use serde_json::{json, Value};

/// A packet measurement's data could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PacketDataError {
    #[error("no data in the job's result")]
    NoData,
    #[error("malformed sample: {0}")]
    Malformed(String),
    #[error("pktgen device {dev}: no 'pkts-sofar' in sample {index}")]
    NoSofar { dev: String, index: usize },
    #[error("no xdp-bench summary line in its output")]
    NoXdpSummary,
    #[error("no xdp-bench redirect-cpu block with both 'receive total' and per-CPU kthread lines")]
    NoRedirectBlock,
    #[error("interface {0} is missing from the counter samples")]
    NoInterface(String),
}

fn sample_time(v: &Value) -> Result<f64, PacketDataError> {
    v.get("t")
        .and_then(Value::as_f64)
        .ok_or_else(|| PacketDataError::Malformed(format!("no time in {v}")))
}

/// `pkts-sofar` and `errors` of a pktgen device file (its `Current:` section).
pub fn pktgen_counters(text: &str) -> Option<(u64, u64)> {
    let current = text.split("Current:").nth(1).unwrap_or(text);
    let field = |key: &str| -> Option<u64> {
        let at = current.find(key)? + key.len();
        current[at..].split_whitespace().next()?.parse().ok()
    };
    Some((field("pkts-sofar:")?, field("errors:").unwrap_or(0)))
}

/// The Pktgen job's data → `Parallel[Sequential per device[PerfInterval(Δpkts-sofar, Δt,
/// "packets", previous read)]]` (upstream `PktGenResultsSampler.device_samples`: the first read
/// is the baseline).
pub fn parse_pktgen(data: Option<&Value>) -> Result<PerfResult, PacketDataError> {
    let devs = data
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
        .ok_or(PacketDataError::NoData)?;
    let mut out = Vec::new();
    for (name, samples) in devs {
        let samples = samples
            .as_array()
            .ok_or_else(|| PacketDataError::Malformed(format!("{name}: not a list")))?;
        let mut prev: Option<(f64, u64)> = None;
        let mut seq = Vec::new();
        for (i, s) in samples.iter().enumerate() {
            let t = sample_time(s)?;
            let text = s.get("text").and_then(Value::as_str).unwrap_or_default();
            let (sofar, _) = pktgen_counters(text).ok_or_else(|| PacketDataError::NoSofar {
                dev: name.clone(),
                index: i,
            })?;
            if let Some((pt, ps)) = prev {
                seq.push(PerfResult::interval(
                    sofar.saturating_sub(ps) as f64,
                    t - pt,
                    "packets",
                    pt,
                ));
            }
            prev = Some((t, sofar));
        }
        out.push(PerfResult::Sequential(seq));
    }
    Ok(PerfResult::Parallel(out))
}

/// The timed stdout lines of an xdp-bench job: `(t, line)`.
fn timed_lines(data: Option<&Value>) -> Result<Vec<(f64, String)>, PacketDataError> {
    let lines = data
        .and_then(Value::as_array)
        .ok_or(PacketDataError::NoData)?;
    lines
        .iter()
        .map(|l| {
            Ok((
                sample_time(l)?,
                l.get("line")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ))
        })
        .collect()
}

fn grouped_int(s: &str) -> Option<u64> {
    s.replace(',', "").parse().ok()
}

/// `Summary  1,234 rx/s  0 err/s` (or `err,drop/s`) → rx.
pub fn xdp_summary_rx(line: &str) -> Option<u64> {
    let rest = line.trim_start().strip_prefix("Summary")?;
    let mut w = rest.split_whitespace();
    let rx = grouped_int(w.next()?)?;
    (w.next()? == "rx/s").then_some(())?;
    grouped_int(w.next()?)?;
    w.next()?.starts_with("err").then_some(rx)
}

/// An xdp-bench (drop/tx/pass) job's data → the `Sequential` of `PerfInterval(rx, Δt,
/// "packets", t − Δt)` over its summary lines; Δt from the previous summary line, the first
/// from the job's start (upstream `XDPBenchOutputParser`).
pub fn parse_xdp_bench(
    data: Option<&Value>,
    started_at: f64,
) -> Result<PerfResult, PacketDataError> {
    let mut prev = started_at;
    let mut seq = Vec::new();
    for (t, line) in timed_lines(data)? {
        if let Some(rx) = xdp_summary_rx(&line) {
            seq.push(PerfResult::interval(rx as f64, t - prev, "packets", prev));
            prev = t;
        }
    }
    if seq.is_empty() {
        return Err(PacketDataError::NoXdpSummary);
    }
    Ok(PerfResult::Sequential(seq))
}

/// One block of `xdp-bench redirect-cpu -e`: the IRQ CPU's intake and the per-CPU kthread
/// rates.
#[derive(Debug, Clone, PartialEq)]
pub struct RedirectBlock {
    pub t: f64,
    pub received: u64,
    pub per_cpu: Vec<(u32, u64)>,
}

fn after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(key)? + key.len();
    Some(&line[at..])
}

/// Split the output into blocks (a line starting `<if>->` opens one) and read each
/// (upstream `XDPBenchRedirectCpuOutputParser`); blocks missing either part are skipped.
pub fn redirect_cpu_blocks(data: Option<&Value>) -> Result<Vec<RedirectBlock>, PacketDataError> {
    let mut blocks: Vec<(f64, Vec<String>)> = Vec::new();
    for (t, line) in timed_lines(data)? {
        let opens = line
            .split_whitespace()
            .next()
            .is_some_and(|w| w.contains("->"))
            && !line.starts_with(char::is_whitespace);
        if opens {
            blocks.push((t, vec![line]));
        } else if let Some(b) = blocks.last_mut() {
            b.1.push(line);
        }
    }
    let mut out = Vec::new();
    for (t, lines) in blocks {
        let mut received = None;
        let mut per_cpu = Vec::new();
        let mut in_kthread = false;
        for l in &lines {
            if received.is_none() {
                if let Some(rest) = after(l, "receive total") {
                    let mut w = rest.split_whitespace();
                    if let (Some(n), Some("pkt/s")) = (w.next().and_then(grouped_int), w.next()) {
                        received = Some(n);
                    }
                }
            }
            if l.contains("kthread total") && l.contains("pkt/s") {
                in_kthread = true;
                continue;
            }
            if in_kthread {
                let cpu = l
                    .trim_start()
                    .strip_prefix("cpu:")
                    .filter(|_| l.starts_with(char::is_whitespace));
                let parsed = cpu.and_then(|rest| {
                    let mut w = rest.split_whitespace();
                    let c: u32 = w.next()?.parse().ok()?;
                    let n = grouped_int(w.next()?)?;
                    (w.next()? == "pkt/s").then_some((c, n))
                });
                match parsed {
                    Some(p) => per_cpu.push(p),
                    None => in_kthread = false,
                }
            }
        }
        if let (Some(received), false) = (received, per_cpu.is_empty()) {
            out.push(RedirectBlock {
                t,
                received,
                per_cpu,
            });
        } else {
            tracing::warn!("xdp-bench redirect-cpu: block without totals skipped: {lines:?}");
        }
    }
    if out.is_empty() {
        return Err(PacketDataError::NoRedirectBlock);
    }
    Ok(out)
}

/// The redirect-cpu blocks → (`receiver_results`: `Parallel` of one `Sequential` per CPU of
/// `cpus`, in that order; `forwarded_results`: `Parallel[Sequential]` of the IRQ CPU's
/// "receive total"). Δt from the previous block (the first from the job's start); CPUs outside
/// `cpus` are skipped.
pub fn parse_redirect_cpu(
    data: Option<&Value>,
    started_at: f64,
    cpus: &[u32],
) -> Result<(PerfResult, PerfResult), PacketDataError> {
    let blocks = redirect_cpu_blocks(data)?;
    let mut per_cpu: Vec<Vec<PerfResult>> = vec![Vec::new(); cpus.len()];
    let mut irq = Vec::new();
    let mut prev = started_at;
    for b in blocks {
        let d = b.t - prev;
        irq.push(PerfResult::interval(b.received as f64, d, "packets", prev));
        for (cpu, n) in b.per_cpu {
            match cpus.iter().position(|c| *c == cpu) {
                Some(i) => per_cpu[i].push(PerfResult::interval(n as f64, d, "packets", prev)),
                None => tracing::warn!("unexpected CPU {cpu} in xdp-bench output, skipping"),
            }
        }
        prev = b.t;
    }
    Ok((
        PerfResult::Parallel(per_cpu.into_iter().map(PerfResult::Sequential).collect()),
        PerfResult::Parallel(vec![PerfResult::Sequential(irq)]),
    ))
}

/// The IfStats data → `Sequential` of `PerfInterval(Δcounter, Δt, "packets", previous
/// sample)` of one interface's `key` (`rx_packets`, `tx_packets`).
pub fn parse_ifstats(
    data: Option<&Value>,
    iface: &str,
    key: &str,
) -> Result<PerfResult, PacketDataError> {
    let samples = data
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or(PacketDataError::NoData)?;
    let mut prev: Option<(f64, u64)> = None;
    let mut seq = Vec::new();
    for s in samples {
        let t = sample_time(s)?;
        let v = s
            .get("ifaces")
            .and_then(|i| i.get(iface))
            .and_then(|i| i.get(key))
            .and_then(Value::as_u64)
            .ok_or_else(|| PacketDataError::NoInterface(iface.to_string()))?;
        if let Some((pt, pv)) = prev {
            seq.push(PerfResult::interval(
                v.saturating_sub(pv) as f64,
                t - pt,
                "packets",
                pt,
            ));
        }
        prev = Some((t, v));
    }
    Ok(PerfResult::Sequential(seq))
}

/// Which of upstream's three packet measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// XDPBenchMeasurement: one result per flow.
    XdpBench,
    /// XDPRedirectCPUMeasurement: one result for all flows.
    XdpRedirectCpu,
    /// ForwardingMeasurement: one result for all flows.
    Forwarding,
}

impl PacketKind {
    /// The measurement result's name.
    pub fn name(self) -> &'static str {
        match self {
            PacketKind::XdpBench => "xdp-bench",
            PacketKind::XdpRedirectCpu => "xdp-redirect-cpu",
            PacketKind::Forwarding => "forwarding",
        }
    }

    /// The metrics in upstream's order: (attribute, label for "has invalid duration!").
    pub fn metrics(self) -> &'static [(&'static str, &'static str)] {
        match self {
            PacketKind::XdpBench => &[
                ("generator_results", "Generator"),
                ("receiver_results", "Receiver"),
            ],
            PacketKind::XdpRedirectCpu => &[
                ("generator_results", "Generator"),
                ("receiver_results", "Receiver"),
                ("forwarded_results", "Forwarded"),
            ],
            PacketKind::Forwarding => &[
                ("generator_results", "Generator"),
                ("receiver_results", "Receiver"),
                ("forwarder_rx_results", "Forwarder RX"),
                ("forwarder_tx_results", "Forwarder TX"),
            ],
        }
    }
}

/// One packet result of one iteration: its metrics (in [`PacketKind::metrics`] order) and
/// whether its jobs succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct PacketIteration {
    pub metrics: Vec<PerfResult>,
    pub success: bool,
}

impl PacketIteration {
    /// Earliest start over the metrics (upstream `start_timestamp`: min of the metrics').
    pub fn start(&self) -> f64 {
        self.metrics
            .iter()
            .map(PerfResult::start)
            .fold(f64::NAN, f64::min)
    }
    /// Latest end over the metrics.
    pub fn end(&self) -> f64 {
        self.metrics
            .iter()
            .map(PerfResult::end)
            .fold(f64::NAN, f64::max)
    }
    /// Every metric sliced to the window; a metric with nothing in it (an empty list, the
    /// metric of a failed job) is an [`EmptySlice`], as upstream.
    pub fn time_slice(&self, start: f64, end: f64) -> Result<PacketIteration, EmptySlice> {
        let metrics = self
            .metrics
            .iter()
            .map(|m| m.time_slice(start, end))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PacketIteration {
            metrics,
            success: self.success,
        })
    }
}

/// Upstream `RecipeResults._get_measurement_timestamps` for an iteration without iperf/neper
/// flows: the window is [latest start, earliest end] over every measurement result of the
/// iteration (each packet result, spanning its own metrics, and each CPU utilization), and
/// every one is sliced to it — **no warm-up trim** (the packet results are not
/// `FlowMeasurementResults`). All or nothing: on [`EmptySlice`] nothing is changed.
pub fn align_packet_iteration(
    results: &mut [PacketIteration],
    cpus: &mut [CpuIteration],
) -> Result<(f64, f64), EmptySlice> {
    let mut start = f64::NAN;
    let mut end = f64::NAN;
    let spans = results
        .iter()
        .map(|r| (r.start(), r.end()))
        .chain(cpus.iter().flat_map(|c| {
            c.stats
                .iter()
                .map(|s| (s.utilization.start(), s.utilization.end()))
        }));
    for (s, e) in spans {
        start = start.max(s);
        end = end.min(e);
    }
    if start.is_nan() || end.is_nan() || end <= start {
        return Err(EmptySlice { start, end });
    }
    let new_results = results
        .iter()
        .map(|r| r.time_slice(start, end))
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
    results.clone_from_slice(&new_results);
    cpus.clone_from_slice(&new_cpus);
    Ok((start, end))
}

/// Python's `format(x, ",f")`: thousands separated by commas, six decimals.
pub fn py_grouped(x: f64, decimals: usize, sep: char) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let s = format!("{:.*}", decimals, x.abs());
    let (int, frac) = s
        .split_once('.')
        .map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let mut g = String::new();
    for (k, c) in int.chars().enumerate() {
        if k > 0 && (int.len() - k) % 3 == 0 {
            g.push(sep);
        }
        g.push(c);
    }
    let sign = if x < 0.0 { "-" } else { "" };
    match frac {
        Some(f) => format!("{sign}{g}.{f}"),
        None => format!("{sign}{g}"),
    }
}

/// One packet measurement over all iterations (upstream `Aggregated*MeasurementResults`: per
/// metric a `Sequential` of the iterations, so average = Σ packets / Σ seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct AggregatedPackets {
    pub kind: PacketKind,
    /// The flow lines (upstream `str(flow)`; for Forwarding with several flows, the per-flow
    /// part is added by the report).
    pub flow_desc: String,
    pub iterations: Vec<PacketIteration>,
}

impl AggregatedPackets {
    /// Metric `i` over the iterations.
    pub fn metric(&self, i: usize) -> PerfResult {
        PerfResult::Sequential(
            self.iterations
                .iter()
                .filter_map(|it| it.metrics.get(i).cloned())
                .collect(),
        )
    }

    /// A metric by attribute name.
    pub fn metric_named(&self, name: &str) -> Option<PerfResult> {
        self.kind
            .metrics()
            .iter()
            .position(|(n, _)| *n == name)
            .map(|i| self.metric(i))
    }

    /// Every iteration succeeded (false without iterations, as upstream's aggregate).
    pub fn success(&self) -> bool {
        !self.iterations.is_empty() && self.iterations.iter().all(|i| i.success)
    }

    /// The metrics whose aggregate duration is ≤ 0 (upstream `_invalid_flow_duration`).
    pub fn invalid_durations(&self) -> Vec<&'static str> {
        self.kind
            .metrics()
            .iter()
            .enumerate()
            .filter(|(i, _)| self.metric(*i).duration() <= 0.0)
            .map(|(_, (_, label))| *label)
            .collect()
    }

    /// The measurement result: PASS iff the jobs succeeded (xdp-bench), and for
    /// xdp-redirect-cpu and forwarding also no metric with an invalid duration.
    pub fn passed(&self) -> bool {
        match self.kind {
            PacketKind::XdpBench => self.success(),
            _ => self.success() && self.invalid_durations().is_empty(),
        }
    }

    fn line(&self, label: &str, attr: &str, r: &PerfResult) -> String {
        let unit = r.unit().unwrap_or("packets");
        match self.kind {
            PacketKind::Forwarding => format!(
                "{label} ({attr}): {} +-{:.2}({:.2}%) {unit} per second.",
                py_grouped(r.average(), 2, ' '),
                r.std_deviation(),
                r.deviation_percentage()
            ),
            _ => format!(
                "{label} ({attr}): {} +-{}({:.2}%) {unit} per second.",
                py_grouped(r.average(), 6, ','),
                py_grouped(r.std_deviation(), 6, ','),
                r.deviation_percentage()
            ),
        }
    }

    /// Upstream's description: the flow, one line per metric, then `X has invalid duration!`.
    pub fn report_lines(&self) -> Vec<String> {
        let mut out = vec![self.flow_desc.clone()];
        let m = |n: &str| {
            self.metric_named(n)
                .unwrap_or(PerfResult::Sequential(vec![]))
        };
        match self.kind {
            PacketKind::XdpBench => {
                out.push(self.line(
                    "Generator generated",
                    "generator_results",
                    &m("generator_results"),
                ));
                out.push(self.line(
                    "Receiver processed",
                    "receiver_results",
                    &m("receiver_results"),
                ));
            }
            PacketKind::XdpRedirectCpu => {
                out.push(self.line(
                    "Generator generated",
                    "generator_results",
                    &m("generator_results"),
                ));
                let fwd = m("forwarded_results");
                if fwd.items().iter().any(|i| !i.is_empty_list()) {
                    out.push(self.line("IRQ CPU forwarded", "forwarded_results", &fwd));
                }
                let rec = m("receiver_results");
                if rec.items().iter().any(|i| !i.is_empty_list()) {
                    out.push(self.line("Per-CPU received", "receiver_results", &rec));
                }
            }
            PacketKind::Forwarding => {
                out.push(self.line(
                    "Generator generated",
                    "generator_results",
                    &m("generator_results"),
                ));
                out.push(self.line(
                    "Receiver processed",
                    "receiver_results",
                    &m("receiver_results"),
                ));
                out.push(self.line(
                    "Forwarder RX",
                    "forwarder_rx_results",
                    &m("forwarder_rx_results"),
                ));
                out.push(self.line(
                    "Forwarder TX",
                    "forwarder_tx_results",
                    &m("forwarder_tx_results"),
                ));
            }
        }
        for label in self.invalid_durations() {
            out.push(format!("{label} has invalid duration!"));
        }
        out
    }

    /// The result's data: each metric's aggregate average (packets per second).
    pub fn summary_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (i, (name, _)) in self.kind.metrics().iter().enumerate() {
            m.insert(name.to_string(), num(self.metric(i).average()));
        }
        Value::Object(m)
    }

    /// Every metric's statistics and full tree.
    pub fn details_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (i, (name, _)) in self.kind.metrics().iter().enumerate() {
            let r = self.metric(i);
            m.insert(
                name.to_string(),
                json!({
                    "average": num(r.average()),
                    "std_deviation": num(r.std_deviation()),
                    "deviation_percentage": num(r.deviation_percentage()),
                    "unit": r.unit().unwrap_or("packets"),
                    "tree": r.to_json(),
                }),
            );
        }
        json!({"measurement": self.kind.name(), "metrics": m, "success": self.success()})
    }

    /// NonzeroFlowEvaluator on generator_results and receiver_results: per metric, an
    /// infinite average FAILs ("invalid value"), a positive one PASSes unless an iteration
    /// measured zero, anything else FAILs ("zero throughput"); an empty metric is skipped.
    pub fn nonzero_evaluation(&self) -> (bool, String) {
        let mut ok = true;
        let mut lines = vec![
            "Nonzero evaluation of flow:".to_string(),
            self.flow_desc.clone(),
        ];
        for name in ["generator_results", "receiver_results"] {
            let Some(metric) = self.metric_named(name) else {
                continue;
            };
            if metric.is_empty_list() {
                continue;
            }
            let avg = metric.average();
            if avg == f64::INFINITY || avg.is_nan() {
                ok = false;
                lines.push(format!("FAIL: {name} reported invalid value: {avg}"));
            } else if avg > 0.0 {
                if metric.items().iter().any(|it| it.value() == 0.0) {
                    ok = false;
                    lines.push(format!("FAIL: {name} reported zero throughput"));
                } else {
                    lines.push(format!("PASS: {name} reported non-zero throughput"));
                }
            } else {
                ok = false;
                lines.push(format!("FAIL: {name} reported zero throughput"));
            }
        }
        (ok, lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pktgen_text(sofar: u64) -> String {
        crate::scripted::pktgen_file("eth0@0", sofar)
    }

    #[test]
    fn pktgen_samples_become_intervals_from_the_baseline() {
        let data = json!({
            "eth0@0": [
                {"t": 100.0, "text": pktgen_text(0)},
                {"t": 101.0, "text": pktgen_text(1000)},
                {"t": 102.5, "text": pktgen_text(4000)},
            ],
            "eth0@1": [
                {"t": 100.1, "text": pktgen_text(0)},
                {"t": 101.1, "text": pktgen_text(500)},
            ],
        });
        let r = parse_pktgen(Some(&data)).unwrap_or_else(|e| panic!("{e}"));
        let devs = r.items();
        assert_eq!(devs.len(), 2);
        assert_eq!(
            devs[0],
            PerfResult::Sequential(vec![
                PerfResult::interval(1000.0, 1.0, "packets", 100.0),
                PerfResult::interval(3000.0, 1.5, "packets", 101.0),
            ])
        );
        assert_eq!(r.value(), 4500.0);
        assert_eq!(
            pktgen_counters("Current:\n  pkts-sofar: 77  errors: 2\n"),
            Some((77, 2))
        );
        assert_eq!(
            parse_pktgen(Some(&json!({"eth0@0": [{"t": 1.0, "text": "garbage"}]}))),
            Err(PacketDataError::NoSofar {
                dev: "eth0@0".into(),
                index: 0
            })
        );
        assert_eq!(parse_pktgen(None), Err(PacketDataError::NoData));
    }

    #[test]
    fn xdp_bench_summary_lines() {
        assert_eq!(
            xdp_summary_rx("Summary                 1,234,567 rx/s                  0 err/s"),
            Some(1_234_567)
        );
        assert_eq!(
            xdp_summary_rx("Summary      42 rx/s      3 err,drop/s"),
            Some(42)
        );
        assert_eq!(xdp_summary_rx("  Packets received    : 1,234"), None);
        assert_eq!(xdp_summary_rx("Summary      x rx/s      3 err/s"), None);
        let data = json!([
            {"t": 11.0, "line": "Summary  0 rx/s  0 err/s"},
            {"t": 11.5, "line": "libxdp: some warning"},
            {"t": 12.0, "line": "Summary  1,000 rx/s  0 err/s"},
            {"t": 13.0, "line": "  Packets received    : 1,000"},
        ]);
        let r = parse_xdp_bench(Some(&data), 10.0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r,
            PerfResult::Sequential(vec![
                PerfResult::interval(0.0, 1.0, "packets", 10.0),
                PerfResult::interval(1000.0, 1.0, "packets", 11.0),
            ])
        );
        assert_eq!(
            parse_xdp_bench(Some(&json!([{"t": 1.0, "line": "Failed to attach"}])), 0.0),
            Err(PacketDataError::NoXdpSummary)
        );
    }

    #[test]
    fn redirect_cpu_blocks_and_per_cpu_results() {
        let l = |t: f64, s: &str| json!({"t": t, "line": s});
        let data = json!([
            l(
                1.0,
                "eth0->?               2,000 rx/s          0 err,drop/s"
            ),
            l(
                1.0,
                "  receive total       2,000 pkt/s          0 drop/s          0 error/s"
            ),
            l(
                1.0,
                "    cpu:0             2,000 pkt/s          0 drop/s          0 error/s"
            ),
            l(
                1.0,
                "  enqueue to cpu 1    1,000 pkt/s          0 drop/s       1.00 bulk-avg"
            ),
            l(
                1.0,
                "  kthread total       2,000 pkt/s          0 drop/s          0 sched"
            ),
            l(
                1.0,
                "    cpu:1             1,200 pkt/s          0 drop/s          0 sched"
            ),
            l(
                1.0,
                "    cpu:3               800 pkt/s          0 drop/s          0 sched"
            ),
            l(
                1.0,
                "    cpu:7                 1 pkt/s          0 drop/s          0 sched"
            ),
            l(
                1.0,
                "    xdp_stats               0 pass/s     2,000 drop/s          0 redir/s"
            ),
            l(1.0, ""),
            l(
                2.0,
                "eth0->?               3,000 rx/s          0 err,drop/s"
            ),
            l(
                2.0,
                "  receive total       3,000 pkt/s          0 drop/s          0 error/s"
            ),
            l(
                2.0,
                "  kthread total       3,000 pkt/s          0 drop/s          0 sched"
            ),
            l(
                2.0,
                "    cpu:1             1,500 pkt/s          0 drop/s          0 sched"
            ),
            l(
                2.0,
                "    cpu:3             1,500 pkt/s          0 drop/s          0 sched"
            ),
            l(
                3.0,
                "eth0->?                   0 rx/s          0 err,drop/s"
            ),
            l(
                3.0,
                "  receive                 0 pkt/s          0 drop/s          0 error/s"
            ),
        ]);
        let blocks = redirect_cpu_blocks(Some(&data)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(blocks.len(), 2, "the third block has no totals");
        assert_eq!(blocks[0].received, 2000);
        assert_eq!(blocks[0].per_cpu, vec![(1, 1200), (3, 800), (7, 1)]);
        let (rec, fwd) =
            parse_redirect_cpu(Some(&data), 0.5, &[1, 3]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rec.items()[0],
            PerfResult::Sequential(vec![
                PerfResult::interval(1200.0, 0.5, "packets", 0.5),
                PerfResult::interval(1500.0, 1.0, "packets", 1.0),
            ])
        );
        assert_eq!(rec.items()[1].value(), 2300.0);
        assert_eq!(fwd.value(), 5000.0);
        assert_eq!(fwd.items()[0].duration(), 1.5);
    }

    #[test]
    fn interface_counters_become_deltas() {
        let s = |t: f64, rx: u64| json!({"t": t, "ifaces": {"eth0": {"rx_packets": rx, "tx_packets": 0}}});
        let data = json!([s(5.0, 100), s(6.0, 1100), s(7.0, 3100)]);
        let r = parse_ifstats(Some(&data), "eth0", "rx_packets").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r,
            PerfResult::Sequential(vec![
                PerfResult::interval(1000.0, 1.0, "packets", 5.0),
                PerfResult::interval(2000.0, 1.0, "packets", 6.0),
            ])
        );
        assert_eq!(
            parse_ifstats(Some(&data), "eth1", "rx_packets"),
            Err(PacketDataError::NoInterface("eth1".into()))
        );
    }

    #[test]
    fn python_number_formats() {
        assert_eq!(py_grouped(1_234_567.5, 6, ','), "1,234,567.500000");
        assert_eq!(py_grouped(999.0, 6, ','), "999.000000");
        assert_eq!(py_grouped(-1000.0, 2, ' '), "-1 000.00");
        assert_eq!(py_grouped(f64::INFINITY, 6, ','), "inf");
    }
}
