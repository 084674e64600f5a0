//! A deterministic simulation in virtual time: a service whose tasks' CPU
//! follows a scripted load curve (a step up, a ramp down, a spike) publishes
//! AWS/ECS CPUUtilization into the store each minute; the policies' alarms
//! are evaluated every minute and their triggers decided on. The exact
//! decisions (minute, from, to, cause) are checked against tables, for
//! target tracking, step scaling and scheduled actions; restarting the
//! engine from its persisted state mid-run gives the same decisions.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use flotilla_autoscaling::engine::{
    decide_alarms, run_scheduled, AlarmTrigger, Cooldowns, ScheduledAction, TargetState,
};
use flotilla_autoscaling::policy::{
    check_step_scaling, check_target_tracking, policy_arn, target_tracking_alarms, PolicyKind,
    ScalingPolicy, StepAdjustment, StepScalingInput, TargetTrackingInput,
};
use flotilla_autoscaling::target::{ScalableTarget, SuspendedState};
use flotilla_metrics::alarm::{
    check_put_metric_alarm, evaluate, AlarmDefinition, AlarmState, AlarmStatus, PutMetricAlarmInput,
};
use flotilla_metrics::put::{check_put_metric_data, MetricDatumInput, PutMetricDataInput};
use flotilla_metrics::store::{MetricStore, StoreLimits};
use flotilla_metrics::Dimension;

const T0: i64 = 1_717_372_800_000; // 2024-06-03T00:00:00Z
const MINUTE: i64 = 60_000;
const RESOURCE: &str = "service/prod/web";
const MINUTES: i64 = 110;

