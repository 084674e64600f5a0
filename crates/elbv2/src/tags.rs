//! AddTags, RemoveTags and DescribeTags over load balancers, target groups,
//! listeners and rules.

use flotilla_aws::elbv2::{
    AddTagsInput, AddTagsOutput, DescribeTagsInput, DescribeTagsOutput, RemoveTagsInput,
    RemoveTagsOutput, Tag, TagDescription,
};
use flotilla_types::ApiError;

use crate::records::{change, State};
use crate::{error, require, validation, Elbv2};

/// Tags per resource, as ELBv2 allows.
pub const TAGS_PER_RESOURCE_MAX: usize = 50;
/// Resources one AddTags, RemoveTags or DescribeTags may name.
pub const RESOURCES_PER_CALL_MAX: usize = 20;
const TAG_KEY_LENGTH_MAX: usize = 128;
const TAG_VALUE_LENGTH_MAX: usize = 256;

/// Tags as given at creation, checked as ELBv2 checks them.
pub(crate) fn checked(tags: &[Tag]) -> Result<Vec<Tag>, ApiError> {
    merged(&[], tags)
}

fn merged(current: &[Tag], added: &[Tag]) -> Result<Vec<Tag>, ApiError> {
    let mut seen = std::collections::HashSet::new();
    for tag in added {
        let key = tag.key.as_deref().unwrap_or_default();
        if key.is_empty() || key.len() > TAG_KEY_LENGTH_MAX {
            return Err(validation(format!(
                "Tag key '{key}' must be from 1 to {TAG_KEY_LENGTH_MAX} characters"
            )));
        }
        if key.starts_with("aws:") {
            return Err(validation(format!(
                "Tag key '{key}' cannot start with 'aws:'"
            )));
        }
        if tag.value.as_deref().unwrap_or_default().len() > TAG_VALUE_LENGTH_MAX {
            return Err(validation(format!(
                "The value of tag '{key}' is longer than {TAG_VALUE_LENGTH_MAX} characters"
            )));
        }
        if !seen.insert(key) {
            return Err(error(
                "DuplicateTagKeysException",
                format!("Tag key '{key}' is duplicated"),
            ));
        }
    }
    let mut tags: Vec<Tag> = current
        .iter()
        .filter(|tag| !seen.contains(tag.key.as_deref().unwrap_or_default()))
        .cloned()
        .collect();
    tags.extend(added.iter().map(|tag| Tag {
        key: tag.key.clone(),
        value: Some(tag.value.clone().unwrap_or_default()),
    }));
    if tags.len() > TAGS_PER_RESOURCE_MAX {
        return Err(error(
            "TooManyTagsException",
            format!("A resource can have at most {TAGS_PER_RESOURCE_MAX} tags"),
        ));
    }
    Ok(tags)
}

impl Elbv2 {
    /// The tags of the resource `arn` names, to read or change.
    fn tags_of<'a>(&self, state: &'a mut State, arn: &str) -> Option<&'a mut Vec<Tag>> {
        if let Some(record) = self.find_load_balancer(state, arn) {
            let name = record.description.load_balancer_name.clone()?;
            return state
                .load_balancers
                .get_mut(&name)
                .map(|record| &mut record.tags);
        }
        if let Some(record) = self.find_target_group(state, arn) {
            let name = record.description.target_group_name.clone()?;
            return state
                .target_groups
                .get_mut(&name)
                .map(|record| &mut record.tags);
        }
        if let Some((balancer, listener)) = self.find_listener(state, arn) {
            return state
                .load_balancers
                .get_mut(&balancer)?
                .listeners
                .get_mut(listener)
                .map(|listener| &mut listener.tags);
        }
        if let Some((balancer, listener, rule)) = self.find_rule(state, arn) {
            return state
                .load_balancers
                .get_mut(&balancer)?
                .listeners
                .get_mut(listener)?
                .rules
                .get_mut(rule)
                .map(|rule| &mut rule.tags);
        }
        None
    }

    fn resource_not_found(arn: &str) -> ApiError {
        if arn.contains(":targetgroup/") {
            return Self::target_group_not_found(arn);
        }
        if arn.contains(":listener-rule/") {
            return error("RuleNotFoundException", format!("Rule '{arn}' not found"));
        }
        if arn.contains(":listener/") {
            return error(
                "ListenerNotFoundException",
                format!("Listener '{arn}' not found"),
            );
        }
        Self::load_balancer_not_found(arn)
    }

    fn check_resource_count(arns: &[String]) -> Result<(), ApiError> {
        if arns.is_empty() || arns.len() > RESOURCES_PER_CALL_MAX {
            return Err(validation(format!(
                "1 validation error detected: Value at 'resourceArns' failed to satisfy constraint: Member must have length between 1 and {RESOURCES_PER_CALL_MAX}"
            )));
        }
        Ok(())
    }

    pub(crate) async fn add_tags(&self, input: AddTagsInput) -> Result<AddTagsOutput, ApiError> {
        require(input.missing_required())?;
        let arns = input.resource_arns.unwrap_or_default();
        Self::check_resource_count(&arns)?;
        let added = input.tags.unwrap_or_default();
        change(
            &**self.store(),
            |state| {
                for arn in &arns {
                    let tags = self
                        .tags_of(state, arn)
                        .ok_or_else(|| Self::resource_not_found(arn))?;
                    *tags = merged(tags, &added)?;
                }
                Ok(())
            },
            |_| Ok(()),
        )
        .await?;
        Ok(AddTagsOutput {})
    }

    pub(crate) async fn remove_tags(
        &self,
        input: RemoveTagsInput,
    ) -> Result<RemoveTagsOutput, ApiError> {
        require(input.missing_required())?;
        let arns = input.resource_arns.unwrap_or_default();
        Self::check_resource_count(&arns)?;
        let keys = input.tag_keys.unwrap_or_default();
        change(
            &**self.store(),
            |state| {
                for arn in &arns {
                    let tags = self
                        .tags_of(state, arn)
                        .ok_or_else(|| Self::resource_not_found(arn))?;
                    tags.retain(|tag| !keys.iter().any(|key| Some(key) == tag.key.as_ref()));
                }
                Ok(())
            },
            |_| Ok(()),
        )
        .await?;
        Ok(RemoveTagsOutput {})
    }

    pub(crate) fn describe_tags(
        &self,
        input: DescribeTagsInput,
    ) -> Result<DescribeTagsOutput, ApiError> {
        require(input.missing_required())?;
        let arns = input.resource_arns.unwrap_or_default();
        Self::check_resource_count(&arns)?;
        let mut state = State::read(&**self.store())?;
        let mut descriptions = Vec::new();
        for arn in &arns {
            let tags = self
                .tags_of(&mut state, arn)
                .ok_or_else(|| Self::resource_not_found(arn))?;
            descriptions.push(TagDescription {
                resource_arn: Some(arn.clone()),
                tags: Some(tags.clone()),
            });
        }
        Ok(DescribeTagsOutput {
            tag_descriptions: Some(descriptions),
        })
    }
}
