//! Binary `COPY` against the writer's `INSERT ... SELECT * FROM unnest(...)`
//! (issue 15 asks for one of the two): the same batches of readings into two
//! tables shaped as `readings` (primary key and the tail's index), one
//! committed transaction per batch, alternating the two ways batch by batch,
//! so both meet the same machine. Prints rows/s of each (medians of batches).
//!
//!     cargo run --release -p sensorhub-store-postgres --example copy_vs_unnest -- \
//!         'postgres://postgres@127.0.0.1:5432/bench?sslmode=disable' [BATCHES] [ROWS]
//!
//! Plain text only (the comparison is of statements, not of TLS). The tables
//! `cmp_unnest` and `cmp_copy` are dropped and made anew.

use std::{pin::pin, str::FromStr, time::Instant};

use tokio_postgres::{NoTls, binary_copy::BinaryCopyInWriter, types::Type};

const TABLE: &str = "(sensor_id text COLLATE \"C\" NOT NULL, ts bigint NOT NULL, seq bigint NOT NULL, \
                     temperature double precision NOT NULL, PRIMARY KEY (sensor_id, ts, seq))";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: copy_vs_unnest URL [BATCHES] [ROWS]")?;
    let batches: usize = args.next().map_or(Ok(40), |a| a.parse())?;
    let rows: usize = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let config = tokio_postgres::Config::from_str(&url)?;
    let (mut client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    for table in ["cmp_unnest", "cmp_copy"] {
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} {TABLE}; \
                 CREATE INDEX {table}_by_seq ON {table} (sensor_id, seq)"
            ))
            .await?;
    }
    let (mut unnest_rates, mut copy_rates) = (Vec::new(), Vec::new());
    let mut seq = 0i64;
    for batch in 0..batches {
        // 100 sensors, timestamps growing per sensor, as a fleet sends them.
        let ids: Vec<String> = (0..rows).map(|i| format!("load-{:05}", i % 100)).collect();
        let ts: Vec<i64> = (0..rows)
            .map(|i| 1_700_000_000 + (batch * rows + i) as i64 / 100)
            .collect();
        let seqs: Vec<i64> = (0..rows as i64).map(|i| seq + 1 + i).collect();
        let temps: Vec<f64> = (0..rows).map(|i| 20.0 + (i % 13) as f64 * 0.5).collect();
        seq += rows as i64;
        // Alternate which goes first, so neither always meets a warmer cache.
        let order = if batch % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for use_copy in order {
            let started = Instant::now();
            let tx = client.transaction().await?;
            if use_copy {
                let sink = tx
                    .copy_in("COPY cmp_copy (sensor_id, ts, seq, temperature) FROM STDIN (FORMAT binary)")
                    .await?;
                let mut writer = pin!(BinaryCopyInWriter::new(
                    sink,
                    &[Type::TEXT, Type::INT8, Type::INT8, Type::FLOAT8]
                ));
                for i in 0..rows {
                    writer
                        .as_mut()
                        .write(&[&ids[i], &ts[i], &seqs[i], &temps[i]])
                        .await?;
                }
                writer.finish().await?;
            } else {
                tx.execute(
                    "INSERT INTO cmp_unnest (sensor_id, ts, seq, temperature) \
                     SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::float8[])",
                    &[&ids, &ts, &seqs, &temps],
                )
                .await?;
            }
            tx.commit().await?;
            let rate = rows as f64 / started.elapsed().as_secs_f64();
            if use_copy {
                copy_rates.push(rate);
            } else {
                unnest_rates.push(rate);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (u, c) = (median(&mut unnest_rates), median(&mut copy_rates));
    println!(
        "{batches} batches of {rows} rows, one commit each: unnest INSERT {u:.0} rows/s, binary COPY {c:.0} rows/s, COPY/unnest {:.2}",
        c / u
    );
    Ok(())
}
