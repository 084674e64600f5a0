//! Every way verification fails, with the AWS code, status and message the
//! edge will send, plus tampering and round trips through our own signer.

mod support;

use flotilla_sigv4::{
    presign_url, sign, verify, AuthLocation, PayloadCoverage, PayloadSigning, SigningError,
    VerifyError, EMPTY_PAYLOAD_SHA256, MAX_PRESIGNED_EXPIRES_SECONDS,
};
use http::StatusCode;
use support::{
    example_credentials, example_signing_params, OwnedRequest, EXAMPLE_NOW_UNIX_SECONDS,
};

/// 2026-11-21T00:00:00Z.
const NOW: u64 = 1_795_219_200;

const ECS_CALL: &str = "POST / HTTP/1.1\n\
    Host:127.0.0.1:7070\n\
    X-Amz-Target:AmazonEC2ContainerServiceV20141113.ListClusters\n\
    Content-Type:application/x-amz-json-1.1\n\
    \n\
    {\"maxResults\": 10}";

/// An ECS call signed by our signer at `signed_at`.
fn signed_ecs_call(signed_at: u64) -> OwnedRequest {
    let mut request = OwnedRequest::parse(ECS_CALL);
    sign(
        &request.parts(),
        &example_signing_params(),
        PayloadSigning::Signed,
        signed_at,
    )
    .expect("signs")
    .insert_into(&mut request.headers);
    request
}

fn presigned_get(signed_at: u64, expires_seconds: u64) -> OwnedRequest {
    let mut request = OwnedRequest::parse("GET /?cluster=default HTTP/1.1\nHost:127.0.0.1:7070");
    let target = presign_url(
        &request.parts(),
        &example_signing_params(),
        expires_seconds,
        signed_at,
    )
    .expect("presigns");
    request.set_target(&target);
    request
}

/// Asserts the full answer the edge would give.
fn assert_rejected(request: &OwnedRequest, now: u64, code: &str, message: &str) -> VerifyError {
    let error = verify(&request.parts(), &example_credentials(), now)
        .expect_err("request must be rejected");
    assert_eq!(error.aws_error_code(), code, "{error:?}");
    assert_eq!(error.aws_message(), message, "{error:?}");
    assert_eq!(error.http_status(), StatusCode::BAD_REQUEST);
    error
}

const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the \
    signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
    service documentation for details.";

#[test]
fn round_trip_through_our_signer() {
    let request = signed_ecs_call(NOW);
    let verified = verify(&request.parts(), &example_credentials(), NOW).expect("verifies");
    assert_eq!(verified.access_key_id, "AKIDEXAMPLE");
    assert_eq!(verified.service, "service");
    assert_eq!(verified.location, AuthLocation::AuthorizationHeader);
    assert_eq!(verified.payload, PayloadCoverage::Signed);
    assert_eq!(
        verified.signed_headers,
        "content-type;host;x-amz-date;x-amz-target"
    );
}

#[test]
fn missing_authentication() {
    let request = OwnedRequest::parse(ECS_CALL);
    let error = assert_rejected(
        &request,
        NOW,
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    );
    assert_eq!(error, VerifyError::MissingAuthenticationToken);

    // X-Amz-Date alone in the query is an ordinary parameter, not a presigned URL.
    let mut with_date_only = request.clone();
    with_date_only.query = "X-Amz-Date=20261121T000000Z".to_owned();
    assert_eq!(
        verify(&with_date_only.parts(), &example_credentials(), NOW),
        Err(VerifyError::MissingAuthenticationToken)
    );
}

#[test]
fn malformed_authorization_headers() {
    let cases = [
        (
            "Bearer eyJhbGciOi",
            "Authorization header requires 'Credential' parameter. Authorization header requires \
             'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. \
             Authorization=Bearer eyJhbGciOi",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261121/us-east-1/service/aws4_request",
            "Authorization header requires 'Signature' parameter. Authorization header requires \
             'SignedHeaders' parameter. Authorization=AWS4-HMAC-SHA256 \
             Credential=AKIDEXAMPLE/20261121/us-east-1/service/aws4_request",
        ),
        (
            "AWS4-HMAC-SHA256 Credential= AKIDEXAMPLE/20261121/us-east-1/service/aws4_request, \
             SignedHeaders=host, Signature=00",
            "'AKIDEXAMPLE/20261121/us-east-1/service/aws4_request' not a valid key=value pair \
             (missing equal-sign) in Authorization header: 'AWS4-HMAC-SHA256 Credential= \
             AKIDEXAMPLE/20261121/us-east-1/service/aws4_request, SignedHeaders=host, \
             Signature=00'.",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261121/us-east-1/service, \
             SignedHeaders=host, Signature=00",
            "Credential must have exactly 5 slash-delimited elements, e.g. \
             keyid/date/region/service/term, got 'AKIDEXAMPLE/20261121/us-east-1/service'",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261121/us-east-1/service/aws5_request, \
             SignedHeaders=host, Signature=00",
            "Credential should be scoped with a valid terminator: 'aws4_request', not \
             'aws5_request'.",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261121/us-east-1/service/aws4_request, \
             SignedHeaders=content-type;x-amz-date, Signature=00",
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ),
    ];
    for (authorization, message) in cases {
        let mut request = OwnedRequest::parse(ECS_CALL);
        request.set_header("x-amz-date", "20261121T000000Z");
        request.set_header("authorization", authorization);
        assert_rejected(&request, NOW, "IncompleteSignatureException", message);
    }
}

