//! The Prometheus and Alertmanager configuration of the compose stack, checked
//! by the tools that will load it (Debian's `promtool` and `amtool`):
//!
//! - `promtool check config` on deploy/prometheus/prometheus.yml (which also
//!   loads every rule file it names) and `promtool check rules` on each;
//! - `promtool test rules`: the unit tests in deploy/prometheus/tests;
//! - every alert has a test where it fires and one where it stays silent,
//!   and the firing cases really depend on the alert: with that one alert
//!   removed from a copy of the rules, the tests fail;
//! - `amtool check-config` on deploy/alertmanager/alertmanager.yml, and
//!   `amtool config routes test`: pages and tickets reach the alert log.
//!
//! The tools are required (`cargo xtask test` installs them).

use std::{collections::BTreeMap, path::Path, process::Command};

use deploy_stack::{deploy, output_text, rule_files, rules, run, yaml};
use serde_norway::Value;

use crate::support::deploy_stack;
use crate::support::system_tools::{amtool, promtool};

fn test_files(dir: &Path) -> Vec<std::path::PathBuf> {
    deploy_stack::files_under(dir, &[".test.yml"])
}

#[test]
fn promtool_accepts_the_config_and_every_rule_file() {
    let promtool = promtool();
    let config = deploy().join("prometheus/prometheus.yml");
    let out = run(Command::new(&promtool)
        .arg("check")
        .arg("config")
        .arg(&config));
    let text = output_text(&out);
    assert!(out.status.success(), "promtool check config:\n{text}");
    // The config names the rule files by a glob: all of them must be loaded.
    let files = rule_files();
    assert!(files.len() >= 3, "{files:?}");
    assert!(
        text.contains(&format!("SUCCESS: {} rule files found", files.len())),
        "the config does not load all {} rule files:\n{text}",
        files.len()
    );

    let out = run(Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .args(&files));
    assert!(
        out.status.success(),
        "promtool check rules:\n{}",
        output_text(&out)
    );
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    let promtool = promtool();
    let tests = test_files(&deploy().join("prometheus/tests"));
    assert!(tests.len() >= 3, "{tests:?}");
    // Every rule file has its unit tests.
    for rules in rule_files() {
        let stem = rules.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            tests
                .iter()
                .any(|t| t.file_name().unwrap().to_string_lossy() == format!("{stem}.test.yml")),
            "no tests/{stem}.test.yml for {}",
            rules.display()
        );
    }
    let out = run(Command::new(&promtool).args(["test", "rules"]).args(&tests));
    let text = output_text(&out);
    assert!(out.status.success(), "promtool test rules:\n{text}");
    assert_eq!(
        text.matches("SUCCESS").count(),
        tests.len(),
        "not every test file passed:\n{text}"
    );
}

/// Alert name → (firing expectations, silent expectations) in the unit tests.
fn expectations() -> BTreeMap<String, (usize, usize)> {
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for file in test_files(&deploy().join("prometheus/tests")) {
        let doc = yaml(&file);
        for test in doc["tests"].as_sequence().expect("tests") {
            for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
                let name = case["alertname"].as_str().expect("alertname").to_owned();
                let firing = case["exp_alerts"]
                    .as_sequence()
                    .is_some_and(|alerts| !alerts.is_empty());
                let entry = seen.entry(name).or_default();
                if firing {
                    entry.0 += 1;
                } else {
                    entry.1 += 1;
                }
            }
        }
    }
    seen
}

#[test]
fn every_alert_is_tested_firing_and_silent() {
    let seen = expectations();
    let alerts: Vec<String> = rules().into_iter().filter_map(|r| r.alert).collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for alert in &alerts {
        let (firing, silent) = seen.get(alert).copied().unwrap_or_default();
        assert!(firing > 0, "{alert}: no unit test where it fires");
        assert!(silent > 0, "{alert}: no unit test where it stays silent");
    }
    for tested in seen.keys() {
        assert!(
            alerts.contains(tested),
            "the unit tests name {tested}, which no rule file defines"
        );
    }
}

