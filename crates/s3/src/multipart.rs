//! Multipart uploads: CreateMultipartUpload, UploadPart,
//! CompleteMultipartUpload and AbortMultipartUpload.
//!
//! Each part is a blob of its own with a record under the upload; completing
//! copies the named parts, in order, into one new blob (so the object is a
//! single file like any other) and commits the object, then removes the
//! upload, its part records and their blobs.

use flotilla_records::{mutate_with, Attempt};
use flotilla_store::Txn;
use md5::{Digest, Md5};
use tokio::io::AsyncReadExt;

use crate::checksum::ChecksumAlgorithm;
use crate::records::{self, ObjectHeaders, ObjectRecord, PartRecord, UploadRecord};
use crate::{BlobWriter, S3Error, WrittenBlob, S3, STORE_PAGE};

/// Part numbers run from 1 to this, as in S3.
pub const PARTS_MAX: u32 = 10_000;
/// Every part but the last must be at least this large (S3's 5 MiB).
pub const PART_SIZE_MIN_BYTES: u64 = 5 * 1024 * 1024;
/// Bytes read from a part's file per write while assembling an object.
const ASSEMBLE_READ_BYTES: usize = 1024 * 1024;

/// A part as CompleteMultipartUpload names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: u32,
    /// As the client sent it, with or without quotes.
    pub etag: String,
}

impl S3 {
    fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<UploadRecord, S3Error> {
        self.bucket(bucket)?;
        let no_upload = || S3Error::NoSuchUpload {
            upload_id: upload_id.to_owned(),
        };
        let record = flotilla_records::get::<UploadRecord>(
            &*self.store,
            &records::upload_key(bucket, upload_id),
        )?
        .ok_or_else(no_upload)?;
        if record.value.key != key {
            return Err(no_upload());
        }
        Ok(record.value)
    }

