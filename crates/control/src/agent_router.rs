//! One store watch for every agent connection of the process.
//!
//! A connection needs the writes of its own instance's record and of its own
//! instance's tasks. Task keys (`ecs/tasks/{cluster}/{id}`) do not name the
//! instance, so a watch per connection would see, and have to look at, every
//! task write of the cluster: with a thousand agents, a thousand looks per
//! write. Here one task reads each change once, finds the instance it
//! concerns, and hands it to that instance's connections only.
//!
//! ```text
//!  store.watch("ecs/") ──▶ route task ──┬─ ecs/instances/{c}/{i}  → (c, i)
//!                                       ├─ ecs/tasks/{c}/{id} put → (c, record.instance_id), remembered
//!                                       └─ ecs/tasks/{c}/{id} del → (c, remembered owner)
//!        (c, i) ──▶ every Subscription of (c, i): bounded queue, or `Lagged` when full
//! ```
//!
//! *Invariant:* a [`Subscription`] sees every change committed after
//! [`AgentRouter::subscribe`] returned (and possibly some from just before),
//! or is told it lagged. The router's watch is opened, under the routes'
//! lock, before the first subscription is added.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use flotilla_store::{Event, EventKind, Store, Watch, WatchError};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::records::keys;

/// How many changes one connection may have waiting before it is told it
/// lagged (and sends its agent the full state instead).
pub const ROUTED_BACKLOG_MAX: usize = 4_096;

/// What a subscription receives.
#[derive(Clone, Debug)]
pub enum Routed {
    /// A write to the instance's record or to one of its tasks.
    Change(Event),
    /// Changes were lost: the subscriber must read the state afresh.
    Lagged,
    /// The store is shutting down.
    Closed,
}

/// A cluster's name and an instance id within it.
type InstanceKey = (String, String);

#[derive(Default)]
pub struct AgentRouter {
    routes: Arc<Mutex<Routes>>,
    next_id: AtomicU64,
    /// Runs the routing task, and restarts it if it panics.
    supervisor: crate::Supervisor,
}

#[derive(Default)]
struct Routes {
    /// Whether the routing task runs (and holds the watch).
    running: bool,
    subscribers: HashMap<InstanceKey, Vec<Subscriber>>,
    /// The instance of each task key seen, so that deletes can be routed.
    owners: HashMap<String, InstanceKey>,
}

struct Subscriber {
    id: u64,
    sender: mpsc::Sender<Routed>,
    lagged: Arc<AtomicBool>,
}

/// One connection's share of the changes.
pub struct Subscription {
    receiver: mpsc::Receiver<Routed>,
    lagged: Arc<AtomicBool>,
    routes: Weak<Mutex<Routes>>,
    instance: InstanceKey,
    id: u64,
}

impl AgentRouter {
    pub fn new(supervisor: crate::Supervisor) -> Self {
        Self {
            supervisor,
            ..Default::default()
        }
    }

    /// Subscribes to the changes of one instance, starting the routing task
    /// on first use. Must be called inside a Tokio runtime.
    pub fn subscribe(
        &self,
        store: &Arc<dyn Store>,
        cluster: &str,
        instance_id: &str,
    ) -> Subscription {
        let (sender, receiver) = mpsc::channel(ROUTED_BACKLOG_MAX);
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let instance = (cluster.to_owned(), instance_id.to_owned());
        let mut routes = lock(&self.routes);
        if !routes.running {
            routes.running = true;
            // The first run's watch starts now, so that no change after
            // this subscription is missed; a restarted run watches afresh
            // and tells every connection it lagged over the gap.
            let mut first = Some(store.watch(keys::ROOT));
            let store = Arc::downgrade(store);
            let routes = Arc::clone(&self.routes);
            self.supervisor.spawn("agent_router", move || {
                let watch = first
                    .take()
                    .map(|watch| (watch, false))
                    .or_else(|| store.upgrade().map(|store| (store.watch(keys::ROOT), true)));
                let routes = Arc::clone(&routes);
                async move {
                    let Some((watch, restarted)) = watch else {
                        lock(&routes).running = false;
                        return;
                    };
                    if restarted {
                        lock(&routes).broadcast_lag();
                    }
                    route(watch, routes).await;
                }
            });
        }
        routes
            .subscribers
            .entry(instance.clone())
            .or_default()
            .push(Subscriber {
                id,
                sender,
                lagged: Arc::clone(&lagged),
            });
        Subscription {
            receiver,
            lagged,
            routes: Arc::downgrade(&self.routes),
            instance,
            id,
        }
    }
}

impl Subscription {
    /// Waits for the next change. Cancel-safe.
    pub async fn next(&mut self) -> Routed {
        let received = self.receiver.recv().await;
        self.after(received)
    }

    /// The next change already waiting, if any.
    pub fn try_next(&mut self) -> Option<Routed> {
        match self.receiver.try_recv() {
            Ok(routed) => Some(self.after(Some(routed))),
            Err(mpsc::error::TryRecvError::Empty) => self.take_lag(),
            Err(mpsc::error::TryRecvError::Disconnected) => Some(self.after(None)),
        }
    }

