//! The API over an in-memory store, through typed requests.

use std::sync::Arc;

use flotilla_aws::elbv2::*;
use flotilla_store::MemoryStore;
use flotilla_types::arn::Scope;

use crate::{CallContext, Elbv2};

fn api() -> Elbv2 {
    Elbv2::new(
        Arc::new(MemoryStore::new()),
        Scope::new("us-east-1", "123456789012"),
    )
}

fn call(n: u32) -> CallContext {
    CallContext {
        now_ms: 1_700_000_000_000,
        fresh_id: format!("{n:08x}-1111-4222-8333-{n:012x}"),
    }
}

async fn run(
    api: &Elbv2,
    request: Elbv2Request,
    n: u32,
) -> Result<serde_json::Value, flotilla_types::ApiError> {
    api.handle(request, &call(n)).await.expect("implemented")
}

fn field<'a>(value: &'a serde_json::Value, path: &[&str]) -> &'a serde_json::Value {
    path.iter()
        .fold(value, |value, key| match key.parse::<usize>() {
            Ok(index) => &value[index],
            Err(_) => &value[*key],
        })
}

fn text(value: &serde_json::Value, path: &[&str]) -> String {
    field(value, path).as_str().unwrap_or_default().to_owned()
}

/// A load balancer, an ip target group with two targets, an HTTP listener
/// on 8081 forwarding to it, and a path rule answering a fixed response.
async fn web(api: &Elbv2) -> (String, String, String) {
    let balancer = run(
        api,
        Elbv2Request::CreateLoadBalancer(CreateLoadBalancerInput {
            name: Some("web".into()),
            ..Default::default()
        }),
        1,
    )
    .await
    .expect("load balancer");
    let balancer_arn = text(&balancer, &["LoadBalancers", "0", "LoadBalancerArn"]);
    let group = run(
        api,
        Elbv2Request::CreateTargetGroup(CreateTargetGroupInput {
            name: Some("pages".into()),
            protocol: Some(ProtocolEnum::Http),
            port: Some(8080),
            target_type: Some(TargetTypeEnum::Ip),
            ..Default::default()
        }),
        2,
    )
    .await
    .expect("target group");
    let group_arn = text(&group, &["TargetGroups", "0", "TargetGroupArn"]);
    run(
        api,
        Elbv2Request::RegisterTargets(RegisterTargetsInput {
            target_group_arn: Some(group_arn.clone()),
            targets: Some(vec![
                TargetDescription {
                    id: Some("172.17.0.2".into()),
                    ..Default::default()
                },
                TargetDescription {
                    id: Some("172.17.0.3".into()),
                    port: Some(9000),
                    ..Default::default()
                },
            ]),
        }),
        3,
    )
    .await
    .expect("targets");
    let listener = run(
        api,
        Elbv2Request::CreateListener(CreateListenerInput {
            load_balancer_arn: Some(balancer_arn),
            protocol: Some(ProtocolEnum::Http),
            port: Some(8081),
            default_actions: Some(vec![Action {
                r#type: Some(ActionTypeEnum::Forward),
                target_group_arn: Some(group_arn.clone()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        4,
    )
    .await
    .expect("listener");
    let listener_arn = text(&listener, &["Listeners", "0", "ListenerArn"]);
    run(
        api,
        Elbv2Request::CreateRule(CreateRuleInput {
            listener_arn: Some(listener_arn.clone()),
            priority: Some(5),
            conditions: Some(vec![RuleCondition {
                field: Some("path-pattern".into()),
                values: Some(vec!["/old/*".into()]),
                ..Default::default()
            }]),
            actions: Some(vec![Action {
                r#type: Some(ActionTypeEnum::FixedResponse),
                fixed_response_config: Some(FixedResponseActionConfig {
                    status_code: Some("410".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        5,
    )
    .await
    .expect("rule");
    (
        group_arn,
        listener_arn,
        text(&balancer, &["LoadBalancers", "0", "DNSName"]),
    )
}

#[tokio::test]
async fn records_translate_into_the_data_planes_snapshot() {
    let api = api();
    let (group_arn, _, dns_name) = web(&api).await;
    assert!(dns_name.starts_with("web-") && dns_name.ends_with(".us-east-1.elb.localhost"));
    let state = crate::records::State::read(&**api.store()).expect("state");
    let snapshot = crate::snapshot::build(&state, api.settings()).expect("snapshot");
    assert_eq!(snapshot.version, 5, "one version per committed change");
    let balancer = &snapshot.load_balancers[0];
    assert_eq!(balancer.name, "web");
    assert_eq!(balancer.listeners[0].port, 8081);
    let rule = &balancer.listeners[0].rules[0];
    assert_eq!(rule.priority, 5);
    assert!(matches!(
        &rule.conditions[0],
        flotilla_lb::config::Condition::PathPattern { config } if config.values == ["/old/*"]
    ));
    assert!(matches!(
        &balancer.listeners[0].default_actions[0],
        flotilla_lb::config::Action::Forward { target_group_arn: Some(arn), .. } if *arn == group_arn
    ));
    let group = &snapshot.target_groups[0];
    assert_eq!(group.target_group_arn, group_arn);
    assert_eq!(group.attributes.deregistration_delay_seconds, 300);
    let targets: Vec<(String, Option<u16>)> = group
        .targets
        .iter()
        .map(|target| (target.address.to_string(), target.port))
        .collect();
    assert_eq!(
        targets,
        [
            ("172.17.0.2".to_owned(), Some(8080)),
            ("172.17.0.3".to_owned(), Some(9000))
        ]
    );
}

#[tokio::test]
async fn a_refused_change_changes_nothing() {
    let api = api();
    let (_, listener_arn, _) = web(&api).await;
    let before = crate::records::State::read(&**api.store()).expect("state");
    let refused = run(
        &api,
        Elbv2Request::CreateRule(CreateRuleInput {
            listener_arn: Some(listener_arn),
            priority: Some(5),
            conditions: Some(vec![RuleCondition {
                field: Some("host-header".into()),
                values: Some(vec!["a.example".into()]),
                ..Default::default()
            }]),
            actions: Some(vec![Action {
                r#type: Some(ActionTypeEnum::FixedResponse),
                fixed_response_config: Some(FixedResponseActionConfig {
                    status_code: Some("200".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        6,
    )
    .await
    .expect_err("priority in use");
    assert_eq!(refused.code, "PriorityInUseException");
    assert_eq!(refused.message, "Priority '5' is currently in use");
    let after = crate::records::State::read(&**api.store()).expect("state");
    assert_eq!(before, after);
}

#[test]
fn pages_follow_their_markers() {
    let items: Vec<(String, u32)> = (0..5).map(|n| (format!("k{n}"), n)).collect();
    let (first, marker) = crate::page(&items, None, Some(2)).expect("page");
    assert_eq!((first, marker.as_deref()), (vec![0, 1], Some("k1")));
    let (second, marker) = crate::page(&items, Some("k1"), Some(2)).expect("page");
    assert_eq!((second, marker.as_deref()), (vec![2, 3], Some("k3")));
    let (last, marker) = crate::page(&items, Some("k3"), Some(2)).expect("page");
    assert_eq!((last, marker), (vec![4], None));
    assert_eq!(
        crate::page(&items, None, Some(0)).expect_err("size").code,
        "ValidationError"
    );
}

async fn create_group(
    api: &Elbv2,
    input: CreateTargetGroupInput,
) -> Result<serde_json::Value, flotilla_types::ApiError> {
    run(api, Elbv2Request::CreateTargetGroup(input), 9).await
}

#[tokio::test]
async fn target_groups_take_elbv2s_health_check_defaults_by_protocol() {
    let api = api();
    let tcp = create_group(
        &api,
        CreateTargetGroupInput {
            name: Some("tcp".into()),
            protocol: Some(ProtocolEnum::Tcp),
            port: Some(5432),
            ..Default::default()
        },
    )
    .await
    .expect("tcp group");
    let group = field(&tcp, &["TargetGroups", "0"]);
    assert_eq!(group["HealthCheckProtocol"], "TCP");
    assert_eq!(group["HealthCheckTimeoutSeconds"], 10);
    assert_eq!(group["HealthCheckIntervalSeconds"], 30);
    assert!(group.get("Matcher").is_none() && group.get("HealthCheckPath").is_none());
    let nlb_http_check = create_group(
        &api,
        CreateTargetGroupInput {
            name: Some("tcp-http-check".into()),
            protocol: Some(ProtocolEnum::Tcp),
            port: Some(80),
            health_check_protocol: Some(ProtocolEnum::Http),
            ..Default::default()
        },
    )
    .await
    .expect("tcp group with an HTTP check");
    let group = field(&nlb_http_check, &["TargetGroups", "0"]);
    assert_eq!(group["Matcher"]["HttpCode"], "200-399");
    assert_eq!(group["HealthCheckTimeoutSeconds"], 6);
    assert_eq!(group["HealthCheckPath"], "/");
}

#[tokio::test]
async fn target_group_checks_answer_validation_errors_naming_the_problem() {
    let api = api();
    let base = || CreateTargetGroupInput {
        name: Some("g".into()),
        protocol: Some(ProtocolEnum::Http),
        port: Some(80),
        ..Default::default()
    };
    let cases: Vec<(CreateTargetGroupInput, &str)> = vec![
        (
            CreateTargetGroupInput {
                protocol: None,
                ..base()
            },
            "A protocol must be specified",
        ),
        (
            CreateTargetGroupInput {
                health_check_interval_seconds: Some(4),
                ..base()
            },
            "at 'healthCheckIntervalSeconds'",
        ),
        (
            CreateTargetGroupInput {
                healthy_threshold_count: Some(11),
                ..base()
            },
            "at 'healthyThresholdCount'",
        ),
        (
            CreateTargetGroupInput {
                matcher: Some(Matcher {
                    http_code: Some("600".into()),
                    grpc_code: None,
                }),
                ..base()
            },
            "matcher HTTP code '600'",
        ),
        (
            CreateTargetGroupInput {
                name: Some("-bad".into()),
                ..base()
            },
            "cannot begin or end with a hyphen",
        ),
        (
            CreateTargetGroupInput {
                health_check_path: Some("health".into()),
                ..base()
            },
            "must begin with '/'",
        ),
    ];
    for (input, expected) in cases {
        let refused = create_group(&api, input).await.expect_err(expected);
        assert_eq!(refused.code, "ValidationError", "{expected}");
        assert!(refused.message.contains(expected), "{}", refused.message);
    }
    let state = crate::records::State::read(&**api.store()).expect("state");
    assert!(state.target_groups.is_empty());
}
