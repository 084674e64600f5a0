//! The service registry's adapters for Secrets Manager and Parameter Store
//! (`flotilla-secrets`).

use std::sync::Arc;

use flotilla_types::ApiError;

use crate::api::isolated;
use crate::services::{Call, HandlerFuture, Input, Reply, ServiceEntry};
use crate::Edge;

fn json_body(call: &Call) -> &[u8] {
    match &call.input {
        Input::Json(body) => body,
        Input::Query(_) => b"",
    }
}

fn unavailable(code: &'static str) -> ApiError {
    ApiError::new(
        code,
        500,
        "this Flotilla server keeps no secrets or parameters",
    )
}

/// Secrets Manager (JSON 1.1).
pub(crate) fn call_secretsmanager<'a>(
    edge: &'a Arc<Edge>,
    _entry: &'static ServiceEntry,
    call: Call,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        use flotilla_aws::secretsmanager::{self, SecretsmanagerRequest};
        let request = match SecretsmanagerRequest::decode(&call.operation, json_body(&call)) {
            None => {
                return Err(ApiError::unknown_operation(&format!(
                    "{}.{}",
                    secretsmanager::TARGET_PREFIX,
                    call.operation
                )))
            }
            Some(decoded) => decoded?,
        };
        let Some(services) = edge.secrets.clone() else {
            return Err(unavailable("InternalServiceError"));
        };
        let now_ms = edge.clock.now_ms();
        let fresh_id = edge.ids.uuid();
        isolated(async move { services.manager.handle(request, now_ms, &fresh_id).await })
            .await
            .map(Reply::Json)
    })
}

/// Parameter Store (JSON 1.1, `AmazonSSM`).
pub(crate) fn call_ssm<'a>(
    edge: &'a Arc<Edge>,
    _entry: &'static ServiceEntry,
    call: Call,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        use flotilla_aws::ssm::{self, SsmRequest};
        let request = match SsmRequest::decode(&call.operation, json_body(&call)) {
            None => {
                return Err(ApiError::unknown_operation(&format!(
                    "{}.{}",
                    ssm::TARGET_PREFIX,
                    call.operation
                )))
            }
            Some(decoded) => decoded.map_err(|error| {
                let error = ApiError::from(error);
                ApiError::new("ValidationException", 400, error.message)
            })?,
        };
        let Some(services) = edge.secrets.clone() else {
            return Err(unavailable("InternalServerError"));
        };
        let now_ms = edge.clock.now_ms();
        let caller = call.caller.principal_arn;
        isolated(async move { services.parameters.handle(request, now_ms, &caller).await })
            .await
            .map(Reply::Json)
    })
}
