//! The gRPC listener's connection metrics: gRPC's non-per-call metrics
//! (gRFC A79), recorded once per connection event, never per call.
//!
//! Always on (ours, in our namespace; the gRFCs have no server-side
//! connection metrics, A94's `grpc.subchannel.*` are a client's):
//!
//! - `sensorhub.connections.created`: connections admitted (past the
//!   limits), TLS handshake still to come.
//! - `sensorhub.connections.open`: admitted and not closed yet.
//! - `sensorhub.connections.closed` by `sensorhub.close.reason`: every
//!   admitted connection once its socket is closed, with the first reason
//!   seen (as A94 picks a disconnection's reason), so that
//!   `created - closed = open` holds at any scrape.
//! - `sensorhub.connections.refused` by `sensorhub.refusal.reason`:
//!   connections that never served a call: over a limit (never admitted), or
//!   a failed or slow handshake (admitted, so also counted as closed).
//! - `sensorhub.connections.accept_errors`: failed accepts (EMFILE).
//!
//! Optional, off until named in `--enable-metrics` (`optional_metrics.rs`;
//! A79: experimental metrics are off by default and switched on by name):
//!
//! - `grpc.server.tls.handshakes` (gRFC A118): every TLS handshake, with
//!   `grpc.tls.handshake.result` (`SUCCESS` or why it failed, A118's enum)
//!   and, when it succeeded, `grpc.tls.handshake.resumed`
//!   (`FULL_HANDSHAKE`, `RESUMED_HANDSHAKE`).
//! - `sensorhub.connection.duration`: how long each admitted connection
//!   lived, by close reason (churn: many short lives).

use std::{io, sync::Arc, sync::OnceLock, time::Instant};

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Histogram, UpDownCounter},
};

use crate::optional_metrics::{CONNECTION_DURATION, OptionalMetrics, TLS_HANDSHAKES};

const REASON: &str = "sensorhub.refusal.reason";
pub(crate) const REFUSED_LIMIT: &str = "connection_limit";
pub(crate) const REFUSED_PER_IP: &str = "per_ip_limit";
pub(crate) const REFUSED_HANDSHAKE: &str = "tls_handshake";
pub(crate) const REFUSED_PREFACE: &str = "http2_preface";

const CLOSE_REASON: &str = "sensorhub.close.reason";
/// Why a connection ended (`sensorhub.close.reason`). A failed or slow
/// handshake ends it with the refusal's reason.
pub(crate) const CLOSED_NEVER_USED: &str = "no_call";
pub(crate) const CLOSED_IDLE: &str = "idle";
pub(crate) const CLOSED_AUTH_FAILURES: &str = "auth_failures";
pub(crate) const CLOSED_SHUTDOWN: &str = "shutdown";
/// `--max-connection-age` reached: GOAWAY, so the client reconnects,
/// perhaps to another replica.
pub(crate) const CLOSED_MAX_AGE: &str = "max_age";
/// The client closed it (after a GOAWAY of ours or not).
pub(crate) const CLOSED_PEER: &str = "peer_closed";
pub(crate) const CLOSED_RESET: &str = "connection_reset";
/// The client stopped answering keepalive PINGs.
pub(crate) const CLOSED_KEEPALIVE: &str = "keepalive_timeout";
/// Any other HTTP/2 or socket error.
pub(crate) const CLOSED_ERROR: &str = "error";

const CLOSE_REASONS: [&str; 11] = [
    REFUSED_HANDSHAKE,
    REFUSED_PREFACE,
    CLOSED_NEVER_USED,
    CLOSED_IDLE,
    CLOSED_AUTH_FAILURES,
    CLOSED_SHUTDOWN,
    CLOSED_MAX_AGE,
    CLOSED_PEER,
    CLOSED_RESET,
    CLOSED_KEEPALIVE,
    CLOSED_ERROR,
];

const HANDSHAKE_RESULT: &str = "grpc.tls.handshake.result";
const HANDSHAKE_RESUMED: &str = "grpc.tls.handshake.resumed";
pub(crate) const HANDSHAKE_TIMEOUT: &str = "HANDSHAKE_TIMEOUT";

const LISTENER: &str = "sensorhub.listener";
const ERROR_TYPE: &str = "error.type";

