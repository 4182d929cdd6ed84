//! `GetSensorStats` for every sensor, in pages: a limit and a cursor in
//! `StatsRequest`, `next_cursor` in `StatsReply`.
//!
//! Why: a reply is one message, and gRPC clients refuse a message over 4 MiB
//! unless told otherwise. At 60,000 sensors every sensor's statistics were
//! 11 MB, so no client (not even `sensorhub stats`) could read them. A reply
//! now holds at most [`MAX_STATS_PER_REPLY`] sensors, which fits under that
//! default whatever the ids are (the test below encodes the widest entry).
//!
//! `limit = 0` is what the original clients send (they know no such field):
//! every sensor in one reply, as before, as long as they fit; beyond that the
//! call is refused with `RESOURCE_EXHAUSTED` saying how to page, never
//! silently cut to a first page that such a client would take for all.
//! The cursor is the last sensor id of the previous page; ids are ordered by
//! their UTF-8 bytes (the store's index order).

use sensorhub_core::{SensorStats, validation::MAX_SENSOR_ID_BYTES};
use sensorhub_proto as pb;
use tonic::Status;

use crate::convert::{invalid_request, stats_to_wire};

/// The most sensors one `GetSensorStats` reply holds. The widest entry
/// encodes to [`MAX_ENTRY_BYTES`], so a full reply stays under 2.2 MB.
pub const MAX_STATS_PER_REPLY: usize = 10_000;

/// The encoded size of the widest possible `SensorStats` entry inside a
/// `StatsReply`: a 128-byte id and every number at its widest varint or
/// fixed size (checked by the test below).
pub const MAX_ENTRY_BYTES: usize = 212;

/// The default largest message a gRPC client accepts (tonic, grpc-go,
/// grpc-java, grpcio): what a reply must fit in.
pub const CLIENT_DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// How one request for every sensor is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsPaging {
    /// Sensors in the reply at most.
    limit: usize,
    /// `limit = 0`: all sensors fit in this reply, or the call is refused.
    whole: bool,
}

impl StatsPaging {
    /// The paging a request asks for; refuses a cursor no reply could have given.
    pub fn of(request: &pb::StatsRequest) -> Result<Self, Status> {
        if request.cursor.len() > MAX_SENSOR_ID_BYTES {
            return Err(invalid_request(
                "cursor",
                format!(
                    "must be the next_cursor of a previous reply (a sensor id, at most {MAX_SENSOR_ID_BYTES} bytes), got {} bytes",
                    request.cursor.len()
                ),
            ));
        }
        Ok(match request.limit {
            0 => Self {
                limit: MAX_STATS_PER_REPLY,
                whole: true,
            },
            n => Self {
                limit: (n as usize).min(MAX_STATS_PER_REPLY),
                whole: false,
            },
        })
    }

    /// How many sensors to read from the store: one more than the reply
    /// holds, which tells whether more follow.
    pub fn to_read(self) -> usize {
        self.limit + 1
    }

    /// The reply for `page`, read with [`to_read`](Self::to_read).
    pub fn reply(self, mut page: Vec<SensorStats>) -> Result<pb::StatsReply, Status> {
        let more = page.len() > self.limit;
        if more && self.whole {
            return Err(needs_paging());
        }
        page.truncate(self.limit);
        let next_cursor = match page.last() {
            Some(last) if more => last.sensor_id.clone(),
            _ => String::new(),
        };
        Ok(pb::StatsReply {
            sensors: page.into_iter().map(stats_to_wire).collect(),
            next_cursor,
        })
    }
}

