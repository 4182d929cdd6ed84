//! For the resource-exhaustion tests: `sensorhub serve` as a process whose
//! memory, descriptors and CPU are read from `/proc`, and raw clients that
//! hold what a stranger could hold: TLS connections that say nothing,
//! HTTP/2 connections that open no stream, and streams whose request
//! messages never finish.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    process::Command,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use sensorhub_grpc::{
    ClientConfig, SensorClient,
    testing::{TEST_TOKEN, reading, unix_now},
    tls::ClientTlsFiles,
};
use sensorhub_pki::{self as pki, BundleFiles};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::{
    http, raw_grpc,
    spawned_server::{Serve, SpawnedServer},
};

/// Where an attack comes from: another loopback address than the test's own
/// clients (127.0.0.1), so that a per-address limit applies to it alone.
pub const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A running `sensorhub serve` with TLS and a token, on ports it chose.
pub struct ServeProcess {
    pub server: SpawnedServer,
    pub certs: BundleFiles,
    pub grpc: SocketAddr,
    /// Holds the certificates and the store.
    _dir: tempfile::TempDir,
}

impl ServeProcess {
    /// Starts the server with TLS, the test token, a durable store, JSON
    /// logs and `args`.
    pub fn start(args: &[&str]) -> ServeProcess {
        Self::start_limited(args, None)
    }

    /// Same, under a descriptor limit of `nofile` (soft and hard), as an
    /// operator's `ulimit -n` or `LimitNOFILE=` would set it.
    pub fn start_limited(args: &[&str], nofile: Option<u32>) -> ServeProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = pki::generate(&[])
            .expect("certificates")
            .write_to(&dir.path().join("certs"))
            .expect("write certificates");
        let mut serve = Serve::new();
        serve
            .command()
            .args(["--log-format", "json", "--shutdown-grace", "1s"])
            .arg("--tls-cert")
            .arg(&certs.server_cert)
            .arg("--tls-key")
            .arg(&certs.server_key)
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(args)
            .env("SENSORHUB_TOKENS", TEST_TOKEN);
        if let Some(nofile) = nofile {
            let command = serve.command();
            let mut limited = Command::new("sh");
            limited
                .arg("-c")
                .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
                .arg(command.get_program())
                .args(command.get_args());
            for (key, value) in command.get_envs() {
                match value {
                    Some(value) => limited.env(key, value),
                    None => limited.env_remove(key),
                };
            }
            *command = limited;
        }
        let server = serve.start();
        let grpc = SocketAddr::from(([127, 0, 0, 1], server.grpc));
        ServeProcess {
            server,
            certs,
            grpc,
            _dir: dir,
        }
    }

    /// Resident memory now, bytes.
    pub fn rss(&self) -> u64 {
        self.server.rss_bytes()
    }

    /// Open file descriptors now.
    pub fn fds(&self) -> usize {
        self.server.open_descriptors()
    }

    /// Every line logged so far (JSON).
    pub fn log(&self) -> Vec<String> {
        self.server.log().lines().map(str::to_owned).collect()
    }

    /// `/metrics`, in the Prometheus text format.
    pub fn metrics(&self) -> String {
        let (status, body) = http::get(self.server.http, "/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// A client configuration that trusts the CA and sends the token.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(format!("https://localhost:{}", self.grpc.port()));
        config.tls = ClientTlsFiles {
            ca: Some(self.certs.ca_cert.clone()),
            cert: None,
            key: None,
            domain: None,
        };
        config.token = Some(TEST_TOKEN.to_owned());
        config
    }

    /// A connected client, as a sensor would have.
    pub async fn client(&self) -> SensorClient {
        tokio::time::timeout(
            Duration::from_secs(10),
            sensorhub_grpc::connect(&self.client_config()),
        )
        .await
        .expect("connected in time")
        .expect("connect")
    }

    /// A normal call on a new connection: one reading stored, then read back
    /// in the sensor's statistics. `Err` says what failed.
    pub async fn normal_call(&self, sensor: &str) -> Result<(), String> {
        let attempt = async {
            let mut client = sensorhub_grpc::connect(&self.client_config())
                .await
                .map_err(|e| format!("connect: {e}"))?;
            normal_call_on(&mut client, sensor).await
        };
        tokio::time::timeout(Duration::from_secs(10), attempt)
            .await
            .map_err(|_| "no answer within 10 s".to_owned())?
    }

    /// A raw HTTP/2 connection over TLS from `from`.
    pub async fn h2(&self, from: IpAddr) -> H2 {
        let tls = self.tls(from).await.expect("TLS handshake");
        let (client, connection) = h2::client::Builder::new()
            .max_concurrent_reset_streams(10_000)
            .handshake::<_, Bytes>(tls)
            .await
            .expect("HTTP/2 handshake");
        let connection = tokio::spawn(connection);
        H2 { client, connection }
    }

    /// The HTTP listener's address.
    pub fn http(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.server.http))
    }

    /// A TCP connection from `from` with its TLS handshake done, and nothing else.
    pub async fn tls(&self, from: IpAddr) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = tcp_from(from, self.grpc).await?;
        tls_connector(&self.certs.ca_cert)
            .connect("localhost".try_into().expect("a server name"), tcp)
            .await
    }
}

