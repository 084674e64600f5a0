//! Each cluster's placement state as the last launch left it, kept for the
//! next launch when nothing else has written the cluster's instances since.
//!
//! A launch reads every instance record of its cluster and indexes them for
//! the scheduler; with a thousand instances that was most of a RunTask's
//! work, and nearly all of it repeated: the launch before it left exactly
//! that state behind (its plan applied to the snapshot, the records it wrote
//! at the revision they were committed at). Writes by anyone else (a task
//! stopping and returning resources, an agent connecting, attributes, a new
//! instance) are seen on a store watch of the instance records; the kept
//! state is used only if every one of them is already in it.
//!
//! ```text
//!  take(cluster) ──▶ kept state, if every instance write seen since is in it ─┐
//!                └─▶ None: the launch reads and indexes the records afresh     │
//!  launch: place, commit (revision conditions on the instances written) ◀────┘
//!  put(cluster, state with the written records at the commit's revision)
//!  watch ecs/instances/ ──▶ (instance id, revision) per write, checked at the next take
//! ```
//!
//! *Invariant:* the kept state is an optimisation of reads, never of
//! safety. A write the watch has not delivered yet can make the kept state
//! stale; the launch's commit is still conditional on the revision of every
//! instance it writes, so a stale plan fails to commit and is re-planned on
//! a fresh read. Launches of one cluster that overlap (a RunTask beside a
//! StartTask) keep nothing: each `take` and `put` takes a turn, and a `put`
//! whose turn has passed is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use flotilla_store::{EventKind, Revision, Store, Watch, WatchError};

use crate::records::keys;
use crate::tasks::SharedInstance;

/// Instance writes remembered per cluster between launches; past this the
/// kept state is dropped rather than the list grown.
pub const CHANGES_MAX: usize = 16_384;

/// What a launch leaves for the next one.
pub(crate) struct Placed {
    /// The instance records, in the snapshot's order, each at the revision
    /// the store holds it at as far as this state knows.
    pub instances: Vec<SharedInstance>,
    pub snapshot: flotilla_scheduler::Snapshot,
    /// Index into `instances` of each instance id.
    index: HashMap<String, usize>,
}

impl Placed {
    pub(crate) fn new(
        instances: Vec<SharedInstance>,
        snapshot: flotilla_scheduler::Snapshot,
    ) -> Placed {
        let index = instances
            .iter()
            .enumerate()
            .map(|(index, found)| (found.value.instance_id.clone(), index))
            .collect();
        Placed {
            instances,
            snapshot,
            index,
        }
    }

    /// Sets the revision of the records a launch wrote (left at revision 0,
    /// which no stored record has) to the one its commit got.
    pub(crate) fn committed_at(mut self, revision: Option<Revision>) -> Placed {
        if let Some(revision) = revision {
            for found in &mut self.instances {
                if found.revision == 0 {
                    found.revision = revision;
                }
            }
        }
        self
    }

    /// Whether this state already holds the write.
    fn holds(&self, change: &Change) -> bool {
        match (self.index.get(&change.instance_id), change.revision) {
            (Some(index), Some(revision)) => self.instances[*index].revision >= revision,
            (None, None) => true,
            _ => false,
        }
    }
}

/// One write to an instance record: its revision, `None` for a delete.
struct Change {
    instance_id: String,
    revision: Option<Revision>,
}

#[derive(Default)]
struct Cluster {
    placed: Option<Placed>,
    /// Writes seen since `placed` was last checked.
    changes: Vec<Change>,
    /// Advanced by every take; a put from an older turn is dropped.
    turn: u64,
}

#[derive(Default)]
struct Clusters {
    watching: bool,
    by_name: HashMap<String, Cluster>,
}

/// The kept placement states of every cluster.
#[derive(Default)]
pub(crate) struct LivePlacement {
    clusters: Arc<Mutex<Clusters>>,
    /// Runs the watch of instance records, and restarts it if it panics.
    supervisor: crate::Supervisor,
}

/// A launch's claim on its cluster's kept state, for [`LivePlacement::put`].
pub(crate) struct Turn(u64);

impl LivePlacement {
    pub(crate) fn new(supervisor: crate::Supervisor) -> Self {
        Self {
            supervisor,
            ..Default::default()
        }
    }

