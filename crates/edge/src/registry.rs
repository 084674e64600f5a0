//! The OCI distribution protocol (`/v2/...`), the Docker Registry HTTP API
//! V2 that `docker push` and `docker pull`, containerd, skopeo and crane
//! speak, served by the same listener as the AWS JSON API.
//!
//! ```text
//! /v2/                                   ping (401 + WWW-Authenticate without a token)
//! /v2/_catalog                           repositories
//! /v2/{name}/tags/list                   tags
//! /v2/{name}/manifests/{tag|digest}      GET HEAD PUT DELETE
//! /v2/{name}/blobs/{digest}              GET HEAD (Range) DELETE
//! /v2/{name}/blobs/uploads/[{id}]        POST (mount, monolithic) PATCH PUT GET DELETE
//! /v2/{name}/referrers/{digest}          OCI 1.1 referrers
//! ```
//!
//! Authentication is ECR's: HTTP Basic with user `AWS` and a token from
//! GetAuthorizationToken as the password (or, for the URLs
//! GetDownloadUrlForLayer hands out, the token in the query).
//!
//! *Architecture invariant:* request bodies are streamed to the blob store
//! in bounded batches, never held whole; blob responses are streamed from
//! disk.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use flotilla_registry::manifest::{MANIFEST_MAX_BYTES, OCI_INDEX};
use flotilla_registry::{Digest, Reference, Registry, RegistryError};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::Edge;

/// Body bytes gathered before one write to an upload: large enough that the
/// blocking-pool hop per write is cheap, small enough to bound memory per upload.
pub const UPLOAD_WRITE_BATCH_BYTES: usize = 1024 * 1024;
/// Size of the reads that stream a blob out.
pub const BLOB_READ_CHUNK_BYTES: usize = 1024 * 1024;
/// Tags or repositories listed when the client names no page size.
const LIST_PAGE_DEFAULT: usize = 1_000;
const REALM: &str = "Flotilla registry";

/// An error in the distribution specification's shape.
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Failure {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            message: message.into(),
        }
    }

    fn unauthorized(message: &str) -> Response {
        let mut response = Failure::new(401, "UNAUTHORIZED", message).into_response();
        let challenge = format!("Basic realm=\"{REALM}\"");
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

impl From<RegistryError> for Failure {
    fn from(error: RegistryError) -> Self {
        let (code, status) = error.oci_code();
        Failure::new(status, code, error.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"errors": [{"code": self.code, "message": self.message, "detail": {}}]});
        let mut response = (self.status, body.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

type Answer = Result<Response, Failure>;

/// What a `/v2/` path names.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Ping,
    Catalog,
    Tags { name: String },
    Manifest { name: String, reference: String },
    Blob { name: String, digest: String },
    Uploads { name: String },
    Upload { name: String, id: String },
    Referrers { name: String, digest: String },
}

/// Splits the path after `/v2/`. Repository names may themselves contain
/// `manifests` or `blobs`, but never in the last segment, which is always
/// a reference, a digest or an upload id.
fn route(rest: &str) -> Option<Route> {
    if rest.is_empty() {
        return Some(Route::Ping);
    }
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags {
            name: name.to_owned(),
        });
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::Uploads {
            name: name.to_owned(),
        });
    }
    let tail = |marker: &str| {
        rest.rsplit_once(marker)
            .filter(|(name, last)| !name.is_empty() && !last.is_empty() && !last.contains('/'))
            .map(|(name, last)| (name.to_owned(), last.to_owned()))
    };
    if let Some((name, reference)) = tail("/manifests/") {
        return Some(Route::Manifest { name, reference });
    }
    if let Some((name, id)) = tail("/blobs/uploads/") {
        return Some(Route::Upload { name, id });
    }
    if let Some((name, digest)) = tail("/blobs/") {
        return Some(Route::Blob { name, digest });
    }
    if let Some((name, digest)) = tail("/referrers/") {
        return Some(Route::Referrers { name, digest });
    }
    None
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// The token a request carries: Basic auth (user `AWS`), or `token=` in
/// the query for download URLs.
fn presented_token(headers: &HeaderMap, query: &str) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let encoded = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("basic "))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        return (user == "AWS").then(|| password.to_owned());
    }
    query_param(query, "token")
}

