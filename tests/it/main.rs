//! The integration tests: one binary, one module per behaviour, each starting
//! a real server (in process through `sensorhub_grpc::testing::TestServer`,
//! or as a `sensorhub serve` child through `support::spawned_server`).
//!
//! One binary rather than one per file: every test binary links the whole
//! dependency tree, so 29 of them cost most of the build's link time and
//! disk. Run one behaviour with `cargo test --test it follow::`.

mod support;

mod auth;
mod bad_input;
mod balancing;
mod cert_identities;
mod cli;
mod commit_lost;
mod connection_age;
mod connection_metrics;
mod crash_durability;
mod database_faults;
mod database_telemetry;
mod database_tls;
mod deadlines;
mod deploy_files;
mod deploy_metric_names;
mod deploy_prometheus_scrape;
mod deploy_rules;
mod deploy_scripts;
mod dns_refresh;
mod durability;
mod exhaustion;
mod follow;
mod graceful_shutdown;
mod hashed_tokens;
mod health_http;
mod idempotency;
mod journal_replay;
mod limits;
mod live_view;
mod live_view_browser;
mod load;
mod nginx;
mod overload;
mod profiling;
mod python_interop;
mod python_original;
mod reflection;
mod reload;
mod replicas;
mod retry_metrics;
mod scopes;
mod slow_consumers;
mod stats_pages;
mod telemetry_exemplars;
mod telemetry_export;
mod telemetry_faults;
mod telemetry_prometheus;
mod telemetry_semconv;
mod test_bidirectional_streaming;
mod test_client_streaming;
mod test_server_streaming;
mod test_unary;
mod tls;
mod tokens_file;
mod validation;
