//! The revisioned key-value store every piece of Flotilla state lives in.
//!
//! The model is etcd's: one global revision that every committed transaction
//! advances; each entry remembers the revision that created it and the one that
//! last modified it; a transaction commits only if every key it read still has
//! the revision it saw (compare-and-swap), so concurrent writers retry instead
//! of overwriting each other. Watchers receive every change in revision order.
//!
//! *API boundary:* callers see only [`Store`]. The embedded backend
//! ([`RedbStore`]), the in-memory one ([`MemoryStore`]) and the etcd backend
//! (`EtcdStore`, behind the `etcd` feature) all sit behind it, so no caller changes when the backend does.
//!
//! *Read model:* reads are synchronous and answered from state local to the
//! process. For the embedded backends that state is the store itself; a
//! networked backend keeps a local replica fed by one watch of the whole
//! keyspace, and [`Store::commit`] resolves only once that replica has
//! applied the commit's revision. So a caller always reads its own writes,
//! may read another writer's commit a moment late, and loses nothing by it:
//! every write is conditional on the revisions it read, and a stale read
//! costs a conflict and a fresh read, never a lost update.
//!
//! *Limits:* each backend says how large a transaction it takes
//! ([`Store::limits`]); code that batches sizes its batches from them rather
//! than from a constant, and every backend refuses a transaction beyond its
//! limits, or one that writes a key twice (as etcd does), before applying
//! anything.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

pub mod election;
#[cfg(feature = "etcd")]
pub mod etcd;
mod memory;
mod redb_store;

pub use election::{as_leader, Election, FencedStore, SoleReplica, Term};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdOptions, EtcdStore};
pub use memory::MemoryStore;
pub use redb_store::RedbStore;

/// A point in the store's history. Revision 0 means "never written": a
/// condition on revision 0 asserts that the key is absent.
pub type Revision = u64;

/// Most entries a single `list` call returns, whatever the caller asks for.
pub const LIST_LIMIT_MAX: usize = 10_000;

/// Most operations a transaction may carry on the embedded backends.
pub const EMBEDDED_TXN_OPS_MAX: usize = 1_024;
/// Most bytes (keys and values) a transaction may carry on the embedded
/// backends: large enough for any batch the control plane builds, small
/// enough that one transaction cannot take the process's memory.
pub const EMBEDDED_TXN_BYTES_MAX: usize = 64 * 1024 * 1024;

/// How large a transaction a backend accepts. etcd's defaults, for
/// comparison, are 128 operations (and 128 comparisons) per transaction and
/// 1.5 MiB per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnLimits {
    /// Most puts and deletes in one transaction.
    pub ops_max: usize,
    /// Most conditions in one transaction.
    pub conditions_max: usize,
    /// Most bytes in one transaction, as [`Txn::size_bytes`] counts them.
    pub bytes_max: usize,
}

impl TxnLimits {
    /// The limits of [`MemoryStore`] and [`RedbStore`].
    pub const EMBEDDED: TxnLimits = TxnLimits {
        ops_max: EMBEDDED_TXN_OPS_MAX,
        conditions_max: EMBEDDED_TXN_OPS_MAX,
        bytes_max: EMBEDDED_TXN_BYTES_MAX,
    };

    /// etcd v3's defaults (`--max-txn-ops`, `--max-request-bytes`), less room
    /// for the request's own framing.
    pub const ETCD_DEFAULT: TxnLimits = TxnLimits {
        ops_max: 128,
        conditions_max: 128,
        bytes_max: 1_536 * 1024 - 16 * 1024,
    };

    /// How many items fit in one transaction when each item takes
    /// `ops_per_item` operations and as many conditions: at least one, so
    /// that a caller always makes progress (a single item too large for the
    /// backend is then refused by the commit, naming the limit).
    pub fn items_per_txn(&self, ops_per_item: usize) -> usize {
        let per_item = ops_per_item.max(1);
        (self.ops_max.min(self.conditions_max) / per_item).max(1)
    }

