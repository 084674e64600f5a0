//! Garbage collection: layer links no image needs, blob files no
//! repository links, uploads abandoned long ago, and the records of
//! repositories whose deletion was cut short.
//!
//! *Architecture invariant:* collection holds the registry's gc lock
//! exclusively while it deletes, and everything that makes a blob readable
//! or references one holds it shared; so a blob that a push has just
//! checked, linked or referenced is never collected under it.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_store::Txn;

use crate::digest::Digest;
use crate::records::{self, keys, ImageRecord, LayerRecord};
use crate::{Registry, RegistryError};

/// How long a blob pushed to a repository stays without any image
/// referencing it: the time a push has between its blobs and its manifest.
pub const LAYER_LINK_GRACE_MS: u64 = 24 * 60 * 60 * 1000;
/// How long an upload may sit unfinished before it is removed.
pub const UPLOAD_MAX_AGE_MS: u64 = 24 * 60 * 60 * 1000;
/// Most entries read per prefix in one collection.
const COLLECT_ITEMS_MAX: usize = 1_000_000;

/// What one collection removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub layer_links_removed: usize,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    pub uploads_removed: usize,
    pub orphan_records_removed: usize,
}

impl Registry {
    /// Collects what nothing needs any more. Layer links younger than
    /// `link_grace_ms` are kept even when no image references them yet.
    pub async fn collect_garbage(
        &self,
        now_ms: u64,
        link_grace_ms: u64,
    ) -> Result<GcReport, RegistryError> {
        let _exclusive = self.gc_lock.write().await;
        let mut report = GcReport::default();
        let store = &*self.store;
        let repositories: BTreeSet<String> =
            records::list_all(store, keys::REPOSITORIES, COLLECT_ITEMS_MAX)?
                .into_iter()
                .map(|entry| entry.key[keys::REPOSITORIES.len()..].to_owned())
                .collect();

        // Blobs each repository's images reference.
        let mut referenced: BTreeMap<String, BTreeSet<Digest>> = BTreeMap::new();
        let mut doomed: Vec<(String, u64)> = Vec::new();
        for entry in records::list_all(store, keys::IMAGES, COLLECT_ITEMS_MAX)? {
            let Some((repository, _)) = keys::split(keys::IMAGES, &entry.key) else {
                continue;
            };
            if !repositories.contains(&repository) {
                doomed.push((entry.key.clone(), entry.mod_revision));
                continue;
            }
            let image: ImageRecord = records::decode(&entry)?;
            referenced
                .entry(repository)
                .or_default()
                .extend(image.blobs);
        }
        for entry in records::list_all(store, keys::TAGS, COLLECT_ITEMS_MAX)? {
            match keys::split(keys::TAGS, &entry.key) {
                Some((repository, _)) if repositories.contains(&repository) => {}
                _ => doomed.push((entry.key.clone(), entry.mod_revision)),
            }
        }
        report.orphan_records_removed = doomed.len();

        let mut live: BTreeSet<Digest> = BTreeSet::new();
        let mut unlinked = 0;
        for entry in records::list_all(store, keys::LAYERS, COLLECT_ITEMS_MAX)? {
            let Some((repository, digest)) = keys::split(keys::LAYERS, &entry.key) else {
                continue;
            };
            let Ok(digest) = Digest::parse(&digest) else {
                doomed.push((entry.key.clone(), entry.mod_revision));
                continue;
            };
            if !repositories.contains(&repository) {
                report.orphan_records_removed += 1;
                doomed.push((entry.key.clone(), entry.mod_revision));
                continue;
            }
            let link: LayerRecord = records::decode(&entry)?;
            let needed = referenced
                .get(&repository)
                .is_some_and(|blobs| blobs.contains(&digest));
            if needed || now_ms.saturating_sub(link.linked_at_ms) < link_grace_ms {
                live.insert(digest);
            } else {
                unlinked += 1;
                doomed.push((entry.key.clone(), entry.mod_revision));
            }
        }
        report.layer_links_removed = unlinked;
        // Each removal is conditional on the revision read: a record
        // rewritten meanwhile (a blob pushed again) stays.
        // Each removal is one condition and one delete.
        for batch in doomed.chunks(store.limits().items_per_txn(1)) {
            let mut txn = Txn::new();
            for (key, revision) in batch {
                txn = txn.expect(key.clone(), *revision).delete(key.clone());
            }
            if let Err(error) = store.commit(txn).await {
                tracing::debug!(%error, "a collection batch lost a race; the next collection retries it");
                live.extend(batch.iter().filter_map(|(key, _)| {
                    keys::split(keys::LAYERS, key).and_then(|(_, d)| Digest::parse(&d).ok())
                }));
            }
        }

        for (digest, _modified_ms) in self.blobs.list_blobs()? {
            if live.contains(&digest) {
                continue;
            }
            let size = self.blobs.size(&digest).unwrap_or(0);
            self.blobs.delete_blob(&digest)?;
            report.blobs_removed += 1;
            report.bytes_freed += size;
        }
        report.uploads_removed = self
            .blobs
            .collect_uploads(now_ms.saturating_sub(UPLOAD_MAX_AGE_MS));
        if report != GcReport::default() {
            tracing::info!(?report, "registry garbage collected");
        }
        Ok(report)
    }

    /// Removes a repository's images, tags and layer links in bounded
    /// batches (the repository record itself is the caller's).
    pub(crate) async fn remove_contents(&self, repository: &str) -> Result<(), RegistryError> {
        for prefix in [
            keys::images_of(repository),
            keys::tags_of(repository),
            keys::layers_of(repository),
        ] {
            loop {
                let page = self
                    .store
                    .list(&prefix, None, self.store.limits().items_per_txn(1))
                    .map_err(records::store_error)?;
                if page.entries.is_empty() {
                    break;
                }
                let txn = page
                    .entries
                    .iter()
                    .fold(Txn::new(), |txn, entry| txn.delete(entry.key.clone()));
                self.store.commit(txn).await.map_err(records::store_error)?;
            }
        }
        Ok(())
    }
}
