//! The live state behind a snapshot's target groups: each target's health,
//! requests in flight, pooled connections and close signal; each group's
//! routable set, rebuilt whenever a health changes, so that a pick on the
//! hot path reads one `ArcSwap` and a few atomics.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tokio::sync::{broadcast, watch};

use crate::balance;
use crate::config::{Algorithm, Protocol, TargetGroup};
use crate::health::{HealthTracker, TargetHealth, TargetHealthState, Thresholds};
use crate::metrics::Counters;

/// Idle upstream connections kept per target for reuse.
pub const POOL_IDLE_PER_TARGET_MAX: usize = 1_024;
/// An idle upstream connection older than this is not reused: the target
/// may be about to close it (nginx closes after 75 s, many servers sooner).
pub const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(50);
/// Health changes a slow subscriber may fall behind by before it misses some
/// (it is told how many it missed, and can re-read the whole state).
pub const HEALTH_EVENTS_BUFFERED_MAX: usize = 4_096;

/// Idle connections to a target, each with when it went idle.
type Pool = Vec<(SendRequest<Incoming>, Instant)>;

/// A target's identity within its group, as ELBv2 keys it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetKey {
    pub id: String,
    pub port: u16,
}

/// A change in one target's health, for whoever embeds the data plane.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthEvent {
    pub target_group: String,
    pub target: TargetKey,
    pub health: TargetHealth,
    pub at_ms: u64,
}

/// One target of one group, as the hot path and the health checker see it.
pub struct TargetRuntime {
    pub key: TargetKey,
    pub address: SocketAddr,
    /// The opaque value of this target's AWSALB stickiness cookie.
    pub cookie: u64,
    routable: AtomicU8,
    /// When the target last became healthy (0: not), for slow start.
    healthy_since_ms: AtomicU64,
    pub outstanding: AtomicU32,
    tracker: Mutex<HealthTracker>,
    /// Idle connections, one pool per worker: a connection is driven by the
    /// worker that opened it and used only by requests on that worker.
    pools: Box<[Mutex<Pool>]>,
    /// Set when the target's connections must end (its draining is over, or
    /// it is gone); every connection to it watches this.
    closed: watch::Sender<bool>,
}

