//! Vectors of the AWS SigV4 test suite (the 2015-08-30 suite as AWS's common
//! runtime carries it): credentials AKIDEXAMPLE, region us-east-1, service
//! "service", time 20150830T123600Z. Each case is checked four ways: our
//! header signature, verification of it, our presigned URL (expiry 3600 s),
//! and verification of that.
//!
//! The unnormalized (S3-rule) cases, the session-token cases and the obs-fold
//! multiline header case are left out: this crate does not do S3 paths or
//! session tokens, and `http::HeaderValue` cannot hold a folded line.

mod support;

use flotilla_sigv4::{presign_url, sign, verify, PayloadSigning};
use support::{
    example_credentials, example_signing_params, signature_of, OwnedRequest,
    EXAMPLE_NOW_UNIX_SECONDS,
};

struct SuiteCase {
    name: &'static str,
    request: &'static str,
    /// The suite's `sign_body`: also send and sign `x-amz-content-sha256`.
    sign_body: bool,
    header_signature: &'static str,
    query_signature: &'static str,
}

const PRESIGNED_EXPIRES_SECONDS: u64 = 3600;

fn check(case: &SuiteCase) {
    let name = case.name;
    let request = OwnedRequest::parse(case.request);
    let params = example_signing_params();
    let credentials = example_credentials();
    let payload = if case.sign_body {
        PayloadSigning::SignedWithContentSha256Header
    } else {
        PayloadSigning::Signed
    };

    let headers = sign(&request.parts(), &params, payload, EXAMPLE_NOW_UNIX_SECONDS)
        .unwrap_or_else(|error| panic!("{name}: signing failed: {error}"));
    assert_eq!(
        signature_of(&headers.authorization),
        case.header_signature,
        "{name}: header"
    );
    let mut signed = request.clone();
    headers.insert_into(&mut signed.headers);
    let verified = verify(&signed.parts(), &credentials, EXAMPLE_NOW_UNIX_SECONDS)
        .unwrap_or_else(|error| panic!("{name}: verifying the header signature: {error:?}"));
    assert_eq!(verified.access_key_id, "AKIDEXAMPLE", "{name}");
    assert_eq!(
        (verified.region.as_str(), verified.service.as_str()),
        ("us-east-1", "service")
    );

    let target = presign_url(
        &request.parts(),
        &params,
        PRESIGNED_EXPIRES_SECONDS,
        EXAMPLE_NOW_UNIX_SECONDS,
    )
    .unwrap_or_else(|error| panic!("{name}: presigning failed: {error}"));
    let query_signature = target.rsplit_once("X-Amz-Signature=").expect("signature").1;
    assert_eq!(query_signature, case.query_signature, "{name}: query");
    let mut presigned = request.clone();
    presigned.set_target(&target);
    verify(&presigned.parts(), &credentials, EXAMPLE_NOW_UNIX_SECONDS)
        .unwrap_or_else(|error| panic!("{name}: verifying the presigned url: {error:?}"));
}

#[test]
fn aws_sigv4_test_suite() {
    for case in SUITE {
        check(case);
    }
}

