//! Bad input, through real `sensorhub serve` processes: a table of requests
//! no correct client sends, each checked for
//! - the right answer: the gRPC status code (or, below gRPC, the HTTP status
//!   or TLS alert), with a message that says what to fix (key words);
//! - nothing stored: the total of GetSensorStats moves by exactly what the
//!   case may store (readings before a bad one in a stream, which the
//!   `sensorhub-stored-count` trailer must state, and which must read back);
//! - the server still serving: a good call on a new connection succeeds, and
//!   after a raw HTTP/2 case a good call on the same connection too.
//!
//! No status message, and nothing the server logs, carries a token.
//!
//! Two servers: a plaintext one with a token (`--insecure`, as
//! `tests/it/support/spawned_server.rs` starts it) takes the gRPC-level cases,
//! sent with tonic or, for what tonic would never send, as raw HTTP/2 frames
//! (`tests/it/support/raw_grpc.rs`); a mutual-TLS one takes the TLS cases.
//!
//! Every case must pass: there is no list of known bugs (SECURITY.md's known
//! gaps name what is not refused as it should be, and none is in this table).

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    time::Duration,
};

use prost::Message;
use raw_grpc::{RawRequest, frame, frame_declaring, gzip, zstd_demanding_window};
use sensorhub_grpc::testing::{reading, unix_now};
use sensorhub_pki::{self as pki, BundleFiles};
use sensorhub_proto::{
    SensorReading, SensorRequest, ServerMessageKind, StatsRequest,
    sensor_service_client::SensorServiceClient,
};
use spawned_server::{Serve, SpawnedServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Status, transport::Channel};

use crate::support::raw_grpc;
use crate::support::spawned_server;

const TOKEN: &str = "bad-input-token-5f2c";
const WRONG_TOKEN: &str = "bad-input-token-5f2d";
const UNARY: &str = "/SensorService/SendSingleReading";
const CLIENT_STREAM: &str = "/SensorService/StreamSensorReadings";
const LIMIT: Duration = Duration::from_secs(10);

fn good(sensor_id: &str) -> SensorReading {
    reading(sensor_id, 20.0, unix_now() - 60)
}

/// `n` valid readings of `sensor_id`, one second apart.
fn goods(sensor_id: &str, n: usize) -> Vec<SensorReading> {
    let t = unix_now() - 600;
    (0..n)
        .map(|i| reading(sensor_id, 20.0 + i as f64 * 0.5, t + i as i64))
        .collect()
}

fn then(
    mut first: Vec<SensorReading>,
    rest: impl IntoIterator<Item = SensorReading>,
) -> Vec<SensorReading> {
    first.extend(rest);
    first
}

/// The wire bytes of a `SensorReading` whose `sensor_id` is `id`, whatever
/// `id` is (prost only encodes valid strings).
fn encoded_with_raw_id(id: &[u8]) -> Vec<u8> {
    let mut out = vec![0x0a, id.len() as u8];
    out.extend_from_slice(id);
    out.extend(
        SensorReading {
            sensor_id: String::new(),
            ..good("x")
        }
        .encode_to_vec(),
    );
    out
}

fn encoded(r: &SensorReading) -> Vec<u8> {
    r.encode_to_vec()
}

/// A reading whose encoding is 1 MiB: it gzips to about a kilobyte.
fn bomb() -> Vec<u8> {
    encoded(&reading(&"z".repeat(1 << 20), 20.0, unix_now()))
}

// ---------------------------------------------------------------------------
// The table.

/// Which server a case goes to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum On {
    Plain,
    MutualTls,
}

/// What the `authorization` metadata carries.
#[derive(Debug, Clone)]
enum Auth {
    Good,
    Missing,
    Value(&'static [u8]),
}

#[derive(Debug, Clone, Copy)]
enum ClientCert {
    Foreign,
    Missing,
}

/// What a case sends.
#[derive(Debug, Clone)]
enum Send {
    Unary(SensorReading, Auth),
    /// A unary call with one extra metadata entry of this many bytes.
    UnaryWithMetadata(usize),
    ClientStream(Vec<SensorReading>, Auth),
    Chat(Vec<SensorReading>, Auth),
    History(SensorRequest),
    /// Hand-made HTTP/2 request: path, extra metadata, body frames.
    Raw(RawRequest),
    /// A good unary SendSingleReading whose `content-type` headers are
    /// exactly these values (none, one or several).
    ContentType(&'static [&'static str]),
    /// An HTTP/1.1 request to the gRPC port.
    Http1,
    /// The HTTP/2 connection preface, in plaintext, to the TLS port.
    PlaintextToTls,
    /// A ClientHello offering only this protocol version (e.g. [3, 2]: TLS 1.1).
    TlsHello([u8; 2]),
    /// A TLS 1.3 handshake with this client certificate, in mTLS mode.
    Mtls(ClientCert),
}

/// What the server must answer.
#[derive(Debug, Clone)]
enum Expect {
    /// A gRPC status with these words in its message. `stored`: the readings
    /// the call stores before the bad input, stated in `sensorhub-stored-count`
    /// (`None`: the call stores nothing and has no such trailer).
    Status {
        code: Code,
        words: &'static [&'static str],
        stored: Option<u64>,
    },
    /// An HTTP response without a gRPC status (the request never became a
    /// call), whose body says these words.
    Http(u16, &'static [&'static str]),
    /// A fatal TLS alert with this description, and the connection closed.
    TlsAlert(u8),
    /// The connection ends without any HTTP/1.x response.
    NoHttp1,
    /// The TLS handshake completes on the client's side, then the server
    /// refuses the client's certificate with this alert (as rustls names it).
    CertificateRefused(&'static str),
}

#[derive(Debug, Clone)]
struct Case {
    name: &'static str,
    on: On,
    send: Send,
    expect: Expect,
}

fn case(name: &'static str, send: Send, expect: Expect) -> Case {
    Case {
        name,
        on: On::Plain,
        send,
        expect,
    }
}

impl Case {
    fn on(mut self, on: On) -> Self {
        self.on = on;
        self
    }
}

