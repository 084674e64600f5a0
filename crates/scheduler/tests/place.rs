//! Placement cases through the public interface: which instance each task
//! goes to, and the failures ECS would report.

use flotilla_scheduler::{
    explain, place, BinpackField, Constraint, Expression, Instance, InstanceStatus, LaunchKind,
    Outcome, Plan, Request, Resources, Snapshot, SpreadField, Strategy,
};

fn node(name: &str, zone: &str, cpu: i64, memory: i64) -> Instance {
    Instance::new(
        name,
        Resources {
            cpu_units: cpu,
            memory_mib: memory,
            gpus: 0,
        },
    )
    .with_attribute("ecs.availability-zone", Some(zone))
    .with_attribute(
        "ecs.instance-type",
        Some(if name.starts_with('t') {
            "t2.micro"
        } else {
            "m5.large"
        }),
    )
}

fn request(cpu: i64, memory: i64, count: u32, strategies: Vec<Strategy>) -> Request {
    Request {
        needs: Resources {
            cpu_units: cpu,
            memory_mib: memory,
            gpus: 0,
        },
        count,
        strategies,
        launch_kind: Some(LaunchKind::Ec2),
        group: "family:web".into(),
        ..Request::default()
    }
}

fn member_of(text: &str) -> Constraint {
    Constraint::MemberOf(Expression::parse(text).expect(text))
}

/// Names of the instances the tasks went to, then "arn reason" failures.
fn outcome(instances: &[Instance], request: &Request) -> (Vec<String>, Vec<String>) {
    let snapshot = Snapshot::new(instances.to_vec());
    let plan: Plan = place(&snapshot, request);
    (
        plan.placements
            .iter()
            .map(|i| instances[*i as usize].arn.clone())
            .collect(),
        plan.failures
            .iter()
            .map(|f| format!("{} {}", f.arn, f.reason))
            .collect(),
    )
}

fn spread_zone() -> Strategy {
    Strategy::Spread(SpreadField::Attribute("ecs.availability-zone".into()))
}

