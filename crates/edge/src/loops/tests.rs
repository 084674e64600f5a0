//! A panic in the service scheduler, end to end: the supervisor restarts
//! it, `/metrics` counts the restarts, `/health` turns red while it keeps
//! failing and green once it runs again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_control::{Ecs, RestartPolicy, SchedulerSettings, Supervisor};
use flotilla_sigv4::Credentials;
use serde_json::json;
use flotilla_store::{CommitFuture, MemoryStore, Page, Store, StoreError, Txn, TxnLimits, Watch};
use flotilla_types::arn::Scope;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Edge, Metrics, RandomIds, SystemClock};

/// How long the test waits for the supervisor to get somewhere.
const WAIT_MAX: Duration = Duration::from_secs(30);

/// A store whose listings panic while `broken` is set, as a bug in a pass
/// over the records would.
struct BrokenListings {
    inner: MemoryStore,
    broken: AtomicBool,
}

impl Store for BrokenListings {
    fn get(&self, key: &str) -> Result<Option<flotilla_store::Entry>, StoreError> {
        self.inner.get(key)
    }
    fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        assert!(
            !self.broken.load(Ordering::SeqCst),
            "listing {prefix} hit a bug"
        );
        self.inner.list(prefix, after, limit)
    }
    fn commit(&self, txn: Txn) -> CommitFuture {
        self.inner.commit(txn)
    }
    fn limits(&self) -> TxnLimits {
        self.inner.limits()
    }
    fn watch(&self, prefix: &str) -> Watch {
        self.inner.watch(prefix)
    }
    fn revision(&self) -> u64 {
        self.inner.revision()
    }
    fn revisions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.revisions()
    }
}

/// `GET path` over a fresh connection: the status code and the body.
async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("reads");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn until(
    address: std::net::SocketAddr,
    path: &str,
    done: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = tokio::time::sleep(WAIT_MAX);
    tokio::pin!(deadline);
    loop {
        let (status, body) = get(address, path).await;
        if done(status, &body) {
            return (status, body);
        }
        tokio::select! {
            () = &mut deadline => panic!("{path} never got there; last {status}: {body}"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

fn restarts(metrics: &str, name: &str) -> Option<u64> {
    let series = format!("flotilla_supervised_loop_restarts_total{{loop=\"{name}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_service_scheduler_is_restarted_counted_and_reported() {
    let broken = Arc::new(BrokenListings {
        inner: MemoryStore::new(),
        broken: AtomicBool::new(true),
    });
    let store: Arc<dyn Store> = broken.clone();
    let policy = RestartPolicy {
        backoff_initial_ms: 1,
        backoff_max_ms: 20,
        healthy_after_ms: 300,
        failing_after: 3,
    };
    let ecs = Arc::new(
        Ecs::new(
            Arc::clone(&store),
            Scope::new("us-east-1", "000000000000"),
            Arc::new(SystemClock),
            Arc::new(RandomIds),
        )
        .with_supervisor(Supervisor::new(policy)),
    );
    let edge = Arc::new(Edge {
        ecs: Arc::clone(&ecs),
        credentials: Arc::new(Credentials::from_pairs([("test", "test")]).expect("credentials")),
        clock: Arc::new(SystemClock),
        ids: Arc::new(RandomIds),
        metrics: Metrics::default(),
        principals: Default::default(),
        store,
        agent_heartbeat_timeout_ms: 60_000,
        registry: None,
        logs: None,
        secrets: None,
        elbv2: None,
        iam: Arc::new(flotilla_iam::Iam::new(
            Arc::new(MemoryStore::new()),
            "000000000000",
        )),
        s3: None,
        task_credentials_duration_seconds:
            crate::task_roles::TASK_CREDENTIALS_DURATION_SECONDS_DEFAULT,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let address = listener.local_addr().expect("an address");
    let router = crate::router(edge);
    tokio::spawn(async move { axum::serve(listener, router).await });

    let (status, body) = get(address, "/health").await;
    let health: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!((status, &health["status"]), (200, &json!("ok")), "{body}");
    assert_eq!(health["storeReachable"], true);

    ecs.start_service_scheduler(SchedulerSettings::default());

    // Every pass panics: the loop keeps failing and /health says which.
    let (_, health) = until(address, "/health", |status, _| status == 503).await;
    let health: serde_json::Value = serde_json::from_str(&health).expect("json");
    assert_eq!(health["status"], "failing");
    assert_eq!(health["failingLoops"][0]["name"], "service_scheduler");
    assert!(
        health["failingLoops"][0]["lastPanic"]
            .as_str()
            .is_some_and(|cause| cause.contains("hit a bug")),
        "{health}"
    );
    assert!(
        health["failingLoops"][0]["restarts"].as_u64() >= Some(3),
        "{health}"
    );
    let (_, metrics) = get(address, "/metrics").await;
    assert!(
        restarts(&metrics, "service_scheduler") >= Some(3),
        "{metrics}"
    );
    assert!(
        metrics.contains("flotilla_supervised_loop_failing{loop=\"service_scheduler\"} 1"),
        "{metrics}"
    );

    // The bug goes away: the next restart runs, and once it has run for the
    // healthy period /health is green again, the restarts still counted.
    broken.broken.store(false, Ordering::SeqCst);
    let (_, body) = until(address, "/health", |status, body| {
        status == 200 && body.contains("\"status\":\"ok\"")
    })
    .await;
    let health: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(health["leads"], json!(["service_scheduler"]), "{body}");
    let (_, metrics) = get(address, "/metrics").await;
    let counted = restarts(&metrics, "service_scheduler").expect("counted");
    assert!(counted >= 3, "{metrics}");
    assert!(
        metrics.contains("flotilla_supervised_loop_failing{loop=\"service_scheduler\"} 0"),
        "{metrics}"
    );
    // It keeps running: no restart since.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, metrics) = get(address, "/metrics").await;
    assert_eq!(restarts(&metrics, "service_scheduler"), Some(counted));
}