#[test]
fn missing_or_malformed_date() {
    let mut request = signed_ecs_call(NOW);
    let authorization = request.headers["authorization"]
        .to_str()
        .expect("ascii")
        .to_owned();
    request.headers.remove("x-amz-date");
    assert_rejected(
        &request,
        NOW,
        "IncompleteSignatureException",
        &format!(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
             header. Authorization={authorization}"
        ),
    );
    request.set_header("x-amz-date", "2026-11-21T00:00:00Z");
    assert_rejected(
        &request,
        NOW,
        "IncompleteSignatureException",
        "Date must be in ISO-8601 'basic format'. Got '2026-11-21T00:00:00Z'. See \
         http://en.wikipedia.org/wiki/ISO_8601",
    );
}

#[test]
fn unknown_access_key() {
    let mut request = OwnedRequest::parse(ECS_CALL);
    let mut params = example_signing_params();
    params.access_key_id = "AKIDUNKNOWN";
    sign(&request.parts(), &params, PayloadSigning::Signed, NOW)
        .expect("signs")
        .insert_into(&mut request.headers);
    let error = assert_rejected(
        &request,
        NOW,
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    );
    assert_eq!(
        error,
        VerifyError::UnrecognizedClient {
            access_key_id: "AKIDUNKNOWN".to_owned()
        }
    );
}

#[test]
fn wrong_secret() {
    let mut request = OwnedRequest::parse(ECS_CALL);
    let mut params = example_signing_params();
    params.secret_access_key = "not-the-secret";
    sign(&request.parts(), &params, PayloadSigning::Signed, NOW)
        .expect("signs")
        .insert_into(&mut request.headers);
    let error = assert_rejected(
        &request,
        NOW,
        "InvalidSignatureException",
        SIGNATURE_MISMATCH,
    );
    let VerifyError::SignatureDoesNotMatch {
        canonical_request,
        string_to_sign,
        ..
    } = error
    else {
        panic!("expected a signature mismatch, got {error:?}");
    };
    assert_eq!(
        canonical_request,
        "POST\n/\n\ncontent-type:application/x-amz-json-1.1\nhost:127.0.0.1:7070\n\
         x-amz-date:20261121T000000Z\n\
         x-amz-target:AmazonEC2ContainerServiceV20141113.ListClusters\n\n\
         content-type;host;x-amz-date;x-amz-target\n\
         f25de1706a650264c1de625e357f269543bd26ef04e5b5b00ae7d579a9082254"
    );
    assert!(string_to_sign.starts_with(
        "AWS4-HMAC-SHA256\n20261121T000000Z\n20261121/us-east-1/service/aws4_request\n"
    ));
}

#[test]
fn tampered_requests_fail_the_signature() {
    let original = signed_ecs_call(NOW);
    let mut tampered_body = original.clone();
    tampered_body.set_body(b"{\"maxResults\": 100}");
    let mut tampered_header = original.clone();
    tampered_header.set_header(
        "x-amz-target",
        "AmazonEC2ContainerServiceV20141113.DeleteCluster",
    );
    let mut tampered_query = original.clone();
    tampered_query.query = "cluster=other".to_owned();
    let mut tampered_path = original.clone();
    tampered_path.path = "/other".to_owned();
    let mut tampered_method = original.clone();
    tampered_method.method = http::Method::PUT;
    let mut tampered_host = original.clone();
    tampered_host.set_header("host", "127.0.0.1:7071");
    let mut truncated_signature = original.clone();
    let authorization = original.headers["authorization"].to_str().expect("ascii");
    truncated_signature.set_header("authorization", &authorization[..authorization.len() - 1]);
    let mut uppercase_signature = original.clone();
    let (prefix, signature) = authorization.rsplit_once("Signature=").expect("signature");
    uppercase_signature.set_header(
        "authorization",
        &format!("{prefix}Signature={}", signature.to_ascii_uppercase()),
    );
    for tampered in [
        tampered_body,
        tampered_header,
        tampered_query,
        tampered_path,
        tampered_method,
        tampered_host,
        truncated_signature,
        uppercase_signature,
    ] {
        assert_rejected(
            &tampered,
            NOW,
            "InvalidSignatureException",
            SIGNATURE_MISMATCH,
        );
    }

    // Headers outside the signed list may change freely.
    let mut unsigned_header_changed = original.clone();
    unsigned_header_changed.set_header("user-agent", "something-else/1.0");
    verify(
        &unsigned_header_changed.parts(),
        &example_credentials(),
        NOW,
    )
    .expect("still valid");
}

