//! The checks that the gRPC protocol asks of a server and that tonic leaves
//! out, as one tower layer right around tonic's router (inside the telemetry
//! layer, so that every call is still recorded, with the status given here):
//!
//! - a request whose `content-type` is not `application/grpc` (optionally
//!   followed by `+subtype` or `;parameters`), or that has none or several,
//!   is answered HTTP 415 Unsupported Media Type before anything else sees it
//!   (gRPC over HTTP/2: servers SHOULD do this); tonic would serve it as gRPC;
//! - request metadata over [`MAX_METADATA_BYTES`] gets `RESOURCE_EXHAUSTED`
//!   naming the limit, before anything else sees it; h2 itself takes header
//!   lists up to [`HTTP2_MAX_HEADER_LIST_BYTES`] so that such a request
//!   reaches this layer, rather than answering HTTP 431 (which clients show as
//!   `UNKNOWN`) or, above a few times its limit, closing the whole connection;
//! - a unary-request call whose request ends without a message gets
//!   `UNIMPLEMENTED` (a cardinality violation, as grpc-go and grpc-java
//!   answer), not tonic's `INTERNAL "Missing request message."`;
//! - a unary-request call whose request carries a second message gets
//!   `INTERNAL` and its handler never runs ([`request_body`]), where tonic
//!   would store the first and silently drop the rest;
//! - an unknown path gets `UNIMPLEMENTED` with a message that names it and
//!   lists what this server serves, where tonic sends no message at all;
//! - an over-size message gets `RESOURCE_EXHAUSTED`, not `OUT_OF_RANGE`,
//!   and so does a zstd message asking for a window over the decoder's
//!   limit, not `INTERNAL` ([`convert::remap_trailers_only_status`]); the
//!   message states the limit of the method that was called (health and
//!   reflection have a smaller one than `SensorService`).
//!
//! The last four are rewrites of the trailers-only answers tonic gives before
//! a handler runs, not early answers: an unknown `SensorService` method still
//! goes through the token check first, so a caller without a token learns
//! nothing (SECURITY.md). tonic has no hook for any of this.
//!
//! Cost on the happy path: the `content-type` check, a sum over the request's
//! headers, one hash-map lookup per request, the 5-byte message prefixes of
//! a unary request followed, one header lookup per response, and no
//! allocation (the method name is a shared `Arc<str>`). Messages are built
//! only for refusals.

mod request_body;

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header::CONTENT_TYPE};
use tonic::{Code, body::Body};
use tower::{Layer, Service};

use crate::convert;
pub use request_body::RequestBody;

/// The most request metadata a call may carry, in bytes counted as HTTP/2
/// counts a header list (name, value and 32 per entry): the 16 KiB that h2
/// allowed before, now refused with a gRPC status.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// The header list h2 decodes and hands over (`SETTINGS_MAX_HEADER_LIST_SIZE`):
/// room for 1 MiB of metadata, so that up to there the answer is
/// [`MAX_METADATA_BYTES`]'s `RESOURCE_EXHAUSTED` on a connection that lives
/// on. Beyond it h2 answers HTTP 431 and resets the stream; far beyond it (more
/// CONTINUATION frames than this size takes, or four times the size) h2
/// closes the connection, as it must once it stops decoding a header block.
/// What a connection can make the server hold is one such header block at a
/// time.
pub const HTTP2_MAX_HEADER_LIST_BYTES: u32 = (1 << 20) + (64 << 10);

/// How many request messages a method takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requests {
    /// Unary and server-streaming methods: exactly one.
    One,
    /// Client-streaming and bidirectional methods: any number.
    Stream,
}

/// The body of the HTTP 415 answer.
const UNSUPPORTED_MEDIA_TYPE: &str = "this port serves gRPC only: a request needs exactly one content-type, application/grpc (or application/grpc+proto)\n";

/// tonic's message for a unary request that ended without a message.
const TONIC_MISSING_MESSAGE: &str = "Missing request message.";

/// At most this much of an unknown path is quoted back.
const QUOTED_PATH_LIMIT: usize = 128;

/// Applies the call policy (see the module documentation) to the service it
/// wraps: tonic's router, whose response futures are `Unpin`.
#[derive(Clone)]
pub struct CallPolicyLayer {
    policy: Arc<Policy>,
}

struct Policy {
    /// The registered methods, `package.Service/Method`, without the leading
    /// slash: how many request messages each takes, and its decode limit.
    methods: HashMap<Arc<str>, (Requests, usize)>,
    /// Every served service, with its methods: what an unknown path is told.
    services: Vec<(String, Vec<String>)>,
    served: String,
}

