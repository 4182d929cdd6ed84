//! TLS: only clients that trust the server's CA can call; plaintext clients
//! cannot; in mutual-TLS mode only clients with a certificate from the CA can.

use sensorhub_grpc::testing::{CALL_TIMEOUT, unix_now};
use sensorhub_grpc::{
    ClientConfig,
    testing::{TEST_TOKEN, TestOptions, TestServer},
};
use sensorhub_pki::{self as pki, BundleFiles};
use sensorhub_proto::{SensorReading, StatsRequest};

/// A CA (and leaves) the server has never heard of.
fn foreign_bundle(dir: &tempfile::TempDir) -> BundleFiles {
    pki::generate(&[])
        .expect("certificates")
        .write_to(&dir.path().join("foreign"))
        .expect("write certificates")
}

/// Connects with `config` and makes one real call (a write, then reads its
/// count back). `Err` says where it failed.
async fn try_call(server: &TestServer, config: ClientConfig, sensor: &str) -> Result<u64, String> {
    let attempt = async {
        let mut client = server
            .try_client(config)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        client
            .send_single_reading(SensorReading {
                sensor_id: sensor.to_owned(),
                temperature: 20.0,
                timestamp: unix_now() - 5,
            })
            .await
            .map_err(|s| format!("call: {s:?}"))?;
        let stats = client
            .get_sensor_stats(StatsRequest {
                sensor_id: sensor.into(),
                ..Default::default()
            })
            .await
            .map_err(|s| format!("call: {s:?}"))?
            .into_inner();
        Ok(stats.sensors.first().map_or(0, |s| s.count))
    };
    tokio::time::timeout(CALL_TIMEOUT, attempt)
        .await
        .expect("the attempt ends (either way) in time")
}

/// Same, over a lazily connected channel: the first call makes the connection.
async fn try_call_lazy(config: &ClientConfig) -> Result<(), String> {
    let channel = sensorhub_grpc::client::endpoint(config)
        .map_err(|e| format!("endpoint: {e}"))?
        .connect_lazy();
    let mut client = sensorhub_grpc::client::client_for(channel, &config.server, Some(TEST_TOKEN))
        .expect("client");
    let call = client.get_sensor_stats(StatsRequest::default());
    match tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .expect("the call ends in time")
    {
        Ok(_) => Ok(()),
        Err(status) => Err(format!("{status:?}")),
    }
}

async fn stored(server: &TestServer, sensor: &str) -> u64 {
    let mut client = server.client().await;
    let stats = client
        .get_sensor_stats(StatsRequest {
            sensor_id: sensor.into(),
            ..Default::default()
        })
        .await
        .expect("stats")
        .into_inner();
    stats.sensors.first().map_or(0, |s| s.count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_trusting_the_ca_connects_and_calls() {
    let server = TestServer::start().await;
    assert!(server.url().starts_with("https://"));
    assert_eq!(
        try_call(&server, server.client_config(), "tls-ok").await,
        Ok(1)
    );

    // The certificate also covers the IP address and the legacy name `grpc-server`.
    let mut by_ip = server.client_config();
    by_ip.server = format!("https://127.0.0.1:{}", server.addr.port());
    assert_eq!(try_call(&server, by_ip, "tls-ok").await, Ok(2));
    let mut legacy_name = server.client_config();
    legacy_name.tls.domain = Some("grpc-server".into());
    assert_eq!(try_call(&server, legacy_name, "tls-ok").await, Ok(3));

    // ...but not a name it was not issued for.
    let mut wrong_name = server.client_config();
    wrong_name.tls.domain = Some("not-the-server.example".into());
    assert!(
        try_call(&server, wrong_name.clone(), "tls-wrong-name")
            .await
            .is_err()
    );
    assert!(try_call_lazy(&wrong_name).await.is_err());
    assert_eq!(stored(&server, "tls-wrong-name").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_trusting_another_ca_cannot_call() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let foreign = foreign_bundle(&dir);
    let mut config = server.client_config();
    config.tls.ca = Some(foreign.ca_cert.clone());

    let eager = try_call(&server, config.clone(), "tls-foreign-ca").await;
    assert!(
        eager.is_err(),
        "a client trusting another CA called successfully"
    );
    let lazy = try_call_lazy(&config).await;
    assert!(
        lazy.is_err(),
        "a lazily connected client trusting another CA called successfully"
    );
    assert_eq!(stored(&server, "tls-foreign-ca").await, 0);
    // The server is unaffected.
    assert_eq!(
        try_call(&server, server.client_config(), "tls-after").await,
        Ok(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_plaintext_client_cannot_call_the_tls_port() {
    let server = TestServer::start().await;
    let mut config = ClientConfig::new(format!("http://localhost:{}", server.addr.port()));
    config.token = Some(TEST_TOKEN.into());

    let eager = try_call(&server, config.clone(), "tls-plaintext").await;
    assert!(eager.is_err(), "a plaintext client called a TLS server");
    assert!(
        try_call_lazy(&config).await.is_err(),
        "a lazy plaintext client called a TLS server"
    );
    assert_eq!(stored(&server, "tls-plaintext").await, 0);
    assert_eq!(
        try_call(&server, server.client_config(), "tls-after").await,
        Ok(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_mutual_requires_a_client_certificate_from_the_ca() {
    let server = TestServer::start_with(TestOptions {
        mutual_tls: true,
        ..Default::default()
    })
    .await;

    // No client certificate: refused.
    let mut anonymous = server.client_config();
    assert!(
        anonymous.tls.cert.is_some(),
        "the helper sends a client certificate in mTLS mode"
    );
    anonymous.tls.cert = None;
    anonymous.tls.key = None;
    let refused = try_call(&server, anonymous.clone(), "mtls-anonymous").await;
    assert!(
        refused.is_err(),
        "a client without a certificate called an mTLS server"
    );
    assert!(try_call_lazy(&anonymous).await.is_err());

    // A certificate from another CA: refused.
    let dir = tempfile::tempdir().expect("temp dir");
    let foreign = foreign_bundle(&dir);
    let mut impostor = server.client_config();
    impostor.tls.cert = Some(foreign.client_cert.clone());
    impostor.tls.key = Some(foreign.client_key.clone());
    assert!(
        try_call(&server, impostor.clone(), "mtls-impostor")
            .await
            .is_err()
    );
    assert!(try_call_lazy(&impostor).await.is_err());

    // The CA's client certificate: accepted.
    assert_eq!(
        try_call(&server, server.client_config(), "mtls-ok").await,
        Ok(1)
    );
    assert_eq!(stored(&server, "mtls-anonymous").await, 0);
    assert_eq!(stored(&server, "mtls-impostor").await, 0);
}
