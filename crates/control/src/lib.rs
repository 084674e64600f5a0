//! The control plane: every ECS operation as a state transition over the store.
//!
//! *Architecture invariant:* nothing here reads the wall clock or invents
//! randomness. The time of a request and fresh ids come in through [`Clock`]
//! and [`IdSource`], so a simulation can drive the same code in virtual time.
//!
//! *API boundary:* this crate speaks typed requests and responses
//! ([`flotilla_types::ecs::EcsRequest`] / `EcsResponse`) and [`ApiError`]; it
//! knows nothing of HTTP, JSON framing or signatures.

use std::sync::Arc;

use flotilla_store::Store;
use flotilla_types::arn::Scope;
use flotilla_types::ecs::{EcsRequest, EcsResponse};
use flotilla_types::flotilla::{FlotillaRequest, FlotillaResponse};
use flotilla_types::ApiError;

pub use agent_channel::{AgentEvent, AgentInstance, AgentRefusal, AgentWatch, PAYLOAD_TASKS_MAX};
pub use capacity_providers::INACTIVE_CAPACITY_PROVIDER_RETENTION_MS;
pub use instances::{DEREGISTERED_INSTANCE_RETENTION_MS, TASK_SUBNETS_CIDR};
pub use services::reconcile::ServiceScheduler;
pub use services::{SchedulerSettings, AGENT_LOST_TIMEOUT_MS};
pub use supervisor::{LoopReport, RestartPolicy, Supervisor};
pub use tasks::STOPPED_TASK_RETENTION_MS;

mod account_settings;
mod agent_channel;
mod agent_router;
pub mod app_autoscaling;
mod attributes;
mod blanks;
mod capacity_providers;
pub mod cloudwatch;
mod clusters;
mod combine;
mod explain;
pub mod host_groups;
pub mod input_members;
mod instances;
mod live_placement;
mod page;
mod placement;
mod records;
mod run_tokens;
pub mod services;
mod snapshot_cache;
mod spot;
mod strategy;
pub mod supervisor;
mod tag_set;
mod tags;
mod task_definitions;
mod tasks;
#[cfg(test)]
mod testing;
pub mod usage;

/// Source of the current time. The edge passes the wall clock; simulations
/// pass a virtual one.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// Source of fresh unique ids (UUID-shaped strings).
pub trait IdSource: Send + Sync {
    fn uuid(&self) -> String;
}

/// Who is calling: the identity the request was signed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub access_key_id: String,
    /// The IAM principal the access key belongs to, e.g. `arn:aws:iam::000000000000:root`.
    pub principal_arn: String,
}

/// The ECS control plane of one region and account.
pub struct Ecs {
    store: Arc<dyn Store>,
    scope: Scope,
    clock: Arc<dyn Clock>,
    // Task, instance and deployment ids are drawn from here; clusters and
    // task definitions are named by their users and need none.
    ids: Arc<dyn IdSource>,
    /// The base URL agents reach this server at, which DiscoverPollEndpoint
    /// hands out: the API endpoint is also the agent channel's.
    advertised_endpoint: Option<String>,
    /// Concurrent registrations of one family, combined into one commit.
    registrations: task_definitions::RegistrationQueues,
    /// Concurrent RunTask calls of one cluster, combined into one placement and commit.
    launches: tasks::LaunchQueues,
    /// Instance records as placement last decoded them, by revision.
    instance_cache: snapshot_cache::InstanceCache,
    /// Store changes routed to the agent connections they concern.
    agent_router: agent_router::AgentRouter,
    /// Each cluster's placement state as its last launch left it.
    live_placement: live_placement::LivePlacement,
    /// Runs every background loop of the control plane, and restarts it
    /// when it panics.
    supervisor: Supervisor,
    /// The CloudWatch metrics store and the metrics clock.
    metrics: cloudwatch::Metrics,
    /// The latest usage each host's agent reported.
    usage: usage::UsageBook,
    /// What else publishes into CloudWatch each metrics minute.
    minute_sources: std::sync::Mutex<Vec<Arc<dyn flotilla_metrics::put::MinuteSource>>>,
    /// Which replica runs each singleton loop; this one alone runs all of
    /// them unless replicas share an etcd store.
    election: Arc<dyn flotilla_store::Election>,
    /// The target groups services register their tasks in, when the
    /// process runs a load balancer API.
    target_groups: std::sync::RwLock<Option<Arc<dyn services::target_groups::TargetGroups>>>,
}

