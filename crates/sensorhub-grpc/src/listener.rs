//! The gRPC listener's accept loop: which connections get in, and how they
//! must prove they are HTTP/2 clients before they are served.
//!
//! tonic can accept and handshake by itself, but not with the limits this
//! server needs, so this module accepts, and `connection.rs` serves each
//! admitted connection with hyper:
//!
//! - **connection limits**: at most `max_connections` open at once, and at
//!   most `max_connections_per_ip` from one address (an IPv6 /64 counts as
//!   one). One more is closed at once (the client sees `UNAVAILABLE` and
//!   retries elsewhere) instead of queueing without bound. A connection holds
//!   its slots until it is closed.
//! - **a handshake deadline**: the TLS handshake, the HTTP/2 connection
//!   preface and the client's first SETTINGS frame must all arrive within
//!   `handshake_timeout`, each connection in its own task. A client that
//!   connects and says nothing, or trickles the preface, holds its slot for
//!   that long and never delays anyone else's accept. The preface is watched
//!   as hyper reads it ([`Admitted`] counts the first bytes), so hyper still
//!   sends its own SETTINGS at once, as a server should.
//! - **certificates that can be replaced while running**: the handshake
//!   uses whatever [`ServerTls`] holds when it starts, and
//!   [`ServerTls::reload`] swaps in new files (on SIGHUP) without touching
//!   the connections already open.
//! - **no spinning when out of descriptors**: a failed `accept` (EMFILE)
//!   backs off, up to a second, is counted, and is logged at most every ten
//!   seconds.
//!
//! A connection the server closes cleanly (graceful shutdown, idle) lingers:
//! its read side is drained for up to [`LINGER`] before the socket is closed.
//! Closing a socket that still has unread bytes makes the kernel send a TCP
//! reset, and the client's kernel then drops what the client had not read
//! yet: a client still streaming readings lost the final status (and its
//! stored count) that the server had just sent.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::server::Connected;

use crate::{
    connection_metrics::{
        CloseReason, ConnectionMetrics, HANDSHAKE_TIMEOUT, Lifetime, REFUSED_HANDSHAKE,
        REFUSED_LIMIT, REFUSED_PER_IP, handshake_result,
    },
    tls::{ServerTlsFiles, TlsFileError},
};

/// Who gets a connection, and how long each stage of it may take.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at once.
    pub max_connections: usize,
    /// Open connections from one address (an IPv6 /64); 0: no such limit.
    pub max_connections_per_ip: usize,
    /// TLS handshake, HTTP/2 preface and first SETTINGS frame, together.
    pub handshake_timeout: Duration,
    /// A connection that has never opened a call is closed (GOAWAY) after this.
    pub first_call_timeout: Duration,
    /// A connection that has served calls and has none open is closed
    /// (GOAWAY) after at least this.
    pub idle_timeout: Duration,
    /// A connection older than this (± 10 %) is sent GOAWAY, so its client
    /// reconnects and a load balancer can place it again; `None`: no limit.
    pub max_age: Option<Duration>,
    /// How long calls still open on a connection that reached `max_age`
    /// may run before it is closed under them; `None`: until they end.
    pub max_age_grace: Option<Duration>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            handshake_timeout: Duration::from_secs(10),
            first_call_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            max_age: None,
            max_age_grace: None,
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

/// The length of the HTTP/2 client connection preface (RFC 9113, section 3.4).
const PREFACE_LEN: usize = 24;
/// A frame header: length (3), type (1), flags (1), stream id (4).
const FRAME_HEADER: usize = 9;

/// Follows the first bytes a connection sends until the preface and the
/// frame after it (the client's SETTINGS) have arrived. Whether they are
/// valid is hyper's to judge; this only says they came, and when.
#[derive(Debug)]
struct PrefaceWatch {
    /// Bytes read so far, up to the end of the first frame.
    seen: usize,
    /// The first frame's header, to learn its length.
    header: [u8; FRAME_HEADER],
    /// Cancelled once the preface and the first frame are in.
    arrived: CancellationToken,
}

impl PrefaceWatch {
    fn new() -> Self {
        Self {
            seen: 0,
            header: [0; FRAME_HEADER],
            arrived: CancellationToken::new(),
        }
    }

    fn observe(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            let at = self.seen;
            if (PREFACE_LEN..PREFACE_LEN + FRAME_HEADER).contains(&at) {
                self.header[at - PREFACE_LEN] = byte;
            }
            self.seen += 1;
            if self.seen >= PREFACE_LEN + FRAME_HEADER {
                let len = u32::from_be_bytes([0, self.header[0], self.header[1], self.header[2]]);
                if self.seen >= PREFACE_LEN + FRAME_HEADER + len as usize {
                    self.arrived.cancel();
                    return;
                }
            }
        }
    }
}

