//! What a load run reports: the text summary, and with `--json` one JSON
//! object (serde) whose fields scripts and tests read.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{
    LoadArgs, LoadMode,
    tally::{CODES, KindTally, Tally},
};
use crate::{cli::CallError, simulator::Kind};
use sensorhub_grpc::client::replicas::EndpointStats;

/// The canonical name of a status code, as gRPC's own metrics spell it.
pub(super) fn code_name(code: tonic::Code) -> &'static str {
    sensorhub_rpc_telemetry::conventions::status_name(code as i32)
}

/// `1234567.8` as `1,234,568`.
pub(super) fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) struct Report<'a> {
    pub args: &'a LoadArgs,
    pub rate: Option<f64>,
    pub concurrency: usize,
    pub query_sensor: &'a str,
    /// From the start of counting to the last counted call's end.
    pub elapsed: Duration,
    pub interrupted: bool,
    pub tally: Tally,
    /// The endpoints calls went to (`--server`s and their addresses).
    pub endpoints: &'a [std::sync::Arc<EndpointStats>],
}

/// What one endpoint got, over the whole run (seeding and warm-up included).
#[derive(Serialize)]
struct EndpointJson {
    address: String,
    url: String,
    calls: u64,
    failures: u64,
    ejections: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    p99_9: f64,
    max: f64,
    mean: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// The counts of one kind of call (or of all).
#[derive(Serialize)]
struct KindJson {
    calls: u64,
    ok: u64,
    failed: u64,
    unfinished: u64,
    calls_per_s: f64,
    readings_sent: u64,
    readings_received: u64,
    readings_per_s: f64,
    alerts: u64,
    errors: BTreeMap<&'static str, u64>,
    /// The server's message in the first failure of each code.
    error_messages: BTreeMap<&'static str, String>,
    latency_ms: Option<Percentiles>,
}

#[derive(Serialize)]
struct Schedule {
    late_sends: u64,
    max_send_lag_ms: f64,
}

/// The `--json` report.
#[derive(Serialize)]
struct ReportJson<'a> {
    #[serde(flatten)]
    total: KindJson,
    mode: &'static str,
    #[serde(rename = "loop")]
    loop_kind: &'static str,
    server: String,
    connections: usize,
    concurrency: usize,
    sensors: usize,
    batch: u64,
    target_rate: Option<f64>,
    elapsed_s: f64,
    warmup_s: f64,
    interrupted: bool,
    readings_sent_per_s: f64,
    readings_received_per_s: f64,
    error_rate: f64,
    latency_from: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<Schedule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_sensor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kinds: Option<BTreeMap<&'static str, KindJson>>,
    endpoints: Vec<EndpointJson>,
}

/// The codes `kind` failed with, each with its count and first message.
fn failures(kind: &KindTally) -> impl Iterator<Item = (tonic::Code, u64, &str)> {
    (0..CODES).filter(|c| kind.failed[*c] > 0).map(|c| {
        (
            tonic::Code::from_i32(c as i32),
            kind.failed[c],
            kind.first_message[c].as_deref().unwrap_or(""),
        )
    })
}

/// Failed calls by status name.
fn errors(kind: &KindTally) -> BTreeMap<&'static str, u64> {
    failures(kind)
        .map(|(code, n, _)| (code_name(code), n))
        .collect()
}

/// The first message of each status name.
fn error_messages(kind: &KindTally) -> BTreeMap<&'static str, String> {
    failures(kind)
        .map(|(code, _, message)| (code_name(code), message.to_owned()))
        .collect()
}

