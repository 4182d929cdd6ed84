//! The small HTTP listener beside the gRPC port, for orchestrators and load
//! balancers that cannot speak gRPC health: `/healthz` (the process is up)
//! and `/readyz` (it accepts calls; 503 while shutting down); and
//! `/metrics` in the Prometheus text format when the binary supplies a renderer.
//!
//! It needs no token, so what a stranger can hold through it is bounded:
//!
//! - **HTTP/1.1 only**, served by hyper's HTTP/1 connection directly (not
//!   `axum::serve`, which also speaks HTTP/2 prior knowledge and has neither
//!   of the next two). An HTTP/2 client gets an HTTP/1.1 error and the close.
//! - **at most `max_connections` open at once**; one more is closed at once.
//! - **a header-read timeout**: a request's head must arrive within
//!   `header_timeout`, and an idle keep-alive connection is closed after as
//!   long. A half-sent request holds its slot for that long only.
//! - **`/metrics` rendered at most once per [`METRICS_CACHE`]**, one render at
//!   a time: requests in that window share one rendered body (reference
//!   counted, never copied), so many scrapers cost one render, and slow
//!   readers hold a share of one body instead of a body each.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    http::{StatusCode, header},
    routing::get,
};
use bytes::Bytes;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    listener::{AcceptBackoff, ConnectionMetrics},
    server::ServeError,
};

/// How long a rendered `/metrics` body is served again.
pub const METRICS_CACHE: Duration = Duration::from_secs(1);

/// How many connections the listener holds, and how long a request head may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
        }
    }
}

/// Renders the current metrics in the Prometheus text format. The transport
/// does not know which SDK or exporter produces them.
#[derive(Clone)]
pub struct MetricsEndpoint {
    pub render: Arc<dyn Fn() -> String + Send + Sync>,
    pub content_type: &'static str,
}

impl std::fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsEndpoint")
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// The last rendered `/metrics` body and when it was rendered. The lock is
/// held across a render, so renders never overlap and a request that waited
/// for one gets its result.
struct MetricsCache {
    endpoint: MetricsEndpoint,
    last: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl MetricsCache {
    async fn body(&self) -> Option<Bytes> {
        let mut last = self.last.lock().await;
        if let Some((at, body)) = &*last
            && at.elapsed() < METRICS_CACHE
        {
            return Some(body.clone());
        }
        // Rendering walks every series: off the async workers.
        let render = self.endpoint.render.clone();
        let body = Bytes::from(tokio::task::spawn_blocking(move || render()).await.ok()?);
        *last = Some((Instant::now(), body.clone()));
        Some(body)
    }
}

pub(crate) async fn start(
    addr: SocketAddr,
    limits: HttpLimits,
    draining: CancellationToken,
    stop: CancellationToken,
    metrics: Option<MetricsEndpoint>,
) -> Result<(SocketAddr, JoinHandle<()>), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let app = routes(draining, metrics);
    let task = tokio::spawn(serve(listener, limits, app, stop));
    Ok((bound, task))
}

fn routes(draining: CancellationToken, metrics: Option<MetricsEndpoint>) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let draining = draining.clone();
                async move {
                    if draining.is_cancelled() {
                        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                    } else {
                        (StatusCode::OK, "ready\n")
                    }
                }
            }),
        );
    if let Some(endpoint) = metrics {
        let content_type = endpoint.content_type;
        let cache = Arc::new(MetricsCache {
            endpoint,
            last: tokio::sync::Mutex::new(None),
        });
        app = app.route(
            "/metrics",
            get(move || {
                let cache = cache.clone();
                async move {
                    match cache.body().await {
                        Some(body) => {
                            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body)
                        }
                        None => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [(header::CONTENT_TYPE, "text/plain")],
                            Bytes::from_static(b"metrics could not be rendered\n"),
                        ),
                    }
                }
            }),
        );
    }
    app
}

/// Accepts within the limits until `stop`, then closes every connection
/// gracefully (an idle keep-alive connection at once, a request in progress
/// after its response) and waits for them.
async fn serve(listener: TcpListener, limits: HttpLimits, app: Router, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut backoff = AcceptBackoff::new("http", ConnectionMetrics::new());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The smallest hyper allows: a request head is a few hundred bytes.
        .max_buf_size(8 * 1024);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => {
                backoff.accepted();
                accepted
            }
            Err(e) => {
                backoff.failed(e).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, limit = limits.max_connections, "HTTP connection refused: limit reached");
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection(TokioIo::new(tcp), service);
        let stop = stop.clone();
        connections.spawn(async move {
            let _slot = slot;
            tokio::pin!(conn);
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn metrics_are_rendered_at_most_once_per_interval() {
        let renders = Arc::new(AtomicUsize::new(0));
        let counted = renders.clone();
        let cache = Arc::new(MetricsCache {
            endpoint: MetricsEndpoint {
                render: Arc::new(move || {
                    let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                    std::thread::sleep(Duration::from_millis(50));
                    format!("render {n}\n")
                }),
                content_type: "text/plain",
            },
            last: tokio::sync::Mutex::new(None),
        });
        // Twenty requests at once: one render, one body for all.
        let bodies = futures_util::future::join_all((0..20).map(|_| {
            let cache = cache.clone();
            async move { cache.body().await.unwrap() }
        }))
        .await;
        assert_eq!(renders.load(Ordering::SeqCst), 1);
        assert!(bodies.iter().all(|b| b == "render 1\n"));
        tokio::time::sleep(METRICS_CACHE).await;
        assert_eq!(cache.body().await.unwrap(), "render 2\n");
    }
}
