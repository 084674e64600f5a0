//! The pure translation from a task's ECS container definitions to the
//! runtime's [`ContainerSpec`]s.
//!
//! Everything that needs I/O (the pause container's id, the engine names of
//! sibling containers, the contents of environment files, the metadata
//! endpoint's address) is resolved beforehand and passed in, so the whole
//! mapping is checked by plain unit tests.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_runtime::{
    labels, ContainerSpec, HealthCheck, Mount, NetworkMode, PortBinding, Protocol, Ulimit,
};
use flotilla_types::ecs::{
    ContainerDefinition, ContainerOverride, NetworkBinding, NetworkMode as EcsNetworkMode, Scope,
    TaskDefinition, TransportProtocol,
};

/// ECS's default for `ECS_CONTAINER_STOP_TIMEOUT`.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Docker's (and ECS's) health check defaults.
pub const DEFAULT_HEALTH_INTERVAL_SECONDS: u64 = 30;
pub const DEFAULT_HEALTH_TIMEOUT_SECONDS: u64 = 5;
pub const DEFAULT_HEALTH_RETRIES: u32 = 3;
/// The least CPU shares the kernel honours; ECS's agent gives this to a
/// container whose `cpu` is 0 or unset.
pub const MIN_CPU_SHARES: u64 = 2;
/// Engine names are capped well under Docker's limit so that long family and
/// container names cannot make a create fail.
pub const ENGINE_NAME_MAX_LEN: usize = 200;

const MIB: u64 = 1024 * 1024;

/// Extra labels Flotilla puts next to `flotilla_runtime::labels`.
pub mod extra_labels {
    /// The instance that created the container, so two agents on one engine
    /// never collect each other's containers.
    pub const INSTANCE_ID: &str = "com.flotilla.instance-id";
    /// ECS's own labels, which tools built for ECS read.
    pub const ECS_CLUSTER: &str = "com.amazonaws.ecs.cluster";
    pub const ECS_TASK_ARN: &str = "com.amazonaws.ecs.task-arn";
    pub const ECS_CONTAINER_NAME: &str = "com.amazonaws.ecs.container-name";
    pub const ECS_FAMILY: &str = "com.amazonaws.ecs.task-definition-family";
    pub const ECS_REVISION: &str = "com.amazonaws.ecs.task-definition-version";
}

/// Why a container definition cannot be run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("container definition has no {field}")]
    Missing { field: &'static str },
    #[error("container {container}: {what} is not supported by this agent")]
    Unsupported { container: String, what: String },
    #[error("container {container} mounts volume {volume}, which the task does not define")]
    UnknownVolume { container: String, volume: String },
    #[error("container {container} refers to container {other}, which the task does not define")]
    UnknownContainer { container: String, other: String },
    #[error("port {port} of container {container} is out of range")]
    BadPort { container: String, port: i32 },
}

/// How the task's containers are networked, with what each mode needs resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskNetwork {
    Bridge,
    Host,
    None,
    /// Every container joins the pause container's network namespace.
    Awsvpc {
        pause_container_id: String,
    },
}

/// Where one of the task's volumes lives on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeSource {
    /// A host path bind-mounted as is.
    HostPath(String),
    /// An engine volume: created for this task and removed after it
    /// (`task_scoped`), or shared between tasks.
    Named {
        engine_name: String,
        task_scoped: bool,
        autoprovision: bool,
        labels: BTreeMap<String, String>,
    },
}

/// The task-level facts every container's spec needs.
#[derive(Clone, Debug)]
pub struct TaskContext<'a> {
    pub cluster_label: &'a str,
    pub cluster_arn: &'a str,
    pub instance_id: &'a str,
    pub task_arn: &'a str,
    pub task_id: &'a str,
    pub family: &'a str,
    pub revision: i32,
    pub network: &'a TaskNetwork,
    /// Task-level memory in MiB: the hard limit of containers that set none.
    pub task_memory_mib: Option<u64>,
    /// Task-level CPU units, when the task is a Fargate one: every
    /// container's hard CPU limit. `None` leaves CPU to shares alone.
    pub fargate_cpu_units: Option<u64>,
    pub volumes: &'a BTreeMap<String, VolumeSource>,
    /// Engine names of the task's containers, by container name (for links).
    pub engine_names: &'a BTreeMap<String, String>,
    /// Engine ids of the task's containers created so far (for volumesFrom).
    pub engine_ids: &'a BTreeMap<String, String>,
}

