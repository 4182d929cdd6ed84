//! `GrpcServerLayer::with_live` around a plain tower service: a call is in
//! flight from its first header to its trailers, with the message counts the
//! body wrappers see growing while it runs; it is counted in the rpcz table
//! when it ends; a failed call without a recorded span is kept among the
//! trace ring's errors.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, channel::Channel};
use opentelemetry::{global::ObjectSafeTracerProvider, trace::noop::NoopTracerProvider};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use sensorhub_rpc_telemetry::{GrpcServerLayer, LiveRecorders, SemconvStability, live::TraceRing};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::recorded::{
    answers_once_with, answers_trailers_only, call, message, trailers_only_call,
};

const CHAT: &str = "Test/Chat";
const UNARY: &str = "Test/Unary";

fn trailers(code: u16) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(code));
    trailers
}

fn layer(live: &LiveRecorders) -> GrpcServerLayer {
    let tracers: &dyn ObjectSafeTracerProvider = &NoopTracerProvider::new();
    GrpcServerLayer::with_providers(
        [CHAT, UNARY],
        tracers,
        &SdkMeterProvider::default(),
        SemconvStability::default(),
        None,
    )
    .with_live(live.clone())
}

/// A chat: the handler reads request messages while the response streams.
/// Both counts grow in the snapshot while the call runs; the trailers
/// remove it and count it.
#[tokio::test]
async fn a_streaming_call_is_in_flight_with_growing_counts_until_its_trailers() {
    let live = LiveRecorders::new([CHAT, UNARY], TraceRing::new());
    let (mut requests, request_body) = Channel::<Bytes>::new(4);
    let (mut responses, response_body) = Channel::<Bytes>::new(4);
    let (read_tx, mut read_rx) = tokio::sync::mpsc::channel::<()>(4);
    let mut response_body = Some(response_body);
    let mut service = layer(&live).layer(service_fn(move |request: Request<tonic::body::Body>| {
        let body = response_body.take().expect("one call");
        let read_tx = read_tx.clone();
        tokio::spawn(async move {
            let mut inbound = request.into_body();
            while let Some(Ok(_frame)) = inbound.frame().await {
                let _ = read_tx.send(()).await;
            }
        });
        async move { Ok::<_, std::convert::Infallible>(Response::new(body)) }
    }));
    let request = Request::builder()
        .uri(format!("http://localhost/{CHAT}"))
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::new(request_body))
        .unwrap();
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    let mut body = response.into_body();

    let counts = || {
        let snapshot = live.calls.snapshot(10);
        assert_eq!(snapshot.total, 1, "{snapshot:?}");
        let call = &snapshot.calls[0];
        assert_eq!(call.method, CHAT);
        (call.received, call.sent)
    };
    assert_eq!(counts(), (0, 0));
    for round in 1..=3u64 {
        requests.send_data(message(b"reading")).await.unwrap();
        read_rx.recv().await.unwrap();
        responses
            .send_data(message(b"Received 21.5"))
            .await
            .unwrap();
        body.frame().await.unwrap().unwrap();
        assert_eq!(counts(), (round, round));
    }
    assert!(
        live.rpcz.snapshot(Instant::now()).rows.is_empty(),
        "not ended yet"
    );

    responses.send_trailers(trailers(0)).await.unwrap();
    assert!(body.frame().await.unwrap().unwrap().is_trailers());
    assert!(live.calls.is_empty(), "gone once its trailers passed");
    let rows = live.rpcz.snapshot(Instant::now()).rows;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].method.as_str(), rows[0].status), (CHAT, "OK"));
    assert_eq!(rows[0].minute.calls, 1);
}

/// A call refused in its head (trailers-only), with no recording tracer:
/// counted as its status, and kept among the errors without a span tree.
#[tokio::test]
async fn a_failed_call_without_a_recorded_span_is_kept_among_the_errors() {
    let live = LiveRecorders::new([CHAT, UNARY], TraceRing::new());
    let mut service = layer(&live).layer(answers_trailers_only(3));
    trailers_only_call(&mut service, &format!("/{UNARY}")).await;

    assert!(live.calls.is_empty());
    let rows = live.rpcz.snapshot(Instant::now()).rows;
    assert_eq!(
        (rows[0].method.as_str(), rows[0].status),
        (UNARY, "INVALID_ARGUMENT")
    );
    assert!((rows[0].method_error_rate_minute - 1.0).abs() < 1e-9);
    let errors = live.traces.snapshot().errors;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].name, UNARY);
    assert_eq!(errors[0].status.as_deref(), Some("INVALID_ARGUMENT"));
    assert!(errors[0].duration < Duration::from_secs(1));
    assert!(live.traces.get(errors[0].id).unwrap().root_only);
}

/// A call whose body is dropped (the client went away) leaves the registry.
#[tokio::test]
async fn a_cancelled_call_leaves_the_registry() {
    let live = LiveRecorders::new([CHAT, UNARY], TraceRing::new());
    let (_responses, response_body) = Channel::<Bytes>::new(4);
    let mut service = layer(&live).layer(answers_once_with(response_body));
    let response = call(&mut service, &format!("/{CHAT}")).await;
    assert_eq!(live.calls.len(), 1);
    drop(response);
    assert!(live.calls.is_empty());
    assert_eq!(
        live.rpcz.snapshot(Instant::now()).rows[0].status,
        "CANCELLED"
    );
}
