//! The application load balancer's request path: one hyper connection per
//! client (HTTP/1.1, h2c by prior knowledge, either over TLS by ALPN), each
//! request matched against the listener's rules and answered by its action:
//! a fixed response, a redirect, or a forward to a target over a pooled
//! HTTP/1.1 connection with both bodies streamed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::{RedirectConfig, RedirectStatus};
use crate::edge::{random_u64, CoarseClock};
use crate::metrics::Counters;
use crate::pattern::{render_placeholders, RequestParts};
use crate::rules::{host_without_port, RequestView, RuleTable};
use crate::target::until_closed;
use crate::target::{GroupRuntime, TargetRuntime};

/// How long connecting to a target may take before the request answers 504
/// (ALB's connection timeout).
pub const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A client's request head (request line and headers) may not exceed this
/// (ALB allows 64 KiB of headers).
pub const REQUEST_HEAD_MAX_BYTES: usize = 64 * 1024;
/// Header fields in one request or response.
pub const HEADERS_MAX: usize = 100;
/// Concurrent streams on one HTTP/2 client connection (ALB's limit).
pub const HTTP2_STREAMS_PER_CONNECTION_MAX: u32 = 128;
/// A target's response head may not exceed this.
pub const RESPONSE_HEAD_MAX_BYTES: usize = 64 * 1024;

/// What a matched rule does, resolved against the live target groups.
pub enum ResolvedAction {
    Forward(Forward),
    Fixed {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
    Redirect(RedirectConfig),
}

pub struct Forward {
    pub groups: Vec<(Arc<GroupRuntime>, u32)>,
    /// Group stickiness (AWSALBTG), in seconds.
    pub group_stickiness_seconds: Option<u32>,
}

impl Forward {
    /// The group for a request: the sticky one if still weighted, else by weight.
    fn choose(&self, sticky_group: Option<u64>) -> Option<&Arc<GroupRuntime>> {
        if self.groups.len() == 1 {
            return Some(&self.groups[0].0);
        }
        if let (Some(cookie), Some(_)) = (sticky_group, self.group_stickiness_seconds) {
            if let Some((group, _)) = self
                .groups
                .iter()
                .find(|(group, weight)| *weight > 0 && group_cookie(&group.name) == cookie)
            {
                return Some(group);
            }
        }
        let index = crate::balance::weighted_by(self.groups.len(), random_u64(), |index| {
            f64::from(self.groups[index].1)
        })?;
        Some(&self.groups[index].0)
    }
}

fn group_cookie(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish()
}

/// What one load balancer shares among its listeners.
pub struct BalancerRuntime {
    pub counters: Arc<Counters>,
    pub idle_timeout: Duration,
}

/// One HTTP(S) listener's configuration as of the last snapshot.
pub struct HttpListener {
    pub balancer: Arc<BalancerRuntime>,
    pub port: u16,
    pub tls: bool,
    pub table: RuleTable<ResolvedAction>,
}

/// Per client connection: who it is and where it came in.
pub struct ConnectionContext {
    pub peer: SocketAddr,
    pub peer_ip: HeaderValue,
    pub listener: Arc<HttpListener>,
    pub clock: Arc<CoarseClock>,
}

pub type ProxyBody = http_body_util::Either<UpstreamBody, http_body_util::Full<Bytes>>;

/// Answers one request. Never fails: every problem is an HTTP answer.
pub async fn handle(
    request: Request<Incoming>,
    context: Arc<ConnectionContext>,
) -> Result<Response<ProxyBody>, Infallible> {
    let listener = &context.listener;
    let counters = &listener.balancer.counters;
    counters.request_count.fetch_add(1, Relaxed);
    let response = route(request, &context).await;
    let response = match response {
        Ok(response) => response,
        Err(status) => {
            counters.elb_response(status.as_u16());
            elb_response(status)
        }
    };
    Ok(response)
}

async fn route(
    mut request: Request<Incoming>,
    context: &ConnectionContext,
) -> Result<Response<ProxyBody>, StatusCode> {
    let listener = &context.listener;
    // The Host field is the common case and costs a reference count;
    // an HTTP/2 `:authority` is copied once.
    let host_field = match request.uri().authority() {
        Some(authority) => {
            HeaderValue::from_str(authority.as_str()).map_err(|_| StatusCode::BAD_REQUEST)?
        }
        None => match request.headers().get(header::HOST) {
            Some(host) => host.clone(),
            // HTTP/1.1 requires Host (RFC 9112 §3.2); HTTP/1.0 may omit it.
            None if request.version() == Version::HTTP_11 => return Err(StatusCode::BAD_REQUEST),
            None => HeaderValue::from_static(""),
        },
    };
    let authority = host_field.to_str().map_err(|_| StatusCode::BAD_REQUEST)?;
    let action = {
        let view = RequestView {
            method: request.method().as_str(),
            host: host_without_port(authority),
            path: request.uri().path(),
            query: request.uri().query().unwrap_or(""),
            headers: request.headers(),
            source: context.peer.ip(),
        };
        listener.table.evaluate(&view)
    };
    match action {
        ResolvedAction::Fixed {
            status,
            content_type,
            body,
        } => {
            listener.balancer.counters.elb_response(status.as_u16());
            let mut response = Response::new(full(body.clone()));
            *response.status_mut() = *status;
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type.clone());
            }
            response
                .headers_mut()
                .insert(header::SERVER, HeaderValue::from_static(SERVER_NAME));
            Ok(response)
        }
        ResolvedAction::Redirect(config) => redirect(&request, authority, listener, config),
        ResolvedAction::Forward(forward) => {
            let cookies = StickyCookies::read(request.headers());
            let group = forward
                .choose(cookies.group)
                .ok_or(StatusCode::SERVICE_UNAVAILABLE)?;
            let settings = group.settings.load();
            let sticky = settings.stickiness_duration_seconds.and(cookies.target);
            let now_ms = context.clock.now_ms();
            let target = group
                .pick(sticky, now_ms, random_u64())
                .ok_or(StatusCode::SERVICE_UNAVAILABLE)?;
            let upgrade = is_upgrade(&request);
            let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
            prepare_upstream(&mut request, &host_field, context);
            let mut response =
                forward_to(request, &target, group, client_upgrade, listener).await?;
            let headers = response.headers_mut();
            if let Some(seconds) = settings.stickiness_duration_seconds {
                if cookies.target != Some(target.cookie) {
                    set_cookie(headers, "AWSALB", target.cookie, seconds);
                }
            }
            if let Some(seconds) = forward.group_stickiness_seconds {
                let cookie = group_cookie(&group.name);
                if forward.groups.len() > 1 && cookies.group != Some(cookie) {
                    set_cookie(headers, "AWSALBTG", cookie, seconds);
                }
            }
            Ok(response)
        }
    }
}

