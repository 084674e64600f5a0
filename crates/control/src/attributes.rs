//! Custom attributes: PutAttributes, DeleteAttributes, ListAttributes.
//!
//! ECS's only target type is `container-instance`. An attribute lives in its
//! instance's [`InstanceRecord`] next to the agent's own, so the next
//! placement (`memberOf`, `spread(attribute:...)`) and ListContainerInstances
//! filter see it without another read. One call changes all the instances it
//! names in one transaction, conditional on the revisions read.

use std::collections::BTreeMap;

use flotilla_store::Txn;
use flotilla_types::ecs::*;
use flotilla_types::ApiError;

use crate::instances::{InstanceRecord, ATTRIBUTES_PER_INSTANCE_MAX};
use crate::page;
use crate::records::{self, keys, Attempt};
use crate::Ecs;

/// Most attributes one PutAttributes or DeleteAttributes call may carry, as ECS allows.
const ATTRIBUTES_PER_CALL_MAX: usize = 10;
const NAME_LENGTH_MAX: usize = 128;
const VALUE_LENGTH_MAX: usize = 128;
const LIST_RESULTS_MAX: usize = 100;

fn target_not_found(target: &str) -> ApiError {
    ApiError::new(
        "TargetNotFoundException",
        400,
        format!("Could not find the specified target {target}"),
    )
}

/// Letters, digits, hyphens, underscores, periods, at signs and forward slashes.
fn check_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= NAME_LENGTH_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '/'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid_parameter(format!(
            "attribute name {name:?} must be 1 to {NAME_LENGTH_MAX} letters, numbers, hyphens, underscores, periods, at signs or forward slashes"
        )))
    }
}

/// As ECS words it: letters, digits, hyphens, underscores, periods, at
/// signs, forward and back slashes, colons and spaces, not starting or ending with a space.
fn check_value(name: &str, value: &str) -> Result<(), ApiError> {
    let valid = !value.is_empty()
        && value.len() <= VALUE_LENGTH_MAX
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '/' | '\\' | ':' | ' ')
        });
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid_parameter(format!(
            "the value of attribute {name} must be 1 to {VALUE_LENGTH_MAX} letters, numbers, hyphens, underscores, periods, at signs, slashes, colons or spaces, not starting or ending with a space"
        )))
    }
}

impl Ecs {
    /// The instance id an attribute targets, or TargetNotFoundException.
    fn attribute_target(&self, cluster: &str, attribute: &Attribute) -> Result<String, ApiError> {
        let Some(target) = attribute
            .target_id
            .as_deref()
            .filter(|t| !t.trim().is_empty())
        else {
            return Err(ApiError::invalid_parameter(format!(
                "attribute {} needs a targetId",
                attribute.name.as_deref().unwrap_or_default()
            )));
        };
        if !target.starts_with("arn:") && attribute.target_type.is_none() {
            return Err(ApiError::invalid_parameter(format!(
                "targetType is required when targetId {target} is not an ARN"
            )));
        }
        self.instance_id_in(cluster, target)
            .ok_or_else(|| target_not_found(target))
    }

