//! Certificates as identities (issue 20): with `--client-ca`, a client
//! certificate named on a `cert:NAME` line (its DNS SAN, or its CN) is an
//! identity of its own, so its sensor needs no token. `sensorhub certs
//! --client NAME` issues such certificates from the CA. A certificate from
//! the same CA that no line names is no identity: without a token its calls
//! get UNAUTHENTICATED (as documented in SECURITY.md); a token, when sent,
//! decides the identity.

use std::{path::Path, time::Duration};

use sensorhub_grpc::{
    ClientConfig, SensorClient,
    testing::{CALL_TIMEOUT, reading, unix_now},
    tls::ClientTlsFiles,
};
use sensorhub_proto::StatsRequest;
use tonic::Code;

use crate::support::spawned_server::{Serve, sensorhub};

const ADMIN: &str = "cert-test-admin-93af";

async fn client(port: u16, dir: &Path, cert: Option<&str>, token: Option<&str>) -> SensorClient {
    let mut config = ClientConfig::new(format!("https://localhost:{port}"));
    config.tls = ClientTlsFiles {
        ca: Some(dir.join("ca.pem")),
        cert: cert.map(|name| dir.join(format!("{name}.pem"))),
        key: cert.map(|name| dir.join(format!("{name}.key"))),
        domain: None,
    };
    config.token = token.map(str::to_owned);
    sensorhub_grpc::connect(&config).await.expect("connect")
}

async fn write(client: &mut SensorClient, sensor: &str) -> Result<(), tonic::Status> {
    tokio::time::timeout(
        CALL_TIMEOUT,
        client.send_single_reading(reading(sensor, 20.0, unix_now() - 5)),
    )
    .await
    .expect("answered in time")
    .map(|_| ())
}

#[tokio::test]
async fn cert_identities_a_mapped_certificate_writes_its_scope_without_a_token_and_an_unmapped_one_is_unauthenticated()
 {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let made = sensorhub(&["certs", "--out", certs.to_str().unwrap(), "--keep-ca-key"]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let issued = sensorhub(&[
        "certs",
        "--out",
        certs.to_str().unwrap(),
        "--client",
        "garage-1",
        "--client",
        "stranger-9",
    ]);
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(certs.join("garage-1.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Without --keep-ca-key the CA's key is dropped, and --client says what to do.
    let keyless = dir.path().join("keyless");
    assert!(
        sensorhub(&["certs", "--out", keyless.to_str().unwrap()])
            .status
            .success()
    );
    assert!(keyless.join("ca.pem").exists() && !keyless.join("ca.key").exists());
    let refused = sensorhub(&["certs", "--out", keyless.to_str().unwrap(), "--client", "x"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("ca.key") && stderr.contains("--keep-ca-key"),
        "{stderr}"
    );

    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("{ADMIN} name=admin\ncert:garage-1 name=garage-sensor write=garage-*\n"),
    )
    .unwrap();
    let mut serve = Serve::new();
    serve
        .command()
        .arg("--tls-cert")
        .arg(certs.join("server.pem"))
        .arg("--tls-key")
        .arg(certs.join("server.key"))
        .arg("--client-ca")
        .arg(certs.join("ca.pem"))
        .arg("--tokens-file")
        .arg(&tokens)
        .arg("--data")
        .arg(dir.path().join("data"))
        .env("OTEL_SDK_DISABLED", "true");
    let server = serve.start();

    // The mapped certificate, no token: its own scope.
    let mut garage = client(server.grpc, &certs, Some("garage-1"), None).await;
    write(&mut garage, "garage-1")
        .await
        .expect("the certificate's identity writes its scope");
    let denied = write(&mut garage, "kitchen-1")
        .await
        .expect_err("outside its scope");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("garage-sensor") && denied.message().contains("\"kitchen-1\""),
        "{}",
        denied.message()
    );
    let denied = garage
        .get_sensor_stats(StatsRequest::default())
        .await
        .map(|reply| reply.into_inner().sensors.len());
    assert_eq!(denied.expect("stats for every sensor it may read: none"), 0);

    // A certificate of the same CA that no line names: no identity without a token.
    let mut stranger = client(server.grpc, &certs, Some("stranger-9"), None).await;
    let refused = write(&mut stranger, "garage-1")
        .await
        .expect_err("no identity");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("stranger-9"),
        "{}",
        refused.message()
    );
    // The same with a token: the token is the identity.
    let mut with_token = client(server.grpc, &certs, Some("stranger-9"), Some(ADMIN)).await;
    write(&mut with_token, "kitchen-1")
        .await
        .expect("the admin token");
    // A token sent with a mapped certificate decides, also when wrong.
    let mut wrong = client(server.grpc, &certs, Some("garage-1"), Some("not-a-token-1")).await;
    assert_eq!(
        write(&mut wrong, "garage-1").await.unwrap_err().code(),
        Code::Unauthenticated
    );

    let mut admin = client(server.grpc, &certs, Some("stranger-9"), Some(ADMIN)).await;
    let stats = admin
        .get_sensor_stats(StatsRequest::default())
        .await
        .expect("stats")
        .into_inner();
    let ids: Vec<_> = stats.sensors.iter().map(|s| s.sensor_id.as_str()).collect();
    assert_eq!(
        ids,
        ["garage-1", "kitchen-1"],
        "nothing of the refused readings stored"
    );

    let (out, _) = server.terminate(Duration::from_secs(15));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains(ADMIN), "a token in the log: {log}");
}