/// The per-container facts resolved by the caller.
#[derive(Clone, Debug, Default)]
pub struct ContainerContext<'a> {
    /// `http://host:port` of the task metadata endpoint, when it runs.
    pub metadata_base_url: Option<&'a str>,
    pub metadata_token: &'a str,
    /// Variables from the container's environment files, in file order.
    pub environment_file_variables: &'a [(String, String)],
    /// The container's `secrets`, resolved (`crate::secrets`).
    pub secrets: Option<&'a crate::secrets::ResolvedSecrets>,
    /// `/v2/credentials/{id}`, for a task with a task role.
    pub credentials_relative_uri: Option<&'a str>,
    /// The control plane's API as the container reaches it.
    pub aws_endpoint_url: Option<&'a str>,
    pub region: Option<&'a str>,
}

/// The task's network mode; ECS's default on Linux EC2 is bridge.
pub fn network_mode_of(definition: &TaskDefinition) -> EcsNetworkMode {
    definition.network_mode.unwrap_or(EcsNetworkMode::Bridge)
}

/// The engine-side name of a container: ECS's `ecs-{family}-{revision}-{name}-`
/// shape with the task id in place of its random suffix, reduced to the
/// characters Docker accepts.
pub fn engine_container_name(
    family: &str,
    revision: i32,
    container: &str,
    task_id: &str,
) -> String {
    let raw = format!("ecs-{family}-{revision}-{container}-{task_id}");
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(ENGINE_NAME_MAX_LEN);
    name
}

/// The engine name of the pause container of an awsvpc task.
pub fn pause_container_name(family: &str, revision: i32, task_id: &str) -> String {
    engine_container_name(family, revision, "internalecspause", task_id)
}

/// The task id: the last path element of its ARN.
pub fn task_id_of(task_arn: &str) -> &str {
    task_arn.rsplit('/').next().unwrap_or(task_arn)
}

/// Where each of the task's volumes lives. EFS and FSx need mount helpers
/// this agent does not have, so they are refused.
pub fn resolve_volumes(
    definition: &TaskDefinition,
    task_id: &str,
) -> Result<BTreeMap<String, VolumeSource>, SpecError> {
    let mut resolved = BTreeMap::new();
    for volume in definition.volumes.iter().flatten() {
        let name = volume.name.clone().ok_or(SpecError::Missing {
            field: "volume name",
        })?;
        let unsupported = |what: &str| SpecError::Unsupported {
            container: format!("(volume {name})"),
            what: what.to_owned(),
        };
        if volume.efs_volume_configuration.is_some() {
            return Err(unsupported("an EFS volume"));
        }
        if volume
            .fsx_windows_file_server_volume_configuration
            .is_some()
        {
            return Err(unsupported("an FSx volume"));
        }
        let source = if let Some(docker) = &volume.docker_volume_configuration {
            if docker
                .driver
                .as_deref()
                .is_some_and(|driver| driver != "local")
            {
                return Err(unsupported("a volume driver other than local"));
            }
            let task_scoped = docker.scope.unwrap_or(Scope::Task) == Scope::Task;
            let engine_name = if task_scoped {
                sanitize(&format!("flotilla-{task_id}-{name}"))
            } else {
                name.clone()
            };
            VolumeSource::Named {
                engine_name,
                task_scoped,
                autoprovision: docker.autoprovision.unwrap_or(false),
                labels: docker.labels.clone().unwrap_or_default(),
            }
        } else if let Some(path) = volume
            .host
            .as_ref()
            .and_then(|host| host.source_path.clone())
        {
            VolumeSource::HostPath(path)
        } else {
            // A host volume without a source path is scratch space the engine
            // manages for the task's lifetime, as in ECS.
            VolumeSource::Named {
                engine_name: sanitize(&format!("flotilla-{task_id}-{name}")),
                task_scoped: true,
                autoprovision: true,
                labels: BTreeMap::new(),
            }
        };
        resolved.insert(name, source);
    }
    Ok(resolved)
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Parses an environment file: `KEY=VALUE` lines; blank lines and lines
/// starting with `#` are skipped, as Docker's `--env-file` does.
pub fn parse_environment_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|line| line.trim_start())
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            let key = key.trim();
            (!key.is_empty()).then(|| (key.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The override for `container`, if the task's overrides name it.
pub fn override_for<'a>(
    overrides: Option<&'a [ContainerOverride]>,
    container: &str,
) -> Option<&'a ContainerOverride> {
    overrides?
        .iter()
        .find(|entry| entry.name.as_deref() == Some(container))
}

