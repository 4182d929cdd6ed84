//! Server-streaming reads: `GetSensorReadings` returns a sensor's readings in
//! time order, honours since/until/limit, answers an unknown sensor with an
//! empty stream and refuses malformed queries.

use sensorhub_grpc::testing::{CALL_TIMEOUT, reading, unix_now};
use sensorhub_grpc::{
    SensorClient,
    testing::{TestOptions, TestServer},
};
use sensorhub_proto::{SensorReading, SensorRequest};
use tonic::{Code, Status};
use tonic_types::StatusExt;

async fn query(
    client: &mut SensorClient,
    request: SensorRequest,
) -> Result<Vec<SensorReading>, Status> {
    tokio::time::timeout(CALL_TIMEOUT, async {
        let mut stream = client.get_sensor_readings(request).await?.into_inner();
        let mut out = Vec::new();
        while let Some(r) = stream.message().await? {
            out.push(r);
        }
        Ok(out)
    })
    .await
    .expect("history read in time")
}

fn req(sensor_id: &str, since: i64, until: i64, limit: u64) -> SensorRequest {
    SensorRequest {
        sensor_id: sensor_id.to_owned(),
        since,
        until,
        limit,
        follow: false,
    }
}

/// The sent readings with timestamps in `[since, until)` (0: unbounded), in time order.
fn expect(sent: &[SensorReading], since: i64, until: i64, limit: usize) -> Vec<SensorReading> {
    let mut want: Vec<_> = sent
        .iter()
        .filter(|r| (since == 0 || r.timestamp >= since) && (until == 0 || r.timestamp < until))
        .cloned()
        .collect();
    want.sort_by_key(|r| r.timestamp);
    if limit > 0 {
        want.truncate(limit);
    }
    want
}

async fn test_server_streaming(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut client = server.client().await;
    let t = unix_now() - 3_600;

    // Written out of time order, one call each.
    let sent: Vec<_> = [5, 1, 4, 2, 3, 9, 7]
        .into_iter()
        .map(|offset| reading("srv", 20.0 + offset as f64, t + offset))
        .collect();
    for r in &sent {
        client
            .send_single_reading(r.clone())
            .await
            .expect("SendSingleReading");
    }
    client
        .send_single_reading(reading("srv-other", 99.0, t + 3))
        .await
        .expect("other sensor");

    let all = query(&mut client, req("srv", 0, 0, 0))
        .await
        .expect("full history");
    let offsets: Vec<_> = all.iter().map(|r| r.timestamp - t).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4, 5, 7, 9]);
    assert_eq!(all, expect(&sent, 0, 0, 0));

    // since is inclusive, until exclusive, limit counts from the oldest.
    for (since, until, limit) in [
        (t + 3, 0, 0),
        (0, t + 4, 0),
        (t + 2, t + 5, 0),
        (t + 6, t + 8, 0),
        (0, 0, 3),
        (t + 4, 0, 2),
        (t + 2, t + 9, 10),
        (t + 100, 0, 0),
        (0, t + 1, 0),
    ] {
        let got = query(&mut client, req("srv", since, until, limit))
            .await
            .expect("bounded history");
        let want = expect(&sent, since, until, limit as usize);
        assert_eq!(got, want, "since={since} until={until} limit={limit}");
    }
    // Sanity of the table itself: these bounds select something specific.
    assert_eq!(
        query(&mut client, req("srv", t + 2, t + 5, 0))
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        query(&mut client, req("srv", t + 4, 0, 2))
            .await
            .unwrap()
            .iter()
            .map(|r| r.timestamp - t)
            .collect::<Vec<_>>(),
        vec![4, 5]
    );
}

async fn test_server_streaming_unknown_sensor_is_empty_and_ok(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut client = server.client().await;
    client
        .send_single_reading(reading("known", 20.0, unix_now() - 10))
        .await
        .expect("write");

    let got = query(&mut client, req("unknown", 0, 0, 0))
        .await
        .expect("unknown sensor: OK, not an error");
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(
        query(&mut client, req("known", 0, 0, 0))
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn test_server_streaming_invalid_queries(options: TestOptions) {
    let server = TestServer::start_with(options.clone()).await;
    let mut client = server.client().await;
    let t = unix_now() - 100;
    client
        .send_single_reading(reading("q", 20.0, t))
        .await
        .expect("write");

    for (request, field) in [
        (req("", 0, 0, 0), "sensor_id"),
        (req(&"x".repeat(129), 0, 0, 0), "sensor_id"),
        (req("q\u{1}", 0, 0, 0), "sensor_id"),
        (req("q", t, t, 0), "until"),
        (req("q", t, t - 1, 0), "until"),
        (req("q", -1, 0, 0), "since"),
        (req("q", 0, -1, 0), "until"),
    ] {
        let status = query(&mut client, request.clone())
            .await
            .expect_err("refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
        assert!(
            status.message().contains(field),
            "{request:?}: message names {field}: {}",
            status.message()
        );
        let details = status.get_details_bad_request().expect("BadRequest detail");
        assert_eq!(details.field_violations.len(), 1);
        assert_eq!(details.field_violations[0].field, field, "{request:?}");
    }
    // The server still answers well-formed queries.
    assert_eq!(
        query(&mut client, req("q", t, t + 1, 0))
            .await
            .expect("valid query")
            .len(),
        1
    );
}

/// History crosses page boundaries (page size 2) with equal timestamps at the
/// boundaries: nothing is skipped or repeated.
async fn test_server_streaming_across_pages(options: TestOptions) {
    let server = TestServer::start_with(TestOptions {
        tweak: |config| config.service.page_size = 2,
        ..options.clone()
    })
    .await;
    let mut client = server.client().await;
    let t = unix_now() - 1_000;
    let offsets = [3, 1, 1, 2, 1, 3, 2, 1, 4];
    let sent: Vec<_> = offsets
        .iter()
        .enumerate()
        .map(|(i, offset)| reading("paged", i as f64, t + offset))
        .collect();
    client
        .stream_sensor_readings(tokio_stream::iter(sent.clone()))
        .await
        .expect("StreamSensorReadings");

    let all = query(&mut client, req("paged", 0, 0, 0))
        .await
        .expect("history");
    assert_eq!(
        all,
        expect(&sent, 0, 0, 0),
        "stable time order: ties in arrival order"
    );
    for limit in 1..=10 {
        let got = query(&mut client, req("paged", 0, 0, limit))
            .await
            .expect("limited history");
        assert_eq!(got, expect(&sent, 0, 0, limit as usize), "limit={limit}");
    }
    let got = query(&mut client, req("paged", t + 2, t + 4, 3))
        .await
        .expect("bounded");
    assert_eq!(got, expect(&sent, t + 2, t + 4, 3));
}

crate::on_both_engines!(
    test_server_streaming,
    test_server_streaming_unknown_sensor_is_empty_and_ok,
    test_server_streaming_invalid_queries,
    test_server_streaming_across_pages,
);
