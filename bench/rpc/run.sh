#!/usr/bin/env bash
# RPC benchmarks (issue 5): sensorhub side by side with a bare tonic server
# and the Python original, driven by `sensorhub load`, on this machine.
#
# Peers (each run starts a fresh server; runs alternate A B C ... A B C):
#   bare          bare tonic SensorService (crates/sensorhub-proto/examples/bare_server.rs),
#                 in memory, no auth, no telemetry, plaintext: the ceiling
#   bare-tls      the same over TLS
#   full          sensorhub, everything on: TLS, token, durable store (temp dir),
#                 full telemetry exported over OTLP/gRPC to a local receiver
#                 (otlp_sink), Prometheus /metrics served
#   sampled       full with traces sampled at 10 % (parentbased_traceidratio,
#                 the documented production setting); metrics and logs as full
#   notel         the same with OTEL_SDK_DISABLED=true
#   memory        the same as notel, with --memory instead of the durable store
#   python        the Python original re-expressed with grpcio
#                 (bench/python-original/server.py), plaintext, token checked
#
# Scenarios:
#   unary     SendSingleReading, closed loop: peak calls/s, server CPU per call, and
#             that CPU per thread (bench/rpc/tasks.sh); one case per fleet (--fleets:
#             distinct sensor ids the load reports for, spread over its connections);
#             the OTLP receiver's CPU per call beside it, apart from the server's (it
#             shares the two cores, where a Collector would run elsewhere)
#   ingest    StreamSensorReadings, 4 streams: readings/s
#   readback  GetSensorReadings of one sensor's history (seeded first): readings/s
#   open      SendSingleReading, open loop at half of each peer's unary peak
#             measured in this run (the first fleet's): p99 latency from the schedule
#   chat      10,000 concurrent SensorChat streams at a low rate: server RSS
#   soak      (only when named in --scenarios) mixed open-loop load: RSS over time,
#             with the OTLP receiver black-holed (SIGSTOP) for the middle third
#
#   bench/rpc/run.sh [--quick] [--reps N] [--duration S] [--peers a,b] [--scenarios x,y]
#                    [--fleets N,M] [--previous FILE.jsonl]
#
# --fleets: the unary sensor fleets, 1000,10000 by default (100 was the only
# one before issue 19). --previous: an earlier run's raw results, whose medians
# the summary shows beside this run's (the previous round's column).
# --quick: one repetition of 3 s per case, smaller seeds: proves the script
# end to end. Prints medians and ratios; raw results (one JSON object per run)
# go to bench/rpc/results/latest[-quick].jsonl, the summary to latest[-quick].md.
#
# Everything (servers, load, OTLP receiver) shares this machine's cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/rpc/tasks.sh

quick=0
reps=3
duration=10
peers="bare,bare-tls,full,sampled,notel,memory,python"
scenarios="unary,ingest,readback,open,chat"
fleets="1000,10000"
previous=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --reps) reps=$2; shift ;;
    --duration) duration=$2; shift ;;
    --peers) peers=$2; shift ;;
    --scenarios) scenarios=$2; shift ;;
    --fleets) fleets=$2; shift ;;
    --previous) previous=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
# Tunables (environment):
UNARY_CONNECTIONS=${UNARY_CONNECTIONS:-4}
UNARY_CONCURRENCY=${UNARY_CONCURRENCY:-128}
INGEST_STREAMS=${INGEST_STREAMS:-4}
INGEST_BATCH=${INGEST_BATCH:-10000}
READBACK_SEED=${READBACK_SEED:-1000000}
READBACK_STREAMS=${READBACK_STREAMS:-1}
CHAT_STREAMS=${CHAT_STREAMS:-10000}
CHAT_CONNECTIONS=${CHAT_CONNECTIONS:-50}
CHAT_RATE=${CHAT_RATE:-2000}
SOAK_SECONDS=${SOAK_SECONDS:-300}
SOAK_RATE=${SOAK_RATE:-2000}
# 0: no injected fault (the OTLP receiver keeps answering), to tell the fault's
# footprint from the server's own growth.
SOAK_FAULT=${SOAK_FAULT:-1}
if [ "$quick" = 1 ]; then
  reps=1
  duration=3
  READBACK_SEED=${READBACK_SEED_QUICK:-100000}
  SOAK_SECONDS=10
