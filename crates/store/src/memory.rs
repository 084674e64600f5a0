//! The in-memory backend: the same semantics as the durable one, without a
//! disk, for unit tests and simulations.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::{
    list_lower_bound, BroadcastWatch, CommitFuture, Condition, Entry, Event, EventKind, Op, Page,
    Revision, Store, StoreError, Txn, TxnLimits, Watch, LIST_LIMIT_MAX, WATCH_BACKLOG_MAX,
};

#[derive(Clone, Debug)]
struct StoredValue {
    value: Bytes,
    create_revision: Revision,
    mod_revision: Revision,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<String, StoredValue>,
    revision: Revision,
}

/// A [`Store`] held in a `BTreeMap` under one mutex. Commits resolve at once;
/// nothing survives the process.
pub struct MemoryStore {
    limits: TxnLimits,
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
    revisions: tokio::sync::watch::Sender<Revision>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::with_limits(TxnLimits::EMBEDDED)
    }

    /// A store that takes transactions only within `limits`, to show that
    /// callers work against a backend with smaller ones (etcd's).
    pub fn with_limits(limits: TxnLimits) -> Self {
        let (events, _) = broadcast::channel(WATCH_BACKLOG_MAX);
        Self {
            limits,
            state: Mutex::new(State::default()),
            events,
            revisions: tokio::sync::watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section checks all conditions before it mutates
        // anything, so a panic inside one cannot leave a half-applied
        // transaction behind; the poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn commit_now(&self, txn: Txn) -> Result<Revision, StoreError> {
        self.limits.check(&txn)?;
        let mut state = self.lock();
        for condition in &txn.conditions {
            let Condition::Revision {
                key,
                revision: expected,
            } = condition;
            let found = state
                .entries
                .get(key)
                .map_or(0, |stored| stored.mod_revision);
            if found != *expected {
                return Err(StoreError::Conflict {
                    key: key.clone(),
                    expected: *expected,
                    found,
                });
            }
        }
        let revision = state.revision + 1;
        state.revision = revision;
        let mut events = Vec::with_capacity(txn.ops.len());
        for op in txn.ops {
            match op {
                Op::Put { key, value } => {
                    let create_revision = state
                        .entries
                        .get(&key)
                        .map_or(revision, |stored| stored.create_revision);
                    state.entries.insert(
                        key.clone(),
                        StoredValue {
                            value: value.clone(),
                            create_revision,
                            mod_revision: revision,
                        },
                    );
                    events.push(Event {
                        revision,
                        kind: EventKind::Put,
                        key,
                        value,
                    });
                }
                Op::Delete { key } => {
                    // Deleting an absent key changes nothing, so watchers hear nothing.
                    if state.entries.remove(&key).is_some() {
                        events.push(Event {
                            revision,
                            kind: EventKind::Delete,
                            key,
                            value: Bytes::new(),
                        });
                    }
                }
            }
        }
        // Sent under the lock so that watchers receive transactions in
        // revision order. An error only means nobody is watching.
        if !events.is_empty() {
            let _ = self.events.send(Arc::new(events));
        }
        self.revisions.send_replace(revision);
        Ok(revision)
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let state = self.lock();
        Ok(state.entries.get(key).map(|stored| Entry {
            key: key.to_owned(),
            value: stored.value.clone(),
            create_revision: stored.create_revision,
            mod_revision: stored.mod_revision,
        }))
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let limit = limit.min(LIST_LIMIT_MAX);
        let state = self.lock();
        let lower = list_lower_bound(prefix, start_after);
        let mut matching = state
            .entries
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix));
        let entries: Vec<Entry> = matching
            .by_ref()
            .take(limit)
            .map(|(key, stored)| Entry {
                key: key.clone(),
                value: stored.value.clone(),
                create_revision: stored.create_revision,
                mod_revision: stored.mod_revision,
            })
            .collect();
        let more = matching.next().is_some();
        Ok(Page { entries, more })
    }

    fn commit(&self, txn: Txn) -> CommitFuture {
        Box::pin(std::future::ready(self.commit_now(txn)))
    }

    fn limits(&self) -> TxnLimits {
        self.limits
    }

    fn watch(&self, prefix: &str) -> Watch {
        BroadcastWatch::boxed(prefix, self.events.subscribe())
    }

    fn revisions(&self) -> tokio::sync::watch::Receiver<Revision> {
        self.revisions.subscribe()
    }

    fn revision(&self) -> Revision {
        self.lock().revision
    }
}
