//! Container instances: RegisterContainerInstance, DeregisterContainerInstance,
//! DescribeContainerInstances, ListContainerInstances,
//! UpdateContainerInstancesState, DiscoverPollEndpoint.
//!
//! Each instance is one [`InstanceRecord`] under `keys::instance(cluster, id)`.
//! What the instance has left ([`Remaining`]) lives in the record and changes
//! only in the transaction that places a task on it or releases a stopped
//! task's reservation, conditional on the revision read, so concurrent
//! placements never overcommit it.
//!
//! Lifecycle: ACTIVE ⇄ DRAINING (UpdateContainerInstancesState) → INACTIVE
//! (DeregisterContainerInstance). An INACTIVE instance stays describable for
//! [`DEREGISTERED_INSTANCE_RETENTION_MS`], then
//! [`Ecs::collect_deregistered_instances`] forgets it and frees its task subnet.
//!
//! **External instances.** An agent started with `--external` registers the
//! attribute [`EXTERNAL_ATTRIBUTE`] (`ecs.capability.external`, no value
//! needed). Such an instance takes launch type EXTERNAL tasks only, and only
//! such instances take them; its generated `ec2InstanceId` starts with `mi-`
//! as ECS's managed instances do.
//!
//! **Task subnets.** Every instance gets its own /24 out of
//! [`TASK_SUBNETS_CIDR`] for awsvpc tasks, taken from a pool record at
//! `keys::TASK_SUBNETS` in the registration transaction, clear of the
//! networks its container engine already has; see [`task_subnets`].

use std::collections::{BTreeMap, BTreeSet};

use flotilla_store::Txn;
use flotilla_types::acs::conventions::{EXTERNAL_ATTRIBUTE, FARGATE_ATTRIBUTE};
use flotilla_types::ecs::*;
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::clusters::DEFAULT_CLUSTER;
use crate::page;
use crate::placement::{self, Remaining};
use crate::records::{self, keys, Attempt};
use crate::tasks::TaskRecord;
use crate::Ecs;

pub mod task_subnets;

use task_subnets::BlockedSubnets;
pub use task_subnets::{SubnetPool, TASK_SUBNETS_CIDR};

/// How long a deregistered instance stays describable as INACTIVE.
pub const DEREGISTERED_INSTANCE_RETENTION_MS: u64 = 60 * 60 * 1000;

/// Most instances one Describe call may name, as ECS allows.
const DESCRIBE_INSTANCES_MAX: usize = 100;
/// Most instances one UpdateContainerInstancesState call may name.
const UPDATE_INSTANCES_MAX: usize = 10;
const LIST_RESULTS_MAX: usize = 100;
/// Most attributes an instance may carry; the ECS agent sends about 60.
pub(crate) const ATTRIBUTES_PER_INSTANCE_MAX: usize = 256;
const ATTRIBUTE_NAME_LENGTH_MAX: usize = 128;
const ATTRIBUTE_VALUE_LENGTH_MAX: usize = 128;
/// Largest instanceIdentityDocument read.
const IDENTITY_DOCUMENT_BYTES_MAX: usize = 16 * 1024;
/// Most records one scan of a cluster reads before giving up.
pub const CLUSTER_SCAN_RECORDS_MAX: usize = 200_000;

/// Reason given to tasks stopped because their instance was force-deregistered.
pub const DEREGISTERED_STOP_REASON: &str = "Container instance deregistered";

/// A container instance as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// The wire shape, less what is computed when it is described
    /// (`remainingResources`, task counts).
    pub instance: ContainerInstance,
    pub cluster: String,
    pub instance_id: String,
    /// Source of truth for `remainingResources`.
    pub remaining: Remaining,
    /// Index of the instance's task subnet in the pool.
    pub task_subnet_index: u32,
    /// e.g. `100.64.3.0/24`.
    pub task_subnet_cidr: String,
    /// Last octets of the task subnet given to live awsvpc tasks.
    #[serde(default)]
    pub task_addresses_in_use: BTreeSet<u8>,
    /// The agent connection that currently speaks for this instance; a newer
    /// connection replaces it and the older one closes.
    #[serde(default)]
    pub agent_connection_id: Option<String>,
    /// When the agent last connected or disconnected (clock ms).
    #[serde(default)]
    pub agent_seen_at_ms: u64,
    #[serde(default)]
    pub deregistered_at_ms: Option<u64>,
    /// Per task group, how many tasks hold resources here: what placement's
    /// spread and distinctInstance count. Kept in step by the transactions
    /// that take and give back resources (RunTask, StartTask, a task's
    /// release, re-registration), so placement reads no task records.
    /// `None` on records written before it existed: placement then counts
    /// from the tasks, as it always did.
    #[serde(default)]
    pub task_group_counts: Option<BTreeMap<String, u32>>,
}

