//! The `sensorhub-idempotency-key` metadata of `SendSingleReading` and
//! `StreamSensorReadings`: read and checked here, its meaning is the
//! domain's (`sensorhub_core::idempotency`).
//!
//! Why a key: a call whose deadline expires is answered `DEADLINE_EXCEEDED`
//! or `CANCELLED`, yet its readings may have been stored a moment later. A
//! retry with the same key stores only what the first attempt did not, and
//! answers with the full count.

use sensorhub_core::idempotency::IdempotencyKey;
use tonic::{Status, metadata::MetadataMap};

/// The metadata key clients send it under.
pub const METADATA_KEY: &str = "sensorhub-idempotency-key";

/// The call's key, if it sent one; `INVALID_ARGUMENT` naming the metadata
/// key if it is not one (sent twice, not ASCII, or not a key's shape).
pub fn from_metadata(metadata: &MetadataMap) -> Result<Option<IdempotencyKey>, Status> {
    let mut values = metadata.get_all(METADATA_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let refuse = |why: String| Status::invalid_argument(format!("{METADATA_KEY}: {why}"));
    if values.next().is_some() {
        return Err(refuse("sent more than once; send one key per call".into()));
    }
    let value = value
        .to_str()
        .map_err(|_| refuse("must be printable ASCII".into()))?;
    IdempotencyKey::parse(value)
        .map(Some)
        .map_err(|e| refuse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(values: &[&str]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for v in values {
            m.append(METADATA_KEY, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn a_key_is_read_and_a_bad_one_refused_by_name() {
        assert_eq!(from_metadata(&MetadataMap::new()).unwrap(), None);
        let key = from_metadata(&metadata(&["0f8e1c52-3d6b"]))
            .unwrap()
            .unwrap();
        assert_eq!(key.as_str(), "0f8e1c52-3d6b");
        for bad in [&["has space"][..], &["a", "b"], &[""]] {
            let status = from_metadata(&metadata(bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad:?}");
            assert!(
                status.message().starts_with(METADATA_KEY),
                "{}",
                status.message()
            );
        }
    }
}
