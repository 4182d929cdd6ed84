//! `sensorhub serve`: the gRPC server. Refuses to start without TLS unless
//! `--insecure`, and without tokens unless `--no-auth`.

use std::{
    net::SocketAddr,
    num::NonZeroU32,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::Args;
use sensorhub_core::{AlertRules, ReadingLimits, SharedStore, StoreSettings};
use sensorhub_grpc::{
    LiveSettings, MetricsEndpoint, MetricsFormat, Reload, RunningServer, ServerConfig,
    ServiceConfig,
    auth::{RateLimit, TokenSet},
    debug_pprof::{ProfileError, ProfileFormat, ProfileOutput, Profiler},
    health_http::HttpLimits,
    listener::ConnectionLimits,
    optional_metrics::{OptionalMetrics, Side},
    request_budget::RequestLimits,
    tls::ServerTlsFiles,
};
use sensorhub_store_embedded::{EmbeddedConfig, EmbeddedStore, StoreLocation};
use sensorhub_store_postgres::{DatabaseUrl, PostgresConfig, PostgresStore};
use sensorhub_telemetry::pipeline::{
    OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, PrometheusText, Telemetry,
};
use sensorhub_telemetry::profiling::{self, ProfilingError};

/// A feature that is on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the gRPC listener.
    #[arg(long, env = "SENSORHUB_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// Server certificate chain (PEM). Make one with `sensorhub certs`.
    #[arg(long, env = "SENSORHUB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "SENSORHUB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mutual TLS).
    #[arg(long, env = "SENSORHUB_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Serve plaintext. Only for trusted networks.
    #[arg(long, env = "SENSORHUB_INSECURE", conflicts_with_all = ["tls_cert", "tls_key", "client_ca"])]
    pub insecure: bool,
    /// Accepted token (repeatable; in the environment, comma-separated).
    #[arg(
        long = "token",
        env = "SENSORHUB_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub tokens: Vec<String>,
    /// File with accepted credentials, one per line (# comments allowed):
    /// `TOKEN` or `sha256:HEX` or `cert:NAME`, then optionally
    /// `name=LABEL write=PATTERNS read=PATTERNS` (README, "Tokens and scopes").
    #[arg(long, env = "SENSORHUB_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Accept calls without a token. Only for trusted networks.
    #[arg(long, env = "SENSORHUB_NO_AUTH", conflicts_with_all = ["tokens", "tokens_file"])]
    pub no_auth: bool,
    /// Data directory of the durable store [default: $XDG_DATA_HOME/sensorhub or ~/.local/share/sensorhub].
    #[arg(long, env = "SENSORHUB_DATA")]
    pub data: Option<PathBuf>,
    /// Keep readings in memory only: nothing survives a restart.
    #[arg(long, env = "SENSORHUB_MEMORY", conflicts_with = "data")]
    pub memory: bool,
    /// Keep readings in this PostgreSQL database, shared by any number of replicas:
    /// postgres://USER[:PASSWORD]@HOST:PORT/DB, with sslmode=disable|require|verify-full
    /// (default verify-full) and sslrootcert=FILE in the query.
    #[arg(
        long,
        env = "SENSORHUB_DATABASE_URL",
        conflicts_with_all = ["data", "memory"],
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Delete readings older than this (e.g. 30d). Default: keep everything.
    #[arg(long, env = "SENSORHUB_RETENTION", value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,
    /// HTTP listener for /healthz, /readyz, /metrics (Prometheus) and the live view; `off` to disable.
    #[arg(long, env = "SENSORHUB_HTTP", default_value = "127.0.0.1:9464")]
    pub http: String,
    /// The live web view on the HTTP listener, and the recorders behind it
    /// (calls in flight, per-method rates, recent traces); off with `--http off` too.
    #[arg(long, env = "SENSORHUB_VIEW", value_enum, default_value = "on")]
    pub view: Switch,
    /// Jaeger's address (e.g. http://localhost:16686): the live view links each trace to it.
    #[arg(long, env = "SENSORHUB_JAEGER_URL")]
    pub jaeger_url: Option<String>,
    /// Connections the HTTP listener holds at once; one more is closed at once.
    #[arg(long, env = "SENSORHUB_HTTP_MAX_CONNECTIONS", default_value_t = HttpLimits::default().max_connections)]
    pub http_max_connections: usize,
    /// How long an HTTP request's head may take to arrive (and an idle
    /// keep-alive connection may stay) before the connection is closed.
    #[arg(long, env = "SENSORHUB_HTTP_HEADER_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub http_header_timeout: Duration,
    /// Sensors whose last temperature is exported as a gauge (the first ones seen).
    #[arg(long, env = "SENSORHUB_MAX_TRACKED_SENSORS", default_value_t = 1_000)]
    pub max_tracked_sensors: usize,
    /// Highest accepted temperature, °C.
    #[arg(long, env = "SENSORHUB_MAX_TEMPERATURE", default_value_t = ReadingLimits::default().max_temperature)]
    pub max_temperature: f64,
    /// How far ahead of the server clock a timestamp may be.
    #[arg(long, env = "SENSORHUB_MAX_CLOCK_SKEW", default_value = "1h", value_parser = humantime::parse_duration)]
    pub max_clock_skew: Duration,
    /// Alert when a reading is above this, °C.
    #[arg(long, env = "SENSORHUB_ALERT_MAX", default_value_t = AlertRules::default().max, allow_hyphen_values = true)]
    pub alert_max: f64,
    /// Alert when a reading is below this, °C.
    #[arg(long, env = "SENSORHUB_ALERT_MIN", default_value_t = AlertRules::default().min, allow_hyphen_values = true)]
    pub alert_min: f64,
    /// Alert when a reading is further than this from the sensor's rolling mean, °C.
    #[arg(long, env = "SENSORHUB_ALERT_JUMP", default_value_t = AlertRules::default().max_jump)]
    pub alert_jump: f64,
    /// Largest accepted message, bytes (after decompression).
    #[arg(long, env = "SENSORHUB_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,
    /// Bytes of request messages that have begun to arrive but are not
    /// complete, over all calls; a call whose message would go over it gets
    /// UNAVAILABLE instead of being buffered.
    #[arg(long, env = "SENSORHUB_MAX_BUFFERED_REQUEST_BYTES", default_value_t = RequestLimits::default().max_buffered_bytes)]
    pub max_buffered_request_bytes: usize,
    /// How long a request message may take to arrive once begun (a unary
    /// request: the whole request); slower ones get DEADLINE_EXCEEDED.
    #[arg(long, env = "SENSORHUB_MESSAGE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub message_timeout: Duration,
    /// Concurrent calls (HTTP/2 streams) per connection.
    #[arg(long, env = "SENSORHUB_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,
    /// On SIGTERM/Ctrl-C, how long in-flight calls may take to finish.
    #[arg(long, env = "SENSORHUB_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Unary calls in progress at once; one more gets UNAVAILABLE at once.
    #[arg(long, env = "SENSORHUB_MAX_UNARY_IN_FLIGHT", default_value_t = ServiceConfig::default().max_unary_in_flight)]
    pub max_unary_in_flight: usize,
    /// Open connections at once; one more is closed at once. Lowered at
    /// start, if need be, to fit the descriptor limit.
    #[arg(long, env = "SENSORHUB_MAX_CONNECTIONS", default_value_t = ConnectionLimits::default().max_connections)]
    pub max_connections: usize,
    /// Open connections from one address (an IPv6 /64); one more is closed
    /// at once; 0: no such limit.
    #[arg(long, env = "SENSORHUB_MAX_CONNECTIONS_PER_IP", default_value_t = ConnectionLimits::default().max_connections_per_ip)]
    pub max_connections_per_ip: usize,
    /// A new connection that opens no call within this is closed (GOAWAY).
    #[arg(long, env = "SENSORHUB_FIRST_CALL_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub first_call_timeout: Duration,
    /// A connection that has served calls and has none open for this long is closed (GOAWAY).
    #[arg(long, env = "SENSORHUB_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Send a connection GOAWAY once it is this old (± 10 %, so connections
    /// made at once do not all reconnect at once): its client reconnects
    /// and its new connection can land on another replica. Off by default:
    /// one server gains nothing from it; set it (minutes, not seconds) when
    /// several replicas sit behind a DNS name or a TCP balancer.
    #[arg(long, env = "SENSORHUB_MAX_CONNECTION_AGE", value_parser = humantime::parse_duration)]
    pub max_connection_age: Option<Duration>,
    /// After --max-connection-age, how long calls still open (a chat, a
    /// follow) may go on before the connection is closed under them; by
    /// default they run until they end.
    #[arg(long, env = "SENSORHUB_MAX_CONNECTION_AGE_GRACE", value_parser = humantime::parse_duration, requires = "max_connection_age")]
    pub max_connection_age_grace: Option<Duration>,
    /// Longest the TLS handshake, the HTTP/2 preface and the client's first
    /// SETTINGS may take together before the connection is closed.
    #[arg(long, env = "SENSORHUB_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Calls per second allowed to each token (a burst of as many), beyond
    /// which calls get RESOURCE_EXHAUSTED; 0: no limit.
    #[arg(long, env = "SENSORHUB_RATE_LIMIT", default_value_t = 20_000)]
    pub rate_limit: u32,
    /// Optional metrics to switch on (comma-separated; off by default, as
    /// gRFC A79 has experimental metrics): grpc.server.tls.handshakes (gRFC
    /// A118, TLS handshakes by result and resumption),
    /// sensorhub.connection.duration (how long connections live).
    #[arg(long, env = "SENSORHUB_ENABLE_METRICS", value_delimiter = ',')]
    pub enable_metrics: Vec<String>,
    /// Serve a CPU profile at /debug/pprof/profile?seconds=N on the HTTP
    /// listener, to callers with a token of the server's set (pprof's
    /// protobuf, or &format=flamegraph an SVG; one at a time, N at most 60).
    #[arg(long, env = "SENSORHUB_PPROF")]
    pub pprof: bool,
    /// Once both listeners are bound, write their addresses to this file
    /// (`grpc=ADDR` and `http=ADDR` lines), so that whoever started the
    /// server with port 0 learns the ports it got.
    #[arg(long, env = "SENSORHUB_READY_FILE")]
    pub ready_file: Option<PathBuf>,
}

