//! Metric alarms: PutMetricAlarm's checks, evaluation as CloudWatch does it
//! (evaluation range, M out of N, TreatMissingData, the premature-alarm
//! rule), the OK / ALARM / INSUFFICIENT_DATA state machine with CloudWatch's
//! StateReason and StateReasonData, SetAlarmState, actions and history.
//!
//! Pure: the caller passes the store to read, the alarm's stored state and
//! the time; it persists what comes back and carries out the actions.

use serde::{Deserialize, Serialize};

use crate::error::{CloudWatchError, ErrorCode};
use crate::metric_data::{check_queries, evaluate_for_alarm, Checked, MetricDataQuery};
use crate::names::{check_metric_name, check_namespace, checked_dimensions, Dimension, MetricKey};
use crate::statistic::Statistic;
use crate::store::MetricStore;
use crate::time::{
    floor_to, iso_reason_data, java_double, reason_time, DAY_MS, MINUTE_MS, SECOND_MS,
};
use crate::units::Unit;

/// Actions per state.
pub const ACTIONS_MAX: usize = 5;
/// Queries in a metric-math alarm, and MetricStats among them.
pub const ALARM_QUERIES_MAX: usize = 20;
pub const ALARM_METRICS_MAX: usize = 10;
/// Periods CloudWatch reads beyond EvaluationPeriods (the evaluation range),
/// so that a few missing points can be bridged with older real ones.
pub const EVALUATION_RANGE_EXTRA_PERIODS: i64 = 2;
/// Datapoints listed inline in a StateReason; more are summarised with the
/// most recent ones.
const REASON_INLINE_MAX: usize = 4;
const REASON_RECENT_LISTED: usize = 5;
pub const ALARM_DESCRIPTION_LENGTH_MAX: usize = 1_024;
/// History CloudWatch keeps: two weeks.
pub const HISTORY_RETENTION_MS: i64 = 14 * DAY_MS;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
}

