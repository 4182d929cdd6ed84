//! Replaying a large journal at startup costs bounded memory (issue 13 §5).
//!
//! A store whose tables hold nothing and whose journal holds a file of
//! almost 64 MiB (what a crash can leave when the tables' WAL was lost, or
//! an indexer that could not keep up): the restart replays all of it, and
//! the server's peak resident memory grows by far less than the file.
//! Before, recovery read the whole file into memory and then every reading
//! in it, and handed them to the tables in one transaction.

use std::{path::Path, time::Duration};

use sensorhub_grpc::{ClientConfig, SensorClient, testing::unix_now};
use sensorhub_proto::{SensorReading, StatsRequest};

use crate::support::spawned_server::SpawnedServer;

const TOKEN: &str = "journal-replay-token";
/// Sensors, each with the longest id accepted (128 bytes), so that a reading
/// takes 146 bytes in the journal and the file nears 64 MiB quickly.
const SENSORS: usize = 8;
/// Just under one journal file (64 MiB): 450,000 × 146 bytes and the frames' headers.
const READINGS: usize = 450_000;
/// Readings per client stream.
const PER_CALL: usize = 15_000;
/// Replay may raise the server's peak memory by this much, against a start
/// on the same store with an empty journal.
const MAX_GROWTH: u64 = 40 << 20;

fn sensor(k: usize) -> String {
    let id = format!("journal-replay-{k}-");
    format!("{id}{}", "x".repeat(128 - id.len()))
}

async fn connect(server: &SpawnedServer) -> SensorClient {
    let mut config = ClientConfig::new(server.url());
    config.token = Some(TOKEN.to_owned());
    sensorhub_grpc::connect(&config).await.expect("connect")
}

fn the_journal_file(data: &Path) -> std::path::PathBuf {
    let files: Vec<_> = std::fs::read_dir(data.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one journal file: {files:?}");
    files[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_replay_of_a_64_mib_file_costs_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (empty, full) = (dir.path().join("empty"), dir.path().join("full"));

    // A store with empty tables; how much memory a start on it takes.
    let server = SpawnedServer::start(&empty, TOKEN, &[]);
    connect(&server).await;
    let baseline = server.peak_rss_bytes();
    let (output, _) = server.terminate(Duration::from_secs(20));
    assert!(output.status.success(), "{output:?}");

    // The journal: READINGS readings, through client streams.
    let server = SpawnedServer::start(&full, TOKEN, &[]);
    let mut client = connect(&server).await;
    let base = unix_now() - 86_400;
    for call in 0..READINGS / PER_CALL {
        let readings: Vec<SensorReading> = (0..PER_CALL)
            .map(|i| SensorReading {
                sensor_id: sensor(i % SENSORS),
                temperature: 20.0 + (i % 50) as f64 * 0.1,
                timestamp: base + (call * PER_CALL + i) as i64 / 8,
            })
            .collect();
        let ack = client
            .stream_sensor_readings(tokio_stream::iter(readings))
            .await
            .expect("store readings")
            .into_inner();
        assert_eq!(ack.count, PER_CALL as u64);
    }
    drop(client);
    let (output, _) = server.terminate(Duration::from_secs(60));
    assert!(output.status.success(), "{output:?}");
    let journal = the_journal_file(&full);
    let size = std::fs::metadata(&journal).unwrap().len();
    assert!(size > 60 << 20, "the journal file is {size} bytes");

    // Tables that hold nothing, a journal that holds it all.
    std::fs::copy(&journal, the_journal_file(&empty)).unwrap();
    let server = SpawnedServer::start(&empty, TOKEN, &[]);
    let peak = server.peak_rss_bytes();
    let mut client = connect(&server).await;
    let stored: u64 = client
        .get_sensor_stats(StatsRequest::default())
        .await
        .expect("GetSensorStats")
        .into_inner()
        .sensors
        .iter()
        .map(|s| s.count)
        .sum();
    assert_eq!(stored, READINGS as u64, "every reading replayed");
    eprintln!(
        "peak resident memory: {} MiB on empty tables, {} MiB replaying a {} MiB journal",
        baseline >> 20,
        peak >> 20,
        size >> 20
    );
    assert!(
        peak < baseline + MAX_GROWTH,
        "replaying a {} MiB journal raised the peak from {} to {} MiB",
        size >> 20,
        baseline >> 20,
        peak >> 20
    );
}
