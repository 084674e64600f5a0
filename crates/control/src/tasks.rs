//! Tasks: RunTask, StartTask, StopTask, DescribeTasks, ListTasks, and the
//! agent's SubmitTaskStateChange and SubmitContainerStateChange.
//!
//! Each task is one [`TaskRecord`] under `keys::task(cluster, id)`. A task is
//! created in the same transaction that takes its resources from its
//! instance (where: `flotilla_scheduler::place`, mapped in `placement.rs`), and gives them back in the transaction that
//! records it STOPPED, so an instance's remaining resources always equal what
//! it registered less what its unstopped tasks hold.
//!
//! ```text
//! lastStatus:  PROVISIONING → PENDING → ACTIVATING → RUNNING → DEACTIVATING → STOPPING → DEPROVISIONING → STOPPED
//!                 (created)      └──────────── reported by the agent, forward only ───────────────┘   (releases resources)
//! desiredStatus: RUNNING ──StopTask / agent reports DEACTIVATING or later──▶ STOPPED
//! ```
//!
//! A state change that would move `lastStatus` backwards (a late PENDING
//! after RUNNING) is ignored; so is a container change that would move a
//! container backwards (PENDING → RUNNING → STOPPED).
//!
//! **Stop codes.** StopTask sets `UserInitiated`. When the agent reports a
//! task STOPPED that nobody asked to stop, the stop code comes from its
//! `reason`: one starting with [`ESSENTIAL_EXITED_REASON`] ("Essential
//! container in task exited") gives `EssentialContainerExited`; one starting
//! with any of [`FAILED_TO_START_REASONS`] (`CannotPullContainerError`,
//! `CannotCreateContainerError`, `CannotStartContainerError`,
//! `ResourceInitializationError`) gives `TaskFailedToStart`; any other reason
//! gives `TaskFailedToStart` when the task never reached RUNNING and
//! `EssentialContainerExited` when it did. The reason becomes `stoppedReason`
//! unless StopTask already set one.
//!
//! **Retention.** A STOPPED task stays describable for
//! [`STOPPED_TASK_RETENTION_MS`]; [`Ecs::collect_stopped_tasks`] deletes older ones.

use flotilla_store::Txn;
use flotilla_types::acs::conventions::{
    ESSENTIAL_EXITED_REASON, FAILED_TO_START_REASONS, FARGATE_PLATFORM_VERSION,
};
use flotilla_types::acs::TaskNetworkInterface;
use flotilla_types::ecs::*;
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::instances::{scan, InstanceRecord, DEREGISTERED_STOP_REASON};
use crate::live_placement::Placed;
use crate::page;
use crate::placement::{self, Reservation};
use crate::records::{self, keys, Attempt};
use crate::strategy::{is_fargate, Origin, StrategyLaunch, FARGATE_PROVIDERS};
use crate::task_definitions::{ReferenceError, TaskDefinitionRecord};
use crate::Ecs;

#[cfg(test)]
mod tests;

/// How long a STOPPED task stays describable, as ECS keeps them (about an hour).
pub const STOPPED_TASK_RETENTION_MS: u64 = 60 * 60 * 1000;

/// Most tasks one RunTask call may start.
const RUN_TASK_COUNT_MAX: i32 = 10;
/// Operations one RunTask call takes in the commit of its cluster's batch:
/// at most `RUN_TASK_COUNT_MAX` task records and as many instances. The
/// store's transaction limits divided by it are how many RunTask calls are
/// placed and committed together.
const OPS_PER_LAUNCH: usize = 2 * RUN_TASK_COUNT_MAX as usize;
/// Most instances one StartTask call may name.
const START_TASK_INSTANCES_MAX: usize = 10;
const DESCRIBE_TASKS_MAX: usize = 100;
const LIST_RESULTS_MAX: usize = 100;
const STARTED_BY_LENGTH_MAX: usize = 128;
const GROUP_LENGTH_MAX: usize = 255;
const STOP_REASON_LENGTH_MAX: usize = 255;
/// Most containers one state change may report: a task holds at most 10.
const CONTAINER_CHANGES_MAX: usize = 10;
/// Smallest hard memory limit Docker accepts for a container.
const CONTAINER_MEMORY_MIB_MIN: i32 = 6;
/// The ephemeral storage a Fargate task has when its definition asks for none.
const FARGATE_EPHEMERAL_STORAGE_GIB_DEFAULT: i32 = 20;
/// Most subnets and security groups an awsvpcConfiguration may name, as ECS allows.
const AWSVPC_SUBNETS_MAX: usize = 16;
const AWSVPC_SECURITY_GROUPS_MAX: usize = 5;
const CPU_ARCHITECTURE_ATTRIBUTE: &str = "ecs.cpu-architecture";
/// What an instance that registered without the attribute runs on.
const CPU_ARCHITECTURE_DEFAULT: &str = "x86_64";

pub const USER_STOP_REASON: &str = "Task stopped by user";
/// What ECS answers a request that would start using a deregistered revision.
pub(crate) const TASK_DEFINITION_INACTIVE: &str = "TaskDefinition is inactive";
const TASK_NOT_FOUND: &str = "The referenced task was not found.";

/// The order `lastStatus` moves in.
pub const TASK_STATUSES: [&str; 8] = [
    "PROVISIONING",
    "PENDING",
    "ACTIVATING",
    "RUNNING",
    "DEACTIVATING",
    "STOPPING",
    "DEPROVISIONING",
    "STOPPED",
];
/// The order a container's `lastStatus` moves in.
pub const CONTAINER_STATUSES: [&str; 3] = ["PENDING", "RUNNING", "STOPPED"];

fn task_rank(status: &str) -> Option<usize> {
    TASK_STATUSES.iter().position(|s| *s == status)
}

fn container_rank(status: &str) -> Option<usize> {
    CONTAINER_STATUSES.iter().position(|s| *s == status)
}

/// A task as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The wire shape, tags included.
    pub task: Task,
    pub cluster: String,
    pub task_id: String,
    pub instance_id: String,
    /// The revision it runs, kept whole so that the agent's payload needs no
    /// other read and survives the definition's deletion.
    pub definition: TaskDefinition,
    /// What it took from its instance.
    pub reservation: Reservation,
    /// Whether the reservation was given back (once, when it stopped).
    #[serde(default)]
    pub released: bool,
    #[serde(default)]
    pub network_interface: Option<TaskNetworkInterface>,
    /// When it reached STOPPED (clock ms), for retention.
    #[serde(default)]
    pub stopped_at_ms: Option<u64>,
    /// When it first was healthy (clock ms): RUNNING and, when an essential
    /// container has a health check, HEALTHY. A service deployment's
    /// circuit breaker resets on it.
    #[serde(default)]
    pub healthy_at_ms: Option<u64>,
    /// The targets it is registered as in its service's target groups,
    /// kept until they are deregistered and their delay is over: while
    /// they are, its agent is not told to stop it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<crate::services::target_groups::RegisteredTarget>,
    /// While it is DEACTIVATING (deregistered, draining): until when (clock ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivating_until_ms: Option<u64>,
}

impl TaskRecord {
    pub fn last_status(&self) -> &str {
        self.task.last_status.as_deref().unwrap_or("PROVISIONING")
    }

    pub fn desired_status(&self) -> &str {
        self.task.desired_status.as_deref().unwrap_or("RUNNING")
    }

    /// What its agent is told to do: a task still registered in a target
    /// group keeps running until it is deregistered and drained, as ECS
    /// holds a task in DEACTIVATING before it stops it.
    pub fn agent_desired_status(&self) -> &str {
        if self.desired_status() == "STOPPED"
            && !self.targets.is_empty()
            && self.last_status() != "STOPPED"
        {
            return "RUNNING";
        }
        self.desired_status()
    }

    pub fn arn(&self) -> String {
        self.task.task_arn.clone().unwrap_or_default()
    }

    pub(crate) fn touch(&mut self) {
        self.task.version = Some(self.task.version.unwrap_or(0) + 1);
    }

    /// Whether an essential container has a health check, so that the task
    /// is healthy only once its health is HEALTHY.
    pub fn health_checked(&self) -> bool {
        self.definition
            .container_definitions
            .iter()
            .flatten()
            .any(|d| d.essential != Some(false) && d.health_check.is_some())
    }

    /// Notes when the task first became healthy, if it now is.
    pub(crate) fn note_healthy(&mut self, now_ms: u64) {
        let healthy = self.last_status() == "RUNNING"
            && (!self.health_checked() || self.task.health_status == Some(HealthStatus::Healthy));
        if healthy && self.healthy_at_ms.is_none() {
            self.healthy_at_ms = Some(now_ms);
        }
    }

    /// Asks the task to stop; the agent carries it out.
    pub(crate) fn request_stop(
        &mut self,
        now_seconds: f64,
        code: Option<TaskStopCode>,
        reason: &str,
    ) {
        self.task.desired_status = Some("STOPPED".to_owned());
        self.task.stopping_at.get_or_insert(now_seconds);
        if self.task.stop_code.is_none() {
            self.task.stop_code = code;
        }
        if self.task.stopped_reason.is_none() {
            self.task.stopped_reason = Some(reason.to_owned());
        }
    }

    /// Records the task STOPPED, with its containers.
    pub(crate) fn mark_stopped(&mut self, now_seconds: f64, now_ms: u64) {
        self.task.last_status = Some("STOPPED".to_owned());
        self.task.desired_status = Some("STOPPED".to_owned());
        self.task.stopping_at.get_or_insert(now_seconds);
        self.task.stopped_at.get_or_insert(now_seconds);
        self.task.execution_stopped_at.get_or_insert(now_seconds);
        self.stopped_at_ms.get_or_insert(now_ms);
        for container in self.task.containers.iter_mut().flatten() {
            container.last_status = Some("STOPPED".to_owned());
        }
        for attachment in self.task.attachments.iter_mut().flatten() {
            attachment.status = Some("DELETED".to_owned());
        }
    }
}

