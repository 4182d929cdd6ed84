//! store-engines: compares SQLite, redb and fjall for sensorhub's reading store.
//!
//! Usage: cargo run --release -- [--quick] [--reps N] [--readings N]
//!        [--small-commits N] [--configs a,b,...] [--data-dir DIR] [--keep-data]

mod engines;
mod model;
mod report;

use engines::{Config, Result, Store};
use model::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PRODUCERS: u32 = 4;
/// Readings per message a producer sends to the writer.
const PRODUCER_BATCH: usize = 1024;
/// Channel capacity in messages (bounded: producers block when the writer lags).
const CHANNEL_MSGS: usize = 128;
/// Upper bound of readings the writer puts into one transaction.
const MAX_COMMIT: usize = 64 * 1024;
/// Page size of the streaming reads (W3, W4).
const PAGE: usize = 4096;
/// Readings put into each W2 store (one commit) before the single-reading commits.
const W2_PREFILL: u64 = 100_000;
/// Upper bound for one interleaved W2 round (keeps the run bounded on a slow disk).
const W2_ROUND_DEADLINE: Duration = Duration::from_secs(30);
/// W4 reads the hot sensor's readings with seq > X, X chosen so that exactly
/// TAIL_ROWS readings qualify (see RESULTS.md for why not "global max_seq - 100k").
const TAIL_ROWS: usize = 100_000;

#[derive(Clone, Debug)]
pub struct Params {
    pub readings: u64,
    pub small_commits: usize,
    pub reps: usize,
    pub configs: Vec<Config>,
    pub data_root: PathBuf,
    pub keep_data: bool,
    pub quick: bool,
    pub crash_test: bool,
}

