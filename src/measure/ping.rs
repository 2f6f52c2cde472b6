//! ping output → statistics (upstream `lnst/Tests/Ping.py`), and the rate evaluator
//! (`RecipeCommon/Ping/Evaluators/RatePingEvaluator.py`).

use super::perf::num;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PingError {
    /// Exit code > 1 (1 means "no reply", which still parses, like upstream).
    #[error("returncode = {0}")]
    ExitCode(i32),
    #[error("expected pattern not found")]
    PatternNotFound,
    /// The rtt summary is required unless the rate is 0.
    #[error("expected rtt pattern not found (rate {0} %)")]
    RttNotFound(u32),
}

/// Parsed ping summary. `rate` is the received percentage, rounded half-to-even like
/// Python's `round`. The rtt figures are in ms and absent when ping printed no rtt line
/// (only allowed at rate 0).
#[derive(Debug, Clone, PartialEq)]
pub struct PingStats {
    pub trans_pkts: u64,
    pub recv_pkts: u64,
    pub rate: u32,
    pub rtt_min: Option<f64>,
    pub rtt_avg: Option<f64>,
    pub rtt_max: Option<f64>,
    pub rtt_mdev: Option<f64>,
}

/// The integer written just before byte offset `end` in `s` (after optional spaces).
fn number_before(s: &str, end: usize) -> Option<u64> {
    let head = s.get(..end)?.trim_end();
    let digits_start = head
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_digit())
        .last()
        .map(|(i, _)| i)?;
    head.get(digits_start..)?.parse().ok()
}

/// The integer at the start of `s`.
fn number_after(s: &str) -> Option<u64> {
    let s = s.trim_start();
    let len = s.chars().take_while(|c| c.is_ascii_digit()).count();
    s.get(..len)?.parse().ok()
}

/// `(\d+) packets transmitted, (\d+) received`
fn find_counts(text: &str) -> Option<(u64, u64)> {
    const MARK: &str = " packets transmitted, ";
    let mut from = 0;
    while let Some(pos) = text.get(from..).and_then(|t| t.find(MARK)) {
        let at = from + pos;
        let after = text.get(at + MARK.len()..).unwrap_or("");
        if let (Some(trans), Some(recv)) = (number_before(text, at), number_after(after)) {
            let recv_len = after.chars().take_while(|c| c.is_ascii_digit()).count();
            if after
                .get(recv_len..)
                .is_some_and(|r| r.starts_with(" received"))
            {
                return Some((trans, recv));
            }
        }
        from = at + MARK.len();
    }
    None
}

/// `rtt min/avg/max/mdev = a/b/c/d ms`, possibly followed by more (`, pipe 4` when replies
/// overlapped, `, ipg/ewma ...` in flood mode), as upstream's `re.search` finds it.
fn find_rtt(text: &str) -> Option<[f64; 4]> {
    const MARK: &str = "rtt min/avg/max/mdev = ";
    for line in text.lines() {
        let Some(pos) = line.find(MARK) else { continue };
        let rest = line.get(pos + MARK.len()..)?;
        let Some((figures, _)) = rest.split_once(" ms") else {
            continue;
        };
        let parts: Vec<f64> = figures
            .split('/')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .ok()?;
        if let [a, b, c, d] = parts[..] {
            return Some([a, b, c, d]);
        }
    }
    None
}

/// Parse iputils `ping` output. `exit_code` > 1 → error (`returncode = N`); 1 (no reply) is
/// accepted as upstream does. `rate = round(recv/trans*100)` (0 when nothing was sent).
pub fn parse_ping(stdout: &str, exit_code: Option<i32>) -> Result<PingStats, PingError> {
    if let Some(code) = exit_code {
        if code > 1 {
            return Err(PingError::ExitCode(code));
        }
    }
    let (trans, recv) = find_counts(stdout).ok_or(PingError::PatternNotFound)?;
    let rate = if trans == 0 {
        0
    } else {
        let r = (recv as f64 / trans as f64 * 100.0).round_ties_even();
        r.clamp(0.0, u32::MAX as f64) as u32
    };
    let rtt = find_rtt(stdout);
    if rtt.is_none() && rate != 0 {
        return Err(PingError::RttNotFound(rate));
    }
    Ok(PingStats {
        trans_pkts: trans,
        recv_pkts: recv,
        rate,
        rtt_min: rtt.map(|r| r[0]),
        rtt_avg: rtt.map(|r| r[1]),
        rtt_max: rtt.map(|r| r[2]),
        rtt_mdev: rtt.map(|r| r[3]),
    })
}

impl PingStats {
    /// Upstream's `res_data` shape. Deviation: `trans_pkts`/`recv_pkts` are JSON numbers
    /// (upstream stores the regex strings); rtt keys are omitted when ping printed no rtt line.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "trans_pkts": self.trans_pkts,
            "recv_pkts": self.recv_pkts,
            "rate": self.rate,
        });
        if let Some(obj) = v.as_object_mut() {
            for (k, val) in [
                ("rtt_min", self.rtt_min),
                ("rtt_avg", self.rtt_avg),
                ("rtt_max", self.rtt_max),
                ("rtt_mdev", self.rtt_mdev),
            ] {
                if let Some(x) = val {
                    obj.insert(k.to_string(), num(x));
                }
            }
        }
        v
    }
}

