//! The Flotilla agent: turns a machine (or, with `--simulate`, many
//! simulated ones) into container instances of a Flotilla cluster.
//!
//! Each instance registers with RegisterContainerInstance, keeps the control
//! channel of [`flotilla_types::acs`] open, runs the tasks the control plane
//! sends through its task engine, and reports their state changes with
//! SubmitTaskStateChange. See `README.md` beside this crate for the map.
//!
//! *API boundary:* containers are reached only through
//! [`flotilla_runtime::ContainerRuntime`]; the control plane only through its
//! public API and the control channel.
//!
//! *Architecture invariant:* time and ids come in through [`clock::Clock`]
//! and [`clock::IdSource`]; the planner, ordering, spec translation and
//! reporting are pure functions (see [`engine`]).

#![forbid(unsafe_code)]

pub mod api;
pub mod awslogs;
pub mod backoff;
pub mod channel;
pub mod clock;
pub mod credentials;
pub mod engine;
pub mod env_files;
pub mod host;
pub mod instance;
pub mod metadata;
pub mod pause;
pub mod persist;
pub mod registry_auth;
pub mod reporter;
pub mod secrets;
pub mod task_network;
pub mod usage;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_runtime::{ContainerRuntime, DockerRuntime, FakeRuntime, RuntimeError};
use tokio::sync::Semaphore;

use crate::api::{AgentCredentials, ApiCallError, ApiClient, Endpoint};
use crate::clock::{Clock, IdSource, RandomIds, SystemClock};
pub use crate::engine::PullBehavior;
use crate::engine::{EngineSettings, DEFAULT_BRIDGE_GATEWAY};
use crate::host::{HostFacts, InstanceProfile, DEFAULT_AVAILABILITY_ZONE, DEFAULT_INSTANCE_TYPE};
use crate::instance::{run_instance, InstanceExit, InstanceSetup};
use crate::metadata::MetadataRegistry;
use crate::pause::{DockerCliImporter, PauseImage};
use crate::persist::{PersistError, Persistence};

