//! `GrpcClientLayer`: when a client call ends, with which status, and what
//! it is recorded as (A66's `grpc.client.*` with `grpc.target`, the
//! semconv client span); the attempts a retry layer beneath reports (A66
//! per attempt, A96's retry metrics when switched on).

use std::collections::BTreeMap;

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Empty, channel::Channel};
use opentelemetry::{Value, trace::SpanKind};
use sensorhub_rpc_telemetry::{
    CallAttempts, GrpcClientLayer, RetryMetrics, SemconvStability,
    conventions::{a66, a96, semconv},
};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::recorded::{
    Recorded, answers_once_with, answers_trailers_only, attributes_of, call, message, request,
    span_attribute, trailers, trailers_only_call,
};

const METHOD: &str = "Test/Stream";
const TARGET: &str = "https://sensors.example:50051";

fn layer(recorded: &Recorded) -> GrpcClientLayer {
    GrpcClientLayer::with_providers(
        TARGET,
        &recorded.tracers,
        &recorded.meters,
        SemconvStability::default(),
    )
}

/// What A66 attaches to a finished attempt.
fn attempt(status: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (a66::METHOD.to_owned(), METHOD.to_owned()),
        (a66::TARGET.to_owned(), TARGET.to_owned()),
        (a66::STATUS.to_owned(), status.to_owned()),
    ])
}

/// A streaming call: its client span and attempt end when the response
/// trailers arrive, with the trailers' status, and every A66 instrument
/// carries `grpc.target`.
#[tokio::test]
async fn a_streaming_call_ends_on_its_trailers_with_their_status() {
    let recorded = Recorded::new();
    let (mut sender, body) = Channel::<Bytes>::new(4);
    let mut service = layer(&recorded).layer(answers_once_with(body));
    let response = call(&mut service, &format!("/{METHOD}")).await;
    assert_eq!(
        recorded.points(a66::CLIENT_ATTEMPT_STARTED),
        [(
            BTreeMap::from([
                (a66::METHOD.to_owned(), METHOD.to_owned()),
                (a66::TARGET.to_owned(), TARGET.to_owned()),
            ]),
            1
        )]
    );
    let mut body = response.into_body();
    sender.send_data(message(b"reading")).await.unwrap();
    assert!(body.frame().await.unwrap().unwrap().is_data());
    assert!(
        recorded.spans().is_empty(),
        "the span ended before the trailers"
    );
    assert!(recorded.points(a66::CLIENT_ATTEMPT_DURATION).is_empty());

    // NOT_FOUND, in the trailers only: the head said nothing of it.
    sender.send_trailers(trailers(5)).await.unwrap();
    assert!(body.frame().await.unwrap().unwrap().is_trailers());
    let spans = recorded.spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    let span = &spans[0];
    assert_eq!(span.name, METHOD);
    assert_eq!(span.span_kind, SpanKind::Client);
    assert_eq!(
        span_attribute(span, semconv::RPC_RESPONSE_STATUS_CODE),
        Some(Value::from("NOT_FOUND"))
    );
    assert_eq!(
        span_attribute(span, semconv::RESPONSE_MESSAGES),
        Some(Value::I64(1))
    );
    assert_eq!(
        span_attribute(span, semconv::SERVER_ADDRESS),
        Some(Value::from("sensors.example"))
    );
    assert_eq!(
        span_attribute(span, semconv::SERVER_PORT),
        Some(Value::I64(50051))
    );
    assert_eq!(
        span.status,
        opentelemetry::trace::Status::error("NOT_FOUND"),
        "a client span is an error for every status but OK"
    );
    for instrument in [
        a66::CLIENT_ATTEMPT_DURATION,
        a66::CLIENT_CALL_DURATION,
        a66::CLIENT_RCVD_SIZE,
        a66::CLIENT_SENT_SIZE,
    ] {
        assert_eq!(
            recorded.points(instrument),
            [(attempt("NOT_FOUND"), 1)],
            "{instrument}"
        );
    }
}

/// A trailers-only answer (the status in the head, as a refused call gets)
/// ends the call with the head, with that status, once.
#[tokio::test]
async fn a_trailers_only_answer_ends_with_the_head() {
    let recorded = Recorded::new();
    let mut service = layer(&recorded).layer(answers_trailers_only(16));
    let response = call(&mut service, &format!("/{METHOD}")).await;
    let spans = recorded.spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(
        span_attribute(&spans[0], semconv::RPC_RESPONSE_STATUS_CODE),
        Some(Value::from("UNAUTHENTICATED"))
    );
    assert_eq!(
        recorded.points(a66::CLIENT_ATTEMPT_DURATION),
        [(attempt("UNAUTHENTICATED"), 1)]
    );
    let mut body = response.into_body();
    assert!(body.frame().await.is_none());
    drop(body);
    assert_eq!(recorded.spans().len(), 1, "the call ended twice");
    // Cumulative: still the one attempt.
    assert_eq!(
        recorded.points(a66::CLIENT_ATTEMPT_DURATION),
        [(attempt("UNAUTHENTICATED"), 1)],
        "the attempt was recorded twice"
    );
}

