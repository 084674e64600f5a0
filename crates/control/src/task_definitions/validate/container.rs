//! The rules for one container definition, given the task around it.

use flotilla_types::awslogs;
use flotilla_types::ecs::{
    ContainerCondition, ContainerDefinition, LogDriver, NetworkMode, PortMapping, ResourceType,
    Secret, Volume,
};
use flotilla_types::ApiError;

use super::{invalid_setting, TaskContext};
use crate::task_definitions::size::CONTAINER_MEMORY_MIB_MIN;

const IMAGE_LENGTH_MAX: usize = 255;
/// The Linux kernel's largest CPU share, which bounds a container's `cpu`.
const CONTAINER_CPU_UNITS_MAX: i32 = 262_144;
const PORT_MAX: i32 = 65_535;
const HEALTH_CHECK_INTERVAL_SECONDS: (i32, i32) = (5, 300);
const HEALTH_CHECK_TIMEOUT_SECONDS: (i32, i32) = (2, 120);
const HEALTH_CHECK_RETRIES: (i32, i32) = (1, 10);
const HEALTH_CHECK_START_PERIOD_SECONDS: (i32, i32) = (0, 300);
const RESTART_ATTEMPT_PERIOD_SECONDS: (i32, i32) = (60, 1_800);
const RESTART_IGNORED_EXIT_CODES_MAX: usize = 50;
const SWAPPINESS: (i32, i32) = (0, 100);

pub(super) fn check_container(
    container: &ContainerDefinition,
    task: &TaskContext,
) -> Result<(), ApiError> {
    check_image(container)?;
    check_container_memory(container, task)?;
    check_container_cpu(container)?;
    check_port_mappings(container, task.network_mode)?;
    check_network_mode_settings(container, task.network_mode)?;
    check_mount_points(container, task.volumes)?;
    check_volumes_from(container, task)?;
    check_depends_on(container, task)?;
    check_environment(container)?;
    check_secrets(container)?;
    check_health_check(container)?;
    check_ulimits(container)?;
    check_log_configuration(container)?;
    check_linux_parameters(container)?;
    check_resource_requirements(container, task)?;
    check_restart_policy(container)?;
    check_other_required_members(container)
}

fn check_image(container: &ContainerDefinition) -> Result<(), ApiError> {
    let image = container.image.as_deref().unwrap_or_default();
    if image.trim().is_empty() {
        return Err(ApiError::client(
            "Container.image should not be null or empty.",
        ));
    }
    if image.len() > IMAGE_LENGTH_MAX || image.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid_setting(
            container,
            "image",
            format!("Up to {IMAGE_LENGTH_MAX} characters without spaces are allowed."),
        ));
    }
    Ok(())
}

fn check_container_memory(
    container: &ContainerDefinition,
    task: &TaskContext,
) -> Result<(), ApiError> {
    if let Some(memory) = container.memory {
        if memory < CONTAINER_MEMORY_MIB_MIN {
            return Err(invalid_setting(
                container,
                "memory",
                format!("A container needs at least {CONTAINER_MEMORY_MIB_MIN} MiB of memory, got {memory}."),
            ));
        }
    }
    if let Some(reservation) = container.memory_reservation {
        if reservation <= 0 {
            return Err(invalid_setting(
                container,
                "memoryReservation",
                format!("It must be greater than 0 MiB, got {reservation}."),
            ));
        }
        if let Some(memory) = container.memory.filter(|memory| reservation > *memory) {
            return Err(invalid_setting(
                container,
                "memoryReservation",
                format!("It ({reservation} MiB) must not be greater than 'memory' ({memory} MiB)."),
            ));
        }
    }
    // With no task memory, EC2 and EXTERNAL size the container from its own
    // limits. Fargate requires task memory instead, which `compatibility`
    // reports when it is missing.
    let no_memory_set = container.memory.is_none() && container.memory_reservation.is_none();
    if no_memory_set && task.size.memory_mib.is_none() && !task.fargate_required {
        let name = container.name.as_deref().unwrap_or_default();
        return Err(ApiError::client(format!(
            "Invalid setting for container '{name}'. At least one of 'memory' or 'memoryReservation' must be specified."
        )));
    }
    Ok(())
}

