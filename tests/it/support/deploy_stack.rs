//! Shared by the `deploy_*.rs` behaviours: the files under `deploy/`, read
//! and parsed, and the PromQL expressions the rules and dashboards use
//! (their metric names come from `promql.rs`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_norway::Value;

use super::promql;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn deploy() -> PathBuf {
    repo().join("deploy")
}

/// Runs a command to completion, stdout and stderr captured.
pub fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"))
}

pub fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A YAML file, with `<<` merge keys applied (compose uses them).
pub fn yaml(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_yaml(&text, path)
}

fn parse_yaml(text: &str, path: &Path) -> Value {
    let mut value: Value = serde_norway::from_str(text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    // A merged mapping may itself hold a merge key (an anchor built on
    // another anchor, as compose allows): merge until none is left.
    for _ in 0..8 {
        value
            .apply_merge()
            .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
        if !serde_norway::to_string(&value).unwrap().contains("<<:") {
            return value;
        }
    }
    panic!("{}: merge keys nested too deep", path.display())
}

pub fn json(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// `deploy/.env`, the one place the stack's image versions are written:
/// `NAME=value` lines, `#` comments.
pub fn versions() -> BTreeMap<String, String> {
    let path = deploy().join(".env");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("deploy/.env: {l:?} is not NAME=value"));
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// `compose.yaml` as compose reads it: `${NAME}` and `${NAME:?message}`
/// replaced from `deploy/.env` (a name the file lacks fails the test, as it
/// would stop compose).
pub fn compose() -> Value {
    let path = deploy().join("compose.yaml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_yaml(&interpolate(&text, &versions()), &path)
}

/// Compose's `${NAME}` / `${NAME:?message}` interpolation, from `values`.
pub fn interpolate(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find('}')
            .unwrap_or_else(|| panic!("unclosed ${{ in {:?}", &rest[at..]));
        let inner = &rest[at + 2..at + end];
        let name = inner.split([':', '-', '?']).next().unwrap();
        match values.get(name) {
            Some(value) => out.push_str(value),
            // Defaults (`${NAME:-x}`) are compose's own fallback.
            None => match inner.split_once(":-") {
                Some((_, default)) => out.push_str(default),
                None => panic!("compose.yaml uses ${{{name}}}, which deploy/.env does not set"),
            },
        }
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    out
}

/// Files under `dir` (recursively) whose name ends with one of `suffixes`.
pub fn files_under(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if suffixes.iter().any(|s| path.to_string_lossy().ends_with(s)) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

pub fn rule_files() -> Vec<PathBuf> {
    files_under(&deploy().join("prometheus/rules"), &[".yml"])
}

pub fn dashboard_files() -> Vec<PathBuf> {
    files_under(&deploy().join("grafana/dashboards"), &[".json"])
}

/// One rule of a rule file: `record` or `alert` name, and its expression.
#[derive(Debug, Clone)]
pub struct Rule {
    pub file: PathBuf,
    pub record: Option<String>,
    pub alert: Option<String>,
    pub expr: String,
}

impl Rule {
    /// Where the rule is, for messages: file and rule name.
    pub fn origin(&self) -> String {
        let name = self
            .record
            .as_deref()
            .or(self.alert.as_deref())
            .unwrap_or("");
        format!("{} rule {name}", self.file.display())
    }
}

pub fn rules() -> Vec<Rule> {
    let mut rules = Vec::new();
    for file in rule_files() {
        let doc = yaml(&file);
        let groups = doc["groups"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{}: no groups", file.display()));
        for group in groups {
            assert!(
                group["name"].as_str().is_some(),
                "{}: a group without a name",
                file.display()
            );
            for rule in group["rules"].as_sequence().expect("rules") {
                rules.push(Rule {
                    file: file.clone(),
                    record: rule["record"].as_str().map(str::to_owned),
                    alert: rule["alert"].as_str().map(str::to_owned),
                    expr: rule["expr"].as_str().expect("expr").to_owned(),
                });
            }
        }
    }
    rules
}

/// A query of a dashboard panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// The dashboard's file, `deploy/grafana/dashboards/<name>.json`.
    pub file: PathBuf,
    pub panel: String,
    pub datasource: String,
    /// The query as written, Grafana variables and all.
    pub expr: String,
    /// The dashboard's own template variables and their current values.
    pub variables: BTreeMap<String, String>,
}

impl PanelQuery {
    /// Where the query is, for messages: file and panel.
    pub fn origin(&self) -> String {
        format!("{} panel {:?}", self.file.display(), self.panel)
    }

    /// The PromQL Grafana sends for it ([`promql::grafana_to_promql`]).
    pub fn promql(&self) -> Result<String, String> {
        promql::grafana_to_promql(&self.expr, &self.variables)
    }
}

/// Every query of every panel (rows' nested panels included), with the uid
/// of the datasource it goes to (the target's, else the panel's).
pub fn dashboard_queries() -> Vec<PanelQuery> {
    fn walk(
        file: &Path,
        variables: &BTreeMap<String, String>,
        panels: &[serde_json::Value],
        out: &mut Vec<PanelQuery>,
    ) {
        for panel in panels {
            if let Some(nested) = panel["panels"].as_array() {
                walk(file, variables, nested, out);
            }
            let panel_ds = panel["datasource"]["uid"].as_str().unwrap_or("");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let datasource = target["datasource"]["uid"].as_str().unwrap_or(panel_ds);
                if let Some(expr) = target["expr"].as_str() {
                    out.push(PanelQuery {
                        file: file.to_owned(),
                        panel: panel["title"].as_str().unwrap_or("").to_owned(),
                        datasource: datasource.to_owned(),
                        expr: expr.to_owned(),
                        variables: variables.clone(),
                    });
                }
            }
        }
    }
    let mut out = Vec::new();
    for file in dashboard_files() {
        let dashboard = json(&file);
        let variables = promql::dashboard_variables(&dashboard);
        walk(
            &file,
            &variables,
            dashboard["panels"].as_array().expect("panels"),
            &mut out,
        );
    }
    out
}

/// Names a metric can have that Prometheus makes itself.
pub const PROMETHEUS_BUILTIN: &[&str] = &["up", "ALERTS", "ALERTS_FOR_STATE"];

/// The collector's own metrics (job "otel-collector") that deploy/ may use:
/// the instrument names of the collector's mdatagen documentation
/// (exporterhelper, receiverhelper), as its Prometheus reader writes them
/// (counters with `_total`). No collector runs in the tests, so this list is
/// the check that a name is spelled as the collector spells it.
pub const COLLECTOR_METRICS: &[&str] = &[
    "otelcol_exporter_sent_spans_total",
    "otelcol_exporter_sent_metric_points_total",
    "otelcol_exporter_sent_log_records_total",
    "otelcol_exporter_send_failed_spans_total",
    "otelcol_exporter_send_failed_metric_points_total",
    "otelcol_exporter_send_failed_log_records_total",
    "otelcol_exporter_enqueue_failed_spans_total",
    "otelcol_exporter_enqueue_failed_metric_points_total",
    "otelcol_exporter_enqueue_failed_log_records_total",
    "otelcol_exporter_queue_size",
    "otelcol_exporter_queue_capacity",
    "otelcol_receiver_accepted_spans_total",
    "otelcol_receiver_accepted_metric_points_total",
    "otelcol_receiver_accepted_log_records_total",
    "otelcol_receiver_refused_spans_total",
    "otelcol_receiver_refused_metric_points_total",
    "otelcol_receiver_refused_log_records_total",
];

/// The span metrics of the collector's span_metrics connector with
/// `namespace: traces.span.metrics` and `histogram.unit: s` (checked against
/// the collector config by deploy_files.rs).
pub const SPAN_METRICS: &[&str] = &[
    "traces_span_metrics_calls_total",
    "traces_span_metrics_duration_seconds_bucket",
    "traces_span_metrics_duration_seconds_count",
    "traces_span_metrics_duration_seconds_sum",
];

/// The compose service `name`'s `command` (a list of strings).
pub fn command_of(compose: &Value, service: &str) -> Vec<String> {
    compose["services"][service]["command"]
        .as_sequence()
        .unwrap_or_else(|| panic!("service {service} has no command list"))
        .iter()
        .map(|v| v.as_str().expect("command word").to_owned())
        .collect()
}

/// The compose service `name`'s environment (a map).
pub fn environment_of(compose: &Value, service: &str) -> BTreeMap<String, String> {
    compose["services"][service]["environment"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let value = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => String::new(),
                        other => panic!("{service}: environment value {other:?}"),
                    };
                    (k.as_str().expect("key").to_owned(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The sensors of the compose file: services whose command starts with `sensor`.
pub fn sensor_services(compose: &Value) -> Vec<String> {
    compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .filter(|(_, s)| s["command"][0].as_str() == Some("sensor"))
        .map(|(name, _)| name.as_str().unwrap().to_owned())
        .collect()
}

/// What a sensor service runs, pointed at a local plaintext server and
/// bounded: its compose command, with `--count` and a short interval.
pub fn local_sensor_args(compose: &Value, service: &str, count: u32) -> Vec<String> {
    let mut args = command_of(compose, service);
    args.extend([
        "--count".to_owned(),
        count.to_string(),
        "--interval-max".to_owned(),
        "20ms".to_owned(),
    ]);
    args
}
