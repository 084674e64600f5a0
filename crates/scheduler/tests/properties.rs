//! Property tests on generated clusters, with a tiny seeded generator.
//! A failing case prints its seed; rerun it with `PROPERTY_SEED=<seed>`,
//! or run more cases with `PROPERTY_CASES=<n>`.

use flotilla_scheduler::cql::Facts;
use flotilla_scheduler::rng::Rng;
use flotilla_scheduler::{
    place, BinpackField, Constraint, Expression, Instance, InstanceStatus, LaunchKind, Plan,
    Request, Resources, Snapshot, SpreadField, Strategy,
};

const CASES: u64 = 300;
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const TYPES: [&str; 4] = ["t2.micro", "t2.large", "m5.large", "c5.xlarge"];
const GROUPS: [&str; 3] = ["service:web", "service:db", "family:batch"];
const EXPRESSIONS: [&str; 8] = [
    "attribute:ecs.instance-type =~ t2.*",
    "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
    "attribute:ecs.availability-zone != us-east-1c and attribute:stack exists",
    "not(task:group == service:db)",
    "task:group == service:web or runningTasksCount < 3",
    "attribute:ecs.instance-type == m5.large or attribute:stack == blue",
    "registeredAt >= 1970-01-01T00:00:05Z",
    "ec2InstanceId !in [i-1, i-2]",
];

fn seeds() -> Vec<u64> {
    match std::env::var("PROPERTY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None => {
            let cases = std::env::var("PROPERTY_CASES")
                .ok()
                .and_then(|s| s.parse().ok());
            (0..cases.unwrap_or(CASES)).collect()
        }
    }
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len() as u64) as usize]
}

fn cluster(rng: &mut Rng) -> Vec<Instance> {
    // Mostly small clusters; some large enough that binpack walks the
    // resource indices (several blocks) instead of reading candidates whole.
    let size = if rng.below(5) == 0 {
        1 + rng.below(600)
    } else {
        1 + rng.below(30)
    };
    (0..size)
        .map(|index| {
            let mut instance = Instance::new(
                format!("arn:aws:ecs:r:1:container-instance/c/i-{index}"),
                Resources {
                    cpu_units: rng.below(4096) as i64,
                    memory_mib: rng.below(8192) as i64,
                    gpus: rng.below(3) as u32,
                },
            );
            if rng.below(8) > 0 {
                instance =
                    instance.with_attribute("ecs.availability-zone", Some(*pick(rng, &ZONES)));
            }
            instance = instance.with_attribute("ecs.instance-type", Some(*pick(rng, &TYPES)));
            if rng.below(2) == 0 {
                let stack = if rng.below(2) == 0 { "blue" } else { "green" };
                instance = instance.with_attribute("stack", Some(stack));
            }
            instance.status = match rng.below(10) {
                0 => InstanceStatus::Draining,
                1 => InstanceStatus::Inactive,
                _ => InstanceStatus::Active,
            };
            instance.agent_connected = rng.below(10) > 0;
            instance.launch_kind = if rng.below(10) == 0 {
                LaunchKind::External
            } else {
                LaunchKind::Ec2
            };
            instance.capacity_provider = match rng.below(4) {
                0 => Some("spot".to_owned()),
                1 => Some("ondemand".to_owned()),
                _ => None,
            };
            instance.registered_at_ms = rng.below(10_000) as i64;
            instance.enis_available = rng.below(4) as u32;
            instance.tcp_ports_in_use = (0..rng.below(3))
                .map(|_| 80 + rng.below(3) as u16)
                .collect();
            instance.task_groups = (0..rng.below(3))
                .map(|_| (pick(rng, &GROUPS).to_string(), 1 + rng.below(3) as u32))
                .collect();
            instance
        })
        .collect()
}

fn strategy(rng: &mut Rng) -> Strategy {
    match rng.below(5) {
        0 => Strategy::Binpack(BinpackField::Memory),
        1 => Strategy::Binpack(BinpackField::Cpu),
        2 => Strategy::Spread(SpreadField::InstanceId),
        3 => Strategy::Spread(SpreadField::Attribute("ecs.availability-zone".into())),
        _ => Strategy::Random,
    }
}

