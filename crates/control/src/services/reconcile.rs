//! The service scheduler: one control loop over every service, driven by
//! the store's changes and a tick, in the clock's time.
//!
//! One pass, per cluster that has services:
//!
//! ```text
//!  read: services, the service tasks (decoded once per revision), instances, protections
//!  per service:
//!   A. observe   counts, failed tasks, circuit breaker (rollback), completion,
//!                drained deployments, steady state, DRAINING → INACTIVE
//!                → commit the service record if it changed (against the revision read)
//!   B. plan      rollout::plan_replica / plan_daemon on fresh task views
//!   C. act       stop (one transaction per batch), launch (one placement and
//!                one commit per batch through `Ecs::launch`)
//!   D. tell      the events of C, appended to the service record
//! ```
//!
//! *Architecture invariant:* every decision comes from the records as just
//! read, never from memory of an earlier pass; the task records (group
//! `service:NAME`, `startedBy` the deployment id) are the truth about what
//! runs. Killed at any point, the next pass after a restart recounts and
//! carries on: a launch is committed with its placement in one transaction,
//! and a pass launches only what the bounds allow over the tasks it read,
//! so no restart adds tasks beyond `maximumPercent`. One scheduler runs per
//! control plane.
//!
//! *Stability:* a task counts as healthy (towards minimumHealthyPercent,
//! completion and the circuit breaker's reset) only once it has stayed
//! healthy for [`SchedulerSettings::stabilization_ms`], as ECS waits 40 s
//! after a task without a health check reaches RUNNING before it counts
//! it. A task that crashes a moment after RUNNING never counts, so a
//! crash-looping revision can neither retire the old tasks nor complete.
//!
//! *Agent loss:* tasks on an instance whose agent has been disconnected for
//! [`AGENT_LOST_TIMEOUT_MS`] (counted from the later of the disconnection
//! and the scheduler's own start, so a control-plane restart does not make
//! every agent look lost) are no longer counted, are asked to stop (their
//! agent stops them if it returns), and are replaced elsewhere.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use flotilla_store::Txn;
use flotilla_types::ecs::*;
use flotilla_types::ApiError;

use super::breaker::{FailureCount, TaskOutcome};
use super::events::TaskFailure;
use super::rollout::{self, Actions, Bounds, DaemonInstance, Phase, StopWhy, TaskView};
use super::target_groups::{self, TargetGroups, ELB_UNHEALTHY_STOP_PREFIX};
use super::{
    blue_green, events, failure_threshold, CompletedDeployment, ServiceRecord, TaskProtection,
};
use crate::instances::{scan, InstanceRecord};
use crate::records::{self, keys, Attempt, Versioned};
use crate::tasks::{Targeting, TaskRecord};
use crate::Ecs;

mod task_sets;

/// How long an instance's agent may stay disconnected before its service
/// tasks are replaced elsewhere.
pub const AGENT_LOST_TIMEOUT_MS: u64 = 5 * 60 * 1000;
/// Operations (and conditions) the store's transaction limits are divided by
/// for one launched task: it writes a task record and at most one instance
/// record, and the batch is kept at half of what fits, because a batch is
/// re-placed whenever an instance it writes changed meanwhile (a task
/// stopped there), and the more instances it writes the likelier that is.
const LAUNCH_OPS_PER_TASK: usize = 4;
/// Operations one stopped task takes in a stop transaction, with room.
const STOP_OPS_PER_TASK: usize = 2;
/// How long the same placement failure is not said again.
const PLACEMENT_FAILURE_REPEAT_MS: u64 = 5 * 60 * 1000;
/// Why the scheduler stopped a task whose health checks failed; it counts
/// as a failed task for the circuit breaker.
pub const UNHEALTHY_STOP_REASON: &str = "Task failed container health checks";
const DRAINING_STOP_REASON: &str = "Container instance is being drained";
/// The launch throttle of a deployment whose tasks keep failing: the first
/// delay after a failure, the window failures are counted in, the longest delay.
pub const LAUNCH_THROTTLE_BASE_MS: u64 = 250;
pub const LAUNCH_THROTTLE_WINDOW_MS: u64 = 5 * 60 * 1000;
pub const LAUNCH_THROTTLE_MAX_MS: u64 = 30 * 1000;
/// Task records read per store call in a pass: the values of a page are
/// held at once.
const TASK_SCAN_PAGE: usize = 256;
/// How long a task must stay healthy before it counts as healthy: ECS
/// counts a task without a health check towards minimumHealthyPercent 40 s
/// after it reaches RUNNING. A deployment completes once all of its tasks
/// have, so its steady state has held that long.
pub const STABILIZATION_MS: u64 = 40 * 1000;
/// How often "has reached a steady state." is said again while the service
/// stays steady: ECS repeats an event whose cause persists after six hours.
pub const STEADY_STATE_REPEAT_MS: u64 = 6 * 60 * 60 * 1000;
/// Failed tasks one pass names in events; more are counted in one event.
const FAILED_TASK_EVENTS_MAX: usize = 10;

/// How the scheduler's loop runs.
#[derive(Clone, Debug)]
pub struct SchedulerSettings {
    pub agent_lost_timeout_ms: u64,
    /// A pass runs at least this often, for grace periods and timeouts.
    pub tick: Duration,
    /// After a change, how long to let more arrive before a pass.
    pub settle: Duration,
    /// How long a task must stay healthy before it counts as healthy
    /// ([`STABILIZATION_MS`] unless a test shortens it).
    pub stabilization_ms: u64,
    /// How long a minute of a deployment's bake times and lifecycle hook
    /// timeouts lasts (60 000 unless a test shortens it).
    pub deployment_minute_ms: u64,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            agent_lost_timeout_ms: AGENT_LOST_TIMEOUT_MS,
            tick: Duration::from_secs(1),
            settle: Duration::from_millis(25),
            stabilization_ms: STABILIZATION_MS,
            deployment_minute_ms: 60_000,
        }
    }
}

/// The scheduler's state between passes: only caches and its start time;
/// nothing it decides from.
pub struct ServiceScheduler {
    settings: SchedulerSettings,
    started_at_ms: u64,
    /// Decoded service task records by key, with their revision.
    tasks: HashMap<String, Versioned<Arc<TaskFacts>>>,
}

/// What one cluster's pass read.
struct ClusterView {
    instances: BTreeMap<String, InstanceRecord>,
    protected_until_ms: HashMap<String, u64>,
    /// Service tasks by group, stopped ones included (for failure counting).
    tasks_by_group: HashMap<String, Vec<Versioned<Arc<TaskFacts>>>>,
}

impl ServiceScheduler {
    pub fn new(settings: SchedulerSettings, now_ms: u64) -> Self {
        Self {
            settings,
            started_at_ms: now_ms,
            tasks: HashMap::new(),
        }
    }

