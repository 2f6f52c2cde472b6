//! iperf3 `-J` output → intervals (upstream `RecipeCommon/Perf/Measurements/IperfFlowMeasurement.py`).
//!
//! We read only the fields the figures come from, through `serde_json::Value` lookups, so
//! the TCP, UDP and SCTP shapes (whose `end` sums differ) all parse; the raw JSON is kept
//! in [`IperfRun::raw`] for the results directory.

use super::perf::{PerfInterval, PerfResult};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IperfError {
    #[error("iperf3 output is not JSON: {0}")]
    NotJson(String),
    #[error("iperf3 reported an error: {0}")]
    Reported(String),
    /// Upstream's completeness check (`start`, `end`, non-empty `intervals`, `end.streams`).
    #[error("iperf3 JSON is incomplete: {0}")]
    Incomplete(String),
    /// A field a figure is computed from is missing or has the wrong type.
    #[error("iperf3 JSON field {0} is missing or not a number")]
    BadField(String),
    #[error("iperf3 interval {interval} has {found} streams, but end.streams lists {expected}")]
    StreamCount {
        interval: usize,
        found: usize,
        expected: usize,
    },
}

/// One stream's sample inside one iperf interval.
#[derive(Debug, Clone, PartialEq)]
pub struct IperfStreamSample {
    pub bytes: f64,
    pub seconds: f64,
}

/// One reporting interval (`intervals[k]`): `sum.start` plus one sample per stream.
#[derive(Debug, Clone, PartialEq)]
pub struct IperfInterval {
    pub start: f64,
    pub streams: Vec<IperfStreamSample>,
}

/// A parsed, complete iperf3 run (client or server side).
#[derive(Debug, Clone, PartialEq)]
pub struct IperfRun {
    /// The whole JSON document, as iperf3 printed it.
    pub raw: Value,
    /// `start.test_start.protocol` ("TCP", "UDP", "SCTP"), if present.
    pub protocol: Option<String>,
    /// `start.timestamp.timesecs` (integer epoch seconds).
    pub start_timesecs: f64,
    /// `start.test_start.duration` in seconds (the `-t` value).
    pub test_duration: f64,
    pub intervals: Vec<IperfInterval>,
    /// Number of entries of `end.streams`.
    pub stream_count: usize,
    /// `end.cpu_utilization_percent.host_total`.
    pub host_total_cpu: f64,
}

fn num_at(v: &Value, path: &[&str]) -> Result<f64, IperfError> {
    let mut cur = v;
    for key in path {
        cur = cur
            .get(key)
            .ok_or_else(|| IperfError::BadField(path.join(".")))?;
    }
    cur.as_f64()
        .ok_or_else(|| IperfError::BadField(path.join(".")))
}

/// Parse iperf3 `-J` stdout. Fails on non-JSON, on a top-level `"error"` key (its text is
/// returned), on upstream's completeness check, and on missing numeric fields that the
/// throughput/CPU figures are computed from.
pub fn parse_iperf(stdout: &str) -> Result<IperfRun, IperfError> {
    let raw: Value =
        serde_json::from_str(stdout).map_err(|e| IperfError::NotJson(e.to_string()))?;
    let obj = raw
        .as_object()
        .ok_or_else(|| IperfError::NotJson("top level is not an object".into()))?;
    if let Some(err) = obj.get("error") {
        let text = err
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| err.to_string());
        return Err(IperfError::Reported(text));
    }
    let start = obj
        .get("start")
        .ok_or_else(|| IperfError::Incomplete("no \"start\"".into()))?;
    let end = obj
        .get("end")
        .ok_or_else(|| IperfError::Incomplete("no \"end\"".into()))?;
    let intervals_json = match obj.get("intervals").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a,
        _ => return Err(IperfError::Incomplete("no \"intervals\"".into())),
    };
    let end_streams = match end.get("streams").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a,
        _ => return Err(IperfError::Incomplete("no \"end.streams\"".into())),
    };
    let stream_count = end_streams.len();

    let start_timesecs = num_at(start, &["timestamp", "timesecs"])
        .map_err(|_| IperfError::BadField("start.timestamp.timesecs".into()))?;
    let test_duration = num_at(start, &["test_start", "duration"])
        .map_err(|_| IperfError::BadField("start.test_start.duration".into()))?;
    let host_total_cpu = num_at(end, &["cpu_utilization_percent", "host_total"])
        .map_err(|_| IperfError::BadField("end.cpu_utilization_percent.host_total".into()))?;
    let protocol = start
        .get("test_start")
        .and_then(|t| t.get("protocol"))
        .and_then(Value::as_str)
        .map(str::to_string);

    let mut intervals = Vec::with_capacity(intervals_json.len());
    for (k, iv) in intervals_json.iter().enumerate() {
        let sum_start = num_at(iv, &["sum", "start"])
            .map_err(|_| IperfError::BadField(format!("intervals[{k}].sum.start")))?;
        let streams_json = iv
            .get("streams")
            .and_then(Value::as_array)
            .ok_or_else(|| IperfError::BadField(format!("intervals[{k}].streams")))?;
        if streams_json.len() > stream_count {
            return Err(IperfError::StreamCount {
                interval: k,
                found: streams_json.len(),
                expected: stream_count,
            });
        }
        let mut streams = Vec::with_capacity(streams_json.len());
        for (i, s) in streams_json.iter().enumerate() {
            let bytes = num_at(s, &["bytes"])
                .map_err(|_| IperfError::BadField(format!("intervals[{k}].streams[{i}].bytes")))?;
            let seconds = num_at(s, &["seconds"]).map_err(|_| {
                IperfError::BadField(format!("intervals[{k}].streams[{i}].seconds"))
            })?;
            streams.push(IperfStreamSample { bytes, seconds });
        }
        intervals.push(IperfInterval {
            start: sum_start,
            streams,
        });
    }
    Ok(IperfRun {
        raw,
        protocol,
        start_timesecs,
        test_duration,
        intervals,
        stream_count,
        host_total_cpu,
    })
}

