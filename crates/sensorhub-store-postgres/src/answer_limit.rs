//! The longest a replica waits for the database to answer one operation.
//!
//! Why: a database that falls silent (a paused host, a partition, a
//! PostgreSQL stuck on its disk) sends no error, only silence. TCP notices
//! late or never: a paused process's kernel still acknowledges every byte
//! and answers keepalive probes. Without a limit, a call with no deadline
//! would wait for as long as the silence lasts, and so would every write
//! queued behind the writer's group. With it, each operation ends after
//! [`ANSWER_LIMIT`] with `UNAVAILABLE` and a message that says whether
//! anything may have been stored (`failure.rs`). The limit is far above a
//! healthy answer (a group commit of thousands of rows takes milliseconds)
//! so that a slow database is not taken for a silent one: a write cut
//! short during `COMMIT` is the one outcome the caller cannot know.
//!
//! Invariant: a connection whose answer did not come is thrown away, never
//! given back to the pool, so that the next operation does not wait on it
//! too; the pool opens a new one.

use std::time::Duration;

use deadpool_postgres::Object;

use crate::telemetry::Pooled;

/// How long one operation may wait for the database's answer.
pub(crate) const ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// The database did not answer within [`ANSWER_LIMIT`].
#[derive(Debug)]
pub(crate) struct Silent;

/// Runs `operation` on `client`, for at most [`ANSWER_LIMIT`]. If it runs
/// out, the operation is dropped where it stood (an open transaction is
/// rolled back by the server when the connection closes) and the connection
/// is discarded.
pub(crate) async fn answered<T>(
    mut client: Pooled<'_>,
    operation: impl AsyncFnOnce(&mut Object) -> T,
) -> Result<T, Silent> {
    match tokio::time::timeout(ANSWER_LIMIT, operation(&mut client)).await {
        Ok(answer) => Ok(answer),
        Err(_) => {
            client.discard();
            Err(Silent)
        }
    }
}
