//! The registry of AWS services the edge answers: one entry per service,
//! naming how requests find it (target prefix, or signing name for Query),
//! its protocol, its body limit and its handler.
//!
//! *Architecture invariant:* the dispatch code in `api.rs` knows protocols,
//! never services. Adding a service is one entry in [`SERVICES`] and a
//! handler that turns a typed request into a typed response in the
//! service's own crate.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use flotilla_control::Caller;
use flotilla_protocol::{Protocol, ServiceModel};
use flotilla_types::ecr::{self, EcrRequest};
use flotilla_types::ecs::{self, EcsRequest};
use flotilla_types::flotilla::{self, FlotillaRequest};
use flotilla_types::ApiError;

use crate::api::isolated;
use crate::{
    Edge, ECR_REQUEST_BODY_MAX_BYTES, LOGS_REQUEST_BODY_MAX_BYTES, REQUEST_BODY_MAX_BYTES,
};

/// What a handler receives: who called, which operation, and the input as
/// the protocol delivered it.
pub(crate) struct Call {
    pub caller: Caller,
    pub operation: String,
    pub input: Input,
    /// Who the caller is to IAM, with its compiled policies.
    pub identity: Arc<flotilla_iam::Identity>,
    /// Signed with temporary credentials from STS.
    pub temporary: bool,
    /// The client's address, `aws:SourceIp`.
    pub source_ip: Option<String>,
    pub now_ms: u64,
}

pub(crate) enum Input {
    /// A JSON protocol's body, for the service's generated `decode`.
    Json(Bytes),
    /// A Query form already decoded against the model into the value a
    /// JSON client would have sent, for the generated `from_value`.
    Query(serde_json::Value),
}

/// The response body of a JSON service, or the output value of a Query
/// service (the protocol layer writes its XML).
pub(crate) enum Reply {
    Json(Vec<u8>),
    Value(serde_json::Value),
}

pub(crate) type HandlerFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Reply, ApiError>> + Send + 'a>>;
pub(crate) type Handler =
    for<'a> fn(&'a Arc<Edge>, &'static ServiceEntry, Call) -> HandlerFuture<'a>;

pub(crate) struct ServiceEntry {
    /// The service's name in metrics and logs.
    pub label: &'static str,
    /// The credential scope's service name its requests are signed for.
    pub signing_name: &'static str,
    pub protocol: Protocol,
    /// `X-Amz-Target` prefix of a JSON service.
    pub target_prefix: Option<&'static str>,
    /// The botocore model: the operations it has, its errors' codes, and
    /// for Query services the shapes the protocol layer reads.
    pub model: Option<&'static ServiceModel>,
    /// IAM and STS are global services: AWS accepts a signature scoped to
    /// any region for them.
    pub global: bool,
    pub body_max_bytes: usize,
    /// The operations of a service without a generated model (ECS, ECR,
    /// Flotilla's own); a modelled service's come from its model.
    pub operations: &'static [&'static str],
    /// The error shape (from the service's model where it has one) with
    /// which the service refuses an operation Flotilla does not implement.
    pub not_implemented: &'static str,
    pub handler: Handler,
}

/// The label of requests for an operation or a service the edge does not have.
pub(crate) const UNKNOWN_OPERATION: &str = "unknown";

impl ServiceEntry {
    /// `operation` as one of the service's own names, or "unknown": the
    /// closed set request metrics are labelled with.
    pub fn operation_label(&self, operation: &str) -> &'static str {
        if let Some(model) = self.model {
            return model
                .operation(operation)
                .map_or(UNKNOWN_OPERATION, |known| known.name);
        }
        self.operations
            .iter()
            .find(|known| **known == operation)
            .copied()
            .unwrap_or(UNKNOWN_OPERATION)
    }

    pub fn not_implemented(&self, operation: &str) -> ApiError {
        let status = self
            .model
            .and_then(|model| model.error(self.not_implemented))
            .map_or(400, |error| error.status);
        ApiError::new(
            self.not_implemented,
            status,
            format!("{operation} is not supported by this Flotilla server yet"),
        )
    }
}

/// Bodies of the services to come are small API requests, as ECS's are.
const API_BODY_MAX_BYTES: usize = REQUEST_BODY_MAX_BYTES;

