//! The embedded, crash-safe default backend on redb.
//!
//! ```text
//!  commit() ──► bounded queue ──► writer thread: drain ≤ WRITE_BATCH_TXNS_MAX
//!  commit() ──►   (tokio mpsc)      │ one redb write transaction:
//!  commit() ──►                     │   per txn, in order: check conditions
//!                                   │   (seeing earlier txns of the batch),
//!                                   │   apply ops at its own revision
//!                                   │ one durable commit (one fsync)
//!                                   ▼
//!                      broadcast events, then answer each caller
//! ```
//!
//! *Architecture invariant:* no caller is answered before the batch that
//! holds its transaction is on disk, and the writer thread is the only code
//! that opens a redb write transaction after [`RedbStore::open`]. Reads open
//! their own redb read transactions, which never wait for the writer.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{
    list_lower_bound, BroadcastWatch, CommitFuture, Condition, Entry, Event, EventKind, Op, Page,
    Revision, Store, StoreError, Txn, TxnLimits, Watch, EMBEDDED_TXN_OPS_MAX, LIST_LIMIT_MAX,
    WATCH_BACKLOG_MAX,
};

/// Key → entry record (see [`encode_record`]).
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
/// Store-wide values: the global revision and the on-disk format version.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_FORMAT_VERSION: &str = "format_version";
/// Bumped whenever the layout of [`ENTRIES`] records or [`META`] changes, so
/// that an older binary refuses a newer file instead of misreading it.
const FORMAT_VERSION: u64 = 1;

/// Most transactions queued for the writer; further committers wait for room,
/// which is the back-pressure that keeps memory bounded under overload.
pub const COMMIT_QUEUE_MAX: usize = 1_024;
/// Most transactions folded into one redb write transaction. Large enough that
/// one fsync serves every committer of a busy control plane, small enough that
/// a batch's latency stays well under a second.
pub const WRITE_BATCH_TXNS_MAX: usize = 512;
/// Most operations folded into one redb write transaction, so that a stream of
/// maximal transactions cannot build an unbounded batch in memory.
pub const WRITE_BATCH_OPS_MAX: usize = 16 * EMBEDDED_TXN_OPS_MAX;

/// Entry record header: create_revision then mod_revision, little-endian.
const RECORD_HEADER_BYTES: usize = 16;
/// The memory redb keeps pages in: read cache and the write buffer of a
/// transaction together (half of it at most for writes; the excess of a
/// large batch is written out early). The operating system's page cache
/// keeps the rest of the file warm, so a small cache costs little.
const PAGE_CACHE_BYTES: usize = 16 * 1024 * 1024;

fn encode_record(create_revision: Revision, mod_revision: Revision, value: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(RECORD_HEADER_BYTES + value.len());
    record.extend_from_slice(&create_revision.to_le_bytes());
    record.extend_from_slice(&mod_revision.to_le_bytes());
    record.extend_from_slice(value);
    record
}

struct Record<'a> {
    create_revision: Revision,
    mod_revision: Revision,
    value: &'a [u8],
}

fn decode_record<'a>(key: &str, record: &'a [u8]) -> Result<Record<'a>, StoreError> {
    let corrupt = || StoreError::Backend {
        message: format!(
            "entry record for key {key} is {} bytes, shorter than its header",
            record.len()
        ),
    };
    let (create, rest) = record.split_first_chunk::<8>().ok_or_else(corrupt)?;
    let (modified, value) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
    Ok(Record {
        create_revision: u64::from_le_bytes(*create),
        mod_revision: u64::from_le_bytes(*modified),
        value,
    })
}

fn backend_error(context: &str, error: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend {
        message: format!("{context}: {}", error.into()),
    }
}

/// Lets a record that fails to decode abort a batch like any storage error.
fn corrupted(error: StoreError) -> redb::Error {
    redb::Error::Corrupted(error.to_string())
}

struct CommitRequest {
    txn: Txn,
    reply: oneshot::Sender<Result<Revision, StoreError>>,
}

enum Message {
    Commit(CommitRequest),
    /// Sent by `Drop` to wake an idle writer so that it notices shutdown.
    Shutdown,
}

