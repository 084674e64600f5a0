//! The task engine: one managed task (a tokio task) per ECS task, each the
//! only owner and writer of its task's record. See `README.md` beside this
//! crate for the pipeline and its vocabulary.
//!
//! *Architecture invariant:* the deciding parts are pure functions over the
//! record: [`plan::plan`] (desired vs known status → next step),
//! [`order`] (dependency ordering), [`spec`] (definition → runtime spec),
//! [`report::pending_report`] (record → state change). The managed task only
//! executes steps against the runtime and feeds results back.

pub mod host_ports;
pub mod managed;
pub mod order;
pub mod plan;
pub mod record;
pub mod report;
pub mod spec;
pub mod status;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_runtime::{labels, ContainerRuntime, ContainerState, RuntimeError};
use flotilla_types::acs::{ContainerHealth, FromAgent, RoleCredentials, RoleType, TaskPayload};
use tokio::sync::{mpsc, watch, Notify};

use crate::clock::{Clock, IdSource};
use crate::metadata::MetadataRegistry;
use crate::pause::PauseImage;
use crate::persist::{list_json_files, read_json, PersistError, Persistence};
use crate::reporter::Reporter;

use self::managed::{ManagedTask, TaskMessage};
use self::record::TaskRecord;
use self::status::{DesiredStatus, TaskStatus};

/// Tasks one instance holds at once (running or awaiting cleanup); payloads
/// beyond it are refused with a STOPPED report.
pub const TASKS_PER_INSTANCE_MAX: usize = 1024;
/// Messages waiting for one managed task.
pub const TASK_INBOX_MAX: usize = 16;
/// ARNs of tasks cleaned up recently, remembered so that a control plane
/// still listing them as STOPPED does not get a report for each payload.
pub const FORGOTTEN_TASKS_MAX: usize = 4096;

/// How the agent gets images, as ECS's `ECS_IMAGE_PULL_BEHAVIOR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PullBehavior {
    /// Pull; if the pull fails, use a local copy when there is one.
    #[default]
    Default,
    /// Pull; fail when the pull fails.
    Always,
    /// Pull only when there is no local copy.
    Once,
    /// Use a local copy when there is one (same as `Once` here).
    PreferCached,
}

impl std::str::FromStr for PullBehavior {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "default" => Ok(Self::Default),
            "always" => Ok(Self::Always),
            "once" => Ok(Self::Once),
            "prefer-cached" => Ok(Self::PreferCached),
            other => Err(format!(
                "unknown image pull behavior {other:?}: use default, always, once or prefer-cached"
            )),
        }
    }
}

/// Tunables of the engine.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// How often running containers are inspected for exits and health.
    pub poll_interval: Duration,
    pub pull_behavior: PullBehavior,
    /// How long a stopped task's containers are kept before removal (ECS's
    /// `ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION`, 3 h by default).
    pub task_cleanup_wait: Duration,
    /// How long containers of unknown tasks are left alone after the first
    /// full state from the control plane, before they are removed.
    pub orphan_grace: Duration,
    /// Port of the task metadata endpoint, when it runs.
    pub metadata_port: Option<u16>,
    /// Address containers on the default bridge reach the host at.
    pub bridge_gateway: String,
    /// Picks dynamic host ports from ECS's range. `None` leaves the choice to
    /// the runtime (the fake one already picks from that range).
    pub host_ports: Option<Arc<host_ports::HostPortPicker>>,
    /// Credentials for images in Flotilla's own registry.
    pub registry_credentials: Option<Arc<dyn crate::registry_auth::RegistryCredentials>>,
    /// Where containers' `secrets` are read from (`crate::secrets`).
    pub secret_source: Option<Arc<dyn crate::secrets::SecretSource>>,
    /// Where environment files stored as S3 objects are read from.
    pub environment_files: Option<Arc<dyn crate::env_files::ObjectSource>>,
    /// How often running tasks' usage is sampled and reported
    /// (`flotilla_types::acs::STATS_INTERVAL_MS` by default).
    pub stats_interval: Duration,
    /// Ships the lines of containers that log with awslogs; without it such
    /// containers cannot start.
    pub log_shipping: Option<crate::awslogs::LogShipping>,
    /// Credentials of the instance's tasks' roles, in memory only.
    pub credentials: Arc<crate::credentials::TaskCredentials>,
    /// The control plane's API as containers reach it, set as their
    /// `AWS_ENDPOINT_URL` so that unmodified SDKs call Flotilla.
    pub aws_endpoint_url: Option<String>,
    /// The region set as containers' `AWS_REGION` and `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            pull_behavior: PullBehavior::Default,
            task_cleanup_wait: Duration::from_secs(3 * 60 * 60),
            orphan_grace: Duration::from_secs(120),
            metadata_port: None,
            bridge_gateway: DEFAULT_BRIDGE_GATEWAY.to_owned(),
            host_ports: None,
            registry_credentials: None,
            secret_source: None,
            environment_files: None,
            stats_interval: Duration::from_millis(flotilla_types::acs::STATS_INTERVAL_MS),
            log_shipping: None,
            credentials: Arc::default(),
            aws_endpoint_url: None,
            region: None,
        }
    }
}

