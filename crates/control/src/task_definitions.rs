//! Task definitions: RegisterTaskDefinition (with ECS's validation),
//! DescribeTaskDefinition, ListTaskDefinitions, ListTaskDefinitionFamilies,
//! DeregisterTaskDefinition, DeleteTaskDefinitions.
//!
//! Each revision is one record under `keys::task_definition(family, rev)`;
//! each family has a counter record under `keys::family(family)`. A new
//! revision number is taken by a compare-and-swap on the counter in the same
//! transaction that writes the revision, so two registrations racing on one
//! family never get the same number.
//!
//! Lifecycle of a revision: ACTIVE --deregister--> INACTIVE
//! --delete--> DELETE_IN_PROGRESS. Every state stays describable by revision.

use std::collections::{BTreeSet, VecDeque};

use flotilla_store::{Entry, Txn};
use flotilla_types::arn::Arn;
use flotilla_types::ecs::{
    DeleteTaskDefinitionsRequest, DeleteTaskDefinitionsResponse, DeregisterTaskDefinitionRequest,
    DeregisterTaskDefinitionResponse, DescribeTaskDefinitionRequest,
    DescribeTaskDefinitionResponse, Failure, ListTaskDefinitionFamiliesRequest,
    ListTaskDefinitionFamiliesResponse, ListTaskDefinitionsRequest, ListTaskDefinitionsResponse,
    RegisterTaskDefinitionRequest, RegisterTaskDefinitionResponse, SortOrder, Tag, TaskDefinition,
    TaskDefinitionFamilyStatus, TaskDefinitionField, TaskDefinitionStatus,
};
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::page::{self, Listing};
use crate::records::{self, keys, Attempt};
use crate::{Caller, Ecs};

mod attributes;
mod compatibility;
mod defaults;
mod revisions;
mod size;
#[cfg(test)]
mod tests;
mod validate;

/// A stored revision of a task definition and the tags on it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskDefinitionRecord {
    pub definition: TaskDefinition,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// The revision counter of a family. It is written in the same transaction
/// as each new revision, which is what makes revision numbers unique.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FamilyRecord {
    pub latest_revision: i32,
    /// Revisions still ACTIVE; a family with none is INACTIVE.
    pub active_revisions: i32,
}

/// ECS's limit on revisions in one family.
pub(crate) use revisions::RegistrationQueues;

const REVISIONS_PER_FAMILY_MAX: i32 = 1_000_000;
const LIST_RESULTS_MAX: usize = 100;
/// Most task definitions one DeleteTaskDefinitions call may name.
const DELETE_TASK_DEFINITIONS_MAX: usize = 10;
/// How many entries a descending listing reads from the store at a time.
const SCAN_CHUNK: usize = 256;

const UNABLE_TO_DESCRIBE: &str = "Unable to describe task definition.";
const IDENTIFIER_INVALID: &str =
    "The specified task definition identifier is invalid. Specify a valid name or ARN and try again.";
const DOES_NOT_EXIST: &str =
    "The specified task definition does not exist. Specify a valid account, family, revision and try again.";
const STILL_ACTIVE: &str =
    "The specified task definition is still in ACTIVE status. Please deregister the target and try again.";
const BEING_DELETED: &str = "The specified task definition is in the process of being deleted.";

