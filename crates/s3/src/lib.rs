//! `flotilla-s3`: a minimal S3-compatible object store (buckets, single-part
//! objects, ListObjectsV2) for environment files and the like.
//!
//! ```text
//! edge (REST-XML, SigV4, aws-chunked) ─▶ S3::create_blob ─▶ BlobWriter::write … finish
//!                                          (tmp file, fsync, rename, fsync dir)
//!                                     ─▶ S3::complete_put ─▶ record committed in the store
//!                                          (conditional on the bucket's and object's revisions)
//! GetObject ─▶ S3::open_object ─▶ record + open blob file (size checked; the edge
//!              checks the SHA-256 while it streams a whole object out)
//! ```
//!
//! *Architecture invariant:* a PutObject is acknowledged only after its blob
//! is fsynced in place and its record committed (durably) in the store, so
//! an acknowledged object survives kill -9. A blob no record names (a crash
//! between the two) is removed when the store opens.
//!
//! *API boundary:* no HTTP, no XML, no clock and no randomness: typed calls
//! in (names, keys, headers as plain data, `now_ms`, blob ids from the
//! edge's id source), records and [`S3Error`] out.

#![forbid(unsafe_code)]

mod blobs;
pub mod checksum;
mod error;
mod list;
mod multipart;
pub mod names;
mod read;
pub mod records;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use flotilla_records::{mutate_with, Attempt};
use flotilla_store::{Store, Txn};

pub use blobs::{BlobStore, BlobWriter, WrittenBlob, OBJECT_SIZE_MAX_BYTES, WRITE_BATCH_BYTES};
pub use error::S3Error;
pub use list::{ListObjectsV2, ListPage, ListedItem, LIST_KEYS_MAX};
pub use multipart::{CompletedPart, PARTS_MAX, PART_SIZE_MIN_BYTES};
pub use read::HashCheckedReader;
use records::{BucketRecord, BucketState, ObjectHeaders, ObjectRecord};

/// How many buckets one account may have: S3's default quota.
pub const BUCKETS_MAX: usize = 10_000;

/// Store keys read per page when sweeping or listing.
pub(crate) const STORE_PAGE: usize = 1_000;

pub struct S3 {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) blobs: BlobStore,
    region: String,
}

