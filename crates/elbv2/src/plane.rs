//! Feeding a data plane in the embedding process: every committed ELBv2
//! change becomes a versioned snapshot applied to a [`DataPlane`], and what
//! the data plane finds about targets comes back for DescribeTargetHealth.
//!
//! ```text
//! store revisions ─▶ generation changed? ─▶ State::read ─▶ snapshot::build ─▶ DataPlane::apply
//!                                                               port taken? drop that listener, retry
//! DataPlane health events ─▶ HealthCache ─▶ DescribeTargetHealth
//! ```

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use flotilla_lb::health::TargetHealth;
use flotilla_lb::{ApplyError, DataPlane, Snapshot};
use tokio::sync::broadcast::error::RecvError;

use crate::records::{State, GENERATION_KEY};
use crate::{snapshot, Elbv2, HealthSource};

type HealthKey = (String, String, u16);

/// The latest health of every target the data plane serves.
#[derive(Default)]
pub struct HealthCache {
    targets: RwLock<HashMap<HealthKey, TargetHealth>>,
}

impl HealthSource for HealthCache {
    fn target_health(
        &self,
        target_group_arn: &str,
        target_id: &str,
        port: u16,
    ) -> Option<flotilla_aws::elbv2::TargetHealth> {
        let key = (target_group_arn.to_owned(), target_id.to_owned(), port);
        self.targets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .map(crate::target_groups::wire_health)
    }
}

impl HealthCache {
    /// Replaces everything with what the data plane reports now.
    async fn refresh(&self, plane: &DataPlane) {
        let all: HashMap<HealthKey, TargetHealth> = plane
            .target_health()
            .await
            .into_iter()
            .map(|described| {
                (
                    (
                        described.target_group,
                        described.target.id,
                        described.target.port,
                    ),
                    described.health,
                )
            })
            .collect();
        *self
            .targets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = all;
    }

    fn record(&self, event: flotilla_lb::HealthEvent) {
        self.targets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                (event.target_group, event.target.id, event.target.port),
                event.health,
            );
    }
}

/// Applies `snapshot`, leaving out any listener whose port cannot be bound
/// on this host (logged), so that one unavailable port does not hold back
/// every other change.
pub async fn apply_serving_what_binds(plane: &DataPlane, mut snapshot: Snapshot) {
    let listeners: usize = snapshot
        .load_balancers
        .iter()
        .map(|b| b.listeners.len())
        .sum();
    for _ in 0..=listeners {
        match plane.apply(snapshot.clone()).await {
            Ok(report) => {
                tracing::info!(%report, "load balancer configuration applied");
                return;
            }
            Err(ApplyError::PortUnavailable {
                load_balancer,
                address,
                source,
            }) => {
                tracing::warn!(%load_balancer, %address, %source, "listener port unavailable on this host; serving the rest without it");
                for balancer in &mut snapshot.load_balancers {
                    if balancer.name == load_balancer {
                        balancer
                            .listeners
                            .retain(|listener| listener.port != address.port());
                    }
                }
            }
            Err(ApplyError::Stale { .. }) => return,
            Err(error) => {
                tracing::error!(%error, "load balancer configuration refused by the data plane");
                return;
            }
        }
    }
}

/// Keeps `plane` serving what the store holds, and `health` current, until
/// the store closes. Run under a supervisor: a restart re-reads everything.
pub async fn feed(elbv2: Arc<Elbv2>, plane: DataPlane, health: Arc<HealthCache>) {
    let store = Arc::clone(elbv2.store());
    let mut revisions = store.revisions();
    let mut events = plane.subscribe_health();
    let mut applied_generation: Option<u64> = None;
    loop {
        let generation = match store.get(GENERATION_KEY) {
            Ok(entry) => entry.map_or(0, |entry| entry.mod_revision),
            Err(error) => {
                tracing::error!(%error, "reading the load balancer generation failed");
                applied_generation.unwrap_or_default()
            }
        };
        if applied_generation != Some(generation) {
            match State::read(&*store).map(|state| snapshot::build(&state, elbv2.settings())) {
                Ok(Ok(snapshot)) if snapshot.version > 0 => {
                    apply_serving_what_binds(&plane, snapshot).await;
                    health.refresh(&plane).await;
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::error!(%error, "stored load balancer configuration does not make a snapshot")
                }
                Err(error) => tracing::error!(?error, "reading the load balancers failed"),
            }
            applied_generation = Some(generation);
        }
        tokio::select! {
            changed = revisions.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            event = events.recv() => match event {
                Ok(event) => health.record(event),
                Err(RecvError::Lagged(_)) => health.refresh(&plane).await,
                Err(RecvError::Closed) => return,
            },
        }
    }
}
