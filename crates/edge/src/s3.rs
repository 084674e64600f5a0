//! S3's REST-XML protocol for `flotilla-s3`: routing by method, bucket, key
//! and subresource; SigV4 with S3's rules and payload modes; bodies streamed
//! to disk (plain, or `aws-chunked` with per-chunk signatures) and objects
//! streamed out with Range; errors as S3's `<Error>` document.
//!
//! ```text
//! request ─▶ signed for service s3? ── no ─▶ the edge's other routes (/, /v2/, /health, …)
//!              │ yes (or no other route matched)
//!              ▼
//!   bucket/key: virtual host (BUCKET.localhost, BUCKET.<registry host>) or path style
//!   verify_s3 (header or presigned) ─▶ region and service ─▶ operation
//!   PutObject: body ─▶ [aws-chunked decoder, chunk signatures] ─▶ BlobWriter
//!              ─▶ x-amz-content-sha256 / Content-MD5 / x-amz-checksum-* ─▶ complete_put
//! ```
//!
//! *Routing rule:* a request belongs to S3 when its SigV4 credential scope
//! names the service `s3` (whatever its path), or when no other route of the
//! edge matches it. So a bucket or key can never shadow `/v2/` (the
//! registry), `/health`, `/metrics` or the agent channel: those are only
//! reached by requests that are not signed for S3.

mod chunked;
mod xml;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use flotilla_iam::RequestFacts;
use flotilla_iam_policy::{evaluate, Decision};
use flotilla_protocol::Protocol;
use flotilla_s3::checksum::ChecksumAlgorithm;
use flotilla_s3::records::{ObjectHeaders, ObjectRecord};
use flotilla_s3::{ListObjectsV2, S3Error, LIST_KEYS_MAX, OBJECT_SIZE_MAX_BYTES, S3};
use flotilla_sigv4::{RequestParts, S3Payload};
use http_body_util::BodyExt;
use md5::Digest as _;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::access::{self, Authenticated, EdgeKeys, KeySource};
use crate::Edge;

/// Largest body of a bucket-level request (CreateBucketConfiguration).
pub const BUCKET_REQUEST_BODY_MAX_BYTES: usize = 64 * 1024;
/// Size of the reads that stream an object out.
pub const OBJECT_READ_CHUNK_BYTES: usize = 256 * 1024;

/// Routes requests signed for S3 to [`handle`] before any other route.
pub(crate) async fn route_signed_for_s3(
    State(edge): State<Arc<Edge>>,
    request: Request,
    next: Next,
) -> Response {
    if signed_for_s3(request.headers(), request.uri().query()) {
        handle(State(edge), request).await
    } else {
        next.run(request).await
    }
}

fn signed_for_s3(headers: &HeaderMap, query: Option<&str>) -> bool {
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        return authorization
            .to_str()
            .is_ok_and(|text| text.contains("/s3/aws4_request"));
    }
    query.is_some_and(|query| {
        query.split('&').any(|pair| {
            pair.strip_prefix("X-Amz-Credential=")
                .is_some_and(|value| value.contains("%2Fs3%2Faws4_request"))
        })
    })
}

/// The operation a request was, for metrics (a closed set of names).
type Operation = &'static str;

/// An answer or an S3 error, with the operation it was.
struct Outcome {
    operation: Operation,
    result: Result<Response, S3Error>,
}

pub(crate) async fn handle(State(edge): State<Arc<Edge>>, request: Request) -> Response {
    let started = Instant::now();
    let request_id = edge.ids.uuid();
    let is_head = request.method() == Method::HEAD;
    let resource = request.uri().path().to_owned();
    let outcome = answer(&edge, request).await;
    let code = match &outcome.result {
        Ok(_) => "OK",
        Err(error) => error.code(),
    };
    edge.metrics
        .record("s3", outcome.operation, code, started.elapsed());
    let mut response = match outcome.result {
        Ok(response) => response,
        Err(error) => {
            if error.status() >= 500 && error.code() != "NotImplemented" {
                tracing::error!(%request_id, operation = outcome.operation, %error, "s3 request failed");
            } else {
                tracing::debug!(%request_id, operation = outcome.operation, %error, "s3 request refused");
            }
            error_response(&error, &resource, &request_id, is_head)
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response
            .headers_mut()
            .insert("x-amz-request-id", value.clone());
        response.headers_mut().insert("x-amz-id-2", value);
    }
    response
}

fn error_response(error: &S3Error, resource: &str, request_id: &str, is_head: bool) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
    // HEAD answers carry no body, and 304 never does.
    if is_head || status == StatusCode::NOT_MODIFIED {
        return status.into_response();
    }
    let body = xml::error(error, resource, request_id);
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    response
}

fn xml_response(body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    response
}

/// The bucket of a virtual-hosted request: `BUCKET.localhost[:port]`, or
/// `BUCKET.` followed by the registry's host name, the names the AWS CLI
/// builds from `--endpoint-url http://localhost:PORT` or the server's name.
fn virtual_host_bucket<'a>(host: &'a str, server_host: Option<&str>) -> Option<&'a str> {
    let name = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.bytes().all(|byte| byte.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    let server_name =
        server_host.map(|server| server.rsplit_once(':').map_or(server, |(name, _)| name));
    for base in ["localhost"].into_iter().chain(server_name) {
        if base.is_empty() || base == "localhost" && name == "localhost" {
            continue;
        }
        if let Some(bucket) = name
            .strip_suffix(base)
            .and_then(|rest| rest.strip_suffix('.'))
        {
            if !bucket.is_empty() {
                return Some(bucket);
            }
        }
    }
    None
}

fn percent_decode(text: &str) -> Result<String, S3Error> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| S3Error::InvalidRequest {
            message: "Couldn't parse the specified URI: it is not UTF-8.".to_owned(),
        })
}

