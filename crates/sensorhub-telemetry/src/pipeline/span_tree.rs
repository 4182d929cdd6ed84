//! Finished spans kept in memory, and a trace printed as a tree: what the
//! demo shows instead of a Jaeger UI (seed 002 printed spans to the console).

use std::{
    collections::VecDeque,
    fmt::Write as _,
    sync::{Arc, Mutex},
};

use opentelemetry::trace::{SpanId, SpanKind};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter},
};

/// How many finished spans are kept; older ones are forgotten.
const KEEP: usize = 4096;

/// A span exporter that keeps the last finished spans in memory.
#[derive(Debug, Clone, Default)]
pub struct SpanRecorder {
    spans: Arc<Mutex<VecDeque<SpanData>>>,
}

impl SpanExporter for SpanRecorder {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        for span in batch {
            if spans.len() == KEEP {
                spans.pop_front();
            }
            spans.push_back(span);
        }
        Ok(())
    }
}

impl SpanRecorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A recent trace that crossed the wire: a client span, its server span,
    /// and internal spans under that, printed as a tree. `None` if there is
    /// no such trace yet.
    pub fn render_complete_trace(&self) -> Option<String> {
        let spans: Vec<SpanData> = self
            .spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let has_children = |id: SpanId| spans.iter().any(|s| s.parent_span_id == id);
        let server = spans.iter().rev().find(|server| {
            server.span_kind == SpanKind::Server
                && has_children(server.span_context.span_id())
                && spans.iter().any(|client| {
                    client.span_kind == SpanKind::Client
                        && client.span_context.span_id() == server.parent_span_id
                })
        })?;
        let trace_id = server.span_context.trace_id();
        let in_trace: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.span_context.trace_id() == trace_id)
            .collect();
        let roots: Vec<&SpanData> = in_trace
            .iter()
            .copied()
            .filter(|s| {
                !in_trace
                    .iter()
                    .any(|p| p.span_context.span_id() == s.parent_span_id)
            })
            .collect();
        let mut out = format!("trace {trace_id}\n");
        for root in roots {
            render(&mut out, root, &in_trace, "", true);
        }
        Some(out)
    }
}

fn render(out: &mut String, span: &SpanData, all: &[&SpanData], prefix: &str, last: bool) {
    let micros = span
        .end_time
        .duration_since(span.start_time)
        .unwrap_or_default()
        .as_secs_f64()
        * 1e6;
    let kind = match span.span_kind {
        SpanKind::Client => "client",
        SpanKind::Server => "server",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    };
    let status = span
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "rpc.response.status_code")
        .map(|kv| format!("  {}", kv.value))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{prefix}{} {}  [{kind}, span {}, {micros:.0} µs]{status}",
        if last { "└─" } else { "├─" },
        span.name,
        span.span_context.span_id(),
    );
    let mut children: Vec<&&SpanData> = all
        .iter()
        .filter(|s| s.parent_span_id == span.span_context.span_id())
        .collect();
    children.sort_by_key(|s| s.start_time);
    let child_prefix = format!("{prefix}{}", if last { "   " } else { "│  " });
    let n = children.len();
    for (i, child) in children.into_iter().enumerate() {
        render(out, child, all, &child_prefix, i + 1 == n);
    }
}
