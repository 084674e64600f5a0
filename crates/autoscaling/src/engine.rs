//! The decisions: what a target's desired count becomes when its policies'
//! alarms fire and its scheduled actions come due. Pure functions of the
//! stored `TargetState`, the alarms' data, the current capacity and the
//! time; the control plane persists the state that comes back before it
//! acts, so a restart neither repeats a scale nor forgets a cooldown.

use flotilla_metrics::alarm::AlarmState;
use serde::{Deserialize, Serialize};

use crate::policy::{
    AdjustmentType, MetricAggregation, PolicyKind, ScalingPolicy, StepScaling, TargetTracking,
};
use crate::schedule::{self, Schedule};
use crate::target::ScalableTarget;
use crate::{AutoScalingError, ValidationError};

/// Scheduled actions per scalable target.
pub const SCHEDULED_ACTIONS_PER_TARGET_MAX: usize = 200;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduledAction {
    pub name: String,
    pub schedule: String,
    pub timezone: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub min_capacity: Option<i64>,
    pub max_capacity: Option<i64>,
    pub created_ms: i64,
    /// When it last ran (or was skipped while suspended).
    pub last_run_ms: Option<i64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cooldowns {
    /// A scale-out's cooldown: until when, and the capacity before the
    /// scale-out that started it (later scale-outs in it count from there).
    pub scale_out_until_ms: Option<i64>,
    pub scale_out_base: i64,
    pub scale_in_until_ms: Option<i64>,
}

/// What the control plane stores per scalable target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    pub target: ScalableTarget,
    pub policies: Vec<ScalingPolicy>,
    pub scheduled: Vec<ScheduledAction>,
    pub cooldowns: Cooldowns,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActivityStatus {
    Pending,
    InProgress,
    Successful,
    Overridden,
    Unfulfilled,
    Failed,
}

impl ActivityStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityStatus::Pending => "Pending",
            ActivityStatus::InProgress => "InProgress",
            ActivityStatus::Successful => "Successful",
            ActivityStatus::Overridden => "Overridden",
            ActivityStatus::Unfulfilled => "Unfulfilled",
            ActivityStatus::Failed => "Failed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotScaledReason {
    AlreadyAtMaxCapacity,
    AlreadyAtMinCapacity,
    AlreadyAtDesiredCapacity,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalingActivity {
    pub activity_id: String,
    pub resource_id: String,
    pub description: String,
    pub cause: String,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    pub status: ActivityStatus,
    pub status_message: Option<String>,
    pub not_scaled: Option<NotScaledReason>,
    /// The desired count it sets, when it sets one.
    pub desired: Option<i64>,
}

impl ScalingActivity {
    /// The target service accepted the change.
    pub fn fulfilled(&mut self, now_ms: i64) {
        self.status = ActivityStatus::Successful;
        self.end_ms = Some(now_ms);
        if let Some(desired) = self.desired {
            self.status_message = Some(format!("Successfully set desired count to {desired}. Change successfully fulfilled by ecs."));
        }
    }

    /// The change failed; `message` is the target service's error.
    pub fn failed(&mut self, now_ms: i64, message: &str) {
        self.status = ActivityStatus::Failed;
        self.end_ms = Some(now_ms);
        self.status_message = Some(format!(
            "Failed to set desired count to {}. Reason: {message}",
            self.desired.unwrap_or_default()
        ));
    }
}

/// A decision: the new desired count (if it changes) and the activities.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub desired: Option<i64>,
    pub activities: Vec<ScalingActivity>,
}

/// One invocation of a policy by an alarm in ALARM.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmTrigger {
    /// The action ARN the alarm invoked (a policy ARN, possibly followed by
    /// `:createdBy/ID` as on target tracking alarms).
    pub action_arn: String,
    pub alarm_name: String,
    pub reason_data: Option<String>,
}

fn policy_for<'a>(policies: &'a [ScalingPolicy], action_arn: &str) -> Option<&'a ScalingPolicy> {
    let arn = action_arn.split(":createdBy/").next().unwrap_or(action_arn);
    policies.iter().find(|p| p.arn == arn)
}

/// (recent datapoints oldest first, threshold) of an alarm's StateReasonData.
fn alarm_values(reason_data: Option<&str>) -> Option<(Vec<f64>, f64)> {
    let data: serde_json::Value = serde_json::from_str(reason_data?).ok()?;
    let recent: Vec<f64> = data
        .get("recentDatapoints")?
        .as_array()?
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    let threshold = data.get("threshold")?.as_f64()?;
    (!recent.is_empty()).then_some((recent, threshold))
}

