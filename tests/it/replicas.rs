//! Replicas on one PostgreSQL act as one service (issue 15): what one
//! acknowledged, another reads and follows, with no gap and no repeat; the
//! statistics are those of every reading applied once, in commit order;
//! several replicas may create the schema at once; and a bad database URL
//! or database is refused at start with one line, writing nothing, and
//! never showing the password.

use std::{collections::HashSet, time::Duration};

use sensorhub_core::{AlertRules, Reading, SensorStats};
use sensorhub_grpc::{
    ClientConfig, SensorClient,
    testing::{fresh_database_url, reading, stats_of, unix_now},
};
use sensorhub_proto::{SensorReading, SensorRequest};
use sensorhub_store_postgres::testing::{PASSWORD, TestPostgres};

use crate::support::spawned_server::{Serve, SpawnedServer, refused_at_start};

const TOKEN: &str = "replicas-token";

async fn connect(server: &SpawnedServer) -> SensorClient {
    let mut config = ClientConfig::new(server.url());
    config.token = Some(TOKEN.to_owned());
    sensorhub_grpc::connect(&config).await.expect("connect")
}

/// `n` replicas on the database at `url`, started at once (the schema is
/// created by whichever gets the advisory lock first).
async fn replicas(url: &str, n: usize) -> Vec<SpawnedServer> {
    let starts: Vec<_> = (0..n)
        .map(|_| {
            let url = url.to_owned();
            tokio::task::spawn_blocking(move || SpawnedServer::start_on_database(&url, TOKEN, &[]))
        })
        .collect();
    let mut servers = Vec::new();
    for start in starts {
        servers.push(start.await.expect("replica started"));
    }
    servers
}

/// Writers on two replicas ingest one sensor at once while a follower on a
/// third follows it: the follower gets every reading once; the statistics
/// read through any replica equal the analysis applied to the readings in
/// the order the follower got them (commit order), alerts and EWMA included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_across_replicas_without_gap_or_repeat_and_stats_in_commit_order() {
    let url = fresh_database_url().await;
    let servers = replicas(&url, 3).await;
    let base = unix_now() - 86_400;
    const STREAMS: usize = 2;
    const CHUNKS: usize = 10;
    const CHUNK: usize = 50;
    const UNARY_WRITERS: usize = 3;
    const UNARY: usize = 40;
    // Reading 0 is written first, alone; the writers write 1..total.
    let total = 1 + STREAMS * CHUNKS * CHUNK + UNARY_WRITERS * UNARY;
    // Timestamps name the readings; temperatures swing so that alerts fire.
    let at = move |i: usize| {
        let temperature = match i % 7 {
            0 => 95.0,
            3 => -45.0,
            _ => 20.0 + (i % 13) as f64,
        };
        reading("shared", temperature, base + i as i64)
    };

    let mut follower = connect(&servers[2]).await;
    let mut stream = follower
        .get_sensor_readings(SensorRequest {
            sensor_id: "shared".into(),
            follow: true,
            ..Default::default()
        })
        .await
        .expect("follow")
        .into_inner();
    // The follow's snapshot is taken once the call runs; until the first
    // reading arrives, later ones could still come as history (time order).
    // From then on every reading comes from the tail, in commit order.
    connect(&servers[1])
        .await
        .send_single_reading(at(0))
        .await
        .expect("the first reading");
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the first reading followed")
        .expect("follow stream")
        .expect("a reading");
    assert_eq!(first, at(0));

    let mut writers = Vec::new();
    for s in 0..STREAMS {
        let mut client = connect(&servers[0]).await;
        writers.push(tokio::spawn(async move {
            for c in 0..CHUNKS {
                let first = 1 + (s * CHUNKS + c) * CHUNK;
                let batch: Vec<_> = (first..first + CHUNK).map(at).collect();
                let ack = client
                    .stream_sensor_readings(tokio_stream::iter(batch))
                    .await
                    .expect("client stream on replica 0")
                    .into_inner();
                assert_eq!(ack.count as usize, CHUNK);
            }
        }));
    }
    for u in 0..UNARY_WRITERS {
        let mut client = connect(&servers[1]).await;
        writers.push(tokio::spawn(async move {
            for i in 0..UNARY {
                let index = 1 + STREAMS * CHUNKS * CHUNK + u * UNARY + i;
                client
                    .send_single_reading(at(index))
                    .await
                    .expect("unary on replica 1");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }

    let mut got: Vec<SensorReading> = Vec::with_capacity(total);
    got.push(first);
    while got.len() < total {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the follower on replica 2 stalled at {} of {total} readings",
                    got.len()
                )
            })
            .expect("follow stream")
            .expect("the follow stream does not end");
        got.push(next);
    }
    let mut seen = HashSet::new();
    for r in &got {
        let i = (r.timestamp - base) as usize;
        assert!(i < total, "a reading never sent: {r:?}");
        assert_eq!(r, &at(i), "a reading changed on its way");
        assert!(seen.insert(i), "reading {i} delivered twice");
    }
    assert_eq!(seen.len(), total, "every reading delivered");
    // Nothing more arrives: no repeat after the last.
    assert!(
        tokio::time::timeout(Duration::from_millis(700), stream.message())
            .await
            .is_err(),
        "a reading beyond the {total} written was delivered"
    );

    // The analysis, applied once per reading in commit order.
    let mut expected = SensorStats::new("shared");
    for r in &got {
        expected.observe(
            &Reading {
                sensor_id: r.sensor_id.clone(),
                temperature: r.temperature,
                timestamp: r.timestamp,
            },
            &AlertRules::default(),
        );
    }
    assert!(expected.alerts > 0, "the readings raise alerts");
    for server in &servers {
        let mut client = connect(server).await;
        let s = &stats_of(&mut client, "shared").await.expect("statistics");
        assert_eq!(
            (s.count, s.min, s.max, s.alerts, s.last_timestamp),
            (
                expected.count,
                expected.min,
                expected.max,
                expected.alerts,
                expected.last_timestamp
            ),
            "statistics through {}",
            server.url()
        );
        assert!(
            (s.rolling_mean - expected.rolling_mean).abs() < 1e-9,
            "EWMA {} against {} in commit order",
            s.rolling_mean,
            expected.rolling_mean
        );
    }
}

