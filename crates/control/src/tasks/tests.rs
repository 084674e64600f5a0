//! Container instances, tasks and the agent channel through the control
//! plane's public entry points, with requests written as the JSON clients send.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flotilla_store::MemoryStore;
use flotilla_types::acs::ContainerHealth;
use flotilla_types::arn::Scope;
use flotilla_types::ecs::{EcsRequest, TaskStopCode};
use flotilla_types::ApiError;
use serde_json::{json, Value};

use super::{apply_change, TaskChange, TaskRecord, STOPPED_TASK_RETENTION_MS};
use crate::agent_channel::{AgentEvent, AgentInstance};
use crate::instances::DEREGISTERED_INSTANCE_RETENTION_MS;
use crate::testing::{caller, FixedClock};
use crate::{Ecs, IdSource};

const START_MS: u64 = 1_700_000_000_000;
const ENDPOINT: &str = "http://127.0.0.1:8440";

struct Ids(AtomicU64);

impl IdSource for Ids {
    fn uuid(&self) -> String {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-0000-4000-8000-{n:012x}", n * 7919)
    }
}

struct World {
    ecs: Arc<Ecs>,
    clock: Arc<FixedClock>,
}

impl World {
    fn new() -> Self {
        let clock = Arc::new(FixedClock(AtomicU64::new(START_MS)));
        let ecs = Ecs::new(
            Arc::new(MemoryStore::new()),
            Scope::new("us-east-1", "000000000000"),
            clock.clone(),
            Arc::new(Ids(AtomicU64::new(1))),
        )
        .with_advertised_endpoint(ENDPOINT);
        Self {
            ecs: Arc::new(ecs),
            clock,
        }
    }

    fn advance_ms(&self, ms: u64) {
        self.clock.0.fetch_add(ms, Ordering::Relaxed);
    }

    async fn call(&self, operation: &str, body: Value) -> Result<Value, ApiError> {
        call(&self.ecs, operation, body).await
    }

    async fn ok(&self, operation: &str, body: Value) -> Value {
        match self.call(operation, body.clone()).await {
            Ok(value) => value,
            Err(error) => panic!("{operation} failed: {error}\n{body}"),
        }
    }

    async fn err(&self, operation: &str, body: Value) -> ApiError {
        match self.call(operation, body.clone()).await {
            Ok(value) => panic!("{operation} succeeded but should not have: {value}\n{body}"),
            Err(error) => error,
        }
    }

    async fn cluster(&self, name: &str) {
        self.ok("CreateCluster", json!({"clusterName": name})).await;
    }

    /// Registers an instance with `cpu` units and `memory` MiB and connects its agent.
    async fn instance(&self, cluster: &str, cpu: i64, memory: i64, attributes: Value) -> String {
        let arn = self.register(cluster, cpu, memory, attributes).await;
        self.connect(cluster, &arn, "conn-1").await;
        arn
    }

    async fn register(&self, cluster: &str, cpu: i64, memory: i64, attributes: Value) -> String {
        let mut all: Vec<Value> = [
            "ecs.capability.task-eni",
            "ecs.capability.container-health-check",
            "com.amazonaws.ecs.capability.docker-remote-api.1.18",
            "com.amazonaws.ecs.capability.docker-remote-api.1.19",
            "com.amazonaws.ecs.capability.docker-remote-api.1.21",
            "com.amazonaws.ecs.capability.docker-remote-api.1.25",
        ]
        .into_iter()
        .map(|name| json!({"name": name}))
        .collect();
        all.extend(attributes.as_array().cloned().unwrap_or_default());
        let response = self
            .ok(
                "RegisterContainerInstance",
                json!({
                    "cluster": cluster,
                    "instanceIdentityDocument": "{\"instanceId\": \"i-0123456789abcdef0\", \"availabilityZone\": \"us-east-1a\", \"instanceType\": \"m5.large\"}",
                    "totalResources": [
                        {"name": "CPU", "type": "INTEGER", "integerValue": cpu},
                        {"name": "MEMORY", "type": "INTEGER", "integerValue": memory},
                        {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22", "2375", "2376", "51678", "51679"]},
                        {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []}
                    ],
                    "versionInfo": {"agentVersion": "1.0.0", "agentHash": "abc", "dockerVersion": "27.0.0"},
                    "attributes": all,
                }),
            )
            .await;
        response["containerInstance"]["containerInstanceArn"]
            .as_str()
            .expect("arn")
            .to_owned()
    }

    fn agent(&self, cluster: &str, arn: &str) -> AgentInstance {
        self.ecs
            .resolve_agent_instance(cluster, arn)
            .expect("agent instance")
    }

    async fn connect(&self, cluster: &str, arn: &str, connection: &str) {
        let agent = self.agent(cluster, arn);
        assert!(self
            .ecs
            .set_agent_connected(&agent, connection, true)
            .await
            .expect("connect"));
    }

    async fn definition(&self, body: Value) -> String {
        let response = self.ok("RegisterTaskDefinition", body).await;
        response["taskDefinition"]["taskDefinitionArn"]
            .as_str()
            .expect("arn")
            .to_owned()
    }

    async fn run(&self, body: Value) -> Value {
        self.ok("RunTask", body).await
    }

    async fn describe_instance(&self, cluster: &str, arn: &str) -> Value {
        let response = self
            .ok(
                "DescribeContainerInstances",
                json!({"cluster": cluster, "containerInstances": [arn], "include": ["TAGS"]}),
            )
            .await;
        response["containerInstances"][0].clone()
    }

    async fn describe_task(&self, cluster: &str, arn: &str) -> Value {
        let response = self
            .ok(
                "DescribeTasks",
                json!({"cluster": cluster, "tasks": [arn], "include": ["TAGS"]}),
            )
            .await;
        response["tasks"][0].clone()
    }

    async fn report(&self, cluster: &str, task: &str, status: &str, extra: Value) {
        let mut body = json!({"cluster": cluster, "task": task, "status": status});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let answer = self.ok("SubmitTaskStateChange", body).await;
        assert_eq!(answer["acknowledgment"], "ACK");
    }
}

async fn call(ecs: &Ecs, operation: &str, body: Value) -> Result<Value, ApiError> {
    let bytes = serde_json::to_vec(&body).expect("json");
    let request = EcsRequest::decode(operation, &bytes).expect("known operation")?;
    let response = ecs.handle(&caller(), request).await?;
    Ok(serde_json::to_value(response).expect("response serializes"))
}

fn resource(resources: &Value, name: &str) -> Value {
    resources
        .as_array()
        .and_then(|all| all.iter().find(|r| r["name"] == name))
        .cloned()
        .unwrap_or(Value::Null)
}

fn remaining(instance: &Value, name: &str) -> Value {
    let found = resource(&instance["remainingResources"], name);
    if found["type"] == "INTEGER" {
        found["integerValue"].clone()
    } else {
        found["stringSetValue"].clone()
    }
}

fn web(family: &str, cpu: i64, memory: i64, host_port: Option<i64>) -> Value {
    let mut container = json!({"name": "web", "image": "nginx", "cpu": cpu, "memory": memory});
    if let Some(port) = host_port {
        container["portMappings"] = json!([{"containerPort": 80, "hostPort": port}]);
    }
    json!({"family": family, "containerDefinitions": [container]})
}

fn task_arns(response: &Value) -> Vec<String> {
    response["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["taskArn"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn failure_reasons(response: &Value) -> Vec<String> {
    response["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| f["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn registration_creates_the_default_cluster_and_is_described() {
    let world = World::new();
    let arn = world
        .register("", 2048, 4096, json!([{"name": "stack", "value": "prod"}]))
        .await;
    let id = arn.rsplit('/').next().expect("id");
    assert!(
        arn.starts_with("arn:aws:ecs:us-east-1:000000000000:container-instance/default/"),
        "{arn}"
    );
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));

    let clusters = world.ok("DescribeClusters", json!({})).await;
    assert_eq!(
        clusters["clusters"][0]["registeredContainerInstancesCount"],
        1
    );

    let instance = world.describe_instance("default", &arn).await;
    assert_eq!(instance["status"], "ACTIVE");
    assert_eq!(instance["agentConnected"], false);
    assert_eq!(instance["version"], 1);
    assert_eq!(instance["ec2InstanceId"], "i-0123456789abcdef0");
    assert_eq!(instance["registeredAt"], 1_700_000_000.0);
    assert_eq!(instance["runningTasksCount"], 0);
    assert_eq!(instance["pendingTasksCount"], 0);
    assert_eq!(instance["versionInfo"]["agentVersion"], "1.0.0");
    assert_eq!(remaining(&instance, "CPU"), 2048);
    assert_eq!(remaining(&instance, "MEMORY"), 4096);
    assert_eq!(
        remaining(&instance, "PORTS"),
        json!(["22", "2375", "2376", "51678", "51679"])
    );
    assert_eq!(
        instance["registeredResources"],
        instance["remainingResources"]
    );
    let attributes = instance["attributes"].as_array().expect("attributes");
    assert!(attributes.contains(&json!({"name": "ecs.availability-zone", "value": "us-east-1a"})));
    assert!(attributes.contains(&json!({"name": "stack", "value": "prod"})));

    // Re-registration of the same identity keeps the id and counts as a change.
    let again = world
        .ok(
            "RegisterContainerInstance",
            json!({
                "containerInstanceArn": arn,
                "totalResources": [{"name": "CPU", "integerValue": 4096}, {"name": "MEMORY", "integerValue": 4096}],
            }),
        )
        .await;
    assert_eq!(
        again["containerInstance"]["containerInstanceArn"],
        arn.as_str()
    );
    assert_eq!(again["containerInstance"]["version"], 2);
    assert_eq!(remaining(&again["containerInstance"], "CPU"), 4096);

    let missing = world
        .ok(
            "DescribeContainerInstances",
            json!({"containerInstances": ["0123"]}),
        )
        .await;
    assert_eq!(failure_reasons(&missing), ["MISSING"]);
    assert_eq!(
        missing["failures"][0]["arn"],
        "arn:aws:ecs:us-east-1:000000000000:container-instance/default/0123"
    );
}

#[tokio::test]
async fn registration_is_checked() {
    let world = World::new();
    world.cluster("c").await;
    let cases = [
        (
            json!({"cluster": "nope", "totalResources": [{"name": "CPU", "integerValue": 1}, {"name": "MEMORY", "integerValue": 1}]}),
            "ClusterNotFoundException",
        ),
        (
            json!({"cluster": "c", "totalResources": [{"name": "MEMORY", "integerValue": 1}]}),
            "InvalidParameterException",
        ),
        (
            json!({"cluster": "c", "totalResources": [{"name": "CPU", "integerValue": -1}, {"name": "MEMORY", "integerValue": 1}]}),
            "InvalidParameterException",
        ),
        (
            json!({"cluster": "c", "totalResources": [{"name": "CPU", "integerValue": 1}, {"name": "MEMORY", "integerValue": 1}, {"name": "PORTS", "stringSetValue": ["http"]}]}),
            "InvalidParameterException",
        ),
        (
            json!({"cluster": "c", "instanceIdentityDocument": "not json", "totalResources": [{"name": "CPU", "integerValue": 1}, {"name": "MEMORY", "integerValue": 1}]}),
            "InvalidParameterException",
        ),
        (
            json!({"cluster": "c", "containerInstanceArn": "arn:aws:ecs:us-east-1:000000000000:container-instance/c/feedfeed", "totalResources": [{"name": "CPU", "integerValue": 1}, {"name": "MEMORY", "integerValue": 1}]}),
            "InvalidParameterException",
        ),
    ];
    for (body, code) in cases {
        assert_eq!(
            world
                .err("RegisterContainerInstance", body.clone())
                .await
                .code,
            code,
            "{body}"
        );
    }
}

#[tokio::test]
async fn run_task_places_and_reports_failures_as_ecs_does() {
    struct Case {
        name: &'static str,
        definition: Value,
        request: Value,
        /// Error code, or (tasks placed, failure reasons).
        expect: Result<(usize, Vec<&'static str>), &'static str>,
    }
    let cases = vec![
        Case {
            name: "fits",
            definition: web("a", 256, 256, None),
            request: json!({}),
            expect: Ok((1, vec![])),
        },
        Case {
            name: "count fills the instance",
            definition: web("a", 512, 512, None),
            request: json!({"count": 3}),
            expect: Ok((2, vec!["RESOURCE:CPU"])),
        },
        Case {
            name: "cpu",
            definition: web("a", 4096, 128, None),
            request: json!({}),
            expect: Ok((0, vec!["RESOURCE:CPU"])),
        },
        Case {
            name: "memory",
            definition: web("a", 128, 8192, None),
            request: json!({}),
            expect: Ok((0, vec!["RESOURCE:MEMORY"])),
        },
        Case {
            name: "static port",
            definition: web("a", 10, 10, Some(8080)),
            request: json!({"count": 2}),
            expect: Ok((1, vec!["RESOURCE:PORTS"])),
        },
        Case {
            name: "reserved port",
            definition: web("a", 10, 10, Some(22)),
            request: json!({}),
            expect: Ok((0, vec!["RESOURCE:PORTS"])),
        },
        Case {
            name: "dynamic port",
            definition: web("a", 10, 10, Some(0)),
            request: json!({"count": 3}),
            expect: Ok((3, vec![])),
        },
        Case {
            name: "count too large",
            definition: web("a", 1, 6, None),
            request: json!({"count": 11}),
            expect: Err("InvalidParameterException"),
        },
        Case {
            name: "count zero",
            definition: web("a", 1, 6, None),
            request: json!({"count": 0}),
            expect: Err("InvalidParameterException"),
        },
        Case {
            name: "fargate with a bridge definition",
            definition: web("a", 1, 6, None),
            request: json!({"launchType": "FARGATE"}),
            expect: Err("InvalidParameterException"),
        },
        Case {
            name: "no external instances",
            definition: web("a", 1, 6, None),
            request: json!({"launchType": "EXTERNAL"}),
            expect: Err("InvalidParameterException"),
        },
        Case {
            name: "unknown container override",
            definition: web("a", 1, 6, None),
            request: json!({"overrides": {"containerOverrides": [{"name": "db"}]}}),
            expect: Err("InvalidParameterException"),
        },
        Case {
            name: "memory override too small",
            definition: web("a", 1, 6, None),
            request: json!({"overrides": {"containerOverrides": [{"name": "web", "memory": 1}]}}),
            expect: Err("InvalidParameterException"),
        },
        Case {
            name: "task cpu override",
            definition: web("a", 1, 6, None),
            request: json!({"overrides": {"cpu": "lots"}}),
            expect: Err("InvalidParameterException"),
        },
        Case {
            name: "cpu override makes it fit",
            definition: web("a", 4096, 128, None),
            request: json!({"overrides": {"containerOverrides": [{"name": "web", "cpu": 10}]}}),
            expect: Ok((1, vec![])),
        },
        Case {
            name: "network configuration on bridge",
            definition: web("a", 1, 6, None),
            request: json!({"networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"]}}}),
            expect: Err("InvalidParameterException"),
        },
        Case {
            name: "started by too long",
            definition: web("a", 1, 6, None),
            request: json!({"startedBy": "x".repeat(129)}),
            expect: Err("InvalidParameterException"),
        },
        Case {
            name: "missing attribute",
            definition: json!({"family": "a", "containerDefinitions": [{"name": "web", "image": "nginx", "memory": 6, "privileged": true}]}),
            request: json!({}),
            expect: Ok((0, vec!["ATTRIBUTE"])),
        },
        Case {
            name: "memberOf",
            definition: web("a", 1, 6, None),
            request: json!({"placementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.instance-type == t2.micro"}]}),
            expect: Ok((0, vec!["MemberOf constraint not satisfied"])),
        },
    ];
    for case in cases {
        let world = World::new();
        world.cluster("c").await;
        world.instance("c", 1024, 2048, json!([])).await;
        world.definition(case.definition.clone()).await;
        let mut request = case.request.clone();
        request["cluster"] = json!("c");
        request["taskDefinition"] = json!("a");
        let outcome = world.call("RunTask", request).await;
        match (outcome, case.expect) {
            (Ok(response), Ok((placed, reasons))) => {
                assert_eq!(
                    task_arns(&response).len(),
                    placed,
                    "{}: {response}",
                    case.name
                );
                assert_eq!(failure_reasons(&response), reasons, "{}", case.name);
            }
            (Err(error), Err(code)) => assert_eq!(error.code, code, "{}: {error}", case.name),
            (outcome, expected) => panic!("{}: got {outcome:?}, expected {expected:?}", case.name),
        }
    }
}

