//! Object bytes on disk: `DATA/s3/blobs/{id}`, one file per stored object
//! version, written under `DATA/s3/tmp/{id}` first.
//!
//! *Architecture invariant:* a blob file appears under `blobs/` only by the
//! rename of a complete temporary file that was fsynced first (and the
//! directory after it), so a blob a record names is whole after a crash.

use std::path::{Path, PathBuf};

use md5::Md5;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::checksum::{ChecksumAlgorithm, Checksummer};
use crate::S3Error;

/// Largest object a single PutObject stores: 5 GiB, S3's own limit.
pub const OBJECT_SIZE_MAX_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// Bytes gathered in memory before one write to the temporary file.
pub const WRITE_BATCH_BYTES: usize = 1024 * 1024;

pub struct BlobStore {
    blobs_dir: PathBuf,
    temp_dir: PathBuf,
}

/// A blob once written: where it is, and what its bytes hash to.
#[derive(Clone, Debug)]
pub struct WrittenBlob {
    pub id: String,
    pub size_bytes: u64,
    pub md5_hex: String,
    pub sha256_hex: String,
    /// The additional checksum the writer was asked for, base64.
    pub checksum: Option<(ChecksumAlgorithm, String)>,
}

impl BlobStore {
    /// Opens (creating) the directories; removes temporary files an
    /// interrupted upload left.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let blobs_dir = dir.join("blobs");
        let temp_dir = dir.join("tmp");
        std::fs::create_dir_all(&blobs_dir)?;
        std::fs::create_dir_all(&temp_dir)?;
        for entry in std::fs::read_dir(&temp_dir)? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(Self {
            blobs_dir,
            temp_dir,
        })
    }

    /// Only ids made of safe characters name files; ids come from the edge's
    /// id source, never from a client, but a record is checked anyway.
    pub fn path(&self, id: &str) -> Option<PathBuf> {
        let safe = !id.is_empty()
            && id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-');
        safe.then(|| self.blobs_dir.join(id))
    }

    /// The ids of every blob file, for the sweep at open.
    pub(crate) fn ids(&self) -> std::io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.blobs_dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                ids.push(name.to_owned());
            }
        }
        Ok(ids)
    }

    pub async fn create(
        &self,
        id: &str,
        checksum: Option<ChecksumAlgorithm>,
    ) -> Result<BlobWriter, S3Error> {
        let final_path = self
            .path(id)
            .ok_or_else(|| S3Error::internal(format!("blob id {id:?} is not a file name")))?;
        let temp_path = self.temp_dir.join(id);
        let file = tokio::fs::File::create(&temp_path).await.map_err(|error| {
            S3Error::internal(format!("creating {}: {error}", temp_path.display()))
        })?;
        Ok(BlobWriter {
            file: Some(file),
            id: id.to_owned(),
            temp_path,
            final_path,
            blobs_dir: self.blobs_dir.clone(),
            buffer: Vec::with_capacity(WRITE_BATCH_BYTES),
            size_bytes: 0,
            md5: Md5::new(),
            sha256: Sha256::new(),
            checksum: checksum.map(|algorithm| (algorithm, Checksummer::new(algorithm))),
        })
    }

    /// Removes a blob file no record names any more. A failure is logged:
    /// the file is only wasted space.
    pub async fn remove(&self, id: &str) {
        if let Some(path) = self.path(id) {
            if let Err(error) = tokio::fs::remove_file(&path).await {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), %error, "could not remove an object's blob");
                }
            }
        }
    }
}

/// An object being written. Dropped before [`BlobWriter::finish`], its
/// temporary file is removed.
pub struct BlobWriter {
    file: Option<tokio::fs::File>,
    id: String,
    temp_path: PathBuf,
    final_path: PathBuf,
    blobs_dir: PathBuf,
    buffer: Vec<u8>,
    size_bytes: u64,
    md5: Md5,
    sha256: Sha256,
    checksum: Option<(ChecksumAlgorithm, Checksummer)>,
}

impl BlobWriter {
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Appends bytes, refusing to grow past [`OBJECT_SIZE_MAX_BYTES`].
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), S3Error> {
        let size_bytes = self.size_bytes + bytes.len() as u64;
        if size_bytes > OBJECT_SIZE_MAX_BYTES {
            return Err(S3Error::EntityTooLarge {
                size_bytes,
                limit_bytes: OBJECT_SIZE_MAX_BYTES,
            });
        }
        self.size_bytes = size_bytes;
        self.md5.update(bytes);
        self.sha256.update(bytes);
        if let Some((_, checksummer)) = &mut self.checksum {
            checksummer.update(bytes);
        }
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= WRITE_BATCH_BYTES {
            self.flush_buffer().await?;
        }
        Ok(())
    }

    async fn flush_buffer(&mut self) -> Result<(), S3Error> {
        let Some(file) = &mut self.file else {
            return Err(S3Error::internal("blob written after it was finished"));
        };
        file.write_all(&self.buffer).await.map_err(|error| {
            S3Error::internal(format!("writing {}: {error}", self.temp_path.display()))
        })?;
        self.buffer.clear();
        Ok(())
    }

    /// Flushes and fsyncs the file, renames it into place and fsyncs the
    /// directory: once this returns the blob survives a crash.
    pub async fn finish(mut self) -> Result<WrittenBlob, S3Error> {
        self.flush_buffer().await?;
        let io = |error: std::io::Error| S3Error::internal(format!("storing a blob: {error}"));
        if let Some(mut file) = self.file.take() {
            file.flush().await.map_err(io)?;
            file.sync_all().await.map_err(io)?;
        }
        tokio::fs::rename(&self.temp_path, &self.final_path)
            .await
            .map_err(io)?;
        let blobs_dir = self.blobs_dir.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(&blobs_dir)?.sync_all())
            .await
            .map_err(|error| S3Error::internal(format!("syncing the blob directory: {error}")))?
            .map_err(io)?;
        let md5 = std::mem::take(&mut self.md5);
        let sha256 = std::mem::take(&mut self.sha256);
        Ok(WrittenBlob {
            id: self.id.clone(),
            size_bytes: self.size_bytes,
            md5_hex: hex::encode(md5.finalize()),
            sha256_hex: hex::encode(sha256.finalize()),
            checksum: self
                .checksum
                .take()
                .map(|(algorithm, checksummer)| (algorithm, checksummer.finish_base64())),
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Unfinished: the temporary file is all there is to remove. A finished
        // writer's file was renamed away, so this fails harmlessly.
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}
