//! The agent's client of the ECS JSON API: DiscoverPollEndpoint,
//! RegisterContainerInstance and SubmitTaskStateChange, signed with SigV4.
//!
//! One [`ApiClient`] (one connection pool) serves every instance in the
//! process, so a thousand simulated instances share a handful of connections.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flotilla_sigv4::{PayloadSigning, RequestParts, SigningParams};
use flotilla_types::ecs::{
    DiscoverPollEndpointRequest, DiscoverPollEndpointResponse, RegisterContainerInstanceRequest,
    RegisterContainerInstanceResponse, SubmitTaskStateChangeRequest, SubmitTaskStateChangeResponse,
};
use http::{HeaderMap, HeaderValue, Method, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::clock::Clock;

/// The JSON protocol's target prefix for ECS.
pub const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";
/// The JSON protocol's target prefix for ECR, the registry's API.
pub const ECR_TARGET_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921";
/// Bound on one API call, connection included.
pub const API_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body accepted.
pub const RESPONSE_BODY_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Calls in flight at once from the whole process; the rest wait their turn,
/// so a thousand simulated instances cannot flood the control plane.
pub const API_CONCURRENCY_MAX: usize = 64;
/// Idle connections kept to the control plane.
pub const IDLE_CONNECTIONS_MAX: usize = 32;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiCallError {
    #[error("endpoint {endpoint} is not usable: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    #[error("{operation}: cannot reach the control plane: {reason}")]
    Transport {
        operation: &'static str,
        reason: String,
    },
    #[error("{operation}: no answer within {API_REQUEST_TIMEOUT:?}")]
    Timeout { operation: &'static str },
    #[error("{operation}: {code}: {message}")]
    Service {
        operation: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{operation}: cannot decode the answer: {reason}")]
    Decode {
        operation: &'static str,
        reason: String,
    },
    #[error("{operation}: cannot sign the request: {reason}")]
    Signing {
        operation: &'static str,
        reason: String,
    },
}

impl ApiCallError {
    /// Whether trying again later may succeed: the control plane was away,
    /// overloaded or failed inside; a refusal of the request itself is final.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Timeout { .. } => true,
            Self::Service { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || code.contains("Throttl")
                    || code == "ServerException"
            }
            Self::BadEndpoint { .. } | Self::Decode { .. } | Self::Signing { .. } => false,
        }
    }
}

/// Access key pair the agent signs with.
#[derive(Clone)]
pub struct AgentCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for AgentCredentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AgentCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// A parsed `http://host:port` endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` exactly as written, which is also the `host` header.
    pub authority: String,
}

impl Endpoint {
    /// Only plain `http://` is spoken: the agent's control plane is local or
    /// behind a TLS-terminating proxy that the agent reaches over http.
    pub fn parse(text: &str) -> Result<Self, ApiCallError> {
        let bad = |reason: &str| ApiCallError::BadEndpoint {
            endpoint: text.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = text.trim().parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") | Some("ws") => {}
            Some(_) => return Err(bad("only http:// endpoints are supported")),
            None => return Err(bad("it has no scheme; write http://host:port")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| bad("it has no host"))?
            .as_str();
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        Ok(Self {
            authority: authority.to_owned(),
        })
    }

    /// Several endpoints, comma-separated (the replicas of one control
    /// plane): the client moves to the next when one cannot be reached.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, ApiCallError> {
        text.split(',')
            .filter(|part| !part.trim().is_empty())
            .map(Self::parse)
            .collect::<Result<Vec<_>, _>>()
            .and_then(|endpoints| {
                if endpoints.is_empty() {
                    Err(ApiCallError::BadEndpoint {
                        endpoint: text.to_owned(),
                        reason: "no endpoint given".to_owned(),
                    })
                } else {
                    Ok(endpoints)
                }
            })
    }

    pub fn http_url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.authority)
    }
}