/// A task definition as a request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reference {
    /// A family alone: its latest ACTIVE revision.
    Latest {
        family: String,
    },
    Revision {
        family: String,
        revision: i32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReferenceError {
    /// Not a family, `family:revision` or task definition ARN.
    Malformed,
    /// A task definition ARN of another partition, region or account.
    Elsewhere,
}

impl Ecs {
    pub(crate) async fn register_task_definition(
        &self,
        caller: &Caller,
        request: RegisterTaskDefinitionRequest,
    ) -> Result<RegisterTaskDefinitionResponse, ApiError> {
        let size = validate::check(&request)?;
        let mut definition = defaults::definition_from(&request, size);
        for required in request.requires_compatibilities.iter().flatten() {
            if let Some(problem) = compatibility::problem(&definition, *required) {
                return Err(ApiError::client(problem));
            }
        }
        definition.compatibilities = Some(compatibility::compatibilities(&definition));
        definition.requires_attributes = Some(attributes::required_attributes(&definition));
        definition.status = Some(TaskDefinitionStatus::Active);
        definition.registered_at = Some(self.now_seconds());
        definition.registered_by = Some(caller.principal_arn.clone());
        let tags = request.tags.clone().unwrap_or_default();
        let stored = self
            .store_new_revision(TaskDefinitionRecord { definition, tags })
            .await?;
        Ok(RegisterTaskDefinitionResponse {
            task_definition: Some(stored),
            tags: request.tags,
        })
    }

    fn task_definition_arn(&self, family: &str, revision: i32) -> String {
        self.scope
            .arn("ecs", &format!("task-definition/{family}:{revision}"))
    }

    /// Parses a family, `family:revision` or task definition ARN.
    pub(crate) fn task_definition_reference(
        &self,
        given: &str,
    ) -> Result<Reference, ReferenceError> {
        let given = given.trim();
        let id = if given.starts_with("arn:") {
            let arn = Arn::parse(given).ok_or(ReferenceError::Malformed)?;
            let ("task-definition", id) = arn.resource_parts() else {
                return Err(ReferenceError::Malformed);
            };
            if arn.service != "ecs" {
                return Err(ReferenceError::Malformed);
            }
            let here = arn.partition == self.scope.partition
                && arn.region == self.scope.region
                && arn.account_id == self.scope.account_id;
            if !here {
                return Err(ReferenceError::Elsewhere);
            }
            id
        } else {
            given
        };
        let (family, revision) = match id.split_once(':') {
            Some((family, revision)) => (family, Some(revision)),
            None => (id, None),
        };
        if !validate::is_valid_name(family, validate::FAMILY_LENGTH_MAX) {
            return Err(ReferenceError::Malformed);
        }
        let family = family.to_owned();
        match revision {
            None => Ok(Reference::Latest { family }),
            Some(text) => match text.parse::<i32>() {
                Ok(revision) if revision >= 1 => Ok(Reference::Revision { family, revision }),
                _ => Err(ReferenceError::Malformed),
            },
        }
    }

    /// What authorization needs of the task definition a request names
    /// (a family, `family:revision` or an ARN): its ARN with the revision a
    /// family resolves to now, and the task and execution roles it hands
    /// to its tasks. `None` when it names none that exists here.
    pub fn task_definition_roles(
        &self,
        given: &str,
    ) -> Result<Option<(String, Vec<String>)>, ApiError> {
        let Ok(reference) = self.task_definition_reference(given) else {
            return Ok(None);
        };
        let Some(record) = self.find_task_definition(&reference)? else {
            return Ok(None);
        };
        let definition = &record.definition;
        let arn = definition.task_definition_arn.clone().unwrap_or_default();
        let roles = [&definition.task_role_arn, &definition.execution_role_arn]
            .into_iter()
            .flatten()
            .filter(|role| !role.is_empty())
            .cloned()
            .collect();
        Ok(Some((arn, roles)))
    }

    /// The stored revision a reference names, if it exists.
    pub(crate) fn find_task_definition(
        &self,
        reference: &Reference,
    ) -> Result<Option<TaskDefinitionRecord>, ApiError> {
        match reference {
            Reference::Latest { family } => self.latest_active_revision(family),
            Reference::Revision { family, revision } => {
                let key = keys::task_definition(family, *revision);
                Ok(
                    records::get::<TaskDefinitionRecord>(self.store.as_ref(), &key)?
                        .map(|found| found.value),
                )
            }
        }
    }

    /// The newest ACTIVE revision of a family. Walks down from the newest
    /// revision, which is almost always the answer since revisions are
    /// mostly deregistered oldest first; the counter of ACTIVE revisions
    /// lets a family with none answer without walking at all.
    fn latest_active_revision(
        &self,
        family: &str,
    ) -> Result<Option<TaskDefinitionRecord>, ApiError> {
        let store = self.store.as_ref();
        let Some(counter) = records::get::<FamilyRecord>(store, &keys::family(family))? else {
            return Ok(None);
        };
        if counter.value.active_revisions <= 0 {
            return Ok(None);
        }
        for revision in (1..=counter.value.latest_revision.min(REVISIONS_PER_FAMILY_MAX)).rev() {
            let key = keys::task_definition(family, revision);
            if let Some(found) = records::get::<TaskDefinitionRecord>(store, &key)? {
                if found.value.definition.status == Some(TaskDefinitionStatus::Active) {
                    return Ok(Some(found.value));
                }
            }
        }
        Ok(None)
    }

    pub(crate) fn describe_task_definition(
        &self,
        request: DescribeTaskDefinitionRequest,
    ) -> Result<DescribeTaskDefinitionResponse, ApiError> {
        let given = request.task_definition.as_deref().unwrap_or_default();
        let reference = match self.task_definition_reference(given) {
            Ok(reference) => reference,
            Err(ReferenceError::Malformed) => return Err(ApiError::client(IDENTIFIER_INVALID)),
            Err(ReferenceError::Elsewhere) => return Err(ApiError::client(UNABLE_TO_DESCRIBE)),
        };
        let record = self
            .find_task_definition(&reference)?
            .ok_or_else(|| ApiError::client(UNABLE_TO_DESCRIBE))?;
        let include_tags = request
            .include
            .iter()
            .flatten()
            .any(|field| *field == TaskDefinitionField::Tags);
        Ok(DescribeTaskDefinitionResponse {
            task_definition: Some(record.definition),
            tags: include_tags.then_some(record.tags),
        })
    }

    pub(crate) fn list_task_definitions(
        &self,
        request: ListTaskDefinitionsRequest,
    ) -> Result<ListTaskDefinitionsResponse, ApiError> {
        let limit = page::max_results(request.max_results, LIST_RESULTS_MAX, LIST_RESULTS_MAX)?;
        let status = request.status.unwrap_or(TaskDefinitionStatus::Active);
        // ECS's familyPrefix here is a whole family name, not a prefix.
        let prefix = match family_filter(request.family_prefix.as_deref())? {
            Some(family) => keys::task_definitions_of(family),
            None => keys::TASK_DEFINITIONS.to_owned(),
        };
        let keep = |entry: &Entry| -> Result<Option<String>, ApiError> {
            let record: TaskDefinitionRecord = records::decode(entry)?;
            let definition = record.definition;
            Ok((definition.status == Some(status))
                .then(|| definition.task_definition_arn.unwrap_or_default()))
        };
        let token = request.next_token.as_deref();
        let listing = match request.sort.unwrap_or(SortOrder::Asc) {
            SortOrder::Asc => page::list(self.store.as_ref(), &prefix, token, limit, keep)?,
            SortOrder::Desc => list_descending(self.store.as_ref(), &prefix, token, limit, keep)?,
        };
        Ok(ListTaskDefinitionsResponse {
            task_definition_arns: Some(listing.items),
            next_token: listing.next_token,
        })
    }

    pub(crate) fn list_task_definition_families(
        &self,
        request: ListTaskDefinitionFamiliesRequest,
    ) -> Result<ListTaskDefinitionFamiliesResponse, ApiError> {
        let limit = page::max_results(request.max_results, LIST_RESULTS_MAX, LIST_RESULTS_MAX)?;
        // The API documents ALL as the default, but ECS answers an omitted
        // status with the ACTIVE families only; clients see what ECS does.
        let status = request.status.unwrap_or(TaskDefinitionFamilyStatus::Active);
        let prefix =
            keys::family(family_filter(request.family_prefix.as_deref())?.unwrap_or_default());
        let listing = page::list(
            self.store.as_ref(),
            &prefix,
            request.next_token.as_deref(),
            limit,
            |entry| {
                let counter: FamilyRecord = records::decode(entry)?;
                let wanted = match status {
                    TaskDefinitionFamilyStatus::Active => counter.active_revisions > 0,
                    TaskDefinitionFamilyStatus::Inactive => counter.active_revisions <= 0,
                    TaskDefinitionFamilyStatus::All => true,
                };
                Ok(wanted.then(|| {
                    entry
                        .key
                        .strip_prefix(keys::FAMILIES)
                        .unwrap_or_default()
                        .to_owned()
                }))
            },
        )?;
        Ok(ListTaskDefinitionFamiliesResponse {
            families: Some(listing.items),
            next_token: listing.next_token,
        })
    }

    pub(crate) async fn deregister_task_definition(
        &self,
        request: DeregisterTaskDefinitionRequest,
    ) -> Result<DeregisterTaskDefinitionResponse, ApiError> {
        let given = request.task_definition.as_deref().unwrap_or_default();
        let (family, revision) = match self.task_definition_reference(given) {
            Ok(Reference::Revision { family, revision }) => (family, revision),
            Ok(Reference::Latest { .. }) => {
                return Err(ApiError::client(format!(
                    "A revision is required to deregister a task definition: use family:revision or the \
                     task definition's ARN, not {given:?}."
                )))
            }
            Err(ReferenceError::Malformed) => return Err(ApiError::client(IDENTIFIER_INVALID)),
            Err(ReferenceError::Elsewhere) => return Err(ApiError::client(DOES_NOT_EXIST)),
        };
        let now = self.now_seconds();
        let store = self.store.as_ref();
        let key = keys::task_definition(&family, revision);
        let family_key = keys::family(&family);
        let definition = records::mutate(store, || {
            let found = records::get::<TaskDefinitionRecord>(store, &key)?
                .ok_or_else(|| ApiError::client(DOES_NOT_EXIST))?;
            match found.value.definition.status {
                Some(TaskDefinitionStatus::Active) => {}
                Some(TaskDefinitionStatus::DeleteInProgress) => {
                    return Err(ApiError::client(BEING_DELETED))
                }
                // Deregistering an INACTIVE revision changes nothing.
                _ => return Ok(Attempt::Done(found.value.definition)),
            }
            let counter = records::get::<FamilyRecord>(store, &family_key)?.ok_or_else(|| {
                tracing::error!(%family, "task definition revision without a family record");
                ApiError::server(format!("the record of family {family} is missing"))
            })?;
            let mut record = found.value;
            record.definition.status = Some(TaskDefinitionStatus::Inactive);
            record.definition.deregistered_at = Some(now);
            let mut next = counter.value;
            next.active_revisions = (next.active_revisions - 1).max(0);
            let txn = Txn::new()
                .expect(&key, found.revision)
                .expect(&family_key, counter.revision)
                .put(&key, records::encode(&record))
                .put(&family_key, records::encode(&next));
            Ok(Attempt::Commit(txn, record.definition))
        })
        .await?;
        Ok(DeregisterTaskDefinitionResponse {
            task_definition: Some(definition),
        })
    }

    pub(crate) async fn delete_task_definitions(
        &self,
        request: DeleteTaskDefinitionsRequest,
    ) -> Result<DeleteTaskDefinitionsResponse, ApiError> {
        let wanted = request.task_definitions.unwrap_or_default();
        if wanted.is_empty() || wanted.len() > DELETE_TASK_DEFINITIONS_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "taskDefinitions must name 1 to {DELETE_TASK_DEFINITIONS_MAX} task definitions, got {}",
                wanted.len()
            )));
        }
        let now = self.now_seconds();
        let mut task_definitions = Vec::new();
        let mut failures = Vec::new();
        let mut seen = BTreeSet::new();
        for given in wanted {
            let outcome = match self.task_definition_reference(&given) {
                // A revision named twice is deleted and reported once.
                Ok(Reference::Revision { family, revision })
                    if !seen.insert((family.clone(), revision)) =>
                {
                    continue
                }
                Ok(Reference::Revision { family, revision }) => {
                    self.delete_revision(&family, revision, now).await?
                }
                Ok(Reference::Latest { .. }) | Err(ReferenceError::Malformed) => {
                    Err(IDENTIFIER_INVALID)
                }
                Err(ReferenceError::Elsewhere) => Err(DOES_NOT_EXIST),
            };
            match outcome {
                Ok(definition) => task_definitions.push(definition),
                Err(reason) => failures.push(Failure {
                    arn: Some(given),
                    reason: Some(reason.to_owned()),
                    detail: None,
                }),
            }
        }
        Ok(DeleteTaskDefinitionsResponse {
            task_definitions: Some(task_definitions),
            failures: Some(failures),
        })
    }

    /// Marks one INACTIVE revision DELETE_IN_PROGRESS. The inner error is the
    /// reason of a per-item failure; the outer one fails the whole call.
    async fn delete_revision(
        &self,
        family: &str,
        revision: i32,
        now: f64,
    ) -> Result<Result<TaskDefinition, &'static str>, ApiError> {
        let store = self.store.as_ref();
        let key = keys::task_definition(family, revision);
        records::mutate(store, || {
            let Some(found) = records::get::<TaskDefinitionRecord>(store, &key)? else {
                return Ok(Attempt::Done(Err(DOES_NOT_EXIST)));
            };
            match found.value.definition.status {
                Some(TaskDefinitionStatus::Inactive) => {}
                Some(TaskDefinitionStatus::DeleteInProgress) => {
                    return Ok(Attempt::Done(Ok(found.value.definition)))
                }
                _ => return Ok(Attempt::Done(Err(STILL_ACTIVE))),
            }
            let mut record = found.value;
            record.definition.status = Some(TaskDefinitionStatus::DeleteInProgress);
            record.definition.delete_requested_at = Some(now);
            let txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, Ok(record.definition)))
        })
        .await
    }
}

