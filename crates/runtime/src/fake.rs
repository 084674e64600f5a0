//! An in-memory [`ContainerRuntime`] for tests and simulated hosts.
//!
//! One fake is one host's engine. It is cheap enough to run thousands of
//! containers per process: all state sits behind one mutex, there is no
//! thread or task per container, and time-driven changes (a container that
//! exits on its own) are computed lazily from an injected [`Clock`] whenever
//! the state is looked at, so simulations can run on virtual time.
//!
//! What a container does is chosen by its image name:
//!
//! | image | behaviour |
//! | --- | --- |
//! | `sim/fail-pull[:any]` | pulling fails with [`RuntimeError::Pull`] |
//! | `sim/exit:CODE` | exits with `CODE` [`FakeRuntime::with_exit_delay_ms`] after start |
//! | `sim/oom[:any]` | is killed after the exit delay: exit 137, error `OOMKilled` |
//! | `sim/unhealthy[:any]` | runs; its health check (if any) reports unhealthy |
//! | `sim/cpu:P` | runs, using P% of its CPU units (its shares; one vCPU when it reserves none) |
//! | `sim/mem:P` | runs, using P% of its memory limit (its reservation, or 1 GiB, without one) |
//! | `sim/log:N` | runs, printing N numbered lines a second on stdout (`NAME line K`) |
//! | anything else | runs until stopped; healthy if it has a health check |
//!
//! A stop makes a running container exit with 143, as a process that honours
//! SIGTERM does under Docker.
//!
//! The engine's rules that an agent can trip over are enforced with the
//! engine's own wording: create needs a local image and a free name; host
//! ports and fixed addresses are exclusive while a container runs; a
//! `container:<id>` network mode needs that container to exist (at create)
//! and run (at start); a volume in use cannot be removed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::logs::{LogLine, LogSource, LogStream};
use crate::{
    BoundPort, ContainerRuntime, ContainerSpec, ContainerState, ContainerStats, Health, Mount,
    NetworkInfo, NetworkMode, Protocol, PullPolicy, RegistryAuth, RuntimeError, RuntimeFuture,
    Status,
};

/// How long after start a `sim/exit:CODE` or `sim/oom` container exits,
/// unless configured otherwise.
pub const DEFAULT_EXIT_DELAY_MS: u64 = 100;
/// Docker's default ephemeral port range (`/proc/sys/net/ipv4/ip_local_port_range`
/// is not consulted by the fake).
pub const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 49153..=65535;
/// Calls kept for [`FakeRuntime::calls`]; older ones are dropped so that a
/// long simulation does not grow without bound.
pub const MAX_RECORDED_CALLS: usize = 65_536;
/// The engine's default bridge, which every host has.
const DEFAULT_BRIDGE: (&str, &str) = ("bridge", "172.17.0.0/16");
/// Exit code of a process killed by SIGTERM (128 + 15).
const EXIT_CODE_SIGTERM: i64 = 143;
/// Exit code of a process killed by SIGKILL (128 + 9), as the OOM killer does.
const EXIT_CODE_SIGKILL: i64 = 137;
/// Fastest `sim/log:N` container.
pub const LOG_LINES_PER_SECOND_MAX: u64 = 100_000;
/// Lines one read of a fake container's output takes at most.
const LOG_LINES_PER_READ_MAX: u64 = 1_000;
/// How often a followed fake container is looked at for new lines.
const LOG_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Memory a running fake container reports using.
const FAKE_MEMORY_USAGE_BYTES: u64 = 4 << 20;
/// Memory limit reported for a container without a hard limit: the host's.
const FAKE_HOST_MEMORY_BYTES: u64 = 8 << 30;

/// Source of the current time in unix milliseconds. Closures
/// (`|| now_ms`) implement it, so any clock of the caller's can be adapted.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

