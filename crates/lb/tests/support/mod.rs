//! Helpers of the data plane's integration tests: backends that are real
//! hyper servers on kernel-chosen ports, a plain HTTP/1.1 client, and
//! snapshot builders.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Backend {
    pub address: SocketAddr,
    pub name: String,
    pub healthy: Arc<AtomicBool>,
    /// Requests other than health checks.
    pub hits: Arc<AtomicUsize>,
    /// When each health check arrived.
    pub checks: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(name, listener)
    }

    pub fn serve(name: &str, listener: TcpListener) -> Backend {
        let address = listener.local_addr().expect("address");
        let healthy = Arc::new(AtomicBool::new(true));
        let hits = Arc::new(AtomicUsize::new(0));
        let checks = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            name: name.to_owned(),
            healthy: Arc::clone(&healthy),
            hits: Arc::clone(&hits),
            checks: Arc::clone(&checks),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        answer(request, Arc::clone(&state))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Backend {
            address,
            name: name.to_owned(),
            healthy,
            hits,
            checks,
            task,
        }
    }
}

struct State {
    name: String,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    checks: Arc<Mutex<Vec<Instant>>>,
}

type TestBody = Either<Full<Bytes>, Either<Incoming, Either<Generated, Empty<Bytes>>>>;

async fn answer(
    mut request: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<TestBody>, Infallible> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let number = |name: &str| -> u64 {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    if path == "/health" {
        state.checks.lock().expect("lock").push(Instant::now());
        let status = if state.healthy.load(SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        return Ok(text(status, "health"));
    }
    state.hits.fetch_add(1, SeqCst);
    if request.headers().contains_key(http::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buffer = [0u8; 1024];
                while let Ok(read) = io.read(&mut buffer).await {
                    if read == 0 || io.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(Either::Right(Either::Right(Either::Right(Empty::new()))))
            .expect("response");
        return Ok(response);
    }
    match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(number("ms"))).await;
            Ok(text(StatusCode::OK, &state.name))
        }
        "/status" => Ok(text(
            StatusCode::from_u16(number("code") as u16).unwrap_or(StatusCode::OK),
            &state.name,
        )),
        "/echo" => Ok(Response::new(Either::Right(Either::Left(
            request.into_body(),
        )))),
        "/big" => Ok(Response::new(Either::Right(Either::Right(Either::Left(
            Generated {
                remaining: number("bytes"),
                chunk: Bytes::from(vec![b'x'; 64 * 1024]),
            },
        ))))),
        "/headers" => {
            let headers: serde_json::Map<String, Value> = request
                .headers()
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        json!(value.to_str().unwrap_or("")),
                    )
                })
                .collect();
            Ok(text(StatusCode::OK, &Value::Object(headers).to_string()))
        }
        _ => Ok(text(StatusCode::OK, &state.name)),
    }
}

fn text(status: StatusCode, body: &str) -> Response<TestBody> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(body.to_owned()))));
    *response.status_mut() = status;
    response
}

/// A body of `remaining` bytes made as it is read.
pub struct Generated {
    remaining: u64,
    chunk: Bytes,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let size = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= size as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..size)))))
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// One HTTP/1.1 request on a new connection.
pub async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Answer {
    try_get(port, path, headers)
        .await
        .expect("request answered")
}

pub async fn try_get(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = Request::get(path).header("host", "example.com");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).expect("request"))
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Runs curl and returns its standard output.
pub async fn curl(args: Vec<String>) -> String {
    let output = tokio::process::Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .args(&args)
        .output()
        .await
        .expect("curl runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An application load balancer on `port` forwarding to target group `tg`.
pub fn alb(port: u16, targets: &[&Backend], group: Value) -> Value {
    let mut group = group;
    group["TargetGroupArn"] = json!("tg");
    group["Protocol"] = json!("HTTP");
    group["Port"] = json!(80);
    group["Targets"] = json!(targets
        .iter()
        .map(|backend| json!({"Id": backend.name, "Address": "127.0.0.1", "Port": backend.address.port()}))
        .collect::<Vec<_>>());
    json!({
        "LoadBalancers": [{"Name": "web", "Type": "application", "BindAddress": "127.0.0.1",
            "Listeners": [{"Port": port, "Protocol": "HTTP",
                "DefaultActions": [{"Type": "forward", "TargetGroupArn": "tg"}]}]}],
        "TargetGroups": [group]
    })
}

/// Health checks on /health every 5 s, 2 s timeout, thresholds 2/2.
pub fn fast_checks() -> Value {
    json!({"HealthCheckPath": "/health", "HealthCheckIntervalSeconds": 5, "HealthCheckTimeoutSeconds": 2,
           "HealthyThresholdCount": 2, "UnhealthyThresholdCount": 2})
}

pub fn snapshot(value: Value, version: u64) -> flotilla_lb::Snapshot {
    let mut snapshot: flotilla_lb::Snapshot =
        serde_json::from_value(value).expect("snapshot parses");
    snapshot.version = version;
    snapshot
}

pub fn plane() -> flotilla_lb::DataPlane {
    flotilla_lb::DataPlane::with_workers(Arc::new(flotilla_lb::edge::SystemClock), 2)
        .expect("worker threads start")
}

/// Waits until `condition` holds, up to `limit`.
pub async fn eventually(limit: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Waits until every target reports `state`.
pub async fn until_all(
    plane: &flotilla_lb::DataPlane,
    state: &str,
    count: usize,
    limit: Duration,
) -> bool {
    eventually(limit, async || {
        let health = plane.target_health().await;
        health.len() == count
            && health
                .iter()
                .all(|target| target.health.state.as_str() == state)
    })
    .await
}