/// Every service the edge answers. A JSON service is found by its target
/// prefix; a Query service by the signing name in the credential scope.
pub(crate) static SERVICES: &[ServiceEntry] = &[
    ServiceEntry {
        label: "ecs",
        signing_name: "ecs",
        protocol: Protocol::Json11,
        target_prefix: Some(ecs::TARGET_PREFIX),
        model: None,
        global: false,
        body_max_bytes: REQUEST_BODY_MAX_BYTES,
        operations: ecs::OPERATIONS,
        not_implemented: "UnsupportedFeatureException",
        handler: call_ecs,
    },
    // Flotilla's own operations (ExplainPlacement), signed for `ecs` too.
    ServiceEntry {
        label: "flotilla",
        signing_name: "ecs",
        protocol: Protocol::Json11,
        target_prefix: Some(flotilla::TARGET_PREFIX),
        model: None,
        global: false,
        body_max_bytes: REQUEST_BODY_MAX_BYTES,
        operations: flotilla::OPERATIONS,
        not_implemented: "UnsupportedFeatureException",
        handler: call_flotilla,
    },
    // The image registry's ECR API.
    ServiceEntry {
        label: "ecr",
        signing_name: "ecr",
        protocol: Protocol::Json11,
        target_prefix: Some(ecr::TARGET_PREFIX),
        model: None,
        global: false,
        body_max_bytes: ECR_REQUEST_BODY_MAX_BYTES,
        operations: ecr::OPERATIONS,
        not_implemented: "UnsupportedFeatureException",
        handler: call_ecr,
    },
    modelled(&flotilla_aws::sts::MODEL, true, "InvalidAction", call_sts),
    // Flotilla's own operations for load balancer data planes on other
    // hosts (`flotilla lb --control`), signed like ELBv2's.
    ServiceEntry {
        label: "flotilla-lb",
        signing_name: "elasticloadbalancing",
        protocol: Protocol::Json11,
        target_prefix: Some(flotilla_elbv2::remote::TARGET_PREFIX),
        model: None,
        global: false,
        body_max_bytes: REQUEST_BODY_MAX_BYTES,
        operations: flotilla_elbv2::remote::OPERATIONS,
        not_implemented: "UnsupportedFeatureException",
        handler: call_flotilla_lb,
    },
    // Each line below is a service whose model is known but whose handler
    // has not landed: every operation answers `not_implemented`. The issue
    // that implements one replaces its line with a `modelled(...)` entry
    // naming its crate's handler.
    modelled(
        &flotilla_aws::elbv2::MODEL,
        false,
        "OperationNotPermittedException",
        call_elbv2,
    ),
    modelled(&flotilla_aws::iam::MODEL, true, "InvalidAction", call_iam),
    // CloudWatch Logs: a PutLogEvents batch may hold 1 MiB of messages,
    // which JSON escaping can grow several times over.
    ServiceEntry {
        body_max_bytes: LOGS_REQUEST_BODY_MAX_BYTES,
        ..modelled(
            &flotilla_aws::logs::MODEL,
            false,
            "InvalidOperationException",
            call_logs,
        )
    },
    modelled(
        &flotilla_aws::monitoring::MODEL,
        false,
        "InvalidParameterCombinationException",
        call_monitoring,
    ),
    // CloudWatch again for clients that still send it Query forms.
    modelled(
        &flotilla_aws::monitoring::QUERY_MODEL,
        false,
        "InvalidParameterCombinationException",
        call_monitoring,
    ),
    modelled(
        &flotilla_aws::application_autoscaling::MODEL,
        false,
        "ValidationException",
        call_application_autoscaling,
    ),
    modelled(
        &flotilla_aws::secretsmanager::MODEL,
        false,
        "InvalidRequestException",
        crate::secrets::call_secretsmanager,
    ),
    modelled(
        &flotilla_aws::ssm::MODEL,
        false,
        "UnsupportedOperationException",
        crate::secrets::call_ssm,
    ),
    modelled(
        &flotilla_aws::events::MODEL,
        false,
        "OperationDisabledException",
        not_implemented,
    ),
    modelled(
        &flotilla_aws::servicediscovery::MODEL,
        false,
        "InvalidInput",
        not_implemented,
    ),
];

/// An entry for a service generated from botocore, its routing read from the
/// model.
const fn modelled(
    model: &'static ServiceModel,
    global: bool,
    not_implemented: &'static str,
    handler: Handler,
) -> ServiceEntry {
    ServiceEntry {
        label: model.name,
        signing_name: model.signing_name,
        protocol: model.protocol,
        target_prefix: model.target_prefix,
        model: Some(model),
        global,
        body_max_bytes: API_BODY_MAX_BYTES,
        operations: &[],
        not_implemented,
        handler,
    }
}

