//! gRFC A96's retry metrics of a client's transparent retry, against a real
//! `sensorhub serve`, recorded by a client whose meter provider has an
//! in-memory exporter (global providers would be shared by the other tests
//! of this process).
//!
//! The race is made, not waited for: the server allows one stream per
//! connection, a chat holds it, so a unary call on the same channel waits in
//! the client, never sent. When the connection reaches its
//! `--max-connection-age`, the server's GOAWAY fails that waiting call in
//! the client, and the transparent retry sends it on a new connection. The
//! call succeeds after two attempts: A66 counts both, and A96's
//! `grpc.client.call.transparent_retries` and `.retry_delay` (when switched
//! on, by the names `--enable-metrics` takes) record one retry.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use opentelemetry_sdk::{
    metrics::{
        InMemoryMetricExporter, PeriodicReader, SdkMeterProvider,
        data::{AggregatedMetrics, MetricData},
    },
    trace::SdkTracerProvider,
};
use sensorhub_grpc::{
    optional_metrics::{OptionalMetrics, Side},
    testing::{reading, unix_now},
};
use sensorhub_proto::SensorReading;
use sensorhub_rpc_telemetry::{
    GrpcClientLayer, SemconvStability,
    conventions::{a66, a96},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::attacker::ServeProcess;

const UNARY: &str = "SensorService/SendSingleReading";

/// A client's metrics, as its meter provider exports them.
struct Meters {
    exporter: InMemoryMetricExporter,
    provider: SdkMeterProvider,
}

/// One histogram point or counter value: count (or value) and sum.
type Point = (u64, f64);

/// A point's attributes, values as text.
type Attributes = BTreeMap<String, String>;

impl Meters {
    fn new() -> Self {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        Self { exporter, provider }
    }

    /// The points of `name` whose attributes include `grpc.method` =
    /// `method`, by their other attributes, as exported now.
    fn points(&self, name: &str, method: &str) -> BTreeMap<Attributes, Point> {
        self.provider.force_flush().expect("flush");
        let mut points = BTreeMap::new();
        let metrics = self.exporter.get_finished_metrics().expect("metrics");
        let mut add = |attributes: &mut dyn Iterator<Item = &opentelemetry::KeyValue>,
                       point: Point| {
            let attributes: Vec<(String, String)> = attributes
                .map(|kv| (kv.key.to_string(), kv.value.as_str().into_owned()))
                .collect();
            if attributes
                .iter()
                .any(|(k, v)| k == a66::METHOD && v == method)
            {
                let others: Attributes = attributes
                    .into_iter()
                    .filter(|(k, _)| k != a66::METHOD)
                    .collect();
                points.insert(others, point);
            }
        };
        for resource in &metrics {
            for scope in resource.scope_metrics() {
                for metric in scope.metrics().filter(|m| m.name() == name) {
                    match metric.data() {
                        AggregatedMetrics::F64(MetricData::Histogram(h)) => h
                            .data_points()
                            .for_each(|p| add(&mut p.attributes(), (p.count(), p.sum()))),
                        AggregatedMetrics::U64(MetricData::Histogram(h)) => h
                            .data_points()
                            .for_each(|p| add(&mut p.attributes(), (p.count(), p.sum() as f64))),
                        AggregatedMetrics::U64(MetricData::Sum(s)) => s
                            .data_points()
                            .for_each(|p| add(&mut p.attributes(), (p.value(), p.value() as f64))),
                        _ => panic!("{name}: a kind these tests do not read"),
                    }
                }
            }
        }
        self.exporter.reset();
        points
    }
}

/// The unary call that a GOAWAY fails before it is sent, and its retry:
/// a server of one stream per connection and a 1 s connection age, a chat
/// holding the stream, the unary call made behind it. Returns the client's
/// metrics and the server's `grpc.target`.
async fn unary_call_behind_a_chat_across_a_goaway(enable_metrics: &[&str]) -> (Meters, String) {
    let server = ServeProcess::start(&[
        "--max-concurrent-streams",
        "1",
        "--max-connection-age",
        "1s",
        "--max-connection-age-grace",
        "30s",
    ]);
    let meters = Meters::new();
    let mut config = server.client_config();
    config.retry_metrics = OptionalMetrics::enable(enable_metrics, Side::Client)
        .expect("the names --enable-metrics takes")
        .retry;
    let target = config.target();
    let telemetry = GrpcClientLayer::with_providers(
        &target,
        &SdkTracerProvider::builder().build(),
        &meters.provider,
        SemconvStability::default(),
    );
    let mut client = sensorhub_grpc::client::connect_with(&config, telemetry)
        .await
        .expect("connect");

    // The chat takes the connection's one stream, answered once to be sure.
    let (tx, rx) = mpsc::channel::<SensorReading>(1);
    let mut replies = client
        .clone()
        .sensor_chat(ReceiverStream::new(rx))
        .await
        .expect("SensorChat")
        .into_inner();
    let opened = Instant::now();
    tx.send(reading("retry-chat", 21.0, unix_now()))
        .await
        .unwrap();
    let reply = replies.message().await.expect("a reply").expect("a reply");
    assert_eq!(reply.message, "Received 21.0");

    // Behind it: this call waits in the client until the GOAWAY.
    let unary = tokio::time::timeout(
        Duration::from_secs(10),
        client.send_single_reading(reading("retry-unary", 22.0, unix_now())),
    )
    .await
    .expect("the unary call ended in time");
    let waited = opened.elapsed();
    unary.expect("sent again on a new connection, and answered");
    assert!(
        waited >= Duration::from_millis(800),
        "answered after {waited:?}: it did not wait behind the chat for the connection's age (0.9 s to 1.1 s)"
    );

    // The chat goes on across the age, on the old connection, and ends OK.
    tx.send(reading("retry-chat", 23.0, unix_now()))
        .await
        .unwrap();
    let reply = replies.message().await.expect("a reply").expect("a reply");
    assert_eq!(reply.message, "Received 23.0");
    drop(tx);
    assert!(replies.message().await.expect("ends OK").is_none());
    (meters, target)
}

fn target_only(target: &str) -> Attributes {
    BTreeMap::from([(a66::TARGET.to_owned(), target.to_owned())])
}

fn with_status(target: &str, status: &str) -> Attributes {
    let mut attributes = target_only(target);
    attributes.insert(a66::STATUS.to_owned(), status.to_owned());
    attributes
}

/// Both attempts are A66 attempts: started twice, one ended UNAVAILABLE (the
/// GOAWAY, in the client) and one OK, one call of 1 s.
fn assert_two_attempts(meters: &Meters, target: &str) {
    let started = meters.points(a66::CLIENT_ATTEMPT_STARTED, UNARY);
    assert_eq!(
        started,
        BTreeMap::from([(target_only(target), (2, 2.0))]),
        "attempts started"
    );
    let attempts: BTreeMap<_, u64> = meters
        .points(a66::CLIENT_ATTEMPT_DURATION, UNARY)
        .into_iter()
        .map(|(attributes, (count, _))| (attributes, count))
        .collect();
    assert_eq!(
        attempts,
        BTreeMap::from([
            (with_status(target, "OK"), 1),
            (with_status(target, "UNAVAILABLE"), 1)
        ]),
        "attempts ended"
    );
    let calls = meters.points(a66::CLIENT_CALL_DURATION, UNARY);
    let (count, seconds) = calls[&with_status(target, "OK")];
    assert_eq!((calls.len(), count), (1, 1), "{calls:?}");
    assert!(seconds >= 0.8, "the call took {seconds} s");
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_metrics_count_a_transparent_retry_across_a_goaway() {
    let (meters, target) = unary_call_behind_a_chat_across_a_goaway(&[
        a96::CLIENT_CALL_RETRIES,
        a96::CLIENT_CALL_TRANSPARENT_RETRIES,
        a96::CLIENT_CALL_HEDGES,
        a96::CLIENT_CALL_RETRY_DELAY,
    ])
    .await;
    assert_two_attempts(&meters, &target);

    // One call with one transparent retry. Its retry delay is only the wait
    // for the channel's readiness (the new connection is made within the
    // second attempt): a fraction of a millisecond, well under 0.5 s.
    assert_eq!(
        meters.points(a96::CLIENT_CALL_TRANSPARENT_RETRIES, UNARY),
        BTreeMap::from([(target_only(&target), (1, 1.0))])
    );
    let delay = meters.points(a96::CLIENT_CALL_RETRY_DELAY, UNARY);
    let (count, seconds) = delay[&target_only(&target)];
    assert_eq!((delay.len(), count), (1, 1), "{delay:?}");
    eprintln!("retry delay: {:.3} ms", seconds * 1e3);
    assert!((0.0..0.5).contains(&seconds), "retry delay {seconds} s");
    // The chat was never retried: A96 reports no 0. No retry policy, no
    // hedging: named, and nothing to report.
    for name in [
        a96::CLIENT_CALL_TRANSPARENT_RETRIES,
        a96::CLIENT_CALL_RETRY_DELAY,
    ] {
        assert!(
            meters.points(name, "SensorService/SensorChat").is_empty(),
            "{name} for the chat"
        );
    }
    for name in [a96::CLIENT_CALL_RETRIES, a96::CLIENT_CALL_HEDGES] {
        assert!(meters.points(name, UNARY).is_empty(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_metrics_are_off_unless_enabled() {
    let (meters, target) = unary_call_behind_a_chat_across_a_goaway(&[]).await;
    // The same retry happened, and A66 saw it...
    assert_two_attempts(&meters, &target);
    // ... but A96's experimental metrics stay off (gRFC A79).
    for name in [
        a96::CLIENT_CALL_TRANSPARENT_RETRIES,
        a96::CLIENT_CALL_RETRY_DELAY,
    ] {
        assert!(meters.points(name, UNARY).is_empty(), "{name} while off");
    }
}
