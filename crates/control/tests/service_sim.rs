//! The service scheduler in a deterministic simulation: the control plane on
//! the in-memory store, a virtual clock, seeded ids, and simulated agents
//! that act on their payloads as a host's agent would (start, fail, turn
//! unhealthy, stop), driven step by step.
//!
//! Scenario tests walk one story each (the rolling example of four tasks,
//! the circuit breaker's rollback, DAEMON, draining, protection, a crash in
//! the middle of a deployment). `random_sequences_keep_the_invariants` runs
//! many seeded random sequences of scale, deploy, fail, drain and restart
//! events and checks the invariants after every step; a failure prints its
//! seed, and `SIM_SEED=n` replays that one seed (`SIM_SEEDS=n` runs n seeds).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flotilla_control::{Caller, Clock, Ecs, IdSource, SchedulerSettings, ServiceScheduler};
use flotilla_store::{CommitFuture, MemoryStore, Page, Store, StoreError, Txn, Watch};
use flotilla_types::acs::ContainerHealth;
use flotilla_types::arn::Scope;
use flotilla_types::ecs::EcsRequest;
use flotilla_types::ApiError;
use serde_json::{json, Value};

const START_MS: u64 = 1_700_000_000_000;
const STEP_MS: u64 = 1_000;
/// How long a task must stay healthy before it counts: two steps, so that a
/// task that crashes within a step of RUNNING never counts.
const STABILIZATION_MS: u64 = 2 * STEP_MS;
const CLUSTER: &str = "sim";

/// A small, fast, seedable generator (SplitMix64).
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct VirtualClock(AtomicU64);

impl Clock for VirtualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct SeededIds(Mutex<Rng>);

impl IdSource for SeededIds {
    fn uuid(&self) -> String {
        let mut rng = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = (rng.next(), rng.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }
}

/// The store as a process sees it: a crash makes every commit after a
/// budget fail, as if the process died between two writes.
struct CrashableStore {
    inner: Arc<MemoryStore>,
    commits_left: AtomicU64,
}

impl Store for CrashableStore {
    fn get(&self, key: &str) -> Result<Option<flotilla_store::Entry>, StoreError> {
        self.inner.get(key)
    }
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        self.inner.list(prefix, start_after, limit)
    }
    fn commit(&self, txn: Txn) -> CommitFuture {
        let left = self.commits_left.load(Ordering::Relaxed);
        if left == 0 {
            return Box::pin(async { Err(StoreError::Closed) });
        }
        self.commits_left.store(left - 1, Ordering::Relaxed);
        self.inner.commit(txn)
    }
    fn limits(&self) -> flotilla_store::TxnLimits {
        self.inner.limits()
    }
    fn watch(&self, prefix: &str) -> Watch {
        self.inner.watch(prefix)
    }
    fn revision(&self) -> u64 {
        self.inner.revision()
    }
    fn revisions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.revisions()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Local {
    Running,
    /// Running, and its essential container exits at the agents' next turn.
    Crashing,
    Stopped,
}

struct Host {
    arn: String,
    connected: bool,
    /// What the simulated agent has done with each task it was sent.
    tasks: HashMap<String, Local>,
}

struct World {
    memory: Arc<MemoryStore>,
    store: Arc<CrashableStore>,
    clock: Arc<VirtualClock>,
    ids: Arc<SeededIds>,
    ecs: Ecs,
    scheduler: ServiceScheduler,
    hosts: Vec<Host>,
    rng: Rng,
    /// Percent of task starts that fail on their own.
    start_failure_percent: u64,
    /// Percent of pending tasks the agents start in a step.
    start_percent: u64,
    settings: SchedulerSettings,
}

fn caller() -> Caller {
    Caller {
        access_key_id: "test".to_owned(),
        principal_arn: "arn:aws:iam::000000000000:root".to_owned(),
    }
}

impl World {
    async fn new(seed: u64) -> World {
        Self::with_store(seed, MemoryStore::new()).await
    }

    async fn with_store(seed: u64, memory: MemoryStore) -> World {
        let memory = Arc::new(memory);
        let store = Arc::new(CrashableStore {
            inner: Arc::clone(&memory),
            commits_left: AtomicU64::new(u64::MAX),
        });
        let clock = Arc::new(VirtualClock(AtomicU64::new(START_MS)));
        let ids = Arc::new(SeededIds(Mutex::new(Rng(seed ^ 0x5eed))));
        let settings = SchedulerSettings {
            agent_lost_timeout_ms: 60_000,
            stabilization_ms: STABILIZATION_MS,
            ..Default::default()
        };
        let ecs = Ecs::new(
            store.clone(),
            Scope::new("us-east-1", "000000000000"),
            clock.clone(),
            ids.clone(),
        );
        let scheduler = ServiceScheduler::new(settings.clone(), START_MS);
        let world = World {
            memory,
            store,
            clock,
            ids,
            ecs,
            scheduler,
            hosts: Vec::new(),
            rng: Rng(seed),
            start_failure_percent: 0,
            start_percent: 100,
            settings,
        };
        world
            .ok("CreateCluster", json!({"clusterName": CLUSTER}))
            .await;
        world
    }