    /// Checks `txn` against these limits and refuses a key written twice.
    pub fn check(&self, txn: &Txn) -> Result<(), StoreError> {
        let checks = [
            (txn.ops.len(), self.ops_max, TxnLimitKind::Operations),
            (
                txn.conditions.len(),
                self.conditions_max,
                TxnLimitKind::Conditions,
            ),
        ];
        for (count, limit, kind) in checks {
            if count > limit {
                return Err(StoreError::TooLarge { kind, count, limit });
            }
        }
        let bytes = txn.size_bytes();
        if bytes > self.bytes_max {
            return Err(StoreError::TooLarge {
                kind: TxnLimitKind::Bytes,
                count: bytes,
                limit: self.bytes_max,
            });
        }
        let mut written = std::collections::HashSet::with_capacity(txn.ops.len());
        for op in &txn.ops {
            let key = match op {
                Op::Put { key, .. } | Op::Delete { key } => key.as_str(),
            };
            if !written.insert(key) {
                return Err(StoreError::DuplicateKey {
                    key: key.to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// Which of a backend's [`TxnLimits`] a transaction exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnLimitKind {
    Operations,
    Conditions,
    Bytes,
}

impl std::fmt::Display for TxnLimitKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            TxnLimitKind::Operations => "operations",
            TxnLimitKind::Conditions => "conditions",
            TxnLimitKind::Bytes => "bytes",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Bytes,
    /// Revision of the transaction that created the key (since its last delete).
    pub create_revision: Revision,
    /// Revision of the transaction that last wrote the key.
    pub mod_revision: Revision,
}

/// One page of a prefix listing, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// Whether keys with the prefix remain after the last entry returned.
    pub more: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The key's `mod_revision` must equal `revision`; 0 means the key must be absent.
    Revision { key: String, revision: Revision },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Bytes },
    Delete { key: String },
}

/// Conditions checked and operations applied atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub conditions: Vec<Condition>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `key` to be at `revision` (0: absent) when the transaction commits.
    pub fn expect(mut self, key: impl Into<String>, revision: Revision) -> Self {
        self.conditions.push(Condition::Revision {
            key: key.into(),
            revision,
        });
        self
    }

    pub fn put(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// The keys and values the transaction carries, in bytes: what a
    /// backend's `bytes_max` is measured against.
    pub fn size_bytes(&self) -> usize {
        let conditions: usize = self
            .conditions
            .iter()
            .map(|Condition::Revision { key, .. }| key.len() + 8)
            .sum();
        let ops: usize = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => key.len() + value.len(),
                Op::Delete { key } => key.len(),
            })
            .sum();
        conditions + ops
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One key changed by one committed transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub revision: Revision,
    pub kind: EventKind,
    pub key: String,
    /// The new value for a put; empty for a delete.
    pub value: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A condition did not hold: someone else wrote first. Re-read and retry.
    #[error("conflict on key {key}: expected revision {expected}, found {found}")]
    Conflict {
        key: String,
        expected: Revision,
        found: Revision,
    },
    /// The transaction exceeds one of the backend's [`TxnLimits`].
    #[error("transaction has {count} {kind}, more than the limit of {limit}")]
    TooLarge {
        kind: TxnLimitKind,
        count: usize,
        limit: usize,
    },
    /// The transaction writes (puts or deletes) one key more than once.
    #[error("transaction writes key {key} more than once")]
    DuplicateKey { key: String },
    #[error("store backend failed: {message}")]
    Backend { message: String },
    /// The store cannot take writes from this replica now (it has lost
    /// the store, or no longer leads the loop that wrote): nothing was
    /// changed, and the caller may try again later or elsewhere.
    #[error("store unavailable: {message}")]
    Unavailable { message: String },
    #[error("store is closed")]
    Closed,
}

pub type CommitFuture = Pin<Box<dyn Future<Output = Result<Revision, StoreError>> + Send>>;

/// The store's whole interface. Reads are synchronous and cheap: they are
/// served from state local to the process and never wait for a disk flush or
/// the network (see the crate's read model). Commits are asynchronous because
/// durable backends batch many transactions into one flush and networked ones
/// wait for a quorum and for their local replica to catch up.
pub trait Store: Send + Sync + 'static {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError>;

