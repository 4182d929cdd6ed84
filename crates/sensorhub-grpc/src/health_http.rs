//! The small HTTP listener beside the gRPC port, for orchestrators and load
//! balancers that cannot speak gRPC health: `/healthz` (the process is up)
//! and `/readyz` (it accepts calls; 503 while shutting down); and
//! `/metrics` in the Prometheus text format when the binary supplies a renderer.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    http::{StatusCode, header},
    routing::get,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::server::ServeError;

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

pub(crate) async fn start(
    addr: SocketAddr,
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
    if let Some(metrics) = metrics {
        app = app.route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    // Rendering walks every series: off the async workers.
                    let render = metrics.render.clone();
                    match tokio::task::spawn_blocking(move || render()).await {
                        Ok(body) => (
                            StatusCode::OK,
                            [(header::CONTENT_TYPE, metrics.content_type)],
                            body,
                        ),
                        Err(_) => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [(header::CONTENT_TYPE, "text/plain")],
                            "metrics could not be rendered\n".to_owned(),
                        ),
                    }
                }
            }),
        );
    }
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the HTTP health listener failed");
        }
    });
    Ok((bound, task))
}
