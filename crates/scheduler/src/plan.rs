//! What placement is asked ([`Request`]) and what it answers ([`Plan`]).

use std::fmt;

use crate::cql::Expression;
use crate::snapshot::{InstanceIndex, LaunchKind, Resources};

/// ECS allows five strategies per request.
pub const STRATEGIES_MAX: usize = 5;
/// ECS allows ten constraints per task (definition and request together).
pub const CONSTRAINTS_MAX: usize = 10;
/// Most tasks one request places; RunTask's own limit is 10, a service
/// scheduler placing a whole deployment asks for more.
pub const TASKS_PER_REQUEST_MAX: u32 = 10_000;
/// Most failures one plan lists, so that a failed placement on a large
/// cluster does not answer with one entry per instance.
pub const FAILURES_MAX: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinpackField {
    Cpu,
    Memory,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SpreadField {
    /// `instanceId` or `host`.
    InstanceId,
    /// `attribute:NAME`.
    Attribute(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    Binpack(BinpackField),
    Spread(SpreadField),
    Random,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    #[error("unknown placement strategy type {0:?}")]
    UnknownType(String),
    #[error("binpack takes the field cpu or memory, not {0:?}")]
    BinpackField(String),
    #[error("spread takes the field instanceId, host or attribute:NAME, not {0:?}")]
    SpreadField(String),
    #[error("at most {STRATEGIES_MAX} placement strategies are allowed")]
    TooMany,
}

impl Strategy {
    /// From the wire's `{type, field}`. Type and the binpack field are
    /// case-insensitive, as ECS takes them; attribute names are not.
    pub fn from_wire(kind: &str, field: Option<&str>) -> Result<Strategy, StrategyError> {
        let field = field.unwrap_or_default().trim();
        match kind.to_ascii_lowercase().as_str() {
            "random" => Ok(Strategy::Random),
            "binpack" => match field.to_ascii_lowercase().as_str() {
                "cpu" => Ok(Strategy::Binpack(BinpackField::Cpu)),
                "memory" => Ok(Strategy::Binpack(BinpackField::Memory)),
                _ => Err(StrategyError::BinpackField(field.to_owned())),
            },
            "spread" => {
                if field.eq_ignore_ascii_case("instanceId") || field.eq_ignore_ascii_case("host") {
                    return Ok(Strategy::Spread(SpreadField::InstanceId));
                }
                match field.get(..10) {
                    Some(prefix)
                        if prefix.eq_ignore_ascii_case("attribute:") && field.len() > 10 =>
                    {
                        Ok(Strategy::Spread(SpreadField::Attribute(
                            field[10..].to_owned(),
                        )))
                    }
                    _ => Err(StrategyError::SpreadField(field.to_owned())),
                }
            }
            _ => Err(StrategyError::UnknownType(kind.to_owned())),
        }
    }

    /// What placement uses when a request names no strategy: spread across
    /// Availability Zones, then across instances within a zone. AWS documents
    /// zone spread as the default for services and names no default for
    /// RunTask; this is the console's default template ("AZ balanced
    /// spread") for both, and the one that keeps tasks of a group apart.
    pub fn defaults() -> Vec<Strategy> {
        vec![
            Strategy::Spread(SpreadField::Attribute("ecs.availability-zone".to_owned())),
            Strategy::Spread(SpreadField::InstanceId),
        ]
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::Binpack(BinpackField::Cpu) => f.write_str("binpack(cpu)"),
            Strategy::Binpack(BinpackField::Memory) => f.write_str("binpack(memory)"),
            Strategy::Spread(SpreadField::InstanceId) => f.write_str("spread(instanceId)"),
            Strategy::Spread(SpreadField::Attribute(name)) => write!(f, "spread(attribute:{name})"),
            Strategy::Random => f.write_str("random"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// No two tasks of the request's group on one instance: neither with
    /// each other nor with tasks of the group already running.
    DistinctInstance,
    MemberOf(Expression),
}

/// What each task of one request needs; every task of a request needs the same.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    pub needs: Resources,
    /// Static host ports (bridge and host network modes).
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    /// awsvpc: each task takes one of the instance's task ENIs.
    pub needs_eni: bool,
    pub count: u32,
    /// `None` takes either kind (StartTask on named instances).
    pub launch_kind: Option<LaunchKind>,
    /// `Some`: only the instances of this capacity provider take the tasks
    /// (the control plane has already split a strategy's tasks among its
    /// providers). `None` takes instances of any provider, or of none.
    pub capacity_provider: Option<String>,
    /// Applied in order; empty means [`Strategy::defaults`].
    pub strategies: Vec<Strategy>,
    /// From the task definition and the request together.
    pub constraints: Vec<Constraint>,
    /// The task definition's `requiresAttributes`, by name.
    pub required_attributes: Vec<String>,
    /// The task group (`family:NAME`, `service:NAME` or the caller's own).
    pub group: String,
    /// Seeds the `random` strategy; the same seed gives the same plan.
    pub seed: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("at most {STRATEGIES_MAX} placement strategies are allowed")]
    TooManyStrategies,
    #[error("at most {CONSTRAINTS_MAX} placement constraints are allowed")]
    TooManyConstraints,
    #[error("count must be between 1 and {TASKS_PER_REQUEST_MAX}")]
    Count,
}

impl Request {
    /// The bounds ECS enforces; `place` trusts a request that passed.
    pub fn validate(&self) -> Result<(), RequestError> {
        if self.strategies.len() > STRATEGIES_MAX {
            return Err(RequestError::TooManyStrategies);
        }
        if self.constraints.len() > CONSTRAINTS_MAX {
            return Err(RequestError::TooManyConstraints);
        }
        if self.count == 0 || self.count > TASKS_PER_REQUEST_MAX {
            return Err(RequestError::Count);
        }
        Ok(())
    }
}

/// Why an instance cannot take a task, in ECS's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// DRAINING: takes no new tasks. Not reported in failures (ECS does not list them).
    Draining,
    /// Deregistered. Not reported.
    Inactive,
    /// EC2 instance for an EXTERNAL task or the other way round. Not reported.
    LaunchKind,
    /// Not an instance of the capacity provider the request names. Not
    /// reported: it was never a candidate.
    CapacityProvider,
    Agent,
    /// Lacks an attribute the task definition requires.
    Attribute,
    Cpu,
    Memory,
    Ports,
    PortsUdp,
    Gpu,
    Eni,
    DistinctInstance,
    MemberOf,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Draining => "DRAINING",
            Reason::Inactive => "INACTIVE",
            Reason::LaunchKind => "LAUNCH_TYPE",
            Reason::CapacityProvider => "CAPACITY_PROVIDER",
            Reason::Agent => "AGENT",
            Reason::Attribute => "ATTRIBUTE",
            Reason::Cpu => "RESOURCE:CPU",
            Reason::Memory => "RESOURCE:MEMORY",
            Reason::Ports => "RESOURCE:PORTS",
            Reason::PortsUdp => "RESOURCE:PORTS_UDP",
            Reason::Gpu => "RESOURCE:GPU",
            Reason::Eni => "RESOURCE:ENI",
            Reason::DistinctInstance => "DistinctInstance constraint not satisfied",
            Reason::MemberOf => "MemberOf constraint not satisfied",
        }
    }

    /// Whether ECS lists this reason in a RunTask's `failures`.
    pub fn is_reported(self) -> bool {
        !matches!(
            self,
            Reason::Draining | Reason::Inactive | Reason::LaunchKind | Reason::CapacityProvider
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a RunTask's `failures`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub arn: String,
    pub reason: Reason,
}

/// What a plan takes from one instance; the caller subtracts it from the
/// instance record and commits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub instance: InstanceIndex,
    /// Tasks of the plan's group placed on it.
    pub tasks: u32,
    pub taken: Resources,
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    pub enis: u32,
}

/// The outcome of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub group: String,
    /// The instance of each placed task, in placement order.
    pub placements: Vec<InstanceIndex>,
    /// Tasks that found no instance (the last `unplaced` of the request).
    pub unplaced: u32,
    /// When some task found no instance: each instance's first failed
    /// check, at most [`FAILURES_MAX`], in instance order.
    pub failures: Vec<Failure>,
    /// One per instance the plan places on, in first-placement order.
    pub deltas: Vec<Delta>,
}
