//! The task engine end to end: payloads in, a fake runtime underneath, and a
//! recording sink where the control plane would be.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_agent::clock::{Clock, SequentialIds, SystemClock};
use flotilla_agent::engine::status::TaskStatus;
use flotilla_agent::engine::{Engine, EngineParts, EngineSettings};
use flotilla_agent::pause::PauseImage;
use flotilla_agent::persist::Persistence;
use flotilla_agent::reporter::{Reporter, SinkFuture, StateChangeSink};
use flotilla_runtime::fake::FakeCall;
use flotilla_runtime::{ContainerRuntime, FakeRuntime, NetworkMode};
use flotilla_types::acs::{conventions, FromAgent, TaskPayload};
use flotilla_types::ecs::SubmitTaskStateChangeRequest;
use serde_json::json;
use tokio::sync::{mpsc, Notify};

const WAIT: Duration = Duration::from_secs(10);
const CLUSTER_ARN: &str = "arn:aws:ecs:us-east-1:000000000000:cluster/default";

/// Stands in for the control plane: keeps every state change.
#[derive(Default)]
struct RecordingSink {
    changes: Mutex<Vec<SubmitTaskStateChangeRequest>>,
    arrived: Notify,
}

impl StateChangeSink for RecordingSink {
    fn submit_task_state_change<'a>(
        &'a self,
        change: &'a SubmitTaskStateChangeRequest,
    ) -> SinkFuture<'a> {
        Box::pin(async move {
            self.changes.lock().unwrap().push(change.clone());
            self.arrived.notify_waiters();
            Ok(())
        })
    }
}

impl RecordingSink {
    fn changes_for(&self, task_arn: &str) -> Vec<SubmitTaskStateChangeRequest> {
        self.changes
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.task.as_deref() == Some(task_arn))
            .cloned()
            .collect()
    }

    /// Waits for a change of `task_arn` with `status`.
    async fn wait_for(&self, task_arn: &str, status: &str) -> SubmitTaskStateChangeRequest {
        let found = async {
            loop {
                let arrived = self.arrived.notified();
                if let Some(change) = self
                    .changes_for(task_arn)
                    .into_iter()
                    .find(|c| c.status.as_deref() == Some(status))
                {
                    return change;
                }
                arrived.await;
            }
        };
        match tokio::time::timeout(WAIT, found).await {
            Ok(change) => change,
            Err(_) => panic!(
                "no {status} change for {task_arn}; got {:#?}",
                self.changes_for(task_arn)
            ),
        }
    }
}

struct Harness {
    engine: Arc<Engine>,
    fake: Arc<FakeRuntime>,
    sink: Arc<RecordingSink>,
    health: mpsc::Receiver<FromAgent>,
    dir: PathBuf,
}

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "flotilla-agent-engine-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn new_fake() -> Arc<FakeRuntime> {
    let clock = SystemClock;
    Arc::new(FakeRuntime::new(move || clock.now_ms()).with_exit_delay_ms(100))
}

async fn start(dir: &Path, fake: Arc<FakeRuntime>) -> Harness {
    start_with(dir, fake, Duration::from_secs(3600)).await
}

async fn start_with(dir: &Path, fake: Arc<FakeRuntime>, orphan_grace: Duration) -> Harness {
    let sink = Arc::new(RecordingSink::default());
    let persistence = Persistence {
        durable: false,
        task_files: true,
    };
    let reporter = Reporter::start(
        Arc::clone(&sink) as Arc<dyn StateChangeSink>,
        dir.join("outbox"),
        persistence.clone(),
        flotilla_agent::clock::Jitter::seeded(1),
    )
    .unwrap();
    let (health_sender, health) = mpsc::channel(64);
    let engine = Engine::start(EngineParts {
        runtime: Arc::clone(&fake) as Arc<dyn ContainerRuntime>,
        reporter,
        clock: Arc::new(SystemClock),
        ids: Arc::new(SequentialIds::default()),
        persistence,
        data_dir: dir.to_path_buf(),
        instance_id: "i-0000000000000000a".to_owned(),
        cluster_label: "default".to_owned(),
        settings: EngineSettings {
            poll_interval: Duration::from_millis(20),
            task_cleanup_wait: Duration::from_secs(3600),
            orphan_grace,
            metadata_port: Some(51679),
            ..EngineSettings::default()
        },
        health: health_sender,
        metadata: None,
        pause_image: Arc::new(PauseImage::new("flotilla/pause:latest".to_owned(), None)),
    })
    .await
    .unwrap();
    Harness {
        engine,
        fake,
        sink,
        health,
        dir: dir.to_path_buf(),
    }
}

