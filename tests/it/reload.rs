//! Rotation without downtime: on SIGHUP, `sensorhub serve` reads its tokens
//! file and its TLS certificate and key again. New calls and connections use
//! them; a connection opened before keeps working; files that do not load
//! leave the old material in use.

use std::{path::Path, time::Duration};

use sensorhub_grpc::{
    ClientConfig, SensorClient,
    testing::{CALL_TIMEOUT, reading, unix_now},
    tls::ClientTlsFiles,
};
use sensorhub_pki as pki;
use spawned_server::{Serve, SpawnedServer};
use tonic::Code;

use crate::support::spawned_server;

/// How long a reload may take to be logged after SIGHUP.
const RELOAD_LIMIT: Duration = Duration::from_secs(10);

fn start(certs: &pki::BundleFiles, tokens_file: &Path, data: &Path) -> SpawnedServer {
    let mut serve = Serve::new();
    serve
        .command()
        .arg("--tls-cert")
        .arg(&certs.server_cert)
        .arg("--tls-key")
        .arg(&certs.server_key)
        .arg("--tokens-file")
        .arg(tokens_file)
        .arg("--data")
        .arg(data)
        .env("OTEL_SDK_DISABLED", "true");
    serve.start()
}

async fn client(port: u16, ca: &Path, token: &str) -> Result<SensorClient, String> {
    let mut config = ClientConfig::new(format!("https://localhost:{port}"));
    config.tls = ClientTlsFiles {
        ca: Some(ca.to_owned()),
        ..ClientTlsFiles::default()
    };
    config.token = Some(token.to_owned());
    sensorhub_grpc::connect(&config)
        .await
        .map_err(|e| e.to_string())
}

/// One unary call: `Ok` or the status code.
async fn call(client: &mut SensorClient) -> Result<(), Code> {
    tokio::time::timeout(
        CALL_TIMEOUT,
        client.send_single_reading(reading("reload-1", 20.0, unix_now())),
    )
    .await
    .expect("answered")
    .map(|_| ())
    .map_err(|status| status.code())
}

#[tokio::test]
async fn reload_on_sighup_rotates_tokens_and_certificates_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let old = pki::generate(&[])
        .unwrap()
        .write_to(&dir.path().join("old"))
        .unwrap();
    let new = pki::generate(&[])
        .unwrap()
        .write_to(&dir.path().join("new"))
        .unwrap();
    // The server reads its certificate from these paths; rotation overwrites them.
    let live = pki::generate(&[])
        .unwrap()
        .write_to(&dir.path().join("live"))
        .unwrap();
    for (from, to) in [
        (&old.server_cert, &live.server_cert),
        (&old.server_key, &live.server_key),
    ] {
        std::fs::copy(from, to).unwrap();
    }
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "# rotated by the test\ntoken-one\nstanding-token-7\n",
    )
    .unwrap();
    let server = start(&live, &tokens, &dir.path().join("data"));
    let port = server.grpc;

    let mut kept = client(port, &old.ca_cert, "standing-token-7")
        .await
        .unwrap();
    call(&mut kept)
        .await
        .expect("the kept token before the reload");
    let mut one = client(port, &old.ca_cert, "token-one").await.unwrap();
    call(&mut one).await.expect("token-one before the reload");
    let mut two = client(port, &old.ca_cert, "token-two").await.unwrap();
    assert_eq!(call(&mut two).await, Err(Code::Unauthenticated));

    // Rotate both: a new token replaces token-one, a certificate from a new CA.
    std::fs::write(&tokens, "token-two\nstanding-token-7\n").unwrap();
    for (from, to) in [
        (&new.server_cert, &live.server_cert),
        (&new.server_key, &live.server_key),
    ] {
        std::fs::copy(from, to).unwrap();
    }
    server.signal("HUP");
    server.wait_for_log("tokens reloaded", 1, RELOAD_LIMIT);
    server.wait_for_log("TLS certificate and key reloaded", 1, RELOAD_LIMIT);

    let mut c = client(port, &new.ca_cert, "token-two")
        .await
        .expect("a new connection trusting the new CA");
    call(&mut c)
        .await
        .expect("a new connection with the new token");
    let mut one_again = client(port, &new.ca_cert, "token-one").await.unwrap();
    assert_eq!(
        call(&mut one_again).await,
        Err(Code::Unauthenticated),
        "the removed token is refused"
    );
    assert!(
        client(port, &old.ca_cert, "standing-token-7")
            .await
            .is_err(),
        "a new connection now gets the new certificate, which the old CA does not sign"
    );
    call(&mut kept)
        .await
        .expect("the connection opened before the reload keeps working");

    // A broken rotation keeps what works: garbage for a certificate, no tokens.
    std::fs::write(&live.server_cert, "not a certificate").unwrap();
    std::fs::write(&tokens, "# nothing\n").unwrap();
    server.signal("HUP");
    server.wait_for_log("TLS files not reloaded", 1, RELOAD_LIMIT);
    server.wait_for_log("tokens not reloaded", 1, RELOAD_LIMIT);
    let mut after = client(port, &new.ca_cert, "token-two")
        .await
        .expect("the new certificate stays in use");
    call(&mut after).await.expect("the new tokens stay in use");

    let (out, _) = server.terminate(Duration::from_secs(15));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tokens reloaded"), "{stderr}");
    assert!(
        stderr.contains("TLS certificate and key reloaded"),
        "{stderr}"
    );
    assert!(stderr.contains("TLS files not reloaded"), "{stderr}");
    assert!(stderr.contains("tokens not reloaded"), "{stderr}");
    for secret in ["token-one", "token-two", "standing-token-7"] {
        assert!(!stderr.contains(secret), "a token in the log: {stderr}");
    }
}