impl ServeArgs {
    /// The accepted tokens: `--token`s and the lines of `--tokens-file`,
    /// read now (at startup, and again on SIGHUP).
    fn token_set(&self) -> anyhow::Result<TokenSet> {
        let mut entries = TokenSet::flag_entries(&self.tokens)?;
        if let Some(file) = &self.tokens_file {
            entries.extend(TokenSet::read_file(file)?);
        }
        if entries.is_empty() {
            bail!(
                "refusing to serve without tokens: pass --token TOKEN or --tokens-file FILE, or --no-auth to accept every caller"
            );
        }
        Ok(TokenSet::from_entries(entries)?)
    }

    /// Whether `--http` asks for a listener (then it also serves `/metrics`).
    pub fn http_enabled(&self) -> bool {
        !matches!(self.http.as_str(), "off" | "")
    }

    /// Whether the live view (and its recorders) run: `--view on` and an HTTP listener.
    pub fn view_enabled(&self) -> bool {
        self.view == Switch::On && self.http_enabled()
    }

    /// The server and store configuration these flags describe, or what to pass instead.
    pub fn configs(&self) -> anyhow::Result<(ServerConfig, StoreChoice)> {
        let tls = match (&self.tls_cert, &self.tls_key, self.insecure) {
            (Some(cert), Some(key), _) => Some(ServerTlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.client_ca.clone(),
            }),
            (_, _, true) => None,
            _ => bail!(
                "refusing to serve without TLS: pass --tls-cert FILE --tls-key FILE (make them with `sensorhub certs --out DIR`), or --insecure to serve plaintext"
            ),
        };
        let tokens = if self.no_auth {
            None
        } else {
            Some(self.token_set()?)
        };
        let mut config = ServerConfig::new(self.listen, tls, tokens);
        config.http = match self.http.as_str() {
            "off" | "" => None,
            addr => Some(addr.parse().with_context(|| {
                format!("--http `{addr}` is not an address like 127.0.0.1:9464 (or `off`)")
            })?),
        };
        config.http_limits = HttpLimits {
            max_connections: self.http_max_connections,
            header_timeout: self.http_header_timeout,
        };
        config.service.limits = ReadingLimits {
            max_temperature: self.max_temperature,
            max_future_skew_secs: self.max_clock_skew.as_secs() as i64,
        };
        config.service.max_message_bytes = self.max_message_bytes;
        config.service.max_unary_in_flight = self.max_unary_in_flight;
        config.max_concurrent_streams = self.max_concurrent_streams;
        config.requests = RequestLimits {
            max_buffered_bytes: self.max_buffered_request_bytes,
            message_timeout: self.message_timeout,
        };
        config.shutdown_grace = self.shutdown_grace;
        config.connections = ConnectionLimits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            handshake_timeout: self.handshake_timeout,
            first_call_timeout: self.first_call_timeout,
            idle_timeout: self.idle_timeout,
            max_age: self.max_connection_age,
            max_age_grace: self.max_connection_age_grace,
        };
        config.rate_limit =
            NonZeroU32::new(self.rate_limit).map(|calls_per_second| RateLimit { calls_per_second });
        config.optional_metrics = OptionalMetrics::enable(&self.enable_metrics, Side::Server)?;
        if self.pprof {
            if config.http.is_none() {
                bail!("--pprof serves profiles on the HTTP listener: drop --http off, or --pprof");
            }
            config.profiler = Some(std::sync::Arc::new(CpuProfiler));
        }

        let mut settings = StoreSettings {
            retention: self.retention,
            max_tracked_sensors: self.max_tracked_sensors,
            ..StoreSettings::default()
        };
        settings.alert_rules = AlertRules {
            max: self.alert_max,
            min: self.alert_min,
            max_jump: self.alert_jump,
            ..AlertRules::default()
        };
        let store = match &self.database_url {
            Some(url) => {
                // Parsed here, not by clap, whose errors quote the value
                // (and so the password).
                let url: DatabaseUrl = url.parse()?;
                let mut store = PostgresConfig::new(url);
                store.settings = settings;
                StoreChoice::Postgres(Box::new(store))
            }
            None => {
                let location = if self.memory {
                    StoreLocation::Memory
                } else {
                    StoreLocation::Directory(
                        self.data
                            .clone()
                            .unwrap_or_else(sensorhub_store_embedded::default_data_dir),
                    )
                };
                let mut store = EmbeddedConfig::new(location);
                store.settings = settings;
                StoreChoice::Embedded(store)
            }
        };
        Ok((config, store))
    }
}

