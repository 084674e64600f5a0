//! The etcd v3 backend: the keyspace lives in an etcd cluster, and this
//! process reads a local replica of it.
//!
//! ```text
//!              ┌──────────── dedicated thread: one current-thread runtime ───────────┐
//!  commit() ──►│ etcd Txn: mod_revision compares, puts/deletes (+ the txn marker)    │
//!   (caller's  │   succeeded at revision r ─► wait until the replica has applied r   │
//!    runtime   │   failed ─► read the conditions' keys at that revision: Conflict    │
//!    awaits a  │                                                                     │
//!    handle)   │ replica loop: range the namespace at revision R (paged), then one   │
//!              │   watch of the namespace from R+1; each revision's events update    │
//!              │   the replica, go to watchers, advance `revisions()`; a broken      │
//!              │   stream resumes from the last applied revision + 1; a compacted    │
//!              │   one re-lists and tells watchers they lagged                       │
//!              └─────────────────────────────────────────────────────────────────────┘
//!  get()/list()/revision() ──► the replica (a BTreeMap under a read-write lock)
//! ```
//!
//! *Revisions are etcd's.* Every committed [`Txn`] advances etcd's revision
//! by exactly one, as the trait requires: a transaction that puts a key does
//! so by itself; one that only deletes (or does nothing) also puts the
//! namespace's transaction marker key, since etcd would not advance its
//! revision for a delete of an absent key. The marker is outside the data
//! prefix, so no read, list or watch shows it. Writes by other clients of the
//! same etcd outside the namespace advance the revision too, which is why
//! revisions are increasing but not consecutive in general.
//!
//! *Conditions* are `mod_revision` compares; etcd compares an absent key's
//! `mod_revision` as 0, which is the trait's "absent".
//!
//! *Limits* are etcd's defaults ([`TxnLimits::ETCD_DEFAULT`]), checked
//! before anything is sent. etcd counts a nested transaction's operations
//! against the same 128, so a transaction of only deletes that fills them
//! has no room for the marker: it is sent as it is, and in the rare case
//! that none of its keys existed (etcd then keeps its revision) the marker
//! is put by a second transaction whose revision the commit answers.
//!
//! *Bridging:* every etcd call, and the replica loop, runs on this store's
//! own thread and runtime; a caller's commit future only awaits the handle of
//! a task spawned there, and reads take a lock that is held only for an
//! in-memory lookup. So no caller's async worker ever blocks on the network,
//! and the store works the same from any runtime.
//!
//! *Compaction* is etcd's to do: run it with
//! `--auto-compaction-mode=periodic --auto-compaction-retention=1h` (or a
//! revision retention) so that its history does not grow without bound. The
//! replica needs history only to resume a watch after a connection loss;
//! when the revision it resumes from has been compacted it re-lists.

mod election;
pub mod testing;

pub use election::{EtcdElection, LEASE_TTL_DEFAULT};

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    KvClient, LeaseClient, TlsOptions, TxnOp, TxnOpResponse, WatchClient, WatchOptions,
};
use tokio::sync::{broadcast, oneshot};

use crate::{
    list_lower_bound, CommitFuture, Condition, Entry, Event, EventKind, Op, Page, Revision, Store,
    StoreError, Txn, TxnLimits, Watch, WatchError, WatchEvents, WatchFuture, LIST_LIMIT_MAX,
    WATCH_BACKLOG_MAX,
};

/// The namespace when none is given: every key this store writes starts with it.
pub const DEFAULT_NAMESPACE: &str = "flotilla/";
/// Longest namespace accepted. Every key of a transaction carries it, and
/// [`TxnLimits::ETCD_DEFAULT`] leaves 16 KiB of etcd's request limit for
/// framing: 257 keys (128 compares, 128 operations, the marker) with this
/// prefix and their protobuf framing stay well inside it.
pub const NAMESPACE_MAX_BYTES: usize = 24;
/// Under the namespace: the data keys' prefix, then the transaction marker.
const DATA_PREFIX: &str = "d/";
const MARKER_KEY: &str = "txn";