const SERVER_NAME: &str = "awselb/2.0";

/// ALB's own answer for a status it generates, with ALB's page.
pub fn elb_response(status: StatusCode) -> Response<ProxyBody> {
    let title = match status {
        StatusCode::BAD_REQUEST => "400 Bad Request",
        StatusCode::BAD_GATEWAY => "502 Bad Gateway",
        StatusCode::SERVICE_UNAVAILABLE => "503 Service Temporarily Unavailable",
        StatusCode::GATEWAY_TIMEOUT => "504 Gateway Time-out",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "431 Request Header Fields Too Large",
        _ => "500 Internal Server Error",
    };
    let page = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n"
    );
    let mut response = Response::new(full(Bytes::from(page)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::SERVER, HeaderValue::from_static(SERVER_NAME));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    response
}

fn full(body: Bytes) -> ProxyBody {
    http_body_util::Either::Right(http_body_util::Full::new(body))
}

fn redirect(
    request: &Request<Incoming>,
    authority: &str,
    listener: &HttpListener,
    config: &RedirectConfig,
) -> Result<Response<ProxyBody>, StatusCode> {
    let protocol = if listener.tls { "https" } else { "http" };
    let port = listener.port.to_string();
    let path = request.uri().path();
    let parts = RequestParts {
        protocol,
        host: host_without_port(authority),
        port: &port,
        path: path.strip_prefix('/').unwrap_or(path),
        query: request.uri().query().unwrap_or(""),
    };
    let scheme = render_placeholders(&config.protocol, &parts).to_ascii_lowercase();
    let host = render_placeholders(&config.host, &parts);
    let target_port = render_placeholders(&config.port, &parts);
    let target_path = render_placeholders(&config.path, &parts);
    let query = render_placeholders(&config.query, &parts);
    let default_port =
        (scheme == "http" && target_port == "80") || (scheme == "https" && target_port == "443");
    let mut location = format!("{scheme}://{host}");
    if !default_port {
        location.push(':');
        location.push_str(&target_port);
    }
    location.push_str(&target_path);
    if !query.is_empty() {
        location.push('?');
        location.push_str(&query);
    }
    let location = HeaderValue::from_str(&location).map_err(|_| StatusCode::BAD_REQUEST)?;
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = match config.status_code {
        RedirectStatus::Permanent => StatusCode::MOVED_PERMANENTLY,
        RedirectStatus::Found => StatusCode::FOUND,
    };
    response.headers_mut().insert(header::LOCATION, location);
    response
        .headers_mut()
        .insert(header::SERVER, HeaderValue::from_static(SERVER_NAME));
    listener
        .balancer
        .counters
        .elb_response(response.status().as_u16());
    Ok(response)
}

