//! The metrics a PromQL expression reads, from `promql-parser`'s syntax
//! tree: the invariant "every metric a dashboard or rule reads exists"
//! (`deploy_metric_names.rs`) is only as good as this, so it is Prometheus's
//! own grammar (ported by the crate), not a scanner of ours. A Grafana query
//! is first made into the PromQL Grafana would send ([`grafana_to_promql`]).

use std::collections::BTreeMap;

use promql_parser::{
    label::{MatchOp, Matcher},
    parser::{self, Expr, VectorSelector},
};

/// One vector or matrix selector of an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// What names the metric: written before the braces or as a
    /// `__name__` matcher.
    pub metric: MetricName,
    /// The other label matchers: (label, operator, value as written).
    pub matchers: Vec<(String, String, String)>,
}

/// How a selector names its metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricName {
    /// `name{…}` or `{__name__="name"}`.
    Exactly(String),
    /// `{__name__=~"pattern"}`: every metric whose whole name matches
    /// (the matcher, with the regex compiled and anchored as PromQL does).
    Matching(Matcher),
}

impl MetricName {
    /// The name, for a selector that names exactly one metric.
    pub fn exact(&self) -> Option<&str> {
        match self {
            MetricName::Exactly(name) => Some(name),
            MetricName::Matching(_) => None,
        }
    }

    /// Of `known`, the names this selects (anchored, as PromQL anchors regexes).
    pub fn select<'a>(&self, known: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        match self {
            MetricName::Exactly(name) => known.into_iter().filter(|k| k == name).collect(),
            MetricName::Matching(matcher) => {
                known.into_iter().filter(|k| matcher.is_match(k)).collect()
            }
        }
    }
}

/// Parses `expr` (PromQL) and returns its selectors in the order written.
/// An error is the parser's message, or a selector that names no metric.
pub fn selectors(expr: &str) -> Result<Vec<Selector>, String> {
    let ast = parser::parse(expr)?;
    let mut out = Vec::new();
    collect(&ast, &mut out)?;
    Ok(out)
}

fn collect(expr: &Expr, out: &mut Vec<Selector>) -> Result<(), String> {
    match expr {
        Expr::VectorSelector(vs) => out.push(selector(vs)?),
        Expr::MatrixSelector(ms) => out.push(selector(&ms.vs)?),
        Expr::Aggregate(a) => {
            if let Some(param) = &a.param {
                collect(param, out)?;
            }
            collect(&a.expr, out)?;
        }
        Expr::Unary(u) => collect(&u.expr, out)?,
        Expr::Binary(b) => {
            collect(&b.lhs, out)?;
            collect(&b.rhs, out)?;
        }
        Expr::Paren(p) => collect(&p.expr, out)?,
        Expr::Subquery(s) => collect(&s.expr, out)?,
        Expr::Call(call) => {
            for arg in &call.args.args {
                collect(arg, out)?;
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
        Expr::Extension(_) => return Err("an extension node, which the parser never makes".into()),
    }
    Ok(())
}

fn selector(vs: &VectorSelector) -> Result<Selector, String> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(format!(
            "{vs}: `or` inside a selector is not checked here; write two selectors"
        ));
    }
    let (names, labels): (Vec<&Matcher>, Vec<&Matcher>) = vs
        .matchers
        .matchers
        .iter()
        .partition(|m| m.name == "__name__");
    let mut metric = vs.name.clone().map(MetricName::Exactly);
    for m in names {
        let named = match &m.op {
            MatchOp::Equal => MetricName::Exactly(m.value.clone()),
            MatchOp::Re(_) => MetricName::Matching((*m).clone()),
            MatchOp::NotEqual | MatchOp::NotRe(_) => continue,
        };
        if metric.replace(named).is_some() {
            return Err(format!("{vs}: the metric is named twice"));
        }
    }
    let metric = metric.ok_or_else(|| format!("{vs}: a selector that names no metric"))?;
    Ok(Selector {
        metric,
        matchers: labels
            .into_iter()
            .map(|m| (m.name.clone(), op(&m.op).to_owned(), m.value.clone()))
            .collect(),
    })
}

