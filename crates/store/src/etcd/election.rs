//! Leader election on etcd leases: one lease per replica, kept alive; one
//! key per role, `leaders/ROLE`, created bound to the lease by the replica
//! that wins it. The key's `mod_revision` at creation is the term's fence:
//! a later leader re-creates the key at a later revision, so a condition on
//! it fails for every write of the old term.
//!
//! ```text
//!  lease loop:  grant(ttl) ─▶ put replicas/ID (lease) ─▶ keep alive every ttl/3
//!               no answer until the held time ends ─▶ held = None ─▶ grant again
//!  role loop:   wait for the lease ─▶ txn: if leaders/ROLE absent, put it (lease)
//!                 won at r ─▶ Some(Term{fence: leaders/ROLE at r}) until the key
//!                             changes or the held time ends ─▶ None
//!                 lost    ─▶ wait until the key is gone from the replica, retry
//! ```
//!
//! *Held time:* a keep-alive sent at `t` and answered keeps the lease at
//! etcd until at least `t + ttl`; the replica counts itself the holder only
//! until `t + ttl - ttl/6`, so that it stops leading (and writing, see
//! `FencedStore`) before etcd lets another replica take over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, KvClient, LeaseClient, PutOptions, TxnOp, TxnOpResponse};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{to_revision, wait_for_replica, EtcdStore, Shared, REQUEST_TIMEOUT};
use crate::election::{Election, Term, LEADERS_PREFIX, REPLICAS_PREFIX};
use crate::{Condition, Revision};

/// How long a replica's lease lasts without a keep-alive: how long a dead
/// leader's roles stay unled.
pub const LEASE_TTL_DEFAULT: Duration = Duration::from_secs(3);

/// Wait between attempts to reach etcd for the election.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    lease_id: i64,
    /// Until when the lease surely holds at etcd.
    until: Instant,
}

struct Inner {
    replica_id: String,
    /// What `replicas/ID` holds: the replica's API address.
    announce: String,
    shared: Arc<Shared>,
    kv: KvClient,
    lease: LeaseClient,
    ttl: Duration,
    held: watch::Sender<Option<Held>>,
    /// Set once by `resign`: no lease is granted or kept, no role won.
    resigned: AtomicBool,
    roles: Mutex<HashMap<&'static str, watch::Sender<Option<Term>>>>,
    runtime: tokio::runtime::Handle,
}

/// Leader election among the replicas on one etcd namespace.
#[derive(Clone)]
pub struct EtcdElection {
    inner: Arc<Inner>,
}

impl EtcdStore {
    /// Starts this replica's lease (announcing `announce` under
    /// `replicas/REPLICA_ID`) for elections among the replicas of this
    /// store's namespace. `ttl` is rounded up to whole seconds (etcd's unit).
    pub fn election(&self, replica_id: String, announce: String, ttl: Duration) -> EtcdElection {
        let ttl = Duration::from_secs(ttl.as_secs().max(1) + u64::from(ttl.subsec_nanos() > 0));
        let election = EtcdElection {
            inner: Arc::new(Inner {
                replica_id,
                announce,
                shared: self.shared.clone(),
                kv: self.kv.clone(),
                lease: self.lease.clone(),
                ttl,
                held: watch::Sender::new(None),
                resigned: AtomicBool::new(false),
                roles: Mutex::new(HashMap::new()),
                runtime: self.runtime.clone(),
            }),
        };
        self.runtime
            .spawn(lease_loop(Arc::downgrade(&election.inner)));
        election
    }
}

impl Inner {
    fn held_now(&self) -> Option<Held> {
        let held = *self.held.borrow();
        held.filter(|held| Instant::now() < held.until)
    }
}

impl Election for EtcdElection {
    fn replica_id(&self) -> &str {
        &self.inner.replica_id
    }

    fn lead(&self, role: &'static str) -> watch::Receiver<Option<Term>> {
        let mut roles = self
            .inner
            .roles
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = roles.get(role) {
            return sender.subscribe();
        }
        let sender = watch::Sender::new(None);
        let receiver = sender.subscribe();
        roles.insert(role, sender.clone());
        self.inner
            .runtime
            .spawn(role_loop(Arc::downgrade(&self.inner), role, sender));
        receiver
    }

    fn reachable(&self) -> bool {
        self.inner.held_now().is_some()
    }

    fn replicated(&self) -> bool {
        true
    }

