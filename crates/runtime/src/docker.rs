//! [`ContainerRuntime`] on a real Docker engine, through bollard over the
//! local socket.
//!
//! The engine here may be older than bollard's models (Docker 20.10 speaks
//! API 1.41), so the client negotiates the version on connect and this module
//! only uses request fields that 1.41 understands: tmpfs goes through
//! `HostConfig.Tmpfs` rather than `Mount.TmpfsOptions`, volumes through
//! `HostConfig.Binds`, and stop requests never send a signal parameter.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EndpointIpamConfig,
    EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig, Ipam, IpamConfig,
    NetworkCreateRequest, NetworkingConfig, PortBinding as DockerPortBinding, ResourcesUlimits,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, ListNetworksOptions, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions, StatsOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};

use crate::json_file::{self, Tail};
use crate::logs::{parse_timestamped, LogSource, LogStream};
use crate::{
    BoundPort, ContainerRuntime, ContainerSpec, ContainerState, ContainerStats, Health, Mount,
    NetworkInfo, NetworkMode, Protocol, PullPolicy, RegistryAuth, RuntimeError, RuntimeFuture,
    Status,
};

/// Where the engine listens on a Linux host.
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/docker.sock";

/// Bound on connecting and negotiating the API version: a local socket
/// answers in milliseconds, so anything longer means the engine is wedged.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on an ordinary engine call (create, start, inspect, list, remove,
/// networks, volumes). Generous because a loaded 2-core host can take seconds
/// to set up a container's namespaces and mounts.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a whole image pull, progress stream included. Large images over
/// a slow link take minutes; a pull that takes longer is treated as failed.
const PULL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Added to a stop's own timeout: the engine waits `timeout`, then kills and
/// still has to reap the container and tear down its network.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Empty reads of a followed log file between two looks at whether the
/// container stopped (a second at the poll interval).
const LOG_STOP_CHECK_READS: u32 = 10;
/// Bound on a one-shot stats read.
const STATS_TIMEOUT: Duration = Duration::from_secs(15);
/// bollard's own per-request timeout only covers waiting for response
/// headers; every call above carries its own tighter bound, so this is a
/// backstop that must exceed all of them (a stop of a container with a long
/// stop timeout answers only once the container is gone).
const CLIENT_BACKSTOP_TIMEOUT_SECS: u64 = 60 * 60;
/// How many containers `list_containers` inspects at once: enough to hide the
/// engine's latency, few enough not to crowd out the agent's other calls.
const LIST_INSPECT_CONCURRENCY: usize = 8;
/// Image id → registry digest entries kept; the map is cleared when full
/// (images on a host number in the tens, so this is only a leak guard).
const DIGEST_CACHE_CAPACITY: usize = 1024;

/// The real runtime: one Docker engine on the local socket.
pub struct DockerRuntime {
    docker: Docker,
    /// Registry digests by image id and repository, so that inspecting a
    /// container does not cost a second engine call every time.
    digests: Mutex<HashMap<String, String>>,
    /// Held from looking for a network to creating it. The engine reserves a
    /// new network's subnet before the network can be found by name, so two
    /// concurrent creates of one network (an instance's first awsvpc tasks,
    /// started together) would see the loser refused with "Pool overlaps"
    /// while the winner's network is not yet there to be found.
    network_creation: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("api_version", &self.api_version())
            .finish()
    }
}

impl DockerRuntime {
    /// Connects to the engine on [`DEFAULT_SOCKET_PATH`] and negotiates the
    /// API version down to what the engine speaks.
    pub async fn connect() -> Result<DockerRuntime, RuntimeError> {
        Self::connect_with_socket(DEFAULT_SOCKET_PATH).await
    }

