//! Which launch types can run a task definition. One function per launch
//! type says why it cannot, if it cannot; the same answer refuses a
//! definition that requires that launch type and decides whether the
//! launch type appears in `compatibilities`.

use flotilla_types::ecs::{
    Compatibility, ContainerDefinition, LogDriver, NetworkMode, OSFamily, PidMode, ResourceType,
    TaskDefinition,
};

use super::attributes::is_ecr_image;
use super::size;

/// Log drivers Fargate runs.
const FARGATE_LOG_DRIVERS: &[LogDriver] = &[
    LogDriver::Awslogs,
    LogDriver::Splunk,
    LogDriver::Awsfirelens,
];

/// The one Linux capability Fargate lets a container add.
const FARGATE_ADDABLE_CAPABILITY: &str = "SYS_PTRACE";

/// The launch types that can run `definition`, in the order ECS lists them.
/// EC2 runs every valid definition. MANAGED_INSTANCES is listed only when
/// required, since Flotilla does not model its rules.
pub fn compatibilities(definition: &TaskDefinition) -> Vec<Compatibility> {
    let required = |c: Compatibility| {
        definition
            .requires_compatibilities
            .iter()
            .flatten()
            .any(|r| *r == c)
    };
    let mut found = Vec::new();
    if external_problem(definition).is_none() {
        found.push(Compatibility::External);
    }
    found.push(Compatibility::Ec2);
    if fargate_problem(definition).is_none() {
        found.push(Compatibility::Fargate);
    }
    if required(Compatibility::ManagedInstances) {
        found.push(Compatibility::ManagedInstances);
    }
    found
}

/// Why `compatibility` cannot run `definition`, if it cannot.
pub fn problem(definition: &TaskDefinition, compatibility: Compatibility) -> Option<String> {
    match compatibility {
        Compatibility::Fargate => fargate_problem(definition),
        Compatibility::External => external_problem(definition),
        Compatibility::Ec2 | Compatibility::ManagedInstances => None,
    }
}

fn network_mode(definition: &TaskDefinition) -> NetworkMode {
    definition.network_mode.unwrap_or(NetworkMode::Bridge)
}

fn containers(definition: &TaskDefinition) -> &[ContainerDefinition] {
    definition
        .container_definitions
        .as_deref()
        .unwrap_or_default()
}

fn fargate_unsupported(what: &str) -> Option<String> {
    Some(format!(
        "Tasks using the Fargate launch type do not support {what}."
    ))
}

fn fargate_problem(definition: &TaskDefinition) -> Option<String> {
    if network_mode(definition) != NetworkMode::Awsvpc {
        return Some("Fargate only supports network mode \u{2018}awsvpc\u{2019}.".to_owned());
    }
    fargate_size(definition)
        .or_else(|| fargate_task_features(definition))
        .or_else(|| {
            containers(definition)
                .iter()
                .find_map(fargate_container_features)
        })
        .or_else(|| fargate_execution_role(definition))
        .or_else(|| fargate_stream_prefix(definition))
}

/// Fargate names every awslogs stream after a prefix, the container and the
/// task: without a prefix there would be nothing to name it after.
fn fargate_stream_prefix(definition: &TaskDefinition) -> Option<String> {
    let missing = containers(definition).iter().any(|c| {
        c.log_configuration.as_ref().is_some_and(|log| {
            log.log_driver == Some(LogDriver::Awslogs)
                && log
                    .options
                    .as_ref()
                    .and_then(|options| options.get("awslogs-stream-prefix"))
                    .is_none_or(|prefix| prefix.is_empty())
        })
    });
    missing.then(|| "Fargate requires log configuration options to include awslogs-stream-prefix to support log driver awslogs.".to_owned())
}

fn fargate_size(definition: &TaskDefinition) -> Option<String> {
    // Registration stores cpu and memory normalised to whole units.
    let Some(cpu_units) = definition.cpu.as_deref().and_then(|cpu| cpu.parse().ok()) else {
        return Some("Fargate requires that 'cpu' be defined at the task level.".to_owned());
    };
    let Some(memory_mib) = definition
        .memory
        .as_deref()
        .and_then(|memory| memory.parse().ok())
    else {
        return Some("Fargate requires that 'memory' be defined at the task level.".to_owned());
    };
    let windows = definition
        .runtime_platform
        .as_ref()
        .and_then(|platform| platform.operating_system_family)
        .is_some_and(|family| family != OSFamily::Linux);
    size::fargate_size_problem(cpu_units, memory_mib, windows)
}

