//! What `sensorhub serve` and `sensorhub sensor` export over OTLP, received
//! by a real in-process OTLP receiver: the server over OTLP/gRPC, the sensor
//! over OTLP/HTTP-protobuf. One server, one traffic script, then assertions
//! on what arrived:
//! - the server span is the child of the sensor's client span, in one trace;
//! - a unary call's commit is on its span; a client stream's is an
//!   `INSERT readings` span under it;
//! - a 1.5 s bidirectional stream gives a server span at least that long;
//! - `UNAUTHENTICATED` (trailers-only) and `INVALID_ARGUMENT` (in trailers,
//!   after messages) calls carry their status on spans and metrics;
//! - A66 names, attributes, units and bucket boundaries; semconv durations;
//! - log records carry the trace id of the call that logged them;
//! - `service.name` per process; no token anywhere in what was exported.

use std::time::Duration;

use sensorhub_grpc::testing;
use sensorhub_proto::{SensorReading, StatsRequest};
use sensorhub_rpc_telemetry::conventions::a66;
use sensorhub_telemetry::otlp_receiver::{OtlpReceiver, ReceivedSpan};
use spawned_server::{SpawnedServer, client, command};

use crate::support::spawned_server;

const TOKEN: &str = "telemetry-test-token-5f1d";
/// Accepted only through a `sha256:` line of the tokens file (issue 20).
const HASHED_TOKEN: &str = "telemetry-hashed-token-3b8e";
const WAIT: Duration = Duration::from_secs(20);

fn fast_export(endpoint: String, protocol: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300".to_owned()),
    ]
}

/// A reading of `sensor` taken now.
fn reading(sensor: &str, temperature: f64) -> SensorReading {
    testing::reading(sensor, temperature, testing::unix_now())
}