/// State the store handle and the writer thread both see.
struct Shared {
    database: Database,
    /// Revision of the last durable batch; readers never see a smaller one.
    revision: AtomicU64,
    shutting_down: AtomicBool,
    /// Durable batches so far, to tell how well commits are being grouped.
    batches_committed: AtomicU64,
    /// The last durable revision, for [`Store::revisions`].
    revisions: tokio::sync::watch::Sender<Revision>,
    /// Lets a test make the writer thread panic at its next batch.
    #[cfg(test)]
    panic_at_next_batch: AtomicBool,
}

/// The default [`Store`]: one redb file, commits grouped into durable batches
/// by a single writer thread.
pub struct RedbStore {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Message>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
    writer: Option<JoinHandle<()>>,
}

impl RedbStore {
    /// Opens the store at `path`, creating the file if it does not exist, and
    /// starts its writer thread. A file left by a crash is repaired by redb
    /// here, so this may take a while after an unclean shutdown.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let context = format!("opening store at {}", path.display());
        let database = redb::Builder::new()
            .set_cache_size(PAGE_CACHE_BYTES)
            .create(path)
            .map_err(|error| backend_error(&context, error))?;
        let revision = initialize(&database).map_err(|error| backend_error(&context, error))?;

        let shared = Arc::new(Shared {
            database,
            revision: AtomicU64::new(revision),
            shutting_down: AtomicBool::new(false),
            batches_committed: AtomicU64::new(0),
            revisions: tokio::sync::watch::Sender::new(revision),
            #[cfg(test)]
            panic_at_next_batch: AtomicBool::new(false),
        });
        let (requests, receiver) = mpsc::channel(COMMIT_QUEUE_MAX);
        let (events, _) = broadcast::channel(WATCH_BACKLOG_MAX);
        let writer = Writer {
            shared: shared.clone(),
            receiver,
            events: events.clone(),
            next_revision: revision + 1,
        };
        let writer = std::thread::Builder::new()
            .name("flotilla-store-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(|error| StoreError::Backend {
                message: format!("starting store writer thread: {error}"),
            })?;
        Ok(RedbStore {
            shared,
            requests,
            events,
            writer: Some(writer),
        })
    }

    /// How many durable batches (so fsyncs) this handle's writer has made.
    /// Transactions committed divided by this is the grouping factor.
    pub fn batches_committed(&self) -> u64 {
        self.shared.batches_committed.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn panic_writer_at_next_batch(&self) {
        self.shared
            .panic_at_next_batch
            .store(true, Ordering::SeqCst);
    }
}

/// Creates the tables on first open, refuses files of another format, and
/// returns the last committed revision.
fn initialize(database: &Database) -> Result<Revision, redb::Error> {
    let write = database.begin_write()?;
    let revision = {
        write.open_table(ENTRIES)?;
        let mut meta = write.open_table(META)?;
        let format_version = meta.get(META_FORMAT_VERSION)?.map(|guard| guard.value());
        match format_version {
            None => {
                meta.insert(META_FORMAT_VERSION, FORMAT_VERSION)?;
            }
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(redb::Error::Corrupted(format!(
                    "store format version {other}, this build reads only {FORMAT_VERSION}"
                )));
            }
        }
        let revision = meta.get(META_REVISION)?.map_or(0, |guard| guard.value());
        revision
    };
    write.commit()?;
    Ok(revision)
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // The flag covers a full queue, where the wake-up message cannot be
        // queued: the writer then has work, and checks the flag after it.
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let _ = self.requests.try_send(Message::Shutdown);
        if let Some(writer) = self.writer.take() {
            // Waits at most for the batches already queued, which are answered
            // and made durable rather than dropped.
            if writer.join().is_err() {
                tracing::error!("store writer thread had panicked before shutdown");
            }
        }
    }
}