/// Keys per range request when the replica (re-)lists the namespace.
const LIST_PAGE_KEYS: i64 = 1_000;
/// Largest gRPC message this client decodes. A watch response batches the
/// events of many revisions, each up to etcd's 1.5 MiB request limit.
const DECODING_MESSAGE_MAX: usize = 256 * 1024 * 1024;
/// How long one etcd request (a transaction, a range page) may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a commit that etcd accepted waits for the replica to apply it.
const REPLICA_CATCH_UP_MAX: Duration = Duration::from_secs(60);
/// Pause before the replica loop re-opens a broken watch, doubling up to the max.
const WATCH_RETRY_MIN: Duration = Duration::from_millis(100);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(5);

/// A password for etcd's authentication: never printed, never logged.
#[derive(Clone)]
pub struct EtcdPassword(String);

impl EtcdPassword {
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }
}

impl std::fmt::Debug for EtcdPassword {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("EtcdPassword(<redacted>)")
    }
}

/// A client private key in PEM: never printed, never logged.
#[derive(Clone)]
pub struct EtcdPrivateKey(Vec<u8>);

impl EtcdPrivateKey {
    pub fn from_pem(pem: Vec<u8>) -> Self {
        Self(pem)
    }
}

impl std::fmt::Debug for EtcdPrivateKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("EtcdPrivateKey(<redacted>)")
    }
}

/// TLS to etcd's client port, as etcdctl's `--cacert`, `--cert` and `--key`.
#[derive(Clone, Debug, Default)]
pub struct EtcdTls {
    /// PEM certificates of the authorities that sign etcd's server certificates.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and its key, for etcd's `--client-cert-auth`.
    pub client_identity: Option<(Vec<u8>, EtcdPrivateKey)>,
    /// The name the server certificate must carry, when not the endpoint's host.
    pub domain_name: Option<String>,
}

/// Where the etcd cluster is and how to reach it.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// `host:port` of each member's client URL (any subset of the members).
    pub endpoints: Vec<String>,
    /// Prefix of every key the store writes, so that one etcd can hold
    /// other data beside it (at most [`NAMESPACE_MAX_BYTES`]).
    pub namespace: String,
    /// A user and password for etcd's authentication (`etcdctl --user`).
    pub user: Option<(String, EtcdPassword)>,
    /// TLS; plain HTTP/2 without it.
    pub tls: Option<EtcdTls>,
}

impl EtcdOptions {
    /// Options from a store URL, `etcd://HOST:PORT[,HOST:PORT...]`, with the
    /// default namespace and neither TLS nor authentication.
    pub fn from_url(url: &str) -> Result<EtcdOptions, StoreError> {
        let invalid = |why: &str| StoreError::Backend {
            message: format!("invalid etcd store URL {url:?}: {why}"),
        };
        let hosts = url
            .strip_prefix("etcd://")
            .ok_or_else(|| invalid("it must start with etcd://"))?;
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        let mut endpoints = Vec::new();
        for endpoint in hosts.split(',') {
            let valid = endpoint
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
                && !endpoint.contains('/');
            if !valid {
                return Err(invalid(&format!("endpoint {endpoint:?} is not HOST:PORT")));
            }
            endpoints.push(endpoint.to_owned());
        }
        Ok(EtcdOptions {
            endpoints,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            user: None,
            tls: None,
        })
    }
}

/// One entry of the replica.
#[derive(Clone, Debug)]
struct Stored {
    value: Bytes,
    create_revision: Revision,
    mod_revision: Revision,
}

#[derive(Default)]
struct Replica {
    entries: BTreeMap<String, Stored>,
    /// The last revision applied from etcd.
    revision: Revision,
}

/// What the replica loop tells this process's watchers.
enum Broadcast {
    /// One revision's changes under the data prefix, in etcd's order.
    Events(Vec<Event>),
    /// The watch resumed past a compacted revision: changes were lost, and
    /// the replica was rebuilt from a fresh listing.
    Relisted { missed: u64 },
}

