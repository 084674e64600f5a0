//! CloudWatch's API (service `monitoring`) over `flotilla_metrics`: the
//! metrics store (PutMetricData, GetMetricStatistics, GetMetricData,
//! ListMetrics) and metric alarms kept in the store (PutMetricAlarm,
//! DescribeAlarms, DescribeAlarmsForMetric, DescribeAlarmHistory,
//! DeleteAlarms, SetAlarmState, Enable/DisableAlarmActions).
//!
//! Every checking and evaluating rule is `flotilla_metrics`'; this module
//! translates the wire shapes to its plain types and back, keeps alarms as
//! records, and hands an alarm's Auto Scaling actions to `app_autoscaling`.
//! Time is the metrics clock (`Ecs::metrics_now_ms`).

use std::sync::Mutex;

use flotilla_aws::monitoring as cw;
use flotilla_aws::monitoring::{MonitoringRequest as Q, MonitoringResponse as R};
use flotilla_metrics::alarm::{
    self, AlarmDefinition, AlarmState, AlarmStatus, HistoryItem, PutMetricAlarmInput, Watched,
};
use flotilla_metrics::metric_data::{
    self, GetMetricDataInput, MetricDataQuery, MetricStat, ScanBy,
};
use flotilla_metrics::put::{self, MetricDatumInput, PutMetricDataInput, StatisticSet};
use flotilla_metrics::query::{self, GetMetricStatisticsInput, ListMetricsInput};
use flotilla_metrics::{CloudWatchError, Dimension, DimensionFilter, ErrorCode, MetricStore};
use flotilla_records::Attempt;
use flotilla_store::Txn;
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::records::{self, keys};
use crate::tag_set::{self, TagMap};
use crate::Ecs;

/// Alarms an account may have.
pub const ALARMS_MAX: usize = 10_000;
/// History items kept per alarm (besides CloudWatch's two weeks).
pub const ALARM_HISTORY_MAX: usize = 100;
/// DescribeAlarms' page size when MaxRecords is not given, and its most.
pub const DESCRIBE_ALARMS_PAGE_DEFAULT: usize = 50;
pub const DESCRIBE_ALARMS_PAGE_MAX: usize = 100;
/// Alarm names DeleteAlarms and Enable/DisableAlarmActions take at once.
pub const ALARM_NAMES_MAX: usize = 100;

/// One stored alarm: the request as given (for Describe), its checked
/// definition, its state and its history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AlarmRecord {
    pub input: cw::PutMetricAlarmInput,
    pub definition: AlarmDefinition,
    pub status: AlarmStatus,
    pub configuration_updated_ms: i64,
    pub history: Vec<HistoryItem>,
    /// Set when the alarm is created and by TagResource; PutMetricAlarm on
    /// an existing alarm leaves them, as CloudWatch does.
    #[serde(default)]
    pub tags: TagMap,
}

impl AlarmRecord {
    pub(crate) fn add_history(&mut self, items: Vec<HistoryItem>, now_ms: i64) {
        self.history.extend(items);
        alarm::prune_history(&mut self.history, now_ms);
        if self.history.len() > ALARM_HISTORY_MAX {
            let excess = self.history.len() - ALARM_HISTORY_MAX;
            self.history.drain(..excess);
        }
    }
}

/// The metrics store, shared by the API, the usage publisher and the alarm
/// evaluator. Each use holds the lock for one in-memory operation.
pub struct Metrics {
    store: Mutex<MetricStore>,
    /// How many metrics-clock milliseconds pass per control-plane clock
    /// millisecond: 1, or more under `--metrics-time-scale` (tests).
    time_scale: u64,
    /// The control-plane clock reading the scale counts from.
    origin_ms: u64,
}

