//! The sensorhub transport: everything between the network and the domain.
//!
//! - [`service`]: the SensorService RPCs over the domain's store; `service_metrics`:
//!   what it measures (readings stored and refused, active streams).
//! - [`stats_paging`]: `GetSensorStats` for every sensor in replies a client accepts.
//! - [`convert`]: wire messages ↔ domain values, domain errors → gRPC statuses.
//! - [`idempotency_key`]: the `sensorhub-idempotency-key` metadata.
//! - [`auth`]: who a call is: the token check (an interceptor, before any message
//!   is read), identities and their scopes, the tokens file.
//! - [`tls`]: loading PEM files (`sensorhub-pki` makes them).
//! - [`request_budget`]: what the server holds of request messages still arriving.
//! - [`server`]: assembling and running the server, health, reflection, shutdown.
//! - [`client`]: connecting with TLS and the token, for the CLI and tests.
//! - [`optional_metrics`]: the `--enable-metrics` names of server and clients (gRFC A79).
//!
//! Invariant: the domain crate never sees a tonic or protobuf type; this
//! crate is the only one that knows both. It knows nothing of the CLI.

pub mod auth;
mod call_policy;
pub mod client;
mod connection;
pub mod connection_metrics;
pub mod convert;
mod deadline;
pub mod debug_pprof;
pub mod descriptor_limit;
pub mod health_http;
pub mod idempotency_key;
pub mod listener;
pub mod live_view;
pub mod optional_metrics;
pub mod request_budget;
pub mod server;
pub mod service;
mod service_metrics;
pub mod stats_paging;
mod store_spans;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod tls;

pub use client::{ClientConfig, SensorClient, connect};
pub use health_http::{MetricsEndpoint, MetricsFormat};
pub use server::{LiveSettings, Reload, RunningServer, ServeError, ServerConfig, start};
pub use service::ServiceConfig;
