//! Task sets and the EXTERNAL deployment controller: CreateTaskSet,
//! UpdateTaskSet, DeleteTaskSet, DescribeTaskSets,
//! UpdateServicePrimaryTaskSet, and CreateService / UpdateService /
//! DescribeServices for a service whose deployments its caller drives.
//!
//! A task set is a deployment that the caller sizes: a task definition and
//! how its tasks launch (a [`DeploymentSpec`], its own load balancers
//! included), an id `ecs-svc/` + 19 digits that its tasks carry as
//! `startedBy`, and a `scale` in percent of the service's desired count.
//! An EXTERNAL service has no deployments of its own; its task sets are
//! kept in its [`ServiceRecord`] (`task_sets`).
//!
//! ```text
//!  CreateTaskSet ──▶ ACTIVE ──UpdateServicePrimaryTaskSet──▶ PRIMARY
//!                     │  ▲                                    │
//!                     │  └──── another set becomes PRIMARY ───┘
//!  DeleteTaskSet ─────┴──────────────▶ DRAINING ──(its tasks gone, scheduler)──▶ removed
//!
//!  computedDesiredCount = ⌈desiredCount × scale / 100⌉ (0 once DRAINING)
//! ```
//!
//! The API writes only what the caller asked for (a set, its scale, which
//! is PRIMARY, DRAINING); the scheduler (`reconcile/task_sets.rs`) keeps
//! each set at its computed count, keeps its counts and `stabilityStatus`,
//! and removes drained sets, deciding from the task records every pass.

use flotilla_store::Txn;
use flotilla_types::ecs::*;
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use super::{
    check_client_token, check_service_name, deployment_id, resolve_configuration, service_capacity,
    service_not_active, service_not_found, DeploymentSpec, ServiceRecord, Told,
};
use crate::records::{self, keys, Attempt};
use crate::Ecs;

/// Task sets a service holds at once, DRAINING ones included, as ECS
/// limits them.
pub const TASK_SETS_PER_SERVICE_MAX: usize = 5;
/// Load balancers one task set registers with, as ECS limits them.
pub const LOAD_BALANCERS_PER_TASK_SET_MAX: usize = 1;
const SCALE_PERCENT_MAX: f64 = 100.0;

pub const TASK_SET_PRIMARY: &str = "PRIMARY";
pub const TASK_SET_ACTIVE: &str = "ACTIVE";
pub const TASK_SET_DRAINING: &str = "DRAINING";

/// Why CreateService and UpdateService refuse the CODE_DEPLOY controller.
pub const CODE_DEPLOY_REFUSED: &str = "Deployment controller CODE_DEPLOY is not supported by this Flotilla server: AWS CodeDeploy is not available here. For blue/green deployments use the ECS deployment controller with deploymentConfiguration.strategy BLUE_GREEN (with loadBalancers[].advancedConfiguration), or the EXTERNAL deployment controller with task sets.";

const NOT_EXTERNAL: &str = "Amazon ECS only supports task set management on services configured to use external deployment controllers.";

/// One task set as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSetRecord {
    /// The wire shape, tags included. The scheduler keeps its counts,
    /// `computedDesiredCount` and `stabilityStatus` up to date.
    pub task_set: TaskSet,
    /// How its tasks launch. `load_balancers` is always set (empty for
    /// none), so that its tasks never take another's.
    pub spec: DeploymentSpec,
    /// The clientToken it was created with: a CreateTaskSet repeating it is
    /// a retry, answered with this set.
    #[serde(default)]
    pub client_token: Option<String>,
}

impl TaskSetRecord {
    pub fn id(&self) -> &str {
        self.task_set.id.as_deref().unwrap_or_default()
    }

    pub fn status(&self) -> &str {
        self.task_set.status.as_deref().unwrap_or(TASK_SET_ACTIVE)
    }

    pub fn is_draining(&self) -> bool {
        self.status() == TASK_SET_DRAINING
    }

    /// Its scale, in percent of the service's desired count.
    pub fn scale_percent(&self) -> f64 {
        self.task_set
            .scale
            .as_ref()
            .and_then(|s| s.value)
            .unwrap_or(0.0)
    }

