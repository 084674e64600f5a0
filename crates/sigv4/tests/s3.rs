//! S3's signing rules, checked against the worked example of AWS's
//! documentation for `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` ("Signature
//! calculations for the Authorization header: transferring payload in
//! multiple chunks"), and round trips through our own signer.

use flotilla_sigv4::{
    sha256_hex, sign, verify_s3, Credentials, PayloadSigning, RequestParts, S3Payload,
    SigningParams, VerifyError,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// 2013-05-24T00:00:00Z, the example's date.
const EXAMPLE_NOW: u64 = 1_369_353_600;

fn credentials() -> Credentials {
    Credentials::from_pairs([(ACCESS_KEY_ID, SECRET_ACCESS_KEY)]).expect("valid")
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    map
}

#[test]
fn chunk_signatures_match_the_documented_example() {
    let seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20130524/us-east-1/s3/aws4_request,\
         SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;\
         x-amz-decoded-content-length;x-amz-storage-class,Signature={seed}"
    );
    let map = headers(&[
        ("host", "s3.amazonaws.com"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("authorization", &authorization),
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("content-length", "66824"),
    ]);
    let request = RequestParts {
        method: &Method::PUT,
        path: "/examplebucket/chunkObject.txt",
        query: "",
        headers: &map,
        body_sha256_hex: "",
    };
    let (verified, payload) = verify_s3(&request, &credentials(), EXAMPLE_NOW).expect("verifies");
    assert_eq!(verified.service, "s3");
    let S3Payload::SignedChunks(mut chunks) = payload else {
        panic!("expected signed chunks, got {payload:?}");
    };
    let first = sha256_hex(&[b'a'; 65_536]);
    let second = sha256_hex(&[b'a'; 1_024]);
    let last = sha256_hex(b"");
    // A wrong signature is refused and does not advance the chain.
    assert!(!chunks.verify_chunk(first.as_str(), &"0".repeat(64)));
    assert!(chunks.verify_chunk(
        first.as_str(),
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
    ));
    assert!(chunks.verify_chunk(
        second.as_str(),
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
    ));
    assert!(chunks.verify_chunk(
        last.as_str(),
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
    ));
}

fn signed_get(path: &str, payload: PayloadSigning) -> HeaderMap {
    let mut map = headers(&[("host", "127.0.0.1:4566")]);
    let body_hash = sha256_hex(b"");
    let parts = RequestParts {
        method: &Method::GET,
        path,
        query: "list-type=2&prefix=a%2Fb",
        headers: &map,
        body_sha256_hex: body_hash.as_str(),
    };
    let params = SigningParams {
        access_key_id: ACCESS_KEY_ID,
        secret_access_key: SECRET_ACCESS_KEY,
        region: "us-east-1",
        service: "s3",
    };
    sign(&parts, &params, payload, EXAMPLE_NOW)
        .expect("signs")
        .insert_into(&mut map);
    map
}

#[test]
fn s3_paths_are_signed_as_they_are_not_normalized() {
    let path = "/bucket/a//b/../c%20d~e";
    let map = signed_get(path, PayloadSigning::SignedWithContentSha256Header);
    let request = RequestParts {
        method: &Method::GET,
        path,
        query: "list-type=2&prefix=a%2Fb",
        headers: &map,
        body_sha256_hex: "",
    };
    let (_, payload) = verify_s3(&request, &credentials(), EXAMPLE_NOW).expect("verifies");
    assert!(matches!(payload, S3Payload::Sha256(hash) if hash == sha256_hex(b"").as_str()));
    // The same key written `%7E` instead of `~` is the same canonical path.
    let request = RequestParts {
        path: "/bucket/a//b/../c%20d%7Ee",
        ..request
    };
    verify_s3(&request, &credentials(), EXAMPLE_NOW).expect("verifies");
    // Normalizing it would be a different path.
    let request = RequestParts {
        path: "/bucket/a/c%20d~e",
        ..request
    };
    assert!(matches!(
        verify_s3(&request, &credentials(), EXAMPLE_NOW),
        Err(VerifyError::SignatureDoesNotMatch { .. })
    ));
}

#[test]
fn s3_requires_and_checks_the_content_sha256_header() {
    let map = signed_get("/bucket", PayloadSigning::Signed);
    let request = RequestParts {
        method: &Method::GET,
        path: "/bucket",
        query: "list-type=2&prefix=a%2Fb",
        headers: &map,
        body_sha256_hex: "",
    };
    let error = verify_s3(&request, &credentials(), EXAMPLE_NOW).expect_err("refused");
    assert_eq!(error, VerifyError::MissingContentSha256);
    assert_eq!(error.s3_error().0, "InvalidRequest");

    let mut map = signed_get("/bucket", PayloadSigning::Unsigned);
    let unsigned = RequestParts {
        headers: &map,
        ..request
    };
    let (_, payload) = verify_s3(&unsigned, &credentials(), EXAMPLE_NOW).expect("verifies");
    assert!(matches!(payload, S3Payload::Unsigned));
    map.insert(
        "x-amz-content-sha256",
        HeaderValue::from_static("SOMETHING"),
    );
    let request = RequestParts {
        headers: &map,
        ..request
    };
    let error = verify_s3(&request, &credentials(), EXAMPLE_NOW).expect_err("refused");
    assert_eq!(error.s3_error().0, "InvalidArgument");
}
