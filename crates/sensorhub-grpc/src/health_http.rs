//! The small HTTP listener beside the gRPC port, for orchestrators and load
//! balancers that cannot speak gRPC health: `/healthz` (the process is up)
//! and `/readyz` (it accepts calls; 503 while shutting down).

use std::net::SocketAddr;

use axum::{Router, http::StatusCode, routing::get};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::server::ServeError;

pub(crate) async fn start(
    addr: SocketAddr,
    draining: CancellationToken,
    stop: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let app = Router::new()
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