pub async fn v2(State(edge): State<Arc<Edge>>, request: Request) -> Response {
    let mut response = match &edge.registry {
        Some(registry) => serve(&edge, registry, request)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        None => Failure::new(404, "UNSUPPORTED", "this server runs no registry").into_response(),
    };
    response.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

async fn serve(edge: &Edge, registry: &Arc<Registry>, request: Request) -> Answer {
    let now_ms = edge.clock.now_ms();
    let (parts, body) = request.into_parts();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let Some(token) = presented_token(&parts.headers, &query) else {
        return Ok(Failure::unauthorized("authentication required: docker login with the password from aws ecr get-login-password"));
    };
    if let Err(error) = registry.verify_token(&token, now_ms) {
        return Ok(Failure::unauthorized(&error.to_string()));
    }
    let path = parts.uri.path();
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let rest = decoded
        .strip_prefix("/v2/")
        .or_else(|| decoded.strip_prefix("/v2"))
        .unwrap_or_default();
    let Some(route) = route(rest) else {
        return Err(Failure::new(
            404,
            "NAME_INVALID",
            format!("no registry route for {path}"),
        ));
    };
    let method = parts.method.clone();
    let headers = parts.headers;
    match (route, method) {
        (Route::Ping, Method::GET | Method::HEAD) => Ok(json_response(StatusCode::OK, "{}")),
        (Route::Catalog, Method::GET) => catalog(registry, &query),
        (Route::Tags { name }, Method::GET) => tags(registry, &name, &query),
        (Route::Manifest { name, reference }, method @ (Method::GET | Method::HEAD)) => {
            get_manifest(registry, &name, &reference, method == Method::GET, now_ms)
        }
        (Route::Manifest { name, reference }, Method::PUT) => {
            put_manifest(registry, &name, &reference, &headers, body, now_ms).await
        }
        (Route::Manifest { name, reference }, Method::DELETE) => {
            registry
                .delete_manifest(&name, &Reference::parse(&reference)?)
                .await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (Route::Blob { name, digest }, method @ (Method::GET | Method::HEAD)) => {
            get_blob(registry, &name, &digest, &headers, method == Method::GET).await
        }
        (Route::Blob { .. }, Method::DELETE) => Err(Failure::new(
            405,
            "UNSUPPORTED",
            "blobs are removed by garbage collection once no image needs them",
        )),
        (Route::Uploads { name }, Method::POST) => {
            start_upload(edge, registry, &name, &query, &headers, body, now_ms).await
        }
        (Route::Upload { name, id }, Method::PATCH) => {
            patch_upload(registry, &name, &id, &headers, body).await
        }
        (Route::Upload { name, id }, Method::PUT) => {
            put_upload(registry, &name, &id, &query, &headers, body, now_ms).await
        }
        (Route::Upload { name, id }, Method::GET) => {
            let upload = registry.upload(&name, &id).await?;
            let size = upload.lock().await.size();
            Ok(upload_progress(StatusCode::NO_CONTENT, &name, &id, size))
        }
        (Route::Upload { name, id }, Method::DELETE) => {
            let upload = registry.upload(&name, &id).await?;
            registry.cancel_upload(&mut *upload.lock().await).await;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Route::Referrers { name, digest }, Method::GET) => {
            referrers(registry, &name, &digest, &query)
        }
        (_, method) => Err(Failure::new(
            405,
            "UNSUPPORTED",
            format!("{method} is not allowed here"),
        )),
    }
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = (status, body.into()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn set(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

fn parse_digest(text: &str) -> Result<Digest, Failure> {
    Digest::parse(text).map_err(|error| Failure::new(400, "DIGEST_INVALID", error.to_string()))
}

fn page_size(query: &str) -> Result<usize, Failure> {
    match query_param(query, "n") {
        None => Ok(LIST_PAGE_DEFAULT),
        Some(n) => n
            .parse()
            .map_err(|_| Failure::new(400, "PAGINATION_NUMBER_INVALID", "n must be a number")),
    }
}

fn catalog(registry: &Registry, query: &str) -> Answer {
    let n = page_size(query)?;
    let last = query_param(query, "last");
    let (names, more) = if n == 0 {
        (Vec::new(), false)
    } else {
        registry.catalog(n, last.as_deref())?
    };
    let mut response = json_response(
        StatusCode::OK,
        serde_json::json!({ "repositories": names }).to_string(),
    );
    if let (true, Some(last)) = (more, names.last()) {
        set(
            &mut response,
            "Link",
            &format!("</v2/_catalog?n={n}&last={last}>; rel=\"next\""),
        );
    }
    Ok(response)
}

fn tags(registry: &Registry, name: &str, query: &str) -> Answer {
    let n = page_size(query)?;
    let last = query_param(query, "last");
    let (tags, more) = if n == 0 {
        (Vec::new(), false)
    } else {
        registry.list_tags(name, n, last.as_deref())?
    };
    let mut response = json_response(
        StatusCode::OK,
        serde_json::json!({ "name": name, "tags": tags }).to_string(),
    );
    if let (true, Some(last)) = (more, tags.last()) {
        set(
            &mut response,
            "Link",
            &format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\""),
        );
    }
    Ok(response)
}

fn referrers(registry: &Registry, name: &str, digest: &str, query: &str) -> Answer {
    let digest = parse_digest(digest)?;
    let artifact_type = query_param(query, "artifactType");
    let manifests = registry.referrers(name, &digest, artifact_type.as_deref())?;
    let index =
        serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut response = (StatusCode::OK, index.to_string()).into_response();
    set(&mut response, "Content-Type", OCI_INDEX);
    if artifact_type.is_some() {
        set(&mut response, "OCI-Filters-Applied", "artifactType");
    }
    Ok(response)
}

fn get_manifest(
    registry: &Registry,
    name: &str,
    reference: &str,
    with_body: bool,
    now_ms: u64,
) -> Answer {
    let answer = registry.get_manifest(name, &Reference::parse(reference)?, with_body, now_ms)?;
    let length = answer.bytes.len();
    let mut response = if with_body {
        answer.bytes.into_response()
    } else {
        ().into_response()
    };
    *response.status_mut() = StatusCode::OK;
    set(&mut response, "Content-Type", &answer.media_type);
    set(
        &mut response,
        "Docker-Content-Digest",
        &answer.digest.to_string(),
    );
    set(&mut response, "Content-Length", &length.to_string());
    set(&mut response, "ETag", &format!("\"{}\"", answer.digest));
    Ok(response)
}

async fn put_manifest(
    registry: &Registry,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    body: Body,
    now_ms: u64,
) -> Answer {
    let reference = Reference::parse(reference)?;
    let too_large = || {
        Failure::new(
            413,
            "MANIFEST_INVALID",
            format!("manifest is larger than {MANIFEST_MAX_BYTES} bytes"),
        )
    };
    let bytes = http_body_util::Limited::new(body, MANIFEST_MAX_BYTES)
        .collect()
        .await
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                Failure::new(
                    400,
                    "MANIFEST_INVALID",
                    format!("could not read the manifest: {error}"),
                )
            }
        })?
        .to_bytes();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let outcome = registry
        .put_manifest(name, &reference, content_type, &bytes, now_ms)
        .await?;
    let mut response = StatusCode::CREATED.into_response();
    set(
        &mut response,
        "Location",
        &format!("/v2/{name}/manifests/{}", outcome.digest),
    );
    set(
        &mut response,
        "Docker-Content-Digest",
        &outcome.digest.to_string(),
    );
    if let Some(subject) = outcome.subject {
        set(&mut response, "OCI-Subject", &subject.to_string());
    }
    Ok(response)
}

/// `bytes=START-END` or `bytes=START-` within a blob of `size` bytes.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = match end.trim() {
        "" => size.checked_sub(1)?,
        end => end.parse::<u64>().ok()?.min(size.checked_sub(1)?),
    };
    (start <= end && end < size).then_some((start, end))
}

