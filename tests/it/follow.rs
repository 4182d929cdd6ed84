//! Live tail: `GetSensorReadings` with `follow` sends the history, then every
//! reading stored afterwards, each exactly once; shutdown ends it with
//! `UNAVAILABLE`.

use sensorhub_grpc::testing::TestOptions;
use std::time::Duration;

use sensorhub_grpc::testing::{reading, unix_now};
use sensorhub_grpc::{SensorClient, testing::TestServer};
use sensorhub_proto::{SensorReading, SensorRequest};
use tonic::{Code, Streaming};

const STEP_TIMEOUT: Duration = Duration::from_secs(5);

fn follow(sensor_id: &str) -> SensorRequest {
    SensorRequest {
        sensor_id: sensor_id.to_owned(),
        follow: true,
        ..Default::default()
    }
}

async fn next(stream: &mut Streaming<SensorReading>) -> SensorReading {
    tokio::time::timeout(STEP_TIMEOUT, stream.message())
        .await
        .expect("a reading within the timeout")
        .expect("follow stream healthy")
        .expect("follow stream still open")
}

async fn follow_delivers_history_then_new_readings_once(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut writer = server.client().await;
    let mut follower = server.client().await;
    let t = unix_now() - 600;

    // History, written out of time order.
    let history = vec![
        reading("tail", 21.0, t + 2),
        reading("tail", 20.0, t),
        reading("tail", 22.0, t + 1),
    ];
    for r in &history {
        writer
            .send_single_reading(r.clone())
            .await
            .expect("write history");
    }

    let mut stream = follower
        .get_sensor_readings(follow("tail"))
        .await
        .expect("follow")
        .into_inner();
    let mut got = Vec::new();
    for _ in 0..history.len() {
        got.push(next(&mut stream).await);
    }
    let mut sorted = history.clone();
    sorted.sort_by_key(|r| r.timestamp);
    assert_eq!(got, sorted, "history first, in time order");

    // Written after the subscription started (its history was already sent).
    let live = reading("tail", 23.0, t + 3);
    writer
        .send_single_reading(live.clone())
        .await
        .expect("live write");
    assert_eq!(next(&mut stream).await, live);

    // Other sensors are not delivered; an older timestamp still is (it is new).
    writer
        .send_single_reading(reading("other", 30.0, t + 4))
        .await
        .expect("other sensor");
    let late = reading("tail", 19.0, t - 100);
    writer
        .stream_sensor_readings(tokio_stream::iter(vec![
            late.clone(),
            reading("tail", 24.0, t + 5),
        ]))
        .await
        .expect("streamed live writes");
    assert_eq!(
        next(&mut stream).await,
        late,
        "no duplicate of the previous reading, nothing of `other`"
    );
    assert_eq!(next(&mut stream).await, reading("tail", 24.0, t + 5));

    // Nothing else is pending: the stream stays open and quiet.
    let quiet = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(quiet.is_err(), "unexpected extra message: {quiet:?}");
}

/// Readings written while the subscription is being set up end up either in
/// the history or in the tail: each exactly once, none lost.
async fn follow_under_concurrent_writes_has_no_gap_and_no_duplicate(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut writer = server.client().await;
    let mut follower = server.client().await;
    let t = unix_now() - 10_000;
    let total = 400usize;
    let sent: Vec<_> = (0..total)
        .map(|i| reading("race", i as f64 / 10.0, t + i as i64))
        .collect();

    // The first half is history; the second half races the subscription.
    for r in &sent[..total / 2] {
        writer
            .send_single_reading(r.clone())
            .await
            .expect("history write");
    }
    let rest = sent[total / 2..].to_vec();
    let writes = tokio::spawn(async move {
        for r in rest {
            writer.send_single_reading(r).await.expect("racing write");
        }
    });
    let mut stream = follower
        .get_sensor_readings(follow("race"))
        .await
        .expect("follow")
        .into_inner();
    let mut got = Vec::with_capacity(total);
    while got.len() < total {
        got.push(next(&mut stream).await);
    }
    writes.await.expect("writer task");
    // Timestamps increase with arrival, so history-then-tail is the sent order.
    assert_eq!(got.len(), sent.len());
    assert!(
        got == sent,
        "follow stream lost, repeated or reordered readings"
    );
    let quiet = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
    assert!(quiet.is_err(), "unexpected extra message: {quiet:?}");
}

