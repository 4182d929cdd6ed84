//! CPU profiles of the whole process, for the HTTP listener's
//! `/debug/pprof/profile`, taken by the `pprof` crate (TiKV's, maintained):
//! while a profile is taken, a `SIGPROF` timer (`setitimer(ITIMER_PROF)`)
//! fires at [`FREQUENCY`] Hz of CPU time the process consumes, and the
//! crate's handler walks the interrupted thread's stack and counts it.
//! Frames in libc, libgcc, pthread and the vDSO are not walked (the crate's
//! blocklist): unwinding through them from a signal handler can deadlock.
//! When no profile is being taken there is no timer and no handler, and so
//! no cost.
//!
//! Samples carry no trace or span id: pprof-rs has no sample labels (Go's
//! `pprof.Do`), and a tokio task moves between threads from one poll to the
//! next, so a thread's sample cannot be tied to a call without a hook on
//! every poll. A profile links to traces by service and time only.
//!
//! Invariant: at most one profile at a time in the process (the crate's
//! profiler is a global; a second start is [`ProfilingError::Running`]).

use std::{io::Write as _, time::Duration};

use pprof::protos::Message as _;

/// Samples per second of CPU time, as Go's default.
pub const FREQUENCY: i32 = 100;
/// The content type of a gzipped pprof profile.
pub const PPROF_CONTENT_TYPE: &str = "application/octet-stream";
/// The content type of a flame graph.
pub const SVG_CONTENT_TYPE: &str = "image/svg+xml";

/// The flame graph of a profile without samples (inferno writes nothing
/// then): the process used no CPU while it was profiled.
const NO_SAMPLES_SVG: &str = concat!(
    r#"<?xml version="1.0" standalone="no"?>"#,
    r#"<svg version="1.1" width="600" height="60" xmlns="http://www.w3.org/2000/svg">"#,
    r#"<text x="10" y="35">No samples: the process used no CPU while it was profiled.</text>"#,
    "</svg>\n"
);

/// Why no profile was taken.
#[derive(Debug, thiserror::Error)]
pub enum ProfilingError {
    #[error("a CPU profile is already being taken")]
    Running,
    #[error("the profile was cancelled")]
    Cancelled,
    #[error("the CPU profile could not be taken: {0}")]
    Failed(String),
}

fn failed(error: impl std::fmt::Display) -> ProfilingError {
    ProfilingError::Failed(error.to_string())
}

/// Samples the process's CPU for `duration`, waiting with `wait` (which
/// returns false when cancelled), and returns pprof's gzipped protobuf, or
/// with `flamegraph` an SVG. Blocks: call it on a blocking thread.
pub fn cpu_profile(
    duration: Duration,
    flamegraph: bool,
    wait: &dyn Fn(Duration) -> bool,
) -> Result<Vec<u8>, ProfilingError> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| match e {
            pprof::Error::Running => ProfilingError::Running,
            other => failed(other),
        })?;
    if !wait(duration) {
        return Err(ProfilingError::Cancelled);
    }
    let report = guard.report().build().map_err(failed)?;
    drop(guard);
    if flamegraph {
        if report.data.is_empty() {
            return Ok(NO_SAMPLES_SVG.as_bytes().to_vec());
        }
        let mut svg = Vec::new();
        report.flamegraph(&mut svg).map_err(failed)?;
        return Ok(svg);
    }
    let profile = report.pprof().map_err(failed)?;
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&profile.encode_to_vec()).map_err(failed)?;
    gzip.finish().map_err(failed)
}
