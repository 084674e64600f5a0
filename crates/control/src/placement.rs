//! Placement's side of the control plane: mapping instance records and
//! RunTask/StartTask input to `flotilla_scheduler`'s plain data, and a
//! plan's placements back to per-task reservations.
//!
//! *Architecture invariant:* this module does no I/O, reads no clock and
//! draws no ids. The scheduler decides where tasks go; `tasks.rs` commits
//! the plan against the revisions the snapshot was read at and, when
//! another writer won, reads a fresh snapshot and places again.
//!
//! ```text
//!  instance records + live tasks' groups ──▶ scheduler::Instance[] ──▶ Snapshot ─┐
//!                                                                                ├─▶ scheduler::place ─▶ Plan
//!  task definition + RunTask ──▶ scheduler::Request (strategies, constraints) ───┘        │
//!                        reservations (GPU ids, task address) per placement ◀──────────────┘
//!                                            one Txn: tasks + changed instances (CAS)
//! ```
//!
//! Vocabulary: *remaining* is what an instance has left (ECS's
//! `remainingResources`); a *reservation* is what one task took from it and
//! gives back when it stops. Ports follow ECS's convention: an instance's
//! PORTS resource lists the ports *in use*, so a static host port fits when
//! it is absent from that set.

use std::collections::{BTreeSet, HashMap};

use flotilla_scheduler::{
    Constraint, Expression, Instance, InstanceStatus, LaunchKind, Resources, Strategy,
};
use flotilla_types::ecs::{
    PlacementConstraint, PlacementConstraintType, PlacementStrategy,
    TaskDefinitionPlacementConstraint,
};
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::instances::InstanceRecord;

/// Lowest host address handed to a task in an instance's /24 task subnet:
/// `.0` is the network and `.1` the gateway (the instance's bridge).
pub const TASK_ADDRESS_FIRST: u8 = 2;
/// Highest host address; `.255` is the broadcast address.
pub const TASK_ADDRESS_LAST: u8 = 254;

/// What an instance has left to give.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remaining {
    pub cpu_units: i64,
    pub memory_mib: i64,
    pub tcp_ports_in_use: BTreeSet<u16>,
    pub udp_ports_in_use: BTreeSet<u16>,
    /// GPU ids not given to any task.
    pub free_gpu_ids: BTreeSet<String>,
}

/// What one task took from its instance, given back when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub cpu_units: i64,
    pub memory_mib: i64,
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    pub gpu_ids: Vec<String>,
    /// Last octet of the task's address in the instance's task subnet (awsvpc).
    pub address: Option<u8>,
}

impl Remaining {
    pub fn take(&mut self, addresses_in_use: &mut BTreeSet<u8>, reservation: &Reservation) {
        self.cpu_units -= reservation.cpu_units;
        self.memory_mib -= reservation.memory_mib;
        self.tcp_ports_in_use
            .extend(reservation.tcp_ports.iter().copied());
        self.udp_ports_in_use
            .extend(reservation.udp_ports.iter().copied());
        for id in &reservation.gpu_ids {
            self.free_gpu_ids.remove(id);
        }
        if let Some(address) = reservation.address {
            addresses_in_use.insert(address);
        }
    }

    pub fn give_back(&mut self, addresses_in_use: &mut BTreeSet<u8>, reservation: &Reservation) {
        self.cpu_units += reservation.cpu_units;
        self.memory_mib += reservation.memory_mib;
        for port in &reservation.tcp_ports {
            self.tcp_ports_in_use.remove(port);
        }
        for port in &reservation.udp_ports {
            self.udp_ports_in_use.remove(port);
        }
        self.free_gpu_ids
            .extend(reservation.gpu_ids.iter().cloned());
        if let Some(address) = reservation.address {
            addresses_in_use.remove(&address);
        }
    }
}

/// How many task addresses an instance's /24 task subnet holds.
const TASK_ADDRESSES_PER_INSTANCE: u32 = (TASK_ADDRESS_LAST - TASK_ADDRESS_FIRST) as u32 + 1;

