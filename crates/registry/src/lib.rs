//! Flotilla's image registry: an OCI distribution registry that Docker,
//! containerd, skopeo and crane push to and pull from, and the Amazon ECR
//! API over the same content.
//!
//! ```text
//!  docker / skopeo ──HTTP /v2/──▶ edge ──▶ Registry::{blob,upload,manifest}_* ─┐
//!  aws ecr / boto3 ──JSON 1.1──▶ edge ──▶ Registry::handle_ecr ────────────────┤
//!                                                                             ▼
//!                       blobs on disk (content-addressed)   records in the Store
//! ```
//!
//! Vocabulary: a *blob* is content named by its digest (a layer, a config);
//! a *manifest* lists blobs (an image) or other manifests (an index); an
//! *image* is a manifest stored in a repository; a *tag* names an image; a
//! *layer link* records that a blob was pushed to (or mounted into) a
//! repository, which is what makes it readable there.
//!
//! *Architecture invariant:* no wall clock and no randomness: every
//! operation takes the time (`now_ms`) and any fresh id from its caller.
//! *Architecture invariant:* a blob is visible only after its digest was
//! verified ([`blobs`]); an image is stored only when every blob and
//! manifest it references is readable in its repository; a refused request
//! changes nothing.
//! *API boundary:* no HTTP here: the edge turns requests into these calls
//! and these errors into status codes.

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use flotilla_store::{Store, Txn};
use flotilla_types::arn::Scope;

pub mod blobs;
pub mod digest;
mod ecr;
mod error;
mod gc;
pub mod lifecycle;
pub mod manifest;
pub mod names;
pub mod records;
pub mod token;

pub use blobs::{BlobStore, Upload};
pub use digest::Digest;
pub use ecr::{EcrCaller, PART_SIZE_BYTES};
pub use error::RegistryError;
pub use gc::{GcReport, LAYER_LINK_GRACE_MS, UPLOAD_MAX_AGE_MS};
pub use manifest::{Descriptor, Manifest, ManifestKind};

use records::{keys, Attempt, ImageRecord, LayerRecord, RepositoryRecord, TagRecord};

/// Most tags, images or layer links of one repository read in one go.
pub const REPOSITORY_ITEMS_MAX: usize = 100_000;
/// A manifest's pull time is written at most this often, so that pulls are
/// not each a store commit.
pub const PULL_TIME_RESOLUTION_MS: u64 = 60 * 1000;
/// Largest page of tags or repositories one listing returns.
pub const LIST_PAGE_MAX: usize = 1_000;

/// A manifest reference: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        if text.contains(':') {
            Digest::parse(text)
                .map(Reference::Digest)
                .map_err(|error| RegistryError::DigestInvalid(error.to_string()))
        } else if names::valid_tag(text) {
            Ok(Reference::Tag(text.to_owned()))
        } else {
            Err(RegistryError::TagInvalid(text.chars().take(200).collect()))
        }
    }
}

/// A manifest as served.
#[derive(Clone, Debug)]
pub struct ManifestAnswer {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// What storing a manifest did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutManifestOutcome {
    pub digest: Digest,
    pub subject: Option<Digest>,
    /// False when the image was already stored under this reference.
    pub changed: bool,
}

/// The registry: blobs on disk, records in the store.
pub struct Registry {
    store: Arc<dyn Store>,
    blobs: BlobStore,
    scope: Scope,
    /// `host[:port]` that repository URIs name and Docker pushes to.
    host: String,
    tokens: token::TokenKey,
    /// Held shared by everything that makes a blob readable in a repository
    /// or references one, exclusively by garbage collection, so that a blob
    /// is never collected between being checked and being referenced.
    gc_lock: tokio::sync::RwLock<()>,
}

impl Registry {
    /// Opens the registry whose blobs and token key live under `dir`.
    pub fn open(
        store: Arc<dyn Store>,
        scope: Scope,
        dir: &Path,
        host: String,
    ) -> Result<Self, RegistryError> {
        let blobs = BlobStore::open(dir)?;
        let key_path = dir.join("token.key");
        let tokens = token::TokenKey::load_or_create(&key_path, token::random_key).map_err(|error| {
            tracing::error!(path = %key_path.display(), %error, "cannot read or create the token key");
            RegistryError::Internal(format!("cannot read or create the token key {}", key_path.display()))
        })?;
        Ok(Self {
            store,
            blobs,
            scope,
            host,
            tokens,
            gc_lock: tokio::sync::RwLock::new(()),
        })
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// `host[:port]` of the registry, as repository URIs name it.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    pub fn repository_uri(&self, name: &str) -> String {
        format!("{}/{name}", self.host)
    }

