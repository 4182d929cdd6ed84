//! `deploy/nginx/sensorhub.conf` under Debian's real nginx, in front of
//! three TLS replicas on one real PostgreSQL (issue 16): the four RPC kinds
//! pass through it with TLS on both sides and the token, nginx spreads the
//! calls over the replicas, a wrong token is refused by the replica, and a
//! chat and a follow stream stay open while idle longer than the short
//! timeouts the test sets at nginx's `http` level (standing in for nginx's
//! 60 s defaults, too long to wait for): the file's own timeouts must be
//! the ones in force.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sensorhub_grpc::{
    ClientConfig,
    testing::{fresh_database_url, reading, unix_now},
    tls::ClientTlsFiles,
};
use sensorhub_pki::{self as pki, BundleFiles};
use sensorhub_proto::{SensorReading, SensorRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::spawned_server::{Serve, SpawnedServer};

const TOKEN: &str = "nginx-token-7c2a";
/// What the test puts at nginx's `http` level for every timeout a long
/// stream meets; the file's `server` block must override each.
const SHORT: &str = "2s";
/// How long the streams stay idle: longer than [`SHORT`].
const IDLE: Duration = Duration::from_secs(4);
/// How long any one step may take.
const STEP: Duration = Duration::from_secs(10);

/// A TLS replica on the database at `url`.
fn replica(url: &str, certs: &BundleFiles) -> SpawnedServer {
    let mut serve = Serve::new();
    serve
        .command()
        .args(["--shutdown-grace", "2s"])
        .arg("--tls-cert")
        .arg(&certs.server_cert)
        .arg("--tls-key")
        .arg(&certs.server_key)
        .env("SENSORHUB_DATABASE_URL", url)
        .env("SENSORHUB_TOKENS", TOKEN);
    serve.start()
}

/// nginx as a child process; stopped when dropped.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// `text` with `from` replaced by `to`; `from` must be in it, so that the
/// test fails when the deployed file changes under it.
fn fill(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "deploy/nginx/sensorhub.conf no longer has `{from}`"
    );
    text.replace(from, to)
}