    /// The control plane restarts on the same store: a new `Ecs` and a new
    /// scheduler that remember nothing.
    fn restart(&mut self) {
        self.store = Arc::new(CrashableStore {
            inner: Arc::clone(&self.memory),
            commits_left: AtomicU64::new(u64::MAX),
        });
        self.ecs = Ecs::new(
            self.store.clone(),
            Scope::new("us-east-1", "000000000000"),
            self.clock.clone(),
            self.ids.clone(),
        );
        self.scheduler = ServiceScheduler::new(self.settings.clone(), self.clock.now_ms());
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

    async fn add_host(&mut self, cpu: i64, memory: i64, zone: &str) -> String {
        self.add_host_in(cpu, memory, zone, None).await
    }

    /// A host of a capacity provider, which its identity document names.
    async fn add_host_in(
        &mut self,
        cpu: i64,
        memory: i64,
        zone: &str,
        provider: Option<&str>,
    ) -> String {
        let identity = json!({"availabilityZone": zone, "capacityProviderName": provider});
        let response = self
            .ok(
                "RegisterContainerInstance",
                json!({
                    "cluster": CLUSTER,
                    "instanceIdentityDocument": identity.to_string(),
                    "totalResources": [
                        {"name": "CPU", "type": "INTEGER", "integerValue": cpu},
                        {"name": "MEMORY", "type": "INTEGER", "integerValue": memory},
                        {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22"]},
                        {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []}
                    ],
                    "versionInfo": {"agentVersion": "1.0.0", "agentHash": "sim", "dockerVersion": "27.0.0"},
                    "attributes": [
                        {"name": "ecs.availability-zone", "value": zone},
                        {"name": "ecs.capability.container-health-check"}
                    ],
                }),
            )
            .await;
        let arn = response["containerInstance"]["containerInstanceArn"]
            .as_str()
            .expect("arn")
            .to_owned();
        self.hosts.push(Host {
            arn: arn.clone(),
            connected: false,
            tasks: HashMap::new(),
        });
        self.set_connected(self.hosts.len() - 1, true).await;
        arn
    }

    async fn set_connected(&mut self, host: usize, connected: bool) {
        let arn = self.hosts[host].arn.clone();
        let agent = self
            .ecs
            .resolve_agent_instance(CLUSTER, &arn)
            .expect("agent instance");
        self.ecs
            .set_agent_connected(&agent, &format!("conn-{host}"), connected)
            .await
            .expect("connection recorded");
        self.hosts[host].connected = connected;
    }

    async fn definition(&self, family: &str, image: &str, health_check: bool) -> String {
        let mut container =
            json!({"name": "app", "image": image, "memory": 256, "cpu": 128, "essential": true});
        if health_check {
            container["healthCheck"] = json!({"command": ["CMD-SHELL", "true"]});
        }
        let response = self
            .ok(
                "RegisterTaskDefinition",
                json!({"family": family, "containerDefinitions": [container]}),
            )
            .await;
        response["taskDefinition"]["taskDefinitionArn"]
            .as_str()
            .expect("arn")
            .to_owned()
    }

    /// The simulated agents act on their payloads: start what they were
    /// sent (or fail it, as its image says), stop what they were told to.
    /// A `sim/exit` task reaches RUNNING, the scheduler sees it run once,
    /// and its essential container exits at the agents' next turn.
    async fn agents_act(&mut self) {
        for index in 0..self.hosts.len() {
            if !self.hosts[index].connected {
                continue;
            }
            let mut crashing: Vec<String> = self.hosts[index]
                .tasks
                .iter()
                .filter(|(_, state)| **state == Local::Crashing)
                .map(|(arn, _)| arn.clone())
                .collect();
            crashing.sort();
            for arn in crashing {
                self.report(&arn, "STOPPED", "Essential container in task exited")
                    .await;
                self.hosts[index].tasks.insert(arn, Local::Stopped);
            }
            let arn = self.hosts[index].arn.clone();
            let instance_id = arn.rsplit('/').next().unwrap_or_default().to_owned();
            let Ok(payload) = self.ecs.payload_for_instance(CLUSTER, &instance_id) else {
                continue;
            };
            let agent = self
                .ecs
                .resolve_agent_instance(CLUSTER, &arn)
                .expect("agent instance");
            for task in payload {
                let known = self.hosts[index].tasks.get(&task.task_arn).copied();
                let container = task
                    .task_definition
                    .container_definitions
                    .as_ref()
                    .and_then(|c| c.first())
                    .cloned()
                    .unwrap_or_default();
                let image = container.image.clone().unwrap_or_default();
                let name = container.name.clone().unwrap_or_default();
                if task.desired_status == "STOPPED" {
                    if known != Some(Local::Stopped) {
                        self.report(&task.task_arn, "STOPPED", "Task stopped by its agent")
                            .await;
                        self.hosts[index]
                            .tasks
                            .insert(task.task_arn.clone(), Local::Stopped);
                    }
                    continue;
                }
                if known.is_some() || !self.rng.chance(self.start_percent) {
                    continue;
                }
                let fails = image.starts_with("sim/fail-pull")
                    || self.rng.chance(self.start_failure_percent);
                if fails {
                    self.report(
                        &task.task_arn,
                        "STOPPED",
                        "CannotPullContainerError: pull access denied",
                    )
                    .await;
                    self.hosts[index]
                        .tasks
                        .insert(task.task_arn.clone(), Local::Stopped);
                    continue;
                }
                self.report(&task.task_arn, "RUNNING", "").await;
                if image.starts_with("sim/exit") {
                    self.hosts[index]
                        .tasks
                        .insert(task.task_arn.clone(), Local::Crashing);
                    continue;
                }
                self.hosts[index]
                    .tasks
                    .insert(task.task_arn.clone(), Local::Running);
                if container.health_check.is_some() {
                    let status = if image.starts_with("sim/unhealthy") {
                        "UNHEALTHY"
                    } else {
                        "HEALTHY"
                    };
                    let health = [ContainerHealth {
                        container_name: name,
                        health_status: status.to_owned(),
                    }];
                    let _ = self
                        .ecs
                        .record_task_health(&agent, &task.task_arn, &health)
                        .await;
                }
            }
        }
    }

    async fn report(&self, task_arn: &str, status: &str, reason: &str) {
        let mut body = json!({"cluster": CLUSTER, "task": task_arn, "status": status});
        if !reason.is_empty() {
            body["reason"] = json!(reason);
        }
        self.ok("SubmitTaskStateChange", body).await;
    }

    /// A running task's essential container exits on its own.
    async fn crash_a_task(&mut self) {
        let running: Vec<(usize, String)> = self
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.connected)
            .flat_map(|(i, h)| {
                h.tasks
                    .iter()
                    .filter(|(_, s)| **s == Local::Running)
                    .map(move |(arn, _)| (i, arn.clone()))
            })
            .collect();
        if running.is_empty() {
            return;
        }
        let mut sorted = running;
        sorted.sort();
        let (host, arn) = sorted[self.rng.below(sorted.len() as u64) as usize].clone();
        self.report(&arn, "STOPPED", "Essential container in task exited")
            .await;
        self.hosts[host].tasks.insert(arn, Local::Stopped);
    }

    /// A running task's essential container exits on its own.
    async fn crash(&mut self, task_arn: &str) {
        self.report(task_arn, "STOPPED", "Essential container in task exited")
            .await;
        for host in &mut self.hosts {
            if let Some(state) = host.tasks.get_mut(task_arn) {
                *state = Local::Stopped;
            }
        }
    }

    /// The ARNs of a service's tasks that are RUNNING and not asked to stop.
    async fn running_tasks_of(&self, name: &str) -> Vec<String> {
        let group = format!("service:{name}");
        let mut arns: Vec<String> = self
            .tasks()
            .await
            .iter()
            .filter(|t| {
                t["group"] == json!(group)
                    && t["lastStatus"] == "RUNNING"
                    && t["desiredStatus"] == "RUNNING"
            })
            .filter_map(|t| t["taskArn"].as_str().map(str::to_owned))
            .collect();
        arns.sort();
        arns
    }

    fn advance(&self, ms: u64) {
        self.clock.0.fetch_add(ms, Ordering::Relaxed);
    }

    async fn pass(&mut self) {
        self.scheduler
            .pass(&self.ecs)
            .await
            .expect("scheduler pass");
    }

    async fn service(&self, name: &str) -> Value {
        let response = self
            .ok(
                "DescribeServices",
                json!({"cluster": CLUSTER, "services": [name]}),
            )
            .await;
        response["services"][0].clone()
    }

    /// The circuit breaker of a service's deployment that was rolled back,
    /// as DescribeServiceDeployments shows it.
    async fn rolled_back_breaker(&self, name: &str) -> Value {
        let listed = self
            .ok(
                "ListServiceDeployments",
                json!({"cluster": CLUSTER, "service": name}),
            )
            .await;
        let arn = listed["serviceDeployments"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["status"] == "ROLLBACK_SUCCESSFUL")
            .map(|d| d["serviceDeploymentArn"].clone())
            .unwrap_or_else(|| panic!("no rolled back deployment: {listed}"));
        let described = self
            .ok(
                "DescribeServiceDeployments",
                json!({"serviceDeploymentArns": [arn]}),
            )
            .await;
        described["serviceDeployments"][0]["deploymentCircuitBreaker"].clone()
    }

    /// Every task of the cluster, described.
    async fn tasks(&self) -> Vec<Value> {
        let mut arns = Vec::new();
        for desired in ["RUNNING", "STOPPED"] {
            let mut token: Option<String> = None;
            loop {
                let mut body = json!({"cluster": CLUSTER, "desiredStatus": desired});
                if let Some(token) = &token {
                    body["nextToken"] = json!(token);
                }
                let page = self.ok("ListTasks", body).await;
                arns.extend(page["taskArns"].as_array().cloned().unwrap_or_default());
                match page["nextToken"].as_str() {
                    Some(next) => token = Some(next.to_owned()),
                    None => break,
                }
            }
        }
        let mut tasks = Vec::new();
        for chunk in arns.chunks(100) {
            let described = self
                .ok("DescribeTasks", json!({"cluster": CLUSTER, "tasks": chunk}))
                .await;
            tasks.extend(described["tasks"].as_array().cloned().unwrap_or_default());
        }
        tasks
    }

    /// (occupying, healthy) tasks of a service, per task definition, as an
    /// observer sees them: not yet STOPPED; RUNNING, not asked to stop and
    /// not unhealthy.
    async fn census(&self, name: &str) -> Census {
        let group = format!("service:{name}");
        let mut census = Census::default();
        for task in self.tasks().await {
            if task["group"] != json!(group) || task["lastStatus"] == "STOPPED" {
                continue;
            }
            let definition = task["taskDefinitionArn"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            *census.occupying.entry(definition).or_default() += 1;
            let healthy = task["lastStatus"] == "RUNNING"
                && task["desiredStatus"] == "RUNNING"
                && task["healthStatus"] != "UNHEALTHY";
            if healthy {
                census.healthy += 1;
            }
        }
        census
    }

    /// Steps until `done` or `steps` run out: agents act, time moves, the
    /// scheduler passes.
    async fn settle(&mut self, steps: usize) {
        for _ in 0..steps {
            self.agents_act().await;
            self.advance(STEP_MS);
            self.pass().await;
        }
    }
}

#[derive(Debug, Default, PartialEq)]
struct Census {
    occupying: BTreeMap<String, u32>,
    healthy: u32,
}

impl Census {
    fn total(&self) -> u32 {
        self.occupying.values().sum()
    }
}

fn steady(service: &Value) -> bool {
    service["deployments"].as_array().map_or(0, Vec::len) == 1
        && service["runningCount"] == service["desiredCount"]
        && service["deployments"][0]["rolloutState"] == "COMPLETED"
}

fn messages(service: &Value) -> Vec<String> {
    service["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect()
}

/// The scheduler sizes its launch and stop batches from the store's limits:
/// on a store with etcd's (128 operations a transaction), a service of 300
/// tasks starts and scales in with no transaction refused, where fixed
/// batches of 256 launches would be.
#[tokio::test]
async fn a_store_with_etcds_limits_runs_a_large_service() {
    let limits = flotilla_store::TxnLimits::ETCD_DEFAULT;
    let mut world = World::with_store(11, MemoryStore::with_limits(limits)).await;
    for _ in 0..10 {
        world.add_host(4096, 8192, "a").await;
    }
    let definition = world.definition("big", "app:v1", false).await;
    world
        .ok(
            "CreateService",
            json!({"cluster": CLUSTER, "serviceName": "big", "taskDefinition": definition, "desiredCount": 300}),
        )
        .await;
    world.settle(20).await;
    let service = world.service("big").await;
    assert_eq!(service["runningCount"], 300, "{service}");
    assert!(steady(&service), "{service}");
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "big", "desiredCount": 10}),
        )
        .await;
    world.settle(20).await;
    let service = world.service("big").await;
    assert_eq!(service["runningCount"], 10, "{service}");
    assert!(steady(&service), "{service}");
}

#[tokio::test]
async fn rolling_example_four_tasks_minimum_fifty_maximum_one_hundred() {
    let mut world = World::new(1).await;
    for zone in ["a", "b", "c", "d"] {
        world.add_host(1024, 2048, zone).await;
    }
    let v1 = world.definition("web", "app:v1", false).await;
    world
        .ok(
            "CreateService",
            json!({"cluster": CLUSTER, "serviceName": "web", "taskDefinition": "web", "desiredCount": 4,
                   "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 100}}),
        )
        .await;
    world.settle(4).await;
    let service = world.service("web").await;
    assert!(steady(&service), "{service}");
    assert!(messages(&service)
        .iter()
        .any(|m| m == "(service web) has reached a steady state."));
    let v2 = world.definition("web", "app:v2", false).await;
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "web", "taskDefinition": v2}),
        )
        .await;
    let mut seen: Vec<(u32, u32)> = Vec::new();
    for _ in 0..20 {
        world.pass().await;
        world.agents_act().await;
        world.advance(STEP_MS);
        let census = world.census("web").await;
        assert!(census.total() <= 4, "more than maximumPercent: {census:?}");
        assert!(
            census.healthy >= 2,
            "fewer than minimumHealthyPercent: {census:?}"
        );
        let state = (
            census.occupying.get(&v1).copied().unwrap_or(0),
            census.occupying.get(&v2).copied().unwrap_or(0),
        );
        if seen.last() != Some(&state) {
            seen.push(state);
        }
    }
    // v1 v1 v1 v1 → v1 v1 → v1 v1 v2 v2 → v2 v2 → v2 v2 v2 v2
    assert_eq!(seen, vec![(2, 0), (2, 2), (0, 2), (0, 4)]);
    let service = world.service("web").await;
    assert!(steady(&service), "{service}");
    assert_eq!(service["taskDefinition"], json!(v2));
    let all = messages(&service);
    assert!(
        all.iter()
            .any(|m| m.starts_with("(service web) has stopped 2 running tasks: (task ")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|m| m.starts_with("(service web) has started 2 tasks: (task ")),
        "{all:?}"
    );
    assert!(
        all.iter().any(|m| m.ends_with("deployment completed.")),
        "{all:?}"
    );
}

