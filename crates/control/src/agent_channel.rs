//! The server side of the agent control channel (`flotilla_types::acs`),
//! without the socket: who may connect, what the agent is sent, and the
//! store changes that make the channel speak. The edge's websocket handler
//! (`crates/edge/src/agent_ws.rs`) moves these messages over the wire.
//!
//! ```text
//!  edge: upgrade ── resolve_agent_instance ──▶ AgentInstance
//!        ├─ watch_agent ─────────────▶ AgentWatch (subscribed before anything is read)
//!        ├─ set_agent_connected(true) (this connection now speaks for the instance)
//!        ├─ payload_for_instance ────▶ first Payload
//!        └─ loop: AgentWatch::next ──▶ Payload(changed) | Resync | Superseded | Deregistered
//!  on close: set_agent_connected(false), a no-op when a newer connection took over
//! ```
//!
//! Container health travels as `FromAgent::TaskHealth` on the channel and is
//! stored by [`Ecs::record_task_health`].

use std::collections::HashMap;
use std::sync::Arc;

use crate::agent_router::{Routed, Subscription};
use crate::instances::{scan, InstanceRecord};
use crate::records::{self, keys, Attempt};
use crate::tasks::TaskRecord;
use crate::Ecs;
use flotilla_store::{EventKind, Store, Txn};
use flotilla_types::acs::{ContainerHealth, TaskPayload};
use flotilla_types::ecs::HealthStatus;
use flotilla_types::ApiError;

/// Most tasks one Payload message carries; more changes go in further messages.
pub const PAYLOAD_TASKS_MAX: usize = 64;

/// The instance at the other end of an agent connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentInstance {
    pub cluster: String,
    pub cluster_arn: String,
    pub instance_id: String,
    pub instance_arn: String,
}

/// Why an agent may not connect.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AgentRefusal {
    #[error("{0}")]
    Invalid(String),
    #[error("cluster {cluster} was not found")]
    ClusterNotFound { cluster: String },
    #[error("container instance {instance} was not found in cluster {cluster}")]
    InstanceNotFound { cluster: String, instance: String },
    #[error("container instance {instance} is INACTIVE: it was deregistered")]
    InstanceInactive { instance: String },
    #[error("{0}")]
    Api(ApiError),
}

impl AgentRefusal {
    /// The AWS-shaped error the edge answers with before upgrading.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            AgentRefusal::Invalid(message) => ApiError::invalid_parameter(message.clone()),
            AgentRefusal::ClusterNotFound { .. } => ApiError::cluster_not_found(),
            AgentRefusal::InstanceNotFound { .. } => {
                ApiError::new("ResourceNotFoundException", 404, self.to_string())
            }
            AgentRefusal::InstanceInactive { .. } => ApiError::client(self.to_string()),
            AgentRefusal::Api(error) => error.clone(),
        }
    }
}

/// What the channel must tell the agent next.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentEvent {
    /// Tasks whose desired state changed (or that are new), to send as a Payload.
    Payload(Vec<TaskPayload>),
    /// Changes were missed: send the full state again ([`AgentWatch::full_payload`]).
    Resync,
    /// A newer connection speaks for the instance now: close this one.
    Superseded,
    /// The instance was deregistered: send `Deregistered` and close.
    Deregistered,
    /// The store is shutting down.
    Closed,
}

/// The store changes that concern one agent connection.
pub struct AgentWatch {
    store: Arc<dyn Store>,
    instance: AgentInstance,
    connection_id: String,
    /// Writes to this instance's record and its tasks, from the
    /// [`crate::agent_router::AgentRouter`].
    changes: Subscription,
    /// The desired status last sent for each task, so that a task is sent
    /// again only when what the agent must do about it changed.
    sent: HashMap<String, String>,
    /// Changes taken from the subscription and not yet returned by [`AgentWatch::next`].
    unsent: Vec<TaskPayload>,
    /// Whether the record has shown this connection as the current one yet;
    /// changes committed before that say nothing about superseding.
    seen_own_connection: bool,
}

