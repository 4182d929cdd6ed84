//! The live web view on the HTTP listener (`GET /`): the sensors with their
//! charts and alerts, the calls per method (rpcz), the calls in flight, the
//! recent traces (tracez) and the store, updated live over server-sent
//! events. It is what `sensorhub demo` and `sensorhub serve` show without
//! Grafana or Jaeger, embedded in the binary and needing nothing else.
//!
//! - [`session`]: login with a token of the server's set, sessions, and the
//!   login rate limit; [`guard`]: security headers and cross-origin refusal.
//! - [`html`]: the login form and the page's shell; `assets/`: the one
//!   script, the stylesheet and the icon, all `include_str!`ed (no CDN, no
//!   npm, no fonts; the charts are SVG drawn by the script).
//! - [`payload`]: the JSON; [`series`]: a chart's range from the store
//!   (through the `Store` trait, so both engines serve it); [`ticker`]: one
//!   tick a second for each open page.
//!
//! What a session sees is its token's identity's: the sensors (rows,
//! charts, alerts) its `read=` scope permits. The calls, calls in flight and
//! traces show every caller's methods, peers and span attributes (sensor ids
//! among them), so only an identity that may read every sensor sees them.
//!
//! Invariant: nothing served here ever contains a token. The login handler
//! reads the form's token once, hands it to the token check and drops it; it
//! is never logged, stored (only the session's random id is, mapped to the
//! token's digest), echoed into the form or put in a URL.
//!
//! Invariant: a page costs the server a bounded amount however long it stays
//! open: one event stream (at most [`MAX_STREAMS`] at once) whose state is
//! bounded by the rows it shows, one event a second, nothing queued for a
//! page that reads slowly (the stream is pulled).

pub mod guard;
pub mod html;
pub mod payload;
pub mod series;
pub mod session;
pub mod ticker;

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Form, Json, Router,
    extract::{ConnectInfo, Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware,
    response::{
        IntoResponse, Redirect, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use futures_util::Stream;
use sensorhub_core::SharedStore;
use sensorhub_rpc_telemetry::LiveRecorders;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use self::{
    series::Range,
    session::{COOKIE, LoginLimiter, SessionId, Sessions},
    ticker::PageTicks,
};
use crate::auth::{Identity, TokenCheck};

/// Event streams open at once; one more page gets 503. The HTTP listener
/// holds few connections, and health checks need some of them.
pub const MAX_STREAMS: usize = 16;
/// Alerts in a snapshot.
const SNAPSHOT_ALERTS: usize = 50;

const APP_JS: &str = include_str!("live_view/assets/app.js");
const APP_CSS: &str = include_str!("live_view/assets/app.css");
const ICON_SVG: &str = include_str!("live_view/assets/icon.svg");

/// What the view reads: the store (its statistics, history, tail, commit
/// activity and alerts) and the call recorders.
#[derive(Debug, Clone)]
pub struct Sources {
    pub store: SharedStore,
    pub recorders: LiveRecorders,
    /// Jaeger's base URL, for links to a trace (`--jaeger-url`).
    pub jaeger: Option<String>,
}

/// The view's state, shared by its handlers.
#[derive(Debug)]
pub struct LiveView {
    sources: Sources,
    sessions: Sessions,
    logins: LoginLimiter,
    streams: AtomicUsize,
    /// Event streams end when the server starts shutting down.
    draining: CancellationToken,
}

impl LiveView {
    pub fn new(sources: Sources, tokens: TokenCheck, draining: CancellationToken) -> Self {
        Self {
            sources,
            sessions: Sessions::new(tokens),
            logins: LoginLimiter::default(),
            streams: AtomicUsize::new(0),
            draining,
        }
    }

    /// The view's routes, to merge into the HTTP listener's router.
    pub fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/login", post(login))
            .route("/logout", post(logout))
            .route(
                "/view/app.js",
                get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
            )
            .route(
                "/view/app.css",
                get(|| asset(APP_CSS, "text/css; charset=utf-8")),
            )
            .route("/view/icon.svg", get(|| asset(ICON_SVG, "image/svg+xml")))
            .route("/view/api/snapshot", get(snapshot))
            .route("/view/api/series", get(series_handler))
            .route("/view/api/trace/{id}", get(trace))
            .route("/view/events", get(events))
            .layer(middleware::from_fn(guard::security_headers))
            .with_state(self)
    }

    /// The session a request carries, if it is live, and its identity.
    fn session(&self, headers: &HeaderMap) -> Option<(SessionId, Arc<Identity>)> {
        let id = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(SessionId::from_cookie_header)?;
        self.sessions
            .check(id, Instant::now())
            .map(|identity| (id, identity))
    }
}

type ViewState = State<Arc<LiveView>>;

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn session_cookie(id: SessionId, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        id.to_cookie_value(),
        session::LIFETIME.as_secs()
    ))
    .expect("hex digits and ASCII attributes")
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    ))
    .expect("ASCII")
}

