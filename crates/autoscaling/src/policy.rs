//! Scaling policies: PutScalingPolicy's checks, and the alarms a target
//! tracking policy makes (`TargetTracking-service/C/S-AlarmHigh-ID`: 3 of 3
//! one-minute points above the target; `-AlarmLow-ID`: 15 of 15 below 90%
//! of it, as Application Auto Scaling creates them for ECS services).

use flotilla_metrics::alarm::PutMetricAlarmInput;
use flotilla_metrics::metric_data::MetricDataQuery;
use flotilla_metrics::Dimension;
use serde::{Deserialize, Serialize};

use crate::{AutoScalingError, ValidationError};

/// Scaling policies per scalable target (step and target tracking together).
pub const POLICIES_PER_TARGET_MAX: usize = 50;
/// Step adjustments per step scaling policy.
pub const STEP_ADJUSTMENTS_MAX: usize = 20;
/// Cooldown when a step scaling policy gives none.
pub const STEP_COOLDOWN_DEFAULT_S: i64 = 300;
/// Target tracking's default cooldowns for ECS services.
pub const TARGET_TRACKING_COOLDOWN_DEFAULT_S: i64 = 300;
/// AlarmHigh: this many one-minute points above the target.
pub const ALARM_HIGH_PERIODS: i64 = 3;
/// AlarmLow: this many one-minute points below `ALARM_LOW_FRACTION` of it.
pub const ALARM_LOW_PERIODS: i64 = 15;
pub const ALARM_LOW_FRACTION: f64 = 0.9;
pub const POLICY_NAME_LENGTH_MAX: usize = 256;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PredefinedMetric {
    EcsServiceAverageCpuUtilization,
    EcsServiceAverageMemoryUtilization,
    /// With its ResourceLabel `app/LB/ID/targetgroup/TG/ID`.
    AlbRequestCountPerTarget(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TrackedMetric {
    Predefined(PredefinedMetric),
    Customized {
        namespace: String,
        metric_name: String,
        dimensions: Vec<Dimension>,
        statistic: String,
        unit: Option<String>,
    },
    /// A customized metric given as metric math.
    Math(Vec<MetricDataQuery>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetTracking {
    pub target_value: f64,
    pub metric: TrackedMetric,
    pub scale_out_cooldown_s: i64,
    pub scale_in_cooldown_s: i64,
    pub disable_scale_in: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdjustmentType {
    ChangeInCapacity,
    PercentChangeInCapacity,
    ExactCapacity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricAggregation {
    Average,
    Minimum,
    Maximum,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepAdjustment {
    pub lower_bound: Option<f64>,
    pub upper_bound: Option<f64>,
    pub scaling_adjustment: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepScaling {
    pub adjustment_type: AdjustmentType,
    pub steps: Vec<StepAdjustment>,
    pub min_adjustment_magnitude: Option<i64>,
    pub cooldown_s: i64,
    pub aggregation: MetricAggregation,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PolicyKind {
    TargetTracking(TargetTracking),
    Step(StepScaling),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalingPolicy {
    pub name: String,
    pub arn: String,
    pub kind: PolicyKind,
    /// The alarms a target tracking policy made: (name, high).
    pub alarms: Vec<(String, bool)>,
    pub created_ms: i64,
}

/// PutScalingPolicy's configuration as the client sent it (already
/// decoded; absent members are None).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetTrackingInput {
    pub target_value: Option<f64>,
    pub predefined_metric_type: Option<String>,
    pub resource_label: Option<String>,
    pub customized: Option<TrackedMetric>,
    pub scale_out_cooldown_s: Option<i64>,
    pub scale_in_cooldown_s: Option<i64>,
    pub disable_scale_in: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepScalingInput {
    pub adjustment_type: Option<String>,
    pub steps: Vec<StepAdjustment>,
    pub min_adjustment_magnitude: Option<i64>,
    pub cooldown_s: Option<i64>,
    pub metric_aggregation_type: Option<String>,
}

fn invalid(message: impl Into<String>) -> ValidationError {
    ValidationError(message.into())
}

pub fn check_policy_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty()
        || name.chars().count() > POLICY_NAME_LENGTH_MAX
        || name.chars().any(|c| c.is_control())
    {
        return Err(invalid(format!(
            "Invalid policy name {name}: 1 to 256 printable characters"
        )));
    }
    Ok(())
}

pub fn check_target_tracking(
    input: &TargetTrackingInput,
) -> Result<TargetTracking, ValidationError> {
    let target_value = input
        .target_value
        .ok_or_else(|| invalid("TargetValue is required for a target tracking scaling policy"))?;
    if !target_value.is_finite() || target_value <= 0.0 || target_value.abs() > 2f64.powi(360) {
        return Err(invalid(format!(
            "Invalid TargetValue {target_value}: the target value must be a positive number"
        )));
    }
    let metric = match (&input.predefined_metric_type, &input.customized) {
        (Some(_), Some(_)) => return Err(invalid("Specify either PredefinedMetricSpecification or CustomizedMetricSpecification, not both")),
        (None, None) => return Err(invalid("Either PredefinedMetricSpecification or CustomizedMetricSpecification must be specified")),
        (Some(kind), None) => {
            let predefined = match kind.as_str() {
                "ECSServiceAverageCPUUtilization" => PredefinedMetric::EcsServiceAverageCpuUtilization,
                "ECSServiceAverageMemoryUtilization" => PredefinedMetric::EcsServiceAverageMemoryUtilization,
                "ALBRequestCountPerTarget" => {
                    let label = input.resource_label.clone().ok_or_else(|| invalid("ResourceLabel is required for the predefined metric ALBRequestCountPerTarget"))?;
                    let parts: Vec<&str> = label.split('/').collect();
                    if parts.len() != 6 || parts[0] != "app" || parts[3] != "targetgroup" {
                        return Err(invalid(format!("Invalid ResourceLabel {label}: expected app/LOAD-BALANCER-NAME/ID/targetgroup/TARGET-GROUP-NAME/ID")));
                    }
                    PredefinedMetric::AlbRequestCountPerTarget(label)
                }
                other => return Err(invalid(format!("Unsupported predefined metric type {other} for service namespace ecs"))),
            };
            if input.resource_label.is_some() && !matches!(predefined, PredefinedMetric::AlbRequestCountPerTarget(_)) {
                return Err(invalid("ResourceLabel can be specified only with the predefined metric ALBRequestCountPerTarget"));
            }
            TrackedMetric::Predefined(predefined)
        }
        (None, Some(custom)) => {
            if let TrackedMetric::Customized { statistic, .. } = custom {
                if !["Average", "Minimum", "Maximum", "SampleCount", "Sum"].contains(&statistic.as_str()) {
                    return Err(invalid(format!("Unsupported statistic {statistic}: Average, Minimum, Maximum, SampleCount or Sum")));
                }
            }
            custom.clone()
        }
    };
    let cooldown = |value: Option<i64>, name: &str| -> Result<i64, ValidationError> {
        match value {
            None => Ok(TARGET_TRACKING_COOLDOWN_DEFAULT_S),
            Some(v) if (0..=31_536_000).contains(&v) => Ok(v),
            Some(v) => Err(invalid(format!(
                "Invalid {name} {v}: 0 to 31536000 seconds"
            ))),
        }
    };
    Ok(TargetTracking {
        target_value,
        metric,
        scale_out_cooldown_s: cooldown(input.scale_out_cooldown_s, "ScaleOutCooldown")?,
        scale_in_cooldown_s: cooldown(input.scale_in_cooldown_s, "ScaleInCooldown")?,
        disable_scale_in: input.disable_scale_in.unwrap_or(false),
    })
}

pub fn check_step_scaling(input: &StepScalingInput) -> Result<StepScaling, ValidationError> {
    let adjustment_type = match input.adjustment_type.as_deref() {
        None => return Err(invalid("AdjustmentType is required for a step scaling policy")),
        Some("ChangeInCapacity") => AdjustmentType::ChangeInCapacity,
        Some("PercentChangeInCapacity") => AdjustmentType::PercentChangeInCapacity,
        Some("ExactCapacity") => AdjustmentType::ExactCapacity,
        Some(other) => return Err(invalid(format!("Invalid AdjustmentType {other}: ChangeInCapacity, PercentChangeInCapacity or ExactCapacity"))),
    };
    if input.min_adjustment_magnitude.is_some()
        && adjustment_type != AdjustmentType::PercentChangeInCapacity
    {
        return Err(invalid("MinAdjustmentMagnitude is only supported with the PercentChangeInCapacity adjustment type"));
    }
    if input.min_adjustment_magnitude.is_some_and(|m| m < 1) {
        return Err(invalid("MinAdjustmentMagnitude must be at least 1"));
    }
    let aggregation = match input.metric_aggregation_type.as_deref() {
        None | Some("Average") => MetricAggregation::Average,
        Some("Minimum") => MetricAggregation::Minimum,
        Some("Maximum") => MetricAggregation::Maximum,
        Some(other) => {
            return Err(invalid(format!(
                "Invalid MetricAggregationType {other}: Average, Minimum or Maximum"
            )))
        }
    };
    check_steps(&input.steps, adjustment_type)?;
    let cooldown_s = input.cooldown_s.unwrap_or(STEP_COOLDOWN_DEFAULT_S);
    if !(0..=31_536_000).contains(&cooldown_s) {
        return Err(invalid(format!(
            "Invalid Cooldown {cooldown_s}: 0 to 31536000 seconds"
        )));
    }
    Ok(StepScaling {
        adjustment_type,
        steps: input.steps.clone(),
        min_adjustment_magnitude: input.min_adjustment_magnitude,
        cooldown_s,
        aggregation,
    })
}

/// The step rules: no overlaps, no gaps, at most one open bound on each
/// side, open bounds where the steps cross zero, lower below upper.
fn check_steps(steps: &[StepAdjustment], kind: AdjustmentType) -> Result<(), ValidationError> {
    if steps.is_empty() {
        return Err(invalid(
            "At least one step adjustment is required for a step scaling policy",
        ));
    }
    if steps.len() > STEP_ADJUSTMENTS_MAX {
        return Err(invalid(format!(
            "Too many step adjustments: at most {STEP_ADJUSTMENTS_MAX} per policy"
        )));
    }
    for step in steps {
        match (step.lower_bound, step.upper_bound) {
            (None, None) => {
                return Err(invalid(
                    "The upper and lower bound of a step adjustment can't both be null",
                ))
            }
            (Some(lower), Some(upper)) if lower >= upper => {
                return Err(invalid(format!(
                    "Step adjustment lower bound {lower} must be less than its upper bound {upper}"
                )))
            }
            _ => {}
        }
        if kind == AdjustmentType::ExactCapacity && step.scaling_adjustment < 0 {
            return Err(invalid(
                "ScalingAdjustment must be non-negative with the ExactCapacity adjustment type",
            ));
        }
    }
    if steps.iter().filter(|s| s.lower_bound.is_none()).count() > 1 {
        return Err(invalid(
            "Only one step adjustment can have an unbounded (null) lower bound",
        ));
    }
    if steps.iter().filter(|s| s.upper_bound.is_none()).count() > 1 {
        return Err(invalid(
            "Only one step adjustment can have an unbounded (null) upper bound",
        ));
    }
    let mut sorted = steps.to_vec();
    sorted.sort_by(|a, b| {
        a.lower_bound
            .unwrap_or(f64::NEG_INFINITY)
            .total_cmp(&b.lower_bound.unwrap_or(f64::NEG_INFINITY))
    });
    for pair in sorted.windows(2) {
        let upper = pair[0].upper_bound.unwrap_or(f64::INFINITY);
        let lower = pair[1].lower_bound.unwrap_or(f64::NEG_INFINITY);
        if upper > lower {
            return Err(invalid(format!(
                "Step adjustments have overlapping intervals: [{}, {}) and [{}, {})",
                fmt(pair[0].lower_bound),
                fmt(pair[0].upper_bound),
                fmt(pair[1].lower_bound),
                fmt(pair[1].upper_bound)
            )));
        }
        if upper < lower {
            return Err(invalid(format!(
                "Step adjustments have a gap between {upper} and {lower}"
            )));
        }
    }
    let negative_lower = steps.iter().any(|s| s.lower_bound.is_some_and(|l| l < 0.0));
    if negative_lower && !steps.iter().any(|s| s.lower_bound.is_none()) {
        return Err(invalid("A step adjustment has a negative lower bound, so one step adjustment must have a null lower bound"));
    }
    let positive_upper = steps.iter().any(|s| s.upper_bound.is_some_and(|u| u > 0.0));
    if positive_upper && !steps.iter().any(|s| s.upper_bound.is_none()) {
        return Err(invalid("A step adjustment has a positive upper bound, so one step adjustment must have a null upper bound"));
    }
    Ok(())
}

fn fmt(bound: Option<f64>) -> String {
    bound.map_or_else(|| "null".to_string(), |b| b.to_string())
}

/// The error when a target already has the most policies it may.
pub fn check_policy_count(existing: usize, replacing: bool) -> Result<(), AutoScalingError> {
    if !replacing && existing >= POLICIES_PER_TARGET_MAX {
        return Err(AutoScalingError::LimitExceeded(format!(
            "You have reached the maximum limit of {POLICIES_PER_TARGET_MAX} scaling policies for the scalable target"
        )));
    }
    Ok(())
}

/// The policy's ARN, as Application Auto Scaling writes it.
pub fn policy_arn(
    region: &str,
    account: &str,
    policy_id: &str,
    resource_id: &str,
    name: &str,
) -> String {
    format!("arn:aws:autoscaling:{region}:{account}:scalingPolicy:{policy_id}:resource/ecs/{resource_id}:policyName/{name}")
}

/// The two alarms of a target tracking policy, as PutMetricAlarm inputs.
/// `ids` are two fresh UUIDs; `action_arn` is what the alarms invoke.
pub fn target_tracking_alarms(
    resource_id: &str,
    policy_arn: &str,
    tracking: &TargetTracking,
    ids: [&str; 2],
) -> Vec<PutMetricAlarmInput> {
    let (cluster, service) = {
        let mut parts = resource_id.splitn(3, '/').skip(1);
        (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        )
    };
    let service_dimensions = vec![
        Dimension::new("ClusterName", cluster),
        Dimension::new("ServiceName", service),
    ];
    let mut base = PutMetricAlarmInput {
        alarm_description: Some(format!(
            "DO NOT EDIT OR DELETE. For TargetTrackingScaling policy {policy_arn}."
        )),
        actions_enabled: Some(true),
        alarm_actions: vec![policy_arn.to_string()],
        period_s: Some(60),
        treat_missing_data: Some("missing".into()),
        ..Default::default()
    };
    match &tracking.metric {
        TrackedMetric::Predefined(predefined) => {
            let (namespace, name, dimensions, statistic, unit) = match predefined {
                PredefinedMetric::EcsServiceAverageCpuUtilization => (
                    "AWS/ECS",
                    "CPUUtilization",
                    service_dimensions,
                    "Average",
                    Some("Percent"),
                ),
                PredefinedMetric::EcsServiceAverageMemoryUtilization => (
                    "AWS/ECS",
                    "MemoryUtilization",
                    service_dimensions,
                    "Average",
                    Some("Percent"),
                ),
                PredefinedMetric::AlbRequestCountPerTarget(label) => {
                    let target_group = label.splitn(4, '/').nth(3).unwrap_or_default().to_string();
                    (
                        "AWS/ApplicationELB",
                        "RequestCountPerTarget",
                        vec![Dimension::new("TargetGroup", target_group)],
                        "Sum",
                        None,
                    )
                }
            };
            base.namespace = Some(namespace.into());
            base.metric_name = Some(name.into());
            base.dimensions = dimensions;
            base.statistic = Some(statistic.into());
            base.unit = unit.map(str::to_string);
        }
        TrackedMetric::Customized {
            namespace,
            metric_name,
            dimensions,
            statistic,
            unit,
        } => {
            base.namespace = Some(namespace.clone());
            base.metric_name = Some(metric_name.clone());
            base.dimensions = dimensions.clone();
            base.statistic = Some(statistic.clone());
            base.unit = unit.clone();
        }
        TrackedMetric::Math(queries) => {
            base.period_s = None;
            base.metrics = queries
                .iter()
                .map(|q| {
                    let mut q = q.clone();
                    if let Some(stat) = &mut q.metric_stat {
                        stat.period_s = 60;
                    }
                    q
                })
                .collect();
        }
    }
    let mut high = base.clone();
    high.alarm_name = format!("TargetTracking-{resource_id}-AlarmHigh-{}", ids[0]);
    high.comparison_operator = Some("GreaterThanThreshold".into());
    high.threshold = Some(tracking.target_value);
    high.evaluation_periods = Some(ALARM_HIGH_PERIODS);
    high.datapoints_to_alarm = Some(ALARM_HIGH_PERIODS);
    let mut alarms = vec![high];
    if !tracking.disable_scale_in {
        let mut low = base;
        low.alarm_name = format!("TargetTracking-{resource_id}-AlarmLow-{}", ids[1]);
        low.comparison_operator = Some("LessThanThreshold".into());
        low.threshold = Some(tracking.target_value * ALARM_LOW_FRACTION);
        low.evaluation_periods = Some(ALARM_LOW_PERIODS);
        low.datapoints_to_alarm = Some(ALARM_LOW_PERIODS);
        alarms.push(low);
    }
    alarms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(lower: Option<f64>, upper: Option<f64>, adjustment: i64) -> StepAdjustment {
        StepAdjustment {
            lower_bound: lower,
            upper_bound: upper,
            scaling_adjustment: adjustment,
        }
    }

    #[test]
    fn step_validation() {
        let ok = StepScalingInput {
            adjustment_type: Some("PercentChangeInCapacity".into()),
            steps: vec![
                step(Some(0.0), Some(10.0), 0),
                step(Some(10.0), Some(20.0), 10),
                step(Some(20.0), None, 30),
            ],
            min_adjustment_magnitude: Some(2),
            ..Default::default()
        };
        assert_eq!(check_step_scaling(&ok).unwrap().cooldown_s, 300);
        let cases = [
            (vec![step(Some(0.0), Some(10.0), 1), step(Some(5.0), None, 2)], "Step adjustments have overlapping intervals: [0, 10) and [5, null)"),
            (vec![step(Some(0.0), Some(10.0), 1), step(Some(15.0), None, 2)], "Step adjustments have a gap between 10 and 15"),
            (vec![step(Some(0.0), None, 1), step(Some(10.0), None, 2)], "Only one step adjustment can have an unbounded (null) upper bound"),
            (vec![step(None, None, 1)], "The upper and lower bound of a step adjustment can't both be null"),
            (vec![step(Some(0.0), Some(10.0), 1)], "A step adjustment has a positive upper bound, so one step adjustment must have a null upper bound"),
            (vec![step(Some(-10.0), Some(0.0), -1)], "A step adjustment has a negative lower bound, so one step adjustment must have a null lower bound"),
            ((0..21).map(|i| step(Some(i as f64), Some(i as f64 + 1.0), 1)).collect(), "Too many step adjustments: at most 20 per policy"),
        ];
        for (steps, message) in cases {
            let input = StepScalingInput {
                adjustment_type: Some("ChangeInCapacity".into()),
                steps,
                ..Default::default()
            };
            assert_eq!(check_step_scaling(&input).unwrap_err().0, message);
        }
        let magnitude = StepScalingInput {
            adjustment_type: Some("ChangeInCapacity".into()),
            steps: vec![step(Some(0.0), None, 1)],
            min_adjustment_magnitude: Some(2),
            ..Default::default()
        };
        assert!(check_step_scaling(&magnitude).is_err());
        assert_eq!(
            check_policy_count(50, false).unwrap_err().code(),
            "LimitExceededException"
        );
        assert!(check_policy_count(50, true).is_ok());
    }

    #[test]
    fn target_tracking_makes_aws_alarms() {
        let tracking = check_target_tracking(&TargetTrackingInput {
            target_value: Some(70.0),
            predefined_metric_type: Some("ECSServiceAverageCPUUtilization".into()),
            ..Default::default()
        })
        .unwrap();
        let arn = policy_arn("us-east-1", "123456789012", "p1", "service/api/web", "cpu");
        let alarms = target_tracking_alarms("service/api/web", &arn, &tracking, ["h1", "l1"]);
        assert_eq!(
            alarms[0].alarm_name,
            "TargetTracking-service/api/web-AlarmHigh-h1"
        );
        assert_eq!(
            (alarms[0].threshold, alarms[0].evaluation_periods),
            (Some(70.0), Some(3))
        );
        assert_eq!(
            alarms[1].alarm_name,
            "TargetTracking-service/api/web-AlarmLow-l1"
        );
        assert_eq!(
            (alarms[1].threshold, alarms[1].evaluation_periods),
            (Some(63.0), Some(15))
        );
        assert_eq!(
            alarms[1].comparison_operator.as_deref(),
            Some("LessThanThreshold")
        );
        assert_eq!(
            alarms[0].alarm_description.as_deref(),
            Some(
                format!("DO NOT EDIT OR DELETE. For TargetTrackingScaling policy {arn}.").as_str()
            )
        );
        for alarm in &alarms {
            flotilla_metrics::alarm::check_put_metric_alarm(alarm, "arn").unwrap();
        }
        let bad = TargetTrackingInput {
            target_value: Some(50.0),
            predefined_metric_type: Some("ALBRequestCountPerTarget".into()),
            ..Default::default()
        };
        assert_eq!(
            check_target_tracking(&bad).unwrap_err().0,
            "ResourceLabel is required for the predefined metric ALBRequestCountPerTarget"
        );
        let unknown = TargetTrackingInput {
            target_value: Some(50.0),
            predefined_metric_type: Some("DynamoDBReadCapacityUtilization".into()),
            ..Default::default()
        };
        assert_eq!(check_target_tracking(&unknown).unwrap_err().0, "Unsupported predefined metric type DynamoDBReadCapacityUtilization for service namespace ecs");
    }
}