/// Starts nginx with the deployed configuration in front of `replicas`.
fn start_nginx(replicas: &[SpawnedServer], certs: &BundleFiles) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let deployed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/sensorhub.conf"),
    )
    .unwrap();
    // A port nginx can bind: taken from the kernel, then let go.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut conf = deployed;
    for (i, replica) in replicas.iter().enumerate() {
        conf = fill(
            &conf,
            &format!("server sensorhub-{}:50051", i + 1),
            &format!("server 127.0.0.1:{}", replica.grpc),
        );
    }
    conf = fill(
        &conf,
        "listen 8443 ssl http2;",
        &format!("listen 127.0.0.1:{port} ssl http2;"),
    );
    for (from, to) in [
        ("/certs/server.pem", &certs.server_cert),
        ("/certs/server.key", &certs.server_key),
        ("/certs/ca.pem", &certs.ca_cert),
    ] {
        conf = fill(&conf, from, &to.display().to_string());
    }
    std::fs::write(dir.path().join("sensorhub.conf"), conf).unwrap();
    let d = dir.path().display();
    let user = if rustix::process::geteuid().is_root() {
        "user root;"
    } else {
        ""
    };
    let main = format!(
        "{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # nginx's defaults are 60 s; these stand in for them.
    client_body_timeout {SHORT};
    send_timeout {SHORT};
    grpc_read_timeout {SHORT};
    grpc_send_timeout {SHORT};
    include {d}/sensorhub.conf;
}}
"
    );
    std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run nginx (Debian's nginx package; `cargo xtask test` installs it)");
    let mut nginx = Nginx { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = nginx.child.try_wait().unwrap() {
            panic!("nginx exited ({status}):\n{}", nginx.log());
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return nginx;
        }
        assert!(
            Instant::now() < deadline,
            "nginx did not listen:\n{}",
            nginx.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn client(nginx: &Nginx, certs: &BundleFiles, token: &str) -> sensorhub_grpc::SensorClient {
    let mut config = ClientConfig::new(format!("https://localhost:{}", nginx.port));
    config.tls = ClientTlsFiles {
        ca: Some(certs.ca_cert.clone()),
        cert: None,
        key: None,
        domain: None,
    };
    config.token = Some(token.to_owned());
    sensorhub_grpc::connect(&config)
        .await
        .expect("connect through nginx")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_passes_the_four_rpc_kinds_with_tls_and_the_token_to_three_replicas() {
    let url = fresh_database_url().await;
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = pki::generate(&["sensorhub".to_owned()])
        .unwrap()
        .write_to(certs_dir.path())
        .unwrap();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let (url, certs) = (url.clone(), certs.clone());
        replicas.push(
            tokio::task::spawn_blocking(move || replica(&url, &certs))
                .await
                .unwrap(),
        );
    }
    let nginx = start_nginx(&replicas, &certs);
    let mut client = client(&nginx, &certs, TOKEN).await;
    let t = unix_now() - 60;

    // Unary, nine times: nginx sends each call to the next replica.
    for i in 0..9 {
        client
            .send_single_reading(reading("via-nginx", 20.0 + i as f64, t + i))
            .await
            .expect("a unary call through nginx");
    }
    for replica in &replicas {
        assert!(
            replica.unary_calls_started() >= 1.0,
            "replica on port {} got no call",
            replica.grpc
        );
    }

    // Client stream.
    let batch: Vec<SensorReading> = (0..5)
        .map(|i| reading("via-nginx", 21.0, t + 10 + i))
        .collect();
    let ack = client
        .stream_sensor_readings(tokio_stream::iter(batch))
        .await
        .expect("a client stream through nginx")
        .into_inner();
    assert_eq!(ack.count, 5, "{ack:?}");

    // Server stream: the history, whichever replica answers.
    let mut history = client
        .get_sensor_readings(SensorRequest {
            sensor_id: "via-nginx".to_owned(),
            ..Default::default()
        })
        .await
        .expect("a server stream through nginx")
        .into_inner();
    let mut read = 0;
    while let Some(r) = history.message().await.expect("history") {
        assert_eq!(r.sensor_id, "via-nginx");
        read += 1;
    }
    assert_eq!(read, 14);

    // A follow stream and a chat, both idle longer than SHORT. The followed
    // sensor has a reading already: nginx 1.22 passes the response head on
    // with the first message, not before.
    client
        .send_single_reading(reading("via-nginx-live", 23.0, t))
        .await
        .unwrap();
    let mut follower = tokio::time::timeout(
        STEP,
        client.get_sensor_readings(SensorRequest {
            sensor_id: "via-nginx-live".to_owned(),
            follow: true,
            ..Default::default()
        }),
    )
    .await
    .expect("the follow stream's response head in time")
    .expect("a follow stream through nginx")
    .into_inner();
    let history = tokio::time::timeout(STEP, follower.message())
        .await
        .expect("the followed sensor's history in time")
        .expect("follow stream")
        .expect("a reading");
    assert_eq!(history.temperature, 23.0);
    let (tx, rx) = mpsc::channel::<SensorReading>(1);
    tx.send(reading("via-nginx-chat", 22.0, t)).await.unwrap();
    let mut chat = tokio::time::timeout(STEP, client.sensor_chat(ReceiverStream::new(rx)))
        .await
        .expect("the chat's response head in time")
        .expect("a chat through nginx")
        .into_inner();
    let reply = tokio::time::timeout(STEP, chat.message())
        .await
        .expect("the chat's first reply in time")
        .expect("chat reply")
        .expect("a reply");
    assert_eq!(reply.message, "Received 22.0");

    tokio::time::sleep(IDLE).await;

    tx.send(reading("via-nginx-chat", 23.5, t + 1))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), chat.message())
        .await
        .expect("a reply in time")
        .expect("the chat survived its idle time")
        .expect("a reply");
    assert_eq!(reply.message, "Received 23.5");
    drop(tx);
    let end = tokio::time::timeout(STEP, chat.message())
        .await
        .expect("the chat's end in time");
    assert!(end.expect("the chat ends OK").is_none());

    client
        .send_single_reading(reading("via-nginx-live", 24.0, t + 1))
        .await
        .unwrap();
    let live = tokio::time::timeout(Duration::from_secs(5), follower.message())
        .await
        .expect("the followed reading in time")
        .expect("the follow stream survived its idle time")
        .expect("a reading");
    assert_eq!(live.temperature, 24.0);

    // The token is the replica's to judge: a wrong one is refused.
    let mut intruder = self::client(&nginx, &certs, "wrong-token-1e9d").await;
    let refused = intruder
        .send_single_reading(reading("via-nginx", 20.0, t))
        .await
        .expect_err("a wrong token through nginx");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().starts_with("Invalid token"),
        "{refused:?}"
    );

    // nginx's own logs never hold the token.
    let logs = nginx.log()
        + &std::fs::read_to_string(nginx.dir.path().join("access.log")).unwrap_or_default();
    assert!(!logs.contains(TOKEN), "{logs}");
}