fn fargate_task_features(definition: &TaskDefinition) -> Option<String> {
    if definition.ipc_mode.is_some() {
        return fargate_unsupported("ipcMode");
    }
    if definition.pid_mode == Some(PidMode::Host) {
        return fargate_unsupported("pidMode host");
    }
    if definition
        .placement_constraints
        .as_ref()
        .is_some_and(|c| !c.is_empty())
    {
        return fargate_unsupported("placementConstraints");
    }
    if definition
        .inference_accelerators
        .as_ref()
        .is_some_and(|a| !a.is_empty())
    {
        return fargate_unsupported("inferenceAccelerators");
    }
    for volume in definition.volumes.iter().flatten() {
        if volume
            .host
            .as_ref()
            .is_some_and(|host| host.source_path.is_some())
        {
            return fargate_unsupported("host volumes with a sourcePath");
        }
        if volume.docker_volume_configuration.is_some() {
            return fargate_unsupported("dockerVolumeConfiguration");
        }
    }
    None
}

fn fargate_container_features(container: &ContainerDefinition) -> Option<String> {
    if container.privileged == Some(true) {
        return fargate_unsupported("privileged containers");
    }
    if let Some(linux) = &container.linux_parameters {
        let unsupported = [
            (
                "devices",
                linux.devices.as_ref().is_some_and(|d| !d.is_empty()),
            ),
            ("tmpfs", linux.tmpfs.as_ref().is_some_and(|t| !t.is_empty())),
            ("sharedMemorySize", linux.shared_memory_size.is_some()),
            ("maxSwap", linux.max_swap.is_some()),
            ("swappiness", linux.swappiness.is_some()),
        ];
        if let Some((field, _)) = unsupported.into_iter().find(|(_, set)| *set) {
            return fargate_unsupported(&format!("linuxParameters {field}"));
        }
        let added = linux
            .capabilities
            .as_ref()
            .and_then(|c| c.add.as_deref())
            .unwrap_or_default();
        if added.iter().any(|c| c != FARGATE_ADDABLE_CAPABILITY) {
            return Some(format!(
                "Tasks using the Fargate launch type only support adding the '{FARGATE_ADDABLE_CAPABILITY}' kernel capability."
            ));
        }
    }
    let gpu = container
        .resource_requirements
        .iter()
        .flatten()
        .any(|r| r.r#type == Some(ResourceType::Gpu));
    if gpu {
        return fargate_unsupported("GPU resourceRequirements");
    }
    let driver = container
        .log_configuration
        .as_ref()
        .and_then(|log| log.log_driver);
    if let Some(driver) = driver.filter(|d| !FARGATE_LOG_DRIVERS.contains(d)) {
        return fargate_unsupported(&format!(
            "log driver {driver}: use awslogs, splunk or awsfirelens"
        ));
    }
    None
}

/// Fargate has no instance role to fall back on: pulling from ECR and
/// shipping logs to CloudWatch need the task's execution role.
fn fargate_execution_role(definition: &TaskDefinition) -> Option<String> {
    if definition.execution_role_arn.is_some() {
        return None;
    }
    let containers = containers(definition);
    let awslogs = containers.iter().any(|c| {
        c.log_configuration.as_ref().and_then(|log| log.log_driver) == Some(LogDriver::Awslogs)
    });
    if awslogs {
        return Some("Fargate requires task definition to have execution role ARN to support log driver awslogs.".to_owned());
    }
    if containers
        .iter()
        .any(|c| c.image.as_deref().is_some_and(is_ecr_image))
    {
        return Some(
            "Fargate requires task definition to have execution role ARN to support ECR images."
                .to_owned(),
        );
    }
    None
}

/// ECS Anywhere instances run the agent without the features that need an
/// AWS-managed network or AWS hardware.
fn external_problem(definition: &TaskDefinition) -> Option<String> {
    let unsupported = |what: &str| {
        Some(format!(
            "Tasks using the EXTERNAL launch type do not support {what}."
        ))
    };
    if network_mode(definition) == NetworkMode::Awsvpc {
        return unsupported("networkMode awsvpc");
    }
    if definition.proxy_configuration.is_some() {
        return unsupported("proxyConfiguration");
    }
    if definition
        .inference_accelerators
        .as_ref()
        .is_some_and(|a| !a.is_empty())
    {
        return unsupported("inferenceAccelerators");
    }
    if definition.enable_fault_injection == Some(true) {
        return unsupported("enableFaultInjection");
    }
    None
}
