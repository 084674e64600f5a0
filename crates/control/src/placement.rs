//! Placement: which container instance each new task goes to.
//!
//! *Architecture invariant:* this module does no I/O, reads no clock and
//! draws no ids. [`place`] takes a snapshot of the cluster's instances and
//! what the tasks need, and returns a [`Plan`]; the caller commits the plan
//! against the revisions the snapshot was read at and, when another writer
//! won, reads a fresh snapshot and places again. A later scheduler replaces
//! this function without touching the commit.
//!
//! ```text
//!  instance records ──▶ InstanceSnapshot[] ─┐
//!                                           ├─▶ place() ─▶ Plan { placements, failures, changed }
//!  task definition  ──▶ Demand, Targets ────┘                        │
//!                                                      one Txn: tasks + changed instances (CAS)
//! ```
//!
//! Vocabulary: *remaining* is what an instance has left (ECS's
//! `remainingResources`); a *reservation* is what one task took from it and
//! gives back when it stops. Ports follow ECS's convention: an instance's
//! PORTS resource lists the ports *in use*, so a static host port fits when
//! it is absent from that set.
//!
//! The strategy is first fit in the order of the snapshot. Failures name
//! the first resource each instance lacked, with ECS's reasons.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::filter::Expression;

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

/// Whether an instance takes new tasks, as its status says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    Active,
    /// DRAINING: keeps its tasks, takes no new ones.
    Draining,
    Inactive,
}

/// One container instance as placement sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceSnapshot {
    pub arn: String,
    pub availability: Availability,
    pub agent_connected: bool,
    /// Registered with the external attribute: takes EXTERNAL tasks only.
    pub external: bool,
    /// Name and value of every attribute.
    pub attributes: Vec<(String, Option<String>)>,
    pub remaining: Remaining,
    pub addresses_in_use: BTreeSet<u8>,
}

/// What each task of a request needs; every task of one request needs the same.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Demand {
    pub cpu_units: i64,
    pub memory_mib: i64,
    /// Static host ports (bridge and host network modes).
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    pub gpus: usize,
    /// awsvpc: the task gets its own address in the instance's task subnet.
    pub needs_address: bool,
    /// The task definition's `requiresAttributes`, by name.
    pub required_attributes: Vec<String>,
    /// Launch type EXTERNAL (true) or EC2 (false); `None` takes either, as
    /// StartTask does on the instances it names.
    pub external: Option<bool>,
    /// Each task on a different instance.
    pub distinct_instances: bool,
    /// `memberOf` constraints: an instance must match every one.
    pub member_of: Vec<Expression>,
}

/// Where the tasks may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// RunTask: `count` tasks, each on the first instance that fits.
    FirstFit { count: usize },
    /// StartTask: one task on each of these instances (indices into the snapshot).
    Each(Vec<usize>),
}

/// Why an instance cannot take a task, as ECS words it in `failures`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    Agent,
    Attribute,
    Cpu,
    Memory,
    Ports,
    PortsUdp,
    Gpu,
    /// No free address in the instance's task subnet.
    Eni,
    /// DRAINING: keeps its tasks, takes no new ones.
    Draining,
    /// Deregistered.
    Inactive,
    /// A `distinctInstance` constraint: the instance already got one of these tasks.
    DistinctInstance,
    /// The instance is EC2 and the task EXTERNAL, or the other way round.
    LaunchType,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Agent => "AGENT",
            Refusal::Attribute => "ATTRIBUTE",
            Refusal::Cpu => "RESOURCE:CPU",
            Refusal::Memory => "RESOURCE:MEMORY",
            Refusal::Ports => "RESOURCE:PORTS",
            Refusal::PortsUdp => "RESOURCE:PORTS_UDP",
            Refusal::Gpu => "RESOURCE:GPU",
            Refusal::Eni => "RESOURCE:ENI",
            Refusal::Draining => "DRAINING",
            Refusal::Inactive => "INACTIVE",
            Refusal::DistinctInstance => "CONSTRAINT",
            Refusal::LaunchType => "LAUNCH_TYPE",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Index into the snapshot.
    pub instance: usize,
    pub reservation: Reservation,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementFailure {
    pub instance_arn: String,
    pub refusal: Refusal,
}

