//! The request body as the call policy hands it to tonic: a streaming
//! request's unchanged, a unary request's (unary and server-streaming
//! methods) checked for a second message.
//!
//! Why: tonic reads a unary request's first message, then drains the body to
//! its end before the handler runs, decoding and dropping whatever else it
//! holds. A client that sent two readings in one `SendSingleReading` had the
//! first stored and the second silently lost. grpc-java answers such a call
//! `INTERNAL` ("Too many requests") without invoking the application, and so
//! does this body: it fails with [`convert::second_request_message`] as soon
//! as a second message's prefix arrives. Because tonic waits for the body's
//! end before it calls the handler, the handler never runs and nothing is
//! stored.
//!
//! Cost: the 5-byte prefixes of a unary request's DATA frames are followed
//! ([`FrameParser`], the same walk the telemetry layer makes), with no
//! allocation; a streaming request's frames pass with one branch.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sensorhub_rpc_telemetry::FrameParser;

use crate::convert;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// A request body; for a unary-request method, one that fails when a
    /// second message begins.
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        unary: Option<UnaryCheck>,
    }
}

/// Where a unary request is in its message stream.
struct UnaryCheck {
    /// `package.Service/Method`, for the refusal.
    method: Arc<str>,
    frames: FrameParser,
    messages: u64,
}

impl<B> RequestBody<B> {
    /// A streaming request's body, passed through.
    pub fn streaming(inner: B) -> Self {
        Self { inner, unary: None }
    }

    /// The body of a call to `method`, whose request is one message.
    pub fn unary(inner: B, method: Arc<str>) -> Self {
        Self {
            inner,
            unary: Some(UnaryCheck {
                method,
                frames: FrameParser::default(),
                messages: 0,
            }),
        }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        if let (Some(check), Some(data)) = (this.unary.as_mut(), frame.data_ref()) {
            check.messages += check.frames.feed(data).0;
            if check.messages > 1 {
                let refusal = convert::second_request_message(&check.method);
                *this.unary = None;
                return Poll::Ready(Some(Err(Box::new(refusal))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
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
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    /// Uncompressed gRPC messages, each behind its 5-byte prefix.
    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        payloads
            .iter()
            .flat_map(|p| [&[0][..], &(p.len() as u32).to_be_bytes(), p].concat())
            .collect()
    }

    /// A body of `wire` cut into DATA frames at `cuts`.
    fn body(wire: &[u8], cuts: &[usize]) -> impl Body<Data = Bytes, Error = BoxError> + use<> {
        let mut bounds = vec![0];
        bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < wire.len()));
        bounds.push(wire.len());
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = bounds
            .windows(2)
            .map(|w| Ok(Frame::data(Bytes::copy_from_slice(&wire[w[0]..w[1]]))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    /// Every byte the body yields, or the status it failed with.
    async fn read(
        body: RequestBody<impl Body<Data = Bytes, Error = BoxError>>,
    ) -> Result<Vec<u8>, tonic::Status> {
        let mut body = std::pin::pin!(body);
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => out.extend_from_slice(frame.data_ref().expect("data")),
                Err(e) => return Err(tonic::Status::from_error(e)),
            }
        }
        Ok(out)
    }

    fn method() -> Arc<str> {
        Arc::from("SensorService/SendSingleReading")
    }

    #[tokio::test]
    async fn one_message_passes_whole_and_split_at_every_byte() {
        let wire = framed(&[b"a reading"]);
        for cut in 0..=wire.len() {
            let got = read(RequestBody::unary(body(&wire, &[cut]), method())).await;
            assert_eq!(got.expect("one message passes"), wire, "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn a_second_message_fails_wherever_the_frames_are_cut() {
        let wire = framed(&[b"first", b"second"]);
        for cut in 0..=wire.len() {
            let refused = read(RequestBody::unary(body(&wire, &[cut]), method()))
                .await
                .expect_err("a second message is refused");
            assert_eq!(refused.code(), tonic::Code::Internal, "cut at {cut}");
            assert!(
                refused
                    .message()
                    .contains("/SensorService/SendSingleReading is unary"),
                "{refused:?}"
            );
        }
        // An empty second message counts too.
        let wire = framed(&[b"first", b""]);
        assert!(
            read(RequestBody::unary(body(&wire, &[]), method()))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_streaming_request_is_not_checked() {
        let wire = framed(&[b"one", b"two", b"three"]);
        let got = read(RequestBody::streaming(body(&wire, &[4, 9]))).await;
        assert_eq!(got.expect("a stream of messages"), wire);
    }
}