impl InstanceRecord {
    /// A task of `group` took resources here.
    pub fn count_task_in(&mut self, group: Option<&str>) {
        if let (Some(counts), Some(group)) = (self.task_group_counts.as_mut(), group) {
            *counts.entry(group.to_owned()).or_default() += 1;
        }
    }

    /// A task of `group` gave its resources back.
    pub fn uncount_task_in(&mut self, group: Option<&str>) {
        if let (Some(counts), Some(group)) = (self.task_group_counts.as_mut(), group) {
            if let Some(count) = counts.get_mut(group) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(group);
                }
            }
        }
    }

    pub fn status(&self) -> &str {
        self.instance.status.as_deref().unwrap_or("ACTIVE")
    }

    pub fn is_live(&self) -> bool {
        self.status() != "INACTIVE"
    }

    pub fn arn(&self) -> String {
        self.instance
            .container_instance_arn
            .clone()
            .unwrap_or_default()
    }

    pub fn is_external(&self) -> bool {
        self.attribute_pairs()
            .iter()
            .any(|(name, _)| name == EXTERNAL_ATTRIBUTE)
    }

    /// Whether the instance is a host of its cluster's Fargate pool, which
    /// users never see as a container instance.
    pub fn is_fargate(&self) -> bool {
        self.attribute_pairs()
            .iter()
            .any(|(name, _)| name == FARGATE_ATTRIBUTE)
    }

    pub fn attribute_pairs(&self) -> Vec<(String, Option<String>)> {
        self.instance
            .attributes
            .iter()
            .flatten()
            .map(|a| (a.name.clone().unwrap_or_default(), a.value.clone()))
            .collect()
    }

    pub fn attribute(&self, name: &str) -> Option<String> {
        self.instance
            .attributes
            .iter()
            .flatten()
            .find(|a| a.name.as_deref() == Some(name))
            .and_then(|a| a.value.clone())
    }

    /// Records a change: ECS bumps an instance's version on every one.
    pub fn touch(&mut self) {
        self.instance.version = Some(self.instance.version.unwrap_or(0) + 1);
    }

    /// The first three octets of the task subnet, e.g. `100.64.3`.
    pub fn subnet_prefix(&self) -> String {
        task_subnets::subnet_prefix(self.task_subnet_index)
    }
}

/// Task counts of one instance, computed from its tasks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCounts {
    pub running: i32,
    pub pending: i32,
}

/// 32 lowercase hex digits from a UUID-shaped id.
pub fn hex_id(uuid: &str) -> String {
    uuid.chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Reads every record under `prefix`, in key order, with its revision.
pub(crate) fn scan<T: serde::de::DeserializeOwned>(
    store: &dyn flotilla_store::Store,
    prefix: &str,
) -> Result<Vec<records::Versioned<T>>, ApiError> {
    scan_with(store, prefix, records::decode)
}

/// [`scan`], turning each entry into a `T` with `decode`.
pub(crate) fn scan_with<T>(
    store: &dyn flotilla_store::Store,
    prefix: &str,
    mut decode: impl FnMut(&flotilla_store::Entry) -> Result<T, ApiError>,
) -> Result<Vec<records::Versioned<T>>, ApiError> {
    let mut found = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list(prefix, after.as_deref(), flotilla_store::LIST_LIMIT_MAX)
            .map_err(records::store_error)?;
        for entry in &page.entries {
            found.push(records::Versioned {
                value: decode(entry)?,
                revision: entry.mod_revision,
            });
        }
        if found.len() > CLUSTER_SCAN_RECORDS_MAX {
            return Err(ApiError::server(format!(
                "more than {CLUSTER_SCAN_RECORDS_MAX} records under {prefix}; this server does not handle clusters that large"
            )));
        }
        match page.entries.last() {
            Some(last) if page.more => after = Some(last.key.clone()),
            _ => return Ok(found),
        }
    }
}

impl Ecs {
    pub(crate) fn fresh_hex_id(&self) -> String {
        hex_id(&self.ids.uuid())
    }

    pub(crate) fn instance_arn(&self, cluster: &str, instance_id: &str) -> String {
        self.scope.arn(
            "ecs",
            &format!("container-instance/{cluster}/{instance_id}"),
        )
    }

    /// The id of the instance a request names by ARN or id, checking that an
    /// ARN belongs to `cluster`. `None` when it cannot name an instance of it.
    pub(crate) fn instance_id_in(&self, cluster: &str, given: &str) -> Option<String> {
        self.resource_id_in("container-instance", cluster, given)
    }

    pub(crate) fn get_instance(
        &self,
        cluster: &str,
        instance_id: &str,
    ) -> Result<Option<records::Versioned<InstanceRecord>>, ApiError> {
        records::get(self.store.as_ref(), &keys::instance(cluster, instance_id))
    }

    pub(crate) fn instances_of(
        &self,
        cluster: &str,
    ) -> Result<Vec<records::Versioned<InstanceRecord>>, ApiError> {
        scan(self.store.as_ref(), &keys::instances_of(cluster))
    }

