//! Client-streaming ingest: `StreamSensorReadings` stores every reading of the
//! stream and acknowledges how many; a refused reading ends the call with
//! `INVALID_ARGUMENT`, after storing exactly the readings before it.

use sensorhub_grpc::testing::TestOptions;
use std::collections::BTreeMap;

use sensorhub_grpc::testing::{CALL_TIMEOUT, read_back, unix_now};
use sensorhub_grpc::{SensorClient, testing::TestServer};
use sensorhub_proto::{Ack, SensorReading, StatsRequest};
use tonic::Code;
use tonic_types::StatusExt;

const SENSORS: usize = 5;

/// `n` readings over several sensors, timestamps deliberately not in
/// arrival order and often equal, temperatures all distinct.
fn readings(n: usize, base: i64) -> Vec<SensorReading> {
    (0..n)
        .map(|i| SensorReading {
            sensor_id: format!("stream-{}", i % SENSORS),
            temperature: 10.0 + i as f64 / 1_000.0,
            timestamp: base + ((i * 7_919) % 500) as i64,
        })
        .collect()
}

/// What a history read must return for each sensor: ordered by timestamp,
/// ties in arrival order.
fn expected_by_sensor(sent: &[SensorReading]) -> BTreeMap<String, Vec<SensorReading>> {
    let mut by_sensor: BTreeMap<String, Vec<SensorReading>> = BTreeMap::new();
    for r in sent {
        by_sensor
            .entry(r.sensor_id.clone())
            .or_default()
            .push(r.clone());
    }
    for list in by_sensor.values_mut() {
        list.sort_by_key(|r| r.timestamp); // stable: ties keep arrival order
    }
    by_sensor
}

async fn total_stored(client: &mut SensorClient) -> u64 {
    client
        .get_sensor_stats(StatsRequest::default())
        .await
        .expect("GetSensorStats")
        .into_inner()
        .sensors
        .iter()
        .map(|s| s.count)
        .sum()
}

async fn test_client_streaming(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut client = server.client().await;
    let sent = readings(10_000, unix_now() - 86_400);

    let ack = tokio::time::timeout(
        CALL_TIMEOUT,
        client.stream_sensor_readings(tokio_stream::iter(sent.clone())),
    )
    .await
    .expect("stream acknowledged in time")
    .expect("StreamSensorReadings")
    .into_inner();
    assert_eq!(
        ack,
        Ack {
            message: "All readings stored.".into(),
            count: sent.len() as u64
        }
    );

    let expected = expected_by_sensor(&sent);
    assert_eq!(expected.len(), SENSORS);
    for (sensor, want) in &expected {
        let got = read_back(&mut client, sensor).await;
        assert_eq!(got.len(), want.len(), "{sensor}: count");
        assert!(
            got == *want,
            "{sensor}: readings differ from what was sent (order or values)"
        );
    }
    assert_eq!(total_stored(&mut client).await, sent.len() as u64);
}

async fn test_client_streaming_empty_stream(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut client = server.client().await;

    let ack = client
        .stream_sensor_readings(tokio_stream::iter(Vec::<SensorReading>::new()))
        .await
        .expect("empty StreamSensorReadings")
        .into_inner();
    assert_eq!(
        ack,
        Ack {
            message: "All readings stored.".into(),
            count: 0
        }
    );
    assert_eq!(total_stored(&mut client).await, 0);
}

/// Refusal at index `k` (in the middle of a chunk, after a full chunk of
/// 4096 has gone to the store, and at the very start).
async fn test_client_streaming_refusal_stores_exactly_the_prefix(options: TestOptions) {
    for k in [0usize, 37, 5_000] {
        let server = TestServer::start_with(options.with_fresh_store().await).await;
        let mut client = server.client().await;
        let base = unix_now() - 86_400;

        let mut stream = readings(k, base);
        stream.push(SensorReading {
            sensor_id: "stream-bad".into(),
            temperature: f64::NAN,
            timestamp: base,
        });
        // Valid readings after the refused one must not be stored.
        stream.extend(readings(20, base + 1_000));

        let status = tokio::time::timeout(
            CALL_TIMEOUT,
            client.stream_sensor_readings(tokio_stream::iter(stream)),
        )
        .await
        .expect("refusal in time")
        .expect_err("a NaN temperature is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "k={k}: {status:?}");
        let message = status.message();
        assert!(
            message.contains(&format!("#{k}")),
            "k={k}: message names the index: {message}"
        );
        assert!(
            message.contains("temperature"),
            "k={k}: message names the field: {message}"
        );

        let stored = status
            .metadata()
            .get("sensorhub-stored-count")
            .unwrap_or_else(|| {
                panic!(
                    "k={k}: no sensorhub-stored-count in {:?}",
                    status.metadata()
                )
            })
            .to_str()
            .expect("ascii")
            .parse::<u64>()
            .expect("a number");
        assert_eq!(stored, k as u64, "k={k}: stored count");

        let bad_request = status
            .get_details_bad_request()
            .expect("a BadRequest detail");
        let fields: Vec<_> = bad_request
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, vec![format!("stream[{k}].temperature")], "k={k}");

        // Exactly the first k readings are stored, nothing of the rest.
        let expected = expected_by_sensor(&readings(k, base));
        for i in 0..SENSORS {
            let sensor = format!("stream-{i}");
            let got = read_back(&mut client, &sensor).await;
            let want = expected.get(&sensor).cloned().unwrap_or_default();
            assert_eq!(got.len(), want.len(), "k={k} {sensor}: count");
            assert!(
                got == want,
                "k={k} {sensor}: stored readings differ from the first k sent"
            );
        }
        assert!(read_back(&mut client, "stream-bad").await.is_empty());
        assert_eq!(
            total_stored(&mut client).await,
            k as u64,
            "k={k}: total stored"
        );
    }
}

crate::on_both_engines!(
    test_client_streaming,
    test_client_streaming_empty_stream,
    test_client_streaming_refusal_stores_exactly_the_prefix,
);
