//! Listening sockets and the connections they accept. Each socket's accept
//! loop reads its listener's configuration from a slot the writer swaps, so
//! a new snapshot changes rules, protocol (HTTP to HTTPS) or target group
//! without closing the port.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::edge::{random_u64, CoarseClock};
use crate::proxy::{self, BalancerRuntime, ConnectionContext, HttpListener};
use crate::target::until_closed;
use crate::target::GroupRuntime;

/// Client connections one listener holds open at once; more are refused
/// at accept, so a flood cannot exhaust memory or descriptors.
pub const CONNECTIONS_PER_LISTENER_MAX: usize = 20_000;
/// A network load balancer's TCP idle timeout (NLB's fixed 350 s).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(350);
/// A UDP flow ends after this long without a datagram (NLB's 120 s).
pub const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Concurrent UDP flows (client address and port) per listener.
pub const UDP_FLOWS_PER_LISTENER_MAX: usize = 10_000;
/// The largest datagram relayed.
pub const UDP_DATAGRAM_MAX_BYTES: usize = 65_535;
/// How long a removed listener's open HTTP connections get to finish the
/// requests they carry after being told to close.
pub const LISTENER_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a listening socket serves, as of the last snapshot.
pub enum ListenerConfig {
    Http {
        http: Arc<HttpListener>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    },
    /// NLB TCP (and UDP): every connection or flow to one target group.
    Stream {
        balancer: Arc<BalancerRuntime>,
        group: Arc<GroupRuntime>,
    },
}

pub struct ListenerSlot {
    pub config: ArcSwap<ListenerConfig>,
    shutdown: watch::Sender<bool>,
    pub clock: Arc<CoarseClock>,
    /// Client connections open on this listener, over all workers.
    permits: Arc<Semaphore>,
}

impl ListenerSlot {
    pub fn new(config: ListenerConfig, clock: Arc<CoarseClock>) -> Arc<Self> {
        Arc::new(ListenerSlot {
            config: ArcSwap::from_pointee(config),
            shutdown: watch::channel(false).0,
            clock,
            permits: Arc::new(Semaphore::new(CONNECTIONS_PER_LISTENER_MAX)),
        })
    }

    /// Closes the socket and asks its connections to finish.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }
}

/// Accepts TCP connections on the current worker until the listener is
/// shut down. Each worker accepts from its own clone of the socket.
pub async fn accept_tcp(socket: std::net::TcpListener, slot: Arc<ListenerSlot>) {
    let socket = match TcpListener::from_std(socket) {
        Ok(socket) => socket,
        Err(error) => {
            tracing::error!(%error, "a worker cannot accept on a listening socket");
            return;
        }
    };
    let permits = Arc::clone(&slot.permits);
    let mut shutdown = slot.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = until_closed(&mut shutdown) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors or the like: back off rather than spin.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            continue; // over the limit: the connection is dropped, so closed
        };
        let _ = stream.set_nodelay(true);
        let slot = Arc::clone(&slot);
        tokio::spawn(serve_tcp(stream, peer, slot, permit));
    }
}

