//! The live view on a real `sensorhub serve`'s HTTP listener, read as the
//! page reads it: the login form and its refusals, the session cookie, the
//! snapshot and the event stream's ticks (a stored reading in its sensor's
//! series, an alert in the feed, a chat in flight with growing counts, a
//! failed call among the traces' errors with its span tree), the `read=`
//! scope of the token a session logged in with, the security headers, and
//! no token anywhere in what the server sends or logs.

use std::time::Duration;

use sensorhub_proto::SensorReading;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::{
    spawned_server::{Serve, SpawnedServer, client},
    view_client::View,
};

const TOKEN: &str = "view-test-token-3a1f9c";
/// A tick is due every second; allow a busy machine its delays.
const WITHIN: Duration = Duration::from_secs(10);

fn unix_now() -> i64 {
    sensorhub_grpc::testing::unix_now()
}

fn reading(sensor: &str, temperature: f64, timestamp: i64) -> SensorReading {
    sensorhub_grpc::testing::reading(sensor, temperature, timestamp)
}

fn serve(dir: &tempfile::TempDir) -> SpawnedServer {
    Serve::insecure(&dir.path().join("data"), TOKEN).start()
}

fn logged_in(server: &SpawnedServer) -> View {
    let mut view = View::new(server.http);
    view.login(TOKEN);
    view
}

/// `GET /` without a session is the login form; a wrong token gets it again
/// with a message; a right one a session cookie (not the token) that the
/// payloads need; other sites' requests and a guesser are refused.
#[tokio::test]
async fn the_login_form_its_refusals_and_the_session_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir);
    let mut view = View::new(server.http);

    let form = view.get("/");
    assert_eq!(form.status, 200);
    assert!(
        form.body
            .contains(r#"<form method="post" action="/login">"#)
    );
    assert!(form.body.contains(r#"name="token""#), "{}", form.body);
    let csp = form.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(form.header("x-content-type-options"), Some("nosniff"));

    for path in ["/view/api/snapshot", "/view/events", "/view/api/trace/1"] {
        let refused = view.get(path);
        assert_eq!(refused.status, 401, "{path} without a session: {refused:?}");
    }
    let series = view.get("/view/api/series?sensor=a&range=15m");
    assert_eq!(series.status, 401);

    let origin = format!("http://127.0.0.1:{}", server.http);
    let wrong = view.post_login("not-the-token", &[("origin", &origin)]);
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("not a token this server accepts"));
    assert!(wrong.body.contains(r#"name="token""#), "the form again");
    assert!(wrong.header("set-cookie").is_none());

    for (name, value) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let refused = view.post_login(TOKEN, &[(name, value)]);
        assert_eq!(refused.status, 403, "{name}: {value}: {refused:?}");
        assert!(refused.header("set-cookie").is_none());
    }

    let answer = view.login(TOKEN);
    let cookie = answer.header("set-cookie").unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(!cookie.contains(TOKEN), "{cookie}");
    assert_eq!(answer.header("location"), Some("/"));
    let page = view.get("/");
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains(r#"<script type="module" src="/view/app.js">"#)
    );
    assert!(!page.body.contains("<script>"), "no inline script");
    assert_eq!(view.get("/view/api/snapshot").status, 200);
    let cross = view.get_with("/view/events", &[("sec-fetch-site", "cross-site")]);
    assert_eq!(cross.status, 403, "the stream refuses another site's page");

    // A forged or stale cookie is no session.
    let forged = View {
        port: server.http,
        cookie: Some(format!("sensorhub_session={}", "0".repeat(32))),
    };
    assert_eq!(forged.get("/view/api/snapshot").status, 401);

    // Logins are limited per peer: a burst, then 429 with Retry-After, even
    // for the right token (a guesser learns nothing while limited).
    let mut limited = None;
    for _ in 0..10 {
        let answer = View::new(server.http).post_login("guess", &[]);
        if answer.status == 429 {
            limited = Some(answer);
            break;
        }
        assert_eq!(answer.status, 401);
    }
    let limited = limited.expect("repeated failures are limited");
    assert!(limited.header("retry-after").is_some());
    assert!(limited.body.contains("Too many attempts"));
    assert_eq!(View::new(server.http).post_login(TOKEN, &[]).status, 429);
    // The session already open is not affected.
    assert_eq!(view.get("/view/api/snapshot").status, 200);
}

/// A reading stored before the page opened is in its sensor's row and
/// series; one stored after comes in a tick's points; an alert in the feed.
#[tokio::test]
async fn stored_readings_reach_the_series_and_alerts_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    readings_and_alerts(serve(&dir)).await;
}

/// The same on the PostgreSQL engine: rows, series, tail and alerts come
/// through the `Store` trait.
#[tokio::test]
async fn on_postgresql_stored_readings_reach_the_series_and_alerts_the_feed() {
    let url = sensorhub_grpc::testing::fresh_database_url().await;
    readings_and_alerts(Serve::insecure_on_database(&url, TOKEN).start()).await;
}

async fn readings_and_alerts(server: SpawnedServer) {
    let mut sensors = client(&server.url(), TOKEN).await;
    let now = unix_now();
    sensors
        .send_single_reading(reading("garage", 21.5, now - 5))
        .await
        .expect("stored");

    let view = logged_in(&server);
    let snapshot = view.snapshot();
    let row = &snapshot["sensors"][0];
    assert_eq!(row["id"], "garage");
    assert_eq!(row["count"], 1);
    assert_eq!(row["last"], 21.5);
    let series = &snapshot["series"][0];
    assert_eq!(series["sensor"], "garage");
    assert_eq!(series["points"][0], serde_json::json!([now - 5, 21.5]));
    let seq = series["seq"].as_u64().unwrap();

    let events = view.events();
    assert_eq!(events.status, 200);
    assert_eq!(events.next(WITHIN).expect("hello").name, "hello");
    sensors
        .send_single_reading(reading("garage", 23.25, now))
        .await
        .expect("stored");
    let point = events.tick_until(WITHIN, |tick| {
        tick["points"]["garage"]
            .as_array()
            .and_then(|points| points.iter().find(|p| p[1] == 23.25).cloned())
    });
    assert_eq!(point[0], now);
    assert!(
        point[2].as_u64().unwrap() > seq,
        "after the series: {point}"
    );

    // 50 °C is above the default maximum: an alert, in the next ticks and
    // in a new snapshot, newest first.
    sensors
        .send_single_reading(reading("garage", 50.0, now + 1))
        .await
        .expect("stored");
    // The row and the alert come in the same tick, or the alert first
    // (it is raised as the commit is made durable, before queries see it).
    let (mut alert, mut row) = (None, None);
    events.tick_until(WITHIN, |tick| {
        if let Some(first) = tick["alerts"].as_array().and_then(|a| a.first()) {
            alert = Some(first.clone());
        }
        if let Some(found) = tick["sensors"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["id"] == "garage" && r["count"] == 3))
        {
            row = Some(found.clone());
        }
        (alert.is_some() && row.is_some()).then_some(())
    });
    let (alert, row) = (alert.unwrap(), row.unwrap());
    assert_eq!(alert["sensor"], "garage");
    assert_eq!(alert["rule"], "above_max");
    assert_eq!(alert["temperature"], 50.0);
    let feed = &view.snapshot()["alerts"];
    assert_eq!(feed[0]["number"], alert["number"]);
    assert_eq!(row["alerts"], 1);
}