fn percent_change(base: i64, percent: i64, min_magnitude: Option<i64>) -> i64 {
    let raw = base as f64 * percent as f64 / 100.0;
    // Values above 1 round down, between 0 and 1 up to 1, and likewise
    // for negatives, as Application Auto Scaling documents.
    let mut change = if raw >= 1.0 {
        raw.floor()
    } else if raw > 0.0 {
        1.0
    } else if raw > -1.0 && raw < 0.0 {
        -1.0
    } else {
        raw.ceil()
    } as i64;
    if let Some(minimum) = min_magnitude {
        if change != 0 && change.abs() < minimum {
            change = minimum * change.signum();
        }
    }
    change
}

fn step_capacity(step: &StepScaling, base: i64, values: &[f64], threshold: f64) -> Option<i64> {
    let value = match step.aggregation {
        MetricAggregation::Average => values.iter().sum::<f64>() / values.len() as f64,
        MetricAggregation::Minimum => values.iter().copied().fold(f64::INFINITY, f64::min),
        MetricAggregation::Maximum => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    };
    let delta = value - threshold;
    let above = delta >= 0.0;
    let chosen = step.steps.iter().find(|s| {
        let lower = s.lower_bound.unwrap_or(f64::NEG_INFINITY);
        let upper = s.upper_bound.unwrap_or(f64::INFINITY);
        if above {
            lower <= delta && delta < upper
        } else {
            lower < delta && delta <= upper
        }
    })?;
    Some(match step.adjustment_type {
        AdjustmentType::ChangeInCapacity => base + chosen.scaling_adjustment,
        AdjustmentType::ExactCapacity => chosen.scaling_adjustment,
        AdjustmentType::PercentChangeInCapacity => {
            base + percent_change(
                base,
                chosen.scaling_adjustment,
                step.min_adjustment_magnitude,
            )
        }
    })
}

fn tracking_capacity(tracking: &TargetTracking, base: i64, metric: f64) -> i64 {
    let proportional = (base as f64 * metric / tracking.target_value).ceil() as i64;
    // From zero tasks the metric says nothing about per-task load: add one.
    if base == 0 && metric > 0.0 {
        proportional.max(1)
    } else {
        proportional
    }
}

struct Candidate<'a> {
    capacity: i64,
    policy: &'a ScalingPolicy,
    alarm: String,
    cooldown_s: i64,
}

