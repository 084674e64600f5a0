//! Cluster auto scaling in a deterministic simulation: the control plane on
//! the in-memory store, a virtual clock, counting ids, the simulated host
//! provider, and a simulated agent registering for every host it launches.
//!
//! Checks the managed scaling arithmetic against a table (reservation and
//! step sizes), scale-in of idle hosts only, and that a control plane
//! restarted in the middle of a scale-out neither leaks nor launches a host
//! twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flotilla_control::host_groups::{host_records, HostGroups, HostState};
use flotilla_control::{Caller, Clock, Ecs, IdSource, SchedulerSettings, ServiceScheduler};
use flotilla_hosts::provider::simulated::{Happened, Simulated};
use flotilla_hosts::{HostGroup, HostProvider};
use flotilla_store::MemoryStore;
use flotilla_types::arn::Scope;
use flotilla_types::ecs::EcsRequest;
use flotilla_types::ApiError;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

const START_MS: u64 = 1_700_000_000_000;
const CLUSTER: &str = "sim";
const PROVIDER: &str = "scaled";
const GROUP: &str = "pool";
const ASG: &str =
    "arn:aws:autoscaling:us-east-1:000000000000:autoScalingGroup:1:autoScalingGroupName/pool";

struct VirtualClock(AtomicU64);

impl Clock for VirtualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct CountingIds(AtomicU64);

impl IdSource for CountingIds {
    fn uuid(&self) -> String {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        format!("00000000-0000-4000-8000-{n:012x}")
    }
}

struct World {
    memory: Arc<MemoryStore>,
    clock: Arc<VirtualClock>,
    ids: Arc<CountingIds>,
    ecs: Ecs,
    scheduler: ServiceScheduler,
    provider: Arc<Simulated>,
    happened: UnboundedReceiver<Happened>,
    groups: HostGroups,
    group: HostGroup,
    /// Container instance ARN of each registered host.
    instances: BTreeMap<String, String>,
}

fn caller() -> Caller {
    Caller {
        access_key_id: "test".to_owned(),
        principal_arn: "arn:aws:iam::000000000000:root".to_owned(),
    }
}

impl World {
    async fn new(group: &str, managed_scaling: Value) -> World {
        let memory = Arc::new(MemoryStore::new());
        let clock = Arc::new(VirtualClock(AtomicU64::new(START_MS)));
        let ids = Arc::new(CountingIds(AtomicU64::new(1)));
        let provider = Arc::new(Simulated::default());
        let happened = provider.watch();
        let group: HostGroup = group.parse().expect("group");
        let ecs = Ecs::new(
            memory.clone(),
            Scope::new("us-east-1", "000000000000"),
            clock.clone(),
            ids.clone(),
        );
        let world = World {
            groups: groups(&group, &provider),
            scheduler: ServiceScheduler::new(settings(), START_MS),
            memory,
            clock,
            ids,
            ecs,
            provider,
            happened,
            group,
            instances: BTreeMap::new(),
        };
        world
            .ok(
                "CreateCapacityProvider",
                json!({"name": PROVIDER, "autoScalingGroupProvider": {
                    "autoScalingGroupArn": ASG,
                    "managedScaling": managed_scaling,
                    "managedTerminationProtection": "ENABLED",
                }}),
            )
            .await;
        world
            .ok(
                "CreateCluster",
                json!({"clusterName": CLUSTER, "capacityProviders": [PROVIDER]}),
            )
            .await;
        world
            .ok(
                "RegisterTaskDefinition",
                json!({"family": "app", "containerDefinitions": [
                    {"name": "app", "image": "busybox", "cpu": 512, "memory": 1024}
                ]}),
            )
            .await;
        world
    }

    /// The control plane restarts on the same store: nothing in memory survives.
    fn restart(&mut self) {
        self.ecs = Ecs::new(
            self.memory.clone(),
            Scope::new("us-east-1", "000000000000"),
            self.clock.clone(),
            self.ids.clone(),
        );
        self.scheduler = ServiceScheduler::new(settings(), self.clock.now_ms());
        self.groups = groups(&self.group, &self.provider);
    }