#[test]
fn placement_cases() {
    let binpack_memory = || vec![Strategy::Binpack(BinpackField::Memory)];
    let mut draining = node("d", "a", 4096, 4096);
    draining.status = InstanceStatus::Draining;
    let mut disconnected = node("x", "a", 4096, 4096);
    disconnected.agent_connected = false;
    let mut ported = node("p", "a", 4096, 4096);
    ported.tcp_ports_in_use = vec![22, 80];
    let mut udp = node("u", "a", 4096, 4096);
    udp.udp_ports_in_use = vec![53];
    let mut external = node("e", "a", 4096, 4096);
    external.launch_kind = LaunchKind::External;
    let mut with_eni = node("n", "a", 4096, 4096);
    with_eni.enis_available = 1;
    let mut grouped = node("g", "a", 4096, 4096);
    grouped.task_groups = vec![("family:web".into(), 1)];
    let mut busy_elsewhere = node("b", "b", 4096, 4096);
    busy_elsewhere.task_groups = vec![("family:db".into(), 1)];
    let in_provider = |name: &str, zone: &str, memory: i64, provider: &str| {
        let mut instance = node(name, zone, 4096, memory);
        instance.capacity_provider = Some(provider.to_owned());
        instance
    };
    let for_provider = |provider: &str, count: u32, strategies: Vec<Strategy>| Request {
        capacity_provider: Some(provider.to_owned()),
        ..request(10, 512, count, strategies)
    };

    type Case = (
        &'static str,
        Vec<Instance>,
        Request,
        Vec<&'static str>,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "binpack memory takes the fullest that fits",
            vec![
                node("a", "a", 4096, 4096),
                node("b", "a", 4096, 1024),
                node("c", "a", 4096, 256),
            ],
            request(10, 512, 3, binpack_memory()),
            vec!["b", "b", "a"],
            vec![],
        ),
        (
            "binpack cpu",
            vec![node("a", "a", 2048, 4096), node("b", "a", 512, 4096)],
            request(256, 10, 3, vec![Strategy::Binpack(BinpackField::Cpu)]),
            vec!["b", "b", "a"],
            vec![],
        ),
        (
            "spread zone then binpack within the zone",
            vec![
                node("a1", "a", 4096, 4096),
                node("a2", "a", 4096, 1024),
                node("b1", "b", 4096, 2048),
                node("b2", "b", 4096, 8192),
            ],
            request(
                10,
                256,
                4,
                vec![spread_zone(), Strategy::Binpack(BinpackField::Memory)],
            ),
            vec!["a2", "b1", "a2", "b1"],
            vec![],
        ),
        (
            "spread instanceId",
            vec![
                node("a", "a", 4096, 4096),
                node("b", "a", 4096, 4096),
                node("c", "b", 4096, 4096),
            ],
            request(10, 10, 4, vec![Strategy::Spread(SpreadField::InstanceId)]),
            vec!["a", "b", "c", "a"],
            vec![],
        ),
        (
            "default: zones, then instances",
            vec![
                node("a1", "a", 4096, 4096),
                node("a2", "a", 4096, 4096),
                node("b1", "b", 4096, 4096),
            ],
            request(10, 10, 4, vec![]),
            vec!["a1", "b1", "a2", "b1"],
            vec![],
        ),
        (
            "spread counts tasks already running",
            vec![grouped.clone(), node("b", "b", 4096, 4096)],
            request(10, 10, 1, vec![spread_zone()]),
            vec!["b"],
            vec![],
        ),
        (
            "spread is best effort: a full zone is skipped",
            vec![node("a", "a", 4096, 100), node("b", "b", 4096, 4096)],
            request(10, 512, 2, vec![spread_zone()]),
            vec!["b", "b"],
            vec![],
        ),
        (
            "not enough of anything: failures name each instance",
            vec![node("a", "a", 100, 4096), node("b", "a", 4096, 100)],
            request(512, 512, 2, binpack_memory()),
            vec![],
            vec!["a RESOURCE:CPU", "b RESOURCE:MEMORY"],
        ),
        (
            "some placed, the rest fail",
            vec![node("a", "a", 1024, 1024)],
            request(512, 512, 3, binpack_memory()),
            vec!["a", "a"],
            vec!["a RESOURCE:CPU"],
        ),
        (
            "draining and external instances are skipped silently",
            vec![draining.clone(), external, node("b", "a", 1, 1)],
            request(512, 512, 1, vec![]),
            vec![],
            vec!["b RESOURCE:CPU"],
        ),
        (
            "agent",
            vec![disconnected, node("b", "a", 4096, 4096)],
            request(1, 1, 2, binpack_memory()),
            vec!["b", "b"],
            vec![],
        ),
        (
            "static ports: one task per instance and port",
            vec![ported, node("b", "a", 4096, 4096)],
            Request {
                tcp_ports: vec![80],
                ..request(1, 1, 2, binpack_memory())
            },
            vec!["b"],
            vec!["p RESOURCE:PORTS", "b RESOURCE:PORTS"],
        ),
        (
            "udp ports",
            vec![udp],
            Request {
                udp_ports: vec![53],
                ..request(1, 1, 1, vec![])
            },
            vec![],
            vec!["u RESOURCE:PORTS_UDP"],
        ),
        (
            "gpus",
            vec![node("a", "a", 4096, 4096)],
            Request {
                needs: Resources {
                    cpu_units: 1,
                    memory_mib: 1,
                    gpus: 1,
                },
                ..request(1, 1, 1, vec![])
            },
            vec![],
            vec!["a RESOURCE:GPU"],
        ),
        (
            "enis",
            vec![with_eni],
            Request {
                needs_eni: true,
                ..request(1, 1, 2, vec![])
            },
            vec!["n"],
            vec!["n RESOURCE:ENI"],
        ),
        (
            "required attributes",
            vec![node("a", "a", 4096, 4096)],
            Request {
                required_attributes: vec!["ecs.capability.nope".into()],
                ..request(1, 1, 1, vec![])
            },
            vec![],
            vec!["a ATTRIBUTE"],
        ),
        (
            "distinctInstance within the request",
            vec![node("a", "a", 4096, 4096), node("b", "a", 4096, 4096)],
            Request {
                constraints: vec![Constraint::DistinctInstance],
                ..request(1, 1, 3, binpack_memory())
            },
            vec!["a", "b"],
            vec![
                "a DistinctInstance constraint not satisfied",
                "b DistinctInstance constraint not satisfied",
            ],
        ),
        (
            "distinctInstance counts tasks of the group already running",
            vec![grouped.clone(), node("b", "a", 4096, 4096)],
            Request {
                constraints: vec![Constraint::DistinctInstance],
                ..request(1, 1, 1, binpack_memory())
            },
            vec!["b"],
            vec![],
        ),
        (
            "memberOf is strict",
            vec![node("m", "a", 4096, 4096), node("t", "a", 4096, 4096)],
            Request {
                constraints: vec![member_of("attribute:ecs.instance-type =~ t2.*")],
                ..request(1, 1, 2, binpack_memory())
            },
            vec!["t", "t"],
            vec![],
        ),
        (
            "a capacity provider's tasks go to its instances only",
            vec![
                node("none", "a", 4096, 4096),
                in_provider("s1", "a", 4096, "spot"),
                in_provider("o1", "a", 4096, "ondemand"),
                in_provider("s2", "b", 4096, "spot"),
            ],
            for_provider("spot", 4, vec![spread_zone()]),
            vec!["s1", "s2", "s1", "s2"],
            vec![],
        ),
        (
            "binpack within a capacity provider",
            vec![
                in_provider("o1", "a", 512, "ondemand"),
                in_provider("s1", "a", 4096, "spot"),
                in_provider("s2", "a", 1024, "spot"),
            ],
            for_provider("spot", 3, binpack_memory()),
            vec!["s2", "s2", "s1"],
            vec![],
        ),
        (
            "a full capacity provider reports only its own instances",
            vec![
                in_provider("o1", "a", 4096, "ondemand"),
                in_provider("s1", "a", 256, "spot"),
            ],
            for_provider("spot", 1, vec![]),
            vec![],
            vec!["s1 RESOURCE:MEMORY"],
        ),
        (
            "a capacity provider without instances places nothing and reports nothing",
            vec![
                in_provider("o1", "a", 4096, "ondemand"),
                node("none", "a", 4096, 4096),
            ],
            for_provider("spot", 2, vec![]),
            vec![],
            vec![],
        ),
        (
            "no instance of any capacity provider",
            vec![node("none", "a", 4096, 4096)],
            for_provider("spot", 1, binpack_memory()),
            vec![],
            vec![],
        ),
        (
            "without a capacity provider, every instance is a candidate",
            vec![
                in_provider("s1", "a", 1024, "spot"),
                node("none", "a", 4096, 4096),
            ],
            request(10, 512, 3, binpack_memory()),
            vec!["s1", "s1", "none"],
            vec![],
        ),
        (
            "memberOf unsatisfied everywhere",
            vec![node("m", "a", 4096, 4096)],
            Request {
                constraints: vec![member_of("attribute:ecs.availability-zone in [b, c]")],
                ..request(1, 1, 1, vec![])
            },
            vec![],
            vec!["m MemberOf constraint not satisfied"],
        ),
        (
            "task affinity sees tasks placed earlier in the plan",
            vec![node("a", "a", 4096, 4096), busy_elsewhere.clone()],
            Request {
                constraints: vec![member_of(
                    "task:group == family:web or runningTasksCount == 0",
                )],
                ..request(1, 1, 3, vec![spread_zone()])
            },
            vec!["a", "a", "a"],
            vec![],
        ),
        (
            "task anti-affinity",
            vec![grouped, node("b", "b", 4096, 4096)],
            Request {
                constraints: vec![member_of("not(task:group == family:web)")],
                ..request(1, 1, 2, vec![])
            },
            vec!["b"],
            vec![
                "g MemberOf constraint not satisfied",
                "b MemberOf constraint not satisfied",
            ],
        ),
    ];
    for (case, instances, request, placed, failures) in cases {
        let (got_placed, got_failures) = outcome(&instances, &request);
        assert_eq!(got_placed, placed, "{case}: placements");
        assert_eq!(got_failures, failures, "{case}: failures");
    }
}

