//! The plain-HTTP health listener: `/healthz` and `/readyz` answer 200 while
//! the server runs.

use std::net::SocketAddr;

use sensorhub_grpc::testing::{TestOptions, TestServer};

use crate::support::http;

/// One GET: (status code, body). Off the runtime's threads, which serve
/// the in-process server.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || http::get(addr.port(), &path))
        .await
        .expect("the GET")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_http_healthz_and_readyz() {
    let server = TestServer::start_with(TestOptions {
        http: true,
        ..Default::default()
    })
    .await;
    let addr = server.http_addr.expect("the HTTP listener is enabled");
    assert_ne!(addr.port(), server.addr.port());

    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(get(addr, "/no-such-path").await.0, 404);

    // The gRPC side is up at the same time.
    let mut client = server.client().await;
    client
        .get_sensor_stats(sensorhub_proto::StatsRequest::default())
        .await
        .expect("gRPC serving beside HTTP health");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_http_is_off_by_default() {
    let server = TestServer::start().await;
    assert!(server.http_addr.is_none());
}
