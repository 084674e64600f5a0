//! What the agent keeps of each task, in memory and in
//! `DATA_DIR/tasks/{taskId}.json`: the payload it was given and everything it
//! has learned since. The managed task that owns a record is its only writer.

use std::collections::BTreeMap;

use flotilla_runtime::{BoundPort, ContainerState, Protocol, Status};
use flotilla_types::acs::{conventions, TaskPayload};
use flotilla_types::ecs::ContainerDefinition;
use serde::{Deserialize, Serialize};

use super::order::ContainerView;
use super::spec::{engine_container_name, task_id_of};
use super::status::{ContainerStatus, DesiredStatus, Health, TaskStatus};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    pub payload: TaskPayload,
    pub desired: DesiredStatus,
    /// Why the task is stopping, once it is: the first reason wins.
    pub stop_reason: Option<String>,
    /// One per container definition, in definition order.
    pub containers: Vec<ContainerRecord>,
    pub resources: ResourcesRecord,
    pub pull_started_at_ms: Option<u64>,
    pub pull_stopped_at_ms: Option<u64>,
    /// When the last container stopped.
    pub execution_stopped_at_ms: Option<u64>,
    /// What has been handed to the reporter so far.
    pub reported: Reported,
    /// The id in the task's credentials URI, for a task with a task role.
    /// Not a credential: the credentials themselves stay in memory.
    #[serde(default)]
    pub credentials_id: Option<String>,
}

/// Task-wide resources set up before the first container is created.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesRecord {
    pub provisioned: bool,
    /// The pause container was stopped after the task's containers.
    pub released: bool,
    pub pause_container_id: Option<String>,
    /// Task-scoped engine volumes this agent created, removed at cleanup.
    pub task_volumes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    pub name: String,
    pub engine_name: String,
    pub known: ContainerStatus,
    pub essential: bool,
    pub runtime_id: Option<String>,
    pub exit_code: Option<i64>,
    /// Why it stopped or failed, when there is more to say than an exit code.
    pub reason: Option<String>,
    pub health: Health,
    pub image_digest: Option<String>,
    pub bound_ports: Vec<PortRecord>,
    /// Address on each engine network, by network name.
    pub ip_addresses: BTreeMap<String, String>,
    pub pulled_at_ms: Option<u64>,
    pub created_at_ms: Option<u64>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// The secret part of this container's metadata endpoint URL.
    pub metadata_token: String,
}

/// A host port bound for the container (a serializable `BoundPort`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRecord {
    pub container_port: u16,
    pub host_port: u16,
    pub udp: bool,
    pub host_ip: String,
}

impl PortRecord {
    pub fn from_bound(port: &BoundPort) -> Self {
        Self {
            container_port: port.container_port,
            host_port: port.host_port,
            udp: port.protocol == Protocol::Udp,
            host_ip: port.host_ip.clone(),
        }
    }

    pub fn to_bound(&self) -> BoundPort {
        BoundPort {
            container_port: self.container_port,
            host_port: self.host_port,
            protocol: if self.udp {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            host_ip: self.host_ip.clone(),
        }
    }
}

/// The statuses last handed to the reporter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reported {
    pub task: Option<TaskStatus>,
    pub containers: BTreeMap<String, ContainerStatus>,
}

impl TaskRecord {
    /// A fresh record for a payload; `token` makes each container's metadata token.
    pub fn new(payload: TaskPayload, mut token: impl FnMut() -> String) -> Self {
        let task_id = task_id_of(&payload.task_arn).to_owned();
        let family = payload.task_definition.family.clone().unwrap_or_default();
        let revision = payload.task_definition.revision.unwrap_or(0);
        let containers = payload
            .task_definition
            .container_definitions
            .iter()
            .flatten()
            .enumerate()
            .map(|(index, definition)| {
                let name = definition
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("container-{index}"));
                ContainerRecord {
                    engine_name: engine_container_name(&family, revision, &name, &task_id),
                    name,
                    known: ContainerStatus::None,
                    essential: definition.essential.unwrap_or(true),
                    runtime_id: None,
                    exit_code: None,
                    reason: None,
                    health: Health::Unknown,
                    image_digest: None,
                    bound_ports: Vec::new(),
                    ip_addresses: BTreeMap::new(),
                    pulled_at_ms: None,
                    created_at_ms: None,
                    started_at_ms: None,
                    finished_at_ms: None,
                    metadata_token: token(),
                }
            })
            .collect();
        let desired = DesiredStatus::from_wire(&payload.desired_status);
        let stop_reason = if desired == DesiredStatus::Stopped {
            payload.stopped_reason.clone()
        } else {
            None
        };
        Self {
            payload,
            desired,
            stop_reason,
            containers,
            resources: ResourcesRecord::default(),
            pull_started_at_ms: None,
            pull_stopped_at_ms: None,
            execution_stopped_at_ms: None,
            reported: Reported::default(),
            credentials_id: None,
        }
    }

    pub fn task_arn(&self) -> &str {
        &self.payload.task_arn
    }

    pub fn task_id(&self) -> &str {
        task_id_of(&self.payload.task_arn)
    }

    pub fn definitions(&self) -> &[ContainerDefinition] {
        self.payload
            .task_definition
            .container_definitions
            .as_deref()
            .unwrap_or_default()
    }

    pub fn definition(&self, name: &str) -> Option<&ContainerDefinition> {
        self.definitions()
            .iter()
            .find(|definition| definition.name.as_deref() == Some(name))
    }

    pub fn known(&self) -> TaskStatus {
        super::status::task_status_of(&self.containers.iter().map(|c| c.known).collect::<Vec<_>>())
    }

    pub fn views(&self) -> Vec<ContainerView<'_>> {
        self.containers
            .iter()
            .map(|container| ContainerView {
                name: &container.name,
                status: container.known,
                has_started: container.started_at_ms.is_some(),
                exit_code: container.exit_code,
                health: container.health,
            })
            .collect()
    }

    /// Asks the task to stop; the first reason given is the one reported.
    pub fn request_stop(&mut self, reason: Option<String>) {
        self.desired = DesiredStatus::Stopped;
        if self.stop_reason.is_none() {
            self.stop_reason = reason;
        }
    }
}

