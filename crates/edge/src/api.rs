//! The AWS JSON 1.1 endpoint (`POST /`), the health check and the metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use bytes::Bytes;
use flotilla_control::Caller;
use flotilla_sigv4::{sha256_hex, RequestParts};
use flotilla_types::ecr::{self, EcrRequest};
use flotilla_types::ecs::{self, EcsRequest};
use flotilla_types::flotilla::{self, FlotillaRequest};
use flotilla_types::ApiError;
use http_body_util::BodyExt;

use crate::{
    Edge, ECR_REQUEST_BODY_MAX_BYTES, LOGS_REQUEST_BODY_MAX_BYTES, REQUEST_BODY_MAX_BYTES,
};

const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// A service the edge dispatches to, chosen by the `X-Amz-Target` prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Ecs,
    /// Flotilla's own operations (ExplainPlacement), signed for `ecs` too.
    Flotilla,
    /// The image registry's ECR API, signed for `ecr`.
    Ecr,
    /// CloudWatch Logs, signed for `logs`.
    Logs,
}

impl Service {
    fn from_target_prefix(prefix: &str) -> Option<Self> {
        match prefix {
            ecs::TARGET_PREFIX => Some(Service::Ecs),
            flotilla::TARGET_PREFIX => Some(Service::Flotilla),
            ecr::TARGET_PREFIX => Some(Service::Ecr),
            flotilla_types::logs::TARGET_PREFIX => Some(Service::Logs),
            _ => None,
        }
    }

    /// The name requests for this service are signed for.
    fn signing_name(self) -> &'static str {
        match self {
            Service::Ecs | Service::Flotilla => "ecs",
            Service::Ecr => "ecr",
            Service::Logs => "logs",
        }
    }

    /// Largest request body the service takes.
    fn body_max_bytes(self) -> usize {
        match self {
            Service::Ecs | Service::Flotilla => REQUEST_BODY_MAX_BYTES,
            Service::Ecr => ECR_REQUEST_BODY_MAX_BYTES,
            Service::Logs => LOGS_REQUEST_BODY_MAX_BYTES,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Service::Ecs => "ecs",
            Service::Flotilla => "flotilla",
            Service::Ecr => "ecr",
            Service::Logs => "logs",
        }
    }
}

pub fn router(edge: Arc<Edge>) -> Router {
    Router::new()
        .route("/", post(aws_json))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route(flotilla_types::acs::PATH, get(crate::agent_ws::agent_ws))
        .route("/v2", any(crate::registry::v2))
        .route("/v2/", any(crate::registry::v2))
        .route("/v2/{*rest}", any(crate::registry::v2))
        .with_state(edge)
}

async fn health() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"ok\"}",
    )
}

