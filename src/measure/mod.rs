//! Measurements: result algebra, tool output parsers, evaluators (owner: measure helper).
//!
//! * [`perf`]: the result tree (intervals, sequential/parallel lists, statistics, slicing);
//! * [`iperf`], [`ping`], [`cpu`]: parsers of iperf3 `-J`, ping and `/proc/stat` samples;
//! * [`rr`]: the agent's request/response generator report (tcp_rr, tcp_crr, udp_rr);
//! * [`flow`]: flow specs, per-iteration results, time alignment, aggregation, report lines;
//! * [`evaluate`]: the non-zero flow evaluator and the baseline evaluator.
//!
//! Pure logic: the only I/O is [`evaluate::BaselineFile::load`].
//!
//! Deliberate differences from upstream LNST (all documented at the item):
//! * iperf: besides upstream's completeness check, a top-level `"error"` key fails the parse,
//!   and so do missing `start.timestamp.timesecs`, `start.test_start.duration`,
//!   `end.cpu_utilization_percent.host_total` or a non-numeric interval `bytes`/`seconds`
//!   (upstream would crash with KeyError while collecting results);
//! * ping: `trans_pkts`/`recv_pkts` are JSON numbers (upstream: strings); the rtt figures are
//!   `Option` and omitted from the JSON when ping printed no rtt line; `rate` rounds
//!   half-to-even exactly like Python's `round`; 0 packets sent gives rate 0 (upstream divides by 0);
//! * /proc/stat: a counter that goes backwards, a CPU line that disappears or a timestamp that
//!   does not increase is an error; lines with 4–9 counters (old kernels) count missing
//!   fields as 0;
//! * alignment: an inverted window is an `EmptySlice` (the window itself is upstream's: the
//!   last flow's, see [`flow::align_iteration`]);
//! * statistics: NaN/±inf become JSON `null`; `deviation_percentage` with a zero average is
//!   0 (zero deviation) or +inf.

pub mod cpu;
pub mod evaluate;
pub mod flow;
pub mod iperf;
pub mod perf;
pub mod ping;
pub mod pktrate;
pub mod rr;

pub use cpu::{parse_cpu_samples, CpuError, CpuStat};
pub use evaluate::{
    baseline_evaluate, flow_key, nonzero_flow_evaluator, BaselineEntry, BaselineError, BaselineFile,
};
pub use flow::{
    aggregate_cpu, aggregate_multi_flow, align_iteration, cpu_summary_json, AggregatedCpu,
    AggregatedFlow, CpuIteration, FlowError, FlowIteration, FlowSpec,
};
pub use iperf::{parse_iperf, IperfError, IperfRun};
pub use perf::{EmptySlice, PerfError, PerfInterval, PerfResult};
pub use ping::{parse_ping, rate_ping_evaluator, PingError, PingStats};
pub use rr::{parse_rr, RrParseError, RrRun};

#[cfg(test)]
mod pipeline_tests {
    //! The whole chain on fixtures: iperf3 JSON → iteration → alignment → aggregate →
    //! report lines and evaluators.
    use super::*;

    const TCP1: &str = include_str!("fixtures/iperf_tcp_1stream.json");
    const TCP2: &str = include_str!("fixtures/iperf_tcp_2streams.json");

    fn spec() -> FlowSpec {
        FlowSpec {
            duration: 1,
            warmup: 1,
            cpupin: None,
            ..crate::measure::flow::tests::spec()
        }
    }

    #[test]
    fn fixture_to_report() {
        let run = parse_iperf(TCP1).unwrap();
        let mut flows = vec![FlowIteration::from_iperf(Some(&run), Some(&run), 0.0)];
        align_iteration(&mut flows, &mut [], 1.0).unwrap();
        // window [t0 + 1, t0 + 3.000037 − 1]: keeps 0.000045 s of interval 1, all of
        // interval 2, 0.000012 s of interval 3
        let b = [
            1_172_897_792.0 * 8.0,
            1_178_599_424.0 * 8.0,
            1_180_696_576.0 * 8.0,
        ];
        let want = b[0] * 0.000045 / 1.000045 + b[1] + b[2] * 0.000012 / 1.000012;
        let got = flows[0].generator_results.value();
        assert!((got - want).abs() / want < 1e-6, "{got} vs {want}");
        assert!((flows[0].generator_results.duration() - 1.000037).abs() < 1e-6);
        // CPU: an interval [t0, t0+3] sliced to [t0+1, t0+2.000037] keeps its average
        assert!((flows[0].generator_cpu_stats.average() - 45.123).abs() < 1e-6);

        let run2 = parse_iperf(TCP2).unwrap();
        let it2 = FlowIteration::from_iperf(Some(&run2), Some(&run2), 0.0);
        let agg = AggregatedFlow::new(spec(), vec![flows.remove(0), it2.clone()]);
        // time-weighted over both iterations
        let total_bits = got + 2.2e9 * 8.0;
        let total_secs = 1.000037 + 2.0;
        let avg = agg.generator_results().average();
        assert!((avg - total_bits / total_secs).abs() / avg < 1e-6);
        let lines = agg.report_lines();
        assert!(lines[0].starts_with("Generator measured throughput (generator_results): "));
        assert!(nonzero_flow_evaluator(&agg).0);
        let key = flow_key(&agg.spec, "ipv4", "");
        let base = BaselineFile::from_json_str(&format!(
            r#"{{"default_threshold_pct": 5.0, "flows": [{{"key": "{key}", "generator_results": {}}}]}}"#,
            avg * 1.1
        ))
        .unwrap();
        let (ok, text) = baseline_evaluate(&base, &key, &agg).unwrap();
        assert!(!ok);
        assert!(text.contains("9.09% lower from the baseline"), "{text}");
        // the summary and the trees carry the same figure
        assert_eq!(agg.summary_json()["generator_results"].as_f64(), Some(avg));
        assert_eq!(
            agg.details_json()["aggregate"]["generator_results"]["average"].as_f64(),
            Some(avg)
        );
    }
}