    /// Running and pending task counts of every instance of a cluster.
    pub(crate) fn task_counts_by_instance(
        &self,
        cluster: &str,
    ) -> Result<BTreeMap<String, TaskCounts>, ApiError> {
        let mut counts: BTreeMap<String, TaskCounts> = BTreeMap::new();
        for task in scan::<TaskRecord>(self.store.as_ref(), &keys::tasks_of(cluster))? {
            let entry = counts.entry(task.value.instance_id.clone()).or_default();
            match task.value.last_status() {
                "RUNNING" => entry.running += 1,
                "PROVISIONING" | "PENDING" | "ACTIVATING" => entry.pending += 1,
                _ => {}
            }
        }
        Ok(counts)
    }

    pub(crate) fn present_instance(
        &self,
        record: &InstanceRecord,
        counts: TaskCounts,
        include_tags: bool,
    ) -> ContainerInstance {
        let mut instance = record.instance.clone();
        instance.remaining_resources = Some(remaining_resources(
            &record.remaining,
            instance.registered_resources.as_deref(),
        ));
        instance.running_tasks_count = Some(counts.running);
        instance.pending_tasks_count = Some(counts.pending);
        // As ECS removes a trunk interface at deregistration.
        instance.attachments = Some(if record.is_live() {
            vec![task_subnets::attachment(record)]
        } else {
            Vec::new()
        });
        if !include_tags {
            instance.tags = None;
        }
        instance
    }

