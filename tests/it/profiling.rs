//! `GET /debug/pprof/profile` on a real `sensorhub serve --pprof`: a CPU
//! profile of the server under load, in pprof's gzipped protobuf (decoded
//! here with the pprof crate's own types) or as an SVG flame graph; only
//! with a token of the server's set, one at a time, at most 60 s, and rate
//! limited before the token is looked at. Off without `--pprof`, refused
//! under `--no-auth`.

use std::{
    io::Read as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use pprof::protos::Message as _;
use sensorhub_grpc::testing::TEST_TOKEN;

use crate::support::{
    attacker::{ServeProcess, normal_call_on},
    spawned_server::Serve,
};

/// The status, headers and body of a GET of `path` on `port`, with
/// `Authorization: Bearer <token>` when `token` is given.
async fn get(
    port: u16,
    path: &str,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let token = token.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut request = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .unwrap()
            .get(&url);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = request.send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.bytes().unwrap().to_vec())
    })
    .await
    .unwrap()
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// Calls the server in a loop until the returned flag is set, so that a
/// profile has the server's own frames in it.
struct Busy {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

fn keep_busy(server: &ServeProcess) -> Busy {
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let config = server.client_config();
    let (flag, count) = (stop.clone(), calls.clone());
    let task = tokio::spawn(async move {
        let mut client = sensorhub_grpc::connect(&config).await.expect("connect");
        while !flag.load(Ordering::Relaxed) {
            normal_call_on(&mut client, "profiled")
                .await
                .expect("a call");
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    Busy { stop, calls, task }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_holder_gets_a_cpu_profile_of_the_busy_server_one_at_a_time() {
    let server = ServeProcess::start(&["--pprof"]);
    let http = server.http().port();

    // No token, or one the server does not accept: 401 and how to ask.
    let (status, headers, body) = get(http, "/debug/pprof/profile?seconds=1", None).await;
    assert_eq!(status, 401, "{}", text(&body));
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"sensorhub\"");
    assert!(
        text(&body).contains("Authorization: Bearer"),
        "{}",
        text(&body)
    );
    let (status, _, _) = get(
        http,
        "/debug/pprof/profile?seconds=1",
        Some("not-the-token"),
    )
    .await;
    assert_eq!(status, 401);
    // Too long, or a format it does not write: 400 and what it accepts.
    let (status, _, body) = get(http, "/debug/pprof/profile?seconds=61", Some(TEST_TOKEN)).await;
    assert_eq!(status, 400, "{}", text(&body));
    assert!(text(&body).contains("from 1 to 60"), "{}", text(&body));

    // A profile of 3 s while the server is busy; a second request meanwhile
    // is told one is being taken.
    let load = keep_busy(&server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first =
        tokio::spawn(
            async move { get(http, "/debug/pprof/profile?seconds=3", Some(TEST_TOKEN)).await },
        );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (status, _, body) = get(http, "/debug/pprof/profile?seconds=1", Some(TEST_TOKEN)).await;
    assert_eq!(status, 409, "{}", text(&body));
    let (status, headers, body) = first.await.unwrap();
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"profile.pb.gz\""
    );
    // gzip, then pprof's protobuf.
    assert_eq!(&body[..2], [0x1f, 0x8b], "not gzip");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut raw)
        .unwrap();
    let profile = pprof::protos::Profile::decode(raw.as_slice()).expect("a pprof profile");
    let string = |i: i64| profile.string_table[i as usize].as_str();
    let types: Vec<(&str, &str)> = profile
        .sample_type
        .iter()
        .map(|t| (string(t.ty), string(t.unit)))
        .collect();
    assert!(types.contains(&("cpu", "nanoseconds")), "{types:?}");
    let calls = load.calls.load(Ordering::Relaxed);
    assert!(!profile.sample.is_empty(), "no samples over {calls} calls");
    // 100 Hz: the period is 10 ms of CPU.
    assert_eq!(profile.period, 10_000_000, "period {}", profile.period);
    let functions: Vec<&str> = profile.function.iter().map(|f| string(f.name)).collect();
    assert!(
        functions.iter().any(|f| f.contains("sensorhub")),
        "no sensorhub frame among {} functions over {calls} calls",
        functions.len()
    );

    // The same as a flame graph.
    let (status, headers, body) = get(
        http,
        "/debug/pprof/profile?seconds=1&format=flamegraph",
        Some(TEST_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(headers["content-type"], "image/svg+xml");
    assert!(text(&body).contains("<svg"), "{}", text(&body));
    assert!(
        text(&body).contains("sensorhub"),
        "no sensorhub frame in the SVG"
    );
    load.stop.store(true, Ordering::Relaxed);
    load.task.await.unwrap();

    // An idle server: the SVG says it saw no samples.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, body) = get(
        http,
        "/debug/pprof/profile?seconds=1&format=flamegraph",
        Some(TEST_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{}", text(&body));
    assert!(text(&body).contains("<svg"), "{}", text(&body));
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_rate_limited_before_the_token_is_checked() {
    let server = ServeProcess::start(&["--pprof"]);
    let http = server.http().port();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let (status, headers, _) = get(http, "/debug/pprof/profile?seconds=1", Some("guess")).await;
        if status == 429 {
            assert_eq!(headers["retry-after"], "1");
        }
        statuses.push(status);
    }
    // A burst of 5, then one a second: most guesses are not even checked.
    assert!(statuses[..5].iter().all(|&s| s == 401), "{statuses:?}");
    assert!(
        statuses.iter().filter(|&&s| s == 429).count() >= 5,
        "{statuses:?}"
    );
}

/// A sensor's scoped token is accepted for its calls but may not profile.
#[tokio::test(flavor = "multi_thread")]
async fn a_scoped_token_may_not_profile() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(
        &file,
        format!(
            "{TEST_TOKEN}\nscoped-sensor-token-71c2 name=kitchen write=kitchen-* read=kitchen-*\n"
        ),
    )
    .unwrap();
    let mut serve = Serve::new();
    serve
        .command()
        .args(["--insecure", "--pprof", "--tokens-file"])
        .arg(&file)
        .arg("--data")
        .arg(dir.path().join("data"));
    let server = serve.start();
    let (status, _, body) = get(
        server.http,
        "/debug/pprof/profile?seconds=1",
        Some("scoped-sensor-token-71c2"),
    )
    .await;
    assert_eq!(status, 403, "{}", text(&body));
    assert!(
        text(&body).contains("`kitchen` may not profile"),
        "{}",
        text(&body)
    );
    let (status, _, body) = get(
        server.http,
        "/debug/pprof/profile?seconds=1",
        Some(TEST_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{}", text(&body));
}

#[tokio::test(flavor = "multi_thread")]
async fn off_without_the_flag_and_refused_without_tokens() {
    let server = ServeProcess::start(&[]);
    let (status, _, _) = get(
        server.http().port(),
        "/debug/pprof/profile?seconds=1",
        Some(TEST_TOKEN),
    )
    .await;
    assert_eq!(status, 404);

    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::new();
    serve
        .command()
        .args(["--insecure", "--no-auth", "--pprof", "--data"])
        .arg(dir.path().join("data"));
    let open = serve.start();
    let (status, _, body) = get(open.http, "/debug/pprof/profile?seconds=1", None).await;
    assert_eq!(status, 403, "{}", text(&body));
    assert!(text(&body).contains("--no-auth"), "{}", text(&body));
}