/// Every sensor was asked for in one reply (`limit = 0`), and they do not fit.
pub fn needs_paging() -> Status {
    Status::resource_exhausted(format!(
        "there are more than {MAX_STATS_PER_REPLY} sensors, the most one reply holds (replies stay under the {CLIENT_DEFAULT_MAX_MESSAGE_BYTES} bytes gRPC clients accept by default); set StatsRequest.limit (up to {MAX_STATS_PER_REPLY}) and send each reply's next_cursor as the next request's cursor until it is empty, as `sensorhub stats` does"
    ))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn stats(id: &str) -> SensorStats {
        SensorStats {
            sensor_id: id.to_owned(),
            count: 3,
            sum: 60.0,
            min: 19.0,
            max: 21.0,
            last: 20.0,
            last_timestamp: 1_700_000_000,
            rolling_mean: 20.0,
            alerts: 0,
        }
    }

    fn request(limit: u32) -> pb::StatsRequest {
        pb::StatsRequest {
            limit,
            ..Default::default()
        }
    }

    #[test]
    fn a_full_reply_of_the_widest_entries_fits_a_default_client() {
        let widest = pb::SensorStats {
            sensor_id: "\u{10FFFF}".repeat(MAX_SENSOR_ID_BYTES / 4),
            count: u64::MAX,
            min: f64::MIN,
            max: f64::MAX,
            mean: -1.0,
            last: 1.0,
            last_timestamp: i64::MIN,
            rolling_mean: f64::MIN_POSITIVE,
            alerts: u64::MAX,
        };
        assert_eq!(widest.sensor_id.len(), MAX_SENSOR_ID_BYTES);
        let reply = pb::StatsReply {
            next_cursor: widest.sensor_id.clone(),
            sensors: vec![widest; MAX_STATS_PER_REPLY],
        };
        let per_entry = (reply.encoded_len() - (MAX_SENSOR_ID_BYTES + 3)) / MAX_STATS_PER_REPLY;
        assert_eq!(per_entry, MAX_ENTRY_BYTES);
        assert!(
            reply.encoded_len() + 5 < CLIENT_DEFAULT_MAX_MESSAGE_BYTES,
            "{} bytes",
            reply.encoded_len()
        );
    }

    #[test]
    fn zero_is_every_sensor_when_they_fit_and_a_refusal_when_not() {
        let paging = StatsPaging::of(&request(0)).unwrap();
        let fits: Vec<_> = (0..MAX_STATS_PER_REPLY)
            .map(|i| stats(&format!("s{i:05}")))
            .collect();
        let reply = paging.reply(fits).unwrap();
        assert_eq!(reply.sensors.len(), MAX_STATS_PER_REPLY);
        assert_eq!(reply.next_cursor, "");

        let mut over: Vec<_> = (0..paging.to_read())
            .map(|i| stats(&format!("s{i:05}")))
            .collect();
        over.sort_by(|a, b| a.sensor_id.cmp(&b.sensor_id));
        let refused = paging.reply(over).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        for words in ["more than 10000 sensors", "limit", "next_cursor"] {
            assert!(refused.message().contains(words), "{}", refused.message());
        }
    }

    #[test]
    fn a_limit_gives_a_page_and_the_cursor_of_the_next() {
        let paging = StatsPaging::of(&request(2)).unwrap();
        assert_eq!(paging.to_read(), 3);
        let reply = paging
            .reply(vec![stats("a"), stats("b"), stats("c")])
            .unwrap();
        let ids: Vec<_> = reply.sensors.iter().map(|s| s.sensor_id.as_str()).collect();
        assert_eq!((ids, reply.next_cursor.as_str()), (vec!["a", "b"], "b"));
        // The last page says so.
        let last = paging.reply(vec![stats("c")]).unwrap();
        assert_eq!(last.next_cursor, "");
        // More than the cap is the cap.
        assert_eq!(
            StatsPaging::of(&request(u32::MAX)).unwrap().to_read(),
            MAX_STATS_PER_REPLY + 1
        );
    }

    #[test]
    fn a_cursor_no_reply_gave_is_refused() {
        let request = pb::StatsRequest {
            cursor: "x".repeat(MAX_SENSOR_ID_BYTES + 1),
            ..Default::default()
        };
        let refused = StatsPaging::of(&request).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().contains("cursor"),
            "{}",
            refused.message()
        );
    }
}