/// The caller dropped the response body before its trailers (it stopped
/// reading a stream): the call ends as CANCELLED.
#[tokio::test]
async fn a_dropped_body_is_cancelled() {
    let recorded = Recorded::new();
    let (mut sender, body) = Channel::<Bytes>::new(4);
    let mut service = layer(&recorded).layer(answers_once_with(body));
    let response = call(&mut service, &format!("/{METHOD}")).await;
    let mut body = response.into_body();
    sender.send_data(message(b"partial")).await.unwrap();
    body.frame().await.unwrap().unwrap();
    assert!(recorded.spans().is_empty());
    drop(body);

    let spans = recorded.spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(
        span_attribute(&spans[0], semconv::RPC_RESPONSE_STATUS_CODE),
        Some(Value::from("CANCELLED"))
    );
    assert_eq!(
        recorded.points(a66::CLIENT_CALL_DURATION),
        [(attempt("CANCELLED"), 1)]
    );
}

/// A call given up before the response head (its future dropped, as a
/// deadline or a signal does) is CANCELLED too.
#[tokio::test]
async fn a_call_dropped_before_its_head_is_cancelled() {
    let recorded = Recorded::new();
    let mut service = layer(&recorded).layer(service_fn(|_request| {
        std::future::pending::<Result<Response<Empty<Bytes>>, std::convert::Infallible>>()
    }));
    let call = service
        .ready()
        .await
        .unwrap()
        .call(request(&format!("/{METHOD}")));
    let waited = tokio::time::timeout(std::time::Duration::from_millis(20), call).await;
    assert!(waited.is_err(), "the head never comes");
    assert_eq!(
        recorded.points(a66::CLIENT_ATTEMPT_DURATION),
        [(attempt("CANCELLED"), 1)]
    );
}

/// The client layer in the three modes: the same status keys, and
/// `rpc.client.call.duration` carries `server.address`/`server.port`
/// (conditionally required since v1.40.0).
#[tokio::test]
async fn the_client_emits_the_semconv_mode_it_is_given() {
    for (stability, statuses) in [
        (SemconvStability::V1_40, &["rpc.response.status_code"][..]),
        (SemconvStability::Latest, &["rpc.status_code"][..]),
        (
            SemconvStability::Duplicate,
            &["rpc.response.status_code", "rpc.status_code"][..],
        ),
    ] {
        let recorded = Recorded::new();
        let layer =
            GrpcClientLayer::with_providers(TARGET, &recorded.tracers, &recorded.meters, stability);
        let mut service = layer.layer(answers_trailers_only(5));
        trailers_only_call(&mut service, &format!("/{METHOD}")).await;

        let spans = recorded.spans();
        assert_eq!(spans.len(), 1, "{stability:?}: {spans:?}");
        for key in ["rpc.response.status_code", "rpc.status_code"] {
            let expected = statuses.contains(&key).then(|| Value::from("NOT_FOUND"));
            assert_eq!(
                span_attribute(&spans[0], key),
                expected,
                "{stability:?}: {key}"
            );
        }
        let mut expected = vec![
            ("rpc.system.name", "grpc"),
            ("rpc.method", METHOD),
            ("error.type", "NOT_FOUND"),
            ("server.address", "sensors.example"),
            ("server.port", "50051"),
        ];
        expected.extend(statuses.iter().map(|key| (*key, "NOT_FOUND")));
        assert_eq!(
            recorded.points(semconv::CLIENT_CALL_DURATION),
            [(attributes_of(&expected), 1)],
            "{stability:?}"
        );
    }
}

/// How long the retry layer below waits for a connection before each new attempt.
const BETWEEN_ATTEMPTS: std::time::Duration = std::time::Duration::from_millis(40);

