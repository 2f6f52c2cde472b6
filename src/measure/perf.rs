//! Result algebra (upstream `RecipeCommon/Perf/Results.py`).
//!
//! A measurement is a tree: [`PerfInterval`] leaves (a value accumulated over a duration
//! starting at a timestamp) grouped into [`PerfResult::Sequential`] lists (items one after
//! another in time: durations add up) and [`PerfResult::Parallel`] lists (items concurrent:
//! duration is the covered wall-clock span). Every node has `value`, `duration`, `average`
//! (= value/duration, the time-weighted mean of a list) and `std_deviation` (sample stdev of
//! the items' averages).

use serde_json::{json, Value};

/// A time slice left nothing of a result (upstream `EmptySlice`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("time slice [{start}, {end}] does not overlap the measured data")]
pub struct EmptySlice {
    pub start: f64,
    pub end: f64,
}

/// Errors from building result lists.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PerfError {
    /// Items of one list must share one unit (upstream `PerfList` check).
    #[error("unit mismatch in perf result list: expected '{expected}', found '{found}'")]
    UnitMismatch { expected: String, found: String },
}

/// One measured interval: `value` (e.g. bits) accumulated over `duration` seconds from
/// `timestamp` (Unix seconds).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PerfInterval {
    pub value: f64,
    pub duration: f64,
    pub unit: String,
    pub timestamp: f64,
}

impl PerfInterval {
    pub fn new(value: f64, duration: f64, unit: impl Into<String>, timestamp: f64) -> Self {
        PerfInterval {
            value,
            duration,
            unit: unit.into(),
            timestamp,
        }
    }
    pub fn start(&self) -> f64 {
        self.timestamp
    }
    pub fn end(&self) -> f64 {
        self.timestamp + self.duration
    }

    /// Clip to `[start, end]` and scale the value by the kept fraction of the duration.
    /// No overlap (or `end ≤ start`) → [`EmptySlice`]. A zero-duration interval strictly inside the window is
    /// kept unchanged (upstream would divide 0 by 0).
    pub fn time_slice(&self, start: f64, end: f64) -> Result<PerfInterval, EmptySlice> {
        if end <= start || end <= self.start() || start >= self.end() {
            return Err(EmptySlice { start, end });
        }
        if self.duration == 0.0 {
            return Ok(self.clone());
        }
        let new_start = self.start().max(start);
        let new_end = self.end().min(end);
        let new_duration = new_end - new_start;
        Ok(PerfInterval {
            value: self.value * (new_duration / self.duration),
            duration: new_duration,
            unit: self.unit.clone(),
            timestamp: new_start,
        })
    }
}

/// A measurement tree node.
#[derive(Debug, Clone, PartialEq)]
pub enum PerfResult {
    Interval(PerfInterval),
    /// Items one after another in time.
    Sequential(Vec<PerfResult>),
    /// Items running concurrently.
    Parallel(Vec<PerfResult>),
}

/// `value/duration`, with upstream's zero-duration rule: ±inf by the sign of the value.
fn ratio(value: f64, duration: f64) -> f64 {
    if duration == 0.0 {
        if value >= 0.0 {
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        }
    } else {
        value / duration
    }
}

/// Σ values as Python ≥ 3.12's `sum()` adds floats (upstream LNST requires it): Neumaier's
/// compensated summation, the compensation added at the end unless it is not finite (an
/// infinite or overflowed sum stays as it is, never NaN). A plain left-to-right sum loses the
/// small figures next to large ones: `[1e100, 1.0, -1e100]` sums to 0 instead of 1, and the
/// spread between two near-equal streams differed from upstream's by up to 4e-7.
pub fn neumaier_sum(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut sum = 0.0_f64;
    let mut c = 0.0_f64;
    for x in values {
        let t = sum + x;
        if sum.abs() >= x.abs() {
            c += (sum - t) + x;
        } else {
            c += (x - t) + sum;
        }
        sum = t;
    }
    if c != 0.0 && c.is_finite() {
        sum += c;
    }
    sum
}

