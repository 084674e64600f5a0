//! Capacity providers through the control plane's public entry point, with
//! requests written as the JSON clients send.

use flotilla_types::ecs::EcsRequest;
use flotilla_types::ApiError;
use serde_json::{json, Value};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::testing::{caller, ecs, ecs_with_clock, FixedClock};
use crate::Ecs;

const ASG: &str =
    "arn:aws:autoscaling:us-east-1:000000000000:autoScalingGroup:1:autoScalingGroupName/";

async fn call(ecs: &Ecs, operation: &str, body: Value) -> Result<Value, ApiError> {
    let bytes = serde_json::to_vec(&body).expect("json");
    let request = EcsRequest::decode(operation, &bytes).expect("known operation")?;
    let response = ecs.handle(&caller(), request).await?;
    Ok(serde_json::to_value(response).expect("response serializes"))
}

async fn ok(ecs: &Ecs, operation: &str, body: Value) -> Value {
    match call(ecs, operation, body.clone()).await {
        Ok(value) => value,
        Err(error) => panic!("{operation} failed: {error}\n{body}"),
    }
}

async fn err(ecs: &Ecs, operation: &str, body: Value) -> ApiError {
    match call(ecs, operation, body.clone()).await {
        Ok(value) => panic!("{operation} succeeded but should not have: {value}\n{body}"),
        Err(error) => error,
    }
}

async fn provider(ecs: &Ecs, name: &str) -> Value {
    ok(
        ecs,
        "CreateCapacityProvider",
        json!({
            "name": name,
            "autoScalingGroupProvider": {"autoScalingGroupArn": format!("{ASG}{name}")},
        }),
    )
    .await["capacityProvider"]
        .clone()
}

/// Registers a connected instance of `memory` MiB in `provider` (or none).
async fn instance(ecs: &Ecs, cluster: &str, provider: Option<&str>, memory: i64) -> String {
    let mut identity =
        json!({"instanceId": "i-0123456789abcdef0", "availabilityZone": "us-east-1a"});
    if let Some(provider) = provider {
        identity["capacityProviderName"] = json!(provider);
    }
    let registered = ok(
        ecs,
        "RegisterContainerInstance",
        json!({
            "cluster": cluster,
            "instanceIdentityDocument": identity.to_string(),
            "totalResources": [
                {"name": "CPU", "type": "INTEGER", "integerValue": 4096},
                {"name": "MEMORY", "type": "INTEGER", "integerValue": memory},
            ],
        }),
    )
    .await;
    let instance = &registered["containerInstance"];
    assert_eq!(instance["capacityProviderName"].as_str(), provider);
    let arn = instance["containerInstanceArn"]
        .as_str()
        .expect("arn")
        .to_owned();
    let agent = ecs
        .resolve_agent_instance(cluster, &arn)
        .expect("agent instance");
    assert!(ecs
        .set_agent_connected(&agent, "conn-1", true)
        .await
        .expect("connect"));
    arn
}

async fn definition(ecs: &Ecs, family: &str) {
    ok(
        ecs,
        "RegisterTaskDefinition",
        json!({
            "family": family,
            "containerDefinitions": [{"name": "app", "image": "busybox", "memory": 128}],
        }),
    )
    .await;
}

