#!/usr/bin/env bash
# Telemetry overhead: unary SendSingleReading throughput and server CPU per
# call, for four setups of the same server, alternating A B C D A B C D ...
# on the same machine; prints medians and ratios against "off".
#
#   on      full telemetry: every call traced, spans + metrics + logs exported
#           over OTLP/gRPC to a real receiver, and Prometheus /metrics with
#           exemplars (OTEL_METRICS_EXEMPLAR_FILTER=trace_based, the default)
#   noexemplars  "on" with OTEL_METRICS_EXEMPLAR_FILTER=always_off: the
#           telemetry of before exemplars
#   profiled "on" with --pprof and a CPU profile (100 Hz) being taken for
#           the whole run
#   all     "profiled" with the optional connection metrics on too
#           (--enable-metrics grpc.server.tls.handshakes,sensorhub.connection.duration)
#   sampled the same, traces sampled at 10 % (parentbased_traceidratio)
#   metrics the embedded default: no OTLP endpoint, Prometheus /metrics only
#   off     OTEL_SDK_DISABLED=true
#   down    "on", but the collector's port refuses connections
#   hole    "on", but the collector accepts connections and never answers
#
# SETUPS="on down hole" picks a subset (the ratios are against "off" when it
# runs, else against the first setup).
#
# Server CPU per call (user + system time of the server process over the run,
# divided by the calls) is the steadier figure on a shared machine: it does
# not move when another process takes a core.
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
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/sensorhub
sink=$target/release/examples/otlp_sink
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

"$sink" >"$work/sink.out" 2>/dev/null &
for _ in $(seq 50); do grep -q '^grpc ' "$work/sink.out" 2>/dev/null && break; sleep 0.1; done
otlp=$(awk '/^grpc /{print $2}' "$work/sink.out")

# A collector that is down: a port nothing listens on.
refused="http://127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# A black hole: accepts connections, reads nothing, answers nothing.
python3 - "$work/hole.port" <<'PY' &
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(128)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
held = []
while True:
    conn, _ = s.accept(); held.append(conn)
PY
for _ in $(seq 50); do [ -s "$work/hole.port" ] && break; sleep 0.1; done
hole="http://127.0.0.1:$(cat "$work/hole.port")"

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

run_one() { # $1 = label, $2 = extra serve flags, $3.. = env
  local label=$1 flags=$2; shift 2
  local port=$((20000 + RANDOM % 20000)) http=$((40000 + RANDOM % 20000))
  # shellcheck disable=SC2086 # $flags is a list of flags
  env -u RUST_LOG "$@" "$bin" serve --insecure --token "$token" --listen 127.0.0.1:$port \
      --http 127.0.0.1:$http --data "$work/data-$label-$RANDOM" $flags >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
  local profile=
  if [[ $flags == *--pprof* ]]; then
    # A 60 s profile, longer than the run: sampling at 100 Hz throughout.
    curl -s -o /dev/null -H "authorization: Bearer $token" \
        "http://127.0.0.1:$http/debug/pprof/profile?seconds=60" &
    profile=$!
    sleep 0.3
  fi
  local out
  local t0
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(h2load -n "$requests" -c 4 -m 32 -d "$work/body.bin" \
      -H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: $token" \
      "http://127.0.0.1:$port/SensorService/SendSingleReading")
  # h2load counts any HTTP 200 as success: check the server's own count of OK calls.
  local ok
  ok=$(curl -s "http://127.0.0.1:$http/metrics" 2>/dev/null \
      | awk '/^grpc_server_call_started_total\{.*SendSingleReading/{print $2}' || true)
  local ticks
  ticks=$(( $(awk '{print $14 + $15}' "/proc/$pid/stat") - t0 ))
  kill -TERM $pid; wait $pid || true
  if [[ -n $profile ]]; then wait "$profile" || true; fi
  local rps
  rps=$(awk '/^finished in/{gsub(",","",$4); print $4}' <<<"$out")
  # CPU ticks are 1/100 s: microseconds per call.
  local cpu_us
  cpu_us=$(python3 -c "print(f'{$ticks * 10000 / $requests:.1f}')")
  echo "$label $rps $cpu_us ${ok:-n/a}"
}

setups=${SETUPS:-on noexemplars profiled all off}
optional=grpc.server.tls.handshakes,sensorhub.connection.duration
results=$work/results
for i in $(seq "$reps"); do
  for setup in $setups; do
    case $setup in
      on) run_one on "" OTEL_EXPORTER_OTLP_ENDPOINT="$otlp" OTEL_METRIC_EXPORT_INTERVAL=5000 ;;
      noexemplars) run_one noexemplars "" OTEL_EXPORTER_OTLP_ENDPOINT="$otlp" \
          OTEL_METRIC_EXPORT_INTERVAL=5000 OTEL_METRICS_EXEMPLAR_FILTER=always_off ;;
      profiled) run_one profiled "--pprof" OTEL_EXPORTER_OTLP_ENDPOINT="$otlp" \
          OTEL_METRIC_EXPORT_INTERVAL=5000 ;;
      all) run_one all "--pprof --enable-metrics $optional" OTEL_EXPORTER_OTLP_ENDPOINT="$otlp" \
          OTEL_METRIC_EXPORT_INTERVAL=5000 ;;
      sampled) run_one sampled "" OTEL_EXPORTER_OTLP_ENDPOINT="$otlp" OTEL_METRIC_EXPORT_INTERVAL=5000 \
          OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1 ;;
      metrics) run_one metrics "" ;;
      off) run_one off "" OTEL_SDK_DISABLED=true ;;
      down) run_one down "" OTEL_EXPORTER_OTLP_ENDPOINT="$refused" OTEL_METRIC_EXPORT_INTERVAL=5000 ;;
      hole) run_one hole "" OTEL_EXPORTER_OTLP_ENDPOINT="$hole" OTEL_METRIC_EXPORT_INTERVAL=5000 ;;
      *) echo "unknown setup $setup" >&2; exit 2 ;;
    esac | tee -a "$results"
  done
done
python3 - "$results" $setups <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
setups = sys.argv[2:]
def med(label, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == label)
base = "off" if "off" in setups else setups[0]
base_rps, base_cpu = med(base, 1), med(base, 2)
print(f"{'setup':8} {'req/s':>9} {'ratio':>6} {'CPU us/call':>12} {'ratio':>6}   (ratios against {base})")
for label in setups:
    rps, cpu = med(label, 1), med(label, 2)
    print(f"{label:8} {rps:9,.0f} {rps / base_rps:6.2f} {cpu:12.1f} {cpu / base_cpu:6.2f}")
PY
