//! The simulated fleet: every message a run sends, encoded once up front.
//!
//! Each sensor has a few readings on the original clients' 20–30 °C
//! sawtooth, all stamped with the run's start time. A call picks one by
//! index; nothing is allocated or encoded per reading while the load runs.
//! The buffers live for the rest of the process (`Bytes::from_static`), so
//! handing one to a call is a pointer copy, with no reference count shared
//! between the worker threads.

use bytes::Bytes;
use futures_util::Stream;
use prost::Message;
use sensorhub_proto as pb;

/// Distinct temperatures per sensor.
pub const VARIANTS: usize = 8;

#[derive(Debug)]
pub struct Fleet {
    pub ids: Vec<String>,
    /// Sensor-major: sensor `s`, variant `v` at `s * VARIANTS + v`.
    readings: Vec<Bytes>,
}

/// Keeps `bytes` for the rest of the process.
pub fn leak(bytes: Vec<u8>) -> Bytes {
    Bytes::from_static(Box::leak(bytes.into_boxed_slice()))
}

impl Fleet {
    /// `count` sensors named `<prefix><index>` (index zero-padded to 5 digits).
    pub fn numbered(prefix: &str, count: usize, timestamp: i64) -> &'static Fleet {
        let ids = (0..count).map(|i| format!("{prefix}{i:05}")).collect();
        Fleet::with_ids(ids, timestamp)
    }

    pub fn with_ids(ids: Vec<String>, timestamp: i64) -> &'static Fleet {
        let mut encoded = Vec::new();
        let mut bounds = Vec::with_capacity(ids.len() * VARIANTS);
        for (s, id) in ids.iter().enumerate() {
            for v in 0..VARIANTS {
                // 20–30 °C, each sensor a little off the others.
                let temperature =
                    20.0 + (v as f64) * 10.0 / VARIANTS as f64 + (s % 10) as f64 * 0.1;
                let reading = pb::SensorReading {
                    sensor_id: id.clone(),
                    temperature: (temperature * 100.0).round() / 100.0,
                    timestamp,
                };
                let start = encoded.len();
                reading.encode(&mut encoded).expect("a Vec grows as needed");
                bounds.push(start..encoded.len());
            }
        }
        let all = leak(encoded);
        let readings = bounds.into_iter().map(|r| all.slice(r)).collect();
        Box::leak(Box::new(Fleet { ids, readings }))
    }

    /// The `k`-th reading of sensor `sensor` (cycling through the variants).
    #[inline]
    pub fn reading(&self, sensor: usize, k: usize) -> Bytes {
        self.readings[sensor * VARIANTS + k % VARIANTS].clone()
    }

    /// `len` readings of one sensor, as a client stream.
    pub fn batch(
        &'static self,
        sensor: usize,
        len: u64,
    ) -> impl Stream<Item = Bytes> + Send + 'static {
        futures_util::stream::iter((0..len as usize).map(move |k| self.reading(sensor, k)))
    }
}

/// An encoded `SensorRequest` for a history read-back.
pub fn history_request(sensor_id: &str, limit: u64) -> Bytes {
    leak(
        pb::SensorRequest {
            sensor_id: sensor_id.to_owned(),
            limit,
            ..Default::default()
        }
        .encode_to_vec(),
    )
}
