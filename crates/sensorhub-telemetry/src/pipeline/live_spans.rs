//! Feeding the live view's trace ring (`sensorhub_rpc_telemetry::live::TraceRing`)
//! from the SDK: it sees the very spans the exporters see, the internal ones
//! (`INSERT readings`) and the sensors' client spans in the demo too.
//!
//! Two parts, because a trace must be chosen when it starts (its children end
//! before its root):
//! - [`LiveSampler`] wraps the sampler: at a local root it asks the ring to
//!   admit the trace (the ring takes a few per name and second). With
//!   exporters configured, their sampler decides what is recorded and the
//!   ring admits among those. With none (the embedded default), nothing is
//!   recorded but what the ring admits, plus the children of admitted traces:
//!   the view gets whole span trees while an unadmitted call pays only for a
//!   non-recording span.
//! - [`LiveSpanProcessor`] is the provider's only processor and hands every
//!   span on to the exporters' processors. It copies a span only when its
//!   trace is admitted or when it is a failed root; it never clones a
//!   `SpanData` that an exporter also needs, which a second processor
//!   registered beside the exporters' would (the SDK clones a span for each
//!   processor once there is more than one).

use std::time::{Duration, Instant};

use opentelemetry::{
    Context, KeyValue,
    trace::{Link, SpanKind, Status, TraceContextExt, TraceId},
};
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{
        Sampler, SamplingDecision, SamplingResult, ShouldSample, Span, SpanData, SpanProcessor,
    },
};
use sensorhub_rpc_telemetry::{
    conventions::semconv,
    live::{SpanOutcome, SpanRecord, TraceRing},
};

/// The sampler of a provider that feeds the trace ring.
#[derive(Debug, Clone)]
pub(crate) struct LiveSampler {
    /// The configured sampler when spans are exported; `None`: only the view records.
    exported: Option<Sampler>,
    ring: TraceRing,
}

impl LiveSampler {
    pub(crate) fn new(exported: Option<Sampler>, ring: TraceRing) -> Self {
        Self { exported, ring }
    }
}

impl ShouldSample for LiveSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let parent_span = parent_context.map(|cx| cx.span());
        let parent = parent_span.as_ref().map(|span| span.span_context());
        let valid_parent = parent.filter(|p| p.is_valid());
        let local_parent = valid_parent.filter(|p| !p.is_remote());
        // A trace that starts here cannot be pending yet: the ring answers
        // most of them without its lock.
        let admit = || match valid_parent {
            None => self.ring.admit_new(trace_id, name, Instant::now()),
            Some(_) => self.ring.admit(trace_id, name, Instant::now()),
        };
        match &self.exported {
            Some(sampler) => {
                let result = sampler.should_sample(
                    parent_context,
                    trace_id,
                    name,
                    span_kind,
                    attributes,
                    links,
                );
                if local_parent.is_none() && result.decision == SamplingDecision::RecordAndSample {
                    admit();
                }
                result
            }
            None => {
                let sampled = match local_parent {
                    Some(parent) => parent.is_sampled(),
                    None => admit(),
                };
                SamplingResult {
                    decision: if sampled {
                        SamplingDecision::RecordAndSample
                    } else {
                        SamplingDecision::Drop
                    },
                    attributes: Vec::new(),
                    trace_state: match parent {
                        Some(parent) if sampled => parent.trace_state().clone(),
                        _ => Default::default(),
                    },
                }
            }
        }
    }
}

/// The provider's one processor: the ring's share, then the exporters'.
#[derive(Debug)]
pub(crate) struct LiveSpanProcessor {
    ring: TraceRing,
    next: Vec<Box<dyn SpanProcessor>>,
}

impl LiveSpanProcessor {
    pub(crate) fn new(ring: TraceRing, next: Vec<Box<dyn SpanProcessor>>) -> Self {
        Self { ring, next }
    }
}

