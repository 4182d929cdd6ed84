//! The plain-HTTP health listener: `/healthz` and `/readyz` answer 200 while
//! the server runs.

use std::{net::SocketAddr, time::Duration};

use sensorhub_grpc::testing::{TestOptions, TestServer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One HTTP/1.1 GET over a fresh connection: (status code, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut tcp = TcpStream::connect(addr)
            .await
            .expect("connect to the HTTP listener");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.expect("read response");
        let text = String::from_utf8(raw).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("headers and body");
        let status_line = head.lines().next().expect("status line");
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
        let code = parts
            .next()
            .and_then(|c| c.parse().ok())
            .expect("status code");
        (code, body.to_owned())
    })
    .await
    .expect("HTTP answer in time")
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
