//! Environment files (`environmentFiles`): read just before a container is
//! created, with ECS's rules, from Flotilla's S3-compatible object API
//! (signed with the task's execution role when it has one, as in ECS, else
//! with the agent's own credentials) or, as Flotilla's extension,
//! from an absolute path on the host.
//!
//! ECS's rules: at most ten files; each line `VARIABLE=VALUE` (the value is
//! everything after the first `=`, spaces and quotes included); lines
//! starting with `#` and blank lines ignored; a variable defined in several
//! files takes its value from the first file that defines it; the
//! container's `environment` overrides them all (that last rule is applied
//! where the container's environment is built, `engine::spec`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use flotilla_sigv4::{PayloadSigning, RequestParts, SigningParams};
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::api::{ApiClient, API_REQUEST_TIMEOUT};
use crate::engine::spec::parse_environment_file;

/// Environment files one container may name (ECS's limit).
pub const ENVIRONMENT_FILES_MAX: usize = 10;
/// Largest environment file read.
pub const ENVIRONMENT_FILE_MAX_BYTES: usize = 1024 * 1024;

/// Where environment files stored as S3 objects come from.
pub trait ObjectSource: Send + Sync + std::fmt::Debug {
    /// The object's bytes, or a reason in S3's words (`NoSuchKey: ...`).
    fn get<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send + 'a>>;

    /// The same source reading as a task's execution role, when it can.
    fn with_role(
        &self,
        credentials: &flotilla_types::acs::RoleCredentials,
    ) -> Option<Arc<dyn ObjectSource>> {
        let _ = credentials;
        None
    }
}

/// The control plane's S3 API, signed with the agent's credentials.
pub struct ControlPlaneObjects {
    api: ApiClient,
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl std::fmt::Debug for ControlPlaneObjects {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ControlPlaneObjects")
            .field("endpoint", &self.api.endpoint().authority)
            .finish_non_exhaustive()
    }
}

impl ControlPlaneObjects {
    pub fn new(api: ApiClient) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(API_REQUEST_TIMEOUT));
        Arc::new(Self {
            api,
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn fetch(&self, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
        let path = format!("/{}/{}", encode(bucket), encode(key));
        let mut headers = HeaderMap::new();
        if let Some(token) = self.api.session_token() {
            headers.insert(
                "x-amz-security-token",
                HeaderValue::from_str(token).map_err(|error| error.to_string())?,
            );
        }
        let endpoint = self.api.endpoint();
        let authority = &endpoint.authority;
        headers.insert(
            http::header::HOST,
            HeaderValue::from_str(authority).map_err(|error| error.to_string())?,
        );
        let credentials = self.api.credentials();
        let params = SigningParams {
            access_key_id: &credentials.access_key_id,
            secret_access_key: &credentials.secret_access_key,
            region: self.api.region(),
            service: "s3",
        };
        let empty_hash = flotilla_sigv4::sha256_hex(b"");
        let parts = RequestParts {
            method: &Method::GET,
            path: &path,
            query: "",
            headers: &headers,
            body_sha256_hex: empty_hash.as_str(),
        };
        let now_seconds = self.api.clock().now_ms() / 1000;
        flotilla_sigv4::sign(
            &parts,
            &params,
            PayloadSigning::SignedWithContentSha256Header,
            now_seconds,
        )
        .map_err(|error| format!("cannot sign the request: {error}"))?
        .insert_into(&mut headers);
        let mut request = http::Request::builder()
            .method(Method::GET)
            .uri(self.api.endpoint().http_url(&path))
            .body(Empty::new())
            .map_err(|error| error.to_string())?;
        *request.headers_mut() = headers;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|error| format!("cannot reach the object store: {error}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), ENVIRONMENT_FILE_MAX_BYTES)
            .collect()
            .await
            .map_err(|error| {
                format!("could not read it (at most {ENVIRONMENT_FILE_MAX_BYTES} bytes): {error}")
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(s3_error(status.as_u16(), &body));
        }
        Ok(body.to_vec())
    }
}

impl ObjectSource for ControlPlaneObjects {
    fn with_role(
        &self,
        credentials: &flotilla_types::acs::RoleCredentials,
    ) -> Option<Arc<dyn ObjectSource>> {
        Some(Self::new(self.api.with_role_credentials(credentials)))
    }

    fn get<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send + 'a>> {
        Box::pin(async move {
            match tokio::time::timeout(API_REQUEST_TIMEOUT, self.fetch(bucket, key)).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {API_REQUEST_TIMEOUT:?}")),
            }
        })
    }
}

/// Percent-encodes a bucket or key for the path (`/` kept), as SigV4 for S3
/// signs it.
fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// `Code: Message` of S3's `<Error>` document.
fn s3_error(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let element = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&close)? + start;
        Some(text[start..end].to_owned())
    };
    match (element("Code"), element("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => format!("HTTP {status}"),
    }
}