async fn metrics(State(edge): State<Arc<Edge>>) -> impl IntoResponse {
    let revision = edge.store.revision() as f64;
    let body = edge.metrics.render(&[(
        "flotilla_store_revision",
        "Revision of the last committed store transaction.",
        revision,
    )]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// What a request turned out to be, for metrics and logs.
struct Outcome {
    service: &'static str,
    operation: String,
    result: Result<Vec<u8>, ApiError>,
}

async fn aws_json(State(edge): State<Arc<Edge>>, request: Request) -> Response {
    let started = Instant::now();
    let request_id = edge.ids.uuid();
    let outcome = answer(&edge, request).await;
    let code = match &outcome.result {
        Ok(_) => "OK",
        Err(error) => error.code,
    };
    edge.metrics
        .record(outcome.service, &outcome.operation, code, started.elapsed());
    let mut response = match outcome.result {
        Ok(body) => (StatusCode::OK, body).into_response(),
        Err(error) => {
            if error.status >= 500 {
                tracing::error!(%request_id, operation = %outcome.operation, %error, "request failed");
            } else {
                tracing::debug!(%request_id, operation = %outcome.operation, %error, "request refused");
            }
            error_response(&error)
        }
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("x-amzn-RequestId", value);
    }
    response
}

fn error_response(error: &ApiError) -> Response {
    let body = serde_json::json!({ "__type": error.code, "message": error.message });
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, body.to_string()).into_response()
}

async fn answer(edge: &Arc<Edge>, request: Request) -> Outcome {
    let (parts, body) = request.into_parts();
    let target = target_of(&parts.headers);
    let (prefix, operation) = target.split_once('.').unwrap_or((target, ""));
    let service = Service::from_target_prefix(prefix);
    let mut outcome = Outcome {
        service: service.map_or("unknown", Service::label),
        operation: if service.is_some() {
            operation.to_owned()
        } else {
            "unknown".to_owned()
        },
        result: Err(ApiError::server("unanswered")),
    };
    let body_max_bytes = service.map_or(REQUEST_BODY_MAX_BYTES, Service::body_max_bytes);
    outcome.result = match read_body(&parts.headers, body, body_max_bytes).await {
        Err(error) => Err(error),
        Ok(body) => match authenticate(edge, &parts, &body, service) {
            Err(error) => Err(error),
            Ok(caller) => match service {
                None => Err(ApiError::unknown_operation(target)),
                Some(Service::Ecs) => call_ecs(edge, caller, operation, &body).await,
                Some(Service::Flotilla) => call_flotilla(edge, caller, operation, &body).await,
                Some(Service::Ecr) => call_ecr(edge, caller, operation, &body).await,
                Some(Service::Logs) => call_logs(edge, operation, &body).await,
            },
        },
    };
    outcome
}

fn target_of(headers: &HeaderMap) -> &str {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Reads the whole body, refusing it as soon as it passes the limit.
async fn read_body(headers: &HeaderMap, body: Body, limit_bytes: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            "RequestEntityTooLargeException",
            413,
            format!("request body is larger than the limit of {limit_bytes} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit_bytes) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, limit_bytes);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => Err(ApiError::serialization(format!(
            "could not read the request body: {error}"
        ))),
    }
}

/// Verifies the SigV4 signature and tells who signed.
fn authenticate(
    edge: &Edge,
    parts: &axum::http::request::Parts,
    body: &[u8],
    service: Option<Service>,
) -> Result<Caller, ApiError> {
    let body_hash = sha256_hex(body);
    let request = RequestParts::from_http(parts, body_hash.as_str());
    let now_seconds = edge.clock.now_ms() / 1000;
    let verified =
        flotilla_sigv4::verify(&request, &edge.credentials, now_seconds).map_err(|error| {
            tracing::debug!(%error, "signature refused");
            ApiError::new(
                error.aws_error_code(),
                error.http_status().as_u16(),
                error.aws_message(),
            )
        })?;
    // The body is what an API request means: a signature that leaves it out
    // would let anyone who saw one request send any other under its name.
    if verified.payload != flotilla_sigv4::PayloadCoverage::Signed {
        return Err(ApiError::new(
            "InvalidSignatureException",
            400,
            "UNSIGNED-PAYLOAD is not accepted by this service: the signature must cover the request body.",
        ));
    }
    if parts.headers.contains_key("x-amz-target") && !verified.is_header_signed("x-amz-target") {
        return Err(ApiError::new(
            "InvalidSignatureException",
            400,
            "The X-Amz-Target header must be signed.",
        ));
    }
    let region = &edge.ecs.scope().region;
    if &verified.region != region {
        return Err(ApiError::new(
            "InvalidSignatureException",
            400,
            format!("Credential should be scoped to a valid region, not '{}'. This endpoint serves '{region}'.", verified.region),
        ));
    }
    if let Some(service) = service {
        if verified.service != service.signing_name() {
            return Err(ApiError::new(
                "InvalidSignatureException",
                400,
                format!(
                    "Credential should be scoped to correct service: '{}'.",
                    service.signing_name()
                ),
            ));
        }
    }
    let principal_arn = edge
        .principals
        .get(&verified.access_key_id)
        .cloned()
        .unwrap_or_else(|| format!("arn:aws:iam::{}:root", edge.ecs.scope().account_id));
    Ok(Caller {
        access_key_id: verified.access_key_id,
        principal_arn,
    })
}

