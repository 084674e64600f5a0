//! Verifying a signed request at the server edge.

use std::borrow::Cow;

use hmac::Mac;
use http::header::{AUTHORIZATION, DATE};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::canonical::{
    canonical_request_hash, canonical_request_string, percent_decode_query, CanonicalInput,
    PathRule, SIGNATURE_QUERY_PARAMETER,
};
use crate::credentials::{AccessKeys, HmacSha256, ScopeRef, MAX_SCOPE_ELEMENT_LEN};
use crate::time::{parse_amz_date, parse_http_date, AmzDate};
use crate::{
    RequestParts, ALGORITHM, CLOCK_SKEW_TOLERANCE_SECONDS, MAX_PRESIGNED_EXPIRES_SECONDS,
    SCOPE_TERMINATOR, UNSIGNED_PAYLOAD, X_AMZ_CONTENT_SHA256, X_AMZ_DATE,
};

/// Why a request was not authenticated.
///
/// Each variant maps to the error an AWS JSON-protocol service (ECS, ECR,
/// DynamoDB, CloudWatch Logs) returns for the same fault; the edge writes
/// `{"__type": aws_error_code(), "message": aws_message()}` with
/// `http_status()`. `Display` is for our logs, not for clients.
///
/// Every variant is HTTP 400. AWS's generic "Common Errors" pages list 403 for
/// `MissingAuthenticationToken` and `InvalidClientTokenId`, but those are the
/// query-protocol (EC2, IAM) names; the JSON 1.1 services answer with the
/// `...Exception` names and status 400, as SDK reports show: ECR
/// `MissingAuthenticationTokenException` "Missing Authentication Token"
/// (Status Code: 400), ECS and DynamoDB `UnrecognizedClientException` (400),
/// Kinesis, CloudWatch Logs and Rekognition `InvalidSignatureException`
/// "Signature expired: ..." (400), `IncompleteSignatureException` (400).
/// Only REST-JSON services (Lambda, Glacier) use 403 for these.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    #[error("request has neither an Authorization header nor an X-Amz-Signature query parameter")]
    MissingAuthenticationToken,

    #[error("malformed signature: {aws_message}")]
    IncompleteSignature { aws_message: String },

    #[error("unknown access key id {access_key_id:?}")]
    UnrecognizedClient { access_key_id: String },

    /// The signature is well formed but wrong. The canonical request and string
    /// to sign the server computed are kept for debug logs: comparing them with
    /// the client's (botocore logs both at debug level) finds the difference.
    #[error("signature mismatch for access key id {access_key_id}")]
    SignatureDoesNotMatch {
        access_key_id: String,
        canonical_request: String,
        string_to_sign: String,
    },

    #[error("signature from {signed_at_unix_seconds} is older than the clock skew tolerance allows at {now_unix_seconds}")]
    SignatureExpired {
        signed_at_unix_seconds: u64,
        now_unix_seconds: u64,
    },

    #[error("signature from {signed_at_unix_seconds} is further in the future than the clock skew tolerance allows at {now_unix_seconds}")]
    SignatureNotYetCurrent {
        signed_at_unix_seconds: u64,
        now_unix_seconds: u64,
    },

    #[error("presigned url expired at {expired_at_unix_seconds}, now is {now_unix_seconds}")]
    PresignedUrlExpired {
        expired_at_unix_seconds: u64,
        now_unix_seconds: u64,
    },

    #[error("credential scope date {scope_date:?} is not the request date {request_date}")]
    CredentialScopeDateMismatch {
        scope_date: String,
        request_date: String,
    },

    #[error("x-amz-content-sha256 {claimed:?} does not match the body's sha256 {computed}")]
    ContentSha256Mismatch { claimed: String, computed: String },

    /// S3 requires `x-amz-content-sha256` on every request signed in the header.
    #[error("request to s3 has no x-amz-content-sha256 header")]
    MissingContentSha256,

    /// An `x-amz-content-sha256` that is neither a hash nor a payload mode S3 knows.
    #[error("x-amz-content-sha256 {value:?} is neither a sha256 nor a known payload mode")]
    InvalidContentSha256 { value: String },
}