/// Labels that identify a container as this task's.
pub fn identity_labels(task: &TaskContext<'_>, container: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::CLUSTER.to_owned(), task.cluster_label.to_owned()),
        (labels::TASK_ARN.to_owned(), task.task_arn.to_owned()),
        (labels::CONTAINER_NAME.to_owned(), container.to_owned()),
        (
            extra_labels::INSTANCE_ID.to_owned(),
            task.instance_id.to_owned(),
        ),
        (
            extra_labels::ECS_CLUSTER.to_owned(),
            task.cluster_arn.to_owned(),
        ),
        (
            extra_labels::ECS_TASK_ARN.to_owned(),
            task.task_arn.to_owned(),
        ),
        (
            extra_labels::ECS_CONTAINER_NAME.to_owned(),
            container.to_owned(),
        ),
        (extra_labels::ECS_FAMILY.to_owned(), task.family.to_owned()),
        (
            extra_labels::ECS_REVISION.to_owned(),
            task.revision.to_string(),
        ),
    ])
}

/// The spec of one container of the task.
pub fn container_spec(
    task: &TaskContext<'_>,
    container: &ContainerContext<'_>,
    definition: &ContainerDefinition,
    override_: Option<&ContainerOverride>,
) -> Result<ContainerSpec, SpecError> {
    let name = definition
        .name
        .clone()
        .ok_or(SpecError::Missing { field: "name" })?;
    let image = definition
        .image
        .clone()
        .ok_or(SpecError::Missing { field: "image" })?;
    let unsupported = |what: &str| SpecError::Unsupported {
        container: name.clone(),
        what: what.to_owned(),
    };
    if definition
        .secrets
        .as_ref()
        .is_some_and(|secrets| !secrets.is_empty())
        && container.secrets.is_none()
    {
        return Err(unsupported("secrets that were not resolved"));
    }
    // Resolved, but no log driver here takes secret options yet: refused rather
    // than dropped.
    if container
        .secrets
        .is_some_and(|secrets| !secrets.log_options.is_empty())
    {
        return Err(unsupported(
            "logConfiguration.secretOptions (no log driver of this agent takes secret options yet)",
        ));
    }

    let mut spec = ContainerSpec {
        name: engine_container_name(task.family, task.revision, &name, task.task_id),
        image,
        entry_point: definition.entry_point.clone(),
        command: override_
            .and_then(|o| o.command.clone())
            .or_else(|| definition.command.clone()),
        working_directory: definition.working_directory.clone(),
        user: definition.user.clone(),
        read_only_root_filesystem: definition.readonly_root_filesystem.unwrap_or(false),
        privileged: definition.privileged.unwrap_or(false),
        ..ContainerSpec::default()
    };

    spec.environment = environment(container, definition, override_);

    let mut labels = definition.docker_labels.clone().unwrap_or_default();
    labels.extend(identity_labels(task, &name));
    spec.labels = labels;

    let cpu = override_
        .and_then(|o| o.cpu)
        .or(definition.cpu)
        .unwrap_or(0);
    spec.cpu_shares = Some(u64::try_from(cpu).unwrap_or(0).max(MIN_CPU_SHARES));
    let memory_mib = override_
        .and_then(|o| o.memory)
        .or(definition.memory)
        .and_then(positive_mib);
    let reservation_mib = override_
        .and_then(|o| o.memory_reservation)
        .or(definition.memory_reservation)
        .and_then(positive_mib);
    spec.memory_bytes = memory_mib
        .or(if reservation_mib.is_none() {
            task.task_memory_mib
        } else {
            None
        })
        .map(|mib| mib * MIB);
    spec.memory_reservation_bytes = reservation_mib.map(|mib| mib * MIB);
    if let Some(units) = task.fargate_cpu_units {
        apply_fargate_isolation(&mut spec, units, task.task_memory_mib);
    }

    apply_network(task, definition, &name, &mut spec)?;
    spec.mounts = mounts(task, definition, &name)?;
    spec.volumes_from = volumes_from(task, definition, &name)?;

    spec.health_check = definition.health_check.as_ref().and_then(|check| {
        let test = check
            .command
            .clone()
            .filter(|command| !command.is_empty())?;
        let seconds = |value: Option<i32>, default: u64| {
            Duration::from_secs(
                value
                    .and_then(|v| u64::try_from(v).ok())
                    .filter(|v| *v > 0)
                    .unwrap_or(default),
            )
        };
        Some(HealthCheck {
            test,
            interval: seconds(check.interval, DEFAULT_HEALTH_INTERVAL_SECONDS),
            timeout: seconds(check.timeout, DEFAULT_HEALTH_TIMEOUT_SECONDS),
            retries: check
                .retries
                .and_then(|r| u32::try_from(r).ok())
                .filter(|r| *r > 0)
                .unwrap_or(DEFAULT_HEALTH_RETRIES),
            start_period: seconds(check.start_period, 0),
        })
    });
    spec.stop_timeout = Some(stop_timeout(definition));
    spec.ulimits = definition
        .ulimits
        .iter()
        .flatten()
        .filter_map(|ulimit| {
            Some(Ulimit {
                name: ulimit.name?.as_str().to_owned(),
                soft: i64::from(ulimit.soft_limit?),
                hard: i64::from(ulimit.hard_limit?),
            })
        })
        .collect();

    if let Some(linux) = &definition.linux_parameters {
        if linux
            .devices
            .as_ref()
            .is_some_and(|devices| !devices.is_empty())
        {
            return Err(unsupported("linuxParameters.devices"));
        }
        if let Some(capabilities) = &linux.capabilities {
            spec.capabilities_add = capabilities.add.clone().unwrap_or_default();
            spec.capabilities_drop = capabilities.drop.clone().unwrap_or_default();
        }
        spec.init_process = linux.init_process_enabled.unwrap_or(false);
        spec.shared_memory_bytes = linux
            .shared_memory_size
            .and_then(positive_mib)
            .map(|mib| mib * MIB);
        for tmpfs in linux.tmpfs.iter().flatten() {
            let target = tmpfs.container_path.clone().ok_or(SpecError::Missing {
                field: "tmpfs containerPath",
            })?;
            spec.mounts.push(Mount::Tmpfs {
                target,
                size_bytes: tmpfs.size.and_then(positive_mib).map(|mib| mib * MIB),
                options: tmpfs.mount_options.clone().unwrap_or_default(),
            });
        }
    }
    Ok(spec)
}