fn find_server_span<'a>(
    spans: &'a [ReceivedSpan],
    method: &str,
    status: &str,
) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| {
        s.service_name == "sensorhub"
            && s.name() == method
            && s.attr("rpc.response.status_code").as_deref() == Some(status)
            && s.attr("rpc.system.name").as_deref() == Some("grpc")
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn server_and_sensor_export_traces_metrics_and_logs() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let digest = sensorhub_grpc::auth::tokens_file::hex(
        &sensorhub_grpc::auth::tokens_file::digest(HASHED_TOKEN.as_bytes()),
    );
    std::fs::write(
        &tokens,
        format!("sha256:{digest} name=telemetry-kitchen write=tel-*\n"),
    )
    .unwrap();
    let mut env = fast_export(receiver.grpc_endpoint(), "grpc");
    env.push(("SENSORHUB_TOKENS_FILE", tokens.display().to_string()));
    let server = SpawnedServer::start(&dir.path().join("data"), TOKEN, &env);

    // 1. A sensor process: client spans and client metrics over OTLP/HTTP.
    let out = command()
        .args([
            "sensor",
            "--server",
            &server.url(),
            "--mode",
            "unary",
            "--count",
            "3",
            "--interval-max",
            "10ms",
            "--sensor-id",
            "tel-1",
        ])
        .env("SENSORHUB_TOKEN", TOKEN)
        .envs(fast_export(receiver.http_endpoint(), "http/protobuf"))
        .output()
        .expect("run sensorhub sensor");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 2. A chat held open for 1.5 s, then a bad reading after a good one:
    //    INVALID_ARGUMENT arrives in the trailers, after a message.
    let mut chat_client = client(&server.url(), TOKEN).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(reading("tel-chat", 21.0)).await.unwrap();
    let mut replies = chat_client
        .sensor_chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("chat opens")
        .into_inner();
    assert!(replies.message().await.expect("ack").is_some());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    tx.send(reading("tel-chat", f64::NAN)).await.unwrap();
    let status = loop {
        match replies.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the chat should end with INVALID_ARGUMENT"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // The hashed line's token: a write in its scope, and one refused.
    let mut hashed = client(&server.url(), HASHED_TOKEN).await;
    hashed
        .send_single_reading(reading("tel-hashed", 20.0))
        .await
        .expect("the token a sha256: line accepts");
    let denied = hashed
        .send_single_reading(reading("garage-1", 20.0))
        .await
        .expect_err("outside its scope");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    // 3. A wrong token: UNAUTHENTICATED, trailers-only.
    let mut intruder = client(&server.url(), "wrong-token-9a7c").await;
    let refused = intruder
        .get_sensor_stats(StatsRequest::default())
        .await
        .expect_err("wrong token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // Traces: the sensor's client span is the parent of the server span.
    let (client_span, server_span) = receiver
        .wait_for(WAIT, |r| {
            let spans = r.spans();
            let server = spans.iter().find(|s| {
                s.service_name == "sensorhub" && s.name() == "SensorService/SendSingleReading"
            })?;
            let client = spans.iter().find(|c| {
                c.service_name == "sensorhub-sensor"
                    && c.span_id_hex() == server.parent_span_id_hex()
            })?;
            Some((client.clone(), server.clone()))
        })
        .await
        .expect("a server span whose parent is the sensor's client span");
    assert_eq!(client_span.trace_id_hex(), server_span.trace_id_hex());
    assert_eq!(
        client_span.kind(),
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client
    );
    assert_eq!(
        server_span.kind(),
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server
    );
    assert_eq!(
        server_span.attr("rpc.method").as_deref(),
        Some("SensorService/SendSingleReading")
    );
    assert_eq!(
        server_span.attr("rpc.response.status_code").as_deref(),
        Some("OK")
    );
    assert_eq!(
        server_span
            .attr("rpc.grpc.request.message_count")
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        client_span.attr("server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert!(server_span.attr("error.type").is_none());
    // A unary call's commit is on its own span (issue 19: no child span per
    // call): the store, the readings and how long the commit took, within
    // the call.
    assert_eq!(
        server_span.attr("sensorhub.store.system").as_deref(),
        Some("sqlite")
    );
    assert_eq!(
        server_span.attr("sensorhub.store.readings").as_deref(),
        Some("1")
    );
    let commit_took: f64 = server_span
        .attr("sensorhub.store.commit.duration")
        .expect("the commit's duration on the unary call's span")
        .parse()
        .expect("seconds");
    assert!(
        commit_took > 0.0 && commit_took <= server_span.duration().as_secs_f64(),
        "{commit_took} s within {:?}",
        server_span.duration()
    );
    assert!(server_span.attr("sensorhub.store.error").is_none());
    assert!(
        !receiver
            .spans()
            .iter()
            .any(|s| s.parent_span_id_hex() == server_span.span_id_hex()),
        "a unary call's span has no children"
    );

    // A client stream's chunk is an INSERT readings span under its call.
    let mut streamer = client(&server.url(), TOKEN).await;
    streamer
        .stream_sensor_readings(tokio_stream::iter(vec![
            reading("tel-stream", 20.0),
            reading("tel-stream", 20.5),
        ]))
        .await
        .expect("a client stream");
    let (stream_span, commit) = receiver
        .wait_for(WAIT, |r| {
            let spans = r.spans();
            let call = find_server_span(&spans, "SensorService/StreamSensorReadings", "OK")?;
            let commit = spans.iter().find(|s| {
                s.name() == "INSERT readings" && s.parent_span_id_hex() == call.span_id_hex()
            })?;
            Some((call.clone(), commit.clone()))
        })
        .await
        .expect("an INSERT readings span under the client stream's span");
    assert_eq!(commit.trace_id_hex(), stream_span.trace_id_hex());
    assert_eq!(commit.attr("db.system.name").as_deref(), Some("sqlite"));
    // One INSERT of many rows is not a batch (db semconv): its size is ours.
    assert_eq!(
        commit.attr("sensorhub.store.readings").as_deref(),
        Some("2")
    );
    assert_eq!(commit.attr("db.operation.batch.size"), None);
    // Resource attributes in semconv's spelling.
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(
            server_span.resource_attr("host.arch").as_deref(),
            Some("amd64")
        );
    }
    assert_eq!(
        server_span.resource_attr("os.type").as_deref(),
        Some(std::env::consts::OS)
    );

    // The 1.5 s chat: its server span covers the stream, and its status came from trailers.
    let chat = receiver
        .wait_for(WAIT, |r| {
            find_server_span(&r.spans(), "SensorService/SensorChat", "INVALID_ARGUMENT").cloned()
        })
        .await
        .expect("the chat's server span");
    assert!(
        chat.duration() >= Duration::from_millis(1_500),
        "{:?}",
        chat.duration()
    );
    assert_eq!(
        chat.attr("rpc.grpc.request.message_count").as_deref(),
        Some("2")
    );
    assert!(
        chat.attr("rpc.grpc.response.message_count")
            .is_some_and(|n| n != "0")
    );

    let unauthenticated = receiver
        .wait_for(WAIT, |r| {
            find_server_span(
                &r.spans(),
                "SensorService/GetSensorStats",
                "UNAUTHENTICATED",
            )
            .cloned()
        })
        .await
        .expect("the refused call's server span");
    assert_eq!(
        unauthenticated.resource_attr("service.name").as_deref(),
        Some("sensorhub")
    );

    // Logs: the refusal was logged inside the chat call, with its trace id.
    let refusal = receiver
        .wait_for(WAIT, |r| {
            r.logs()
                .into_iter()
                .find(|l| l.body_text().contains("reading refused"))
        })
        .await
        .expect("the refusal's log record");
    assert_eq!(refusal.trace_id_hex(), chat.trace_id_hex());
    assert_eq!(refusal.service_name, "sensorhub");

    // Metrics: A66 names, attributes, units and buckets, on both sides.
    let duration = receiver
        .wait_for(WAIT, |r| {
            let metrics = r.metrics();
            // Exports are cumulative: the latest one has every point.
            let m = metrics
                .iter()
                .rev()
                .find(|m| m.service_name == "sensorhub" && m.name() == a66::SERVER_CALL_DURATION)?;
            let points = m.histogram_points();
            let ok = points.iter().any(|p| {
                p.attributes.get("grpc.method").map(String::as_str)
                    == Some("SensorService/SendSingleReading")
                    && p.attributes.get("grpc.status").map(String::as_str) == Some("OK")
                    && p.count >= 3
            });
            let refused = points.iter().any(|p| {
                p.attributes.get("grpc.status").map(String::as_str) == Some("UNAUTHENTICATED")
            });
            let invalid = points.iter().any(|p| {
                p.attributes.get("grpc.method").map(String::as_str)
                    == Some("SensorService/SensorChat")
                    && p.attributes.get("grpc.status").map(String::as_str)
                        == Some("INVALID_ARGUMENT")
            });
            (ok && refused && invalid).then(|| m.clone())
        })
        .await
        .expect("grpc.server.call.duration with OK, UNAUTHENTICATED and INVALID_ARGUMENT points");
    assert_eq!(duration.unit(), "s");
    for point in duration.histogram_points() {
        assert_eq!(point.bounds, a66::LATENCY_BUCKETS, "{point:?}");
        assert_eq!(
            point.attributes.keys().collect::<Vec<_>>(),
            ["grpc.method", "grpc.status"]
        );
    }
    let metrics = receiver.metrics();
    let named = |service: &str, name: &str| {
        metrics
            .iter()
            .rev()
            .find(|m| m.service_name == service && m.name() == name)
            .unwrap_or_else(|| panic!("{service} exported no {name}"))
    };
    let started = named("sensorhub", a66::SERVER_CALL_STARTED);
    assert_eq!(started.unit(), "{call}");
    assert!(started.sum_points().iter().any(|(attrs, value)| {
        attrs.get("grpc.method").map(String::as_str) == Some("SensorService/SendSingleReading")
            && *value >= 3.0
    }));
    for name in [a66::SERVER_SENT_SIZE, a66::SERVER_RCVD_SIZE] {
        let sizes = named("sensorhub", name);
        assert_eq!(sizes.unit(), "By");
        assert!(
            sizes
                .histogram_points()
                .iter()
                .all(|p| p.bounds == a66::SIZE_BUCKETS)
        );
    }
    let semconv = named("sensorhub", "rpc.server.call.duration");
    assert_eq!(semconv.unit(), "s");
    assert!(semconv.histogram_points().iter().any(|p| {
        p.attributes.get("rpc.method").map(String::as_str)
            == Some("SensorService/SendSingleReading")
            && p.attributes
                .get("rpc.response.status_code")
                .map(String::as_str)
                == Some("OK")
            && p.attributes.get("rpc.system.name").map(String::as_str) == Some("grpc")
    }));
    // The sensor process: A66 client metrics with the target.
    let attempts = named("sensorhub-sensor", a66::CLIENT_ATTEMPT_DURATION);
    assert!(attempts.histogram_points().iter().any(|p| {
        p.attributes.get("grpc.target").map(String::as_str) == Some(server.url().as_str())
            && p.attributes.get("grpc.status").map(String::as_str) == Some("OK")
            && p.bounds == a66::LATENCY_BUCKETS
    }));
    named("sensorhub-sensor", a66::CLIENT_CALL_DURATION);
    named("sensorhub-sensor", "rpc.client.call.duration");
    // Domain metrics.
    let stored = named("sensorhub", "sensorhub.readings.stored");
    assert!(stored.sum_points().iter().any(|(attrs, value)| {
        attrs.get("sensorhub.rpc.kind").map(String::as_str) == Some("unary") && *value >= 3.0
    }));
    let refused = named("sensorhub", "sensorhub.readings.refused");
    assert!(refused.sum_points().iter().any(|(attrs, _)| {
        attrs.get("sensorhub.refusal.reason").map(String::as_str) == Some("temperature.not_finite")
    }));
    named("sensorhub", "sensorhub.store.commit.duration");
    named("sensorhub", "sensorhub.store.index.duration");
    let last = named("sensorhub", "sensorhub.sensor.temperature");
    assert!(last.gauge_points().iter().any(|(attrs, value)| {
        attrs.get("sensor.id").map(String::as_str) == Some("tel-chat") && *value == 21.0
    }));

    // Both protocols were used; SIGTERM flushes and exits promptly.
    let (out, took) = server.terminate(Duration::from_secs(15));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    let counts = receiver.requests();
    assert!(
        counts.grpc_traces > 0 && counts.grpc_metrics > 0 && counts.grpc_logs > 0,
        "{counts:?}"
    );
    assert!(
        counts.http_traces > 0 && counts.http_metrics > 0,
        "{counts:?}"
    );

    // The identity's label, never its token, on the calls' spans (issue 20).
    receiver
        .wait_for(WAIT, |r| {
            let statuses: Vec<_> = r
                .spans()
                .into_iter()
                .filter(|s| {
                    s.service_name == "sensorhub"
                        && s.attr("enduser.id").as_deref() == Some("telemetry-kitchen")
                })
                .filter_map(|s| s.attr("rpc.response.status_code"))
                .collect();
            let both = statuses.iter().any(|s| s == "OK")
                && statuses.iter().any(|s| s == "PERMISSION_DENIED");
            both.then_some(())
        })
        .await
        .expect("the hashed token's calls are labelled with its name=");
    assert!(
        receiver
            .spans()
            .iter()
            .any(|s| s.attr("enduser.id").as_deref() == Some("--token 1")),
        "an unscoped --token is labelled too"
    );

    // No token, right or wrong, in anything exported.
    let everything = receiver.all_text();
    assert!(everything.contains("SensorService/SendSingleReading"));
    for secret in [TOKEN, "wrong-token-9a7c", HASHED_TOKEN] {
        assert!(!everything.contains(secret), "{secret} was exported");
    }
    assert!(!everything.to_ascii_lowercase().contains("authorization"));
}