    /// A registry token for `principal_arn`: (token, expiry in ms).
    pub fn issue_token(&self, principal_arn: &str, now_ms: u64) -> (String, u64) {
        let (token, claims) = self
            .tokens
            .issue(principal_arn, &self.scope.account_id, now_ms);
        (token, claims.expires_at_ms)
    }

    /// The principal a valid, unexpired token was issued to.
    pub fn verify_token(
        &self,
        token: &str,
        now_ms: u64,
    ) -> Result<token::Claims, token::TokenError> {
        self.tokens.verify(token, now_ms)
    }

    // ---- repositories ----------------------------------------------------

    fn repository(
        &self,
        name: &str,
    ) -> Result<records::Versioned<RepositoryRecord>, RegistryError> {
        if !names::valid_repository_name(name) {
            return Err(RegistryError::NameInvalid(name.chars().take(300).collect()));
        }
        records::get(&*self.store, &keys::repository(name))?.ok_or_else(|| self.not_found(name))
    }

    fn not_found(&self, name: &str) -> RegistryError {
        RegistryError::RepositoryNotFound {
            name: name.to_owned(),
            registry_id: self.scope.account_id.clone(),
        }
    }

    /// Repository names after `last`, at most `n`, and whether more follow.
    pub fn catalog(
        &self,
        n: usize,
        last: Option<&str>,
    ) -> Result<(Vec<String>, bool), RegistryError> {
        let after = last.map(keys::repository);
        let page = self
            .store
            .list(keys::REPOSITORIES, after.as_deref(), n.min(LIST_PAGE_MAX))
            .map_err(records::store_error)?;
        let names = page
            .entries
            .iter()
            .map(|e| e.key[keys::REPOSITORIES.len()..].to_owned())
            .collect();
        Ok((names, page.more))
    }

    // ---- blobs -----------------------------------------------------------

    /// The size of a blob readable in `repository`.
    pub fn blob_size(&self, repository: &str, digest: &Digest) -> Result<u64, RegistryError> {
        self.repository(repository)?;
        let linked = self
            .store
            .get(&keys::layer(repository, digest))
            .map_err(records::store_error)?;
        match (linked, self.blobs.size(digest)) {
            (Some(_), Some(size)) => Ok(size),
            _ => Err(RegistryError::BlobUnknown(digest.clone())),
        }
    }

