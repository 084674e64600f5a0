//! `GET /ws/agent`: the agent control channel's websocket (protocol in
//! `flotilla_types::acs`). This file is the socket only; what is said over
//! it comes from the control plane's `agent_channel` (`AgentWatch`).
//!
//! Before upgrading, the request must carry a SigV4 presigned query for
//! service `ecs` in this server's region, signed over the empty body, and
//! name an ACTIVE or DRAINING instance with the query parameters
//! `clusterArn`, `containerInstanceArn` (names or ARNs) and `seqNum`;
//! otherwise it is answered with an AWS-shaped JSON error
//! (`{"__type", "message"}`) and no upgrade.
//!
//! After upgrading, one connection runs as:
//!
//! ```text
//! watch store ─▶ mark agentConnected ─▶ Payload(all tasks) ─▶ loop {
//!     frame from agent   → Heartbeat/Ack: alive; TaskHealth: stored
//!     store change       → Payload(changed tasks) | full Payload after lag
//!                          | close when superseded | Deregistered + close
//!     every heartbeat    → Heartbeat
//!     silence > timeout  → close
//! } ─▶ mark disconnected (unless a newer connection took over)
//! ```
//!
//! Sends are made one at a time from the loop and each must finish within
//! [`AGENT_SEND_TIMEOUT_MS`]; an agent that does not read closes its own
//! connection that way, and catches up with a full payload when it
//! reconnects. No queue grows in between.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla_control::{AgentEvent, AgentInstance, AgentWatch, PAYLOAD_TASKS_MAX};
use flotilla_sigv4::{AuthLocation, RequestParts, EMPTY_PAYLOAD_SHA256};
use flotilla_types::acs::{FromAgent, TaskPayload, ToAgent, HEARTBEAT_INTERVAL_MS};
use flotilla_types::ApiError;
use serde::Deserialize;

use crate::Edge;

/// Largest frame an agent may send; its messages are small JSON.
pub const AGENT_MESSAGE_BYTES_MAX: usize = 256 * 1024;
/// Read and write buffer of each agent connection. The library's default
/// (128 KiB each) made a thousand idle agents cost a quarter of a GiB; agent
/// messages are small, and larger ones still pass, in more reads.
pub const AGENT_SOCKET_BUFFER_BYTES: usize = 8 * 1024;
/// Longest one send to the agent may take before the connection is dropped.
pub const AGENT_SEND_TIMEOUT_MS: u64 = 10_000;
/// How long the loop waits on renewals when no credentials are held (it
/// looks again after every payload anyway).
const RENEWAL_IDLE_WAIT_MS: u64 = 3_600_000;
/// Close code for a normal close (RFC 6455).
const CLOSE_NORMAL: u16 = 1000;
/// Close code when the agent broke the protocol.
const CLOSE_POLICY: u16 = 1008;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgentQuery {
    cluster_arn: Option<String>,
    container_instance_arn: Option<String>,
    seq_num: Option<u64>,
}

pub(crate) async fn agent_ws(State(edge): State<Arc<Edge>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let (instance, seq_num) = match admit(&edge, &parts) {
        Ok(admitted) => admitted,
        Err(error) => {
            tracing::debug!(%error, "agent connection refused");
            return error_response(&error);
        }
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &edge).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    upgrade
        .read_buffer_size(AGENT_SOCKET_BUFFER_BYTES)
        .write_buffer_size(AGENT_SOCKET_BUFFER_BYTES)
        .max_message_size(AGENT_MESSAGE_BYTES_MAX)
        .max_frame_size(AGENT_MESSAGE_BYTES_MAX)
        .on_upgrade(move |socket| session(edge, instance, seq_num, socket))
}