async fn serve_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Arc<ListenerSlot>,
    _permit: OwnedSemaphorePermit,
) {
    let config = slot.config.load_full();
    match &*config {
        ListenerConfig::Http { http, tls } => {
            let counters = Arc::clone(&http.balancer.counters);
            counters.new_connections.fetch_add(1, Relaxed);
            counters.active_connections.fetch_add(1, Relaxed);
            let idle = http.balancer.idle_timeout;
            let activity = Arc::new(AtomicU64::new(slot.clock.now_ms()));
            let io = Tracked {
                inner: stream,
                activity: Arc::clone(&activity),
                clock: Arc::clone(&slot.clock),
                counters: Arc::clone(&counters),
            };
            let context = Arc::new(ConnectionContext {
                peer,
                peer_ip: HeaderValue::from_str(&peer.ip().to_canonical().to_string())
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
                listener: Arc::clone(http),
                clock: Arc::clone(&slot.clock),
            });
            match tls {
                None => {
                    if let Some(wire) = sniff(&io.inner, idle).await {
                        serve_http(io, wire, context, &slot, activity, idle).await;
                    }
                }
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(idle, acceptor.accept(io)).await;
                    if let Ok(Ok(tls_stream)) = handshake {
                        let wire = match tls_stream.get_ref().1.alpn_protocol() {
                            Some(b"h2") => Wire::Http2,
                            _ => Wire::Http1,
                        };
                        serve_http(tls_stream, wire, context, &slot, activity, idle).await;
                    }
                }
            }
            counters.active_connections.fetch_sub(1, Relaxed);
        }
        ListenerConfig::Stream { balancer, group } => {
            crate::stream::forward_tcp(stream, balancer, group, &slot.clock).await;
        }
    }
}

/// The HTTP version a client connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    Http1,
    /// HTTP/2: by ALPN over TLS, by prior knowledge in cleartext.
    Http2,
}

/// Tells HTTP/2's connection preface (`PRI * HTTP/2.0...`) from an
/// HTTP/1 request line by peeking, so each connection gets only the
/// protocol state it needs. `None`: the client left or said nothing.
async fn sniff(stream: &TcpStream, idle: Duration) -> Option<Wire> {
    let deadline = tokio::time::Instant::now() + idle;
    let mut start = [0u8; 4];
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut start))
            .await
            .ok()?
            .ok()?;
        match peeked {
            0 => return None,
            // Only "PRI " (never a method a client sends) starts the preface.
            _ if start[0] != b'P' => return Some(Wire::Http1),
            4 => {
                return Some(if &start == b"PRI " {
                    Wire::Http2
                } else {
                    Wire::Http1
                })
            }
            // "P" of POST, PUT, PATCH or PRI: wait for the rest of the word.
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

async fn serve_http<I>(
    io: I,
    wire: Wire,
    context: Arc<ConnectionContext>,
    slot: &ListenerSlot,
    activity: Arc<AtomicU64>,
    idle: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request| proxy::handle(request, Arc::clone(&context)));
    let io = TokioIo::new(io);
    let watch = Watch {
        slot,
        activity,
        idle,
    };
    // Each connection is boxed on its own, so an HTTP/1.1 connection does
    // not carry room for HTTP/2's state, nor the other way round.
    match wire {
        Wire::Http1 => {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(idle)
                .max_buf_size(proxy::REQUEST_HEAD_MAX_BYTES)
                .max_headers(proxy::HEADERS_MAX)
                .keep_alive(true)
                .writev(true)
                .serve_connection(io, service)
                .with_upgrades();
            watch
                .drive(Box::pin(connection), |connection| {
                    connection.graceful_shutdown()
                })
                .await;
        }
        Wire::Http2 => {
            let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(proxy::HTTP2_STREAMS_PER_CONNECTION_MAX)
                .max_header_list_size(proxy::REQUEST_HEAD_MAX_BYTES as u32)
                .serve_connection(io, service);
            watch
                .drive(Box::pin(connection), |connection| {
                    connection.graceful_shutdown()
                })
                .await;
        }
    }
}

/// What ends a client connection besides the client: ALB's idle timeout,
/// and the listener's removal (which lets requests in flight finish).
struct Watch<'a> {
    slot: &'a ListenerSlot,
    activity: Arc<AtomicU64>,
    idle: Duration,
}