impl CallPolicyLayer {
    /// `methods`: every path the server registers, as `package.Service/Method`
    /// without the leading slash, with how many request messages it takes
    /// and its decoding limit (stated when a message is over it).
    pub fn new<M: AsRef<str>>(methods: impl IntoIterator<Item = (M, Requests, usize)>) -> Self {
        let mut set = HashMap::new();
        let mut services: Vec<(String, Vec<String>)> = Vec::new();
        for (method, requests, max_message_bytes) in methods {
            let method = method.as_ref();
            if set
                .insert(Arc::<str>::from(method), (requests, max_message_bytes))
                .is_some()
            {
                continue;
            }
            let (service, name) = method.rsplit_once('/').unwrap_or((method, ""));
            match services.iter_mut().find(|(s, _)| s == service) {
                Some((_, names)) => names.push(name.to_owned()),
                None => services.push((service.to_owned(), vec![name.to_owned()])),
            }
        }
        // The application's own services first, then gRPC's (health, reflection).
        services.sort_by_key(|(service, _)| service.starts_with("grpc."));
        let served = services
            .iter()
            .map(|(service, names)| format!("{service}/{{{}}}", names.join(",")))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            policy: Arc::new(Policy {
                methods: set,
                services,
                served,
            }),
        }
    }
}

impl fmt::Debug for CallPolicyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallPolicyLayer")
            .field("served", &self.policy.served)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for CallPolicyLayer {
    type Service = CallPolicy<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallPolicy {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service [`CallPolicyLayer`] wraps around tonic's router.
#[derive(Clone)]
pub struct CallPolicy<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S> fmt::Debug for CallPolicy<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallPolicy").finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for CallPolicy<S>
where
    S: Service<Request<RequestBody<B>>, Response = Response<Body>>,
    S::Future: Unpin,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = CallPolicyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !is_grpc_content_type(request.headers()) {
            return CallPolicyFuture(State::Refused(Some(unsupported_media_type())));
        }
        let metadata = header_list_size(request.headers());
        if metadata > MAX_METADATA_BYTES {
            let status = convert::metadata_too_large(metadata, MAX_METADATA_BYTES);
            return CallPolicyFuture(State::Refused(Some(status.into_http())));
        }
        let path = request.uri().path();
        let (route, one_message) = match self
            .policy
            .methods
            .get_key_value(path.strip_prefix('/').unwrap_or(path))
        {
            Some((method, (requests, max_message_bytes))) => (
                Route::Known {
                    method: method.clone(),
                    max_message_bytes: *max_message_bytes,
                },
                (*requests == Requests::One).then(|| method.clone()),
            ),
            None => (
                Route::Unknown {
                    path: quoted(path).into(),
                    policy: self.policy.clone(),
                },
                None,
            ),
        };
        let request = request.map(|body| match one_message {
            Some(method) => RequestBody::unary(body, method),
            None => RequestBody::streaming(body),
        });
        CallPolicyFuture(State::Called {
            inner: self.inner.call(request),
            route: Some(route),
        })
    }
}

/// Whether the request has exactly one `content-type`, and it is gRPC's.
fn is_grpc_content_type(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => is_grpc_media_type(value.as_bytes()),
        _ => false,
    }
}

/// The size of a header list as HTTP/2 counts it (RFC 9113 §6.5.2): each
/// entry's name and value, plus 32.
fn header_list_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// `application/grpc`, alone or followed by `+subtype` or `;parameters`
/// (case-insensitive, as media types are).
fn is_grpc_media_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    value
        .get(..GRPC.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(GRPC))
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

fn unsupported_media_type() -> Response<Body> {
    let mut response = Response::new(Body::new(UNSUPPORTED_MEDIA_TYPE.to_owned()));
    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The start of `path`, cut at a character boundary.
fn quoted(path: &str) -> &str {
    let mut end = path.len().min(QUOTED_PATH_LIMIT);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

/// What the response may need to say about the request's path.
enum Route {
    /// A registered method, `package.Service/Method`, and its decode limit.
    Known {
        method: Arc<str>,
        max_message_bytes: usize,
    },
    /// Anything else: the path as requested (cut to a quotable length).
    Unknown { path: Box<str>, policy: Arc<Policy> },
}

enum State<F> {
    Refused(Option<Response<Body>>),
    Called { inner: F, route: Option<Route> },
}

/// The response future of [`CallPolicy`].
pub struct CallPolicyFuture<F>(State<F>);

impl<F> fmt::Debug for CallPolicyFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallPolicyFuture").finish_non_exhaustive()
    }
}

