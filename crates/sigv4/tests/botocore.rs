//! Requests exactly as botocore 1.44.5 signed them, captured once with a fixed
//! clock (2026-11-21T00:00:00Z) and embedded here, so that these tests prove
//! compatibility with the AWS CLI and boto3 without Python at test time.
//!
//! How they were made: a botocore ECS client with `endpoint_url`
//! `http://127.0.0.1:7070`, access key `AKIAFLOTILLAEXAMPLE`, secret
//! `flotilla/secret+EXAMPLEKEY/0123456789`, `botocore.auth.get_current_datetime`
//! patched to the fixed time, and a `before-send` hook that printed the
//! request instead of sending it; the presigned URL came from
//! `botocore.auth.SigV4QueryAuth(credentials, "ecs", "us-east-1", expires=300)`.

mod support;

use flotilla_sigv4::{presign_url, sign, verify, Credentials, PayloadSigning, SigningParams};
use support::{example_credentials, signature_of, OwnedRequest};

const ACCESS_KEY_ID: &str = "AKIAFLOTILLAEXAMPLE";
const SECRET_ACCESS_KEY: &str = "flotilla/secret+EXAMPLEKEY/0123456789";
/// 2026-11-21T00:00:00Z.
const SIGNED_AT_UNIX_SECONDS: u64 = 1_795_219_200;

fn credentials() -> Credentials {
    Credentials::from_pairs([(ACCESS_KEY_ID, SECRET_ACCESS_KEY)]).expect("valid credentials")
}

fn signing_params() -> SigningParams<'static> {
    SigningParams {
        access_key_id: ACCESS_KEY_ID,
        secret_access_key: SECRET_ACCESS_KEY,
        region: "us-east-1",
        service: "ecs",
    }
}