fn status(code: Code, words: &'static [&'static str]) -> Expect {
    Expect::Status {
        code,
        words,
        stored: None,
    }
}

fn status_after(code: Code, stored: u64, words: &'static [&'static str]) -> Expect {
    Expect::Status {
        code,
        words,
        stored: Some(stored),
    }
}

fn invalid(words: &'static [&'static str]) -> Expect {
    status(Code::InvalidArgument, words)
}

fn raw(path: &str, body: Vec<u8>) -> RawRequest {
    RawRequest::new(path, Some(TOKEN), body)
}

fn cases() -> Vec<Case> {
    use Code::*;
    let now = unix_now();
    let unary = |r: SensorReading| Send::Unary(r, Auth::Good);
    vec![
        // --- Validation: every rule, unary.
        case(
            "sensor_id empty",
            unary(reading("", 20.0, now)),
            invalid(&["sensor_id", "must not be empty", "nothing was stored"]),
        ),
        case(
            "sensor_id of 129 bytes",
            unary(reading(&"x".repeat(129), 20.0, now)),
            invalid(&["sensor_id", "at most 128 bytes", "got 129"]),
        ),
        case(
            "sensor_id with a newline",
            unary(reading("kitchen\nfake-log-line", 20.0, now)),
            invalid(&["sensor_id", "control characters", "U+000A"]),
        ),
        case(
            "sensor_id with NUL",
            unary(reading("a\0b", 20.0, now)),
            invalid(&["sensor_id", "control characters", "U+0000"]),
        ),
        case(
            "sensor_id with an escape sequence",
            unary(reading("\u{1b}[31mred", 20.0, now)),
            invalid(&["sensor_id", "control characters", "U+001B"]),
        ),
        case(
            "sensor_id with a right-to-left override",
            unary(reading("kitchen\u{202E}1-rosnes", 20.0, now)),
            invalid(&[
                "sensor_id",
                "bidirectional-override or zero-width",
                "U+202E",
            ]),
        ),
        case(
            "sensor_id with a zero-width space",
            unary(reading("kitchen\u{200B}", 20.0, now)),
            invalid(&[
                "sensor_id",
                "bidirectional-override or zero-width",
                "U+200B",
            ]),
        ),
        case(
            "temperature NaN",
            unary(reading("bi-nan", f64::NAN, now)),
            invalid(&["temperature", "finite number"]),
        ),
        case(
            "temperature +inf",
            unary(reading("bi-inf", f64::INFINITY, now)),
            invalid(&["temperature", "finite number"]),
        ),
        case(
            "temperature -inf",
            unary(reading("bi-inf", f64::NEG_INFINITY, now)),
            invalid(&["temperature", "finite number"]),
        ),
        case(
            "temperature below absolute zero",
            unary(reading("bi-cold", -273.16, now)),
            invalid(&["temperature", "below absolute zero", "-273.15"]),
        ),
        case(
            "temperature absurdly large",
            unary(reading("bi-hot", 1e300, now)),
            invalid(&["temperature", "highest accepted temperature", "1000"]),
        ),
        case(
            "timestamp zero",
            unary(reading("bi-ts", 20.0, 0)),
            invalid(&["timestamp", "positive Unix time in seconds", "got 0"]),
        ),
        case(
            "timestamp negative",
            unary(reading("bi-ts", 20.0, -1_000)),
            invalid(&["timestamp", "positive Unix time in seconds", "-1000"]),
        ),
        case(
            "timestamp ten years ahead",
            unary(reading("bi-ts", 20.0, now + 10 * 365 * 86_400)),
            invalid(&["timestamp", "ahead of the server clock"]),
        ),
        case(
            "timestamp in milliseconds",
            unary(reading("bi-ts", 20.0, now * 1_000)),
            invalid(&["timestamp", "looks like milliseconds", "send Unix seconds"]),
        ),
        // --- A bad reading in the middle of each streaming kind.
        case(
            "client stream: NaN after 3 good readings",
            Send::ClientStream(
                then(
                    goods("bi-stream", 3),
                    [reading("bi-stream", f64::NAN, now), good("bi-stream")],
                ),
                Auth::Good,
            ),
            status_after(
                InvalidArgument,
                3,
                &["#3", "temperature", "3 readings before it were stored"],
            ),
        ),
        case(
            "chat: empty sensor_id after 2 good readings",
            Send::Chat(
                then(
                    goods("bi-chat", 2),
                    [reading("", 20.0, now), good("bi-chat")],
                ),
                Auth::Good,
            ),
            status_after(
                InvalidArgument,
                2,
                &["#2", "sensor_id", "2 readings before it were stored"],
            ),
        ),
        case(
            "history: sensor_id with a control character",
            Send::History(SensorRequest {
                sensor_id: "bi\u{7}".into(),
                ..Default::default()
            }),
            invalid(&["sensor_id", "control characters"]),
        ),
        case(
            "history: until before since",
            Send::History(SensorRequest {
                sensor_id: "bi-history".into(),
                since: now,
                until: now - 10,
                ..Default::default()
            }),
            invalid(&["until", "must be after since"]),
        ),
        case(
            "history: negative until",
            Send::History(SensorRequest {
                sensor_id: "bi-history".into(),
                until: -5,
                ..Default::default()
            }),
            invalid(&["invalid request: until:", "Unix seconds"]),
        ),
        case(
            "history: negative since",
            Send::History(SensorRequest {
                sensor_id: "bi-history".into(),
                since: -5,
                ..Default::default()
            }),
            invalid(&["invalid request: since:", "Unix seconds"]),
        ),
        // --- Size.
        case(
            "message over the size limit (100 KiB)",
            unary(reading(&"h".repeat(100 * 1024), 20.0, now)),
            status(
                ResourceExhausted,
                &["larger than the server accepts", "65536"],
            ),
        ),
        case(
            "client stream: 100 KiB message after 2 good readings",
            Send::ClientStream(
                then(
                    goods("bi-big", 2),
                    [reading(&"h".repeat(100 * 1024), 20.0, now)],
                ),
                Auth::Good,
            ),
            status_after(
                ResourceExhausted,
                2,
                &["larger than the server accepts", "65536"],
            ),
        ),
        case(
            "raw: length prefix of 1 GiB",
            Send::Raw(raw(
                UNARY,
                frame_declaring(false, 1 << 30, &encoded(&good("bi-x"))),
            )),
            status(
                ResourceExhausted,
                &["larger than the server accepts", "65536"],
            ),
        ),
        case(
            "raw: gzip message inflating to 1 MiB",
            Send::Raw(raw(UNARY, frame(true, &gzip(&bomb()))).with("grpc-encoding", "gzip")),
            status(ResourceExhausted, &["65536", "decompressing"]),
        ),
        case(
            "raw: gzip bomb after 1 good reading in a client stream",
            Send::Raw(
                raw(
                    CLIENT_STREAM,
                    [
                        frame(false, &encoded(&good("bi-gzip"))),
                        frame(true, &gzip(&bomb())),
                    ]
                    .concat(),
                )
                .with("grpc-encoding", "gzip"),
            ),
            status_after(ResourceExhausted, 1, &["65536", "decompressing"]),
        ),
        case(
            "raw: zstd message demanding a 1 GiB window",
            Send::Raw(
                raw(
                    UNARY,
                    frame(true, &zstd_demanding_window(30, &encoded(&good("bi-zstd")))),
                )
                .with("grpc-encoding", "zstd"),
            ),
            status(
                ResourceExhausted,
                &["zstd", "window", "134217728 bytes", "65536"],
            ),
        ),
        case(
            "raw: zstd 1 GiB window after 1 good reading in a client stream",
            Send::Raw(
                raw(
                    CLIENT_STREAM,
                    [
                        frame(false, &encoded(&good("bi-zstd-stream"))),
                        frame(
                            true,
                            &zstd_demanding_window(30, &encoded(&good("bi-zstd-stream"))),
                        ),
                    ]
                    .concat(),
                )
                .with("grpc-encoding", "zstd"),
            ),
            status_after(ResourceExhausted, 1, &["zstd", "window", "134217728 bytes"]),
        ),
        // --- Bytes that are not a SensorReading.
        case(
            "raw: bytes that are not protobuf",
            Send::Raw(raw(UNARY, frame(false, &[0xff; 16]))),
            status(Internal, &["failed to decode Protobuf message"]),
        ),
        case(
            "raw: sensor_id that is not UTF-8",
            Send::Raw(raw(UNARY, frame(false, &encoded_with_raw_id(b"k\xffche")))),
            status(Internal, &["failed to decode", "sensor_id", "UTF-8"]),
        ),
        case(
            "raw: non-UTF-8 sensor_id after 2 good readings in a client stream",
            Send::Raw(raw(
                CLIENT_STREAM,
                [
                    frame(false, &encoded(&good("bi-utf8"))),
                    frame(false, &encoded(&good("bi-utf8"))),
                    frame(false, &encoded_with_raw_id(b"\xc3(")),
                ]
                .concat(),
            )),
            status_after(Internal, 2, &["sensor_id", "UTF-8"]),
        ),
        case(
            "raw: length prefix longer than the message",
            Send::Raw(raw(
                UNARY,
                frame_declaring(false, 40, &encoded(&good("bi-x"))),
            )),
            status(Internal, &["Unexpected EOF"]),
        ),
        // --- Compression.
        case(
            "raw: unknown compression `br`",
            Send::Raw(
                raw(UNARY, frame(true, &encoded(&good("bi-br")))).with("grpc-encoding", "br"),
            ),
            status(
                Unimplemented,
                &["`br`", "isn't supported", "accepts: gzip,zstd"],
            ),
        ),
        case(
            "raw: compressed flag without grpc-encoding",
            Send::Raw(raw(UNARY, frame(true, &encoded(&good("bi-flag"))))),
            status(Internal, &["compressed-flag", "no grpc-encoding"]),
        ),
        case(
            "raw: grpc-encoding gzip, bytes that are not gzip",
            Send::Raw(
                raw(UNARY, frame(true, &encoded(&good("bi-gz")))).with("grpc-encoding", "gzip"),
            ),
            status(Internal, &["decompressing", "gzip"]),
        ),
        // --- Request shape (gRPC spec: a cardinality violation is UNIMPLEMENTED).
        case(
            "raw: unary call without a message",
            Send::Raw(raw(UNARY, Vec::new())),
            status(
                Unimplemented,
                &[
                    "/SensorService/SendSingleReading expects exactly one request message",
                    "ended without one",
                    "nothing was stored",
                ],
            ),
        ),
        case(
            "raw: server-streaming call (history) without a message",
            Send::Raw(raw("/SensorService/GetSensorReadings", Vec::new())),
            status(
                Unimplemented,
                &["/SensorService/GetSensorReadings expects exactly one request message"],
            ),
        ),
        // A second request message: INTERNAL, as grpc-java answers it, and
        // the handler never runs.
        case(
            "raw: unary call with two messages",
            Send::Raw(raw(
                UNARY,
                [
                    frame(false, &encoded(&good("bi-two"))),
                    frame(false, &encoded(&good("bi-two"))),
                ]
                .concat(),
            )),
            status(
                Internal,
                &[
                    "/SensorService/SendSingleReading is unary",
                    "carries exactly one request message",
                    "sent a second",
                    "nothing was stored",
                ],
            ),
        ),
        case(
            "raw: unary call with a message, then an empty one",
            Send::Raw(raw(
                UNARY,
                [frame(false, &encoded(&good("bi-two"))), frame(false, &[])].concat(),
            )),
            status(Internal, &["carries exactly one request message"]),
        ),
        case(
            "raw: server-streaming call (history) with two messages",
            Send::Raw(raw(
                "/SensorService/GetSensorReadings",
                [
                    frame(
                        false,
                        &SensorRequest {
                            sensor_id: "bi-two".into(),
                            ..Default::default()
                        }
                        .encode_to_vec(),
                    ),
                    frame(
                        false,
                        &SensorRequest {
                            sensor_id: "bi-three".into(),
                            ..Default::default()
                        }
                        .encode_to_vec(),
                    ),
                ]
                .concat(),
            )),
            status(
                Internal,
                &["/SensorService/GetSensorReadings is unary", "sent a second"],
            ),
        ),
        case(
            "raw: health check with two messages",
            Send::Raw(raw(
                "/grpc.health.v1.Health/Check",
                [frame(false, &[]), frame(false, &[])].concat(),
            )),
            status(
                Internal,
                &["/grpc.health.v1.Health/Check is unary", "sent a second"],
            ),
        ),
        // gRPC over HTTP/2: a content-type not starting with application/grpc
        // SHOULD get HTTP 415.
        case(
            "content-type text/plain",
            Send::ContentType(&["text/plain"]),
            Expect::Http(415, &["gRPC only", "application/grpc"]),
        ),
        case(
            "content-type application/json",
            Send::ContentType(&["application/json"]),
            Expect::Http(415, &["gRPC only", "application/grpc"]),
        ),
        case(
            "content-type application/grpc-web (no grpc-web here)",
            Send::ContentType(&["application/grpc-web"]),
            Expect::Http(415, &["gRPC only", "application/grpc"]),
        ),
        case(
            "content-type missing",
            Send::ContentType(&[]),
            Expect::Http(415, &["exactly one content-type", "application/grpc"]),
        ),
        case(
            "content-type twice: application/grpc, then text/plain",
            Send::ContentType(&["application/grpc", "text/plain"]),
            Expect::Http(415, &["exactly one content-type", "application/grpc"]),
        ),
        // --- Metadata.
        case(
            "metadata of 20 KB",
            Send::UnaryWithMetadata(20_000),
            status(
                ResourceExhausted,
                &["request metadata is", "more than the 16384 bytes"],
            ),
        ),
        case(
            "metadata of 1 MiB",
            Send::UnaryWithMetadata(1 << 20),
            status(
                ResourceExhausted,
                &["request metadata is", "more than the 16384 bytes"],
            ),
        ),
        case(
            "raw: metadata of 1 MiB in many headers",
            Send::Raw((0..256).fold(
                raw(UNARY, frame(false, &encoded(&good("bi-meta")))),
                |r, i| r.with(&format!("x-padding-{i}"), "p".repeat(4 << 10)),
            )),
            status(ResourceExhausted, &["more than the 16384 bytes"]),
        ),
        case(
            // Beyond what h2 decodes for the call policy: h2 itself answers,
            // and only the stream ends.
            "raw: metadata of 1.2 MiB",
            Send::Raw(
                raw(UNARY, frame(false, &encoded(&good("bi-meta"))))
                    .with("x-padding", "p".repeat(1_200 << 10)),
            ),
            Expect::Http(431, &[]),
        ),
        // --- Tokens, on each ingest kind.
        case(
            "token missing",
            Send::Unary(good("bi-auth"), Auth::Missing),
            status(
                Unauthenticated,
                &["no `authorization` metadata", "Bearer <token>"],
            ),
        ),
        case(
            "token empty",
            Send::Unary(good("bi-auth"), Auth::Value(b"")),
            status(
                Unauthenticated,
                &["does not carry a token this server accepts"],
            ),
        ),
        case(
            "token malformed: Basic scheme",
            Send::Unary(good("bi-auth"), Auth::Value(b"Basic YmFkLWlucHV0OnRva2Vu")),
            status(
                Unauthenticated,
                &["does not carry a token this server accepts"],
            ),
        ),
        case(
            "token malformed: `Bearer` and nothing else",
            Send::Unary(good("bi-auth"), Auth::Value(b"Bearer ")),
            status(
                Unauthenticated,
                &["does not carry a token this server accepts"],
            ),
        ),
        case(
            "token malformed: bytes that are not ASCII",
            Send::Raw(
                RawRequest::new(UNARY, None, frame(false, &encoded(&good("bi-auth"))))
                    .with("authorization", b"\xff\xfe-token".to_vec()),
            ),
            status(
                Unauthenticated,
                &["does not carry a token this server accepts"],
            ),
        ),
        case(
            "token wrong (unary)",
            Send::Unary(good("bi-auth"), Auth::Value(WRONG_TOKEN.as_bytes())),
            status(
                Unauthenticated,
                &["does not carry a token this server accepts"],
            ),
        ),
        case(
            "token wrong (client stream)",
            Send::ClientStream(goods("bi-auth", 3), Auth::Value(WRONG_TOKEN.as_bytes())),
            status(
                Unauthenticated,
                &["does not carry a token this server accepts"],
            ),
        ),
        case(
            "token wrong (chat)",
            Send::Chat(goods("bi-auth", 2), Auth::Value(WRONG_TOKEN.as_bytes())),
            status(
                Unauthenticated,
                &["does not carry a token this server accepts"],
            ),
        ),
        // --- Methods and protocols.
        case(
            "unknown method",
            Send::Raw(raw(
                "/SensorService/DeleteEverything",
                frame(false, &encoded(&good("bi-m"))),
            )),
            status(
                Unimplemented,
                &[
                    "unknown method /SensorService/DeleteEverything",
                    "SensorService has no such method",
                    "this server serves SensorService/{SendSingleReading,StreamSensorReadings,GetSensorReadings,SensorChat,GetSensorStats}",
                    "grpc.health.v1.Health/{Check,Watch}",
                    "grpc.reflection.v1.ServerReflection/{ServerReflectionInfo}",
                ],
            ),
        ),
        case(
            // The token check comes first: without a token, nothing is said
            // about which methods exist.
            "unknown method without a token",
            Send::Raw(RawRequest::new(
                "/SensorService/DeleteEverything",
                None,
                frame(false, &encoded(&good("bi-m"))),
            )),
            status(Unauthenticated, &["no `authorization` metadata"]),
        ),
        case(
            "unknown service",
            Send::Raw(raw(
                "/sensor.v2.SensorService/SendSingleReading",
                frame(false, &encoded(&good("bi-m"))),
            )),
            status(
                Unimplemented,
                &[
                    "unknown service sensor.v2.SensorService",
                    "path /sensor.v2.SensorService/SendSingleReading",
                    "this server serves SensorService/{SendSingleReading,",
                ],
            ),
        ),
        case("HTTP/1.1 to the gRPC port", Send::Http1, Expect::NoHttp1),
        // --- TLS, against a server requiring client certificates.
        case(
            "plaintext HTTP/2 to the TLS port",
            Send::PlaintextToTls,
            Expect::TlsAlert(50), // decode_error
        )
        .on(On::MutualTls),
        case(
            "TLS 1.1 ClientHello",
            Send::TlsHello([3, 2]),
            Expect::TlsAlert(70), // protocol_version
        )
        .on(On::MutualTls),
        case(
            "TLS 1.0 ClientHello",
            Send::TlsHello([3, 1]),
            Expect::TlsAlert(70),
        )
        .on(On::MutualTls),
        case(
            "mTLS: client certificate from another CA",
            Send::Mtls(ClientCert::Foreign),
            // The impostor CA has the same name as the server's (both are
            // made by `sensorhub certs`), so the issuer is found by name and
            // its signature fails: decrypt_error rather than unknown_ca.
            Expect::CertificateRefused("DecryptError"),
        )
        .on(On::MutualTls),
        case(
            "mTLS: no client certificate",
            Send::Mtls(ClientCert::Missing),
            Expect::CertificateRefused("CertificateRequired"),
        )
        .on(On::MutualTls),
    ]
}

