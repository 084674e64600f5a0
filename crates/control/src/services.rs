//! Services: CreateService, UpdateService, DeleteService, DescribeServices,
//! ListServices, ListServiceDeployments, DescribeServiceDeployments,
//! DescribeServiceRevisions, and
//! task scale-in protection (UpdateTaskProtection, GetTaskProtection); the
//! task sets of services with the EXTERNAL deployment controller are in
//! `services/task_sets.rs`.
//! StopServiceDeployment and ContinueServiceDeployment are in
//! `services/deployment_actions.rs`, the BLUE_GREEN, LINEAR and CANARY
//! strategies in `services/blue_green.rs`.
//!
//! A service is one [`ServiceRecord`] under `keys::service(cluster, name)`:
//! its wire shape, its deployments (PRIMARY first, then ACTIVE ones still
//! draining), the finished ones (for ListServiceDeployments) and its latest
//! events. The API only writes what the user asked for (a new PRIMARY
//! deployment, a desired count, DRAINING); the service scheduler
//! (`services/reconcile.rs`) does the rest, deciding from the task records
//! (`group` `service:NAME`, `startedBy` the deployment id) every time, so
//! that it can be killed at any moment and carry on. See
//! `services/README.md` for the pipeline.

use std::collections::BTreeSet;

use flotilla_store::Txn;
use flotilla_types::arn::Arn;
use flotilla_types::ecs::*;
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::page;
use crate::records::{self, keys, Attempt};
use crate::tasks::{LaunchRequest, Revisions, TaskRecord};
use crate::Ecs;
use breaker::FailureCount;

mod balancing;
pub mod blue_green;
pub mod breaker;
mod deployment_actions;
pub(crate) mod events;
pub mod reconcile;
pub mod rollout;
pub mod target_groups;
pub mod task_sets;

pub use reconcile::{SchedulerSettings, AGENT_LOST_TIMEOUT_MS, STABILIZATION_MS};

const SERVICE_NAME_LENGTH_MAX: usize = 255;
const CLIENT_TOKEN_LENGTH_MAX: usize = 36;
const DESCRIBE_SERVICES_MAX: usize = 10;
const LIST_SERVICES_DEFAULT: usize = 10;
const LIST_SERVICES_MAX: usize = 100;
const LIST_SERVICE_DEPLOYMENTS_MAX: usize = 100;
const DESCRIBE_SERVICE_DEPLOYMENTS_MAX: usize = 20;
const DESCRIBE_SERVICE_REVISIONS_MAX: usize = 20;
/// Events kept per service, newest first, as ECS keeps them.
pub const SERVICE_EVENTS_MAX: usize = 100;
/// Finished deployments kept per service for ListServiceDeployments.
pub const FINISHED_DEPLOYMENTS_MAX: usize = 20;
/// How long a deleted service stays describable as INACTIVE, as ECS keeps them.
pub const INACTIVE_SERVICE_RETENTION_MS: u64 = 60 * 60 * 1000;
/// Tasks UpdateTaskProtection and GetTaskProtection take at once.
const TASK_PROTECTION_TASKS_MAX: usize = 10;
const TASK_PROTECTION_MINUTES_DEFAULT: i32 = 120;
const TASK_PROTECTION_MINUTES_MAX: i32 = 2880;

/// How a deployment's tasks are launched.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentSpec {
    /// The task definition's ARN, resolved when the deployment was made.
    pub task_definition: String,
    #[serde(default)]
    pub launch_type: Option<LaunchType>,
    #[serde(default)]
    pub capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
    #[serde(default)]
    pub network_configuration: Option<NetworkConfiguration>,
    #[serde(default)]
    pub placement_constraints: Vec<PlacementConstraint>,
    #[serde(default)]
    pub placement_strategy: Vec<PlacementStrategy>,
    #[serde(default)]
    pub enable_execute_command: bool,
    /// The load balancers its tasks register with, when not the service's
    /// own (a blue/green deployment's alternate target groups, a task set's
    /// load balancers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancers: Option<Vec<LoadBalancer>>,
    // How its tasks are tagged is the service's, not the deployment's: as in
    // ECS, a change to propagateTags or enableECSManagedTags starts no
    // deployment and applies to the tasks launched after it.
}

/// One deployment of a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// The wire shape: id, status, counts, rollout state.
    pub deployment: Deployment,
    pub spec: DeploymentSpec,
    /// Its tasks that failed to start or to stay healthy, as the circuit
    /// breaker counts them.
    #[serde(default)]
    pub failures: FailureCount,
    /// What records written before `failures` held instead: the ids of its
    /// failed tasks. Read into `failures` once, never written.
    #[serde(default, rename = "failed_task_ids", skip_serializing)]
    failed_task_ids_before: BTreeSet<String>,
    pub started_at_ms: u64,
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    /// What ListServiceDeployments says of it.
    pub lifecycle: ServiceDeploymentStatus,
    #[serde(default)]
    pub lifecycle_reason: Option<String>,
    /// The deployment configuration it runs under.
    #[serde(default)]
    pub configuration: DeploymentConfiguration,
    /// The deployments it replaced.
    #[serde(default)]
    pub sources: Vec<String>,
    /// When it rolls a failed deployment back: that deployment's id.
    #[serde(default)]
    pub rollback_of: Option<String>,
    /// Its stage and traffic share, under BLUE_GREEN, LINEAR or CANARY
    /// (`services/blue_green.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<blue_green::Progress>,
    /// StopServiceDeployment or a lifecycle hook asked for a rollback; the
    /// scheduler's next pass carries it out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback_requested: bool,
}

impl DeploymentRecord {
    pub fn id(&self) -> &str {
        self.deployment.id.as_deref().unwrap_or_default()
    }

    pub fn rollout_state(&self) -> DeploymentRolloutState {
        self.deployment
            .rollout_state
            .unwrap_or(DeploymentRolloutState::InProgress)
    }

    /// Its circuit breaker count, whichever way its record was written.
    pub fn failure_count(&self) -> FailureCount {
        if self.failures == FailureCount::default() && !self.failed_task_ids_before.is_empty() {
            return FailureCount::of_known(self.failed_task_ids_before.iter().cloned());
        }
        self.failures.clone()
    }

    /// Sets its circuit breaker count.
    pub fn set_failure_count(&mut self, failures: FailureCount) {
        self.failed_task_ids_before.clear();
        self.deployment.failed_tasks = Some(i32::try_from(failures.failures()).unwrap_or(i32::MAX));
        self.failures = failures;
    }
}

/// The last deployment that completed, which a circuit breaker rolls back to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletedDeployment {
    pub id: String,
    pub spec: DeploymentSpec,
}

/// A service as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// The wire shape; `deployments` and `events` are filled from the fields
    /// below when it is described.
    pub service: Service,
    pub cluster: String,
    pub name: String,
    /// PRIMARY first, then ACTIVE ones whose tasks are still being stopped.
    pub deployments: Vec<DeploymentRecord>,
    /// Finished deployments, newest first, at most [`FINISHED_DEPLOYMENTS_MAX`].
    #[serde(default)]
    pub finished: Vec<DeploymentRecord>,
    /// Newest first, at most [`SERVICE_EVENTS_MAX`].
    #[serde(default)]
    pub events: Vec<ServiceEvent>,
    /// Whether "has reached a steady state" was said since the last change.
    #[serde(default)]
    pub steady: bool,
    #[serde(default)]
    pub last_completed: Option<CompletedDeployment>,
    /// The last placement failure said, and when (clock ms), so that it is
    /// not repeated on every step.
    #[serde(default)]
    pub placement_failure: Option<(String, u64)>,
    /// When it became INACTIVE (clock ms), for retention.
    #[serde(default)]
    pub inactive_at_ms: Option<u64>,
    /// The clientToken it was created with: a CreateService repeating it is
    /// a retry, answered with the service.
    #[serde(default)]
    pub client_token: Option<String>,
    /// What the scheduler's events have said, so that nothing is said twice.
    #[serde(default)]
    pub told: Told,
    /// With the EXTERNAL deployment controller: its task sets, which stand
    /// in for its deployments (see `task_sets.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_sets: Vec<task_sets::TaskSetRecord>,
    /// Whether the alternate target groups of its load balancers are the
    /// production ones now (they swap at the end of each blue/green,
    /// linear or canary deployment).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub production_alternate: bool,
}

