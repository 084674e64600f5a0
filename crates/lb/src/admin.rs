//! The data plane's own small HTTP endpoint: `/metrics` (Prometheus),
//! `/targets` (every target's health as JSON) and `/health`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::plane::DataPlane;

/// Admin connections served at once.
const ADMIN_CONNECTIONS_MAX: usize = 64;

pub async fn serve_admin(listener: TcpListener, plane: DataPlane) {
    let permits = Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNECTIONS_MAX));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            continue;
        };
        let plane = plane.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(request, plane.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    plane: DataPlane,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, kind, body) = match request.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            plane.metrics().render_prometheus(),
        ),
        "/targets" => {
            let health = plane.target_health().await;
            (
                StatusCode::OK,
                "application/json",
                serde_json::to_string(&health).unwrap_or_default(),
            )
        }
        "/health" => (
            StatusCode::OK,
            "text/plain",
            format!("version {}\n", plane.version()),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
    Ok(response)
}