/// Query parameters, decoded, without the presigned signature's own.
fn query_parameters(query: Option<&str>) -> Result<Vec<(String, String)>, S3Error> {
    let mut parameters = Vec::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(&name.replace('+', " "))?;
        if name.starts_with("X-Amz-") {
            continue;
        }
        parameters.push((name, percent_decode(&value.replace('+', " "))?));
    }
    Ok(parameters)
}

struct Target {
    bucket: Option<String>,
    key: Option<String>,
}

fn target(edge: &Edge, parts: &axum::http::request::Parts) -> Result<Target, S3Error> {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| parts.uri.authority().map(|authority| authority.as_str()))
        .unwrap_or_default();
    let server_host = edge.registry.as_ref().map(|registry| registry.host());
    let path = parts
        .uri
        .path()
        .strip_prefix('/')
        .unwrap_or(parts.uri.path());
    if let Some(bucket) = virtual_host_bucket(host, server_host) {
        let key = (!path.is_empty())
            .then(|| percent_decode(path))
            .transpose()?;
        return Ok(Target {
            bucket: Some(bucket.to_owned()),
            key,
        });
    }
    let (bucket, key) = match path.split_once('/') {
        Some((bucket, key)) => (bucket, (!key.is_empty()).then_some(key)),
        None => (path, None),
    };
    Ok(Target {
        bucket: (!bucket.is_empty())
            .then(|| percent_decode(bucket))
            .transpose()?,
        key: key.map(percent_decode).transpose()?,
    })
}

/// Checks the signature with S3's rules, and that it is scoped to this
/// server's region and to `s3`; says who signed (the operator's keys, or
/// an IAM user's or role session's, with the session's token).
fn authenticate(
    edge: &Edge,
    parts: &axum::http::request::Parts,
) -> Result<(S3Payload, Authenticated), S3Error> {
    let request = RequestParts::from_http(parts, "");
    let now_ms = edge.clock.now_ms();
    let keys = EdgeKeys::new(edge, now_ms);
    let (verified, payload) =
        flotilla_sigv4::verify_s3(&request, &keys, now_ms / 1000).map_err(|error| {
            tracing::debug!(%error, "s3 signature refused");
            let (code, status, message) = error.s3_error();
            S3Error::Signature {
                code,
                status,
                message,
            }
        })?;
    let region = &edge.ecs.scope().region;
    if &verified.region != region {
        return Err(S3Error::Signature {
            code: "AuthorizationHeaderMalformed",
            status: 400,
            message: format!(
                "The authorization header is malformed; the region '{}' is wrong; expecting '{region}'",
                verified.region
            ),
        });
    }
    if verified.service != "s3" {
        return Err(S3Error::Signature {
            code: "AuthorizationHeaderMalformed",
            status: 400,
            message: format!(
                "The authorization header is malformed; the service '{}' is wrong; expecting 's3'",
                verified.service
            ),
        });
    }
    let source = keys.found.replace(KeySource::Unknown);
    let token = access::security_token(parts);
    let caller = access::identify(
        edge,
        &verified.access_key_id,
        source,
        token.as_deref(),
        Protocol::Query,
    )
    .map_err(|error| match error.code {
        "ExpiredToken" => S3Error::Signature {
            code: "ExpiredToken",
            status: 400,
            message: "The provided token has expired.".to_owned(),
        },
        "InvalidClientTokenId" => S3Error::Signature {
            code: "InvalidToken",
            status: 400,
            message: "The provided token is malformed or otherwise invalid.".to_owned(),
        },
        _ => S3Error::Internal {
            detail: error.message,
        },
    })?;
    Ok((payload, caller))
}

/// The IAM action and resource ARN an S3 operation is authorized as.
fn s3_check(operation: &str, target: &Target) -> (String, String) {
    let bucket = target.bucket.as_deref().unwrap_or_default();
    let object = |key: &str| format!("arn:aws:s3:::{bucket}/{key}");
    let key = target.key.as_deref().unwrap_or_default();
    let (action, resource) = match operation {
        "ListBuckets" => ("ListAllMyBuckets", "*".to_owned()),
        "HeadBucket" | "ListObjectsV2" | "ListObjects" => {
            ("ListBucket", format!("arn:aws:s3:::{bucket}"))
        }
        "ListMultipartUploads" => (
            "ListBucketMultipartUploads",
            format!("arn:aws:s3:::{bucket}"),
        ),
        "CreateBucket" | "DeleteBucket" | "GetBucketLocation" => {
            (operation, format!("arn:aws:s3:::{bucket}"))
        }
        // Its keys are in the body: authorized for every key of the bucket.
        "DeleteObjects" => ("DeleteObject", object("*")),
        "PutObject"
        | "CopyObject"
        | "UploadPart"
        | "UploadPartCopy"
        | "CreateMultipartUpload"
        | "CompleteMultipartUpload" => ("PutObject", object(key)),
        "GetObject" | "HeadObject" => ("GetObject", object(key)),
        "ListParts" => ("ListMultipartUploadParts", object(key)),
        other => (other, object(key)),
    };
    (format!("s3:{action}"), resource)
}

/// Decides an S3 operation for its caller, as IAM decides every other
/// service's: the operator's keys pass, IAM's users and role sessions need
/// an allow. S3 says only "Access Denied".
fn allowed(
    edge: &Edge,
    caller: &Authenticated,
    operation: &str,
    target: &Target,
) -> Result<(), S3Error> {
    let Some(policies) = &caller.identity.policies else {
        return Ok(());
    };
    let (action, resource) = s3_check(operation, target);
    let facts = RequestFacts {
        now_ms: edge.clock.now_ms(),
        region: &edge.ecs.scope().region,
        source_ip: None,
        temporary: caller.temporary,
    };
    let context = caller.identity.context(&action, &resource, &facts);
    match evaluate(&context, policies, None) {
        Decision::Deny(_) => {
            tracing::debug!(principal = %caller.principal_arn, %action, %resource, "s3 request denied");
            Err(S3Error::AccessDenied)
        }
        _ => Ok(()),
    }
}