/// A chat is listed in flight while it runs, its message counts growing,
/// and gone once it ends; a failed call is among the errors, and opens as
/// its trace's span tree.
#[tokio::test]
async fn a_chat_in_flight_and_a_failed_call_with_its_trace() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir);
    let view = logged_in(&server);
    let mut chat_client = client(&server.url(), TOKEN).await;
    let (tx, rx) = mpsc::channel::<SensorReading>(4);
    let mut replies = chat_client
        .sensor_chat(ReceiverStream::new(rx))
        .await
        .expect("chat")
        .into_inner();
    let in_flight = |view: &View| {
        let snapshot = view.snapshot();
        snapshot["in_flight"]["calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["method"] == "SensorService/SensorChat")
            .map(|c| (c["received"].as_u64().unwrap(), c["sent"].as_u64().unwrap()))
    };
    assert_eq!(in_flight(&view), Some((0, 0)), "listed before any message");
    let now = unix_now();
    for n in 1..=3u64 {
        tx.send(reading("chat", 20.0 + n as f64, now))
            .await
            .unwrap();
        replies.message().await.unwrap().expect("a reply");
        assert_eq!(in_flight(&view), Some((n, n)));
    }
    let events = view.events();
    let listed = events.tick_until(WITHIN, |tick| {
        tick["in_flight"]["calls"]
            .as_array()?
            .iter()
            .find(|c| c["method"] == "SensorService/SensorChat")
            .cloned()
    });
    assert_eq!(listed["received"], 3);
    assert!(
        listed["trace_id"].as_str().is_some_and(|t| t.len() == 32),
        "{listed}"
    );
    drop(tx);
    while replies.message().await.unwrap().is_some() {}
    events.tick_until(WITHIN, |tick| {
        let calls = tick["in_flight"]["calls"].as_array()?;
        (!calls
            .iter()
            .any(|c| c["method"] == "SensorService/SensorChat"))
        .then_some(())
    });
    assert_eq!(in_flight(&view), None, "gone once it ended");

    // A reading the server refuses: INVALID_ARGUMENT, kept among the errors.
    let refused = chat_client
        .send_single_reading(reading("bad", f64::NAN, now))
        .await
        .expect_err("NaN is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let error = events.tick_until(WITHIN, |tick| {
        tick["traces"]["errors"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == "SensorService/SendSingleReading")
            .cloned()
    });
    assert_eq!(error["status"], "INVALID_ARGUMENT");
    let trace_id = error["trace_id"].as_str().expect("its trace id").to_owned();
    let trace = view.get(&format!("/view/api/trace/{}", error["id"]));
    assert_eq!(trace.status, 200, "{trace:?}");
    let trace = trace.json();
    assert_eq!(trace["summary"]["trace_id"], trace_id);
    let root = &trace["spans"][0];
    assert_eq!(root["name"], "SensorService/SendSingleReading");
    assert_eq!(
        (root["depth"].as_u64(), root["error"].as_bool()),
        (Some(0), Some(true))
    );
    assert!(
        root["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|kv| kv[0] == "rpc.method" && kv[1] == "SensorService/SendSingleReading"),
        "{root}"
    );
    // The rpcz table counts it.
    let calls = view.snapshot()["calls"].clone();
    let row = calls
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["method"] == "SensorService/SendSingleReading" && r["status"] == "INVALID_ARGUMENT"
        })
        .cloned()
        .unwrap_or_else(|| panic!("{calls:#}"));
    assert_eq!(row["minute"]["calls"], 1);
}

