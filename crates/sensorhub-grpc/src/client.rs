//! Connecting to a sensorhub server: TLS from PEM files, and the token
//! attached to every call the way the original clients sent it (bare value in
//! `authorization`). A connection that fails says why in plain words
//! (`client/diagnosis.rs`). A call that never left the client (its
//! connection was closing, its replica gone) is sent again
//! (`client/unsent_retry.rs`), each attempt measured by the telemetry layer
//! above it. Calls are spread over every address of every server, which
//! follow the names' answers (`client/replicas.rs`, `client/resolve.rs`).

mod diagnosis;
pub mod replicas;
pub mod resolve;
pub mod unsent_retry;

use std::{sync::Arc, time::Duration};

use sensorhub_proto::sensor_service_client::SensorServiceClient;
use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use sensorhub_rpc_telemetry::{GrpcClientLayer, GrpcClientService, RetryMetrics};
use tower::Layer as _;

use crate::{auth::AUTHORIZATION, tls::ClientTlsFiles};
use replicas::{Balanced, ReplicaSet};
use resolve::Resolve;
use unsent_retry::UnsentRetry;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://host:port` (TLS) or `http://host:port` (plaintext).
    pub server: String,
    /// More servers (replicas of one service) to spread calls over along
    /// with `server` (`client/replicas.rs`).
    pub replicas: Vec<String>,
    pub tls: ClientTlsFiles,
    pub token: Option<String>,
    pub connect_timeout: Duration,
    /// How often the servers' host names are looked up again (zero: only
    /// when their addresses fail; `client/replicas/refresh.rs`).
    pub dns_refresh: Duration,
    /// Where names become addresses (the system's resolver, unless a test
    /// hands in its own).
    pub resolver: Arc<dyn Resolve>,
    /// gRFC A96's retry metrics switched on (`--enable-metrics`; all off by default).
    pub retry_metrics: RetryMetrics,
}

impl ClientConfig {
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            replicas: Vec::new(),
            tls: ClientTlsFiles::default(),
            token: None,
            connect_timeout: Duration::from_secs(5),
            dns_refresh: Self::DNS_REFRESH,
            resolver: resolve::system(),
            retry_metrics: RetryMetrics::default(),
        }
    }

    /// How often names are looked up again unless told otherwise.
    pub const DNS_REFRESH: Duration = Duration::from_secs(30);

    /// `server` and the `replicas`, in order.
    pub fn servers(&self) -> Vec<String> {
        std::iter::once(self.server.clone())
            .chain(self.replicas.iter().cloned())
            .collect()
    }

    /// The servers as one name, for messages and `grpc.target`.
    pub fn target(&self) -> String {
        self.servers().join(",")
    }
}

/// A channel whose calls are traced and measured (client spans, A66 client
/// metrics, A96's when switched on, `traceparent` sent to the server), and
/// sent again when they never left the client.
pub type ObservedChannel = GrpcClientService<UnsentRetry<Balanced>>;

/// A SensorService client that sends the token with every call.
pub type SensorClient = SensorServiceClient<InterceptedService<ObservedChannel, AttachToken>>;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "`{0}` is not a server URL; use https://HOST:PORT (or http://HOST:PORT for a server started with --insecure)"
    )]
    Url(String),
    #[error("the token cannot be sent as gRPC metadata: use printable ASCII without spaces")]
    Token,
    #[error(transparent)]
    TlsFile(#[from] crate::tls::TlsFileError),
    /// `reason` is the cause in words, said once (no error source: printing
    /// the chain would repeat it).
    #[error("cannot connect to {server}: {reason}")]
    Connect { server: String, reason: String },
}

impl ConnectError {
    /// Why connecting as `config` says failed with `error`, explained.
    pub fn connect(config: &ClientConfig, error: &tonic::transport::Error) -> Self {
        let host = http::Uri::try_from(config.server.as_str())
            .ok()
            .and_then(|uri| uri.host().map(|h| h.trim_matches(['[', ']']).to_owned()));
        let name = config.tls.domain.clone().or(host).unwrap_or_default();
        let attempt = diagnosis::Attempt {
            name: &name,
            ca: config.tls.ca.as_deref(),
        };
        ConnectError::Connect {
            server: config.server.clone(),
            reason: diagnosis::explain(error, attempt),
        }
    }
}

/// Attaches `authorization: <token>` to each request.
#[derive(Debug, Clone)]
pub struct AttachToken(Option<AsciiMetadataValue>);

impl Interceptor for AttachToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert(AUTHORIZATION, token.clone());
        }
        Ok(request)
    }
}

impl AttachToken {
    pub fn new(token: Option<&str>) -> Result<Self, ConnectError> {
        token
            .map(|t| {
                let mut value: AsciiMetadataValue =
                    MetadataValue::try_from(t).map_err(|_| ConnectError::Token)?;
                // Keeps HPACK from putting the token in its shared table.
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()
            .map(AttachToken)
    }
}

/// Builds the endpoint for `config` (TLS when the URL is `https`).
pub fn endpoint(config: &ClientConfig) -> Result<Endpoint, ConnectError> {
    let url = &config.server;
    let mut endpoint = Channel::from_shared(url.clone())
        .map_err(|_| ConnectError::Url(url.clone()))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(config.tls.load()?)
            .map_err(|e| ConnectError::connect(config, &e))?;
    } else if !url.starts_with("http://") {
        return Err(ConnectError::Url(url.clone()));
    }
    Ok(endpoint)
}

/// Connects (eagerly, so a wrong address or certificate shows up here) to
/// every address of every server, and balances calls over them, following
/// the names' addresses as they change.
pub async fn connect(config: &ClientConfig) -> Result<SensorClient, ConnectError> {
    connect_with(config, GrpcClientLayer::new(&config.target())).await
}

/// [`connect`], recording through `telemetry` (a layer over the providers
/// the caller chose), with the retry metrics `config` switches on.
pub async fn connect_with(
    config: &ClientConfig,
    telemetry: GrpcClientLayer,
) -> Result<SensorClient, ConnectError> {
    let replicas = ReplicaSet::connect(config, &config.servers()).await?;
    let channel = replicas.channel().await?;
    let telemetry = telemetry.with_retry_metrics(config.retry_metrics);
    client_with(channel, telemetry, config.token.as_deref())
}

/// Wraps an existing channel to `server` with telemetry and the token interceptor.
pub fn client_for(
    channel: Channel,
    server: &str,
    token: Option<&str>,
) -> Result<SensorClient, ConnectError> {
    client_over(Balanced::direct(channel, server), server, token)
}

/// Wraps a balancer over `target` with telemetry and the token interceptor.
pub fn client_over(
    channel: Balanced,
    target: &str,
    token: Option<&str>,
) -> Result<SensorClient, ConnectError> {
    client_with(channel, GrpcClientLayer::new(target), token)
}

/// Wraps a balancer with the retry of unsent calls, `telemetry` above it
/// (whose providers and retry metrics the caller chose), and the token
/// interceptor.
pub fn client_with(
    channel: Balanced,
    telemetry: GrpcClientLayer,
    token: Option<&str>,
) -> Result<SensorClient, ConnectError> {
    let observed = telemetry.layer(UnsentRetry::new(channel));
    Ok(SensorServiceClient::with_interceptor(
        observed,
        AttachToken::new(token)?,
    ))
}