impl<F> Clock for F
where
    F: Fn() -> u64 + Send + Sync + 'static,
{
    fn now_ms(&self) -> u64 {
        self()
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    now_ms: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock {
            now_ms: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    pub fn set_ms(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        let by_ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.now_ms.fetch_add(by_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// One call made to the fake, for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeCall {
    Pull {
        image: String,
        policy: PullPolicy,
        authenticated: bool,
    },
    Create(Box<ContainerSpec>),
    Start {
        id: String,
    },
    Stop {
        id: String,
        timeout: Duration,
    },
    Remove {
        id: String,
    },
    Inspect {
        id: String,
    },
    List {
        labels: Vec<(String, String)>,
    },
    Stats {
        id: String,
    },
    EnsureNetwork {
        name: String,
        subnet_cidr: String,
    },
    ListNetworks,
    RemoveNetwork {
        name: String,
    },
    EnsureVolume {
        name: String,
    },
    RemoveVolume {
        name: String,
    },
}

/// See the module documentation.
pub struct FakeRuntime {
    clock: Arc<dyn Clock>,
    exit_delay_ms: u64,
    start_delay_ms: u64,
    id_seed: u64,
    state: Mutex<FakeState>,
}

impl std::fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRuntime")
            .field("exit_delay_ms", &self.exit_delay_ms)
            .field("start_delay_ms", &self.start_delay_ms)
            .field("id_seed", &self.id_seed)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    RunUntilStopped,
    /// Prints this many lines a second while it runs; the lines are computed
    /// from the run's start and end times when they are read.
    Log {
        lines_per_second: u64,
    },
    Exit {
        exit_code: i64,
        oom_killed: bool,
    },
    Unhealthy,
}

struct FakeContainer {
    spec: ContainerSpec,
    behaviour: Behaviour,
    status: Status,
    /// Incremented by every start, so that an exit scheduled for an earlier
    /// run does not end a restarted one.
    run: u64,
    started_at_ms: Option<u64>,
    finished_at_ms: Option<u64>,
    error: Option<String>,
    bound_ports: Vec<BoundPort>,
    /// Network name → (address as u32), held while running.
    ip_addresses: BTreeMap<String, u32>,
}

struct FakeNetwork {
    first_host: u32,
    last_host: u32,
    network: u32,
    prefix_len: u8,
    allocated: HashSet<u32>,
    next: u32,
}

#[derive(Default)]
struct FakeState {
    unavailable: bool,
    local_images: HashSet<String>,
    /// By id; ids grow with creation order, so iteration is creation order.
    containers: BTreeMap<String, FakeContainer>,
    names: HashMap<String, String>,
    created_count: u64,
    /// (exit time, run, id) of containers that exit on their own.
    pending_exits: BinaryHeap<Reverse<(u64, u64, String)>>,
    /// (port, is_udp) bound on the host.
    bound_host_ports: HashSet<(u16, bool)>,
    next_ephemeral_port: u16,
    networks: BTreeMap<String, FakeNetwork>,
    volumes: BTreeMap<String, BTreeMap<String, String>>,
    calls: VecDeque<FakeCall>,
}

impl FakeRuntime {
    /// A fake host whose sense of time comes from `clock`.
    pub fn new(clock: impl Clock) -> FakeRuntime {
        let mut state = FakeState {
            next_ephemeral_port: *EPHEMERAL_PORTS.start(),
            ..Default::default()
        };
        let (bridge, subnet) = DEFAULT_BRIDGE;
        if let Ok(network) = FakeNetwork::parse(subnet) {
            state.networks.insert(bridge.to_owned(), network);
        }
        FakeRuntime {
            clock: Arc::new(clock),
            exit_delay_ms: DEFAULT_EXIT_DELAY_MS,
            start_delay_ms: 0,
            id_seed: 0,
            state: Mutex::new(state),
        }
    }

    /// How long `sim/exit:CODE` and `sim/oom` containers run.
    pub fn with_exit_delay_ms(mut self, exit_delay_ms: u64) -> FakeRuntime {
        self.exit_delay_ms = exit_delay_ms;
        self
    }

    /// How long each `start_container` call takes (a tokio sleep, so a
    /// paused tokio clock drives it in tests).
    pub fn with_start_delay_ms(mut self, start_delay_ms: u64) -> FakeRuntime {
        self.start_delay_ms = start_delay_ms;
        self
    }

    /// Makes this host's container ids distinct from other fake hosts'
    /// (the seed is the first 16 hex digits of every id).
    pub fn with_id_seed(mut self, id_seed: u64) -> FakeRuntime {
        self.id_seed = id_seed;
        self
    }

    /// Marks an image as present locally, as if pulled earlier.
    pub fn with_local_image(self, image: &str) -> FakeRuntime {
        self.lock().local_images.insert(normalize_image(image));
        self
    }

    /// Every call so far (at most [`MAX_RECORDED_CALLS`], newest last).
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.iter().cloned().collect()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// While set, every call fails with [`RuntimeError::Unavailable`], as
    /// when the engine is down or its socket is gone.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
    }

    /// Makes a running container exit now with `exit_code` (a crash, or with
    /// `error = Some("OOMKilled")` an OOM kill). Returns whether it was running.
    pub fn exit_container(&self, id: &str, exit_code: i64, error: Option<&str>) -> bool {
        let now_ms = self.clock.now_ms();
        let mut state = self.lock();
        state.settle(now_ms);
        let Some(id) = state.resolve(id) else {
            return false;
        };
        state.finish(&id, now_ms, exit_code, error.map(str::to_owned))
    }

    /// The spec a container was created from.
    pub fn container_spec(&self, id: &str) -> Option<ContainerSpec> {
        let state = self.lock();
        let id = state.resolve(id)?;
        state
            .containers
            .get(&id)
            .map(|container| container.spec.clone())
    }

    /// Names of the networks that exist, the default bridge included.
    pub fn networks(&self) -> Vec<String> {
        self.lock().networks.keys().cloned().collect()
    }

    /// Names of the volumes that exist.
    pub fn volumes(&self) -> Vec<String> {
        self.lock().volumes.keys().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        // A panicking test thread must not take every other test's fake down.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the call, brings lazily computed state up to now and refuses
    /// everything while the engine is "down".
    fn begin(&self, call: FakeCall) -> Result<(MutexGuard<'_, FakeState>, u64), RuntimeError> {
        let now_ms = self.clock.now_ms();
        let mut state = self.lock();
        if state.calls.len() >= MAX_RECORDED_CALLS {
            state.calls.pop_front();
        }
        state.calls.push_back(call);
        if state.unavailable {
            return Err(RuntimeError::Unavailable {
                reason: "the fake engine is down".to_owned(),
            });
        }
        state.settle(now_ms);
        Ok((state, now_ms))
    }

    fn pull(
        &self,
        image: &str,
        policy: PullPolicy,
        auth: Option<&RegistryAuth>,
    ) -> Result<Option<String>, RuntimeError> {
        let (mut state, _) = self.begin(FakeCall::Pull {
            image: image.to_owned(),
            policy,
            authenticated: auth.is_some(),
        })?;
        let normalized = normalize_image(image);
        let is_local = state.local_images.contains(&normalized);
        let pull_error = |reason: String| RuntimeError::Pull {
            image: image.to_owned(),
            reason,
        };
        match policy {
            PullPolicy::IfNotPresent | PullPolicy::Never if is_local => {
                return Ok(Some(fake_digest(&normalized)))
            }
            PullPolicy::Never => {
                return Err(pull_error(
                    "image is not present locally and the pull policy forbids pulling".to_owned(),
                ))
            }
            PullPolicy::Always | PullPolicy::IfNotPresent => {}
        }
        if repository(image) == "sim/fail-pull" {
            return Err(pull_error(format!(
                "pull access denied for {}, repository does not exist or may require 'docker login'",
                repository(image)
            )));
        }
        behaviour(image).map_err(pull_error)?;
        let digest = fake_digest(&normalized);
        state.local_images.insert(normalized);
        Ok(Some(digest))
    }

    fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let (mut state, _) = self.begin(FakeCall::Create(Box::new(spec.clone())))?;
        let refuse = |reason: String| RuntimeError::Engine {
            operation: "create container",
            reason,
        };
        if !state.local_images.contains(&normalize_image(&spec.image)) {
            return Err(refuse(format!("No such image: {}", spec.image)));
        }
        let behaviour = behaviour(&spec.image).map_err(refuse)?;
        if let Some(existing) = state.names.get(&spec.name) {
            return Err(refuse(format!(
                "Conflict. The container name \"/{}\" is already in use by container \"{existing}\". \
                 You have to remove (or rename) that container to be able to reuse that name.",
                spec.name
            )));
        }
        match &spec.network_mode {
            Some(NetworkMode::Container { id }) => {
                if !spec.port_bindings.is_empty() {
                    return Err(refuse(
                        "conflicting options: port publishing and the container type network mode"
                            .to_owned(),
                    ));
                }
                if state.resolve(id).is_none() {
                    return Err(refuse(format!("No such container: {id}")));
                }
            }
            Some(NetworkMode::Network { name, .. }) if !state.networks.contains_key(name) => {
                return Err(refuse(format!("network {name} not found")));
            }
            _ => {}
        }

        state.created_count += 1;
        let id = format!("{:016x}{:048x}", self.id_seed, state.created_count);
        let name = if spec.name.is_empty() {
            format!("fake_{}", state.created_count)
        } else {
            spec.name.clone()
        };
        // The engine creates named volumes a container mounts on first use.
        for mount in &spec.mounts {
            if let Mount::Volume { name, .. } = mount {
                state.volumes.entry(name.clone()).or_default();
            }
        }
        let mut spec = spec.clone();
        spec.name = name.clone();
        state.names.insert(name, id.clone());
        state.containers.insert(
            id.clone(),
            FakeContainer {
                spec,
                behaviour,
                status: Status::Created,
                run: 0,
                started_at_ms: None,
                finished_at_ms: None,
                error: None,
                bound_ports: Vec::new(),
                ip_addresses: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let (mut state, now_ms) = self.begin(FakeCall::Start { id: id.to_owned() })?;
        let resolved = state
            .resolve(id)
            .ok_or_else(|| RuntimeError::NoSuchContainer { id: id.to_owned() })?;
        let state = &mut *state;
        let Some(container) = state.containers.get(&resolved) else {
            return Err(RuntimeError::NoSuchContainer { id: id.to_owned() });
        };
        if container.status == Status::Running {
            return Ok(());
        }
        let refuse = |reason: String| RuntimeError::Engine {
            operation: "start container",
            reason,
        };

        // Work out every address and port first and commit only when all are
        // free, so that a refused start leaves nothing allocated.
        let network_mode = container
            .spec
            .network_mode
            .clone()
            .unwrap_or(NetworkMode::Bridge);
        let port_bindings = container.spec.port_bindings.clone();
        // (network, address, whether the engine chose it)
        let mut addresses: Vec<(String, u32, bool)> = Vec::new();
        let publishes_ports = match &network_mode {
            NetworkMode::Bridge => {
                let (bridge, _) = DEFAULT_BRIDGE;
                addresses.push((
                    bridge.to_owned(),
                    state.free_address(bridge, None).map_err(refuse)?,
                    true,
                ));
                true
            }
            NetworkMode::Network { name, ipv4_address } => {
                let address = state
                    .free_address(name, ipv4_address.as_deref())
                    .map_err(refuse)?;
                addresses.push((name.clone(), address, ipv4_address.is_none()));
                true
            }
            NetworkMode::Container { id: joined } => {
                let running = state
                    .resolve(joined)
                    .and_then(|joined| state.containers.get(&joined))
                    .is_some_and(|joined| joined.status == Status::Running);
                if !running {
                    return Err(refuse(format!(
                        "cannot join network of a non running container: {joined}"
                    )));
                }
                false
            }
            // Host networking publishes nothing: the engine ignores bindings.
            NetworkMode::Host | NetworkMode::None => false,
        };
        let mut bound_ports = Vec::new();
        if publishes_ports {
            let mut taken: HashSet<(u16, bool)> = HashSet::new();
            for binding in &port_bindings {
                let is_udp = binding.protocol == Protocol::Udp;
                let host_ip = binding
                    .host_ip
                    .clone()
                    .unwrap_or_else(|| "0.0.0.0".to_owned());
                let host_port = match binding.host_port {
                    Some(port) => {
                        if state.bound_host_ports.contains(&(port, is_udp))
                            || taken.contains(&(port, is_udp))
                        {
                            return Err(refuse(format!(
                                "Bind for {host_ip}:{port} failed: port is already allocated"
                            )));
                        }
                        port
                    }
                    None => state.free_ephemeral_port(is_udp, &taken).map_err(refuse)?,
                };
                taken.insert((host_port, is_udp));
                bound_ports.push(BoundPort {
                    container_port: binding.container_port,
                    host_port,
                    protocol: binding.protocol,
                    host_ip,
                });
            }
        }

        for (network, address, chosen) in &addresses {
            if let Some(network) = state.networks.get_mut(network) {
                network.allocated.insert(*address);
                // Search on from here next time, so that handing out an
                // address does not rescan every address already taken.
                if *chosen {
                    network.next = if *address >= network.last_host {
                        network.first_host
                    } else {
                        address + 1
                    };
                }
            }
        }
        for port in &bound_ports {
            state
                .bound_host_ports
                .insert((port.host_port, port.protocol == Protocol::Udp));
        }
        let Some(container) = state.containers.get_mut(&resolved) else {
            return Err(RuntimeError::NoSuchContainer { id: id.to_owned() });
        };
        container.status = Status::Running;
        container.run += 1;
        container.started_at_ms = Some(now_ms);
        container.finished_at_ms = None;
        container.error = None;
        container.bound_ports = bound_ports;
        container.ip_addresses = addresses
            .into_iter()
            .map(|(network, address, _)| (network, address))
            .collect();
        if let Behaviour::Exit { .. } = container.behaviour {
            let run = container.run;
            state.pending_exits.push(Reverse((
                now_ms.saturating_add(self.exit_delay_ms),
                run,
                resolved,
            )));
        }
        Ok(())
    }

    fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let (mut state, now_ms) = self.begin(FakeCall::Stop {
            id: id.to_owned(),
            timeout,
        })?;
        let resolved = state
            .resolve(id)
            .ok_or_else(|| RuntimeError::NoSuchContainer { id: id.to_owned() })?;
        // Stopping a container that is not running is a no-op, as the
        // engine's 304 is.
        state.finish(&resolved, now_ms, EXIT_CODE_SIGTERM, None);
        Ok(())
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let (mut state, now_ms) = self.begin(FakeCall::Remove { id: id.to_owned() })?;
        let resolved = state
            .resolve(id)
            .ok_or_else(|| RuntimeError::NoSuchContainer { id: id.to_owned() })?;
        // Removal is forced: a running container is killed first.
        state.finish(&resolved, now_ms, EXIT_CODE_SIGKILL, None);
        if let Some(container) = state.containers.remove(&resolved) {
            state.names.remove(&container.spec.name);
        }
        Ok(())
    }

    fn inspect(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let (state, _) = self.begin(FakeCall::Inspect { id: id.to_owned() })?;
        let resolved = state
            .resolve(id)
            .ok_or_else(|| RuntimeError::NoSuchContainer { id: id.to_owned() })?;
        state
            .container_state(&resolved)
            .ok_or_else(|| RuntimeError::NoSuchContainer { id: id.to_owned() })
    }

    fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerState>, RuntimeError> {
        let call = FakeCall::List {
            labels: labels
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        };
        let (state, _) = self.begin(call)?;
        Ok(state
            .containers
            .iter()
            .filter(|(_, container)| {
                labels.iter().all(|(key, value)| {
                    container.spec.labels.get(*key).map(String::as_str) == Some(*value)
                })
            })
            .filter_map(|(id, _)| state.container_state(id))
            .collect())
    }

    fn stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        let (state, now_ms) = self.begin(FakeCall::Stats { id: id.to_owned() })?;
        let resolved = state
            .resolve(id)
            .ok_or_else(|| RuntimeError::NoSuchContainer { id: id.to_owned() })?;
        let Some(container) = state.containers.get(&resolved) else {
            return Err(RuntimeError::NoSuchContainer { id: id.to_owned() });
        };
        // The engine reports zeros for a container that is not running.
        if container.status != Status::Running {
            return Ok(ContainerStats::default());
        }
        let running_ms = now_ms.saturating_sub(container.started_at_ms.unwrap_or(now_ms));
        let load = declared_load(&container.spec.image);
        // A steady tenth of one CPU unless the image declares its load, so
        // that rates computed from two reads are stable and easy to assert on.
        let cpu_ns_per_ms = match load {
            Some(DeclaredLoad::CpuPercent(percent)) => {
                let units = container
                    .spec
                    .cpu_shares
                    .filter(|shares| *shares >= SIM_CPU_SHARES_MIN)
                    .unwrap_or(CPU_UNITS_PER_VCPU);
                // ns of CPU per ms of wall time: 1,000,000 per vCPU.
                units.saturating_mul(percent).saturating_mul(1_000_000) / CPU_UNITS_PER_VCPU / 100
            }
            _ => 100_000,
        };
        let memory_usage_bytes = match load {
            Some(DeclaredLoad::MemoryPercent(percent)) => {
                let limit = container
                    .spec
                    .memory_bytes
                    .or(container.spec.memory_reservation_bytes)
                    .unwrap_or(SIM_MEMORY_BASE_BYTES);
                limit.saturating_mul(percent) / 100
            }
            _ => FAKE_MEMORY_USAGE_BYTES,
        };
        Ok(ContainerStats {
            cpu_total_usage_ns: running_ms.saturating_mul(cpu_ns_per_ms),
            system_cpu_usage_ns: now_ms.saturating_mul(1_000_000),
            memory_usage_bytes,
            memory_limit_bytes: container
                .spec
                .memory_bytes
                .unwrap_or(FAKE_HOST_MEMORY_BYTES),
            network_rx_bytes: running_ms.saturating_mul(10),
            network_tx_bytes: running_ms.saturating_mul(5),
            block_read_bytes: running_ms.saturating_mul(2),
            block_write_bytes: running_ms,
        })
    }

    fn create_network_if_missing(&self, name: &str, subnet_cidr: &str) -> Result<(), RuntimeError> {
        let call = FakeCall::EnsureNetwork {
            name: name.to_owned(),
            subnet_cidr: subnet_cidr.to_owned(),
        };
        let (mut state, _) = self.begin(call)?;
        if state.networks.contains_key(name) {
            return Ok(());
        }
        let refuse = |reason: String| RuntimeError::Engine {
            operation: "create network",
            reason,
        };
        let network = FakeNetwork::parse(subnet_cidr).map_err(refuse)?;
        if state
            .networks
            .values()
            .any(|existing| existing.overlaps(&network))
        {
            return Err(RuntimeError::SubnetInUse {
                network: name.to_owned(),
                subnet_cidr: subnet_cidr.to_owned(),
                reason: "Pool overlaps with other one on this address space".to_owned(),
            });
        }
        state.networks.insert(name.to_owned(), network);
        Ok(())
    }

    fn network_infos(&self) -> Result<Vec<NetworkInfo>, RuntimeError> {
        let (state, _) = self.begin(FakeCall::ListNetworks)?;
        Ok(state
            .networks
            .iter()
            .take(crate::NETWORKS_LISTED_MAX)
            .map(|(name, network)| NetworkInfo {
                name: name.clone(),
                ipv4_subnets: vec![network.cidr()],
            })
            .collect())
    }

    fn delete_network(&self, name: &str) -> Result<(), RuntimeError> {
        let (mut state, _) = self.begin(FakeCall::RemoveNetwork {
            name: name.to_owned(),
        })?;
        let in_use = state
            .containers
            .values()
            .any(|container| container.ip_addresses.contains_key(name));
        if in_use {
            // The engine's own refusal for a network with running containers.
            return Err(RuntimeError::Engine {
                operation: "remove network",
                reason: format!(
                    "error while removing network: network {name} has active endpoints"
                ),
            });
        }
        state.networks.remove(name);
        Ok(())
    }

    fn create_volume_if_missing(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let (mut state, _) = self.begin(FakeCall::EnsureVolume {
            name: name.to_owned(),
        })?;
        state
            .volumes
            .entry(name.to_owned())
            .or_insert_with(|| labels.clone());
        Ok(())
    }

    fn delete_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let (mut state, _) = self.begin(FakeCall::RemoveVolume {
            name: name.to_owned(),
        })?;
        let users: Vec<&str> =
            state
                .containers
                .iter()
                .filter(|(_, container)| {
                    container.spec.mounts.iter().any(
                        |mount| matches!(mount, Mount::Volume { name: used, .. } if used == name),
                    )
                })
                .map(|(id, _)| id.as_str())
                .collect();
        if !users.is_empty() {
            return Err(RuntimeError::Engine {
                operation: "remove volume",
                reason: format!("remove {name}: volume is in use - [{}]", users.join(", ")),
            });
        }
        state.volumes.remove(name);
        Ok(())
    }
}

impl FakeState {
    /// Applies every self-inflicted exit due by `now_ms`.
    fn settle(&mut self, now_ms: u64) {
        while let Some(Reverse((due_ms, _, _))) = self.pending_exits.peek() {
            if *due_ms > now_ms {
                break;
            }
            let Some(Reverse((due_ms, run, id))) = self.pending_exits.pop() else {
                break;
            };
            let Some(container) = self.containers.get(&id) else {
                continue;
            };
            if container.run != run {
                continue;
            }
            if let Behaviour::Exit {
                exit_code,
                oom_killed,
            } = container.behaviour
            {
                let error = oom_killed.then(|| "OOMKilled".to_owned());
                self.finish(&id, due_ms, exit_code, error);
            }
        }
    }

    /// Ends a running container and frees what it held; false if it was not running.
    fn finish(&mut self, id: &str, now_ms: u64, exit_code: i64, error: Option<String>) -> bool {
        let Some(container) = self.containers.get_mut(id) else {
            return false;
        };
        if container.status != Status::Running {
            return false;
        }
        container.status = Status::Exited { exit_code };
        container.finished_at_ms = Some(now_ms);
        container.error = error;
        for port in container.bound_ports.drain(..) {
            self.bound_host_ports
                .remove(&(port.host_port, port.protocol == Protocol::Udp));
        }
        for (network, address) in std::mem::take(&mut container.ip_addresses) {
            if let Some(network) = self.networks.get_mut(&network) {
                network.allocated.remove(&address);
            }
        }
        true
    }

    /// The id of a container given by id or name, as the engine accepts both.
    fn resolve(&self, id_or_name: &str) -> Option<String> {
        if self.containers.contains_key(id_or_name) {
            return Some(id_or_name.to_owned());
        }
        self.names.get(id_or_name.trim_start_matches('/')).cloned()
    }

    fn free_address(&self, network_name: &str, fixed: Option<&str>) -> Result<u32, String> {
        let network = self
            .networks
            .get(network_name)
            .ok_or_else(|| format!("network {network_name} not found"))?;
        match fixed {
            Some(text) => {
                let address: Ipv4Addr = text.parse().map_err(|_| {
                    format!("invalid IPv4 address {text} for network {network_name}")
                })?;
                let address = u32::from(address);
                if !(network.first_host..=network.last_host).contains(&address) {
                    return Err(format!("no configured subnet contains IP address {text}"));
                }
                if network.allocated.contains(&address) {
                    return Err(format!("Address already in use: {text}"));
                }
                Ok(address)
            }
            None => {
                let size = network.last_host - network.first_host + 1;
                (0..size)
                    .map(|offset| {
                        network.first_host + (network.next - network.first_host + offset) % size
                    })
                    .find(|candidate| !network.allocated.contains(candidate))
                    .ok_or_else(|| format!("no available IPv4 addresses on network {network_name}"))
            }
        }
    }

    fn free_ephemeral_port(
        &mut self,
        is_udp: bool,
        taken: &HashSet<(u16, bool)>,
    ) -> Result<u16, String> {
        let first = u32::from(*EPHEMERAL_PORTS.start());
        let size = u32::from(*EPHEMERAL_PORTS.end()) - first + 1;
        let start = u32::from(self.next_ephemeral_port).clamp(first, first + size - 1) - first;
        for offset in 0..size {
            let Ok(port) = u16::try_from(first + (start + offset) % size) else {
                continue;
            };
            if !self.bound_host_ports.contains(&(port, is_udp)) && !taken.contains(&(port, is_udp))
            {
                // Continue after this one next time, as the engine does, so a
                // just-released port is not handed out again at once.
                self.next_ephemeral_port =
                    u16::try_from(first + (start + offset + 1) % size).unwrap_or(port);
                return Ok(port);
            }
        }
        Err("no free ports in the ephemeral range".to_owned())
    }

    fn container_state(&self, id: &str) -> Option<ContainerState> {
        let container = self.containers.get(id)?;
        let health = match (
            &container.spec.health_check,
            container.status,
            container.behaviour,
        ) {
            (None, _, _) | (_, Status::Created, _) => Health::Unknown,
            (Some(_), _, Behaviour::Unhealthy) => Health::Unhealthy,
            (Some(_), _, _) => Health::Healthy,
        };
        Some(ContainerState {
            id: id.to_owned(),
            name: container.spec.name.clone(),
            image: container.spec.image.clone(),
            image_digest: Some(fake_digest(&normalize_image(&container.spec.image))),
            labels: container.spec.labels.clone(),
            status: container.status,
            health,
            bound_ports: container.bound_ports.clone(),
            ip_addresses: container
                .ip_addresses
                .iter()
                .map(|(network, address)| (network.clone(), Ipv4Addr::from(*address).to_string()))
                .collect(),
            started_at_ms: container.started_at_ms,
            finished_at_ms: container.finished_at_ms,
            error: container.error.clone(),
        })
    }
}

impl FakeNetwork {
    fn parse(subnet_cidr: &str) -> Result<FakeNetwork, String> {
        let invalid = || format!("invalid subnet {subnet_cidr}");
        let (address, prefix_len) = subnet_cidr.split_once('/').ok_or_else(invalid)?;
        let address: Ipv4Addr = address.parse().map_err(|_| invalid())?;
        let prefix_len: u8 = prefix_len.parse().map_err(|_| invalid())?;
        // A /30 leaves one usable address after the gateway; anything
        // smaller leaves none.
        if !(1..=30).contains(&prefix_len) {
            return Err(invalid());
        }
        let mask = u32::MAX << (32 - prefix_len);
        let network = u32::from(address) & mask;
        let broadcast = network | !mask;
        // .1 is the gateway, as on an engine bridge.
        let first_host = network + 2;
        Ok(FakeNetwork {
            first_host,
            last_host: broadcast - 1,
            network,
            prefix_len,
            allocated: HashSet::new(),
            next: first_host,
        })
    }

    fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.network), self.prefix_len)
    }

    fn overlaps(&self, other: &FakeNetwork) -> bool {
        let shorter = self.prefix_len.min(other.prefix_len);
        let mask = u32::MAX << (32 - shorter);
        self.network & mask == other.network & mask
    }
}

