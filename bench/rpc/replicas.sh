#!/usr/bin/env bash
# Replicas on one PostgreSQL against the embedded store (issue 15), side by
# side in one run, alternating setups: embedded, pg1, pg2, pg3, embedded, ...
#
#   bench/rpc/replicas.sh [RUNS] [SECONDS]
#
# Setups (each run starts fresh servers; plaintext, one token, telemetry off,
# --rate-limit 0, so the store is what differs):
#   embedded   one `sensorhub serve --data` (the durable embedded store)
#   pgN        N replicas `sensorhub serve --database-url` on one fresh database
#              of one PostgreSQL 15 started here (below)
# Scenarios, per setup (with N replicas, one `sensorhub load` per replica at
# once, each with its own sensors; figures are their sums):
#   ingest     StreamSensorReadings, closed loop, INGEST_STREAMS streams of
#              INGEST_BATCH readings per replica: readings/s
#   unary      SendSingleReading, closed loop, UNARY_CONCURRENCY in flight per
#              replica over 4 connections: calls/s
#   ack        SendSingleReading, open loop at ACK_RATE calls/s in all: ack
#              latency p50/p99 (the worst replica's), and meanwhile
#   follow     bench/rpc/follow_latency.py: FOLLOW_COUNT readings at FOLLOW_RATE/s
#              written through the first server and followed on the last (pg1
#              and embedded: the same server): p50/p99 from each write's start
#              to its arrival on the follow stream
# CPU seconds per process group (PostgreSQL's processes, the servers, the
# load) are read from /proc for each scenario.
#
# PostgreSQL for the bench: Debian's 15, initdb in a temporary directory, run
# as the postgres user, trust auth on 127.0.0.1. Durability as in production:
# fsync=on, full_page_writes=on, synchronous_commit=on (each ack waits for the
# WAL flush). Tuned for a bench: shared_buffers=1GB, wal_buffers=64MB,
# max_wal_size=16GB and checkpoint_timeout=30min (no checkpoint inside a
# run), max_connections=200.
#
# After the runs, unless COPY_VS_UNNEST=0: the writer's row statement
# against binary COPY on the same PostgreSQL (the example copy_vs_unnest of
# sensorhub-store-postgres, COPY_BATCHES batches of INGEST_BATCH rows, one
# commit each), and pg_test_fsync's flush time on the data directory's disk
# (what each commit waits for with synchronous_commit=on). RUNS=0 runs these
# only.
#
# Prints each measurement, then medians per setup; raw results (one JSON
# object per measurement) go to bench/rpc/results/latest-replicas.jsonl.
# Everything (PostgreSQL, servers, load) shares this machine's cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
secs=${2:-10}
INGEST_STREAMS=${INGEST_STREAMS:-4}
INGEST_BATCH=${INGEST_BATCH:-10000}
UNARY_CONCURRENCY=${UNARY_CONCURRENCY:-128}
ACK_RATE=${ACK_RATE:-2000}
FOLLOW_COUNT=${FOLLOW_COUNT:-1000}
FOLLOW_RATE=${FOLLOW_RATE:-200}
SETUPS=${SETUPS:-embedded pg1 pg2 pg3}
COPY_VS_UNNEST=${COPY_VS_UNNEST:-1}
COPY_BATCHES=${COPY_BATCHES:-40}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PYTHON=${PYTHON:-target/test-venv/bin/python}
token=bench-token

if [ -z "${BIN:-}" ]; then
  echo "building (release)..." >&2
  cargo build --release --quiet --bin sensorhub
fi
if [ "$COPY_VS_UNNEST" != 0 ]; then
  cargo build --release --quiet -p sensorhub-store-postgres --example copy_vs_unnest
fi
bin=${BIN:-target/release/sensorhub}
"$PYTHON" -c 'import grpc, grpc_tools' 2>/dev/null || {
  echo "error: $PYTHON lacks grpcio/grpcio-tools (run cargo xtask test, or set PYTHON)" >&2
  exit 2
}

