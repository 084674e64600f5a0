//! The planner: from a task's record (desired and known statuses) to the
//! next step toward the desired status. Pure: the managed task executes the
//! step and feeds what happened back into the record.
//!
//! ```text
//!  desired RUNNING:  Provision ─▶ Pull each ─▶ (dependencies met?) Create ─▶ Start ─▶ watch
//!                       any essential container stops ─▶ Fail(reason) ─▶ desired STOPPED
//!  desired STOPPED:  Abandon the never-started ─▶ Stop the running, dependents first ─▶ Release ─▶ Done
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_types::acs::conventions;
use flotilla_types::ecs::ContainerCondition;

use super::order::{may_stop, start_readiness, Dependency, Readiness};
use super::record::TaskRecord;
use super::status::{next_container_action, ContainerAction, ContainerStatus, DesiredStatus};

/// How long a container waits for START and HEALTHY dependencies when its
/// definition sets no `startTimeout`: ECS's `ECS_CONTAINER_START_TIMEOUT`
/// default on Linux. COMPLETE and SUCCESS dependencies (init jobs of any
/// length) wait only as long as an explicit `startTimeout` says.
pub const DEFAULT_DEPENDENCY_WAIT: Duration = Duration::from_secs(180);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Set up task-wide resources: volumes, and the network and pause
    /// container of an awsvpc task.
    Provision,
    Pull(usize),
    Create(usize),
    Start(usize),
    /// Stop these containers, at once (none depends on another).
    Stop(Vec<usize>),
    /// Mark a container that never ran as stopped.
    Abandon(usize),
    /// The task cannot go on: stop it with this reason.
    Fail(String),
    /// Stop the pause container once every task container has stopped.
    Release,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    Step(Step),
    /// Nothing to do until something changes; check again by `deadline_ms` at the latest.
    Wait {
        deadline_ms: Option<u64>,
    },
    /// The task has stopped and everything is released.
    Done,
}

/// The next step for `record`, given each container's dependencies (by name)
/// and each container's own dependency wait (its `startTimeout`).
pub fn plan(
    record: &TaskRecord,
    dependencies: &BTreeMap<String, Vec<Dependency>>,
    now_ms: u64,
) -> Plan {
    match record.desired {
        DesiredStatus::Running => plan_running(record, dependencies, now_ms),
        DesiredStatus::Stopped => plan_stopped(record, dependencies),
    }
}

