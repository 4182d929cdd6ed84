//! GetSensorStats for a fleet too large for one reply: 60,000 sensors with
//! 100-byte ids are 11 MB of statistics, past the 4 MiB every gRPC client
//! accepts by default. Asked for all at once (`limit = 0`, as the original
//! clients ask) the server says how to page; walked page by page with a
//! default client, every sensor comes back exactly once, in id order; and
//! `sensorhub stats` walks the pages itself.

use sensorhub_grpc::testing::TestOptions;
use std::{collections::BTreeSet, process::Command, time::Duration};

use sensorhub_grpc::testing::{TestServer, reading, unix_now};
use sensorhub_proto::{StatsRequest, sensor_service_client::SensorServiceClient};
use tonic::Code;

const SENSORS: usize = 60_000;
const BIN: &str = env!("CARGO_BIN_EXE_sensorhub");

fn sensor_id(i: usize) -> String {
    // 100 bytes, like the ids of a fleet named by site, building and room.
    format!(
        "site-{:02}/building-{:03}/{:->70}{i:06}",
        i % 7,
        i % 101,
        ""
    )
}

/// One client stream of one reading per sensor.
async fn seed(server: &TestServer) {
    let t = unix_now() - 60;
    let readings: Vec<_> = (0..SENSORS)
        .map(|i| reading(&sensor_id(i), 20.0 + (i % 10) as f64, t))
        .collect();
    let ack = server
        .client()
        .await
        .stream_sensor_readings(tokio_stream::iter(readings))
        .await
        .expect("seed stream")
        .into_inner();
    assert_eq!(ack.count, SENSORS as u64);
}

async fn stats_of_sixty_thousand_sensors_come_in_pages_a_default_client_reads(
    options: TestOptions,
) {
    let server = TestServer::start_with(options.clone()).await;
    seed(&server).await;
    let mut client = server.client().await;

    // All at once: refused, saying how to page (before paging: an 11 MB reply
    // that the client refused as too large).
    let refused = client
        .get_sensor_stats(StatsRequest::default())
        .await
        .expect_err("60,000 sensors do not fit one reply");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    for words in [
        "more than 10000 sensors",
        "StatsRequest.limit",
        "next_cursor",
    ] {
        assert!(refused.message().contains(words), "{refused:?}");
    }

    // Page by page, with tonic's default 4 MiB limit, asking for more than a
    // page holds: the server caps it.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let reply = client
            .get_sensor_stats(StatsRequest {
                limit: 25_000,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .expect("a page")
            .into_inner();
        pages += 1;
        assert!(reply.sensors.len() <= 10_000, "{}", reply.sensors.len());
        assert!(reply.sensors.iter().all(|s| s.count == 1));
        seen.extend(reply.sensors.into_iter().map(|s| s.sensor_id));
        if reply.next_cursor.is_empty() {
            break;
        }
        assert_eq!(
            Some(&reply.next_cursor),
            seen.last(),
            "the cursor is the last id"
        );
        cursor = reply.next_cursor;
    }
    assert_eq!(pages, SENSORS / 10_000, "full pages, and no empty last one");
    let mut expected: Vec<String> = (0..SENSORS).map(sensor_id).collect();
    expected.sort();
    assert_eq!(seen.len(), SENSORS);
    assert!(seen == expected, "every sensor once, in id order");

    // One sensor still comes alone, with no cursor.
    let one = client
        .get_sensor_stats(StatsRequest {
            sensor_id: sensor_id(42),
            ..Default::default()
        })
        .await
        .expect("one sensor")
        .into_inner();
    assert_eq!(one.sensors.len(), 1);
    assert_eq!(one.next_cursor, "");

    // A client built against the original contract (it knows no limit and no
    // cursor) gets the same refusal through the raw default request.
    let mut plain = SensorServiceClient::new(
        sensorhub_grpc::client::endpoint(&server.client_config())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect"),
    );
    let mut request = tonic::Request::new(StatsRequest::default());
    request.metadata_mut().insert(
        "authorization",
        sensorhub_grpc::testing::TEST_TOKEN.parse().expect("ASCII"),
    );
    let refused = plain.get_sensor_stats(request).await.expect_err("refused");
    assert_eq!(refused.code(), Code::ResourceExhausted);

    // `sensorhub stats` walks the pages: one JSON line per sensor.
    let config = server.client_config();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["stats", "--json", "--server", &config.server, "--ca"])
            .arg(config.tls.ca.as_ref().expect("CA"))
            .args(["--token", config.token.as_deref().expect("token")])
            .output()
            .expect("run sensorhub stats")
    });
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("sensorhub stats in time")
        .expect("joined");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: BTreeSet<String> = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            v["sensor_id"].as_str().expect("sensor_id").to_owned()
        })
        .collect();
    assert_eq!(printed.len(), SENSORS);
    assert!(
        printed.into_iter().eq(expected),
        "sensorhub stats printed every sensor"
    );
}

crate::on_both_engines!(stats_of_sixty_thousand_sensors_come_in_pages_a_default_client_reads,);