async fn get_blob(
    registry: &Registry,
    name: &str,
    digest: &str,
    headers: &HeaderMap,
    with_body: bool,
) -> Answer {
    let digest = parse_digest(digest)?;
    let (mut file, size) = registry.open_blob(name, &digest).await?;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(value) => match parse_range(value, size) {
            Some(range) => Some(range),
            None => {
                let mut response = Failure::new(
                    416,
                    "BLOB_UNKNOWN",
                    format!("range {value} is not within the blob's {size} bytes"),
                )
                .into_response();
                set(&mut response, "Content-Range", &format!("bytes */{size}"));
                return Ok(response);
            }
        },
    };
    let (start, length) = match range {
        Some((start, end)) => (start, end - start + 1),
        None => (0, size),
    };
    let mut response = if with_body {
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|error| {
                    Failure::new(500, "UNKNOWN", format!("cannot read the blob: {error}"))
                })?;
        }
        let stream =
            tokio_util::io::ReaderStream::with_capacity(file.take(length), BLOB_READ_CHUNK_BYTES);
        Body::from_stream(stream).into_response()
    } else {
        ().into_response()
    };
    *response.status_mut() = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    set(&mut response, "Content-Type", "application/octet-stream");
    set(&mut response, "Content-Length", &length.to_string());
    set(&mut response, "Docker-Content-Digest", &digest.to_string());
    set(&mut response, "Accept-Ranges", "bytes");
    set(&mut response, "ETag", &format!("\"{digest}\""));
    if let Some((start, end)) = range {
        set(
            &mut response,
            "Content-Range",
            &format!("bytes {start}-{end}/{size}"),
        );
    }
    Ok(response)
}

