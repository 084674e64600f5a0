//! The container runtime: the one boundary between Flotilla and the engine
//! that runs containers.
//!
//! [`ContainerRuntime`] is deliberately narrow and speaks in terms of plain
//! specs, not ECS shapes: the agent translates a task's container definitions
//! into [`ContainerSpec`]s (a pure function it owns), and the runtime only
//! does what an engine does. Two implementations sit behind it: [`DockerRuntime`]
//! for real hosts and [`FakeRuntime`] for tests and simulated hosts.
//!
//! *API boundary:* only this crate knows Docker.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

mod docker;
pub mod fake;
mod json_file;
mod logs;
#[cfg(feature = "testing")]
pub mod testing;

pub use docker::{DockerRuntime, DEFAULT_SOCKET_PATH};
pub use fake::{Clock, FakeCall, FakeRuntime, ManualClock};
pub use logs::{LogLine, LogSource, LogStream};

/// Most networks [`ContainerRuntime::list_networks`] returns: an engine has
/// a handful, and this only guards the caller's memory against a strange one.
pub const NETWORKS_LISTED_MAX: usize = 4096;

pub type RuntimeFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, RuntimeError>> + Send + 'a>>;

/// Labels every container Flotilla creates carries, so that an agent can find
/// its task's containers again after a restart and collect strays.
pub mod labels {
    pub const CLUSTER: &str = "com.flotilla.cluster";
    pub const TASK_ARN: &str = "com.flotilla.task-arn";
    pub const CONTAINER_NAME: &str = "com.flotilla.container-name";
    /// Marks the pause container that holds an awsvpc task's network namespace.
    pub const PAUSE: &str = "com.flotilla.pause";
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The image could not be pulled; `reason` is what the engine said.
    #[error("cannot pull image {image}: {reason}")]
    Pull { image: String, reason: String },
    #[error("no such container {id}")]
    NoSuchContainer { id: String },
    /// The engine refused a request (bad spec, conflict, resource exhausted).
    #[error("{operation} failed: {reason}")]
    Engine {
        operation: &'static str,
        reason: String,
    },
    #[error("container engine unreachable: {reason}")]
    Unavailable { reason: String },
    /// A network could not be made because another network of the engine
    /// already holds addresses of its subnet.
    #[error("cannot create network {network}: subnet {subnet_cidr} overlaps a network the engine already has ({reason})")]
    SubnetInUse {
        network: String,
        subnet_cidr: String,
        reason: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull every time (ECS's default, `ECS_IMAGE_PULL_BEHAVIOR=default`).
    Always,
    /// Use a local copy when there is one.
    IfNotPresent,
    /// Never pull; fail when the image is not local.
    Never,
}

/// Credentials for pulling from a private registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
    pub server: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// The engine's default bridge.
    Bridge,
    Host,
    None,
    /// Join another container's network namespace (awsvpc task containers
    /// join their task's pause container).
    Container {
        id: String,
    },
    /// A named network the runtime manages, with an optional fixed address.
    Network {
        name: String,
        ipv4_address: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortBinding {
    pub container_port: u16,
    pub protocol: Protocol,
    /// `None` lets the engine choose an ephemeral host port.
    pub host_port: Option<u16>,
    pub host_ip: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mount {
    /// A host path bind-mounted into the container.
    Bind {
        source: String,
        target: String,
        read_only: bool,
    },
    /// A named engine volume.
    Volume {
        name: String,
        target: String,
        read_only: bool,
    },
    Tmpfs {
        target: String,
        size_bytes: Option<u64>,
        options: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// As ECS gives it: `["CMD-SHELL", "curl -f http://localhost/"]` or `["CMD", ...]`.
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Everything needed to create one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The engine-side name; unique on the host.
    pub name: String,
    pub image: String,
    pub entry_point: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub environment: BTreeMap<String, String>,
    pub working_directory: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub cpu_shares: Option<u64>,
    /// Hard CPU limit: `cpu_quota_micros` of every `cpu_period_micros`.
    pub cpu_period_micros: Option<u64>,
    pub cpu_quota_micros: Option<u64>,
    /// Hard limit.
    pub memory_bytes: Option<u64>,
    /// Memory plus swap; equal to `memory_bytes` means no swap.
    pub memory_swap_bytes: Option<u64>,
    /// Soft limit.
    pub memory_reservation_bytes: Option<u64>,
    pub network_mode: Option<NetworkMode>,
    pub port_bindings: Vec<PortBinding>,
    /// `name:alias` pairs, bridge mode only.
    pub links: Vec<String>,
    pub mounts: Vec<Mount>,
    /// Containers whose volumes this one mounts (`id[:ro]`).
    pub volumes_from: Vec<String>,
    pub health_check: Option<HealthCheck>,
    pub stop_timeout: Option<Duration>,
    pub ulimits: Vec<Ulimit>,
    pub read_only_root_filesystem: bool,
    pub privileged: bool,
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    pub init_process: bool,
    pub shared_memory_bytes: Option<u64>,
    pub hostname: Option<String>,
    /// `host:ip` entries for /etc/hosts.
    pub extra_hosts: Vec<String>,
    pub dns_servers: Vec<String>,
    pub dns_search_domains: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// No health check, or not yet decided.
    Unknown,
    Healthy,
    Unhealthy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    /// Stopped, with its exit code.
    Exited {
        exit_code: i64,
    },
}

/// A host port the engine bound for a container port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundPort {
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: Protocol,
    pub host_ip: String,
}

/// What the engine knows of a container now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerState {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_digest: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub status: Status,
    pub health: Health,
    pub bound_ports: Vec<BoundPort>,
    /// Address on each network the container is attached to, by network name.
    pub ip_addresses: BTreeMap<String, String>,
    /// Unix milliseconds, when known.
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// Why the engine stopped it, when it says (e.g. "OOMKilled").
    pub error: Option<String>,
}

/// A network of the engine, as [`ContainerRuntime::list_networks`] tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkInfo {
    pub name: String,
    /// Its IPv4 subnets in CIDR form, e.g. `172.17.0.0/16`.
    pub ipv4_subnets: Vec<String>,
}

/// Resource usage of a running container, as the task metadata endpoint reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerStats {
    pub cpu_total_usage_ns: u64,
    pub system_cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    pub memory_limit_bytes: u64,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    /// Bytes read from and written to block devices since the container
    /// started (Docker's `blkio_stats.io_service_bytes_recursive`).
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
}

/// The narrow interface the agent drives. Every call is bounded in time by
/// the implementation; none blocks the caller's thread.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Makes `image` available locally according to `policy`. Returns the
    /// registry digest (`sha256:…`) of the image as pulled or, when a local
    /// copy was used, as the engine recorded it for `image`'s repository;
    /// `None` for an image built locally and never pushed or pulled.
    fn pull_image<'a>(
        &'a self,
        image: &'a str,
        policy: PullPolicy,
        auth: Option<&'a RegistryAuth>,
    ) -> RuntimeFuture<'a, Option<String>>;
    /// Creates (does not start) a container; returns its id.
    fn create_container<'a>(&'a self, spec: &'a ContainerSpec) -> RuntimeFuture<'a, String>;
    fn start_container<'a>(&'a self, id: &'a str) -> RuntimeFuture<'a, ()>;
    /// SIGTERM (or the image's stop signal), then SIGKILL after `timeout`.
    fn stop_container<'a>(&'a self, id: &'a str, timeout: Duration) -> RuntimeFuture<'a, ()>;
    fn remove_container<'a>(&'a self, id: &'a str) -> RuntimeFuture<'a, ()>;
    fn inspect_container<'a>(&'a self, id: &'a str) -> RuntimeFuture<'a, ContainerState>;
    /// Containers (running or not) carrying every given label.
    fn list_containers<'a>(
        &'a self,
        labels: &'a [(&'a str, &'a str)],
    ) -> RuntimeFuture<'a, Vec<ContainerState>>;
    fn container_stats<'a>(&'a self, id: &'a str) -> RuntimeFuture<'a, ContainerStats>;
    /// Creates a bridge network with its own subnet if it does not exist yet.
    /// [`RuntimeError::SubnetInUse`] when another network holds addresses of
    /// the subnet.
    fn ensure_network<'a>(&'a self, name: &'a str, subnet_cidr: &'a str) -> RuntimeFuture<'a, ()>;
    /// Every network of the engine with its IPv4 subnets, at most
    /// [`NETWORKS_LISTED_MAX`].
    fn list_networks(&self) -> RuntimeFuture<'_, Vec<NetworkInfo>>;
    /// Removes a network; one that does not exist is already removed.
    fn remove_network<'a>(&'a self, name: &'a str) -> RuntimeFuture<'a, ()>;
    /// Creates a named volume if it does not exist yet.
    fn ensure_volume<'a>(
        &'a self,
        name: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> RuntimeFuture<'a, ()>;
    fn remove_volume<'a>(&'a self, name: &'a str) -> RuntimeFuture<'a, ()>;
    /// Follows what a started container prints on stdout and stderr, one
    /// item per line, oldest first, from `since_ms` (Unix milliseconds; the
    /// first line when `None`). The stream ends once the container has
    /// stopped and every line it printed has been yielded, so a caller that
    /// reads to the end has everything; it ends with an error if the
    /// container goes away or the engine cannot be read.
    fn follow_logs<'a>(&'a self, id: &'a str, since_ms: Option<u64>) -> LogStream<'a>;
}
