//! The canonical request: the one byte string both signer and verifier hash.
//!
//! ```text
//! METHOD \n
//! canonical URI \n            normalized wire path, percent-encoded again (non-S3 rule)
//! canonical query \n          decoded, re-encoded, sorted; X-Amz-Signature left out
//! name:value \n ...  \n       signed headers only, lowercase, trimmed, spaces collapsed
//! signed;header;names \n
//! payload hash                hex SHA-256 of the body, or UNSIGNED-PAYLOAD
//! ```
//!
//! Everything is written through [`Sink`], so verification streams straight
//! into SHA-256 without building the string, while tests and error reports
//! write the same bytes into a `Vec<u8>` to look at them.

use std::borrow::Cow;
use std::ops::Range;

use http::HeaderMap;
use sha2::{Digest, Sha256};

/// Where canonical bytes go: a hash on the hot path, a buffer for humans.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// The query parameter that carries a presigned URL's signature; it is the
/// one parameter the canonical query string leaves out.
pub(crate) const SIGNATURE_QUERY_PARAMETER: &str = "X-Amz-Signature";

/// What the canonical request is computed from.
pub(crate) struct CanonicalInput<'a> {
    pub method: &'a str,
    /// The path as it travels on the wire, still percent-encoded.
    pub path: &'a str,
    /// The raw query string without the leading `?`.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    /// The `SignedHeaders` list exactly as the client sent it, `;`-separated.
    pub signed_headers: &'a str,
    pub payload_hash: &'a str,
    pub path_rule: PathRule,
}

/// How the path enters the canonical request: S3 signs it as it is (once
/// encoded), every other service normalized and encoded a second time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PathRule {
    Normalized,
    S3,
}

impl PathRule {
    /// S3 is the one service whose signing name selects its own path rule,
    /// as botocore's `S3SigV4Auth` does.
    pub(crate) fn for_service(service: &str) -> Self {
        if service == "s3" {
            Self::S3
        } else {
            Self::Normalized
        }
    }
}

pub(crate) fn write_canonical_request(sink: &mut impl Sink, input: &CanonicalInput<'_>) {
    sink.put(input.method.as_bytes());
    sink.put(b"\n");
    match input.path_rule {
        PathRule::Normalized => write_canonical_uri(sink, input.path),
        PathRule::S3 => write_s3_canonical_uri(sink, input.path),
    }
    sink.put(b"\n");
    write_canonical_query(sink, input.query);
    sink.put(b"\n");
    write_canonical_headers(sink, input.headers, input.signed_headers);
    sink.put(b"\n");
    sink.put(input.signed_headers.as_bytes());
    sink.put(b"\n");
    sink.put(input.payload_hash.as_bytes());
}

/// The canonical request as text, for tests and for reporting a mismatch.
pub(crate) fn canonical_request_string(input: &CanonicalInput<'_>) -> String {
    let mut buffer = Vec::with_capacity(256);
    write_canonical_request(&mut buffer, input);
    String::from_utf8_lossy(&buffer).into_owned()
}

/// SHA-256 of the canonical request, hex-encoded as the string to sign wants it.
pub(crate) fn canonical_request_hash(input: &CanonicalInput<'_>) -> [u8; 64] {
    let mut hasher = Sha256::new();
    write_canonical_request(&mut hasher, input);
    let mut hex_digest = [0u8; 64];
    // The buffer is exactly twice the digest length, so this cannot fail.
    let _ = hex::encode_to_slice(hasher.finalize(), &mut hex_digest);
    hex_digest
}

/// RFC 3986 unreserved characters: the only bytes SigV4 leaves unencoded.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Percent-encodes `bytes` with AWS's rule (everything but unreserved, and `/`
/// when `keep_slash`), writing runs of untouched bytes in one call.
fn write_aws_encoded(sink: &mut impl Sink, bytes: &[u8], keep_slash: bool) {
    let mut run_start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        if is_unreserved(byte) || (keep_slash && byte == b'/') {
            continue;
        }
        sink.put(&bytes[run_start..index]);
        sink.put(&[
            b'%',
            UPPER_HEX[usize::from(byte >> 4)],
            UPPER_HEX[usize::from(byte & 0xF)],
        ]);
        run_start = index + 1;
    }
    sink.put(&bytes[run_start..]);
}