/// A state change as the agent reports it, checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskChange {
    pub status: Option<String>,
    pub reason: Option<String>,
    pub containers: Vec<ContainerStateChange>,
    pub pull_started_at: Option<f64>,
    pub pull_stopped_at: Option<f64>,
    pub execution_stopped_at: Option<f64>,
}

/// Applies an agent's report to a task, forward only. Returns whether
/// anything changed. Pure apart from the times passed in.
pub fn apply_change(
    record: &mut TaskRecord,
    change: &TaskChange,
    now_seconds: f64,
    now_ms: u64,
) -> bool {
    if record.last_status() == "STOPPED" {
        return false;
    }
    let before = record.task.clone();
    for reported in &change.containers {
        let name = reported.container_name.as_deref().unwrap_or_default();
        let Some(container) = record
            .task
            .containers
            .iter_mut()
            .flatten()
            .find(|c| c.name.as_deref() == Some(name))
        else {
            continue;
        };
        let current = container
            .last_status
            .as_deref()
            .and_then(container_rank)
            .unwrap_or(0);
        if let Some(status) = reported.status.as_deref() {
            let Some(rank) = container_rank(status) else {
                continue;
            };
            if rank < current {
                continue;
            }
            container.last_status = Some(status.to_owned());
        }
        if reported.exit_code.is_some() {
            container.exit_code = reported.exit_code;
        }
        if reported.reason.is_some() {
            container.reason = reported.reason.clone();
        }
        if reported.network_bindings.is_some() {
            container.network_bindings = reported.network_bindings.clone();
        }
        if reported.runtime_id.is_some() {
            container.runtime_id = reported.runtime_id.clone();
        }
        if reported.image_digest.is_some() {
            container.image_digest = reported.image_digest.clone();
        }
    }
    if record.task.pull_started_at.is_none() {
        record.task.pull_started_at = change.pull_started_at;
    }
    if record.task.pull_stopped_at.is_none() {
        record.task.pull_stopped_at = change.pull_stopped_at;
    }
    let current = task_rank(record.last_status()).unwrap_or(0);
    let next = change
        .status
        .as_deref()
        .and_then(task_rank)
        .filter(|rank| *rank > current);
    if let Some(rank) = next {
        let status = TASK_STATUSES[rank];
        record.task.last_status = Some(status.to_owned());
        if status == "RUNNING" {
            record.task.started_at.get_or_insert(now_seconds);
            for container in record.task.containers.iter_mut().flatten() {
                if container.last_status.as_deref() == Some("PENDING") {
                    container.last_status = Some("RUNNING".to_owned());
                }
            }
        }
        if rank >= task_rank("DEACTIVATING").unwrap_or(4) {
            let code = stop_code_for(change.reason.as_deref(), record.task.started_at.is_some());
            let reason = change
                .reason
                .clone()
                .unwrap_or_else(|| "Task stopped by its agent".to_owned());
            record.request_stop(now_seconds, Some(code), &reason);
        }
        if status == "STOPPED" {
            if let Some(at) = change.execution_stopped_at {
                record.task.execution_stopped_at.get_or_insert(at);
            }
            record.mark_stopped(now_seconds, now_ms);
        }
    }
    let changed = record.task != before;
    if changed {
        record.note_healthy(now_ms);
        record.touch();
    }
    changed
}

/// A placement's failures as RunTask answers them: ECS's `reason` for each
/// instance left out and, beyond ECS, a `detail` naming the cause ("missing
/// required attribute ...", "not enough memory: needs 512, has 128"), as
/// ExplainPlacement words it for `snapshot` as the placement left it.
fn placement_failures(
    snapshot: &flotilla_scheduler::Snapshot,
    request: &flotilla_scheduler::Request,
    failed: &[flotilla_scheduler::Failure],
) -> Vec<Failure> {
    if failed.is_empty() {
        return Vec::new();
    }
    let mut details: std::collections::HashMap<String, String> =
        flotilla_scheduler::explain(snapshot, request)
            .into_iter()
            .filter_map(|verdict| match verdict.outcome {
                flotilla_scheduler::Outcome::Excluded { detail, .. } => Some((verdict.arn, detail)),
                _ => None,
            })
            .collect();
    failed
        .iter()
        .map(|failure| Failure {
            arn: Some(failure.arn.clone()),
            reason: Some(failure.reason.as_str().to_owned()),
            detail: details.remove(&failure.arn),
        })
        .collect()
}

/// The stop code of a task its agent stopped, from the reason it gave.
pub fn stop_code_for(reason: Option<&str>, reached_running: bool) -> TaskStopCode {
    let reason = reason.unwrap_or_default();
    if reason.starts_with(ESSENTIAL_EXITED_REASON) {
        TaskStopCode::EssentialContainerExited
    } else if FAILED_TO_START_REASONS
        .iter()
        .any(|prefix| reason.starts_with(prefix))
    {
        TaskStopCode::TaskFailedToStart
    } else if reached_running {
        TaskStopCode::EssentialContainerExited
    } else {
        TaskStopCode::TaskFailedToStart
    }
}

/// Everything a RunTask or StartTask decided before looking at instances.
pub(crate) struct Launch {
    pub(crate) cluster: String,
    definition: TaskDefinition,
    overrides: TaskOverride,
    group: String,
    started_by: Option<String>,
    tags: Vec<Tag>,
    awsvpc: Option<AwsVpcConfiguration>,
    /// What placement is asked, less `count` and `seed`, which `launch` sets.
    request: flotilla_scheduler::Request,
    enable_execute_command: bool,
    /// The capacity provider strategy its tasks are split by, if it has one.
    capacity: Option<StrategyLaunch>,
}

/// What a launch answers: the tasks it created and the failures.
pub(crate) type Launched = (Vec<Task>, Vec<Failure>);

/// RunTask's launches waiting for their cluster's leader, by cluster.
pub(crate) type LaunchQueues =
    crate::combine::Combiner<(Launch, usize), Result<Launched, ApiError>>;

/// An instance record as placement read it (shared with the snapshot cache),
/// with the revision the commit is conditional on.
pub(crate) type SharedInstance = records::Versioned<std::sync::Arc<InstanceRecord>>;

/// Fresh ids for one task, drawn before the commit loop so that a retry
/// reuses them.
struct TaskIds {
    task_id: String,
    container_ids: Vec<String>,
    attachment_id: String,
    eni_id: String,
}

/// Which task definition revisions a launch may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Revisions {
    /// ACTIVE ones only: RunTask, StartTask, and a service request that
    /// names a revision its service does not already run.
    ActiveOnly,
    /// Any still stored, INACTIVE and DELETE_IN_PROGRESS included: a
    /// service keeps launching (scaling, replacing) the revision it runs
    /// after that revision is deregistered, as ECS lets it.
    AnyStored,
}

/// The common part of RunTask's and StartTask's requests.
pub(crate) struct LaunchRequest<'a> {
    pub(crate) cluster: Option<&'a str>,
    pub(crate) task_definition: &'a str,
    pub(crate) revisions: Revisions,
    pub(crate) launch_type: Option<LaunchType>,
    pub(crate) capacity_provider_strategy: &'a [CapacityProviderStrategyItem],
    pub(crate) overrides: Option<&'a TaskOverride>,
    pub(crate) started_by: Option<&'a str>,
    pub(crate) group: Option<&'a str>,
    /// The task's own tags (RunTask's and StartTask's `tags`).
    pub(crate) tags: &'a [Tag],
    pub(crate) propagate_tags: Option<PropagateTags>,
    pub(crate) enable_ecs_managed_tags: bool,
    /// The service the task belongs to, for SERVICE propagation and the
    /// managed `aws:ecs:serviceName` tag.
    pub(crate) service: Option<crate::tags::ServiceTags<'a>>,
    pub(crate) network_configuration: Option<&'a NetworkConfiguration>,
    pub(crate) placement_constraints: &'a [PlacementConstraint],
    pub(crate) placement_strategy: &'a [PlacementStrategy],
    pub(crate) enable_execute_command: Option<bool>,
    /// RunTask's `platformVersion`: Fargate's only, and only the one it has.
    pub(crate) platform_version: Option<&'a str>,
    /// A service deployment's launch: its capacity provider split counts
    /// the tasks `started_by` already runs, so that the deployment as a
    /// whole follows its strategy. RunTask splits each call's tasks alone.
    pub(crate) strategy_counts_started_by: bool,
}

impl Ecs {
    pub(crate) fn task_arn(&self, cluster: &str, task_id: &str) -> String {
        self.scope.arn("ecs", &format!("task/{cluster}/{task_id}"))
    }

    /// The id of the task a request names by ARN or id within `cluster`.
    pub(crate) fn task_id_in(&self, cluster: &str, given: &str) -> Option<String> {
        self.resource_id_in("task", cluster, given)
    }

    pub(crate) fn get_task(
        &self,
        cluster: &str,
        task_id: &str,
    ) -> Result<Option<records::Versioned<TaskRecord>>, ApiError> {
        records::get(self.store.as_ref(), &keys::task(cluster, task_id))
    }

    pub(crate) fn present_task(record: &TaskRecord, include_tags: bool) -> Task {
        let mut task = record.task.clone();
        if !include_tags {
            task.tags = None;
        }
        task
    }