    pub(crate) async fn register_container_instance(
        &self,
        request: RegisterContainerInstanceRequest,
    ) -> Result<RegisterContainerInstanceResponse, ApiError> {
        let cluster = self.cluster_name(request.cluster.as_deref())?;
        if cluster == DEFAULT_CLUSTER && self.active_cluster(Some(&cluster)).is_err() {
            // ECS creates the default cluster for the first instance that joins it.
            self.create_cluster(CreateClusterRequest::default()).await?;
        }
        self.active_cluster(Some(&cluster))?;
        let (registered, base) =
            registered_resources(request.total_resources.as_deref().unwrap_or_default())?;
        let identity = identity_document(request.instance_identity_document.as_deref())?;
        // The provider need not exist yet: the instance belongs to it from
        // whenever it is created and associated with the cluster.
        let capacity_provider = identity
            .capacity_provider_name
            .clone()
            .filter(|name| !name.is_empty());
        if let Some(name) = &capacity_provider {
            crate::capacity_providers::check_name(name)?;
        }
        let attributes =
            instance_attributes(request.attributes.as_deref().unwrap_or_default(), &identity)?;
        let engine_subnets =
            BlockedSubnets::parse(identity.subnets_in_use.as_deref().unwrap_or_default())?;
        let tags = request.tags.clone().unwrap_or_default();
        crate::tags::check_tags(&tags)?;
        let now_ms = self.clock.now_ms();
        let stored = match request
            .container_instance_arn
            .as_deref()
            .filter(|a| !a.is_empty())
        {
            Some(given) => {
                let instance_id = self.instance_id_in(&cluster, given).ok_or_else(|| {
                    ApiError::invalid_parameter(format!(
                        "containerInstanceArn {given} does not name a container instance of cluster {cluster}"
                    ))
                })?;
                let key = keys::instance(&cluster, &instance_id);
                records::mutate(self.store.as_ref(), || {
                    let found = self.get_instance(&cluster, &instance_id)?.ok_or_else(|| {
                        ApiError::invalid_parameter(format!(
                            "Container instance {given} was not found in cluster {cluster}: register without containerInstanceArn"
                        ))
                    })?;
                    let mut record = found.value;
                    if !record.is_live() {
                        return Err(ApiError::client(format!(
                            "Container instance {given} was deregistered: register without containerInstanceArn to join again"
                        )));
                    }
                    // What the instance has left is what it now has less what
                    // its live tasks hold. Every placement and release writes
                    // this record, so the condition below covers the tasks read.
                    let mut remaining = base.clone();
                    let mut addresses = BTreeSet::new();
                    record.task_group_counts = Some(BTreeMap::new());
                    for task in scan::<TaskRecord>(self.store.as_ref(), &keys::tasks_of(&cluster))? {
                        if task.value.instance_id == instance_id && !task.value.released {
                            remaining.take(&mut addresses, &task.value.reservation);
                            record.count_task_in(task.value.task.group.as_deref());
                        }
                    }
                    record.remaining = remaining;
                    let mut txn = Txn::new().expect(&key, found.revision);
                    if engine_subnets.contains(record.task_subnet_index) && addresses.is_empty() {
                        // Another network of the engine took the subnet
                        // while the instance's own was missing: move it, as
                        // no task holds an address there. (With tasks there
                        // it stays: moving would strand them.)
                        let pool = records::get::<SubnetPool>(self.store.as_ref(), keys::TASK_SUBNETS)?;
                        let (mut next_pool, pool_revision) = match pool {
                            Some(found) => (found.value, found.revision),
                            None => (SubnetPool::default(), 0),
                        };
                        let index = next_pool
                            .take(&engine_subnets)
                            .ok_or_else(|| ApiError::client(next_pool.exhausted_message(&engine_subnets)))?;
                        next_pool.in_use.remove(&record.task_subnet_index);
                        record.task_subnet_index = index;
                        record.task_subnet_cidr = task_subnets::subnet_cidr(index);
                        txn = txn
                            .expect(keys::TASK_SUBNETS, pool_revision)
                            .put(keys::TASK_SUBNETS, records::encode(&next_pool));
                    }
                    record.task_addresses_in_use = addresses;
                    record.instance.registered_resources = Some(registered.clone());
                    record.instance.version_info = request.version_info.clone();
                    record.instance.attributes = Some(attributes.clone());
                    record.instance.capacity_provider_name = capacity_provider.clone();
                    if request.tags.is_some() {
                        record.instance.tags = Some(tags.clone());
                    }
                    record.touch();
                    let txn = txn.put(&key, records::encode(&record));
                    Ok(Attempt::Commit(txn, record))
                })
                .await?
            }
            None => {
                let instance_id = self.fresh_hex_id();
                let external = attributes
                    .iter()
                    .any(|a| a.name.as_deref() == Some(EXTERNAL_ATTRIBUTE));
                let ec2_instance_id = identity.instance_id.clone().unwrap_or_else(|| {
                    let hex = self.fresh_hex_id();
                    let tail = &hex[hex.len().saturating_sub(17)..];
                    if external {
                        format!("mi-{tail}")
                    } else {
                        format!("i-{tail}")
                    }
                });
                let key = keys::instance(&cluster, &instance_id);
                let instance = ContainerInstance {
                    container_instance_arn: Some(self.instance_arn(&cluster, &instance_id)),
                    ec2_instance_id: Some(ec2_instance_id),
                    version: Some(1),
                    version_info: request.version_info.clone(),
                    registered_resources: Some(registered.clone()),
                    status: Some("ACTIVE".to_owned()),
                    agent_connected: Some(false),
                    attributes: Some(attributes.clone()),
                    registered_at: Some(now_ms as f64 / 1000.0),
                    tags: Some(tags.clone()),
                    capacity_provider_name: capacity_provider.clone(),
                    ..Default::default()
                };
                records::mutate(self.store.as_ref(), || {
                    let pool = records::get::<SubnetPool>(self.store.as_ref(), keys::TASK_SUBNETS)?;
                    let (mut next_pool, pool_revision) = match pool {
                        Some(found) => (found.value, found.revision),
                        None => (SubnetPool::default(), 0),
                    };
                    let index = next_pool.take(&engine_subnets).ok_or_else(|| {
                        ApiError::client(next_pool.exhausted_message(&engine_subnets))
                    })?;
                    let record = InstanceRecord {
                        instance: instance.clone(),
                        cluster: cluster.clone(),
                        instance_id: instance_id.clone(),
                        remaining: base.clone(),
                        task_subnet_index: index,
                        task_subnet_cidr: task_subnets::subnet_cidr(index),
                        task_addresses_in_use: BTreeSet::new(),
                        agent_connection_id: None,
                        agent_seen_at_ms: 0,
                        deregistered_at_ms: None,
                        task_group_counts: Some(BTreeMap::new()),
                    };
                    let txn = Txn::new()
                        .expect(keys::TASK_SUBNETS, pool_revision)
                        .expect(&key, 0)
                        .put(keys::TASK_SUBNETS, records::encode(&next_pool))
                        .put(&key, records::encode(&record));
                    Ok(Attempt::Commit(txn, record))
                })
                .await?
            }
        };
        let counts = self
            .task_counts_by_instance(&cluster)?
            .get(&stored.instance_id)
            .copied()
            .unwrap_or_default();
        Ok(RegisterContainerInstanceResponse {
            container_instance: Some(self.present_instance(&stored, counts, true)),
        })
    }