/// Docker's default bridge gateway.
pub const DEFAULT_BRIDGE_GATEWAY: &str = "172.17.0.1";

/// Everything managed tasks share.
pub struct EngineContext {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub reporter: Reporter,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
    pub persistence: Persistence,
    /// `DATA_DIR/tasks`.
    pub tasks_dir: PathBuf,
    pub instance_id: String,
    /// Value of the `com.flotilla.cluster` label on this instance's containers.
    pub cluster_label: String,
    pub settings: EngineSettings,
    /// Health changes for the control channel; dropped when full (the
    /// channel sends every task's health again on each connect).
    pub health: mpsc::Sender<FromAgent>,
    pub metadata: Option<Arc<MetadataRegistry>>,
    pub pause_image: Arc<PauseImage>,
    /// Containers found at start that belong to no known task, until a task
    /// claims them or they are collected.
    orphans: Mutex<Vec<ContainerState>>,
}

impl std::fmt::Debug for EngineContext {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EngineContext")
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

/// The parts of an [`EngineContext`] the caller provides.
pub struct EngineParts {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub reporter: Reporter,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
    pub persistence: Persistence,
    pub data_dir: PathBuf,
    pub instance_id: String,
    pub cluster_label: String,
    pub settings: EngineSettings,
    pub health: mpsc::Sender<FromAgent>,
    pub metadata: Option<Arc<MetadataRegistry>>,
    pub pause_image: Arc<PauseImage>,
}

impl EngineContext {
    /// The engine network awsvpc tasks of this instance join.
    pub fn task_network_name(&self) -> String {
        flotilla_types::acs::conventions::task_network_name(&self.instance_id)
    }

    /// Takes the leftover container of `task_arn`'s `container`, if one was
    /// found at start: re-adopting it beats creating a second one.
    pub fn claim_orphan(&self, task_arn: &str, container: &str) -> Option<ContainerState> {
        let mut orphans = self
            .orphans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let position = orphans.iter().position(|state| {
            state.labels.get(labels::TASK_ARN).map(String::as_str) == Some(task_arn)
                && state.labels.get(labels::CONTAINER_NAME).map(String::as_str) == Some(container)
        })?;
        Some(orphans.swap_remove(position))
    }

