//! The agent's request/response generator report (`RrServer`/`RrClient` job stdout) →
//! intervals, in the shape upstream's NeperFlowMeasurement builds from neper's samples
//! (reference R§2.5):
//!
//! * per consecutive pair of samples, `PerfInterval(Δtransactions, Δt, "transactions", t)`
//!   with `t` the earlier sample's time, so a result's average is transactions per second;
//! * `PerfInterval(cpu% · Δt, Δt, "cpu_percent", t)` with `cpu% = Δcpu_s / Δt · 100`, the CPU
//!   time of the generator's own threads (upstream: neper's process utime + stime);
//! * both wrapped as `Parallel[Sequential[...]]`, one sequence per job, like upstream.
//!
//! Differences from upstream, on purpose: the sample times are already Unix times (neper's
//! are CLOCK_MONOTONIC and upstream rebases them on the job's start); a tcp_crr server reports
//! its real transactions (upstream's neper server reports one zero interval lasting the test
//! length); a report with an `error`, fewer than two samples, or samples that go backwards is
//! an error here. Latency (client only) is kept beside the intervals: the whole run's
//! min/mean/max/stddev/percentiles, and each interval's mean and standard deviation.
//! The raw JSON is kept in [`RrRun::raw`] for the results directory.

use super::flow::FlowIteration;
use super::perf::{PerfInterval, PerfResult};
use serde_json::{json, Value};

/// Unit of the transaction intervals; their averages are transactions per second.
pub const TRANSACTIONS_UNIT: &str = "transactions";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RrParseError {
    #[error("rr report is not JSON: {0}")]
    NotJson(String),
    #[error("rr generator reported an error: {0}")]
    Reported(String),
    #[error("rr report field {0} is missing or has the wrong type")]
    BadField(String),
    #[error("rr report has {0} sample(s); at least 2 are needed for an interval")]
    TooFewSamples(usize),
    #[error("rr report sample {index}: {what} goes backwards")]
    Backwards { index: usize, what: &'static str },
}

/// One cumulative sample of the report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RrSample {
    pub time: f64,
    pub transactions: u64,
    pub cpu_s: f64,
    pub latency_sum_s: f64,
    pub latency_sumsq_s2: f64,
}

/// Latency of the whole run, seconds (neper's `latency_*` keys).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RrLatency {
    pub min: f64,
    pub mean: f64,
    pub max: f64,
    pub stddev: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
}

/// One interval's latency, seconds (None without transactions in it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RrLatencyInterval {
    pub timestamp: f64,
    pub duration: f64,
    pub mean: Option<f64>,
    pub stddev: Option<f64>,
}

/// A parsed generator report (client or server side).
#[derive(Debug, Clone, PartialEq)]
pub struct RrRun {
    pub raw: Value,
    /// `client` or `server`.
    pub role: String,
    /// `tcp_rr`, `tcp_crr`, `udp_rr`.
    pub workload: String,
    /// The agent's version (upstream records neper's per host).
    pub version: String,
    pub samples: Vec<RrSample>,
    pub num_transactions: u64,
    /// udp_rr client: requests given up on / answers that came too late.
    pub lost: u64,
    pub stale: u64,
    /// Client: connections made; tcp server: connections accepted.
    pub connections: Option<u64>,
    pub latency: Option<RrLatency>,
}

fn field<'a>(v: &'a Value, path: &[&str]) -> Result<&'a Value, RrParseError> {
    let mut cur = v;
    for k in path {
        cur = cur
            .get(k)
            .ok_or_else(|| RrParseError::BadField(path.join(".")))?;
    }
    Ok(cur)
}

fn f64_at(v: &Value, path: &[&str]) -> Result<f64, RrParseError> {
    field(v, path)?
        .as_f64()
        .filter(|x| x.is_finite())
        .ok_or_else(|| RrParseError::BadField(path.join(".")))
}

fn u64_at(v: &Value, path: &[&str]) -> Result<u64, RrParseError> {
    field(v, path)?
        .as_u64()
        .ok_or_else(|| RrParseError::BadField(path.join(".")))
}

fn str_at(v: &Value, path: &[&str]) -> Result<String, RrParseError> {
    field(v, path)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| RrParseError::BadField(path.join(".")))
}

