//! Who may do what (issue 20): a token line's `write=` and `read=` scopes.
//! A `kitchen-*` writer stores kitchen readings and is refused a garage
//! reading with PERMISSION_DENIED in all three write kinds, storing nothing
//! of it (what came before it in a stream is stored, and the status says
//! how much); a read-only token writes nothing; a `read=kitchen-*` token
//! reads kitchen sensors, is refused the garage before any data, and its
//! all-sensors stats, also walked in pages, list only kitchen sensors.

use sensorhub_grpc::{
    SensorClient, ServerConfig,
    auth::TokenSet,
    testing::{
        CALL_TIMEOUT, TEST_TOKEN, TestOptions, TestServer, read_back, reading, stored_count,
        unix_now,
    },
};
use sensorhub_proto::{SensorRequest, StatsRequest};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

const KITCHEN_WRITER: &str = "kitchen_writer_7d1e0c";
const KITCHEN_READER: &str = "kitchen_reader_93b2aa";

/// The test token may do everything (it reads back what was stored).
const TOKENS: &str = "\
# the admin, unscoped
sensor_token_abc name=admin
kitchen_writer_7d1e0c name=kitchen-sensors write=kitchen-*
kitchen_reader_93b2aa name=kitchen-dashboard read=kitchen-*
";

fn scoped_tokens(config: &mut ServerConfig) {
    config.tokens = Some(TokenSet::parse(TOKENS).expect("the test's tokens file"));
}

async fn start() -> TestServer {
    TestServer::start_with(TestOptions {
        memory: true,
        tweak: scoped_tokens,
        ..TestOptions::default()
    })
    .await
}

async fn client_with(server: &TestServer, token: &str) -> SensorClient {
    let mut config = server.client_config();
    config.token = Some(token.to_owned());
    server.try_client(config).await.expect("connect")
}

/// A PERMISSION_DENIED that names the sensor, the identity and the rule,
/// and no token.
fn assert_denied(status: &Status, sensor: &str, rule: &str) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let message = status.message();
    for words in [format!("{sensor:?}"), rule.to_owned()] {
        assert!(message.contains(&words), "{words} in {message}");
    }
    for token in [KITCHEN_WRITER, KITCHEN_READER, TEST_TOKEN] {
        assert!(!message.contains(token), "{message}");
    }
}

/// A chat of `readings`: the replies' texts until the chat ends, and its status.
async fn chat(
    client: &mut SensorClient,
    readings: Vec<sensorhub_proto::SensorReading>,
) -> (usize, Result<(), Status>) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    for r in readings {
        tx.send(r).await.expect("queued");
    }
    drop(tx);
    let mut replies = match client.sensor_chat(ReceiverStream::new(rx)).await {
        Ok(replies) => replies.into_inner(),
        Err(status) => return (0, Err(status)),
    };
    let mut received = 0;
    loop {
        match tokio::time::timeout(CALL_TIMEOUT, replies.message())
            .await
            .expect("chat answers in time")
        {
            Ok(Some(_)) => received += 1,
            Ok(None) => return (received, Ok(())),
            Err(status) => return (received, Err(status)),
        }
    }
}

#[tokio::test]
async fn scopes_a_kitchen_writer_is_refused_the_garage_in_every_write_kind_and_nothing_of_it_is_stored()
 {
    let server = start().await;
    let mut writer = client_with(&server, KITCHEN_WRITER).await;
    let t = unix_now() - 60;

    // Unary.
    writer
        .send_single_reading(reading("kitchen-1", 20.0, t))
        .await
        .expect("kitchen-1 is in scope");
    let refused = writer
        .send_single_reading(reading("garage-1", 20.0, t))
        .await
        .expect_err("garage-1 is not");
    assert_denied(&refused, "garage-1", "write=kitchen-*");
    assert!(
        refused.message().contains("kitchen-sensors"),
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains("nothing was stored"),
        "{}",
        refused.message()
    );

    // Client stream: the two kitchen readings before it are stored.
    let stream = vec![
        reading("kitchen-1", 21.0, t + 1),
        reading("kitchen-2", 21.5, t + 1),
        reading("garage-1", 22.0, t + 2),
        reading("kitchen-1", 23.0, t + 3),
    ];
    let refused = writer
        .stream_sensor_readings(tokio_stream::iter(stream))
        .await
        .expect_err("garage-1 ends the stream");
    assert_denied(&refused, "garage-1", "write=kitchen-*");
    assert!(refused.message().contains("#2"), "{}", refused.message());
    assert_eq!(stored_count(&refused), Some(2));

    // Chat: the kitchen reading before it is acknowledged and stored.
    let (received, ended) = chat(
        &mut writer,
        vec![
            reading("kitchen-3", 19.0, t + 4),
            reading("garage-1", 19.5, t + 5),
            reading("kitchen-3", 19.0, t + 6),
        ],
    )
    .await;
    let refused = ended.expect_err("garage-1 ends the chat");
    assert_denied(&refused, "garage-1", "write=kitchen-*");
    assert_eq!((received, stored_count(&refused)), (1, Some(1)));

    let mut admin = server.client().await;
    assert!(
        read_back(&mut admin, "garage-1").await.is_empty(),
        "nothing of garage-1 is stored"
    );
    assert_eq!(read_back(&mut admin, "kitchen-1").await.len(), 2);
    assert_eq!(read_back(&mut admin, "kitchen-2").await.len(), 1);
    assert_eq!(read_back(&mut admin, "kitchen-3").await.len(), 1);

    // A writer may not read, not even its own sensors.
    let status = writer
        .get_sensor_stats(StatsRequest {
            sensor_id: "kitchen-1".into(),
            ..Default::default()
        })
        .await
        .expect_err("the writer has no read scope");
    assert_denied(&status, "kitchen-1", "read=(nothing)");
}

