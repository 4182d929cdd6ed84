//! Transparent retry of calls that never left the client (gRFC A6's
//! "transparent retry"), which grpc-go and grpc-java do and tonic does not.
//!
//! Why: a server that sends GOAWAY (`--max-connection-age`, a graceful
//! shutdown) races the client's next call. hyper's client drops the calls
//! still queued for that connection with "operation was canceled: connection
//! closed", although none of their bytes was written; a replica that has
//! just died fails calls queued for it with a connect error the same way.
//! Such a call can be sent again, to a fresh connection or another replica,
//! whatever the method: the server never saw its message.
//!
//! How "never left" is known: the request body is handed to the transport
//! through a [`SharedBody`], and the call is retried only if no attempt
//! ever polled it. A request's message is in its body, so a server can act
//! on no call whose body was never read; a call whose body was polled, even
//! if it then failed, is never retried (it may have been stored).
//!
//! Each attempt is reported to the client layer above through the
//! [`CallAttempts`] handle it puts in the request's extensions: the layer
//! records each as an A66 attempt and, when switched on, gRFC A96's
//! `grpc.client.call.transparent_retries` and `.retry_delay` at the call's
//! end. The time between attempts (A96's retry delay) is only the wait for
//! the channel's readiness: the retry waits for nothing else, and tonic's
//! channel is a buffer whose worker connects, so a new connection is made
//! within the next attempt (as a gRPC attempt includes its pick).
//!
//! Invariant: a call is sent again only when its body is untouched, and at
//! most [`MAX_ATTEMPTS`] times in all.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use sensorhub_rpc_telemetry::CallAttempts;
use tonic::body::Body;
use tower::{Service, ServiceExt as _};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Attempts per call, the first included. A call refused by a connection
/// that was closing gets its second attempt on a new one; the third covers
/// a balancer that picked a replica that is down.
pub const MAX_ATTEMPTS: u32 = 3;

/// Retries, on `S`, a call whose request body no attempt has read.
#[derive(Debug, Clone)]
pub struct UnsentRetry<S> {
    inner: S,
}

impl<S> UnsentRetry<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, ResBody> Service<Request<Body>> for UnsentRetry<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ResBody>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The service made ready by `poll_ready` serves the first attempt;
        // a fresh clone stays behind for the next call.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = request.into_parts();
        let body = SharedBody::new(body);
        let attempts = parts.extensions.get::<CallAttempts>().cloned();
        Box::pin(async move {
            let mut attempt = 1;
            loop {
                let request = Request::from_parts(parts.clone(), Body::new(body.clone()));
                let error: BoxError = match service.call(request).await {
                    Ok(response) => return Ok(response),
                    Err(error) => error.into(),
                };
                if attempt >= MAX_ATTEMPTS || !body.untouched() {
                    return Err(error);
                }
                attempt += 1;
                tracing::debug!(%error, attempt, "call never sent; sending it again");
                if let Some(attempts) = &attempts {
                    attempts.retrying(&*error);
                }
                service.ready().await.map_err(Into::into)?;
                if let Some(attempts) = &attempts {
                    attempts.transparent_retry();
                }
            }
        })
    }
}

/// A request body shared by a call's attempts: the first one to read it
/// takes it, and then the call can no longer be retried.
#[derive(Debug)]
struct SharedBody {
    shared: Arc<Mutex<Option<Body>>>,
    /// Taken out of `shared` by this attempt's first read.
    taken: Option<Body>,
}

/// Another attempt's handle on the same body (not yet read by it).
impl Clone for SharedBody {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            taken: None,
        }
    }
}

impl SharedBody {
    fn new(body: Body) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Some(body))),
            taken: None,
        }
    }

    /// No attempt has read the body.
    fn untouched(&self) -> bool {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn with_body<T>(&self, f: impl FnOnce(&Body) -> T, otherwise: T) -> T {
        match &self.taken {
            Some(body) => f(body),
            None => match &*self.shared.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(body) => f(body),
                None => otherwise,
            },
        }
    }
}

impl http_body::Body for SharedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if self.taken.is_none() {
            let body = self.shared.lock().unwrap_or_else(|e| e.into_inner()).take();
            match body {
                Some(body) => self.taken = Some(body),
                // Attempts run one after another, and a read body ends
                // the retries: no second reader can get here.
                None => {
                    return Poll::Ready(Some(Err(tonic::Status::internal(
                        "request body read by an earlier attempt",
                    ))));
                }
            }
        }
        let body = self.taken.as_mut().expect("taken above");
        Pin::new(body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.with_body(http_body::Body::is_end_stream, true)
    }

    fn size_hint(&self) -> SizeHint {
        self.with_body(http_body::Body::size_hint, SizeHint::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A transport that fails its first `fail` calls, reading the body
    /// first when `read` says so, and answers the rest with the body it read.
    #[derive(Clone)]
    struct Flaky {
        calls: Arc<AtomicU32>,
        fail: u32,
        read: bool,
    }

    impl Service<Request<Body>> for Flaky {
        type Response = Response<Bytes>;
        type Error = BoxError;
        type Future = BoxFuture<'static, Result<Response<Bytes>, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<Body>) -> Self::Future {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let (fail, read) = (n < self.fail, self.read);
            Box::pin(async move {
                if fail && !read {
                    return Err("connection closed".into());
                }
                let body = request.into_body().collect().await?.to_bytes();
                if fail {
                    return Err("reset after the body".into());
                }
                Ok(Response::new(body))
            })
        }
    }

    async fn call(fail: u32, read: bool) -> (Result<Bytes, String>, u32) {
        let calls = Arc::new(AtomicU32::new(0));
        let mut service = UnsentRetry::new(Flaky {
            calls: calls.clone(),
            fail,
            read,
        });
        let request = Request::new(Body::new(http_body_util::Full::new(Bytes::from_static(
            b"reading",
        ))));
        let result = service
            .ready()
            .await
            .unwrap()
            .call(request)
            .await
            .map(Response::into_body)
            .map_err(|e| e.to_string());
        (result, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_call_never_sent_is_sent_again_with_its_whole_body() {
        assert_eq!(
            call(2, false).await,
            (Ok(Bytes::from_static(b"reading")), 3)
        );
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let (result, calls) = call(5, false).await;
        assert_eq!(result, Err("connection closed".to_owned()));
        assert_eq!(calls, MAX_ATTEMPTS);
    }

    #[tokio::test]
    async fn a_call_whose_body_was_read_is_not_sent_again() {
        assert_eq!(
            call(1, true).await,
            (Err("reset after the body".to_owned()), 1)
        );
    }
}
