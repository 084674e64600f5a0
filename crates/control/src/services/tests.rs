//! The service API's pure pieces: deployment ids, configuration defaults and
//! checks, the circuit breaker's threshold, records written by earlier
//! versions. The API and the scheduler together are exercised by
//! `tests/service_sim.rs`.

use flotilla_types::ecs::{
    DeploymentCircuitBreaker, DeploymentConfiguration, ThresholdConfiguration, ThresholdType,
};

use super::{deployment_id, failure_threshold, resolve_configuration, DeploymentRecord};

#[test]
fn deployment_ids_look_like_ecs_ones() {
    let id = deployment_id("0f1e2d3c-4b5a-4697-8877-665544332211");
    let digits = id.strip_prefix("ecs-svc/").expect("prefix");
    assert_eq!(digits.len(), 19);
    assert!(digits.chars().all(|c| c.is_ascii_digit()));
    assert_eq!(id, deployment_id("0f1e2d3c-4b5a-4697-8877-665544332211"));
}

#[test]
fn configuration_defaults_follow_the_scheduling_strategy() {
    let replica = resolve_configuration(None, None, false).expect("defaults");
    assert_eq!(
        (replica.minimum_healthy_percent, replica.maximum_percent),
        (Some(100), Some(200))
    );
    let breaker = replica.deployment_circuit_breaker.expect("breaker");
    assert_eq!(
        (breaker.enable, breaker.rollback),
        (Some(false), Some(false))
    );
    let daemon = resolve_configuration(None, None, true).expect("defaults");
    assert_eq!(
        (daemon.minimum_healthy_percent, daemon.maximum_percent),
        (Some(0), Some(100))
    );
}

#[test]
fn configuration_updates_keep_what_they_do_not_name() {
    let current = resolve_configuration(
        Some(&DeploymentConfiguration {
            minimum_healthy_percent: Some(50),
            ..Default::default()
        }),
        None,
        false,
    )
    .expect("valid");
    let updated = resolve_configuration(
        Some(&DeploymentConfiguration {
            maximum_percent: Some(150),
            ..Default::default()
        }),
        Some(&current),
        false,
    )
    .expect("valid");
    assert_eq!(
        (updated.minimum_healthy_percent, updated.maximum_percent),
        (Some(50), Some(150))
    );
}

#[test]
fn configurations_that_cannot_deploy_are_refused() {
    let refused = |minimum: i32, maximum: i32, daemon: bool| {
        let given = DeploymentConfiguration {
            minimum_healthy_percent: Some(minimum),
            maximum_percent: Some(maximum),
            ..Default::default()
        };
        resolve_configuration(Some(&given), None, daemon).is_err()
    };
    assert!(refused(101, 200, false));
    assert!(refused(-1, 200, false));
    assert!(refused(50, 90, false));
    assert!(refused(100, 100, false));
    assert!(refused(0, 200, true));
    assert!(!refused(50, 100, false));
    assert!(!refused(0, 100, true));
}

#[test]
fn circuit_breaker_threshold_is_half_the_desired_count_between_3_and_200() {
    let plain = DeploymentConfiguration::default();
    assert_eq!(failure_threshold(&plain, 1), 3);
    assert_eq!(failure_threshold(&plain, 4), 3);
    assert_eq!(failure_threshold(&plain, 9), 5);
    assert_eq!(failure_threshold(&plain, 100), 50);
    assert_eq!(failure_threshold(&plain, 10_000), 200);
    let counted = DeploymentConfiguration {
        deployment_circuit_breaker: Some(DeploymentCircuitBreaker {
            threshold_configuration: Some(ThresholdConfiguration {
                r#type: Some(ThresholdType::Count),
                value: Some(7),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(failure_threshold(&counted, 10_000), 7);
}

#[test]
fn deployment_records_written_with_failed_task_ids_still_count_them() {
    let written_before = serde_json::json!({
        "deployment": {"id": "ecs-svc/1", "status": "PRIMARY"},
        "spec": {"task_definition": "arn:aws:ecs:us-east-1:000000000000:task-definition/web:1",
                 "propagate_tags": "SERVICE", "task_tags": [{"key": "team", "value": "a"}]},
        "failed_task_ids": ["a", "b"],
        "started_at_ms": 1,
        "lifecycle": "IN_PROGRESS"
    });
    let mut record: DeploymentRecord = serde_json::from_value(written_before).expect("decodes");
    assert_eq!(record.failure_count().failures(), 2);
    let count = record.failure_count();
    record.set_failure_count(count);
    assert_eq!(record.deployment.failed_tasks, Some(2));
    let written = serde_json::to_value(&record).expect("encodes");
    assert!(written.get("failed_task_ids").is_none(), "{written}");
    let again: DeploymentRecord = serde_json::from_value(written).expect("decodes");
    assert_eq!(again.failure_count().failures(), 2);
}
