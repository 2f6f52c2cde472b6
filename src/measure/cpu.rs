//! `/proc/stat` samples → per-CPU utilization (upstream `lnst/Tests/CPUStatMonitor.py`,
//! `RecipeCommon/Perf/Measurements/StatCPUMeasurement.py`).
//!
//! Each sample is `(unix time, text of /proc/stat or just its cpu lines)`. Every pair of
//! consecutive samples gives, per CPU line and per counted field, an interval
//! `PerfInterval(Δjiffies, Δt, "time units", t_prev)`. Utilization is
//! `Parallel[Sequential(user), Sequential(nice), Sequential(system), Sequential(irq),
//! Sequential(softirq), Sequential(steal)]` (idle, iowait and guest excluded), so its
//! `average()` is jiffies per second — % of one CPU at USER_HZ = 100.

use super::perf::{PerfInterval, PerfResult};

/// The 10 fields of a `cpu*` line, in kernel order.
pub const FIELDS: [&str; 10] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];

/// Indices into [`FIELDS`] that count as utilization.
const UTILIZATION: [usize; 6] = [0, 1, 2, 5, 6, 7];

/// Unit of CPU intervals, as upstream.
pub const CPU_UNIT: &str = "time units";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CpuError {
    #[error("need at least 2 /proc/stat samples, got {0}")]
    TooFewSamples(usize),
    #[error("/proc/stat sample {0} has no cpu lines")]
    NoCpuLines(usize),
    #[error("/proc/stat sample {sample}: bad line {line:?}")]
    BadLine { sample: usize, line: String },
    #[error("/proc/stat sample {sample} lacks line {cpu:?} present in the first sample")]
    MissingCpu { sample: usize, cpu: String },
    #[error("/proc/stat sample {sample}: time does not increase ({prev} → {now})")]
    TimeNotIncreasing { sample: usize, prev: f64, now: f64 },
    #[error("/proc/stat sample {sample}: {cpu} {field} decreased ({prev} → {now}); counter wrapped or reset")]
    CounterDecreased {
        sample: usize,
        cpu: String,
        field: &'static str,
        prev: u64,
        now: u64,
    },
}

/// Utilization of one CPU line (`cpu` = all CPUs, `cpu0`, ...) over the sampled period.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuStat {
    pub cpu: String,
    pub utilization: PerfResult,
}

/// `cpu` / `cpuN` name followed by at least 4 counters; missing trailing fields (old
/// kernels) count as 0, extra fields are ignored.
fn parse_sample(index: usize, text: &str) -> Result<Vec<(String, [u64; 10])>, CpuError> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some(name) = parts.next() else { continue };
        let Some(suffix) = name.strip_prefix("cpu") else {
            continue;
        };
        if !suffix.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let bad = || CpuError::BadLine {
            sample: index,
            line: line.to_string(),
        };
        let mut counters = [0u64; 10];
        let mut n = 0;
        for (slot, tok) in counters.iter_mut().zip(parts) {
            *slot = tok.parse().map_err(|_| bad())?;
            n += 1;
        }
        if n < 4 {
            return Err(bad());
        }
        out.push((name.to_string(), counters));
    }
    if out.is_empty() {
        return Err(CpuError::NoCpuLines(index));
    }
    Ok(out)
}

