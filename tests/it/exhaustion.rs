//! Resource exhaustion, tried as an attacker would against a real
//! `sensorhub serve` process: what each attack makes the server hold is
//! read from `/proc/PID/status` and `/proc/PID/fd` before, during and after,
//! and a normal call must succeed during and after every attack.
//!
//! Each attack is bounded in count and time (a few hundred streams or
//! connections, a few seconds) and only ever targets 127.0.0.0/8.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use tokio::net::TcpStream;

use crate::support::{
    attacker::{
        ATTACKER, H2, MIB, ServeProcess, grpc_outcome, message_declaring, normal_call_on, tcp_from,
    },
    http,
};
use sensorhub_grpc::testing::TEST_TOKEN;

const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
const SEND_SINGLE: &str = "/SensorService/SendSingleReading";

/// gRPC status codes as numbers (what raw clients read).
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAVAILABLE: i32 = 14;
const DEADLINE_EXCEEDED: i32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_partial_health_streams_without_a_token_hold_no_memory() {
    let server = ServeProcess::start(&["--message-timeout", "2s"]);
    server
        .normal_call("before")
        .await
        .expect("a normal call before");
    let (rss_before, fds_before) = (server.rss(), server.fds());

    // 512 streams on two connections, each declaring a 3.9 MB health
    // request and sending 192 KiB of it: before the small decode limit
    // the server buffered all of it, about 100 MiB.
    let mut large = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..2 {
        let mut h2 = server.h2(ATTACKER).await;
        for _ in 0..256 {
            match h2
                .open(HEALTH_CHECK, None, message_declaring(3_900_000, 192 * 1024))
                .await
            {
                Ok((response, send)) => large.push((response, send)),
                Err(e) => panic!("opening a stream failed: {e}"),
            }
        }
        connections.push(h2);
    }
    // 64 more, declaring 1000 bytes (under the limit) and sending 600: each
    // holds its partial message until the message deadline.
    let mut small = Vec::new();
    let mut h2 = server.h2(ATTACKER).await;
    for _ in 0..64 {
        small.push(
            h2.open(HEALTH_CHECK, None, message_declaring(1_000, 600))
                .await
                .expect("open a stream"),
        );
    }
    // And one declaring more than 4 MiB: its refusal must state the limit
    // that applies to health, not SensorService's.
    let (over_4mib, _keep) = h2
        .open(HEALTH_CHECK, None, message_declaring(5_000_000, 1024))
        .await
        .expect("open a stream");

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (rss_during, fds_during) = (server.rss(), server.fds());
    server
        .normal_call("during")
        .await
        .expect("a normal call during the attack");
    eprintln!(
        "partial health streams: RSS {} -> {} MiB, descriptors {fds_before} -> {fds_during}",
        rss_before / MIB,
        rss_during / MIB
    );
    assert!(
        rss_during < rss_before + 64 * MIB,
        "512 partial health streams grew the server from {} to {} MiB",
        rss_before / MIB,
        rss_during / MIB
    );
    assert!(
        fds_during <= fds_before + 8,
        "descriptors {fds_before} -> {fds_during}"
    );

    let (code, message) = grpc_outcome(over_4mib).await.expect("a status");
    assert_eq!(code, RESOURCE_EXHAUSTED, "{message}");
    assert!(
        message.contains("1024 bytes") && !message.contains("65536"),
        "the refusal names the health limit: {message}"
    );
    // Each is refused at its prefix, or, where a busy machine delays the
    // prefix past the message deadline, ended by that deadline.
    for (response, _send) in large {
        let (code, message) = grpc_outcome(response).await.expect("a status");
        match code {
            RESOURCE_EXHAUSTED => assert!(message.contains("1024 bytes"), "{message}"),
            DEADLINE_EXCEEDED => assert!(message.contains("--message-timeout"), "{message}"),
            other => panic!("status {other}: {message}"),
        }
    }
    // The small ones end at the message deadline, 2 s after they began.
    let waited = Instant::now();
    for (response, _send) in small {
        let (code, message) = tokio::time::timeout(Duration::from_secs(10), grpc_outcome(response))
            .await
            .expect("ended by the message deadline")
            .expect("a status");
        assert_eq!(code, DEADLINE_EXCEEDED, "{message}");
        assert!(message.contains("--message-timeout"), "{message}");
    }
    assert!(waited.elapsed() < Duration::from_secs(5));

    drop(connections);
    drop(h2);
    server
        .normal_call("after")
        .await
        .expect("a normal call after the attack");
    let rss_after = server.rss();
    assert!(
        rss_after < rss_before + 64 * MIB,
        "after the attack: {} -> {} MiB",
        rss_before / MIB,
        rss_after / MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_partial_messages_with_a_token_stay_within_the_server_wide_budget() {
    let server = ServeProcess::start(&[
        "--max-buffered-request-bytes",
        "4194304",
        "--message-timeout",
        "3s",
    ]);
    server
        .normal_call("before")
        .await
        .expect("a normal call before");
    let rss_before = server.rss();

    // 160 streams, each declaring a 60,000-byte reading and sending half of
    // it: 69 of them fit the 4 MiB budget, the rest are refused.
    let mut h2 = server.h2(ATTACKER).await;
    let mut streams = Vec::new();
    for _ in 0..160 {
        streams.push(
            h2.open(
                SEND_SINGLE,
                Some(TEST_TOKEN),
                message_declaring(60_000, 30_000),
            )
            .await
            .expect("open a stream"),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A normal call arrives whole and is served while the budget is full.
    server
        .normal_call("during")
        .await
        .expect("a normal call during the attack");
    let rss_during = server.rss();
    eprintln!(
        "partial messages with a token: RSS {} -> {} MiB",
        rss_before / MIB,
        rss_during / MIB
    );
    assert!(
        rss_during < rss_before + 32 * MIB,
        "{} -> {} MiB",
        rss_before / MIB,
        rss_during / MIB
    );

    let (mut refused, mut expired) = (0, 0);
    for (response, _send) in streams {
        let (code, message) = tokio::time::timeout(Duration::from_secs(10), grpc_outcome(response))
            .await
            .expect("every stream ends")
            .expect("a status");
        match code {
            UNAVAILABLE => {
                assert!(
                    message.contains("4194304 bytes")
                        && message.contains("--max-buffered-request-bytes"),
                    "{message}"
                );
                refused += 1;
            }
            DEADLINE_EXCEEDED => {
                assert!(message.contains("--message-timeout"), "{message}");
                expired += 1;
            }
            other => panic!("status {other}: {message}"),
        }
    }
    assert!(
        (60..=71).contains(&expired),
        "{expired} partial messages were held (4 MiB / 60 kB is 69)"
    );
    assert_eq!(refused + expired, 160);

    // Released: a new partial message is held again (and ends at its deadline).
    let (response, _send) = h2
        .open(
            SEND_SINGLE,
            Some(TEST_TOKEN),
            message_declaring(60_000, 30_000),
        )
        .await
        .expect("open a stream");
    let (code, message) = grpc_outcome(response).await.expect("a status");
    assert_eq!(code, DEADLINE_EXCEEDED, "{message}");
    server
        .normal_call("after")
        .await
        .expect("a normal call after the attack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_silent_tls_connections_are_closed_at_the_handshake_deadline() {
    let server = ServeProcess::start(&["--handshake-timeout", "2s"]);
    server
        .normal_call("before")
        .await
        .expect("a normal call before");
    let fds_before = server.fds();

    // 200 connections that finish TLS and then say nothing (no HTTP/2
    // preface), and one that trickles the preface a byte at a time.
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(server.tls(ATTACKER).await.expect("TLS handshake"));
    }
    let mut trickle = server.tls(ATTACKER).await.expect("TLS handshake");
    let trickling = tokio::spawn(async move {
        for byte in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".repeat(4) {
            if trickle.write_all(&[byte]).await.is_err() || trickle.flush().await.is_err() {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("a trickled preface was read for 20 s");
    });
    let fds_during = server.fds();
    server
        .normal_call("during")
        .await
        .expect("a normal call during the attack");
    eprintln!("silent TLS connections: descriptors {fds_before} -> {fds_during}");
    assert!(
        fds_during >= fds_before + 150,
        "the attack holds its connections"
    );

    // Every one is closed by the server within the deadline (and some slack).
    // (The server's own SETTINGS may come first: HTTP/2 servers send them at once.)
    for mut tls in silent {
        closed_within(&mut tls, Duration::from_secs(6))
            .await
            .expect("closed by the server, not left open");
    }
    assert!(
        opened.elapsed() < Duration::from_secs(6),
        "closed after {:?}",
        opened.elapsed()
    );
    let cut_off = trickling.await.expect("the trickle ends");
    assert!(cut_off.duration_since(opened) < Duration::from_secs(6));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_after = server.fds();
    assert!(
        fds_after <= fds_before + 4,
        "descriptors after the attack: {fds_before} -> {fds_after}"
    );
    server
        .normal_call("after")
        .await
        .expect("a normal call after the attack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_connections_without_calls_are_closed_with_goaway() {
    // The first-call timeout leaves time to open the 100 connections on a
    // busy machine (at a load average of 15 it took more than a second, and
    // the first ones were closed before their descriptors were counted).
    let server = ServeProcess::start(&["--first-call-timeout", "3s", "--idle-timeout", "6s"]);
    let fds_before = server.fds();

    // 100 HTTP/2 connections that never open a stream.
    let opened = Instant::now();
    let mut unused = Vec::new();
    for _ in 0..100 {
        unused.push(server.h2(ATTACKER).await);
    }
    // One that serves a call, then stays idle.
    let mut served = server.h2(ATTACKER).await;
    let response = served
        .call(HEALTH_CHECK, None, message_declaring(0, 0))
        .await
        .expect("a health check");
    let fds_during = server.fds();
    server
        .normal_call("during")
        .await
        .expect("a normal call during the attack");
    assert!(
        fds_during >= fds_before + 90,
        "{fds_before} -> {fds_during}"
    );

    for h2 in unused {
        let ended = tokio::time::timeout(Duration::from_secs(6), h2.connection)
            .await
            .expect("the server closes an unused connection");
        assert!(
            matches!(ended, Ok(Ok(()))),
            "closed with GOAWAY, not reset: {ended:?}"
        );
    }
    let unused_closed = opened.elapsed();
    assert!(
        unused_closed < Duration::from_secs(7),
        "unused connections closed after {unused_closed:?} (first-call timeout 3 s)"
    );
    // The served one outlived them, and goes once idle for 6 s.
    assert!(grpc_outcome(response).await.is_some());
    assert!(
        !served.connection.is_finished(),
        "a served connection is kept longer"
    );
    let ended = tokio::time::timeout(Duration::from_secs(10), served.connection)
        .await
        .expect("an idle connection is closed");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    assert!(opened.elapsed() >= Duration::from_secs(6));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_after = server.fds();
    assert!(fds_after <= fds_before + 4, "{fds_before} -> {fds_after}");
    server
        .normal_call("after")
        .await
        .expect("a normal call after the attack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_one_address_holds_at_most_max_connections_per_ip() {
    let server = ServeProcess::start(&["--max-connections-per-ip", "20"]);
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..30 {
        match server.tls(ATTACKER).await {
            Ok(tls) => admitted.push(tls),
            Err(_) => refused += 1,
        }
    }
    assert_eq!((admitted.len(), refused), (20, 10));
    server
        .normal_call("during")
        .await
        .expect("another address is still served");
    drop(admitted);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.tls(ATTACKER).await.is_ok(), "slots come back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_connections_fit_under_the_descriptor_limit() {
    // A hard limit of 512 descriptors: 512 - 256 reserved - 64 for the HTTP
    // listener leaves 192 connections, not the 10,000 asked for.
    let server = ServeProcess::start_limited(&[], Some(512));
    let fitted = server
        .log()
        .into_iter()
        .find(|l| l.contains("\"requested\":10000"))
        .expect("the fit is logged");
    assert!(
        fitted.contains("\"max_connections\":192") && fitted.contains("\"requested\":10000"),
        "{fitted}"
    );
    let mut sensor = server.client().await;
    normal_call_on(&mut sensor, "before")
        .await
        .expect("a normal call before");

    // 300 connections: those over the limit are refused cleanly, and the
    // descriptors never run out.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..300 {
        match server.tls(ATTACKER).await {
            Ok(tls) => held.push(tls),
            Err(_) => refused += 1,
        }
    }
    let fds_during = server.fds();
    eprintln!(
        "under a limit of 512: {} admitted, {refused} refused, {fds_during} descriptors",
        held.len()
    );
    assert!(
        held.len() <= 192 && refused >= 108,
        "{} admitted",
        held.len()
    );
    assert!(fds_during < 512 - 64, "{fds_during} descriptors open");
    normal_call_on(&mut sensor, "during")
        .await
        .expect("an open connection is served during the attack");
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    server
        .normal_call("after")
        .await
        .expect("a normal call after the attack");
    assert!(
        !server
            .log()
            .iter()
            .any(|l| l.contains("cannot accept connections")),
        "the accept loop never ran out of descriptors"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_out_of_descriptors_backs_off_and_tells_the_truth() {
    use rustix::process::{Pid, Resource, Rlimit, prlimit};
    let server = ServeProcess::start(&[]);
    let pid = Pid::from_raw(server.server.pid() as i32).expect("a pid");
    // A sensor that connected and wrote before; no read has opened a
    // reader connection yet.
    let mut sensor = server.client().await;
    sensor
        .send_single_reading(sensorhub_grpc::testing::reading(
            "fd-1",
            20.0,
            sensorhub_grpc::testing::unix_now(),
        ))
        .await
        .expect("a write before");

    // Something else took the descriptors: the limit drops to a few more
    // than are open, and connections keep coming.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.server.pid()))
        .expect("read /proc/PID/limits");
    let (soft, hard) = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .map(|l| {
            let mut values = l.split_whitespace().map(|v| v.parse::<u64>().ok());
            (values.next().flatten(), values.next().flatten())
        })
        .expect("a Max open files line");
    let normal = Rlimit {
        current: soft,
        maximum: hard,
    };
    let tight = Rlimit {
        current: Some(server.fds() as u64 + 4),
        maximum: normal.maximum,
    };
    prlimit(Some(pid), Resource::Nofile, tight).expect("lower the server's limit");
    let mut flood = Vec::new();
    for _ in 0..40 {
        if let Ok(tcp) = tcp_from(ATTACKER, server.grpc).await {
            flood.push(tcp);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The accept loop backs off instead of spinning on EMFILE.
    let ticks = server.server.cpu_ticks();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = server.server.cpu_ticks() - ticks;
    eprintln!("out of descriptors: {spent} ticks of CPU in 2 s");
    assert!(
        spent < 40,
        "the server spent {spent} ticks in 2 s (spinning?)"
    );

    // A read that needs a descriptor is told the truth; writes on an open
    // connection still work.
    let read = sensor
        .get_sensor_stats(sensorhub_proto::StatsRequest::default())
        .await;
    match read {
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert!(
                status.message().contains("file descriptors")
                    && !status.message().contains("acknowledged"),
                "{status:?}"
            );
        }
        Ok(_) => panic!("a read without a descriptor to open succeeded"),
    }
    sensor
        .send_single_reading(sensorhub_grpc::testing::reading(
            "fd-1",
            21.0,
            sensorhub_grpc::testing::unix_now(),
        ))
        .await
        .expect("a write on an open connection during the attack");

    // Descriptors back: everything works, and the failures were counted.
    prlimit(Some(pid), Resource::Nofile, normal).expect("restore the limit");
    drop(flood);
    tokio::time::sleep(Duration::from_millis(300)).await;
    normal_call_on(&mut sensor, "fd-1")
        .await
        .expect("a normal call after the attack");
    let metrics = server.metrics();
    let failed: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("sensorhub_connections_accept_errors_total")
                && l.contains("error_type=\"EMFILE\"")
                && l.contains("sensorhub_listener=\"grpc\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(failed >= 1.0, "EMFILE accepts counted: {metrics}");
    let warnings = server
        .log()
        .iter()
        .filter(|l| l.contains("cannot accept connections"))
        .count();
    assert!((1..=2).contains(&warnings), "{warnings} warnings in ~3 s");
}

/// A raw connection to the HTTP listener.
async fn http_connection(server: &ServeProcess) -> TcpStream {
    tcp_from(ATTACKER, server.http())
        .await
        .expect("connect to the HTTP listener")
}

/// Waits until the server closes `tcp` (a read returns end of stream or an
/// error, after any answer it sends), within `limit`; what it sent.
async fn closed_within<S: AsyncRead + Unpin>(tcp: &mut S, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_http_half_sent_requests_are_closed_at_the_header_timeout() {
    let server = ServeProcess::start(&["--http-header-timeout", "2s"]);
    let fds_before = server.fds();
    let opened = Instant::now();
    let mut half = Vec::new();
    for _ in 0..50 {
        let mut tcp = http_connection(&server).await;
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .expect("send half a request");
        half.push(tcp);
    }
    // The server accepts them as fast as it is scheduled (slower on a busy
    // machine): the most it holds within a second.
    let mut fds_during = server.fds();
    let watching = Instant::now();
    while fds_during < fds_before + 45 && watching.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        fds_during = fds_during.max(server.fds());
    }
    assert_eq!(
        http::get(server.server.http, "/readyz"),
        (200, "ready\n".to_owned()),
        "/readyz during the attack"
    );
    server
        .normal_call("during")
        .await
        .expect("a normal call during the attack");
    eprintln!("half-sent HTTP requests: descriptors {fds_before} -> {fds_during}");
    assert!(
        fds_during >= fds_before + 30,
        "the half-sent requests hold their connections: {fds_before} -> {fds_during}"
    );
    for mut tcp in half {
        let answer = closed_within(&mut tcp, Duration::from_secs(6))
            .await
            .expect("closed by the server at the header timeout");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    assert!(
        opened.elapsed() < Duration::from_secs(6),
        "{:?}",
        opened.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_after = server.fds();
    assert!(fds_after <= fds_before + 4, "{fds_before} -> {fds_after}");
    assert_eq!(http::get(server.server.http, "/healthz").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_http_listener_holds_at_most_its_connection_limit() {
    let server = ServeProcess::start(&["--http-max-connections", "16"]);
    let fds_before = server.fds();
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(http_connection(&server).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One more is closed at once, without an answer.
    let mut over = http_connection(&server).await;
    let closed = closed_within(&mut over, Duration::from_secs(2))
        .await
        .expect("a connection over the limit is closed at once");
    assert!(closed.is_empty());
    assert!(server.fds() <= fds_before + 16 + 2);
    server
        .normal_call("during")
        .await
        .expect("the gRPC port is unaffected");
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(http::get(server.server.http, "/readyz").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_http_listener_serves_http1_only() {
    let server = ServeProcess::start(&[]);
    // HTTP/2 with prior knowledge: the preface and a SETTINGS frame.
    let mut tcp = http_connection(&server).await;
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("send the HTTP/2 preface");
    let answer = closed_within(&mut tcp, Duration::from_secs(5))
        .await
        .expect("the connection is closed, not served");
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
        "answered as HTTP/2: {answer:?}"
    );
    assert_eq!(http::get(server.server.http, "/healthz").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_http_metrics_are_rendered_once_a_second_and_shared() {
    let server = ServeProcess::start(&[]);
    let mut sensor = server.client().await;
    normal_call_on(&mut sensor, "m-1").await.expect("a call");
    let first = server.metrics();
    normal_call_on(&mut sensor, "m-1").await.expect("a call");
    let again = server.metrics();
    assert_eq!(first, again, "within a second the same rendering is served");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_ne!(server.metrics(), first, "a second later a new one");

    // Eight connections pipelining 200 /metrics requests each and never
    // reading the answers hold a share of one rendering, not 1,600.
    let rss_before = server.rss();
    let mut readers = Vec::new();
    for _ in 0..8 {
        let mut tcp = http_connection(&server).await;
        let requests = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(200);
        let _ = tokio::time::timeout(Duration::from_secs(2), tcp.write_all(&requests)).await;
        readers.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_during = server.rss();
    eprintln!(
        "pipelined /metrics without reading: RSS {} -> {} MiB",
        rss_before / MIB,
        rss_during / MIB
    );
    assert!(
        rss_during < rss_before + 32 * MIB,
        "{} -> {} MiB",
        rss_before / MIB,
        rss_during / MIB
    );
    normal_call_on(&mut sensor, "m-1")
        .await
        .expect("a normal call during");
    drop(readers);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(http::get(server.server.http, "/healthz").0, 200);
}

/// A whole SendSingleReading request body with one valid reading.
fn one_reading() -> Vec<u8> {
    use prost::Message as _;
    let reading =
        sensorhub_grpc::testing::reading("guess", 20.0, sensorhub_grpc::testing::unix_now());
    let payload = reading.encode_to_vec();
    let mut body = message_declaring(payload.len() as u32, 0);
    body.truncate(5);
    body.extend_from_slice(&payload);
    body
}

/// The status of one call with `token` on `h2`; `None` when the connection
/// refused to open the stream (it is going away).
async fn call_with(h2: &mut H2, token: &str) -> Option<(i32, String)> {
    let response = h2
        .call(SEND_SINGLE, Some(token), one_reading())
        .await
        .ok()?;
    grpc_outcome(response).await
}

const UNAUTHENTICATED: i32 = 16;
const NOT_ACCEPTED: &str = "does not carry a token this server accepts";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_failed_tokens_are_counted_and_close_the_connection() {
    let server = ServeProcess::start(&[]);
    server
        .normal_call("before")
        .await
        .expect("a normal call before");

    // Five wrong tokens in a row: each refused, then the connection goes.
    let mut guesser = server.h2(ATTACKER).await;
    for guess in 0..5 {
        let (code, message) = call_with(&mut guesser, &format!("guess-{guess}"))
            .await
            .expect("a status");
        assert_eq!(code, UNAUTHENTICATED, "{message}");
        assert!(message.contains(NOT_ACCEPTED), "{message}");
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), guesser.connection)
        .await
        .expect("the connection is closed after five failures");
    assert!(matches!(ended, Ok(Ok(()))), "closed with GOAWAY: {ended:?}");

    // Fifty guesses at once on a new connection: at most five are checked.
    let mut burst = server.h2(ATTACKER).await;
    let mut responses = Vec::new();
    for guess in 0..50 {
        if let Ok(response) = burst
            .call(SEND_SINGLE, Some(&format!("burst-{guess}")), one_reading())
            .await
        {
            responses.push(response);
        }
    }
    let mut checked = 0;
    for response in responses {
        if let Some((code, message)) = grpc_outcome(response).await {
            assert_eq!(code, UNAUTHENTICATED, "{message}");
            if message.contains(NOT_ACCEPTED) {
                checked += 1;
            } else {
                assert!(message.contains("failed authentications"), "{message}");
            }
        }
    }
    assert!((1..=5).contains(&checked), "{checked} guesses were checked");

    // A valid token ends a run of failures: four wrong, one right, four
    // wrong leave the connection open.
    let mut sensor = server.h2(ATTACKER).await;
    for round in 0..2 {
        for guess in 0..4 {
            let (code, _) = call_with(&mut sensor, &format!("typo-{round}-{guess}"))
                .await
                .expect("a status");
            assert_eq!(code, UNAUTHENTICATED);
        }
        let (code, message) = call_with(&mut sensor, TEST_TOKEN).await.expect("a status");
        assert_eq!(code, 0, "{message}");
    }
    assert!(!sensor.connection.is_finished());

    server
        .normal_call("after")
        .await
        .expect("a normal call after the guessing");
    // Every failure is counted, none of the tokens appears.
    let metrics = server.metrics();
    let failures: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("sensorhub_auth_failures_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let at_least = f64::from(5 + checked + 8);
    assert!(
        failures >= at_least,
        "{failures} failures counted, at least {at_least}:\n{metrics}"
    );
    assert!(!metrics.contains("guess-") && !metrics.contains(TEST_TOKEN));
}