/// Refuses query parameters the operation does not act on, naming the first.
fn only_parameters(parameters: &[(String, String)], allowed: &[&str]) -> Result<(), S3Error> {
    match parameters
        .iter()
        .find(|(name, _)| !allowed.contains(&name.as_str()) && name != "x-id")
    {
        Some((name, _)) => Err(S3Error::not_implemented(format!(
            "The query parameter or subresource '{name}' on this operation"
        ))),
        None => Ok(()),
    }
}

fn parameter<'a>(parameters: &'a [(String, String)], name: &str) -> Option<&'a str> {
    parameters
        .iter()
        .find(|(candidate, _)| candidate == name)
        .map(|(_, value)| value.as_str())
}

async fn answer(edge: &Arc<Edge>, request: Request) -> Outcome {
    let (parts, body) = request.into_parts();
    let mut outcome = Outcome {
        operation: "unknown",
        result: Err(S3Error::internal_unanswered()),
    };
    let Some(s3) = edge.s3.clone() else {
        outcome.result = Err(S3Error::not_implemented("The S3 API on this server"));
        return outcome;
    };
    outcome.result = dispatch(edge, &s3, parts, body, &mut outcome.operation).await;
    outcome
}

async fn dispatch(
    edge: &Arc<Edge>,
    s3: &S3,
    parts: axum::http::request::Parts,
    body: Body,
    operation: &mut Operation,
) -> Result<Response, S3Error> {
    let (payload, caller) = authenticate(edge, &parts)?;
    let target = target(edge, &parts)?;
    let parameters = query_parameters(parts.uri.query())?;
    let method = parts.method.clone();
    match (&method, target.bucket.as_deref(), target.key.as_deref()) {
        (&Method::GET, None, None) => {
            *operation = "ListBuckets";
            allowed(edge, &caller, operation, &target)?;
            only_parameters(&parameters, &[])?;
            let owner = &edge.ecs.scope().account_id;
            Ok(xml_response(xml::list_buckets(&s3.list_buckets()?, owner)))
        }
        (_, None, _) => Err(S3Error::MethodNotAllowed),
        (&Method::PUT, Some(bucket), None) => {
            *operation = "CreateBucket";
            allowed(edge, &caller, operation, &target)?;
            only_parameters(&parameters, &[])?;
            refuse_headers(
                &parts.headers,
                &[
                    "x-amz-acl",
                    "x-amz-grant-",
                    "x-amz-bucket-object-lock-enabled",
                    "x-amz-object-ownership",
                ],
            )?;
            let body =
                read_small_body(&parts.headers, body, payload, BUCKET_REQUEST_BODY_MAX_BYTES)
                    .await?;
            let constraint = xml::location_constraint(&body)?;
            s3.create_bucket(bucket, constraint.as_deref(), edge.clock.now_ms())
                .await?;
            let mut response = StatusCode::OK.into_response();
            set(&mut response, "Location", &format!("/{bucket}"));
            Ok(response)
        }
        (&Method::POST, Some(bucket), None) if parameter(&parameters, "delete").is_some() => {
            *operation = "DeleteObjects";
            allowed(edge, &caller, operation, &target)?;
            only_parameters(&parameters, &["delete"])?;
            delete_objects(s3, &parts.headers, body, payload, bucket).await
        }
        (&Method::DELETE, Some(bucket), None) => {
            *operation = "DeleteBucket";
            allowed(edge, &caller, operation, &target)?;
            only_parameters(&parameters, &[])?;
            s3.delete_bucket(bucket).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (&Method::HEAD, Some(bucket), None) => {
            *operation = "HeadBucket";
            allowed(edge, &caller, operation, &target)?;
            only_parameters(&parameters, &[])?;
            let record = s3.head_bucket(bucket)?;
            let mut response = StatusCode::OK.into_response();
            set(&mut response, "x-amz-bucket-region", &record.region);
            Ok(response)
        }
        (&Method::GET, Some(bucket), None) if parameter(&parameters, "location").is_some() => {
            *operation = "GetBucketLocation";
            allowed(edge, &caller, operation, &target)?;
            only_parameters(&parameters, &["location"])?;
            let record = s3.head_bucket(bucket)?;
            Ok(xml_response(xml::bucket_location(&record.region)))
        }
        (&Method::GET, Some(bucket), None) if parameter(&parameters, "list-type") == Some("2") => {
            *operation = "ListObjectsV2";
            allowed(edge, &caller, operation, &target)?;
            list_objects_v2(edge, s3, bucket, &parameters)
        }
        (&Method::GET, Some(_), None) if parameter(&parameters, "uploads").is_some() => {
            *operation = "ListMultipartUploads";
            allowed(edge, &caller, operation, &target)?;
            Err(S3Error::not_implemented("ListMultipartUploads"))
        }
        (&Method::GET, Some(_), None) => {
            *operation = "ListObjects";
            allowed(edge, &caller, operation, &target)?;
            Err(S3Error::not_implemented(
                "ListObjects (version 1; use ListObjectsV2, list-type=2)",
            ))
        }
        (&Method::PUT, Some(bucket), Some(key)) => {
            if parameter(&parameters, "partNumber").is_some()
                || parameter(&parameters, "uploadId").is_some()
            {
                *operation = "UploadPart";
                allowed(edge, &caller, operation, &target)?;
                if parts.headers.contains_key("x-amz-copy-source") {
                    *operation = "UploadPartCopy";
                    allowed(edge, &caller, operation, &target)?;
                    return Err(S3Error::not_implemented(
                        "UploadPartCopy (x-amz-copy-source)",
                    ));
                }
                return upload_part(
                    edge,
                    s3,
                    &parts.headers,
                    body,
                    payload,
                    bucket,
                    key,
                    &parameters,
                )
                .await;
            }
            *operation = "PutObject";
            allowed(edge, &caller, operation, &target)?;
            if parts.headers.contains_key("x-amz-copy-source") {
                *operation = "CopyObject";
                allowed(edge, &caller, operation, &target)?;
                return Err(S3Error::not_implemented("CopyObject (x-amz-copy-source)"));
            }
            only_parameters(&parameters, &[])?;
            put_object(edge, s3, &parts, body, payload, bucket, key).await
        }
        (&Method::POST, Some(bucket), Some(key)) if parameter(&parameters, "uploads").is_some() => {
            *operation = "CreateMultipartUpload";
            allowed(edge, &caller, operation, &target)?;
            create_multipart_upload(edge, s3, &parts.headers, bucket, key, &parameters).await
        }
        (&Method::POST, Some(bucket), Some(key))
            if parameter(&parameters, "uploadId").is_some() =>
        {
            *operation = "CompleteMultipartUpload";
            allowed(edge, &caller, operation, &target)?;
            complete_multipart_upload(
                edge,
                s3,
                &parts.headers,
                body,
                payload,
                bucket,
                key,
                &parameters,
            )
            .await
        }
        (&Method::GET, Some(_), Some(_)) if parameter(&parameters, "uploadId").is_some() => {
            *operation = "ListParts";
            allowed(edge, &caller, operation, &target)?;
            Err(S3Error::not_implemented("ListParts"))
        }
        (&Method::GET | &Method::HEAD, Some(bucket), Some(key)) => {
            let with_body = method == Method::GET;
            *operation = if with_body { "GetObject" } else { "HeadObject" };
            allowed(edge, &caller, operation, &target)?;
            only_parameters(&parameters, &["partNumber"])?;
            if parameter(&parameters, "partNumber").is_some_and(|part| part != "1") {
                return Err(S3Error::InvalidPart);
            }
            get_object(s3, &parts.headers, bucket, key, with_body).await
        }
        (&Method::DELETE, Some(bucket), Some(key)) => {
            *operation = "DeleteObject";
            allowed(edge, &caller, operation, &target)?;
            if let Some(upload_id) = parameter(&parameters, "uploadId") {
                *operation = "AbortMultipartUpload";
                allowed(edge, &caller, operation, &target)?;
                only_parameters(&parameters, &["uploadId"])?;
                s3.abort_multipart_upload(bucket, key, upload_id).await?;
                return Ok(StatusCode::NO_CONTENT.into_response());
            }
            only_parameters(&parameters, &[])?;
            s3.delete_object(bucket, key).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(S3Error::MethodNotAllowed),
    }
}

fn set(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Refuses headers (or header name prefixes, ending in `-`) that ask for
/// something this server does not do, naming the first one sent.
fn refuse_headers(headers: &HeaderMap, refused: &[&str]) -> Result<(), S3Error> {
    for name in headers.keys() {
        let name = name.as_str();
        let hit = refused.iter().any(|refused| {
            if refused.ends_with('-') {
                name.starts_with(refused)
            } else {
                name == *refused
            }
        });
        if hit {
            return Err(S3Error::not_implemented(format!("The header {name}")));
        }
    }
    Ok(())
}

fn list_objects_v2(
    edge: &Edge,
    s3: &S3,
    bucket: &str,
    parameters: &[(String, String)],
) -> Result<Response, S3Error> {
    only_parameters(
        parameters,
        &[
            "list-type",
            "prefix",
            "delimiter",
            "max-keys",
            "continuation-token",
            "start-after",
            "encoding-type",
            "fetch-owner",
        ],
    )?;
    let max_keys = match parameter(parameters, "max-keys") {
        None => LIST_KEYS_MAX,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|value| *value >= 0)
            .ok_or_else(|| {
                S3Error::invalid_argument(
                    "Provided max-keys not an integer or within integer range",
                )
            })?
            .min(LIST_KEYS_MAX as i64) as usize,
    };
    let url_encoded = match parameter(parameters, "encoding-type") {
        None => false,
        Some("url") => true,
        Some(_) => {
            return Err(S3Error::invalid_argument(
                "Invalid Encoding Method specified in Request",
            ))
        }
    };
    let request = ListObjectsV2 {
        bucket: bucket.to_owned(),
        prefix: parameter(parameters, "prefix")
            .unwrap_or_default()
            .to_owned(),
        delimiter: parameter(parameters, "delimiter").map(str::to_owned),
        max_keys,
        continuation_token: parameter(parameters, "continuation-token").map(str::to_owned),
        start_after: parameter(parameters, "start-after").map(str::to_owned),
    };
    let page = s3.list_objects_v2(&request)?;
    let owner = edge.ecs.scope().account_id.clone();
    let echo = xml::ListEcho {
        bucket,
        prefix: &request.prefix,
        delimiter: request.delimiter.as_deref(),
        max_keys,
        continuation_token: request.continuation_token.as_deref(),
        start_after: request.start_after.as_deref(),
        url_encoded,
        fetch_owner: (parameter(parameters, "fetch-owner") == Some("true"))
            .then_some(owner.as_str()),
    };
    Ok(xml_response(xml::list_objects_v2(&echo, &page)))
}

/// A bucket request's small body, held to the payload mode it was signed with.
async fn read_small_body(
    headers: &HeaderMap,
    body: Body,
    payload: S3Payload,
    limit_bytes: usize,
) -> Result<bytes::Bytes, S3Error> {
    let declared = header_text(headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit_bytes) {
        return Err(S3Error::invalid_argument(
            "The request body is too large for this operation.",
        ));
    }
    let bytes = http_body_util::Limited::new(body, limit_bytes)
        .collect()
        .await
        .map_err(|_| S3Error::IncompleteBody)?
        .to_bytes();
    match payload {
        S3Payload::Sha256(expected) => {
            if flotilla_sigv4::sha256_hex(&bytes).as_str() != expected {
                return Err(S3Error::ContentSha256Mismatch);
            }
        }
        S3Payload::Unsigned => {}
        _ => {
            return Err(S3Error::not_implemented(
                "An aws-chunked body on a bucket operation",
            ))
        }
    }
    Ok(bytes)
}

fn object_headers(headers: &HeaderMap) -> Result<ObjectHeaders, S3Error> {
    let text = |name: &str| header_text(headers, name).map(str::to_owned);
    let mut user_metadata = std::collections::BTreeMap::new();
    for (name, value) in headers {
        if let Some(meta) = name.as_str().strip_prefix("x-amz-meta-") {
            let value = value.to_str().map_err(|_| {
                S3Error::invalid_argument(format!("The value of header {name} is not ASCII"))
            })?;
            user_metadata.insert(meta.to_owned(), value.to_owned());
        }
    }
    // aws-chunked is how this request travelled, not how the object is encoded.
    let content_encoding = text("content-encoding").and_then(|encoding| {
        let kept: Vec<&str> = encoding
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty() && *part != "aws-chunked")
            .collect();
        (!kept.is_empty()).then(|| kept.join(","))
    });
    Ok(ObjectHeaders {
        content_type: text("content-type"),
        cache_control: text("cache-control"),
        content_disposition: text("content-disposition"),
        content_encoding,
        content_language: text("content-language"),
        expires: text("expires"),
        user_metadata,
    })
}

/// The additional checksum a PutObject carries: its algorithm and, when
/// sent as a header, its value (a trailer's arrives after the body).
fn requested_checksum(
    headers: &HeaderMap,
) -> Result<Option<(ChecksumAlgorithm, Option<String>)>, S3Error> {
    for (name, value) in headers {
        let Some(algorithm_name) = name.as_str().strip_prefix("x-amz-checksum-") else {
            continue;
        };
        if algorithm_name == "type" || algorithm_name == "mode" {
            continue;
        }
        let algorithm = ChecksumAlgorithm::from_name(algorithm_name)
            .ok_or_else(|| S3Error::not_implemented(format!("The checksum header {name}")))?;
        let value = value.to_str().map_err(|_| S3Error::InvalidDigest)?;
        return Ok(Some((algorithm, Some(value.to_owned()))));
    }
    if let Some(trailer) = header_text(headers, "x-amz-trailer") {
        let algorithm = trailer
            .trim()
            .strip_prefix("x-amz-checksum-")
            .and_then(ChecksumAlgorithm::from_name)
            .ok_or_else(|| S3Error::not_implemented(format!("The trailing header {trailer}")))?;
        return Ok(Some((algorithm, None)));
    }
    Ok(None)
}

/// Headers a write (PutObject, CreateMultipartUpload) refuses because they
/// ask for what this store does not keep.
const REFUSED_WRITE_HEADERS: &[&str] = &[
    "x-amz-acl",
    "x-amz-grant-",
    "x-amz-server-side-encryption",
    "x-amz-tagging",
    "x-amz-website-redirect-location",
    "x-amz-object-lock-",
    "if-match",
    "if-none-match",
];

fn check_write_headers(headers: &HeaderMap) -> Result<(), S3Error> {
    refuse_headers(headers, REFUSED_WRITE_HEADERS)?;
    if let Some(class) = header_text(headers, "x-amz-storage-class") {
        if class != "STANDARD" {
            return Err(S3Error::not_implemented(format!(
                "The storage class {class}"
            )));
        }
    }
    Ok(())
}

/// What a body-carrying request (PutObject, UploadPart) says about its body.
struct BodyClaims {
    payload: S3Payload,
    declared_bytes: u64,
    content_md5_hex: Option<String>,
    checksum: Option<(ChecksumAlgorithm, Option<String>)>,
    signed_sha256: Option<String>,
}

fn body_claims(headers: &HeaderMap, payload: S3Payload) -> Result<BodyClaims, S3Error> {
    let chunked = matches!(
        payload,
        S3Payload::SignedChunks(_) | S3Payload::UnsignedChunksWithTrailer
    );
    if matches!(payload, S3Payload::SignedChunksWithTrailer(_)) {
        return Err(S3Error::not_implemented(
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER bodies",
        ));
    }
    let length_header = if chunked {
        "x-amz-decoded-content-length"
    } else {
        "content-length"
    };
    let declared_bytes = match header_text(headers, length_header) {
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| S3Error::invalid_argument(format!("{length_header} is not a number")))?,
        None => return Err(S3Error::MissingContentLength),
    };
    if declared_bytes > OBJECT_SIZE_MAX_BYTES {
        return Err(S3Error::EntityTooLarge {
            size_bytes: declared_bytes,
            limit_bytes: OBJECT_SIZE_MAX_BYTES,
        });
    }
    let content_md5_hex = header_text(headers, "content-md5")
        .map(|value| {
            base64::engine::general_purpose::STANDARD
                .decode(value)
                .ok()
                .filter(|digest| digest.len() == 16)
                .map(hex::encode)
                .ok_or(S3Error::InvalidDigest)
        })
        .transpose()?;
    Ok(BodyClaims {
        payload,
        declared_bytes,
        content_md5_hex,
        checksum: requested_checksum(headers)?,
        signed_sha256: payload_hash(headers),
    })
}