fn op(op: &MatchOp) -> &'static str {
    match op {
        MatchOp::Equal => "=",
        MatchOp::NotEqual => "!=",
        MatchOp::Re(_) => "=~",
        MatchOp::NotRe(_) => "!~",
    }
}

/// What Grafana's own variables stand for when a panel is drawn (the
/// compose stack's Prometheus scrapes every 15 s).
const GRAFANA_BUILTINS: &[(&str, &str)] = &[
    ("__rate_interval", "1m"),
    ("__interval_ms", "15000"),
    ("__interval", "15s"),
    ("__range_ms", "3600000"),
    ("__range_s", "3600"),
    ("__range", "1h"),
];

/// A Grafana query as the PromQL Grafana sends: `$name`, `${name}`,
/// `${name:format}` and `[[name]]` replaced by Grafana's built-in interval
/// variables or by the dashboard's own `variables` (name → current value).
/// A variable that is neither is an error naming it.
pub fn grafana_to_promql(
    expr: &str,
    variables: &BTreeMap<String, String>,
) -> Result<String, String> {
    let value_of = |name: &str| -> Result<String, String> {
        GRAFANA_BUILTINS
            .iter()
            .find(|(builtin, _)| *builtin == name)
            .map(|(_, value)| (*value).to_owned())
            .or_else(|| variables.get(name).cloned())
            .ok_or_else(|| format!("the variable ${name} is neither Grafana's nor the dashboard's"))
    };
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find(['$', '[']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(inner) = rest.strip_prefix("${") {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("an unclosed ${{ in {expr:?}"))?;
            let name = inner[..end].split(':').next().unwrap_or("");
            out.push_str(&value_of(name)?);
            rest = &inner[end + 1..];
        } else if let Some(inner) = rest.strip_prefix("[[") {
            match inner.find("]]") {
                Some(end) if inner[..end].chars().all(is_name) && end > 0 => {
                    out.push_str(&value_of(&inner[..end])?);
                    rest = &inner[end + 2..];
                }
                // `[[` of PromQL itself (a subquery's range is `[5m:1m]`, so
                // this is only text): leave it.
                _ => {
                    out.push('[');
                    rest = &rest[1..];
                }
            }
        } else if let Some(inner) = rest.strip_prefix('$') {
            let end = inner.find(|c: char| !is_name(c)).unwrap_or(inner.len());
            if end == 0 {
                // `$1` in label_replace's replacement is a digit, and so a
                // name; a bare `$` is only text.
                out.push('$');
            } else if inner[..end].chars().all(|c| c.is_ascii_digit()) {
                out.push('$');
                out.push_str(&inner[..end]);
            } else {
                out.push_str(&value_of(&inner[..end])?);
            }
            rest = &inner[end..];
        } else {
            out.push('[');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A dashboard's own template variables (`templating.list`), by name, with
/// the value each has when the dashboard opens: several values become the
/// regex alternation Grafana sends, and "All" matches anything.
pub fn dashboard_variables(dashboard: &serde_json::Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(name) = variable["name"].as_str() else {
            continue;
        };
        let current = &variable["current"]["value"];
        let value = match current {
            serde_json::Value::String(s) if s == "$__all" => ".*".to_owned(),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(values) => {
                let values: Vec<&str> = values.iter().filter_map(|v| v.as_str()).collect();
                if values.contains(&"$__all") {
                    ".*".to_owned()
                } else {
                    values.join("|")
                }
            }
            // A variable with no current value (a query variable before its
            // first run): any value.
            _ => ".*".to_owned(),
        };
        out.insert(name.to_owned(), value);
    }
    out
}

fn names(expr: &str) -> Vec<MetricName> {
    selectors(expr)
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
        .into_iter()
        .map(|s| s.metric)
        .collect()
}

fn exactly(names: &[&str]) -> Vec<MetricName> {
    names
        .iter()
        .map(|n| MetricName::Exactly((*n).into()))
        .collect()
}

#[test]
fn metrics_not_functions_keywords_or_grouping_labels() {
    let found = selectors(
        r#"sum by (grpc_method, le) (rate(grpc_server_call_duration_seconds_bucket{job="sensorhub",grpc_status=~"OK|CANCELLED"}[5m]))
           / ignoring (le) group_left sensorhub:slo_latency:objective or vector(0) and on () max(up{job="x"}) == 1
           unless x_total offset 5m"#,
    )
    .unwrap();
    assert_eq!(
        found.iter().map(|s| s.metric.clone()).collect::<Vec<_>>(),
        exactly(&[
            "grpc_server_call_duration_seconds_bucket",
            "sensorhub:slo_latency:objective",
            "up",
            "x_total"
        ])
    );
    assert_eq!(
        found[0].matchers,
        [
            ("job".into(), "=".into(), "sensorhub".into()),
            ("grpc_status".into(), "=~".into(), "OK|CANCELLED".into())
        ]
    );
}

/// What a scanner of identifiers gets wrong: a `}` inside a matcher's
/// value, metrics named by `__name__`, a function's string arguments,
/// the grouping clause after the aggregation, subqueries and `@`.
#[test]
fn what_only_a_parser_reads_right() {
    assert_eq!(
        names(
            r#"count_values("on", a{path="/x}"}) by (le) + label_replace(b, "dst", "$1", "src", "(.*)")"#
        ),
        exactly(&["a", "b"])
    );
    assert_eq!(
        names(r#"max_over_time(rate({__name__="c_total",job="j"}[1m])[10m:1m]) or d @ 1700000000"#),
        exactly(&["c_total", "d"])
    );
    let [pattern] = &names(r#"{__name__=~"grpc_.+_total"}"#)[..] else {
        panic!("one selector");
    };
    assert_eq!(
        pattern.select(["grpc_a_total", "grpc_total", "x_grpc_a_total", "up"]),
        ["grpc_a_total"]
    );
    let found = selectors(r#"a{path="/x}"}"#).unwrap();
    assert_eq!(
        found[0].matchers,
        [("path".into(), "=".into(), "/x}".into())]
    );
}

#[test]
fn bad_promql_and_nameless_selectors_are_errors() {
    for bad in [
        "sum(rate(x[5m])",
        "rate(x[5m]) by (le)",
        r#"{job="j"}"#,
        "x +",
    ] {
        assert!(selectors(bad).is_err(), "{bad} was accepted");
    }
}

#[test]
fn grafana_variables_become_what_grafana_sends() {
    let variables = BTreeMap::from([
        ("instance".to_owned(), "sensorhub:9464".to_owned()),
        ("method".to_owned(), "A|B".to_owned()),
    ]);
    assert_eq!(
        grafana_to_promql(
            r#"rate(x{instance="$instance",m=~"${method:regex}",n="[[instance]]"}[$__rate_interval]) * $__range_s"#,
            &variables
        )
        .unwrap(),
        r#"rate(x{instance="sensorhub:9464",m=~"A|B",n="sensorhub:9464"}[1m]) * 3600"#
    );
    assert_eq!(
        grafana_to_promql(
            r#"label_replace(x, "a", "$1", "b", "(.*)")[5m:1m]"#,
            &variables
        )
        .unwrap(),
        r#"label_replace(x, "a", "$1", "b", "(.*)")[5m:1m]"#
    );
    let err = grafana_to_promql("x{a=\"$nowhere\"}", &variables).unwrap_err();
    assert!(err.contains("$nowhere"), "{err}");
}

#[test]
fn template_variables_take_their_current_value() {
    let dashboard = serde_json::json!({"templating": {"list": [
        {"name": "instance", "current": {"value": "a:1"}},
        {"name": "method", "current": {"value": ["A", "B"]}},
        {"name": "any", "current": {"value": "$__all"}}
    ]}});
    assert_eq!(
        dashboard_variables(&dashboard),
        BTreeMap::from([
            ("any".to_owned(), ".*".to_owned()),
            ("instance".to_owned(), "a:1".to_owned()),
            ("method".to_owned(), "A|B".to_owned()),
        ])
    );
}
