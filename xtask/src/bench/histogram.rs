//! A log-linear latency histogram: fixed memory whatever the request count,
//! so a long benchmark run cannot grow the generator's memory.

use std::time::Duration;

/// Each power of two is split into `2^(SUB_BUCKET_BITS - 1)` buckets, so a
/// recorded value is off by at most 1/32 (about 3%) of itself.
const SUB_BUCKET_BITS: u32 = 6;
const HALF_BUCKETS: u64 = 1 << (SUB_BUCKET_BITS - 1);
/// Enough buckets for any `u64` nanosecond count.
const BUCKETS: usize = ((64 - SUB_BUCKET_BITS + 2) as usize) * HALF_BUCKETS as usize;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

fn bucket_of(nanos: u64) -> usize {
    if nanos < (1 << SUB_BUCKET_BITS) {
        return nanos as usize;
    }
    let most_significant_bit = 63 - nanos.leading_zeros();
    let shift = most_significant_bit - (SUB_BUCKET_BITS - 1);
    let mantissa = nanos >> shift;
    (u64::from(shift) * HALF_BUCKETS + mantissa) as usize
}

/// The middle of the values that fall into `bucket`.
fn value_of(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < (1 << SUB_BUCKET_BITS) {
        return bucket;
    }
    let shift = bucket / HALF_BUCKETS - 1;
    let mantissa = bucket - shift * HALF_BUCKETS;
    (mantissa << shift) + (1 << shift) / 2
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(nanos)] += 1;
        self.total += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    /// The latency below which a fraction `quantile` of the recorded ones lie,
    /// in milliseconds; zero when nothing was recorded.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((quantile * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return value_of(bucket) as f64 / 1e6;
            }
        }
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_close_to_the_value() {
        let mut previous = 0;
        for nanos in [
            0u64,
            1,
            63,
            64,
            65,
            127,
            128,
            1_000,
            123_456,
            10_000_000_000,
            u64::MAX,
        ] {
            let bucket = bucket_of(nanos);
            assert!(bucket < BUCKETS, "{nanos} -> {bucket}");
            assert!(bucket >= previous);
            previous = bucket;
            let value = value_of(bucket) as f64;
            assert!(
                (value - nanos as f64).abs() <= nanos as f64 / 30.0 + 1.0,
                "{nanos} -> {value}"
            );
        }
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let mut histogram = Histogram::default();
        for micros in 1..=1000u64 {
            histogram.record(Duration::from_micros(micros));
        }
        let p50 = histogram.quantile_ms(0.5);
        let p99 = histogram.quantile_ms(0.99);
        assert!((p50 - 0.5).abs() < 0.02, "{p50}");
        assert!((p99 - 0.99).abs() < 0.04, "{p99}");
    }
}
