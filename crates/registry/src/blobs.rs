//! The content-addressed blob store on disk, and uploads in progress.
//!
//! ```text
//! DIR/blobs/sha256/ab/abcdef…        one file per blob, named by its digest
//! DIR/uploads/{id}/data              bytes received so far
//! DIR/uploads/{id}/upload.json       which repository, since when
//! ```
//!
//! *Architecture invariant:* a file appears under `blobs/` only by an atomic
//! rename of a complete upload whose SHA-256 matched the digest the client
//! named, after the data is flushed to disk. An interrupted or refused
//! upload stays under `uploads/` (until collected) and is never visible.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// Largest blob accepted in one upload.
pub const BLOB_SIZE_MAX_BYTES: u64 = 10 * 1024 * 1024 * 1024;
/// Uploads open at once (in memory); more are refused until some finish.
pub const UPLOADS_OPEN_MAX: usize = 1_024;
/// Size of the reads that re-hash an upload after a restart.
const REHASH_CHUNK_BYTES: usize = 1024 * 1024;
/// Longest upload id accepted from a client.
const UPLOAD_ID_MAX_CHARS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("upload {0} is not known")]
    UploadUnknown(String),
    #[error("the upload's digest is {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("the blob would be larger than the limit of {BLOB_SIZE_MAX_BYTES} bytes")]
    TooLarge,
    #[error("too many uploads in progress (limit {UPLOADS_OPEN_MAX})")]
    TooManyUploads,
    #[error("blob store i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What is kept on disk beside an upload's data.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct UploadInfo {
    repository: String,
    started_at_ms: u64,
}

/// An upload in progress. The file and hasher are taken out while a write
/// runs on the blocking pool and put back after.
pub struct Upload {
    id: String,
    info: UploadInfo,
    dir: PathBuf,
    file: Option<std::fs::File>,
    hasher: Option<Sha256>,
    size: u64,
}

impl Upload {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn repository(&self) -> &str {
        &self.info.repository
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends `data`; the whole of it or nothing counts as received.
    pub async fn write(&mut self, data: Bytes) -> Result<(), BlobError> {
        if self.size.saturating_add(data.len() as u64) > BLOB_SIZE_MAX_BYTES {
            return Err(BlobError::TooLarge);
        }
        let (Some(mut file), Some(mut hasher)) = (self.file.take(), self.hasher.take()) else {
            return Err(BlobError::UploadUnknown(self.id.clone()));
        };
        let path = self.dir.join("data");
        let written = tokio::task::spawn_blocking(move || {
            let result = file.write_all(&data);
            if result.is_ok() {
                hasher.update(&data);
            }
            (file, hasher, result.map(|()| data.len() as u64))
        })
        .await;
        let Ok((file, hasher, result)) = written else {
            return Err(BlobError::UploadUnknown(self.id.clone()));
        };
        match result {
            Ok(length) => {
                self.file = Some(file);
                self.hasher = Some(hasher);
                self.size += length;
                Ok(())
            }
            // A partial write leaves the file longer than what the hasher
            // saw: this upload cannot go on.
            Err(error) => Err(io(&path)(error)),
        }
    }

