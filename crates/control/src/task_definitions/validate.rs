//! RegisterTaskDefinition's validation, rule by rule as ECS applies it.
//! Every failure is a ClientException naming the field at fault; where ECS's
//! own wording is known it is used verbatim, so that scripts matching on it
//! keep working.
//!
//! Launch-type rules (what Fargate or EXTERNAL cannot run) live in
//! `compatibility`, because the same rules decide `compatibilities`.
//! Enumerated values (protocols, ulimit names, pidMode, placement constraint
//! types, ...) are typed in the wire shapes, so a value outside the set is
//! refused while the request is decoded, before it reaches this module.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_types::ecs::{
    Compatibility, ContainerDefinition, NetworkMode, RegisterTaskDefinitionRequest, Volume,
};
use flotilla_types::ApiError;

use super::size;

mod container;

/// ECS's limit on the size of a task definition.
pub const TASK_DEFINITION_BYTES_MAX: usize = 64 * 1024;
pub const FAMILY_LENGTH_MAX: usize = 255;
pub const CONTAINERS_PER_TASK_DEFINITION_MAX: usize = 10;
const CONTAINER_NAME_LENGTH_MAX: usize = 255;
const VOLUME_NAME_LENGTH_MAX: usize = 255;
const PLACEMENT_CONSTRAINTS_MAX: usize = 10;
/// The longest cluster query language expression ECS accepts.
const PLACEMENT_EXPRESSION_LENGTH_MAX: usize = 2_000;
const EPHEMERAL_STORAGE_GIB: (i32, i32) = (21, 200);

/// What validation learned that registration needs: the task size in the
/// units ECS stores it in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskSize {
    pub cpu_units: Option<u32>,
    pub memory_mib: Option<u32>,
}

/// Checks a whole request; nothing is stored unless this passes.
pub fn check(request: &RegisterTaskDefinitionRequest) -> Result<TaskSize, ApiError> {
    check_request_size(request)?;
    check_family(request.family.as_deref().unwrap_or_default())?;
    let containers = request.container_definitions.as_deref().unwrap_or_default();
    check_container_count(containers)?;
    let size = TaskSize {
        cpu_units: request
            .cpu
            .as_deref()
            .map(size::parse_task_cpu)
            .transpose()?,
        memory_mib: request
            .memory
            .as_deref()
            .map(size::parse_task_memory)
            .transpose()?,
    };
    let volumes = request.volumes.as_deref().unwrap_or_default();
    check_volumes(volumes)?;
    check_container_names(containers)?;
    let task = TaskContext {
        network_mode: request.network_mode.unwrap_or(NetworkMode::Bridge),
        volumes,
        containers,
        size,
        fargate_required: requires(request, Compatibility::Fargate),
        accelerator_names: request
            .inference_accelerators
            .iter()
            .flatten()
            .filter_map(|accelerator| accelerator.device_name.as_deref())
            .collect(),
    };
    for container in containers {
        container::check_container(container, &task)?;
    }
    check_essential(containers)?;
    check_dependency_cycles(containers)?;
    check_task_totals(containers, size)?;
    check_placement_constraints(request)?;
    check_proxy_configuration(request, &task)?;
    check_inference_accelerators(request)?;
    check_ephemeral_storage(request)?;
    crate::tags::check_tags(request.tags.as_deref().unwrap_or_default())?;
    Ok(size)
}

pub fn requires(request: &RegisterTaskDefinitionRequest, compatibility: Compatibility) -> bool {
    request
        .requires_compatibilities
        .iter()
        .flatten()
        .any(|c| *c == compatibility)
}

/// What the checks of one container need to know about the rest of the task.
struct TaskContext<'a> {
    network_mode: NetworkMode,
    volumes: &'a [Volume],
    containers: &'a [ContainerDefinition],
    size: TaskSize,
    fargate_required: bool,
    accelerator_names: BTreeSet<&'a str>,
}

