//! Signing requests for our own clients (the agent, the benchmark tools).

use hmac::Mac;
use http::header::{HeaderName, AUTHORIZATION, HOST};
use http::{HeaderMap, HeaderValue};

use crate::canonical::{
    aws_encode_query_component, canonical_request_hash, CanonicalInput, PathRule,
};
use crate::credentials::{derive_signing_key, ScopeRef, MAX_SCOPE_ELEMENT_LEN};
use crate::time::AmzDate;
use crate::verify::feed_string_to_sign;
use crate::{
    RequestParts, ALGORITHM, MAX_PRESIGNED_EXPIRES_SECONDS, SCOPE_TERMINATOR, UNSIGNED_PAYLOAD,
    X_AMZ_CONTENT_SHA256, X_AMZ_DATE,
};

/// Headers never signed, because something between client and server may
/// add, drop or rewrite them. The first four are botocore's list.
const UNSIGNED_HEADERS: [&str; 6] = [
    "authorization",
    "user-agent",
    "expect",
    "x-amzn-trace-id",
    "connection",
    "transfer-encoding",
];

/// Who signs and for which scope.
#[derive(Clone, Copy)]
pub struct SigningParams<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

impl std::fmt::Debug for SigningParams<'_> {
    /// Leaves the secret out so that a logged request never carries it.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SigningParams")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// How the body enters the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadSigning {
    /// Sign the body's SHA-256; send no `x-amz-content-sha256` (what botocore
    /// does for ECS and every other non-S3 service).
    Signed,
    /// Sign the body's SHA-256 and also send it as `x-amz-content-sha256`.
    SignedWithContentSha256Header,
    /// Sign `UNSIGNED-PAYLOAD` and say so in `x-amz-content-sha256`; the body
    /// is then not protected by the signature.
    Unsigned,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SigningError {
    #[error("request has no host header; SigV4 requires host to be signed")]
    MissingHost,
    #[error("access key id {access_key_id:?} is empty, has a '/' or has characters other than visible ascii")]
    InvalidAccessKeyId { access_key_id: String },
    #[error("{element} {value:?} is not lowercase letters, digits and '-' of at most {MAX_SCOPE_ELEMENT_LEN} bytes")]
    InvalidScope {
        element: &'static str,
        value: String,
    },
    #[error("presigned url lifetime of {expires_seconds} s is outside 1..={MAX_PRESIGNED_EXPIRES_SECONDS} s")]
    ExpiresOutOfRange { expires_seconds: u64 },
    #[error("query already carries the SigV4 parameter {parameter}")]
    QueryAlreadySigned { parameter: &'static str },
}

/// The headers to add to a request signed in the `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureHeaders {
    pub authorization: HeaderValue,
    pub x_amz_date: HeaderValue,
    pub x_amz_content_sha256: Option<HeaderValue>,
}

impl SignatureHeaders {
    /// Adds the signature headers, replacing any previous ones (a retry re-signs).
    pub fn insert_into(self, headers: &mut HeaderMap) {
        headers.insert(AUTHORIZATION, self.authorization);
        headers.insert(HeaderName::from_static(X_AMZ_DATE), self.x_amz_date);
        match self.x_amz_content_sha256 {
            Some(value) => {
                headers.insert(HeaderName::from_static(X_AMZ_CONTENT_SHA256), value);
            }
            None => {
                headers.remove(X_AMZ_CONTENT_SHA256);
            }
        }
    }
}

fn validate(params: &SigningParams<'_>) -> Result<(), SigningError> {
    let access_key_id = params.access_key_id;
    if access_key_id.is_empty()
        || !access_key_id
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && byte != b'/')
    {
        return Err(SigningError::InvalidAccessKeyId {
            access_key_id: access_key_id.to_owned(),
        });
    }
    for (element, value) in [("region", params.region), ("service", params.service)] {
        let valid = !value.is_empty()
            && value.len() <= MAX_SCOPE_ELEMENT_LEN
            && value
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
        if !valid {
            return Err(SigningError::InvalidScope {
                element,
                value: value.to_owned(),
            });
        }
    }
    Ok(())
}

/// Sorted, `;`-joined names of the headers to sign; `host` must be among them.
fn signed_header_names(headers: &HeaderMap) -> Result<String, SigningError> {
    if !headers.contains_key(HOST) {
        return Err(SigningError::MissingHost);
    }
    // HeaderMap names are already lowercase and each appears once in keys().
    let mut names: Vec<&str> = headers
        .keys()
        .map(HeaderName::as_str)
        .filter(|name| !UNSIGNED_HEADERS.contains(name))
        .collect();
    names.sort_unstable();
    Ok(names.join(";"))
}

fn signature_hex(
    params: &SigningParams<'_>,
    amz_date: &AmzDate,
    input: &CanonicalInput<'_>,
) -> String {
    let scope = ScopeRef {
        date: amz_date.date(),
        region: params.region,
        service: params.service,
    };
    let mut mac = derive_signing_key(params.secret_access_key, &scope);
    feed_string_to_sign(&mut mac, amz_date, &scope, &canonical_request_hash(input));
    hex::encode(mac.finalize().into_bytes())
}