impl Store for RedbStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let read = self
            .shared
            .database
            .begin_read()
            .map_err(|error| backend_error("begin read", error))?;
        let table = read
            .open_table(ENTRIES)
            .map_err(|error| backend_error("open entries", error))?;
        let Some(guard) = table
            .get(key)
            .map_err(|error| backend_error("read entry", error))?
        else {
            return Ok(None);
        };
        let record = decode_record(key, guard.value())?;
        Ok(Some(Entry {
            key: key.to_owned(),
            value: Bytes::copy_from_slice(record.value),
            create_revision: record.create_revision,
            mod_revision: record.mod_revision,
        }))
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let limit = limit.min(LIST_LIMIT_MAX);
        let read = self
            .shared
            .database
            .begin_read()
            .map_err(|error| backend_error("begin read", error))?;
        let table = read
            .open_table(ENTRIES)
            .map_err(|error| backend_error("open entries", error))?;
        let lower = list_lower_bound(prefix, start_after);
        let range = table
            .range::<&str>((lower, std::ops::Bound::Unbounded))
            .map_err(|error| backend_error("list entries", error))?;
        let mut page = Page::default();
        for item in range {
            let (key_guard, value_guard) =
                item.map_err(|error| backend_error("list entries", error))?;
            let key = key_guard.value();
            if !key.starts_with(prefix) {
                break;
            }
            if page.entries.len() == limit {
                page.more = true;
                break;
            }
            let record = decode_record(key, value_guard.value())?;
            page.entries.push(Entry {
                key: key.to_owned(),
                value: Bytes::copy_from_slice(record.value),
                create_revision: record.create_revision,
                mod_revision: record.mod_revision,
            });
        }
        Ok(page)
    }

    fn commit(&self, txn: Txn) -> CommitFuture {
        if let Err(error) = TxnLimits::EMBEDDED.check(&txn) {
            return Box::pin(std::future::ready(Err(error)));
        }
        let requests = self.requests.clone();
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            requests
                .send(Message::Commit(CommitRequest { txn, reply }))
                .await
                .map_err(|_| StoreError::Closed)?;
            answer.await.unwrap_or_else(|_| {
                // Only a writer that died mid-batch drops a reply unanswered;
                // it may or may not have made the batch durable first.
                Err(StoreError::Backend {
                    message: "store writer stopped before answering; outcome unknown".to_owned(),
                })
            })
        })
    }

    fn limits(&self) -> TxnLimits {
        TxnLimits::EMBEDDED
    }

    fn watch(&self, prefix: &str) -> Watch {
        BroadcastWatch::boxed(prefix, self.events.subscribe())
    }

    fn revisions(&self) -> tokio::sync::watch::Receiver<Revision> {
        self.shared.revisions.subscribe()
    }

    fn revision(&self) -> Revision {
        self.shared.revision.load(Ordering::SeqCst)
    }
}

struct Writer {
    shared: Arc<Shared>,
    receiver: mpsc::Receiver<Message>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
    /// Revision the next successful transaction gets.
    next_revision: Revision,
}

impl Drop for Writer {
    /// Runs on a normal exit, where the queue is already drained, and when
    /// the thread unwinds from a panic: then the transactions still queued
    /// were never attempted, so their callers learn the store is closed
    /// rather than that the outcome is unknown.
    fn drop(&mut self) {
        self.receiver.close();
        while let Ok(message) = self.receiver.try_recv() {
            if let Message::Commit(request) = message {
                let _ = request.reply.send(Err(StoreError::Closed));
            }
        }
    }
}

/// What one transaction of a batch came to, before the batch is durable.
enum Outcome {
    Committed {
        revision: Revision,
        events: Vec<Event>,
    },
    Conflict(StoreError),
}

