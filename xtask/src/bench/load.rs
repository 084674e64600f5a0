//! The load generator: C keep-alive HTTP/1.1 connections, each sending one
//! request after another for a fixed time, every request signed afresh with
//! our SigV4 signer as a real client would sign it.
//!
//! It shares the machine with the server it measures, so it is kept lean:
//! bodies and their hashes are built once, the header map is built once and
//! cloned per request, and each generator thread runs a current-thread tokio
//! runtime (no work stealing) over its share of the connections.
//!
//! ```text
//! generator thread 1 ── conn 0, T, 2T, …  ─┐
//! generator thread T ── conn T-1, …      ─┴─▶ server
//!   each conn: sign ─▶ send ─▶ read body ─▶ record latency ─▶ again until the deadline
//! ```
//!
//! Only requests that start after the warm-up and finish before the deadline
//! are counted, so every figure covers exactly the measured window.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use flotilla_sigv4::{sha256_hex, sign, PayloadSigning, RequestParts, Sha256Hex, SigningParams};
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::histogram::Histogram;

/// The credentials `flotilla server` accepts by default; moto accepts any.
const SIGNING: SigningParams<'static> = SigningParams {
    access_key_id: "test",
    secret_access_key: "test",
    region: "us-east-1",
    service: "ecs",
};
const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";
const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// A request that has not been answered by then counts as an error, so a
/// stuck server cannot hold the benchmark past its deadline for long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before connecting again after a failed connect, so that a dead
/// server is not hammered in a tight loop until the deadline.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(20);
/// Largest response body read; the benchmark's answers are a few KiB.
const RESPONSE_BODY_MAX_BYTES: usize = 1024 * 1024;
/// How much of the first error body to print.
const ERROR_BODY_SHOWN_BYTES: usize = 2_000;

/// What to send: one ECS operation, and the body each connection sends
/// (connection `i` sends `bodies[i % bodies.len()]` every time).
pub struct Workload {
    pub operation: &'static str,
    pub bodies: Vec<Bytes>,
    /// Counts what a successful answer did, as (done, refused): RunTask's
    /// placed tasks and its `failures`. `None` counts nothing.
    pub items_in_answer: Option<ItemCounter>,
}

/// See [`Workload::items_in_answer`].
pub type ItemCounter = fn(&[u8]) -> (u64, u64);

#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    pub connections: usize,
    pub generator_threads: usize,
    pub warmup: Duration,
    pub measured: Duration,
}

/// The figures of one measured window.
pub struct Measurement {
    /// Requests answered inside the window, errors included.
    pub requests: u64,
    /// Of those, answers other than 200 and transport failures.
    pub errors: u64,
    pub seconds: f64,
    /// Latencies of every counted request, errors included.
    pub histogram: Histogram,
    /// Connections the server closed and the generator opened again.
    pub reconnects: u64,
    /// What `Workload::items_in_answer` counted in the window's successful answers.
    pub items: u64,
    pub items_refused: u64,
}

/// An access key other than the server's own to sign with: an IAM user's,
/// whose requests the server authorizes.
#[derive(Clone, Debug)]
pub struct Key {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// Everything the connections of one run share.
struct Signer {
    label: String,
    key: Option<Key>,
    headers: HeaderMap,
    bodies: Vec<(Bytes, Sha256Hex)>,
    items_in_answer: Option<ItemCounter>,
    first_error_reported: AtomicBool,
}

impl Signer {
    fn new(label: String, address: SocketAddr, workload: &Workload) -> Result<Self> {
        if workload.bodies.is_empty() {
            bail!("workload {} has no body", workload.operation);
        }
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_str(&address.to_string())?);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
        headers.insert(
            HeaderName::from_static("x-amz-target"),
            HeaderValue::from_str(&format!("{TARGET_PREFIX}.{}", workload.operation))?,
        );
        let bodies = workload
            .bodies
            .iter()
            .map(|body| (body.clone(), sha256_hex(body)))
            .collect();
        Ok(Self {
            label,
            key: None,
            headers,
            bodies,
            items_in_answer: workload.items_in_answer,
            first_error_reported: AtomicBool::new(false),
        })
    }