/// Streams the body into `writer` (decoding `aws-chunked` and checking each
/// chunk's signature), then holds the written blob to every claim; a blob
/// that fails one is removed.
async fn receive(
    s3: &S3,
    body: Body,
    claims: BodyClaims,
    mut writer: flotilla_s3::BlobWriter,
) -> Result<flotilla_s3::WrittenBlob, S3Error> {
    let mut decoder = match claims.payload {
        S3Payload::SignedChunks(signatures) => Some(chunked::ChunkedDecoder::new(Some(signatures))),
        S3Payload::UnsignedChunksWithTrailer => Some(chunked::ChunkedDecoder::new(None)),
        _ => None,
    };
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| S3Error::IncompleteBody)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match &mut decoder {
            Some(decoder) => {
                decoder.push(&data);
                while let Some(piece) = decoder.next_data()? {
                    writer.write(&piece).await?;
                }
            }
            None => writer.write(&data).await?,
        }
        if writer.size_bytes() > claims.declared_bytes {
            return Err(S3Error::invalid_argument(
                "The body is longer than the length the request declared.",
            ));
        }
    }
    let trailers = match decoder {
        Some(decoder) if !decoder.is_done() => return Err(S3Error::IncompleteBody),
        Some(decoder) => decoder.trailers,
        None => Vec::new(),
    };
    if writer.size_bytes() != claims.declared_bytes {
        return Err(S3Error::IncompleteBody);
    }
    let blob = writer.finish().await?;
    let checks = check_digests(
        &blob,
        &claims.signed_sha256,
        claims.content_md5_hex.as_deref(),
        claims.checksum.as_ref(),
        &trailers,
    );
    if let Err(error) = checks {
        s3.remove_blob(&blob.id).await;
        return Err(error);
    }
    Ok(blob)
}

