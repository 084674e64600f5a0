//! Alarms over a real store: checks, evaluation, actions, SetAlarmState.
#![allow(clippy::unwrap_used, clippy::type_complexity)]

use flotilla_metrics::alarm::{
    check_put_metric_alarm, evaluate, set_alarm_state, AlarmState, AlarmStatus, PutMetricAlarmInput,
};
use flotilla_metrics::metric_data::{MetricDataQuery, MetricStat};
use flotilla_metrics::put::{check_put_metric_data, MetricDatumInput, PutMetricDataInput};
use flotilla_metrics::store::{MetricStore, StoreLimits};
use flotilla_metrics::time::MINUTE_MS;
use flotilla_metrics::Dimension;

const T0: i64 = 1_717_200_000_000;
const POLICY: &str = "arn:aws:autoscaling:us-east-1:000000000000:scalingPolicy:1b2c:resource/ecs/service/prod/web:policyName/out";
const TOPIC: &str = "arn:aws:sns:us-east-1:000000000000:ops";

fn cpu(store: &mut MetricStore, minute: i64, value: f64) {
    let request = PutMetricDataInput {
        namespace: "AWS/ECS".into(),
        metric_data: vec![MetricDatumInput {
            metric_name: "CPUUtilization".into(),
            dimensions: vec![
                Dimension::new("ClusterName", "prod"),
                Dimension::new("ServiceName", "web"),
            ],
            timestamp_ms: Some(T0 + minute * MINUTE_MS + 5_000),
            value: Some(value),
            unit: Some("Percent".into()),
            ..Default::default()
        }],
    };
    store
        .put(
            &check_put_metric_data(&request, T0 + minute * MINUTE_MS, true).unwrap(),
            T0,
        )
        .unwrap();
}

fn input() -> PutMetricAlarmInput {
    PutMetricAlarmInput {
        alarm_name: "web-cpu-high".into(),
        alarm_actions: vec![POLICY.into(), TOPIC.into()],
        ok_actions: vec![TOPIC.into()],
        metric_name: Some("CPUUtilization".into()),
        namespace: Some("AWS/ECS".into()),
        statistic: Some("Average".into()),
        dimensions: vec![
            Dimension::new("ClusterName", "prod"),
            Dimension::new("ServiceName", "web"),
        ],
        period_s: Some(60),
        evaluation_periods: Some(3),
        datapoints_to_alarm: Some(3),
        threshold: Some(70.0),
        comparison_operator: Some("GreaterThanThreshold".into()),
        ..Default::default()
    }
}

#[test]
fn alarm_goes_off_refires_scaling_actions_and_recovers() {
    let mut store = MetricStore::in_memory(StoreLimits::default());
    let definition = check_put_metric_alarm(
        &input(),
        "arn:aws:cloudwatch:us-east-1:000000000000:alarm:web-cpu-high",
    )
    .unwrap();
    let mut status = AlarmStatus::created(T0);
    let mut log = Vec::new();
    let load = [50.0, 80.0, 85.0, 90.0, 95.0, 40.0, 30.0];
    for (minute, value) in load.iter().enumerate() {
        cpu(&mut store, minute as i64, *value);
        // Evaluated at the start of the next minute.
        let now = T0 + (minute as i64 + 1) * MINUTE_MS + 10_000;
        if let Some(outcome) = evaluate(&definition, &status, &store, now).unwrap() {
            for action in &outcome.actions {
                log.push((
                    minute,
                    outcome.status.state,
                    action.action_arn.clone(),
                    action.repeat,
                ));
            }
            status = outcome.status;
        }
    }
    let expected = vec![
        (0, AlarmState::Ok, TOPIC.to_string(), false),
        (3, AlarmState::Alarm, POLICY.to_string(), false),
        (3, AlarmState::Alarm, TOPIC.to_string(), false),
        (4, AlarmState::Alarm, POLICY.to_string(), true),
        (5, AlarmState::Ok, TOPIC.to_string(), false),
    ];
    assert_eq!(log, expected);
    assert!(
        status
            .reason
            .starts_with("Threshold Crossed: 1 out of the last 3 datapoints [40.0 "),
        "{}",
        status.reason
    );
    let data: serde_json::Value =
        serde_json::from_str(status.reason_data.as_deref().unwrap()).unwrap();
    assert_eq!(data["statistic"], "Average");
    assert_eq!(data["period"], 60);
}

#[test]
fn set_alarm_state_fires_actions_unless_disabled() {
    let mut definition = check_put_metric_alarm(&input(), "arn").unwrap();
    let status = AlarmStatus::created(T0);
    let outcome = set_alarm_state(
        &definition,
        &status,
        "ALARM",
        "testing",
        Some("{\"a\":1}"),
        T0,
    )
    .unwrap();
    assert_eq!(outcome.status.state, AlarmState::Alarm);
    assert_eq!(outcome.actions.len(), 2);
    assert_eq!(
        outcome.history[0].summary,
        "Alarm updated from INSUFFICIENT_DATA to ALARM"
    );
    definition.actions_enabled = false;
    let outcome = set_alarm_state(&definition, &status, "ALARM", "testing", None, T0).unwrap();
    assert!(outcome.actions.is_empty());
    assert_eq!(
        set_alarm_state(&definition, &status, "ALARM", "x", Some("{"), T0)
            .unwrap_err()
            .message,
        "Invalid JSON in StateReasonData"
    );
    assert!(set_alarm_state(&definition, &status, "RED", "x", None, T0).is_err());
}