/// Sample standard deviation (n−1); 0.0 for fewer than two values (upstream Common/Utils.py).
pub fn sample_std_deviation(values: &[f64]) -> f64 {
    if values.len() <= 1 {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (ss / (n - 1.0)).sqrt()
}

/// JSON number, or `null` for NaN/±inf (JSON has no such numbers).
pub fn num(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

fn check_units(items: &[PerfResult]) -> Result<(), PerfError> {
    let mut expected: Option<&str> = None;
    for item in items {
        if let Some(u) = item.unit() {
            match expected {
                None => expected = Some(u),
                Some(e) if e != u => {
                    return Err(PerfError::UnitMismatch {
                        expected: e.to_string(),
                        found: u.to_string(),
                    })
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

impl PerfResult {
    pub fn interval(value: f64, duration: f64, unit: impl Into<String>, timestamp: f64) -> Self {
        PerfResult::Interval(PerfInterval::new(value, duration, unit, timestamp))
    }

    /// A sequential list; all items must share one unit.
    pub fn sequential(items: Vec<PerfResult>) -> Result<Self, PerfError> {
        check_units(&items)?;
        Ok(PerfResult::Sequential(items))
    }

    /// A parallel list; all items must share one unit.
    pub fn parallel(items: Vec<PerfResult>) -> Result<Self, PerfError> {
        check_units(&items)?;
        Ok(PerfResult::Parallel(items))
    }

    /// Upstream placeholder for a failed job: `Parallel[Sequential[PerfInterval(0, 1, unit, now)]]`.
    pub fn failed(unit: &str, now: f64) -> Self {
        PerfResult::Parallel(vec![PerfResult::Sequential(vec![PerfResult::interval(
            0.0, 1.0, unit, now,
        )])])
    }

    /// The list items (empty for an interval).
    pub fn items(&self) -> &[PerfResult] {
        match self {
            PerfResult::Interval(_) => &[],
            PerfResult::Sequential(v) | PerfResult::Parallel(v) => v,
        }
    }

    /// `true` for an empty list (upstream: a falsy `PerfList`). An interval is never empty.
    pub fn is_empty_list(&self) -> bool {
        !matches!(self, PerfResult::Interval(_)) && self.items().is_empty()
    }

    /// Σ values.
    pub fn value(&self) -> f64 {
        match self {
            PerfResult::Interval(i) => i.value,
            PerfResult::Sequential(v) | PerfResult::Parallel(v) => {
                neumaier_sum(v.iter().map(|x| x.value()))
            }
        }
    }

    /// Interval: its duration; Sequential: Σ durations; Parallel: max(end) − min(start)
    /// (0 for an empty list).
    pub fn duration(&self) -> f64 {
        match self {
            PerfResult::Interval(i) => i.duration,
            PerfResult::Sequential(v) => neumaier_sum(v.iter().map(|x| x.duration())),
            PerfResult::Parallel(v) => {
                if v.is_empty() {
                    0.0
                } else {
                    self.end() - self.start()
                }
            }
        }
    }

    /// Interval: timestamp; Sequential: first item's start; Parallel: min start.
    /// An empty list has NaN (upstream raises IndexError/ValueError).
    pub fn start(&self) -> f64 {
        match self {
            PerfResult::Interval(i) => i.start(),
            PerfResult::Sequential(v) => v.first().map_or(f64::NAN, |x| x.start()),
            PerfResult::Parallel(v) => v
                .iter()
                .map(|x| x.start())
                .filter(|x| !x.is_nan())
                .fold(f64::NAN, f64::min),
        }
    }

    /// Interval: timestamp + duration; Sequential: last item's end; Parallel: max end.
    pub fn end(&self) -> f64 {
        match self {
            PerfResult::Interval(i) => i.end(),
            PerfResult::Sequential(v) => v.last().map_or(f64::NAN, |x| x.end()),
            PerfResult::Parallel(v) => v
                .iter()
                .map(|x| x.end())
                .filter(|x| !x.is_nan())
                .fold(f64::NAN, f64::max),
        }
    }

    /// value/duration; a zero duration gives +inf (value ≥ 0) or −inf, like upstream.
    pub fn average(&self) -> f64 {
        ratio(self.value(), self.duration())
    }

    /// Sample stdev of the items' averages; 0 for an interval and for ≤ 1 item.
    pub fn std_deviation(&self) -> f64 {
        let avgs: Vec<f64> = self.items().iter().map(|x| x.average()).collect();
        sample_std_deviation(&avgs)
    }

    /// std_deviation / average × 100. With a zero average: 0 if the deviation is 0, else +inf.
    pub fn deviation_percentage(&self) -> f64 {
        let avg = self.average();
        let std = self.std_deviation();
        if avg == 0.0 {
            if std == 0.0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            std / avg * 100.0
        }
    }

    /// The unit: the interval's, or the first item's that has one (None for an empty list).
    pub fn unit(&self) -> Option<&str> {
        match self {
            PerfResult::Interval(i) => Some(i.unit.as_str()),
            PerfResult::Sequential(v) | PerfResult::Parallel(v) => v.iter().find_map(|x| x.unit()),
        }
    }

    /// Restrict to `[start, end]`: intervals are clipped and scaled, lists slice every item
    /// and drop the items that end up empty; nothing left → [`EmptySlice`].
    pub fn time_slice(&self, start: f64, end: f64) -> Result<PerfResult, EmptySlice> {
        match self {
            PerfResult::Interval(i) => Ok(PerfResult::Interval(i.time_slice(start, end)?)),
            PerfResult::Sequential(v) => Ok(PerfResult::Sequential(slice_items(v, start, end)?)),
            PerfResult::Parallel(v) => Ok(PerfResult::Parallel(slice_items(v, start, end)?)),
        }
    }

    /// The full tree, so every figure can be traced back to the measured intervals.
    /// Intervals: `{"value","duration","unit","timestamp"}`; lists:
    /// `{"kind","value","duration","unit","average","std_deviation","start","end","items"}`.
    /// Non-finite numbers become `null`.
    pub fn to_json(&self) -> Value {
        match self {
            PerfResult::Interval(i) => json!({
                "value": num(i.value),
                "duration": num(i.duration),
                "unit": i.unit,
                "timestamp": num(i.timestamp),
            }),
            PerfResult::Sequential(v) | PerfResult::Parallel(v) => {
                let kind = if matches!(self, PerfResult::Sequential(_)) {
                    "sequential"
                } else {
                    "parallel"
                };
                json!({
                    "kind": kind,
                    "value": num(self.value()),
                    "duration": num(self.duration()),
                    "unit": self.unit(),
                    "average": num(self.average()),
                    "std_deviation": num(self.std_deviation()),
                    "start": num(self.start()),
                    "end": num(self.end()),
                    "items": v.iter().map(|x| x.to_json()).collect::<Vec<_>>(),
                })
            }
        }
    }
}

fn slice_items(items: &[PerfResult], start: f64, end: f64) -> Result<Vec<PerfResult>, EmptySlice> {
    let kept: Vec<PerfResult> = items
        .iter()
        .filter_map(|x| x.time_slice(start, end).ok())
        .collect();
    if kept.is_empty() {
        Err(EmptySlice { start, end })
    } else {
        Ok(kept)
    }
}

/// `a.average / b.average × 100 − 100` (upstream `result_averages_difference`).
pub fn result_averages_difference(a: f64, b: f64) -> f64 {
    a / b * 100.0 - 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(value: f64, duration: f64, ts: f64) -> PerfResult {
        PerfResult::interval(value, duration, "bits", ts)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn interval_basics() {
        let i = iv(100.0, 4.0, 10.0);
        assert_eq!(i.start(), 10.0);
        assert_eq!(i.end(), 14.0);
        assert_eq!(i.average(), 25.0);
        assert_eq!(i.std_deviation(), 0.0);
        assert_eq!(i.unit(), Some("bits"));
    }

    #[test]
    fn zero_duration_gives_infinity() {
        assert_eq!(iv(5.0, 0.0, 0.0).average(), f64::INFINITY);
        assert_eq!(iv(0.0, 0.0, 0.0).average(), f64::INFINITY);
        assert_eq!(iv(-5.0, 0.0, 0.0).average(), f64::NEG_INFINITY);
    }

    #[test]
    fn interval_slice_clips_and_scales() {
        // [10, 14] with value 100, slice [11, 20] keeps 3 s of 4 → 75.
        let s = iv(100.0, 4.0, 10.0).time_slice(11.0, 20.0).unwrap();
        let PerfResult::Interval(i) = s else {
            panic!("not an interval")
        };
        assert_eq!(i.timestamp, 11.0);
        assert_eq!(i.duration, 3.0);
        assert_eq!(i.value, 75.0);
        // both ends clipped: [11, 12.5] → 1.5 s → 37.5
        let s = iv(100.0, 4.0, 10.0).time_slice(11.0, 12.5).unwrap();
        assert_eq!(s.value(), 37.5);
        assert_eq!(s.duration(), 1.5);
        // the slice average equals the interval average
        assert_eq!(s.average(), 25.0);
    }

    #[test]
    fn interval_slice_without_overlap_is_empty() {
        assert!(iv(100.0, 4.0, 10.0).time_slice(14.0, 20.0).is_err());
        assert!(iv(100.0, 4.0, 10.0).time_slice(0.0, 10.0).is_err());
        assert!(iv(100.0, 4.0, 10.0).time_slice(13.0, 12.0).is_err());
    }

    #[test]
    fn sums_like_python_312() {
        // CPython 3.12's sum() (Python/bltinmodule.c, builtin_sum_impl) gives these; its
        // What's New names sum([0.1] * 10) == 1.0, where 3.11 and a plain sum give 0.999….
        assert_eq!(neumaier_sum([1e100, 1.0, -1e100]), 1.0);
        assert_eq!(neumaier_sum([0.1; 10]), 1.0);
        assert_eq!([0.1f64; 10].iter().sum::<f64>(), 0.9999999999999999);
        assert_eq!(neumaier_sum([1e308, 1e308]), f64::INFINITY);
        assert_eq!(neumaier_sum([f64::INFINITY, 1.0]), f64::INFINITY);
        assert_eq!(neumaier_sum([-0.0]), 0.0);
        assert_eq!(neumaier_sum([]), 0.0);
        // Two near-equal streams whose bits differ in the last digits: the list value is
        // exact (both sums land on the correctly rounded result).
        let a = 9_411_307_022.4 * 3.000037;
        let b = 9_411_307_022.400_001 * 3.000037;
        let items = vec![iv(a, 3.000037, 0.0), iv(b, 3.000037, 0.0), iv(-a, 1.0, 0.0)];
        let p = PerfResult::Parallel(items);
        assert_eq!(p.value(), neumaier_sum([a, b, -a]));
        assert_eq!(p.value(), b);
        // A sequential list's duration is summed the same way.
        let s = PerfResult::Sequential(vec![iv(0.0, 0.1, 0.0); 10]);
        assert_eq!(s.duration(), 1.0);
    }

    #[test]
    fn sequential_value_duration_average() {
        // 3 one-second-ish intervals: value 10+20+60 = 90 over 1+2+3 = 6 s → 15
        let s = PerfResult::sequential(vec![
            iv(10.0, 1.0, 0.0),
            iv(20.0, 2.0, 1.0),
            iv(60.0, 3.0, 3.0),
        ])
        .unwrap();
        assert_eq!(s.value(), 90.0);
        assert_eq!(s.duration(), 6.0);
        assert_eq!(s.average(), 15.0);
        assert_eq!(s.start(), 0.0);
        assert_eq!(s.end(), 6.0);
        // item averages 10, 10, 20: mean 40/3, sample variance ((−10/3)²·2 + (20/3)²)/2 = 100/3
        assert!(close(s.std_deviation(), (100.0f64 / 3.0).sqrt()));
        assert!(close(
            s.deviation_percentage(),
            (100.0f64 / 3.0).sqrt() / 15.0 * 100.0
        ));
    }

    #[test]
    fn parallel_value_duration_average() {
        // two concurrent streams [0,2] and [1,4]: value 30, wall span 4 s → 7.5
        let a = PerfResult::sequential(vec![iv(10.0, 1.0, 0.0), iv(10.0, 1.0, 1.0)]).unwrap();
        let b = PerfResult::sequential(vec![iv(10.0, 3.0, 1.0)]).unwrap();
        let p = PerfResult::parallel(vec![a, b]).unwrap();
        assert_eq!(p.value(), 30.0);
        assert_eq!(p.start(), 0.0);
        assert_eq!(p.end(), 4.0);
        assert_eq!(p.duration(), 4.0);
        assert_eq!(p.average(), 7.5);
        // item averages 10 and 10/3 → stdev of two values = |a−b|/√2
        assert!(close(p.std_deviation(), (10.0 - 10.0 / 3.0) / 2f64.sqrt()));
    }

    #[test]
    fn sample_stdev_uses_n_minus_one() {
        // 2,4,4,4,5,5,7,9: population stdev 2, sample stdev sqrt(32/7)
        let v = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert!(close(sample_std_deviation(&v), (32.0f64 / 7.0).sqrt()));
        assert_eq!(sample_std_deviation(&[3.0]), 0.0);
        assert_eq!(sample_std_deviation(&[]), 0.0);
    }

    #[test]
    fn time_weighted_aggregate_of_two_iterations() {
        // iteration 1: 10 s at 9 Gbit/s; iteration 2: 5 s at 6 Gbit/s.
        let it1 = PerfResult::Parallel(vec![PerfResult::Sequential(vec![iv(90e9, 10.0, 100.0)])]);
        let it2 = PerfResult::Parallel(vec![PerfResult::Sequential(vec![iv(30e9, 5.0, 200.0)])]);
        let agg = PerfResult::sequential(vec![it1, it2]).unwrap();
        // Σbits / Σduration = 120e9 / 15 = 8e9 (not the plain mean 7.5e9)
        assert!(close(agg.average(), 8e9));
        // ± = sample stdev of {9e9, 6e9} = 3e9/√2
        assert!(close(agg.std_deviation(), 3e9 / 2f64.sqrt()));
        assert!(close(
            agg.deviation_percentage(),
            3e9 / 2f64.sqrt() / 8e9 * 100.0
        ));
    }

    #[test]
    fn unit_mismatch_is_rejected() {
        let e = PerfResult::sequential(vec![
            iv(1.0, 1.0, 0.0),
            PerfResult::interval(1.0, 1.0, "cpu_percent", 1.0),
        ])
        .unwrap_err();
        assert_eq!(
            e,
            PerfError::UnitMismatch {
                expected: "bits".into(),
                found: "cpu_percent".into()
            }
        );
        let nested = PerfResult::Sequential(vec![PerfResult::interval(1.0, 1.0, "x", 0.0)]);
        assert!(PerfResult::parallel(vec![nested, iv(1.0, 1.0, 0.0)]).is_err());
    }

    #[test]
    fn list_slice_drops_empty_items() {
        let s = PerfResult::Sequential(vec![
            iv(10.0, 1.0, 0.0),
            iv(20.0, 1.0, 1.0),
            iv(30.0, 1.0, 2.0),
        ]);
        // [1.5, 10]: first dropped, second halved, third whole
        let t = s.time_slice(1.5, 10.0).unwrap();
        assert_eq!(t.items().len(), 2);
        assert_eq!(t.value(), 10.0 + 30.0);
        assert_eq!(t.duration(), 1.5);
        assert_eq!(t.start(), 1.5);
        assert!(s.time_slice(5.0, 10.0).is_err());
        // nested: a parallel whose one stream falls outside keeps the other
        let p = PerfResult::Parallel(vec![
            PerfResult::Sequential(vec![iv(10.0, 1.0, 0.0)]),
            PerfResult::Sequential(vec![iv(10.0, 1.0, 5.0)]),
        ]);
        let t = p.time_slice(4.0, 10.0).unwrap();
        assert_eq!(t.items().len(), 1);
        assert_eq!(t.start(), 5.0);
    }

    #[test]
    fn failed_placeholder_shape() {
        let f = PerfResult::failed("bits", 1000.0);
        assert_eq!(f.value(), 0.0);
        assert_eq!(f.duration(), 1.0);
        assert_eq!(f.start(), 1000.0);
        assert_eq!(f.items().len(), 1);
        assert_eq!(f.items()[0].items().len(), 1);
        assert_eq!(f.unit(), Some("bits"));
    }

    #[test]
    fn empty_list_behaviour() {
        let e = PerfResult::Sequential(vec![]);
        assert!(e.is_empty_list());
        assert_eq!(e.value(), 0.0);
        assert_eq!(e.duration(), 0.0);
        assert!(e.start().is_nan());
        assert_eq!(e.unit(), None);
        assert!(e.time_slice(0.0, 1.0).is_err());
        assert_eq!(PerfResult::Parallel(vec![]).duration(), 0.0);
    }

    #[test]
    fn json_tree() {
        let s = PerfResult::Sequential(vec![iv(10.0, 1.0, 0.0), iv(30.0, 1.0, 1.0)]);
        let j = s.to_json();
        assert_eq!(j["kind"], "sequential");
        assert_eq!(j["average"], 20.0);
        assert_eq!(j["start"], 0.0);
        assert_eq!(j["end"], 2.0);
        assert_eq!(j["items"][1]["value"], 30.0);
        assert_eq!(j["items"][1]["timestamp"], 1.0);
        assert_eq!(j["items"][1]["unit"], "bits");
        assert!(close(
            j["std_deviation"].as_f64().unwrap(),
            20.0 / 2f64.sqrt()
        ));
        assert_eq!(iv(1.0, 0.0, 0.0).to_json()["duration"], 0.0);
        assert!(PerfResult::Parallel(vec![iv(1.0, 0.0, 0.0)]).to_json()["average"].is_null());
    }

    #[test]
    fn deviation_percentage_zero_average() {
        let z = PerfResult::Sequential(vec![iv(0.0, 1.0, 0.0), iv(0.0, 1.0, 1.0)]);
        assert_eq!(z.deviation_percentage(), 0.0);
    }

    #[test]
    fn averages_difference() {
        assert!(close(result_averages_difference(96.79, 100.0), -3.21));
    }
}
