#!/usr/bin/env bash
# Server CPU per unary call, split by thread: which part of sensorhub a call costs.
#
#   bench/rpc/threads.sh [full|sampled|notel|memory|bare] [SECONDS]
#
# Starts `sensorhub serve` (TLS, token; the durable store in a temporary
# directory, or --memory; telemetry off, or for `full` traces and metrics
# exported to a local OTLP receiver, the otlp_sink example; `sampled` is `full`
# with traces sampled at 10 %; `bare` is run.sh's bare-tls peer instead, bare
# tonic over TLS, crates/sensorhub-proto/examples/bare_server.rs, the yardstick
# of issue 19's ratios), drives it with `sensorhub load --mode unary`
# (closed loop, CONNECTIONS x CONCURRENCY, 4 x 100 by default, SENSORS distinct
# sensor ids, 100 by default), and prints each thread group's CPU time
# (user + system, /proc/PID/task/*/stat, bench/rpc/tasks.sh) divided by the calls.
# BIN=path/to/sensorhub measures another build (an A/B against an older commit).
# RATE=N runs an open loop at N calls/s instead and also prints the p99 latency.
# TOKENS_FILE=FILE serves with --tokens-file FILE instead of --token bench (its
# lines must accept the token `bench`; bench/rpc/scopes.sh uses it).
# HTTP=1 also serves /metrics, /healthz and the live view on a free port, as
# run.sh's full and sampled peers do (a second metric reader, the live view's
# recorders); without it the server runs with --http off.
# METRICS=FILE (with HTTP=1) saves the server's /metrics after the load into
# FILE: sensorhub_store_commit_size says how many readings each commit shared.
# With an OTLP receiver (full, sampled), its CPU per call is printed apart, after
# the server's total: it shares the cores, but a Collector runs elsewhere.
# PERF=FILE also records the server with `perf record --call-graph dwarf` into
# FILE for the duration of the load (then `perf report -i FILE --no-children`).
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/rpc/tasks.sh
mode=${1:-notel}
secs=${2:-8}
bin=${BIN:-target/release/sensorhub}
load_bin=${LOAD_BIN:-target/release/sensorhub}
[ -x "$bin" ] || cargo build --release --quiet --bin sensorhub
[ -x "$load_bin" ] || cargo build --release --quiet --bin sensorhub

work=$(mktemp -d)
pid=""
sink_pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null; rm -rf "$work"' EXIT
"$load_bin" certs --out "$work/certs" >/dev/null
telemetry=(OTEL_SDK_DISABLED=true)
if [ "$mode" = full ] || [ "$mode" = sampled ]; then
    sink=target/release/examples/otlp_sink
    [ -x "$sink" ] || cargo build --release --quiet -p sensorhub-telemetry --features test-util --example otlp_sink
    "$sink" >"$work/sink.out" 2>/dev/null &
    sink_pid=$!
    for _ in $(seq 100); do grep -q '^grpc ' "$work/sink.out" 2>/dev/null && break; sleep 0.1; done
    telemetry=(OTEL_EXPORTER_OTLP_ENDPOINT="$(awk '/^grpc /{print $2}' "$work/sink.out")" OTEL_METRIC_EXPORT_INTERVAL=5000)
    [ "$mode" = sampled ] && telemetry+=(OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1)
fi
port=$(free_port)
store=(--data "$work/data")
[ "$mode" = memory ] && store=(--memory)
http=(--http off)
if [ -n "${HTTP:-}" ]; then
    http_port=$(free_port)
    http=(--http "127.0.0.1:$http_port")
fi
tokens=(--token bench)
[ -n "${TOKENS_FILE:-}" ] && tokens=(--tokens-file "$TOKENS_FILE")
if [ "$mode" = bare ]; then
    bare=target/release/examples/bare_server
    [ -x "$bare" ] || cargo build --release --quiet -p sensorhub-proto --example bare_server
    "$bare" --listen "127.0.0.1:$port" --tls-cert "$work/certs/server.pem" \
        --tls-key "$work/certs/server.key" >/dev/null 2>&1 &
else
    env -u RUST_LOG "${telemetry[@]}" "$bin" serve --tls-cert "$work/certs/server.pem" \
        --tls-key "$work/certs/server.key" "${tokens[@]}" --listen "127.0.0.1:$port" \
        --rate-limit 0 "${http[@]}" "${store[@]}" >/dev/null 2>&1 &
fi
pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done

task_ticks "$pid" >"$work/before"
[ -n "$sink_pid" ] && task_ticks "$sink_pid" >"$work/sink-before"
perf_pid=""
if [ -n "${PERF:-}" ]; then
    perf record -q --call-graph dwarf,16384 -F 499 -p "$pid" -o "$PERF" -- sleep "$secs" 2>/dev/null &
    perf_pid=$!
fi
loop=(--concurrency "${CONCURRENCY:-100}")
[ -n "${RATE:-}" ] && loop=(--rate "$RATE" --concurrency 10000 --warmup 1s)
out=$(env -u RUST_LOG "$load_bin" load --server "https://127.0.0.1:$port" --ca "$work/certs/ca.pem" \
    --token bench --quiet --json --mode unary --connections "${CONNECTIONS:-4}" \
    --sensors "${SENSORS:-100}" "${loop[@]}" --duration "${secs}s")
task_ticks "$pid" >"$work/after"
[ -n "$sink_pid" ] && task_ticks "$sink_pid" >"$work/sink-after"
if [ -n "${METRICS:-}" ] && [ -n "${HTTP:-}" ]; then
    python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' \
        "http://127.0.0.1:$http_port/metrics" >"$METRICS"
fi
[ -n "$perf_pid" ] && wait "$perf_pid"
calls=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["calls"])' "$out")
p99=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["latency_ms"]["p99"])' "$out")
echo "$mode: $calls calls, $((calls / secs)) calls/s, p99 $p99 ms"
task_us_per_call "$work/before" "$work/after" "$calls" | awk '{ printf "  %-20s %6.2f us/call\n", $1, $2 }'
# The receiver shares the two cores but is not the server (a Collector runs
# elsewhere): shown apart, and not in the total.
if [ -n "$sink_pid" ]; then
    task_us_per_call "$work/sink-before" "$work/sink-after" "$calls" |
        awk '$1 == "total" { printf "  (otlp sink, apart)   %6.2f us/call\n", $2 }'
fi
