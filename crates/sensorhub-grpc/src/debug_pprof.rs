//! `GET /debug/pprof/profile?seconds=N` on the HTTP listener: a CPU profile
//! of the whole process, in pprof's gzipped protobuf (what `go tool pprof`,
//! Pyroscope and Grafana read), or `&format=flamegraph` an SVG.
//!
//! The listener needs no token for health and metrics, but a profile shows
//! the code's inner workings and costs CPU while it is taken, so:
//!
//! - it answers only with `Authorization: Bearer <token>` of the server's
//!   own set (the one gRPC calls are checked against, reloaded on SIGHUP),
//!   whose identity may write and read every sensor: an operator's token,
//!   not a scoped sensor's (403); with `--no-auth` there is no token to
//!   check and it answers 403;
//! - requests are rate-limited before the token is looked at (a burst of
//!   [`BURST`], then one a second, in all): the HTTP listener holds many
//!   connections, and this keeps it from being a faster way to guess tokens
//!   than the gRPC port, which closes a connection after five failures;
//! - one profile at a time (409 for another), at most [`MAX_SECONDS`]
//!   seconds; a profile in progress ends early when its client goes away or
//!   the server shuts down.
//!
//! Which profiler samples is the binary's ([`Profiler`]): the transport
//! knows only that it takes a while and returns bytes.

use std::{
    num::NonZeroU32,
    sync::{Arc, mpsc},
    time::Duration,
};

use axum::{
    Router,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenCheck;

/// The longest profile one request may ask for, seconds.
pub const MAX_SECONDS: u64 = 60;
/// A profile's length when the request does not say, seconds (as Go's).
pub const DEFAULT_SECONDS: u64 = 30;
/// Requests let through at once before the rate limit of one a second.
pub const BURST: u32 = 5;

/// What the caller asked the profile to be written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileFormat {
    /// pprof's protobuf, gzipped.
    Pprof,
    /// An SVG flame graph.
    Flamegraph,
}

/// A finished profile.
#[derive(Debug)]
pub struct ProfileOutput {
    pub content_type: &'static str,
    /// The name a browser saves it under.
    pub filename: &'static str,
    pub body: Vec<u8>,
}

/// Why no profile was returned.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Another profile is being taken (by this listener or otherwise).
    #[error("a CPU profile is already being taken; try again when it is done")]
    Busy,
    /// The wait was cut short (the client left, or the server shuts down).
    #[error("the profile was cancelled")]
    Cancelled,
    #[error("the profile could not be taken: {0}")]
    Failed(String),
}

/// Samples the process's CPU. Called on a blocking thread.
pub trait Profiler: Send + Sync + std::fmt::Debug + 'static {
    /// Starts sampling, waits with `wait(duration)` (false: cancelled), then
    /// stops and writes the profile as `format`.
    fn profile(
        &self,
        duration: Duration,
        format: ProfileFormat,
        wait: &dyn Fn(Duration) -> bool,
    ) -> Result<ProfileOutput, ProfileError>;
}

struct State {
    profiler: Arc<dyn Profiler>,
    tokens: TokenCheck,
    one_at_a_time: Semaphore,
    limiter: governor::DefaultDirectRateLimiter,
    draining: CancellationToken,
}