pub async fn run(args: ServeArgs, telemetry: &Telemetry) -> anyhow::Result<ExitCode> {
    let (mut config, store_config) = args.configs()?;
    config.exemplars = telemetry.prometheus().and_then(|p| p.exemplars());
    config.metrics = telemetry.prometheus().map(metrics_endpoint);
    config.live = args.view_enabled().then(|| LiveSettings {
        traces: telemetry.trace_ring(),
        jaeger_url: args.jaeger_url.clone(),
    });
    if config.tls.is_none() {
        tracing::warn!(
            "serving plaintext (--insecure): tokens and readings cross the network unencrypted"
        );
    }
    match &config.tokens {
        None => tracing::warn!("accepting calls without a token (--no-auth)"),
        Some(tokens) if tokens.plain_in_file() > 0 => tracing::warn!(
            lines = tokens.plain_in_file(),
            "the tokens file holds tokens themselves on {} lines: anyone who reads the file can use them; replace each with its sha256: line (`sensorhub token new` makes tokens and lines)",
            tokens.plain_in_file()
        ),
        Some(_) => {}
    }
    config.connections.max_connections = fit_descriptors(
        config.connections.max_connections,
        config
            .http
            .map_or(0, |_| config.http_limits.max_connections),
    );
    let store = store_config.open().await?;
    let server = sensorhub_grpc::start(config, store).await?;
    if let Some(path) = &args.ready_file {
        write_ready_file(path, &server)?;
    }
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(args, server.reload()));
    let stop = server.stop_token();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        tracing::info!("signal received");
        stop.cancel();
    });
    server.wait().await?;
    Ok(ExitCode::SUCCESS)
}

