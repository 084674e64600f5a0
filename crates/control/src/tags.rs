//! Tags on resources: TagResource, UntagResource, ListTagsForResource.
//!
//! Tags live inside the record of the resource they label, so they are
//! written in the same transaction as the resource and vanish with it.

use flotilla_store::Txn;
use flotilla_types::arn::Arn;
use flotilla_types::ecs::*;
use flotilla_types::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::capacity_providers::CapacityProviderRecord;
use crate::records::{self, keys, Attempt};
use crate::task_definitions::TaskDefinitionRecord;
use crate::Ecs;

/// Most tags one resource may carry, as ECS allows.
pub const TAGS_PER_RESOURCE_MAX: usize = 50;
const TAG_KEY_LENGTH_MAX: usize = 128;
const TAG_VALUE_LENGTH_MAX: usize = 256;

/// Checks tags as ECS does: bounded count and lengths, no reserved prefix.
pub fn check_tags(tags: &[Tag]) -> Result<(), ApiError> {
    if tags.len() > TAGS_PER_RESOURCE_MAX {
        return Err(ApiError::invalid_parameter(format!(
            "a resource can have at most {TAGS_PER_RESOURCE_MAX} tags, got {}",
            tags.len()
        )));
    }
    for tag in tags {
        let key = tag.key.as_deref().unwrap_or_default();
        let value = tag.value.as_deref().unwrap_or_default();
        check_tag_key(key)?;
        if value.chars().count() > TAG_VALUE_LENGTH_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "tag value for key {key:?} is longer than {TAG_VALUE_LENGTH_MAX} characters"
            )));
        }
    }
    Ok(())
}

fn check_tag_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.chars().count() > TAG_KEY_LENGTH_MAX {
        return Err(ApiError::invalid_parameter(format!(
            "tag key {key:?} must be 1 to {TAG_KEY_LENGTH_MAX} characters"
        )));
    }
    if is_reserved_key(key) {
        return Err(ApiError::invalid_parameter(format!(
            "tag key {key:?} uses the reserved prefix aws:"
        )));
    }
    Ok(())
}

/// `incoming` over `current`: same keys replaced, new keys appended.
pub fn merge_tags(current: &mut Vec<Tag>, incoming: &[Tag]) {
    for tag in incoming {
        match current.iter_mut().find(|c| c.key == tag.key) {
            Some(existing) => existing.value = tag.value.clone(),
            None => current.push(tag.clone()),
        }
    }
}

/// The ECS-managed tag naming a task's cluster.
pub const MANAGED_CLUSTER_TAG: &str = "aws:ecs:clusterName";
/// The ECS-managed tag naming the service a task belongs to.
pub const MANAGED_SERVICE_TAG: &str = "aws:ecs:serviceName";

/// The service a new task belongs to, as its tags need it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServiceTags<'a> {
    pub name: &'a str,
    pub tags: &'a [Tag],
}

/// Where a new task's tags come from, whoever starts it: RunTask,
/// StartTask or the service scheduler.
pub(crate) struct TaskTagSources<'a> {
    pub cluster: &'a str,
    /// The tags the request gives the task itself.
    pub own: &'a [Tag],
    pub propagate: Option<PropagateTags>,
    /// The task definition's tags.
    pub definition: &'a [Tag],
    pub service: Option<ServiceTags<'a>>,
    /// enableECSManagedTags.
    pub managed: bool,
}

