//! The task metadata endpoint (v4, and v3 on the same handlers), in the JSON
//! shapes ECS's own endpoint answers with.
//!
//! Each container gets a URL with its own token
//! (`ECS_CONTAINER_METADATA_URI_V4=http://{gateway}:{port}/v4/{token}`):
//!
//! | path                         | answer                                  |
//! |------------------------------|-----------------------------------------|
//! | `/v4/{token}`                | the container's metadata                |
//! | `/v4/{token}/task`           | the task's metadata with `Containers[]` |
//! | `/v4/{token}/stats`          | the container's resource usage          |
//! | `/v4/{token}/task/stats`     | every container's, by Docker id         |
//!
//! The same server answers `/v2/credentials/{id}`, the ECS credentials
//! endpoint ([`crate::credentials`]), on this port and on 169.254.170.2:80.
//!
//! Managed tasks publish a copy of their record here after every change; the
//! server only reads those copies (and asks the runtime for stats).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use flotilla_runtime::ContainerRuntime;
use flotilla_types::ecs::NetworkMode as EcsNetworkMode;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::clock::to_rfc3339;
use crate::credentials::{credentials_error_json, credentials_json, TaskCredentials};
use crate::engine::record::{ContainerRecord, TaskRecord};
use crate::engine::spec::{network_mode_of, stop_timeout};
use crate::engine::status::ContainerStatus;

/// Connections served at once; more wait to be accepted.
pub const METADATA_CONNECTIONS_MAX: usize = 256;
/// Bound on answering one request (stats ask the engine).
pub const METADATA_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Facts about the instance every task answer carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceMetadata {
    pub cluster: String,
    pub container_instance_arn: String,
    pub availability_zone: String,
    /// EC2, or EXTERNAL for `--external` instances.
    pub launch_type: String,
}

#[derive(Default)]
struct Registry {
    instance: InstanceMetadata,
    /// Token → (task ARN, container name).
    tokens: HashMap<String, (String, String)>,
    tasks: HashMap<String, Arc<TaskRecord>>,
}

/// The records the endpoint answers from.
#[derive(Default)]
pub struct MetadataRegistry {
    registry: RwLock<Registry>,
}

impl std::fmt::Debug for MetadataRegistry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MetadataRegistry")
            .finish_non_exhaustive()
    }
}

impl MetadataRegistry {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        // Readers and writers only swap whole entries, so a panic elsewhere
        // cannot leave the map half-changed.
        self.registry
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set_instance(&self, instance: InstanceMetadata) {
        self.write().instance = instance;
    }

    pub fn publish(&self, record: &TaskRecord) {
        let record = Arc::new(record.clone());
        let mut registry = self.write();
        for container in &record.containers {
            registry.tokens.insert(
                container.metadata_token.clone(),
                (record.task_arn().to_owned(), container.name.clone()),
            );
        }
        registry.tasks.insert(record.task_arn().to_owned(), record);
    }

    pub fn forget(&self, task_arn: &str) {
        let mut registry = self.write();
        registry.tokens.retain(|_, (arn, _)| arn != task_arn);
        registry.tasks.remove(task_arn);
    }

    /// The task one of whose running containers has `address` on a task
    /// network (bridge or awsvpc), as far as the published records tell.
    pub fn task_of_address(&self, address: &str) -> Option<String> {
        let registry = self.read();
        registry
            .tasks
            .values()
            .find(|record| {
                // Only running containers hold their address: the engine
                // gives a stopped one's to the next container it starts.
                let mut running = record
                    .containers
                    .iter()
                    .filter(|c| c.known == ContainerStatus::Running);
                let awsvpc = record
                    .payload
                    .network_interface
                    .as_ref()
                    .is_some_and(|interface| interface.private_ipv4_address == address);
                running.any(|c| awsvpc || c.ip_addresses.values().any(|ip| ip == address))
            })
            .map(|record| record.task_arn().to_owned())
    }

    fn lookup(&self, token: &str) -> Option<(Arc<TaskRecord>, String, InstanceMetadata)> {
        let registry = self.read();
        let (task_arn, container) = registry.tokens.get(token)?;
        let record = registry.tasks.get(task_arn)?;
        Some((
            Arc::clone(record),
            container.clone(),
            registry.instance.clone(),
        ))
    }
}