fn request(rng: &mut Rng) -> Request {
    let mut constraints = Vec::new();
    if rng.below(3) == 0 {
        constraints.push(Constraint::DistinctInstance);
    }
    for _ in 0..rng.below(3) {
        let text = pick(rng, &EXPRESSIONS);
        constraints.push(Constraint::MemberOf(Expression::parse(text).expect(text)));
    }
    Request {
        needs: Resources {
            cpu_units: rng.below(1024) as i64,
            memory_mib: rng.below(2048) as i64,
            gpus: u32::from(rng.below(4) == 0),
        },
        tcp_ports: if rng.below(4) == 0 {
            vec![80 + rng.below(3) as u16]
        } else {
            vec![]
        },
        udp_ports: vec![],
        needs_eni: rng.below(4) == 0,
        count: 1 + rng.below(12) as u32,
        launch_kind: Some(LaunchKind::Ec2),
        capacity_provider: match rng.below(4) {
            0 => Some("spot".to_owned()),
            1 => Some("none-has-it".to_owned()),
            _ => None,
        },
        strategies: (0..rng.below(4)).map(|_| strategy(rng)).collect(),
        constraints,
        required_attributes: if rng.below(5) == 0 {
            vec!["stack".into()]
        } else {
            vec![]
        },
        group: pick(rng, &GROUPS).to_string(),
        seed: rng.next_u64(),
    }
}

/// The slow, obviously correct check: can `instance` take one more task?
fn feasible(instance: &Instance, request: &Request) -> bool {
    let group_count = instance
        .task_groups
        .iter()
        .filter(|(g, _)| *g == request.group)
        .map(|(_, c)| *c)
        .sum::<u32>();
    let facts = Facts {
        instance,
        groups: &instance.task_groups,
    };
    instance.status == InstanceStatus::Active
        && instance.agent_connected
        && request
            .launch_kind
            .is_none_or(|k| k == instance.launch_kind)
        && request
            .capacity_provider
            .as_ref()
            .is_none_or(|p| instance.capacity_provider.as_ref() == Some(p))
        && request
            .required_attributes
            .iter()
            .all(|a| instance.attribute(a).is_some())
        && instance.remaining.cpu_units >= request.needs.cpu_units
        && instance.remaining.memory_mib >= request.needs.memory_mib
        && instance.remaining.gpus >= request.needs.gpus
        && (!request.needs_eni || instance.enis_available > 0)
        && request
            .tcp_ports
            .iter()
            .all(|p| !instance.tcp_ports_in_use.contains(p))
        && request.constraints.iter().all(|c| match c {
            Constraint::DistinctInstance => group_count == 0,
            Constraint::MemberOf(expression) => expression.matches(&facts),
        })
}

/// Applies one placement to the model cluster, as the snapshot does.
fn take(instance: &mut Instance, request: &Request) {
    instance.remaining.cpu_units -= request.needs.cpu_units;
    instance.remaining.memory_mib -= request.needs.memory_mib;
    instance.remaining.gpus -= request.needs.gpus;
    instance.enis_available -= u32::from(request.needs_eni);
    instance.tcp_ports_in_use.extend(&request.tcp_ports);
    match instance
        .task_groups
        .iter_mut()
        .find(|(g, _)| *g == request.group)
    {
        Some((_, count)) => *count += 1,
        None => instance.task_groups.push((request.group.clone(), 1)),
    }
}

/// Replays a plan on the model, checking every placement was feasible
/// when it was made, and that a plan that left tasks unplaced left no
/// feasible instance behind.
fn replay(model: &mut [Instance], request: &Request, plan: &Plan, seed: u64) {
    for (n, index) in plan.placements.iter().enumerate() {
        let instance = &mut model[*index as usize];
        assert!(
            feasible(instance, request),
            "seed {seed}: task {n} on {} infeasible",
            instance.arn
        );
        take(instance, request);
    }
    assert_eq!(
        plan.placements.len() as u32 + plan.unplaced,
        request.count,
        "seed {seed}"
    );
    if plan.unplaced > 0 {
        let left = model.iter().find(|i| feasible(i, request));
        assert!(
            left.is_none(),
            "seed {seed}: unplaced tasks but {:?} fits",
            left.map(|i| &i.arn)
        );
        assert!(
            plan.failures.iter().all(|f| f.reason.is_reported()),
            "seed {seed}"
        );
    }
}