/// The JSON service an `X-Amz-Target` prefix names.
pub(crate) fn by_target_prefix(prefix: &str) -> Option<&'static ServiceEntry> {
    SERVICES
        .iter()
        .find(|entry| entry.target_prefix == Some(prefix))
}

/// The Query service requests signed for `signing_name` go to.
pub(crate) fn query_service(signing_name: &str) -> Option<&'static ServiceEntry> {
    SERVICES
        .iter()
        .find(|entry| entry.protocol == Protocol::Query && entry.signing_name == signing_name)
}

/// Every operation of a service whose handler has not landed.
fn not_implemented<'a>(
    _edge: &'a Arc<Edge>,
    entry: &'static ServiceEntry,
    call: Call,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        let known = entry
            .model
            .is_some_and(|model| model.operation(&call.operation).is_some());
        if !known {
            return Err(ApiError::unknown_operation(&format!(
                "{}.{}",
                entry.target_prefix.unwrap_or(entry.label),
                call.operation
            )));
        }
        Err(entry.not_implemented(&call.operation))
    })
}

fn json_body(call: &Call) -> &[u8] {
    match &call.input {
        Input::Json(body) => body,
        Input::Query(_) => b"",
    }
}

fn call_sts<'a>(
    edge: &'a Arc<Edge>,
    entry: &'static ServiceEntry,
    call: Call,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        use flotilla_aws::sts::StsRequest;
        let Input::Query(value) = call.input else {
            return Err(entry.not_implemented(&call.operation));
        };
        let request = match StsRequest::from_value(&call.operation, value) {
            None => return Err(entry.not_implemented(&call.operation)),
            Some(decoded) => decoded.map_err(query_decode_error)?,
        };
        let reply = |response: Result<serde_json::Value, serde_json::Error>| {
            response
                .map(Reply::Value)
                .map_err(|error| ApiError::server(format!("response did not serialize: {error}")))
        };
        let fresh_id = || edge.ids.uuid();
        let context = flotilla_iam::Context {
            now_ms: call.now_ms,
            fresh_id: &fresh_id,
        };
        let scope = edge.ecs.scope();
        match request {
            StsRequest::AssumeRole(request) => {
                let facts = flotilla_iam::RequestFacts {
                    now_ms: call.now_ms,
                    region: &scope.region,
                    source_ip: call.source_ip.as_deref(),
                    temporary: call.temporary,
                };
                let response = edge
                    .iam
                    .assume_role(&context, &call.identity, &facts, request)
                    .await?;
                reply(serde_json::to_value(response))
            }
            StsRequest::GetSessionToken(request) => {
                let response = edge
                    .iam
                    .get_session_token(&context, &call.identity, call.temporary, request)
                    .await?;
                reply(serde_json::to_value(response))
            }
            request => {
                let identity = flotilla_sts::CallerIdentity {
                    principal_arn: &call.caller.principal_arn,
                    default_account_id: &scope.account_id,
                };
                match flotilla_sts::handle(&identity, &request) {
                    Some(flotilla_sts::StsResponse::GetCallerIdentity(mut response)) => {
                        // IAM's own ids where IAM holds the principal.
                        use flotilla_iam_policy::PrincipalKind;
                        match &call.identity.principal.kind {
                            PrincipalKind::User { user_id, .. } => {
                                response.user_id = Some(user_id.clone());
                            }
                            PrincipalKind::AssumedRole {
                                role_id,
                                session_name,
                                ..
                            } => response.user_id = Some(format!("{role_id}:{session_name}")),
                            _ => {}
                        }
                        reply(serde_json::to_value(response))
                    }
                    None => Err(entry.not_implemented(request.operation())),
                }
            }
        }
    })
}