/// Beneath the layer, what `sensorhub-grpc`'s transparent retry does to a
/// call that two attempts failed to send: reports each failed attempt, waits
/// for the transport, reports the next; the third is answered OK.
fn retried_twice() -> impl Service<
    http::Request<tonic::body::Body>,
    Response = Response<Empty<Bytes>>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    service_fn(|request: http::Request<tonic::body::Body>| async move {
        let attempts = request
            .extensions()
            .get::<CallAttempts>()
            .cloned()
            .expect("the layer's handle on the call's attempts");
        for _ in 0..2 {
            attempts.retrying(&std::io::Error::other("connection closed"));
            tokio::time::sleep(BETWEEN_ATTEMPTS).await;
            attempts.transparent_retry();
        }
        let mut response = Response::new(Empty::<Bytes>::new());
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from(0u16));
        Ok(response)
    })
}

fn by_attributes(points: Vec<crate::recorded::Point>) -> BTreeMap<BTreeMap<String, String>, u64> {
    points.into_iter().collect()
}

/// Each attempt is an A66 attempt: three started, two ended UNAVAILABLE
/// (the transport's error) and one OK, in one call. With A96's metrics on,
/// the call records 2 transparent retries and, as its retry delay, the
/// time the retry layer waited between attempts.
#[tokio::test]
async fn transparent_retries_are_attempts_and_a96_records_them_once_per_call() {
    let recorded = Recorded::new();
    let mut service = layer(&recorded)
        .with_retry_metrics(RetryMetrics {
            transparent_retries: true,
            retry_delay: true,
        })
        .layer(retried_twice());
    trailers_only_call(&mut service, &format!("/{METHOD}")).await;

    let call = attributes_of(&[(a66::METHOD, METHOD), (a66::TARGET, TARGET)]);
    assert_eq!(
        recorded.points(a66::CLIENT_ATTEMPT_STARTED),
        [(call.clone(), 3)]
    );
    assert_eq!(
        by_attributes(recorded.points(a66::CLIENT_ATTEMPT_DURATION)),
        BTreeMap::from([(attempt("UNAVAILABLE"), 2), (attempt("OK"), 1)])
    );
    assert_eq!(
        by_attributes(recorded.points(a66::CLIENT_SENT_SIZE)),
        BTreeMap::from([(attempt("UNAVAILABLE"), 2), (attempt("OK"), 1)])
    );
    assert_eq!(
        recorded.points(a66::CLIENT_CALL_DURATION),
        [(attempt("OK"), 1)],
        "one call"
    );
    assert_eq!(
        recorded.histogram(a96::CLIENT_CALL_TRANSPARENT_RETRIES),
        [(call.clone(), 1, 2.0)]
    );
    let delay = recorded.histogram(a96::CLIENT_CALL_RETRY_DELAY);
    assert_eq!(delay.len(), 1, "{delay:?}");
    let (attributes, count, seconds) = &delay[0];
    assert_eq!((attributes, *count), (&call, 1));
    let waited = 2.0 * BETWEEN_ATTEMPTS.as_secs_f64();
    assert!(
        (waited..waited + 1.0).contains(seconds),
        "retry delay {seconds} s for two waits of {BETWEEN_ATTEMPTS:?}"
    );
}

/// A96's metrics are off unless switched on (A79), while the attempts are
/// still counted; and a call with no retry records none of them even when
/// they are on (A96 reports no 0).
#[tokio::test]
async fn a96_records_nothing_when_off_or_when_there_was_no_retry() {
    let recorded = Recorded::new();
    let mut service = layer(&recorded).layer(retried_twice());
    trailers_only_call(&mut service, &format!("/{METHOD}")).await;
    assert_eq!(
        recorded.points(a66::CLIENT_ATTEMPT_STARTED),
        [(
            attributes_of(&[(a66::METHOD, METHOD), (a66::TARGET, TARGET)]),
            3
        )]
    );
    for name in [
        a96::CLIENT_CALL_TRANSPARENT_RETRIES,
        a96::CLIENT_CALL_RETRY_DELAY,
    ] {
        assert!(recorded.histogram(name).is_empty(), "{name} while off");
    }

    let recorded = Recorded::new();
    let mut service = layer(&recorded)
        .with_retry_metrics(RetryMetrics {
            transparent_retries: true,
            retry_delay: true,
        })
        .layer(answers_trailers_only(0));
    trailers_only_call(&mut service, &format!("/{METHOD}")).await;
    assert_eq!(
        recorded.points(a66::CLIENT_ATTEMPT_DURATION),
        [(attempt("OK"), 1)]
    );
    for name in [
        a96::CLIENT_CALL_TRANSPARENT_RETRIES,
        a96::CLIENT_CALL_RETRY_DELAY,
    ] {
        assert!(recorded.histogram(name).is_empty(), "{name} with no retry");
    }
}
