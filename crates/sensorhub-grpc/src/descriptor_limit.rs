//! The process's file descriptor limit, and how many connections fit under it.
//!
//! Every connection is a descriptor, and so are the store's files, the
//! reader pool's connections, the HTTP listener's connections and the
//! runtime's own. With the common soft limit of 1,024 the descriptors ran
//! out at about 1,000 connections, long before `--max-connections` (10,000):
//! `accept` failed, and so did opening store files for reads. So at start
//! the soft limit is raised to the hard one, and `--max-connections` is
//! lowered, if need be, to what fits beside a reserve for everything else.
//! A connection over that limit is then refused cleanly, as any other over
//! `--max-connections`, instead of taking a descriptor the store needed.

/// Descriptors kept for everything but gRPC connections: the store (the
/// database, its WAL and shared memory, the journal, up to 16 pooled reader
/// connections of two files each, and more under a burst of reads), the
/// listeners, the runtime, telemetry exporters and standard streams. The
/// HTTP listener's connections come on top.
pub const RESERVED: u64 = 256;

/// What [`fit_connections`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorPlan {
    /// The soft limit at start.
    pub soft_before: u64,
    /// The soft limit now (the hard one, if raising worked).
    pub soft: u64,
    /// The hard limit; `None`: unlimited.
    pub hard: Option<u64>,
    /// Descriptors kept for everything but gRPC connections.
    pub reserved: u64,
    /// The connection limit asked for.
    pub requested: usize,
    /// The connection limit that fits: `requested`, or fewer.
    pub max_connections: usize,
}

impl DescriptorPlan {
    /// Whether the connection limit had to be lowered.
    pub fn lowered(&self) -> bool {
        self.max_connections < self.requested
    }
}

/// Raises the soft descriptor limit to the hard one, and fits `requested`
/// connections under it beside [`RESERVED`] plus `http_connections`
/// descriptors. Where the process has no such limit (not Unix), nothing changes.
pub fn fit_connections(requested: usize, http_connections: usize) -> DescriptorPlan {
    let reserved = RESERVED + http_connections as u64;
    let (soft_before, soft, hard) = raise_soft_limit();
    let max_connections = match soft {
        u64::MAX => requested,
        soft => {
            // At least a quarter of the limit, even when the reserve does not
            // fit: a server that takes no connection at all serves no one.
            let room = soft.saturating_sub(reserved).max(soft / 4).max(1);
            requested.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
    };
    DescriptorPlan {
        soft_before,
        soft,
        hard,
        reserved,
        requested,
        max_connections,
    }
}

/// (soft before, soft after, hard); `u64::MAX` stands for no limit.
#[cfg(unix)]
fn raise_soft_limit() -> (u64, u64, Option<u64>) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let soft_before = before.current.unwrap_or(u64::MAX);
    if before.current == before.maximum {
        return (soft_before, soft_before, before.maximum);
    }
    let raised = Rlimit {
        current: before.maximum,
        maximum: before.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => (
            soft_before,
            before.maximum.unwrap_or(u64::MAX),
            before.maximum,
        ),
        Err(e) => {
            tracing::warn!(error = %e, soft = soft_before, "cannot raise the descriptor limit");
            (soft_before, soft_before, before.maximum)
        }
    }
}

#[cfg(not(unix))]
fn raise_soft_limit() -> (u64, u64, Option<u64>) {
    (u64::MAX, u64::MAX, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one_and_connections_fit_under_it() {
        let plan = fit_connections(usize::MAX, 64);
        assert_eq!(Some(plan.soft), plan.hard.or(Some(u64::MAX)));
        assert!(plan.soft >= plan.soft_before);
        if plan.soft != u64::MAX {
            assert!(plan.max_connections as u64 + plan.reserved <= plan.soft.max(plan.reserved));
            assert!(plan.lowered());
        }
        // A limit that fits is kept as asked.
        let small = fit_connections(1, 64);
        assert_eq!(small.max_connections, 1);
        assert!(!small.lowered());
    }
}