    /// Whether a request naming `given` (an id or an ARN) names it.
    fn named(&self, given: &str) -> bool {
        let given = given.trim();
        !given.is_empty()
            && (given == self.id() || Some(given) == self.task_set.task_set_arn.as_deref())
    }

    /// Its tasks' number for a service desired count: ⌈desired × scale⌉,
    /// none once it is DRAINING.
    pub fn computed_desired_count(&self, service_desired: i32) -> i32 {
        if self.is_draining() {
            return 0;
        }
        computed_desired_count(service_desired, self.scale_percent())
    }

    /// Sets its computed count; one that changes makes it STABILIZING.
    pub fn set_computed_desired_count(&mut self, count: i32, now_seconds: f64) {
        if self.task_set.computed_desired_count == Some(count) {
            return;
        }
        self.task_set.computed_desired_count = Some(count);
        self.set_stability(StabilityStatus::Stabilizing, now_seconds);
    }

    /// Sets its stability, and since when, if it changed.
    pub fn set_stability(&mut self, stability: StabilityStatus, now_seconds: f64) {
        if self.task_set.stability_status != Some(stability) {
            self.task_set.stability_status = Some(stability);
            self.task_set.stability_status_at = Some(now_seconds);
        }
    }

    fn present(&self, include_tags: bool) -> TaskSet {
        let mut task_set = self.task_set.clone();
        if !include_tags {
            task_set.tags = None;
        }
        task_set
    }
}

/// ⌈desired × scale / 100⌉, as ECS computes a task set's count.
pub fn computed_desired_count(service_desired: i32, scale_percent: f64) -> i32 {
    let tasks = f64::from(service_desired.max(0)) * scale_percent / 100.0;
    // A product a hair above a whole number is that number.
    (tasks - 1e-9).ceil().max(0.0) as i32
}

