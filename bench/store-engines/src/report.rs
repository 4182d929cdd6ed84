//! Environment capture and result formatting.

use crate::engines::Config;
use crate::{Params, RunOutcome};
use std::fmt::Write;

const LOCK: &str = include_str!("../Cargo.lock");

fn locked_version(name: &str) -> String {
    let needle = format!("name = \"{name}\"\nversion = \"");
    LOCK.find(&needle)
        .map(|i| {
            let rest = &LOCK[i + needle.len()..];
            rest[..rest.find('"').unwrap_or(0)].to_string()
        })
        .unwrap_or_else(|| "?".into())
}

fn cmd(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("({program} failed: {e})"))
}

pub fn environment(p: &Params) -> String {
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")))
        .unwrap_or_default();
    let df = cmd("df", &["-T", &p.data_root.to_string_lossy()]);
    let mut s = String::new();
    let _ = writeln!(s, "## Environment\n");
    let _ = writeln!(s, "- nproc: {nproc}; CPU: {cpu}; MemTotal: {mem}");
    let _ = writeln!(s, "- kernel: {}", kernel.trim());
    let _ = writeln!(s, "- rustc: {}", cmd("rustc", &["--version"]));
    let _ = writeln!(
        s,
        "- crates (Cargo.lock): rusqlite {}, libsqlite3-sys {}, redb {}, fjall {}, lsm-tree {}",
        locked_version("rusqlite"),
        locked_version("libsqlite3-sys"),
        locked_version("redb"),
        locked_version("fjall"),
        locked_version("lsm-tree"),
    );
    let _ = writeln!(s, "- data dir: `{}`", p.data_root.display());
    let _ = writeln!(s, "- `df -T` of data dir:\n\n```\n{df}\n```");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let _ = writeln!(
        s,
        "\n- arguments: `{}` -> readings={} small_commits={} reps={} configs={}",
        if args.is_empty() { "(none)".to_string() } else { args.join(" ") },
        p.readings,
        p.small_commits,
        p.reps,
        p.configs.iter().map(|c| c.name()).collect::<Vec<_>>().join(",")
    );
    s
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

fn values(outcomes: &[RunOutcome], cfg: Config, key: &str) -> Vec<f64> {
    outcomes
        .iter()
        .filter(|o| o.config == cfg)
        .filter_map(|o| o.result.as_ref().ok())
        .filter_map(|m| m.get(key).copied())
        .collect()
}

fn fmt_num(v: Option<f64>, decimals: usize) -> String {
    match v {
        None => "–".into(),
        Some(x) if decimals == 0 => {
            let s = format!("{:.0}", x);
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i) % 3 == 0 && c.is_ascii_digit() {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
        Some(x) => format!("{:.*}", decimals, x),
    }
}

pub fn progress_line(o: &RunOutcome, secs: f64) -> String {
    match &o.result {
        Ok(m) if o.phase == "w2" => {
            let g = |k: &str| m.get(k).copied();
            format!(
                "[rep {}] {:<17} W2 interleaved: {} commits, {} commits/s, p50 {} ms, p99 {} ms, max {} ms",
                o.rep,
                o.config.name(),
                fmt_num(g("w2_commits"), 0),
                fmt_num(g("w2_commits_per_s"), 0),
                fmt_num(g("w2_p50_ms"), 3),
                fmt_num(g("w2_p99_ms"), 3),
                fmt_num(g("w2_max_ms"), 2),
            )
        }
        Ok(m) => {
            let g = |k: &str| m.get(k).copied();
            format!(
                "[rep {}] {:<17} {:>6.1}s  W1 {} r/s ({} commits/s, batch {})  W3 {} r/s  W4 {} r/s  W5 {} B/r  settle {} s",
                o.rep,
                o.config.name(),
                secs,
                fmt_num(g("w1_readings_per_s"), 0),
                fmt_num(g("w1_commits_per_s"), 1),
                fmt_num(g("w1_mean_batch"), 0),
                fmt_num(g("w3_readings_per_s"), 0),
                fmt_num(g("w4_readings_per_s"), 0),
                fmt_num(g("w5_bytes_per_reading"), 1),
                fmt_num(g("settle_secs"), 2),
            )
        }
        Err(e) => format!("[rep {}] {:<17} {} FAILED: {e}", o.rep, o.config.name(), o.phase),
    }
}

pub fn markdown(p: &Params, env: &str, outcomes: &[RunOutcome], crash: &[String], total_secs: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# store-engines results\n");
    let _ = writeln!(s, "{env}");
    let _ = writeln!(s, "- total wall time: {:.0} s\n", total_secs);
    let _ = writeln!(s, "## Medians over {} repetitions (engines alternated per repetition)\n", p.reps);
    let _ = writeln!(
        s,
        "| config | W1 readings/s | W1 commits/s | W1 mean batch | W2 commits/s (1/mean lat) | W2 p50 ms | W2 p99 ms | W3 readings/s | W4 readings/s | W4 rows | W5 B/reading (du) | W5 apparent B/r | W5 journal (apparent) B/r | W5 after redb compact B/r | settle s |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &cfg in &p.configs {
        let m = |k: &str| median(values(outcomes, cfg, k));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cfg.name(),
            fmt_num(m("w1_readings_per_s"), 0),
            fmt_num(m("w1_commits_per_s"), 1),
            fmt_num(m("w1_mean_batch"), 0),
            fmt_num(m("w2_commits_per_s"), 0),
            fmt_num(m("w2_p50_ms"), 3),
            fmt_num(m("w2_p99_ms"), 3),
            fmt_num(m("w3_readings_per_s"), 0),
            fmt_num(m("w4_readings_per_s"), 0),
            fmt_num(m("w4_rows"), 0),
            fmt_num(m("w5_bytes_per_reading"), 1),
            fmt_num(m("w5_apparent_bytes_per_reading"), 1),
            fmt_num(m("w5_log_bytes_per_reading"), 1),
            fmt_num(m("w5_compacted_bytes_per_reading"), 1),
            fmt_num(m("settle_secs"), 2),
        );
    }
    let _ = writeln!(s, "\n## Spread (min – max over repetitions)\n");
    let _ = writeln!(s, "| config | W1 readings/s | W2 commits/s | W3 readings/s | W4 readings/s |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for &cfg in &p.configs {
        let mm = |k: &str| {
            let v = values(outcomes, cfg, k);
            if v.is_empty() {
                return "–".to_string();
            }
            let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            format!("{} – {}", fmt_num(Some(lo), 0), fmt_num(Some(hi), 0))
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            cfg.name(),
            mm("w1_readings_per_s"),
            mm("w2_commits_per_s"),
            mm("w3_readings_per_s"),
            mm("w4_readings_per_s")
        );
    }
    let _ = writeln!(s, "\n## Configurations and notes\n");
    for &cfg in &p.configs {
        let _ = writeln!(s, "- **{}**: {}", cfg.name(), cfg.describe());
        if let Some(o) = outcomes.iter().find(|o| o.config == cfg && !o.notes.is_empty()) {
            for n in &o.notes {
                if !n.is_empty() {
                    let _ = writeln!(s, "  - {n}");
                }
            }
        }
        for o in outcomes.iter().filter(|o| o.config == cfg) {
            if let Err(e) = &o.result {
                let _ = writeln!(s, "  - rep {} FAILED: {e}", o.rep);
            }
        }
    }
    if !crash.is_empty() {
        let _ = writeln!(
            s,
            "\n## Crash test (child ingests {} readings like W1, abort()s after its last commit; parent reopens)\n",
            p.readings
        );
        for c in crash {
            let _ = writeln!(s, "- {c}");
        }
    }
    let _ = writeln!(s, "\n## All runs\n\n```");
    for o in outcomes {
        let _ = writeln!(s, "{}", progress_line(o, f64::NAN).replace("   NaNs", ""));
    }
    let _ = writeln!(s, "```");
    s
}

pub fn csv(outcomes: &[RunOutcome]) -> String {
    let mut keys: Vec<&'static str> = Vec::new();
    for o in outcomes {
        if let Ok(m) = &o.result {
            for k in m.keys() {
                if !keys.contains(k) {
                    keys.push(k);
                }
            }
        }
    }
    keys.sort();
    let mut s = format!("config,rep,phase,error,{}\n", keys.join(","));
    for o in outcomes {
        let _ = write!(s, "{},{},{},", o.config.name(), o.rep, o.phase);
        match &o.result {
            Ok(m) => {
                s.push(',');
                let vals: Vec<String> =
                    keys.iter().map(|k| m.get(k).map(|v| format!("{v}")).unwrap_or_default()).collect();
                s.push_str(&vals.join(","));
            }
            Err(e) => s.push_str(&e.replace(',', ";")),
        }
        s.push('\n');
    }
    s
}