impl VerifyError {
    /// The `__type` AWS puts in the JSON error body.
    pub fn aws_error_code(&self) -> &'static str {
        match self {
            Self::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            Self::IncompleteSignature { .. } => "IncompleteSignatureException",
            Self::UnrecognizedClient { .. } => "UnrecognizedClientException",
            Self::SignatureDoesNotMatch { .. }
            | Self::SignatureExpired { .. }
            | Self::SignatureNotYetCurrent { .. }
            | Self::PresignedUrlExpired { .. }
            | Self::CredentialScopeDateMismatch { .. }
            | Self::ContentSha256Mismatch { .. }
            | Self::MissingContentSha256
            | Self::InvalidContentSha256 { .. } => "InvalidSignatureException",
        }
    }

    /// S3's error code, HTTP status and message for the same fault, as
    /// S3's REST API answers them in its `<Error>` body.
    pub fn s3_error(&self) -> (&'static str, u16, String) {
        match self {
            Self::MissingAuthenticationToken => (
                "AccessDenied",
                403,
                "Anonymous access is not allowed on this endpoint: sign the request".to_owned(),
            ),
            Self::IncompleteSignature { aws_message } => {
                ("AuthorizationHeaderMalformed", 400, aws_message.clone())
            }
            Self::UnrecognizedClient { .. } => (
                "InvalidAccessKeyId",
                403,
                "The AWS Access Key Id you provided does not exist in our records.".to_owned(),
            ),
            Self::SignatureDoesNotMatch { .. } => (
                "SignatureDoesNotMatch",
                403,
                "The request signature we calculated does not match the signature you provided. \
                 Check your key and signing method."
                    .to_owned(),
            ),
            Self::SignatureExpired { .. } | Self::SignatureNotYetCurrent { .. } => (
                "RequestTimeTooSkewed",
                403,
                "The difference between the request time and the current time is too large."
                    .to_owned(),
            ),
            Self::PresignedUrlExpired { .. } => {
                ("AccessDenied", 403, "Request has expired".to_owned())
            }
            Self::CredentialScopeDateMismatch { .. } => {
                ("AuthorizationHeaderMalformed", 400, self.aws_message())
            }
            Self::ContentSha256Mismatch { .. } => (
                "XAmzContentSHA256Mismatch",
                400,
                "The provided 'x-amz-content-sha256' header does not match what was computed."
                    .to_owned(),
            ),
            Self::MissingContentSha256 => (
                "InvalidRequest",
                400,
                "Missing required header for this request: x-amz-content-sha256".to_owned(),
            ),
            Self::InvalidContentSha256 { .. } => (
                "InvalidArgument",
                400,
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, \
                 STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER \
                 or a valid sha256 value."
                    .to_owned(),
            ),
        }
    }

    /// See the type's documentation for why this is always 400.
    pub fn http_status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    /// The `message` AWS puts in the JSON error body, worded as AWS words it.
    pub fn aws_message(&self) -> String {
        let tolerance_minutes = CLOCK_SKEW_TOLERANCE_SECONDS / 60;
        match self {
            Self::MissingAuthenticationToken => "Missing Authentication Token".to_owned(),
            Self::IncompleteSignature { aws_message } => aws_message.clone(),
            Self::UnrecognizedClient { .. } => {
                "The security token included in the request is invalid.".to_owned()
            }
            Self::SignatureDoesNotMatch { .. } => "The request signature we calculated does not \
                match the signature you provided. Check your AWS Secret Access Key and signing \
                method. Consult the service documentation for details."
                .to_owned(),
            Self::SignatureExpired { signed_at_unix_seconds, now_unix_seconds } => format!(
                "Signature expired: {} is now earlier than {} ({} - {tolerance_minutes} min.)",
                AmzDate::from_unix_seconds(*signed_at_unix_seconds),
                AmzDate::from_unix_seconds(
                    now_unix_seconds.saturating_sub(CLOCK_SKEW_TOLERANCE_SECONDS)
                ),
                AmzDate::from_unix_seconds(*now_unix_seconds),
            ),
            Self::SignatureNotYetCurrent { signed_at_unix_seconds, now_unix_seconds } => format!(
                "Signature not yet current: {} is still later than {} ({} + {tolerance_minutes} min.)",
                AmzDate::from_unix_seconds(*signed_at_unix_seconds),
                AmzDate::from_unix_seconds(
                    now_unix_seconds.saturating_add(CLOCK_SKEW_TOLERANCE_SECONDS)
                ),
                AmzDate::from_unix_seconds(*now_unix_seconds),
            ),
            // AWS documents no wording for an expired presigned URL on JSON
            // services; this is S3's, the service where presigned URLs live.
            Self::PresignedUrlExpired { .. } => "Request has expired".to_owned(),
            Self::CredentialScopeDateMismatch { scope_date, request_date } => format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
                 from HTTP: '{scope_date}' != '{}', from '{request_date}'.",
                request_date.get(..8).unwrap_or(request_date),
            ),
            Self::ContentSha256Mismatch { .. } => {
                "The provided 'x-amz-content-sha256' header does not match what was computed."
                    .to_owned()
            }
            Self::MissingContentSha256 | Self::InvalidContentSha256 { .. } => self.s3_error().2,
        }
    }

    fn incomplete(aws_message: impl Into<String>) -> Self {
        Self::IncompleteSignature {
            aws_message: aws_message.into(),
        }
    }
}

/// Where the signature travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthLocation {
    AuthorizationHeader,
    /// A presigned URL: `X-Amz-*` query parameters.
    PresignedUrl {
        expires_at_unix_seconds: u64,
    },
}