/// State the store handle and the tasks on its runtime share.
struct Shared {
    replica: RwLock<Replica>,
    events: broadcast::Sender<Arc<Broadcast>>,
    revisions: tokio::sync::watch::Sender<Revision>,
    /// Full etcd key of the data prefix and of the transaction marker.
    data_prefix: String,
    marker_key: String,
    namespace: String,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Replica> {
        // Writers replace or apply whole revisions under the lock and never
        // panic midway on valid data, so a poisoned replica is still consistent.
        self.replica.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn etcd_key(&self, key: &str) -> String {
        format!("{}{key}", self.data_prefix)
    }
}

/// A [`Store`] on an etcd v3 cluster. See the module documentation.
pub struct EtcdStore {
    shared: Arc<Shared>,
    kv: KvClient,
    lease: LeaseClient,
    runtime: tokio::runtime::Handle,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EtcdStore {
    /// Connects to etcd, lists the namespace into the replica, and starts
    /// the watch that keeps it current. Fails if etcd does not answer.
    pub async fn connect(options: EtcdOptions) -> Result<EtcdStore, StoreError> {
        if options.namespace.len() > NAMESPACE_MAX_BYTES || options.namespace.is_empty() {
            return Err(StoreError::Backend {
                message: format!(
                    "etcd namespace {:?} must be 1 to {NAMESPACE_MAX_BYTES} bytes",
                    options.namespace
                ),
            });
        }
        if options.endpoints.is_empty() {
            return Err(StoreError::Backend {
                message: "no etcd endpoint given".to_owned(),
            });
        }
        let (ready, started) = oneshot::channel();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("flotilla-store-etcd".to_owned())
            .spawn(move || run_thread(options, ready, stopped))
            .map_err(|error| StoreError::Backend {
                message: format!("starting the etcd store thread: {error}"),
            })?;
        let (shared, kv, lease, runtime) = match started.await {
            Ok(Ok(started)) => started,
            Ok(Err(error)) => {
                let _ = thread.join();
                return Err(error);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(StoreError::Backend {
                    message: "the etcd store thread stopped while connecting".to_owned(),
                });
            }
        };
        Ok(EtcdStore {
            shared,
            kv,
            lease,
            runtime,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }
}

type Started = (Arc<Shared>, KvClient, LeaseClient, tokio::runtime::Handle);

fn run_thread(
    options: EtcdOptions,
    ready: oneshot::Sender<Result<Started, StoreError>>,
    stopped: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(StoreError::Backend {
                message: format!("building the etcd store runtime: {error}"),
            }));
            return;
        }
    };
    let handle = runtime.handle().clone();
    runtime.block_on(async move {
        let (client, shared) = match start(&options).await {
            Ok(started) => started,
            Err(error) => {
                let _ = ready.send(Err(error));
                return;
            }
        };
        let kv = client
            .kv_client()
            .max_decoding_message_size(DECODING_MESSAGE_MAX);
        let watch = client
            .watch_client()
            .max_decoding_message_size(DECODING_MESSAGE_MAX);
        let lease = client.lease_client();
        let replica = tokio::spawn(replica_loop(shared.clone(), kv.clone(), watch));
        if ready.send(Ok((shared, kv, lease, handle))).is_err() {
            return;
        }
        // Either the store is dropped (the sender with it) or told to stop.
        let _ = stopped.await;
        replica.abort();
    });
    // Dropping the runtime here, on its own thread, cancels the commits
    // still in flight and the replica loop, which drops the last event
    // sender: watchers then end.
}

fn connect_options(options: &EtcdOptions) -> ConnectOptions {
    let mut connect = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    if let Some((user, password)) = &options.user {
        connect = connect
            .with_user(user.clone(), password.0.clone())
            .with_auto_token_refresh(true);
    }
    if let Some(tls) = &options.tls {
        let mut config = TlsOptions::new();
        if let Some(ca) = &tls.ca_pem {
            config = config.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((certificate, key)) = &tls.client_identity {
            config = config.identity(Identity::from_pem(certificate, &key.0));
        }
        if let Some(domain) = &tls.domain_name {
            config = config.domain_name(domain.clone());
        }
        connect = connect.with_tls(config);
    }
    connect
}

async fn start(options: &EtcdOptions) -> Result<(Client, Arc<Shared>), StoreError> {
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let endpoints: Vec<String> = options
        .endpoints
        .iter()
        .map(|endpoint| format!("{scheme}://{endpoint}"))
        .collect();
    let client = tokio::time::timeout(
        REQUEST_TIMEOUT,
        Client::connect(&endpoints, Some(connect_options(options))),
    )
    .await
    .map_err(|_| StoreError::Backend {
        message: format!("connecting to etcd at {}: timed out", endpoints.join(",")),
    })?
    .map_err(|error| StoreError::Backend {
        message: format!("connecting to etcd at {}: {error}", endpoints.join(",")),
    })?;
    let (events, _) = broadcast::channel(WATCH_BACKLOG_MAX);
    let shared = Arc::new(Shared {
        replica: RwLock::new(Replica::default()),
        events,
        revisions: tokio::sync::watch::Sender::new(0),
        data_prefix: format!("{}{DATA_PREFIX}", options.namespace),
        marker_key: format!("{}{MARKER_KEY}", options.namespace),
        namespace: options.namespace.clone(),
    });
    let mut kv = client
        .kv_client()
        .max_decoding_message_size(DECODING_MESSAGE_MAX);
    let (entries, revision) =
        list_namespace(&shared, &mut kv)
            .await
            .map_err(|message| StoreError::Backend {
                message: format!(
                    "reading the store from etcd at {}: {message}",
                    endpoints.join(",")
                ),
            })?;
    *shared
        .replica
        .write()
        .unwrap_or_else(PoisonError::into_inner) = Replica { entries, revision };
    shared.revisions.send_replace(revision);
    tracing::info!(
        endpoints = %endpoints.join(","),
        namespace = %options.namespace,
        revision,
        "connected to etcd"
    );
    Ok((client, shared))
}

fn etcd_error(context: &str, error: etcd_client::Error) -> String {
    format!("{context}: {error}")
}

/// Most attempts at a request that never reached etcd (see [`never_sent`]).
const SEND_ATTEMPTS_MAX: u32 = 8;

/// Whether etcd cannot have received the request: the connection to the
/// endpoint the client chose could not be made. With several endpoints the
/// client spreads requests over all of them, a member that is down
/// included, so such a request is sent again (to another, most likely);
/// any other failure may have come after etcd applied it, and is not.
fn never_sent(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => status.message() == "tcp connect error",
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// An etcd transaction, sent again while it never reached etcd.
async fn send_txn(
    kv: &mut KvClient,
    txn: &etcd_client::Txn,
) -> Result<etcd_client::TxnResponse, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match tokio::time::timeout(REQUEST_TIMEOUT, kv.txn(txn.clone())).await {
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(error)) if never_sent(&error) && attempt < SEND_ATTEMPTS_MAX => {
                tokio::time::sleep(WATCH_RETRY_MIN).await;
            }
            // etcd unreachable or without quorum: the caller is told the
            // store is unavailable (503), not that it failed.
            Ok(Err(error)) => {
                return Err(StoreError::Unavailable {
                    message: etcd_error("etcd transaction", error),
                })
            }
            Err(_) => {
                return Err(StoreError::Unavailable {
                    message: "etcd transaction timed out; outcome unknown".to_owned(),
                })
            }
        }
    }
}