    pub(crate) async fn deregister_container_instance(
        &self,
        request: DeregisterContainerInstanceRequest,
    ) -> Result<DeregisterContainerInstanceResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let given = request.container_instance.clone().unwrap_or_default();
        let not_found = || {
            ApiError::invalid_parameter(format!(
                "The referenced container instance {given} was not found in cluster {cluster}."
            ))
        };
        let instance_id = self
            .instance_id_in(&cluster, &given)
            .ok_or_else(not_found)?;
        let force = request.force == Some(true);
        let now_ms = self.clock.now_ms();
        let key = keys::instance(&cluster, &instance_id);
        let (record, live_tasks) = records::mutate(self.store.as_ref(), || {
            let found = self.get_instance(&cluster, &instance_id)?.ok_or_else(not_found)?;
            let mut record = found.value;
            if !record.is_live() {
                return Ok(Attempt::Done((record, Vec::new())));
            }
            let live_tasks: Vec<String> = scan::<TaskRecord>(self.store.as_ref(), &keys::tasks_of(&cluster))?
                .into_iter()
                .filter(|task| task.value.instance_id == instance_id && task.value.last_status() != "STOPPED")
                .map(|task| task.value.task_id)
                .collect();
            if !live_tasks.is_empty() && !force {
                return Err(ApiError::invalid_parameter(format!(
                    "Found running tasks on the instance: {} task(s) are not yet stopped; stop them or deregister with force",
                    live_tasks.len()
                )));
            }
            record.instance.status = Some("INACTIVE".to_owned());
            record.deregistered_at_ms = Some(now_ms);
            record.touch();
            let txn = Txn::new().expect(&key, found.revision).put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, (record, live_tasks)))
        })
        .await?;
        // The instance takes no new tasks from here on; its tasks are told to
        // stop one by one. With no agent to report them stopped, they are
        // stopped at once, as nobody else ever will.
        let agent_connected = record.instance.agent_connected == Some(true);
        for task_id in live_tasks {
            self.stop_for_deregistration(&cluster, &task_id, agent_connected)
                .await?;
        }
        let counts = self
            .task_counts_by_instance(&cluster)?
            .get(&instance_id)
            .copied()
            .unwrap_or_default();
        Ok(DeregisterContainerInstanceResponse {
            container_instance: Some(self.present_instance(&record, counts, true)),
        })
    }

    /// Flotilla's agents are updated by installing a new `flotilla` binary
    /// on their host, not by the control plane, so there is never an
    /// update to start: ECS's answer for an agent that is already current.
    /// An agent that did not report its version gets ECS's answer for one
    /// whose version it cannot tell.
    pub(crate) async fn update_container_agent(
        &self,
        request: UpdateContainerAgentRequest,
    ) -> Result<UpdateContainerAgentResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let given = request.container_instance.clone().unwrap_or_default();
        let found = match self.instance_id_in(&cluster, &given) {
            Some(id) => self.get_instance(&cluster, &id)?,
            None => None,
        };
        let Some(found) = found.filter(|f| f.value.is_live()) else {
            return Err(ApiError::invalid_parameter(format!(
                "The referenced container instance {given} was not found in cluster {cluster}."
            )));
        };
        let reported = found
            .value
            .instance
            .version_info
            .as_ref()
            .and_then(|v| v.agent_version.as_deref())
            .is_some_and(|v| !v.is_empty());
        if !reported {
            return Err(ApiError::new(
                "MissingVersionException",
                400,
                "Amazon ECS can't determine the current version of the container agent on the container instance and doesn't have enough information to proceed with an update.",
            ));
        }
        Err(ApiError::new(
            "NoUpdateAvailableException",
            400,
            "There's no update available for this container agent: it is already running the latest version this server offers.",
        ))
    }

    pub(crate) fn describe_container_instances(
        &self,
        request: DescribeContainerInstancesRequest,
    ) -> Result<DescribeContainerInstancesResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let wanted = request.container_instances.clone().unwrap_or_default();
        if wanted.is_empty() || wanted.len() > DESCRIBE_INSTANCES_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "containerInstances must name 1 to {DESCRIBE_INSTANCES_MAX} container instances, got {}",
                wanted.len()
            )));
        }
        let include_tags = request
            .include
            .iter()
            .flatten()
            .any(|f| *f == ContainerInstanceField::Tags);
        let counts = self.task_counts_by_instance(&cluster)?;
        let mut container_instances = Vec::new();
        let mut failures = Vec::new();
        for given in &wanted {
            // Fargate's hosts are not the user's container instances.
            let found = match self.instance_id_in(&cluster, given) {
                Some(id) => self
                    .get_instance(&cluster, &id)?
                    .filter(|found| !found.value.is_fargate()),
                None => None,
            };
            match found {
                Some(found) => {
                    let count = counts
                        .get(&found.value.instance_id)
                        .copied()
                        .unwrap_or_default();
                    container_instances.push(self.present_instance(
                        &found.value,
                        count,
                        include_tags,
                    ));
                }
                None => failures.push(Failure {
                    arn: Some(match self.instance_id_in(&cluster, given) {
                        Some(id) if !given.starts_with("arn:") => self.instance_arn(&cluster, &id),
                        _ => given.clone(),
                    }),
                    reason: Some("MISSING".to_owned()),
                    detail: None,
                }),
            }
        }
        Ok(DescribeContainerInstancesResponse {
            container_instances: Some(container_instances),
            failures: Some(failures),
        })
    }

    pub(crate) fn list_container_instances(
        &self,
        request: ListContainerInstancesRequest,
    ) -> Result<ListContainerInstancesResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let limit = page::max_results(request.max_results, LIST_RESULTS_MAX, LIST_RESULTS_MAX)?;
        let filter = request
            .filter
            .as_deref()
            .filter(|f| !f.trim().is_empty())
            .map(|text| placement::parse_expression("filter", text))
            .transpose()?;
        // `task:group` and `runningTasksCount` read the tasks on each instance.
        let mut groups = match filter {
            Some(_) => placement::groups_by_instance(
                scan::<TaskRecord>(self.store.as_ref(), &keys::tasks_of(&cluster))?
                    .iter()
                    .filter(|task| !task.value.released)
                    .map(|task| {
                        (
                            task.value.instance_id.as_str(),
                            task.value.task.group.as_deref(),
                        )
                    }),
            ),
            None => Default::default(),
        };
        let status = request.status.map(|s| s.as_str().to_owned());
        let listing = page::list(
            self.store.as_ref(),
            &keys::instances_of(&cluster),
            request.next_token.as_deref(),
            limit,
            |entry| {
                let record: InstanceRecord = records::decode(entry)?;
                let status_matches = match &status {
                    Some(status) => record.status() == status,
                    None => record.is_live(),
                };
                let filter_matches = filter.as_ref().is_none_or(|f| {
                    let task_groups = groups.remove(&record.instance_id).unwrap_or_default();
                    let instance = placement::scheduler_instance(&record, task_groups);
                    f.matches(&flotilla_scheduler::cql::Facts {
                        instance: &instance,
                        groups: &instance.task_groups,
                    })
                });
                let visible = !record.is_fargate();
                Ok((visible && status_matches && filter_matches).then(|| record.arn()))
            },
        )?;
        Ok(ListContainerInstancesResponse {
            container_instance_arns: Some(listing.items),
            next_token: listing.next_token,
        })
    }

    pub(crate) async fn update_container_instances_state(
        &self,
        request: UpdateContainerInstancesStateRequest,
    ) -> Result<UpdateContainerInstancesStateResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let status = match request.status {
            Some(ContainerInstanceStatus::Active) => "ACTIVE",
            Some(ContainerInstanceStatus::Draining) => "DRAINING",
            other => {
                return Err(ApiError::invalid_parameter(format!(
                    "Container instance status can be set to ACTIVE or DRAINING only, not {}",
                    other.map_or("nothing", |s| s.as_str())
                )))
            }
        };
        let wanted = request.container_instances.clone().unwrap_or_default();
        if wanted.is_empty() || wanted.len() > UPDATE_INSTANCES_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "containerInstances must name 1 to {UPDATE_INSTANCES_MAX} container instances, got {}",
                wanted.len()
            )));
        }
        let mut container_instances = Vec::new();
        let mut failures = Vec::new();
        let mut changed = Vec::new();
        for given in &wanted {
            let failure = |reason: &str| Failure {
                arn: Some(given.clone()),
                reason: Some(reason.to_owned()),
                detail: None,
            };
            let Some(instance_id) = self.instance_id_in(&cluster, given) else {
                failures.push(failure("MISSING"));
                continue;
            };
            let key = keys::instance(&cluster, &instance_id);
            let outcome = records::mutate(self.store.as_ref(), || {
                let Some(found) = self.get_instance(&cluster, &instance_id)? else {
                    return Ok(Attempt::Done(Err("MISSING")));
                };
                let mut record = found.value;
                if !record.is_live() {
                    return Ok(Attempt::Done(Err("INACTIVE")));
                }
                if record.status() == status {
                    return Ok(Attempt::Done(Ok(record)));
                }
                record.instance.status = Some(status.to_owned());
                record.touch();
                let txn = Txn::new()
                    .expect(&key, found.revision)
                    .put(&key, records::encode(&record));
                Ok(Attempt::Commit(txn, Ok(record)))
            })
            .await?;
            match outcome {
                Ok(record) => changed.push(record),
                Err(reason) => failures.push(failure(reason)),
            }
        }
        let counts = self.task_counts_by_instance(&cluster)?;
        for record in changed {
            let count = counts.get(&record.instance_id).copied().unwrap_or_default();
            container_instances.push(self.present_instance(&record, count, false));
        }
        Ok(UpdateContainerInstancesStateResponse {
            container_instances: Some(container_instances),
            failures: Some(failures),
        })
    }

    /// The agent connects back to the API's own address: this server is its
    /// own ACS and telemetry endpoint.
    pub(crate) fn discover_poll_endpoint(
        &self,
        _request: DiscoverPollEndpointRequest,
    ) -> Result<DiscoverPollEndpointResponse, ApiError> {
        let endpoint = self.advertised_endpoint.clone().ok_or_else(|| {
            ApiError::server("this server was started without an advertised endpoint, so it cannot tell agents where to connect")
        })?;
        Ok(DiscoverPollEndpointResponse {
            endpoint: Some(endpoint.clone()),
            telemetry_endpoint: Some(endpoint.clone()),
            service_connect_endpoint: Some(endpoint),
        })
    }

    /// Forgets instances deregistered longer than
    /// [`DEREGISTERED_INSTANCE_RETENTION_MS`] ago and frees their task
    /// subnets. Returns how many it forgot. Called periodically by the binary.
    pub async fn collect_deregistered_instances(&self) -> Result<usize, ApiError> {
        let now_ms = self.clock.now_ms();
        let expired: Vec<(String, String)> =
            scan::<InstanceRecord>(self.store.as_ref(), keys::INSTANCES)?
                .into_iter()
                .filter(|found| {
                    found.value.deregistered_at_ms.is_some_and(|at| {
                        now_ms.saturating_sub(at) >= DEREGISTERED_INSTANCE_RETENTION_MS
                    })
                })
                .map(|found| (found.value.cluster, found.value.instance_id))
                .collect();
        let mut forgotten = 0;
        for (cluster, instance_id) in expired {
            let key = keys::instance(&cluster, &instance_id);
            forgotten += records::mutate(self.store.as_ref(), || {
                let Some(found) = self.get_instance(&cluster, &instance_id)? else {
                    return Ok(Attempt::Done(0));
                };
                let pool = records::get::<SubnetPool>(self.store.as_ref(), keys::TASK_SUBNETS)?;
                let mut txn = Txn::new().expect(&key, found.revision).delete(&key);
                if let Some(pool) = pool {
                    let mut next = pool.value;
                    next.in_use.remove(&found.value.task_subnet_index);
                    txn = txn
                        .expect(keys::TASK_SUBNETS, pool.revision)
                        .put(keys::TASK_SUBNETS, records::encode(&next));
                }
                Ok(Attempt::Commit(txn, 1))
            })
            .await?;
        }
        Ok(forgotten)
    }
}

