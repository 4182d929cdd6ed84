//! Deadlines for streamed responses.
//!
//! tonic honours a call's `grpc-timeout` until the response head is ready,
//! which covers unary and client-streaming calls. A server-streaming or
//! bidirectional response is a stream that tonic never times: a follow
//! stream with a deadline would run forever. [`DeadlineStream`] ends such a
//! response with `DEADLINE_EXCEEDED` when the caller's deadline passes, and
//! drops the inner stream, so whatever feeds it (the history reader, the
//! chat loop) sees its receiver gone and stops.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{Stream, StreamExt};
use tokio::time::Sleep;
use tonic::{Status, metadata::MetadataMap};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The deadline a call carries in `grpc-timeout`, if any (and if well
/// formed: at most 8 digits and a unit, as the gRPC HTTP/2 protocol says).
pub(crate) fn requested_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
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
