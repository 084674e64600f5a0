//! A service's load balancers: the target groups its tasks are registered
//! in while they run, as ECS registers them.
//!
//! ```text
//!  CreateService / UpdateService ─▶ check_load_balancers (task definition, target groups)
//!  scheduler pass, per cluster:
//!    RUNNING service task, no targets ─▶ register ─▶ TaskRecord::targets
//!    desired STOPPED, targets, not yet ─▶ deregister ─▶ DEACTIVATING until the
//!                                          longest deregistration delay ends
//!    delay over (or task STOPPED)      ─▶ targets cleared ─▶ the agent is told STOPPED
//! ```
//!
//! *API boundary:* the control plane knows target groups only through the
//! [`TargetGroups`] trait; the process that composes the control plane and
//! the ELBv2 API implements it over ELBv2's records, so neither crate
//! depends on the other.

use std::future::Future;
use std::pin::Pin;

use flotilla_types::ecs::{LoadBalancer, NetworkMode, TaskDefinition};
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::tasks::TaskRecord;

/// Target groups a service names at most, as ECS limits them.
pub const LOAD_BALANCERS_PER_SERVICE_MAX: usize = 5;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a target group's targets are named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetType {
    /// A container instance's EC2-style id and a host port.
    Instance,
    /// A task's IP address and its container port.
    Ip,
}

/// What a service needs to know of a target group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetGroupInfo {
    pub target_type: TargetType,
    /// Whether a listener of a load balancer forwards to it.
    pub has_load_balancer: bool,
    /// `deregistration_delay.timeout_seconds`, in ms.
    pub deregistration_delay_ms: u64,
}

/// One target, as ELBv2 keys it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    pub id: String,
    pub port: u16,
}

/// A target a task was registered as, in one target group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RegisteredTarget {
    pub target_group_arn: String,
    pub target: Target,
}

/// A target's health as the load balancer last found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetState {
    /// Registered, not yet checked enough to be healthy.
    Initial,
    Healthy,
    /// Failing its health checks; the description in ELBv2's words
    /// ("Health checks failed with these codes: [500]").
    Unhealthy {
        description: String,
    },
    /// Not in use, draining or unknown: neither healthy nor failing.
    Other,
}

/// Target groups as the service scheduler uses them. Implemented by the
/// process that runs the ELBv2 API beside the control plane.
pub trait TargetGroups: Send + Sync {
    /// The target group with this ARN, if there is one.
    fn target_group(&self, arn: &str) -> Result<Option<TargetGroupInfo>, ApiError>;
    /// Registers `targets` (already registered ones are left as they are).
    fn register<'a>(
        &'a self,
        arn: &'a str,
        targets: Vec<Target>,
    ) -> BoxFuture<'a, Result<(), ApiError>>;
    /// Deregisters `targets`; those not registered are ignored.
    fn deregister<'a>(
        &'a self,
        arn: &'a str,
        targets: Vec<Target>,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), ApiError>>;
    /// A registered target's health.
    fn health(&self, arn: &str, target: &Target, now_ms: u64) -> TargetState;

    // Blue/green, linear and canary deployments (`blue_green.rs`).

    /// The ARNs of the load balancers whose listeners forward to the group.
    fn target_group_load_balancers(&self, _arn: &str) -> Result<Vec<String>, ApiError> {
        Ok(Vec::new())
    }
    /// A listener rule (a listener's default rule too), if there is one.
    fn listener_rule(&self, _arn: &str) -> Result<Option<ListenerRuleInfo>, ApiError> {
        Ok(None)
    }
    /// Makes the rule forward to these target groups with these weights.
    fn set_rule_weights<'a>(
        &'a self,
        arn: &'a str,
        _weights: Vec<(String, i32)>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            Err(ApiError::invalid_parameter(format!(
                "The listener rule {arn} cannot be changed by this server"
            )))
        })
    }
}

/// What a traffic shift needs to know of a listener rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerRuleInfo {
    pub load_balancer_arn: String,
    /// The target groups its forward action sends to, with their weights.
    pub forward: Vec<(String, i32)>,
}

