//! The agent control channel: messages between the control plane and the
//! agent on each container instance, modelled on ECS's agent communication
//! service (ACS).
//!
//! The agent opens a websocket to `GET /ws/agent` on the API endpoint (the
//! one DiscoverPollEndpoint returns), authenticated by a SigV4 presigned query
//! (service `ecs`) and naming itself with the query parameters
//! `clusterArn`, `containerInstanceArn` and `seqNum` (the last payload
//! sequence number it applied, 0 on first connect). Every frame is one JSON
//! text message of [`ToAgent`] or [`FromAgent`].
//!
//! ```text
//! agent                                   control plane
//!   │── GET /ws/agent?...(presigned) ───────▶│ marks agentConnected = true
//!   │◀──────────── Payload{seq 1, all tasks} │ full state of the instance's tasks
//!   │── Ack{messageId} ─────────────────────▶│
//!   │◀──────────── Payload{seq 2, changed}   │ on every desired-status change
//!   │── Ack{messageId} ─────────────────────▶│
//!   │── Heartbeat ──────────────────────────▶│ every HEARTBEAT_INTERVAL_MS
//!   │◀──────────────────── Heartbeat         │
//!   ×  (silence > HEARTBEAT_TIMEOUT_MS)      │ marks agentConnected = false
//! ```
//!
//! Task and container state changes travel the other way as ordinary signed
//! API calls (SubmitTaskStateChange, SubmitContainerStateChange), as they do
//! in ECS, so they are durable once acknowledged.

use serde::{Deserialize, Serialize};

use crate::ecs::{TaskDefinition, TaskOverride};

/// How often each side sends a heartbeat.
pub const HEARTBEAT_INTERVAL_MS: u64 = 10_000;

/// Silence after which the control plane considers the agent disconnected.
pub const HEARTBEAT_TIMEOUT_MS: u64 = 30_000;

/// Path of the websocket on the API endpoint.
pub const PATH: &str = "/ws/agent";

/// Messages the control plane sends an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ToAgent {
    /// Tasks of this instance whose desired state the agent must bring about.
    /// The first payload of a connection carries every task of the instance;
    /// later ones carry the tasks that changed.
    #[serde(rename_all = "camelCase")]
    Payload {
        message_id: String,
        seq_num: u64,
        tasks: Vec<TaskPayload>,
    },
    #[serde(rename_all = "camelCase")]
    Heartbeat { message_id: String },
    /// The instance was deregistered: the agent stops its tasks and exits.
    #[serde(rename_all = "camelCase")]
    Deregistered { reason: String },
    /// Fresh credentials of a task's role, sent before the ones the agent
    /// holds expire (ECS's `IAMRoleCredentialsMessage`); acknowledged with
    /// [`FromAgent::IamRoleCredentialsAck`].
    #[serde(rename_all = "camelCase")]
    IamRoleCredentials {
        message_id: String,
        task_arn: String,
        role_type: RoleType,
        credentials: RoleCredentials,
    },
}

/// Which of a task's roles credentials are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RoleType {
    /// `taskRoleArn`: served to the task's containers.
    TaskApplication,
    /// `executionRoleArn`: used by the agent itself for the task (image
    /// pulls from Flotilla's registry, awslogs, secrets, environment files).
    TaskExecution,
}

/// Temporary credentials of a role assumed for one task by
/// `ecs-tasks.amazonaws.com`. Never printed: `Debug` shows the role and
/// expiry only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleCredentials {
    pub role_arn: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// When they stop working, in milliseconds since the Unix epoch.
    pub expiration_ms: u64,
}

impl std::fmt::Debug for RoleCredentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RoleCredentials")
            .field("role_arn", &self.role_arn)
            .field("expiration_ms", &self.expiration_ms)
            .finish_non_exhaustive()
    }
}

/// Messages an agent sends the control plane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum FromAgent {
    #[serde(rename_all = "camelCase")]
    Ack { message_id: String, seq_num: u64 },
    #[serde(rename_all = "camelCase")]
    Heartbeat { sent_at_ms: u64 },
    /// The agent holds the credentials of a [`ToAgent::IamRoleCredentials`].
    #[serde(rename_all = "camelCase")]
    IamRoleCredentialsAck {
        message_id: String,
        task_arn: String,
    },
    /// Container health as the runtime's health checks report it (ECS's agent
    /// sends this over its telemetry channel); the control plane stores it as
    /// each container's `healthStatus` and derives the task's.
    #[serde(rename_all = "camelCase")]
    TaskHealth {
        task_arn: String,
        containers: Vec<ContainerHealth>,
    },
    /// What each running task of the instance used over the last sampling
    /// interval: one message per instance every [`STATS_INTERVAL_MS`] (ECS's
    /// agent sends these over its telemetry channel). The set is the whole
    /// of the instance's running tasks: a task absent from it is not running.
    #[serde(rename_all = "camelCase")]
    TaskStats {
        /// When the sample was taken, by the agent's clock.
        sampled_at_ms: u64,
        tasks: Vec<TaskUsage>,
    },
}

/// How often an agent samples its tasks and reports their usage.
pub const STATS_INTERVAL_MS: u64 = 10_000;

/// Most tasks one `TaskStats` message may carry; a host with more reports
/// the first ones (a host runs far fewer tasks than this).
pub const STATS_TASKS_MAX: usize = 512;