/// Per task: the instance it went to and the provider it reports.
fn placed(response: &Value) -> Vec<(String, String)> {
    response["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["containerInstanceArn"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                t["capacityProviderName"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

fn count_of(placed: &[(String, String)], provider: &str) -> usize {
    placed.iter().filter(|(_, p)| p == provider).count()
}

#[tokio::test]
async fn create_describe_update_delete() {
    let ecs = ecs();
    let created = ok(
        &ecs,
        "CreateCapacityProvider",
        json!({
            "name": "spot",
            "autoScalingGroupProvider": {
                "autoScalingGroupArn": "my-asg",
                "managedScaling": {"status": "ENABLED", "targetCapacity": 90},
                "managedTerminationProtection": "ENABLED",
            },
            "tags": [{"key": "team", "value": "a"}],
        }),
    )
    .await["capacityProvider"]
        .clone();
    assert_eq!(
        created["capacityProviderArn"],
        "arn:aws:ecs:us-east-1:000000000000:capacity-provider/spot"
    );
    assert_eq!(created["status"], "ACTIVE");
    assert_eq!(created["type"], "EC2_AUTOSCALING");
    let settings = &created["autoScalingGroupProvider"];
    assert_eq!(settings["autoScalingGroupArn"], "my-asg");
    assert_eq!(
        settings["managedScaling"],
        json!({"status": "ENABLED", "targetCapacity": 90, "minimumScalingStepSize": 1,
               "maximumScalingStepSize": 10000, "instanceWarmupPeriod": 300})
    );
    assert_eq!(settings["managedTerminationProtection"], "ENABLED");
    assert_eq!(settings["managedDraining"], "ENABLED");

    let all = ok(&ecs, "DescribeCapacityProviders", json!({})).await;
    let names: Vec<&str> = all["capacityProviders"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["FARGATE", "FARGATE_SPOT", "spot"]);
    assert!(
        all["capacityProviders"][2].get("tags").is_none(),
        "tags only when asked"
    );
    let tagged = ok(
        &ecs,
        "DescribeCapacityProviders",
        json!({"capacityProviders": ["spot", "nope"], "include": ["TAGS"]}),
    )
    .await;
    assert_eq!(
        tagged["capacityProviders"][0]["tags"],
        json!([{"key": "team", "value": "a"}])
    );
    assert_eq!(
        tagged["failures"],
        json!([{"arn": "arn:aws:ecs:us-east-1:000000000000:capacity-provider/nope", "reason": "MISSING"}])
    );

    let updated = ok(&ecs, "UpdateCapacityProvider", json!({
        "name": "arn:aws:ecs:us-east-1:000000000000:capacity-provider/spot",
        "autoScalingGroupProvider": {"managedScaling": {"maximumScalingStepSize": 5}, "managedDraining": "DISABLED"},
    }))
    .await["capacityProvider"]
        .clone();
    assert_eq!(updated["updateStatus"], "UPDATE_COMPLETE");
    let scaling = &updated["autoScalingGroupProvider"]["managedScaling"];
    assert_eq!(
        (
            scaling["status"].as_str(),
            scaling["targetCapacity"].as_i64(),
            scaling["maximumScalingStepSize"].as_i64()
        ),
        (Some("ENABLED"), Some(90), Some(5))
    );
    assert_eq!(
        updated["autoScalingGroupProvider"]["managedDraining"],
        "DISABLED"
    );

    let deleted = ok(
        &ecs,
        "DeleteCapacityProvider",
        json!({"capacityProvider": "spot"}),
    )
    .await["capacityProvider"]
        .clone();
    assert_eq!(
        (deleted["status"].as_str(), deleted["updateStatus"].as_str()),
        (Some("INACTIVE"), Some("DELETE_COMPLETE"))
    );
    let described = ok(
        &ecs,
        "DescribeCapacityProviders",
        json!({"capacityProviders": ["spot"]}),
    )
    .await;
    assert_eq!(described["capacityProviders"][0]["status"], "INACTIVE");
    let again = err(
        &ecs,
        "DeleteCapacityProvider",
        json!({"capacityProvider": "spot"}),
    )
    .await;
    assert_eq!(again.code, "InvalidParameterException");
    // The name is free again.
    provider(&ecs, "spot").await;
}

#[tokio::test]
async fn refused_requests_say_why() {
    let ecs = ecs();
    provider(&ecs, "taken").await;
    let asg = |name: &str| json!({"autoScalingGroupArn": format!("{ASG}{name}")});
    let cases = [
        (
            "reserved prefix",
            json!({"name": "ecs-mine", "autoScalingGroupProvider": asg("x")}),
            "InvalidParameterException",
        ),
        (
            "reserved prefix in another case",
            json!({"name": "Fargate2", "autoScalingGroupProvider": asg("x")}),
            "InvalidParameterException",
        ),
        (
            "bad character",
            json!({"name": "a.b", "autoScalingGroupProvider": asg("x")}),
            "InvalidParameterException",
        ),
        (
            "no group",
            json!({"name": "a"}),
            "InvalidParameterException",
        ),
        (
            "empty group",
            json!({"name": "a", "autoScalingGroupProvider": {"autoScalingGroupArn": " "}}),
            "InvalidParameterException",
        ),
        (
            "target capacity",
            json!({"name": "a", "autoScalingGroupProvider": {"autoScalingGroupArn": "g", "managedScaling": {"targetCapacity": 0}}}),
            "InvalidParameterException",
        ),
        (
            "steps reversed",
            json!({"name": "a", "autoScalingGroupProvider": {"autoScalingGroupArn": "g", "managedScaling": {"minimumScalingStepSize": 5, "maximumScalingStepSize": 2}}}),
            "InvalidParameterException",
        ),
        (
            "managed instances",
            json!({"name": "a", "managedInstancesProvider": {"infrastructureRoleArn": "r"}}),
            "UnsupportedFeatureException",
        ),
        (
            "same name",
            json!({"name": "taken", "autoScalingGroupProvider": asg("other")}),
            "ClientException",
        ),
        (
            "same group",
            json!({"name": "b", "autoScalingGroupProvider": asg("taken")}),
            "ClientException",
        ),
        (
            "aws: tag",
            json!({"name": "a", "autoScalingGroupProvider": asg("x"), "tags": [{"key": "aws:x", "value": "1"}]}),
            "InvalidParameterException",
        ),
    ];
    for (case, body, code) in cases {
        assert_eq!(
            err(&ecs, "CreateCapacityProvider", body).await.code,
            code,
            "{case}"
        );
    }
    for (operation, body) in [
        (
            "UpdateCapacityProvider",
            json!({"name": "FARGATE", "autoScalingGroupProvider": {}}),
        ),
        (
            "DeleteCapacityProvider",
            json!({"capacityProvider": "FARGATE_SPOT"}),
        ),
        (
            "DeleteCapacityProvider",
            json!({"capacityProvider": "missing"}),
        ),
        (
            "UpdateCapacityProvider",
            json!({"name": "missing", "autoScalingGroupProvider": {}}),
        ),
    ] {
        assert_eq!(
            err(&ecs, operation, body.clone()).await.code,
            "InvalidParameterException",
            "{operation} {body}"
        );
    }
    let all = ok(&ecs, "DescribeCapacityProviders", json!({})).await;
    assert_eq!(
        all["capacityProviders"].as_array().map(Vec::len),
        Some(3),
        "only FARGATE, FARGATE_SPOT and taken"
    );
}

#[tokio::test]
async fn describe_pages_through_fargate_and_stored_providers() {
    let ecs = ecs();
    for name in ["p1", "p2", "p3", "p4"] {
        provider(&ecs, name).await;
    }
    let mut token: Option<String> = None;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let mut body = json!({"maxResults": 2});
        if let Some(token) = &token {
            body["nextToken"] = json!(token);
        }
        let page = ok(&ecs, "DescribeCapacityProviders", body).await;
        seen.extend(
            page["capacityProviders"]
                .as_array()
                .expect("page")
                .iter()
                .map(|p| p["name"].as_str().unwrap_or_default().to_owned()),
        );
        token = page["nextToken"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["FARGATE", "FARGATE_SPOT", "p1", "p2", "p3", "p4"]);
    let bad = err(&ecs, "DescribeCapacityProviders", json!({"maxResults": 11})).await;
    assert_eq!(bad.code, "InvalidParameterException");
}

#[tokio::test]
async fn clusters_associate_and_release_their_providers() {
    let ecs = ecs();
    provider(&ecs, "a").await;
    provider(&ecs, "b").await;
    let created = ok(
        &ecs,
        "CreateCluster",
        json!({
            "clusterName": "one", "capacityProviders": ["a", "FARGATE"],
            "defaultCapacityProviderStrategy": [{"capacityProvider": "a", "weight": 1}],
        }),
    )
    .await;
    assert_eq!(
        created["cluster"]["capacityProviders"],
        json!(["a", "FARGATE"])
    );
    // One cluster per provider.
    ok(&ecs, "CreateCluster", json!({"clusterName": "two"})).await;
    let elsewhere = err(
        &ecs,
        "PutClusterCapacityProviders",
        json!({
            "cluster": "two", "capacityProviders": ["a"], "defaultCapacityProviderStrategy": [],
        }),
    )
    .await;
    assert_eq!(elsewhere.code, "InvalidParameterException");
    let associated = err(
        &ecs,
        "DeleteCapacityProvider",
        json!({"capacityProvider": "a"}),
    )
    .await;
    assert_eq!(associated.code, "ClientException");
    assert!(
        associated.message.contains("associated with cluster: one"),
        "{}",
        associated.message
    );
    let described = ok(&ecs, "DescribeCapacityProviders", json!({"cluster": "one"})).await;
    let names: Vec<&str> = described["capacityProviders"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["FARGATE", "a"]);

    let put = ok(
        &ecs,
        "PutClusterCapacityProviders",
        json!({
            "cluster": "one", "capacityProviders": ["b"],
            "defaultCapacityProviderStrategy": [{"capacityProvider": "b", "base": 1, "weight": 2}],
        }),
    )
    .await;
    assert_eq!(put["cluster"]["capacityProviders"], json!(["b"]));
    assert_eq!(
        put["cluster"]["defaultCapacityProviderStrategy"],
        json!([{"capacityProvider": "b", "base": 1, "weight": 2}])
    );
    ok(&ecs, "PutClusterCapacityProviders", json!({"cluster": "two", "capacityProviders": ["a"], "defaultCapacityProviderStrategy": []})).await;
    ok(&ecs, "DeleteCluster", json!({"cluster": "one"})).await;
    ok(
        &ecs,
        "DeleteCapacityProvider",
        json!({"capacityProvider": "b"}),
    )
    .await;
    for (case, body) in [
        (
            "strategy names an unlisted provider",
            json!({"cluster": "two", "capacityProviders": ["a"], "defaultCapacityProviderStrategy": [{"capacityProvider": "b"}]}),
        ),
        (
            "deleted provider",
            json!({"cluster": "two", "capacityProviders": ["a", "b"], "defaultCapacityProviderStrategy": []}),
        ),
        (
            "named twice",
            json!({"cluster": "two", "capacityProviders": ["a", "a"], "defaultCapacityProviderStrategy": []}),
        ),
        (
            "two bases",
            json!({"cluster": "two", "capacityProviders": ["a", "FARGATE"], "defaultCapacityProviderStrategy": [{"capacityProvider": "a", "base": 1}, {"capacityProvider": "FARGATE", "base": 1}]}),
        ),
    ] {
        assert_eq!(
            err(&ecs, "PutClusterCapacityProviders", body).await.code,
            "InvalidParameterException",
            "{case}"
        );
    }
    let cluster = ok(&ecs, "DescribeClusters", json!({"clusters": ["two"]})).await;
    assert_eq!(
        cluster["clusters"][0]["capacityProviders"],
        json!(["a"]),
        "refused requests change nothing"
    );
}

#[tokio::test]
async fn run_task_splits_by_base_then_weight_onto_each_providers_instances() {
    let ecs = ecs();
    provider(&ecs, "ondemand").await;
    provider(&ecs, "spot").await;
    ok(
        &ecs,
        "CreateCluster",
        json!({"clusterName": "c", "capacityProviders": ["ondemand", "spot"]}),
    )
    .await;
    let ondemand = instance(&ecs, "c", Some("ondemand"), 8192).await;
    let spot = instance(&ecs, "c", Some("spot"), 8192).await;
    let plain = instance(&ecs, "c", None, 8192).await;
    definition(&ecs, "web").await;
    let ran = ok(
        &ecs,
        "RunTask",
        json!({
            "cluster": "c", "taskDefinition": "web", "count": 10,
            "capacityProviderStrategy": [
                {"capacityProvider": "ondemand", "base": 2, "weight": 1},
                {"capacityProvider": "spot", "weight": 3},
            ],
        }),
    )
    .await;
    let tasks = placed(&ran);
    assert_eq!(
        (count_of(&tasks, "ondemand"), count_of(&tasks, "spot")),
        (4, 6),
        "{tasks:?}"
    );
    for (instance, provider) in &tasks {
        let expected = if provider == "ondemand" {
            &ondemand
        } else {
            &spot
        };
        assert_eq!(
            instance, expected,
            "a {provider} task on its provider's instance"
        );
    }
    // With a launch type, any EC2 instance; the task reports no provider.
    let ec2 = ok(
        &ecs,
        "RunTask",
        json!({"cluster": "c", "taskDefinition": "web", "launchType": "EC2"}),
    )
    .await;
    assert_eq!(placed(&ec2)[0].1, "-");
    // With neither, the cluster's default strategy.
    ok(
        &ecs,
        "PutClusterCapacityProviders",
        json!({
            "cluster": "c", "capacityProviders": ["ondemand", "spot"],
            "defaultCapacityProviderStrategy": [{"capacityProvider": "spot", "weight": 1}],
        }),
    )
    .await;
    let by_default = placed(
        &ok(
            &ecs,
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "web", "count": 3}),
        )
        .await,
    );
    assert_eq!(by_default, vec![(spot.clone(), "spot".to_owned()); 3]);
    let _ = plain;
}

