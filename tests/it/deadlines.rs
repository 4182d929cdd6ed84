//! Per-call deadlines: a call that carries `grpc-timeout` ends with
//! `DEADLINE_EXCEEDED` when it runs out, and the server lets go of it: an
//! endless follow stream cut by its deadline no longer counts as an active
//! stream, and the server goes on serving.

use std::time::{Duration, Instant};

use sensorhub_grpc::testing::{reading, unix_now};
use sensorhub_proto::SensorRequest;
use spawned_server::{SpawnedServer, client};
use tonic::{Code, Request};

use crate::support::exposition;
use crate::support::http;
use crate::support::spawned_server;

const TOKEN: &str = "deadline-token";

/// `sensorhub_streams_active{sensorhub_rpc_kind="server_stream"}` on /metrics.
fn active_server_streams(server: &SpawnedServer) -> f64 {
    let (status, page) = http::get(server.http, "/metrics");
    assert_eq!(status, 200, "{page}");
    let samples = exposition::samples(&page);
    match exposition::series(
        &samples,
        "sensorhub_streams_active",
        &[("sensorhub_rpc_kind", "server_stream")],
    )[..]
    {
        [gauge] => gauge.value,
        _ => panic!("not one server_stream gauge in\n{page}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_end_a_follow_stream_and_free_it_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = SpawnedServer::start(dir.path(), TOKEN, &[]);
    let mut client = client(&server.url(), TOKEN).await;
    client
        .send_single_reading(reading("deadline-1", 20.0, unix_now()))
        .await
        .expect("a reading to follow");

    let mut request = Request::new(SensorRequest {
        sensor_id: "deadline-1".into(),
        follow: true,
        ..SensorRequest::default()
    });
    request.set_timeout(Duration::from_millis(700));
    let started = Instant::now();
    let mut stream = client
        .get_sensor_readings(request)
        .await
        .expect("the follow starts")
        .into_inner();
    assert!(stream.message().await.expect("history").is_some());
    assert_eq!(active_server_streams(&server), 1.0);

    // The follow never ends by itself; the deadline ends it.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the deadline ends the stream");
    let status = end.expect("ends with a status, not a clean end");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() >= Duration::from_millis(600));

    // The server let go of it.
    let freed_by = Instant::now() + Duration::from_secs(5);
    while active_server_streams(&server) != 0.0 {
        assert!(
            Instant::now() < freed_by,
            "the server still holds the stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A unary call with room in its deadline is served as usual.
    let mut unary = Request::new(reading("deadline-1", 21.0, unix_now()));
    unary.set_timeout(Duration::from_secs(5));
    client
        .send_single_reading(unary)
        .await
        .expect("served within its deadline");
}
