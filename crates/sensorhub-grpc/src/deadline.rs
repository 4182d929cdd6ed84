//! A call's deadline (`grpc-timeout`), on its response head and on its
//! streamed response.
//!
//! The head: [`HeadDeadline`] gives up on a response that is not ready
//! when the caller's deadline passes, with tonic's own `TimeoutExpired`
//! (which tonic's `RecoverError` reports as `CANCELLED`, "Timeout
//! expired"), exactly as tonic's server does. Its layer is private to
//! tonic's `serve`, which this server does not use (`connection.rs`).
//! This covers unary and client-streaming calls.
//!
//! A server-streaming or bidirectional response is a stream that nothing
//! times after its head: a follow stream with a deadline would run
//! forever. [`DeadlineStream`] ends such a response with
//! `DEADLINE_EXCEEDED` when the caller's deadline passes, and drops the
//! inner stream, so whatever feeds it (the history reader, the chat loop)
//! sees its receiver gone and stops.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{Stream, StreamExt};
use http::HeaderMap;
use tokio::time::Sleep;
use tonic::{Status, TimeoutExpired, metadata::MetadataMap};
use tower::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The deadline a call carries in `grpc-timeout`, if any (and if well
/// formed: at most 8 digits and a unit, as the gRPC HTTP/2 protocol says).
pub(crate) fn requested_timeout(metadata: &MetadataMap) -> Option<Duration> {
    requested_timeout_in(metadata.as_ref())
}

/// The same, from the request's headers.
fn requested_timeout_in(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Fails a response future that outlives the call's `grpc-timeout`.
#[derive(Debug, Clone)]
pub(crate) struct HeadDeadline<S> {
    inner: S,
}

impl<S> HeadDeadline<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> Service<http::Request<B>> for HeadDeadline<S>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = HeadDeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let expired = requested_timeout_in(request.headers()).map(tokio::time::sleep);
        HeadDeadlineFuture {
            inner: self.inner.call(request),
            expired,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`HeadDeadline`].
    pub(crate) struct HeadDeadlineFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        expired: Option<Sleep>,
    }
}

impl<F, T, E> Future for HeadDeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(done) = this.inner.poll(cx) {
            return Poll::Ready(done.map_err(Into::into));
        }
        match this.expired.as_pin_mut().map(|expired| expired.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(TimeoutExpired(()).into())),
            _ => Poll::Pending,
        }
    }
}

/// `stream`, ended with `DEADLINE_EXCEEDED` once `timeout` has passed.
pub(crate) fn limit<T: Send + 'static>(
    stream: BoxStream<T>,
    timeout: Option<Duration>,
) -> BoxStream<T> {
    match timeout {
        None => stream,
        Some(timeout) => Box::pin(DeadlineStream {
            inner: Some(stream),
            expired: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }),
    }
}

struct DeadlineStream<T> {
    /// `None` once the stream has ended, by itself or by the deadline.
    inner: Option<BoxStream<T>>,
    expired: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl<T> Stream for DeadlineStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.poll_next_unpin(cx) {
            Poll::Ready(None) => {
                self.inner = None;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(item)) => return Poll::Ready(Some(item)),
            Poll::Pending => {}
        }
        if self.expired.as_mut().poll(cx).is_ready() {
            self.inner = None;
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "the call's deadline ({:?}, from grpc-timeout) passed; the stream ends here",
                self.timeout
            )))));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values_parse_and_bad_ones_are_ignored() {
        let parse = |value: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("grpc-timeout", value.parse().unwrap());
            requested_timeout(&metadata)
        };
        assert_eq!(parse("700m"), Some(Duration::from_millis(700)));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(requested_timeout(&MetadataMap::new()), None);
    }
}
