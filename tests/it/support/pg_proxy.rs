//! A TCP proxy between a replica and PostgreSQL that makes the network's
//! faults happen when a test says, at the byte they must happen at:
//! - [`Cut::BeforeCommit`]: the next `COMMIT` is never forwarded and the
//!   connection is dropped (the server rolls the transaction back);
//! - [`Cut::AfterCommit`]: the next `COMMIT` is forwarded, the server's
//!   answer (sent only once the commit is durable) is read and thrown away,
//!   and the connection is dropped: the client cannot know it committed;
//! - [`PgProxy::freeze`]: nothing is forwarded either way, on every
//!   connection and on new ones, while the sockets stay open: a database
//!   that does not answer (a paused host, a partition), which no RST reveals.
//!
//! Why a proxy and not `pg_terminate_backend`: a backend terminated "during
//! COMMIT" is a race between the test and the server; here the cut is tied
//! to the message itself, so each run is the same.
//!
//! It reads the protocol's framing only on plain connections (the replica's
//! URL says `sslmode=disable`): the startup packet, then typed messages
//! (a byte, a length, the body). A connection that asks for TLS is passed
//! through unread. tokio-postgres commits with the simple query `COMMIT`.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
};

/// Where the next `COMMIT` is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    BeforeCommit,
    AfterCommit,
}

#[derive(Debug)]
struct State {
    armed: Mutex<Option<Cut>>,
    cuts: AtomicUsize,
    frozen: watch::Sender<bool>,
}

/// A running proxy; it stops with the test process.
#[derive(Debug)]
pub struct PgProxy {
    port: u16,
    state: Arc<State>,
}

impl PgProxy {
    /// A proxy on a port of 127.0.0.1 to PostgreSQL on `upstream` there.
    pub async fn start(upstream: u16) -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            armed: Mutex::new(None),
            cuts: AtomicUsize::new(0),
            frozen: watch::channel(false).0,
        });
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        relay(client, server, state).await;
                    }
                });
            }
        });
        PgProxy { port, state }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cuts the next `COMMIT` any connection sends, as `cut` says.
    pub fn cut_next_commit(&self, cut: Cut) {
        *self.state.armed.lock().unwrap() = Some(cut);
    }

    /// How many `COMMIT`s were cut so far.
    pub fn cuts(&self) -> usize {
        self.state.cuts.load(Ordering::SeqCst)
    }

    /// Stops forwarding anything, sockets left open.
    pub fn freeze(&self) {
        self.state.frozen.send_replace(true);
    }

    /// Forwards again what was held and what comes.
    pub fn thaw(&self) {
        self.state.frozen.send_replace(false);
    }
}

/// Both directions of one connection, until either ends or a cut ends both.
async fn relay(client: TcpStream, server: TcpStream, state: Arc<State>) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Set once a COMMIT was forwarded to be cut after: the server's next
    // bytes are its answer to it.
    let swallow = Arc::new(AtomicBool::new(false));
    tokio::select! {
        _ = to_server(client_read, server_write, state.clone(), swallow.clone()) => {}
        _ = to_client(server_read, client_write, state, swallow) => {}
    }
}

/// Waits while the proxy is frozen.
async fn unfrozen(state: &State) {
    let mut frozen = state.frozen.subscribe();
    let _ = frozen.wait_for(|f| !*f).await;
}

/// Client to server, message by message.
async fn to_server(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    state: Arc<State>,
    swallow: Arc<AtomicBool>,
) -> std::io::Result<()> {
    // The startup packet (or an SSLRequest): a length, then the rest.
    let mut length = [0u8; 4];
    from.read_exact(&mut length).await?;
    let mut startup = vec![0u8; (u32::from_be_bytes(length) as usize).saturating_sub(4)];
    from.read_exact(&mut startup).await?;
    unfrozen(&state).await;
    to.write_all(&length).await?;
    to.write_all(&startup).await?;
    if startup.starts_with(&80877103u32.to_be_bytes()) {
        // TLS follows: pass it through unread.
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            unfrozen(&state).await;
            to.write_all(&buf[..n]).await?;
        }
    }
    loop {
        let mut head = [0u8; 5];
        from.read_exact(&mut head).await?;
        let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; length.saturating_sub(4)];
        from.read_exact(&mut body).await?;
        if head[0] == b'Q' && body == b"COMMIT\0" {
            let cut = state.armed.lock().unwrap().take();
            match cut {
                Some(Cut::BeforeCommit) => {
                    state.cuts.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
                Some(Cut::AfterCommit) => swallow.store(true, Ordering::SeqCst),
                None => {}
            }
        }
        unfrozen(&state).await;
        to.write_all(&head).await?;
        to.write_all(&body).await?;
    }
}

/// Server to client, as it comes; after a COMMIT to be cut after, its
/// answer is read, dropped, and the connection ends.
async fn to_client(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    state: Arc<State>,
    swallow: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if swallow.load(Ordering::SeqCst) {
            state.cuts.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        unfrozen(&state).await;
        to.write_all(&buf[..n]).await?;
    }
}
