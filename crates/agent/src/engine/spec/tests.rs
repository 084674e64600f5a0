//! The translation from ECS container definitions to runtime specs, one
//! helper and one case per concern, so a change in the mapping shows up as
//! a one-line difference.

use std::collections::BTreeMap;

use flotilla_runtime::{BoundPort, Mount, NetworkMode, PortBinding, Protocol};
use flotilla_types::ecs::{
    ContainerDefinition, ContainerOverride, NetworkMode as EcsNetworkMode, TaskDefinition,
};
use serde_json::json;

use super::*;

const TASK_ARN: &str = "arn:aws:ecs:us-east-1:000000000000:task/default/abc123";
const CLUSTER_ARN: &str = "arn:aws:ecs:us-east-1:000000000000:cluster/default";

fn definition(value: serde_json::Value) -> ContainerDefinition {
    serde_json::from_value(value).unwrap()
}

fn task_definition(value: serde_json::Value) -> TaskDefinition {
    serde_json::from_value(value).unwrap()
}

/// Translates `container` of a task with `volumes`, on `network`.
fn check(
    network: TaskNetwork,
    task: &TaskDefinition,
    container: serde_json::Value,
    override_: Option<ContainerOverride>,
) -> ContainerSpec {
    let volumes = resolve_volumes(task, "abc123").unwrap();
    let names = BTreeMap::from([
        ("db".to_owned(), "ecs-web-2-db-abc123".to_owned()),
        ("data".to_owned(), "ecs-web-2-data-abc123".to_owned()),
    ]);
    let ids = BTreeMap::from([("data".to_owned(), "d4t4".to_owned())]);
    let context = TaskContext {
        cluster_label: "default",
        cluster_arn: CLUSTER_ARN,
        instance_id: "i-0123",
        task_arn: TASK_ARN,
        task_id: "abc123",
        family: "web",
        revision: 2,
        network: &network,
        task_memory_mib: task.memory.as_deref().and_then(|m| m.parse().ok()),
        fargate_cpu_units: None,
        volumes: &volumes,
        engine_names: &names,
        engine_ids: &ids,
    };
    let variables = vec![
        ("FROM_FILE".to_owned(), "1".to_owned()),
        ("SHARED".to_owned(), "file".to_owned()),
    ];
    let container_context = ContainerContext {
        metadata_base_url: Some("http://172.17.0.1:51679"),
        metadata_token: "tok",
        environment_file_variables: &variables,
        secrets: None,
        credentials_relative_uri: Some("/v2/credentials/cid"),
        aws_endpoint_url: Some("http://169.254.170.2:8440"),
        region: Some("us-east-1"),
    };
    container_spec(
        &context,
        &container_context,
        &definition(container),
        override_.as_ref(),
    )
    .unwrap()
}

fn tcp(container_port: u16, host_port: Option<u16>) -> PortBinding {
    PortBinding {
        container_port,
        protocol: Protocol::Tcp,
        host_port,
        host_ip: None,
    }
}

#[test]
fn bridge_maps_ports_static_and_dynamic_links_and_hostname() {
    let spec = check(
        TaskNetwork::Bridge,
        &TaskDefinition::default(),
        json!({"name": "app", "image": "nginx", "hostname": "web",
               "portMappings": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 443}, {"containerPort": 53, "hostPort": 0, "protocol": "udp"}],
               "links": ["db:database"], "dnsServers": ["10.0.0.2"], "extraHosts": [{"hostname": "api", "ipAddress": "10.0.0.9"}]}),
        None,
    );
    assert_eq!(spec.name, "ecs-web-2-app-abc123");
    assert_eq!(spec.network_mode, Some(NetworkMode::Bridge));
    assert_eq!(
        spec.port_bindings,
        [
            tcp(80, Some(8080)),
            tcp(443, None),
            PortBinding {
                container_port: 53,
                protocol: Protocol::Udp,
                host_port: None,
                host_ip: None
            }
        ]
    );
    assert_eq!(spec.links, ["ecs-web-2-db-abc123:database"]);
    assert_eq!(spec.hostname.as_deref(), Some("web"));
    assert_eq!(spec.dns_servers, ["10.0.0.2"]);
    assert_eq!(spec.extra_hosts, ["api:10.0.0.9"]);
}

#[test]
fn host_mode_binds_nothing_and_drops_hostname() {
    let spec = check(
        TaskNetwork::Host,
        &TaskDefinition::default(),
        json!({"name": "app", "image": "nginx", "hostname": "web", "portMappings": [{"containerPort": 80}], "links": ["db"]}),
        None,
    );
    assert_eq!(spec.network_mode, Some(NetworkMode::Host));
    assert!(spec.port_bindings.is_empty());
    assert!(spec.links.is_empty());
    assert_eq!(spec.hostname, None);
}