async fn call_ecs(
    edge: &Arc<Edge>,
    caller: Caller,
    operation: &str,
    body: &[u8],
) -> Result<Vec<u8>, ApiError> {
    let request = match EcsRequest::decode(operation, body) {
        None => {
            return Err(ApiError::unknown_operation(&format!(
                "{}.{operation}",
                ecs::TARGET_PREFIX
            )))
        }
        Some(decoded) => decoded?,
    };
    let ecs = Arc::clone(&edge.ecs);
    isolated(async move { ecs.handle(&caller, request).await }).await
}

async fn call_flotilla(
    edge: &Arc<Edge>,
    caller: Caller,
    operation: &str,
    body: &[u8],
) -> Result<Vec<u8>, ApiError> {
    let request = match FlotillaRequest::decode(operation, body) {
        None => {
            return Err(ApiError::unknown_operation(&format!(
                "{}.{operation}",
                flotilla::TARGET_PREFIX
            )))
        }
        Some(decoded) => decoded?,
    };
    let ecs = Arc::clone(&edge.ecs);
    isolated(async move { ecs.handle_flotilla(&caller, request).await }).await
}

async fn call_ecr(
    edge: &Arc<Edge>,
    caller: Caller,
    operation: &str,
    body: &[u8],
) -> Result<Vec<u8>, ApiError> {
    let request = match EcrRequest::decode(operation, body) {
        None => {
            return Err(ApiError::unknown_operation(&format!(
                "{}.{operation}",
                ecr::TARGET_PREFIX
            )))
        }
        Some(decoded) => decoded?,
    };
    let Some(registry) = edge.registry.clone() else {
        return Err(ApiError::new(
            "ValidationException",
            400,
            "this Flotilla server runs no image registry",
        ));
    };
    let now_ms = edge.clock.now_ms();
    let fresh_id = edge.ids.uuid();
    isolated(async move {
        let caller = flotilla_registry::EcrCaller {
            principal_arn: &caller.principal_arn,
            now_ms,
            fresh_id: &fresh_id,
        };
        registry.handle_ecr(&caller, request).await
    })
    .await
}

async fn call_logs(edge: &Arc<Edge>, operation: &str, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let request = match flotilla_types::logs::LogsRequest::decode(operation, body) {
        None => {
            return Err(ApiError::unknown_operation(&format!(
                "{}.{operation}",
                flotilla_types::logs::TARGET_PREFIX
            )))
        }
        Some(decoded) => decoded?,
    };
    let Some(logs) = edge.logs.clone() else {
        return Err(ApiError::new(
            "ServiceUnavailableException",
            503,
            "this Flotilla server keeps no CloudWatch Logs store",
        ));
    };
    let now_ms = edge.clock.now_ms() as i64;
    // The store waits on its disk (a put returns after fdatasync): off the
    // async workers.
    isolated(async move {
        tokio::task::spawn_blocking(move || logs.handle(request, now_ms))
            .await
            .map_err(|join_error| {
                tracing::error!(%join_error, "logs request handler panicked");
                ApiError::server("internal error while handling the request")
            })?
    })
    .await
}

/// Runs one request's handler as its own task, so that a panic answers that
/// request with a ServerException and leaves the server running, and
/// serializes its response.
async fn isolated<R: serde::Serialize + Send + 'static>(
    handler: impl std::future::Future<Output = Result<R, ApiError>> + Send + 'static,
) -> Result<Vec<u8>, ApiError> {
    let response = match tokio::spawn(handler).await {
        Ok(result) => result?,
        Err(join_error) => {
            tracing::error!(%join_error, "request handler panicked");
            return Err(ApiError::server(
                "internal error while handling the request",
            ));
        }
    };
    serde_json::to_vec(&response)
        .map_err(|error| ApiError::server(format!("response did not serialize: {error}")))
}
