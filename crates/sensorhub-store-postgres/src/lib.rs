//! The PostgreSQL store engine: any number of sensorhub replicas on one
//! shared database, acting as one service. It implements
//! `sensorhub_core::Store`; the transport knows only that.
//!
//! Why this shape:
//! - **Durable before acknowledged.** A write is answered after `COMMIT`
//!   returned (`synchronous_commit` as the server has it, `on` by default).
//! - **Group commit.** Each replica's writer task (`writer.rs`) takes every
//!   write waiting in its queue into one transaction: one round of
//!   statements and one commit for many calls.
//! - **One commit order for all replicas.** The transaction locks the
//!   `store_clock` row before it numbers anything, so sequence numbers grow
//!   in commit order across replicas and statistics and alerts are applied
//!   exactly once, in that order (`writer.rs`).
//! - **Follow across replicas.** A commit notifies the new last sequence
//!   number; each replica listens on a connection of its own and announces
//!   it to its followers, who read `seq > cursor` (`follow.rs`).
//! - **Read your writes.** A query on any replica runs after the commits it
//!   must see returned; PostgreSQL shows a committed transaction to every
//!   statement that starts later.
//! - **Faults.** Every database call goes through the pool; a lost database
//!   makes calls fail UNAVAILABLE, readiness `Unavailable`, and the pool
//!   reconnects by itself (`failure.rs`, `follow.rs`).

mod answer_limit;
mod database_url;
mod failure;
mod follow;
mod reader;
mod retention;
mod schema;
mod telemetry;
mod tls;
mod writer;

#[cfg(feature = "test-util")]
pub mod testing;

use std::{sync::Arc, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use sensorhub_core::{
    HistoryCursor, HistoryQuery, PendingWrite, Readiness, Reading, SensorStats, Store, StoreError,
    StoreSettings, StoredReading,
    idempotency::KeyedPart,
    store::{
        StoreFuture,
        activity::{StoreActivity, StoreBacklog},
        metrics::StoreMetrics,
    },
};
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tokio_postgres::{Client, error::SqlState};

pub use self::database_url::{DatabaseUrl, SslMode, UrlError};
pub use self::failure::UNREACHABLE;
use self::writer::{Command, WriteRequest, Writer};

/// Connections per replica: the writer's, the queries', and spares.
const POOL_SIZE: usize = 16;
/// The longest a call waits for a connection (or for one to be made).
const POOL_WAIT: Duration = Duration::from_secs(5);
/// The longest opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often retention runs (and once at start; `retention.rs`).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// How to open a [`PostgresStore`].
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub url: DatabaseUrl,
    /// What every engine is configured with.
    pub settings: StoreSettings,
}

impl PostgresConfig {
    pub fn new(url: DatabaseUrl) -> Self {
        Self {
            url,
            settings: StoreSettings::default(),
        }
    }
}

/// A handle to the PostgreSQL store; cheap to clone, shared by all calls.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::Sender<Command>,
    pool: Pool,
    telemetry: Arc<telemetry::DbTelemetry>,
    committed: watch::Sender<u64>,
    readiness: watch::Sender<Readiness>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// The writer's commit totals and recent alerts.
    activity: Arc<StoreActivity>,
}