/// The repository part of an image reference (no tag, no digest).
/// CPU units of one vCPU, as ECS counts them.
const CPU_UNITS_PER_VCPU: u64 = 1_024;
/// Shares below this are the engine's floor for "no reservation" (the agent
/// passes 2), not a reservation to take a percentage of.
const SIM_CPU_SHARES_MIN: u64 = 128;
/// What `sim/mem:P` takes a percentage of when the container has no limit.
const SIM_MEMORY_BASE_BYTES: u64 = 1 << 30;

/// The load a `sim/cpu:P` or `sim/mem:P` image declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeclaredLoad {
    CpuPercent(u64),
    MemoryPercent(u64),
}

fn declared_load(image: &str) -> Option<DeclaredLoad> {
    let percent = tag(image)?.parse::<u64>().ok()?.min(10_000);
    match repository(image) {
        "sim/cpu" => Some(DeclaredLoad::CpuPercent(percent)),
        "sim/mem" => Some(DeclaredLoad::MemoryPercent(percent)),
        _ => None,
    }
}

fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let name_start = image.rfind('/').map_or(0, |slash| slash + 1);
    match image[name_start..].rfind(':') {
        Some(colon) => &image[..name_start + colon],
        None => image,
    }
}

fn tag(image: &str) -> Option<&str> {
    let repository = repository(image);
    image[repository.len()..].strip_prefix(':')
}

