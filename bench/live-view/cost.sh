#!/usr/bin/env bash
# What the live view's recorders cost per unary call: server CPU per call with
# `--view on` against `--view off`, alternating runs, everything else equal.
#
#   bench/live-view/cost.sh [default|full] [REPS] [SECONDS]
#
# Both arms serve the HTTP listener with /metrics (Prometheus) on a durable
# store, TLS and a token, and are driven by `sensorhub load --mode unary`
# (closed loop, CONNECTIONS x CONCURRENCY, 4 x 100 by default). `default` is
# the embedded default: no OTLP endpoint, so with the view on the pipeline
# records only the spans the view's trace ring admits; `full` exports traces
# and metrics over OTLP to the otlp_sink example, as in bench/rpc/threads.sh.
# Server CPU is user + system time from /proc/PID/stat over the load, divided
# by the calls. Prints every run and the medians.
set -euo pipefail
cd "$(dirname "$0")/../.."
setup=${1:-default}
reps=${2:-5}
secs=${3:-8}
bin=${BIN:-target/release/sensorhub}
[ -x "$bin" ] || cargo build --release --quiet --bin sensorhub

work=$(mktemp -d)
pid=""
sink_pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null; rm -rf "$work"' EXIT
"$bin" certs --out "$work/certs" >/dev/null
telemetry=()
if [ "$setup" = full ]; then
    sink=target/release/examples/otlp_sink
    [ -x "$sink" ] || cargo build --release --quiet -p sensorhub-telemetry --features test-util --example otlp_sink
    "$sink" >"$work/sink.out" 2>/dev/null &
    sink_pid=$!
    for _ in $(seq 100); do grep -q '^grpc ' "$work/sink.out" 2>/dev/null && break; sleep 0.1; done
    telemetry=(OTEL_EXPORTER_OTLP_ENDPOINT="$(awk '/^grpc /{print $2}' "$work/sink.out")" OTEL_METRIC_EXPORT_INTERVAL=5000)
fi

# One run: prints "µs/call calls/s".
run() {
    local view=$1
    rm -rf "$work/data" "$work/ready"
    env -u RUST_LOG ${telemetry[@]+"${telemetry[@]}"} "$bin" serve --tls-cert "$work/certs/server.pem" \
        --tls-key "$work/certs/server.key" --token bench --listen 127.0.0.1:0 --http 127.0.0.1:0 \
        --view "$view" --rate-limit 0 --data "$work/data" --ready-file "$work/ready" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 200); do [ -s "$work/ready" ] && break; sleep 0.05; done
    local port
    port=$(awk -F'[=:]' '/^grpc=/{print $NF}' "$work/ready")
    # A short warm-up outside the measurement.
    "$bin" load --server "https://127.0.0.1:$port" --ca "$work/certs/ca.pem" --token bench \
        --quiet --json --mode unary --connections 4 --concurrency 100 --duration 1s >/dev/null
    local before after out calls
    before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    out=$(env -u RUST_LOG "$bin" load --server "https://127.0.0.1:$port" --ca "$work/certs/ca.pem" \
        --token bench --quiet --json --mode unary --connections "${CONNECTIONS:-4}" \
        --concurrency "${CONCURRENCY:-100}" --duration "${secs}s")
    after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
    calls=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["calls"])' "$out")
    python3 -c 'import sys; t, c, s = map(float, sys.argv[1:]); print(f"{t * 1e4 / c:.2f} {c / s:.0f}")' \
        "$((after - before))" "$calls" "$secs"
}

on=()
off=()
for rep in $(seq "$reps"); do
    a=$(run on)
    b=$(run off)
    echo "rep $rep: view on $a  |  view off $b   (µs/call calls/s)"
    on+=("${a%% *}")
    off+=("${b%% *}")
done
python3 - "$setup" "${on[*]}" "${off[*]}" <<'PY'
import statistics, sys
setup, on, off = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
m_on, m_off = statistics.median(on), statistics.median(off)
print(f"{setup}: server CPU per unary call, median of {len(on)}: view on {m_on:.2f} µs, view off {m_off:.2f} µs, "
      f"difference {m_on - m_off:+.2f} µs ({m_on / m_off:.3f}x)")
PY