/// The `/debug/pprof/profile` route.
pub(crate) fn routes(
    profiler: Arc<dyn Profiler>,
    tokens: TokenCheck,
    draining: CancellationToken,
) -> Router {
    let burst = NonZeroU32::new(BURST).expect("a burst above zero");
    let state = Arc::new(State {
        profiler,
        tokens,
        one_at_a_time: Semaphore::new(1),
        limiter: governor::RateLimiter::direct(
            governor::Quota::per_second(NonZeroU32::MIN).allow_burst(burst),
        ),
        draining,
    });
    Router::new().route(
        "/debug/pprof/profile",
        get(move |uri: Uri, headers: HeaderMap| {
            let state = state.clone();
            async move { profile(&state, &uri, &headers).await }
        }),
    )
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// The profile's length and format, or what is wrong with the query.
fn parse_query(query: Option<&str>) -> Result<(Duration, ProfileFormat), String> {
    let mut seconds = DEFAULT_SECONDS;
    let mut format = ProfileFormat::Pprof;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "seconds" => {
                seconds = value
                    .parse()
                    .ok()
                    .filter(|s| (1..=MAX_SECONDS).contains(s))
                    .ok_or_else(|| {
                        format!("seconds={value}: give a whole number of seconds from 1 to {MAX_SECONDS}")
                    })?;
            }
            "format" => {
                format = match &*value {
                    "pprof" | "proto" => ProfileFormat::Pprof,
                    "flamegraph" | "svg" => ProfileFormat::Flamegraph,
                    other => {
                        return Err(format!(
                            "format={other}: use format=pprof (the default) or format=flamegraph"
                        ));
                    }
                }
            }
            other => {
                return Err(format!(
                    "unknown parameter `{other}`: the parameters are seconds (1 to {MAX_SECONDS}) and format (pprof or flamegraph)"
                ));
            }
        }
    }
    Ok((Duration::from_secs(seconds), format))
}

async fn profile(state: &Arc<State>, uri: &Uri, headers: &HeaderMap) -> Response {
    if !state.tokens.has_tokens() {
        return refuse(
            StatusCode::FORBIDDEN,
            "profiling needs a token and this server runs with --no-auth: restart it with --token or --tokens-file",
        );
    }
    if state.limiter.check().is_err() {
        let mut response = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many profile requests: one a second at most",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    let identity = presented.and_then(|token| state.tokens.identity_of(token));
    let Some(identity) = identity else {
        let mut response = refuse(
            StatusCode::UNAUTHORIZED,
            "send `Authorization: Bearer <token>` with a token this server accepts",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"sensorhub\""),
        );
        return response;
    };
    if !(identity.write.is_all() && identity.read.is_all()) {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "identity `{}` may not profile the server: profiling needs a token that may write and read every sensor (--token, or a tokens-file line without write= and read=)",
                identity.label
            ),
        );
    }
    let (duration, format) = match parse_query(uri.query()) {
        Ok(parsed) => parsed,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, &message),
    };
    let Ok(_one) = state.one_at_a_time.try_acquire() else {
        return refuse(StatusCode::CONFLICT, &ProfileError::Busy.to_string());
    };

    // Dropping `cancel` (this future dropped: the client left; or the
    // server drains) ends the profiler's wait at once.
    let (cancel, cancelled) = mpsc::channel::<()>();
    let profiler = state.profiler.clone();
    let taken = tokio::task::spawn_blocking(move || {
        let wait = |d: Duration| {
            matches!(
                cancelled.recv_timeout(d),
                Err(mpsc::RecvTimeoutError::Timeout)
            )
        };
        profiler.profile(duration, format, &wait)
    });
    let outcome = tokio::select! {
        taken = taken => taken,
        _ = state.draining.cancelled() => {
            drop(cancel);
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down");
        }
    };
    drop(cancel);
    match outcome {
        Ok(Ok(output)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, output.content_type.to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}\"", output.filename),
                ),
            ],
            output.body,
        )
            .into_response(),
        Ok(Err(ProfileError::Busy)) => {
            refuse(StatusCode::CONFLICT, &ProfileError::Busy.to_string())
        }
        Ok(Err(e)) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the profiler failed: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_seconds_and_format_within_bounds() {
        assert_eq!(
            parse_query(None).unwrap(),
            (Duration::from_secs(DEFAULT_SECONDS), ProfileFormat::Pprof)
        );
        assert_eq!(
            parse_query(Some("seconds=5&format=flamegraph")).unwrap(),
            (Duration::from_secs(5), ProfileFormat::Flamegraph)
        );
        assert_eq!(
            parse_query(Some("seconds=60")).unwrap().0,
            Duration::from_secs(60)
        );
        for bad in [
            "seconds=0",
            "seconds=61",
            "seconds=-1",
            "seconds=1.5",
            "seconds=",
            "format=gif",
            "hz=1000",
        ] {
            let error = parse_query(Some(bad)).unwrap_err();
            assert!(!error.is_empty(), "{bad}");
        }
        assert!(
            parse_query(Some("seconds=61"))
                .unwrap_err()
                .contains("from 1 to 60")
        );
    }
}
