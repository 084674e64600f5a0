//! A bounded, mergeable quantile sketch (DDSketch's logarithmic buckets).
//!
//! A positive value `v` falls in bucket `i = ceil(ln v / ln γ)` with
//! `γ = (1 + α) / (1 − α)`; the bucket's representative `2γ^i / (γ + 1)` is
//! within a relative error `α` of every value in it, so a quantile read from
//! the sketch is within `α` (1%) of the exact quantile's value as long as no
//! buckets were collapsed. The sketch keeps at most `SKETCH_BUCKETS_MAX`
//! buckets; past that the lowest buckets are merged into one, which only
//! costs accuracy at the low end (as DDSketch does).
//!
//! CloudWatch gives no percentiles for a period that has a negative value,
//! or a statistic set it cannot expand (SampleCount > 1 with Min ≠ Max);
//! such a period's sketch is marked unavailable.

/// Relative accuracy of every quantile: 1%.
pub const SKETCH_RELATIVE_ACCURACY: f64 = 0.01;
/// Buckets a sketch may hold. With α = 1% the values from 1e-9 to 1e12 need
/// about 2,400 buckets; real metrics (percentages, latencies, bytes) need a
/// few hundred at most.
pub const SKETCH_BUCKETS_MAX: usize = 2_048;
/// Values below this count as zero (DDSketch's minimum indexable value).
const SKETCH_ZERO_BELOW: f64 = 1e-9;

fn gamma() -> f64 {
    (1.0 + SKETCH_RELATIVE_ACCURACY) / (1.0 - SKETCH_RELATIVE_ACCURACY)
}

fn bucket_of(value: f64) -> i16 {
    let index = (value.ln() / gamma().ln()).ceil();
    index.clamp(i16::MIN as f64, i16::MAX as f64) as i16
}

