//! Packet asserts (upstream `RecipeCommon/PacketAssert.py`): a capture on an underlay device
//! for the duration of a ping, and an evaluation of how many captured packets match. The
//! agent runs `tcpdump -n -l --immediate-mode -p -i DEV FILTER` (a [`JobSpec::Capture`] with a typed filter);
//! the controller counts the lines that contain every `grep_for` text, in order (upstream
//! greps tcpdump's lines with regular expressions), and checks `p_min <= count <= p_max`.

use crate::protocol::{CaptureFilter, JobSpec};
use crate::recipes::context::{Dev, RecipeError, RunContext};
use crate::results::{ResultEntry, ResultType};

/// One packet assert (upstream `PacketAssertConf`).
#[derive(Debug, Clone, PartialEq)]
pub struct PacketAssertConf {
    /// Where to capture.
    pub dev: Dev,
    pub filter: CaptureFilter,
    /// Texts a matching line contains, in this order.
    pub grep_for: Vec<String>,
    /// At least this many matching packets (upstream default 1).
    pub p_min: u64,
    /// At most this many (None: no bound).
    pub p_max: Option<u64>,
}

/// tcpdump's packets: a line starting with the timestamp begins one, a line without (the
/// inner packet of VXLAN or Geneve) continues it, joined with ` | `.
fn packets(out: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for line in out.lines() {
        match v.last_mut() {
            Some(p) if !line.starts_with(|c: char| c.is_ascii_digit()) => {
                p.push_str(" | ");
                p.push_str(line.trim());
            }
            _ => v.push(line.to_string()),
        }
    }
    v
}

/// How many packets of `out` contain every text of `grep_for`, in order.
pub fn count_matches(out: &str, grep_for: &[String]) -> u64 {
    packets(out)
        .iter()
        .filter(|line| {
            let mut rest = line.as_str();
            grep_for.iter().all(|g| match rest.find(g.as_str()) {
                Some(i) => {
                    rest = &rest[i + g.len()..];
                    true
                }
                None => false,
            })
        })
        .count() as u64
}

/// The verdict on a count: (passed, text).
pub fn evaluate(conf: &PacketAssertConf, matched: u64) -> (bool, String) {
    let max_ok = conf.p_max.is_none_or(|m| matched <= m);
    let ok = matched >= conf.p_min && max_ok;
    let bound = match conf.p_max {
        Some(m) => format!("{}..={m}", conf.p_min),
        None => format!("at least {}", conf.p_min),
    };
    (
        ok,
        format!(
            "PacketAssert on {}: {matched} packets matched [{}], expected {bound}",
            conf.dev,
            conf.grep_for.join(" … ")
        ),
    )
}

/// Start the captures; returns their job ids (upstream `packet_assert_test_start`).
pub async fn start(
    ctx: &mut RunContext,
    confs: &[PacketAssertConf],
) -> Result<Vec<u64>, RecipeError> {
    let mut ids = Vec::new();
    for c in confs {
        let spec = JobSpec::Capture {
            device: ctx.ifname(&c.dev)?,
            filter: c.filter.clone(),
        };
        ids.push(ctx.start_job(&c.dev.host, spec).await?);
    }
    Ok(ids)
}