/// Raises the soft descriptor limit to the hard one and returns how many of
/// `requested` connections fit under it, saying so in the log.
fn fit_descriptors(requested: usize, http_connections: usize) -> usize {
    let plan = sensorhub_grpc::descriptor_limit::fit_connections(requested, http_connections);
    if plan.soft != plan.soft_before {
        tracing::info!(
            from = plan.soft_before,
            to = plan.soft,
            "raised the soft file descriptor limit to the hard limit"
        );
    }
    if plan.lowered() {
        tracing::warn!(
            requested = plan.requested,
            max_connections = plan.max_connections,
            descriptor_limit = plan.soft,
            reserved = plan.reserved,
            "--max-connections lowered to fit the file descriptor limit beside what the store and the HTTP listener need; raise the hard limit (ulimit -Hn, LimitNOFILE=) to allow more"
        );
    } else {
        tracing::info!(
            max_connections = plan.max_connections,
            descriptor_limit = plan.soft,
            reserved = plan.reserved,
            "connections fit under the file descriptor limit"
        );
    }
    plan.max_connections
}

/// Which engine keeps the readings: the embedded one (`--data`, `--memory`)
/// or a shared PostgreSQL (`--database-url`).
#[derive(Debug, Clone)]
pub enum StoreChoice {
    Embedded(EmbeddedConfig),
    // Boxed: the driver's configuration is large, and this is made once.
    Postgres(Box<PostgresConfig>),
}

