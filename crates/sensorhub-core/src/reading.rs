//! The domain's own reading types. The transport converts wire messages into
//! these, so the store and the analysis never see protobuf.

/// One temperature measurement, as a sensor reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub sensor_id: String,
    /// Degrees Celsius.
    pub temperature: f64,
    /// Unix epoch seconds, as reported by the sensor.
    pub timestamp: i64,
}

/// A reading as the store holds it: with the arrival sequence number the
/// store gave it. `seq` is global, strictly increasing in commit order, and
/// breaks ties between readings of the same sensor with the same timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReading {
    pub seq: u64,
    pub reading: Reading,
}
