#!/usr/bin/env bash
# Client-stream durable ingest (issue 19), fed two ways, side by side:
#
#   bench/rpc/ingest.sh [REPS] [SECONDS]        (3 reps of 8 s by default)
#
# Clients (both: STREAMS calls of BATCH readings in flight, one per
# connection, 4 x 10,000 by default, SENSORS sensor ids, 1 s warm-up):
#   plain   crates/sensorhub-proto/examples/ingest_client.rs: a plain tonic
#           client that builds and encodes each reading as the stream is polled
#   load    `sensorhub load --mode client-stream`, which replays readings it
#           encoded once before the run (cheaper for the shared cores)
# Peers (a fresh server per run):
#   bare-tls  bare tonic over TLS, in memory (examples/bare_server.rs): the ceiling
#   notel     sensorhub serve, TLS, token, the durable store, telemetry off
#   full      the same with traces, metrics and logs exported over OTLP to a
#             local receiver (the otlp_sink example), as bench/rpc/run.sh's full
# BIN_B=path/to/other/sensorhub adds notel-b and full-b, served by that build
# (an A/B; BIN= sets the A build, target/release/sensorhub by default; the load
# client is always LOAD_BIN, target/release/sensorhub by default).
# PEERS=bare-tls,notel,full and CLIENTS=plain,load choose a subset.
#
# Runs alternate: for each rep, each client, each peer in turn. Each run
# records readings/s, the server's CPU per reading split by thread
# (bench/rpc/tasks.sh, from the end of the warm-up to the end of the run),
# and the client's CPU per reading (user + system). Raw results (one JSON
# object per run) go to bench/rpc/results/latest-ingest.jsonl, the summary
# (medians, ratios to bare-tls with the same client, and to the A build) to
# latest-ingest.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/rpc/tasks.sh
reps=${1:-3}
secs=${2:-8}
STREAMS=${STREAMS:-4}
BATCH=${BATCH:-10000}
SENSORS=${SENSORS:-100}
PEERS=${PEERS:-bare-tls,notel,full}
CLIENTS=${CLIENTS:-plain,load}
bin=${BIN:-target/release/sensorhub}
load_bin=${LOAD_BIN:-target/release/sensorhub}
bare=target/release/examples/bare_server
plain=target/release/examples/ingest_client
sink=target/release/examples/otlp_sink
[ -x "$bin" ] || cargo build --release --quiet --bin sensorhub
[ -x "$bare" ] && [ -x "$plain" ] ||
    cargo build --release --quiet -p sensorhub-proto --example bare_server --example ingest_client
[ -x "$sink" ] || cargo build --release --quiet -p sensorhub-telemetry --features test-util --example otlp_sink
peers=$PEERS
if [ -n "${BIN_B:-}" ]; then
    for p in notel full; do [[ ",$PEERS," == *",$p,"* ]] && peers="$peers,$p-b"; done
fi

work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
"$load_bin" certs --out "$work/certs" >/dev/null
"$sink" >"$work/sink.out" 2>/dev/null &
for _ in $(seq 100); do grep -q '^grpc ' "$work/sink.out" 2>/dev/null && break; sleep 0.1; done
otlp=$(awk '/^grpc /{print $2}' "$work/sink.out")
token=bench-token
results=bench/rpc/results/latest-ingest.jsonl
mkdir -p bench/rpc/results
: >"$results"


start() { # start PEER: sets pid and port
    local peer=$1 server=$bin
    port=$(free_port)
    local tls=(--tls-cert "$work/certs/server.pem" --tls-key "$work/certs/server.key")
    case $peer in *-b) server=$BIN_B; peer=${peer%-b} ;; esac
    local serve=("$server" serve "${tls[@]}" --token "$token" --listen "127.0.0.1:$port"
        --rate-limit 0 --data "$work/data-$RANDOM$RANDOM")
    case $peer in
        bare-tls) "$bare" --listen "127.0.0.1:$port" "${tls[@]}" 2>/dev/null & ;;
        notel) env -u RUST_LOG OTEL_SDK_DISABLED=true "${serve[@]}" --http off >/dev/null 2>&1 & ;;
        full) env -u RUST_LOG OTEL_EXPORTER_OTLP_ENDPOINT="$otlp" OTEL_METRIC_EXPORT_INTERVAL=5000 \
                  "${serve[@]}" --http "127.0.0.1:$(free_port)" >/dev/null 2>&1 & ;;
        *) echo "unknown peer $peer" >&2; exit 2 ;;
    esac
    pid=$!
    for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.05; done
    echo "error: $peer did not start" >&2
    exit 1
}

