#!/usr/bin/env bash
# What the live view's recorders cost per unary call, in instructions: the
# server under callgrind with `--view on` and `--view off`, alternating,
# everything else as in cost.sh (TLS, a token, the durable store, /metrics,
# no OTLP endpoint). Instructions do not depend on what else the machine
# runs, so this is the figure to trust on a shared machine; cost.sh gives
# the CPU time.
#
#   bench/live-view/instructions.sh [REPS] [CALLS]
#
# Each run: a warm-up of 1,000 calls, then callgrind's counters are zeroed,
# CALLS unary calls are made (`sensorhub load --count`, 4 connections x 32
# in flight), and the counters dumped: the server's instructions in all
# threads over those calls, divided by them. Prints every run and the medians.
# KEEP=1 keeps the last run's callgrind files of each arm (WORK/on, WORK/off)
# for `callgrind_annotate`, and prints where.
set -euo pipefail
cd "$(dirname "$0")/../.."
reps=${1:-3}
calls=${2:-10000}
bin=${BIN:-target/release/sensorhub}
[ -x "$bin" ] || cargo build --release --quiet --bin sensorhub
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }

work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -n "${KEEP:-}" ] && echo "kept: $work" >&2 || rm -rf "$work"' EXIT
"$bin" certs --out "$work/certs" >/dev/null

load() {
    env -u RUST_LOG "$bin" load --server "https://127.0.0.1:$1" --ca "$work/certs/ca.pem" \
        --token bench --quiet --json --mode unary --connections 4 --concurrency 32 --count "$2" >/dev/null
}

# One run: prints instructions per call.
run() {
    local view=$1
    rm -rf "$work/data" "$work/ready" "${work:?}/$view"
    mkdir -p "$work/$view"
    env -u RUST_LOG valgrind --tool=callgrind --callgrind-out-file="$work/$view/cg.%p" \
        "$bin" serve --tls-cert "$work/certs/server.pem" --tls-key "$work/certs/server.key" \
        --token bench --listen 127.0.0.1:0 --http 127.0.0.1:0 --view "$view" --rate-limit 0 \
        --data "$work/data" --ready-file "$work/ready" >/dev/null 2>"$work/valgrind.log" &
    pid=$!
    for _ in $(seq 1200); do [ -s "$work/ready" ] && break; sleep 0.1; done
    local port
    port=$(awk -F'[=:]' '/^grpc=/{print $NF}' "$work/ready")
    load "$port" 1000
    callgrind_control -z "$pid" >/dev/null
    load "$port" "$calls"
    callgrind_control -d "$pid" >/dev/null
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
    # The dump taken by -d (the file with a ".1" part), its total instructions.
    local dump total
    dump=$(ls "$work/$view"/cg.*.1 2>/dev/null | head -1)
    total=$(awk '/^(summary|totals):/{print $2; exit}' "$dump")
    python3 -c 'import sys; print(f"{int(sys.argv[1]) / int(sys.argv[2]):.0f}")' "$total" "$calls"
}

on=()
off=()
for rep in $(seq "$reps"); do
    a=$(run on)
    b=$(run off)
    echo "rep $rep: view on $a  |  view off $b   (instructions/call)"
    on+=("$a")
    off+=("$b")
done
python3 - "${on[*]}" "${off[*]}" <<'PY'
import statistics, sys
on, off = [float(x) for x in sys.argv[1].split()], [float(x) for x in sys.argv[2].split()]
m_on, m_off = statistics.median(on), statistics.median(off)
print(f"server instructions per unary call, median of {len(on)}: view on {m_on:.0f}, view off {m_off:.0f}, "
      f"difference {m_on - m_off:+.0f} ({m_on / m_off:.3f}x)")
PY