/// `busybox` and `busybox:latest` are one image to the engine.
fn normalize_image(image: &str) -> String {
    if image.contains('@') || tag(image).is_some() {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

fn behaviour(image: &str) -> Result<Behaviour, String> {
    Ok(match repository(image) {
        "sim/exit" => {
            let tag = tag(image).unwrap_or("");
            let exit_code = tag.parse().map_err(|_| {
                format!("sim/exit needs a numeric exit code as its tag, not {tag:?}")
            })?;
            Behaviour::Exit {
                exit_code,
                oom_killed: false,
            }
        }
        "sim/oom" => Behaviour::Exit {
            exit_code: EXIT_CODE_SIGKILL,
            oom_killed: true,
        },
        "sim/unhealthy" => Behaviour::Unhealthy,
        "sim/log" => {
            let tag = tag(image).unwrap_or("");
            let lines_per_second = tag
                .parse()
                .ok()
                .filter(|rate| (1..=LOG_LINES_PER_SECOND_MAX).contains(rate))
                .ok_or_else(|| {
                    format!("sim/log needs a rate of 1 to {LOG_LINES_PER_SECOND_MAX} lines a second as its tag, not {tag:?}")
                })?;
            Behaviour::Log { lines_per_second }
        }
        _ => Behaviour::RunUntilStopped,
    })
}

/// A stable, digest-shaped stand-in for an image's registry digest.
fn fake_digest(image: &str) -> String {
    // FNV-1a, four times with different offsets, to fill 64 hex digits.
    let mut digest = String::from("sha256:");
    for round in 0u64..4 {
        let mut hash = 0xcbf2_9ce4_8422_2325_u64 ^ round;
        for byte in image.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        digest.push_str(&format!("{hash:016x}"));
    }
    digest
}

impl ContainerRuntime for FakeRuntime {
    fn pull_image<'a>(
        &'a self,
        image: &'a str,
        policy: PullPolicy,
        auth: Option<&'a RegistryAuth>,
    ) -> RuntimeFuture<'a, Option<String>> {
        Box::pin(async move { self.pull(image, policy, auth) })
    }

    fn create_container<'a>(&'a self, spec: &'a ContainerSpec) -> RuntimeFuture<'a, String> {
        Box::pin(async move { self.create(spec) })
    }

    fn start_container<'a>(&'a self, id: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            if self.start_delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(self.start_delay_ms)).await;
            }
            self.start(id)
        })
    }

    fn stop_container<'a>(&'a self, id: &'a str, timeout: Duration) -> RuntimeFuture<'a, ()> {
        Box::pin(async move { self.stop(id, timeout) })
    }

    fn remove_container<'a>(&'a self, id: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move { self.remove(id) })
    }

    fn inspect_container<'a>(&'a self, id: &'a str) -> RuntimeFuture<'a, ContainerState> {
        Box::pin(async move { self.inspect(id) })
    }

    fn list_containers<'a>(
        &'a self,
        labels: &'a [(&'a str, &'a str)],
    ) -> RuntimeFuture<'a, Vec<ContainerState>> {
        Box::pin(async move { self.list(labels) })
    }

    fn container_stats<'a>(&'a self, id: &'a str) -> RuntimeFuture<'a, ContainerStats> {
        Box::pin(async move { self.stats(id) })
    }

    fn ensure_network<'a>(&'a self, name: &'a str, subnet_cidr: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move { self.create_network_if_missing(name, subnet_cidr) })
    }

    fn list_networks(&self) -> RuntimeFuture<'_, Vec<NetworkInfo>> {
        Box::pin(async move { self.network_infos() })
    }

    fn remove_network<'a>(&'a self, name: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move { self.delete_network(name) })
    }

    fn ensure_volume<'a>(
        &'a self,
        name: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> RuntimeFuture<'a, ()> {
        Box::pin(async move { self.create_volume_if_missing(name, labels) })
    }

    fn remove_volume<'a>(&'a self, name: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move { self.delete_volume(name) })
    }

    fn follow_logs<'a>(&'a self, id: &'a str, since_ms: Option<u64>) -> LogStream<'a> {
        let start = FollowState {
            next_line: None,
            since_ms,
            pending: VecDeque::new(),
            ended: false,
        };
        Box::pin(futures_util::stream::unfold(
            start,
            move |mut follow| async move {
                loop {
                    if let Some(line) = follow.pending.pop_front() {
                        return Some((Ok(line), follow));
                    }
                    if follow.ended {
                        return None;
                    }
                    match self.read_log_lines(id, &mut follow) {
                        Ok(()) if follow.pending.is_empty() && !follow.ended => {
                            tokio::time::sleep(LOG_POLL_INTERVAL).await;
                        }
                        Ok(()) => {}
                        Err(error) => {
                            follow.ended = true;
                            return Some((Err(error), follow));
                        }
                    }
                }
            },
        ))
    }
}

