//! The gRPC listener's connection metrics, from a real `sensorhub serve`
//! over real TLS: gRFC A118's `grpc.server.tls.handshakes` by result and
//! resumption (switched on with `--enable-metrics`, off without it), and
//! `sensorhub.connections.{created,open,closed}`, whose closes carry the
//! reason and add up to what was created.

use std::time::{Duration, Instant};

use sensorhub_pki as pki;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::support::attacker::{ServeProcess, tls_connector};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 0x4, 0, 0, 0, 0, 0];

/// The value of the sample `name{…}` whose labels include every one of
/// `labels` (`key="value"`), summed over the series that match.
fn value(page: &str, name: &str, labels: &[&str]) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn handshakes(page: &str, labels: &[&str]) -> f64 {
    value(page, "grpc_server_tls_handshakes_total", labels)
}

fn closed(page: &str, reason: &str) -> f64 {
    value(
        page,
        "sensorhub_connections_closed_total",
        &[&format!("sensorhub_close_reason=\"{reason}\"")],
    )
}

/// A TLS connection through `connector` that gets as far as the server's
/// first HTTP/2 frame (reading it also reads the session tickets the server
/// sent after the handshake), then closes.
async fn tls_then_close(server: &ServeProcess, connector: &tokio_rustls::TlsConnector) {
    let tcp = TcpStream::connect(server.grpc).await.unwrap();
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake");
    tls.write_all(&[PREFACE, SETTINGS].concat()).await.unwrap();
    let mut frame = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut frame))
        .await
        .expect("the server's SETTINGS in time")
        .unwrap();
    assert_eq!(frame[3], 0x4, "a SETTINGS frame first: {frame:?}");
    // Close our side, then read to the end: a socket closed with unread
    // bytes would send a reset instead.
    tls.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest)).await;
}

/// Polls `/metrics` until `done` holds for it; the last page either way.
async fn metrics_until(server: &ServeProcess, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = server.metrics();
        if done(&page) || Instant::now() > deadline {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn handshakes_by_result_and_resumption_and_connections_by_close_reason() {
    let server = ServeProcess::start(&[
        "--enable-metrics",
        "grpc.server.tls.handshakes,sensorhub.connection.duration",
        "--handshake-timeout",
        "1s",
    ]);

    // A sensor's call: a full handshake.
    server.normal_call("handshakes").await.unwrap();
    // Two connections with one client's session cache: the second resumes
    // the first's session.
    let connector = tls_connector(&server.certs.ca_cert);
    tls_then_close(&server, &connector).await;
    tls_then_close(&server, &connector).await;

    // A client whose CA was made again (the same name, another key) finds
    // that the server's certificate's signature does not verify, and says so.
    let dir = tempfile::tempdir().unwrap();
    let other = pki::generate(&[]).unwrap().write_to(dir.path()).unwrap();
    let tcp = TcpStream::connect(server.grpc).await.unwrap();
    let refused = tls_connector(&other.ca_cert)
        .connect("localhost".try_into().unwrap(), tcp)
        .await;
    assert!(refused.is_err(), "another CA's client accepted the server");

    // Plaintext HTTP/2 to the TLS port.
    let mut plain = TcpStream::connect(server.grpc).await.unwrap();
    plain.write_all(PREFACE).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut rest)).await;

    // Connects and closes at once; connects and says nothing.
    drop(TcpStream::connect(server.grpc).await.unwrap());
    let silent = TcpStream::connect(server.grpc).await.unwrap();

    // The silent one is closed at the handshake deadline.
    let page = metrics_until(&server, |page| {
        handshakes(page, &[]) >= 7.0
            && value(page, "sensorhub_connections_closed_total", &[]) >= 7.0
    })
    .await;
    let result = |r: &str| format!("grpc_tls_handshake_result=\"{r}\"");
    let full = "grpc_tls_handshake_resumed=\"FULL_HANDSHAKE\"".to_owned();
    let resumed = "grpc_tls_handshake_resumed=\"RESUMED_HANDSHAKE\"".to_owned();
    let expected = [
        (vec![result("SUCCESS"), full], 2.0),
        (vec![result("SUCCESS"), resumed], 1.0),
        (vec![result("SIGNATURE_VERIFICATION_FAILED")], 1.0),
        (vec![result("UNEXPECTED_MESSAGE")], 1.0),
        (vec![result("PEER_CONNECTION_CLOSED")], 1.0),
        (vec![result("HANDSHAKE_TIMEOUT")], 1.0),
    ];
    for (labels, count) in &expected {
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        assert_eq!(handshakes(&page, &labels), *count, "{labels:?}\n{page}");
    }
    // Every handshake is one of those; a failed one says nothing of resumption.
    assert_eq!(handshakes(&page, &[]), 7.0, "{page}");
    assert!(
        !page
            .lines()
            .any(|l| l.starts_with("grpc_server_tls_handshakes_total{")
                && !l.contains("SUCCESS")
                && l.contains("grpc_tls_handshake_resumed")),
        "{page}"
    );

    // Seven connections created, seven closed, none open: the four failed
    // handshakes (also refusals) and the three served ones, which their
    // clients closed.
    assert_eq!(
        value(&page, "sensorhub_connections_created_total", &[]),
        7.0,
        "{page}"
    );
    assert_eq!(
        value(&page, "sensorhub_connections_closed_total", &[]),
        7.0,
        "{page}"
    );
    assert_eq!(
        value(&page, "sensorhub_connections_open", &[]),
        0.0,
        "{page}"
    );
    assert_eq!(closed(&page, "tls_handshake"), 4.0, "{page}");
    assert_eq!(closed(&page, "peer_closed"), 3.0, "{page}");
    assert_eq!(
        value(
            &page,
            "sensorhub_connections_refused_total",
            &["sensorhub_refusal_reason=\"tls_handshake\""]
        ),
        4.0,
        "{page}"
    );
    // Each one's lifetime, by the same reasons.
    assert_eq!(
        value(&page, "sensorhub_connection_duration_seconds_count", &[]),
        7.0,
        "{page}"
    );
    drop((silent, plain));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_handshake_counter_is_off_unless_enabled() {
    let server = ServeProcess::start(&[]);
    server.normal_call("no-handshake-metric").await.unwrap();
    let page = metrics_until(&server, |page| {
        value(page, "sensorhub_connections_created_total", &[]) >= 1.0
    })
    .await;
    assert_eq!(
        value(&page, "sensorhub_connections_created_total", &[]),
        1.0,
        "{page}"
    );
    assert!(!page.contains("grpc_server_tls_handshakes"), "{page}");
    assert!(!page.contains("sensorhub_connection_duration"), "{page}");
}