/// Checks a service's `loadBalancers` against its task definition and the
/// target groups, as CreateService and UpdateService do.
pub fn check_load_balancers(
    load_balancers: &[LoadBalancer],
    definition: &TaskDefinition,
    target_groups: Option<&dyn TargetGroups>,
) -> Result<(), ApiError> {
    if load_balancers.len() > LOAD_BALANCERS_PER_SERVICE_MAX {
        return Err(ApiError::invalid_parameter(format!(
            "loadBalancers can have at most {LOAD_BALANCERS_PER_SERVICE_MAX} members; {} were given.",
            load_balancers.len()
        )));
    }
    let network_mode = definition.network_mode.unwrap_or(NetworkMode::Bridge);
    let mut seen = std::collections::BTreeSet::new();
    for load_balancer in load_balancers {
        if load_balancer.load_balancer_name.is_some() {
            return Err(ApiError::invalid_parameter(
                "loadBalancerName names a Classic Load Balancer, which Flotilla does not provide; give targetGroupArn.",
            ));
        }
        let Some(arn) = load_balancer
            .target_group_arn
            .as_deref()
            .filter(|a| !a.is_empty())
        else {
            return Err(ApiError::invalid_parameter(
                "Target group ARN must be specified for a load balancer.",
            ));
        };
        let Some(container_name) = load_balancer.container_name.as_deref() else {
            return Err(ApiError::invalid_parameter(
                "containerName must be specified for a load balancer.",
            ));
        };
        let Some(container_port) = load_balancer.container_port else {
            return Err(ApiError::invalid_parameter(
                "containerPort must be specified for a load balancer.",
            ));
        };
        let Some(container) = definition
            .container_definitions
            .iter()
            .flatten()
            .find(|c| c.name.as_deref() == Some(container_name))
        else {
            return Err(ApiError::invalid_parameter(format!(
                "The container {container_name} does not exist in the task definition."
            )));
        };
        let mapped = container
            .port_mappings
            .iter()
            .flatten()
            .any(|m| m.container_port == Some(container_port));
        if !mapped {
            return Err(ApiError::invalid_parameter(format!(
                "The container {container_name} did not have a container port {container_port} defined."
            )));
        }
        if !seen.insert((arn, container_name, container_port)) {
            return Err(ApiError::invalid_parameter(format!(
                "The target group with targetGroupArn {arn} and container {container_name}:{container_port} is given twice."
            )));
        }
        let info = match target_groups {
            Some(groups) => groups.target_group(arn)?,
            None => None,
        };
        let Some(info) = info else {
            return Err(ApiError::invalid_parameter(format!(
                "The target group with targetGroupArn {arn} could not be found."
            )));
        };
        if !info.has_load_balancer {
            return Err(ApiError::invalid_parameter(format!(
                "The target group with targetGroupArn {arn} does not have an associated load balancer."
            )));
        }
        let fits = matches!(
            (info.target_type, network_mode),
            (TargetType::Ip, NetworkMode::Awsvpc)
                | (
                    TargetType::Instance,
                    NetworkMode::Bridge | NetworkMode::Host
                )
        );
        if !fits {
            let kind = match info.target_type {
                TargetType::Ip => "ip",
                TargetType::Instance => "instance",
            };
            return Err(ApiError::invalid_parameter(format!(
                "The provided target group {arn} has target type {kind}, which is incompatible with the {} network mode specified in the task definition.",
                network_mode_name(network_mode)
            )));
        }
    }
    Ok(())
}

fn network_mode_name(mode: NetworkMode) -> String {
    serde_json::to_value(mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{mode:?}").to_lowercase())
}

/// The target a running task is in one target group: the instance's
/// EC2-style id and the container's host port (bridge, host), or the task's
/// address and the container port (awsvpc). `None` while the agent has not
/// reported what it needs (a host port, an address).
pub fn task_target(
    task: &TaskRecord,
    ec2_instance_id: &str,
    load_balancer: &LoadBalancer,
    target_type: TargetType,
) -> Option<Target> {
    let container_name = load_balancer.container_name.as_deref()?;
    let container_port = load_balancer.container_port?;
    match target_type {
        TargetType::Ip => {
            let address = task
                .network_interface
                .as_ref()?
                .private_ipv4_address
                .clone();
            Some(Target {
                id: address,
                port: u16::try_from(container_port).ok()?,
            })
        }
        TargetType::Instance => {
            if task.definition.network_mode == Some(NetworkMode::Host) {
                return Some(Target {
                    id: ec2_instance_id.to_owned(),
                    port: u16::try_from(container_port).ok()?,
                });
            }
            let host_port = task
                .task
                .containers
                .iter()
                .flatten()
                .filter(|c| c.name.as_deref() == Some(container_name))
                .flat_map(|c| c.network_bindings.iter().flatten())
                .find(|b| b.container_port == Some(container_port))
                .and_then(|b| b.host_port)?;
            Some(Target {
                id: ec2_instance_id.to_owned(),
                port: u16::try_from(host_port).ok()?,
            })
        }
    }
}

/// Why the scheduler stops a task its load balancer found unhealthy, as ECS
/// says it (the target group's ARN follows in parentheses).
pub const ELB_UNHEALTHY_STOP_PREFIX: &str = "Task failed ELB health checks in";

/// A task's stop reason when `arn`'s health checks failed it.
pub fn elb_unhealthy_stop_reason(arn: &str) -> String {
    format!("{ELB_UNHEALTHY_STOP_PREFIX} (target-group {arn})")
}

/// The first of a task's targets its load balancer finds unhealthy, with why.
pub fn unhealthy_target<'a>(
    targets: &'a [RegisteredTarget],
    groups: &dyn TargetGroups,
    now_ms: u64,
) -> Option<(&'a RegisteredTarget, String)> {
    targets.iter().find_map(|registered| {
        match groups.health(&registered.target_group_arn, &registered.target, now_ms) {
            TargetState::Unhealthy { description } => Some((registered, description)),
            _ => None,
        }
    })
}

/// Whether every one of a task's targets is healthy (none: not yet registered).
pub fn targets_healthy(
    targets: &[RegisteredTarget],
    groups: &dyn TargetGroups,
    now_ms: u64,
) -> bool {
    !targets.is_empty()
        && targets.iter().all(|registered| {
            groups.health(&registered.target_group_arn, &registered.target, now_ms)
                == TargetState::Healthy
        })
}
