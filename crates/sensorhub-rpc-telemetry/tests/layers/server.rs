//! `GrpcServerLayer`: when a server call ends and what it is recorded as.

use bytes::Bytes;
use http_body_util::{BodyExt, channel::Channel};
use opentelemetry::Value;
use opentelemetry_sdk::{
    metrics::SdkMeterProvider,
    trace::{InMemorySpanExporter, Sampler, SdkTracerProvider},
};
use sensorhub_rpc_telemetry::{
    ExemplarReservoir, GrpcServerLayer, SemconvStability,
    conventions::{a66, semconv},
    exemplars::ExemplarInstrument,
};
use tower::Layer;

use crate::recorded::{
    Recorded, answers_once_with, answers_trailers_only, attributes_of, call, message,
    span_attribute, trailers, trailers_only_call,
};

const METHOD: &str = "Test/Stream";

fn layer(recorded: &Recorded) -> GrpcServerLayer {
    GrpcServerLayer::with_providers(
        [METHOD],
        &recorded.tracers,
        &recorded.meters,
        SemconvStability::default(),
        None,
    )
}

/// `grpc.server.call.duration` points: (grpc.method, grpc.status, count).
fn a66_calls(recorded: &Recorded) -> Vec<(String, String, u64)> {
    recorded
        .points(a66::SERVER_CALL_DURATION)
        .into_iter()
        .map(|(attributes, count)| {
            (
                attributes[a66::METHOD].clone(),
                attributes[a66::STATUS].clone(),
                count,
            )
        })
        .collect()
}

/// A streaming call: its span and metrics end when the trailers pass, not
/// when the response head is ready; its status is the trailers'.
#[tokio::test]
async fn a_streaming_call_ends_on_its_trailers() {
    let recorded = Recorded::new();
    let (mut sender, body) = Channel::<Bytes>::new(4);
    let mut service = layer(&recorded).layer(answers_once_with(body));
    let response = call(&mut service, &format!("/{METHOD}")).await;
    let mut body = response.into_body();
    assert!(recorded.spans().is_empty(), "the span ended with the head");

    sender.send_data(message(b"hello")).await.unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert!(frame.is_data());
    sender.send_data(message(b"world!")).await.unwrap();
    body.frame().await.unwrap().unwrap();
    assert!(
        recorded.spans().is_empty(),
        "the span ended before the trailers"
    );

    sender.send_trailers(trailers(0)).await.unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert!(frame.is_trailers());
    let spans = recorded.spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    let span = &spans[0];
    assert_eq!(span.name, METHOD);
    assert_eq!(
        span_attribute(span, semconv::RPC_RESPONSE_STATUS_CODE),
        Some(Value::from("OK"))
    );
    assert_eq!(
        span_attribute(span, semconv::RESPONSE_MESSAGES),
        Some(Value::I64(2))
    );
    assert_eq!(
        span_attribute(span, semconv::RESPONSE_BYTES),
        Some(Value::I64(11))
    );
    assert_eq!(
        a66_calls(&recorded),
        [(METHOD.to_owned(), "OK".to_owned(), 1)]
    );
}

/// A trailers-only answer (the status in the head, as for a refused call)
/// ends the call with the head, with that status.
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
        a66_calls(&recorded),
        [(METHOD.to_owned(), "UNAUTHENTICATED".to_owned(), 1)]
    );
    drop(response);
    assert_eq!(recorded.spans().len(), 1, "the call ended twice");
}

/// A response body dropped before its trailers (the client went away) ends
/// the call as CANCELLED.
#[tokio::test]
async fn a_dropped_body_is_cancelled() {
    let recorded = Recorded::new();
    let (mut sender, body) = Channel::<Bytes>::new(4);
    let mut service = layer(&recorded).layer(answers_once_with(body));
    let response = call(&mut service, &format!("/{METHOD}")).await;
    let mut body = response.into_body();
    sender.send_data(message(b"partial")).await.unwrap();
    body.frame().await.unwrap().unwrap();
    drop(body);

    let spans = recorded.spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(
        span_attribute(&spans[0], semconv::RPC_RESPONSE_STATUS_CODE),
        Some(Value::from("CANCELLED"))
    );
    assert_eq!(
        a66_calls(&recorded),
        [(METHOD.to_owned(), "CANCELLED".to_owned(), 1)]
    );
}

/// A path the server does not register is recorded as `other` (A66) and
/// `_OTHER` (semconv), with the original path kept on the span only.
#[tokio::test]
async fn an_unknown_method_is_other() {
    let recorded = Recorded::new();
    let mut service = layer(&recorded).layer(answers_trailers_only(12));
    call(&mut service, "/Scanner/Probe").await;
    let spans = recorded.spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].name, semconv::OTHER_METHOD);
    assert_eq!(
        span_attribute(&spans[0], semconv::RPC_METHOD),
        Some(Value::from(semconv::OTHER_METHOD))
    );
    assert_eq!(
        span_attribute(&spans[0], semconv::RPC_METHOD_ORIGINAL),
        Some(Value::from("Scanner/Probe"))
    );
    assert_eq!(
        a66_calls(&recorded),
        [(a66::OTHER_METHOD.to_owned(), "UNIMPLEMENTED".to_owned(), 1)]
    );
}

