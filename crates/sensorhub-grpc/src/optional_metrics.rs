//! The optional metrics, switched on by name with `--enable-metrics` (gRFC
//! A79: experimental metrics are off by default, and each is enabled by its
//! name). One list and one parser for `serve` and the client commands; each
//! side records its own and says so when given the other's.
//!
//! The server's: `grpc.server.tls.handshakes` (gRFC A118) and
//! `sensorhub.connection.duration` (`connection_metrics.rs`). A client's:
//! gRFC A96's retry metrics, recorded by the client layer from what the
//! transparent retry reports (`client/unsent_retry.rs`).
//!
//! Invariant: a name nobody knows, or one of the other side's, is an error,
//! never a metric silently left off.

use sensorhub_rpc_telemetry::{RetryMetrics, conventions::a96};

/// `--enable-metrics` name of the A118 handshake counter.
pub const TLS_HANDSHAKES: &str = "grpc.server.tls.handshakes";
/// `--enable-metrics` name of the connection lifetime histogram.
pub const CONNECTION_DURATION: &str = "sensorhub.connection.duration";

/// Which process records a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `sensorhub serve`.
    Server,
    /// The client commands (`sensor`, `readings`, `stats`).
    Client,
}

impl Side {
    /// The optional metrics this side records, by name.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Side::Server => &[TLS_HANDSHAKES, CONNECTION_DURATION],
            Side::Client => &[
                a96::CLIENT_CALL_RETRIES,
                a96::CLIENT_CALL_TRANSPARENT_RETRIES,
                a96::CLIENT_CALL_HEDGES,
                a96::CLIENT_CALL_RETRY_DELAY,
            ],
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Server => Side::Client,
            Side::Client => Side::Server,
        }
    }

    /// Whose metrics these are, and which commands record them.
    fn whose(self) -> (&'static str, &'static str) {
        match self {
            Side::Server => ("the server's", "sensorhub serve"),
            Side::Client => ("a client's", "sensor, readings, stats"),
        }
    }
}

/// The optional metrics that are switched on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OptionalMetrics {
    pub tls_handshakes: bool,
    pub connection_duration: bool,
    /// A96's, for a client. `grpc.client.call.retries` and `.hedges` are
    /// accepted and have no switch: the clients have no retry policy and do
    /// not hedge, so A96 reports nothing for them (it reports no 0).
    pub retry: RetryMetrics,
}

/// A name that `--enable-metrics` does not take here.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.explain())]
pub struct UnknownMetric {
    name: String,
    side: Side,
}

impl UnknownMetric {
    fn explain(&self) -> String {
        let (whose, _) = self.side.whose();
        let known = format!(
            "{whose} optional metrics are {}",
            self.side.names().join(", ")
        );
        let other = self.side.other();
        if other.names().contains(&self.name.as_str()) {
            let (theirs, commands) = other.whose();
            format!(
                "--enable-metrics: `{}` is {theirs} ({commands}), not {whose}; {known}",
                self.name
            )
        } else {
            format!(
                "unknown metric `{}` in --enable-metrics: {known}",
                self.name
            )
        }
    }
}

impl OptionalMetrics {
    /// The metrics `names` switch on for `side`; a name unknown to it is an
    /// error, so a misspelt one does not silently stay off.
    pub fn enable<S: AsRef<str>>(names: &[S], side: Side) -> Result<Self, UnknownMetric> {
        let mut enabled = Self::default();
        for name in names {
            let name = name.as_ref().trim();
            if name.is_empty() {
                continue;
            }
            if !side.names().contains(&name) {
                return Err(UnknownMetric {
                    name: name.to_owned(),
                    side,
                });
            }
            match name {
                TLS_HANDSHAKES => enabled.tls_handshakes = true,
                CONNECTION_DURATION => enabled.connection_duration = true,
                a96::CLIENT_CALL_TRANSPARENT_RETRIES => enabled.retry.transparent_retries = true,
                a96::CLIENT_CALL_RETRY_DELAY => enabled.retry.retry_delay = true,
                _ => {}
            }
        }
        Ok(enabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_metrics_takes_known_names_only() {
        assert_eq!(
            OptionalMetrics::enable::<&str>(&[], Side::Server).unwrap(),
            OptionalMetrics::default()
        );
        assert_eq!(
            OptionalMetrics::enable(&[TLS_HANDSHAKES, " "], Side::Server).unwrap(),
            OptionalMetrics {
                tls_handshakes: true,
                ..OptionalMetrics::default()
            }
        );
        assert_eq!(
            OptionalMetrics::enable(Side::Server.names(), Side::Server).unwrap(),
            OptionalMetrics {
                tls_handshakes: true,
                connection_duration: true,
                ..OptionalMetrics::default()
            }
        );
        let error = OptionalMetrics::enable(&["grpc.server.tls.handshake"], Side::Server)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown metric `grpc.server.tls.handshake`")
                && error.contains(TLS_HANDSHAKES)
                && error.contains(CONNECTION_DURATION),
            "{error}"
        );
    }

    #[test]
    fn a_client_takes_a96_names() {
        assert_eq!(
            OptionalMetrics::enable(Side::Client.names(), Side::Client).unwrap(),
            OptionalMetrics {
                retry: RetryMetrics {
                    transparent_retries: true,
                    retry_delay: true,
                },
                ..OptionalMetrics::default()
            }
        );
        assert_eq!(
            OptionalMetrics::enable(&[a96::CLIENT_CALL_RETRIES], Side::Client).unwrap(),
            OptionalMetrics::default(),
            "accepted, and nothing to record"
        );
        let error = OptionalMetrics::enable(&["grpc.client.call.retry"], Side::Client)
            .unwrap_err()
            .to_string();
        for name in Side::Client.names() {
            assert!(error.contains(name), "{error}");
        }
    }

    #[test]
    fn each_side_refuses_the_others_names_and_says_whose_they_are() {
        let error = OptionalMetrics::enable(&[TLS_HANDSHAKES], Side::Client)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`grpc.server.tls.handshakes` is the server's")
                && error.contains(a96::CLIENT_CALL_TRANSPARENT_RETRIES),
            "{error}"
        );
        let error = OptionalMetrics::enable(&[a96::CLIENT_CALL_RETRY_DELAY], Side::Server)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("is a client's") && error.contains(TLS_HANDSHAKES),
            "{error}"
        );
    }
}
