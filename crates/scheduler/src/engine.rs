//! The placement engine: ECS's four steps for each task.
//!
//! ```text
//!  Request ──compile once──▶ constraint nodes (attribute clauses as per-value tables),
//!                            candidate sources (attribute values a constraint pins)
//!  for each task:
//!    choose(strategy 0, filter = {})
//!      spread(attr)   : value buckets by group count, fewest first ─▶ filter += bucket, next strategy
//!      spread(id)     : instances by group count, fewest first     ─▶ filter += count, next strategy
//!      binpack(res)   : walk the remaining-resource index upwards  ─▶ least that fits (ties ─▶ next)
//!      random         : seeded choice among every feasible instance
//!      (end)          : first feasible instance of the narrowest source
//!    feasible(i) = resources (CPU, MEMORY, PORTS, PORTS_UDP, GPU, ENI) then constraints,
//!                  against the snapshot minus what this plan already took
//!  no instance ─▶ failures: every instance's first failed check; the rest of the request fails too
//! ```
//!
//! Strategies are best effort: a bucket without a feasible instance is
//! skipped for the next one, so a strategy never makes placement fail.
//! Constraints are strict.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::ControlFlow;

use crate::cql::{string_test, Argument, Clause, Expression, Operator, Subject};
use crate::plan::{
    BinpackField, Constraint, Delta, Failure, Plan, Reason, Request, SpreadField, Strategy,
    FAILURES_MAX,
};
use crate::resource_index::ResourceIndex;
use crate::rng::Rng;
use crate::snapshot::{
    InstanceIndex, InstanceStatus, LaunchKind, Snapshot, SLOT_ABSENT, SLOT_NO_VALUE,
};

/// Instance indices hash to themselves: they are small, dense and trusted.
#[derive(Default)]
struct IndexHasher(u64);

impl Hasher for IndexHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }
    fn write_u32(&mut self, value: u32) {
        self.0 = u64::from(value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IndexMap<V> = HashMap<InstanceIndex, V, BuildHasherDefault<IndexHasher>>;

/// A constraint compiled against one snapshot.
enum Node {
    Const(bool),
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    /// An attribute clause, decided per slot of the attribute's column.
    Attribute {
        column: u32,
        by_slot: Vec<bool>,
    },
    /// A clause on one of the instance's own fields, evaluated when visited.
    Field(Clause),
    /// `task:group`, decided per group id; the last entry is the request's
    /// own group when the snapshot does not know it yet.
    TaskGroup {
        operator: Operator,
        by_group: Vec<bool>,
    },
}

/// A set of attribute values an instance must have (a spread bucket, or
/// the values a memberOf constraint allows).
#[derive(Clone)]
struct ValueSet {
    column: u32,
    by_slot: Vec<bool>,
    /// How many instances hold one of the values.
    size: usize,
}

#[derive(Default)]
struct Filter {
    sets: Vec<ValueSet>,
    /// spread(instanceId): tasks of the group on the instance.
    group_count: Option<u32>,
    /// binpack ties: remaining amount of the resource.
    remaining: Option<(BinpackField, i64)>,
}

struct Engine<'a> {
    snapshot: &'a Snapshot,
    request: &'a Request,
    strategies: Vec<Strategy>,
    /// The request's group in the snapshot, if it runs anywhere yet.
    group: Option<u32>,
    /// Group id the compiled `task:group` tables use for the request's group.
    group_slot: usize,
    constraints: Vec<Node>,
    distinct: bool,
    /// Column of each required attribute; `None` when no instance has it.
    required: Vec<Option<u32>>,
    /// Candidate sources pinned by memberOf constraints.
    sources: Vec<ValueSet>,
    /// Per strategy: spread(attribute) tasks of the group per slot.
    spread_counts: Vec<Option<(u32, Vec<u32>)>>,
    /// spread(instanceId): how many instances run each count (above zero) of the group's tasks.
    count_histogram: BTreeMap<u32, u32>,
    deltas: Vec<Delta>,
    delta_of: IndexMap<usize>,
    rng: Rng,
}

/// Places the tasks of one request. Pure and deterministic: the same
/// snapshot and request give the same plan.
pub fn place(snapshot: &Snapshot, request: &Request) -> Plan {
    let mut engine = Engine::new(snapshot, request);
    let mut plan = Plan {
        group: request.group.clone(),
        ..Plan::default()
    };
    for placed in 0..request.count {
        match engine.choose(0, &mut Filter::default()) {
            Some(instance) => {
                engine.record(instance);
                plan.placements.push(instance);
            }
            None => {
                plan.unplaced = request.count - placed;
                plan.failures = engine.failures();
                break;
            }
        }
    }
    plan.deltas = engine.deltas;
    plan
}

/// How one instance fared for the request's first task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub instance: InstanceIndex,
    pub arn: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Excluded at the resources or constraints step.
    Excluded { reason: Reason, detail: String },
    /// Feasible, but the strategies preferred another instance.
    NotPreferred,
    /// Where the first task goes.
    Chosen,
}