    async fn call(&self, operation: &str, body: Value) -> Result<Value, ApiError> {
        let bytes = serde_json::to_vec(&body).expect("json");
        let request = EcsRequest::decode(operation, &bytes).expect("known operation")?;
        let response = self.ecs.handle(&caller(), request).await?;
        Ok(serde_json::to_value(response).expect("response serializes"))
    }

    async fn ok(&self, operation: &str, body: Value) -> Value {
        match self.call(operation, body.clone()).await {
            Ok(value) => value,
            Err(error) => panic!("{operation} failed: {error}\n{body}"),
        }
    }

    async fn service(&self, desired: u32) {
        let exists = self
            .ok(
                "DescribeServices",
                json!({"cluster": CLUSTER, "services": ["web"]}),
            )
            .await["services"]
            .as_array()
            .is_some_and(|s| !s.is_empty());
        if exists {
            self.ok(
                "UpdateService",
                json!({"cluster": CLUSTER, "service": "web", "desiredCount": desired}),
            )
            .await;
        } else {
            self.ok(
                "CreateService",
                json!({"cluster": CLUSTER, "serviceName": "web", "taskDefinition": "app",
                       "desiredCount": desired,
                       "placementStrategy": [{"type": "binpack", "field": "memory"}],
                       "capacityProviderStrategy": [{"capacityProvider": PROVIDER, "weight": 1}]}),
            )
            .await;
        }
    }

    /// Registers a simulated agent for every host launched since the last
    /// call, and forgets terminated ones.
    async fn agents_follow_hosts(&mut self) {
        while let Ok(happened) = self.happened.try_recv() {
            match happened {
                Happened::Launched(host) => {
                    let identity = json!({"instanceId": format!("i-{}", host.host_id),
                        "availabilityZone": "us-east-1a", "capacityProviderName": host.capacity_provider});
                    let answer = self
                        .ok(
                            "RegisterContainerInstance",
                            json!({"cluster": CLUSTER,
                                "instanceIdentityDocument": identity.to_string(),
                                "totalResources": [
                                    {"name": "CPU", "type": "INTEGER", "integerValue": host.cpu_units},
                                    {"name": "MEMORY", "type": "INTEGER", "integerValue": host.memory_mib}],
                                "attributes": [{"name": "flotilla.host-id", "value": host.host_id}]}),
                        )
                        .await;
                    let arn = answer["containerInstance"]["containerInstanceArn"]
                        .as_str()
                        .expect("arn")
                        .to_owned();
                    let agent = self
                        .ecs
                        .resolve_agent_instance(CLUSTER, &arn)
                        .expect("agent");
                    self.ecs
                        .set_agent_connected(&agent, &format!("conn-{}", host.host_id), true)
                        .await
                        .expect("connect");
                    self.instances.insert(host.host_id, arn);
                }
                Happened::Terminated(host) => {
                    self.instances.remove(&host.host_id);
                }
            }
        }
    }

    /// Reports every task the scheduler asked to stop as STOPPED, as agents would.
    async fn agents_stop_tasks(&self) {
        let listed = self
            .ok(
                "ListTasks",
                json!({"cluster": CLUSTER, "desiredStatus": "STOPPED"}),
            )
            .await;
        for arn in listed["taskArns"].as_array().into_iter().flatten() {
            self.ok(
                "SubmitTaskStateChange",
                json!({"cluster": CLUSTER, "task": arn, "status": "STOPPED"}),
            )
            .await;
        }
    }

    /// One round: services place, agents follow, the group scales.
    async fn step(&mut self) -> flotilla_control::host_groups::PassReport {
        self.clock.0.fetch_add(1_000, Ordering::Relaxed);
        self.scheduler
            .pass(&self.ecs)
            .await
            .expect("scheduler pass");
        self.agents_stop_tasks().await;
        let report = self
            .groups
            .pass(&self.ecs)
            .await
            .remove(GROUP)
            .unwrap_or_default();
        self.agents_follow_hosts().await;
        self.scheduler
            .pass(&self.ecs)
            .await
            .expect("scheduler pass");
        report
    }

