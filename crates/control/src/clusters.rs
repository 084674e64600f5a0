//! Clusters: CreateCluster, DescribeClusters, ListClusters, DeleteCluster,
//! UpdateCluster, UpdateClusterSettings. A cluster's capacity providers
//! are associated with it in the same transactions that write it (see
//! `capacity_providers.rs`).

use flotilla_store::Txn;
use flotilla_types::arn::Arn;
use flotilla_types::ecs::*;
use flotilla_types::ApiError;

use crate::page;
use crate::records::{self, keys, Attempt};
use crate::Ecs;

/// The cluster ECS uses when a request names none.
pub const DEFAULT_CLUSTER: &str = "default";

/// Most clusters one DescribeClusters call may name.
const DESCRIBE_CLUSTERS_MAX: usize = 100;

const CLUSTER_NAME_LENGTH_MAX: usize = 255;

/// Whether a stored cluster is ACTIVE: not deleted (INACTIVE).
pub(crate) fn is_active(cluster: &Cluster) -> bool {
    cluster.status.as_deref() == Some("ACTIVE")
}

impl Ecs {
    /// The name of the cluster a request refers to by name or ARN; the
    /// default cluster when it names none. Does not check that it exists.
    pub(crate) fn cluster_name(&self, given: Option<&str>) -> Result<String, ApiError> {
        let given = given
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .unwrap_or(DEFAULT_CLUSTER);
        if !given.starts_with("arn:") {
            return Ok(given.to_owned());
        }
        let arn = Arn::parse(given).ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "Invalid cluster identifier {given}: not a valid ARN"
            ))
        })?;
        match arn.resource_parts() {
            ("cluster", name) if arn.service == "ecs" => {
                if arn.region != self.scope.region || arn.account_id != self.scope.account_id {
                    return Err(ApiError::cluster_not_found());
                }
                Ok(name.to_owned())
            }
            _ => Err(ApiError::invalid_parameter(format!(
                "Invalid cluster identifier {given}: not a cluster ARN"
            ))),
        }
    }

    /// The id of a resource of `cluster` named by id or by ARN
    /// (`arn:...:{kind}/{cluster}/{id}`, or the short `{kind}/{id}`); `None`
    /// when the ARN is of another kind, cluster, region or account, or the id
    /// is malformed.
    pub(crate) fn resource_id_in(&self, kind: &str, cluster: &str, given: &str) -> Option<String> {
        let given = given.trim();
        let id = if given.starts_with("arn:") {
            let arn = Arn::parse(given)?;
            if !self.is_own_ecs_arn(&arn) {
                return None;
            }
            match arn.resource_parts() {
                (found, rest) if found == kind => match rest.split_once('/') {
                    Some((arn_cluster, id)) if arn_cluster == cluster => id,
                    Some(_) => return None,
                    None => rest,
                },
                _ => return None,
            }
        } else {
            given
        };
        let valid = !id.is_empty()
            && id.len() <= 64
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        valid.then(|| id.to_owned())
    }

    /// Whether an ARN names an ECS resource of this region and account.
    pub(crate) fn is_own_ecs_arn(&self, arn: &Arn<'_>) -> bool {
        arn.service == "ecs"
            && arn.region == self.scope.region
            && arn.account_id == self.scope.account_id
    }

    pub(crate) fn cluster_arn(&self, name: &str) -> String {
        self.scope.arn("ecs", &format!("cluster/{name}"))
    }

    /// The ACTIVE cluster a request refers to, or ClusterNotFoundException.
    pub(crate) fn active_cluster(
        &self,
        given: Option<&str>,
    ) -> Result<records::Versioned<Cluster>, ApiError> {
        let name = self.cluster_name(given)?;
        match records::get::<Cluster>(self.store.as_ref(), &keys::cluster(&name))? {
            Some(found) if is_active(&found.value) => Ok(found),
            _ => Err(ApiError::cluster_not_found()),
        }
    }

    /// The name of the ACTIVE cluster a request refers to, or
    /// ClusterNotFoundException.
    pub(crate) fn active_cluster_name(&self, given: Option<&str>) -> Result<String, ApiError> {
        Ok(self
            .active_cluster(given)?
            .value
            .cluster_name
            .unwrap_or_default())
    }

    pub(crate) async fn create_cluster(
        &self,
        request: CreateClusterRequest,
    ) -> Result<CreateClusterResponse, ApiError> {
        let name = request
            .cluster_name
            .clone()
            .unwrap_or_else(|| DEFAULT_CLUSTER.to_owned());
        check_cluster_name(&name)?;
        let settings = match &request.settings {
            Some(settings) => check_settings(settings)?,
            None => vec![ClusterSetting {
                name: Some(ClusterSettingName::ContainerInsights),
                value: Some(self.account_default("containerInsights")?),
            }],
        };
        let capacity_providers = request.capacity_providers.clone().unwrap_or_default();
        crate::capacity_providers::check_cluster_capacity_providers(
            &capacity_providers,
            request
                .default_capacity_provider_strategy
                .as_deref()
                .unwrap_or_default(),
        )?;
        crate::tags::check_tags(request.tags.as_deref().unwrap_or_default())?;
        let key = keys::cluster(&name);
        let cluster = Cluster {
            cluster_arn: Some(self.cluster_arn(&name)),
            cluster_name: Some(name.clone()),
            status: Some("ACTIVE".to_owned()),
            configuration: request.configuration.clone(),
            settings: Some(settings),
            tags: Some(request.tags.clone().unwrap_or_default()),
            capacity_providers: Some(request.capacity_providers.clone().unwrap_or_default()),
            default_capacity_provider_strategy: Some(
                request
                    .default_capacity_provider_strategy
                    .clone()
                    .unwrap_or_default(),
            ),
            service_connect_defaults: request.service_connect_defaults.as_ref().map(|d| {
                ClusterServiceConnectDefaults {
                    namespace: d.namespace.clone(),
                }
            }),
            ..Default::default()
        };
        let stored = records::mutate(self.store.as_ref(), || {
            // Creating a cluster that already exists returns it unchanged, as ECS does.
            match records::get::<Cluster>(self.store.as_ref(), &key)? {
                Some(existing) if is_active(&existing.value) => Ok(Attempt::Done(existing.value)),
                existing => {
                    let revision = existing.map_or(0, |e| e.revision);
                    let providers = self.providers_for_cluster(&name, &capacity_providers)?;
                    let txn = crate::capacity_providers::associate(Txn::new(), providers, &name);
                    let txn = txn
                        .expect(&key, revision)
                        .put(&key, records::encode(&cluster));
                    Ok(Attempt::Commit(txn, cluster.clone()))
                }
            }
        })
        .await?;
        Ok(CreateClusterResponse {
            cluster: Some(self.present_cluster(stored, &AllIncludes)?),
        })
    }

    pub(crate) fn describe_clusters(
        &self,
        request: DescribeClustersRequest,
    ) -> Result<DescribeClustersResponse, ApiError> {
        let wanted = request
            .clusters
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_CLUSTER.to_owned()]);
        if wanted.len() > DESCRIBE_CLUSTERS_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "clusters can name at most {DESCRIBE_CLUSTERS_MAX} clusters, got {}",
                wanted.len()
            )));
        }
        let include = request.include.clone().unwrap_or_default();
        let mut clusters = Vec::new();
        let mut failures = Vec::new();
        for given in &wanted {
            let name = self.cluster_name(Some(given));
            let found = match &name {
                Ok(name) => records::get::<Cluster>(self.store.as_ref(), &keys::cluster(name))?,
                Err(_) => None,
            };
            match found {
                Some(found) => clusters.push(self.present_cluster(found.value, &include)?),
                None => failures.push(Failure {
                    arn: Some(match &name {
                        Ok(name) => self.cluster_arn(name),
                        Err(_) => given.clone(),
                    }),
                    reason: Some("MISSING".to_owned()),
                    detail: None,
                }),
            }
        }
        Ok(DescribeClustersResponse {
            clusters: Some(clusters),
            failures: Some(failures),
        })
    }

    pub(crate) fn list_clusters(
        &self,
        request: ListClustersRequest,
    ) -> Result<ListClustersResponse, ApiError> {
        let limit = page::max_results(request.max_results, 100, 100)?;
        let listing = page::list(
            self.store.as_ref(),
            keys::CLUSTERS,
            request.next_token.as_deref(),
            limit,
            |entry| {
                let cluster: Cluster = records::decode(entry)?;
                Ok(is_active(&cluster).then(|| cluster.cluster_arn.unwrap_or_default()))
            },
        )?;
        Ok(ListClustersResponse {
            cluster_arns: Some(listing.items),
            next_token: listing.next_token,
        })
    }

    pub(crate) async fn delete_cluster(
        &self,
        request: DeleteClusterRequest,
    ) -> Result<DeleteClusterResponse, ApiError> {
        let given = request.cluster.as_deref();
        let deleted = records::mutate(self.store.as_ref(), || {
            let found = self.active_cluster(given)?;
            let name = found.value.cluster_name.clone().unwrap_or_default();
            self.check_cluster_empty(&name)?;
            let mut cluster = found.value;
            cluster.status = Some("INACTIVE".to_owned());
            let key = keys::cluster(&name);
            // Its capacity providers are free for another cluster, or to be deleted.
            let txn = self.disassociate_cluster(Txn::new(), &cluster)?;
            let txn = txn
                .expect(&key, found.revision)
                .put(&key, records::encode(&cluster));
            Ok(Attempt::Commit(txn, cluster))
        })
        .await?;
        Ok(DeleteClusterResponse {
            cluster: Some(self.present_cluster(deleted, &AllIncludes)?),
        })
    }

    /// Refuses to delete a cluster that still holds instances, services or tasks.
    fn check_cluster_empty(&self, name: &str) -> Result<(), ApiError> {
        let has_any = |prefix: String| -> Result<bool, ApiError> {
            let page = self
                .store
                .list(&prefix, None, 1)
                .map_err(records::store_error)?;
            Ok(!page.entries.is_empty())
        };
        let counts = self.cluster_counts(name)?;
        if counts.instances > 0 {
            return Err(ApiError::new(
                "ClusterContainsContainerInstancesException",
                400,
                "The Cluster cannot be deleted while Container Instances are active or draining.",
            ));
        }
        if has_any(keys::services_of(name))? {
            return Err(ApiError::new(
                "ClusterContainsServicesException",
                400,
                "The Cluster cannot be deleted while Services are active.",
            ));
        }
        // Stopped tasks wait out their retention and do not hold the cluster.
        if counts.running_tasks + counts.pending_tasks + counts.stopping_tasks > 0 {
            return Err(ApiError::new(
                "ClusterContainsTasksException",
                400,
                "The Cluster cannot be deleted while Tasks are active.",
            ));
        }
        Ok(())
    }

    pub(crate) async fn update_cluster(
        &self,
        request: UpdateClusterRequest,
    ) -> Result<UpdateClusterResponse, ApiError> {
        let settings = request
            .settings
            .as_deref()
            .map(check_settings)
            .transpose()?;
        let updated = self
            .change_cluster(
                Some(&request.cluster.clone().unwrap_or_default()),
                |cluster| {
                    if let Some(settings) = &settings {
                        merge_settings(cluster, settings);
                    }
                    if let Some(configuration) = &request.configuration {
                        cluster.configuration = Some(configuration.clone());
                    }
                    if let Some(defaults) = &request.service_connect_defaults {
                        cluster.service_connect_defaults = Some(ClusterServiceConnectDefaults {
                            namespace: defaults.namespace.clone(),
                        });
                    }
                },
            )
            .await?;
        Ok(UpdateClusterResponse {
            cluster: Some(self.present_cluster(updated, &AllIncludes)?),
        })
    }

    pub(crate) async fn update_cluster_settings(
        &self,
        request: UpdateClusterSettingsRequest,
    ) -> Result<UpdateClusterSettingsResponse, ApiError> {
        let settings = check_settings(request.settings.as_deref().unwrap_or_default())?;
        let updated = self
            .change_cluster(request.cluster.as_deref(), |cluster| {
                merge_settings(cluster, &settings)
            })
            .await?;
        Ok(UpdateClusterSettingsResponse {
            cluster: Some(self.present_cluster(updated, &AllIncludes)?),
        })
    }

    /// Read-modify-write of an ACTIVE cluster.
    async fn change_cluster(
        &self,
        given: Option<&str>,
        change: impl Fn(&mut Cluster),
    ) -> Result<Cluster, ApiError> {
        records::mutate(self.store.as_ref(), || {
            let found = self.active_cluster(given)?;
            let mut cluster = found.value;
            change(&mut cluster);
            let key = keys::cluster(cluster.cluster_name.as_deref().unwrap_or_default());
            let txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&cluster));
            Ok(Attempt::Commit(txn, cluster))
        })
        .await
    }

    /// The cluster as create, update and delete answer with it: all of it
    /// but statistics, which are `[]`.
    pub(crate) fn present_whole_cluster(&self, cluster: Cluster) -> Result<Cluster, ApiError> {
        self.present_cluster(cluster, &AllIncludes)
    }

    /// The cluster as DescribeClusters shows it: counts computed from what
    /// the cluster holds now, optional parts only when asked for.
    fn present_cluster(
        &self,
        mut cluster: Cluster,
        include: &dyn Includes,
    ) -> Result<Cluster, ApiError> {
        let name = cluster.cluster_name.clone().unwrap_or_default();
        let counts = self.cluster_counts(&name)?;
        cluster.registered_container_instances_count = Some(counts.instances);
        cluster.running_tasks_count = Some(counts.running_tasks);
        cluster.pending_tasks_count = Some(counts.pending_tasks);
        cluster.active_services_count = Some(counts.active_services);
        // AWS always returns the key: empty unless STATISTICS was asked for.
        cluster.statistics = Some(if include.has(ClusterField::Statistics) {
            counts.statistics()
        } else {
            Vec::new()
        });
        if !include.has(ClusterField::Settings) {
            cluster.settings = None;
        }
        if !include.has(ClusterField::Tags) {
            cluster.tags = None;
        }
        if !include.has(ClusterField::Configurations) {
            cluster.configuration = None;
        }
        if include.has(ClusterField::Attachments) {
            cluster.attachments.get_or_insert_with(Vec::new);
        } else {
            cluster.attachments = None;
        }
        Ok(cluster)
    }

    pub(crate) fn cluster_counts(&self, name: &str) -> Result<ClusterCounts, ApiError> {
        let count = |prefix: String| -> Result<i32, ApiError> {
            let page = self
                .store
                .list(&prefix, None, flotilla_store::LIST_LIMIT_MAX)
                .map_err(records::store_error)?;
            Ok(page.entries.len() as i32)
        };
        // Deregistered instances wait out their retention as INACTIVE and
        // no longer count as registered.
        let instances = crate::instances::scan::<crate::instances::InstanceRecord>(
            self.store.as_ref(),
            &keys::instances_of(name),
        )?
        .iter()
        .filter(|found| found.value.is_live() && !found.value.is_fargate())
        .count() as i32;
        let mut counts = ClusterCounts {
            instances,
            running_tasks: 0,
            pending_tasks: 0,
            stopping_tasks: 0,
            active_services: count(keys::services_of(name))?,
        };
        for task in crate::instances::scan::<crate::tasks::TaskRecord>(
            self.store.as_ref(),
            &keys::tasks_of(name),
        )? {
            match task.value.last_status() {
                "RUNNING" => counts.running_tasks += 1,
                "PROVISIONING" | "PENDING" | "ACTIVATING" => counts.pending_tasks += 1,
                "STOPPED" => {}
                _ => counts.stopping_tasks += 1,
            }
        }
        Ok(counts)
    }
}