/// A connection that got in: its stream, and its slots under the limits.
#[derive(Debug)]
pub struct Admitted<IO: AsyncRead + Unpin + Send + 'static> {
    /// `None` only once handed to the lingering task.
    io: Option<IO>,
    /// `None` once the preface and first SETTINGS have arrived.
    preface: Option<PrefaceWatch>,
    /// When the handshake (TLS and preface) must be done.
    deadline: tokio::time::Instant,
    slot: Option<Slot>,
    /// The server has shut down its side (sent its last bytes and a FIN).
    shut_down: bool,
}

impl<IO: AsyncRead + Unpin + Send + 'static> Admitted<IO> {
    fn new(io: IO, deadline: tokio::time::Instant, slot: Slot) -> Self {
        Self {
            io: Some(io),
            preface: Some(PrefaceWatch::new()),
            deadline,
            slot: Some(slot),
            shut_down: false,
        }
    }

    /// Cancelled once the preface and the first SETTINGS frame have been
    /// read, and the deadline they must arrive by.
    pub(crate) fn preface(&self) -> (CancellationToken, tokio::time::Instant) {
        let arrived = match &self.preface {
            Some(watch) => watch.arrived.clone(),
            None => {
                let done = CancellationToken::new();
                done.cancel();
                done
            }
        };
        (arrived, self.deadline)
    }

    /// Where the connection's task says why it ends (the first reason wins).
    pub(crate) fn close_reason(&self) -> CloseReason {
        self.slot
            .as_ref()
            .map(|slot| slot.lifetime.reason().clone())
            .unwrap_or_default()
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
        let before = buf.filled().len();
        let read = Pin::new(self.io()).poll_read(cx, buf);
        if let Some(watch) = self.preface.as_mut() {
            watch.observe(&buf.filled()[before..]);
            if watch.arrived.is_cancelled() {
                self.preface = None;
            }
        }
        read
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

/// Holds one connection's place under the limits and in the metrics (open
/// until dropped, then closed with its reason).
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    per_ip: Option<PerIpSlot>,
    lifetime: Lifetime,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(per_ip) = self.per_ip.take() {
            per_ip.release();
        }
    }
}

/// Open connections per address (IPv4, or an IPv6 /64).
#[derive(Debug, Default)]
struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

#[derive(Debug)]
struct PerIpSlot {
    table: Arc<PerIp>,
    key: IpAddr,
}

impl PerIp {
    /// The address a limit is kept under: an IPv4 address (also when mapped
    /// into IPv6), or an IPv6 address's /64, which one host usually has whole.
    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    IpAddr::V6(prefix.into())
                }
            },
        }
    }

    fn try_take(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<PerIpSlot> {
        let key = Self::key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(PerIpSlot {
            table: self.clone(),
            key,
        })
    }
}

impl PerIpSlot {
    fn release(self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What a listener does after a failed `accept`: per-connection errors
/// (the client reset before we accepted) are skipped at once; running out
/// of descriptors or memory backs off, from 10 ms doubling to 1 s, so the
/// loop does not spin on a listening socket that stays readable.
#[derive(Debug)]
pub(crate) struct AcceptBackoff {
    listener: &'static str,
    delay: Duration,
    /// Failures since the last log line, and when that was.
    unlogged: u64,
    logged_at: Option<Instant>,
    metrics: ConnectionMetrics,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(10);

    pub(crate) fn new(listener: &'static str, metrics: ConnectionMetrics) -> Self {
        Self {
            listener,
            delay: Self::FIRST,
            unlogged: 0,
            logged_at: None,
            metrics,
        }
    }

    /// The next connection `listener` accepts, after as many failures (each
    /// counted and waited out) as it takes; `None` once `stop` is cancelled.
    pub(crate) async fn accept(
        &mut self,
        listener: &TcpListener,
        stop: &CancellationToken,
    ) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return None,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok(accepted) => {
                    // The next failure starts from the shortest wait.
                    self.delay = Self::FIRST;
                    return Some(accepted);
                }
                Err(error) => self.failed(error).await,
            }
        }
    }

    /// Counts `error` and waits as long as it calls for.
    async fn failed(&mut self, error: io::Error) {
        let kind = match error.raw_os_error() {
            Some(24) => "EMFILE",
            Some(23) => "ENFILE",
            Some(105) => "ENOBUFS",
            Some(12) => "ENOMEM",
            _ => "other",
        };
        self.metrics.accept_failed(self.listener, kind);
        if kind == "other" {
            tracing::debug!(listener = self.listener, error = %error, "accepting a connection failed");
            return;
        }
        self.unlogged += 1;
        if self
            .logged_at
            .is_none_or(|at| at.elapsed() >= Self::LOG_EVERY)
        {
            tracing::warn!(
                listener = self.listener,
                error = %error,
                failures = self.unlogged,
                backoff = ?self.delay,
                "cannot accept connections: the process is out of file descriptors or memory; backing off (raise the descriptor limit, or lower --max-connections)"
            );
            self.unlogged = 0;
            self.logged_at = Some(Instant::now());
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Self::MAX);
    }
}

/// The connection tasks of one listener, for the staged shutdown.
#[derive(Debug, Clone)]
pub struct Connections {
    tasks: TaskTracker,
    /// Cancelled: every connection still open is dropped.
    force: CancellationToken,
}