/// Percent-encodes text as a query key or value: the form our signer writes
/// on the wire, identical to what the canonical query string holds.
pub(crate) fn aws_encode_query_component(text: &str) -> String {
    let mut buffer = Vec::with_capacity(text.len() * 3);
    write_aws_encoded(&mut buffer, text.as_bytes(), false);
    String::from_utf8_lossy(&buffer).into_owned()
}

/// Non-S3 services sign the path normalized (dot segments resolved, empty
/// segments dropped, as botocore's `remove_dot_segments` does) and then
/// percent-encoded once more on top of the encoding it already has on the wire.
/// So `/a%20b` is signed as `/a%2520b`: that double encoding is what every AWS
/// SDK does for these services and what AWS verifies.
fn write_canonical_uri(sink: &mut impl Sink, path: &str) {
    let normalized = normalize_path(path);
    write_aws_encoded(sink, normalized.as_bytes(), true);
}

/// S3 signs the path without normalizing it (a key may hold `//` or `..`),
/// encoded once. Decoding the wire form and encoding it again with AWS's rule
/// gives the same bytes whether a client wrote `~` or `%7E`.
fn write_s3_canonical_uri(sink: &mut impl Sink, path: &str) {
    if path.is_empty() {
        sink.put(b"/");
        return;
    }
    let decoded = percent_decode_path(path);
    write_aws_encoded(sink, &decoded, true);
}

/// Percent-decodes a path (a `+` stays a `+`, unlike in a query).
fn percent_decode_path(raw: &str) -> Cow<'_, [u8]> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw.as_bytes());
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            if let (Some(high), Some(low)) =
                (hex_value(bytes[index + 1]), hex_value(bytes[index + 2]))
            {
                decoded.push(high << 4 | low);
                index += 3;
                continue;
            }
        }
        decoded.push(bytes[index]);
        index += 1;
    }
    Cow::Owned(decoded)
}

fn normalize_path(path: &str) -> Cow<'_, str> {
    if path.is_empty() {
        return Cow::Borrowed("/");
    }
    if is_already_normal(path) {
        return Cow::Borrowed(path);
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    let mut normalized = String::with_capacity(path.len());
    if path.starts_with('/') {
        normalized.push('/');
    }
    normalized.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        normalized.push('/');
    }
    Cow::Owned(normalized)
}

/// True when normalizing would change nothing, so the common `/` and `/v1/x`
/// paths skip the segment vector entirely.
fn is_already_normal(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let is_last = segments.peek().is_none();
        if segment == "." || segment == ".." || (segment.is_empty() && !is_last) {
            return false;
        }
    }
    true
}