/// `GET /`: the page for a session, else the login form (or, on a server
/// without tokens, a session at once).
async fn page(State(view): ViewState, headers: HeaderMap) -> Response {
    if view.session(&headers).is_some() {
        return html(StatusCode::OK, html::shell(view.sessions.login_required()));
    }
    if let Some(id) = view.sessions.open_without_token(Instant::now()) {
        let mut response = html(StatusCode::OK, html::shell(false));
        response.headers_mut().insert(
            header::SET_COOKIE,
            session_cookie(id, guard::over_tls(&headers)),
        );
        return response;
    }
    html(StatusCode::OK, html::login(None))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginForm(redacted)")
    }
}

/// The peer address the HTTP listener put in the request, if any.
fn peer(request_peer: Option<&ConnectInfo<SocketAddr>>) -> IpAddr {
    request_peer
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// `POST /login`: a token of the set opens a session; anything else gets
/// the form again with a message.
async fn login(State(view): ViewState, request: Request) -> Response {
    let headers = request.headers().clone();
    if !guard::same_origin(&headers) {
        return guard::cross_origin_refused();
    }
    let peer = peer(request.extensions().get::<ConnectInfo<SocketAddr>>());
    view.logins.prune();
    if let Err(wait) = view.logins.attempt(peer) {
        let seconds = wait.as_secs().max(1);
        let mut response = html(
            StatusCode::TOO_MANY_REQUESTS,
            html::login(Some(&format!(
                "Too many attempts from your address: wait {seconds} s before trying again."
            ))),
        );
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let form =
        <Form<LoginForm> as axum::extract::FromRequest<()>>::from_request(request, &()).await;
    let Ok(Form(form)) = form else {
        return html(
            StatusCode::BAD_REQUEST,
            html::login(Some("The form did not carry a token field.")),
        );
    };
    let opened = view
        .sessions
        .login(form.token.trim().as_bytes(), Instant::now());
    drop(form);
    match opened {
        Some(id) => {
            let mut response = Redirect::to("/").into_response();
            *response.status_mut() = StatusCode::SEE_OTHER;
            response.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(id, guard::over_tls(&headers)),
            );
            response
        }
        None if !view.sessions.login_required() => Redirect::to("/").into_response(),
        None => html(
            StatusCode::UNAUTHORIZED,
            html::login(Some("That is not a token this server accepts.")),
        ),
    }
}

/// `POST /logout`: ends the session.
async fn logout(State(view): ViewState, headers: HeaderMap) -> Response {
    if !guard::same_origin(&headers) {
        return guard::cross_origin_refused();
    }
    if let Some((id, _)) = view.session(&headers) {
        view.sessions.logout(id);
    }
    let mut response = Redirect::to("/").into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie());
    response
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({"error": "log in first: open / and log in with a token"})),
    )
        .into_response()
}

fn store_failed(e: sensorhub_core::StoreError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"error": e.to_string()})),
    )
        .into_response()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `GET /view/api/snapshot`: everything the page shows, now.
async fn snapshot(State(view): ViewState, headers: HeaderMap) -> Response {
    let Some((_, identity)) = view.session(&headers) else {
        return unauthorized();
    };
    match build_snapshot(&view, &identity).await {
        Ok(snapshot) => Json(snapshot).into_response(),
        Err(e) => store_failed(e),
    }
}

/// Whether `identity` sees the calls and traces (see the module docs).
fn sees_calls(identity: &Identity) -> bool {
    identity.read.is_all()
}

async fn build_snapshot(
    view: &LiveView,
    identity: &Identity,
) -> Result<payload::Snapshot, sensorhub_core::StoreError> {
    let sources = &view.sources;
    let (stats, more_sensors) =
        ticker::visible_sensors(sources, identity, ticker::MAX_ROWS).await?;
    let now = unix_now();
    let mut series = Vec::new();
    for s in stats.iter().take(ticker::MAX_CHARTS) {
        series.push(series::read(&*sources.store, &s.sensor_id, Range::Minutes15, now).await?);
    }
    let activity = sources.store.activity();
    let alerts: Vec<_> = activity
        .alerts_after(0)
        .iter()
        .rev()
        .filter(|a| identity.read.permits(&a.alert.sensor_id))
        .take(SNAPSHOT_ALERTS)
        .map(payload::AlertItem::from)
        .collect();
    let recorders = &sources.recorders;
    let totals = activity.totals();
    let calls = sees_calls(identity);
    Ok(payload::Snapshot {
        server_time_ms: payload::millis(SystemTime::now()),
        login_required: view.sessions.login_required(),
        identity: identity.label.to_string(),
        sees_calls: calls,
        sensors: stats.iter().map(payload::SensorRow::from).collect(),
        more_sensors,
        series,
        alerts,
        calls: if calls {
            payload::calls(&recorders.rpcz.snapshot(Instant::now()))
        } else {
            Vec::new()
        },
        in_flight: if calls {
            (&recorders.calls.snapshot(ticker::IN_FLIGHT_SHOWN)).into()
        } else {
            payload::InFlightView::default()
        },
        traces: calls
            .then(|| payload::traces(&recorders.traces.snapshot(), sources.jaeger.as_deref())),
        store: payload::store(
            &totals,
            &totals,
            sources.store.backlog(),
            std::time::Duration::from_secs(1),
        ),
    })
}