fn plan_running(
    record: &TaskRecord,
    dependencies: &BTreeMap<String, Vec<Dependency>>,
    now_ms: u64,
) -> Plan {
    if let Some(exited) = record
        .containers
        .iter()
        .find(|c| c.essential && c.known == ContainerStatus::Stopped)
    {
        // ECS names the memory limit rather than the exit when the kernel
        // killed the container for it.
        if exited.reason.as_deref() == Some(conventions::OUT_OF_MEMORY_REASON) {
            return Plan::Step(Step::Fail(conventions::OUT_OF_MEMORY_REASON.to_owned()));
        }
        return Plan::Step(Step::Fail(format!(
            "{}: {}",
            conventions::ESSENTIAL_EXITED_REASON,
            exited.name
        )));
    }
    // Registration demands an essential container, but a task whose every
    // container has exited is over either way.
    if record
        .containers
        .iter()
        .all(|c| c.known == ContainerStatus::Stopped)
    {
        return Plan::Step(Step::Fail("Every container in the task exited".to_owned()));
    }
    if !record.resources.provisioned {
        return Plan::Step(Step::Provision);
    }
    if let Some(index) = record
        .containers
        .iter()
        .position(|c| c.known == ContainerStatus::None)
    {
        return Plan::Step(Step::Pull(index));
    }
    let views = record.views();
    let mut deadline_ms: Option<u64> = None;
    for (index, container) in record.containers.iter().enumerate() {
        let action = next_container_action(container.known, DesiredStatus::Running);
        if !matches!(
            action,
            Some(ContainerAction::Create | ContainerAction::Start)
        ) {
            continue;
        }
        let own = dependencies
            .get(&container.name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        match start_readiness(own, &views) {
            Readiness::Ready if container.known == ContainerStatus::Pulled => {
                return Plan::Step(Step::Create(index))
            }
            Readiness::Ready => return Plan::Step(Step::Start(index)),
            Readiness::Never { reason } => {
                return Plan::Step(Step::Fail(format!(
                    "CannotStartContainerError: container {}: {reason}",
                    container.name
                )));
            }
            Readiness::Waiting { on } => {
                let condition = own.iter().find(|d| d.container == on).map(|d| d.condition);
                let wait = dependency_wait(record, &container.name, condition);
                if let (Some(wait), Some(since)) = (wait, container.pulled_at_ms) {
                    let give_up_at =
                        since.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
                    if now_ms >= give_up_at {
                        return Plan::Step(Step::Fail(format!(
                            "CannotStartContainerError: container {}: dependency {on} not met within {} s",
                            container.name,
                            wait.as_secs()
                        )));
                    }
                    deadline_ms = Some(deadline_ms.map_or(give_up_at, |d| d.min(give_up_at)));
                }
            }
        }
    }
    Plan::Wait { deadline_ms }
}

/// How long `container` may wait on a dependency with `condition`.
fn dependency_wait(
    record: &TaskRecord,
    container: &str,
    condition: Option<ContainerCondition>,
) -> Option<Duration> {
    let explicit = record
        .definition(container)
        .and_then(|definition| definition.start_timeout)
        .and_then(|seconds| u64::try_from(seconds).ok())
        .filter(|seconds| *seconds > 0)
        .map(Duration::from_secs);
    match condition {
        Some(ContainerCondition::Complete | ContainerCondition::Success) => explicit,
        _ => Some(explicit.unwrap_or(DEFAULT_DEPENDENCY_WAIT)),
    }
}

fn plan_stopped(record: &TaskRecord, dependencies: &BTreeMap<String, Vec<Dependency>>) -> Plan {
    if let Some(index) = record.containers.iter().position(|c| {
        next_container_action(c.known, DesiredStatus::Stopped) == Some(ContainerAction::Abandon)
    }) {
        return Plan::Step(Step::Abandon(index));
    }
    let views = record.views();
    let running: Vec<usize> = record
        .containers
        .iter()
        .enumerate()
        .filter(|(_, c)| c.known == ContainerStatus::Running)
        .map(|(index, _)| index)
        .collect();
    if !running.is_empty() {
        let stoppable: Vec<usize> = running
            .iter()
            .copied()
            .filter(|index| may_stop(&record.containers[*index].name, dependencies, &views))
            .collect();
        // Only a dependency cycle leaves nothing stoppable; stop them all
        // rather than hang.
        return Plan::Step(Step::Stop(if stoppable.is_empty() {
            running
        } else {
            stoppable
        }));
    }
    if record.resources.pause_container_id.is_some() && !record.resources.released {
        return Plan::Step(Step::Release);
    }
    Plan::Done
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use flotilla_types::acs::TaskPayload;

    use super::super::order::dependencies_of;
    use super::*;

    fn record(containers: serde_json::Value) -> (TaskRecord, BTreeMap<String, Vec<Dependency>>) {
        let payload: TaskPayload = serde_json::from_value(serde_json::json!({
            "taskArn": "arn:aws:ecs:us-east-1:000000000000:task/default/t1",
            "clusterArn": "arn:aws:ecs:us-east-1:000000000000:cluster/default",
            "desiredStatus": "RUNNING", "version": 1,
            "taskDefinition": {"family": "web", "revision": 1, "containerDefinitions": containers}
        }))
        .unwrap();
        let mut record = TaskRecord::new(payload, || "t".to_owned());
        record.resources.provisioned = true;
        let dependencies = record
            .definitions()
            .iter()
            .map(|d| (d.name.clone().unwrap(), dependencies_of(d)))
            .collect();
        (record, dependencies)
    }

    fn set(record: &mut TaskRecord, index: usize, known: ContainerStatus) {
        record.containers[index].known = known;
        if known >= ContainerStatus::Pulled {
            record.containers[index].pulled_at_ms = Some(0);
        }
        if known >= ContainerStatus::Running {
            record.containers[index].started_at_ms = Some(1);
        }
    }

    #[test]
    fn starts_in_dependency_order() {
        let (mut record, deps) = record(serde_json::json!([
            {"name": "app", "image": "a", "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]},
            {"name": "db", "image": "d", "essential": false}
        ]));
        record.resources.provisioned = false;
        assert_eq!(plan(&record, &deps, 0), Plan::Step(Step::Provision));
        record.resources.provisioned = true;
        assert_eq!(plan(&record, &deps, 0), Plan::Step(Step::Pull(0)));
        set(&mut record, 0, ContainerStatus::Pulled);
        assert_eq!(plan(&record, &deps, 0), Plan::Step(Step::Pull(1)));
        set(&mut record, 1, ContainerStatus::Pulled);
        // app waits on db, so db is created first.
        assert_eq!(plan(&record, &deps, 0), Plan::Step(Step::Create(1)));
        set(&mut record, 1, ContainerStatus::Created);
        assert_eq!(plan(&record, &deps, 0), Plan::Step(Step::Start(1)));
        set(&mut record, 1, ContainerStatus::Running);
        let deadline = DEFAULT_DEPENDENCY_WAIT.as_millis() as u64;
        assert_eq!(
            plan(&record, &deps, 0),
            Plan::Wait {
                deadline_ms: Some(deadline)
            }
        );
        record.containers[1].health = crate::engine::status::Health::Healthy;
        assert_eq!(plan(&record, &deps, 0), Plan::Step(Step::Create(0)));
        // Had db never become healthy, the task would give up at the deadline.
        record.containers[1].health = crate::engine::status::Health::Unhealthy;
        assert!(
            matches!(plan(&record, &deps, deadline), Plan::Step(Step::Fail(reason)) if reason.starts_with("CannotStartContainerError"))
        );
    }

    #[test]
    fn an_essential_exit_fails_the_task_and_a_non_essential_one_does_not() {
        let (mut record, deps) = record(serde_json::json!([
            {"name": "app", "image": "a"},
            {"name": "sidecar", "image": "s", "essential": false}
        ]));
        set(&mut record, 0, ContainerStatus::Running);
        set(&mut record, 1, ContainerStatus::Stopped);
        assert_eq!(plan(&record, &deps, 0), Plan::Wait { deadline_ms: None });
        set(&mut record, 0, ContainerStatus::Stopped);
        assert_eq!(
            plan(&record, &deps, 0),
            Plan::Step(Step::Fail(format!(
                "{}: app",
                conventions::ESSENTIAL_EXITED_REASON
            )))
        );
    }

    #[test]
    fn stops_dependents_first_then_releases() {
        let (mut record, deps) = record(serde_json::json!([
            {"name": "db", "image": "d"},
            {"name": "app", "image": "a", "dependsOn": [{"containerName": "db", "condition": "START"}]},
            {"name": "web", "image": "w", "links": ["app:backend"]},
            {"name": "late", "image": "l"}
        ]));
        for index in 0..3 {
            set(&mut record, index, ContainerStatus::Running);
        }
        set(&mut record, 3, ContainerStatus::Pulled);
        record.resources.pause_container_id = Some("pause".to_owned());
        record.request_stop(Some("scaled in".to_owned()));
        assert_eq!(plan(&record, &deps, 0), Plan::Step(Step::Abandon(3)));
        set(&mut record, 3, ContainerStatus::Stopped);
        assert_eq!(plan(&record, &deps, 0), Plan::Step(Step::Stop(vec![2])));
        set(&mut record, 2, ContainerStatus::Stopped);
        assert_eq!(plan(&record, &deps, 0), Plan::Step(Step::Stop(vec![1])));
        set(&mut record, 1, ContainerStatus::Stopped);
        assert_eq!(plan(&record, &deps, 0), Plan::Step(Step::Stop(vec![0])));
        set(&mut record, 0, ContainerStatus::Stopped);
        assert_eq!(plan(&record, &deps, 0), Plan::Step(Step::Release));
        record.resources.released = true;
        assert_eq!(plan(&record, &deps, 0), Plan::Done);
        assert_eq!(record.stop_reason.as_deref(), Some("scaled in"));
    }

    #[test]
    fn a_failed_success_dependency_fails_the_task() {
        let (mut record, deps) = record(serde_json::json!([
            {"name": "migrate", "image": "m", "essential": false},
            {"name": "app", "image": "a", "dependsOn": [{"containerName": "migrate", "condition": "SUCCESS"}]}
        ]));
        set(&mut record, 0, ContainerStatus::Stopped);
        record.containers[0].exit_code = Some(2);
        set(&mut record, 1, ContainerStatus::Pulled);
        assert!(
            matches!(plan(&record, &deps, 0), Plan::Step(Step::Fail(reason)) if reason.contains("exited with code 2"))
        );
    }
}