/// Per instance, the first step that excluded it and why, with the numbers;
/// or that it was a candidate, and which one the first task would go to.
pub fn explain(snapshot: &Snapshot, request: &Request) -> Vec<Verdict> {
    let single = Request {
        count: 1,
        ..request.clone()
    };
    let engine = Engine::new(snapshot, &single);
    let chosen = place(snapshot, &single).placements.first().copied();
    (0..snapshot.len() as InstanceIndex)
        .map(|index| {
            let outcome = match engine.check(index) {
                Err(reason) => Outcome::Excluded {
                    reason,
                    detail: engine.detail(index, reason),
                },
                Ok(()) if Some(index) == chosen => Outcome::Chosen,
                Ok(()) => Outcome::NotPreferred,
            };
            Verdict {
                instance: index,
                arn: snapshot.instances[index as usize].arn.clone(),
                outcome,
            }
        })
        .collect()
}

impl<'a> Engine<'a> {
    fn new(snapshot: &'a Snapshot, request: &'a Request) -> Engine<'a> {
        let strategies = if request.strategies.is_empty() {
            Strategy::defaults()
        } else {
            request.strategies.clone()
        };
        let group = snapshot.group_ids.get(&request.group).copied();
        let group_slot = group.map_or(snapshot.group_names.len(), |g| g as usize);
        let mut engine = Engine {
            snapshot,
            request,
            strategies,
            group,
            group_slot,
            constraints: Vec::new(),
            distinct: false,
            required: request
                .required_attributes
                .iter()
                .map(|name| snapshot.column(name).map(|(id, _)| id))
                .collect(),
            sources: Vec::new(),
            spread_counts: Vec::new(),
            count_histogram: BTreeMap::new(),
            deltas: Vec::new(),
            delta_of: IndexMap::default(),
            rng: Rng::new(request.seed),
        };
        if let Some(provider) = &request.capacity_provider {
            engine.pin_to_capacity_provider(provider);
        }
        for constraint in &request.constraints {
            match constraint {
                Constraint::DistinctInstance => engine.distinct = true,
                Constraint::MemberOf(expression) => {
                    let node = engine.compile(expression);
                    engine.collect_sources(&node);
                    engine.constraints.push(node);
                }
            }
        }
        let members = group.map(|g| &snapshot.group_members[g as usize]);
        engine.spread_counts = engine
            .strategies
            .iter()
            .map(|strategy| match strategy {
                Strategy::Spread(SpreadField::Attribute(name)) => {
                    snapshot.column(name).map(|(id, column)| {
                        let mut counts = vec![0u32; column.slot_count()];
                        for (instance, tasks) in members.into_iter().flatten() {
                            counts[column.slots[*instance as usize] as usize] += tasks;
                        }
                        (id, counts)
                    })
                }
                _ => None,
            })
            .collect();
        if engine
            .strategies
            .contains(&Strategy::Spread(SpreadField::InstanceId))
        {
            for tasks in members.into_iter().flat_map(|m| m.values()) {
                *engine.count_histogram.entry(*tasks).or_insert(0) += 1;
            }
        }
        engine
    }

    fn compile(&self, expression: &Expression) -> Node {
        match expression {
            Expression::And(parts) => Node::And(parts.iter().map(|p| self.compile(p)).collect()),
            Expression::Or(parts) => Node::Or(parts.iter().map(|p| self.compile(p)).collect()),
            Expression::Not(inner) => Node::Not(Box::new(self.compile(inner))),
            Expression::Clause(clause) => match &clause.subject {
                Subject::Attribute(name) => {
                    let test = |present: bool, value: Option<&str>| {
                        string_test(clause.operator, &clause.argument, present, value)
                    };
                    match self.snapshot.column(name) {
                        None => Node::Const(test(false, None)),
                        Some((id, column)) => Node::Attribute {
                            column: id,
                            by_slot: (0..column.slot_count() as u32)
                                .map(|slot| match slot {
                                    SLOT_ABSENT => test(false, None),
                                    SLOT_NO_VALUE => test(true, None),
                                    _ => test(true, column.value_of_slot(slot)),
                                })
                                .collect(),
                        },
                    }
                }
                Subject::TaskGroup => {
                    let names = &self.snapshot.group_names;
                    let mut by_group: Vec<bool> = names
                        .iter()
                        .map(|name| {
                            string_test(clause.operator, &clause.argument, true, Some(name))
                        })
                        .collect();
                    if self.group.is_none() {
                        by_group.push(string_test(
                            clause.operator,
                            &clause.argument,
                            true,
                            Some(&self.request.group),
                        ));
                    }
                    Node::TaskGroup {
                        operator: clause.operator,
                        by_group,
                    }
                }
                _ => Node::Field(clause.clone()),
            },
        }
    }

    /// Makes the provider's instances a candidate source, so that a search
    /// visits them only, as a memberOf constraint's values would.
    fn pin_to_capacity_provider(&mut self, provider: &str) {
        let Some(column) = self.snapshot.capacity_provider_column else {
            // No instance belongs to any provider: `check` refuses them all.
            return;
        };
        let values = &self.snapshot.columns[column as usize];
        let wanted = values.slot_of_value(provider);
        let by_slot: Vec<bool> = (0..values.slot_count() as u32)
            .map(|slot| Some(slot) == wanted)
            .collect();
        let size = wanted.map_or(0, |slot| values.members[slot as usize].len());
        self.sources.push(ValueSet {
            column,
            by_slot,
            size,
        });
    }

    /// Attribute clauses at the top of a constraint (alone or in an `and`)
    /// that exclude instances without the attribute pin the candidates to
    /// the holders of the allowed values.
    fn collect_sources(&mut self, node: &Node) {
        match node {
            Node::And(parts) => parts.iter().for_each(|part| self.collect_sources(part)),
            Node::Attribute { column, by_slot } if !by_slot[SLOT_ABSENT as usize] => {
                let members = &self.snapshot.columns[*column as usize].members;
                let size = by_slot
                    .iter()
                    .zip(members)
                    .filter(|(allowed, _)| **allowed)
                    .map(|(_, m)| m.len())
                    .sum();
                self.sources.push(ValueSet {
                    column: *column,
                    by_slot: by_slot.clone(),
                    size,
                });
            }
            _ => {}
        }
    }

    fn delta(&self, instance: InstanceIndex) -> Option<&Delta> {
        self.delta_of.get(&instance).map(|at| &self.deltas[*at])
    }

    /// Tasks of the request's group on the instance, this plan's included.
    fn group_count(&self, instance: InstanceIndex) -> u32 {
        let before = self
            .group
            .and_then(|g| self.snapshot.group_members[g as usize].get(&instance))
            .copied()
            .unwrap_or(0);
        before + self.delta(instance).map_or(0, |d| d.tasks)
    }

    fn remaining(&self, instance: InstanceIndex, field: BinpackField) -> i64 {
        let base = &self.snapshot.instances[instance as usize].remaining;
        let taken = self.delta(instance).map(|d| d.taken).unwrap_or_default();
        match field {
            BinpackField::Cpu => base.cpu_units - taken.cpu_units,
            BinpackField::Memory => base.memory_mib - taken.memory_mib,
        }
    }

    /// ECS's first two steps for one instance: resources, then constraints.
    fn check(&self, index: InstanceIndex) -> Result<(), Reason> {
        let instance = &self.snapshot.instances[index as usize];
        match instance.status {
            InstanceStatus::Active => {}
            InstanceStatus::Draining => return Err(Reason::Draining),
            InstanceStatus::Inactive => return Err(Reason::Inactive),
        }
        if self
            .request
            .launch_kind
            .is_some_and(|kind| kind != instance.launch_kind)
        {
            return Err(Reason::LaunchKind);
        }
        if let Some(wanted) = self
            .request
            .capacity_provider
            .as_ref()
            .filter(|_| instance.launch_kind != LaunchKind::Fargate)
        {
            if instance.capacity_provider.as_ref() != Some(wanted) {
                return Err(Reason::CapacityProvider);
            }
        }
        if !instance.agent_connected {
            return Err(Reason::Agent);
        }
        let has = |column: &Option<u32>| {
            column.is_some_and(|c| {
                self.snapshot.columns[c as usize].slots[index as usize] != SLOT_ABSENT
            })
        };
        if !self.required.iter().all(has) {
            return Err(Reason::Attribute);
        }
        let needs = &self.request.needs;
        let delta = self.delta(index);
        let taken = delta.map(|d| d.taken).unwrap_or_default();
        let remaining = &instance.remaining;
        if remaining.cpu_units - taken.cpu_units < needs.cpu_units {
            return Err(Reason::Cpu);
        }
        if remaining.memory_mib - taken.memory_mib < needs.memory_mib {
            return Err(Reason::Memory);
        }
        let port_taken = |in_use: &[u16], planned: Option<&Vec<u16>>, port: &u16| {
            in_use.binary_search(port).is_ok() || planned.is_some_and(|p| p.contains(port))
        };
        if self.request.tcp_ports.iter().any(|port| {
            port_taken(
                &instance.tcp_ports_in_use,
                delta.map(|d| &d.tcp_ports),
                port,
            )
        }) {
            return Err(Reason::Ports);
        }
        if self.request.udp_ports.iter().any(|port| {
            port_taken(
                &instance.udp_ports_in_use,
                delta.map(|d| &d.udp_ports),
                port,
            )
        }) {
            return Err(Reason::PortsUdp);
        }
        if remaining.gpus.saturating_sub(taken.gpus) < needs.gpus {
            return Err(Reason::Gpu);
        }
        if self.request.needs_eni
            && instance
                .enis_available
                .saturating_sub(delta.map_or(0, |d| d.enis))
                == 0
        {
            return Err(Reason::Eni);
        }
        if self.distinct && self.group_count(index) > 0 {
            return Err(Reason::DistinctInstance);
        }
        if !self.constraints.iter().all(|node| self.eval(node, index)) {
            return Err(Reason::MemberOf);
        }
        Ok(())
    }

    fn eval(&self, node: &Node, index: InstanceIndex) -> bool {
        match node {
            Node::Const(value) => *value,
            Node::And(parts) => parts.iter().all(|part| self.eval(part, index)),
            Node::Or(parts) => parts.iter().any(|part| self.eval(part, index)),
            Node::Not(inner) => !self.eval(inner, index),
            Node::Attribute { column, by_slot } => {
                by_slot[self.snapshot.columns[*column as usize].slots[index as usize] as usize]
            }
            Node::TaskGroup { operator, by_group } => {
                let planned = self.delta(index).is_some_and(|d| d.tasks > 0);
                let groups = &self.snapshot.instance_groups[index as usize];
                let mut running = groups
                    .iter()
                    .map(|(g, _)| *g as usize)
                    .chain(planned.then_some(self.group_slot));
                match operator {
                    Operator::Exists => running.next().is_some(),
                    Operator::NotExists => running.next().is_none(),
                    _ => running.any(|g| by_group[g]),
                }
            }
            Node::Field(clause) => {
                let instance = &self.snapshot.instances[index as usize];
                match clause.subject {
                    Subject::RunningTasksCount => {
                        let planned = self.delta(index).map_or(0, |d| d.tasks);
                        let running = i64::from(instance.running_tasks_count() + planned);
                        matches!(clause.argument, Argument::Count(count)
                            if crate::cql::ordering_holds(clause.operator, running.cmp(&count)))
                    }
                    _ => clause.matches(&crate::cql::Facts {
                        instance,
                        groups: &instance.task_groups,
                    }),
                }
            }
        }
    }

    /// Whether the instance is in every set of the filter.
    fn in_filter(&self, filter: &Filter, index: InstanceIndex) -> bool {
        filter.sets.iter().all(|set| {
            set.by_slot[self.snapshot.columns[set.column as usize].slots[index as usize] as usize]
        }) && filter
            .group_count
            .is_none_or(|count| self.group_count(index) == count)
            && filter
                .remaining
                .is_none_or(|(field, amount)| self.remaining(index, field) == amount)
    }

    /// Visits the instances of the narrowest source in the filter, in a
    /// fixed order, until `visit` breaks. Visited instances are in the
    /// filter; feasibility is the visitor's business.
    fn for_each(&self, filter: &Filter, mut visit: impl FnMut(InstanceIndex) -> ControlFlow<()>) {
        let mut go = |index: InstanceIndex| {
            if self.in_filter(filter, index) {
                visit(index)
            } else {
                ControlFlow::Continue(())
            }
        };
        if let Some((field, amount)) = filter.remaining {
            let index = match field {
                BinpackField::Cpu => &self.snapshot.by_cpu,
                BinpackField::Memory => &self.snapshot.by_memory,
            };
            let mut stopped = false;
            index.equal(amount, |entry| {
                stopped =
                    !self.delta_of.contains_key(&entry.instance) && go(entry.instance).is_break();
                stopped
            });
            if stopped {
                return;
            }
            for delta in &self.deltas {
                if go(delta.instance).is_break() {
                    return;
                }
            }
            return;
        }
        let narrowest = filter
            .sets
            .iter()
            .chain(&self.sources)
            .min_by_key(|set| set.size);
        if let (Some(1..), Some(g)) = (filter.group_count, self.group) {
            let members = &self.snapshot.group_members[g as usize];
            if narrowest.is_none_or(|set| members.len() < set.size) {
                for instance in members.keys() {
                    if go(*instance).is_break() {
                        return;
                    }
                }
                for delta in &self.deltas {
                    if !members.contains_key(&delta.instance) && go(delta.instance).is_break() {
                        return;
                    }
                }
                return;
            }
        }
        match narrowest {
            Some(set) => {
                let members = &self.snapshot.columns[set.column as usize].members;
                for (allowed, instances) in set.by_slot.iter().zip(members) {
                    if *allowed {
                        for instance in instances {
                            if go(*instance).is_break() {
                                return;
                            }
                        }
                    }
                }
            }
            None => {
                for instance in 0..self.snapshot.len() as InstanceIndex {
                    if go(instance).is_break() {
                        return;
                    }
                }
            }
        }
    }

    fn source_size(&self, filter: &Filter) -> usize {
        filter
            .sets
            .iter()
            .chain(&self.sources)
            .map(|set| set.size)
            .min()
            .unwrap_or(self.snapshot.len())
    }

    /// The feasible instance in the filter with the least remaining `field`.
    fn least_remaining(
        &self,
        filter: &Filter,
        field: BinpackField,
    ) -> Option<(i64, InstanceIndex)> {
        let mut best: Option<(i64, InstanceIndex)> = None;
        let mut consider = |this: &Self, instance: InstanceIndex| {
            let key = (this.remaining(instance, field), instance);
            if best.is_none_or(|b| key < b) && this.check(instance).is_ok() {
                best = Some(key);
            }
        };
        // A narrow source is cheaper to read whole than to find in the index.
        if filter.remaining.is_some() || self.source_size(filter) * 8 <= self.snapshot.len() {
            self.for_each(filter, |instance| {
                consider(self, instance);
                ControlFlow::Continue(())
            });
            return best;
        }
        let needs = &self.request.needs;
        let (need, other_need) = match field {
            BinpackField::Cpu => (needs.cpu_units, needs.memory_mib),
            BinpackField::Memory => (needs.memory_mib, needs.cpu_units),
        };
        let mut walk = |index: &ResourceIndex| {
            index.walk(need, other_need, |entry| {
                let instance = entry.instance;
                let fits = !self.delta_of.contains_key(&instance)
                    && self.in_filter(filter, instance)
                    && self.check(instance).is_ok();
                if fits {
                    consider(self, instance);
                }
                fits
            });
        };
        // Walk per value of the narrowest indexed set. Constraint sources
        // come first: the instances they exclude are never used, so in a
        // global walk they pile up below the binpack frontier, while spread
        // buckets fill evenly.
        let indexed = |set: &&ValueSet| {
            !self.snapshot.columns[set.column as usize]
                .by_memory
                .is_empty()
        };
        let source = self
            .sources
            .iter()
            .filter(indexed)
            .min_by_key(|set| set.size)
            .or_else(|| {
                filter
                    .sets
                    .iter()
                    .filter(indexed)
                    .min_by_key(|set| set.size)
            });
        match source {
            Some(set) => {
                let column = &self.snapshot.columns[set.column as usize];
                let per_slot = match field {
                    BinpackField::Cpu => &column.by_cpu,
                    BinpackField::Memory => &column.by_memory,
                };
                for (allowed, index) in set.by_slot.iter().zip(per_slot) {
                    if *allowed {
                        walk(index);
                    }
                }
            }
            None => walk(match field {
                BinpackField::Cpu => &self.snapshot.by_cpu,
                BinpackField::Memory => &self.snapshot.by_memory,
            }),
        }
        // Instances this plan already used sit at stale keys in the index.
        for delta in &self.deltas {
            if self.in_filter(filter, delta.instance) {
                consider(self, delta.instance);
            }
        }
        best
    }

    fn choose(&mut self, step: usize, filter: &mut Filter) -> Option<InstanceIndex> {
        let Some(strategy) = self.strategies.get(step) else {
            let mut found = None;
            self.for_each(filter, |instance| {
                if self.check(instance).is_ok() {
                    found = Some(instance);
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
            return found;
        };
        match strategy.clone() {
            Strategy::Binpack(field) => {
                let (amount, instance) = self.least_remaining(filter, field)?;
                if step + 1 == self.strategies.len() {
                    return Some(instance);
                }
                let outer = filter.remaining.replace((field, amount));
                let chosen = self.choose(step + 1, filter).or(Some(instance));
                filter.remaining = outer;
                chosen
            }
            Strategy::Random => {
                let mut feasible = Vec::new();
                self.for_each(filter, |instance| {
                    if self.check(instance).is_ok() {
                        feasible.push(instance);
                    }
                    ControlFlow::Continue(())
                });
                if feasible.is_empty() {
                    return None;
                }
                let pick = self.rng.below(feasible.len() as u64) as usize;
                Some(feasible[pick])
            }
            Strategy::Spread(SpreadField::Attribute(_)) => {
                let Some((column, counts)) = self.spread_counts[step].clone() else {
                    // No instance has the attribute: every instance is in one bucket.
                    return self.choose(step + 1, filter);
                };
                let members = &self.snapshot.columns[column as usize].members;
                let mut levels: Vec<u32> = counts
                    .iter()
                    .zip(members)
                    .filter(|(_, m)| !m.is_empty())
                    .map(|(count, _)| *count)
                    .collect();
                levels.sort_unstable();
                levels.dedup();
                for level in levels {
                    let by_slot: Vec<bool> = counts
                        .iter()
                        .zip(members)
                        .map(|(count, m)| *count == level && !m.is_empty())
                        .collect();
                    let size = by_slot
                        .iter()
                        .zip(members)
                        .filter(|(b, _)| **b)
                        .map(|(_, m)| m.len())
                        .sum();
                    filter.sets.push(ValueSet {
                        column,
                        by_slot,
                        size,
                    });
                    let chosen = self.choose(step + 1, filter);
                    filter.sets.pop();
                    if chosen.is_some() {
                        return chosen;
                    }
                }
                None
            }
            Strategy::Spread(SpreadField::InstanceId) => {
                let running: u32 = self.count_histogram.values().sum();
                let mut levels: Vec<u32> = Vec::new();
                if (running as usize) < self.snapshot.len() {
                    levels.push(0);
                }
                levels.extend(self.count_histogram.keys().copied());
                for level in levels {
                    let outer = filter.group_count.replace(level);
                    let chosen = self.choose(step + 1, filter);
                    filter.group_count = outer;
                    if chosen.is_some() {
                        return chosen;
                    }
                }
                None
            }
        }
    }

    /// Takes one task's needs from the instance, in the plan's deltas and
    /// in the strategies' counts.
    fn record(&mut self, instance: InstanceIndex) {
        let before = self.group_count(instance);
        let at = match self.delta_of.get(&instance) {
            Some(at) => *at,
            None => {
                self.deltas.push(Delta {
                    instance,
                    ..Delta::default()
                });
                self.delta_of.insert(instance, self.deltas.len() - 1);
                self.deltas.len() - 1
            }
        };
        let request = self.request;
        let delta = &mut self.deltas[at];
        delta.tasks += 1;
        delta.taken.cpu_units += request.needs.cpu_units;
        delta.taken.memory_mib += request.needs.memory_mib;
        delta.taken.gpus += request.needs.gpus;
        delta.tcp_ports.extend_from_slice(&request.tcp_ports);
        delta.udp_ports.extend_from_slice(&request.udp_ports);
        delta.enis += u32::from(request.needs_eni);
        for (column, counts) in self.spread_counts.iter_mut().flatten() {
            let slot = self.snapshot.columns[*column as usize].slots[instance as usize];
            counts[slot as usize] += 1;
        }
        if !self.count_histogram.is_empty()
            || self
                .strategies
                .contains(&Strategy::Spread(SpreadField::InstanceId))
        {
            if before > 0 {
                if let Some(n) = self.count_histogram.get_mut(&before) {
                    *n -= 1;
                    if *n == 0 {
                        self.count_histogram.remove(&before);
                    }
                }
            }
            *self.count_histogram.entry(before + 1).or_insert(0) += 1;
        }
    }

    fn failures(&self) -> Vec<Failure> {
        (0..self.snapshot.len() as InstanceIndex)
            .filter_map(|index| match self.check(index) {
                Err(reason) if reason.is_reported() => Some(Failure {
                    arn: self.snapshot.instances[index as usize].arn.clone(),
                    reason,
                }),
                _ => None,
            })
            .take(FAILURES_MAX)
            .collect()
    }

    /// The numbers behind a reason, for `explain`.
    fn detail(&self, index: InstanceIndex, reason: Reason) -> String {
        let instance = &self.snapshot.instances[index as usize];
        let needs = &self.request.needs;
        match reason {
            Reason::Draining => "instance is DRAINING: it takes no new tasks".to_owned(),
            Reason::Inactive => "instance is INACTIVE".to_owned(),
            Reason::LaunchKind => format!(
                "instance is {:?}, the task is {:?}",
                instance.launch_kind, self.request.launch_kind
            ),
            Reason::CapacityProvider => format!(
                "instance belongs to capacity provider {}, the task to {}",
                instance.capacity_provider.as_deref().unwrap_or("(none)"),
                self.request
                    .capacity_provider
                    .as_deref()
                    .unwrap_or_default()
            ),
            Reason::Agent => "agent is not connected".to_owned(),
            Reason::Attribute => {
                let missing: Vec<&str> = self
                    .request
                    .required_attributes
                    .iter()
                    .filter(|name| instance.attribute(name).is_none())
                    .map(String::as_str)
                    .collect();
                format!("missing required attribute {}", missing.join(", "))
            }
            Reason::Cpu => format!(
                "not enough cpu: needs {}, has {}",
                needs.cpu_units,
                self.remaining(index, BinpackField::Cpu)
            ),
            Reason::Memory => format!(
                "not enough memory: needs {}, has {}",
                needs.memory_mib,
                self.remaining(index, BinpackField::Memory)
            ),
            Reason::Ports | Reason::PortsUdp => {
                let (wanted, in_use, protocol) = if reason == Reason::Ports {
                    (&self.request.tcp_ports, &instance.tcp_ports_in_use, "tcp")
                } else {
                    (&self.request.udp_ports, &instance.udp_ports_in_use, "udp")
                };
                let taken: Vec<String> = wanted
                    .iter()
                    .filter(|p| in_use.contains(p))
                    .map(u16::to_string)
                    .collect();
                format!("{protocol} port {} taken", taken.join(", "))
            }
            Reason::Gpu => format!(
                "not enough gpus: needs {}, has {}",
                needs.gpus, instance.remaining.gpus
            ),
            Reason::Eni => "no task ENI available".to_owned(),
            Reason::DistinctInstance => format!(
                "already runs {} task(s) of group {}",
                self.group_count(index),
                self.request.group
            ),
            Reason::MemberOf => {
                let facts = crate::cql::Facts {
                    instance,
                    groups: &instance.task_groups,
                };
                self.request
                    .constraints
                    .iter()
                    .find_map(|constraint| match constraint {
                        Constraint::MemberOf(expression) if !expression.matches(&facts) => {
                            Some(expression.why_not(&facts))
                        }
                        _ => None,
                    })
                    .unwrap_or_default()
            }
        }
    }
}