impl IperfRun {
    /// `Parallel[ Sequential(stream i)[ PerfInterval(bytes*8, seconds, "bits", t0 + sum.start) ] ]`,
    /// one Sequential per `end.streams` entry.
    pub fn throughput(&self) -> PerfResult {
        let mut per_stream: Vec<Vec<PerfResult>> = vec![Vec::new(); self.stream_count];
        for iv in &self.intervals {
            let ts = self.start_timesecs + iv.start;
            for (slot, s) in per_stream.iter_mut().zip(&iv.streams) {
                slot.push(PerfResult::Interval(PerfInterval::new(
                    s.bytes * 8.0,
                    s.seconds,
                    "bits",
                    ts,
                )));
            }
        }
        PerfResult::Parallel(per_stream.into_iter().map(PerfResult::Sequential).collect())
    }

    /// `PerfInterval(host_total × D, D, "cpu_percent", t0)` with `D = start.test_start.duration`,
    /// so the average is iperf's `host_total` percentage.
    pub fn cpu(&self) -> PerfResult {
        PerfResult::interval(
            self.host_total_cpu * self.test_duration,
            self.test_duration,
            "cpu_percent",
            self.start_timesecs,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP1: &str = include_str!("fixtures/iperf_tcp_1stream.json");
    const TCP2: &str = include_str!("fixtures/iperf_tcp_2streams.json");
    const UDP: &str = include_str!("fixtures/iperf_udp.json");
    const ERR: &str = include_str!("fixtures/iperf_error.json");

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    fn leaf(r: &PerfResult) -> &PerfInterval {
        match r {
            PerfResult::Interval(i) => i,
            other => panic!("expected an interval, got {other:?}"),
        }
    }

    #[test]
    fn tcp_one_stream() {
        let run = parse_iperf(TCP1).unwrap();
        assert_eq!(run.protocol.as_deref(), Some("TCP"));
        let t = run.throughput();
        assert_eq!(t.items().len(), 1);
        let stream = &t.items()[0];
        assert_eq!(stream.items().len(), 3);
        let first = leaf(&stream.items()[0]);
        assert_eq!(first.value, 1_172_897_792.0 * 8.0);
        assert_eq!(first.duration, 1.000045);
        assert_eq!(first.unit, "bits");
        assert_eq!(first.timestamp, 1_700_000_000.0);
        let second = leaf(&stream.items()[1]);
        assert_eq!(second.timestamp, 1_700_000_000.0 + 1.000045);
        // Σ bytes = 3532193792 → bits; Σ seconds = 3.000037
        assert_eq!(t.value(), 3_532_193_792.0 * 8.0);
        assert!(close(stream.duration(), 3.000037));
        // Parallel duration = last end − first start = 2.000025 + 1.000012 (epoch-sized
        // timestamps leave ~1e-7 s of float resolution)
        assert!((t.duration() - 3.000037).abs() < 1e-6);
        let cpu = run.cpu();
        assert!(close(cpu.value(), 45.123 * 3.0));
        assert_eq!(cpu.duration(), 3.0);
        assert!(close(cpu.average(), 45.123));
        assert_eq!(cpu.unit(), Some("cpu_percent"));
        assert_eq!(cpu.start(), 1_700_000_000.0);
    }

    #[test]
    fn tcp_two_streams() {
        let run = parse_iperf(TCP2).unwrap();
        let t = run.throughput();
        assert_eq!(t.items().len(), 2);
        // stream 0: 600e6 + 620e6 bytes; stream 1: 500e6 + 480e6 bytes
        assert_eq!(t.items()[0].value(), (600e6 + 620e6) * 8.0);
        assert_eq!(t.items()[1].value(), (500e6 + 480e6) * 8.0);
        assert_eq!(t.value(), 2.2e9 * 8.0);
        // both streams span [t0, t0+2.0] → average = 17.6e9 bits / 2 s
        assert!(close(t.duration(), 2.0));
        assert!(close(t.average(), 8.8e9));
        assert_eq!(
            leaf(&t.items()[1].items()[1]).timestamp,
            1_700_000_200.0 + 1.00004
        );
        assert!(close(run.cpu().average(), 60.5));
        assert_eq!(run.cpu().duration(), 2.0);
    }

    #[test]
    fn udp() {
        let run = parse_iperf(UDP).unwrap();
        assert_eq!(run.protocol.as_deref(), Some("UDP"));
        let t = run.throughput();
        assert_eq!(t.items().len(), 1);
        assert_eq!(t.value(), (289_600_000.0 + 301_184_000.0) * 8.0);
        assert!(close(t.items()[0].duration(), 1.000061 + 0.999991));
        assert!(close(run.cpu().average(), 99.1));
    }

    #[test]
    fn sctp_shape() {
        // SCTP output looks like TCP without the TCP-only fields
        let mut v: Value = serde_json::from_str(TCP1).unwrap();
        v["start"]["test_start"]["protocol"] = "SCTP".into();
        for iv in v["intervals"].as_array_mut().unwrap() {
            for s in iv["streams"].as_array_mut().unwrap() {
                let o = s.as_object_mut().unwrap();
                for k in ["retransmits", "snd_cwnd", "rtt", "rttvar", "pmtu"] {
                    o.remove(k);
                }
            }
        }
        v["end"]
            .as_object_mut()
            .unwrap()
            .remove("sender_tcp_congestion");
        let run = parse_iperf(&v.to_string()).unwrap();
        assert_eq!(run.protocol.as_deref(), Some("SCTP"));
        assert_eq!(run.throughput().value(), 3_532_193_792.0 * 8.0);
    }

    #[test]
    fn reported_error() {
        assert_eq!(
            parse_iperf(ERR).unwrap_err(),
            IperfError::Reported("error - unable to connect to server: Connection refused".into())
        );
    }

    #[test]
    fn completeness_failures() {
        let base: Value = serde_json::from_str(TCP1).unwrap();
        type Mutation = Box<dyn Fn(&mut Value)>;
        let variants: Vec<(&str, Mutation)> = vec![
            (
                "start",
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("start");
                }),
            ),
            (
                "end",
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("end");
                }),
            ),
            (
                "intervals missing",
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("intervals");
                }),
            ),
            (
                "intervals empty",
                Box::new(|v| v["intervals"] = Value::Array(vec![])),
            ),
            (
                "end.streams missing",
                Box::new(|v| {
                    v["end"].as_object_mut().unwrap().remove("streams");
                }),
            ),
            (
                "end.streams empty",
                Box::new(|v| v["end"]["streams"] = Value::Array(vec![])),
            ),
        ];
        for (name, mutate) in variants {
            let mut v = base.clone();
            mutate(&mut v);
            let e = parse_iperf(&v.to_string()).unwrap_err();
            assert!(matches!(e, IperfError::Incomplete(_)), "{name}: {e:?}");
        }
    }

    #[test]
    fn bad_fields_and_garbage() {
        assert!(matches!(
            parse_iperf("iperf3: error"),
            Err(IperfError::NotJson(_))
        ));
        assert!(matches!(parse_iperf("[1,2]"), Err(IperfError::NotJson(_))));
        let mut v: Value = serde_json::from_str(TCP1).unwrap();
        v["intervals"][1]["streams"][0]["bytes"] = Value::String("x".into());
        assert_eq!(
            parse_iperf(&v.to_string()).unwrap_err(),
            IperfError::BadField("intervals[1].streams[0].bytes".into())
        );
        let mut v: Value = serde_json::from_str(TCP1).unwrap();
        v["end"]
            .as_object_mut()
            .unwrap()
            .remove("cpu_utilization_percent");
        assert!(matches!(
            parse_iperf(&v.to_string()),
            Err(IperfError::BadField(_))
        ));
        // an interval with more streams than end.streams
        let mut v: Value = serde_json::from_str(TCP1).unwrap();
        let s = v["intervals"][0]["streams"][0].clone();
        v["intervals"][0]["streams"].as_array_mut().unwrap().push(s);
        assert!(matches!(
            parse_iperf(&v.to_string()),
            Err(IperfError::StreamCount { .. })
        ));
    }
}