fn upload_progress(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    let mut response = status.into_response();
    set(
        &mut response,
        "Location",
        &format!("/v2/{name}/blobs/uploads/{id}"),
    );
    set(
        &mut response,
        "Range",
        &format!("0-{}", size.saturating_sub(1)),
    );
    set(&mut response, "Docker-Upload-UUID", id);
    set(&mut response, "Content-Length", "0");
    response
}

fn blob_created(name: &str, digest: &Digest) -> Response {
    let mut response = StatusCode::CREATED.into_response();
    set(
        &mut response,
        "Location",
        &format!("/v2/{name}/blobs/{digest}"),
    );
    set(&mut response, "Docker-Content-Digest", &digest.to_string());
    set(&mut response, "Content-Length", "0");
    response
}

async fn start_upload(
    edge: &Edge,
    registry: &Registry,
    name: &str,
    query: &str,
    headers: &HeaderMap,
    body: Body,
    now_ms: u64,
) -> Answer {
    if let (Some(mount), Some(from)) = (query_param(query, "mount"), query_param(query, "from")) {
        let digest = parse_digest(&mount)?;
        if registry
            .mount_blob(name, &from, &digest, now_ms)
            .await?
            .is_some()
        {
            return Ok(blob_created(name, &digest));
        }
        // Nothing to mount: an upload session, as the specification says.
    }
    let id = edge.ids.uuid();
    registry.start_upload(name, &id, now_ms)?;
    match query_param(query, "digest") {
        // Monolithic: the whole blob in this one request.
        Some(digest) => {
            let digest = parse_digest(&digest)?;
            let upload = registry.upload(name, &id).await?;
            let mut upload = upload.lock().await;
            if let Err(failure) = receive(&mut upload, headers, body).await {
                registry.cancel_upload(&mut upload).await;
                return Err(failure);
            }
            registry
                .complete_upload(&mut upload, &digest, now_ms)
                .await?;
            Ok(blob_created(name, &digest))
        }
        None => Ok(upload_progress(StatusCode::ACCEPTED, name, &id, 0)),
    }
}

/// Streams a request body into an upload in bounded batches.
async fn receive(
    upload: &mut flotilla_registry::Upload,
    headers: &HeaderMap,
    mut body: Body,
) -> Result<(), Failure> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| {
        upload.size().saturating_add(length) > flotilla_registry::blobs::BLOB_SIZE_MAX_BYTES
    }) {
        return Err(RegistryError::TooLarge.into());
    }
    let mut batch = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            Failure::new(
                400,
                "BLOB_UPLOAD_INVALID",
                format!("the upload was cut short: {error}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if batch.is_empty() && data.len() >= UPLOAD_WRITE_BATCH_BYTES {
            upload.write(data).await.map_err(RegistryError::from)?;
            continue;
        }
        batch.extend_from_slice(&data);
        if batch.len() >= UPLOAD_WRITE_BATCH_BYTES {
            upload
                .write(batch.split().freeze())
                .await
                .map_err(RegistryError::from)?;
        }
    }
    if !batch.is_empty() {
        upload
            .write(Bytes::from(batch))
            .await
            .map_err(RegistryError::from)?;
    }
    Ok(())
}