    /// A freshly signed request carrying body `body_index`.
    fn request(&self, body_index: usize) -> Result<Request<Full<Bytes>>> {
        let (body, body_hash) = &self.bodies[body_index % self.bodies.len()];
        let parts = RequestParts {
            method: &Method::POST,
            path: "/",
            query: "",
            headers: &self.headers,
            body_sha256_hex: body_hash.as_str(),
        };
        let params = match &self.key {
            Some(key) => SigningParams {
                access_key_id: &key.access_key_id,
                secret_access_key: &key.secret_access_key,
                ..SIGNING
            },
            None => SIGNING,
        };
        let signature = sign(&parts, &params, PayloadSigning::Signed, unix_now_seconds())
            .context("signing a benchmark request")?;
        let mut request = Request::new(Full::new(body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::from_static("/");
        let headers = request.headers_mut();
        headers.clone_from(&self.headers);
        signature.insert_into(headers);
        Ok(request)
    }

    /// Prints the first failure of the run, so that a broken workload is seen
    /// at once without flooding the terminal.
    fn report_first_error(&self, what: impl FnOnce() -> String) {
        if !self.first_error_reported.swap(true, Ordering::Relaxed) {
            eprintln!("{}: first error: {}", self.label, what());
        }
    }
}

#[allow(clippy::disallowed_methods)] // A client signs with the wall clock, as botocore does.
fn unix_now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

type Sender = SendRequest<Full<Bytes>>;

pub async fn connect(address: SocketAddr) -> Result<Sender> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| anyhow!("connecting to {address} timed out"))?
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection task ends when its sender is dropped or the peer closes.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

pub async fn exchange(
    sender: &mut Sender,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes)> {
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = Limited::new(response.into_body(), RESPONSE_BODY_MAX_BYTES)
        .collect()
        .await
        .map_err(|error| anyhow!("reading the response body: {error}"))?
        .to_bytes();
    Ok((status, body))
}

/// Sends one request and returns the status and body (for setting up state).
pub fn call_once(
    address: SocketAddr,
    operation: &'static str,
    body: &str,
) -> Result<(StatusCode, Bytes)> {
    let workload = Workload {
        operation,
        bodies: vec![Bytes::copy_from_slice(body.as_bytes())],
        items_in_answer: None,
    };
    let signer = Signer::new(String::new(), address, &workload)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut sender = connect(address).await?;
        let request = signer.request(0)?;
        tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut sender, request))
            .await
            .map_err(|_| anyhow!("{operation} timed out after {REQUEST_TIMEOUT:?}"))?
    })
}

/// Sends one Query-protocol request (`form`, already URL-encoded) signed
/// for `service` with the server's own key, for setting up IAM state.
pub fn query_once(
    address: SocketAddr,
    service: &'static str,
    form: &str,
) -> Result<(StatusCode, Bytes)> {
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_str(&address.to_string())?);
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
    );
    let body = Bytes::copy_from_slice(form.as_bytes());
    let body_hash = sha256_hex(&body);
    let parts = RequestParts {
        method: &Method::POST,
        path: "/",
        query: "",
        headers: &headers,
        body_sha256_hex: body_hash.as_str(),
    };
    let params = SigningParams { service, ..SIGNING };
    let signature = sign(&parts, &params, PayloadSigning::Signed, unix_now_seconds())
        .context("signing a set-up request")?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::from_static("/");
    request.headers_mut().clone_from(&headers);
    signature.insert_into(request.headers_mut());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut sender = connect(address).await?;
        tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut sender, request))
            .await
            .map_err(|_| anyhow!("{service} request timed out after {REQUEST_TIMEOUT:?}"))?
    })
}

#[derive(Default)]
struct ConnectionStats {
    requests: u64,
    errors: u64,
    reconnects: u64,
    items: u64,
    items_refused: u64,
    histogram: Histogram,
}

impl ConnectionStats {
    fn merge(&mut self, other: &ConnectionStats) {
        self.items += other.items;
        self.items_refused += other.items_refused;
        self.requests += other.requests;
        self.errors += other.errors;
        self.reconnects += other.reconnects;
        self.histogram.merge(&other.histogram);
    }
}

/// Drives `workload` against `address` for the warm-up plus the measured time.
pub fn run(
    label: String,
    address: SocketAddr,
    workload: &Workload,
    options: LoadOptions,
) -> Result<Measurement> {
    run_as(label, address, workload, options, None)
}

