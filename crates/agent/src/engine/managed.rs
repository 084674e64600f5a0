//! The managed task: the one owner of one task's record. It asks the
//! planner for the next step, carries it out against the runtime, writes the
//! record down, hands new state changes to the reporter, and waits for the
//! next payload, poll tick or deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_runtime::{labels, PullPolicy, RuntimeError, Status};
use flotilla_types::acs::{ContainerHealth, FromAgent, TaskPayload};
use flotilla_types::ecs::NetworkMode as EcsNetworkMode;
use tokio::sync::{mpsc, watch};

use super::order::Dependency;
use super::plan::{plan, Plan, Step};
use super::record::TaskRecord;
use super::report::pending_report;
use super::spec::{
    container_spec, network_mode_of, override_for, pause_spec, resolve_volumes, stop_timeout,
    ContainerContext, TaskContext, TaskNetwork, VolumeSource,
};
use super::status::{ContainerStatus, DesiredStatus, TaskStatus};
use super::{dependency_map, EngineContext, PullBehavior, TaskSummary};
use crate::backoff::backoff_delay_ms;

mod logs;

/// Tries of a step that failed because the engine was unreachable, before
/// the failure counts against the task.
pub const RUNTIME_UNAVAILABLE_RETRIES_MAX: u32 = 5;
/// Tries to stop one container before it is written off as stopped.
pub const STOP_ATTEMPTS_MAX: u32 = 3;
/// How long the pause container gets to stop.
const PAUSE_STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub enum TaskMessage {
    /// A newer payload for this task.
    Update(Box<TaskPayload>),
    /// Stop the task with this reason.
    Stop { reason: String },
    /// Let go of the task without touching its containers (agent exiting).
    Detach,
}

enum Control {
    Continue,
    Detach,
}

pub struct ManagedTask {
    context: Arc<EngineContext>,
    record: TaskRecord,
    saved: Option<TaskRecord>,
    path: PathBuf,
    dependencies: BTreeMap<String, Vec<Dependency>>,
    inbox: mpsc::Receiver<TaskMessage>,
    summary: watch::Sender<TaskSummary>,
    stop_attempts: BTreeMap<usize, u32>,
    unavailable_failures: u32,
    /// The container health last sent to the control channel.
    health_sent: Vec<ContainerHealth>,
    /// Shippers of containers that log with awslogs, by container index.
    log_shippers: BTreeMap<usize, crate::awslogs::Shipper>,
}

impl ManagedTask {
    pub fn new(
        context: Arc<EngineContext>,
        mut record: TaskRecord,
        inbox: mpsc::Receiver<TaskMessage>,
    ) -> (Self, watch::Receiver<TaskSummary>) {
        let dependencies = dependency_map(&record);
        if let Some(cycle) = super::order::find_cycle(&dependencies) {
            record.request_stop(Some(format!(
                "CannotStartContainerError: container dependencies form a cycle: {}",
                cycle.join(" -> ")
            )));
        }
        let path = context.tasks_dir.join(format!("{}.json", record.task_id()));
        let (summary, receiver) = watch::channel(summarize(&record));
        let health_sent = container_health(&record);
        let task = Self {
            health_sent,
            context,
            record,
            saved: None,
            path,
            dependencies,
            inbox,
            summary,
            stop_attempts: BTreeMap::new(),
            unavailable_failures: 0,
            log_shippers: BTreeMap::new(),
        };
        (task, receiver)
    }