/// A service of `desired` tasks under the circuit breaker with rollback,
/// steady on the first of `images`, then deployed to the second: after
/// `steps`, the breaker must have failed that deployment and the service be
/// steady on the first again. Returns the service and the first revision.
async fn deploy_and_roll_back(
    world: &mut World,
    name: &str,
    desired: u32,
    health_check: bool,
    images: (&str, &str),
    steps: usize,
) -> (Value, String) {
    let good = world.definition(name, images.0, health_check).await;
    world
        .ok(
            "CreateService",
            json!({"cluster": CLUSTER, "serviceName": name, "taskDefinition": good, "desiredCount": desired,
                   "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": true, "rollback": true}}}),
        )
        .await;
    world.settle(4).await;
    assert!(steady(&world.service(name).await));
    let bad = world.definition(name, images.1, health_check).await;
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": name, "taskDefinition": bad}),
        )
        .await;
    world.settle(steps).await;
    let service = world.service(name).await;
    assert!(steady(&service), "{service}");
    assert_eq!(service["taskDefinition"], json!(good));
    let all = messages(&service);
    assert!(
        all.iter()
            .any(|m| m.ends_with("deployment failed: tasks failed to start.")),
        "{all:?}"
    );
    assert!(
        all.iter().any(|m| m.contains("rolling back to deployment")),
        "{all:?}"
    );
    (service, good)
}

#[tokio::test]
async fn circuit_breaker_rolls_back_to_the_last_completed_deployment() {
    let mut world = World::new(2).await;
    for zone in ["a", "b"] {
        world.add_host(4096, 8192, zone).await;
    }
    // Its tasks cannot be pulled: stage 1.
    let (_, good) = deploy_and_roll_back(
        &mut world,
        "api",
        4,
        false,
        ("app:v1", "sim/fail-pull:v2"),
        12,
    )
    .await;
    let census = world.census("api").await;
    assert_eq!(census.occupying.get(&good), Some(&4));
    assert_eq!(census.total(), 4);
    let listed = world
        .ok(
            "ListServiceDeployments",
            json!({"cluster": CLUSTER, "service": "api"}),
        )
        .await;
    let statuses: Vec<&str> = listed["serviceDeployments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["status"].as_str())
        .collect();
    assert!(statuses.contains(&"ROLLBACK_SUCCESSFUL"), "{listed}");
}

#[tokio::test]
async fn unhealthy_tasks_are_replaced_after_the_grace_period() {
    let mut world = World::new(3).await;
    world.add_host(4096, 8192, "a").await;
    world.definition("hc", "sim/unhealthy", true).await;
    world
        .ok(
            "CreateService",
            json!({"cluster": CLUSTER, "serviceName": "hc", "taskDefinition": "hc", "desiredCount": 1,
                   "healthCheckGracePeriodSeconds": 5}),
        )
        .await;
    world.settle(3).await;
    let before = messages(&world.service("hc").await);
    assert!(
        !before
            .iter()
            .any(|m| m.contains("failed container health checks")),
        "{before:?}"
    );
    world.settle(6).await;
    let after = messages(&world.service("hc").await);
    assert!(
        after
            .iter()
            .any(|m| m.contains("failed container health checks")),
        "{after:?}"
    );
}

/// The deployment (as DescribeServices shows it) running `definition`.
fn deployment_of<'a>(service: &'a Value, definition: &str) -> Option<&'a Value> {
    service["deployments"]
        .as_array()?
        .iter()
        .find(|d| d["taskDefinition"] == json!(definition))
}

/// A service of one task under the breaker (COUNT 3, with rollback),
/// steady on `app:v1`; returns the world and that revision.
async fn counting_service(seed: u64, reset: bool) -> (World, String) {
    let mut world = World::new(seed).await;
    world.add_host(4096, 8192, "a").await;
    let good = world.definition("loop", "app:v1", false).await;
    world
        .ok(
            "CreateService",
            json!({"cluster": CLUSTER, "serviceName": "loop", "taskDefinition": good, "desiredCount": 1,
                   "deploymentConfiguration": {"deploymentCircuitBreaker": {
                       "enable": true, "rollback": true, "resetOnHealthyTask": reset,
                       "thresholdConfiguration": {"type": "COUNT", "value": 3}}}}),
        )
        .await;
    world.settle(5).await;
    assert!(steady(&world.service("loop").await));
    (world, good)
}

#[tokio::test]
async fn a_revision_that_crashes_after_running_trips_the_breaker_whether_or_not_it_resets() {
    for reset in [true, false] {
        let (mut world, good) = counting_service(8, reset).await;
        // Each task of the new revision reaches RUNNING, then its essential
        // container exits before it has held its health: it never counts
        // as healthy, so it resets nothing and the failures add up.
        let bad = world.definition("loop", "sim/exit:1", false).await;
        world
            .ok(
                "UpdateService",
                json!({"cluster": CLUSTER, "service": "loop", "taskDefinition": bad}),
            )
            .await;
        let mut counts: Vec<i64> = Vec::new();
        let mut restarted = false;
        for _ in 0..40 {
            world.settle(1).await;
            let service = world.service("loop").await;
            let Some(deployment) = deployment_of(&service, &bad) else {
                break;
            };
            assert_ne!(deployment["rolloutState"], "COMPLETED", "{service}");
            let failed = deployment["failedTasks"].as_i64().unwrap_or(0);
            if counts.last() != Some(&failed) {
                counts.push(failed);
            }
            if failed == 2 && !restarted {
                // The count is kept in the store: a restarted control plane
                // carries on from it.
                world.restart();
                world.pass().await;
                let again = world.service("loop").await;
                assert_eq!(
                    deployment_of(&again, &bad).map(|d| d["failedTasks"].clone()),
                    Some(json!(2))
                );
                restarted = true;
            }
            if deployment["rolloutState"] == "FAILED" {
                break;
            }
        }
        // The third failure trips it, and the rollback retires it at once.
        assert_eq!(counts, [0, 1, 2], "reset on healthy: {reset}");
        world.settle(4).await;
        let service = world.service("loop").await;
        assert!(steady(&service), "{service}");
        assert_eq!(service["taskDefinition"], json!(good));
        let all = messages(&service);
        assert!(all
            .iter()
            .any(|m| m.ends_with("deployment failed: tasks failed to start.")));
        assert!(
            all.iter().any(|m| m.starts_with("(service loop) (task ")
                && m.ends_with("stopped: Essential container in task exited.")),
            "{all:?}"
        );
        assert_eq!(world.rolled_back_breaker("loop").await["failureCount"], 3);
    }
}

#[tokio::test]
async fn a_task_that_held_its_health_resets_the_count_unless_told_not_to() {
    for reset in [true, false] {
        let (mut world, good) = counting_service(12, reset).await;
        // The old task is protected: the deployment cannot retire it, so it
        // stays IN_PROGRESS and its breaker keeps counting.
        let Ok([old]) = <[String; 1]>::try_from(world.running_tasks_of("loop").await) else {
            panic!("one task");
        };
        world
            .ok(
                "UpdateTaskProtection",
                json!({"cluster": CLUSTER, "tasks": [old], "protectionEnabled": true}),
            )
            .await;
        let next = world.definition("loop", "app:v2", false).await;
        // Two starts fail, then one runs and holds its health, then crashes.
        world.start_failure_percent = 100;
        world
            .ok(
                "UpdateService",
                json!({"cluster": CLUSTER, "service": "loop", "taskDefinition": next}),
            )
            .await;
        let count =
            |service: &Value| deployment_of(service, &next).and_then(|d| d["failedTasks"].as_i64());
        for _ in 0..10 {
            if count(&world.service("loop").await) == Some(2) {
                break;
            }
            world.settle(1).await;
        }
        assert_eq!(count(&world.service("loop").await), Some(2));
        world.start_failure_percent = 0;
        world.settle(4).await;
        let service = world.service("loop").await;
        assert_eq!(
            count(&service),
            Some(if reset { 0 } else { 2 }),
            "reset on healthy: {reset}: {service}"
        );
        let new_tasks: Vec<String> = world
            .running_tasks_of("loop")
            .await
            .into_iter()
            .filter(|arn| *arn != old)
            .collect();
        let Ok([survivor]) = <[String; 1]>::try_from(new_tasks) else {
            panic!("one new task");
        };
        world.crash(&survivor).await;
        world.settle(1).await;
        let service = world.service("loop").await;
        if reset {
            let deployment = deployment_of(&service, &next).expect("the deployment");
            assert_eq!(deployment["failedTasks"], 1);
            assert_eq!(deployment["rolloutState"], "IN_PROGRESS");
        } else {
            // The third failure trips it; the protected old task runs on
            // as the rolled back deployment's.
            world.settle(2).await;
            let service = world.service("loop").await;
            let breaker = world.rolled_back_breaker("loop").await;
            assert_eq!(breaker["failureCount"], 3, "{breaker}");
            assert_eq!(service["taskDefinition"], json!(good));
        }
    }
}