#[test]
fn deltas_commit_like_the_control_plane() {
    let mut instance = node("a", "a", 4096, 4096);
    instance.enis_available = 3;
    let mut snapshot = Snapshot::new(vec![instance, node("b", "b", 4096, 4096)]);
    let request = Request {
        tcp_ports: vec![8080],
        needs_eni: true,
        constraints: vec![member_of("attribute:ecs.availability-zone == a")],
        ..request(100, 200, 1, vec![])
    };
    let plan = place(&snapshot, &request);
    assert_eq!(plan.placements, vec![0]);
    assert_eq!(plan.deltas.len(), 1);
    let delta = &plan.deltas[0];
    assert_eq!(
        (
            delta.tasks,
            delta.taken.cpu_units,
            delta.taken.memory_mib,
            delta.enis
        ),
        (1, 100, 200, 1)
    );
    assert_eq!(delta.tcp_ports, vec![8080]);
    snapshot.apply(&plan);
    let a = &snapshot.instances()[0];
    assert_eq!(
        (
            a.remaining.cpu_units,
            a.remaining.memory_mib,
            a.enis_available
        ),
        (3996, 3896, 2)
    );
    assert_eq!(a.tcp_ports_in_use, vec![8080]);
    assert_eq!(snapshot.group_count(0, "family:web"), 1);
    // The port is taken now: the next identical request finds no place.
    let again = place(&snapshot, &request);
    assert!(again.placements.is_empty());
    assert_eq!(again.failures[0].reason.as_str(), "RESOURCE:PORTS");
}