#[derive(Deserialize)]
struct SeriesQuery {
    sensor: String,
    range: String,
}

/// `GET /view/api/series?sensor=ID&range=15m|1h|24h`.
async fn series_handler(
    State(view): ViewState,
    headers: HeaderMap,
    Query(query): Query<SeriesQuery>,
) -> Response {
    let Some((_, identity)) = view.session(&headers) else {
        return unauthorized();
    };
    if !identity.read.permits(&query.sensor) {
        return (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({"error": "your token may not read that sensor"})),
        )
            .into_response();
    }
    let Some(range) = Range::parse(&query.range) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "range must be 15m, 1h or 24h"})),
        )
            .into_response();
    };
    match series::read(&*view.sources.store, &query.sensor, range, unix_now()).await {
        Ok(series) => Json(series).into_response(),
        Err(e) => store_failed(e),
    }
}

/// `GET /view/api/trace/{id}`: one kept trace as a span tree.
async fn trace(State(view): ViewState, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    let Some((_, identity)) = view.session(&headers) else {
        return unauthorized();
    };
    if !sees_calls(&identity) {
        return (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({"error": "traces are shown to tokens that may read every sensor"})),
        )
            .into_response();
    }
    match view.sources.recorders.traces.get(id) {
        Some(record) => {
            Json(payload::trace(&record, view.sources.jaeger.as_deref())).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "that trace is no longer kept"})),
        )
            .into_response(),
    }
}

/// `GET /view/events`: the page's one event stream. `hello` first (the
/// page then fetches its snapshot), a `tick` a second, `logout` when the
/// session ended, `bye` when the server shuts down.
async fn events(State(view): ViewState, headers: HeaderMap) -> Response {
    if !guard::same_origin(&headers) {
        return guard::cross_origin_refused();
    }
    let Some((session, identity)) = view.session(&headers) else {
        return unauthorized();
    };
    if view.streams.fetch_add(1, Ordering::AcqRel) >= MAX_STREAMS {
        view.streams.fetch_sub(1, Ordering::AcqRel);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many pages are open on this server; close one and reload\n",
        )
            .into_response();
    }
    let ticks = PageTicks::new(&view.sources, identity);
    Sse::new(stream(view, session, ticks))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Gives back the stream's place when the stream is dropped.
struct StreamSlot(Arc<LiveView>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

enum Step {
    Hello,
    Ticks,
    Done,
}

struct PageStream {
    slot: StreamSlot,
    ticks: PageTicks,
    interval: tokio::time::Interval,
    step: Step,
}

fn stream(
    view: Arc<LiveView>,
    session: SessionId,
    ticks: PageTicks,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let mut interval = tokio::time::interval(ticker::TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let page = PageStream {
        slot: StreamSlot(view),
        ticks,
        interval,
        step: Step::Hello,
    };
    futures_util::stream::unfold(page, move |mut page| async move {
        match page.step {
            Step::Done => None,
            Step::Hello => {
                page.interval.reset();
                page.step = Step::Ticks;
                Some((Ok(Event::default().event("hello").data("{}")), page))
            }
            Step::Ticks => loop {
                let view = page.slot.0.clone();
                tokio::select! {
                    _ = page.interval.tick() => {}
                    _ = view.draining.cancelled() => {
                        page.step = Step::Done;
                        return Some((Ok(Event::default().event("bye").data("{}")), page));
                    }
                }
                let Some(identity) = view.sessions.check(session, Instant::now()) else {
                    page.step = Step::Done;
                    return Some((Ok(Event::default().event("logout").data("{}")), page));
                };
                let calls = sees_calls(&identity);
                page.ticks.set_identity(identity);
                match page.ticks.next(&view.sources).await {
                    Ok(mut tick) => {
                        if !calls {
                            tick.calls.clear();
                            tick.in_flight = payload::InFlightView::default();
                            tick.traces = None;
                        }
                        match serde_json::to_string(&tick) {
                            Ok(json) => {
                                return Some((Ok(Event::default().event("tick").data(json)), page));
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "live view: a tick could not be serialized")
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "live view: the store could not be read this tick")
                    }
                }
            },
        }
    })
}
