//! Durability: everything acknowledged by any ingest kind, and the
//! statistics, survive a graceful restart on the same data directory.

use sensorhub_grpc::testing::TestOptions;
use std::time::Duration;

use sensorhub_grpc::testing::{CALL_TIMEOUT, read_back, reading, unix_now};
use sensorhub_grpc::{SensorClient, testing::TestServer};
use sensorhub_proto::{SensorStats, StatsRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

async fn all_stats(client: &mut SensorClient) -> Vec<SensorStats> {
    client
        .get_sensor_stats(StatsRequest::default())
        .await
        .expect("GetSensorStats")
        .into_inner()
        .sensors
}

async fn durability_survives_restart(options: TestOptions) {
    let mut server = TestServer::start_with(options.clone()).await;
    let port = server.addr.port();
    let t = unix_now() - 10_000;

    let unary = vec![
        reading("dur-unary", 20.0, t),
        reading("dur-unary", 46.0, t + 1),
    ];
    let streamed: Vec<_> = (0..500)
        .map(|i| reading("dur-stream", 15.0 + (i % 50) as f64 * 0.1, t + i))
        .collect();
    let chatted = vec![
        reading("dur-chat", 22.0, t + 5),
        reading("dur-chat", -31.0, t + 6),
        reading("dur-chat", 21.0, t + 7),
    ];

    let before = {
        let mut client = server.client().await;
        for r in &unary {
            client
                .send_single_reading(r.clone())
                .await
                .expect("SendSingleReading");
        }
        let ack = client
            .stream_sensor_readings(tokio_stream::iter(streamed.clone()))
            .await
            .expect("StreamSensorReadings")
            .into_inner();
        assert_eq!(ack.count, streamed.len() as u64);

        let (tx, rx) = mpsc::channel(4);
        let mut replies = client
            .sensor_chat(ReceiverStream::new(rx))
            .await
            .expect("SensorChat")
            .into_inner();
        for r in &chatted {
            tx.send(r.clone()).await.expect("send");
        }
        drop(tx);
        let mut received = 0;
        while let Some(m) = tokio::time::timeout(CALL_TIMEOUT, replies.message())
            .await
            .expect("in time")
            .expect("chat")
        {
            if m.message.starts_with("Received ") {
                received += 1;
            }
        }
        assert_eq!(received, chatted.len());

        assert_eq!(read_back(&mut client, "dur-unary").await, unary);
        let stats = all_stats(&mut client).await;
        let summary: Vec<_> = stats
            .iter()
            .map(|s| (s.sensor_id.as_str(), s.count, s.alerts))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("dur-chat", 3, 1),
                ("dur-stream", 500, 0),
                ("dur-unary", 2, 1)
            ]
        );
        stats
    };

    tokio::time::timeout(Duration::from_secs(10), server.restart())
        .await
        .expect("restart in time");
    assert_eq!(server.addr.port(), port, "restarted on the same port");

    let mut client = server.client().await;
    assert_eq!(read_back(&mut client, "dur-unary").await, unary);
    assert_eq!(read_back(&mut client, "dur-stream").await, streamed);
    assert_eq!(read_back(&mut client, "dur-chat").await, chatted);
    assert_eq!(
        all_stats(&mut client).await,
        before,
        "statistics survive the restart unchanged"
    );

    // The statistics continue from where they were, not from scratch.
    client
        .send_single_reading(reading("dur-unary", 30.0, t + 2))
        .await
        .expect("write after restart");
    let unary_stats = client
        .get_sensor_stats(StatsRequest {
            sensor_id: "dur-unary".into(),
            ..Default::default()
        })
        .await
        .expect("stats")
        .into_inner()
        .sensors;
    let previous = before.iter().find(|s| s.sensor_id == "dur-unary").unwrap();
    assert_eq!(unary_stats.len(), 1);
    let now = &unary_stats[0];
    assert_eq!(
        (now.count, now.min, now.max, now.last, now.alerts),
        (3, 20.0, 46.0, 30.0, previous.alerts)
    );
    assert!((now.mean - 32.0).abs() < 1e-9, "mean {}", now.mean);
    let rolling = previous.rolling_mean + 0.1 * (30.0 - previous.rolling_mean);
    assert!(
        (now.rolling_mean - rolling).abs() < 1e-9,
        "rolling mean {} vs {rolling}",
        now.rolling_mean
    );

    // And a second restart keeps the new write too.
    server.restart().await;
    let mut client = server.client().await;
    assert_eq!(read_back(&mut client, "dur-unary").await.len(), 3);
}

crate::on_both_engines!(durability_survives_restart,);