/// Decides on the alarms that invoked this target's policies in one
/// evaluation. `alarm_state` tells the state of any alarm by name (for
/// "scale in only when every target tracking policy says so").
pub fn decide_alarms(
    state: &mut TargetState,
    triggers: &[AlarmTrigger],
    alarm_state: &dyn Fn(&str) -> Option<AlarmState>,
    current: i64,
    now_ms: i64,
    activity_id: &str,
) -> Decision {
    let in_out_cooldown = state
        .cooldowns
        .scale_out_until_ms
        .is_some_and(|until| now_ms < until);
    let out_base = if in_out_cooldown {
        state.cooldowns.scale_out_base
    } else {
        current
    };
    let mut outs: Vec<Candidate> = Vec::new();
    let mut ins: Vec<Candidate> = Vec::new();
    for trigger in triggers {
        let Some(policy) = policy_for(&state.policies, &trigger.action_arn) else {
            continue;
        };
        // No data, no scaling: an alarm without datapoints says nothing.
        let Some((values, threshold)) = alarm_values(trigger.reason_data.as_deref()) else {
            continue;
        };
        let latest = *values.last().unwrap_or(&threshold);
        match &policy.kind {
            PolicyKind::TargetTracking(tracking) => {
                let high = policy
                    .alarms
                    .iter()
                    .any(|(name, high)| *high && *name == trigger.alarm_name);
                if high {
                    let capacity = tracking_capacity(tracking, out_base, latest);
                    outs.push(Candidate {
                        capacity,
                        policy,
                        alarm: trigger.alarm_name.clone(),
                        cooldown_s: tracking.scale_out_cooldown_s,
                    });
                } else if !tracking.disable_scale_in {
                    let capacity = tracking_capacity(tracking, current, latest);
                    ins.push(Candidate {
                        capacity,
                        policy,
                        alarm: trigger.alarm_name.clone(),
                        cooldown_s: tracking.scale_in_cooldown_s,
                    });
                }
            }
            PolicyKind::Step(step) => {
                let Some(capacity) = step_capacity(step, current, &values, threshold) else {
                    continue;
                };
                if capacity > current {
                    let capacity =
                        step_capacity(step, out_base, &values, threshold).unwrap_or(capacity);
                    outs.push(Candidate {
                        capacity,
                        policy,
                        alarm: trigger.alarm_name.clone(),
                        cooldown_s: step.cooldown_s,
                    });
                } else {
                    ins.push(Candidate {
                        capacity,
                        policy,
                        alarm: trigger.alarm_name.clone(),
                        cooldown_s: step.cooldown_s,
                    });
                }
            }
        }
    }
    let target = state.target.clone();
    let activity = |candidate: &Candidate,
                    desired: Option<i64>,
                    not_scaled: Option<NotScaledReason>| ScalingActivity {
        activity_id: activity_id.to_string(),
        resource_id: target.resource_id.clone(),
        description: match desired {
            Some(d) => format!("Setting desired count to {d}."),
            None => "Attempting to scale due to alarm triggered".to_string(),
        },
        cause: format!(
            "monitor alarm {} in state ALARM triggered policy {}",
            candidate.alarm, candidate.policy.name
        ),
        start_ms: now_ms,
        end_ms: not_scaled.map(|_| now_ms),
        status: if not_scaled.is_some() {
            ActivityStatus::Failed
        } else {
            ActivityStatus::InProgress
        },
        status_message: None,
        not_scaled,
        desired,
    };
    // Out if any policy says out, to the largest capacity.
    if let Some(best) = outs
        .iter()
        .filter(|c| c.capacity > current)
        .max_by_key(|c| c.capacity)
    {
        if target.suspended.dynamic_scaling_out_suspended {
            return Decision::default();
        }
        let desired = target.clamp(best.capacity);
        if desired <= current {
            return Decision {
                desired: None,
                activities: vec![activity(
                    best,
                    None,
                    Some(NotScaledReason::AlreadyAtMaxCapacity),
                )],
            };
        }
        state.cooldowns = Cooldowns {
            scale_out_until_ms: Some(now_ms + best.cooldown_s * 1_000),
            scale_out_base: out_base,
            // A scale-out ends a scale-in cooldown.
            scale_in_until_ms: None,
        };
        return Decision {
            desired: Some(desired),
            activities: vec![activity(best, Some(desired), None)],
        };
    }
    if !outs.is_empty() || ins.is_empty() {
        return Decision::default();
    }
    // In only if every target tracking policy that may scale in says in.
    let tracking_ready = state.policies.iter().all(|policy| match &policy.kind {
        PolicyKind::TargetTracking(tracking) if !tracking.disable_scale_in => policy
            .alarms
            .iter()
            .filter(|(_, high)| !high)
            .all(|(name, _)| {
                alarm_state(name) == Some(AlarmState::Alarm)
                    || triggers.iter().any(|t| t.alarm_name == *name)
            }),
        _ => true,
    });
    let tracking_in = ins
        .iter()
        .any(|c| matches!(c.policy.kind, PolicyKind::TargetTracking(_)));
    if tracking_in && !tracking_ready {
        return Decision::default();
    }
    let Some(best) = ins.iter().max_by_key(|c| c.capacity) else {
        return Decision::default();
    };
    if target.suspended.dynamic_scaling_in_suspended
        || state
            .cooldowns
            .scale_in_until_ms
            .is_some_and(|until| now_ms < until)
    {
        return Decision::default();
    }
    let desired = target.clamp(best.capacity);
    if desired >= current {
        let reason = if current <= target.min_capacity {
            NotScaledReason::AlreadyAtMinCapacity
        } else {
            NotScaledReason::AlreadyAtDesiredCapacity
        };
        return Decision {
            desired: None,
            activities: vec![activity(best, None, Some(reason))],
        };
    }
    state.cooldowns.scale_in_until_ms = Some(now_ms + best.cooldown_s * 1_000);
    Decision {
        desired: Some(desired),
        activities: vec![activity(best, Some(desired), None)],
    }
}

/// PutScheduledAction's checks: the schedule, the time zone, the bounds.
pub fn check_scheduled_action(
    action: &ScheduledAction,
    existing: usize,
    replacing: bool,
) -> Result<(), AutoScalingError> {
    if !replacing && existing >= SCHEDULED_ACTIONS_PER_TARGET_MAX {
        return Err(AutoScalingError::LimitExceeded(format!(
            "You have reached the maximum limit of {SCHEDULED_ACTIONS_PER_TARGET_MAX} scheduled actions for the scalable target"
        )));
    }
    let name = &action.name;
    if name.is_empty()
        || name.len() > 256
        || name.contains([':', '/', '|'])
        || name.starts_with(' ')
        || name.ends_with(' ')
        || name.chars().any(char::is_control)
    {
        return Err(ValidationError(format!("Invalid scheduled action name {name}")).into());
    }
    schedule::parse(&action.schedule)?;
    schedule::time_zone(action.timezone.as_deref())?;
    if action.min_capacity.is_none() && action.max_capacity.is_none() {
        return Err(ValidationError(
            "ScalableTargetAction must set MinCapacity, MaxCapacity or both".into(),
        )
        .into());
    }
    if let (Some(min), Some(max)) = (action.min_capacity, action.max_capacity) {
        if min > max {
            return Err(ValidationError(
                "Minimum capacity cannot be greater than maximum capacity".into(),
            )
            .into());
        }
    }
    if let (Some(start), Some(end)) = (action.start_ms, action.end_ms) {
        if start >= end {
            return Err(ValidationError("StartTime must be earlier than EndTime".into()).into());
        }
    }
    Ok(())
}

