//! Test helpers (feature `test-util`): a real server on an ephemeral port of
//! 127.0.0.1, with a freshly made CA, TLS, a token and a durable store in a
//! temporary directory (or a fresh database of a real PostgreSQL), plus
//! clients configured for it.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use sensorhub_core::SharedStore;
use sensorhub_pki::{self as pki, BundleFiles};
use sensorhub_store_embedded::{EmbeddedConfig, EmbeddedStore, StoreLocation};
use sensorhub_store_postgres::{PostgresConfig, PostgresStore, testing::TestPostgres};

use crate::{
    ClientConfig, RunningServer, SensorClient, ServerConfig,
    auth::TokenSet,
    client::ConnectError,
    tls::{ClientTlsFiles, ServerTlsFiles},
};

/// The token every test server accepts.
pub const TEST_TOKEN: &str = "sensor_token_abc";

/// What to vary from the default (TLS, token, durable store).
#[derive(Debug, Clone)]
pub struct TestOptions {
    pub tls: bool,
    pub mutual_tls: bool,
    pub auth: bool,
    pub memory: bool,
    /// Keep the readings in this PostgreSQL database instead of the
    /// embedded store ([`TestOptions::on_postgres`] makes a fresh one).
    pub database_url: Option<String>,
    pub http: bool,
    pub tweak: fn(&mut ServerConfig),
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            tls: true,
            mutual_tls: false,
            auth: true,
            memory: false,
            database_url: None,
            http: false,
            tweak: |_| {},
        }
    }
}

impl TestOptions {
    /// The defaults, on a fresh database of the test binary's PostgreSQL
    /// (`sensorhub_store_postgres::testing`).
    pub async fn on_postgres() -> TestOptions {
        TestOptions {
            database_url: Some(fresh_database_url().await),
            ..TestOptions::default()
        }
    }
}

impl TestOptions {
    /// The same options on an empty store of their own: a new database on
    /// PostgreSQL (every `TestServer` has its own embedded store anyway).
    pub async fn with_fresh_store(&self) -> TestOptions {
        let mut options = self.clone();
        if options.database_url.is_some() {
            options.database_url = Some(fresh_database_url().await);
        }
        options
    }
}

/// A URL of a fresh, empty database of the test binary's PostgreSQL
/// (started on first use).
pub async fn fresh_database_url() -> String {
    tokio::task::spawn_blocking(|| TestPostgres::shared().fresh_url())
        .await
        .expect("start PostgreSQL")
}