#[tokio::test]
async fn a_crash_looping_revision_never_completes_and_keeps_the_old_tasks_up() {
    let mut world = World::new(13).await;
    for zone in ["a", "b"] {
        world.add_host(4096, 8192, zone).await;
    }
    let good = world.definition("web", "app:v1", false).await;
    world
        .ok(
            "CreateService",
            json!({"cluster": CLUSTER, "serviceName": "web", "taskDefinition": good, "desiredCount": 4,
                   "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 200,
                       "deploymentCircuitBreaker": {"enable": true, "rollback": true}}}),
        )
        .await;
    world.settle(5).await;
    let first = world.service("web").await;
    assert!(steady(&first), "{first}");
    let steady_said = |service: &Value| {
        messages(service)
            .iter()
            .filter(|m| *m == "(service web) has reached a steady state.")
            .count()
    };
    assert_eq!(steady_said(&first), 1);
    let bad = world.definition("web", "sim/exit:1", false).await;
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "web", "taskDefinition": bad}),
        )
        .await;
    let mut failed = false;
    for _ in 0..30 {
        world.settle(1).await;
        let service = world.service("web").await;
        if let Some(deployment) = deployment_of(&service, &bad) {
            assert_ne!(deployment["rolloutState"], "COMPLETED", "{service}");
        }
        failed |= messages(&service)
            .iter()
            .any(|m| m.ends_with("deployment failed: tasks failed to start."));
        // The old revision's running tasks never go below the floor.
        let old_running = world
            .tasks()
            .await
            .iter()
            .filter(|t| t["taskDefinitionArn"] == json!(good))
            .filter(|t| t["lastStatus"] == "RUNNING" && t["desiredStatus"] == "RUNNING")
            .count();
        assert!(
            old_running >= 2,
            "{old_running} tasks of the old revision left running"
        );
        if failed && steady(&service) {
            break;
        }
        assert_eq!(steady_said(&service), 1, "{:?}", messages(&service));
    }
    assert!(failed, "the breaker never tripped");
    world.settle(4).await;
    let service = world.service("web").await;
    assert!(steady(&service), "{service}");
    assert_eq!(service["taskDefinition"], json!(good));
    assert_eq!(
        service["deployments"][0]["id"], first["deployments"][0]["id"],
        "the last completed deployment came back"
    );
    // Said once more, when the rollback held its steady state, and not again.
    assert_eq!(steady_said(&service), 2, "{:?}", messages(&service));
    world.settle(10).await;
    assert_eq!(steady_said(&world.service("web").await), 2);
}

#[tokio::test]
async fn circuit_breaker_counts_tasks_that_fail_their_health_checks() {
    let mut world = World::new(9).await;
    world.add_host(4096, 8192, "a").await;
    // Its tasks reach RUNNING, then fail their health checks: stage 2.
    let (service, _) = deploy_and_roll_back(
        &mut world,
        "hc",
        2,
        true,
        ("app:v1", "sim/unhealthy:v2"),
        20,
    )
    .await;
    let all = messages(&service);
    assert!(
        all.iter()
            .any(|m| m.ends_with("failed container health checks.")),
        "{all:?}"
    );
    let breaker = world.rolled_back_breaker("hc").await;
    assert_eq!(breaker["status"], "TRIGGERED");
    assert_eq!(breaker["threshold"], 3);
    assert!(
        breaker["failureCount"].as_i64().unwrap_or(0) >= 3,
        "{breaker}"
    );
}

#[tokio::test]
async fn threshold_configurations_out_of_range_are_refused() {
    let world = World::new(10).await;
    world.definition("th", "app:v1", false).await;
    let with = |threshold: Value| {
        json!({"cluster": CLUSTER, "serviceName": "th", "taskDefinition": "th", "desiredCount": 1,
               "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": true, "rollback": false,
                   "thresholdConfiguration": threshold}}})
    };
    for threshold in [
        json!({"type": "COUNT", "value": 0}),
        json!({"type": "BOUNDED_PERCENT", "value": 101}),
        json!({"type": "UNBOUNDED_PERCENT", "value": 0}),
        json!({"type": "COUNT"}),
    ] {
        let error = world
            .call("CreateService", with(threshold.clone()))
            .await
            .expect_err("refused");
        assert_eq!(error.code, "InvalidParameterException", "{threshold}");
        assert!(
            error.message.contains("thresholdConfiguration"),
            "{}",
            error.message
        );
    }
    let listed = world.ok("ListServices", json!({"cluster": CLUSTER})).await;
    assert_eq!(listed["serviceArns"], json!([]));
    world
        .ok(
            "CreateService",
            with(json!({"type": "UNBOUNDED_PERCENT", "value": 100})),
        )
        .await;
}

#[tokio::test]
async fn a_deregistered_revision_runs_on_in_its_service_and_no_request_takes_it_up() {
    let mut world = World::new(11).await;
    world.add_host(4096, 8192, "a").await;
    world.add_host(4096, 8192, "b").await;
    let v1 = world.definition("old", "app:v1", false).await;
    world
        .ok("CreateService", json!({"cluster": CLUSTER, "serviceName": "old", "taskDefinition": v1, "desiredCount": 2}))
        .await;
    world.settle(3).await;
    assert!(steady(&world.service("old").await));
    world
        .ok("DeregisterTaskDefinition", json!({"taskDefinition": v1}))
        .await;
    // A task that exits is replaced, the service scales and redeploys, all
    // on the INACTIVE revision.
    world.crash_a_task().await;
    world.settle(3).await;
    assert_eq!(world.census("old").await.occupying.get(&v1), Some(&2));
    assert!(steady(&world.service("old").await));
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "old", "desiredCount": 3}),
        )
        .await;
    world.settle(3).await;
    assert_eq!(world.census("old").await.occupying.get(&v1), Some(&3));
    let before = world.service("old").await;
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "old", "forceNewDeployment": true}),
        )
        .await;
    world.settle(6).await;
    let redeployed = world.service("old").await;
    assert!(steady(&redeployed), "{redeployed}");
    assert_ne!(
        redeployed["deployments"][0]["id"],
        before["deployments"][0]["id"]
    );
    assert_eq!(world.census("old").await.occupying.get(&v1), Some(&3));
    // Naming the revision it runs is no change; so is DeleteTaskDefinitions.
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "old", "taskDefinition": v1}),
        )
        .await;
    world
        .ok("DeleteTaskDefinitions", json!({"taskDefinitions": [v1]}))
        .await;
    world.crash_a_task().await;
    world.settle(3).await;
    assert_eq!(world.census("old").await.occupying.get(&v1), Some(&3));
    // No request takes an INACTIVE revision up, and a refused one changes nothing.
    let v2 = world.definition("old", "app:v2", false).await;
    world
        .ok("DeregisterTaskDefinition", json!({"taskDefinition": v2}))
        .await;
    let before = world.service("old").await;
    for (operation, body) in [
        (
            "CreateService",
            json!({"cluster": CLUSTER, "serviceName": "other", "taskDefinition": v1, "desiredCount": 1}),
        ),
        (
            "CreateService",
            json!({"cluster": CLUSTER, "serviceName": "other", "taskDefinition": v2, "desiredCount": 1}),
        ),
        (
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "old", "taskDefinition": v2, "desiredCount": 1}),
        ),
        ("RunTask", json!({"cluster": CLUSTER, "taskDefinition": v1})),
    ] {
        let error = world
            .call(operation, body.clone())
            .await
            .expect_err("refused");
        assert_eq!(
            (error.code, error.message.as_str()),
            ("ClientException", "TaskDefinition is inactive"),
            "{body}"
        );
    }
    let listed = world.ok("ListServices", json!({"cluster": CLUSTER})).await;
    assert_eq!(listed["serviceArns"].as_array().map_or(0, Vec::len), 1);
    assert_eq!(world.service("old").await, before);
}

/// The tags of a service's tasks, by task ARN, as DescribeTasks shows them
/// and as ListTagsForResource lists them (which must agree).
async fn service_task_tags(world: &World, name: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let group = format!("service:{name}");
    let arns: Vec<Value> = world
        .tasks()
        .await
        .iter()
        .filter(|t| t["group"] == json!(group) && t["lastStatus"] != "STOPPED")
        .map(|t| t["taskArn"].clone())
        .collect();
    let described = world
        .ok(
            "DescribeTasks",
            json!({"cluster": CLUSTER, "tasks": arns, "include": ["TAGS"]}),
        )
        .await;
    let pairs = |tags: &Value| -> Vec<(String, String)> {
        tags.as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["key"].as_str().unwrap_or_default().to_owned(),
                    t["value"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let mut by_task = BTreeMap::new();
    for task in described["tasks"].as_array().into_iter().flatten() {
        let arn = task["taskArn"].as_str().unwrap_or_default().to_owned();
        let listed = world
            .ok("ListTagsForResource", json!({"resourceArn": arn}))
            .await;
        assert_eq!(pairs(&listed["tags"]), pairs(&task["tags"]), "{arn}");
        by_task.insert(arn, pairs(&task["tags"]));
    }
    by_task
}

#[tokio::test]
async fn service_tasks_carry_managed_and_propagated_tags() {
    let mut world = World::new(12).await;
    world.add_host(4096, 8192, "a").await;
    world
        .ok(
            "RegisterTaskDefinition",
            json!({"family": "tagged", "containerDefinitions": [{"name": "app", "image": "app:v1", "memory": 128}],
                   "tags": [{"key": "layer", "value": "definition"}]}),
        )
        .await;
    world
        .ok(
            "CreateService",
            json!({"cluster": CLUSTER, "serviceName": "tagged", "taskDefinition": "tagged", "desiredCount": 2,
                   "tags": [{"key": "team", "value": "a"}], "propagateTags": "SERVICE", "enableECSManagedTags": true}),
        )
        .await;
    world.settle(3).await;
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let managed = [
        pair("aws:ecs:clusterName", CLUSTER),
        pair("aws:ecs:serviceName", "tagged"),
    ];
    let first = service_task_tags(&world, "tagged").await;
    assert_eq!(first.len(), 2);
    for tags in first.values() {
        assert_eq!(
            tags,
            &[pair("team", "a"), managed[0].clone(), managed[1].clone()]
        );
    }
    // The service's tags as they are when a task starts; changes of how
    // tasks are tagged start no deployment and apply to later tasks.
    let service_arn = world.service("tagged").await["serviceArn"].clone();
    world
        .ok(
            "TagResource",
            json!({"resourceArn": service_arn, "tags": [{"key": "tier", "value": "web"}]}),
        )
        .await;
    let deployment = world.service("tagged").await["deployments"].clone();
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "tagged", "desiredCount": 3}),
        )
        .await;
    world.settle(2).await;
    let second = service_task_tags(&world, "tagged").await;
    let newest = second
        .iter()
        .find(|(arn, _)| !first.contains_key(*arn))
        .map(|(_, tags)| tags.clone());
    assert_eq!(
        newest,
        Some(vec![
            pair("team", "a"),
            pair("tier", "web"),
            managed[0].clone(),
            managed[1].clone()
        ])
    );
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "tagged", "desiredCount": 4, "propagateTags": "TASK_DEFINITION",
                   "enableECSManagedTags": false}),
        )
        .await;
    world.settle(2).await;
    let service = world.service("tagged").await;
    assert_eq!(service["deployments"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        service["deployments"][0]["id"], deployment[0]["id"],
        "no new deployment"
    );
    assert_eq!(service["propagateTags"], "TASK_DEFINITION");
    assert_eq!(service["enableECSManagedTags"], false);
    let third = service_task_tags(&world, "tagged").await;
    assert_eq!(third.len(), 4);
    let newest = third
        .iter()
        .find(|(arn, _)| !second.contains_key(*arn))
        .map(|(_, tags)| tags.clone());
    assert_eq!(newest, Some(vec![pair("layer", "definition")]));
    for (arn, tags) in &second {
        assert_eq!(third.get(arn), Some(tags), "an older task keeps its tags");
    }
}