impl Ecs {
    pub fn new(
        store: Arc<dyn Store>,
        scope: Scope,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
    ) -> Self {
        Self {
            store,
            scope,
            clock,
            ids,
            advertised_endpoint: None,
            registrations: Default::default(),
            launches: Default::default(),
            instance_cache: Default::default(),
            agent_router: Default::default(),
            live_placement: Default::default(),
            supervisor: Default::default(),
            metrics: Default::default(),
            usage: Default::default(),
            minute_sources: Default::default(),
            election: Arc::new(flotilla_store::SoleReplica::new("local")),
            target_groups: Default::default(),
        }
        .with_supervisor(Supervisor::default())
    }

    /// Runs the control plane's background loops under `supervisor`. Call
    /// before anything is started.
    pub fn with_supervisor(mut self, supervisor: Supervisor) -> Self {
        self.agent_router = agent_router::AgentRouter::new(supervisor.clone());
        self.live_placement = live_placement::LivePlacement::new(supervisor.clone());
        self.supervisor = supervisor;
        self
    }

    /// The supervisor every background loop of this control plane (and of
    /// the process around it) runs under.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Elects the replica that runs each singleton loop with `election`.
    pub fn with_election(mut self, election: Arc<dyn flotilla_store::Election>) -> Self {
        self.election = election;
        self
    }

    pub fn election(&self) -> &Arc<dyn flotilla_store::Election> {
        &self.election
    }

    /// Starts the service scheduler (`run_service_scheduler`) under the
    /// supervisor, so that a panic in a pass restarts it rather than
    /// silently ending all service reconciliation, on the replica that
    /// leads it.
    pub fn start_service_scheduler(self: &Arc<Self>, settings: SchedulerSettings) {
        let ecs = Arc::clone(self);
        let election = Arc::clone(&self.election);
        self.supervisor
            .spawn_led("service_scheduler", election, move || {
                Arc::clone(&ecs).run_service_scheduler(settings.clone())
            });
    }

