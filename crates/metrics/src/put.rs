//! PutMetricData's input as CloudWatch defines it, checked into datums the
//! store can ingest. A refused request changes nothing: every datum is
//! checked before any is stored.

use crate::aggregate::Aggregate;
use crate::error::CloudWatchError;
use crate::names::{Dimension, MetricKey};
use crate::time::{DAY_MS, HOUR_MS};
use crate::units::Unit;

/// Metrics (MetricData members) in one PutMetricData request.
pub const METRIC_DATA_MAX: usize = 1_000;
/// Distinct values in a Values array.
pub const VALUES_MAX: usize = 150;
/// How far in the past a timestamp may be.
pub const TIMESTAMP_PAST_MAX_MS: i64 = 14 * DAY_MS;
/// How far in the future a timestamp may be.
pub const TIMESTAMP_FUTURE_MAX_MS: i64 = 2 * HOUR_MS;
/// CloudWatch refuses values beyond ±2^360 and non-zero values closer to
/// zero than 2^-360.
pub const VALUE_MAGNITUDE_MAX: f64 = 2.348_542_582_773_833_2e108;
pub const VALUE_MAGNITUDE_MIN: f64 = 4.258_030_781_264_021e-109;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatisticSet {
    pub sample_count: f64,
    pub sum: f64,
    pub minimum: f64,
    pub maximum: f64,
}

/// One MetricData member, as the client sent it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricDatumInput {
    pub metric_name: String,
    pub dimensions: Vec<Dimension>,
    pub timestamp_ms: Option<i64>,
    pub value: Option<f64>,
    pub statistic_values: Option<StatisticSet>,
    pub values: Option<Vec<f64>>,
    pub counts: Option<Vec<f64>>,
    pub unit: Option<String>,
    pub storage_resolution: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PutMetricDataInput {
    pub namespace: String,
    pub metric_data: Vec<MetricDatumInput>,
}

/// A checked datum: one aggregate for one metric at one time.
#[derive(Clone, Debug, PartialEq)]
pub struct Datum {
    pub key: MetricKey,
    pub unit: Unit,
    pub timestamp_ms: i64,
    pub high_resolution: bool,
    pub aggregate: Aggregate,
}

/// Figures another part of the process publishes each CloudWatch minute
/// (the load balancer's), beside what the control plane measures itself.
pub trait MinuteSource: Send + Sync {
    /// The datums of the minute that ends now, stamped `timestamp_ms`; each
    /// call covers what happened since the previous one.
    fn minute_datums(&self, timestamp_ms: i64) -> Vec<Datum>;
}

fn check_value(value: f64, parameter: &str) -> Result<(), CloudWatchError> {
    let magnitude = value.abs();
    if !value.is_finite()
        || magnitude > VALUE_MAGNITUDE_MAX
        || (magnitude != 0.0 && magnitude < VALUE_MAGNITUDE_MIN)
    {
        return Err(CloudWatchError::invalid_value(
            crate::time::java_double(value),
            parameter,
        ));
    }
    Ok(())
}

/// Checks a whole request. `allow_reserved_namespace` is true only for
/// Flotilla's own publishers (AWS/ECS and the like).
pub fn check_put_metric_data(
    input: &PutMetricDataInput,
    now_ms: i64,
    allow_reserved_namespace: bool,
) -> Result<Vec<Datum>, CloudWatchError> {
    if input.namespace.is_empty() {
        return Err(CloudWatchError::missing("Namespace"));
    }
    if input.metric_data.is_empty() {
        return Err(CloudWatchError::missing("MetricData"));
    }
    if input.metric_data.len() > METRIC_DATA_MAX {
        return Err(CloudWatchError::invalid(format!(
            "The collection MetricData must not have a size greater than {METRIC_DATA_MAX}."
        )));
    }
    input
        .metric_data
        .iter()
        .enumerate()
        .map(|(index, datum)| {
            check_datum(
                &input.namespace,
                datum,
                &format!("MetricData.member.{}", index + 1),
                now_ms,
                allow_reserved_namespace,
            )
        })
        .collect()
}