#[test]
fn none_mode_and_disabled_networking_have_no_network() {
    let spec = check(
        TaskNetwork::None,
        &TaskDefinition::default(),
        json!({"name": "app", "image": "x", "portMappings": [{"containerPort": 80}]}),
        None,
    );
    assert_eq!(spec.network_mode, Some(NetworkMode::None));
    assert!(spec.port_bindings.is_empty());
    let spec = check(
        TaskNetwork::Bridge,
        &TaskDefinition::default(),
        json!({"name": "app", "image": "x", "disableNetworking": true}),
        None,
    );
    assert_eq!(spec.network_mode, Some(NetworkMode::None));
}

#[test]
fn awsvpc_joins_the_pause_container_which_carries_the_namespace_settings() {
    let network = TaskNetwork::Awsvpc {
        pause_container_id: "p4u5e".to_owned(),
    };
    let container = json!({"name": "app", "image": "nginx", "hostname": "web", "dnsServers": ["10.0.0.2"],
                           "portMappings": [{"containerPort": 80, "hostPort": 80}]});
    let spec = check(
        network.clone(),
        &TaskDefinition::default(),
        container.clone(),
        None,
    );
    assert_eq!(
        spec.network_mode,
        Some(NetworkMode::Container {
            id: "p4u5e".to_owned()
        })
    );
    assert!(spec.port_bindings.is_empty());
    assert_eq!((spec.hostname, spec.dns_servers.len()), (None, 0));

    let volumes = BTreeMap::new();
    let names = BTreeMap::new();
    let context = TaskContext {
        cluster_label: "default",
        cluster_arn: CLUSTER_ARN,
        instance_id: "i-0123",
        task_arn: TASK_ARN,
        task_id: "abc123",
        family: "web",
        revision: 2,
        network: &network,
        task_memory_mib: None,
        fargate_cpu_units: None,
        volumes: &volumes,
        engine_names: &names,
        engine_ids: &names,
    };
    let pause = pause_spec(
        &context,
        "flotilla/pause:latest",
        "flotilla-awsvpc-i-0123",
        "10.201.3.7",
        &[definition(container)],
    );
    assert_eq!(pause.name, "ecs-web-2-internalecspause-abc123");
    assert_eq!(
        pause.network_mode,
        Some(NetworkMode::Network {
            name: "flotilla-awsvpc-i-0123".to_owned(),
            ipv4_address: Some("10.201.3.7".to_owned())
        })
    );
    assert_eq!(pause.hostname.as_deref(), Some("web"));
    assert_eq!(pause.dns_servers, ["10.0.0.2"]);
    assert_eq!(
        pause
            .labels
            .get(flotilla_runtime::labels::PAUSE)
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        pause
            .labels
            .get(flotilla_runtime::labels::TASK_ARN)
            .map(String::as_str),
        Some(TASK_ARN)
    );
}

#[test]
fn command_environment_and_overrides() {
    let override_ = ContainerOverride {
        command: Some(vec!["serve".to_owned()]),
        environment: Some(vec![flotilla_types::ecs::KeyValuePair {
            name: Some("MODE".to_owned()),
            value: Some("override".to_owned()),
        }]),
        memory: Some(256),
        ..Default::default()
    };
    let spec = check(
        TaskNetwork::Bridge,
        &TaskDefinition::default(),
        json!({"name": "app", "image": "x", "entryPoint": ["/bin/app"], "command": ["run"], "workingDirectory": "/srv", "user": "1000",
               "environment": [{"name": "MODE", "value": "base"}, {"name": "SHARED", "value": "definition"}, {"name": "AWS_REGION", "value": "eu-west-1"}], "memory": 512}),
        Some(override_),
    );
    assert_eq!(spec.entry_point, Some(vec!["/bin/app".to_owned()]));
    assert_eq!(spec.command, Some(vec!["serve".to_owned()]));
    assert_eq!(
        (spec.working_directory.as_deref(), spec.user.as_deref()),
        (Some("/srv"), Some("1000"))
    );
    let env = |key: &str| spec.environment.get(key).map(String::as_str);
    assert_eq!(env("MODE"), Some("override"));
    assert_eq!(
        env("SHARED"),
        Some("definition"),
        "environment beats environment files"
    );
    assert_eq!(env("FROM_FILE"), Some("1"));
    assert_eq!(
        env("ECS_CONTAINER_METADATA_URI_V4"),
        Some("http://172.17.0.1:51679/v4/tok")
    );
    assert_eq!(
        env("ECS_CONTAINER_METADATA_URI"),
        Some("http://172.17.0.1:51679/v3/tok")
    );
    assert_eq!(
        env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        Some("/v2/credentials/cid")
    );
    assert_eq!(env("AWS_ENDPOINT_URL"), Some("http://169.254.170.2:8440"));
    assert_eq!(env("AWS_DEFAULT_REGION"), Some("us-east-1"));
    assert_eq!(
        env("AWS_REGION"),
        Some("eu-west-1"),
        "the task's own variables beat the agent's defaults"
    );
    assert_eq!(spec.memory_bytes, Some(256 << 20));
}