impl Watch<'_> {
    async fn drive<C: std::future::Future>(
        self,
        mut connection: Pin<Box<C>>,
        graceful_shutdown: impl FnOnce(Pin<&mut C>),
    ) {
        let mut shutdown = self.slot.shutdown.subscribe();
        let clock = Arc::clone(&self.slot.clock);
        let idle_ms = self.idle.as_millis() as u64;
        let activity = &self.activity;
        let idle = self.idle;
        let watchdog = async {
            // No byte either way for the idle timeout closes the connection.
            loop {
                tokio::time::sleep(idle / 4).await;
                if clock.now_ms().saturating_sub(activity.load(Relaxed)) > idle_ms {
                    return;
                }
            }
        };
        tokio::select! {
            _ = connection.as_mut() => {}
            () = watchdog => {}
            _ = until_closed(&mut shutdown) => {
                graceful_shutdown(connection.as_mut());
                let _ = tokio::time::timeout(LISTENER_DRAIN_TIMEOUT, connection).await;
            }
        }
    }
}

/// A client connection's stream, marking when bytes last moved (for the
/// idle timeout) and counting them (ProcessedBytes: heads and bodies, both
/// ways, as the client's connection carries them).
pub struct Tracked<S> {
    inner: S,
    activity: Arc<AtomicU64>,
    clock: Arc<CoarseClock>,
    counters: Arc<crate::metrics::Counters>,
}

impl<S> Tracked<S> {
    fn touch(&self, bytes: usize) {
        if bytes > 0 {
            self.activity.store(self.clock.now_ms(), Relaxed);
            self.counters
                .processed_bytes
                .fetch_add(bytes as u64, Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.touch(read);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(written)) = polled {
            self.touch(written);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, buffers);
        if let Poll::Ready(Ok(written)) = polled {
            self.touch(written);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Relays UDP datagrams: each client address is a flow pinned to one
/// target, with a socket of its own toward it, ended after
/// [`UDP_IDLE_TIMEOUT`] of silence.
pub async fn serve_udp(socket: UdpSocket, slot: Arc<ListenerSlot>) {
    let socket = Arc::new(socket);
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut shutdown = slot.shutdown.subscribe();
    let mut buffer = vec![0u8; UDP_DATAGRAM_MAX_BYTES];
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buffer) => received,
            _ = until_closed(&mut shutdown) => return,
        };
        let Ok((length, client)) = received else {
            continue;
        };
        let config = slot.config.load_full();
        let ListenerConfig::Stream { balancer, group } = &*config else {
            continue;
        };
        balancer
            .counters
            .processed_bytes
            .fetch_add(length as u64, Relaxed);
        let existing = flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&client)
            .cloned();
        let upstream = match existing {
            Some(upstream) => upstream,
            None => {
                let full = flows.lock().unwrap_or_else(PoisonError::into_inner).len()
                    >= UDP_FLOWS_PER_LISTENER_MAX;
                if full {
                    continue;
                }
                let Some(target) = group.pick(None, slot.clock.now_ms(), random_u64()) else {
                    continue;
                };
                let Ok(upstream) = open_udp_flow(target.address).await else {
                    continue;
                };
                balancer.counters.new_connections.fetch_add(1, Relaxed);
                let upstream = Arc::new(upstream);
                flows
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(client, Arc::clone(&upstream));
                tokio::spawn(relay_replies(
                    Arc::clone(&socket),
                    Arc::clone(&upstream),
                    client,
                    Arc::clone(&flows),
                    target.closed(),
                ));
                upstream
            }
        };
        let _ = upstream.send(&buffer[..length]).await;
    }
}

async fn open_udp_flow(target: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(target).await?;
    Ok(socket)
}

async fn relay_replies(
    listener: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
    mut closed: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; UDP_DATAGRAM_MAX_BYTES];
    loop {
        let received = tokio::select! {
            received = tokio::time::timeout(UDP_IDLE_TIMEOUT, upstream.recv(&mut buffer)) => received,
            _ = until_closed(&mut closed) => break,
        };
        match received {
            Ok(Ok(length)) => {
                let _ = listener.send_to(&buffer[..length], client).await;
            }
            // Silence for the idle timeout, or the target refused: the flow ends.
            _ => break,
        }
    }
    flows
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&client);
}
