//! Rotation without downtime: on SIGHUP, `sensorhub serve` reads its tokens
//! file and its TLS certificate and key again. New calls and connections use
//! them; a connection opened before keeps working; files that do not load
//! leave the old material in use.

use crate::support::spawned_server;

use std::{
    io::Read,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sensorhub_grpc::{
    ClientConfig, SensorClient, pki,
    testing::{CALL_TIMEOUT, reading, unix_now},
    tls::ClientTlsFiles,
};
use spawned_server::spawn_tls_serve;
use tonic::Code;

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(certs: &pki::BundleFiles, tokens_file: &Path, data: &Path) -> Server {
        let (child, port) = spawn_tls_serve(&certs.server_cert, &certs.server_key, |command| {
            command
                .arg("--tokens-file")
                .arg(tokens_file)
                .arg("--data")
                .arg(data)
                .env("OTEL_SDK_DISABLED", "true")
                .stderr(Stdio::piped());
        });
        Server { child, port }
    }

    fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let _ = self.child.wait();
        stderr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// Retries `attempt` until it gives `Ok` (the reload is asynchronous).
async fn eventually<F, Fut>(what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match attempt().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
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
    let server = Server::start(&live, &tokens, &dir.path().join("data"));

    let mut kept = client(server.port, &old.ca_cert, "standing-token-7")
        .await
        .unwrap();
    call(&mut kept)
        .await
        .expect("the kept token before the reload");
    let mut one = client(server.port, &old.ca_cert, "token-one")
        .await
        .unwrap();
    call(&mut one).await.expect("token-one before the reload");
    let mut two = client(server.port, &old.ca_cert, "token-two")
        .await
        .unwrap();
    assert_eq!(call(&mut two).await, Err(Code::Unauthenticated));

    // Rotate both: a new token replaces token-one, a certificate from a new CA.
    std::fs::write(&tokens, "token-two\nstanding-token-7\n").unwrap();
    for (from, to) in [
        (&new.server_cert, &live.server_cert),
        (&new.server_key, &live.server_key),
    ] {
        std::fs::copy(from, to).unwrap();
    }
    server.hangup();

    eventually(
        "a new connection trusting the new CA, with the new token",
        || async {
            let mut c = client(server.port, &new.ca_cert, "token-two").await?;
            call(&mut c).await.map_err(|code| format!("{code:?}"))
        },
    )
    .await;
    let mut one_again = client(server.port, &new.ca_cert, "token-one")
        .await
        .unwrap();
    assert_eq!(
        call(&mut one_again).await,
        Err(Code::Unauthenticated),
        "the removed token is refused"
    );
    assert!(
        client(server.port, &old.ca_cert, "standing-token-7")
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
    server.hangup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut after = client(server.port, &new.ca_cert, "token-two")
        .await
        .expect("the new certificate stays in use");
    call(&mut after).await.expect("the new tokens stay in use");

    let stderr = server.stop();
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
