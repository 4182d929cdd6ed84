#!/usr/bin/env python3
"""Summarise bench/rpc/run.sh results: medians per scenario (unary: per sensor
fleet) and peer, ratios, the server's CPU per call split by thread, and the
issue-19 targets. Input: one JSON object per run (results/*.jsonl).

    python3 bench/rpc/summary.py [--previous EARLIER.jsonl] bench/rpc/results/latest.jsonl

--previous adds a column with an earlier run's median for the same scenario and
peer (the same fleet if it has one, else its own, which the cell names), so a
round's change shows beside the round before. Rows from before issue 19 have no
fleet: their load reported for 100 sensors.
"""

import json
import statistics
import sys

# scenario -> (what is measured, how to get it from a row, unit, higher is better)
METRICS = {
    "unary": ("unary calls/s, closed loop", lambda r: r["load"].get("calls_per_s"), "calls/s", True),
    "ingest": ("client-stream ingest", lambda r: r["load"].get("readings_sent_per_s"), "readings/s", True),
    "readback": ("server-stream read-back of one sensor", lambda r: r["load"].get("readings_received_per_s"),
                 "readings/s", True),
    "open": ("unary p99 at half the peak, open loop", lambda r: (r["load"].get("latency_ms") or {}).get("p99"),
             "ms", False),
    "chat": ("server RSS holding the chat streams", lambda r: r.get("rss_mib"), "MiB", False),
    "soak": ("server RSS, mixed soak (max)", lambda r: r.get("rss_mib"), "MiB", False),
}
PEERS = ["bare", "bare-tls", "full", "sampled", "notel", "memory", "python"]
# The load's default fleet, which rows from before the fleets were recorded used.
DEFAULT_SENSORS = 100
# Thread names (comm, 15 characters) shown under a clearer one.
THREAD_NAMES = {"tokio-runtime-w": "tokio workers", "tokio-rt-worker": "tokio workers", "OpenTelemetry.T": "OTel traces batch",
                "OpenTelemetry.L": "OTel logs batch", "OpenTelemetry.M": "OTel metrics reader"}
# Threads below this many us/call in every peer are summed into "other".
THREAD_FLOOR = 0.1


def sensors(row):
    return row.get("sensors", DEFAULT_SENSORS)


def groups(rows):
    """(scenario, fleet or None) in METRICS order: unary and open per fleet."""
    seen = []
    for scenario in METRICS:
        mine = [r for r in rows if r["scenario"] == scenario]
        if scenario in ("unary", "open"):
            for n in sorted({sensors(r) for r in mine}):
                seen.append((scenario, n))
        elif mine:
            seen.append((scenario, None))
    return seen


def select(rows, scenario, fleet):
    return [r for r in rows if r["scenario"] == scenario and (fleet is None or sensors(r) == fleet)]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, unit):
    if v is None:
        return "n/a"
    if unit in ("ms", "MiB", "us/call"):
        return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
    return f"{v:,.0f}"


def previous_median(previous, scenario, fleet, peer):
    """An earlier run's median for the same case, and the fleet it had if another."""
    if not previous:
        return None, None
    _title, get, _unit, _higher = METRICS[scenario]
    same = [r for r in select(previous, scenario, fleet) if r["peer"] == peer]
    if same or fleet is None:
        return median(get(r) for r in same), None
    other = [r for r in previous if r["scenario"] == scenario and r["peer"] == peer]
    fleets = sorted({sensors(r) for r in other})
    if not fleets:
        return None, None
    n = fleets[0]
    return median(get(r) for r in other if sensors(r) == n), n