    /// Connects to the engine on a given unix socket.
    pub async fn connect_with_socket(socket_path: &str) -> Result<DockerRuntime, RuntimeError> {
        let docker = Docker::connect_with_unix(
            socket_path,
            CLIENT_BACKSTOP_TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|error| RuntimeError::Unavailable {
            reason: format!("{socket_path}: {error}"),
        })?;
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(docker)) => docker,
            Ok(Err(error)) => {
                return Err(RuntimeError::Unavailable {
                    reason: format!("{socket_path}: {error}"),
                })
            }
            Err(_) => {
                return Err(RuntimeError::Unavailable {
                    reason: format!(
                        "{socket_path}: no answer to a version request within {CONNECT_TIMEOUT:?}"
                    ),
                })
            }
        };
        tracing::debug!(api_version = %docker.client_version(), "connected to docker");
        Ok(DockerRuntime {
            docker,
            digests: Mutex::new(HashMap::new()),
            network_creation: tokio::sync::Mutex::new(()),
        })
    }

    /// The API version agreed with the engine, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }

    /// The engine's own version, e.g. `27.5.1`, or `None` when it does not say.
    pub async fn engine_version(&self) -> Option<String> {
        self.docker.version().await.ok()?.version
    }

    /// Pulls `image`; returns the digest the engine named for what it pulled.
    async fn pull(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<Option<String>, RuntimeError> {
        let (from_image, tag) = pull_reference(image);
        let mut options = CreateImageOptionsBuilder::new().from_image(&from_image);
        if let Some(tag) = &tag {
            options = options.tag(tag);
        }
        let credentials = auth.map(|auth| bollard::auth::DockerCredentials {
            username: Some(auth.username.clone()),
            password: Some(auth.password.clone()),
            serveraddress: Some(auth.server.clone()),
            ..Default::default()
        });
        let pull_error = |reason: String| RuntimeError::Pull {
            image: image.to_owned(),
            reason,
        };
        // The engine reports failures either as an error status before the
        // stream starts (unknown registry host, bad reference) or as an
        // `errorDetail` line inside it (denied, manifest unknown); bollard
        // turns both into stream errors. Progress lines are dropped as they
        // arrive, so memory stays flat however long the pull runs; only the
        // "Digest: sha256:…" line near the end is kept.
        let stream = self
            .docker
            .create_image(Some(options.build()), None, credentials);
        let mut pulled_digest = None;
        let drained = stream.try_for_each(|progress| {
            if let Some(digest) = progress
                .status
                .as_deref()
                .and_then(|status| status.strip_prefix("Digest: "))
            {
                pulled_digest = Some(digest.trim().to_owned());
            }
            async { Ok(()) }
        });
        match tokio::time::timeout(PULL_TIMEOUT, drained).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(pull_error(engine_message(&error))),
            Err(_) => {
                return Err(pull_error(format!(
                    "pull did not finish within {PULL_TIMEOUT:?}"
                )))
            }
        }
        match pulled_digest {
            Some(digest) => Ok(Some(digest)),
            // An engine that did not say: what it recorded for the repository.
            None => Ok(self.local_image_digest(image).await?.flatten()),
        }
    }

    /// `None` when `image` is not local; otherwise its registry digest for
    /// `image`'s repository, if the engine recorded one.
    async fn local_image_digest(
        &self,
        image: &str,
    ) -> Result<Option<Option<String>>, RuntimeError> {
        match bounded(
            "inspect image",
            REQUEST_TIMEOUT,
            self.docker.inspect_image(image),
        )
        .await?
        {
            Ok(inspected) => Ok(Some(registry_digest(
                &inspected.repo_digests.unwrap_or_default(),
                image,
            ))),
            Err(error) if status_code(&error) == Some(404) => Ok(None),
            Err(error) => Err(engine_error("inspect image", error)),
        }
    }

    /// The registry digest (`sha256:…`) of the image a container runs, as
    /// the engine recorded it for `reference`'s repository, when the image
    /// came from a registry; locally built images have none. Only found
    /// digests are cached: an image built here gains one when it is pushed
    /// or pulled under a registry's name.
    async fn image_digest(&self, image_id: &str, reference: &str) -> Option<String> {
        let key = format!("{image_id} {}", repository_of(reference));
        if let Some(cached) = self.lock_digests().get(&key) {
            return Some(cached.clone());
        }
        let inspected = bounded(
            "inspect image",
            REQUEST_TIMEOUT,
            self.docker.inspect_image(image_id),
        )
        .await;
        let digest = match inspected {
            Ok(Ok(image)) => registry_digest(&image.repo_digests.unwrap_or_default(), reference)?,
            // The image may have been removed under a running container; the
            // digest is informational, so it is simply unknown then.
            _ => return None,
        };
        let mut digests = self.lock_digests();
        if digests.len() >= DIGEST_CACHE_CAPACITY {
            digests.clear();
        }
        digests.insert(key, digest.clone());
        Some(digest)
    }

    fn lock_digests(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // The map is a cache: a panic while holding it cannot leave it
        // inconsistent in a way that matters, so poisoning is ignored.
        self.digests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn inspect(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let inspected = bounded(
            "inspect container",
            REQUEST_TIMEOUT,
            self.docker
                .inspect_container(id, None::<InspectContainerOptions>),
        )
        .await?
        .map_err(|error| container_error("inspect container", id, error))?;
        let reference = inspected
            .config
            .as_ref()
            .and_then(|config| config.image.clone())
            .unwrap_or_default();
        let digest = match &inspected.image {
            Some(image_id) => self.image_digest(image_id, &reference).await,
            None => None,
        };
        Ok(container_state(inspected, digest))
    }

    /// Follows through the engine's logs API, a chunk per line.
    fn follow_logs_api<'a>(&'a self, id: &'a str, since_ms: Option<u64>) -> LogStream<'a> {
        // The engine's `since` is in whole seconds: start at the second
        // before and let the caller skip what it has already seen.
        let since_seconds = since_ms.map_or(0, |ms| i32::try_from(ms / 1000).unwrap_or(i32::MAX));
        let options = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .since(since_seconds)
            .build();
        let lines = self.docker.logs(id, Some(options)).filter_map(move |item| {
            let line = match item {
                Ok(bollard::container::LogOutput::StdOut { message }) => {
                    parse_timestamped(LogSource::Stdout, &message).map(Ok)
                }
                Ok(bollard::container::LogOutput::StdErr { message }) => {
                    parse_timestamped(LogSource::Stderr, &message).map(Ok)
                }
                Ok(_) => None,
                Err(error) => Some(Err(container_error("follow logs", id, error))),
            };
            std::future::ready(line.filter(|line| {
                !matches!((line, since_ms), (Ok(line), Some(since)) if line.timestamp_ms < since)
            }))
        });
        Box::pin(lines)
    }

    /// The container's json-file log, when it logs with json-file.
    async fn json_log_path(&self, id: &str) -> Option<String> {
        let inspected = bounded(
            "inspect container",
            REQUEST_TIMEOUT,
            self.docker
                .inspect_container(id, None::<InspectContainerOptions>),
        )
        .await
        .ok()?
        .ok()?;
        let driver = inspected.host_config?.log_config?.typ?;
        let path = inspected.log_path.filter(|path| !path.is_empty())?;
        (driver == "json-file").then_some(path)
    }

    /// Whether the container has stopped.
    async fn inspect_status(&self, id: &str) -> Result<bool, RuntimeError> {
        let inspected = bounded(
            "inspect container",
            REQUEST_TIMEOUT,
            self.docker
                .inspect_container(id, None::<InspectContainerOptions>),
        )
        .await?
        .map_err(|error| container_error("follow logs", id, error))?;
        let status = inspected.state.and_then(|state| state.status);
        Ok(matches!(
            status,
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
        ))
    }
}