fn error_response(error: &ApiError) -> Response {
    let body = serde_json::json!({ "__type": error.code, "message": error.message }).to_string();
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, Body::from(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    response
}

/// Authenticates the presigned query and resolves the instance it names.
fn admit(
    edge: &Edge,
    parts: &axum::http::request::Parts,
) -> Result<(AgentInstance, u64), ApiError> {
    let request = RequestParts::from_http(parts, EMPTY_PAYLOAD_SHA256);
    let now_ms = edge.clock.now_ms();
    let keys = crate::access::EdgeKeys::new(edge, now_ms);
    let verified = flotilla_sigv4::verify(&request, &keys, now_ms / 1000).map_err(|error| {
        ApiError::new(
            error.aws_error_code(),
            error.http_status().as_u16(),
            error.aws_message(),
        )
    })?;
    if !matches!(verified.location, AuthLocation::PresignedUrl { .. }) {
        return Err(ApiError::new(
            "InvalidSignatureException",
            400,
            "The agent channel takes a SigV4 presigned query (X-Amz-* query parameters), not an Authorization header.",
        ));
    }
    let region = &edge.ecs.scope().region;
    if &verified.region != region {
        return Err(crate::wrong_region(&verified.region, region));
    }
    if verified.service != "ecs" {
        return Err(ApiError::new(
            "InvalidSignatureException",
            400,
            "Credential should be scoped to correct service: 'ecs'.",
        ));
    }
    let Query(query) = Query::<AgentQuery>::try_from_uri(&parts.uri).map_err(|rejection| {
        ApiError::invalid_parameter(format!(
            "invalid agent channel query: {}",
            rejection.body_text()
        ))
    })?;
    let cluster = query
        .cluster_arn
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::invalid_parameter("clusterArn is required"))?;
    let instance = query
        .container_instance_arn
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ApiError::invalid_parameter("containerInstanceArn is required"))?;
    let instance = edge
        .ecs
        .resolve_agent_instance(&cluster, &instance)
        .map_err(|refusal| refusal.to_api_error())?;
    Ok((instance, query.seq_num.unwrap_or(0)))
}

/// Why a session ended, for the log.
#[derive(Debug)]
enum Ended {
    AgentClosed,
    HeartbeatTimeout,
    Superseded,
    Deregistered,
    SendFailed,
    ProtocolError,
    StoreFailed,
}

async fn session(
    edge: Arc<Edge>,
    instance: AgentInstance,
    agent_seq_num: u64,
    mut socket: WebSocket,
) {
    let connection_id = edge.ids.uuid();
    // Subscribe before anything is read, so that no change falls between
    // the first payload and the watch.
    let mut watch = edge.ecs.watch_agent(&instance, &connection_id);
    match edge
        .ecs
        .set_agent_connected(&instance, &connection_id, true)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            close(
                &mut socket,
                CLOSE_POLICY,
                "container instance is no longer registered",
            )
            .await;
            return;
        }
        Err(error) => {
            tracing::error!(%error, instance = %instance.instance_arn, "cannot mark agent connected");
            close(&mut socket, CLOSE_POLICY, "server error").await;
            return;
        }
    }
    tracing::info!(instance = %instance.instance_arn, %connection_id, "agent connected");
    let mut channel = Channel {
        edge: Arc::clone(&edge),
        socket,
        seq_num: agent_seq_num,
        roles: crate::task_roles::TaskRoleCredentials::default(),
    };
    let ended = channel.run(&instance, &mut watch).await;
    let reason = match ended {
        Ended::HeartbeatTimeout => "no heartbeat from the agent",
        Ended::Superseded => "superseded by a newer connection of this instance",
        Ended::Deregistered => "container instance deregistered",
        Ended::ProtocolError => "unreadable message",
        _ => "closing",
    };
    if !matches!(ended, Ended::AgentClosed | Ended::SendFailed) {
        close(
            &mut channel.socket,
            if matches!(ended, Ended::ProtocolError) {
                CLOSE_POLICY
            } else {
                CLOSE_NORMAL
            },
            reason,
        )
        .await;
    }
    edge.ecs.forget_task_stats(&instance);
    if let Err(error) = edge
        .ecs
        .set_agent_connected(&instance, &connection_id, false)
        .await
    {
        tracing::error!(%error, instance = %instance.instance_arn, "cannot mark agent disconnected");
    }
    tracing::info!(instance = %instance.instance_arn, %connection_id, ?ended, "agent disconnected");
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_millis(AGENT_SEND_TIMEOUT_MS),
        socket.send(Message::Close(Some(frame))),
    )
    .await;
}

struct Channel {
    edge: Arc<Edge>,
    socket: WebSocket,
    /// Sequence number of the last payload sent.
    seq_num: u64,
    /// The task role credentials this connection handed out, to renew.
    roles: crate::task_roles::TaskRoleCredentials,
}

