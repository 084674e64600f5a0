//! Task definition operations through the control plane's public entry
//! points, with requests written as the JSON clients send.

use std::sync::Arc;

use flotilla_types::ecs::{
    Compatibility, DeleteTaskDefinitionsRequest, DeregisterTaskDefinitionRequest,
    DescribeTaskDefinitionRequest, EcsRequest, EcsResponse, ListTaskDefinitionFamiliesRequest,
    ListTaskDefinitionsRequest, NetworkMode, RegisterTaskDefinitionRequest, SortOrder,
    TaskDefinition, TaskDefinitionFamilyStatus, TaskDefinitionField, TaskDefinitionStatus,
    TransportProtocol,
};
use flotilla_types::ApiError;

use super::FamilyRecord;
use crate::records::{self, keys};
use crate::testing::{caller, ecs};
use crate::Ecs;

const ACCOUNT_ARN_PREFIX: &str = "arn:aws:ecs:us-east-1:000000000000:task-definition/";
const NOW_SECONDS: f64 = 1_700_000_000.0;

/// The bridge-mode nginx example with an awslogs log configuration.
const NGINX: &str = r#"{
  "family": "nginx-task-def",
  "networkMode": "bridge",
  "containerDefinitions": [{
    "name": "nginx", "image": "nginx", "memory": 256, "cpu": 256, "essential": true,
    "portMappings": [{"containerPort": 80, "hostPort": 80}],
    "logConfiguration": {
      "logDriver": "awslogs",
      "options": {"awslogs-group": "/ecs/nginx", "awslogs-region": "us-west-2", "awslogs-stream-prefix": "ecs"}
    }
  }]
}"#;

/// The wordpress example: its link names a container the definition does
/// not hold, which ECS accepts.
const WORDPRESS: &str = r#"{
  "family": "wordpress",
  "containerDefinitions": [{
    "name": "wordpress", "links": ["mysql"], "image": "wordpress", "essential": true,
    "portMappings": [{"containerPort": 80, "hostPort": 80}],
    "memory": 500, "cpu": 10
  }]
}"#;

/// Two containers sharing a Fargate task of 2 vCPU and 4 GB.
const FARGATE: &str = r#"{
  "family": "fargate-app",
  "networkMode": "awsvpc",
  "requiresCompatibilities": ["FARGATE"],
  "cpu": "2048",
  "memory": "4096",
  "containerDefinitions": [
    {"name": "frontend-react-app", "image": "node", "memory": 2048, "cpu": 1024},
    {"name": "backend-python", "image": "python", "memory": 1934, "cpu": 999}
  ]
}"#;

/// A minimal valid container, for cases that vary something else.
const WEB: &str = r#"{"name": "web", "image": "nginx", "memory": 128}"#;

async fn register(ecs: &Ecs, json: &str) -> Result<TaskDefinition, ApiError> {
    let request: RegisterTaskDefinitionRequest = flotilla_types::decode_json(json.as_bytes())?;
    match ecs
        .handle(&caller(), EcsRequest::RegisterTaskDefinition(request))
        .await?
    {
        EcsResponse::RegisterTaskDefinition(response) => {
            Ok(response.task_definition.expect("a definition"))
        }
        other => panic!("unexpected response {other:?}"),
    }
}

async fn register_ok(ecs: &Ecs, json: &str) -> TaskDefinition {
    match register(ecs, json).await {
        Ok(definition) => definition,
        Err(error) => panic!("registration failed: {error}\n{json}"),
    }
}

