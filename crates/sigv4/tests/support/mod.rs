//! Shared helpers: requests written as HTTP text, parsed into the parts SigV4 sees.

#![allow(dead_code)]

use flotilla_sigv4::{sha256_hex, Credentials, RequestParts, Sha256Hex};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// The example credentials of the AWS SigV4 documentation and test suite.
pub const EXAMPLE_ACCESS_KEY_ID: &str = "AKIDEXAMPLE";
pub const EXAMPLE_SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// 2015-08-30T12:36:00Z, the test suite's signing time.
pub const EXAMPLE_NOW_UNIX_SECONDS: u64 = 1_440_938_160;

/// A request held by value, so tests can build, tamper with and borrow it.
#[derive(Clone, Debug)]
pub struct OwnedRequest {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub body_sha256: Sha256Hex,
}

impl OwnedRequest {
    /// Parses `METHOD target HTTP/1.1`, `Name:value` lines, a blank line and
    /// an optional body. The target is used as written, so it may hold bytes
    /// (spaces, UTF-8) that a real wire would carry percent-encoded.
    pub fn parse(text: &str) -> Self {
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let request_line = lines.next().expect("request line");
        let target = request_line
            .strip_suffix(" HTTP/1.1")
            .and_then(|line| line.split_once(' '))
            .expect("METHOD target HTTP/1.1");
        let (method, target) = target;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut headers = HeaderMap::new();
        for line in lines {
            let (name, value) = line.split_once(':').expect("Name:value header line");
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        Self {
            method: method.parse().expect("method"),
            path: path.to_owned(),
            query: query.to_owned(),
            headers,
            body: body.as_bytes().to_vec(),
            body_sha256: sha256_hex(body.as_bytes()),
        }
    }

    pub fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            body_sha256_hex: self.body_sha256.as_str(),
        }
    }

    pub fn set_body(&mut self, body: &[u8]) {
        self.body = body.to_vec();
        self.body_sha256 = sha256_hex(body);
    }

    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }

    /// Replaces path and query from a request target such as `presign_url` returns.
    pub fn set_target(&mut self, target: &str) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        self.path = path.to_owned();
        self.query = query.to_owned();
    }
}

pub fn example_credentials() -> Credentials {
    Credentials::from_pairs([(EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY)])
        .expect("valid example credentials")
}

pub fn example_signing_params() -> flotilla_sigv4::SigningParams<'static> {
    flotilla_sigv4::SigningParams {
        access_key_id: EXAMPLE_ACCESS_KEY_ID,
        secret_access_key: EXAMPLE_SECRET_ACCESS_KEY,
        region: "us-east-1",
        service: "service",
    }
}

/// The `Signature=` part of an Authorization header value.
pub fn signature_of(authorization: &HeaderValue) -> String {
    let text = authorization.to_str().expect("ascii authorization");
    text.rsplit_once("Signature=")
        .expect("has a signature")
        .1
        .to_owned()
}
