//! gRPC reflection as a tool that knows nothing of our protos sees it
//! (grpcurl's `list` and `describe`): grpcio-reflection's own client, from
//! PyPI, over TLS, through both `grpc.reflection.v1` and `v1alpha`. Every
//! service the server answers is listed, health included, and each can be
//! described from the descriptors reflection serves.

use std::time::Duration;

use sensorhub_grpc::testing::TestServer;

use crate::support::python::{self, require_modules, run, text};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

const SERVICES: [&str; 4] = [
    "SensorService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

async fn reflect(server: &TestServer, api: &str) -> serde_json::Value {
    let mut cmd = python::script("tests/python/reflection_client.py");
    cmd.args(["--target", &format!("localhost:{}", server.addr.port())])
        .arg("--ca")
        .arg(&server.certs.ca_cert)
        .args(["--api", api]);
    for service in SERVICES {
        cmd.args(["--describe", service]);
    }
    let Some(done) = run(cmd, SCRIPT_TIMEOUT).await else {
        panic!("the reflection client did not finish within {SCRIPT_TIMEOUT:?}");
    };
    assert!(
        done.status.success(),
        "the reflection client ({api}) failed ({})\n--- stdout ---\n{}--- stderr ---\n{}",
        done.status,
        text(&done.stdout),
        text(&done.stderr)
    );
    serde_json::from_slice(&done.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&done.stdout)))
}

fn method<'a>(report: &'a serde_json::Value, service: &str, name: &str) -> &'a serde_json::Value {
    let described = &report["described"][service];
    described["methods"]
        .as_array()
        .unwrap_or_else(|| panic!("{service} not described: {described}"))
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no {service}/{name} in {described}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_and_describes_every_service_over_v1_and_v1alpha() {
    require_modules(&[
        "grpc",
        "grpc_reflection.v1alpha.proto_reflection_descriptor_database",
    ])
    .await;
    let server = TestServer::start().await;
    for api in ["v1", "v1alpha"] {
        let report = reflect(&server, api).await;
        let listed: Vec<&str> = report["services"]
            .as_array()
            .expect("services")
            .iter()
            .map(|s| s.as_str().expect("a name"))
            .collect();
        assert_eq!(listed, SERVICES, "{api}: services listed");

        let check = method(&report, "grpc.health.v1.Health", "Check");
        assert_eq!(check["input"], "grpc.health.v1.HealthCheckRequest", "{api}");
        assert_eq!(
            check["output"], "grpc.health.v1.HealthCheckResponse",
            "{api}"
        );
        let watch = method(&report, "grpc.health.v1.Health", "Watch");
        assert_eq!(watch["server_streaming"], true, "{api}");

        let chat = method(&report, "SensorService", "SensorChat");
        assert_eq!(chat["input"], "SensorReading", "{api}");
        assert_eq!(chat["client_streaming"], true, "{api}");
        assert_eq!(chat["server_streaming"], true, "{api}");
        for version in ["v1", "v1alpha"] {
            let service = format!("grpc.reflection.{version}.ServerReflection");
            let info = method(&report, &service, "ServerReflectionInfo");
            assert_eq!(
                info["input"],
                format!("grpc.reflection.{version}.ServerReflectionRequest"),
                "{api}"
            );
        }
    }
}