async fn put_object(
    edge: &Edge,
    s3: &S3,
    parts: &axum::http::request::Parts,
    body: Body,
    payload: S3Payload,
    bucket: &str,
    key: &str,
) -> Result<Response, S3Error> {
    let headers = &parts.headers;
    check_write_headers(headers)?;
    let claims = body_claims(headers, payload)?;
    let object_headers = object_headers(headers)?;
    let blob_id = edge.ids.uuid();
    let algorithm = claims.checksum.as_ref().map(|(algorithm, _)| *algorithm);
    let writer = s3.create_blob(bucket, key, &blob_id, algorithm).await?;
    let blob = receive(s3, body, claims, writer).await?;
    let record = s3
        .complete_put(bucket, key, blob, object_headers, edge.clock.now_ms())
        .await?;
    let mut response = StatusCode::OK.into_response();
    set(&mut response, "ETag", &record.etag());
    if let Some((algorithm, value)) = &record.checksum {
        set_dynamic(&mut response, algorithm.header_name(), value);
    }
    Ok(response)
}

/// UploadPart: a part's body, streamed and checked as PutObject's is.
#[allow(clippy::too_many_arguments)]
async fn upload_part(
    edge: &Edge,
    s3: &S3,
    headers: &HeaderMap,
    body: Body,
    payload: S3Payload,
    bucket: &str,
    key: &str,
    parameters: &[(String, String)],
) -> Result<Response, S3Error> {
    only_parameters(parameters, &["partNumber", "uploadId"])?;
    let upload_id = parameter(parameters, "uploadId")
        .ok_or_else(|| S3Error::invalid_argument("UploadPart needs an uploadId"))?;
    let part_number = parameter(parameters, "partNumber")
        .and_then(|text| text.parse::<u32>().ok())
        .ok_or_else(|| {
            S3Error::invalid_argument(format!(
                "Part number must be an integer between 1 and {}, inclusive",
                flotilla_s3::PARTS_MAX
            ))
        })?;
    let claims = body_claims(headers, payload)?;
    let blob_id = edge.ids.uuid();
    let algorithm = claims.checksum.as_ref().map(|(algorithm, _)| *algorithm);
    let writer = s3
        .create_part_blob(bucket, key, upload_id, part_number, &blob_id, algorithm)
        .await?;
    let blob = receive(s3, body, claims, writer).await?;
    let part = s3
        .complete_part(
            bucket,
            key,
            upload_id,
            part_number,
            blob,
            edge.clock.now_ms(),
        )
        .await?;
    let mut response = StatusCode::OK.into_response();
    set(&mut response, "ETag", &format!("\"{}\"", part.md5_hex));
    if let Some((algorithm, value)) = &part.checksum {
        set_dynamic(&mut response, algorithm.header_name(), value);
    }
    Ok(response)
}

