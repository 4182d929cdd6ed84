//! The Prometheus text format of `/metrics`, read back for the tests.
//!
//! A sample line is `series value [timestamp]`, and its series
//! (`name{label="value",…}`) is PromQL's vector-selector syntax, so
//! `promql-parser` reads it: escapes, and commas, braces or spaces inside
//! label values, come out as Prometheus would read them. The label values
//! stay text: `le="0.0001"` is the string the server wrote, which is what a
//! dashboard's `le="0.0001"` is compared with. (`prometheus-parse` folds a
//! histogram's `_bucket` lines into numeric bounds, splits label values at
//! `,` and `=`, and skips lines it cannot read without a word:
//! ARCHITECTURE.md, "Hand-written where a crate exists".)

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::{
    label::MatchOp,
    parser::{self, Expr},
};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// Whether every `(label, value)` of `labels` is one of this sample's.
    pub fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(label, value)| self.labels.get(*label).is_some_and(|v| v == value))
    }
}

/// Every sample of a page, in order. Comments (`# HELP`, `# TYPE`) and blank
/// lines are skipped; any other line that does not read is an error naming it.
pub fn parse(page: &str) -> Result<Vec<Sample>, String> {
    page.lines()
        .filter(|line| !(line.trim().is_empty() || line.starts_with('#')))
        .map(|line| sample(line).map_err(|e| format!("line `{line}`: {e}")))
        .collect()
}

/// [`parse`], panicking with the page when it does not read.
pub fn samples(page: &str) -> Vec<Sample> {
    parse(page).unwrap_or_else(|e| panic!("/metrics is not the text format: {e}\n{page}"))
}

/// The samples named `name` that carry every one of `labels`.
pub fn series<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && s.has(labels))
        .collect()
}

/// Metric name → label name → the values seen.
pub type LabelValues = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

pub fn label_values(samples: &[Sample]) -> LabelValues {
    let mut out = LabelValues::new();
    for sample in samples {
        let labels = out.entry(sample.name.clone()).or_default();
        for (label, value) in &sample.labels {
            labels
                .entry(label.clone())
                .or_default()
                .insert(value.clone());
        }
    }
    out
}

fn sample(line: &str) -> Result<Sample, String> {
    // The value (and a timestamp, if any) follow the series; label values
    // may hold spaces, so the series is what is left of the last fields.
    let mut fields = line.rsplitn(3, ' ');
    let last = fields.next().unwrap_or_default();
    let before = fields.next().ok_or("no value")?;
    let rest = fields.next();
    let (series, value) = match rest {
        // `series value timestamp`, unless the series itself held the space.
        Some(series) if parse_series(series).is_ok() && number(before).is_ok() => {
            (series.to_owned(), before)
        }
        Some(series) => (format!("{series} {before}"), last),
        None => (before.to_owned(), last),
    };
    let (name, labels) = parse_series(&series)?;
    Ok(Sample {
        name,
        labels,
        value: number(value)?,
    })
}

fn parse_series(series: &str) -> Result<(String, BTreeMap<String, String>), String> {
    let Expr::VectorSelector(vs) = parser::parse(series)? else {
        return Err(format!("{series:?} is not a series"));
    };
    if vs.offset.is_some() || vs.at.is_some() || !vs.matchers.or_matchers.is_empty() {
        return Err(format!("{series:?} is not a series"));
    }
    let mut name = vs.name;
    let mut labels = BTreeMap::new();
    for m in vs.matchers.matchers {
        if m.op != MatchOp::Equal {
            return Err(format!("{series:?}: a label is written `name=\"value\"`"));
        }
        if m.name == "__name__" {
            name = Some(m.value);
        } else if labels.insert(m.name.clone(), m.value).is_some() {
            return Err(format!("{series:?}: label {} twice", m.name));
        }
    }
    Ok((
        name.ok_or_else(|| format!("{series:?} has no name"))?,
        labels,
    ))
}

/// A sample value as the text format writes it (Go's float syntax).
fn number(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse()
            .map_err(|_| format!("{text:?} is not a sample value")),
    }
}

#[test]
fn series_and_values_read_as_prometheus_reads_them() {
    let page = "# HELP x_total help text, with commas\n# TYPE x_total counter\n\
                x_total{a=\"1,b=2\",path=\"/x y}\",q=\"say \\\"hi\\\"\"} 3\n\
                up 1 1700000000000\n\
                h_bucket{le=\"0.0001\"} 0\nh_bucket{le=\"+Inf\"} 7\n\n";
    let samples = parse(page).unwrap();
    assert_eq!(samples.len(), 4, "{samples:?}");
    assert_eq!(samples[0].name, "x_total");
    assert_eq!(
        samples[0].labels,
        BTreeMap::from([
            ("a".to_owned(), "1,b=2".to_owned()),
            ("path".to_owned(), "/x y}".to_owned()),
            ("q".to_owned(), "say \"hi\"".to_owned()),
        ])
    );
    assert_eq!(samples[0].value, 3.0);
    assert_eq!((samples[1].name.as_str(), samples[1].value), ("up", 1.0));
    // Bounds stay as written.
    let bounds: Vec<&str> = series(&samples, "h_bucket", &[])
        .iter()
        .map(|s| s.labels["le"].as_str())
        .collect();
    assert_eq!(bounds, ["0.0001", "+Inf"]);
    assert_eq!(
        series(&samples, "h_bucket", &[("le", "+Inf")])[0].value,
        7.0
    );
}

#[test]
fn a_line_that_does_not_read_is_an_error_naming_it() {
    for bad in [
        "x_total{a=\"1\" 3",
        "x_total",
        "x_total{a=~\"1\"} 3",
        "x_total three",
    ] {
        let err = parse(&format!("ok 1\n{bad}\n")).unwrap_err();
        assert!(err.contains(bad), "{bad}: {err}");
    }
}