#[tokio::test]
async fn scopes_a_read_only_token_writes_nothing() {
    let server = start().await;
    let mut reader = client_with(&server, KITCHEN_READER).await;
    let t = unix_now() - 60;
    let refused = reader
        .send_single_reading(reading("kitchen-1", 20.0, t))
        .await
        .expect_err("a reader does not write");
    assert_denied(&refused, "kitchen-1", "write=(nothing)");
    let refused = reader
        .stream_sensor_readings(tokio_stream::iter(vec![reading("kitchen-1", 20.0, t)]))
        .await
        .expect_err("a reader does not write");
    assert_denied(&refused, "kitchen-1", "write=(nothing)");
    assert_eq!(stored_count(&refused), Some(0));
    let (received, ended) = chat(&mut reader, vec![reading("kitchen-1", 20.0, t)]).await;
    assert_denied(
        &ended.expect_err("a reader does not chat"),
        "kitchen-1",
        "write=(nothing)",
    );
    assert_eq!(received, 0);
    let mut admin = server.client().await;
    assert!(read_back(&mut admin, "kitchen-1").await.is_empty());
}

/// Every GetSensorReadings reply until the stream ends, or the status.
async fn history(client: &mut SensorClient, sensor: &str) -> Result<usize, Status> {
    let mut stream = client
        .get_sensor_readings(SensorRequest {
            sensor_id: sensor.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut count = 0;
    while tokio::time::timeout(CALL_TIMEOUT, stream.message())
        .await
        .expect("history in time")?
        .is_some()
    {
        count += 1;
    }
    Ok(count)
}

#[tokio::test]
async fn scopes_a_kitchen_reader_reads_only_kitchen_sensors_and_its_stats_pages_hold_only_them() {
    let server = start().await;
    let mut admin = server.client().await;
    let t = unix_now() - 60;
    let sensors = [
        "attic-1",
        "garage-1",
        "garage-2",
        "hall",
        "kitchen-1",
        "kitchen-2",
        "kitchen-3",
        "kitchen-4",
        "kitchen-5",
        "kitchen",
        "zebra-kitchen-1",
    ];
    admin
        .stream_sensor_readings(tokio_stream::iter(
            sensors
                .iter()
                .map(|s| reading(s, 20.0, t))
                .collect::<Vec<_>>(),
        ))
        .await
        .expect("the admin writes everything");
    let mut reader = client_with(&server, KITCHEN_READER).await;

    assert_eq!(
        history(&mut reader, "kitchen-1").await.expect("in scope"),
        1
    );
    let refused = history(&mut reader, "garage-1")
        .await
        .expect_err("out of scope");
    assert_denied(&refused, "garage-1", "read=kitchen-*");
    assert!(
        refused.message().contains("nothing was sent"),
        "{}",
        refused.message()
    );
    // Follow too is refused at once, not left open.
    let follow = tokio::time::timeout(
        CALL_TIMEOUT,
        reader.get_sensor_readings(SensorRequest {
            sensor_id: "garage-1".into(),
            follow: true,
            ..Default::default()
        }),
    )
    .await
    .expect("answered in time");
    let refused = match follow {
        Err(status) => status,
        Ok(stream) => stream.into_inner().message().await.expect_err("refused"),
    };
    assert_eq!(refused.code(), Code::PermissionDenied);

    let one = reader
        .get_sensor_stats(StatsRequest {
            sensor_id: "kitchen-2".into(),
            ..Default::default()
        })
        .await
        .expect("in scope")
        .into_inner();
    assert_eq!(one.sensors.len(), 1);
    let refused = reader
        .get_sensor_stats(StatsRequest {
            sensor_id: "garage-1".into(),
            ..Default::default()
        })
        .await
        .expect_err("out of scope");
    assert_denied(&refused, "garage-1", "read=kitchen-*");

    let kitchen: Vec<String> = [
        "kitchen-1",
        "kitchen-2",
        "kitchen-3",
        "kitchen-4",
        "kitchen-5",
    ]
    .map(str::to_owned)
    .to_vec();
    // All at once (the original clients' limit = 0).
    let all = reader
        .get_sensor_stats(StatsRequest::default())
        .await
        .expect("every permitted sensor")
        .into_inner();
    let ids: Vec<String> = all.sensors.iter().map(|s| s.sensor_id.clone()).collect();
    assert_eq!((ids, all.next_cursor.as_str()), (kitchen.clone(), ""));
    // In pages of two: only kitchen sensors, each once, and the last page says so.
    let (mut walked, mut cursor, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = reader
            .get_sensor_stats(StatsRequest {
                limit: 2,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .expect("a page")
            .into_inner();
        pages += 1;
        assert!(page.sensors.len() <= 2);
        walked.extend(page.sensors.iter().map(|s| s.sensor_id.clone()));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
        assert!(pages < 10, "the walk ends");
    }
    assert_eq!((walked, pages), (kitchen, 3));
    // The admin still sees every sensor.
    let everything = admin
        .get_sensor_stats(StatsRequest::default())
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(everything.sensors.len(), sensors.len());
}