/// Keys one DeleteObjects request may name, as in S3.
pub const DELETE_OBJECTS_KEYS_MAX: usize = 1_000;

/// DeleteObjects: each key deleted as DeleteObject deletes it, each outcome
/// reported. S3 requires the body's integrity header (`Content-MD5` or an
/// `x-amz-checksum-*`), and it is checked.
async fn delete_objects(
    s3: &S3,
    headers: &HeaderMap,
    body: Body,
    payload: S3Payload,
    bucket: &str,
) -> Result<Response, S3Error> {
    let body = read_small_body(headers, body, payload, COMPLETE_REQUEST_BODY_MAX_BYTES).await?;
    let checksum = requested_checksum(headers)?;
    let content_md5 = header_text(headers, "content-md5");
    match (content_md5, &checksum) {
        (Some(value), _) => {
            let computed =
                base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
            if value != computed {
                return Err(S3Error::BadDigest);
            }
        }
        (None, Some((algorithm, Some(claimed)))) => {
            let mut checksummer = flotilla_s3::checksum::Checksummer::new(*algorithm);
            checksummer.update(&body);
            if checksummer.finish_base64() != *claimed {
                return Err(S3Error::ChecksumMismatch {
                    algorithm: algorithm.label(),
                });
            }
        }
        _ => {
            return Err(S3Error::InvalidRequest {
                message:
                    "Missing required header for this request: Content-MD5 OR x-amz-checksum-*"
                        .to_owned(),
            })
        }
    }
    let request = xml::delete_request(&body)?;
    if request.keys.len() > DELETE_OBJECTS_KEYS_MAX {
        return Err(S3Error::MalformedXml);
    }
    s3.head_bucket(bucket)?;
    let mut outcomes = Vec::with_capacity(request.keys.len());
    for key in request.keys {
        let outcome = match flotilla_s3::names::check_key(&key) {
            Ok(()) => s3.delete_object(bucket, &key).await,
            Err(error) => Err(error),
        };
        outcomes.push((key, outcome));
    }
    Ok(xml_response(xml::delete_result(&outcomes, request.quiet)))
}