/// Resources as ECS lists them: every numeric member present, as ECS's own
/// answers carry them.
fn integer_resource(name: &str, value: i64) -> Resource {
    Resource {
        name: Some(name.to_owned()),
        r#type: Some("INTEGER".to_owned()),
        integer_value: Some(value.clamp(i32::MIN as i64, i32::MAX as i64) as i32),
        long_value: Some(0),
        double_value: Some(0.0),
        string_set_value: None,
    }
}

fn string_set_resource(name: &str, values: Vec<String>) -> Resource {
    Resource {
        name: Some(name.to_owned()),
        r#type: Some("STRINGSET".to_owned()),
        integer_value: Some(0),
        long_value: Some(0),
        double_value: Some(0.0),
        string_set_value: Some(values),
    }
}

fn ports_to_strings(ports: &BTreeSet<u16>) -> Vec<String> {
    ports.iter().map(u16::to_string).collect()
}

/// `remainingResources` from what is left, in the order and with the other
/// resources of `registeredResources`.
pub fn remaining_resources(
    remaining: &Remaining,
    registered: Option<&[Resource]>,
) -> Vec<Resource> {
    let mut out = vec![
        integer_resource("CPU", remaining.cpu_units),
        integer_resource("MEMORY", remaining.memory_mib),
        string_set_resource("PORTS", ports_to_strings(&remaining.tcp_ports_in_use)),
        string_set_resource("PORTS_UDP", ports_to_strings(&remaining.udp_ports_in_use)),
    ];
    for resource in registered.unwrap_or_default() {
        match resource.name.as_deref() {
            Some("CPU" | "MEMORY" | "PORTS" | "PORTS_UDP") => {}
            Some("GPU") => out.push(string_set_resource(
                "GPU",
                remaining.free_gpu_ids.iter().cloned().collect(),
            )),
            _ => out.push(resource.clone()),
        }
    }
    out
}