impl ContainerRuntime for DockerRuntime {
    fn pull_image<'a>(
        &'a self,
        image: &'a str,
        policy: PullPolicy,
        auth: Option<&'a RegistryAuth>,
    ) -> RuntimeFuture<'a, Option<String>> {
        Box::pin(async move {
            match policy {
                PullPolicy::Always => self.pull(image, auth).await,
                PullPolicy::IfNotPresent => {
                    if let Some(digest) = self.local_image_digest(image).await? {
                        return Ok(digest);
                    }
                    self.pull(image, auth).await
                }
                PullPolicy::Never => {
                    if let Some(digest) = self.local_image_digest(image).await? {
                        return Ok(digest);
                    }
                    Err(RuntimeError::Pull {
                        image: image.to_owned(),
                        reason: "image is not present locally and the pull policy forbids pulling"
                            .to_owned(),
                    })
                }
            }
        })
    }

    fn create_container<'a>(&'a self, spec: &'a ContainerSpec) -> RuntimeFuture<'a, String> {
        Box::pin(async move {
            let mut options = CreateContainerOptionsBuilder::new();
            if !spec.name.is_empty() {
                options = options.name(&spec.name);
            }
            let body = container_create_body(spec);
            let created = bounded(
                "create container",
                REQUEST_TIMEOUT,
                self.docker.create_container(Some(options.build()), body),
            )
            .await?
            .map_err(|error| engine_error("create container", error))?;
            for warning in &created.warnings {
                tracing::warn!(container = %spec.name, %warning, "engine warned on create");
            }
            Ok(created.id)
        })
    }

    fn start_container<'a>(&'a self, id: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            // bollard counts 304 (already running) as success, which is
            // what a retried start wants.
            bounded(
                "start container",
                REQUEST_TIMEOUT,
                self.docker.start_container(id, None),
            )
            .await?
            .map_err(|error| container_error("start container", id, error))
        })
    }

    fn stop_container<'a>(&'a self, id: &'a str, timeout: Duration) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            let options = StopContainerOptionsBuilder::new()
                .t(whole_seconds_up(timeout))
                .build();
            // bollard counts 304 (already stopped) as success, which is what
            // a stop that races the container's own exit wants.
            bounded(
                "stop container",
                timeout + STOP_GRACE,
                self.docker.stop_container(id, Some(options)),
            )
            .await?
            .map_err(|error| container_error("stop container", id, error))
        })
    }

    fn remove_container<'a>(&'a self, id: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            // Force kills a container that is still running; v removes its
            // anonymous volumes, which would otherwise pile up on the host.
            let options = RemoveContainerOptionsBuilder::new()
                .force(true)
                .v(true)
                .build();
            bounded(
                "remove container",
                REQUEST_TIMEOUT,
                self.docker.remove_container(id, Some(options)),
            )
            .await?
            .map_err(|error| container_error("remove container", id, error))
        })
    }

    fn inspect_container<'a>(&'a self, id: &'a str) -> RuntimeFuture<'a, ContainerState> {
        Box::pin(self.inspect(id))
    }

    fn list_containers<'a>(
        &'a self,
        labels: &'a [(&'a str, &'a str)],
    ) -> RuntimeFuture<'a, Vec<ContainerState>> {
        Box::pin(async move {
            let label_filters: Vec<String> = labels
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            let filters = HashMap::from([("label", label_filters)]);
            let options = ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build();
            let summaries = bounded(
                "list containers",
                REQUEST_TIMEOUT,
                self.docker.list_containers(Some(options)),
            )
            .await?
            .map_err(|error| engine_error("list containers", error))?;
            // A summary lacks the exit code and times, so each container is
            // inspected; one removed in between is simply no longer listed.
            let ids: Vec<String> = summaries
                .into_iter()
                .filter_map(|summary| summary.id)
                .collect();
            let states: Vec<Result<ContainerState, RuntimeError>> = futures_util::stream::iter(ids)
                .map(|id| async move { self.inspect(&id).await })
                .buffered(LIST_INSPECT_CONCURRENCY)
                .collect()
                .await;
            let mut containers = Vec::with_capacity(states.len());
            for state in states {
                match state {
                    Ok(state) => containers.push(state),
                    Err(RuntimeError::NoSuchContainer { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(containers)
        })
    }

    fn container_stats<'a>(&'a self, id: &'a str) -> RuntimeFuture<'a, ContainerStats> {
        Box::pin(async move {
            // one-shot skips the engine's one-second wait for a second CPU
            // sample; callers compute rates from their own successive reads.
            let options = StatsOptionsBuilder::new()
                .stream(false)
                .one_shot(true)
                .build();
            let mut stream = self.docker.stats(id, Some(options));
            let first = bounded("container stats", STATS_TIMEOUT, stream.next())
                .await?
                .ok_or_else(|| RuntimeError::Engine {
                    operation: "container stats",
                    reason: "the engine returned no sample".to_owned(),
                })?
                .map_err(|error| container_error("container stats", id, error))?;
            let cpu = first.cpu_stats.unwrap_or_default();
            let memory = first.memory_stats.unwrap_or_default();
            let networks = first.networks.unwrap_or_default();
            let block = first
                .blkio_stats
                .and_then(|blkio| blkio.io_service_bytes_recursive)
                .unwrap_or_default();
            // cgroup v1 spells the operations "Read" and "Write", v2 in lower case.
            let block_bytes = |operation: &str| -> u64 {
                block
                    .iter()
                    .filter(|entry| {
                        entry
                            .op
                            .as_deref()
                            .is_some_and(|op| op.eq_ignore_ascii_case(operation))
                    })
                    .map(|entry| entry.value.unwrap_or(0))
                    .sum()
            };
            Ok(ContainerStats {
                cpu_total_usage_ns: cpu
                    .cpu_usage
                    .and_then(|usage| usage.total_usage)
                    .unwrap_or(0),
                system_cpu_usage_ns: cpu.system_cpu_usage.unwrap_or(0),
                memory_usage_bytes: memory.usage.unwrap_or(0),
                memory_limit_bytes: memory.limit.unwrap_or(0),
                network_rx_bytes: networks
                    .values()
                    .map(|network| network.rx_bytes.unwrap_or(0))
                    .sum(),
                network_tx_bytes: networks
                    .values()
                    .map(|network| network.tx_bytes.unwrap_or(0))
                    .sum(),
                block_read_bytes: block_bytes("read"),
                block_write_bytes: block_bytes("write"),
            })
        })
    }

    fn follow_logs<'a>(&'a self, id: &'a str, since_ms: Option<u64>) -> LogStream<'a> {
        enum Follow<'a> {
            Start,
            File(Box<Tail>),
            Api(LogStream<'a>),
            Ended,
        }
        let start = (Follow::Start, false, 0u32);
        Box::pin(futures_util::stream::unfold(
            start,
            move |(mut state, mut stopped, mut empty_reads)| async move {
                loop {
                    match state {
                        Follow::Start => {
                            state = match self.json_log_path(id).await {
                                Some(path) => match Tail::open(&path, since_ms).await {
                                    Ok(tail) => Follow::File(Box::new(tail)),
                                    Err(_) => Follow::Api(self.follow_logs_api(id, since_ms)),
                                },
                                None => Follow::Api(self.follow_logs_api(id, since_ms)),
                            };
                        }
                        Follow::Api(mut lines) => {
                            let item = lines.next().await?;
                            return Some((item, (Follow::Api(lines), stopped, empty_reads)));
                        }
                        Follow::File(mut tail) => {
                            if let Some(line) = tail.pending.pop_front() {
                                return Some((
                                    Ok(line),
                                    (Follow::File(tail), stopped, empty_reads),
                                ));
                            }
                            match tail.read_more().await {
                                Ok(true) => empty_reads = 0,
                                Ok(false) if stopped => return None,
                                Ok(false) => {
                                    empty_reads += 1;
                                    // Whether it stopped is asked once a
                                    // second of quiet, not at every poll.
                                    if empty_reads % LOG_STOP_CHECK_READS == 0 {
                                        match self.inspect_status(id).await {
                                            Ok(true) => stopped = true,
                                            Ok(false) => {}
                                            Err(error) => {
                                                return Some((
                                                    Err(error),
                                                    (Follow::Ended, stopped, empty_reads),
                                                ));
                                            }
                                        }
                                    }
                                    if !stopped {
                                        tokio::time::sleep(json_file::POLL_INTERVAL).await;
                                    }
                                }
                                Err(error) => {
                                    return Some((
                                        Err(error),
                                        (Follow::Ended, stopped, empty_reads),
                                    ));
                                }
                            }
                            state = Follow::File(tail);
                        }
                        Follow::Ended => return None,
                    }
                }
            },
        ))
    }

    fn ensure_network<'a>(&'a self, name: &'a str, subnet_cidr: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            let _creating = self.network_creation.lock().await;
            if let Some(subnets) = self.network_subnets(name).await? {
                // The network is the caller's by name; a different subnet
                // means someone else set it up, which is worth a note but
                // not a refusal (its containers are running on it).
                if !subnets.iter().any(|subnet| subnet == subnet_cidr) {
                    tracing::warn!(network = name, requested = subnet_cidr, existing = ?subnets, "network exists with another subnet");
                }
                return Ok(());
            }
            let request = NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("bridge".to_owned()),
                ipam: Some(Ipam {
                    driver: Some("default".to_owned()),
                    config: Some(vec![IpamConfig {
                        subnet: Some(subnet_cidr.to_owned()),
                        ..Default::default()
                    }]),
                    options: None,
                }),
                ..Default::default()
            };
            let created = bounded(
                "create network",
                REQUEST_TIMEOUT,
                self.docker.create_network(request),
            )
            .await?;
            match created {
                Ok(_) => Ok(()),
                Err(error) => {
                    // Another process may have created it between our look
                    // and our create (the engine then refuses the duplicate
                    // or the overlapping subnet): it exists, which is enough.
                    if self.network_subnets(name).await?.is_some() {
                        return Ok(());
                    }
                    if is_pool_overlap(&error) {
                        return Err(RuntimeError::SubnetInUse {
                            network: name.to_owned(),
                            subnet_cidr: subnet_cidr.to_owned(),
                            reason: engine_message(&error),
                        });
                    }
                    Err(engine_error("create network", error))
                }
            }
        })
    }

    fn list_networks(&self) -> RuntimeFuture<'_, Vec<NetworkInfo>> {
        Box::pin(async move {
            let networks = bounded(
                "list networks",
                REQUEST_TIMEOUT,
                self.docker.list_networks(None::<ListNetworksOptions>),
            )
            .await?
            .map_err(|error| engine_error("list networks", error))?;
            Ok(networks
                .into_iter()
                .take(crate::NETWORKS_LISTED_MAX)
                .map(|network| NetworkInfo {
                    name: network.name.unwrap_or_default(),
                    ipv4_subnets: network
                        .ipam
                        .and_then(|ipam| ipam.config)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|config| config.subnet)
                        // IPv6 subnets cannot overlap an IPv4 one.
                        .filter(|subnet| !subnet.contains(':'))
                        .collect(),
                })
                .collect())
        })
    }

    fn remove_network<'a>(&'a self, name: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            match bounded(
                "remove network",
                REQUEST_TIMEOUT,
                self.docker.remove_network(name),
            )
            .await?
            {
                Ok(()) => Ok(()),
                Err(error) if status_code(&error) == Some(404) => Ok(()),
                Err(error) => Err(engine_error("remove network", error)),
            }
        })
    }

    fn ensure_volume<'a>(
        &'a self,
        name: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            // Creating a volume that exists returns the existing one, so
            // this is idempotent without a look first.
            let request = VolumeCreateRequest {
                name: Some(name.to_owned()),
                driver: Some("local".to_owned()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(key, value)| (key.clone(), value.clone()))
                        .collect(),
                ),
                ..Default::default()
            };
            bounded(
                "create volume",
                REQUEST_TIMEOUT,
                self.docker.create_volume(request),
            )
            .await?
            .map(|_| ())
            .map_err(|error| engine_error("create volume", error))
        })
    }

    fn remove_volume<'a>(&'a self, name: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            match bounded(
                "remove volume",
                REQUEST_TIMEOUT,
                self.docker.remove_volume(name, None::<RemoveVolumeOptions>),
            )
            .await?
            {
                Ok(()) => Ok(()),
                Err(error) if status_code(&error) == Some(404) => Ok(()),
                Err(error) => Err(engine_error("remove volume", error)),
            }
        })
    }
}

