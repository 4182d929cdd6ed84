//! sensorhub's own clients against another gRPC server: the original Python
//! SensorService re-expressed with grpcio (`bench/python-original/server.py`),
//! run as a real process over TLS with certificates from `sensorhub certs`.
//!
//! - `sensorhub sensor` works in each of the four modes and in `random`. Its
//!   chat sends its first reading before the response headers arrive (grpcio
//!   sends them with its first reply), and says when an `Ack` has no count.
//! - Ctrl-C or SIGTERM cancels a call in progress in every mode, and a call
//!   has a deadline: against a server whose only worker is taken, nothing hangs.
//! - A certificate the client refuses is explained once, in words: what is
//!   wrong with it and what to do.
//!
//! Needs Python 3 with grpcio: `cargo xtask test` makes the venv.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::support::{
    python,
    spawned_server::{command, sensorhub},
};
const TOKEN: &str = "sensor_token_abc";
/// Longer than any run here should take; reaching it means a hang.
const HANG: Duration = Duration::from_secs(30);

/// The grpcio server as a child process, on the port it was given.
struct PythonServer {
    child: Child,
    port: u16,
}

impl PythonServer {
    /// Serves TLS with `cert`/`key` on an ephemeral port; `extra` is passed on.
    fn start(cert: &Path, key: &Path, extra: &[&str]) -> PythonServer {
        let mut child = Command::new(python::python())
            .arg(python::repo_path("bench/python-original/server.py"))
            .args(["--listen", "127.0.0.1:0", "--token", TOKEN])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .args(extra)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e}; {}",
                    python::python(),
                    python::REQUIREMENTS_HINT
                )
            });
        let lines = lines_of(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + HANG;
        let mut seen = Vec::new();
        let port = loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    let _ = child.kill();
                    panic!(
                        "the grpcio server did not start ({}):\n{}",
                        python::REQUIREMENTS_HINT,
                        seen.join("\n")
                    )
                });
            seen.push(line.clone());
            if let Some(addr) = line.strip_prefix("python original SensorService on ") {
                break addr
                    .rsplit_once(':')
                    .and_then(|(_, port)| port.trim().parse().ok())
                    .expect("a port");
            }
        };
        PythonServer { child, port }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines a child writes, from a thread of their own.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `sensorhub certs` into `dir/name`; returns that directory.