fn to_revision(revision: i64) -> Revision {
    u64::try_from(revision).unwrap_or(0)
}

fn to_etcd_revision(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

/// Every data entry of the namespace at one revision, in pages.
async fn list_namespace(
    shared: &Shared,
    kv: &mut KvClient,
) -> Result<(BTreeMap<String, Stored>, Revision), String> {
    let mut entries = BTreeMap::new();
    let end = prefix_end(&shared.data_prefix);
    let mut from = shared.data_prefix.clone().into_bytes();
    let mut at_revision = 0;
    loop {
        let mut options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(LIST_PAGE_KEYS);
        if at_revision > 0 {
            options = options.with_revision(at_revision);
        }
        let mut attempt = 0;
        let mut page = loop {
            attempt += 1;
            let answer =
                tokio::time::timeout(REQUEST_TIMEOUT, kv.get(from.clone(), Some(options.clone())))
                    .await
                    .map_err(|_| "range request timed out".to_owned())?;
            match answer {
                Ok(page) => break page,
                Err(error) if never_sent(&error) && attempt < SEND_ATTEMPTS_MAX => {
                    tokio::time::sleep(WATCH_RETRY_MIN).await;
                }
                Err(error) => return Err(etcd_error("range request", error)),
            }
        };
        if at_revision == 0 {
            at_revision = page.header().map_or(0, |header| header.revision());
        }
        let more = page.more();
        let kvs = page.take_kvs();
        let Some(last) = kvs.last() else { break };
        // The next page starts just after this one's last key.
        from = last.key().to_vec();
        from.push(0);
        for pair in kvs {
            let (create_revision, mod_revision) = (
                to_revision(pair.create_revision()),
                to_revision(pair.mod_revision()),
            );
            let (key, value) = pair.into_key_value();
            let Some(key) = data_key(shared, &key) else {
                continue;
            };
            entries.insert(
                key,
                Stored {
                    value: Bytes::from(value),
                    create_revision,
                    mod_revision,
                },
            );
        }
        if !more {
            break;
        }
    }
    Ok((entries, to_revision(at_revision)))
}

/// The store key of an etcd key under the data prefix; `None` for the
/// marker, and for a key that is not UTF-8 (which this store never writes).
fn data_key(shared: &Shared, etcd_key: &[u8]) -> Option<String> {
    let key = std::str::from_utf8(etcd_key).ok()?;
    key.strip_prefix(shared.data_prefix.as_str())
        .map(str::to_owned)
}

/// The first key after every key starting with `prefix` (etcd's range end
/// for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    vec![0]
}