/// Whether the body is covered by the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadCoverage {
    /// The canonical request held the body's SHA-256.
    Signed,
    /// The client sent `x-amz-content-sha256: UNSIGNED-PAYLOAD`: the signature
    /// says nothing about the body. The edge decides whether to accept that.
    Unsigned,
}

/// A request whose signature checked out.
///
/// Region and service are what the client put in its credential scope; this
/// crate does not know which ones the server answers for, so the caller
/// compares them; AWS words a wrong region as "Credential should be scoped
/// to a valid region, not '...'." and a wrong service as "Credential should
/// be scoped to correct service: '...'.".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    pub region: String,
    pub service: String,
    pub signed_at_unix_seconds: u64,
    pub location: AuthLocation,
    pub payload: PayloadCoverage,
    /// The `;`-separated lowercase names the signature covers.
    pub signed_headers: String,
}

impl Verified {
    /// True when the signature covers header `name`; the edge can insist on
    /// `x-amz-target` and `content-type` being signed before trusting them.
    pub fn is_header_signed(&self, name: &str) -> bool {
        self.signed_headers
            .split(';')
            .any(|signed| signed.eq_ignore_ascii_case(name))
    }
}

/// Checks the SigV4 signature of a request, in the header or in the query.
///
/// `now_unix_seconds` is the server's clock, passed in so that tests and the
/// simulator choose the time. Checks run cheapest first, and nothing is
/// derived or hashed for a request that names an unknown key: presence,
/// shape, access key, time, scope date, body hash, signature.
pub fn verify<K: AccessKeys + ?Sized>(
    request: &RequestParts<'_>,
    credentials: &K,
    now_unix_seconds: u64,
) -> Result<Verified, VerifyError> {
    verify_with(request, credentials, now_unix_seconds, PayloadRule::Body)
        .map(|(verified, _)| verified)
}

/// How an S3 request's body is covered, once its signature checked out.
/// The body has not been read yet: S3 bodies are streamed, so the caller
/// holds the body to what this says as it reads it.
pub enum S3Payload {
    /// The client signed the body's SHA-256 (lowercase hex, as claimed in
    /// `x-amz-content-sha256`); the caller must refuse the body when it
    /// hashes to anything else.
    Sha256(String),
    /// `UNSIGNED-PAYLOAD`, or a presigned URL: the signature says nothing
    /// about the body.
    Unsigned,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: an `aws-chunked` body whose every
    /// chunk carries a signature chained from the request's.
    SignedChunks(ChunkSignatures),
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: signed chunks followed by
    /// signed trailing headers.
    SignedChunksWithTrailer(ChunkSignatures),
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: an `aws-chunked` body without
    /// signatures, followed by trailing checksum headers.
    UnsignedChunksWithTrailer,
}

impl std::fmt::Debug for S3Payload {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::Sha256(_) => "Sha256",
            Self::Unsigned => "Unsigned",
            Self::SignedChunks(_) => "SignedChunks",
            Self::SignedChunksWithTrailer(_) => "SignedChunksWithTrailer",
            Self::UnsignedChunksWithTrailer => "UnsignedChunksWithTrailer",
        })
    }
}

/// The chain of chunk signatures of a `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`
/// body: each chunk's signature covers its data's SHA-256 and the previous
/// signature, starting from the request's own (the seed).
pub struct ChunkSignatures {
    signing_key: HmacSha256,
    amz_date: AmzDate,
    /// `date/region/service/aws4_request`.
    scope: String,
    previous_hex: [u8; 64],
}

/// The first line of a chunk's string to sign.
const CHUNK_ALGORITHM: &str = "AWS4-HMAC-SHA256-PAYLOAD";

impl ChunkSignatures {
    /// Checks the next chunk's signature (`claimed_hex`) over its data's
    /// SHA-256, and on success makes it the one the following chunk chains
    /// from. The last chunk, of zero bytes, is signed like any other.
    pub fn verify_chunk(&mut self, chunk_sha256_hex: &str, claimed_hex: &str) -> bool {
        let expected = self.chunk_signature(chunk_sha256_hex);
        if !constant_time_eq(&expected, claimed_hex.as_bytes()) {
            return false;
        }
        self.previous_hex = expected;
        true
    }

    fn chunk_signature(&self, chunk_sha256_hex: &str) -> [u8; 64] {
        let mut mac = self.signing_key.clone();
        for part in [
            CHUNK_ALGORITHM,
            "\n",
            self.amz_date.as_str(),
            "\n",
            &self.scope,
            "\n",
        ] {
            mac.update(part.as_bytes());
        }
        mac.update(&self.previous_hex);
        mac.update(b"\n");
        mac.update(crate::EMPTY_PAYLOAD_SHA256.as_bytes());
        mac.update(b"\n");
        mac.update(chunk_sha256_hex.as_bytes());
        let mut hex_digest = [0u8; 64];
        let _ = hex::encode_to_slice(mac.finalize().into_bytes(), &mut hex_digest);
        hex_digest
    }
}