/// A new task's tags, as ECS gives them: the task definition's or the
/// service's (as `propagate` says), the task's own over them where a key is
/// both, then with managed tags on, `aws:ecs:clusterName` and, for a
/// service's task, `aws:ecs:serviceName`. Managed tags do not count towards
/// [`TAGS_PER_RESOURCE_MAX`], as `aws:` tags do not in ECS.
pub(crate) fn task_tags(sources: &TaskTagSources<'_>) -> Result<Vec<Tag>, ApiError> {
    check_tags(sources.own)?;
    let mut tags = match sources.propagate {
        Some(PropagateTags::TaskDefinition) => sources.definition.to_vec(),
        Some(PropagateTags::Service) => match sources.service {
            Some(service) => service.tags.to_vec(),
            None => {
                return Err(ApiError::invalid_parameter(
                    "propagateTags SERVICE applies to the tasks of a service only: a task started on its own can propagate TASK_DEFINITION tags",
                ))
            }
        },
        Some(PropagateTags::None) | None => Vec::new(),
    };
    merge_tags(&mut tags, sources.own);
    check_tags(&tags)?;
    if sources.managed {
        let managed = |key: &str, value: &str| Tag {
            key: Some(key.to_owned()),
            value: Some(value.to_owned()),
        };
        tags.push(managed(MANAGED_CLUSTER_TAG, sources.cluster));
        if let Some(service) = sources.service {
            tags.push(managed(MANAGED_SERVICE_TAG, service.name));
        }
    }
    Ok(tags)
}

/// A resource that can carry tags, located by its ARN.
enum Tagged {
    Cluster(String),
    TaskDefinition { family: String, revision: i32 },
    Service { cluster: String, name: String },
    Task { cluster: String, task_id: String },
    CapacityProvider(String),
}

impl Ecs {
    fn tagged_resource(&self, arn_text: &str) -> Result<Tagged, ApiError> {
        let invalid = || ApiError::invalid_parameter(format!("Invalid resourceArn {arn_text:?}"));
        let arn = Arn::parse(arn_text).ok_or_else(invalid)?;
        if arn.service != "ecs"
            || arn.region != self.scope.region
            || arn.account_id != self.scope.account_id
        {
            return Err(ApiError::resource_not_found(format!(
                "The specified resource {arn_text} was not found"
            )));
        }
        match arn.resource_parts() {
            ("cluster", name) => Ok(Tagged::Cluster(name.to_owned())),
            ("task-definition", id) => {
                let (family, revision) = id.rsplit_once(':').ok_or_else(invalid)?;
                let revision = revision.parse().map_err(|_| invalid())?;
                Ok(Tagged::TaskDefinition {
                    family: family.to_owned(),
                    revision,
                })
            }
            ("service", rest) => {
                let (cluster, name) = rest.split_once('/').ok_or_else(invalid)?;
                Ok(Tagged::Service {
                    cluster: cluster.to_owned(),
                    name: name.to_owned(),
                })
            }
            ("task", rest) => {
                let (cluster, task_id) = rest.split_once('/').ok_or_else(invalid)?;
                Ok(Tagged::Task {
                    cluster: cluster.to_owned(),
                    task_id: task_id.to_owned(),
                })
            }
            ("capacity-provider", name) => Ok(Tagged::CapacityProvider(name.to_owned())),
            _ => Err(ApiError::invalid_parameter(format!(
                "Tagging is not supported for resource {arn_text}"
            ))),
        }
    }

    pub(crate) async fn tag_resource(
        &self,
        request: TagResourceRequest,
    ) -> Result<TagResourceResponse, ApiError> {
        let incoming = request.tags.unwrap_or_default();
        check_tags(&incoming)?;
        let arn = request.resource_arn.unwrap_or_default();
        self.change_tags(&arn, |tags| {
            merge_tags(tags, &incoming);
            check_tags(tags)
        })
        .await?;
        Ok(TagResourceResponse {})
    }

    pub(crate) async fn untag_resource(
        &self,
        request: UntagResourceRequest,
    ) -> Result<UntagResourceResponse, ApiError> {
        let remove = request.tag_keys.unwrap_or_default();
        for key in &remove {
            check_tag_key(key)?;
        }
        let arn = request.resource_arn.unwrap_or_default();
        self.change_tags(&arn, |tags| {
            tags.retain(|tag| !remove.iter().any(|key| tag.key.as_deref() == Some(key)));
            Ok(())
        })
        .await?;
        Ok(UntagResourceResponse {})
    }