fn positive_mib(value: i32) -> Option<u64> {
    u64::try_from(value).ok().filter(|mib| *mib > 0)
}

/// The stop timeout: the container's own, else ECS's default.
pub fn stop_timeout(definition: &ContainerDefinition) -> Duration {
    definition
        .stop_timeout
        .and_then(|seconds| u64::try_from(seconds).ok())
        .filter(|seconds| *seconds > 0)
        .map_or(DEFAULT_STOP_TIMEOUT, Duration::from_secs)
}

/// Precedence, lowest first: environment files, the definition's
/// `environment`, the override's, then the variables the agent sets itself.
fn environment(
    container: &ContainerContext<'_>,
    definition: &ContainerDefinition,
    override_: Option<&ContainerOverride>,
) -> BTreeMap<String, String> {
    let mut environment: BTreeMap<String, String> = container
        .environment_file_variables
        .iter()
        .cloned()
        .collect();
    let pairs = definition.environment.iter().flatten().chain(
        override_
            .and_then(|o| o.environment.as_ref())
            .into_iter()
            .flatten(),
    );
    for pair in pairs {
        if let Some(key) = &pair.name {
            environment.insert(key.clone(), pair.value.clone().unwrap_or_default());
        }
    }
    // Secrets last among the task's own variables: the value read from the
    // secret is the one the container gets.
    for (name, value) in container.secrets.iter().flat_map(|s| s.environment.iter()) {
        environment.insert(name.clone(), value.expose().to_owned());
    }
    if let Some(base) = container.metadata_base_url {
        environment.insert(
            "ECS_CONTAINER_METADATA_URI_V4".to_owned(),
            format!("{base}/v4/{}", container.metadata_token),
        );
        environment.insert(
            "ECS_CONTAINER_METADATA_URI".to_owned(),
            format!("{base}/v3/{}", container.metadata_token),
        );
    }
    environment.insert("AWS_EXECUTION_ENV".to_owned(), "AWS_ECS_EC2".to_owned());
    if let Some(uri) = container.credentials_relative_uri {
        environment.insert(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI".to_owned(),
            uri.to_owned(),
        );
    }
    // Where SDKs send their calls and for which region, unless the task
    // says otherwise itself.
    let defaults = [
        ("AWS_ENDPOINT_URL", container.aws_endpoint_url),
        ("AWS_REGION", container.region),
        ("AWS_DEFAULT_REGION", container.region),
    ];
    for (name, value) in defaults {
        if let Some(value) = value {
            environment
                .entry(name.to_owned())
                .or_insert_with(|| value.to_owned());
        }
    }
    environment
}