/// Keeps the replica current: one watch of the namespace from the revision
/// after the last applied one, re-opened when it breaks, re-listing when
/// etcd has compacted the revision it would resume from.
async fn replica_loop(shared: Arc<Shared>, mut kv: KvClient, mut watch: WatchClient) {
    let mut pause = WATCH_RETRY_MIN;
    loop {
        let from = shared.read().revision + 1;
        let options = WatchOptions::new()
            .with_range(prefix_end(&shared.namespace))
            .with_start_revision(to_etcd_revision(from))
            .with_progress_notify();
        let opened = tokio::time::timeout(
            REQUEST_TIMEOUT,
            watch.watch(shared.namespace.clone(), Some(options)),
        )
        .await;
        let outcome = match opened {
            Ok(Ok(mut stream)) => follow(&shared, &mut stream, &mut pause).await,
            Ok(Err(error)) => WatchEnd::Broken(etcd_error("opening the watch", error)),
            Err(_) => WatchEnd::Broken("opening the watch timed out".to_owned()),
        };
        match outcome {
            WatchEnd::Compacted { compact_revision } => {
                tracing::warn!(
                    from,
                    compact_revision,
                    "the store's etcd watch resumed past a compaction; re-listing"
                );
                relist(&shared, &mut kv, &mut pause).await;
                continue;
            }
            WatchEnd::Broken(message) => {
                tracing::warn!(%message, from, "the store's etcd watch broke; resuming");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(WATCH_RETRY_MAX);
    }
}

enum WatchEnd {
    Compacted { compact_revision: i64 },
    Broken(String),
}

/// Applies a watch stream's events until it ends.
async fn follow(
    shared: &Shared,
    stream: &mut etcd_client::WatchStream,
    pause: &mut Duration,
) -> WatchEnd {
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return WatchEnd::Broken("etcd closed the watch stream".to_owned()),
            Err(error) => return WatchEnd::Broken(etcd_error("watch stream", error)),
        };
        if response.compact_revision() > 0 {
            return WatchEnd::Compacted {
                compact_revision: response.compact_revision(),
            };
        }
        if response.canceled() {
            return WatchEnd::Broken(format!(
                "etcd canceled the watch: {}",
                response.cancel_reason()
            ));
        }
        *pause = WATCH_RETRY_MIN;
        let events = response.events();
        let mut start = 0;
        // Events come in revision order; apply them one revision at a time
        // so that readers never see half of a transaction.
        while start < events.len() {
            let revision = event_revision(&events[start]);
            let end = events[start..]
                .iter()
                .position(|event| event_revision(event) != revision)
                .map_or(events.len(), |offset| start + offset);
            apply_revision(shared, to_revision(revision), &events[start..end]);
            start = end;
        }
    }
}