impl Writer {
    fn run(mut self) {
        let mut batch: Vec<CommitRequest> = Vec::with_capacity(WRITE_BATCH_TXNS_MAX);
        let mut receiver_closed = false;
        // `None` once the channel is closed and drained: every queued
        // transaction has been answered.
        while let Some(first) = self.receiver.blocking_recv() {
            let mut batch_ops = 0;
            let mut message = Some(first);
            while let Some(next) = message.take() {
                if let Message::Commit(request) = next {
                    batch_ops += request.txn.ops.len();
                    batch.push(request);
                }
                if batch.len() < WRITE_BATCH_TXNS_MAX && batch_ops < WRITE_BATCH_OPS_MAX {
                    message = self.receiver.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit_batch(&mut batch);
            }
            if !receiver_closed && self.shared.shutting_down.load(Ordering::SeqCst) {
                // Refuses new commits but keeps those already queued, which
                // the loop drains and commits before it ends.
                self.receiver.close();
                receiver_closed = true;
            }
        }
    }

    fn commit_batch(&mut self, batch: &mut Vec<CommitRequest>) {
        #[cfg(test)]
        if self
            .shared
            .panic_at_next_batch
            .swap(false, Ordering::SeqCst)
        {
            panic!("store writer panic injected by a test");
        }
        match self.write_batch(batch) {
            Ok(outcomes) => {
                self.shared
                    .batches_committed
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(last) = outcomes.iter().rev().find_map(|outcome| match outcome {
                    Outcome::Committed { revision, .. } => Some(*revision),
                    Outcome::Conflict(_) => None,
                }) {
                    self.next_revision = last + 1;
                    self.shared.revision.store(last, Ordering::SeqCst);
                }
                // Events go out before the answers, so a caller that saw its
                // commit succeed knows every watcher has been sent it.
                let mut results = Vec::with_capacity(outcomes.len());
                for outcome in outcomes {
                    match outcome {
                        Outcome::Committed { revision, events } => {
                            if !events.is_empty() {
                                // An error only means nobody is watching.
                                let _ = self.events.send(Arc::new(events));
                            }
                            results.push(Ok(revision));
                        }
                        Outcome::Conflict(error) => results.push(Err(error)),
                    }
                }
                let last = self.next_revision - 1;
                self.shared.revisions.send_if_modified(|current| {
                    let advanced = *current != last;
                    *current = last;
                    advanced
                });
                for (request, result) in batch.drain(..).zip(results) {
                    // The caller may have stopped waiting; its transaction
                    // stands regardless.
                    let _ = request.reply.send(result);
                }
            }
            Err(error) => {
                tracing::error!(%error, transactions = batch.len(), "store batch commit failed");
                for request in batch.drain(..) {
                    let _ = request.reply.send(Err(StoreError::Backend {
                        message: format!("batch commit failed: {error}"),
                    }));
                }
            }
        }
    }

    /// Applies the batch in one durable redb transaction. On error nothing of
    /// the batch is acknowledged (redb may still have made it durable if the
    /// commit itself failed late, so callers must treat it as unknown).
    fn write_batch(&self, batch: &[CommitRequest]) -> Result<Vec<Outcome>, redb::Error> {
        let mut write = self.shared.database.begin_write()?;
        write.set_durability(Durability::Immediate)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut revision = self.next_revision - 1;
        {
            let mut entries = write.open_table(ENTRIES)?;
            for request in batch {
                match first_conflict(&entries, &request.txn)? {
                    Some(conflict) => outcomes.push(Outcome::Conflict(conflict)),
                    None => {
                        revision += 1;
                        let events = apply_ops(&mut entries, &request.txn.ops, revision)?;
                        outcomes.push(Outcome::Committed { revision, events });
                    }
                }
            }
            write.open_table(META)?.insert(META_REVISION, revision)?;
        }
        write.commit()?;
        Ok(outcomes)
    }
}

/// The first condition of `txn` that the table (as left by the batch so far)
/// does not meet.
fn first_conflict(
    entries: &redb::Table<&str, &[u8]>,
    txn: &Txn,
) -> Result<Option<StoreError>, redb::Error> {
    for condition in &txn.conditions {
        let Condition::Revision {
            key,
            revision: expected,
        } = condition;
        let found = match entries.get(key.as_str())? {
            Some(guard) => {
                decode_record(key, guard.value())
                    .map_err(corrupted)?
                    .mod_revision
            }
            None => 0,
        };
        if found != *expected {
            return Ok(Some(StoreError::Conflict {
                key: key.clone(),
                expected: *expected,
                found,
            }));
        }
    }
    Ok(None)
}

fn apply_ops(
    entries: &mut redb::Table<&str, &[u8]>,
    ops: &[Op],
    revision: Revision,
) -> Result<Vec<Event>, redb::Error> {
    let mut events = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::Put { key, value } => {
                let create_revision = match entries.get(key.as_str())? {
                    Some(guard) => {
                        decode_record(key, guard.value())
                            .map_err(corrupted)?
                            .create_revision
                    }
                    None => revision,
                };
                entries.insert(
                    key.as_str(),
                    encode_record(create_revision, revision, value).as_slice(),
                )?;
                events.push(Event {
                    revision,
                    kind: EventKind::Put,
                    key: key.clone(),
                    value: value.clone(),
                });
            }
            Op::Delete { key } => {
                // Deleting an absent key changes nothing, so watchers hear nothing.
                if entries.remove(key.as_str())?.is_some() {
                    events.push(Event {
                        revision,
                        kind: EventKind::Delete,
                        key: key.clone(),
                        value: Bytes::new(),
                    });
                }
            }
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "a test fails loudly on any unexpected error"
    )]

    use std::time::Duration;

    use super::*;

    /// A test that waits longer than this for the store has found a hang.
    const WAIT_MAX: Duration = Duration::from_secs(30);

    fn open() -> (tempfile::TempDir, RedbStore) {
        let directory = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&directory.path().join("store.redb")).unwrap();
        (directory, store)
    }

    #[test]
    fn record_round_trips_and_rejects_truncation() {
        let record = encode_record(3, 7, b"value");
        let decoded = decode_record("k", &record).unwrap();
        assert_eq!(
            (decoded.create_revision, decoded.mod_revision, decoded.value),
            (3, 7, &b"value"[..])
        );
        assert!(decode_record("k", &record[..RECORD_HEADER_BYTES - 1]).is_err());
        assert_eq!(
            decode_record("k", &record[..RECORD_HEADER_BYTES])
                .unwrap()
                .value,
            b""
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_batches_and_get_consecutive_revisions() {
        const COMMITTERS: u64 = 64;
        let (_directory, store) = open();
        // Queued before the writer can take any, so they must be grouped.
        let commits: Vec<_> = (0..COMMITTERS)
            .map(|index| store.commit(Txn::new().put(format!("k/{index}"), "v")))
            .collect();
        let tasks: Vec<_> = commits.into_iter().map(tokio::spawn).collect();
        let mut revisions = Vec::new();
        for task in tasks {
            revisions.push(
                tokio::time::timeout(WAIT_MAX, task)
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap(),
            );
        }
        revisions.sort_unstable();
        assert_eq!(revisions, (1..=COMMITTERS).collect::<Vec<_>>());
        assert!(
            store.batches_committed() < COMMITTERS,
            "{} batches",
            store.batches_committed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_writer_fails_callers_instead_of_hanging_them() {
        let (_directory, store) = open();
        store.commit(Txn::new().put("before", "1")).await.unwrap();
        store.panic_writer_at_next_batch();

        let error = tokio::time::timeout(WAIT_MAX, store.commit(Txn::new().put("lost", "1")))
            .await
            .unwrap()
            .unwrap_err();
        // It was in the batch that panicked, so whether it landed is unknown.
        assert!(matches!(error, StoreError::Backend { .. }), "{error:?}");
        let error = tokio::time::timeout(WAIT_MAX, store.commit(Txn::new().put("after", "1")))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(error, StoreError::Closed), "{error:?}");

        // Reads go on without the writer, and dropping the store does not hang.
        assert!(store.get("before").unwrap().is_some());
        assert!(store.get("lost").unwrap().is_none());
        tokio::time::timeout(WAIT_MAX, tokio::task::spawn_blocking(move || drop(store)))
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn a_file_of_another_format_version_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("store.redb");
        drop(RedbStore::open(&path).unwrap());
        {
            let database = Database::create(&path).unwrap();
            let write = database.begin_write().unwrap();
            write
                .open_table(META)
                .unwrap()
                .insert(META_FORMAT_VERSION, FORMAT_VERSION + 1)
                .unwrap();
            write.commit().unwrap();
        }
        let error = RedbStore::open(&path).err().unwrap();
        assert!(error.to_string().contains("format version"), "{error}");
    }
}