#[tokio::test]
async fn placement_failures_carry_ecs_reason_and_the_cause_in_detail() {
    let world = World::new();
    world.cluster("c").await;
    let arn = world.instance("c", 1024, 1024, json!([])).await;
    let mut awslogs = web("logs", 1, 6, None);
    awslogs["containerDefinitions"][0]["logConfiguration"] = json!({"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/logs", "awslogs-region": "us-east-1"}});
    world.definition(awslogs).await;
    world.definition(web("big", 1, 2048, None)).await;
    world.definition(web("fits", 1, 512, Some(8080))).await;
    let cases = [
        (
            "logs",
            "ATTRIBUTE",
            "missing required attribute com.amazonaws.ecs.capability.logging-driver.awslogs",
        ),
        (
            "big",
            "RESOURCE:MEMORY",
            "not enough memory: needs 2048, has 1024",
        ),
    ];
    for (family, reason, detail) in cases {
        let response = world
            .run(json!({"cluster": "c", "taskDefinition": family}))
            .await;
        assert_eq!(
            response["failures"],
            json!([{"arn": arn, "reason": reason, "detail": detail}]),
            "{family}"
        );
    }
    // The second task finds the port the first one took.
    let response = world
        .run(json!({"cluster": "c", "taskDefinition": "fits", "count": 2}))
        .await;
    assert_eq!(task_arns(&response).len(), 1);
    assert_eq!(
        response["failures"],
        json!([{"arn": arn, "reason": "RESOURCE:PORTS", "detail": "tcp port 8080 taken"}])
    );
}

#[tokio::test]
async fn run_task_names_the_instance_in_failures_and_needs_a_connected_agent() {
    let world = World::new();
    world.cluster("c").await;
    let arn = world.register("c", 1024, 1024, json!([])).await;
    world.definition(web("a", 1, 6, None)).await;
    let response = world
        .run(json!({"cluster": "c", "taskDefinition": "a"}))
        .await;
    // ECS's reason and, beyond ECS, the cause.
    assert_eq!(
        response["failures"],
        json!([{"arn": arn, "reason": "AGENT", "detail": "agent is not connected"}])
    );

    let none = World::new();
    none.cluster("c").await;
    none.definition(web("a", 1, 6, None)).await;
    let error = none
        .err("RunTask", json!({"cluster": "c", "taskDefinition": "a"}))
        .await;
    assert_eq!(
        error.message,
        "No Container Instances were found in your cluster."
    );

    let missing = world
        .err("RunTask", json!({"cluster": "c", "taskDefinition": "nope"}))
        .await;
    assert_eq!(
        (missing.code, missing.message.as_str()),
        ("ClientException", "TaskDefinition not found.")
    );
    world
        .ok("DeregisterTaskDefinition", json!({"taskDefinition": "a:1"}))
        .await;
    let inactive = world
        .err("RunTask", json!({"cluster": "c", "taskDefinition": "a:1"}))
        .await;
    assert_eq!(inactive.code, "ClientException");
}