#[tokio::test]
async fn a_share_without_instances_fails_and_the_rest_runs() {
    let ecs = ecs();
    provider(&ecs, "empty").await;
    provider(&ecs, "full").await;
    ok(
        &ecs,
        "CreateCluster",
        json!({"clusterName": "c", "capacityProviders": ["empty", "full"]}),
    )
    .await;
    instance(&ecs, "c", Some("full"), 8192).await;
    definition(&ecs, "web").await;
    let ran = ok(&ecs, "RunTask", json!({
        "cluster": "c", "taskDefinition": "web", "count": 4,
        "capacityProviderStrategy": [{"capacityProvider": "empty", "weight": 1}, {"capacityProvider": "full", "weight": 1}],
    }))
    .await;
    assert_eq!(count_of(&placed(&ran), "full"), 2);
    assert_eq!(
        ran["failures"],
        json!([{"arn": "arn:aws:ecs:us-east-1:000000000000:capacity-provider/empty",
                "reason": "No Container Instances were found in capacity provider empty."}])
    );
}

#[tokio::test]
async fn strategies_are_refused_as_ecs_refuses_them() {
    let ecs = ecs();
    provider(&ecs, "a").await;
    provider(&ecs, "b").await;
    provider(&ecs, "loose").await;
    ok(
        &ecs,
        "CreateCluster",
        json!({"clusterName": "c", "capacityProviders": ["a", "b"]}),
    )
    .await;
    instance(&ecs, "c", Some("a"), 8192).await;
    definition(&ecs, "web").await;
    let many: Vec<Value> = (0..21)
        .map(|i| json!({"capacityProvider": format!("p{i}"), "weight": 1}))
        .collect();
    let cases = [
        (
            "launch type too",
            json!({"launchType": "EC2", "capacityProviderStrategy": [{"capacityProvider": "a"}]}),
            "InvalidParameterException",
            "Specifying both a launch type and capacity provider strategy",
        ),
        (
            "not associated",
            json!({"capacityProviderStrategy": [{"capacityProvider": "loose"}]}),
            "InvalidParameterException",
            "not associated with the cluster",
        ),
        (
            "two bases",
            json!({"capacityProviderStrategy": [{"capacityProvider": "a", "base": 1}, {"capacityProvider": "b", "base": 1, "weight": 1}]}),
            "InvalidParameterException",
            "base",
        ),
        (
            "all weights zero",
            json!({"capacityProviderStrategy": [{"capacityProvider": "a"}, {"capacityProvider": "b"}]}),
            "InvalidParameterException",
            "weight value greater than zero",
        ),
        (
            "more than 20",
            json!({"capacityProviderStrategy": many}),
            "InvalidParameterException",
            "20",
        ),
        (
            "Fargate not associated",
            json!({"capacityProviderStrategy": [{"capacityProvider": "FARGATE", "weight": 1}]}),
            "InvalidParameterException",
            "not associated with the cluster",
        ),
    ];
    for (case, extra, code, words) in cases {
        let mut body = json!({"cluster": "c", "taskDefinition": "web"});
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        let error = err(&ecs, "RunTask", body).await;
        assert_eq!(error.code, code, "{case}: {}", error.message);
        assert!(error.message.contains(words), "{case}: {}", error.message);
    }
    let tasks = ok(&ecs, "ListTasks", json!({"cluster": "c"})).await;
    assert_eq!(
        tasks["taskArns"],
        json!([]),
        "refused requests start nothing"
    );
}

