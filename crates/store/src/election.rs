//! Which replica runs each loop that must run once, and the fence that
//! makes a deposed leader's writes fail.
//!
//! Several `flotilla server` replicas may share one store. Each serves the
//! whole API, but a singleton loop (the service scheduler, collection of
//! stopped tasks, ...) runs only on the replica that leads its *role*.
//! [`Election::lead`] tells a replica, as it changes, whether it leads a
//! role and under which [`Term`]. A term carries *fence* conditions that
//! hold only while the term lasts; work run inside [`as_leader`] on a
//! [`FencedStore`] has them added to every transaction it commits, so a
//! leader that was deposed (paused, partitioned) but has not noticed yet
//! changes nothing: its commit fails with [`StoreError::Unavailable`].
//!
//! ```text
//!  Election::lead(role) ──▶ Some(Term{fence}) ──▶ supervisor runs the loop in as_leader(term)
//!                      └──▶ None             ──▶ supervisor stops it
//!  FencedStore::commit(txn) inside as_leader: txn + term.fence conditions
//! ```
//!
//! With one process on the embedded store, [`SoleReplica`] leads every
//! role at once with an empty fence: nothing changes for `flotilla up`.
//! On etcd, `EtcdElection` campaigns with a lease per replica.
//!
//! *Architecture invariant:* the election keys live in the store's own
//! keyspace (under [`LEADERS_PREFIX`] and [`REPLICAS_PREFIX`]), so that the
//! fence is an ordinary revision condition and any replica can list the
//! leaders and the live replicas from its local reads.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::{CommitFuture, Condition, Page, Revision, Store, StoreError, Txn, TxnLimits, Watch};

/// Where each role's election key lives: `leaders/ROLE`, holding the id of
/// the replica that leads it.
pub const LEADERS_PREFIX: &str = "leaders/";
/// Where each live replica announces itself: `replicas/ID`, gone when its
/// lease expires.
pub const REPLICAS_PREFIX: &str = "replicas/";

/// Most fence conditions a term adds to a transaction; backends' limits
/// are lowered by this much so that a fenced transaction still fits.
pub const FENCE_CONDITIONS_MAX: usize = 1;

/// One replica's leadership of one role: what its writes are fenced with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub role: &'static str,
    /// Conditions that hold only while this term lasts; empty where there
    /// is a single replica.
    pub fence: Vec<Condition>,
}