fn event_revision(event: &etcd_client::Event) -> i64 {
    event.kv().map_or(0, |pair| pair.mod_revision())
}

fn apply_revision(shared: &Shared, revision: Revision, events: &[etcd_client::Event]) {
    let mut changes = Vec::with_capacity(events.len());
    {
        let mut replica = shared
            .replica
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if revision <= replica.revision {
            // Already applied (a resumed watch may repeat the last revision).
            return;
        }
        for event in events {
            let Some(pair) = event.kv() else { continue };
            let Some(key) = data_key(shared, pair.key()) else {
                continue;
            };
            match event.event_type() {
                EventType::Put => {
                    let value = Bytes::copy_from_slice(pair.value());
                    replica.entries.insert(
                        key.clone(),
                        Stored {
                            value: value.clone(),
                            create_revision: to_revision(pair.create_revision()),
                            mod_revision: revision,
                        },
                    );
                    changes.push(Event {
                        revision,
                        kind: EventKind::Put,
                        key,
                        value,
                    });
                }
                EventType::Delete => {
                    if replica.entries.remove(&key).is_some() {
                        changes.push(Event {
                            revision,
                            kind: EventKind::Delete,
                            key,
                            value: Bytes::new(),
                        });
                    }
                }
            }
        }
        replica.revision = revision;
        // Sent under the lock, like the embedded backends, so that a reader
        // who saw this revision finds its events already sent.
        if !changes.is_empty() {
            let _ = shared.events.send(Arc::new(Broadcast::Events(changes)));
        }
    }
    shared.revisions.send_replace(revision);
}

/// Rebuilds the replica from a fresh listing, retrying until etcd answers,
/// and tells every watcher it lagged.
async fn relist(shared: &Shared, kv: &mut KvClient, pause: &mut Duration) {
    loop {
        match list_namespace(shared, kv).await {
            Ok((entries, revision)) => {
                let applied = {
                    let mut replica = shared
                        .replica
                        .write()
                        .unwrap_or_else(PoisonError::into_inner);
                    let missed = revision.saturating_sub(replica.revision);
                    let applied = revision.max(replica.revision);
                    *replica = Replica {
                        entries,
                        revision: applied,
                    };
                    let _ = shared.events.send(Arc::new(Broadcast::Relisted { missed }));
                    applied
                };
                shared.revisions.send_replace(applied);
                *pause = WATCH_RETRY_MIN;
                return;
            }
            Err(message) => {
                tracing::warn!(%message, "re-listing the store from etcd failed; retrying");
                tokio::time::sleep(*pause).await;
                *pause = (*pause * 2).min(WATCH_RETRY_MAX);
            }
        }
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The thread only cancels its tasks and drops its runtime.
            if thread.join().is_err() {
                tracing::error!("the etcd store thread had panicked");
            }
        }
    }
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let replica = self.shared.read();
        Ok(replica.entries.get(key).map(|stored| Entry {
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
        let replica = self.shared.read();
        let lower = list_lower_bound(prefix, start_after);
        let mut matching = replica
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
        if let Err(error) = TxnLimits::ETCD_DEFAULT.check(&txn) {
            return Box::pin(std::future::ready(Err(error)));
        }
        let task = self
            .runtime
            .spawn(commit_on_etcd(self.shared.clone(), self.kv.clone(), txn));
        Box::pin(async move {
            task.await.unwrap_or_else(|_| {
                Err(StoreError::Backend {
                    message: "the etcd store closed during a commit; outcome unknown".to_owned(),
                })
            })
        })
    }

    fn limits(&self) -> TxnLimits {
        TxnLimits::ETCD_DEFAULT
    }

    fn watch(&self, prefix: &str) -> Watch {
        Box::new(EtcdWatch {
            prefix: prefix.to_owned(),
            receiver: self.shared.events.subscribe(),
            pending: Default::default(),
        })
    }

    fn revision(&self) -> Revision {
        self.shared.read().revision
    }

    fn revisions(&self) -> tokio::sync::watch::Receiver<Revision> {
        self.shared.revisions.subscribe()
    }
}

/// The etcd transaction for `txn`: the conditions as `mod_revision`
/// compares, the operations on the data keys, and the marker put when no
/// operation is a put (so that the transaction advances the revision).
fn etcd_txn(shared: &Shared, txn: &Txn) -> etcd_client::Txn {
    let compares: Vec<Compare> = txn
        .conditions
        .iter()
        .map(|Condition::Revision { key, revision }| {
            Compare::mod_revision(
                shared.etcd_key(key),
                CompareOp::Equal,
                to_etcd_revision(*revision),
            )
        })
        .collect();
    let mut ops: Vec<TxnOp> = txn
        .ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value } => TxnOp::put(shared.etcd_key(key), value.to_vec(), None),
            Op::Delete { key } => TxnOp::delete(shared.etcd_key(key), None),
        })
        .collect();
    if needs_marker(txn) && ops.len() < TxnLimits::ETCD_DEFAULT.ops_max {
        ops.push(TxnOp::put(shared.marker_key.clone(), Vec::new(), None));
    }
    etcd_client::Txn::new().when(compares).and_then(ops)
}