    /// Entries whose key starts with `prefix` and sorts strictly after
    /// `start_after` (when given), in key order, at most `limit` of them
    /// (capped at [`LIST_LIMIT_MAX`]).
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError>;

    /// Checks every condition and applies every operation atomically. Resolves
    /// to the new revision once the transaction is durable and visible to
    /// this process's reads, or to [`StoreError::Conflict`] with nothing
    /// changed. A transaction beyond [`Store::limits`] or writing a key twice
    /// is refused ([`StoreError::TooLarge`], [`StoreError::DuplicateKey`])
    /// with nothing changed.
    fn commit(&self, txn: Txn) -> CommitFuture;

    /// How large a transaction this backend takes.
    fn limits(&self) -> TxnLimits;

    /// Changes to keys starting with `prefix`, committed after this call.
    /// A watcher that falls behind sees [`WatchError::Lagged`] and should re-list.
    fn watch(&self, prefix: &str) -> Watch;

    /// The revision of the last committed transaction.
    fn revision(&self) -> Revision;

    /// The revision of the last committed transaction, as it advances: for
    /// a loop that re-reads the state when anything changed and needs no
    /// events (which a watcher pins in memory until it reads them).
    fn revisions(&self) -> tokio::sync::watch::Receiver<Revision>;
}

/// Where a prefix listing starts: keys with the prefix are contiguous in key
/// order, so a `start_after` below the prefix means "from the first one".
pub(crate) fn list_lower_bound<'a>(
    prefix: &'a str,
    start_after: Option<&'a str>,
) -> std::ops::Bound<&'a str> {
    match start_after {
        Some(after) if after >= prefix => std::ops::Bound::Excluded(after),
        _ => std::ops::Bound::Included(prefix),
    }
}

/// Why a watch gave no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// The watcher fell behind and `missed` transactions' events are gone
    /// (etcd: the revision was compacted). Re-read, then keep watching.
    #[error("watch fell behind by {missed} transactions")]
    Lagged { missed: u64 },
    /// The store is gone; no event will come.
    #[error("watch closed")]
    Closed,
}

pub type WatchFuture<'a> = Pin<Box<dyn Future<Output = Result<Event, WatchError>> + Send + 'a>>;

/// A stream of events for one prefix, in revision order: what a backend's
/// watch must give. An in-process backend fans out a broadcast channel
/// ([`BroadcastWatch`]); etcd's is a gRPC watch stream.
pub trait WatchEvents: Send {
    /// The next event under the prefix.
    fn next(&mut self) -> WatchFuture<'_>;
}

/// A watch as callers hold it, whatever the backend.
pub type Watch = Box<dyn WatchEvents>;

/// How many committed transactions a watcher may fall behind before it lags.
pub const WATCH_BACKLOG_MAX: usize = 4_096;

/// The embedded backends' watch: every committed transaction's events
/// broadcast to every watcher, each filtering for its prefix.
pub struct BroadcastWatch {
    prefix: String,
    receiver: tokio::sync::broadcast::Receiver<std::sync::Arc<Vec<Event>>>,
    pending: std::collections::VecDeque<Event>,
}

impl BroadcastWatch {
    pub(crate) fn boxed(
        prefix: &str,
        receiver: tokio::sync::broadcast::Receiver<std::sync::Arc<Vec<Event>>>,
    ) -> Watch {
        Box::new(Self {
            prefix: prefix.to_owned(),
            receiver,
            pending: Default::default(),
        })
    }

    async fn next_event(&mut self) -> Result<Event, WatchError> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let batch = self.receiver.recv().await.map_err(|error| match error {
                RecvError::Lagged(missed) => WatchError::Lagged { missed },
                RecvError::Closed => WatchError::Closed,
            })?;
            self.pending.extend(
                batch
                    .iter()
                    .filter(|event| event.key.starts_with(&self.prefix))
                    .cloned(),
            );
        }
    }
}

impl WatchEvents for BroadcastWatch {
    fn next(&mut self) -> WatchFuture<'_> {
        Box::pin(self.next_event())
    }
}