fn credential(params: &SigningParams<'_>, amz_date: &AmzDate) -> String {
    format!(
        "{}/{}/{}/{}/{SCOPE_TERMINATOR}",
        params.access_key_id,
        amz_date.date(),
        params.region,
        params.service
    )
}

/// Signs a request in the `Authorization` header, as botocore's `SigV4Auth` does.
///
/// `request.headers` must hold every header that will be sent, `host`
/// included (with the port when it is not the scheme's default, as clients
/// send it); all of them except [`UNSIGNED_HEADERS`] are signed.
/// `request.body_sha256_hex` is the body's hash ([`crate::sha256_hex`]).
pub fn sign(
    request: &RequestParts<'_>,
    params: &SigningParams<'_>,
    payload: PayloadSigning,
    now_unix_seconds: u64,
) -> Result<SignatureHeaders, SigningError> {
    validate(params)?;
    let amz_date = AmzDate::from_unix_seconds(now_unix_seconds);
    let payload_hash = match payload {
        PayloadSigning::Signed | PayloadSigning::SignedWithContentSha256Header => {
            request.body_sha256_hex
        }
        PayloadSigning::Unsigned => UNSIGNED_PAYLOAD,
    };
    let x_amz_date = header_value(amz_date.as_str());
    let x_amz_content_sha256 = match payload {
        PayloadSigning::Signed => None,
        PayloadSigning::SignedWithContentSha256Header | PayloadSigning::Unsigned => {
            Some(header_value(payload_hash))
        }
    };

    // The date (and the payload hash when sent) are signed like any other
    // header, so sign a copy of the headers as they will go out.
    let mut headers = request.headers.clone();
    headers.remove(AUTHORIZATION);
    headers.insert(HeaderName::from_static(X_AMZ_DATE), x_amz_date.clone());
    headers.remove(X_AMZ_CONTENT_SHA256);
    if let Some(value) = &x_amz_content_sha256 {
        headers.insert(HeaderName::from_static(X_AMZ_CONTENT_SHA256), value.clone());
    }
    let signed_headers = signed_header_names(&headers)?;
    let input = CanonicalInput {
        method: request.method.as_str(),
        path: request.path,
        query: request.query,
        headers: &headers,
        signed_headers: &signed_headers,
        payload_hash,
        path_rule: PathRule::for_service(params.service),
    };
    let signature = signature_hex(params, &amz_date, &input);
    let authorization = format!(
        "{ALGORITHM} Credential={}, SignedHeaders={signed_headers}, Signature={signature}",
        credential(params, &amz_date)
    );
    Ok(SignatureHeaders {
        authorization: header_value(&authorization),
        x_amz_date,
        x_amz_content_sha256,
    })
}

/// Every input to [`header_value`] is built from visible ASCII: validated
/// access keys and scope names, digits, hex, and header names.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Presigns a request as botocore's `SigV4QueryAuth` does for non-S3 services,
/// returning the request target to use: `path?query`, where the query is the
/// original parameters followed by the `X-Amz-*` ones and `X-Amz-Signature`.
///
/// The URL is valid from `now_unix_seconds` for `expires_seconds`
/// (1 s to 7 days, the range AWS accepts). Signed headers are those in
/// `request.headers` (normally just `host`), and the sender must send them.
/// The body hash is signed, as botocore does outside S3.
pub fn presign_url(
    request: &RequestParts<'_>,
    params: &SigningParams<'_>,
    expires_seconds: u64,
    now_unix_seconds: u64,
) -> Result<String, SigningError> {
    validate(params)?;
    if !(1..=MAX_PRESIGNED_EXPIRES_SECONDS).contains(&expires_seconds) {
        return Err(SigningError::ExpiresOutOfRange { expires_seconds });
    }
    for parameter in ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"] {
        let present = request.query.split('&').any(|pair| {
            pair.split_once('=')
                .map_or(pair, |(key, _)| key)
                .eq_ignore_ascii_case(parameter)
        });
        if present {
            return Err(SigningError::QueryAlreadySigned { parameter });
        }
    }
    let amz_date = AmzDate::from_unix_seconds(now_unix_seconds);
    let signed_headers = signed_header_names(request.headers)?;
    let auth_parameters = format!(
        "X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={}&X-Amz-Date={amz_date}\
         &X-Amz-Expires={expires_seconds}&X-Amz-SignedHeaders={}",
        aws_encode_query_component(&credential(params, &amz_date)),
        aws_encode_query_component(&signed_headers),
    );
    let query = if request.query.is_empty() {
        auth_parameters
    } else {
        format!("{}&{auth_parameters}", request.query)
    };
    let input = CanonicalInput {
        method: request.method.as_str(),
        path: request.path,
        query: &query,
        headers: request.headers,
        signed_headers: &signed_headers,
        payload_hash: request.body_sha256_hex,
        path_rule: PathRule::for_service(params.service),
    };
    let signature = signature_hex(params, &amz_date, &input);
    Ok(format!(
        "{}?{query}&X-Amz-Signature={signature}",
        request.path
    ))
}