    pub(crate) fn list_tags_for_resource(
        &self,
        request: ListTagsForResourceRequest,
    ) -> Result<ListTagsForResourceResponse, ApiError> {
        let arn = request.resource_arn.unwrap_or_default();
        let tags = self
            .resource_tags(&arn)
            .map_err(|error| listing_error(error, &arn))?;
        Ok(ListTagsForResourceResponse { tags: Some(tags) })
    }

    fn resource_tags(&self, arn: &str) -> Result<Vec<Tag>, ApiError> {
        let arn = arn.to_owned();
        Ok(match self.tagged_resource(&arn)? {
            Tagged::Cluster(name) => {
                let cluster = self.active_cluster(Some(&name))?;
                cluster.value.tags.unwrap_or_default()
            }
            Tagged::TaskDefinition { family, revision } => {
                let key = keys::task_definition(&family, revision);
                let found = records::get::<TaskDefinitionRecord>(self.store.as_ref(), &key)?;
                found
                    .ok_or_else(|| task_definition_not_found(&arn))?
                    .value
                    .tags
            }
            Tagged::Service { cluster, name } => {
                let found = self.get_service(&cluster, &name)?;
                found
                    .ok_or_else(crate::services::service_not_found)?
                    .value
                    .service
                    .tags
                    .unwrap_or_default()
            }
            Tagged::Task { cluster, task_id } => {
                let found = self.get_task(&cluster, &task_id)?;
                found
                    .ok_or_else(|| task_not_found(&arn))?
                    .value
                    .task
                    .tags
                    .unwrap_or_default()
            }
            Tagged::CapacityProvider(name) => {
                let found = records::get::<CapacityProviderRecord>(
                    self.store.as_ref(),
                    &keys::capacity_provider(&name),
                )?;
                let found = found
                    .filter(|f| f.value.is_active())
                    .ok_or_else(|| capacity_provider_not_found(&arn))?;
                found.value.provider.tags.unwrap_or_default()
            }
        })
    }

    async fn change_tags(
        &self,
        arn: &str,
        change: impl Fn(&mut Vec<Tag>) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        match self.tagged_resource(arn)? {
            Tagged::Cluster(name) => {
                let key = keys::cluster(&name);
                self.change_record::<Cluster>(&key, ApiError::cluster_not_found, |cluster| {
                    if cluster.status.as_deref() != Some("ACTIVE") {
                        return Err(ApiError::cluster_not_found());
                    }
                    change(cluster.tags.get_or_insert_with(Vec::new))
                })
                .await
            }
            Tagged::TaskDefinition { family, revision } => {
                let key = keys::task_definition(&family, revision);
                let missing = || task_definition_not_found(arn);
                self.change_record::<TaskDefinitionRecord>(&key, missing, |record| {
                    change(&mut record.tags)
                })
                .await
            }
            Tagged::Service { cluster, name } => {
                let key = keys::service(&cluster, &name);
                self.change_record::<crate::services::ServiceRecord>(
                    &key,
                    crate::services::service_not_found,
                    |record| change(record.service.tags.get_or_insert_with(Vec::new)),
                )
                .await
            }
            Tagged::Task { cluster, task_id } => {
                let key = keys::task(&cluster, &task_id);
                let missing = || task_not_found(arn);
                self.change_record::<crate::tasks::TaskRecord>(&key, missing, |record| {
                    // Managed tags (aws:) are ECS's: the user's change works
                    // on the others, and they stay.
                    let tags = record.task.tags.get_or_insert_with(Vec::new);
                    let (mut mine, managed): (Vec<Tag>, Vec<Tag>) = std::mem::take(tags)
                        .into_iter()
                        .partition(|tag| !is_reserved(tag));
                    change(&mut mine)?;
                    *tags = mine;
                    tags.extend(managed);
                    Ok(())
                })
                .await
            }
            Tagged::CapacityProvider(name) => {
                let key = keys::capacity_provider(&name);
                let missing = || capacity_provider_not_found(arn);
                self.change_record::<CapacityProviderRecord>(&key, missing, |record| {
                    if !record.is_active() {
                        return Err(missing());
                    }
                    change(record.provider.tags.get_or_insert_with(Vec::new))
                })
                .await
            }
        }
    }