#[test]
fn resources_follow_container_then_task_limits() {
    let task = task_definition(json!({"memory": "1024"}));
    let cpu_memory = |container: serde_json::Value| {
        let spec = check(TaskNetwork::Bridge, &task, container, None);
        (
            spec.cpu_shares,
            spec.memory_bytes.map(|b| b >> 20),
            spec.memory_reservation_bytes.map(|b| b >> 20),
        )
    };
    assert_eq!(
        cpu_memory(json!({"name": "a", "image": "x", "cpu": 512, "memory": 300})),
        (Some(512), Some(300), None)
    );
    assert_eq!(
        cpu_memory(json!({"name": "a", "image": "x", "memoryReservation": 128})),
        (Some(2), None, Some(128))
    );
    // No container limit at all: the task's memory is the hard limit.
    assert_eq!(
        cpu_memory(json!({"name": "a", "image": "x", "cpu": 0})),
        (Some(2), Some(1024), None)
    );
}

#[test]
fn volumes_mounts_and_volumes_from() {
    let task = task_definition(json!({"volumes": [
        {"name": "logs", "host": {"sourcePath": "/var/log/app"}},
        {"name": "scratch", "host": {}},
        {"name": "cache", "dockerVolumeConfiguration": {"scope": "task"}},
        {"name": "shared", "dockerVolumeConfiguration": {"scope": "shared", "autoprovision": true}}
    ]}));
    let spec = check(
        TaskNetwork::Bridge,
        &task,
        json!({"name": "app", "image": "x",
               "mountPoints": [{"sourceVolume": "logs", "containerPath": "/logs", "readOnly": true},
                               {"sourceVolume": "scratch", "containerPath": "/tmp/s"},
                               {"sourceVolume": "cache", "containerPath": "/cache"},
                               {"sourceVolume": "shared", "containerPath": "/shared"}],
               "volumesFrom": [{"sourceContainer": "data", "readOnly": true}],
               "linuxParameters": {"tmpfs": [{"containerPath": "/run", "size": 64, "mountOptions": ["noexec"]}]}}),
        None,
    );
    assert_eq!(
        spec.mounts,
        [
            Mount::Bind {
                source: "/var/log/app".to_owned(),
                target: "/logs".to_owned(),
                read_only: true
            },
            Mount::Volume {
                name: "flotilla-abc123-scratch".to_owned(),
                target: "/tmp/s".to_owned(),
                read_only: false
            },
            Mount::Volume {
                name: "flotilla-abc123-cache".to_owned(),
                target: "/cache".to_owned(),
                read_only: false
            },
            Mount::Volume {
                name: "shared".to_owned(),
                target: "/shared".to_owned(),
                read_only: false
            },
            Mount::Tmpfs {
                target: "/run".to_owned(),
                size_bytes: Some(64 << 20),
                options: vec!["noexec".to_owned()]
            },
        ]
    );
    assert_eq!(spec.volumes_from, ["d4t4:ro"]);
    let volumes = resolve_volumes(&task, "abc123").unwrap();
    assert!(matches!(
        &volumes["cache"],
        VolumeSource::Named {
            task_scoped: true,
            ..
        }
    ));
    assert!(matches!(
        &volumes["shared"],
        VolumeSource::Named {
            task_scoped: false,
            autoprovision: true,
            ..
        }
    ));
    let efs = task_definition(
        json!({"volumes": [{"name": "e", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}}]}),
    );
    assert!(matches!(
        resolve_volumes(&efs, "t"),
        Err(SpecError::Unsupported { .. })
    ));
}