/// Registrations in flight at once from one process.
pub const REGISTRATIONS_IN_FLIGHT_MAX: usize = 16;
/// How often a simulated host's fake runtime drops its call log, which it
/// keeps for test assertions and a long simulation does not need.
const SIMULATED_CALL_LOG_CLEAR_PERIOD: Duration = Duration::from_secs(30);
/// Simulated hosts inspect their containers less often than real ones: the
/// fake computes exits lazily anyway, and a thousand hosts add up.
const SIMULATED_POLL_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Endpoint(ApiCallError),
    #[error("cannot register the container instance: {0}")]
    Registration(ApiCallError),
    #[error("cannot make the task network {network} for awsvpc tasks: {reason}")]
    TaskNetwork { network: String, reason: String },
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("cannot reach the container engine: {0}")]
    Runtime(#[source] RuntimeError),
    #[error("cannot start the task engine: {0}")]
    Engine(#[from] engine::EngineError),
    #[error("cannot serve the task metadata endpoint on {address}: {source}")]
    Metadata {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

/// Settings of an agent process.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The control plane's API, `http://host:port`; several replicas' comma-separated.
    pub endpoint: String,
    pub cluster: String,
    pub data_dir: PathBuf,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub availability_zone: Option<String>,
    pub instance_type: Option<String>,
    /// Custom attributes, `(name, value)`.
    pub attributes: Vec<(String, String)>,
    /// Register for launch type EXTERNAL.
    pub external: bool,
    /// Register as a host of the cluster's Fargate pool.
    pub fargate: bool,
    /// The capacity provider the instance belongs to.
    pub capacity_provider: Option<String>,
    /// Memory kept back from tasks for the host itself.
    pub memory_mib_reserved: u64,
    pub metadata_port: u16,
    pub pause_image: String,
    pub pull_behavior: PullBehavior,
    pub task_cleanup_wait: Duration,
    /// Where bridge-mode containers reach the host; found from the host's
    /// routes (`docker0`) when not given.
    pub bridge_gateway: Option<String>,
    /// How often running tasks' usage is sampled and reported.
    pub stats_interval: Duration,
}

impl AgentConfig {
    /// Defaults for everything but where to connect and store.
    pub fn new(endpoint: String, cluster: String, data_dir: PathBuf) -> Self {
        Self {
            endpoint,
            cluster,
            data_dir,
            region: "us-east-1".to_owned(),
            access_key_id: "test".to_owned(),
            secret_access_key: "test".to_owned(),
            availability_zone: None,
            instance_type: None,
            attributes: Vec::new(),
            external: false,
            fargate: false,
            capacity_provider: None,
            memory_mib_reserved: 0,
            metadata_port: host::DEFAULT_METADATA_PORT,
            pause_image: pause::DEFAULT_PAUSE_IMAGE.to_owned(),
            pull_behavior: PullBehavior::Default,
            task_cleanup_wait: EngineSettings::default().task_cleanup_wait,
            bridge_gateway: None,
            stats_interval: EngineSettings::default().stats_interval,
        }
    }
}

/// Settings of `--simulate`.
#[derive(Clone, Debug)]
pub struct SimulationConfig {
    pub instances: usize,
    pub cpu_units: u64,
    pub memory_mib: u64,
    /// Round-robin over instances; empty means the agent's own zone.
    pub zones: Vec<String>,
    pub instance_types: Vec<String>,
    /// How long each simulated container start takes.
    pub start_delay_ms: u64,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        Self {
            instances: 1,
            cpu_units: 4096,
            memory_mib: 16_384,
            zones: Vec::new(),
            instance_types: Vec::new(),
            start_delay_ms: 0,
        }
    }
}

/// Parses `--attribute KEY=VALUE`.
pub fn parse_attribute(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("attribute {text:?} is not KEY=VALUE"))?;
    if key.is_empty() || key.len() > 128 || value.len() > 128 {
        return Err(format!(
            "attribute {text:?}: the name must be 1 to 128 characters and the value at most 128"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// The gateway of Docker's default bridge from `/proc/net/route` text: the
/// `docker0` network's first address, which Docker gives its gateway.
pub fn bridge_gateway_from_routes(routes: &str) -> Option<Ipv4Addr> {
    routes.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() != Some(&"docker0") {
            return None;
        }
        // Addresses are hex in the kernel's (little-endian) byte order.
        let destination = u32::from_str_radix(fields.get(1)?, 16).ok()?;
        let mask = u32::from_str_radix(fields.get(7)?, 16).ok()?;
        if mask == 0 {
            return None;
        }
        let network = Ipv4Addr::from(destination.to_le_bytes());
        Some(Ipv4Addr::from(u32::from(network) + 1))
    })
}

fn api_client(config: &AgentConfig, clock: &Arc<dyn Clock>) -> Result<ApiClient, AgentError> {
    let endpoints = Endpoint::parse_list(&config.endpoint).map_err(AgentError::Endpoint)?;
    let credentials = AgentCredentials {
        access_key_id: config.access_key_id.clone(),
        secret_access_key: config.secret_access_key.clone(),
    };
    Ok(ApiClient::with_endpoints(
        endpoints,
        credentials,
        config.region.clone(),
        Arc::clone(clock),
    ))
}

/// The commit the agent was built from, as ECS's agent reports its own
/// (`build.rs` reads it from git; `unknown` outside a checkout).
const AGENT_HASH: &str = env!("FLOTILLA_AGENT_HASH");
/// What a simulated host's fake engine calls itself.
const SIMULATED_ENGINE_VERSION: &str = "simulated";

/// `versionInfo.dockerVersion` as ECS's agent words it.
fn docker_version(engine_version: &str) -> String {
    format!("DockerVersion: {engine_version}")
}

fn base_profile(config: &AgentConfig, facts: &HostFacts) -> InstanceProfile {
    InstanceProfile {
        cluster: config.cluster.clone(),
        instance_id: String::new(),
        region: config.region.clone(),
        availability_zone: config
            .availability_zone
            .clone()
            .unwrap_or_else(|| DEFAULT_AVAILABILITY_ZONE.to_owned()),
        instance_type: config
            .instance_type
            .clone()
            .unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.to_owned()),
        cpu_architecture: facts.cpu_architecture,
        cpu_units: facts.cpu_units,
        memory_mib: facts.memory_mib.saturating_sub(config.memory_mib_reserved),
        metadata_port: config.metadata_port,
        custom_attributes: config.attributes.clone(),
        external: config.external,
        fargate: config.fargate,
        capacity_provider: config.capacity_provider.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        agent_hash: AGENT_HASH.to_owned(),
        docker_version: None,
        subnets_in_use: Vec::new(),
    }
}

/// Runs the agent for this machine's Docker engine until the instance is
/// deregistered. Containers keep running if the process is stopped; the
/// next start re-adopts them.
pub async fn run(config: AgentConfig) -> Result<InstanceExit, AgentError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ids: Arc<dyn IdSource> = Arc::new(RandomIds);
    let api = api_client(&config, &clock)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| PersistError::Write {
        path: config.data_dir.clone(),
        source,
    })?;
    let docker = DockerRuntime::connect()
        .await
        .map_err(AgentError::Runtime)?;
    let api_version = docker.api_version();
    let engine_version = docker.engine_version().await;
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(docker);

    let metadata = Arc::new(MetadataRegistry::default());
    let task_credentials = Arc::new(credentials::TaskCredentials::default());
    let address = SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.metadata_port));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| AgentError::Metadata { address, source })?;
    tokio::spawn(metadata::serve(
        listener,
        Arc::clone(&metadata),
        Arc::clone(&runtime),
        Arc::clone(&clock),
        Arc::clone(&task_credentials),
    ));
    let aws_endpoint_url = match serve_credentials_address(
        &config,
        &metadata,
        &runtime,
        &clock,
        &task_credentials,
    )
    .await
    {
        Ok(url) => url,
        Err(error) => {
            tracing::warn!(%error, "containers cannot reach 169.254.170.2: tasks with a task role get no credentials from the endpoint (run the agent as root, or with CAP_NET_ADMIN, to serve it)");
            None
        }
    };

    let bridge_gateway = config.bridge_gateway.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/net/route")
            .ok()
            .and_then(|routes| bridge_gateway_from_routes(&routes))
            .map_or_else(
                || DEFAULT_BRIDGE_GATEWAY.to_owned(),
                |gateway| gateway.to_string(),
            )
    });
    let facts = HostFacts::read();
    let mut profile = base_profile(&config, &facts);
    profile.docker_version = engine_version.map(|version| docker_version(&version));
    tracing::info!(
        cpu_units = profile.cpu_units,
        memory_mib = profile.memory_mib,
        docker_api = %api_version,
        %bridge_gateway,
        metadata = %address,
        "agent starting"
    );
    let settings = EngineSettings {
        pull_behavior: config.pull_behavior,
        task_cleanup_wait: config.task_cleanup_wait,
        metadata_port: Some(config.metadata_port),
        bridge_gateway,
        host_ports: Some(Arc::new(engine::host_ports::HostPortPicker::new())),
        registry_credentials: Some(Arc::new(registry_auth::ControlPlaneRegistry::new(
            api.clone(),
        ))),
        secret_source: Some(Arc::new(secrets::ControlPlaneSecrets::new(api.clone()))),
        environment_files: Some(env_files::ControlPlaneObjects::new(api.clone())),
        stats_interval: config.stats_interval,
        log_shipping: Some(awslogs::LogShipping::new(api.clone())),
        credentials: task_credentials,
        aws_endpoint_url,
        region: Some(config.region.clone()),
        ..EngineSettings::default()
    };
    run_instance(InstanceSetup {
        label: "agent".to_owned(),
        data_dir: config.data_dir.clone(),
        cluster: config.cluster.clone(),
        profile,
        runtime,
        api,
        clock,
        ids,
        persistence: Persistence::DURABLE,
        settings,
        metadata: Some(metadata),
        pause_image: Arc::new(PauseImage::new(
            config.pause_image.clone(),
            Some(Arc::new(DockerCliImporter)),
        )),
        registration_gate: Arc::new(Semaphore::new(1)),
    })
    .await
}