/// IAM (Query), over the control plane's store. A request that leaves out
/// `UserName` where IAM takes the caller's own (GetUser, the access key
/// operations) gets the calling user's.
fn call_iam<'a>(
    edge: &'a Arc<Edge>,
    entry: &'static ServiceEntry,
    call: Call,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        use flotilla_aws::iam::IamRequest;
        let Input::Query(mut value) = call.input else {
            return Err(entry.not_implemented(&call.operation));
        };
        const CALLERS_OWN: &[&str] = &[
            "GetUser",
            "CreateAccessKey",
            "ListAccessKeys",
            "UpdateAccessKey",
            "DeleteAccessKey",
        ];
        if CALLERS_OWN.contains(&call.operation.as_str()) && value.get("UserName").is_none() {
            match &call.identity.principal.kind {
                flotilla_iam_policy::PrincipalKind::User { name, .. } => {
                    if let Some(object) = value.as_object_mut() {
                        object.insert("UserName".to_owned(), name.clone().into());
                    }
                }
                _ => {
                    return Err(ApiError::new(
                        "ValidationError",
                        400,
                        "Must specify userName when calling with non-User credentials",
                    ))
                }
            }
        }
        let request = match IamRequest::from_value(&call.operation, value) {
            None => return Err(entry.not_implemented(&call.operation)),
            Some(decoded) => decoded.map_err(query_decode_error)?,
        };
        let fresh_id = || edge.ids.uuid();
        let context = flotilla_iam::Context {
            now_ms: call.now_ms,
            fresh_id: &fresh_id,
        };
        match edge.iam.handle(&context, request).await? {
            Some(value) => Ok(Reply::Value(value)),
            None => Err(entry.not_implemented(&call.operation)),
        }
    })
}

/// A Query input that fits the form's grammar but not the model's types.
fn query_decode_error(error: flotilla_types::DecodeError) -> ApiError {
    ApiError::new("ValidationError", 400, error.to_string())
}

fn call_ecs<'a>(
    edge: &'a Arc<Edge>,
    _entry: &'static ServiceEntry,
    call: Call,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        let request = match EcsRequest::decode(&call.operation, json_body(&call)) {
            None => {
                return Err(ApiError::unknown_operation(&format!(
                    "{}.{}",
                    ecs::TARGET_PREFIX,
                    call.operation
                )))
            }
            Some(decoded) => decoded?,
        };
        let ecs = Arc::clone(&edge.ecs);
        let caller = call.caller;
        isolated(async move { ecs.handle(&caller, request).await })
            .await
            .map(Reply::Json)
    })
}

fn call_flotilla<'a>(
    edge: &'a Arc<Edge>,
    _entry: &'static ServiceEntry,
    call: Call,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        let request = match FlotillaRequest::decode(&call.operation, json_body(&call)) {
            None => {
                return Err(ApiError::unknown_operation(&format!(
                    "{}.{}",
                    flotilla::TARGET_PREFIX,
                    call.operation
                )))
            }
            Some(decoded) => decoded?,
        };
        let ecs = Arc::clone(&edge.ecs);
        let caller = call.caller;
        isolated(async move { ecs.handle_flotilla(&caller, request).await })
            .await
            .map(Reply::Json)
    })
}

fn call_ecr<'a>(
    edge: &'a Arc<Edge>,
    _entry: &'static ServiceEntry,
    call: Call,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        let request = match EcrRequest::decode(&call.operation, json_body(&call)) {
            None => {
                return Err(ApiError::unknown_operation(&format!(
                    "{}.{}",
                    ecr::TARGET_PREFIX,
                    call.operation
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
        let caller = call.caller;
        isolated(async move {
            let caller = flotilla_registry::EcrCaller {
                principal_arn: &caller.principal_arn,
                now_ms,
                fresh_id: &fresh_id,
            };
            registry.handle_ecr(&caller, request).await
        })
        .await
        .map(Reply::Json)
    })
}

/// A decode failure as a service whose model has no SerializationException
/// of its own words it: `code` for a member of the wrong shape.
fn decode_refusal(error: flotilla_types::DecodeError, code: &'static str) -> ApiError {
    let error = ApiError::from(error);
    let code = if error.code == "SerializationException" {
        error.code
    } else {
        code
    };
    ApiError::new(code, 400, error.message)
}

/// CloudWatch (JSON 1.0, query-compatible; and Query).
fn call_monitoring<'a>(
    edge: &'a Arc<Edge>,
    _entry: &'static ServiceEntry,
    call: Call,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        use flotilla_aws::monitoring::MonitoringRequest;
        let (decoded, query) = match call.input {
            Input::Json(body) => (MonitoringRequest::decode(&call.operation, &body), false),
            Input::Query(value) => (MonitoringRequest::from_value(&call.operation, value), true),
        };
        let request = match decoded {
            None => {
                return Err(ApiError::new(
                    "InvalidAction",
                    400,
                    format!(
                        "The action {} is not valid for this web service.",
                        call.operation
                    ),
                ))
            }
            Some(decoded) => {
                decoded.map_err(|error| decode_refusal(error, "InvalidParameterValueException"))?
            }
        };
        let ecs = Arc::clone(&edge.ecs);
        let body = isolated(async move { ecs.handle_cloudwatch(request).await }).await?;
        if !query {
            return Ok(Reply::Json(body));
        }
        // The handler answers JSON; the protocol layer writes a Query
        // client's XML from the same value.
        serde_json::from_slice(&body)
            .map(Reply::Value)
            .map_err(|error| ApiError::server(format!("response did not parse: {error}")))
    })
}

