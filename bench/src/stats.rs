//! Interleaved pairs and their summary: the median ratio with its min and max, the absolute
//! numbers for the record, and the load average around each pair so noisy runs are flagged.

use serde_json::{Value, json};

use crate::stack::loadavg;

/// The p-th percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// A load average above this (1-minute, on 2 cores, our own load included) means someone else
/// was busy too.
const NOISY_LOAD: f64 = 4.0;
/// Ratios this far apart within one measurement mean the machine was not steady.
const NOISY_SPREAD: f64 = 1.5;

/// The pairs of one measurement. `ours` and `baseline` are in the measurement's unit; the ratio
/// is ours / baseline.
#[derive(Debug, Default)]
pub struct Pairs {
    pub unit: &'static str,
    pub ours: Vec<f64>,
    pub baseline: Vec<f64>,
    pub load: Vec<(f64, f64)>,
    pub details: Vec<Value>,
}

impl Pairs {
    pub fn new(unit: &'static str) -> Self {
        Self { unit, ..Self::default() }
    }

    /// Marks the start of a pair (records the load average).
    pub fn begin(&mut self) -> f64 {
        loadavg()[0]
    }

    pub fn push(&mut self, load_before: f64, baseline: f64, ours: f64, detail: Value) {
        self.baseline.push(baseline);
        self.ours.push(ours);
        self.load.push((load_before, loadavg()[0]));
        self.details.push(detail);
    }

    pub fn ratios(&self) -> Vec<f64> {
        self.ours.iter().zip(&self.baseline).map(|(o, b)| o / b).collect()
    }

    pub fn ratio_median(&self) -> f64 {
        median(&self.ratios())
    }

    pub fn noisy(&self) -> bool {
        let r = self.ratios();
        let spread = max(&r) / min(&r);
        self.load.iter().any(|(a, b)| a.max(*b) > NOISY_LOAD) || spread > NOISY_SPREAD
    }

    /// The summary every scenario reports.
    pub fn json(&self) -> Value {
        let r = self.ratios();
        json!({
            "ratio_median": median(&r),
            "ratio_min": min(&r),
            "ratio_max": max(&r),
            "ratios": r,
            "unit": self.unit,
            "ours": {"median": median(&self.ours), "min": min(&self.ours), "max": max(&self.ours), "values": self.ours},
            "baseline": {"median": median(&self.baseline), "min": min(&self.baseline), "max": max(&self.baseline), "values": self.baseline},
            "loadavg_1m_before_after": self.load,
            "noisy": self.noisy(),
            "pairs": self.details,
        })
    }
}