/// What a service's events have said that must not be said again while
/// nothing changes: ECS omits a repeated event until its cause changes or
/// six hours pass.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Told {
    /// When "has reached a steady state." was last said (clock ms).
    #[serde(default)]
    pub steady_at_ms: Option<u64>,
    /// The latest stop time (clock ms) of the failed tasks whose failure
    /// was told.
    #[serde(default)]
    pub failures_through_ms: u64,
    /// The launch throttle's delay (ms) last told, and of which deployment.
    #[serde(default)]
    pub throttle: Option<(String, u64)>,
}

/// A service's status while it is neither draining nor deleted.
pub const SERVICE_ACTIVE: &str = "ACTIVE";

impl ServiceRecord {
    pub fn is_active(&self) -> bool {
        self.service.status.as_deref() == Some(SERVICE_ACTIVE)
    }

    pub fn status(&self) -> &str {
        self.service.status.as_deref().unwrap_or("ACTIVE")
    }

    pub fn is_daemon(&self) -> bool {
        self.service.scheduling_strategy == Some(SchedulingStrategy::Daemon)
    }

    pub fn group(&self) -> String {
        format!("service:{}", self.name)
    }

    pub fn primary(&self) -> Option<&DeploymentRecord> {
        self.deployments.first()
    }

    /// Whether its deployments are driven by the caller through task sets.
    pub fn is_external(&self) -> bool {
        let controller = self.service.deployment_controller.as_ref();
        controller.and_then(|c| c.r#type) == Some(DeploymentControllerType::External)
    }

    /// The load balancers the tasks of deployment (or task set) `id`
    /// register with: the deployment's own when it has them, else the
    /// service's.
    pub fn load_balancers_of(&self, id: Option<&str>) -> &[LoadBalancer] {
        let own = self
            .deployments
            .iter()
            .find(|d| Some(d.id()) == id)
            .map(|d| &d.spec)
            .or_else(|| self.task_set_spec(id))
            .and_then(|spec| spec.load_balancers.as_deref());
        own.or(self.service.load_balancers.as_deref())
            .unwrap_or_default()
    }

    pub fn configuration(&self) -> DeploymentConfiguration {
        self.service
            .deployment_configuration
            .clone()
            .unwrap_or_default()
    }

    /// Adds an event, newest first, keeping the latest [`SERVICE_EVENTS_MAX`].
    pub fn add_event(&mut self, id: String, now_seconds: f64, message: String) {
        self.events.insert(
            0,
            ServiceEvent {
                id: Some(id),
                created_at: Some(now_seconds),
                message: Some(message),
            },
        );
        self.events.truncate(SERVICE_EVENTS_MAX);
    }

    /// Moves a deployment to the finished list.
    pub fn finish(&mut self, mut deployment: DeploymentRecord, now_ms: u64) {
        deployment.finished_at_ms.get_or_insert(now_ms);
        deployment.deployment.status = Some("INACTIVE".to_owned());
        self.finished.insert(0, deployment);
        self.finished.truncate(FINISHED_DEPLOYMENTS_MAX);
    }
}

/// Scale-in protection of one task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskProtection {
    pub expires_at_ms: u64,
}

/// A deployment's `rolloutStateReason` while it is IN_PROGRESS, naming it
/// as ECS does.
pub fn in_progress_reason(deployment_id: &str) -> String {
    format!("ECS deployment {deployment_id} in progress.")
}

/// `ecs-svc/` and 19 digits, as ECS names deployments, from a fresh id.
pub fn deployment_id(uuid: &str) -> String {
    let hex = crate::instances::hex_id(uuid);
    let number = u64::from_str_radix(hex.get(..16).unwrap_or("0"), 16).unwrap_or(0);
    format!("ecs-svc/{:019}", number % 10_000_000_000_000_000_000)
}

fn check_service_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= SERVICE_NAME_LENGTH_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid service name {name:?}: up to {SERVICE_NAME_LENGTH_MAX} letters (uppercase and lowercase), numbers, hyphens and underscores are allowed"
        )));
    }
    Ok(())
}

/// CreateService's clientToken as ECS limits it: up to 36 ASCII characters
/// from `!` to `~`.
fn check_client_token(token: &str) -> Result<(), ApiError> {
    let valid =
        token.len() <= CLIENT_TOKEN_LENGTH_MAX && token.bytes().all(|b| (33..=126).contains(&b));
    if valid {
        return Ok(());
    }
    Err(ApiError::invalid_parameter(format!(
        "clientToken must be up to {CLIENT_TOKEN_LENGTH_MAX} ASCII characters in the range of 33-126, inclusive"
    )))
}

/// Services deploy with ECS's own controller or, EXTERNAL, through task
/// sets; CodeDeploy is not here, and blue/green is ECS's own strategy.
fn check_deployment_controller(controller: Option<&DeploymentController>) -> Result<(), ApiError> {
    match controller.and_then(|c| c.r#type) {
        Some(DeploymentControllerType::CodeDeploy) => {
            Err(ApiError::invalid_parameter(task_sets::CODE_DEPLOY_REFUSED))
        }
        _ => Ok(()),
    }
}

fn daemon_strategy_refused() -> ApiError {
    ApiError::invalid_parameter(
        "Specifying a capacity provider strategy is not supported when you create a service using the DAEMON scheduling strategy.",
    )
}

/// A new service's launch type and capacity provider strategy: as given,
/// or with neither the cluster's default strategy, copied into the service
/// as ECS shows it. A DAEMON service runs on every instance: no strategy,
/// and the EC2 launch type unless it names EXTERNAL.
fn service_capacity(
    cluster: &Cluster,
    launch_type: Option<LaunchType>,
    strategy: Option<&[CapacityProviderStrategyItem]>,
    daemon: bool,
) -> Result<(Option<LaunchType>, Vec<CapacityProviderStrategyItem>), ApiError> {
    let strategy = strategy.unwrap_or_default();
    if !strategy.is_empty() {
        if daemon {
            return Err(daemon_strategy_refused());
        }
        // prepare_launch refuses a launch type beside it, as ECS does.
        return Ok((launch_type, strategy.to_vec()));
    }
    let default = cluster
        .default_capacity_provider_strategy
        .as_deref()
        .unwrap_or_default();
    if launch_type.is_none() && !daemon && !default.is_empty() {
        return Ok((None, default.to_vec()));
    }
    Ok((Some(launch_type.unwrap_or(LaunchType::Ec2)), Vec::new()))
}

/// The deployment configuration with ECS's defaults filled in, checked.
fn resolve_configuration(
    given: Option<&DeploymentConfiguration>,
    current: Option<&DeploymentConfiguration>,
    daemon: bool,
) -> Result<DeploymentConfiguration, ApiError> {
    let mut configuration = current.cloned().unwrap_or_default();
    if let Some(given) = given {
        if given.maximum_percent.is_some() {
            configuration.maximum_percent = given.maximum_percent;
        }
        if given.minimum_healthy_percent.is_some() {
            configuration.minimum_healthy_percent = given.minimum_healthy_percent;
        }
        if let Some(breaker) = &given.deployment_circuit_breaker {
            if let Some(threshold) = &breaker.threshold_configuration {
                check_threshold(threshold)?;
            }
            configuration.deployment_circuit_breaker = Some(breaker.clone());
        }
        if given.alarms.is_some() {
            configuration.alarms = given.alarms.clone();
        }
        if given.bake_time_in_minutes.is_some() {
            configuration.bake_time_in_minutes = given.bake_time_in_minutes;
        }
        if given.strategy.is_some() {
            configuration.strategy = given.strategy;
        }
        blue_green::merge_configuration(&mut configuration, given, daemon)?;
    }
    let maximum = *configuration
        .maximum_percent
        .get_or_insert(if daemon { 100 } else { 200 });
    let minimum = *configuration
        .minimum_healthy_percent
        .get_or_insert(if daemon { 0 } else { 100 });
    if !(0..=100).contains(&minimum) {
        return Err(ApiError::invalid_parameter(format!(
            "minimumHealthyPercent must be between 0 and 100, got {minimum}"
        )));
    }
    if daemon && maximum != 100 {
        return Err(ApiError::invalid_parameter(
            "The daemon scheduling strategy supports a maximumPercent of 100 only.",
        ));
    }
    if !daemon && maximum < 100 {
        return Err(ApiError::invalid_parameter(format!(
            "maximumPercent must be at least 100, got {maximum}"
        )));
    }
    if !daemon && minimum == 100 && maximum == 100 {
        return Err(ApiError::invalid_parameter(
            "maximumPercent must be greater than minimumHealthyPercent when both are 100: no task could ever be replaced",
        ));
    }
    configuration
        .deployment_circuit_breaker
        .get_or_insert(DeploymentCircuitBreaker {
            enable: Some(false),
            rollback: Some(false),
            ..Default::default()
        });
    configuration
        .strategy
        .get_or_insert(DeploymentStrategy::Rolling);
    with_alarm_defaults(&mut configuration);
    Ok(configuration)
}