def thread_table(mine):
    """Per-peer medians of each thread's CPU us/call, as table lines."""
    per_peer = {}
    for peer in PEERS:
        runs = [r.get("threads_us_per_call") for r in mine if r["peer"] == peer]
        runs = [t for t in runs if t]
        if not runs:
            continue
        named = [{THREAD_NAMES.get(k, k): v for k, v in t.items()} for t in runs]
        names = {k for t in named for k in t}
        per_peer[peer] = ({k: median(t.get(k, 0.0) for t in named) for k in names},
                          median(r.get("server_cpu_us_per_call") for r in mine if r["peer"] == peer),
                          median(r.get("receiver_cpu_us_per_call") for r in mine if r["peer"] == peer))
    if not per_peer:
        return []
    shown = sorted({k for m, _, _ in per_peer.values() for k, v in m.items() if v >= THREAD_FLOOR},
                   key=lambda k: -max(m.get(k, 0.0) for m, _, _ in per_peer.values()))
    lines = ["| peer | " + " | ".join(shown) + " | other | process | OTLP receiver (apart) |",
             "|" + "---|" * (len(shown) + 4)]
    for peer, (m, process, receiver) in per_peer.items():
        other = sum(v for k, v in m.items() if k not in shown)
        cells = [fmt(m.get(k), "us/call") if k in m else "" for k in shown]
        lines.append(f"| {peer} | " + " | ".join(cells) + f" | {fmt(other, 'us/call')} | {fmt(process, 'us/call')} "
                     f"| {fmt(receiver, 'us/call')} |")
    return lines


