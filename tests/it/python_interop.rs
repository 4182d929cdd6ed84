//! Wire compatibility with the ORIGINAL Python clients: runs
//! `tests/python/interop_client.py` (plain grpcio, stubs generated at run time
//! from `proto/sensor.proto`, bare token in `authorization`) against a real
//! TLS test server, then checks through the Rust client what it stored.
//!
//! Needs Python 3 with grpcio: `cargo xtask test` makes a venv with it and
//! sets `$SENSORHUB_TEST_PYTHON`; without that variable it is `python3`.

use std::time::Duration;

use sensorhub_grpc::testing::TestServer;
use sensorhub_proto::SensorRequest;

use crate::support::python::{self, require_modules, run, text};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_runs_all_four_rpc_kinds() {
    // grpcio missing must fail loudly, never skip.
    require_modules(&["grpc", "grpc_tools.protoc"]).await;

    let server = TestServer::start().await;
    let sensor_id = format!("py-interop-{}", std::process::id());
    let target = format!("localhost:{}", server.addr.port());

    let mut cmd = python::script("tests/python/interop_client.py");
    cmd.args(["--target", &target])
        .arg("--ca")
        .arg(&server.certs.ca_cert)
        .args(["--token", sensorhub_grpc::testing::TEST_TOKEN])
        .args(["--sensor-id", &sensor_id])
        .arg("--proto")
        .arg(python::repo_path("proto/sensor.proto"));
    let Some(done) = run(cmd, SCRIPT_TIMEOUT).await else {
        panic!("the Python grpcio client did not finish within {SCRIPT_TIMEOUT:?}");
    };
    let report = format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        text(&done.stdout),
        text(&done.stderr)
    );
    assert!(
        done.status.success(),
        "the Python grpcio client failed ({})\n{report}",
        done.status
    );
    println!("{report}");

    // What the Python client sent is stored, as the Rust client sees it.
    let mut client = server.client().await;
    let mut stream = client
        .get_sensor_readings(SensorRequest {
            sensor_id: sensor_id.clone(),
            ..Default::default()
        })
        .await
        .expect("GetSensorReadings")
        .into_inner();
    let mut stored = Vec::new();
    while let Some(reading) = stream.message().await.expect("reading") {
        stored.push(reading);
    }
    let temps: Vec<f64> = stored.iter().map(|r| r.temperature).collect();
    assert_eq!(
        temps,
        [20.5, 19.0, 19.5, 20.0, 20.25, 21.0, 22.0, 21.5, 23.25],
        "readings stored for {sensor_id}: {stored:?}"
    );
    assert!(
        stored.iter().all(|r| r.sensor_id == sensor_id),
        "{stored:?}"
    );
    assert!(
        stored.windows(2).all(|w| w[0].timestamp < w[1].timestamp),
        "not in strictly increasing timestamp order: {stored:?}"
    );
}