    /// One pass over every service of every cluster.
    pub async fn pass(&mut self, ecs: &Ecs) -> Result<(), ApiError> {
        let mut clusters: Vec<String> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = ecs
                .store
                .list(
                    keys::SERVICES,
                    after.as_deref(),
                    flotilla_store::LIST_LIMIT_MAX,
                )
                .map_err(records::store_error)?;
            for entry in &page.entries {
                let rest = &entry.key[keys::SERVICES.len()..];
                if let Some((cluster, _)) = rest.split_once('/') {
                    if clusters.last().map(String::as_str) != Some(cluster) {
                        clusters.push(cluster.to_owned());
                    }
                }
            }
            match page.entries.last() {
                Some(last) if page.more => after = Some(last.key.clone()),
                _ => break,
            }
        }
        clusters.dedup();
        let mut seen_keys = std::collections::HashSet::new();
        let groups = ecs.target_groups();
        for cluster in clusters {
            let mut view = self.read_cluster(ecs, &cluster, &mut seen_keys)?;
            let services = scan::<ServiceRecord>(ecs.store.as_ref(), &keys::services_of(&cluster))?;
            if let Some(groups) = groups.as_deref() {
                let now_ms = ecs.clock.now_ms();
                match super::balancing::sync_targets(
                    ecs,
                    groups,
                    &cluster,
                    &services,
                    &view.tasks_by_group,
                    &view.instances,
                    now_ms,
                )
                .await
                {
                    // The services decide from the task records as they now are.
                    Ok(true) => view = self.read_cluster(ecs, &cluster, &mut seen_keys)?,
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%cluster, %error, "load balancer targets not brought up to date")
                    }
                }
            }
            for service in services {
                if let Err(error) = self.reconcile(ecs, &cluster, service, &view).await {
                    tracing::warn!(%cluster, %error, "service reconciliation failed");
                }
            }
        }
        self.tasks.retain(|key, _| seen_keys.contains(key));
        Ok(())
    }

    fn read_cluster(
        &mut self,
        ecs: &Ecs,
        cluster: &str,
        seen_keys: &mut std::collections::HashSet<String>,
    ) -> Result<ClusterView, ApiError> {
        let instances = ecs
            .instances_of(cluster)?
            .into_iter()
            .map(|found| (found.value.instance_id.clone(), found.value))
            .collect();
        let mut protections = HashMap::new();
        let prefix = keys::task_protections_of(cluster);
        let page = ecs
            .store
            .list(&prefix, None, flotilla_store::LIST_LIMIT_MAX)
            .map_err(records::store_error)?;
        for entry in &page.entries {
            let protection: TaskProtection = records::decode(entry)?;
            protections.insert(
                entry.key[prefix.len()..].to_owned(),
                protection.expires_at_ms,
            );
        }
        let marker = memchr::memmem::Finder::new(b"\"group\":\"service:");
        let prefix = keys::tasks_of(cluster);
        let mut tasks_by_group: HashMap<String, Vec<Versioned<Arc<TaskFacts>>>> = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = ecs
                .store
                .list(&prefix, after.as_deref(), TASK_SCAN_PAGE)
                .map_err(records::store_error)?;
            for entry in &page.entries {
                let cached = self
                    .tasks
                    .get(&entry.key)
                    .filter(|c| c.revision == entry.mod_revision);
                let record = match cached {
                    Some(cached) => Arc::clone(&cached.value),
                    None => {
                        if marker.find(&entry.value).is_none() {
                            continue;
                        }
                        let full: TaskRecord = records::decode(entry)?;
                        let record = Arc::new(TaskFacts::of(&full));
                        self.tasks.insert(
                            entry.key.clone(),
                            Versioned {
                                value: Arc::clone(&record),
                                revision: entry.mod_revision,
                            },
                        );
                        record
                    }
                };
                seen_keys.insert(entry.key.clone());
                let Some(group) = record.group.clone() else {
                    continue;
                };
                tasks_by_group.entry(group).or_default().push(Versioned {
                    value: record,
                    revision: entry.mod_revision,
                });
            }
            match page.entries.last() {
                Some(last) if page.more => after = Some(last.key.clone()),
                _ => break,
            }
        }
        Ok(ClusterView {
            instances,
            protected_until_ms: protections,
            tasks_by_group,
        })
    }

    /// Whether an instance's agent counts as lost at `now_ms`.
    fn agent_lost(&self, instance: &InstanceRecord, now_ms: u64) -> bool {
        if instance.instance.agent_connected == Some(true) {
            return false;
        }
        let since = instance.agent_seen_at_ms.max(self.started_at_ms);
        now_ms.saturating_sub(since) >= self.settings.agent_lost_timeout_ms
    }

    /// The scheduler's view of a service's unstopped tasks.
    fn views(
        &self,
        record: &ServiceRecord,
        tasks: &[Versioned<Arc<TaskFacts>>],
        view: &ClusterView,
        groups: Option<&dyn TargetGroups>,
        now_ms: u64,
    ) -> Vec<(TaskView, Versioned<Arc<TaskFacts>>)> {
        // With load balancers, a task is healthy only once its targets are,
        // and counts at once (ECS needs no stabilization period then: the
        // load balancer's healthy threshold is one).
        let balanced = !record
            .service
            .load_balancers
            .as_deref()
            .unwrap_or_default()
            .is_empty();
        let grace_ms = u64::try_from(
            record
                .service
                .health_check_grace_period_seconds
                .unwrap_or(0),
        )
        .unwrap_or(0)
            * 1000;
        tasks
            .iter()
            .filter(|t| t.value.last_status() != "STOPPED")
            .map(|found| {
                let task = &found.value;
                let rank = record
                    .deployments
                    .iter()
                    .position(|d| Some(d.id()) == task.started_by.as_deref())
                    .unwrap_or(usize::MAX);
                let instance = view.instances.get(&task.instance_id);
                let lost = match instance {
                    None => true,
                    Some(instance) => !instance.is_live() || self.agent_lost(instance, now_ms),
                };
                let instance_usable = !lost && instance.is_some_and(|i| i.status() == "ACTIVE");
                let phase = if task.desired_status() == "STOPPED" {
                    Phase::Stopping
                } else if task.last_status() == "RUNNING" {
                    Phase::Running
                } else {
                    Phase::Pending
                };
                let checked = task.health_checked;
                let health = task.health;
                let (targets_healthy, targets_unhealthy) = match groups {
                    Some(groups) if balanced && phase == Phase::Running => (
                        target_groups::targets_healthy(&task.targets, groups, now_ms),
                        target_groups::unhealthy_target(&task.targets, groups, now_ms).is_some(),
                    ),
                    None if balanced => (false, false),
                    _ => (true, false),
                };
                let healthy = phase == Phase::Running
                    && (!checked || health == HealthStatus::Healthy)
                    && targets_healthy;
                let stable = healthy
                    && (balanced || task.held_healthy(self.settings.stabilization_ms, now_ms));
                let started_ms = task.started_at_ms.unwrap_or(now_ms);
                let unhealthy = phase == Phase::Running
                    && ((checked && health == HealthStatus::Unhealthy) || targets_unhealthy)
                    && now_ms >= started_ms + grace_ms;
                let protected = view
                    .protected_until_ms
                    .get(&task.task_id)
                    .is_some_and(|until| *until > now_ms);
                let zone = instance
                    .and_then(|i| i.attribute("ecs.availability-zone"))
                    .unwrap_or_default();
                (
                    TaskView {
                        task_id: task.task_id.clone(),
                        primary: rank == 0,
                        deployment_rank: rank,
                        instance_id: task.instance_id.clone(),
                        zone,
                        phase,
                        healthy,
                        stable,
                        unhealthy,
                        instance_usable,
                        lost,
                        protected,
                    },
                    Versioned {
                        value: Arc::clone(&found.value),
                        revision: found.revision,
                    },
                )
            })
            .collect()
    }

    fn daemon_instances(
        &self,
        ecs: &Ecs,
        cluster: &str,
        record: &ServiceRecord,
        now_ms: u64,
    ) -> Result<Vec<DaemonInstance>, ApiError> {
        ecs.daemon_instances(cluster, record, |instance| {
            self.agent_lost(instance, now_ms)
        })
    }

    async fn reconcile(
        &self,
        ecs: &Ecs,
        cluster: &str,
        found: Versioned<ServiceRecord>,
        view: &ClusterView,
    ) -> Result<(), ApiError> {
        if found.value.is_external() {
            return self.reconcile_task_sets(ecs, cluster, found, view).await;
        }
        let now_ms = ecs.clock.now_ms();
        let group = found.value.group();
        let empty = Vec::new();
        let tasks = view.tasks_by_group.get(&group).unwrap_or(&empty);
        let daemon_instances = if found.value.is_daemon() && found.value.status() == "ACTIVE" {
            match self.daemon_instances(ecs, cluster, &found.value, now_ms) {
                Ok(instances) => Some(instances),
                Err(error) => {
                    tracing::debug!(%error, service = %found.value.name, "daemon eligibility unknown");
                    None
                }
            }
        } else {
            None
        };
        // A. Observe.
        let before = found.value.clone();
        let mut record = found.value;
        let rollback_id = super::deployment_id(&ecs.ids.uuid());
        let mut told: Vec<String> = Vec::new();
        if let Some(instances) = &daemon_instances {
            let eligible = instances.iter().filter(|i| i.eligible).count() as i32;
            record.service.desired_count = Some(eligible);
        }
        let groups = ecs.target_groups();
        let views = self.views(&record, tasks, view, groups.as_deref(), now_ms);
        self.observe(&mut record, tasks, &views, now_ms, rollback_id, &mut told);
        self.observe_traffic(&mut record, &views, now_ms, &mut told);
        let throttle = record
            .primary()
            .and_then(|primary| launch_throttle(tasks, primary.id(), now_ms));
        tell_throttle(&mut record, throttle.as_ref(), now_ms, &mut told);
        let key = keys::service(cluster, &record.name);
        // As in ECS, a deleted service is INACTIVE once each of its tasks
        // is stopping or stopped (those of lost instances aside).
        let drained = record.status() == "DRAINING"
            && views
                .iter()
                .all(|(v, _)| v.lost || v.phase == Phase::Stopping);
        if drained {
            record.service.status = Some("INACTIVE".to_owned());
            record.inactive_at_ms = Some(now_ms);
            record.service.running_count = Some(0);
            record.service.pending_count = Some(0);
            for deployment in std::mem::take(&mut record.deployments) {
                record.finish(deployment, now_ms);
            }
            for message in told.drain(..) {
                record.add_event(ecs.ids.uuid(), now_ms as f64 / 1000.0, message);
            }
            record.add_event(
                ecs.ids.uuid(),
                now_ms as f64 / 1000.0,
                events::inactive(&record.name),
            );
            let inactive_key = keys::inactive_service(cluster, &record.name);
            let txn = Txn::new()
                .expect(&key, found.revision)
                .delete(&key)
                .put(&inactive_key, records::encode(&record));
            commit_or_skip(ecs, txn).await?;
            return Ok(());
        }
        let now_seconds = now_ms as f64 / 1000.0;
        for message in told.drain(..) {
            record.add_event(ecs.ids.uuid(), now_seconds, message);
        }
        if record != before {
            let txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            if commit_or_skip(ecs, txn).await?.is_none() {
                // Someone else changed the service: the next pass reads it again.
                return Ok(());
            }
        }
        // The listener rules follow the record just committed.
        if let Some(groups) = groups.as_deref() {
            if let Err(error) = blue_green::apply_rules(groups, &record).await {
                tracing::warn!(service = %record.name, %error, "listener rules not brought up to date");
            }
        }
        // B. Plan, from views of the record as it now stands.
        let views = self.views(&record, tasks, view, groups.as_deref(), now_ms);
        let Some(primary) = record.primary().cloned() else {
            return Ok(());
        };
        let may_launch = record.status() == "ACTIVE"
            && primary.rollout_state() != DeploymentRolloutState::Failed
            && throttle.as_ref().is_none_or(|t| now_ms >= t.until_ms)
            && blue_green::may_launch(&record);
        let configuration = record.configuration();
        let minimum =
            u32::try_from(configuration.minimum_healthy_percent.unwrap_or(100)).unwrap_or(0);
        let maximum = u32::try_from(configuration.maximum_percent.unwrap_or(200)).unwrap_or(200);
        // Scale-in protection keeps tasks from scale-in and deployments, not
        // from the end of their service: a deleted one stops them too.
        let draining = record.status() == "DRAINING";
        // Blue stays whole until green's CLEAN_UP, however many tasks that makes.
        let holds_blue = blue_green::holds_blue(&record) && !draining;
        let task_views: Vec<TaskView> = views
            .iter()
            .map(|(v, _)| TaskView {
                protected: (v.protected && !draining)
                    || (holds_blue && blue_green::holds(&record, v.deployment_rank)),
                ..v.clone()
            })
            .collect();
        let actions = match &daemon_instances {
            Some(instances) => rollout::plan_daemon(&task_views, instances, minimum, may_launch),
            None if record.is_daemon() => {
                // Draining or eligibility unknown: no new tasks, stop what
                // sits on unusable instances.
                rollout::plan_daemon(&task_views, &[], minimum, false)
            }
            None => {
                let desired = u32::try_from(record.service.desired_count.unwrap_or(0)).unwrap_or(0);
                let mut bounds = Bounds::new(desired, minimum, maximum);
                if holds_blue {
                    bounds.max_total = u32::MAX;
                }
                rollout::plan_replica(&task_views, bounds, may_launch)
            }
        };
        if actions == Actions::default() {
            return Ok(());
        }
        // C. Act: launch first, so that the reports of the tasks stopped
        // here (which give resources back to instances) do not race this
        // pass's placements; the bounds counted the stopping tasks anyway.
        let mut told = Vec::new();
        let mut placement_failure: Option<String> = None;
        self.launch(
            ecs,
            cluster,
            &record,
            &primary,
            &actions,
            &mut told,
            &mut placement_failure,
        )
        .await?;
        told.extend(
            self.stop(ecs, cluster, &record, &primary, &actions, &views)
                .await?,
        );
        // D. Tell.
        tell(ecs, cluster, &record.name, told, placement_failure, now_ms).await
    }

    /// A: what the tasks say about the service's deployments.
    fn observe(
        &self,
        record: &mut ServiceRecord,
        tasks: &[Versioned<Arc<TaskFacts>>],
        views: &[(TaskView, Versioned<Arc<TaskFacts>>)],
        now_ms: u64,
        rollback_id: String,
        told: &mut Vec<String>,
    ) {
        let now_seconds = now_ms as f64 / 1000.0;
        let name = record.name.clone();
        tell_failures(record, tasks, told);
        let desired = u32::try_from(record.service.desired_count.unwrap_or(0)).unwrap_or(0);
        let configuration = record.configuration();
        let breaker = configuration
            .deployment_circuit_breaker
            .clone()
            .unwrap_or_default();
        let reset_on_healthy = breaker.reset_on_healthy_task.unwrap_or(true);
        // Counts per deployment and for the service.
        let mut running_total = 0;
        let mut pending_total = 0;
        for deployment in &mut record.deployments {
            let id = deployment.id().to_owned();
            let mine = views
                .iter()
                .filter(|(_, t)| t.value.started_by.as_deref() == Some(id.as_str()));
            let (mut running, mut pending, mut live) = (0, 0, 0);
            for (view, _) in mine {
                if view.lost {
                    continue;
                }
                match view.phase {
                    Phase::Running => {
                        running += 1;
                        live += 1;
                    }
                    Phase::Pending => {
                        pending += 1;
                        live += 1;
                    }
                    Phase::Stopping => {}
                }
            }
            running_total += running;
            pending_total += pending;
            let outcomes: Vec<TaskOutcome<'_>> = tasks
                .iter()
                .map(|t| &t.value)
                .filter(|t| t.started_by.as_deref() == Some(id.as_str()))
                .map(|t| TaskOutcome {
                    task_id: &t.task_id,
                    // Healthy for the breaker's reset once it held its health.
                    healthy_at_ms: t.stable_at_ms(self.settings.stabilization_ms, now_ms),
                    failed_at_ms: if t.failed { t.stopped_at_ms } else { None },
                })
                .collect();
            let failures = deployment
                .failure_count()
                .observe(&outcomes, reset_on_healthy);
            deployment.set_failure_count(failures);
            let set = |slot: &mut Option<i32>, value: i32| {
                if *slot != Some(value) {
                    *slot = Some(value);
                }
            };
            set(&mut deployment.deployment.running_count, running);
            set(&mut deployment.deployment.pending_count, pending);
            if deployment.deployment.status.as_deref() == Some("PRIMARY") {
                set(&mut deployment.deployment.desired_count, desired as i32);
            } else {
                set(&mut deployment.deployment.desired_count, live);
            }
        }
        record.service.running_count = Some(running_total);
        record.service.pending_count = Some(pending_total);
        // The circuit breaker, against the latest desired count.
        let threshold = failure_threshold(&configuration, desired);
        let trips = record.primary().is_some_and(|p| {
            breaker.enable == Some(true)
                && p.rollout_state() == DeploymentRolloutState::InProgress
                && p.failures.failures() >= threshold
        });
        // StopServiceDeployment or a lifecycle hook asked for a rollback.
        let requested = record.primary().is_some_and(|p| {
            p.rollback_requested && p.rollout_state() == DeploymentRolloutState::InProgress
        });
        let trips = trips || requested;
        if trips {
            let target = record.last_completed.clone();
            let Some(primary) = record.deployments.first_mut() else {
                return;
            };
            let failed_id = primary.id().to_owned();
            primary.deployment.rollout_state = Some(DeploymentRolloutState::Failed);
            primary.deployment.rollout_state_reason = Some(if requested {
                blue_green::ROLLBACK_REQUESTED_REASON.to_owned()
            } else {
                "ECS deployment circuit breaker: tasks failed to start.".to_owned()
            });
            primary.deployment.updated_at = Some(now_seconds);
            if !requested {
                told.push(events::deployment_failed(&name, &failed_id));
            }
            let rolls_back = (breaker.rollback == Some(true) || requested)
                && primary.rollback_of.is_none()
                && target.as_ref().is_some_and(|t| t.id != failed_id);
            match target.filter(|_| rolls_back) {
                Some(target) => {
                    primary.lifecycle = ServiceDeploymentStatus::RollbackInProgress;
                    primary.lifecycle_reason = Some(if requested {
                        "A rollback was requested: rolling back.".to_owned()
                    } else {
                        "The deployment circuit breaker tripped: rolling back.".to_owned()
                    });
                    primary.deployment.status = Some("ACTIVE".to_owned());
                    let reason = format!(
                        "ECS deployment circuit breaker: rolling back to deploymentId {}.",
                        target.id
                    );
                    record.service.task_definition = Some(target.spec.task_definition.clone());
                    told.push(events::rolling_back(&name, &target.id));
                    // The last completed deployment, when its tasks are still
                    // there, becomes PRIMARY again and keeps them.
                    if let Some(position) =
                        record.deployments.iter().position(|d| d.id() == target.id)
                    {
                        let mut again = record.deployments.remove(position);
                        again.deployment.status = Some("PRIMARY".to_owned());
                        again.deployment.desired_count = Some(desired as i32);
                        again.deployment.rollout_state = Some(DeploymentRolloutState::InProgress);
                        again.deployment.rollout_state_reason = Some(reason);
                        again.deployment.updated_at = Some(now_seconds);
                        again.lifecycle = ServiceDeploymentStatus::InProgress;
                        again.finished_at_ms = None;
                        again.rollback_of = Some(failed_id);
                        record.deployments.insert(0, again);
                        return self.finish_observing(record, views, now_ms, told);
                    }
                    let Some(primary) = record.deployments.first_mut() else {
                        return;
                    };
                    let mut rollback = primary.clone();
                    rollback.deployment = Deployment {
                        id: Some(rollback_id),
                        status: Some("PRIMARY".to_owned()),
                        task_definition: Some(target.spec.task_definition.clone()),
                        desired_count: Some(desired as i32),
                        pending_count: Some(0),
                        running_count: Some(0),
                        failed_tasks: Some(0),
                        created_at: Some(now_seconds),
                        updated_at: Some(now_seconds),
                        launch_type: target.spec.launch_type,
                        network_configuration: target.spec.network_configuration.clone(),
                        rollout_state: Some(DeploymentRolloutState::InProgress),
                        rollout_state_reason: Some(reason),
                        ..Default::default()
                    };
                    rollback.spec = target.spec.clone();
                    rollback.set_failure_count(FailureCount::default());
                    rollback.started_at_ms = now_ms;
                    rollback.finished_at_ms = None;
                    rollback.lifecycle = ServiceDeploymentStatus::InProgress;
                    rollback.lifecycle_reason = None;
                    rollback.sources = vec![failed_id.clone()];
                    rollback.rollback_of = Some(failed_id);
                    // It shifts no traffic and was asked nothing.
                    rollback.progress = None;
                    rollback.rollback_requested = false;
                    record.deployments.insert(0, rollback);
                }
                None => {
                    primary.lifecycle = ServiceDeploymentStatus::Stopped;
                    primary.lifecycle_reason = Some(
                        "The deployment circuit breaker tripped: tasks failed to start.".to_owned(),
                    );
                }
            }
        }
        self.finish_observing(record, views, now_ms, told);
    }

    /// A, after the breaker: a blue/green, linear or canary PRIMARY moves
    /// through its stages (`blue_green.rs`).
    fn observe_traffic(
        &self,
        record: &mut ServiceRecord,
        views: &[(TaskView, Versioned<Arc<TaskFacts>>)],
        now_ms: u64,
        told: &mut Vec<String>,
    ) {
        let desired = u32::try_from(record.service.desired_count.unwrap_or(0)).unwrap_or(0);
        let facts = blue_green::Facts::of(
            views.iter().map(|(v, _)| v),
            desired,
            now_ms,
            self.settings.deployment_minute_ms,
        );
        let before = record.primary().and_then(|p| p.progress.clone());
        if let Some(why) = blue_green::observe(record, &facts) {
            told.push(blue_green::rollback_event(&record.name, &why));
        }
        let after = record.primary().and_then(|p| p.progress.clone());
        if let (Some(before), Some(after), Some(primary)) = (before, after, record.primary()) {
            if before.stage != after.stage || before.green_percent != after.green_percent {
                told.push(blue_green::stage_event(
                    &record.name,
                    primary.id(),
                    after.stage.reported().as_str(),
                    after.green_percent,
                ));
            }
        }
    }

    /// A, continued: drained older deployments leave; a complete PRIMARY
    /// completes; a steady service says so.
    fn finish_observing(
        &self,
        record: &mut ServiceRecord,
        views: &[(TaskView, Versioned<Arc<TaskFacts>>)],
        now_ms: u64,
        told: &mut Vec<String>,
    ) {
        let now_seconds = now_ms as f64 / 1000.0;
        let name = record.name.clone();
        let desired = u32::try_from(record.service.desired_count.unwrap_or(0)).unwrap_or(0);
        // Drained older deployments leave; a complete PRIMARY completes.
        let occupying_by: HashMap<&str, usize> =
            views
                .iter()
                .filter(|(v, _)| !v.lost)
                .fold(HashMap::new(), |mut counts, (_, t)| {
                    *counts
                        .entry(t.value.started_by.as_deref().unwrap_or_default())
                        .or_default() += 1;
                    counts
                });
        let drained: Vec<usize> = (1..record.deployments.len())
            .filter(|i| !occupying_by.contains_key(record.deployments[*i].id()))
            .collect();
        for index in drained.into_iter().rev() {
            let mut deployment = record.deployments.remove(index);
            if deployment.lifecycle == ServiceDeploymentStatus::RollbackInProgress {
                // Its rollback's completion says how it ends.
                record.finished.retain(|d| d.id() != deployment.id());
                deployment.finished_at_ms = None;
                let id = deployment.id().to_owned();
                let rolled_back = record.deployments.first().is_some_and(|p| {
                    p.rollback_of.as_deref() == Some(id.as_str())
                        && p.rollout_state() == DeploymentRolloutState::Completed
                });
                if rolled_back {
                    deployment.lifecycle = ServiceDeploymentStatus::RollbackSuccessful;
                    record.finish(deployment, now_ms);
                } else {
                    // Keep it listed until the rollback completes.
                    deployment.deployment.status = Some("INACTIVE".to_owned());
                    record.finish(deployment, now_ms);
                }
            } else {
                record.finish(deployment, now_ms);
            }
        }
        let counts = rollout::counts(&views.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>());
        let complete = record.deployments.len() == 1
            && blue_green::shifted(record)
            && counts.keepers == desired
            && counts.healthy == desired
            && counts.occupying == desired;
        if complete {
            if let Some(primary) = record.deployments.first_mut() {
                if primary.rollout_state() == DeploymentRolloutState::InProgress {
                    primary.deployment.rollout_state = Some(DeploymentRolloutState::Completed);
                    primary.deployment.rollout_state_reason =
                        Some(format!("ECS deployment {} completed.", primary.id()));
                    primary.deployment.updated_at = Some(now_seconds);
                    primary.lifecycle = ServiceDeploymentStatus::Successful;
                    primary.finished_at_ms = Some(now_ms);
                    told.push(events::deployment_completed(&name, primary.id()));
                    let completed = CompletedDeployment {
                        id: primary.id().to_owned(),
                        spec: primary.spec.clone(),
                    };
                    if let Some(failed) = primary.rollback_of.clone() {
                        for older in &mut record.finished {
                            if older.id() == failed {
                                older.lifecycle = ServiceDeploymentStatus::RollbackSuccessful;
                                older.lifecycle_reason =
                                    Some(format!("Rolled back to {}.", completed.id));
                            }
                        }
                    }
                    record.last_completed = Some(completed);
                }
            }
        }
        let steady = complete
            && record.status() == "ACTIVE"
            && record
                .primary()
                .is_some_and(|p| p.rollout_state() == DeploymentRolloutState::Completed);
        // Said when it becomes true, then again only every few hours while
        // it stays true, as ECS repeats it.
        let due = !record.steady
            || record
                .told
                .steady_at_ms
                .is_none_or(|at| now_ms.saturating_sub(at) >= STEADY_STATE_REPEAT_MS);
        if steady && due {
            told.push(events::steady_state(&name));
            record.told.steady_at_ms = Some(now_ms);
        }
        record.steady = steady;
    }

    /// C: stops what the plan says, in batches; returns the events to tell.
    async fn stop(
        &self,
        ecs: &Ecs,
        cluster: &str,
        record: &ServiceRecord,
        primary: &super::DeploymentRecord,
        actions: &Actions,
        views: &[(TaskView, Versioned<Arc<TaskFacts>>)],
    ) -> Result<Vec<String>, ApiError> {
        let mut told = Vec::new();
        if actions.stop.is_empty() {
            return Ok(told);
        }
        let now_ms = ecs.clock.now_ms();
        let now_seconds = now_ms as f64 / 1000.0;
        let scaling = format!(
            "Scaling activity initiated by (deployment {})",
            primary.id()
        );
        let lost_reason = format!(
            "Task stopped because its container instance's agent was disconnected for more than {} seconds",
            self.settings.agent_lost_timeout_ms / 1000
        );
        let mut stopped_ids = Vec::new();
        let mut lost_by_instance: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // A deleted service's plan ignored their protection; say so.
        let protected: std::collections::HashSet<&str> = actions
            .stop
            .iter()
            .map(|(index, _)| &views[*index].0)
            .filter(|view| view.protected && record.status() == "DRAINING")
            .map(|view| view.task_id.as_str())
            .collect();
        // Tasks stopped because their load balancer found a target
        // unhealthy: the reason and the event, as ECS words them.
        let groups = ecs.target_groups();
        let elb_failures: HashMap<String, (String, String)> = actions
            .stop
            .iter()
            .filter(|(_, why)| *why == StopWhy::Unhealthy)
            .filter_map(|(index, _)| {
                let facts = &views[*index].1.value;
                let (target, description) =
                    target_groups::unhealthy_target(&facts.targets, groups.as_deref()?, now_ms)?;
                Some((
                    facts.task_id.clone(),
                    (
                        target_groups::elb_unhealthy_stop_reason(&target.target_group_arn),
                        events::target_unhealthy(
                            &record.name,
                            &target.target.id,
                            target.target.port,
                            &target.target_group_arn,
                            &description,
                        ),
                    ),
                ))
            })
            .collect();
        let reason_of = |task_id: &str, why: StopWhy| -> String {
            match why {
                StopWhy::Unhealthy => elb_failures
                    .get(task_id)
                    .map_or(UNHEALTHY_STOP_REASON.to_owned(), |(reason, _)| {
                        reason.clone()
                    }),
                StopWhy::ScaleIn | StopWhy::Replaced => scaling.clone(),
                StopWhy::Draining => DRAINING_STOP_REASON.to_owned(),
                StopWhy::AgentLost => lost_reason.clone(),
            }
        };
        let stop_batch_max = ecs.store.limits().items_per_txn(STOP_OPS_PER_TASK);
        for chunk in actions.stop.chunks(stop_batch_max) {
            let mut txn = Txn::new();
            let mut chunk_ids = Vec::new();
            for (index, why) in chunk {
                let (view, found) = &views[*index];
                let reason = reason_of(&found.value.task_id, *why);
                // The scheduler keeps only facts of tasks: the record is read whole here.
                let Some(current) = ecs.get_task(cluster, &found.value.task_id)? else {
                    continue;
                };
                if current.revision != found.revision {
                    // It changed since the pass read it: the next pass decides again.
                    continue;
                }
                let mut task = current.value;
                task.request_stop(
                    now_seconds,
                    Some(TaskStopCode::ServiceSchedulerInitiated),
                    &reason,
                );
                task.touch();
                let key = keys::task(cluster, &task.task_id);
                txn = txn
                    .expect(&key, current.revision)
                    .put(&key, records::encode(&task));
                chunk_ids.push((task.task_id.clone(), *why, view.instance_id.clone()));
            }
            if chunk_ids.is_empty() {
                continue;
            }
            let committed = ecs.store.commit(txn).await;
            let stopped_here: Vec<(String, StopWhy, String)> = match committed {
                Ok(_) => chunk_ids,
                Err(flotilla_store::StoreError::Conflict { .. }) => {
                    // A report raced the batch: stop them one by one from fresh reads.
                    let mut done = Vec::new();
                    for (task_id, why, instance_id) in chunk_ids {
                        let reason = reason_of(&task_id, why);
                        let changed = ecs
                            .change_task(cluster, &task_id, |task, _| {
                                if task.desired_status() == "STOPPED" {
                                    return false;
                                }
                                task.request_stop(
                                    now_seconds,
                                    Some(TaskStopCode::ServiceSchedulerInitiated),
                                    &reason,
                                );
                                task.touch();
                                true
                            })
                            .await?;
                        if changed.is_some_and(|t| {
                            t.task.stopped_reason.as_deref() == Some(reason.as_str())
                        }) {
                            done.push((task_id, why, instance_id));
                        }
                    }
                    done
                }
                Err(error) => return Err(records::store_error(error)),
            };
            for (task_id, why, instance_id) in stopped_here {
                match why {
                    StopWhy::Unhealthy => {
                        match elb_failures.get(&task_id) {
                            Some((_, said)) => told.push(said.clone()),
                            None => told.push(events::failed_health_checks(&record.name, &task_id)),
                        }
                        stopped_ids.push(task_id);
                    }
                    StopWhy::AgentLost => lost_by_instance
                        .entry(instance_id)
                        .or_default()
                        .push(task_id),
                    _ => stopped_ids.push(task_id),
                }
            }
        }
        // Tasks whose instance is deregistered have no agent to stop them.
        for (index, _) in &actions.stop {
            let (view, found) = &views[*index];
            let instance = found.value.instance_id.clone();
            if view.lost
                && !ecs
                    .get_instance(cluster, &instance)?
                    .is_some_and(|i| i.value.is_live())
            {
                ecs.change_task(cluster, &found.value.task_id, |task, _| {
                    if task.last_status() == "STOPPED" {
                        return false;
                    }
                    task.mark_stopped(now_seconds, now_ms);
                    task.touch();
                    true
                })
                .await?;
            }
        }
        if !stopped_ids.is_empty() {
            told.push(events::stopped(&record.name, &stopped_ids));
        }
        let protected_stopped: Vec<String> = stopped_ids
            .iter()
            .filter(|id| protected.contains(id.as_str()))
            .cloned()
            .collect();
        if !protected_stopped.is_empty() {
            told.push(events::stopping_protected(&record.name, &protected_stopped));
        }
        for (instance_id, task_ids) in lost_by_instance {
            told.push(events::agent_lost(&record.name, &instance_id, &task_ids));
        }
        Ok(told)
    }

    /// C: launches the PRIMARY's new tasks, in batches of one placement and
    /// one commit each.
    #[allow(clippy::too_many_arguments)]
    async fn launch(
        &self,
        ecs: &Ecs,
        cluster: &str,
        record: &ServiceRecord,
        primary: &super::DeploymentRecord,
        actions: &Actions,
        told: &mut Vec<String>,
        placement_failure: &mut Option<String>,
    ) -> Result<(), ApiError> {
        if actions.start == 0 && actions.start_on.is_empty() {
            return Ok(());
        }
        let group = record.group();
        let request = Ecs::deployment_launch_request(
            cluster,
            &group,
            primary.id(),
            &primary.spec,
            Some(&record.service),
        );
        let launch = match ecs.prepare_launch(request) {
            Ok(launch) => launch,
            Err(error) => {
                *placement_failure = Some(events::unable_to_launch(
                    &record.name,
                    error.message.trim_end_matches('.'),
                ));
                return Ok(());
            }
        };
        let launch_batch_max = ecs.store.limits().items_per_txn(LAUNCH_OPS_PER_TASK);
        let mut batches: Vec<Targeting> = Vec::new();
        let mut remaining = actions.start as usize;
        while remaining > 0 {
            let count = remaining.min(launch_batch_max);
            batches.push(Targeting::FirstFit(count));
            remaining -= count;
        }
        for chunk in actions.start_on.chunks(launch_batch_max) {
            batches.push(Targeting::Named(chunk.to_vec()));
        }
        let mut started = Vec::new();
        for targeting in batches {
            let wanted = match &targeting {
                Targeting::FirstFit(count) => *count,
                Targeting::Named(named) => named.len(),
            };
            let answer = ecs.launch(cluster, &[(&launch, targeting)]).await.pop();
            match answer {
                Some(Ok((tasks, failures))) => {
                    let placed = tasks.len();
                    started.extend(tasks.into_iter().filter_map(|t| {
                        t.task_arn
                            .and_then(|arn| arn.rsplit('/').next().map(str::to_owned))
                    }));
                    if placed < wanted {
                        let closest = failures.iter().find_map(|f| {
                            Some(events::Closest {
                                instance_id: f.arn.as_deref()?.rsplit('/').next()?,
                                reason: f.reason.as_deref()?,
                                detail: f.detail.as_deref(),
                            })
                        });
                        *placement_failure = Some(events::unable_to_place(&record.name, closest));
                        // The cluster is full for this task: further batches would fail too.
                        break;
                    }
                }
                Some(Err(error)) if error.message.contains("No Container Instances") => {
                    *placement_failure = Some(events::unable_to_place(&record.name, None));
                    break;
                }
                Some(Err(error)) => {
                    *placement_failure = Some(events::unable_to_launch(
                        &record.name,
                        error.message.trim_end_matches('.'),
                    ));
                    break;
                }
                None => break,
            }
        }
        if !started.is_empty() {
            told.push(events::started(&record.name, &started));
        }
        Ok(())
    }
}

