//! The ambiguous COMMIT (issue 15): the connection between a replica and
//! PostgreSQL is cut during `COMMIT`, by a proxy (`support::pg_proxy`) that
//! cuts at that message, so each run is the same. Either the server
//! committed (cut after its answer) or it did not (cut before it got the
//! `COMMIT`); the replica cannot tell which. The client stream sees
//! `UNAVAILABLE` saying the connection was lost during COMMIT, that the
//! readings may or may not be stored, and that a retry with the same
//! idempotency key stores them exactly once. The retry does: the count is
//! that of one attempt in both cases, the statistics too.

use sensorhub_grpc::testing::{TestOptions, TestServer, read_back, reading, stats_of, unix_now};
use sensorhub_proto::SensorReading;
use sensorhub_store_postgres::testing::{PASSWORD, TestPostgres};
use tonic::{Code, Request};

use crate::support::pg_proxy::{Cut, PgProxy};

const KEY: &str = "sensorhub-idempotency-key";

fn keyed(
    readings: Vec<SensorReading>,
    key: &str,
) -> Request<tokio_stream::Iter<std::vec::IntoIter<SensorReading>>> {
    let mut request = Request::new(tokio_stream::iter(readings));
    request.metadata_mut().insert(KEY, key.parse().unwrap());
    request
}

async fn commit_cut(cut: Cut) {
    let pg = tokio::task::spawn_blocking(TestPostgres::shared)
        .await
        .unwrap();
    let database = pg.fresh_database();
    let proxy = PgProxy::start(pg.port()).await;
    let url = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{database}?sslmode=disable",
        proxy.port()
    );
    let server = TestServer::start_with(TestOptions {
        database_url: Some(url),
        ..TestOptions::default()
    })
    .await;
    let mut client = server.client().await;
    let sensor = format!("commit-{cut:?}");
    let base = unix_now() - 600;
    let sent: Vec<SensorReading> = (0..50)
        .map(|i| reading(&sensor, 20.0 + (i % 10) as f64, base + i))
        .collect();

    // The schema's transaction is behind us: the next COMMIT is a group commit.
    proxy.cut_next_commit(cut);
    let status = client
        .stream_sensor_readings(keyed(sent.clone(), "commit-lost-0001"))
        .await
        .expect_err("the first attempt's COMMIT was cut");
    assert_eq!(proxy.cuts(), 1, "the proxy cut one COMMIT");
    eprintln!(
        "{cut:?}: the client saw {:?}: {}",
        status.code(),
        status.message()
    );
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    for says in [
        "the database is unreachable",
        "the connection was lost during COMMIT",
        "may or may not be stored",
        "retry with the same idempotency key",
    ] {
        assert!(status.message().contains(says), "{says:?} in {status:?}");
    }
    let stored_by_first = pg
        .psql(
            &database,
            &format!("SELECT count(*) FROM readings WHERE sensor_id = '{sensor}'"),
        )
        .expect("count");
    let expected_first = match cut {
        Cut::BeforeCommit => "0",
        Cut::AfterCommit => "50",
    };
    assert_eq!(
        stored_by_first, expected_first,
        "what the first attempt left"
    );

    // The retry, same key, same readings: answered with the full count,
    // every reading stored once, the statistics counting each once.
    for _ in 0..2 {
        let ack = client
            .stream_sensor_readings(keyed(sent.clone(), "commit-lost-0001"))
            .await
            .expect("the retry")
            .into_inner();
        assert_eq!(
            (ack.message.as_str(), ack.count),
            ("All readings stored.", 50)
        );
    }
    assert_eq!(read_back(&mut client, &sensor).await, sent);
    let stats = stats_of(&mut client, &sensor).await.expect("statistics");
    assert_eq!(stats.count, 50, "counted once: {stats:?}");
    assert_eq!(
        pg.psql(&database, "SELECT count(*) FROM readings").unwrap(),
        "50"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_lost_after_the_server_committed_a_keyed_retry_counts_once() {
    commit_cut(Cut::AfterCommit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_lost_before_the_server_got_it_a_keyed_retry_stores_once() {
    commit_cut(Cut::BeforeCommit).await;
}