/// One instance record as the scheduler sees it. `task_groups` are the
/// groups of the tasks that still hold resources on it.
pub fn scheduler_instance(record: &InstanceRecord, task_groups: Vec<(String, u32)>) -> Instance {
    let instance = &record.instance;
    Instance {
        arn: record.arn(),
        ec2_instance_id: instance.ec2_instance_id.clone().unwrap_or_default(),
        status: match record.status() {
            "ACTIVE" => InstanceStatus::Active,
            "DRAINING" => InstanceStatus::Draining,
            _ => InstanceStatus::Inactive,
        },
        agent_connected: instance.agent_connected == Some(true),
        agent_version: instance
            .version_info
            .as_ref()
            .and_then(|v| v.agent_version.clone()),
        launch_kind: if record.is_fargate() {
            LaunchKind::Fargate
        } else if record.is_external() {
            LaunchKind::External
        } else {
            LaunchKind::Ec2
        },
        capacity_provider: instance.capacity_provider_name.clone(),
        registered_at_ms: instance
            .registered_at
            .map_or(0, |seconds| (seconds * 1000.0) as i64),
        attributes: record.attribute_pairs(),
        remaining: Resources {
            cpu_units: record.remaining.cpu_units,
            memory_mib: record.remaining.memory_mib,
            gpus: u32::try_from(record.remaining.free_gpu_ids.len()).unwrap_or(u32::MAX),
        },
        tcp_ports_in_use: record.remaining.tcp_ports_in_use.iter().copied().collect(),
        udp_ports_in_use: record.remaining.udp_ports_in_use.iter().copied().collect(),
        enis_available: TASK_ADDRESSES_PER_INSTANCE
            .saturating_sub(u32::try_from(record.task_addresses_in_use.len()).unwrap_or(u32::MAX)),
        task_groups,
    }
}

/// Per instance id, the groups of the tasks holding resources on it, with counts.
pub fn groups_by_instance<'a>(
    tasks: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> HashMap<String, Vec<(String, u32)>> {
    let mut groups: HashMap<String, Vec<(String, u32)>> = HashMap::new();
    for (instance_id, group) in tasks {
        let Some(group) = group else { continue };
        let entry = groups.entry(instance_id.to_owned()).or_default();
        match entry.iter_mut().find(|(name, _)| name == group) {
            Some((_, count)) => *count += 1,
            None => entry.push((group.to_owned(), 1)),
        }
    }
    groups
}

/// RunTask's `placementStrategy`, in order; empty means the scheduler's default.
pub fn strategies(given: &[PlacementStrategy]) -> Result<Vec<Strategy>, ApiError> {
    if given.len() > flotilla_scheduler::STRATEGIES_MAX {
        return Err(ApiError::invalid_parameter(format!(
            "placementStrategy: at most {} placement strategies are allowed, got {}",
            flotilla_scheduler::STRATEGIES_MAX,
            given.len()
        )));
    }
    given
        .iter()
        .enumerate()
        .map(|(index, strategy)| {
            let Some(kind) = strategy.r#type else {
                return Err(ApiError::invalid_parameter(format!(
                    "placementStrategy[{index}].type is required"
                )));
            };
            Strategy::from_wire(kind.as_str(), strategy.field.as_deref()).map_err(|error| {
                ApiError::invalid_parameter(format!("placementStrategy[{index}]: {error}"))
            })
        })
        .collect()
}

/// A CQL expression, or InvalidParameterException naming where it is wrong.
pub fn parse_expression(member: &str, text: &str) -> Result<Expression, ApiError> {
    Expression::parse(text)
        .map_err(|error| ApiError::invalid_parameter(format!("{member}: {error}")))
}

