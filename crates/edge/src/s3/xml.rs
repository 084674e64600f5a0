//! S3's REST-XML documents: the few the object API answers with, and the
//! one it reads (CreateBucketConfiguration).

use std::fmt::Write as _;

use flotilla_protocol::timestamp::format_iso8601;
use flotilla_s3::records::BucketRecord;
use flotilla_s3::{ListPage, ListedItem, S3Error};

const XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// Escapes text for an element's content.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all are written as S3 does
            // with encoding-type=url unset: as character references.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {
                let _ = write!(escaped, "&#x{:X};", c as u32);
            }
            c => escaped.push(c),
        }
    }
    escaped
}

fn element(out: &mut String, name: &str, text: &str) {
    let _ = write!(out, "<{name}>{}</{name}>", escape(text));
}

fn timestamp(ms: u64) -> String {
    format_iso8601(ms as f64 / 1000.0)
}

pub fn error(error: &S3Error, resource: &str, request_id: &str) -> String {
    let mut out = String::from(DECLARATION);
    out.push_str("<Error>");
    element(&mut out, "Code", error.code());
    element(&mut out, "Message", &error.to_string());
    for (name, value) in error.details() {
        element(&mut out, name, &value);
    }
    element(&mut out, "Resource", resource);
    element(&mut out, "RequestId", request_id);
    element(&mut out, "HostId", request_id);
    out.push_str("</Error>");
    out
}

pub fn list_buckets(buckets: &[BucketRecord], owner_id: &str) -> String {
    let mut out = String::from(DECLARATION);
    let _ = write!(out, r#"<ListAllMyBucketsResult xmlns="{XMLNS}">"#);
    out.push_str("<Owner>");
    element(&mut out, "ID", owner_id);
    element(&mut out, "DisplayName", owner_id);
    out.push_str("</Owner><Buckets>");
    for bucket in buckets {
        out.push_str("<Bucket>");
        element(&mut out, "Name", &bucket.name);
        element(&mut out, "CreationDate", &timestamp(bucket.created_ms));
        element(&mut out, "BucketRegion", &bucket.region);
        out.push_str("</Bucket>");
    }
    out.push_str("</Buckets></ListAllMyBucketsResult>");
    out
}

pub fn bucket_location(region: &str) -> String {
    // us-east-1 is the empty constraint, as S3 answers it.
    let constraint = if region == "us-east-1" { "" } else { region };
    format!(
        r#"{DECLARATION}<LocationConstraint xmlns="{XMLNS}">{}</LocationConstraint>"#,
        escape(constraint)
    )
}

/// What a ListObjectsV2 answer echoes of its request.
pub struct ListEcho<'a> {
    pub bucket: &'a str,
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    pub max_keys: usize,
    pub continuation_token: Option<&'a str>,
    pub start_after: Option<&'a str>,
    /// `encoding-type=url`: keys and prefixes percent-encoded in the answer.
    pub url_encoded: bool,
    pub fetch_owner: Option<&'a str>,
}

fn url_encode(text: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(text, KEEP).to_string()
}