impl Connections {
    pub(crate) fn new() -> Self {
        Self {
            tasks: TaskTracker::new(),
            force: CancellationToken::new(),
        }
    }

    /// Waits until every connection task has ended (lingering sockets aside).
    pub async fn closed(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Drops every connection still open.
    pub fn force_close(&self) {
        self.force.cancel();
    }

    pub(crate) fn force_token(&self) -> CancellationToken {
        self.force.clone()
    }
}

/// Accepts from `listener` until `stop`, admits within `limits`, runs the
/// handshake (TLS when `tls`), checks the HTTP/2 preface, and hands each
/// admitted connection to `serve` in its own task, one of `connections`.
pub(crate) fn accept<S: ServeConnection>(
    listener: TcpListener,
    limits: ConnectionLimits,
    tls: Option<ServerTls>,
    stop: CancellationToken,
    serve: S,
    connections: &Connections,
    metrics: ConnectionMetrics,
) {
    let tasks = connections.tasks.clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip = Arc::new(PerIp::default());
    let mut backoff = AcceptBackoff::new("grpc", metrics.clone());
    tokio::spawn(async move {
        while let Some((tcp, peer)) = backoff.accept(&listener, &stop).await {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                metrics.refused(REFUSED_LIMIT);
                tracing::debug!(%peer, limit = limits.max_connections, "connection refused: limit reached");
                continue;
            };
            let per_ip_slot = match limits.max_connections_per_ip {
                0 => None,
                limit => match per_ip.try_take(peer.ip(), limit) {
                    Some(slot) => Some(slot),
                    None => {
                        metrics.refused(REFUSED_PER_IP);
                        tracing::debug!(%peer, limit, "connection refused: per-address limit reached");
                        continue;
                    }
                },
            };
            let slot = Slot {
                _permit: permit,
                per_ip: per_ip_slot,
                lifetime: metrics.admitted(),
            };
            let _ = tcp.set_nodelay(true);
            let metrics = metrics.clone();
            let serve = serve.clone();
            let tls = tls.as_ref().map(ServerTls::acceptor);
            tasks.spawn(async move {
                // The preface must come by the same deadline (connection.rs).
                let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
                match tls {
                    Some(acceptor) => {
                        let handshake = tokio::time::timeout_at(deadline, acceptor.accept(tcp));
                        let failed = match handshake.await {
                            Ok(Ok(io)) => {
                                metrics.handshake_succeeded(io.get_ref().1);
                                serve.serve_tls(Admitted::new(io, deadline, slot)).await;
                                return;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                handshake_result(&e)
                            }
                            Err(_) => HANDSHAKE_TIMEOUT,
                        };
                        metrics.handshake_failed(failed);
                        metrics.refused(REFUSED_HANDSHAKE);
                        slot.lifetime.reason().set(REFUSED_HANDSHAKE);
                    }
                    None => serve.serve_plain(Admitted::new(tcp, deadline, slot)).await,
                }
            });
        }
    });
}

/// What serves an admitted connection (see `connection.rs`): over TLS, or
/// plaintext (`--insecure`).
pub(crate) trait ServeConnection: Clone + Send + 'static {
    fn serve_tls(
        &self,
        io: Admitted<tokio_rustls::server::TlsStream<TcpStream>>,
    ) -> impl Future<Output = ()> + Send;
    fn serve_plain(&self, io: Admitted<TcpStream>) -> impl Future<Output = ()> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_keys_group_an_ipv6_slash_64_and_unmap_ipv4() {
        let key = |s: &str| PerIp::key(s.parse().unwrap());
        assert_eq!(key("192.0.2.7"), key("::ffff:192.0.2.7"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        let table = Arc::new(PerIp::default());
        let a = table.try_take("192.0.2.7".parse().unwrap(), 2).unwrap();
        let _b = table.try_take("192.0.2.7".parse().unwrap(), 2).unwrap();
        assert!(table.try_take("192.0.2.7".parse().unwrap(), 2).is_none());
        assert!(table.try_take("192.0.2.8".parse().unwrap(), 2).is_some());
        a.release();
        assert!(table.try_take("192.0.2.7".parse().unwrap(), 2).is_some());
    }

    #[test]
    fn the_preface_has_arrived_once_the_first_frame_is_in_however_it_is_cut() {
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend_from_slice(&[0, 0, 6, 0x4, 0, 0, 0, 0, 0]);
        wire.extend_from_slice(&[0, 3, 0, 0, 0, 100]);
        for cut in 0..wire.len() {
            let mut watch = PrefaceWatch::new();
            watch.observe(&wire[..cut]);
            assert!(!watch.arrived.is_cancelled(), "after {cut} bytes");
            watch.observe(&wire[cut..]);
            assert!(watch.arrived.is_cancelled(), "cut at {cut}");
        }
        // An empty SETTINGS frame is enough.
        let mut watch = PrefaceWatch::new();
        watch.observe(&wire[..PREFACE_LEN]);
        watch.observe(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        assert!(watch.arrived.is_cancelled());
    }
}
