//! The tokens file's lines (issue 20): a line the server cannot use refuses
//! the file with its line number and never its token, at start (the server
//! does not start) and on SIGHUP (the old set stays, the log says why); a
//! call in flight keeps the scope it started with; plain tokens in the file
//! are warned about once, at start.

use std::{path::Path, time::Duration};

use sensorhub_grpc::{
    SensorClient,
    testing::{CALL_TIMEOUT, reading, unix_now},
};
use sensorhub_proto::SensorReading;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::support::spawned_server::{self, Serve, SpawnedServer};

const ADMIN: &str = "admin-token-5f1a";
const KITCHEN: &str = "kitchen-token-2c9e";
const RELOAD_LIMIT: Duration = Duration::from_secs(10);

fn serve(tokens: &Path, data: &Path) -> Serve {
    let mut serve = Serve::new();
    serve
        .command()
        .args(["--insecure", "--shutdown-grace", "2s"])
        .arg("--data")
        .arg(data)
        .arg("--tokens-file")
        .arg(tokens)
        .env("OTEL_SDK_DISABLED", "true");
    serve
}

#[tokio::test]
async fn tokens_file_a_malformed_line_refuses_the_start_naming_the_line_and_not_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let hash_of_kitchen = "sha256:".to_owned()
        + &sensorhub_grpc::auth::tokens_file::hex(&sensorhub_grpc::auth::tokens_file::digest(
            KITCHEN.as_bytes(),
        ));
    for (file, line, words) in [
        (
            format!("{ADMIN}\n# ok so far\n{KITCHEN} writes=kitchen-*\n"),
            3,
            "unknown key",
        ),
        (
            format!("{ADMIN}\n{KITCHEN} write=kitchen-*,\n"),
            2,
            "empty pattern",
        ),
        (format!("{ADMIN} read=\n"), 1, "empty pattern"),
        (
            format!("{ADMIN}\nsha256:{}\n", &KITCHEN[..10]),
            2,
            "64 hex digits",
        ),
        (
            format!("{KITCHEN} write=a\n{ADMIN}\n{hash_of_kitchen} read=b\n"),
            3,
            "same token as line 1",
        ),
    ] {
        std::fs::write(&tokens, &file).unwrap();
        let exited = serve(&tokens, &dir.path().join("data"))
            .start_or_exit()
            .map(|_| ())
            .expect_err("a malformed tokens file refuses the start");
        assert!(!exited.status.success(), "{file}");
        let log = exited.log;
        assert!(log.contains(&format!("line {line}:")), "{file}\n{log}");
        assert!(log.contains(words), "{words}: {file}\n{log}");
        assert!(
            log.contains(&tokens.display().to_string()),
            "the file is named: {log}"
        );
        for secret in [ADMIN, KITCHEN, &KITCHEN[..10]] {
            assert!(!log.contains(secret), "a token in the log: {log}");
        }
    }
}

async fn unary(client: &mut SensorClient, sensor: &str) -> Result<(), tonic::Status> {
    tokio::time::timeout(
        CALL_TIMEOUT,
        client.send_single_reading(reading(sensor, 20.0, unix_now() - 5)),
    )
    .await
    .expect("answered in time")
    .map(|_| ())
}

/// Sends one reading on an open chat and waits for its reply.
async fn chat_step(
    tx: &mpsc::Sender<SensorReading>,
    replies: &mut tonic::Streaming<sensorhub_proto::ServerMessage>,
    sensor: &str,
) -> Result<String, tonic::Status> {
    tx.send(reading(sensor, 21.0, unix_now() - 5))
        .await
        .expect("chat open");
    let reply = tokio::time::timeout(CALL_TIMEOUT, replies.message())
        .await
        .expect("a reply in time")?
        .expect("a reply, not the end");
    Ok(reply.message)
}

#[tokio::test]
async fn tokens_file_a_malformed_reload_keeps_the_old_set_and_a_call_in_flight_keeps_its_scope() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("{ADMIN} name=admin\n{KITCHEN} name=kitchen write=kitchen-*\n"),
    )
    .unwrap();
    let server: SpawnedServer = serve(&tokens, &dir.path().join("data")).start();
    let url = format!("http://127.0.0.1:{}", server.grpc);
    let mut kitchen = spawned_server::client(&url, KITCHEN).await;

    // A chat opened under the first set.
    let (tx, rx) = mpsc::channel(4);
    let mut replies = kitchen
        .sensor_chat(ReceiverStream::new(rx))
        .await
        .expect("chat")
        .into_inner();
    assert_eq!(
        chat_step(&tx, &mut replies, "kitchen-1")
            .await
            .expect("in scope"),
        "Received 21.0"
    );

    // A malformed file: the old set stays, the log names the line.
    std::fs::write(
        &tokens,
        format!("{ADMIN} name=admin\n{KITCHEN} name=kitchen write=hall,\n"),
    )
    .unwrap();
    server.signal("HUP");
    let log = server.wait_for_log("tokens not reloaded", 1, RELOAD_LIMIT);
    let line = log
        .lines()
        .find(|l| l.contains("tokens not reloaded"))
        .unwrap();
    assert!(
        line.contains("line 2") && line.contains("empty pattern"),
        "{line}"
    );
    unary(&mut kitchen, "kitchen-2")
        .await
        .expect("the old scope stays");
    assert_eq!(
        unary(&mut kitchen, "hall").await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // A good file narrows the kitchen token to the hall, for new calls.
    std::fs::write(
        &tokens,
        format!("{ADMIN} name=admin\n{KITCHEN} name=kitchen write=hall\n"),
    )
    .unwrap();
    server.signal("HUP");
    server.wait_for_log("tokens reloaded", 1, RELOAD_LIMIT);
    let refused = unary(&mut kitchen, "kitchen-2")
        .await
        .expect_err("out of the new scope");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("write=hall"),
        "{}",
        refused.message()
    );
    unary(&mut kitchen, "hall").await.expect("in the new scope");
    // The chat opened before keeps the scope it started with.
    assert_eq!(
        chat_step(&tx, &mut replies, "kitchen-1")
            .await
            .expect("the chat's own scope"),
        "Received 21.0"
    );
    drop(tx);
    while replies
        .message()
        .await
        .expect("the chat ends cleanly")
        .is_some()
    {}

    let (out, _) = server.terminate(Duration::from_secs(15));
    let log = String::from_utf8_lossy(&out.stderr);
    let warnings = log
        .lines()
        .filter(|l| l.contains("holds tokens themselves"))
        .count();
    assert_eq!(
        warnings, 1,
        "plain tokens are warned about once, at start:\n{log}"
    );
    for secret in [ADMIN, KITCHEN] {
        assert!(!log.contains(secret), "a token in the log: {log}");
    }
}
