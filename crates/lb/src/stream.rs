//! The network load balancer's TCP forwarding: each client connection is
//! joined to a connection to one target, bytes copied both ways until
//! either side ends, NLB's idle timeout passes, or the target's
//! deregistration delay runs out.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::edge::{random_u64, CoarseClock};
use crate::listener::TCP_IDLE_TIMEOUT;
use crate::proxy::{BalancerRuntime, TARGET_CONNECT_TIMEOUT};
use crate::target::until_closed;
use crate::target::GroupRuntime;

/// Bytes copied per read in each direction.
const COPY_BUFFER_BYTES: usize = 16 * 1024;

pub async fn forward_tcp(
    client: TcpStream,
    balancer: &BalancerRuntime,
    group: &Arc<GroupRuntime>,
    clock: &CoarseClock,
) {
    let counters = &balancer.counters;
    counters.new_connections.fetch_add(1, Relaxed);
    counters.active_connections.fetch_add(1, Relaxed);
    let Some(target) = group.pick(None, clock.now_ms(), random_u64()) else {
        // No target: the client sees its connection reset, as with NLB.
        counters.active_connections.fetch_sub(1, Relaxed);
        return;
    };
    target.outstanding.fetch_add(1, Relaxed);
    group.counters.request_count.fetch_add(1, Relaxed);
    let connected =
        tokio::time::timeout(TARGET_CONNECT_TIMEOUT, TcpStream::connect(target.address)).await;
    if let Ok(Ok(upstream)) = connected {
        let _ = upstream.set_nodelay(true);
        let mut closed = target.closed();
        tokio::select! {
            _ = relay(client, upstream, counters) => {}
            _ = until_closed(&mut closed) => {}
        }
    }
    target.outstanding.fetch_sub(1, Relaxed);
    counters.active_connections.fetch_sub(1, Relaxed);
}

/// Copies both ways; a half-close is passed on, and the flow ends when both
/// directions have ended or neither moved a byte for the idle timeout.
async fn relay(client: TcpStream, upstream: TcpStream, counters: &crate::metrics::Counters) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let to_target = async {
        let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
        loop {
            match tokio::time::timeout(TCP_IDLE_TIMEOUT, client_read.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(length)) => {
                    counters.processed_bytes.fetch_add(length as u64, Relaxed);
                    if upstream_write.write_all(&buffer[..length]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = upstream_write.shutdown().await;
    };
    let to_client = async {
        let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
        loop {
            match tokio::time::timeout(TCP_IDLE_TIMEOUT, upstream_read.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(length)) => {
                    counters.processed_bytes.fetch_add(length as u64, Relaxed);
                    if client_write.write_all(&buffer[..length]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(to_target, to_client);
}
