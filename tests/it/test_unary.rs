//! Unary ingest: `SendSingleReading` acknowledges one stored reading, which
//! then reads back unchanged and shows up in the statistics.

use sensorhub_grpc::testing::TestOptions;
use sensorhub_grpc::testing::{read_back, reading, unix_now};
use sensorhub_grpc::{SensorClient, testing::TestServer};
use sensorhub_proto::{Ack, SensorStats, StatsRequest};

async fn stats(client: &mut SensorClient, sensor_id: &str) -> Vec<SensorStats> {
    client
        .get_sensor_stats(StatsRequest {
            sensor_id: sensor_id.to_owned(),
            ..Default::default()
        })
        .await
        .expect("GetSensorStats")
        .into_inner()
        .sensors
}

async fn test_unary(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut client = server.client().await;
    let sent = reading("unary-sensor", 21.5, unix_now() - 30);

    let ack = client
        .send_single_reading(sent.clone())
        .await
        .expect("SendSingleReading")
        .into_inner();
    assert_eq!(
        ack,
        Ack {
            message: "Reading received.".into(),
            count: 1
        }
    );

    let back = read_back(&mut client, "unary-sensor").await;
    assert_eq!(back, vec![sent.clone()]);
    assert_eq!(back[0].sensor_id, sent.sensor_id);
    assert_eq!(back[0].temperature.to_bits(), sent.temperature.to_bits());
    assert_eq!(back[0].timestamp, sent.timestamp);

    // A second reading is a second row, not an overwrite; another sensor sees neither.
    let second = reading("unary-sensor", 23.25, sent.timestamp + 1);
    let ack = client
        .send_single_reading(second.clone())
        .await
        .expect("second reading")
        .into_inner();
    assert_eq!(ack.count, 1);
    assert_eq!(
        read_back(&mut client, "unary-sensor").await,
        vec![sent, second]
    );
    assert!(read_back(&mut client, "other-sensor").await.is_empty());
}

async fn test_unary_stats_reflect_the_reading(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut client = server.client().await;
    assert!(
        stats(&mut client, "").await.is_empty(),
        "a fresh server has no statistics"
    );

    let ts = unix_now() - 60;
    let first = reading("stats-a", 20.0, ts);
    client
        .send_single_reading(first.clone())
        .await
        .expect("first reading");

    let after_one = stats(&mut client, "stats-a").await;
    assert_eq!(
        after_one,
        vec![SensorStats {
            sensor_id: "stats-a".into(),
            count: 1,
            min: 20.0,
            max: 20.0,
            mean: 20.0,
            last: 20.0,
            last_timestamp: ts,
            rolling_mean: 20.0,
            alerts: 0,
        }]
    );

    client
        .send_single_reading(reading("stats-a", 23.0, ts + 10))
        .await
        .expect("second reading");
    client
        .send_single_reading(reading("stats-b", -5.0, ts + 5))
        .await
        .expect("other sensor");

    let a = stats(&mut client, "stats-a").await;
    assert_eq!(a.len(), 1, "{a:?}");
    let a = &a[0];
    assert_eq!(
        (
            a.sensor_id.as_str(),
            a.count,
            a.min,
            a.max,
            a.last,
            a.last_timestamp,
            a.alerts
        ),
        ("stats-a", 2, 20.0, 23.0, 23.0, ts + 10, 0)
    );
    assert!((a.mean - 21.5).abs() < 1e-9, "mean {}", a.mean);
    // EWMA with alpha 0.1: 20 -> 20 + 0.1 * (23 - 20).
    assert!(
        (a.rolling_mean - 20.3).abs() < 1e-9,
        "rolling mean {}",
        a.rolling_mean
    );

    // Empty sensor_id: every sensor, in name order.
    let all = stats(&mut client, "").await;
    let names: Vec<_> = all
        .iter()
        .map(|s| (s.sensor_id.as_str(), s.count))
        .collect();
    assert_eq!(names, vec![("stats-a", 2), ("stats-b", 1)]);
    assert!(stats(&mut client, "never-sent").await.is_empty());
}

crate::on_both_engines!(test_unary, test_unary_stats_reflect_the_reading,);