    pub async fn run(mut self) {
        // Write the record before acting on it, and send what recovery found.
        self.commit().await;
        loop {
            loop {
                match self.inbox.try_recv() {
                    Ok(message) => {
                        if let Control::Detach = self.handle(message) {
                            return;
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            let now_ms = self.context.clock.now_ms();
            match plan(&self.record, &self.dependencies, now_ms) {
                Plan::Step(step) => {
                    tracing::debug!(task = %self.record.task_arn(), ?step, "step");
                    self.execute(step).await;
                    self.commit().await;
                }
                Plan::Wait { deadline_ms } => {
                    let mut wait = self.context.settings.poll_interval;
                    if let Some(deadline_ms) = deadline_ms {
                        wait = wait.min(Duration::from_millis(deadline_ms.saturating_sub(now_ms)));
                    }
                    tokio::select! {
                        message = self.inbox.recv() => match message {
                            Some(message) => if let Control::Detach = self.handle(message) { return },
                            None => return,
                        },
                        () = tokio::time::sleep(wait) => self.poll().await,
                    }
                    self.commit().await;
                }
                Plan::Done => {
                    let stopped_at_ms = self.record.execution_stopped_at_ms.unwrap_or(now_ms);
                    let wait_ms =
                        u64::try_from(self.context.settings.task_cleanup_wait.as_millis())
                            .unwrap_or(u64::MAX);
                    let remaining = Duration::from_millis(
                        stopped_at_ms.saturating_add(wait_ms).saturating_sub(now_ms),
                    );
                    tokio::select! {
                        message = self.inbox.recv() => match message {
                            Some(message) => if let Control::Detach = self.handle(message) { return },
                            None => return,
                        },
                        () = tokio::time::sleep(remaining) => {
                            self.clean_up().await;
                            return;
                        }
                    }
                }
            }
        }
    }

    fn handle(&mut self, message: TaskMessage) -> Control {
        match message {
            TaskMessage::Update(payload) => {
                if payload.version < self.record.payload.version {
                    tracing::debug!(task = %payload.task_arn, "ignoring an older payload");
                    return Control::Continue;
                }
                self.record.payload.version = payload.version;
                if DesiredStatus::from_wire(&payload.desired_status) == DesiredStatus::Stopped {
                    if self.record.desired == DesiredStatus::Running {
                        tracing::info!(task = %payload.task_arn, "control plane asks to stop the task");
                    }
                    self.record.request_stop(payload.stopped_reason.clone());
                }
                Control::Continue
            }
            TaskMessage::Stop { reason } => {
                self.record.request_stop(Some(reason));
                Control::Continue
            }
            TaskMessage::Detach => Control::Detach,
        }
    }

    /// Writes the record down if it changed, hands any new state change to
    /// the reporter, and publishes the record to the metadata endpoint.
    async fn commit(&mut self) {
        if self.record.known() == TaskStatus::Stopped
            && self.record.execution_stopped_at_ms.is_none()
        {
            self.record.execution_stopped_at_ms = Some(self.context.clock.now_ms());
        }
        if let Some((change, reported)) = pending_report(&self.record) {
            tracing::info!(
                task = %self.record.task_arn(),
                status = ?change.status,
                reason = ?change.reason,
                "task state change"
            );
            match self.context.reporter.submit(change).await {
                Ok(()) => self.record.reported = reported,
                Err(error) => tracing::warn!(%error, "cannot queue a state change; will try again"),
            }
        }
        if self.saved.as_ref() != Some(&self.record) {
            match self
                .context
                .persistence
                .write_task_file(&self.path, &self.record)
                .await
            {
                Ok(_) => self.saved = Some(self.record.clone()),
                Err(error) => tracing::warn!(%error, "cannot write the task record"),
            }
            if let Some(metadata) = &self.context.metadata {
                metadata.publish(&self.record);
            }
        }
        let health = container_health(&self.record);
        if health != self.health_sent {
            let message = FromAgent::TaskHealth {
                task_arn: self.record.task_arn().to_owned(),
                containers: health.clone(),
            };
            if self.context.health.try_send(message).is_err() {
                tracing::debug!("health queue full; the next connection resends it");
            }
            self.health_sent = health;
        }
        let summary = summarize(&self.record);
        self.summary.send_if_modified(|current| {
            if *current == summary {
                false
            } else {
                *current = summary;
                true
            }
        });
    }

    fn fail(&mut self, reason: String) {
        tracing::info!(task = %self.record.task_arn(), %reason, "task cannot go on");
        self.record.request_stop(Some(reason));
    }

    /// A step failed because the engine was unreachable: wait and let the
    /// planner pick the same step again, a bounded number of times.
    async fn retry_later(&mut self, error: &RuntimeError) -> bool {
        if !matches!(error, RuntimeError::Unavailable { .. })
            || self.unavailable_failures >= RUNTIME_UNAVAILABLE_RETRIES_MAX
        {
            return false;
        }
        let delay = backoff_delay_ms(self.unavailable_failures, 0.5);
        self.unavailable_failures += 1;
        tracing::warn!(task = %self.record.task_arn(), %error, delay_ms = delay, "container engine unreachable; retrying");
        tokio::time::sleep(Duration::from_millis(delay)).await;
        true
    }

    async fn execute(&mut self, step: Step) {
        match step {
            Step::Provision => self.provision().await,
            Step::Pull(index) => self.pull(index).await,
            Step::Create(index) => self.create(index).await,
            Step::Start(index) => self.start(index).await,
            Step::Stop(indices) => self.stop(indices).await,
            Step::Abandon(index) => {
                self.record.containers[index].transition(ContainerStatus::Stopped);
            }
            Step::Fail(reason) => self.fail(reason),
            Step::Release => self.release().await,
        }
    }

    async fn provision(&mut self) {
        match self.try_provision().await {
            Ok(()) => {
                self.record.resources.provisioned = true;
                self.unavailable_failures = 0;
            }
            Err(error) => {
                if let ProvisionError::Runtime(runtime_error) = &error {
                    if self.retry_later(runtime_error).await {
                        return;
                    }
                }
                self.fail(format!("ResourceInitializationError: {error}"));
            }
        }
    }

    async fn try_provision(&mut self) -> Result<(), ProvisionError> {
        let runtime = Arc::clone(&self.context.runtime);
        let volumes = resolve_volumes(&self.record.payload.task_definition, self.record.task_id())
            .map_err(|error| ProvisionError::Other(error.to_string()))?;
        for source in volumes.values() {
            let VolumeSource::Named {
                engine_name,
                task_scoped,
                autoprovision,
                labels: volume_labels,
            } = source
            else {
                continue;
            };
            if !task_scoped && !autoprovision {
                continue;
            }
            let mut all_labels = volume_labels.clone();
            all_labels.insert(
                labels::CLUSTER.to_owned(),
                self.context.cluster_label.clone(),
            );
            if *task_scoped {
                all_labels.insert(
                    labels::TASK_ARN.to_owned(),
                    self.record.task_arn().to_owned(),
                );
            }
            runtime
                .ensure_volume(engine_name, &all_labels)
                .await
                .map_err(ProvisionError::Runtime)?;
            if *task_scoped && !self.record.resources.task_volumes.contains(engine_name) {
                self.record.resources.task_volumes.push(engine_name.clone());
            }
        }
        if network_mode_of(&self.record.payload.task_definition) != EcsNetworkMode::Awsvpc {
            return Ok(());
        }
        let interface = self
            .record
            .payload
            .network_interface
            .clone()
            .ok_or_else(|| {
                ProvisionError::Other("awsvpc task has no network interface".to_owned())
            })?;
        let network = self.context.task_network_name();
        runtime
            .ensure_network(&network, &interface.subnet_cidr)
            .await
            .map_err(ProvisionError::Runtime)?;
        let pause_id = match self.record.resources.pause_container_id.clone() {
            Some(id) => id,
            None => {
                self.context
                    .pause_image
                    .ensure(&*runtime)
                    .await
                    .map_err(ProvisionError::Other)?;
                let parts = self.task_context_parts(TaskNetwork::None);
                let task_context = parts.context();
                let spec = pause_spec(
                    &task_context,
                    &self.context.pause_image.reference,
                    &network,
                    &interface.private_ipv4_address,
                    self.record.definitions(),
                );
                let id = match self.find_existing(None).await {
                    Some(id) => id,
                    None => runtime
                        .create_container(&spec)
                        .await
                        .map_err(ProvisionError::Runtime)?,
                };
                self.record.resources.pause_container_id = Some(id.clone());
                id
            }
        };
        let state = runtime
            .inspect_container(&pause_id)
            .await
            .map_err(ProvisionError::Runtime)?;
        if state.status != Status::Running {
            runtime
                .start_container(&pause_id)
                .await
                .map_err(ProvisionError::Runtime)?;
        }
        Ok(())
    }

    /// An existing container of this task, by labels: the task's `container`,
    /// or its pause container when `None`.
    async fn find_existing(&self, container: Option<&str>) -> Option<String> {
        let task_arn = self.record.task_arn();
        let mut wanted = vec![(labels::TASK_ARN, task_arn)];
        match container {
            Some(name) => wanted.push((labels::CONTAINER_NAME, name)),
            None => wanted.push((labels::PAUSE, "true")),
        }
        let found = self.context.runtime.list_containers(&wanted).await.ok()?;
        found
            .into_iter()
            .find(|state| container.is_some() != state.labels.contains_key(labels::PAUSE))
            .map(|state| state.id)
    }

    async fn pull(&mut self, index: usize) {
        let task_arn = self.record.task_arn().to_owned();
        let name = self.record.containers[index].name.clone();
        let now_ms = self.context.clock.now_ms();
        if let Some(state) = self.context.claim_orphan(&task_arn, &name) {
            tracing::info!(task = %task_arn, container = %name, "re-adopting a container found at start");
            let container = &mut self.record.containers[index];
            container.pulled_at_ms = Some(now_ms);
            container.transition(ContainerStatus::Pulled);
            container.observe(&state, now_ms);
            return;
        }
        let Some(image) = self.record.definition(&name).and_then(|d| d.image.clone()) else {
            self.record.containers[index].transition(ContainerStatus::Stopped);
            self.fail(format!(
                "CannotPullContainerError: container {name} has no image"
            ));
            return;
        };
        if self.record.pull_started_at_ms.is_none() {
            self.record.pull_started_at_ms = Some(now_ms);
        }
        let auth = match &self.context.settings.registry_credentials {
            Some(credentials) => credentials.auth_for(&image).await,
            None => None,
        };
        let result = pull_with(
            &*self.context.runtime,
            &image,
            self.context.settings.pull_behavior,
            auth.as_ref(),
        )
        .await;
        let now_ms = self.context.clock.now_ms();
        self.record.pull_stopped_at_ms = Some(now_ms);
        match result {
            Ok(digest) => {
                self.unavailable_failures = 0;
                let container = &mut self.record.containers[index];
                container.pulled_at_ms = Some(now_ms);
                // What was pulled is what the container runs; the engine's
                // inspection only fills it in when the pull did not say.
                if digest.is_some() {
                    container.image_digest = digest;
                }
                container.transition(ContainerStatus::Pulled);
            }
            Err(error) => {
                if self.retry_later(&error).await {
                    return;
                }
                let message = match &error {
                    RuntimeError::Pull { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                let reason = format!("CannotPullContainerError: {message}");
                let container = &mut self.record.containers[index];
                container.transition(ContainerStatus::Stopped);
                container.reason = Some(reason.clone());
                self.fail(reason);
            }
        }
    }

    /// Gives every dynamic port mapping a host port from ECS's range.
    fn pick_dynamic_host_ports(
        &self,
        spec: &mut flotilla_runtime::ContainerSpec,
    ) -> Result<(), String> {
        let Some(picker) = &self.context.settings.host_ports else {
            return Ok(());
        };
        for binding in spec
            .port_bindings
            .iter_mut()
            .filter(|b| b.host_port.is_none())
        {
            let port = picker.pick(binding.protocol).ok_or_else(|| {
                format!(
                    "no free host port in {}-{}",
                    super::host_ports::DYNAMIC_HOST_PORTS_FIRST,
                    super::host_ports::DYNAMIC_HOST_PORTS_LAST
                )
            })?;
            binding.host_port = Some(port);
        }
        Ok(())
    }

    fn metadata_base_url(&self) -> Option<String> {
        let port = self.context.settings.metadata_port?;
        let host = match network_mode_of(&self.record.payload.task_definition) {
            EcsNetworkMode::Host => "127.0.0.1".to_owned(),
            EcsNetworkMode::Awsvpc => self
                .record
                .payload
                .network_interface
                .as_ref()?
                .gateway_ipv4_address
                .clone(),
            EcsNetworkMode::Bridge | EcsNetworkMode::None => {
                self.context.settings.bridge_gateway.clone()
            }
        };
        Some(format!("http://{host}:{port}"))
    }

    fn task_context_parts(&self, network: TaskNetwork) -> TaskContextParts {
        let names = self
            .record
            .containers
            .iter()
            .map(|c| (c.name.clone(), c.engine_name.clone()))
            .collect();
        let ids = self
            .record
            .containers
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.runtime_id.clone()?)))
            .collect();
        let volumes = resolve_volumes(&self.record.payload.task_definition, self.record.task_id())
            .unwrap_or_default();
        let definition = &self.record.payload.task_definition;
        TaskContextParts {
            engine_names: names,
            engine_ids: ids,
            volumes,
            cluster_label: self.context.cluster_label.clone(),
            cluster_arn: self.record.payload.cluster_arn.clone(),
            instance_id: self.context.instance_id.clone(),
            task_arn: self.record.task_arn().to_owned(),
            task_id: self.record.task_id().to_owned(),
            family: definition.family.clone().unwrap_or_default(),
            revision: definition.revision.unwrap_or(0),
            network,
            task_memory_mib: self
                .record
                .payload
                .overrides
                .as_ref()
                .and_then(|o| o.memory.clone())
                .or_else(|| definition.memory.clone())
                .and_then(|memory| memory.parse().ok()),
            fargate_cpu_units: definition
                .cpu
                .as_deref()
                .and_then(|cpu| cpu.parse().ok())
                .filter(|_| self.record.payload.fargate),
        }
    }

    async fn create(&mut self, index: usize) {
        let name = self.record.containers[index].name.clone();
        let Some(definition) = self.record.definition(&name).cloned() else {
            self.fail(format!(
                "CannotCreateContainerError: container {name} has no definition"
            ));
            return;
        };
        let network = match network_mode_of(&self.record.payload.task_definition) {
            EcsNetworkMode::Bridge => TaskNetwork::Bridge,
            EcsNetworkMode::Host => TaskNetwork::Host,
            EcsNetworkMode::None => TaskNetwork::None,
            EcsNetworkMode::Awsvpc => match &self.record.resources.pause_container_id {
                Some(id) => TaskNetwork::Awsvpc {
                    pause_container_id: id.clone(),
                },
                None => {
                    self.fail(
                        "ResourceInitializationError: awsvpc task has no pause container"
                            .to_owned(),
                    );
                    return;
                }
            },
        };
        let override_ = override_for(
            self.record
                .payload
                .overrides
                .as_ref()
                .and_then(|o| o.container_overrides.as_deref()),
            &name,
        )
        .cloned();
        let environment_files: Vec<String> = override_
            .as_ref()
            .and_then(|o| o.environment_files.clone())
            .or_else(|| definition.environment_files.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|file| file.value)
            .collect();
        // Read as the task's execution role when it has one (so that the
        // role's permissions decide, as in ECS), else as the agent.
        let execution_role = self
            .context
            .settings
            .credentials
            .execution(self.record.task_arn());
        let object_source = self.context.settings.environment_files.as_ref();
        let as_role = object_source
            .zip(execution_role.as_ref())
            .and_then(|(source, credentials)| source.with_role(credentials));
        let object_source = as_role.as_deref().or(object_source.map(|s| &**s));
        let variables = match crate::env_files::read(object_source, &environment_files).await {
            Ok(variables) => variables,
            Err(reason) => {
                self.fail(format!(
                    "ResourceInitializationError: failed to download env files: {reason}"
                ));
                return;
            }
        };
        let secret_source = self.context.settings.secret_source.as_ref();
        let as_execution_role = secret_source
            .zip(execution_role.as_ref())
            .and_then(|(source, credentials)| source.with_role(credentials));
        // Read now, kept in memory only until the container is created.
        let secrets = match crate::secrets::resolve_container(
            as_execution_role.as_deref().or(secret_source.map(|s| &**s)),
            &definition,
        )
        .await
        {
            Ok(secrets) => secrets,
            Err(reason) => {
                self.fail(reason);
                return;
            }
        };
        let metadata_base_url = self.metadata_base_url();
        let token = self.record.containers[index].metadata_token.clone();
        let parts = self.task_context_parts(network);
        let task_context = parts.context();
        let credentials_uri = self
            .record
            .credentials_id
            .as_deref()
            .map(crate::credentials::relative_uri);
        let settings = &self.context.settings;
        let container_context = ContainerContext {
            metadata_base_url: metadata_base_url.as_deref(),
            metadata_token: &token,
            environment_file_variables: &variables,
            secrets: Some(&secrets),
            credentials_relative_uri: credentials_uri.as_deref(),
            aws_endpoint_url: settings.aws_endpoint_url.as_deref(),
            region: settings.region.as_deref(),
        };
        let mut spec = match container_spec(
            &task_context,
            &container_context,
            &definition,
            override_.as_ref(),
        ) {
            Ok(spec) => spec,
            Err(error) => {
                self.fail(format!("CannotCreateContainerError: {error}"));
                return;
            }
        };
        if let Err(error) = self.pick_dynamic_host_ports(&mut spec) {
            self.fail(format!("CannotCreateContainerError: {error}"));
            return;
        }
        let created = self.context.runtime.create_container(&spec).await;
        let now_ms = self.context.clock.now_ms();
        match created {
            Ok(id) => {
                self.unavailable_failures = 0;
                let container = &mut self.record.containers[index];
                container.runtime_id = Some(id);
                container.created_at_ms = Some(now_ms);
                container.transition(ContainerStatus::Created);
            }
            Err(error) => {
                if self.retry_later(&error).await {
                    return;
                }
                // A container of this name may be left from a run that died
                // before writing its id down: take it rather than fail.
                if let Some(id) = self.find_existing(Some(&name)).await {
                    if let Ok(state) = self.context.runtime.inspect_container(&id).await {
                        let container = &mut self.record.containers[index];
                        container.created_at_ms = Some(now_ms);
                        container.observe(&state, now_ms);
                        return;
                    }
                }
                let reason = format!("CannotCreateContainerError: {}", engine_message(&error));
                let container = &mut self.record.containers[index];
                container.transition(ContainerStatus::Stopped);
                container.reason = Some(reason.clone());
                self.fail(reason);
            }
        }
    }

    async fn start(&mut self, index: usize) {
        let Some(id) = self.record.containers[index].runtime_id.clone() else {
            self.fail("CannotStartContainerError: container has no engine id".to_owned());
            return;
        };
        if let Err(reason) = self.prepare_logs(index).await {
            let container = &mut self.record.containers[index];
            container.transition(ContainerStatus::Stopped);
            container.reason = Some(reason.clone());
            self.fail(reason);
            return;
        }
        let started = self.context.runtime.start_container(&id).await;
        let now_ms = self.context.clock.now_ms();
        match started {
            Ok(()) => {
                self.unavailable_failures = 0;
                self.follow_logs(index, None);
                let inspected = self.context.runtime.inspect_container(&id).await;
                let container = &mut self.record.containers[index];
                match inspected {
                    Ok(state) => container.observe(&state, now_ms),
                    Err(_) => {
                        container.transition(ContainerStatus::Running);
                        container.started_at_ms.get_or_insert(now_ms);
                    }
                }
                // The engine answered "created" if it had not caught up yet;
                // the start did happen.
                if container.known == ContainerStatus::Created {
                    container.transition(ContainerStatus::Running);
                    container.started_at_ms.get_or_insert(now_ms);
                }
            }
            Err(error) => {
                if self.retry_later(&error).await {
                    return;
                }
                let reason = format!("CannotStartContainerError: {}", engine_message(&error));
                let container = &mut self.record.containers[index];
                container.transition(ContainerStatus::Stopped);
                container.reason = Some(reason.clone());
                self.fail(reason);
            }
        }
    }

    async fn stop(&mut self, indices: Vec<usize>) {
        let runtime = Arc::clone(&self.context.runtime);
        let jobs = indices.iter().map(|index| {
            let container = &self.record.containers[*index];
            let id = container.runtime_id.clone();
            let timeout = self
                .record
                .definition(&container.name)
                .map_or(super::spec::DEFAULT_STOP_TIMEOUT, stop_timeout);
            let runtime = Arc::clone(&runtime);
            async move {
                let Some(id) = id else { return (None, None) };
                let stopped = runtime.stop_container(&id, timeout).await;
                let inspected = runtime.inspect_container(&id).await;
                (Some(stopped), Some(inspected))
            }
        });
        let results = futures_util::future::join_all(jobs).await;
        let now_ms = self.context.clock.now_ms();
        let mut flushed = Vec::new();
        for (index, (stopped, inspected)) in indices.into_iter().zip(results) {
            let container = &mut self.record.containers[index];
            match (stopped, inspected) {
                (None, _) | (_, None) => {
                    container.transition(ContainerStatus::Stopped);
                }
                (Some(_), Some(Ok(state))) if matches!(state.status, Status::Exited { .. }) => {
                    container.observe(&state, now_ms);
                    flushed.push(index);
                }
                (Some(Err(RuntimeError::NoSuchContainer { .. })), _)
                | (_, Some(Err(RuntimeError::NoSuchContainer { .. }))) => {
                    container.observe_gone(now_ms);
                }
                (Some(stopped), Some(_)) => {
                    let attempts = self.stop_attempts.entry(index).or_insert(0);
                    *attempts += 1;
                    let why = stopped
                        .err()
                        .map_or_else(|| "it is still running".to_owned(), |e| e.to_string());
                    tracing::warn!(container = %container.name, attempts = *attempts, %why, "container did not stop");
                    if *attempts >= STOP_ATTEMPTS_MAX {
                        container.transition(ContainerStatus::Stopped);
                        container.finished_at_ms = Some(now_ms);
                        container.reason = Some(format!("could not be stopped: {why}"));
                    }
                }
            }
        }
        for index in flushed {
            self.flush_logs(index).await;
        }
    }

    async fn release(&mut self) {
        if let Some(id) = self.record.resources.pause_container_id.clone() {
            match self
                .context
                .runtime
                .stop_container(&id, PAUSE_STOP_TIMEOUT)
                .await
            {
                Ok(()) | Err(RuntimeError::NoSuchContainer { .. }) => {}
                Err(error) => tracing::warn!(%error, "cannot stop the pause container"),
            }
        }
        self.record.resources.released = true;
    }

    /// Inspects the running containers for exits and health changes.
    async fn poll(&mut self) {
        self.follow_adopted_logs();
        let now_ms = self.context.clock.now_ms();
        for index in 0..self.record.containers.len() {
            let container = &self.record.containers[index];
            if container.known != ContainerStatus::Running {
                continue;
            }
            let Some(id) = container.runtime_id.clone() else {
                continue;
            };
            let inspected = self.context.runtime.inspect_container(&id).await;
            let container = &mut self.record.containers[index];
            match inspected {
                Ok(state) => {
                    let was = container.known;
                    container.observe(&state, now_ms);
                    if was != container.known {
                        tracing::info!(container = %container.name, exit_code = ?container.exit_code, "container stopped");
                        self.flush_logs(index).await;
                    }
                }
                Err(RuntimeError::NoSuchContainer { .. }) => container.observe_gone(now_ms),
                Err(error) => tracing::debug!(%error, "cannot inspect a container"),
            }
        }
    }

    /// Removes the task's containers and volumes and forgets it.
    async fn clean_up(&mut self) {
        let runtime = Arc::clone(&self.context.runtime);
        let ids: Vec<String> = self
            .record
            .containers
            .iter()
            .filter_map(|c| c.runtime_id.clone())
            .chain(self.record.resources.pause_container_id.clone())
            .collect();
        for id in ids {
            match runtime.remove_container(&id).await {
                Ok(()) | Err(RuntimeError::NoSuchContainer { .. }) => {}
                Err(error) => {
                    tracing::warn!(%error, container = %id, "cannot remove a stopped task's container")
                }
            }
        }
        for volume in &self.record.resources.task_volumes {
            if let Err(error) = runtime.remove_volume(volume).await {
                tracing::warn!(%error, %volume, "cannot remove a task volume");
            }
        }
        if let Some(metadata) = &self.context.metadata {
            metadata.forget(self.record.task_arn());
        }
        self.context
            .settings
            .credentials
            .forget(self.record.task_arn());
        if let Err(error) = self.context.persistence.remove_task_file(&self.path).await {
            tracing::warn!(%error, "cannot remove the task record");
        }
        tracing::info!(task = %self.record.task_arn(), "cleaned up task");
    }
}

/// Owned task-level facts, borrowed into a [`TaskContext`].
struct TaskContextParts {
    engine_names: BTreeMap<String, String>,
    engine_ids: BTreeMap<String, String>,
    volumes: BTreeMap<String, VolumeSource>,
    cluster_label: String,
    cluster_arn: String,
    instance_id: String,
    task_arn: String,
    task_id: String,
    family: String,
    revision: i32,
    network: TaskNetwork,
    task_memory_mib: Option<u64>,
    fargate_cpu_units: Option<u64>,
}

impl TaskContextParts {
    fn context(&self) -> TaskContext<'_> {
        TaskContext {
            cluster_label: &self.cluster_label,
            cluster_arn: &self.cluster_arn,
            instance_id: &self.instance_id,
            task_arn: &self.task_arn,
            task_id: &self.task_id,
            family: &self.family,
            revision: self.revision,
            network: &self.network,
            task_memory_mib: self.task_memory_mib,
            fargate_cpu_units: self.fargate_cpu_units,
            volumes: &self.volumes,
            engine_names: &self.engine_names,
            engine_ids: &self.engine_ids,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ProvisionError {
    #[error("{0}")]
    Runtime(RuntimeError),
    #[error("{0}")]
    Other(String),
}

/// What the engine said, without our own "create container failed:" prefix.
fn engine_message(error: &RuntimeError) -> String {
    match error {
        RuntimeError::Engine { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

async fn pull_with(
    runtime: &dyn flotilla_runtime::ContainerRuntime,
    image: &str,
    behavior: PullBehavior,
    auth: Option<&flotilla_runtime::RegistryAuth>,
) -> Result<Option<String>, RuntimeError> {
    match behavior {
        PullBehavior::Always => runtime.pull_image(image, PullPolicy::Always, auth).await,
        PullBehavior::Once | PullBehavior::PreferCached => {
            runtime
                .pull_image(image, PullPolicy::IfNotPresent, auth)
                .await
        }
        PullBehavior::Default => match runtime.pull_image(image, PullPolicy::Always, auth).await {
            Ok(digest) => Ok(digest),
            Err(error @ RuntimeError::Pull { .. }) => {
                // ECS's default: a failed pull falls back to a cached image.
                match runtime.pull_image(image, PullPolicy::Never, None).await {
                    Ok(digest) => {
                        tracing::info!(%image, %error, "pull failed; using the local image");
                        Ok(digest)
                    }
                    Err(_) => Err(error),
                }
            }
            Err(error) => Err(error),
        },
    }
}

fn container_health(record: &TaskRecord) -> Vec<ContainerHealth> {
    let with_checks: BTreeSet<&str> = record
        .definitions()
        .iter()
        .filter(|d| d.health_check.is_some())
        .filter_map(|d| d.name.as_deref())
        .collect();
    record
        .containers
        .iter()
        .filter(|c| with_checks.contains(c.name.as_str()))
        .map(|c| ContainerHealth {
            container_name: c.name.clone(),
            health_status: c.health.as_wire().to_owned(),
        })
        .collect()
}

fn summarize(record: &TaskRecord) -> TaskSummary {
    TaskSummary {
        known: record.known(),
        desired: record.desired,
        health: container_health(record),
        running_containers: record
            .containers
            .iter()
            .filter(|container| container.known == ContainerStatus::Running)
            .filter_map(|container| container.runtime_id.clone())
            .collect(),
    }
}