/// The instruments, shared by the accept loop, every connection and the
/// HTTP listener (which uses only `accept_errors`).
#[derive(Debug, Clone)]
pub(crate) struct ConnectionMetrics {
    created: Counter<u64>,
    refused: Counter<u64>,
    closed: Counter<u64>,
    pub(crate) accept_errors: Counter<u64>,
    open: UpDownCounter<i64>,
    handshakes: Option<Counter<u64>>,
    duration: Option<Histogram<f64>>,
}

impl ConnectionMetrics {
    pub(crate) fn new(optional: OptionalMetrics) -> Self {
        let meter = global::meter("sensorhub-grpc");
        let created = meter
            .u64_counter("sensorhub.connections.created")
            .with_unit("{connection}")
            .with_description(
                "Connections admitted past the limits (the TLS handshake still to come)",
            )
            .build();
        created.add(0, &[]);
        let refused = meter
            .u64_counter("sensorhub.connections.refused")
            .with_unit("{connection}")
            .with_description(
                "Connections closed before any call: over a limit, or a failed or slow TLS or HTTP/2 handshake",
            )
            .build();
        for reason in [
            REFUSED_LIMIT,
            REFUSED_PER_IP,
            REFUSED_HANDSHAKE,
            REFUSED_PREFACE,
        ] {
            refused.add(0, &[KeyValue::new(REASON, reason)]);
        }
        let closed = meter
            .u64_counter("sensorhub.connections.closed")
            .with_unit("{connection}")
            .with_description(
                "Admitted connections that have ended, by the first reason seen: a failed handshake, a GOAWAY of the server's (unused, idle, failed authentications, shutdown, max age), the client closing, or an error",
            )
            .build();
        for reason in CLOSE_REASONS {
            closed.add(0, &[KeyValue::new(CLOSE_REASON, reason)]);
        }
        let accept_errors = meter
            .u64_counter("sensorhub.connections.accept_errors")
            .with_unit("{error}")
            .with_description(
                "Failed accepts, by listener and error (EMFILE: the process is out of file descriptors)",
            )
            .build();
        let open = meter
            .i64_up_down_counter("sensorhub.connections.open")
            .with_unit("{connection}")
            .with_description("Connections admitted and still open")
            .build();
        open.add(0, &[]);
        let handshakes = optional.tls_handshakes.then(|| {
            meter
                .u64_counter(TLS_HANDSHAKES)
                .with_unit("{handshake}")
                .with_description("TLS handshakes, by result and resumption (gRFC A118)")
                .build()
        });
        let duration = optional.connection_duration.then(|| {
            meter
                .f64_histogram(CONNECTION_DURATION)
                .with_unit("s")
                .with_description("How long admitted connections lived, by close reason")
                .with_boundaries(vec![
                    0.01, 0.1, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
                ])
                .build()
        });
        Self {
            created,
            refused,
            closed,
            accept_errors,
            open,
            handshakes,
            duration,
        }
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused.add(1, &[KeyValue::new(REASON, reason)]);
    }

    /// A connection got its slots: counted as created and open until the
    /// [`Lifetime`] returned is dropped.
    pub(crate) fn admitted(&self) -> Lifetime {
        self.created.add(1, &[]);
        self.open.add(1, &[]);
        Lifetime {
            metrics: self.clone(),
            since: Instant::now(),
            reason: CloseReason::default(),
        }
    }

    /// A TLS handshake succeeded.
    pub(crate) fn handshake_succeeded(&self, connection: &rustls::ServerConnection) {
        if let Some(handshakes) = &self.handshakes {
            let resumed = match connection.handshake_kind() {
                Some(rustls::HandshakeKind::Resumed) => "RESUMED_HANDSHAKE",
                _ => "FULL_HANDSHAKE",
            };
            handshakes.add(
                1,
                &[
                    KeyValue::new(HANDSHAKE_RESULT, "SUCCESS"),
                    KeyValue::new(HANDSHAKE_RESUMED, resumed),
                ],
            );
        }
    }

    /// A TLS handshake failed with `result` (see [`handshake_result`]).
    pub(crate) fn handshake_failed(&self, result: &'static str) {
        if let Some(handshakes) = &self.handshakes {
            handshakes.add(1, &[KeyValue::new(HANDSHAKE_RESULT, result)]);
        }
    }