    pub(crate) async fn run_task(
        &self,
        request: RunTaskRequest,
    ) -> Result<RunTaskResponse, ApiError> {
        let count = checked_count(request.count)?;
        let token = match request.client_token.as_deref() {
            Some(token) => {
                crate::run_tokens::check_token(token)?;
                let cluster = self.cluster_name(request.cluster.as_deref())?;
                let digest = crate::run_tokens::digest(&request);
                if let Some(answered) = self.repeated_run(&cluster, token, &digest)? {
                    return Ok(answered);
                }
                Some((cluster, token, digest))
            }
            None => None,
        };
        let launch = self.prepare_launch(LaunchRequest {
            cluster: request.cluster.as_deref(),
            task_definition: request.task_definition.as_deref().unwrap_or_default(),
            revisions: Revisions::ActiveOnly,
            launch_type: request.launch_type,
            capacity_provider_strategy: request
                .capacity_provider_strategy
                .as_deref()
                .unwrap_or_default(),
            overrides: request.overrides.as_ref(),
            started_by: request.started_by.as_deref(),
            group: request.group.as_deref(),
            tags: request.tags.as_deref().unwrap_or_default(),
            propagate_tags: request.propagate_tags,
            enable_ecs_managed_tags: request.enable_ecs_managed_tags.unwrap_or(false),
            service: None,
            network_configuration: request.network_configuration.as_ref(),
            placement_constraints: request.placement_constraints.as_deref().unwrap_or_default(),
            placement_strategy: request.placement_strategy.as_deref().unwrap_or_default(),
            enable_execute_command: request.enable_execute_command,
            platform_version: request.platform_version.as_deref(),
            strategy_counts_started_by: false,
        })?;
        let cluster = launch.cluster.clone();
        let (tasks, failures) = self
            .launches
            .submit(
                &cluster,
                (launch, count),
                self.store.limits().items_per_txn(OPS_PER_LAUNCH),
                |batch| self.run_launches(&cluster, batch),
            )
            .await
            .unwrap_or_else(|| Err(ApiError::server("RunTask was abandoned; try again")))?;
        let response = RunTaskResponse {
            tasks: Some(tasks),
            failures: Some(failures),
        };
        if let Some((cluster, token, digest)) = token {
            self.remember_run(&cluster, token, digest, &response)
                .await?;
        }
        Ok(response)
    }

