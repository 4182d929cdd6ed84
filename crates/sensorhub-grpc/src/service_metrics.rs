//! What the SensorService measures about its own work, through the
//! OpenTelemetry metrics API (per call or per chunk, never per reading on
//! the hot path). The RPC-level metrics (A66, semconv) come from the
//! telemetry layer; these add what only the service knows:
//!
//! - `sensorhub.readings.stored` ({reading}) by `sensorhub.rpc.kind`
//!   (`unary`, `client_stream`, `chat`): readings acknowledged as durable;
//! - `sensorhub.readings.refused` ({reading}) by `sensorhub.refusal.reason`
//!   (`temperature.not_finite`, …: a fixed set from the validation rules);
//! - `sensorhub.streams.active` ({stream}) by `sensorhub.rpc.kind`
//!   (`client_stream`, `server_stream`, `chat`);
//! - `sensorhub.calls.shed` ({call}): unary calls refused because the
//!   server already had its maximum in progress;
//! - `sensorhub.calls.denied` ({call}) by `sensorhub.denied.rule` (`write`,
//!   `read`): calls refused `PERMISSION_DENIED` because a sensor was outside
//!   the caller's scope. The rule, never the identity's label, is the
//!   attribute: labels are the operator's and unbounded, rules are two.

use opentelemetry::{
    KeyValue, global,
    metrics::{BoundCounter, Counter, UpDownCounter},
};
use sensorhub_core::Violation;

use crate::auth::{Denied, Rule};

/// The kinds of call that store or stream readings.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RpcKind {
    Unary,
    ClientStream,
    ServerStream,
    Chat,
}

impl RpcKind {
    fn as_str(self) -> &'static str {
        match self {
            RpcKind::Unary => "unary",
            RpcKind::ClientStream => "client_stream",
            RpcKind::ServerStream => "server_stream",
            RpcKind::Chat => "chat",
        }
    }

    fn attribute(self) -> [KeyValue; 1] {
        [KeyValue::new("sensorhub.rpc.kind", self.as_str())]
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ServiceMetrics {
    stored: StoredByKind,
    refused: Counter<u64>,
    active: UpDownCounter<i64>,
    shed: Counter<u64>,
    denied: Counter<u64>,
}

/// `sensorhub.readings.stored` bound to each kind of call that stores
/// readings: a unary call counts itself without hashing its attribute, and
/// every kind's series exists from the start, as the other counters' do.
#[derive(Debug, Clone)]
struct StoredByKind {
    unary: BoundCounter<u64>,
    client_stream: BoundCounter<u64>,
    chat: BoundCounter<u64>,
}

impl StoredByKind {
    fn bind(stored: &Counter<u64>) -> Self {
        let bound = |kind: RpcKind| {
            let series = stored.bind(&kind.attribute());
            series.add(0);
            series
        };
        Self {
            unary: bound(RpcKind::Unary),
            client_stream: bound(RpcKind::ClientStream),
            chat: bound(RpcKind::Chat),
        }
    }
}

impl ServiceMetrics {
    pub(crate) fn new() -> Self {
        let meter = global::meter("sensorhub-grpc");
        let refused = meter
            .u64_counter("sensorhub.readings.refused")
            .with_unit("{reading}")
            .with_description("Readings refused by validation")
            .build();
        // Every reason's series exists from the start, so a rate or an
        // increase sees the first refusal too.
        for (field, reason) in Violation::REASONS {
            refused.add(0, &[refusal_reason(field, reason)]);
        }
        let active = meter
            .i64_up_down_counter("sensorhub.streams.active")
            .with_unit("{stream}")
            .with_description("Streaming calls in progress")
            .build();
        for kind in [RpcKind::ClientStream, RpcKind::ServerStream, RpcKind::Chat] {
            active.add(0, &kind.attribute());
        }
        let shed = meter
            .u64_counter("sensorhub.calls.shed")
            .with_unit("{call}")
            .with_description("Unary calls refused with UNAVAILABLE because the server was full")
            .build();
        shed.add(0, &[]);
        let denied = meter
            .u64_counter("sensorhub.calls.denied")
            .with_unit("{call}")
            .with_description(
                "Calls refused PERMISSION_DENIED: a sensor outside what the caller's identity may write or read",
            )
            .build();
        for rule in [Rule::Write, Rule::Read] {
            denied.add(0, &[denied_rule(rule)]);
        }
        let stored = meter
            .u64_counter("sensorhub.readings.stored")
            .with_unit("{reading}")
            .with_description("Readings stored durably and acknowledged")
            .build();
        Self {
            denied,
            stored: StoredByKind::bind(&stored),
            refused,
            active,
            shed,
        }
    }

    /// Counts a unary call refused because the server was full.
    pub(crate) fn shed(&self) {
        self.shed.add(1, &[]);
    }

    pub(crate) fn stored(&self, kind: RpcKind, readings: u64) {
        if readings == 0 {
            return;
        }
        let series = match kind {
            RpcKind::Unary => &self.stored.unary,
            RpcKind::ClientStream => &self.stored.client_stream,
            RpcKind::Chat => &self.stored.chat,
            RpcKind::ServerStream => {
                debug_assert!(false, "a server stream stores nothing");
                return;
            }
        };
        series.add(readings);
    }

    /// Counts a refusal and logs it (inside the call's span, so the log
    /// record carries the call's trace id).
    pub(crate) fn refused(&self, violation: &Violation) {
        tracing::info!(
            field = violation.field,
            reason = violation.reason,
            "reading refused: {}",
            violation.description
        );
        self.refused
            .add(1, &[refusal_reason(violation.field, violation.reason)]);
    }

    /// Counts a call refused for its scope and logs it (in the call's span;
    /// the label and the sensor id, never a token).
    pub(crate) fn denied(&self, denied: &Denied) {
        tracing::info!(
            rule = denied.rule.as_str(),
            identity = %denied.label,
            sensor_id = %denied.sensor_id,
            "call denied: {denied}"
        );
        self.denied.add(1, &[denied_rule(denied.rule)]);
    }

    /// Counts a stream as active until the guard is dropped.
    pub(crate) fn stream(&self, kind: RpcKind) -> ActiveStream {
        self.active.add(1, &kind.attribute());
        ActiveStream {
            active: self.active.clone(),
            kind,
        }
    }
}

fn denied_rule(rule: Rule) -> KeyValue {
    KeyValue::new("sensorhub.denied.rule", rule.as_str())
}

fn refusal_reason(field: &str, reason: &str) -> KeyValue {
    KeyValue::new("sensorhub.refusal.reason", format!("{field}.{reason}"))
}

/// Keeps `sensorhub.streams.active` up while alive.
#[derive(Debug)]
pub(crate) struct ActiveStream {
    active: UpDownCounter<i64>,
    kind: RpcKind,
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.active.add(-1, &self.kind.attribute());
    }
}