/// ECS shows a deployment configuration without alarms as alarms off.
fn with_alarm_defaults(configuration: &mut DeploymentConfiguration) {
    configuration
        .alarms
        .get_or_insert_with(|| DeploymentAlarms {
            alarm_names: Some(Vec::new()),
            enable: Some(false),
            rollback: Some(false),
        });
}

/// Checks a circuit breaker's `thresholdConfiguration` as ECS does: both
/// members, a percentage of 1 to 100, a count of at least 1.
fn check_threshold(threshold: &ThresholdConfiguration) -> Result<(), ApiError> {
    let (Some(kind), Some(value)) = (threshold.r#type, threshold.value) else {
        return Err(ApiError::invalid_parameter(
            "thresholdConfiguration needs both a type (COUNT, BOUNDED_PERCENT or UNBOUNDED_PERCENT) and a value",
        ));
    };
    match kind {
        ThresholdType::BoundedPercent | ThresholdType::UnboundedPercent
            if !(1..=100).contains(&value) =>
        {
            Err(ApiError::invalid_parameter(format!(
                "thresholdConfiguration value for {} must be between 1 and 100, got {value}",
                kind.as_str()
            )))
        }
        ThresholdType::Count if value < 1 => Err(ApiError::invalid_parameter(format!(
            "thresholdConfiguration value for COUNT must be at least 1, got {value}"
        ))),
        _ => Ok(()),
    }
}

/// How many failed tasks make the circuit breaker trip: half the desired
/// count, at least 3 and at most 200, as ECS computes it by default; or
/// what a `thresholdConfiguration` says.
pub fn failure_threshold(configuration: &DeploymentConfiguration, desired: u32) -> u32 {
    let breaker = configuration.deployment_circuit_breaker.as_ref();
    let threshold = breaker.and_then(|b| b.threshold_configuration.as_ref());
    let percent_of = |percent: u32| (u64::from(desired) * u64::from(percent)).div_ceil(100) as u32;
    match threshold.and_then(|t| t.r#type.zip(t.value)) {
        Some((ThresholdType::Count, value)) => u32::try_from(value).unwrap_or(1).max(1),
        Some((ThresholdType::UnboundedPercent, value)) => {
            percent_of(u32::try_from(value).unwrap_or(50)).max(1)
        }
        Some((ThresholdType::BoundedPercent, value)) => {
            percent_of(u32::try_from(value).unwrap_or(50)).clamp(3, 200)
        }
        None => percent_of(50).clamp(3, 200),
    }
}

impl Ecs {
    pub(crate) fn service_arn(&self, cluster: &str, name: &str) -> String {
        self.scope.arn("ecs", &format!("service/{cluster}/{name}"))
    }

    fn service_deployment_arn(&self, cluster: &str, name: &str, deployment_id: &str) -> String {
        let number = deployment_id.trim_start_matches("ecs-svc/");
        self.scope.arn(
            "ecs",
            &format!("service-deployment/{cluster}/{name}/{number}"),
        )
    }

    fn service_revision_arn(&self, cluster: &str, name: &str, deployment_id: &str) -> String {
        let number = deployment_id.trim_start_matches("ecs-svc/");
        self.scope.arn(
            "ecs",
            &format!("service-revision/{cluster}/{name}/{number}"),
        )
    }

    /// The name of the service a request names by name or ARN within `cluster`.
    pub(crate) fn service_name_in(&self, cluster: &str, given: &str) -> Option<String> {
        let given = given.trim();
        if !given.starts_with("arn:") {
            return Some(given.to_owned());
        }
        let arn = Arn::parse(given)?;
        if arn.service != "ecs"
            || arn.region != self.scope.region
            || arn.account_id != self.scope.account_id
        {
            return None;
        }
        match arn.resource_parts() {
            ("service", rest) => match rest.split_once('/') {
                Some((arn_cluster, name)) if arn_cluster == cluster => Some(name.to_owned()),
                // Old-format ARNs name no cluster.
                None => Some(rest.to_owned()),
                _ => None,
            },
            _ => None,
        }
    }