    pub(crate) async fn start_task(
        &self,
        request: StartTaskRequest,
    ) -> Result<StartTaskResponse, ApiError> {
        let named = request.container_instances.clone().unwrap_or_default();
        if named.is_empty() || named.len() > START_TASK_INSTANCES_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "containerInstances must name 1 to {START_TASK_INSTANCES_MAX} container instances, got {}",
                named.len()
            )));
        }
        let launch = self.prepare_launch(LaunchRequest {
            cluster: request.cluster.as_deref(),
            task_definition: request.task_definition.as_deref().unwrap_or_default(),
            revisions: Revisions::ActiveOnly,
            // StartTask names its instances: no capacity provider strategy,
            // not even the cluster's default, chooses among them.
            launch_type: Some(LaunchType::Ec2),
            capacity_provider_strategy: &[],
            overrides: request.overrides.as_ref(),
            started_by: request.started_by.as_deref(),
            group: request.group.as_deref(),
            tags: request.tags.as_deref().unwrap_or_default(),
            propagate_tags: request.propagate_tags,
            enable_ecs_managed_tags: request.enable_ecs_managed_tags.unwrap_or(false),
            service: None,
            network_configuration: request.network_configuration.as_ref(),
            placement_constraints: &[],
            placement_strategy: &[],
            enable_execute_command: request.enable_execute_command,
            platform_version: None,
            strategy_counts_started_by: false,
        })?;
        // StartTask places on the instances it names, EC2 or external alike.
        let mut launch = launch;
        launch.request.launch_kind = None;
        let cluster = launch.cluster.clone();
        let (tasks, failures) = self
            .launch(&cluster, &[(&launch, Targeting::Named(named))])
            .await
            .pop()
            .unwrap_or_else(|| Err(ApiError::server("StartTask placed nothing")))?;
        Ok(StartTaskResponse {
            tasks: Some(tasks),
            failures: Some(failures),
        })
    }

    /// Checks a launch request against the cluster and the task definition.
    pub(crate) fn prepare_launch(&self, request: LaunchRequest<'_>) -> Result<Launch, ApiError> {
        let cluster_record = self.active_cluster(request.cluster)?.value;
        let cluster = cluster_record.cluster_name.clone().unwrap_or_default();
        let capacity = self.capacity_of_launch(&cluster_record, &request)?;
        // A strategy's providers are groups of EC2 container instances, or
        // Fargate's two (never a mix: the strategy's check refuses one).
        let launch_type = match &capacity {
            Some(capacity) if capacity.shares.iter().all(|s| is_fargate(&s.provider)) => {
                LaunchType::Fargate
            }
            Some(_) => LaunchType::Ec2,
            None => request.launch_type.unwrap_or(LaunchType::Ec2),
        };
        check_platform_version(launch_type, request.platform_version)?;
        match launch_type {
            LaunchType::Ec2 | LaunchType::External => {}
            LaunchType::Fargate => check_fargate_placement(&request)?,
            LaunchType::ManagedInstances => {
                return Err(ApiError::client(
                    "Launch type MANAGED_INSTANCES is not available on this Flotilla server: use EC2 or EXTERNAL",
                ))
            }
        }
        let record = self.launchable_definition(request.task_definition, request.revisions)?;
        let definition = record.definition;
        check_volumes_mountable(&definition)?;
        let compatible = definition
            .compatibilities
            .iter()
            .flatten()
            .any(|c| match launch_type {
                LaunchType::External => *c == Compatibility::External,
                LaunchType::Fargate => *c == Compatibility::Fargate,
                _ => *c == Compatibility::Ec2,
            });
        if !compatible {
            // ECS answers InvalidParameterException here, unlike most of
            // what it finds wrong with a task definition.
            return Err(ApiError::invalid_parameter(format!(
                "Task definition does not support launch_type {}.",
                launch_type.as_str()
            )));
        }
        let overrides = check_overrides(&definition, request.overrides)?;
        if let Some(started_by) = request.started_by {
            let valid = started_by.len() <= STARTED_BY_LENGTH_MAX
                && started_by
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'));
            if !valid {
                return Err(ApiError::invalid_parameter(format!(
                    "startedBy may hold up to {STARTED_BY_LENGTH_MAX} letters, numbers, hyphens, forward slashes and underscores"
                )));
            }
        }
        let family = definition.family.clone().unwrap_or_default();
        let group = request
            .group
            .map_or_else(|| format!("family:{family}"), str::to_owned);
        if group.is_empty() || group.len() > GROUP_LENGTH_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "group must be 1 to {GROUP_LENGTH_MAX} characters"
            )));
        }
        let tags = crate::tags::task_tags(&crate::tags::TaskTagSources {
            cluster: &cluster,
            own: request.tags,
            propagate: request.propagate_tags,
            definition: &record.tags,
            service: request.service,
            managed: request.enable_ecs_managed_tags,
        })?;
        let network_mode = definition.network_mode.unwrap_or(NetworkMode::Bridge);
        let awsvpc = match (network_mode, request.network_configuration) {
            (NetworkMode::Awsvpc, configuration) => {
                let given = configuration.and_then(|c| c.awsvpc_configuration.clone()).unwrap_or_default();
                check_awsvpc(&given)?;
                Some(given)
            }
            (_, Some(configuration)) if configuration.awsvpc_configuration.is_some() => {
                return Err(ApiError::invalid_parameter(
                    "Network Configuration is not valid for the given networkMode of this task definition.",
                ))
            }
            _ => None,
        };
        let mut placement_request = demand_for(&definition, &overrides);
        placement_request.launch_kind = Some(match launch_type {
            LaunchType::External => flotilla_scheduler::LaunchKind::External,
            LaunchType::Fargate => flotilla_scheduler::LaunchKind::Fargate,
            _ => flotilla_scheduler::LaunchKind::Ec2,
        });
        // A task of launch type FARGATE runs on the FARGATE provider's
        // capacity; a strategy's split names each share's provider instead.
        if launch_type == LaunchType::Fargate {
            placement_request.capacity_provider = Some(FARGATE_PROVIDERS[0].to_owned());
        }
        placement_request.strategies = placement::strategies(request.placement_strategy)?;
        placement_request.constraints = placement::constraints(
            request.placement_constraints,
            definition
                .placement_constraints
                .as_deref()
                .unwrap_or_default(),
        )?;
        placement_request.group = group.clone();
        Ok(Launch {
            cluster,
            definition,
            overrides,
            group,
            started_by: request.started_by.map(str::to_owned),
            tags,
            awsvpc,
            request: placement_request,
            enable_execute_command: request.enable_execute_command.unwrap_or(false),
            capacity,
        })
    }

    /// The capacity provider strategy a launch follows: the request's, or
    /// with neither a launch type nor a strategy the cluster's default
    /// strategy, if it has one; checked as ECS checks it.
    fn capacity_of_launch(
        &self,
        cluster: &Cluster,
        request: &LaunchRequest<'_>,
    ) -> Result<Option<StrategyLaunch>, ApiError> {
        let given = request.capacity_provider_strategy;
        if request.launch_type.is_some() && !given.is_empty() {
            return Err(ApiError::invalid_parameter(
                "Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.",
            ));
        }
        let default = cluster
            .default_capacity_provider_strategy
            .as_deref()
            .unwrap_or_default();
        let (items, origin) = match (given.is_empty(), request.launch_type) {
            (false, _) => (given, Origin::Request),
            (true, None) if !default.is_empty() => (default, Origin::ClusterDefault),
            _ => return Ok(None),
        };
        let counted = request
            .started_by
            .filter(|_| request.strategy_counts_started_by);
        let launch = self.launch_strategy(cluster, items, origin, |shares| match counted {
            Some(started_by) => self.live_tasks_by_provider(cluster, started_by, shares),
            None => Ok(Vec::new()),
        })?;
        Ok(Some(launch))
    }

    /// How many live tasks `started_by` runs on each provider of `shares`.
    fn live_tasks_by_provider(
        &self,
        cluster: &Cluster,
        started_by: &str,
        shares: &[crate::strategy::Share],
    ) -> Result<Vec<u32>, ApiError> {
        let name = cluster.cluster_name.as_deref().unwrap_or_default();
        let mut placed = vec![0u32; shares.len()];
        for found in scan::<TaskRecord>(self.store.as_ref(), &keys::tasks_of(name))? {
            let task = &found.value.task;
            if task.started_by.as_deref() != Some(started_by)
                || found.value.desired_status() != "RUNNING"
            {
                continue;
            }
            let provider = task.capacity_provider_name.as_deref();
            if let Some(index) = shares
                .iter()
                .position(|s| Some(s.provider.as_str()) == provider)
            {
                placed[index] += 1;
            }
        }
        Ok(placed)
    }

    /// The revision a launch names, when `revisions` lets it run it, or
    /// ECS's ClientException.
    fn launchable_definition(
        &self,
        given: &str,
        revisions: Revisions,
    ) -> Result<TaskDefinitionRecord, ApiError> {
        let reference = match self.task_definition_reference(given) {
            Ok(reference) => reference,
            Err(ReferenceError::Malformed | ReferenceError::Elsewhere) => {
                return Err(ApiError::client("TaskDefinition not found."))
            }
        };
        let record = self
            .find_task_definition(&reference)?
            .ok_or_else(|| ApiError::client("TaskDefinition not found."))?;
        let active = record.definition.status == Some(TaskDefinitionStatus::Active);
        if !active && revisions == Revisions::ActiveOnly {
            return Err(ApiError::client(TASK_DEFINITION_INACTIVE));
        }
        Ok(record)
    }

    /// RunTask's queued launches of one cluster, placed and committed together.
    async fn run_launches(
        &self,
        cluster: &str,
        batch: Vec<(Launch, usize)>,
    ) -> Vec<Result<Launched, ApiError>> {
        let launches: Vec<(&Launch, Targeting)> = batch
            .iter()
            .map(|(launch, count)| (launch, Targeting::FirstFit(*count)))
            .collect();
        self.launch(cluster, &launches).await
    }

    /// Places and creates the tasks of launches into `cluster` in one
    /// transaction with the instances they take resources from: each launch
    /// in order, against what the ones before it took. One answer per launch.
    pub(crate) async fn launch(
        &self,
        cluster: &str,
        launches: &[(&Launch, Targeting)],
    ) -> Vec<Result<Launched, ApiError>> {
        let ids: Vec<Vec<TaskIds>> = launches
            .iter()
            .map(|(launch, targeting)| self.task_ids(launch, targeting))
            .collect();
        let now_seconds = self.now_seconds();
        let (kept, turn) = self.live_placement.take(&self.store, cluster);
        // The kept state serves the first attempt only: a conflict means it
        // was stale, and the retry reads afresh.
        let kept = std::sync::Mutex::new(kept);
        let result = records::mutate_at(self.store.as_ref(), || loop {
            let kept = kept.lock().ok().and_then(|mut kept| kept.take());
            let from_kept = kept.is_some();
            let (mut instances, mut snapshot, keepable) = match kept {
                Some(placed) => (placed.instances, placed.snapshot, true),
                None => self.placement_view(cluster)?,
            };
            let mut txn = Txn::new();
            let mut changed: std::collections::BTreeMap<usize, InstanceRecord> = Default::default();
            let answers: Vec<Result<Launched, ApiError>> = launches
                .iter()
                .zip(&ids)
                .map(|((launch, targeting), ids)| {
                    let placements =
                        self.place_launch(launch, targeting, ids, &instances, &mut snapshot)?;
                    self.create_tasks(
                        launch,
                        placements,
                        ids,
                        now_seconds,
                        &instances,
                        &mut changed,
                        &mut txn,
                    )
                })
                .collect();
            let clean = answers
                .iter()
                .all(|answer| matches!(answer, Ok((_, failures)) if failures.is_empty()));
            if from_kept && !clean {
                // A failure decided on kept state may come of a write the
                // watch has not delivered yet (resources just returned, an
                // instance just registered): decide again on a fresh read.
                continue;
            }
            let keepable = keepable && answers.iter().all(Result::is_ok);
            if changed.is_empty() {
                let placed = keepable.then(|| Placed::new(instances, snapshot));
                return Ok(Attempt::Done((answers, placed)));
            }
            // Only the instances written are checked: that is what keeps
            // concurrent launches from overcommitting one. Strategies are best
            // effort, as in ECS, so a launch elsewhere in the cluster since the
            // snapshot need not send this one back to re-plan; checking every
            // instance read made concurrent launches in one cluster retry
            // each other to exhaustion.
            for (index, mut record) in changed {
                let found = &mut instances[index];
                let key = keys::instance(cluster, &found.value.instance_id);
                record.touch();
                txn = txn
                    .expect(&key, found.revision)
                    .put(&key, records::encode(&record));
                // What the store holds once this commits, at the revision
                // the commit gets (set below).
                *found = records::Versioned {
                    value: std::sync::Arc::new(record),
                    revision: 0,
                };
            }
            let placed = keepable.then(|| Placed::new(instances, snapshot));
            break Ok(Attempt::Commit(txn, (answers, placed)));
        })
        .await;
        match result {
            Ok(((answers, placed), revision)) => {
                if let Some(placed) = placed {
                    self.live_placement
                        .put(cluster, placed.committed_at(revision), turn);
                }
                // A later launch of the same deployment splits against these too.
                for ((launch, _), answer) in launches.iter().zip(&answers) {
                    if let (Some(capacity), Ok((tasks, _))) = (&launch.capacity, answer) {
                        for provider in tasks
                            .iter()
                            .filter_map(|t| t.capacity_provider_name.as_deref())
                        {
                            capacity.record(provider);
                        }
                    }
                }
                answers
            }
            Err(error) => launches.iter().map(|_| Err(error.clone())).collect(),
        }
    }

    /// Fresh ids for each task a launch may create, drawn before the commit
    /// loop so that a retry reuses them.
    fn task_ids(&self, launch: &Launch, targeting: &Targeting) -> Vec<TaskIds> {
        let count = match targeting {
            Targeting::FirstFit(count) => *count,
            Targeting::Named(named) => named.len(),
        };
        let containers = launch
            .definition
            .container_definitions
            .as_deref()
            .unwrap_or_default()
            .len();
        (0..count)
            .map(|_| TaskIds {
                task_id: self.fresh_hex_id(),
                container_ids: (0..containers).map(|_| self.ids.uuid()).collect(),
                attachment_id: self.ids.uuid(),
                eni_id: self.fresh_hex_id(),
            })
            .collect()
    }

    /// Where a launch's tasks go (indexes into `instances`, in order) and
    /// the failures, applied to `snapshot` for the launches after it.
    fn place_launch(
        &self,
        launch: &Launch,
        targeting: &Targeting,
        ids: &[TaskIds],
        instances: &[SharedInstance],
        snapshot: &mut flotilla_scheduler::Snapshot,
    ) -> Result<(Vec<Placement>, Vec<Failure>), ApiError> {
        let cluster = &launch.cluster;
        // The random strategy draws from the request's own fresh ids, so a
        // simulation driven by a seeded id source places the same way again.
        let seed = ids
            .first()
            .map_or(0, |first| placement_seed(&first.task_id));
        let mut failures = Vec::new();
        // The instance (index into `instances`) of each placed task, in order.
        let mut placements: Vec<Placement> = Vec::new();
        let fargate = launch.request.launch_kind == Some(flotilla_scheduler::LaunchKind::Fargate);
        match targeting {
            Targeting::FirstFit(count) => {
                let any = snapshot.instances().iter().any(|instance| {
                    instance.status == flotilla_scheduler::InstanceStatus::Active
                        && launch
                            .request
                            .launch_kind
                            .is_none_or(|kind| instance.launch_kind == kind)
                });
                if !any && !fargate {
                    return Err(ApiError::invalid_parameter(
                        "No Container Instances were found in your cluster.",
                    ));
                }
                for request in placement_requests(launch, *count, seed)? {
                    let plan = flotilla_scheduler::place(snapshot, &request);
                    snapshot.apply(&plan);
                    if fargate {
                        // The pool's hosts are not the user's to see: a task
                        // that finds no room fails as Fargate's do.
                        failures
                            .extend((0..plan.unplaced).map(|_| fargate_capacity_failure(cluster)));
                        placements.extend(plan.placements.iter().map(|index| Placement {
                            instance: *index as usize,
                            provider: request.capacity_provider.clone(),
                        }));
                        continue;
                    }
                    failures.extend(placement_failures(snapshot, &request, &plan.failures));
                    // A share left unplaced with no instance to blame: its
                    // provider has no instance that could take a task (none
                    // at all, or only DRAINING ones), which ECS would not say.
                    let unexplained = plan.unplaced > 0 && plan.failures.is_empty();
                    if let Some(provider) =
                        request.capacity_provider.as_deref().filter(|_| unexplained)
                    {
                        failures.push(Failure {
                            arn: Some(self.capacity_provider_arn(provider)),
                            reason: Some(no_instances_in(provider)),
                            detail: None,
                        });
                    }
                    placements.extend(plan.placements.iter().map(|index| Placement {
                        instance: *index as usize,
                        provider: request.capacity_provider.clone(),
                    }));
                }
            }
            Targeting::Named(named) => {
                let request = flotilla_scheduler::Request {
                    count: 1,
                    seed,
                    ..launch.request.clone()
                };
                for given in named {
                    let index = self.instance_id_in(cluster, given).and_then(|id| {
                        instances
                            .iter()
                            .position(|found| found.value.instance_id == id)
                    });
                    let Some(index) = index else {
                        failures.push(Failure {
                            arn: Some(given.clone()),
                            reason: Some("MISSING".to_owned()),
                            detail: None,
                        });
                        continue;
                    };
                    // StartTask names the instance: place on it alone,
                    // against what earlier tasks of this request took.
                    let alone = flotilla_scheduler::Snapshot::new(vec![snapshot.instances()
                        [index]
                        .clone()]);
                    let mut plan = flotilla_scheduler::place(&alone, &request);
                    if plan.placements.is_empty() {
                        // `explain` also names the reasons RunTask does not
                        // report (DRAINING), which StartTask does.
                        let excluded = flotilla_scheduler::explain(&alone, &request)
                            .into_iter()
                            .find_map(|verdict| match verdict.outcome {
                                flotilla_scheduler::Outcome::Excluded { reason, detail } => {
                                    Some((reason.as_str().to_owned(), detail))
                                }
                                _ => None,
                            });
                        let (reason, detail) = excluded.unzip();
                        failures.push(Failure {
                            arn: Some(instances[index].value.arn()),
                            reason,
                            detail,
                        });
                        continue;
                    }
                    for delta in &mut plan.deltas {
                        delta.instance = index as flotilla_scheduler::InstanceIndex;
                    }
                    snapshot.apply(&plan);
                    placements.push(Placement {
                        instance: index,
                        provider: None,
                    });
                }
            }
        }
        Ok((placements, failures))
    }

    /// Adds a launch's task records to `txn` and takes their resources from
    /// `changed` (instance records as this transaction leaves them). Changes
    /// nothing when it fails.
    #[allow(clippy::too_many_arguments)]
    fn create_tasks(
        &self,
        launch: &Launch,
        (placements, failures): (Vec<Placement>, Vec<Failure>),
        ids: &[TaskIds],
        now_seconds: f64,
        instances: &[SharedInstance],
        changed: &mut std::collections::BTreeMap<usize, InstanceRecord>,
        txn: &mut Txn,
    ) -> Result<Launched, ApiError> {
        let mut taken: std::collections::BTreeMap<usize, InstanceRecord> = Default::default();
        let mut puts = Vec::with_capacity(placements.len());
        let mut tasks = Vec::new();
        for (placement, ids) in placements.iter().zip(ids) {
            let index = &placement.instance;
            let instance = &instances[*index].value;
            let record = taken.entry(*index).or_insert_with(|| {
                changed
                    .get(index)
                    .cloned()
                    .unwrap_or_else(|| InstanceRecord::clone(instance))
            });
            let reservation = placement::reserve(
                &record.remaining,
                &record.task_addresses_in_use,
                &launch.request,
            )
            .ok_or_else(|| {
                ApiError::server(
                    "placement chose an instance without the GPUs or task addresses it needs",
                )
            })?;
            record
                .remaining
                .take(&mut record.task_addresses_in_use, &reservation);
            record.count_task_in(Some(&launch.group));
            let task = self.new_task(
                launch,
                instance,
                reservation,
                ids,
                placement.provider.as_deref(),
                now_seconds,
            );
            puts.push((
                keys::task(&launch.cluster, &ids.task_id),
                records::encode(&task),
            ));
            tasks.push(Self::present_task(&task, true));
        }
        changed.extend(taken);
        for (key, value) in puts {
            *txn = std::mem::take(txn).expect(&key, 0).put(&key, value);
        }
        Ok((tasks, failures))
    }

    /// The scheduler's view of a cluster, as RunTask, StartTask and
    /// ExplainPlacement all place against it: every instance record (with
    /// the revision it was read at, for the commit's conditions) and the
    /// snapshot built from them and the groups of the tasks holding
    /// resources on each.
    pub(crate) fn placement_snapshot(
        &self,
        cluster: &str,
    ) -> Result<(Vec<SharedInstance>, flotilla_scheduler::Snapshot), ApiError> {
        self.placement_view(cluster)
            .map(|(instances, snapshot, _)| (instances, snapshot))
    }

    /// [`Ecs::placement_snapshot`], and whether the records alone made it
    /// (they count their task groups), so that it may be kept between
    /// launches: what is kept is checked against instance writes only.
    fn placement_view(
        &self,
        cluster: &str,
    ) -> Result<(Vec<SharedInstance>, flotilla_scheduler::Snapshot, bool), ApiError> {
        let prefix = keys::instances_of(cluster);
        let listed = self.instance_cache.read(cluster, |decode| {
            crate::instances::scan_with(self.store.as_ref(), &prefix, decode)
        })?;
        // Instance records count their tasks' groups; only records written
        // before they did send placement to the tasks themselves.
        let counted = listed.iter().all(|found| found.value.instance.is_some());
        let mut groups = if counted {
            Default::default()
        } else {
            let live_tasks = scan::<TaskRecord>(self.store.as_ref(), &keys::tasks_of(cluster))?;
            placement::groups_by_instance(
                live_tasks
                    .iter()
                    .filter(|task| !task.value.released)
                    .map(|task| {
                        (
                            task.value.instance_id.as_str(),
                            task.value.task.group.as_deref(),
                        )
                    }),
            )
        };
        let mut instances = Vec::with_capacity(listed.len());
        let mut scheduler_instances = Vec::with_capacity(listed.len());
        for found in listed {
            let record = found.value.record;
            scheduler_instances.push(match found.value.instance {
                Some(instance) if counted => instance,
                _ => {
                    let task_groups = groups.remove(&record.instance_id).unwrap_or_default();
                    placement::scheduler_instance(&record, task_groups)
                }
            });
            instances.push(records::Versioned {
                value: record,
                revision: found.revision,
            });
        }
        let snapshot = flotilla_scheduler::Snapshot::new(scheduler_instances);
        Ok((instances, snapshot, counted))
    }

    fn new_task(
        &self,
        launch: &Launch,
        instance: &InstanceRecord,
        reservation: Reservation,
        ids: &TaskIds,
        provider: Option<&str>,
        now_seconds: f64,
    ) -> TaskRecord {
        let fargate = instance.is_fargate();
        let cluster = &launch.cluster;
        let task_arn = self.task_arn(cluster, &ids.task_id);
        let network_interface = reservation.address.map(|octet| {
            let prefix = instance.subnet_prefix();
            TaskNetworkInterface {
                attachment_id: ids.attachment_id.clone(),
                private_ipv4_address: format!("{prefix}.{octet}"),
                subnet_cidr: instance.task_subnet_cidr.clone(),
                gateway_ipv4_address: format!("{prefix}.1"),
                mac_address: mac_address(instance.task_subnet_index, octet),
            }
        });
        let attachments = match (&network_interface, &launch.awsvpc) {
            (Some(eni), Some(awsvpc)) => {
                let subnet_id = awsvpc
                    .subnets
                    .iter()
                    .flatten()
                    .next()
                    .cloned()
                    .unwrap_or_else(|| format!("subnet-{:017x}", instance.task_subnet_index));
                let detail = |name: &str, value: String| KeyValuePair {
                    name: Some(name.to_owned()),
                    value: Some(value),
                };
                let eni_hex = &ids.eni_id[ids.eni_id.len().saturating_sub(17)..];
                vec![Attachment {
                    id: Some(eni.attachment_id.clone()),
                    r#type: Some("ElasticNetworkInterface".to_owned()),
                    status: Some("ATTACHED".to_owned()),
                    details: Some(vec![
                        detail("subnetId", subnet_id),
                        detail("networkInterfaceId", format!("eni-{eni_hex}")),
                        detail("macAddress", eni.mac_address.clone()),
                        detail(
                            "privateDnsName",
                            self.private_dns_name(&eni.private_ipv4_address),
                        ),
                        detail("privateIPv4Address", eni.private_ipv4_address.clone()),
                    ]),
                }]
            }
            _ => Vec::new(),
        };
        let container_overrides = launch
            .overrides
            .container_overrides
            .as_deref()
            .unwrap_or_default();
        let containers = launch
            .definition
            .container_definitions
            .iter()
            .flatten()
            .zip(&ids.container_ids)
            .map(|(definition, container_id)| {
                let name = definition.name.clone().unwrap_or_default();
                let wanted = container_overrides
                    .iter()
                    .find(|o| o.name.as_deref() == Some(name.as_str()));
                let cpu = wanted.and_then(|o| o.cpu).or(definition.cpu).unwrap_or(0);
                let memory = wanted.and_then(|o| o.memory).or(definition.memory);
                let memory_reservation = wanted
                    .and_then(|o| o.memory_reservation)
                    .or(definition.memory_reservation);
                Container {
                    container_arn: Some(self.scope.arn(
                        "ecs",
                        &format!("container/{cluster}/{}/{container_id}", ids.task_id),
                    )),
                    task_arn: Some(task_arn.clone()),
                    name: Some(name),
                    image: definition.image.clone(),
                    last_status: Some("PENDING".to_owned()),
                    network_bindings: Some(Vec::new()),
                    network_interfaces: Some(
                        network_interface
                            .iter()
                            .map(|eni| NetworkInterface {
                                attachment_id: Some(eni.attachment_id.clone()),
                                private_ipv4_address: Some(eni.private_ipv4_address.clone()),
                                ipv6_address: None,
                            })
                            .collect(),
                    ),
                    health_status: Some(HealthStatus::Unknown),
                    cpu: Some(cpu.to_string()),
                    memory: memory.map(|m| m.to_string()),
                    memory_reservation: memory_reservation.map(|m| m.to_string()),
                    gpu_ids: None,
                    ..Default::default()
                }
            })
            .collect();
        let task = Task {
            task_arn: Some(task_arn.clone()),
            cluster_arn: Some(self.cluster_arn(cluster)),
            task_definition_arn: launch.definition.task_definition_arn.clone(),
            // A Fargate task runs on no container instance the user sees.
            container_instance_arn: (!fargate).then(|| instance.arn()),
            containers: Some(containers),
            overrides: Some(launch.overrides.clone()),
            last_status: Some("PROVISIONING".to_owned()),
            desired_status: Some("RUNNING".to_owned()),
            created_at: Some(now_seconds),
            version: Some(1),
            cpu: Some(launch.request.needs.cpu_units.to_string()),
            memory: Some(launch.request.needs.memory_mib.to_string()),
            launch_type: Some(if fargate {
                LaunchType::Fargate
            } else if instance.is_external() {
                LaunchType::External
            } else {
                LaunchType::Ec2
            }),
            // Placement kept the task to its provider's instances; a Fargate
            // host serves both of Fargate's, so the share's names it.
            capacity_provider_name: if fargate {
                provider.map(str::to_owned)
            } else {
                launch
                    .capacity
                    .as_ref()
                    .and(instance.instance.capacity_provider_name.clone())
            },
            platform_version: fargate.then(|| FARGATE_PLATFORM_VERSION.to_owned()),
            platform_family: fargate.then(|| "Linux".to_owned()),
            ephemeral_storage: fargate.then(|| EphemeralStorage {
                size_in_gi_b: Some(
                    launch
                        .definition
                        .ephemeral_storage
                        .as_ref()
                        .and_then(|e| e.size_in_gi_b)
                        .unwrap_or(FARGATE_EPHEMERAL_STORAGE_GIB_DEFAULT),
                ),
            }),
            group: Some(launch.group.clone()),
            started_by: launch.started_by.clone(),
            tags: Some(launch.tags.clone()),
            attachments: Some(attachments),
            availability_zone: instance.attribute("ecs.availability-zone"),
            connectivity: Some(Connectivity::Connected),
            connectivity_at: Some(now_seconds),
            health_status: Some(HealthStatus::Unknown),
            enable_execute_command: Some(launch.enable_execute_command),
            attributes: Some(task_attributes(instance)),
            ..Default::default()
        };
        TaskRecord {
            task,
            cluster: cluster.clone(),
            task_id: ids.task_id.clone(),
            instance_id: instance.instance_id.clone(),
            definition: launch.definition.clone(),
            reservation,
            released: false,
            network_interface,
            stopped_at_ms: None,
            healthy_at_ms: None,
            targets: Vec::new(),
            deactivating_until_ms: None,
        }
    }

    fn private_dns_name(&self, address: &str) -> String {
        let host = format!("ip-{}", address.replace('.', "-"));
        if self.scope.region == "us-east-1" {
            format!("{host}.ec2.internal")
        } else {
            format!("{host}.{}.compute.internal", self.scope.region)
        }
    }

    pub(crate) async fn stop_task(
        &self,
        request: StopTaskRequest,
    ) -> Result<StopTaskResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let reason = request
            .reason
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| USER_STOP_REASON.to_owned());
        if reason.chars().count() > STOP_REASON_LENGTH_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "reason is longer than {STOP_REASON_LENGTH_MAX} characters"
            )));
        }
        let given = request.task.clone().unwrap_or_default();
        let task_id = self
            .task_id_in(&cluster, &given)
            .ok_or_else(|| ApiError::invalid_parameter(TASK_NOT_FOUND))?;
        let now_seconds = self.now_seconds();
        let now_ms = self.clock.now_ms();
        let record = self
            .change_task(&cluster, &task_id, |record, instance| {
                if record.desired_status() == "STOPPED" {
                    return false;
                }
                record.request_stop(now_seconds, Some(TaskStopCode::UserInitiated), &reason);
                // A task whose instance is gone has no agent to report it
                // stopped: it stops here.
                if instance.is_none_or(|i| !i.is_live()) {
                    record.mark_stopped(now_seconds, now_ms);
                }
                record.touch();
                true
            })
            .await?
            .ok_or_else(|| ApiError::invalid_parameter(TASK_NOT_FOUND))?;
        Ok(StopTaskResponse {
            task: Some(Self::present_task(&record, true)),
        })
    }

    /// Tells one task of a force-deregistered instance to stop; with no
    /// agent connected to do it, records it stopped at once.
    pub(crate) async fn stop_for_deregistration(
        &self,
        cluster: &str,
        task_id: &str,
        agent_connected: bool,
    ) -> Result<(), ApiError> {
        let now_seconds = self.now_seconds();
        let now_ms = self.clock.now_ms();
        self.change_task(cluster, task_id, |record, _| {
            if record.last_status() == "STOPPED" {
                return false;
            }
            record.request_stop(now_seconds, None, DEREGISTERED_STOP_REASON);
            if !agent_connected {
                record.mark_stopped(now_seconds, now_ms);
            }
            record.touch();
            true
        })
        .await?;
        Ok(())
    }

    /// Read-modify-write of one task; when the change leaves it STOPPED,
    /// its reservation goes back to its instance in the same transaction.
    /// `change` returns whether it changed anything. `None` when the task
    /// does not exist.
    pub(crate) async fn change_task(
        &self,
        cluster: &str,
        task_id: &str,
        change: impl Fn(&mut TaskRecord, Option<&InstanceRecord>) -> bool,
    ) -> Result<Option<TaskRecord>, ApiError> {
        let key = keys::task(cluster, task_id);
        records::mutate(self.store.as_ref(), || {
            let Some(found) = self.get_task(cluster, task_id)? else {
                return Ok(Attempt::Done(None));
            };
            let mut record = found.value;
            let instance = self.get_instance(cluster, &record.instance_id)?;
            if !change(&mut record, instance.as_ref().map(|i| &i.value)) {
                return Ok(Attempt::Done(Some(record)));
            }
            let mut txn = Txn::new().expect(&key, found.revision);
            if record.last_status() == "STOPPED" && !record.released {
                record.released = true;
                if let Some(instance) = instance.filter(|i| i.value.is_live()) {
                    let mut updated = instance.value;
                    updated
                        .remaining
                        .give_back(&mut updated.task_addresses_in_use, &record.reservation);
                    updated.uncount_task_in(record.task.group.as_deref());
                    updated.touch();
                    let instance_key = keys::instance(cluster, &updated.instance_id);
                    txn = txn
                        .expect(&instance_key, instance.revision)
                        .put(&instance_key, records::encode(&updated));
                }
            }
            let txn = txn.put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, Some(record)))
        })
        .await
    }

    pub(crate) fn describe_tasks(
        &self,
        request: DescribeTasksRequest,
    ) -> Result<DescribeTasksResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let wanted = request.tasks.clone().unwrap_or_default();
        if wanted.is_empty() {
            return Err(ApiError::invalid_parameter("Tasks cannot be empty."));
        }
        if wanted.len() > DESCRIBE_TASKS_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "tasks must name 1 to {DESCRIBE_TASKS_MAX} tasks, got {}",
                wanted.len()
            )));
        }
        let include_tags = request
            .include
            .iter()
            .flatten()
            .any(|f| *f == TaskField::Tags);
        let mut tasks = Vec::new();
        let mut failures = Vec::new();
        for given in &wanted {
            let id = self.task_id_in(&cluster, given);
            let found = match &id {
                Some(id) => self.get_task(&cluster, id)?,
                None => None,
            };
            match found {
                Some(found) => tasks.push(Self::present_task(&found.value, include_tags)),
                None => failures.push(Failure {
                    arn: Some(match id {
                        Some(id) if !given.starts_with("arn:") => self.task_arn(&cluster, &id),
                        _ => given.clone(),
                    }),
                    reason: Some("MISSING".to_owned()),
                    detail: None,
                }),
            }
        }
        Ok(DescribeTasksResponse {
            tasks: Some(tasks),
            failures: Some(failures),
        })
    }

    pub(crate) fn list_tasks(
        &self,
        request: ListTasksRequest,
    ) -> Result<ListTasksResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let limit = page::max_results(request.max_results, LIST_RESULTS_MAX, LIST_RESULTS_MAX)?;
        let instance_id = match request
            .container_instance
            .as_deref()
            .filter(|i| !i.is_empty())
        {
            Some(given) => Some(self.instance_id_in(&cluster, given).ok_or_else(|| {
                ApiError::invalid_parameter(format!(
                    "Invalid containerInstance {given:?}: not an instance of cluster {cluster}"
                ))
            })?),
            None => None,
        };
        let desired = request
            .desired_status
            .unwrap_or(DesiredStatus::Running)
            .as_str();
        let family = request.family.as_deref().filter(|f| !f.is_empty());
        let service_group = request
            .service_name
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| format!("service:{s}"));
        let listing = page::list(
            self.store.as_ref(),
            &keys::tasks_of(&cluster),
            request.next_token.as_deref(),
            limit,
            |entry| {
                let record: TaskRecord = records::decode(entry)?;
                let task = &record.task;
                let keep = record.desired_status() == desired
                    && instance_id
                        .as_ref()
                        .is_none_or(|id| *id == record.instance_id)
                    && family.is_none_or(|f| record.definition.family.as_deref() == Some(f))
                    && request
                        .started_by
                        .as_deref()
                        .is_none_or(|s| task.started_by.as_deref() == Some(s))
                    && service_group
                        .as_ref()
                        .is_none_or(|g| task.group.as_ref() == Some(g))
                    && request
                        .launch_type
                        .is_none_or(|l| task.launch_type == Some(l))
                    // Flotilla runs no daemons: no task belongs to one.
                    && request.daemon_name.as_deref().is_none_or(str::is_empty);
                Ok(keep.then(|| record.arn()))
            },
        )?;
        Ok(ListTasksResponse {
            task_arns: Some(listing.items),
            next_token: listing.next_token,
        })
    }

    pub(crate) async fn submit_task_state_change(
        &self,
        request: SubmitTaskStateChangeRequest,
    ) -> Result<SubmitTaskStateChangeResponse, ApiError> {
        let cluster = self.cluster_name(request.cluster.as_deref())?;
        let given = request.task.clone().unwrap_or_default();
        let task_id = self
            .task_id_in(&cluster, &given)
            .ok_or_else(|| ApiError::invalid_parameter(TASK_NOT_FOUND))?;
        if let Some(status) = request.status.as_deref() {
            if task_rank(status).is_none() || status == "PROVISIONING" {
                return Err(ApiError::invalid_parameter(format!(
                    "Invalid task status {status:?}: must be one of {}",
                    TASK_STATUSES[1..].join(", ")
                )));
            }
        }
        let containers = request.containers.clone().unwrap_or_default();
        let change = TaskChange {
            status: request.status.clone(),
            reason: request.reason.clone(),
            containers,
            pull_started_at: request.pull_started_at,
            pull_stopped_at: request.pull_stopped_at,
            execution_stopped_at: request.execution_stopped_at,
        };
        self.submit_change(&cluster, &task_id, change).await?;
        Ok(SubmitTaskStateChangeResponse {
            acknowledgment: Some("ACK".to_owned()),
        })
    }

    pub(crate) async fn submit_container_state_change(
        &self,
        request: SubmitContainerStateChangeRequest,
    ) -> Result<SubmitContainerStateChangeResponse, ApiError> {
        let cluster = self.cluster_name(request.cluster.as_deref())?;
        let given = request.task.clone().unwrap_or_default();
        let task_id = self
            .task_id_in(&cluster, &given)
            .ok_or_else(|| ApiError::invalid_parameter(TASK_NOT_FOUND))?;
        let change = TaskChange {
            containers: vec![ContainerStateChange {
                container_name: request.container_name.clone(),
                status: request.status.clone(),
                exit_code: request.exit_code,
                reason: request.reason.clone(),
                network_bindings: request.network_bindings.clone(),
                runtime_id: request.runtime_id.clone(),
                image_digest: None,
            }],
            ..Default::default()
        };
        self.submit_change(&cluster, &task_id, change).await?;
        Ok(SubmitContainerStateChangeResponse {
            acknowledgment: Some("ACK".to_owned()),
        })
    }

    async fn submit_change(
        &self,
        cluster: &str,
        task_id: &str,
        change: TaskChange,
    ) -> Result<(), ApiError> {
        if change.containers.len() > CONTAINER_CHANGES_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "a state change may report at most {CONTAINER_CHANGES_MAX} containers, got {}",
                change.containers.len()
            )));
        }
        for container in &change.containers {
            if let Some(status) = container.status.as_deref() {
                if container_rank(status).is_none() {
                    return Err(ApiError::invalid_parameter(format!(
                        "Invalid container status {status:?}: must be one of {}",
                        CONTAINER_STATUSES.join(", ")
                    )));
                }
            }
        }
        let Some(found) = self.get_task(cluster, task_id)? else {
            return Err(ApiError::invalid_parameter(TASK_NOT_FOUND));
        };
        for container in &change.containers {
            let name = container.container_name.as_deref().unwrap_or_default();
            let known = found
                .value
                .task
                .containers
                .iter()
                .flatten()
                .any(|c| c.name.as_deref() == Some(name));
            if !known {
                return Err(ApiError::invalid_parameter(format!(
                    "Task {} has no container named {name:?}",
                    found.value.arn()
                )));
            }
        }
        let now_seconds = self.now_seconds();
        let now_ms = self.clock.now_ms();
        self.change_task(cluster, task_id, |record, _| {
            apply_change(record, &change, now_seconds, now_ms)
        })
        .await?
        .ok_or_else(|| ApiError::invalid_parameter(TASK_NOT_FOUND))?;
        Ok(())
    }

    /// Deletes tasks STOPPED longer than [`STOPPED_TASK_RETENTION_MS`] ago.
    /// Returns how many it deleted. Called periodically by the binary.
    pub async fn collect_stopped_tasks(&self) -> Result<usize, ApiError> {
        let now_ms = self.clock.now_ms();
        let expired = self.expired_stopped_tasks(now_ms)?;
        let mut deleted = 0;
        for (cluster, task_id) in expired {
            let key = keys::task(&cluster, &task_id);
            deleted += records::mutate(self.store.as_ref(), || {
                let Some(found) = self.get_task(&cluster, &task_id)? else {
                    return Ok(Attempt::Done(0));
                };
                Ok(Attempt::Commit(
                    Txn::new().expect(&key, found.revision).delete(&key),
                    1,
                ))
            })
            .await?;
        }
        Ok(deleted)
    }
}