fn payload(task_id: &str, desired: &str, task_definition: serde_json::Value) -> TaskPayload {
    serde_json::from_value(json!({
        "taskArn": format!("arn:aws:ecs:us-east-1:000000000000:task/default/{task_id}"),
        "clusterArn": CLUSTER_ARN,
        "desiredStatus": desired,
        "version": 1,
        "taskDefinition": task_definition,
    }))
    .unwrap()
}

fn arn(task_id: &str) -> String {
    format!("arn:aws:ecs:us-east-1:000000000000:task/default/{task_id}")
}

fn container<'a>(
    change: &'a SubmitTaskStateChangeRequest,
    name: &str,
) -> &'a flotilla_types::ecs::ContainerStateChange {
    change
        .containers
        .iter()
        .flatten()
        .find(|c| c.container_name.as_deref() == Some(name))
        .unwrap()
}

/// The last state reported for a container across all of a task's changes.
fn last_reported(
    changes: &[SubmitTaskStateChangeRequest],
    name: &str,
) -> flotilla_types::ecs::ContainerStateChange {
    changes
        .iter()
        .flat_map(|change| change.containers.iter().flatten())
        .rfind(|c| c.container_name.as_deref() == Some(name))
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn an_essential_exit_stops_the_task_with_its_reason_and_exit_codes() {
    let dir = data_dir("essential");
    let h = start(&dir, new_fake()).await;
    let task = payload(
        "t1",
        "RUNNING",
        json!({"family": "job", "revision": 1, "containerDefinitions": [
            {"name": "app", "image": "sim/exit:3", "essential": true},
            {"name": "sidecar", "image": "nginx", "essential": false, "portMappings": [{"containerPort": 80}]}
        ]}),
    );
    h.engine.apply_payload(vec![task], true).await;

    let running = h.sink.wait_for(&arn("t1"), "RUNNING").await;
    assert!(running.pull_started_at.is_some() && running.pull_stopped_at.is_some());
    let sidecar = container(&running, "sidecar");
    assert_eq!(sidecar.status.as_deref(), Some("RUNNING"));
    assert!(sidecar.runtime_id.is_some());
    let binding = &sidecar.network_bindings.as_ref().unwrap()[0];
    assert_eq!(binding.container_port, Some(80));
    assert!(
        binding.host_port.unwrap() >= 49153,
        "a dynamic host port: {binding:?}"
    );

    let stopped = h.sink.wait_for(&arn("t1"), "STOPPED").await;
    let reason = stopped.reason.clone().unwrap();
    assert!(
        reason.starts_with(conventions::ESSENTIAL_EXITED_REASON),
        "{reason}"
    );
    assert!(reason.contains("app"), "{reason}");
    let changes = h.sink.changes_for(&arn("t1"));
    assert_eq!(last_reported(&changes, "app").exit_code, Some(3));
    assert_eq!(
        last_reported(&changes, "sidecar").exit_code,
        Some(143),
        "the sidecar was stopped with SIGTERM"
    );
    assert!(stopped.execution_stopped_at.is_some());
    assert!(
        h.engine
            .wait_for_status(&arn("t1"), TaskStatus::Stopped, WAIT)
            .await
    );
    let _ = std::fs::remove_dir_all(&h.dir);
}

#[tokio::test]
async fn a_failed_pull_stops_the_task_as_failed_to_start() {
    let dir = data_dir("pull");
    let h = start(&dir, new_fake()).await;
    let task = payload(
        "t2",
        "RUNNING",
        json!({"family": "web", "revision": 1, "containerDefinitions": [
            {"name": "web", "image": "sim/fail-pull:latest"},
            {"name": "other", "image": "nginx"}
        ]}),
    );
    h.engine.apply_payload(vec![task], true).await;
    let stopped = h.sink.wait_for(&arn("t2"), "STOPPED").await;
    let reason = stopped.reason.unwrap();
    assert!(reason.starts_with("CannotPullContainerError: "), "{reason}");
    assert!(conventions::FAILED_TO_START_REASONS
        .iter()
        .any(|prefix| reason.starts_with(prefix)));
    assert!(
        h.sink
            .changes_for(&arn("t2"))
            .iter()
            .all(|c| c.status.as_deref() != Some("RUNNING")),
        "never RUNNING"
    );
    // Nothing was created for a task that could not pull.
    assert!(!h
        .fake
        .calls()
        .iter()
        .any(|call| matches!(call, FakeCall::Create(_))));
    let _ = std::fs::remove_dir_all(&h.dir);
}

#[tokio::test]
async fn containers_start_in_dependency_order_and_stop_in_reverse() {
    let dir = data_dir("order");
    let h = start(&dir, new_fake()).await;
    let definition = json!({"family": "shop", "revision": 4, "containerDefinitions": [
        {"name": "web", "image": "nginx", "dependsOn": [{"containerName": "app", "condition": "START"}]},
        {"name": "app", "image": "app", "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}, {"containerName": "migrate", "condition": "SUCCESS"}]},
        {"name": "migrate", "image": "sim/exit:0", "essential": false},
        {"name": "db", "image": "postgres", "healthCheck": {"command": ["CMD-SHELL", "pg_isready"]}}
    ]});
    h.engine
        .apply_payload(vec![payload("t3", "RUNNING", definition.clone())], true)
        .await;
    h.sink.wait_for(&arn("t3"), "RUNNING").await;
    assert_eq!(
        last_reported(&h.sink.changes_for(&arn("t3")), "migrate").exit_code,
        Some(0)
    );
    h.fake.clear_calls();

    let mut stop = payload("t3", "STOPPED", definition);
    stop.version = 2;
    stop.stopped_reason = Some("Scaling activity initiated by deployment".to_owned());
    h.engine.apply_payload(vec![stop], false).await;
    let stopped = h.sink.wait_for(&arn("t3"), "STOPPED").await;
    assert_eq!(
        stopped.reason.as_deref(),
        Some("Scaling activity initiated by deployment")
    );

    let calls = h.fake.calls();
    let name_of = |id: &str| {
        h.fake
            .container_spec(id)
            .map(|spec| spec.name)
            .unwrap_or_default()
    };
    let stops: Vec<String> = calls
        .iter()
        .filter_map(|call| match call {
            FakeCall::Stop { id, .. } => Some(name_of(id)),
            _ => None,
        })
        .collect();
    assert_eq!(
        stops,
        ["ecs-shop-4-web-t3", "ecs-shop-4-app-t3", "ecs-shop-4-db-t3"]
    );
    let _ = std::fs::remove_dir_all(&h.dir);
}

#[tokio::test]
async fn start_order_follows_dependencies() {
    let dir = data_dir("start-order");
    let h = start(&dir, new_fake()).await;
    h.engine
        .apply_payload(
            vec![payload("t4", "RUNNING", json!({"family": "shop", "revision": 1, "containerDefinitions": [
                {"name": "web", "image": "nginx", "links": ["app"]},
                {"name": "app", "image": "app", "dependsOn": [{"containerName": "db", "condition": "START"}]},
                {"name": "db", "image": "postgres"}
            ]}))],
            true,
        )
        .await;
    h.sink.wait_for(&arn("t4"), "RUNNING").await;
    let starts: Vec<String> = h
        .fake
        .calls()
        .iter()
        .filter_map(|call| match call {
            FakeCall::Start { id } => h.fake.container_spec(id).map(|spec| spec.name),
            _ => None,
        })
        .collect();
    assert_eq!(
        starts,
        ["ecs-shop-1-db-t4", "ecs-shop-1-app-t4", "ecs-shop-1-web-t4"]
    );
    let _ = std::fs::remove_dir_all(&h.dir);
}

#[tokio::test]
async fn awsvpc_tasks_run_behind_a_pause_container_on_the_instance_network() {
    let dir = data_dir("awsvpc");
    let h = start(&dir, new_fake()).await;
    let mut task = payload(
        "t5",
        "RUNNING",
        json!({"family": "api", "revision": 1, "networkMode": "awsvpc",
        "containerDefinitions": [{"name": "api", "image": "nginx", "portMappings": [{"containerPort": 80}]}]}),
    );
    task.network_interface = Some(serde_json::from_value(json!({
        "attachmentId": "eni-1", "privateIpv4Address": "10.201.3.7", "subnetCidr": "10.201.3.0/24",
        "gatewayIpv4Address": "10.201.3.1", "macAddress": "02:00:00:00:00:01"
    })).unwrap());
    h.engine.apply_payload(vec![task], true).await;
    let running = h.sink.wait_for(&arn("t5"), "RUNNING").await;
    assert!(h
        .fake
        .networks()
        .contains(&"flotilla-awsvpc-i-0000000000000000a".to_owned()));
    let specs: Vec<_> = h
        .fake
        .calls()
        .into_iter()
        .filter_map(|call| match call {
            FakeCall::Create(spec) => Some(*spec),
            _ => None,
        })
        .collect();
    assert_eq!(specs[0].name, "ecs-api-1-internalecspause-t5");
    assert_eq!(
        specs[0].network_mode,
        Some(NetworkMode::Network {
            name: "flotilla-awsvpc-i-0000000000000000a".to_owned(),
            ipv4_address: Some("10.201.3.7".to_owned())
        })
    );
    assert!(matches!(
        &specs[1].network_mode,
        Some(NetworkMode::Container { .. })
    ));
    assert_eq!(
        specs[1]
            .environment
            .get("ECS_CONTAINER_METADATA_URI_V4")
            .map(|u| u.starts_with("http://10.201.3.1:51679/v4/")),
        Some(true)
    );
    assert_eq!(
        container(&running, "api")
            .network_bindings
            .as_ref()
            .map(Vec::len),
        Some(0)
    );
    let _ = std::fs::remove_dir_all(&h.dir);
}

#[tokio::test]
async fn a_restarted_agent_re_adopts_running_containers_and_reports_what_changed() {
    let dir = data_dir("restart");
    let fake = new_fake();
    let first = start(&dir, Arc::clone(&fake)).await;
    first
        .engine
        .apply_payload(
            vec![
                payload("t6", "RUNNING", json!({"family": "a", "revision": 1, "containerDefinitions": [{"name": "keep", "image": "nginx"}]})),
                payload("t7", "RUNNING", json!({"family": "b", "revision": 1, "containerDefinitions": [{"name": "crash", "image": "nginx"}]})),
            ],
            true,
        )
        .await;
    first.sink.wait_for(&arn("t6"), "RUNNING").await;
    first.sink.wait_for(&arn("t7"), "RUNNING").await;
    first.engine.detach_all().await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    // While the agent is away, one container crashes.
    let crashed = fake
        .list_containers(&[(flotilla_runtime::labels::CONTAINER_NAME, "crash")])
        .await
        .unwrap();
    assert!(fake.exit_container(&crashed[0].id, 1, None));
    fake.clear_calls();

    let second = start(&dir, Arc::clone(&fake)).await;
    let stopped = second.sink.wait_for(&arn("t7"), "STOPPED").await;
    assert_eq!(container(&stopped, "crash").exit_code, Some(1));
    assert!(
        second
            .engine
            .wait_for_status(&arn("t6"), TaskStatus::Running, WAIT)
            .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let calls = fake.calls();
    assert!(
        !calls.iter().any(|call| matches!(
            call,
            FakeCall::Create(_) | FakeCall::Start { .. } | FakeCall::Pull { .. }
        )),
        "nothing restarted: {calls:?}"
    );
    assert!(
        second.sink.changes_for(&arn("t6")).is_empty(),
        "t6 was already reported RUNNING"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn health_changes_go_to_the_control_channel_and_unknown_stops_are_answered() {
    let dir = data_dir("health");
    let mut h = start(&dir, new_fake()).await;
    h.engine
        .apply_payload(
            vec![
                payload("t8", "RUNNING", json!({"family": "h", "revision": 1, "containerDefinitions": [
                    {"name": "sick", "image": "sim/unhealthy", "healthCheck": {"command": ["CMD", "true"]}}
                ]})),
                payload("t9", "STOPPED", json!({"family": "h", "revision": 1, "containerDefinitions": [{"name": "x", "image": "y"}]})),
            ],
            true,
        )
        .await;
    let message = tokio::time::timeout(WAIT, h.health.recv())
        .await
        .unwrap()
        .unwrap();
    match message {
        FromAgent::TaskHealth {
            task_arn,
            containers,
        } => {
            assert_eq!(task_arn, arn("t8"));
            assert_eq!(containers[0].health_status, "UNHEALTHY");
        }
        other => panic!("unexpected {other:?}"),
    }
    let stopped = h.sink.wait_for(&arn("t9"), "STOPPED").await;
    assert_eq!(container(&stopped, "x").status.as_deref(), Some("STOPPED"));
    let _ = std::fs::remove_dir_all(&h.dir);
}

#[tokio::test]
async fn a_lone_container_that_exits_stops_its_task_with_the_essential_reason() {
    let dir = data_dir("lone");
    let h = start(&dir, new_fake()).await;
    let task = payload(
        "t10",
        "RUNNING",
        json!({"family": "crash", "revision": 1, "containerDefinitions": [
            {"name": "app", "image": "sim/exit:2"}
        ]}),
    );
    h.engine.apply_payload(vec![task], true).await;
    let stopped = h.sink.wait_for(&arn("t10"), "STOPPED").await;
    assert_eq!(
        stopped.reason.as_deref(),
        Some("Essential container in task exited: app")
    );
    assert_eq!(container(&stopped, "app").exit_code, Some(2));
    let _ = std::fs::remove_dir_all(&h.dir);
}

#[tokio::test]
async fn containers_of_unknown_tasks_are_collected_after_the_first_full_state() {
    let dir = data_dir("orphans");
    let fake = new_fake();
    let labels = std::collections::BTreeMap::from([
        (
            flotilla_runtime::labels::CLUSTER.to_owned(),
            "default".to_owned(),
        ),
        (flotilla_runtime::labels::TASK_ARN.to_owned(), arn("gone")),
        (
            flotilla_runtime::labels::CONTAINER_NAME.to_owned(),
            "app".to_owned(),
        ),
        (
            "com.flotilla.instance-id".to_owned(),
            "i-0000000000000000a".to_owned(),
        ),
    ]);
    let mut foreign_labels = labels.clone();
    foreign_labels.insert(
        "com.flotilla.instance-id".to_owned(),
        "i-someone-else".to_owned(),
    );
    fake.pull_image("nginx", flotilla_runtime::PullPolicy::Always, None)
        .await
        .unwrap();
    let spec = |name: &str, labels| flotilla_runtime::ContainerSpec {
        name: name.into(),
        image: "nginx".into(),
        labels,
        ..Default::default()
    };
    let ours = fake.create_container(&spec("stray", labels)).await.unwrap();
    fake.start_container(&ours).await.unwrap();
    let theirs = fake
        .create_container(&spec("foreign", foreign_labels))
        .await
        .unwrap();

    let h = start_with(&dir, Arc::clone(&fake), Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        fake.inspect_container(&ours).await.is_ok(),
        "nothing is collected before the control plane has spoken"
    );
    h.engine.apply_payload(Vec::new(), true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        fake.inspect_container(&ours).await.is_err(),
        "our stray was removed"
    );
    assert!(
        fake.inspect_container(&theirs).await.is_ok(),
        "another instance's container is left alone"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Refuses every change until told otherwise.
#[derive(Default)]
struct FlakySink {
    down: std::sync::atomic::AtomicBool,
    delivered: Mutex<Vec<String>>,
}

impl StateChangeSink for FlakySink {
    fn submit_task_state_change<'a>(
        &'a self,
        change: &'a SubmitTaskStateChangeRequest,
    ) -> SinkFuture<'a> {
        Box::pin(async move {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(flotilla_agent::reporter::SubmitError::Retryable(
                    "control plane down".into(),
                ));
            }
            self.delivered
                .lock()
                .unwrap()
                .push(change.task.clone().unwrap_or_default());
            Ok(())
        })
    }
}

#[tokio::test]
async fn state_changes_survive_a_restart_in_the_outbox_and_go_out_in_order() {
    let dir = data_dir("outbox");
    let persistence = Persistence::DURABLE;
    let down = Arc::new(FlakySink::default());
    down.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let reporter = Reporter::start(
        Arc::clone(&down) as Arc<dyn StateChangeSink>,
        dir.join("outbox"),
        persistence.clone(),
        flotilla_agent::clock::Jitter::seeded(7),
    )
    .unwrap();
    for task in ["a", "b", "c"] {
        let change = SubmitTaskStateChangeRequest {
            task: Some(task.to_owned()),
            ..Default::default()
        };
        reporter.submit(change).await.unwrap();
    }
    assert!(!reporter.wait_idle(Duration::from_millis(300)).await);
    assert!(down.delivered.lock().unwrap().is_empty());

    // The agent restarts; the control plane is back.
    let up = Arc::new(FlakySink::default());
    let restarted = Reporter::start(
        Arc::clone(&up) as Arc<dyn StateChangeSink>,
        dir.join("outbox"),
        persistence,
        flotilla_agent::clock::Jitter::seeded(8),
    )
    .unwrap();
    restarted
        .submit(SubmitTaskStateChangeRequest {
            task: Some("d".to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(restarted.wait_idle(WAIT).await);
    assert_eq!(*up.delivered.lock().unwrap(), ["a", "b", "c", "d"]);
    assert!(
        flotilla_agent::persist::list_json_files(&dir.join("outbox"))
            .unwrap()
            .is_empty()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