impl StoreChoice {
    /// Opens the store; an error is one line saying what to fix.
    pub async fn open(self) -> anyhow::Result<SharedStore> {
        Ok(match self {
            StoreChoice::Embedded(config) => std::sync::Arc::new(EmbeddedStore::open(config)?),
            StoreChoice::Postgres(config) => {
                std::sync::Arc::new(PostgresStore::open(*config).await?)
            }
        })
    }
}

/// The ready file, written whole under a temporary name and renamed, so a
/// reader never sees half of it.
fn write_ready_file(path: &Path, server: &RunningServer) -> anyhow::Result<()> {
    let mut text = format!("grpc={}\n", server.grpc_addr());
    if let Some(http) = server.http_addr() {
        text.push_str(&format!("http={http}\n"));
    }
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)
        .and_then(|()| std::fs::rename(&partial, path))
        .with_context(|| format!("--ready-file {}", path.display()))
}

/// On every SIGHUP: the tokens file and the TLS files are read again. New
/// calls and connections use them; open ones are not disturbed. A file that
/// does not load is reported and the old material stays in use.
#[cfg(unix)]
async fn reload_on_sighup(args: ServeArgs, reload: Reload) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: no reloads");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        if !args.no_auth {
            match args.token_set() {
                Ok(tokens) => {
                    let (count, certificates) = (tokens.len(), tokens.certificate_names());
                    reload.tokens(tokens);
                    tracing::info!(tokens = count, certificates, "SIGHUP: tokens reloaded");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "SIGHUP: tokens not reloaded, the old ones stay")
                }
            }
        }
        match reload.tls() {
            Ok(true) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP: TLS files not reloaded, the old ones stay")
            }
        }
    }
}

/// `/debug/pprof/profile`'s profiler: the telemetry crate's pprof sampler.
#[derive(Debug)]
struct CpuProfiler;

impl Profiler for CpuProfiler {
    fn profile(
        &self,
        duration: Duration,
        format: ProfileFormat,
        wait: &dyn Fn(Duration) -> bool,
    ) -> Result<ProfileOutput, ProfileError> {
        let flamegraph = format == ProfileFormat::Flamegraph;
        match profiling::cpu_profile(duration, flamegraph, wait) {
            Ok(body) if flamegraph => Ok(ProfileOutput {
                content_type: profiling::SVG_CONTENT_TYPE,
                filename: "profile.svg",
                body,
            }),
            Ok(body) => Ok(ProfileOutput {
                content_type: profiling::PPROF_CONTENT_TYPE,
                filename: "profile.pb.gz",
                body,
            }),
            Err(ProfilingError::Running) => Err(ProfileError::Busy),
            Err(ProfilingError::Cancelled) => Err(ProfileError::Cancelled),
            Err(e) => Err(ProfileError::Failed(e.to_string())),
        }
    }
}

/// `/metrics` on the HTTP listener, rendered by the telemetry pipeline.
pub fn metrics_endpoint(prometheus: PrometheusText) -> MetricsEndpoint {
    let text = prometheus.clone();
    MetricsEndpoint {
        text: MetricsFormat {
            render: std::sync::Arc::new(move || text.render()),
            content_type: PROMETHEUS_CONTENT_TYPE,
        },
        openmetrics: Some(MetricsFormat {
            render: std::sync::Arc::new(move || prometheus.render_openmetrics()),
            content_type: OPENMETRICS_CONTENT_TYPE,
        }),
    }
}