impl S3 {
    /// Opens the object store in `dir` (`DATA/s3`), removing blobs no record
    /// names (left by a crash between a blob's rename and its record's commit).
    pub fn open(store: Arc<dyn Store>, dir: &Path, region: &str) -> Result<Self, S3Error> {
        let blobs = BlobStore::open(dir)
            .map_err(|error| S3Error::internal(format!("opening {}: {error}", dir.display())))?;
        let s3 = Self {
            store,
            blobs,
            region: region.to_owned(),
        };
        s3.sweep_unreferenced_blobs()?;
        Ok(s3)
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    fn sweep_unreferenced_blobs(&self) -> Result<(), S3Error> {
        let mut referenced = HashSet::new();
        for prefix in [records::OBJECTS_PREFIX, records::PARTS_PREFIX] {
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .store
                    .list(prefix, after.as_deref(), STORE_PAGE)
                    .map_err(flotilla_records::store_error)?;
                for entry in &page.entries {
                    #[derive(serde::Deserialize)]
                    struct Blob {
                        blob_id: String,
                    }
                    let record: Blob = flotilla_records::decode(entry)?;
                    referenced.insert(record.blob_id);
                }
                after = page.entries.last().map(|entry| entry.key.clone());
                if !page.more || after.is_none() {
                    break;
                }
            }
        }
        let ids = self
            .blobs
            .ids()
            .map_err(|error| S3Error::internal(format!("listing blobs: {error}")))?;
        for id in ids.iter().filter(|id| !referenced.contains(*id)) {
            if let Some(path) = self.blobs.path(id) {
                tracing::info!(path = %path.display(), "removing a blob no object names");
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }

    pub(crate) fn bucket(
        &self,
        bucket: &str,
    ) -> Result<flotilla_records::Versioned<BucketRecord>, S3Error> {
        match flotilla_records::get::<BucketRecord>(&*self.store, &records::bucket_key(bucket))? {
            Some(record) if record.value.state == BucketState::Active => Ok(record),
            _ => Err(S3Error::NoSuchBucket {
                bucket: bucket.to_owned(),
            }),
        }
    }

    /// CreateBucket. `location_constraint` is the one the request's
    /// `CreateBucketConfiguration` named, if any.
    pub async fn create_bucket(
        &self,
        bucket: &str,
        location_constraint: Option<&str>,
        now_ms: u64,
    ) -> Result<(), S3Error> {
        names::check_bucket_name(bucket)?;
        // As S3's regional endpoints do: us-east-1 takes no constraint, every
        // other region its own name.
        match location_constraint {
            None if self.region == "us-east-1" => {}
            None => {
                return Err(S3Error::IllegalLocationConstraint {
                    constraint: "unspecified".to_owned(),
                })
            }
            Some(constraint) if constraint == self.region && self.region != "us-east-1" => {}
            Some(constraint) => {
                return Err(if constraint == "us-east-1" || constraint.is_empty() {
                    S3Error::InvalidLocationConstraint {
                        constraint: constraint.to_owned(),
                    }
                } else {
                    S3Error::IllegalLocationConstraint {
                        constraint: constraint.to_owned(),
                    }
                })
            }
        }
        let key = records::bucket_key(bucket);
        mutate_with(&*self.store, || {
            let existing = flotilla_records::get::<BucketRecord>(&*self.store, &key)?;
            if let Some(existing) = &existing {
                if existing.value.state == BucketState::Active {
                    return Err(S3Error::BucketAlreadyOwnedByYou {
                        bucket: bucket.to_owned(),
                    });
                }
            }
            let count = self
                .store
                .list(records::BUCKETS_PREFIX, None, BUCKETS_MAX + 1)
                .map_err(flotilla_records::store_error)?
                .entries
                .len();
            if existing.is_none() && count >= BUCKETS_MAX {
                return Err(S3Error::TooManyBuckets);
            }
            let record = BucketRecord {
                name: bucket.to_owned(),
                created_ms: now_ms,
                region: self.region.clone(),
                state: BucketState::Active,
            };
            let revision = existing.map_or(0, |existing| existing.revision);
            let txn = Txn::new()
                .expect(key.clone(), revision)
                .put(key.clone(), flotilla_records::encode(&record));
            Ok(Attempt::Commit(txn, ()))
        })
        .await
    }

    /// DeleteBucket: refused while the bucket holds an object. The bucket is
    /// first marked deleting (so that a PutObject that read it active fails
    /// its revision check and finds it gone), then checked for objects and
    /// deleted, or restored when an object was there.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), S3Error> {
        let key = records::bucket_key(bucket);
        let marked =
            mutate_with(&*self.store, || {
                let current = flotilla_records::get::<BucketRecord>(&*self.store, &key)?
                    .ok_or_else(|| S3Error::NoSuchBucket {
                        bucket: bucket.to_owned(),
                    })?;
                let mut record = current.value.clone();
                record.state = BucketState::Deleting;
                let txn = Txn::new()
                    .expect(key.clone(), current.revision)
                    .put(key.clone(), flotilla_records::encode(&record));
                Ok::<_, S3Error>(Attempt::Commit(txn, current.value))
            })
            .await?;
        let holds_objects = !self
            .store
            .list(&records::objects_prefix(bucket), None, 1)
            .map_err(flotilla_records::store_error)?
            .entries
            .is_empty();
        let txn = if holds_objects {
            let mut restored = marked;
            restored.state = BucketState::Active;
            Txn::new().put(key.clone(), flotilla_records::encode(&restored))
        } else {
            Txn::new().delete(key.clone())
        };
        self.store
            .commit(txn)
            .await
            .map_err(flotilla_records::store_error)?;
        if holds_objects {
            return Err(S3Error::BucketNotEmpty {
                bucket: bucket.to_owned(),
            });
        }
        Ok(())
    }

    /// HeadBucket.
    pub fn head_bucket(&self, bucket: &str) -> Result<BucketRecord, S3Error> {
        Ok(self.bucket(bucket)?.value)
    }

    /// ListBuckets, in name order (at most [`BUCKETS_MAX`]).
    pub fn list_buckets(&self) -> Result<Vec<BucketRecord>, S3Error> {
        let page = self
            .store
            .list(records::BUCKETS_PREFIX, None, BUCKETS_MAX)
            .map_err(flotilla_records::store_error)?;
        let mut buckets = Vec::with_capacity(page.entries.len());
        for entry in &page.entries {
            let record: BucketRecord = flotilla_records::decode(entry)?;
            if record.state == BucketState::Active {
                buckets.push(record);
            }
        }
        Ok(buckets)
    }

    /// The first half of PutObject: checks the bucket and key and opens a
    /// blob (`blob_id` from the edge's id source) for the body.
    pub async fn create_blob(
        &self,
        bucket: &str,
        key: &str,
        blob_id: &str,
        checksum: Option<checksum::ChecksumAlgorithm>,
    ) -> Result<BlobWriter, S3Error> {
        names::check_key(key)?;
        self.bucket(bucket)?;
        self.blobs.create(blob_id, checksum).await
    }

    /// The second half of PutObject: commits the object's record naming the
    /// written blob, replacing (and then removing) any previous version.
    pub async fn complete_put(
        &self,
        bucket: &str,
        key: &str,
        blob: WrittenBlob,
        headers: ObjectHeaders,
        now_ms: u64,
    ) -> Result<ObjectRecord, S3Error> {
        let record = ObjectRecord {
            key: key.to_owned(),
            size_bytes: blob.size_bytes,
            md5_hex: blob.md5_hex.clone(),
            sha256_hex: blob.sha256_hex.clone(),
            checksum: blob.checksum.clone(),
            blob_id: blob.id.clone(),
            last_modified_ms: now_ms,
            headers,
        };
        self.commit_object(bucket, record).await
    }

    /// Commits an object's record, replacing (and then removing the blob
    /// of) any previous version; on failure the new blob is removed.
    pub(crate) async fn commit_object(
        &self,
        bucket: &str,
        record: ObjectRecord,
    ) -> Result<ObjectRecord, S3Error> {
        let key = record.key.as_str();
        let store_key = records::object_key(bucket, key);
        let bucket_key = records::bucket_key(bucket);
        let committed = mutate_with(&*self.store, || {
            let bucket_record = self.bucket(bucket)?;
            let previous = flotilla_records::get::<ObjectRecord>(&*self.store, &store_key)?;
            let txn = Txn::new()
                .expect(bucket_key.clone(), bucket_record.revision)
                .expect(
                    store_key.clone(),
                    previous.as_ref().map_or(0, |previous| previous.revision),
                )
                .put(store_key.clone(), flotilla_records::encode(&record));
            Ok::<_, S3Error>(Attempt::Commit(
                txn,
                previous.map(|previous| previous.value.blob_id),
            ))
        })
        .await;
        match committed {
            Ok(previous_blob) => {
                if let Some(previous_blob) = previous_blob {
                    self.blobs.remove(&previous_blob).await;
                }
                Ok(record)
            }
            Err(error) => {
                self.blobs.remove(&record.blob_id).await;
                Err(error)
            }
        }
    }

    /// Removes a written blob that will not be stored (its digests failed).
    pub async fn remove_blob(&self, blob_id: &str) {
        self.blobs.remove(blob_id).await;
    }

    /// HeadObject: the record alone.
    pub fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectRecord, S3Error> {
        self.bucket(bucket)?;
        flotilla_records::get::<ObjectRecord>(&*self.store, &records::object_key(bucket, key))?
            .map(|record| record.value)
            .ok_or_else(|| S3Error::NoSuchKey {
                key: key.to_owned(),
            })
    }

    /// GetObject: the record and its blob file, opened. The file's length
    /// must be the record's size; a replaced object's blob may vanish between
    /// reading the record and opening it, so that is tried again.
    pub async fn open_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectRecord, tokio::fs::File), S3Error> {
        const ATTEMPTS: usize = 3;
        for _ in 0..ATTEMPTS {
            let record = self.head_object(bucket, key)?;
            let Some(path) = self.blobs.path(&record.blob_id) else {
                return Err(S3Error::internal(format!(
                    "object {key} names no blob file"
                )));
            };
            let file = match tokio::fs::File::open(&path).await {
                Ok(file) => file,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => {
                    return Err(S3Error::internal(format!(
                        "opening {}: {error}",
                        path.display()
                    )))
                }
            };
            let length = file
                .metadata()
                .await
                .map_err(|error| S3Error::internal(format!("reading {}: {error}", path.display())))?
                .len();
            if length != record.size_bytes {
                return Err(S3Error::internal(format!(
                    "blob {} of {key} holds {length} bytes, its record says {}",
                    path.display(),
                    record.size_bytes
                )));
            }
            return Ok((record, file));
        }
        Err(S3Error::internal(format!(
            "object {key} kept changing while it was opened"
        )))
    }

    /// DeleteObject: succeeds whether or not the key exists, as S3 does.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), S3Error> {
        let store_key = records::object_key(bucket, key);
        let removed = mutate_with(&*self.store, || {
            self.bucket(bucket)?;
            let Some(previous) = flotilla_records::get::<ObjectRecord>(&*self.store, &store_key)?
            else {
                return Ok::<_, S3Error>(Attempt::Done(None));
            };
            let txn = Txn::new()
                .expect(store_key.clone(), previous.revision)
                .delete(store_key.clone());
            Ok(Attempt::Commit(txn, Some(previous.value.blob_id)))
        })
        .await?;
        if let Some(blob_id) = removed {
            self.blobs.remove(&blob_id).await;
        }
        Ok(())
    }

    /// ListObjectsV2.
    pub fn list_objects_v2(&self, request: &ListObjectsV2) -> Result<ListPage, S3Error> {
        self.bucket(&request.bucket)?;
        list::list(&*self.store, request)
    }
}

#[cfg(test)]
mod tests;