/// Reads the files in order and merges their variables, the first
/// definition of each winning. The error is the reason to stop the task with.
pub async fn read(
    source: Option<&dyn ObjectSource>,
    files: &[String],
) -> Result<Vec<(String, String)>, String> {
    if files.len() > ENVIRONMENT_FILES_MAX {
        return Err(format!(
            "{} environment files named; at most {ENVIRONMENT_FILES_MAX}",
            files.len()
        ));
    }
    let mut texts = Vec::with_capacity(files.len());
    for file in files {
        let bytes = match flotilla_types::arn::s3_object(file) {
            Some((bucket, key)) => {
                let Some(source) = source else {
                    return Err(format!(
                        "unable to download env file with key '{key}' from bucket '{bucket}': \
                         this agent has no access to an object store"
                    ));
                };
                source.get(bucket, key).await.map_err(|reason| {
                    format!(
                        "unable to download env file with key '{key}' from bucket '{bucket}': {reason}"
                    )
                })?
            }
            None => read_local(file).await?,
        };
        texts.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    Ok(merge_first_wins(
        texts.iter().map(|text| parse_environment_file(text)),
    ))
}

async fn read_local(file: &str) -> Result<Vec<u8>, String> {
    let path = file.strip_prefix("file://").unwrap_or(file);
    if !path.starts_with('/') {
        return Err(format!(
            "environment file {file} is neither an S3 object ARN nor an absolute path"
        ));
    }
    let metadata = tokio::fs::metadata(path)
        .await
        .map_err(|error| format!("environment file {path}: {error}"))?;
    if metadata.len() > ENVIRONMENT_FILE_MAX_BYTES as u64 {
        return Err(format!(
            "environment file {path} is larger than {ENVIRONMENT_FILE_MAX_BYTES} bytes"
        ));
    }
    tokio::fs::read(path)
        .await
        .map_err(|error| format!("environment file {path}: {error}"))
}

/// The variables of every file, in order, keeping only each name's first
/// definition.
fn merge_first_wins(files: impl Iterator<Item = Vec<(String, String)>>) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    files
        .flatten()
        .filter(|(name, _)| seen.insert(name.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Debug)]
    struct Objects(HashMap<(&'static str, &'static str), &'static str>);

    impl ObjectSource for Objects {
        fn get<'a>(
            &'a self,
            bucket: &'a str,
            key: &'a str,
        ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send + 'a>> {
            let found = self
                .0
                .iter()
                .find(|((b, k), _)| *b == bucket && *k == key)
                .map(|(_, text)| text.as_bytes().to_vec())
                .ok_or_else(|| "NoSuchKey: The specified key does not exist.".to_owned());
            Box::pin(async move { found })
        }
    }

    #[tokio::test]
    async fn files_merge_with_the_first_definition_winning() {
        let objects = Objects(HashMap::from([
            (
                ("config", "a.env"),
                "# shared\nA=from-a\nB=b with spaces\n\n",
            ),
            (("config", "b.env"), "A=from-b\nC=\"quoted\"\n"),
        ]));
        let files = [
            "arn:aws:s3:::config/a.env".to_owned(),
            "arn:aws:s3:::config/b.env".to_owned(),
        ];
        let variables = read(Some(&objects), &files).await.expect("reads");
        assert_eq!(
            variables,
            [
                ("A".to_owned(), "from-a".to_owned()),
                ("B".to_owned(), "b with spaces".to_owned()),
                ("C".to_owned(), "\"quoted\"".to_owned()),
            ]
        );
        let missing = read(Some(&objects), &["arn:aws:s3:::config/gone.env".to_owned()])
            .await
            .expect_err("missing");
        assert_eq!(
            missing,
            "unable to download env file with key 'gone.env' from bucket 'config': \
             NoSuchKey: The specified key does not exist."
        );
    }

    #[test]
    fn s3_errors_are_read_from_their_document() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        assert_eq!(
            s3_error(404, body),
            "NoSuchBucket: The specified bucket does not exist"
        );
        assert_eq!(s3_error(502, b"oops"), "HTTP 502");
        assert_eq!(encode("dir/a b+c.env"), "dir/a%20b%2Bc.env");
    }
}