impl AgentWatch {
    /// Every task the agent must act on, remembering what was sent.
    pub fn full_payload(&mut self) -> Result<Vec<TaskPayload>, ApiError> {
        let tasks = payload_for(
            self.store.as_ref(),
            &self.instance.cluster,
            &self.instance.instance_id,
        )?;
        self.sent = tasks
            .iter()
            .map(|t| (t.task_arn.clone(), t.desired_status.clone()))
            .collect();
        self.unsent.clear();
        Ok(tasks)
    }

    /// Waits for the next thing to tell the agent. Changes already waiting
    /// are gathered into one payload of at most [`PAYLOAD_TASKS_MAX`] tasks.
    ///
    /// Cancel-safe, as `tokio::select!` needs it: whatever was taken from
    /// the subscription is kept in `self` until it is returned.
    pub async fn next(&mut self) -> AgentEvent {
        loop {
            if !self.unsent.is_empty() {
                while self.unsent.len() < PAYLOAD_TASKS_MAX {
                    let Some(routed) = self.changes.try_next() else {
                        break;
                    };
                    if let Some(outcome) = self.consider(routed) {
                        return outcome;
                    }
                }
                return AgentEvent::Payload(std::mem::take(&mut self.unsent));
            }
            let routed = self.changes.next().await;
            if let Some(outcome) = self.consider(routed) {
                return outcome;
            }
        }
    }

    /// Takes in one change; returns what must be said at once, if anything.
    fn consider(&mut self, routed: Routed) -> Option<AgentEvent> {
        match routed {
            Routed::Change(event) if event.key.starts_with(keys::INSTANCES) => {
                self.consider_instance(event)
            }
            Routed::Change(event) => {
                self.consider_task(event);
                None
            }
            Routed::Lagged => {
                self.unsent.clear();
                Some(AgentEvent::Resync)
            }
            Routed::Closed => Some(AgentEvent::Closed),
        }
    }

    fn consider_task(&mut self, event: flotilla_store::Event) {
        if event.kind == EventKind::Delete {
            // Deleted tasks are long stopped; the agent forgot them already.
            let id = event.key.rsplit('/').next().unwrap_or_default();
            self.sent.retain(|arn, _| !arn.ends_with(&format!("/{id}")));
            return;
        }
        let record: TaskRecord = match serde_json::from_slice(&event.value) {
            Ok(record) => record,
            Err(error) => {
                tracing::error!(key = %event.key, %error, "task record does not decode");
                return;
            }
        };
        if record.instance_id != self.instance.instance_id {
            return;
        }
        let desired = record.agent_desired_status().to_owned();
        if self.sent.get(&record.arn()) == Some(&desired) {
            return;
        }
        self.sent.insert(record.arn(), desired);
        self.unsent.retain(|t| t.task_arn != record.arn());
        self.unsent.push(task_payload(&record));
    }

    fn consider_instance(&mut self, event: flotilla_store::Event) -> Option<AgentEvent> {
        if event.kind == EventKind::Delete {
            return Some(AgentEvent::Deregistered);
        }
        let record: InstanceRecord = match serde_json::from_slice(&event.value) {
            Ok(record) => record,
            Err(error) => {
                tracing::error!(key = %event.key, %error, "instance record does not decode");
                return None;
            }
        };
        if !record.is_live() {
            return Some(AgentEvent::Deregistered);
        }
        let ours = record.agent_connection_id.as_deref() == Some(self.connection_id.as_str());
        if ours {
            self.seen_own_connection = true;
            None
        } else if self.seen_own_connection && record.agent_connection_id.is_some() {
            Some(AgentEvent::Superseded)
        } else {
            None
        }
    }
}

/// The payload entry of one task.
pub fn task_payload(record: &TaskRecord) -> TaskPayload {
    TaskPayload {
        task_arn: record.arn(),
        cluster_arn: record.task.cluster_arn.clone().unwrap_or_default(),
        desired_status: record.agent_desired_status().to_owned(),
        version: record.task.version.unwrap_or(1),
        task_definition: record.definition.clone(),
        overrides: record.task.overrides.clone(),
        network_interface: record.network_interface.clone(),
        stopped_reason: (record.agent_desired_status() == "STOPPED")
            .then(|| record.task.stopped_reason.clone())
            .flatten(),
        fargate: record.task.launch_type == Some(flotilla_types::ecs::LaunchType::Fargate),
        // Filled in by the edge, which holds IAM, as the payload is sent.
        role_credentials: None,
        execution_role_credentials: None,
        credentials_error: None,
    }
}