impl ContainerRecord {
    /// Moves to `to` if the transition table allows it; false (and no change) otherwise.
    pub fn transition(&mut self, to: ContainerStatus) -> bool {
        if super::status::container_transition_allowed(self.known, to) {
            self.known = to;
            true
        } else {
            false
        }
    }

    /// Takes in what the engine says of the container now: forward moves
    /// only, so a stale answer never undoes what the agent already knows.
    pub fn observe(&mut self, state: &ContainerState, now_ms: u64) {
        self.runtime_id = Some(state.id.clone());
        // The digest the pull named stays: it is what the container was made
        // from, while the engine's record of the tag may have moved since.
        if self.image_digest.is_none() {
            self.image_digest.clone_from(&state.image_digest);
        }
        self.health = Health::from_runtime(state.health);
        if !state.ip_addresses.is_empty() {
            self.ip_addresses.clone_from(&state.ip_addresses);
        }
        match state.status {
            Status::Created => {
                self.transition(ContainerStatus::Created);
            }
            Status::Running => {
                if self.transition(ContainerStatus::Running)
                    || self.known == ContainerStatus::Running
                {
                    self.started_at_ms =
                        self.started_at_ms.or(state.started_at_ms).or(Some(now_ms));
                    self.bound_ports = state
                        .bound_ports
                        .iter()
                        .map(PortRecord::from_bound)
                        .collect();
                }
            }
            Status::Exited { exit_code } => {
                if self.known != ContainerStatus::Stopped {
                    // An exited container ran, unless the engine says it never started.
                    if self.started_at_ms.is_none() {
                        self.started_at_ms = state.started_at_ms.or(Some(now_ms));
                    }
                    self.known = ContainerStatus::Stopped;
                    self.exit_code = Some(exit_code);
                    self.finished_at_ms = state.finished_at_ms.or(Some(now_ms));
                    if self.reason.is_none() {
                        self.reason = state.error.as_deref().map(|error| {
                            if error == conventions::ENGINE_OOM_KILLED {
                                conventions::OUT_OF_MEMORY_REASON.to_owned()
                            } else {
                                error.to_owned()
                            }
                        });
                    }
                }
            }
        }
    }

    /// The engine has no such container any more.
    pub fn observe_gone(&mut self, now_ms: u64) {
        if matches!(
            self.known,
            ContainerStatus::Created | ContainerStatus::Running
        ) {
            self.known = ContainerStatus::Stopped;
            self.finished_at_ms = Some(now_ms);
            if self.reason.is_none() {
                self.reason = Some("container was removed from the engine".to_owned());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn state(status: Status) -> ContainerState {
        ContainerState {
            id: "abc".to_owned(),
            name: "n".to_owned(),
            image: "busybox".to_owned(),
            image_digest: None,
            labels: BTreeMap::new(),
            status,
            health: flotilla_runtime::Health::Unknown,
            bound_ports: vec![],
            ip_addresses: BTreeMap::new(),
            started_at_ms: Some(5),
            finished_at_ms: Some(9),
            error: None,
        }
    }

    fn container(known: ContainerStatus) -> ContainerRecord {
        let payload: TaskPayload = serde_json::from_value(serde_json::json!({
            "taskArn": "arn:aws:ecs:us-east-1:000000000000:task/default/t1",
            "clusterArn": "arn:aws:ecs:us-east-1:000000000000:cluster/default",
            "desiredStatus": "RUNNING", "version": 1,
            "taskDefinition": {"family": "web", "revision": 3, "containerDefinitions": [{"name": "app", "image": "busybox"}]}
        }))
        .unwrap();
        let mut record = TaskRecord::new(payload, || "token".to_owned())
            .containers
            .remove(0);
        record.known = known;
        record
    }

    #[test]
    fn recovery_observations_only_move_forward() {
        // Created while we were away, then started by nobody: stays Created.
        let mut record = container(ContainerStatus::Pulled);
        record.observe(&state(Status::Created), 100);
        assert_eq!(record.known, ContainerStatus::Created);
        // Running while known Created: the start happened.
        record.observe(&state(Status::Running), 100);
        assert_eq!(
            (record.known, record.started_at_ms),
            (ContainerStatus::Running, Some(5))
        );
        // Exited while we were away: stopped with its exit code.
        record.observe(&state(Status::Exited { exit_code: 137 }), 100);
        assert_eq!(
            (record.known, record.exit_code, record.finished_at_ms),
            (ContainerStatus::Stopped, Some(137), Some(9))
        );
        // A stale "running" afterwards changes nothing.
        record.observe(&state(Status::Running), 100);
        assert_eq!(record.known, ContainerStatus::Stopped);
    }

    #[test]
    fn a_vanished_container_is_stopped_but_a_never_created_one_is_not() {
        let mut running = container(ContainerStatus::Running);
        running.observe_gone(7);
        assert_eq!(running.known, ContainerStatus::Stopped);
        assert!(running.reason.is_some());
        let mut pulled = container(ContainerStatus::Pulled);
        pulled.observe_gone(7);
        assert_eq!(pulled.known, ContainerStatus::Pulled);
        assert_eq!(pulled.engine_name, "ecs-web-3-app-t1");
    }
}