    fn after(&mut self, received: Option<Routed>) -> Routed {
        if let Some(lagged) = self.take_lag() {
            return lagged;
        }
        match received {
            Some(Routed::Lagged) => {
                self.drain();
                Routed::Lagged
            }
            Some(routed) => routed,
            None => Routed::Closed,
        }
    }

    /// `Lagged`, once, when changes for this subscription were dropped.
    fn take_lag(&mut self) -> Option<Routed> {
        if !self.lagged.swap(false, Ordering::AcqRel) {
            return None;
        }
        self.drain();
        Some(Routed::Lagged)
    }

    /// Everything queued predates the state the subscriber reads next.
    fn drain(&mut self) {
        while self.receiver.try_recv().is_ok() {}
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(routes) = self.routes.upgrade() else {
            return;
        };
        let mut routes = lock(&routes);
        if let Some(subscribers) = routes.subscribers.get_mut(&self.instance) {
            subscribers.retain(|s| s.id != self.id);
            if subscribers.is_empty() {
                routes.subscribers.remove(&self.instance);
            }
        }
    }
}

fn lock(routes: &Mutex<Routes>) -> std::sync::MutexGuard<'_, Routes> {
    // A panic while holding the lock leaves maps that are still consistent
    // (every change to them is a single insert or remove).
    routes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The routing task: reads the store's changes until it closes.
async fn route(mut watch: Watch, routes: Arc<Mutex<Routes>>) {
    loop {
        let event = watch.next().await;
        let mut routes = lock(&routes);
        match event {
            Ok(event) => routes.deliver(event),
            Err(WatchError::Lagged { missed }) => {
                tracing::warn!(
                    missed,
                    "agent router fell behind the store; every connection resyncs"
                );
                routes.broadcast_lag();
            }
            Err(WatchError::Closed) => {
                for subscriber in routes.subscribers.values().flatten() {
                    let _ = subscriber.sender.try_send(Routed::Closed);
                }
                routes.subscribers.clear();
                routes.owners.clear();
                routes.running = false;
                return;
            }
        }
    }
}

/// The only part of a task record the router reads.
#[derive(Deserialize)]
struct Owner<'a> {
    #[serde(borrow)]
    instance_id: Cow<'a, str>,
}

impl Routes {
    fn deliver(&mut self, event: Event) {
        let Some(instance) = self.instance_of(&event) else {
            return;
        };
        let Some(subscribers) = self.subscribers.get(&instance) else {
            return;
        };
        for subscriber in subscribers {
            if subscriber
                .sender
                .try_send(Routed::Change(event.clone()))
                .is_err()
            {
                subscriber.lagged.store(true, Ordering::Release);
            }
        }
    }

    /// The instance a change concerns, if any.
    fn instance_of(&mut self, event: &Event) -> Option<InstanceKey> {
        if let Some(rest) = event.key.strip_prefix(keys::INSTANCES) {
            let (cluster, instance_id) = rest.split_once('/')?;
            return Some((cluster.to_owned(), instance_id.to_owned()));
        }
        let rest = event.key.strip_prefix(keys::TASKS)?;
        if event.kind == EventKind::Delete {
            return self.owners.remove(&event.key);
        }
        let (cluster, _) = rest.split_once('/')?;
        let owner: Owner = match serde_json::from_slice(&event.value) {
            Ok(owner) => owner,
            Err(error) => {
                tracing::error!(key = %event.key, %error, "task record names no instance");
                return None;
            }
        };
        let instance = (cluster.to_owned(), owner.instance_id.into_owned());
        if !self.owners.contains_key(&event.key) {
            self.owners.insert(event.key.clone(), instance.clone());
        }
        Some(instance)
    }

    fn broadcast_lag(&mut self) {
        for subscriber in self.subscribers.values().flatten() {
            subscriber.lagged.store(true, Ordering::Release);
            // Wakes the subscriber; if its queue is full it wakes anyway.
            let _ = subscriber.sender.try_send(Routed::Lagged);
        }
    }
}

#[cfg(test)]
mod tests {
    use flotilla_store::{MemoryStore, Txn};

    use super::*;

    fn task(instance_id: &str) -> Vec<u8> {
        serde_json::json!({"instance_id": instance_id, "other": [1, 2, 3]})
            .to_string()
            .into_bytes()
    }

    async fn commit(store: &Arc<dyn Store>, txn: Txn) {
        store.commit(txn).await.expect("commit");
    }