/// Whether a stopped task failed: it could not start, its essential
/// container exited on its own, or the scheduler stopped it for failing its
/// health checks. What the circuit breaker and the launch throttle count.
fn failed(task: &TaskRecord) -> bool {
    task.last_status() == "STOPPED"
        && (matches!(
            task.task.stop_code,
            Some(TaskStopCode::TaskFailedToStart | TaskStopCode::EssentialContainerExited)
        ) || task
            .task
            .stopped_reason
            .as_deref()
            .is_some_and(stopped_unhealthy))
}

/// Whether the scheduler stopped a task for failing its container's or its
/// load balancer's health checks.
fn stopped_unhealthy(reason: &str) -> bool {
    reason == UNHEALTHY_STOP_REASON || reason.starts_with(ELB_UNHEALTHY_STOP_PREFIX)
}

/// Why a failed task failed, as its record says: its stop reason and, for
/// one whose essential container exited, that container's exit code.
fn task_failure(record: &TaskRecord) -> Option<TaskFailure> {
    let reason = record.task.stopped_reason.clone().unwrap_or_default();
    if stopped_unhealthy(&reason) {
        return None;
    }
    if record.task.stop_code == Some(TaskStopCode::TaskFailedToStart) {
        return Some(TaskFailure::FailedToStart { reason });
    }
    let essential: Vec<&str> = record
        .definition
        .container_definitions
        .iter()
        .flatten()
        .filter(|d| d.essential != Some(false))
        .filter_map(|d| d.name.as_deref())
        .collect();
    let exit_code = record
        .task
        .containers
        .iter()
        .flatten()
        .filter(|c| c.name.as_deref().is_some_and(|n| essential.contains(&n)))
        .find_map(|c| c.exit_code);
    Some(TaskFailure::Exited { reason, exit_code })
}