impl TaskContext<'_> {
    fn container(&self, name: &str) -> Option<&ContainerDefinition> {
        self.containers
            .iter()
            .find(|c| c.name.as_deref() == Some(name))
    }
}

fn invalid_setting(
    container: &ContainerDefinition,
    field: &str,
    why: impl std::fmt::Display,
) -> ApiError {
    let name = container.name.as_deref().unwrap_or_default();
    ApiError::client(format!(
        "Invalid '{field}' setting for container '{name}'. {why}"
    ))
}

fn is_name_character(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Whether `name` is a valid family, container or volume name.
pub fn is_valid_name(name: &str, length_max: usize) -> bool {
    !name.is_empty() && name.len() <= length_max && name.chars().all(is_name_character)
}

fn check_request_size(request: &RegisterTaskDefinitionRequest) -> Result<(), ApiError> {
    let length = serde_json::to_vec(request).map_or(0, |bytes| bytes.len());
    if length > TASK_DEFINITION_BYTES_MAX {
        return Err(ApiError::client(format!(
            "Actual length: '{length}'. Max allowed length is '{TASK_DEFINITION_BYTES_MAX}' bytes: \
             the task definition is too large."
        )));
    }
    Ok(())
}

pub fn check_family(family: &str) -> Result<(), ApiError> {
    if family.trim().is_empty() {
        return Err(ApiError::client("Family can not be blank."));
    }
    if family.len() > FAMILY_LENGTH_MAX {
        return Err(ApiError::client(format!(
            "Family is too long: at most {FAMILY_LENGTH_MAX} characters are allowed."
        )));
    }
    if !family.chars().all(is_name_character) {
        return Err(ApiError::client(
            "Family contains invalid characters. Up to 255 letters (uppercase and lowercase), \
             numbers, underscores, and hyphens are allowed.",
        ));
    }
    Ok(())
}

fn check_container_count(containers: &[ContainerDefinition]) -> Result<(), ApiError> {
    if containers.is_empty() {
        return Err(ApiError::client("Container list cannot be empty."));
    }
    if containers.len() > CONTAINERS_PER_TASK_DEFINITION_MAX {
        return Err(ApiError::client(format!(
            "Too many containers. A task definition can have at most \
             {CONTAINERS_PER_TASK_DEFINITION_MAX} containerDefinitions, got {}.",
            containers.len()
        )));
    }
    Ok(())
}

fn check_container_names(containers: &[ContainerDefinition]) -> Result<(), ApiError> {
    let mut seen = BTreeSet::new();
    for container in containers {
        let name = container.name.as_deref().unwrap_or_default();
        if name.is_empty() {
            return Err(ApiError::client(
                "Container.name should not be null or empty.",
            ));
        }
        if !is_valid_name(name, CONTAINER_NAME_LENGTH_MAX) {
            return Err(ApiError::client(format!(
                "Container.name contains invalid characters: {name:?}. Up to \
                 {CONTAINER_NAME_LENGTH_MAX} letters, numbers, underscores, and hyphens are allowed."
            )));
        }
        if !seen.insert(name) {
            return Err(ApiError::client(format!(
                "Container names must be unique within a Task Definition: '{name}' is used twice."
            )));
        }
    }
    Ok(())
}

fn check_volumes(volumes: &[Volume]) -> Result<(), ApiError> {
    let mut seen = BTreeSet::new();
    for volume in volumes {
        let name = volume.name.as_deref().unwrap_or_default();
        if !is_valid_name(name, VOLUME_NAME_LENGTH_MAX) {
            return Err(ApiError::client(format!(
                "Invalid volume name {name:?}: up to {VOLUME_NAME_LENGTH_MAX} letters, numbers, \
                 underscores, and hyphens are allowed."
            )));
        }
        if !seen.insert(name) {
            return Err(ApiError::client(format!(
                "Volume names must be unique within a Task Definition: '{name}' is used twice."
            )));
        }
        if let Some(efs) = &volume.efs_volume_configuration {
            if efs.file_system_id.as_deref().unwrap_or_default().is_empty() {
                return Err(ApiError::client(format!(
                    "Invalid efsVolumeConfiguration for volume '{name}': fileSystemId is required."
                )));
            }
        }
        if let Some(fsx) = &volume.fsx_windows_file_server_volume_configuration {
            if let Some(member) = fsx.missing_required() {
                return Err(ApiError::client(format!(
                    "Invalid fsxWindowsFileServerVolumeConfiguration for volume '{name}': {member} is required."
                )));
            }
        }
    }
    Ok(())
}

fn check_essential(containers: &[ContainerDefinition]) -> Result<(), ApiError> {
    if containers
        .iter()
        .any(|container| container.essential.unwrap_or(true))
    {
        Ok(())
    } else {
        Err(ApiError::client(
            "Task definition does not have any essential container.",
        ))
    }
}

/// Refuses `dependsOn` edges that form a cycle: such containers could never
/// start. Targets are known to exist (checked per container).
fn check_dependency_cycles(containers: &[ContainerDefinition]) -> Result<(), ApiError> {
    let edges: BTreeMap<&str, Vec<&str>> = containers
        .iter()
        .map(|container| {
            let targets = container
                .depends_on
                .iter()
                .flatten()
                .filter_map(|dependency| dependency.container_name.as_deref())
                .collect();
            (container.name.as_deref().unwrap_or_default(), targets)
        })
        .collect();
    for start in edges.keys() {
        let mut path = vec![*start];
        if let Some(cycle) = find_cycle(&edges, &mut path) {
            return Err(ApiError::client(format!(
                "Invalid 'dependsOn' setting: containers {} depend on each other in a cycle.",
                cycle
                    .iter()
                    .map(|name| format!("'{name}'"))
                    .collect::<Vec<_>>()
                    .join(" -> ")
            )));
        }
    }
    Ok(())
}

/// Depth-first walk from the last container of `path`; the recursion depth
/// is bounded by the number of containers, at most ten.
fn find_cycle<'a>(
    edges: &BTreeMap<&'a str, Vec<&'a str>>,
    path: &mut Vec<&'a str>,
) -> Option<Vec<&'a str>> {
    let current = *path.last()?;
    for next in edges.get(current).into_iter().flatten() {
        if path.first() == Some(next) {
            let mut cycle = path.clone();
            cycle.push(next);
            return Some(cycle);
        }
        if path.contains(next) {
            continue;
        }
        path.push(next);
        if let Some(cycle) = find_cycle(edges, path) {
            return Some(cycle);
        }
        path.pop();
    }
    None
}