/// Where a follower of a fake container's output is.
struct FollowState {
    /// Index of the next line of the current run; `None` before the first read.
    next_line: Option<u64>,
    since_ms: Option<u64>,
    pending: VecDeque<LogLine>,
    /// The container has stopped and every line was read.
    ended: bool,
}

impl FakeRuntime {
    /// Moves the lines a `sim/log:N` container printed since the last read
    /// into `follow.pending` (at most [`LOG_LINES_PER_READ_MAX`]).
    fn read_log_lines(&self, id: &str, follow: &mut FollowState) -> Result<(), RuntimeError> {
        let now_ms = self.clock.now_ms();
        let mut state = self.lock();
        if state.unavailable {
            return Err(RuntimeError::Unavailable {
                reason: "the fake engine is down".to_owned(),
            });
        }
        state.settle(now_ms);
        let resolved = state
            .resolve(id)
            .ok_or_else(|| RuntimeError::NoSuchContainer { id: id.to_owned() })?;
        let Some(container) = state.containers.get(&resolved) else {
            return Err(RuntimeError::NoSuchContainer { id: id.to_owned() });
        };
        let stopped = matches!(container.status, Status::Exited { .. });
        let (Behaviour::Log { lines_per_second }, Some(started_ms)) =
            (container.behaviour, container.started_at_ms)
        else {
            follow.ended = stopped;
            return Ok(());
        };
        let end_ms = container
            .finished_at_ms
            .filter(|_| stopped)
            .unwrap_or(now_ms);
        let printed = end_ms.saturating_sub(started_ms) * lines_per_second / 1000;
        let first = *follow.next_line.get_or_insert_with(|| {
            follow.since_ms.map_or(0, |since| {
                (since.saturating_sub(started_ms) * lines_per_second).div_ceil(1000)
            })
        });
        let last = printed.min(first + LOG_LINES_PER_READ_MAX);
        for index in first..last {
            follow.pending.push_back(LogLine {
                source: LogSource::Stdout,
                timestamp_ms: started_ms + index * 1000 / lines_per_second,
                message: format!("{} line {index}", container.spec.name),
            });
        }
        follow.next_line = Some(last);
        follow.ended = stopped && last >= printed;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HealthCheck, PortBinding};

    const START_MS: u64 = 1_700_000_000_000;

    #[tokio::test]
    async fn log_image_prints_numbered_lines_until_it_stops() {
        use futures_util::StreamExt;
        let (runtime, clock) = host();
        let id = run(&runtime, &spec("talker", "sim/log:10"))
            .await
            .expect("run");
        clock.advance(Duration::from_millis(1_050));
        let mut follow = runtime.follow_logs(&id, None);
        let mut seen = Vec::new();
        for _ in 0..10 {
            seen.push(follow.next().await.expect("a line").expect("read"));
        }
        assert_eq!(seen[0].message, "talker line 0");
        assert_eq!(seen[9].message, "talker line 9");
        assert_eq!(seen[9].timestamp_ms, START_MS + 900);
        clock.advance(Duration::from_millis(500));
        runtime
            .stop_container(&id, Duration::from_secs(1))
            .await
            .expect("stop");
        let rest: Vec<_> = follow.collect().await;
        assert_eq!(rest.len(), 5, "lines 10 to 14, then the end");
        let since: Vec<_> = runtime
            .follow_logs(&id, Some(START_MS + 1_200))
            .collect()
            .await;
        assert_eq!(since.len(), 3);
        assert!(runtime
            .pull_image("sim/log:0", PullPolicy::Always, None)
            .await
            .is_err());
    }

    fn host() -> (FakeRuntime, ManualClock) {
        let clock = ManualClock::new(START_MS);
        (FakeRuntime::new(clock.clone()), clock)
    }