// ---------------------------------------------------------------------------
// The servers.

/// `sensorhub serve` with TLS, a client CA (mutual TLS) and a token.
struct MutualTlsServer {
    _server: SpawnedServer,
    port: u16,
    certs: BundleFiles,
    _dir: tempfile::TempDir,
}

impl MutualTlsServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = pki::generate(&[])
            .expect("certificates")
            .write_to(&dir.path().join("certs"))
            .expect("write certificates");
        let mut serve = Serve::new();
        serve
            .command()
            .arg("--tls-cert")
            .arg(&certs.server_cert)
            .arg("--tls-key")
            .arg(&certs.server_key)
            .arg("--client-ca")
            .arg(&certs.ca_cert)
            .arg("--data")
            .arg(dir.path().join("data"))
            .env("SENSORHUB_TOKENS", TOKEN);
        let server = serve.start();
        MutualTlsServer {
            port: server.grpc,
            _server: server,
            certs,
            _dir: dir,
        }
    }

    /// A client configuration: the right CA and token, and `cert` as the
    /// client certificate (the server's own CA's if `None`).
    fn config(&self, cert: Option<(&Path, &Path)>) -> sensorhub_grpc::ClientConfig {
        let mut config =
            sensorhub_grpc::ClientConfig::new(format!("https://localhost:{}", self.port));
        config.token = Some(TOKEN.to_owned());
        config.tls.ca = Some(self.certs.ca_cert.clone());
        let (cert, key) = cert.unwrap_or((&self.certs.client_cert, &self.certs.client_key));
        config.tls.cert = Some(cert.to_owned());
        config.tls.key = Some(key.to_owned());
        config
    }
}