impl<F, E> Future for CallPolicyFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>> + Unpin,
{
    type Output = Result<Response<Body>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            State::Refused(response) => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            State::Called { inner, route } => {
                let mut response = match Pin::new(inner).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Ready(Ok(response)) => response,
                };
                let route = route.take().expect("polled after completion");
                remap(response.headers_mut(), &route);
                Poll::Ready(Ok(response))
            }
        }
    }
}

/// Rewrites a trailers-only answer of tonic's (the status is in the head);
/// any other response is left alone after one header lookup.
fn remap(headers: &mut HeaderMap, route: &Route) {
    let Some(code) = headers.get(tonic::Status::GRPC_STATUS) else {
        return;
    };
    let code = Code::from_bytes(code.as_bytes());
    match (code, route) {
        (Code::Internal, Route::Known { method, .. })
            if convert::trailers_only_message(headers).as_deref()
                == Some(TONIC_MISSING_MESSAGE) =>
        {
            convert::set_trailers_only_status(headers, &convert::request_message_missing(method));
        }
        (
            Code::OutOfRange | Code::Internal,
            Route::Known {
                max_message_bytes, ..
            },
        ) => convert::remap_trailers_only_status(headers, *max_message_bytes),
        (Code::Unimplemented, Route::Unknown { path, policy })
            if !headers.contains_key(tonic::Status::GRPC_MESSAGE) =>
        {
            let service = path
                .strip_prefix('/')
                .and_then(|p| p.rsplit_once('/'))
                .map(|(service, _)| service);
            let status = match service {
                Some(service) if policy.services.iter().any(|(s, _)| s == service) => {
                    convert::unknown_method(path, service, &policy.served)
                }
                _ => convert::unknown_service(path, service, &policy.served),
            };
            convert::set_trailers_only_status(headers, &status);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> CallPolicyLayer {
        CallPolicyLayer::new([
            ("grpc.health.v1.Health/Check", Requests::One, 1_024),
            ("grpc.health.v1.Health/Watch", Requests::One, 1_024),
            ("SensorService/SendSingleReading", Requests::One, 65_536),
            ("SensorService/SensorChat", Requests::Stream, 65_536),
        ])
    }

    fn trailers_only(code: Code, message: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        tonic::Status::new(code, message)
            .add_header(&mut headers)
            .expect("a valid status");
        headers
    }

    fn message(headers: &HeaderMap) -> String {
        convert::trailers_only_message(headers).unwrap_or_default()
    }

    #[test]
    fn only_grpc_content_types_pass() {
        for ok in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=utf-8",
            "Application/GRPC",
        ] {
            assert!(is_grpc_media_type(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "application/json",
            "application/grpc-web",
            "application/grp",
        ] {
            assert!(!is_grpc_media_type(bad.as_bytes()), "{bad}");
        }
        let mut headers = HeaderMap::new();
        assert!(!is_grpc_content_type(&headers), "none");
        headers.append(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        assert!(is_grpc_content_type(&headers));
        headers.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_grpc_content_type(&headers), "two values");
    }

    #[test]
    fn the_served_list_puts_the_application_first() {
        assert_eq!(
            layer().policy.served,
            "SensorService/{SendSingleReading,SensorChat}, grpc.health.v1.Health/{Check,Watch}"
        );
    }

    #[test]
    fn a_missing_unary_message_becomes_unimplemented() {
        let mut headers = trailers_only(Code::Internal, TONIC_MISSING_MESSAGE);
        let route = known("SensorService/SendSingleReading", 65_536);
        remap(&mut headers, &route);
        assert_eq!(headers["grpc-status"], "12");
        let said = message(&headers);
        assert!(
            said.contains("/SensorService/SendSingleReading expects exactly one request message"),
            "{said}"
        );
        // Other INTERNAL statuses are left alone.
        let mut headers = trailers_only(Code::Internal, "failed to decode Protobuf message");
        remap(&mut headers, &route);
        assert_eq!(headers["grpc-status"], "13");
    }

    #[test]
    fn unknown_paths_are_named_with_what_is_served() {
        let policy = layer().policy;
        let unknown = |path: &str| {
            let mut headers = trailers_only(Code::Unimplemented, "");
            let route = Route::Unknown {
                path: path.into(),
                policy: policy.clone(),
            };
            remap(&mut headers, &route);
            assert_eq!(headers["grpc-status"], "12");
            message(&headers)
        };
        assert_eq!(
            unknown("/SensorService/DeleteEverything"),
            "unknown method /SensorService/DeleteEverything: SensorService has no such method; this server serves SensorService/{SendSingleReading,SensorChat}, grpc.health.v1.Health/{Check,Watch}"
        );
        assert_eq!(
            unknown("/sensor.v2.SensorService/SendSingleReading"),
            "unknown service sensor.v2.SensorService (path /sensor.v2.SensorService/SendSingleReading); this server serves SensorService/{SendSingleReading,SensorChat}, grpc.health.v1.Health/{Check,Watch}"
        );
        assert!(unknown("/").starts_with("unknown path /, not /package.Service/Method;"));
        // The raw header is percent-encoded as the gRPC spec says.
        let mut headers = trailers_only(Code::Unimplemented, "");
        let route = Route::Unknown {
            path: "/a%/b".into(),
            policy: policy.clone(),
        };
        remap(&mut headers, &route);
        let raw = headers["grpc-message"].to_str().expect("ASCII");
        assert!(raw.starts_with("unknown%20service%20a%25%20"), "{raw}");

        // A message tonic did give is kept.
        let mut headers = trailers_only(Code::Unimplemented, "Content is compressed with `br`");
        let route = Route::Unknown {
            path: "/x/y".into(),
            policy,
        };
        remap(&mut headers, &route);
        assert_eq!(message(&headers), "Content is compressed with `br`");
    }

    fn known(method: &str, max_message_bytes: usize) -> Route {
        Route::Known {
            method: method.into(),
            max_message_bytes,
        }
    }

    #[test]
    fn an_over_size_message_is_resource_exhausted_with_the_method_s_limit() {
        let mut headers = trailers_only(
            Code::OutOfRange,
            "Error, decoded message length too large: found 102400 bytes, the limit is: 65536 bytes",
        );
        remap(
            &mut headers,
            &known("SensorService/SendSingleReading", 65_536),
        );
        assert_eq!(headers["grpc-status"], "8");
        assert!(message(&headers).contains("65536 bytes"));
        // Health has its own, smaller limit, and that is the one stated.
        let mut headers = trailers_only(
            Code::OutOfRange,
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 1024 bytes",
        );
        remap(&mut headers, &known("grpc.health.v1.Health/Check", 1_024));
        let said = message(&headers);
        assert!(
            said.contains("1024 bytes") && !said.contains("65536"),
            "{said}"
        );
        // An unknown path has no limit to state; tonic's answer is left alone.
        let mut headers = trailers_only(Code::OutOfRange, "too large");
        remap(
            &mut headers,
            &Route::Unknown {
                path: "/x/y".into(),
                policy: layer().policy,
            },
        );
        assert_eq!(headers["grpc-status"], "11");
    }

    #[test]
    fn a_zstd_window_over_the_limit_is_resource_exhausted() {
        let mut headers = trailers_only(
            Code::Internal,
            "Error decompressing: Frame requires too much memory for decoding, while sending request",
        );
        remap(
            &mut headers,
            &known("SensorService/SendSingleReading", 65_536),
        );
        assert_eq!(headers["grpc-status"], "8");
        let said = message(&headers);
        assert!(
            said.contains("zstd") && said.contains("134217728 bytes"),
            "{said}"
        );
        // A stream's status is rewritten the same way.
        let status = convert::decode_status(
            tonic::Status::internal(
                "Error decompressing: Frame requires too much memory for decoding, while sending request",
            ),
            65_536,
        );
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), said);
    }

    #[test]
    fn metadata_is_measured_as_http2_measures_a_header_list() {
        let mut headers = HeaderMap::new();
        assert_eq!(header_list_size(&headers), 0);
        headers.insert("te", HeaderValue::from_static("trailers"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("22"));
        assert_eq!(
            header_list_size(&headers),
            (2 + 8 + 32) + (3 + 1 + 32) + (3 + 2 + 32)
        );
        // The refusal names both sizes.
        let status = convert::metadata_too_large(20_041, MAX_METADATA_BYTES);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("20041 bytes"), "{status:?}");
        assert!(status.message().contains("16384 bytes"), "{status:?}");
        // h2 decodes enough for 1 MiB of metadata to reach the policy.
        assert!(HTTP2_MAX_HEADER_LIST_BYTES as usize > (1 << 20) + MAX_METADATA_BYTES);
    }

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        let path = format!("/{}", "é".repeat(100));
        let cut = quoted(&path);
        assert!(cut.len() <= QUOTED_PATH_LIMIT && path.starts_with(cut));
        assert_eq!(quoted("/short"), "/short");
    }
}