work=$(mktemp -d)
chmod 755 "$work"
server_pids=()
stop_servers() {
  for pid in "${server_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${server_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  server_pids=()
}
stop_pg() {
  [ -f "$work/pg/data/postmaster.pid" ] &&
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null 2>&1 || true
}
trap 'stop_servers; stop_pg; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# PostgreSQL, once for the whole run.
mkdir -p "$work/pg"
chown postgres:postgres "$work/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
pg_port=$(free_port)
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$work/pg/data" -w -l "$work/pg/server.log" -o \
  "-k $work/pg -p $pg_port -c listen_addresses=127.0.0.1 -c max_connections=200 \
   -c shared_buffers=1GB -c wal_buffers=64MB -c max_wal_size=16GB -c checkpoint_timeout=30min \
   -c fsync=on -c full_page_writes=on -c synchronous_commit=on" start >/dev/null
psql() { "$PG_BIN/psql" -X -q -At -h "$work/pg" -p "$pg_port" -U postgres "$@"; }
echo "PostgreSQL $(psql -d postgres -c 'SHOW server_version') on port $pg_port" \
  "(synchronous_commit=$(psql -d postgres -c 'SHOW synchronous_commit'), fsync=$(psql -d postgres -c 'SHOW fsync'))" >&2

ticks_of() { # ticks_of PID...: their utime+stime, summed (gone ones count 0)
  local t=0 pid v
  for pid in "$@"; do
    v=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    t=$((t + v))
  done
  echo "$t"
}
pg_pids() { pgrep -u postgres -d ' ' postgres || true; }
# The CPU ticks of PostgreSQL's processes, by pid, to diff later.
pg_snapshot() { for pid in $(pg_pids); do echo "$pid $(ticks_of "$pid")"; done; }
pg_ticks_since() { # pg_ticks_since SNAPSHOT-FILE: ticks used since, new processes counted whole
  local t=0 pid now before
  for pid in $(pg_pids); do
    now=$(ticks_of "$pid")
    before=$(awk -v p="$pid" '$1 == p {print $2}' "$1")
    t=$((t + now - ${before:-0}))
  done
  echo "$t"
}