fn container_known_status(status: ContainerStatus) -> &'static str {
    match status {
        ContainerStatus::None => "NONE",
        ContainerStatus::Pulled => "PULLED",
        ContainerStatus::Created => "CREATED",
        ContainerStatus::Running => "RUNNING",
        ContainerStatus::Stopped => "STOPPED",
    }
}

/// One container's metadata as ECS's v4 endpoint shapes it.
pub fn container_json(record: &TaskRecord, container: &ContainerRecord) -> Value {
    let definition = record
        .definition(&container.name)
        .cloned()
        .unwrap_or_default();
    let mut body = Map::new();
    body.insert(
        "DockerId".into(),
        json!(container.runtime_id.clone().unwrap_or_default()),
    );
    body.insert("Name".into(), json!(container.name));
    body.insert("DockerName".into(), json!(container.engine_name));
    body.insert(
        "Image".into(),
        json!(definition.image.clone().unwrap_or_default()),
    );
    body.insert(
        "ImageID".into(),
        json!(container.image_digest.clone().unwrap_or_default()),
    );
    let mut labels: Map<String, Value> = definition
        .docker_labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    labels.insert(
        "com.amazonaws.ecs.cluster".into(),
        json!(record.payload.cluster_arn),
    );
    labels.insert(
        "com.amazonaws.ecs.container-name".into(),
        json!(container.name),
    );
    labels.insert(
        "com.amazonaws.ecs.task-arn".into(),
        json!(record.task_arn()),
    );
    labels.insert(
        "com.amazonaws.ecs.task-definition-family".into(),
        json!(record.payload.task_definition.family),
    );
    labels.insert(
        "com.amazonaws.ecs.task-definition-version".into(),
        json!(record
            .payload
            .task_definition
            .revision
            .unwrap_or(0)
            .to_string()),
    );
    body.insert("Labels".into(), Value::Object(labels));
    body.insert("DesiredStatus".into(), json!(record.desired.as_wire()));
    body.insert(
        "KnownStatus".into(),
        json!(container_known_status(container.known)),
    );
    body.insert(
        "Limits".into(),
        json!({"CPU": definition.cpu.unwrap_or(0), "Memory": definition.memory.unwrap_or(0)}),
    );
    if let Some(at) = container.created_at_ms {
        body.insert("CreatedAt".into(), json!(to_rfc3339(at)));
    }
    if let Some(at) = container.started_at_ms {
        body.insert("StartedAt".into(), json!(to_rfc3339(at)));
    }
    if let Some(at) = container.finished_at_ms {
        body.insert("FinishedAt".into(), json!(to_rfc3339(at)));
    }
    if container.known == ContainerStatus::Stopped {
        if let Some(code) = container.exit_code {
            body.insert("ExitCode".into(), json!(code));
        }
    }
    body.insert("Type".into(), json!("NORMAL"));
    body.insert("LogDriver".into(), json!("json-file"));
    body.insert("Networks".into(), networks_json(record, container));
    let ports: Vec<Value> = container
        .bound_ports
        .iter()
        .map(|port| {
            json!({"ContainerPort": port.container_port, "Protocol": if port.udp { "udp" } else { "tcp" },
                   "HostPort": port.host_port, "HostIp": port.host_ip})
        })
        .collect();
    if !ports.is_empty() {
        body.insert("Ports".into(), Value::Array(ports));
    }
    if definition.health_check.is_some() {
        body.insert(
            "Health".into(),
            json!({"status": container.health.as_wire()}),
        );
    }
    body.insert(
        "StopTimeout".into(),
        json!(stop_timeout(&definition).as_secs()),
    );
    Value::Object(body)
}