const NOT_ROUTABLE: u8 = 0;
const ROUTABLE: u8 = 1;
/// Unhealthy: used only when the whole group is (fail-open).
const FAIL_OPEN_ONLY: u8 = 2;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TargetRuntime {
    pub fn new(
        group: &str,
        key: TargetKey,
        address: SocketAddr,
        tracker: HealthTracker,
        workers: usize,
    ) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (group, &key).hash(&mut hasher);
        let runtime = TargetRuntime {
            cookie: hasher.finish(),
            key,
            address,
            routable: AtomicU8::new(NOT_ROUTABLE),
            healthy_since_ms: AtomicU64::new(0),
            outstanding: AtomicU32::new(0),
            tracker: Mutex::new(tracker),
            pools: (0..workers.max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            closed: watch::channel(false).0,
        };
        runtime.publish();
        runtime
    }

    pub fn health(&self) -> TargetHealth {
        lock(&self.tracker).health().clone()
    }

    /// Applies `change` to the health tracker; returns the new health if it changed.
    pub fn update_health(
        &self,
        change: impl FnOnce(&mut HealthTracker) -> Option<TargetHealth>,
    ) -> Option<TargetHealth> {
        let changed = change(&mut lock(&self.tracker));
        if changed.is_some() {
            self.publish();
        }
        changed
    }

    /// Copies the tracker's verdict into the atomics the hot path reads.
    fn publish(&self) {
        let tracker = lock(&self.tracker);
        let routable = match tracker.health().state {
            _ if tracker.health().is_routable() => ROUTABLE,
            TargetHealthState::Unhealthy => FAIL_OPEN_ONLY,
            _ => NOT_ROUTABLE,
        };
        self.routable.store(routable, Relaxed);
        self.healthy_since_ms.store(
            tracker.healthy_since_ms().map_or(0, |ms| ms.max(1)),
            Relaxed,
        );
    }

    pub fn is_routable(&self) -> bool {
        self.routable.load(Relaxed) == ROUTABLE
    }

    /// A pooled connection that is still open, most recently used first.
    fn pool(&self) -> &Mutex<Pool> {
        &self.pools[crate::workers::current() % self.pools.len()]
    }

    pub fn checkout(&self) -> Option<SendRequest<Incoming>> {
        let mut pool = lock(self.pool());
        while let Some((sender, idle_since)) = pool.pop() {
            if !sender.is_closed() && idle_since.elapsed() < POOL_IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    /// Returns a connection whose last exchange completed.
    pub fn checkin(&self, sender: SendRequest<Incoming>) {
        if sender.is_closed() || *self.closed.borrow() {
            return;
        }
        let mut pool = lock(self.pool());
        if pool.len() < POOL_IDLE_PER_TARGET_MAX {
            pool.push((sender, Instant::now()));
        }
    }

    /// A receiver that fires when the target's connections must close.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Ends every connection to the target: pooled, in flight, tunnels.
    pub fn close(&self) {
        self.closed.send_replace(true);
        for pool in &self.pools {
            lock(pool).clear();
        }
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }
}

/// A group's settings as the data plane uses them.
#[derive(Clone, Debug)]
pub struct GroupSettings {
    pub algorithm: Algorithm,
    pub slow_start_ms: u64,
    pub stickiness_duration_seconds: Option<u32>,
    pub deregistration_delay_ms: u64,
    pub health: HealthCheckSettings,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheckSettings {
    pub enabled: bool,
    /// HTTP checks with this path and matcher, or TCP connects when `None`.
    pub http: Option<(String, crate::health::HttpCodeMatcher)>,
    /// `None`: the target's own port (`traffic-port`).
    pub port: Option<u16>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub thresholds: Thresholds,
}

impl GroupSettings {
    pub fn from_config(group: &TargetGroup) -> Self {
        let attributes = &group.attributes;
        let http = match group.effective_health_check_protocol() {
            Protocol::Http | Protocol::Https => Some((
                group.effective_health_check_path().to_owned(),
                crate::health::HttpCodeMatcher::parse(group.effective_matcher()).unwrap_or_else(
                    |_| crate::health::HttpCodeMatcher::parse("200").expect("200 parses"),
                ),
            )),
            Protocol::Tcp | Protocol::Udp => None,
        };
        GroupSettings {
            algorithm: attributes.algorithm,
            slow_start_ms: u64::from(attributes.slow_start_seconds) * 1_000,
            stickiness_duration_seconds: attributes
                .stickiness_enabled
                .then_some(attributes.stickiness_duration_seconds),
            deregistration_delay_ms: u64::from(attributes.deregistration_delay_seconds) * 1_000,
            health: HealthCheckSettings {
                enabled: group.health_check_enabled,
                http,
                port: group.health_check_port.parse().ok(),
                interval_ms: u64::from(group.health_check_interval_seconds) * 1_000,
                timeout_ms: u64::from(group.effective_health_check_timeout_seconds()) * 1_000,
                thresholds: Thresholds {
                    healthy: group.healthy_threshold_count,
                    unhealthy: group.unhealthy_threshold_count,
                },
            },
        }
    }
}

/// The targets a pick chooses among, rebuilt on every health change.
#[derive(Default)]
pub struct Routable {
    pub targets: Vec<Arc<TargetRuntime>>,
    /// Every registered target is unhealthy, so all of them take traffic.
    pub fail_open: bool,
}

pub struct GroupRuntime {
    pub name: String,
    pub settings: ArcSwap<GroupSettings>,
    /// Registered targets (not draining), keyed for the writer.
    members: ArcSwap<HashMap<TargetKey, Arc<TargetRuntime>>>,
    routable: ArcSwap<Routable>,
    /// Draining targets, kept so their health can be described.
    draining: Mutex<HashMap<TargetKey, Arc<TargetRuntime>>>,
    next: AtomicUsize,
    pub counters: Arc<Counters>,
    health_events: broadcast::Sender<HealthEvent>,
    /// Serialises rebuilds of `routable` (checker tasks and the writer).
    rebuild: Mutex<()>,
}

impl GroupRuntime {
    pub fn new(
        name: &str,
        settings: GroupSettings,
        counters: Arc<Counters>,
        health_events: broadcast::Sender<HealthEvent>,
    ) -> Self {
        GroupRuntime {
            name: name.to_owned(),
            settings: ArcSwap::from_pointee(settings),
            members: ArcSwap::default(),
            routable: ArcSwap::default(),
            draining: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            counters,
            health_events,
            rebuild: Mutex::new(()),
        }
    }

    pub fn members(&self) -> arc_swap::Guard<Arc<HashMap<TargetKey, Arc<TargetRuntime>>>> {
        self.members.load()
    }

    pub fn set_members(&self, members: HashMap<TargetKey, Arc<TargetRuntime>>) {
        // A target registered again while it drained is described once, as
        // registered; the old registration still drains, unseen.
        lock(&self.draining).retain(|key, _| !members.contains_key(key));
        self.members.store(Arc::new(members));
        self.rebuild_routable();
    }

    pub fn add_draining(&self, target: Arc<TargetRuntime>) {
        lock(&self.draining).insert(target.key.clone(), target);
    }

    pub fn remove_draining(&self, target: &Arc<TargetRuntime>) {
        let mut draining = lock(&self.draining);
        if draining
            .get(&target.key)
            .is_some_and(|current| Arc::ptr_eq(current, target))
        {
            draining.remove(&target.key);
        }
    }

    pub fn draining(&self) -> Vec<Arc<TargetRuntime>> {
        lock(&self.draining).values().cloned().collect()
    }

    /// Records a health change of one of this group's targets and tells subscribers.
    pub fn health_changed(&self, target: &TargetRuntime, health: TargetHealth, at_ms: u64) {
        self.rebuild_routable();
        // No subscriber is fine: the state stays readable through describe.
        let _ = self.health_events.send(HealthEvent {
            target_group: self.name.clone(),
            target: target.key.clone(),
            health,
            at_ms,
        });
    }

    pub fn rebuild_routable(&self) {
        let _serial = lock(&self.rebuild);
        let members = self.members.load();
        let mut targets: Vec<Arc<TargetRuntime>> = members
            .values()
            .filter(|target| target.is_routable())
            .cloned()
            .collect();
        let mut fail_open = false;
        let unhealthy: Vec<Arc<TargetRuntime>> = members
            .values()
            .filter(|target| target.routable.load(Relaxed) == FAIL_OPEN_ONLY)
            .cloned()
            .collect();
        if targets.is_empty() && !unhealthy.is_empty() {
            // ELBv2 fails open: with every target unhealthy, all take traffic.
            targets = unhealthy.clone();
            fail_open = true;
        }
        // A stable order keeps round robin fair across rebuilds.
        targets.sort_by(|a, b| a.key.cmp(&b.key));
        let healthy = if fail_open { 0 } else { targets.len() };
        self.counters.healthy_hosts.store(healthy as u64, Relaxed);
        self.counters
            .unhealthy_hosts
            .store(unhealthy.len() as u64, Relaxed);
        self.routable
            .store(Arc::new(Routable { targets, fail_open }));
    }

    /// Chooses a target for a new request or connection: the sticky one
    /// if it can still take it, else by the group's algorithm.
    pub fn pick(&self, sticky: Option<u64>, now_ms: u64, roll: u64) -> Option<Arc<TargetRuntime>> {
        let routable = self.routable.load();
        let targets = &routable.targets;
        if targets.is_empty() {
            return None;
        }
        if let Some(cookie) = sticky {
            if let Some(target) = targets.iter().find(|target| target.cookie == cookie) {
                return Some(Arc::clone(target));
            }
        }
        let settings = self.settings.load();
        let weight_of = |index: usize| {
            let since = targets[index].healthy_since_ms.load(Relaxed);
            if settings.slow_start_ms == 0 || since == 0 || routable.fail_open {
                1.0
            } else {
                balance::slow_start_weight(now_ms.saturating_sub(since), settings.slow_start_ms)
            }
        };
        let index = match settings.algorithm {
            Algorithm::RoundRobin => {
                let ramping = settings.slow_start_ms > 0
                    && (0..targets.len()).any(|index| weight_of(index) < 1.0);
                if ramping {
                    balance::weighted_by(targets.len(), roll, weight_of)?
                } else {
                    balance::round_robin(targets.len(), self.next.fetch_add(1, Relaxed))
                }
            }
            Algorithm::LeastOutstandingRequests => {
                let start = self.next.fetch_add(1, Relaxed);
                balance::least_outstanding_by(targets.len(), start % targets.len(), |index| {
                    (targets[index].outstanding.load(Relaxed), weight_of(index))
                })?
            }
        };
        Some(Arc::clone(&targets[index]))
    }

    /// Every target's health, registered and draining, for DescribeTargetHealth.
    pub fn describe(&self) -> Vec<(TargetKey, SocketAddr, TargetHealth)> {
        let mut all: Vec<_> = self
            .members
            .load()
            .values()
            .chain(self.draining().iter())
            .map(|target| (target.key.clone(), target.address, target.health()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// Resolves once the watched flag is set (or its sender is gone). The
/// watch's guard is dropped before returning, so the future stays `Send`.
pub async fn until_closed(closed: &mut watch::Receiver<bool>) {
    let _ = closed.wait_for(|closed| *closed).await;
}
