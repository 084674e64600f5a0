//! ExplainPlacement, Flotilla's addition to ECS: where RunTask would put a
//! task and, for every instance it would not use, the step that left it out
//! and why, with the numbers. ECS only says that no instance fit.
//!
//! It reads exactly what RunTask reads (`prepare_launch`, then
//! `placement_snapshot`, then `placement_requests`) and runs the same
//! scheduler on it, but commits nothing and draws no ids. With a capacity
//! provider strategy (the cluster's default, when no launch type is given),
//! the verdicts are for the first task's provider.

use flotilla_scheduler::{Outcome, Reason};
use flotilla_types::flotilla::{
    ExplainPlacementRequest, ExplainPlacementResponse, InstanceVerdict, PlacementOutcome,
};
use flotilla_types::ApiError;

use crate::tasks::{checked_count, placement_requests, LaunchRequest, Revisions};
use crate::Ecs;

/// The `random` strategy's seed. RunTask seeds it from the new tasks' ids,
/// which an explanation does not draw: a random choice here is one of the
/// choices RunTask could make, not the one it will.
const EXPLAIN_SEED: u64 = 0;

/// The scheduler's step that a reason belongs to.
fn step_of(reason: Reason) -> &'static str {
    match reason {
        Reason::Draining
        | Reason::Inactive
        | Reason::LaunchKind
        | Reason::CapacityProvider
        | Reason::Agent => "instance",
        Reason::Cpu
        | Reason::Memory
        | Reason::Ports
        | Reason::PortsUdp
        | Reason::Gpu
        | Reason::Eni => "resources",
        Reason::Attribute | Reason::DistinctInstance | Reason::MemberOf => "constraints",
    }
}

impl Ecs {
    pub(crate) fn explain_placement(
        &self,
        request: ExplainPlacementRequest,
    ) -> Result<ExplainPlacementResponse, ApiError> {
        let count = checked_count(request.count)?;
        let launch = self.prepare_launch(LaunchRequest {
            cluster: request.cluster.as_deref(),
            task_definition: request.task_definition.as_deref().unwrap_or_default(),
            revisions: Revisions::ActiveOnly,
            launch_type: request.launch_type,
            capacity_provider_strategy: &[],
            overrides: None,
            started_by: None,
            group: request.group.as_deref(),
            tags: &[],
            propagate_tags: None,
            enable_ecs_managed_tags: false,
            service: None,
            network_configuration: None,
            placement_constraints: request.placement_constraints.as_deref().unwrap_or_default(),
            placement_strategy: request.placement_strategy.as_deref().unwrap_or_default(),
            enable_execute_command: None,
            platform_version: None,
            strategy_counts_started_by: false,
        })?;
        let (_, snapshot) = self.placement_snapshot(&launch.cluster)?;
        let requests = placement_requests(&launch, count, EXPLAIN_SEED)?;
        let Some(first) = requests.first() else {
            return Err(ApiError::server(
                "a launch of at least one task asked no placement",
            ));
        };
        let instances = flotilla_scheduler::explain(&snapshot, first)
            .into_iter()
            .map(|verdict| {
                let (outcome, step, reason, detail) = match verdict.outcome {
                    Outcome::Chosen => (PlacementOutcome::Chosen, "choose", None, None),
                    Outcome::NotPreferred => {
                        (PlacementOutcome::NotPreferred, "strategies", None, None)
                    }
                    Outcome::Excluded { reason, detail } => (
                        PlacementOutcome::Excluded,
                        step_of(reason),
                        Some(reason.as_str().to_owned()),
                        Some(detail),
                    ),
                };
                InstanceVerdict {
                    container_instance_arn: verdict.arn,
                    outcome,
                    step: step.to_owned(),
                    reason,
                    detail,
                }
            })
            .collect();
        let mut planned = snapshot.clone();
        let mut placements = Vec::new();
        for request in &requests {
            let plan = flotilla_scheduler::place(&planned, request);
            planned.apply(&plan);
            placements.extend(
                plan.placements
                    .iter()
                    .map(|index| snapshot.instances()[*index as usize].arn.clone()),
            );
        }
        Ok(ExplainPlacementResponse {
            instances,
            placements,
        })
    }
}