/// The outcome of placing one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub placements: Vec<Placement>,
    /// One entry per instance and reason, for the tasks that found no place.
    pub failures: Vec<PlacementFailure>,
    /// The instances the placements change, with what they have left after.
    pub changed: Vec<(usize, Remaining, BTreeSet<u8>)>,
}

/// Places the tasks of one request. Pure: the same snapshot and request
/// always give the same plan.
pub fn place(instances: &[InstanceSnapshot], demand: &Demand, targets: &Targets) -> Plan {
    let mut working: Vec<(Remaining, BTreeSet<u8>)> = instances
        .iter()
        .map(|i| (i.remaining.clone(), i.addresses_in_use.clone()))
        .collect();
    let mut used = BTreeSet::new();
    let mut plan = Plan::default();
    let refuse = |plan: &mut Plan, instance: &InstanceSnapshot, refusal: Refusal| {
        let failure = PlacementFailure {
            instance_arn: instance.arn.clone(),
            refusal,
        };
        if !plan.failures.contains(&failure) {
            plan.failures.push(failure);
        }
    };
    let attempts: Vec<Vec<usize>> = match targets {
        Targets::FirstFit { count } => {
            let candidates: Vec<usize> = (0..instances.len())
                .filter(|&index| {
                    let instance = &instances[index];
                    instance.availability == Availability::Active
                        && demand
                            .external
                            .is_none_or(|external| instance.external == external)
                })
                .collect();
            vec![candidates; *count]
        }
        Targets::Each(indices) => indices.iter().map(|&index| vec![index]).collect(),
    };
    for candidates in attempts {
        let mut refusals = Vec::new();
        let mut placed = false;
        for index in candidates {
            let Some(instance) = instances.get(index) else {
                continue;
            };
            let (remaining, addresses) = &working[index];
            match fit(
                instance,
                remaining,
                addresses,
                demand,
                used.contains(&index),
            ) {
                Ok(reservation) => {
                    let (remaining, addresses) = &mut working[index];
                    remaining.take(addresses, &reservation);
                    used.insert(index);
                    plan.placements.push(Placement {
                        instance: index,
                        reservation,
                    });
                    placed = true;
                    break;
                }
                Err(refusal) => refusals.push((index, refusal)),
            }
        }
        if !placed {
            for (index, refusal) in refusals {
                refuse(&mut plan, &instances[index], refusal);
            }
        }
    }
    plan.changed = used
        .into_iter()
        .map(|index| (index, working[index].0.clone(), working[index].1.clone()))
        .collect();
    plan
}