/// A copy of deploy/prometheus (rules and tests, same layout) in which the
/// alert `alert` is removed from its rule file.
fn copy_without_alert(dir: &Path, alert: &str) {
    let source = deploy().join("prometheus");
    for sub in ["rules", "tests"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for entry in std::fs::read_dir(source.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            let target = dir.join(sub).join(path.file_name().unwrap());
            if sub == "tests" {
                std::fs::copy(&path, &target).unwrap();
                continue;
            }
            let mut doc = yaml(&path);
            for group in doc["groups"].as_sequence_mut().unwrap() {
                let rules = group["rules"].as_sequence_mut().unwrap();
                rules.retain(|r| r["alert"].as_str() != Some(alert));
            }
            std::fs::write(&target, serde_norway::to_string(&doc).unwrap()).unwrap();
        }
    }
}

#[test]
fn the_firing_cases_fail_without_their_alert() {
    let promtool = promtool();
    // The unmodified copy passes: the copy itself changes nothing.
    let dir = tempfile::tempdir().unwrap();
    copy_without_alert(dir.path(), "no such alert");
    let all_tests = test_files(&dir.path().join("tests"));
    let out = run(Command::new(&promtool)
        .args(["test", "rules"])
        .args(&all_tests));
    assert!(
        out.status.success(),
        "the copied rules and tests do not pass:\n{}",
        output_text(&out)
    );

    for rule in rules() {
        let Some(alert) = rule.alert else { continue };
        let dir = tempfile::tempdir().unwrap();
        copy_without_alert(dir.path(), &alert);
        // Only the tests of the rule file the alert lives in.
        let stem = rule
            .file
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let tests = dir.path().join("tests").join(format!("{stem}.test.yml"));
        let out = run(Command::new(&promtool).args(["test", "rules"]).arg(&tests));
        assert!(
            !out.status.success(),
            "the unit tests still pass with {alert} removed: they do not test it"
        );
        assert!(
            output_text(&out).contains(&format!("alertname: {alert}")),
            "removing {alert} failed other tests than its own:\n{}",
            output_text(&out)
        );
    }
}

#[test]
fn amtool_accepts_the_alertmanager_config_and_routes_every_severity() {
    let amtool = amtool();
    let config = deploy().join("alertmanager/alertmanager.yml");
    let out = run(Command::new(&amtool).arg("check-config").arg(&config));
    let text = output_text(&out);
    assert!(out.status.success(), "amtool check-config:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");

    // Every severity the rules use reaches a receiver someone reads.
    let doc = yaml(&config);
    let receivers: Vec<&str> = doc["receivers"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    let mut severities: Vec<String> = Vec::new();
    for file in rule_files() {
        for group in yaml(&file)["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                if let Some(Value::String(severity)) = rule["labels"].get("severity")
                    && !severities.contains(severity)
                {
                    severities.push(severity.clone());
                }
                if rule["alert"].is_string() {
                    assert!(
                        rule["labels"]["severity"].is_string(),
                        "alert {:?} has no severity",
                        rule["alert"]
                    );
                }
            }
        }
    }
    assert!(severities.len() >= 3, "{severities:?}");
    for severity in &severities {
        let out = run(Command::new(&amtool).args([
            "config",
            "routes",
            "test",
            &format!("--config.file={}", config.display()),
            "alertname=Test",
            &format!("severity={severity}"),
        ]));
        assert!(
            out.status.success(),
            "amtool config routes test:\n{}",
            output_text(&out)
        );
        // stdout: the receiver's name (stderr may carry a warning).
        let stdout = String::from_utf8_lossy(&out.stdout);
        let routed = stdout.trim();
        assert!(
            receivers.contains(&routed),
            "severity={severity} goes to {routed:?}, not one of {receivers:?}"
        );
    }
}
