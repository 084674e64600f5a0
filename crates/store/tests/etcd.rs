//! What the etcd backend does beyond the conformance suite: several
//! processes' stores on one etcd, a watch that resumes after a lost
//! connection and re-lists after a compaction, authentication, and the
//! marker that makes every transaction advance the revision.

#![cfg(feature = "etcd")]
#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_store::etcd::testing::{etcd_or_skip, EtcdServer};
use flotilla_store::etcd::{EtcdPassword, EtcdTls};
use flotilla_store::{EtcdOptions, EtcdStore, EventKind, Store, StoreError, Txn, WatchError};

/// A test that waits longer than this for the store has found a hang.
const WAIT_MAX: Duration = Duration::from_secs(30);

async fn connect(options: EtcdOptions) -> EtcdStore {
    tokio::time::timeout(WAIT_MAX, EtcdStore::connect(options))
        .await
        .unwrap()
        .unwrap()
}

/// Waits until `store` reads `value` at `key` (another store wrote it).
async fn eventually_reads(store: &EtcdStore, key: &str, value: &str) {
    for _ in 0..600 {
        if store
            .get(key)
            .unwrap()
            .is_some_and(|entry| entry.value == value)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{key} never read {value:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_etcd_see_each_others_writes_and_conflict() {
    let Some(server) = etcd_or_skip("two_stores_on_one_etcd") else {
        return;
    };
    let one = connect(server.options()).await;
    let two = connect(server.options()).await;
    let mut watch = two.watch("shared/");

    let created = one
        .commit(Txn::new().expect("shared/k", 0).put("shared/k", "one"))
        .await
        .unwrap();
    eventually_reads(&two, "shared/k", "one").await;
    let event = tokio::time::timeout(WAIT_MAX, watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (event.revision, event.kind, event.key.as_str()),
        (created, EventKind::Put, "shared/k")
    );
    assert_eq!(two.get("shared/k").unwrap().unwrap().mod_revision, created);

    // The second store writes on what it read; the first, still holding
    // the old revision, conflicts and learns the new one.
    let modified = two
        .commit(
            Txn::new()
                .expect("shared/k", created)
                .put("shared/k", "two"),
        )
        .await
        .unwrap();
    let error = one
        .commit(
            Txn::new()
                .expect("shared/k", created)
                .put("shared/k", "lost"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict { found, .. } if *found == modified),
        "{error:?}"
    );
    // A conflict resolves once its cause is readable here.
    assert_eq!(one.get("shared/k").unwrap().unwrap().value, "two");

    // A store connecting now lists what is there.
    let three = connect(server.options()).await;
    assert_eq!(
        three.get("shared/k").unwrap().unwrap().mod_revision,
        modified
    );
    assert!(three.revision() >= modified);
}

#[tokio::test]
async fn a_transaction_of_only_deletes_at_the_operation_limit_advances_the_revision() {
    let Some(server) = etcd_or_skip("deletes_at_the_limit") else {
        return;
    };
    let store = connect(server.options()).await;
    let limit = store.limits().ops_max;
    let puts = (0..limit).fold(Txn::new(), |txn, index| {
        txn.put(format!("d/{index:03}"), "v")
    });
    store.commit(puts).await.unwrap();
    let before = store.revision();
    let deletes = (0..limit).fold(Txn::new(), |txn, index| txn.delete(format!("d/{index:03}")));
    assert_eq!(store.commit(deletes.clone()).await.unwrap(), before + 1);
    assert!(store.list("d/", None, 1_000).unwrap().entries.is_empty());
    // Again, now that none of the keys exists: it still advances the revision.
    assert_eq!(store.commit(deletes).await.unwrap(), before + 2);
    assert_eq!(store.revision(), before + 2);
    // The marker that carried the revision is no key of the store.
    assert!(store.list("", None, 1_000).unwrap().entries.is_empty());
}

#[tokio::test]
async fn namespaces_keep_stores_apart() {
    let Some(server) = etcd_or_skip("namespaces_keep_stores_apart") else {
        return;
    };
    let one = connect(server.options()).await;
    let two = connect(EtcdOptions {
        namespace: "other/".to_owned(),
        ..server.options()
    })
    .await;
    one.commit(Txn::new().put("k", "one")).await.unwrap();
    let revision = two.commit(Txn::new().put("k", "two")).await.unwrap();
    assert_eq!(one.get("k").unwrap().unwrap().value, "one");
    assert_eq!(two.get("k").unwrap().unwrap().value, "two");
    assert_eq!(two.list("", None, 10).unwrap().entries.len(), 1);
    let error = EtcdStore::connect(EtcdOptions {
        namespace: "x".repeat(flotilla_store::etcd::NAMESPACE_MAX_BYTES + 1),
        ..server.options()
    })
    .await
    .err()
    .unwrap();
    assert!(error.to_string().contains("namespace"), "{error}");
    assert!(revision > 0);
}

#[tokio::test]
async fn connecting_to_no_etcd_fails_with_the_endpoint_named() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = EtcdOptions::from_url(&format!("etcd://127.0.0.1:{port}")).unwrap();
    let error = tokio::time::timeout(Duration::from_secs(60), EtcdStore::connect(options))
        .await
        .unwrap()
        .err()
        .unwrap();
    assert!(error.to_string().contains(&port.to_string()), "{error}");
}

#[tokio::test]
async fn user_and_password_authenticate() {
    let Some(server) = etcd_or_skip("user_and_password_authenticate") else {
        return;
    };
    let mut admin = etcd_client::Client::connect([server.endpoint()], None)
        .await
        .unwrap();
    admin.user_add("root", "root-secret", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();

    let error = EtcdStore::connect(server.options()).await.err().unwrap();
    assert!(matches!(error, StoreError::Backend { .. }), "{error:?}");
    let wrong = EtcdOptions {
        user: Some(("root".to_owned(), EtcdPassword::new("wrong"))),
        ..server.options()
    };
    assert!(EtcdStore::connect(wrong).await.is_err());

    let store = connect(EtcdOptions {
        user: Some(("root".to_owned(), EtcdPassword::new("root-secret"))),
        ..server.options()
    })
    .await;
    let revision = store.commit(Txn::new().put("k", "v")).await.unwrap();
    assert_eq!(store.get("k").unwrap().unwrap().mod_revision, revision);
}

/// A TCP proxy in front of etcd that a test can cut: every open connection
/// is closed and new ones are closed on arrival until it is mended.
struct Proxy {
    address: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped on every cut, so that connections opened before it end.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let generation = tokio::sync::watch::Sender::new(0_u64);
        let (accept_cut, accept_generation) = (cut.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if accept_cut.load(Ordering::SeqCst) {
                    continue;
                }
                let mut generation = accept_generation.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = generation.changed() => {}
                    }
                });
            }
        });
        Proxy {
            address,
            cut,
            generation,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|generation| *generation += 1);
    }

    fn mend(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

async fn compact(server: &EtcdServer) {
    let mut client = etcd_client::Client::connect([server.endpoint()], None)
        .await
        .unwrap();
    let revision = client
        .get("probe", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client
        .compact(
            revision,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_resumes_after_a_lost_connection_and_relists_after_compaction() {
    let Some(server) = etcd_or_skip("replica_resumes_and_relists") else {
        return;
    };
    let proxy = Proxy::start(server.endpoint()).await;
    let behind = connect(EtcdOptions {
        endpoints: vec![proxy.address.to_string()],
        ..server.options()
    })
    .await;
    let writer = connect(server.options()).await;
    let mut watch = behind.watch("");

    // Cut off, it misses writes, then resumes its watch where it stopped:
    // every event arrives, in order, and nothing lags.
    proxy.cut();
    let first = writer.commit(Txn::new().put("a", "1")).await.unwrap();
    let second = writer
        .commit(Txn::new().put("b", "2").delete("a"))
        .await
        .unwrap();
    proxy.mend();
    eventually_reads(&behind, "b", "2").await;
    assert_eq!(behind.get("a").unwrap(), None);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = tokio::time::timeout(WAIT_MAX, watch.next())
            .await
            .unwrap()
            .unwrap();
        seen.push((event.revision, event.kind, event.key));
    }
    assert_eq!(
        seen,
        vec![
            (first, EventKind::Put, "a".to_owned()),
            (second, EventKind::Put, "b".to_owned()),
            (second, EventKind::Delete, "a".to_owned()),
        ]
    );

    // Cut off while etcd compacts past its position: it re-lists, and its
    // watchers learn that they lagged.
    proxy.cut();
    writer.commit(Txn::new().put("c", "3")).await.unwrap();
    let last = writer.commit(Txn::new().delete("b")).await.unwrap();
    compact(&server).await;
    proxy.mend();
    eventually_reads(&behind, "c", "3").await;
    assert_eq!(behind.get("b").unwrap(), None);
    assert!(behind.revision() >= last);
    let lagged = tokio::time::timeout(WAIT_MAX, watch.next()).await.unwrap();
    assert!(
        matches!(lagged, Err(WatchError::Lagged { .. })),
        "{lagged:?}"
    );
    // And it goes on: its next write is seen by the other store.
    let revision = behind
        .commit(
            Txn::new()
                .expect("c", behind.get("c").unwrap().unwrap().mod_revision)
                .put("c", "4"),
        )
        .await
        .unwrap();
    let event = tokio::time::timeout(WAIT_MAX, watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((event.revision, event.key.as_str()), (revision, "c"));
    eventually_reads(&writer, "c", "4").await;
}

#[tokio::test]
async fn any_live_endpoint_of_several_serves() {
    let Some(server) = etcd_or_skip("any_live_endpoint_of_several_serves") else {
        return;
    };
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let url = format!("etcd://{dead},{}", server.endpoint());
    let store = connect(EtcdOptions::from_url(&url).unwrap()).await;
    for round in 0..20 {
        let revision = store
            .commit(Txn::new().put("k", round.to_string()))
            .await
            .unwrap();
        assert_eq!(store.get("k").unwrap().unwrap().mod_revision, revision);
    }
}

/// Runs openssl with `args` in `directory`.
fn openssl(directory: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .current_dir(directory)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl {args:?}: {status}");
}

#[tokio::test]
async fn tls_with_a_private_authority() {
    if flotilla_store::etcd::testing::etcd_or_skip("tls_with_a_private_authority").is_none() {
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let dir = directory.path();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=flotilla test authority",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    );
    let server = EtcdServer::start_tls(&dir.join("server.pem"), &dir.join("server.key")).unwrap();
    let tls = EtcdTls {
        ca_pem: Some(std::fs::read(dir.join("ca.pem")).unwrap()),
        ..EtcdTls::default()
    };
    let options = EtcdOptions {
        tls: Some(tls),
        ..server.options()
    };
    // Ready once it listens: the first connection may come before etcd serves.
    let mut store = None;
    for _ in 0..100 {
        match EtcdStore::connect(options.clone()).await {
            Ok(connected) => {
                store = Some(connected);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let store = store.expect("no TLS connection to etcd");
    let revision = store.commit(Txn::new().put("k", "v")).await.unwrap();
    assert_eq!(store.get("k").unwrap().unwrap().mod_revision, revision);
    // Without the authority, the server's certificate is not trusted.
    let untrusted = EtcdOptions {
        tls: Some(EtcdTls::default()),
        ..server.options()
    };
    assert!(EtcdStore::connect(untrusted).await.is_err());
    // And plain HTTP/2 to a TLS port does not connect either.
    assert!(EtcdStore::connect(server.options()).await.is_err());
}