#[tokio::test]
async fn daemon_runs_one_task_on_every_active_instance() {
    let mut world = World::new(4).await;
    world.add_host(4096, 8192, "a").await;
    world.add_host(4096, 8192, "b").await;
    world.definition("agent", "app:v1", false).await;
    world
        .ok(
            "CreateService",
            json!({"cluster": CLUSTER, "serviceName": "logs", "taskDefinition": "agent", "schedulingStrategy": "DAEMON"}),
        )
        .await;
    world.settle(3).await;
    assert_eq!(world.census("logs").await.total(), 2);
    let third = world.add_host(4096, 8192, "c").await;
    world.settle(3).await;
    let service = world.service("logs").await;
    assert_eq!(service["desiredCount"], 3);
    assert_eq!(world.census("logs").await.total(), 3);
    world
        .ok(
            "UpdateContainerInstancesState",
            json!({"cluster": CLUSTER, "containerInstances": [third], "status": "DRAINING"}),
        )
        .await;
    world.settle(3).await;
    assert_eq!(world.census("logs").await.total(), 2);
    assert_eq!(world.service("logs").await["desiredCount"], 2);
}

#[tokio::test]
async fn draining_moves_tasks_and_protection_holds_them() {
    let mut world = World::new(5).await;
    let first = world.add_host(4096, 8192, "a").await;
    world.definition("web", "app:v1", false).await;
    world
        .ok("CreateService", json!({"cluster": CLUSTER, "serviceName": "web", "taskDefinition": "web", "desiredCount": 3}))
        .await;
    world.settle(3).await;
    world.add_host(4096, 8192, "b").await;
    world
        .ok(
            "UpdateContainerInstancesState",
            json!({"cluster": CLUSTER, "containerInstances": [first], "status": "DRAINING"}),
        )
        .await;
    world.settle(6).await;
    let tasks = world.tasks().await;
    let live_on_first = tasks
        .iter()
        .filter(|t| t["containerInstanceArn"] == json!(first) && t["lastStatus"] != "STOPPED")
        .count();
    assert_eq!(live_on_first, 0);
    assert!(steady(&world.service("web").await));
    // Scale in: a protected task is kept.
    let running: Vec<String> = tasks
        .iter()
        .filter(|t| t["lastStatus"] == "RUNNING" && t["desiredStatus"] == "RUNNING")
        .filter_map(|t| t["taskArn"].as_str().map(str::to_owned))
        .collect();
    let keep = running[0].clone();
    let protected = world
        .ok(
            "UpdateTaskProtection",
            json!({"cluster": CLUSTER, "tasks": [keep], "protectionEnabled": true}),
        )
        .await;
    assert_eq!(protected["protectedTasks"][0]["protectionEnabled"], true);
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "web", "desiredCount": 1}),
        )
        .await;
    world.settle(3).await;
    let left: Vec<String> = world
        .tasks()
        .await
        .iter()
        .filter(|t| t["group"] == "service:web" && t["lastStatus"] != "STOPPED")
        .filter_map(|t| t["taskArn"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(left, vec![keep]);
}

#[tokio::test]
async fn a_crash_in_the_middle_of_a_deployment_loses_nothing() {
    let mut world = World::new(6).await;
    for zone in ["a", "b", "c"] {
        world.add_host(4096, 8192, zone).await;
    }
    world.definition("web", "app:v1", false).await;
    world
        .ok(
            "CreateService",
            json!({"cluster": CLUSTER, "serviceName": "web", "taskDefinition": "web", "desiredCount": 6,
                   "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 150}}),
        )
        .await;
    world.settle(4).await;
    let v2 = world.definition("web", "app:v2", false).await;
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "web", "taskDefinition": v2}),
        )
        .await;
    for budget in [1, 0, 2, 1, 3] {
        world.store.commits_left.store(budget, Ordering::Relaxed);
        let _ = world.scheduler.pass(&world.ecs).await;
        world.restart();
        world.agents_act().await;
        world.advance(STEP_MS);
        assert!(world.census("web").await.total() <= 9);
    }
    world.settle(8).await;
    let service = world.service("web").await;
    assert!(steady(&service), "{service}");
    assert_eq!(world.census("web").await.occupying.get(&v2), Some(&6));
}