    /// The kept state of `cluster` if it is current, and the launch's turn.
    /// Starts the watch on first use (inside a Tokio runtime).
    pub(crate) fn take(&self, store: &Arc<dyn Store>, cluster: &str) -> (Option<Placed>, Turn) {
        let mut clusters = lock(&self.clusters);
        if !clusters.watching {
            clusters.watching = true;
            // A restarted run watches afresh and forgets every kept state,
            // which may have missed writes over the gap.
            let mut first = Some(store.watch(keys::INSTANCES));
            let store = Arc::downgrade(store);
            let clusters = Arc::clone(&self.clusters);
            self.supervisor.spawn("live_placement", move || {
                let watch = first.take().map(|watch| (watch, false)).or_else(|| {
                    store
                        .upgrade()
                        .map(|store| (store.watch(keys::INSTANCES), true))
                });
                let clusters = Arc::clone(&clusters);
                async move {
                    let Some((watch, restarted)) = watch else {
                        lock(&clusters).watching = false;
                        return;
                    };
                    if restarted {
                        lock(&clusters).by_name.values_mut().for_each(forget);
                    }
                    record_changes(watch, clusters).await;
                }
            });
        }
        let entry = clusters.by_name.entry(cluster.to_owned()).or_default();
        entry.turn += 1;
        let turn = Turn(entry.turn);
        let Some(placed) = entry.placed.take() else {
            // Changes stay for whichever state is put next to be checked against.
            return (None, turn);
        };
        let changes = std::mem::take(&mut entry.changes);
        let current = changes.iter().all(|change| placed.holds(change));
        (current.then_some(placed), turn)
    }

    /// Keeps `placed` for the next launch, unless another launch of the
    /// cluster took its turn since `turn` was taken.
    pub(crate) fn put(&self, cluster: &str, placed: Placed, turn: Turn) {
        let mut clusters = lock(&self.clusters);
        if let Some(entry) = clusters.by_name.get_mut(cluster) {
            if entry.turn == turn.0 {
                entry.placed = Some(placed);
            }
        }
    }
}

fn lock(clusters: &Mutex<Clusters>) -> MutexGuard<'_, Clusters> {
    // Every change under the lock is a single assignment, so a panic while
    // holding it leaves consistent state.
    clusters
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Notes every instance write for the next take of its cluster.
async fn record_changes(mut watch: Watch, clusters: Arc<Mutex<Clusters>>) {
    loop {
        let event = watch.next().await;
        let mut clusters = lock(&clusters);
        match event {
            Ok(event) => {
                let Some((cluster, instance_id)) = event
                    .key
                    .strip_prefix(keys::INSTANCES)
                    .and_then(|rest| rest.split_once('/'))
                else {
                    continue;
                };
                let Some(entry) = clusters.by_name.get_mut(cluster) else {
                    continue;
                };
                if entry.changes.len() >= CHANGES_MAX {
                    forget(entry);
                    continue;
                }
                entry.changes.push(Change {
                    instance_id: instance_id.to_owned(),
                    revision: (event.kind == EventKind::Put).then_some(event.revision),
                });
            }
            Err(WatchError::Lagged { .. }) => clusters.by_name.values_mut().for_each(forget),
            Err(WatchError::Closed) => {
                clusters.by_name.clear();
                clusters.watching = false;
                return;
            }
        }
    }
}

/// Drops a cluster's kept state and the launches' claims on it.
fn forget(entry: &mut Cluster) {
    entry.placed = None;
    entry.changes.clear();
    entry.turn += 1;
}

#[cfg(test)]
mod tests {
    use flotilla_store::{MemoryStore, Txn};

    use super::*;

    fn empty() -> Placed {
        Placed::new(Vec::new(), flotilla_scheduler::Snapshot::default())
    }

    /// Lets the watch task take in what was committed.
    async fn settle() {
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn kept_state_serves_until_someone_else_writes_an_instance() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let live = LivePlacement::default();
        let (placed, turn) = live.take(&store, "c");
        assert!(placed.is_none(), "nothing kept yet");
        live.put("c", empty(), turn);

        let (placed, turn) = live.take(&store, "c");
        let placed = placed.expect("kept");
        live.put("c", placed, turn);

        // Writes to another cluster's instances and to tasks change nothing here.
        store
            .commit(Txn::new().put("ecs/instances/d/i1", b"{}".to_vec()))
            .await
            .expect("commit");
        store
            .commit(Txn::new().put("ecs/tasks/c/t1", b"{}".to_vec()))
            .await
            .expect("commit");
        settle().await;
        let (placed, turn) = live.take(&store, "c");
        live.put("c", placed.expect("still kept"), turn);

        store
            .commit(Txn::new().put("ecs/instances/c/i1", b"{}".to_vec()))
            .await
            .expect("commit");
        settle().await;
        assert!(
            live.take(&store, "c").0.is_none(),
            "an instance it does not hold appeared"
        );
    }

    #[tokio::test]
    async fn overlapping_launches_keep_nothing() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let live = LivePlacement::default();
        let (_, first) = live.take(&store, "c");
        let (_, second) = live.take(&store, "c");
        live.put("c", empty(), first);
        assert!(
            live.take(&store, "c").0.is_none(),
            "the older turn's state was dropped"
        );
        live.put("c", empty(), second);
        assert!(live.take(&store, "c").0.is_none(), "a take came between");
    }

    #[test]
    fn a_state_holds_writes_at_or_below_its_revisions() {
        let change = |id: &str, revision| Change {
            instance_id: id.to_owned(),
            revision,
        };
        let placed = empty();
        assert!(
            placed.holds(&change("gone", None)),
            "a delete of what it lacks"
        );
        assert!(
            !placed.holds(&change("new", Some(7))),
            "an instance it lacks"
        );
    }
}
