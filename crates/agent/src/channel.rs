//! The agent's side of the control channel (`flotilla_types::acs`): a
//! websocket to the control plane, kept open for the life of the instance.
//!
//! ```text
//!  DiscoverPollEndpoint ─▶ GET {endpoint}/ws/agent?clusterArn&containerInstanceArn&seqNum (presigned)
//!     ▲                       │ Payload ─▶ engine.apply_payload ─▶ Ack
//!     │                       │ Heartbeat every HEARTBEAT_INTERVAL_MS; TaskHealth as health changes
//!     │                       │ Deregistered ─▶ return (the instance stops its tasks and exits)
//!     └── backoff + jitter ◀──┘ closed, failed, or silent for HEARTBEAT_TIMEOUT_MS
//! ```

use std::sync::Arc;
use std::time::Duration;

use flotilla_sigv4::{RequestParts, SigningParams, EMPTY_PAYLOAD_SHA256};
use flotilla_types::acs::{self, FromAgent, ToAgent};
use flotilla_types::ecs::DiscoverPollEndpointRequest;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::api::{error_chain, ApiClient, Endpoint};
use crate::backoff::backoff_delay_ms;
use crate::clock::Jitter;
use crate::engine::Engine;

/// Lifetime of the presigned connect URL: it is used at once.
pub const PRESIGNED_URL_EXPIRES_SECONDS: u64 = 60;
/// Bound on discovering the endpoint and completing the websocket handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest message accepted: a full-state payload of a busy instance.
pub const MESSAGE_MAX_BYTES: usize = 16 * 1024 * 1024;
/// A connection that lasted this long resets the reconnect backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

/// How a control channel session ended for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelEnd {
    /// The instance was deregistered; its tasks must stop.
    Deregistered { reason: String },
}

/// Who is connecting.
#[derive(Clone, Debug)]
pub struct ChannelIdentity {
    /// The cluster as the user named it (name or ARN).
    pub cluster: String,
    pub container_instance_arn: String,
    /// For logs.
    pub label: String,
}

enum Disconnect {
    Deregistered(String),
    Lost { reason: String, stable: bool },
}

/// Keeps the channel open until the instance is deregistered, reconnecting
/// with bounded, jittered backoff whenever it drops.
pub async fn run(
    api: &ApiClient,
    identity: &ChannelIdentity,
    engine: &Arc<Engine>,
    health: &mut mpsc::Receiver<FromAgent>,
    jitter: &Jitter,
) -> ChannelEnd {
    let mut attempt: u32 = 0;
    let mut seq_num: u64 = 0;
    loop {
        match connect_and_serve(api, identity, engine, health, &mut seq_num).await {
            Disconnect::Deregistered(reason) => return ChannelEnd::Deregistered { reason },
            Disconnect::Lost { reason, stable } => {
                if stable {
                    attempt = 0;
                }
                let delay_ms = backoff_delay_ms(attempt, jitter.next_fraction());
                attempt = attempt.saturating_add(1);
                if attempt <= 3 || attempt % 20 == 0 {
                    tracing::warn!(instance = %identity.label, %reason, delay_ms, "control channel lost; reconnecting");
                } else {
                    tracing::debug!(instance = %identity.label, %reason, delay_ms, "control channel lost; reconnecting");
                }
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
        }
    }
}

/// The cluster ARN from a container instance ARN
/// (`arn:...:container-instance/{cluster}/{id}` → `arn:...:cluster/{cluster}`).
pub fn cluster_arn_from_instance_arn(instance_arn: &str) -> Option<String> {
    let (prefix, resource) = instance_arn.split_once(":container-instance/")?;
    let (cluster, _) = resource.split_once('/')?;
    Some(format!("{prefix}:cluster/{cluster}"))
}

/// Percent-encoding as SigV4 wants it: everything but unreserved characters.
pub fn aws_query_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The query naming this agent on connect, in the parameter order SigV4 sorts to.
pub fn connect_query(cluster_arn: &str, container_instance_arn: &str, seq_num: u64) -> String {
    format!(
        "clusterArn={}&containerInstanceArn={}&seqNum={seq_num}",
        aws_query_encode(cluster_arn),
        aws_query_encode(container_instance_arn)
    )
}

/// The presigned `ws://` URL of the channel.
pub fn presigned_url(
    endpoint: &Endpoint,
    query: &str,
    api: &ApiClient,
    now_seconds: u64,
) -> Result<String, String> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::HOST,
        HeaderValue::from_str(&endpoint.authority)
            .map_err(|_| format!("bad host {}", endpoint.authority))?,
    );
    let method = Method::GET;
    let parts = RequestParts {
        method: &method,
        path: acs::PATH,
        query,
        headers: &headers,
        body_sha256_hex: EMPTY_PAYLOAD_SHA256,
    };
    let credentials = api.credentials();
    let params = SigningParams {
        access_key_id: &credentials.access_key_id,
        secret_access_key: &credentials.secret_access_key,
        region: api.region(),
        service: "ecs",
    };
    let target =
        flotilla_sigv4::presign_url(&parts, &params, PRESIGNED_URL_EXPIRES_SECONDS, now_seconds)
            .map_err(|error| error.to_string())?;
    Ok(format!("ws://{}{target}", endpoint.authority))
}