#[tokio::test]
async fn a_new_task_has_ecs_shape() {
    let world = World::new();
    world.cluster("c").await;
    let instance_arn = world.instance("c", 1024, 2048, json!([])).await;
    let definition = json!({
        "family": "app",
        "containerDefinitions": [
            {"name": "web", "image": "nginx", "cpu": 128, "memory": 256, "memoryReservation": 128},
            {"name": "log", "image": "busybox", "memory": 64}
        ],
        "tags": [{"key": "team", "value": "a"}, {"key": "env", "value": "dev"}]
    });
    let definition_arn = world.definition(definition).await;
    let response = world
        .run(json!({
            "cluster": "c", "taskDefinition": "app:1", "startedBy": "batch/42",
            "tags": [{"key": "env", "value": "prod"}], "propagateTags": "TASK_DEFINITION",
            "overrides": {"containerOverrides": [{"name": "log", "command": ["echo", "hi"]}]}
        }))
        .await;
    let task = &response["tasks"][0];
    let task_arn = task["taskArn"]
        .as_str()
        .unwrap_or_else(|| panic!("no task: {response}"));
    let id = task_arn.rsplit('/').next().expect("id");
    assert!(task_arn.starts_with("arn:aws:ecs:us-east-1:000000000000:task/c/"));
    assert_eq!(id.len(), 32);
    assert_eq!(
        task["clusterArn"],
        "arn:aws:ecs:us-east-1:000000000000:cluster/c"
    );
    assert_eq!(task["taskDefinitionArn"], definition_arn.as_str());
    assert_eq!(task["containerInstanceArn"], instance_arn.as_str());
    assert_eq!(task["lastStatus"], "PROVISIONING");
    assert_eq!(task["desiredStatus"], "RUNNING");
    assert_eq!(task["version"], 1);
    assert_eq!(task["launchType"], "EC2");
    assert_eq!(task["group"], "family:app");
    assert_eq!(task["startedBy"], "batch/42");
    assert_eq!(task["cpu"], "128");
    assert_eq!(task["memory"], "192");
    assert_eq!(task["createdAt"], 1_700_000_000.0);
    assert_eq!(task["availabilityZone"], "us-east-1a");
    assert_eq!(task["connectivity"], "CONNECTED");
    assert_eq!(task["healthStatus"], "UNKNOWN");
    assert_eq!(task["attachments"], json!([]));
    assert_eq!(
        task["tags"],
        json!([{"key": "team", "value": "a"}, {"key": "env", "value": "prod"}])
    );
    assert_eq!(
        task["overrides"],
        json!({"containerOverrides": [{"name": "web"}, {"name": "log", "command": ["echo", "hi"]}], "inferenceAcceleratorOverrides": []})
    );
    let containers = task["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["name"], "web");
    assert_eq!(containers[0]["lastStatus"], "PENDING");
    assert_eq!(containers[0]["cpu"], "128");
    assert_eq!(containers[0]["memory"], "256");
    assert_eq!(containers[0]["memoryReservation"], "128");
    assert_eq!(containers[0]["taskArn"], task_arn);
    assert_eq!(containers[0]["networkBindings"], json!([]));
    assert!(containers[0]["containerArn"]
        .as_str()
        .expect("container arn")
        .starts_with(&format!(
            "arn:aws:ecs:us-east-1:000000000000:container/c/{id}/"
        )));
    assert_eq!(containers[1]["cpu"], "0");

    let instance = world.describe_instance("c", &instance_arn).await;
    assert_eq!(remaining(&instance, "CPU"), 1024 - 128);
    assert_eq!(remaining(&instance, "MEMORY"), 2048 - 192);
    assert_eq!(instance["pendingTasksCount"], 1);
    assert_eq!(instance["version"], 3, "registered, connected, task placed");
    let cluster = world
        .ok("DescribeClusters", json!({"clusters": ["c"]}))
        .await;
    assert_eq!(cluster["clusters"][0]["pendingTasksCount"], 1);
}

#[tokio::test]
async fn run_task_tags_its_tasks_as_ecs_does_and_tasks_take_tag_operations() {
    let world = World::new();
    world.cluster("c").await;
    world.instance("c", 4096, 4096, json!([])).await;
    world
        .definition(json!({
            "family": "tagged",
            "containerDefinitions": [{"name": "app", "image": "nginx", "memory": 64}],
            "tags": [{"key": "team", "value": "a"}]
        }))
        .await;
    let keys_of = |tags: &Value| -> Vec<(String, String)> {
        tags.as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["key"].as_str().unwrap_or_default().to_owned(),
                    t["value"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let response = world
        .run(
            json!({"cluster": "c", "taskDefinition": "tagged", "enableECSManagedTags": true,
                    "propagateTags": "TASK_DEFINITION", "tags": [{"key": "env", "value": "dev"}]}),
        )
        .await;
    let arn = task_arns(&response).remove(0);
    let expected = vec![
        pair("team", "a"),
        pair("env", "dev"),
        pair("aws:ecs:clusterName", "c"),
    ];
    assert_eq!(keys_of(&response["tasks"][0]["tags"]), expected);
    assert_eq!(
        keys_of(&world.describe_task("c", &arn).await["tags"]),
        expected
    );
    let listed = world
        .ok("ListTagsForResource", json!({"resourceArn": arn}))
        .await;
    assert_eq!(keys_of(&listed["tags"]), expected);

    // Managed tags stay whatever the user does with the others, and count
    // towards no limit.
    world
        .ok("TagResource", json!({"resourceArn": arn, "tags": [{"key": "env", "value": "prod"}, {"key": "tier", "value": "web"}]}))
        .await;
    world
        .ok(
            "UntagResource",
            json!({"resourceArn": arn, "tagKeys": ["team"]}),
        )
        .await;
    let listed = world
        .ok("ListTagsForResource", json!({"resourceArn": arn}))
        .await;
    assert_eq!(
        keys_of(&listed["tags"]),
        vec![
            pair("env", "prod"),
            pair("tier", "web"),
            pair("aws:ecs:clusterName", "c")
        ]
    );
    let fifty: Vec<Value> = (0..48)
        .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
        .collect();
    world
        .ok("TagResource", json!({"resourceArn": arn, "tags": fifty}))
        .await;
    let refused = [
        (
            "UntagResource",
            json!({"resourceArn": arn, "tagKeys": ["aws:ecs:clusterName"]}),
            "InvalidParameterException",
        ),
        (
            "TagResource",
            json!({"resourceArn": arn, "tags": [{"key": "one-too-many", "value": "v"}]}),
            "InvalidParameterException",
        ),
        (
            "ListTagsForResource",
            json!({"resourceArn": "arn:aws:ecs:us-east-1:000000000000:task/c/0123456789abcdef0123456789abcdef"}),
            // ListTagsForResource models no ResourceNotFoundException.
            "InvalidParameterException",
        ),
        (
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "tagged", "propagateTags": "SERVICE"}),
            "InvalidParameterException",
        ),
    ];
    for (operation, body, code) in refused {
        assert_eq!(
            world.err(operation, body.clone()).await.code,
            code,
            "{operation} {body}"
        );
    }
    let listed = world
        .ok("ListTagsForResource", json!({"resourceArn": arn}))
        .await;
    assert_eq!(
        listed["tags"].as_array().map_or(0, Vec::len),
        51,
        "the refused changes changed nothing"
    );
    let running = world.ok("ListTasks", json!({"cluster": "c"})).await;
    assert_eq!(
        running["taskArns"].as_array().map_or(0, Vec::len),
        1,
        "the refused RunTask started nothing"
    );

    // Without managed tags or propagation, a task has only its own.
    let plain = world
        .run(json!({"cluster": "c", "taskDefinition": "tagged", "propagateTags": "NONE"}))
        .await;
    assert_eq!(plain["tasks"][0]["tags"], json!([]));
}

#[tokio::test]
async fn run_and_start_task_refuse_a_deregistered_revision() {
    let world = World::new();
    world.cluster("c").await;
    let instance = world.instance("c", 4096, 4096, json!([])).await;
    world.definition(web("old", 1, 64, None)).await;
    world
        .ok(
            "DeregisterTaskDefinition",
            json!({"taskDefinition": "old:1"}),
        )
        .await;
    for (operation, body) in [
        (
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "old:1"}),
        ),
        (
            "StartTask",
            json!({"cluster": "c", "taskDefinition": "old:1", "containerInstances": [instance]}),
        ),
    ] {
        let error = world.err(operation, body).await;
        assert_eq!(
            (error.code, error.message.as_str()),
            ("ClientException", "TaskDefinition is inactive")
        );
    }
    let listed = world.ok("ListTasks", json!({"cluster": "c"})).await;
    assert_eq!(listed["taskArns"], json!([]));
}