/// One task's resource use over a sampling interval, summed over its
/// containers, in the units ECS's metrics use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskUsage {
    pub task_arn: String,
    /// CPU units (1,024 to a vCPU) used on average over the interval.
    pub cpu_units_used: f64,
    /// Memory in use at the sample, in MiB.
    pub memory_mib_used: f64,
    /// Bytes received and sent over the interval.
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    /// Bytes its containers read from and wrote to storage since they
    /// started, as Container Insights reports them. Absent from agents
    /// that do not measure them.
    #[serde(default)]
    pub storage_read_bytes: u64,
    #[serde(default)]
    pub storage_write_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerHealth {
    pub container_name: String,
    /// HEALTHY, UNHEALTHY or UNKNOWN.
    pub health_status: String,
}

/// Conventions the agent and the control plane share beyond the message types.
pub mod conventions {
    /// Attribute an agent registers with when it runs with `--external`; only
    /// such instances take launch type EXTERNAL tasks, and only they.
    pub const EXTERNAL_ATTRIBUTE: &str = "ecs.capability.external";
    /// Attribute an agent registers with when it runs with `--fargate`: the
    /// host is part of its cluster's Fargate pool, takes launch type FARGATE
    /// tasks (of the FARGATE and FARGATE_SPOT capacity providers) only, and
    /// is never listed or described as a container instance.
    pub const FARGATE_ATTRIBUTE: &str = "flotilla.capability.fargate";
    /// The Fargate platform version every Fargate task runs on, which
    /// `LATEST` names.
    pub const FARGATE_PLATFORM_VERSION: &str = "1.4.0";
    /// The range instances' awsvpc task subnets (one /24 each) are cut from:
    /// RFC 6598's shared address space, which no LAN or cloud VPC hands out.
    pub const TASK_SUBNETS_CIDR: &str = "100.64.0.0/10";
    /// Member of the instance identity document in which an agent lists
    /// the subnets of [`TASK_SUBNETS_CIDR`] its container engine's networks
    /// already hold (other than the instance's own task network), so that the
    /// control plane gives the instance a task subnet clear of them.
    pub const SUBNETS_IN_USE_MEMBER: &str = "subnetsInUse";
    /// Most entries of [`SUBNETS_IN_USE_MEMBER`] a registration may carry.
    pub const SUBNETS_IN_USE_MAX: usize = 256;
    /// Type of the container-instance attachment that describes the
    /// instance's task subnet: ECS's trunk network interface, which awsvpc
    /// tasks hang off. [`TASK_SUBNET_CIDR_DETAIL`] names its subnet.
    pub const TASK_SUBNET_ATTACHMENT_TYPE: &str = "ElasticNetworkInterface";
    /// Detail of that attachment whose value is the task subnet in CIDR form.
    pub const TASK_SUBNET_CIDR_DETAIL: &str = "subnetCidrBlock";
    /// Name of an instance's task network on its host, from its EC2-style
    /// instance id.
    pub fn task_network_name(instance_id: &str) -> String {
        format!("flotilla-awsvpc-{instance_id}")
    }
    /// A STOPPED task-state reason starting with this maps to stop code
    /// EssentialContainerExited.
    pub const ESSENTIAL_EXITED_REASON: &str = "Essential container in task exited";
    /// The reason of a container the kernel killed for passing its memory
    /// limit, and of its task when the container was essential, as ECS
    /// words it.
    pub const OUT_OF_MEMORY_REASON: &str = "OutOfMemoryError: Container killed due to memory usage";
    /// What the container engine says of a container the kernel OOM-killed.
    pub const ENGINE_OOM_KILLED: &str = "OOMKilled";
    /// A STOPPED task-state reason starting with one of these maps to stop
    /// code TaskFailedToStart.
    pub const FAILED_TO_START_REASONS: &[&str] = &[
        "CannotPullContainerError",
        "CannotCreateContainerError",
        "CannotStartContainerError",
        "ResourceInitializationError",
    ];
}

/// One task as the agent needs it to run: everything resolved, nothing to
/// look up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPayload {
    pub task_arn: String,
    pub cluster_arn: String,
    /// RUNNING or STOPPED.
    pub desired_status: String,
    /// The task's version; a payload older than what the agent holds is ignored.
    pub version: i64,
    pub task_definition: TaskDefinition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<TaskOverride>,
    /// Set for awsvpc tasks: the address the control plane assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface: Option<TaskNetworkInterface>,
    /// Why the task is being stopped, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    /// A launch type FARGATE task: isolated as Fargate isolates it (hard CPU
    /// and memory limits from its task-level size, no privileged mode, only
    /// the capabilities Fargate allows).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fargate: bool,
    /// Credentials of the task role (`taskRoleArn`), for a task to run.
    /// The agent keeps them in memory only, never in its task records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_credentials: Option<RoleCredentials>,
    /// Credentials of the task execution role (`executionRoleArn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_credentials: Option<RoleCredentials>,
    /// Why a role of the task could not be assumed: the agent stops the task
    /// with this reason instead of starting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_error: Option<String>,
}

/// The task's own address in awsvpc mode (ECS's elastic network interface).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskNetworkInterface {
    pub attachment_id: String,
    pub private_ipv4_address: String,
    /// The instance's task subnet, e.g. `100.64.3.0/24`.
    pub subnet_cidr: String,
    pub gateway_ipv4_address: String,
    pub mac_address: String,
}
