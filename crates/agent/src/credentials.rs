//! Task role credentials on the agent: what the control plane sent for each
//! task's roles (in the payload that starts it, then in
//! `IamRoleCredentials` before they expire), held in memory only, and the
//! ECS credentials endpoint that serves the task role's to its containers.
//!
//! ```text
//!  payload / IamRoleCredentials ─▶ TaskCredentials (task ARN → id, credentials)
//!  container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/credentials/{id}
//!  SDK ─▶ GET http://169.254.170.2/v2/credentials/{id} ─▶ metadata::serve ─▶ JSON
//! ```
//!
//! The id is 122 random bits, made when the agent first sees the task and
//! kept in its task record (containers carry it in their environment); the
//! credentials never reach the disk, so after a restart the agent has none
//! until the control plane's full payload on reconnection brings fresh ones.
//!
//! 169.254.170.2 is ECS's address for the endpoint. The agent adds it to the
//! host's loopback interface ([`prepare_address`]): containers on a bridge
//! (the default bridge, or an instance's awsvpc task network) reach it
//! through their gateway, the host, which owns the address; host-mode
//! containers share the host's loopback. Adding it needs root (or
//! CAP_NET_ADMIN); without it the agent logs why and tasks run without the
//! endpoint.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use flotilla_types::acs::{RoleCredentials, RoleType};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::clock::to_rfc3339;

/// ECS's address of the credentials endpoint.
pub const CREDENTIALS_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
/// Its port: plain HTTP, as SDKs expect.
pub const CREDENTIALS_PORT: u16 = 80;
/// Path prefix of a task's credentials; the id follows.
pub const RELATIVE_URI_PREFIX: &str = "/v2/credentials/";
/// Connections relayed to the control plane at once.
pub const RELAY_CONNECTIONS_MAX: usize = 256;

/// The relative URI a task's containers fetch their credentials from.
pub fn relative_uri(credentials_id: &str) -> String {
    format!("{RELATIVE_URI_PREFIX}{credentials_id}")
}

#[derive(Default)]
struct Entry {
    credentials_id: String,
    application: Option<RoleCredentials>,
    execution: Option<RoleCredentials>,
}

#[derive(Default)]
struct Held {
    /// Task ARN → what is held for it.
    tasks: HashMap<String, Entry>,
    /// Credentials id → task ARN.
    ids: HashMap<String, String>,
}

/// Every task's role credentials on this instance.
#[derive(Default)]
pub struct TaskCredentials {
    held: RwLock<Held>,
}

impl std::fmt::Debug for TaskCredentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TaskCredentials")
            .finish_non_exhaustive()
    }
}