pub fn list_objects_v2(echo: &ListEcho<'_>, page: &ListPage) -> String {
    let encode = |text: &str| {
        if echo.url_encoded {
            url_encode(text)
        } else {
            text.to_owned()
        }
    };
    let mut out = String::from(DECLARATION);
    let _ = write!(out, r#"<ListBucketResult xmlns="{XMLNS}">"#);
    element(&mut out, "Name", echo.bucket);
    element(&mut out, "Prefix", &encode(echo.prefix));
    if let Some(delimiter) = echo.delimiter {
        element(&mut out, "Delimiter", &encode(delimiter));
    }
    element(&mut out, "MaxKeys", &echo.max_keys.to_string());
    if echo.url_encoded {
        element(&mut out, "EncodingType", "url");
    }
    element(&mut out, "KeyCount", &page.items.len().to_string());
    element(
        &mut out,
        "IsTruncated",
        if page.is_truncated { "true" } else { "false" },
    );
    if let Some(token) = echo.continuation_token {
        element(&mut out, "ContinuationToken", token);
    }
    if let Some(token) = &page.next_continuation_token {
        element(&mut out, "NextContinuationToken", token);
    }
    if let Some(start_after) = echo.start_after {
        element(&mut out, "StartAfter", &encode(start_after));
    }
    for item in &page.items {
        match item {
            ListedItem::Object(record) => {
                out.push_str("<Contents>");
                element(&mut out, "Key", &encode(&record.key));
                element(
                    &mut out,
                    "LastModified",
                    &timestamp(record.last_modified_ms),
                );
                element(&mut out, "ETag", &record.etag());
                if let Some((algorithm, _)) = &record.checksum {
                    element(&mut out, "ChecksumAlgorithm", algorithm.label());
                }
                element(&mut out, "Size", &record.size_bytes.to_string());
                if let Some(owner) = echo.fetch_owner {
                    out.push_str("<Owner>");
                    element(&mut out, "ID", owner);
                    element(&mut out, "DisplayName", owner);
                    out.push_str("</Owner>");
                }
                element(&mut out, "StorageClass", "STANDARD");
                out.push_str("</Contents>");
            }
            ListedItem::CommonPrefix(prefix) => {
                out.push_str("<CommonPrefixes>");
                element(&mut out, "Prefix", &encode(prefix));
                out.push_str("</CommonPrefixes>");
            }
        }
    }
    out.push_str("</ListBucketResult>");
    out
}

pub fn initiate_multipart_upload(bucket: &str, key: &str, upload_id: &str) -> String {
    let mut out = String::from(DECLARATION);
    let _ = write!(out, r#"<InitiateMultipartUploadResult xmlns="{XMLNS}">"#);
    element(&mut out, "Bucket", bucket);
    element(&mut out, "Key", key);
    element(&mut out, "UploadId", upload_id);
    out.push_str("</InitiateMultipartUploadResult>");
    out
}

pub fn complete_multipart_upload(bucket: &str, key: &str, etag: &str) -> String {
    let mut out = String::from(DECLARATION);
    let _ = write!(out, r#"<CompleteMultipartUploadResult xmlns="{XMLNS}">"#);
    element(&mut out, "Location", &format!("/{bucket}/{key}"));
    element(&mut out, "Bucket", bucket);
    element(&mut out, "Key", key);
    element(&mut out, "ETag", etag);
    out.push_str("</CompleteMultipartUploadResult>");
    out
}

/// Text of the first `<name>…</name>` in `text`, entities decoded.
fn child(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&close)? + start;
    Some(
        text[start..end]
            .replace("&quot;", "\"")
            .replace("&#34;", "\"")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// The parts a CompleteMultipartUpload body lists (`<Part><PartNumber>`
/// and `<ETag>`; the per-part checksums were checked when each part was
/// uploaded).
pub fn completed_parts(body: &[u8]) -> Result<Vec<flotilla_s3::CompletedPart>, S3Error> {
    let text = std::str::from_utf8(body).map_err(|_| S3Error::MalformedXml)?;
    if !text.contains("<CompleteMultipartUpload") {
        return Err(S3Error::MalformedXml);
    }
    let mut parts = Vec::new();
    for piece in text.split("<Part>").skip(1) {
        let part = piece.split("</Part>").next().ok_or(S3Error::MalformedXml)?;
        let part_number = child(part, "PartNumber")
            .and_then(|number| number.trim().parse::<u32>().ok())
            .ok_or(S3Error::MalformedXml)?;
        let etag = child(part, "ETag").ok_or(S3Error::MalformedXml)?;
        parts.push(flotilla_s3::CompletedPart {
            part_number,
            etag: etag.trim().to_owned(),
        });
        if parts.len() > flotilla_s3::PARTS_MAX as usize {
            return Err(S3Error::MalformedXml);
        }
    }
    Ok(parts)
}

/// A DeleteObjects request: its keys and whether it is quiet.
pub struct DeleteRequest {
    pub keys: Vec<String>,
    pub quiet: bool,
}

pub fn delete_request(body: &[u8]) -> Result<DeleteRequest, S3Error> {
    let text = std::str::from_utf8(body).map_err(|_| S3Error::MalformedXml)?;
    if !text.contains("<Delete") {
        return Err(S3Error::MalformedXml);
    }
    let mut keys = Vec::new();
    for piece in text.split("<Object>").skip(1) {
        let object = piece
            .split("</Object>")
            .next()
            .ok_or(S3Error::MalformedXml)?;
        if object.contains("<VersionId>") {
            return Err(S3Error::not_implemented(
                "VersionId in DeleteObjects (versioning)",
            ));
        }
        keys.push(child(object, "Key").ok_or(S3Error::MalformedXml)?);
        // Bounded before anything else is allocated for it.
        if keys.len() > 1_000 {
            return Err(S3Error::MalformedXml);
        }
    }
    let quiet = child(text, "Quiet").is_some_and(|quiet| quiet.trim() == "true");
    Ok(DeleteRequest { keys, quiet })
}

pub fn delete_result(outcomes: &[(String, Result<(), S3Error>)], quiet: bool) -> String {
    let mut out = String::from(DECLARATION);
    let _ = write!(out, r#"<DeleteResult xmlns="{XMLNS}">"#);
    for (key, outcome) in outcomes {
        match outcome {
            Ok(()) if quiet => {}
            Ok(()) => {
                out.push_str("<Deleted>");
                element(&mut out, "Key", key);
                out.push_str("</Deleted>");
            }
            Err(error) => {
                out.push_str("<Error>");
                element(&mut out, "Key", key);
                element(&mut out, "Code", error.code());
                element(&mut out, "Message", &error.to_string());
                out.push_str("</Error>");
            }
        }
    }
    out.push_str("</DeleteResult>");
    out
}

/// The `LocationConstraint` of a CreateBucketConfiguration body (empty body:
/// none). Only that element is read; a body naming anything else is refused,
/// since a setting would otherwise be dropped silently.
pub fn location_constraint(body: &[u8]) -> Result<Option<String>, S3Error> {
    let text = std::str::from_utf8(body).map_err(|_| S3Error::MalformedXml)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let text = text
        .strip_prefix("<?xml")
        .and_then(|rest| rest.split_once("?>").map(|(_, rest)| rest.trim()))
        .unwrap_or(text);
    let inner = text
        .strip_prefix("<CreateBucketConfiguration")
        .and_then(|rest| rest.split_once('>'))
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.trim_end().strip_suffix("</CreateBucketConfiguration>"))
        .ok_or(S3Error::MalformedXml)?
        .trim();
    if inner.is_empty() {
        return Ok(None);
    }
    let value = inner
        .strip_prefix("<LocationConstraint>")
        .and_then(|rest| rest.strip_suffix("</LocationConstraint>"));
    match value {
        Some(value) if !value.contains('<') => Ok(Some(value.trim().to_owned())),
        _ => Err(S3Error::not_implemented(
            "A CreateBucketConfiguration with settings other than LocationConstraint",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_constraints_are_read_and_other_settings_refused() {
        assert_eq!(location_constraint(b"").expect("empty"), None);
        let body = br#"<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>"#;
        assert_eq!(
            location_constraint(body).expect("reads").as_deref(),
            Some("eu-west-1")
        );
        let other = br#"<CreateBucketConfiguration><Bucket><Type>Directory</Type></Bucket></CreateBucketConfiguration>"#;
        assert_eq!(
            location_constraint(other).expect_err("refused").code(),
            "NotImplemented"
        );
        assert_eq!(
            location_constraint(b"<nope").expect_err("bad").code(),
            "MalformedXML"
        );
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b>&\"'\u{1}"), "a&lt;b&gt;&amp;&quot;&apos;&#x1;");
    }
}

#[cfg(test)]
mod never_panics {
    use super::*;

    /// Inputs built from fragments of the documents read, shuffled by a
    /// fixed linear congruential sequence: every reader answers or refuses.
    #[test]
    fn readers_never_panic_on_mangled_documents() {
        const FRAGMENTS: &[&str] = &[
            "<CompleteMultipartUpload>",
            "</CompleteMultipartUpload>",
            "<Part>",
            "</Part>",
            "<PartNumber>",
            "</PartNumber>",
            "<ETag>",
            "</ETag>",
            "<Delete>",
            "</Delete>",
            "<Object>",
            "</Object>",
            "<Key>",
            "</Key>",
            "<Quiet>",
            "true",
            "&quot;",
            "&amp",
            "<CreateBucketConfiguration>",
            "</CreateBucketConfiguration>",
            "<LocationConstraint>",
            "</LocationConstraint>",
            "1",
            "99999999999",
            "é",
            "<",
            ">",
            "<?xml",
            "?>",
            "\u{0}",
        ];
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..5_000 {
            let mut text = String::new();
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            for _ in 0..(state >> 60) {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                text.push_str(FRAGMENTS[(state >> 33) as usize % FRAGMENTS.len()]);
            }
            let _ = completed_parts(text.as_bytes());
            let _ = delete_request(text.as_bytes());
            let _ = location_constraint(text.as_bytes());
        }
    }
}