fi
suffix=$([ "$quick" = 1 ] && echo "-quick" || echo "")
token=bench-token

echo "building (release)..." >&2
cargo build --release --quiet --bin sensorhub
cargo build --release --quiet -p sensorhub-proto --example bare_server
cargo build --release --quiet -p sensorhub-telemetry --features test-util --example otlp_sink
bin=target/release/sensorhub
bare=target/release/examples/bare_server
sink=target/release/examples/otlp_sink

python=""
if [[ ",$peers," == *",python,"* ]]; then
  venv=target/bench-venv
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  if "$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/python-original/requirements.txt; then
    python=$venv/bin/python
  else
    echo "warning: cannot install grpcio; skipping the python peer" >&2
    peers=$(tr ',' '\n' <<<"$peers" | grep -vx python | paste -sd, -)
  fi
fi

work=$(mktemp -d)
server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap 'stop_server; kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin" certs --out "$work/certs" >/dev/null
"$sink" >"$work/sink.out" 2>/dev/null &
sink_pid=$!
for _ in $(seq 100); do grep -q '^grpc ' "$work/sink.out" 2>/dev/null && break; sleep 0.1; done
otlp=$(awk '/^grpc /{print $2}' "$work/sink.out")

# The load uses one token: sensorhub's per-token rate limit (a policy, not a
# cost to measure) is off.
serve_opts=(--rate-limit 0)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }

# start_server PEER: starts it in the background; sets server_pid and url.
start_server() {
  local peer=$1 port
  port=$(free_port)
  local tls=(--tls-cert "$work/certs/server.pem" --tls-key "$work/certs/server.key")
  url="https://127.0.0.1:$port"
  case $peer in
    bare) url="http://127.0.0.1:$port"
          "$bare" --listen "127.0.0.1:$port" 2>/dev/null & ;;
    bare-tls) "$bare" --listen "127.0.0.1:$port" "${tls[@]}" 2>/dev/null & ;;
    full) env -u RUST_LOG OTEL_EXPORTER_OTLP_ENDPOINT="$otlp" OTEL_METRIC_EXPORT_INTERVAL=5000 \
            "$bin" serve "${tls[@]}" --token "$token" --listen "127.0.0.1:$port" "${serve_opts[@]}" \
            --http "127.0.0.1:$(free_port)" --data "$work/data-$RANDOM$RANDOM" >/dev/null 2>&1 & ;;
    sampled) env -u RUST_LOG OTEL_EXPORTER_OTLP_ENDPOINT="$otlp" OTEL_METRIC_EXPORT_INTERVAL=5000 \
            OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1 \
            "$bin" serve "${tls[@]}" --token "$token" --listen "127.0.0.1:$port" "${serve_opts[@]}" \
            --http "127.0.0.1:$(free_port)" --data "$work/data-$RANDOM$RANDOM" >/dev/null 2>&1 & ;;
    notel) env -u RUST_LOG OTEL_SDK_DISABLED=true \
            "$bin" serve "${tls[@]}" --token "$token" --listen "127.0.0.1:$port" "${serve_opts[@]}" \
            --http off --data "$work/data-$RANDOM$RANDOM" >/dev/null 2>&1 & ;;
    memory) env -u RUST_LOG OTEL_SDK_DISABLED=true \
            "$bin" serve "${tls[@]}" --token "$token" --listen "127.0.0.1:$port" "${serve_opts[@]}" \
            --http off --memory >/dev/null 2>&1 & ;;
    python) url="http://127.0.0.1:$port"
            "$python" bench/python-original/server.py --listen "127.0.0.1:$port" --token "$token" 2>/dev/null & ;;
    *) echo "unknown peer $peer" >&2; exit 2 ;;
  esac
  server_pid=$!
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "error: $peer did not start" >&2
  exit 1
}