/// What the scheduler keeps of a service task between passes: what it
/// decides from, not the whole record (which holds its task definition).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskFacts {
    pub task_id: String,
    pub group: Option<String>,
    pub started_by: Option<String>,
    pub instance_id: String,
    last_status: String,
    desired_status: String,
    pub health: HealthStatus,
    /// An essential container has a health check.
    pub health_checked: bool,
    pub started_at_ms: Option<u64>,
    /// When it first was healthy, for the circuit breaker's resets.
    pub healthy_at_ms: Option<u64>,
    pub stopped_at_ms: Option<u64>,
    /// When its agent saw it stop, which a late report makes earlier than
    /// `stopped_at_ms`.
    pub execution_stopped_at_ms: Option<u64>,
    pub failed: bool,
    /// Why it failed, for the service's events; `None` for a task stopped
    /// for failing its health checks, which is told when it is stopped.
    pub failure: Option<TaskFailure>,
    /// Its targets in its service's target groups.
    pub targets: Vec<super::target_groups::RegisteredTarget>,
    pub deactivating_until_ms: Option<u64>,
}

impl TaskFacts {
    pub fn of(record: &TaskRecord) -> TaskFacts {
        TaskFacts {
            task_id: record.task_id.clone(),
            group: record.task.group.clone(),
            started_by: record.task.started_by.clone(),
            instance_id: record.instance_id.clone(),
            last_status: record.last_status().to_owned(),
            desired_status: record.desired_status().to_owned(),
            health: record.task.health_status.unwrap_or(HealthStatus::Unknown),
            health_checked: record.health_checked(),
            started_at_ms: record.task.started_at.map(|s| (s * 1000.0) as u64),
            healthy_at_ms: record.healthy_at_ms,
            stopped_at_ms: record.stopped_at_ms,
            execution_stopped_at_ms: record
                .task
                .execution_stopped_at
                .map(|s| (s * 1000.0) as u64),
            failed: failed(record),
            failure: failed(record).then(|| task_failure(record)).flatten(),
            targets: record.targets.clone(),
            deactivating_until_ms: record.deactivating_until_ms,
        }
    }