impl TaskCredentials {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Held> {
        // Entries are replaced whole, so a panic elsewhere cannot leave one half-made.
        self.held
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Held> {
        self.held
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Names the id a task's containers fetch its credentials with.
    pub fn register(&self, task_arn: &str, credentials_id: &str) {
        let mut held = self.write();
        let entry = held.tasks.entry(task_arn.to_owned()).or_default();
        entry.credentials_id = credentials_id.to_owned();
        held.ids
            .insert(credentials_id.to_owned(), task_arn.to_owned());
    }

    /// Keeps the newest credentials of one of a task's roles.
    pub fn set(&self, task_arn: &str, kind: RoleType, credentials: RoleCredentials) {
        let mut held = self.write();
        let entry = held.tasks.entry(task_arn.to_owned()).or_default();
        match kind {
            RoleType::TaskApplication => entry.application = Some(credentials),
            RoleType::TaskExecution => entry.execution = Some(credentials),
        }
    }

    /// The task role's credentials behind an id, with the task they are for.
    pub fn by_id(&self, credentials_id: &str) -> Option<(String, RoleCredentials)> {
        let held = self.read();
        let task_arn = held.ids.get(credentials_id)?;
        let credentials = held.tasks.get(task_arn)?.application.clone()?;
        Some((task_arn.clone(), credentials))
    }

    /// The execution role's credentials of a task, for the agent's own calls.
    pub fn execution(&self, task_arn: &str) -> Option<RoleCredentials> {
        self.read().tasks.get(task_arn)?.execution.clone()
    }

    pub fn forget(&self, task_arn: &str) {
        let mut held = self.write();
        if let Some(entry) = held.tasks.remove(task_arn) {
            held.ids.remove(&entry.credentials_id);
        }
    }
}

/// The endpoint's answer for a task's credentials, in the ECS agent's shape.
pub fn credentials_json(credentials: &RoleCredentials) -> Value {
    json!({
        "RoleArn": credentials.role_arn,
        "AccessKeyId": credentials.access_key_id,
        "SecretAccessKey": credentials.secret_access_key,
        "Token": credentials.session_token,
        "Expiration": to_rfc3339(credentials.expiration_ms),
    })
}

/// The ECS agent's error body for a credentials request it cannot answer.
pub fn credentials_error_json(code: &str, message: &str) -> Value {
    json!({"code": code, "message": message})
}

/// Why the credentials endpoint cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot add {CREDENTIALS_ADDRESS}/32 to the loopback interface: {0}")]
    Address(String),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Adds [`CREDENTIALS_ADDRESS`] to the host's loopback interface (a no-op
/// when it is there already) with iproute2's `ip`.
pub async fn prepare_address() -> Result<(), EndpointError> {
    let output = tokio::process::Command::new("ip")
        .args([
            "address",
            "add",
            &format!("{CREDENTIALS_ADDRESS}/32"),
            "dev",
            "lo",
        ])
        .output()
        .await
        .map_err(|error| EndpointError::Address(format!("running ip: {error}")))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Older iproute2 words an address already there "File exists", newer
    // "Address already assigned".
    if output.status.success()
        || stderr.contains("File exists")
        || stderr.contains("already assigned")
    {
        Ok(())
    } else {
        Err(EndpointError::Address(stderr.trim().to_owned()))
    }
}

/// Binds `port` on [`CREDENTIALS_ADDRESS`].
pub async fn listen(port: u16) -> Result<TcpListener, EndpointError> {
    let address = SocketAddr::from((CREDENTIALS_ADDRESS, port));
    TcpListener::bind(address)
        .await
        .map_err(|source| EndpointError::Listen { address, source })
}

/// Whether an address is this host's loopback, where a control plane on
/// the same machine usually listens and containers cannot reach it.
pub fn is_loopback_host(authority: &str) -> bool {
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Relays TCP connections from `listener` to `target` unchanged, so that
/// containers reach a control plane that listens on the host's loopback at
/// `http://169.254.170.2:PORT` (SigV4 signs the host header the client
/// sent, which passes through as it is).
pub async fn relay(listener: TcpListener, target: String) {
    let connections = Arc::new(Semaphore::new(RELAY_CONNECTIONS_MAX));
    loop {
        let Ok(permit) = Arc::clone(&connections).acquire_owned().await else {
            return;
        };
        let mut inbound = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "endpoint relay cannot accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let target = target.clone();
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(&target).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(error) => tracing::debug!(%error, %target, "endpoint relay cannot connect"),
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn credentials(key: &str) -> RoleCredentials {
        RoleCredentials {
            role_arn: "arn:aws:iam::0:role/app".into(),
            access_key_id: key.into(),
            secret_access_key: "secret".into(),
            session_token: "token".into(),
            expiration_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn credentials_are_found_by_their_task_id_only() {
        let held = TaskCredentials::default();
        held.register("task/a", "id-a");
        held.set("task/a", RoleType::TaskApplication, credentials("ASIA1"));
        held.set("task/a", RoleType::TaskExecution, credentials("ASIAX"));
        held.register("task/b", "id-b");
        assert_eq!(held.by_id("id-a").unwrap().1.access_key_id, "ASIA1");
        assert_eq!(held.by_id("id-a").unwrap().0, "task/a");
        // Task b has an id but no task role credentials.
        assert!(held.by_id("id-b").is_none());
        assert!(held.by_id("nope").is_none());
        assert_eq!(held.execution("task/a").unwrap().access_key_id, "ASIAX");
        // Renewed credentials replace the old ones under the same id.
        held.set("task/a", RoleType::TaskApplication, credentials("ASIA2"));
        assert_eq!(held.by_id("id-a").unwrap().1.access_key_id, "ASIA2");
        held.forget("task/a");
        assert!(held.by_id("id-a").is_none());
        assert!(held.execution("task/a").is_none());
    }

    #[test]
    fn the_answer_has_the_ecs_agents_field_names() {
        let body = credentials_json(&credentials("ASIA1"));
        assert_eq!(body["AccessKeyId"], "ASIA1");
        assert_eq!(body["SecretAccessKey"], "secret");
        assert_eq!(body["Token"], "token");
        assert_eq!(body["RoleArn"], "arn:aws:iam::0:role/app");
        assert_eq!(body["Expiration"], "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        assert!(is_loopback_host("127.0.0.1:8440"));
        assert!(is_loopback_host("localhost:8440"));
        assert!(is_loopback_host("[::1]:8440"));
        assert!(!is_loopback_host("10.0.0.5:8440"));
        assert!(!is_loopback_host("flotilla.example.com"));
    }
}