    /// CreateMultipartUpload; `upload_id` comes from the edge's id source.
    pub async fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        headers: ObjectHeaders,
        now_ms: u64,
    ) -> Result<(), S3Error> {
        crate::names::check_key(key)?;
        let bucket_record = self.bucket(bucket)?;
        let record = UploadRecord {
            upload_id: upload_id.to_owned(),
            key: key.to_owned(),
            initiated_ms: now_ms,
            headers,
        };
        let txn = Txn::new()
            .expect(records::bucket_key(bucket), bucket_record.revision)
            .expect(records::upload_key(bucket, upload_id), 0)
            .put(
                records::upload_key(bucket, upload_id),
                flotilla_records::encode(&record),
            );
        self.store
            .commit(txn)
            .await
            .map_err(flotilla_records::store_error)?;
        Ok(())
    }

    /// UploadPart's first half: a blob for the part's body.
    pub async fn create_part_blob(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        blob_id: &str,
        checksum: Option<ChecksumAlgorithm>,
    ) -> Result<BlobWriter, S3Error> {
        check_part_number(part_number)?;
        self.upload(bucket, key, upload_id)?;
        self.blobs.create(blob_id, checksum).await
    }

    /// UploadPart's second half: the part's record, replacing (and removing
    /// the blob of) a part uploaded before under the same number.
    pub async fn complete_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        blob: WrittenBlob,
        now_ms: u64,
    ) -> Result<PartRecord, S3Error> {
        let record = PartRecord {
            part_number,
            blob_id: blob.id.clone(),
            size_bytes: blob.size_bytes,
            md5_hex: blob.md5_hex.clone(),
            checksum: blob.checksum.clone(),
            last_modified_ms: now_ms,
        };
        let part_key = records::part_key(upload_id, part_number);
        let upload_key = records::upload_key(bucket, upload_id);
        let committed = mutate_with(&*self.store, || {
            self.upload(bucket, key, upload_id)?;
            let upload_revision = self
                .store
                .get(&upload_key)
                .map_err(flotilla_records::store_error)?
                .map_or(0, |entry| entry.mod_revision);
            let previous = flotilla_records::get::<PartRecord>(&*self.store, &part_key)?;
            let txn = Txn::new()
                .expect(upload_key.clone(), upload_revision)
                .expect(
                    part_key.clone(),
                    previous.as_ref().map_or(0, |previous| previous.revision),
                )
                .put(part_key.clone(), flotilla_records::encode(&record));
            Ok::<_, S3Error>(Attempt::Commit(
                txn,
                previous.map(|previous| previous.value.blob_id),
            ))
        })
        .await;
        match committed {
            Ok(previous) => {
                if let Some(previous) = previous {
                    self.blobs.remove(&previous).await;
                }
                Ok(record)
            }
            Err(error) => {
                self.blobs.remove(&blob.id).await;
                Err(error)
            }
        }
    }

    fn parts(&self, upload_id: &str) -> Result<Vec<PartRecord>, S3Error> {
        let prefix = records::parts_prefix(upload_id);
        let mut parts = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list(&prefix, after.as_deref(), STORE_PAGE)
                .map_err(flotilla_records::store_error)?;
            for entry in &page.entries {
                parts.push(flotilla_records::decode::<PartRecord>(entry)?);
            }
            after = page.entries.last().map(|entry| entry.key.clone());
            if !page.more || after.is_none() {
                return Ok(parts);
            }
        }
    }

    /// CompleteMultipartUpload: the named parts, in ascending order, each
    /// with its ETag and all but the last at least [`PART_SIZE_MIN_BYTES`],
    /// become one object (`blob_id` from the edge's id source).
    pub async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        requested: &[CompletedPart],
        blob_id: &str,
        now_ms: u64,
    ) -> Result<ObjectRecord, S3Error> {
        let upload = self.upload(bucket, key, upload_id)?;
        if requested.is_empty() {
            return Err(S3Error::MalformedXml);
        }
        if requested
            .windows(2)
            .any(|pair| pair[0].part_number >= pair[1].part_number)
        {
            return Err(S3Error::InvalidPartOrder);
        }
        let stored = self.parts(upload_id)?;
        let mut chosen = Vec::with_capacity(requested.len());
        for (index, wanted) in requested.iter().enumerate() {
            let part = stored
                .iter()
                .find(|part| part.part_number == wanted.part_number)
                .filter(|part| wanted.etag.trim_matches('"') == part.md5_hex)
                .ok_or(S3Error::InvalidPartReference {
                    part_number: wanted.part_number,
                })?;
            let is_last = index + 1 == requested.len();
            if !is_last && part.size_bytes < PART_SIZE_MIN_BYTES {
                return Err(S3Error::EntityTooSmall {
                    part_number: part.part_number,
                    size_bytes: part.size_bytes,
                });
            }
            chosen.push(part.clone());
        }
        let mut writer = self.blobs.create(blob_id, None).await?;
        let mut etag_hasher = Md5::new();
        let mut buffer = vec![0u8; ASSEMBLE_READ_BYTES];
        for part in &chosen {
            let path = self
                .blobs
                .path(&part.blob_id)
                .ok_or_else(|| S3Error::internal("a part names no blob file"))?;
            let mut file = tokio::fs::File::open(&path).await.map_err(|error| {
                S3Error::internal(format!("opening {}: {error}", path.display()))
            })?;
            loop {
                let read = file.read(&mut buffer).await.map_err(|error| {
                    S3Error::internal(format!("reading {}: {error}", path.display()))
                })?;
                if read == 0 {
                    break;
                }
                writer.write(&buffer[..read]).await?;
            }
            let digest = hex::decode(&part.md5_hex)
                .map_err(|_| S3Error::internal("a part's MD5 is not hex"))?;
            etag_hasher.update(digest);
        }
        let blob = writer.finish().await?;
        let record = ObjectRecord {
            key: key.to_owned(),
            size_bytes: blob.size_bytes,
            md5_hex: format!("{}-{}", hex::encode(etag_hasher.finalize()), chosen.len()),
            sha256_hex: blob.sha256_hex.clone(),
            checksum: None,
            blob_id: blob.id.clone(),
            last_modified_ms: now_ms,
            headers: upload.headers,
        };
        let record = self.commit_object(bucket, record).await?;
        self.discard_upload(bucket, upload_id, &stored).await?;
        Ok(record)
    }

    /// AbortMultipartUpload: the upload, its parts and their blobs go.
    pub async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), S3Error> {
        self.upload(bucket, key, upload_id)?;
        let parts = self.parts(upload_id)?;
        self.discard_upload(bucket, upload_id, &parts).await
    }

    async fn discard_upload(
        &self,
        bucket: &str,
        upload_id: &str,
        parts: &[PartRecord],
    ) -> Result<(), S3Error> {
        let per_txn = self.store.limits().items_per_txn(1).max(1);
        for batch in parts.chunks(per_txn) {
            let txn = batch.iter().fold(Txn::new(), |txn, part| {
                txn.delete(records::part_key(upload_id, part.part_number))
            });
            self.store
                .commit(txn)
                .await
                .map_err(flotilla_records::store_error)?;
        }
        self.store
            .commit(Txn::new().delete(records::upload_key(bucket, upload_id)))
            .await
            .map_err(flotilla_records::store_error)?;
        for part in parts {
            self.blobs.remove(&part.blob_id).await;
        }
        Ok(())
    }
}

fn check_part_number(part_number: u32) -> Result<(), S3Error> {
    if (1..=PARTS_MAX).contains(&part_number) {
        Ok(())
    } else {
        Err(S3Error::invalid_argument(format!(
            "Part number must be an integer between 1 and {PARTS_MAX}, inclusive"
        )))
    }
}