const SUITE: &[SuiteCase] = &[
    SuiteCase {
        name: "get-vanilla",
        request: "GET / HTTP/1.1\nHost:example.amazonaws.com",
        sign_body: false,
        header_signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        query_signature: "e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d",
    },
    SuiteCase {
        name: "get-vanilla-query-order-key-case",
        request: "GET /?Param2=value2&Param1=value1 HTTP/1.1\nHost:example.amazonaws.com",
        sign_body: false,
        header_signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        query_signature: "86012e2c9ad4d77369f5d81c11f75158aae4f895a085212cc6d3f923d300bed5",
    },
    SuiteCase {
        name: "get-vanilla-query-order-encoded",
        request: "GET /?Param-3=Value3&Param=Value2&%E1%88%B4=Value1 HTTP/1.1\n\
                  Host:example.amazonaws.com",
        sign_body: false,
        header_signature: "371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac",
        query_signature: "c5f1848ceec943ac2ca68ee720460c23aaae30a2300586597ada94c4a65e4787",
    },
    SuiteCase {
        name: "get-vanilla-query-unreserved",
        request: "GET /?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=\
                  -._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz HTTP/1.1\n\
                  Host:example.amazonaws.com",
        sign_body: false,
        header_signature: "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
        query_signature: "8e76a88a7433637b12778d5592799b29ad21ecd6cf6325051c21d86f0acda2bf",
    },
    SuiteCase {
        name: "get-vanilla-utf8-query",
        request: "GET /?\u{1234}=bar HTTP/1.1\nHost:example.amazonaws.com",
        sign_body: false,
        header_signature: "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
        query_signature: "0bdd809b1519ac4f0c1dc3540e2cc46bd0c7f778eda408b2ebf3b913d21ff600",
    },
    SuiteCase {
        name: "get-vanilla-empty-query-key",
        request: "GET /?Param1=value1 HTTP/1.1\nHost:example.amazonaws.com",
        sign_body: false,
        header_signature: "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb",
        query_signature: "49096700cbbaa5753443850f40df10f904fc2fdb544dc9512203cc77c471a9de",
    },
    SuiteCase {
        name: "get-utf8",
        request: "GET /\u{1234} HTTP/1.1\nHost:example.amazonaws.com",
        sign_body: false,
        header_signature: "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        query_signature: "10eae3f14a260bd3911cc6d008d3c576d143b05b62f09782a7a4b37f52178e44",
    },
    SuiteCase {
        name: "get-unreserved",
        request: "GET /-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz \
                  HTTP/1.1\nHost:example.amazonaws.com",
        sign_body: false,
        header_signature: "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
        query_signature: "95968482db1b9e0fadef6efc1bd24689f77c77d9ef56919c96a28cc92e0d6005",
    },
    SuiteCase {
        name: "get-space-normalized",
        request: "GET /example space/ HTTP/1.1\nHost:example.amazonaws.com",
        sign_body: false,
        header_signature: "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
        query_signature: "7a1f416954786484c9824d93c1f26ef64acb9b1b6c9154d08c9f07d0e394abf6",
    },
    SuiteCase {
        name: "get-slashes-normalized",
        request: "GET //example// HTTP/1.1\nHost:example.amazonaws.com",
        sign_body: false,
        header_signature: "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
        query_signature: "c1834e8fb0307243711f0f907f6ab7311ed300d87f13792d7ee4da89ab93e082",
    },
    SuiteCase {
        name: "get-relative-relative-normalized",
        request: "GET /example1/example2/../.. HTTP/1.1\nHost:example.amazonaws.com",
        sign_body: false,
        header_signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        query_signature: "e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d",
    },
    SuiteCase {
        name: "get-slash-pointless-dot-normalized",
        request: "GET /./example HTTP/1.1\nHost:example.amazonaws.com",
        sign_body: false,
        header_signature: "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5",
        query_signature: "35034b1a0bdd969f346975386daf8aedfd4976573b8348cf4f67eaa41c5857de",
    },
    SuiteCase {
        name: "get-header-key-duplicate",
        request: "GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value2\n\
                  My-Header1:value2\nMy-Header1:value1",
        sign_body: false,
        header_signature: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
        query_signature: "3349ee0b81b4b589da0ff28a395c3591e04de515651dd74f298fa992d1507a97",
    },
    SuiteCase {
        name: "get-header-value-order",
        request: "GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value4\n\
                  My-Header1:value1\nMy-Header1:value3\nMy-Header1:value2",
        sign_body: false,
        header_signature: "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
        query_signature: "313720e71ca6202fdcfa9b20f88de01a4eb0638a83c833b1c184359a4eda864e",
    },
    SuiteCase {
        name: "get-header-value-trim",
        request: "GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1: value1\n\
                  My-Header2: \"a   b   c\"",
        sign_body: false,
        header_signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        query_signature: "e7bb0fd515e125e1aec2ecc4c0c17484fb06f6846b927c35e46005dd3df3acd4",
    },
    SuiteCase {
        name: "post-vanilla",
        request: "POST / HTTP/1.1\nHost:example.amazonaws.com",
        sign_body: false,
        header_signature: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        query_signature: "2ce6e6d2e0cf2f9d1b55fafec88cd20574c31dc2e7631979f71ba2310083e95b",
    },
    SuiteCase {
        name: "post-header-key-sort",
        request: "POST / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value1",
        sign_body: false,
        header_signature: "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
        query_signature: "c09d07e0d55871f10f2a6d350d994acf6825a3cae70673d7def55616e6119dd7",
    },
    SuiteCase {
        name: "post-header-value-case",
        request: "POST / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:VALUE1",
        sign_body: false,
        header_signature: "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
        query_signature: "0698bc9e4f7f9139065ba2909c0e99da257e8e2a42492a097bcd46d792391fed",
    },
    SuiteCase {
        name: "post-vanilla-query",
        request: "POST /?Param1=value1 HTTP/1.1\nHost:example.amazonaws.com",
        sign_body: false,
        header_signature: "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
        query_signature: "a9ef26247f293bffe40eeff86a0480ba8c14d31503b2e0c3399e3a16bf1a3682",
    },
    SuiteCase {
        name: "post-x-www-form-urlencoded",
        request: "POST / HTTP/1.1\nContent-Type:application/x-www-form-urlencoded\n\
                  Host:example.amazonaws.com\nContent-Length:13\n\nParam1=value1",
        sign_body: true,
        header_signature: "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
        query_signature: "89a40deed0f26f9461242825a082d2222717248abc7ab41f552ad84a94ad46e9",
    },
    SuiteCase {
        name: "post-x-www-form-urlencoded-parameters",
        request: "POST / HTTP/1.1\nContent-Type:application/x-www-form-urlencoded; charset=utf-8\n\
                  Host:example.amazonaws.com\nContent-Length:13\n\nParam1=value1",
        sign_body: true,
        header_signature: "328d1b9eaadca9f5818ef05e8392801e091653bafec24fcab71e7344e7f51422",
        query_signature: "0dbeb9b026c7b6675f266b8427efec9b4fa8b1f6ef1477d717aea231106eab4d",
    },
];

/// The first edition of the suite signed form posts without
/// `x-amz-content-sha256` or `content-length`; its Authorization header, taken
/// as a client would send it, must verify as well.
#[test]
fn first_edition_form_post_verifies() {
    let request = OwnedRequest::parse(
        "POST / HTTP/1.1\nContent-Type:application/x-www-form-urlencoded\n\
         Host:example.amazonaws.com\nX-Amz-Date:20150830T123600Z\n\
         Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/\
         aws4_request, SignedHeaders=content-type;host;x-amz-date, \
         Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a\n\n\
         Param1=value1",
    );
    let verified = verify(
        &request.parts(),
        &example_credentials(),
        EXAMPLE_NOW_UNIX_SECONDS,
    )
    .expect("first-edition vector verifies");
    assert_eq!(verified.signed_headers, "content-type;host;x-amz-date");
}
