//! `OTEL_SEMCONV_STABILITY_OPT_IN` in whole processes: for each of its three
//! modes a `sensorhub serve` and a `sensorhub sensor` export to a real OTLP
//! receiver, and the status attribute on both spans and on both
//! `rpc.*.call.duration` metrics is the mode's: `rpc.response.status_code`
//! (unset, v1.40.0), `rpc.status_code` (`rpc`), or both (`rpc/dup`). A66 is
//! the same in every mode; a misspelt value stops the server at startup.

use std::time::Duration;

use sensorhub_rpc_telemetry::conventions::a66;
use sensorhub_telemetry::otlp_receiver::OtlpReceiver;
use spawned_server::{SpawnedServer, command};

use crate::support::spawned_server;

const TOKEN: &str = "semconv-test-token-31c0";
const WAIT: Duration = Duration::from_secs(20);
const OLD: &str = "rpc.response.status_code";
const NEW: &str = "rpc.status_code";
const METHOD: &str = "SensorService/SendSingleReading";

#[tokio::test(flavor = "multi_thread")]
async fn the_three_semconv_modes_on_spans_and_metrics() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let modes: [(Option<&str>, &str, &[&str]); 3] = [
        (None, "unset", &[OLD]),
        (Some("rpc"), "rpc", &[NEW]),
        (Some("http,rpc/dup"), "dup", &[OLD, NEW]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    for (opt_in, label, _) in modes {
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.grpc_endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300".to_owned()),
            ("OTEL_SERVICE_NAME", format!("server-{label}")),
        ];
        if let Some(opt_in) = opt_in {
            env.push(("OTEL_SEMCONV_STABILITY_OPT_IN", opt_in.to_owned()));
        }
        servers.push(SpawnedServer::start(&dir.path().join(label), TOKEN, &env));
    }
    for ((opt_in, label, _), server) in modes.iter().zip(&servers) {
        let mut sensor = command();
        sensor
            .args([
                "sensor",
                "--server",
                &server.url(),
                "--mode",
                "unary",
                "--count",
                "2",
                "--interval-max",
                "10ms",
                "--sensor-id",
                label,
            ])
            .env("SENSORHUB_TOKEN", TOKEN)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.grpc_endpoint())
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("OTEL_METRIC_EXPORT_INTERVAL", "300")
            .env("OTEL_SERVICE_NAME", format!("sensor-{label}"));
        if let Some(opt_in) = opt_in {
            sensor.env("OTEL_SEMCONV_STABILITY_OPT_IN", opt_in);
        }
        let out = sensor.output().expect("run sensorhub sensor");
        assert!(
            out.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    for (_, label, keys) in modes {
        for (service, kind) in [
            (format!("server-{label}"), "server"),
            (format!("sensor-{label}"), "client"),
        ] {
            let span = receiver
                .wait_for(WAIT, |r| {
                    r.spans()
                        .into_iter()
                        .find(|s| s.service_name == service && s.name() == METHOD)
                })
                .await
                .unwrap_or_else(|| panic!("no {kind} span from {service}"));
            for key in [OLD, NEW] {
                let expected = keys.contains(&key).then_some("OK");
                assert_eq!(
                    span.attr(key).as_deref(),
                    expected,
                    "{label} {kind} span: {key}"
                );
            }
            assert_eq!(span.attr("rpc.system.name").as_deref(), Some("grpc"));

            let metric = format!("rpc.{kind}.call.duration");
            let point = receiver
                .wait_for(WAIT, |r| {
                    let metrics = r.metrics();
                    let m = metrics
                        .iter()
                        .rev()
                        .find(|m| m.service_name == service && m.name() == metric)?;
                    m.histogram_points().into_iter().find(|p| {
                        p.attributes.get("rpc.method").map(String::as_str) == Some(METHOD)
                    })
                })
                .await
                .unwrap_or_else(|| panic!("no {metric} from {service}"));
            for key in [OLD, NEW] {
                let expected = keys.contains(&key).then_some("OK");
                assert_eq!(
                    point.attributes.get(key).map(String::as_str),
                    expected,
                    "{label} {metric}: {key} in {:?}",
                    point.attributes
                );
            }
            if kind == "client" {
                assert_eq!(
                    point.attributes.get("server.address").map(String::as_str),
                    Some("127.0.0.1"),
                    "{label}: {:?}",
                    point.attributes
                );
            }

            // A66 does not change with the mode.
            let a66_name = if kind == "server" {
                a66::SERVER_CALL_DURATION
            } else {
                a66::CLIENT_ATTEMPT_DURATION
            };
            let a66_point = receiver
                .wait_for(WAIT, |r| {
                    let metrics = r.metrics();
                    let m = metrics
                        .iter()
                        .rev()
                        .find(|m| m.service_name == service && m.name() == a66_name)?;
                    m.histogram_points().into_iter().next()
                })
                .await
                .unwrap_or_else(|| panic!("no {a66_name} from {service}"));
            assert_eq!(
                a66_point.attributes.get(a66::STATUS).map(String::as_str),
                Some("OK")
            );
            assert!(!a66_point.attributes.keys().any(|k| k.starts_with("rpc.")));
        }
    }
    for server in servers {
        server.terminate(Duration::from_secs(15));
    }
}

#[test]
fn a_misspelt_opt_in_stops_the_server_naming_the_variable() {
    let out = command()
        .args(["serve", "--insecure", "--no-auth", "--memory"])
        .args(["--listen", "127.0.0.1:0", "--http", "off"])
        .env("OTEL_SEMCONV_STABILITY_OPT_IN", "rpc/dupe")
        .output()
        .expect("run sensorhub serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("OTEL_SEMCONV_STABILITY_OPT_IN") && stderr.contains("rpc/dup"),
        "{stderr}"
    );
}