    /// The digest of everything received so far.
    pub fn digest(&self) -> Option<Digest> {
        self.hasher.clone().map(Digest::from_hasher)
    }
}

/// The blob files and the uploads in progress.
pub struct BlobStore {
    root: PathBuf,
    open: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Upload>>>>,
}

impl BlobStore {
    /// Opens (creating) the store under `root`.
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        for dir in [root.join("blobs/sha256"), root.join("uploads")] {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(Self {
            root: root.to_owned(),
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join("blobs/sha256").join(&hex[..2]).join(hex)
    }

    fn upload_dir(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    /// The size of a stored blob, if it is stored.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        std::fs::metadata(self.blob_path(digest))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Reads a whole (small) blob, such as a manifest's config.
    pub async fn read(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        let path = self.blob_path(digest);
        tokio::fs::read(&path).await.map_err(io(&path))
    }

    /// Opens a blob for reading.
    pub async fn open_blob(&self, digest: &Digest) -> Result<tokio::fs::File, BlobError> {
        let path = self.blob_path(digest);
        tokio::fs::File::open(&path).await.map_err(io(&path))
    }

    /// Starts upload `id` (drawn by the caller) into `repository`.
    pub fn start_upload(&self, id: &str, repository: &str, now_ms: u64) -> Result<(), BlobError> {
        if !valid_upload_id(id) {
            return Err(BlobError::UploadUnknown(id.to_owned()));
        }
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.len() >= UPLOADS_OPEN_MAX {
            return Err(BlobError::TooManyUploads);
        }
        let dir = self.upload_dir(id);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let info = UploadInfo {
            repository: repository.to_owned(),
            started_at_ms: now_ms,
        };
        let info_path = dir.join("upload.json");
        std::fs::write(&info_path, serde_json::to_vec(&info).unwrap_or_default())
            .map_err(io(&info_path))?;
        let data_path = dir.join("data");
        let file = std::fs::File::create(&data_path).map_err(io(&data_path))?;
        let upload = Upload {
            id: id.to_owned(),
            info,
            dir,
            file: Some(file),
            hasher: Some(Sha256::new()),
            size: 0,
        };
        open.insert(id.to_owned(), Arc::new(tokio::sync::Mutex::new(upload)));
        Ok(())
    }

    /// An upload in progress, reopened from disk after a restart (its data
    /// hashed again) when it is not in memory.
    pub async fn upload(&self, id: &str) -> Result<Arc<tokio::sync::Mutex<Upload>>, BlobError> {
        if !valid_upload_id(id) {
            return Err(BlobError::UploadUnknown(id.to_owned()));
        }
        if let Some(upload) = self.lock_open().get(id) {
            return Ok(Arc::clone(upload));
        }
        let dir = self.upload_dir(id);
        let reopened = tokio::task::spawn_blocking(move || reopen(dir)).await;
        let upload = match reopened {
            Ok(Ok(upload)) => upload,
            _ => return Err(BlobError::UploadUnknown(id.to_owned())),
        };
        let mut open = self.lock_open();
        if open.len() >= UPLOADS_OPEN_MAX {
            return Err(BlobError::TooManyUploads);
        }
        let entry = open
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(upload)));
        Ok(Arc::clone(entry))
    }

    fn lock_open(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<Upload>>>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends `upload`: when what it received hashes to `expected`, the data
    /// is flushed and renamed into place and the blob's size returned. The
    /// upload is gone afterwards either way.
    pub async fn finish(&self, upload: &mut Upload, expected: &Digest) -> Result<u64, BlobError> {
        let actual = upload
            .digest()
            .ok_or_else(|| BlobError::UploadUnknown(upload.id.clone()))?;
        if &actual != expected {
            self.discard(upload).await;
            return Err(BlobError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let file = upload.file.take();
        let source = upload.dir.join("data");
        let target = self.blob_path(expected);
        let size = upload.size;
        let moved = tokio::task::spawn_blocking(move || -> Result<(), BlobError> {
            if let Some(file) = file {
                file.sync_all().map_err(io(&source))?;
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::rename(&source, &target).map_err(io(&target))?;
            // The rename must survive a crash too.
            if let Some(parent) = target.parent() {
                std::fs::File::open(parent)
                    .and_then(|dir| dir.sync_all())
                    .map_err(io(parent))?;
            }
            Ok(())
        })
        .await;
        self.discard(upload).await;
        match moved {
            Ok(result) => result.map(|()| size),
            Err(_) => Err(BlobError::UploadUnknown(upload.id.clone())),
        }
    }

    /// Forgets an upload and removes what it received.
    pub async fn discard(&self, upload: &mut Upload) {
        upload.file = None;
        upload.hasher = None;
        self.lock_open().remove(&upload.id);
        if let Err(error) = tokio::fs::remove_dir_all(&upload.dir).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %upload.dir.display(), %error, "cannot remove an upload");
            }
        }
    }

    /// Every stored blob, with its file's modification time in ms.
    pub fn list_blobs(&self) -> Result<Vec<(Digest, u64)>, BlobError> {
        let base = self.root.join("blobs/sha256");
        let mut found = Vec::new();
        for shard in std::fs::read_dir(&base).map_err(io(&base))? {
            let shard = shard.map_err(io(&base))?.path();
            let Ok(entries) = std::fs::read_dir(&shard) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let Ok(digest) = Digest::parse(&format!("sha256:{name}")) else {
                    continue;
                };
                let modified_ms = entry
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64);
                found.push((digest, modified_ms));
            }
        }
        Ok(found)
    }

