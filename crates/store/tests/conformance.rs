//! One behavioural suite, run against every backend: whatever passes here is
//! what callers may rely on, whichever backend they are given.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flotilla_store::{
    Entry, Event, EventKind, MemoryStore, RedbStore, Revision, Store, StoreError, Txn,
    TxnLimitKind, Watch, WatchError, LIST_LIMIT_MAX,
};

/// A test that waits longer than this for the store has found a hang.
const WAIT_MAX: Duration = Duration::from_secs(30);

/// A store plus whatever must outlive it (the redb file's directory, the
/// etcd server), dropped after it.
struct Fixture {
    store: Arc<dyn Store>,
    _guard: Option<Box<dyn std::any::Any + Send>>,
}

async fn memory() -> Option<Fixture> {
    Some(Fixture {
        store: Arc::new(MemoryStore::new()),
        _guard: None,
    })
}

/// The in-memory backend with etcd's default limits: the suite holds for a
/// backend whose transactions are as small as etcd's.
async fn memory_with_etcd_limits() -> Option<Fixture> {
    Some(Fixture {
        store: Arc::new(MemoryStore::with_limits(
            flotilla_store::TxnLimits::ETCD_DEFAULT,
        )),
        _guard: None,
    })
}

async fn redb() -> Option<Fixture> {
    let directory = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&directory.path().join("store.redb")).unwrap();
    Some(Fixture {
        store: Arc::new(store),
        _guard: Some(Box::new(directory)),
    })
}

/// A store on an etcd of its own (Debian's `etcd`, started here), or `None`
/// to skip when the binary is missing outside CI.
#[cfg(feature = "etcd")]
async fn etcd() -> Option<Fixture> {
    let server = flotilla_store::etcd::testing::etcd_or_skip("etcd conformance")?;
    let store = flotilla_store::EtcdStore::connect(server.options())
        .await
        .unwrap();
    Some(Fixture {
        store: Arc::new(store),
        _guard: Some(Box::new(server)),
    })
}

async fn commit(store: &dyn Store, txn: Txn) -> Result<Revision, StoreError> {
    tokio::time::timeout(WAIT_MAX, store.commit(txn))
        .await
        .expect("commit hung")
}

async fn next_event(watch: &mut Watch) -> Event {
    tokio::time::timeout(WAIT_MAX, watch.next())
        .await
        .expect("watch hung")
        .unwrap()
}

fn keys(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|entry| entry.key.as_str()).collect()
}

/// Instantiates every suite case for one backend constructor. A new backend
/// is one more constructor returning a [`Fixture`] (or `None` to skip) and
/// one more `conformance!` line; every case speaks only the [`Store`] trait.
macro_rules! conformance {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn get_put_delete() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::get_put_delete(&*fixture.store).await;
            }
            #[tokio::test]
            async fn every_commit_advances_the_revision_by_one() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::every_commit_advances_the_revision_by_one(&*fixture.store).await;
            }
            #[tokio::test]
            async fn conditions() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::conditions(&*fixture.store).await;
            }
            #[tokio::test]
            async fn condition_and_op_on_the_same_key() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::condition_and_op_on_the_same_key(&*fixture.store).await;
            }
            #[tokio::test]
            async fn multi_key_transactions_are_atomic() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::multi_key_transactions_are_atomic(&*fixture.store).await;
            }
            #[tokio::test]
            async fn a_key_written_twice_in_one_transaction_is_refused() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::a_key_written_twice_in_one_transaction_is_refused(&*fixture.store).await;
            }
            #[tokio::test]
            async fn operations_are_bounded_by_the_backends_limit() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::operations_are_bounded_by_the_backends_limit(&*fixture.store).await;
            }
            #[tokio::test]
            async fn conditions_are_bounded_by_the_backends_limit() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::conditions_are_bounded_by_the_backends_limit(&*fixture.store).await;
            }
            #[tokio::test]
            async fn bytes_are_bounded_by_the_backends_limit() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::bytes_are_bounded_by_the_backends_limit(&*fixture.store).await;
            }
            #[tokio::test]
            async fn limits_admit_at_least_what_etcd_admits() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::limits_admit_at_least_what_etcd_admits(&*fixture.store);
            }
            #[tokio::test]
            async fn a_resolved_commit_is_visible_to_reads() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::a_resolved_commit_is_visible_to_reads(&*fixture.store).await;
            }
            #[tokio::test]
            async fn a_watch_ends_when_its_store_is_gone() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::a_watch_ends_when_its_store_is_gone(fixture).await;
            }
            #[tokio::test]
            async fn list_pages_through_a_prefix() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::list_pages_through_a_prefix(&*fixture.store).await;
            }
            #[tokio::test]
            async fn list_limit_is_capped() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::list_limit_is_capped(&*fixture.store).await;
            }
            #[tokio::test]
            async fn revisions_follow_commits() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::revisions_follow_commits(&*fixture.store).await;
            }
            #[tokio::test]
            async fn watch_sees_changes_in_order_under_its_prefix() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::watch_sees_changes_in_order_under_its_prefix(&*fixture.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_creates_of_one_key_admit_exactly_one() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::concurrent_creates_of_one_key_admit_exactly_one(fixture.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_compare_and_swap_loses_no_update() {
                let Some(fixture) = $backend().await else {
                    return;
                };
                super::concurrent_compare_and_swap_loses_no_update(fixture.store).await;
            }
        }
    };
}