/// Stop the captures, save their output (`{raw_prefix}{n}_{dev}.txt`) and evaluate them
/// (upstream `packet_assert_test_stop` + `packet_assert_evaluate_and_report`).
pub async fn stop_and_evaluate(
    ctx: &mut RunContext,
    confs: &[PacketAssertConf],
    ids: Vec<u64>,
    raw_prefix: &str,
) -> Result<(), RecipeError> {
    for (k, (c, id)) in confs.iter().zip(ids).enumerate() {
        let res = ctx.stop_job(&c.dev.host, id).await?;
        ctx.save_raw(
            format!("{raw_prefix}{}_{}.txt", k + 1, c.dev),
            res.stdout.as_bytes(),
        );
        let matched = count_matches(&res.stdout, &c.grep_for);
        let (mut ok, mut text) = evaluate(c, matched);
        if let Some(e) = &res.error {
            ok = false;
            text.push_str(&format!(" (capture failed: {e})"));
        } else if res.exit_code.is_some_and(|c| c != 0) {
            ok = false;
            let why = res.stderr.lines().last().unwrap_or("").trim().to_string();
            text.push_str(&format!(" (tcpdump exited {:?}: {why})", res.exit_code));
        }
        ctx.progress(&text);
        ctx.add(ResultEntry::generic(ResultType::from_bool(ok), text));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRE: &str = "\
12:00:00.000001 IP 198.18.128.1 > 198.18.128.2: GREv0, length 88: IP 198.18.129.2 > 198.18.130.2: ICMP echo request, id 7, seq 1, length 64
12:00:00.000002 IP 198.18.128.1 > 198.18.128.2: GREv0, length 88: IP 198.18.129.2 > 198.18.130.2: ICMP echo request, id 7, seq 2, length 64
12:00:00.000003 IP 198.18.128.2 > 198.18.128.1: GREv0, length 88: IP 198.18.130.2 > 198.18.129.2: ICMP echo reply, id 7, seq 1, length 64
";

    fn conf(grep: &[&str], p_min: u64, p_max: Option<u64>) -> PacketAssertConf {
        PacketAssertConf {
            dev: Dev::new("host2", "eth0"),
            filter: CaptureFilter::default(),
            grep_for: grep.iter().map(|s| s.to_string()).collect(),
            p_min,
            p_max,
        }
    }

    #[test]
    fn counts_lines_with_every_text_in_order() {
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let req = g(&[
            "198.18.128.1 > 198.18.128.2: GREv0",
            "198.18.129.2 > 198.18.130.2: ICMP echo request",
        ]);
        assert_eq!(count_matches(GRE, &req), 2);
        // Out of order is no match.
        let rev = g(&[
            "198.18.129.2 > 198.18.130.2: ICMP echo request",
            "198.18.128.1 > 198.18.128.2: GREv0",
        ]);
        assert_eq!(count_matches(GRE, &rev), 0);
        assert_eq!(count_matches("", &req), 0);
        assert_eq!(count_matches(GRE, &[]), 3);
        // An inner packet on its own line belongs to the packet above.
        let vxlan = "12:00:00.1 IP 198.18.128.1.1 > 198.18.128.2.4789: VXLAN, flags [I] (0x08), vni 1\nIP 198.18.140.1 > 198.18.140.2: ICMP echo request, id 1\n12:00:00.2 IP 198.18.128.1.1 > 198.18.128.2.4789: VXLAN, flags [I] (0x08), vni 1\nARP, Request who-has 198.18.140.2\n";
        let g = g(&[
            "198.18.128.2.4789: VXLAN",
            "198.18.140.1 > 198.18.140.2: ICMP echo request",
        ]);
        assert_eq!(count_matches(vxlan, &g), 1);
    }

    #[test]
    fn bounds_pass_and_fail() {
        assert!(evaluate(&conf(&["x"], 2, None), 2).0);
        assert!(!evaluate(&conf(&["x"], 2, None), 1).0);
        assert!(!evaluate(&conf(&["x"], 0, Some(0)), 1).0);
        let (ok, text) = evaluate(&conf(&["a", "b"], 5, None), 0);
        assert!(!ok);
        assert_eq!(
            text,
            "PacketAssert on host2.eth0: 0 packets matched [a … b], expected at least 5"
        );
    }

    #[test]
    fn filter_words() {
        let f = CaptureFilter {
            proto: Some(47),
            src: Some("198.18.128.1".parse().unwrap()),
            dst: Some("198.18.128.2".parse().unwrap()),
            udp_dport: None,
        };
        assert_eq!(
            f.words().join(" "),
            "ip proto 47 and src host 198.18.128.1 and dst host 198.18.128.2"
        );
        let f6 = CaptureFilter {
            proto: Some(47),
            dst: Some("fd00:128::2".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(
            f6.words().join(" "),
            "ip6 proto 47 and dst host fd00:128::2"
        );
        let spec = JobSpec::Capture {
            device: "eth0".into(),
            filter: CaptureFilter {
                udp_dport: Some(4789),
                ..Default::default()
            },
        };
        assert_eq!(
            spec.argv().unwrap().join(" "),
            "tcpdump -n -l --immediate-mode -p -i eth0 udp dst port 4789"
        );
    }
}
