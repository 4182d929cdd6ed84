//! The wire contract of sensorhub: `proto/sensor.proto`, compiled.
//!
//! The proto has no `package`, so prost writes everything into `_.rs` and the
//! service is reachable at `/SensorService/<Method>`, as the original Python
//! server served it. Everything here is generated but [`codec`], the buffer
//! sizes the generated code encodes and decodes with; hand-written conversions
//! to domain types live in the transport crate, which owns the mapping.
//!
//! Invariant: this crate knows nothing but the wire format. It depends on no
//! other sensorhub crate.

#![allow(missing_debug_implementations)]

pub mod codec;

include!(concat!(env!("OUT_DIR"), "/_.rs"));

/// The encoded `FileDescriptorSet` of `sensor.proto`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sensor_descriptor.bin"));

/// The fully qualified service name, as health checks and reflection see it.
pub const SERVICE_NAME: &str = "SensorService";
