#!/usr/bin/env bash
# Telemetry overhead: unary SendSingleReading throughput with full telemetry
# (spans + metrics + logs exported over OTLP/gRPC to a real receiver, and
# Prometheus /metrics) against the same server with OTEL_SDK_DISABLED=true.
# Runs alternate A B A B ... on the same machine; prints medians and the ratio.
#
#   bench/telemetry-overhead/run.sh [reps=5] [requests=100000]
#
# Needs h2load (Debian: nghttp2-client). The server runs with --insecure and
# a token (h2load cannot verify our CA), on a durable store in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/../.."
reps=${1:-5}
requests=${2:-100000}
token=bench-token

cargo build --release --quiet
cargo build --release --quiet -p sensorhub-telemetry --features test-util --example otlp_sink
bin=target/release/sensorhub
sink=target/release/examples/otlp_sink
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

"$sink" >"$work/sink.out" 2>/dev/null &
for _ in $(seq 50); do grep -q '^grpc ' "$work/sink.out" 2>/dev/null && break; sleep 0.1; done
otlp=$(awk '/^grpc /{print $2}' "$work/sink.out")

# One framed SensorReading: {sensor_id: "bench-1", temperature: 21.5, timestamp: now}.
python3 - "$work/body.bin" <<'PY'
import struct, sys, time
def varint(n):
    out = b""
    while True:
        b = n & 0x7F; n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n: return out
sid = b"bench-1"
msg = b"\x0a" + bytes([len(sid)]) + sid + b"\x11" + struct.pack("<d", 21.5) + b"\x18" + varint(int(time.time()))
open(sys.argv[1], "wb").write(b"\x00" + struct.pack(">I", len(msg)) + msg)
PY

run_one() { # $1 = label, $2.. = env
  local label=$1; shift
  local port=$((20000 + RANDOM % 20000)) http=$((40000 + RANDOM % 20000))
  env -u RUST_LOG "$@" "$bin" serve --insecure --token "$token" --listen 127.0.0.1:$port \
      --http 127.0.0.1:$http --data "$work/data-$label-$RANDOM" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
  local out
  out=$(h2load -n "$requests" -c 4 -m 32 -d "$work/body.bin" \
      -H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: $token" \
      "http://127.0.0.1:$port/SensorService/SendSingleReading")
  # h2load counts any HTTP 200 as success: check the server's own count of OK calls.
  local ok
  ok=$(curl -s "http://127.0.0.1:$http/metrics" 2>/dev/null \
      | awk '/^grpc_server_call_started_total\{.*SendSingleReading/{print $2}' || true)
  kill -TERM $pid; wait $pid || true
  local rps
  rps=$(awk '/^finished in/{gsub(",","",$4); print $4}' <<<"$out")
  echo "$label $rps ${ok:-n/a}"
}

results=$work/results
for i in $(seq "$reps"); do
  run_one on OTEL_EXPORTER_OTLP_ENDPOINT="$otlp" OTEL_METRIC_EXPORT_INTERVAL=5000 | tee -a "$results"
  run_one off OTEL_SDK_DISABLED=true | tee -a "$results"
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
on = [float(r[1]) for r in rows if r[0] == "on"]
off = [float(r[1]) for r in rows if r[0] == "off"]
mo, mf = statistics.median(on), statistics.median(off)
print(f"telemetry on : median {mo:,.0f} req/s  {sorted(on)}")
print(f"telemetry off: median {mf:,.0f} req/s  {sorted(off)}")
print(f"on/off ratio : {mo/mf:.3f}  (overhead {100*(1-mo/mf):.1f} %)")
PY