/// Containers share the task's CPU and memory when the task sets them.
fn check_task_totals(containers: &[ContainerDefinition], size: TaskSize) -> Result<(), ApiError> {
    if let Some(task_cpu) = size.cpu_units {
        let total: i64 = containers
            .iter()
            .map(|c| i64::from(c.cpu.unwrap_or(0)))
            .sum();
        if total > i64::from(task_cpu) {
            return Err(ApiError::client(format!(
                "The sum of all container 'cpu' values cannot be greater than the value of the task 'cpu': \
                 the containers ask for {total} CPU units, the task has {task_cpu}."
            )));
        }
    }
    let Some(task_memory) = size.memory_mib else {
        return Ok(());
    };
    for container in containers {
        let name = container.name.as_deref().unwrap_or_default();
        let settings = [
            ("memory", container.memory),
            ("memoryReservation", container.memory_reservation),
        ];
        for (field, value) in settings {
            if let Some(value) = value.filter(|v| i64::from(*v) > i64::from(task_memory)) {
                return Err(ApiError::client(format!(
                    "The '{field}' setting for container '{name}' is greater than for the task: \
                     {value} MiB against {task_memory} MiB."
                )));
            }
        }
    }
    // A container may use up to its hard limit, so that is what must fit;
    // a container with only a reservation counts its reservation.
    let total: i64 = containers
        .iter()
        .map(|c| i64::from(c.memory.or(c.memory_reservation).unwrap_or(0)))
        .sum();
    if total > i64::from(task_memory) {
        return Err(ApiError::client(format!(
            "The sum of the memory of all containers ({total} MiB) exceeds the task memory \
             ({task_memory} MiB): the sum of all container 'memory' values (or 'memoryReservation' \
             where no 'memory' is set) cannot be greater than the value of the task 'memory'."
        )));
    }
    Ok(())
}