/// Following a sensor that has sent nothing yet: its first readings arrive.
async fn follow_a_sensor_that_does_not_exist_yet(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut writer = server.client().await;
    let mut follower = server.client().await;
    let t = unix_now() - 60;

    let mut stream = follower
        .get_sensor_readings(follow("newborn"))
        .await
        .expect("follow")
        .into_inner();
    // Whether these land in the (empty) history or in the tail, each arrives once.
    let first = reading("newborn", 20.0, t);
    writer
        .send_single_reading(first.clone())
        .await
        .expect("first write");
    assert_eq!(next(&mut stream).await, first);
    let second = reading("newborn", 21.0, t + 1);
    writer
        .send_single_reading(second.clone())
        .await
        .expect("second write");
    assert_eq!(next(&mut stream).await, second);
}

/// `since`/`until` also filter the live tail.
async fn follow_respects_bounds_in_the_tail(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut writer = server.client().await;
    let mut follower = server.client().await;
    let t = unix_now() - 600;
    writer
        .send_single_reading(reading("bounded", 20.0, t + 10))
        .await
        .expect("history");

    let request = SensorRequest {
        since: t + 10,
        until: t + 20,
        ..follow("bounded")
    };
    let mut stream = follower
        .get_sensor_readings(request)
        .await
        .expect("follow")
        .into_inner();
    assert_eq!(next(&mut stream).await, reading("bounded", 20.0, t + 10));
    writer
        .send_single_reading(reading("bounded", 21.0, t + 25))
        .await
        .expect("after until");
    writer
        .send_single_reading(reading("bounded", 22.0, t + 5))
        .await
        .expect("before since");
    writer
        .send_single_reading(reading("bounded", 23.0, t + 15))
        .await
        .expect("in range");
    assert_eq!(next(&mut stream).await, reading("bounded", 23.0, t + 15));
}

async fn follow_ends_with_unavailable_on_shutdown(options: TestOptions) {
    let mut server = TestServer::start_with(options.clone()).await;
    let mut writer = server.client().await;
    let mut follower = server.client().await;
    let first = reading("stopping", 20.0, unix_now() - 5);
    writer
        .send_single_reading(first.clone())
        .await
        .expect("write");

    let mut stream = follower
        .get_sensor_readings(follow("stopping"))
        .await
        .expect("follow")
        .into_inner();
    assert_eq!(next(&mut stream).await, first);

    server.stop_token().cancel();
    let end = tokio::time::timeout(STEP_TIMEOUT, stream.message())
        .await
        .expect("the follow stream ends promptly on shutdown");
    let status = end.expect_err("ends with a status, not a clean end of stream");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("shutting down"),
        "{}",
        status.message()
    );

    // With the follow stream gone, shutdown does not need the grace period.
    let started = std::time::Instant::now();
    tokio::time::timeout(STEP_TIMEOUT, server.stop())
        .await
        .expect("the server stops");
    let took = started.elapsed();
    // The test server's grace period is 2 s; needing it would mean a call was still open.
    assert!(took < Duration::from_secs(2), "graceful stop took {took:?}");
}

/// `limit` with `follow` is `tail -n N -f`: the last N readings of the
/// history, then the live tail. Without `follow`, `limit` is the first N.
async fn follow_with_a_limit_sends_the_last_n_then_the_tail(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut writer = server.client().await;
    let mut follower = server.client().await;
    let t = unix_now() - 600;
    let history: Vec<_> = (0..10)
        .map(|i| reading("tail-n", 20.0 + i as f64, t + i))
        .collect();
    writer
        .stream_sensor_readings(tokio_stream::iter(history.clone()))
        .await
        .expect("history");

    let first_three = SensorRequest {
        sensor_id: "tail-n".into(),
        limit: 3,
        ..Default::default()
    };
    let mut stream = follower
        .get_sensor_readings(first_three)
        .await
        .expect("history with a limit")
        .into_inner();
    let mut got = Vec::new();
    while let Some(r) = stream.message().await.expect("history stream") {
        got.push(r);
    }
    assert_eq!(got, history[..3], "without follow: the first 3");

    let mut stream = follow_with_limit(&mut follower, "tail-n", 3).await;
    assert_eq!(
        next_n(&mut stream, 3).await,
        history[7..],
        "with follow: the last 3"
    );
    let live = reading("tail-n", 30.0, t + 20);
    writer
        .send_single_reading(live.clone())
        .await
        .expect("live write");
    assert_eq!(next(&mut stream).await, live, "then the tail, no gap");
    let quiet = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(quiet.is_err(), "unexpected extra message: {quiet:?}");

    // A limit larger than the history: all of it, then the tail.
    let mut stream = follow_with_limit(&mut follower, "tail-n", 100).await;
    let mut all = history.clone();
    all.push(live);
    assert_eq!(next_n(&mut stream, 11).await, all);
}

