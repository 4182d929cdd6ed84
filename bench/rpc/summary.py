#!/usr/bin/env python3
"""Summarise bench/rpc/run.sh results: medians per scenario and peer, ratios,
and the issue-5 targets. Input: one JSON object per run (results/*.jsonl).

    python3 bench/rpc/summary.py bench/rpc/results/latest.jsonl
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
PEERS = ["bare", "bare-tls", "full", "notel", "memory", "python"]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, unit):
    if v is None:
        return "n/a"
    if unit in ("ms", "MiB", "us/call"):
        return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
    return f"{v:,.0f}"


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    out = []
    medians = {}
    for scenario, (title, get, unit, _higher) in METRICS.items():
        mine = [r for r in rows if r["scenario"] == scenario]
        if not mine:
            continue
        out.append(f"### {scenario}: {title} ({unit})\n")
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
        out.append(header)
        out.append("|" + "---|" * (6 + len(extra_cols)))
        for peer in PEERS:
            runs = [r for r in mine if r["peer"] == peer]
            if not runs:
                continue
            values = [get(r) for r in runs]
            m = median(values)
            medians[(scenario, peer)] = m
            bad = sum(sum((r["load"].get("errors") or {}).values()) for r in runs)
            unfinished = sum(r["load"].get("unfinished", 0) for r in runs)
            cells = [peer, " · ".join(fmt(v, unit) for v in values), f"**{fmt(m, unit)}**"]
            for base in ("bare-tls", "python"):
                b = medians.get((scenario, base))
                if b is None:
                    b = median(get(r) for r in mine if r["peer"] == base)
                cells.append(f"{m / b:.2f}" if m is not None and b else "")
            cells.append(f"{bad} / {unfinished}")
            for _, extra_get, extra_unit in extra_cols:
                cells.append(fmt(median(extra_get(r) for r in runs), extra_unit))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")

    def m(scenario, peer):
        return medians.get((scenario, peer))

    checks = []

    def target(what, value, ok):
        if value is not None:
            checks.append(f"- {'met' if ok else 'NOT met'}: {what} (measured {value})")

    full_u, tls_u, py_u = m("unary", "full"), m("unary", "bare-tls"), m("unary", "python")
    if full_u and tls_u:
        target("unary, full >= 0.75 x bare tonic under TLS", f"{full_u / tls_u:.2f}", full_u / tls_u >= 0.75)
    if full_u and py_u:
        target("unary, full >= 20 x the Python original", f"{full_u / py_u:.1f}", full_u / py_u >= 20)
    v = m("ingest", "full")
    if v:
        target("client-stream ingest into the durable store >= 1,000,000 readings/s", f"{v:,.0f}", v >= 1e6)
    v = m("readback", "full")
    if v:
        target("server-stream read-back >= 2,000,000 readings/s", f"{v:,.0f}", v >= 2e6)
    v = m("open", "full")
    if v is not None:
        target("unary p99 at half the peak (open loop) <= 5 ms", f"{v:.2f} ms", v <= 5)
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
    if len(sys.argv) > 2 and sys.argv[1] == "--last":
        last(sys.argv[2])
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "bench/rpc/results/latest.jsonl")
