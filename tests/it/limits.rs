//! Overload and abuse limits: a token over its rate gets RESOURCE_EXHAUSTED
//! with a pushback, one connection over the limit is closed at once, and a
//! client that opens a TLS connection and says nothing is closed after the
//! handshake deadline. Each limit refuses early and leaves the server
//! serving everyone else.

use std::{num::NonZeroU32, time::Duration};

use sensorhub_grpc::{
    auth::RateLimit,
    listener::ConnectionLimits,
    testing::{CALL_TIMEOUT, TestOptions, TestServer, reading, unix_now},
};
use sensorhub_proto::StatsRequest;
use tokio::{io::AsyncReadExt, net::TcpStream};
use tonic::Code;

#[tokio::test]
async fn limits_a_token_over_its_rate_gets_resource_exhausted_with_pushback() {
    let server = TestServer::start_with(TestOptions {
        tweak: |config| {
            config.rate_limit = Some(RateLimit {
                calls_per_second: NonZeroU32::new(5).unwrap(),
            })
        },
        ..TestOptions::default()
    })
    .await;
    let mut client = server.client().await;

    let (mut ok, mut limited) = (0u64, 0u64);
    for _ in 0..20 {
        let call = client.send_single_reading(reading("rate-1", 20.0, unix_now()));
        match tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .expect("answered")
        {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains("rate limit"), "{status:?}");
                let pushback: u64 = status
                    .metadata()
                    .get("grpc-retry-pushback-ms")
                    .expect("a pushback")
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=1_000).contains(&pushback), "{pushback} ms");
                limited += 1;
            }
        }
    }
    // A burst of five, then one more every 200 ms: most of twenty quick calls are refused.
    assert!((5..=8).contains(&ok), "{ok} accepted");
    assert_eq!(ok + limited, 20);

    // Only what was accepted is stored.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let stats = client
        .get_sensor_stats(StatsRequest {
            sensor_id: "rate-1".into(),
            ..Default::default()
        })
        .await
        .expect("stats after the rate has refilled")
        .into_inner();
    assert_eq!(stats.sensors[0].count, ok);
}

#[tokio::test]
async fn limits_one_connection_over_the_limit_is_closed_and_the_rest_serve() {
    let server = TestServer::start_with(TestOptions {
        tweak: |config| {
            config.connections = ConnectionLimits {
                max_connections: 2,
                ..ConnectionLimits::default()
            }
        },
        ..TestOptions::default()
    })
    .await;
    let mut first = server.client().await;
    let mut second = server.client().await;
    for client in [&mut first, &mut second] {
        client
            .send_single_reading(reading("conn-1", 20.0, unix_now()))
            .await
            .expect("within the limit");
    }

    // A third connection is closed before its handshake: the client cannot call.
    let third = async {
        let mut client = server
            .try_client(server.client_config())
            .await
            .map_err(|e| e.to_string())?;
        client
            .send_single_reading(reading("conn-1", 20.0, unix_now()))
            .await
            .map_err(|status| status.to_string())?;
        Ok::<_, String>(())
    };
    let refused = tokio::time::timeout(CALL_TIMEOUT, third)
        .await
        .expect("refused promptly, not queued");
    assert!(refused.is_err(), "a third connection got in");

    // The two admitted connections still serve; closing one makes room.
    second
        .send_single_reading(reading("conn-1", 20.0, unix_now()))
        .await
        .expect("an admitted connection still serves");
    drop(second);
    let mut again = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(mut client) = server.try_client(server.client_config()).await
            && client
                .send_single_reading(reading("conn-1", 20.0, unix_now()))
                .await
                .is_ok()
        {
            again = Some(client);
            break;
        }
    }
    assert!(
        again.is_some(),
        "a slot freed by a closed connection is reused"
    );
    first
        .send_single_reading(reading("conn-1", 20.0, unix_now()))
        .await
        .expect("the first connection is untouched");
}

#[tokio::test]
async fn limits_a_silent_tls_client_is_closed_after_the_handshake_deadline() {
    let server = TestServer::start_with(TestOptions {
        tweak: |config| {
            config.connections = ConnectionLimits {
                handshake_timeout: Duration::from_millis(500),
                ..ConnectionLimits::default()
            }
        },
        ..TestOptions::default()
    })
    .await;
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the server closes a silent connection, it does not wait forever");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(400));

    // Meanwhile everyone else is served.
    server
        .client()
        .await
        .send_single_reading(reading("silent-1", 20.0, unix_now()))
        .await
        .expect("served");
}