fn parse_args() -> std::result::Result<Params, String> {
    let mut p = Params {
        readings: 5_000_000,
        small_commits: 2_000,
        reps: 3,
        configs: Config::ALL.to_vec(),
        data_root: Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("tmp-data"),
        keep_data: false,
        quick: false,
        crash_test: true,
    };
    let mut explicit_readings = None;
    let mut explicit_small = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let val = |i: &mut usize| -> std::result::Result<String, String> {
        *i += 1;
        args.get(*i).cloned().ok_or_else(|| format!("missing value after {}", args[*i - 1]))
    };
    while i < args.len() {
        match args[i].as_str() {
            "--quick" => p.quick = true,
            "--reps" => p.reps = val(&mut i)?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--readings" => {
                explicit_readings = Some(val(&mut i)?.parse().map_err(|e| format!("--readings: {e}"))?)
            }
            "--small-commits" => {
                explicit_small =
                    Some(val(&mut i)?.parse().map_err(|e| format!("--small-commits: {e}"))?)
            }
            "--configs" => {
                let v = val(&mut i)?;
                p.configs = v
                    .split(',')
                    .map(|s| Config::from_name(s.trim()).ok_or_else(|| format!("unknown config {s}")))
                    .collect::<std::result::Result<_, _>>()?;
            }
            "--data-dir" => p.data_root = PathBuf::from(val(&mut i)?),
            "--keep-data" => p.keep_data = true,
            "--no-crash-test" => p.crash_test = false,
            "-h" | "--help" => {
                let names: Vec<_> = Config::ALL.iter().map(|c| c.name()).collect();
                println!(
                    "store-engines [--quick] [--reps N] [--readings N] [--small-commits N] \
                     [--configs {}] [--data-dir DIR] [--keep-data] [--no-crash-test]",
                    names.join(",")
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
        i += 1;
    }
    if p.quick {
        p.readings = 300_000;
        p.small_commits = 200;
    }
    if let Some(r) = explicit_readings {
        p.readings = r;
    }
    if let Some(s) = explicit_small {
        p.small_commits = s;
    }
    Ok(p)
}

pub type Metrics = BTreeMap<&'static str, f64>;

pub struct RunOutcome {
    pub config: Config,
    pub rep: usize,
    /// "pipeline" (W1, W5, W3, W4) or "w2" (interleaved small commits)
    pub phase: &'static str,
    pub result: std::result::Result<Metrics, String>,
    pub notes: Vec<String>,
}

fn dir_size(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut apparent = 0;
    let mut allocated = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else {
                apparent += md.len();
                allocated += md.blocks() * 512;
            }
        }
    }
    (apparent, allocated)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // nearest-rank
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// W1: group-commit ingest. Returns (metrics, hot sensor count, hot sensor max ts, max seq).
fn w1_ingest(store: &mut dyn Store, total: u64, m: &mut Metrics) -> Result<(u64, i64, u64)> {
    let seq = Arc::new(AtomicU64::new(1));
    let pacer = Arc::new(Pacer::new(PRODUCERS as usize));
    let (tx, rx) = sync_channel::<Vec<Reading>>(CHANNEL_MSGS);
    let start = Instant::now();
    let mut handles = Vec::new();
    for p in 0..PRODUCERS {
        let count = total / PRODUCERS as u64 + if p == 0 { total % PRODUCERS as u64 } else { 0 };
        let tx = tx.clone();
        let seq = seq.clone();
        let pacer = pacer.clone();
        handles.push(std::thread::spawn(move || run_producer(p, count, PRODUCER_BATCH, seq, pacer, tx)));
    }
    drop(tx);

    let mut buf: Vec<Reading> = Vec::with_capacity(MAX_COMMIT + PRODUCER_BATCH);
    let mut commits = 0u64;
    let mut written = 0u64;
    let mut commit_time = Duration::ZERO;
    let mut max_commit = Duration::ZERO;
    while let Ok(first) = rx.recv() {
        buf.extend_from_slice(&first);
        while buf.len() + PRODUCER_BATCH <= MAX_COMMIT {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        let t = Instant::now();
        store.commit(&buf)?;
        let d = t.elapsed();
        commit_time += d;
        max_commit = max_commit.max(d);
        commits += 1;
        written += buf.len() as u64;
        buf.clear();
    }
    let elapsed = start.elapsed().as_secs_f64();

    let mut hot = (0u64, i64::MIN);
    for h in handles {
        let rep = h.join().map_err(|_| "producer panicked")?;
        for (s, n, max_ts) in rep.per_sensor {
            if s == HOT_SENSOR {
                hot = (n, max_ts);
            }
        }
    }
    if written != total {
        return Err(format!("wrote {written} readings, expected {total}").into());
    }
    m.insert("w1_secs", elapsed);
    m.insert("w1_readings_per_s", written as f64 / elapsed);
    m.insert("w1_commits_per_s", commits as f64 / elapsed);
    m.insert("w1_commits", commits as f64);
    m.insert("w1_mean_batch", written as f64 / commits as f64);
    m.insert("w1_commit_busy_frac", commit_time.as_secs_f64() / elapsed);
    m.insert("w1_max_commit_ms", max_commit.as_secs_f64() * 1e3);
    let max_seq = seq.load(Ordering::SeqCst) - 1;
    Ok((hot.0, hot.1, max_seq))
}

/// W3: full history of the hot sensor in (ts, seq) order, keyset-paginated.
/// Returns (X, n): the seq after which exactly n = min(TAIL_ROWS, count) readings of
/// the hot sensor follow, i.e. the input and the expected result size of W4.
fn w3_history(store: &mut dyn Store, expected: u64, until: i64, m: &mut Metrics) -> Result<(u64, u64)> {
    // Harness-side bookkeeping for W4 (8 bytes per reading); the store itself only
    // ever materialises one page.
    let mut seqs: Vec<u64> = Vec::with_capacity(expected as usize);
    let mut out = Vec::with_capacity(PAGE);
    let mut after: Option<(i64, u64)> = None;
    let mut rows = 0u64;
    let mut checksum = 0.0f64;
    let start = Instant::now();
    loop {
        out.clear();
        store.history_page(HOT_SENSOR, T0, until, after, PAGE, &mut out)?;
        for r in &out {
            if r.sensor != HOT_SENSOR {
                return Err(format!("W3: wrong sensor {}", r.sensor).into());
            }
            if let Some(prev) = after {
                if (r.ts, r.seq) <= prev {
                    return Err(format!("W3: order violated {:?} after {:?}", (r.ts, r.seq), prev).into());
                }
            }
            after = Some((r.ts, r.seq));
            seqs.push(r.seq);
            checksum += r.temp;
        }
        rows += out.len() as u64;
        if out.len() < PAGE {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(checksum);
    if rows != expected {
        return Err(format!("W3: read {rows} readings, expected {expected}").into());
    }
    m.insert("w3_rows", rows as f64);
    m.insert("w3_secs", secs);
    m.insert("w3_readings_per_s", rows as f64 / secs);
    seqs.sort_unstable();
    let n = seqs.len().min(TAIL_ROWS);
    let x = if n < seqs.len() { seqs[seqs.len() - n - 1] } else { 0 };
    Ok((x, n as u64))
}

/// W4: tail of the hot sensor, seq > tail_after, in seq order, paginated by seq.
/// Repeated until at least 0.5 s have been measured (max 20 repetitions).
fn w4_tail(store: &mut dyn Store, tail_after: u64, expected: u64, m: &mut Metrics) -> Result<()> {
    let mut out = Vec::with_capacity(PAGE);
    let mut total_rows = 0u64;
    let mut reps = 0u32;
    let start = Instant::now();
    while reps == 0 || (start.elapsed() < Duration::from_millis(500) && reps < 20) {
        let mut after = tail_after;
        let mut rows = 0u64;
        loop {
            out.clear();
            store.tail_page(HOT_SENSOR, after, PAGE, &mut out)?;
            for r in &out {
                if r.sensor != HOT_SENSOR || r.seq <= after {
                    return Err(format!("W4: bad row {r:?} after seq {after}").into());
                }
                after = r.seq;
            }
            rows += out.len() as u64;
            if out.len() < PAGE {
                break;
            }
        }
        if rows != expected {
            return Err(format!("W4: read {rows} readings, expected {expected}").into());
        }
        total_rows += rows;
        reps += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    m.insert("w4_rows", expected as f64);
    m.insert("w4_query_ms", secs * 1e3 / reps as f64);
    m.insert("w4_readings_per_s", total_rows as f64 / secs);
    Ok(())
}

/// W2: one reading per durable commit, interleaved commit-by-commit across all
/// configurations (A B C A B C ...), so that every engine sees the same disk
/// weather. Each store is first filled with W2_PREFILL readings in one commit so
/// its trees are not trivially small. One call = one round; `deadline` caps it.
fn w2_round(round: usize, p: &Params, deadline: Duration) -> Vec<RunOutcome> {
    let mut stores: Vec<(Config, PathBuf, Result<Box<dyn Store>>)> = Vec::new();
    for &cfg in &p.configs {
        let dir = p.data_root.join(format!("{}-{}-w2-round{}", std::process::id(), cfg.name(), round));
        let _ = std::fs::remove_dir_all(&dir);
        let opened = std::fs::create_dir_all(&dir).map_err(|e| e.into()).and_then(|_| cfg.open(&dir)).and_then(
            |mut st| {
                let prefill: Vec<Reading> = (0..W2_PREFILL)
                    .map(|i| Reading {
                        sensor: 1 + (i % 16) as u32,
                        ts: T0 + (i / 16) as i64,
                        seq: 1 + i,
                        temp: 20.0 + (i % 100) as f64 * 0.01,
                    })
                    .collect();
                st.commit(&prefill)?;
                Ok(st)
            },
        );
        stores.push((cfg, dir, opened));
    }
    let mut lat: Vec<Vec<f64>> = vec![Vec::with_capacity(p.small_commits); stores.len()];
    let start = Instant::now();
    let mut errors: Vec<Option<String>> = vec![None; stores.len()];
    'outer: for i in 0..p.small_commits {
        for (k, (_, _, st)) in stores.iter_mut().enumerate() {
            let Ok(st) = st else { continue };
            if errors[k].is_some() {
                continue;
            }
            let r = Reading { sensor: 1000, ts: T0 + i as i64, seq: W2_PREFILL + 1 + i as u64, temp: 20.0 };
            let t = Instant::now();
            match st.commit(std::slice::from_ref(&r)) {
                Ok(()) => lat[k].push(t.elapsed().as_secs_f64() * 1e3),
                Err(e) => errors[k] = Some(e.to_string()),
            }
        }
        if start.elapsed() > deadline {
            break 'outer;
        }
    }
    let mut out = Vec::new();
    for (k, (cfg, dir, st)) in stores.into_iter().enumerate() {
        let result = match (st, &errors[k]) {
            (Err(e), _) => Err(e.to_string()),
            (_, Some(e)) => Err(e.clone()),
            (Ok(st), None) => {
                drop(st);
                let l = &mut lat[k];
                let busy: f64 = l.iter().sum();
                l.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let mut m = Metrics::new();
                m.insert("w2_commits", l.len() as f64);
                m.insert("w2_commits_per_s", l.len() as f64 / (busy / 1e3));
                m.insert("w2_p50_ms", percentile(l, 50.0));
                m.insert("w2_p99_ms", percentile(l, 99.0));
                m.insert("w2_max_ms", *l.last().unwrap_or(&f64::NAN));
                Ok(m)
            }
        };
        if !p.keep_data {
            let _ = std::fs::remove_dir_all(&dir);
        }
        out.push(RunOutcome { config: cfg, rep: round, phase: "w2", result, notes: Vec::new() });
    }
    out
}

/// Raw cost of one small appending write + fdatasync on the data disk, to put W2 in
/// perspective. Returns (p50 ms, p99 ms).
fn fsync_baseline(root: &Path, n: usize) -> (f64, f64) {
    use std::io::Write;
    let path = root.join(format!("{}-fsync-probe", std::process::id()));
    let mut lat = Vec::with_capacity(n);
    if let Ok(mut f) = std::fs::File::create(&path) {
        for i in 0..n {
            let t = Instant::now();
            let _ = f.write_all(&(i as u64).to_le_bytes().repeat(8));
            let _ = f.sync_data();
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let _ = std::fs::remove_file(&path);
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (percentile(&lat, 50.0), percentile(&lat, 99.0))
}

fn run_config(cfg: Config, rep: usize, p: &Params) -> RunOutcome {
    let dir = p.data_root.join(format!("{}-{}-rep{}", std::process::id(), cfg.name(), rep));
    let _ = std::fs::remove_dir_all(&dir);
    let mut notes = Vec::new();
    let result = (|| -> Result<Metrics> {
        std::fs::create_dir_all(&dir)?;
        let mut m = Metrics::new();
        let mut store = cfg.open(&dir)?;
        let (hot_count, hot_until, max_seq) = w1_ingest(store.as_mut(), p.readings, &mut m)?;

        let t = Instant::now();
        store.settle()?;
        m.insert("settle_secs", t.elapsed().as_secs_f64());
        let (apparent, allocated) = dir_size(&dir);
        let log = store.log_bytes();
        m.insert("w5_bytes", allocated as f64);
        m.insert("w5_bytes_per_reading", allocated as f64 / p.readings as f64);
        m.insert("w5_apparent_bytes_per_reading", apparent as f64 / p.readings as f64);
        m.insert("w5_log_bytes_per_reading", log as f64 / p.readings as f64);

        if cfg.runs_reads() {
            let (tail_after, tail_expected) = w3_history(store.as_mut(), hot_count, hot_until, &mut m)?;
            m.insert("w4_window_seqs", (max_seq - tail_after) as f64);
            w4_tail(store.as_mut(), tail_after, tail_expected, &mut m)?;
        }
        let _ = max_seq;
        // Optional engine-specific compaction (redb only), measured after everything else.
        let t = Instant::now();
        if store.compact()? {
            m.insert("compact_secs", t.elapsed().as_secs_f64());
            let (apparent, allocated) = dir_size(&dir);
            m.insert("w5_compacted_bytes_per_reading", allocated as f64 / p.readings as f64);
            m.insert("w5_compacted_apparent_bytes_per_reading", apparent as f64 / p.readings as f64);
        }
        notes = store.notes();
        drop(store);
        Ok(m)
    })()
    .map_err(|e| e.to_string());
    if !p.keep_data {
        let _ = std::fs::remove_dir_all(&dir);
    }
    // Push the deleted files' metadata out so that the next run starts on a calm disk.
    let _ = std::process::Command::new("sync").status();
    RunOutcome { config: cfg, rep, phase: "pipeline", result, notes }
}

/// Child side of the crash test: ingest like W1, report what was committed, then
/// abort() without closing the store (no destructors, no clean shutdown).
fn crash_child(args: &[String]) -> ! {
    let cfg = Config::from_name(&args[0]).expect("config");
    let dir = PathBuf::from(&args[1]);
    let readings: u64 = args[2].parse().expect("readings");
    let mut store = cfg.open(&dir).expect("open");
    let mut m = Metrics::new();
    let (hot, until, max_seq) = w1_ingest(store.as_mut(), readings, &mut m).expect("ingest");
    println!("COMMITTED {hot} {until} {max_seq}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::abort();
}

/// Crash test: a child process ingests `readings` and aborts right after its last
/// durable commit; we then reopen the store, time the recovery, and check that every
/// committed reading of the hot sensor is there (process crash, not power loss).
fn crash_test(cfg: Config, p: &Params) -> String {
    let dir = p.data_root.join(format!("{}-{}-crash", std::process::id(), cfg.name()));
    let _ = std::fs::remove_dir_all(&dir);
    let res = (|| -> Result<String> {
        std::fs::create_dir_all(&dir)?;
        let out = std::process::Command::new(std::env::current_exe()?)
            .args(["--crash-child", cfg.name(), &dir.to_string_lossy(), &p.readings.to_string()])
            .stderr(std::process::Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("COMMITTED"))
            .ok_or_else(|| format!("child did not report (status {:?})", out.status))?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let (hot, until): (u64, i64) = (f[1].parse()?, f[2].parse()?);
        let (_, size_before) = dir_size(&dir);
        let t = Instant::now();
        let mut store = cfg.open(&dir)?;
        let mut page = Vec::with_capacity(PAGE);
        store.history_page(HOT_SENSOR, T0, until, None, PAGE, &mut page)?;
        let reopen = t.elapsed().as_secs_f64();
        let mut m = Metrics::new();
        w3_history(store.as_mut(), hot, until, &mut m)?;
        drop(store);
        Ok(format!(
            "child killed by signal {:?}; reopen + first page {:.3} s; all {} committed hot-sensor readings present; dir {:.0} MB at crash",
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            reopen,
            hot,
            size_before as f64 / 1e6
        ))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    match res {
        Ok(s) => s,
        Err(e) => format!("FAILED: {e}"),
    }
}

fn main() {
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(|s| s == "--crash-child").unwrap_or(false) {
        crash_child(&raw[2..]);
    }
    let p = match parse_args() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(&p.data_root).expect("create data dir");
    let (f50, f99) = fsync_baseline(&p.data_root, 1000);
    let mut env = report::environment(&p);
    env.push_str(&format!(
        "- raw baseline, 1000 x (append 64 B + fdatasync) on the data dir before the run: p50 {f50:.3} ms, p99 {f99:.3} ms\n"
    ));
    println!("{env}");
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for rep in 0..p.reps {
        for &cfg in &p.configs {
            let t = Instant::now();
            let o = run_config(cfg, rep, &p);
            println!("{}", report::progress_line(&o, t.elapsed().as_secs_f64()));
            outcomes.push(o);
        }
        if p.small_commits > 0 {
            let t = Instant::now();
            for o in w2_round(rep, &p, W2_ROUND_DEADLINE) {
                println!("{}", report::progress_line(&o, t.elapsed().as_secs_f64()));
                outcomes.push(o);
            }
        }
    }
    let mut crash = Vec::new();
    if p.crash_test {
        for cfg in [Config::SqliteS2, Config::Redb, Config::Fjall] {
            if !p.configs.contains(&cfg) {
                continue;
            }
            let line = format!("{}: {}", cfg.name(), crash_test(cfg, &p));
            println!("[crash] {line}");
            crash.push(line);
        }
    }
    let total = started.elapsed().as_secs_f64();
    let (f50, f99) = fsync_baseline(&p.data_root, 1000);
    env.push_str(&format!(
        "- same baseline after the run: p50 {f50:.3} ms, p99 {f99:.3} ms\n"
    ));
    let md = report::markdown(&p, &env, &outcomes, &crash, total);
    println!("\n{md}");
    let results_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    let _ = std::fs::create_dir_all(&results_dir);
    let name = if p.quick { "latest-quick" } else { "latest" };
    let _ = std::fs::write(results_dir.join(format!("{name}.md")), &md);
    let _ = std::fs::write(results_dir.join(format!("{name}-raw.csv")), report::csv(&outcomes));
    println!("wrote results/{name}.md and results/{name}-raw.csv");
    if outcomes.iter().any(|o| o.result.is_err()) {
        std::process::exit(1);
    }
}
