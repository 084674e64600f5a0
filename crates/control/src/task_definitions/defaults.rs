//! The stored task definition: every request field kept, and the defaults
//! ECS fills in where the request left them out, so that Describe answers
//! what ECS would.

use flotilla_types::ecs::{
    ContainerDefinition, HealthCheck, NetworkMode, PortMapping, RegisterTaskDefinitionRequest,
    TaskDefinition, TransportProtocol, Volume,
};

use super::validate::TaskSize;

const HEALTH_CHECK_INTERVAL_SECONDS_DEFAULT: i32 = 30;
const HEALTH_CHECK_TIMEOUT_SECONDS_DEFAULT: i32 = 5;
const HEALTH_CHECK_RETRIES_DEFAULT: i32 = 3;
const EFS_ROOT_DIRECTORY_DEFAULT: &str = "/";

/// The definition as it will be stored, before a revision is allocated:
/// `revision`, `taskDefinitionArn`, `status` and the registration fields are
/// set by the caller. `networkMode` stays unset when the request left it out,
/// as ECS leaves it (it means bridge on Linux EC2).
pub fn definition_from(request: &RegisterTaskDefinitionRequest, size: TaskSize) -> TaskDefinition {
    let network_mode = request.network_mode;
    let containers = request
        .container_definitions
        .iter()
        .flatten()
        .map(|container| with_container_defaults(container.clone(), network_mode))
        .collect();
    TaskDefinition {
        container_definitions: Some(containers),
        family: request.family.clone(),
        task_role_arn: request.task_role_arn.clone(),
        execution_role_arn: request.execution_role_arn.clone(),
        network_mode,
        volumes: Some(
            request
                .volumes
                .iter()
                .flatten()
                .cloned()
                .map(with_volume_defaults)
                .collect(),
        ),
        placement_constraints: Some(request.placement_constraints.clone().unwrap_or_default()),
        requires_compatibilities: request.requires_compatibilities.clone(),
        cpu: size.cpu_units.map(|units| units.to_string()),
        memory: size.memory_mib.map(|mib| mib.to_string()),
        pid_mode: request.pid_mode,
        ipc_mode: request.ipc_mode,
        proxy_configuration: request.proxy_configuration.clone(),
        inference_accelerators: request.inference_accelerators.clone(),
        ephemeral_storage: request.ephemeral_storage.clone(),
        runtime_platform: request.runtime_platform.clone(),
        enable_fault_injection: request.enable_fault_injection,
        trusted_execution_configuration: request.trusted_execution_configuration.clone(),
        ..Default::default()
    }
}

/// An EFS volume's `rootDirectory` is the file system's root unless given,
/// and ECS shows it so.
fn with_volume_defaults(mut volume: Volume) -> Volume {
    if let Some(efs) = &mut volume.efs_volume_configuration {
        efs.root_directory
            .get_or_insert_with(|| EFS_ROOT_DIRECTORY_DEFAULT.to_owned());
    }
    volume
}

fn with_container_defaults(
    mut container: ContainerDefinition,
    network_mode: Option<NetworkMode>,
) -> ContainerDefinition {
    container.essential.get_or_insert(true);
    container.cpu.get_or_insert(0);
    container.environment.get_or_insert_with(Vec::new);
    container.mount_points.get_or_insert_with(Vec::new);
    container.volumes_from.get_or_insert_with(Vec::new);
    container.system_controls.get_or_insert_with(Vec::new);
    let mappings = container.port_mappings.get_or_insert_with(Vec::new);
    for mapping in mappings.iter_mut() {
        with_port_defaults(mapping, network_mode.unwrap_or(NetworkMode::Bridge));
    }
    if let Some(health_check) = &mut container.health_check {
        with_health_check_defaults(health_check);
    }
    container
}

/// In awsvpc and host mode the container listens on the host's port of the
/// same number; in bridge mode an omitted host port is 0, which means one
/// chosen from the ephemeral range when the task starts.
fn with_port_defaults(mapping: &mut PortMapping, network_mode: NetworkMode) {
    mapping.protocol.get_or_insert(TransportProtocol::Tcp);
    let Some(container_port) = mapping.container_port else {
        return;
    };
    match network_mode {
        NetworkMode::Awsvpc | NetworkMode::Host => {
            mapping.host_port.get_or_insert(container_port);
        }
        NetworkMode::Bridge => {
            mapping.host_port.get_or_insert(0);
        }
        NetworkMode::None => {}
    }
}

fn with_health_check_defaults(health_check: &mut HealthCheck) {
    health_check
        .interval
        .get_or_insert(HEALTH_CHECK_INTERVAL_SECONDS_DEFAULT);
    health_check
        .timeout
        .get_or_insert(HEALTH_CHECK_TIMEOUT_SECONDS_DEFAULT);
    health_check
        .retries
        .get_or_insert(HEALTH_CHECK_RETRIES_DEFAULT);
}