/// Checks `totalResources` and returns them as ECS echoes them in
/// `registeredResources`, with what a fresh instance has left.
fn registered_resources(total: &[Resource]) -> Result<(Vec<Resource>, Remaining), ApiError> {
    let find = |name: &str| total.iter().find(|r| r.name.as_deref() == Some(name));
    let integer = |name: &str| -> Result<i64, ApiError> {
        let resource = find(name).ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "totalResources must include {name} as an INTEGER resource"
            ))
        })?;
        let value = resource
            .integer_value
            .map(i64::from)
            .or(resource.long_value)
            .or(resource.double_value.map(|d| d as i64))
            .unwrap_or(0);
        if value < 0 {
            return Err(ApiError::invalid_parameter(format!(
                "totalResources {name} must not be negative, got {value}"
            )));
        }
        Ok(value)
    };
    let ports = |name: &str| -> Result<BTreeSet<u16>, ApiError> {
        find(name)
            .and_then(|r| r.string_set_value.as_ref())
            .into_iter()
            .flatten()
            .map(|port| {
                port.trim().parse::<u16>().map_err(|_| {
                    ApiError::invalid_parameter(format!(
                        "totalResources {name} holds {port:?}, which is not a port number"
                    ))
                })
            })
            .collect()
    };
    let remaining = Remaining {
        cpu_units: integer("CPU")?,
        memory_mib: integer("MEMORY")?,
        tcp_ports_in_use: ports("PORTS")?,
        udp_ports_in_use: ports("PORTS_UDP")?,
        free_gpu_ids: find("GPU")
            .and_then(|r| r.string_set_value.clone())
            .unwrap_or_default()
            .into_iter()
            .collect(),
    };
    let mut registered = vec![
        integer_resource("CPU", remaining.cpu_units),
        integer_resource("MEMORY", remaining.memory_mib),
        string_set_resource("PORTS", ports_to_strings(&remaining.tcp_ports_in_use)),
        string_set_resource("PORTS_UDP", ports_to_strings(&remaining.udp_ports_in_use)),
    ];
    for resource in total {
        match resource.name.as_deref() {
            Some("CPU" | "MEMORY" | "PORTS" | "PORTS_UDP") => {}
            Some(_) => registered.push(resource.clone()),
            None => {
                return Err(ApiError::invalid_parameter(
                    "every totalResources entry needs a name",
                ))
            }
        }
    }
    Ok((registered, remaining))
}