load() { # load PEER ARGS...: runs sensorhub load against the current server, prints its JSON
  local peer=$1; shift
  local ca=()
  [[ $url == https://* ]] && ca=(--ca "$work/certs/ca.pem")
  # A failing call is data here, not a reason to stop: the JSON says how many.
  env -u RUST_LOG "$bin" load --server "$url" "${ca[@]}" --token "$token" --quiet --json \
      --max-error-rate 1 "$@" 2>>"$work/load.err" || true
}

results=bench/rpc/results/latest$suffix.jsonl
mkdir -p bench/rpc/results
: >"$results"
record() { # record SCENARIO PEER REP JSON EXTRA-JSON
  python3 - "$@" >>"$results" <<'PY'
import json, sys
scenario, peer, rep, load, extra = sys.argv[1:6]
row = {"scenario": scenario, "peer": peer, "rep": int(rep)}
row.update(json.loads(extra))
try:
    d = json.loads(load)
except ValueError:
    d = {"error": "no JSON from sensorhub load"}
row["load"] = d
print(json.dumps(row))
PY
  python3 bench/rpc/summary.py --last "$results" >&2
}

# cpu_extra LOAD-JSON TICKS RECEIVER-TICKS EXTRA-JSON: EXTRA-JSON with the
# server's CPU per call (the process, /proc/PID/stat) and per thread (tasks.sh,
# from the snapshots $work/tasks.before and $work/tasks.after), and the OTLP
# receiver's over the same time (it shares the cores, a Collector would not: kept
# apart from the server's). Calls counted are the load's measured ones (after
# the warm-up) and those left unfinished.
cpu_extra() {
  local n
  n=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["calls"]+d["unfinished"])' "$1" 2>/dev/null || echo 0)
  if [ "$n" -eq 0 ]; then echo "$4"; return; fi
  task_us_per_call "$work/tasks.before" "$work/tasks.after" "$n" >"$work/tasks.us"
  python3 - "$4" "$2" "$n" "$work/tasks.us" "$3" <<'PY'
import json, sys
extra, ticks, n = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
threads = dict((name, float(us)) for name, us in (l.split() for l in open(sys.argv[4]) if l.strip()))
threads.pop("total", None)
extra.update({"server_cpu_s": ticks / 100, "server_cpu_us_per_call": ticks * 1e4 / n,
              "threads_us_per_call": threads, "receiver_cpu_us_per_call": int(sys.argv[5]) * 1e4 / n})
print(json.dumps(extra))
PY
}

# run_case SCENARIO PEER REP [SENSORS]: one server, one measurement.
run_case() {
  local scenario=$1 peer=$2 rep=$3 sensors=${4:-${fleet_list[0]}} out extra="{}" t0 t1 r0
  start_server "$peer"
  t0=$(cpu_ticks "$server_pid")
  r0=$(cpu_ticks "$sink_pid")
  task_ticks "$server_pid" >"$work/tasks.before"
  case $scenario in
    unary)
      out=$(load "$peer" --mode unary --connections "$UNARY_CONNECTIONS" --sensors "$sensors" \
            --concurrency "$UNARY_CONCURRENCY" --duration "${duration}s" --warmup 1s)
      t1=$(cpu_ticks "$server_pid")
      task_ticks "$server_pid" >"$work/tasks.after"
      extra=$(cpu_extra "$out" "$((t1 - t0))" "$(($(cpu_ticks "$sink_pid") - r0))" "{\"sensors\": $sensors}") ;;
    ingest)
      out=$(load "$peer" --mode client-stream --connections "$INGEST_STREAMS" \
            --concurrency "$INGEST_STREAMS" --batch "$INGEST_BATCH" --duration "${duration}s" --drain 60s) ;;
    readback)
      out=$(load "$peer" --mode server-stream --connections "$READBACK_STREAMS" \
            --concurrency "$READBACK_STREAMS" --seed "$READBACK_SEED" --duration "${duration}s" --drain 60s) ;;
    open)
      local peak rate
      peak=$(python3 - "$results" "$peer" "$sensors" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
v = [r["load"].get("calls_per_s", 0) for r in rows if r["scenario"] == "unary" and r["peer"] == sys.argv[2]
     and r.get("sensors", 100) == int(sys.argv[3])]
print(statistics.median(v) if v else 0)
PY
)
      rate=$(python3 -c "print(max(1, round(float('$peak') / 2)))")
      if [ "$rate" -le 1 ]; then
        echo "  open: no unary peak for $peer in this run (run the unary scenario too); 1000/s" >&2
        rate=1000
      fi
      out=$(load "$peer" --mode unary --connections "$UNARY_CONNECTIONS" --rate "$rate" \
            --sensors "$sensors" --concurrency 10000 --duration "${duration}s" --warmup 1s)
      t1=$(cpu_ticks "$server_pid")
      task_ticks "$server_pid" >"$work/tasks.after"
      extra=$(cpu_extra "$out" "$((t1 - t0))" "$(($(cpu_ticks "$sink_pid") - r0))" "{\"rate\": $rate, \"sensors\": $sensors}") ;;
    chat)
      # Streams are opened at once and held; RSS is read near the end of the run.
      local secs=$((duration < 6 ? 6 : duration)) idle
      idle=$(rss_kib "$server_pid")
      load "$peer" --mode chat --connections "$CHAT_CONNECTIONS" --concurrency "$CHAT_STREAMS" \
           --rate "$CHAT_RATE" --duration "${secs}s" --drain 5s >"$work/chat.json" &
      local lp=$! max=0 kib
      sleep 2
      for _ in $(seq $((secs - 3))); do
        kib=$(rss_kib "$server_pid"); [ "$kib" -gt "$max" ] && max=$kib
        sleep 1
      done
      kib=$(rss_kib "$server_pid"); [ "$kib" -gt "$max" ] && max=$kib
      wait "$lp" || true
      out=$(cat "$work/chat.json")
      extra="{\"rss_mib\": $(python3 -c "print($max/1024)"), \"idle_rss_mib\": $(python3 -c "print($idle/1024)")}" ;;
    soak)
      local samples="$work/soak-samples"
      : >"$samples"
      load "$peer" --mode mix --connections 4 --rate "$SOAK_RATE" --duration "${SOAK_SECONDS}s" \
           --concurrency 10000 >"$work/soak.json" &
      local lp=$!
      # Injected fault: the collector black-holed (stopped: connections are
      # accepted by the kernel, nothing answers) for the middle third.
      local second=0
      while kill -0 "$lp" 2>/dev/null; do
        rss_kib "$server_pid" >>"$samples"
        second=$((second + 1))
        [ "$SOAK_FAULT" = 1 ] && [ "$second" -eq $((SOAK_SECONDS / 3)) ] && kill -STOP "$sink_pid"
        [ "$second" -eq $((2 * SOAK_SECONDS / 3)) ] && kill -CONT "$sink_pid"
        sleep 1
      done
      kill -CONT "$sink_pid" 2>/dev/null || true
      # The RSS curve itself (KiB, one sample a second), to tell a plateau from a leak.
      cp "$samples" "bench/rpc/results/latest$suffix-soak-rss.txt"
      out=$(cat "$work/soak.json")
      extra=$(python3 - "$samples" <<'PY'
import json, sys
s = [int(x) / 1024 for x in open(sys.argv[1]) if x.strip()]
# Ignore the first 10 % (warm-up): flat means the last tenth is within 10 % of the second.
k = max(1, len(s) // 10)
early, late = s[k:2 * k] or s[:1], s[-k:]
print(json.dumps({"rss_mib": max(s), "rss_first_mib": sum(early) / len(early),
                  "rss_last_mib": sum(late) / len(late), "rss_samples": len(s)}))
PY
) ;;
  esac
  stop_server
  record "$scenario" "$peer" "$rep" "$out" "$extra"
}

IFS=, read -r -a peer_list <<<"$peers"
IFS=, read -r -a scenario_list <<<"$scenarios"
IFS=, read -r -a fleet_list <<<"$fleets"
echo "peers: ${peer_list[*]}; scenarios: ${scenario_list[*]}; unary fleets: ${fleet_list[*]} sensors;" \
     "$reps reps of ${duration}s" >&2
for scenario in "${scenario_list[@]}"; do
  # Unary runs once per fleet; the others with the first fleet.
  cases=("${fleet_list[0]}")
  [ "$scenario" = unary ] && cases=("${fleet_list[@]}")
  for sensors in "${cases[@]}"; do
    for rep in $(seq "$reps"); do
      for peer in "${peer_list[@]}"; do
        if [ "$scenario" = soak ] && [ "$peer" != full ]; then continue; fi
        run_case "$scenario" "$peer" "$rep" "$sensors"
      done
    done
  done
done

python3 bench/rpc/summary.py ${previous:+--previous "$previous"} "$results" | tee "bench/rpc/results/latest$suffix.md"