fn check_placement_constraints(request: &RegisterTaskDefinitionRequest) -> Result<(), ApiError> {
    let constraints = request.placement_constraints.as_deref().unwrap_or_default();
    if constraints.len() > PLACEMENT_CONSTRAINTS_MAX {
        return Err(ApiError::client(format!(
            "Too many placementConstraints: a task definition can have at most \
             {PLACEMENT_CONSTRAINTS_MAX}, got {}.",
            constraints.len()
        )));
    }
    for constraint in constraints {
        if constraint.r#type.is_none() {
            return Err(ApiError::client(
                "Invalid placementConstraints: type is required and must be memberOf.",
            ));
        }
        let expression = constraint.expression.as_deref().unwrap_or_default();
        if expression.trim().is_empty() {
            return Err(ApiError::client(
                "Invalid placementConstraints: a memberOf constraint needs an expression.",
            ));
        }
        if expression.len() > PLACEMENT_EXPRESSION_LENGTH_MAX {
            return Err(ApiError::client(format!(
                "Invalid placementConstraints: the expression is longer than {PLACEMENT_EXPRESSION_LENGTH_MAX} characters."
            )));
        }
    }
    Ok(())
}

fn check_proxy_configuration(
    request: &RegisterTaskDefinitionRequest,
    task: &TaskContext,
) -> Result<(), ApiError> {
    let Some(proxy) = &request.proxy_configuration else {
        return Ok(());
    };
    let name = proxy.container_name.as_deref().unwrap_or_default();
    if task.container(name).is_none() {
        return Err(ApiError::client(format!(
            "Invalid proxyConfiguration: containerName '{name}' is not a container of this task definition."
        )));
    }
    if task.network_mode != NetworkMode::Awsvpc {
        return Err(ApiError::client(format!(
            "Invalid proxyConfiguration: it requires networkMode awsvpc, not {}.",
            task.network_mode
        )));
    }
    Ok(())
}

fn check_inference_accelerators(request: &RegisterTaskDefinitionRequest) -> Result<(), ApiError> {
    let mut seen = BTreeSet::new();
    for accelerator in request.inference_accelerators.iter().flatten() {
        if let Some(member) = accelerator.missing_required() {
            return Err(ApiError::client(format!(
                "Invalid inferenceAccelerators: {member} is required."
            )));
        }
        let name = accelerator.device_name.as_deref().unwrap_or_default();
        if !seen.insert(name) {
            return Err(ApiError::client(format!(
                "Invalid inferenceAccelerators: deviceName '{name}' is used twice."
            )));
        }
    }
    Ok(())
}

fn check_ephemeral_storage(request: &RegisterTaskDefinitionRequest) -> Result<(), ApiError> {
    let Some(storage) = &request.ephemeral_storage else {
        return Ok(());
    };
    let (min, max) = EPHEMERAL_STORAGE_GIB;
    match storage.size_in_gi_b {
        Some(size) if (min..=max).contains(&size) => Ok(()),
        size => Err(ApiError::client(format!(
            "Invalid ephemeralStorage: sizeInGiB must be between {min} and {max}, got {}.",
            size.map_or("nothing".to_owned(), |s| s.to_string())
        ))),
    }
}
