#!/usr/bin/env bash
# Where a soak's memory goes: a mixed open loop against `sensorhub serve` (telemetry
# off, durable store in a temporary directory), printing every 15 s the server's
# RSS split (RssAnon: heap; RssFile; RssShmem: SQLite's -shm) and the sizes of
# readings.db and its WAL.
#
#   bench/rpc/mix-rss.sh [SECONDS]
#
# At the end it prints the load's latency. BIN=path/to/sensorhub measures another
# build (LOAD_BIN= another load generator); SERVER_ENV="NAME=value" runs the
# server with that environment (for example MALLOC_ARENA_MAX=1).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-90}
bin=${BIN:-target/release/sensorhub}
load_bin=${LOAD_BIN:-target/release/sensorhub}
[ -x "$load_bin" ] || cargo build --release --quiet --bin sensorhub
work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
"$load_bin" certs --out "$work/certs" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# shellcheck disable=SC2086 # SERVER_ENV is a list of NAME=value words
env -u RUST_LOG OTEL_SDK_DISABLED=true ${SERVER_ENV:-} "$bin" serve \
    --tls-cert "$work/certs/server.pem" --tls-key "$work/certs/server.key" --token bench \
    --listen "127.0.0.1:$port" --rate-limit 0 --http off --data "$work/data" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
env -u RUST_LOG "$load_bin" load --server "https://127.0.0.1:$port" --ca "$work/certs/ca.pem" \
    --token bench --quiet --json --mode mix --rate 2000 --connections 4 --concurrency 10000 \
    --duration "${secs}s" >"$work/load.json" &
load_pid=$!
t=0
while kill -0 "$load_pid" 2>/dev/null; do
    if [ $((t % 15)) = 0 ]; then
        echo "t=${t}s $(grep -E 'VmRSS|RssAnon|RssFile|RssShmem' "/proc/$pid/status" | awk '{printf "%s %s kB  ", $1, $2}')wal $(stat -c %s "$work/data/readings.db-wal" 2>/dev/null || echo 0) db $(stat -c %s "$work/data/readings.db")"
    fi
    t=$((t + 1))
    sleep 1
done
wait "$load_pid" || true
python3 - "$work/load.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_ms"]
print("calls %d, errors %s, p50 %s ms, p99 %s ms, max %s ms" % (r["calls"], r.get("errors", {}), l["p50"], l["p99"], l["max"]))
PY