#[tokio::test]
async fn providers_in_use_by_services_or_tasks_stay_with_their_cluster() {
    let ecs = ecs();
    provider(&ecs, "a").await;
    provider(&ecs, "b").await;
    ok(
        &ecs,
        "CreateCluster",
        json!({
            "clusterName": "c", "capacityProviders": ["a", "b"],
            "defaultCapacityProviderStrategy": [{"capacityProvider": "a", "weight": 1}],
        }),
    )
    .await;
    definition(&ecs, "web").await;
    let service = ok(
        &ecs,
        "CreateService",
        json!({"cluster": "c", "serviceName": "s", "taskDefinition": "web", "desiredCount": 0}),
    )
    .await;
    assert_eq!(
        service["service"]["capacityProviderStrategy"],
        json!([{"capacityProvider": "a", "weight": 1}]),
        "the default, copied"
    );
    assert!(service["service"].get("launchType").is_none());
    let only_b =
        json!({"cluster": "c", "capacityProviders": ["b"], "defaultCapacityProviderStrategy": []});
    let in_use = err(&ecs, "PutClusterCapacityProviders", only_b.clone()).await;
    assert_eq!(in_use.code, "ResourceInUseException");
    // Back to the launch type: the provider is free.
    let updated = ok(
        &ecs,
        "UpdateService",
        json!({"cluster": "c", "service": "s", "capacityProviderStrategy": []}),
    )
    .await;
    assert_eq!(updated["service"]["launchType"], "EC2");
    // A task on b holds it.
    instance(&ecs, "c", Some("b"), 8192).await;
    ok(&ecs, "RunTask", json!({"cluster": "c", "taskDefinition": "web", "capacityProviderStrategy": [{"capacityProvider": "b"}]})).await;
    let only_a =
        json!({"cluster": "c", "capacityProviders": ["a"], "defaultCapacityProviderStrategy": []});
    assert_eq!(
        err(&ecs, "PutClusterCapacityProviders", only_a).await.code,
        "ResourceInUseException"
    );
    ok(&ecs, "PutClusterCapacityProviders", only_b).await;
    let daemon = err(&ecs, "CreateService", json!({
        "cluster": "c", "serviceName": "d", "taskDefinition": "web", "schedulingStrategy": "DAEMON",
        "capacityProviderStrategy": [{"capacityProvider": "b"}],
    }))
    .await;
    assert_eq!(daemon.code, "InvalidParameterException");
}

