//! Resource exhaustion, tried as an attacker would against a real
//! `sensorhub serve` process: what each attack makes the server hold is
//! read from `/proc/PID/status` and `/proc/PID/fd` before, during and after,
//! and a normal call must succeed during and after every attack.
//!
//! Each attack is bounded in count and time (a few hundred streams or
//! connections, a few seconds) and only ever targets 127.0.0.0/8.

use std::time::{Duration, Instant};

use crate::support::attacker::{ATTACKER, MIB, ServeProcess, grpc_outcome, message_declaring};
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
    for (response, _send) in large {
        let (code, message) = grpc_outcome(response).await.expect("a status");
        assert_eq!(code, RESOURCE_EXHAUSTED, "{message}");
        assert!(message.contains("1024 bytes"), "{message}");
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
