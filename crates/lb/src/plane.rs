//! The data plane: applies snapshots and owns everything that serves them.
//!
//! ```text
//!  source (file, later the control plane) ──Snapshot──▶ DataPlane::apply
//!      validate (pure) ─▶ TLS identities ─▶ bind new ports     (any failure: nothing changed)
//!      ─▶ commit: target groups and targets (new: checked now; gone: draining),
//!         listener slots swapped, removed ports closed, checkers started/stopped
//!  accept loop ─▶ slot.load() ─▶ proxy / stream ─▶ GroupRuntime::pick ─▶ target
//! ```
//!
//! *Architecture invariant:* the hot path reads `ArcSwap`s and atomics only;
//! the writer's mutex is never taken by a request.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::broadcast;

use crate::checker::Checker;
use crate::config::{
    self, Action, ConfigError, LoadBalancer, Protocol, RegistrationState, Snapshot,
};
use crate::edge::{Clock, CoarseClock};
use crate::health::{HealthTracker, TargetHealth};
use crate::listener::{self, ListenerConfig, ListenerSlot};
use crate::metrics::{Dimension, Metrics};
use crate::proxy::{BalancerRuntime, Forward, HttpListener, ResolvedAction};
use crate::rules::RuleTable;
use crate::target::{
    GroupRuntime, GroupSettings, HealthEvent, TargetKey, TargetRuntime, HEALTH_EVENTS_BUFFERED_MAX,
};

/// Why a snapshot was refused. The previous snapshot keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("snapshot is invalid: {0}")]
    Invalid(#[from] ConfigError),
    #[error("snapshot version {offered} is not newer than the version {current} being served")]
    Stale { current: u64, offered: u64 },
    #[error("load balancer {load_balancer:?} cannot listen on {address}: {source}")]
    PortUnavailable {
        load_balancer: String,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("load balancer {load_balancer:?} listener {port}: invalid certificate: {reason}")]
    Certificate {
        load_balancer: String,
        port: u16,
        reason: String,
    },
}

/// What applying a snapshot changed, for logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub version: u64,
    pub listeners_opened: Vec<String>,
    pub listeners_closed: Vec<String>,
    pub listeners_updated: usize,
    pub target_groups_added: Vec<String>,
    pub target_groups_removed: Vec<String>,
    pub targets_registered: usize,
    pub targets_draining: usize,
}

impl std::fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "version {}: listeners opened {:?}, closed {:?}, updated {}; target groups added {:?}, removed {:?}; {} targets registered, {} draining",
            self.version,
            self.listeners_opened,
            self.listeners_closed,
            self.listeners_updated,
            self.target_groups_added,
            self.target_groups_removed,
            self.targets_registered,
            self.targets_draining
        )
    }
}

/// One target's health as DescribeTargetHealth reports it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetHealthDescription {
    pub target_group: String,
    pub target: TargetKey,
    pub address: SocketAddr,
    pub health: TargetHealth,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Transport {
    Tcp,
    Udp,
}

struct RunningSocket {
    slot: Arc<ListenerSlot>,
    label: String,
}

struct RunningGroup {
    runtime: Arc<GroupRuntime>,
    checker: Option<Checker>,
    checks_enabled: bool,
}

#[derive(Default)]
struct Writer {
    version: u64,
    sockets: HashMap<(SocketAddr, Transport), RunningSocket>,
    groups: HashMap<String, RunningGroup>,
    balancers: HashMap<String, Arc<BalancerRuntime>>,
}

struct Shared {
    workers: crate::workers::Workers,
    writer: tokio::sync::Mutex<Writer>,
    metrics: Arc<Metrics>,
    health_events: broadcast::Sender<HealthEvent>,
    clock: Arc<dyn Clock>,
    coarse: Arc<CoarseClock>,
    version: AtomicU64,
}