fn check_datum(
    namespace: &str,
    input: &MetricDatumInput,
    member: &str,
    now_ms: i64,
    allow_reserved_namespace: bool,
) -> Result<Datum, CloudWatchError> {
    if input.metric_name.is_empty() {
        return Err(CloudWatchError::missing(&format!("{member}.MetricName")));
    }
    let key = MetricKey::checked(
        namespace,
        &input.metric_name,
        &input.dimensions,
        member,
        allow_reserved_namespace,
    )?;
    let given: Vec<&str> = [
        input.value.map(|_| "Value"),
        input.statistic_values.as_ref().map(|_| "StatisticValues"),
        input.values.as_ref().map(|_| "Values"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() > 1 {
        return Err(CloudWatchError::combination(format!(
            "The parameters {member}.{} and {member}.{} are mutually exclusive and you have specified both.",
            given[0], given[1]
        )));
    }
    if input.counts.is_some() && input.values.is_none() {
        return Err(CloudWatchError::combination(format!(
            "The parameter {member}.Counts must be specified together with {member}.Values."
        )));
    }
    let aggregate = if let Some(value) = input.value {
        check_value(value, &format!("{member}.Value"))?;
        Aggregate::of_value(value, 1.0)
    } else if let Some(set) = &input.statistic_values {
        statistic_set(set, member)?
    } else if let Some(values) = &input.values {
        values_and_counts(values, input.counts.as_deref(), member)?
    } else {
        return Err(CloudWatchError::missing(&format!("{member}.Value")));
    };
    let unit = match &input.unit {
        None => Unit::None,
        Some(text) => Unit::parse(text)
            .ok_or_else(|| CloudWatchError::invalid_value(text, &format!("{member}.Unit")))?,
    };
    let high_resolution = match input.storage_resolution {
        None | Some(60) => false,
        Some(1) => true,
        Some(other) => {
            return Err(CloudWatchError::invalid_value(
                other,
                &format!("{member}.StorageResolution"),
            ))
        }
    };
    let timestamp_ms = input.timestamp_ms.unwrap_or(now_ms);
    if timestamp_ms < now_ms - TIMESTAMP_PAST_MAX_MS {
        return Err(CloudWatchError::invalid(format!(
            "The parameter {member}.Timestamp must specify a time within the past two weeks."
        )));
    }
    if timestamp_ms > now_ms + TIMESTAMP_FUTURE_MAX_MS {
        return Err(CloudWatchError::invalid(format!(
            "The parameter {member}.Timestamp must specify a time no more than two hours in the future."
        )));
    }
    Ok(Datum {
        key,
        unit,
        timestamp_ms,
        high_resolution,
        aggregate,
    })
}

fn statistic_set(set: &StatisticSet, member: &str) -> Result<Aggregate, CloudWatchError> {
    let path = format!("{member}.StatisticValues");
    for (name, value) in [
        ("SampleCount", set.sample_count),
        ("Sum", set.sum),
        ("Minimum", set.minimum),
        ("Maximum", set.maximum),
    ] {
        check_value(value, &format!("{path}.{name}"))?;
    }
    if set.sample_count <= 0.0 {
        return Err(CloudWatchError::invalid_value(
            crate::time::java_double(set.sample_count),
            &format!("{path}.SampleCount"),
        ));
    }
    if set.minimum > set.maximum {
        return Err(CloudWatchError::invalid(format!(
            "The parameter {path}.Minimum must not be greater than {path}.Maximum."
        )));
    }
    Ok(Aggregate::of_statistic_set(
        set.sample_count,
        set.sum,
        set.minimum,
        set.maximum,
    ))
}

fn values_and_counts(
    values: &[f64],
    counts: Option<&[f64]>,
    member: &str,
) -> Result<Aggregate, CloudWatchError> {
    if values.is_empty() {
        return Err(CloudWatchError::missing(&format!("{member}.Values")));
    }
    if values.len() > VALUES_MAX {
        return Err(CloudWatchError::invalid(format!(
            "The collection {member}.Values must not have a size greater than {VALUES_MAX}."
        )));
    }
    if let Some(counts) = counts {
        if counts.len() != values.len() {
            return Err(CloudWatchError::combination(format!(
                "The parameters {member}.Values and {member}.Counts must be of the same size."
            )));
        }
    }
    let mut aggregate: Option<Aggregate> = None;
    for (index, value) in values.iter().enumerate() {
        check_value(*value, &format!("{member}.Values.member.{}", index + 1))?;
        let count = counts.map_or(1.0, |counts| counts[index]);
        if !count.is_finite() || count < 0.0 {
            return Err(CloudWatchError::invalid_value(
                crate::time::java_double(count),
                &format!("{member}.Counts.member.{}", index + 1),
            ));
        }
        if count == 0.0 {
            continue;
        }
        let point = Aggregate::of_value(*value, count);
        match &mut aggregate {
            Some(aggregate) => aggregate.merge(&point),
            None => aggregate = Some(point),
        }
    }
    aggregate.ok_or_else(|| {
        CloudWatchError::invalid(format!(
            "The parameter {member}.Counts must contain at least one positive count."
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(datum: MetricDatumInput) -> PutMetricDataInput {
        PutMetricDataInput {
            namespace: "App".into(),
            metric_data: vec![datum],
        }
    }

    fn datum() -> MetricDatumInput {
        MetricDatumInput {
            metric_name: "Latency".into(),
            value: Some(1.0),
            ..Default::default()
        }
    }

    #[test]
    fn refusals_are_worded_as_cloudwatch_words_them() {
        let now = 1_700_000_000_000;
        let cases: Vec<(MetricDatumInput, &str)> = vec![
            (MetricDatumInput { value: Some(f64::NAN), ..datum() },
             "The value NaN for parameter MetricData.member.1.Value is invalid."),
            (MetricDatumInput { statistic_values: Some(StatisticSet { sample_count: 1.0, sum: 1.0, minimum: 1.0, maximum: 1.0 }), ..datum() },
             "The parameters MetricData.member.1.Value and MetricData.member.1.StatisticValues are mutually exclusive and you have specified both."),
            (MetricDatumInput { value: None, values: Some(vec![1.0, 2.0]), counts: Some(vec![1.0]), ..datum() },
             "The parameters MetricData.member.1.Values and MetricData.member.1.Counts must be of the same size."),
            (MetricDatumInput { storage_resolution: Some(10), ..datum() },
             "The value 10 for parameter MetricData.member.1.StorageResolution is invalid."),
            (MetricDatumInput { unit: Some("Percents".into()), ..datum() },
             "The value Percents for parameter MetricData.member.1.Unit is invalid."),
            (MetricDatumInput { timestamp_ms: Some(now - 15 * DAY_MS), ..datum() },
             "The parameter MetricData.member.1.Timestamp must specify a time within the past two weeks."),
            (MetricDatumInput { value: Some(1e200), ..datum() },
             "The value 1.0E200 for parameter MetricData.member.1.Value is invalid."),
        ];
        for (input, message) in cases {
            let error = check_put_metric_data(&request(input), now, false).unwrap_err();
            assert_eq!(error.message, message);
        }
        let too_many = PutMetricDataInput {
            namespace: "App".into(),
            metric_data: vec![datum(); 1_001],
        };
        assert_eq!(
            check_put_metric_data(&too_many, now, false)
                .unwrap_err()
                .message,
            "The collection MetricData must not have a size greater than 1000."
        );
    }

    #[test]
    fn values_and_counts_become_one_aggregate() {
        let input = MetricDatumInput {
            value: None,
            values: Some(vec![10.0, 20.0, 30.0]),
            counts: Some(vec![1.0, 2.0, 0.0]),
            unit: Some("Milliseconds".into()),
            storage_resolution: Some(1),
            ..datum()
        };
        let datums = check_put_metric_data(&request(input), 5, false).unwrap();
        let d = &datums[0];
        assert_eq!(d.aggregate.sample_count, 3.0);
        assert_eq!(d.aggregate.sum, 50.0);
        assert_eq!((d.aggregate.minimum, d.aggregate.maximum), (10.0, 20.0));
        assert!(d.high_resolution);
        assert_eq!(d.unit, Unit::Milliseconds);
        assert_eq!(d.timestamp_ms, 5);
    }
}
