//! Scalable targets: RegisterScalableTarget's checks.

use serde::{Deserialize, Serialize};

use crate::ValidationError;

pub const ECS_NAMESPACE: &str = "ecs";
pub const ECS_DESIRED_COUNT: &str = "ecs:service:DesiredCount";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspendedState {
    pub dynamic_scaling_in_suspended: bool,
    pub dynamic_scaling_out_suspended: bool,
    pub scheduled_scaling_suspended: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalableTarget {
    /// `service/CLUSTER/SERVICE`.
    pub resource_id: String,
    pub min_capacity: i64,
    pub max_capacity: i64,
    pub suspended: SuspendedState,
    pub created_ms: i64,
}

impl ScalableTarget {
    pub fn cluster_and_service(&self) -> (&str, &str) {
        let mut parts = self.resource_id.splitn(3, '/').skip(1);
        (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        )
    }

    pub fn clamp(&self, capacity: i64) -> i64 {
        capacity.clamp(self.min_capacity, self.max_capacity)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegisterScalableTargetInput {
    pub service_namespace: String,
    pub resource_id: String,
    pub scalable_dimension: String,
    pub min_capacity: Option<i64>,
    pub max_capacity: Option<i64>,
    pub suspended: Option<SuspendedState>,
}

/// Checks an ECS service's resource id: `service/CLUSTER/SERVICE`.
pub fn check_resource(
    namespace: &str,
    resource_id: &str,
    dimension: &str,
) -> Result<(), ValidationError> {
    if namespace != ECS_NAMESPACE
        || dimension != ECS_DESIRED_COUNT
        || !resource_id.starts_with("service/")
    {
        return Err(ValidationError(
            "Unsupported service namespace, resource type or scalable dimension".into(),
        ));
    }
    let parts: Vec<&str> = resource_id.split('/').collect();
    if parts.len() != 3 || parts[1].is_empty() || parts[2].is_empty() {
        return Err(ValidationError(format!(
            "Invalid resource id {resource_id}: an ECS service's resource id is service/CLUSTER-NAME/SERVICE-NAME"
        )));
    }
    Ok(())
}

/// The message the control plane answers when the service does not exist.
pub fn missing_service(resource_id: &str) -> ValidationError {
    ValidationError(format!("ECS service doesn't exist: {resource_id}"))
}

/// RegisterScalableTarget: creates (`existing` None) or updates a target.
/// Members not given keep their values on an update.
pub fn register(
    input: &RegisterScalableTargetInput,
    existing: Option<&ScalableTarget>,
    now_ms: i64,
) -> Result<ScalableTarget, ValidationError> {
    check_resource(
        &input.service_namespace,
        &input.resource_id,
        &input.scalable_dimension,
    )?;
    let (min, max) = match existing {
        None => (
            input.min_capacity.ok_or_else(|| ValidationError("MinCapacity and MaxCapacity are required when registering a new scalable target".into()))?,
            input.max_capacity.ok_or_else(|| ValidationError("MinCapacity and MaxCapacity are required when registering a new scalable target".into()))?,
        ),
        Some(target) => (
            input.min_capacity.unwrap_or(target.min_capacity),
            input.max_capacity.unwrap_or(target.max_capacity),
        ),
    };
    if min < 0 {
        return Err(ValidationError(format!(
            "Minimum capacity {min} is below the lowest allowed value 0"
        )));
    }
    if min > max {
        return Err(ValidationError(
            "Minimum capacity cannot be greater than maximum capacity".into(),
        ));
    }
    Ok(ScalableTarget {
        resource_id: input.resource_id.clone(),
        min_capacity: min,
        max_capacity: max,
        suspended: input
            .suspended
            .or(existing.map(|t| t.suspended))
            .unwrap_or_default(),
        created_ms: existing.map_or(now_ms, |t| t.created_ms),
    })
}
