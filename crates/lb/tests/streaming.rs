//! A 100 MB body each way through the proxy without buffering it: the
//! process's resident memory grows by far less than the body. Alone in
//! its own test binary so that no other test's memory shows in the figure.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::*;

const BODY_BYTES: u64 = 100 * 1024 * 1024;
/// Growth allowed while 100 MB pass each way: buffers, not the body.
const RSS_GROWTH_MAX_BYTES: u64 = 30 * 1024 * 1024;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches(" kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("VmRSS")
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_stream_both_ways_without_buffering() {
    let backend = Backend::start("a").await;
    let port = free_port();
    let plane = plane();
    plane
        .apply(snapshot(
            alb(port, &[&backend], json!({"HealthCheckEnabled": false})),
            1,
        ))
        .await
        .expect("applied");
    let before = rss_bytes();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler_peak = std::sync::Arc::clone(&peak);
    let sampler = tokio::spawn(async move {
        loop {
            sampler_peak.fetch_max(rss_bytes(), std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // Download: the backend generates 100 MB; the client counts and drops it.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = http::Request::get(format!("/big?bytes={BODY_BYTES}"))
        .header("host", "x")
        .body(Generated::empty())
        .expect("request");
    let mut body = sender
        .send_request(request)
        .await
        .expect("response")
        .into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame
            .expect("frame")
            .data_ref()
            .map_or(0, |data| data.len() as u64);
    }
    assert_eq!(received, BODY_BYTES);
    // Upload: 100 MB sent to /echo and counted as it comes back.
    sender.ready().await.expect("connection ready again");
    let request = http::Request::post("/echo")
        .header("host", "x")
        .body(Generated::new(BODY_BYTES))
        .expect("request");
    let mut body = sender
        .send_request(request)
        .await
        .expect("response")
        .into_body();
    let mut echoed = 0u64;
    while let Some(frame) = body.frame().await {
        echoed += frame
            .expect("frame")
            .data_ref()
            .map_or(0, |data| data.len() as u64);
    }
    assert_eq!(echoed, BODY_BYTES);
    sampler.abort();
    let growth = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    assert!(
        growth < RSS_GROWTH_MAX_BYTES,
        "resident memory grew by {growth} bytes while 2 × 100 MB streamed"
    );
}

/// A request body generated as it is sent.
struct Generated {
    remaining: u64,
    chunk: Bytes,
}

impl Generated {
    fn new(bytes: u64) -> Self {
        Generated {
            remaining: bytes,
            chunk: Bytes::from(vec![b'y'; 64 * 1024]),
        }
    }
    fn empty() -> Self {
        Self::new(0)
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let size = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= size as u64;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..size)))))
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}
