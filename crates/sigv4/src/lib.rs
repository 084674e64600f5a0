//! AWS Signature Version 4, both directions.
//!
//! - [`verify`] authenticates a request at the HTTP edge and, when it fails,
//!   says which AWS error to answer with ([`VerifyError::aws_error_code`],
//!   [`VerifyError::aws_message`], [`VerifyError::http_status`]).
//! - [`sign`] and [`presign_url`] sign requests for our own clients.
//!
//! Both directions share one canonicalization (see `canonical.rs` for the
//! pipeline), so whatever we sign we also verify, and both agree with botocore
//! and the AWS SigV4 test suite for non-S3 services.
//!
//! **Architecture invariant:** no I/O and no clock. The caller passes the
//! request's parts, the body's SHA-256 and `now` as Unix seconds; the crate
//! never reads the wall clock, the network or the disk.
//!
//! **API boundary:** only SigV4 with `AWS4-HMAC-SHA256`: the non-S3 path
//! rules (normalize, then encode again) and, for the signing name `s3`,
//! S3's (the path as it is, encoded once; [`verify_s3`] with its payload
//! modes, and [`ChunkSignatures`] for `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`
//! bodies). Not here: SigV4a, the check of a session token issued by STS
//! (an `x-amz-security-token` header is signed like any other header; the
//! caller, which knows the session, compares it), and the check that region
//! and service are ours, which the caller makes on [`Verified`].

#![forbid(unsafe_code)]

mod canonical;
mod credentials;
mod sign;
mod time;
mod verify;

use http::{HeaderMap, Method};
use sha2::{Digest, Sha256};

pub use credentials::{
    AccessKeys, Credentials, CredentialsError, SigningSecret, MAX_CREDENTIALS,
    MAX_SCOPE_ELEMENT_LEN, SIGNING_KEYS_PER_CREDENTIAL,
};
pub use sign::{presign_url, sign, PayloadSigning, SignatureHeaders, SigningError, SigningParams};
pub use verify::{
    verify, verify_s3, AuthLocation, ChunkSignatures, PayloadCoverage, S3Payload, Verified,
    VerifyError,
};

/// The only algorithm SigV4 (as opposed to SigV4a) defines.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The last element of every credential scope.
pub const SCOPE_TERMINATOR: &str = "aws4_request";

/// The payload hash a client sends when it does not sign the body.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// SHA-256 of the empty body, the payload hash of every GET.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// How far the signing time may be from the server's clock for header
/// signatures: five minutes, the figure AWS JSON services report in
/// "Signature expired: ... (... - 5 min.)".
pub const CLOCK_SKEW_TOLERANCE_SECONDS: u64 = 5 * 60;

/// Longest lifetime of a presigned URL: seven days, AWS's limit, because a
/// signing key is only valid for that long.
pub const MAX_PRESIGNED_EXPIRES_SECONDS: u64 = 7 * 24 * 60 * 60;

pub(crate) const X_AMZ_DATE: &str = "x-amz-date";
pub(crate) const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";

/// The parts of an HTTP request that a SigV4 signature covers.
#[derive(Clone, Copy, Debug)]
pub struct RequestParts<'a> {
    pub method: &'a Method,
    /// The path exactly as on the wire, still percent-encoded (`Uri::path()`).
    pub path: &'a str,
    /// The raw query string without `?`, empty when there is none.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    /// Lowercase hex SHA-256 of the body as received (or to be sent); see [`sha256_hex`].
    pub body_sha256_hex: &'a str,
}

impl<'a> RequestParts<'a> {
    /// Borrows method, path, query and headers from an `http` request head.
    pub fn from_http(parts: &'a http::request::Parts, body_sha256_hex: &'a str) -> Self {
        Self {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            body_sha256_hex,
        }
    }
}

/// A lowercase hex SHA-256, held inline so hashing a body allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sha256Hex([u8; 64]);

impl Sha256Hex {
    pub fn as_str(&self) -> &str {
        // Hex digits are ASCII, so the conversion cannot fail.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for Sha256Hex {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl std::fmt::Display for Sha256Hex {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The body hash [`RequestParts::body_sha256_hex`] wants.
pub fn sha256_hex(body: &[u8]) -> Sha256Hex {
    let mut hex_digest = [0u8; 64];
    // The buffer is exactly twice the digest length, so this cannot fail.
    let _ = hex::encode_to_slice(Sha256::digest(body), &mut hex_digest);
    Sha256Hex(hex_digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_of_empty_body_is_the_well_known_constant() {
        assert_eq!(sha256_hex(b"").as_str(), EMPTY_PAYLOAD_SHA256);
        assert_eq!(
            sha256_hex(b"Param1=value1").as_str(),
            "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        );
    }
}