struct Inner {
    http: Client<HttpConnector, Full<Bytes>>,
    /// The control plane's replicas; requests go to `endpoints[current]`.
    endpoints: Vec<Endpoint>,
    current: std::sync::atomic::AtomicUsize,
    credentials: AgentCredentials,
    /// Sent as `X-Amz-Security-Token` when the credentials are temporary.
    session_token: Option<String>,
    region: String,
    clock: Arc<dyn Clock>,
    in_flight: Semaphore,
}

/// A signed client of the ECS API; cheap to clone.
#[derive(Clone)]
pub struct ApiClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ApiClient")
            .field("endpoints", &self.inner.endpoints)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    pub fn new(
        endpoint: Endpoint,
        credentials: AgentCredentials,
        region: String,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::with_endpoints(vec![endpoint], credentials, region, clock)
    }

    /// A client of a control plane with several replicas: each request
    /// goes to the current one, and a replica that cannot be reached (or
    /// answers 503) makes the client move to the next.
    pub fn with_endpoints(
        endpoints: Vec<Endpoint>,
        credentials: AgentCredentials,
        region: String,
        clock: Arc<dyn Clock>,
    ) -> Self {
        assert!(!endpoints.is_empty(), "an API client needs an endpoint");
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(API_REQUEST_TIMEOUT));
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(IDLE_CONNECTIONS_MAX)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self {
            inner: Arc::new(Inner {
                http,
                endpoints,
                current: Default::default(),
                credentials,
                session_token: None,
                region,
                clock,
                in_flight: Semaphore::new(API_CONCURRENCY_MAX),
            }),
        }
    }

    /// A client of the same endpoint that signs with a role's temporary
    /// credentials (a task's execution role), sharing this one's connections.
    pub fn with_role_credentials(&self, role: &flotilla_types::acs::RoleCredentials) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                endpoints: inner.endpoints.clone(),
                current: std::sync::atomic::AtomicUsize::new(
                    inner.current.load(std::sync::atomic::Ordering::Relaxed),
                ),
                credentials: AgentCredentials {
                    access_key_id: role.access_key_id.clone(),
                    secret_access_key: role.secret_access_key.clone(),
                },
                session_token: Some(role.session_token.clone()),
                region: inner.region.clone(),
                clock: Arc::clone(&inner.clock),
                in_flight: Semaphore::new(API_CONCURRENCY_MAX),
            }),
        }
    }

    /// The replica requests go to now.
    pub fn endpoint(&self) -> Endpoint {
        let (_, endpoint) = self.current();
        endpoint.clone()
    }

    fn current(&self) -> (usize, &Endpoint) {
        let endpoints = &self.inner.endpoints;
        let index = self
            .inner
            .current
            .load(std::sync::atomic::Ordering::Relaxed)
            % endpoints.len();
        (index, &endpoints[index])
    }

    /// Moves to the next replica after `failed`, unless another request
    /// already moved on.
    fn move_on_from(&self, failed: usize) {
        let next = (failed + 1) % self.inner.endpoints.len();
        if next != failed {
            let moved = self.inner.current.compare_exchange(
                failed,
                next,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            );
            if moved.is_ok() {
                tracing::warn!(from = %self.inner.endpoints[failed].authority, to = %self.inner.endpoints[next].authority, "control plane replica unreachable; moving to the next");
            }
        }
    }

    pub fn region(&self) -> &str {
        &self.inner.region
    }

    pub fn credentials(&self) -> &AgentCredentials {
        &self.inner.credentials
    }

    /// The session token signed requests carry with role credentials.
    pub fn session_token(&self) -> Option<&str> {
        self.inner.session_token.as_deref()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub async fn discover_poll_endpoint(
        &self,
        request: &DiscoverPollEndpointRequest,
    ) -> Result<DiscoverPollEndpointResponse, ApiCallError> {
        self.call("DiscoverPollEndpoint", request).await
    }

    pub async fn register_container_instance(
        &self,
        request: &RegisterContainerInstanceRequest,
    ) -> Result<RegisterContainerInstanceResponse, ApiCallError> {
        self.call("RegisterContainerInstance", request).await
    }

    pub async fn submit_task_state_change(
        &self,
        request: &SubmitTaskStateChangeRequest,
    ) -> Result<SubmitTaskStateChangeResponse, ApiCallError> {
        self.call("SubmitTaskStateChange", request).await
    }

    /// One signed JSON call of an ECS operation.
    pub async fn call<Request: Serialize, Response: DeserializeOwned>(
        &self,
        operation: &'static str,
        request: &Request,
    ) -> Result<Response, ApiCallError> {
        self.call_target(TARGET_PREFIX, operation, request).await
    }

    /// One signed JSON call of `target_prefix.operation`: Flotilla's own
    /// operations (`FlotillaV1.*`) are signed for `ecs` like ECS's.
    pub async fn call_target<Request: Serialize, Response: DeserializeOwned>(
        &self,
        target_prefix: &'static str,
        operation: &'static str,
        request: &Request,
    ) -> Result<Response, ApiCallError> {
        self.call_signed(target_prefix, "ecs", operation, request)
            .await
    }

    /// One JSON call of `target_prefix.operation`, signed for `service`
    /// (`ecr` for the registry's API).
    pub async fn call_signed<Request: Serialize, Response: DeserializeOwned>(
        &self,
        target_prefix: &'static str,
        service: &'static str,
        operation: &'static str,
        request: &Request,
    ) -> Result<Response, ApiCallError> {
        let body = serde_json::to_vec(request).map_err(|error| ApiCallError::Decode {
            operation,
            reason: error.to_string(),
        })?;
        let _permit =
            self.inner
                .in_flight
                .acquire()
                .await
                .map_err(|_| ApiCallError::Transport {
                    operation,
                    reason: "client is shutting down".to_owned(),
                })?;
        // A replica that cannot be reached was never sent the request, so
        // it goes to the next one at once; one that timed out or answered
        // 503 may have acted on it, so the caller's retry goes there.
        let mut attempts = self.inner.endpoints.len();
        loop {
            attempts -= 1;
            let (index, endpoint) = self.current();
            let endpoint = endpoint.clone();
            let outcome = tokio::time::timeout(
                API_REQUEST_TIMEOUT,
                self.send_once(&endpoint, target_prefix, service, operation, body.clone()),
            )
            .await;
            match outcome {
                Err(_) => {
                    self.move_on_from(index);
                    return Err(ApiCallError::Timeout { operation });
                }
                Ok(Err(Unreached(error))) if attempts > 0 => {
                    tracing::debug!(%error, "replica unreachable");
                    self.move_on_from(index);
                }
                Ok(Err(Unreached(error))) => {
                    self.move_on_from(index);
                    return Err(error);
                }
                Ok(Err(Answered(error))) => {
                    if matches!(&error, ApiCallError::Service { status: 503, .. }) {
                        self.move_on_from(index);
                    }
                    return Err(error);
                }
                Ok(Ok(answer)) => return Ok(answer),
            }
        }
    }

    /// One request to `endpoint`.
    async fn send_once<Response: DeserializeOwned>(
        &self,
        endpoint: &Endpoint,
        target_prefix: &str,
        service: &'static str,
        operation: &'static str,
        body: Vec<u8>,
    ) -> Result<Response, SendError> {
        let inner = &*self.inner;
        let mut headers = HeaderMap::new();
        let header = |value: &str| {
            HeaderValue::from_str(value).map_err(|_| ApiCallError::Signing {
                operation,
                reason: format!("bad header value {value:?}"),
            })
        };
        headers.insert(http::header::HOST, header(&endpoint.authority)?);
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        headers.insert(
            "x-amz-target",
            header(&format!("{target_prefix}.{operation}"))?,
        );
        if let Some(token) = &inner.session_token {
            headers.insert("x-amz-security-token", header(token)?);
        }
        let body_hash = flotilla_sigv4::sha256_hex(&body);
        let method = Method::POST;
        let parts = RequestParts {
            method: &method,
            path: "/",
            query: "",
            headers: &headers,
            body_sha256_hex: body_hash.as_str(),
        };
        let params = SigningParams {
            access_key_id: &inner.credentials.access_key_id,
            secret_access_key: &inner.credentials.secret_access_key,
            region: &inner.region,
            service,
        };
        let now_seconds = inner.clock.now_ms() / 1000;
        let signature = flotilla_sigv4::sign(&parts, &params, PayloadSigning::Signed, now_seconds)
            .map_err(|error| ApiCallError::Signing {
                operation,
                reason: error.to_string(),
            })?;
        signature.insert_into(&mut headers);

        let mut request = http::Request::builder()
            .method(Method::POST)
            .uri(endpoint.http_url("/"))
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| ApiCallError::Transport {
                operation,
                reason: error.to_string(),
            })?;
        *request.headers_mut() = headers;

        let response = match inner.http.request(request).await {
            Ok(response) => response,
            Err(error) => {
                let failed = ApiCallError::Transport {
                    operation,
                    reason: error_chain(&error),
                };
                return Err(if error.is_connect() {
                    Unreached(failed)
                } else {
                    Answered(failed)
                });
            }
        };
        let status = response.status();
        let bytes = Limited::new(response.into_body(), RESPONSE_BODY_MAX_BYTES)
            .collect()
            .await
            .map_err(|error| ApiCallError::Transport {
                operation,
                reason: error.to_string(),
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(Answered(service_error(operation, status.as_u16(), &bytes)));
        }
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes).map_err(|error| {
            Answered(ApiCallError::Decode {
                operation,
                reason: error.to_string(),
            })
        })
    }
}