#[derive(Default)]
struct StickyCookies {
    target: Option<u64>,
    group: Option<u64>,
}

impl StickyCookies {
    fn read(headers: &HeaderMap) -> Self {
        let mut cookies = StickyCookies::default();
        for value in headers.get_all(header::COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            for pair in text.split(';') {
                let Some((name, value)) = pair.trim().split_once('=') else {
                    continue;
                };
                let parsed = u64::from_str_radix(value, 16).ok();
                match name {
                    "AWSALB" => cookies.target = parsed,
                    "AWSALBTG" => cookies.group = parsed,
                    _ => {}
                }
            }
        }
        cookies
    }
}

fn set_cookie(headers: &mut HeaderMap, name: &str, value: u64, seconds: u32) {
    let plain = format!("{name}={value:016x}; Max-Age={seconds}; Path=/");
    // The CORS twin lets cross-site requests stick too, as ALB's does.
    let cors = format!("{name}CORS={value:016x}; Max-Age={seconds}; Path=/; SameSite=None; Secure");
    for cookie in [plain, cors] {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
}

fn is_upgrade(request: &Request<Incoming>) -> bool {
    request.version() == Version::HTTP_11
        && request.headers().contains_key(header::UPGRADE)
        && connection_has(request.headers(), "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// Hop-by-hop fields (RFC 9110 §7.6.1): meaningful for one connection only,
/// so never forwarded; and every field the Connection header names.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");

/// Turns the client's request into the target's: origin-form URI, HTTP/1.1,
/// hop-by-hop fields removed, Host kept, X-Forwarded-* and the trace id set.
fn prepare_upstream(
    request: &mut Request<Incoming>,
    host_field: &HeaderValue,
    context: &ConnectionContext,
) {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .cloned()
        .filter(|_| is_upgrade(request));
    // Absolute form (HTTP/2's scheme and authority, or a proxy-style
    // request line) becomes origin form; the common origin form is kept.
    if request.uri().scheme().is_some() || request.uri().authority().is_some() {
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        parts.scheme = None;
        parts.authority = None;
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *request.uri_mut() =
            http::Uri::from_parts(parts).unwrap_or_else(|_| http::Uri::from_static("/"));
    }
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    if headers.get(header::CONNECTION).is_some()
        || headers.contains_key(header::TE)
        || headers.contains_key(header::UPGRADE)
        || headers.contains_key(header::TRANSFER_ENCODING)
        || headers.contains_key("keep-alive")
        || headers.contains_key("proxy-connection")
        || headers.contains_key(header::TRAILER)
    {
        remove_hop_by_hop(headers);
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
    if !headers.contains_key(header::HOST) && !host_field.is_empty() {
        headers.insert(header::HOST, host_field.clone());
    }
    let forwarded_for = match headers.get(X_FORWARDED_FOR) {
        None => context.peer_ip.clone(),
        Some(_) => {
            let mut joined = Vec::new();
            for value in headers.get_all(X_FORWARDED_FOR) {
                if !joined.is_empty() {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(value.as_bytes());
            }
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(context.peer_ip.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or_else(|_| context.peer_ip.clone())
        }
    };
    headers.insert(X_FORWARDED_FOR, forwarded_for);
    let listener = &context.listener;
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if listener.tls { "https" } else { "http" }),
    );
    headers.insert(X_FORWARDED_PORT, HeaderValue::from(listener.port));
    if !headers.contains_key(X_AMZN_TRACE_ID) {
        headers.insert(X_AMZN_TRACE_ID, trace_id(context.clock.now_ms() / 1_000));
    }
}

/// `Root=1-{epoch seconds, 8 hex}-{96 random bits, 24 hex}`, X-Ray's form.
pub fn trace_id(epoch_seconds: u64) -> HeaderValue {
    let random = (u128::from(random_u64()) << 32) | u128::from(random_u64() as u32);
    let text = format!("Root=1-{:08x}-{:024x}", epoch_seconds as u32, random);
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("Root=1-0-0"))
}

/// Sends the request to `target` and returns its streaming response, or the
/// status the load balancer answers instead.
async fn forward_to(
    request: Request<Incoming>,
    target: &Arc<TargetRuntime>,
    group: &Arc<GroupRuntime>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    listener: &HttpListener,
) -> Result<Response<ProxyBody>, StatusCode> {
    let timeout = listener.balancer.idle_timeout;
    target.outstanding.fetch_add(1, Relaxed);
    group.counters.request_count.fetch_add(1, Relaxed);
    let guard = InFlight {
        target: Arc::clone(target),
        sender: None,
        finished: false,
    };
    let started = Instant::now();
    let result = match client_upgrade {
        None => tokio::time::timeout(timeout, send_pooled(request, target)).await,
        Some(client) => tokio::time::timeout(timeout, send_upgrade(request, target, client)).await,
    };
    let (response, sender) = match result {
        Err(_elapsed) => return Err(StatusCode::GATEWAY_TIMEOUT),
        Ok(Err(status)) => return Err(status),
        Ok(Ok(answer)) => answer,
    };
    let elapsed_us = started.elapsed().as_micros() as u64;
    let status = response.status().as_u16();
    group.counters.target_response(status, elapsed_us);
    listener
        .balancer
        .counters
        .target_response(status, elapsed_us);
    let (mut parts, body) = response.into_parts();
    if parts.status != StatusCode::SWITCHING_PROTOCOLS {
        remove_hop_by_hop(&mut parts.headers);
    }
    let mut guard = guard;
    guard.sender = sender;
    let body = UpstreamBody { inner: body, guard };
    Ok(Response::from_parts(
        parts,
        http_body_util::Either::Left(body),
    ))
}

/// Requests that do not survive a second try are not retried; a pooled
/// connection that the target closed before the request went out is.
async fn send_pooled(
    request: Request<Incoming>,
    target: &Arc<TargetRuntime>,
) -> Result<(Response<Incoming>, Option<SendRequest<Incoming>>), StatusCode> {
    let mut request = request;
    // Pooled connections first; each may have been closed by the target
    // since, in which case hyper hands the unsent request back.
    while let Some(mut sender) = target.checkout() {
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, Some(sender))),
            Err(mut error) => match error.take_message() {
                Some(unsent) => request = unsent,
                None => return Err(classify(error.error())),
            },
        }
    }
    let mut sender = connect(target, false).await?;
    match sender.send_request(request).await {
        Ok(response) => Ok((response, Some(sender))),
        Err(error) => Err(classify(&error)),
    }
}