/// A session acts as its token's identity: a `read=` scope shows only the
/// sensors it permits (rows, series, alerts), and not the calls or traces,
/// which show every caller's.
#[tokio::test]
async fn a_scoped_token_sees_only_its_sensors() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("{TOKEN} name=ops\nscoped-token-77b2 name=garage-viewer read=garage-*\n"),
    )
    .unwrap();
    let mut serve = Serve::new();
    serve
        .command()
        .args(["--insecure", "--shutdown-grace", "2s", "--data"])
        .arg(dir.path().join("data"))
        .arg("--tokens-file")
        .arg(&tokens);
    let server = serve.start();
    let mut sensors = client(&server.url(), TOKEN).await;
    let now = unix_now();
    for sensor in ["garage-1", "kitchen"] {
        sensors
            .send_single_reading(reading(sensor, 50.0, now))
            .await
            .expect("stored");
    }

    let mut scoped = View::new(server.http);
    scoped.login("scoped-token-77b2");
    let snapshot = scoped.snapshot();
    let ids: Vec<_> = snapshot["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, ["garage-1"]);
    let alerted: Vec<_> = snapshot["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["sensor"].clone())
        .collect();
    assert_eq!(alerted, ["garage-1"]);
    assert_eq!(snapshot["identity"], "garage-viewer");
    assert_eq!(snapshot["sees_calls"], false);
    assert!(snapshot["calls"].as_array().unwrap().is_empty());
    assert!(snapshot["traces"].is_null());
    assert_eq!(
        scoped
            .get("/view/api/series?sensor=kitchen&range=1h")
            .status,
        403
    );
    assert_eq!(
        scoped
            .get("/view/api/series?sensor=garage-1&range=1h")
            .status,
        200
    );
    assert_eq!(scoped.get("/view/api/trace/1").status, 403);

    let all = logged_in(&server).snapshot();
    assert_eq!(all["sensors"].as_array().unwrap().len(), 2);
    assert_eq!(all["sees_calls"], true);
}

/// No token in the page, the payloads, the event stream or the log, for a
/// right and a wrong login alike.
#[tokio::test]
async fn no_token_in_the_page_the_stream_or_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::insecure(&dir.path().join("data"), TOKEN);
    serve.command().env("RUST_LOG", "debug");
    let server = serve.start();
    let wrong = "wrong-token-5e9d-do-not-log";
    let mut sensors = client(&server.url(), TOKEN).await;
    sensors
        .send_single_reading(reading("garage", 21.0, unix_now()))
        .await
        .expect("stored");
    let refused = View::new(server.http).post_login(wrong, &[]);
    assert_eq!(refused.status, 401);
    let view = logged_in(&server);
    let mut seen = vec![
        refused.body,
        view.get("/").body,
        view.snapshot().to_string(),
    ];
    for asset in ["/view/app.js", "/view/app.css"] {
        seen.push(view.get(asset).body);
    }
    let events = view.events();
    for _ in 0..3 {
        seen.push(events.next(WITHIN).expect("an event").data);
    }
    let snapshot = view.snapshot();
    for trace in snapshot["traces"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
    {
        seen.push(view.get(&format!("/view/api/trace/{}", trace["id"])).body);
    }
    seen.push(server.log());
    for (i, text) in seen.iter().enumerate() {
        for secret in [TOKEN, wrong] {
            assert!(!text.contains(secret), "{secret} in item {i}: {text}");
        }
    }
    assert!(
        server.log().contains("sensorhub serving"),
        "the log was read"
    );
}
