//! The AWS endpoint (`POST /`) in every protocol the services of
//! [`crate::services`] speak, the health check and the metrics.

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
use flotilla_protocol::{form, query, xml, Protocol};
use flotilla_sigv4::{sha256_hex, RequestParts};
use flotilla_types::ApiError;
use http_body_util::BodyExt;

use crate::services::{self, Call, Input, Reply, ServiceEntry};
use crate::{Edge, REQUEST_BODY_MAX_BYTES};

pub fn router(edge: Arc<Edge>) -> Router {
    Router::new()
        .route("/", post(aws_json))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route(flotilla_types::acs::PATH, get(crate::agent_ws::agent_ws))
        .route("/v2", any(crate::registry::v2))
        .route("/v2/", any(crate::registry::v2))
        .route("/v2/{*rest}", any(crate::registry::v2))
        .fallback(crate::s3::handle)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&edge),
            crate::s3::route_signed_for_s3,
        ))
        .with_state(edge)
}

async fn health(State(edge): State<Arc<Edge>>) -> impl IntoResponse {
    let (status, mut body) = crate::loops::health(
        &edge.ecs.supervisor().report(),
        edge.ecs.election().as_ref(),
    );
    if edge.ecs.election().replicated() {
        body = crate::loops::with_replicas(body, edge.store.as_ref());
    }
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

async fn metrics(State(edge): State<Arc<Edge>>) -> impl IntoResponse {
    let revision = edge.store.revision() as f64;
    let body = edge.metrics.render(&[(
        "flotilla_store_revision",
        "Revision of the last committed store transaction.",
        revision,
    )]) + &crate::loops::render_metrics(&edge.ecs.supervisor().report());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

async fn aws_json(State(edge): State<Arc<Edge>>, request: Request) -> Response {
    let started = Instant::now();
    let request_id = edge.ids.uuid();
    let outcome = answer(&edge, request, &request_id).await;
    let code = match &outcome.result {
        Ok(_) => "OK",
        Err(error) => error.code,
    };
    edge.metrics
        .record(outcome.service, outcome.operation, code, started.elapsed());
    let protocol = outcome
        .entry
        .map_or(Protocol::Json11, |entry| entry.protocol);
    let mut response = match outcome.result {
        Ok(body) => (StatusCode::OK, body).into_response(),
        Err(error) => {
            if error.status >= 500 {
                tracing::error!(%request_id, operation = %outcome.operation, %error, "request failed");
            } else {
                tracing::debug!(%request_id, operation = %outcome.operation, %error, "request refused");
            }
            error_response(outcome.entry, &error, &request_id)
        }
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(protocol.content_type()),
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("x-amzn-RequestId", value);
    }
    response
}

/// The error in the protocol of the service it came from (JSON when no
/// service could be told), with the code the service's model gives it.
fn error_response(entry: Option<&ServiceEntry>, error: &ApiError, request_id: &str) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let model = entry.and_then(|entry| entry.model);
    // Query clients know an error by the model's `error.code`; JSON clients
    // by the shape name, with the code in a header for query-compatible ones.
    let wire_code = model.map_or(error.code, |model| model.wire_code(error.code));
    match entry.map(|entry| entry.protocol) {
        Some(Protocol::Query) => {
            let code = wire_code;
            let fault = if error.status >= 500 {
                xml::Fault::Receiver
            } else {
                xml::Fault::Sender
            };
            let body = xml::error(model, fault, code, &error.message, request_id);
            (status, body).into_response()
        }
        _ => {
            let body = flotilla_protocol::json::error_body(error.code, &error.message);
            let mut response = (status, body).into_response();
            if model.is_some_and(|model| model.query_compatible) {
                let value =
                    flotilla_protocol::json::query_error_header(wire_code, error.status < 500);
                if let Ok(value) = HeaderValue::from_str(&value) {
                    response.headers_mut().insert("x-amzn-query-error", value);
                }
            }
            response
        }
    }
}

/// What a request turned out to be, for metrics and logs.
struct Outcome {
    entry: Option<&'static ServiceEntry>,
    service: &'static str,
    /// A name from the service's own operation list, or "unknown": what a
    /// caller sends never becomes a metric label or a new map entry.
    operation: &'static str,
    result: Result<Vec<u8>, ApiError>,
}

/// The service a request is for: by its `X-Amz-Target` prefix (JSON
/// protocols), or with no target by the service its signature is scoped to
/// (Query). Read before the signature is verified, to pick the body limit
/// and the error shape; verification then holds the request to it.
fn resolve(parts: &axum::http::request::Parts, target: &str) -> Option<&'static ServiceEntry> {
    if !target.is_empty() {
        let prefix = target.split_once('.').map_or(target, |(prefix, _)| prefix);
        return services::by_target_prefix(prefix);
    }
    services::query_service(scope_service(parts)?)
}

