//! An in-process OTLP receiver for integration tests.
//!
//! Asserting on telemetry through an exporter's in-memory test double only
//! proves that the SDK was called; it says nothing about what actually goes
//! over the wire. [`OtlpReceiver`] is a real, minimal OTLP collector that a
//! test starts next to the code under test: it listens on loopback for
//! OTLP/gRPC (`grpc.rs`: the three `Export` services, gzip and zstd accepted)
//! and for OTLP/HTTP (`http.rs`: `POST /v1/traces`, `/v1/metrics`, `/v1/logs`,
//! protobuf or JSON, gzip, zstd or plain), decodes every export request with
//! `opentelemetry-proto`'s own types, and keeps the flattened spans, metrics
//! and log records (`received.rs`) so the test can assert on exactly what an
//! exporter sent, including that a secret appears nowhere
//! ([`OtlpReceiver::all_text`]).
//!
//! Both servers write into one shared store (`inbox.rs`) guarded by a
//! `std::sync::Mutex` that is only ever held for short, synchronous sections.

mod grpc;
mod http;
mod inbox;
mod received;
#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use inbox::{Inbox, Store};
pub use received::{
    HistogramPoint, ItemCounts, ReceivedLog, ReceivedMetric, ReceivedSpan, RequestCounts,
};

/// Largest export request accepted, compressed or not, on either protocol.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// How often [`OtlpReceiver::wait_for`] re-evaluates its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A running in-process OTLP collector: one OTLP/gRPC server and one
/// OTLP/HTTP (protobuf) server on loopback, sharing what they received.
///
/// Start it with [`OtlpReceiver::start`], point the exporter under test at
/// [`grpc_endpoint`](OtlpReceiver::grpc_endpoint) or
/// [`http_endpoint`](OtlpReceiver::http_endpoint), then read back
/// [`spans`](OtlpReceiver::spans), [`metrics`](OtlpReceiver::metrics) and
/// [`logs`](OtlpReceiver::logs), usually through
/// [`wait_for`](OtlpReceiver::wait_for) because exporters batch. Both servers
/// stop when the receiver is dropped or [`stop`](OtlpReceiver::stop)ped.
#[derive(Debug)]
pub struct OtlpReceiver {
    inbox: Inbox,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    grpc_shutdown: Option<oneshot::Sender<()>>,
    http_shutdown: Option<oneshot::Sender<()>>,
}

impl OtlpReceiver {
    /// Binds two fresh ports on `127.0.0.1` and starts serving OTLP/gRPC on
    /// one and OTLP/HTTP on the other, as tasks of the current tokio runtime.
    ///
    /// # Errors
    ///
    /// Fails if a loopback port cannot be bound.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime.
    pub async fn start() -> std::io::Result<OtlpReceiver> {
        Self::serve(Inbox::keeping()).await
    }

    /// Like [`OtlpReceiver::start`], for benchmarks: decodes and answers
    /// every export request as before, but keeps only
    /// [`requests`](OtlpReceiver::requests) and [`items`](OtlpReceiver::items)
    /// (spans, metrics, log records and their text are not kept). Keeping
    /// them is the test receiver's own work, more CPU per span than the
    /// exporter under test spends, and a benchmark on shared cores would
    /// charge it to the server it measures.
    ///
    /// # Errors
    ///
    /// Fails if a loopback port cannot be bound.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime.
    pub async fn start_counting() -> std::io::Result<OtlpReceiver> {
        Self::serve(Inbox::counting()).await
    }

    async fn serve(inbox: Inbox) -> std::io::Result<OtlpReceiver> {
        let grpc_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let grpc_addr = grpc_listener.local_addr()?;
        let http_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let http_addr = http_listener.local_addr()?;

        let (grpc_shutdown, grpc_stop) = oneshot::channel::<()>();
        let grpc_routes = grpc::router(&inbox);
        let incoming =
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
        tokio::spawn(async move {
            let stopped = async {
                // A dropped sender means the receiver is gone: stop as well.
                let _ = grpc_stop.await;
            };
            let served = tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(grpc_routes, incoming, stopped)
                .await;
            if let Err(error) = served {
                eprintln!("otlp_receiver: the OTLP/gRPC server failed: {error}");
            }
        });

        let (http_shutdown, http_stop) = oneshot::channel::<()>();
        let app = http::router(&inbox);
        tokio::spawn(async move {
            let stopped = async {
                let _ = http_stop.await;
            };
            if let Err(error) = axum::serve(http_listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                eprintln!("otlp_receiver: the OTLP/HTTP server failed: {error}");
            }
        });

        Ok(OtlpReceiver {
            inbox,
            grpc_addr,
            http_addr,
            grpc_shutdown: Some(grpc_shutdown),
            http_shutdown: Some(http_shutdown),
        })
    }

    /// The OTLP/gRPC endpoint, `http://127.0.0.1:PORT`, as expected by a tonic
    /// channel or `OTEL_EXPORTER_OTLP_ENDPOINT` with protocol `grpc`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// The OTLP/HTTP base endpoint, `http://127.0.0.1:PORT`, without a path:
    /// the signals are served at `/v1/traces`, `/v1/metrics` and `/v1/logs`
    /// (what an exporter appends to `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Every span received so far, over either protocol, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.inbox.lock().spans.clone()
    }

    /// Every metric received so far (one entry per `Metric` message of every
    /// export request, so a metric exported twice appears twice).
    pub fn metrics(&self) -> Vec<ReceivedMetric> {
        self.inbox.lock().metrics.clone()
    }

    /// Every log record received so far, over either protocol, in arrival
    /// order.
    pub fn logs(&self) -> Vec<ReceivedLog> {
        self.inbox.lock().logs.clone()
    }

    /// How many export requests were accepted, per signal and per protocol.
    /// Rejected requests (bad media type, undecodable body) are not counted.
    pub fn requests(&self) -> RequestCounts {
        self.inbox.lock().counts
    }

    /// How many spans, metrics and log records were accepted, over either
    /// protocol (also by a counting receiver).
    pub fn items(&self) -> ItemCounts {
        self.inbox.lock().items
    }

    /// Forgets everything received so far, including the request counts.
    pub fn clear(&self) {
        *self.inbox.lock() = Store::default();
    }

    /// Calls `what` now and then every 50 ms until it returns `Some`, and
    /// returns that; returns `None` once `timeout` has passed (after a last
    /// try).
    ///
    /// `what` must not call [`wait_for`](Self::wait_for) itself; calling the
    /// other accessors is what it is for:
    /// `rx.wait_for(t, |rx| rx.spans().into_iter().find(|s| s.name() == "x"))`.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut what: impl FnMut(&OtlpReceiver) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = what(self) {
                return Some(found);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return None;
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        }
    }

    /// Every field name and value of every request received, one to a line
    /// (from each request's OTLP/JSON form, strings unescaped), so that a
    /// test can check that a secret appears nowhere in the exported
    /// telemetry: names, attributes of every kind, bodies, status messages,
    /// units, descriptions, scopes and resources alike.
    pub fn all_text(&self) -> String {
        self.inbox.lock().text.clone()
    }

    /// Stops both servers: they stop accepting connections at once and
    /// finish the requests in flight in the background. Dropping the
    /// receiver does the same.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.grpc_shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(stop) = self.http_shutdown.take() {
            let _ = stop.send(());
        }
    }
}