/// A running test server and everything needed to talk to it.
#[derive(Debug)]
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub certs: BundleFiles,
    pub options: TestOptions,
    pub addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    server: Option<RunningServer>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(TestOptions::default()).await
    }

    pub async fn start_with(options: TestOptions) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = pki::generate(&[])
            .expect("certificates")
            .write_to(&dir.path().join("certs"))
            .expect("write certificates");
        let mut server = TestServer {
            dir,
            certs,
            options,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: None,
            server: None,
        };
        server.boot().await;
        server
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server configuration this test server runs with.
    pub fn server_config(&self) -> ServerConfig {
        let o = &self.options;
        let tls = o.tls.then(|| ServerTlsFiles {
            cert: self.certs.server_cert.clone(),
            key: self.certs.server_key.clone(),
            client_ca: o.mutual_tls.then(|| self.certs.ca_cert.clone()),
        });
        let tokens = o.auth.then(|| TokenSet::new([TEST_TOKEN]).expect("token"));
        let mut config = ServerConfig::new(self.addr, tls, tokens);
        if o.http {
            config.http = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        }
        config.shutdown_grace = Duration::from_secs(2);
        (o.tweak)(&mut config);
        config
    }

    async fn boot(&mut self) {
        let store: SharedStore = match &self.options.database_url {
            Some(url) => std::sync::Arc::new(
                PostgresStore::open(PostgresConfig::new(url.parse().expect("database URL")))
                    .await
                    .expect("open the PostgreSQL store"),
            ),
            None => {
                let location = if self.options.memory {
                    StoreLocation::Memory
                } else {
                    StoreLocation::Directory(self.data_dir())
                };
                std::sync::Arc::new(
                    EmbeddedStore::open(EmbeddedConfig::new(location)).expect("open store"),
                )
            }
        };
        let running = crate::start(self.server_config(), store)
            .await
            .expect("start server");
        // Restarts come back on the same port, so clients keep their URL.
        self.addr = running.grpc_addr();
        self.http_addr = running.http_addr();
        self.server = Some(running);
    }

    /// Stops the server gracefully (the store is closed), keeping its data.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }

    /// Stops and starts again on the same data directory and port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.boot().await;
    }

    /// The token that cancels the running server (starts graceful shutdown).
    pub fn stop_token(&self) -> tokio_util::sync::CancellationToken {
        self.server.as_ref().expect("running").stop_token()
    }

    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "https" } else { "http" };
        format!("{scheme}://localhost:{}", self.addr.port())
    }

    /// A client configuration that trusts the test CA and sends the token.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.url());
        config.tls = ClientTlsFiles {
            ca: Some(self.certs.ca_cert.clone()),
            cert: self
                .options
                .mutual_tls
                .then(|| self.certs.client_cert.clone()),
            key: self
                .options
                .mutual_tls
                .then(|| self.certs.client_key.clone()),
            domain: None,
        };
        config.token = Some(TEST_TOKEN.to_owned());
        config
    }

    /// A connected client with the right CA and token.
    pub async fn client(&self) -> SensorClient {
        self.try_client(self.client_config())
            .await
            .expect("connect")
    }

    pub async fn try_client(&self, config: ClientConfig) -> Result<SensorClient, ConnectError> {
        crate::connect(&config).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.stop_token().cancel();
        }
    }
}

/// How long a test waits for one call before failing instead of hanging.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The current Unix time in seconds, as readings carry it.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A wire reading.
pub fn reading(
    sensor_id: &str,
    temperature: f64,
    timestamp: i64,
) -> sensorhub_proto::SensorReading {
    sensorhub_proto::SensorReading {
        sensor_id: sensor_id.to_owned(),
        temperature,
        timestamp,
    }
}

/// The `sensorhub-stored-count` a failed client stream or chat reports: how
/// many of its readings were stored before the error.
pub fn stored_count(status: &tonic::Status) -> Option<u64> {
    let value = status
        .metadata()
        .get(crate::convert::STORED_COUNT_METADATA)?;
    let text = value.to_str().expect("an ASCII stored count");
    Some(text.parse().expect("a numeric stored count"))
}

/// The statistics of one sensor, through GetSensorStats (`None`: none stored).
pub async fn stats_of(
    client: &mut SensorClient,
    sensor_id: &str,
) -> Option<sensorhub_proto::SensorStats> {
    let mut sensors = client
        .get_sensor_stats(sensorhub_proto::StatsRequest {
            sensor_id: sensor_id.to_owned(),
            ..Default::default()
        })
        .await
        .expect("GetSensorStats")
        .into_inner()
        .sensors;
    assert!(sensors.len() <= 1, "one sensor asked for: {sensors:?}");
    sensors.pop()
}

/// Every stored reading of `sensor_id`, through GetSensorReadings, within [`CALL_TIMEOUT`].
pub async fn read_back(
    client: &mut SensorClient,
    sensor_id: &str,
) -> Vec<sensorhub_proto::SensorReading> {
    tokio::time::timeout(CALL_TIMEOUT, async {
        let mut stream = client
            .get_sensor_readings(sensorhub_proto::SensorRequest {
                sensor_id: sensor_id.to_owned(),
                ..Default::default()
            })
            .await
            .expect("GetSensorReadings")
            .into_inner();
        let mut out = Vec::new();
        while let Some(r) = stream.message().await.expect("history stream") {
            out.push(r);
        }
        out
    })
    .await
    .expect("history read in time")
}
