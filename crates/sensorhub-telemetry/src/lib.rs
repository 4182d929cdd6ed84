//! The OpenTelemetry SDK wiring of the `sensorhub` binary.
//!
//! - [`pipeline`]: configured from the standard `OTEL_*` environment: OTLP
//!   (gRPC or HTTP/protobuf), console, Prometheus text, the `tracing`
//!   bridges for spans and logs, and a bounded shutdown.
//! - [`profiling`]: CPU profiles of the process (pprof, flame graphs) for
//!   the HTTP listener's `/debug/pprof/profile`.
//! - `otlp_receiver` (feature `test-util`): a real OTLP receiver for tests.
//!
//! Invariant: only the binary depends on this crate. The domain and the
//! transport use `tracing` and the OpenTelemetry API (the layers live in
//! `sensorhub-rpc-telemetry`), so where telemetry goes is decided in one
//! place, and Cargo keeps the SDK and exporters out of the transport.

pub mod pipeline;
pub mod profiling;

#[cfg(feature = "test-util")]
pub mod otlp_receiver;