/// Parse a generator report (the job's stdout).
pub fn parse_rr(stdout: &str) -> Result<RrRun, RrParseError> {
    let raw: Value =
        serde_json::from_str(stdout).map_err(|e| RrParseError::NotJson(e.to_string()))?;
    if !raw.is_object() {
        return Err(RrParseError::NotJson("top level is not an object".into()));
    }
    match raw.get("error") {
        None | Some(Value::Null) => {}
        Some(e) => {
            return Err(RrParseError::Reported(
                e.as_str().map_or_else(|| e.to_string(), str::to_string),
            ))
        }
    }
    let role = str_at(&raw, &["role"])?;
    let workload = str_at(&raw, &["workload"])?;
    let version = str_at(&raw, &["version"])?;
    let arr = field(&raw, &["samples"])?
        .as_array()
        .ok_or_else(|| RrParseError::BadField("samples".into()))?;
    let mut samples = Vec::with_capacity(arr.len());
    for (i, s) in arr.iter().enumerate() {
        let f = |k: &str| {
            f64_at(s, &[k]).map_err(|_| RrParseError::BadField(format!("samples[{i}].{k}")))
        };
        let smp = RrSample {
            time: f("time")?,
            transactions: u64_at(s, &["transactions"])
                .map_err(|_| RrParseError::BadField(format!("samples[{i}].transactions")))?,
            cpu_s: f("cpu_s")?,
            latency_sum_s: f("latency_sum_s")?,
            latency_sumsq_s2: f("latency_sumsq_s2")?,
        };
        if let Some(p) = samples.last() {
            let p: &RrSample = p;
            let back = if smp.time <= p.time {
                Some("time")
            } else if smp.transactions < p.transactions {
                Some("transactions")
            } else if smp.cpu_s < p.cpu_s {
                Some("cpu_s")
            } else if smp.latency_sum_s < p.latency_sum_s {
                Some("latency_sum_s")
            } else {
                None
            };
            if let Some(what) = back {
                return Err(RrParseError::Backwards { index: i, what });
            }
        }
        samples.push(smp);
    }
    if samples.len() < 2 {
        return Err(RrParseError::TooFewSamples(samples.len()));
    }
    let num_transactions = u64_at(&raw, &["summary", "num_transactions"])?;
    let lost = field(&raw, &["summary", "lost"])
        .ok()
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let stale = field(&raw, &["summary", "stale"])
        .ok()
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let connections = field(&raw, &["summary", "connections"])
        .ok()
        .and_then(Value::as_u64);
    let latency = match field(&raw, &["summary", "latency_mean"])? {
        Value::Null => None,
        _ => {
            let l = |k: &str| f64_at(&raw, &["summary", k]);
            Some(RrLatency {
                min: l("latency_min")?,
                mean: l("latency_mean")?,
                max: l("latency_max")?,
                stddev: l("latency_stddev")?,
                p50: l("latency_p50")?,
                p90: l("latency_p90")?,
                p99: l("latency_p99")?,
                p99_9: l("latency_p99.9")?,
            })
        }
    };
    Ok(RrRun {
        raw,
        role,
        workload,
        version,
        samples,
        num_transactions,
        lost,
        stale,
        connections,
        latency,
    })
}

impl RrRun {
    fn pairs(&self) -> impl Iterator<Item = (&RrSample, &RrSample)> {
        self.samples.iter().zip(self.samples.iter().skip(1))
    }

    /// `Parallel[Sequential[PerfInterval(Δtransactions, Δt, "transactions", t)]]`.
    pub fn transactions(&self) -> PerfResult {
        let seq = self
            .pairs()
            .map(|(a, b)| {
                PerfResult::Interval(PerfInterval::new(
                    (b.transactions - a.transactions) as f64,
                    b.time - a.time,
                    TRANSACTIONS_UNIT,
                    a.time,
                ))
            })
            .collect();
        PerfResult::Parallel(vec![PerfResult::Sequential(seq)])
    }

    /// `Parallel[Sequential[PerfInterval(cpu% · Δt, Δt, "cpu_percent", t)]]`.
    pub fn cpu(&self) -> PerfResult {
        let seq = self
            .pairs()
            .map(|(a, b)| {
                let dt = b.time - a.time;
                let pct = (b.cpu_s - a.cpu_s) / dt * 100.0;
                PerfResult::interval(pct * dt, dt, "cpu_percent", a.time)
            })
            .collect();
        PerfResult::Parallel(vec![PerfResult::Sequential(seq)])
    }

    /// Each interval's latency mean and (population) standard deviation, from the sums.
    pub fn latency_intervals(&self) -> Vec<RrLatencyInterval> {
        self.pairs()
            .map(|(a, b)| {
                let n = (b.transactions - a.transactions) as f64;
                let has = n > 0.0 && self.latency.is_some();
                let mean = has.then(|| (b.latency_sum_s - a.latency_sum_s) / n);
                let stddev = mean.map(|m| {
                    let sq = (b.latency_sumsq_s2 - a.latency_sumsq_s2) / n;
                    (sq - m * m).max(0.0).sqrt()
                });
                RrLatencyInterval {
                    timestamp: a.time,
                    duration: b.time - a.time,
                    mean,
                    stddev,
                }
            })
            .collect()
    }

    /// Transactions per second over the whole run (first to last sample).
    pub fn rate(&self) -> f64 {
        self.transactions().average()
    }

