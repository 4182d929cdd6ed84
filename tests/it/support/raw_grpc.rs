//! A raw gRPC client over plaintext HTTP/2 (the `h2` crate), for requests a
//! well-behaved client never sends: bytes that are not protobuf, frames with
//! the compressed flag and any `grpc-encoding`, lying length prefixes, any
//! metadata. It reports exactly what came back: the HTTP status, the gRPC
//! status from the headers (trailers-only) or the trailers, the response
//! messages, or the HTTP/2 error.

use std::{io::Write, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, Request};
use tokio::net::TcpStream;

/// A gRPC message frame: the compressed flag, the big-endian length, the bytes.
pub fn frame(compressed: bool, payload: &[u8]) -> Vec<u8> {
    frame_declaring(compressed, payload.len() as u32, payload)
}

/// A frame whose length prefix says `declared`, whatever `payload` really is.
pub fn frame_declaring(compressed: bool, declared: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(u8::from(compressed));
    out.extend_from_slice(&declared.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("gzip in memory");
    encoder.finish().expect("gzip in memory")
}

/// A zstd frame whose header asks for a `2^window_log`-byte decompression
/// window (no content size declared, so the decoder must plan for all of
/// it), holding `payload` as one raw block.
pub fn zstd_demanding_window(window_log: u8, payload: &[u8]) -> Vec<u8> {
    assert!(
        (10..=41).contains(&window_log),
        "zstd window logs are 10..=41"
    );
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd]; // magic number
    out.push(0x00); // descriptor: no content size, not single-segment, no checksum
    out.push((window_log - 10) << 3); // window descriptor: exponent, mantissa 0
    let block_header = ((payload.len() as u32) << 3) | 1; // raw block, the last
    out.extend_from_slice(&block_header.to_le_bytes()[..3]);
    out.extend_from_slice(payload);
    out
}

/// One request: the method path, metadata (beyond `content-type` and `te`)
/// and the request body (frames), sent with END_STREAM.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub path: String,
    pub metadata: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    pub fn new(path: &str, token: Option<&str>, body: Vec<u8>) -> Self {
        let metadata = token
            .map(|t| vec![("authorization".to_owned(), t.as_bytes().to_vec())])
            .unwrap_or_default();
        Self {
            path: path.to_owned(),
            metadata,
            body,
        }
    }

    pub fn with(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.metadata.push((name.to_owned(), value.into()));
        self
    }
}

/// What the server answered.
#[derive(Debug, Default)]
pub struct RawResponse {
    /// `:status`, when a response head arrived.
    pub http_status: Option<u16>,
    pub headers: HeaderMap,
    pub trailers: HeaderMap,
    /// The response messages' payloads (length prefixes removed).
    pub messages: Vec<Bytes>,
    /// The HTTP/2 error that ended the stream or connection instead.
    pub h2_error: Option<String>,
}

impl RawResponse {
    /// A metadata value from the trailers, or from the headers for a
    /// trailers-only response.
    pub fn get(&self, name: &str) -> Option<String> {
        self.trailers
            .get(name)
            .or_else(|| self.headers.get(name))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn grpc_status(&self) -> Option<i32> {
        self.get("grpc-status").and_then(|s| s.parse().ok())
    }

    /// `grpc-message`, percent-decoded as the gRPC spec encodes it.
    pub fn grpc_message(&self) -> String {
        percent_decode(&self.get("grpc-message").unwrap_or_default())
    }
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `requests` one after the other on one new HTTP/2 connection and
/// reads each whole answer, all within `limit`: whether the connection still
/// serves after what came before.
pub async fn calls_on_one_connection(
    port: u16,
    requests: Vec<RawRequest>,
    limit: Duration,
) -> Vec<RawResponse> {
    tokio::time::timeout(limit, async {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (client, connection) = h2::client::Builder::new()
            // Let the server, not this client, decide what is too large.
            .max_header_list_size(u32::MAX)
            .handshake::<_, Bytes>(tcp)
            .await
            .expect("HTTP/2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut out = Vec::new();
        let mut client = client;
        for request in requests {
            out.push(call_on(&mut client, port, request).await);
        }
        out
    })
    .await
    .unwrap_or_else(|_| panic!("no answer within {limit:?}"))
}

async fn call_on(
    client: &mut h2::client::SendRequest<Bytes>,
    port: u16,
    request: RawRequest,
) -> RawResponse {
    let mut out = RawResponse::default();
    let mut client = match client.clone().ready().await {
        Ok(client) => client,
        Err(e) => {
            out.h2_error = Some(e.to_string());
            return out;
        }
    };
    let mut head = Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:{port}{}", request.path))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in &request.metadata {
        head = head.header(name.as_str(), value.as_slice());
    }
    let head = head.body(()).expect("request head");
    let (response, mut send) = match client.send_request(head, false) {
        Ok(sent) => sent,
        Err(e) => {
            out.h2_error = Some(e.to_string());
            return out;
        }
    };
    // The server may answer (and reset) before reading everything.
    let _ = send.send_data(Bytes::from(request.body), true);
    let response = match response.await {
        Ok(response) => response,
        Err(e) => {
            out.h2_error = Some(e.to_string());
            return out;
        }
    };
    let (parts, mut body) = response.into_parts();
    out.http_status = Some(parts.status.as_u16());
    out.headers = parts.headers;
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(chunk) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                data.extend_from_slice(&chunk);
            }
            Err(e) => {
                out.h2_error = Some(e.to_string());
                return out;
            }
        }
    }
    match body.trailers().await {
        Ok(trailers) => out.trailers = trailers.unwrap_or_default(),
        Err(e) => out.h2_error = Some(e.to_string()),
    }
    let mut rest = data.as_slice();
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let end = (5 + len).min(rest.len());
        out.messages.push(Bytes::copy_from_slice(&rest[5..end]));
        rest = &rest[end..];
    }
    out
}
