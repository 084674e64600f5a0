//! `requiresAttributes`: the container instance capabilities a task
//! definition needs, named as the ECS agent advertises them. The scheduler
//! places a task only on an instance that has every one.
//!
//! This is a documented subset of what ECS computes:
//!
//! | uses                                          | needs                                                        |
//! |-----------------------------------------------|--------------------------------------------------------------|
//! | any logConfiguration, dockerLabels, ulimits   | com.amazonaws.ecs.capability.docker-remote-api.1.18          |
//! | logConfiguration with driver D                | com.amazonaws.ecs.capability.logging-driver.D                |
//! | awslogs driver                                | com.amazonaws.ecs.capability.docker-remote-api.1.19          |
//! | awslogs driver and an executionRoleArn        | ecs.capability.execution-role-awslogs                        |
//! | memoryReservation                             | com.amazonaws.ecs.capability.docker-remote-api.1.21          |
//! | linuxParameters.initProcessEnabled            | com.amazonaws.ecs.capability.docker-remote-api.1.25          |
//! | an image in ECR                               | com.amazonaws.ecs.capability.ecr-auth                        |
//! | an image in ECR and an executionRoleArn       | ecs.capability.execution-role-ecr-pull                       |
//! | privileged                                    | com.amazonaws.ecs.capability.privileged-container            |
//! | dockerSecurityOptions label:… / apparmor:…    | com.amazonaws.ecs.capability.selinux / .apparmor             |
//! | taskRoleArn                                   | com.amazonaws.ecs.capability.task-iam-role                   |
//! | taskRoleArn with networkMode host             | com.amazonaws.ecs.capability.task-iam-role-network-host      |
//! | networkMode awsvpc                            | ecs.capability.task-eni                                      |
//! | healthCheck                                   | ecs.capability.container-health-check                        |
//! | dependsOn, startTimeout, stopTimeout          | ecs.capability.container-ordering                            |
//! | secrets from SSM / Secrets Manager            | ecs.capability.secrets.{ssm,asm}.environment-variables       |
//! | log driver secretOptions from SSM / ASM       | ecs.capability.secrets.{ssm,asm}.bootstrap.log-driver        |
//! | repositoryCredentials                         | ecs.capability.private-registry-authentication.secretsmanager|
//! | environmentFiles                              | ecs.capability.env-files.s3                                  |
//! | firelensConfiguration of type T               | ecs.capability.firelens.T                                    |
//! | containerPortRange                            | ecs.capability.network.container-port-range                  |
//! | restartPolicy enabled                         | ecs.capability.container-restart-policy                      |
//! | pidMode or ipcMode                            | ecs.capability.pid-ipc-namespace-sharing                     |
//! | proxyConfiguration                            | ecs.capability.aws-appmesh                                   |
//! | inferenceAccelerators                         | ecs.capability.task-eia                                      |
//! | EFS volume (with IAM or TLS: also efsAuth)    | ecs.capability.efs, ecs.capability.efsAuth                   |
//! | FSx for Windows volume                        | ecs.capability.fsxWindowsFileServer                          |
//! | Docker volume with driver D (default local)   | ecs.capability.docker-plugin.D, docker-remote-api.1.25       |
//! | enableFaultInjection                          | ecs.capability.fault-injection                               |
//!
//! Left out: GPU and Neuron devices (their attributes carry driver versions
//! that a definition cannot name) and Windows-only features (gMSA).

use std::collections::BTreeSet;

use flotilla_types::ecs::{
    Attribute, ContainerDefinition, EFSTransitEncryption, LogDriver, NetworkMode, Secret,
    TaskDefinition,
};

const LEGACY_PREFIX: &str = "com.amazonaws.ecs.capability.";
const PREFIX: &str = "ecs.capability.";

/// The attributes `definition` needs, sorted by name so that the answer
/// does not depend on the order of containers.
pub fn required_attributes(definition: &TaskDefinition) -> Vec<Attribute> {
    let mut names = BTreeSet::new();
    task_attributes(definition, &mut names);
    let has_execution_role = definition.execution_role_arn.is_some();
    for container in definition.container_definitions.iter().flatten() {
        container_attributes(container, has_execution_role, &mut names);
    }
    names
        .into_iter()
        .map(|name| Attribute {
            name: Some(name),
            ..Default::default()
        })
        .collect()
}

fn legacy(names: &mut BTreeSet<String>, suffix: &str) {
    names.insert(format!("{LEGACY_PREFIX}{suffix}"));
}

fn current(names: &mut BTreeSet<String>, suffix: &str) {
    names.insert(format!("{PREFIX}{suffix}"));
}

