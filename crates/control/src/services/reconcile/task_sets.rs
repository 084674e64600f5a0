//! The scheduler's step for a service with the EXTERNAL deployment
//! controller: every task set is kept at its `computedDesiredCount`.
//!
//! ```text
//!  A observe  per set: running / pending counts, computed count, stabilityStatus
//!             (STEADY_STATE once its tasks are exactly its count, all healthy);
//!             DRAINING sets whose tasks are gone are removed; the service's
//!             counts are the sets' sums; DRAINING service → INACTIVE
//!             → commit the service record if it changed
//!  B plan     per set: rollout::plan_replica over the set's own tasks, as if
//!             the set were a service's only deployment (its computed count
//!             desired, the service's minimumHealthyPercent / maximumPercent)
//!  C act      the deployment scheduler's launch and stop, per set; tasks of no
//!             set are stopped
//!  D tell     events appended
//! ```
//!
//! A set is run through the same views, launches and stops as a deployment:
//! [`SetRun`] is a service record holding the set as its one deployment,
//! whose load balancers are the set's. So its tasks count as healthy only
//! once their targets are, are replaced when they fail, and are registered
//! in the set's own target groups (`ServiceRecord::load_balancers_of`).
//! Like the rest of the scheduler, every decision comes from the records as
//! just read.

use std::collections::BTreeSet;
use std::sync::Arc;

use flotilla_store::Txn;
use flotilla_types::ecs::StabilityStatus;
use flotilla_types::ApiError;

use super::super::task_sets::TaskSetRecord;
use super::super::{events, DeploymentRecord, DeploymentSpec, ServiceRecord};
use super::{
    commit_or_skip, launch_throttle, tell, tell_failures, ClusterView, ServiceScheduler, TaskFacts,
    STEADY_STATE_REPEAT_MS,
};
use crate::records::{self, keys, Versioned};
use crate::services::rollout::{self, Actions, Bounds, Phase, TaskView};
use crate::Ecs;

type Views = Vec<(TaskView, Versioned<Arc<TaskFacts>>)>;

/// One task set (or the tasks of a set that is gone) as the deployment
/// scheduler's pieces see it.
struct SetRun {
    /// The service, with the set as its one deployment and the set's load
    /// balancers as its own.
    record: ServiceRecord,
    deployment: DeploymentRecord,
    /// The set's tasks.
    tasks: Vec<Versioned<Arc<TaskFacts>>>,
    desired: u32,
    may_launch: bool,
}

fn copy(task: &Versioned<Arc<TaskFacts>>) -> Versioned<Arc<TaskFacts>> {
    Versioned {
        value: Arc::clone(&task.value),
        revision: task.revision,
    }
}

fn set_run(
    ecs: &Ecs,
    record: &ServiceRecord,
    id: &str,
    mut spec: DeploymentSpec,
    desired: u32,
    tasks: &[Versioned<Arc<TaskFacts>>],
    now_ms: u64,
) -> SetRun {
    // Placement and ExecuteCommand are the service's, which UpdateService
    // may change for the tasks launched after.
    let service = &record.service;
    spec.placement_constraints = service.placement_constraints.clone().unwrap_or_default();
    spec.placement_strategy = service.placement_strategy.clone().unwrap_or_default();
    spec.enable_execute_command = service.enable_execute_command.unwrap_or(false);
    let deployment = ecs.new_deployment(
        id.to_owned(),
        spec,
        &record.configuration(),
        desired as i32,
        now_ms,
    );
    let mut service = service.clone();
    service.load_balancers = deployment.spec.load_balancers.clone();
    SetRun {
        record: ServiceRecord {
            service,
            cluster: record.cluster.clone(),
            name: record.name.clone(),
            deployments: vec![deployment.clone()],
            ..Default::default()
        },
        deployment,
        tasks: tasks
            .iter()
            .filter(|t| t.value.started_by.as_deref() == Some(id))
            .map(copy)
            .collect(),
        desired,
        may_launch: false,
    }
}

/// What a set's views say of it: (running, pending, steady).
fn set_counts(views: &Views, computed: i32) -> (i32, i32, bool) {
    let (mut running, mut pending, mut settled) = (0, 0, true);
    for (view, _) in views.iter().filter(|(v, _)| !v.lost) {
        match view.phase {
            Phase::Running => {
                running += 1;
                settled &= view.healthy && !view.unhealthy;
            }
            Phase::Pending => pending += 1,
            // A task still leaving (draining its targets) unsettles it too.
            Phase::Stopping => settled = false,
        }
    }
    (
        running,
        pending,
        settled && pending == 0 && running == computed,
    )
}

impl ServiceScheduler {
    /// The runs of a service's sets and of tasks whose set is gone.
    fn set_runs(
        &self,
        ecs: &Ecs,
        record: &ServiceRecord,
        tasks: &[Versioned<Arc<TaskFacts>>],
        unstopped: &Views,
        now_ms: u64,
    ) -> Vec<SetRun> {
        let active = record.is_active();
        let mut runs: Vec<SetRun> = record
            .task_sets
            .iter()
            .map(|set: &TaskSetRecord| {
                let desired =
                    u32::try_from(set.task_set.computed_desired_count.unwrap_or(0)).unwrap_or(0);
                let mut run = set_run(
                    ecs,
                    record,
                    set.id(),
                    set.spec.clone(),
                    desired,
                    tasks,
                    now_ms,
                );
                let throttle = launch_throttle(tasks, set.id(), now_ms);
                run.may_launch =
                    active && !set.is_draining() && throttle.is_none_or(|t| now_ms >= t.until_ms);
                run
            })
            .collect();
        // Unstopped tasks of a set that is no longer there: nothing keeps them.
        let mut orphans: BTreeSet<&str> = BTreeSet::new();
        for (_, task) in unstopped {
            let started_by = task.value.started_by.as_deref().unwrap_or_default();
            if record.task_set_spec(Some(started_by)).is_none() {
                orphans.insert(started_by);
            }
        }
        for id in orphans {
            let spec = DeploymentSpec {
                load_balancers: Some(Vec::new()),
                ..Default::default()
            };
            runs.push(set_run(ecs, record, id, spec, 0, tasks, now_ms));
        }
        runs
    }