    /// Since when it has been healthy: records written before the time was
    /// kept count from its start, or as healthy long since.
    fn healthy_since_ms(&self) -> u64 {
        self.healthy_at_ms.or(self.started_at_ms).unwrap_or(0)
    }

    /// Whether it has been healthy for `stabilization_ms` by `now_ms`
    /// (whether it is healthy now is the caller's to check).
    pub fn held_healthy(&self, stabilization_ms: u64, now_ms: u64) -> bool {
        now_ms >= self.healthy_since_ms().saturating_add(stabilization_ms)
    }

    /// When it had been healthy for `stabilization_ms`, if it had by
    /// `now_ms` and had not stopped before (as its agent saw it, when a
    /// report came late): from then on it counts as a healthy task of its
    /// deployment.
    pub fn stable_at_ms(&self, stabilization_ms: u64, now_ms: u64) -> Option<u64> {
        self.healthy_at_ms?;
        let stable_at_ms = self.healthy_since_ms().saturating_add(stabilization_ms);
        let up_until_ms = [self.stopped_at_ms, self.execution_stopped_at_ms]
            .into_iter()
            .flatten()
            .fold(now_ms, u64::min);
        (stable_at_ms <= up_until_ms).then_some(stable_at_ms)
    }

    pub fn last_status(&self) -> &str {
        &self.last_status
    }