/// Whether etcd might not advance its revision for `txn` by itself: it
/// puts nothing, so it changes something only if a key it deletes exists.
fn needs_marker(txn: &Txn) -> bool {
    !txn.ops.iter().any(|op| matches!(op, Op::Put { .. }))
}

/// Whether a succeeded transaction's deletes removed nothing.
fn deleted_nothing(response: &etcd_client::TxnResponse) -> bool {
    response.op_responses().iter().all(|op| match op {
        TxnOpResponse::Delete(delete) => delete.deleted() == 0,
        TxnOpResponse::Put(_) => false,
        _ => true,
    })
}

async fn commit_on_etcd(
    shared: Arc<Shared>,
    mut kv: KvClient,
    txn: Txn,
) -> Result<Revision, StoreError> {
    let request = etcd_txn(&shared, &txn);
    let response = send_txn(&mut kv, &request).await?;
    let mut revision = to_revision(response.header().map_or(0, |header| header.revision()));
    if response.succeeded() && needs_marker(&txn) && deleted_nothing(&response) {
        // Only a delete-only transaction without room for the marker gets
        // here: it changed nothing, so etcd kept its revision.
        let marker = etcd_client::Txn::new().and_then(vec![TxnOp::put(
            shared.marker_key.clone(),
            Vec::new(),
            None,
        )]);
        let response = send_txn(&mut kv, &marker).await?;
        revision = to_revision(response.header().map_or(0, |header| header.revision()));
    }
    if response.succeeded() {
        wait_for_replica(&shared, revision)
            .await
            .map_err(|why| StoreError::Backend {
                message: format!("committed at revision {revision}, but {why}"),
            })?;
        return Ok(revision);
    }
    let conflict = find_conflict(&shared, &mut kv, &txn, revision).await?;
    if let StoreError::Conflict { found, .. } = &conflict {
        // So that a caller who re-reads after the conflict sees at least the
        // write that caused it rather than conflicting again on stale state.
        let _ = wait_for_replica(&shared, *found).await;
    }
    Err(conflict)
}

async fn wait_for_replica(shared: &Shared, revision: Revision) -> Result<(), &'static str> {
    let mut revisions = shared.revisions.subscribe();
    let applied = tokio::time::timeout(REPLICA_CATCH_UP_MAX, async {
        revisions
            .wait_for(|applied| *applied >= revision)
            .await
            .map(|_| ())
    })
    .await;
    match applied {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("the store closed before its replica applied it"),
        Err(_) => Err("the replica has not applied it yet (is the etcd watch failing?)"),
    }
}