struct Servers {
    plain: SpawnedServer,
    mtls: MutualTlsServer,
    foreign: BundleFiles,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Servers {
    fn start() -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let plain = SpawnedServer::start(data.path(), TOKEN, &[]);
        let mtls = MutualTlsServer::start();
        let foreign_dir = tempfile::tempdir().expect("temp dir");
        let foreign = pki::generate(&[])
            .expect("certificates")
            .write_to(foreign_dir.path())
            .expect("write certificates");
        Servers {
            plain,
            mtls,
            foreign,
            _dirs: (data, foreign_dir),
        }
    }

    fn port(&self, on: On) -> u16 {
        match on {
            On::Plain => self.plain.grpc,
            On::MutualTls => self.mtls.port,
        }
    }

    /// A new connection, as a correct client makes it (TLS with the right
    /// certificate on the mTLS server). The token is added per call.
    async fn channel(&self, on: On) -> Result<Channel, String> {
        let config = match on {
            On::Plain => sensorhub_grpc::ClientConfig::new(self.plain.url()),
            On::MutualTls => self.mtls.config(None),
        };
        sensorhub_grpc::client::endpoint(&config)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))
    }

    /// Every reading stored, per GetSensorStats.
    async fn total_stored(&self, on: On) -> u64 {
        tokio::time::timeout(LIMIT, self.total_stored_now(on))
            .await
            .expect("GetSensorStats in time")
    }

    async fn total_stored_now(&self, on: On) -> u64 {
        let channel = self.channel(on).await.expect("a good client connects");
        let stats = SensorServiceClient::new(channel)
            .get_sensor_stats(with_auth(StatsRequest::default(), &Auth::Good))
            .await
            .expect("GetSensorStats")
            .into_inner();
        stats.sensors.iter().map(|s| s.count).sum()
    }

    /// A good call on a new connection.
    async fn still_serving(&self, on: On) -> Result<(), String> {
        tokio::time::timeout(LIMIT, self.good_call(on))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {LIMIT:?}")))
    }

    async fn good_call(&self, on: On) -> Result<(), String> {
        let channel = self.channel(on).await?;
        let ack = SensorServiceClient::new(channel)
            .send_single_reading(with_auth(good("bi-probe"), &Auth::Good))
            .await
            .map_err(|s| format!("{s:?}"))?
            .into_inner();
        if ack.count == 1 {
            Ok(())
        } else {
            Err(format!("{ack:?}"))
        }
    }

    /// Every stored reading of `sensor_id`.
    async fn read_back(&self, on: On, sensor_id: &str) -> Vec<SensorReading> {
        let channel = self.channel(on).await.expect("a good client connects");
        let request = SensorRequest {
            sensor_id: sensor_id.to_owned(),
            ..Default::default()
        };
        let mut stream = SensorServiceClient::new(channel)
            .get_sensor_readings(with_auth(request, &Auth::Good))
            .await
            .expect("GetSensorReadings")
            .into_inner();
        let mut out = Vec::new();
        while let Some(r) = stream.message().await.expect("history") {
            out.push(r);
        }
        out
    }
}