/// Largest CompleteMultipartUpload body: 10,000 parts with their checksums.
pub const COMPLETE_REQUEST_BODY_MAX_BYTES: usize = 4 * 1024 * 1024;

async fn create_multipart_upload(
    edge: &Edge,
    s3: &S3,
    headers: &HeaderMap,
    bucket: &str,
    key: &str,
    parameters: &[(String, String)],
) -> Result<Response, S3Error> {
    only_parameters(parameters, &["uploads"])?;
    check_write_headers(headers)?;
    let upload_id = edge.ids.uuid();
    s3.create_multipart_upload(
        bucket,
        key,
        &upload_id,
        object_headers(headers)?,
        edge.clock.now_ms(),
    )
    .await?;
    Ok(xml_response(xml::initiate_multipart_upload(
        bucket, key, &upload_id,
    )))
}

#[allow(clippy::too_many_arguments)]
async fn complete_multipart_upload(
    edge: &Edge,
    s3: &S3,
    headers: &HeaderMap,
    body: Body,
    payload: S3Payload,
    bucket: &str,
    key: &str,
    parameters: &[(String, String)],
) -> Result<Response, S3Error> {
    only_parameters(parameters, &["uploadId"])?;
    let upload_id = parameter(parameters, "uploadId").unwrap_or_default();
    let body = read_small_body(headers, body, payload, COMPLETE_REQUEST_BODY_MAX_BYTES).await?;
    let parts = xml::completed_parts(&body)?;
    let record = s3
        .complete_multipart_upload(
            bucket,
            key,
            upload_id,
            &parts,
            &edge.ids.uuid(),
            edge.clock.now_ms(),
        )
        .await?;
    Ok(xml_response(xml::complete_multipart_upload(
        bucket,
        key,
        &record.etag(),
    )))
}