/// The request's constraints followed by the task definition's.
pub fn constraints(
    request: &[PlacementConstraint],
    definition: &[TaskDefinitionPlacementConstraint],
) -> Result<Vec<Constraint>, ApiError> {
    // A task definition takes memberOf constraints only (registration refuses others).
    let definition: Vec<PlacementConstraint> = definition
        .iter()
        .map(|constraint| PlacementConstraint {
            r#type: Some(PlacementConstraintType::MemberOf),
            expression: constraint.expression.clone(),
        })
        .collect();
    let total = request.len() + definition.len();
    if total > flotilla_scheduler::CONSTRAINTS_MAX {
        return Err(ApiError::invalid_parameter(format!(
            "placementConstraints: at most {} placement constraints are allowed per task, task definition and request together, got {total}",
            flotilla_scheduler::CONSTRAINTS_MAX
        )));
    }
    let mut constraints = Vec::with_capacity(total);
    for (source, given) in [
        ("placementConstraints", request),
        ("taskDefinition.placementConstraints", &definition[..]),
    ] {
        for (index, constraint) in given.iter().enumerate() {
            let member = format!("{source}[{index}]");
            match constraint.r#type {
                Some(PlacementConstraintType::DistinctInstance) => {
                    constraints.push(Constraint::DistinctInstance)
                }
                Some(PlacementConstraintType::MemberOf) => {
                    let Some(text) = constraint
                        .expression
                        .as_deref()
                        .filter(|t| !t.trim().is_empty())
                    else {
                        return Err(ApiError::invalid_parameter(format!(
                            "{member}.expression is required for a memberOf constraint"
                        )));
                    };
                    constraints.push(Constraint::MemberOf(parse_expression(
                        &format!("{member}.expression"),
                        text,
                    )?));
                }
                None => {
                    return Err(ApiError::invalid_parameter(format!(
                        "{member}.type is required"
                    )))
                }
            }
        }
    }
    Ok(constraints)
}

/// What one task takes from an instance that has `remaining` and whose task
/// subnet hands out everything but `addresses_in_use`: the scheduler counted
/// GPUs and addresses, this picks which ones. `None` when the instance no
/// longer has them (the plan and the record disagree).
pub fn reserve(
    remaining: &Remaining,
    addresses_in_use: &BTreeSet<u8>,
    request: &flotilla_scheduler::Request,
) -> Option<Reservation> {
    let gpus = request.needs.gpus as usize;
    if remaining.free_gpu_ids.len() < gpus {
        return None;
    }
    let address = if request.needs_eni {
        Some(
            (TASK_ADDRESS_FIRST..=TASK_ADDRESS_LAST)
                .find(|octet| !addresses_in_use.contains(octet))?,
        )
    } else {
        None
    };
    Some(Reservation {
        cpu_units: request.needs.cpu_units,
        memory_mib: request.needs.memory_mib,
        tcp_ports: request.tcp_ports.clone(),
        udp_ports: request.udp_ports.clone(),
        gpu_ids: remaining.free_gpu_ids.iter().take(gpus).cloned().collect(),
        address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_types::ecs::PlacementStrategyType;

    #[test]
    fn strategies_map_and_name_the_bad_one() {
        let given = |kind, field: &str| PlacementStrategy {
            r#type: Some(kind),
            field: Some(field.to_owned()),
        };
        assert_eq!(
            strategies(&[
                given(
                    PlacementStrategyType::Spread,
                    "attribute:ecs.availability-zone"
                ),
                given(PlacementStrategyType::Binpack, "MEMORY"),
            ])
            .expect("valid"),
            vec![
                Strategy::from_wire("spread", Some("attribute:ecs.availability-zone"))
                    .expect("spread"),
                Strategy::from_wire("binpack", Some("memory")).expect("binpack"),
            ]
        );
        let error = strategies(&[
            given(PlacementStrategyType::Random, ""),
            given(PlacementStrategyType::Binpack, "disk"),
        ])
        .expect_err("bad field");
        assert_eq!(error.code, "InvalidParameterException");
        assert!(
            error.message.contains("placementStrategy[1]") && error.message.contains("disk"),
            "{}",
            error.message
        );
        let six = vec![given(PlacementStrategyType::Random, ""); 6];
        assert_eq!(
            strategies(&six).expect_err("too many").code,
            "InvalidParameterException"
        );
    }

    #[test]
    fn a_cql_syntax_error_names_its_position() {
        let constraint = PlacementConstraint {
            r#type: Some(PlacementConstraintType::MemberOf),
            expression: Some("attribute:ecs.instance-type == t2.micro and".to_owned()),
        };
        let error = constraints(&[constraint], &[]).expect_err("syntax error");
        assert_eq!(error.code, "InvalidParameterException");
        assert!(
            error.message.contains("placementConstraints[0].expression"),
            "{}",
            error.message
        );
        assert!(
            error.message.contains("at character 43"),
            "{}",
            error.message
        );
    }
}
