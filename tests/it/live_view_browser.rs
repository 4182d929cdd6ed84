//! The live view in a real browser: Debian's headless Chromium, driven
//! through chromedriver (WebDriver, with `fantoccini`), against a real
//! `sensorhub serve`. It opens the page, logs in through the form, sees every
//! sensor's row and chart, sees a reading sent after the page loaded reach
//! the table and the chart within 2 s, and saves a screenshot to
//! `target/live-view.png` (the README's `docs/live-view.png` is a copy);
//! then, at a phone's width, checks that the page is no wider than the
//! window and saves `target/live-view-phone.png`.
//!
//! It fails, never skips, when Chromium or chromedriver is missing:
//! `cargo xtask test` installs both (xtask/src/packages.rs).

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{ClientBuilder, Locator};
use sensorhub_proto::SensorReading;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::spawned_server::{Serve, client};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const TOKEN: &str = "browser-test-token-6c0e21";
const SENSORS: [&str; 4] = [
    "sensor-chat",
    "sensor-client-stream",
    "sensor-server-stream",
    "sensor-unary",
];

/// chromedriver on a port of its own choosing, stopped on drop.
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    fn start() -> Chromedriver {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: run `cargo xtask test`, which installs Debian's chromium and chromium-driver"
            );
        }
        let mut child = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let stdout = child.stdout.take().expect("its stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("chromedriver said on which port it listens")
                .expect("read chromedriver's output");
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                break rest.trim_end_matches('.').parse().expect("a port number");
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Chromedriver { child, port }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("live-view.png")
}