/// Task records read per store call by the retention sweep.
const RETENTION_SCAN_PAGE: usize = 256;

/// The fields of a stored task that retention looks at. Reading only these
/// keeps a sweep of every task record from holding decoded records.
#[derive(Deserialize)]
struct RetentionFacts {
    cluster: String,
    task_id: String,
    /// Set when the task reached STOPPED.
    #[serde(default)]
    stopped_at_ms: Option<u64>,
}

impl Ecs {
    /// The tasks (cluster, id) STOPPED at least the retention ago, read a
    /// page at a time.
    fn expired_stopped_tasks(&self, now_ms: u64) -> Result<Vec<(String, String)>, ApiError> {
        let mut expired = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list(keys::TASKS, after.as_deref(), RETENTION_SCAN_PAGE)
                .map_err(records::store_error)?;
            for entry in &page.entries {
                let facts: RetentionFacts = records::decode(entry)?;
                if facts
                    .stopped_at_ms
                    .is_some_and(|at| now_ms.saturating_sub(at) >= STOPPED_TASK_RETENTION_MS)
                {
                    expired.push((facts.cluster, facts.task_id));
                }
            }
            match page.entries.last() {
                Some(last) if page.more => after = Some(last.key.clone()),
                _ => return Ok(expired),
            }
        }
    }
}