fn networks_json(record: &TaskRecord, container: &ContainerRecord) -> Value {
    let mode = network_mode_of(&record.payload.task_definition);
    match mode {
        EcsNetworkMode::Awsvpc => {
            let Some(interface) = &record.payload.network_interface else {
                return json!([]);
            };
            let prefix = interface
                .subnet_cidr
                .split_once('/')
                .map_or("24", |(_, prefix)| prefix);
            json!([{
                "NetworkMode": "awsvpc",
                "IPv4Addresses": [interface.private_ipv4_address],
                "AttachmentIndex": 0,
                "MACAddress": interface.mac_address,
                "IPv4SubnetCIDRBlock": interface.subnet_cidr,
                "SubnetGatewayIpv4Address": format!("{}/{prefix}", interface.gateway_ipv4_address),
            }])
        }
        EcsNetworkMode::Bridge => {
            let addresses: Vec<&String> =
                container.ip_addresses.get("bridge").into_iter().collect();
            json!([{"NetworkMode": "bridge", "IPv4Addresses": addresses}])
        }
        EcsNetworkMode::Host => json!([{"NetworkMode": "host", "IPv4Addresses": []}]),
        EcsNetworkMode::None => json!([{"NetworkMode": "none", "IPv4Addresses": []}]),
    }
}

/// The task's metadata with every container's.
pub fn task_json(record: &TaskRecord, instance: &InstanceMetadata) -> Value {
    let definition = &record.payload.task_definition;
    let mut body = Map::new();
    body.insert("Cluster".into(), json!(record.payload.cluster_arn));
    body.insert("TaskARN".into(), json!(record.task_arn()));
    body.insert(
        "Family".into(),
        json!(definition.family.clone().unwrap_or_default()),
    );
    body.insert(
        "Revision".into(),
        json!(definition.revision.unwrap_or(0).to_string()),
    );
    body.insert("DesiredStatus".into(), json!(record.desired.as_wire()));
    body.insert("KnownStatus".into(), json!(record.known().as_wire()));
    let cpu = definition
        .cpu
        .as_deref()
        .and_then(|cpu| cpu.parse::<f64>().ok())
        .map(|units| units / 1024.0);
    let memory = definition
        .memory
        .as_deref()
        .and_then(|memory| memory.parse::<u64>().ok());
    let mut limits = Map::new();
    if let Some(cpu) = cpu {
        limits.insert("CPU".into(), json!(cpu));
    }
    if let Some(memory) = memory {
        limits.insert("Memory".into(), json!(memory));
    }
    body.insert("Limits".into(), Value::Object(limits));
    if let Some(at) = record.pull_started_at_ms {
        body.insert("PullStartedAt".into(), json!(to_rfc3339(at)));
    }
    if let Some(at) = record.pull_stopped_at_ms {
        body.insert("PullStoppedAt".into(), json!(to_rfc3339(at)));
    }
    if let Some(at) = record.execution_stopped_at_ms {
        body.insert("ExecutionStoppedAt".into(), json!(to_rfc3339(at)));
    }
    body.insert("AvailabilityZone".into(), json!(instance.availability_zone));
    body.insert("LaunchType".into(), json!(instance.launch_type));
    body.insert(
        "ContainerInstanceARN".into(),
        json!(instance.container_instance_arn),
    );
    body.insert(
        "Containers".into(),
        Value::Array(
            record
                .containers
                .iter()
                .map(|container| container_json(record, container))
                .collect(),
        ),
    );
    Value::Object(body)
}

/// Stats in the shape of Docker's stats API, which the v4 endpoint passes through.
pub fn stats_json(stats: &flotilla_runtime::ContainerStats, read_at_ms: u64) -> Value {
    json!({
        "read": to_rfc3339(read_at_ms),
        "cpu_stats": {"cpu_usage": {"total_usage": stats.cpu_total_usage_ns}, "system_cpu_usage": stats.system_cpu_usage_ns},
        "memory_stats": {"usage": stats.memory_usage_bytes, "limit": stats.memory_limit_bytes},
        "networks": {"eth0": {"rx_bytes": stats.network_rx_bytes, "tx_bytes": stats.network_tx_bytes}},
        "blkio_stats": {"io_service_bytes_recursive": [
            {"op": "read", "value": stats.block_read_bytes},
            {"op": "write", "value": stats.block_write_bytes},
        ]},
    })
}

/// What a request path asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataRequest {
    Container { token: String },
    Task { token: String },
    ContainerStats { token: String },
    TaskStats { token: String },
}

pub fn parse_path(path: &str) -> Option<MetadataRequest> {
    let rest = path
        .strip_prefix("/v4/")
        .or_else(|| path.strip_prefix("/v3/"))?;
    let mut parts = rest.trim_end_matches('/').splitn(2, '/');
    let token = parts.next().filter(|token| !token.is_empty())?.to_owned();
    Some(match parts.next() {
        None => MetadataRequest::Container { token },
        Some("task") => MetadataRequest::Task { token },
        Some("stats") => MetadataRequest::ContainerStats { token },
        Some("task/stats") => MetadataRequest::TaskStats { token },
        Some(_) => return None,
    })
}