    pub(crate) fn get_service(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<Option<records::Versioned<ServiceRecord>>, ApiError> {
        records::get(self.store.as_ref(), &keys::service(cluster, name))
    }

    /// The service, live or INACTIVE.
    fn find_service(&self, cluster: &str, name: &str) -> Result<Option<ServiceRecord>, ApiError> {
        if let Some(found) = self.get_service(cluster, name)? {
            return Ok(Some(found.value));
        }
        Ok(records::get::<ServiceRecord>(
            self.store.as_ref(),
            &keys::inactive_service(cluster, name),
        )?
        .map(|found| found.value))
    }

    /// The request RunTask would get for a deployment's tasks. `service`
    /// says how they are tagged (none, for a check before the service
    /// exists). A deployment's revision was ACTIVE when it was made, and
    /// the service keeps launching it once it is not.
    pub(crate) fn deployment_launch_request<'a>(
        cluster: &'a str,
        group: &'a str,
        started_by: &'a str,
        spec: &'a DeploymentSpec,
        service: Option<&'a Service>,
    ) -> LaunchRequest<'a> {
        LaunchRequest {
            cluster: Some(cluster),
            task_definition: &spec.task_definition,
            revisions: Revisions::AnyStored,
            launch_type: spec.launch_type,
            capacity_provider_strategy: &spec.capacity_provider_strategy,
            overrides: None,
            started_by: Some(started_by),
            group: Some(group),
            tags: &[],
            propagate_tags: service.and_then(|s| s.propagate_tags),
            enable_ecs_managed_tags: service
                .and_then(|s| s.enable_ecs_managed_tags)
                .unwrap_or(false),
            service: service.map(|s| crate::tags::ServiceTags {
                name: s.service_name.as_deref().unwrap_or_default(),
                tags: s.tags.as_deref().unwrap_or_default(),
            }),
            network_configuration: spec.network_configuration.as_ref(),
            placement_constraints: &spec.placement_constraints,
            placement_strategy: &spec.placement_strategy,
            enable_execute_command: Some(spec.enable_execute_command),
            platform_version: None,
            strategy_counts_started_by: true,
        }
    }

    /// Checks a deployment's spec as RunTask would check its request, and
    /// resolves its task definition to an ARN. `running` is the revision the
    /// service runs now: it may stay on it after it was deregistered, but
    /// may not take up any other revision that is not ACTIVE.
    fn checked_spec(
        &self,
        cluster: &str,
        name: &str,
        mut spec: DeploymentSpec,
        running: Option<&str>,
        load_balancers: &[LoadBalancer],
    ) -> Result<DeploymentSpec, ApiError> {
        let reference = self
            .task_definition_reference(&spec.task_definition)
            .map_err(|_| ApiError::client("TaskDefinition not found."))?;
        let record = self
            .find_task_definition(&reference)?
            .ok_or_else(|| ApiError::client("TaskDefinition not found."))?;
        let awsvpc = record.definition.network_mode == Some(NetworkMode::Awsvpc);
        let arn = record
            .definition
            .task_definition_arn
            .clone()
            .unwrap_or_default();
        let active = record.definition.status == Some(TaskDefinitionStatus::Active);
        if !active && running != Some(arn.as_str()) {
            return Err(ApiError::client(crate::tasks::TASK_DEFINITION_INACTIVE));
        }
        let configured = spec
            .network_configuration
            .as_ref()
            .is_some_and(|n| n.awsvpc_configuration.is_some());
        if awsvpc && !configured {
            return Err(ApiError::invalid_parameter(
                "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
            ));
        }
        target_groups::check_load_balancers(
            load_balancers,
            &record.definition,
            self.target_groups().as_deref(),
        )?;
        spec.task_definition = arn;
        let group = format!("service:{name}");
        let mut launch = Self::deployment_launch_request(cluster, &group, "ecs-svc/0", &spec, None);
        // No deployment runs yet: nothing to count.
        launch.strategy_counts_started_by = false;
        self.prepare_launch(launch)?;
        Ok(spec)
    }

    fn new_deployment(
        &self,
        id: String,
        spec: DeploymentSpec,
        configuration: &DeploymentConfiguration,
        desired: i32,
        now_ms: u64,
    ) -> DeploymentRecord {
        let now_seconds = now_ms as f64 / 1000.0;
        DeploymentRecord {
            deployment: Deployment {
                status: Some("PRIMARY".to_owned()),
                task_definition: Some(spec.task_definition.clone()),
                desired_count: Some(desired),
                pending_count: Some(0),
                running_count: Some(0),
                failed_tasks: Some(0),
                created_at: Some(now_seconds),
                updated_at: Some(now_seconds),
                launch_type: spec.launch_type,
                capacity_provider_strategy: (!spec.capacity_provider_strategy.is_empty())
                    .then(|| spec.capacity_provider_strategy.clone()),
                network_configuration: spec.network_configuration.clone(),
                rollout_state: Some(DeploymentRolloutState::InProgress),
                rollout_state_reason: Some(in_progress_reason(&id)),
                id: Some(id),
                ..Default::default()
            },
            spec,
            failures: FailureCount::default(),
            failed_task_ids_before: BTreeSet::new(),
            started_at_ms: now_ms,
            finished_at_ms: None,
            lifecycle: ServiceDeploymentStatus::InProgress,
            lifecycle_reason: None,
            configuration: configuration.clone(),
            sources: Vec::new(),
            rollback_of: None,
            progress: None,
            rollback_requested: false,
        }
    }

    pub(crate) async fn create_service(
        &self,
        caller: &crate::Caller,
        request: CreateServiceRequest,
    ) -> Result<CreateServiceResponse, ApiError> {
        let cluster_record = self.active_cluster(request.cluster.as_deref())?.value;
        let cluster = cluster_record.cluster_name.clone().unwrap_or_default();
        let name = request.service_name.clone().unwrap_or_default();
        check_service_name(&name)?;
        let scheduling = request
            .scheduling_strategy
            .unwrap_or(SchedulingStrategy::Replica);
        let daemon = scheduling == SchedulingStrategy::Daemon;
        check_deployment_controller(request.deployment_controller.as_ref())?;
        if task_sets::is_external(request.deployment_controller.as_ref()) {
            return self.create_external_service(caller, request).await;
        }
        if let Some(token) = request.client_token.as_deref() {
            check_client_token(token)?;
        }
        let task_definition = request
            .task_definition
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::invalid_parameter(
                    "taskDefinition is required for the ECS deployment controller.",
                )
            })?;
        let desired =
            match (daemon, request.desired_count) {
                (true, Some(_)) => return Err(ApiError::invalid_parameter(
                    "The daemon scheduling strategy does not support a desired count for services.",
                )),
                (true, None) => 0,
                (false, None) => return Err(ApiError::invalid_parameter(
                    "desiredCount is required for services with the REPLICA scheduling strategy.",
                )),
                (false, Some(count)) if count < 0 => {
                    return Err(ApiError::invalid_parameter(
                        "desiredCount must not be negative.",
                    ))
                }
                (false, Some(count)) => count,
            };
        if daemon
            && request
                .placement_strategy
                .as_ref()
                .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::invalid_parameter(
                "The daemon scheduling strategy does not support placement strategies.",
            ));
        }
        if let Some(grace) = request.health_check_grace_period_seconds {
            if grace < 0 {
                return Err(ApiError::invalid_parameter(
                    "healthCheckGracePeriodSeconds must not be negative.",
                ));
            }
        }
        let configuration =
            resolve_configuration(request.deployment_configuration.as_ref(), None, daemon)?;
        let tags = request.tags.clone().unwrap_or_default();
        crate::tags::check_tags(&tags)?;
        let (launch_type, capacity_provider_strategy) = service_capacity(
            &cluster_record,
            request.launch_type,
            request.capacity_provider_strategy.as_deref(),
            daemon,
        )?;
        let spec = DeploymentSpec {
            task_definition,
            launch_type,
            capacity_provider_strategy,
            network_configuration: request.network_configuration.clone(),
            placement_constraints: request.placement_constraints.clone().unwrap_or_default(),
            placement_strategy: request.placement_strategy.clone().unwrap_or_default(),
            enable_execute_command: request.enable_execute_command.unwrap_or(false),
            load_balancers: None,
        };
        let load_balancers = request.load_balancers.clone().unwrap_or_default();
        let spec = self.checked_spec(&cluster, &name, spec, None, &load_balancers)?;
        blue_green::check_load_balancers(
            &load_balancers,
            configuration.strategy,
            self.target_groups().as_deref(),
        )?;
        let now_ms = self.clock.now_ms();
        let now_seconds = self.now_seconds();
        let id = deployment_id(&self.ids.uuid());
        let deployment = self.new_deployment(id, spec.clone(), &configuration, desired, now_ms);
        let service = Service {
            service_arn: Some(self.service_arn(&cluster, &name)),
            service_name: Some(name.clone()),
            cluster_arn: Some(self.cluster_arn(&cluster)),
            load_balancers: Some(request.load_balancers.clone().unwrap_or_default()),
            service_registries: Some(request.service_registries.clone().unwrap_or_default()),
            status: Some("ACTIVE".to_owned()),
            desired_count: Some(desired),
            running_count: Some(0),
            pending_count: Some(0),
            launch_type: spec.launch_type,
            capacity_provider_strategy: (!spec.capacity_provider_strategy.is_empty())
                .then(|| spec.capacity_provider_strategy.clone()),
            task_definition: Some(spec.task_definition.clone()),
            deployment_configuration: Some(configuration),
            role_arn: request.role.clone(),
            created_at: Some(now_seconds),
            placement_constraints: Some(spec.placement_constraints.clone()),
            placement_strategy: Some(spec.placement_strategy.clone()),
            network_configuration: spec.network_configuration.clone(),
            health_check_grace_period_seconds: request.health_check_grace_period_seconds,
            scheduling_strategy: Some(scheduling),
            deployment_controller: Some(DeploymentController {
                r#type: Some(DeploymentControllerType::Ecs),
            }),
            tags: Some(tags),
            created_by: Some(caller.principal_arn.clone()),
            enable_ecs_managed_tags: Some(request.enable_ecs_managed_tags.unwrap_or(false)),
            propagate_tags: Some(request.propagate_tags.unwrap_or(PropagateTags::None)),
            enable_execute_command: Some(spec.enable_execute_command),
            // ECS enables rebalancing on services created without a choice.
            availability_zone_rebalancing: Some(
                request
                    .availability_zone_rebalancing
                    .unwrap_or(AvailabilityZoneRebalancing::Enabled),
            ),
            platform_family: None,
            ..Default::default()
        };
        let key = keys::service(&cluster, &name);
        let mut record = ServiceRecord {
            service,
            cluster: cluster.clone(),
            name: name.clone(),
            deployments: vec![deployment],
            finished: Vec::new(),
            events: Vec::new(),
            steady: false,
            last_completed: None,
            placement_failure: None,
            inactive_at_ms: None,
            client_token: request.client_token.clone(),
            told: Told::default(),
            task_sets: Vec::new(),
            production_alternate: false,
        };
        if daemon {
            // What DescribeServices says at once: a task per eligible instance.
            let eligible = self
                .daemon_instances(&cluster, &record, |_| false)?
                .iter()
                .filter(|i| i.eligible)
                .count() as i32;
            record.service.desired_count = Some(eligible);
            if let Some(primary) = record.deployments.first_mut() {
                primary.deployment.desired_count = Some(eligible);
            }
        }
        let created = records::mutate(self.store.as_ref(), || {
            if let Some(existing) = self.get_service(&cluster, &name)? {
                let retried = existing.value.status() == "ACTIVE"
                    && request.client_token.is_some()
                    && existing.value.client_token == request.client_token;
                if retried {
                    return Ok(Attempt::Done(existing.value));
                }
                return Err(ApiError::invalid_parameter(
                    "Creation of service was not idempotent.",
                ));
            }
            let txn = self.hold_capacity_providers(
                Txn::new(),
                &cluster,
                &spec.capacity_provider_strategy,
            )?;
            let txn = txn.expect(&key, 0).put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, record.clone()))
        })
        .await?;
        Ok(CreateServiceResponse {
            service: Some(self.present_service(&created, true)),
        })
    }

    /// The wire shape of a stored service.
    pub(crate) fn present_service(&self, record: &ServiceRecord, include_tags: bool) -> Service {
        let mut service = record.service.clone();
        service.deployments = Some(
            record
                .deployments
                .iter()
                .map(|d| d.deployment.clone())
                .collect(),
        );
        service.events = Some(record.events.clone());
        service.current_service_deployment = record
            .primary()
            .map(|d| self.service_deployment_arn(&record.cluster, &record.name, d.id()));
        service.current_service_revisions = Some(
            record
                .deployments
                .iter()
                .map(|d| ServiceCurrentRevisionSummary {
                    arn: Some(self.service_revision_arn(&record.cluster, &record.name, d.id())),
                    requested_task_count: d.deployment.desired_count,
                    running_task_count: d.deployment.running_count,
                    pending_task_count: d.deployment.pending_count,
                })
                .collect(),
        );
        // What ECS fills in where the service was stored without it: a
        // service that never chose rebalancing has it off, and every
        // service not made by Express Mode is its owner's.
        if let Some(configuration) = &mut service.deployment_configuration {
            with_alarm_defaults(configuration);
        }
        if record.is_external() {
            task_sets::present_external(&mut service, record, include_tags);
        }
        service
            .availability_zone_rebalancing
            .get_or_insert(AvailabilityZoneRebalancing::Disabled);
        service
            .resource_management_type
            .get_or_insert(ResourceManagementType::Customer);
        if !include_tags {
            service.tags = None;
        }
        service
    }

    pub(crate) async fn update_service(
        &self,
        request: UpdateServiceRequest,
    ) -> Result<UpdateServiceResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let given = request.service.clone().unwrap_or_default();
        let name = self
            .service_name_in(&cluster, &given)
            .ok_or_else(service_not_found)?;
        let Some(current) = self.get_service(&cluster, &name)? else {
            // A deleted service stays describable for a while, and ECS
            // answers that it is not active rather than not found.
            return Err(match self.find_service(&cluster, &name)? {
                Some(_) => service_not_active(),
                None => service_not_found(),
            });
        };
        if current.value.status() != "ACTIVE" {
            return Err(ApiError::new(
                "ServiceNotActiveException",
                400,
                "Service was not ACTIVE.",
            ));
        }
        check_deployment_controller(request.deployment_controller.as_ref())?;
        task_sets::check_controller_kept(&current.value, request.deployment_controller.as_ref())?;
        if current.value.is_external() {
            return self.update_external_service(request).await;
        }
        let daemon = current.value.is_daemon();
        if let Some(count) = request.desired_count {
            if daemon {
                return Err(ApiError::invalid_parameter(
                    "The daemon scheduling strategy does not support a desired count for services.",
                ));
            }
            if count < 0 {
                return Err(ApiError::invalid_parameter(
                    "desiredCount must not be negative.",
                ));
            }
        }
        if daemon
            && request
                .placement_strategy
                .as_ref()
                .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::invalid_parameter(
                "The daemon scheduling strategy does not support placement strategies.",
            ));
        }
        if request
            .health_check_grace_period_seconds
            .is_some_and(|g| g < 0)
        {
            return Err(ApiError::invalid_parameter(
                "healthCheckGracePeriodSeconds must not be negative.",
            ));
        }
        let configuration = resolve_configuration(
            request.deployment_configuration.as_ref(),
            current.value.service.deployment_configuration.as_ref(),
            daemon,
        )?;
        // What the new deployment would run: the PRIMARY's spec with the
        // request's changes. A change to any of these starts a deployment.
        let base = current
            .value
            .primary()
            .map(|d| d.spec.clone())
            .unwrap_or_default();
        let mut spec = base.clone();
        if let Some(definition) = request.task_definition.clone().filter(|t| !t.is_empty()) {
            spec.task_definition = definition;
        }
        if let Some(network) = &request.network_configuration {
            spec.network_configuration = Some(network.clone());
        }
        if let Some(constraints) = &request.placement_constraints {
            spec.placement_constraints = constraints.clone();
        }
        if let Some(strategy) = &request.placement_strategy {
            spec.placement_strategy = strategy.clone();
        }
        if let Some(strategy) = &request.capacity_provider_strategy {
            if !strategy.is_empty() && current.value.is_daemon() {
                return Err(daemon_strategy_refused());
            }
            spec.capacity_provider_strategy = strategy.clone();
            // An empty strategy takes the service back to its launch type.
            spec.launch_type = if strategy.is_empty() {
                Some(spec.launch_type.unwrap_or(LaunchType::Ec2))
            } else {
                None
            };
        }
        if let Some(enable) = request.enable_execute_command {
            spec.enable_execute_command = enable;
        }
        let load_balancers = request.load_balancers.clone().unwrap_or_else(|| {
            current
                .value
                .service
                .load_balancers
                .clone()
                .unwrap_or_default()
        });
        let spec = self.checked_spec(
            &cluster,
            &name,
            spec,
            Some(base.task_definition.as_str()),
            &load_balancers,
        )?;
        blue_green::check_load_balancers(
            &load_balancers,
            configuration.strategy,
            self.target_groups().as_deref(),
        )?;
        let force = request.force_new_deployment.unwrap_or(false);
        // As in ECS, new load balancers take effect through a new deployment.
        let load_balancers_changed = request
            .load_balancers
            .as_ref()
            .is_some_and(|given| Some(given) != current.value.service.load_balancers.as_ref());
        let redeploy = force || spec != base || load_balancers_changed;
        let now_ms = self.clock.now_ms();
        let new_id = deployment_id(&self.ids.uuid());
        let key = keys::service(&cluster, &name);
        let updated = records::mutate(self.store.as_ref(), || {
            let Some(found) = self.get_service(&cluster, &name)? else {
                return Err(service_not_found());
            };
            let mut record = found.value;
            if record.status() != "ACTIVE" {
                return Err(ApiError::new(
                    "ServiceNotActiveException",
                    400,
                    "Service was not ACTIVE.",
                ));
            }
            if let Some(count) = request.desired_count {
                record.service.desired_count = Some(count);
            }
            if let Some(grace) = request.health_check_grace_period_seconds {
                record.service.health_check_grace_period_seconds = Some(grace);
            }
            if let Some(load_balancers) = &request.load_balancers {
                record.service.load_balancers = Some(load_balancers.clone());
            }
            if let Some(registries) = &request.service_registries {
                record.service.service_registries = Some(registries.clone());
            }
            if let Some(managed) = request.enable_ecs_managed_tags {
                record.service.enable_ecs_managed_tags = Some(managed);
            }
            if let Some(propagate) = request.propagate_tags {
                record.service.propagate_tags = Some(propagate);
            }
            if request.availability_zone_rebalancing.is_some() {
                record.service.availability_zone_rebalancing =
                    request.availability_zone_rebalancing;
            }
            record.service.deployment_configuration = Some(configuration.clone());
            record.service.task_definition = Some(spec.task_definition.clone());
            record.service.network_configuration = spec.network_configuration.clone();
            record.service.placement_constraints = Some(spec.placement_constraints.clone());
            record.service.placement_strategy = Some(spec.placement_strategy.clone());
            record.service.launch_type = spec.launch_type;
            record.service.capacity_provider_strategy =
                (!spec.capacity_provider_strategy.is_empty())
                    .then(|| spec.capacity_provider_strategy.clone());
            record.service.enable_execute_command = Some(spec.enable_execute_command);
            let desired = record.service.desired_count.unwrap_or(0);
            if redeploy {
                let mut deployment = self.new_deployment(
                    new_id.clone(),
                    spec.clone(),
                    &configuration,
                    desired,
                    now_ms,
                );
                blue_green::prepare(&mut record, &mut deployment, now_ms);
                for older in &mut record.deployments {
                    older.deployment.status = Some("ACTIVE".to_owned());
                    deployment.sources.push(older.id().to_owned());
                    if older.lifecycle == ServiceDeploymentStatus::InProgress {
                        older.lifecycle = ServiceDeploymentStatus::Stopped;
                        older.lifecycle_reason =
                            Some(format!("Superseded by deployment {new_id}."));
                    }
                }
                record.deployments.insert(0, deployment);
            } else if let Some(primary) = record.deployments.first_mut() {
                primary.deployment.desired_count = Some(desired);
                primary.configuration = configuration.clone();
            }
            record.steady = false;
            let txn = self.hold_capacity_providers(
                Txn::new(),
                &cluster,
                &spec.capacity_provider_strategy,
            )?;
            let txn = txn
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, record))
        })
        .await?;
        Ok(UpdateServiceResponse {
            service: Some(self.present_service(&updated, true)),
        })
    }

    pub(crate) async fn delete_service(
        &self,
        request: DeleteServiceRequest,
    ) -> Result<DeleteServiceResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let given = request.service.clone().unwrap_or_default();
        let name = self
            .service_name_in(&cluster, &given)
            .ok_or_else(service_not_found)?;
        let force = request.force.unwrap_or(false);
        let key = keys::service(&cluster, &name);
        let deleted = records::mutate(self.store.as_ref(), || {
            let Some(found) = self.get_service(&cluster, &name)? else {
                return Err(service_not_found());
            };
            let mut record = found.value;
            if record.status() == "DRAINING" {
                return Ok(Attempt::Done(record));
            }
            if !force && !record.is_daemon() && record.service.desired_count.unwrap_or(0) > 0 {
                return Err(ApiError::invalid_parameter(
                    "The service cannot be stopped while it is scaled above 0.",
                ));
            }
            record.service.status = Some("DRAINING".to_owned());
            record.service.desired_count = Some(0);
            if let Some(primary) = record.deployments.first_mut() {
                primary.deployment.desired_count = Some(0);
            }
            record.steady = false;
            let txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, record))
        })
        .await?;
        Ok(DeleteServiceResponse {
            service: Some(self.present_service(&deleted, true)),
        })
    }

    pub(crate) fn describe_services(
        &self,
        request: DescribeServicesRequest,
    ) -> Result<DescribeServicesResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let wanted = request.services.clone().unwrap_or_default();
        if wanted.is_empty() {
            return Err(ApiError::invalid_parameter("Services cannot be empty."));
        }
        if wanted.len() > DESCRIBE_SERVICES_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "services must name 1 to {DESCRIBE_SERVICES_MAX} services, got {}",
                wanted.len()
            )));
        }
        let include_tags = request
            .include
            .iter()
            .flatten()
            .any(|f| *f == ServiceField::Tags);
        let mut services = Vec::new();
        let mut failures = Vec::new();
        for given in &wanted {
            let found = match self.service_name_in(&cluster, given) {
                Some(name) => self.find_service(&cluster, &name)?,
                None => None,
            };
            match found {
                Some(record) => services.push(self.present_service(&record, include_tags)),
                None => failures.push(Failure {
                    arn: Some(if given.starts_with("arn:") {
                        given.clone()
                    } else {
                        self.service_arn(&cluster, given)
                    }),
                    reason: Some("MISSING".to_owned()),
                    detail: None,
                }),
            }
        }
        Ok(DescribeServicesResponse {
            services: Some(services),
            failures: Some(failures),
        })
    }

    pub(crate) fn list_services(
        &self,
        request: ListServicesRequest,
    ) -> Result<ListServicesResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let limit = page::max_results(
            request.max_results,
            LIST_SERVICES_DEFAULT,
            LIST_SERVICES_MAX,
        )?;
        let listing = page::list(
            self.store.as_ref(),
            &keys::services_of(&cluster),
            request.next_token.as_deref(),
            limit,
            |entry| {
                let record: ServiceRecord = records::decode(entry)?;
                let keep = request
                    .launch_type
                    .is_none_or(|l| record.service.launch_type == Some(l))
                    && request
                        .scheduling_strategy
                        .is_none_or(|s| record.service.scheduling_strategy == Some(s))
                    // Every Flotilla service is its owner's: none is managed by ECS.
                    && request
                        .resource_management_type
                        .is_none_or(|t| t == ResourceManagementType::Customer);
                Ok(keep.then(|| record.service.service_arn.clone().unwrap_or_default()))
            },
        )?;
        Ok(ListServicesResponse {
            service_arns: Some(listing.items),
            next_token: listing.next_token,
        })
    }

    fn brief(
        &self,
        record: &ServiceRecord,
        deployment: &DeploymentRecord,
    ) -> ServiceDeploymentBrief {
        ServiceDeploymentBrief {
            cluster_arn: Some(self.cluster_arn(&record.cluster)),
            service_arn: Some(self.service_arn(&record.cluster, &record.name)),
            service_deployment_arn: Some(self.service_deployment_arn(
                &record.cluster,
                &record.name,
                deployment.id(),
            )),
            target_service_revision_arn: Some(self.service_revision_arn(
                &record.cluster,
                &record.name,
                deployment.id(),
            )),
            created_at: deployment.deployment.created_at,
            started_at: deployment.deployment.created_at,
            finished_at: deployment.finished_at_ms.map(|ms| ms as f64 / 1000.0),
            status: Some(deployment.lifecycle),
            status_reason: deployment.lifecycle_reason.clone(),
        }
    }

    pub(crate) fn list_service_deployments(
        &self,
        request: ListServiceDeploymentsRequest,
    ) -> Result<ListServiceDeploymentsResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let given = request.service.clone().unwrap_or_default();
        let name = self
            .service_name_in(&cluster, &given)
            .ok_or_else(service_not_found)?;
        let record = self
            .find_service(&cluster, &name)?
            .ok_or_else(service_not_found)?;
        let limit = page::max_results(
            request.max_results,
            LIST_SERVICE_DEPLOYMENTS_MAX,
            LIST_SERVICE_DEPLOYMENTS_MAX,
        )?;
        let statuses = request.status.clone().unwrap_or_default();
        let mut all: Vec<&DeploymentRecord> = record
            .deployments
            .iter()
            .chain(record.finished.iter())
            .collect();
        all.sort_by_key(|d| std::cmp::Reverse(d.started_at_ms));
        let created = request.created_at.clone().unwrap_or_default();
        let keep: Vec<ServiceDeploymentBrief> = all
            .into_iter()
            .filter(|d| statuses.is_empty() || statuses.contains(&d.lifecycle))
            .filter(|d| {
                let at = d.started_at_ms as f64 / 1000.0;
                created.after.is_none_or(|after| at >= after)
                    && created.before.is_none_or(|before| at <= before)
            })
            .map(|d| self.brief(&record, d))
            .collect();
        let start = match request.next_token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => token.parse::<usize>().map_err(|_| {
                ApiError::invalid_parameter(
                    "Invalid nextToken: it was not returned by this listing",
                )
            })?,
            None => 0,
        };
        let page: Vec<ServiceDeploymentBrief> =
            keep.iter().skip(start).take(limit).cloned().collect();
        let next_token =
            (start + page.len() < keep.len()).then(|| (start + page.len()).to_string());
        Ok(ListServiceDeploymentsResponse {
            service_deployments: Some(page),
            next_token,
        })
    }

    pub(crate) fn describe_service_deployments(
        &self,
        request: DescribeServiceDeploymentsRequest,
    ) -> Result<DescribeServiceDeploymentsResponse, ApiError> {
        let wanted = request.service_deployment_arns.clone().unwrap_or_default();
        if wanted.is_empty() || wanted.len() > DESCRIBE_SERVICE_DEPLOYMENTS_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "serviceDeploymentArns must name 1 to {DESCRIBE_SERVICE_DEPLOYMENTS_MAX} service deployments, got {}",
                wanted.len()
            )));
        }
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for arn in &wanted {
            let described = self.describe_service_deployment(arn)?;
            match described {
                Some(deployment) => found.push(deployment),
                None => failures.push(Failure {
                    arn: Some(arn.clone()),
                    reason: Some("MISSING".to_owned()),
                    detail: None,
                }),
            }
        }
        Ok(DescribeServiceDeploymentsResponse {
            service_deployments: Some(found),
            failures: Some(failures),
        })
    }

    fn describe_service_deployment(
        &self,
        arn: &str,
    ) -> Result<Option<ServiceDeployment>, ApiError> {
        let Some(parsed) = Arn::parse(arn) else {
            return Ok(None);
        };
        if parsed.service != "ecs"
            || parsed.region != self.scope.region
            || parsed.account_id != self.scope.account_id
        {
            return Ok(None);
        }
        let ("service-deployment", rest) = parsed.resource_parts() else {
            return Ok(None);
        };
        let mut parts = rest.splitn(3, '/');
        let (Some(cluster), Some(name), Some(number)) = (parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let Some(record) = self.find_service(cluster, name)? else {
            return Ok(None);
        };
        let id = format!("ecs-svc/{number}");
        let Some(deployment) = record
            .deployments
            .iter()
            .chain(record.finished.iter())
            .find(|d| d.id() == id)
        else {
            return Ok(None);
        };
        let revision = |d: &DeploymentRecord| ServiceRevisionSummary {
            arn: Some(self.service_revision_arn(cluster, name, d.id())),
            requested_task_count: d.deployment.desired_count,
            running_task_count: d.deployment.running_count,
            pending_task_count: d.deployment.pending_count,
            ..Default::default()
        };
        let sources = record
            .deployments
            .iter()
            .chain(record.finished.iter())
            .filter(|d| deployment.sources.iter().any(|s| s == d.id()))
            .map(revision)
            .collect();
        let breaker = deployment.configuration.deployment_circuit_breaker.as_ref();
        let enabled = breaker.and_then(|b| b.enable).unwrap_or(false);
        let desired = u32::try_from(record.service.desired_count.unwrap_or(0)).unwrap_or(0);
        let failed = deployment.deployment.failed_tasks.unwrap_or(0);
        let tripped = deployment.rollout_state() == DeploymentRolloutState::Failed;
        Ok(Some(ServiceDeployment {
            service_deployment_arn: Some(arn.to_owned()),
            service_arn: Some(self.service_arn(cluster, name)),
            cluster_arn: Some(self.cluster_arn(cluster)),
            created_at: deployment.deployment.created_at,
            started_at: deployment.deployment.created_at,
            updated_at: deployment.deployment.updated_at,
            finished_at: deployment.finished_at_ms.map(|ms| ms as f64 / 1000.0),
            status: Some(deployment.lifecycle),
            status_reason: deployment.lifecycle_reason.clone(),
            target_service_revision: Some(revision(deployment)),
            source_service_revisions: Some(sources),
            deployment_configuration: Some(deployment.configuration.clone()),
            deployment_circuit_breaker: Some(ServiceDeploymentCircuitBreaker {
                status: Some(
                    match (enabled, tripped, deployment.finished_at_ms.is_some()) {
                        (false, _, _) => ServiceDeploymentRollbackMonitorsStatus::Disabled,
                        (true, true, _) => ServiceDeploymentRollbackMonitorsStatus::Triggered,
                        (true, false, true) => {
                            ServiceDeploymentRollbackMonitorsStatus::MonitoringComplete
                        }
                        (true, false, false) => ServiceDeploymentRollbackMonitorsStatus::Monitoring,
                    },
                ),
                failure_count: Some(failed),
                threshold: Some(failure_threshold(&deployment.configuration, desired) as i32),
            }),
            lifecycle_stage: deployment.progress.as_ref().map(|p| p.stage.reported()),
            lifecycle_hook_details: deployment
                .progress
                .as_ref()
                .map(blue_green::Progress::hook_details),
            rollback: deployment.rollback_of.as_ref().map(|failed| Rollback {
                reason: Some(rollback_reason(&record, failed)),
                service_revision_arn: Some(self.service_revision_arn(
                    cluster,
                    name,
                    deployment.id(),
                )),
                started_at: deployment.deployment.created_at,
            }),
            ..Default::default()
        }))
    }

    pub(crate) fn describe_service_revisions(
        &self,
        request: DescribeServiceRevisionsRequest,
    ) -> Result<DescribeServiceRevisionsResponse, ApiError> {
        let wanted = request.service_revision_arns.clone().unwrap_or_default();
        if wanted.is_empty() || wanted.len() > DESCRIBE_SERVICE_REVISIONS_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "serviceRevisionArns must name 1 to {DESCRIBE_SERVICE_REVISIONS_MAX} service revisions, got {}",
                wanted.len()
            )));
        }
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for arn in &wanted {
            match self.describe_service_revision(arn)? {
                Some(revision) => found.push(revision),
                None => failures.push(Failure {
                    arn: Some(arn.clone()),
                    reason: Some("MISSING".to_owned()),
                    detail: None,
                }),
            }
        }
        Ok(DescribeServiceRevisionsResponse {
            service_revisions: Some(found),
            failures: Some(failures),
        })
    }

    /// A service revision is what one deployment runs: Flotilla makes one
    /// per deployment and names it by the deployment's number.
    fn describe_service_revision(&self, arn: &str) -> Result<Option<ServiceRevision>, ApiError> {
        let Some(parsed) = Arn::parse(arn) else {
            return Ok(None);
        };
        if !self.is_own_ecs_arn(&parsed) {
            return Ok(None);
        }
        let ("service-revision", rest) = parsed.resource_parts() else {
            return Ok(None);
        };
        let mut parts = rest.splitn(3, '/');
        let (Some(cluster), Some(name), Some(number)) = (parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let Some(record) = self.find_service(cluster, name)? else {
            return Ok(None);
        };
        let id = format!("ecs-svc/{number}");
        let Some(deployment) = record
            .deployments
            .iter()
            .chain(record.finished.iter())
            .find(|d| d.id() == id)
        else {
            return Ok(None);
        };
        let spec = &deployment.spec;
        let container_images = self
            .task_definition_reference(&spec.task_definition)
            .ok()
            .map(|reference| self.find_task_definition(&reference))
            .transpose()?
            .flatten()
            .map(|found| {
                found
                    .definition
                    .container_definitions
                    .iter()
                    .flatten()
                    .map(|container| ContainerImage {
                        container_name: container.name.clone(),
                        image: container.image.clone(),
                        image_digest: None,
                    })
                    .collect()
            });
        Ok(Some(ServiceRevision {
            service_revision_arn: Some(arn.to_owned()),
            service_arn: Some(self.service_arn(cluster, name)),
            cluster_arn: Some(self.cluster_arn(cluster)),
            task_definition: Some(spec.task_definition.clone()),
            capacity_provider_strategy: (!spec.capacity_provider_strategy.is_empty())
                .then(|| spec.capacity_provider_strategy.clone()),
            launch_type: spec.launch_type,
            // A blue/green deployment's revision names the target groups its
            // tasks went to.
            load_balancers: Some(
                spec.load_balancers
                    .clone()
                    .or_else(|| record.service.load_balancers.clone())
                    .unwrap_or_default(),
            ),
            service_registries: Some(
                record
                    .service
                    .service_registries
                    .clone()
                    .unwrap_or_default(),
            ),
            network_configuration: spec.network_configuration.clone(),
            container_images,
            guard_duty_enabled: Some(false),
            created_at: deployment.deployment.created_at,
            ..Default::default()
        }))
    }

    pub(crate) async fn update_task_protection(
        &self,
        request: UpdateTaskProtectionRequest,
    ) -> Result<UpdateTaskProtectionResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let tasks = request.tasks.clone().unwrap_or_default();
        check_protection_tasks(&tasks)?;
        let enabled = request.protection_enabled.unwrap_or(false);
        let minutes = request
            .expires_in_minutes
            .unwrap_or(TASK_PROTECTION_MINUTES_DEFAULT);
        if enabled && !(1..=TASK_PROTECTION_MINUTES_MAX).contains(&minutes) {
            return Err(ApiError::invalid_parameter(format!(
                "expiresInMinutes must be between 1 and {TASK_PROTECTION_MINUTES_MAX}, got {minutes}"
            )));
        }
        let now_ms = self.clock.now_ms();
        let expires_at_ms = now_ms + u64::try_from(minutes).unwrap_or(0) * 60_000;
        let mut protected_tasks = Vec::new();
        let mut failures = Vec::new();
        for given in &tasks {
            let Some(record) = self.protectable_task(&cluster, given, &mut failures)? else {
                continue;
            };
            let key = keys::task_protection(&cluster, &record.task_id);
            records::mutate(self.store.as_ref(), || {
                let current = self.store.get(&key).map_err(records::store_error)?;
                let revision = current.map_or(0, |e| e.mod_revision);
                let txn = Txn::new().expect(&key, revision);
                let txn = if enabled {
                    txn.put(&key, records::encode(&TaskProtection { expires_at_ms }))
                } else if revision == 0 {
                    return Ok(Attempt::Done(()));
                } else {
                    txn.delete(&key)
                };
                Ok(Attempt::Commit(txn, ()))
            })
            .await?;
            protected_tasks.push(ProtectedTask {
                task_arn: Some(record.arn()),
                protection_enabled: Some(enabled),
                expiration_date: enabled.then_some(expires_at_ms as f64 / 1000.0),
            });
        }
        Ok(UpdateTaskProtectionResponse {
            protected_tasks: Some(protected_tasks),
            failures: Some(failures),
        })
    }

    pub(crate) fn get_task_protection(
        &self,
        request: GetTaskProtectionRequest,
    ) -> Result<GetTaskProtectionResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let tasks = request.tasks.clone().unwrap_or_default();
        check_protection_tasks(&tasks)?;
        let now_ms = self.clock.now_ms();
        let mut protected_tasks = Vec::new();
        let mut failures = Vec::new();
        for given in &tasks {
            let Some(record) = self.protectable_task(&cluster, given, &mut failures)? else {
                continue;
            };
            let protection: Option<TaskProtection> = records::get(
                self.store.as_ref(),
                &keys::task_protection(&cluster, &record.task_id),
            )?
            .map(|found| found.value)
            .filter(|p: &TaskProtection| p.expires_at_ms > now_ms);
            protected_tasks.push(ProtectedTask {
                task_arn: Some(record.arn()),
                protection_enabled: Some(protection.is_some()),
                expiration_date: protection.map(|p| p.expires_at_ms as f64 / 1000.0),
            });
        }
        Ok(GetTaskProtectionResponse {
            protected_tasks: Some(protected_tasks),
            failures: Some(failures),
        })
    }

    /// The task a protection request names, when it is a running task of a
    /// service; otherwise a failure is added and `None` returned.
    fn protectable_task(
        &self,
        cluster: &str,
        given: &str,
        failures: &mut Vec<Failure>,
    ) -> Result<Option<TaskRecord>, ApiError> {
        let found = match self.task_id_in(cluster, given) {
            Some(id) => self.get_task(cluster, &id)?,
            None => None,
        };
        let Some(found) = found else {
            failures.push(Failure {
                arn: Some(given.to_owned()),
                reason: Some("TASK_NOT_FOUND".to_owned()),
                detail: Some("The task was not found.".to_owned()),
            });
            return Ok(None);
        };
        let record = found.value;
        let in_service = record
            .task
            .group
            .as_deref()
            .is_some_and(|g| g.starts_with("service:"));
        if !in_service || record.last_status() == "STOPPED" {
            failures.push(Failure {
                arn: Some(record.arn()),
                reason: Some("TASK_NOT_VALID".to_owned()),
                detail: Some("The task is not a running task of a service.".to_owned()),
            });
            return Ok(None);
        }
        Ok(Some(record))
    }
}