fn with_auth<T>(message: T, auth: &Auth) -> Request<T> {
    let mut request = Request::new(message);
    let value = match auth {
        Auth::Good => TOKEN.as_bytes(),
        Auth::Missing => return request,
        Auth::Value(v) => v,
    };
    request.metadata_mut().insert(
        "authorization",
        tonic::metadata::AsciiMetadataValue::try_from(value).expect("ASCII token"),
    );
    request
}

// ---------------------------------------------------------------------------
// Sending a case and describing the answer.

/// What came back.
#[derive(Debug)]
enum Seen {
    Status {
        code: Code,
        /// The message, and for a client-side transport error its causes.
        message: String,
        stored: Option<u64>,
        /// Whether the status came from the client's transport, not the server.
        transport: bool,
        /// Headers and trailers that tell a client what to send instead.
        accept_encoding: Option<String>,
    },
    /// An HTTP status other than 200, and the body (empty from `Send::Raw`).
    Http(u16, String),
    TlsAlert {
        level: u8,
        description: u8,
    },
    /// The connection ended; the bytes the server sent before it did.
    Closed(Vec<u8>),
    /// The TLS client's error after its handshake.
    TlsRefused(String),
    /// Anything else, described.
    Other(String),
}

fn seen_status(status: &Status) -> Seen {
    let mut message = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    let transport = source.is_some();
    while let Some(cause) = source {
        message.push_str(&format!(" / {cause}"));
        source = cause.source();
    }
    Seen::Status {
        code: status.code(),
        message,
        stored: status
            .metadata()
            .get("sensorhub-stored-count")
            .map(|v| v.to_str().expect("ASCII").parse().expect("a count")),
        transport,
        accept_encoding: None,
    }
}

