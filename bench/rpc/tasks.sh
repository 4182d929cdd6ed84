# Per-thread CPU of a server process, for the RPC benches (sourced by
# threads.sh, run.sh and ingest.sh, so they split a call's CPU the same way).
#
# free_port: a TCP port on 127.0.0.1 that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
#
# task_ticks PID: one line per thread name, "NAME TICKS", sorted by name:
# user + system clock ticks (1/100 s) of /proc/PID/task/*/stat, summed over
# the threads of one name (tokio's workers share one). Names with spaces
# (comm may have them) are joined with '_'.
task_ticks() {
    local task
    for task in /proc/"$1"/task/*; do
        # A thread may end between the listing and the read: skip it.
        { echo "$(tr ' ' _ <"$task/comm") $(awk '{print $14 + $15}' "$task/stat")"; } 2>/dev/null || true
    done | awk '{ticks[$1] += $2} END {for (name in ticks) print name, ticks[name]}' | sort
}

# task_us_per_call BEFORE AFTER CALLS: the difference of two task_ticks
# snapshots, as "NAME US_PER_CALL" lines for each thread name that ran, then
# "total US_PER_CALL". A thread that started after BEFORE counts from zero.
task_us_per_call() {
    join -a 2 -e 0 -o 0,1.2,2.2 "$1" "$2" | awk -v calls="$3" '
        { d = $3 - $2; total += d; if (d > 0) printf "%s %.2f\n", $1, d * 1e4 / calls }
        END { printf "total %.2f\n", total * 1e4 / calls }'
}
