//! Registration and task subnets through the control plane's public entry
//! point, with requests written as the JSON clients send.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flotilla_types::ecs::EcsRequest;
use flotilla_types::ApiError;
use serde_json::{json, Value};

use crate::testing::{caller, ecs_with_clock, FixedClock};
use crate::Ecs;

const START_MS: u64 = 1_700_000_000_000;

async fn call(ecs: &Ecs, operation: &str, body: Value) -> Result<Value, ApiError> {
    let bytes = serde_json::to_vec(&body).expect("json");
    let request = EcsRequest::decode(operation, &bytes).expect("known operation")?;
    let response = ecs.handle(&caller(), request).await?;
    Ok(serde_json::to_value(response).expect("response serializes"))
}

fn registration(subnets_in_use: &[&str], existing_arn: Option<&str>) -> Value {
    let document = json!({"instanceId": "i-0123456789abcdef0", "subnetsInUse": subnets_in_use});
    let mut body = json!({
        "cluster": "c",
        "instanceIdentityDocument": document.to_string(),
        "totalResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": 4096}
        ],
        "attributes": [{"name": "ecs.capability.task-eni"}],
    });
    if let Some(arn) = existing_arn {
        body["containerInstanceArn"] = json!(arn);
    }
    body
}

/// The instance's task subnet, as its agent reads it from the answer.
fn task_subnet(instance: &Value) -> String {
    let attachments = instance["attachments"].as_array().expect("attachments");
    assert_eq!(attachments.len(), 1, "{instance}");
    assert_eq!(attachments[0]["type"], "ElasticNetworkInterface");
    assert_eq!(attachments[0]["status"], "ATTACHED");
    attachments[0]["details"]
        .as_array()
        .expect("details")
        .iter()
        .find(|detail| detail["name"] == "subnetCidrBlock")
        .and_then(|detail| detail["value"].as_str())
        .expect("subnetCidrBlock")
        .to_owned()
}

async fn world() -> (Ecs, Arc<FixedClock>) {
    let clock = Arc::new(FixedClock(AtomicU64::new(START_MS)));
    let ecs = ecs_with_clock(Arc::clone(&clock));
    call(&ecs, "CreateCluster", json!({"clusterName": "c"}))
        .await
        .expect("cluster");
    (ecs, clock)
}

async fn register(ecs: &Ecs, subnets_in_use: &[&str], existing_arn: Option<&str>) -> Value {
    let answer = call(
        ecs,
        "RegisterContainerInstance",
        registration(subnets_in_use, existing_arn),
    )
    .await
    .expect("registered");
    answer["containerInstance"].clone()
}

#[tokio::test]
async fn task_subnets_avoid_the_networks_the_engine_reports() {
    let (ecs, _) = world().await;
    let first = register(&ecs, &[], None).await;
    assert_eq!(task_subnet(&first), "100.64.0.0/24");
    // Another installation on the second host's engine holds the next
    // subnets; a wide network of some other software holds a /23 further on.
    let second = register(
        &ecs,
        &["100.64.1.0/24", "100.64.2.0/23", "172.17.0.0/16"],
        None,
    )
    .await;
    assert_eq!(task_subnet(&second), "100.64.4.0/24");
    let described = call(
        &ecs,
        "DescribeContainerInstances",
        json!({"cluster": "c", "containerInstances": [second["containerInstanceArn"]]}),
    )
    .await
    .expect("described");
    assert_eq!(
        task_subnet(&described["containerInstances"][0]),
        "100.64.4.0/24"
    );
}

#[tokio::test]
async fn a_returning_instance_moves_off_a_subnet_another_network_took() {
    let (ecs, _) = world().await;
    let instance = register(&ecs, &[], None).await;
    let arn = instance["containerInstanceArn"].as_str().expect("arn");
    assert_eq!(task_subnet(&instance), "100.64.0.0/24");
    // Its own network is never reported: the subnet stays.
    let again = register(&ecs, &["172.17.0.0/16"], Some(arn)).await;
    assert_eq!(again["containerInstanceArn"], arn);
    assert_eq!(task_subnet(&again), "100.64.0.0/24");
    // Another network holds it now (the agent could not create its own).
    let moved = register(&ecs, &["100.64.0.0/24"], Some(arn)).await;
    assert_eq!(moved["containerInstanceArn"], arn);
    assert_eq!(task_subnet(&moved), "100.64.1.0/24");
    // The subnet it left is free for others.
    let other = register(&ecs, &[], None).await;
    let other_subnet = task_subnet(&other);
    assert_ne!(other_subnet, "100.64.1.0/24");
    let pool = crate::records::get::<super::SubnetPool>(
        ecs.store.as_ref(),
        crate::records::keys::TASK_SUBNETS,
    )
    .expect("read")
    .expect("pool");
    assert_eq!(pool.value.in_use.len(), 2, "{:?}", pool.value);
}

#[tokio::test]
async fn a_host_whose_engine_holds_every_task_subnet_is_told_why() {
    let (ecs, _) = world().await;
    let error = call(
        &ecs,
        "RegisterContainerInstance",
        registration(&["100.64.0.0/10"], None),
    )
    .await
    .expect_err("no subnet is free");
    assert_eq!(error.code, "ClientException");
    assert!(
        error.message.starts_with(
            "No task subnet is free for this container instance: of the 16384 /24 subnets of 100.64.0.0/10, 0 are held by registered container instances and 16384 overlap networks of the instance's container engine (it reported 100.64.0.0/10)"
        ),
        "{}",
        error.message
    );
    // Nothing was registered.
    let listed = call(&ecs, "ListContainerInstances", json!({"cluster": "c"}))
        .await
        .expect("listed");
    assert_eq!(listed["containerInstanceArns"], json!([]));

    let malformed = call(
        &ecs,
        "RegisterContainerInstance",
        registration(&["100.64.0.0/99"], None),
    )
    .await
    .expect_err("malformed");
    assert_eq!(malformed.code, "InvalidParameterException");
    assert!(
        malformed
            .message
            .contains("\"100.64.0.0/99\" is not an IPv4 CIDR block"),
        "{}",
        malformed.message
    );
}

#[tokio::test]
async fn deregistered_instances_show_no_task_subnet() {
    let (ecs, clock) = world().await;
    let instance = register(&ecs, &[], None).await;
    clock.0.fetch_add(1_000, Ordering::Relaxed);
    let answer = call(
        &ecs,
        "DeregisterContainerInstance",
        json!({"cluster": "c", "containerInstance": instance["containerInstanceArn"]}),
    )
    .await
    .expect("deregistered");
    assert_eq!(answer["containerInstance"]["attachments"], json!([]));
}
