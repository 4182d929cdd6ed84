//! One admitted connection's life: served with hyper's HTTP/2 server, its
//! calls counted, and closed with GOAWAY when it stops earning its slot.
//!
//! Why hyper directly and not tonic's `serve_with_incoming`: tonic serves
//! every connection the same way until the whole server shuts down. It has
//! no per-connection idle close, and no way to close one connection
//! gracefully (GOAWAY, in-flight calls finish) on the server's own
//! initiative. Here each connection runs in its own task, which owns its
//! hyper connection and can call `graceful_shutdown` on it when:
//!
//! - it has opened no call within `first_call_timeout` of its handshake, or
//!   has had none open for at least `idle_timeout` after serving some;
//! - its caller failed authentication too often in a row (`auth.rs`);
//! - it has lived for `max_age` (± 10 %, drawn per connection, so a fleet
//!   that connected at once does not reconnect at once): its client opens
//!   a new connection for its next call, which a DNS name, a client-side
//!   balancer or an L4 proxy may place on another replica. gRPC keeps one
//!   connection per client for as long as it works, so without this a
//!   replica added later would get no client that was already connected.
//!   Calls still open then have `max_age_grace` to finish before the
//!   connection is closed under them (none: as long as they take);
//! - the server shuts down (the staged drain in `server.rs`).
//!
//! A closing connection that has had no call open for a whole
//! [`CLOSE_GRACE`] and still has not gone (a client that ignores GOAWAY and
//! never answers the PING that follows it) is dropped; the server's drain
//! bounds the rest.
//!
//! What tonic's own server put around the router is kept: the connection's
//! `ConnectInfo` in every request's extensions (peer address, TLS
//! certificates), `grpc-timeout` on the response head (`deadline.rs`), and
//! tonic's `RecoverError`, which turns an error into a gRPC status.