fn representative(bucket: i16) -> f64 {
    let gamma = gamma();
    2.0 * gamma.powi(bucket as i32) / (gamma + 1.0)
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sketch {
    zero_count: u32,
    /// Sorted by bucket index, counts > 0.
    buckets: Vec<(i16, u32)>,
    /// Percentiles cannot be given for this period (see the module's note).
    unavailable: bool,
}

impl Sketch {
    pub fn new() -> Self {
        Sketch::default()
    }

    /// A sketch that can give no percentiles.
    pub fn unavailable() -> Self {
        Sketch {
            unavailable: true,
            ..Sketch::default()
        }
    }

    pub fn is_available(&self) -> bool {
        !self.unavailable
    }

    pub fn count(&self) -> u64 {
        self.zero_count as u64 + self.buckets.iter().map(|(_, c)| *c as u64).sum::<u64>()
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<(i16, u32)>()
    }

    /// Adds `count` occurrences of `value`.
    pub fn add(&mut self, value: f64, count: u32) {
        if self.unavailable || count == 0 {
            return;
        }
        if value < 0.0 || !value.is_finite() {
            self.mark_unavailable();
            return;
        }
        if value < SKETCH_ZERO_BELOW {
            self.zero_count = self.zero_count.saturating_add(count);
            return;
        }
        let bucket = bucket_of(value);
        match self.buckets.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(at) => self.buckets[at].1 = self.buckets[at].1.saturating_add(count),
            Err(at) => {
                self.buckets.insert(at, (bucket, count));
                self.collapse_if_needed();
            }
        }
    }

    pub fn mark_unavailable(&mut self) {
        self.unavailable = true;
        self.zero_count = 0;
        self.buckets = Vec::new();
    }

    pub fn merge(&mut self, other: &Sketch) {
        if self.unavailable {
            return;
        }
        if other.unavailable {
            self.mark_unavailable();
            return;
        }
        self.zero_count = self.zero_count.saturating_add(other.zero_count);
        if other.buckets.is_empty() {
            return;
        }
        let mut merged = Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let (mut left, mut right) = (
            self.buckets.iter().peekable(),
            other.buckets.iter().peekable(),
        );
        loop {
            match (left.peek(), right.peek()) {
                (Some(a), Some(b)) if a.0 == b.0 => {
                    merged.push((a.0, a.1.saturating_add(b.1)));
                    left.next();
                    right.next();
                }
                (Some(a), Some(b)) if a.0 < b.0 => {
                    merged.push(**a);
                    left.next();
                }
                (Some(_), Some(b)) => {
                    merged.push(**b);
                    right.next();
                }
                (Some(a), None) => {
                    merged.push(**a);
                    left.next();
                }
                (None, Some(b)) => {
                    merged.push(**b);
                    right.next();
                }
                (None, None) => break,
            }
        }
        self.buckets = merged;
        self.collapse_if_needed();
    }

    fn collapse_if_needed(&mut self) {
        if self.buckets.len() <= SKETCH_BUCKETS_MAX {
            return;
        }
        let excess = self.buckets.len() - SKETCH_BUCKETS_MAX;
        let folded: u32 = self.buckets[..=excess]
            .iter()
            .fold(0u32, |sum, (_, c)| sum.saturating_add(*c));
        let into = self.buckets[excess].0;
        self.buckets.drain(..excess);
        self.buckets[0] = (into, folded);
    }

    /// The value at quantile `q` in [0, 1], or None when the sketch is empty
    /// or unavailable. Callers clamp it to the period's min and max.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.unavailable {
            return None;
        }
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * (total - 1) as f64;
        let mut seen = self.zero_count as f64;
        if seen > rank {
            return Some(0.0);
        }
        for (bucket, count) in &self.buckets {
            seen += *count as f64;
            if seen > rank {
                return Some(representative(*bucket));
            }
        }
        self.buckets
            .last()
            .map(|(bucket, _)| representative(*bucket))
    }

    /// Encodes as: flags byte, zero count, bucket count, then (delta-coded
    /// index, count) pairs, all as LEB128 varints.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.unavailable));
        if self.unavailable {
            return;
        }
        put_varint(out, self.zero_count as u64);
        put_varint(out, self.buckets.len() as u64);
        let mut previous = 0i32;
        for (bucket, count) in &self.buckets {
            put_varint(out, zigzag(*bucket as i32 - previous));
            put_varint(out, *count as u64);
            previous = *bucket as i32;
        }
    }

    pub fn decode(input: &mut &[u8]) -> Option<Sketch> {
        let (&flags, rest) = input.split_first()?;
        *input = rest;
        if flags == 1 {
            return Some(Sketch::unavailable());
        }
        let zero_count = u32::try_from(get_varint(input)?).ok()?;
        let length = get_varint(input)? as usize;
        if length > SKETCH_BUCKETS_MAX {
            return None;
        }
        let mut buckets = Vec::with_capacity(length);
        let mut previous = 0i32;
        for _ in 0..length {
            let bucket = previous.checked_add(unzigzag(get_varint(input)?))?;
            let count = u32::try_from(get_varint(input)?).ok()?;
            buckets.push((i16::try_from(bucket).ok()?, count));
            previous = bucket;
        }
        Some(Sketch {
            zero_count,
            buckets,
            unavailable: false,
        })
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(crate) fn get_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn zigzag(value: i32) -> u64 {
    ((value << 1) ^ (value >> 31)) as u32 as u64
}

fn unzigzag(value: u64) -> i32 {
    let value = value as u32;
    ((value >> 1) as i32) ^ -((value & 1) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut sketch = Sketch::new();
        let mut values: Vec<f64> = (1..=10_000).map(|i| (i as f64).powf(1.7) / 13.0).collect();
        for value in &values {
            sketch.add(*value, 1);
        }
        values.sort_by(f64::total_cmp);
        for q in [0.01, 0.1, 0.5, 0.9, 0.99, 0.999] {
            let exact = exact_quantile(&values, q);
            let estimate = sketch.quantile(q).unwrap();
            // The exact rank's neighbour may differ by one value; the error
            // bound holds against the value at the sketch's rank.
            let relative = (estimate - exact).abs() / exact;
            assert!(relative <= 0.0101 + 1e-3, "q={q}: {estimate} vs {exact}");
        }
    }

    #[test]
    fn merge_equals_adding_everything() {
        let (mut a, mut b, mut all) = (Sketch::new(), Sketch::new(), Sketch::new());
        for i in 0..500 {
            let v = i as f64 * 0.37;
            if i % 2 == 0 {
                a.add(v, 1)
            } else {
                b.add(v, 2)
            }
            all.add(v, if i % 2 == 0 { 1 } else { 2 });
        }
        a.merge(&b);
        assert_eq!(a, all);
    }

    #[test]
    fn negative_values_make_it_unavailable_and_it_stays_bounded() {
        let mut sketch = Sketch::new();
        sketch.add(-1.0, 1);
        assert!(sketch.quantile(0.5).is_none());
        let mut wide = Sketch::new();
        for exponent in -300..300 {
            for step in 0..10 {
                wide.add(10f64.powi(exponent) * (1.0 + step as f64 / 10.0), 1);
            }
        }
        assert!(wide.bucket_count() <= SKETCH_BUCKETS_MAX);
        assert_eq!(wide.count(), 6_000);
    }

    #[test]
    fn encodes_and_decodes() {
        let mut sketch = Sketch::new();
        for v in [0.0, 0.5, 3.0, 3.0, 99.9, 1e9] {
            sketch.add(v, 3);
        }
        let mut bytes = Vec::new();
        sketch.encode(&mut bytes);
        let mut input = bytes.as_slice();
        assert_eq!(Sketch::decode(&mut input), Some(sketch));
        assert!(input.is_empty());
    }
}