/// Serves the endpoint until the listener fails.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<MetadataRegistry>,
    runtime: Arc<dyn ContainerRuntime>,
    clock: Arc<dyn crate::clock::Clock>,
    credentials: Arc<TaskCredentials>,
) {
    let connections = Arc::new(Semaphore::new(METADATA_CONNECTIONS_MAX));
    loop {
        let Ok(permit) = Arc::clone(&connections).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metadata endpoint cannot accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = Arc::clone(&registry);
        let runtime = Arc::clone(&runtime);
        let clock = Arc::clone(&clock);
        let credentials = Arc::clone(&credentials);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let registry = Arc::clone(&registry);
                let runtime = Arc::clone(&runtime);
                let clock = Arc::clone(&clock);
                let credentials = Arc::clone(&credentials);
                async move {
                    if let Some(id) = request.uri().path().strip_prefix(CREDENTIALS_PREFIX) {
                        let answer = answer_credentials(
                            request.method(),
                            id,
                            peer.ip(),
                            &registry,
                            &credentials,
                        );
                        return Ok::<_, Infallible>(respond(answer));
                    }
                    let answer = tokio::time::timeout(
                        METADATA_REQUEST_TIMEOUT,
                        answer(
                            request.method(),
                            request.uri().path(),
                            &registry,
                            &*runtime,
                            &*clock,
                        ),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        (StatusCode::GATEWAY_TIMEOUT, json!({"message": "timed out"}))
                    });
                    Ok::<_, Infallible>(respond(answer))
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "metadata connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// `/v2/credentials` with or without the id, as the ECS agent matches it.
const CREDENTIALS_PREFIX: &str = "/v2/credentials";

/// The task role credentials behind `id` (the path after
/// [`CREDENTIALS_PREFIX`]), for a caller at `peer`. A caller whose address
/// is one of another task's containers is refused as an unknown id would
/// be: ids are unguessable, and this stops one leaked to another task.
fn answer_credentials(
    method: &Method,
    id: &str,
    peer: std::net::IpAddr,
    registry: &MetadataRegistry,
    credentials: &TaskCredentials,
) -> (StatusCode, Value) {
    if method != Method::GET {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "only GET"}),
        );
    }
    let id = id.trim_start_matches('/');
    if id.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            credentials_error_json(
                "NoIdInRequest",
                "CredentialsV2Request: No ID in the request",
            ),
        );
    }
    let not_found = || {
        (
            StatusCode::BAD_REQUEST,
            credentials_error_json(
                "InvalidIdInRequest",
                "CredentialsV2Request: Credentials not found",
            ),
        )
    };
    let Some((task_arn, held)) = credentials.by_id(id) else {
        return not_found();
    };
    if let Some(owner) = registry.task_of_address(&peer.to_string()) {
        if owner != task_arn {
            tracing::warn!(caller_task = %owner, %task_arn, %peer, "a task asked for another task's credentials; refused");
            return not_found();
        }
    }
    (StatusCode::OK, credentials_json(&held))
}

fn respond((status, body): (StatusCode, Value)) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