    pub fn desired_status(&self) -> &str {
        &self.desired_status
    }
}

/// How a deployment whose tasks keep failing is held back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LaunchThrottle {
    /// Until when it launches no more.
    until_ms: u64,
    delay_ms: u64,
    /// Its failures in the window before the latest one (that one included).
    recent_failures: u32,
}

/// The launch throttle of a deployment whose tasks keep failing, while its
/// latest failure is within [`LAUNCH_THROTTLE_WINDOW_MS`]: after that
/// failure it launches nothing for [`LAUNCH_THROTTLE_BASE_MS`] doubled for
/// each other failure in the window, at most [`LAUNCH_THROTTLE_MAX_MS`], as
/// ECS throttles a service whose tasks repeatedly fail to start.
fn launch_throttle(
    tasks: &[Versioned<Arc<TaskFacts>>],
    deployment_id: &str,
    now_ms: u64,
) -> Option<LaunchThrottle> {
    let stopped_ms: Vec<u64> = tasks
        .iter()
        .map(|t| &t.value)
        .filter(|t| t.started_by.as_deref() == Some(deployment_id) && t.failed)
        .filter_map(|t| t.stopped_at_ms)
        .collect();
    let latest = stopped_ms.iter().copied().max()?;
    if now_ms.saturating_sub(latest) > LAUNCH_THROTTLE_WINDOW_MS {
        return None;
    }
    let recent_failures = stopped_ms
        .iter()
        .filter(|at| latest.saturating_sub(**at) <= LAUNCH_THROTTLE_WINDOW_MS)
        .count() as u32;
    let delay_ms = LAUNCH_THROTTLE_BASE_MS
        .saturating_mul(1 << recent_failures.saturating_sub(1).min(16))
        .min(LAUNCH_THROTTLE_MAX_MS);
    Some(LaunchThrottle {
        until_ms: latest + delay_ms,
        delay_ms,
        recent_failures,
    })
}