/// The service named in the credential scope
/// (`AKID/20261207/us-east-1/sts/aws4_request`), from the `Authorization`
/// header's `Credential=` or a presigned URL's `X-Amz-Credential`.
fn scope_service(parts: &axum::http::request::Parts) -> Option<&str> {
    let credential = match parts.headers.get(header::AUTHORIZATION) {
        Some(authorization) => authorization
            .to_str()
            .ok()?
            .split("Credential=")
            .nth(1)?
            .split([',', ' '])
            .next()?,
        None => {
            let encoded = parts
                .uri
                .query()?
                .split('&')
                .find_map(|pair| pair.strip_prefix("X-Amz-Credential="))?;
            // Only the service segment is needed; it is `%2F`-separated.
            return encoded
                .rsplit("%2F")
                .nth(1)
                .filter(|service| !service.contains('/'));
        }
    };
    let mut segments = credential.rsplit('/');
    segments.next()?; // aws4_request
    segments.next()
}

async fn answer(edge: &Arc<Edge>, request: Request, request_id: &str) -> Outcome {
    let (parts, body) = request.into_parts();
    let target = target_of(&parts.headers);
    let entry = resolve(&parts, target);
    let operation = target
        .split_once('.')
        .map_or("", |(_, operation)| operation);
    let mut outcome = Outcome {
        entry,
        service: entry.map_or("unknown", |entry| entry.label),
        operation: match entry {
            Some(entry) if entry.protocol.is_json() => entry.operation_label(operation),
            _ => services::UNKNOWN_OPERATION,
        },
        result: Err(ApiError::server("unanswered")),
    };
    let body_max_bytes = entry.map_or(REQUEST_BODY_MAX_BYTES, |entry| entry.body_max_bytes);
    let body = match read_body(&parts.headers, body, body_max_bytes).await {
        Ok(body) => body,
        Err(error) => {
            outcome.result = Err(error);
            return outcome;
        }
    };
    let (caller, authenticated) = match authenticate(edge, &parts, &body, entry) {
        Ok(authenticated) => authenticated,
        Err(error) => {
            outcome.result = Err(error);
            return outcome;
        }
    };
    let source_ip = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip().to_string());
    let Some(entry) = entry else {
        outcome.result = Err(ApiError::unknown_operation(target));
        return outcome;
    };
    outcome.result = match entry.protocol {
        Protocol::Json10 | Protocol::Json11 => {
            let call = Call {
                caller,
                operation: operation.to_owned(),
                input: Input::Json(body),
                identity: authenticated.identity,
                temporary: authenticated.temporary,
                source_ip,
                now_ms: edge.clock.now_ms(),
            };
            match call_handler(edge, entry, call).await {
                Ok(Reply::Json(body)) => Ok(body),
                Ok(Reply::Value(value)) => serde_json::to_vec(&value).map_err(|error| {
                    ApiError::server(format!("response did not serialize: {error}"))
                }),
                Err(error) => Err(error),
            }
        }
        Protocol::Query => {
            // A presigned Query request carries its parameters in the URL
            // beside the signature, and no body.
            let form_bytes: &[u8] = if body.is_empty() {
                parts.uri.query().unwrap_or_default().as_bytes()
            } else {
                &body
            };
            let call = Call {
                caller,
                operation: String::new(),
                input: Input::Query(serde_json::Value::Null),
                identity: authenticated.identity,
                temporary: authenticated.temporary,
                source_ip,
                now_ms: edge.clock.now_ms(),
            };
            answer_query(edge, entry, call, form_bytes, request_id, &mut outcome).await
        }
    };
    outcome
}

