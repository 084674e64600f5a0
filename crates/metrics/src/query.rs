//! GetMetricStatistics and ListMetrics with CloudWatch's semantics.

use std::collections::BTreeMap;

use crate::error::{CloudWatchError, ErrorCode};
use crate::names::{
    check_metric_name, check_namespace, checked_dimensions, Dimension, DimensionFilter, MetricKey,
};
use crate::statistic::Statistic;
use crate::store::{MetricStore, LIST_ACTIVE_MS, LIST_METRICS_PAGE, RECENTLY_ACTIVE_MS};
use crate::time::{floor_to, with_thousands, DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS};
use crate::units::Unit;

/// Datapoints one GetMetricStatistics may return.
pub const DATAPOINTS_MAX: i64 = 1_440;
/// Statistics and ExtendedStatistics each list at most this many.
pub const STATISTICS_MAX: usize = 5;
pub const EXTENDED_STATISTICS_MAX: usize = 10;
/// ListMetrics' dimension filters.
pub const DIMENSION_FILTERS_MAX: usize = 10;

/// A period is 1, 5, 10, 20, 30 or a multiple of 60 seconds.
pub fn check_period(period_s: i64, parameter: &str) -> Result<(), CloudWatchError> {
    if period_s <= 0 {
        return Err(CloudWatchError::invalid(format!(
            "The parameter {parameter} must be greater than 0."
        )));
    }
    if !matches!(period_s, 1 | 5 | 10 | 20 | 30) && period_s % 60 != 0 {
        return Err(CloudWatchError::invalid(format!(
            "The parameter {parameter} must be 1, 5, 10, 20, 30, or a multiple of 60."
        )));
    }
    Ok(())
}