/// Where a launch's tasks go.
pub(crate) enum Targeting {
    FirstFit(usize),
    /// The instances StartTask names.
    Named(Vec<String>),
}

/// Volumes are kept in a task definition as registered, but an EFS or FSx
/// volume needs a mount the agents cannot make yet: a task that needs one
/// is refused rather than started without its volume.
fn check_volumes_mountable(definition: &TaskDefinition) -> Result<(), ApiError> {
    for volume in definition.volumes.iter().flatten() {
        let kind = if volume.efs_volume_configuration.is_some() {
            "an EFS volume"
        } else if volume
            .fsx_windows_file_server_volume_configuration
            .is_some()
        {
            "an FSx for Windows File Server volume"
        } else {
            continue;
        };
        return Err(ApiError::invalid_parameter(format!(
            "Task definition {} uses {kind} ('{}'), which this Flotilla server does not mount yet.",
            definition
                .task_definition_arn
                .as_deref()
                .unwrap_or_default(),
            volume.name.as_deref().unwrap_or_default()
        )));
    }
    Ok(())
}

/// The attributes ECS gives a task: the CPU architecture of the instance it
/// was placed on.
fn task_attributes(instance: &InstanceRecord) -> Vec<Attribute> {
    vec![Attribute {
        name: Some(CPU_ARCHITECTURE_ATTRIBUTE.to_owned()),
        value: Some(
            instance
                .attribute(CPU_ARCHITECTURE_ATTRIBUTE)
                .unwrap_or_else(|| CPU_ARCHITECTURE_DEFAULT.to_owned()),
        ),
        ..Default::default()
    }]
}

