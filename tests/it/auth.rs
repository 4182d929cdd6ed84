//! Token authentication: all five methods refuse calls without an accepted
//! token (and store nothing); the bare token and `Bearer <token>` both work;
//! health and reflection need no token.

use sensorhub_grpc::testing::{CALL_TIMEOUT, unix_now};
use sensorhub_grpc::testing::{TEST_TOKEN, TestServer};
use sensorhub_proto::{
    SensorReading, SensorRequest, ServerMessageKind, StatsRequest,
    sensor_service_client::SensorServiceClient,
};
use tonic::{Code, Request, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

const WRONG_TOKEN: &str = "sensor_token_abd";

async fn channel(server: &TestServer) -> Channel {
    sensorhub_grpc::client::endpoint(&server.client_config())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

fn with_auth<T>(message: T, authorization: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("ascii metadata"));
    }
    request
}

/// Calls each of the five methods with `authorization` (or none) on sensor
/// `sensor`, returning each method's outcome. Success means the method did
/// what it should (stored or returned the reading).
async fn call_all(
    channel: Channel,
    authorization: Option<&str>,
    sensor: &str,
) -> Vec<(&'static str, Result<(), Status>)> {
    let mut client = SensorServiceClient::new(channel);
    let t = unix_now() - 30;
    let r = |temperature: f64, offset: i64| SensorReading {
        sensor_id: sensor.to_owned(),
        temperature,
        timestamp: t + offset,
    };
    let mut outcomes = Vec::new();

    let unary = client
        .send_single_reading(with_auth(r(20.0, 0), authorization))
        .await
        .map(|ack| {
            assert_eq!(ack.get_ref().count, 1);
        });
    outcomes.push(("SendSingleReading", unary));

    let stream = client
        .stream_sensor_readings(with_auth(
            tokio_stream::iter(vec![r(21.0, 1), r(22.0, 2)]),
            authorization,
        ))
        .await
        .map(|ack| assert_eq!(ack.get_ref().count, 2));
    outcomes.push(("StreamSensorReadings", stream));

    let history = async {
        let request = SensorRequest {
            sensor_id: sensor.to_owned(),
            ..Default::default()
        };
        let mut stream = client
            .get_sensor_readings(with_auth(request, authorization))
            .await?
            .into_inner();
        let mut n = 0;
        while stream.message().await?.is_some() {
            n += 1;
        }
        // Authorized: sees the three readings stored just before.
        assert_eq!(n, 3, "history of {sensor}");
        Ok(())
    }
    .await;
    outcomes.push(("GetSensorReadings", history));

    let chat = async {
        let mut replies = client
            .sensor_chat(with_auth(
                tokio_stream::iter(vec![r(23.0, 3)]),
                authorization,
            ))
            .await?
            .into_inner();
        let first = replies.message().await?.expect("a reply");
        assert_eq!(first.message, "Received 23.0");
        assert_eq!(first.kind, ServerMessageKind::Received as i32);
        assert!(replies.message().await?.is_none());
        Ok(())
    }
    .await;
    outcomes.push(("SensorChat", chat));

    let stats = client
        .get_sensor_stats(with_auth(
            StatsRequest {
                sensor_id: sensor.to_owned(),
                ..Default::default()
            },
            authorization,
        ))
        .await
        .map(|reply| {
            let sensors = &reply.get_ref().sensors;
            assert_eq!(sensors.len(), 1);
            assert_eq!(sensors[0].count, 4);
        });
    outcomes.push(("GetSensorStats", stats));
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refuses_missing_and_wrong_tokens_on_every_method() {
    let server = TestServer::start().await;

    let bearer_wrong = format!("Bearer {WRONG_TOKEN}");
    let bearer_lower = format!("bearer {TEST_TOKEN}");
    let variants: [(&str, Option<&str>); 6] = [
        ("no token", None),
        ("wrong token", Some(WRONG_TOKEN)),
        ("Bearer <wrong>", Some(bearer_wrong.as_str())),
        ("empty value", Some("")),
        ("Bearer without token", Some("Bearer ")),
        ("lowercase scheme", Some(bearer_lower.as_str())),
    ];
    for (name, authorization) in variants {
        // A connection of its own for each: five failures in a row close a
        // connection (tests/it/exhaustion.rs), and these are five.
        let channel = channel(&server).await;
        let outcomes = tokio::time::timeout(
            CALL_TIMEOUT,
            call_all(channel, authorization, "auth-refused"),
        )
        .await
        .expect("refusals in time");
        assert_eq!(outcomes.len(), 5);
        for (method, outcome) in outcomes {
            let status = outcome.expect_err(&format!("{name}: {method} must be refused"));
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{name}: {method}: {status:?}"
            );
            assert!(
                !status.message().contains(TEST_TOKEN),
                "{name}: {method}: status leaks the token"
            );
            assert!(
                !status.message().contains(WRONG_TOKEN),
                "{name}: {method}: status echoes the presented token"
            );
        }
    }

    // Nothing of any refused call was stored.
    let mut client = server.client().await;
    let stats = client
        .get_sensor_stats(StatsRequest::default())
        .await
        .expect("stats")
        .into_inner();
    assert!(stats.sensors.is_empty(), "{:?}", stats.sensors);
    let mut history = client
        .get_sensor_readings(SensorRequest {
            sensor_id: "auth-refused".into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    assert!(history.message().await.expect("history").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_accepts_bare_and_bearer_token() {
    let server = TestServer::start().await;
    let channel = channel(&server).await;
    let bearer = format!("Bearer {TEST_TOKEN}");
    for (sensor, authorization) in [("auth-bare", TEST_TOKEN), ("auth-bearer", bearer.as_str())] {
        let outcomes = tokio::time::timeout(
            CALL_TIMEOUT,
            call_all(channel.clone(), Some(authorization), sensor),
        )
        .await
        .expect("calls in time");
        assert_eq!(outcomes.len(), 5);
        for (method, outcome) in outcomes {
            outcome.unwrap_or_else(|status| panic!("{sensor}: {method} refused: {status:?}"));
        }
    }
    // The helper's own client (bare token via its interceptor) works too.
    let mut client = server.client().await;
    let stats = client
        .get_sensor_stats(StatsRequest::default())
        .await
        .expect("stats")
        .into_inner();
    let counts: Vec<_> = stats
        .sensors
        .iter()
        .map(|s| (s.sensor_id.as_str(), s.count))
        .collect();
    assert_eq!(counts, vec![("auth-bare", 4), ("auth-bearer", 4)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_health_needs_no_token() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(channel(&server).await);
    for service in ["", "SensorService"] {
        let reply = tokio::time::timeout(
            CALL_TIMEOUT,
            health.check(HealthCheckRequest {
                service: service.into(),
            }),
        )
        .await
        .expect("health in time")
        .unwrap_or_else(|status| panic!("health check {service:?} without a token: {status:?}"))
        .into_inner();
        assert_eq!(reply.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "NoSuchService".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_reflection_needs_no_token() {
    let server = TestServer::start().await;
    let mut reflection = ServerReflectionClient::new(channel(&server).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = tokio::time::timeout(
        CALL_TIMEOUT,
        reflection.server_reflection_info(tokio_stream::iter(vec![request])),
    )
    .await
    .expect("reflection in time")
    .expect("reflection without a token")
    .into_inner();
    let reply = replies
        .message()
        .await
        .expect("reflection reply")
        .expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply: {reply:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"SensorService"), "{names:?}");
}