impl Report<'_> {
    fn per_s(&self, n: u64) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { n as f64 / secs } else { 0.0 }
    }

    pub(super) fn error_rate(&self, total: &KindTally) -> f64 {
        let bad = total.failed_total() + total.unfinished;
        let all = total.ok + bad;
        if all == 0 {
            0.0
        } else {
            bad as f64 / all as f64
        }
    }

    fn loop_name(&self) -> &'static str {
        if self.rate.is_some() {
            "open"
        } else {
            "closed"
        }
    }

    fn kind_json(&self, kind: &KindTally) -> KindJson {
        KindJson {
            calls: kind.ok + kind.failed_total(),
            ok: kind.ok,
            failed: kind.failed_total(),
            unfinished: kind.unfinished,
            calls_per_s: self.per_s(kind.ok + kind.failed_total()),
            readings_sent: kind.readings_sent,
            readings_received: kind.readings_received,
            readings_per_s: self.per_s(kind.readings_sent + kind.readings_received),
            alerts: kind.alerts,
            errors: errors(kind),
            error_messages: error_messages(kind),
            latency_ms: kind.latency().map(Percentiles::of),
        }
    }

    /// The `--json` report, one line.
    pub(super) fn json(&self) -> String {
        let total = self.tally.total();
        let args = self.args;
        let mode = args.mode;
        let report = ReportJson {
            total: self.kind_json(&total),
            mode: mode.name(),
            loop_kind: self.loop_name(),
            server: args.connect.target(),
            connections: args.connections,
            concurrency: self.concurrency,
            sensors: args.sensors,
            batch: args.batch,
            target_rate: self.rate,
            elapsed_s: self.elapsed.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            interrupted: self.interrupted,
            readings_sent_per_s: self.per_s(total.readings_sent),
            readings_received_per_s: self.per_s(total.readings_received),
            error_rate: self.error_rate(&total),
            latency_from: if self.rate.is_some() {
                "schedule"
            } else {
                "send"
            },
            schedule: self.rate.map(|_| Schedule {
                late_sends: self.tally.late_sends,
                max_send_lag_ms: self.tally.max_send_lag.as_secs_f64() * 1000.0,
            }),
            query_sensor: matches!(mode, LoadMode::ServerStream | LoadMode::Mix)
                .then_some(self.query_sensor),
            kinds: (mode == LoadMode::Mix).then(|| {
                Kind::ALL
                    .into_iter()
                    .map(|k| (k.name(), self.kind_json(&self.tally.kinds[k as usize])))
                    .collect()
            }),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| EndpointJson {
                    address: e.target.address.to_string(),
                    url: e.target.url.clone(),
                    calls: e.calls(),
                    failures: e.failures(),
                    ejections: e.ejections(),
                })
                .collect(),
        };
        serde_json::to_string(&report).expect("a report serializes")
    }

    /// The text summary.
    pub(super) fn text(&self) -> String {
        let args = self.args;
        let total = self.tally.total();
        let mut out = String::new();
        let shape = match self.rate {
            Some(rate) => format!(
                "open loop at {} calls/s (at most {} in flight)",
                thousands(rate),
                self.concurrency
            ),
            None if args.mode == LoadMode::Chat => {
                format!("closed loop, {} streams", self.concurrency)
            }
            None => format!("closed loop, {} in flight", self.concurrency),
        };
        let _ = writeln!(
            out,
            "sensorhub load: {} against {}\n  {shape}, {} connections, {} sensors{}",
            args.mode.name(),
            args.connect.target(),
            args.connections,
            args.sensors,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
        );
        let calls = total.ok + total.failed_total();
        let _ = writeln!(
            out,
            "  elapsed     {:.2} s{}",
            self.elapsed.as_secs_f64(),
            if args.warmup.is_zero() {
                String::new()
            } else {
                format!(" after {:.1} s warm-up", args.warmup.as_secs_f64())
            }
        );
        let _ = writeln!(
            out,
            "  calls       {:>12}/s   {} ok, {} failed, {} unfinished",
            thousands(self.per_s(calls)),
            thousands(total.ok as f64),
            thousands(total.failed_total() as f64),
            thousands(total.unfinished as f64),
        );
        if total.readings_sent > 0 || total.readings_received == 0 {
            let _ = writeln!(
                out,
                "  sent        {:>12}/s   {} readings",
                thousands(self.per_s(total.readings_sent)),
                thousands(total.readings_sent as f64)
            );
        }
        if total.readings_received > 0 {
            let _ = writeln!(
                out,
                "  read back   {:>12}/s   {} readings",
                thousands(self.per_s(total.readings_received)),
                thousands(total.readings_received as f64)
            );
        }
        if total.alerts > 0 {
            let _ = writeln!(out, "  alerts      {}", thousands(total.alerts as f64));
        }
        let from = if self.rate.is_some() {
            "from each call's time on the schedule"
        } else {
            "from send"
        };
        let _ = writeln!(
            out,
            "  latency     {}  ({from})",
            latency_line(total.latency())
        );
        if self.rate.is_some() {
            let _ = writeln!(
                out,
                "  schedule    {} sends over 1 ms late, at most {:.1} ms",
                thousands(self.tally.late_sends as f64),
                self.tally.max_send_lag.as_secs_f64() * 1000.0
            );
        }
        // One line per code: how often, and what the first such call said.
        let mut failed = failures(&total).peekable();
        if failed.peek().is_none() {
            let _ = writeln!(out, "  errors      none");
        }
        for (i, (code, n, message)) in failed.enumerate() {
            let _ = writeln!(
                out,
                "  {:<11} {} × {}",
                if i == 0 { "errors" } else { "" },
                thousands(n as f64),
                CallError::words(code, message)
            );
        }
        if self.endpoints.len() > 1 {
            let all: u64 = self.endpoints.iter().map(|e| e.calls()).sum();
            let _ = writeln!(out, "  by endpoint (calls, whole run)");
            for e in self.endpoints {
                let _ = writeln!(
                    out,
                    "    {:<22} {:>12} calls {:>5.1} %  {} failed, ejected {}×",
                    e.target.address.to_string(),
                    thousands(e.calls() as f64),
                    100.0 * e.calls() as f64 / all.max(1) as f64,
                    thousands(e.failures() as f64),
                    e.ejections(),
                );
            }
        }
        if args.mode == LoadMode::Mix {
            let _ = writeln!(out, "  by kind");
            for kind in Kind::ALL {
                let t = &self.tally.kinds[kind as usize];
                let _ = writeln!(
                    out,
                    "    {:<14} {:>10} calls/s {:>12} readings/s  {}  failed {}",
                    kind.name(),
                    thousands(self.per_s(t.ok + t.failed_total())),
                    thousands(self.per_s(t.readings_sent + t.readings_received)),
                    latency_line(t.latency()),
                    t.failed_total()
                );
            }
        }
        out
    }
}

fn latency_line(h: Option<&Histogram<u64>>) -> String {
    let Some(h) = h else {
        return "n/a".to_owned();
    };
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "p50 {:.3} ms  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    )
}
