//! The HTTP edge: one port that serves every AWS-style service Flotilla
//! implements, each in its own AWS protocol (JSON 1.0, JSON 1.1, Query).
//!
//! A request's path through the edge:
//!
//! ```text
//! bytes ─▶ service registry (X-Amz-Target prefix, or the SigV4 scope's service)
//!       ─▶ bounded body ─▶ SigV4 verify ─▶ protocol layer ─▶ typed request ─▶ handler
//!                                                                              │
//! bytes ◀── JSON or XML answer or error in the service's protocol, x-amzn-RequestId ◀┘
//! ```
//!
//! *Architecture invariant:* only this crate knows HTTP and JSON framing, and
//! only here is the wall clock read and are fresh ids drawn ([`SystemClock`],
//! [`RandomIds`]); they are handed to the control plane as parameters.

use std::sync::Arc;

use flotilla_control::{Clock, Ecs, IdSource};
use flotilla_sigv4::Credentials;

mod access;
mod agent_ws;
mod api;
mod loops;
mod metrics;
mod registry;
mod s3;
mod secrets;
mod services;
pub mod task_roles;

pub use api::router;
pub use metrics::Metrics;

/// Largest request body the edge reads; anything bigger is refused before it
/// is buffered. ECS's own largest request (a task definition) is 64 KiB.
pub const REQUEST_BODY_MAX_BYTES: usize = 1024 * 1024;
/// Largest ECR request body: UploadLayerPart carries a layer part in
/// base64, and ECR's suggested part size is 10 MiB.
pub const ECR_REQUEST_BODY_MAX_BYTES: usize = 20 * 1024 * 1024;
/// Largest CloudWatch Logs request body: PutLogEvents carries up to
/// 1,048,576 bytes of messages, which JSON escaping can make several times
/// longer.
pub const LOGS_REQUEST_BODY_MAX_BYTES: usize = 8 * 1024 * 1024;

/// The access key and secret that `flotilla up` and `flotilla server` accept
/// when no credentials file is given, for local use.
pub const DEFAULT_ACCESS_KEY_ID: &str = "test";
pub const DEFAULT_SECRET_ACCESS_KEY: &str = "test";

/// Everything a request handler needs, shared by all connections.
pub struct Edge {
    pub ecs: Arc<Ecs>,
    pub credentials: Arc<Credentials>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
    pub metrics: Metrics,
    /// The IAM principal each access key acts as; the account root otherwise.
    pub principals: std::collections::HashMap<String, String>,
    pub store: Arc<dyn flotilla_store::Store>,
    /// Silence after which an agent connection is closed and the agent
    /// marked disconnected; `flotilla_types::acs::HEARTBEAT_TIMEOUT_MS`
    /// outside tests.
    pub agent_heartbeat_timeout_ms: u64,
    /// The image registry (`/v2/` and the ECR API), when this server runs one.
    pub registry: Option<Arc<flotilla_registry::Registry>>,
    /// The CloudWatch Logs store, when this server keeps one.
    pub logs: Option<Arc<flotilla_logs::LogsService>>,
    /// Secrets Manager and Parameter Store, when this server keeps them.
    pub secrets: Option<Arc<flotilla_secrets::Services>>,
    /// The Elastic Load Balancing API, when this server keeps load balancers.
    pub elbv2: Option<Arc<flotilla_elbv2::Elbv2>>,
    /// IAM's users, roles, policies and keys, and STS's sessions.
    pub iam: Arc<flotilla_iam::Iam>,
    /// Lifetime of the credentials of tasks' roles (shortened for tests).
    pub task_credentials_duration_seconds: i32,
    /// The S3-compatible object store, when this server keeps one.
    pub s3: Option<Arc<flotilla_s3::S3>>,
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // This is the one place the wall clock is read.
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64)
    }
}

/// Random version-4 UUIDs.
pub struct RandomIds;

impl IdSource for RandomIds {
    fn uuid(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

/// A request signed for another region than the one this endpoint serves.
/// The first sentence is AWS's; the rest tells a new user, whose AWS
/// configuration often names another region, the two ways to fix it.
pub(crate) fn wrong_region(signed_for: &str, served: &str) -> flotilla_types::ApiError {
    flotilla_types::ApiError::new(
        "InvalidSignatureException",
        400,
        format!(
            "Credential should be scoped to a valid region, not '{signed_for}'. This endpoint serves \
             '{served}': sign for it (--region {served} on the AWS CLI, or AWS_REGION={served}), or \
             start the server for yours (flotilla up --region {signed_for})."
        ),
    )
}