async fn connect_and_serve(
    api: &ApiClient,
    identity: &ChannelIdentity,
    engine: &Arc<Engine>,
    health: &mut mpsc::Receiver<FromAgent>,
    seq_num: &mut u64,
) -> Disconnect {
    let lost = |reason: String| Disconnect::Lost {
        reason,
        stable: false,
    };
    let discovered = api
        .discover_poll_endpoint(&DiscoverPollEndpointRequest {
            cluster: Some(identity.cluster.clone()),
            container_instance: Some(identity.container_instance_arn.clone()),
        })
        .await;
    let endpoint = match discovered {
        Ok(response) => match response.endpoint.as_deref().map(Endpoint::parse) {
            Some(Ok(endpoint)) => endpoint,
            Some(Err(error)) => return lost(error.to_string()),
            // No endpoint named: the API endpoint itself serves the channel.
            None => api.endpoint().clone(),
        },
        Err(error) => return lost(error.to_string()),
    };
    let cluster_arn = cluster_arn_from_instance_arn(&identity.container_instance_arn)
        .unwrap_or_else(|| identity.cluster.clone());
    let query = connect_query(&cluster_arn, &identity.container_instance_arn, *seq_num);
    let url = match presigned_url(&endpoint, &query, api, api.clock().now_ms() / 1000) {
        Ok(url) => url,
        Err(reason) => return lost(reason),
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MESSAGE_MAX_BYTES))
        .max_frame_size(Some(MESSAGE_MAX_BYTES));
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(url, Some(config), true),
    )
    .await;
    let mut socket = match connected {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(error)) => return lost(format!("websocket connect: {}", error_chain(&error))),
        Err(_) => return lost("websocket connect timed out".to_owned()),
    };
    tracing::info!(instance = %identity.label, endpoint = %endpoint.authority, "control channel connected");
    let connected_at = tokio::time::Instant::now();
    let stable = move || connected_at.elapsed() >= STABLE_CONNECTION;

    // Health may have changed while disconnected: send all of it again.
    for message in engine.health_messages() {
        if let Err(reason) = send(&mut socket, &message).await {
            return Disconnect::Lost {
                reason,
                stable: stable(),
            };
        }
    }

    let heartbeat_period = Duration::from_millis(acs::HEARTBEAT_INTERVAL_MS);
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + heartbeat_period,
        heartbeat_period,
    );
    let silence_limit = Duration::from_millis(acs::HEARTBEAT_TIMEOUT_MS);
    let mut last_heard = tokio::time::Instant::now();
    let mut first_payload = true;
    loop {
        tokio::select! {
            frame = socket.next() => {
                let frame = match frame {
                    None => return Disconnect::Lost { reason: "closed by the control plane".to_owned(), stable: stable() },
                    Some(Err(error)) => return Disconnect::Lost { reason: error_chain(&error), stable: stable() },
                    Some(Ok(frame)) => frame,
                };
                last_heard = tokio::time::Instant::now();
                let text = match frame {
                    Message::Text(text) => text,
                    Message::Close(_) => return Disconnect::Lost { reason: "closed by the control plane".to_owned(), stable: stable() },
                    // Pings are answered by the library; nothing else is expected.
                    _ => continue,
                };
                let message: ToAgent = match serde_json::from_str(text.as_str()) {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!(instance = %identity.label, %error, "ignoring a control message that does not decode");
                        continue;
                    }
                };
                match message {
                    ToAgent::Payload { message_id, seq_num: payload_seq, tasks } => {
                        tracing::debug!(instance = %identity.label, tasks = tasks.len(), seq = payload_seq, "payload");
                        engine.apply_payload(tasks, first_payload).await;
                        first_payload = false;
                        *seq_num = (*seq_num).max(payload_seq);
                        let ack = FromAgent::Ack { message_id, seq_num: payload_seq };
                        if let Err(reason) = send(&mut socket, &ack).await {
                            return Disconnect::Lost { reason, stable: stable() };
                        }
                    }
                    ToAgent::Heartbeat { .. } => {}
                    ToAgent::IamRoleCredentials { message_id, task_arn, role_type, credentials } => {
                        if engine.renew_credentials(&task_arn, role_type, credentials) {
                            tracing::debug!(instance = %identity.label, %task_arn, ?role_type, "task role credentials renewed");
                        }
                        let ack = FromAgent::IamRoleCredentialsAck { message_id, task_arn };
                        if let Err(reason) = send(&mut socket, &ack).await {
                            return Disconnect::Lost { reason, stable: stable() };
                        }
                    }
                    ToAgent::Deregistered { reason } => {
                        let _ = socket.close(None).await;
                        return Disconnect::Deregistered(reason);
                    }
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > silence_limit {
                    return Disconnect::Lost { reason: "control plane silent past the heartbeat timeout".to_owned(), stable: stable() };
                }
                let beat = FromAgent::Heartbeat { sent_at_ms: api.clock().now_ms() };
                if let Err(reason) = send(&mut socket, &beat).await {
                    return Disconnect::Lost { reason, stable: stable() };
                }
            }
            Some(message) = health.recv() => {
                if let Err(reason) = send(&mut socket, &message).await {
                    return Disconnect::Lost { reason, stable: stable() };
                }
            }
        }
    }
}

