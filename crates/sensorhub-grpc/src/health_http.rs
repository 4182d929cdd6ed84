//! The small HTTP listener beside the gRPC port, for orchestrators and load
//! balancers that cannot speak gRPC health: `/healthz` (the process is up)
//! and `/readyz` (it accepts calls; 503 while shutting down or while the
//! store cannot serve, e.g. its database is unreachable); and
//! `/metrics` when the binary supplies a renderer: the Prometheus text format,
//! or OpenMetrics (with exemplars) for a scraper whose `Accept` header ranks
//! `application/openmetrics-text` above `text/plain`, as Prometheus does.
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
//! - **the live view** (`GET /`, `/login`, `/view/...`) when the server's
//!   recorders are on: a session from a token of the server's set
//!   (`live_view.rs`).
//! - **`/debug/pprof/profile`** when the binary supplies a profiler: a token
//!   of the server's set, rate-limited, one at a time (`debug_pprof.rs`).
//! - **`/metrics` rendered at most once per [`METRICS_CACHE`]** and format,
//!   one render at a time: requests in that window share one rendered body (reference
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
use sensorhub_core::Readiness;
use tokio::sync::watch;
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt as _;

use crate::{
    connection_metrics::ConnectionMetrics, listener::AcceptBackoff,
    optional_metrics::OptionalMetrics, server::ServeError,
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

/// Renders the current metrics in one exposition format. The transport does
/// not know which SDK or exporter produces them.
#[derive(Clone)]
pub struct MetricsFormat {
    pub render: Arc<dyn Fn() -> String + Send + Sync>,
    pub content_type: &'static str,
}

impl std::fmt::Debug for MetricsFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsFormat")
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// What `/metrics` serves: the Prometheus text format to everyone, and
/// OpenMetrics to a scraper that asks for it, when the binary renders it.
#[derive(Debug, Clone)]
pub struct MetricsEndpoint {
    pub text: MetricsFormat,
    pub openmetrics: Option<MetricsFormat>,
}

/// Whether an `Accept` header ranks OpenMetrics above the Prometheus text
/// format: the highest `q` wins, the earlier range on a tie (as
/// client_golang negotiates). `text/plain`, `text/*` and `*/*` stand for the
/// text format; a header naming neither (or none, or one that does not
/// parse) gets the text format, as before OpenMetrics was offered.
pub fn prefers_openmetrics(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let mut best: Option<(f32, bool)> = None;
    for range in accept.split(',') {
        let Ok(media) = range.trim().parse::<mime::Mime>() else {
            continue;
        };
        let openmetrics = match (media.type_().as_str(), media.subtype().as_str()) {
            ("application", "openmetrics-text") => true,
            ("text", "plain") | ("text", "*") | ("*", "*") => false,
            _ => continue,
        };
        let q = media
            .get_param("q")
            .map(|q| q.as_str().parse::<f32>().unwrap_or(0.0))
            .unwrap_or(1.0);
        if q > 0.0 && best.is_none_or(|(best_q, _)| q > best_q) {
            best = Some((q, openmetrics));
        }
    }
    best.is_some_and(|(_, openmetrics)| openmetrics)
}

/// The last rendered `/metrics` body and when it was rendered. The lock is
/// held across a render, so renders never overlap and a request that waited
/// for one gets its result.
struct MetricsCache {
    format: MetricsFormat,
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
        let render = self.format.render.clone();
        let body = Bytes::from(tokio::task::spawn_blocking(move || render()).await.ok()?);
        *last = Some((Instant::now(), body.clone()));
        Some(body)
    }
}

pub(crate) async fn start(
    addr: SocketAddr,
    limits: HttpLimits,
    draining: CancellationToken,
    store: watch::Receiver<Readiness>,
    stop: CancellationToken,
    metrics: Option<MetricsEndpoint>,
    extra: Vec<Router>,
) -> Result<(SocketAddr, JoinHandle<()>), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let mut app = routes(draining.clone(), store, metrics);
    // What else the server serves here: the profiler, the live view.
    for routes in extra {
        app = app.merge(routes);
    }
    let task = tokio::spawn(serve(listener, limits, app, stop));
    Ok((bound, task))
}

fn routes(
    draining: CancellationToken,
    store: watch::Receiver<Readiness>,
    metrics: Option<MetricsEndpoint>,
) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let draining = draining.clone();
                let readiness = store.borrow().clone();
                async move {
                    if draining.is_cancelled() {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "shutting down\n".to_owned(),
                        )
                    } else if let Readiness::Unavailable(why) = readiness {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        )
                    } else {
                        (StatusCode::OK, "ready\n".to_owned())
                    }
                }
            }),
        );
    if let Some(endpoint) = metrics {
        let cache = |format: MetricsFormat| {
            Arc::new(MetricsCache {
                format,
                last: tokio::sync::Mutex::new(None),
            })
        };
        let text = cache(endpoint.text);
        let openmetrics = endpoint.openmetrics.map(cache);
        app = app.route(
            "/metrics",
            get(move |headers: http::HeaderMap| {
                let accept = headers
                    .get(header::ACCEPT)
                    .and_then(|value| value.to_str().ok());
                let cache = match &openmetrics {
                    Some(openmetrics) if prefers_openmetrics(accept) => openmetrics.clone(),
                    _ => text.clone(),
                };
                async move {
                    // The body depends on Accept: caches must keep them apart.
                    let vary = (header::VARY, "accept");
                    match cache.body().await {
                        Some(body) => (
                            StatusCode::OK,
                            [(header::CONTENT_TYPE, cache.format.content_type), vary],
                            body,
                        ),
                        None => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [(header::CONTENT_TYPE, "text/plain"), vary],
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
    let mut backoff =
        AcceptBackoff::new("http", ConnectionMetrics::new(OptionalMetrics::default()));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The smallest hyper allows: a request head is a few hundred bytes.
        .max_buf_size(8 * 1024);
    while let Some((tcp, peer)) = backoff.accept(&listener, &stop).await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, limit = limits.max_connections, "HTTP connection refused: limit reached");
            continue;
        };
        // The peer's address, for what limits per peer (the view's logins).
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        ));
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
            format: MetricsFormat {
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

    #[test]
    fn openmetrics_only_when_ranked_above_the_text_format() {
        // Prometheus 3's default scrape protocols, and 2.x's.
        assert!(prefers_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
             application/openmetrics-text;version=0.0.1;q=0.4,\
             text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,\
             text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
        )));
        assert!(prefers_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(prefers_openmetrics(Some("application/openmetrics-text")));
        // A scraper that asks for the text format first, or for anything.
        assert!(!prefers_openmetrics(Some(
            "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5"
        )));
        assert!(!prefers_openmetrics(Some(
            "text/plain, application/openmetrics-text"
        )));
        assert!(!prefers_openmetrics(Some("*/*")));
        assert!(!prefers_openmetrics(None));
        // Refused (q=0), unknown or unparsable ranges do not count.
        assert!(!prefers_openmetrics(Some(
            "application/openmetrics-text;q=0"
        )));
        assert!(!prefers_openmetrics(Some("application/json")));
        assert!(!prefers_openmetrics(Some("garbage;;, ,")));
        assert!(prefers_openmetrics(Some(
            "application/json, application/openmetrics-text;q=0.2"
        )));
    }
}