/// Turn ≥ 2 timed samples into one [`CpuStat`] per CPU line of the first sample (in its order).
pub fn parse_cpu_samples(samples: &[(f64, String)]) -> Result<Vec<CpuStat>, CpuError> {
    if samples.len() < 2 {
        return Err(CpuError::TooFewSamples(samples.len()));
    }
    let parsed = samples
        .iter()
        .enumerate()
        .map(|(i, (_, text))| parse_sample(i, text))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(first) = parsed.first() else {
        return Err(CpuError::TooFewSamples(0));
    };
    // per cpu, per utilization field: intervals
    let mut series: Vec<(String, Vec<Vec<PerfResult>>)> = first
        .iter()
        .map(|(name, _)| (name.clone(), vec![Vec::new(); UTILIZATION.len()]))
        .collect();
    for k in 1..samples.len() {
        let (Some((t_prev, _)), Some((t_now, _))) = (samples.get(k - 1), samples.get(k)) else {
            continue;
        };
        let dt = t_now - t_prev;
        if dt.is_nan() || dt <= 0.0 {
            return Err(CpuError::TimeNotIncreasing {
                sample: k,
                prev: *t_prev,
                now: *t_now,
            });
        }
        let (Some(prev), Some(now)) = (parsed.get(k - 1), parsed.get(k)) else {
            continue;
        };
        for (cpu, fields) in series.iter_mut() {
            let find = |sample: &Vec<(String, [u64; 10])>, idx: usize| {
                sample
                    .iter()
                    .find(|(n, _)| n == cpu)
                    .map(|(_, c)| *c)
                    .ok_or_else(|| CpuError::MissingCpu {
                        sample: idx,
                        cpu: cpu.clone(),
                    })
            };
            let a = find(prev, k - 1)?;
            let b = find(now, k)?;
            for (slot, &fi) in fields.iter_mut().zip(UTILIZATION.iter()) {
                let (pa, pb) = (
                    a.get(fi).copied().unwrap_or(0),
                    b.get(fi).copied().unwrap_or(0),
                );
                let delta = pb
                    .checked_sub(pa)
                    .ok_or_else(|| CpuError::CounterDecreased {
                        sample: k,
                        cpu: cpu.clone(),
                        field: FIELDS.get(fi).copied().unwrap_or("?"),
                        prev: pa,
                        now: pb,
                    })?;
                slot.push(PerfResult::Interval(PerfInterval::new(
                    delta as f64,
                    dt,
                    CPU_UNIT,
                    *t_prev,
                )));
            }
        }
    }
    Ok(series
        .into_iter()
        .map(|(cpu, fields)| CpuStat {
            cpu,
            utilization: PerfResult::Parallel(
                fields.into_iter().map(PerfResult::Sequential).collect(),
            ),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, total: [u64; 10], c0: [u64; 10], c1: [u64; 10]) -> (f64, String) {
        let line = |n: &str, v: [u64; 10]| {
            format!(
                "{n} {}\n",
                v.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        };
        let text = format!(
            "{}{}{}intr 12345 0 0\nctxt 999\nbtime 1700000000\nprocesses 42\n",
            line("cpu", total),
            line("cpu0", c0),
            line("cpu1", c1)
        );
        (t, text)
    }

    fn add(a: [u64; 10], b: [u64; 10]) -> [u64; 10] {
        let mut r = [0; 10];
        for i in 0..10 {
            r[i] = a[i] + b[i];
        }
        r
    }

    #[test]
    fn three_samples_exact_utilization() {
        //            user nice sys idle iow irq sirq steal guest gnice
        let c0_0 = [100, 0, 50, 1000, 5, 1, 2, 0, 0, 0];
        let c1_0 = [200, 10, 60, 900, 0, 0, 0, 0, 0, 0];
        // +1.0 s: cpu0 user+20 sys+10 irq+1 softirq+2 idle+67 ; cpu1 user+50 nice+5 idle+45
        let c0_1 = [120, 0, 60, 1067, 5, 2, 4, 0, 0, 0];
        let c1_1 = [250, 15, 60, 945, 0, 0, 0, 0, 0, 0];
        // +2.0 s: cpu0 user+10 steal+4 idle+186 ; cpu1 sys+30 idle+170 guest+7 (excluded)
        let c0_2 = [130, 0, 60, 1253, 5, 2, 4, 4, 0, 0];
        let c1_2 = [250, 15, 90, 1115, 0, 0, 0, 0, 7, 0];
        let samples = vec![
            sample(1000.0, add(c0_0, c1_0), c0_0, c1_0),
            sample(1001.0, add(c0_1, c1_1), c0_1, c1_1),
            sample(1003.0, add(c0_2, c1_2), c0_2, c1_2),
        ];
        let stats = parse_cpu_samples(&samples).unwrap();
        let names: Vec<&str> = stats.iter().map(|s| s.cpu.as_str()).collect();
        assert_eq!(names, ["cpu", "cpu0", "cpu1"]);
        let cpu0 = &stats[1].utilization;
        // cpu0 jiffies: (20+10+1+2) + (10+4) = 47 over [1000, 1003] → 47/3
        assert_eq!(cpu0.value(), 47.0);
        assert_eq!(cpu0.duration(), 3.0);
        assert!((cpu0.average() - 47.0 / 3.0).abs() < 1e-12);
        assert_eq!(cpu0.items().len(), 6);
        // user series of cpu0: 20 over 1 s at 1000, 10 over 2 s at 1001
        let user = &cpu0.items()[0];
        assert_eq!(user.items().len(), 2);
        assert_eq!(user.items()[0].value(), 20.0);
        assert_eq!(user.items()[0].start(), 1000.0);
        assert_eq!(user.items()[1].value(), 10.0);
        assert_eq!(user.items()[1].duration(), 2.0);
        assert_eq!(user.items()[1].start(), 1001.0);
        assert_eq!(cpu0.unit(), Some("time units"));
        // cpu1: 55 + 30 = 85 (guest 7 excluded) over 3 s
        assert_eq!(stats[2].utilization.value(), 85.0);
        // aggregate line is the sum: 132 over 3 s = 44 jiffies/s
        assert_eq!(stats[0].utilization.value(), 132.0);
        assert!((stats[0].utilization.average() - 44.0).abs() < 1e-12);
    }

    #[test]
    fn too_few_samples() {
        assert_eq!(
            parse_cpu_samples(&[]).unwrap_err(),
            CpuError::TooFewSamples(0)
        );
        let one = vec![(0.0, "cpu 1 2 3 4 5 6 7 8 9 10\n".to_string())];
        assert_eq!(
            parse_cpu_samples(&one).unwrap_err(),
            CpuError::TooFewSamples(1)
        );
    }

    #[test]
    fn counter_decrease_is_an_error() {
        let s = vec![
            (0.0, "cpu 100 0 0 0 0 0 0 0 0 0\n".to_string()),
            (1.0, "cpu 50 0 0 0 0 0 0 0 0 0\n".to_string()),
        ];
        assert!(matches!(
            parse_cpu_samples(&s).unwrap_err(),
            CpuError::CounterDecreased {
                field: "user",
                prev: 100,
                now: 50,
                ..
            }
        ));
    }

    #[test]
    fn time_must_increase() {
        let s = vec![
            (5.0, "cpu 1 0 0 0\n".to_string()),
            (5.0, "cpu 2 0 0 0\n".to_string()),
        ];
        assert!(matches!(
            parse_cpu_samples(&s).unwrap_err(),
            CpuError::TimeNotIncreasing { .. }
        ));
    }

    #[test]
    fn missing_and_extra_fields() {
        // old kernel: 7 fields (no steal/guest); new kernel with an 11th field is ignored
        let s = vec![
            (0.0, "cpu 10 0 10 100 0 1 1\n".to_string()),
            (2.0, "cpu 20 0 20 200 0 2 3 99 99 99 99\n".to_string()),
        ];
        let stats = parse_cpu_samples(&s).unwrap();
        // user+10 sys+10 irq+1 softirq+2 steal+99 (0→99) = 122 over 2 s
        assert_eq!(stats[0].utilization.value(), 122.0);
        assert_eq!(stats[0].utilization.average(), 61.0);
        let bad = vec![
            (0.0, "cpu 1 2\n".to_string()),
            (1.0, "cpu 1 2\n".to_string()),
        ];
        assert!(matches!(
            parse_cpu_samples(&bad).unwrap_err(),
            CpuError::BadLine { .. }
        ));
        let bad = vec![
            (0.0, "cpu 1 2 x 4\n".to_string()),
            (1.0, "cpu 1 2 3 4\n".to_string()),
        ];
        assert!(matches!(
            parse_cpu_samples(&bad).unwrap_err(),
            CpuError::BadLine { .. }
        ));
        let none = vec![(0.0, "intr 1\n".to_string()), (1.0, "intr 2\n".to_string())];
        assert_eq!(
            parse_cpu_samples(&none).unwrap_err(),
            CpuError::NoCpuLines(0)
        );
    }

    #[test]
    fn cpu_disappearing_is_an_error() {
        let s = vec![
            (0.0, "cpu 1 0 0 0\ncpu0 1 0 0 0\n".to_string()),
            (1.0, "cpu 2 0 0 0\n".to_string()),
        ];
        assert_eq!(
            parse_cpu_samples(&s).unwrap_err(),
            CpuError::MissingCpu {
                sample: 1,
                cpu: "cpu0".into()
            }
        );
    }
}
