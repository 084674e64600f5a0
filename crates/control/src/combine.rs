//! Combining concurrent requests that want the same records into one commit.
//!
//! Requests queue per key (a task definition family, a cluster): the first to
//! arrive leads, commits its own request, then takes up to a bounded batch of
//! what queued behind it and commits that as one, until the queue is empty.
//! Each waiter gets its own answer. The lock is held only to queue and drain,
//! never across an await.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

type Queue<T, A> = Vec<(T, oneshot::Sender<A>)>;

/// Requests waiting for their key's leader, by key. A key present in the map
/// has a leader at work.
pub(crate) struct Combiner<T, A> {
    waiting: Mutex<HashMap<String, Queue<T, A>>>,
}

impl<T, A> Default for Combiner<T, A> {
    fn default() -> Self {
        Self {
            waiting: Mutex::default(),
        }
    }
}

/// Ends a leader's turn even when its future is dropped: the key leaves the
/// map, so the next request leads, and waiters still queued learn that their
/// request was abandoned.
struct Leading<'a, T, A> {
    combiner: &'a Combiner<T, A>,
    key: &'a str,
    finished: bool,
}

impl<T, A> Drop for Leading<'_, T, A> {
    fn drop(&mut self) {
        if !self.finished {
            self.combiner.lock().remove(self.key);
        }
    }
}

impl<T, A> Combiner<T, A> {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Queue<T, A>>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `item` under `key` and waits for its answer; `commit` answers a
    /// batch of at most `limit` items, one answer per item in order. `None`
    /// when the request was abandoned (its leader went away).
    pub(crate) async fn submit<F, Fut>(
        &self,
        key: &str,
        item: T,
        limit: usize,
        commit: F,
    ) -> Option<A>
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = Vec<A>>,
    {
        let (reply, answer) = oneshot::channel();
        let mut own = Some((item, reply));
        {
            let mut waiting = self.lock();
            if let Some(queue) = waiting.get_mut(key) {
                queue.extend(own.take());
            } else {
                waiting.insert(key.to_owned(), Vec::new());
            }
        }
        if let Some(own) = own {
            // No leader was at work: this request leads, and is its own first batch.
            let mut leading = Leading {
                combiner: self,
                key,
                finished: false,
            };
            let mut batch = vec![own];
            loop {
                let (items, replies): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
                for (answer, reply) in commit(items).await.into_iter().zip(replies) {
                    // A caller that went away no longer needs its answer.
                    let _ = reply.send(answer);
                }
                let mut waiting = self.lock();
                let queue = waiting.entry(key.to_owned()).or_default();
                if queue.is_empty() {
                    // Under the same lock, so that the next request leads.
                    waiting.remove(key);
                    leading.finished = true;
                    break;
                }
                let take = queue.len().min(limit);
                batch = queue.drain(..take).collect();
            }
        }
        answer.await.ok()
    }
}