async fn answer(
    method: &Method,
    path: &str,
    registry: &MetadataRegistry,
    runtime: &dyn ContainerRuntime,
    clock: &dyn crate::clock::Clock,
) -> (StatusCode, Value) {
    if method != Method::GET {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "only GET"}),
        );
    }
    let Some(request) = parse_path(path) else {
        return (StatusCode::NOT_FOUND, json!({"message": "unknown path"}));
    };
    let token = match &request {
        MetadataRequest::Container { token }
        | MetadataRequest::Task { token }
        | MetadataRequest::ContainerStats { token }
        | MetadataRequest::TaskStats { token } => token,
    };
    let Some((record, container_name, instance)) = registry.lookup(token) else {
        return (
            StatusCode::NOT_FOUND,
            json!({"message": "unknown container"}),
        );
    };
    let Some(container) = record.containers.iter().find(|c| c.name == container_name) else {
        return (
            StatusCode::NOT_FOUND,
            json!({"message": "unknown container"}),
        );
    };
    match request {
        MetadataRequest::Container { .. } => (StatusCode::OK, container_json(&record, container)),
        MetadataRequest::Task { .. } => (StatusCode::OK, task_json(&record, &instance)),
        MetadataRequest::ContainerStats { .. } => match &container.runtime_id {
            Some(id) => match runtime.container_stats(id).await {
                Ok(stats) => (StatusCode::OK, stats_json(&stats, clock.now_ms())),
                Err(error) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"message": error.to_string()}),
                ),
            },
            None => (StatusCode::OK, Value::Null),
        },
        MetadataRequest::TaskStats { .. } => {
            let mut all = Map::new();
            for container in &record.containers {
                let Some(id) = &container.runtime_id else {
                    continue;
                };
                let stats = match runtime.container_stats(id).await {
                    Ok(stats) if container.known == ContainerStatus::Running => {
                        stats_json(&stats, clock.now_ms())
                    }
                    _ => Value::Null,
                };
                all.insert(id.clone(), stats);
            }
            (StatusCode::OK, Value::Object(all))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse() {
        let token = || "abc".to_owned();
        assert_eq!(
            parse_path("/v4/abc"),
            Some(MetadataRequest::Container { token: token() })
        );
        assert_eq!(
            parse_path("/v4/abc/task"),
            Some(MetadataRequest::Task { token: token() })
        );
        assert_eq!(
            parse_path("/v4/abc/stats"),
            Some(MetadataRequest::ContainerStats { token: token() })
        );
        assert_eq!(
            parse_path("/v4/abc/task/stats"),
            Some(MetadataRequest::TaskStats { token: token() })
        );
        assert_eq!(
            parse_path("/v3/abc/task/"),
            Some(MetadataRequest::Task { token: token() })
        );
        assert_eq!(parse_path("/v4/"), None);
        assert_eq!(parse_path("/v2/metadata"), None);
        assert_eq!(parse_path("/v4/abc/other"), None);
    }

    #[test]
    fn task_metadata_uses_ecs_field_names() {
        let payload: flotilla_types::acs::TaskPayload = serde_json::from_value(json!({
            "taskArn": "arn:aws:ecs:us-east-1:000000000000:task/default/t1",
            "clusterArn": "arn:aws:ecs:us-east-1:000000000000:cluster/default",
            "desiredStatus": "RUNNING", "version": 1,
            "taskDefinition": {"family": "web", "revision": 4, "cpu": "512", "memory": "1024", "networkMode": "awsvpc",
                "containerDefinitions": [{"name": "app", "image": "nginx", "cpu": 256, "memory": 512}]},
            "networkInterface": {"attachmentId": "a", "privateIpv4Address": "10.201.3.7", "subnetCidr": "10.201.3.0/24",
                "gatewayIpv4Address": "10.201.3.1", "macAddress": "02:00:00:00:00:01"}
        }))
        .unwrap();
        let mut record = TaskRecord::new(payload, || "tok".to_owned());
        record.containers[0].known = ContainerStatus::Running;
        record.containers[0].runtime_id = Some("d0c".to_owned());
        record.containers[0].started_at_ms = Some(0);
        let instance = InstanceMetadata {
            availability_zone: "local-1a".into(),
            launch_type: "EC2".into(),
            ..Default::default()
        };
        let task = task_json(&record, &instance);
        assert_eq!(task["Family"], "web");
        assert_eq!(task["Revision"], "4");
        assert_eq!(task["KnownStatus"], "RUNNING");
        assert_eq!(task["Limits"], json!({"CPU": 0.5, "Memory": 1024}));
        assert_eq!(task["AvailabilityZone"], "local-1a");
        let container = &task["Containers"][0];
        assert_eq!(container["DockerId"], "d0c");
        assert_eq!(container["DockerName"], "ecs-web-4-app-t1");
        assert_eq!(container["Limits"], json!({"CPU": 256, "Memory": 512}));
        assert_eq!(container["StartedAt"], "1970-01-01T00:00:00.000Z");
        assert_eq!(container["Networks"][0]["IPv4Addresses"][0], "10.201.3.7");
        assert_eq!(
            container["Networks"][0]["SubnetGatewayIpv4Address"],
            "10.201.3.1/24"
        );
    }
}