/// Serves the credentials endpoint on 169.254.170.2:80 (and, when the
/// control plane listens on the host's loopback, relays 169.254.170.2:PORT
/// to it). Answers the control plane's URL as containers reach it.
async fn serve_credentials_address(
    config: &AgentConfig,
    metadata: &Arc<MetadataRegistry>,
    runtime: &Arc<dyn ContainerRuntime>,
    clock: &Arc<dyn Clock>,
    task_credentials: &Arc<credentials::TaskCredentials>,
) -> Result<Option<String>, credentials::EndpointError> {
    credentials::prepare_address().await?;
    let listener = credentials::listen(credentials::CREDENTIALS_PORT).await?;
    tokio::spawn(metadata::serve(
        listener,
        Arc::clone(metadata),
        Arc::clone(runtime),
        Arc::clone(clock),
        Arc::clone(task_credentials),
    ));
    let Ok(endpoint) = Endpoint::parse(&config.endpoint) else {
        return Ok(None);
    };
    if !credentials::is_loopback_host(&endpoint.authority) {
        return Ok(Some(config.endpoint.clone()));
    }
    let port = endpoint
        .authority
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .unwrap_or(80);
    let target = endpoint.authority.replace("localhost", "127.0.0.1");
    match credentials::listen(port).await {
        Ok(listener) => {
            tokio::spawn(credentials::relay(listener, target));
            tracing::info!(
                address = %credentials::CREDENTIALS_ADDRESS,
                port,
                "serving task credentials and relaying containers' API calls"
            );
            Ok(Some(format!(
                "http://{}:{port}",
                credentials::CREDENTIALS_ADDRESS
            )))
        }
        Err(error) => {
            tracing::warn!(%error, "containers cannot reach the control plane on the host's loopback: AWS_ENDPOINT_URL is not set");
            Ok(None)
        }
    }
}