fn ok_status() -> Seen {
    Seen::Status {
        code: Code::Ok,
        message: String::new(),
        stored: None,
        transport: false,
        accept_encoding: None,
    }
}

async fn send(servers: &Servers, case: &Case) -> Seen {
    let port = servers.port(case.on);
    match &case.send {
        Send::Unary(r, auth) => {
            let mut client = SensorServiceClient::new(servers.channel(case.on).await.unwrap());
            match client.send_single_reading(with_auth(r.clone(), auth)).await {
                Ok(_) => ok_status(),
                Err(s) => seen_status(&s),
            }
        }
        Send::UnaryWithMetadata(bytes) => {
            let mut client = SensorServiceClient::new(servers.channel(case.on).await.unwrap());
            let mut request = with_auth(good("bi-metadata"), &Auth::Good);
            request.metadata_mut().insert(
                "x-padding",
                "p".repeat(*bytes).parse().expect("ASCII metadata"),
            );
            match client.send_single_reading(request).await {
                Ok(_) => ok_status(),
                Err(s) => seen_status(&s),
            }
        }
        Send::ClientStream(readings, auth) => {
            let mut client = SensorServiceClient::new(servers.channel(case.on).await.unwrap());
            let request = with_auth(tokio_stream::iter(readings.clone()), auth);
            match client.stream_sensor_readings(request).await {
                Ok(_) => ok_status(),
                Err(s) => seen_status(&s),
            }
        }
        Send::Chat(readings, auth) => {
            let mut client = SensorServiceClient::new(servers.channel(case.on).await.unwrap());
            let (tx, rx) = mpsc::channel(readings.len().max(1));
            for r in readings {
                tx.send(r.clone()).await.expect("queue");
            }
            let mut replies = match client
                .sensor_chat(with_auth(ReceiverStream::new(rx), auth))
                .await
            {
                Ok(replies) => replies.into_inner(),
                Err(s) => return seen_status(&s),
            };
            let mut received = 0;
            let outcome = loop {
                match replies.message().await {
                    Ok(Some(m)) if m.kind == ServerMessageKind::Received as i32 => received += 1,
                    Ok(Some(_)) => {}
                    Ok(None) => break ok_status(),
                    Err(s) => break seen_status(&s),
                }
            };
            drop(tx);
            // Each stored reading was acknowledged before the refusal.
            if let Seen::Status {
                stored: Some(stored),
                ..
            } = &outcome
                && *stored != received
            {
                return Seen::Other(format!("{outcome:?}, but {received} replies before it"));
            }
            outcome
        }
        Send::History(request) => {
            let mut client = SensorServiceClient::new(servers.channel(case.on).await.unwrap());
            match client
                .get_sensor_readings(with_auth(request.clone(), &Auth::Good))
                .await
            {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(_)) => {}
                            Ok(None) => break ok_status(),
                            Err(s) => break seen_status(&s),
                        }
                    }
                }
                Err(s) => seen_status(&s),
            }
        }
        Send::Raw(request) => {
            // Then a good call on the same connection (a health check, which
            // stores nothing): the connection must still serve.
            let probe = raw("/grpc.health.v1.Health/Check", frame(false, &[]));
            let mut responses =
                raw_grpc::calls_on_one_connection(port, vec![request.clone(), probe], LIMIT).await;
            let after = responses.pop().expect("the probe's answer");
            let response = responses.pop().expect("the case's answer");
            if let Some(e) = response.h2_error {
                return Seen::Other(format!("HTTP/2 error: {e}"));
            }
            if after.grpc_status() != Some(0) {
                return Seen::Other(format!(
                    "the connection failed a good call after the case: {after:?}"
                ));
            }
            match (response.http_status, response.grpc_status()) {
                (Some(200), Some(code)) => Seen::Status {
                    code: Code::from_i32(code),
                    message: response.grpc_message(),
                    stored: response
                        .get("sensorhub-stored-count")
                        .map(|v| v.parse().expect("a count")),
                    transport: false,
                    accept_encoding: response.get("grpc-accept-encoding"),
                },
                (Some(http), _) => Seen::Http(http, String::new()),
                (None, _) => Seen::Other("no response".into()),
            }
        }
        Send::ContentType(values) => content_type_call(port, values).await,
        Send::Http1 => {
            let request = format!(
                "POST {UNARY} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/grpc\r\nauthorization: {TOKEN}\r\nContent-Length: 0\r\n\r\n"
            );
            Seen::Closed(exchange(port, request.as_bytes(), None))
        }
        Send::PlaintextToTls => tls_alert(&exchange(
            port,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
            None,
        )),
        Send::TlsHello(version) => {
            // The same hello with TLS 1.2 must get a ServerHello, so that the
            // alert is about the version and nothing else.
            let control = exchange(port, &client_hello([3, 3]), Some(6));
            assert!(
                control.len() >= 6 && control[0] == 0x16 && control[5] == 2,
                "the TLS 1.2 control hello got no ServerHello: {control:02x?}"
            );
            tls_alert(&exchange(port, &client_hello(*version), None))
        }
        Send::Mtls(cert) => {
            let ca = servers.mtls.certs.ca_cert.clone();
            // The CA's own client certificate is accepted, so that the
            // refusal is about the certificate and nothing else.
            let own = (
                servers.mtls.certs.client_cert.clone(),
                servers.mtls.certs.client_key.clone(),
            );
            let control = tls_handshake_then_read(port, &ca, Some(&own));
            assert!(control.is_ok(), "the CA's client certificate: {control:?}");
            let foreign = (
                servers.foreign.client_cert.clone(),
                servers.foreign.client_key.clone(),
            );
            let client = match cert {
                ClientCert::Foreign => Some(&foreign),
                ClientCert::Missing => None,
            };
            match tls_handshake_then_read(port, &ca, client) {
                Ok(n) => Seen::Other(format!("accepted: read {n} bytes")),
                Err(e) => Seen::TlsRefused(e),
            }
        }
    }
}