run() { # run CLIENT PEER REP
    local client=$1 peer=$2 rep=$3 out readings
    start "$peer"
    local url="https://127.0.0.1:$port" ca="$work/certs/ca.pem"
    # The server's threads from the end of the warm-up on.
    (sleep 1; task_ticks "$pid" >"$work/before") &
    local snap=$!
    case $client in
        plain) out=$(/usr/bin/time -f '%U %S' -o "$work/time" "$plain" --server "$url" --ca "$ca" \
                   --token "$token" --streams "$STREAMS" --batch "$BATCH" --sensors "$SENSORS" \
                   --duration "$secs" --warmup 1 --json) ;;
        load) out=$(env -u RUST_LOG /usr/bin/time -f '%U %S' -o "$work/time" "$load_bin" load \
                  --server "$url" --ca "$ca" --token "$token" --quiet --json --mode client-stream \
                  --connections "$STREAMS" --concurrency "$STREAMS" --batch "$BATCH" \
                  --sensors "$SENSORS" --duration "${secs}s" --warmup 1s --drain 60s \
                  --max-error-rate 1 || true) ;;
    esac
    task_ticks "$pid" >"$work/after"
    wait "$snap"
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    pid=""
    readings=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d.get("readings", d.get("readings_sent", 0)))' "$out")
    [ "$readings" -gt 0 ] || { echo "no readings: $client $peer: $out" >&2; return; }
    task_us_per_call "$work/before" "$work/after" "$readings" >"$work/threads"
    python3 - "$client" "$peer" "$rep" "$out" "$work/threads" "$work/time" "$readings" >>"$results" <<'PY'
import json, sys
client, peer, rep, out, threads, time, readings = sys.argv[1:8]
d = json.loads(out)
t = dict((n, float(v)) for n, v in (l.split() for l in open(threads) if l.strip()))
user, system = (float(x) for x in open(time).read().split()[-2:])
print(json.dumps({"client": client, "peer": peer, "rep": int(rep),
    "readings_per_s": d["readings_per_s"], "readings": int(readings),
    "errors": d.get("errors") if client == "plain" else d.get("failed", 0),
    "server_us_per_reading": t.pop("total"), "threads_us_per_reading": t,
    "client_us_per_reading": (user + system) * 1e6 / int(readings)}))
PY
    tail -1 "$results" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
print("  %-5s %-8s rep %d: %12s readings/s, server %.3f us/reading, client %.3f" % (r["client"], r["peer"],
      r["rep"], format(round(r["readings_per_s"]), ","), r["server_us_per_reading"], r["client_us_per_reading"]))' >&2
}

IFS=, read -r -a peer_list <<<"$peers"
IFS=, read -r -a client_list <<<"$CLIENTS"
echo "ingest: ${client_list[*]} x ${peer_list[*]}; $reps reps of ${secs}s; $STREAMS streams x $BATCH readings, $SENSORS sensors" >&2
for rep in $(seq "$reps"); do
    for client in "${client_list[@]}"; do
        for peer in "${peer_list[@]}"; do run "$client" "$peer" "$rep"; done
    done
done

python3 - "$results" <<'PY' | tee bench/rpc/results/latest-ingest.md
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda v: st.median(v) if v else 0
by = {}
for r in rows:
    by.setdefault((r["client"], r["peer"]), []).append(r)
clients = list(dict.fromkeys(r["client"] for r in rows))
peers = list(dict.fromkeys(r["peer"] for r in rows))
print("| client | peer | runs (readings/s) | median | vs bare-tls | vs A | server us/reading | client us/reading |")
print("|---|---|---|---|---|---|---|---|")
for c in clients:
    bare = med([r["readings_per_s"] for r in by.get((c, "bare-tls"), [])])
    for p in peers:
        rs = by.get((c, p), [])
        if not rs:
            continue
        m = med([r["readings_per_s"] for r in rs])
        a = med([r["readings_per_s"] for r in by.get((c, p[:-2]), [])]) if p.endswith("-b") else 0
        runs = " · ".join("%.2f M" % (r["readings_per_s"] / 1e6) for r in rs)
        vs_a = "%.2f" % (m / a) if a else ""
        server = med([r["server_us_per_reading"] for r in rs])
        client = med([r["client_us_per_reading"] for r in rs])
        vs_bare = "%.2f" % (m / bare) if bare else ""  # PEERS without bare-tls
        print(f"| {c} | {p} | {runs} | **{m / 1e6:.3f} M** | {vs_bare} | {vs_a} | {server:.3f} | {client:.3f} |")
print()
print("Server CPU per reading by thread (us, medians):")
print()
names = sorted({n for r in rows for n in r["threads_us_per_reading"]},
               key=lambda n: -med([r["threads_us_per_reading"].get(n, 0) for r in rows]))
names = [n for n in names if med([r["threads_us_per_reading"].get(n, 0) for r in rows]) >= 0.005][:8]
print("| client | peer | " + " | ".join(names) + " | total |")
print("|---|---|" + "---|" * (len(names) + 1))
for c in clients:
    for p in peers:
        rs = by.get((c, p), [])
        if rs:
            cells = ["%.3f" % med([r["threads_us_per_reading"].get(n, 0) for r in rs]) for n in names]
            total = med([r["server_us_per_reading"] for r in rs])
            print(f"| {c} | {p} | " + " | ".join(cells) + f" | {total:.3f} |")
PY
