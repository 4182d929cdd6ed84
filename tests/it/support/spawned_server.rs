//! `sensorhub serve` as a child process, for tests of what only a whole
//! process shows: its exported telemetry, `/metrics`, its shutdown.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_sensorhub");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `sensorhub serve --insecure` with a token, its gRPC and HTTP ports.
pub struct SpawnedServer {
    /// `None` once [`SpawnedServer::terminate`] took it.
    child: Option<Child>,
    pub grpc: u16,
    pub http: u16,
}

impl SpawnedServer {
    /// Starts the server with `env` added to a clean telemetry environment
    /// (no inherited `OTEL_*` or `RUST_LOG`), and waits until it listens.
    pub fn start(data: &Path, token: &str, env: &[(&str, String)]) -> SpawnedServer {
        let (grpc, http) = (free_port(), free_port());
        let mut command = Command::new(BIN);
        command
            .args([
                "serve",
                "--insecure",
                "--listen",
                &format!("127.0.0.1:{grpc}"),
                "--http",
                &format!("127.0.0.1:{http}"),
                "--shutdown-grace",
                "2s",
            ])
            .arg("--data")
            .arg(data)
            .env("SENSORHUB_TOKENS", token);
        clean_env(&mut command);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sensorhub serve");
        let server = SpawnedServer {
            child: Some(child),
            grpc,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", grpc)).is_err() {
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The server's resident memory now, in bytes (Linux `/proc`).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("a VmRSS line")
            * 1024
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// SIGTERM, then waits (at most `limit`) for the exit: the output and how long it took.
    pub fn terminate(mut self, limit: Duration) -> (Output, Duration) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > limit {
                let _ = child.kill();
                panic!("the server did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let elapsed = started.elapsed();
        (child.wait_with_output().unwrap(), elapsed)
    }
}

/// A test that fails half-way must not leave a server running.
impl Drop for SpawnedServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Removes inherited settings that would change what a child process exports.
/// `sensorhub serve` with TLS (`cert`, `key`) on a free port of 127.0.0.1 and
/// no HTTP listener; `configure` adds the rest (tokens, data, more flags).
/// Returns once the port accepts connections, with the child and its port.
pub fn spawn_tls_serve(
    cert: &Path,
    key: &Path,
    configure: impl FnOnce(&mut Command),
) -> (Child, u16) {
    let port = free_port();
    let mut command = Command::new(BIN);
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--http",
            "off",
        ])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .stdout(Stdio::null());
    clean_env(&mut command);
    configure(&mut command);
    let mut child = command.spawn().expect("spawn sensorhub serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(exit) = child.try_wait().expect("wait") {
            panic!("the server exited at startup: {exit}");
        }
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

pub fn clean_env(command: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
}

/// One HTTP/1.1 GET: (status code, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect to the HTTP listener");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers and body");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (code, body.to_owned())
}