#[test]
fn clock_skew_beyond_five_minutes() {
    let request = signed_ecs_call(NOW);
    let error = assert_rejected(
        &request,
        NOW + 301,
        "InvalidSignatureException",
        "Signature expired: 20261121T000000Z is now earlier than 20261121T000001Z \
         (20261121T000501Z - 5 min.)",
    );
    assert!(matches!(error, VerifyError::SignatureExpired { .. }));
    assert_rejected(
        &request,
        NOW - 301,
        "InvalidSignatureException",
        "Signature not yet current: 20261121T000000Z is still later than 20261120T235959Z \
         (20261120T235459Z + 5 min.)",
    );
    verify(&request.parts(), &example_credentials(), NOW + 300).expect("edge of the window");
    verify(&request.parts(), &example_credentials(), NOW - 300).expect("edge of the window");
}

#[test]
fn credential_scope_date_must_match_the_request_date() {
    let mut request = signed_ecs_call(NOW);
    let authorization = request.headers["authorization"].to_str().expect("ascii");
    let moved = authorization.replace("/20261121/", "/20261120/");
    request.set_header("authorization", &moved);
    assert_rejected(
        &request,
        NOW,
        "InvalidSignatureException",
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
         HTTP: '20261120' != '20261121', from '20261121T000000Z'.",
    );
}

#[test]
fn content_sha256_header() {
    // Signed with the header: verifies, and a body changed under it is caught
    // before the signature is even computed.
    let mut request = OwnedRequest::parse(ECS_CALL);
    sign(
        &request.parts(),
        &example_signing_params(),
        PayloadSigning::SignedWithContentSha256Header,
        NOW,
    )
    .expect("signs")
    .insert_into(&mut request.headers);
    verify(&request.parts(), &example_credentials(), NOW).expect("verifies");
    request.set_body(b"{}");
    assert_rejected(
        &request,
        NOW,
        "InvalidSignatureException",
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    );

    // UNSIGNED-PAYLOAD verifies whatever the body, and says so.
    let mut unsigned = OwnedRequest::parse(ECS_CALL);
    sign(
        &unsigned.parts(),
        &example_signing_params(),
        PayloadSigning::Unsigned,
        NOW,
    )
    .expect("signs")
    .insert_into(&mut unsigned.headers);
    unsigned.set_body(b"{\"anything\": true}");
    let verified = verify(&unsigned.parts(), &example_credentials(), NOW).expect("verifies");
    assert_eq!(verified.payload, PayloadCoverage::Unsigned);
}

#[test]
fn both_mechanisms_at_once_are_refused() {
    let presigned = presigned_get(NOW, 60);
    let mut both = presigned.clone();
    let signed = signed_ecs_call(NOW);
    both.headers
        .insert("authorization", signed.headers["authorization"].clone());
    assert_rejected(
        &both,
        NOW,
        "IncompleteSignatureException",
        "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature \
         query string parameter or the Authorization header should be specified",
    );
}

#[test]
fn presigned_url_round_trip_and_expiry() {
    let request = presigned_get(NOW, 60);
    let verified = verify(&request.parts(), &example_credentials(), NOW + 60).expect("verifies");
    assert_eq!(
        verified.location,
        AuthLocation::PresignedUrl {
            expires_at_unix_seconds: NOW + 60
        }
    );
    assert_eq!(verified.signed_headers, "host");

    let error = assert_rejected(
        &request,
        NOW + 61,
        "InvalidSignatureException",
        "Request has expired",
    );
    assert_eq!(
        error,
        VerifyError::PresignedUrlExpired {
            expired_at_unix_seconds: NOW + 60,
            now_unix_seconds: NOW + 61
        }
    );
    // A presigned URL from the future is refused like a header signature.
    assert_rejected(
        &request,
        NOW - 301,
        "InvalidSignatureException",
        "Signature not yet current: 20261121T000000Z is still later than 20261120T235959Z \
         (20261120T235459Z + 5 min.)",
    );
    // A week-long URL is still good six days later, far outside the skew window.
    let long_lived = presigned_get(NOW, MAX_PRESIGNED_EXPIRES_SECONDS);
    verify(
        &long_lived.parts(),
        &example_credentials(),
        NOW + 6 * 86_400,
    )
    .expect("verifies");
}