/// The failure of a strategy's share whose capacity provider has no
/// instance to take it, in the words ECS uses for an empty cluster.
fn no_instances_in(provider: &str) -> String {
    format!("No Container Instances were found in capacity provider {provider}.")
}

/// Where one task of a launch goes: an index into the instances placement
/// read, and the capacity provider whose share it is, if any.
struct Placement {
    instance: usize,
    provider: Option<String>,
}

/// The failure of a Fargate task that found no room in its cluster's pool,
/// in Fargate's words, with the remedy in `detail`.
fn fargate_capacity_failure(cluster: &str) -> Failure {
    Failure {
        arn: None,
        reason: Some("Capacity is unavailable at this time. Please try again later or in a different availability zone".to_owned()),
        detail: Some(format!(
            "cluster {cluster} has no Fargate host with room for the task: start one with `flotilla agent --fargate --cluster {cluster}`"
        )),
    }
}

/// `platformVersion` is Fargate's, and Flotilla has one: 1.4.0, which
/// LATEST names.
fn check_platform_version(launch_type: LaunchType, given: Option<&str>) -> Result<(), ApiError> {
    let Some(given) = given else {
        return Ok(());
    };
    if launch_type != LaunchType::Fargate {
        return Err(ApiError::invalid_parameter(format!(
            "The platform version must be null when specifying an {} launch type.",
            launch_type.as_str()
        )));
    }
    if given == "LATEST" || given == FARGATE_PLATFORM_VERSION {
        return Ok(());
    }
    Err(ApiError::invalid_parameter(format!(
        "The specified platform version ({given}) does not exist. This Flotilla server runs Fargate tasks on platform version {FARGATE_PLATFORM_VERSION} (LATEST)."
    )))
}

/// Fargate places tasks itself: a request may not steer it.
fn check_fargate_placement(request: &LaunchRequest<'_>) -> Result<(), ApiError> {
    if !request.placement_constraints.is_empty() {
        return Err(ApiError::invalid_parameter(
            "Placement constraints are not supported with FARGATE launch type.",
        ));
    }
    if !request.placement_strategy.is_empty() {
        return Err(ApiError::invalid_parameter(
            "Placement strategies are not supported with FARGATE launch type.",
        ));
    }
    Ok(())
}

