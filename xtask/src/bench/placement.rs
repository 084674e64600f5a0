//! `cargo xtask bench placement [--instances N] [--tasks T] [--seed S]`: how
//! fast the scheduler places tasks on a large simulated cluster.
//!
//! ```text
//! snapshot: N instances, zones us-east-1a/b/c, six instance types (half t2),
//!           random remaining CPU and memory, some static ports taken
//! T/10 requests, one at a time, as RunTask sends them:
//!   parse memberOf `attribute:ecs.instance-type =~ t2.*`           (timed)
//!   place(count 10, spread(attribute:ecs.availability-zone), binpack(memory))  (timed)
//!   snapshot.apply(plan)  — what the control plane commits          (timed separately)
//! → {"bench":"placement","instances":…,"tasks":…,"placements_per_sec":…,"p99_us":…}
//! ```
//!
//! `p99_us` is per placement: each request's time divided by the tasks it
//! placed. Everything is pure and single-threaded, seeded by `--seed`, so two
//! runs place identically and differ only in time. The program also checks
//! that every task found a place and that no instance went below zero, so a
//! fast but wrong scheduler does not look good.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flotilla_scheduler::rng::Rng;
use flotilla_scheduler::{
    place, BinpackField, Constraint, Expression, Instance, Request, Resources, Snapshot,
    SpreadField, Strategy,
};
use serde_json::json;

use super::histogram::Histogram;

pub const USAGE: &str = "usage: cargo xtask bench placement [--instances N] [--tasks T] [--seed S]";

const DEFAULT_INSTANCES: usize = 10_000;
const DEFAULT_TASKS: usize = 100_000;
const INSTANCES_MAX: usize = 1_000_000;
const TASKS_MAX: usize = 10_000_000;
/// Tasks per request, RunTask's own limit.
const TASKS_PER_REQUEST: u32 = 10;
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const INSTANCE_TYPES: [&str; 6] = [
    "t2.medium",
    "t2.large",
    "t2.xlarge",
    "m5.large",
    "m5.xlarge",
    "c5.xlarge",
];
const CONSTRAINT: &str = "attribute:ecs.instance-type =~ t2.*";

pub struct Options {
    instances: usize,
    tasks: usize,
    seed: u64,
}

impl Options {
    /// Parses what follows `placement`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options {
            instances: DEFAULT_INSTANCES,
            tasks: DEFAULT_TASKS,
            seed: 1,
        };
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let value = rest
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--instances" => options.instances = super::bounded(flag, value, 1, INSTANCES_MAX)?,
                "--tasks" => options.tasks = super::bounded(flag, value, 1, TASKS_MAX)?,
                "--seed" => options.seed = super::bounded(flag, value, 0, u64::MAX)?,
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

fn cluster(options: &Options, rng: &mut Rng) -> Vec<Instance> {
    (0..options.instances)
        .map(|index| {
            let zone = ZONES[index % ZONES.len()];
            let instance_type = INSTANCE_TYPES[rng.below(INSTANCE_TYPES.len() as u64) as usize];
            let remaining = Resources {
                cpu_units: 1024 * (1 + rng.below(8) as i64),
                memory_mib: 1024 * (2 + rng.below(31) as i64),
                gpus: 0,
            };
            let mut instance = Instance::new(
                format!("arn:aws:ecs:us-east-1:000000000000:container-instance/bench/{index:08x}"),
                remaining,
            )
            .with_attribute("ecs.availability-zone", Some(zone))
            .with_attribute("ecs.instance-type", Some(instance_type))
            .with_attribute("ecs.os-type", Some("linux"))
            .with_attribute("ecs.cpu-architecture", Some("x86_64"))
            .with_attribute("ecs.capability.task-eni", None);
            instance.tcp_ports_in_use = vec![22, 2375, 2376, 51678, 51679];
            instance.registered_at_ms = 1_700_000_000_000 + index as i64;
            instance
        })
        .collect()
}

pub fn run(options: &Options) -> Result<()> {
    let mut rng = Rng::new(options.seed);
    let build = Instant::now();
    let instances = cluster(options, &mut rng);
    let initial: Vec<Resources> = instances.iter().map(|i| i.remaining).collect();
    let mut snapshot = Snapshot::new(instances);
    let build_seconds = build.elapsed().as_secs_f64();

    let strategies = vec![
        Strategy::Spread(SpreadField::Attribute("ecs.availability-zone".into())),
        Strategy::Binpack(BinpackField::Memory),
    ];
    let mut histogram = Histogram::default();
    let mut placed = 0usize;
    let mut placing = Duration::ZERO;
    let mut applying = Duration::ZERO;
    let mut remaining_tasks = options.tasks;
    while remaining_tasks > 0 {
        let count = remaining_tasks.min(TASKS_PER_REQUEST as usize) as u32;
        let needs = Resources {
            cpu_units: 32 * (1 + rng.below(4) as i64),
            memory_mib: 64 * (1 + rng.below(8) as i64),
            gpus: 0,
        };
        let started = Instant::now();
        let expression = Expression::parse(CONSTRAINT)?;
        let request = Request {
            needs,
            count,
            strategies: strategies.clone(),
            constraints: vec![Constraint::MemberOf(expression)],
            group: "service:bench".to_owned(),
            seed: rng.next_u64(),
            ..Request::default()
        };
        let plan = place(&snapshot, &request);
        let took = started.elapsed();
        placing += took;
        if plan.placements.is_empty() {
            bail!(
                "request {} placed nothing: {:?}",
                placed / TASKS_PER_REQUEST as usize,
                plan.failures.first()
            );
        }
        let per_placement = took / plan.placements.len() as u32;
        for _ in 0..plan.placements.len() {
            histogram.record(per_placement);
        }
        placed += plan.placements.len();
        let started = Instant::now();
        snapshot.apply(&plan);
        applying += started.elapsed();
        remaining_tasks -= count as usize;
    }
    for (instance, before) in snapshot.instances().iter().zip(&initial) {
        if instance.remaining.cpu_units < 0 || instance.remaining.memory_mib < 0 {
            bail!(
                "{} overcommitted: {:?} (had {before:?})",
                instance.arn,
                instance.remaining
            );
        }
    }
    let used = snapshot
        .instances()
        .iter()
        .filter(|i| !i.task_groups.is_empty())
        .count();
    let round = |value: f64, decimals: i32| {
        let scale = 10f64.powi(decimals);
        (value * scale).round() / scale
    };
    println!(
        "{}",
        json!({
            "bench": "placement",
            "instances": options.instances,
            "tasks": options.tasks,
            "placed": placed,
            "instances_used": used,
            "placements_per_sec": round(placed as f64 / placing.as_secs_f64(), 0),
            "p50_us": round(histogram.quantile_ms(0.50) * 1000.0, 2),
            "p99_us": round(histogram.quantile_ms(0.99) * 1000.0, 2),
            "place_seconds": round(placing.as_secs_f64(), 3),
            "apply_seconds": round(applying.as_secs_f64(), 3),
            "snapshot_build_seconds": round(build_seconds, 3),
        })
    );
    Ok(())
}