/// RatePingEvaluator(min_rate): PASS iff the measured rate ≥ `min_rate`. `None` (no parsed
/// result, i.e. no `rate` key upstream) is a FAIL.
pub fn rate_ping_evaluator(stats: Option<&PingStats>, min_rate: u32) -> (bool, String) {
    match stats {
        None => (
            false,
            format!("RatePingEvaluator: no measured rate to compare with min_rate({min_rate})"),
        ),
        Some(s) if s.rate >= min_rate => (
            true,
            format!("measured rate {} is more than min_rate({min_rate})", s.rate),
        ),
        Some(s) => (
            false,
            format!(
                "measured rate {} is lower than min_rate({min_rate})",
                s.rate
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str = include_str!("fixtures/ping_ipv4.txt");
    const V6: &str = include_str!("fixtures/ping_ipv6.txt");
    const LOSS: &str = include_str!("fixtures/ping_loss.txt");

    #[test]
    fn ipv4() {
        let s = parse_ping(V4, Some(0)).unwrap();
        assert_eq!((s.trans_pkts, s.recv_pkts, s.rate), (5, 5, 100));
        assert_eq!(s.rtt_min, Some(0.039));
        assert_eq!(s.rtt_avg, Some(0.044));
        assert_eq!(s.rtt_max, Some(0.052));
        assert_eq!(s.rtt_mdev, Some(0.004));
        let j = s.to_json();
        assert_eq!(j["rate"], 100);
        assert_eq!(j["trans_pkts"], 5);
        assert_eq!(j["rtt_avg"], 0.044);
    }

    #[test]
    fn ipv6_with_loss() {
        // 7 of 8: 87.5 → 88
        let s = parse_ping(V6, Some(0)).unwrap();
        assert_eq!((s.trans_pkts, s.recv_pkts, s.rate), (8, 7, 88));
        assert_eq!(s.rtt_max, Some(0.071));
    }

    #[test]
    fn total_loss_exit_one_parses_with_rate_zero() {
        let s = parse_ping(LOSS, Some(1)).unwrap();
        assert_eq!((s.trans_pkts, s.recv_pkts, s.rate), (4, 0, 0));
        assert_eq!(s.rtt_avg, None);
        let j = s.to_json();
        assert!(j.get("rtt_avg").is_none());
        let (ok, text) = rate_ping_evaluator(Some(&s), 50);
        assert!(!ok);
        assert_eq!(text, "measured rate 0 is lower than min_rate(50)");
    }

    #[test]
    fn rtt_line_with_pipe_or_ipg() {
        // iputils appends `, pipe N` when several replies were outstanding at once (a slow
        // first reply, short intervals); upstream's regex search still finds the figures.
        for tail in ["", ", pipe 4", ", ipg/ewma 0.131/0.052 ms"] {
            let text = format!(
                "10 packets transmitted, 10 received, 0% packet loss, time 1300ms\n\
                 rtt min/avg/max/mdev = 0.058/367.681/1000.205/451.891 ms{tail}\n"
            );
            let s = parse_ping(&text, Some(0)).unwrap_or_else(|e| panic!("{tail:?}: {e}"));
            assert_eq!(s.rtt_avg, Some(367.681), "{tail:?}");
            assert_eq!(s.rtt_max, Some(1000.205), "{tail:?}");
        }
    }

    #[test]
    fn exit_code_above_one_fails() {
        assert_eq!(parse_ping(V4, Some(2)).unwrap_err(), PingError::ExitCode(2));
        assert_eq!(PingError::ExitCode(2).to_string(), "returncode = 2");
    }

    #[test]
    fn missing_patterns() {
        assert_eq!(
            parse_ping("ping: connect: Network is unreachable\n", Some(1)).unwrap_err(),
            PingError::PatternNotFound
        );
        // rate > 0 but no rtt line
        let text = "3 packets transmitted, 3 received, 0% packet loss, time 2003ms\n";
        assert_eq!(
            parse_ping(text, Some(0)).unwrap_err(),
            PingError::RttNotFound(100)
        );
    }

    #[test]
    fn rate_rounds_half_to_even() {
        // 5/8 = 62.5 → 62 (Python round), 1/8 = 12.5 → 12, 3/8 = 37.5 → 38
        for (recv, want) in [(5, 62), (1, 12), (3, 38)] {
            let text = format!(
                "8 packets transmitted, {recv} received, x% packet loss, time 1ms\n\
                 rtt min/avg/max/mdev = 0.1/0.2/0.3/0.05 ms\n"
            );
            assert_eq!(
                parse_ping(&text, Some(0)).unwrap().rate,
                want,
                "recv {recv}"
            );
        }
    }

    #[test]
    fn evaluator_texts() {
        let s = parse_ping(V4, Some(0)).unwrap();
        assert_eq!(
            rate_ping_evaluator(Some(&s), 50),
            (
                true,
                "measured rate 100 is more than min_rate(50)".to_string()
            )
        );
        let s6 = parse_ping(V6, Some(0)).unwrap();
        assert!(!rate_ping_evaluator(Some(&s6), 90).0);
        assert!(rate_ping_evaluator(Some(&s6), 88).0);
        assert!(!rate_ping_evaluator(None, 50).0);
    }
}