impl DockerRuntime {
    /// The subnets of network `name`, or `None` when it does not exist.
    async fn network_subnets(&self, name: &str) -> Result<Option<Vec<String>>, RuntimeError> {
        match bounded(
            "inspect network",
            REQUEST_TIMEOUT,
            self.docker.inspect_network(name, None),
        )
        .await?
        {
            Ok(network) => Ok(Some(
                network
                    .ipam
                    .and_then(|ipam| ipam.config)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|config| config.subnet)
                    .collect(),
            )),
            Err(error) if status_code(&error) == Some(404) => Ok(None),
            Err(error) => Err(engine_error("inspect network", error)),
        }
    }
}

/// Runs one engine call under `limit`; running out of time reads as an
/// unavailable engine, since a healthy local engine answers well within it.
async fn bounded<T>(
    operation: &'static str,
    limit: Duration,
    call: impl Future<Output = T>,
) -> Result<T, RuntimeError> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| RuntimeError::Unavailable {
            reason: format!("{operation} got no answer within {limit:?}"),
        })
}

fn status_code(error: &BollardError) -> Option<u16> {
    match error {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// What the engine said, without bollard's framing around it.
fn engine_message(error: &BollardError) -> String {
    match error {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        BollardError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

fn is_transport_error(error: &BollardError) -> bool {
    matches!(
        error,
        BollardError::HyperLegacyError { .. }
            | BollardError::HyperResponseError { .. }
            | BollardError::HttpClientError { .. }
            | BollardError::IOError { .. }
            | BollardError::RequestTimeoutError
            | BollardError::SocketNotFoundError(_)
    )
}

fn engine_error(operation: &'static str, error: BollardError) -> RuntimeError {
    if is_transport_error(&error) {
        return RuntimeError::Unavailable {
            reason: format!("{operation}: {error}"),
        };
    }
    RuntimeError::Engine {
        operation,
        reason: engine_message(&error),
    }
}

/// Whether the engine refused a network because another one holds
/// addresses of its subnet. Docker answers 403 "Pool overlaps with other
/// one on this address space" (with an "invalid pool request: " prefix in
/// later versions).
fn is_pool_overlap(error: &BollardError) -> bool {
    engine_message(error).contains("Pool overlaps")
}

fn container_error(operation: &'static str, id: &str, error: BollardError) -> RuntimeError {
    if status_code(&error) == Some(404) {
        return RuntimeError::NoSuchContainer { id: id.to_owned() };
    }
    engine_error(operation, error)
}

/// The repository of an image reference as the engine names it in an
/// image's `RepoDigests`: no tag, no digest, and Docker Hub's default
/// registry and `library/` namespace left out (`nginx`, `localhost:8440/team/web`).
fn repository_of(reference: &str) -> &str {
    let without_digest = reference
        .split_once('@')
        .map_or(reference, |(name, _)| name);
    let name_start = without_digest.rfind('/').map_or(0, |slash| slash + 1);
    let without_tag = match without_digest[name_start..].rfind(':') {
        Some(colon) => &without_digest[..name_start + colon],
        None => without_digest,
    };
    let without_registry = ["docker.io/", "index.docker.io/"]
        .iter()
        .find_map(|registry| without_tag.strip_prefix(registry))
        .unwrap_or(without_tag);
    without_registry
        .strip_prefix("library/")
        .unwrap_or(without_registry)
}

/// The digest in `repo_digests` (`repository@sha256:…` entries) for
/// `reference`: the one it names itself, else its repository's. An image
/// known to a registry only under another repository's name has none under
/// this one.
fn registry_digest(repo_digests: &[String], reference: &str) -> Option<String> {
    if let Some((_, digest)) = reference.split_once('@') {
        return Some(digest.to_owned());
    }
    let repository = repository_of(reference);
    repo_digests
        .iter()
        .filter_map(|entry| entry.split_once('@'))
        .find(|(name, _)| repository_of(name) == repository)
        .map(|(_, digest)| digest.to_owned())
}

/// Splits an image reference into the engine's `fromImage` and `tag`
/// parameters. A reference without a tag gets `latest`: an empty tag would
/// make the engine pull every tag of the repository.
fn pull_reference(image: &str) -> (String, Option<String>) {
    if image.contains('@') {
        return (image.to_owned(), None);
    }
    let name_start = image.rfind('/').map_or(0, |slash| slash + 1);
    match image[name_start..].rfind(':') {
        Some(colon) => {
            let colon = name_start + colon;
            (
                image[..colon].to_owned(),
                Some(image[colon + 1..].to_owned()),
            )
        }
        None => (image.to_owned(), Some("latest".to_owned())),
    }
}

fn whole_seconds_up(duration: Duration) -> i32 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

fn nanos(duration: Duration) -> Option<i64> {
    // Zero means "the engine's default" in the API, so it is left out.
    if duration.is_zero() {
        return None;
    }
    Some(i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn some_if_not_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    if items.is_empty() {
        None
    } else {
        Some(items)
    }
}

/// Translates a spec into the engine's create request. Pure, so that the
/// mapping is tested without an engine.
fn container_create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut port_bindings: HashMap<String, Option<Vec<DockerPortBinding>>> = HashMap::new();
    for binding in &spec.port_bindings {
        let key = format!(
            "{}/{}",
            binding.container_port,
            protocol_name(binding.protocol)
        );
        // An empty host port asks the engine for one from its ephemeral range.
        let host_port = binding
            .host_port
            .map(|port| port.to_string())
            .unwrap_or_default();
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(DockerPortBinding {
                host_ip: binding.host_ip.clone(),
                host_port: Some(host_port),
            });
    }
    let mut exposed_ports: Vec<String> = port_bindings.keys().cloned().collect();
    exposed_ports.sort();

    let mut binds = Vec::new();
    let mut tmpfs = HashMap::new();
    for mount in &spec.mounts {
        match mount {
            Mount::Bind {
                source,
                target,
                read_only,
            }
            | Mount::Volume {
                name: source,
                target,
                read_only,
            } => {
                let mode = if *read_only { ":ro" } else { "" };
                binds.push(format!("{source}:{target}{mode}"));
            }
            Mount::Tmpfs {
                target,
                size_bytes,
                options,
            } => {
                let mut tmpfs_options: Vec<String> = size_bytes
                    .iter()
                    .map(|size| format!("size={size}"))
                    .collect();
                tmpfs_options.extend(options.iter().cloned());
                tmpfs.insert(target.clone(), tmpfs_options.join(","));
            }
        }
    }

    let (network_mode, networking_config) = match &spec.network_mode {
        None => (None, None),
        Some(NetworkMode::Bridge) => (Some("bridge".to_owned()), None),
        Some(NetworkMode::Host) => (Some("host".to_owned()), None),
        Some(NetworkMode::None) => (Some("none".to_owned()), None),
        Some(NetworkMode::Container { id }) => (Some(format!("container:{id}")), None),
        Some(NetworkMode::Network { name, ipv4_address }) => {
            let endpoint = EndpointSettings {
                ipam_config: ipv4_address.as_ref().map(|address| EndpointIpamConfig {
                    ipv4_address: Some(address.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let config = NetworkingConfig {
                endpoints_config: Some(HashMap::from([(name.clone(), endpoint)])),
            };
            (Some(name.clone()), Some(config))
        }
    };

    let healthcheck = spec.health_check.as_ref().map(|check| HealthConfig {
        test: Some(check.test.clone()),
        interval: nanos(check.interval),
        timeout: nanos(check.timeout),
        retries: Some(i64::from(check.retries)),
        start_period: nanos(check.start_period),
        ..Default::default()
    });

    let host_config = HostConfig {
        cpu_shares: spec.cpu_shares.map(to_i64),
        cpu_period: spec.cpu_period_micros.map(to_i64),
        cpu_quota: spec.cpu_quota_micros.map(to_i64),
        memory: spec.memory_bytes.map(to_i64),
        memory_swap: spec.memory_swap_bytes.map(to_i64),
        memory_reservation: spec.memory_reservation_bytes.map(to_i64),
        network_mode,
        port_bindings: if port_bindings.is_empty() {
            None
        } else {
            Some(port_bindings)
        },
        links: some_if_not_empty(spec.links.clone()),
        binds: some_if_not_empty(binds),
        tmpfs: if tmpfs.is_empty() { None } else { Some(tmpfs) },
        volumes_from: some_if_not_empty(spec.volumes_from.clone()),
        ulimits: some_if_not_empty(
            spec.ulimits
                .iter()
                .map(|ulimit| ResourcesUlimits {
                    name: Some(ulimit.name.clone()),
                    soft: Some(ulimit.soft),
                    hard: Some(ulimit.hard),
                })
                .collect(),
        ),
        readonly_rootfs: Some(spec.read_only_root_filesystem),
        privileged: Some(spec.privileged),
        cap_add: some_if_not_empty(spec.capabilities_add.clone()),
        cap_drop: some_if_not_empty(spec.capabilities_drop.clone()),
        // Only an explicit request turns init on; `false` would override a
        // daemon-wide `--init` default the operator chose.
        init: spec.init_process.then_some(true),
        shm_size: spec.shared_memory_bytes.map(to_i64),
        extra_hosts: some_if_not_empty(spec.extra_hosts.clone()),
        dns: some_if_not_empty(spec.dns_servers.clone()),
        dns_search: some_if_not_empty(spec.dns_search_domains.clone()),
        ..Default::default()
    };

    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.entry_point.clone(),
        cmd: spec.command.clone(),
        env: some_if_not_empty(
            spec.environment
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect(),
        ),
        working_dir: spec.working_directory.clone(),
        user: spec.user.clone(),
        labels: Some(
            spec.labels
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        ),
        hostname: spec.hostname.clone(),
        exposed_ports: some_if_not_empty(exposed_ports),
        healthcheck,
        stop_timeout: spec
            .stop_timeout
            .map(|timeout| i64::from(whole_seconds_up(timeout))),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    }
}

/// Translates the engine's inspect answer into a [`ContainerState`].
fn container_state(
    inspected: ContainerInspectResponse,
    image_digest: Option<String>,
) -> ContainerState {
    let state = inspected.state.unwrap_or_default();
    let exit_code = state.exit_code.unwrap_or(0);
    let status = match state.status {
        Some(ContainerStateStatusEnum::CREATED) | None | Some(ContainerStateStatusEnum::EMPTY) => {
            Status::Created
        }
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::PAUSED
            | ContainerStateStatusEnum::RESTARTING
            | ContainerStateStatusEnum::STOPPING,
        ) => Status::Running,
        Some(
            ContainerStateStatusEnum::EXITED
            | ContainerStateStatusEnum::DEAD
            | ContainerStateStatusEnum::REMOVING,
        ) => Status::Exited { exit_code },
    };
    let health = match state.health.and_then(|health| health.status) {
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        _ => Health::Unknown,
    };
    let error = if state.oom_killed == Some(true) {
        Some("OOMKilled".to_owned())
    } else {
        state.error.filter(|error| !error.is_empty())
    };

    let network_settings = inspected.network_settings.unwrap_or_default();
    let mut bound_ports = Vec::new();
    for (key, bindings) in network_settings.ports.unwrap_or_default() {
        let Some((container_port, protocol)) = parse_port_key(&key) else {
            continue;
        };
        for binding in bindings.unwrap_or_default() {
            let Some(host_port) = binding
                .host_port
                .as_deref()
                .and_then(|port| port.parse::<u16>().ok())
            else {
                continue;
            };
            bound_ports.push(BoundPort {
                container_port,
                host_port,
                protocol,
                host_ip: binding.host_ip.unwrap_or_default(),
            });
        }
    }
    bound_ports.sort_by(|a, b| {
        (
            a.container_port,
            protocol_name(a.protocol),
            a.host_port,
            &a.host_ip,
        )
            .cmp(&(
                b.container_port,
                protocol_name(b.protocol),
                b.host_port,
                &b.host_ip,
            ))
    });
    bound_ports.dedup();

    let ip_addresses = network_settings
        .networks
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(network, endpoint)| {
            endpoint
                .ip_address
                .filter(|ip| !ip.is_empty())
                .map(|ip| (network, ip))
        })
        .collect();

    let config = inspected.config.unwrap_or_default();
    ContainerState {
        id: inspected.id.unwrap_or_default(),
        name: inspected
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        image: config.image.unwrap_or_default(),
        image_digest,
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        status,
        health,
        bound_ports,
        ip_addresses,
        started_at_ms: state.started_at.as_deref().and_then(parse_rfc3339_ms),
        finished_at_ms: state.finished_at.as_deref().and_then(parse_rfc3339_ms),
        error,
    }
}

/// `"8080/tcp"` → (8080, Tcp). Protocols Flotilla does not model (sctp) are skipped.
fn parse_port_key(key: &str) -> Option<(u16, Protocol)> {
    let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
    let protocol = match protocol {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    Some((port.parse().ok()?, protocol))
}

/// Parses the engine's RFC 3339 timestamps (`2024-05-01T12:00:00.123456789Z`,
/// or with a `+02:00` offset) into unix milliseconds. The engine's "never"
/// (`0001-01-01T00:00:00Z`) and anything before 1970 give `None`.
pub(crate) fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let slice = text.get(range)?;
        if slice.is_empty() || !slice.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        slice.parse().ok()
    };
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
    {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut position = 19;
    let mut millis = 0;
    if bytes[position] == b'.' {
        let fraction_start = position + 1;
        position = fraction_start;
        while position < bytes.len() && bytes[position].is_ascii_digit() {
            position += 1;
        }
        if position == fraction_start {
            return None;
        }
        // Milliseconds are the first three fraction digits, padded on the right.
        let fraction = &text[fraction_start..position.min(fraction_start + 3)];
        millis = format!("{fraction:0<3}").parse::<i64>().ok()?;
    }
    let offset_seconds = match bytes.get(position)? {
        b'Z' | b'z' if position + 1 == bytes.len() => 0,
        sign @ (b'+' | b'-') if position + 6 == bytes.len() && bytes[position + 3] == b':' => {
            let offset = digits(position + 1..position + 3)? * 3600
                + digits(position + 4..position + 6)? * 60;
            if *sign == b'+' {
                offset
            } else {
                -offset
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    if seconds < 0 {
        return None;
    }
    u64::try_from(seconds * 1000 + millis).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), so that no date crate is needed for one conversion.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bollard::models::{ContainerState as DockerState, NetworkSettings};

    use super::*;
    use crate::{HealthCheck, PortBinding, Ulimit};

    #[test]
    fn parses_engine_timestamps() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2024-05-01T12:00:00Z", Some(1_714_564_800_000)),
            ("2024-05-01T12:00:00.123456789Z", Some(1_714_564_800_123)),
            ("2024-05-01T12:00:00.5Z", Some(1_714_564_800_500)),
            ("2024-05-01T14:00:00.5+02:00", Some(1_714_564_800_500)),
            ("2024-05-01T10:30:00-01:30", Some(1_714_564_800_000)),
            ("2000-02-29T00:00:00Z", Some(951_782_400_000)),
            ("0001-01-01T00:00:00Z", None),
            ("", None),
            ("2024-05-01", None),
            ("2024-13-01T00:00:00Z", None),
            ("2024-05-01T12:00:00.Z", None),
            ("2024-05-01T12:00:00", None),
            ("2024-05-01T12:00:00Zjunk", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_rfc3339_ms(text), *expected, "{text}");
        }
    }

    #[test]
    fn finds_the_registry_digest_of_a_reference() {
        let digests = [
            "flotilla-test/busybox@sha256:aaa".to_owned(),
            "localhost:8440/team/web@sha256:bbb".to_owned(),
            "nginx@sha256:ccc".to_owned(),
        ];
        let cases: &[(&str, Option<&str>)] = &[
            ("localhost:8440/team/web:v1", Some("sha256:bbb")),
            ("localhost:8440/team/web", Some("sha256:bbb")),
            ("nginx", Some("sha256:ccc")),
            ("nginx:1.27", Some("sha256:ccc")),
            ("docker.io/library/nginx:latest", Some("sha256:ccc")),
            ("localhost:8440/team/web@sha256:ddd", Some("sha256:ddd")),
            // Pushed or pulled under another name only.
            ("web:latest", None),
        ];
        for (reference, expected) in cases {
            assert_eq!(
                registry_digest(&digests, reference).as_deref(),
                *expected,
                "{reference}"
            );
        }
        assert_eq!(registry_digest(&[], "web:latest"), None);
        assert_eq!(
            repository_of("localhost:8440/team/web:v1"),
            "localhost:8440/team/web"
        );
        assert_eq!(repository_of("localhost:8440/web"), "localhost:8440/web");
        assert_eq!(repository_of("index.docker.io/library/busybox"), "busybox");
    }

    #[test]
    fn splits_pull_references() {
        let cases: &[(&str, (&str, Option<&str>))] = &[
            ("busybox", ("busybox", Some("latest"))),
            ("busybox:1.36", ("busybox", Some("1.36"))),
            (
                "localhost:5000/team/app",
                ("localhost:5000/team/app", Some("latest")),
            ),
            (
                "localhost:5000/team/app:v2",
                ("localhost:5000/team/app", Some("v2")),
            ),
            ("app@sha256:abcd", ("app@sha256:abcd", None)),
        ];
        for (image, (from_image, tag)) in cases {
            let (actual_image, actual_tag) = pull_reference(image);
            assert_eq!(
                (actual_image.as_str(), actual_tag.as_deref()),
                (*from_image, *tag),
                "{image}"
            );
        }
    }

    #[test]
    fn create_body_honours_every_field() {
        let spec = ContainerSpec {
            name: "web".into(),
            image: "nginx:1".into(),
            entry_point: Some(vec!["/bin/sh".into(), "-c".into()]),
            command: Some(vec!["exec nginx".into()]),
            environment: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "x=y".into())]),
            working_directory: Some("/srv".into()),
            user: Some("1000:1000".into()),
            labels: BTreeMap::from([("k".into(), "v".into())]),
            cpu_shares: Some(512),
            memory_bytes: Some(256 << 20),
            memory_reservation_bytes: Some(128 << 20),
            cpu_period_micros: Some(100_000),
            cpu_quota_micros: Some(50_000),
            memory_swap_bytes: Some(256 << 20),
            network_mode: Some(NetworkMode::Network {
                name: "tasknet".into(),
                ipv4_address: Some("10.9.0.5".into()),
            }),
            port_bindings: vec![
                PortBinding {
                    container_port: 80,
                    protocol: Protocol::Tcp,
                    host_port: None,
                    host_ip: None,
                },
                PortBinding {
                    container_port: 53,
                    protocol: Protocol::Udp,
                    host_port: Some(5353),
                    host_ip: Some("127.0.0.1".into()),
                },
            ],
            links: vec!["db:database".into()],
            mounts: vec![
                Mount::Bind {
                    source: "/host/logs".into(),
                    target: "/logs".into(),
                    read_only: false,
                },
                Mount::Volume {
                    name: "data".into(),
                    target: "/data".into(),
                    read_only: true,
                },
                Mount::Tmpfs {
                    target: "/run".into(),
                    size_bytes: Some(65536),
                    options: vec!["noexec".into()],
                },
            ],
            volumes_from: vec!["sidecar:ro".into()],
            health_check: Some(HealthCheck {
                test: vec!["CMD-SHELL".into(), "true".into()],
                interval: Duration::from_secs(5),
                timeout: Duration::from_millis(1500),
                retries: 3,
                start_period: Duration::ZERO,
            }),
            stop_timeout: Some(Duration::from_millis(2500)),
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 4096,
            }],
            read_only_root_filesystem: true,
            privileged: false,
            capabilities_add: vec!["NET_ADMIN".into()],
            capabilities_drop: vec!["MKNOD".into()],
            init_process: true,
            shared_memory_bytes: Some(64 << 20),
            hostname: Some("web-1".into()),
            extra_hosts: vec!["db:10.0.0.2".into()],
            dns_servers: vec!["10.0.0.53".into()],
            dns_search_domains: vec!["svc.local".into()],
        };
        let body = serde_json::to_value(container_create_body(&spec)).expect("serializes");
        let expected = serde_json::json!({
            "Image": "nginx:1",
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["exec nginx"],
            "Env": ["A=1", "B=x=y"],
            "WorkingDir": "/srv",
            "User": "1000:1000",
            "Labels": {"k": "v"},
            "Hostname": "web-1",
            "ExposedPorts": {"53/udp": {}, "80/tcp": {}},
            "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000_i64, "Timeout": 1_500_000_000_i64, "Retries": 3},
            "StopTimeout": 3,
            "HostConfig": {
                "CpuShares": 512,
                "CpuPeriod": 100_000,
                "CpuQuota": 50_000,
                "Memory": 268_435_456,
                "MemorySwap": 268_435_456,
                "MemoryReservation": 134_217_728,
                "NetworkMode": "tasknet",
                "PortBindings": {
                    "80/tcp": [{"HostPort": ""}],
                    "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}]
                },
                "Links": ["db:database"],
                "Binds": ["/host/logs:/logs", "data:/data:ro"],
                "Tmpfs": {"/run": "size=65536,noexec"},
                "VolumesFrom": ["sidecar:ro"],
                "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 4096}],
                "ReadonlyRootfs": true,
                "Privileged": false,
                "CapAdd": ["NET_ADMIN"],
                "CapDrop": ["MKNOD"],
                "Init": true,
                "ShmSize": 67_108_864,
                "ExtraHosts": ["db:10.0.0.2"],
                "Dns": ["10.0.0.53"],
                "DnsSearch": ["svc.local"]
            },
            "NetworkingConfig": {"EndpointsConfig": {"tasknet": {"IPAMConfig": {"IPv4Address": "10.9.0.5"}}}}
        });
        assert_eq!(
            body,
            expected,
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    }

    #[test]
    fn create_body_of_minimal_spec_leaves_engine_defaults() {
        let spec = ContainerSpec {
            image: "app".into(),
            network_mode: Some(NetworkMode::Container { id: "abc".into() }),
            ..Default::default()
        };
        let body = serde_json::to_value(container_create_body(&spec)).expect("serializes");
        let expected = serde_json::json!({
            "Image": "app",
            "Labels": {},
            "HostConfig": {"NetworkMode": "container:abc", "ReadonlyRootfs": false, "Privileged": false}
        });
        assert_eq!(body, expected);
    }

    #[test]
    fn maps_inspect_answer() {
        let inspected: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "abc123",
            "Name": "/web",
            "Image": "sha256:feed",
            "Config": {"Image": "nginx:1", "Labels": {"k": "v"}},
            "State": {
                "Status": "exited", "Running": false, "OOMKilled": true, "ExitCode": 137, "Error": "",
                "StartedAt": "2024-05-01T12:00:00.25Z", "FinishedAt": "2024-05-01T12:00:01Z",
                "Health": {"Status": "unhealthy", "FailingStreak": 3, "Log": []}
            },
            "NetworkSettings": {
                "Ports": {
                    "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "49160"}, {"HostIp": "::", "HostPort": "49160"}],
                    "443/tcp": null,
                    "9/sctp": [{"HostIp": "0.0.0.0", "HostPort": "9"}]
                },
                "Networks": {"bridge": {"IPAddress": "172.17.0.2"}, "other": {"IPAddress": ""}}
            }
        }))
        .expect("parses");
        let state = container_state(inspected, Some("sha256:digest".into()));
        assert_eq!(
            state,
            ContainerState {
                id: "abc123".into(),
                name: "web".into(),
                image: "nginx:1".into(),
                image_digest: Some("sha256:digest".into()),
                labels: BTreeMap::from([("k".into(), "v".into())]),
                status: Status::Exited { exit_code: 137 },
                health: Health::Unhealthy,
                bound_ports: vec![
                    BoundPort {
                        container_port: 80,
                        host_port: 49160,
                        protocol: Protocol::Tcp,
                        host_ip: "0.0.0.0".into()
                    },
                    BoundPort {
                        container_port: 80,
                        host_port: 49160,
                        protocol: Protocol::Tcp,
                        host_ip: "::".into()
                    },
                ],
                ip_addresses: BTreeMap::from([("bridge".into(), "172.17.0.2".into())]),
                started_at_ms: Some(1_714_564_800_250),
                finished_at_ms: Some(1_714_564_801_000),
                error: Some("OOMKilled".into()),
            }
        );
    }

    #[test]
    fn maps_created_container_without_times() {
        let inspected = ContainerInspectResponse {
            state: Some(DockerState {
                status: Some(ContainerStateStatusEnum::CREATED),
                started_at: Some("0001-01-01T00:00:00Z".into()),
                error: Some("".into()),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings::default()),
            ..Default::default()
        };
        let state = container_state(inspected, None);
        assert_eq!(state.status, Status::Created);
        assert_eq!(state.started_at_ms, None);
        assert_eq!(state.error, None);
        assert_eq!(state.health, Health::Unknown);
    }
}
