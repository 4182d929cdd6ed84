//! Bidirectional chat: each reading is stored and answered with
//! "Received <temperature>" while the client's side is still open; a reading
//! above the alert maximum also produces an ALERT message.

use sensorhub_grpc::testing::TestOptions;
use std::time::Duration;

use sensorhub_grpc::testing::TestServer;
use sensorhub_grpc::testing::{read_back, reading, unix_now};
use sensorhub_proto::{SensorReading, ServerMessage, ServerMessageKind, StatsRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};
use tonic_types::StatusExt;

const STEP_TIMEOUT: Duration = Duration::from_secs(5);

async fn next_message(replies: &mut Streaming<ServerMessage>) -> ServerMessage {
    tokio::time::timeout(STEP_TIMEOUT, replies.message())
        .await
        .expect("a reply while the client's side is still open")
        .expect("chat stream healthy")
        .expect("chat stream still open")
}

fn assert_received(reply: &ServerMessage, expected_text: &str) {
    assert_eq!(reply.message, expected_text);
    assert_eq!(reply.kind, ServerMessageKind::Received as i32, "{reply:?}");
    assert!(reply.alert.is_none(), "{reply:?}");
    let now = unix_now();
    assert!(
        (reply.server_time - now).abs() <= 5,
        "server_time {} is not close to now {now}",
        reply.server_time
    );
}

async fn test_bidirectional_streaming(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut client = server.client().await;
    let mut reader = server.client().await;
    let t = unix_now() - 120;

    let (tx, rx) = mpsc::channel::<SensorReading>(1);
    let mut replies =
        tokio::time::timeout(STEP_TIMEOUT, client.sensor_chat(ReceiverStream::new(rx)))
            .await
            .expect("chat opened in time")
            .expect("SensorChat")
            .into_inner();

    // Python's float repr, including the forms Rust prints differently.
    let sent = [
        (reading("chat", 22.0, t), "Received 22.0"),
        (reading("chat", 21.5, t + 1), "Received 21.5"),
        (reading("chat-repr", -0.5, t), "Received -0.5"),
        (reading("chat", 23.456789, t + 2), "Received 23.456789"),
        (reading("chat-repr", 0.0001, t + 1), "Received 0.0001"),
        (reading("chat", 50.0, t + 3), "Received 50.0"),
        (reading("chat-repr", 1e-05, t + 2), "Received 1e-05"),
        (
            reading("chat", 0.1 + 0.2, t + 4),
            "Received 0.30000000000000004",
        ),
        // (-0.0 is left out: prost, like any proto3 encoder that compares
        // with `== 0.0`, does not put it on the wire, so the server sees 0.0.)
    ];

    for (i, (r, text)) in sent.iter().enumerate() {
        tx.send(r.clone())
            .await
            .expect("send while the stream is open");
        let reply = next_message(&mut replies).await;
        assert_received(&reply, text);

        // Acknowledged means stored: it already reads back, mid-conversation.
        let stored = read_back(&mut reader, &r.sensor_id).await;
        let sent_so_far = sent[..=i]
            .iter()
            .filter(|(s, _)| s.sensor_id == r.sensor_id)
            .count();
        assert_eq!(stored.len(), sent_so_far, "after reply {i}");
        assert_eq!(
            stored.last(),
            Some(r),
            "reading {i} stored before its reply"
        );

        if r.temperature > 45.0 {
            let alert_msg = next_message(&mut replies).await;
            assert_eq!(
                alert_msg.kind,
                ServerMessageKind::Alert as i32,
                "{alert_msg:?}"
            );
            let alert = alert_msg.alert.as_ref().expect("alert details");
            assert_eq!(alert.rule, "above_max");
            assert_eq!(alert.sensor_id, "chat");
            assert_eq!(alert.temperature, 50.0);
            assert_eq!(alert.timestamp, r.timestamp);
            assert_eq!(alert.threshold, 45.0);
            assert!(alert_msg.message.contains("chat"), "{}", alert_msg.message);
            assert!((alert_msg.server_time - unix_now()).abs() <= 5);
        }
    }

    // Closing our side ends the conversation cleanly, with nothing more owed.
    drop(tx);
    let end = tokio::time::timeout(STEP_TIMEOUT, replies.message())
        .await
        .expect("stream ends in time");
    assert!(matches!(end, Ok(None)), "{end:?}");

    for sensor in ["chat", "chat-repr"] {
        let want: Vec<_> = sent
            .iter()
            .filter(|(r, _)| r.sensor_id == sensor)
            .map(|(r, _)| r.clone())
            .collect();
        let got = read_back(&mut client, sensor).await;
        assert_eq!(got, want, "{sensor}");
        // Bit-exact, not just approximately equal.
        let bits = |v: &[SensorReading]| {
            v.iter()
                .map(|r| r.temperature.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&got), bits(&want), "{sensor}");
    }
    let stats = client
        .get_sensor_stats(StatsRequest {
            sensor_id: "chat".into(),
            ..Default::default()
        })
        .await
        .expect("stats")
        .into_inner()
        .sensors;
    assert_eq!(stats.len(), 1);
    assert_eq!(
        (stats[0].count, stats[0].alerts, stats[0].max),
        (5, 1, 50.0)
    );
}

/// A refused reading ends the chat with INVALID_ARGUMENT after acknowledging
/// everything before it; it and nothing after it is stored.
async fn test_bidirectional_streaming_refusal(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut client = server.client().await;
    let t = unix_now() - 60;

    let (tx, rx) = mpsc::channel::<SensorReading>(4);
    let mut replies = client
        .sensor_chat(ReceiverStream::new(rx))
        .await
        .expect("SensorChat")
        .into_inner();
    tx.send(reading("chat-bad", 20.0, t)).await.unwrap();
    assert_received(&next_message(&mut replies).await, "Received 20.0");
    tx.send(reading("chat-bad", 20.5, 0)).await.unwrap();

    let status = tokio::time::timeout(STEP_TIMEOUT, replies.message())
        .await
        .expect("refusal in time")
        .expect_err("timestamp 0 is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("#1") && status.message().contains("timestamp"),
        "{}",
        status.message()
    );
    assert_eq!(
        status
            .metadata()
            .get("sensorhub-stored-count")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("1".to_owned())
    );
    let details = status.get_details_bad_request().expect("BadRequest detail");
    assert_eq!(details.field_violations[0].field, "stream[1].timestamp");
    // Sending after the refusal is pointless but must not store anything.
    let _ = tx.send(reading("chat-bad", 21.0, t + 1)).await;
    drop(tx);

    assert_eq!(
        read_back(&mut client, "chat-bad").await,
        vec![reading("chat-bad", 20.0, t)]
    );
}

crate::on_both_engines!(
    test_bidirectional_streaming,
    test_bidirectional_streaming_refusal,
);