    /// Opens a blob readable in `repository`, with its size.
    pub async fn open_blob(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<(tokio::fs::File, u64), RegistryError> {
        let size = self.blob_size(repository, digest)?;
        let file = self
            .blobs
            .open_blob(digest)
            .await
            .map_err(|_| RegistryError::BlobUnknown(digest.clone()))?;
        Ok((file, size))
    }

    /// Starts an upload into `repository` under the fresh id `upload_id`.
    pub fn start_upload(
        &self,
        repository: &str,
        upload_id: &str,
        now_ms: u64,
    ) -> Result<(), RegistryError> {
        self.repository(repository)?;
        Ok(self.blobs.start_upload(upload_id, repository, now_ms)?)
    }

    /// An upload in progress into `repository`.
    pub async fn upload(
        &self,
        repository: &str,
        upload_id: &str,
    ) -> Result<Arc<tokio::sync::Mutex<Upload>>, RegistryError> {
        self.repository(repository)?;
        let upload = self.blobs.upload(upload_id).await?;
        if upload.lock().await.repository() != repository {
            return Err(RegistryError::UploadUnknown(upload_id.to_owned()));
        }
        Ok(upload)
    }

    /// Verifies and stores what `upload` received as blob `digest`, and
    /// makes it readable in the upload's repository. Returns its size.
    pub async fn complete_upload(
        &self,
        upload: &mut Upload,
        digest: &Digest,
        now_ms: u64,
    ) -> Result<u64, RegistryError> {
        let repository = upload.repository().to_owned();
        let _shared = self.gc_lock.read().await;
        if let Err(error) = self.repository(&repository) {
            self.blobs.discard(upload).await;
            return Err(error);
        }
        let size = self.blobs.finish(upload, digest).await?;
        self.link(&repository, digest, size, now_ms).await?;
        Ok(size)
    }

    /// Abandons an upload; what it received is removed.
    pub async fn cancel_upload(&self, upload: &mut Upload) {
        self.blobs.discard(upload).await;
    }

    /// Makes blob `digest` of repository `from` readable in `repository`
    /// too, when `from` has it. Returns its size, or `None` when there is
    /// nothing to mount (the client then uploads it).
    pub async fn mount_blob(
        &self,
        repository: &str,
        from: &str,
        digest: &Digest,
        now_ms: u64,
    ) -> Result<Option<u64>, RegistryError> {
        self.repository(repository)?;
        let _shared = self.gc_lock.read().await;
        let size = match self.blob_size(from, digest) {
            Ok(size) => size,
            Err(RegistryError::Internal(message)) => return Err(RegistryError::Internal(message)),
            Err(_) => return Ok(None),
        };
        self.link(repository, digest, size, now_ms).await?;
        Ok(Some(size))
    }

    async fn link(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        now_ms: u64,
    ) -> Result<(), RegistryError> {
        let repository_key = keys::repository(repository);
        let layer_key = keys::layer(repository, digest);
        let record = LayerRecord {
            size,
            linked_at_ms: now_ms,
        };
        records::mutate_with(&*self.store, || {
            let repo = self.repository(repository)?;
            let existing = self.store.get(&layer_key).map_err(records::store_error)?;
            let txn = Txn::new()
                .expect(repository_key.clone(), repo.revision)
                .expect(layer_key.clone(), existing.map_or(0, |e| e.mod_revision))
                .put(layer_key.clone(), records::encode(&record));
            Ok::<_, RegistryError>(Attempt::Commit(txn, ()))
        })
        .await
    }

    // ---- manifests -------------------------------------------------------

    fn image_by_reference(
        &self,
        repository: &str,
        reference: &Reference,
    ) -> Result<records::Versioned<ImageRecord>, RegistryError> {
        let digest = match reference {
            Reference::Digest(digest) => digest.clone(),
            Reference::Tag(tag) => {
                let tag_record: Option<records::Versioned<TagRecord>> =
                    records::get(&*self.store, &keys::tag(repository, tag))?;
                tag_record
                    .ok_or_else(|| RegistryError::ManifestUnknown(tag.clone()))?
                    .value
                    .digest
            }
        };
        records::get(&*self.store, &keys::image(repository, &digest))?
            .ok_or_else(|| RegistryError::ManifestUnknown(digest.to_string()))
    }

    /// The manifest `reference` names in `repository`. When `record_pull`,
    /// the image's pull time is brought up to date (in the background).
    pub fn get_manifest(
        &self,
        repository: &str,
        reference: &Reference,
        record_pull: bool,
        now_ms: u64,
    ) -> Result<ManifestAnswer, RegistryError> {
        self.repository(repository)?;
        let image = self.image_by_reference(repository, reference)?.value;
        let stale = image
            .last_pull_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= PULL_TIME_RESOLUTION_MS);
        if record_pull && stale {
            self.record_pull(repository, &image.digest, now_ms);
        }
        Ok(ManifestAnswer {
            digest: image.digest,
            media_type: image.media_type,
            bytes: Bytes::from(image.manifest),
        })
    }