/// Signs the next chunk of a `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` body, for
/// tests and clients of our own: the signature to send and, chained, the
/// state for the following chunk.
impl ChunkSignatures {
    pub fn sign_chunk(&mut self, chunk_sha256_hex: &str) -> String {
        let signature = self.chunk_signature(chunk_sha256_hex);
        self.previous_hex = signature;
        String::from_utf8_lossy(&signature).into_owned()
    }
}

/// [`verify`] with S3's rules: the path signed as it is (not normalized),
/// `x-amz-content-sha256` required in header signatures and taken at its
/// word, since the body is streamed afterwards and held to it by the caller
/// ([`S3Payload`]); a presigned URL covers no body.
pub fn verify_s3<K: AccessKeys + ?Sized>(
    request: &RequestParts<'_>,
    credentials: &K,
    now_unix_seconds: u64,
) -> Result<(Verified, S3Payload), VerifyError> {
    let (verified, payload) = verify_with(request, credentials, now_unix_seconds, PayloadRule::S3)?;
    Ok((verified, payload.unwrap_or(S3Payload::Unsigned)))
}

/// Where the payload hash of the canonical request comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PayloadRule {
    /// The body's own hash, or the header when sent (then it must agree).
    Body,
    /// S3's: the header's claim, checked against the body later.
    S3,
}

fn verify_with<K: AccessKeys + ?Sized>(
    request: &RequestParts<'_>,
    credentials: &K,
    now_unix_seconds: u64,
    rule: PayloadRule,
) -> Result<(Verified, Option<S3Payload>), VerifyError> {
    let authorization = request.headers.get(AUTHORIZATION);
    let query_parameters = QueryAuthParameters::find(request.query);
    let claim = match (authorization, query_parameters.is_present()) {
        (None, false) => return Err(VerifyError::MissingAuthenticationToken),
        (Some(_), true) => {
            return Err(VerifyError::incomplete(
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
                 Signature query string parameter or the Authorization header should be specified",
            ))
        }
        (Some(value), false) => Claim::from_authorization_header(value, request.headers)?,
        (None, true) => Claim::from_query(&query_parameters)?,
    };

    let scope = CredentialScope::parse(&claim.credential)?;
    if !claim
        .signed_headers
        .split(';')
        .any(|name| name.eq_ignore_ascii_case("host"))
    {
        return Err(VerifyError::incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    let Some(secret) = credentials.secret(scope.access_key_id) else {
        return Err(VerifyError::UnrecognizedClient {
            access_key_id: scope.access_key_id.to_owned(),
        });
    };
    claim.check_time(now_unix_seconds)?;
    let amz_date = AmzDate::from_unix_seconds(claim.signed_at_unix_seconds);
    if scope.date != amz_date.date() {
        return Err(VerifyError::CredentialScopeDateMismatch {
            scope_date: scope.date.to_owned(),
            request_date: amz_date.to_string(),
        });
    }
    let (payload_hash, payload, s3_mode) = match rule {
        PayloadRule::Body => {
            let (hash, coverage) = resolve_payload_hash(request)?;
            (hash, coverage, None)
        }
        PayloadRule::S3 => {
            let (hash, mode) = resolve_s3_payload_hash(request, claim.location)?;
            let coverage = match mode {
                S3Mode::Sha256 | S3Mode::SignedChunks | S3Mode::SignedChunksWithTrailer => {
                    PayloadCoverage::Signed
                }
                S3Mode::Unsigned | S3Mode::UnsignedChunksWithTrailer => PayloadCoverage::Unsigned,
            };
            (hash, coverage, Some(mode))
        }
    };

    let scope_ref = ScopeRef {
        date: scope.date,
        region: scope.region,
        service: scope.service,
    };
    let mut mac = secret.signing_key(&scope_ref);
    let input = CanonicalInput {
        method: request.method.as_str(),
        path: request.path,
        query: request.query,
        headers: request.headers,
        signed_headers: &claim.signed_headers,
        payload_hash,
        path_rule: match rule {
            PayloadRule::Body => PathRule::Normalized,
            PayloadRule::S3 => PathRule::S3,
        },
    };
    let signing_key = s3_mode.is_some().then(|| mac.clone());
    let canonical_hash = canonical_request_hash(&input);
    feed_string_to_sign(&mut mac, &amz_date, &scope_ref, &canonical_hash);
    let mut expected = [0u8; 64];
    let _ = hex::encode_to_slice(mac.finalize().into_bytes(), &mut expected);
    if !constant_time_eq(&expected, claim.signature.as_bytes()) {
        let mut string_to_sign = Vec::with_capacity(160);
        write_string_to_sign(&mut string_to_sign, &amz_date, &scope_ref, &canonical_hash);
        return Err(VerifyError::SignatureDoesNotMatch {
            access_key_id: scope.access_key_id.to_owned(),
            canonical_request: canonical_request_string(&input),
            string_to_sign: String::from_utf8_lossy(&string_to_sign).into_owned(),
        });
    }

    let chunks = |signing_key: HmacSha256| ChunkSignatures {
        signing_key,
        amz_date,
        scope: format!(
            "{}/{}/{}/{SCOPE_TERMINATOR}",
            scope.date, scope.region, scope.service
        ),
        previous_hex: expected,
    };
    let s3_payload = match (s3_mode, signing_key) {
        (None, _) => None,
        (Some(S3Mode::Sha256), _) => Some(S3Payload::Sha256(payload_hash.to_ascii_lowercase())),
        (Some(S3Mode::Unsigned), _) => Some(S3Payload::Unsigned),
        (Some(S3Mode::UnsignedChunksWithTrailer), _) => Some(S3Payload::UnsignedChunksWithTrailer),
        (Some(S3Mode::SignedChunks), Some(key)) => Some(S3Payload::SignedChunks(chunks(key))),
        (Some(S3Mode::SignedChunksWithTrailer), Some(key)) => {
            Some(S3Payload::SignedChunksWithTrailer(chunks(key)))
        }
        (Some(_), None) => None,
    };
    Ok((
        Verified {
            access_key_id: scope.access_key_id.to_owned(),
            region: scope.region.to_owned(),
            service: scope.service.to_owned(),
            signed_at_unix_seconds: claim.signed_at_unix_seconds,
            location: claim.location,
            payload,
            signed_headers: claim.signed_headers.into_owned(),
        },
        s3_payload,
    ))
}

/// The payload modes S3 names in `x-amz-content-sha256`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum S3Mode {
    Sha256,
    Unsigned,
    SignedChunks,
    SignedChunksWithTrailer,
    UnsignedChunksWithTrailer,
}

/// S3's payload hash: the header's value, which header signatures must send;
/// a presigned URL signs `UNSIGNED-PAYLOAD` unless the header says otherwise.
fn resolve_s3_payload_hash<'a>(
    request: &RequestParts<'a>,
    location: AuthLocation,
) -> Result<(&'a str, S3Mode), VerifyError> {
    let Some(claimed) = request.headers.get(X_AMZ_CONTENT_SHA256) else {
        return match location {
            AuthLocation::PresignedUrl { .. } => Ok((UNSIGNED_PAYLOAD, S3Mode::Unsigned)),
            AuthLocation::AuthorizationHeader => Err(VerifyError::MissingContentSha256),
        };
    };
    let invalid = || VerifyError::InvalidContentSha256 {
        value: String::from_utf8_lossy(claimed.as_bytes()).into_owned(),
    };
    let text = claimed.to_str().map_err(|_| invalid())?;
    let mode = match text {
        UNSIGNED_PAYLOAD => S3Mode::Unsigned,
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => S3Mode::SignedChunks,
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => S3Mode::SignedChunksWithTrailer,
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => S3Mode::UnsignedChunksWithTrailer,
        _ if text.len() == 64 && text.bytes().all(|byte| byte.is_ascii_hexdigit()) => {
            S3Mode::Sha256
        }
        _ => return Err(invalid()),
    };
    Ok((text, mode))
}