/// Why a request to one replica failed.
enum SendError {
    /// No connection could be made: the request was not sent.
    Unreached(ApiCallError),
    /// The replica was reached (it may have acted on the request).
    Answered(ApiCallError),
}

use SendError::{Answered, Unreached};

impl From<ApiCallError> for SendError {
    fn from(error: ApiCallError) -> Self {
        Answered(error)
    }
}

/// The error an AWS JSON service answers with: `{"__type": "...", "message": "..."}`.
fn service_error(operation: &'static str, status: u16, body: &[u8]) -> ApiCallError {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        #[serde(rename = "__type", default)]
        kind: String,
        #[serde(alias = "Message", default)]
        message: String,
    }
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => {
            // `__type` may carry a namespace: `com.amazonaws.ecs#ClientException`.
            let code = error.kind.rsplit('#').next().unwrap_or_default().to_owned();
            (
                if code.is_empty() {
                    format!("HTTP{status}")
                } else {
                    code
                },
                error.message,
            )
        }
        Err(_) => (
            format!("HTTP{status}"),
            String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
        ),
    };
    ApiCallError::Service {
        operation,
        status,
        code,
        message,
    }
}

/// An error and its causes on one line, because hyper's outer error alone
/// ("client error (Connect)") does not say what went wrong.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_refuse_what_we_cannot_speak() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:8440").unwrap().authority,
            "127.0.0.1:8440"
        );
        assert_eq!(
            Endpoint::parse("http://localhost:8440/")
                .unwrap()
                .http_url("/"),
            "http://localhost:8440/"
        );
        assert!(Endpoint::parse("https://ecs.us-east-1.amazonaws.com").is_err());
        assert!(Endpoint::parse("localhost:8440").is_err());
    }

    #[test]
    fn service_errors_are_decoded_and_classified() {
        let error = service_error("RegisterContainerInstance", 400, br#"{"__type":"com.amazonaws.ecs#ClusterNotFoundException","message":"Cluster not found."}"#);
        assert!(
            matches!(&error, ApiCallError::Service { code, .. } if code == "ClusterNotFoundException")
        );
        assert!(!error.is_retryable());
        assert!(service_error("X", 500, b"oops").is_retryable());
        assert!(service_error("X", 400, br#"{"__type":"ThrottlingException"}"#).is_retryable());
    }
}