/// Every task of an instance its agent must act on: those meant to run, and
/// those meant to stop that have not been reported stopped.
fn payload_for(
    store: &dyn Store,
    cluster: &str,
    instance_id: &str,
) -> Result<Vec<TaskPayload>, ApiError> {
    Ok(scan::<TaskRecord>(store, &keys::tasks_of(cluster))?
        .into_iter()
        .map(|found| found.value)
        .filter(|record| record.instance_id == instance_id)
        .filter(|record| record.desired_status() == "RUNNING" || record.last_status() != "STOPPED")
        .map(|record| task_payload(&record))
        .collect())
}

/// A task's health from its containers': only essential containers with a
/// health check count; any UNHEALTHY makes it UNHEALTHY, any UNKNOWN (or
/// none to count) UNKNOWN, else HEALTHY.
pub fn task_health(record: &TaskRecord) -> HealthStatus {
    let checked: Vec<HealthStatus> = record
        .definition
        .container_definitions
        .iter()
        .flatten()
        .filter(|d| d.essential != Some(false) && d.health_check.is_some())
        .map(|d| {
            record
                .task
                .containers
                .iter()
                .flatten()
                .find(|c| c.name == d.name)
                .and_then(|c| c.health_status)
                .unwrap_or(HealthStatus::Unknown)
        })
        .collect();
    if checked.contains(&HealthStatus::Unhealthy) {
        HealthStatus::Unhealthy
    } else if checked.is_empty() || checked.contains(&HealthStatus::Unknown) {
        HealthStatus::Unknown
    } else {
        HealthStatus::Healthy
    }
}

impl Ecs {
    /// Checks that an agent may connect for `instance` of `cluster` (names
    /// or ARNs, as the query parameters carry them).
    pub fn resolve_agent_instance(
        &self,
        cluster: &str,
        instance: &str,
    ) -> Result<AgentInstance, AgentRefusal> {
        let cluster_name = self
            .cluster_name(Some(cluster))
            .map_err(|error| AgentRefusal::Invalid(error.message))?;
        self.active_cluster(Some(&cluster_name))
            .map_err(|_| AgentRefusal::ClusterNotFound {
                cluster: cluster_name.clone(),
            })?;
        let not_found = || AgentRefusal::InstanceNotFound {
            cluster: cluster_name.clone(),
            instance: instance.to_owned(),
        };
        let instance_id = self
            .instance_id_in(&cluster_name, instance)
            .ok_or_else(not_found)?;
        let found = self
            .get_instance(&cluster_name, &instance_id)
            .map_err(AgentRefusal::Api)?
            .ok_or_else(not_found)?;
        if !found.value.is_live() {
            return Err(AgentRefusal::InstanceInactive {
                instance: found.value.arn(),
            });
        }
        Ok(AgentInstance {
            cluster_arn: self.cluster_arn(&cluster_name),
            instance_arn: found.value.arn(),
            cluster: cluster_name,
            instance_id,
        })
    }

    /// Subscribes to what concerns one connection. Call it before
    /// [`Ecs::set_agent_connected`] and the first payload, so that nothing
    /// committed in between is missed.
    pub fn watch_agent(&self, instance: &AgentInstance, connection_id: &str) -> AgentWatch {
        AgentWatch {
            store: Arc::clone(&self.store),
            instance: instance.clone(),
            connection_id: connection_id.to_owned(),
            changes: self.agent_router.subscribe(
                &self.store,
                &instance.cluster,
                &instance.instance_id,
            ),
            sent: HashMap::new(),
            unsent: Vec::new(),
            seen_own_connection: false,
        }
    }

    /// Every task of an instance its agent must act on.
    pub fn payload_for_instance(
        &self,
        cluster: &str,
        instance_id: &str,
    ) -> Result<Vec<TaskPayload>, ApiError> {
        payload_for(self.store.as_ref(), cluster, instance_id)
    }