/// StartTime as CloudWatch rounds it: by the age of the data (minute under
/// 15 days, 5 minutes under 63, hour beyond), and to the period's own
/// division of a minute for high-resolution periods.
pub fn round_start(start_ms: i64, period_s: i64, now_ms: i64) -> i64 {
    if period_s < 60 {
        return floor_to(start_ms, period_s * SECOND_MS);
    }
    let age = now_ms - start_ms;
    let step = if age < 15 * DAY_MS {
        MINUTE_MS
    } else if age < 63 * DAY_MS {
        5 * MINUTE_MS
    } else {
        HOUR_MS
    };
    floor_to(start_ms, step)
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GetMetricStatisticsInput {
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: Vec<Dimension>,
    pub start_time_ms: i64,
    pub end_time_ms: i64,
    pub period_s: i64,
    pub statistics: Vec<String>,
    pub extended_statistics: Vec<String>,
    pub unit: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Datapoint {
    pub timestamp_ms: i64,
    pub sample_count: Option<f64>,
    pub average: Option<f64>,
    pub sum: Option<f64>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub unit: Unit,
    pub extended_statistics: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GetMetricStatisticsOutput {
    pub label: String,
    pub datapoints: Vec<Datapoint>,
}

pub fn get_metric_statistics(
    store: &MetricStore,
    input: &GetMetricStatisticsInput,
    now_ms: i64,
) -> Result<GetMetricStatisticsOutput, CloudWatchError> {
    check_namespace(&input.namespace, "Namespace", true)?;
    check_metric_name(&input.metric_name, "MetricName")?;
    let dimensions = checked_dimensions(&input.dimensions, "Dimensions")?;
    check_period(input.period_s, "Period")?;
    let unit = match &input.unit {
        None => None,
        Some(text) => {
            Some(Unit::parse(text).ok_or_else(|| CloudWatchError::invalid_value(text, "Unit"))?)
        }
    };
    if input.statistics.is_empty() && input.extended_statistics.is_empty() {
        return Err(CloudWatchError::combination(
            "Must specify either Statistics or ExtendedStatistics.",
        ));
    }
    if !input.statistics.is_empty() && !input.extended_statistics.is_empty() {
        return Err(CloudWatchError::combination(
            "Must specify either Statistics or ExtendedStatistics, but not both.",
        ));
    }
    if input.statistics.len() > STATISTICS_MAX {
        return Err(CloudWatchError::invalid(format!(
            "The collection Statistics must not have a size greater than {STATISTICS_MAX}."
        )));
    }
    if input.extended_statistics.len() > EXTENDED_STATISTICS_MAX {
        return Err(CloudWatchError::invalid(format!(
            "The collection ExtendedStatistics must not have a size greater than {EXTENDED_STATISTICS_MAX}."
        )));
    }
    let mut standard = Vec::new();
    for (index, text) in input.statistics.iter().enumerate() {
        standard.push(Statistic::parse_standard(text).ok_or_else(|| {
            CloudWatchError::invalid_value(text, &format!("Statistics.member.{}", index + 1))
        })?);
    }
    let mut percentiles = Vec::new();
    for (index, text) in input.extended_statistics.iter().enumerate() {
        percentiles.push((
            text.clone(),
            Statistic::parse_percentile(text).ok_or_else(|| {
                CloudWatchError::invalid_value(
                    text,
                    &format!("ExtendedStatistics.member.{}", index + 1),
                )
            })?,
        ));
    }
    if input.start_time_ms >= input.end_time_ms {
        return Err(CloudWatchError::invalid(
            "The parameter StartTime must be less than the parameter EndTime.",
        ));
    }
    let start = round_start(input.start_time_ms, input.period_s, now_ms);
    let period_ms = input.period_s * SECOND_MS;
    let requested = (input.end_time_ms - start + period_ms - 1) / period_ms;
    if requested > DATAPOINTS_MAX {
        return Err(CloudWatchError::combination(format!(
            "You have requested up to {} datapoints, which exceeds the limit of {}. You may reduce the datapoints requested by increasing Period, or decreasing the time range.",
            with_thousands(requested as u64),
            with_thousands(DATAPOINTS_MAX as u64)
        )));
    }
    let key = MetricKey {
        namespace: input.namespace.clone(),
        name: input.metric_name.clone(),
        dimensions,
    };
    let mut datapoints = Vec::new();
    for id in store.series_of(&key, unit) {
        let periods = store
            .period_aggregates(&[id], start, input.end_time_ms, input.period_s, now_ms)
            .map_err(|e| CloudWatchError::new(ErrorCode::InternalServiceFault, e.to_string()))?;
        for (time, aggregate) in periods {
            let wants = |statistic: Statistic| {
                standard
                    .contains(&statistic)
                    .then(|| statistic.of(&aggregate))
                    .flatten()
            };
            let mut point = Datapoint {
                timestamp_ms: time,
                sample_count: wants(Statistic::SampleCount),
                average: wants(Statistic::Average),
                sum: wants(Statistic::Sum),
                minimum: wants(Statistic::Minimum),
                maximum: wants(Statistic::Maximum),
                unit: store.unit_of(id),
                extended_statistics: BTreeMap::new(),
            };
            for (name, statistic) in &percentiles {
                if let Some(value) = statistic.of(&aggregate) {
                    point.extended_statistics.insert(name.clone(), value);
                }
            }
            datapoints.push(point);
        }
    }
    Ok(GetMetricStatisticsOutput {
        label: input.metric_name.clone(),
        datapoints,
    })
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListMetricsInput {
    pub namespace: Option<String>,
    pub metric_name: Option<String>,
    pub dimensions: Vec<DimensionFilter>,
    pub next_token: Option<String>,
    pub recently_active: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListMetricsOutput {
    pub metrics: Vec<MetricKey>,
    pub next_token: Option<String>,
}

/// The page token: the last key listed, as hex of its JSON, so that a
/// token stays valid while metrics are added.
fn token_of(key: &MetricKey) -> String {
    let json = serde_json::to_vec(key).unwrap_or_default();
    json.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn key_of_token(token: &str) -> Option<MetricKey> {
    if !token.len().is_multiple_of(2) || token.len() > 16_384 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(token.get(at..at + 2)?, 16).ok())
        .collect();
    serde_json::from_slice(&bytes?).ok()
}

pub fn list_metrics(
    store: &MetricStore,
    input: &ListMetricsInput,
    now_ms: i64,
) -> Result<ListMetricsOutput, CloudWatchError> {
    if let Some(namespace) = &input.namespace {
        check_namespace(namespace, "Namespace", true)?;
    }
    if input.dimensions.len() > DIMENSION_FILTERS_MAX {
        return Err(CloudWatchError::invalid(format!(
            "The collection Dimensions must not have a size greater than {DIMENSION_FILTERS_MAX}."
        )));
    }
    let active_since = match input.recently_active.as_deref() {
        None => now_ms - LIST_ACTIVE_MS,
        Some("PT3H") => now_ms - RECENTLY_ACTIVE_MS,
        Some(other) => return Err(CloudWatchError::invalid_value(other, "RecentlyActive")),
    };
    let after = match &input.next_token {
        None => None,
        Some(token) => Some(key_of_token(token).ok_or_else(|| {
            CloudWatchError::new(
                ErrorCode::InvalidNextToken,
                "The service found the NextToken invalid.",
            )
        })?),
    };
    let filter = |key: &MetricKey| {
        input.namespace.as_ref().is_none_or(|n| *n == key.namespace)
            && input.metric_name.as_ref().is_none_or(|n| *n == key.name)
            && input.dimensions.iter().all(|filter| filter.matches(key))
    };
    let mut metrics = store.metrics(after.as_ref(), active_since, LIST_METRICS_PAGE + 1, filter);
    let next_token = if metrics.len() > LIST_METRICS_PAGE {
        metrics.truncate(LIST_METRICS_PAGE);
        metrics.last().map(token_of)
    } else {
        None
    };
    Ok(ListMetricsOutput {
        metrics,
        next_token,
    })
}