/// The SHA-256 a plain body was signed with, if any.
fn payload_hash(headers: &HeaderMap) -> Option<String> {
    header_text(headers, "x-amz-content-sha256")
        .filter(|value| value.len() == 64 && value.bytes().all(|byte| byte.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
}

fn check_digests(
    blob: &flotilla_s3::WrittenBlob,
    signed_sha256: &Option<String>,
    content_md5_hex: Option<&str>,
    checksum: Option<&(ChecksumAlgorithm, Option<String>)>,
    trailers: &[(String, String)],
) -> Result<(), S3Error> {
    if let Some(expected) = signed_sha256 {
        if *expected != blob.sha256_hex {
            return Err(S3Error::ContentSha256Mismatch);
        }
    }
    if let Some(expected) = content_md5_hex {
        if expected != blob.md5_hex {
            return Err(S3Error::BadDigest);
        }
    }
    if let Some((algorithm, value)) = checksum {
        let claimed = value.clone().or_else(|| {
            trailers
                .iter()
                .find(|(name, _)| name == algorithm.header_name())
                .map(|(_, value)| value.clone())
        });
        let computed = blob.checksum.as_ref().map(|(_, value)| value.as_str());
        match claimed {
            Some(claimed) if Some(claimed.as_str()) == computed => {}
            Some(_) => {
                return Err(S3Error::ChecksumMismatch {
                    algorithm: algorithm.label(),
                })
            }
            None => {
                return Err(S3Error::InvalidRequest {
                    message: format!(
                        "The trailing header {} was not sent.",
                        algorithm.header_name()
                    ),
                })
            }
        }
    }
    Ok(())
}

fn set_dynamic(response: &mut Response, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        header::HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        response.headers_mut().insert(name, value);
    }
}

fn http_date(ms: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` within `size`: `Ok(None)` for a
/// header S3 ignores (not a single byte range), an error when unsatisfiable.
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, S3Error> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = S3Error::InvalidRange { size_bytes: size };
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let Ok(suffix) = suffix.parse::<u64>() else {
                return Ok(None);
            };
            if suffix == 0 || size == 0 {
                return Err(unsatisfiable);
            }
            (size.saturating_sub(suffix), size - 1)
        }
        (start, end) => {
            let Ok(start) = start.parse::<u64>() else {
                return Ok(None);
            };
            let end = if end.is_empty() {
                size.saturating_sub(1)
            } else {
                let Ok(end) = end.parse::<u64>() else {
                    return Ok(None);
                };
                if end < start {
                    return Ok(None);
                }
                end.min(size.saturating_sub(1))
            };
            if start >= size {
                return Err(unsatisfiable);
            }
            (start, end)
        }
    };
    Ok(Some((start, end)))
}

/// If-Match, If-None-Match, If-Modified-Since and If-Unmodified-Since, in
/// the order and with the outcomes RFC 9110 and S3 give them.
fn check_conditions(headers: &HeaderMap, record: &ObjectRecord) -> Result<(), S3Error> {
    let etag = record.etag();
    let matches = |list: &str| {
        list.split(',').map(str::trim).any(|candidate| {
            candidate == "*" || candidate == etag || candidate.trim_matches('"') == record.md5_hex
        })
    };
    let modified_s = record.last_modified_ms / 1000;
    let date = |name: &str| {
        header_text(headers, name)
            .and_then(|text| httpdate::parse_http_date(text).ok())
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|since| since.as_secs())
    };
    let if_match = header_text(headers, "if-match");
    if let Some(list) = if_match {
        if !matches(list) {
            return Err(S3Error::PreconditionFailed {
                condition: "If-Match",
            });
        }
    } else if let Some(limit) = date("if-unmodified-since") {
        if modified_s > limit {
            return Err(S3Error::PreconditionFailed {
                condition: "If-Unmodified-Since",
            });
        }
    }
    if let Some(list) = header_text(headers, "if-none-match") {
        if matches(list) {
            return Err(S3Error::NotModified);
        }
    } else if let Some(since) = date("if-modified-since") {
        if modified_s <= since {
            return Err(S3Error::NotModified);
        }
    }
    Ok(())
}

async fn get_object(
    s3: &S3,
    headers: &HeaderMap,
    bucket: &str,
    key: &str,
    with_body: bool,
) -> Result<Response, S3Error> {
    let (record, mut file) = s3.open_object(bucket, key).await?;
    check_conditions(headers, &record)?;
    let size = record.size_bytes;
    let range = match header_text(headers, "range") {
        Some(value) => parse_range(value, size)?,
        None => None,
    };
    let (start, length) = match range {
        Some((start, end)) => (start, end - start + 1),
        None => (0, size),
    };
    let mut response = if !with_body {
        ().into_response()
    } else if range.is_some() {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|error| S3Error::internal(format!("reading {key}: {error}")))?;
        let stream =
            tokio_util::io::ReaderStream::with_capacity(file.take(length), OBJECT_READ_CHUNK_BYTES);
        Body::from_stream(stream).into_response()
    } else {
        // A whole object is checked against its stored SHA-256 as it goes;
        // a mismatch ends the response with an error, never a clean end.
        let checked =
            flotilla_s3::HashCheckedReader::new(file, &record.sha256_hex, record.size_bytes);
        let stream = tokio_util::io::ReaderStream::with_capacity(checked, OBJECT_READ_CHUNK_BYTES);
        Body::from_stream(stream).into_response()
    };
    *response.status_mut() = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    set(&mut response, "Content-Length", &length.to_string());
    set(&mut response, "ETag", &record.etag());
    set(
        &mut response,
        "Last-Modified",
        &http_date(record.last_modified_ms),
    );
    set(&mut response, "Accept-Ranges", "bytes");
    let stored = &record.headers;
    set(
        &mut response,
        "Content-Type",
        stored
            .content_type
            .as_deref()
            .unwrap_or("binary/octet-stream"),
    );
    for (name, value) in [
        ("Cache-Control", &stored.cache_control),
        ("Content-Disposition", &stored.content_disposition),
        ("Content-Encoding", &stored.content_encoding),
        ("Content-Language", &stored.content_language),
        ("Expires", &stored.expires),
    ] {
        if let Some(value) = value {
            set(&mut response, name, value);
        }
    }
    for (name, value) in &stored.user_metadata {
        set_dynamic(&mut response, &format!("x-amz-meta-{name}"), value);
    }
    if let Some((start, end)) = range {
        set(
            &mut response,
            "Content-Range",
            &format!("bytes {start}-{end}/{size}"),
        );
    }
    let checksum_mode = header_text(headers, "x-amz-checksum-mode") == Some("ENABLED");
    if let (true, None, Some((algorithm, value))) = (checksum_mode, range, &record.checksum) {
        set_dynamic(&mut response, algorithm.header_name(), value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosts_name_their_bucket() {
        assert_eq!(
            virtual_host_bucket("config.localhost:4566", None),
            Some("config")
        );
        assert_eq!(virtual_host_bucket("localhost:4566", None), None);
        assert_eq!(virtual_host_bucket("127.0.0.1:4566", None), None);
        assert_eq!(
            virtual_host_bucket(
                "my.bucket.flotilla.internal:8080",
                Some("flotilla.internal:8080")
            ),
            Some("my.bucket")
        );
        assert_eq!(
            virtual_host_bucket("flotilla.internal", Some("flotilla.internal:8080")),
            None
        );
    }

    #[test]
    fn ranges_are_read_as_s3_reads_them() {
        assert_eq!(parse_range("bytes=0-4", 10).expect("ok"), Some((0, 4)));
        assert_eq!(parse_range("bytes=5-", 10).expect("ok"), Some((5, 9)));
        assert_eq!(parse_range("bytes=-3", 10).expect("ok"), Some((7, 9)));
        assert_eq!(parse_range("bytes=8-100", 10).expect("ok"), Some((8, 9)));
        assert_eq!(parse_range("bytes=0-1,3-4", 10).expect("ok"), None);
        assert_eq!(parse_range("lines=1-2", 10).expect("ok"), None);
        assert_eq!(
            parse_range("bytes=10-", 10)
                .expect_err("past the end")
                .code(),
            "InvalidRange"
        );
    }

    #[test]
    fn only_requests_signed_for_s3_are_taken_from_other_routes() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=test/20261207/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=x"),
        );
        assert!(signed_for_s3(&headers, None));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=test/20261207/us-east-1/ecs/aws4_request, SignedHeaders=host, Signature=x"),
        );
        assert!(!signed_for_s3(&headers, None));
        assert!(!signed_for_s3(&HeaderMap::new(), Some("token=abc")));
        assert!(signed_for_s3(
            &HeaderMap::new(),
            Some("X-Amz-Credential=test%2F20261207%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=x")
        ));
    }
}