/// The reservation one task would take from `instance`, or the first thing it lacks.
fn fit(
    instance: &InstanceSnapshot,
    remaining: &Remaining,
    addresses_in_use: &BTreeSet<u8>,
    demand: &Demand,
    already_used: bool,
) -> Result<Reservation, Refusal> {
    match instance.availability {
        Availability::Active => {}
        Availability::Draining => return Err(Refusal::Draining),
        Availability::Inactive => return Err(Refusal::Inactive),
    }
    if demand
        .external
        .is_some_and(|external| instance.external != external)
    {
        return Err(Refusal::LaunchType);
    }
    if !instance.agent_connected {
        return Err(Refusal::Agent);
    }
    if demand.distinct_instances && already_used {
        return Err(Refusal::DistinctInstance);
    }
    let has = |name: &str| instance.attributes.iter().any(|(n, _)| n == name);
    if !demand.required_attributes.iter().all(|name| has(name)) {
        return Err(Refusal::Attribute);
    }
    if !demand
        .member_of
        .iter()
        .all(|expression| expression.matches(&instance.attributes))
    {
        return Err(Refusal::Attribute);
    }
    if remaining.cpu_units < demand.cpu_units {
        return Err(Refusal::Cpu);
    }
    if remaining.memory_mib < demand.memory_mib {
        return Err(Refusal::Memory);
    }
    if demand
        .tcp_ports
        .iter()
        .any(|port| remaining.tcp_ports_in_use.contains(port))
    {
        return Err(Refusal::Ports);
    }
    if demand
        .udp_ports
        .iter()
        .any(|port| remaining.udp_ports_in_use.contains(port))
    {
        return Err(Refusal::PortsUdp);
    }
    if remaining.free_gpu_ids.len() < demand.gpus {
        return Err(Refusal::Gpu);
    }
    let address = if demand.needs_address {
        let free = (TASK_ADDRESS_FIRST..=TASK_ADDRESS_LAST)
            .find(|octet| !addresses_in_use.contains(octet));
        Some(free.ok_or(Refusal::Eni)?)
    } else {
        None
    };
    Ok(Reservation {
        cpu_units: demand.cpu_units,
        memory_mib: demand.memory_mib,
        tcp_ports: demand.tcp_ports.clone(),
        udp_ports: demand.udp_ports.clone(),
        gpu_ids: remaining
            .free_gpu_ids
            .iter()
            .take(demand.gpus)
            .cloned()
            .collect(),
        address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(name: &str, cpu: i64, memory: i64) -> InstanceSnapshot {
        InstanceSnapshot {
            arn: name.to_owned(),
            availability: Availability::Active,
            agent_connected: true,
            external: false,
            attributes: vec![("ecs.capability.task-eni".to_owned(), None)],
            remaining: Remaining {
                cpu_units: cpu,
                memory_mib: memory,
                tcp_ports_in_use: [22, 2375].into(),
                ..Default::default()
            },
            addresses_in_use: BTreeSet::new(),
        }
    }

    fn demand(cpu: i64, memory: i64) -> Demand {
        Demand {
            cpu_units: cpu,
            memory_mib: memory,
            external: Some(false),
            ..Default::default()
        }
    }

    /// (case, instances, demand, count, instance of each placement, failures as "arn reason")
    type Case = (
        &'static str,
        Vec<InstanceSnapshot>,
        Demand,
        usize,
        Vec<usize>,
        Vec<&'static str>,
    );

    #[test]
    fn first_fit_cases() {
        let with_ports = Demand {
            tcp_ports: vec![80],
            ..demand(10, 10)
        };
        let on_ssh = Demand {
            tcp_ports: vec![22],
            ..demand(10, 10)
        };
        let draining = InstanceSnapshot {
            availability: Availability::Draining,
            ..instance("d", 1000, 1000)
        };
        let disconnected = InstanceSnapshot {
            agent_connected: false,
            ..instance("x", 1000, 1000)
        };
        let external = InstanceSnapshot {
            external: true,
            ..instance("e", 1000, 1000)
        };
        let needs_eni = Demand {
            needs_address: true,
            required_attributes: vec!["ecs.capability.task-eni".into()],
            ..demand(1, 1)
        };
        let needs_missing = Demand {
            required_attributes: vec!["ecs.capability.nope".into()],
            ..demand(1, 1)
        };
        let distinct = Demand {
            distinct_instances: true,
            ..demand(1, 1)
        };
        let cases: Vec<Case> = vec![
            (
                "fits first",
                vec![instance("a", 1024, 2048), instance("b", 1024, 2048)],
                demand(512, 512),
                1,
                vec![0],
                vec![],
            ),
            (
                "fills first then second",
                vec![instance("a", 1024, 2048), instance("b", 1024, 2048)],
                demand(512, 512),
                4,
                vec![0, 0, 1, 1],
                vec![],
            ),
            (
                "cpu short",
                vec![instance("a", 100, 2048)],
                demand(512, 512),
                1,
                vec![],
                vec!["a RESOURCE:CPU"],
            ),
            (
                "memory short",
                vec![instance("a", 1024, 100)],
                demand(512, 512),
                1,
                vec![],
                vec!["a RESOURCE:MEMORY"],
            ),
            (
                "partial",
                vec![instance("a", 1024, 1024)],
                demand(512, 512),
                3,
                vec![0, 0],
                vec!["a RESOURCE:CPU"],
            ),
            (
                "static port once per instance",
                vec![instance("a", 1024, 1024), instance("b", 1024, 1024)],
                with_ports.clone(),
                3,
                vec![0, 1],
                vec!["a RESOURCE:PORTS", "b RESOURCE:PORTS"],
            ),
            (
                "reserved port",
                vec![instance("a", 1024, 1024)],
                on_ssh,
                1,
                vec![],
                vec!["a RESOURCE:PORTS"],
            ),
            (
                "draining skipped",
                vec![draining.clone(), instance("b", 1024, 1024)],
                demand(1, 1),
                1,
                vec![1],
                vec![],
            ),
            (
                "only draining",
                vec![draining],
                demand(1, 1),
                1,
                vec![],
                vec![],
            ),
            (
                "agent",
                vec![disconnected, instance("b", 1024, 1024)],
                demand(1, 1),
                1,
                vec![1],
                vec![],
            ),
            (
                "external instance not for ec2",
                vec![external],
                demand(1, 1),
                1,
                vec![],
                vec![],
            ),
            (
                "eni address",
                vec![instance("a", 1024, 1024)],
                needs_eni,
                2,
                vec![0, 0],
                vec![],
            ),
            (
                "attribute",
                vec![instance("a", 1024, 1024)],
                needs_missing,
                1,
                vec![],
                vec!["a ATTRIBUTE"],
            ),
            (
                "distinct",
                vec![instance("a", 1024, 1024), instance("b", 1024, 1024)],
                distinct,
                3,
                vec![0, 1],
                vec!["a CONSTRAINT", "b CONSTRAINT"],
            ),
        ];
        for (case, instances, demand, count, expected_instances, expected_failures) in cases {
            let plan = place(&instances, &demand, &Targets::FirstFit { count });
            let placed: Vec<usize> = plan.placements.iter().map(|p| p.instance).collect();
            let failures: Vec<String> = plan
                .failures
                .iter()
                .map(|f| format!("{} {}", f.instance_arn, f.refusal.reason()))
                .collect();
            assert_eq!(placed, expected_instances, "{case}: placements");
            assert_eq!(failures, expected_failures, "{case}: failures");
        }
    }

    #[test]
    fn addresses_are_distinct_and_changed_instances_reported() {
        let instances = vec![instance("a", 1024, 1024)];
        let demand = Demand {
            needs_address: true,
            tcp_ports: vec![],
            ..demand(100, 100)
        };
        let plan = place(&instances, &demand, &Targets::FirstFit { count: 3 });
        let addresses: Vec<Option<u8>> = plan
            .placements
            .iter()
            .map(|p| p.reservation.address)
            .collect();
        assert_eq!(addresses, vec![Some(2), Some(3), Some(4)]);
        assert_eq!(plan.changed.len(), 1);
        let (index, remaining, in_use) = &plan.changed[0];
        assert_eq!(*index, 0);
        assert_eq!(remaining.cpu_units, 724);
        assert_eq!(in_use.len(), 3);
    }

    #[test]
    fn each_target_gets_one_task_and_its_own_failure() {
        let instances = vec![instance("a", 1024, 1024), instance("b", 10, 1024)];
        let plan = place(&instances, &demand(100, 100), &Targets::Each(vec![0, 1]));
        assert_eq!(plan.placements.len(), 1);
        assert_eq!(
            plan.failures,
            vec![PlacementFailure {
                instance_arn: "b".into(),
                refusal: Refusal::Cpu
            }]
        );
    }

    #[test]
    fn gpus_are_taken_and_given_back() {
        let mut a = instance("a", 1024, 1024);
        a.remaining.free_gpu_ids = ["g0".to_owned(), "g1".to_owned()].into();
        let plan = place(
            &[a.clone()],
            &Demand {
                gpus: 2,
                ..demand(1, 1)
            },
            &Targets::FirstFit { count: 2 },
        );
        assert_eq!(plan.placements.len(), 1);
        assert_eq!(plan.failures[0].refusal, Refusal::Gpu);
        let reservation = &plan.placements[0].reservation;
        let (_, mut remaining, mut addresses) = plan.changed[0].clone();
        assert!(remaining.free_gpu_ids.is_empty());
        remaining.give_back(&mut addresses, reservation);
        assert_eq!(remaining, a.remaining);
    }
}
