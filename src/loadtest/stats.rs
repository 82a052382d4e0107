//! Latency histograms: HDR histograms (constant memory, 3 significant
//! digits), shipped from worker to parent as their recorded `(value, count)`
//! pairs, so the parent's percentiles are over every sample of every worker
//! rather than an average of averages.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest value recorded: one hour in microseconds. Larger values are clamped.
const HIGHEST: u64 = 3_600_000_000;

/// A histogram's recorded values as `(value, count)` pairs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct HistData(pub Vec<(u64, u64)>);

/// An HDR histogram of non-negative integers.
#[derive(Clone, Debug)]
pub(crate) struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    pub(crate) fn new() -> Self {
        // The bounds and digits are constants that hdrhistogram accepts.
        match Histogram::new_with_bounds(1, HIGHEST, 3) {
            Ok(h) => Self(h),
            Err(_) => unreachable!("constant histogram bounds are valid"),
        }
    }

    pub(crate) fn record(&mut self, value: u64) {
        self.0.saturating_record(value.min(HIGHEST));
    }

    fn record_n(&mut self, value: u64, count: u64) {
        // Values come from our own workers' histograms, so they are in range;
        // clamp anyway rather than trust a pipe.
        if self.0.record_n(value.min(HIGHEST), count).is_err() {
            tracing::warn!(value, count, "a histogram sample out of range was dropped");
        }
    }

    pub(crate) fn add(&mut self, other: &Hist) {
        if self.0.add(&other.0).is_err() {
            tracing::warn!("histograms of different shape; samples dropped");
        }
    }

    pub(crate) fn merge_data(&mut self, data: &HistData) {
        for &(v, c) in &data.0 {
            self.record_n(v, c);
        }
    }

    pub(crate) fn data(&self) -> HistData {
        HistData(
            self.0
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    pub(crate) fn len(&self) -> u64 {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        (!self.is_empty()).then(|| self.0.value_at_quantile(q))
    }

    /// The smallest value recorded.
    pub(crate) fn min(&self) -> Option<u64> {
        (!self.is_empty()).then(|| self.0.min())
    }

    /// The usual percentiles, scaled by `1 / divisor` (1000 turns
    /// microseconds into milliseconds).
    pub(crate) fn percentiles(&self, divisor: f64) -> Percentiles {
        let q = |q: f64| self.quantile(q).map(|v| round3(v as f64 / divisor));
        Percentiles {
            count: self.len(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: (!self.is_empty()).then(|| round3(self.0.max() as f64 / divisor)),
            mean: (!self.is_empty()).then(|| round3(self.0.mean() / divisor)),
        }
    }
}

/// Percentiles as they appear in the report; `null` when nothing was recorded.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Percentiles {
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_histograms_merge_exactly() {
        let mut a = Hist::new();
        let mut b = Hist::new();
        for v in 1..=900u64 {
            a.record(v * 1000);
        }
        for v in 901..=1000u64 {
            b.record(v * 1000);
        }
        let mut merged = Hist::new();
        merged.merge_data(&a.data());
        merged.merge_data(&b.data());
        assert_eq!(merged.len(), 1000);
        let p = merged.percentiles(1000.0);
        assert_eq!(p.count, 1000);
        let p99 = p.p99.unwrap();
        assert!((989.0..=991.0).contains(&p99), "{p99}");
        assert!((p.max.unwrap() - 1000.0).abs() < 1.0);
    }

    #[test]
    fn empty_has_no_percentiles() {
        let p = Hist::new().percentiles(1.0);
        assert_eq!(p.p99, None);
        assert_eq!(p.count, 0);
    }
}
