//! Overload: more unary calls at once than the server admits. The extra
//! calls are refused at once with `UNAVAILABLE` (retryable) and store
//! nothing; every admitted call is answered and stored; the server keeps
//! serving when the burst is over.

use std::time::Instant;

use futures_util::future::join_all;
use sensorhub_grpc::testing::{CALL_TIMEOUT, TestOptions, TestServer, reading, unix_now};
use sensorhub_proto::StatsRequest;
use tonic::Code;

const BURST: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_extra_unary_calls_are_shed_with_unavailable_not_queued() {
    let server = TestServer::start_with(TestOptions {
        tweak: |config| config.service.max_unary_in_flight = 4,
        ..TestOptions::default()
    })
    .await;
    // Several connections, so the burst is not serialised by one of them.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(server.client().await);
    }
    let now = unix_now();
    let calls = (0..BURST).map(|i| {
        let mut client = clients[i % clients.len()].clone();
        async move {
            let started = Instant::now();
            let answer = tokio::time::timeout(
                CALL_TIMEOUT,
                client.send_single_reading(reading("burst-1", 20.0, now - (i % 600) as i64)),
            )
            .await
            .expect("every call is answered, none hangs in a queue");
            (
                answer.map_err(|s| (s.code(), s.message().to_owned())),
                started.elapsed(),
            )
        }
    });
    let answers = join_all(calls).await;

    let mut ok = 0u64;
    let mut shed = 0u64;
    for (answer, _took) in &answers {
        match answer {
            Ok(_) => ok += 1,
            Err((code, message)) => {
                assert_eq!(*code, Code::Unavailable, "{message}");
                assert!(message.contains("overloaded"), "{message}");
                shed += 1;
            }
        }
    }
    assert!(shed > 0, "a burst of {BURST} against 4 slots shed nothing");
    assert!(ok >= 4, "only {ok} admitted");
    assert_eq!(ok + shed, BURST as u64);

    // Only the admitted calls are stored, and the server serves on.
    let mut client = server.client().await;
    client
        .send_single_reading(reading("burst-1", 20.0, now))
        .await
        .expect("served after the burst");
    let stats = client
        .get_sensor_stats(StatsRequest {
            sensor_id: "burst-1".into(),
            ..Default::default()
        })
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.sensors[0].count, ok + 1);
}
