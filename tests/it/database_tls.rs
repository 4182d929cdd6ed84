//! TLS from a replica to PostgreSQL (issue 15), end to end against a real
//! PostgreSQL started with `ssl=on` and a server certificate from the
//! project's own CA (`sensorhub_pki`), naming `127.0.0.1` only:
//! - `sslmode=verify-full&sslrootcert=CA` stores and reads back, and
//!   PostgreSQL itself reports the replica's connections as TLS;
//! - `sslmode=require` works too (encrypted, the certificate unchecked);
//! - `verify-full` to `localhost`, a name the certificate does not hold,
//!   and `verify-full` against another CA are refused at start with one
//!   line saying what to fix, the password never shown.

use sensorhub_grpc::testing::{read_back, reading, unix_now};
use sensorhub_store_postgres::testing::{PASSWORD, TestPostgres};

use crate::support::spawned_server::{Serve, SpawnedServer, client, refused_at_start};

const TOKEN: &str = "database-tls-token";

/// How many of the replicas' connections PostgreSQL sees, and how many of
/// those are TLS (`pg_stat_ssl`).
fn replica_connections(pg: &TestPostgres, database: &str) -> (u32, u32) {
    let counts = pg
        .psql(
            database,
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'sensorhub'",
        )
        .expect("pg_stat_ssl");
    let (all, tls) = counts.split_once('|').expect("two counts");
    (all.parse().unwrap(), tls.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_tls_verify_full_and_require_work_and_a_wrong_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = sensorhub_pki::generate(&[]).expect("a CA");
    let (cert, key) =
        sensorhub_pki::issue_server(&ca.ca_cert, &ca.ca_key, &["127.0.0.1"]).expect("cert");
    let ca_file = dir.path().join("db-ca.pem");
    std::fs::write(&ca_file, &ca.ca_cert).unwrap();
    let other_ca_file = dir.path().join("other-ca.pem");
    std::fs::write(
        &other_ca_file,
        sensorhub_pki::generate(&[]).expect("another CA").ca_cert,
    )
    .unwrap();

    let pg = tokio::task::spawn_blocking(move || TestPostgres::start_own_with_tls(&cert, &key))
        .await
        .expect("PostgreSQL with ssl=on");
    let db = pg.fresh_database();
    let url = |host: &str, query: String| {
        format!(
            "postgres://postgres:{PASSWORD}@{host}:{}/{db}?{query}",
            pg.port()
        )
    };
    let verify_full = |host: &str, root: &std::path::Path| {
        url(
            host,
            format!("sslmode=verify-full&sslrootcert={}", root.display()),
        )
    };

    // verify-full against the CA that signed the certificate.
    let verified =
        SpawnedServer::start_on_database(&verify_full("127.0.0.1", &ca_file), TOKEN, &[]);
    let mut writer = client(&verified.url(), TOKEN).await;
    let base = unix_now() - 60;
    let sent: Vec<_> = (0..20)
        .map(|i| reading("tls-db", 20.0 + i as f64 * 0.5, base + i))
        .collect();
    let ack = writer
        .stream_sensor_readings(tokio_stream::iter(sent.clone()))
        .await
        .expect("stored over verify-full")
        .into_inner();
    assert_eq!(ack.count, 20);
    assert_eq!(read_back(&mut writer, "tls-db").await, sent);
    let (all, tls) = replica_connections(&pg, &db);
    assert!(all > 0, "the replica has connections to the database");
    assert_eq!(tls, all, "every connection of the replica is TLS");

    // require: encrypted, the certificate not checked; it reads what the
    // first replica stored.
    let required =
        SpawnedServer::start_on_database(&url("127.0.0.1", "sslmode=require".into()), TOKEN, &[]);
    let mut reader = client(&required.url(), TOKEN).await;
    assert_eq!(read_back(&mut reader, "tls-db").await, sent);
    let (all_two, tls_two) = replica_connections(&pg, &db);
    assert!(
        all_two > all,
        "the second replica connected ({all} -> {all_two})"
    );
    assert_eq!(tls_two, all_two, "every connection of both replicas is TLS");

    // verify-full to a name the certificate does not hold: refused at start.
    let line = refused_at_start(
        Serve::insecure_on_database(&verify_full("localhost", &ca_file), TOKEN),
        "the TLS handshake failed",
        PASSWORD,
    );
    eprintln!("{line}");
    assert!(line.contains("not valid for name"), "{line}");
    assert!(line.contains("must name the URL's host"), "{line}");

    // verify-full against a CA that did not sign it (another sensorhub CA,
    // of the same name, so rustls finds its signature bad): refused too.
    let line = refused_at_start(
        Serve::insecure_on_database(&verify_full("127.0.0.1", &other_ca_file), TOKEN),
        "the TLS handshake failed",
        PASSWORD,
    );
    eprintln!("{line}");
    assert!(line.contains("invalid peer certificate"), "{line}");
}
