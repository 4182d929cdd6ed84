//! The sensorhub domain: what a reading is, which readings are acceptable,
//! how they are stored durably, and what is learnt from them.
//!
//! - [`reading`]: the domain types, independent of any wire format.
//! - [`validation`]: the rules a reading must meet before anything of it is stored.
//! - [`analysis`]: per-sensor running statistics and alert rules, applied
//!   incrementally in commit order.
//! - [`idempotency`]: idempotency keys, so that a retried write is stored once.
//! - [`store`]: the embedded SQLite store with group commit, time-ordered
//!   history queries with bounded memory, and a live tail.
//!
//! Invariant: nothing here knows about gRPC, protobuf, HTTP or telemetry
//! exporters. Callers hand in domain values and get domain errors back; the
//! transport crate maps them to statuses. Instrumentation is `tracing` and
//! the OpenTelemetry metrics API only; where the data goes is decided by the binary.

pub mod analysis;
pub mod idempotency;
pub mod reading;
pub mod store;
pub mod validation;

pub use analysis::{Alert, AlertRule, AlertRules, SensorStats};
pub use reading::{Reading, StoredReading};
pub use store::{HistoryQuery, Store, StoreConfig, StoreError, WriteReceipt};
pub use validation::{ReadingLimits, Violation};
