//! Capacity providers: CreateCapacityProvider, DescribeCapacityProviders,
//! UpdateCapacityProvider, DeleteCapacityProvider and
//! PutClusterCapacityProviders.
//!
//! Flotilla has no EC2 Auto Scaling groups. A capacity provider here names
//! a group of container instances: an agent started with
//! `flotilla agent --capacity-provider NAME` registers into it (its identity
//! document says so) and its container instance reports
//! `capacityProviderName`. The provider's `autoScalingGroupArn` is kept as
//! given; its managed scaling, termination protection and draining settings
//! are checked, stored and returned, and act when the ARN names a host group
//! of the server's (`host_groups.rs` scales it). FARGATE and FARGATE_SPOT exist in every account,
//! as in ECS, and a cluster may list them, but no task runs on them here.
//!
//! Each provider is one [`CapacityProviderRecord`] under
//! `keys::capacity_provider(name)`. A provider is associated with one
//! cluster at most, as an Auto Scaling group provider is in ECS: the
//! cluster's `capacityProviders` lists it and its record names the cluster,
//! and both change in one transaction (CreateCluster,
//! PutClusterCapacityProviders, DeleteCluster), so DeleteCapacityProvider
//! decides from the provider's record alone.
//!
//! *Invariant:* a service whose strategy names a provider holds it: the
//! commit that creates or updates the service rewrites the provider's
//! record, unchanged, conditional on the revision it checked, so a
//! PutClusterCapacityProviders that removes the provider after reading the
//! services conflicts with it and reads again. Tasks are checked as read:
//! a RunTask racing a removal may still start on the provider.

use flotilla_store::Txn;
use flotilla_types::arn::Arn;
use flotilla_types::ecs::*;
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::instances::scan;
use crate::page;
use crate::records::{self, keys, Attempt, Versioned};
use crate::services::ServiceRecord;
use crate::strategy::{self, is_fargate, Origin, FARGATE_PROVIDERS};
use crate::tasks::TaskRecord;
use crate::Ecs;

/// Most ACTIVE capacity providers an account may hold.
pub const CAPACITY_PROVIDERS_MAX: usize = 1_000;
/// Most capacity providers one cluster may list, as ECS allows.
pub const CLUSTER_CAPACITY_PROVIDERS_MAX: usize = 20;
/// How long a deleted provider stays describable as INACTIVE.
pub const INACTIVE_CAPACITY_PROVIDER_RETENTION_MS: u64 = 60 * 60 * 1000;
const NAME_LENGTH_MAX: usize = 255;
/// Longest autoScalingGroupArn kept: the longest ARN AWS allows.
const AUTO_SCALING_GROUP_ARN_LENGTH_MAX: usize = 1600;
/// Most providers one DescribeCapacityProviders call may name.
const DESCRIBE_NAMES_MAX: usize = 100;
/// DescribeCapacityProviders' page: 10 at most, as in ECS.
const DESCRIBE_PAGE_MAX: usize = 10;
/// Prefixes ECS reserves for its own providers' names.
const RESERVED_NAME_PREFIXES: [&str; 3] = ["aws", "ecs", "fargate"];

// Managed scaling's bounds and defaults, as ECS documents them.
const TARGET_CAPACITY_RANGE: std::ops::RangeInclusive<i32> = 1..=100;
const STEP_SIZE_RANGE: std::ops::RangeInclusive<i32> = 1..=10_000;
const WARMUP_SECONDS_RANGE: std::ops::RangeInclusive<i32> = 0..=10_000;
const TARGET_CAPACITY_DEFAULT: i32 = 100;
const MINIMUM_STEP_SIZE_DEFAULT: i32 = 1;
const MAXIMUM_STEP_SIZE_DEFAULT: i32 = 10_000;
const WARMUP_SECONDS_DEFAULT: i32 = 300;

/// A capacity provider as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacityProviderRecord {
    /// The wire shape, tags included.
    pub provider: CapacityProvider,
    /// The cluster it is associated with, if any.
    #[serde(default)]
    pub cluster: Option<String>,
    /// When it was deleted (clock ms), for retention.
    #[serde(default)]
    pub inactive_at_ms: Option<u64>,
}

