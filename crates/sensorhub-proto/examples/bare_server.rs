//! A bare tonic SensorService: the ceiling that benchmarks compare
//! sensorhub against (bench/rpc/run.sh).
//!
//! It does what the Python original did and nothing more: readings go into
//! an in-memory map of sensor → readings behind one lock, with no
//! authentication, no validation, no durability and no telemetry. Client
//! streams are stored a few thousand readings per lock. History streams a
//! copy of the sensor's readings (`since`, `until` and `limit` are honoured;
//! `follow` is not). Optional TLS, so the two can be compared under the
//! same transport.
//!
//! ```sh
//! cargo run --release -p sensorhub-proto --example bare_server -- \
//!     --listen 127.0.0.1:50052 [--tls-cert server.pem --tls-key server.key]
//! ```

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use sensorhub_proto::{
    Ack, SensorReading, SensorRequest, SensorStats, ServerMessage, ServerMessageKind, StatsReply,
    StatsRequest,
    sensor_service_server::{SensorService, SensorServiceServer},
};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{
    Request, Response, Status, Streaming,
    transport::{Identity, Server, ServerTlsConfig},
};

/// Readings of a client stream stored per lock.
const CHUNK: usize = 4096;

/// (temperature, timestamp) in arrival order, per sensor.
type Readings = HashMap<String, Vec<(f64, i64)>>;

#[derive(Debug, Default, Clone)]
struct Bare {
    readings: Arc<Mutex<Readings>>,
}