/// The body hash the client signed: the `x-amz-content-sha256` header when
/// sent (it must then agree with the body, or say UNSIGNED-PAYLOAD), else the
/// body's own hash. This mirrors botocore, which signs the header's value
/// whenever the header exists.
fn resolve_payload_hash<'a>(
    request: &RequestParts<'a>,
) -> Result<(&'a str, PayloadCoverage), VerifyError> {
    let Some(claimed) = request.headers.get(X_AMZ_CONTENT_SHA256) else {
        return Ok((request.body_sha256_hex, PayloadCoverage::Signed));
    };
    if claimed.as_bytes() == UNSIGNED_PAYLOAD.as_bytes() {
        return Ok((UNSIGNED_PAYLOAD, PayloadCoverage::Unsigned));
    }
    match claimed.to_str() {
        Ok(text) if text.eq_ignore_ascii_case(request.body_sha256_hex) => {
            Ok((text, PayloadCoverage::Signed))
        }
        _ => Err(VerifyError::ContentSha256Mismatch {
            claimed: String::from_utf8_lossy(claimed.as_bytes()).into_owned(),
            computed: request.body_sha256_hex.to_owned(),
        }),
    }
}

/// Something that can absorb the string to sign: the keyed HMAC on the hot
/// path, a buffer when reporting a mismatch.
trait StringToSignSink {
    fn put(&mut self, bytes: &[u8]);
}

impl StringToSignSink for HmacSha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl StringToSignSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