/// The parts of an EC2 instance identity document Flotilla uses.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityDocument {
    instance_id: Option<String>,
    availability_zone: Option<String>,
    instance_type: Option<String>,
    /// Flotilla's own: the capacity provider the host was started in
    /// (`flotilla agent --capacity-provider`), where EC2 would know the
    /// instance's Auto Scaling group.
    capacity_provider_name: Option<String>,
    /// Flotilla's own: subnets of the task subnet range that networks of the
    /// host's container engine already hold, which its task subnet must avoid.
    subnets_in_use: Option<Vec<String>>,
}

fn identity_document(text: Option<&str>) -> Result<IdentityDocument, ApiError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(IdentityDocument::default());
    };
    if text.len() > IDENTITY_DOCUMENT_BYTES_MAX {
        return Err(ApiError::invalid_parameter(format!(
            "instanceIdentityDocument is larger than {IDENTITY_DOCUMENT_BYTES_MAX} bytes"
        )));
    }
    serde_json::from_str(text).map_err(|_| {
        ApiError::invalid_parameter(
            "instanceIdentityDocument is not a valid instance identity document: it must be the JSON document EC2 instance metadata serves",
        )
    })
}

/// The agent's attributes, plus the ones ECS derives from the identity
/// document when the agent did not send them.
fn instance_attributes(
    given: &[Attribute],
    identity: &IdentityDocument,
) -> Result<Vec<Attribute>, ApiError> {
    if given.len() > ATTRIBUTES_PER_INSTANCE_MAX {
        return Err(ApiError::invalid_parameter(format!(
            "an instance can have at most {ATTRIBUTES_PER_INSTANCE_MAX} attributes, got {}",
            given.len()
        )));
    }
    let mut attributes: Vec<Attribute> = Vec::with_capacity(given.len() + 3);
    for attribute in given {
        let name = attribute.name.as_deref().unwrap_or_default();
        if name.is_empty() || name.len() > ATTRIBUTE_NAME_LENGTH_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "attribute name {name:?} must be 1 to {ATTRIBUTE_NAME_LENGTH_MAX} characters"
            )));
        }
        if attribute
            .value
            .as_deref()
            .is_some_and(|v| v.len() > ATTRIBUTE_VALUE_LENGTH_MAX)
        {
            return Err(ApiError::invalid_parameter(format!(
                "the value of attribute {name} is longer than {ATTRIBUTE_VALUE_LENGTH_MAX} characters"
            )));
        }
        // Only name and value describe an instance's own attributes.
        let attribute = Attribute {
            name: attribute.name.clone(),
            value: attribute.value.clone(),
            ..Default::default()
        };
        match attributes.iter_mut().find(|a| a.name == attribute.name) {
            Some(existing) => *existing = attribute,
            None => attributes.push(attribute),
        }
    }
    let mut add_default = |name: &str, value: Option<&String>| {
        if let Some(value) = value {
            if !attributes.iter().any(|a| a.name.as_deref() == Some(name)) {
                attributes.push(Attribute {
                    name: Some(name.to_owned()),
                    value: Some(value.clone()),
                    ..Default::default()
                });
            }
        }
    };
    add_default("ecs.availability-zone", identity.availability_zone.as_ref());
    add_default("ecs.instance-type", identity.instance_type.as_ref());
    add_default("ecs.os-type", Some(&"linux".to_owned()));
    Ok(attributes)
}

#[cfg(test)]
mod tests;