use std::{
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::{body::Incoming, server::conn::http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::Notify,
};
use tokio_util::sync::CancellationToken;
use tonic::{body::Body, transport::server::Connected};
use tower::{ServiceExt, util::BoxCloneSyncService, util::Oneshot};

use crate::{
    connection_metrics::{
        CLOSED_AUTH_FAILURES, CLOSED_IDLE, CLOSED_MAX_AGE, CLOSED_NEVER_USED, CLOSED_PEER,
        CLOSED_SHUTDOWN, ConnectionMetrics, REFUSED_PREFACE, served_error_reason,
    },
    listener::{Admitted, ConnectionLimits, ServeConnection},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a closing connection with no call open may take to go.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How far a connection's maximum age is drawn from `--max-connection-age`,
/// either way, as a fraction of it.
const MAX_AGE_JITTER: f64 = 0.1;

/// `max_age` moved by a random fraction of itself, up to [`MAX_AGE_JITTER`]
/// either way.
fn jittered(max_age: Duration) -> Duration {
    use rand::Rng as _;
    max_age.mul_f64(rand::rng().random_range(1.0 - MAX_AGE_JITTER..=1.0 + MAX_AGE_JITTER))
}

/// The server's whole call stack (telemetry, policy, budget, router), as
/// every connection shares it.
pub(crate) type SharedService = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// hyper's HTTP/2 settings for every connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Http2Settings {
    pub max_concurrent_streams: u32,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub stream_window: u32,
    pub connection_window: u32,
    pub max_header_list_size: u32,
}

/// Serves admitted connections (see the module documentation).
#[derive(Clone)]
pub(crate) struct Http2Server {
    inner: Arc<Inner>,
}

struct Inner {
    builder: http2::Builder<TokioExecutor>,
    service: SharedService,
    limits: ConnectionLimits,
    /// Cancelled at shutdown: every connection is closed gracefully.
    stop: CancellationToken,
    /// Cancelled at the end of the drain: every connection is dropped.
    force: CancellationToken,
    metrics: ConnectionMetrics,
}

impl Http2Server {
    pub(crate) fn new(
        settings: Http2Settings,
        service: SharedService,
        limits: ConnectionLimits,
        stop: CancellationToken,
        force: CancellationToken,
        metrics: ConnectionMetrics,
    ) -> Self {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .initial_stream_window_size(settings.stream_window)
            .initial_connection_window_size(settings.connection_window)
            .max_concurrent_streams(settings.max_concurrent_streams)
            .keep_alive_interval(settings.keepalive_interval)
            .keep_alive_timeout(settings.keepalive_timeout)
            .max_header_list_size(settings.max_header_list_size);
        Self {
            inner: Arc::new(Inner {
                builder,
                service,
                limits,
                stop,
                force,
                metrics,
            }),
        }
    }

    async fn run<IO>(&self, io: Admitted<IO>)
    where
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IO::ConnectInfo: Clone + Send + Sync + 'static,
    {
        let inner = &self.inner;
        let info = io.connect_info();
        let (preface, preface_deadline) = io.preface();
        let reason = io.close_reason();
        let mut preface_pending = true;
        let state = Arc::new(ConnectionState::new(inner.stop.child_token()));
        let service = ConnectionService {
            inner: inner.service.clone(),
            state: state.clone(),
            info,
        };
        let conn = inner.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let idle = state.idle(inner.limits);
        tokio::pin!(idle);
        let mut closing = false;
        // No call was open at the last `give_up` tick.
        let mut quiet = false;
        let give_up = tokio::time::sleep(Duration::MAX);
        tokio::pin!(give_up);
        let max_age = inner.limits.max_age;
        let aged = tokio::time::sleep(max_age.map_or(Duration::MAX, jittered));
        tokio::pin!(aged);
        // Armed when the connection reached its age, with a grace to end.
        let mut age_grace_armed = false;
        let age_grace = tokio::time::sleep(Duration::MAX);
        tokio::pin!(age_grace);
        loop {
            tokio::select! {
                served = conn.as_mut() => {
                    match served {
                        Ok(()) => reason.set(CLOSED_PEER),
                        Err(e) => {
                            tracing::debug!(error = %e, "connection ended with an error");
                            reason.set(served_error_reason(&e));
                        }
                    }
                    return;
                }
                why = &mut idle, if !closing => {
                    reason.set(why);
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    give_up.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
                }
                _ = state.close.cancelled(), if !closing => {
                    if state.auth_failures.load(Ordering::Relaxed) > 0 && !inner.stop.is_cancelled() {
                        reason.set(CLOSED_AUTH_FAILURES);
                    } else {
                        reason.set(CLOSED_SHUTDOWN);
                    }
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    give_up.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
                }
                _ = &mut aged, if !closing && max_age.is_some() => {
                    tracing::debug!("connection reached --max-connection-age: GOAWAY");
                    reason.set(CLOSED_MAX_AGE);
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    give_up.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
                    if let Some(grace) = inner.limits.max_age_grace {
                        age_grace.as_mut().reset(tokio::time::Instant::now() + grace);
                        age_grace_armed = true;
                    }
                }
                _ = &mut age_grace, if age_grace_armed => {
                    tracing::debug!(
                        open_calls = state.open_calls.load(Ordering::Acquire),
                        "connection past --max-connection-age-grace: closed under its calls"
                    );
                    return;
                }
                _ = &mut give_up, if closing => {
                    // Dropped only after a whole CLOSE_GRACE with no call
                    // open: a call that ended just now may still have its
                    // last frames (a stream's status) to flush.
                    let open = state.open_calls.load(Ordering::Acquire) > 0;
                    if !open && quiet {
                        return;
                    }
                    quiet = !open;
                    give_up.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
                }
                _ = tokio::time::sleep_until(preface_deadline), if preface_pending => {
                    if !preface.is_cancelled() {
                        // No HTTP/2 preface and SETTINGS by the handshake deadline.
                        inner.metrics.refused(REFUSED_PREFACE);
                        reason.set(REFUSED_PREFACE);
                        return;
                    }
                    preface_pending = false;
                }
                _ = preface.cancelled(), if preface_pending => preface_pending = false,
                _ = inner.force.cancelled() => {
                    reason.set(CLOSED_SHUTDOWN);
                    return;
                }
            }
        }
    }
}

impl ServeConnection for Http2Server {
    async fn serve_tls(&self, io: Admitted<tokio_rustls::server::TlsStream<TcpStream>>) {
        self.run(io).await
    }

    async fn serve_plain(&self, io: Admitted<TcpStream>) {
        self.run(io).await
    }
}

/// What one connection's calls share: how many are open, whether it has
/// served any, its failed authentications in a row, and its own close signal.
#[derive(Debug)]
pub(crate) struct ConnectionState {
    open_calls: AtomicUsize,
    calls_started: AtomicU64,
    /// Notified when the last open call ends.
    went_idle: Notify,
    auth_failures: AtomicU32,
    /// The client certificate's name (mutual TLS), read on the first call
    /// without a token (`auth.rs`).
    certificate_name: OnceLock<Option<Box<str>>>,
    /// Cancelled: close this connection gracefully (a child of the server's stop).
    close: CancellationToken,
}

impl ConnectionState {
    fn new(close: CancellationToken) -> Self {
        Self {
            open_calls: AtomicUsize::new(0),
            calls_started: AtomicU64::new(0),
            went_idle: Notify::new(),
            auth_failures: AtomicU32::new(0),
            certificate_name: OnceLock::new(),
            close,
        }
    }

    /// Counts a failed authentication; `limit` in a row close the
    /// connection (GOAWAY). `false`: the limit had already been reached when
    /// this failure was counted, so the caller must answer as for a closing
    /// connection. Counting and deciding are one atomic step, so calls
    /// checked at the same moment on several workers cannot get more than
    /// `limit` "not accepted" answers between them.
    pub(crate) fn authentication_failed(&self, limit: u32) -> bool {
        let before = self.auth_failures.fetch_add(1, Ordering::AcqRel);
        if before.saturating_add(1) >= limit {
            self.close.cancel();
        }
        before < limit
    }

    /// An accepted token ends the run of failures, unless `limit` failures
    /// were counted first (then `false`: the connection is closing and the
    /// call is refused like any other on it). One atomic step, for the same
    /// reason as [`Self::authentication_failed`]: a right guess racing the
    /// fifth wrong one must not get through.
    pub(crate) fn authenticated(&self, limit: u32) -> bool {
        match self
            .auth_failures
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != 0 && n < limit).then_some(0)
            }) {
            Ok(_) => true,
            Err(n) => n < limit,
        }
    }

    /// Whether `limit` authentications in a row have failed: the connection
    /// is closing, and its calls are refused unchecked.
    pub(crate) fn locked_out(&self, limit: u32) -> bool {
        self.auth_failures.load(Ordering::Acquire) >= limit
    }

    /// The client certificate's name, read by `read` the first time it is asked for.
    pub(crate) fn certificate_name(&self, read: impl FnOnce() -> Option<Box<str>>) -> Option<&str> {
        self.certificate_name.get_or_init(read).as_deref()
    }

    /// Resolves once the connection has earned a close: no call within the
    /// first-call timeout, or none open for the idle timeout after serving.
    async fn idle(&self, limits: ConnectionLimits) -> &'static str {
        loop {
            if self.open_calls.load(Ordering::Acquire) > 0 {
                self.went_idle.notified().await;
                continue;
            }
            let started = self.calls_started.load(Ordering::Acquire);
            let (timeout, reason) = if started == 0 {
                (limits.first_call_timeout, CLOSED_NEVER_USED)
            } else {
                (limits.idle_timeout, CLOSED_IDLE)
            };
            tokio::time::sleep(timeout).await;
            if self.open_calls.load(Ordering::Acquire) == 0
                && self.calls_started.load(Ordering::Acquire) == started
            {
                return reason;
            }
        }
    }
}