impl CapacityProviderRecord {
    pub fn is_active(&self) -> bool {
        self.provider.status == Some(CapacityProviderStatus::Active)
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::invalid_parameter(format!(
        "The specified capacity provider {name} does not exist."
    ))
}

fn reserved(name: &str) -> ApiError {
    ApiError::invalid_parameter(format!(
        "The {name} capacity provider is reserved: it cannot be created, updated or deleted."
    ))
}

fn managed_instances_unsupported() -> ApiError {
    ApiError::new(
        "UnsupportedFeatureException",
        400,
        "Amazon ECS Managed Instances capacity providers are not available on this Flotilla server: use an autoScalingGroupProvider, whose container instances join it with `flotilla agent --capacity-provider NAME`",
    )
}

/// Checks a provider's name as ECS does.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= NAME_LENGTH_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid capacity provider name {name:?}: up to {NAME_LENGTH_MAX} letters (uppercase and lowercase), numbers, underscores and hyphens are allowed"
        )));
    }
    let lower = name.to_ascii_lowercase();
    if let Some(prefix) = RESERVED_NAME_PREFIXES
        .iter()
        .find(|p| lower.starts_with(*p))
    {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid capacity provider name {name:?}: a name cannot begin with \"{prefix}\""
        )));
    }
    Ok(())
}

/// Managed scaling as stored: `given` over `current` over ECS's defaults, checked.
fn checked_scaling(
    given: Option<&ManagedScaling>,
    current: Option<&ManagedScaling>,
) -> Result<ManagedScaling, ApiError> {
    let pick = |field: fn(&ManagedScaling) -> Option<i32>, default: i32| {
        given
            .and_then(field)
            .or_else(|| current.and_then(field))
            .unwrap_or(default)
    };
    let scaling = ManagedScaling {
        status: Some(
            given
                .and_then(|g| g.status)
                .or_else(|| current.and_then(|c| c.status))
                .unwrap_or(ManagedScalingStatus::Disabled),
        ),
        target_capacity: Some(pick(|s| s.target_capacity, TARGET_CAPACITY_DEFAULT)),
        minimum_scaling_step_size: Some(pick(
            |s| s.minimum_scaling_step_size,
            MINIMUM_STEP_SIZE_DEFAULT,
        )),
        maximum_scaling_step_size: Some(pick(
            |s| s.maximum_scaling_step_size,
            MAXIMUM_STEP_SIZE_DEFAULT,
        )),
        instance_warmup_period: Some(pick(|s| s.instance_warmup_period, WARMUP_SECONDS_DEFAULT)),
    };
    let checks = [
        (
            "targetCapacity",
            scaling.target_capacity,
            &TARGET_CAPACITY_RANGE,
        ),
        (
            "minimumScalingStepSize",
            scaling.minimum_scaling_step_size,
            &STEP_SIZE_RANGE,
        ),
        (
            "maximumScalingStepSize",
            scaling.maximum_scaling_step_size,
            &STEP_SIZE_RANGE,
        ),
        (
            "instanceWarmupPeriod",
            scaling.instance_warmup_period,
            &WARMUP_SECONDS_RANGE,
        ),
    ];
    for (member, value, range) in checks {
        let value = value.unwrap_or_default();
        if !range.contains(&value) {
            return Err(ApiError::invalid_parameter(format!(
                "managedScaling.{member} must be between {} and {}, got {value}",
                range.start(),
                range.end()
            )));
        }
    }
    if scaling.minimum_scaling_step_size > scaling.maximum_scaling_step_size {
        return Err(ApiError::invalid_parameter(
            "managedScaling.minimumScalingStepSize cannot be larger than maximumScalingStepSize",
        ));
    }
    Ok(scaling)
}

impl Ecs {
    pub(crate) fn capacity_provider_arn(&self, name: &str) -> String {
        self.scope.arn("ecs", &format!("capacity-provider/{name}"))
    }