/// Total CPU demand in task-percent: a step up at 10, a ramp down from 40
/// to 70, a spike at 80-82.
fn load(minute: i64) -> f64 {
    match minute {
        0..=9 => 80.0,
        10..=39 => 400.0,
        40..=69 => 400.0 - (minute - 40) as f64 * 12.0,
        80..=82 => 900.0,
        _ => 50.0,
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Row {
    minute: i64,
    from: i64,
    to: i64,
    cause: String,
}

/// Everything the control plane would persist: the engine's state and the
/// alarms' definitions and statuses (the metrics store is durable on its own).
#[derive(Clone)]
struct Persisted {
    state: String,
    alarms: Vec<(String, String)>,
}

struct World {
    state: TargetState,
    alarms: Vec<(AlarmDefinition, AlarmStatus)>,
}

impl World {
    fn persist(&self) -> Persisted {
        Persisted {
            state: serde_json::to_string(&self.state).unwrap(),
            alarms: self
                .alarms
                .iter()
                .map(|(d, s)| {
                    (
                        serde_json::to_string(d).unwrap(),
                        serde_json::to_string(s).unwrap(),
                    )
                })
                .collect(),
        }
    }

    fn restore(saved: &Persisted) -> World {
        World {
            state: serde_json::from_str(&saved.state).unwrap(),
            alarms: saved
                .alarms
                .iter()
                .map(|(d, s)| {
                    (
                        serde_json::from_str(d).unwrap(),
                        serde_json::from_str(s).unwrap(),
                    )
                })
                .collect(),
        }
    }
}

fn target(min: i64, max: i64) -> ScalableTarget {
    ScalableTarget {
        resource_id: RESOURCE.into(),
        min_capacity: min,
        max_capacity: max,
        suspended: SuspendedState::default(),
        created_ms: T0,
    }
}

fn target_tracking_world() -> World {
    let tracking = check_target_tracking(&TargetTrackingInput {
        target_value: Some(50.0),
        predefined_metric_type: Some("ECSServiceAverageCPUUtilization".into()),
        scale_out_cooldown_s: Some(60),
        scale_in_cooldown_s: Some(300),
        ..Default::default()
    })
    .unwrap();
    let arn = policy_arn("us-east-1", "123456789012", "p-cpu", RESOURCE, "cpu50");
    let inputs = target_tracking_alarms(RESOURCE, &arn, &tracking, ["high", "low"]);
    let alarms: Vec<(AlarmDefinition, AlarmStatus)> = inputs
        .iter()
        .map(|i| {
            (
                check_put_metric_alarm(i, &format!("arn:alarm:{}", i.alarm_name)).unwrap(),
                AlarmStatus::created(T0),
            )
        })
        .collect();
    let policy = ScalingPolicy {
        name: "cpu50".into(),
        arn,
        kind: PolicyKind::TargetTracking(tracking),
        alarms: inputs
            .iter()
            .map(|i| (i.alarm_name.clone(), i.alarm_name.contains("AlarmHigh")))
            .collect(),
        created_ms: T0,
    };
    World {
        state: TargetState {
            target: target(1, 10),
            policies: vec![policy],
            scheduled: vec![],
            cooldowns: Cooldowns::default(),
        },
        alarms,
    }
}

fn step_alarm(
    name: &str,
    operator: &str,
    threshold: f64,
    periods: i64,
    policy_arn: &str,
) -> PutMetricAlarmInput {
    PutMetricAlarmInput {
        alarm_name: name.into(),
        alarm_actions: vec![policy_arn.into()],
        metric_name: Some("CPUUtilization".into()),
        namespace: Some("AWS/ECS".into()),
        statistic: Some("Average".into()),
        dimensions: vec![
            Dimension::new("ClusterName", "prod"),
            Dimension::new("ServiceName", "web"),
        ],
        period_s: Some(60),
        evaluation_periods: Some(periods),
        threshold: Some(threshold),
        comparison_operator: Some(operator.into()),
        ..Default::default()
    }
}

fn step_world() -> World {
    let out_arn = policy_arn("us-east-1", "123456789012", "p-out", RESOURCE, "out");
    let in_arn = policy_arn("us-east-1", "123456789012", "p-in", RESOURCE, "in");
    let out = check_step_scaling(&StepScalingInput {
        adjustment_type: Some("ChangeInCapacity".into()),
        steps: vec![
            StepAdjustment {
                lower_bound: Some(0.0),
                upper_bound: Some(20.0),
                scaling_adjustment: 1,
            },
            StepAdjustment {
                lower_bound: Some(20.0),
                upper_bound: None,
                scaling_adjustment: 3,
            },
        ],
        cooldown_s: Some(120),
        ..Default::default()
    })
    .unwrap();
    let scale_in = check_step_scaling(&StepScalingInput {
        adjustment_type: Some("PercentChangeInCapacity".into()),
        steps: vec![StepAdjustment {
            lower_bound: None,
            upper_bound: Some(0.0),
            scaling_adjustment: -50,
        }],
        cooldown_s: Some(300),
        ..Default::default()
    })
    .unwrap();
    let inputs = [
        step_alarm("web-cpu-high", "GreaterThanThreshold", 70.0, 2, &out_arn),
        step_alarm("web-cpu-low", "LessThanThreshold", 30.0, 5, &in_arn),
    ];
    let alarms = inputs
        .iter()
        .map(|i| {
            (
                check_put_metric_alarm(i, "arn").unwrap(),
                AlarmStatus::created(T0),
            )
        })
        .collect();
    let policies = vec![
        ScalingPolicy {
            name: "out".into(),
            arn: out_arn,
            kind: PolicyKind::Step(out),
            alarms: vec![],
            created_ms: T0,
        },
        ScalingPolicy {
            name: "in".into(),
            arn: in_arn,
            kind: PolicyKind::Step(scale_in),
            alarms: vec![],
            created_ms: T0,
        },
    ];
    World {
        state: TargetState {
            target: target(1, 8),
            policies,
            scheduled: vec![],
            cooldowns: Cooldowns::default(),
        },
        alarms,
    }
}

fn publish(store: &mut MetricStore, minute: i64, tasks: i64) {
    let per_task = if tasks == 0 {
        0.0
    } else {
        (load(minute) / tasks as f64).min(100.0)
    };
    let data = (0..tasks)
        .map(|_| MetricDatumInput {
            metric_name: "CPUUtilization".into(),
            dimensions: vec![
                Dimension::new("ClusterName", "prod"),
                Dimension::new("ServiceName", "web"),
            ],
            timestamp_ms: Some(T0 + minute * MINUTE + 30_000),
            value: Some(per_task),
            unit: Some("Percent".into()),
            ..Default::default()
        })
        .collect();
    let request = PutMetricDataInput {
        namespace: "AWS/ECS".into(),
        metric_data: data,
    };
    store
        .put(
            &check_put_metric_data(&request, T0 + minute * MINUTE + 30_000, true).unwrap(),
            T0,
        )
        .unwrap();
}

/// Runs the simulation; with `restart_at`, the world is persisted and
/// rebuilt from what was persisted at that minute.
fn simulate(
    make: fn() -> World,
    scheduled: Vec<ScheduledAction>,
    start_capacity: i64,
    restart_at: Option<i64>,
) -> Vec<Row> {
    let mut store = MetricStore::in_memory(StoreLimits::default());
    let mut world = make();
    world.state.scheduled = scheduled;
    let mut capacity = start_capacity;
    let mut rows = Vec::new();
    let mut ids = 0u32;
    for minute in 0..MINUTES {
        if Some(minute) == restart_at {
            world = World::restore(&world.persist());
        }
        publish(&mut store, minute, capacity);
        let now = T0 + (minute + 1) * MINUTE + 5_000;
        let mut triggers = Vec::new();
        for (definition, status) in &mut world.alarms {
            if let Some(outcome) = evaluate(definition, status, &store, now).unwrap() {
                for action in outcome.actions {
                    triggers.push(AlarmTrigger {
                        action_arn: action.action_arn,
                        alarm_name: action.alarm_name,
                        reason_data: action.reason_data,
                    });
                }
                *status = outcome.status;
            }
        }
        let states: HashMap<String, AlarmState> = world
            .alarms
            .iter()
            .map(|(d, s)| (d.name.clone(), s.state))
            .collect();
        let mut next_id = || {
            ids += 1;
            format!("activity-{ids}")
        };
        let scheduled = run_scheduled(&mut world.state, capacity, now, &mut next_id);
        if let Some(desired) = scheduled.desired {
            let cause = scheduled
                .activities
                .last()
                .map(|a| a.cause.clone())
                .unwrap_or_default();
            rows.push(Row {
                minute,
                from: capacity,
                to: desired,
                cause,
            });
            capacity = desired;
        }
        let decision = decide_alarms(
            &mut world.state,
            &triggers,
            &|name| states.get(name).copied(),
            capacity,
            now,
            "activity",
        );
        if let Some(desired) = decision.desired {
            rows.push(Row {
                minute,
                from: capacity,
                to: desired,
                cause: decision.activities[0].cause.clone(),
            });
            capacity = desired;
        }
        let target = &world.state.target;
        assert!(
            (target.min_capacity..=target.max_capacity).contains(&capacity),
            "minute {minute}: {capacity} outside the target's bounds"
        );
    }
    rows
}

fn rows(table: &[(i64, i64, i64, &str)]) -> Vec<Row> {
    table
        .iter()
        .map(|(minute, from, to, cause)| Row {
            minute: *minute,
            from: *from,
            to: *to,
            cause: cause.to_string(),
        })
        .collect()
}

const HIGH: &str = "monitor alarm TargetTracking-service/prod/web-AlarmHigh-high in state ALARM triggered policy cpu50";
const LOW: &str = "monitor alarm TargetTracking-service/prod/web-AlarmLow-low in state ALARM triggered policy cpu50";

#[test]
fn target_tracking_follows_the_load() {
    let expected = rows(&[
        // 80 units on 2 tasks is 40%: above nothing, and AlarmLow's ceil(2 × 40 / 50) = 2 changes
        // nothing. The step to 400: 3 minutes at 100% → ceil(2 × 100 / 50) = 4; the 60 s
        // cooldown is over a minute later and 4 tasks at 100% → 8 (8 × 50% = 400: steady).
        (12, 2, 4, HIGH),
        (13, 4, 8, HIGH),
        // The ramp down: 15 minutes under 45% → ceil(8 × 23 / 50) = 4, then 300 s apart.
        (58, 8, 4, LOW),
        (63, 4, 3, LOW),
        (68, 3, 2, LOW),
        (73, 2, 1, LOW),
        // The 3-minute spike on 1 task: 100% → 2; it is over before a second scale-out.
        (82, 1, 2, HIGH),
        // 50 units on 2 tasks (25%) for 15 minutes → 1.
        (97, 2, 1, LOW),
    ]);
    let actual = simulate(target_tracking_world, vec![], 2, None);
    assert_eq!(actual, expected);
    // Restarting the engine from its persisted state changes nothing.
    for restart in [13, 14, 59, 70, 83, 98] {
        assert_eq!(
            simulate(target_tracking_world, vec![], 2, Some(restart)),
            expected,
            "restart at minute {restart}"
        );
    }
}

#[test]
fn step_scaling_follows_the_load() {
    let out = "monitor alarm web-cpu-high in state ALARM triggered policy out";
    let scale_in = "monitor alarm web-cpu-low in state ALARM triggered policy in";
    let expected = rows(&[
        // 2 of 2 minutes at 100% (30 over the threshold): +3; then 400 on 5 tasks is 80%
        // (10 over): +1 once the 120 s cooldown has run out.
        (11, 2, 5, out),
        (13, 5, 6, out),
        // The ramp below 30% for 5 minutes: -50% (3 of 6), then -1.5 → -1, 300 s apart.
        (63, 6, 3, scale_in),
        (70, 3, 2, scale_in),
        (75, 2, 1, scale_in),
        // The spike: 100% on 1 task → +3; after it, 12.5% on 4 → -2, then -1.
        (81, 1, 4, out),
        (87, 4, 2, scale_in),
        (92, 2, 1, scale_in),
    ]);
    let actual = simulate(step_world, vec![], 2, None);
    assert_eq!(actual, expected);
    for restart in [12, 14, 64, 82, 88] {
        assert_eq!(
            simulate(step_world, vec![], 2, Some(restart)),
            expected,
            "restart at minute {restart}"
        );
    }
}

#[test]
fn scheduled_actions_set_bounds_and_policies_work_within_them() {
    let scheduled = vec![
        ScheduledAction {
            name: "evening-floor".into(),
            schedule: "at(2024-06-03T00:50:00)".into(),
            timezone: None,
            start_ms: None,
            end_ms: None,
            min_capacity: Some(6),
            max_capacity: None,
            created_ms: T0,
            last_run_ms: None,
        },
        ScheduledAction {
            name: "night-cap".into(),
            schedule: "cron(30 1 * * ? *)".into(),
            timezone: None,
            start_ms: None,
            end_ms: None,
            min_capacity: Some(1),
            max_capacity: Some(3),
            created_ms: T0,
            last_run_ms: None,
        },
    ];
    let expected = rows(&[
        (12, 2, 4, HIGH),
        (13, 4, 8, HIGH),
        // The floor of 6 from 00:50 stops the ramp's scale-in at 6.
        (58, 8, 6, LOW),
        // The spike on 6 tasks: 100% → 12, held at the maximum of 10.
        (82, 6, 10, HIGH),
        // At 01:30 the cap of 3 brings 10 down at once, cooldowns or not.
        (89, 10, 3, "maximum capacity was set to 3"),
        (97, 3, 1, LOW),
    ]);
    let actual = simulate(target_tracking_world, scheduled.clone(), 2, None);
    assert_eq!(actual, expected);
    assert_eq!(
        simulate(target_tracking_world, scheduled, 2, Some(70)),
        expected,
        "a restart does not run an action twice"
    );
}
