//! The cluster as placement sees it: [`Instance`]s, indexed once into a
//! [`Snapshot`] so that placing a task visits a handful of instances
//! rather than all of them.
//!
//! Indices:
//! - per attribute name, a column: each instance's value as a small integer
//!   (a *slot*: 0 absent, 1 present without a value, 2.. the values), and
//!   per slot the instances holding it, in index order. A CQL clause on an
//!   attribute is evaluated once per distinct value, never per instance.
//! - remaining memory and CPU, each an ordered set of (remaining, index):
//!   binpack walks it from the task's need upwards.
//! - task groups: per group, the instances running it with their counts.

use std::collections::{BTreeMap, HashMap};

use crate::plan::Plan;
use crate::resource_index::{Entry, ResourceIndex};

pub type InstanceIndex = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstanceStatus {
    Active,
    /// Keeps its tasks and takes no new ones.
    Draining,
    /// Deregistered or otherwise gone.
    Inactive,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LaunchKind {
    Ec2,
    External,
    /// A host of the cluster's Fargate pool. It serves both of Fargate's
    /// capacity providers, so a request's provider does not narrow it.
    Fargate,
}

/// What an instance has left, or what a task needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_units: i64,
    pub memory_mib: i64,
    pub gpus: u32,
}

/// One container instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub arn: String,
    pub ec2_instance_id: String,
    pub status: InstanceStatus,
    pub agent_connected: bool,
    pub agent_version: Option<String>,
    pub launch_kind: LaunchKind,
    /// The capacity provider the instance belongs to, if any. A request
    /// naming one is placed on its instances only.
    pub capacity_provider: Option<String>,
    pub registered_at_ms: i64,
    /// Every attribute, built-in (`ecs.availability-zone`, `ecs.instance-type`,
    /// `ecs.os-type`, `ecs.cpu-architecture`, `ecs.ami-id`, capabilities) and custom.
    pub attributes: Vec<(String, Option<String>)>,
    pub remaining: Resources,
    /// Static host ports in use (ECS's PORTS resource lists the ports taken).
    pub tcp_ports_in_use: Vec<u16>,
    pub udp_ports_in_use: Vec<u16>,
    /// Task ENIs (awsvpc addresses) the instance can still hand out.
    pub enis_available: u32,
    /// Task groups of the tasks running on it, with how many of each.
    pub task_groups: Vec<(String, u32)>,
}

impl Instance {
    /// An ACTIVE, connected EC2 instance with nothing else set: a start for tests and benches.
    pub fn new(arn: impl Into<String>, remaining: Resources) -> Instance {
        let arn = arn.into();
        Instance {
            ec2_instance_id: arn.rsplit('/').next().unwrap_or_default().to_owned(),
            arn,
            status: InstanceStatus::Active,
            agent_connected: true,
            agent_version: None,
            launch_kind: LaunchKind::Ec2,
            capacity_provider: None,
            registered_at_ms: 0,
            attributes: Vec::new(),
            remaining,
            tcp_ports_in_use: Vec::new(),
            udp_ports_in_use: Vec::new(),
            enis_available: 0,
            task_groups: Vec::new(),
        }
    }

    pub fn with_attribute(mut self, name: &str, value: Option<&str>) -> Instance {
        self.attributes
            .push((name.to_owned(), value.map(str::to_owned)));
        self
    }

    pub fn attribute(&self, name: &str) -> Option<Option<&str>> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
    }

    pub fn running_tasks_count(&self) -> u32 {
        self.task_groups.iter().map(|(_, count)| count).sum()
    }
}

/// Slot of an instance without the attribute.
pub const SLOT_ABSENT: u32 = 0;
/// Slot of an instance with the attribute but no value.
pub const SLOT_NO_VALUE: u32 = 1;
const FIRST_VALUE_SLOT: u32 = 2;
/// Columns with at most this many values (zones, instance types, OS) keep a
/// resource index per value, so that binpack within a zone or an instance
/// family walks only that value's instances. Columns with more (instance
/// ids, AMI ids) would cost more to keep than they save.
pub const INDEXED_VALUES_MAX: usize = 256;

/// One attribute name's values across the snapshot.
#[derive(Clone, Debug, Default)]
pub(crate) struct Column {
    /// The value of each slot from [`FIRST_VALUE_SLOT`] on.
    pub values: Vec<String>,
    pub slot_of: HashMap<String, u32>,
    /// Slot of each instance.
    pub slots: Vec<u32>,
    /// Instances of each slot, ascending.
    pub members: Vec<Vec<InstanceIndex>>,
    /// Per slot, its instances by remaining memory and by remaining CPU;
    /// empty for a column with more than [`INDEXED_VALUES_MAX`] values.
    pub by_memory: Vec<ResourceIndex>,
    pub by_cpu: Vec<ResourceIndex>,
}