    /// The short name a request gives by name or by ARN; `None` when an
    /// ARN names another kind of resource, region or account.
    fn capacity_provider_name(&self, given: &str) -> Option<String> {
        let given = given.trim();
        if !given.starts_with("arn:") {
            return Some(given.to_owned());
        }
        let arn = Arn::parse(given)?;
        if !self.is_own_ecs_arn(&arn) {
            return None;
        }
        match arn.resource_parts() {
            ("capacity-provider", name) => Some(name.to_owned()),
            _ => None,
        }
    }

    fn get_capacity_provider(
        &self,
        name: &str,
    ) -> Result<Option<Versioned<CapacityProviderRecord>>, ApiError> {
        records::get(self.store.as_ref(), &keys::capacity_provider(name))
    }

    /// The ACTIVE provider a request names, or ECS's error for a missing one.
    fn active_capacity_provider(
        &self,
        name: &str,
    ) -> Result<Versioned<CapacityProviderRecord>, ApiError> {
        match self.get_capacity_provider(name)? {
            Some(found) if found.value.is_active() => Ok(found),
            _ => Err(not_found(name)),
        }
    }

    /// FARGATE or FARGATE_SPOT as ECS describes them.
    fn fargate_provider(&self, name: &str) -> CapacityProvider {
        CapacityProvider {
            capacity_provider_arn: Some(self.capacity_provider_arn(name)),
            name: Some(name.to_owned()),
            status: Some(CapacityProviderStatus::Active),
            r#type: Some(if name == "FARGATE" {
                CapacityProviderType::Fargate
            } else {
                CapacityProviderType::FargateSpot
            }),
            tags: Some(Vec::new()),
            ..Default::default()
        }
    }

    pub(crate) async fn create_capacity_provider(
        &self,
        request: CreateCapacityProviderRequest,
    ) -> Result<CreateCapacityProviderResponse, ApiError> {
        let name = request.name.clone().unwrap_or_default();
        check_name(&name)?;
        if request.managed_instances_provider.is_some() {
            return Err(managed_instances_unsupported());
        }
        if request.cluster.is_some() {
            return Err(ApiError::invalid_parameter(
                "cluster is only for Amazon ECS Managed Instances capacity providers; an Auto Scaling group capacity provider is associated with a cluster by PutClusterCapacityProviders",
            ));
        }
        let given = request
            .auto_scaling_group_provider
            .as_ref()
            .ok_or_else(|| {
                ApiError::invalid_parameter(
                    "autoScalingGroupProvider is required for a capacity provider",
                )
            })?;
        let group_arn = given
            .auto_scaling_group_arn
            .as_deref()
            .unwrap_or_default()
            .trim()
            .to_owned();
        if group_arn.is_empty() || group_arn.len() > AUTO_SCALING_GROUP_ARN_LENGTH_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "autoScalingGroupProvider.autoScalingGroupArn must be 1 to {AUTO_SCALING_GROUP_ARN_LENGTH_MAX} characters"
            )));
        }
        let settings = AutoScalingGroupProvider {
            auto_scaling_group_arn: Some(group_arn.clone()),
            managed_scaling: Some(checked_scaling(given.managed_scaling.as_ref(), None)?),
            managed_termination_protection: Some(
                given
                    .managed_termination_protection
                    .unwrap_or(ManagedTerminationProtection::Disabled),
            ),
            managed_draining: Some(given.managed_draining.unwrap_or(ManagedDraining::Enabled)),
        };
        let tags = request.tags.clone().unwrap_or_default();
        crate::tags::check_tags(&tags)?;
        let record = CapacityProviderRecord {
            provider: CapacityProvider {
                capacity_provider_arn: Some(self.capacity_provider_arn(&name)),
                name: Some(name.clone()),
                status: Some(CapacityProviderStatus::Active),
                auto_scaling_group_provider: Some(settings),
                tags: Some(tags),
                r#type: Some(CapacityProviderType::Ec2Autoscaling),
                ..Default::default()
            },
            cluster: None,
            inactive_at_ms: None,
        };
        let key = keys::capacity_provider(&name);
        let created = records::mutate(self.store.as_ref(), || {
            let existing = self.get_capacity_provider(&name)?;
            if existing.as_ref().is_some_and(|e| e.value.is_active()) {
                return Err(ApiError::client(
                    "The specified capacity provider already exists. To change the configuration of an existing capacity provider, update the capacity provider.",
                ));
            }
            let active: Vec<CapacityProviderRecord> = scan::<CapacityProviderRecord>(self.store.as_ref(), keys::CAPACITY_PROVIDERS)?
                .into_iter()
                .map(|found| found.value)
                .filter(CapacityProviderRecord::is_active)
                .collect();
            if active.len() >= CAPACITY_PROVIDERS_MAX {
                return Err(ApiError::new(
                    "LimitExceededException",
                    400,
                    format!("This account already has {CAPACITY_PROVIDERS_MAX} capacity providers, the most this server holds"),
                ));
            }
            let same_group = active.iter().find(|other| {
                other.provider.auto_scaling_group_provider.as_ref().and_then(|g| g.auto_scaling_group_arn.as_deref())
                    == Some(group_arn.as_str())
            });
            if let Some(other) = same_group {
                return Err(ApiError::client(format!(
                    "The specified Auto Scaling group {group_arn} is already used by capacity provider {}.",
                    other.provider.name.as_deref().unwrap_or_default()
                )));
            }
            let revision = existing.map_or(0, |e| e.revision);
            let txn = Txn::new().expect(&key, revision).put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, record.clone()))
        })
        .await?;
        Ok(CreateCapacityProviderResponse {
            capacity_provider: Some(created.provider),
        })
    }

    pub(crate) fn describe_capacity_providers(
        &self,
        request: DescribeCapacityProvidersRequest,
    ) -> Result<DescribeCapacityProvidersResponse, ApiError> {
        let include_tags = request
            .include
            .iter()
            .flatten()
            .any(|f| *f == CapacityProviderField::Tags);
        let present = |mut provider: CapacityProvider| {
            if !include_tags {
                provider.tags = None;
            }
            provider
        };
        // With a cluster, only the providers associated with it.
        let cluster = match request.cluster.as_deref() {
            Some(given) => Some(self.active_cluster(Some(given))?.value),
            None => None,
        };
        let cluster_name = cluster.as_ref().and_then(|c| c.cluster_name.clone());
        let fargate_listed = |name: &str| {
            cluster
                .as_ref()
                .is_none_or(|c| c.capacity_providers.iter().flatten().any(|p| p == name))
        };
        let stored_listed = |record: &CapacityProviderRecord| {
            cluster_name
                .as_ref()
                .is_none_or(|c| record.cluster.as_ref() == Some(c))
        };
        let named = request.capacity_providers.clone().unwrap_or_default();
        if !named.is_empty() {
            if named.len() > DESCRIBE_NAMES_MAX {
                return Err(ApiError::invalid_parameter(format!(
                    "capacityProviders can name at most {DESCRIBE_NAMES_MAX} capacity providers, got {}",
                    named.len()
                )));
            }
            let mut providers = Vec::new();
            let mut failures = Vec::new();
            for given in &named {
                let name = self.capacity_provider_name(given);
                let found = match name.as_deref() {
                    Some(name) if is_fargate(name) => {
                        fargate_listed(name).then(|| self.fargate_provider(name))
                    }
                    Some(name) => self
                        .get_capacity_provider(name)?
                        .map(|found| found.value)
                        .filter(|record| stored_listed(record))
                        .map(|record| record.provider),
                    None => None,
                };
                match found {
                    Some(provider) => providers.push(present(provider)),
                    None => failures.push(Failure {
                        arn: Some(match &name {
                            Some(name) if !given.starts_with("arn:") => {
                                self.capacity_provider_arn(name)
                            }
                            _ => given.clone(),
                        }),
                        reason: Some("MISSING".to_owned()),
                        detail: None,
                    }),
                }
            }
            return Ok(DescribeCapacityProvidersResponse {
                capacity_providers: Some(providers),
                failures: Some(failures),
                next_token: None,
            });
        }
        // Every provider: Fargate's two first, then the stored ones by name.
        // The token is the store key of the last one returned (Fargate's
        // keys are never stored: no stored name may begin with "fargate").
        let limit = page::max_results(request.max_results, DESCRIBE_PAGE_MAX, DESCRIBE_PAGE_MAX)?;
        let after = page::resume_after(request.next_token.as_deref(), keys::CAPACITY_PROVIDERS)?;
        let fargate_from = match &after {
            None => 0,
            Some(key) => FARGATE_PROVIDERS
                .iter()
                .position(|name| *key == keys::capacity_provider(name))
                .map_or(FARGATE_PROVIDERS.len(), |at| at + 1),
        };
        let stored_token = request
            .next_token
            .as_deref()
            .filter(|_| fargate_from == FARGATE_PROVIDERS.len() && after.is_some());
        let mut providers = Vec::new();
        let mut last_fargate = None;
        let mut fargate_left = FARGATE_PROVIDERS[fargate_from..]
            .iter()
            .filter(|name| fargate_listed(name));
        for name in fargate_left.by_ref() {
            providers.push(present(self.fargate_provider(name)));
            last_fargate = Some(*name);
            if providers.len() == limit {
                break;
            }
        }
        let keep = |entry: &flotilla_store::Entry| -> Result<Option<CapacityProvider>, ApiError> {
            let record: CapacityProviderRecord = records::decode(entry)?;
            Ok(stored_listed(&record).then(|| present(record.provider)))
        };
        if providers.len() == limit {
            // A full page of Fargate's: a token only if anything follows.
            let more = fargate_left.next().is_some()
                || !page::list(self.store.as_ref(), keys::CAPACITY_PROVIDERS, None, 1, keep)?
                    .items
                    .is_empty();
            let next_token = more
                .then(|| last_fargate.map(|name| page::token_for(&keys::capacity_provider(name))))
                .flatten();
            return Ok(DescribeCapacityProvidersResponse {
                capacity_providers: Some(providers),
                failures: Some(Vec::new()),
                next_token,
            });
        }
        let listing = page::list(
            self.store.as_ref(),
            keys::CAPACITY_PROVIDERS,
            stored_token,
            limit - providers.len(),
            keep,
        )?;
        providers.extend(listing.items);
        Ok(DescribeCapacityProvidersResponse {
            capacity_providers: Some(providers),
            failures: Some(Vec::new()),
            next_token: listing.next_token,
        })
    }

    /// The stored provider an Update or Delete names, by name or ARN; Fargate's are reserved.
    fn mutable_provider_name(&self, given: &str) -> Result<String, ApiError> {
        let name = self
            .capacity_provider_name(given)
            .ok_or_else(|| not_found(given))?;
        if is_fargate(&name) {
            return Err(reserved(&name));
        }
        Ok(name)
    }

    pub(crate) async fn update_capacity_provider(
        &self,
        request: UpdateCapacityProviderRequest,
    ) -> Result<UpdateCapacityProviderResponse, ApiError> {
        let name = self.mutable_provider_name(request.name.as_deref().unwrap_or_default())?;
        if request.managed_instances_provider.is_some() {
            return Err(managed_instances_unsupported());
        }
        let update = request.auto_scaling_group_provider.clone().ok_or_else(|| {
            ApiError::invalid_parameter(
                "autoScalingGroupProvider is required to update a capacity provider",
            )
        })?;
        let updated = self
            .change_capacity_provider(&name, |record| {
                let settings = record
                    .provider
                    .auto_scaling_group_provider
                    .get_or_insert_with(Default::default);
                settings.managed_scaling = Some(checked_scaling(
                    update.managed_scaling.as_ref(),
                    settings.managed_scaling.as_ref(),
                )?);
                if let Some(protection) = update.managed_termination_protection {
                    settings.managed_termination_protection = Some(protection);
                }
                if let Some(draining) = update.managed_draining {
                    settings.managed_draining = Some(draining);
                }
                record.provider.update_status = Some(CapacityProviderUpdateStatus::UpdateComplete);
                Ok(())
            })
            .await?;
        Ok(UpdateCapacityProviderResponse {
            capacity_provider: Some(updated.provider),
        })
    }

    pub(crate) async fn delete_capacity_provider(
        &self,
        request: DeleteCapacityProviderRequest,
    ) -> Result<DeleteCapacityProviderResponse, ApiError> {
        let name =
            self.mutable_provider_name(request.capacity_provider.as_deref().unwrap_or_default())?;
        let now_ms = self.clock.now_ms();
        let deleted = self
            .change_capacity_provider(&name, |record| {
                // Services and tasks use only providers of their own cluster,
                // so a provider associated with none is used by nothing.
                if let Some(cluster) = &record.cluster {
                    return Err(ApiError::client(format!(
                        "The capacity provider cannot be deleted because it is associated with cluster: {cluster}. Remove the capacity provider from the cluster and try again."
                    )));
                }
                record.provider.status = Some(CapacityProviderStatus::Inactive);
                record.provider.update_status = Some(CapacityProviderUpdateStatus::DeleteComplete);
                record.inactive_at_ms = Some(now_ms);
                Ok(())
            })
            .await?;
        Ok(DeleteCapacityProviderResponse {
            capacity_provider: Some(deleted.provider),
        })
    }

    /// Read-modify-write of an ACTIVE provider.
    async fn change_capacity_provider(
        &self,
        name: &str,
        change: impl Fn(&mut CapacityProviderRecord) -> Result<(), ApiError>,
    ) -> Result<CapacityProviderRecord, ApiError> {
        let key = keys::capacity_provider(name);
        records::mutate(self.store.as_ref(), || {
            let found = self.active_capacity_provider(name)?;
            let mut record = found.value;
            change(&mut record)?;
            record.provider.update_status_reason = None;
            let txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, record))
        })
        .await
    }

    pub(crate) async fn put_cluster_capacity_providers(
        &self,
        request: PutClusterCapacityProvidersRequest,
    ) -> Result<PutClusterCapacityProvidersResponse, ApiError> {
        let names = request.capacity_providers.clone().unwrap_or_default();
        let default_strategy = request
            .default_capacity_provider_strategy
            .clone()
            .unwrap_or_default();
        check_cluster_capacity_providers(&names, &default_strategy)?;
        let updated = records::mutate(self.store.as_ref(), || {
            let found = self.active_cluster(request.cluster.as_deref())?;
            let mut cluster = found.value;
            let cluster_name = cluster.cluster_name.clone().unwrap_or_default();
            let named = self.providers_for_cluster(&cluster_name, &names)?;
            let before = cluster.capacity_providers.clone().unwrap_or_default();
            let mut txn = Txn::new();
            for removed in before.iter().filter(|name| !names.contains(name) && !is_fargate(name)) {
                if self.capacity_provider_in_use(&cluster_name, removed)? {
                    return Err(ApiError::new(
                        "ResourceInUseException",
                        400,
                        format!("The specified capacity provider {removed} is in use and cannot be removed."),
                    ));
                }
                if let Some(provider) = self.get_capacity_provider(removed)? {
                    txn = disassociate(txn, provider, &cluster_name);
                }
            }
            txn = associate(txn, named, &cluster_name);
            cluster.capacity_providers = Some(names.clone());
            cluster.default_capacity_provider_strategy = Some(default_strategy.clone());
            let key = keys::cluster(&cluster_name);
            let txn = txn.expect(&key, found.revision).put(&key, records::encode(&cluster));
            Ok(Attempt::Commit(txn, cluster))
        })
        .await?;
        Ok(PutClusterCapacityProvidersResponse {
            cluster: Some(self.present_whole_cluster(updated)?),
        })
    }

    /// The stored providers a cluster would list, checked: each ACTIVE and
    /// associated with no other cluster. Fargate's need no record.
    pub(crate) fn providers_for_cluster(
        &self,
        cluster: &str,
        names: &[String],
    ) -> Result<Vec<Versioned<CapacityProviderRecord>>, ApiError> {
        let mut found = Vec::new();
        for name in names.iter().filter(|name| !is_fargate(name)) {
            let provider = self.active_capacity_provider(name)?;
            if let Some(other) = provider
                .value
                .cluster
                .as_deref()
                .filter(|other| *other != cluster)
            {
                return Err(ApiError::invalid_parameter(format!(
                    "The capacity provider {name} is already associated with cluster {other}: a capacity provider can be associated with one cluster only."
                )));
            }
            found.push(provider);
        }
        Ok(found)
    }

    /// Whether a service of the cluster names the provider in its strategy
    /// (its PRIMARY deployment's: older deployments' tasks count as tasks),
    /// or a task not yet stopped runs on it.
    fn capacity_provider_in_use(&self, cluster: &str, provider: &str) -> Result<bool, ApiError> {
        let services = scan::<ServiceRecord>(self.store.as_ref(), &keys::services_of(cluster))?;
        let named = services
            .iter()
            .filter_map(|found| found.value.primary())
            .any(|primary| {
                primary
                    .spec
                    .capacity_provider_strategy
                    .iter()
                    .any(|item| item.capacity_provider.as_deref() == Some(provider))
            });
        if named {
            return Ok(true);
        }
        let tasks = scan::<TaskRecord>(self.store.as_ref(), &keys::tasks_of(cluster))?;
        Ok(tasks.iter().any(|found| {
            found.value.last_status() != "STOPPED"
                && found.value.task.capacity_provider_name.as_deref() == Some(provider)
        }))
    }

    /// Adds to `txn` the release of every stored provider a deleted
    /// cluster was associated with.
    pub(crate) fn disassociate_cluster(
        &self,
        mut txn: Txn,
        cluster: &Cluster,
    ) -> Result<Txn, ApiError> {
        let name = cluster.cluster_name.as_deref().unwrap_or_default();
        for provider in cluster
            .capacity_providers
            .iter()
            .flatten()
            .filter(|p| !is_fargate(p))
        {
            if let Some(found) = self.get_capacity_provider(provider)? {
                txn = disassociate(txn, found, name);
            }
        }
        Ok(txn)
    }

    /// Adds to `txn` what keeps the providers a service's strategy names
    /// from being removed from its cluster meanwhile (see the module's
    /// invariant), checking that they are still associated with it.
    pub(crate) fn hold_capacity_providers(
        &self,
        mut txn: Txn,
        cluster: &str,
        strategy: &[CapacityProviderStrategyItem],
    ) -> Result<Txn, ApiError> {
        for item in strategy {
            let name = item.capacity_provider.as_deref().unwrap_or_default();
            if is_fargate(name) {
                continue;
            }
            let found = self.get_capacity_provider(name)?;
            let Some(found) = found
                .filter(|f| f.value.is_active() && f.value.cluster.as_deref() == Some(cluster))
            else {
                return Err(not_associated(name));
            };
            let key = keys::capacity_provider(name);
            txn = txn
                .expect(&key, found.revision)
                .put(&key, records::encode(&found.value));
        }
        Ok(txn)
    }

    /// A launch's strategy checked against its cluster: shape, weights,
    /// association (Fargate's providers too, as ECS asks). `placed` gives how many
    /// tasks each provider already runs for the launch, by name.
    pub(crate) fn launch_strategy(
        &self,
        cluster: &Cluster,
        items: &[CapacityProviderStrategyItem],
        origin: Origin,
        placed: impl Fn(&[strategy::Share]) -> Result<Vec<u32>, ApiError>,
    ) -> Result<strategy::StrategyLaunch, ApiError> {
        let shares = strategy::checked_shape(items, origin)?;
        strategy::check_weights(&shares, origin)?;
        let associated = cluster.capacity_providers.as_deref().unwrap_or_default();
        if let Some(share) = shares
            .iter()
            .find(|share| !associated.contains(&share.provider))
        {
            return Err(not_associated(&share.provider));
        }
        let placed = placed(&shares)?;
        Ok(strategy::StrategyLaunch::new(shares, placed))
    }

    /// Deletes providers INACTIVE longer than
    /// [`INACTIVE_CAPACITY_PROVIDER_RETENTION_MS`]. Called periodically by the binary.
    pub async fn collect_inactive_capacity_providers(&self) -> Result<usize, ApiError> {
        let now_ms = self.clock.now_ms();
        let expired = |record: &CapacityProviderRecord| {
            record.inactive_at_ms.is_some_and(|at| {
                now_ms.saturating_sub(at) >= INACTIVE_CAPACITY_PROVIDER_RETENTION_MS
            })
        };
        let names: Vec<String> =
            scan::<CapacityProviderRecord>(self.store.as_ref(), keys::CAPACITY_PROVIDERS)?
                .into_iter()
                .filter(|found| expired(&found.value))
                .map(|found| found.value.provider.name.unwrap_or_default())
                .collect();
        let mut deleted = 0;
        for name in names {
            let key = keys::capacity_provider(&name);
            deleted += records::mutate(self.store.as_ref(), || {
                // Re-created since it was read: it stays.
                match self.get_capacity_provider(&name)? {
                    Some(found) if expired(&found.value) => Ok(Attempt::Commit(
                        Txn::new().expect(&key, found.revision).delete(&key),
                        1,
                    )),
                    _ => Ok(Attempt::Done(0)),
                }
            })
            .await?;
        }
        Ok(deleted)
    }
}