    /// Counts a failed accept of `listener`.
    pub(crate) fn accept_failed(&self, listener: &'static str, kind: &'static str) {
        self.accept_errors.add(
            1,
            &[
                KeyValue::new(LISTENER, listener),
                KeyValue::new(ERROR_TYPE, kind),
            ],
        );
    }
}

/// Why a connection ends: the first reason set wins (a GOAWAY for idleness,
/// then the client closing, is an idle close). Shared by the slot and the
/// task that serves the connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct CloseReason(Arc<OnceLock<&'static str>>);

impl CloseReason {
    pub(crate) fn set(&self, reason: &'static str) {
        let _ = self.0.set(reason);
    }

    fn get(&self) -> &'static str {
        // Unset only if the task was dropped, as at the end of a forced drain.
        self.0.get().copied().unwrap_or(CLOSED_SHUTDOWN)
    }
}

/// One admitted connection in the metrics: open while it lives, closed with
/// its reason (and, if switched on, its duration) when dropped.
#[derive(Debug)]
pub(crate) struct Lifetime {
    metrics: ConnectionMetrics,
    since: Instant,
    reason: CloseReason,
}

impl Lifetime {
    pub(crate) fn reason(&self) -> &CloseReason {
        &self.reason
    }
}

impl Drop for Lifetime {
    fn drop(&mut self) {
        let reason = KeyValue::new(CLOSE_REASON, self.reason.get());
        self.metrics.open.add(-1, &[]);
        if let Some(duration) = &self.metrics.duration {
            duration.record(
                self.since.elapsed().as_secs_f64(),
                std::slice::from_ref(&reason),
            );
        }
        self.metrics.closed.add(1, &[reason]);
    }
}

/// Why a served connection ended with `error`, as a close reason.
pub(crate) fn served_error_reason(error: &hyper::Error) -> &'static str {
    if error.is_timeout() {
        return CLOSED_KEEPALIVE;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => CLOSED_RESET,
                io::ErrorKind::UnexpectedEof => CLOSED_PEER,
                _ => CLOSED_ERROR,
            };
        }
        source = e.source();
    }
    CLOSED_ERROR
}

/// gRFC A118's `grpc.tls.handshake.result` for a failed server handshake:
/// what rustls (wrapped by tokio-rustls in an `io::Error`) or the socket
/// said. What cannot be told apart is `UNKNOWN_FAILURE`, as A118 says.
pub(crate) fn handshake_result(error: &io::Error) -> &'static str {
    if let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return tls_error_result(tls);
    }
    match error.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => "PEER_CONNECTION_CLOSED",
        io::ErrorKind::TimedOut => HANDSHAKE_TIMEOUT,
        _ => "UNKNOWN_FAILURE",
    }
}

