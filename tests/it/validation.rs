//! Validation through the real server: every rule refuses with
//! `INVALID_ARGUMENT` naming the field (in the message and in a
//! `google.rpc.BadRequest` detail), stores nothing, and leaves the server
//! serving. Over-size messages are `RESOURCE_EXHAUSTED`.

use sensorhub_grpc::testing::TestOptions;
use sensorhub_grpc::testing::{CALL_TIMEOUT, read_back, reading, stored_count, unix_now};
use sensorhub_grpc::{SensorClient, testing::TestServer};
use sensorhub_proto::{SensorReading, StatsRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};
use tonic_types::StatusExt;

struct Case {
    name: &'static str,
    reading: SensorReading,
    field: &'static str,
    /// Words the message must also contain.
    hint: Option<&'static str>,
}

fn refusals(now: i64) -> Vec<Case> {
    let case = |name, reading, field, hint| Case {
        name,
        reading,
        field,
        hint,
    };
    vec![
        case("empty sensor_id", reading("", 20.0, now), "sensor_id", None),
        case(
            "over-long sensor_id",
            reading(&"x".repeat(129), 20.0, now),
            "sensor_id",
            None,
        ),
        case(
            "newline in sensor_id",
            reading("a\nb", 20.0, now),
            "sensor_id",
            None,
        ),
        case(
            "NUL in sensor_id",
            reading("a\0b", 20.0, now),
            "sensor_id",
            None,
        ),
        case(
            "DEL in sensor_id",
            reading("a\u{7f}", 20.0, now),
            "sensor_id",
            None,
        ),
        case("NaN", reading("v", f64::NAN, now), "temperature", None),
        case(
            "+inf",
            reading("v", f64::INFINITY, now),
            "temperature",
            None,
        ),
        case(
            "-inf",
            reading("v", f64::NEG_INFINITY, now),
            "temperature",
            None,
        ),
        case(
            "below absolute zero",
            reading("v", -273.16, now),
            "temperature",
            Some("absolute zero"),
        ),
        case("above 1000", reading("v", 1000.5, now), "temperature", None),
        case("timestamp 0", reading("v", 20.0, 0), "timestamp", None),
        case(
            "negative timestamp",
            reading("v", 20.0, -5),
            "timestamp",
            None,
        ),
        case(
            "far future",
            reading("v", 20.0, now + 4_000),
            "timestamp",
            None,
        ),
        case(
            "milliseconds",
            reading("v", 20.0, now * 1_000),
            "timestamp",
            Some("milliseconds"),
        ),
    ]
}

async fn stats_total(client: &mut SensorClient) -> Vec<(String, u64)> {
    client
        .get_sensor_stats(StatsRequest::default())
        .await
        .expect("GetSensorStats")
        .into_inner()
        .sensors
        .into_iter()
        .map(|s| (s.sensor_id, s.count))
        .collect()
}

fn assert_refusal(status: &Status, case: &Case, detail_field: &str) {
    let name = case.name;
    assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
    assert!(
        status.message().contains(case.field),
        "{name}: message names {}: {}",
        case.field,
        status.message()
    );
    if let Some(hint) = case.hint {
        assert!(
            status.message().contains(hint),
            "{name}: message says {hint:?}: {}",
            status.message()
        );
    }
    let bad_request = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("{name}: no BadRequest detail"));
    let fields: Vec<_> = bad_request
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, vec![detail_field], "{name}");
    assert!(
        !bad_request.field_violations[0].description.is_empty(),
        "{name}"
    );
}

async fn validation_refuses_every_rule_on_every_ingest_path(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut client = server.client().await;
    let now = unix_now();

    for case in refusals(now) {
        // Unary.
        let status = tokio::time::timeout(
            CALL_TIMEOUT,
            client.send_single_reading(case.reading.clone()),
        )
        .await
        .expect("in time")
        .expect_err(case.name);
        assert_refusal(&status, &case, case.field);

        // Client streaming: the refused reading is #0, nothing stored.
        let status = tokio::time::timeout(
            CALL_TIMEOUT,
            client.stream_sensor_readings(tokio_stream::iter(vec![case.reading.clone()])),
        )
        .await
        .expect("in time")
        .expect_err(case.name);
        assert_refusal(&status, &case, &format!("stream[0].{}", case.field));
        assert_eq!(stored_count(&status), Some(0), "{}", case.name);

        // Chat: the stream ends with the refusal, no reply before it.
        let (tx, rx) = mpsc::channel(1);
        let mut replies = client
            .sensor_chat(ReceiverStream::new(rx))
            .await
            .expect("SensorChat")
            .into_inner();
        tx.send(case.reading.clone()).await.expect("send");
        let status = tokio::time::timeout(CALL_TIMEOUT, replies.message())
            .await
            .expect("in time")
            .expect_err(case.name);
        assert_refusal(&status, &case, &format!("stream[0].{}", case.field));
        assert_eq!(stored_count(&status), Some(0), "{}", case.name);
        drop(tx);
    }

    // Nothing at all was stored.
    assert_eq!(stats_total(&mut client).await, vec![]);
    assert!(read_back(&mut client, "v").await.is_empty());

    // The server still serves; the boundaries themselves are accepted.
    let accepted = vec![
        reading("v", -273.15, now),
        reading("v", 1000.0, now - 1),
        reading("v", 20.0, now + 3_000),
        reading("v", 20.0, 1),
        reading(&"y".repeat(128), 20.0, now),
        reading("Küche/Ofen", 20.0, now),
    ];
    for r in &accepted {
        let ack = client
            .send_single_reading(r.clone())
            .await
            .unwrap_or_else(|s| panic!("{r:?} refused: {s:?}"));
        assert_eq!(ack.into_inner().count, 1);
    }
    let mut totals = stats_total(&mut client).await;
    totals.sort();
    let mut want = vec![
        ("Küche/Ofen".to_owned(), 1),
        ("v".to_owned(), 4),
        ("y".repeat(128), 1),
    ];
    want.sort();
    assert_eq!(totals, want);
}