    /// Uses `metrics` (a store on disk, a time scale for tests) for the
    /// CloudWatch API, the published usage and the alarms.
    pub fn with_metrics(mut self, metrics: cloudwatch::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Publishes what `source` gives into CloudWatch each metrics minute,
    /// beside the control plane's own figures.
    pub fn add_minute_source(&self, source: Arc<dyn flotilla_metrics::put::MinuteSource>) {
        self.minute_sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(source);
    }

    /// Lets services with `loadBalancers` register their tasks in `groups`.
    pub fn set_target_groups(&self, groups: Arc<dyn services::target_groups::TargetGroups>) {
        *self
            .target_groups
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(groups);
    }

    pub(crate) fn target_groups(&self) -> Option<Arc<dyn services::target_groups::TargetGroups>> {
        self.target_groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sets the base URL (e.g. `http://10.0.0.5:8440`) that
    /// DiscoverPollEndpoint tells agents to connect to.
    pub fn with_advertised_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.advertised_endpoint = Some(endpoint.into());
        self
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Seconds since the epoch, as ECS's wire timestamps carry them.
    fn now_seconds(&self) -> f64 {
        self.clock.now_ms() as f64 / 1000.0
    }

    /// Carries out one of Flotilla's own operations (`FlotillaV1.*`), which
    /// ECS does not have.
    pub async fn handle_flotilla(
        &self,
        _caller: &Caller,
        request: FlotillaRequest,
    ) -> Result<FlotillaResponse, ApiError> {
        Ok(match request {
            FlotillaRequest::ExplainPlacement(r) => {
                FlotillaResponse::ExplainPlacement(self.explain_placement(r)?)
            }
            FlotillaRequest::ReclaimSpotCapacity(r) => {
                FlotillaResponse::ReclaimSpotCapacity(self.reclaim_spot_capacity(r).await?)
            }
        })
    }

    /// Carries out one request.
    pub async fn handle(
        &self,
        caller: &Caller,
        mut request: EcsRequest,
    ) -> Result<EcsResponse, ApiError> {
        if input_members::members_of(request.operation()).is_none() {
            return Err(unsupported_operation(request.operation()));
        }
        blanks::clear(&mut request);
        input_members::refuse_unsupported(&request)?;
        if let Some(member) = request.missing_required() {
            return Err(ApiError::invalid_parameter(format!(
                "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
            )));
        }
        use EcsRequest as Q;
        use EcsResponse as R;
        Ok(match request {
            Q::CreateCluster(r) => R::CreateCluster(self.create_cluster(r).await?),
            Q::DescribeClusters(r) => R::DescribeClusters(self.describe_clusters(r)?),
            Q::ListClusters(r) => R::ListClusters(self.list_clusters(r)?),
            Q::DeleteCluster(r) => R::DeleteCluster(self.delete_cluster(r).await?),
            Q::UpdateCluster(r) => R::UpdateCluster(self.update_cluster(r).await?),
            Q::UpdateClusterSettings(r) => {
                R::UpdateClusterSettings(self.update_cluster_settings(r).await?)
            }
            Q::PutClusterCapacityProviders(r) => {
                R::PutClusterCapacityProviders(self.put_cluster_capacity_providers(r).await?)
            }
            Q::CreateCapacityProvider(r) => {
                R::CreateCapacityProvider(self.create_capacity_provider(r).await?)
            }
            Q::DescribeCapacityProviders(r) => {
                R::DescribeCapacityProviders(self.describe_capacity_providers(r)?)
            }
            Q::UpdateCapacityProvider(r) => {
                R::UpdateCapacityProvider(self.update_capacity_provider(r).await?)
            }
            Q::DeleteCapacityProvider(r) => {
                R::DeleteCapacityProvider(self.delete_capacity_provider(r).await?)
            }
            Q::RegisterTaskDefinition(r) => {
                R::RegisterTaskDefinition(self.register_task_definition(caller, r).await?)
            }
            Q::DescribeTaskDefinition(r) => {
                R::DescribeTaskDefinition(self.describe_task_definition(r)?)
            }
            Q::ListTaskDefinitions(r) => R::ListTaskDefinitions(self.list_task_definitions(r)?),
            Q::ListTaskDefinitionFamilies(r) => {
                R::ListTaskDefinitionFamilies(self.list_task_definition_families(r)?)
            }
            Q::DeregisterTaskDefinition(r) => {
                R::DeregisterTaskDefinition(self.deregister_task_definition(r).await?)
            }
            Q::DeleteTaskDefinitions(r) => {
                R::DeleteTaskDefinitions(self.delete_task_definitions(r).await?)
            }
            Q::RegisterContainerInstance(r) => {
                R::RegisterContainerInstance(self.register_container_instance(r).await?)
            }
            Q::DeregisterContainerInstance(r) => {
                R::DeregisterContainerInstance(self.deregister_container_instance(r).await?)
            }
            Q::DescribeContainerInstances(r) => {
                R::DescribeContainerInstances(self.describe_container_instances(r)?)
            }
            Q::ListContainerInstances(r) => {
                R::ListContainerInstances(self.list_container_instances(r)?)
            }
            Q::UpdateContainerInstancesState(r) => {
                R::UpdateContainerInstancesState(self.update_container_instances_state(r).await?)
            }
            Q::DiscoverPollEndpoint(r) => R::DiscoverPollEndpoint(self.discover_poll_endpoint(r)?),
            Q::RunTask(r) => R::RunTask(self.run_task(r).await?),
            Q::StartTask(r) => R::StartTask(self.start_task(r).await?),
            Q::StopTask(r) => R::StopTask(self.stop_task(r).await?),
            Q::DescribeTasks(r) => R::DescribeTasks(self.describe_tasks(r)?),
            Q::ListTasks(r) => R::ListTasks(self.list_tasks(r)?),
            Q::SubmitTaskStateChange(r) => {
                R::SubmitTaskStateChange(self.submit_task_state_change(r).await?)
            }
            Q::SubmitContainerStateChange(r) => {
                R::SubmitContainerStateChange(self.submit_container_state_change(r).await?)
            }
            Q::TagResource(r) => R::TagResource(self.tag_resource(r).await?),
            Q::UntagResource(r) => R::UntagResource(self.untag_resource(r).await?),
            Q::ListTagsForResource(r) => R::ListTagsForResource(self.list_tags_for_resource(r)?),
            Q::PutAccountSetting(r) => {
                R::PutAccountSetting(self.put_account_setting(caller, r).await?)
            }
            Q::PutAccountSettingDefault(r) => {
                R::PutAccountSettingDefault(self.put_account_setting_default(r).await?)
            }
            Q::ListAccountSettings(r) => {
                R::ListAccountSettings(self.list_account_settings(caller, r)?)
            }
            Q::DeleteAccountSetting(r) => {
                R::DeleteAccountSetting(self.delete_account_setting(caller, r).await?)
            }
            Q::PutAttributes(r) => R::PutAttributes(self.put_attributes(r).await?),
            Q::DeleteAttributes(r) => R::DeleteAttributes(self.delete_attributes(r).await?),
            Q::ListAttributes(r) => R::ListAttributes(self.list_attributes(r)?),
            Q::CreateService(r) => R::CreateService(self.create_service(caller, r).await?),
            Q::UpdateService(r) => R::UpdateService(self.update_service(r).await?),
            Q::DeleteService(r) => R::DeleteService(self.delete_service(r).await?),
            Q::DescribeServices(r) => R::DescribeServices(self.describe_services(r)?),
            Q::ListServices(r) => R::ListServices(self.list_services(r)?),
            Q::ListServiceDeployments(r) => {
                R::ListServiceDeployments(self.list_service_deployments(r)?)
            }
            Q::DescribeServiceDeployments(r) => {
                R::DescribeServiceDeployments(self.describe_service_deployments(r)?)
            }
            Q::DescribeServiceRevisions(r) => {
                R::DescribeServiceRevisions(self.describe_service_revisions(r)?)
            }
            Q::CreateTaskSet(r) => R::CreateTaskSet(self.create_task_set(r).await?),
            Q::UpdateTaskSet(r) => R::UpdateTaskSet(self.update_task_set(r).await?),
            Q::DeleteTaskSet(r) => R::DeleteTaskSet(self.delete_task_set(r).await?),
            Q::DescribeTaskSets(r) => R::DescribeTaskSets(self.describe_task_sets(r)?),
            Q::UpdateServicePrimaryTaskSet(r) => {
                R::UpdateServicePrimaryTaskSet(self.update_service_primary_task_set(r).await?)
            }
            Q::StopServiceDeployment(r) => {
                R::StopServiceDeployment(self.stop_service_deployment(r).await?)
            }
            Q::ContinueServiceDeployment(r) => {
                R::ContinueServiceDeployment(self.continue_service_deployment(r).await?)
            }
            Q::UpdateContainerAgent(r) => {
                R::UpdateContainerAgent(self.update_container_agent(r).await?)
            }
            Q::UpdateTaskProtection(r) => {
                R::UpdateTaskProtection(self.update_task_protection(r).await?)
            }
            Q::GetTaskProtection(r) => R::GetTaskProtection(self.get_task_protection(r)?),
            other => return Err(unsupported_operation(other.operation())),
        })
    }
}

/// What an operation of ECS's model that Flotilla does not answer yet gets.
fn unsupported_operation(operation: &str) -> ApiError {
    ApiError::new(
        "UnsupportedFeatureException",
        400,
        format!("{operation} is not supported by this Flotilla server yet"),
    )
}