/// Whether a request's deployment controller is EXTERNAL.
pub fn is_external(controller: Option<&DeploymentController>) -> bool {
    controller.and_then(|c| c.r#type) == Some(DeploymentControllerType::External)
}

/// A service keeps the deployment controller it was created with.
pub fn check_controller_kept(
    record: &ServiceRecord,
    given: Option<&DeploymentController>,
) -> Result<(), ApiError> {
    let Some(kind) = given.and_then(|c| c.r#type) else {
        return Ok(());
    };
    let current = if record.is_external() {
        DeploymentControllerType::External
    } else {
        DeploymentControllerType::Ecs
    };
    if kind == current {
        return Ok(());
    }
    Err(ApiError::invalid_parameter(format!(
        "Changing the deployment controller of a service from {} to {} is not supported by this Flotilla server: create a new service instead.",
        current.as_str(),
        kind.as_str()
    )))
}

fn check_scale(scale: Option<&Scale>) -> Result<f64, ApiError> {
    let Some(scale) = scale else {
        return Ok(0.0);
    };
    let value = scale.value.unwrap_or(0.0);
    if !value.is_finite() || !(0.0..=SCALE_PERCENT_MAX).contains(&value) {
        return Err(ApiError::invalid_parameter(format!(
            "scale value must be between 0 and 100 (a percentage of the service's desired count), got {value}"
        )));
    }
    Ok(value)
}

fn percent(value: f64) -> Scale {
    Scale {
        value: Some(value),
        unit: Some(ScaleUnit::Percent),
    }
}

fn task_set_not_found() -> ApiError {
    ApiError::new(
        "TaskSetNotFoundException",
        400,
        "The specified task set does not exist.",
    )
}

fn draining_refused(id: &str, what: &str) -> ApiError {
    ApiError::invalid_parameter(format!("The task set {id} is DRAINING: it cannot {what}."))
}

/// Refuses a member that an EXTERNAL service takes from its task sets.
fn blank(member: &str, set: bool) -> Result<(), ApiError> {
    if !set {
        return Ok(());
    }
    Err(ApiError::invalid_parameter(format!(
        "{member} must be blank: a service with the EXTERNAL deployment controller takes it from its task sets (CreateTaskSet)."
    )))
}

/// Refuses what UpdateService cannot change on an EXTERNAL service.
fn unchangeable(what: &str, set: bool) -> Result<(), ApiError> {
    if !set {
        return Ok(());
    }
    Err(ApiError::invalid_parameter(format!(
        "Unable to update {what} on services with a EXTERNAL deployment controller. Create a new task set with it instead."
    )))
}

/// What an EXTERNAL service's deployment configuration may hold: the
/// bounds its sets' replacements keep to, nothing that decides a rollout.
fn check_external_configuration(given: Option<&DeploymentConfiguration>) -> Result<(), ApiError> {
    let Some(given) = given else {
        return Ok(());
    };
    let breaker = given.deployment_circuit_breaker.as_ref();
    if breaker.and_then(|b| b.enable) == Some(true) {
        return Err(ApiError::invalid_parameter(
            "The deployment circuit breaker can only be used with the ECS deployment controller.",
        ));
    }
    if given.alarms.as_ref().and_then(|a| a.enable) == Some(true) {
        return Err(ApiError::invalid_parameter(
            "Deployment alarms can only be used with the ECS deployment controller.",
        ));
    }
    if let Some(strategy) = given.strategy.filter(|s| *s != DeploymentStrategy::Rolling) {
        return Err(ApiError::invalid_parameter(format!(
            "Deployment strategy {} can only be used with the ECS deployment controller.",
            strategy.as_str()
        )));
    }
    Ok(())
}

impl ServiceRecord {
    /// The launch spec of its task set `id`, if it has one.
    pub fn task_set_spec(&self, id: Option<&str>) -> Option<&DeploymentSpec> {
        let id = id?;
        self.task_sets
            .iter()
            .find(|s| s.id() == id)
            .map(|s| &s.spec)
    }

    pub fn primary_task_set(&self) -> Option<&super::task_sets::TaskSetRecord> {
        self.task_sets
            .iter()
            .find(|s| s.status() == TASK_SET_PRIMARY)
    }

    fn task_set_named(&mut self, given: &str) -> Result<&mut TaskSetRecord, ApiError> {
        self.task_sets
            .iter_mut()
            .find(|s| s.named(given))
            .ok_or_else(task_set_not_found)
    }

    /// Brings every set's computed count to the service's desired count.
    fn recompute_task_sets(&mut self, now_seconds: f64) {
        let desired = self.service.desired_count.unwrap_or(0);
        for set in &mut self.task_sets {
            let count = set.computed_desired_count(desired);
            set.set_computed_desired_count(count, now_seconds);
        }
    }
}

/// DescribeServices of an EXTERNAL service: its task sets, and the fields
/// a task set decides taken from the PRIMARY one (none without one), as
/// ECS shows them.
pub(crate) fn present_external(service: &mut Service, record: &ServiceRecord, include_tags: bool) {
    service.task_sets = Some(
        record
            .task_sets
            .iter()
            .map(|s| s.present(include_tags))
            .collect(),
    );
    let primary = record.primary_task_set().map(|s| &s.task_set);
    service.task_definition = primary.and_then(|s| s.task_definition.clone());
    service.launch_type = primary.and_then(|s| s.launch_type);
    service.capacity_provider_strategy = primary.and_then(|s| s.capacity_provider_strategy.clone());
    service.platform_version = primary.and_then(|s| s.platform_version.clone());
    service.network_configuration = primary.and_then(|s| s.network_configuration.clone());
    service.load_balancers = Some(
        primary
            .and_then(|s| s.load_balancers.clone())
            .unwrap_or_default(),
    );
    service.service_registries = Some(
        primary
            .and_then(|s| s.service_registries.clone())
            .unwrap_or_default(),
    );
}

impl Ecs {
    fn task_set_arn(&self, cluster: &str, service: &str, id: &str) -> String {
        self.scope
            .arn("ecs", &format!("task-set/{cluster}/{service}/{id}"))
    }

    /// The cluster and service a task set request names. The service must
    /// exist (DRAINING or INACTIVE ones too, for `any_status`) and be EXTERNAL.
    fn task_set_service(
        &self,
        cluster: Option<&str>,
        service: Option<&str>,
        any_status: bool,
    ) -> Result<(String, ServiceRecord), ApiError> {
        let cluster = self.active_cluster_name(cluster)?;
        let name = self
            .service_name_in(&cluster, service.unwrap_or_default())
            .ok_or_else(service_not_found)?;
        let record = match self.get_service(&cluster, &name)? {
            Some(found) => found.value,
            None => match self.find_service(&cluster, &name)? {
                Some(inactive) if any_status => inactive,
                Some(_) => return Err(service_not_active()),
                None => return Err(service_not_found()),
            },
        };
        if !record.is_external() {
            return Err(ApiError::invalid_parameter(NOT_EXTERNAL));
        }
        if !any_status && record.status() != super::SERVICE_ACTIVE {
            return Err(service_not_active());
        }
        Ok((cluster, record))
    }

    /// Changes a stored EXTERNAL service under its revision, retrying on
    /// conflict; `change` sees the record as just read and returns what the
    /// caller gets. Nothing is written when it changes nothing.
    async fn change_external_service<T: Clone>(
        &self,
        cluster: &str,
        name: &str,
        mut txn_extra: impl FnMut(Txn) -> Result<Txn, ApiError>,
        change: impl Fn(&mut ServiceRecord) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let key = keys::service(cluster, name);
        records::mutate(self.store.as_ref(), || {
            let Some(found) = self.get_service(cluster, name)? else {
                return Err(service_not_found());
            };
            let mut record = found.value.clone();
            if !record.is_external() {
                return Err(ApiError::invalid_parameter(NOT_EXTERNAL));
            }
            let answer = change(&mut record)?;
            if record == found.value {
                return Ok(Attempt::Done(answer));
            }
            let txn = txn_extra(Txn::new())?
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, answer))
        })
        .await
    }

    /// CreateService with the EXTERNAL deployment controller: no task
    /// definition and no deployment; its task sets come later.
    pub(crate) async fn create_external_service(
        &self,
        caller: &crate::Caller,
        request: CreateServiceRequest,
    ) -> Result<CreateServiceResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let name = request.service_name.clone().unwrap_or_default();
        check_service_name(&name)?;
        if request.scheduling_strategy == Some(SchedulingStrategy::Daemon) {
            return Err(ApiError::invalid_parameter(
                "The DAEMON scheduling strategy is not supported by services with the EXTERNAL deployment controller.",
            ));
        }
        if let Some(token) = request.client_token.as_deref() {
            check_client_token(token)?;
        }
        if request
            .task_definition
            .as_deref()
            .is_some_and(|t| !t.is_empty())
        {
            return Err(ApiError::invalid_parameter("TaskDefinition must be blank."));
        }
        blank("launchType", request.launch_type.is_some())?;
        let non_empty = |list: Option<usize>| list.is_some_and(|n| n > 0);
        blank(
            "capacityProviderStrategy",
            non_empty(request.capacity_provider_strategy.as_ref().map(Vec::len)),
        )?;
        blank(
            "loadBalancers",
            non_empty(request.load_balancers.as_ref().map(Vec::len)),
        )?;
        blank(
            "serviceRegistries",
            non_empty(request.service_registries.as_ref().map(Vec::len)),
        )?;
        blank(
            "networkConfiguration",
            request.network_configuration.is_some(),
        )?;
        let desired =
            match request.desired_count {
                None => return Err(ApiError::invalid_parameter(
                    "desiredCount is required for services with the REPLICA scheduling strategy.",
                )),
                Some(count) if count < 0 => {
                    return Err(ApiError::invalid_parameter(
                        "desiredCount must not be negative.",
                    ))
                }
                Some(count) => count,
            };
        if request
            .health_check_grace_period_seconds
            .is_some_and(|g| g < 0)
        {
            return Err(ApiError::invalid_parameter(
                "healthCheckGracePeriodSeconds must not be negative.",
            ));
        }
        check_external_configuration(request.deployment_configuration.as_ref())?;
        let configuration =
            resolve_configuration(request.deployment_configuration.as_ref(), None, false)?;
        let tags = request.tags.clone().unwrap_or_default();
        crate::tags::check_tags(&tags)?;
        let now_seconds = self.now_seconds();
        let service = Service {
            service_arn: Some(self.service_arn(&cluster, &name)),
            service_name: Some(name.clone()),
            cluster_arn: Some(self.cluster_arn(&cluster)),
            status: Some(super::SERVICE_ACTIVE.to_owned()),
            desired_count: Some(desired),
            running_count: Some(0),
            pending_count: Some(0),
            deployment_configuration: Some(configuration),
            role_arn: request.role.clone(),
            created_at: Some(now_seconds),
            placement_constraints: Some(request.placement_constraints.clone().unwrap_or_default()),
            placement_strategy: Some(request.placement_strategy.clone().unwrap_or_default()),
            health_check_grace_period_seconds: request.health_check_grace_period_seconds,
            scheduling_strategy: Some(SchedulingStrategy::Replica),
            deployment_controller: Some(DeploymentController {
                r#type: Some(DeploymentControllerType::External),
            }),
            tags: Some(tags),
            created_by: Some(caller.principal_arn.clone()),
            enable_ecs_managed_tags: Some(request.enable_ecs_managed_tags.unwrap_or(false)),
            propagate_tags: Some(request.propagate_tags.unwrap_or(PropagateTags::None)),
            enable_execute_command: Some(request.enable_execute_command.unwrap_or(false)),
            availability_zone_rebalancing: Some(
                request
                    .availability_zone_rebalancing
                    .unwrap_or(AvailabilityZoneRebalancing::Enabled),
            ),
            ..Default::default()
        };
        let record = ServiceRecord {
            service,
            cluster: cluster.clone(),
            name: name.clone(),
            client_token: request.client_token.clone(),
            told: Told::default(),
            ..Default::default()
        };
        let key = keys::service(&cluster, &name);
        let created = records::mutate(self.store.as_ref(), || {
            if let Some(existing) = self.get_service(&cluster, &name)? {
                let retried = existing.value.status() == super::SERVICE_ACTIVE
                    && request.client_token.is_some()
                    && existing.value.client_token == request.client_token;
                if retried {
                    return Ok(Attempt::Done(existing.value));
                }
                return Err(ApiError::invalid_parameter(
                    "Creation of service was not idempotent.",
                ));
            }
            let txn = Txn::new()
                .expect(&key, 0)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, record.clone()))
        })
        .await?;
        Ok(CreateServiceResponse {
            service: Some(self.present_service(&created, true)),
        })
    }

    /// UpdateService of an EXTERNAL service: what ECS lets it change there
    /// (desired count, placement, grace period, tagging, the deployment
    /// bounds); what a task set decides needs a new task set.
    pub(crate) async fn update_external_service(
        &self,
        request: UpdateServiceRequest,
    ) -> Result<UpdateServiceResponse, ApiError> {
        let non_empty = |list: Option<usize>| list.is_some_and(|n| n > 0);
        unchangeable(
            "task definition",
            request
                .task_definition
                .as_deref()
                .is_some_and(|t| !t.is_empty()),
        )?;
        unchangeable(
            "network configuration",
            request.network_configuration.is_some(),
        )?;
        unchangeable(
            "load balancers",
            non_empty(request.load_balancers.as_ref().map(Vec::len)),
        )?;
        unchangeable(
            "capacity provider strategy",
            non_empty(request.capacity_provider_strategy.as_ref().map(Vec::len)),
        )?;
        unchangeable(
            "service registries",
            non_empty(request.service_registries.as_ref().map(Vec::len)),
        )?;
        if request.force_new_deployment == Some(true) {
            return Err(ApiError::invalid_parameter(
                "Unable to force a new deployment on services with a EXTERNAL deployment controller. Create a new task set instead.",
            ));
        }
        if request.desired_count.is_some_and(|c| c < 0) {
            return Err(ApiError::invalid_parameter(
                "desiredCount must not be negative.",
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
        check_external_configuration(request.deployment_configuration.as_ref())?;
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let name = self
            .service_name_in(&cluster, request.service.as_deref().unwrap_or_default())
            .ok_or_else(service_not_found)?;
        let now_seconds = self.now_seconds();
        let updated = self
            .change_external_service(&cluster, &name, Ok, |record| {
                if record.status() != super::SERVICE_ACTIVE {
                    return Err(service_not_active());
                }
                let configuration = resolve_configuration(
                    request.deployment_configuration.as_ref(),
                    record.service.deployment_configuration.as_ref(),
                    false,
                )?;
                let service = &mut record.service;
                service.deployment_configuration = Some(configuration);
                if let Some(count) = request.desired_count {
                    service.desired_count = Some(count);
                }
                if let Some(grace) = request.health_check_grace_period_seconds {
                    service.health_check_grace_period_seconds = Some(grace);
                }
                if let Some(constraints) = &request.placement_constraints {
                    service.placement_constraints = Some(constraints.clone());
                }
                if let Some(strategy) = &request.placement_strategy {
                    service.placement_strategy = Some(strategy.clone());
                }
                if let Some(managed) = request.enable_ecs_managed_tags {
                    service.enable_ecs_managed_tags = Some(managed);
                }
                if let Some(propagate) = request.propagate_tags {
                    service.propagate_tags = Some(propagate);
                }
                if let Some(enable) = request.enable_execute_command {
                    service.enable_execute_command = Some(enable);
                }
                if request.availability_zone_rebalancing.is_some() {
                    service.availability_zone_rebalancing = request.availability_zone_rebalancing;
                }
                record.recompute_task_sets(now_seconds);
                record.steady = false;
                Ok(record.clone())
            })
            .await?;
        Ok(UpdateServiceResponse {
            service: Some(self.present_service(&updated, true)),
        })
    }

    pub(crate) async fn create_task_set(
        &self,
        request: CreateTaskSetRequest,
    ) -> Result<CreateTaskSetResponse, ApiError> {
        let cluster_record = self.active_cluster(request.cluster.as_deref())?.value;
        let (cluster, service) = self.task_set_service(
            request.cluster.as_deref(),
            request.service.as_deref(),
            false,
        )?;
        let name = service.name.clone();
        if let Some(token) = request.client_token.as_deref() {
            check_client_token(token)?;
            let retried = service
                .task_sets
                .iter()
                .find(|s| s.client_token.as_deref() == Some(token));
            if let Some(retried) = retried {
                return Ok(CreateTaskSetResponse {
                    task_set: Some(retried.present(true)),
                });
            }
        }
        let scale = check_scale(request.scale.as_ref())?;
        let load_balancers = request.load_balancers.clone().unwrap_or_default();
        if load_balancers.len() > LOAD_BALANCERS_PER_TASK_SET_MAX {
            return Err(ApiError::invalid_parameter(
                "CreateTaskSet cannot have more than 1 load balancer.",
            ));
        }
        if load_balancers
            .iter()
            .any(|l| l.advanced_configuration.is_some())
        {
            return Err(ApiError::invalid_parameter(
                "advancedConfiguration belongs to services with the ECS deployment controller and the BLUE_GREEN strategy; a task set takes none.",
            ));
        }
        let tags = request.tags.clone().unwrap_or_default();
        crate::tags::check_tags(&tags)?;
        let (launch_type, capacity_provider_strategy) = service_capacity(
            &cluster_record,
            request.launch_type,
            request.capacity_provider_strategy.as_deref(),
            false,
        )?;
        let spec = DeploymentSpec {
            task_definition: request.task_definition.clone().unwrap_or_default(),
            launch_type,
            capacity_provider_strategy,
            network_configuration: request.network_configuration.clone(),
            placement_constraints: service
                .service
                .placement_constraints
                .clone()
                .unwrap_or_default(),
            placement_strategy: service
                .service
                .placement_strategy
                .clone()
                .unwrap_or_default(),
            enable_execute_command: service.service.enable_execute_command.unwrap_or(false),
            load_balancers: Some(load_balancers.clone()),
        };
        let spec = self.checked_spec(&cluster, &name, spec, None, &load_balancers)?;
        let id = deployment_id(&self.ids.uuid());
        let now_seconds = self.now_seconds();
        let desired = service.service.desired_count.unwrap_or(0);
        let task_set = TaskSetRecord {
            task_set: TaskSet {
                id: Some(id.clone()),
                task_set_arn: Some(self.task_set_arn(&cluster, &name, &id)),
                service_arn: Some(self.service_arn(&cluster, &name)),
                cluster_arn: Some(self.cluster_arn(&cluster)),
                external_id: request.external_id.clone(),
                status: Some(TASK_SET_ACTIVE.to_owned()),
                task_definition: Some(spec.task_definition.clone()),
                computed_desired_count: Some(computed_desired_count(desired, scale)),
                pending_count: Some(0),
                running_count: Some(0),
                created_at: Some(now_seconds),
                updated_at: Some(now_seconds),
                launch_type: spec.launch_type,
                capacity_provider_strategy: (!spec.capacity_provider_strategy.is_empty())
                    .then(|| spec.capacity_provider_strategy.clone()),
                network_configuration: spec.network_configuration.clone(),
                load_balancers: Some(load_balancers),
                service_registries: Some(request.service_registries.clone().unwrap_or_default()),
                scale: Some(percent(scale)),
                stability_status: Some(StabilityStatus::Stabilizing),
                stability_status_at: Some(now_seconds),
                tags: Some(tags),
                ..Default::default()
            },
            spec: spec.clone(),
            client_token: request.client_token.clone(),
        };
        let created = self
            .change_external_service(
                &cluster,
                &name,
                |txn| {
                    self.hold_capacity_providers(txn, &cluster, &spec.capacity_provider_strategy)
                },
                |record| {
                    if record.status() != super::SERVICE_ACTIVE {
                        return Err(service_not_active());
                    }
                    let token = request.client_token.as_deref();
                    let retried = record
                        .task_sets
                        .iter()
                        .find(|s| token.is_some() && s.client_token.as_deref() == token);
                    if let Some(retried) = retried {
                        return Ok(retried.clone());
                    }
                    if record.task_sets.len() >= TASK_SETS_PER_SERVICE_MAX {
                        return Err(ApiError::invalid_parameter(format!(
                            "{} deployments exist on the service. Unable to create new TaskSet since this exceeds the maximum limit.",
                            record.task_sets.len()
                        )));
                    }
                    let mut task_set = task_set.clone();
                    let count = task_set.computed_desired_count(record.service.desired_count.unwrap_or(0));
                    task_set.task_set.computed_desired_count = Some(count);
                    record.task_sets.push(task_set.clone());
                    record.steady = false;
                    Ok(task_set)
                },
            )
            .await?;
        Ok(CreateTaskSetResponse {
            task_set: Some(created.present(true)),
        })
    }

    pub(crate) async fn update_task_set(
        &self,
        request: UpdateTaskSetRequest,
    ) -> Result<UpdateTaskSetResponse, ApiError> {
        let (cluster, service) = self.task_set_service(
            request.cluster.as_deref(),
            request.service.as_deref(),
            false,
        )?;
        let scale = check_scale(request.scale.as_ref())?;
        let given = request.task_set.clone().unwrap_or_default();
        let now_seconds = self.now_seconds();
        let updated = self
            .change_external_service(&cluster, &service.name, Ok, |record| {
                let desired = record.service.desired_count.unwrap_or(0);
                let set = record.task_set_named(&given)?;
                if set.is_draining() {
                    return Err(draining_refused(set.id(), "be scaled"));
                }
                if set.scale_percent() == scale {
                    return Ok(set.clone());
                }
                set.task_set.scale = Some(percent(scale));
                set.task_set.updated_at = Some(now_seconds);
                let count = set.computed_desired_count(desired);
                set.set_computed_desired_count(count, now_seconds);
                let answer = set.clone();
                record.steady = false;
                Ok(answer)
            })
            .await?;
        Ok(UpdateTaskSetResponse {
            task_set: Some(updated.present(true)),
        })
    }

    pub(crate) async fn delete_task_set(
        &self,
        request: DeleteTaskSetRequest,
    ) -> Result<DeleteTaskSetResponse, ApiError> {
        let (cluster, service) =
            self.task_set_service(request.cluster.as_deref(), request.service.as_deref(), true)?;
        let given = request.task_set.clone().unwrap_or_default();
        let force = request.force.unwrap_or(false);
        let now_seconds = self.now_seconds();
        let deleted = self
            .change_external_service(&cluster, &service.name, Ok, |record| {
                let set = record.task_set_named(&given)?;
                if set.is_draining() {
                    return Ok(set.clone());
                }
                if !force && set.scale_percent() > 0.0 {
                    return Err(ApiError::invalid_parameter(format!(
                        "The task set {} cannot be deleted while it is scaled above 0: scale it to 0 first, or delete it with force.",
                        set.id()
                    )));
                }
                set.task_set.status = Some(TASK_SET_DRAINING.to_owned());
                set.task_set.updated_at = Some(now_seconds);
                set.set_computed_desired_count(0, now_seconds);
                let answer = set.clone();
                record.steady = false;
                Ok(answer)
            })
            .await?;
        Ok(DeleteTaskSetResponse {
            task_set: Some(deleted.present(true)),
        })
    }

    pub(crate) async fn update_service_primary_task_set(
        &self,
        request: UpdateServicePrimaryTaskSetRequest,
    ) -> Result<UpdateServicePrimaryTaskSetResponse, ApiError> {
        let (cluster, service) = self.task_set_service(
            request.cluster.as_deref(),
            request.service.as_deref(),
            false,
        )?;
        let given = request.primary_task_set.clone().unwrap_or_default();
        let now_seconds = self.now_seconds();
        let primary = self
            .change_external_service(&cluster, &service.name, Ok, |record| {
                let chosen = record.task_set_named(&given)?;
                if chosen.is_draining() {
                    return Err(draining_refused(chosen.id(), "become the primary task set"));
                }
                let id = chosen.id().to_owned();
                for set in &mut record.task_sets {
                    let status = if set.id() == id {
                        TASK_SET_PRIMARY
                    } else if set.status() == TASK_SET_PRIMARY {
                        TASK_SET_ACTIVE
                    } else {
                        continue;
                    };
                    if set.status() != status {
                        set.task_set.status = Some(status.to_owned());
                        set.task_set.updated_at = Some(now_seconds);
                    }
                }
                record.task_set_named(&id).cloned()
            })
            .await?;
        Ok(UpdateServicePrimaryTaskSetResponse {
            task_set: Some(primary.present(true)),
        })
    }

    pub(crate) fn describe_task_sets(
        &self,
        request: DescribeTaskSetsRequest,
    ) -> Result<DescribeTaskSetsResponse, ApiError> {
        let (cluster, record) =
            self.task_set_service(request.cluster.as_deref(), request.service.as_deref(), true)?;
        let include_tags = request
            .include
            .iter()
            .flatten()
            .any(|f| *f == TaskSetField::Tags);
        let wanted = request.task_sets.clone().unwrap_or_default();
        if wanted.is_empty() {
            return Ok(DescribeTaskSetsResponse {
                task_sets: Some(
                    record
                        .task_sets
                        .iter()
                        .map(|s| s.present(include_tags))
                        .collect(),
                ),
                failures: Some(Vec::new()),
            });
        }
        let mut task_sets = Vec::new();
        let mut failures = Vec::new();
        for given in &wanted {
            match record.task_sets.iter().find(|s| s.named(given)) {
                Some(set) => task_sets.push(set.present(include_tags)),
                None => failures.push(Failure {
                    arn: Some(if given.starts_with("arn:") {
                        given.clone()
                    } else {
                        self.task_set_arn(&cluster, &record.name, given)
                    }),
                    reason: Some("MISSING".to_owned()),
                    detail: None,
                }),
            }
        }
        Ok(DescribeTaskSetsResponse {
            task_sets: Some(task_sets),
            failures: Some(failures),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::computed_desired_count;

    #[test]
    fn computed_counts_round_up_as_ecs_does() {
        assert_eq!(computed_desired_count(4, 100.0), 4);
        assert_eq!(computed_desired_count(4, 50.0), 2);
        assert_eq!(computed_desired_count(3, 50.0), 2);
        assert_eq!(computed_desired_count(3, 33.3), 1);
        assert_eq!(computed_desired_count(10, 10.0), 1);
        assert_eq!(computed_desired_count(10, 10.5), 2);
        assert_eq!(computed_desired_count(7, 0.0), 0);
        assert_eq!(computed_desired_count(0, 100.0), 0);
        assert_eq!(computed_desired_count(1, 0.1), 1);
    }
}