/// Query keys and values are decoded (with `+` read as a space, as the Go and
/// Rust AWS SDKs read it) and encoded again with AWS's rule, so that a client
/// that wrote `%7E` or `~`, `%20` or `+`, signs and verifies the same bytes.
fn write_canonical_query(sink: &mut impl Sink, raw_query: &str) {
    if raw_query.is_empty() {
        return;
    }
    // One buffer holds every encoded key and value; the pairs are ranges into
    // it. The number of pairs is bounded by the query length, which the HTTP
    // layer already bounds.
    let mut encoded = Vec::with_capacity(raw_query.len() + raw_query.len() / 2);
    let mut pairs: Vec<(Range<usize>, Range<usize>)> = Vec::new();
    for parameter in raw_query.split('&') {
        if parameter.is_empty() {
            continue;
        }
        let (raw_key, raw_value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let key_start = encoded.len();
        write_decoded_then_encoded(&mut encoded, raw_key);
        let key = key_start..encoded.len();
        if encoded[key.clone()] == *SIGNATURE_QUERY_PARAMETER.as_bytes() {
            encoded.truncate(key_start);
            continue;
        }
        let value_start = encoded.len();
        write_decoded_then_encoded(&mut encoded, raw_value);
        pairs.push((key, value_start..encoded.len()));
    }
    pairs.sort_unstable_by(|left, right| {
        encoded[left.0.clone()]
            .cmp(&encoded[right.0.clone()])
            .then_with(|| encoded[left.1.clone()].cmp(&encoded[right.1.clone()]))
    });
    for (index, (key, value)) in pairs.iter().enumerate() {
        if index > 0 {
            sink.put(b"&");
        }
        sink.put(&encoded[key.clone()]);
        sink.put(b"=");
        sink.put(&encoded[value.clone()]);
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes one query component into raw bytes. A `%` not followed by two hex
/// digits stays a literal `%`, as most URL parsers leave it.
pub(crate) fn percent_decode_query(raw: &str) -> Cow<'_, [u8]> {
    let bytes = raw.as_bytes();
    if !bytes.iter().any(|&byte| byte == b'%' || byte == b'+') {
        return Cow::Borrowed(bytes);
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'+' {
            decoded.push(b' ');
        } else if byte == b'%' {
            let high = bytes.get(index + 1).copied().and_then(hex_value);
            let low = bytes.get(index + 2).copied().and_then(hex_value);
            if let (Some(high), Some(low)) = (high, low) {
                decoded.push(high << 4 | low);
                index += 3;
                continue;
            }
            decoded.push(byte);
        } else {
            decoded.push(byte);
        }
        index += 1;
    }
    Cow::Owned(decoded)
}

fn write_decoded_then_encoded(buffer: &mut Vec<u8>, raw: &str) {
    let decoded = percent_decode_query(raw);
    write_aws_encoded(buffer, &decoded, false);
}

fn is_header_whitespace(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// One line per signed header, in the order the client listed them. Values of
/// a repeated header are joined with commas in arrival order; each value is
/// trimmed and its runs of spaces and tabs collapse to one space, which is
/// what botocore's `' '.join(value.split())` produces for header bytes.
fn write_canonical_headers(sink: &mut impl Sink, headers: &HeaderMap, signed_headers: &str) {
    for name in signed_headers.split(';') {
        sink.put(name.as_bytes());
        sink.put(b":");
        for (index, value) in headers.get_all(name).iter().enumerate() {
            if index > 0 {
                sink.put(b",");
            }
            write_collapsed_header_value(sink, value.as_bytes());
        }
        sink.put(b"\n");
    }
}

fn write_collapsed_header_value(sink: &mut impl Sink, value: &[u8]) {
    let mut words = value
        .split(|&byte| is_header_whitespace(byte))
        .filter(|word| !word.is_empty());
    if let Some(first) = words.next() {
        sink.put(first);
    }
    for word in words {
        sink.put(b" ");
        sink.put(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(path: &str) -> String {
        let mut buffer = Vec::new();
        write_canonical_uri(&mut buffer, path);
        String::from_utf8(buffer).expect("ascii")
    }

    fn query(raw: &str) -> String {
        let mut buffer = Vec::new();
        write_canonical_query(&mut buffer, raw);
        String::from_utf8(buffer).expect("ascii")
    }

    #[test]
    fn canonical_uri_normalizes_then_encodes_again() {
        let cases = [
            ("", "/"),
            ("/", "/"),
            ("/v1/tasks", "/v1/tasks"),
            ("/v1/tasks/", "/v1/tasks/"),
            ("//example//", "/example/"),
            ("/./", "/"),
            ("/./example", "/example"),
            ("/example/..", "/"),
            ("/example1/example2/../..", "/"),
            ("/a/b/../c/./d/", "/a/c/d/"),
            ("/example space/", "/example%20space/"),
            ("/a%20b", "/a%2520b"),
            ("/ሴ", "/%E1%88%B4"),
            ("/-._~0123456789AZaz", "/-._~0123456789AZaz"),
            ("/a+b=c", "/a%2Bb%3Dc"),
        ];
        for (path, expected) in cases {
            assert_eq!(uri(path), expected, "{path:?}");
        }
    }

    #[test]
    fn canonical_query_decodes_encodes_and_sorts() {
        let cases = [
            ("", ""),
            ("Param2=value2&Param1=value1", "Param1=value1&Param2=value2"),
            ("Param1", "Param1="),
            ("a=2&a=1&a=10", "a=1&a=10&a=2"),
            ("b=x&&a=y", "a=y&b=x"),
            ("note=a b+c%20d", "note=a%20b%20c%20d"),
            ("t=%7e~", "t=~~"),
            ("k=%2B", "k=%2B"),
            ("bad=%zz%4", "bad=%25zz%254"),
            (
                "Param-3=Value3&Param=Value2&%E1%88%B4=Value1",
                "%E1%88%B4=Value1&Param=Value2&Param-3=Value3",
            ),
            ("X-Amz-Signature=abc&X-Amz-Date=1", "X-Amz-Date=1"),
            ("x-amz-signature=abc", "x-amz-signature=abc"),
        ];
        for (raw, expected) in cases {
            assert_eq!(query(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        let mut buffer = Vec::new();
        write_collapsed_header_value(&mut buffer, b"  a \t  b   c\t");
        assert_eq!(buffer, b"a b c");
        buffer.clear();
        write_collapsed_header_value(&mut buffer, b"   ");
        assert_eq!(buffer, b"");
    }
}