    /// The figures a results file shows beside the flow: rate, counts, latency.
    pub fn summary_json(&self) -> Value {
        json!({
            "role": self.role,
            "workload": self.workload,
            "transactions": self.num_transactions,
            "transactions_per_second": super::perf::num(self.rate()),
            "lost": self.lost,
            "stale": self.stale,
            "connections": self.connections,
            "latency_s": self.latency,
        })
    }
}

impl FlowIteration {
    /// One iteration of a request/response flow, like upstream's NeperFlowMeasurement:
    /// `None` (the job failed or its report did not parse) gives the placeholders
    /// `Parallel[Sequential[PerfInterval(0, 1, unit, now)]]` for both metrics of that side;
    /// `success` = both sides parsed.
    pub fn from_rr(client: Option<&RrRun>, server: Option<&RrRun>, now: f64) -> Self {
        let tx = |r: Option<&RrRun>| {
            r.map_or_else(
                || PerfResult::failed(TRANSACTIONS_UNIT, now),
                RrRun::transactions,
            )
        };
        let cpu = |r: Option<&RrRun>| {
            r.map_or_else(|| PerfResult::failed("cpu_percent", now), RrRun::cpu)
        };
        FlowIteration {
            generator_results: tx(client),
            generator_cpu_stats: cpu(client),
            receiver_results: tx(server),
            receiver_cpu_stats: cpu(server),
            success: client.is_some() && server.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(samples: Value, latency: bool) -> Value {
        let l = |v: f64| if latency { json!(v) } else { Value::Null };
        json!({
            "tool": "lnst-agent rr", "version": "0.1.0", "role": "client", "workload": "tcp_rr",
            "config": {},
            "samples": samples,
            "summary": {
                "num_transactions": 3000, "lost": 0, "stale": 0, "connections": 1,
                "latency_min": l(1e-5), "latency_mean": l(2e-5), "latency_max": l(9e-5),
                "latency_stddev": l(1e-6), "latency_p50": l(2e-5), "latency_p90": l(3e-5),
                "latency_p99": l(5e-5), "latency_p99.9": l(8e-5)
            },
            "flows": [],
            "error": null
        })
    }

    fn samples() -> Value {
        // 0 → 1000 in 1 s (latency 10 µs each, all equal), → 3000 in the next 2 s (20 µs and
        // 30 µs, half each); CPU 0.5 s then 0.2 s.
        json!([
            {"time": 1700000000.0, "transactions": 0, "cpu_s": 0.0,
             "latency_sum_s": 0.0, "latency_sumsq_s2": 0.0},
            {"time": 1700000001.0, "transactions": 1000, "cpu_s": 0.5,
             "latency_sum_s": 0.01, "latency_sumsq_s2": 1000.0 * 1e-10},
            {"time": 1700000003.0, "transactions": 3000, "cpu_s": 0.7,
             "latency_sum_s": 0.01 + 1000.0 * 2e-5 + 1000.0 * 3e-5,
             "latency_sumsq_s2": 1000.0 * 1e-10 + 1000.0 * 4e-10 + 1000.0 * 9e-10}
        ])
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn intervals_cpu_and_latency() {
        let run = parse_rr(&report(samples(), true).to_string()).unwrap();
        assert_eq!(
            (run.role.as_str(), run.workload.as_str()),
            ("client", "tcp_rr")
        );
        let t = run.transactions();
        assert_eq!(t.items().len(), 1);
        let seq = &t.items()[0];
        assert_eq!(seq.items().len(), 2);
        match &seq.items()[1] {
            PerfResult::Interval(i) => {
                assert_eq!(i.value, 2000.0);
                assert_eq!(i.duration, 2.0);
                assert_eq!(i.unit, "transactions");
                assert_eq!(i.timestamp, 1_700_000_001.0);
            }
            other => panic!("{other:?}"),
        }
        // time-weighted: 3000 transactions in 3 s
        assert!(close(t.average(), 1000.0));
        assert!(close(run.rate(), 1000.0));
        let c = run.cpu();
        assert_eq!(c.unit(), Some("cpu_percent"));
        // 50 % over 1 s, 10 % over 2 s → (50 + 20) / 3
        assert!(close(c.average(), 70.0 / 3.0), "{}", c.average());
        let l = run.latency_intervals();
        assert!(close(l[0].mean.unwrap(), 1e-5));
        assert!(l[0].stddev.unwrap() < 1e-9);
        assert!(close(l[1].mean.unwrap(), 2.5e-5));
        assert!((l[1].stddev.unwrap() - 5e-6).abs() < 1e-9, "{:?}", l[1]);
        assert_eq!(run.latency.map(|l| l.p99_9), Some(8e-5));
        let s = run.summary_json();
        assert_eq!(s["transactions_per_second"], json!(1000.0));
        assert_eq!(s["latency_s"]["p50"], json!(2e-5));
    }

    #[test]
    fn flow_iteration_and_placeholders() {
        let c = parse_rr(&report(samples(), true).to_string()).unwrap();
        let mut srv = report(samples(), false);
        srv["role"] = "server".into();
        let s = parse_rr(&srv.to_string()).unwrap();
        assert_eq!(s.latency, None);
        assert!(s.latency_intervals().iter().all(|l| l.mean.is_none()));
        let it = FlowIteration::from_rr(Some(&c), Some(&s), 5.0);
        assert!(it.success);
        assert!(close(it.receiver_results.average(), 1000.0));
        let failed = FlowIteration::from_rr(Some(&c), None, 5.0);
        assert!(!failed.success);
        assert_eq!(
            failed.receiver_results,
            PerfResult::failed("transactions", 5.0)
        );
        assert_eq!(
            failed.receiver_cpu_stats,
            PerfResult::failed("cpu_percent", 5.0)
        );
        // the flow layer's report line reads "transactions per second"
        let agg =
            crate::measure::AggregatedFlow::new(crate::measure::flow::tests::spec(), vec![it]);
        assert!(
            agg.report_lines()[0].ends_with(" transactions per second."),
            "{}",
            agg.report_lines()[0]
        );
    }

    #[test]
    fn errors() {
        assert!(matches!(parse_rr("nope"), Err(RrParseError::NotJson(_))));
        assert!(matches!(parse_rr("[]"), Err(RrParseError::NotJson(_))));
        let mut r = report(samples(), true);
        r["error"] = "flow 0: connecting to 198.18.0.2:12000: Connection refused".into();
        assert_eq!(
            parse_rr(&r.to_string()).unwrap_err(),
            RrParseError::Reported(
                "flow 0: connecting to 198.18.0.2:12000: Connection refused".into()
            )
        );
        let mut r = report(samples(), true);
        r["samples"] = json!([r["samples"][0]]);
        assert_eq!(
            parse_rr(&r.to_string()).unwrap_err(),
            RrParseError::TooFewSamples(1)
        );
        let mut r = report(samples(), true);
        r["samples"][2]["transactions"] = json!(10);
        assert_eq!(
            parse_rr(&r.to_string()).unwrap_err(),
            RrParseError::Backwards {
                index: 2,
                what: "transactions"
            }
        );
        let mut r = report(samples(), true);
        r["samples"][1]["time"] = json!(1_700_000_000.0);
        assert!(matches!(
            parse_rr(&r.to_string()),
            Err(RrParseError::Backwards { what: "time", .. })
        ));
        let mut r = report(samples(), true);
        r["samples"][1]["cpu_s"] = json!("x");
        assert_eq!(
            parse_rr(&r.to_string()).unwrap_err(),
            RrParseError::BadField("samples[1].cpu_s".into())
        );
        let mut r = report(samples(), true);
        r["summary"]["latency_p99"] = Value::Null;
        assert!(matches!(
            parse_rr(&r.to_string()),
            Err(RrParseError::BadField(_))
        ));
        let mut r = report(samples(), true);
        r.as_object_mut().unwrap().remove("workload");
        assert_eq!(
            parse_rr(&r.to_string()).unwrap_err(),
            RrParseError::BadField("workload".into())
        );
    }

    /// The generator's own report parses, and the parsed figures are the report's.
    #[test]
    fn parses_a_real_report() {
        use crate::agent::rr::{start, RrConfig};
        use crate::protocol::{JobSpec, RrWorkload};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let srv = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 8];
            while s.read_exact(&mut b).is_ok() && s.write_all(&b[..4]).is_ok() {}
        });
        let spec = JobSpec::RrClient {
            workload: RrWorkload::TcpRr,
            server: "127.0.0.1".into(),
            port,
            bind: None,
            request_size: 8,
            response_size: 4,
            duration_ms: 400,
            flows: None,
            threads: None,
            transactions: None,
            interval_ms: Some(100),
            loss_timeout_ms: None,
            cpus: None,
        };
        let r = start(RrConfig::from_spec(&spec).unwrap().unwrap())
            .unwrap()
            .wait();
        srv.join().unwrap();
        let text = serde_json::to_string_pretty(&r.json).unwrap();
        let run = parse_rr(&text).unwrap();
        assert_eq!(run.num_transactions, r.transactions);
        assert_eq!(run.transactions().value(), r.transactions as f64);
        let rate = r.json["summary"]["throughput"].as_f64().unwrap();
        assert!((run.rate() - rate).abs() <= 1e-6 * rate);
        assert!(run.latency.is_some());
        assert!(run.cpu().average() > 0.0);
        assert_eq!(run.raw, r.json);
    }
}