/// Leader election among the replicas sharing a store.
pub trait Election: Send + Sync + 'static {
    /// This replica's name, as the election keys and `/health` show it.
    fn replica_id(&self) -> &str;

    /// This replica's leadership of `role` as it changes: `Some(term)`
    /// while it leads. The first call for a role starts campaigning for it.
    fn lead(&self, role: &'static str) -> watch::Receiver<Option<Term>>;

    /// Whether this replica reached the store recently enough to know
    /// that its lease still holds. A replica that has not refuses writes.
    fn reachable(&self) -> bool;

    /// Whether other replicas may share the store (etcd), so that leaders
    /// are elected rather than given.
    fn replicated(&self) -> bool;

    /// Gives up every role at once and for good, so that another replica
    /// takes over without waiting for this one's lease to run out: what a
    /// clean shutdown does last.
    fn resign(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

/// The roles this replica leads now, of those it campaigned for.
pub fn roles_led(roles: &[&'static str], election: &dyn Election) -> Vec<&'static str> {
    roles
        .iter()
        .copied()
        .filter(|role| election.lead(role).borrow().is_some())
        .collect()
}

/// Each role and the replica that leads it, as the store shows them.
pub fn leaders(store: &dyn Store) -> Result<Vec<(String, String)>, StoreError> {
    named_values(store, LEADERS_PREFIX)
}

/// The live replicas (their ids) and what each announced (its API address).
pub fn replicas(store: &dyn Store) -> Result<Vec<(String, String)>, StoreError> {
    named_values(store, REPLICAS_PREFIX)
}

fn named_values(store: &dyn Store, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
    let page = store.list(prefix, None, crate::LIST_LIMIT_MAX)?;
    Ok(page
        .entries
        .into_iter()
        .map(|entry| {
            (
                entry.key[prefix.len()..].to_owned(),
                String::from_utf8_lossy(&entry.value).into_owned(),
            )
        })
        .collect())
}

/// The only replica: leads every role, with nothing to fence.
pub struct SoleReplica {
    replica_id: String,
    roles: Mutex<HashMap<&'static str, watch::Sender<Option<Term>>>>,
}

impl SoleReplica {
    pub fn new(replica_id: impl Into<String>) -> Self {
        Self {
            replica_id: replica_id.into(),
            roles: Mutex::new(HashMap::new()),
        }
    }
}

impl Election for SoleReplica {
    fn replica_id(&self) -> &str {
        &self.replica_id
    }

    fn lead(&self, role: &'static str) -> watch::Receiver<Option<Term>> {
        let mut roles = self
            .roles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        roles
            .entry(role)
            .or_insert_with(|| {
                watch::Sender::new(Some(Term {
                    role,
                    fence: Vec::new(),
                }))
            })
            .subscribe()
    }

    fn reachable(&self) -> bool {
        true
    }

    fn replicated(&self) -> bool {
        false
    }
}

tokio::task_local! {
    static TERM: Term;
}

/// Runs `work` as the leader of `term`'s role: every commit it makes
/// through a [`FencedStore`] (in this task) carries the term's fence.
pub async fn as_leader<F: Future>(term: Term, work: F) -> F::Output {
    TERM.scope(term, work).await
}

/// The term the current task runs under, if any.
fn current_term() -> Option<Term> {
    TERM.try_with(Term::clone).ok()
}

/// A store whose commits carry the fence of the term they run under (see
/// [`as_leader`]) and are refused while the replica cannot tell whether
/// it still holds its lease. Reads, watches and revisions pass through.
pub struct FencedStore {
    inner: Arc<dyn Store>,
    election: Arc<dyn Election>,
}

impl FencedStore {
    pub fn new(inner: Arc<dyn Store>, election: Arc<dyn Election>) -> Self {
        Self { inner, election }
    }
}

impl Store for FencedStore {
    fn get(&self, key: &str) -> Result<Option<crate::Entry>, StoreError> {
        self.inner.get(key)
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        self.inner.list(prefix, start_after, limit)
    }

    fn commit(&self, mut txn: Txn) -> CommitFuture {
        let inner = Arc::clone(&self.inner);
        let election = Arc::clone(&self.election);
        // The term is looked up when the commit is polled, so that a
        // commit future made outside `as_leader` and awaited inside it is
        // fenced too.
        Box::pin(async move {
            let replica_id = election.replica_id().to_owned();
            if !election.reachable() {
                return Err(StoreError::Unavailable {
                    message: format!(
                        "replica {replica_id} has lost the store (its lease may have expired); \
                         writes are refused until it reaches the store again"
                    ),
                });
            }
            let term = current_term();
            if let Some(term) = &term {
                txn.conditions.extend(term.fence.iter().cloned());
            }
            match inner.commit(txn).await {
                Err(StoreError::Conflict {
                    key,
                    expected,
                    found,
                }) => {
                    let deposed = term.as_ref().filter(|term| {
                        term.fence
                            .iter()
                            .any(|Condition::Revision { key: fenced, .. }| *fenced == key)
                    });
                    match deposed {
                        Some(term) => Err(StoreError::Unavailable {
                            message: format!(
                                "replica {replica_id} no longer leads {}; its write was not applied",
                                term.role
                            ),
                        }),
                        None => Err(StoreError::Conflict {
                            key,
                            expected,
                            found,
                        }),
                    }
                }
                other => other,
            }
        })
    }

    fn limits(&self) -> TxnLimits {
        let limits = self.inner.limits();
        TxnLimits {
            conditions_max: limits.conditions_max.saturating_sub(FENCE_CONDITIONS_MAX),
            ..limits
        }
    }

    fn watch(&self, prefix: &str) -> Watch {
        self.inner.watch(prefix)
    }

    fn revision(&self) -> Revision {
        self.inner.revision()
    }

    fn revisions(&self) -> watch::Receiver<Revision> {
        self.inner.revisions()
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "a test fails loudly on any unexpected error"
    )]

    use super::*;
    use crate::MemoryStore;

    /// An election whose leadership the test sets, on any store.
    struct Given {
        reachable: std::sync::atomic::AtomicBool,
    }

    impl Election for Given {
        fn replica_id(&self) -> &str {
            "given"
        }
        fn lead(&self, _role: &'static str) -> watch::Receiver<Option<Term>> {
            watch::Sender::new(None).subscribe()
        }
        fn reachable(&self) -> bool {
            self.reachable.load(std::sync::atomic::Ordering::SeqCst)
        }
        fn replicated(&self) -> bool {
            true
        }
    }

    fn fenced() -> (Arc<MemoryStore>, FencedStore, Arc<Given>) {
        let inner = Arc::new(MemoryStore::new());
        let election = Arc::new(Given {
            reachable: true.into(),
        });
        let store = FencedStore::new(inner.clone(), election.clone());
        (inner, store, election)
    }

    fn term_on(key: &str, revision: Revision) -> Term {
        Term {
            role: "scheduler",
            fence: vec![Condition::Revision {
                key: key.to_owned(),
                revision,
            }],
        }
    }

    #[tokio::test]
    async fn a_leader_writes_while_its_election_key_is_unchanged() {
        let (inner, store, _) = fenced();
        let won = inner
            .commit(Txn::new().put("leaders/scheduler", "a"))
            .await
            .unwrap();
        let term = term_on("leaders/scheduler", won);
        as_leader(term.clone(), store.commit(Txn::new().put("task/1", "x")))
            .await
            .unwrap();
        assert!(inner.get("task/1").unwrap().is_some());
        // Another replica won the role since: the old leader's write fails
        // and changes nothing.
        inner
            .commit(Txn::new().put("leaders/scheduler", "b"))
            .await
            .unwrap();
        let refused = as_leader(term, store.commit(Txn::new().put("task/2", "y"))).await;
        match refused {
            Err(StoreError::Unavailable { message }) => {
                assert!(message.contains("no longer leads scheduler"), "{message}");
            }
            other => panic!("expected refusal, got {other:?}"),
        }
        assert!(inner.get("task/2").unwrap().is_none());
    }

    #[tokio::test]
    async fn writes_outside_a_term_are_not_fenced_and_conflicts_stay_conflicts() {
        let (inner, store, _) = fenced();
        inner
            .commit(Txn::new().put("leaders/scheduler", "b"))
            .await
            .unwrap();
        store.commit(Txn::new().put("a", "1")).await.unwrap();
        let conflict = store.commit(Txn::new().expect("a", 99).put("a", "2")).await;
        assert!(matches!(conflict, Err(StoreError::Conflict { .. })));
    }

    #[tokio::test]
    async fn a_replica_that_lost_the_store_refuses_writes() {
        let (inner, store, election) = fenced();
        election
            .reachable
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let refused = store.commit(Txn::new().put("a", "1")).await;
        assert!(matches!(refused, Err(StoreError::Unavailable { .. })));
        assert!(inner.get("a").unwrap().is_none());
        assert_eq!(
            store.limits().conditions_max,
            inner.limits().conditions_max - 1
        );
    }

    #[tokio::test]
    async fn the_sole_replica_leads_every_role_unfenced() {
        let election = SoleReplica::new("only");
        let term = election.lead("scheduler").borrow().clone().unwrap();
        assert!(term.fence.is_empty());
        assert_eq!(
            roles_led(&["scheduler", "gc"], &election),
            ["scheduler", "gc"]
        );
        assert!(election.reachable() && !election.replicated());
    }
}
