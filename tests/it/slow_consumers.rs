//! Slow consumers: a client that stops reading its answers must not make
//! the server buffer without bound. A chat client that keeps sending but
//! never reads its replies is held back by flow control (the server stops
//! taking readings), and a history reader that pauses holds at most a page
//! or two in the server. When they read again, everything arrives and
//! nothing was lost.

use std::time::{Duration, Instant};

/// How often a settling value is sampled, and for how many samples in a row
/// it must not move before the test takes it.
const POLL: Duration = Duration::from_millis(100);
const SETTLED_POLLS: u32 = 5;
/// RSS moves by a few pages on its own.
const RSS_NOISE: u64 = 256 * 1024;

use futures_util::StreamExt;
use sensorhub_grpc::testing::{reading, unix_now};
use sensorhub_proto::{SensorRequest, StatsRequest};
use spawned_server::{SpawnedServer, client};

use crate::support::spawned_server;

const TOKEN: &str = "slow-consumer-token";
/// Growth of the server's resident memory that counts as bounded.
const BOUND: u64 = 48 * 1024 * 1024;

async fn stored(server: &SpawnedServer, sensor: &str) -> u64 {
    client(&server.url(), TOKEN)
        .await
        .get_sensor_stats(StatsRequest {
            sensor_id: sensor.to_owned(),
            ..Default::default()
        })
        .await
        .expect("stats")
        .into_inner()
        .sensors
        .first()
        .map_or(0, |s| s.count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_a_chat_that_never_reads_is_held_back_not_buffered() {
    const SENT: u64 = 150_000;
    let dir = tempfile::tempdir().unwrap();
    let server = SpawnedServer::start(dir.path(), TOKEN, &[("OTEL_SDK_DISABLED", "true".into())]);
    let baseline = server.rss_bytes();

    let now = unix_now();
    let readings = futures_util::stream::iter(0..SENT).map(move |i| {
        reading(
            "slow-chat",
            20.0 + (i % 7) as f64 * 0.1,
            now - (i % 600) as i64,
        )
    });
    let mut replies = client(&server.url(), TOKEN)
        .await
        .sensor_chat(readings)
        .await
        .expect("chat opens")
        .into_inner();

    // Not reading: the server fills its reply window and stops taking
    // readings; wait until the count stored stops moving.
    let mut held = stored(&server, "slow-chat").await;
    let mut unchanged = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while unchanged < SETTLED_POLLS || held == 0 {
        assert!(Instant::now() < deadline, "the chat never settled: {held}");
        tokio::time::sleep(POLL).await;
        let now = stored(&server, "slow-chat").await;
        unchanged = if now == held { unchanged + 1 } else { 0 };
        held = now;
    }
    let grown = server.rss_bytes().saturating_sub(baseline);
    eprintln!(
        "chat: {held} of {SENT} taken while not reading; RSS +{} KiB",
        grown >> 10
    );
    assert!(
        held < SENT,
        "the server took all {SENT} readings from a client that reads nothing"
    );
    assert!(grown < BOUND, "RSS grew {} MiB", grown >> 20);

    // Reading again: every reading is acknowledged, in order, and stored.
    let mut received = 0u64;
    while let Some(reply) = tokio::time::timeout(Duration::from_secs(30), replies.message())
        .await
        .expect("replies keep coming")
        .expect("no error")
    {
        if reply.message.starts_with("Received") {
            received += 1;
        }
    }
    assert_eq!(received, SENT);
    assert_eq!(stored(&server, "slow-chat").await, SENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_a_paused_history_reader_holds_a_page_not_the_history() {
    const HISTORY: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let server = SpawnedServer::start(dir.path(), TOKEN, &[("OTEL_SDK_DISABLED", "true".into())]);
    let now = unix_now();
    let history = futures_util::stream::iter(0..HISTORY)
        .map(move |i| reading("slow-history", 21.0, now - 6_000 + (i / 200) as i64));
    let ack = client(&server.url(), TOKEN)
        .await
        .stream_sensor_readings(history)
        .await
        .expect("seed the history")
        .into_inner();
    assert_eq!(ack.count, HISTORY);
    let baseline = server.rss_bytes();

    let mut pages = client(&server.url(), TOKEN)
        .await
        .get_sensor_readings(SensorRequest {
            sensor_id: "slow-history".into(),
            ..SensorRequest::default()
        })
        .await
        .expect("history")
        .into_inner();
    assert!(pages.message().await.expect("first").is_some());
    // The server reads ahead until its channel is full; wait until its
    // memory stops growing, then compare.
    let mut rss = server.rss_bytes();
    let mut unchanged = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while unchanged < SETTLED_POLLS {
        assert!(Instant::now() < deadline, "the server's RSS never settled");
        tokio::time::sleep(POLL).await;
        let now = server.rss_bytes();
        unchanged = if now <= rss + RSS_NOISE {
            unchanged + 1
        } else {
            0
        };
        rss = rss.max(now);
    }
    let grown = rss.saturating_sub(baseline);
    eprintln!("history: RSS +{} KiB while paused", grown >> 10);
    assert!(
        grown < BOUND,
        "RSS grew {} MiB while the reader paused",
        grown >> 20
    );

    let mut read = 1u64;
    while let Some(_reading) = pages.message().await.expect("no error") {
        read += 1;
    }
    assert_eq!(read, HISTORY);
}