/// Keeps a call counted as open while its response is being sent.
struct CallGuard(Arc<ConnectionState>);

impl CallGuard {
    fn new(state: &Arc<ConnectionState>) -> Self {
        state.calls_started.fetch_add(1, Ordering::AcqRel);
        state.open_calls.fetch_add(1, Ordering::AcqRel);
        Self(state.clone())
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.0.open_calls.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.went_idle.notify_one();
        }
    }
}

/// The shared stack, seen from one connection.
struct ConnectionService<I> {
    inner: SharedService,
    state: Arc<ConnectionState>,
    info: I,
}

impl<I: Clone + Send + Sync + 'static> hyper::service::Service<Request<Incoming>>
    for ConnectionService<I>
{
    type Response = Response<CallBody>;
    type Error = BoxError;
    type Future = CallFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(self.info.clone());
        request.extensions_mut().insert(self.state.clone());
        CallFuture {
            inner: self.inner.clone().oneshot(request),
            guard: Some(CallGuard::new(&self.state)),
        }
    }
}

pin_project_lite::pin_project! {
    /// A call's response future; the guard moves into the response body.
    struct CallFuture {
        #[pin]
        inner: Oneshot<SharedService, Request<Body>>,
        guard: Option<CallGuard>,
    }
}

impl Future for CallFuture {
    type Output = Result<Response<CallBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(response)) => {
                let guard = this.guard.take();
                Poll::Ready(Ok(response.map(|inner| CallBody {
                    inner,
                    _guard: guard,
                })))
            }
        }
    }
}

/// A response body that keeps its call counted as open until it is dropped.
struct CallBody {
    inner: Body,
    _guard: Option<CallGuard>,
}

impl http_body::Body for CallBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fifty failures counted at once on several threads: exactly `limit`
    /// of them are told "not accepted", and a right token afterwards is
    /// refused too.
    #[test]
    fn racing_failures_get_at_most_the_limit_of_answers() {
        const LIMIT: u32 = 5;
        let state = Arc::new(ConnectionState::new(CancellationToken::new()));
        let answered: u32 = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..50)
                .map(|_| {
                    let state = &state;
                    scope.spawn(move || u32::from(state.authentication_failed(LIMIT)))
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(answered, LIMIT);
        assert!(state.close.is_cancelled());
        assert!(state.locked_out(LIMIT));
        assert!(!state.authenticated(LIMIT));
    }

    /// An accepted token before the limit ends the run of failures.
    #[test]
    fn an_accepted_token_resets_the_run() {
        let state = ConnectionState::new(CancellationToken::new());
        for _ in 0..4 {
            assert!(state.authentication_failed(5));
        }
        assert!(state.authenticated(5));
        for _ in 0..4 {
            assert!(state.authentication_failed(5));
        }
        assert!(!state.close.is_cancelled());
        assert!(state.authentication_failed(5));
        assert!(state.close.is_cancelled());
    }
}