/// The load balancer data plane. Cheap to clone; every clone is the same plane.
#[derive(Clone)]
pub struct DataPlane {
    shared: Arc<Shared>,
}

impl DataPlane {
    /// A data plane serving nothing yet, with one worker thread per core.
    /// Must be called within a tokio runtime, which runs its configuration,
    /// health checks and metrics.
    pub fn new(clock: Arc<dyn Clock>) -> std::io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::with_workers(clock, cores)
    }

    /// A data plane whose traffic runs on `workers` threads.
    pub fn with_workers(clock: Arc<dyn Clock>, workers: usize) -> std::io::Result<Self> {
        let metrics = Arc::new(Metrics::default());
        tokio::spawn(roll_minutes(Arc::downgrade(&metrics), Arc::clone(&clock)));
        Ok(DataPlane {
            shared: Arc::new(Shared {
                workers: crate::workers::Workers::start(workers)?,
                writer: tokio::sync::Mutex::new(Writer::default()),
                metrics,
                health_events: broadcast::channel(HEALTH_EVENTS_BUFFERED_MAX).0,
                coarse: CoarseClock::start(Arc::clone(&clock)),
                clock,
                version: AtomicU64::new(0),
            }),
        })
    }

    /// The version of the snapshot being served (0: none yet).
    pub fn version(&self) -> u64 {
        self.shared.version.load(Relaxed)
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// Every change of a target's health from now on.
    pub fn subscribe_health(&self) -> broadcast::Receiver<HealthEvent> {
        self.shared.health_events.subscribe()
    }

    /// Every target's current health, registered and draining.
    pub async fn target_health(&self) -> Vec<TargetHealthDescription> {
        let writer = self.shared.writer.lock().await;
        let mut all = Vec::new();
        for (name, group) in &writer.groups {
            for (target, address, health) in group.runtime.describe() {
                all.push(TargetHealthDescription {
                    target_group: name.clone(),
                    target,
                    address,
                    health,
                });
            }
        }
        all.sort_by(|a, b| (&a.target_group, &a.target).cmp(&(&b.target_group, &b.target)));
        all
    }

    /// Applies a snapshot as a whole, or refuses it and changes nothing.
    pub async fn apply(&self, snapshot: Snapshot) -> Result<ApplyReport, ApplyError> {
        snapshot.validate()?;
        let mut writer = self.shared.writer.lock().await;
        if writer.version != 0 && snapshot.version <= writer.version {
            return Err(ApplyError::Stale {
                current: writer.version,
                offered: snapshot.version,
            });
        }
        let identities = tls_identities(&snapshot)?;
        let bound = bind_new_sockets(&snapshot, &writer, self.shared.workers.count()).await?;
        // Nothing below can fail: the snapshot is committed from here on.
        let report = self.commit(&mut writer, &snapshot, identities, bound);
        writer.version = snapshot.version;
        self.shared.version.store(snapshot.version, Relaxed);
        Ok(report)
    }

    fn commit(
        &self,
        writer: &mut Writer,
        snapshot: &Snapshot,
        mut identities: HashMap<(String, u16), tokio_rustls::TlsAcceptor>,
        bound: Vec<((SocketAddr, Transport), BoundSocket)>,
    ) -> ApplyReport {
        let mut report = ApplyReport {
            version: snapshot.version,
            ..ApplyReport::default()
        };
        let now_ms = self.shared.clock.now_ms();
        let in_use: HashSet<&str> = snapshot
            .load_balancers
            .iter()
            .flat_map(|balancer| &balancer.listeners)
            .flat_map(|listener| {
                listener
                    .default_actions
                    .iter()
                    .chain(listener.rules.iter().flat_map(|rule| &rule.actions))
            })
            .flat_map(|action| match action {
                Action::Forward {
                    target_group_arn,
                    forward_config,
                } => config::forward_targets(target_group_arn.as_deref(), forward_config.as_ref())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        // Target groups and their targets.
        let mut first_checks: Vec<(String, Arc<TargetRuntime>)> = Vec::new();
        for group in &snapshot.target_groups {
            let name = group.target_group_arn.as_str();
            let settings = GroupSettings::from_config(group);
            let checks_enabled = settings.health.enabled;
            let running = writer.groups.entry(name.to_owned()).or_insert_with(|| {
                report.target_groups_added.push(name.to_owned());
                RunningGroup {
                    runtime: Arc::new(GroupRuntime::new(
                        name,
                        settings.clone(),
                        self.shared.metrics.counters(Dimension::TargetGroup, name),
                        self.shared.health_events.clone(),
                    )),
                    checker: None,
                    checks_enabled,
                }
            });
            let runtime = Arc::clone(&running.runtime);
            runtime.settings.store(Arc::new(settings.clone()));
            let used = in_use.contains(name);
            let current = runtime.members();
            let mut members = HashMap::new();
            for target in &group.targets {
                if target.state == RegistrationState::Draining {
                    continue;
                }
                let key = TargetKey {
                    id: target.id.clone(),
                    port: target.port.unwrap_or(group.port),
                };
                let address = SocketAddr::new(target.address, key.port);
                let kept = current
                    .get(&key)
                    .filter(|existing| existing.address == address && !existing.is_closed());
                let runtime_target = match kept {
                    Some(existing) => Arc::clone(existing),
                    None => {
                        let tracker = HealthTracker::new(checks_enabled, now_ms);
                        let fresh = Arc::new(TargetRuntime::new(
                            name,
                            key.clone(),
                            address,
                            tracker,
                            self.shared.workers.count(),
                        ));
                        if !used {
                            fresh.update_health(|tracker| {
                                tracker.set_in_use(false, checks_enabled, now_ms)
                            });
                        }
                        report.targets_registered += 1;
                        first_checks.push((name.to_owned(), Arc::clone(&fresh)));
                        fresh
                    }
                };
                members.insert(key, runtime_target);
            }
            for (key, old) in current.iter() {
                let replaced = members.get(key).is_none_or(|new| !Arc::ptr_eq(new, old));
                if replaced {
                    report.targets_draining += 1;
                    drain(
                        &runtime,
                        Arc::clone(old),
                        settings.deregistration_delay_ms,
                        &self.shared.clock,
                    );
                }
            }
            drop(current);
            // Health checks switched on or off: every kept target starts over.
            if running.checks_enabled != checks_enabled {
                for target in members.values() {
                    target.update_health(|tracker| {
                        *tracker = HealthTracker::new(checks_enabled, now_ms);
                        Some(tracker.health().clone())
                    });
                }
                running.checks_enabled = checks_enabled;
            }
            for target in members.values() {
                if let Some(health) =
                    target.update_health(|tracker| tracker.set_in_use(used, checks_enabled, now_ms))
                {
                    runtime.health_changed(target, health, now_ms);
                    if used {
                        first_checks.push((name.to_owned(), Arc::clone(target)));
                    }
                }
            }
            runtime.set_members(members);
            match (used, running.checker.is_some()) {
                (true, false) => {
                    running.checker = Some(Checker::start(
                        Arc::clone(&runtime),
                        Arc::clone(&self.shared.clock),
                    ))
                }
                (false, true) => running.checker = None,
                _ => {}
            }
        }
        let wanted: HashSet<&str> = snapshot
            .target_groups
            .iter()
            .map(|group| group.target_group_arn.as_str())
            .collect();
        let removed: Vec<String> = writer
            .groups
            .keys()
            .filter(|name| !wanted.contains(name.as_str()))
            .cloned()
            .collect();
        for name in removed {
            if let Some(group) = writer.groups.remove(&name) {
                let delay_ms = group.runtime.settings.load().deregistration_delay_ms;
                for target in group.runtime.members().values() {
                    report.targets_draining += 1;
                    drain(
                        &group.runtime,
                        Arc::clone(target),
                        delay_ms,
                        &self.shared.clock,
                    );
                }
                group.runtime.set_members(HashMap::new());
                report.target_groups_removed.push(name);
            }
        }
        for (group_name, target) in first_checks {
            if let Some(checker) = writer
                .groups
                .get(&group_name)
                .and_then(|g| g.checker.as_ref())
            {
                checker.check_soon(target);
            }
        }
        // Load balancers and their listeners.
        let mut balancers = HashMap::new();
        for balancer in &snapshot.load_balancers {
            let idle_timeout =
                Duration::from_secs(u64::from(balancer.attributes.idle_timeout_seconds));
            let runtime = match writer.balancers.get(&balancer.name) {
                Some(existing) if existing.idle_timeout == idle_timeout => Arc::clone(existing),
                _ => Arc::new(BalancerRuntime {
                    counters: self
                        .shared
                        .metrics
                        .counters(Dimension::LoadBalancer, &balancer.name),
                    idle_timeout,
                }),
            };
            balancers.insert(balancer.name.clone(), runtime);
        }
        writer.balancers = balancers;
        let mut bound: HashMap<(SocketAddr, Transport), BoundSocket> = bound.into_iter().collect();
        let mut wanted_sockets = HashSet::new();
        for balancer in &snapshot.load_balancers {
            let runtime = Arc::clone(&writer.balancers[&balancer.name]);
            for listener in &balancer.listeners {
                let key = socket_key(balancer, listener);
                wanted_sockets.insert(key);
                let label = format!(
                    "{}:{} {}",
                    balancer.name,
                    listener.port,
                    listener.protocol.as_str()
                );
                let config = self.listener_config(
                    balancer,
                    listener,
                    &runtime,
                    &writer.groups,
                    identities.remove(&(balancer.name.clone(), listener.port)),
                );
                if let Some(running) = writer.sockets.get_mut(&key) {
                    running.slot.config.store(Arc::new(config));
                    running.label = label;
                    report.listeners_updated += 1;
                    continue;
                }
                let slot = ListenerSlot::new(config, Arc::clone(&self.shared.coarse));
                match bound.remove(&key) {
                    Some(BoundSocket::Tcp(sockets)) => {
                        let workers = self.shared.workers.handles();
                        for (socket, worker) in sockets.into_iter().zip(workers) {
                            worker.spawn(listener::accept_tcp(socket, Arc::clone(&slot)));
                        }
                    }
                    Some(BoundSocket::Udp(socket)) => {
                        tokio::spawn(listener::serve_udp(socket, Arc::clone(&slot)));
                    }
                    None => continue, // bound above for every new key
                }
                report.listeners_opened.push(label.clone());
                writer.sockets.insert(key, RunningSocket { slot, label });
            }
        }
        let closing: Vec<(SocketAddr, Transport)> = writer
            .sockets
            .keys()
            .filter(|key| !wanted_sockets.contains(key))
            .copied()
            .collect();
        for key in closing {
            if let Some(running) = writer.sockets.remove(&key) {
                running.slot.shut_down();
                report.listeners_closed.push(running.label);
            }
        }
        let keep: HashSet<(Dimension, String)> = snapshot
            .load_balancers
            .iter()
            .map(|balancer| (Dimension::LoadBalancer, balancer.name.clone()))
            .chain(
                snapshot
                    .target_groups
                    .iter()
                    .map(|group| (Dimension::TargetGroup, group.target_group_arn.clone())),
            )
            .collect();
        self.shared.metrics.retain(&keep);
        report
    }

    fn listener_config(
        &self,
        balancer: &LoadBalancer,
        listener: &config::Listener,
        runtime: &Arc<BalancerRuntime>,
        groups: &HashMap<String, RunningGroup>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> ListenerConfig {
        let resolve = |action: &Action| resolve_action(action, groups);
        match listener.protocol {
            Protocol::Http | Protocol::Https => {
                let default = resolve(&listener.default_actions[0]);
                let table =
                    RuleTable::new(&listener.rules, default, |rule| resolve(&rule.actions[0]));
                ListenerConfig::Http {
                    http: Arc::new(HttpListener {
                        balancer: Arc::clone(runtime),
                        port: listener.port,
                        tls: tls.is_some(),
                        table,
                    }),
                    tls,
                }
            }
            Protocol::Tcp | Protocol::Udp => {
                let group = match resolve(&listener.default_actions[0]) {
                    ResolvedAction::Forward(forward) => Arc::clone(&forward.groups[0].0),
                    // Validation admits only forward actions on network load balancers.
                    _ => unreachable_group(&balancer.name),
                };
                ListenerConfig::Stream {
                    balancer: Arc::clone(runtime),
                    group,
                }
            }
        }
    }
}

/// A group with no targets; stands in where validation already guarantees
/// a real one, so that a logic error serves 503s rather than panicking.
fn unreachable_group(balancer: &str) -> Arc<GroupRuntime> {
    tracing::error!(balancer, "network listener without a forward action");
    Arc::new(GroupRuntime::new(
        "none",
        GroupSettings::from_config(&config::TargetGroup {
            target_group_arn: "none".into(),
            protocol: Protocol::Tcp,
            port: 1,
            target_type: config::TargetType::Ip,
            health_check_enabled: false,
            health_check_protocol: None,
            health_check_port: "traffic-port".into(),
            health_check_path: None,
            health_check_interval_seconds: 30,
            health_check_timeout_seconds: None,
            healthy_threshold_count: 5,
            unhealthy_threshold_count: 2,
            matcher: None,
            attributes: Default::default(),
            targets: Vec::new(),
        }),
        Arc::default(),
        broadcast::channel(1).0,
    ))
}

fn resolve_action(action: &Action, groups: &HashMap<String, RunningGroup>) -> ResolvedAction {
    match action {
        Action::Forward {
            target_group_arn,
            forward_config,
        } => {
            let weighted =
                config::forward_targets(target_group_arn.as_deref(), forward_config.as_ref())
                    .unwrap_or_default();
            let stickiness = forward_config
                .as_ref()
                .and_then(|config| config.target_group_stickiness_config.as_ref())
                .filter(|stickiness| stickiness.enabled)
                .map(|stickiness| {
                    stickiness
                        .duration_seconds
                        .unwrap_or(config::defaults::STICKINESS_DURATION_SECONDS)
                });
            ResolvedAction::Forward(Forward {
                groups: weighted
                    .into_iter()
                    .filter_map(|(name, weight)| {
                        groups
                            .get(name)
                            .map(|group| (Arc::clone(&group.runtime), weight))
                    })
                    .collect(),
                group_stickiness_seconds: stickiness,
            })
        }
        Action::FixedResponse {
            fixed_response_config: config,
        } => ResolvedAction::Fixed {
            status: config
                .status_code
                .parse::<u16>()
                .ok()
                .and_then(|code| StatusCode::from_u16(code).ok())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            content_type: config
                .content_type
                .as_deref()
                .and_then(|kind| HeaderValue::from_str(kind).ok()),
            body: Bytes::from(config.message_body.clone().unwrap_or_default()),
        },
        Action::Redirect { redirect_config } => ResolvedAction::Redirect(redirect_config.clone()),
    }
}

/// Takes a target out of rotation now and closes its connections when the
/// deregistration delay is over (at once when there is none in flight).
fn drain(
    group: &Arc<GroupRuntime>,
    target: Arc<TargetRuntime>,
    delay_ms: u64,
    clock: &Arc<dyn Clock>,
) {
    let now_ms = clock.now_ms();
    if let Some(health) = target.update_health(|tracker| tracker.start_draining()) {
        group.health_changed(&target, health, now_ms);
    }
    group.add_draining(Arc::clone(&target));
    let group = Arc::clone(group);
    let clock = Arc::clone(clock);
    tokio::spawn(async move {
        // Done early when nothing is in flight any more: ELBv2 completes
        // deregistration once in-flight requests finish.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(delay_ms);
        while tokio::time::Instant::now() < deadline {
            if target.outstanding.load(Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(
                Duration::from_millis(100).min(deadline - tokio::time::Instant::now()),
            )
            .await;
        }
        target.close();
        group.remove_draining(&target);
        group.health_changed(&target, TargetHealth::not_registered(), clock.now_ms());
    });
}

fn socket_key(balancer: &LoadBalancer, listener: &config::Listener) -> (SocketAddr, Transport) {
    let transport = match listener.protocol {
        Protocol::Udp => Transport::Udp,
        _ => Transport::Tcp,
    };
    (
        SocketAddr::new(balancer.bind_address, listener.port),
        transport,
    )
}

fn tls_identities(
    snapshot: &Snapshot,
) -> Result<HashMap<(String, u16), tokio_rustls::TlsAcceptor>, ApplyError> {
    let mut identities = HashMap::new();
    for balancer in &snapshot.load_balancers {
        for listener in &balancer.listeners {
            if listener.protocol != Protocol::Https {
                continue;
            }
            let acceptor = crate::tls::acceptor(&listener.certificates).map_err(|reason| {
                ApplyError::Certificate {
                    load_balancer: balancer.name.clone(),
                    port: listener.port,
                    reason,
                }
            })?;
            identities.insert((balancer.name.clone(), listener.port), acceptor);
        }
    }
    Ok(identities)
}

enum BoundSocket {
    /// One clone of the listening socket per worker.
    Tcp(Vec<std::net::TcpListener>),
    Udp(UdpSocket),
}

/// Connections the kernel queues for accept on each TCP listener.
const ACCEPT_BACKLOG: u32 = 4_096;

async fn bind_new_sockets(
    snapshot: &Snapshot,
    writer: &Writer,
    workers: usize,
) -> Result<Vec<((SocketAddr, Transport), BoundSocket)>, ApplyError> {
    let mut bound = Vec::new();
    for balancer in &snapshot.load_balancers {
        for listener in &balancer.listeners {
            let key = socket_key(balancer, listener);
            if writer.sockets.contains_key(&key) {
                continue;
            }
            let (address, transport) = key;
            let failed = |source| ApplyError::PortUnavailable {
                load_balancer: balancer.name.clone(),
                address,
                source,
            };
            let socket = match transport {
                Transport::Tcp => BoundSocket::Tcp(bind_tcp(address, workers).map_err(failed)?),
                Transport::Udp => BoundSocket::Udp(UdpSocket::bind(address).await.map_err(failed)?),
            };
            bound.push((key, socket));
        }
    }
    Ok(bound)
}

/// Binds and listens once, then clones the socket for every worker, so a
/// port someone else holds is refused exactly as for one listener.
fn bind_tcp(address: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let socket = match address.ip() {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // Lets a restarted data plane rebind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    let listener: TcpListener = socket.listen(ACCEPT_BACKLOG)?;
    let listener = listener.into_std()?;
    let mut clones = Vec::with_capacity(workers);
    for _ in 1..workers {
        clones.push(listener.try_clone()?);
    }
    clones.push(listener);
    Ok(clones)
}

/// Closes each minute of metrics at its boundary.
async fn roll_minutes(metrics: std::sync::Weak<Metrics>, clock: Arc<dyn Clock>) {
    loop {
        let now_ms = clock.now_ms();
        let minute_start_ms = now_ms - now_ms % 60_000;
        let next_ms = minute_start_ms + 60_000;
        tokio::time::sleep(Duration::from_millis(next_ms - now_ms)).await;
        let Some(metrics) = metrics.upgrade() else {
            return;
        };
        metrics.roll_minute(minute_start_ms);
    }
}