    async fn running_tasks(&self) -> usize {
        self.ok(
            "ListTasks",
            json!({"cluster": CLUSTER, "desiredStatus": "RUNNING"}),
        )
        .await["taskArns"]
            .as_array()
            .map_or(0, Vec::len)
    }

    /// No host leaked or launched twice: every host up is recorded, every
    /// record past LAUNCHING is up, and no id was launched twice.
    fn check_hosts(&self) {
        let recorded: Vec<String> = host_records(&self.ecs, GROUP)
            .expect("records")
            .into_iter()
            .map(|h| h.value.spec.host_id)
            .collect();
        assert_eq!(
            self.provider.up(),
            recorded,
            "hosts up are the hosts recorded"
        );
        for (host, launches) in self.provider.launches() {
            assert_eq!(launches, 1, "host {host} launched {launches} times");
        }
    }
}

fn settings() -> SchedulerSettings {
    SchedulerSettings {
        stabilization_ms: 0,
        ..Default::default()
    }
}

fn groups(group: &HostGroup, provider: &Arc<Simulated>) -> HostGroups {
    HostGroups::new(
        vec![(group.clone(), provider.clone() as Arc<dyn HostProvider>)],
        "us-east-1".to_owned(),
        "http://127.0.0.1:8440".to_owned(),
    )
}