fn check_container_cpu(container: &ContainerDefinition) -> Result<(), ApiError> {
    match container.cpu {
        Some(cpu) if !(0..=CONTAINER_CPU_UNITS_MAX).contains(&cpu) => Err(invalid_setting(
            container,
            "cpu",
            format!("CPU units must be between 0 and {CONTAINER_CPU_UNITS_MAX}, got {cpu}."),
        )),
        _ => Ok(()),
    }
}

fn check_port_mappings(
    container: &ContainerDefinition,
    network_mode: NetworkMode,
) -> Result<(), ApiError> {
    let mappings = container.port_mappings.as_deref().unwrap_or_default();
    if network_mode == NetworkMode::None && !mappings.is_empty() {
        return Err(ApiError::client(format!(
            "Port mappings are not supported when networkMode=none: container '{}' has portMappings.",
            container.name.as_deref().unwrap_or_default()
        )));
    }
    for mapping in mappings {
        check_port_mapping(container, mapping, network_mode)?;
    }
    Ok(())
}

fn check_port_mapping(
    container: &ContainerDefinition,
    mapping: &PortMapping,
    network_mode: NetworkMode,
) -> Result<(), ApiError> {
    let in_range = |port: i32| (0..=PORT_MAX).contains(&port);
    if let Some(port) = mapping.container_port.filter(|p| !in_range(*p)) {
        return Err(invalid_setting(
            container,
            "containerPort",
            format!("Ports must be between 0 and {PORT_MAX}, got {port}."),
        ));
    }
    if let Some(port) = mapping.host_port.filter(|p| !in_range(*p)) {
        return Err(invalid_setting(
            container,
            "hostPort",
            format!("Ports must be between 0 and {PORT_MAX}, got {port}."),
        ));
    }
    match (&mapping.container_port, &mapping.container_port_range) {
        (None, None) => {
            return Err(invalid_setting(
                container,
                "portMappings",
                "Each port mapping needs a containerPort or a containerPortRange.",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(invalid_setting(
                container,
                "portMappings",
                "A port mapping cannot have both containerPort and containerPortRange.",
            ))
        }
        (None, Some(range)) => check_port_range(container, range, mapping, network_mode)?,
        (Some(_), None) => {}
    }
    let same_ports = mapping.host_port.is_none() || mapping.host_port == mapping.container_port;
    if matches!(network_mode, NetworkMode::Awsvpc | NetworkMode::Host) && !same_ports {
        return Err(ApiError::client(format!(
            "When networkMode={network_mode}, the host ports and container ports in port mappings must match."
        )));
    }
    Ok(())
}

fn check_port_range(
    container: &ContainerDefinition,
    range: &str,
    mapping: &PortMapping,
    network_mode: NetworkMode,
) -> Result<(), ApiError> {
    let bounds = range.split_once('-').and_then(|(first, last)| {
        let first: i32 = first.trim().parse().ok()?;
        let last: i32 = last.trim().parse().ok()?;
        (1 <= first && first < last && last <= PORT_MAX).then_some(())
    });
    if bounds.is_none() {
        return Err(invalid_setting(
            container,
            "containerPortRange",
            format!("{range:?} is not of the form first-last (for example 8000-8010) with ports from 1 to {PORT_MAX} and first below last."),
        ));
    }
    if mapping.host_port.is_some() {
        return Err(invalid_setting(
            container,
            "hostPort",
            "hostPort cannot be set together with containerPortRange.",
        ));
    }
    if !matches!(network_mode, NetworkMode::Awsvpc | NetworkMode::Bridge) {
        return Err(invalid_setting(
            container,
            "containerPortRange",
            format!("containerPortRange is supported only when networkMode is awsvpc or bridge, not {network_mode}."),
        ));
    }
    Ok(())
}

/// Settings Docker applies to a container's own network stack, which the
/// task's network mode may not allow. Link targets are deliberately not
/// checked against the containers of the task: ECS does not check them.
fn check_network_mode_settings(
    container: &ContainerDefinition,
    network_mode: NetworkMode,
) -> Result<(), ApiError> {
    if container
        .links
        .as_ref()
        .is_some_and(|links| !links.is_empty())
        && network_mode != NetworkMode::Bridge
    {
        return Err(ApiError::client(format!(
            "Links are not supported when networkMode={network_mode}."
        )));
    }
    if network_mode == NetworkMode::Awsvpc {
        let unsupported = [
            ("hostname", container.hostname.is_some()),
            (
                "dnsServers",
                container
                    .dns_servers
                    .as_ref()
                    .is_some_and(|v| !v.is_empty()),
            ),
            (
                "dnsSearchDomains",
                container
                    .dns_search_domains
                    .as_ref()
                    .is_some_and(|v| !v.is_empty()),
            ),
            (
                "extraHosts",
                container
                    .extra_hosts
                    .as_ref()
                    .is_some_and(|v| !v.is_empty()),
            ),
        ];
        if let Some((field, _)) = unsupported.into_iter().find(|(_, set)| *set) {
            return Err(ApiError::client(format!(
                "{field} is not supported on container when networkMode=awsvpc."
            )));
        }
    }
    Ok(())
}

fn check_mount_points(container: &ContainerDefinition, volumes: &[Volume]) -> Result<(), ApiError> {
    for mount in container.mount_points.iter().flatten() {
        let source = mount.source_volume.as_deref().unwrap_or("null");
        if !volumes
            .iter()
            .any(|volume| volume.name.as_deref() == Some(source))
        {
            return Err(ApiError::client(format!("Unknown volume '{source}'.")));
        }
        if mount
            .container_path
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            return Err(invalid_setting(
                container,
                "mountPoints",
                "containerPath should not be null or empty.",
            ));
        }
    }
    Ok(())
}

fn check_volumes_from(container: &ContainerDefinition, task: &TaskContext) -> Result<(), ApiError> {
    for volume_from in container.volumes_from.iter().flatten() {
        let source = volume_from.source_container.as_deref().unwrap_or_default();
        if source.is_empty() || task.container(source).is_none() {
            return Err(invalid_setting(
                container,
                "volumesFrom",
                format!("sourceContainer '{source}' is not a container of this task definition."),
            ));
        }
        if container.name.as_deref() == Some(source) {
            return Err(invalid_setting(
                container,
                "volumesFrom",
                "A container cannot mount volumes from itself.",
            ));
        }
    }
    Ok(())
}

fn check_depends_on(container: &ContainerDefinition, task: &TaskContext) -> Result<(), ApiError> {
    for dependency in container.depends_on.iter().flatten() {
        let (Some(target_name), Some(condition)) =
            (dependency.container_name.as_deref(), dependency.condition)
        else {
            return Err(invalid_setting(
                container,
                "dependsOn",
                "containerName and condition are required.",
            ));
        };
        if container.name.as_deref() == Some(target_name) {
            return Err(invalid_setting(
                container,
                "dependsOn",
                "A container cannot depend on itself.",
            ));
        }
        let Some(target) = task.container(target_name) else {
            return Err(invalid_setting(
                container,
                "dependsOn",
                format!("Container '{target_name}' is not a container of this task definition."),
            ));
        };
        match condition {
            ContainerCondition::Healthy if target.health_check.is_none() => {
                return Err(invalid_setting(
                    container,
                    "dependsOn",
                    format!("Container '{target_name}' has no healthCheck, which the HEALTHY condition needs."),
                ));
            }
            ContainerCondition::Success | ContainerCondition::Complete
                if target.essential.unwrap_or(true) =>
            {
                return Err(ApiError::client(format!(
                    "A dependency container with SUCCESS or COMPLETE condition cannot be an essential container: \
                     container '{}' waits for '{target_name}' to {}.",
                    container.name.as_deref().unwrap_or_default(),
                    if condition == ContainerCondition::Success { "succeed" } else { "complete" }
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_environment(container: &ContainerDefinition) -> Result<(), ApiError> {
    let unnamed = container
        .environment
        .iter()
        .flatten()
        .any(|variable| variable.name.as_deref().unwrap_or_default().is_empty());
    if unnamed {
        return Err(invalid_setting(
            container,
            "environment",
            "Environment variable names should not be null or empty.",
        ));
    }
    let incomplete_file =
        container.environment_files.iter().flatten().any(|file| {
            file.r#type.is_none() || file.value.as_deref().unwrap_or_default().is_empty()
        });
    if incomplete_file {
        return Err(invalid_setting(
            container,
            "environmentFiles",
            "Each environment file needs a type and a value.",
        ));
    }
    check_environment_files(container)
}

/// At most this many environment files per container, as ECS allows.
pub const ENVIRONMENT_FILES_MAX: usize = 10;

/// ECS's rules for `environmentFiles`: at most ten, each the ARN of an S3
/// object (`arn:aws:s3:::bucket/key`) with the `.env` extension. An absolute
/// path on the host is also taken: Flotilla's agent reads it from its disk.
fn check_environment_files(container: &ContainerDefinition) -> Result<(), ApiError> {
    let files = container.environment_files.as_deref().unwrap_or_default();
    if files.len() > ENVIRONMENT_FILES_MAX {
        return Err(invalid_setting(
            container,
            "environmentFiles",
            format!(
                "You can specify up to {ENVIRONMENT_FILES_MAX} environment files; {} were given.",
                files.len()
            ),
        ));
    }
    for value in files.iter().filter_map(|file| file.value.as_deref()) {
        let is_local = value.starts_with('/') || value.starts_with("file:///");
        if !is_local && flotilla_types::arn::s3_object(value).is_none() {
            return Err(invalid_setting(
                container,
                "environmentFiles",
                format!(
                    "The value {value} is not the ARN of an S3 object (arn:aws:s3:::bucket/key)."
                ),
            ));
        }
        if !value.ends_with(".env") {
            return Err(invalid_setting(
                container,
                "environmentFiles",
                format!("The file {value} must have a .env file extension."),
            ));
        }
    }
    Ok(())
}

fn check_secrets(container: &ContainerDefinition) -> Result<(), ApiError> {
    let incomplete = |secrets: Option<&Vec<Secret>>| {
        secrets.into_iter().flatten().any(|secret| {
            secret.name.as_deref().unwrap_or_default().is_empty()
                || secret.value_from.as_deref().unwrap_or_default().is_empty()
        })
    };
    if incomplete(container.secrets.as_ref()) {
        return Err(invalid_setting(
            container,
            "secrets",
            "Each secret needs a name and a valueFrom.",
        ));
    }
    let log_secrets = container
        .log_configuration
        .as_ref()
        .and_then(|log| log.secret_options.as_ref());
    if incomplete(log_secrets) {
        return Err(invalid_setting(
            container,
            "logConfiguration.secretOptions",
            "Each secret option needs a name and a valueFrom.",
        ));
    }
    Ok(())
}

fn check_health_check(container: &ContainerDefinition) -> Result<(), ApiError> {
    let Some(health_check) = &container.health_check else {
        return Ok(());
    };
    let command = health_check.command.as_deref().unwrap_or_default();
    let kind = command.first().map(String::as_str);
    let runnable = match kind {
        Some("CMD") | Some("CMD-SHELL") => command.len() >= 2,
        Some("NONE") => true,
        _ => false,
    };
    if !runnable {
        return Err(invalid_setting(
            container,
            "healthCheck",
            "The command must start with CMD (followed by the command and its arguments), CMD-SHELL (followed by a shell command) or NONE.",
        ));
    }
    let bounds = [
        (
            "interval",
            health_check.interval,
            HEALTH_CHECK_INTERVAL_SECONDS,
            " seconds",
        ),
        (
            "timeout",
            health_check.timeout,
            HEALTH_CHECK_TIMEOUT_SECONDS,
            " seconds",
        ),
        ("retries", health_check.retries, HEALTH_CHECK_RETRIES, ""),
        (
            "startPeriod",
            health_check.start_period,
            HEALTH_CHECK_START_PERIOD_SECONDS,
            " seconds",
        ),
    ];
    for (field, value, (min, max), unit) in bounds {
        if let Some(value) = value.filter(|v| !(min..=max).contains(v)) {
            return Err(invalid_setting(
                container,
                "healthCheck",
                format!("{field} must be between {min} and {max}{unit}, got {value}."),
            ));
        }
    }
    Ok(())
}

fn check_ulimits(container: &ContainerDefinition) -> Result<(), ApiError> {
    for ulimit in container.ulimits.iter().flatten() {
        let (Some(name), Some(soft), Some(hard)) =
            (ulimit.name, ulimit.soft_limit, ulimit.hard_limit)
        else {
            return Err(invalid_setting(
                container,
                "ulimits",
                "Each ulimit needs a name, a softLimit and a hardLimit.",
            ));
        };
        if soft > hard {
            return Err(invalid_setting(
                container,
                "ulimits",
                format!("The softLimit ({soft}) of ulimit '{name}' must not be greater than its hardLimit ({hard})."),
            ));
        }
    }
    Ok(())
}

/// Options the awslogs driver cannot work without, in the order ECS names them.
const AWSLOGS_REQUIRED_OPTIONS: &[&str] = &["awslogs-region", "awslogs-group"];

fn check_log_configuration(container: &ContainerDefinition) -> Result<(), ApiError> {
    let Some(log) = &container.log_configuration else {
        return Ok(());
    };
    let Some(driver) = log.log_driver else {
        return Err(invalid_setting(
            container,
            "logConfiguration",
            "logDriver is required.",
        ));
    };
    if driver == LogDriver::Awslogs {
        let options = log.options.as_ref();
        let missing: Vec<&str> = AWSLOGS_REQUIRED_OPTIONS
            .iter()
            .copied()
            .filter(|option| {
                options
                    .and_then(|o| o.get(*option))
                    .is_none_or(|value| value.is_empty())
            })
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::client(format!(
                "Log driver awslogs requires options: {} (container '{}').",
                missing.join(", "),
                container.name.as_deref().unwrap_or_default()
            )));
        }
        check_awslogs_options(container, options)?;
    }
    if let Some(mode) = log.options.as_ref().and_then(|o| o.get(awslogs::MODE)) {
        if awslogs::Mode::parse(mode).is_none() {
            return Err(log_option_error(
                container,
                driver,
                awslogs::MODE,
                format!("must be blocking or non-blocking, got '{mode}'"),
            ));
        }
    }
    if let Some(size) = log
        .options
        .as_ref()
        .and_then(|o| o.get(awslogs::MAX_BUFFER_SIZE))
    {
        if awslogs::parse_size_bytes(size).is_none_or(|bytes| bytes == 0) {
            return Err(log_option_error(
                container,
                driver,
                awslogs::MAX_BUFFER_SIZE,
                format!("must be a size such as 4m, got '{size}'"),
            ));
        }
    }
    Ok(())
}

/// The awslogs options ECS accepts, and values the agent could not act on.
fn check_awslogs_options(
    container: &ContainerDefinition,
    options: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<(), ApiError> {
    let Some(options) = options else {
        return Ok(());
    };
    let disallowed: Vec<&str> = options
        .keys()
        .map(String::as_str)
        .filter(|name| !awslogs::OPTIONS.contains(name))
        .collect();
    if !disallowed.is_empty() {
        return Err(ApiError::client(format!(
            "Log driver awslogs disallows options: {}",
            disallowed.join(", ")
        )));
    }
    if let Some(create) = options.get(awslogs::CREATE_GROUP) {
        if awslogs::parse_bool(create).is_none() {
            return Err(log_option_error(
                container,
                LogDriver::Awslogs,
                awslogs::CREATE_GROUP,
                format!("must be true or false, got '{create}'"),
            ));
        }
    }
    if options.contains_key(awslogs::DATETIME_FORMAT)
        && options.contains_key(awslogs::MULTILINE_PATTERN)
    {
        return Err(ApiError::client(format!(
            "Log driver awslogs cannot take options {} and {} together (container '{}').",
            awslogs::DATETIME_FORMAT,
            awslogs::MULTILINE_PATTERN,
            container.name.as_deref().unwrap_or_default()
        )));
    }
    if let Some(format) = options.get(awslogs::DATETIME_FORMAT) {
        if let Err(directive) = awslogs::datetime_format_pattern(format) {
            return Err(log_option_error(
                container,
                LogDriver::Awslogs,
                awslogs::DATETIME_FORMAT,
                format!("has a directive Flotilla does not know: {directive}"),
            ));
        }
    }
    Ok(())
}

fn log_option_error(
    container: &ContainerDefinition,
    driver: LogDriver,
    option: &str,
    why: String,
) -> ApiError {
    ApiError::client(format!(
        "Log driver {driver} option '{option}' {why} (container '{}').",
        container.name.as_deref().unwrap_or_default()
    ))
}

fn check_linux_parameters(container: &ContainerDefinition) -> Result<(), ApiError> {
    let Some(linux) = &container.linux_parameters else {
        return Ok(());
    };
    if linux
        .devices
        .iter()
        .flatten()
        .any(|device| device.host_path.as_deref().unwrap_or_default().is_empty())
    {
        return Err(invalid_setting(
            container,
            "linuxParameters",
            "Each device needs a hostPath.",
        ));
    }
    let bad_tmpfs = linux.tmpfs.iter().flatten().any(|tmpfs| {
        tmpfs
            .container_path
            .as_deref()
            .unwrap_or_default()
            .is_empty()
            || tmpfs.size.is_none_or(|size| size <= 0)
    });
    if bad_tmpfs {
        return Err(invalid_setting(
            container,
            "linuxParameters",
            "Each tmpfs mount needs a containerPath and a size above 0 MiB.",
        ));
    }
    if let Some(size) = linux.shared_memory_size.filter(|size| *size <= 0) {
        return Err(invalid_setting(
            container,
            "linuxParameters",
            format!("sharedMemorySize must be above 0 MiB, got {size}."),
        ));
    }
    if let Some(swap) = linux.max_swap.filter(|swap| *swap < 0) {
        return Err(invalid_setting(
            container,
            "linuxParameters",
            format!("maxSwap must not be negative, got {swap}."),
        ));
    }
    if let Some(swappiness) = linux
        .swappiness
        .filter(|s| !(SWAPPINESS.0..=SWAPPINESS.1).contains(s))
    {
        return Err(invalid_setting(
            container,
            "linuxParameters",
            format!(
                "swappiness must be between {} and {}, got {swappiness}.",
                SWAPPINESS.0, SWAPPINESS.1
            ),
        ));
    }
    Ok(())
}

fn check_resource_requirements(
    container: &ContainerDefinition,
    task: &TaskContext,
) -> Result<(), ApiError> {
    for requirement in container.resource_requirements.iter().flatten() {
        let value = requirement.value.as_deref().unwrap_or_default();
        let valid = match requirement.r#type {
            None => false,
            Some(ResourceType::Gpu) | Some(ResourceType::NeuronDevice) => {
                value.parse::<u32>().is_ok_and(|n| n > 0)
            }
            Some(ResourceType::InferenceAccelerator) => task.accelerator_names.contains(value),
        };
        if !valid {
            return Err(invalid_setting(
                container,
                "resourceRequirements",
                format!(
                    "{value:?} is not valid: GPU needs a number of GPUs above 0, InferenceAccelerator \
                     the deviceName of one of the task's inferenceAccelerators."
                ),
            ));
        }
    }
    Ok(())
}

fn check_restart_policy(container: &ContainerDefinition) -> Result<(), ApiError> {
    let Some(policy) = &container.restart_policy else {
        return Ok(());
    };
    if policy.enabled.is_none() {
        return Err(invalid_setting(
            container,
            "restartPolicy",
            "enabled is required.",
        ));
    }
    let (min, max) = RESTART_ATTEMPT_PERIOD_SECONDS;
    if let Some(period) = policy
        .restart_attempt_period
        .filter(|p| !(min..=max).contains(p))
    {
        return Err(invalid_setting(
            container,
            "restartPolicy",
            format!("restartAttemptPeriod must be between {min} and {max} seconds, got {period}."),
        ));
    }
    let codes = policy.ignored_exit_codes.as_ref().map_or(0, Vec::len);
    if codes > RESTART_IGNORED_EXIT_CODES_MAX {
        return Err(invalid_setting(
            container,
            "restartPolicy",
            format!("At most {RESTART_IGNORED_EXIT_CODES_MAX} ignoredExitCodes are allowed, got {codes}."),
        ));
    }
    Ok(())
}

/// Members botocore marks required inside a container definition that the
/// checks above do not already cover.
fn check_other_required_members(container: &ContainerDefinition) -> Result<(), ApiError> {
    if let Some(credentials) = &container.repository_credentials {
        if credentials
            .credentials_parameter
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            return Err(invalid_setting(
                container,
                "repositoryCredentials",
                "credentialsParameter is required.",
            ));
        }
    }
    let incomplete_host = container
        .extra_hosts
        .iter()
        .flatten()
        .any(|host| host.missing_required().is_some());
    if incomplete_host {
        return Err(invalid_setting(
            container,
            "extraHosts",
            "Each extra host needs a hostname and an ipAddress.",
        ));
    }
    let negative_timeout = [container.start_timeout, container.stop_timeout]
        .into_iter()
        .flatten()
        .find(|t| *t < 0);
    if let Some(timeout) = negative_timeout {
        return Err(invalid_setting(
            container,
            "startTimeout",
            format!("Timeouts must not be negative, got {timeout}."),
        ));
    }
    Ok(())
}