impl Metrics {
    pub fn new(store: MetricStore, time_scale: u64, origin_ms: u64) -> Metrics {
        Metrics {
            store: Mutex::new(store),
            time_scale: time_scale.max(1),
            origin_ms,
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, MetricStore> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The metrics clock at control-plane clock reading `now_ms`.
    pub fn scaled(&self, now_ms: u64) -> i64 {
        let elapsed = now_ms.saturating_sub(self.origin_ms);
        (self
            .origin_ms
            .saturating_add(elapsed.saturating_mul(self.time_scale))) as i64
    }

    pub fn time_scale(&self) -> u64 {
        self.time_scale
    }
}

/// The metrics clock at control-plane clock reading `now_ms`, when it runs
/// `time_scale` times faster from `origin_ms`.
pub fn scaled_time_ms(origin_ms: u64, time_scale: u64, now_ms: u64) -> i64 {
    let elapsed = now_ms.saturating_sub(origin_ms);
    origin_ms.saturating_add(elapsed.saturating_mul(time_scale.max(1))) as i64
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(
            MetricStore::in_memory(flotilla_metrics::StoreLimits::default()),
            1,
            0,
        )
    }
}

/// The wire error for a CloudWatch error: `__type` is the model's shape
/// name; [`query_error_code`] gives the Query code the edge also sends.
pub fn api_error(error: CloudWatchError) -> ApiError {
    let (shape, status) = match error.code {
        ErrorCode::InvalidParameterValue => ("InvalidParameterValueException", 400),
        ErrorCode::InvalidParameterCombination => ("InvalidParameterCombinationException", 400),
        ErrorCode::MissingParameter => ("MissingRequiredParameterException", 400),
        ErrorCode::ValidationError => ("ValidationException", 400),
        ErrorCode::InvalidNextToken => ("InvalidNextToken", 400),
        ErrorCode::LimitExceeded => ("LimitExceededFault", 400),
        ErrorCode::ResourceNotFound => ("ResourceNotFound", 404),
        ErrorCode::InternalServiceFault => ("InternalServiceFault", 500),
    };
    ApiError::new(shape, status, error.message)
}

/// The Query protocol's code and fault of a CloudWatch error shape, as
/// botocore's model declares them (`x-amzn-query-error: CODE;FAULT`):
/// CloudWatch's model is awsQueryCompatible, so JSON clients read the code
/// from there.
pub fn query_error_code(shape: &str) -> Option<(&'static str, &'static str)> {
    Some(match shape {
        "InvalidParameterValueException" => ("InvalidParameterValue", "Sender"),
        "InvalidParameterCombinationException" => ("InvalidParameterCombination", "Sender"),
        "MissingRequiredParameterException" => ("MissingParameter", "Sender"),
        "ValidationException" => ("ValidationError", "Sender"),
        "InvalidNextToken" => ("InvalidNextToken", "Sender"),
        "LimitExceededFault" => ("LimitExceeded", "Sender"),
        "ResourceNotFound" => ("ResourceNotFound", "Sender"),
        "ResourceNotFoundException" => ("ResourceNotFoundException", "Sender"),
        "InvalidFormatFault" => ("InvalidFormat", "Sender"),
        "InternalServiceFault" => ("InternalServiceError", "Receiver"),
        _ => return None,
    })
}

fn tag_pairs(tags: Option<&[cw::Tag]>) -> impl Iterator<Item = (&str, &str)> {
    tags.unwrap_or_default().iter().map(|tag| {
        (
            tag.key.as_deref().unwrap_or_default(),
            tag.value.as_deref().unwrap_or_default(),
        )
    })
}

fn wire_tags(tags: &TagMap) -> Vec<cw::Tag> {
    tags.iter()
        .map(|(key, value)| cw::Tag {
            key: Some(key.clone()),
            value: Some(value.clone()),
        })
        .collect()
}

fn tag_error(problem: tag_set::TagProblem) -> ApiError {
    api_error(CloudWatchError::invalid(problem.to_string()))
}

fn ms(seconds: f64) -> i64 {
    (seconds * 1000.0).round() as i64
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn dimensions(wire: Option<Vec<cw::Dimension>>) -> Vec<Dimension> {
    wire.unwrap_or_default()
        .into_iter()
        .map(|d| Dimension::new(d.name.unwrap_or_default(), d.value.unwrap_or_default()))
        .collect()
}

fn wire_dimensions(dimensions: &[Dimension]) -> Option<Vec<cw::Dimension>> {
    Some(
        dimensions
            .iter()
            .map(|d| cw::Dimension {
                name: Some(d.name.clone()),
                value: Some(d.value.clone()),
            })
            .collect(),
    )
}

/// A value of a generated enum from its wire text.
fn wire_enum<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

fn queries(wire: Option<Vec<cw::MetricDataQuery>>) -> Vec<MetricDataQuery> {
    wire.unwrap_or_default()
        .into_iter()
        .map(|q| MetricDataQuery {
            id: q.id.unwrap_or_default(),
            metric_stat: q.metric_stat.map(|s| {
                let metric = s.metric.unwrap_or_default();
                MetricStat {
                    namespace: metric.namespace.unwrap_or_default(),
                    metric_name: metric.metric_name.unwrap_or_default(),
                    dimensions: dimensions(metric.dimensions),
                    period_s: i64::from(s.period.unwrap_or_default()),
                    stat: s.stat.unwrap_or_default(),
                    unit: s.unit.map(|u| u.as_str().to_owned()),
                }
            }),
            expression: q.expression,
            label: q.label,
            return_data: q.return_data,
            period_s: q.period.map(i64::from),
        })
        .collect()
}

fn wire_queries(queries: &[MetricDataQuery]) -> Vec<cw::MetricDataQuery> {
    queries
        .iter()
        .map(|q| cw::MetricDataQuery {
            id: Some(q.id.clone()),
            metric_stat: q.metric_stat.as_ref().map(|s| cw::MetricStat {
                metric: Some(cw::Metric {
                    namespace: Some(s.namespace.clone()),
                    metric_name: Some(s.metric_name.clone()),
                    dimensions: wire_dimensions(&s.dimensions),
                }),
                period: Some(s.period_s as i32),
                stat: Some(s.stat.clone()),
                unit: s.unit.as_deref().and_then(wire_enum),
            }),
            expression: q.expression.clone(),
            label: q.label.clone(),
            return_data: q.return_data,
            period: q.period_s.map(|p| p as i32),
            account_id: None,
        })
        .collect()
}

/// PutMetricAlarm's wire input as `flotilla_metrics` takes it.
pub(crate) fn alarm_input(wire: &cw::PutMetricAlarmInput) -> PutMetricAlarmInput {
    PutMetricAlarmInput {
        alarm_name: wire.alarm_name.clone().unwrap_or_default(),
        alarm_description: wire.alarm_description.clone(),
        actions_enabled: wire.actions_enabled,
        ok_actions: wire.ok_actions.clone().unwrap_or_default(),
        alarm_actions: wire.alarm_actions.clone().unwrap_or_default(),
        insufficient_data_actions: wire.insufficient_data_actions.clone().unwrap_or_default(),
        metric_name: wire.metric_name.clone(),
        namespace: wire.namespace.clone(),
        statistic: wire.statistic.map(|s| s.as_str().to_owned()),
        extended_statistic: wire.extended_statistic.clone(),
        dimensions: dimensions(wire.dimensions.clone()),
        period_s: wire.period.map(i64::from),
        unit: wire.unit.map(|u| u.as_str().to_owned()),
        evaluation_periods: wire.evaluation_periods.map(i64::from),
        datapoints_to_alarm: wire.datapoints_to_alarm.map(i64::from),
        threshold: wire.threshold,
        comparison_operator: wire.comparison_operator.map(|c| c.as_str().to_owned()),
        treat_missing_data: wire.treat_missing_data.clone(),
        evaluate_low_sample_count_percentile: wire.evaluate_low_sample_count_percentile.clone(),
        metrics: queries(wire.metrics.clone()),
        threshold_metric_id: wire.threshold_metric_id.clone(),
    }
}

/// A `flotilla_metrics` alarm input as the wire shape (alarms that target
/// tracking makes are stored as if PutMetricAlarm had been called).
pub(crate) fn wire_alarm_input(input: &PutMetricAlarmInput) -> cw::PutMetricAlarmInput {
    cw::PutMetricAlarmInput {
        alarm_name: Some(input.alarm_name.clone()),
        alarm_description: input.alarm_description.clone(),
        actions_enabled: input.actions_enabled,
        ok_actions: Some(input.ok_actions.clone()),
        alarm_actions: Some(input.alarm_actions.clone()),
        insufficient_data_actions: Some(input.insufficient_data_actions.clone()),
        metric_name: input.metric_name.clone(),
        namespace: input.namespace.clone(),
        statistic: input.statistic.as_deref().and_then(wire_enum),
        extended_statistic: input.extended_statistic.clone(),
        dimensions: (!input.dimensions.is_empty())
            .then(|| wire_dimensions(&input.dimensions))
            .flatten(),
        period: input.period_s.map(|p| p as i32),
        unit: input.unit.as_deref().and_then(wire_enum),
        evaluation_periods: input.evaluation_periods.map(|p| p as i32),
        datapoints_to_alarm: input.datapoints_to_alarm.map(|p| p as i32),
        threshold: input.threshold,
        comparison_operator: input.comparison_operator.as_deref().and_then(wire_enum),
        treat_missing_data: input.treat_missing_data.clone(),
        metrics: (!input.metrics.is_empty()).then(|| wire_queries(&input.metrics)),
        threshold_metric_id: input.threshold_metric_id.clone(),
        ..Default::default()
    }
}

fn describe_alarm(record: &AlarmRecord) -> cw::MetricAlarm {
    let input = &record.input;
    let definition = &record.definition;
    let status = &record.status;
    cw::MetricAlarm {
        alarm_name: Some(definition.name.clone()),
        alarm_arn: Some(definition.arn.clone()),
        alarm_description: definition.description.clone(),
        alarm_configuration_updated_timestamp: Some(seconds(record.configuration_updated_ms)),
        actions_enabled: Some(definition.actions_enabled),
        ok_actions: Some(definition.ok_actions.clone()),
        alarm_actions: Some(definition.alarm_actions.clone()),
        insufficient_data_actions: Some(definition.insufficient_data_actions.clone()),
        state_value: wire_enum(status.state.as_str()),
        state_reason: Some(status.reason.clone()),
        state_reason_data: status.reason_data.clone(),
        state_updated_timestamp: Some(seconds(status.state_updated_ms)),
        state_transitioned_timestamp: Some(seconds(status.state_transitioned_ms)),
        metric_name: input.metric_name.clone(),
        namespace: input.namespace.clone(),
        statistic: input.statistic,
        extended_statistic: input.extended_statistic.clone(),
        dimensions: Some(input.dimensions.clone().unwrap_or_default()),
        period: input.period,
        unit: input.unit,
        evaluation_periods: Some(definition.evaluation_periods as i32),
        datapoints_to_alarm: definition.datapoints_to_alarm.map(|d| d as i32),
        threshold: input.threshold,
        comparison_operator: wire_enum(definition.comparison_operator.as_str()),
        treat_missing_data: Some(definition.treat_missing_data.as_str().to_owned()),
        evaluate_low_sample_count_percentile: input.evaluate_low_sample_count_percentile.clone(),
        metrics: input.metrics.clone(),
        threshold_metric_id: input.threshold_metric_id.clone(),
        ..Default::default()
    }
}

fn history_item(item: &HistoryItem) -> cw::AlarmHistoryItem {
    cw::AlarmHistoryItem {
        alarm_name: Some(item.alarm_name.clone()),
        alarm_type: Some(cw::AlarmType::MetricAlarm),
        timestamp: Some(seconds(item.timestamp_ms)),
        history_item_type: wire_enum(item.item_type.as_str()),
        history_summary: Some(item.summary.clone()),
        history_data: Some(item.data.clone()),
        ..Default::default()
    }
}

fn alarm_not_found(name: &str) -> ApiError {
    api_error(CloudWatchError::new(
        ErrorCode::ResourceNotFound,
        format!("Alarm {name} not found"),
    ))
}

fn check_names(names: &[String], parameter: &str) -> Result<(), ApiError> {
    if names.len() > ALARM_NAMES_MAX {
        return Err(api_error(CloudWatchError::invalid(format!(
            "The collection {parameter} must not have a size greater than {ALARM_NAMES_MAX}."
        ))));
    }
    Ok(())
}

impl Ecs {
    /// The metrics clock now: the control plane's, scaled by
    /// `--metrics-time-scale` (1 outside tests).
    pub fn metrics_now_ms(&self) -> i64 {
        self.metrics.scaled(self.clock.now_ms())
    }

    /// Carries out one CloudWatch request.
    pub async fn handle_cloudwatch(&self, request: Q) -> Result<R, ApiError> {
        if let Some(member) = request.missing_required() {
            return Err(api_error(CloudWatchError::missing(member)));
        }
        let now_ms = self.metrics_now_ms();
        Ok(match request {
            Q::PutMetricData(r) => R::PutMetricData(self.put_metric_data(r, now_ms)?),
            Q::GetMetricStatistics(r) => {
                R::GetMetricStatistics(self.get_metric_statistics(r, now_ms)?)
            }
            Q::GetMetricData(r) => R::GetMetricData(self.get_metric_data(r, now_ms)?),
            Q::ListMetrics(r) => R::ListMetrics(self.list_metrics(r, now_ms)?),
            Q::PutMetricAlarm(r) => R::PutMetricAlarm(self.put_metric_alarm(r, now_ms).await?),
            Q::DescribeAlarms(r) => R::DescribeAlarms(self.describe_alarms(r)?),
            Q::DescribeAlarmsForMetric(r) => {
                R::DescribeAlarmsForMetric(self.describe_alarms_for_metric(r)?)
            }
            Q::DescribeAlarmHistory(r) => R::DescribeAlarmHistory(self.describe_alarm_history(r)?),
            Q::DeleteAlarms(r) => R::DeleteAlarms(self.delete_alarms(r).await?),
            Q::SetAlarmState(r) => R::SetAlarmState(self.set_alarm_state(r, now_ms).await?),
            Q::EnableAlarmActions(r) => {
                self.alarm_actions_enabled(r.alarm_names.unwrap_or_default(), true)
                    .await?;
                R::EnableAlarmActions(cw::NoOutput {})
            }
            Q::DisableAlarmActions(r) => {
                self.alarm_actions_enabled(r.alarm_names.unwrap_or_default(), false)
                    .await?;
                R::DisableAlarmActions(cw::NoOutput {})
            }
            Q::TagResource(r) => {
                let tags = r.tags.unwrap_or_default();
                let arn = r.resource_arn.unwrap_or_default();
                self.change_alarm_tags(&arn, |current| {
                    tag_set::with_tags(current, tag_pairs(Some(&tags)))
                })
                .await?;
                R::TagResource(cw::TagResourceOutput {})
            }
            Q::UntagResource(r) => {
                let keys = r.tag_keys.unwrap_or_default();
                let arn = r.resource_arn.unwrap_or_default();
                self.change_alarm_tags(&arn, |current| {
                    tag_set::without_tags(current, keys.iter().map(String::as_str))
                })
                .await?;
                R::UntagResource(cw::UntagResourceOutput {})
            }
            Q::ListTagsForResource(r) => {
                let arn = r.resource_arn.unwrap_or_default();
                let (_, found) = self.tagged_alarm(&arn)?;
                R::ListTagsForResource(cw::ListTagsForResourceOutput {
                    tags: Some(wire_tags(&found.value.tags)),
                })
            }
            other => {
                return Err(ApiError::new(
                    "InvalidAction",
                    400,
                    format!(
                        "{} is not supported by this Flotilla server yet",
                        other.operation()
                    ),
                ))
            }
        })
    }

    fn put_metric_data(
        &self,
        r: cw::PutMetricDataInput,
        now_ms: i64,
    ) -> Result<cw::NoOutput, ApiError> {
        if r.entity_metric_data.as_ref().is_some_and(|e| !e.is_empty()) {
            return Err(api_error(CloudWatchError::invalid(
                "EntityMetricData is not supported by this Flotilla server",
            )));
        }
        let input = PutMetricDataInput {
            namespace: r.namespace.unwrap_or_default(),
            metric_data: r
                .metric_data
                .unwrap_or_default()
                .into_iter()
                .map(|d| MetricDatumInput {
                    metric_name: d.metric_name.unwrap_or_default(),
                    dimensions: dimensions(d.dimensions),
                    timestamp_ms: d.timestamp.map(ms),
                    value: d.value,
                    statistic_values: d.statistic_values.map(|s| StatisticSet {
                        sample_count: s.sample_count.unwrap_or_default(),
                        sum: s.sum.unwrap_or_default(),
                        minimum: s.minimum.unwrap_or_default(),
                        maximum: s.maximum.unwrap_or_default(),
                    }),
                    values: d.values,
                    counts: d.counts,
                    unit: d.unit.map(|u| u.as_str().to_owned()),
                    storage_resolution: d.storage_resolution.map(i64::from),
                })
                .collect(),
        };
        let datums = put::check_put_metric_data(&input, now_ms, false).map_err(api_error)?;
        self.metrics
            .lock()
            .put(&datums, now_ms)
            .map_err(api_error)?;
        Ok(cw::NoOutput {})
    }

    fn get_metric_statistics(
        &self,
        r: cw::GetMetricStatisticsInput,
        now_ms: i64,
    ) -> Result<cw::GetMetricStatisticsOutput, ApiError> {
        let input = GetMetricStatisticsInput {
            namespace: r.namespace.unwrap_or_default(),
            metric_name: r.metric_name.unwrap_or_default(),
            dimensions: dimensions(r.dimensions),
            start_time_ms: r.start_time.map(ms).unwrap_or_default(),
            end_time_ms: r.end_time.map(ms).unwrap_or_default(),
            period_s: i64::from(r.period.unwrap_or_default()),
            statistics: r
                .statistics
                .unwrap_or_default()
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            extended_statistics: r.extended_statistics.unwrap_or_default(),
            unit: r.unit.map(|u| u.as_str().to_owned()),
        };
        let output = query::get_metric_statistics(&self.metrics.lock(), &input, now_ms)
            .map_err(api_error)?;
        Ok(cw::GetMetricStatisticsOutput {
            label: Some(output.label),
            datapoints: Some(
                output
                    .datapoints
                    .into_iter()
                    .map(|d| cw::Datapoint {
                        timestamp: Some(seconds(d.timestamp_ms)),
                        sample_count: d.sample_count,
                        average: d.average,
                        sum: d.sum,
                        minimum: d.minimum,
                        maximum: d.maximum,
                        unit: wire_enum(d.unit.as_str()),
                        extended_statistics: (!d.extended_statistics.is_empty())
                            .then_some(d.extended_statistics),
                    })
                    .collect(),
            ),
        })
    }

    fn get_metric_data(
        &self,
        r: cw::GetMetricDataInput,
        now_ms: i64,
    ) -> Result<cw::GetMetricDataOutput, ApiError> {
        if r.label_options.is_some() {
            return Err(api_error(CloudWatchError::validation(
                "LabelOptions is not supported by this Flotilla server",
            )));
        }
        let input = GetMetricDataInput {
            queries: queries(r.metric_data_queries),
            start_time_ms: r.start_time.map(ms).unwrap_or_default(),
            end_time_ms: r.end_time.map(ms).unwrap_or_default(),
            next_token: r.next_token,
            scan_by: match r.scan_by {
                Some(cw::ScanBy::TimestampAscending) => ScanBy::TimestampAscending,
                _ => ScanBy::TimestampDescending,
            },
            max_datapoints: r.max_datapoints.map(i64::from),
        };
        let output = metric_data::get_metric_data(&self.metrics.lock(), &input, now_ms)
            .map_err(api_error)?;
        Ok(cw::GetMetricDataOutput {
            metric_data_results: Some(
                output
                    .results
                    .into_iter()
                    .map(|result| cw::MetricDataResult {
                        id: Some(result.id),
                        label: Some(result.label),
                        timestamps: Some(result.timestamps_ms.into_iter().map(seconds).collect()),
                        values: Some(result.values),
                        status_code: wire_enum(result.status_code.as_str()),
                        messages: Some(Vec::new()),
                    })
                    .collect(),
            ),
            next_token: output.next_token,
            messages: Some(Vec::new()),
        })
    }

    fn list_metrics(
        &self,
        r: cw::ListMetricsInput,
        now_ms: i64,
    ) -> Result<cw::ListMetricsOutput, ApiError> {
        if r.include_linked_accounts == Some(true) || r.owning_account.is_some() {
            return Err(api_error(CloudWatchError::invalid(
                "cross-account observability (IncludeLinkedAccounts, OwningAccount) is not supported by this Flotilla server",
            )));
        }
        let input = ListMetricsInput {
            namespace: r.namespace,
            metric_name: r.metric_name,
            dimensions: r
                .dimensions
                .unwrap_or_default()
                .into_iter()
                .map(|f| DimensionFilter {
                    name: f.name.unwrap_or_default(),
                    value: f.value,
                })
                .collect(),
            next_token: r.next_token,
            recently_active: r.recently_active.map(|a| a.as_str().to_owned()),
        };
        let output =
            query::list_metrics(&self.metrics.lock(), &input, now_ms).map_err(api_error)?;
        Ok(cw::ListMetricsOutput {
            metrics: Some(
                output
                    .metrics
                    .into_iter()
                    .map(|key| cw::Metric {
                        namespace: Some(key.namespace),
                        metric_name: Some(key.name),
                        dimensions: wire_dimensions(&key.dimensions),
                    })
                    .collect(),
            ),
            next_token: output.next_token,
            owning_accounts: None,
        })
    }

    pub(crate) fn alarm_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:cloudwatch:{}:{}:alarm:{name}",
            self.scope.region, self.scope.account_id
        )
    }

