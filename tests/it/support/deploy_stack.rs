//! Shared by the `tests/deploy_*.rs` files: the files under `deploy/`, read
//! and parsed; the PromQL expressions the rules and dashboards use and the
//! metric names in them.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_norway::Value;

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
    pub dashboard: String,
    pub panel: String,
    pub datasource: String,
    pub expr: String,
}

/// Every query of every panel (rows' nested panels included), with the uid
/// of the datasource it goes to (the target's, else the panel's).
pub fn dashboard_queries() -> Vec<PanelQuery> {
    fn walk(dashboard: &str, panels: &[serde_json::Value], out: &mut Vec<PanelQuery>) {
        for panel in panels {
            if let Some(nested) = panel["panels"].as_array() {
                walk(dashboard, nested, out);
            }
            let panel_ds = panel["datasource"]["uid"].as_str().unwrap_or("");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let datasource = target["datasource"]["uid"].as_str().unwrap_or(panel_ds);
                if let Some(expr) = target["expr"].as_str() {
                    out.push(PanelQuery {
                        dashboard: dashboard.to_owned(),
                        panel: panel["title"].as_str().unwrap_or("").to_owned(),
                        datasource: datasource.to_owned(),
                        expr: expr.to_owned(),
                    });
                }
            }
        }
    }
    let mut out = Vec::new();
    for file in dashboard_files() {
        let dashboard = json(&file);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        walk(
            &name,
            dashboard["panels"].as_array().expect("panels"),
            &mut out,
        );
    }
    out
}

/// A Grafana query as Prometheus would run it: Grafana's own variables
/// replaced by what they stand for.
pub fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
}

/// A metric selector found in an expression: the metric name and the
/// label matchers written next to it (`name`, op, value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<(String, String, String)>,
}

const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
];

/// The metric selectors of a PromQL expression (a small scanner, enough
/// for the expressions in deploy/: identifiers that are not functions,
/// keywords, grouping labels, numbers or durations).
pub fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    // Skips a balanced (...) group starting at `i` (which is '(').
    let skip_group = |mut i: usize| -> usize {
        let mut depth = 0;
        while i < chars.len() {
            match chars[i] {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            // A string outside a selector: skip it.
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // A selector without a metric name: `{__name__=...}` is not used here.
            panic!("a selector without a metric name in {expr:?}");
        } else if c.is_ascii_digit()
            || (c == '.' && i + 1 < chars.len() && chars[i + 1].is_ascii_digit())
        {
            // A number or a duration (5m, 1e3, 0.05).
            while i < chars.len() && (is_part(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c == '$' {
            while i < chars.len() && (is_part(chars[i]) || chars[i] == '$') {
                i += 1;
            }
        } else if is_start(c) {
            let start = i;
            while i < chars.len() && is_part(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let next = chars.get(j).copied();
            let lower = word.to_ascii_lowercase();
            if KEYWORDS.contains(&lower.as_str()) {
                if matches!(
                    lower.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) && next == Some('(')
                {
                    i = skip_group(j);
                }
                continue;
            }
            if next == Some('(') {
                // A function or aggregation.
                continue;
            }
            // `sum by (x) (...)`: an aggregation whose grouping comes first.
            let following: String = chars[j..]
                .iter()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            if following == "by" || following == "without" {
                continue;
            }
            let mut matchers = Vec::new();
            if next == Some('{') {
                let close = chars[j..]
                    .iter()
                    .position(|&c| c == '}')
                    .map(|p| j + p)
                    .unwrap_or_else(|| panic!("unclosed selector in {expr:?}"));
                let inner: String = chars[j + 1..close].iter().collect();
                matchers = parse_matchers(&inner, expr);
                i = close + 1;
            }
            out.push(Selector {
                metric: word,
                matchers,
            });
        } else {
            i += 1;
        }
    }
    out
}

fn parse_matchers(inner: &str, expr: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or_else(|| panic!("bad matcher {rest:?} in {expr:?}"));
        let name = rest[..name_end].to_owned();
        rest = rest[name_end..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .unwrap_or_else(|| panic!("no operator in {rest:?} of {expr:?}"));
        rest = rest[op.len()..].trim_start();
        let quote = rest.chars().next().expect("a quoted value");
        assert!(quote == '"' || quote == '\'', "unquoted value in {expr:?}");
        let close = rest[1..]
            .find(quote)
            .unwrap_or_else(|| panic!("unclosed value in {expr:?}"))
            + 1;
        out.push((name, op.to_owned(), rest[1..close].to_owned()));
        rest = rest[close + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
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

/// Metric name → label name → values, from a Prometheus text page.
pub type Exposition = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

pub fn parse_exposition(page: &str) -> Exposition {
    let mut out: Exposition = BTreeMap::new();
    for line in page.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let labels = out.entry(line[..name_end].to_owned()).or_default();
        if line[name_end..].starts_with('{') {
            let close = line.rfind('}').expect("closing brace");
            for (name, _, value) in parse_matchers(&line[name_end + 1..close], line) {
                labels.entry(name).or_default().insert(value);
            }
        }
    }
    out
}

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
