//! Task definitions: RegisterTaskDefinition (with ECS's validation),
//! DescribeTaskDefinition, ListTaskDefinitions, ListTaskDefinitionFamilies,
//! DeregisterTaskDefinition, DeleteTaskDefinitions.

use flotilla_types::ecs::*;
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::Ecs;

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

fn not_yet() -> ApiError {
    ApiError::server("task definitions are being built")
}

impl Ecs {
    pub(crate) async fn register_task_definition(
        &self,
        _request: RegisterTaskDefinitionRequest,
    ) -> Result<RegisterTaskDefinitionResponse, ApiError> {
        Err(not_yet())
    }

    pub(crate) fn describe_task_definition(
        &self,
        _request: DescribeTaskDefinitionRequest,
    ) -> Result<DescribeTaskDefinitionResponse, ApiError> {
        Err(not_yet())
    }

    pub(crate) fn list_task_definitions(
        &self,
        _request: ListTaskDefinitionsRequest,
    ) -> Result<ListTaskDefinitionsResponse, ApiError> {
        Err(not_yet())
    }

    pub(crate) fn list_task_definition_families(
        &self,
        _request: ListTaskDefinitionFamiliesRequest,
    ) -> Result<ListTaskDefinitionFamiliesResponse, ApiError> {
        Err(not_yet())
    }

    pub(crate) async fn deregister_task_definition(
        &self,
        _request: DeregisterTaskDefinitionRequest,
    ) -> Result<DeregisterTaskDefinitionResponse, ApiError> {
        Err(not_yet())
    }

    pub(crate) async fn delete_task_definitions(
        &self,
        _request: DeleteTaskDefinitionsRequest,
    ) -> Result<DeleteTaskDefinitionsResponse, ApiError> {
        Err(not_yet())
    }
}