/// Says that the PRIMARY's launches are held back, once for each length of
/// the back-off, from the second failure on (the first delay is too short
/// to matter). Forgets what it said once the failures are out of the window.
fn tell_throttle(
    record: &mut ServiceRecord,
    throttle: Option<&LaunchThrottle>,
    now_ms: u64,
    told: &mut Vec<String>,
) {
    let Some(primary) = record.primary() else {
        return;
    };
    let Some(throttle) = throttle else {
        record.told.throttle = None;
        return;
    };
    let holding = record.status() == "ACTIVE"
        && primary.rollout_state() != DeploymentRolloutState::Failed
        && now_ms < throttle.until_ms
        && throttle.recent_failures >= 2;
    let said = Some((primary.id().to_owned(), throttle.delay_ms));
    if holding && record.told.throttle != said {
        told.push(events::unable_to_start_consistently(
            &record.name,
            throttle.recent_failures,
            throttle.delay_ms,
        ));
        record.told.throttle = said;
    }
}

/// Tells each task of the service that failed since the last one told (a
/// bounded number by name, the rest counted), oldest first.
fn tell_failures(
    record: &mut ServiceRecord,
    tasks: &[Versioned<Arc<TaskFacts>>],
    told: &mut Vec<String>,
) {
    let through_ms = record.told.failures_through_ms;
    let mut fresh: Vec<(u64, &TaskFacts)> = tasks
        .iter()
        .map(|t| t.value.as_ref())
        .filter(|t| t.failed)
        .filter_map(|t| Some((t.stopped_at_ms?, t)))
        .filter(|(at, _)| *at > through_ms)
        .collect();
    let Some(latest) = fresh.iter().map(|(at, _)| *at).max() else {
        return;
    };
    fresh.sort_by(|a, b| (a.0, &a.1.task_id).cmp(&(b.0, &b.1.task_id)));
    let named: Vec<(&str, &TaskFailure)> = fresh
        .iter()
        .filter_map(|(_, t)| Some((t.task_id.as_str(), t.failure.as_ref()?)))
        .collect();
    for (task_id, failure) in named.iter().take(FAILED_TASK_EVENTS_MAX) {
        told.push(events::task_failed(&record.name, task_id, failure));
    }
    if named.len() > FAILED_TASK_EVENTS_MAX {
        told.push(events::more_tasks_failed(
            &record.name,
            named.len() - FAILED_TASK_EVENTS_MAX,
        ));
    }
    record.told.failures_through_ms = latest;
}