/// One row of the scale-out table below.
type Row = (u32, i32, i32, i32, u32, f64, &'static [usize], f64);

#[tokio::test]
async fn scale_out_follows_the_reservation_and_the_step_sizes() {
    // Hosts of 2048 CPU / 4096 MiB hold 4 tasks of 512 / 1024.
    // (tasks, targetCapacity, minimumScalingStepSize, maximumScalingStepSize,
    //  group max, reservation % at first, hosts launched per step until
    //  placed, reservation % once placed)
    // Once placed, M counts the busy hosts (plus what the group's maximum
    // leaves unplaced) and N every host.
    let table: [Row; 6] = [
        (4, 100, 1, 10_000, 10, 200.0, &[1], 100.0),
        (9, 100, 1, 10_000, 10, 200.0, &[3], 100.0),
        (9, 50, 1, 10_000, 10, 200.0, &[6], 50.0),
        (9, 100, 1, 1, 10, 200.0, &[1, 1, 1], 100.0),
        (2, 100, 3, 10_000, 10, 200.0, &[3], 100.0 / 3.0),
        (40, 100, 1, 10_000, 4, 200.0, &[4], 250.0),
    ];
    for (tasks, target, min_step, max_step, max, reservation, steps, settled) in table {
        let case =
            format!("{tasks} tasks, target {target}, steps {min_step}..{max_step}, max {max}");
        let mut world = World::new(
            &format!("name={GROUP},provider=simulated,min=0,max={max},cpu=2048,memory=4096"),
            json!({"status": "ENABLED", "targetCapacity": target,
                   "minimumScalingStepSize": min_step, "maximumScalingStepSize": max_step,
                   "instanceWarmupPeriod": 60}),
        )
        .await;
        world.service(tasks).await;
        let mut launched = Vec::new();
        let mut first_reservation = None;
        for _ in 0..10 {
            let report = world.step().await;
            first_reservation.get_or_insert(report.reservation_percent);
            if !report.launched.is_empty() {
                launched.push(report.launched.len());
            }
            world.check_hosts();
        }
        assert_eq!(launched, steps, "{case}: hosts launched per step");
        assert_eq!(
            first_reservation,
            Some(reservation),
            "{case}: first reservation"
        );
        let placeable = (max as usize * 4).min(tasks as usize);
        assert_eq!(
            world.running_tasks().await,
            placeable,
            "{case}: tasks placed"
        );
        let now = world.step().await.reservation_percent;
        assert!(
            (now - settled).abs() < 1e-9,
            "{case}: settled at {now}, not {settled}"
        );
    }
}

#[tokio::test]
async fn scale_in_drains_and_terminates_idle_hosts_and_keeps_busy_ones() {
    let mut world = World::new(
        &format!("name={GROUP},provider=simulated,min=0,max=10,cpu=2048,memory=4096"),
        json!({"status": "ENABLED", "targetCapacity": 100, "instanceWarmupPeriod": 60}),
    )
    .await;
    world.service(12).await;
    for _ in 0..3 {
        world.step().await;
    }
    assert_eq!(world.provider.up().len(), 3);
    assert_eq!(world.running_tasks().await, 12);
    // Down to 1 task: two hosts go idle, one keeps its task. Nothing goes
    // before the warm-up period has passed.
    world.service(1).await;
    world.step().await;
    assert_eq!(world.provider.up().len(), 3, "warming hosts are kept");
    world.clock.0.fetch_add(60_000, Ordering::Relaxed);
    let mut drained = Vec::new();
    let mut terminated = Vec::new();
    for _ in 0..4 {
        let report = world.step().await;
        drained.extend(report.draining);
        terminated.extend(report.terminated);
        world.check_hosts();
    }
    assert_eq!(drained.len(), 2, "idle hosts drained first: {drained:?}");
    drained.sort();
    terminated.sort();
    assert_eq!(terminated, drained, "drained hosts are terminated");
    assert_eq!(world.provider.up().len(), 1);
    assert_eq!(
        world.running_tasks().await,
        1,
        "the busy host kept its task"
    );
    let described = world
        .ok(
            "DescribeCapacityProviders",
            json!({"capacityProviders": [PROVIDER]}),
        )
        .await;
    let provider = &described["capacityProviders"][0];
    assert_eq!(provider["updateStatus"], "UPDATE_COMPLETE");
    let reason = provider["updateStatusReason"].as_str().unwrap_or_default();
    assert!(reason.contains("terminated"), "{reason}");
}

#[tokio::test]
async fn a_restart_mid_scale_neither_leaks_nor_launches_twice() {
    let mut world = World::new(
        &format!("name={GROUP},provider=simulated,min=0,max=10,cpu=2048,memory=4096"),
        json!({"status": "ENABLED", "targetCapacity": 100}),
    )
    .await;
    world.service(16).await;
    world.scheduler.pass(&world.ecs).await.expect("pass");
    // The provider fails the second launch of the pass: its intent stays
    // LAUNCHING, as after a kill -9 between the record and the call.
    world.provider.fail_next("launch");
    world.groups.pass(&world.ecs).await;
    let states: Vec<HostState> = host_records(&world.ecs, GROUP)
        .expect("records")
        .into_iter()
        .map(|h| h.value.state)
        .collect();
    assert_eq!(states.len(), 4);
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == HostState::Launching)
            .count(),
        1
    );
    // A host launched whose record never heard of it (killed between the
    // call and the record's update): the provider has it, the record says
    // LAUNCHING.
    let pending = host_records(&world.ecs, GROUP)
        .expect("records")
        .into_iter()
        .find(|h| h.value.state == HostState::Launching)
        .expect("one pending");
    world
        .provider
        .launch(&pending.value.spec)
        .await
        .expect("launch");
    world.restart();
    for _ in 0..5 {
        world.step().await;
        world.check_hosts();
    }
    assert_eq!(world.provider.up().len(), 4, "exactly the hosts needed");
    assert_eq!(world.running_tasks().await, 16);
    // Terminations are intents too: a failed terminate is repeated after a restart.
    world.service(0).await;
    world.clock.0.fetch_add(600_000, Ordering::Relaxed);
    world.provider.fail_next("terminate");
    for _ in 0..2 {
        world.step().await;
    }
    world.restart();
    for _ in 0..4 {
        world.step().await;
        world.check_hosts();
    }
    assert!(world.provider.up().is_empty(), "{:?}", world.provider.up());
}
