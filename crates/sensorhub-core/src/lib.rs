//! The sensorhub domain: what a reading is, which readings are acceptable,
//! what a store must promise to keep them, and what is learnt from them.
//!
//! - [`reading`]: the domain types, independent of any wire format.
//! - [`validation`]: the rules a reading must meet before anything of it is stored.
//! - [`analysis`]: per-sensor running statistics and alert rules, applied
//!   incrementally in commit order.
//! - [`idempotency`]: idempotency keys, so that a retried write is stored once.
//! - [`store`]: the store boundary: the trait every engine implements
//!   (group commit, durable receipts, time-ordered history pages, a live
//!   tail from a cursor, statistics, readiness). The engines are crates of
//!   their own (`sensorhub-store-embedded`, `sensorhub-store-postgres`)
//!   that depend on this one, never the other way round.
//! - `conformance` (feature `conformance`): the test suite every engine
//!   must pass, parameterised by an engine factory.
//!
//! Invariant: nothing here knows about gRPC, protobuf, HTTP, telemetry
//! exporters, SQLite or PostgreSQL. Callers hand in domain values and get domain errors back; the
//! transport crate maps them to statuses. Instrumentation is `tracing` and
//! the OpenTelemetry metrics API only; where the data goes is decided by the binary.

pub mod analysis;
pub mod idempotency;
pub mod reading;
pub mod store;
pub mod validation;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use analysis::{Alert, AlertRule, AlertRules, SensorStats};
pub use reading::{Reading, StoredReading};
pub use store::{
    HistoryCursor, HistoryQuery, PendingWrite, Readiness, SharedStore, Store, StoreError,
    StoreSettings, WriteReceipt,
};
pub use validation::{ReadingLimits, Violation};