conformance!(memory);
conformance!(redb);
conformance!(memory_with_etcd_limits);
#[cfg(feature = "etcd")]
conformance!(etcd);

async fn get_put_delete(store: &dyn Store) {
    assert_eq!(store.get("k").unwrap(), None);

    let created = commit(store, Txn::new().put("k", "one")).await.unwrap();
    let entry = store.get("k").unwrap().unwrap();
    assert_eq!(
        entry,
        Entry {
            key: "k".into(),
            value: Bytes::from("one"),
            create_revision: created,
            mod_revision: created
        }
    );

    let modified = commit(store, Txn::new().put("k", "two")).await.unwrap();
    assert!(modified > created);
    let entry = store.get("k").unwrap().unwrap();
    assert_eq!(
        (entry.value, entry.create_revision, entry.mod_revision),
        ("two".into(), created, modified)
    );

    commit(store, Txn::new().delete("k")).await.unwrap();
    assert_eq!(store.get("k").unwrap(), None);

    // A key written again after its delete is a new key: its creation restarts.
    let recreated = commit(store, Txn::new().put("k", "three")).await.unwrap();
    let entry = store.get("k").unwrap().unwrap();
    assert_eq!(
        (entry.create_revision, entry.mod_revision),
        (recreated, recreated)
    );

    let empty = commit(store, Txn::new().put("empty", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(store.get("empty").unwrap().unwrap().value, Bytes::new());
    assert_eq!(store.get("empty").unwrap().unwrap().mod_revision, empty);
}

async fn every_commit_advances_the_revision_by_one(store: &dyn Store) {
    let start = store.revision();
    assert_eq!(
        commit(store, Txn::new().put("a", "1")).await.unwrap(),
        start + 1
    );
    assert_eq!(store.revision(), start + 1);
    assert_eq!(
        commit(store, Txn::new().put("a", "2").put("b", "2"))
            .await
            .unwrap(),
        start + 2
    );
    // A transaction that changes nothing still commits, and still counts.
    assert_eq!(
        commit(store, Txn::new().delete("absent")).await.unwrap(),
        start + 3
    );
    assert_eq!(commit(store, Txn::new()).await.unwrap(), start + 4);
    // A conflicted one does not.
    commit(store, Txn::new().expect("a", 1_000).put("a", "3"))
        .await
        .unwrap_err();
    assert_eq!(store.revision(), start + 4);
    assert_eq!(
        commit(store, Txn::new().put("a", "4")).await.unwrap(),
        start + 5
    );
}

async fn conditions(store: &dyn Store) {
    // Revision 0 asserts absence.
    let created = commit(store, Txn::new().expect("k", 0).put("k", "v1"))
        .await
        .unwrap();
    let error = commit(store, Txn::new().expect("k", 0).put("k", "v2"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict { key, expected: 0, found } if key == "k" && *found == created),
        "{error:?}"
    );
    assert_eq!(store.get("k").unwrap().unwrap().value, "v1");

    let modified = commit(store, Txn::new().expect("k", created).put("k", "v3"))
        .await
        .unwrap();
    // The revision seen before the last write is stale now.
    let error = commit(store, Txn::new().expect("k", created).put("k", "v4"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict { expected, found, .. } if *expected == created && *found == modified),
        "{error:?}"
    );
    assert_eq!(store.get("k").unwrap().unwrap().value, "v3");

    // A condition on a key the transaction does not touch guards it all the same.
    commit(store, Txn::new().expect("k", modified).put("other", "x"))
        .await
        .unwrap();
    assert!(store.get("other").unwrap().is_some());

    // After a delete the key is absent again: revision 0 holds, the old one does not.
    let deleted = commit(store, Txn::new().expect("k", modified).delete("k"))
        .await
        .unwrap();
    assert!(deleted > modified);
    commit(store, Txn::new().expect("k", modified).put("k", "v5"))
        .await
        .unwrap_err();
    commit(store, Txn::new().expect("k", 0).put("k", "v5"))
        .await
        .unwrap();
}

async fn condition_and_op_on_the_same_key(store: &dyn Store) {
    let first = commit(store, Txn::new().expect("k", 0).put("k", "a"))
        .await
        .unwrap();
    let second = commit(store, Txn::new().expect("k", first).put("k", "b"))
        .await
        .unwrap();
    let entry = store.get("k").unwrap().unwrap();
    assert_eq!(
        (entry.value, entry.create_revision, entry.mod_revision),
        ("b".into(), first, second)
    );
    commit(store, Txn::new().expect("k", second).delete("k"))
        .await
        .unwrap();
    assert_eq!(store.get("k").unwrap(), None);
}

async fn multi_key_transactions_are_atomic(store: &dyn Store) {
    let base = commit(store, Txn::new().put("guard", "g").put("a", "0"))
        .await
        .unwrap();

    let stale = Txn::new()
        .expect("guard", base)
        .expect("b", 0)
        .put("a", "1")
        .put("b", "1")
        .put("c", "1");
    let revision = commit(store, stale.clone()).await.unwrap();
    for key in ["a", "b", "c"] {
        let entry = store.get(key).unwrap().unwrap();
        assert_eq!(
            (entry.value, entry.mod_revision),
            (Bytes::from("1"), revision),
            "{key}"
        );
    }

    // The same transaction again: its condition on `b` fails, so none of it applies.
    commit(store, stale).await.unwrap_err();
    let failing = Txn::new()
        .expect("guard", base)
        .expect("c", 0)
        .put("a", "2")
        .delete("b")
        .put("d", "2");
    commit(store, failing).await.unwrap_err();
    assert_eq!(store.get("a").unwrap().unwrap().value, "1");
    assert_eq!(store.get("b").unwrap().unwrap().value, "1");
    assert_eq!(store.get("d").unwrap(), None);
    assert_eq!(store.revision(), revision);
}

/// etcd refuses a transaction that puts or deletes one key twice ("duplicate
/// key given in txn request"); every backend does, so that no caller comes to
/// rely on the order of operations within a transaction.
async fn a_key_written_twice_in_one_transaction_is_refused(store: &dyn Store) {
    commit(store, Txn::new().put("k", "0")).await.unwrap();
    let before = store.revision();
    let twice = [
        Txn::new().put("k", "1").put("k", "2"),
        Txn::new().put("k", "1").delete("k"),
        Txn::new().delete("k").put("k", "2"),
        Txn::new().delete("k").delete("k"),
        Txn::new().put("new", "x").put("other", "y").delete("new"),
    ];
    for txn in twice {
        let error = commit(store, txn.clone()).await.unwrap_err();
        assert!(
            matches!(&error, StoreError::DuplicateKey { key } if key == "k" || key == "new"),
            "{txn:?}: {error:?}"
        );
    }
    assert_eq!(store.revision(), before);
    assert_eq!(store.get("k").unwrap().unwrap().value, "0");
    assert_eq!(store.get("new").unwrap(), None);
    assert_eq!(store.get("other").unwrap(), None);
    // A condition on a key it also writes is not a second write.
    commit(store, Txn::new().expect("k", before).put("k", "1"))
        .await
        .unwrap();
}

fn many_puts(count: usize) -> Txn {
    (0..count).fold(Txn::new(), |txn, index| {
        txn.put(format!("k/{index:05}"), "v")
    })
}

async fn operations_are_bounded_by_the_backends_limit(store: &dyn Store) {
    let limit = store.limits().ops_max;
    commit(store, many_puts(limit)).await.unwrap();
    let before = store.revision();
    let error = commit(store, many_puts(limit).put("one-too-many", "v"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::TooLarge { kind: TxnLimitKind::Operations, count, limit: stated } if count == limit + 1 && stated == limit),
        "{error:?}"
    );
    assert_eq!(store.revision(), before);
    assert_eq!(store.get("one-too-many").unwrap(), None);
}

async fn conditions_are_bounded_by_the_backends_limit(store: &dyn Store) {
    let limit = store.limits().conditions_max;
    let conditions = |count: usize| {
        (0..count).fold(Txn::new().put("guarded", "v"), |txn, index| {
            txn.expect(format!("absent/{index:05}"), 0)
        })
    };
    commit(store, conditions(limit)).await.unwrap();
    let before = store.revision();
    let error = commit(store, conditions(limit + 1).put("one-too-many", "v"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::TooLarge { kind: TxnLimitKind::Conditions, count, limit: stated } if count == limit + 1 && stated == limit),
        "{error:?}"
    );
    assert_eq!(store.revision(), before);
    assert_eq!(store.get("one-too-many").unwrap(), None);
}

async fn bytes_are_bounded_by_the_backends_limit(store: &dyn Store) {
    let limit = store.limits().bytes_max;
    let key = "big";
    let at_limit = Txn::new().put(key, vec![b'x'; limit - key.len()]);
    assert_eq!(at_limit.size_bytes(), limit);
    assert!(store.limits().check(&at_limit).is_ok());
    let before = store.revision();
    let over = Txn::new()
        .put("small", "v")
        .put(key, vec![b'x'; limit - key.len()]);
    let error = commit(store, over).await.unwrap_err();
    assert!(
        matches!(error, StoreError::TooLarge { kind: TxnLimitKind::Bytes, count, limit: stated } if count == limit + "small".len() + 1 && stated == limit),
        "{error:?}"
    );
    assert_eq!(store.revision(), before);
    assert_eq!(store.get("small").unwrap(), None);
}

/// Callers size their batches from [`Store::limits`]; no backend may be
/// smaller than etcd's defaults, which every batching caller is checked
/// against in its own tests.
fn limits_admit_at_least_what_etcd_admits(store: &dyn Store) {
    let limits = store.limits();
    let etcd = flotilla_store::TxnLimits::ETCD_DEFAULT;
    assert!(limits.ops_max >= etcd.ops_max, "{limits:?}");
    assert!(limits.conditions_max >= etcd.conditions_max, "{limits:?}");
    assert!(limits.bytes_max >= etcd.bytes_max, "{limits:?}");
    assert!(limits.items_per_txn(limits.ops_max + 1) >= 1);
}

/// The read model: reads are local and synchronous, and a commit resolves
/// only once they see it, so a caller always reads its own writes.
async fn a_resolved_commit_is_visible_to_reads(store: &dyn Store) {
    for round in 0..50u32 {
        let key = format!("ryw/{round:03}");
        let revision = commit(
            store,
            Txn::new().expect(&key, 0).put(&key, round.to_string()),
        )
        .await
        .unwrap();
        assert!(store.revision() >= revision);
        assert!(*store.revisions().borrow() >= revision);
        let entry = store.get(&key).unwrap().unwrap();
        assert_eq!(
            (entry.value, entry.mod_revision),
            (round.to_string().into(), revision)
        );
        let page = store.list("ryw/", Some(&key), 10).unwrap();
        assert!(page.entries.is_empty());
        let page = store.list("ryw/", None, 1_000).unwrap();
        assert_eq!(page.entries.last().unwrap().key, key);
    }
}

/// Loops that watch end when the store does, rather than wait forever.
async fn a_watch_ends_when_its_store_is_gone(fixture: Fixture) {
    let mut watch = fixture.store.watch("");
    commit(&*fixture.store, Txn::new().put("a", "1"))
        .await
        .unwrap();
    assert_eq!(next_event(&mut watch).await.key, "a");
    drop(fixture);
    let ended = tokio::time::timeout(WAIT_MAX, watch.next())
        .await
        .expect("watch hung after its store was dropped");
    assert_eq!(ended, Err(WatchError::Closed));
}

async fn list_pages_through_a_prefix(store: &dyn Store) {
    let txn = ["a", "a/1", "a/2", "a/3", "a/4", "a/5", "a0", "b/1", "Z"]
        .into_iter()
        .fold(Txn::new(), |txn, key| {
            txn.put(key, format!("value of {key}"))
        });
    let revision = commit(store, txn).await.unwrap();

    let page = store.list("a/", None, 2).unwrap();
    assert_eq!((keys(&page.entries), page.more), (vec!["a/1", "a/2"], true));
    assert_eq!(page.entries[0].value, "value of a/1");
    assert_eq!(page.entries[0].mod_revision, revision);

    let page = store.list("a/", Some("a/2"), 2).unwrap();
    assert_eq!((keys(&page.entries), page.more), (vec!["a/3", "a/4"], true));
    let page = store.list("a/", Some("a/4"), 2).unwrap();
    assert_eq!((keys(&page.entries), page.more), (vec!["a/5"], false));
    // An exact fit leaves nothing more.
    let page = store.list("a/", Some("a/3"), 2).unwrap();
    assert_eq!(
        (keys(&page.entries), page.more),
        (vec!["a/4", "a/5"], false)
    );
    let page = store.list("a/", Some("a/5"), 2).unwrap();
    assert_eq!(
        (keys(&page.entries), page.more),
        (Vec::<&str>::new(), false)
    );

    // start_after need not be a key, and may sort before or after the prefix.
    let page = store.list("a/", Some("a/25"), 10).unwrap();
    assert_eq!(keys(&page.entries), vec!["a/3", "a/4", "a/5"]);
    let page = store.list("a/", Some("0"), 10).unwrap();
    assert_eq!(keys(&page.entries), vec!["a/1", "a/2", "a/3", "a/4", "a/5"]);
    let page = store.list("a/", Some("zzz"), 10).unwrap();
    assert_eq!(
        (keys(&page.entries), page.more),
        (Vec::<&str>::new(), false)
    );

    let page = store.list("a/", None, 0).unwrap();
    assert_eq!((page.entries.len(), page.more), (0, true));
    let page = store.list("nothing/", None, 10).unwrap();
    assert_eq!((page.entries.len(), page.more), (0, false));

    let page = store.list("", None, 100).unwrap();
    assert_eq!(
        keys(&page.entries),
        vec!["Z", "a", "a/1", "a/2", "a/3", "a/4", "a/5", "a0", "b/1"]
    );
    let page = store.list("a", None, 100).unwrap();
    assert_eq!(
        keys(&page.entries),
        vec!["a", "a/1", "a/2", "a/3", "a/4", "a/5", "a0"]
    );
}

async fn list_limit_is_capped(store: &dyn Store) {
    let key_count = LIST_LIMIT_MAX + 1;
    let ops_max = store.limits().ops_max;
    for chunk_start in (0..key_count).step_by(ops_max) {
        let chunk_end = (chunk_start + ops_max).min(key_count);
        let txn = (chunk_start..chunk_end).fold(Txn::new(), |txn, index| {
            txn.put(format!("many/{index:06}"), "")
        });
        commit(store, txn).await.unwrap();
    }
    let page = store.list("many/", None, usize::MAX).unwrap();
    assert_eq!((page.entries.len(), page.more), (LIST_LIMIT_MAX, true));
    let last = page.entries.last().unwrap().key.clone();
    let page = store.list("many/", Some(&last), usize::MAX).unwrap();
    assert_eq!((page.entries.len(), page.more), (1, false));
}

async fn revisions_follow_commits(store: &dyn Store) {
    let mut revisions = store.revisions();
    assert_eq!(*revisions.borrow_and_update(), store.revision());
    let committed = commit(store, Txn::new().put("r/a", "1")).await.unwrap();
    revisions.changed().await.unwrap();
    assert_eq!(*revisions.borrow_and_update(), committed);
    // A failed condition commits nothing and says nothing.
    let refused = commit(
        store,
        Txn::new().expect("r/a", committed + 100).put("r/a", "2"),
    )
    .await;
    assert!(refused.is_err());
    assert!(!revisions.has_changed().unwrap());
}

async fn watch_sees_changes_in_order_under_its_prefix(store: &dyn Store) {
    commit(store, Txn::new().put("w/before", "x"))
        .await
        .unwrap();
    let mut watch = store.watch("w/");
    let mut everything = store.watch("");

    let first = commit(store, Txn::new().put("w/a", "1").put("elsewhere", "1"))
        .await
        .unwrap();
    let second = commit(store, Txn::new().put("x/a", "2")).await.unwrap();
    // Deleting an absent key changes nothing, so it makes no event.
    let third = commit(
        store,
        Txn::new().put("w/b", "3").delete("w/a").delete("w/absent"),
    )
    .await
    .unwrap();
    commit(store, Txn::new().expect("w/b", 0).put("w/c", "lost"))
        .await
        .unwrap_err();
    let fourth = commit(store, Txn::new().put("w/c", "4")).await.unwrap();

    let expected = [
        Event {
            revision: first,
            kind: EventKind::Put,
            key: "w/a".into(),
            value: "1".into(),
        },
        Event {
            revision: third,
            kind: EventKind::Put,
            key: "w/b".into(),
            value: "3".into(),
        },
        Event {
            revision: third,
            kind: EventKind::Delete,
            key: "w/a".into(),
            value: Bytes::new(),
        },
        Event {
            revision: fourth,
            kind: EventKind::Put,
            key: "w/c".into(),
            value: "4".into(),
        },
    ];
    for event in expected {
        assert_eq!(next_event(&mut watch).await, event);
    }
    let seen: Vec<(Revision, String)> = {
        let mut seen = Vec::new();
        for _ in 0..6 {
            let event = next_event(&mut everything).await;
            seen.push((event.revision, event.key));
        }
        seen
    };
    assert_eq!(
        seen,
        vec![
            (first, "w/a".into()),
            (first, "elsewhere".into()),
            (second, "x/a".into()),
            (third, "w/b".into()),
            (third, "w/a".into()),
            (fourth, "w/c".into()),
        ]
    );
    // Nothing else is pending.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), watch.next())
            .await
            .is_err()
    );
}

async fn concurrent_creates_of_one_key_admit_exactly_one(store: Arc<dyn Store>) {
    const CREATORS: usize = 64;
    // Built before any is polled, so that the durable backend sees them
    // together and must order conflicting transactions within one batch.
    let commits: Vec<_> = (0..CREATORS)
        .map(|creator| {
            store.commit(
                Txn::new()
                    .expect("only", 0)
                    .put("only", format!("{creator}")),
            )
        })
        .collect();
    let tasks: Vec<_> = commits.into_iter().map(tokio::spawn).collect();
    let mut winners = Vec::new();
    for task in tasks {
        match tokio::time::timeout(WAIT_MAX, task).await.unwrap().unwrap() {
            Ok(revision) => winners.push(revision),
            Err(StoreError::Conflict {
                key,
                expected: 0,
                found,
            }) => {
                assert_eq!(key, "only");
                assert!(found > 0);
            }
            Err(error) => panic!("unexpected error {error:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(store.get("only").unwrap().unwrap().mod_revision, winners[0]);
}

async fn concurrent_compare_and_swap_loses_no_update(store: Arc<dyn Store>) {
    const WRITERS: u64 = 32;
    const INCREMENTS_PER_WRITER: u64 = 200;
    // Far more than any writer needs: a bound, not an expectation.
    const ATTEMPTS_MAX: u64 = WRITERS * INCREMENTS_PER_WRITER * 100;

    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut conflicts = 0_u64;
                for _ in 0..INCREMENTS_PER_WRITER {
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        assert!(attempts < ATTEMPTS_MAX, "no progress");
                        let (current, revision) = match store.get("counter").unwrap() {
                            Some(entry) => (
                                std::str::from_utf8(&entry.value)
                                    .unwrap()
                                    .parse::<u64>()
                                    .unwrap(),
                                entry.mod_revision,
                            ),
                            None => (0, 0),
                        };
                        let txn = Txn::new()
                            .expect("counter", revision)
                            .put("counter", (current + 1).to_string());
                        match store.commit(txn).await {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => conflicts += 1,
                            Err(error) => panic!("unexpected error {error:?}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(300), writer)
            .await
            .unwrap()
            .unwrap();
    }
    let total = WRITERS * INCREMENTS_PER_WRITER;
    assert_eq!(
        store.get("counter").unwrap().unwrap().value,
        total.to_string()
    );
}

#[tokio::test]
async fn redb_data_and_revision_survive_reopen() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("store.redb");
    let (created, modified) = {
        let store = RedbStore::open(&path).unwrap();
        let created = commit(&store, Txn::new().put("kept", "1").put("deleted", "x"))
            .await
            .unwrap();
        let modified = commit(&store, Txn::new().put("kept", "2").delete("deleted"))
            .await
            .unwrap();
        // An empty transaction advances the revision too, and that must persist.
        commit(&store, Txn::new()).await.unwrap();
        (created, modified)
    };
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.revision(), modified + 1);
    let entry = store.get("kept").unwrap().unwrap();
    assert_eq!(
        (entry.value, entry.create_revision, entry.mod_revision),
        ("2".into(), created, modified)
    );
    assert_eq!(store.get("deleted").unwrap(), None);
    assert_eq!(
        commit(&store, Txn::new().expect("kept", modified).put("kept", "3"))
            .await
            .unwrap(),
        modified + 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_drop_answers_queued_commits_and_they_persist() {
    const COMMITS: usize = 200;
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("store.redb");
    let store = RedbStore::open(&path).unwrap();
    let tasks: Vec<_> = (0..COMMITS)
        .map(|index| tokio::spawn(store.commit(Txn::new().put(format!("k/{index:03}"), "v"))))
        .collect();
    // Made before the drop but first polled after it: too late to be queued.
    let late = store.commit(Txn::new().put("late", "v"));
    tokio::task::yield_now().await;
    drop(store);
    assert!(matches!(late.await, Err(StoreError::Closed)));

    let mut committed = Vec::new();
    for (index, task) in tasks.into_iter().enumerate() {
        match tokio::time::timeout(WAIT_MAX, task).await.unwrap().unwrap() {
            Ok(revision) => committed.push((index, revision)),
            Err(StoreError::Closed) => {}
            Err(error) => panic!("unexpected error {error:?}"),
        }
    }
    let store = RedbStore::open(&path).unwrap();
    for (index, revision) in committed {
        assert_eq!(
            store
                .get(&format!("k/{index:03}"))
                .unwrap()
                .unwrap()
                .mod_revision,
            revision
        );
    }
}