/// `OTEL_SEMCONV_STABILITY_OPT_IN`'s three modes on the server: the status
/// is `rpc.response.status_code` (v1.40.0, unset), `rpc.status_code`
/// (`rpc`), or both (`rpc/dup`), on the span and on
/// `rpc.server.call.duration` alike; A66 is the same in every mode.
#[tokio::test]
async fn the_server_emits_the_semconv_mode_it_is_given() {
    for (stability, statuses, schema) in [
        (
            SemconvStability::V1_40,
            &["rpc.response.status_code"][..],
            Some("https://opentelemetry.io/schemas/1.40.0"),
        ),
        (SemconvStability::Latest, &["rpc.status_code"][..], None),
        (
            SemconvStability::Duplicate,
            &["rpc.response.status_code", "rpc.status_code"][..],
            Some("https://opentelemetry.io/schemas/1.40.0"),
        ),
    ] {
        let recorded = Recorded::new();
        let layer = GrpcServerLayer::with_providers(
            [METHOD],
            &recorded.tracers,
            &recorded.meters,
            stability,
            None,
        );
        let mut service = layer.layer(answers_trailers_only(14));
        trailers_only_call(&mut service, &format!("/{METHOD}")).await;

        let spans = recorded.spans();
        assert_eq!(spans.len(), 1, "{stability:?}: {spans:?}");
        let span = &spans[0];
        for key in ["rpc.response.status_code", "rpc.status_code"] {
            let expected = statuses.contains(&key).then(|| Value::from("UNAVAILABLE"));
            assert_eq!(span_attribute(span, key), expected, "{stability:?}: {key}");
        }
        assert_eq!(
            span_attribute(span, "error.type"),
            Some(Value::from("UNAVAILABLE"))
        );
        assert_eq!(
            span.instrumentation_scope.schema_url(),
            schema,
            "{stability:?}"
        );

        let mut expected = vec![
            ("rpc.system.name", "grpc"),
            ("rpc.method", METHOD),
            ("error.type", "UNAVAILABLE"),
        ];
        expected.extend(statuses.iter().map(|key| (*key, "UNAVAILABLE")));
        assert_eq!(
            recorded.scoped_points(semconv::SERVER_CALL_DURATION),
            [((attributes_of(&expected), 1), schema.map(str::to_owned))],
            "{stability:?}"
        );
        assert_eq!(
            a66_calls(&recorded),
            [(METHOD.to_owned(), "UNAVAILABLE".to_owned(), 1)],
            "{stability:?}"
        );
    }
}

/// A sampled call leaves an exemplar, with its span's trace and span id, on
/// the A66 and semconv buckets its duration fell in; with sampling off a
/// call leaves none.
#[tokio::test]
async fn a_sampled_call_leaves_its_trace_as_an_exemplar() {
    for sampled in [true, false] {
        let spans = InMemorySpanExporter::default();
        let tracers = SdkTracerProvider::builder()
            .with_sampler(if sampled {
                Sampler::AlwaysOn
            } else {
                Sampler::AlwaysOff
            })
            .with_simple_exporter(spans.clone())
            .build();
        let meters = SdkMeterProvider::builder().build();
        let reservoir = ExemplarReservoir::new();
        let layer = GrpcServerLayer::with_providers(
            [METHOD],
            &tracers,
            &meters,
            SemconvStability::default(),
            Some(&reservoir),
        );
        let mut service = layer.layer(answers_trailers_only(5));
        trailers_only_call(&mut service, &format!("/{METHOD}")).await;

        let entries = reservoir.collect();
        if !sampled {
            assert!(entries.is_empty(), "{entries:?}");
            continue;
        }
        tracers.force_flush().unwrap();
        let span = spans.get_finished_spans().unwrap().pop().expect("a span");
        assert_eq!(entries.len(), 2, "{entries:?}");
        for entry in &entries {
            assert_eq!(&*entry.method, METHOD);
            assert_eq!(entry.status, "NOT_FOUND");
            assert_eq!(entry.exemplar.trace_id, span.span_context.trace_id());
            assert_eq!(entry.exemplar.span_id, span.span_context.span_id());
            // The bucket the SDK counts the duration in: the first bound not
            // below it.
            let bounds = entry.instrument.bounds();
            let value = entry.exemplar.value;
            assert!(entry.bucket == bounds.len() || value <= bounds[entry.bucket]);
            assert!(entry.bucket == 0 || value > bounds[entry.bucket - 1]);
        }
        let instruments: Vec<_> = entries.iter().map(|e| e.instrument).collect();
        assert!(instruments.contains(&ExemplarInstrument::A66ServerDuration));
        assert!(instruments.contains(&ExemplarInstrument::SemconvServerDuration));
    }
}