    /// Read-modify-write of one record, retried on conflict.
    async fn change_record<T: DeserializeOwned + Serialize>(
        &self,
        key: &str,
        missing: impl Fn() -> ApiError,
        change: impl Fn(&mut T) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        records::mutate(self.store.as_ref(), || {
            let found = records::get::<T>(self.store.as_ref(), key)?.ok_or_else(&missing)?;
            let mut value = found.value;
            change(&mut value)?;
            let txn = Txn::new()
                .expect(key, found.revision)
                .put(key, records::encode(&value));
            Ok(Attempt::Commit(txn, ()))
        })
        .await
    }
}

/// Keys under `aws:` (any case) are ECS's own.
fn is_reserved_key(key: &str) -> bool {
    key.to_ascii_lowercase().starts_with("aws:")
}

fn is_reserved(tag: &Tag) -> bool {
    tag.key.as_deref().is_some_and(is_reserved_key)
}

/// ListTagsForResource has no ResourceNotFoundException or
/// ServiceNotFoundException in ECS's model: a resource that does not exist
/// is an invalid parameter there.
fn listing_error(error: ApiError, arn: &str) -> ApiError {
    match error.code {
        "ResourceNotFoundException" => ApiError::invalid_parameter(error.message),
        "ServiceNotFoundException" => {
            ApiError::invalid_parameter(format!("The specified service {arn} was not found"))
        }
        _ => error,
    }
}

fn task_not_found(arn: &str) -> ApiError {
    ApiError::resource_not_found(format!("The specified task {arn} was not found"))
}

fn capacity_provider_not_found(arn: &str) -> ApiError {
    ApiError::resource_not_found(format!(
        "The specified capacity provider {arn} was not found"
    ))
}

fn task_definition_not_found(arn: &str) -> ApiError {
    ApiError::resource_not_found(format!("The specified task definition {arn} was not found"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ecs;

    fn tag(key: &str, value: &str) -> Tag {
        Tag {
            key: Some(key.into()),
            value: Some(value.into()),
        }
    }

    #[tokio::test]
    async fn tag_untag_list_on_a_cluster() {
        let ecs = ecs();
        ecs.create_cluster(CreateClusterRequest {
            cluster_name: Some("c".into()),
            ..Default::default()
        })
        .await
        .expect("create");
        let arn = "arn:aws:ecs:us-east-1:000000000000:cluster/c".to_owned();
        ecs.tag_resource(TagResourceRequest {
            resource_arn: Some(arn.clone()),
            tags: Some(vec![tag("team", "a"), tag("env", "dev")]),
        })
        .await
        .expect("tag");
        ecs.tag_resource(TagResourceRequest {
            resource_arn: Some(arn.clone()),
            tags: Some(vec![tag("team", "b")]),
        })
        .await
        .expect("retag");
        ecs.untag_resource(UntagResourceRequest {
            resource_arn: Some(arn.clone()),
            tag_keys: Some(vec!["env".into()]),
        })
        .await
        .expect("untag");
        let listed = ecs
            .list_tags_for_resource(ListTagsForResourceRequest {
                resource_arn: Some(arn.clone()),
            })
            .expect("list");
        assert_eq!(listed.tags, Some(vec![tag("team", "b")]));

        let reserved = ecs
            .tag_resource(TagResourceRequest {
                resource_arn: Some(arn),
                tags: Some(vec![tag("aws:x", "1")]),
            })
            .await;
        assert_eq!(
            reserved.expect_err("reserved").code,
            "InvalidParameterException"
        );
        let missing = ecs.list_tags_for_resource(ListTagsForResourceRequest {
            resource_arn: Some("arn:aws:ecs:us-east-1:000000000000:cluster/none".into()),
        });
        assert_eq!(
            missing.expect_err("missing").code,
            "ClusterNotFoundException"
        );
    }
}
