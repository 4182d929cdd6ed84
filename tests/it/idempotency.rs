//! The `sensorhub-idempotency-key` metadata (issue 21): a unary call or a
//! client stream retried with the same key is stored once, also across a
//! restart, and answered as the first attempt would have been; a stream's
//! retry stores only what the first attempt did not; a bad key is
//! `INVALID_ARGUMENT` naming the metadata key; a key reused for other
//! readings is `FAILED_PRECONDITION`.

use sensorhub_grpc::testing::TestOptions;
use std::time::Duration;

use sensorhub_grpc::{
    SensorClient,
    testing::{TestServer, read_back, reading, unix_now},
};
use sensorhub_proto::{SensorReading, StatsRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request};

const KEY: &str = "sensorhub-idempotency-key";

fn keyed<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(KEY, key.parse().unwrap());
    request
}

async fn count(client: &mut SensorClient, sensor: &str) -> u64 {
    let reply = client
        .get_sensor_stats(StatsRequest {
            sensor_id: sensor.into(),
            ..Default::default()
        })
        .await
        .expect("GetSensorStats")
        .into_inner();
    reply.sensors.first().map_or(0, |s| s.count)
}

async fn idempotency_a_unary_retry_after_its_deadline_is_stored_once_across_a_restart(
    options: TestOptions,
) {
    let mut server = TestServer::start_with(options.clone()).await;
    let mut client = server.client().await;
    let r = reading("idem-unary", 21.5, unix_now() - 60);
    // The first attempt's deadline expires at once: the client cannot
    // know whether the reading was stored.
    let mut first = keyed(r.clone(), "unary-0001");
    first.set_timeout(Duration::from_nanos(1));
    let outcome = client.send_single_reading(first).await;
    eprintln!(
        "the first attempt: {:?}",
        outcome.as_ref().map_err(|s| s.code())
    );
    if let Err(status) = &outcome {
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{status:?}"
        );
    }
    for _ in 0..2 {
        let ack = client
            .send_single_reading(keyed(r.clone(), "unary-0001"))
            .await
            .expect("the retry")
            .into_inner();
        assert_eq!((ack.message.as_str(), ack.count), ("Reading received.", 1));
    }
    assert_eq!(count(&mut client, "idem-unary").await, 1);

    server.restart().await;
    let mut client = server.client().await;
    let ack = client
        .send_single_reading(keyed(r.clone(), "unary-0001"))
        .await
        .expect("the retry after a restart")
        .into_inner();
    assert_eq!(ack.count, 1);
    assert_eq!(count(&mut client, "idem-unary").await, 1);
    // Another key is another write.
    client
        .send_single_reading(keyed(r, "unary-0002"))
        .await
        .expect("a new key");
    assert_eq!(count(&mut client, "idem-unary").await, 2);
}

async fn idempotency_a_stream_retry_stores_only_what_the_first_attempt_did_not(
    options: TestOptions,
) {
    let mut server = TestServer::start_with(options.clone()).await;
    let mut client = server.client().await;
    let t = unix_now() - 100_000;
    let all: Vec<SensorReading> = (0..20_000)
        .map(|i| reading("idem-stream", 20.0 + (i % 40) as f64 * 0.25, t + i))
        .collect();

    // The first attempt: 9,000 readings sent, then the call is dropped.
    let (tx, rx) = mpsc::channel(1024);
    let mut first_client = client.clone();
    let call = tokio::spawn(async move {
        first_client
            .stream_sensor_readings(keyed(ReceiverStream::new(rx), "stream-0001"))
            .await
    });
    for r in &all[..9_000] {
        tx.send(r.clone()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    call.abort();
    let _ = call.await;
    drop(tx);
    let stored_by_first = count(&mut client, "idem-stream").await;
    eprintln!("the first attempt stored {stored_by_first} readings");
    assert!(stored_by_first <= 9_000);

    // The retry sends everything: it stores the rest, answers the full count.
    let ack = client
        .stream_sensor_readings(keyed(tokio_stream::iter(all.clone()), "stream-0001"))
        .await
        .expect("the retry")
        .into_inner();
    assert_eq!(
        (ack.message.as_str(), ack.count),
        ("All readings stored.", 20_000)
    );
    assert_eq!(read_back(&mut client, "idem-stream").await, all);

    // After a restart, a third attempt stores nothing and answers the same.
    server.restart().await;
    let mut client = server.client().await;
    let ack = client
        .stream_sensor_readings(keyed(tokio_stream::iter(all.clone()), "stream-0001"))
        .await
        .expect("the retry after a restart")
        .into_inner();
    assert_eq!(ack.count, 20_000);
    assert_eq!(count(&mut client, "idem-stream").await, 20_000);
}

async fn idempotency_a_bad_or_reused_key_is_refused_and_stores_nothing(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut client = server.client().await;
    let r = reading("idem-bad", 20.0, unix_now() - 60);
    for bad in ["has space", &"k".repeat(129)] {
        let status = client
            .send_single_reading(keyed(r.clone(), bad))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(KEY), "{status:?}");
        let status = client
            .stream_sensor_readings(keyed(tokio_stream::iter(vec![r.clone()]), bad))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(KEY), "{status:?}");
    }
    assert_eq!(count(&mut client, "idem-bad").await, 0);

    // The same key for another reading: refused, and nothing stored.
    client
        .send_single_reading(keyed(r.clone(), "reused"))
        .await
        .expect("first use");
    let mut other = r;
    other.temperature = 30.0;
    let status = client
        .send_single_reading(keyed(other, "reused"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().starts_with(KEY), "{status:?}");
    assert_eq!(count(&mut client, "idem-bad").await, 1);
}

crate::on_both_engines!(
    idempotency_a_unary_retry_after_its_deadline_is_stored_once_across_a_restart,
    idempotency_a_stream_retry_stores_only_what_the_first_attempt_did_not,
    idempotency_a_bad_or_reused_key_is_refused_and_stores_nothing,
);