fn certs(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let done = sensorhub(&["certs", "--out", out.to_str().expect("a UTF-8 path")]);
    assert!(done.status.success(), "{}", text(&done.stderr));
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `sensorhub sensor` command against `url` trusting `ca`, logging JSON.
fn sensor(url: &str, ca: &Path, args: &[&str]) -> Command {
    let mut command = command();
    command
        .args(["--log-format", "json", "sensor", "--server", url])
        .arg("--ca")
        .arg(ca)
        .args(["--token", TOKEN, "--spike-probability", "0"])
        .args(args)
        .env("OTEL_SDK_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `command` to its end; a run that reaches [`HANG`] is killed and fails.
fn finish(mut command: Command, what: &str) -> Output {
    let mut child = command.spawn().expect("spawn sensorhub");
    let deadline = Instant::now() + HANG;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{what}: still running after {HANG:?}\n{}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// How many readings `sensor_id` has on the server, read back with
/// `sensorhub readings` (the original streams every stored reading).
fn stored(server: &PythonServer, ca: &Path, sensor_id: &str) -> usize {
    let mut command = command();
    command
        .args(["readings", "--server", &server.url(), "--json"])
        .arg("--ca")
        .arg(ca)
        .args(["--token", TOKEN, "--sensor-id", sensor_id])
        .env("OTEL_SDK_DISABLED", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = finish(command, "sensorhub readings");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).lines().count()
}

#[test]
fn every_sensor_mode_works_against_the_grpcio_original() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path(), "certs");
    let ca = certs.join("ca.pem");
    let server = PythonServer::start(&certs.join("server.pem"), &certs.join("server.key"), &[]);
    // (mode, what its log must say, readings it stores in 4 calls)
    for (mode, says, readings) in [
        ("unary", "Reading received.", Some(4)),
        (
            "client-stream",
            "not reported by the server (its Ack has no count)",
            Some(20),
        ),
        ("server-stream", "read back the last minute", Some(0)),
        ("chat", "Received ", Some(4)),
        ("random", "\"sensor cycle\"", None),
    ] {
        let sensor_id = format!("original-{mode}");
        let command = sensor(
            &server.url(),
            &ca,
            &[
                "--mode",
                mode,
                "--sensor-id",
                &sensor_id,
                "--count",
                "4",
                "--interval-max",
                "20ms",
                "--timeout",
                "10s",
            ],
        );
        let out = finish(command, mode);
        let log = text(&out.stderr);
        assert!(out.status.success(), "{mode} failed:\n{log}");
        assert!(log.contains(says), "{mode}: no `{says}` in:\n{log}");
        assert!(
            !log.contains("stored\":0"),
            "{mode}: a count of 0 reported:\n{log}"
        );
        assert!(!log.contains("call failed"), "{mode}:\n{log}");
        if let Some(readings) = readings {
            assert_eq!(stored(&server, &ca, &sensor_id), readings, "{mode}: stored");
        }
    }
}

/// A server whose only worker is taken by a long chat answers nothing else:
/// each mode's call hangs there until a signal cancels it, and `--timeout`
/// ends one by itself.
#[cfg(unix)]
#[test]
fn a_signal_cancels_a_call_in_progress_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path(), "certs");
    let ca = certs.join("ca.pem");
    let server = PythonServer::start(
        &certs.join("server.pem"),
        &certs.join("server.key"),
        &["--workers", "1"],
    );
    let mut holder = sensor(
        &server.url(),
        &ca,
        &[
            "--mode",
            "chat",
            "--sensor-id",
            "holder",
            "--interval-max",
            "200ms",
        ],
    )
    .spawn()
    .expect("spawn the chat that holds the worker");
    let holder_log = lines_of(holder.stderr.take().expect("stderr"));
    wait_for(&holder_log, "Received ", "the holding chat's first reply");

    for mode in ["unary", "client-stream", "server-stream", "chat"] {
        let mut blocked = sensor(
            &server.url(),
            &ca,
            &[
                "--mode",
                mode,
                "--sensor-id",
                "blocked",
                "--count",
                "1",
                "--interval-max",
                "1ms",
                "--timeout",
                "60s",
            ],
        )
        .spawn()
        .expect("spawn");
        let log = lines_of(blocked.stderr.take().expect("stderr"));
        wait_for(&log, "sensor started", mode);
        // Time for the call to go out and wait on the busy server.
        std::thread::sleep(Duration::from_millis(700));
        assert!(
            blocked.try_wait().expect("wait").is_none(),
            "{mode}: the call should still be waiting on the busy server"
        );
        let signalled = Instant::now();
        terminate(&blocked);
        let status = wait_within(&mut blocked, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{mode}: SIGTERM did not end the sensor within 5 s"));
        let took = signalled.elapsed();
        let lines = rest_of(&log);
        assert!(status.success(), "{mode}: exit {status}\n{lines:#?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("the call in progress was cancelled")),
            "{mode} ({took:?}): {lines:#?}"
        );
    }

    // Without a signal, --timeout ends the wait; the chat's opening is under it.
    let started = Instant::now();
    let out = finish(
        sensor(
            &server.url(),
            &ca,
            &[
                "--mode",
                "chat",
                "--sensor-id",
                "late",
                "--count",
                "1",
                "--interval-max",
                "1ms",
                "--timeout",
                "1s",
            ],
        ),
        "chat with --timeout 1s",
    );
    let log = text(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("DEADLINE_EXCEEDED: no answer from the server within 1s"),
        "{log}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{log}");

    // The holder's chat, idle between readings, ends cleanly on SIGTERM.
    terminate(&holder);
    let status = wait_within(&mut holder, Duration::from_secs(5)).expect("the holder stops");
    assert!(status.success(), "holder: {status}");
}

#[cfg(unix)]
fn terminate(child: &Child) {
    let done = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(done.success());
}

fn wait_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines still to come from a child that has exited (until its pipe closes).
fn rest_of(lines: &mpsc::Receiver<String>) -> Vec<String> {
    let deadline = Instant::now() + HANG;
    let mut rest = Vec::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        rest.push(line);
    }
    rest
}