/// A good unary SendSingleReading over HTTP/2 whose `content-type` headers
/// are exactly `values`: the HTTP status and body if it is not 200, else the
/// gRPC status (from the head or the trailers).
async fn content_type_call(port: u16, values: &[&str]) -> Seen {
    let result = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (client, connection) = h2::client::handshake(tcp)
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await.map_err(|e| e.to_string())?;
        let mut head = http::Request::builder()
            .method("POST")
            .uri(format!("http://127.0.0.1:{port}{UNARY}"))
            .header("te", "trailers")
            .header("authorization", TOKEN);
        for value in values {
            head = head.header("content-type", *value);
        }
        let head = head.body(()).map_err(|e| e.to_string())?;
        let (response, mut send) = client
            .send_request(head, false)
            .map_err(|e| e.to_string())?;
        // The server may answer (and reset) before reading the body.
        let _ = send.send_data(frame(false, &encoded(&good("bi-ct"))).into(), true);
        let response = response.await.map_err(|e| e.to_string())?;
        let (parts, mut body) = response.into_parts();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        if parts.status != http::StatusCode::OK {
            return Ok(Seen::Http(
                parts.status.as_u16(),
                String::from_utf8_lossy(&data).into_owned(),
            ));
        }
        let trailers = body.trailers().await.map_err(|e| e.to_string())?;
        let status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| parts.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok()?.parse().ok());
        Ok::<_, String>(match status {
            Some(code) => Seen::Status {
                code: Code::from_i32(code),
                message: String::new(),
                stored: None,
                transport: false,
                accept_encoding: None,
            },
            None => Seen::Other(format!("HTTP 200 without grpc-status: {parts:?}")),
        })
    }
    .await;
    result.unwrap_or_else(Seen::Other)
}

/// Writes `request` on a new TCP connection and reads until the server closes
/// it (or `up_to` bytes). A reset after data counts as closed.
fn exchange(port: u16, request: &[u8], up_to: Option<usize>) -> Vec<u8> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
    tcp.write_all(request).expect("write");
    let mut out = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if up_to.is_some_and(|limit| out.len() >= limit) {
                    return out;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("the server neither answered nor closed within {LIMIT:?}: {e}"),
        }
    }
}

fn tls_alert(bytes: &[u8]) -> Seen {
    // An alert record: type 21, version, length 2, level, description.
    if bytes.len() == 7 && bytes[0] == 0x15 && bytes[3..5] == [0, 2] {
        Seen::TlsAlert {
            level: bytes[5],
            description: bytes[6],
        }
    } else {
        Seen::Closed(bytes.to_vec())
    }
}

/// A TLS 1.3 handshake trusting `ca`, presenting `client` (certificate, key),
/// then one read: in TLS 1.3 the server checks the client's certificate after
/// the client has finished, so its verdict (an alert, or its HTTP/2 SETTINGS)
/// arrives here. `Ok`: bytes read; `Err`: the TLS error.
fn tls_handshake_then_read(
    port: u16,
    ca: &Path,
    client: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<usize, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("trusted");
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .expect("certificate file")
                .collect::<Result<Vec<_>, _>>()
                .expect("certificates");
            let key = PrivateKeyDer::from_pem_file(key).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        }
        None => builder.with_no_client_auth(),
    };
    let mut tls = rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        ServerName::try_from("localhost").expect("name"),
    )
    .expect("TLS client");
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    let mut buf = [0; 64];
    rustls::Stream::new(&mut tls, &mut tcp)
        .read(&mut buf)
        .map_err(|e| e.to_string())
}

/// A ClientHello that would be acceptable to the server at TLS 1.2, offering
/// `version` as its only protocol version (no supported_versions extension).
fn client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = version.to_vec();
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
    // ECDHE-ECDSA- and ECDHE-RSA-AES128-GCM-SHA256; no compression.
    body.extend_from_slice(&[0, 4, 0xc0, 0x2b, 0xc0, 0x2f, 1, 0]);
    let extensions: &[u8] = &[
        0x00, 0x0a, 0, 6, 0, 4, 0x00, 0x1d, 0x00, 0x17, // groups: x25519, P-256
        0x00, 0x0b, 0, 2, 1, 0, // point formats: uncompressed
        0x00, 0x0d, 0, 8, 0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, // signature schemes
    ];
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(extensions);
    let mut handshake = vec![1, 0];
    handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Whether `seen` is what `expect` asks for; `Err` says how it differs.