impl Bare {
    fn store(&self, batch: &mut Vec<SensorReading>) {
        let mut map = self.readings.lock().expect("not poisoned");
        for r in batch.drain(..) {
            // Look up by &str first: no allocation for a sensor already known.
            match map.get_mut(r.sensor_id.as_str()) {
                Some(list) => list.push((r.temperature, r.timestamp)),
                None => {
                    map.insert(r.sensor_id, vec![(r.temperature, r.timestamp)]);
                }
            }
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `f"Received {temperature}"` as Python prints a float (`25.0`, not `25`).
fn received(temperature: f64) -> String {
    if temperature.is_finite() && temperature.fract() == 0.0 && temperature.abs() < 1e16 {
        format!("Received {temperature:.1}")
    } else {
        format!("Received {temperature}")
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl SensorService for Bare {
    async fn send_single_reading(
        &self,
        request: Request<SensorReading>,
    ) -> Result<Response<Ack>, Status> {
        self.store(&mut vec![request.into_inner()]);
        Ok(Response::new(Ack {
            message: "Reading received.".into(),
            count: 1,
        }))
    }

    async fn stream_sensor_readings(
        &self,
        request: Request<Streaming<SensorReading>>,
    ) -> Result<Response<Ack>, Status> {
        let mut inbound = request.into_inner();
        let mut batch = Vec::with_capacity(CHUNK);
        let mut count = 0u64;
        while let Some(reading) = inbound.message().await? {
            batch.push(reading);
            count += 1;
            if batch.len() >= CHUNK {
                self.store(&mut batch);
            }
        }
        self.store(&mut batch);
        Ok(Response::new(Ack {
            message: "All readings stored.".into(),
            count,
        }))
    }

    type GetSensorReadingsStream = BoxStream<SensorReading>;

    async fn get_sensor_readings(
        &self,
        request: Request<SensorRequest>,
    ) -> Result<Response<Self::GetSensorReadingsStream>, Status> {
        let request = request.into_inner();
        let limit = if request.limit == 0 {
            usize::MAX
        } else {
            request.limit as usize
        };
        let in_range = |ts: i64| {
            (request.since == 0 || ts >= request.since)
                && (request.until == 0 || ts < request.until)
        };
        let snapshot: Vec<(f64, i64)> = {
            let map = self.readings.lock().expect("not poisoned");
            map.get(&request.sensor_id)
                .map(|list| {
                    if request.since == 0 && request.until == 0 {
                        list[..list.len().min(limit)].to_vec()
                    } else {
                        list.iter()
                            .copied()
                            .filter(|(_, ts)| in_range(*ts))
                            .take(limit)
                            .collect()
                    }
                })
                .unwrap_or_default()
        };
        // In arrival order, as the original did (readings of one sensor
        // usually arrive in time order).
        let sensor_id = request.sensor_id;
        let stream = tokio_stream::iter(snapshot).map(move |(temperature, timestamp)| {
            Ok(SensorReading {
                sensor_id: sensor_id.clone(),
                temperature,
                timestamp,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type SensorChatStream = BoxStream<ServerMessage>;

    async fn sensor_chat(
        &self,
        request: Request<Streaming<SensorReading>>,
    ) -> Result<Response<Self::SensorChatStream>, Status> {
        let bare = self.clone();
        // Each reading is stored and answered as it arrives.
        let replies = request.into_inner().map(move |reading| {
            let reading = reading?;
            let temperature = reading.temperature;
            bare.store(&mut vec![reading]);
            Ok(ServerMessage {
                message: received(temperature),
                server_time: unix_now(),
                kind: ServerMessageKind::Received as i32,
                alert: None,
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn get_sensor_stats(
        &self,
        request: Request<StatsRequest>,
    ) -> Result<Response<StatsReply>, Status> {
        let wanted = request.into_inner().sensor_id;
        let map = self.readings.lock().expect("not poisoned");
        let mut sensors: Vec<SensorStats> = map
            .iter()
            .filter(|(id, _)| wanted.is_empty() || **id == wanted)
            .filter_map(|(id, list)| {
                let (&(last, last_timestamp), _) = list.split_last()?;
                let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
                for (t, _) in list {
                    min = min.min(*t);
                    max = max.max(*t);
                    sum += t;
                }
                Some(SensorStats {
                    sensor_id: id.clone(),
                    count: list.len() as u64,
                    min,
                    max,
                    mean: sum / list.len() as f64,
                    last,
                    last_timestamp,
                    rolling_mean: sum / list.len() as f64,
                    alerts: 0,
                })
            })
            .collect();
        sensors.sort_by(|a, b| a.sensor_id.cmp(&b.sensor_id));
        Ok(Response::new(StatsReply {
            sensors,
            next_cursor: String::new(),
        }))
    }
}

struct Options {
    listen: SocketAddr,
    tls: Option<(String, String)>,
    max_concurrent_streams: u32,
}

fn usage() -> ! {
    eprintln!(
        "usage: bare_server [--listen ADDR] [--tls-cert PEM --tls-key PEM] [--max-concurrent-streams N]\n\
         defaults: --listen 127.0.0.1:50052, plaintext, 256 streams per connection (as sensorhub)"
    );
    std::process::exit(2);
}

fn options() -> Options {
    let mut listen: SocketAddr = "127.0.0.1:50052".parse().expect("a valid address");
    let (mut cert, mut key) = (None, None);
    let mut max_concurrent_streams = 256;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--listen" => listen = value().parse().unwrap_or_else(|_| usage()),
            "--tls-cert" => cert = Some(value()),
            "--tls-key" => key = Some(value()),
            "--max-concurrent-streams" => {
                max_concurrent_streams = value().parse().unwrap_or_else(|_| usage())
            }
            _ => usage(),
        }
    }
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => usage(),
    };
    Options {
        listen,
        tls,
        max_concurrent_streams,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options();
    let mut server = Server::builder().max_concurrent_streams(options.max_concurrent_streams);
    if let Some((cert, key)) = &options.tls {
        let identity = Identity::from_pem(std::fs::read(cert)?, std::fs::read(key)?);
        server = server.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    eprintln!(
        "bare SensorService on {} ({})",
        listener.local_addr()?,
        if options.tls.is_some() {
            "TLS"
        } else {
            "plaintext"
        }
    );
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    server
        .add_service(SensorServiceServer::new(Bare::default()))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