    fn record_pull(&self, repository: &str, digest: &Digest, now_ms: u64) {
        let store = Arc::clone(&self.store);
        let key = keys::image(repository, digest);
        // Runs only inside a tokio runtime, which every caller but unit tests of pure parts has.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            let result = records::mutate(&*store, || {
                let Some(mut image) = records::get::<ImageRecord>(&*store, &key)? else {
                    return Ok::<_, flotilla_types::ApiError>(Attempt::Done(()));
                };
                if image.value.last_pull_ms.is_some_and(|at| at >= now_ms) {
                    return Ok(Attempt::Done(()));
                }
                image.value.last_pull_ms = Some(now_ms);
                let txn = Txn::new()
                    .expect(key.clone(), image.revision)
                    .put(key.clone(), records::encode(&image.value));
                Ok(Attempt::Commit(txn, ()))
            })
            .await;
            if let Err(error) = result {
                tracing::debug!(%error, "recording a pull time failed");
            }
        });
    }

    /// Checks and stores a manifest under `reference`. `content_type` is
    /// what the client said it sends (empty: not said).
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &Reference,
        content_type: &str,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<PutManifestOutcome, RegistryError> {
        self.repository(repository)?;
        let digest = Digest::of(bytes);
        if let Reference::Digest(named) = reference {
            if named != &digest {
                return Err(RegistryError::DigestMismatch {
                    expected: named.clone(),
                    actual: digest,
                });
            }
        }
        let manifest = manifest::parse(bytes, content_type)?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| RegistryError::ManifestInvalid("manifest is not UTF-8".to_owned()))?
            .to_owned();
        let _shared = self.gc_lock.read().await;
        let mut size_bytes = 0u64;
        for blob in manifest.blobs() {
            match self.blob_size(repository, &blob.digest) {
                Ok(size) if size == blob.size => size_bytes = size_bytes.saturating_add(size),
                Ok(size) => {
                    return Err(RegistryError::ManifestInvalid(format!(
                        "blob {} is {size} bytes, not the {} the manifest says",
                        blob.digest, blob.size
                    )))
                }
                Err(RegistryError::BlobUnknown(missing)) => {
                    return Err(RegistryError::ManifestBlobUnknown(missing))
                }
                Err(other) => return Err(other),
            }
        }
        for child in &manifest.manifests {
            let found = self
                .store
                .get(&keys::image(repository, &child.digest))
                .map_err(records::store_error)?;
            if found.is_none() {
                return Err(RegistryError::ManifestBlobUnknown(child.digest.clone()));
            }
            size_bytes = size_bytes.saturating_add(child.size);
        }
        if manifest.kind.is_index() || size_bytes == 0 {
            size_bytes = size_bytes.max(bytes.len() as u64);
        }
        let record = ImageRecord {
            digest: digest.clone(),
            media_type: manifest.kind.media_type().to_owned(),
            manifest: text,
            size_bytes,
            pushed_at_ms: now_ms,
            last_pull_ms: None,
            blobs: manifest.blobs().map(|d| d.digest.clone()).collect(),
            children: manifest
                .manifests
                .iter()
                .map(|d| d.digest.clone())
                .collect(),
            subject: manifest.subject.as_ref().map(|d| d.digest.clone()),
            artifact_type: manifest.artifact_type.clone(),
            annotations: manifest.annotations.clone(),
        };
        let repository_key = keys::repository(repository);
        let image_key = keys::image(repository, &digest);
        let tag = match reference {
            Reference::Tag(tag) => Some(tag.clone()),
            Reference::Digest(_) => None,
        };
        let subject = record.subject.clone();
        records::mutate_with(&*self.store, || {
            let repo = self.repository(repository)?;
            let image = self.store.get(&image_key).map_err(records::store_error)?;
            let mut txn = Txn::new().expect(repository_key.clone(), repo.revision);
            let mut changed = false;
            match &image {
                Some(entry) => txn = txn.expect(image_key.clone(), entry.mod_revision),
                None => {
                    txn = txn
                        .expect(image_key.clone(), 0)
                        .put(image_key.clone(), records::encode(&record));
                    changed = true;
                }
            }
            if let Some(tag) = &tag {
                let tag_key = keys::tag(repository, tag);
                let current: Option<records::Versioned<TagRecord>> =
                    records::get(&*self.store, &tag_key)?;
                match &current {
                    Some(current) if current.value.digest == digest => {}
                    Some(_) if repo.value.immutable_tags() => {
                        return Err(RegistryError::TagImmutable {
                            tag: tag.clone(),
                            repository: repository.to_owned(),
                        })
                    }
                    _ => {
                        let revision = current.as_ref().map_or(0, |c| c.revision);
                        txn = txn.expect(tag_key.clone(), revision).put(
                            tag_key,
                            records::encode(&TagRecord {
                                digest: digest.clone(),
                            }),
                        );
                        changed = true;
                    }
                }
            }
            let outcome = PutManifestOutcome {
                digest: digest.clone(),
                subject: subject.clone(),
                changed,
            };
            Ok(if changed {
                Attempt::Commit(txn, outcome)
            } else {
                Attempt::Done(outcome)
            })
        })
        .await
    }

    /// Deletes what `reference` names: a tag alone, or an image with every
    /// tag that points at it.
    pub async fn delete_manifest(
        &self,
        repository: &str,
        reference: &Reference,
    ) -> Result<(), RegistryError> {
        self.repository(repository)?;
        match reference {
            Reference::Tag(tag) => {
                let tag_key = keys::tag(repository, tag);
                records::mutate_with(&*self.store, || {
                    let current = self.store.get(&tag_key).map_err(records::store_error)?;
                    let entry =
                        current.ok_or_else(|| RegistryError::ManifestUnknown(tag.clone()))?;
                    let txn = Txn::new()
                        .expect(tag_key.clone(), entry.mod_revision)
                        .delete(tag_key.clone());
                    Ok(Attempt::Commit(txn, ()))
                })
                .await
            }
            Reference::Digest(digest) => self.delete_image(repository, digest).await,
        }
    }

    /// Deletes an image and its tags, unless an index in the repository lists it.
    pub async fn delete_image(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let repository_key = keys::repository(repository);
        let image_key = keys::image(repository, digest);
        records::mutate_with(&*self.store, || {
            let repo = self.repository(repository)?;
            let image = self.store.get(&image_key).map_err(records::store_error)?;
            let image = image.ok_or_else(|| RegistryError::ManifestUnknown(digest.to_string()))?;
            let images = self.images(repository)?;
            if images.iter().any(|other| other.children.contains(digest)) {
                return Err(RegistryError::ReferencedByIndex(digest.clone()));
            }
            let mut txn = Txn::new()
                .expect(repository_key.clone(), repo.revision)
                .expect(image_key.clone(), image.mod_revision)
                .delete(image_key.clone());
            for (tag, revision) in self.tags_pointing_at(repository, digest)? {
                let key = keys::tag(repository, &tag);
                txn = txn.expect(key.clone(), revision).delete(key);
            }
            Ok(Attempt::Commit(txn, ()))
        })
        .await
    }

    /// Every image of a repository.
    pub fn images(&self, repository: &str) -> Result<Vec<ImageRecord>, RegistryError> {
        records::list_all(
            &*self.store,
            &keys::images_of(repository),
            REPOSITORY_ITEMS_MAX,
        )?
        .iter()
        .map(|entry| records::decode(entry).map_err(RegistryError::from))
        .collect()
    }

    /// Every tag of a repository and the digest it names, in tag order.
    pub fn tag_map(&self, repository: &str) -> Result<Vec<(String, Digest, u64)>, RegistryError> {
        let prefix = keys::tags_of(repository);
        records::list_all(&*self.store, &prefix, REPOSITORY_ITEMS_MAX)?
            .iter()
            .map(|entry| {
                let record: TagRecord = records::decode(entry)?;
                Ok((
                    entry.key[prefix.len()..].to_owned(),
                    record.digest,
                    entry.mod_revision,
                ))
            })
            .collect()
    }

    fn tags_pointing_at(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Vec<(String, u64)>, RegistryError> {
        Ok(self
            .tag_map(repository)?
            .into_iter()
            .filter(|(_, target, _)| target == digest)
            .map(|(tag, _, revision)| (tag, revision))
            .collect())
    }

    /// Tags of `repository` after `last`, at most `n`, and whether more follow.
    pub fn list_tags(
        &self,
        repository: &str,
        n: usize,
        last: Option<&str>,
    ) -> Result<(Vec<String>, bool), RegistryError> {
        self.repository(repository)?;
        let prefix = keys::tags_of(repository);
        let after = last.map(|tag| keys::tag(repository, tag));
        let page = self
            .store
            .list(&prefix, after.as_deref(), n.min(LIST_PAGE_MAX))
            .map_err(records::store_error)?;
        let tags = page
            .entries
            .iter()
            .map(|e| e.key[prefix.len()..].to_owned())
            .collect();
        Ok((tags, page.more))
    }

    /// Descriptors of the manifests in `repository` whose subject is
    /// `digest`, those of `artifact_type` only when one is given.
    pub fn referrers(
        &self,
        repository: &str,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, RegistryError> {
        self.repository(repository)?;
        Ok(self
            .images(repository)?
            .into_iter()
            .filter(|image| image.subject.as_ref() == Some(digest))
            .filter(|image| {
                artifact_type.is_none() || image.artifact_type.as_deref() == artifact_type
            })
            .map(|image| {
                let mut descriptor = serde_json::json!({
                    "mediaType": image.media_type,
                    "digest": image.digest.to_string(),
                    "size": image.manifest.len(),
                });
                if let Some(artifact_type) = &image.artifact_type {
                    descriptor["artifactType"] = serde_json::Value::from(artifact_type.as_str());
                }
                if !image.annotations.is_empty() {
                    descriptor["annotations"] = serde_json::json!(image.annotations);
                }
                descriptor
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
