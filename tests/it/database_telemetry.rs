//! What the PostgreSQL engine exports from a live replica (issue 15),
//! received by the in-process OTLP receiver and scraped from `/metrics`:
//! - a client span per group commit, `COPY readings` of the engine's own
//!   scope, with `db.system.name=postgresql`, `db.operation.name`,
//!   `db.collection.name`, `db.namespace`, `server.address`/`server.port`
//!   and the group's size (rows and calls), the sizes adding up to what was
//!   acknowledged;
//! - the semconv pool metrics `db.client.connection.count` by state
//!   (`idle`, `used`), `.max`, `.wait_time` and `.use_time`, over OTLP and
//!   on `/metrics` under the names the dashboards read;
//! - the database password nowhere in what was exported or scraped.

use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use sensorhub_grpc::testing::{reading, unix_now};
use sensorhub_store_postgres::testing::{PASSWORD, TestPostgres};
use sensorhub_telemetry::otlp_receiver::OtlpReceiver;

use crate::support::{
    exposition, http,
    spawned_server::{SpawnedServer, client},
};

const TOKEN: &str = "database-telemetry-token";
const SCOPE: &str = "sensorhub-store-postgres";
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_telemetry_commit_spans_and_pool_metrics_are_exported_and_scraped() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let pg = tokio::task::spawn_blocking(TestPostgres::shared)
        .await
        .unwrap();
    let database = pg.fresh_database();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.grpc_endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300".to_owned()),
    ];
    let server = SpawnedServer::start_on_database(&pg.url_for(&database), TOKEN, &env);
    let mut writer = client(&server.url(), TOKEN).await;
    let base = unix_now() - 3_600;
    let ack = writer
        .stream_sensor_readings(tokio_stream::iter(
            (0..2_000).map(move |i| reading("db-tel", 20.0 + (i % 9) as f64, base + i)),
        ))
        .await
        .expect("a client stream")
        .into_inner();
    assert_eq!(ack.count, 2_000);
    for i in 0..3 {
        writer
            .send_single_reading(reading("db-tel", 25.0, base + 2_000 + i))
            .await
            .expect("unary");
    }
    const ACKED: i64 = 2_003;

    // The commit spans: every acknowledged reading in exactly one of them.
    let commits = receiver
        .wait_for(WAIT, |r| {
            let commits: Vec<_> = r
                .spans()
                .into_iter()
                .filter(|s| s.scope == SCOPE && s.name() == "COPY readings")
                .collect();
            let rows: i64 = commits
                .iter()
                .filter_map(|s| s.attr("sensorhub.store.readings")?.parse::<i64>().ok())
                .sum();
            (rows >= ACKED).then_some(commits)
        })
        .await
        .expect("group commit spans covering every acknowledged reading");
    let rows: i64 = commits
        .iter()
        .map(|s| {
            s.attr("sensorhub.store.readings")
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(rows, ACKED, "each reading in one commit span");
    eprintln!("{} commit spans for {ACKED} readings", commits.len());
    let port = pg.port().to_string();
    for span in &commits {
        assert_eq!(span.kind(), SpanKind::Client);
        assert_eq!(
            span.parent_span_id_hex(),
            "",
            "one commit serves many calls"
        );
        for (key, value) in [
            ("db.system.name", "postgresql"),
            ("db.operation.name", "COPY"),
            ("db.collection.name", "readings"),
            ("db.namespace", database.as_str()),
            ("server.address", "127.0.0.1"),
            ("server.port", port.as_str()),
        ] {
            assert_eq!(span.attr(key).as_deref(), Some(value), "{key} on {span:?}");
        }
        let writes: i64 = span
            .attr("sensorhub.store.writes")
            .unwrap()
            .parse()
            .unwrap();
        assert!(writes >= 1, "{span:?}");
        assert!(span.attr("error.type").is_none(), "{span:?}");
    }

    // The pool's metrics over OTLP.
    let metrics = receiver
        .wait_for(WAIT, |r| {
            let metrics: Vec<_> = r
                .metrics()
                .into_iter()
                .filter(|m| m.scope == SCOPE)
                .collect();
            let has = |name: &str| metrics.iter().any(|m| m.name() == name);
            (has("db.client.connection.count")
                && has("db.client.connection.max")
                && has("db.client.connection.wait_time")
                && has("db.client.connection.use_time"))
            .then_some(metrics)
        })
        .await
        .expect("the pool's metrics");
    let latest = |name: &str| metrics.iter().rev().find(|m| m.name() == name).unwrap();
    let count = latest("db.client.connection.count");
    assert_eq!(count.unit(), "{connection}");
    let states: Vec<String> = count
        .sum_points()
        .iter()
        .inspect(|(attrs, _)| {
            assert_eq!(
                attrs.get("db.client.connection.pool.name"),
                Some(&database),
                "{attrs:?}"
            )
        })
        .filter_map(|(attrs, _)| attrs.get("db.client.connection.state").cloned())
        .collect();
    assert!(states.contains(&"idle".to_owned()), "{states:?}");
    assert!(states.contains(&"used".to_owned()), "{states:?}");
    let open: f64 = count.sum_points().iter().map(|(_, v)| v).sum();
    assert!(open >= 1.0, "the pool holds connections: {open}");
    let max = latest("db.client.connection.max");
    assert!(max.sum_points().iter().any(|(_, v)| *v == 16.0));
    for name in [
        "db.client.connection.wait_time",
        "db.client.connection.use_time",
    ] {
        let m = latest(name);
        assert_eq!(m.unit(), "s", "{name}");
        let points = m.histogram_points();
        assert!(
            points.iter().any(|p| p.count > 0
                && p.attributes.get("db.client.connection.pool.name") == Some(&database)),
            "{name}: {points:?}"
        );
    }

    // The same on /metrics, under the names the dashboards read.
    let page = tokio::task::spawn_blocking({
        let port = server.http;
        move || http::get(port, "/metrics").1
    })
    .await
    .unwrap();
    let samples = exposition::samples(&page);
    for state in ["idle", "used"] {
        assert_eq!(
            exposition::series(
                &samples,
                "db_client_connection_count",
                &[("db_client_connection_state", state)]
            )
            .len(),
            1,
            "db_client_connection_count{{state={state}}} in:\n{page}"
        );
    }
    for name in [
        "db_client_connection_max",
        "db_client_connection_wait_time_seconds_bucket",
        "db_client_connection_use_time_seconds_bucket",
        "sensorhub_store_commit_duration_seconds_bucket",
    ] {
        assert!(
            !exposition::series(&samples, name, &[]).is_empty(),
            "{name} in:\n{page}"
        );
    }

    assert!(
        !receiver.all_text().contains(PASSWORD),
        "the database password was exported"
    );
    assert!(
        !page.contains(PASSWORD),
        "the database password is on /metrics"
    );
    assert!(!server.log().contains(PASSWORD), "the password was logged");
}