/// A MAC address derived from the task's address, so it is unique wherever
/// the address is: locally administered (`02:`) and never multicast.
fn mac_address(subnet_index: u32, octet: u8) -> String {
    format!("02:00:0a:c8:{:02x}:{octet:02x}", subnet_index & 0xff)
}

fn check_awsvpc(configuration: &AwsVpcConfiguration) -> Result<(), ApiError> {
    let subnets = configuration.subnets.as_deref().unwrap_or_default().len();
    let groups = configuration
        .security_groups
        .as_deref()
        .unwrap_or_default()
        .len();
    if subnets > AWSVPC_SUBNETS_MAX {
        return Err(ApiError::invalid_parameter(format!(
            "awsvpcConfiguration may name at most {AWSVPC_SUBNETS_MAX} subnets, got {subnets}"
        )));
    }
    if groups > AWSVPC_SECURITY_GROUPS_MAX {
        return Err(ApiError::invalid_parameter(format!(
            "awsvpcConfiguration may name at most {AWSVPC_SECURITY_GROUPS_MAX} security groups, got {groups}"
        )));
    }
    Ok(())
}

/// Checks overrides against the definition and returns them as ECS echoes
/// them: one container override per container, named even when empty.
fn check_overrides(
    definition: &TaskDefinition,
    given: Option<&TaskOverride>,
) -> Result<TaskOverride, ApiError> {
    let mut overrides = given.cloned().unwrap_or_default();
    let containers = definition
        .container_definitions
        .as_deref()
        .unwrap_or_default();
    let given_containers = overrides.container_overrides.take().unwrap_or_default();
    for container_override in &given_containers {
        let name = container_override.name.as_deref().unwrap_or_default();
        let Some(container) = containers.iter().find(|c| c.name.as_deref() == Some(name)) else {
            return Err(ApiError::invalid_parameter(format!(
                "Override for container named {name} is not a container in the TaskDefinition."
            )));
        };
        if container_override.cpu.is_some_and(|cpu| cpu < 0) {
            return Err(ApiError::invalid_parameter(format!(
                "Invalid cpu override for container {name}: must not be negative"
            )));
        }
        for (member, value) in [
            ("memory", container_override.memory),
            ("memoryReservation", container_override.memory_reservation),
        ] {
            if value.is_some_and(|mib| mib < CONTAINER_MEMORY_MIB_MIN) {
                return Err(ApiError::invalid_parameter(format!(
                    "Invalid {member} override for container {name}: must be at least {CONTAINER_MEMORY_MIB_MIN} MiB"
                )));
            }
        }
        let memory = container_override.memory.or(container.memory);
        let reservation = container_override
            .memory_reservation
            .or(container.memory_reservation);
        if let (Some(memory), Some(reservation)) = (memory, reservation) {
            if reservation > memory {
                return Err(ApiError::invalid_parameter(format!(
                    "Invalid memory override for container {name}: memoryReservation {reservation} is larger than memory {memory}"
                )));
            }
        }
    }
    for (member, value) in [
        ("cpu", overrides.cpu.as_deref()),
        ("memory", overrides.memory.as_deref()),
    ] {
        if let Some(value) = value {
            if !value.trim().parse::<u32>().is_ok_and(|v| v > 0) {
                return Err(ApiError::invalid_parameter(format!(
                    "Invalid task {member} override {value:?}: must be a positive whole number"
                )));
            }
        }
    }
    overrides.container_overrides = Some(
        containers
            .iter()
            .map(|container| {
                given_containers
                    .iter()
                    .find(|o| o.name == container.name)
                    .cloned()
                    .unwrap_or_else(|| ContainerOverride {
                        name: container.name.clone(),
                        ..Default::default()
                    })
            })
            .collect(),
    );
    overrides
        .inference_accelerator_overrides
        .get_or_insert_with(Vec::new);
    Ok(overrides)
}

/// What one task of `definition` needs from its instance, as ECS reserves it
/// on EC2: the task-level size when set, else the containers' sums, memory
/// counted by each container's soft limit when it has one.
/// What one task of `definition` reserves on its instance, without overrides.
pub(crate) fn needs_of(definition: &TaskDefinition) -> flotilla_scheduler::Resources {
    demand_for(definition, &TaskOverride::default()).needs
}

fn demand_for(
    definition: &TaskDefinition,
    overrides: &TaskOverride,
) -> flotilla_scheduler::Request {
    let containers = definition
        .container_definitions
        .as_deref()
        .unwrap_or_default();
    let container_overrides = overrides.container_overrides.as_deref().unwrap_or_default();
    let override_of = |container: &ContainerDefinition| {
        container_overrides
            .iter()
            .find(|o| o.name == container.name)
    };
    let parse = |value: Option<&str>| value.and_then(|v| v.trim().parse::<i64>().ok());
    let cpu_sum: i64 = containers
        .iter()
        .map(|c| i64::from(override_of(c).and_then(|o| o.cpu).or(c.cpu).unwrap_or(0)))
        .sum();
    let memory_sum: i64 = containers
        .iter()
        .map(|c| {
            let o = override_of(c);
            let reservation = o
                .and_then(|o| o.memory_reservation)
                .or(c.memory_reservation);
            let memory = o.and_then(|o| o.memory).or(c.memory);
            i64::from(reservation.or(memory).unwrap_or(0))
        })
        .sum();
    let network_mode = definition.network_mode.unwrap_or(NetworkMode::Bridge);
    let mut tcp_ports = Vec::new();
    let mut udp_ports = Vec::new();
    if matches!(network_mode, NetworkMode::Bridge | NetworkMode::Host) {
        for mapping in containers
            .iter()
            .flat_map(|c| c.port_mappings.iter().flatten())
        {
            let host_port = match network_mode {
                NetworkMode::Host => mapping.host_port.or(mapping.container_port),
                _ => mapping.host_port,
            };
            let Some(port) = host_port
                .filter(|p| *p > 0)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            if mapping.container_port_range.is_some() {
                continue;
            }
            match mapping.protocol.unwrap_or(TransportProtocol::Tcp) {
                TransportProtocol::Tcp => tcp_ports.push(port),
                TransportProtocol::Udp => udp_ports.push(port),
            }
        }
    }
    let gpus: usize = containers
        .iter()
        .map(|c| {
            let requirements = override_of(c)
                .and_then(|o| o.resource_requirements.as_ref())
                .or(c.resource_requirements.as_ref());
            requirements
                .into_iter()
                .flatten()
                .filter(|r| r.r#type == Some(ResourceType::Gpu))
                .filter_map(|r| r.value.as_deref().and_then(|v| v.parse::<usize>().ok()))
                .sum::<usize>()
        })
        .sum();
    flotilla_scheduler::Request {
        needs: flotilla_scheduler::Resources {
            cpu_units: parse(overrides.cpu.as_deref())
                .or(parse(definition.cpu.as_deref()))
                .unwrap_or(cpu_sum),
            memory_mib: parse(overrides.memory.as_deref())
                .or(parse(definition.memory.as_deref()))
                .unwrap_or(memory_sum),
            gpus: u32::try_from(gpus).unwrap_or(u32::MAX),
        },
        tcp_ports,
        udp_ports,
        needs_eni: network_mode == NetworkMode::Awsvpc,
        required_attributes: definition
            .requires_attributes
            .iter()
            .flatten()
            .filter_map(|a| a.name.clone())
            .collect(),
        ..Default::default()
    }
}

/// RunTask's `count`: 1 when absent, at most `RUN_TASK_COUNT_MAX`.
pub(crate) fn checked_count(count: Option<i32>) -> Result<usize, ApiError> {
    let count = count.unwrap_or(1);
    if !(1..=RUN_TASK_COUNT_MAX).contains(&count) {
        return Err(ApiError::invalid_parameter(format!(
            "count must be between 1 and {RUN_TASK_COUNT_MAX}, got {count}"
        )));
    }
    Ok(count as usize)
}

/// What RunTask asks the scheduler for `count` tasks of `launch`, checked.
pub(crate) fn placement_request(
    launch: &Launch,
    count: usize,
    seed: u64,
) -> Result<flotilla_scheduler::Request, ApiError> {
    let request = flotilla_scheduler::Request {
        count: u32::try_from(count).unwrap_or(u32::MAX),
        seed,
        ..launch.request.clone()
    };
    request
        .validate()
        .map_err(|error| ApiError::invalid_parameter(error.to_string()))?;
    Ok(request)
}

/// What a FirstFit launch of `count` tasks asks the scheduler: one
/// request, or with a capacity provider strategy one per provider that
/// takes a share of the tasks, in the strategy's order.
pub(crate) fn placement_requests(
    launch: &Launch,
    count: usize,
    seed: u64,
) -> Result<Vec<flotilla_scheduler::Request>, ApiError> {
    let Some(capacity) = &launch.capacity else {
        return Ok(vec![placement_request(launch, count, seed)?]);
    };
    let shares = capacity.split(u32::try_from(count).unwrap_or(u32::MAX));
    let mut requests = Vec::new();
    for (share, tasks) in capacity.shares.iter().zip(shares) {
        if tasks > 0 {
            let mut request = placement_request(launch, tasks as usize, seed)?;
            request.capacity_provider = Some(share.provider.clone());
            requests.push(request);
        }
    }
    Ok(requests)
}

/// A placement seed from a fresh task id (hex digits).
fn placement_seed(task_id: &str) -> u64 {
    let digits = task_id.get(..16).unwrap_or(task_id);
    u64::from_str_radix(digits, 16).unwrap_or_default()
}
