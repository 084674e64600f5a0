//! Task state changes on their way to the control plane.
//!
//! ```text
//! managed task ──submit──▶ outbox/{seq}.json (written first) ──▶ bounded queue ──▶ worker ──▶ SubmitTaskStateChange
//!                                                                             ▲ retry with backoff │
//!                                                                             └────────────────────┘
//! ```
//!
//! A change is on disk before it is queued and leaves the disk only once the
//! control plane took it (or refused it for good), so an agent restart loses
//! none: the next start sends what the outbox still holds, in order. Sending
//! twice is harmless, because the control plane ignores moves backwards.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_types::ecs::SubmitTaskStateChangeRequest;
use tokio::sync::{mpsc, Notify};

use crate::api::ApiClient;
use crate::backoff::backoff_delay_ms;
use crate::clock::Jitter;
use crate::persist::{list_json_files, read_json, PersistError, Persistence};

/// Changes queued in memory at once; a managed task submitting more waits,
/// which slows its progress rather than growing memory.
pub const STATE_CHANGE_QUEUE_MAX: usize = 256;

pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SubmitError>> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    /// The control plane could not take it now; try again later.
    #[error("retryable: {0}")]
    Retryable(String),
    /// The control plane refused it; sending it again cannot help.
    #[error("refused: {0}")]
    Refused(String),
}

/// Where task state changes go: the ECS API, or a recording fake in tests.
pub trait StateChangeSink: Send + Sync + 'static {
    fn submit_task_state_change<'a>(
        &'a self,
        change: &'a SubmitTaskStateChangeRequest,
    ) -> SinkFuture<'a>;
}

impl StateChangeSink for ApiClient {
    fn submit_task_state_change<'a>(
        &'a self,
        change: &'a SubmitTaskStateChangeRequest,
    ) -> SinkFuture<'a> {
        Box::pin(async move {
            match ApiClient::submit_task_state_change(self, change).await {
                Ok(_) => Ok(()),
                Err(error) if error.is_retryable() => {
                    Err(SubmitError::Retryable(error.to_string()))
                }
                Err(error) => Err(SubmitError::Refused(error.to_string())),
            }
        })
    }
}

struct Entry {
    /// The outbox file holding the change, when it was written to one.
    path: Option<PathBuf>,
    change: SubmitTaskStateChangeRequest,
}

struct Shared {
    pending: AtomicUsize,
    idle: Notify,
}

/// The sending end of the outbox; cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    sender: mpsc::Sender<Entry>,
    directory: PathBuf,
    persistence: Persistence,
    next_sequence: Arc<AtomicU64>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Reporter")
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    /// Starts the worker; what an earlier run left in `directory` goes first.
    pub fn start(
        sink: Arc<dyn StateChangeSink>,
        directory: PathBuf,
        persistence: Persistence,
        jitter: Jitter,
    ) -> Result<Self, PersistError> {
        let mut backlog = VecDeque::new();
        let mut last_sequence = 0;
        for path in list_json_files(&directory)? {
            let sequence = sequence_of(&path);
            last_sequence = last_sequence.max(sequence);
            match read_json::<SubmitTaskStateChangeRequest>(&path) {
                Ok(Some(change)) => backlog.push_back(Entry {
                    path: Some(path),
                    change,
                }),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "dropping an unreadable outbox entry");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let shared = Arc::new(Shared {
            pending: AtomicUsize::new(backlog.len()),
            idle: Notify::new(),
        });
        let (sender, receiver) = mpsc::channel(STATE_CHANGE_QUEUE_MAX);
        tokio::spawn(run_worker(
            sink,
            backlog,
            receiver,
            Arc::clone(&shared),
            jitter,
        ));
        Ok(Self {
            sender,
            directory,
            persistence,
            next_sequence: Arc::new(AtomicU64::new(last_sequence + 1)),
            shared,
        })
    }

    /// Writes the change to the outbox, then queues it for sending.
    pub async fn submit(&self, change: SubmitTaskStateChangeRequest) -> Result<(), PersistError> {
        let sequence = self.next_sequence.fetch_add(1, Ordering::Relaxed);
        let path = self.directory.join(format!("{sequence:020}.json"));
        let written = self.persistence.write_task_file(&path, &change).await?;
        let path = written.then_some(path);
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        if self.sender.send(Entry { path, change }).await.is_err() {
            // The worker is gone only when the runtime shuts down; the entry
            // stays on disk for the next start.
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Changes written but not yet taken by the control plane.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }

    /// Waits until every queued change is sent, or `limit` passes; true when
    /// the outbox is empty.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.shared.idle.notified();
                if self.pending() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

fn sequence_of(path: &Path) -> u64 {
    path.file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.parse().ok())
        .unwrap_or(0)
}

async fn run_worker(
    sink: Arc<dyn StateChangeSink>,
    mut backlog: VecDeque<Entry>,
    mut receiver: mpsc::Receiver<Entry>,
    shared: Arc<Shared>,
    jitter: Jitter,
) {
    loop {
        let entry = match backlog.pop_front() {
            Some(entry) => entry,
            None => match receiver.recv().await {
                Some(entry) => entry,
                None => return,
            },
        };
        deliver(&*sink, &entry, &jitter).await;
        if let Some(path) = &entry.path {
            if let Err(error) = tokio::fs::remove_file(path).await {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), %error, "cannot remove a sent outbox entry");
                }
            }
        }
        if shared.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.idle.notify_waiters();
        }
    }
}

/// Sends one change until the control plane takes or refuses it. Retries are
/// unbounded in number, because a lost state change leaves a task wrong in
/// the control plane forever, but each wait is bounded by the backoff cap.
async fn deliver(sink: &dyn StateChangeSink, entry: &Entry, jitter: &Jitter) {
    let mut attempt: u32 = 0;
    loop {
        match sink.submit_task_state_change(&entry.change).await {
            Ok(()) => return,
            Err(SubmitError::Refused(reason)) => {
                tracing::warn!(task = ?entry.change.task, status = ?entry.change.status, %reason, "control plane refused a state change; dropping it");
                return;
            }
            Err(SubmitError::Retryable(reason)) => {
                let delay_ms = backoff_delay_ms(attempt, jitter.next_fraction());
                if attempt % 10 == 0 {
                    tracing::info!(task = ?entry.change.task, %reason, delay_ms, "state change not delivered yet; retrying");
                }
                attempt = attempt.saturating_add(1);
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
        }
    }
}
