#!/usr/bin/env bash
# Server CPU per unary call with a scoped token against an unscoped one
# (issue 20): the same tokens file of 20 lines, the load's token unscoped in
# one and `write=garage-*,kitchen-*,load-*` in the other (its sensors match
# the last pattern), in alternating runs of bench/rpc/threads.sh.
#
#   bench/rpc/scopes.sh [RUNS] [SECONDS]
#
# Prints each run's total server CPU per call, then the medians and their
# difference.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
secs=${2:-8}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for i in $(seq 19); do
    echo "sha256:$(printf 'other-token-%s' "$i" | sha256sum | cut -d' ' -f1) name=other-$i write=other-$i-*"
done >"$work/others"
{ cat "$work/others"; echo "bench name=bench"; } >"$work/unscoped"
{ cat "$work/others"; echo "bench name=bench write=garage-*,kitchen-*,load-* read=load-*"; } >"$work/scoped"
for i in $(seq "$runs"); do
    for kind in unscoped scoped; do
        total=$(TOKENS_FILE="$work/$kind" bench/rpc/threads.sh memory "$secs" | awk '$1 == "total" {print $2}')
        echo "$kind $total" | tee -a "$work/results"
    done
done
python3 - "$work/results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    kind, us = line.split()
    runs.setdefault(kind, []).append(float(us))
a, b = statistics.median(runs["unscoped"]), statistics.median(runs["scoped"])
print(f"median unscoped {a:.2f} us/call, scoped {b:.2f} us/call, difference {b - a:+.2f} us/call ({b / a:.3f}x)")
PY