    fn spec(name: &str, image: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: image.into(),
            ..Default::default()
        }
    }

    fn tcp(container_port: u16, host_port: Option<u16>) -> PortBinding {
        PortBinding {
            container_port,
            protocol: Protocol::Tcp,
            host_port,
            host_ip: None,
        }
    }

    fn health_check() -> Option<HealthCheck> {
        Some(HealthCheck {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            retries: 3,
            start_period: Duration::ZERO,
        })
    }

    /// Pulls the image, then creates and starts a container from `spec`.
    async fn run(runtime: &FakeRuntime, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        runtime
            .pull_image(&spec.image, PullPolicy::Always, None)
            .await?;
        let id = runtime.create_container(spec).await?;
        runtime.start_container(&id).await?;
        Ok(id)
    }

    async fn status(runtime: &FakeRuntime, id: &str) -> Status {
        runtime.inspect_container(id).await.expect("inspect").status
    }

    #[tokio::test]
    async fn pull_follows_image_name_and_policy() {
        let (runtime, _) = host();
        let failed = runtime
            .pull_image("sim/fail-pull:1", PullPolicy::Always, None)
            .await;
        assert!(
            matches!(&failed, Err(RuntimeError::Pull { image, reason })
            if image == "sim/fail-pull:1" && reason.contains("pull access denied")),
            "{failed:?}"
        );

        let never = runtime.pull_image("app:1", PullPolicy::Never, None).await;
        assert!(matches!(never, Err(RuntimeError::Pull { .. })), "{never:?}");
        let created = runtime.create_container(&spec("a", "app:1")).await;
        assert!(
            matches!(&created, Err(RuntimeError::Engine { reason, .. }) if reason == "No such image: app:1")
        );

        runtime
            .pull_image("app", PullPolicy::IfNotPresent, None)
            .await
            .expect("pull");
        // `app` is `app:latest`, now local, so Never is satisfied.
        runtime
            .pull_image("app:latest", PullPolicy::Never, None)
            .await
            .expect("local");
        let bad_exit = runtime
            .pull_image("sim/exit:abc", PullPolicy::Always, None)
            .await;
        assert!(matches!(bad_exit, Err(RuntimeError::Pull { .. })));

        let seeded = FakeRuntime::new(|| 0).with_local_image("sim/fail-pull:1");
        seeded
            .pull_image("sim/fail-pull:1", PullPolicy::IfNotPresent, None)
            .await
            .expect("cached");
    }

    #[tokio::test]
    async fn exit_image_exits_after_the_delay_and_again_after_restart() {
        let (runtime, clock) = host();
        let id = run(&runtime, &spec("job", "sim/exit:3"))
            .await
            .expect("run");
        clock.advance(Duration::from_millis(99));
        assert_eq!(status(&runtime, &id).await, Status::Running);
        clock.advance(Duration::from_millis(500));
        let state = runtime.inspect_container(&id).await.expect("inspect");
        assert_eq!(state.status, Status::Exited { exit_code: 3 });
        assert_eq!(state.started_at_ms, Some(START_MS));
        // The exit happened at its due time, not when it was noticed.
        assert_eq!(state.finished_at_ms, Some(START_MS + DEFAULT_EXIT_DELAY_MS));

        runtime.start_container(&id).await.expect("restart");
        assert_eq!(status(&runtime, &id).await, Status::Running);
        clock.advance(Duration::from_millis(100));
        assert_eq!(status(&runtime, &id).await, Status::Exited { exit_code: 3 });
    }

    #[tokio::test]
    async fn exit_delay_is_configurable_and_oom_is_reported() {
        let clock = ManualClock::new(0);
        let runtime = FakeRuntime::new(clock.clone()).with_exit_delay_ms(5_000);
        let id = run(&runtime, &spec("hog", "sim/oom")).await.expect("run");
        clock.advance(Duration::from_millis(4_999));
        assert_eq!(status(&runtime, &id).await, Status::Running);
        clock.advance(Duration::from_millis(1));
        let state = runtime.inspect_container(&id).await.expect("inspect");
        assert_eq!(state.status, Status::Exited { exit_code: 137 });
        assert_eq!(state.error.as_deref(), Some("OOMKilled"));
    }

    #[tokio::test]
    async fn stop_exits_with_sigterm_code_and_is_idempotent() {
        let (runtime, clock) = host();
        let id = run(&runtime, &spec("web", "nginx")).await.expect("run");
        clock.advance(Duration::from_secs(60));
        assert_eq!(status(&runtime, &id).await, Status::Running);
        runtime
            .stop_container(&id, Duration::from_secs(30))
            .await
            .expect("stop");
        let state = runtime.inspect_container(&id).await.expect("inspect");
        assert_eq!(state.status, Status::Exited { exit_code: 143 });
        assert_eq!(state.finished_at_ms, Some(START_MS + 60_000));
        runtime
            .stop_container(&id, Duration::from_secs(30))
            .await
            .expect("second stop");
        assert_eq!(
            status(&runtime, &id).await,
            Status::Exited { exit_code: 143 }
        );

        let created = runtime
            .create_container(&spec("idle", "nginx"))
            .await
            .expect("create");
        runtime
            .stop_container(&created, Duration::from_secs(1))
            .await
            .expect("stop created");
        assert_eq!(status(&runtime, &created).await, Status::Created);

        let missing = runtime.stop_container("nope", Duration::from_secs(1)).await;
        assert!(matches!(missing, Err(RuntimeError::NoSuchContainer { id }) if id == "nope"));
    }

    #[tokio::test]
    async fn health_follows_image_name() {
        let (runtime, _) = host();
        let checked = |name: &str, image: &str| ContainerSpec {
            health_check: health_check(),
            ..spec(name, image)
        };
        let cases = [
            (checked("sick", "sim/unhealthy"), Health::Unhealthy),
            (spec("unchecked", "sim/unhealthy"), Health::Unknown),
            (checked("fine", "nginx"), Health::Healthy),
            (spec("plain", "nginx"), Health::Unknown),
        ];
        for (spec, expected) in cases {
            let id = run(&runtime, &spec).await.expect("run");
            assert_eq!(
                runtime
                    .inspect_container(&id)
                    .await
                    .expect("inspect")
                    .health,
                expected,
                "{}",
                spec.name
            );
        }
        let created = runtime
            .create_container(&checked("later", "nginx"))
            .await
            .expect("create");
        assert_eq!(
            runtime
                .inspect_container(&created)
                .await
                .expect("inspect")
                .health,
            Health::Unknown
        );
    }

    #[tokio::test]
    async fn ephemeral_ports_are_unique_and_not_reused_at_once() {
        let (runtime, _) = host();
        let web = |name: &str| ContainerSpec {
            port_bindings: vec![tcp(80, None), tcp(443, None)],
            ..spec(name, "nginx")
        };
        let first = run(&runtime, &web("a")).await.expect("run a");
        let ports = |state: &ContainerState| {
            state
                .bound_ports
                .iter()
                .map(|port| port.host_port)
                .collect::<Vec<_>>()
        };
        let first_state = runtime.inspect_container(&first).await.expect("inspect");
        assert_eq!(ports(&first_state), vec![49153, 49154]);
        assert_eq!(first_state.bound_ports[0].host_ip, "0.0.0.0");
        runtime
            .stop_container(&first, Duration::ZERO)
            .await
            .expect("stop");
        assert!(runtime
            .inspect_container(&first)
            .await
            .expect("inspect")
            .bound_ports
            .is_empty());
        let second = run(&runtime, &web("b")).await.expect("run b");
        assert_eq!(
            ports(&runtime.inspect_container(&second).await.expect("inspect")),
            vec![49155, 49156]
        );

        let fixed = |name: &str, port| ContainerSpec {
            port_bindings: vec![tcp(80, Some(port))],
            ..spec(name, "nginx")
        };
        run(&runtime, &fixed("c", 8080)).await.expect("run c");
        let clash = run(&runtime, &fixed("d", 8080)).await;
        assert!(
            matches!(&clash, Err(RuntimeError::Engine { reason, .. }) if reason.contains("port is already allocated"))
        );
        // The refused start left the container created and nothing bound.
        assert_eq!(status(&runtime, "d").await, Status::Created);
        let udp = ContainerSpec {
            port_bindings: vec![PortBinding {
                container_port: 53,
                protocol: Protocol::Udp,
                host_port: Some(8080),
                host_ip: None,
            }],
            ..spec("e", "dns")
        };
        run(&runtime, &udp)
            .await
            .expect("udp has its own port space");

        let host_mode = ContainerSpec {
            network_mode: Some(NetworkMode::Host),
            ..fixed("f", 8080)
        };
        let id = run(&runtime, &host_mode)
            .await
            .expect("host mode ignores bindings");
        let state = runtime.inspect_container(&id).await.expect("inspect");
        assert!(state.bound_ports.is_empty() && state.ip_addresses.is_empty());
    }

    #[tokio::test]
    async fn named_networks_hand_out_fixed_and_free_addresses() {
        let (runtime, _) = host();
        runtime
            .ensure_network("tasks", "10.9.0.0/24")
            .await
            .expect("network");
        runtime
            .ensure_network("tasks", "10.9.0.0/24")
            .await
            .expect("idempotent");
        let overlap = runtime.ensure_network("other", "10.9.0.128/25").await;
        assert!(
            matches!(&overlap, Err(RuntimeError::SubnetInUse { reason, .. }) if reason.contains("overlaps"))
        );
        let invalid = runtime.ensure_network("bad", "10.9.1.0").await;
        assert!(matches!(invalid, Err(RuntimeError::Engine { .. })));

        let on = |name: &str, address: Option<&str>| ContainerSpec {
            network_mode: Some(NetworkMode::Network {
                name: "tasks".into(),
                ipv4_address: address.map(Into::into),
            }),
            ..spec(name, "app")
        };
        let fixed = run(&runtime, &on("fixed", Some("10.9.0.10")))
            .await
            .expect("fixed");
        let state = runtime.inspect_container(&fixed).await.expect("inspect");
        assert_eq!(
            state.ip_addresses,
            BTreeMap::from([("tasks".into(), "10.9.0.10".into())])
        );
        let clash = run(&runtime, &on("clash", Some("10.9.0.10"))).await;
        assert!(
            matches!(&clash, Err(RuntimeError::Engine { reason, .. }) if reason.contains("Address already in use"))
        );
        let outside = run(&runtime, &on("outside", Some("10.9.1.10"))).await;
        assert!(matches!(outside, Err(RuntimeError::Engine { .. })));
        let free = run(&runtime, &on("free", None)).await.expect("free");
        let state = runtime.inspect_container(&free).await.expect("inspect");
        assert_eq!(
            state.ip_addresses,
            BTreeMap::from([("tasks".into(), "10.9.0.2".into())])
        );

        let bridged = run(&runtime, &spec("bridged", "app"))
            .await
            .expect("bridge");
        let state = runtime.inspect_container(&bridged).await.expect("inspect");
        assert_eq!(
            state.ip_addresses,
            BTreeMap::from([("bridge".into(), "172.17.0.2".into())])
        );

        let missing = runtime
            .create_container(&ContainerSpec {
                network_mode: Some(NetworkMode::Network {
                    name: "nowhere".into(),
                    ipv4_address: None,
                }),
                ..spec("lost", "app")
            })
            .await;
        assert!(
            matches!(&missing, Err(RuntimeError::Engine { reason, .. }) if reason == "network nowhere not found")
        );
        assert_eq!(
            runtime.networks(),
            vec!["bridge".to_owned(), "tasks".to_owned()]
        );
    }

    #[tokio::test]
    async fn networks_are_listed_with_their_subnets_and_removed_when_unused() {
        let (runtime, _) = host();
        runtime
            .ensure_network("tasks", "10.9.0.0/24")
            .await
            .expect("network");
        let listed = runtime.list_networks().await.expect("list");
        assert_eq!(
            listed,
            vec![
                NetworkInfo {
                    name: "bridge".into(),
                    ipv4_subnets: vec!["172.17.0.0/16".into()]
                },
                NetworkInfo {
                    name: "tasks".into(),
                    ipv4_subnets: vec!["10.9.0.0/24".into()]
                },
            ]
        );
        let on_tasks = ContainerSpec {
            network_mode: Some(NetworkMode::Network {
                name: "tasks".into(),
                ipv4_address: None,
            }),
            ..spec("on-tasks", "app")
        };
        let id = run(&runtime, &on_tasks).await.expect("run");
        let busy = runtime.remove_network("tasks").await;
        assert!(
            matches!(&busy, Err(RuntimeError::Engine { reason, .. }) if reason.contains("active endpoints"))
        );
        runtime
            .stop_container(&id, Duration::from_secs(1))
            .await
            .expect("stop");
        runtime.remove_network("tasks").await.expect("removed");
        runtime.remove_network("tasks").await.expect("already gone");
        assert_eq!(runtime.networks(), vec!["bridge".to_owned()]);
        // Its subnet is free again.
        runtime
            .ensure_network("again", "10.9.0.0/24")
            .await
            .expect("network");
    }

    #[tokio::test]
    async fn container_network_mode_needs_a_running_target() {
        let (runtime, _) = host();
        runtime
            .pull_image("pause", PullPolicy::Always, None)
            .await
            .expect("pull");
        runtime
            .pull_image("app", PullPolicy::Always, None)
            .await
            .expect("pull");
        let joining = |target: &str| ContainerSpec {
            network_mode: Some(NetworkMode::Container { id: target.into() }),
            ..spec("app", "app")
        };
        let missing = runtime.create_container(&joining("nope")).await;
        assert!(
            matches!(&missing, Err(RuntimeError::Engine { reason, .. }) if reason == "No such container: nope")
        );
        let with_ports = ContainerSpec {
            port_bindings: vec![tcp(80, None)],
            ..joining("nope")
        };
        assert!(runtime.create_container(&with_ports).await.is_err());

        let pause = runtime
            .create_container(&spec("pause", "pause"))
            .await
            .expect("pause");
        let app = runtime
            .create_container(&joining(&pause))
            .await
            .expect("app");
        let early = runtime.start_container(&app).await;
        assert!(
            matches!(&early, Err(RuntimeError::Engine { reason, .. }) if reason.contains("non running container"))
        );
        runtime.start_container(&pause).await.expect("start pause");
        runtime.start_container(&app).await.expect("start app");
        // Joined by name works as well as by id.
        let by_name = ContainerSpec {
            name: "app2".into(),
            ..joining("pause")
        };
        run(&runtime, &by_name).await.expect("by name");
    }

    #[tokio::test]
    async fn names_are_unique_until_removed() {
        let (runtime, _) = host();
        let id = run(&runtime, &spec("web", "nginx")).await.expect("run");
        let clash = runtime.create_container(&spec("web", "nginx")).await;
        assert!(
            matches!(&clash, Err(RuntimeError::Engine { reason, .. }) if reason.starts_with("Conflict."))
        );
        runtime
            .remove_container(&id)
            .await
            .expect("forced remove of a running container");
        assert!(matches!(
            runtime.inspect_container(&id).await,
            Err(RuntimeError::NoSuchContainer { .. })
        ));
        assert!(matches!(
            runtime.remove_container(&id).await,
            Err(RuntimeError::NoSuchContainer { .. })
        ));
        let again = runtime
            .create_container(&spec("web", "nginx"))
            .await
            .expect("name is free again");
        assert_ne!(again, id);
        assert_eq!(again.len(), 64);
    }

    #[tokio::test]
    async fn volumes_in_use_cannot_be_removed() {
        let (runtime, _) = host();
        runtime
            .ensure_volume("data", &BTreeMap::new())
            .await
            .expect("volume");
        runtime
            .ensure_volume("data", &BTreeMap::new())
            .await
            .expect("idempotent");
        let user = ContainerSpec {
            mounts: vec![
                Mount::Volume {
                    name: "data".into(),
                    target: "/data".into(),
                    read_only: false,
                },
                Mount::Volume {
                    name: "scratch".into(),
                    target: "/scratch".into(),
                    read_only: false,
                },
            ],
            ..spec("user", "app")
        };
        let id = run(&runtime, &user).await.expect("run");
        assert_eq!(
            runtime.volumes(),
            vec!["data".to_owned(), "scratch".to_owned()]
        );
        runtime
            .stop_container(&id, Duration::ZERO)
            .await
            .expect("stop");
        let in_use = runtime.remove_volume("data").await;
        assert!(
            matches!(&in_use, Err(RuntimeError::Engine { reason, .. }) if reason.contains("volume is in use"))
        );
        runtime.remove_container(&id).await.expect("remove");
        runtime.remove_volume("data").await.expect("remove volume");
        runtime
            .remove_volume("data")
            .await
            .expect("removing a missing volume is fine");
        assert_eq!(runtime.volumes(), vec!["scratch".to_owned()]);
    }

    #[tokio::test]
    async fn lists_by_label_and_injects_crashes() {
        let (runtime, clock) = host();
        let labelled = |name: &str, task: &str| ContainerSpec {
            labels: BTreeMap::from([
                ("cluster".into(), "c1".into()),
                ("task".into(), task.into()),
            ]),
            ..spec(name, "app")
        };
        let a = run(&runtime, &labelled("a", "t1")).await.expect("a");
        let b = run(&runtime, &labelled("b", "t1")).await.expect("b");
        run(&runtime, &labelled("c", "t2")).await.expect("c");
        run(&runtime, &spec("d", "app")).await.expect("d");
        let ids = |states: Vec<ContainerState>| {
            states
                .into_iter()
                .map(|state| state.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(runtime
                .list_containers(&[("cluster", "c1"), ("task", "t1")])
                .await
                .expect("list")),
            ["a", "b"]
        );
        assert_eq!(
            ids(runtime
                .list_containers(&[("cluster", "c1")])
                .await
                .expect("list")),
            ["a", "b", "c"]
        );
        assert_eq!(runtime.list_containers(&[]).await.expect("list").len(), 4);

        clock.advance(Duration::from_secs(1));
        assert!(runtime.exit_container(&a, 1, None));
        assert!(!runtime.exit_container(&a, 1, None), "already exited");
        assert!(runtime.exit_container("b", 137, Some("OOMKilled")));
        let listed = runtime
            .list_containers(&[("task", "t1")])
            .await
            .expect("list");
        assert_eq!(listed[0].status, Status::Exited { exit_code: 1 });
        assert_eq!(listed[0].finished_at_ms, Some(START_MS + 1_000));
        assert_eq!(
            (listed[1].id.as_str(), listed[1].error.as_deref()),
            (b.as_str(), Some("OOMKilled"))
        );
    }

    #[tokio::test]
    async fn stats_of_running_and_stopped_containers() {
        let (runtime, clock) = host();
        let limited = ContainerSpec {
            memory_bytes: Some(256 << 20),
            ..spec("web", "nginx")
        };
        let id = run(&runtime, &limited).await.expect("run");
        clock.advance(Duration::from_secs(10));
        let stats = runtime.container_stats(&id).await.expect("stats");
        assert_eq!(stats.cpu_total_usage_ns, 1_000_000_000);
        assert_eq!(
            (stats.block_read_bytes, stats.block_write_bytes),
            (20_000, 10_000)
        );
        assert_eq!(stats.memory_limit_bytes, 256 << 20);
        assert!(stats.memory_usage_bytes > 0);
        runtime
            .stop_container(&id, Duration::ZERO)
            .await
            .expect("stop");
        assert_eq!(
            runtime.container_stats(&id).await.expect("stats"),
            ContainerStats::default()
        );
    }

    #[tokio::test]
    async fn images_declare_their_load() {
        let (runtime, clock) = host();
        let busy = ContainerSpec {
            cpu_shares: Some(512),
            ..spec("busy", "sim/cpu:70")
        };
        let idle = spec("idle", "sim/cpu:20");
        let memory = ContainerSpec {
            memory_bytes: Some(512 << 20),
            ..spec("memory", "sim/mem:50")
        };
        let busy = run(&runtime, &busy).await.expect("run");
        let idle = run(&runtime, &idle).await.expect("run");
        let memory = run(&runtime, &memory).await.expect("run");
        clock.advance(Duration::from_secs(10));
        // 70% of half a vCPU for 10 s; 20% of one vCPU (no reservation).
        let busy = runtime.container_stats(&busy).await.expect("stats");
        assert_eq!(busy.cpu_total_usage_ns, 3_500_000_000);
        let idle = runtime.container_stats(&idle).await.expect("stats");
        assert_eq!(idle.cpu_total_usage_ns, 2_000_000_000);
        let memory = runtime.container_stats(&memory).await.expect("stats");
        assert_eq!(memory.memory_usage_bytes, 256 << 20);
    }

    #[tokio::test]
    async fn engine_outage_fails_every_call_and_calls_are_recorded() {
        let (runtime, _) = host();
        let id = run(&runtime, &spec("web", "nginx")).await.expect("run");
        runtime.set_unavailable(true);
        assert!(matches!(
            runtime.inspect_container(&id).await,
            Err(RuntimeError::Unavailable { .. })
        ));
        assert!(matches!(
            runtime.list_containers(&[]).await,
            Err(RuntimeError::Unavailable { .. })
        ));
        assert!(matches!(
            runtime.pull_image("x", PullPolicy::Always, None).await,
            Err(RuntimeError::Unavailable { .. })
        ));
        runtime.set_unavailable(false);
        assert_eq!(status(&runtime, &id).await, Status::Running);

        let auth = RegistryAuth {
            username: "u".into(),
            password: "p".into(),
            server: "r".into(),
        };
        runtime
            .pull_image("private/app", PullPolicy::Always, Some(&auth))
            .await
            .expect("pull");
        let calls = runtime.calls();
        assert_eq!(calls.len(), 8);
        assert_eq!(
            calls[0],
            FakeCall::Pull {
                image: "nginx".into(),
                policy: PullPolicy::Always,
                authenticated: false
            }
        );
        assert!(matches!(&calls[1], FakeCall::Create(spec) if spec.name == "web"));
        assert_eq!(calls[2], FakeCall::Start { id: id.clone() });
        assert_eq!(calls[3], FakeCall::Inspect { id: id.clone() });
        assert_eq!(calls[4], FakeCall::List { labels: vec![] });
        assert_eq!(
            calls[7],
            FakeCall::Pull {
                image: "private/app".into(),
                policy: PullPolicy::Always,
                authenticated: true
            }
        );
        assert_eq!(
            runtime.container_spec(&id).map(|spec| spec.image),
            Some("nginx".to_owned())
        );
        runtime.clear_calls();
        assert!(runtime.calls().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn start_delay_runs_on_tokio_time() {
        let origin = tokio::time::Instant::now();
        let clock =
            move || START_MS + u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let runtime = FakeRuntime::new(clock)
            .with_start_delay_ms(250)
            .with_id_seed(7);
        runtime
            .pull_image("sim/exit:0", PullPolicy::Always, None)
            .await
            .expect("pull");
        let id = runtime
            .create_container(&spec("job", "sim/exit:0"))
            .await
            .expect("create");
        assert!(id.starts_with("0000000000000007"));
        runtime.start_container(&id).await.expect("start");
        let state = runtime.inspect_container(&id).await.expect("inspect");
        assert_eq!(state.started_at_ms, Some(START_MS + 250));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(status(&runtime, &id).await, Status::Exited { exit_code: 0 });
    }

    #[tokio::test]
    async fn thousands_of_containers_stay_cheap() {
        const CONTAINERS: usize = 5_000;
        let (runtime, clock) = host();
        runtime
            .pull_image("sim/exit:0", PullPolicy::Always, None)
            .await
            .expect("pull");
        runtime
            .pull_image("app", PullPolicy::Always, None)
            .await
            .expect("pull");
        let started = std::time::Instant::now();
        for index in 0..CONTAINERS {
            let image = if index % 2 == 0 { "sim/exit:0" } else { "app" };
            let spec = ContainerSpec {
                port_bindings: vec![tcp(80, None)],
                ..spec(&format!("c{index}"), image)
            };
            let id = runtime.create_container(&spec).await.expect("create");
            runtime.start_container(&id).await.expect("start");
        }
        clock.advance(Duration::from_secs(1));
        let states = runtime.list_containers(&[]).await.expect("list");
        let exited = states
            .iter()
            .filter(|state| matches!(state.status, Status::Exited { .. }))
            .count();
        assert_eq!(exited, CONTAINERS / 2);
        // Exited containers gave their ports back; the runners hold theirs.
        let held: HashSet<u16> = states
            .iter()
            .flat_map(|state| state.bound_ports.iter().map(|port| port.host_port))
            .collect();
        assert_eq!(held.len(), CONTAINERS / 2);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn image_references() {
        assert_eq!(repository("sim/exit:3"), "sim/exit");
        assert_eq!(tag("sim/exit:3"), Some("3"));
        assert_eq!(
            repository("localhost:5000/sim/oom"),
            "localhost:5000/sim/oom"
        );
        assert_eq!(tag("localhost:5000/sim/oom"), None);
        assert_eq!(repository("app@sha256:ab"), "app");
        assert_eq!(normalize_image("app"), "app:latest");
        assert_eq!(normalize_image("app:1"), "app:1");
        assert_eq!(fake_digest("app:1").len(), "sha256:".len() + 64);
        assert_ne!(fake_digest("app:1"), fake_digest("app:2"));
    }
}