#[test]
fn health_stop_timeout_ulimits_labels_and_linux_parameters() {
    let spec = check(
        TaskNetwork::Bridge,
        &TaskDefinition::default(),
        json!({"name": "app", "image": "x", "essential": true, "stopTimeout": 5, "privileged": true, "readonlyRootFilesystem": true,
               "healthCheck": {"command": ["CMD-SHELL", "curl -f localhost"], "interval": 10},
               "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
               "dockerLabels": {"team": "web", "com.flotilla.cluster": "spoofed"},
               "linuxParameters": {"capabilities": {"add": ["NET_ADMIN"], "drop": ["MKNOD"]}, "initProcessEnabled": true, "sharedMemorySize": 128}}),
        None,
    );
    let health = spec.health_check.unwrap();
    assert_eq!(health.test, ["CMD-SHELL", "curl -f localhost"]);
    assert_eq!(
        (
            health.interval.as_secs(),
            health.timeout.as_secs(),
            health.retries,
            health.start_period.as_secs()
        ),
        (10, 5, 3, 0)
    );
    assert_eq!(spec.stop_timeout, Some(std::time::Duration::from_secs(5)));
    assert_eq!(spec.ulimits[0].name, "nofile");
    assert_eq!((spec.ulimits[0].soft, spec.ulimits[0].hard), (1024, 4096));
    assert_eq!(spec.labels.get("team").map(String::as_str), Some("web"));
    assert_eq!(
        spec.labels
            .get(flotilla_runtime::labels::CLUSTER)
            .map(String::as_str),
        Some("default"),
        "ours win"
    );
    assert_eq!(
        spec.labels
            .get(flotilla_runtime::labels::CONTAINER_NAME)
            .map(String::as_str),
        Some("app")
    );
    assert_eq!(
        spec.labels
            .get(extra_labels::INSTANCE_ID)
            .map(String::as_str),
        Some("i-0123")
    );
    assert!(spec.privileged && spec.read_only_root_filesystem && spec.init_process);
    assert_eq!(
        (
            spec.capabilities_add.clone(),
            spec.capabilities_drop.clone()
        ),
        (vec!["NET_ADMIN".to_owned()], vec!["MKNOD".to_owned()])
    );
    assert_eq!(spec.shared_memory_bytes, Some(128 << 20));
    let default = check(
        TaskNetwork::Bridge,
        &TaskDefinition::default(),
        json!({"name": "a", "image": "x"}),
        None,
    );
    assert_eq!(default.stop_timeout, Some(DEFAULT_STOP_TIMEOUT));
    assert_eq!(default.health_check, None);
}

#[test]
fn environment_files_parse_like_docker() {
    assert_eq!(
        parse_environment_file("# comment\nA=1\n\n  B=two=2\nnovalue\n=x\n"),
        [
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "two=2".to_owned())
        ]
    );
}

#[test]
fn reported_bindings_per_network_mode() {
    let container =
        definition(json!({"name": "app", "image": "x", "portMappings": [{"containerPort": 80}]}));
    let bound = [
        BoundPort {
            container_port: 80,
            host_port: 32768,
            protocol: Protocol::Tcp,
            host_ip: "0.0.0.0".to_owned(),
        },
        BoundPort {
            container_port: 80,
            host_port: 32768,
            protocol: Protocol::Tcp,
            host_ip: "::".to_owned(),
        },
    ];
    let bridge = network_bindings(EcsNetworkMode::Bridge, &container, &bound);
    assert_eq!(
        bridge.len(),
        1,
        "IPv4 and IPv6 bindings of one port are one binding"
    );
    assert_eq!(
        (bridge[0].host_port, bridge[0].bind_ip.as_deref()),
        (Some(32768), Some("0.0.0.0"))
    );
    let host = network_bindings(EcsNetworkMode::Host, &container, &[]);
    assert_eq!(
        (host[0].container_port, host[0].host_port),
        (Some(80), Some(80))
    );
    assert!(network_bindings(EcsNetworkMode::Awsvpc, &container, &bound).is_empty());
}

#[test]
fn refuses_what_it_cannot_honour() {
    let volumes = BTreeMap::new();
    let names = BTreeMap::new();
    let context = TaskContext {
        cluster_label: "default",
        cluster_arn: CLUSTER_ARN,
        instance_id: "i",
        task_arn: TASK_ARN,
        task_id: "abc123",
        family: "web",
        revision: 1,
        network: &TaskNetwork::Bridge,
        task_memory_mib: None,
        fargate_cpu_units: None,
        volumes: &volumes,
        engine_names: &names,
        engine_ids: &names,
    };
    let translate = |value: serde_json::Value| {
        container_spec(
            &context,
            &ContainerContext::default(),
            &definition(value),
            None,
        )
    };
    assert!(matches!(
        translate(json!({"name": "a"})),
        Err(SpecError::Missing { field: "image" })
    ));
    assert!(matches!(
        translate(
            json!({"name": "a", "image": "x", "secrets": [{"name": "S", "valueFrom": "arn:aws:ssm:x"}]})
        ),
        Err(SpecError::Unsupported { .. })
    ));
    assert!(matches!(
        translate(
            json!({"name": "a", "image": "x", "mountPoints": [{"sourceVolume": "nope", "containerPath": "/x"}]})
        ),
        Err(SpecError::UnknownVolume { .. })
    ));
    assert!(matches!(
        translate(json!({"name": "a", "image": "x", "links": ["ghost"]})),
        Err(SpecError::UnknownContainer { .. })
    ));
    assert!(matches!(
        translate(json!({"name": "a", "image": "x", "portMappings": [{"containerPort": 70000}]})),
        Err(SpecError::BadPort { .. })
    ));
}