fn simple(family: &str) -> String {
    format!(r#"{{"family": "{family}", "containerDefinitions": [{WEB}]}}"#)
}

fn stored_keys(ecs: &Ecs) -> usize {
    [keys::TASK_DEFINITIONS, keys::FAMILIES]
        .into_iter()
        .map(|prefix| {
            ecs.store
                .list(prefix, None, 10)
                .expect("list")
                .entries
                .len()
        })
        .sum()
}

fn with_container(container: &str) -> String {
    format!(r#"{{"family": "f", "containerDefinitions": [{container}]}}"#)
}

fn fargate_with(container: &str, extra: &str) -> String {
    format!(
        r#"{{"family": "f", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512", {extra} "containerDefinitions": [{container}]}}"#
    )
}

fn invalid_cases() -> Vec<(&'static str, String, &'static str, &'static str)> {
    let client = "ClientException";
    let invalid = "InvalidParameterException";
    let many_containers = (0..11)
        .map(|i| format!(r#"{{"name": "c{i}", "image": "nginx", "memory": 64}}"#))
        .collect::<Vec<_>>()
        .join(",");
    let many_constraints =
        [r#"{"type": "memberOf", "expression": "attribute:a == b"}"#; 11].join(",");
    let huge_value = "x".repeat(70 * 1024);
    vec![
        ("family missing", r#"{"containerDefinitions": []}"#.into(), invalid, "Value null at 'family' failed to satisfy constraint: Member must not be null"),
        ("family blank", format!(r#"{{"family": "", "containerDefinitions": [{WEB}]}}"#), client, "Family can not be blank."),
        ("family characters", format!(r#"{{"family": "my family", "containerDefinitions": [{WEB}]}}"#), client, "Family contains invalid characters."),
        ("family length", simple(&"f".repeat(256)), client, "Family is too long"),
        ("no containers", r#"{"family": "f", "containerDefinitions": []}"#.into(), client, "Container list cannot be empty"),
        ("eleven containers", format!(r#"{{"family": "f", "containerDefinitions": [{many_containers}]}}"#), client, "Too many containers."),
        ("container name empty", with_container(r#"{"image": "nginx", "memory": 64}"#), client, "Container.name should not be null or empty."),
        ("container name characters", with_container(r#"{"name": "web app", "image": "nginx", "memory": 64}"#), client, "Container.name contains invalid characters"),
        ("container names repeat", format!(r#"{{"family": "f", "containerDefinitions": [{WEB}, {WEB}]}}"#), client, "Container names must be unique"),
        ("image missing", with_container(r#"{"name": "web", "memory": 64}"#), client, "Container.image should not be null or empty."),
        ("memory missing", with_container(r#"{"name": "web", "image": "nginx"}"#), client,
            "Invalid setting for container 'web'. At least one of 'memory' or 'memoryReservation' must be specified."),
        ("memory below 6 MiB", with_container(r#"{"name": "web", "image": "nginx", "memory": 4}"#), client, "Invalid 'memory' setting for container 'web'"),
        ("memory reservation zero", with_container(r#"{"name": "web", "image": "nginx", "memoryReservation": 0}"#), client, "Invalid 'memoryReservation' setting for container 'web'"),
        ("memory reservation above memory", with_container(r#"{"name": "web", "image": "nginx", "memory": 128, "memoryReservation": 256}"#), client, "must not be greater than 'memory'"),
        ("container cpu negative", with_container(r#"{"name": "web", "image": "nginx", "memory": 64, "cpu": -1}"#), client, "Invalid 'cpu' setting for container 'web'"),
        ("no essential container", with_container(r#"{"name": "web", "image": "nginx", "memory": 64, "essential": false}"#), client, "Task definition does not have any essential container."),
        ("task cpu too small", format!(r#"{{"family": "f", "cpu": "64", "containerDefinitions": [{WEB}]}}"#), client, "Invalid 'cpu' setting for task."),
        ("task cpu fraction", format!(r#"{{"family": "f", "cpu": "0.1 vCPU", "containerDefinitions": [{WEB}]}}"#), client, "Invalid 'cpu' setting for task."),
        ("task memory words", format!(r#"{{"family": "f", "memory": "lots", "containerDefinitions": [{WEB}]}}"#), client, "Invalid 'memory' setting for task."),
        ("container cpu above task cpu",
            r#"{"family": "f", "cpu": "256", "containerDefinitions": [{"name": "a", "image": "x", "memory": 64, "cpu": 200}, {"name": "b", "image": "x", "memory": 64, "cpu": 100}]}"#.into(),
            client, "The sum of all container 'cpu' values cannot be greater than the value of the task 'cpu'"),
        ("container memory above task memory",
            r#"{"family": "f", "memory": "1024", "containerDefinitions": [{"name": "a", "image": "x", "memory": 600}, {"name": "b", "image": "x", "memory": 600}]}"#.into(),
            client, "The sum of the memory of all containers (1200 MiB) exceeds the task memory (1024 MiB)"),
        ("one container above task memory",
            r#"{"family": "f", "memory": "512", "containerDefinitions": [{"name": "web", "image": "x", "memory": 1024}]}"#.into(),
            client, "The 'memory' setting for container 'web' is greater than for the task"),
        ("fargate bridge", format!(r#"{{"family": "f", "requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "512", "containerDefinitions": [{WEB}]}}"#),
            client, "Fargate only supports network mode"),
        ("fargate without cpu", format!(r#"{{"family": "f", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "memory": "512", "containerDefinitions": [{WEB}]}}"#),
            client, "Fargate requires that 'cpu' be defined at the task level."),
        ("fargate without memory", r#"{"family": "f", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256", "containerDefinitions": [{"name": "web", "image": "nginx"}]}"#.into(),
            client, "Fargate requires that 'memory' be defined at the task level."),
        ("fargate size", format!(r#"{{"family": "f", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "4096", "containerDefinitions": [{WEB}]}}"#),
            client, "No Fargate configuration exists for given values."),
        ("fargate privileged", fargate_with(r#"{"name": "web", "image": "nginx", "privileged": true}"#, ""), client, "do not support privileged containers"),
        ("fargate devices", fargate_with(r#"{"name": "web", "image": "nginx", "linuxParameters": {"devices": [{"hostPath": "/dev/fuse"}]}}"#, ""), client, "linuxParameters devices"),
        ("fargate host volume", fargate_with(WEB, r#""volumes": [{"name": "data", "host": {"sourcePath": "/data"}}],"#), client, "host volumes with a sourcePath"),
        ("fargate ipc mode", fargate_with(WEB, r#""ipcMode": "task","#), client, "do not support ipcMode"),
        ("fargate awslogs without execution role",
            fargate_with(r#"{"name": "web", "image": "nginx", "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g", "awslogs-region": "us-east-1"}}}"#, ""),
            client, "Fargate requires task definition to have execution role ARN to support log driver awslogs."),
        ("external awsvpc", format!(r#"{{"family": "f", "networkMode": "awsvpc", "requiresCompatibilities": ["EXTERNAL"], "containerDefinitions": [{WEB}]}}"#),
            client, "EXTERNAL launch type do not support networkMode awsvpc"),
        ("awsvpc host port differs",
            r#"{"family": "f", "networkMode": "awsvpc", "containerDefinitions": [{"name": "web", "image": "x", "memory": 64, "portMappings": [{"containerPort": 80, "hostPort": 8080}]}]}"#.into(),
            client, "When networkMode=awsvpc, the host ports and container ports in port mappings must match."),
        ("host mode host port differs",
            r#"{"family": "f", "networkMode": "host", "containerDefinitions": [{"name": "web", "image": "x", "memory": 64, "portMappings": [{"containerPort": 80, "hostPort": 8080}]}]}"#.into(),
            client, "When networkMode=host, the host ports and container ports in port mappings must match."),
        ("links in awsvpc",
            r#"{"family": "f", "networkMode": "awsvpc", "containerDefinitions": [{"name": "web", "image": "x", "memory": 64, "links": ["db"]}]}"#.into(),
            client, "Links are not supported when networkMode=awsvpc."),
        ("hostname in awsvpc",
            r#"{"family": "f", "networkMode": "awsvpc", "containerDefinitions": [{"name": "web", "image": "x", "memory": 64, "hostname": "web"}]}"#.into(),
            client, "hostname is not supported on container when networkMode=awsvpc."),
        ("ports with network none",
            r#"{"family": "f", "networkMode": "none", "containerDefinitions": [{"name": "web", "image": "x", "memory": 64, "portMappings": [{"containerPort": 80}]}]}"#.into(),
            client, "Port mappings are not supported when networkMode=none"),
        ("container port too high", with_container(r#"{"name": "web", "image": "x", "memory": 64, "portMappings": [{"containerPort": 70000}]}"#), client, "Invalid 'containerPort' setting for container 'web'"),
        ("host port negative", with_container(r#"{"name": "web", "image": "x", "memory": 64, "portMappings": [{"containerPort": 80, "hostPort": -1}]}"#), client, "Invalid 'hostPort' setting for container 'web'"),
        ("port range without dash", with_container(r#"{"name": "web", "image": "x", "memory": 64, "portMappings": [{"containerPortRange": "9000"}]}"#), client, "Invalid 'containerPortRange' setting"),
        ("port range backwards", with_container(r#"{"name": "web", "image": "x", "memory": 64, "portMappings": [{"containerPortRange": "9010-9000"}]}"#), client, "Invalid 'containerPortRange' setting"),
        ("port mapping empty", with_container(r#"{"name": "web", "image": "x", "memory": 64, "portMappings": [{"hostPort": 80}]}"#), client, "needs a containerPort or a containerPortRange"),
        ("protocol outside the set", with_container(r#"{"name": "web", "image": "x", "memory": 64, "portMappings": [{"containerPort": 80, "protocol": "sctp"}]}"#), invalid, "protocol"),
        ("depends on a stranger", with_container(r#"{"name": "web", "image": "x", "memory": 64, "dependsOn": [{"containerName": "db", "condition": "START"}]}"#), client, "Invalid 'dependsOn' setting for container 'web'"),
        ("depends on itself", with_container(r#"{"name": "web", "image": "x", "memory": 64, "dependsOn": [{"containerName": "web", "condition": "START"}]}"#), client, "cannot depend on itself"),
        ("depends without condition", with_container(r#"{"name": "web", "image": "x", "memory": 64, "dependsOn": [{"containerName": "web"}]}"#), client, "containerName and condition are required"),
        ("condition outside the set", with_container(r#"{"name": "web", "image": "x", "memory": 64, "dependsOn": [{"containerName": "db", "condition": "LATER"}]}"#), invalid, "condition"),
        ("healthy needs a health check",
            r#"{"family": "f", "containerDefinitions": [{"name": "web", "image": "x", "memory": 64, "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]}, {"name": "db", "image": "x", "memory": 64}]}"#.into(),
            client, "Container 'db' has no healthCheck"),
        ("success on an essential container",
            r#"{"family": "f", "containerDefinitions": [{"name": "web", "image": "x", "memory": 64, "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]}, {"name": "init", "image": "x", "memory": 64}]}"#.into(),
            client, "A dependency container with SUCCESS or COMPLETE condition cannot be an essential container"),
        ("dependency cycle",
            r#"{"family": "f", "containerDefinitions": [{"name": "a", "image": "x", "memory": 64, "dependsOn": [{"containerName": "b", "condition": "START"}]}, {"name": "b", "image": "x", "memory": 64, "dependsOn": [{"containerName": "a", "condition": "START"}]}]}"#.into(),
            client, "depend on each other in a cycle"),
        ("mount of an undeclared volume", with_container(r#"{"name": "web", "image": "x", "memory": 64, "mountPoints": [{"sourceVolume": "data", "containerPath": "/data"}]}"#), client, "Unknown volume 'data'."),
        ("mount without a path",
            r#"{"family": "f", "volumes": [{"name": "data"}], "containerDefinitions": [{"name": "web", "image": "x", "memory": 64, "mountPoints": [{"sourceVolume": "data"}]}]}"#.into(),
            client, "Invalid 'mountPoints' setting for container 'web'"),
        ("volumes from a stranger", with_container(r#"{"name": "web", "image": "x", "memory": 64, "volumesFrom": [{"sourceContainer": "db"}]}"#), client, "Invalid 'volumesFrom' setting for container 'web'"),
        ("volume names repeat", format!(r#"{{"family": "f", "volumes": [{{"name": "data"}}, {{"name": "data"}}], "containerDefinitions": [{WEB}]}}"#), client, "Volume names must be unique"),
        ("volume name characters", format!(r#"{{"family": "f", "volumes": [{{"name": "my data"}}], "containerDefinitions": [{WEB}]}}"#), client, "Invalid volume name"),
        ("distinctInstance on a task definition", format!(r#"{{"family": "f", "placementConstraints": [{{"type": "distinctInstance"}}], "containerDefinitions": [{WEB}]}}"#), invalid, "type"),
        ("memberOf without expression", format!(r#"{{"family": "f", "placementConstraints": [{{"type": "memberOf"}}], "containerDefinitions": [{WEB}]}}"#), client, "needs an expression"),
        ("eleven placement constraints", format!(r#"{{"family": "f", "placementConstraints": [{many_constraints}], "containerDefinitions": [{WEB}]}}"#), client, "Too many placementConstraints"),
        ("environment name empty", with_container(r#"{"name": "web", "image": "x", "memory": 64, "environment": [{"name": "", "value": "1"}]}"#), client, "Environment variable names should not be null or empty"),
        ("health check interval", with_container(r#"{"name": "web", "image": "x", "memory": 64, "healthCheck": {"command": ["CMD", "true"], "interval": 1}}"#), client, "interval must be between 5 and 300"),
        ("health check timeout", with_container(r#"{"name": "web", "image": "x", "memory": 64, "healthCheck": {"command": ["CMD", "true"], "timeout": 121}}"#), client, "timeout must be between 2 and 120"),
        ("health check retries", with_container(r#"{"name": "web", "image": "x", "memory": 64, "healthCheck": {"command": ["CMD", "true"], "retries": 0}}"#), client, "retries must be between 1 and 10"),
        ("health check start period", with_container(r#"{"name": "web", "image": "x", "memory": 64, "healthCheck": {"command": ["CMD", "true"], "startPeriod": 301}}"#), client, "startPeriod must be between 0 and 300"),
        ("health check command", with_container(r#"{"name": "web", "image": "x", "memory": 64, "healthCheck": {"command": ["curl", "localhost"]}}"#), client, "must start with CMD"),
        ("ulimit name outside the set", with_container(r#"{"name": "web", "image": "x", "memory": 64, "ulimits": [{"name": "bogus", "softLimit": 1, "hardLimit": 1}]}"#), invalid, "ulimits"),
        ("ulimit soft above hard", with_container(r#"{"name": "web", "image": "x", "memory": 64, "ulimits": [{"name": "nofile", "softLimit": 10, "hardLimit": 5}]}"#), client, "softLimit (10) of ulimit 'nofile'"),
        ("compatibility outside the set", format!(r#"{{"family": "f", "requiresCompatibilities": ["MARS"], "containerDefinitions": [{WEB}]}}"#), invalid, "requiresCompatibilities"),
        ("pid mode outside the set", format!(r#"{{"family": "f", "pidMode": "shared", "containerDefinitions": [{WEB}]}}"#), invalid, "pidMode"),
        ("ipc mode outside the set", format!(r#"{{"family": "f", "ipcMode": "private", "containerDefinitions": [{WEB}]}}"#), invalid, "ipcMode"),
        ("secret without valueFrom", with_container(r#"{"name": "web", "image": "x", "memory": 64, "secrets": [{"name": "TOKEN"}]}"#), client, "Invalid 'secrets' setting for container 'web'"),
        ("awslogs option ECS does not know", with_container(r#"{"name": "web", "image": "x", "memory": 64, "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g", "awslogs-region": "r", "awslogs-stream": "s"}}}"#), client, "Log driver awslogs disallows options: awslogs-stream"),
        ("awslogs create-group not a boolean", with_container(r#"{"name": "web", "image": "x", "memory": 64, "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g", "awslogs-region": "r", "awslogs-create-group": "yes"}}}"#), client, "option 'awslogs-create-group' must be true or false, got 'yes'"),
        ("awslogs datetime format and multiline pattern", with_container(r#"{"name": "web", "image": "x", "memory": 64, "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g", "awslogs-region": "r", "awslogs-datetime-format": "%Y", "awslogs-multiline-pattern": "^x"}}}"#), client, "cannot take options awslogs-datetime-format and awslogs-multiline-pattern together"),
        ("awslogs unknown datetime directive", with_container(r#"{"name": "web", "image": "x", "memory": 64, "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g", "awslogs-region": "r", "awslogs-datetime-format": "%Y %Q"}}}"#), client, "has a directive Flotilla does not know: %Q"),
        ("log mode outside the set", with_container(r#"{"name": "web", "image": "x", "memory": 64, "logConfiguration": {"logDriver": "json-file", "options": {"mode": "lossy"}}}"#), client, "option 'mode' must be blocking or non-blocking, got 'lossy'"),
        ("log buffer size unreadable", with_container(r#"{"name": "web", "image": "x", "memory": 64, "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g", "awslogs-region": "r", "mode": "non-blocking", "max-buffer-size": "lots"}}}"#), client, "option 'max-buffer-size' must be a size such as 4m, got 'lots'"),
        ("fargate awslogs without stream prefix",
            fargate_with(r#"{"name": "web", "image": "nginx", "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g", "awslogs-region": "us-east-1"}}}"#, r#""executionRoleArn": "arn:aws:iam::123456789012:role/exec","#),
            client, "Fargate requires log configuration options to include awslogs-stream-prefix to support log driver awslogs."),
        ("awslogs without options", with_container(r#"{"name": "web", "image": "x", "memory": 64, "logConfiguration": {"logDriver": "awslogs"}}"#), client, "Log driver awslogs requires options: awslogs-region, awslogs-group"),
        ("proxy for a stranger", format!(r#"{{"family": "f", "networkMode": "awsvpc", "proxyConfiguration": {{"containerName": "envoy"}}, "containerDefinitions": [{WEB}]}}"#), client, "Invalid proxyConfiguration"),
        ("ephemeral storage too small", format!(r#"{{"family": "f", "ephemeralStorage": {{"sizeInGiB": 10}}, "containerDefinitions": [{WEB}]}}"#), client, "sizeInGiB must be between 21 and 200"),
        ("reserved tag prefix", format!(r#"{{"family": "f", "tags": [{{"key": "aws:owner", "value": "x"}}], "containerDefinitions": [{WEB}]}}"#), invalid, "aws:"),
        ("definition too large",
            format!(r#"{{"family": "f", "containerDefinitions": [{{"name": "web", "image": "x", "memory": 64, "environment": [{{"name": "BIG", "value": "{huge_value}"}}]}}]}}"#),
            client, "Max allowed length is '65536' bytes"),
    ]
}

#[tokio::test]
async fn invalid_definitions_are_refused_and_nothing_is_stored() {
    let ecs = ecs();
    for (name, json, code, message) in invalid_cases() {
        let error = match register(&ecs, &json).await {
            Ok(definition) => panic!("{name}: registered revision {:?}", definition.revision),
            Err(error) => error,
        };
        assert_eq!(error.code, code, "{name}: {}", error.message);
        assert!(
            error.message.contains(message),
            "{name}: {:?} does not contain {message:?}",
            error.message
        );
        assert_eq!(stored_keys(&ecs), 0, "{name}: something was stored");
    }
}

#[tokio::test]
async fn the_nginx_example_registers_with_ecs_defaults() {
    let ecs = ecs();
    let definition = register_ok(&ecs, NGINX).await;
    assert_eq!(
        definition.task_definition_arn.as_deref(),
        Some(&*format!("{ACCOUNT_ARN_PREFIX}nginx-task-def:1"))
    );
    assert_eq!(definition.revision, Some(1));
    assert_eq!(definition.status, Some(TaskDefinitionStatus::Active));
    assert_eq!(definition.registered_at, Some(NOW_SECONDS));
    assert_eq!(
        definition.registered_by.as_deref(),
        Some("arn:aws:iam::000000000000:root")
    );
    assert_eq!(definition.network_mode, Some(NetworkMode::Bridge));
    assert_eq!(
        definition.compatibilities,
        Some(vec![Compatibility::External, Compatibility::Ec2])
    );
    assert_eq!(definition.volumes, Some(vec![]));
    assert_eq!(definition.placement_constraints, Some(vec![]));
    let container = &definition
        .container_definitions
        .as_deref()
        .expect("containers")[0];
    assert_eq!(container.essential, Some(true));
    assert_eq!(container.cpu, Some(256));
    assert_eq!(container.environment, Some(vec![]));
    assert_eq!(container.mount_points, Some(vec![]));
    assert_eq!(container.volumes_from, Some(vec![]));
    let mapping = &container.port_mappings.as_deref().expect("port mappings")[0];
    assert_eq!(
        (mapping.container_port, mapping.host_port),
        (Some(80), Some(80))
    );
    assert_eq!(mapping.protocol, Some(TransportProtocol::Tcp));
    assert_eq!(
        attribute_names(&definition),
        [
            "com.amazonaws.ecs.capability.docker-remote-api.1.18",
            "com.amazonaws.ecs.capability.docker-remote-api.1.19",
            "com.amazonaws.ecs.capability.logging-driver.awslogs",
        ]
    );
}

fn attribute_names(definition: &TaskDefinition) -> Vec<String> {
    definition
        .requires_attributes
        .iter()
        .flatten()
        .map(|attribute| attribute.name.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn the_wordpress_example_registers_with_a_dangling_link() {
    let ecs = ecs();
    let definition = register_ok(&ecs, WORDPRESS).await;
    assert_eq!(definition.family.as_deref(), Some("wordpress"));
    // An omitted network mode stays omitted, as ECS answers it.
    assert_eq!(definition.network_mode, None);
    let container = &definition
        .container_definitions
        .as_deref()
        .expect("containers")[0];
    assert_eq!(container.links, Some(vec!["mysql".to_owned()]));
    assert_eq!((container.memory, container.cpu), (Some(500), Some(10)));
    let compatibilities = definition.compatibilities.expect("compatibilities");
    assert!(compatibilities.contains(&Compatibility::Ec2));
    assert!(!compatibilities.contains(&Compatibility::Fargate));
}

#[tokio::test]
async fn the_fargate_example_registers_and_an_oversized_one_does_not() {
    let ecs = ecs();
    let definition = register_ok(&ecs, FARGATE).await;
    assert_eq!(
        definition.compatibilities,
        Some(vec![Compatibility::Ec2, Compatibility::Fargate])
    );
    assert_eq!(
        (definition.cpu.as_deref(), definition.memory.as_deref()),
        (Some("2048"), Some("4096"))
    );
    assert_eq!(
        definition.requires_compatibilities,
        Some(vec![Compatibility::Fargate])
    );
    assert_eq!(attribute_names(&definition), ["ecs.capability.task-eni"]);

    let oversized = FARGATE.replace(r#""memory": 1934"#, r#""memory": 2100"#);
    let error = register(&ecs, &oversized.replace("fargate-app", "fargate-big"))
        .await
        .expect_err("too big");
    assert_eq!(error.code, "ClientException");
    assert!(
        error.message.contains(
            "The sum of the memory of all containers (4148 MiB) exceeds the task memory (4096 MiB)"
        ),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn compatibilities_and_attributes_follow_the_definition() {
    let ecs = ecs();
    let cases: &[(&str, &[Compatibility], &[&str])] = &[
        (
            // Valid for Fargate without asking for it.
            r#"{"family": "a", "networkMode": "awsvpc", "cpu": "1 vCPU", "memory": "2 GB", "taskRoleArn": "arn:aws:iam::000000000000:role/app",
                "containerDefinitions": [{"name": "web", "image": "nginx", "healthCheck": {"command": ["CMD-SHELL", "true"]}}]}"#,
            &[Compatibility::Ec2, Compatibility::Fargate],
            &[
                "com.amazonaws.ecs.capability.task-iam-role",
                "ecs.capability.container-health-check",
                "ecs.capability.task-eni",
            ],
        ),
        (
            // Privileged containers run on EC2 and EXTERNAL only.
            r#"{"family": "b", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
                "containerDefinitions": [{"name": "web", "image": "nginx", "privileged": true}]}"#,
            &[Compatibility::Ec2],
            &[
                "com.amazonaws.ecs.capability.privileged-container",
                "ecs.capability.task-eni",
            ],
        ),
        (
            r#"{"family": "c", "executionRoleArn": "arn:aws:iam::000000000000:role/exec",
                "containerDefinitions": [
                  {"name": "web", "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:1", "memoryReservation": 64,
                   "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}],
                   "secrets": [{"name": "A", "valueFrom": "arn:aws:secretsmanager:us-east-1:1:secret:a"}, {"name": "B", "valueFrom": "/b"}]},
                  {"name": "init", "image": "busybox", "memory": 16, "essential": false}]}"#,
            &[Compatibility::External, Compatibility::Ec2],
            &[
                "com.amazonaws.ecs.capability.docker-remote-api.1.21",
                "com.amazonaws.ecs.capability.ecr-auth",
                "ecs.capability.container-ordering",
                "ecs.capability.execution-role-ecr-pull",
                "ecs.capability.secrets.asm.environment-variables",
                "ecs.capability.secrets.ssm.environment-variables",
            ],
        ),
    ];
    for (json, compatibilities, attributes) in cases {
        let definition = register_ok(&ecs, json).await;
        let family = definition.family.clone().unwrap_or_default();
        assert_eq!(
            definition.compatibilities.as_deref(),
            Some(*compatibilities),
            "{family}"
        );
        assert_eq!(attribute_names(&definition), *attributes, "{family}");
    }
}

#[tokio::test]
async fn sizes_are_normalised_and_ports_defaulted() {
    let ecs = ecs();
    let definition = register_ok(
        &ecs,
        r#"{"family": "sized", "networkMode": "awsvpc", "cpu": "0.5 vCPU", "memory": "1 GB",
            "containerDefinitions": [{"name": "web", "image": "nginx", "portMappings": [{"containerPort": 8080}],
              "healthCheck": {"command": ["CMD", "true"]}}]}"#,
    )
    .await;
    assert_eq!(
        (definition.cpu.as_deref(), definition.memory.as_deref()),
        (Some("512"), Some("1024"))
    );
    let container = &definition
        .container_definitions
        .as_deref()
        .expect("containers")[0];
    let mapping = &container.port_mappings.as_deref().expect("mappings")[0];
    assert_eq!(
        mapping.host_port,
        Some(8080),
        "awsvpc maps the same port on the host"
    );
    let health_check = container.health_check.as_ref().expect("health check");
    assert_eq!(
        (
            health_check.interval,
            health_check.timeout,
            health_check.retries
        ),
        (Some(30), Some(5), Some(3))
    );

    let bridged = register_ok(
        &ecs,
        r#"{"family": "bridged", "containerDefinitions": [{"name": "web", "image": "nginx", "memory": 64,
              "portMappings": [{"containerPort": 8080, "protocol": "udp"}]}]}"#,
    )
    .await;
    let container = &bridged
        .container_definitions
        .as_deref()
        .expect("containers")[0];
    let mapping = &container.port_mappings.as_deref().expect("mappings")[0];
    assert_eq!(
        mapping.host_port,
        Some(0),
        "bridge mode picks a host port at start"
    );
    assert_eq!(mapping.protocol, Some(TransportProtocol::Udp));
}

#[tokio::test]
async fn revisions_increment_per_family() {
    let ecs = ecs();
    for expected in 1..=3 {
        let definition = register_ok(&ecs, &simple("web")).await;
        assert_eq!(definition.revision, Some(expected));
        assert_eq!(
            definition.task_definition_arn,
            Some(format!("{ACCOUNT_ARN_PREFIX}web:{expected}"))
        );
    }
    let other = register_ok(&ecs, &simple("web-a")).await;
    assert_eq!(other.revision, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_get_distinct_revisions() {
    const REGISTRATIONS: i32 = 20;
    let ecs = Arc::new(ecs());
    let mut handles = Vec::new();
    for _ in 0..REGISTRATIONS {
        let ecs = Arc::clone(&ecs);
        handles.push(tokio::spawn(async move {
            register_ok(&ecs, &simple("busy")).await.revision
        }));
    }
    let mut revisions = Vec::new();
    for handle in handles {
        revisions.push(handle.await.expect("task").expect("revision"));
    }
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=REGISTRATIONS).collect::<Vec<_>>());
    let counter = records::get::<FamilyRecord>(ecs.store.as_ref(), &keys::family("busy"))
        .expect("read")
        .expect("family record");
    assert_eq!(
        counter.value,
        FamilyRecord {
            latest_revision: REGISTRATIONS,
            active_revisions: REGISTRATIONS
        }
    );
}

fn describe(ecs: &Ecs, given: &str) -> Result<TaskDefinition, ApiError> {
    let request = DescribeTaskDefinitionRequest {
        task_definition: Some(given.to_owned()),
        include: None,
    };
    Ok(ecs
        .describe_task_definition(request)?
        .task_definition
        .expect("definition"))
}

async fn deregister(ecs: &Ecs, given: &str) -> Result<TaskDefinition, ApiError> {
    let request = DeregisterTaskDefinitionRequest {
        task_definition: Some(given.to_owned()),
    };
    Ok(ecs
        .deregister_task_definition(request)
        .await?
        .task_definition
        .expect("definition"))
}

#[tokio::test]
async fn describe_by_family_revision_and_arn() {
    let ecs = ecs();
    for _ in 0..3 {
        register_ok(&ecs, &simple("web")).await;
    }
    deregister(&ecs, "web:3").await.expect("deregister");
    let cases = [
        ("web", Some(2)),
        ("web:1", Some(1)),
        ("web:3", Some(3)),
        (" web:2 ", Some(2)),
        (
            "arn:aws:ecs:us-east-1:000000000000:task-definition/web:1",
            Some(1),
        ),
        (
            "arn:aws:ecs:us-east-1:000000000000:task-definition/web",
            Some(2),
        ),
        ("web:4", None),
        ("nope", None),
        ("nope:1", None),
        ("web:0", None),
        ("web:x", None),
        ("bad name", None),
        (
            "arn:aws:ecs:eu-west-1:000000000000:task-definition/web:1",
            None,
        ),
        (
            "arn:aws:ecs:us-east-1:111111111111:task-definition/web:1",
            None,
        ),
        ("arn:aws:ecs:us-east-1:000000000000:cluster/web", None),
        ("arn:aws:iam::000000000000:role/web", None),
    ];
    for (given, revision) in cases {
        match (describe(&ecs, given), revision) {
            (Ok(found), Some(revision)) => assert_eq!(found.revision, Some(revision), "{given}"),
            (Err(error), None) => assert_eq!(error.code, "ClientException", "{given}"),
            (outcome, expected) => {
                panic!("{given}: got {outcome:?}, expected revision {expected:?}")
            }
        }
    }
    let unknown = describe(&ecs, "nope").expect_err("unknown family");
    assert_eq!(unknown.message, "Unable to describe task definition.");
    let inactive = describe(&ecs, "web:3").expect("inactive revisions stay describable");
    assert_eq!(inactive.status, Some(TaskDefinitionStatus::Inactive));
}

#[tokio::test]
async fn describe_includes_tags_only_when_asked() {
    let ecs = ecs();
    register_ok(
        &ecs,
        &format!(r#"{{"family": "tagged", "tags": [{{"key": "team", "value": "web"}}], "containerDefinitions": [{WEB}]}}"#),
    )
    .await;
    let plain = ecs
        .describe_task_definition(DescribeTaskDefinitionRequest {
            task_definition: Some("tagged".into()),
            include: None,
        })
        .expect("describe");
    assert_eq!(plain.tags, None);
    let with_tags = ecs
        .describe_task_definition(DescribeTaskDefinitionRequest {
            task_definition: Some("tagged:1".into()),
            include: Some(vec![TaskDefinitionField::Tags]),
        })
        .expect("describe");
    let tags = with_tags.tags.expect("tags");
    assert_eq!(tags.len(), 1);
    assert_eq!(tags[0].key.as_deref(), Some("team"));
}

fn list(ecs: &Ecs, request: ListTaskDefinitionsRequest) -> Vec<String> {
    let mut request = request;
    let mut arns = Vec::new();
    loop {
        let page = ecs.list_task_definitions(request.clone()).expect("list");
        let items = page.task_definition_arns.expect("arns");
        assert!(items.len() <= request.max_results.unwrap_or(100) as usize);
        arns.extend(
            items
                .into_iter()
                .map(|arn| arn.trim_start_matches(ACCOUNT_ARN_PREFIX).to_owned()),
        );
        match page.next_token {
            Some(token) => request.next_token = Some(token),
            None => return arns,
        }
    }
}

#[tokio::test]
async fn list_orders_filters_and_paginates() {
    let ecs = ecs();
    for family in ["b", "a", "a-b", "a", "b", "a"] {
        register_ok(&ecs, &simple(family)).await;
    }
    deregister(&ecs, "a:2").await.expect("deregister");
    let ascending = ["a:1", "a:3", "a-b:1", "b:1", "b:2"];
    let descending: Vec<&str> = ascending.iter().rev().copied().collect();
    for page_size in [None, Some(1), Some(2), Some(100)] {
        let request = ListTaskDefinitionsRequest {
            max_results: page_size,
            ..Default::default()
        };
        assert_eq!(
            list(&ecs, request.clone()),
            ascending,
            "ASC by {page_size:?}"
        );
        let request = ListTaskDefinitionsRequest {
            sort: Some(SortOrder::Desc),
            ..request
        };
        assert_eq!(list(&ecs, request), descending, "DESC by {page_size:?}");
    }
    let family_only = ListTaskDefinitionsRequest {
        family_prefix: Some("a".into()),
        max_results: Some(1),
        ..Default::default()
    };
    assert_eq!(
        list(&ecs, family_only.clone()),
        ["a:1", "a:3"],
        "familyPrefix names a whole family"
    );
    let newest_first = ListTaskDefinitionsRequest {
        sort: Some(SortOrder::Desc),
        ..family_only
    };
    assert_eq!(list(&ecs, newest_first), ["a:3", "a:1"]);
    let inactive = ListTaskDefinitionsRequest {
        status: Some(TaskDefinitionStatus::Inactive),
        ..Default::default()
    };
    assert_eq!(list(&ecs, inactive), ["a:2"]);

    let bad_size = ListTaskDefinitionsRequest {
        max_results: Some(101),
        ..Default::default()
    };
    assert_eq!(
        ecs.list_task_definitions(bad_size).expect_err("101").code,
        "InvalidParameterException"
    );
    let bad_family = ListTaskDefinitionsRequest {
        family_prefix: Some("a!".into()),
        ..Default::default()
    };
    assert_eq!(
        ecs.list_task_definitions(bad_family).expect_err("a!").code,
        "InvalidParameterException"
    );
    let bad_token = ListTaskDefinitionsRequest {
        next_token: Some("zz".into()),
        ..Default::default()
    };
    assert_eq!(
        ecs.list_task_definitions(bad_token).expect_err("zz").code,
        "InvalidParameterException"
    );
}

fn families(
    ecs: &Ecs,
    status: Option<TaskDefinitionFamilyStatus>,
    prefix: Option<&str>,
) -> Vec<String> {
    let mut request = ListTaskDefinitionFamiliesRequest {
        status,
        family_prefix: prefix.map(str::to_owned),
        max_results: Some(1),
        next_token: None,
    };
    let mut found = Vec::new();
    loop {
        let page = ecs
            .list_task_definition_families(request.clone())
            .expect("families");
        found.extend(page.families.expect("families"));
        match page.next_token {
            Some(token) => request.next_token = Some(token),
            None => return found,
        }
    }
}

#[tokio::test]
async fn families_filter_by_status_and_prefix() {
    let ecs = ecs();
    for family in ["web", "web-old", "worker", "db"] {
        register_ok(&ecs, &simple(family)).await;
    }
    deregister(&ecs, "web-old:1").await.expect("deregister");
    let cases = [
        (None, None, vec!["db", "web", "worker"]),
        (
            Some(TaskDefinitionFamilyStatus::Active),
            None,
            vec!["db", "web", "worker"],
        ),
        (
            Some(TaskDefinitionFamilyStatus::Inactive),
            None,
            vec!["web-old"],
        ),
        (
            Some(TaskDefinitionFamilyStatus::All),
            None,
            vec!["db", "web", "web-old", "worker"],
        ),
        (
            Some(TaskDefinitionFamilyStatus::All),
            Some("we"),
            vec!["web", "web-old"],
        ),
        (None, Some("w"), vec!["web", "worker"]),
        (None, Some("x"), vec![]),
    ];
    for (status, prefix, expected) in cases {
        assert_eq!(
            families(&ecs, status, prefix),
            expected,
            "{status:?} {prefix:?}"
        );
    }
}

#[tokio::test]
async fn deregister_needs_a_revision_and_is_idempotent() {
    let ecs = ecs();
    register_ok(&ecs, &simple("web")).await;
    register_ok(&ecs, &simple("web")).await;
    for given in [
        "web",
        "web:9",
        "bad name:1",
        "arn:aws:ecs:eu-west-1:000000000000:task-definition/web:1",
    ] {
        assert_eq!(
            deregister(&ecs, given).await.expect_err(given).code,
            "ClientException",
            "{given}"
        );
    }
    let first = deregister(&ecs, &format!("{ACCOUNT_ARN_PREFIX}web:1"))
        .await
        .expect("deregister");
    assert_eq!(first.status, Some(TaskDefinitionStatus::Inactive));
    assert_eq!(first.deregistered_at, Some(NOW_SECONDS));
    let again = deregister(&ecs, "web:1").await.expect("again");
    assert_eq!(
        again, first,
        "deregistering an INACTIVE revision changes nothing"
    );
    let counter = records::get::<FamilyRecord>(ecs.store.as_ref(), &keys::family("web"))
        .expect("read")
        .expect("family");
    assert_eq!(
        counter.value,
        FamilyRecord {
            latest_revision: 2,
            active_revisions: 1
        }
    );

    deregister(&ecs, "web:2")
        .await
        .expect("deregister the last one");
    assert_eq!(
        describe(&ecs, "web")
            .expect_err("no ACTIVE revision")
            .message,
        "Unable to describe task definition."
    );
    // A family with no ACTIVE revision still takes new revisions.
    assert_eq!(register_ok(&ecs, &simple("web")).await.revision, Some(3));
}

async fn delete(
    ecs: &Ecs,
    given: &[&str],
) -> Result<(Vec<TaskDefinition>, Vec<(String, String)>), ApiError> {
    let request = DeleteTaskDefinitionsRequest {
        task_definitions: Some(given.iter().map(|g| g.to_string()).collect()),
    };
    let response = ecs.delete_task_definitions(request).await?;
    let failures = response
        .failures
        .expect("failures")
        .into_iter()
        .map(|failure| {
            (
                failure.arn.unwrap_or_default(),
                failure.reason.unwrap_or_default(),
            )
        })
        .collect();
    Ok((response.task_definitions.expect("definitions"), failures))
}

#[tokio::test]
async fn delete_takes_only_inactive_revisions() {
    let ecs = ecs();
    register_ok(&ecs, &simple("web")).await;
    register_ok(&ecs, &simple("web")).await;
    deregister(&ecs, "web:1").await.expect("deregister");

    let (deleted, failures) = delete(&ecs, &["web:1", "web:2", "web:7", "web", "web:1"])
        .await
        .expect("delete");
    assert_eq!(deleted.len(), 1, "a revision named twice is deleted once");
    assert_eq!(
        deleted[0].status,
        Some(TaskDefinitionStatus::DeleteInProgress)
    );
    assert_eq!(deleted[0].delete_requested_at, Some(NOW_SECONDS));
    let reasons: Vec<(&str, &str)> = failures
        .iter()
        .map(|(arn, reason)| (arn.as_str(), reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("web:2", "The specified task definition is still in ACTIVE status. Please deregister the target and try again."),
            ("web:7", "The specified task definition does not exist. Specify a valid account, family, revision and try again."),
            ("web", "The specified task definition identifier is invalid. Specify a valid name or ARN and try again."),
        ]
    );

    let described = describe(&ecs, "web:1").expect("still describable while being deleted");
    assert_eq!(
        described.status,
        Some(TaskDefinitionStatus::DeleteInProgress)
    );
    let deleting = ListTaskDefinitionsRequest {
        status: Some(TaskDefinitionStatus::DeleteInProgress),
        ..Default::default()
    };
    assert_eq!(list(&ecs, deleting), ["web:1"]);
    assert_eq!(
        deregister(&ecs, "web:1")
            .await
            .expect_err("being deleted")
            .code,
        "ClientException"
    );

    let too_many: Vec<&str> = vec!["web:1"; 11];
    assert_eq!(
        delete(&ecs, &too_many).await.expect_err("11").code,
        "InvalidParameterException"
    );
    assert_eq!(
        delete(&ecs, &[]).await.expect_err("none").code,
        "InvalidParameterException"
    );
}

#[tokio::test]
async fn tags_given_at_registration_are_on_the_resource() {
    let ecs = ecs();
    register_ok(
        &ecs,
        &format!(r#"{{"family": "tagged", "tags": [{{"key": "team", "value": "web"}}], "containerDefinitions": [{WEB}]}}"#),
    )
    .await;
    let listed = ecs
        .list_tags_for_resource(flotilla_types::ecs::ListTagsForResourceRequest {
            resource_arn: Some(format!("{ACCOUNT_ARN_PREFIX}tagged:1")),
        })
        .expect("list tags");
    assert_eq!(listed.tags.expect("tags").len(), 1);
}