#[tokio::test]
async fn awsvpc_tasks_get_addresses_in_their_instance_subnet() {
    let world = World::new();
    world.cluster("c").await;
    let first = world.instance("c", 4096, 4096, json!([])).await;
    let second = world.instance("c", 4096, 4096, json!([])).await;
    world
        .definition(json!({"family": "vpc", "networkMode": "awsvpc", "containerDefinitions": [{"name": "web", "image": "nginx", "memory": 64, "portMappings": [{"containerPort": 80}]}]}))
        .await;
    let response = world
        .run(json!({"cluster": "c", "taskDefinition": "vpc", "count": 2,
            "placementStrategy": [{"type": "binpack", "field": "memory"}],
            "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-abc"], "securityGroups": ["sg-1"]}}}))
        .await;
    let detail = |task: &Value, name: &str| -> String {
        let details = task["attachments"][0]["details"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        details
            .iter()
            .find(|d| d["name"] == name)
            .and_then(|d| d["value"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let tasks = response["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 2, "{response}");
    // Port 80 is the task's own in awsvpc: binpack puts both on the first instance.
    assert!(tasks
        .iter()
        .all(|t| t["containerInstanceArn"] == first.as_str()));
    let attachment = &tasks[0]["attachments"][0];
    assert_eq!(attachment["type"], "ElasticNetworkInterface");
    assert_eq!(attachment["status"], "ATTACHED");
    let first_ip = detail(&tasks[0], "privateIPv4Address");
    let (network, host) = first_ip.rsplit_once('.').expect("dotted");
    assert_eq!(host, "2");
    assert_eq!(
        detail(&tasks[1], "privateIPv4Address"),
        format!("{network}.3")
    );
    assert!(
        first_ip.starts_with("100.64.") && first_ip.ends_with(".2"),
        "{first_ip}"
    );
    assert_eq!(detail(&tasks[0], "subnetId"), "subnet-abc");
    assert!(detail(&tasks[0], "networkInterfaceId").starts_with("eni-"));
    assert_eq!(detail(&tasks[0], "networkInterfaceId").len(), 21);
    assert_eq!(
        detail(&tasks[0], "privateDnsName"),
        format!("ip-{}.ec2.internal", first_ip.replace('.', "-"))
    );
    assert_eq!(
        tasks[0]["containers"][0]["networkInterfaces"][0]["privateIpv4Address"],
        first_ip.as_str()
    );

    // Each instance has its own subnet.
    world
        .ok(
            "UpdateContainerInstancesState",
            json!({"cluster": "c", "containerInstances": [first], "status": "DRAINING"}),
        )
        .await;
    let on_second = world
        .run(json!({"cluster": "c", "taskDefinition": "vpc"}))
        .await;
    assert_eq!(
        on_second["tasks"][0]["containerInstanceArn"],
        second.as_str()
    );
    let second_ip = detail(&on_second["tasks"][0], "privateIPv4Address");
    assert_ne!(
        second_ip.rsplit_once('.').map(|s| s.0),
        first_ip.rsplit_once('.').map(|s| s.0)
    );

    let payload = world
        .ecs
        .payload_for_instance("c", first.rsplit('/').next().expect("id"))
        .expect("payload");
    let eni = payload[0].network_interface.as_ref().expect("eni");
    assert!(eni.subnet_cidr.starts_with("100.64.") && eni.subnet_cidr.ends_with(".0/24"));
    assert!(eni.gateway_ipv4_address.ends_with(".1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_run_tasks_never_overcommit() {
    let world = World::new();
    world.cluster("c").await;
    let instances = [
        world.instance("c", 2560, 8192, json!([])).await,
        world.instance("c", 2560, 8192, json!([])).await,
    ];
    world.definition(web("a", 512, 256, None)).await;
    let mut handles = Vec::new();
    for _ in 0..20 {
        let ecs = Arc::clone(&world.ecs);
        handles.push(tokio::spawn(async move {
            call(
                &ecs,
                "RunTask",
                json!({"cluster": "c", "taskDefinition": "a"}),
            )
            .await
            .expect("run task")
        }));
    }
    let mut placed = 0;
    for handle in handles {
        let response = handle.await.expect("joined");
        placed += task_arns(&response).len();
    }
    assert_eq!(placed, 10);
    for arn in &instances {
        let instance = world.describe_instance("c", arn).await;
        assert_eq!(remaining(&instance, "CPU"), 0, "{instance}");
        assert_eq!(instance["pendingTasksCount"], 5);
    }
    let listed = world.ok("ListTasks", json!({"cluster": "c"})).await;
    assert_eq!(listed["taskArns"].as_array().map(Vec::len), Some(10));
}

#[tokio::test]
async fn stop_task() {
    let world = World::new();
    world.cluster("c").await;
    world.instance("c", 1024, 1024, json!([])).await;
    world.definition(web("a", 1, 6, None)).await;
    let arn = task_arns(
        &world
            .run(json!({"cluster": "c", "taskDefinition": "a"}))
            .await,
    )
    .remove(0);
    let id = arn.rsplit('/').next().expect("id").to_owned();
    world.advance_ms(5_000);
    let stopped = world
        .ok(
            "StopTask",
            json!({"cluster": "c", "task": id, "reason": "done"}),
        )
        .await;
    let task = &stopped["task"];
    assert_eq!(task["desiredStatus"], "STOPPED");
    assert_eq!(task["lastStatus"], "PROVISIONING");
    assert_eq!(task["stopCode"], "UserInitiated");
    assert_eq!(task["stoppedReason"], "done");
    assert_eq!(task["stoppingAt"], 1_700_000_005.0);
    assert_eq!(task["version"], 2);
    let again = world
        .ok(
            "StopTask",
            json!({"cluster": "c", "task": arn, "reason": "other"}),
        )
        .await;
    assert_eq!(again["task"]["stoppedReason"], "done");
    assert_eq!(again["task"]["version"], 2);

    let second = task_arns(
        &world
            .run(json!({"cluster": "c", "taskDefinition": "a"}))
            .await,
    )
    .remove(0);
    let by_user = world
        .ok("StopTask", json!({"cluster": "c", "task": second}))
        .await;
    assert_eq!(by_user["task"]["stoppedReason"], "Task stopped by user");

    let missing = world
        .err("StopTask", json!({"cluster": "c", "task": "0000"}))
        .await;
    assert_eq!(
        (missing.code, missing.message.as_str()),
        (
            "InvalidParameterException",
            "The referenced task was not found."
        )
    );
    let long = world
        .err(
            "StopTask",
            json!({"cluster": "c", "task": arn, "reason": "x".repeat(256)}),
        )
        .await;
    assert_eq!(long.code, "InvalidParameterException");
}

#[tokio::test]
async fn state_changes_move_forward_and_stopped_releases_resources() {
    let world = World::new();
    world.cluster("c").await;
    let instance = world.instance("c", 1024, 1024, json!([])).await;
    world.definition(web("a", 256, 256, Some(8080))).await;
    let arn = task_arns(
        &world
            .run(json!({"cluster": "c", "taskDefinition": "a"}))
            .await,
    )
    .remove(0);
    assert_eq!(
        remaining(&world.describe_instance("c", &instance).await, "PORTS")
            .as_array()
            .map(Vec::len),
        Some(6)
    );

    world
        .report(
            "c",
            &arn,
            "PENDING",
            json!({"pullStartedAt": 1_700_000_001.0}),
        )
        .await;
    world.advance_ms(2_000);
    world
        .report("c", &arn, "RUNNING", json!({"pullStoppedAt": 1_700_000_002.0, "containers": [
            {"containerName": "web", "status": "RUNNING", "runtimeId": "abc123",
             "networkBindings": [{"bindIP": "0.0.0.0", "containerPort": 80, "hostPort": 8080, "protocol": "tcp"}]}
        ]}))
        .await;
    // A late report must not move the task back.
    world
        .report(
            "c",
            &arn,
            "PENDING",
            json!({"containers": [{"containerName": "web", "status": "PENDING"}]}),
        )
        .await;
    let task = world.describe_task("c", &arn).await;
    assert_eq!(task["lastStatus"], "RUNNING");
    assert_eq!(task["startedAt"], 1_700_000_002.0);
    assert_eq!(task["pullStartedAt"], 1_700_000_001.0);
    assert_eq!(task["containers"][0]["lastStatus"], "RUNNING");
    assert_eq!(task["containers"][0]["runtimeId"], "abc123");
    assert_eq!(
        task["containers"][0]["networkBindings"][0]["hostPort"],
        8080
    );
    assert_eq!(task["version"], 3);
    let running = world.describe_instance("c", &instance).await;
    assert_eq!(running["runningTasksCount"], 1);
    assert_eq!(remaining(&running, "CPU"), 768);

    world.advance_ms(1_000);
    world
        .report(
            "c",
            &arn,
            "STOPPED",
            json!({"reason": "Essential container in task exited", "containers": [
                {"containerName": "web", "status": "STOPPED", "exitCode": 1}
            ]}),
        )
        .await;
    let task = world.describe_task("c", &arn).await;
    assert_eq!(task["lastStatus"], "STOPPED");
    assert_eq!(task["desiredStatus"], "STOPPED");
    assert_eq!(task["stopCode"], "EssentialContainerExited");
    assert_eq!(task["stoppedReason"], "Essential container in task exited");
    assert_eq!(task["stoppedAt"], 1_700_000_003.0);
    assert_eq!(task["containers"][0]["exitCode"], 1);
    let released = world.describe_instance("c", &instance).await;
    assert_eq!(remaining(&released, "CPU"), 1024);
    assert_eq!(remaining(&released, "MEMORY"), 1024);
    assert_eq!(
        remaining(&released, "PORTS"),
        json!(["22", "2375", "2376", "51678", "51679"])
    );
    assert_eq!(released["runningTasksCount"], 0);

    // Reports after STOPPED change nothing, and release nothing twice.
    world.report("c", &arn, "STOPPED", json!({})).await;
    assert_eq!(
        world.describe_task("c", &arn).await["version"],
        task["version"]
    );
    assert_eq!(
        remaining(&world.describe_instance("c", &instance).await, "CPU"),
        1024
    );

    let bad = world
        .err(
            "SubmitTaskStateChange",
            json!({"cluster": "c", "task": arn, "status": "DANCING"}),
        )
        .await;
    assert_eq!(bad.code, "InvalidParameterException");
    let unknown = world
        .err(
            "SubmitTaskStateChange",
            json!({"cluster": "c", "task": "feed", "status": "RUNNING"}),
        )
        .await;
    assert_eq!(unknown.code, "InvalidParameterException");
}

#[test]
fn stop_codes_follow_the_agent_reason() {
    let record = || TaskRecord {
        task: flotilla_types::ecs::Task {
            last_status: Some("PENDING".into()),
            desired_status: Some("RUNNING".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let cases = [
        (
            false,
            Some("CannotPullContainerError: pull access denied"),
            TaskStopCode::TaskFailedToStart,
        ),
        (
            false,
            Some("ResourceInitializationError: no network"),
            TaskStopCode::TaskFailedToStart,
        ),
        (
            true,
            Some("Essential container in task exited"),
            TaskStopCode::EssentialContainerExited,
        ),
        (
            true,
            Some("something else"),
            TaskStopCode::EssentialContainerExited,
        ),
        (
            false,
            Some("something else"),
            TaskStopCode::TaskFailedToStart,
        ),
        (false, None, TaskStopCode::TaskFailedToStart),
    ];
    for (ran, reason, code) in cases {
        let mut task = record();
        if ran {
            let running = TaskChange {
                status: Some("RUNNING".into()),
                ..Default::default()
            };
            assert!(apply_change(&mut task, &running, 1.0, 1_000));
        }
        let stop = TaskChange {
            status: Some("STOPPED".into()),
            reason: reason.map(str::to_owned),
            ..Default::default()
        };
        assert!(apply_change(&mut task, &stop, 2.0, 2_000));
        assert_eq!(task.task.stop_code, Some(code), "{reason:?} ran={ran}");
        assert_eq!(task.stopped_at_ms, Some(2_000));
    }
}

#[tokio::test]
async fn submit_container_state_change() {
    let world = World::new();
    world.cluster("c").await;
    world.instance("c", 1024, 1024, json!([])).await;
    world.definition(web("a", 1, 6, None)).await;
    let arn = task_arns(
        &world
            .run(json!({"cluster": "c", "taskDefinition": "a"}))
            .await,
    )
    .remove(0);
    let answer = world
        .ok("SubmitContainerStateChange", json!({"cluster": "c", "task": arn, "containerName": "web", "status": "RUNNING", "runtimeId": "r1"}))
        .await;
    assert_eq!(answer["acknowledgment"], "ACK");
    let task = world.describe_task("c", &arn).await;
    assert_eq!(task["containers"][0]["lastStatus"], "RUNNING");
    assert_eq!(task["lastStatus"], "PROVISIONING");
    let unknown = world
        .err(
            "SubmitContainerStateChange",
            json!({"cluster": "c", "task": arn, "containerName": "db", "status": "RUNNING"}),
        )
        .await;
    assert_eq!(unknown.code, "InvalidParameterException");
}

#[tokio::test]
async fn describe_and_list_tasks() {
    let world = World::new();
    world.cluster("c").await;
    let first = world.instance("c", 8192, 8192, json!([])).await;
    let second = world.instance("c", 8192, 8192, json!([])).await;
    world.definition(web("a", 1, 6, None)).await;
    world.definition(web("b", 1, 6, None)).await;
    let mut a = task_arns(&world.run(json!({"cluster": "c", "taskDefinition": "a", "count": 3, "placementStrategy": [{"type": "binpack", "field": "memory"}], "startedBy": "job-1", "tags": [{"key": "k", "value": "v"}]})).await);
    let b = task_arns(
        &world.ok("StartTask", json!({"cluster": "c", "taskDefinition": "b", "containerInstances": [second, "nope"], "group": "service:web"})).await,
    );
    assert_eq!(b.len(), 1);
    world
        .ok("StopTask", json!({"cluster": "c", "task": a[0]}))
        .await;
    let stopped = a.remove(0);

    let list = |body: Value| {
        let world = &world;
        async move {
            let mut body = body;
            body["cluster"] = json!("c");
            let mut arns = world.ok("ListTasks", body).await["taskArns"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            arns.sort_by_key(|a| a.as_str().unwrap_or_default().to_owned());
            arns.into_iter()
                .map(|a| a.as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let mut running = a.clone();
    running.extend(b.clone());
    let cases: Vec<(Value, Vec<String>)> = vec![
        (json!({}), sorted(running.clone())),
        (json!({"desiredStatus": "STOPPED"}), vec![stopped.clone()]),
        (json!({"desiredStatus": "PENDING"}), vec![]),
        (json!({"family": "a"}), sorted(a.clone())),
        (json!({"startedBy": "job-1"}), sorted(a.clone())),
        (json!({"serviceName": "web"}), b.clone()),
        (
            json!({"containerInstance": second.rsplit('/').next()}),
            b.clone(),
        ),
        (json!({"containerInstance": first}), sorted(a.clone())),
        (json!({"launchType": "EXTERNAL"}), vec![]),
    ];
    for (filter, expected) in cases {
        assert_eq!(list(filter.clone()).await, expected, "{filter}");
    }

    let mut token: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let mut body = json!({"cluster": "c", "maxResults": 2});
        if let Some(token) = &token {
            body["nextToken"] = json!(token);
        }
        let page = world.ok("ListTasks", body).await;
        pages.push(page["taskArns"].as_array().map_or(0, Vec::len));
        token = page["nextToken"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, [2, 1]);
    assert_eq!(
        world
            .err("ListTasks", json!({"cluster": "c", "maxResults": 101}))
            .await
            .code,
        "InvalidParameterException"
    );

    let described = world
        .ok(
            "DescribeTasks",
            json!({"cluster": "c", "tasks": [a[0], "beef"]}),
        )
        .await;
    assert_eq!(described["tasks"][0]["taskArn"], a[0].as_str());
    assert!(
        described["tasks"][0].get("tags").is_none(),
        "tags only when asked for"
    );
    assert_eq!(
        described["failures"],
        json!([{"arn": "arn:aws:ecs:us-east-1:000000000000:task/c/beef", "reason": "MISSING"}])
    );
    let with_tags = world.describe_task("c", &a[0]).await;
    assert_eq!(with_tags["tags"], json!([{"key": "k", "value": "v"}]));
    let too_many: Vec<String> = (0..101).map(|i| format!("t{i}")).collect();
    assert_eq!(
        world
            .err("DescribeTasks", json!({"cluster": "c", "tasks": too_many}))
            .await
            .code,
        "InvalidParameterException"
    );
}

#[tokio::test]
async fn draining_instances_take_no_new_tasks() {
    let world = World::new();
    world.cluster("c").await;
    let first = world.instance("c", 1024, 1024, json!([])).await;
    let second = world.instance("c", 1024, 1024, json!([])).await;
    world.definition(web("a", 1, 6, None)).await;
    let updated = world
        .ok(
            "UpdateContainerInstancesState",
            json!({"cluster": "c", "containerInstances": [first, "missing"], "status": "DRAINING"}),
        )
        .await;
    assert_eq!(updated["containerInstances"][0]["status"], "DRAINING");
    assert_eq!(failure_reasons(&updated), ["MISSING"]);
    let response = world
        .run(json!({"cluster": "c", "taskDefinition": "a", "count": 3}))
        .await;
    assert!(response["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .all(|t| t["containerInstanceArn"] == second.as_str()));

    let draining = world
        .ok(
            "ListContainerInstances",
            json!({"cluster": "c", "status": "DRAINING"}),
        )
        .await;
    assert_eq!(draining["containerInstanceArns"], json!([first]));
    let bad = world
        .err(
            "UpdateContainerInstancesState",
            json!({"cluster": "c", "containerInstances": [first], "status": "REGISTERING"}),
        )
        .await;
    assert_eq!(bad.code, "InvalidParameterException");

    world
        .ok(
            "UpdateContainerInstancesState",
            json!({"cluster": "c", "containerInstances": [second], "status": "DRAINING"}),
        )
        .await;
    let error = world
        .err("RunTask", json!({"cluster": "c", "taskDefinition": "a"}))
        .await;
    assert_eq!(error.code, "InvalidParameterException");
    let start = world
        .ok(
            "StartTask",
            json!({"cluster": "c", "taskDefinition": "a", "containerInstances": [first]}),
        )
        .await;
    assert_eq!(failure_reasons(&start), ["DRAINING"]);
}

#[tokio::test]
async fn list_container_instances_filters() {
    let world = World::new();
    world.cluster("c").await;
    let small = world
        .register("c", 1, 1, json!([{"name": "size", "value": "small"}]))
        .await;
    let large = world
        .register(
            "c",
            1,
            1,
            json!([{"name": "size", "value": "large"}, {"name": "gpu"}]),
        )
        .await;
    let cases = [
        ("attribute:size == small", vec![small.clone()]),
        ("attribute:size != small", vec![large.clone()]),
        ("attribute:gpu exists", vec![large.clone()]),
        (
            "attribute:size in [small, large]",
            vec![small.clone(), large.clone()],
        ),
    ];
    for (filter, mut expected) in cases {
        let listed = world
            .ok(
                "ListContainerInstances",
                json!({"cluster": "c", "filter": filter}),
            )
            .await;
        let mut arns: Vec<String> =
            serde_json::from_value(listed["containerInstanceArns"].clone()).expect("arns");
        arns.sort();
        expected.sort();
        assert_eq!(arns, expected, "{filter}");
    }
    let bad = world
        .err(
            "ListContainerInstances",
            json!({"cluster": "c", "filter": "attribute:size == small and"}),
        )
        .await;
    assert_eq!(bad.code, "InvalidParameterException");
    let first_page = world
        .ok(
            "ListContainerInstances",
            json!({"cluster": "c", "maxResults": 1}),
        )
        .await;
    assert!(first_page["nextToken"].is_string());
}

#[tokio::test]
async fn deregistration() {
    let world = World::new();
    world.cluster("c").await;
    let arn = world.instance("c", 1024, 1024, json!([])).await;
    let quiet = world.register("c", 1024, 1024, json!([])).await;
    world.definition(web("a", 1, 6, None)).await;
    let task = task_arns(
        &world
            .run(json!({"cluster": "c", "taskDefinition": "a"}))
            .await,
    )
    .remove(0);

    let refused = world
        .err(
            "DeregisterContainerInstance",
            json!({"cluster": "c", "containerInstance": arn}),
        )
        .await;
    assert_eq!(refused.code, "InvalidParameterException");
    assert!(
        refused
            .message
            .starts_with("Found running tasks on the instance"),
        "{}",
        refused.message
    );
    assert_eq!(
        world
            .err("DeleteCluster", json!({"cluster": "c"}))
            .await
            .code,
        "ClusterContainsContainerInstancesException"
    );

    let gone = world
        .ok(
            "DeregisterContainerInstance",
            json!({"cluster": "c", "containerInstance": arn, "force": true}),
        )
        .await;
    assert_eq!(gone["containerInstance"]["status"], "INACTIVE");
    let stopping = world.describe_task("c", &task).await;
    assert_eq!(stopping["desiredStatus"], "STOPPED");
    assert_eq!(
        stopping["lastStatus"], "PROVISIONING",
        "its agent is connected and will report it"
    );
    world.report("c", &task, "STOPPED", json!({})).await;

    world
        .ok(
            "DeregisterContainerInstance",
            json!({"cluster": "c", "containerInstance": quiet}),
        )
        .await;
    let clusters = world
        .ok("DescribeClusters", json!({"clusters": ["c"]}))
        .await;
    assert_eq!(
        clusters["clusters"][0]["registeredContainerInstancesCount"],
        0
    );
    let listed = world
        .ok("ListContainerInstances", json!({"cluster": "c"}))
        .await;
    assert_eq!(listed["containerInstanceArns"], json!([]));
    let described = world.describe_instance("c", &arn).await;
    assert_eq!(described["status"], "INACTIVE");
    let reregister = world
        .err("RegisterContainerInstance", json!({"cluster": "c", "containerInstanceArn": arn, "totalResources": [{"name": "CPU", "integerValue": 1}, {"name": "MEMORY", "integerValue": 1}]}))
        .await;
    assert_eq!(reregister.code, "ClientException");
    assert!(world.ecs.resolve_agent_instance("c", &arn).is_err());

    // Deleting the cluster waits for nothing that is stopped or deregistered.
    world.ok("DeleteCluster", json!({"cluster": "c"})).await;

    world.advance_ms(DEREGISTERED_INSTANCE_RETENTION_MS - 1);
    assert_eq!(
        world
            .ecs
            .collect_deregistered_instances()
            .await
            .expect("collect"),
        0
    );
    world.advance_ms(1);
    assert_eq!(
        world
            .ecs
            .collect_deregistered_instances()
            .await
            .expect("collect"),
        2
    );
}

#[tokio::test]
async fn force_deregistration_without_an_agent_stops_tasks_at_once() {
    let world = World::new();
    world.cluster("c").await;
    let arn = world.instance("c", 1024, 1024, json!([])).await;
    world.definition(web("a", 1, 6, None)).await;
    let task = task_arns(
        &world
            .run(json!({"cluster": "c", "taskDefinition": "a"}))
            .await,
    )
    .remove(0);
    let agent = world.agent("c", &arn);
    assert!(world
        .ecs
        .set_agent_connected(&agent, "conn-1", false)
        .await
        .expect("disconnect"));
    world
        .ok(
            "DeregisterContainerInstance",
            json!({"cluster": "c", "containerInstance": arn, "force": true}),
        )
        .await;
    let stopped = world.describe_task("c", &task).await;
    assert_eq!(stopped["lastStatus"], "STOPPED");
    assert_eq!(stopped["stoppedReason"], "Container instance deregistered");
}

#[tokio::test]
async fn stopped_tasks_are_collected_after_retention() {
    let world = World::new();
    world.cluster("c").await;
    world.instance("c", 1024, 1024, json!([])).await;
    world.definition(web("a", 1, 6, None)).await;
    let arns = task_arns(
        &world
            .run(json!({"cluster": "c", "taskDefinition": "a", "count": 2}))
            .await,
    );
    world.report("c", &arns[0], "STOPPED", json!({})).await;
    world.advance_ms(STOPPED_TASK_RETENTION_MS - 1);
    assert_eq!(world.ecs.collect_stopped_tasks().await.expect("collect"), 0);
    world.advance_ms(1);
    assert_eq!(world.ecs.collect_stopped_tasks().await.expect("collect"), 1);
    let described = world
        .ok("DescribeTasks", json!({"cluster": "c", "tasks": arns}))
        .await;
    assert_eq!(task_arns(&described), [arns[1].clone()]);
    assert_eq!(failure_reasons(&described), ["MISSING"]);
}

#[tokio::test]
async fn payload_for_instance_holds_what_the_agent_must_act_on() {
    let world = World::new();
    world.cluster("c").await;
    let arn = world.instance("c", 1024, 1024, json!([])).await;
    let id = arn.rsplit('/').next().expect("id").to_owned();
    world.definition(web("a", 1, 6, None)).await;
    let arns = task_arns(
        &world
            .run(json!({"cluster": "c", "taskDefinition": "a", "count": 3}))
            .await,
    );
    world
        .ok(
            "StopTask",
            json!({"cluster": "c", "task": arns[1], "reason": "enough"}),
        )
        .await;
    world.report("c", &arns[2], "STOPPED", json!({})).await;
    let payload = world.ecs.payload_for_instance("c", &id).expect("payload");
    let summary: Vec<(String, String, Option<String>)> = payload
        .iter()
        .map(|t| {
            (
                t.task_arn.clone(),
                t.desired_status.clone(),
                t.stopped_reason.clone(),
            )
        })
        .collect();
    let mut expected = vec![
        (arns[0].clone(), "RUNNING".to_owned(), None),
        (
            arns[1].clone(),
            "STOPPED".to_owned(),
            Some("enough".to_owned()),
        ),
    ];
    expected.sort();
    let mut summary = summary;
    summary.sort();
    assert_eq!(summary, expected);
    let first = payload
        .iter()
        .find(|t| t.task_arn == arns[0])
        .expect("first");
    assert_eq!(
        first.cluster_arn,
        "arn:aws:ecs:us-east-1:000000000000:cluster/c"
    );
    assert_eq!(first.version, 1);
    assert_eq!(first.task_definition.family.as_deref(), Some("a"));
    assert!(first.network_interface.is_none());
    assert!(world
        .ecs
        .payload_for_instance("c", "other")
        .expect("payload")
        .is_empty());
}

#[tokio::test]
async fn agent_watch_reports_changes_supersession_and_deregistration() {
    let world = World::new();
    world.cluster("c").await;
    let arn = world.register("c", 1024, 1024, json!([])).await;
    world.definition(web("a", 1, 6, None)).await;
    let agent = world.agent("c", &arn);
    let mut watch = world.ecs.watch_agent(&agent, "conn-1");
    assert!(world
        .ecs
        .set_agent_connected(&agent, "conn-1", true)
        .await
        .expect("connect"));
    assert!(watch.full_payload().expect("full").is_empty());

    let arns = task_arns(
        &world
            .run(json!({"cluster": "c", "taskDefinition": "a", "count": 2}))
            .await,
    );
    let AgentEvent::Payload(tasks) = watch.next().await else {
        panic!("expected a payload")
    };
    let mut sent: Vec<String> = tasks.iter().map(|t| t.task_arn.clone()).collect();
    sent.sort();
    let mut expected = arns.clone();
    expected.sort();
    assert_eq!(sent, expected, "both tasks, gathered in one payload");

    // Status reports do not change what the agent must do: nothing is sent.
    world.report("c", &arns[0], "RUNNING", json!({})).await;
    world
        .ok("StopTask", json!({"cluster": "c", "task": arns[0]}))
        .await;
    let AgentEvent::Payload(tasks) = watch.next().await else {
        panic!("expected a payload")
    };
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        (tasks[0].task_arn.as_str(), tasks[0].desired_status.as_str()),
        (arns[0].as_str(), "STOPPED")
    );

    // A newer connection takes over; the older one hears it and its
    // disconnect changes nothing.
    assert!(world
        .ecs
        .set_agent_connected(&agent, "conn-2", true)
        .await
        .expect("connect"));
    assert_eq!(watch.next().await, AgentEvent::Superseded);
    assert!(!world
        .ecs
        .set_agent_connected(&agent, "conn-1", false)
        .await
        .expect("stale disconnect"));
    assert_eq!(
        world.describe_instance("c", &arn).await["agentConnected"],
        true
    );

    let mut newer = world.ecs.watch_agent(&agent, "conn-2");
    world
        .ok(
            "DeregisterContainerInstance",
            json!({"cluster": "c", "containerInstance": arn, "force": true}),
        )
        .await;
    loop {
        match newer.next().await {
            AgentEvent::Deregistered => break,
            AgentEvent::Payload(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn task_health_comes_from_essential_containers_with_checks() {
    let world = World::new();
    world.cluster("c").await;
    let arn = world.instance("c", 1024, 1024, json!([])).await;
    world
        .definition(json!({"family": "h", "containerDefinitions": [
            {"name": "web", "image": "nginx", "memory": 64, "healthCheck": {"command": ["CMD", "true"]}},
            {"name": "side", "image": "busybox", "memory": 64, "essential": false}
        ]}))
        .await;
    let task = task_arns(
        &world
            .run(json!({"cluster": "c", "taskDefinition": "h"}))
            .await,
    )
    .remove(0);
    let agent = world.agent("c", &arn);
    let health = |name: &str, status: &str| ContainerHealth {
        container_name: name.into(),
        health_status: status.into(),
    };
    let cases = [
        (vec![health("side", "UNHEALTHY")], "UNKNOWN"),
        (vec![health("web", "HEALTHY")], "HEALTHY"),
        (vec![health("web", "UNHEALTHY")], "UNHEALTHY"),
    ];
    for (report, expected) in cases {
        world
            .ecs
            .record_task_health(&agent, &task, &report)
            .await
            .expect("health");
        let described = world.describe_task("c", &task).await;
        assert_eq!(described["healthStatus"], expected, "{report:?}");
    }
    let bad = world
        .ecs
        .record_task_health(&agent, &task, &[health("web", "FINE")])
        .await;
    assert_eq!(
        bad.expect_err("bad status").code,
        "InvalidParameterException"
    );
}

#[tokio::test]
async fn external_instances_take_external_tasks_only() {
    let world = World::new();
    world.cluster("c").await;
    let ec2 = world.instance("c", 1024, 1024, json!([])).await;
    let external = world
        .instance(
            "c",
            1024,
            1024,
            json!([{"name": "ecs.capability.external"}]),
        )
        .await;
    let described = world.describe_instance("c", &external).await;
    assert_eq!(
        described["ec2InstanceId"], "i-0123456789abcdef0",
        "the identity document wins"
    );
    world.definition(json!({"family": "x", "requiresCompatibilities": ["EXTERNAL"], "containerDefinitions": [{"name": "web", "image": "nginx", "memory": 6}]})).await;
    let on_external = world
        .run(json!({"cluster": "c", "taskDefinition": "x", "launchType": "EXTERNAL", "count": 2}))
        .await;
    for task in on_external["tasks"].as_array().expect("tasks") {
        assert_eq!(task["containerInstanceArn"], external.as_str());
        assert_eq!(task["launchType"], "EXTERNAL");
    }
    let on_ec2 = world
        .run(json!({"cluster": "c", "taskDefinition": "x"}))
        .await;
    assert_eq!(on_ec2["tasks"][0]["containerInstanceArn"], ec2.as_str());
}

#[tokio::test]
async fn discover_poll_endpoint_names_this_server() {
    let world = World::new();
    let answer = world
        .ok("DiscoverPollEndpoint", json!({"cluster": "default"}))
        .await;
    assert_eq!(answer["endpoint"], ENDPOINT);
    assert_eq!(answer["telemetryEndpoint"], ENDPOINT);
    let bare = crate::testing::ecs();
    let error = call(&bare, "DiscoverPollEndpoint", json!({}))
        .await
        .expect_err("no endpoint");
    assert_eq!(error.code, "ServerException");
}

/// Six connected instances, two per zone a, b, c, alternating t2.micro and m5.large.
async fn zoned_world() -> (
    World,
    std::collections::HashMap<String, (&'static str, &'static str)>,
) {
    let world = World::new();
    world.cluster("c").await;
    let mut facts = std::collections::HashMap::new();
    for (zone, instance_type) in [
        ("a", "t2.micro"),
        ("b", "m5.large"),
        ("c", "t2.micro"),
        ("a", "m5.large"),
        ("b", "t2.micro"),
        ("c", "m5.large"),
    ] {
        let arn = world
            .instance(
                "c",
                4096,
                4096,
                json!([
                    {"name": "ecs.availability-zone", "value": zone},
                    {"name": "ecs.instance-type", "value": instance_type},
                ]),
            )
            .await;
        facts.insert(arn, (zone, instance_type));
    }
    world.definition(web("a", 10, 100, None)).await;
    (world, facts)
}

fn instances_of_tasks(response: &Value) -> Vec<String> {
    response["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|task| {
            task["containerInstanceArn"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

fn tally<T: Ord>(items: impl IntoIterator<Item = T>) -> Vec<(T, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for item in items {
        *counts.entry(item).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

#[tokio::test]
async fn placement_strategies_and_constraints_shape_where_tasks_go() {
    // (case, extra RunTask members, check on the instance of each of the six tasks)
    type Check = fn(&[(&str, &str)], &[String]);
    let cases: Vec<(&str, Value, Check)> = vec![
        (
            "spread over zones is even",
            json!({"placementStrategy": [{"type": "spread", "field": "attribute:ecs.availability-zone"}]}),
            |facts, _| {
                assert_eq!(
                    tally(facts.iter().map(|f| f.0)),
                    [("a", 2), ("b", 2), ("c", 2)]
                )
            },
        ),
        (
            "spread over instances puts one on each",
            json!({"placementStrategy": [{"type": "spread", "field": "instanceId"}]}),
            |_, arns| assert!(tally(arns.iter()).iter().all(|(_, n)| *n == 1) && arns.len() == 6),
        ),
        (
            "binpack memory fills one instance first",
            json!({"placementStrategy": [{"type": "binpack", "field": "memory"}]}),
            |_, arns| assert_eq!(tally(arns.iter()).len(), 1),
        ),
        (
            "memberOf keeps to t2 instances",
            json!({"placementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.instance-type =~ t2.*"}]}),
            |facts, _| assert!(facts.iter().all(|f| f.1 == "t2.micro")),
        ),
        (
            "distinctInstance with spread over zones",
            json!({"placementConstraints": [{"type": "distinctInstance"}],
                   "placementStrategy": [{"type": "spread", "field": "attribute:ecs.availability-zone"}]}),
            |facts, arns| {
                assert_eq!(tally(arns.iter()).len(), 6);
                assert_eq!(
                    tally(facts.iter().map(|f| f.0)),
                    [("a", 2), ("b", 2), ("c", 2)]
                );
            },
        ),
    ];
    for (name, extra, check) in cases {
        let (world, facts) = zoned_world().await;
        let mut request = extra;
        request["cluster"] = json!("c");
        request["taskDefinition"] = json!("a");
        request["count"] = json!(6);
        let response = world.run(request).await;
        let arns = instances_of_tasks(&response);
        assert_eq!(arns.len(), 6, "{name}: {response}");
        let placed: Vec<(&str, &str)> = arns.iter().map(|arn| facts[arn]).collect();
        check(&placed, &arns);
    }
}

#[tokio::test]
async fn placement_input_errors_are_invalid_parameters_that_say_where() {
    let (world, _) = zoned_world().await;
    let cases = [
        (
            json!({"placementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.instance-type == t2.micro or"}]}),
            "at character 42",
        ),
        (
            json!({"placementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.instance-type ~= t2.*"}]}),
            "placementConstraints[0].expression",
        ),
        (
            json!({"placementStrategy": [{"type": "spread", "field": "instanceId"}, {"type": "binpack", "field": "disk"}]}),
            "placementStrategy[1]",
        ),
        (
            json!({"placementStrategy": [{"type": "random"}, {"type": "random"}, {"type": "random"}, {"type": "random"}, {"type": "random"}, {"type": "random"}]}),
            "at most 5",
        ),
    ];
    for (extra, says) in cases {
        let mut request = extra.clone();
        request["cluster"] = json!("c");
        request["taskDefinition"] = json!("a");
        let error = world.err("RunTask", request).await;
        assert_eq!(error.code, "InvalidParameterException", "{extra}");
        assert!(error.message.contains(says), "{extra}: {}", error.message);
    }
}

#[tokio::test]
async fn custom_attributes_are_listed_and_steer_placement() {
    let (world, facts) = zoned_world().await;
    let mut arns: Vec<String> = facts.keys().cloned().collect();
    arns.sort();
    let (tagged, by_id) = (arns[2].clone(), arns[4].clone());
    let short_id = by_id.rsplit('/').next().unwrap_or_default().to_owned();
    let put = world
        .ok(
            "PutAttributes",
            json!({"cluster": "c", "attributes": [
                {"name": "stack", "value": "prod", "targetType": "container-instance", "targetId": tagged},
                {"name": "stack", "value": "dev", "targetType": "container-instance", "targetId": short_id},
                {"name": "gpu-ready", "targetId": tagged},
            ]}),
        )
        .await;
    assert_eq!(put["attributes"][1]["targetId"], by_id.as_str());

    let list = |body: Value| {
        let world = &world;
        async move {
            let mut body = body;
            body["cluster"] = json!("c");
            body["targetType"] = json!("container-instance");
            world.ok("ListAttributes", body).await
        }
    };
    let prod = list(json!({"attributeName": "stack", "attributeValue": "prod"})).await;
    assert_eq!(
        prod["attributes"],
        json!([{"name": "stack", "value": "prod", "targetType": "container-instance", "targetId": tagged}])
    );
    assert_eq!(
        list(json!({"attributeName": "stack"})).await["attributes"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // Pages of one walk every attribute once.
    let everything = list(json!({})).await["attributes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..everything.len() + 1 {
        let mut body = json!({"maxResults": 7});
        if let Some(token) = &token {
            body["nextToken"] = json!(token);
        }
        let page = list(body).await;
        paged.extend(page["attributes"].as_array().cloned().unwrap_or_default());
        token = page["nextToken"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(paged, everything);

    let response = world
        .run(json!({"cluster": "c", "taskDefinition": "a", "count": 3,
            "placementConstraints": [{"type": "memberOf", "expression": "attribute:stack == prod"}]}))
        .await;
    assert_eq!(instances_of_tasks(&response), vec![tagged.clone(); 3]);

    let deleted = world
        .ok(
            "DeleteAttributes",
            json!({"cluster": "c", "attributes": [{"name": "stack", "targetId": tagged}]}),
        )
        .await;
    assert_eq!(deleted["attributes"][0]["name"], "stack");
    let refused = world
        .run(json!({"cluster": "c", "taskDefinition": "a",
            "placementConstraints": [{"type": "memberOf", "expression": "attribute:stack == prod"}]}))
        .await;
    assert_eq!(task_arns(&refused).len(), 0);

    let unknown =
        "arn:aws:ecs:us-east-1:000000000000:container-instance/c/00000000000000000000000000000bad";
    let cases = [
        (
            "PutAttributes",
            json!({"attributes": [{"name": "x", "targetId": unknown}]}),
            "TargetNotFoundException",
        ),
        (
            "DeleteAttributes",
            json!({"attributes": [{"name": "x", "targetId": unknown}]}),
            "TargetNotFoundException",
        ),
        (
            "PutAttributes",
            json!({"attributes": [{"name": "bad name", "targetId": tagged}]}),
            "InvalidParameterException",
        ),
        (
            "PutAttributes",
            json!({"attributes": [{"name": "x", "value": "v".repeat(129), "targetId": tagged}]}),
            "InvalidParameterException",
        ),
        (
            "PutAttributes",
            json!({"attributes": [{"name": "x", "targetId": short_id}]}),
            "InvalidParameterException",
        ),
        (
            "PutAttributes",
            json!({"attributes": vec![json!({"name": "x", "targetId": tagged}); 11]}),
            "InvalidParameterException",
        ),
        (
            "ListAttributes",
            json!({"targetType": "container-instance", "attributeValue": "prod"}),
            "InvalidParameterException",
        ),
        ("ListAttributes", json!({}), "InvalidParameterException"),
    ];
    for (operation, body, code) in cases {
        let mut request = body.clone();
        request["cluster"] = json!("c");
        assert_eq!(
            world.err(operation, request).await.code,
            code,
            "{operation} {body}"
        );
    }
}

async fn explain(world: &World, body: Value) -> Result<Value, ApiError> {
    let bytes = serde_json::to_vec(&body).expect("json");
    let request = flotilla_types::flotilla::FlotillaRequest::decode("ExplainPlacement", &bytes)
        .expect("known operation")?;
    let response = world.ecs.handle_flotilla(&caller(), request).await?;
    Ok(serde_json::to_value(response).expect("response serializes"))
}

fn verdict_of<'a>(answer: &'a Value, arn: &str) -> &'a Value {
    answer["instances"]
        .as_array()
        .and_then(|all| all.iter().find(|v| v["containerInstanceArn"] == arn))
        .unwrap_or_else(|| panic!("no verdict for {arn} in {answer}"))
}

#[tokio::test]
async fn explain_placement_names_each_instance_verdict_with_its_numbers() {
    let world = World::new();
    world.cluster("c").await;
    let zone = |z: &str| json!([{"name": "ecs.availability-zone", "value": z}]);
    let roomy_a = world.instance("c", 4096, 4096, zone("a")).await;
    let roomy_b = world.instance("c", 4096, 2048, zone("b")).await;
    let small = world.instance("c", 4096, 128, zone("c")).await;
    world.definition(web("app", 64, 512, None)).await;

    let answer = explain(
        &world,
        json!({"cluster": "c", "taskDefinition": "app", "count": 3,
        "placementStrategy": [{"type": "binpack", "field": "memory"}]}),
    )
    .await
    .expect("explained");
    let memory = verdict_of(&answer, &small);
    assert_eq!(memory["outcome"], "EXCLUDED");
    assert_eq!(memory["step"], "resources");
    assert_eq!(memory["reason"], "RESOURCE:MEMORY");
    assert_eq!(memory["detail"], "not enough memory: needs 512, has 128");
    // Binpack: the instance with the least memory that fits takes the first task.
    assert_eq!(verdict_of(&answer, &roomy_b)["outcome"], "CHOSEN");
    assert_eq!(verdict_of(&answer, &roomy_a)["outcome"], "NOT_PREFERRED");
    assert_eq!(verdict_of(&answer, &roomy_a)["step"], "strategies");
    assert_eq!(answer["placements"], json!([roomy_b, roomy_b, roomy_b]));

    let answer = explain(&world, json!({"cluster": "c", "taskDefinition": "app",
        "placementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.availability-zone != a"}]}))
    .await
    .expect("explained");
    let excluded = verdict_of(&answer, &roomy_a);
    assert_eq!(excluded["step"], "constraints");
    assert_eq!(excluded["reason"], "MemberOf constraint not satisfied");
    assert!(
        excluded["detail"]
            .as_str()
            .unwrap_or_default()
            .contains('a'),
        "{excluded}"
    );

    // Nothing was committed.
    let listed = world.ok("ListTasks", json!({"cluster": "c"})).await;
    assert_eq!(listed["taskArns"], json!([]));
    assert_eq!(
        remaining(&world.describe_instance("c", &roomy_b).await, "MEMORY"),
        json!(2048)
    );
}

#[tokio::test]
async fn explain_placement_predicts_run_task() {
    // One snapshot and request builder serve both: with deterministic
    // strategies the explanation's placements are RunTask's instances.
    let (world, _) = zoned_world().await;
    for strategies in [
        json!([{"type": "spread", "field": "attribute:ecs.availability-zone"}, {"type": "binpack", "field": "memory"}]),
        json!([{"type": "binpack", "field": "cpu"}]),
        json!([]),
    ] {
        let body = json!({"cluster": "c", "taskDefinition": "a", "count": 5, "placementStrategy": strategies,
            "placementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.instance-type =~ t2.*"}]});
        let predicted = explain(&world, body.clone()).await.expect("explained");
        let ran = world.run(body).await;
        assert_eq!(
            predicted["placements"],
            json!(instances_of_tasks(&ran)),
            "{strategies}"
        );
    }
}

#[tokio::test]
async fn explain_placement_refuses_as_run_task_does() {
    let (world, _) = zoned_world().await;
    let unknown = explain(&world, json!({"cluster": "c", "taskDefinition": "nope"}))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code, "ClientException");
    let syntax = explain(&world, json!({"cluster": "c", "taskDefinition": "a",
        "placementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.instance-type == t2.micro and"}]}))
    .await
    .expect_err("syntax");
    assert_eq!(syntax.code, "InvalidParameterException");
    assert!(
        syntax.message.contains("at character 43"),
        "{}",
        syntax.message
    );
    let count = explain(
        &world,
        json!({"cluster": "c", "taskDefinition": "a", "count": 11}),
    )
    .await
    .expect_err("count");
    assert_eq!(count.code, "InvalidParameterException");
    let cluster = explain(&world, json!({"cluster": "nope", "taskDefinition": "a"}))
        .await
        .expect_err("cluster");
    assert_eq!(cluster.code, "ClusterNotFoundException");
}

/// The groups counted from the task records themselves, per instance id.
fn groups_from_tasks(
    world: &World,
    cluster: &str,
) -> std::collections::BTreeMap<String, Vec<(String, u32)>> {
    let tasks = crate::instances::scan::<TaskRecord>(
        world.ecs.store.as_ref(),
        &crate::records::keys::tasks_of(cluster),
    )
    .expect("scan");
    let mut groups: std::collections::BTreeMap<String, Vec<(String, u32)>> =
        crate::placement::groups_by_instance(tasks.iter().filter(|task| !task.value.released).map(
            |task| {
                (
                    task.value.instance_id.as_str(),
                    task.value.task.group.as_deref(),
                )
            },
        ))
        .into_iter()
        .collect();
    for entry in groups.values_mut() {
        entry.sort();
    }
    groups
}

fn groups_from_instances(
    world: &World,
    cluster: &str,
) -> std::collections::BTreeMap<String, Vec<(String, u32)>> {
    world
        .ecs
        .instances_of(cluster)
        .expect("instances")
        .into_iter()
        .filter_map(|found| {
            let counts = found.value.task_group_counts.expect("counted");
            (!counts.is_empty()).then(|| (found.value.instance_id, counts.into_iter().collect()))
        })
        .collect()
}

#[tokio::test]
async fn instance_records_count_task_groups_in_step_with_the_tasks() {
    let world = World::new();
    world.cluster("c").await;
    let first = world.instance("c", 4096, 4096, json!([])).await;
    world.instance("c", 4096, 4096, json!([])).await;
    world.definition(web("a", 10, 10, None)).await;
    let mut arns = Vec::new();
    for group in ["g1", "g1", "g2"] {
        let body = json!({"cluster": "c", "taskDefinition": "a", "count": 3, "group": group});
        arns.extend(task_arns(&world.run(body).await));
    }
    arns.extend(task_arns(
        &world
            .run(json!({"cluster": "c", "taskDefinition": "a", "count": 2}))
            .await,
    ));
    assert_eq!(
        groups_from_instances(&world, "c"),
        groups_from_tasks(&world, "c")
    );
    // Released tasks leave the counts.
    for arn in &arns[..5] {
        world
            .ok("StopTask", json!({"cluster": "c", "task": arn}))
            .await;
        world.report("c", arn, "STOPPED", json!({})).await;
    }
    assert_eq!(
        groups_from_instances(&world, "c"),
        groups_from_tasks(&world, "c")
    );
    // Re-registration counts again from the tasks.
    world
        .ok(
            "RegisterContainerInstance",
            json!({"cluster": "c", "containerInstanceArn": first,
                "totalResources": [{"name": "CPU", "integerValue": 4096}, {"name": "MEMORY", "integerValue": 4096}]}),
        )
        .await;
    assert_eq!(
        groups_from_instances(&world, "c"),
        groups_from_tasks(&world, "c")
    );
    // distinctInstance sees the counts: one g3 task per instance at most.
    let body = json!({"cluster": "c", "taskDefinition": "a", "count": 2, "group": "g3",
        "placementConstraints": [{"type": "distinctInstance"}]});
    assert_eq!(task_arns(&world.run(body.clone()).await).len(), 2);
    assert_eq!(task_arns(&world.run(body).await).len(), 0);
}

#[tokio::test]
async fn fargate_hosts_are_unseen_and_take_fargate_tasks_only() {
    let world = World::new();
    world.cluster("c").await;
    let ec2 = world.instance("c", 4096, 8192, json!([])).await;
    world
        .instance(
            "c",
            4096,
            8192,
            json!([{"name": "flotilla.capability.fargate"}]),
        )
        .await;
    let listed = world
        .ok("ListContainerInstances", json!({"cluster": "c"}))
        .await;
    assert_eq!(listed["containerInstanceArns"], json!([ec2.as_str()]));
    world
        .definition(json!({"family": "f", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512", "containerDefinitions": [{"name": "web", "image": "nginx"}]}))
        .await;
    let vpc = json!({"awsvpcConfiguration": {"subnets": ["subnet-abc"]}});
    let on_fargate = world
        .run(
            json!({"cluster": "c", "taskDefinition": "f", "launchType": "FARGATE", "count": 2,
            "platformVersion": "LATEST", "networkConfiguration": vpc}),
        )
        .await;
    let tasks = on_fargate["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 2, "{on_fargate}");
    for task in tasks {
        assert_eq!(task["launchType"], "FARGATE");
        assert_eq!(task["capacityProviderName"], "FARGATE");
        assert_eq!(task["platformVersion"], "1.4.0");
        assert_eq!(task["platformFamily"], "Linux");
        assert_eq!(task["ephemeralStorage"], json!({"sizeInGiB": 20}));
        assert!(task.get("containerInstanceArn").is_none(), "{task}");
        assert_eq!(task["attachments"][0]["type"], "ElasticNetworkInterface");
    }
    // The EC2 instance took none of them, and an EC2 task does not go to
    // the pool's host.
    let described = world.describe_instance("c", &ec2).await;
    assert_eq!(described["runningTasksCount"], 0);
    assert_eq!(described["pendingTasksCount"], 0);
    world
        .definition(json!({"family": "e", "containerDefinitions": [{"name": "web", "image": "nginx", "memory": 6}]}))
        .await;
    let on_ec2 = world
        .run(json!({"cluster": "c", "taskDefinition": "e", "count": 1}))
        .await;
    assert_eq!(on_ec2["tasks"][0]["containerInstanceArn"], ec2.as_str());
    assert_eq!(on_ec2["tasks"][0]["launchType"], "EC2");
    // Spot capacity needs FARGATE_SPOT associated, then its share is named.
    world
        .ok("PutClusterCapacityProviders", json!({"cluster": "c",
            "capacityProviders": ["FARGATE", "FARGATE_SPOT"], "defaultCapacityProviderStrategy": []}))
        .await;
    let spot = world
        .run(
            json!({"cluster": "c", "taskDefinition": "f", "networkConfiguration": vpc,
            "capacityProviderStrategy": [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]}),
        )
        .await;
    assert_eq!(spot["tasks"][0]["capacityProviderName"], "FARGATE_SPOT");
    assert_eq!(spot["tasks"][0]["launchType"], "FARGATE");
}