#[test]
fn seeded_random_is_reproducible_and_varies_with_the_seed() {
    let instances: Vec<Instance> = (0..50)
        .map(|i| node(&format!("n{i}"), "a", 4096, 4096))
        .collect();
    let snapshot = Snapshot::new(instances);
    let with_seed = |seed| {
        place(
            &snapshot,
            &Request {
                seed,
                ..request(1, 1, 10, vec![Strategy::Random])
            },
        )
        .placements
    };
    assert_eq!(with_seed(7), with_seed(7));
    assert_ne!(with_seed(7), with_seed(8));
}

/// `explain`'s verdicts as "arn: reason: detail" or "arn: outcome".
fn verdicts(snapshot: &Snapshot, request: &Request) -> Vec<String> {
    explain(snapshot, request)
        .into_iter()
        .map(|v| match v.outcome {
            Outcome::Excluded { reason, detail } => format!("{}: {reason}: {detail}", v.arn),
            other => format!("{}: {other:?}", v.arn),
        })
        .collect()
}

#[test]
fn explain_gives_each_instance_its_reason() {
    let mut ported = node("p", "us-east-1a", 4096, 4096);
    ported.tcp_ports_in_use = vec![80];
    let instances = vec![
        node("small", "us-east-1a", 4096, 128),
        node("far", "us-east-1c", 4096, 4096),
        ported,
        node("ok1", "us-east-1b", 4096, 4096),
        node("ok2", "us-east-1a", 4096, 2048),
    ];
    let snapshot = Snapshot::new(instances);
    let request = Request {
        tcp_ports: vec![80],
        constraints: vec![member_of(
            "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
        )],
        ..request(10, 512, 1, vec![Strategy::Binpack(BinpackField::Memory)])
    };
    assert_eq!(
        verdicts(&snapshot, &request),
        vec![
            "small: RESOURCE:MEMORY: not enough memory: needs 512, has 128",
            "far: MemberOf constraint not satisfied: attribute:ecs.availability-zone is us-east-1c, not in [us-east-1a, us-east-1b]",
            "p: RESOURCE:PORTS: tcp port 80 taken",
            "ok1: NotPreferred",
            "ok2: Chosen",
        ]
    );
}

#[test]
fn explain_names_the_capacity_provider_left_out() {
    let mut spot = node("s", "a", 4096, 4096);
    spot.capacity_provider = Some("spot".into());
    let snapshot = Snapshot::new(vec![node("plain", "a", 4096, 4096), spot]);
    let request = Request {
        capacity_provider: Some("spot".into()),
        ..request(10, 512, 1, vec![])
    };
    assert_eq!(
        verdicts(&snapshot, &request),
        vec![
            "plain: CAPACITY_PROVIDER: instance belongs to capacity provider (none), the task to spot",
            "s: Chosen",
        ]
    );
}

#[test]
fn strategies_from_the_wire() {
    for (kind, field, expected) in [
        (
            "binpack",
            Some("memory"),
            Some(Strategy::Binpack(BinpackField::Memory)),
        ),
        (
            "BINPACK",
            Some("CPU"),
            Some(Strategy::Binpack(BinpackField::Cpu)),
        ),
        (
            "spread",
            Some("host"),
            Some(Strategy::Spread(SpreadField::InstanceId)),
        ),
        (
            "spread",
            Some("instanceId"),
            Some(Strategy::Spread(SpreadField::InstanceId)),
        ),
        (
            "spread",
            Some("attribute:ecs.availability-zone"),
            Some(spread_zone()),
        ),
        ("random", None, Some(Strategy::Random)),
        ("binpack", Some("gpu"), None),
        ("spread", Some("attribute:"), None),
        ("pack", None, None),
    ] {
        assert_eq!(
            Strategy::from_wire(kind, field).ok(),
            expected,
            "{kind} {field:?}"
        );
    }
}
