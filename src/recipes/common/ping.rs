//! The ping test (upstream `RecipeCommon/Ping/Recipe.py`, `PingTestAndEvaluate`): ping
//! configurations run in parallel, one `ping` measurement result each, then their evaluators.

use crate::measure::ping::{parse_ping, rate_ping_evaluator, PingStats};
use crate::protocol::JobSpec;
use crate::recipes::context::{RecipeError, RunContext};
use crate::recipes::typed::IfAddr;
use crate::results::{ResultEntry, ResultType};
use std::time::Duration;

/// How a ping's result is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingEvaluator {
    /// PASS when at least `min_rate` % of the pings were answered (`RatePingEvaluator`).
    Rate { min_rate: u32 },
    /// PASS when no ping was answered: the endpoints must be isolated (`ZeroPassPingEvaluator`).
    ZeroPass,
}

impl PingEvaluator {
    /// PASS/FAIL and the text of the evaluation result.
    pub fn evaluate(self, stats: Option<&PingStats>) -> (bool, String) {
        match self {
            PingEvaluator::Rate { min_rate } => rate_ping_evaluator(stats, min_rate),
            PingEvaluator::ZeroPass => match stats {
                None => (
                    false,
                    "ZeroPassPingEvaluator: no measured packet counts".to_string(),
                ),
                Some(s) if s.recv_pkts > 0 => (
                    false,
                    format!(
                        "expected zero packets but {} of {} packets were received",
                        s.recv_pkts, s.trans_pkts
                    ),
                ),
                Some(s) => (
                    true,
                    format!(
                        "received {} of {} packets as expected",
                        s.recv_pkts, s.trans_pkts
                    ),
                ),
            },
        }
    }
}

/// One ping (upstream `PingConf`): from `client` (bound to `src`) to `dst` on `dst_host`.
#[derive(Debug, Clone, PartialEq)]
pub struct PingConf {
    pub client: String,
    pub src: IfAddr,
    pub dst_host: String,
    pub dst: IfAddr,
    pub count: u32,
    pub interval: f64,
    pub size: Option<u32>,
    pub evaluators: Vec<PingEvaluator>,
}

impl PingConf {
    /// The same ping in the other direction (upstream `_create_reverse_ping`).
    pub fn reversed(&self) -> PingConf {
        PingConf {
            client: self.dst_host.clone(),
            src: self.dst,
            dst_host: self.client.clone(),
            dst: self.src,
            ..self.clone()
        }
    }
}

/// Run `confs` in parallel, then record one measurement result per ping and its evaluations
/// (upstream `ping_test` + `ping_report_and_evaluate`). The raw output of each goes to
/// `<raw_prefix>ping_<ipv>_<client>_to_<dst host>.txt`.
pub async fn ping_test_and_evaluate(
    ctx: &mut RunContext,
    confs: &[PingConf],
    raw_prefix: &str,
) -> Result<(), RecipeError> {
    let Some(first) = confs.first() else {
        return Ok(());
    };
    // The declarations bound count and interval; try_ keeps an overflow an error, not a panic.
    let timeout = Duration::try_from_secs_f64(f64::from(first.count) * first.interval + 10.0)
        .map_err(|_| {
            RecipeError::Param(format!(
                "ping_count={} with ping_interval={} is too long",
                first.count, first.interval
            ))
        })?;
    let t0 = std::time::Instant::now();
    let mut started = Vec::new();
    for c in confs {
        let spec = JobSpec::Ping {
            dst: c.dst.addr.to_string(),
            src: Some(c.src.addr.to_string()),
            count: c.count,
            interval_s: c.interval,
            size: c.size,
            ipv6: c.dst.addr.is_ipv6(),
        };
        started.push(ctx.start_job(&c.client, spec).await?);
    }
    let mut results = Vec::new();
    for (c, job) in confs.iter().zip(started) {
        results.push(ctx.finish_job(&c.client, job, timeout).await?);
    }
    ctx.tool_time_s += t0.elapsed().as_secs_f64();
    for (c, res) in confs.iter().zip(results) {
        let ipv = c.dst.version();
        ctx.save_raw(
            format!("{raw_prefix}ping_{ipv}_{}_to_{}.txt", c.client, c.dst_host),
            res.stdout.as_bytes(),
        );
        let parsed = parse_ping(&res.stdout, res.exit_code);
        let (passed, data) = match &parsed {
            Ok(stats) => (res.passed, stats.to_json()),
            Err(e) => (false, serde_json::json!({"error": e.to_string()})),
        };
        ctx.add(ResultEntry::measurement(
            "ping",
            ResultType::from_bool(passed),
            format!(
                "Ping result --- From: <{} ({})> To: <{} ({})>",
                c.client, c.src, c.dst_host, c.dst
            ),
            data.clone(),
            Some(data),
        ));
        for ev in &c.evaluators {
            let (ok, text) = ev.evaluate(parsed.as_ref().ok());
            ctx.add(ResultEntry::generic(ResultType::from_bool(ok), text));
        }
        let summary = match &parsed {
            Ok(s) => match s.rtt_avg {
                Some(avg) => format!("{}% received, rtt avg {avg:.3} ms", s.rate),
                None => format!("{}% received", s.rate),
            },
            Err(e) => format!("failed: {e}"),
        };
        ctx.progress(&format!(
            "ping {ipv} {} -> {}: {summary}",
            c.src.addr, c.dst.addr
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(trans: u64, recv: u64) -> PingStats {
        PingStats {
            trans_pkts: trans,
            recv_pkts: recv,
            rate: (recv * 100 / trans.max(1)) as u32,
            rtt_min: None,
            rtt_avg: None,
            rtt_max: None,
            rtt_mdev: None,
        }
    }

    #[test]
    fn zero_pass_fails_on_any_answer() {
        let z = PingEvaluator::ZeroPass;
        assert_eq!(
            z.evaluate(Some(&stats(10, 0))),
            (true, "received 0 of 10 packets as expected".to_string())
        );
        assert_eq!(
            z.evaluate(Some(&stats(10, 1))),
            (
                false,
                "expected zero packets but 1 of 10 packets were received".to_string()
            )
        );
        assert!(!z.evaluate(None).0);
        let r = PingEvaluator::Rate { min_rate: 50 };
        assert!(r.evaluate(Some(&stats(10, 5))).0);
        assert!(!r.evaluate(Some(&stats(10, 4))).0);
    }
}