#[test]
fn tampered_presigned_urls() {
    let request = presigned_get(NOW, 60);
    let tampered_queries = [
        request.query.replace("cluster=default", "cluster=other"),
        request
            .query
            .replace("X-Amz-Expires=60", "X-Amz-Expires=600"),
        format!("{}&extra=1", request.query),
    ];
    for query in tampered_queries {
        let mut tampered = request.clone();
        tampered.query = query;
        assert_rejected(
            &tampered,
            NOW,
            "InvalidSignatureException",
            SIGNATURE_MISMATCH,
        );
    }
}

#[test]
fn malformed_presigned_urls() {
    let request = presigned_get(NOW, 60);
    let cases = [
        (
            request
                .query
                .replace("&X-Amz-Expires=60", "")
                .replace("&X-Amz-SignedHeaders=host", ""),
            "AWS query-string parameters must include 'X-Amz-SignedHeaders'. AWS query-string \
             parameters must include 'X-Amz-Expires'. Re-examine the query-string parameters.",
        ),
        (
            request.query.replace(
                "X-Amz-Algorithm=AWS4-HMAC-SHA256",
                "X-Amz-Algorithm=AWS4-HMAC-SHA1",
            ),
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"",
        ),
        (
            request
                .query
                .replace("X-Amz-Expires=60", "X-Amz-Expires=soon"),
            "X-Amz-Expires should be a number",
        ),
        (
            request
                .query
                .replace("X-Amz-Expires=60", "X-Amz-Expires=604801"),
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        ),
        (
            request
                .query
                .replace("X-Amz-Date=20261121T000000Z", "X-Amz-Date=20261121"),
            "Date must be in ISO-8601 'basic format'. Got '20261121'. See \
             http://en.wikipedia.org/wiki/ISO_8601",
        ),
    ];
    for (query, message) in cases {
        let mut malformed = request.clone();
        malformed.query = query;
        assert_rejected(&malformed, NOW, "IncompleteSignatureException", message);
    }
}

#[test]
fn signing_rejects_bad_input() {
    let mut request = OwnedRequest::parse(ECS_CALL);
    request.headers.remove("host");
    assert_eq!(
        sign(
            &request.parts(),
            &example_signing_params(),
            PayloadSigning::Signed,
            NOW
        ),
        Err(SigningError::MissingHost)
    );
    let request = OwnedRequest::parse(ECS_CALL);
    let mut params = example_signing_params();
    params.region = "US East";
    assert!(matches!(
        sign(&request.parts(), &params, PayloadSigning::Signed, NOW),
        Err(SigningError::InvalidScope {
            element: "region",
            ..
        })
    ));
    for expires_seconds in [0, MAX_PRESIGNED_EXPIRES_SECONDS + 1] {
        assert_eq!(
            presign_url(
                &request.parts(),
                &example_signing_params(),
                expires_seconds,
                NOW
            ),
            Err(SigningError::ExpiresOutOfRange { expires_seconds })
        );
    }
    let presigned = presigned_get(NOW, 60);
    assert!(matches!(
        presign_url(&presigned.parts(), &example_signing_params(), 60, NOW),
        Err(SigningError::QueryAlreadySigned { .. })
    ));
}

#[test]
fn signing_is_deterministic_and_resigning_replaces_headers() {
    let mut request = OwnedRequest::parse("GET / HTTP/1.1\nHost:example.amazonaws.com");
    assert_eq!(request.body_sha256.as_str(), EMPTY_PAYLOAD_SHA256);
    let first = sign(
        &request.parts(),
        &example_signing_params(),
        PayloadSigning::Signed,
        EXAMPLE_NOW_UNIX_SECONDS,
    )
    .expect("signs");
    first.clone().insert_into(&mut request.headers);
    // A retry signs the request that already carries the old signature.
    let second = sign(
        &request.parts(),
        &example_signing_params(),
        PayloadSigning::Signed,
        EXAMPLE_NOW_UNIX_SECONDS,
    )
    .expect("signs");
    assert_eq!(first, second);
    second.insert_into(&mut request.headers);
    assert_eq!(request.headers.get_all("authorization").iter().count(), 1);
    verify(
        &request.parts(),
        &example_credentials(),
        EXAMPLE_NOW_UNIX_SECONDS,
    )
    .expect("verifies");
}