/// Which condition failed, read at the revision the transaction was
/// evaluated at (or the latest, if that one is already compacted).
async fn find_conflict(
    shared: &Shared,
    kv: &mut KvClient,
    txn: &Txn,
    revision: Revision,
) -> Result<StoreError, StoreError> {
    let read = |at: Option<i64>| {
        let gets: Vec<TxnOp> = txn
            .conditions
            .iter()
            .map(|Condition::Revision { key, .. }| {
                let mut options = GetOptions::new().with_keys_only();
                if let Some(at) = at {
                    options = options.with_revision(at);
                }
                TxnOp::get(shared.etcd_key(key), Some(options))
            })
            .collect();
        etcd_client::Txn::new().and_then(gets)
    };
    let mut answer = None;
    for at in [Some(to_etcd_revision(revision)), None] {
        match send_txn(kv, &read(at)).await {
            Ok(response) => {
                answer = Some(response);
                break;
            }
            Err(error) => {
                tracing::debug!(%error, "reading a conflict's keys");
            }
        }
    }
    let found: Vec<Revision> = match answer {
        Some(response) => response
            .op_responses()
            .into_iter()
            .map(|op| match op {
                TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .map_or(0, |pair| to_revision(pair.mod_revision())),
                _ => 0,
            })
            .collect(),
        None => {
            return Err(StoreError::Backend {
                message: "a condition failed, and reading which one from etcd failed".to_owned(),
            })
        }
    };
    let mismatch = txn
        .conditions
        .iter()
        .zip(found.iter().copied().chain(std::iter::repeat(0)))
        .find(|(Condition::Revision { revision, .. }, found)| revision != found);
    let (Condition::Revision { key, revision }, found) = match mismatch {
        Some(mismatch) => mismatch,
        // Read at a later revision than the transaction's, the keys may
        // have come back to what was expected; name the first all the same.
        None => match txn.conditions.first() {
            Some(first) => (first, found.first().copied().unwrap_or(0)),
            None => {
                return Err(StoreError::Backend {
                    message: "etcd refused a transaction without conditions".to_owned(),
                })
            }
        },
    };
    Ok(StoreError::Conflict {
        key: key.clone(),
        expected: *revision,
        found,
    })
}

/// A watch on the replica's changes under one prefix.
struct EtcdWatch {
    prefix: String,
    receiver: broadcast::Receiver<Arc<Broadcast>>,
    pending: std::collections::VecDeque<Event>,
}

impl EtcdWatch {
    async fn next_event(&mut self) -> Result<Event, WatchError> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let batch = self.receiver.recv().await.map_err(|error| match error {
                RecvError::Lagged(missed) => WatchError::Lagged { missed },
                RecvError::Closed => WatchError::Closed,
            })?;
            match &*batch {
                Broadcast::Events(events) => self.pending.extend(
                    events
                        .iter()
                        .filter(|event| event.key.starts_with(&self.prefix))
                        .cloned(),
                ),
                Broadcast::Relisted { missed } => {
                    return Err(WatchError::Lagged {
                        missed: (*missed).max(1),
                    })
                }
            }
        }
    }
}

impl WatchEvents for EtcdWatch {
    fn next(&mut self) -> WatchFuture<'_> {
        Box::pin(self.next_event())
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "a test fails loudly on any unexpected error"
    )]

    use super::*;

    #[test]
    fn store_urls_name_every_endpoint() {
        let options = EtcdOptions::from_url("etcd://10.0.0.1:2379,etcd-b:2380/").unwrap();
        assert_eq!(options.endpoints, vec!["10.0.0.1:2379", "etcd-b:2380"]);
        assert_eq!(options.namespace, DEFAULT_NAMESPACE);
        for bad in [
            "http://a:2379",
            "etcd://",
            "etcd://a",
            "etcd://a:port",
            "etcd://a:2379,",
            "etcd://a:2379/path",
        ] {
            assert!(EtcdOptions::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end("flotilla/"), b"flotilla0".to_vec());
        assert_eq!(prefix_end("a/"), b"a0".to_vec());
    }

    #[test]
    fn secrets_are_not_printed() {
        let password = EtcdPassword::new("hunter2");
        let key = EtcdPrivateKey::from_pem(b"-----BEGIN PRIVATE KEY-----".to_vec());
        let printed = format!("{password:?} {key:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("BEGIN"),
            "{printed}"
        );
    }
}
