//! The records the object API keeps in the control plane's store, and
//! their keys.
//!
//! | key | value |
//! |---|---|
//! | `s3/buckets/{bucket}` | [`BucketRecord`] |
//! | `s3/objects/{bucket}/{key}` | [`ObjectRecord`] |
//!
//! A bucket name holds no `/`, so one bucket's objects are exactly the keys
//! under `s3/objects/{bucket}/`, in the byte order of their UTF-8 keys,
//! which is the order S3 lists them in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checksum::ChecksumAlgorithm;

pub const BUCKETS_PREFIX: &str = "s3/buckets/";
pub const OBJECTS_PREFIX: &str = "s3/objects/";
pub const UPLOADS_PREFIX: &str = "s3/uploads/";
pub const PARTS_PREFIX: &str = "s3/parts/";

/// `s3/uploads/{bucket}/{upload id}`: a multipart upload in progress.
pub fn upload_key(bucket: &str, upload_id: &str) -> String {
    format!("{UPLOADS_PREFIX}{bucket}/{upload_id}")
}

/// `s3/parts/{upload id}/`: the parts uploaded so far, in part number order.
pub fn parts_prefix(upload_id: &str) -> String {
    format!("{PARTS_PREFIX}{upload_id}/")
}

pub fn part_key(upload_id: &str, part_number: u32) -> String {
    format!("{PARTS_PREFIX}{upload_id}/{part_number:05}")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UploadRecord {
    pub upload_id: String,
    pub key: String,
    pub initiated_ms: u64,
    pub headers: ObjectHeaders,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartRecord {
    pub part_number: u32,
    pub blob_id: String,
    pub size_bytes: u64,
    pub md5_hex: String,
    pub checksum: Option<(ChecksumAlgorithm, String)>,
    pub last_modified_ms: u64,
}

pub fn bucket_key(bucket: &str) -> String {
    format!("{BUCKETS_PREFIX}{bucket}")
}

pub fn objects_prefix(bucket: &str) -> String {
    format!("{OBJECTS_PREFIX}{bucket}/")
}

pub fn object_key(bucket: &str, key: &str) -> String {
    format!("{OBJECTS_PREFIX}{bucket}/{key}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BucketState {
    Active,
    /// DeleteBucket's first step: no object may be added while it checks
    /// that the bucket is empty (see `S3::delete_bucket`).
    Deleting,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BucketRecord {
    pub name: String,
    pub created_ms: u64,
    pub region: String,
    pub state: BucketState,
}

/// The headers S3 keeps with an object and returns on GetObject and HeadObject.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHeaders {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<String>,
    /// `x-amz-meta-*` headers, by the name after the prefix (lowercase).
    pub user_metadata: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub key: String,
    pub size_bytes: u64,
    /// The ETag without its quotes: the hex MD5 of the bytes, or for an
    /// object assembled from a multipart upload S3's `{MD5 of the parts'
    /// MD5s}-{number of parts}`.
    pub md5_hex: String,
    /// Hex SHA-256 of the bytes, checked when the object is read whole.
    pub sha256_hex: String,
    /// The additional checksum the client sent and the server verified.
    pub checksum: Option<(ChecksumAlgorithm, String)>,
    pub blob_id: String,
    pub last_modified_ms: u64,
    pub headers: ObjectHeaders,
}

impl ObjectRecord {
    /// The ETag as S3 sends it, quoted.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.md5_hex)
    }
}