fn write_string_to_sign(
    sink: &mut impl StringToSignSink,
    amz_date: &AmzDate,
    scope: &ScopeRef<'_>,
    canonical_hash: &[u8; 64],
) {
    sink.put(ALGORITHM.as_bytes());
    sink.put(b"\n");
    sink.put(amz_date.as_str().as_bytes());
    sink.put(b"\n");
    sink.put(scope.date.as_bytes());
    sink.put(b"/");
    sink.put(scope.region.as_bytes());
    sink.put(b"/");
    sink.put(scope.service.as_bytes());
    sink.put(b"/");
    sink.put(SCOPE_TERMINATOR.as_bytes());
    sink.put(b"\n");
    sink.put(canonical_hash);
}

pub(crate) fn feed_string_to_sign(
    mac: &mut HmacSha256,
    amz_date: &AmzDate,
    scope: &ScopeRef<'_>,
    canonical_hash: &[u8; 64],
) {
    write_string_to_sign(mac, amz_date, scope, canonical_hash);
}

/// Compares without an early exit, so the time taken says nothing about how
/// many leading characters of a guessed signature were right.
fn constant_time_eq(expected: &[u8], provided: &[u8]) -> bool {
    if expected.len() != provided.len() {
        return false;
    }
    let difference = expected
        .iter()
        .zip(provided)
        .fold(0u8, |difference, (left, right)| difference | (left ^ right));
    std::hint::black_box(difference) == 0
}

/// What the client claims: who signed, when, over which headers, and the signature.
struct Claim<'a> {
    credential: Cow<'a, str>,
    signed_headers: Cow<'a, str>,
    signature: Cow<'a, str>,
    signed_at_unix_seconds: u64,
    location: AuthLocation,
}

impl<'a> Claim<'a> {
    fn from_authorization_header(
        value: &'a HeaderValue,
        headers: &'a HeaderMap,
    ) -> Result<Self, VerifyError> {
        let text = value.to_str().ok();
        let parsed = text
            .map(parse_authorization)
            .transpose()?
            .unwrap_or_default();
        let date = request_date(headers)?;
        match (
            parsed.credential,
            parsed.signed_headers,
            parsed.signature,
            date,
        ) {
            (Some(credential), Some(signed_headers), Some(signature), Some(signed_at)) => {
                Ok(Self {
                    credential: Cow::Borrowed(credential),
                    signed_headers: Cow::Borrowed(signed_headers),
                    signature: Cow::Borrowed(signature),
                    signed_at_unix_seconds: signed_at,
                    location: AuthLocation::AuthorizationHeader,
                })
            }
            (credential, signed_headers, signature, date) => {
                let mut requirements = Vec::new();
                if credential.is_none() {
                    requirements.push("Authorization header requires 'Credential' parameter.");
                }
                if signature.is_none() {
                    requirements.push("Authorization header requires 'Signature' parameter.");
                }
                if signed_headers.is_none() {
                    requirements.push("Authorization header requires 'SignedHeaders' parameter.");
                }
                if date.is_none() {
                    requirements.push(
                        "Authorization header requires existence of either a 'X-Amz-Date' or a \
                         'Date' header.",
                    );
                }
                Err(VerifyError::incomplete(format!(
                    "{} Authorization={}",
                    requirements.join(" "),
                    String::from_utf8_lossy(value.as_bytes())
                )))
            }
        }
    }