pub(crate) struct ClusterCounts {
    pub(crate) instances: i32,
    pub(crate) running_tasks: i32,
    pub(crate) pending_tasks: i32,
    /// Between RUNNING and STOPPED: counted by neither ECS figure, but not gone.
    pub(crate) stopping_tasks: i32,
    pub(crate) active_services: i32,
}

impl ClusterCounts {
    fn statistics(&self) -> Vec<KeyValuePair> {
        let pair = |name: &str, value: i32| KeyValuePair {
            name: Some(name.to_owned()),
            value: Some(value.to_string()),
        };
        vec![
            pair("runningEC2TasksCount", self.running_tasks),
            pair("runningFargateTasksCount", 0),
            pair("pendingEC2TasksCount", self.pending_tasks),
            pair("pendingFargateTasksCount", 0),
            pair("activeEC2ServiceCount", self.active_services),
            pair("activeFargateServiceCount", 0),
            pair("drainingEC2ServiceCount", 0),
            pair("drainingFargateServiceCount", 0),
        ]
    }
}

/// Which optional parts of a cluster a response carries.
trait Includes {
    fn has(&self, field: ClusterField) -> bool;
}

impl Includes for Vec<ClusterField> {
    fn has(&self, field: ClusterField) -> bool {
        self.contains(&field)
    }
}