fn tls_error_result(error: &rustls::Error) -> &'static str {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error, PeerIncompatible};
    match error {
        Error::InvalidCertificate(cert) => match cert {
            Cert::Expired | Cert::ExpiredContext { .. } => "CERTIFICATE_EXPIRED",
            Cert::NotValidYet | Cert::NotValidYetContext { .. } => "CERTIFICATE_NOT_YET_VALID",
            Cert::Revoked => "CERTIFICATE_REVOKED",
            Cert::UnknownIssuer => "CERTIFICATE_AUTHORITY_INVALID",
            Cert::BadEncoding => "CERTIFICATE_MALFORMED",
            Cert::BadSignature => "SIGNATURE_VERIFICATION_FAILED",
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
                "CERTIFICATE_HOSTNAME_MISMATCH"
            }
            _ => "CERTIFICATE_VERIFICATION_FAILED",
        },
        Error::NoCertificatesPresented => "CERTIFICATE_VERIFICATION_FAILED",
        Error::PeerIncompatible(incompatible) => match incompatible {
            PeerIncompatible::NoCipherSuitesInCommon => "CIPHER_SUITE_MISMATCH",
            PeerIncompatible::NoKxGroupsInCommon
            | PeerIncompatible::KeyShareExtensionRequired
            | PeerIncompatible::NamedGroupsExtensionRequired => "KEY_EXCHANGE_FAILURE",
            PeerIncompatible::SupportedVersionsExtensionRequired
            | PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::ServerDoesNotSupportTls12Or13 => "PROTOCOL_VERSION_UNSUPPORTED",
            _ => "UNKNOWN_FAILURE",
        },
        Error::NoApplicationProtocol => "NO_APPLICATION_PROTOCOL",
        Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. }
        | Error::InvalidMessage(_) => "UNEXPECTED_MESSAGE",
        Error::DecryptError => "DECRYPTION_FAILED",
        // The client refused the handshake: what its alert says.
        Error::AlertReceived(alert) => match alert {
            Alert::BadCertificate | Alert::UnsupportedCertificate | Alert::CertificateUnknown => {
                "CERTIFICATE_VERIFICATION_FAILED"
            }
            Alert::CertificateRevoked => "CERTIFICATE_REVOKED",
            Alert::CertificateExpired => "CERTIFICATE_EXPIRED",
            Alert::UnknownCA => "CERTIFICATE_AUTHORITY_INVALID",
            Alert::ProtocolVersion => "PROTOCOL_VERSION_UNSUPPORTED",
            Alert::InappropriateFallback => "INAPPROPRIATE_FALLBACK",
            Alert::NoApplicationProtocol => "NO_APPLICATION_PROTOCOL",
            // decrypt_error: a handshake signature did not verify (RFC 8446
            // 6.2), as when the client's CA has the server's CA's name but
            // another key.
            Alert::DecryptError => "SIGNATURE_VERIFICATION_FAILED",
            Alert::BadRecordMac | Alert::DecryptionFailed => "DECRYPTION_FAILED",
            Alert::UnexpectedMessage => "UNEXPECTED_MESSAGE",
            _ => "UNKNOWN_FAILURE",
        },
        _ => "UNKNOWN_FAILURE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(error: rustls::Error) -> io::Error {
        // As tokio-rustls reports a rustls error.
        io::Error::new(io::ErrorKind::InvalidData, error)
    }

    #[test]
    fn handshake_failures_get_a118_results() {
        use rustls::{AlertDescription, CertificateError, Error, InvalidMessage};
        let cases = [
            (
                tls(Error::AlertReceived(AlertDescription::DecryptError)),
                "SIGNATURE_VERIFICATION_FAILED",
            ),
            (
                tls(Error::AlertReceived(AlertDescription::UnknownCA)),
                "CERTIFICATE_AUTHORITY_INVALID",
            ),
            (
                tls(Error::InvalidCertificate(CertificateError::Expired)),
                "CERTIFICATE_EXPIRED",
            ),
            (
                tls(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
                "CERTIFICATE_AUTHORITY_INVALID",
            ),
            (
                tls(Error::NoCertificatesPresented),
                "CERTIFICATE_VERIFICATION_FAILED",
            ),
            (
                tls(Error::InvalidMessage(InvalidMessage::InvalidContentType)),
                "UNEXPECTED_MESSAGE",
            ),
            (
                tls(Error::PeerIncompatible(
                    rustls::PeerIncompatible::NoCipherSuitesInCommon,
                )),
                "CIPHER_SUITE_MISMATCH",
            ),
            (tls(Error::NoApplicationProtocol), "NO_APPLICATION_PROTOCOL"),
            (tls(Error::General("?".into())), "UNKNOWN_FAILURE"),
            (
                io::Error::from(io::ErrorKind::UnexpectedEof),
                "PEER_CONNECTION_CLOSED",
            ),
            (
                io::Error::from(io::ErrorKind::ConnectionReset),
                "PEER_CONNECTION_CLOSED",
            ),
            (io::Error::from(io::ErrorKind::TimedOut), HANDSHAKE_TIMEOUT),
            (io::Error::other("?"), "UNKNOWN_FAILURE"),
        ];
        for (error, expected) in cases {
            assert_eq!(handshake_result(&error), expected, "{error:?}");
        }
    }

    #[test]
    fn the_first_close_reason_wins_and_an_unset_one_is_shutdown() {
        let reason = CloseReason::default();
        assert_eq!(reason.get(), CLOSED_SHUTDOWN);
        reason.set(CLOSED_IDLE);
        reason.clone().set(CLOSED_PEER);
        assert_eq!(reason.get(), CLOSED_IDLE);
    }
}
