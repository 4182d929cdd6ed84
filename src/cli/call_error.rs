//! How a client command reports a call that failed: the canonical code
//! name, as gRPC's own tools, specs and metrics spell it, then the server's
//! message (`UNAUTHENTICATED: Invalid token`). tonic's `Display` for a
//! status is a debugging form (`status: 'The request does not have valid
//! authentication credentials', message: "Invalid token", …`) that names
//! the code by a sentence no gRPC document uses.

use std::fmt;

use sensorhub_rpc_telemetry::conventions::status_name;

/// A failed call, as the CLI prints it. `?` on a call's result in a client
/// command goes through this (`.map_err(CallError::from)?`), so `main`
/// prints `error: UNAUTHENTICATED: Invalid token`.
#[derive(Debug)]
pub struct CallError(tonic::Status);

impl CallError {
    /// The status in the CLI's words, for a log line or a summary.
    pub fn describe(status: &tonic::Status) -> String {
        CallError::words(status.code(), status.message())
    }

    /// A code and a message in the CLI's words (`load` keeps only these of
    /// the first failure of each code).
    pub fn words(code: tonic::Code, message: &str) -> String {
        let name = status_name(code as i32);
        match message {
            "" => name.to_owned(),
            message => format!("{name}: {message}"),
        }
    }
}

impl From<tonic::Status> for CallError {
    fn from(status: tonic::Status) -> Self {
        CallError(status)
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&CallError::describe(&self.0))
    }
}

impl std::error::Error for CallError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_by_its_canonical_name_then_the_message() {
        let status = tonic::Status::unauthenticated("Invalid token");
        assert_eq!(
            CallError::from(status).to_string(),
            "UNAUTHENTICATED: Invalid token"
        );
        let status = tonic::Status::new(tonic::Code::DeadlineExceeded, "");
        assert_eq!(CallError::describe(&status), "DEADLINE_EXCEEDED");
    }
}
