//! Who a call is: the identity its credential (a token, or a client
//! certificate's name) stands for, with what it may write and read.
//!
//! The token check resolves the credential once per call and puts the
//! identity in the request's extensions as an `Arc<Identity>`; the
//! service takes it from there ([`Identity::of`]) and asks it per reading
//! written and per read request. A call keeps the identity it started
//! with, so a reload (SIGHUP) changes what new calls may do, never a call
//! in flight.
//!
//! Invariant: an identity holds no secret. Its label is the operator's
//! `name=` (or where the credential came from), so it may go on spans,
//! logs and status messages; the token it came from never does.

use std::sync::Arc;

use tonic::{Request, Status};

use super::scope::Scope;

/// One identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// What the operator calls it (`name=garage-sensors`), or where it was
    /// given (`tokens file line 3`, `--token 1`, `no-auth`).
    pub label: Arc<str>,
    /// The sensors it may send readings for.
    pub write: Scope,
    /// The sensors whose history and statistics it may read.
    pub read: Scope,
}

/// Which kind of permission a call lacked (`sensorhub.denied.rule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Write,
    Read,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Write => "write",
            Rule::Read => "read",
        }
    }
}

/// A sensor outside the identity's scope: what the refusal says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub rule: Rule,
    pub sensor_id: String,
    pub label: Arc<str>,
    /// The scope as the tokens file wrote it.
    pub scope: String,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = match self.rule {
            Rule::Write => "write readings for",
            Rule::Read => "read",
        };
        write!(
            f,
            "identity `{}` may not {verb} sensor {:?} (its rule: {}={})",
            self.label,
            self.sensor_id,
            self.rule.as_str(),
            self.scope
        )
    }
}

impl Identity {
    /// Everything, for `--token`, bare token lines and `--no-auth`.
    pub fn unrestricted(label: impl Into<Arc<str>>) -> Identity {
        Identity {
            label: label.into(),
            write: Scope::All,
            read: Scope::All,
        }
    }

    /// The identity the token check put on this call. A call that reached
    /// the service without one is refused (fail closed): only a server
    /// assembled without the token check would do that.
    pub fn of<T>(request: &Request<T>) -> Result<Arc<Identity>, Status> {
        request
            .extensions()
            .get::<Arc<Identity>>()
            .cloned()
            .ok_or_else(|| {
                Status::internal(
                    "this call carries no identity (the server was assembled without its token check); nothing was done",
                )
            })
    }

    /// Whether it may send readings for `sensor_id`.
    #[inline]
    pub fn may_write(&self, sensor_id: &str) -> Result<(), Denied> {
        if self.write.permits(sensor_id) {
            Ok(())
        } else {
            Err(self.denied(Rule::Write, sensor_id))
        }
    }

    /// Whether it may read `sensor_id`'s history and statistics.
    #[inline]
    pub fn may_read(&self, sensor_id: &str) -> Result<(), Denied> {
        if self.read.permits(sensor_id) {
            Ok(())
        } else {
            Err(self.denied(Rule::Read, sensor_id))
        }
    }

    #[cold]
    fn denied(&self, rule: Rule, sensor_id: &str) -> Denied {
        let scope = match rule {
            Rule::Write => &self.write,
            Rule::Read => &self.read,
        };
        Denied {
            rule,
            sensor_id: sensor_id.to_owned(),
            label: self.label.clone(),
            scope: scope.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scope::Pattern;

    #[test]
    fn a_refusal_names_the_sensor_the_identity_and_its_rule() {
        let identity = Identity {
            label: "kitchen-sensors".into(),
            write: Scope::of(vec![Pattern::new("kitchen-*").unwrap()]),
            read: Scope::none(),
        };
        assert!(identity.may_write("kitchen-1").is_ok());
        let denied = identity.may_write("garage-1").unwrap_err();
        assert_eq!(
            denied.to_string(),
            "identity `kitchen-sensors` may not write readings for sensor \"garage-1\" (its rule: write=kitchen-*)"
        );
        let denied = identity.may_read("kitchen-1").unwrap_err();
        assert_eq!(denied.rule, Rule::Read);
        assert!(denied.to_string().contains("read=(nothing)"), "{denied}");
    }
}