fn apply_network(
    task: &TaskContext<'_>,
    definition: &ContainerDefinition,
    name: &str,
    spec: &mut ContainerSpec,
) -> Result<(), SpecError> {
    let networking_disabled = definition.disable_networking.unwrap_or(false);
    spec.network_mode = Some(match task.network {
        _ if networking_disabled => NetworkMode::None,
        TaskNetwork::Bridge => NetworkMode::Bridge,
        TaskNetwork::Host => NetworkMode::Host,
        TaskNetwork::None => NetworkMode::None,
        TaskNetwork::Awsvpc { pause_container_id } => NetworkMode::Container {
            id: pause_container_id.clone(),
        },
    });
    // In awsvpc mode the namespace (and so hostname, DNS and /etc/hosts)
    // belongs to the pause container; Docker refuses them on its joiners.
    if !matches!(task.network, TaskNetwork::Awsvpc { .. }) {
        if !matches!(task.network, TaskNetwork::Host) {
            spec.hostname = definition.hostname.clone();
        }
        spec.dns_servers = definition.dns_servers.clone().unwrap_or_default();
        spec.dns_search_domains = definition.dns_search_domains.clone().unwrap_or_default();
        spec.extra_hosts = extra_hosts(definition);
    }
    if matches!(task.network, TaskNetwork::Bridge) && !networking_disabled {
        for mapping in definition.port_mappings.iter().flatten() {
            if mapping.container_port_range.is_some() {
                return Err(SpecError::Unsupported {
                    container: name.to_owned(),
                    what: "containerPortRange".to_owned(),
                });
            }
            let Some(container_port) = mapping.container_port else {
                continue;
            };
            let port = |value: i32| {
                u16::try_from(value).map_err(|_| SpecError::BadPort {
                    container: name.to_owned(),
                    port: value,
                })
            };
            let container_port = port(container_port)?;
            let host_port = match mapping.host_port {
                None | Some(0) => None,
                Some(value) => Some(port(value)?),
            };
            spec.port_bindings.push(PortBinding {
                container_port,
                protocol: protocol_of(mapping.protocol),
                host_port,
                host_ip: None,
            });
        }
        for link in definition.links.iter().flatten() {
            let (target, alias) = link.split_once(':').unwrap_or((link, link));
            let engine_name =
                task.engine_names
                    .get(target)
                    .ok_or_else(|| SpecError::UnknownContainer {
                        container: name.to_owned(),
                        other: target.to_owned(),
                    })?;
            spec.links.push(format!("{engine_name}:{alias}"));
        }
    }
    Ok(())
}