/// A Query request: the form decoded against the service's model, the
/// handler called with the value, its output written as XML.
async fn answer_query(
    edge: &Arc<Edge>,
    entry: &'static ServiceEntry,
    mut call: Call,
    body: &[u8],
    request_id: &str,
    outcome: &mut Outcome,
) -> Result<Vec<u8>, ApiError> {
    let Some(model) = entry.model else {
        return Err(ApiError::server(
            "a Query service is registered without its model",
        ));
    };
    let refused = |error: query::QueryError| ApiError::new(error.code(), 400, error.to_string());
    let mut form = form::Form::parse(body, &form::LIMITS).map_err(|error| refused(error.into()))?;
    // The signature's own parameters of a presigned request are not input.
    form.parameters
        .retain(|name, _| !name.starts_with("X-Amz-"));
    let (operation, value) = query::decode(model, &form, &form::LIMITS).map_err(refused)?;
    outcome.operation = operation.name;
    call.operation = operation.name.to_owned();
    call.input = Input::Query(value);
    let output = match call_handler(edge, entry, call).await? {
        Reply::Value(value) => value,
        Reply::Json(body) => serde_json::from_slice(&body)
            .map_err(|error| ApiError::server(format!("response is not a value: {error}")))?,
    };
    Ok(xml::response(model, operation, &output, request_id).into_bytes())
}

/// The one place every request is authorized, after it was authenticated
/// and decoded and before its service's handler runs.
async fn call_handler(
    edge: &Arc<Edge>,
    entry: &'static ServiceEntry,
    call: Call,
) -> Result<Reply, ApiError> {
    crate::access::authorize(edge, entry, &call)?;
    (entry.handler)(edge, entry, call).await
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
    service: Option<&ServiceEntry>,
) -> Result<(Caller, crate::access::Authenticated), ApiError> {
    let body_hash = sha256_hex(body);
    let request = RequestParts::from_http(parts, body_hash.as_str());
    let now_ms = edge.clock.now_ms();
    let keys = crate::access::EdgeKeys::new(edge, now_ms);
    let protocol = service.map_or(Protocol::Json11, |service| service.protocol);
    let verified = flotilla_sigv4::verify(&request, &keys, now_ms / 1000).map_err(|error| {
        tracing::debug!(%error, "signature refused");
        if let (flotilla_sigv4::VerifyError::UnrecognizedClient { access_key_id }, source) = (
            &error,
            keys.found.replace(crate::access::KeySource::Unknown),
        ) {
            // Unknown, inactive or expired, in the words of the service's protocol.
            if let Err(refusal) =
                crate::access::identify(edge, access_key_id, source, None, protocol)
            {
                return refusal;
            }
        }
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
    let global = service.is_some_and(|service| service.global);
    if !global && &verified.region != region {
        return Err(crate::wrong_region(&verified.region, region));
    }
    if let Some(service) = service {
        if verified.service != service.signing_name {
            return Err(ApiError::new(
                "InvalidSignatureException",
                400,
                format!(
                    "Credential should be scoped to correct service: '{}'.",
                    service.signing_name
                ),
            ));
        }
    }
    let security_token = crate::access::security_token(parts);
    let source = keys.found.replace(crate::access::KeySource::Unknown);
    let authenticated = crate::access::identify(
        edge,
        &verified.access_key_id,
        source,
        security_token.as_deref(),
        protocol,
    )?;
    Ok((
        Caller {
            access_key_id: verified.access_key_id,
            principal_arn: authenticated.principal_arn.clone(),
        },
        authenticated,
    ))
}

/// Runs one request's handler as its own task, so that a panic answers that
/// request with a ServerException and leaves the server running, and
/// serializes its response.
pub(crate) async fn isolated<R: serde::Serialize + Send + 'static>(
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