/// `Content-Range: START-END` of a chunk: its first byte must be the next one expected.
fn chunk_start(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let value = value
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches([' ', '=']);
    value.split('-').next()?.trim().parse().ok()
}

async fn patch_upload(
    registry: &Registry,
    name: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Answer {
    let upload = registry.upload(name, id).await?;
    let mut upload = upload.lock().await;
    if let Some(start) = chunk_start(headers) {
        if start != upload.size() {
            let mut response = Failure::from(RegistryError::RangeInvalid {
                upload: id.to_owned(),
                size: upload.size(),
                first_byte: start,
            })
            .into_response();
            set(
                &mut response,
                "Range",
                &format!("0-{}", upload.size().saturating_sub(1)),
            );
            set(
                &mut response,
                "Location",
                &format!("/v2/{name}/blobs/uploads/{id}"),
            );
            return Ok(response);
        }
    }
    receive(&mut upload, headers, body).await?;
    Ok(upload_progress(
        StatusCode::ACCEPTED,
        name,
        id,
        upload.size(),
    ))
}

async fn put_upload(
    registry: &Registry,
    name: &str,
    id: &str,
    query: &str,
    headers: &HeaderMap,
    body: Body,
    now_ms: u64,
) -> Answer {
    let digest = query_param(query, "digest").ok_or_else(|| {
        Failure::new(
            400,
            "DIGEST_INVALID",
            "the digest query parameter is required",
        )
    })?;
    let digest = parse_digest(&digest)?;
    let upload = registry.upload(name, id).await?;
    let mut upload = upload.lock().await;
    receive(&mut upload, headers, body).await?;
    registry
        .complete_upload(&mut upload, &digest, now_ms)
        .await?;
    Ok(blob_created(name, &digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let name = |n: &str| n.to_owned();
        assert_eq!(route(""), Some(Route::Ping));
        assert_eq!(route("_catalog"), Some(Route::Catalog));
        assert_eq!(
            route("a/b/tags/list"),
            Some(Route::Tags { name: name("a/b") })
        );
        assert_eq!(
            route("web/manifests/latest"),
            Some(Route::Manifest {
                name: name("web"),
                reference: name("latest")
            })
        );
        // A repository may be called `x/blobs/uploads`.
        assert_eq!(
            route("x/blobs/uploads/manifests/v1"),
            Some(Route::Manifest {
                name: name("x/blobs/uploads"),
                reference: name("v1")
            })
        );
        assert_eq!(
            route("web/blobs/uploads/"),
            Some(Route::Uploads { name: name("web") })
        );
        assert_eq!(
            route("web/blobs/uploads/abc-1"),
            Some(Route::Upload {
                name: name("web"),
                id: name("abc-1")
            })
        );
        assert_eq!(
            route("web/blobs/sha256:00"),
            Some(Route::Blob {
                name: name("web"),
                digest: name("sha256:00")
            })
        );
        assert_eq!(
            route("web/referrers/sha256:00"),
            Some(Route::Referrers {
                name: name("web"),
                digest: name("sha256:00")
            })
        );
        assert_eq!(route("web/other"), None);
        assert_eq!(route("/manifests/x"), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=90-200", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=0-", 0), None);
    }

    #[test]
    fn tokens_come_from_basic_auth_for_user_aws_or_the_query() {
        let mut headers = HeaderMap::new();
        let basic = base64::engine::general_purpose::STANDARD.encode("AWS:secret-token");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {basic}"))
                .unwrap_or_else(|_| HeaderValue::from_static("")),
        );
        assert_eq!(
            presented_token(&headers, "").as_deref(),
            Some("secret-token")
        );
        let other_user = base64::engine::general_purpose::STANDARD.encode("bob:secret-token");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {other_user}"))
                .unwrap_or_else(|_| HeaderValue::from_static("")),
        );
        assert_eq!(presented_token(&headers, ""), None);
        assert_eq!(
            presented_token(&HeaderMap::new(), "a=b&token=t%2B1").as_deref(),
            Some("t+1")
        );
        assert_eq!(presented_token(&HeaderMap::new(), "a=b"), None);
    }
}