    fn take_orphans(&self) -> Vec<ContainerState> {
        std::mem::take(
            &mut *self
                .orphans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot read the task records: {0}")]
    Records(#[from] PersistError),
    #[error("cannot list this instance's containers: {0}")]
    Runtime(#[source] RuntimeError),
}

/// What a managed task publishes about itself after each change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSummary {
    pub known: TaskStatus,
    pub desired: DesiredStatus,
    pub health: Vec<ContainerHealth>,
    /// Engine ids of the containers running now, for usage sampling.
    pub running_containers: Vec<String>,
}

struct TaskHandle {
    sender: mpsc::Sender<TaskMessage>,
    summary: watch::Receiver<TaskSummary>,
}

/// The engine of one instance.
pub struct Engine {
    context: Arc<EngineContext>,
    tasks: Mutex<HashMap<String, TaskHandle>>,
    forgotten: Mutex<VecDeque<String>>,
    full_state_seen: AtomicBool,
    full_state: Notify,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Engine")
            .field("instance_id", &self.context.instance_id)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Loads the task records of an earlier run, re-adopts their containers
    /// (never restarting one that runs), and starts a managed task for each.
    pub async fn start(parts: EngineParts) -> Result<Arc<Self>, EngineError> {
        let tasks_dir = parts.data_dir.join("tasks");
        let context = Arc::new(EngineContext {
            runtime: parts.runtime,
            reporter: parts.reporter,
            clock: parts.clock,
            ids: parts.ids,
            persistence: parts.persistence,
            tasks_dir,
            instance_id: parts.instance_id,
            cluster_label: parts.cluster_label,
            settings: parts.settings,
            health: parts.health,
            metadata: parts.metadata,
            pause_image: parts.pause_image,
            orphans: Mutex::new(Vec::new()),
        });
        let paths = list_json_files(&context.tasks_dir)?;
        let mut records = Vec::new();
        for path in paths {
            match read_json::<TaskRecord>(&path) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "skipping an unreadable task record"),
            }
        }
        let found = context
            .runtime
            .list_containers(&[(labels::CLUSTER, context.cluster_label.as_str())])
            .await
            .map_err(EngineError::Runtime)?;
        let ours: Vec<ContainerState> = found
            .into_iter()
            .filter(|state| {
                state.labels.get(spec::extra_labels::INSTANCE_ID) == Some(&context.instance_id)
            })
            .collect();
        let now_ms = context.clock.now_ms();
        let mut claimed: HashSet<String> = HashSet::new();
        for record in &mut records {
            recover(record, &ours, &mut claimed, now_ms);
        }
        let orphans: Vec<ContainerState> = ours
            .into_iter()
            .filter(|state| !claimed.contains(&state.id))
            .collect();
        if !orphans.is_empty() {
            tracing::info!(count = orphans.len(), instance = %context.instance_id, "found containers of tasks this agent does not know");
        }
        *context
            .orphans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = orphans;

        let engine = Arc::new(Self {
            context,
            tasks: Mutex::new(HashMap::new()),
            forgotten: Mutex::new(VecDeque::new()),
            full_state_seen: AtomicBool::new(false),
            full_state: Notify::new(),
        });
        for record in records {
            engine.spawn(record);
        }
        tokio::spawn(collect_orphans(Arc::clone(&engine)));
        Ok(engine)
    }

    pub fn context(&self) -> &Arc<EngineContext> {
        &self.context
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, TaskHandle>> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn spawn(&self, record: TaskRecord) {
        let task_arn = record.task_arn().to_owned();
        if let Some(id) = &record.credentials_id {
            self.context.settings.credentials.register(&task_arn, id);
        }
        let (sender, inbox) = mpsc::channel(TASK_INBOX_MAX);
        let (task, summary) = ManagedTask::new(Arc::clone(&self.context), record, inbox);
        tokio::spawn(task.run());
        self.lock_tasks()
            .insert(task_arn, TaskHandle { sender, summary });
    }

    /// Drops handles of managed tasks that finished (cleaned up), remembering their ARNs.
    fn prune(&self) {
        let finished: Vec<String> = {
            let mut tasks = self.lock_tasks();
            let finished: Vec<String> = tasks
                .iter()
                .filter(|(_, h)| h.sender.is_closed())
                .map(|(arn, _)| arn.clone())
                .collect();
            for arn in &finished {
                tasks.remove(arn);
                self.context.settings.credentials.forget(arn);
            }
            finished
        };
        for arn in finished {
            self.remember_forgotten(arn);
        }
    }

    fn remember_forgotten(&self, task_arn: String) {
        let mut forgotten = self
            .forgotten
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if forgotten.len() >= FORGOTTEN_TASKS_MAX {
            forgotten.pop_front();
        }
        forgotten.push_back(task_arn);
    }

    fn was_forgotten(&self, task_arn: &str) -> bool {
        self.forgotten
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|arn| arn == task_arn)
    }

    /// Keeps renewed credentials of a task's role, for a task this
    /// instance runs; answers whether it does.
    pub fn renew_credentials(
        &self,
        task_arn: &str,
        kind: RoleType,
        credentials: RoleCredentials,
    ) -> bool {
        if !self.lock_tasks().contains_key(task_arn) {
            return false;
        }
        self.context
            .settings
            .credentials
            .set(task_arn, kind, credentials);
        true
    }

    /// Applies a payload from the control plane. With `full_state`, tasks the
    /// agent holds that the payload does not name are stopped: the control
    /// plane no longer places them here.
    pub async fn apply_payload(&self, tasks: Vec<TaskPayload>, full_state: bool) {
        self.prune();
        let named: HashSet<String> = tasks.iter().map(|task| task.task_arn.clone()).collect();
        for payload in tasks {
            self.apply_task(payload).await;
        }
        if full_state {
            let unnamed: Vec<mpsc::Sender<TaskMessage>> = self
                .lock_tasks()
                .iter()
                .filter(|(arn, handle)| {
                    !named.contains(*arn)
                        && handle.summary.borrow().desired == DesiredStatus::Running
                })
                .map(|(_, handle)| handle.sender.clone())
                .collect();
            for sender in unnamed {
                let reason = "Task is no longer assigned to this container instance".to_owned();
                let _ = sender.send(TaskMessage::Stop { reason }).await;
            }
            self.full_state_seen.store(true, Ordering::Release);
            self.full_state.notify_waiters();
        }
    }

    async fn apply_task(&self, mut payload: TaskPayload) {
        // Credentials are held in memory, never in the task record.
        let credentials = &self.context.settings.credentials;
        let role_credentials = [
            (RoleType::TaskApplication, payload.role_credentials.take()),
            (
                RoleType::TaskExecution,
                payload.execution_role_credentials.take(),
            ),
        ];
        let credentials_error = payload.credentials_error.take();
        let keep_credentials = || {
            for (kind, held) in role_credentials {
                if let Some(held) = held {
                    credentials.set(&payload.task_arn, kind, held);
                }
            }
        };
        let sender = self
            .lock_tasks()
            .get(&payload.task_arn)
            .map(|handle| handle.sender.clone());
        if let Some(sender) = sender {
            keep_credentials();
            let _ = sender.send(TaskMessage::Update(Box::new(payload))).await;
            return;
        }
        let desired = DesiredStatus::from_wire(&payload.desired_status);
        if desired == DesiredStatus::Stopped {
            // A task to stop that never reached this instance (or was cleaned
            // up already): say it is stopped, once.
            if !self.was_forgotten(&payload.task_arn) {
                self.remember_forgotten(payload.task_arn.clone());
                if let Err(error) = self
                    .context
                    .reporter
                    .submit(report::stopped_without_running(&payload))
                    .await
                {
                    tracing::warn!(%error, "cannot queue a state change");
                }
            }
            return;
        }
        keep_credentials();
        let ids = Arc::clone(&self.context.ids);
        let mut record = TaskRecord::new(payload, || ids.hex_id());
        if has_task_role(&record.payload) {
            record.credentials_id = Some(ids.hex_id());
        }
        if let Some(reason) = credentials_error {
            record.request_stop(Some(reason));
        }
        if self.lock_tasks().len() >= TASKS_PER_INSTANCE_MAX {
            record.request_stop(Some(format!(
                "ResourceInitializationError: the instance already holds {TASKS_PER_INSTANCE_MAX} tasks"
            )));
        }
        tracing::info!(task = %record.task_arn(), instance = %self.context.instance_id, "starting task");
        self.spawn(record);
    }

    /// Stops every task and waits (at most `limit`) for all to stop and for
    /// their reports to reach the control plane.
    pub async fn stop_all(&self, reason: &str, limit: Duration) -> bool {
        let handles: Vec<(mpsc::Sender<TaskMessage>, watch::Receiver<TaskSummary>)> = self
            .lock_tasks()
            .values()
            .map(|h| (h.sender.clone(), h.summary.clone()))
            .collect();
        let wait = async {
            for (sender, _) in &handles {
                let _ = sender
                    .send(TaskMessage::Stop {
                        reason: reason.to_owned(),
                    })
                    .await;
            }
            for (_, summary) in &handles {
                let mut summary = summary.clone();
                let _ = summary.wait_for(|s| s.known == TaskStatus::Stopped).await;
            }
        };
        let stopped = tokio::time::timeout(limit, wait).await.is_ok();
        let reported = self.context.reporter.wait_idle(limit).await;
        stopped && reported
    }

    /// Lets every managed task go without touching its containers: the agent
    /// is exiting and will re-adopt them when it comes back.
    pub async fn detach_all(&self) {
        let senders: Vec<mpsc::Sender<TaskMessage>> =
            self.lock_tasks().drain().map(|(_, h)| h.sender).collect();
        for sender in senders {
            let _ = sender.send(TaskMessage::Detach).await;
        }
    }

    /// Every task's container health, for a fresh control channel.
    pub fn health_messages(&self) -> Vec<FromAgent> {
        self.lock_tasks()
            .iter()
            .filter_map(|(arn, handle)| {
                let summary = handle.summary.borrow();
                (!summary.health.is_empty()).then(|| FromAgent::TaskHealth {
                    task_arn: arn.clone(),
                    containers: summary.health.clone(),
                })
            })
            .collect()
    }

    /// The running tasks and the engine ids of their running containers,
    /// for usage sampling.
    pub fn running_tasks(&self) -> Vec<(String, Vec<String>)> {
        self.lock_tasks()
            .iter()
            .filter_map(|(arn, handle)| {
                let summary = handle.summary.borrow();
                (summary.known == TaskStatus::Running && !summary.running_containers.is_empty())
                    .then(|| (arn.clone(), summary.running_containers.clone()))
            })
            .collect()
    }

    pub fn task_count(&self) -> usize {
        self.lock_tasks().len()
    }

    /// The summary of a task the engine holds.
    pub fn summary(&self, task_arn: &str) -> Option<TaskSummary> {
        self.lock_tasks()
            .get(task_arn)
            .map(|handle| handle.summary.borrow().clone())
    }

    /// Waits until a task's known status reaches `status`; false when the
    /// task is unknown or `limit` passes first.
    pub async fn wait_for_status(
        &self,
        task_arn: &str,
        status: TaskStatus,
        limit: Duration,
    ) -> bool {
        let Some(mut summary) = self
            .lock_tasks()
            .get(task_arn)
            .map(|handle| handle.summary.clone())
        else {
            return false;
        };
        tokio::time::timeout(limit, summary.wait_for(|s| s.known >= status))
            .await
            .is_ok_and(|result| result.is_ok())
    }
}

/// Brings a record up to date with what the engine holds: each container is
/// found by its id, or by its labels when the agent died between creating it
/// and writing its id down.
pub fn recover(
    record: &mut TaskRecord,
    found: &[ContainerState],
    claimed: &mut HashSet<String>,
    now_ms: u64,
) {
    let task_arn = record.task_arn().to_owned();
    for container in &mut record.containers {
        let state = found.iter().find(|state| {
            container.runtime_id.as_deref() == Some(state.id.as_str())
                || (state.labels.get(labels::TASK_ARN) == Some(&task_arn)
                    && state.labels.get(labels::CONTAINER_NAME) == Some(&container.name)
                    && !state.labels.contains_key(labels::PAUSE))
        });
        match state {
            Some(state) => {
                claimed.insert(state.id.clone());
                container.observe(state, now_ms);
            }
            None => container.observe_gone(now_ms),
        }
    }
    let pause = found.iter().find(|state| {
        record.resources.pause_container_id.as_deref() == Some(state.id.as_str())
            || (state.labels.get(labels::TASK_ARN) == Some(&task_arn)
                && state.labels.contains_key(labels::PAUSE))
    });
    if let Some(pause) = pause {
        claimed.insert(pause.id.clone());
        record.resources.pause_container_id = Some(pause.id.clone());
    }
}

/// Removes containers of tasks nobody claimed, once the control plane has
/// said which tasks are this instance's and a grace period has passed.
async fn collect_orphans(engine: Arc<Engine>) {
    loop {
        let notified = engine.full_state.notified();
        if engine.full_state_seen.load(Ordering::Acquire) {
            break;
        }
        notified.await;
    }
    tokio::time::sleep(engine.context.settings.orphan_grace).await;
    let orphans = engine.context.take_orphans();
    let runtime = Arc::clone(&engine.context.runtime);
    drop(engine);
    for orphan in orphans {
        tracing::info!(container = %orphan.name, task = ?orphan.labels.get(labels::TASK_ARN), "removing a container of a task this agent does not run");
        if let Err(error) = runtime
            .stop_container(&orphan.id, Duration::from_secs(10))
            .await
        {
            tracing::debug!(%error, "stopping an orphan");
        }
        if let Err(error) = runtime.remove_container(&orphan.id).await {
            tracing::warn!(%error, container = %orphan.name, "cannot remove an orphaned container");
        }
    }
}

/// The container definitions' dependency lists, by container name.
pub fn dependency_map(record: &TaskRecord) -> BTreeMap<String, Vec<order::Dependency>> {
    record
        .definitions()
        .iter()
        .filter_map(|definition| {
            Some((definition.name.clone()?, order::dependencies_of(definition)))
        })
        .collect()
}

/// Whether a task runs with a task role, whose credentials its containers
/// fetch from the credentials endpoint.
pub fn has_task_role(payload: &TaskPayload) -> bool {
    payload
        .overrides
        .as_ref()
        .and_then(|o| o.task_role_arn.as_deref())
        .or(payload.task_definition.task_role_arn.as_deref())
        .is_some_and(|arn| !arn.is_empty())
}