/// `aws ecs list-clusters --max-results 10`, headers in botocore's order;
/// Host is the one urllib3 adds on the wire.
const LIST_CLUSTERS: &str = "POST / HTTP/1.1\n\
    Host:127.0.0.1:7070\n\
    X-Amz-Target:AmazonEC2ContainerServiceV20141113.ListClusters\n\
    Content-Type:application/x-amz-json-1.1\n\
    User-Agent:Botocore/1.44.5 ua/2.1 os/linux#6.18.44-fc-v595 md/arch#x86_64 \
    lang/python#3.11.7 md/pyimpl#CPython m/e,E,b,Z,N cfg/retry-mode#standard\n\
    X-Amz-Date:20261121T000000Z\n\
    Authorization:AWS4-HMAC-SHA256 Credential=AKIAFLOTILLAEXAMPLE/20261121/us-east-1/ecs/\
    aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
    Signature=7d1d0e68e7bbf41e5294823e7f9fef077565e58f9b10cd6176e8829626c61582\n\
    amz-sdk-invocation-id:dc8e9b6f-3ad3-4ea1-9080-f4bbb15a8206\n\
    amz-sdk-request:attempt=1; max=3\n\
    Content-Length:18\n\
    \n\
    {\"maxResults\": 10}";

#[test]
fn ecs_json_call_signed_by_botocore_verifies() {
    let request = OwnedRequest::parse(LIST_CLUSTERS);
    let verified = verify(&request.parts(), &credentials(), SIGNED_AT_UNIX_SECONDS)
        .expect("botocore's signature verifies");
    assert_eq!(verified.access_key_id, ACCESS_KEY_ID);
    assert_eq!(verified.region, "us-east-1");
    assert_eq!(verified.service, "ecs");
    assert_eq!(verified.signed_at_unix_seconds, SIGNED_AT_UNIX_SECONDS);
    assert!(verified.is_header_signed("x-amz-target"));
    assert!(verified.is_header_signed("Content-Type"));
    assert!(!verified.is_header_signed("user-agent"));
}

#[test]
fn ecs_json_call_verifies_within_the_skew_window_only() {
    let request = OwnedRequest::parse(LIST_CLUSTERS);
    let five_minutes = 300;
    for now in [
        SIGNED_AT_UNIX_SECONDS - five_minutes,
        SIGNED_AT_UNIX_SECONDS + five_minutes,
    ] {
        verify(&request.parts(), &credentials(), now).expect("inside the window");
    }
    for now in [
        SIGNED_AT_UNIX_SECONDS - five_minutes - 1,
        SIGNED_AT_UNIX_SECONDS + five_minutes + 1,
    ] {
        let error = verify(&request.parts(), &credentials(), now).expect_err("outside");
        assert_eq!(error.aws_error_code(), "InvalidSignatureException");
    }
}

#[test]
fn our_signer_reproduces_botocore_for_the_ecs_call() {
    let mut request = OwnedRequest::parse(LIST_CLUSTERS);
    // Give our signer the headers botocore had when it signed.
    for name in [
        "authorization",
        "x-amz-date",
        "amz-sdk-invocation-id",
        "amz-sdk-request",
    ] {
        request.headers.remove(name);
    }
    request.headers.remove("content-length");
    let headers = sign(
        &request.parts(),
        &signing_params(),
        PayloadSigning::Signed,
        SIGNED_AT_UNIX_SECONDS,
    )
    .expect("signs");
    assert_eq!(
        headers.authorization.to_str().expect("ascii"),
        "AWS4-HMAC-SHA256 Credential=AKIAFLOTILLAEXAMPLE/20261121/us-east-1/ecs/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
         Signature=7d1d0e68e7bbf41e5294823e7f9fef077565e58f9b10cd6176e8829626c61582"
    );
    assert_eq!(headers.x_amz_date, "20261121T000000Z");
    assert_eq!(headers.x_amz_content_sha256, None);
}

/// A GET whose wire path has percent-escapes, dot segments and doubled
/// slashes, and whose query has repeated keys, an empty value and an escaped
/// `+`: botocore's canonical URI was `/v1/some%2520path/%25E1%2588%25B4/x/y`
/// and its canonical query `a=0&a=1&b=2&c=%2B&empty=`.
const AWKWARD_GET: &str =
    "GET /v1/some%20path/%E1%88%B4/./x//y?b=2&a=1&a=0&empty=&c=%2B HTTP/1.1\n\
    Host:127.0.0.1:7070\n\
    My-Header:  a   b  \n\
    X-Amz-Date:20261121T000000Z\n\
    Authorization:AWS4-HMAC-SHA256 Credential=AKIAFLOTILLAEXAMPLE/20261121/us-east-1/ecs/\
    aws4_request, SignedHeaders=host;my-header;x-amz-date, \
    Signature=8b32ef5399e77c48eade4423b6aa504170b9420a22a55a4c104b8bb28c856b9c";

#[test]
fn double_encoded_path_and_messy_query_match_botocore() {
    let request = OwnedRequest::parse(AWKWARD_GET);
    verify(&request.parts(), &credentials(), SIGNED_AT_UNIX_SECONDS).expect("verifies");

    let mut unsigned = request.clone();
    unsigned.headers.remove("authorization");
    unsigned.headers.remove("x-amz-date");
    let headers = sign(
        &unsigned.parts(),
        &signing_params(),
        PayloadSigning::Signed,
        SIGNED_AT_UNIX_SECONDS,
    )
    .expect("signs");
    assert_eq!(
        signature_of(&headers.authorization),
        "8b32ef5399e77c48eade4423b6aa504170b9420a22a55a4c104b8bb28c856b9c"
    );
}

/// botocore's presigned URL for `GET /v1/tasks?cluster=default&note=a b+c~`
/// (its query parser read `+` as a space before re-encoding).
const PRESIGNED_TARGET: &str = "/v1/tasks?cluster=default&note=a%20b%20c~\
    &X-Amz-Algorithm=AWS4-HMAC-SHA256\
    &X-Amz-Credential=AKIAFLOTILLAEXAMPLE%2F20261121%2Fus-east-1%2Fecs%2Faws4_request\
    &X-Amz-Date=20261121T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host\
    &X-Amz-Signature=e538684591d546e2a5a45e862957bdbe00a35e5994aae288961c61654cfca911";

#[test]
fn presigned_url_from_botocore_verifies_until_it_expires() {
    let mut request = OwnedRequest::parse("GET / HTTP/1.1\nHost:127.0.0.1:7070");
    request.set_target(PRESIGNED_TARGET);
    let expires_at = SIGNED_AT_UNIX_SECONDS + 300;
    for now in [SIGNED_AT_UNIX_SECONDS, expires_at] {
        let verified = verify(&request.parts(), &credentials(), now).expect("still valid");
        assert_eq!(
            verified.location,
            flotilla_sigv4::AuthLocation::PresignedUrl {
                expires_at_unix_seconds: expires_at
            }
        );
    }
    let error = verify(&request.parts(), &credentials(), expires_at + 1).expect_err("expired");
    assert_eq!(error.aws_error_code(), "InvalidSignatureException");
    assert_eq!(error.aws_message(), "Request has expired");
}

#[test]
fn our_presigner_reproduces_botocore_byte_for_byte() {
    let mut request = OwnedRequest::parse("GET / HTTP/1.1\nHost:127.0.0.1:7070");
    request.set_target("/v1/tasks?cluster=default&note=a%20b%20c~");
    let target = presign_url(
        &request.parts(),
        &signing_params(),
        300,
        SIGNED_AT_UNIX_SECONDS,
    )
    .expect("presigns");
    assert_eq!(target, PRESIGNED_TARGET);
}

/// When the caller sets `Date`, botocore signs with it (in Python's
/// `formatdate` form, `-0000` zone) and sends no `X-Amz-Date`. Signed with the
/// example credentials.
const SIGNED_WITH_DATE_HEADER: &str = "POST / HTTP/1.1\n\
    Host:127.0.0.1:7070\n\
    X-Amz-Target:AmazonEC2ContainerServiceV20141113.ListClusters\n\
    Content-Type:application/x-amz-json-1.1\n\
    Date:Sat, 21 Nov 2026 00:00:00 -0000\n\
    Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261121/us-east-1/ecs/aws4_request, \
    SignedHeaders=content-type;date;host;x-amz-target, \
    Signature=ae57e28254c03632fe7c4e08e5ec9768c0d32e8f13f109260e2025f00eb1a42a\n\
    Content-Length:18\n\
    \n\
    {\"maxResults\": 10}";

#[test]
fn date_header_stands_in_for_x_amz_date() {
    let request = OwnedRequest::parse(SIGNED_WITH_DATE_HEADER);
    let verified = verify(
        &request.parts(),
        &example_credentials(),
        SIGNED_AT_UNIX_SECONDS,
    )
    .expect("botocore's Date-signed request verifies");
    assert_eq!(verified.signed_at_unix_seconds, SIGNED_AT_UNIX_SECONDS);
    let error = verify(
        &request.parts(),
        &example_credentials(),
        SIGNED_AT_UNIX_SECONDS + 3600,
    )
    .expect_err("an hour later");
    assert_eq!(
        error.aws_message(),
        "Signature expired: 20261121T000000Z is now earlier than 20261121T005500Z \
         (20261121T010000Z - 5 min.)"
    );
}
