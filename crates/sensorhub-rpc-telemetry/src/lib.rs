//! Tower layers that make any tonic server or client observable with
//! OpenTelemetry: spans that cover a whole streaming call, the gRPC A66
//! metrics and the semconv `rpc.*.call.duration`, W3C context propagation.
//!
//! A crate of its own so that the transport, which needs the layers, links
//! only the OpenTelemetry API: the SDK and the exporters are wired by the
//! binary (`sensorhub-telemetry`), and Cargo keeps it that way.
//!
//! Invariant: nothing here knows sensors, exporters or the SDK (the SDK is a
//! dev-dependency, for the tests' in-memory exporters). The layers record
//! through the global providers, or through providers they are given, and,
//! when given them, into the live view's recorders (`live`).

mod attempts;
mod body;
mod client;
pub mod conventions;
pub mod exemplars;
mod frames;
pub mod live;
mod outcome;
mod propagation;
mod server;
mod stability;

pub use attempts::{CallAttempts, RetryMetrics};
pub use body::ObservedBody;
pub use client::{ClientCall, ClientFuture, GrpcClientLayer, GrpcClientService};
pub use exemplars::ExemplarReservoir;
pub use frames::FrameParser;
pub use live::LiveRecorders;
pub use server::{GrpcServerLayer, GrpcServerService, ServerCall, ServerFuture};
pub use stability::{OPT_IN_VARIABLE, SemconvStability};

/// The instrumentation scope of everything these layers record, with the
/// schema URL of the conventions `stability` emits.
fn instrumentation_scope(stability: SemconvStability) -> opentelemetry::InstrumentationScope {
    let scope = opentelemetry::InstrumentationScope::builder("sensorhub-telemetry")
        .with_version(env!("CARGO_PKG_VERSION"));
    match stability.schema_url() {
        Some(url) => scope.with_schema_url(url).build(),
        None => scope.build(),
    }
}