pub(crate) fn not_associated(provider: &str) -> ApiError {
    ApiError::invalid_parameter(format!(
        "The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again. ({provider})"
    ))
}

/// Checks what a cluster's providers and default strategy would be, before
/// any record is read: how many, named once, and a default strategy of
/// listed providers whose shape ECS accepts.
pub(crate) fn check_cluster_capacity_providers(
    names: &[String],
    default_strategy: &[CapacityProviderStrategyItem],
) -> Result<(), ApiError> {
    if names.len() > CLUSTER_CAPACITY_PROVIDERS_MAX {
        return Err(ApiError::invalid_parameter(format!(
            "A cluster can have at most {CLUSTER_CAPACITY_PROVIDERS_MAX} capacity providers, got {}",
            names.len()
        )));
    }
    for (index, name) in names.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(ApiError::invalid_parameter(
                "capacityProviders cannot hold an empty name",
            ));
        }
        if names[..index].contains(name) {
            return Err(ApiError::invalid_parameter(format!(
                "capacityProviders names capacity provider {name} more than once"
            )));
        }
    }
    let shares = strategy::checked_shape(default_strategy, Origin::ClusterDefault)?;
    if let Some(share) = shares.iter().find(|share| !names.contains(&share.provider)) {
        return Err(ApiError::invalid_parameter(format!(
            "The capacity provider {} in the default capacity provider strategy is not associated with the cluster",
            share.provider
        )));
    }
    Ok(())
}

/// Adds to `txn` the association of `providers` with `cluster`, writing
/// only those not associated with it yet.
pub(crate) fn associate(
    mut txn: Txn,
    providers: Vec<Versioned<CapacityProviderRecord>>,
    cluster: &str,
) -> Txn {
    for found in providers {
        if found.value.cluster.as_deref() == Some(cluster) {
            continue;
        }
        let mut record = found.value;
        record.cluster = Some(cluster.to_owned());
        let key = keys::capacity_provider(record.provider.name.as_deref().unwrap_or_default());
        txn = txn
            .expect(&key, found.revision)
            .put(&key, records::encode(&record));
    }
    txn
}

/// Adds to `txn` the release of `found` from `cluster`, if it is associated with it.
fn disassociate(txn: Txn, found: Versioned<CapacityProviderRecord>, cluster: &str) -> Txn {
    if found.value.cluster.as_deref() != Some(cluster) {
        return txn;
    }
    let mut record = found.value;
    record.cluster = None;
    let key = keys::capacity_provider(record.provider.name.as_deref().unwrap_or_default());
    txn.expect(&key, found.revision)
        .put(&key, records::encode(&record))
}

#[cfg(test)]
mod tests;