    fn from_query(parameters: &QueryAuthParameters<'a>) -> Result<Self, VerifyError> {
        let required = [
            ("X-Amz-Algorithm", parameters.algorithm),
            ("X-Amz-Credential", parameters.credential),
            ("X-Amz-Signature", parameters.signature),
            ("X-Amz-SignedHeaders", parameters.signed_headers),
            ("X-Amz-Date", parameters.date),
            ("X-Amz-Expires", parameters.expires),
        ];
        let missing: Vec<String> = required
            .iter()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| format!("AWS query-string parameters must include '{name}'."))
            .collect();
        let (
            Some(algorithm),
            Some(credential),
            Some(signature),
            Some(signed_headers),
            Some(date),
            Some(expires),
        ) = (
            parameters.algorithm,
            parameters.credential,
            parameters.signature,
            parameters.signed_headers,
            parameters.date,
            parameters.expires,
        )
        else {
            return Err(VerifyError::incomplete(format!(
                "{} Re-examine the query-string parameters.",
                missing.join(" ")
            )));
        };
        if decode_query_value(algorithm)? != ALGORITHM {
            return Err(VerifyError::incomplete(format!(
                "X-Amz-Algorithm only supports \"{ALGORITHM}\""
            )));
        }
        let date = decode_query_value(date)?;
        let signed_at = parse_amz_date(&date).ok_or_else(|| basic_format_error(&date))?;
        let expires_seconds: u64 = decode_query_value(expires)?
            .parse()
            .map_err(|_| VerifyError::incomplete("X-Amz-Expires should be a number"))?;
        if expires_seconds > MAX_PRESIGNED_EXPIRES_SECONDS {
            return Err(VerifyError::incomplete(format!(
                "X-Amz-Expires must be less than a week (in seconds) that is \
                 {MAX_PRESIGNED_EXPIRES_SECONDS}"
            )));
        }
        Ok(Self {
            credential: decode_query_value(credential)?,
            signed_headers: decode_query_value(signed_headers)?,
            signature: decode_query_value(signature)?,
            signed_at_unix_seconds: signed_at,
            location: AuthLocation::PresignedUrl {
                expires_at_unix_seconds: signed_at.saturating_add(expires_seconds),
            },
        })
    }

    /// Header signatures must be within the skew tolerance either way; a
    /// presigned URL may be old (until it expires) but not from the future.
    fn check_time(&self, now_unix_seconds: u64) -> Result<(), VerifyError> {
        let signed_at_unix_seconds = self.signed_at_unix_seconds;
        if signed_at_unix_seconds > now_unix_seconds.saturating_add(CLOCK_SKEW_TOLERANCE_SECONDS) {
            return Err(VerifyError::SignatureNotYetCurrent {
                signed_at_unix_seconds,
                now_unix_seconds,
            });
        }
        match self.location {
            AuthLocation::AuthorizationHeader => {
                if signed_at_unix_seconds.saturating_add(CLOCK_SKEW_TOLERANCE_SECONDS)
                    < now_unix_seconds
                {
                    return Err(VerifyError::SignatureExpired {
                        signed_at_unix_seconds,
                        now_unix_seconds,
                    });
                }
            }
            AuthLocation::PresignedUrl {
                expires_at_unix_seconds,
            } => {
                if now_unix_seconds > expires_at_unix_seconds {
                    return Err(VerifyError::PresignedUrlExpired {
                        expired_at_unix_seconds: expires_at_unix_seconds,
                        now_unix_seconds,
                    });
                }
            }
        }
        Ok(())
    }
}

fn basic_format_error(date: &str) -> VerifyError {
    VerifyError::incomplete(format!(
        "Date must be in ISO-8601 'basic format'. Got '{date}'. See \
         http://en.wikipedia.org/wiki/ISO_8601"
    ))
}

/// The signing time: `X-Amz-Date`, or the `Date` header when that is absent.
/// `Ok(None)` means neither header exists.
fn request_date(headers: &HeaderMap) -> Result<Option<u64>, VerifyError> {
    if let Some(value) = headers.get(X_AMZ_DATE) {
        let text = String::from_utf8_lossy(value.as_bytes());
        return parse_amz_date(&text)
            .map(Some)
            .ok_or_else(|| basic_format_error(&text));
    }
    if let Some(value) = headers.get(DATE) {
        let text = String::from_utf8_lossy(value.as_bytes());
        return parse_http_date(&text)
            .map(Some)
            .ok_or_else(|| basic_format_error(&text));
    }
    Ok(None)
}

#[derive(Default)]
struct AuthorizationParameters<'a> {
    credential: Option<&'a str>,
    signed_headers: Option<&'a str>,
    signature: Option<&'a str>,
}

/// Splits `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
///
/// AWS splits the parameters on commas and whitespace alike, which is why a
/// stray space after `Credential=` is reported as a pair without `=`.
fn parse_authorization(text: &str) -> Result<AuthorizationParameters<'_>, VerifyError> {
    let mut parameters = AuthorizationParameters::default();
    let Some(rest) = text.strip_prefix(ALGORITHM) else {
        // Another scheme (`Bearer`, SigV2's `AWS`, SigV4a) carries none of our
        // parameters; the caller reports each one as required.
        return Ok(parameters);
    };
    if !rest.is_empty() && !rest.starts_with([' ', '\t', ',']) {
        return Ok(parameters);
    }
    let tokens = rest
        .split([',', ' ', '\t'])
        .filter(|token| !token.is_empty());
    for token in tokens {
        let Some((key, value)) = token.split_once('=') else {
            return Err(VerifyError::incomplete(format!(
                "'{token}' not a valid key=value pair (missing equal-sign) in Authorization \
                 header: '{text}'."
            )));
        };
        let slot = match key {
            "Credential" => &mut parameters.credential,
            "SignedHeaders" => &mut parameters.signed_headers,
            "Signature" => &mut parameters.signature,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    Ok(parameters)
}

/// The `X-Amz-*` parameters of a presigned URL, still percent-encoded.
#[derive(Default)]
struct QueryAuthParameters<'a> {
    algorithm: Option<&'a str>,
    credential: Option<&'a str>,
    date: Option<&'a str>,
    expires: Option<&'a str>,
    signed_headers: Option<&'a str>,
    signature: Option<&'a str>,
}