/// Polls `check` until it gives `Some`, at most `limit`.
async fn until<T>(
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return (value, start.elapsed());
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_logs_in_and_watches_a_reading_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::insecure(&dir.path().join("data"), TOKEN).start();

    // Four sensors with a quarter of an hour of history, one alert, a
    // refused reading (among the errors), and a chat left open (in flight)
    // that keeps sending (the store panel has commits to show).
    let mut sensors = client(&server.url(), TOKEN).await;
    let now = sensorhub_grpc::testing::unix_now();
    for (i, sensor) in SENSORS.iter().enumerate() {
        for step in 0..90i64 {
            let wave = ((step as f64) / 12.0 + i as f64).sin();
            let temperature = 21.0 + i as f64 * 0.8 + wave * 1.5;
            sensors
                .send_single_reading(sensorhub_grpc::testing::reading(
                    sensor,
                    (temperature * 100.0).round() / 100.0,
                    now - 900 + step * 10,
                ))
                .await
                .expect("stored");
        }
    }
    sensors
        .send_single_reading(sensorhub_grpc::testing::reading(
            "sensor-unary",
            47.5,
            now - 20,
        ))
        .await
        .expect("stored");
    let _ = sensors
        .send_single_reading(sensorhub_grpc::testing::reading(
            "sensor-unary",
            f64::NAN,
            now,
        ))
        .await
        .expect_err("NaN is refused");
    let mut chat_client = client(&server.url(), TOKEN).await;
    let (chat_tx, chat_rx) = mpsc::channel::<SensorReading>(4);
    let mut replies = chat_client
        .sensor_chat(ReceiverStream::new(chat_rx))
        .await
        .expect("chat")
        .into_inner();
    let (stop_chat, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let chat = tokio::spawn(async move {
        for n in 0u32.. {
            let temperature = 22.0 + (f64::from(n) / 5.0).sin() * 0.6;
            let reading = sensorhub_grpc::testing::reading(
                "sensor-chat",
                (temperature * 100.0).round() / 100.0,
                sensorhub_grpc::testing::unix_now(),
            );
            if chat_tx.send(reading).await.is_err() {
                break;
            }
            replies.message().await.unwrap().expect("a reply");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = &mut stopped => break,
            }
        }
        drop(chat_tx);
        while let Ok(Some(_)) = replies.message().await {}
    });

    let driver = Chromedriver::start();
    let profile = tempfile::tempdir().unwrap();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
                "--hide-scrollbars",
                "--window-size=1280,1200",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session through chromedriver");

    let page = format!("http://127.0.0.1:{}/", server.http);
    browser.goto(&page).await.expect("open the page");
    let form = browser
        .form(Locator::Css(r#"form[action="/login"]"#))
        .await
        .expect("the login form");
    let input = browser
        .find(Locator::Css(r#"input[name="token"]"#))
        .await
        .expect("the token field");
    input.send_keys(TOKEN).await.unwrap();
    form.submit().await.expect("log in");

    // Every sensor's row and chart.
    let (rows, _) = until(Duration::from_secs(20), "every sensor's row", async || {
        let rows = browser
            .find_all(Locator::Css("#sensor-table tbody tr[data-sensor]"))
            .await
            .ok()?;
        let mut ids = Vec::new();
        for row in rows {
            ids.push(row.attr("data-sensor").await.ok()??);
        }
        (ids.len() == SENSORS.len()).then_some(ids)
    })
    .await;
    assert_eq!(rows, SENSORS);
    for sensor in SENSORS {
        let chart = browser
            .find(Locator::Css(&format!(r#"svg[data-sensor="{sensor}"]"#)))
            .await
            .unwrap_or_else(|e| panic!("no chart of {sensor}: {e}"));
        let points: usize = chart
            .attr("data-points")
            .await
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        // A quarter of an hour of readings, less the oldest that leave the range.
        assert!(points >= 80, "{sensor}'s chart has {points} points");
    }
    let status = browser.find(Locator::Id("status")).await.unwrap();
    until(
        Duration::from_secs(10),
        "the event stream live",
        async || status.text().await.ok()?.starts_with("live").then_some(()),
    )
    .await;

    // A reading sent now reaches the table and the chart within 2 s.
    sensors
        .send_single_reading(sensorhub_grpc::testing::reading(
            "sensor-server-stream",
            26.875,
            sensorhub_grpc::testing::unix_now(),
        ))
        .await
        .expect("stored");
    let sent = Instant::now();
    let row = Locator::Css(r#"#sensor-table tr[data-sensor="sensor-server-stream"] td.last"#);
    let chart = Locator::Css(r#"svg[data-sensor="sensor-server-stream"]"#);
    until(
        Duration::from_secs(2),
        "the new reading in the table",
        async || {
            let cell = browser.find(row).await.ok()?;
            (cell.text().await.ok()? == "26.88").then_some(())
        },
    )
    .await;
    until(
        Duration::from_secs(2),
        "the new reading in the chart",
        async || {
            let svg = browser.find(chart).await.ok()?;
            (svg.attr("data-last").await.ok()?? == "26.875").then_some(())
        },
    )
    .await;
    let took = sent.elapsed();
    assert!(took <= Duration::from_secs(2), "the reading took {took:?}");

    // The chat in flight, the alert and the refused call.
    until(Duration::from_secs(5), "the chat in flight", async || {
        let calls = browser
            .find_all(Locator::Css(
                r#"#in-flight-table tr[data-method="SensorService/SensorChat"]"#,
            ))
            .await
            .ok()?;
        (!calls.is_empty()).then_some(())
    })
    .await;
    until(
        Duration::from_secs(5),
        "the alert in the feed",
        async || {
            let alerts = browser
                .find_all(Locator::Css("#alert-feed li"))
                .await
                .ok()?;
            (!alerts.is_empty()).then_some(())
        },
    )
    .await;
    until(
        Duration::from_secs(5),
        "the refused call among the errors",
        async || {
            let errors = browser
                .find_all(Locator::Css("#trace-errors li"))
                .await
                .ok()?;
            (!errors.is_empty()).then_some(())
        },
    )
    .await;

    // Let the charts and the tables settle for the picture.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let png = browser.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = screenshot_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());

    // At a phone's width the page is one column and never wider than the
    // screen (wide tables scroll inside their own box).
    browser
        .set_window_size(390, 1400)
        .await
        .expect("a phone-sized window");
    let (width, client) = until(Duration::from_secs(5), "the page at phone width", async || {
        let sizes = browser
            .execute(
                "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]",
                vec![],
            )
            .await
            .ok()?;
        let (scroll, client) = (sizes[0].as_u64()?, sizes[1].as_u64()?);
        (client < 500).then_some((scroll, client))
    })
    .await
    .0;
    assert!(
        width <= client,
        "the page is {width} px wide in a {client} px window"
    );
    let phone = path.with_file_name("live-view-phone.png");
    std::fs::write(&phone, browser.screenshot().await.expect("a screenshot")).unwrap();

    browser.close().await.expect("end the session");
    let _ = stop_chat.send(());
    chat.await.expect("the chat ends cleanly");
}