impl Column {
    pub fn slot_count(&self) -> usize {
        self.members.len()
    }

    /// Gives the instance `value` (`None`: present without a value).
    /// Members are filled in once every instance has its slot.
    fn set(&mut self, index: InstanceIndex, value: Option<&String>) {
        let slot = match value {
            None => SLOT_NO_VALUE,
            Some(value) => match self.slot_of.get(value) {
                Some(slot) => *slot,
                None => {
                    let slot = FIRST_VALUE_SLOT + self.values.len() as u32;
                    self.values.push(value.clone());
                    self.slot_of.insert(value.clone(), slot);
                    self.members.push(Vec::new());
                    slot
                }
            },
        };
        self.slots[index as usize] = slot;
    }

    /// The slot holding `value`, if any instance has it.
    pub fn slot_of_value(&self, value: &str) -> Option<u32> {
        self.slot_of.get(value).copied()
    }

    pub fn value_of_slot(&self, slot: u32) -> Option<&str> {
        slot.checked_sub(FIRST_VALUE_SLOT)
            .and_then(|index| self.values.get(index as usize))
            .map(String::as_str)
    }
}

/// The instances of one cluster, indexed. Built once per snapshot read;
/// [`Snapshot::apply`] commits a plan into it as the control plane commits
/// the plan into the store.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub(crate) instances: Vec<Instance>,
    pub(crate) attribute_ids: HashMap<String, u32>,
    /// The column of instances' capacity providers. Not an attribute: no
    /// constraint or strategy can name it, and no attribute can shadow it.
    pub(crate) capacity_provider_column: Option<u32>,
    pub(crate) columns: Vec<Column>,
    /// Keyed by remaining memory, each entry carrying its remaining CPU.
    pub(crate) by_memory: ResourceIndex,
    /// Keyed by remaining CPU, each entry carrying its remaining memory.
    pub(crate) by_cpu: ResourceIndex,
    pub(crate) group_ids: HashMap<String, u32>,
    pub(crate) group_names: Vec<String>,
    /// Per group: instance → tasks of the group on it (only counts above zero).
    pub(crate) group_members: Vec<BTreeMap<InstanceIndex, u32>>,
    /// Per instance: (group, count above zero).
    pub(crate) instance_groups: Vec<Vec<(u32, u32)>>,
}

impl Snapshot {
    pub fn new(instances: Vec<Instance>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        let count = instances.len();
        for (index, mut instance) in instances.into_iter().enumerate() {
            let index = index as InstanceIndex;
            instance.tcp_ports_in_use.sort_unstable();
            instance.tcp_ports_in_use.dedup();
            instance.udp_ports_in_use.sort_unstable();
            instance.udp_ports_in_use.dedup();
            for (name, value) in &instance.attributes {
                let id = match snapshot.attribute_ids.get(name) {
                    Some(id) => *id,
                    None => {
                        let id = snapshot.new_column(count);
                        snapshot.attribute_ids.insert(name.clone(), id);
                        id
                    }
                };
                snapshot.columns[id as usize].set(index, value.as_ref());
            }
            if let Some(provider) = &instance.capacity_provider {
                let id = match snapshot.capacity_provider_column {
                    Some(id) => id,
                    None => {
                        let id = snapshot.new_column(count);
                        snapshot.capacity_provider_column = Some(id);
                        id
                    }
                };
                snapshot.columns[id as usize].set(index, Some(provider));
            }
            let mut groups = Vec::new();
            for (name, tasks) in &instance.task_groups {
                if *tasks == 0 {
                    continue;
                }
                let group = snapshot.intern_group(name);
                *snapshot.group_members[group as usize]
                    .entry(index)
                    .or_insert(0) += tasks;
                match groups.iter_mut().find(|(g, _)| *g == group) {
                    Some((_, existing)) => *existing += tasks,
                    None => groups.push((group, *tasks)),
                }
            }
            snapshot.instance_groups.push(groups);
            snapshot.instances.push(instance);
        }
        let (by_memory, by_cpu) = snapshot
            .instances
            .iter()
            .enumerate()
            .map(|(index, instance)| index_entries(index as InstanceIndex, &instance.remaining))
            .unzip();
        snapshot.by_memory = ResourceIndex::build(by_memory);
        snapshot.by_cpu = ResourceIndex::build(by_cpu);
        for column in &mut snapshot.columns {
            for (index, slot) in column.slots.iter().enumerate() {
                column.members[*slot as usize].push(index as InstanceIndex);
            }
            if column.members.len() <= INDEXED_VALUES_MAX {
                for members in &column.members {
                    let (memory, cpu) = members
                        .iter()
                        .map(|index| {
                            index_entries(*index, &snapshot.instances[*index as usize].remaining)
                        })
                        .unzip();
                    column.by_memory.push(ResourceIndex::build(memory));
                    column.by_cpu.push(ResourceIndex::build(cpu));
                }
            }
        }
        snapshot
    }

