//! One period's summary of a metric: sample count, sum, minimum, maximum
//! and a percentile sketch. Every coarser period is the merge of finer ones,
//! which is how the store rolls 1-second points into minutes, minutes into
//! 5 minutes and those into hours.

use crate::sketch::{get_varint, put_varint, Sketch};

#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    pub sample_count: f64,
    pub sum: f64,
    pub minimum: f64,
    pub maximum: f64,
    pub sketch: Sketch,
}

impl Aggregate {
    /// One value observed `count` times.
    pub fn of_value(value: f64, count: f64) -> Aggregate {
        let mut sketch = Sketch::new();
        sketch.add(value, count.round().clamp(0.0, u32::MAX as f64) as u32);
        Aggregate {
            sample_count: count,
            sum: value * count,
            minimum: value,
            maximum: value,
            sketch,
        }
    }

    /// A statistic set. Percentiles stay available only where CloudWatch
    /// keeps them: SampleCount 1, or Min equal to Max (the set is then the
    /// same value SampleCount times).
    pub fn of_statistic_set(sample_count: f64, sum: f64, minimum: f64, maximum: f64) -> Aggregate {
        let mut sketch = Sketch::new();
        if sample_count == 1.0 || minimum == maximum {
            sketch.add(
                minimum,
                sample_count.round().clamp(1.0, u32::MAX as f64) as u32,
            );
        } else {
            sketch.mark_unavailable();
        }
        Aggregate {
            sample_count,
            sum,
            minimum,
            maximum,
            sketch,
        }
    }

    pub fn merge(&mut self, other: &Aggregate) {
        self.sample_count += other.sample_count;
        self.sum += other.sum;
        self.minimum = self.minimum.min(other.minimum);
        self.maximum = self.maximum.max(other.maximum);
        self.sketch.merge(&other.sketch);
    }

    pub fn average(&self) -> f64 {
        if self.sample_count > 0.0 {
            self.sum / self.sample_count
        } else {
            0.0
        }
    }

    /// The percentile `p` in [0, 100], clamped to the period's range so that
    /// p0 and p100 are exact.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        if p <= 0.0 {
            return self.sketch.is_available().then_some(self.minimum);
        }
        if p >= 100.0 {
            return self.sketch.is_available().then_some(self.maximum);
        }
        self.sketch
            .quantile(p / 100.0)
            .map(|value| value.clamp(self.minimum, self.maximum))
    }

    pub fn heap_bytes(&self) -> usize {
        self.sketch.heap_bytes()
    }

    /// Encodes compactly: a single observation (count 1, min = max = sum)
    /// takes one float; anything else four.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let single =
            self.sample_count == 1.0 && self.minimum == self.maximum && self.sum == self.minimum;
        out.push(u8::from(single));
        if single {
            out.extend_from_slice(&self.minimum.to_le_bytes());
        } else {
            for value in [self.sample_count, self.sum, self.minimum, self.maximum] {
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
        self.sketch.encode(out);
    }

    pub fn decode(input: &mut &[u8]) -> Option<Aggregate> {
        let (&single, rest) = input.split_first()?;
        *input = rest;
        let mut float = || -> Option<f64> {
            let (bytes, rest) = input.split_first_chunk::<8>()?;
            *input = rest;
            Some(f64::from_le_bytes(*bytes))
        };
        let (sample_count, sum, minimum, maximum) = if single == 1 {
            let value = float()?;
            (1.0, value, value, value)
        } else {
            (float()?, float()?, float()?, float()?)
        };
        let sketch = Sketch::decode(input)?;
        Some(Aggregate {
            sample_count,
            sum,
            minimum,
            maximum,
            sketch,
        })
    }
}

/// Encodes a run of aggregates at bucket offsets (offsets ascending).
pub(crate) fn encode_points(points: &[(u32, &Aggregate)], out: &mut Vec<u8>) {
    put_varint(out, points.len() as u64);
    let mut previous = 0u32;
    for (offset, aggregate) in points {
        put_varint(out, (offset - previous) as u64);
        previous = *offset;
        aggregate.encode(out);
    }
}

pub(crate) fn decode_points(input: &mut &[u8]) -> Option<Vec<(u32, Aggregate)>> {
    let length = get_varint(input)? as usize;
    let mut points = Vec::with_capacity(length.min(4_096));
    let mut offset = 0u32;
    for _ in 0..length {
        offset = offset.checked_add(u32::try_from(get_varint(input)?).ok()?)?;
        points.push((offset, Aggregate::decode(input)?));
    }
    Some(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistic_sets_keep_percentiles_only_when_expandable() {
        assert!(Aggregate::of_statistic_set(1.0, 5.0, 5.0, 5.0)
            .percentile(50.0)
            .is_some());
        assert_eq!(
            Aggregate::of_statistic_set(4.0, 20.0, 5.0, 5.0).percentile(90.0),
            Some(5.0)
        );
        assert!(Aggregate::of_statistic_set(4.0, 20.0, 1.0, 9.0)
            .percentile(50.0)
            .is_none());
    }

    #[test]
    fn merge_and_round_trip() {
        let mut a = Aggregate::of_value(2.0, 1.0);
        a.merge(&Aggregate::of_value(6.0, 3.0));
        assert_eq!(a.sample_count, 4.0);
        assert_eq!(a.sum, 20.0);
        assert_eq!(a.average(), 5.0);
        assert_eq!((a.minimum, a.maximum), (2.0, 6.0));
        let mut bytes = Vec::new();
        encode_points(&[(3, &a), (7, &Aggregate::of_value(1.0, 1.0))], &mut bytes);
        let points = decode_points(&mut bytes.as_slice()).unwrap();
        assert_eq!(points[0], (3, a));
        assert_eq!(points[1].0, 7);
    }
}