impl Ecs {
    /// Deletes services INACTIVE longer than [`INACTIVE_SERVICE_RETENTION_MS`]
    /// and task protections of tasks that are gone or expired. Returns how
    /// many records it deleted. Called periodically by the binary.
    pub async fn collect_inactive_services(&self) -> Result<usize, ApiError> {
        let now_ms = self.clock.now_ms();
        let mut expired: Vec<(String, u64)> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list(
                    keys::INACTIVE_SERVICES,
                    after.as_deref(),
                    flotilla_store::LIST_LIMIT_MAX,
                )
                .map_err(records::store_error)?;
            for entry in &page.entries {
                let record: ServiceRecord = records::decode(entry)?;
                let old = record
                    .inactive_at_ms
                    .is_some_and(|at| now_ms.saturating_sub(at) >= INACTIVE_SERVICE_RETENTION_MS);
                if old {
                    expired.push((entry.key.clone(), entry.mod_revision));
                }
            }
            match page.entries.last() {
                Some(last) if page.more => after = Some(last.key.clone()),
                _ => break,
            }
        }
        let page = self
            .store
            .list(keys::TASK_PROTECTION, None, flotilla_store::LIST_LIMIT_MAX)
            .map_err(records::store_error)?;
        for entry in &page.entries {
            let protection: TaskProtection = records::decode(entry)?;
            let rest = &entry.key[keys::TASK_PROTECTION.len()..];
            let task_gone = rest.split_once('/').is_none_or(|(cluster, task_id)| {
                self.get_task(cluster, task_id).ok().flatten().is_none()
            });
            if protection.expires_at_ms <= now_ms || task_gone {
                expired.push((entry.key.clone(), entry.mod_revision));
            }
        }
        let mut deleted = 0;
        for (key, revision) in expired {
            let txn = Txn::new().expect(&key, revision).delete(&key);
            match self.store.commit(txn).await {
                Ok(_) => deleted += 1,
                // Changed since: the next collection looks again.
                Err(flotilla_store::StoreError::Conflict { .. }) => {}
                Err(error) => return Err(records::store_error(error)),
            }
        }
        Ok(deleted)
    }
}

fn check_protection_tasks(tasks: &[String]) -> Result<(), ApiError> {
    if tasks.is_empty() || tasks.len() > TASK_PROTECTION_TASKS_MAX {
        return Err(ApiError::invalid_parameter(format!(
            "tasks must name 1 to {TASK_PROTECTION_TASKS_MAX} tasks, got {}",
            tasks.len()
        )));
    }
    Ok(())
}

/// Why a deployment rolled another back, as DescribeServiceDeployments says.
fn rollback_reason(record: &ServiceRecord, failed: &str) -> String {
    let requested = record
        .deployments
        .iter()
        .chain(record.finished.iter())
        .any(|d| d.id() == failed && d.rollback_requested);
    if requested {
        format!("Rolling back deployment {failed}: a rollback was requested.")
    } else {
        format!("Rolling back deployment {failed}: the deployment circuit breaker tripped.")
    }
}

fn service_not_active() -> ApiError {
    ApiError::new("ServiceNotActiveException", 400, "Service was not ACTIVE.")
}

pub(crate) fn service_not_found() -> ApiError {
    ApiError::new("ServiceNotFoundException", 400, "Service not found.")
}

#[cfg(test)]
mod tests;