fn extra_hosts(definition: &ContainerDefinition) -> Vec<String> {
    definition
        .extra_hosts
        .iter()
        .flatten()
        .filter_map(|entry| {
            Some(format!(
                "{}:{}",
                entry.hostname.as_ref()?,
                entry.ip_address.as_ref()?
            ))
        })
        .collect()
}

fn protocol_of(protocol: Option<TransportProtocol>) -> Protocol {
    match protocol {
        Some(TransportProtocol::Udp) => Protocol::Udp,
        _ => Protocol::Tcp,
    }
}

fn mounts(
    task: &TaskContext<'_>,
    definition: &ContainerDefinition,
    name: &str,
) -> Result<Vec<Mount>, SpecError> {
    let mut mounts = Vec::new();
    for point in definition.mount_points.iter().flatten() {
        let volume = point.source_volume.clone().ok_or(SpecError::Missing {
            field: "mountPoints.sourceVolume",
        })?;
        let target = point.container_path.clone().ok_or(SpecError::Missing {
            field: "mountPoints.containerPath",
        })?;
        let read_only = point.read_only.unwrap_or(false);
        let source = task
            .volumes
            .get(&volume)
            .ok_or_else(|| SpecError::UnknownVolume {
                container: name.to_owned(),
                volume: volume.clone(),
            })?;
        mounts.push(match source {
            VolumeSource::HostPath(path) => Mount::Bind {
                source: path.clone(),
                target,
                read_only,
            },
            VolumeSource::Named { engine_name, .. } => Mount::Volume {
                name: engine_name.clone(),
                target,
                read_only,
            },
        });
    }
    Ok(mounts)
}

fn volumes_from(
    task: &TaskContext<'_>,
    definition: &ContainerDefinition,
    name: &str,
) -> Result<Vec<String>, SpecError> {
    definition
        .volumes_from
        .iter()
        .flatten()
        .filter_map(|from| {
            Some((
                from.source_container.clone()?,
                from.read_only.unwrap_or(false),
            ))
        })
        .map(|(source, read_only)| {
            let id = task
                .engine_ids
                .get(&source)
                .ok_or_else(|| SpecError::UnknownContainer {
                    container: name.to_owned(),
                    other: source.clone(),
                })?;
            Ok(if read_only {
                format!("{id}:ro")
            } else {
                id.clone()
            })
        })
        .collect()
}

