//! The gRPC listener's accept loop: which connections get in, and their TLS.
//!
//! tonic can accept and handshake by itself, but it cannot do two things
//! this server needs, so this module does the accepting and hands tonic
//! finished connections:
//!
//! - **a connection limit**: at most `max_connections` are open at once; one
//!   more is closed at once (the client sees `UNAVAILABLE` and retries
//!   elsewhere) instead of queueing without bound. A connection holds its
//!   slot until hyper drops it.
//! - **certificates that can be replaced while running**: the handshake
//!   uses whatever [`ServerTls`] holds when it starts, and
//!   [`ServerTls::reload`] swaps in new files (on SIGHUP) without touching
//!   the connections already open.
//!
//! Each handshake runs in its own task, with a deadline, so a client that
//! connects and says nothing holds one slot for a few seconds and never
//! delays anyone else's accept.
//!
//! A connection the server closes cleanly (graceful shutdown) lingers: its
//! read side is drained for up to [`LINGER`] before the socket is closed.
//! Closing a socket that still has unread bytes makes the kernel send a TCP
//! reset, and the client's kernel then drops what the client had not read
//! yet: a client still streaming readings lost the final status (and its
//! stored count) that the server had just sent.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, UpDownCounter},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use crate::tls::{ServerTlsFiles, TlsFileError};

/// How many connections get in, and how long a TLS handshake may take.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// The server's TLS configuration, replaceable while the server runs.
#[derive(Debug, Clone)]
pub struct ServerTls {
    files: ServerTlsFiles,
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl ServerTls {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(files: ServerTlsFiles) -> Result<Self, TlsFileError> {
        let config = files.load()?;
        Ok(Self {
            files,
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// Reads the same files again. New handshakes use them from now on;
    /// open connections keep the certificate they were made with. On an
    /// error the old configuration stays.
    pub fn reload(&self) -> Result<(), TlsFileError> {
        let config = self.files.load()?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// How long a cleanly closed connection is drained before its socket closes.
const LINGER: Duration = Duration::from_secs(2);

/// A connection that got in: its stream, and its slot under the limit.
#[derive(Debug)]
pub struct Admitted<IO: AsyncRead + Unpin + Send + 'static> {
    /// `None` only once handed to the lingering task.
    io: Option<IO>,
    slot: Option<Slot>,
    /// The server has shut down its side (sent its last bytes and a FIN).
    shut_down: bool,
}

impl<IO: AsyncRead + Unpin + Send + 'static> Admitted<IO> {
    fn new(io: IO, slot: Slot) -> Self {
        Self {
            io: Some(io),
            slot: Some(slot),
            shut_down: false,
        }
    }

    fn io(&mut self) -> &mut IO {
        self.io.as_mut().expect("the stream is only taken on drop")
    }
}

impl<IO: AsyncRead + Unpin + Send + 'static> Drop for Admitted<IO> {
    fn drop(&mut self) {
        if !self.shut_down {
            return;
        }
        let (Some(mut io), Ok(runtime)) = (self.io.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        // The slot stays taken while the socket lingers.
        let slot = self.slot.take();
        runtime.spawn(async move {
            let drain = async {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let mut read = ReadBuf::new(&mut buf);
                    match std::future::poll_fn(|cx| Pin::new(&mut io).poll_read(cx, &mut read))
                        .await
                    {
                        Ok(()) if !read.filled().is_empty() => continue,
                        // End of stream (the client closed) or an error.
                        _ => return,
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER, drain).await;
            drop(slot);
        });
    }
}

/// Holds one connection's place under the limit and in the gauge.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: ConnectionMetrics,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.open.add(-1, &[]);
    }
}

impl<IO: Connected + AsyncRead + Unpin + Send + 'static> Connected for Admitted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io
            .as_ref()
            .expect("the stream is only taken on drop")
            .connect_info()
    }
}

impl<IO: AsyncRead + Unpin + Send + 'static> AsyncRead for Admitted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.io()).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Admitted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.io()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.io()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.io()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let done = Pin::new(self.io()).poll_shutdown(cx);
        if let Poll::Ready(Ok(())) = done {
            self.shut_down = true;
        }
        done
    }
}

/// Connections over the limit and failed handshakes, and the open count.
#[derive(Debug, Clone)]
struct ConnectionMetrics {
    refused: Counter<u64>,
    open: UpDownCounter<i64>,
}

impl ConnectionMetrics {
    fn new() -> Self {
        let meter = global::meter("sensorhub-grpc");
        let refused = meter
            .u64_counter("sensorhub.connections.refused")
            .with_unit("{connection}")
            .with_description(
                "Connections closed before any call: over the limit, or a failed TLS handshake",
            )
            .build();
        for reason in [REFUSED_LIMIT, REFUSED_HANDSHAKE] {
            refused.add(0, &[KeyValue::new(REASON, reason)]);
        }
        let open = meter
            .i64_up_down_counter("sensorhub.connections.open")
            .with_unit("{connection}")
            .with_description("Connections admitted and still open")
            .build();
        open.add(0, &[]);
        Self { refused, open }
    }

    fn refused(&self, reason: &'static str) {
        self.refused.add(1, &[KeyValue::new(REASON, reason)]);
    }
}

const REASON: &str = "sensorhub.refusal.reason";
const REFUSED_LIMIT: &str = "connection_limit";
const REFUSED_HANDSHAKE: &str = "tls_handshake";

/// Plaintext connections from `listener`, at most `limits.max_connections`
/// at once, until `stop`.
pub fn plaintext(
    listener: TcpListener,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<Admitted<TcpStream>>> {
    accept_loop(listener, limits, stop, |tcp, _| async move { Ok(tcp) })
}

/// TLS connections from `listener`, handshaken with the certificate `tls`
/// holds at that moment.
pub fn tls(
    listener: TcpListener,
    limits: ConnectionLimits,
    stop: CancellationToken,
    tls: ServerTls,
) -> ReceiverStream<io::Result<Admitted<TlsStream<TcpStream>>>> {
    accept_loop(listener, limits, stop, move |tcp, peer| {
        let acceptor = tls.acceptor();
        async move {
            acceptor.accept(tcp).await.inspect_err(|e| {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
            })
        }
    })
}

fn accept_loop<IO, H, F>(
    listener: TcpListener,
    limits: ConnectionLimits,
    stop: CancellationToken,
    handshake: H,
) -> ReceiverStream<io::Result<Admitted<IO>>>
where
    IO: AsyncRead + Unpin + Send + 'static,
    H: Fn(TcpStream, SocketAddr) -> F + Send + 'static,
    F: Future<Output = io::Result<IO>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let metrics = ConnectionMetrics::new();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or the like: wait, not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                metrics.refused(REFUSED_LIMIT);
                tracing::debug!(%peer, limit = limits.max_connections, "connection refused: limit reached");
                drop(tcp);
                continue;
            };
            metrics.open.add(1, &[]);
            let slot = Slot {
                _permit: permit,
                metrics: metrics.clone(),
            };
            let _ = tcp.set_nodelay(true);
            let handshake = handshake(tcp, peer);
            let tx = tx.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(limits.handshake_timeout, handshake).await {
                    Ok(Ok(io)) => {
                        let _ = tx.send(Ok(Admitted::new(io, slot))).await;
                    }
                    Ok(Err(_)) | Err(_) => metrics.refused(REFUSED_HANDSHAKE),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