/// Runs `simulation.instances` simulated instances in this process, each
/// with its own identity under `DATA_DIR/sim-{i}`, its own fake runtime and
/// its own control channel, all through the same code as a real agent.
/// Returns when every instance has been deregistered.
pub async fn run_simulated(
    config: AgentConfig,
    simulation: SimulationConfig,
) -> Result<(), AgentError> {
    if simulation.instances == 0 {
        return Err(AgentError::Invalid(
            "--simulate needs at least one instance".to_owned(),
        ));
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ids: Arc<dyn IdSource> = Arc::new(RandomIds);
    let api = api_client(&config, &clock)?;
    let gate = Arc::new(Semaphore::new(REGISTRATIONS_IN_FLIGHT_MAX));
    let facts = HostFacts::read();
    let mut instances = tokio::task::JoinSet::new();
    for index in 0..simulation.instances {
        // One per instance: each simulated host has its own fake engine,
        // and a pause image pulled into one is not in the others.
        let pause_image = Arc::new(PauseImage::new(config.pause_image.clone(), None));
        let mut profile = base_profile(&config, &facts);
        profile.docker_version = Some(docker_version(SIMULATED_ENGINE_VERSION));
        profile.cpu_units = simulation.cpu_units;
        profile.memory_mib = simulation
            .memory_mib
            .saturating_sub(config.memory_mib_reserved);
        if !simulation.zones.is_empty() {
            profile.availability_zone = simulation.zones[index % simulation.zones.len()].clone();
        }
        if !simulation.instance_types.is_empty() {
            profile.instance_type =
                simulation.instance_types[index % simulation.instance_types.len()].clone();
        }
        let fake_clock = Arc::clone(&clock);
        let fake = Arc::new(
            FakeRuntime::new(move || fake_clock.now_ms())
                .with_start_delay_ms(simulation.start_delay_ms)
                .with_id_seed(index as u64 + 1),
        );
        let log_owner = Arc::downgrade(&fake);
        tokio::spawn(async move {
            let mut period = tokio::time::interval(SIMULATED_CALL_LOG_CLEAR_PERIOD);
            loop {
                period.tick().await;
                let Some(fake) = log_owner.upgrade() else {
                    return;
                };
                fake.clear_calls();
            }
        });
        let label = format!("sim-{index}");
        let setup = InstanceSetup {
            data_dir: config.data_dir.join(&label),
            label,
            cluster: config.cluster.clone(),
            profile,
            runtime: fake,
            api: api.clone(),
            clock: Arc::clone(&clock),
            ids: Arc::clone(&ids),
            persistence: Persistence::SIMULATED,
            settings: EngineSettings {
                poll_interval: SIMULATED_POLL_INTERVAL,
                pull_behavior: config.pull_behavior,
                task_cleanup_wait: config.task_cleanup_wait,
                metadata_port: None,
                stats_interval: config.stats_interval,
                secret_source: Some(Arc::new(secrets::ControlPlaneSecrets::new(api.clone()))),
                log_shipping: Some(awslogs::LogShipping::new(api.clone())),
                environment_files: Some(env_files::ControlPlaneObjects::new(api.clone())),
                region: Some(config.region.clone()),
                ..EngineSettings::default()
            },
            metadata: None,
            pause_image,
            registration_gate: Arc::clone(&gate),
        };
        instances.spawn(async move {
            let label = setup.label.clone();
            (label, run_instance(setup).await)
        });
    }
    tracing::info!(
        instances = simulation.instances,
        "simulated instances started"
    );
    let mut first_error = None;
    while let Some(joined) = instances.join_next().await {
        match joined {
            Ok((label, Ok(exit))) => {
                tracing::info!(instance = %label, ?exit, "simulated instance ended")
            }
            Ok((label, Err(error))) => {
                tracing::error!(instance = %label, %error, "simulated instance failed");
                first_error.get_or_insert(error);
            }
            Err(error) => tracing::error!(%error, "simulated instance panicked"),
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bridge_gateway_is_read_from_routes() {
        let routes =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                      eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                      docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        assert_eq!(
            bridge_gateway_from_routes(routes),
            Some(Ipv4Addr::new(172, 17, 0, 1))
        );
        assert_eq!(bridge_gateway_from_routes("Iface\n"), None);
    }

    #[test]
    fn attributes_parse() {
        assert_eq!(
            parse_attribute("stack=blue"),
            Ok(("stack".to_owned(), "blue".to_owned()))
        );
        assert_eq!(
            parse_attribute("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert!(parse_attribute("novalue").is_err());
        assert!(parse_attribute("=x").is_err());
    }
}