/// [`run`], signing with `key` instead of the server's own key.
pub fn run_as(
    label: String,
    address: SocketAddr,
    workload: &Workload,
    options: LoadOptions,
    key: Option<&Key>,
) -> Result<Measurement> {
    let mut signer = Signer::new(label, address, workload)?;
    signer.key = key.cloned();
    let signer = Arc::new(signer);
    let threads = options
        .generator_threads
        .clamp(1, options.connections.max(1));
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let connections: Vec<usize> = (thread..options.connections).step_by(threads).collect();
            let signer = Arc::clone(&signer);
            let barrier = Arc::clone(&barrier);
            std::thread::Builder::new()
                .name(format!("bench-generator-{thread}"))
                .spawn(move || generator_thread(signer, address, connections, barrier, options))
        })
        .collect::<Result<_, _>>()
        .context("starting generator threads")?;
    let mut total = ConnectionStats::default();
    let mut failure = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(stats)) => total.merge(&stats),
            Ok(Err(error)) => failure = Some(error),
            Err(_) => failure = Some(anyhow!("a generator thread panicked")),
        }
    }
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(Measurement {
        requests: total.requests,
        errors: total.errors,
        seconds: options.measured.as_secs_f64(),
        histogram: total.histogram,
        reconnects: total.reconnects,
        items: total.items,
        items_refused: total.items_refused,
    })
}

fn generator_thread(
    signer: Arc<Signer>,
    address: SocketAddr,
    connections: Vec<usize>,
    barrier: Arc<Barrier>,
    options: LoadOptions,
) -> Result<ConnectionStats> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            barrier.wait();
            return Err(error.into());
        }
    };
    runtime.block_on(async move {
        // Every connection is open before the clock starts, and every thread
        // reaches the barrier even when connecting failed, so none waits forever.
        let mut senders = Vec::with_capacity(connections.len());
        let mut connect_error = None;
        for &index in &connections {
            match connect(address).await {
                Ok(sender) => senders.push((index, sender)),
                Err(error) => {
                    connect_error = Some(error);
                    break;
                }
            }
        }
        barrier.wait();
        if let Some(error) = connect_error {
            return Err(error);
        }
        let measure_from = Instant::now() + options.warmup;
        let deadline = measure_from + options.measured;
        let tasks: Vec<_> = senders
            .into_iter()
            .map(|(index, sender)| {
                let signer = Arc::clone(&signer);
                tokio::spawn(drive_connection(
                    signer,
                    address,
                    index,
                    sender,
                    measure_from,
                    deadline,
                ))
            })
            .collect();
        let mut stats = ConnectionStats::default();
        for task in tasks {
            let connection = task
                .await
                .map_err(|_| anyhow!("a connection task panicked"))??;
            stats.merge(&connection);
        }
        Ok(stats)
    })
}

async fn drive_connection(
    signer: Arc<Signer>,
    address: SocketAddr,
    index: usize,
    sender: Sender,
    measure_from: Instant,
    deadline: Instant,
) -> Result<ConnectionStats> {
    let mut stats = ConnectionStats::default();
    let mut sender = Some(sender);
    loop {
        let started = Instant::now();
        if started >= deadline {
            break;
        }
        let counted = started >= measure_from;
        // A closed keep-alive connection is the server's choice, not an error.
        let usable = match sender.as_mut() {
            Some(open) => open.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            match connect(address).await {
                Ok(open) => {
                    sender = Some(open);
                    stats.reconnects += 1;
                }
                Err(error) => {
                    sender = None;
                    if counted {
                        stats.requests += 1;
                        stats.errors += 1;
                    }
                    signer.report_first_error(|| format!("{error:#}"));
                    tokio::time::sleep(RECONNECT_BACKOFF).await;
                }
            }
            continue;
        }
        let Some(open) = sender.as_mut() else {
            continue;
        };
        let started = Instant::now();
        // Signing fails only on a bug in the workload; carrying on would
        // measure nothing, so stop the run.
        let request = signer.request(index)?;
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, exchange(open, request)).await;
        let finished = Instant::now();
        let counted = started >= measure_from && finished <= deadline;
        if counted {
            stats.requests += 1;
            stats.histogram.record(finished - started);
        }
        match outcome {
            Ok(Ok((StatusCode::OK, body))) => {
                if let (true, Some(count)) = (counted, signer.items_in_answer) {
                    let (done, refused) = count(&body);
                    stats.items += done;
                    stats.items_refused += refused;
                }
            }
            Ok(Ok((status, body))) => {
                stats.errors += u64::from(counted);
                signer.report_first_error(|| {
                    let shown = &body[..body.len().min(ERROR_BODY_SHOWN_BYTES)];
                    format!("HTTP {status}: {}", String::from_utf8_lossy(shown))
                });
            }
            Ok(Err(error)) => {
                stats.errors += u64::from(counted);
                sender = None;
                signer.report_first_error(|| format!("{error:#}"));
            }
            Err(_) => {
                stats.errors += u64::from(counted);
                sender = None;
                signer.report_first_error(|| format!("no answer within {REQUEST_TIMEOUT:?}"));
            }
        }
    }
    Ok(stats)
}