    /// Marks the instance's agent connected through `connection_id`, which
    /// supersedes any older connection; or disconnected, when
    /// `connection_id` is still the current one. Returns whether the record
    /// now names this connection (connect) or was changed (disconnect).
    pub async fn set_agent_connected(
        &self,
        instance: &AgentInstance,
        connection_id: &str,
        connected: bool,
    ) -> Result<bool, ApiError> {
        let now_ms = self.clock.now_ms();
        let key = keys::instance(&instance.cluster, &instance.instance_id);
        records::mutate(self.store.as_ref(), || {
            let Some(found) = self.get_instance(&instance.cluster, &instance.instance_id)? else {
                return Ok(Attempt::Done(false));
            };
            let mut record = found.value;
            if connected {
                if !record.is_live() {
                    return Ok(Attempt::Done(false));
                }
                record.instance.agent_connected = Some(true);
                record.agent_connection_id = Some(connection_id.to_owned());
            } else {
                if record.agent_connection_id.as_deref() != Some(connection_id) {
                    return Ok(Attempt::Done(false));
                }
                record.instance.agent_connected = Some(false);
                record.agent_connection_id = None;
            }
            record.agent_seen_at_ms = now_ms;
            record.touch();
            let txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, true))
        })
        .await
    }

    /// Marks every agent disconnected. The binary calls this once at start:
    /// connections do not outlive the process that held them.
    pub async fn reset_agent_connections(&self) -> Result<usize, ApiError> {
        let connected: Vec<InstanceRecord> =
            scan::<InstanceRecord>(self.store.as_ref(), keys::INSTANCES)?
                .into_iter()
                .map(|found| found.value)
                .filter(|record| {
                    record.agent_connection_id.is_some()
                        || record.instance.agent_connected == Some(true)
                })
                .collect();
        let mut reset = 0;
        for record in connected {
            let key = keys::instance(&record.cluster, &record.instance_id);
            reset += records::mutate(self.store.as_ref(), || {
                let Some(found) = self.get_instance(&record.cluster, &record.instance_id)? else {
                    return Ok(Attempt::Done(0));
                };
                let mut value = found.value;
                value.instance.agent_connected = Some(false);
                value.agent_connection_id = None;
                value.touch();
                Ok(Attempt::Commit(
                    Txn::new()
                        .expect(&key, found.revision)
                        .put(&key, records::encode(&value)),
                    1,
                ))
            })
            .await?;
        }
        Ok(reset)
    }

    /// Stores container health the agent reported for one of its tasks and
    /// the task health derived from it. Writes only when something changed.
    pub async fn record_task_health(
        &self,
        instance: &AgentInstance,
        task_arn: &str,
        containers: &[ContainerHealth],
    ) -> Result<(), ApiError> {
        let task_id = self
            .task_id_in(&instance.cluster, task_arn)
            .ok_or_else(|| {
                ApiError::invalid_parameter(format!(
                    "task {task_arn} is not a task of cluster {}",
                    instance.cluster
                ))
            })?;
        let mut reported = Vec::with_capacity(containers.len());
        for container in containers {
            let status = match container.health_status.as_str() {
                "HEALTHY" => HealthStatus::Healthy,
                "UNHEALTHY" => HealthStatus::Unhealthy,
                "UNKNOWN" => HealthStatus::Unknown,
                other => {
                    return Err(ApiError::invalid_parameter(format!(
                        "Invalid health status {other:?} for container {}: must be HEALTHY, UNHEALTHY or UNKNOWN",
                        container.container_name
                    )))
                }
            };
            reported.push((container.container_name.as_str(), status));
        }
        let instance_id = instance.instance_id.as_str();
        let now_ms = self.clock.now_ms();
        self.change_task(&instance.cluster, &task_id, |record, _| {
            // An agent speaks only for its own tasks, and not for stopped ones.
            if record.instance_id != instance_id || record.last_status() == "STOPPED" {
                return false;
            }
            let before = record.task.clone();
            for (name, status) in &reported {
                if let Some(container) = record
                    .task
                    .containers
                    .iter_mut()
                    .flatten()
                    .find(|c| c.name.as_deref() == Some(name))
                {
                    container.health_status = Some(*status);
                }
            }
            record.task.health_status = Some(task_health(record));
            let changed = record.task != before;
            if changed {
                record.note_healthy(now_ms);
                record.task.version = Some(record.task.version.unwrap_or(0) + 1);
            }
            changed
        })
        .await?;
        Ok(())
    }
}