    fn key_of(routed: Routed) -> String {
        match routed {
            Routed::Change(event) => event.key,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn each_instance_hears_only_its_own_record_and_tasks() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let router = AgentRouter::default();
        let mut one = router.subscribe(&store, "c", "i1");
        let mut two = router.subscribe(&store, "c", "i2");
        let mut elsewhere = router.subscribe(&store, "d", "i1");

        commit(&store, Txn::new().put("ecs/tasks/c/t1", task("i1"))).await;
        commit(&store, Txn::new().put("ecs/tasks/c/t2", task("i2"))).await;
        commit(&store, Txn::new().put("ecs/instances/c/i2", b"{}".to_vec())).await;
        commit(&store, Txn::new().put("ecs/clusters/c", b"{}".to_vec())).await;
        commit(&store, Txn::new().delete("ecs/tasks/c/t1")).await;

        assert_eq!(key_of(one.next().await), "ecs/tasks/c/t1");
        let Routed::Change(deleted) = one.next().await else {
            panic!("expected the delete")
        };
        assert_eq!(
            (deleted.key.as_str(), deleted.kind),
            ("ecs/tasks/c/t1", EventKind::Delete)
        );
        assert_eq!(key_of(two.next().await), "ecs/tasks/c/t2");
        assert_eq!(key_of(two.next().await), "ecs/instances/c/i2");
        assert!(one.try_next().is_none());
        assert!(two.try_next().is_none());
        assert!(elsewhere.try_next().is_none(), "same id, other cluster");
    }

    #[tokio::test]
    async fn a_full_queue_turns_into_one_lag() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let router = AgentRouter::default();
        let mut slow = router.subscribe(&store, "c", "i1");
        for n in 0..=ROUTED_BACKLOG_MAX {
            commit(
                &store,
                Txn::new().put(format!("ecs/tasks/c/t{n}"), task("i1")),
            )
            .await;
            // Lets the router keep up with the store, so only `slow` lags.
            tokio::task::yield_now().await;
        }
        // The router has read everything once the last write reached a new subscriber.
        let mut probe = router.subscribe(&store, "c", "i2");
        commit(&store, Txn::new().put("ecs/tasks/c/probe", task("i2"))).await;
        assert_eq!(key_of(probe.next().await), "ecs/tasks/c/probe");

        assert!(matches!(slow.next().await, Routed::Lagged));
        assert!(slow.try_next().is_none(), "the backlog went with the lag");
    }

    /// A store whose first watch panics at its first event, as a bug in
    /// routing would; later watches are the memory store's own.
    struct FirstWatchPanics {
        inner: MemoryStore,
        watches: AtomicU64,
    }

    struct PanickingWatch;

    impl flotilla_store::WatchEvents for PanickingWatch {
        fn next(&mut self) -> flotilla_store::WatchFuture<'_> {
            Box::pin(async { panic!("routing hit a bug") })
        }
    }

    impl Store for FirstWatchPanics {
        fn get(
            &self,
            key: &str,
        ) -> Result<Option<flotilla_store::Entry>, flotilla_store::StoreError> {
            self.inner.get(key)
        }
        fn list(
            &self,
            prefix: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<flotilla_store::Page, flotilla_store::StoreError> {
            self.inner.list(prefix, after, limit)
        }
        fn commit(&self, txn: Txn) -> flotilla_store::CommitFuture {
            self.inner.commit(txn)
        }
        fn limits(&self) -> flotilla_store::TxnLimits {
            self.inner.limits()
        }
        fn watch(&self, prefix: &str) -> Watch {
            if self.watches.fetch_add(1, Ordering::SeqCst) == 0 {
                Box::new(PanickingWatch)
            } else {
                self.inner.watch(prefix)
            }
        }
        fn revision(&self) -> u64 {
            self.inner.revision()
        }
        fn revisions(&self) -> tokio::sync::watch::Receiver<u64> {
            self.inner.revisions()
        }
    }

    #[tokio::test]
    async fn a_panicking_router_restarts_and_every_connection_resyncs() {
        let store: Arc<dyn Store> = Arc::new(FirstWatchPanics {
            inner: MemoryStore::new(),
            watches: AtomicU64::new(0),
        });
        let supervisor = crate::Supervisor::new(crate::RestartPolicy {
            backoff_initial_ms: 1,
            ..Default::default()
        });
        let router = AgentRouter::new(supervisor.clone());
        let mut one = router.subscribe(&store, "c", "i1");
        // Whatever the panic lost, the connection is told to read afresh.
        assert!(matches!(one.next().await, Routed::Lagged));
        let report = &supervisor.report()[0];
        assert_eq!((report.name, report.restarts_total), ("agent_router", 1));
        assert_eq!(report.last_panic.as_deref(), Some("routing hit a bug"));
        // And changes flow again through the restarted router.
        commit(&store, Txn::new().put("ecs/tasks/c/t1", task("i1"))).await;
        assert_eq!(key_of(one.next().await), "ecs/tasks/c/t1");
    }

    #[tokio::test]
    async fn a_dropped_subscription_is_forgotten() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let router = AgentRouter::default();
        let first = router.subscribe(&store, "c", "i1");
        let mut second = router.subscribe(&store, "c", "i1");
        drop(first);
        assert_eq!(
            lock(&router.routes).subscribers[&("c".to_owned(), "i1".to_owned())].len(),
            1
        );
        commit(&store, Txn::new().put("ecs/tasks/c/t1", task("i1"))).await;
        assert_eq!(key_of(second.next().await), "ecs/tasks/c/t1");
        drop(second);
        assert!(lock(&router.routes).subscribers.is_empty());
    }
}
