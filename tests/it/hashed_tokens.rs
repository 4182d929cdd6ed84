//! Secrets at rest as hashes (issue 20): `sensorhub token new` prints a
//! random token once and the `sha256:` line that accepts it; that line
//! authenticates the token it hashes and no other (not the digest itself,
//! not a near miss), within the line's scope; and the plain token appears
//! in no log line, status message or `/metrics` (`telemetry_export.rs`
//! searches the exported spans, metrics and logs for it too).

use std::time::Duration;

use sensorhub_grpc::testing::{CALL_TIMEOUT, reading, unix_now};
use tonic::Code;

use crate::support::{
    http,
    spawned_server::{self, Serve, sensorhub},
};

/// `sensorhub token new ARGS`: the token and the line.
fn token_new(args: &[&str]) -> (String, String) {
    let mut all = vec!["token", "new"];
    all.extend_from_slice(args);
    let out = sensorhub(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "two lines on stdout: {stdout}");
    let token = lines[0]
        .strip_prefix("token: ")
        .expect("the token line")
        .to_owned();
    (token, lines[1].to_owned())
}

#[test]
fn hashed_tokens_token_new_prints_a_random_token_and_its_line_once() {
    let (token, line) = token_new(&[
        "--name",
        "kitchen",
        "--write",
        "kitchen-*,hall",
        "--read",
        "kitchen-*",
    ]);
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    let digest = sensorhub_grpc::auth::tokens_file::hex(
        &sensorhub_grpc::auth::tokens_file::digest(token.as_bytes()),
    );
    assert_eq!(
        line,
        format!("sha256:{digest} name=kitchen write=kitchen-*,hall read=kitchen-*")
    );
    assert!(!line.contains(&token));
    let (other, _) = token_new(&[]);
    assert_ne!(token, other, "every token is new");

    let refused = sensorhub(&["token", "new", "--write", "kitchen-*,"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("empty pattern"));
}

#[tokio::test]
async fn hashed_tokens_a_sha256_line_accepts_its_token_only_and_the_token_is_never_shown() {
    let (token, line) = token_new(&["--name", "kitchen-sensors", "--write", "kitchen-*"]);
    let (admin, admin_line) = token_new(&["--name", "admin"]);
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("# made by sensorhub token new\n{admin_line}\n{line}\n"),
    )
    .unwrap();
    let mut serve = Serve::new();
    serve
        .command()
        .args(["--insecure", "--shutdown-grace", "2s"])
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg("--tokens-file")
        .arg(&tokens);
    let server = serve.start();
    let url = format!("http://127.0.0.1:{}", server.grpc);
    let t = unix_now() - 10;

    let mut kitchen = spawned_server::client(&url, &token).await;
    let call = |sensor: &'static str| reading(sensor, 20.0, t);
    tokio::time::timeout(CALL_TIMEOUT, kitchen.send_single_reading(call("kitchen-1")))
        .await
        .unwrap()
        .expect("the token its line hashes");
    let denied = tokio::time::timeout(CALL_TIMEOUT, kitchen.send_single_reading(call("garage-1")))
        .await
        .unwrap()
        .expect_err("outside its scope");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("kitchen-sensors"),
        "{}",
        denied.message()
    );
    let mut statuses = vec![denied.message().to_owned()];

    let digest = line
        .split_whitespace()
        .next()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_owned();
    let mut near = token.clone().into_bytes();
    near[63] = if near[63] == b'0' { b'1' } else { b'0' };
    let near = String::from_utf8(near).unwrap();
    for wrong in [
        digest.as_str(),
        &format!("sha256:{digest}"),
        &near,
        &token[..63],
        &token.to_uppercase(),
    ] {
        let mut client = spawned_server::client(&url, wrong).await;
        let refused =
            tokio::time::timeout(CALL_TIMEOUT, client.send_single_reading(call("kitchen-1")))
                .await
                .unwrap()
                .expect_err("only the token itself");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        statuses.push(refused.message().to_owned());
    }
    let mut admin_client = spawned_server::client(&url, &admin).await;
    tokio::time::timeout(
        CALL_TIMEOUT,
        admin_client.send_single_reading(call("garage-1")),
    )
    .await
    .unwrap()
    .expect("the admin line is unscoped");

    let (status, metrics) = http::get(server.http, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("sensorhub_calls_denied"), "{metrics}");
    server.signal("HUP");
    server.wait_for_log("tokens reloaded", 1, Duration::from_secs(10));
    let (out, _) = server.terminate(Duration::from_secs(15));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !log.contains("holds tokens themselves"),
        "a hashed file is no plain file: {log}"
    );
    assert!(
        log.contains("kitchen-sensors"),
        "the label is logged with the refusal: {log}"
    );
    for secret in [&token, &admin, &near] {
        for (what, text) in [("log", &log), ("/metrics", &metrics)] {
            assert!(
                !text.contains(secret.as_str()),
                "a token in the {what}: {text}"
            );
        }
        for message in &statuses {
            assert!(
                !message.contains(secret.as_str()),
                "a token in a status: {message}"
            );
        }
    }
}
