//! The revisioned key-value store every piece of Flotilla state lives in.
//!
//! The model is etcd's: one global revision that every committed transaction
//! advances; each entry remembers the revision that created it and the one that
//! last modified it; a transaction commits only if every key it read still has
//! the revision it saw (compare-and-swap), so concurrent writers retry instead
//! of overwriting each other. Watchers receive every change in revision order.
//!
//! *API boundary:* callers see only [`Store`]. The embedded backend
//! ([`RedbStore`]), the in-memory one ([`MemoryStore`]) and a later etcd backend
//! all sit behind it, so no caller changes when the backend does.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

mod memory;
mod redb_store;

pub use memory::MemoryStore;
pub use redb_store::RedbStore;

/// A point in the store's history. Revision 0 means "never written": a
/// condition on revision 0 asserts that the key is absent.
pub type Revision = u64;

/// Most entries a single `list` call returns, whatever the caller asks for.
pub const LIST_LIMIT_MAX: usize = 10_000;

/// Most operations a single transaction may carry.
pub const TXN_OPS_MAX: usize = 1_024;

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
    #[error("transaction has {count} operations, more than the limit of {limit}")]
    TooLarge { count: usize, limit: usize },
    #[error("store backend failed: {message}")]
    Backend { message: String },
    #[error("store is closed")]
    Closed,
}

pub type CommitFuture = Pin<Box<dyn Future<Output = Result<Revision, StoreError>> + Send>>;

/// The store's whole interface. Reads are synchronous and cheap (they never
/// wait for a disk flush); commits are asynchronous because durable backends
/// batch many transactions into one flush.
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
    /// to the new revision once the transaction is durable, or to
    /// [`StoreError::Conflict`] with nothing changed.
    fn commit(&self, txn: Txn) -> CommitFuture;

    /// Changes to keys starting with `prefix`, committed after this call.
    /// A receiver that falls behind sees `RecvError::Lagged` and should re-list.
    fn watch(&self, prefix: &str) -> Watch;

    /// The revision of the last committed transaction.
    fn revision(&self) -> Revision;

    /// The revision of the last committed transaction, as it advances: for
    /// a loop that re-reads the state when anything changed and needs no
    /// events (which a watcher pins in memory until it reads them).
    fn revisions(&self) -> tokio::sync::watch::Receiver<Revision>;
}

/// Rejects a transaction before it reaches a backend, so that every backend
/// enforces the same bounds.
pub(crate) fn check_txn_size(txn: &Txn) -> Result<(), StoreError> {
    let count = txn.ops.len();
    if count > TXN_OPS_MAX {
        return Err(StoreError::TooLarge {
            count,
            limit: TXN_OPS_MAX,
        });
    }
    Ok(())
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

/// A stream of events for one prefix.
pub struct Watch {
    prefix: String,
    receiver: tokio::sync::broadcast::Receiver<std::sync::Arc<Vec<Event>>>,
    pending: std::collections::VecDeque<Event>,
}

/// How many committed transactions a watcher may fall behind before it lags.
pub const WATCH_BACKLOG_MAX: usize = 4_096;

impl Watch {
    pub(crate) fn new(
        prefix: &str,
        receiver: tokio::sync::broadcast::Receiver<std::sync::Arc<Vec<Event>>>,
    ) -> Self {
        Self {
            prefix: prefix.to_owned(),
            receiver,
            pending: Default::default(),
        }
    }

    /// The next event under the prefix.
    pub async fn next(&mut self) -> Result<Event, tokio::sync::broadcast::error::RecvError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let batch = self.receiver.recv().await?;
            self.pending.extend(
                batch
                    .iter()
                    .filter(|event| event.key.starts_with(&self.prefix))
                    .cloned(),
            );
        }
    }
}
