//! Body wrappers that see every frame of a call: the request side tallies
//! messages; the response side also ends the call when the trailers pass
//! (or when the body is dropped early: the peer went away, `CANCELLED`).
//!
//! This is why the layers are right for streams where the ready-made ones
//! are not: a call ends when its trailers are sent, not when the handler
//! returns the response head.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use opentelemetry::Context;
use pin_project_lite::pin_project;

use crate::{
    conventions::grpc_status,
    frames::{FrameParser, Tally},
};

/// gRPC status codes used when a call ends without trailers.
pub(crate) const CANCELLED: i32 = 1;
pub(crate) const UNKNOWN: i32 = 2;
pub(crate) const UNAVAILABLE: i32 = 14;

/// What to do when a call ends: record its metrics and end its span.
pub trait CallEnd {
    /// `status`: the gRPC code; `response`: messages and bytes of the response body.
    fn finish(self, status: i32, response: (u64, u64));

    /// Response messages (and their bytes) have just been sent, for a
    /// recorder that shows a call's progress while it runs.
    fn sent(&self, _messages: (u64, u64)) {}
}

pin_project! {
    /// A body whose messages are tallied into a shared [`Tally`].
    pub(crate) struct CountedBody<B> {
        #[pin]
        inner: B,
        parser: FrameParser,
        tally: Arc<Tally>,
    }
}

impl<B> CountedBody<B> {
    pub(crate) fn new(inner: B, tally: Arc<Tally>) -> Self {
        Self {
            inner,
            parser: FrameParser::default(),
            tally,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.tally.add(this.parser.feed(data));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A response body that ends its call on trailers, end of stream, error or drop.
    pub struct ObservedBody<B, E: CallEnd> {
        #[pin]
        inner: B,
        parser: FrameParser,
        messages: u64,
        bytes: u64,
        // `None` once the call has ended.
        call: Option<E>,
        // The call's OpenTelemetry context, current while the body is polled
        // (streaming handlers produce their messages then).
        otel: Option<Context>,
    }

    impl<B, E: CallEnd> PinnedDrop for ObservedBody<B, E> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(call) = this.call.take() {
                call.finish(CANCELLED, (*this.messages, *this.bytes));
            }
        }
    }
}

impl<B, E: CallEnd> ObservedBody<B, E> {
    pub(crate) fn new(inner: B, call: Option<E>, otel: Option<Context>) -> Self {
        Self {
            inner,
            parser: FrameParser::default(),
            messages: 0,
            bytes: 0,
            call,
            otel,
        }
    }
}

/// An empty body that belongs to no call (an interceptor refused it before
/// it reached the layer).
impl<B: Default, E: CallEnd> Default for ObservedBody<B, E> {
    fn default() -> Self {
        Self::new(B::default(), None, None)
    }
}

impl<B, E: CallEnd> std::fmt::Debug for ObservedBody<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedBody")
            .field("messages", &self.messages)
            .field("bytes", &self.bytes)
            .field("ended", &self.call.is_none())
            .finish_non_exhaustive()
    }
}

impl<B, E> Body for ObservedBody<B, E>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: CallEnd,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let _attached = this.otel.as_ref().map(|otel| otel.clone().attach());
        let polled = this
            .inner
            .poll_frame(cx)
            .map(|frame| frame.map(|result| result.map_err(Into::into)));
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let (messages, bytes) = this.parser.feed(data);
                    *this.messages += messages;
                    *this.bytes += bytes;
                    if messages > 0
                        && let Some(call) = this.call.as_ref()
                    {
                        call.sent((messages, bytes));
                    }
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = this.call.take()
                {
                    let status = grpc_status(trailers).unwrap_or(UNKNOWN);
                    call.finish(status, (*this.messages, *this.bytes));
                }
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(call) = this.call.take() {
                    let status = status_of_error(&**error);
                    call.finish(status, (*this.messages, *this.bytes));
                }
            }
            Poll::Ready(None) => {
                // A gRPC response always ends with trailers; ending without
                // them means the peer broke the protocol.
                if let Some(call) = this.call.take() {
                    call.finish(UNKNOWN, (*this.messages, *this.bytes));
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The gRPC code an error stands for: its own if it is a `tonic::Status`,
/// `UNAVAILABLE` for transport failures.
pub(crate) fn status_of_error(error: &(dyn std::error::Error + 'static)) -> i32 {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(status) = e.downcast_ref::<tonic::Status>() {
            return status.code() as i32;
        }
        source = e.source();
    }
    UNAVAILABLE
}
