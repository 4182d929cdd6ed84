//! OpenTelemetry for tonic services.
//!
//! - [`rpc`]: server and client tower layers (spans, gRFC A66 and semconv
//!   metrics, propagation) that know nothing of the service they observe.
//! - [`pipeline`]: the SDK wiring, configured from the standard `OTEL_*`
//!   environment: OTLP (gRPC or HTTP/protobuf), console, Prometheus text,
//!   the `tracing` bridges for spans and logs, and a bounded shutdown.
//!
//! Invariant: this crate knows nothing of sensors; the domain and transport
//! crates use only `tracing` and the OpenTelemetry API, never this crate's
//! pipeline, so where telemetry goes is decided in one place (the binary).

pub mod pipeline;
pub mod rpc;

#[cfg(feature = "test-util")]
pub mod otlp_receiver;