/// One random sequence; returns a description of the first broken invariant.
async fn random_sequence(seed: u64, steps: usize) -> Result<(), String> {
    let mut world = World::new(seed).await;
    world.start_percent = 70;
    let hosts = 4 + world.rng.below(4) as usize;
    for index in 0..hosts {
        let zone = ["a", "b", "c"][index % 3];
        world.add_host(1024, 2048, zone).await;
    }
    let good_images = ["app:v1", "app:v2", "app:v3"];
    let health = world.rng.chance(50);
    world.definition("svc", "app:v1", health).await;
    let minimum = [0, 50, 100][world.rng.below(3) as usize];
    let maximum =
        [100, 150, 200][world.rng.below(3) as usize].max(if minimum == 100 { 150 } else { 100 });
    let desired = 1 + world.rng.below(8);
    let rollback = world.rng.chance(50);
    let reset_on_healthy = world.rng.chance(50);
    world
        .ok(
            "CreateService",
            json!({"cluster": CLUSTER, "serviceName": "svc", "taskDefinition": "svc", "desiredCount": desired,
                   "deploymentConfiguration": {"minimumHealthyPercent": minimum, "maximumPercent": maximum,
                       "deploymentCircuitBreaker": {"enable": true, "rollback": rollback,
                           "resetOnHealthyTask": reset_on_healthy}}}),
        )
        .await;
    let mut drained: Vec<String> = Vec::new();
    // Task definitions whose image fails to start or exits as soon as it
    // runs: a deployment of one that completed at a desired count of 0
    // crash-loops once scaled up, as in ECS.
    let mut failing: Vec<String> = Vec::new();
    for step in 0..steps {
        let roll = world.rng.below(100);
        match roll {
            0..=5 => {
                let desired = world.rng.below(9);
                world
                    .ok(
                        "UpdateService",
                        json!({"cluster": CLUSTER, "service": "svc", "desiredCount": desired}),
                    )
                    .await;
            }
            6..=10 => {
                let image = if world.rng.chance(25) {
                    ["sim/fail-pull:bad", "sim/exit:1"][world.rng.below(2) as usize]
                } else {
                    good_images[world.rng.below(3) as usize]
                };
                let health = world.rng.chance(50);
                let arn = world.definition("svc", image, health).await;
                if image.starts_with("sim/fail") || image.starts_with("sim/exit") {
                    failing.push(arn.clone());
                }
                world
                    .ok(
                        "UpdateService",
                        json!({"cluster": CLUSTER, "service": "svc", "taskDefinition": arn}),
                    )
                    .await;
            }
            11..=15 => world.crash_a_task().await,
            16..=18 => {
                let host = world.rng.below(world.hosts.len() as u64) as usize;
                let arn = world.hosts[host].arn.clone();
                if drained.len() + 2 < world.hosts.len() && !drained.contains(&arn) {
                    world
                        .ok("UpdateContainerInstancesState", json!({"cluster": CLUSTER, "containerInstances": [arn], "status": "DRAINING"}))
                        .await;
                    drained.push(arn);
                }
            }
            19..=21 => {
                if let Some(arn) = drained.pop() {
                    world
                        .ok("UpdateContainerInstancesState", json!({"cluster": CLUSTER, "containerInstances": [arn], "status": "ACTIVE"}))
                        .await;
                }
            }
            22..=24 => {
                // A crash after a few commits, then a restart.
                world
                    .store
                    .commits_left
                    .store(world.rng.below(4), Ordering::Relaxed);
                let _ = world.scheduler.pass(&world.ecs).await;
                world.restart();
            }
            25..=27 => world.restart(),
            _ => {}
        }
        world.start_failure_percent = if world.rng.chance(10) { 30 } else { 0 };
        world.agents_act().await;
        world.advance(STEP_MS);
        let before = world.census("svc").await;
        let service = world.service("svc").await;
        let desired = service["desiredCount"].as_u64().unwrap_or(0) as u32;
        let configuration = &service["deploymentConfiguration"];
        let minimum = configuration["minimumHealthyPercent"]
            .as_u64()
            .unwrap_or(100) as u32;
        let maximum = configuration["maximumPercent"].as_u64().unwrap_or(200) as u32;
        let ceiling = (desired * maximum / 100).max(desired);
        let floor = (desired * minimum).div_ceil(100);
        world.pass().await;
        check_completions(&world, &service, &failing)
            .await
            .map_err(|e| format!("step {step}: {e}"))?;
        let after = world.census("svc").await;
        if after.total() > before.total().max(ceiling) {
            return Err(format!(
                "step {step}: {} tasks after a pass, ceiling {ceiling}, {} before",
                after.total(),
                before.total()
            ));
        }
        if after.healthy < before.healthy.min(floor) {
            return Err(format!(
                "step {step}: the pass left {} healthy, floor {floor}, {} before",
                after.healthy, before.healthy
            ));
        }
        check_no_overcommit(&world)
            .await
            .map_err(|e| format!("step {step}: {e}"))?;
        check_failure_counts(&world, reset_on_healthy)
            .await
            .map_err(|e| format!("step {step}: {e}"))?;
    }
    // Quiet: every instance back, no faults; the PRIMARY must finish.
    for arn in drained {
        world
            .ok(
                "UpdateContainerInstancesState",
                json!({"cluster": CLUSTER, "containerInstances": [arn], "status": "ACTIVE"}),
            )
            .await;
    }
    world.start_percent = 100;
    world.start_failure_percent = 0;
    // Long enough for the launch throttle of a failing deployment to lapse.
    world.settle(90).await;
    let service = world.service("svc").await;
    let state = service["deployments"][0]["rolloutState"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let desired = service["desiredCount"].as_u64().unwrap_or(0);
    let configuration = &service["deploymentConfiguration"];
    let floor = (desired
        * configuration["minimumHealthyPercent"]
            .as_u64()
            .unwrap_or(100))
    .div_ceil(100);
    let ceiling =
        (desired * configuration["maximumPercent"].as_u64().unwrap_or(200) / 100).max(desired);
    // A floor at the ceiling (one task, 50% and 100%) lets no old task stop
    // and no new one start: ECS's documented dead end, not a failure here.
    // A revision that crash-loops never completes and its failures count,
    // whether or not healthy tasks reset the count (its tasks never hold
    // their health): it ends FAILED.
    let dead_end = desired > 0 && floor >= ceiling;
    if state != "COMPLETED" && state != "FAILED" && !dead_end {
        return Err(format!(
            "the PRIMARY deployment is {state} after a quiet period: {service}"
        ));
    }
    let runs_failing = failing
        .iter()
        .any(|arn| service["taskDefinition"] == json!(arn));
    if state == "COMPLETED" && !runs_failing && !steady(&service) {
        return Err(format!("completed but not steady: {service}"));
    }
    Ok(())
}

/// No deployment becomes COMPLETED while its tasks are failing: when one
/// completes in a pass, it runs its desired count of tasks that have been
/// RUNNING for the stabilization period, and it is not of a revision whose
/// tasks fail (unless it completed at a desired count of 0). `before` is the
/// service as described before the pass.
async fn check_completions(
    world: &World,
    before: &Value,
    failing: &[String],
) -> Result<(), String> {
    let service = world.service("svc").await;
    let was_completed = |id: &Value| {
        before["deployments"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["id"] == *id && d["rolloutState"] == "COMPLETED")
    };
    let now_seconds = world.clock.now_ms() as f64 / 1000.0;
    let held_since = now_seconds - STABILIZATION_MS as f64 / 1000.0;
    let tasks = world.tasks().await;
    for deployment in service["deployments"].as_array().into_iter().flatten() {
        if deployment["rolloutState"] != "COMPLETED" || was_completed(&deployment["id"]) {
            continue;
        }
        let desired = deployment["desiredCount"].as_u64().unwrap_or(0) as usize;
        let held = tasks
            .iter()
            .filter(|t| t["startedBy"] == deployment["id"])
            .filter(|t| t["lastStatus"] == "RUNNING" && t["desiredStatus"] == "RUNNING")
            .filter(|t| t["startedAt"].as_f64().is_some_and(|at| at <= held_since))
            .count();
        if held < desired {
            return Err(format!(
                "deployment {} completed with {held} of {desired} tasks running for the stabilization period",
                deployment["id"]
            ));
        }
        let crashes = failing
            .iter()
            .any(|arn| deployment["taskDefinition"] == json!(arn));
        if crashes && desired > 0 {
            return Err(format!(
                "deployment {} of a failing revision completed at a desired count of {desired}",
                deployment["id"]
            ));
        }
    }
    Ok(())
}

/// Each live deployment's `failedTasks`, against its failed tasks as
/// DescribeTasks shows them: all of them when healthy tasks do not reset
/// the count, at most all of them when they do.
async fn check_failure_counts(world: &World, reset_on_healthy: bool) -> Result<(), String> {
    let service = world.service("svc").await;
    let tasks = world.tasks().await;
    for deployment in service["deployments"].as_array().into_iter().flatten() {
        let failed = tasks
            .iter()
            .filter(|t| t["startedBy"] == deployment["id"] && t["lastStatus"] == "STOPPED")
            .filter(|t| {
                t["stopCode"] == "TaskFailedToStart"
                    || t["stopCode"] == "EssentialContainerExited"
                    || t["stoppedReason"] == "Task failed container health checks"
            })
            .count() as i64;
        let counted = deployment["failedTasks"].as_i64().unwrap_or(-1);
        let right = if reset_on_healthy {
            (0..=failed).contains(&counted)
        } else {
            counted == failed
        };
        if !right {
            return Err(format!(
                "deployment {} counts {counted} failed tasks, its records show {failed} (reset on healthy: {reset_on_healthy})",
                deployment["id"]
            ));
        }
    }
    Ok(())
}

async fn check_no_overcommit(world: &World) -> Result<(), String> {
    let arns: Vec<String> = world.hosts.iter().map(|h| h.arn.clone()).collect();
    let described = world
        .ok(
            "DescribeContainerInstances",
            json!({"cluster": CLUSTER, "containerInstances": arns}),
        )
        .await;
    for instance in described["containerInstances"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for resource in instance["remainingResources"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if resource["type"] == "INTEGER" && resource["integerValue"].as_i64().unwrap_or(0) < 0 {
                return Err(format!("overcommitted: {instance}"));
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn random_sequences_keep_the_invariants() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => {
            let count = std::env::var("SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(6u64);
            (1..=count).collect()
        }
    };
    for seed in seeds {
        if let Err(failure) = random_sequence(seed, 80).await {
            panic!("seed {seed} broke an invariant: {failure}\nreplay with SIM_SEED={seed}");
        }
    }
}

#[tokio::test]
async fn a_deleted_service_drains_then_is_inactive_then_collected() {
    let mut world = World::new(7).await;
    world.add_host(4096, 8192, "a").await;
    world.definition("old", "app:v1", false).await;
    world
        .ok("CreateService", json!({"cluster": CLUSTER, "serviceName": "old", "taskDefinition": "old", "desiredCount": 2}))
        .await;
    world.settle(3).await;
    let refused = world
        .call(
            "DeleteService",
            json!({"cluster": CLUSTER, "service": "old"}),
        )
        .await;
    assert!(refused.is_err());
    // Protection keeps a task from scale-in, not from its service's end.
    let protected = world.running_tasks_of("old").await[0].clone();
    world
        .ok(
            "UpdateTaskProtection",
            json!({"cluster": CLUSTER, "tasks": [protected], "protectionEnabled": true}),
        )
        .await;
    let deleted = world
        .ok(
            "DeleteService",
            json!({"cluster": CLUSTER, "service": "old", "force": true}),
        )
        .await;
    assert_eq!(deleted["service"]["status"], "DRAINING");
    // One pass asks every task to stop; the next finds them all stopping
    // and makes the service INACTIVE, before any agent has acted.
    world.pass().await;
    world.pass().await;
    let service = world.service("old").await;
    assert_eq!(service["status"], "INACTIVE");
    let protected_id = protected.rsplit('/').next().unwrap_or_default();
    assert!(
        messages(&service)
            .iter()
            .any(|m| m.contains("protected tasks too")
                && m.contains(&format!("(task {protected_id})"))),
        "{:?}",
        messages(&service)
    );
    world.settle(2).await;
    assert_eq!(world.census("old").await.total(), 0);
    assert_eq!(
        world
            .ecs
            .collect_inactive_services()
            .await
            .expect("collect"),
        0
    );
    world.advance(60 * 60 * 1000);
    assert_eq!(
        world
            .ecs
            .collect_inactive_services()
            .await
            .expect("collect"),
        1
    );
    let described = world
        .ok(
            "DescribeServices",
            json!({"cluster": CLUSTER, "services": ["old"]}),
        )
        .await;
    assert_eq!(described["failures"][0]["reason"], "MISSING");
}

/// Tasks of a service not asked to stop, per capacity provider they report,
/// checking each against the provider of the instance it runs on.
async fn by_provider(
    world: &World,
    name: &str,
    provider_of: &HashMap<String, &str>,
) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for task in world.tasks().await {
        if task["group"] != json!(format!("service:{name}")) || task["desiredStatus"] != "RUNNING" {
            continue;
        }
        let provider = task["capacityProviderName"]
            .as_str()
            .unwrap_or("-")
            .to_owned();
        let instance = task["containerInstanceArn"].as_str().unwrap_or_default();
        assert_eq!(
            provider_of.get(instance).copied(),
            Some(provider.as_str()),
            "{task}"
        );
        *counts.entry(provider).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn a_service_keeps_its_capacity_provider_split_through_scaling_and_deployments() {
    let mut world = World::new(8).await;
    let mut provider_of = HashMap::new();
    for provider in ["ondemand", "spot"] {
        world
            .ok(
                "CreateCapacityProvider",
                json!({"name": provider,
                "autoScalingGroupProvider": {"autoScalingGroupArn": format!("asg-{provider}")}}),
            )
            .await;
        for zone in ["a", "b"] {
            let arn = world.add_host_in(4096, 8192, zone, Some(provider)).await;
            provider_of.insert(arn, provider);
        }
    }
    world
        .ok(
            "PutClusterCapacityProviders",
            json!({"cluster": CLUSTER, "capacityProviders": ["ondemand", "spot"],
            "defaultCapacityProviderStrategy": []}),
        )
        .await;
    world.definition("web", "app:v1", false).await;
    world
        .ok("CreateService", json!({"cluster": CLUSTER, "serviceName": "web", "taskDefinition": "web", "desiredCount": 4,
            "capacityProviderStrategy": [{"capacityProvider": "ondemand", "base": 1, "weight": 1},
                                         {"capacityProvider": "spot", "weight": 1}]}))
        .await;
    world.settle(4).await;
    assert!(steady(&world.service("web").await));
    // Base 1, then 3 by equal weights (the odd one to the first listed).
    let expected = BTreeMap::from([("ondemand".to_owned(), 3), ("spot".to_owned(), 1)]);
    assert_eq!(by_provider(&world, "web", &provider_of).await, expected);
    // Scaling out places against what the deployment already runs.
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "web", "desiredCount": 9}),
        )
        .await;
    world.settle(4).await;
    let expected = BTreeMap::from([("ondemand".to_owned(), 5), ("spot".to_owned(), 4)]);
    assert_eq!(by_provider(&world, "web", &provider_of).await, expected);
    // A new strategy is a new deployment: its tasks follow it alone.
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "web",
            "capacityProviderStrategy": [{"capacityProvider": "spot", "weight": 1}]}),
        )
        .await;
    world.settle(12).await;
    let service = world.service("web").await;
    assert!(steady(&service), "{service}");
    assert_eq!(
        service["capacityProviderStrategy"],
        json!([{"capacityProvider": "spot", "weight": 1}])
    );
    let expected = BTreeMap::from([("spot".to_owned(), 9)]);
    assert_eq!(by_provider(&world, "web", &provider_of).await, expected);
    // The service holds spot; ondemand is free to go.
    let refused = world
        .call(
            "PutClusterCapacityProviders",
            json!({"cluster": CLUSTER, "capacityProviders": ["ondemand"],
            "defaultCapacityProviderStrategy": []}),
        )
        .await
        .expect_err("spot is in use");
    assert_eq!(refused.code, "ResourceInUseException");
    world
        .ok(
            "PutClusterCapacityProviders",
            json!({"cluster": CLUSTER, "capacityProviders": ["spot"],
            "defaultCapacityProviderStrategy": []}),
        )
        .await;
}