    async fn put_metric_alarm(
        &self,
        r: cw::PutMetricAlarmInput,
        now_ms: i64,
    ) -> Result<cw::NoOutput, ApiError> {
        for (member, given) in [
            ("EvaluationCriteria", r.evaluation_criteria.is_some()),
            ("EvaluationInterval", r.evaluation_interval.is_some()),
            ("ActionConfiguration", r.action_configuration.is_some()),
            ("WarmUpConfiguration", r.warm_up_configuration.is_some()),
            ("EvaluationWindow", r.evaluation_window.is_some()),
        ] {
            if given {
                return Err(api_error(CloudWatchError::invalid(format!(
                    "{member} is not supported by this Flotilla server"
                ))));
            }
        }
        self.store_alarm(r, now_ms).await
    }

    /// PutMetricAlarm, also for the alarms target tracking makes.
    pub(crate) async fn store_alarm(
        &self,
        wire: cw::PutMetricAlarmInput,
        now_ms: i64,
    ) -> Result<cw::NoOutput, ApiError> {
        let input = alarm_input(&wire);
        let definition = alarm::check_put_metric_alarm(&input, &self.alarm_arn(&input.alarm_name))
            .map_err(api_error)?;
        let tags = tag_set::with_tags(&TagMap::new(), tag_pairs(wire.tags.as_deref()))
            .map_err(tag_error)?;
        let wire = cw::PutMetricAlarmInput { tags: None, ..wire };
        let key = keys::alarm(&definition.name);
        records::mutate(self.store.as_ref(), || {
            let existing = records::get::<AlarmRecord>(self.store.as_ref(), &key)?;
            let (mut record, revision) = match existing {
                Some(found) => {
                    let mut record = found.value;
                    record.input = wire.clone();
                    record.definition = definition.clone();
                    (record, found.revision)
                }
                None => {
                    let count = self
                        .store
                        .list(keys::ALARMS, None, ALARMS_MAX)
                        .map_err(records::store_error)?
                        .entries
                        .len();
                    if count >= ALARMS_MAX {
                        return Err(api_error(CloudWatchError::new(
                            ErrorCode::LimitExceeded,
                            format!(
                                "The maximum number of alarms ({ALARMS_MAX}) has been reached."
                            ),
                        )));
                    }
                    (
                        AlarmRecord {
                            input: wire.clone(),
                            definition: definition.clone(),
                            status: AlarmStatus::created(now_ms),
                            configuration_updated_ms: now_ms,
                            history: Vec::new(),
                            tags: tags.clone(),
                        },
                        0,
                    )
                }
            };
            record.configuration_updated_ms = now_ms;
            let item = alarm::configuration_history(&definition, revision == 0, now_ms);
            record.add_history(vec![item], now_ms);
            let txn = Txn::new()
                .expect(&key, revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, ()))
        })
        .await?;
        Ok(cw::NoOutput {})
    }

    /// The alarm a resource ARN names (its key and record), or CloudWatch's
    /// error for an ARN that is not an alarm of this account and region, or
    /// an alarm that does not exist.
    fn tagged_alarm(
        &self,
        arn: &str,
    ) -> Result<(String, records::Versioned<AlarmRecord>), ApiError> {
        let Some(name) = arn.strip_prefix(&self.alarm_arn("")) else {
            return Err(api_error(CloudWatchError::invalid(format!(
                "Invalid value for ResourceARN: {arn} is not the ARN of an alarm in this account and region"
            ))));
        };
        let key = keys::alarm(name);
        match records::get::<AlarmRecord>(self.store.as_ref(), &key)? {
            Some(found) => Ok((key, found)),
            None => Err(ApiError::new(
                "ResourceNotFoundException",
                404,
                format!("Alarm {name} not found"),
            )),
        }
    }

    async fn change_alarm_tags(
        &self,
        arn: &str,
        change: impl Fn(&TagMap) -> Result<TagMap, tag_set::TagProblem>,
    ) -> Result<(), ApiError> {
        records::mutate(self.store.as_ref(), || {
            let (key, found) = self.tagged_alarm(arn)?;
            let mut record = found.value;
            record.tags = change(&record.tags).map_err(tag_error)?;
            let txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, ()))
        })
        .await
    }

    pub(crate) fn all_alarms(&self) -> Result<Vec<AlarmRecord>, ApiError> {
        let page = self
            .store
            .list(keys::ALARMS, None, ALARMS_MAX)
            .map_err(records::store_error)?;
        page.entries.iter().map(records::decode).collect()
    }

    fn describe_alarms(
        &self,
        r: cw::DescribeAlarmsInput,
    ) -> Result<cw::DescribeAlarmsOutput, ApiError> {
        if r.children_of_alarm_name.is_some() || r.parents_of_alarm_name.is_some() {
            return Err(api_error(CloudWatchError::invalid(
                "composite alarms (ChildrenOfAlarmName, ParentsOfAlarmName) are not supported by this Flotilla server",
            )));
        }
        let names = r.alarm_names.unwrap_or_default();
        check_names(&names, "AlarmNames")?;
        if !names.is_empty() && r.alarm_name_prefix.is_some() {
            return Err(api_error(CloudWatchError::combination(
                "AlarmNames and AlarmNamePrefix cannot be used together.",
            )));
        }
        let wants_metric_alarms = r
            .alarm_types
            .as_ref()
            .is_none_or(|types| types.contains(&cw::AlarmType::MetricAlarm));
        let page_size = match r.max_records {
            None => DESCRIBE_ALARMS_PAGE_DEFAULT,
            Some(n) if (1..=DESCRIBE_ALARMS_PAGE_MAX as i32).contains(&n) => n as usize,
            Some(n) => return Err(api_error(CloudWatchError::invalid_value(n, "MaxRecords"))),
        };
        let mut alarms: Vec<AlarmRecord> = if wants_metric_alarms {
            self.all_alarms()?
        } else {
            Vec::new()
        };
        alarms.retain(|a| {
            let d = &a.definition;
            (names.is_empty() || names.contains(&d.name))
                && r.alarm_name_prefix
                    .as_deref()
                    .is_none_or(|p| d.name.starts_with(p))
                && r.state_value
                    .is_none_or(|s| s.as_str() == a.status.state.as_str())
                && r.action_prefix.as_deref().is_none_or(|p| {
                    d.alarm_actions
                        .iter()
                        .chain(&d.ok_actions)
                        .chain(&d.insufficient_data_actions)
                        .any(|action| action.starts_with(p))
                })
        });
        alarms.sort_by(|a, b| a.definition.name.cmp(&b.definition.name));
        if let Some(token) = &r.next_token {
            let Some(position) = alarms.iter().position(|a| &a.definition.name > token) else {
                if alarms.iter().all(|a| &a.definition.name <= token) && !alarms.is_empty() {
                    return Ok(cw::DescribeAlarmsOutput {
                        metric_alarms: Some(Vec::new()),
                        composite_alarms: Some(Vec::new()),
                        ..Default::default()
                    });
                }
                return Err(api_error(CloudWatchError::new(
                    ErrorCode::InvalidNextToken,
                    "The service returned an invalid NextToken.",
                )));
            };
            alarms.drain(..position);
        }
        let more = alarms.len() > page_size;
        alarms.truncate(page_size);
        Ok(cw::DescribeAlarmsOutput {
            next_token: more
                .then(|| alarms.last().map(|a| a.definition.name.clone()))
                .flatten(),
            metric_alarms: Some(alarms.iter().map(describe_alarm).collect()),
            composite_alarms: Some(Vec::new()),
            log_alarms: None,
        })
    }

    fn describe_alarms_for_metric(
        &self,
        r: cw::DescribeAlarmsForMetricInput,
    ) -> Result<cw::DescribeAlarmsForMetricOutput, ApiError> {
        let namespace = r.namespace.unwrap_or_default();
        let name = r.metric_name.unwrap_or_default();
        let mut wanted = dimensions(r.dimensions);
        wanted.sort();
        let alarms = self.all_alarms()?;
        let matching = alarms
            .iter()
            .filter(|a| match &a.definition.watched {
                Watched::Metric {
                    key,
                    statistic_name,
                    period_s,
                    ..
                } => {
                    key.namespace == namespace
                        && key.name == name
                        && key.dimensions == wanted
                        && r.period.is_none_or(|p| i64::from(p) == *period_s)
                        && r.statistic.is_none_or(|s| s.as_str() == statistic_name)
                        && r.extended_statistic
                            .as_deref()
                            .is_none_or(|s| s == statistic_name)
                }
                Watched::Math { .. } => false,
            })
            .map(describe_alarm)
            .collect();
        Ok(cw::DescribeAlarmsForMetricOutput {
            metric_alarms: Some(matching),
        })
    }

    fn describe_alarm_history(
        &self,
        r: cw::DescribeAlarmHistoryInput,
    ) -> Result<cw::DescribeAlarmHistoryOutput, ApiError> {
        let alarms = match &r.alarm_name {
            Some(name) => records::get::<AlarmRecord>(self.store.as_ref(), &keys::alarm(name))?
                .map(|found| vec![found.value])
                .unwrap_or_default(),
            None => self.all_alarms()?,
        };
        let start = r.start_date.map(ms);
        let end = r.end_date.map(ms);
        let mut items: Vec<&HistoryItem> = alarms
            .iter()
            .flat_map(|a| a.history.iter())
            .filter(|item| {
                r.history_item_type
                    .is_none_or(|t| t.as_str() == item.item_type.as_str())
                    && start.is_none_or(|s| item.timestamp_ms >= s)
                    && end.is_none_or(|e| item.timestamp_ms <= e)
            })
            .collect();
        items.sort_by_key(|item| item.timestamp_ms);
        if r.scan_by != Some(cw::ScanBy::TimestampAscending) {
            items.reverse();
        }
        let page = r.max_records.map_or(DESCRIBE_ALARMS_PAGE_MAX, |n| {
            (n.max(1) as usize).min(DESCRIBE_ALARMS_PAGE_MAX)
        });
        let skip: usize = match &r.next_token {
            Some(token) => token.parse().map_err(|_| {
                api_error(CloudWatchError::new(
                    ErrorCode::InvalidNextToken,
                    "The service returned an invalid NextToken.",
                ))
            })?,
            None => 0,
        };
        let more = items.len() > skip + page;
        Ok(cw::DescribeAlarmHistoryOutput {
            alarm_history_items: Some(
                items
                    .into_iter()
                    .skip(skip)
                    .take(page)
                    .map(history_item)
                    .collect(),
            ),
            next_token: more.then(|| (skip + page).to_string()),
        })
    }

    async fn delete_alarms(&self, r: cw::DeleteAlarmsInput) -> Result<cw::NoOutput, ApiError> {
        let names = r.alarm_names.unwrap_or_default();
        check_names(&names, "AlarmNames")?;
        // All or nothing: a name that is not an alarm deletes none of them.
        records::mutate(self.store.as_ref(), || {
            let mut txn = Txn::new();
            for name in &names {
                let key = keys::alarm(name);
                let Some(found) = self.store.get(&key).map_err(records::store_error)? else {
                    return Err(alarm_not_found(name));
                };
                txn = txn.expect(&key, found.mod_revision).delete(&key);
            }
            Ok(Attempt::Commit(txn, ()))
        })
        .await?;
        Ok(cw::NoOutput {})
    }

    async fn alarm_actions_enabled(
        &self,
        names: Vec<String>,
        enabled: bool,
    ) -> Result<(), ApiError> {
        check_names(&names, "AlarmNames")?;
        records::mutate(self.store.as_ref(), || {
            let mut txn = Txn::new();
            for name in &names {
                let key = keys::alarm(name);
                // CloudWatch ignores names that are not alarms here.
                let Some(found) = records::get::<AlarmRecord>(self.store.as_ref(), &key)? else {
                    continue;
                };
                let mut record = found.value;
                record.definition.actions_enabled = enabled;
                record.input.actions_enabled = Some(enabled);
                txn = txn
                    .expect(&key, found.revision)
                    .put(&key, records::encode(&record));
            }
            Ok(Attempt::Commit(txn, ()))
        })
        .await
    }

    async fn set_alarm_state(
        &self,
        r: cw::SetAlarmStateInput,
        now_ms: i64,
    ) -> Result<cw::NoOutput, ApiError> {
        let name = r.alarm_name.unwrap_or_default();
        let state = r.state_value.map(|s| s.as_str()).unwrap_or_default();
        let reason = r.state_reason.unwrap_or_default();
        if let Some(data) = &r.state_reason_data {
            if serde_json::from_str::<serde_json::Value>(data).is_err() {
                return Err(ApiError::new(
                    "InvalidFormatFault",
                    400,
                    "Invalid JSON in StateReasonData",
                ));
            }
        }
        let key = keys::alarm(&name);
        let actions = records::mutate(self.store.as_ref(), || {
            let Some(found) = records::get::<AlarmRecord>(self.store.as_ref(), &key)? else {
                return Err(alarm_not_found(&name));
            };
            let mut record = found.value;
            let outcome = alarm::set_alarm_state(
                &record.definition,
                &record.status,
                state,
                &reason,
                r.state_reason_data.as_deref(),
                now_ms,
            )
            .map_err(api_error)?;
            record.status = outcome.status;
            record.add_history(outcome.history, now_ms);
            let txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, outcome.actions))
        })
        .await?;
        self.carry_out_alarm_actions(actions, now_ms).await;
        Ok(cw::NoOutput {})
    }

    /// Evaluates every alarm at `now_ms` (metrics clock), stores what
    /// changed, and carries out the actions that came due.
    pub async fn evaluate_alarms(&self, now_ms: i64) -> Result<(), ApiError> {
        let mut due = Vec::new();
        let page = self
            .store
            .list(keys::ALARMS, None, ALARMS_MAX)
            .map_err(records::store_error)?;
        for entry in page.entries {
            let record: AlarmRecord = records::decode(&entry)?;
            let outcome = {
                let store = self.metrics.lock();
                alarm::evaluate(&record.definition, &record.status, &store, now_ms)
            };
            let outcome = match outcome {
                Ok(Some(outcome)) => outcome,
                Ok(None) => continue,
                Err(error) => {
                    tracing::debug!(alarm = %record.definition.name, ?error, "alarm not evaluated");
                    continue;
                }
            };
            let key = entry.key.clone();
            let mut updated = record;
            updated.status = outcome.status;
            updated.add_history(outcome.history, now_ms);
            let txn = Txn::new()
                .expect(&key, entry.mod_revision)
                .put(&key, records::encode(&updated));
            match self.store.commit(txn).await {
                // The state is stored before its actions run, so a restart
                // does not run them twice.
                Ok(_) => due.extend(outcome.actions),
                // Changed meanwhile (PutMetricAlarm, SetAlarmState): the next
                // evaluation decides on the new record.
                Err(flotilla_store::StoreError::Conflict { .. }) => {}
                Err(error) => return Err(records::store_error(error)),
            }
        }
        self.carry_out_alarm_actions(due, now_ms).await;
        Ok(())
    }

    /// Alarm states by name, for "scale in only when every policy says so".
    pub(crate) fn alarm_states(
        &self,
    ) -> Result<std::collections::HashMap<String, AlarmState>, ApiError> {
        Ok(self
            .all_alarms()?
            .into_iter()
            .map(|a| (a.definition.name, a.status.state))
            .collect())
    }
}