impl Channel {
    async fn run(&mut self, instance: &AgentInstance, watch: &mut AgentWatch) -> Ended {
        if let Err(ended) = self.send_full_payload(watch).await {
            return ended;
        }
        let timeout = Duration::from_millis(self.edge.agent_heartbeat_timeout_ms);
        let mut heartbeat = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let mut last_heard = tokio::time::Instant::now();
        loop {
            let renewal = self.renewal_wait();
            tokio::select! {
                frame = self.socket.recv() => {
                    let text = match frame {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ended::AgentClosed,
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                            last_heard = tokio::time::Instant::now();
                            continue;
                        }
                        Some(Ok(Message::Binary(_))) => return Ended::ProtocolError,
                    };
                    last_heard = tokio::time::Instant::now();
                    let message: FromAgent = match serde_json::from_str(text.as_str()) {
                        Ok(message) => message,
                        Err(error) => {
                            tracing::debug!(%error, instance = %instance.instance_arn, "unreadable agent message");
                            return Ended::ProtocolError;
                        }
                    };
                    match message {
                        FromAgent::Heartbeat { .. } => {}
                        FromAgent::Ack { message_id, seq_num } => {
                            tracing::trace!(%message_id, seq_num, "agent acknowledged");
                        }
                        FromAgent::IamRoleCredentialsAck { message_id, task_arn } => {
                            tracing::trace!(%message_id, %task_arn, "agent holds renewed credentials");
                        }
                        FromAgent::TaskHealth { task_arn, containers } => {
                            if let Err(error) = self.edge.ecs.record_task_health(instance, &task_arn, &containers).await {
                                tracing::debug!(%error, %task_arn, "task health not recorded");
                            }
                        }
                        FromAgent::TaskStats { tasks, .. } => {
                            if let Err(error) = self.edge.ecs.record_task_stats(instance, &tasks).await {
                                tracing::debug!(%error, "task usage not recorded");
                            }
                        }
                    }
                }
                event = watch.next() => match event {
                    AgentEvent::Payload(tasks) => {
                        if let Err(ended) = self.send_payload(tasks).await {
                            return ended;
                        }
                    }
                    AgentEvent::Resync => {
                        if let Err(ended) = self.send_full_payload(watch).await {
                            return ended;
                        }
                    }
                    AgentEvent::Superseded => return Ended::Superseded,
                    AgentEvent::Deregistered => {
                        let message = ToAgent::Deregistered { reason: "The container instance was deregistered.".to_owned() };
                        return match self.send(&message).await {
                            Ok(()) => Ended::Deregistered,
                            Err(ended) => ended,
                        };
                    }
                    AgentEvent::Closed => return Ended::StoreFailed,
                },
                _ = tokio::time::sleep(renewal) => {
                    let edge = Arc::clone(&self.edge);
                    for (task_arn, role_type, credentials) in self.roles.renew_due(&edge).await {
                        let message = ToAgent::IamRoleCredentials {
                            message_id: edge.ids.uuid(),
                            task_arn,
                            role_type,
                            credentials,
                        };
                        if let Err(ended) = self.send(&message).await {
                            return ended;
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    let message = ToAgent::Heartbeat { message_id: self.edge.ids.uuid() };
                    if let Err(ended) = self.send(&message).await {
                        return ended;
                    }
                }
                _ = tokio::time::sleep_until(last_heard + timeout) => return Ended::HeartbeatTimeout,
            }
        }
    }

    async fn send_full_payload(&mut self, watch: &mut AgentWatch) -> Result<(), Ended> {
        let tasks = watch.full_payload().map_err(|error| {
            tracing::error!(%error, "cannot read the instance's tasks");
            Ended::StoreFailed
        })?;
        // The first payload is sent even when empty: it tells the agent that
        // it holds every task it should.
        if tasks.is_empty() {
            return self.send_payload(Vec::new()).await;
        }
        for chunk in tasks.chunks(PAYLOAD_TASKS_MAX) {
            self.send_payload(chunk.to_vec()).await?;
        }
        Ok(())
    }

    /// How long until task role credentials are due for renewal.
    fn renewal_wait(&self) -> Duration {
        let now_ms = self.edge.clock.now_ms();
        Duration::from_millis(
            self.roles
                .next_renewal_in_ms(now_ms)
                .unwrap_or(RENEWAL_IDLE_WAIT_MS),
        )
    }

    async fn send_payload(&mut self, mut tasks: Vec<TaskPayload>) -> Result<(), Ended> {
        let edge = Arc::clone(&self.edge);
        self.roles.fill(&edge, &mut tasks).await;
        self.seq_num += 1;
        let message = ToAgent::Payload {
            message_id: self.edge.ids.uuid(),
            seq_num: self.seq_num,
            tasks,
        };
        self.send(&message).await
    }

    async fn send(&mut self, message: &ToAgent) -> Result<(), Ended> {
        let text = serde_json::to_string(message).map_err(|error| {
            tracing::error!(%error, "agent message does not serialize");
            Ended::SendFailed
        })?;
        match tokio::time::timeout(
            Duration::from_millis(AGENT_SEND_TIMEOUT_MS),
            self.socket.send(Message::Text(text.into())),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(Ended::SendFailed),
        }
    }
}

#[cfg(test)]
mod tests;