/// A family name given to filter a listing, checked so that it cannot reach
/// outside its part of the key space.
fn family_filter(given: Option<&str>) -> Result<Option<&str>, ApiError> {
    match given.filter(|family| !family.is_empty()) {
        None => Ok(None),
        Some(family) if validate::is_valid_name(family, validate::FAMILY_LENGTH_MAX) => Ok(Some(family)),
        Some(family) => Err(ApiError::invalid_parameter(format!(
            "Invalid familyPrefix {family:?}: it must match ^[a-zA-Z0-9\\-_]+$ and be at most {} characters",
            validate::FAMILY_LENGTH_MAX
        ))),
    }
}

/// Like [`page::list`], newest key first. The store lists in ascending order
/// only, so this walks every key below the resume point and keeps a window
/// of the last `limit + 1` items kept: memory stays bounded by the page size
/// while the walk is bounded by the number of stored keys.
fn list_descending<T>(
    store: &dyn flotilla_store::Store,
    prefix: &str,
    token: Option<&str>,
    limit: usize,
    mut keep: impl FnMut(&Entry) -> Result<Option<T>, ApiError>,
) -> Result<Listing<T>, ApiError> {
    // The token names the smallest key the previous page returned.
    let before = page::resume_after(token, prefix)?;
    let mut window: VecDeque<(String, T)> = VecDeque::with_capacity(limit + 1);
    let mut after: Option<String> = None;
    'walk: loop {
        let chunk = store
            .list(prefix, after.as_deref(), SCAN_CHUNK)
            .map_err(records::store_error)?;
        for entry in &chunk.entries {
            if before
                .as_deref()
                .is_some_and(|before| entry.key.as_str() >= before)
            {
                break 'walk;
            }
            if let Some(item) = keep(entry)? {
                if window.len() > limit {
                    window.pop_front();
                }
                window.push_back((entry.key.clone(), item));
            }
        }
        match chunk.entries.last() {
            Some(last) if chunk.more => after = Some(last.key.clone()),
            _ => break,
        }
    }
    let more = window.len() > limit;
    if more {
        window.pop_front();
    }
    let next_token = if more {
        window.front().map(|(key, _)| page::token_for(key))
    } else {
        None
    };
    let items = window.into_iter().rev().map(|(_, item)| item).collect();
    Ok(Listing { items, next_token })
}