async fn send<S>(socket: &mut S, message: &FromAgent) -> Result<(), String>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let text = serde_json::to_string(message).map_err(|error| error.to_string())?;
    tokio::time::timeout(CONNECT_TIMEOUT, socket.send(Message::text(text)))
        .await
        .map_err(|_| "sending on the control channel timed out".to_owned())?
        .map_err(|error| error_chain(&error))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cluster_arn_comes_from_the_instance_arn() {
        assert_eq!(
            cluster_arn_from_instance_arn(
                "arn:aws:ecs:us-east-1:000000000000:container-instance/prod/0123abcd"
            )
            .as_deref(),
            Some("arn:aws:ecs:us-east-1:000000000000:cluster/prod")
        );
        assert_eq!(cluster_arn_from_instance_arn("nonsense"), None);
    }

    #[test]
    fn connect_query_is_encoded_for_sigv4() {
        assert_eq!(
            connect_query("arn:aws:ecs:us-east-1:0:cluster/a b", "arn:x/y", 7),
            "clusterArn=arn%3Aaws%3Aecs%3Aus-east-1%3A0%3Acluster%2Fa%20b&containerInstanceArn=arn%3Ax%2Fy&seqNum=7"
        );
    }

    #[test]
    fn presigned_url_verifies_with_our_own_verifier() {
        let clock: Arc<dyn crate::clock::Clock> =
            Arc::new(crate::clock::TokioClock::starting_at(1_700_000_000_000));
        let api = ApiClient::new(
            Endpoint::parse("http://127.0.0.1:8440").unwrap(),
            crate::api::AgentCredentials {
                access_key_id: "test".into(),
                secret_access_key: "test".into(),
            },
            "us-east-1".into(),
            Arc::clone(&clock),
        );
        let query = connect_query(
            "arn:aws:ecs:us-east-1:0:cluster/default",
            "arn:aws:ecs:us-east-1:0:container-instance/default/x",
            0,
        );
        let url = presigned_url(&api.endpoint(), &query, &api, 1_700_000_000).unwrap();
        assert!(url.starts_with("ws://127.0.0.1:8440/ws/agent?clusterArn="));
        assert!(url.contains("X-Amz-Expires=60"));
        // The control plane's verifier accepts it, host header as tungstenite sends it.
        let uri: http::Uri = url.parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::HOST,
            HeaderValue::from_static("127.0.0.1:8440"),
        );
        let parts = RequestParts {
            method: &Method::GET,
            path: uri.path(),
            query: uri.query().unwrap(),
            headers: &headers,
            body_sha256_hex: EMPTY_PAYLOAD_SHA256,
        };
        let credentials = flotilla_sigv4::Credentials::from_pairs([("test", "test")]).unwrap();
        flotilla_sigv4::verify(&parts, &credentials, 1_700_000_010).unwrap();
    }
}