impl<'a> QueryAuthParameters<'a> {
    fn find(raw_query: &'a str) -> Self {
        let mut found = Self::default();
        if raw_query.is_empty() {
            return found;
        }
        for parameter in raw_query.split('&') {
            let (raw_key, raw_value) = parameter.split_once('=').unwrap_or((parameter, ""));
            let key = percent_decode_query(raw_key);
            let slot = match &*key {
                b"X-Amz-Algorithm" => &mut found.algorithm,
                b"X-Amz-Credential" => &mut found.credential,
                b"X-Amz-Date" => &mut found.date,
                b"X-Amz-Expires" => &mut found.expires,
                b"X-Amz-SignedHeaders" => &mut found.signed_headers,
                key if key == SIGNATURE_QUERY_PARAMETER.as_bytes() => &mut found.signature,
                _ => continue,
            };
            slot.get_or_insert(raw_value);
        }
        found
    }

    /// A request is a presigned-URL attempt once it names the algorithm, a
    /// credential or a signature in its query; `X-Amz-Date` alone is an
    /// ordinary parameter some APIs take.
    fn is_present(&self) -> bool {
        self.algorithm.is_some() || self.credential.is_some() || self.signature.is_some()
    }
}

fn decode_query_value(raw: &str) -> Result<Cow<'_, str>, VerifyError> {
    match percent_decode_query(raw) {
        Cow::Borrowed(_) => Ok(Cow::Borrowed(raw)),
        Cow::Owned(bytes) => String::from_utf8(bytes).map(Cow::Owned).map_err(|_| {
            VerifyError::incomplete(format!(
                "Query-string parameter '{raw}' is not valid UTF-8."
            ))
        }),
    }
}

/// `AKID/20150830/us-east-1/service/aws4_request`, split.
struct CredentialScope<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

impl<'a> CredentialScope<'a> {
    fn parse(credential: &'a str) -> Result<Self, VerifyError> {
        let mut elements = credential.split('/');
        let (Some(access_key_id), Some(date), Some(region), Some(service), Some(terminator), None) = (
            elements.next(),
            elements.next(),
            elements.next(),
            elements.next(),
            elements.next(),
            elements.next(),
        ) else {
            return Err(VerifyError::incomplete(format!(
                "Credential must have exactly 5 slash-delimited elements, e.g. \
                 keyid/date/region/service/term, got '{credential}'"
            )));
        };
        if terminator != SCOPE_TERMINATOR {
            return Err(VerifyError::incomplete(format!(
                "Credential should be scoped with a valid terminator: '{SCOPE_TERMINATOR}', not \
                 '{terminator}'."
            )));
        }
        if !is_valid_scope_name(region) {
            return Err(VerifyError::incomplete(format!(
                "Credential should be scoped to a valid region, not '{region}'."
            )));
        }
        if !is_valid_scope_name(service) {
            return Err(VerifyError::incomplete(format!(
                "Credential should be scoped to a valid service, not '{service}'."
            )));
        }
        Ok(Self {
            access_key_id,
            date,
            region,
            service,
        })
    }
}

/// Region and service names are lowercase words joined by hyphens. Checking
/// the alphabet here keeps odd bytes out of the signing-key cache.
fn is_valid_scope_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SCOPE_ELEMENT_LEN
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"abcd", b"abcd"));
        assert!(!constant_time_eq(b"abcd", b"abce"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn authorization_parameters_split_on_commas_and_spaces() {
        let parsed = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/ecs/aws4_request,\
             SignedHeaders=host;x-amz-date,   Signature=abc",
        )
        .expect("well formed");
        assert_eq!(
            parsed.credential,
            Some("AKID/20150830/us-east-1/ecs/aws4_request")
        );
        assert_eq!(parsed.signed_headers, Some("host;x-amz-date"));
        assert_eq!(parsed.signature, Some("abc"));

        let other_scheme = parse_authorization("Bearer abc=def").expect("ignored");
        assert!(other_scheme.credential.is_none());
        let sigv4a = parse_authorization("AWS4-ECDSA-P256-SHA256 Credential=x").expect("ignored");
        assert!(sigv4a.credential.is_none());
        let glued = parse_authorization("AWS4-HMAC-SHA256Credential=x").expect("ignored");
        assert!(glued.credential.is_none());
    }

    #[test]
    fn credential_scope_rejects_malformed_scopes() {
        assert!(CredentialScope::parse("AKID/20150830/us-east-1/ecs/aws4_request").is_ok());
        for credential in [
            "",
            "AKID",
            "AKID/20150830/us-east-1/ecs",
            "AKID/20150830/us-east-1/ecs/aws4_request/extra",
            "AKID/20150830/us-east-1/ecs/aws5_request",
            "AKID/20150830/US-EAST-1/ecs/aws4_request",
            "AKID/20150830//ecs/aws4_request",
            "AKID/20150830/us-east-1/e cs/aws4_request",
        ] {
            assert!(
                matches!(
                    CredentialScope::parse(credential),
                    Err(VerifyError::IncompleteSignature { .. })
                ),
                "{credential:?}"
            );
        }
    }
}
