//! Flotilla's own operations, beside ECS's: written by hand (botocore has no
//! model for them) in the generated types' shape, and decoded by the same
//! [`crate::decode_json`], so they fail the way ECS operations do.
//!
//! They are served under their own `X-Amz-Target` prefix, [`TARGET_PREFIX`],
//! and signed for service `ecs` like the rest of the API.

use serde::{Deserialize, Serialize};

use crate::ecs::{LaunchType, PlacementConstraint, PlacementStrategy};

/// The `X-Amz-Target` prefix of Flotilla's own operations.
pub const TARGET_PREFIX: &str = "FlotillaV1";

/// Which instance RunTask would use, and why every other one would not.
/// Members mean what RunTask's members of the same name mean.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExplainPlacementRequest {
    #[serde(rename = "cluster", skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(rename = "taskDefinition", skip_serializing_if = "Option::is_none")]
    pub task_definition: Option<String>,
    #[serde(rename = "count", skip_serializing_if = "Option::is_none")]
    pub count: Option<i32>,
    #[serde(rename = "launchType", skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<LaunchType>,
    #[serde(rename = "placementStrategy", skip_serializing_if = "Option::is_none")]
    pub placement_strategy: Option<Vec<PlacementStrategy>>,
    #[serde(
        rename = "placementConstraints",
        skip_serializing_if = "Option::is_none"
    )]
    pub placement_constraints: Option<Vec<PlacementConstraint>>,
    #[serde(rename = "group", skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// What the scheduler made of one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementOutcome {
    /// The first task would go here.
    #[serde(rename = "CHOSEN")]
    Chosen,
    /// Feasible, but the strategies preferred another instance.
    #[serde(rename = "NOT_PREFERRED")]
    NotPreferred,
    /// Left out at the step named, for the reason given.
    #[serde(rename = "EXCLUDED")]
    Excluded,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceVerdict {
    #[serde(rename = "containerInstanceArn")]
    pub container_instance_arn: String,
    #[serde(rename = "outcome")]
    pub outcome: PlacementOutcome,
    /// `instance`, `resources`, `constraints`, `strategies` or `choose`.
    #[serde(rename = "step")]
    pub step: String,
    /// ECS's failure reason (`RESOURCE:MEMORY`, ...) when excluded.
    #[serde(rename = "reason", skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The numbers behind the reason, e.g. `not enough memory: needs 512, has 128`.
    #[serde(rename = "detail", skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExplainPlacementResponse {
    #[serde(rename = "instances")]
    pub instances: Vec<InstanceVerdict>,
    /// Per task of `count`, the container instance ARN it would go to;
    /// shorter than `count` when not all fit.
    #[serde(rename = "placements")]
    pub placements: Vec<String>,
}

/// Takes a cluster's FARGATE_SPOT capacity back, as AWS reclaims Spot
/// capacity: each FARGATE_SPOT task gets Spot's warning (a task state
/// change, SIGTERM to its containers) and stops with stop code
/// `SpotInterruption`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReclaimSpotCapacityRequest {
    #[serde(rename = "cluster", skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// How many of its FARGATE_SPOT tasks to interrupt [default: all].
    #[serde(rename = "count", skip_serializing_if = "Option::is_none")]
    pub count: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReclaimSpotCapacityResponse {
    /// The ARNs of the tasks interrupted.
    #[serde(rename = "interruptedTasks")]
    pub interrupted_tasks: Vec<String>,
}

/// Every Flotilla operation.
pub const OPERATIONS: &[&str] = &["ExplainPlacement", "ReclaimSpotCapacity"];

#[derive(Clone, Debug, PartialEq)]
pub enum FlotillaRequest {
    ExplainPlacement(ExplainPlacementRequest),
    ReclaimSpotCapacity(ReclaimSpotCapacityRequest),
}

/// One response per Flotilla operation, serialized as its bare shape.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FlotillaResponse {
    ExplainPlacement(ExplainPlacementResponse),
    ReclaimSpotCapacity(ReclaimSpotCapacityResponse),
}

impl FlotillaRequest {
    /// Decodes the JSON body of `operation`; `None` when there is no such operation.
    pub fn decode(operation: &str, body: &[u8]) -> Option<Result<Self, crate::DecodeError>> {
        Some(match operation {
            "ExplainPlacement" => crate::decode_json(body).map(FlotillaRequest::ExplainPlacement),
            "ReclaimSpotCapacity" => {
                crate::decode_json(body).map(FlotillaRequest::ReclaimSpotCapacity)
            }
            _ => return None,
        })
    }

    pub fn operation(&self) -> &'static str {
        match self {
            FlotillaRequest::ExplainPlacement(_) => "ExplainPlacement",
            FlotillaRequest::ReclaimSpotCapacity(_) => "ReclaimSpotCapacity",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn explain_placement_decodes_like_run_task() {
        let body = br#"{"cluster":"c","taskDefinition":"web:1","count":3,"launchType":"EC2",
            "placementStrategy":[{"type":"spread","field":"attribute:ecs.availability-zone"}],
            "placementConstraints":[{"type":"memberOf","expression":"attribute:ecs.availability-zone != a"}]}"#;
        let Some(Ok(FlotillaRequest::ExplainPlacement(request))) =
            FlotillaRequest::decode("ExplainPlacement", body)
        else {
            panic!("did not decode");
        };
        assert_eq!(request.count, Some(3));
        assert_eq!(request.launch_type, Some(LaunchType::Ec2));
        assert!(FlotillaRequest::decode("Nope", b"{}").is_none());
        let error = FlotillaRequest::decode("ExplainPlacement", br#"{"launchType":"MOON"}"#)
            .unwrap()
            .unwrap_err();
        assert_eq!(
            crate::ApiError::from(error).code,
            "InvalidParameterException"
        );
    }
}