async fn validation_over_size_message_is_resource_exhausted(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut client = server.client().await;
    let now = unix_now();
    let huge = reading(&"h".repeat(100 * 1024), 20.0, now);

    // Unary.
    let status = tokio::time::timeout(CALL_TIMEOUT, client.send_single_reading(huge.clone()))
        .await
        .expect("in time")
        .expect_err("a 100 KiB message is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "unary: {status:?}");
    assert!(
        status.message().contains("65536"),
        "unary: message states the limit: {}",
        status.message()
    );

    // The server still serves, on the same connection.
    client
        .send_single_reading(reading("ok", 20.0, now))
        .await
        .expect("still serving after unary");

    // Client streaming: the valid reading before it is stored, and said so.
    let stream = vec![
        reading("before-huge", 21.0, now),
        huge.clone(),
        reading("after-huge", 22.0, now),
    ];
    let status = tokio::time::timeout(
        CALL_TIMEOUT,
        client.stream_sensor_readings(tokio_stream::iter(stream)),
    )
    .await
    .expect("in time")
    .expect_err("a 100 KiB message in a stream is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "stream: {status:?}");
    assert_eq!(stored_count(&status), Some(1), "stream: {status:?}");

    // Chat too.
    let (tx, rx) = mpsc::channel(1);
    let mut replies = client
        .sensor_chat(ReceiverStream::new(rx))
        .await
        .expect("SensorChat")
        .into_inner();
    tx.send(huge).await.expect("send");
    let status = tokio::time::timeout(CALL_TIMEOUT, replies.message())
        .await
        .expect("in time")
        .expect_err("a 100 KiB chat message is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "chat: {status:?}");
    drop(tx);

    // Still serving, and only the valid readings were stored.
    client
        .send_single_reading(reading("ok", 20.5, now))
        .await
        .expect("still serving after stream");
    let mut totals = stats_total(&mut client).await;
    totals.sort();
    assert_eq!(
        totals,
        vec![("before-huge".to_owned(), 1), ("ok".to_owned(), 2)]
    );
    // A fresh connection works as well.
    let mut fresh = server.client().await;
    assert_eq!(
        read_back(&mut fresh, "before-huge").await,
        vec![reading("before-huge", 21.0, now)]
    );
}

/// The limit applies after decompression: a small gzip or zstd message that
/// inflates past it is refused the same way.
async fn validation_over_size_after_decompression_is_resource_exhausted(options: TestOptions) {
    use tonic::codec::CompressionEncoding;

    let server = TestServer::start_with(options.clone()).await;
    let now = unix_now();
    let huge = reading(&"h".repeat(100 * 1024), 20.0, now);
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client = server.client().await.send_compressed(encoding);

        let status = tokio::time::timeout(CALL_TIMEOUT, client.send_single_reading(huge.clone()))
            .await
            .expect("in time")
            .expect_err("inflates past the limit");
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{encoding:?} unary: {status:?}"
        );

        let stream = vec![reading("zipped", 21.0, now), huge.clone()];
        let status = tokio::time::timeout(
            CALL_TIMEOUT,
            client.stream_sensor_readings(tokio_stream::iter(stream)),
        )
        .await
        .expect("in time")
        .expect_err("inflates past the limit");
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{encoding:?} stream: {status:?}"
        );
        assert_eq!(
            stored_count(&status),
            Some(1),
            "{encoding:?} stream: {status:?}"
        );

        // Compressed messages within the limit are fine.
        let ack = client
            .send_single_reading(reading("zipped", 22.0, now))
            .await
            .expect("compressed unary");
        assert_eq!(ack.into_inner().count, 1);
    }
    let mut client = server.client().await;
    assert_eq!(
        stats_total(&mut client).await,
        vec![("zipped".to_owned(), 4)]
    );
}

crate::on_both_engines!(
    validation_refuses_every_rule_on_every_ingest_path,
    validation_over_size_message_is_resource_exhausted,
    validation_over_size_after_decompression_is_resource_exhausted,
);