fn wait_for(lines: &mpsc::Receiver<String>, needle: &str, what: &str) {
    let deadline = Instant::now() + HANG;
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(needle) => return,
            Ok(line) => seen.push(line),
            Err(_) => panic!("{what}: no line with `{needle}`; saw {seen:#?}"),
        }
    }
}

/// A certificate written as PEM files; returns (cert, key).
fn write_cert(
    dir: &Path,
    name: &str,
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
) -> (PathBuf, PathBuf) {
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

/// What `sensorhub sensor` prints when it refuses the server's certificate.
fn refusal(server: &PythonServer, ca: &Path, extra: &[&str]) -> String {
    let mut args = vec!["--mode", "unary", "--count", "1"];
    args.extend_from_slice(extra);
    let out = finish(sensor(&server.url(), ca, &args), "a refused certificate");
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
        .to_owned();
    for jargon in [
        "OtherError",
        "CaUsedAsEndEntity",
        "UnknownIssuer",
        "NotValidForName",
        "transport error",
    ] {
        assert!(
            !error.contains(jargon),
            "library jargon `{jargon}` in: {error}"
        );
    }
    error
}

fn assert_once(error: &str, phrase: &str) {
    assert_eq!(
        error.matches(phrase).count(),
        1,
        "`{phrase}` once in: {error}"
    );
}

#[test]
fn a_refused_server_certificate_is_explained_once() {
    let dir = tempfile::tempdir().unwrap();

    // The original's certificate: self-signed, CA:TRUE, CN=grpc-server, no SAN.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "grpc-server");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let original = params.self_signed(&key).unwrap();
    let (cert, key_file) = write_cert(dir.path(), "original", &original, &key);
    let server = PythonServer::start(&cert, &key_file, &[]);
    let error = refusal(&server, &cert, &[]);
    assert_once(&error, "a CA certificate");
    assert!(
        error.contains("sensorhub certs") && error.contains("--ca"),
        "{error}"
    );
    drop(server);

    // A leaf from a real CA, but without subjectAltName.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test CA");
    let issuer =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let ca_path = dir.path().join("test-ca.pem");
    std::fs::write(&ca_path, issuer.pem()).unwrap();
    let (cert, key_file) = write_cert(dir.path(), "no-san", &leaf, &leaf_key);
    let server = PythonServer::start(&cert, &key_file, &[]);
    let error = refusal(&server, &ca_path, &[]);
    assert_once(&error, "no subjectAltName");
    assert!(
        error.contains("sensorhub certs --name localhost"),
        "{error}"
    );
    drop(server);

    // `sensorhub certs` on the server; on the client a CA of another name,
    // the CA of another `sensorhub certs` run (the same name), or a wrong name.
    let served = certs(dir.path(), "served");
    let other = certs(dir.path(), "other");
    let server = PythonServer::start(&served.join("server.pem"), &served.join("server.key"), &[]);
    for ca in [ca_path.as_path(), &other.join("ca.pem")] {
        let error = refusal(&server, ca, &[]);
        assert_once(&error, "was not issued by the CA in");
        assert!(
            error.contains("Pass --ca with the CA certificate that issued it"),
            "{error}"
        );
    }
    let error = refusal(
        &server,
        &served.join("ca.pem"),
        &["--tls-server-name", "sensors.example"],
    );
    assert_once(&error, "not valid for `sensors.example`");
    assert!(error.contains("localhost, 127.0.0.1"), "{error}");
    assert!(
        error.contains("sensorhub certs --name sensors.example"),
        "{error}"
    );
}