/// Total CPU demand of the autoscaling scenario in percent of one task's
/// reservation: a step up at minute 5, a drop at minute 30.
fn scripted_load(minute: u64) -> f64 {
    match minute {
        0..=4 => 60.0,
        5..=29 => 360.0,
        _ => 40.0,
    }
}

/// Reports each host's running tasks' usage, as agents do: the load shared
/// evenly, at most 100% of a task's 128 CPU units each.
async fn report_usage(world: &World, load_percent: f64) {
    let running: usize = world
        .hosts
        .iter()
        .map(|h| h.tasks.values().filter(|s| **s == Local::Running).count())
        .sum();
    let per_task = if running == 0 {
        0.0
    } else {
        (load_percent / running as f64).min(100.0)
    };
    for host in &world.hosts {
        let agent = world
            .ecs
            .resolve_agent_instance(CLUSTER, &host.arn)
            .expect("agent instance");
        let mut arns: Vec<&String> = host
            .tasks
            .iter()
            .filter(|(_, s)| **s == Local::Running)
            .map(|(arn, _)| arn)
            .collect();
        arns.sort();
        let usage: Vec<flotilla_types::acs::TaskUsage> = arns
            .into_iter()
            .map(|arn| flotilla_types::acs::TaskUsage {
                task_arn: arn.clone(),
                cpu_units_used: per_task / 100.0 * 128.0,
                memory_mib_used: 64.0,
                network_rx_bytes: 0,
                network_tx_bytes: 0,
                storage_read_bytes: 0,
                storage_write_bytes: 0,
            })
            .collect();
        world
            .ecs
            .record_task_stats(&agent, &usage)
            .await
            .expect("usage recorded");
    }
}

async fn autoscaling(world: &World, operation: &str, body: Value) -> Value {
    use flotilla_aws::application_autoscaling::ApplicationAutoscalingRequest;
    let bytes = serde_json::to_vec(&body).expect("json");
    let request = ApplicationAutoscalingRequest::decode(operation, &bytes)
        .expect("known operation")
        .expect("decodes");
    let response = world
        .ecs
        .handle_autoscaling(request)
        .await
        .unwrap_or_else(|error| panic!("{operation} failed: {error}"));
    serde_json::to_value(response).expect("serializes")
}

/// Target tracking end to end in virtual time: agents' usage reports, the
/// minute's AWS/ECS CPUUtilization, the policy's alarms, the decision, and
/// UpdateService's desired count, checked against a table.
#[tokio::test]
async fn target_tracking_scales_a_service_in_virtual_time() {
    let mut world = World::new(11).await;
    for zone in ["a", "b", "c"] {
        world.add_host(4096, 8192, zone).await;
    }
    world.definition("web", "sim/app:v1", false).await;
    world
        .ok(
            "CreateService",
            json!({"cluster": CLUSTER, "serviceName": "web", "taskDefinition": "web", "desiredCount": 2}),
        )
        .await;
    world.settle(4).await;
    let resource = format!("service/{CLUSTER}/web");
    let dimension = "ecs:service:DesiredCount";
    autoscaling(
        &world,
        "RegisterScalableTarget",
        json!({
        "ServiceNamespace": "ecs", "ResourceId": resource, "ScalableDimension": dimension,
        "MinCapacity": 1, "MaxCapacity": 6}),
    )
    .await;
    autoscaling(&world, "PutScalingPolicy", json!({
        "ServiceNamespace": "ecs", "ResourceId": resource, "ScalableDimension": dimension,
        "PolicyName": "cpu50", "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": 50.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
            "ScaleOutCooldown": 60, "ScaleInCooldown": 300}}))
    .await;
    let mut changes: Vec<(u64, i64, i64)> = Vec::new();
    let mut desired = 2;
    for minute in 0..60 {
        // Samples through the minute, then the minute's pass just after it.
        report_usage(&world, scripted_load(minute)).await;
        world.settle(59).await;
        report_usage(&world, scripted_load(minute)).await;
        world.advance(1_000);
        let now = world.ecs.metrics_now_ms();
        world.ecs.autoscaling_pass(now).await.expect("pass");
        let service = world.service("web").await;
        let now_desired = service["desiredCount"].as_i64().expect("desired");
        assert!(
            (1..=6).contains(&now_desired),
            "minute {minute}: {now_desired}"
        );
        if now_desired != desired {
            changes.push((minute, desired, now_desired));
            desired = now_desired;
        }
    }
    assert_eq!(
        changes,
        vec![
            // A minute's datum lands in the minute still open at its pass,
            // so alarms see it a pass later. 360 on 2 tasks is 100% each
            // from minute 5: AlarmHigh has 3 points over 50 at minute 8,
            // ceil(2 x 100 / 50) = 4; a minute later (the 60 s cooldown
            // over) 4 at 90% asks for ceil(4 x 90 / 50) = 8, held at 6.
            (8, 2, 4),
            (9, 4, 6),
            // 40 on 6 tasks is 6.7% from minute 30: AlarmLow has 15 points
            // under 45 at minute 45, ceil(6 x 6.7 / 50) = 1.
            (45, 6, 1),
        ]
    );
    let activities = autoscaling(
        &world,
        "DescribeScalingActivities",
        json!({
        "ServiceNamespace": "ecs", "ResourceId": resource}),
    )
    .await;
    let activities = activities["ScalingActivities"]
        .as_array()
        .expect("activities")
        .clone();
    assert_eq!(activities.len(), 3, "{activities:?}");
    assert!(
        activities.iter().all(|a| a["StatusCode"] == "Successful"),
        "{activities:?}"
    );
    let service = world.service("web").await;
    assert!(
        messages(&service).iter().any(|m| m.contains("has started")),
        "{service}"
    );
}

#[path = "service_sim/task_sets.rs"]
mod task_sets;
/// A listener rule and the (target group, weight) pairs it was given.
type RuleWeights = (String, Vec<(String, i32)>);

/// Target groups and listener rules as the scheduler sees them through
/// `TargetGroups`: every target healthy unless its group is sick, and
/// every weight a rule was given kept in order.
#[derive(Default)]
struct FakeGroups {
    rules: Mutex<HashMap<String, Vec<(String, i32)>>>,
    sick: Mutex<std::collections::HashSet<String>>,
    /// (rule, weights) in the order they were set.
    shifts: Mutex<Vec<RuleWeights>>,
}

use flotilla_control::services::target_groups::{
    BoxFuture, ListenerRuleInfo, Target, TargetGroupInfo, TargetGroups, TargetState, TargetType,
};

impl TargetGroups for FakeGroups {
    fn target_group(&self, _arn: &str) -> Result<Option<TargetGroupInfo>, ApiError> {
        Ok(Some(TargetGroupInfo {
            target_type: TargetType::Instance,
            has_load_balancer: true,
            deregistration_delay_ms: 0,
        }))
    }

    fn register<'a>(&'a self, _: &'a str, _: Vec<Target>) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async { Ok(()) })
    }

    fn deregister<'a>(
        &'a self,
        _: &'a str,
        _: Vec<Target>,
        _: u64,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async { Ok(()) })
    }

    fn health(&self, arn: &str, _: &Target, _: u64) -> TargetState {
        if self.sick.lock().expect("lock").contains(arn) {
            TargetState::Unhealthy {
                description: "Health checks failed with these codes: [500]".to_owned(),
            }
        } else {
            TargetState::Healthy
        }
    }

    fn target_group_load_balancers(&self, _arn: &str) -> Result<Vec<String>, ApiError> {
        Ok(vec!["lb/front".to_owned()])
    }

    fn listener_rule(&self, arn: &str) -> Result<Option<ListenerRuleInfo>, ApiError> {
        Ok(self
            .rules
            .lock()
            .expect("lock")
            .get(arn)
            .map(|forward| ListenerRuleInfo {
                load_balancer_arn: "lb/front".to_owned(),
                forward: forward.clone(),
            }))
    }

    fn set_rule_weights<'a>(
        &'a self,
        arn: &'a str,
        weights: Vec<(String, i32)>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        self.rules
            .lock()
            .expect("lock")
            .insert(arn.to_owned(), weights.clone());
        self.shifts
            .lock()
            .expect("lock")
            .push((arn.to_owned(), weights));
        Box::pin(async { Ok(()) })
    }
}

const MAIN_GROUP: &str = "tg/main";
const ALTERNATE_GROUP: &str = "tg/alternate";
const PRODUCTION_RULE: &str = "rule/production";
const TEST_RULE: &str = "rule/test";

impl FakeGroups {
    fn weight(&self, rule: &str, group: &str) -> i32 {
        self.rules.lock().expect("lock")[rule]
            .iter()
            .find(|(g, _)| g == group)
            .map_or(0, |(_, w)| *w)
    }
}