#[tokio::test]
async fn tags_on_a_capacity_provider() {
    let ecs = ecs();
    let arn = provider(&ecs, "tagged").await["capacityProviderArn"]
        .as_str()
        .expect("arn")
        .to_owned();
    ok(
        &ecs,
        "TagResource",
        json!({"resourceArn": arn, "tags": [{"key": "team", "value": "a"}]}),
    )
    .await;
    ok(
        &ecs,
        "TagResource",
        json!({"resourceArn": arn, "tags": [{"key": "env", "value": "dev"}]}),
    )
    .await;
    ok(
        &ecs,
        "UntagResource",
        json!({"resourceArn": arn, "tagKeys": ["team"]}),
    )
    .await;
    let listed = ok(&ecs, "ListTagsForResource", json!({"resourceArn": arn})).await;
    assert_eq!(listed["tags"], json!([{"key": "env", "value": "dev"}]));
    ok(
        &ecs,
        "DeleteCapacityProvider",
        json!({"capacityProvider": "tagged"}),
    )
    .await;
    let gone = err(&ecs, "ListTagsForResource", json!({"resourceArn": arn})).await;
    // ListTagsForResource models no ResourceNotFoundException.
    assert_eq!(gone.code, "InvalidParameterException");
}

#[tokio::test]
async fn deleted_providers_are_collected_after_their_retention() {
    let clock = Arc::new(FixedClock(AtomicU64::new(1_700_000_000_000)));
    let ecs = ecs_with_clock(clock.clone());
    provider(&ecs, "gone").await;
    provider(&ecs, "kept").await;
    ok(
        &ecs,
        "DeleteCapacityProvider",
        json!({"capacityProvider": "gone"}),
    )
    .await;
    assert_eq!(
        ecs.collect_inactive_capacity_providers()
            .await
            .expect("collect"),
        0
    );
    clock.0.fetch_add(
        super::INACTIVE_CAPACITY_PROVIDER_RETENTION_MS,
        Ordering::Relaxed,
    );
    assert_eq!(
        ecs.collect_inactive_capacity_providers()
            .await
            .expect("collect"),
        1
    );
    let described = ok(
        &ecs,
        "DescribeCapacityProviders",
        json!({"capacityProviders": ["gone", "kept"]}),
    )
    .await;
    assert_eq!(described["capacityProviders"][0]["name"], "kept");
    assert_eq!(described["failures"][0]["reason"], "MISSING");
}
