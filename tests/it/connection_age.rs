//! `--max-connection-age`: a real `sensorhub serve` over TLS sends a
//! connection GOAWAY once it is old enough, so its client reconnects (and a
//! balancer may place it elsewhere), without failing a call: calls in flight
//! finish on the old connection, new ones go to the new one. After
//! `--max-connection-age-grace` a call still open is cut.

use std::time::{Duration, Instant};

use sensorhub_grpc::testing::{reading, unix_now};
use sensorhub_proto::SensorReading;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::attacker::ServeProcess;

/// The value of `name{…}` summed over the series whose labels include every one of `labels`.
fn value(page: &str, name: &str, labels: &[&str]) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn created(page: &str) -> f64 {
    value(page, "sensorhub_connections_created_total", &[])
}

fn closed_by_age(page: &str) -> f64 {
    value(
        page,
        "sensorhub_connections_closed_total",
        &["sensorhub_close_reason=\"max_age\""],
    )
}

/// How long the client keeps calling: three ages (at most 2.2 s each).
const RUN: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread")]
async fn connection_age_moves_a_client_by_goaway_without_a_failed_call() {
    let server = ServeProcess::start(&[
        "--max-connection-age",
        "2s",
        "--max-connection-age-grace",
        "30s",
    ]);
    // One channel, as a sensor has: the chat and the unary calls share it.
    let client = server.client().await;
    let started = Instant::now();

    // A chat opened now, on the first connection, one reading every 250 ms
    // for the whole run: it outlives that connection's age.
    let mut chat_client = client.clone();
    let chat = tokio::spawn(async move {
        let (tx, rx) = mpsc::channel::<SensorReading>(1);
        let mut replies = chat_client
            .sensor_chat(ReceiverStream::new(rx))
            .await
            .map_err(|s| format!("SensorChat: {s:?}"))?
            .into_inner();
        let mut sent = 0u32;
        let mut answered = 0u32;
        while started.elapsed() < RUN {
            tx.send(reading("age-chat", 21.0, unix_now()))
                .await
                .map_err(|_| "the chat's request stream closed".to_owned())?;
            sent += 1;
            let reply = tokio::time::timeout(Duration::from_secs(5), replies.message())
                .await
                .map_err(|_| format!("no reply to reading {sent}"))?
                .map_err(|s| format!("chat failed after {answered} replies: {s:?}"))?;
            match reply {
                Some(reply) if reply.message == "Received 21.0" => answered += 1,
                other => return Err(format!("reply {sent}: {other:?}")),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        drop(tx);
        match tokio::time::timeout(Duration::from_secs(5), replies.message()).await {
            Ok(Ok(None)) => Ok((sent, answered)),
            other => Err(format!("the chat did not end with OK: {other:?}")),
        }
    });

    // Unary calls every 50 ms meanwhile, on the same channel.
    let mut unary = client.clone();
    let mut calls = 0u32;
    let mut failures = Vec::new();
    let mut moved_while_chatting = None;
    while started.elapsed() < RUN {
        match unary
            .send_single_reading(reading("age-unary", 22.0, unix_now()))
            .await
        {
            Ok(_) => calls += 1,
            Err(status) => failures.push(format!("{:?}: {status:?}", started.elapsed())),
        }
        // Past the first connection's age, while the chat is still open on
        // it: the unary calls have a connection of their own by now.
        if moved_while_chatting.is_none() && started.elapsed() > Duration::from_secs(4) {
            moved_while_chatting = Some((created(&server.metrics()), chat.is_finished()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failures.is_empty(), "failed calls: {failures:?}");
    assert!(calls > 50, "only {calls} unary calls in {RUN:?}");

    let (sent, answered) = chat.await.unwrap().expect("the chat");
    assert_eq!(answered, sent, "every chat reading answered");
    assert!(sent >= 15, "only {sent} chat readings");

    let (created_mid_run, chat_over) = moved_while_chatting.expect("a look at 4 s");
    assert!(!chat_over, "the chat ended early");
    assert!(
        created_mid_run >= 2.0,
        "no second connection by 4 s (created = {created_mid_run}): GOAWAY did not move the client"
    );

    // Once the chat ended, its connection (the first) closed, counted as
    // closed by age; later connections aged out too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = server.metrics();
        if closed_by_age(&page) >= 2.0 || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(closed_by_age(&page) >= 2.0, "{page}");
    // Each connection lived about 2 s (± 10 %): over 6 s, three or four of
    // them, never one per call.
    assert!(created(&page) <= 6.0, "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_age_grace_cuts_a_call_still_open_after_it() {
    let server = ServeProcess::start(&[
        "--max-connection-age",
        "1s",
        "--max-connection-age-grace",
        "1s",
    ]);
    let mut client = server.client().await;
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<SensorReading>(1);
    let mut replies = client
        .sensor_chat(ReceiverStream::new(rx))
        .await
        .expect("SensorChat")
        .into_inner();
    tx.send(reading("age-grace", 21.0, unix_now()))
        .await
        .unwrap();
    assert!(replies.message().await.expect("a reply").is_some());
    // The chat stays open and says nothing: at 1.1 s at most the connection
    // is told to go, and 1 s later it is closed under the chat.
    let ended = tokio::time::timeout(Duration::from_secs(10), replies.message())
        .await
        .expect("the chat was cut within 10 s");
    assert!(ended.is_err(), "the chat ended cleanly: {ended:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "cut after {took:?}, before age and grace"
    );
    drop(tx);
    // The client reconnects for its next call.
    client
        .send_single_reading(reading("age-grace", 21.0, unix_now()))
        .await
        .expect("a call after the cut");
}
