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

/// The error line of a ping that sent nothing for lack of a route (exit code 2, `connect:
/// Network is unreachable` or `No route to host`), None for any other outcome. (iputils
/// 20221126 does so when it is not bound to a source address; bound with `-I ADDRESS`, as
/// here, it counts the refused sends as unanswered and exits 1.)
///
/// Between endpoints that must be isolated, that is isolation as good as unanswered pings
/// (exit code 1): upstream meant such a pair to pass (VlanPingEvaluatorMixin), but its ping
/// job fails on exit code 2 and ZeroPassPingEvaluator then raises KeyError.
pub fn no_route<'a>(stdout: &str, stderr: &'a str, exit_code: Option<i32>) -> Option<&'a str> {
    if exit_code != Some(2) || stdout.contains(" packets transmitted, ") {
        return None;
    }
    stderr.lines().map(str::trim).find(|l| {
        l.ends_with("connect: Network is unreachable") || l.ends_with("connect: No route to host")
    })
}

/// The figures of a ping that sent nothing.
fn nothing_sent() -> PingStats {
    PingStats {
        trans_pkts: 0,
        recv_pkts: 0,
        rate: 0,
        rtt_min: None,
        rtt_avg: None,
        rtt_max: None,
        rtt_mdev: None,
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
    /// Whether the endpoints must be isolated (upstream `PingConf.reachable == False`): a
    /// zero-answers evaluation is what marks them.
    pub fn expects_isolation(&self) -> bool {
        self.evaluators.contains(&PingEvaluator::ZeroPass)
    }

    /// How long the ping may take (upstream `_estimate_ping_duration`): count × interval +
    /// 10 s, or 2 s per ping + 10 s between isolated endpoints (no answer ends a ping early).
    pub fn timeout(&self) -> Result<Duration, RecipeError> {
        let secs = if self.expects_isolation() {
            2.0 * f64::from(self.count) + 10.0
        } else {
            f64::from(self.count) * self.interval + 10.0
        };
        // The declarations bound count and interval; try_ keeps an overflow an error, not a
        // panic.
        Duration::try_from_secs_f64(secs).map_err(|_| {
            RecipeError::Param(format!(
                "ping_count={} with ping_interval={} is too long",
                self.count, self.interval
            ))
        })
    }

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
    if confs.is_empty() {
        return Ok(());
    }
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
        results.push(ctx.finish_job(&c.client, job, c.timeout()?).await?);
    }
    ctx.tool_time_s += t0.elapsed().as_secs_f64();
    for (c, res) in confs.iter().zip(results) {
        let ipv = c.dst.version();
        ctx.save_raw(
            format!("{raw_prefix}ping_{ipv}_{}_to_{}.txt", c.client, c.dst_host),
            res.stdout.as_bytes(),
        );
        let no_route = c
            .expects_isolation()
            .then(|| no_route(&res.stdout, &res.stderr, res.exit_code))
            .flatten();
        let (parsed, job_passed) = match no_route {
            Some(_) => (Ok(nothing_sent()), true),
            None => (parse_ping(&res.stdout, res.exit_code), res.passed),
        };
        let (passed, data) = match &parsed {
            Ok(stats) => {
                let mut data = stats.to_json();
                if let (Some(msg), Some(obj)) = (no_route, data.as_object_mut()) {
                    obj.insert("msg".into(), msg.into());
                }
                (job_passed, data)
            }
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
        // Sent nothing for lack of a route: nothing came back either.
        assert_eq!(
            z.evaluate(Some(&nothing_sent())),
            (true, "received 0 of 0 packets as expected".to_string())
        );
        let r = PingEvaluator::Rate { min_rate: 50 };
        assert!(r.evaluate(Some(&stats(10, 5))).0);
        assert!(!r.evaluate(Some(&stats(10, 4))).0);
    }

    #[test]
    fn isolated_pair_without_route_is_no_answer() {
        let unreachable = "ping: connect: Network is unreachable\n";
        assert_eq!(
            no_route("", unreachable, Some(2)),
            Some("ping: connect: Network is unreachable")
        );
        assert_eq!(
            no_route("", "ping: connect: No route to host\n", Some(2)),
            Some("ping: connect: No route to host")
        );
        // Any other failure stays a failure.
        assert_eq!(
            no_route("", "ping: bind: Cannot assign requested address\n", Some(2)),
            None
        );
        assert_eq!(no_route("", unreachable, Some(1)), None);
        assert_eq!(no_route("", unreachable, None), None);
        assert_eq!(
            no_route("2 packets transmitted, 0 received", unreachable, Some(2)),
            None
        );
        // Exit code 1 (sent, nothing came back) already parses as zero answers.
        let out = "--- 198.18.71.4 ping statistics ---\n5 packets transmitted, 0 received, 100% packet loss, time 803ms\n";
        let s = parse_ping(out, Some(1)).unwrap_or_else(|e| panic!("{e}"));
        assert!(PingEvaluator::ZeroPass.evaluate(Some(&s)).0);

        // Only isolated endpoints get the longer timeout (and the no-route reading).
        let mut c = PingConf {
            client: "guest1".into(),
            src: "198.18.70.2/24".parse().unwrap_or_else(|e| panic!("{e}")),
            dst_host: "guest4".into(),
            dst: "198.18.71.4/24".parse().unwrap_or_else(|e| panic!("{e}")),
            count: 5,
            interval: 0.2,
            size: None,
            evaluators: vec![PingEvaluator::Rate { min_rate: 50 }],
        };
        assert!(!c.expects_isolation());
        assert_eq!(c.timeout().ok(), Some(Duration::from_secs(11)));
        c.evaluators = vec![PingEvaluator::ZeroPass];
        assert!(c.expects_isolation());
        assert_eq!(c.timeout().ok(), Some(Duration::from_secs(20)));
    }
}