fn tables(pg: &TestPostgres, database: &str) -> String {
    pg.psql(
        database,
        "SELECT coalesce(string_agg(tablename, ',' ORDER BY tablename), '') FROM pg_tables WHERE schemaname = 'public'",
    )
    .expect("list tables")
}

/// Each bad URL or database is refused at start with one line saying what
/// to fix; nothing is written, and the password is never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_bad_database_urls_and_databases_are_refused_at_start() {
    let pg = tokio::task::spawn_blocking(TestPostgres::shared)
        .await
        .unwrap();
    let port = pg.port();

    let line = refused_at_start(
        Serve::insecure_on_database("mysql://app:pw-scheme-1@127.0.0.1/db", TOKEN),
        "must start with postgres://",
        "pw-scheme-1",
    );
    eprintln!("{line}");

    // Nothing listens on port 1.
    let line = refused_at_start(
        Serve::insecure_on_database(
            "postgres://app:pw-unreach-2@127.0.0.1:1/db?sslmode=disable",
            TOKEN,
        ),
        "the database is unreachable",
        "pw-unreach-2",
    );
    eprintln!("{line}");

    let line = refused_at_start(
        Serve::insecure_on_database(
            &format!("postgres://postgres:wrong-pw-3@127.0.0.1:{port}/postgres?sslmode=disable"),
            TOKEN,
        ),
        "fix the URL's user and password",
        "wrong-pw-3",
    );
    eprintln!("{line}");

    // A user who may connect but not create tables (PostgreSQL 15: only
    // the database owner may create in `public`).
    let db = pg.fresh_database();
    pg.psql(
        &db,
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reader') THEN CREATE ROLE reader LOGIN PASSWORD 'reader-pw-4'; END IF; END $$",
    )
    .expect("create role");
    let line = refused_at_start(
        Serve::insecure_on_database(
            &format!("postgres://reader:reader-pw-4@127.0.0.1:{port}/{db}?sslmode=disable"),
            TOKEN,
        ),
        "may not create sensorhub's tables",
        "reader-pw-4",
    );
    eprintln!("{line}");
    assert_eq!(tables(pg, &db), "", "nothing written");

    // A schema a newer sensorhub made.
    let db = pg.fresh_database();
    pg.psql(
        &db,
        "CREATE TABLE sensorhub_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now()); INSERT INTO sensorhub_schema (version) VALUES (99)",
    )
    .expect("newer schema");
    let line = refused_at_start(
        Serve::insecure_on_database(&pg.url_for(&db), TOKEN),
        "version 99, made by a newer sensorhub",
        PASSWORD,
    );
    eprintln!("{line}");
    assert_eq!(tables(pg, &db), "sensorhub_schema", "nothing changed");

    // --database-url with --data: one or the other.
    let data = tempfile::tempdir().unwrap();
    let mut both = Serve::insecure(data.path(), TOKEN);
    both.command()
        .env("SENSORHUB_DATABASE_URL", pg.url_for(&db));
    let exited = match both.start_or_exit() {
        Ok(_) => panic!("--data with --database-url started"),
        Err(exited) => exited,
    };
    assert!(exited.log.contains("cannot be used with"), "{}", exited.log);
    assert!(!exited.log.contains(PASSWORD), "{}", exited.log);
}

/// A replica's log never shows the password, also while serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_the_password_never_reaches_the_log() {
    let url = fresh_database_url().await;
    let server = SpawnedServer::start_on_database(&url, TOKEN, &[("RUST_LOG", "debug".into())]);
    let mut client = connect(&server).await;
    client
        .send_single_reading(reading("pw-check", 20.0, unix_now() - 5))
        .await
        .expect("unary");
    let log = server.log();
    assert!(log.contains("store opened"), "{log}");
    assert!(
        !log.contains(PASSWORD),
        "the password reached the log:\n{log}"
    );
}