async fn follow_with_limit(
    client: &mut SensorClient,
    sensor_id: &str,
    limit: u64,
) -> Streaming<SensorReading> {
    client
        .get_sensor_readings(SensorRequest {
            limit,
            ..follow(sensor_id)
        })
        .await
        .expect("follow with a limit")
        .into_inner()
}

async fn next_n(stream: &mut Streaming<SensorReading>, n: usize) -> Vec<SensorReading> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(next(stream).await);
    }
    got
}

/// A reading stored while the last-N history is still being sent comes
/// once, after the history (it is not in the history's snapshot), and no
/// reading of the history is skipped.
async fn follow_with_a_limit_has_no_gap_and_no_repeat_when_a_write_lands_mid_history(
    options: TestOptions,
) {
    const HISTORY: usize = 50_000;
    const LIMIT: usize = 40_000;
    let server = TestServer::start_with(options.clone()).await;
    let mut writer = server.client().await;
    let t = unix_now() - 100_000;
    let history: Vec<_> = (0..HISTORY)
        .map(|i| reading("mid-history", (i % 1000) as f64 / 10.0, t + i as i64))
        .collect();
    let ack = writer
        .stream_sensor_readings(tokio_stream::iter(history.clone()))
        .await
        .expect("history")
        .into_inner();
    assert_eq!(ack.count, HISTORY as u64);

    // A reader with small HTTP/2 windows: after its first reading, the
    // server holds at most a few pages and its send buffer (about 20,000
    // readings of ~40 bytes), so most of the 40,000 are still to be read
    // from the store when the live reading is stored.
    let endpoint = sensorhub_grpc::client::endpoint(&server.client_config())
        .expect("endpoint")
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024));
    let channel = endpoint.connect().await.expect("connect");
    let mut follower = sensorhub_grpc::client::client_for(
        channel,
        &server.url(),
        Some(sensorhub_grpc::testing::TEST_TOKEN),
    )
    .expect("client");
    let mut stream = follow_with_limit(&mut follower, "mid-history", LIMIT as u64).await;
    let skipped = HISTORY - LIMIT;
    assert_eq!(
        next(&mut stream).await,
        history[skipped],
        "the history starts at the {LIMIT}th reading from the end"
    );

    // Its timestamp falls inside the part of the history not yet sent.
    let live = reading("mid-history", 99.5, t + (HISTORY as i64) - 5);
    writer
        .send_single_reading(live.clone())
        .await
        .expect("live write");

    for (i, want) in history[skipped + 1..].iter().enumerate() {
        let got = next(&mut stream).await;
        assert_eq!(&got, want, "history reading {} of {LIMIT}", i + 2);
    }
    assert_eq!(
        next(&mut stream).await,
        live,
        "the live reading, once, after the history"
    );
    let quiet = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(quiet.is_err(), "unexpected extra message: {quiet:?}");
}

crate::on_both_engines!(
    follow_delivers_history_then_new_readings_once,
    follow_under_concurrent_writes_has_no_gap_and_no_duplicate,
    follow_a_sensor_that_does_not_exist_yet,
    follow_respects_bounds_in_the_tail,
    follow_ends_with_unavailable_on_shutdown,
    follow_with_a_limit_sends_the_last_n_then_the_tail,
    follow_with_a_limit_has_no_gap_and_no_repeat_when_a_write_lands_mid_history,
);