    /// A column where every one of `count` instances is without a value yet.
    fn new_column(&mut self, count: usize) -> u32 {
        self.columns.push(Column {
            slots: vec![SLOT_ABSENT; count],
            members: vec![Vec::new(), Vec::new()],
            ..Column::default()
        });
        (self.columns.len() - 1) as u32
    }

    fn intern_group(&mut self, name: &str) -> u32 {
        if let Some(id) = self.group_ids.get(name) {
            return *id;
        }
        let id = self.group_names.len() as u32;
        self.group_ids.insert(name.to_owned(), id);
        self.group_names.push(name.to_owned());
        self.group_members.push(BTreeMap::new());
        id
    }

    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// How many tasks of `group` run on the instance.
    pub fn group_count(&self, instance: InstanceIndex, group: &str) -> u32 {
        self.group_ids
            .get(group)
            .and_then(|g| self.group_members[*g as usize].get(&instance))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn column(&self, name: &str) -> Option<(u32, &Column)> {
        self.attribute_ids
            .get(name)
            .map(|id| (*id, &self.columns[*id as usize]))
    }

    /// Commits a plan: what the control plane writes to the store, applied
    /// to the indices. Placing against the result sees the plan's tasks.
    pub fn apply(&mut self, plan: &Plan) {
        let group = (!plan.deltas.is_empty()).then(|| self.intern_group(&plan.group));
        for delta in &plan.deltas {
            let index = delta.instance;
            let Some(instance) = self.instances.get_mut(index as usize) else {
                continue;
            };
            let before = instance.remaining;
            instance.remaining.cpu_units -= delta.taken.cpu_units;
            instance.remaining.memory_mib -= delta.taken.memory_mib;
            instance.remaining.gpus = instance.remaining.gpus.saturating_sub(delta.taken.gpus);
            instance.enis_available = instance.enis_available.saturating_sub(delta.enis);
            for (ports, added) in [
                (&mut instance.tcp_ports_in_use, &delta.tcp_ports),
                (&mut instance.udp_ports_in_use, &delta.udp_ports),
            ] {
                ports.extend_from_slice(added);
                ports.sort_unstable();
                ports.dedup();
            }
            if before != instance.remaining {
                self.by_memory.remove(before.memory_mib, index);
                self.by_cpu.remove(before.cpu_units, index);
                let (memory, cpu) = index_entries(index, &instance.remaining);
                self.by_memory.insert(memory);
                self.by_cpu.insert(cpu);
                for column in &mut self.columns {
                    let slot = column.slots[index as usize] as usize;
                    if let (Some(by_memory), Some(by_cpu)) =
                        (column.by_memory.get_mut(slot), column.by_cpu.get_mut(slot))
                    {
                        by_memory.remove(before.memory_mib, index);
                        by_cpu.remove(before.cpu_units, index);
                        by_memory.insert(memory);
                        by_cpu.insert(cpu);
                    }
                }
            }
            if let Some(group) = group {
                if delta.tasks > 0 {
                    *self.group_members[group as usize].entry(index).or_insert(0) += delta.tasks;
                    let groups = &mut self.instance_groups[index as usize];
                    match groups.iter_mut().find(|(g, _)| *g == group) {
                        Some((_, count)) => *count += delta.tasks,
                        None => groups.push((group, delta.tasks)),
                    }
                    let name = &self.group_names[group as usize];
                    match instance.task_groups.iter_mut().find(|(n, _)| n == name) {
                        Some((_, count)) => *count += delta.tasks,
                        None => instance.task_groups.push((name.clone(), delta.tasks)),
                    }
                }
            }
        }
    }
}

fn index_entries(instance: InstanceIndex, remaining: &Resources) -> (Entry, Entry) {
    (
        Entry {
            key: remaining.memory_mib,
            instance,
            other: remaining.cpu_units,
        },
        Entry {
            key: remaining.cpu_units,
            instance,
            other: remaining.memory_mib,
        },
    )
}