    /// Removes a blob file.
    pub fn delete_blob(&self, digest: &Digest) -> Result<(), BlobError> {
        let path = self.blob_path(digest);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io(&path)(error)),
        }
    }

    /// Removes uploads started before `started_before_ms` that no request is using.
    pub fn collect_uploads(&self, started_before_ms: u64) -> usize {
        let base = self.root.join("uploads");
        let Ok(entries) = std::fs::read_dir(&base) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let dir = entry.path();
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let started = std::fs::read(dir.join("upload.json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<UploadInfo>(&bytes).ok())
                .map_or(0, |info| info.started_at_ms);
            if started >= started_before_ms {
                continue;
            }
            {
                let mut open = self.lock_open();
                if let Some(upload) = open.get(&id) {
                    // In use by a request right now: leave it.
                    if upload.try_lock().is_err() {
                        continue;
                    }
                }
                open.remove(&id);
            }
            if std::fs::remove_dir_all(&dir).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// Upload ids are ours (UUIDs), but clients send them back in URLs: only
/// ids that cannot name another path are looked up.
fn valid_upload_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= UPLOAD_ID_MAX_CHARS
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn reopen(dir: PathBuf) -> Result<Upload, BlobError> {
    let info_path = dir.join("upload.json");
    let info: UploadInfo = std::fs::read(&info_path)
        .map_err(io(&info_path))
        .and_then(|bytes| {
            serde_json::from_slice(&bytes).map_err(|error| BlobError::Io {
                path: info_path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
            })
        })?;
    let data_path = dir.join("data");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(&data_path)
        .map_err(io(&data_path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; REHASH_CHUNK_BYTES];
    let mut size = 0u64;
    loop {
        let read = file.read(&mut buffer).map_err(io(&data_path))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    let id = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    Ok(Upload {
        id,
        info,
        dir,
        file: Some(file),
        hasher: Some(hasher),
        size,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_verified_upload_becomes_visible_and_a_wrong_one_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let content = b"hello layer".repeat(1000);
        let digest = Digest::of(&content);

        store.start_upload("u1", "web", 1).unwrap();
        let upload = store.upload("u1").await.unwrap();
        let mut upload = upload.lock().await;
        upload
            .write(Bytes::copy_from_slice(&content[..100]))
            .await
            .unwrap();
        upload
            .write(Bytes::copy_from_slice(&content[100..]))
            .await
            .unwrap();
        assert_eq!(upload.size(), content.len() as u64);
        assert_eq!(
            store.size(&digest),
            None,
            "not visible before it is finished"
        );
        assert_eq!(
            store.finish(&mut upload, &digest).await.unwrap(),
            content.len() as u64
        );
        drop(upload);
        assert_eq!(store.size(&digest), Some(content.len() as u64));
        assert_eq!(store.read(&digest).await.unwrap(), content);
        assert!(
            store.upload("u1").await.is_err(),
            "a finished upload is gone"
        );

        store.start_upload("u2", "web", 1).unwrap();
        let upload = store.upload("u2").await.unwrap();
        let mut upload = upload.lock().await;
        upload.write(Bytes::from_static(b"corrupt")).await.unwrap();
        let wrong = Digest::of(b"something else");
        assert!(matches!(
            store.finish(&mut upload, &wrong).await,
            Err(BlobError::DigestMismatch { .. })
        ));
        assert_eq!(store.size(&wrong), None);
        assert_eq!(store.list_blobs().unwrap().len(), 1);
        assert!(!dir.path().join("uploads/u2").exists());
    }

    #[tokio::test]
    async fn an_upload_resumes_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = BlobStore::open(dir.path()).unwrap();
            store.start_upload("u1", "web", 1).unwrap();
            let upload = store.upload("u1").await.unwrap();
            upload
                .lock()
                .await
                .write(Bytes::from_static(b"first half,"))
                .await
                .unwrap();
        }
        let store = BlobStore::open(dir.path()).unwrap();
        let upload = store.upload("u1").await.unwrap();
        let mut upload = upload.lock().await;
        assert_eq!(upload.size(), 11);
        assert_eq!(upload.repository(), "web");
        upload
            .write(Bytes::from_static(b" second half"))
            .await
            .unwrap();
        let digest = Digest::of(b"first half, second half");
        store.finish(&mut upload, &digest).await.unwrap();
        assert!(store.size(&digest).is_some());
    }

    #[tokio::test]
    async fn upload_ids_cannot_escape_and_stale_uploads_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        for bad in ["../x", "a/b", "", ".."] {
            assert!(store.start_upload(bad, "web", 0).is_err());
            assert!(store.upload(bad).await.is_err());
        }
        store.start_upload("old", "web", 10).unwrap();
        store.start_upload("new", "web", 1000).unwrap();
        assert_eq!(store.collect_uploads(500), 1);
        assert!(store.upload("old").await.is_err());
        assert!(store.upload("new").await.is_ok());
    }
}