/// The pause container of an awsvpc task: it holds the task's network
/// namespace on the instance's task network at the address the control plane
/// assigned, and carries the namespace-wide settings (hostname, DNS, hosts)
/// of the task's containers. Its command traps SIGTERM so it stops at once.
pub fn pause_spec(
    task: &TaskContext<'_>,
    image: &str,
    network_name: &str,
    ipv4_address: &str,
    definitions: &[ContainerDefinition],
) -> ContainerSpec {
    let mut labels = identity_labels(task, "~internal~ecs~pause");
    labels.insert(labels::PAUSE.to_owned(), "true".to_owned());
    let first_hostname = definitions
        .iter()
        .find_map(|definition| definition.hostname.clone());
    let mut dns_servers: Vec<String> = Vec::new();
    let mut dns_search_domains: Vec<String> = Vec::new();
    let mut hosts: Vec<String> = Vec::new();
    for definition in definitions {
        for server in definition.dns_servers.iter().flatten() {
            if !dns_servers.contains(server) {
                dns_servers.push(server.clone());
            }
        }
        for domain in definition.dns_search_domains.iter().flatten() {
            if !dns_search_domains.contains(domain) {
                dns_search_domains.push(domain.clone());
            }
        }
        for host in extra_hosts(definition) {
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    }
    ContainerSpec {
        name: pause_container_name(task.family, task.revision, task.task_id),
        image: image.to_owned(),
        entry_point: Some(vec![
            "/bin/busybox".to_owned(),
            "sh".to_owned(),
            "-c".to_owned(),
        ]),
        command: Some(vec![
            "trap 'exit 0' TERM INT; while true; do sleep 3600 & wait $!; done".to_owned(),
        ]),
        labels,
        network_mode: Some(NetworkMode::Network {
            name: network_name.to_owned(),
            ipv4_address: Some(ipv4_address.to_owned()),
        }),
        hostname: first_hostname,
        dns_servers,
        dns_search_domains,
        extra_hosts: hosts,
        stop_timeout: Some(Duration::from_secs(5)),
        cpu_shares: Some(MIN_CPU_SHARES),
        ..ContainerSpec::default()
    }
}

/// The network bindings to report for a container: what the engine bound in
/// bridge mode; the definition's ports themselves in host mode (the process
/// binds them directly); none in awsvpc and none modes, where the task's own
/// address is what clients use.
pub fn network_bindings(
    mode: EcsNetworkMode,
    definition: &ContainerDefinition,
    bound: &[flotilla_runtime::BoundPort],
) -> Vec<NetworkBinding> {
    let transport = |protocol: Protocol| match protocol {
        Protocol::Tcp => TransportProtocol::Tcp,
        Protocol::Udp => TransportProtocol::Udp,
    };
    match mode {
        EcsNetworkMode::Bridge => {
            let mut bindings: Vec<NetworkBinding> = Vec::new();
            for port in bound {
                let duplicate = bindings.iter().any(|b| {
                    b.container_port == Some(i32::from(port.container_port))
                        && b.host_port == Some(i32::from(port.host_port))
                        && b.protocol == Some(transport(port.protocol))
                });
                // Docker binds IPv4 and IPv6 alike; one binding per port is what
                // ECS reports and what a load balancer wants.
                if duplicate {
                    continue;
                }
                let bind_ip = if port.host_ip.is_empty() || port.host_ip == "::" {
                    "0.0.0.0".to_owned()
                } else {
                    port.host_ip.clone()
                };
                bindings.push(NetworkBinding {
                    bind_ip: Some(bind_ip),
                    container_port: Some(i32::from(port.container_port)),
                    host_port: Some(i32::from(port.host_port)),
                    protocol: Some(transport(port.protocol)),
                    ..NetworkBinding::default()
                });
            }
            bindings
        }
        EcsNetworkMode::Host => definition
            .port_mappings
            .iter()
            .flatten()
            .filter_map(|mapping| {
                let port = mapping.container_port?;
                Some(NetworkBinding {
                    bind_ip: Some("0.0.0.0".to_owned()),
                    container_port: Some(port),
                    host_port: Some(port),
                    protocol: Some(mapping.protocol.unwrap_or(TransportProtocol::Tcp)),
                    ..NetworkBinding::default()
                })
            })
            .collect(),
        EcsNetworkMode::Awsvpc | EcsNetworkMode::None => Vec::new(),
    }
}

/// Capabilities Fargate lets a task add; every other one is left out.
const FARGATE_ADDABLE_CAPABILITIES: &[&str] = &["SYS_PTRACE"];
/// The CFS period CPU quotas are counted in (Docker's default, 100 ms).
const CPU_PERIOD_MICROS: u64 = 100_000;

/// Fargate's isolation of one container: the task's CPU and memory as hard
/// limits (a quota rather than NanoCpus, which Docker refuses above the
/// host's CPU count), no privileged mode, only Fargate's capabilities. The
/// control plane refuses definitions that ask for more; this keeps a host
/// of the pool safe from one that slipped through.
fn apply_fargate_isolation(spec: &mut ContainerSpec, cpu_units: u64, task_memory_mib: Option<u64>) {
    spec.cpu_period_micros = Some(CPU_PERIOD_MICROS);
    spec.cpu_quota_micros = Some((cpu_units * CPU_PERIOD_MICROS / 1024).max(1000));
    if let Some(task_mib) = task_memory_mib {
        let task_bytes = task_mib * MIB;
        spec.memory_bytes = Some(spec.memory_bytes.map_or(task_bytes, |b| b.min(task_bytes)));
    }
    // Fargate has no swap.
    spec.memory_swap_bytes = spec.memory_bytes;
    spec.privileged = false;
    spec.capabilities_add
        .retain(|c| FARGATE_ADDABLE_CAPABILITIES.contains(&c.trim_start_matches("CAP_")));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