/// Runs the scheduled actions that came due by `now_ms` (each at most once
/// per call, however many occurrences were missed). `next_id` makes
/// activity ids.
pub fn run_scheduled(
    state: &mut TargetState,
    current: i64,
    now_ms: i64,
    next_id: &mut dyn FnMut() -> String,
) -> Decision {
    let mut decision = Decision::default();
    let mut capacity = current;
    let mut order: Vec<(i64, usize)> = Vec::new();
    for (index, action) in state.scheduled.iter().enumerate() {
        let Ok(parsed) = schedule::parse(&action.schedule) else {
            continue;
        };
        let Ok(zone) = schedule::time_zone(action.timezone.as_deref()) else {
            continue;
        };
        let anchor = action.start_ms.unwrap_or(action.created_ms);
        let after = action
            .last_run_ms
            .unwrap_or(anchor.min(action.created_ms) - 1)
            .max(match parsed {
                Schedule::Rate { .. } => i64::MIN,
                _ => action.start_ms.map_or(i64::MIN, |s| s - 1),
            });
        let Some(due) = parsed.next_after(after, anchor, &zone) else {
            continue;
        };
        if due > now_ms || action.end_ms.is_some_and(|end| due > end) {
            continue;
        }
        order.push((due, index));
    }
    order.sort_unstable();
    for (_, index) in order {
        let action = state.scheduled[index].clone();
        state.scheduled[index].last_run_ms = Some(now_ms);
        if state.target.suspended.scheduled_scaling_suspended {
            continue;
        }
        let min = action.min_capacity.unwrap_or(state.target.min_capacity);
        let max = action.max_capacity.unwrap_or(state.target.max_capacity);
        if min > max {
            continue;
        }
        state.target.min_capacity = min;
        state.target.max_capacity = max;
        let cause = format!("scheduled action name {} was triggered", action.name);
        decision.activities.push(ScalingActivity {
            activity_id: next_id(),
            resource_id: state.target.resource_id.clone(),
            description: format!("Setting min capacity to {min} and max capacity to {max}"),
            cause: cause.clone(),
            start_ms: now_ms,
            end_ms: Some(now_ms),
            status: ActivityStatus::Successful,
            status_message: Some(format!(
                "Successfully set min capacity to {min} and max capacity to {max}"
            )),
            not_scaled: None,
            desired: None,
        });
        let clamped = capacity.clamp(min, max);
        if clamped != capacity {
            let why = if clamped > capacity {
                format!("minimum capacity was set to {min}")
            } else {
                format!("maximum capacity was set to {max}")
            };
            capacity = clamped;
            decision.desired = Some(clamped);
            decision.activities.push(ScalingActivity {
                activity_id: next_id(),
                resource_id: state.target.resource_id.clone(),
                description: format!("Setting desired count to {clamped}."),
                cause: why,
                start_ms: now_ms,
                end_ms: None,
                status: ActivityStatus::InProgress,
                status_message: None,
                not_scaled: None,
                desired: Some(clamped),
            });
        }
    }
    decision
}

/// After RegisterScalableTarget changed min or max: the desired count is
/// brought within the new bounds.
pub fn clamp_after_register(
    state: &TargetState,
    current: i64,
    now_ms: i64,
    activity_id: &str,
) -> Decision {
    let clamped = state.target.clamp(current);
    if clamped == current {
        return Decision::default();
    }
    let cause = if clamped > current {
        format!("minimum capacity was set to {}", state.target.min_capacity)
    } else {
        format!("maximum capacity was set to {}", state.target.max_capacity)
    };
    Decision {
        desired: Some(clamped),
        activities: vec![ScalingActivity {
            activity_id: activity_id.to_string(),
            resource_id: state.target.resource_id.clone(),
            description: format!("Setting desired count to {clamped}."),
            cause,
            start_ms: now_ms,
            end_ms: None,
            status: ActivityStatus::InProgress,
            status_message: None,
            not_scaled: None,
            desired: Some(clamped),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_rounding_as_documented() {
        assert_eq!(percent_change(10, 10, None), 1);
        assert_eq!(percent_change(11, 30, None), 3, "3.3 rounds down");
        assert_eq!(percent_change(14, -10, None), -1, "-1.4 rounds up to -1");
        assert_eq!(percent_change(13, -30, None), -3, "-3.9 rounds up to -3");
        assert_eq!(percent_change(3, 20, None), 1, "0.6 rounds to 1");
        assert_eq!(percent_change(3, -20, None), -1);
        assert_eq!(percent_change(4, 25, Some(2)), 2, "MinAdjustmentMagnitude");
    }
}