impl PostgresStore {
    /// Connects, creates or upgrades the schema (under an advisory lock, so
    /// replicas may start at once), and starts the writer, the listener and
    /// the retention task. Each refusal is one line saying what to fix.
    pub async fn open(config: PostgresConfig) -> Result<PostgresStore, StoreError> {
        let url = &config.url;
        let tls = tls::connector(url).map_err(|why| refused(url, why))?;
        let mut driver = url.driver_config().clone();
        driver.connect_timeout(CONNECT_TIMEOUT);
        // A host that vanishes is noticed by TCP: an idle connection after
        // 10 + 3 × 2 s of unanswered keepalive probes, a busy one once sent
        // bytes go unacknowledged for the answer limit. A database that is
        // there but silent is noticed by the answer limit (`answer_limit.rs`).
        driver.keepalives(true);
        driver.keepalives_idle(Duration::from_secs(10));
        driver.keepalives_interval(Duration::from_secs(2));
        driver.keepalives_retries(3);
        driver.tcp_user_timeout(answer_limit::ANSWER_LIMIT);
        let manager = Manager::from_config(
            driver.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| refused(url, e.to_string()))?;
        let telemetry = Arc::new(telemetry::DbTelemetry::new(url, &pool, POOL_SIZE));
        let mut client = pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => connect_refused(url, &e),
            deadpool_postgres::PoolError::Timeout(_) => refused(
                url,
                format!(
                    "no connection within {} s; is PostgreSQL running there, and are the URL's host and port right?",
                    POOL_WAIT.as_secs()
                ),
            ),
            other => refused(url, other.to_string()),
        })?;
        let found = schema::prepare(&mut client).await.map_err(|e| match e {
            schema::SchemaError::Newer(v) => refused(
                url,
                format!(
                    "it holds a sensorhub schema of version {v}, made by a newer sensorhub (this one writes version {}); run that newer sensorhub, or point this one at another database. Nothing was changed",
                    schema::VERSION
                ),
            ),
            schema::SchemaError::NoPermission(why) => refused(
                url,
                format!(
                    "user {} may not create sensorhub's tables ({why}); grant it CREATE on the schema (GRANT CREATE ON SCHEMA public TO {}), or have the tables created once by a user that may. Nothing was written",
                    url.user(),
                    url.user()
                ),
            ),
            schema::SchemaError::Db(e) => refused(url, failure::describe(&e)),
        })?;
        let last_seq: i64 = client
            .query_one("SELECT last_seq FROM store_clock", &[])
            .await
            .map_err(|e| refused(url, failure::describe(&e)))?
            .get(0);
        drop(client);
        tracing::info!(
            database = %url,
            schema_version = schema::VERSION,
            created = found == 0,
            last_seq,
            "store opened"
        );
        let last_seq = last_seq as u64;
        let (committed, _) = watch::channel(last_seq);
        let (readiness, _) = watch::channel(Readiness::Ready);
        let (commands_tx, commands_rx) = mpsc::channel(config.settings.queue_depth.max(1));
        let writer = Writer {
            pool: pool.clone(),
            settings: config.settings.clone(),
            metrics: StoreMetrics::new(config.settings.max_tracked_sensors),
            committed: committed.clone(),
            telemetry: telemetry.clone(),
        };
        let activity = writer.metrics.activity();
        let writer = tokio::spawn(writer.run(commands_rx));
        let listener = tokio::spawn(
            follow::Listener {
                config: driver,
                tls,
                pool: pool.clone(),
                committed: committed.clone(),
                readiness: readiness.clone(),
            }
            .run(),
        );
        let retention = config.settings.retention.map(|keep| {
            let pool = pool.clone();
            let settings = config.settings.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(RETENTION_EVERY);
                loop {
                    every.tick().await;
                    if let Err(e) = retention::apply(&pool, keep, &settings).await {
                        tracing::warn!(error = %e, "retention did not run; it is tried again later");
                    }
                }
            })
        });
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                commands: commands_tx,
                pool,
                telemetry,
                committed,
                readiness,
                tasks: std::sync::Mutex::new(
                    [Some(listener), retention].into_iter().flatten().collect(),
                ),
                writer: std::sync::Mutex::new(Some(writer)),
                activity,
            }),
        })
    }

    /// Runs one read on a pooled connection, for at most the answer limit.
    async fn read<T>(
        &self,
        operation: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        let client = self.inner.telemetry.connection(&self.inner.pool).await?;
        answer_limit::answered(client, async |client| {
            operation(client).await.map_err(failure::read)
        })
        .await
        .unwrap_or_else(|answer_limit::Silent| Err(failure::silent()))
    }
}

fn refused(url: &DatabaseUrl, why: impl std::fmt::Display) -> StoreError {
    StoreError::Refused(format!("cannot use the database {url}: {why}"))
}

/// Why the first connection failed, with what to fix.
fn connect_refused(url: &DatabaseUrl, e: &tokio_postgres::Error) -> StoreError {
    let code = e.code();
    let why = failure::describe(e);
    if code == Some(&SqlState::INVALID_PASSWORD)
        || code == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
    {
        refused(
            url,
            format!(
                "it refused user {} ({why}); fix the URL's user and password",
                url.user()
            ),
        )
    } else if code == Some(&SqlState::INVALID_CATALOG_NAME) {
        refused(
            url,
            format!(
                "database {} does not exist; create it (createdb {}) or fix the URL's database name",
                url.database(),
                url.database()
            ),
        )
    } else if let Some(tls) = failure::tls_failure(e) {
        let fix = match url.ssl_mode {
            _ if tls.contains("does not support TLS") => {
                "PostgreSQL there does not offer TLS: turn ssl on in its postgresql.conf, or use sslmode=disable on a network you trust"
            }
            SslMode::VerifyFull => {
                "with sslmode=verify-full the server's certificate must name the URL's host and be signed by a CA of sslrootcert=FILE (else of the system's roots): fix the host or sslrootcert, or give the server a certificate for that name"
            }
            _ => "check the server's TLS settings",
        };
        refused(url, format!("the TLS handshake failed ({tls}); {fix}"))
    } else if failure::is_connection(e) {
        refused(
            url,
            format!(
                "{UNREACHABLE} ({why}); is PostgreSQL running there, and are the URL's host and port right?"
            ),
        )
    } else {
        refused(url, why)
    }
}