#[test]
fn put_metric_alarm_refuses_what_cloudwatch_refuses() {
    let cases: Vec<(Box<dyn Fn(&mut PutMetricAlarmInput)>, &str)> = vec![
        (Box::new(|i| i.period_s = Some(45)), "The value 45 for parameter Period is invalid. Valid values are 10, 20, 30, and any multiple of 60."),
        (Box::new(|i| i.datapoints_to_alarm = Some(4)), "DatapointsToAlarm must be less than or equal to EvaluationPeriods."),
        (Box::new(|i| i.extended_statistic = Some("p99".into())), "The parameters Statistic and ExtendedStatistic are mutually exclusive and you have specified both."),
        (Box::new(|i| i.evaluation_periods = Some(1_441)), "The evaluation period (Period * EvaluationPeriods) must not exceed one day (86400 seconds) for alarms with a period of less than one hour."),
        (Box::new(|i| i.treat_missing_data = Some("zero".into())), "The value zero for parameter TreatMissingData is invalid."),
        (Box::new(|i| i.comparison_operator = Some("LessThanLowerThreshold".into())), "The ComparisonOperator LessThanLowerThreshold is used only with anomaly detection bands, which are not supported."),
        (Box::new(|i| i.alarm_actions = vec!["sns-topic".into()]), "Invalid arn syntax: sns-topic at AlarmActions.member.1"),
        (Box::new(|i| i.metrics = vec![MetricDataQuery { id: "e1".into(), expression: Some("m1 * 2".into()), ..Default::default() }]), "The parameters Metrics and MetricName, Namespace, Dimensions, Period, Unit, Statistic or ExtendedStatistic are mutually exclusive and you have specified both."),
    ];
    for (change, message) in cases {
        let mut alarm = input();
        change(&mut alarm);
        assert_eq!(
            check_put_metric_alarm(&alarm, "arn").unwrap_err().message,
            message
        );
    }
}

#[test]
fn metric_math_alarms_watch_their_expression() {
    let mut store = MetricStore::in_memory(StoreLimits::default());
    let mut alarm = input();
    alarm.metric_name = None;
    alarm.namespace = None;
    alarm.statistic = None;
    alarm.dimensions = vec![];
    alarm.period_s = None;
    alarm.threshold = Some(140.0);
    alarm.metrics = vec![
        MetricDataQuery {
            id: "m1".into(),
            metric_stat: Some(MetricStat {
                namespace: "AWS/ECS".into(),
                metric_name: "CPUUtilization".into(),
                dimensions: vec![
                    Dimension::new("ClusterName", "prod"),
                    Dimension::new("ServiceName", "web"),
                ],
                period_s: 60,
                stat: "Maximum".into(),
                unit: None,
            }),
            return_data: Some(false),
            ..Default::default()
        },
        MetricDataQuery {
            id: "e1".into(),
            expression: Some("m1 * 2".into()),
            ..Default::default()
        },
    ];
    let definition = check_put_metric_alarm(&alarm, "arn").unwrap();
    for minute in 0..3 {
        cpu(&mut store, minute, 75.0);
    }
    let outcome = evaluate(
        &definition,
        &AlarmStatus::created(T0),
        &store,
        T0 + 3 * MINUTE_MS + 1,
    )
    .unwrap()
    .unwrap();
    assert_eq!(outcome.status.state, AlarmState::Alarm);
    assert!(
        outcome.status.reason.contains("[150.0 "),
        "{}",
        outcome.status.reason
    );
}

#[test]
fn a_thousand_alarms_over_a_minute_of_data() {
    let mut store = MetricStore::in_memory(StoreLimits::default());
    let mut definitions = Vec::new();
    for service in 0..1_000 {
        let dims = vec![
            Dimension::new("ClusterName", "prod"),
            Dimension::new("ServiceName", format!("svc-{service}")),
        ];
        let data = (0..5)
            .map(|minute| MetricDatumInput {
                metric_name: "CPUUtilization".into(),
                dimensions: dims.clone(),
                timestamp_ms: Some(T0 + minute * MINUTE_MS),
                value: Some((service % 100) as f64),
                ..Default::default()
            })
            .collect();
        let request = PutMetricDataInput {
            namespace: "AWS/ECS".into(),
            metric_data: data,
        };
        store
            .put(
                &check_put_metric_data(&request, T0 + 5 * MINUTE_MS, true).unwrap(),
                T0,
            )
            .unwrap();
        let mut alarm = input();
        alarm.alarm_name = format!("a{service}");
        alarm.dimensions = dims;
        definitions.push(check_put_metric_alarm(&alarm, "arn").unwrap());
    }
    let started = std::time::Instant::now();
    let mut alarms = 0;
    for definition in &definitions {
        if let Some(outcome) = evaluate(
            definition,
            &AlarmStatus::created(T0),
            &store,
            T0 + 5 * MINUTE_MS,
        )
        .unwrap()
        {
            alarms += usize::from(outcome.status.state == AlarmState::Alarm);
        }
    }
    eprintln!(
        "1,000 alarms evaluated in {:?} (debug build)",
        started.elapsed()
    );
    assert_eq!(alarms, 290, "services 71..99 of every hundred are above 70");
}