    pub(super) async fn reconcile_task_sets(
        &self,
        ecs: &Ecs,
        cluster: &str,
        found: Versioned<ServiceRecord>,
        view: &ClusterView,
    ) -> Result<(), ApiError> {
        let now_ms = ecs.clock.now_ms();
        let now_seconds = now_ms as f64 / 1000.0;
        let empty = Vec::new();
        let tasks = view
            .tasks_by_group
            .get(&found.value.group())
            .unwrap_or(&empty);
        let groups = ecs.target_groups();
        let key = keys::service(cluster, &found.value.name);
        let name = found.value.name.clone();
        // A. Observe.
        let mut record = found.value.clone();
        let mut told = Vec::new();
        tell_failures(&mut record, tasks, &mut told);
        let all = self.views(&record, tasks, view, groups.as_deref(), now_ms);
        let drained = all
            .iter()
            .all(|(v, _)| v.lost || v.phase == Phase::Stopping);
        // The scheduler reads live services only: one not ACTIVE is DRAINING.
        let deleted = !record.is_active();
        if deleted && drained {
            // As for any service: INACTIVE once each task is stopping.
            record.service.status = Some("INACTIVE".to_owned());
            record.inactive_at_ms = Some(now_ms);
            record.service.running_count = Some(0);
            record.service.pending_count = Some(0);
            record.task_sets.clear();
            told.push(events::inactive(&name));
            for message in told {
                record.add_event(ecs.ids.uuid(), now_seconds, message);
            }
            let txn = Txn::new().expect(&key, found.revision).delete(&key).put(
                keys::inactive_service(cluster, &name),
                records::encode(&record),
            );
            commit_or_skip(ecs, txn).await?;
            return Ok(());
        }
        let desired = record.service.desired_count.unwrap_or(0);
        let (mut running_total, mut pending_total) = (0, 0);
        let mut gone = Vec::new();
        let mut all_steady = !record.task_sets.is_empty();
        for index in 0..record.task_sets.len() {
            let set = &record.task_sets[index];
            let computed = set.computed_desired_count(desired);
            let run = set_run(ecs, &record, set.id(), set.spec.clone(), 0, tasks, now_ms);
            let views = self.views(&run.record, &run.tasks, view, groups.as_deref(), now_ms);
            let (running, pending, steady) = set_counts(&views, computed);
            running_total += running;
            pending_total += pending;
            all_steady &= steady;
            let set = &mut record.task_sets[index];
            if set.is_draining() && views.iter().all(|(v, _)| v.lost) {
                gone.push(index);
                continue;
            }
            set.set_computed_desired_count(computed, now_seconds);
            set.task_set.running_count = Some(running);
            set.task_set.pending_count = Some(pending);
            let stability = if steady {
                StabilityStatus::SteadyState
            } else {
                StabilityStatus::Stabilizing
            };
            set.set_stability(stability, now_seconds);
        }
        for index in gone.into_iter().rev() {
            record.task_sets.remove(index);
        }
        record.service.running_count = Some(running_total);
        record.service.pending_count = Some(pending_total);
        let steady = all_steady && !deleted;
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
        for message in told {
            record.add_event(ecs.ids.uuid(), now_seconds, message);
        }
        if record != found.value {
            let txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            if commit_or_skip(ecs, txn).await?.is_none() {
                // Someone else changed the service: the next pass reads it again.
                return Ok(());
            }
        }
        // B and C, set by set.
        let configuration = record.configuration();
        let minimum =
            u32::try_from(configuration.minimum_healthy_percent.unwrap_or(100)).unwrap_or(0);
        let maximum = u32::try_from(configuration.maximum_percent.unwrap_or(200)).unwrap_or(200);
        let mut told = Vec::new();
        let mut placement_failure: Option<String> = None;
        for run in self.set_runs(ecs, &record, tasks, &all, now_ms) {
            let views = self.views(&run.record, &run.tasks, view, groups.as_deref(), now_ms);
            // Scale-in protection does not outlive the service.
            let task_views: Vec<TaskView> = views
                .iter()
                .map(|(v, _)| TaskView {
                    protected: v.protected && !deleted,
                    ..v.clone()
                })
                .collect();
            let actions = rollout::plan_replica(
                &task_views,
                Bounds::new(run.desired, minimum, maximum),
                run.may_launch,
            );
            if actions == Actions::default() {
                continue;
            }
            self.launch(
                ecs,
                cluster,
                &run.record,
                &run.deployment,
                &actions,
                &mut told,
                &mut placement_failure,
            )
            .await?;
            told.extend(
                self.stop(ecs, cluster, &run.record, &run.deployment, &actions, &views)
                    .await?,
            );
        }
        // D. Tell.
        tell(ecs, cluster, &name, told, placement_failure, now_ms).await
    }
}