fn matches(seen: &Seen, expect: &Expect) -> Result<(), String> {
    let mismatch = || Err(format!("expected {expect:?}, got {seen:?}"));
    match (expect, seen) {
        (
            Expect::Status {
                code,
                words,
                stored,
            },
            Seen::Status {
                code: got,
                message,
                stored: trailer,
                transport: false,
                accept_encoding,
            },
        ) => {
            if got != code || stored != trailer {
                return mismatch();
            }
            // What the client is told, in the message or in grpc-accept-encoding.
            let told = format!(
                "{message} accepts: {}",
                accept_encoding.as_deref().unwrap_or("-")
            );
            match words.iter().find(|w| !told.contains(*w)) {
                Some(missing) => Err(format!("{seen:?} does not say {missing:?}")),
                None => Ok(()),
            }
        }
        (Expect::Http(code, words), Seen::Http(got, body)) if code == got => {
            match words.iter().find(|w| !body.contains(*w)) {
                Some(missing) => Err(format!("{seen:?} does not say {missing:?}")),
                None => Ok(()),
            }
        }
        (
            Expect::TlsAlert(code),
            Seen::TlsAlert {
                level: 2,
                description,
            },
        ) if code == description => Ok(()),
        (Expect::NoHttp1, Seen::Closed(bytes)) => {
            if bytes.starts_with(b"HTTP/1") {
                return mismatch();
            }
            // What it did send is its HTTP/2 SETTINGS: it speaks nothing else.
            if bytes.len() >= 9 && bytes[3] == 4 {
                Ok(())
            } else {
                mismatch()
            }
        }
        (Expect::CertificateRefused(alert), Seen::TlsRefused(error))
            if error.contains(&format!("received fatal alert: {alert}")) =>
        {
            Ok(())
        }
        (_, Seen::Other(what)) => Err(format!("expected {expect:?}, got: {what}")),
        _ => mismatch(),
    }
}

/// The sensor ids whose readings a stream case sends before the bad one.
fn sent_before_bad(case: &Case) -> Option<(String, Vec<SensorReading>)> {
    let Expect::Status {
        stored: Some(n), ..
    } = case.expect
    else {
        return None;
    };
    let readings: Vec<SensorReading> = match &case.send {
        Send::ClientStream(rs, _) | Send::Chat(rs, _) => {
            rs.iter().take(n as usize).cloned().collect()
        }
        Send::Raw(request) => {
            // The frames before the bad one, decoded back.
            let mut rest = request.body.as_slice();
            let mut out = Vec::new();
            while out.len() < n as usize {
                let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
                out.push(SensorReading::decode(&rest[5..5 + len]).expect("a good frame"));
                rest = &rest[5 + len..];
            }
            out
        }
        _ => return None,
    };
    Some((readings[0].sensor_id.clone(), readings))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_stores_nothing_and_the_server_keeps_serving() {
    let servers = Servers::start();
    let cases = cases();
    assert!(cases.len() >= 25, "{} cases", cases.len());

    let mut failures = Vec::new();
    for case in &cases {
        let before = servers.total_stored(case.on).await;
        let seen = tokio::time::timeout(LIMIT, send(&servers, case))
            .await
            .unwrap_or_else(|_| Seen::Other(format!("no answer within {LIMIT:?}")));
        let stored = servers.total_stored(case.on).await - before;

        let mut verdict = matches(&seen, &case.expect);
        // Nothing stored but what the trailer states, and that reads back.
        let allowed = match case.expect {
            Expect::Status {
                stored: Some(n), ..
            } => n,
            _ => 0,
        };
        if verdict.is_ok() && stored != allowed {
            verdict = Err(format!("{stored} readings stored, expected {allowed}"));
        }
        if verdict.is_ok()
            && let Some((sensor, sent)) = sent_before_bad(case)
        {
            let back = servers.read_back(case.on, &sensor).await;
            if back != sent {
                verdict = Err(format!("stored {back:?}, expected {sent:?}"));
            }
        }
        // No message ever carries a token, right or wrong.
        if let Seen::Status { message, .. } = &seen
            && (message.contains(TOKEN) || message.contains(WRONG_TOKEN))
        {
            verdict = Err(format!("the status carries a token: {message:?}"));
        }
        // Whatever happened, the server serves the next good call.
        if let Err(e) = servers.still_serving(case.on).await {
            failures.push(format!("{}: the server stopped serving: {e}", case.name));
            break;
        }

        match verdict {
            Ok(()) => eprintln!("ok    {}", case.name),
            Err(e) => {
                eprintln!("FAIL  {}: {e}", case.name);
                failures.push(format!("{}: {e}", case.name));
            }
        }
    }

    // The server's own log of all this names no token, right or wrong.
    let Servers { plain, .. } = servers;
    let (output, _) = plain.terminate(LIMIT);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    for secret in [TOKEN, WRONG_TOKEN] {
        assert!(!log.contains(secret), "the server logged {secret}:\n{log}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The hand-made zstd frames are real ones: with a small window the frame
/// decodes to its payload, with a 1 GiB window zstd refuses it for its window
/// alone, as the server's decoder (the same crate) does.
#[test]
fn hand_made_zstd_frames_differ_only_in_their_window() {
    let payload = encoded(&good("bi-zstd"));
    let small = zstd::stream::decode_all(zstd_demanding_window(10, &payload).as_slice());
    assert_eq!(small.expect("a 1 KiB window decodes"), payload);
    let huge = zstd::stream::decode_all(zstd_demanding_window(30, &payload).as_slice())
        .expect_err("a 1 GiB window is over zstd's default limit");
    assert!(
        huge.to_string().contains("Frame requires too much memory"),
        "{huge}"
    );
}
