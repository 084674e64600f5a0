//! Instance records as placement reads them, decoded once per revision.
//!
//! Every RunTask attempt reads every instance record of its cluster and
//! builds the scheduler's `Instance` from each. With a thousand instances
//! that decoding was most of a RunTask's time, and nearly all of it repeated
//! work: a RunTask writes the few instances it places on. The store's
//! listing stays the source of truth: an entry is reused only while its
//! `mod_revision` is the one it was decoded at, so what placement sees is
//! exactly what the listing returned, and the commit's revision conditions
//! are unchanged.
//!
//! Bound: per cluster, only the instances the last listing returned are
//! kept (at most `CLUSTER_SCAN_RECORDS_MAX`); a cluster's entries are
//! replaced whole by each listing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flotilla_store::{Entry, Revision};
use flotilla_types::ApiError;

use crate::instances::InstanceRecord;
use crate::placement;
use crate::records;

struct Cached {
    revision: Revision,
    record: Arc<InstanceRecord>,
    /// `None` while the record does not count its task groups (written by
    /// an older server): its scheduler view then needs the tasks.
    instance: Option<flotilla_scheduler::Instance>,
}

type Entries = HashMap<String, Arc<Cached>>;

/// Per cluster, per store key, the last decoded instance record.
#[derive(Default)]
pub(crate) struct InstanceCache {
    clusters: Mutex<HashMap<String, Arc<Entries>>>,
}

/// One listed instance record, and its scheduler view when the record alone makes it.
pub(crate) struct CachedInstance {
    pub record: Arc<InstanceRecord>,
    pub instance: Option<flotilla_scheduler::Instance>,
}

impl InstanceCache {
    /// Decodes the instance records of `cluster` that `list` returns,
    /// reusing what was decoded at the same revision.
    pub(crate) fn read(
        &self,
        cluster: &str,
        list: impl FnOnce(
            &mut dyn FnMut(&Entry) -> Result<CachedInstance, ApiError>,
        ) -> Result<Vec<records::Versioned<CachedInstance>>, ApiError>,
    ) -> Result<Vec<records::Versioned<CachedInstance>>, ApiError> {
        // Concurrent readers share the entries of the last listing and each
        // stores its own listing's back when done; the lock is held only to
        // swap them, never across the store read or decoding.
        let previous: Arc<Entries> = self
            .clusters
            .lock()
            .ok()
            .and_then(|clusters| clusters.get(cluster).cloned())
            .unwrap_or_default();
        let mut fresh: Entries = HashMap::with_capacity(previous.len());
        let listed = list(&mut |entry: &Entry| {
            let cached = match previous.get(&entry.key) {
                Some(cached) if cached.revision == entry.mod_revision => Arc::clone(cached),
                _ => {
                    let record: InstanceRecord = records::decode(entry)?;
                    let instance = record.task_group_counts.as_ref().map(|counts| {
                        let groups = counts
                            .iter()
                            .map(|(group, count)| (group.clone(), *count))
                            .collect();
                        placement::scheduler_instance(&record, groups)
                    });
                    Arc::new(Cached {
                        revision: entry.mod_revision,
                        record: Arc::new(record),
                        instance,
                    })
                }
            };
            let found = CachedInstance {
                record: Arc::clone(&cached.record),
                instance: cached.instance.clone(),
            };
            fresh.insert(entry.key.clone(), cached);
            Ok(found)
        })?;
        if let Ok(mut clusters) = self.clusters.lock() {
            clusters.insert(cluster.to_owned(), Arc::new(fresh));
        }
        Ok(listed)
    }
}
