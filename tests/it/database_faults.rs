//! PostgreSQL taken away and brought back under a running server (issue
//! 15): `/readyz` turns 503 and health `NOT_SERVING`, calls fail with
//! `UNAVAILABLE` "the database is unreachable" within their deadline, and
//! once PostgreSQL is back the server serves again by itself, with nothing
//! it acknowledged lost. The test owns its PostgreSQL (the shared one
//! serves the other tests).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sensorhub_grpc::testing::{TestOptions, TestServer, read_back, reading, unix_now};
use sensorhub_store_postgres::testing::TestPostgres;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::{http, pg_proxy::PgProxy};

/// How soon the server must notice, counted from the moment the database
/// went away (issue 15: within 2 s). The product's own bound is 1 s (a
/// probe every 250 ms, given up after 750 ms; a stopped server closes the
/// listener's connection at once); the other second is for a loaded
/// machine, where each poll of the test (an HTTP GET and a health call,
/// every 50 ms) and the server's timers may run late by some hundreds of
/// milliseconds. A product slower than 2 s fails this, however loaded.
const NOTICE: Duration = Duration::from_secs(2);

async fn channel(server: &TestServer) -> Channel {
    sensorhub_grpc::client::endpoint(&server.client_config())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

async fn health(client: &mut HealthClient<Channel>) -> i32 {
    client
        .check(HealthCheckRequest {
            service: "SensorService".into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status
}

async fn readyz(port: u16) -> (u16, String) {
    tokio::task::spawn_blocking(move || http::get(port, "/readyz"))
        .await
        .expect("readyz")
}

/// Polls until `/readyz` answers `code` and health says `status`; returns how long it took.
async fn wait_for(
    port: u16,
    health_client: &mut HealthClient<Channel>,
    code: u16,
    status: ServingStatus,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let (got, body) = readyz(port).await;
        if got == code && health(health_client).await == status as i32 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "no /readyz {code} and health {status:?} within {limit:?} (last: {got} {body:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server on a fresh database of the shared PostgreSQL, reached through a
/// proxy the test can freeze (with the HTTP listener when `http`). The proxy
/// comes first, so that it outlives the server when both are dropped.
async fn server_behind_proxy(http: bool) -> (PgProxy, TestServer) {
    let pg = tokio::task::spawn_blocking(TestPostgres::shared)
        .await
        .unwrap();
    let database = pg.fresh_database();
    let proxy = PgProxy::start(pg.port()).await;
    let server = TestServer::start_with(TestOptions {
        database_url: Some(format!(
            "postgres://postgres:{}@127.0.0.1:{}/{database}?sslmode=disable",
            sensorhub_store_postgres::testing::PASSWORD,
            proxy.port()
        )),
        http,
        ..TestOptions::default()
    })
    .await;
    (proxy, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_faults_an_unreachable_database_is_reported_and_recovered_from() {
    let pg = Arc::new(
        tokio::task::spawn_blocking(TestPostgres::start_own)
            .await
            .expect("own PostgreSQL"),
    );
    let url = {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.url_for(&pg.fresh_database()))
            .await
            .unwrap()
    };
    let server = TestServer::start_with(TestOptions {
        database_url: Some(url),
        http: true,
        ..TestOptions::default()
    })
    .await;
    let port = server.http_addr.expect("http listener").port();
    let mut client = server.client().await;
    let mut health_client = HealthClient::new(channel(&server).await);
    let base = unix_now() - 100;
    let mut acked = Vec::new();
    for i in 0..10 {
        let r = reading("fault", 20.0 + i as f64, base + i);
        client.send_single_reading(r.clone()).await.expect("unary");
        acked.push(r);
    }
    assert_eq!(readyz(port).await.0, 200);
    assert_eq!(
        health(&mut health_client).await,
        ServingStatus::Serving as i32
    );

    // Counted from before the stop: pg_ctl's fast shutdown ends the
    // connections first and returns once the server is gone.
    let stopping = Instant::now();
    let stopped = {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || {
            pg.stop();
            Instant::now()
        })
        .await
        .unwrap()
    };
    let noticed = wait_for(
        port,
        &mut health_client,
        503,
        ServingStatus::NotServing,
        NOTICE.saturating_sub(stopping.elapsed()),
    )
    .await;
    eprintln!(
        "not ready {:?} after the stop began ({noticed:?} after pg_ctl returned, which took {:?})",
        stopping.elapsed(),
        stopped - stopping
    );
    let body = readyz(port).await.1;
    assert!(body.contains("the database is unreachable"), "{body}");

    // A call fails fast and says why, well within its deadline.
    let started = Instant::now();
    let mut request = tonic::Request::new(reading("fault", 30.0, base + 50));
    request.set_timeout(Duration::from_secs(8));
    let status = client
        .send_single_reading(request)
        .await
        .expect_err("no database, no acknowledgement");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("the database is unreachable"),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the call took {:?}",
        started.elapsed()
    );
    let status = client
        .get_sensor_stats(sensorhub_proto::StatsRequest::default())
        .await
        .expect_err("no database, no statistics");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.restart())
            .await
            .unwrap();
    }
    let back = wait_for(
        port,
        &mut health_client,
        200,
        ServingStatus::Serving,
        Duration::from_secs(30),
    )
    .await;
    eprintln!("ready again {back:?} after PostgreSQL restarted");
    // Serving by itself: writes and reads work, and nothing acknowledged is lost.
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = reading("fault", 25.0, base + 60);
    loop {
        match client.send_single_reading(after.clone()).await {
            Ok(_) => break,
            Err(status) if Instant::now() < deadline && status.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("no write after the restart: {status:?}"),
        }
    }
    acked.push(after);
    assert_eq!(read_back(&mut client, "fault").await, acked);
}

/// A database that stops answering without closing anything (a paused
/// host, a partition): no error arrives, only silence. The proxy between
/// the server and PostgreSQL holds every byte; `/readyz` and health must
/// still turn within 2 s, a call ends by its deadline rather than hang,
/// and once the database answers again the server serves by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_faults_a_database_that_stops_answering_is_noticed_within_2_s() {
    let (proxy, server) = server_behind_proxy(true).await;
    let port = server.http_addr.expect("http listener").port();
    let mut client = server.client().await;
    let mut health_client = HealthClient::new(channel(&server).await);
    let base = unix_now() - 100;
    let before = reading("silent", 21.0, base);
    client
        .send_single_reading(before.clone())
        .await
        .expect("unary");
    wait_for(
        port,
        &mut health_client,
        200,
        ServingStatus::Serving,
        NOTICE,
    )
    .await;

    let frozen = Instant::now();
    proxy.freeze();
    wait_for(
        port,
        &mut health_client,
        503,
        ServingStatus::NotServing,
        NOTICE,
    )
    .await;
    eprintln!(
        "not ready {:?} after the database fell silent",
        frozen.elapsed()
    );
    let body = readyz(port).await.1;
    assert!(body.contains("the database is unreachable"), "{body}");
    assert!(body.contains("no answer within 750 ms"), "{body}");

    // A read ends at its deadline, never later (tonic's client reports its
    // own expired timer as CANCELLED "Timeout expired").
    let mut request = tonic::Request::new(sensorhub_proto::StatsRequest::default());
    request.set_timeout(Duration::from_secs(1));
    let asked = Instant::now();
    let status = client
        .get_sensor_stats(request)
        .await
        .expect_err("no answer from the database");
    assert!(
        matches!(
            status.code(),
            Code::DeadlineExceeded | Code::Cancelled | Code::Unavailable
        ),
        "{status:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "the call took {:?}",
        asked.elapsed()
    );

    proxy.thaw();
    let back = wait_for(
        port,
        &mut health_client,
        200,
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await;
    eprintln!("ready again {back:?} after the database answered again");
    let after = reading("silent", 22.0, base + 1);
    client
        .send_single_reading(after.clone())
        .await
        .expect("a write once the database answers");
    assert_eq!(read_back(&mut client, "silent").await, vec![before, after]);
}

/// A database that stays silent, and calls that set no deadline: neither a
/// write nor a read may wait for as long as the silence lasts. Each ends
/// after the engine's answer limit (10 s) with `UNAVAILABLE`; the write's
/// message says that nothing of it was stored (no `COMMIT` had been sent),
/// and once the database answers again the read-back shows exactly that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_faults_calls_without_a_deadline_end_when_the_database_stays_silent() {
    let (proxy, server) = server_behind_proxy(false).await;
    let mut client = server.client().await;
    let base = unix_now() - 100;
    let before = reading("unanswered", 21.0, base);
    client
        .send_single_reading(before.clone())
        .await
        .expect("unary");

    // Connections for both calls in the pool, so that each call meets the
    // silence in its statement and not in opening a connection (which the
    // pool gives up on by itself, after 5 s).
    let (mut warm_a, mut warm_b) = (client.clone(), client.clone());
    let stats = || sensorhub_proto::StatsRequest::default();
    let (a, b) = tokio::join!(
        warm_a.get_sensor_stats(stats()),
        warm_b.get_sensor_stats(stats())
    );
    a.expect("stats");
    b.expect("stats");

    proxy.freeze();
    let asked = Instant::now();
    let (mut writer, mut reader) = (client.clone(), client.clone());
    let ((write, write_took), (read, read_took)) =
        tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(
                async {
                    let write = writer
                        .send_single_reading(reading("unanswered", 99.0, base + 1))
                        .await;
                    (write.map(drop), asked.elapsed())
                },
                async {
                    let read = reader.get_sensor_stats(stats()).await;
                    (read.map(drop), asked.elapsed())
                },
            )
        })
        .await
        .expect("calls with no deadline must end while the database is silent");
    let write = write.expect_err("no answer from the database");
    let read = read.expect_err("no answer from the database");
    eprintln!("the write ended after {write_took:?}, the read after {read_took:?}");
    for status in [&write, &read] {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("the database is unreachable"),
            "{status:?}"
        );
    }
    // The writer's connection was in the pool: its transaction met the
    // silence, and the answer limit, not something else, ended it.
    assert!(
        write.message().contains("no answer within 10 s")
            && write.message().contains("nothing of this write was stored"),
        "{write:?}"
    );
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(25)).contains(&write_took),
        "the write took {write_took:?}"
    );
    assert!(
        read_took < Duration::from_secs(25),
        "the read took {read_took:?}"
    );

    proxy.thaw();
    let after = reading("unanswered", 22.0, base + 2);
    let answered = Instant::now();
    loop {
        match client.send_single_reading(after.clone()).await {
            Ok(_) => break,
            Err(status) if answered.elapsed() < Duration::from_secs(10) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("still failing 10 s after the database answered: {status:?}"),
        }
    }
    assert_eq!(
        read_back(&mut client, "unanswered").await,
        vec![before, after]
    );
}
