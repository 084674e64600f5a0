//! Statistics: CloudWatch's five and percentiles (`p90`, `p99.9`).

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Statistic {
    SampleCount,
    Average,
    Sum,
    Minimum,
    Maximum,
    /// A percentile in [0, 100].
    Percentile(f64),
}

impl Statistic {
    /// One of the five standard statistics, by CloudWatch's name.
    pub fn parse_standard(text: &str) -> Option<Statistic> {
        Some(match text {
            "SampleCount" => Statistic::SampleCount,
            "Average" => Statistic::Average,
            "Sum" => Statistic::Sum,
            "Minimum" => Statistic::Minimum,
            "Maximum" => Statistic::Maximum,
            _ => return None,
        })
    }

    /// A percentile as ExtendedStatistic takes it: `p` then a number from 0
    /// to 100 with at most two decimals (`p0.0`, `p50`, `p99.99`, `p100`).
    pub fn parse_percentile(text: &str) -> Option<Statistic> {
        let number = text.strip_prefix('p')?;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return None;
        }
        if let Some((_, decimals)) = number.split_once('.') {
            if decimals.is_empty() || decimals.len() > 2 {
                return None;
            }
        }
        let value: f64 = number.parse().ok()?;
        (0.0..=100.0)
            .contains(&value)
            .then_some(Statistic::Percentile(value))
    }

    /// Any statistic a MetricStat's `Stat` may name.
    pub fn parse(text: &str) -> Option<Statistic> {
        Self::parse_standard(text).or_else(|| Self::parse_percentile(text))
    }

    pub fn is_percentile(self) -> bool {
        matches!(self, Statistic::Percentile(_))
    }

    /// The statistic of one period's aggregate, or None where CloudWatch
    /// has no value (a percentile of a period whose sketch is unavailable).
    pub fn of(self, aggregate: &Aggregate) -> Option<f64> {
        match self {
            Statistic::SampleCount => Some(aggregate.sample_count),
            Statistic::Average => Some(aggregate.average()),
            Statistic::Sum => Some(aggregate.sum),
            Statistic::Minimum => Some(aggregate.minimum),
            Statistic::Maximum => Some(aggregate.maximum),
            Statistic::Percentile(p) => aggregate.percentile(p),
        }
    }

    pub fn name(self) -> String {
        match self {
            Statistic::SampleCount => "SampleCount".into(),
            Statistic::Average => "Average".into(),
            Statistic::Sum => "Sum".into(),
            Statistic::Minimum => "Minimum".into(),
            Statistic::Maximum => "Maximum".into(),
            Statistic::Percentile(p) => {
                if p.fract() == 0.0 {
                    format!("p{p:.0}")
                } else {
                    format!("p{p}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_percentiles_as_cloudwatch_spells_them() {
        assert_eq!(Statistic::parse("p99"), Some(Statistic::Percentile(99.0)));
        assert_eq!(
            Statistic::parse("p99.99"),
            Some(Statistic::Percentile(99.99))
        );
        assert_eq!(Statistic::parse("p0.0"), Some(Statistic::Percentile(0.0)));
        assert_eq!(Statistic::parse("p100"), Some(Statistic::Percentile(100.0)));
        for bad in ["p101", "p", "p9.999", "P90", "p-1", "p1.", "tm90", "Avg"] {
            assert_eq!(Statistic::parse(bad), None, "{bad}");
        }
        assert_eq!(Statistic::Percentile(99.9).name(), "p99.9");
        assert_eq!(Statistic::Percentile(50.0).name(), "p50");
    }
}
