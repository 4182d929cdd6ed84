//! The kit the behaviours share: servers as child processes, a raw gRPC
//! client, a real Prometheus and the other Debian programs tests run, and the compose stack's files read as their
//! programs read them. In-process servers come from
//! `sensorhub_grpc::testing`.

pub mod attacker;
pub mod deploy_stack;
pub mod deploy_traffic;
pub mod engines;
pub mod exposition;
pub mod http;
pub mod pg_proxy;
pub mod ports;
pub mod prometheus_process;
pub mod promql;
pub mod python;
pub mod raw_grpc;
pub mod spawned_server;
pub mod system_tools;
pub mod view_client;