impl Store for PostgresStore {
    fn system_name(&self) -> &'static str {
        "postgresql"
    }

    fn enqueue(
        &self,
        readings: Vec<Reading>,
        keyed: Option<KeyedPart>,
    ) -> StoreFuture<'_, PendingWrite> {
        Box::pin(async move {
            let (reply, pending) = PendingWrite::channel();
            self.inner
                .commands
                .send(Command::Write(WriteRequest {
                    readings,
                    keyed,
                    reply,
                }))
                .await
                .map_err(|_| StoreError::Closed)?;
            Ok(pending)
        })
    }

    /// The clock as committed now: every write acknowledged before (by any
    /// replica) is at or below it, and readable.
    fn caught_up_seq(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let last: i64 = self
                .read(async |client| {
                    client
                        .query_one("SELECT last_seq FROM store_clock", &[])
                        .await
                })
                .await?
                .get(0);
            let last = last as u64;
            self.inner.committed.send_if_modified(|seen| {
                let grew = *seen < last;
                *seen = (*seen).max(last);
                grew
            });
            Ok(last)
        })
    }

    fn committed_seq(&self) -> watch::Receiver<u64> {
        self.inner.committed.subscribe()
    }

    fn history_page<'a>(
        &'a self,
        query: &'a HistoryQuery,
        cursor: HistoryCursor,
        page_size: usize,
    ) -> StoreFuture<'a, Vec<StoredReading>> {
        Box::pin(async move {
            self.read(async |client| reader::history_page(client, query, cursor, page_size).await)
                .await
        })
    }

    fn history_last<'a>(
        &'a self,
        query: &'a HistoryQuery,
        n: u64,
    ) -> StoreFuture<'a, HistoryCursor> {
        Box::pin(async move {
            self.read(async |client| reader::history_last(client, query, n).await)
                .await
        })
    }

    fn tail_page<'a>(
        &'a self,
        sensor_id: &'a str,
        after_seq: u64,
        page_size: usize,
    ) -> StoreFuture<'a, Vec<StoredReading>> {
        Box::pin(async move {
            self.read(async |client| {
                reader::tail_page(client, sensor_id, after_seq, page_size).await
            })
            .await
        })
    }

    fn stats<'a>(&'a self, sensor_id: Option<&'a str>) -> StoreFuture<'a, Vec<SensorStats>> {
        Box::pin(async move {
            self.read(async |client| reader::stats(client, sensor_id).await)
                .await
        })
    }

    fn stats_page<'a>(&'a self, after: &'a str, limit: usize) -> StoreFuture<'a, Vec<SensorStats>> {
        Box::pin(async move {
            self.read(async |client| reader::stats_page(client, after, limit).await)
                .await
        })
    }

    fn readiness(&self) -> watch::Receiver<Readiness> {
        self.inner.readiness.subscribe()
    }

    fn activity(&self) -> Arc<StoreActivity> {
        self.inner.activity.clone()
    }

    /// The write queue; no index lag (a commit is its own index).
    fn backlog(&self) -> StoreBacklog {
        let capacity = self.inner.commands.max_capacity();
        StoreBacklog {
            queued_writes: capacity - self.inner.commands.capacity(),
            queue_capacity: capacity,
            index_lag: 0,
        }
    }

    /// Commits everything queued so far and stops; the pool's connections close.
    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let (done, rx) = oneshot::channel();
            if self.inner.commands.send(Command::Close(done)).await.is_ok() {
                let _ = rx.await;
            }
            let writer = self.inner.writer.lock().expect("poisoned").take();
            if let Some(writer) = writer {
                let _ = writer.await;
            }
            for task in std::mem::take(&mut *self.inner.tasks.lock().expect("poisoned")) {
                task.abort();
            }
            self.inner.pool.close();
            Ok(())
        })
    }
}