/// A world whose services reach a blue/green load balancer, with a
/// deployment minute of five steps, and a web service of two host-mode
/// tasks on it, steady on v1.
async fn blue_green_world(seed: u64, strategy: Value) -> (World, Arc<FakeGroups>) {
    let mut world = World::new(seed).await;
    world.settings.deployment_minute_ms = 5 * STEP_MS;
    world.restart();
    let groups = Arc::new(FakeGroups::default());
    for rule in [PRODUCTION_RULE, TEST_RULE] {
        groups.rules.lock().expect("lock").insert(
            rule.to_owned(),
            vec![
                (MAIN_GROUP.to_owned(), 100),
                (ALTERNATE_GROUP.to_owned(), 0),
            ],
        );
    }
    world.ecs.set_target_groups(groups.clone());
    // Host networking on one port: a host runs one task, so four hosts
    // hold blue and green at once.
    for zone in ["a", "b", "c", "d", "e"] {
        world.add_host(1024, 2048, zone).await;
    }
    world.revision("v1").await;
    world
        .ok(
            "CreateService",
            json!({"cluster": CLUSTER, "serviceName": "web", "taskDefinition": "web", "desiredCount": 2,
                   "healthCheckGracePeriodSeconds": 0,
                   "loadBalancers": [{"targetGroupArn": MAIN_GROUP, "containerName": "app", "containerPort": 8080,
                       "advancedConfiguration": {"alternateTargetGroupArn": ALTERNATE_GROUP,
                           "productionListenerRule": PRODUCTION_RULE, "testListenerRule": TEST_RULE}}],
                   "deploymentConfiguration": strategy}),
        )
        .await;
    world.settle(6).await;
    assert!(steady(&world.service("web").await));
    (world, groups)
}

impl World {
    async fn revision(&self, image: &str) -> String {
        let response = self
            .ok(
                "RegisterTaskDefinition",
                json!({"family": "web", "networkMode": "host", "containerDefinitions": [{
                    "name": "app", "image": image, "memory": 256, "cpu": 128, "essential": true,
                    "portMappings": [{"containerPort": 8080, "hostPort": 8080}]}]}),
            )
            .await;
        response["taskDefinition"]["taskDefinitionArn"]
            .as_str()
            .expect("arn")
            .to_owned()
    }

    async fn current_deployment(&self, name: &str) -> Value {
        let arn = self.service(name).await["currentServiceDeployment"].clone();
        let described = self
            .ok(
                "DescribeServiceDeployments",
                json!({"serviceDeploymentArns": [arn]}),
            )
            .await;
        described["serviceDeployments"][0].clone()
    }
}

#[tokio::test]
async fn a_linear_deployment_shifts_in_steps_holds_blue_and_resumes_after_a_restart() {
    let strategy = json!({"strategy": "LINEAR", "bakeTimeInMinutes": 0,
        "linearConfiguration": {"stepPercent": 50.0, "stepBakeTimeInMinutes": 1}});
    let (mut world, groups) = blue_green_world(31, strategy).await;
    let v1 = world.revision("v1").await;
    let v1 = v1
        .rsplit_once(':')
        .map(|(family, _)| format!("{family}:1"))
        .unwrap_or(v1);
    let v2 = world.revision("v2").await;
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "web", "taskDefinition": v2}),
        )
        .await;
    let mut shares: Vec<i32> = Vec::new();
    let mut stages: Vec<String> = Vec::new();
    let mut restarted = false;
    for _ in 0..40 {
        world.agents_act().await;
        world.advance(STEP_MS);
        world.pass().await;
        let share = groups.weight(PRODUCTION_RULE, ALTERNATE_GROUP);
        if shares.last() != Some(&share) {
            shares.push(share);
        }
        let census = world.census("web").await;
        // Blue stays whole until all traffic is on green.
        if share < 100 {
            assert_eq!(census.occupying.get(&v1).copied(), Some(2), "{census:?}");
        }
        let deployment = world.current_deployment("web").await;
        if let Some(stage) = deployment["lifecycleStage"].as_str() {
            if stages.last().map(String::as_str) != Some(stage) {
                stages.push(stage.to_owned());
            }
        }
        // The control plane dies in the middle of the shift and comes back
        // with nothing but the store: it carries on from the stored share.
        if share == 50 && !restarted {
            world.restart();
            world.ecs.set_target_groups(groups.clone());
            restarted = true;
        }
        if steady(&world.service("web").await) && stages.last().is_some_and(|s| s == "CLEAN_UP") {
            break;
        }
    }
    assert!(restarted);
    assert_eq!(shares, vec![0, 50, 100], "{shares:?}");
    assert_eq!(
        stages,
        vec!["SCALE_UP", "PRODUCTION_TRAFFIC_SHIFT", "CLEAN_UP"],
        "{stages:?}"
    );
    let service = world.service("web").await;
    assert!(steady(&service), "{service}");
    assert_eq!(service["taskDefinition"], json!(v2));
    // The alternate group is production now: test traffic follows it.
    assert_eq!(groups.weight(PRODUCTION_RULE, ALTERNATE_GROUP), 100);
    assert_eq!(groups.weight(TEST_RULE, ALTERNATE_GROUP), 100);
    let deployment = world.current_deployment("web").await;
    assert_eq!(deployment["status"], "SUCCESSFUL", "{deployment}");
}

#[tokio::test]
async fn a_green_that_fails_its_health_checks_never_takes_production_traffic_and_rolls_back() {
    let strategy = json!({"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 0,
        "deploymentCircuitBreaker": {"enable": true, "rollback": true, "resetOnHealthyTask": false}});
    let (mut world, groups) = blue_green_world(32, strategy).await;
    let v1 = world.service("web").await["taskDefinition"].clone();
    groups
        .sick
        .lock()
        .expect("lock")
        .insert(ALTERNATE_GROUP.to_owned());
    let v2 = world.revision("v2").await;
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "web", "taskDefinition": v2}),
        )
        .await;
    world.settle(40).await;
    let service = world.service("web").await;
    assert!(steady(&service), "{service}");
    assert_eq!(service["taskDefinition"], v1);
    let shifts = groups.shifts.lock().expect("lock").clone();
    assert!(
        shifts.iter().all(|(rule, weights)| rule != PRODUCTION_RULE
            || weights
                .iter()
                .all(|(group, weight)| group != ALTERNATE_GROUP || *weight == 0)),
        "{shifts:?}"
    );
    assert_eq!(groups.weight(PRODUCTION_RULE, MAIN_GROUP), 100);
    let all = messages(&service);
    assert!(
        all.iter().any(|m| m.contains("rolling back to deployment")),
        "{all:?}"
    );
}

#[tokio::test]
async fn stop_service_deployment_rolls_a_held_deployment_back_at_once() {
    let strategy = json!({"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 0,
        "lifecycleHooks": [{"targetType": "PAUSE", "lifecycleStages": ["POST_PRODUCTION_TRAFFIC_SHIFT"]}]});
    let (mut world, groups) = blue_green_world(33, strategy).await;
    let v1 = world.service("web").await["taskDefinition"].clone();
    let v2 = world.revision("v2").await;
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "web", "taskDefinition": v2}),
        )
        .await;
    world.settle(10).await;
    // Held after the production shift: all traffic on green, blue still up.
    let deployment = world.current_deployment("web").await;
    assert_eq!(
        deployment["lifecycleStage"], "POST_PRODUCTION_TRAFFIC_SHIFT",
        "{deployment}"
    );
    assert_eq!(
        deployment["lifecycleHookDetails"][0]["status"],
        "AWAITING_ACTION"
    );
    assert_eq!(groups.weight(PRODUCTION_RULE, ALTERNATE_GROUP), 100);
    let arn = deployment["serviceDeploymentArn"].clone();
    world
        .ok(
            "StopServiceDeployment",
            json!({"serviceDeploymentArn": arn, "stopType": "ROLLBACK"}),
        )
        .await;
    // The next pass sends production traffic back to blue.
    world.pass().await;
    assert_eq!(groups.weight(PRODUCTION_RULE, MAIN_GROUP), 100);
    assert_eq!(groups.weight(TEST_RULE, MAIN_GROUP), 100);
    world.settle(10).await;
    let service = world.service("web").await;
    assert!(steady(&service), "{service}");
    assert_eq!(service["taskDefinition"], v1);
    let stopped = world
        .call(
            "StopServiceDeployment",
            json!({"serviceDeploymentArn": arn}),
        )
        .await
        .expect_err("not in progress");
    assert_eq!(stopped.code, "ConflictException", "{stopped:?}");
}

#[tokio::test]
async fn stop_service_deployment_rolls_a_rolling_deployment_back_to_a_fresh_copy() {
    let mut world = World::new(34).await;
    for zone in ["a", "b"] {
        world.add_host(1024, 2048, zone).await;
    }
    let v1 = world.definition("roll", "app:v1", false).await;
    world
        .ok(
            "CreateService",
            json!({"cluster": CLUSTER, "serviceName": "roll", "taskDefinition": v1, "desiredCount": 2,
                   "deploymentConfiguration": {"minimumHealthyPercent": 0, "maximumPercent": 100}}),
        )
        .await;
    world.settle(4).await;
    assert!(steady(&world.service("roll").await));
    // v1's tasks go at once (minimum 0%), v2's crash: nothing of v1 is left.
    let v2 = world.definition("roll", "sim/exit:v2", false).await;
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "roll", "taskDefinition": v2}),
        )
        .await;
    world.settle(3).await;
    let arn = world.current_deployment("roll").await["serviceDeploymentArn"].clone();
    world
        .ok(
            "StopServiceDeployment",
            json!({"serviceDeploymentArn": arn}),
        )
        .await;
    world.settle(10).await;
    let service = world.service("roll").await;
    assert!(steady(&service), "{service}");
    assert_eq!(service["taskDefinition"], json!(v1));
    let stopped = world
        .ok(
            "DescribeServiceDeployments",
            json!({"serviceDeploymentArns": [arn]}),
        )
        .await;
    assert_eq!(
        stopped["serviceDeployments"][0]["status"], "ROLLBACK_SUCCESSFUL",
        "{stopped}"
    );
}