/// Commits `txn`; `None` when a condition failed (someone else wrote first).
async fn commit_or_skip(ecs: &Ecs, txn: Txn) -> Result<Option<u64>, ApiError> {
    match ecs.store.commit(txn).await {
        Ok(revision) => Ok(Some(revision)),
        Err(flotilla_store::StoreError::Conflict { .. }) => Ok(None),
        Err(error) => Err(records::store_error(error)),
    }
}

impl Ecs {
    /// Which ACTIVE instances a DAEMON service's PRIMARY belongs on: those
    /// its constraints, required attributes and launch type admit
    /// (resources aside: an instance short of them is still owed a task),
    /// whose agent is not lost.
    pub(crate) fn daemon_instances(
        &self,
        cluster: &str,
        record: &ServiceRecord,
        lost: impl Fn(&InstanceRecord) -> bool,
    ) -> Result<Vec<DaemonInstance>, ApiError> {
        let Some(primary) = record.primary() else {
            return Ok(Vec::new());
        };
        let group = record.group();
        let request = Ecs::deployment_launch_request(
            cluster,
            &group,
            primary.id(),
            &primary.spec,
            Some(&record.service),
        );
        let launch = self.prepare_launch(request)?;
        let (instances, snapshot) = self.placement_snapshot(cluster)?;
        let mut request = crate::tasks::placement_request(&launch, 1, 0)?;
        request.needs = Default::default();
        request.tcp_ports.clear();
        request.udp_ports.clear();
        request.needs_eni = false;
        request
            .constraints
            .retain(|c| !matches!(c, flotilla_scheduler::Constraint::DistinctInstance));
        let verdicts = flotilla_scheduler::explain(&snapshot, &request);
        Ok(verdicts
            .into_iter()
            .filter_map(|verdict| {
                let found = instances.get(verdict.instance as usize)?;
                let instance = &found.value;
                let admitted = match verdict.outcome {
                    flotilla_scheduler::Outcome::Excluded { reason, .. } => {
                        reason == flotilla_scheduler::Reason::Agent
                    }
                    _ => true,
                };
                let eligible = admitted && instance.status() == "ACTIVE" && !lost(instance);
                Some(DaemonInstance {
                    instance_id: instance.instance_id.clone(),
                    eligible,
                })
            })
            .collect())
    }

    /// Runs the service scheduler until the store closes: a pass after
    /// every burst of changes, and at least every `settings.tick`.
    pub async fn run_service_scheduler(self: Arc<Self>, settings: SchedulerSettings) {
        let tick = settings.tick;
        let settle = settings.settle;
        let mut scheduler = ServiceScheduler::new(settings, self.clock.now_ms());
        // Only that something changed matters, not what: a pass re-reads.
        let mut revisions = self.store.revisions();
        loop {
            revisions.mark_unchanged();
            if let Err(error) = scheduler.pass(&self).await {
                tracing::warn!(%error, "service scheduler pass failed");
            }
            tokio::select! {
                changed = revisions.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(tick) => {}
            }
            tokio::time::sleep(settle).await;
        }
    }
}

/// Appends a step's events, and a placement failure unless it was said
/// within [`PLACEMENT_FAILURE_REPEAT_MS`].
pub(super) async fn tell(
    ecs: &Ecs,
    cluster: &str,
    name: &str,
    told: Vec<String>,
    placement_failure: Option<String>,
    now_ms: u64,
) -> Result<(), ApiError> {
    if told.is_empty() && placement_failure.is_none() {
        return Ok(());
    }
    let now_seconds = ecs.clock.now_ms() as f64 / 1000.0;
    let ids: Vec<String> = (0..told.len() + 1).map(|_| ecs.ids.uuid()).collect();
    let key = keys::service(cluster, name);
    records::mutate(ecs.store.as_ref(), || {
        let Some(found) = ecs.get_service(cluster, name)? else {
            return Ok(Attempt::Done(()));
        };
        let mut current = found.value;
        let mut changed = !told.is_empty();
        for (message, id) in told.iter().zip(&ids) {
            current.add_event(id.clone(), now_seconds, message.clone());
        }
        if let Some(message) = &placement_failure {
            let repeated = current
                .placement_failure
                .as_ref()
                .is_some_and(|(said, at)| {
                    said == message && now_ms.saturating_sub(*at) < PLACEMENT_FAILURE_REPEAT_MS
                });
            if !repeated {
                current.add_event(ids[told.len()].clone(), now_seconds, message.clone());
                current.placement_failure = Some((message.clone(), now_ms));
                changed = true;
            }
        }
        // Writing nothing new would only wake the scheduler again.
        if !changed {
            return Ok(Attempt::Done(()));
        }
        let txn = Txn::new()
            .expect(&key, found.revision)
            .put(&key, records::encode(&current));
        Ok(Attempt::Commit(txn, ()))
    })
    .await
}