/// Application Auto Scaling (JSON 1.1).
fn call_application_autoscaling<'a>(
    edge: &'a Arc<Edge>,
    _entry: &'static ServiceEntry,
    call: Call,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        use flotilla_aws::application_autoscaling::{self, ApplicationAutoscalingRequest};
        let request = match ApplicationAutoscalingRequest::decode(&call.operation, json_body(&call))
        {
            None => {
                return Err(ApiError::unknown_operation(&format!(
                    "{}.{}",
                    application_autoscaling::TARGET_PREFIX,
                    call.operation
                )))
            }
            Some(decoded) => {
                decoded.map_err(|error| decode_refusal(error, "ValidationException"))?
            }
        };
        let ecs = Arc::clone(&edge.ecs);
        isolated(async move { ecs.handle_autoscaling(request).await })
            .await
            .map(Reply::Json)
    })
}

/// CloudWatch Logs (JSON 1.1), from the store in the data directory.
fn call_logs<'a>(
    edge: &'a Arc<Edge>,
    _entry: &'static ServiceEntry,
    call: Call,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        use flotilla_aws::logs::{self, LogsRequest};
        let request = match LogsRequest::decode(&call.operation, json_body(&call)) {
            None => {
                return Err(ApiError::unknown_operation(&format!(
                    "{}.{}",
                    logs::TARGET_PREFIX,
                    call.operation
                )))
            }
            Some(decoded) => decoded?,
        };
        let Some(store) = edge.logs.clone() else {
            return Err(ApiError::new(
                "ServiceUnavailableException",
                503,
                "this Flotilla server keeps no CloudWatch Logs store",
            ));
        };
        let now_ms = edge.clock.now_ms() as i64;
        // The store waits on its disk (a put returns after fdatasync): off
        // the async workers.
        isolated(async move {
            tokio::task::spawn_blocking(move || store.handle(request, now_ms))
                .await
                .map_err(|join_error| {
                    tracing::error!(%join_error, "logs request handler panicked");
                    ApiError::server("internal error while handling the request")
                })?
        })
        .await
        .map(Reply::Json)
    })
}

/// Elastic Load Balancing (Query), from `flotilla-elbv2` over the store.
fn call_elbv2<'a>(
    edge: &'a Arc<Edge>,
    entry: &'static ServiceEntry,
    call: Call,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        use flotilla_aws::elbv2::Elbv2Request;
        let Input::Query(value) = call.input else {
            return Err(entry.not_implemented(&call.operation));
        };
        let request = match Elbv2Request::from_value(&call.operation, value) {
            None => return Err(entry.not_implemented(&call.operation)),
            Some(decoded) => decoded.map_err(query_decode_error)?,
        };
        let Some(elbv2) = edge.elbv2.clone() else {
            return Err(entry.not_implemented(&call.operation));
        };
        let context = flotilla_elbv2::CallContext {
            now_ms: edge.clock.now_ms(),
            fresh_id: edge.ids.uuid(),
        };
        let operation = request.operation();
        let body = isolated(async move {
            match elbv2.handle(request, &context).await {
                Some(answer) => answer,
                None => Err(entry.not_implemented(operation)),
            }
        })
        .await?;
        serde_json::from_slice(&body)
            .map(Reply::Value)
            .map_err(|error| ApiError::server(format!("response did not serialize: {error}")))
    })
}

/// The data plane operations of `flotilla lb --control` (JSON 1.1).
fn call_flotilla_lb<'a>(
    edge: &'a Arc<Edge>,
    entry: &'static ServiceEntry,
    call: Call,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        let Some(elbv2) = edge.elbv2.clone() else {
            return Err(entry.not_implemented(&call.operation));
        };
        let now_ms = edge.clock.now_ms();
        let body = json_body(&call).to_vec();
        let operation = call.operation;
        let reply = isolated(async move {
            match elbv2.handle_data_plane(&operation, &body, now_ms) {
                Some(answer) => answer,
                None => Err(ApiError::unknown_operation(&format!(
                    "{}.{operation}",
                    flotilla_elbv2::remote::TARGET_PREFIX
                ))),
            }
        })
        .await?;
        Ok(Reply::Json(reply))
    })
}