fn classify(error: &hyper::Error) -> StatusCode {
    if error.is_timeout() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    }
}

/// Opens a new connection to the target and drives it until it ends or the
/// target is closed.
async fn connect(
    target: &Arc<TargetRuntime>,
    upgrades: bool,
) -> Result<SendRequest<Incoming>, StatusCode> {
    let stream = match tokio::time::timeout(
        TARGET_CONNECT_TIMEOUT,
        TcpStream::connect(target.address),
    )
    .await
    {
        Err(_) => return Err(StatusCode::GATEWAY_TIMEOUT),
        Ok(Err(_)) => return Err(StatusCode::BAD_GATEWAY),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(RESPONSE_HEAD_MAX_BYTES.max(8 * 1024) * 4)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    let mut closed = target.closed();
    tokio::spawn(async move {
        if upgrades {
            let connection = connection.with_upgrades();
            tokio::select! {
                _ = connection => {}
                _ = until_closed(&mut closed) => {}
            }
        } else {
            tokio::select! {
                _ = connection => {}
                _ = until_closed(&mut closed) => {}
            }
        }
    });
    Ok(sender)
}

/// A protocol upgrade (WebSocket) gets a connection of its own: after the
/// target's 101 both sides are joined into a byte tunnel until either ends
/// or the target is closed.
async fn send_upgrade(
    request: Request<Incoming>,
    target: &Arc<TargetRuntime>,
    client: hyper::upgrade::OnUpgrade,
) -> Result<(Response<Incoming>, Option<SendRequest<Incoming>>), StatusCode> {
    let mut sender = connect(target, true).await?;
    let mut response = sender
        .send_request(request)
        .await
        .map_err(|error| classify(&error))?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream = hyper::upgrade::on(&mut response);
        let mut closed = target.closed();
        // The tunnel counts as in flight, so draining waits for it.
        target.outstanding.fetch_add(1, Relaxed);
        let tunnel_target = Arc::clone(target);
        tokio::spawn(async move {
            let _in_flight = OutstandingGuard(tunnel_target);
            let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
                return;
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                _ = until_closed(&mut closed) => {}
            }
        });
    }
    Ok((response, None))
}

struct OutstandingGuard(Arc<TargetRuntime>);

impl Drop for OutstandingGuard {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Relaxed);
    }
}

/// A request in flight to a target: counted for least outstanding requests
/// until its response body ends, when its connection returns to the pool.
struct InFlight {
    target: Arc<TargetRuntime>,
    sender: Option<SendRequest<Incoming>>,
    finished: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.target.outstanding.fetch_sub(1, Relaxed);
        if self.finished {
            if let Some(sender) = self.sender.take() {
                self.target.checkin(sender);
            }
        }
    }
}

/// A target's response body on its way to the client; its end returns the
/// connection to the pool. (Its bytes are counted on the client's
/// connection, with everything else the client sends and receives.)
pub struct UpstreamBody {
    inner: Incoming,
    guard: InFlight,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.guard.finished = true,
            Poll::Ready(None) => this.guard.finished = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