    /// Stops leading (every role's watch turns `None` as the lease is no
    /// longer held), then revokes the lease, which deletes the replica's
    /// `leaders/ROLE` keys at etcd: the other replicas' campaigns win at
    /// once, and a late write of this replica fails its fence.
    fn resign(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.resigned.store(true, Ordering::SeqCst);
            let held = inner.held.send_replace(None);
            let Some(held) = held else {
                return;
            };
            let mut lease = inner.lease.clone();
            match tokio::time::timeout(REQUEST_TIMEOUT, lease.revoke(held.lease_id)).await {
                Ok(Ok(_)) => {
                    tracing::info!(replica = %inner.replica_id, "resigned: lease revoked")
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "resigning: the lease could not be revoked; it will expire")
                }
                Err(_) => tracing::warn!("resigning: no answer from etcd; the lease will expire"),
            }
        })
    }
}

/// Keeps this replica's lease, granting a new one when it is lost. Ends
/// when the election is dropped.
async fn lease_loop(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if strong.resigned.load(Ordering::SeqCst) {
            return;
        }
        let held = match hold_one_lease(&strong).await {
            Ok(()) => continue,
            Err(message) => message,
        };
        strong.held.send_replace(None);
        tracing::warn!(replica = %strong.replica_id, reason = %held, "lost the etcd lease; leading nothing until a new one is granted");
        drop(strong);
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Grants a lease and keeps it alive until it cannot be kept.
async fn hold_one_lease(inner: &Inner) -> Result<(), String> {
    let mut lease = inner.lease.clone();
    let ttl_seconds = i64::try_from(inner.ttl.as_secs()).unwrap_or(i64::MAX);
    let sent = Instant::now();
    let granted = tokio::time::timeout(inner.ttl, lease.grant(ttl_seconds, None))
        .await
        .map_err(|_| "granting a lease timed out".to_owned())?
        .map_err(|error| format!("granting a lease: {error}"))?;
    let lease_id = granted.id();
    let until = |sent: Instant| sent + inner.ttl - inner.ttl / 6;
    let mut kv = inner.kv.clone();
    let announce = tokio::time::timeout(
        inner.ttl,
        kv.put(
            inner
                .shared
                .etcd_key(&format!("{REPLICAS_PREFIX}{}", inner.replica_id)),
            inner.announce.clone(),
            Some(PutOptions::new().with_lease(lease_id)),
        ),
    )
    .await;
    if !matches!(announce, Ok(Ok(_))) {
        let _ = lease.revoke(lease_id).await;
        return Err("announcing the replica failed".to_owned());
    }
    if !hold(inner, lease_id, until(sent)) {
        let _ = lease.revoke(lease_id).await;
        return Ok(());
    }
    tracing::info!(replica = %inner.replica_id, lease_id, "holding an etcd lease");
    let period = inner.ttl / 3;
    let mut stream = None;
    loop {
        tokio::time::sleep(period).await;
        let sent = Instant::now();
        let answered = tokio::time::timeout(period, async {
            match stream.as_mut() {
                // Opening the stream sends the first keep-alive and reads
                // its answer (refusing an expired lease).
                None => {
                    stream = Some(lease.keep_alive(lease_id).await?);
                    Ok(Some(1))
                }
                Some((keeper, answers)) => {
                    keeper.keep_alive().await?;
                    answers
                        .message()
                        .await
                        .map(|answer| answer.map(|answer| answer.ttl()))
                }
            }
        })
        .await;
        match answered {
            Ok(Ok(Some(ttl))) if ttl > 0 => {
                if !hold(inner, lease_id, until(sent)) {
                    return Ok(());
                }
            }
            Ok(Ok(Some(_))) => return Err(format!("lease {lease_id} expired at etcd")),
            failed => {
                stream = None;
                let held_until = inner.held.borrow().map(|held| held.until);
                if held_until.is_none_or(|until| Instant::now() >= until) {
                    let why = match failed {
                        Ok(Err(error)) => error.to_string(),
                        Err(_) => "no answer in time".to_owned(),
                        _ => "the keep-alive stream ended".to_owned(),
                    };
                    return Err(format!("keeping lease {lease_id} alive: {why}"));
                }
            }
        }
    }
}

/// Records that the lease holds until `until`, unless the replica resigned
/// meanwhile (then it says so, and holds nothing).
fn hold(inner: &Inner, lease_id: i64, until: Instant) -> bool {
    let mut kept = false;
    inner.held.send_if_modified(|held| {
        if inner.resigned.load(Ordering::SeqCst) {
            return false;
        }
        kept = true;
        *held = Some(Held { lease_id, until });
        true
    });
    kept
}

/// Campaigns for `role` whenever it is free, and tells `leading` this
/// replica's term while it holds it.
async fn role_loop(
    inner: std::sync::Weak<Inner>,
    role: &'static str,
    leading: watch::Sender<Option<Term>>,
) {
    let key = format!("{LEADERS_PREFIX}{role}");
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if strong.resigned.load(Ordering::SeqCst) {
            return;
        }
        let Some(held) = strong.held_now() else {
            let mut held = strong.held.subscribe();
            drop(strong);
            let _ = tokio::time::timeout(RETRY_PAUSE * 4, held.changed()).await;
            continue;
        };
        match campaign(&strong, &key, held.lease_id).await {
            Ok(Some(revision)) => {
                let term = Term {
                    role,
                    fence: vec![Condition::Revision {
                        key: key.clone(),
                        revision,
                    }],
                };
                tracing::info!(replica = %strong.replica_id, role, revision, "leading");
                leading.send_replace(Some(term));
                hold_role(&strong, &key, revision, held.lease_id).await;
                leading.send_replace(None);
                tracing::info!(replica = %strong.replica_id, role, "no longer leading");
            }
            Ok(None) => wait_until_free(&strong, &key).await,
            Err(message) => {
                tracing::debug!(role, %message, "campaign failed");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Puts `key` bound to the lease if it is absent (or already this
/// replica's on this lease). The revision it was won at, or `None` when
/// another replica holds it.
async fn campaign(inner: &Inner, key: &str, lease_id: i64) -> Result<Option<Revision>, String> {
    let etcd_key = inner.shared.etcd_key(key);
    let txn = etcd_client::Txn::new()
        .when(vec![Compare::create_revision(
            etcd_key.clone(),
            CompareOp::Equal,
            0,
        )])
        .and_then(vec![TxnOp::put(
            etcd_key.clone(),
            inner.replica_id.clone(),
            Some(PutOptions::new().with_lease(lease_id)),
        )])
        .or_else(vec![TxnOp::get(etcd_key, None)]);
    let mut kv = inner.kv.clone();
    let response = tokio::time::timeout(REQUEST_TIMEOUT.min(inner.ttl), kv.txn(txn))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|error| error.to_string())?;
    let revision = to_revision(response.header().map_or(0, |header| header.revision()));
    let won = if response.succeeded() {
        Some(revision)
    } else {
        // Ours already, from an earlier campaign on this lease whose
        // answer was lost: the key's revision is still this term's.
        response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .filter(|pair| {
                    pair.lease() == lease_id && pair.value() == inner.replica_id.as_bytes()
                })
                .map(|pair| to_revision(pair.mod_revision())),
            _ => None,
        })
    };
    if let Some(revision) = won {
        // So that the fence's key is in this replica's reads before the
        // term's first write is decided on them.
        wait_for_replica(&inner.shared, revision).await?;
    }
    Ok(won)
}

/// Returns when this replica no longer surely holds `key` at `revision`:
/// the key changed or went, or the lease's held time ended.
async fn hold_role(inner: &Inner, key: &str, revision: Revision, lease_id: i64) {
    let mut revisions = inner.shared.revisions.subscribe();
    let mut held = inner.held.subscribe();
    loop {
        let Some(current) = inner.held_now().filter(|held| held.lease_id == lease_id) else {
            return;
        };
        let ours = inner
            .shared
            .read()
            .entries
            .get(key)
            .is_some_and(|stored| stored.mod_revision == revision);
        if !ours {
            return;
        }
        tokio::select! {
            _ = revisions.changed() => {}
            _ = held.changed() => {}
            () = tokio::time::sleep_until(current.until) => {}
        }
    }
}

/// Returns once `key` is absent from the replica (its holder's lease
/// expired or it resigned), or after a while, to campaign again anyway.
async fn wait_until_free(inner: &Inner, key: &str) {
    let mut revisions = inner.shared.revisions.subscribe();
    let deadline = Instant::now() + inner.ttl;
    while inner.shared.read().entries.contains_key(key) {
        tokio::select! {
            _ = revisions.changed() => {}
            () = tokio::time::sleep_until(deadline) => return,
        }
    }
}