#[test]
fn plans_never_overcommit_nor_violate_constraints_nor_miss_capacity() {
    // Both outcomes must occur, or the generator tests nothing.
    let (mut placed, mut unplaced) = (0, 0);
    for seed in seeds() {
        let mut rng = Rng::new(seed);
        let mut model = cluster(&mut rng);
        let mut snapshot = Snapshot::new(model.clone());
        for _ in 0..6 {
            let request = request(&mut rng);
            let plan = place(&snapshot, &request);
            assert_eq!(
                plan,
                place(&snapshot, &request),
                "seed {seed}: not deterministic"
            );
            replay(&mut model, &request, &plan, seed);
            placed += plan.placements.len();
            unplaced += plan.unplaced;
            snapshot.apply(&plan);
            for (mine, theirs) in model.iter().zip(snapshot.instances()) {
                assert_eq!(mine.remaining, theirs.remaining, "seed {seed}");
                assert_eq!(mine.enis_available, theirs.enis_available, "seed {seed}");
                assert!(theirs.remaining.cpu_units >= 0 && theirs.remaining.memory_mib >= 0);
            }
        }
    }
    eprintln!("placed {placed}, unplaced {unplaced}");
    assert!(
        seeds().len() == 1 || (placed > 1000 && unplaced > 1000),
        "placed {placed}, unplaced {unplaced}"
    );
}

#[test]
fn spread_keeps_zones_within_one_when_capacity_allows() {
    for seed in seeds() {
        let mut rng = Rng::new(seed);
        let instances: Vec<Instance> = (0..3 + rng.below(20))
            .map(|i| {
                Instance::new(
                    format!("i-{i}"),
                    Resources {
                        cpu_units: 1 << 20,
                        memory_mib: 1 << 20,
                        gpus: 0,
                    },
                )
                .with_attribute("ecs.availability-zone", Some(ZONES[(i % 3) as usize]))
            })
            .collect();
        let snapshot = Snapshot::new(instances.clone());
        let mut chain = vec![Strategy::Spread(SpreadField::Attribute(
            "ecs.availability-zone".into(),
        ))];
        if rng.below(2) == 0 {
            chain.push(strategy(&mut rng));
        }
        let request = Request {
            needs: Resources {
                cpu_units: 1,
                memory_mib: 1,
                gpus: 0,
            },
            count: 1 + rng.below(60) as u32,
            strategies: chain,
            group: "service:web".into(),
            seed,
            ..Request::default()
        };
        let plan = place(&snapshot, &request);
        let mut per_zone = [0u32; 3];
        for index in &plan.placements {
            per_zone[*index as usize % 3] += 1;
        }
        let (min, max) = (per_zone.iter().min(), per_zone.iter().max());
        assert!(
            max.zip(min).is_some_and(|(max, min)| max - min <= 1),
            "seed {seed}: {per_zone:?}"
        );
    }
}

#[test]
fn binpack_takes_the_least_remaining_that_fits() {
    for seed in seeds() {
        let mut rng = Rng::new(seed);
        let mut model = cluster(&mut rng);
        let snapshot = Snapshot::new(model.clone());
        let request = Request {
            strategies: vec![Strategy::Binpack(BinpackField::Memory)],
            constraints: vec![],
            ..request(&mut rng)
        };
        let plan = place(&snapshot, &request);
        for index in &plan.placements {
            let least = model
                .iter()
                .filter(|i| feasible(i, &request))
                .map(|i| i.remaining.memory_mib)
                .min();
            assert_eq!(
                Some(model[*index as usize].remaining.memory_mib),
                least,
                "seed {seed}"
            );
            take(&mut model[*index as usize], &request);
        }
    }
}

#[test]
fn binpack_fills_an_instance_before_opening_another() {
    for seed in seeds() {
        let mut rng = Rng::new(seed);
        let per_instance = 1 + rng.below(5) as i64;
        let instances: Vec<Instance> = (0..2 + rng.below(10))
            .map(|i| {
                Instance::new(
                    format!("i-{i}"),
                    Resources {
                        cpu_units: 4096,
                        memory_mib: 100 * per_instance,
                        gpus: 0,
                    },
                )
            })
            .collect();
        let snapshot = Snapshot::new(instances);
        let count = 1 + rng.below(snapshot.len() as u64 * per_instance as u64) as u32;
        let request = Request {
            needs: Resources {
                cpu_units: 1,
                memory_mib: 100,
                gpus: 0,
            },
            count,
            strategies: vec![Strategy::Binpack(BinpackField::Memory)],
            group: "g".into(),
            ..Request::default()
        };
        let plan = place(&snapshot, &request);
        let opened = plan.deltas.len() as i64;
        assert_eq!(
            opened,
            (i64::from(count) + per_instance - 1) / per_instance,
            "seed {seed}"
        );
    }
}
