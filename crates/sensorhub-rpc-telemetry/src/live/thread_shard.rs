//! Which shard of a recorder the current thread uses: each thread is given
//! one in turn the first time it asks, so the runtime's workers record into
//! locks and cache lines of their own instead of one that every core pulls
//! back and forth on each call.

use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed);
}

/// The current thread's shard among `shards`.
pub(crate) fn index(shards: usize) -> usize {
    SHARD.with(|shard| *shard % shards)
}