def main(path, previous_path=None):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    previous = [json.loads(line) for line in open(previous_path) if line.strip()] if previous_path else None
    out = []
    medians = {}
    cpu = {}
    for scenario, fleet in groups(rows):
        title, get, unit, _higher = METRICS[scenario]
        mine = select(rows, scenario, fleet)
        fleet_title = f", {fleet:,} sensors" if fleet is not None else ""
        out.append(f"### {scenario}{fleet_title}: {title} ({unit})\n")
        header = "| peer | runs | median | vs bare-tls | vs python | errors / unfinished |"
        extra_cols = []
        if scenario == "unary":
            extra_cols = [("server CPU us/call", lambda r: r.get("server_cpu_us_per_call"), "us/call")]
        if scenario == "open":
            extra_cols = [("rate calls/s", lambda r: r.get("rate"), "calls/s"),
                          ("p50 ms", lambda r: (r["load"].get("latency_ms") or {}).get("p50"), "ms"),
                          ("p99.9 ms", lambda r: (r["load"].get("latency_ms") or {}).get("p99_9"), "ms")]
        if scenario == "chat":
            extra_cols = [("idle RSS MiB", lambda r: r.get("idle_rss_mib"), "MiB"),
                          ("readings answered", lambda r: r["load"].get("ok"), "")]
        if scenario == "soak":
            extra_cols = [("RSS early MiB", lambda r: r.get("rss_first_mib"), "MiB"),
                          ("RSS late MiB", lambda r: r.get("rss_last_mib"), "MiB")]
        header += "".join(f" {name} |" for name, _, _ in extra_cols)
        if scenario == "unary":
            header += " CPU vs bare-tls |"
        if previous is not None:
            header += " previous round |"
        out.append(header)
        out.append("|" + "---|" * (header.count("|") - 1))
        for peer in PEERS:
            runs = [r for r in mine if r["peer"] == peer]
            if not runs:
                continue
            values = [get(r) for r in runs]
            m = median(values)
            medians[(scenario, fleet, peer)] = m
            bad = sum(sum((r["load"].get("errors") or {}).values()) for r in runs)
            unfinished = sum(r["load"].get("unfinished", 0) for r in runs)
            cells = [peer, " · ".join(fmt(v, unit) for v in values), f"**{fmt(m, unit)}**"]
            for base in ("bare-tls", "python"):
                b = medians.get((scenario, fleet, base))
                if b is None:
                    b = median(get(r) for r in mine if r["peer"] == base)
                cells.append(f"{m / b:.2f}" if m is not None and b else "")
            cells.append(f"{bad} / {unfinished}")
            for _, extra_get, extra_unit in extra_cols:
                cells.append(fmt(median(extra_get(r) for r in runs), extra_unit))
            if scenario == "unary":
                c = median(r.get("server_cpu_us_per_call") for r in runs)
                cpu[(fleet, peer)] = c
                b = median(r.get("server_cpu_us_per_call") for r in mine if r["peer"] == "bare-tls")
                cells.append(f"{c / b:.2f}" if c is not None and b else "")
            if previous is not None:
                p, other_fleet = previous_median(previous, scenario, fleet, peer)
                cells.append("" if p is None else fmt(p, unit) + (f" ({other_fleet:,} sensors)" if other_fleet else ""))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        threads = thread_table(mine)
        if threads:
            out.append(f"Server CPU per call by thread, us (medians; threads under {THREAD_FLOOR} in every "
                       "peer are in \"other\"; \"process\" is /proc/PID/stat, which also counts threads "
                       "that ended; the OTLP receiver shares the cores but is not the server, and is "
                       "not in \"process\"):\n")
            out.extend(threads)
            out.append("")

    def m(scenario, peer, fleet=None):
        return medians.get((scenario, fleet, peer))

    checks = []

    def target(what, value, ok):
        if value is not None:
            checks.append(f"- {'met' if ok else 'NOT met'}: {what} (measured {value})")

    for scenario, fleet in groups(rows):
        if scenario != "unary":
            continue
        tls_u = m("unary", "bare-tls", fleet)
        for peer, floor in (("full", 0.6), ("sampled", 0.75)):
            v = m("unary", peer, fleet)
            if v and tls_u:
                target(f"unary, {fleet:,} sensors, {peer} >= {floor} x bare tonic TLS calls/s",
                       f"{v / tls_u:.2f}", v / tls_u >= floor)
        c, b = cpu.get((fleet, "full")), cpu.get((fleet, "bare-tls"))
        if c and b:
            target(f"unary, {fleet:,} sensors, full server CPU per call <= 2.2 x bare tonic TLS's",
                   f"{c / b:.2f} x: {c:.1f} against {b:.1f} us", c / b <= 2.2)
    v = m("ingest", "full")
    if v:
        target("client-stream ingest into the durable store, 4 streams, >= 1,500,000 readings/s",
               f"{v:,.0f}", v >= 1.5e6)
    v = m("readback", "full")
    if v:
        target("server-stream read-back >= 2,000,000 readings/s", f"{v:,.0f}", v >= 2e6)
    for scenario, fleet in groups(rows):
        if scenario != "open":
            continue
        p99 = [METRICS["open"][1](r) for r in select(rows, "open", fleet) if r["peer"] == "full"]
        p99 = [v for v in p99 if v is not None]
        if p99:
            under = sum(v <= 5 for v in p99)
            runs = " · ".join(f"{v:.2f}" for v in p99)
            target(f"unary p99 at half of full's own peak (open loop, {fleet:,} sensors) <= 5 ms, five runs of five",
                   f"{under} of {len(p99)} runs under 5 ms: {runs}", len(p99) >= 5 and under == len(p99))
    v = m("chat", "full")
    if v is not None:
        target("RSS <= 150 MiB holding the chat streams", f"{v:.1f} MiB", v <= 150)
    soak = [r for r in rows if r["scenario"] == "soak" and r["peer"] == "full"]
    if soak:
        growth = median(r["rss_last_mib"] / r["rss_first_mib"] - 1 for r in soak if r.get("rss_first_mib"))
        if growth is not None:
            target("RSS flat (within 10 %) across the mixed soak", f"{growth * 100:+.1f} %", abs(growth) <= 0.10)
    if checks:
        out.append("### targets (sensorhub `full` against the same run's peers)\n")
        out.extend(checks)
    print("\n".join(out))


def last(path):
    """One line about the last run in `path`, for progress."""
    lines = [line for line in open(path) if line.strip()]
    r = json.loads(lines[-1])
    d = r["load"]
    lat = d.get("latency_ms") or {}
    line = (f"  {r['scenario']:8} {r['peer']:9} rep {r['rep']}: {d.get('calls_per_s', 0):>11,.0f} calls/s"
            f" {d.get('readings_per_s', 0):>12,.0f} readings/s  p99 {lat.get('p99', float('nan')):8.3f} ms"
            f"  errors {sum((d.get('errors') or {}).values())} unfinished {d.get('unfinished', 0)}")
    if "rss_mib" in r:
        line += f"  rss {r['rss_mib']:.1f} MiB"
    if r.get("server_cpu_us_per_call"):
        line += f"  server {r['server_cpu_us_per_call']:.1f} us/call"
    if "error" in d:
        line += f"  ({d['error']})"
    print(line)


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) > 1 and args[0] == "--last":
        last(args[1])
    else:
        earlier = None
        if len(args) > 1 and args[0] == "--previous":
            earlier, args = args[1], args[2:]
        main(args[0] if args else "bench/rpc/results/latest.jsonl", earlier)
