//! What a failed database call means for the caller, in the domain's errors.
//!
//! Why its own module: "unreachable" and "failed" lead to different
//! statuses (UNAVAILABLE: retry, the replica will reconnect; INTERNAL:
//! something is wrong), and the one ambiguous case, a connection lost
//! during `COMMIT`, must say so.
//!
//! Invariant: no message made here quotes the URL or the driver's
//! configuration (which holds the password); they quote the server's
//! error text or the I/O error only.

use deadpool_postgres::PoolError;
use sensorhub_core::StoreError;

use crate::answer_limit::ANSWER_LIMIT;

/// What every "cannot reach it" message starts with (the transport and the
/// tests look for it).
pub const UNREACHABLE: &str = "the database is unreachable";

/// Whether `e` is about the connection rather than the statement.
pub(crate) fn is_connection(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    // The server going away: admin or crash shutdown, cannot connect now,
    // or the connection failed.
    matches!(
        e.code().map(|c| c.code()),
        Some("57P01" | "57P02" | "57P03" | "08000" | "08003" | "08006" | "08001" | "08004")
    )
}

/// What went wrong in the TLS handshake, if that is where `e` failed: the
/// certificate's refusal in rustls's words, or a server without TLS.
///
/// tokio-postgres has no public error kind to ask, so this goes by its
/// fixed wording for a TLS failure ("error performing TLS handshake"); the
/// cause is what tokio-rustls reported (an `io::Error` holding rustls's).
pub(crate) fn tls_failure(e: &tokio_postgres::Error) -> Option<String> {
    let text = e.to_string();
    if !text.starts_with("error performing TLS handshake") {
        return None;
    }
    let cause = std::error::Error::source(e).map(|s| {
        match s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => tls.to_string(),
            None => s.to_string(),
        }
    });
    Some(cause.unwrap_or(text))
}

/// The words of `e`: the server's message, or the driver's (an I/O error).
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

pub(crate) fn unreachable(why: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!(
        "{UNREACHABLE} ({why}); the server reconnects by itself, retry"
    ))
}

pub(crate) fn pool(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => unreachable(describe(&e)),
        PoolError::Timeout(_) => unreachable("no connection became free or could be made in time"),
        PoolError::Closed => StoreError::Closed,
        other => unreachable(other),
    }
}

pub(crate) fn write(e: tokio_postgres::Error) -> StoreError {
    if is_connection(&e) {
        unreachable(describe(&e))
    } else {
        StoreError::Write(describe(&e))
    }
}

pub(crate) fn read(e: tokio_postgres::Error) -> StoreError {
    if is_connection(&e) {
        unreachable(describe(&e))
    } else {
        StoreError::Read(describe(&e))
    }
}

/// A read (or the clock's) with no answer within the limit.
pub(crate) fn silent() -> StoreError {
    unreachable(format!("no answer within {} s", ANSWER_LIMIT.as_secs()))
}

/// A group commit with no answer within the limit: before `COMMIT` was
/// sent nothing can be stored; after, the outcome is unknown.
pub(crate) fn silent_write(commit_sent: bool) -> StoreError {
    let limit = ANSWER_LIMIT.as_secs();
    StoreError::Unavailable(if commit_sent {
        format!(
            "{UNREACHABLE}: no answer to COMMIT within {limit} s, so the readings may or may not be stored; retry with the same idempotency key to store them exactly once"
        )
    } else {
        format!(
            "{UNREACHABLE} (no answer within {limit} s); nothing of this write was stored; the server reconnects by itself, retry"
        )
    })
}

/// A failed `COMMIT`. Lost with the connection, the outcome is unknown:
/// the write may be stored. A retry with the same idempotency key stores
/// only what is missing; one without a key may store it twice.
pub(crate) fn commit(e: tokio_postgres::Error) -> StoreError {
    if is_connection(&e) {
        StoreError::Unavailable(format!(
            "{UNREACHABLE}: the connection was lost during COMMIT ({}), so the readings may or may not be stored; retry with the same idempotency key to store them exactly once",
            describe(&e)
        ))
    } else {
        StoreError::Write(describe(&e))
    }
}