    /// Reads every target, lets `change` edit each one's attributes, and
    /// commits them in one transaction.
    async fn change_attributes(
        &self,
        cluster_given: Option<&str>,
        attributes: &[Attribute],
        change: impl Fn(&mut Vec<Attribute>, &Attribute),
    ) -> Result<Vec<Attribute>, ApiError> {
        let cluster = self.active_cluster_name(cluster_given)?;
        if attributes.is_empty() || attributes.len() > ATTRIBUTES_PER_CALL_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "attributes must hold 1 to {ATTRIBUTES_PER_CALL_MAX} attributes, got {}",
                attributes.len()
            )));
        }
        let mut targets = Vec::with_capacity(attributes.len());
        for attribute in attributes {
            targets.push(self.attribute_target(&cluster, attribute)?);
        }
        records::mutate(self.store.as_ref(), || {
            let mut read: BTreeMap<&str, records::Versioned<InstanceRecord>> = BTreeMap::new();
            let mut answer = Vec::with_capacity(attributes.len());
            for (attribute, instance_id) in attributes.iter().zip(&targets) {
                if !read.contains_key(instance_id.as_str()) {
                    let found = self
                        .get_instance(&cluster, instance_id)?
                        .filter(|found| found.value.is_live())
                        .ok_or_else(|| {
                            target_not_found(attribute.target_id.as_deref().unwrap_or_default())
                        })?;
                    read.insert(instance_id, found);
                }
                let Some(found) = read.get_mut(instance_id.as_str()) else {
                    continue;
                };
                let own = found.value.instance.attributes.get_or_insert_with(Vec::new);
                change(own, attribute);
                if own.len() > ATTRIBUTES_PER_INSTANCE_MAX {
                    return Err(ApiError::invalid_parameter(format!(
                        "an instance can have at most {ATTRIBUTES_PER_INSTANCE_MAX} attributes"
                    )));
                }
                answer.push(Attribute {
                    name: attribute.name.clone(),
                    value: attribute.value.clone(),
                    target_type: Some(TargetType::ContainerInstance),
                    target_id: Some(found.value.arn()),
                });
            }
            let mut txn = Txn::new();
            for (instance_id, found) in read {
                let mut record = found.value;
                record.touch();
                let key = keys::instance(&cluster, instance_id);
                txn = txn
                    .expect(&key, found.revision)
                    .put(&key, records::encode(&record));
            }
            Ok(Attempt::Commit(txn, answer.clone()))
        })
        .await
    }

    pub(crate) async fn put_attributes(
        &self,
        request: PutAttributesRequest,
    ) -> Result<PutAttributesResponse, ApiError> {
        let given = request.attributes.unwrap_or_default();
        for attribute in &given {
            let name = attribute.name.as_deref().unwrap_or_default();
            check_name(name)?;
            if let Some(value) = attribute.value.as_deref() {
                check_value(name, value)?;
            }
        }
        let attributes = self
            .change_attributes(request.cluster.as_deref(), &given, |own, attribute| {
                let stored = Attribute {
                    name: attribute.name.clone(),
                    value: attribute.value.clone(),
                    ..Default::default()
                };
                match own.iter_mut().find(|a| a.name == attribute.name) {
                    Some(existing) => *existing = stored,
                    None => own.push(stored),
                }
            })
            .await?;
        Ok(PutAttributesResponse {
            attributes: Some(attributes),
        })
    }

    pub(crate) async fn delete_attributes(
        &self,
        request: DeleteAttributesRequest,
    ) -> Result<DeleteAttributesResponse, ApiError> {
        let given = request.attributes.unwrap_or_default();
        for attribute in &given {
            check_name(attribute.name.as_deref().unwrap_or_default())?;
        }
        let attributes = self
            .change_attributes(request.cluster.as_deref(), &given, |own, attribute| {
                own.retain(|a| a.name != attribute.name);
            })
            .await?;
        Ok(DeleteAttributesResponse {
            attributes: Some(attributes),
        })
    }

    pub(crate) fn list_attributes(
        &self,
        request: ListAttributesRequest,
    ) -> Result<ListAttributesResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let limit = page::max_results(request.max_results, LIST_RESULTS_MAX, LIST_RESULTS_MAX)?;
        let name = request.attribute_name.as_deref().filter(|n| !n.is_empty());
        let value = request.attribute_value.as_deref().filter(|v| !v.is_empty());
        if value.is_some() && name.is_none() {
            return Err(ApiError::invalid_parameter(
                "attributeValue needs attributeName",
            ));
        }
        // The token names the instance key and attribute name listed last:
        // attributes are listed by instance key, then by name.
        let prefix = keys::instances_of(&cluster);
        let after = page::resume_after(request.next_token.as_deref(), &prefix)?;
        let after = after
            .as_deref()
            .map(|key| key.split_once('\n').unwrap_or((key, "")));
        let mut listed = Vec::new();
        for found in self.instances_of(&cluster)? {
            let record = found.value;
            if !record.is_live() {
                continue;
            }
            let key = keys::instance(&cluster, &record.instance_id);
            let mut own: Vec<&Attribute> = record.instance.attributes.iter().flatten().collect();
            own.sort_by(|a, b| a.name.cmp(&b.name));
            for attribute in own {
                let attribute_name = attribute.name.as_deref().unwrap_or_default();
                if let Some((after_key, after_name)) = after {
                    if (key.as_str(), attribute_name) <= (after_key, after_name) {
                        continue;
                    }
                }
                if name.is_some_and(|n| n != attribute_name)
                    || value.is_some_and(|v| attribute.value.as_deref() != Some(v))
                {
                    continue;
                }
                if listed.len() == limit {
                    let (last_key, last_name): &(String, String) = &listed_key(&listed, &cluster);
                    return Ok(ListAttributesResponse {
                        attributes: Some(listed.into_iter().map(|(a, _)| a).collect()),
                        next_token: Some(page::token_for(&format!("{last_key}\n{last_name}"))),
                    });
                }
                listed.push((
                    Attribute {
                        name: attribute.name.clone(),
                        value: attribute.value.clone(),
                        target_type: Some(TargetType::ContainerInstance),
                        target_id: Some(record.arn()),
                    },
                    record.instance_id.clone(),
                ));
            }
        }
        Ok(ListAttributesResponse {
            attributes: Some(listed.into_iter().map(|(a, _)| a).collect()),
            next_token: None,
        })
    }
}

/// Key and attribute name of the last attribute listed, for the next token.
fn listed_key(listed: &[(Attribute, String)], cluster: &str) -> (String, String) {
    listed
        .last()
        .map(|(attribute, instance_id)| {
            (
                keys::instance(cluster, instance_id),
                attribute.name.clone().unwrap_or_default(),
            )
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_follow_ecs_rules() {
        for good in ["stack", "team.name", "a/b@c-d_e", &"n".repeat(128)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "has space", "colon:", "star*", &"n".repeat(129)] {
            assert_eq!(
                check_name(bad).expect_err(bad).code,
                "InvalidParameterException"
            );
        }
        for good in ["prod", "a b", "c:\\d/e@f", &"v".repeat(128)] {
            assert!(check_value("n", good).is_ok(), "{good}");
        }
        for bad in ["", " lead", "trail ", "semi;", &"v".repeat(129)] {
            assert_eq!(
                check_value("n", bad).expect_err(bad).code,
                "InvalidParameterException"
            );
        }
    }
}