/// Create, update and delete answer with the whole cluster.
struct AllIncludes;

impl Includes for AllIncludes {
    fn has(&self, field: ClusterField) -> bool {
        field != ClusterField::Statistics
    }
}

fn check_cluster_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= CLUSTER_NAME_LENGTH_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid_parameter(format!(
            "Invalid cluster name {name:?}: up to {CLUSTER_NAME_LENGTH_MAX} letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed"
        )))
    }
}

fn check_settings(settings: &[ClusterSetting]) -> Result<Vec<ClusterSetting>, ApiError> {
    for (index, setting) in settings.iter().enumerate() {
        let name = setting.name.ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "1 validation error detected: Value null at 'settings.{}.member.name' failed to satisfy constraint: Member must not be null",
                index + 1
            ))
        })?;
        let value = setting.value.as_deref().unwrap_or_default();
        match name {
            ClusterSettingName::ContainerInsights => {
                if !matches!(value, "enabled" | "disabled" | "enhanced") {
                    return Err(ApiError::invalid_parameter(format!(
                        "Invalid value {value:?} for cluster setting containerInsights: must be enabled, disabled or enhanced"
                    )));
                }
            }
        }
    }
    Ok(settings.to_vec())
}

fn merge_settings(cluster: &mut Cluster, settings: &[ClusterSetting]) {
    let current = cluster.settings.get_or_insert_with(Vec::new);
    for setting in settings {
        match current.iter_mut().find(|c| c.name == setting.name) {
            Some(existing) => existing.value = setting.value.clone(),
            None => current.push(setting.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ecs;

    #[tokio::test]
    async fn create_describe_delete() {
        let ecs = ecs();
        let created = ecs
            .create_cluster(CreateClusterRequest {
                cluster_name: Some("web".into()),
                ..Default::default()
            })
            .await
            .expect("create");
        let cluster = created.cluster.expect("cluster");
        assert_eq!(
            cluster.cluster_arn.as_deref(),
            Some("arn:aws:ecs:us-east-1:000000000000:cluster/web")
        );
        assert_eq!(cluster.status.as_deref(), Some("ACTIVE"));

        let listed = ecs
            .list_clusters(ListClustersRequest::default())
            .expect("list");
        assert_eq!(listed.cluster_arns.expect("arns").len(), 1);

        let described = ecs
            .describe_clusters(DescribeClustersRequest {
                clusters: Some(vec!["web".into(), "nope".into()]),
                ..Default::default()
            })
            .expect("describe");
        assert_eq!(described.clusters.expect("clusters").len(), 1);
        let failures = described.failures.expect("failures");
        assert_eq!(failures[0].reason.as_deref(), Some("MISSING"));

        ecs.delete_cluster(DeleteClusterRequest {
            cluster: Some("web".into()),
        })
        .await
        .expect("delete");
        let listed = ecs
            .list_clusters(ListClustersRequest::default())
            .expect("list");
        assert!(listed.cluster_arns.expect("arns").is_empty());
        let again = ecs
            .delete_cluster(DeleteClusterRequest {
                cluster: Some("web".into()),
            })
            .await;
        assert_eq!(
            again.expect_err("inactive").code,
            "ClusterNotFoundException"
        );
    }

    #[tokio::test]
    async fn list_paginates() {
        let ecs = ecs();
        for i in 0..5 {
            let name = format!("c{i}");
            ecs.create_cluster(CreateClusterRequest {
                cluster_name: Some(name),
                ..Default::default()
            })
            .await
            .expect("create");
        }
        let mut token = None;
        let mut seen = Vec::new();
        loop {
            let page = ecs
                .list_clusters(ListClustersRequest {
                    max_results: Some(2),
                    next_token: token,
                })
                .expect("list");
            seen.extend(page.cluster_arns.expect("arns"));
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
        assert_eq!(seen.len(), 5);
        let bad = ecs.list_clusters(ListClustersRequest {
            max_results: Some(0),
            next_token: None,
        });
        assert_eq!(bad.expect_err("zero").code, "InvalidParameterException");
    }

    #[tokio::test]
    async fn bad_names_are_refused() {
        let ecs = ecs();
        for name in ["", "has space", &"x".repeat(256)] {
            let result = ecs
                .create_cluster(CreateClusterRequest {
                    cluster_name: Some(name.into()),
                    ..Default::default()
                })
                .await;
            assert_eq!(result.expect_err(name).code, "InvalidParameterException");
        }
    }
}