impl AlarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }

    pub fn parse(text: &str) -> Option<AlarmState> {
        Some(match text {
            "OK" => AlarmState::Ok,
            "ALARM" => AlarmState::Alarm,
            "INSUFFICIENT_DATA" => AlarmState::InsufficientData,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComparisonOperator {
    GreaterThanOrEqualToThreshold,
    GreaterThanThreshold,
    LessThanThreshold,
    LessThanOrEqualToThreshold,
}

impl ComparisonOperator {
    pub fn parse(text: &str) -> Option<ComparisonOperator> {
        Some(match text {
            "GreaterThanOrEqualToThreshold" => ComparisonOperator::GreaterThanOrEqualToThreshold,
            "GreaterThanThreshold" => ComparisonOperator::GreaterThanThreshold,
            "LessThanThreshold" => ComparisonOperator::LessThanThreshold,
            "LessThanOrEqualToThreshold" => ComparisonOperator::LessThanOrEqualToThreshold,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ComparisonOperator::GreaterThanOrEqualToThreshold => "GreaterThanOrEqualToThreshold",
            ComparisonOperator::GreaterThanThreshold => "GreaterThanThreshold",
            ComparisonOperator::LessThanThreshold => "LessThanThreshold",
            ComparisonOperator::LessThanOrEqualToThreshold => "LessThanOrEqualToThreshold",
        }
    }

    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            ComparisonOperator::GreaterThanOrEqualToThreshold => value >= threshold,
            ComparisonOperator::GreaterThanThreshold => value > threshold,
            ComparisonOperator::LessThanThreshold => value < threshold,
            ComparisonOperator::LessThanOrEqualToThreshold => value <= threshold,
        }
    }

    fn phrase(self) -> &'static str {
        match self {
            ComparisonOperator::GreaterThanOrEqualToThreshold => "greater than or equal to",
            ComparisonOperator::GreaterThanThreshold => "greater than",
            ComparisonOperator::LessThanThreshold => "less than",
            ComparisonOperator::LessThanOrEqualToThreshold => "less than or equal to",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreatMissingData {
    Missing,
    Ignore,
    Breaching,
    NotBreaching,
}

impl TreatMissingData {
    pub fn parse(text: &str) -> Option<TreatMissingData> {
        Some(match text {
            "missing" => TreatMissingData::Missing,
            "ignore" => TreatMissingData::Ignore,
            "breaching" => TreatMissingData::Breaching,
            "notBreaching" => TreatMissingData::NotBreaching,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TreatMissingData::Missing => "missing",
            TreatMissingData::Ignore => "ignore",
            TreatMissingData::Breaching => "breaching",
            TreatMissingData::NotBreaching => "notBreaching",
        }
    }
}

/// PutMetricAlarm's input, as the client sent it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PutMetricAlarmInput {
    pub alarm_name: String,
    pub alarm_description: Option<String>,
    pub actions_enabled: Option<bool>,
    pub ok_actions: Vec<String>,
    pub alarm_actions: Vec<String>,
    pub insufficient_data_actions: Vec<String>,
    pub metric_name: Option<String>,
    pub namespace: Option<String>,
    pub statistic: Option<String>,
    pub extended_statistic: Option<String>,
    pub dimensions: Vec<Dimension>,
    pub period_s: Option<i64>,
    pub unit: Option<String>,
    pub evaluation_periods: Option<i64>,
    pub datapoints_to_alarm: Option<i64>,
    pub threshold: Option<f64>,
    pub comparison_operator: Option<String>,
    pub treat_missing_data: Option<String>,
    pub evaluate_low_sample_count_percentile: Option<String>,
    pub metrics: Vec<MetricDataQuery>,
    pub threshold_metric_id: Option<String>,
}

/// What an alarm watches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Watched {
    Metric {
        key: MetricKey,
        statistic: Statistic,
        /// The text the client gave (`Average`, `p99`), returned as given.
        statistic_name: String,
        period_s: i64,
        unit: Option<Unit>,
    },
    Math {
        queries: Vec<MetricDataQuery>,
        period_s: i64,
    },
}

/// A checked alarm definition: what the control plane stores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlarmDefinition {
    pub name: String,
    pub arn: String,
    pub description: Option<String>,
    pub actions_enabled: bool,
    pub ok_actions: Vec<String>,
    pub alarm_actions: Vec<String>,
    pub insufficient_data_actions: Vec<String>,
    pub watched: Watched,
    pub evaluation_periods: i64,
    pub datapoints_to_alarm: Option<i64>,
    pub threshold: f64,
    pub comparison_operator: ComparisonOperator,
    pub treat_missing_data: TreatMissingData,
    /// `ignore`: a percentile period with too few samples changes nothing.
    pub ignore_low_sample_count: bool,
}

impl AlarmDefinition {
    pub fn period_s(&self) -> i64 {
        match &self.watched {
            Watched::Metric { period_s, .. } | Watched::Math { period_s, .. } => *period_s,
        }
    }

    fn datapoints_needed(&self) -> i64 {
        self.datapoints_to_alarm.unwrap_or(self.evaluation_periods)
    }
}

fn invalid(message: impl Into<String>) -> CloudWatchError {
    CloudWatchError::validation(message)
}

fn check_actions(actions: &[String], parameter: &str) -> Result<(), CloudWatchError> {
    if actions.len() > ACTIONS_MAX {
        return Err(invalid(format!(
            "The collection {parameter} must not have a size greater than {ACTIONS_MAX}."
        )));
    }
    for (index, action) in actions.iter().enumerate() {
        if !action.starts_with("arn:") || action.split(':').count() < 6 {
            return Err(invalid(format!(
                "Invalid arn syntax: {action} at {parameter}.member.{}",
                index + 1
            )));
        }
    }
    Ok(())
}

/// Checks PutMetricAlarm as CloudWatch does and builds the definition.
pub fn check_put_metric_alarm(
    input: &PutMetricAlarmInput,
    arn: &str,
) -> Result<AlarmDefinition, CloudWatchError> {
    let name = &input.alarm_name;
    if name.is_empty() {
        return Err(CloudWatchError::missing("AlarmName"));
    }
    if name.chars().count() > 255 || name.chars().any(|c| c.is_ascii_control()) {
        return Err(CloudWatchError::invalid_value(name, "AlarmName"));
    }
    if input
        .alarm_description
        .as_ref()
        .is_some_and(|d| d.chars().count() > ALARM_DESCRIPTION_LENGTH_MAX)
    {
        return Err(invalid(format!(
            "The parameter AlarmDescription must be shorter than {ALARM_DESCRIPTION_LENGTH_MAX} characters."
        )));
    }
    check_actions(&input.ok_actions, "OKActions")?;
    check_actions(&input.alarm_actions, "AlarmActions")?;
    check_actions(&input.insufficient_data_actions, "InsufficientDataActions")?;
    if input.threshold_metric_id.is_some() {
        return Err(invalid(
            "ThresholdMetricId names an anomaly detection band, and anomaly detection (ANOMALY_DETECTION_BAND) is not supported.",
        ));
    }
    let comparison_operator = match &input.comparison_operator {
        None => return Err(CloudWatchError::missing("ComparisonOperator")),
        Some(text) => ComparisonOperator::parse(text).ok_or_else(|| match text.as_str() {
            "LessThanLowerOrGreaterThanUpperThreshold" | "LessThanLowerThreshold" | "GreaterThanUpperThreshold" => invalid(format!(
                "The ComparisonOperator {text} is used only with anomaly detection bands, which are not supported."
            )),
            _ => CloudWatchError::invalid_value(text, "ComparisonOperator"),
        })?,
    };
    let threshold = input
        .threshold
        .ok_or_else(|| CloudWatchError::missing("Threshold"))?;
    let evaluation_periods = input
        .evaluation_periods
        .ok_or_else(|| CloudWatchError::missing("EvaluationPeriods"))?;
    if evaluation_periods < 1 {
        return Err(CloudWatchError::invalid_value(
            evaluation_periods,
            "EvaluationPeriods",
        ));
    }
    if let Some(m) = input.datapoints_to_alarm {
        if m < 1 {
            return Err(CloudWatchError::invalid_value(m, "DatapointsToAlarm"));
        }
        if m > evaluation_periods {
            return Err(invalid(
                "DatapointsToAlarm must be less than or equal to EvaluationPeriods.",
            ));
        }
    }
    let treat_missing_data = match &input.treat_missing_data {
        None => TreatMissingData::Missing,
        Some(text) => TreatMissingData::parse(text)
            .ok_or_else(|| CloudWatchError::invalid_value(text, "TreatMissingData"))?,
    };
    let ignore_low_sample_count = match input.evaluate_low_sample_count_percentile.as_deref() {
        None | Some("evaluate") => false,
        Some("ignore") => true,
        Some(other) => {
            return Err(CloudWatchError::invalid_value(
                other,
                "EvaluateLowSampleCountPercentile",
            ))
        }
    };
    let has_metric = input.metric_name.is_some()
        || input.namespace.is_some()
        || input.statistic.is_some()
        || input.extended_statistic.is_some()
        || !input.dimensions.is_empty()
        || input.period_s.is_some()
        || input.unit.is_some();
    let watched = if !input.metrics.is_empty() {
        if has_metric {
            return Err(CloudWatchError::combination(
                "The parameters Metrics and MetricName, Namespace, Dimensions, Period, Unit, Statistic or ExtendedStatistic are mutually exclusive and you have specified both.",
            ));
        }
        math_watched(&input.metrics)?
    } else {
        metric_watched(input)?
    };
    let period_s = match &watched {
        Watched::Metric { period_s, .. } | Watched::Math { period_s, .. } => *period_s,
    };
    let total_s = period_s * evaluation_periods;
    if period_s < 3_600 && total_s > 86_400 {
        return Err(invalid(
            "The evaluation period (Period * EvaluationPeriods) must not exceed one day (86400 seconds) for alarms with a period of less than one hour.",
        ));
    }
    if total_s > 604_800 {
        return Err(invalid(
            "The evaluation period (Period * EvaluationPeriods) must not exceed seven days (604800 seconds).",
        ));
    }
    Ok(AlarmDefinition {
        name: name.clone(),
        arn: arn.to_string(),
        description: input.alarm_description.clone(),
        actions_enabled: input.actions_enabled.unwrap_or(true),
        ok_actions: input.ok_actions.clone(),
        alarm_actions: input.alarm_actions.clone(),
        insufficient_data_actions: input.insufficient_data_actions.clone(),
        watched,
        evaluation_periods,
        datapoints_to_alarm: input.datapoints_to_alarm,
        threshold,
        comparison_operator,
        treat_missing_data,
        ignore_low_sample_count,
    })
}

fn check_alarm_period(period_s: i64, parameter: &str) -> Result<(), CloudWatchError> {
    if !matches!(period_s, 10 | 20 | 30) && (period_s < 60 || period_s % 60 != 0) {
        return Err(invalid(format!(
            "The value {period_s} for parameter {parameter} is invalid. Valid values are 10, 20, 30, and any multiple of 60."
        )));
    }
    Ok(())
}

fn metric_watched(input: &PutMetricAlarmInput) -> Result<Watched, CloudWatchError> {
    let metric_name = input
        .metric_name
        .as_deref()
        .ok_or_else(|| CloudWatchError::missing("MetricName"))?;
    let namespace = input
        .namespace
        .as_deref()
        .ok_or_else(|| CloudWatchError::missing("Namespace"))?;
    check_namespace(namespace, "Namespace", true)?;
    check_metric_name(metric_name, "MetricName")?;
    let dimensions = checked_dimensions(&input.dimensions, "Dimensions")?;
    let period_s = input
        .period_s
        .ok_or_else(|| CloudWatchError::missing("Period"))?;
    check_alarm_period(period_s, "Period")?;
    let (statistic, statistic_name) = match (&input.statistic, &input.extended_statistic) {
        (Some(_), Some(_)) => {
            return Err(CloudWatchError::combination(
                "The parameters Statistic and ExtendedStatistic are mutually exclusive and you have specified both.",
            ))
        }
        (None, None) => {
            return Err(CloudWatchError::missing("Statistic or the parameter ExtendedStatistic"))
        }
        (Some(text), None) => (
            Statistic::parse_standard(text).ok_or_else(|| CloudWatchError::invalid_value(text, "Statistic"))?,
            text.clone(),
        ),
        (None, Some(text)) => (
            Statistic::parse_percentile(text).ok_or_else(|| {
                invalid(format!(
                    "The value {text} for parameter ExtendedStatistic is invalid or not supported: percentiles p0.0 to p100 are."
                ))
            })?,
            text.clone(),
        ),
    };
    let unit = match &input.unit {
        None => None,
        Some(text) => {
            Some(Unit::parse(text).ok_or_else(|| CloudWatchError::invalid_value(text, "Unit"))?)
        }
    };
    Ok(Watched::Metric {
        key: MetricKey {
            namespace: namespace.to_string(),
            name: metric_name.to_string(),
            dimensions,
        },
        statistic,
        statistic_name,
        period_s,
        unit,
    })
}

fn math_watched(queries: &[MetricDataQuery]) -> Result<Watched, CloudWatchError> {
    if queries.len() > ALARM_QUERIES_MAX {
        return Err(invalid(format!(
            "The collection Metrics must not have a size greater than {ALARM_QUERIES_MAX}."
        )));
    }
    let checked = check_queries(queries, "Metrics")?;
    let metric_periods: Vec<i64> = checked
        .iter()
        .filter_map(|c| match c {
            Checked::Metric { period_s, .. } => Some(*period_s),
            Checked::Expression(_) => None,
        })
        .collect();
    if metric_periods.len() > ALARM_METRICS_MAX {
        return Err(invalid(format!(
            "An alarm may retrieve at most {ALARM_METRICS_MAX} metrics."
        )));
    }
    let returning = queries
        .iter()
        .filter(|q| q.return_data.unwrap_or(true))
        .count();
    if returning != 1 {
        return Err(invalid(
            "Exactly one element of the Metrics list must return data (ReturnData true); set ReturnData to false on the others.",
        ));
    }
    let period_s = match metric_periods.first() {
        Some(first) if metric_periods.iter().all(|p| p == first) => *first,
        Some(_) => {
            return Err(invalid(
                "All metrics in an alarm's Metrics must use the same Period.",
            ))
        }
        None => queries.iter().find_map(|q| q.period_s).ok_or_else(|| {
            invalid("An alarm's expression must use at least one metric or give a Period.")
        })?,
    };
    check_alarm_period(period_s, "Period")?;
    for query in queries {
        if query
            .expression
            .as_deref()
            .is_some_and(|e| e.contains("SEARCH("))
        {
            return Err(invalid(
                "An alarm cannot watch a SEARCH expression: it must return a single time series.",
            ));
        }
    }
    Ok(Watched::Math {
        queries: queries.to_vec(),
        period_s,
    })
}

/// An alarm's state as stored between evaluations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlarmStatus {
    pub state: AlarmState,
    pub reason: String,
    pub reason_data: Option<String>,
    pub state_updated_ms: i64,
    pub state_transitioned_ms: i64,
}

impl AlarmStatus {
    /// A new alarm: INSUFFICIENT_DATA until its first evaluation.
    pub fn created(now_ms: i64) -> AlarmStatus {
        AlarmStatus {
            state: AlarmState::InsufficientData,
            reason: "Unchecked: Initial alarm creation".into(),
            reason_data: None,
            state_updated_ms: now_ms,
            state_transitioned_ms: now_ms,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryItemType {
    ConfigurationUpdate,
    StateUpdate,
    Action,
}

impl HistoryItemType {
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryItemType::ConfigurationUpdate => "ConfigurationUpdate",
            HistoryItemType::StateUpdate => "StateUpdate",
            HistoryItemType::Action => "Action",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryItem {
    pub alarm_name: String,
    pub timestamp_ms: i64,
    pub item_type: HistoryItemType,
    pub summary: String,
    pub data: String,
}

/// An action to carry out.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionInvocation {
    pub alarm_name: String,
    pub alarm_arn: String,
    pub action_arn: String,
    pub state: AlarmState,
    pub reason: String,
    pub reason_data: Option<String>,
    /// True when re-invoked because the alarm stayed in ALARM (Auto Scaling
    /// actions only).
    pub repeat: bool,
}

/// Application Auto Scaling's and EC2 Auto Scaling's policy ARNs: CloudWatch
/// invokes these every evaluation the alarm stays in ALARM.
pub fn is_auto_scaling_action(arn: &str) -> bool {
    arn.starts_with("arn:aws:autoscaling:") || arn.split(':').nth(2) == Some("autoscaling")
}

/// The result of evaluating or setting an alarm.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: AlarmStatus,
    pub history: Vec<HistoryItem>,
    pub actions: Vec<ActionInvocation>,
}

/// History of PutMetricAlarm: creation or update.
pub fn configuration_history(
    definition: &AlarmDefinition,
    created: bool,
    now_ms: i64,
) -> HistoryItem {
    let verb = if created { "created" } else { "updated" };
    HistoryItem {
        alarm_name: definition.name.clone(),
        timestamp_ms: now_ms,
        item_type: HistoryItemType::ConfigurationUpdate,
        summary: format!("Alarm \"{}\" {verb}", definition.name),
        data: serde_json::json!({
            "type": if created { "Create" } else { "Update" },
            "alarmName": definition.name,
        })
        .to_string(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Slot {
    Missing,
    Point {
        value: f64,
        breaching: bool,
        sample_count: Option<f64>,
    },
}

struct Decision {
    /// None: keep the current state.
    state: Option<AlarmState>,
    reason: String,
    /// (time, value, sample count) of the points the reason lists.
    evaluated: Vec<(i64, Option<f64>, Option<f64>)>,
}

/// Reads the evaluation range: `EvaluationPeriods + extra` periods ending at
/// the last whole minute (or 10 seconds, for periods under a minute).
fn read_range(
    definition: &AlarmDefinition,
    store: &MetricStore,
    now_ms: i64,
) -> Result<(i64, Vec<(i64, Slot)>), CloudWatchError> {
    let period_s = definition.period_s();
    let period_ms = period_s * SECOND_MS;
    let step = if period_s < 60 {
        10 * SECOND_MS
    } else {
        MINUTE_MS
    };
    let end = floor_to(now_ms, step);
    let periods = definition.evaluation_periods + EVALUATION_RANGE_EXTRA_PERIODS;
    let start = end - periods * period_ms;
    let mut values: std::collections::BTreeMap<i64, (f64, Option<f64>)> = Default::default();
    match &definition.watched {
        Watched::Metric {
            key,
            statistic,
            unit,
            ..
        } => {
            let ids = store.series_of(key, *unit);
            let aggregates = store
                .period_aggregates(&ids, start, end, period_s, now_ms)
                .map_err(|e| {
                    CloudWatchError::new(ErrorCode::InternalServiceFault, e.to_string())
                })?;
            for (time, aggregate) in aggregates {
                if let Some(value) = statistic.of(&aggregate) {
                    values.insert(time, (value, Some(aggregate.sample_count)));
                }
            }
        }
        Watched::Math { queries, .. } => {
            let checked = check_queries(queries, "Metrics")?;
            for (time, value) in evaluate_for_alarm(store, queries, &checked, start, end, now_ms)? {
                values.insert(time, (value, None));
            }
        }
    }
    let slots = (0..periods)
        .map(|index| {
            let time = start + index * period_ms;
            let slot = match values.get(&time) {
                Some((value, sample_count)) => Slot::Point {
                    value: *value,
                    breaching: definition
                        .comparison_operator
                        .breaches(*value, definition.threshold),
                    sample_count: *sample_count,
                },
                None => Slot::Missing,
            };
            (time, slot)
        })
        .collect();
    Ok((start, slots))
}

fn plural(count: usize, one: &str, many: &str) -> String {
    if count == 1 {
        format!("{count} {one}")
    } else {
        format!("{count} {many}")
    }
}

fn listed(points: &[(i64, f64)]) -> String {
    let items: Vec<String> = points
        .iter()
        .map(|(t, v)| format!("{} ({})", java_double(*v), reason_time(*t)))
        .collect();
    format!("[{}]", items.join(", "))
}

/// CloudWatch's "Threshold Crossed" sentence. `crossing` are the points the
/// sentence is about, newest first.
fn threshold_reason(
    definition: &AlarmDefinition,
    to_alarm: bool,
    crossing: &[(i64, f64)],
    evaluated_count: usize,
) -> String {
    let k = crossing.len();
    let verb = if k == 1 { "was" } else { "were" };
    let phrase = format!(
        "{}{}",
        if to_alarm { "" } else { "not " },
        definition.comparison_operator.phrase()
    );
    let threshold = java_double(definition.threshold);
    let head = match definition.datapoints_to_alarm {
        Some(_) => format!("{k} out of the last {evaluated_count} datapoints"),
        None => plural(k, "datapoint", "datapoints"),
    };
    let (inline, trailing) = if k <= REASON_INLINE_MAX {
        (format!(" {}", listed(crossing)), String::new())
    } else {
        let recent = &crossing[..REASON_RECENT_LISTED.min(k)];
        (
            String::new(),
            format!(
                ". The most recent datapoints which crossed the threshold: {}",
                listed(recent)
            ),
        )
    };
    let minimum = match definition.datapoints_to_alarm {
        Some(m) => {
            let (needed, transition) = if to_alarm {
                (m, "OK -> ALARM")
            } else {
                (definition.evaluation_periods - m + 1, "ALARM -> OK")
            };
            format!(
                " (minimum {} for {transition} transition)",
                plural(needed as usize, "datapoint", "datapoints")
            )
        }
        None => String::new(),
    };
    format!("Threshold Crossed: {head}{inline} {verb} {phrase} the threshold ({threshold}){trailing}{minimum}.")
}

fn decide(definition: &AlarmDefinition, current: AlarmState, slots: &[(i64, Slot)]) -> Decision {
    let n = definition.evaluation_periods as usize;
    let m = definition.datapoints_needed() as usize;
    let real: Vec<(i64, f64, bool, Option<f64>)> = slots
        .iter()
        .filter_map(|(t, s)| match s {
            Slot::Point {
                value,
                breaching,
                sample_count,
            } => Some((*t, *value, *breaching, *sample_count)),
            Slot::Missing => None,
        })
        .collect();
    let newest_first =
        |points: &[(i64, f64, bool, Option<f64>)], breaching: bool| -> Vec<(i64, f64)> {
            points
                .iter()
                .rev()
                .filter(|p| p.2 == breaching)
                .map(|p| (p.0, p.1))
                .collect()
        };
    let evaluated_of = |points: &[(i64, f64, bool, Option<f64>)]| {
        points
            .iter()
            .rev()
            .map(|p| (p.0, Some(p.1), p.3))
            .collect::<Vec<_>>()
    };
    if real.len() >= n {
        let window = &real[real.len() - n..];
        let breaching = window.iter().filter(|p| p.2).count();
        let to_alarm = breaching >= m;
        let crossing = newest_first(window, to_alarm);
        return Decision {
            state: Some(if to_alarm {
                AlarmState::Alarm
            } else {
                AlarmState::Ok
            }),
            reason: threshold_reason(definition, to_alarm, &crossing, n),
            evaluated: evaluated_of(window),
        };
    }
    let fill = n - real.len();
    let missing_times: Vec<i64> = slots
        .iter()
        .rev()
        .filter(|(_, s)| *s == Slot::Missing)
        .map(|(t, _)| *t)
        .take(fill)
        .collect();
    let mut evaluated = evaluated_of(&real);
    evaluated.extend(missing_times.iter().map(|t| (*t, None, None)));
    evaluated.sort_by_key(|(t, _, _)| std::cmp::Reverse(*t));
    match definition.treat_missing_data {
        TreatMissingData::Breaching | TreatMissingData::NotBreaching => {
            let as_breaching = definition.treat_missing_data == TreatMissingData::Breaching;
            let breaching =
                real.iter().filter(|p| p.2).count() + if as_breaching { fill } else { 0 };
            let to_alarm = breaching >= m;
            let treated = if as_breaching {
                "Breaching"
            } else {
                "NonBreaching"
            };
            let reason = if real.is_empty() {
                format!(
                    "Threshold Crossed: no datapoints were received for {} and {} treated as [{treated}].",
                    plural(n, "period", "periods"),
                    plural(fill, "missing datapoint was", "missing datapoints were")
                )
            } else {
                format!(
                    "Threshold Crossed: {} received for {} and {} treated as [{treated}].",
                    plural(real.len(), "datapoint was", "datapoints were"),
                    plural(n, "period", "periods"),
                    plural(fill, "missing datapoint was", "missing datapoints were")
                )
            };
            Decision {
                state: Some(if to_alarm {
                    AlarmState::Alarm
                } else {
                    AlarmState::Ok
                }),
                reason,
                evaluated,
            }
        }
        TreatMissingData::Missing | TreatMissingData::Ignore => {
            if real.is_empty() {
                return match definition.treat_missing_data {
                    TreatMissingData::Missing => Decision {
                        state: Some(AlarmState::InsufficientData),
                        reason: format!(
                            "Insufficient Data: {} unknown.",
                            plural(n, "datapoint was", "datapoints were")
                        ),
                        evaluated: slots
                            .iter()
                            .rev()
                            .take(n)
                            .map(|(t, _)| (*t, None, None))
                            .collect(),
                    },
                    _ => Decision {
                        state: None,
                        reason: String::new(),
                        evaluated: Vec::new(),
                    },
                };
            }
            let breaching = real.iter().filter(|p| p.2).count();
            if breaching >= m {
                return Decision {
                    state: Some(AlarmState::Alarm),
                    reason: threshold_reason(definition, true, &newest_first(&real, true), n),
                    evaluated,
                };
            }
            if real.iter().any(|p| !p.2) {
                return Decision {
                    state: Some(AlarmState::Ok),
                    reason: threshold_reason(definition, false, &newest_first(&real, false), n),
                    evaluated,
                };
            }
            // Every real point breaches but too few of them: CloudWatch still
            // alarms when the oldest breaching point of the last N periods is
            // at least M periods old and everything since is breaching or
            // missing (its "premature alarm" rule); `ignore` keeps the state.
            if definition.treat_missing_data == TreatMissingData::Missing {
                let last_n = &slots[slots.len() - n..];
                if let Some(oldest) = last_n.iter().position(|(_, s)| {
                    matches!(
                        s,
                        Slot::Point {
                            breaching: true,
                            ..
                        }
                    )
                }) {
                    let age = n - oldest;
                    if age >= m {
                        return Decision {
                            state: Some(AlarmState::Alarm),
                            reason: threshold_reason(
                                definition,
                                true,
                                &newest_first(&real, true),
                                n,
                            ),
                            evaluated,
                        };
                    }
                }
            }
            let _ = current;
            Decision {
                state: None,
                reason: String::new(),
                evaluated: Vec::new(),
            }
        }
    }
}

fn reason_data(
    definition: &AlarmDefinition,
    start_ms: i64,
    now_ms: i64,
    evaluated: &[(i64, Option<f64>, Option<f64>)],
) -> String {
    let mut fields = vec![
        "\"version\":\"1.0\"".to_string(),
        format!("\"queryDate\":\"{}\"", iso_reason_data(now_ms)),
    ];
    if let Some(oldest) = evaluated
        .iter()
        .filter(|(_, v, _)| v.is_some())
        .map(|(t, _, _)| *t)
        .min()
    {
        fields.push(format!(
            "\"startDate\":\"{}\"",
            iso_reason_data(oldest.max(start_ms))
        ));
    }
    if let Watched::Metric {
        statistic_name,
        unit,
        statistic,
        ..
    } = &definition.watched
    {
        if let Some(unit) = unit {
            fields.push(format!("\"unit\":\"{}\"", unit.as_str()));
        }
        let key = if statistic.is_percentile() {
            "extendedStatistic"
        } else {
            "statistic"
        };
        fields.push(format!("\"{key}\":\"{statistic_name}\""));
    }
    fields.push(format!("\"period\":{}", definition.period_s()));
    let mut recent: Vec<(i64, f64)> = evaluated
        .iter()
        .filter_map(|(t, v, _)| v.map(|v| (*t, v)))
        .collect();
    recent.sort_by_key(|(t, _)| *t);
    fields.push(format!(
        "\"recentDatapoints\":[{}]",
        recent
            .iter()
            .map(|(_, v)| java_double(*v))
            .collect::<Vec<_>>()
            .join(",")
    ));
    fields.push(format!(
        "\"threshold\":{}",
        java_double(definition.threshold)
    ));
    let points: Vec<String> = evaluated
        .iter()
        .map(|(t, v, count)| {
            let mut parts = vec![format!("\"timestamp\":\"{}\"", iso_reason_data(*t))];
            if let Some(count) = count {
                parts.push(format!("\"sampleCount\":{}", java_double(*count)));
            }
            if let Some(v) = v {
                parts.push(format!("\"value\":{}", java_double(*v)));
            }
            format!("{{{}}}", parts.join(","))
        })
        .collect();
    fields.push(format!("\"evaluatedDatapoints\":[{}]", points.join(",")));
    format!("{{{}}}", fields.join(","))
}

fn actions_for(definition: &AlarmDefinition, state: AlarmState) -> &[String] {
    match state {
        AlarmState::Ok => &definition.ok_actions,
        AlarmState::Alarm => &definition.alarm_actions,
        AlarmState::InsufficientData => &definition.insufficient_data_actions,
    }
}

fn transition(
    definition: &AlarmDefinition,
    status: &AlarmStatus,
    state: AlarmState,
    reason: String,
    reason_data: Option<String>,
    now_ms: i64,
) -> Outcome {
    let mut history = vec![HistoryItem {
        alarm_name: definition.name.clone(),
        timestamp_ms: now_ms,
        item_type: HistoryItemType::StateUpdate,
        summary: format!(
            "Alarm updated from {} to {}",
            status.state.as_str(),
            state.as_str()
        ),
        data: serde_json::json!({
            "version": "1.0",
            "oldState": {"stateValue": status.state.as_str(), "stateReason": status.reason},
            "newState": {"stateValue": state.as_str(), "stateReason": reason},
        })
        .to_string(),
    }];
    let new_status = AlarmStatus {
        state,
        reason: reason.clone(),
        reason_data: reason_data.clone(),
        state_updated_ms: now_ms,
        state_transitioned_ms: now_ms,
    };
    let mut actions = Vec::new();
    if definition.actions_enabled {
        for arn in actions_for(definition, state) {
            actions.push(ActionInvocation {
                alarm_name: definition.name.clone(),
                alarm_arn: definition.arn.clone(),
                action_arn: arn.clone(),
                state,
                reason: reason.clone(),
                reason_data: reason_data.clone(),
                repeat: false,
            });
            history.push(action_history(definition, arn, now_ms));
        }
    }
    Outcome {
        status: new_status,
        history,
        actions,
    }
}

fn action_history(definition: &AlarmDefinition, arn: &str, now_ms: i64) -> HistoryItem {
    HistoryItem {
        alarm_name: definition.name.clone(),
        timestamp_ms: now_ms,
        item_type: HistoryItemType::Action,
        summary: format!("Successfully executed action {arn}"),
        data: serde_json::json!({"actionState": "Succeeded", "notificationResource": arn})
            .to_string(),
    }
}

fn low_sample_count(definition: &AlarmDefinition, slots: &[(i64, Slot)]) -> bool {
    let Watched::Metric {
        statistic: Statistic::Percentile(p),
        ..
    } = &definition.watched
    else {
        return false;
    };
    let fraction = p / 100.0;
    let needed = if fraction >= 0.5 {
        10.0 / (1.0 - fraction).max(1e-9)
    } else {
        10.0 / fraction.max(1e-9)
    };
    slots
        .iter()
        .rev()
        .take(definition.evaluation_periods as usize)
        .any(|(_, s)| matches!(s, Slot::Point { sample_count: Some(count), .. } if *count < needed))
}

/// Evaluates an alarm at `now_ms` (once a minute, or every 10 seconds for
/// periods under a minute). Returns None when nothing changes and no action
/// is due.
pub fn evaluate(
    definition: &AlarmDefinition,
    status: &AlarmStatus,
    store: &MetricStore,
    now_ms: i64,
) -> Result<Option<Outcome>, CloudWatchError> {
    let (start, slots) = read_range(definition, store, now_ms)?;
    if definition.ignore_low_sample_count && low_sample_count(definition, &slots) {
        return Ok(None);
    }
    let decision = decide(definition, status.state, &slots);
    match decision.state {
        Some(state) if state != status.state => {
            let data = reason_data(definition, start, now_ms, &decision.evaluated);
            Ok(Some(transition(
                definition,
                status,
                state,
                decision.reason,
                Some(data),
                now_ms,
            )))
        }
        _ if status.state == AlarmState::Alarm && definition.actions_enabled => {
            // Auto Scaling actions are invoked every evaluation in ALARM.
            let actions: Vec<ActionInvocation> = definition
                .alarm_actions
                .iter()
                .filter(|arn| is_auto_scaling_action(arn))
                .map(|arn| ActionInvocation {
                    alarm_name: definition.name.clone(),
                    alarm_arn: definition.arn.clone(),
                    action_arn: arn.clone(),
                    state: AlarmState::Alarm,
                    reason: status.reason.clone(),
                    reason_data: match decision.state {
                        Some(AlarmState::Alarm) => {
                            Some(reason_data(definition, start, now_ms, &decision.evaluated))
                        }
                        _ => status.reason_data.clone(),
                    },
                    repeat: true,
                })
                .collect();
            if actions.is_empty() {
                return Ok(None);
            }
            let history = actions
                .iter()
                .map(|a| action_history(definition, &a.action_arn, now_ms))
                .collect();
            Ok(Some(Outcome {
                status: status.clone(),
                history,
                actions,
            }))
        }
        _ => Ok(None),
    }
}

/// SetAlarmState: the state until the next evaluation; actions fire if the
/// state changed and actions are enabled.
pub fn set_alarm_state(
    definition: &AlarmDefinition,
    status: &AlarmStatus,
    state_value: &str,
    reason: &str,
    reason_data: Option<&str>,
    now_ms: i64,
) -> Result<Outcome, CloudWatchError> {
    let state = AlarmState::parse(state_value)
        .ok_or_else(|| CloudWatchError::invalid_value(state_value, "StateValue"))?;
    if reason.chars().count() > 1_023 {
        return Err(invalid(
            "The parameter StateReason must be shorter than 1024 characters.",
        ));
    }
    if let Some(data) = reason_data {
        if data.chars().count() > 4_000 || serde_json::from_str::<serde_json::Value>(data).is_err()
        {
            return Err(CloudWatchError::new(
                ErrorCode::InvalidParameterValue,
                "Invalid JSON in StateReasonData".to_string(),
            ));
        }
    }
    if state == status.state {
        let mut status = status.clone();
        status.reason = reason.to_string();
        status.reason_data = reason_data.map(str::to_string);
        status.state_updated_ms = now_ms;
        return Ok(Outcome {
            status,
            history: Vec::new(),
            actions: Vec::new(),
        });
    }
    Ok(transition(
        definition,
        status,
        state,
        reason.to_string(),
        reason_data.map(str::to_string),
        now_ms,
    ))
}

/// Drops history older than CloudWatch keeps.
pub fn prune_history(history: &mut Vec<HistoryItem>, now_ms: i64) {
    history.retain(|item| item.timestamp_ms >= now_ms - HISTORY_RETENTION_MS);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(n: i64, m: Option<i64>, treat: TreatMissingData) -> AlarmDefinition {
        AlarmDefinition {
            name: "a".into(),
            arn: "arn:aws:cloudwatch:us-east-1:000000000000:alarm:a".into(),
            description: None,
            actions_enabled: true,
            ok_actions: vec![],
            alarm_actions: vec![],
            insufficient_data_actions: vec![],
            watched: Watched::Metric {
                key: MetricKey::new("App", "M", &[]),
                statistic: Statistic::Average,
                statistic_name: "Average".into(),
                period_s: 300,
                unit: None,
            },
            evaluation_periods: n,
            datapoints_to_alarm: m,
            threshold: 50.0,
            comparison_operator: ComparisonOperator::GreaterThanThreshold,
            treat_missing_data: treat,
            ignore_low_sample_count: false,
        }
    }

    /// "0 - X - X", oldest first, as the documentation writes the rows.
    fn slots(row: &str) -> Vec<(i64, Slot)> {
        row.split_whitespace()
            .enumerate()
            .map(|(i, c)| {
                let slot = match c {
                    "X" => Slot::Point {
                        value: 90.0,
                        breaching: true,
                        sample_count: Some(1.0),
                    },
                    "0" => Slot::Point {
                        value: 10.0,
                        breaching: false,
                        sample_count: Some(1.0),
                    },
                    _ => Slot::Missing,
                };
                (i as i64 * 300_000, slot)
            })
            .collect()
    }

    /// The two tables of "How alarm state is evaluated when data is missing":
    /// rows, then the state for missing, ignore, breaching, notBreaching
    /// (None: the current state is kept).
    #[test]
    fn the_documented_missing_data_tables() {
        use AlarmState::{Alarm as A, InsufficientData as I, Ok as O};
        let three_of_three: [(&str, [Option<AlarmState>; 4]); 5] = [
            ("0 - X - X", [Some(O), Some(O), Some(O), Some(O)]),
            ("0 - - - -", [Some(O), Some(O), Some(O), Some(O)]),
            ("- - - - -", [Some(I), None, Some(A), Some(O)]),
            ("0 X X - X", [Some(A), Some(A), Some(A), Some(A)]),
            ("- - X - -", [Some(A), None, Some(A), Some(O)]),
        ];
        let two_of_three: [(&str, [Option<AlarmState>; 4]); 5] = [
            ("0 - X - X", [Some(A), Some(A), Some(A), Some(A)]),
            ("0 0 X 0 X", [Some(A), Some(A), Some(A), Some(A)]),
            ("0 - X - -", [Some(O), Some(O), Some(A), Some(O)]),
            ("- - - - 0", [Some(O), Some(O), Some(A), Some(O)]),
            ("- - - X -", [Some(A), None, Some(A), Some(O)]),
        ];
        let treatments = [
            TreatMissingData::Missing,
            TreatMissingData::Ignore,
            TreatMissingData::Breaching,
            TreatMissingData::NotBreaching,
        ];
        for (m, table) in [(3, three_of_three), (2, two_of_three)] {
            for (row, expected) in table {
                for (treat, want) in treatments.iter().zip(expected) {
                    let decision =
                        decide(&definition(3, Some(m), *treat), AlarmState::Ok, &slots(row));
                    assert_eq!(decision.state, want, "{m} of 3, {row}, {treat:?}");
                }
            }
        }
        // Not premature: a single new breaching point.
        assert_eq!(
            decide(
                &definition(3, Some(3), TreatMissingData::Missing),
                AlarmState::Ok,
                &slots("- - - - X")
            )
            .state,
            None
        );
    }

    #[test]
    fn reasons_are_worded_as_cloudwatch_words_them() {
        let t = |minute: i64| crate::time::from_civil(2024, 5, 16, 6, minute as u32, 0);
        let points = |values: &[f64]| -> Vec<(i64, Slot)> {
            values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    (
                        t(40 + i as i64),
                        Slot::Point {
                            value: *v,
                            breaching: *v > 50.0,
                            sample_count: Some(1.0),
                        },
                    )
                })
                .collect()
        };
        let mut d = definition(3, Some(3), TreatMissingData::Missing);
        let decision = decide(&d, AlarmState::Ok, &points(&[1.0, 1.0, 90.0, 91.5, 92.0]));
        assert_eq!(decision.reason, "Threshold Crossed: 3 out of the last 3 datapoints [92.0 (16/05/24 06:44:00), 91.5 (16/05/24 06:43:00), 90.0 (16/05/24 06:42:00)] were greater than the threshold (50.0) (minimum 3 datapoints for OK -> ALARM transition).");
        let decision = decide(
            &d,
            AlarmState::Alarm,
            &points(&[90.0, 90.0, 90.0, 90.0, 10.0]),
        );
        assert_eq!(decision.reason, "Threshold Crossed: 1 out of the last 3 datapoints [10.0 (16/05/24 06:44:00)] was not greater than the threshold (50.0) (minimum 1 datapoint for ALARM -> OK transition).");
        d.datapoints_to_alarm = None;
        d.evaluation_periods = 1;
        let decision = decide(&d, AlarmState::Ok, &points(&[1.0, 1.0, 70.0]));
        assert_eq!(decision.reason, "Threshold Crossed: 1 datapoint [70.0 (16/05/24 06:42:00)] was greater than the threshold (50.0).");
        d.evaluation_periods = 5;
        d.datapoints_to_alarm = Some(5);
        let many: Vec<(i64, Slot)> = (0..7)
            .map(|i| {
                (
                    t(30 + i),
                    Slot::Point {
                        value: 60.0 + i as f64,
                        breaching: true,
                        sample_count: None,
                    },
                )
            })
            .collect();
        assert_eq!(decide(&d, AlarmState::Ok, &many).reason, "Threshold Crossed: 5 out of the last 5 datapoints were greater than the threshold (50.0). The most recent datapoints which crossed the threshold: [66.0 (16/05/24 06:36:00), 65.0 (16/05/24 06:35:00), 64.0 (16/05/24 06:34:00), 63.0 (16/05/24 06:33:00), 62.0 (16/05/24 06:32:00)] (minimum 5 datapoints for OK -> ALARM transition).");
        let empty: Vec<(i64, Slot)> = (0..5).map(|i| (t(i), Slot::Missing)).collect();
        d.treat_missing_data = TreatMissingData::Breaching;
        d.evaluation_periods = 3;
        assert_eq!(decide(&d, AlarmState::Ok, &empty).reason, "Threshold Crossed: no datapoints were received for 3 periods and 3 missing datapoints were treated as [Breaching].");
        d.treat_missing_data = TreatMissingData::Missing;
        assert_eq!(
            decide(&d, AlarmState::Ok, &empty).reason,
            "Insufficient Data: 3 datapoints were unknown."
        );
    }
}