# start_setup SETUP: starts its servers; sets urls and server_pids.
urls=()
start_setup() {
  local setup=$1 n port i url_env=()
  urls=()
  case $setup in
    embedded) n=1 ;;
    pg*) n=${setup#pg}
         local db="bench_$RANDOM$RANDOM"
         psql -d postgres -c "CREATE DATABASE $db"
         url_env=(SENSORHUB_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/$db?sslmode=disable") ;;
  esac
  for i in $(seq "$n"); do
    port=$(free_port)
    local store=()
    [ "$setup" = embedded ] && store=(--data "$work/data-$RANDOM$RANDOM")
    env -u RUST_LOG OTEL_SDK_DISABLED=true "${url_env[@]}" \
      "$bin" serve --insecure --token "$token" --listen "127.0.0.1:$port" --http off \
      --rate-limit 0 "${store[@]}" >>"$work/serve.log" 2>&1 &
    server_pids+=($!)
    urls+=("127.0.0.1:$port")
  done
  for url in "${urls[@]}"; do
    for _ in $(seq 200); do
      (exec 3<>"/dev/tcp/${url%:*}/${url#*:}") 2>/dev/null && continue 2
      sleep 0.05
    done
    echo "error: a server of $setup did not start:" >&2
    tail -5 "$work/serve.log" >&2
    exit 1
  done
}

# load_all ARGS...: one `sensorhub load` per server at once, each with its
# own sensors; each one's JSON to $work/load-I.json, its CPU to load-I.time.
load_all() {
  local i=0 pids=()
  for url in "${urls[@]}"; do
    /usr/bin/time -f '%U %S' -o "$work/load-$i.time" \
      env -u RUST_LOG "$bin" load --server "http://$url" --token "$token" --quiet --json \
      --max-error-rate 1 --sensor-prefix "r$i-" "$@" >"$work/load-$i.json" 2>>"$work/load.err" &
    pids+=($!)
    i=$((i + 1))
  done
  wait "${pids[@]}" || true
}

results=bench/rpc/results/latest-replicas.jsonl
mkdir -p bench/rpc/results
: >"$results"

# measure SETUP RUN SCENARIO CMD...: runs CMD with the setup's servers up,
# records the loads' JSON, the follow JSON (if any) and CPU per group.
measure() {
  local setup=$1 run=$2 scenario=$3; shift 3
  rm -f "$work"/load-*.json "$work"/load-*.time "$work/follow.json"
  pg_snapshot >"$work/pg.snap"
  local s0 t0 t1
  s0=$(ticks_of "${server_pids[@]}")
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  local servers pg
  servers=$(( $(ticks_of "${server_pids[@]}") - s0 ))
  pg=$(pg_ticks_since "$work/pg.snap")
  python3 - "$setup" "$run" "$scenario" "$t0" "$t1" "$servers" "$pg" "$work" >>"$results" <<'PY'
import glob, json, os, sys
setup, run, scenario, t0, t1, servers, pg, work = sys.argv[1:9]
loads = []
for path in sorted(glob.glob(f"{work}/load-*.json")):
    try:
        loads.append(json.load(open(path)))
    except ValueError:
        loads.append({"error": "no JSON from sensorhub load"})
load_cpu = 0.0
for path in glob.glob(f"{work}/load-*.time"):
    for line in open(path):
        parts = line.split()
        if len(parts) == 2:
            try:
                load_cpu += float(parts[0]) + float(parts[1])
            except ValueError:
                pass
row = {
    "setup": setup, "run": int(run), "scenario": scenario,
    "wall_s": float(t1) - float(t0),
    "cpu_s": {"postgres": int(pg) / 100, "servers": int(servers) / 100, "load": load_cpu},
    "loads": loads,
}
if os.path.exists(f"{work}/follow.json"):
    try:
        row["follow"] = json.load(open(f"{work}/follow.json"))
    except ValueError:
        row["follow"] = {"error": "no JSON from follow_latency.py"}
print(json.dumps(row))
PY
  python3 bench/rpc/replicas_summary.py --last "$results" >&2
}

ack_and_follow() {
  local n=${#urls[@]}
  load_all --mode unary --connections 2 --rate $((ACK_RATE / n)) --concurrency 10000 \
    --duration "${secs}s" --warmup 1s &
  local lp=$!
  sleep 1
  "$PYTHON" bench/rpc/follow_latency.py --write-target "${urls[0]}" \
    --follow-target "${urls[$((n - 1))]}" --token "$token" \
    --count "$FOLLOW_COUNT" --rate "$FOLLOW_RATE" >"$work/follow.json" 2>>"$work/follow.err" || true
  wait "$lp" || true
}

for run in $(seq "$runs"); do
  for setup in $SETUPS; do
    echo "== run $run: $setup" >&2
    start_setup "$setup"
    measure "$setup" "$run" ingest load_all --mode client-stream --connections "$INGEST_STREAMS" \
      --concurrency "$INGEST_STREAMS" --batch "$INGEST_BATCH" --duration "${secs}s" --warmup 1s --drain 60s
    measure "$setup" "$run" unary load_all --mode unary --connections 4 \
      --concurrency "$UNARY_CONCURRENCY" --duration "${secs}s" --warmup 1s
    measure "$setup" "$run" ack ack_and_follow
    stop_servers
  done
done
if [ "$runs" -gt 0 ]; then
  echo >&2
  python3 bench/rpc/replicas_summary.py "$results"
fi
if [ "$COPY_VS_UNNEST" != 0 ]; then
  echo
  psql -d postgres -c "CREATE DATABASE copy_vs_unnest"
  target/release/examples/copy_vs_unnest \
    "postgres://postgres@127.0.0.1:$pg_port/copy_vs_unnest?sslmode=disable" "$COPY_BATCHES" "$INGEST_BATCH"
  echo "pg_test_fsync on the data directory's disk (fdatasync, one 8 kB write per flush):"
  runuser -u postgres -- "$PG_BIN/pg_test_fsync" -s 2 -f "$work/pg/fsync.test" |
    grep -E 'fdatasync' | head -2
fi
