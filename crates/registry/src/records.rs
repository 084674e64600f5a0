//! The registry's records in the store, where they live, and the
//! read–decide–commit loop every change goes through.
//!
//! | key | value |
//! |---|---|
//! | `ecr/repositories/{name}` | [`RepositoryRecord`] |
//! | `ecr/images/{name}!{digest}` | [`ImageRecord`] (the manifest itself included) |
//! | `ecr/tags/{name}!{tag}` | [`TagRecord`] |
//! | `ecr/layers/{name}!{digest}` | [`LayerRecord`]: the blob was pushed to (or mounted into) the repository |
//!
//! `!` is not allowed in repository names, so one repository's prefix never
//! matches another's.

use flotilla_store::{Entry, Store};
use flotilla_types::ecr::{EncryptionConfiguration, ImageScanningConfiguration, Tag};
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

// The typed get and the retry loop are shared with the control plane.
pub use flotilla_records::{
    decode, encode, get, mutate, mutate_with, store_error, Attempt, Versioned,
};

use crate::digest::Digest;

/// A repository and its settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepositoryRecord {
    pub name: String,
    pub created_at_ms: u64,
    /// `MUTABLE` or `IMMUTABLE`.
    pub tag_mutability: String,
    pub encryption: EncryptionConfiguration,
    pub scanning: ImageScanningConfiguration,
    pub resource_tags: Vec<Tag>,
    pub policy_text: Option<String>,
    pub lifecycle_policy_text: Option<String>,
    pub lifecycle_evaluated_at_ms: Option<u64>,
    pub lifecycle_preview: Option<PreviewRecord>,
}

impl RepositoryRecord {
    pub fn immutable_tags(&self) -> bool {
        self.tag_mutability.starts_with("IMMUTABLE")
    }
}

/// The result of the last StartLifecyclePolicyPreview.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreviewRecord {
    pub policy_text: String,
    pub expiring: Vec<PreviewEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreviewEntry {
    pub digest: Digest,
    pub tags: Vec<String>,
    pub pushed_at_ms: u64,
    pub rule_priority: i64,
}

/// One manifest in one repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub digest: Digest,
    pub media_type: String,
    /// The manifest exactly as pushed (manifests are UTF-8 JSON).
    pub manifest: String,
    /// The manifest's blobs' sizes added up, as ECR reports an image's size.
    pub size_bytes: u64,
    pub pushed_at_ms: u64,
    pub last_pull_ms: Option<u64>,
    /// Config and layers.
    pub blobs: Vec<Digest>,
    /// Manifests an index lists.
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    pub artifact_type: Option<String>,
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TagRecord {
    pub digest: Digest,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub size: u64,
    pub linked_at_ms: u64,
}

pub mod keys {
    use crate::digest::Digest;

    pub const REPOSITORIES: &str = "ecr/repositories/";
    pub const IMAGES: &str = "ecr/images/";
    pub const TAGS: &str = "ecr/tags/";
    pub const LAYERS: &str = "ecr/layers/";

    pub fn repository(name: &str) -> String {
        format!("{REPOSITORIES}{name}")
    }

    pub fn images_of(repository: &str) -> String {
        format!("{IMAGES}{repository}!")
    }

    pub fn image(repository: &str, digest: &Digest) -> String {
        format!("{IMAGES}{repository}!{digest}")
    }

    pub fn tags_of(repository: &str) -> String {
        format!("{TAGS}{repository}!")
    }

    pub fn tag(repository: &str, tag: &str) -> String {
        format!("{TAGS}{repository}!{tag}")
    }

    pub fn layers_of(repository: &str) -> String {
        format!("{LAYERS}{repository}!")
    }

    pub fn layer(repository: &str, digest: &Digest) -> String {
        format!("{LAYERS}{repository}!{digest}")
    }

    /// The repository and the rest of a key under one of the per-repository prefixes.
    pub fn split(prefix: &str, key: &str) -> Option<(String, String)> {
        let rest = key.strip_prefix(prefix)?;
        let (repository, item) = rest.split_once('!')?;
        Some((repository.to_owned(), item.to_owned()))
    }
}

/// Every entry under `prefix`, page by page, up to `limit` entries.
pub fn list_all(store: &dyn Store, prefix: &str, limit: usize) -> Result<Vec<Entry>, ApiError> {
    let mut entries: Vec<Entry> = Vec::new();
    loop {
        let after = entries.last().map(|e| e.key.clone());
        let page = store
            .list(prefix, after.as_deref(), flotilla_store::LIST_LIMIT_MAX)
            .map_err(store_error)?;
        entries.extend(page.entries);
        if !page.more || entries.len() >= limit {
            entries.truncate(limit);
            return Ok(entries);
        }
    }
}