/// One reading stored and found again in the statistics.
pub async fn normal_call_on(client: &mut SensorClient, sensor: &str) -> Result<(), String> {
    let call = async {
        client
            .send_single_reading(reading(sensor, 21.5, unix_now()))
            .await
            .map_err(|s| format!("SendSingleReading: {s:?}"))?;
        let stats = client
            .get_sensor_stats(sensorhub_proto::StatsRequest {
                sensor_id: sensor.to_owned(),
                ..Default::default()
            })
            .await
            .map_err(|s| format!("GetSensorStats: {s:?}"))?
            .into_inner();
        match stats.sensors.first() {
            Some(s) if s.count > 0 => Ok(()),
            other => Err(format!("the reading was not counted: {other:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
}

pub fn tls_connector(ca: &Path) -> TlsConnector {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read the CA") {
        roots.add(cert.expect("a CA certificate")).expect("add CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A TCP connection to `to` from the loopback address `from`.
pub async fn tcp_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// A raw HTTP/2 client connection.
pub struct H2 {
    pub client: h2::client::SendRequest<Bytes>,
    /// Ends when the connection does: `Ok` after the server's GOAWAY.
    pub connection: tokio::task::JoinHandle<Result<(), h2::Error>>,
}

impl H2 {
    /// Opens a stream to `path` (with `token`, if any) and sends `body`
    /// without ending the stream: a request whose message may never finish.
    pub async fn open(
        &mut self,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(h2::client::ResponseFuture, h2::SendStream<Bytes>), h2::Error> {
        let client = self.client.clone().ready().await?;
        self.client = client;
        let mut head = ::http::Request::builder()
            .method("POST")
            .uri(format!("https://localhost{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(token) = token {
            head = head.header("authorization", token);
        }
        let (response, mut send) = self
            .client
            .send_request(head.body(()).expect("a request head"), false)?;
        if !body.is_empty() {
            send.send_data(Bytes::from(body), false)?;
        }
        Ok((response, send))
    }
}

impl H2 {
    /// A whole request: `body` sent with END_STREAM.
    pub async fn call(
        &mut self,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> Result<h2::client::ResponseFuture, h2::Error> {
        let (response, mut send) = self.open(path, token, Vec::new()).await?;
        // A server may answer on the head alone and close the stream before
        // the body is sent (a refused token is answered so): the body then
        // has nowhere to go (h2's `InactiveStreamId`), and the answer is in
        // `response`. Any other failure shows there too.
        let _ = send.send_data(Bytes::from(body), true);
        Ok(response)
    }
}

/// The gRPC status a raw stream ended with: from a trailers-only head or the
/// trailers, with the message percent-decoded; `None` when the stream ended
/// without one (reset).
pub async fn grpc_outcome(response: h2::client::ResponseFuture) -> Option<(i32, String)> {
    let response = response.await.ok()?;
    let (parts, mut body) = response.into_parts();
    let status = |headers: &::http::HeaderMap| {
        let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
        let message = headers
            .get("grpc-message")
            .map(|m| raw_grpc::percent_decode(m.to_str().unwrap_or_default()))
            .unwrap_or_default();
        Some((code, message))
    };
    if let Some(found) = status(&parts.headers) {
        return Some(found);
    }
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    status(&body.trailers().await.ok()??)
}

/// A gRPC message prefix declaring `len` bytes, followed by `payload`.
pub fn message_declaring(len: u32, payload: usize) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&len.to_be_bytes());
    out.resize(5 + payload, 0x41);
    out
}

pub const MIB: u64 = 1024 * 1024;
