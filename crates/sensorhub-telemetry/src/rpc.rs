//! Tower layers that make any tonic server or client observable with
//! OpenTelemetry: spans that cover a whole streaming call, the gRPC A66
//! metrics and the semconv `rpc.*.call.duration`, W3C context propagation.
//!
//! Invariant: nothing here knows sensors, exporters or the SDK. The layers
//! use the global OpenTelemetry API; [`crate::pipeline`] decides where data goes.

mod body;
mod client;
pub mod conventions;
mod frames;
mod outcome;
mod propagation;
mod server;

pub use body::ObservedBody;
pub use client::{ClientCall, ClientFuture, GrpcClientLayer, GrpcClientService};
pub use frames::FrameParser;
pub use server::{GrpcServerLayer, GrpcServerService, ServerCall, ServerFuture};

/// The instrumentation scope of everything these layers record.
fn instrumentation_scope() -> opentelemetry::InstrumentationScope {
    opentelemetry::InstrumentationScope::builder("sensorhub-telemetry")
        .with_version(env!("CARGO_PKG_VERSION"))
        .with_schema_url(conventions::semconv::SCHEMA_URL)
        .build()
}