impl SpanProcessor for LiveSpanProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        for next in &self.next {
            next.on_start(span, cx);
        }
    }

    fn on_end(&self, span: SpanData) {
        let trace_id = span.span_context.trace_id();
        let local_root = span.parent_span_id == opentelemetry::trace::SpanId::INVALID
            || span.parent_span_is_remote;
        if self.ring.is_pending(trace_id) {
            self.ring.span_ended(trace_id, record(&span), local_root);
        } else if local_root && failed(&span) {
            self.ring.keep_root_only(trace_id, record(&span));
        }
        match self.next.as_slice() {
            [] => {}
            [only] => only.on_end(span),
            [all @ .., last] => {
                for next in all {
                    next.on_end(span.clone());
                }
                last.on_end(span);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        first_error(self.next.iter().map(|p| p.force_flush()))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        first_error(self.next.iter().map(|p| p.shutdown_with_timeout(timeout)))
    }

    fn set_resource(&mut self, resource: &Resource) {
        for next in &mut self.next {
            next.set_resource(resource);
        }
    }
}

fn first_error(results: impl Iterator<Item = OTelSdkResult>) -> OTelSdkResult {
    let mut outcome: Result<(), OTelSdkError> = Ok(());
    for result in results {
        if outcome.is_ok() {
            outcome = result;
        }
    }
    outcome
}

/// The gRPC status an RPC span recorded (under either semconv name the
/// stability mode emits), without copying anything.
fn rpc_status(span: &SpanData) -> Option<&opentelemetry::Value> {
    span.attributes
        .iter()
        .find(|kv| {
            let key = kv.key.as_str();
            key == semconv::RPC_RESPONSE_STATUS_CODE || key == semconv::RPC_STATUS_CODE
        })
        .map(|kv| &kv.value)
}

/// Whether a root failed, the ring's way (an error status, or a gRPC status
/// other than `OK`), checked before anything is copied.
fn failed(span: &SpanData) -> bool {
    matches!(span.status, Status::Error { .. })
        || rpc_status(span).is_some_and(|status| status.as_str() != "OK")
}

/// The ring's copy of a span (the ring cuts it to its bounds).
fn record(span: &SpanData) -> SpanRecord {
    SpanRecord {
        span_id: span.span_context.span_id(),
        parent_span_id: span.parent_span_id,
        name: span.name.to_string(),
        kind: span.span_kind.clone(),
        start: span.start_time,
        duration: span
            .end_time
            .duration_since(span.start_time)
            .unwrap_or_default(),
        outcome: match &span.status {
            Status::Unset => SpanOutcome::Unset,
            Status::Ok => SpanOutcome::Ok,
            Status::Error { description } => SpanOutcome::Error(description.to_string()),
        },
        rpc_status: rpc_status(span).map(|v| v.as_str().into_owned()),
        attributes: span
            .attributes
            .iter()
            .take(sensorhub_rpc_telemetry::live::MAX_ATTRIBUTES)
            .map(|kv| (kv.key.as_str().to_owned(), kv.value.as_str().into_owned()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SimpleSpanProcessor};

    use super::*;

    fn provider(ring: &TraceRing, exported: Option<&InMemorySpanExporter>) -> SdkTracerProvider {
        let next: Vec<Box<dyn SpanProcessor>> = exported
            .map(|e| Box::new(SimpleSpanProcessor::new(e.clone())) as Box<dyn SpanProcessor>)
            .into_iter()
            .collect();
        let sampler = exported.map(|_| Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
        SdkTracerProvider::builder()
            .with_sampler(LiveSampler::new(sampler, ring.clone()))
            .with_span_processor(LiveSpanProcessor::new(ring.clone(), next))
            .build()
    }

    /// A root with one child, the root's gRPC status as given.
    fn call(provider: &SdkTracerProvider, status: &'static str) -> TraceId {
        let tracer = provider.tracer("test");
        let root = tracer.start("S/Unary");
        let trace_id = root.span_context().trace_id();
        let cx = Context::current_with_span(root);
        let mut child = tracer.start_with_context("INSERT readings", &cx);
        child.set_attribute(KeyValue::new("db.operation.batch.size", 1));
        child.end();
        cx.span()
            .set_attribute(KeyValue::new(semconv::RPC_RESPONSE_STATUS_CODE, status));
        cx.span().end();
        trace_id
    }

    #[test]
    fn without_exporters_only_admitted_traces_are_recorded_and_kept_whole() {
        let ring = TraceRing::new();
        let provider = provider(&ring, None);
        call(&provider, "OK");
        let second = call(&provider, "OK"); // within the admission interval: dropped
        let snapshot = ring.snapshot();
        assert_eq!(snapshot.stats.admitted, 1);
        let kept: Vec<_> = snapshot.rows[0].buckets.iter().flatten().collect();
        assert_eq!(kept.len(), 1);
        assert_ne!(kept[0].trace_id, Some(second));
        let trace = ring.get(kept[0].id).unwrap();
        let names: Vec<_> = trace.spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["INSERT readings", "S/Unary"]);
        assert_eq!(
            trace.spans[0].attributes,
            [("db.operation.batch.size".to_owned(), "1".to_owned())]
        );
        assert_eq!(trace.spans[0].parent_span_id, trace.spans[1].span_id);
    }

    #[test]
    fn exporters_get_every_span_and_failed_roots_are_kept_without_admission() {
        let ring = TraceRing::new();
        let exported = InMemorySpanExporter::default();
        let provider = provider(&ring, Some(&exported));
        call(&provider, "OK");
        let failed = call(&provider, "INVALID_ARGUMENT");
        assert_eq!(exported.get_finished_spans().unwrap().len(), 4);
        let snapshot = ring.snapshot();
        assert_eq!(snapshot.stats.admitted, 1, "the second came too soon");
        assert_eq!(snapshot.errors.len(), 1);
        assert_eq!(snapshot.errors[0].trace_id, Some(failed));
        assert_eq!(
            snapshot.errors[0].status.as_deref(),
            Some("INVALID_ARGUMENT")
        );
        assert!(ring.get(snapshot.errors[0].id).unwrap().root_only);
    }
}