fn task_attributes(definition: &TaskDefinition, names: &mut BTreeSet<String>) {
    let network_mode = definition.network_mode.unwrap_or(NetworkMode::Bridge);
    if definition.task_role_arn.is_some() {
        legacy(names, "task-iam-role");
        if network_mode == NetworkMode::Host {
            legacy(names, "task-iam-role-network-host");
        }
    }
    if network_mode == NetworkMode::Awsvpc {
        current(names, "task-eni");
    }
    if definition.pid_mode.is_some() || definition.ipc_mode.is_some() {
        current(names, "pid-ipc-namespace-sharing");
    }
    if definition.proxy_configuration.is_some() {
        current(names, "aws-appmesh");
    }
    if definition
        .inference_accelerators
        .as_ref()
        .is_some_and(|a| !a.is_empty())
    {
        current(names, "task-eia");
    }
    if definition.enable_fault_injection == Some(true) {
        current(names, "fault-injection");
    }
    for volume in definition.volumes.iter().flatten() {
        if let Some(efs) = &volume.efs_volume_configuration {
            current(names, "efs");
            let encrypted = efs.transit_encryption == Some(EFSTransitEncryption::Enabled);
            if efs.authorization_config.is_some() || encrypted {
                current(names, "efsAuth");
            }
        }
        if volume
            .fsx_windows_file_server_volume_configuration
            .is_some()
        {
            current(names, "fsxWindowsFileServer");
        }
        if let Some(docker) = &volume.docker_volume_configuration {
            current(
                names,
                &format!(
                    "docker-plugin.{}",
                    docker.driver.as_deref().unwrap_or("local")
                ),
            );
            legacy(names, "docker-remote-api.1.25");
        }
    }
}

fn container_attributes(
    container: &ContainerDefinition,
    has_execution_role: bool,
    names: &mut BTreeSet<String>,
) {
    if let Some(log) = &container.log_configuration {
        legacy(names, "docker-remote-api.1.18");
        if let Some(driver) = log.log_driver {
            legacy(names, &format!("logging-driver.{driver}"));
            if driver == LogDriver::Awslogs {
                legacy(names, "docker-remote-api.1.19");
                if has_execution_role {
                    current(names, "execution-role-awslogs");
                }
            }
        }
        for secret in log.secret_options.iter().flatten() {
            current(
                names,
                &format!("secrets.{}.bootstrap.log-driver", secret_store(secret)),
            );
        }
    }
    let non_empty_labels = container
        .docker_labels
        .as_ref()
        .is_some_and(|l| !l.is_empty());
    let non_empty_ulimits = container.ulimits.as_ref().is_some_and(|u| !u.is_empty());
    if non_empty_labels || non_empty_ulimits {
        legacy(names, "docker-remote-api.1.18");
    }
    if container.memory_reservation.is_some() {
        legacy(names, "docker-remote-api.1.21");
    }
    if container
        .linux_parameters
        .as_ref()
        .and_then(|l| l.init_process_enabled)
        == Some(true)
    {
        legacy(names, "docker-remote-api.1.25");
    }
    if container.image.as_deref().is_some_and(is_ecr_image) {
        legacy(names, "ecr-auth");
        if has_execution_role {
            current(names, "execution-role-ecr-pull");
        }
    }
    if container.privileged == Some(true) {
        legacy(names, "privileged-container");
    }
    for option in container.docker_security_options.iter().flatten() {
        if option.starts_with("label:") {
            legacy(names, "selinux");
        } else if option.starts_with("apparmor:") {
            legacy(names, "apparmor");
        }
    }
    container_feature_attributes(container, names);
}

fn container_feature_attributes(container: &ContainerDefinition, names: &mut BTreeSet<String>) {
    if container.health_check.is_some() {
        current(names, "container-health-check");
    }
    let ordered = container.depends_on.as_ref().is_some_and(|d| !d.is_empty())
        || container.start_timeout.is_some()
        || container.stop_timeout.is_some();
    if ordered {
        current(names, "container-ordering");
    }
    for secret in container.secrets.iter().flatten() {
        current(
            names,
            &format!("secrets.{}.environment-variables", secret_store(secret)),
        );
    }
    if container.repository_credentials.is_some() {
        current(names, "private-registry-authentication.secretsmanager");
    }
    if container
        .environment_files
        .as_ref()
        .is_some_and(|f| !f.is_empty())
    {
        current(names, "env-files.s3");
    }
    if let Some(kind) = container
        .firelens_configuration
        .as_ref()
        .and_then(|f| f.r#type)
    {
        current(names, &format!("firelens.{kind}"));
    }
    if container
        .port_mappings
        .iter()
        .flatten()
        .any(|m| m.container_port_range.is_some())
    {
        current(names, "network.container-port-range");
    }
    if container.restart_policy.as_ref().and_then(|p| p.enabled) == Some(true) {
        current(names, "container-restart-policy");
    }
}

/// `asm` for a Secrets Manager ARN, `ssm` for a Parameter Store ARN or a
/// bare parameter name, as the agent's attribute names spell them.
fn secret_store(secret: &Secret) -> &'static str {
    let value_from = secret.value_from.as_deref().unwrap_or_default();
    if value_from.split(':').nth(2) == Some("secretsmanager") {
        "asm"
    } else {
        "ssm"
    }
}

/// Whether `image` lives in an Amazon ECR registry, e.g.
/// `123456789012.dkr.ecr.us-east-1.amazonaws.com/web:1`.
pub fn is_ecr_image(image: &str) -> bool {
    let Some((registry, _)) = image.split_once('/') else {
        return false;
    };
    registry.contains(".dkr.ecr.")
        && (registry.ends_with(".amazonaws.com") || registry.ends_with(".amazonaws.com.cn"))
}
