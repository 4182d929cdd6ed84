#!/usr/bin/env python3
"""Summarise bench/rpc/replicas.sh results: per setup, the medians over runs of
ingest readings/s, unary calls/s, ack latency p50/p99, follow latency p50/p99,
and CPU seconds per second of wall time for PostgreSQL, the servers and the
load; the issue-15 targets against the one-replica figures.

    python3 bench/rpc/replicas_summary.py bench/rpc/results/latest-replicas.jsonl
    python3 bench/rpc/replicas_summary.py --last FILE   # the last row only
"""

import json
import statistics
import sys

SETUPS = ["embedded", "pg1", "pg2", "pg3"]


def errors(row):
    return sum(l.get("failed", 0) + l.get("unfinished", 0) for l in row["loads"])


def figures(row):
    """What a row measured, by name."""
    loads = row["loads"]
    out = {}
    if row["scenario"] == "ingest":
        out["ingest readings/s"] = sum(l.get("readings_sent_per_s", 0) for l in loads)
    elif row["scenario"] == "unary":
        out["unary calls/s"] = sum(l.get("calls_per_s", 0) for l in loads)
    elif row["scenario"] == "ack":
        lat = [l.get("latency_ms") or {} for l in loads]
        p50 = [x["p50"] for x in lat if "p50" in x]
        p99 = [x["p99"] for x in lat if "p99" in x]
        out["ack p50 ms"] = statistics.median(p50) if p50 else None
        out["ack p99 ms"] = max(p99) if p99 else None
        f = row.get("follow") or {}
        send = f.get("from_send_ms") or {}
        out["follow p50 ms"] = send.get("p50")
        out["follow p99 ms"] = send.get("p99")
        out["follow missing"] = f.get("missing")
        out["follow repeated"] = f.get("repeated")
    wall = row.get("wall_s") or 0
    if wall:
        for who, s in row["cpu_s"].items():
            out[f"{row['scenario']} cpu {who}"] = s / wall
    out[f"{row['scenario']} errors"] = errors(row)
    return out


def fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, float) and abs(v) < 100:
        return f"{v:.2f}"
    return f"{v:,.0f}"


def main(path, last):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    if last:
        row = rows[-1]
        print(f"  {row['setup']} run {row['run']} {row['scenario']}: " +
              ", ".join(f"{k} {fmt(v)}" for k, v in figures(row).items()))
        return
    table = {}
    for row in rows:
        for name, value in figures(row).items():
            table.setdefault(name, {}).setdefault(row["setup"], []).append(value)
    setups = [s for s in SETUPS if any(s in by for by in table.values())]
    print("| figure (median of runs; cpu: CPU-seconds per second) | " + " | ".join(setups) + " |")
    print("|---|" + "---|" * len(setups))
    med = {}
    for name, by in table.items():
        cells = []
        for s in setups:
            values = [v for v in by.get(s, []) if v is not None]
            m = statistics.median(values) if values else None
            med[(name, s)] = m
            spread = f" ({fmt(min(values))}–{fmt(max(values))})" if len(values) > 1 else ""
            cells.append(fmt(m) + spread)
        print(f"| {name} | " + " | ".join(cells) + " |")
    ingest = med.get(("ingest readings/s", "pg1"))
    follow = med.get(("follow p99 ms", "pg2")) or med.get(("follow p99 ms", "pg1"))
    print()
    if ingest is not None:
        print(f"target: >= 300,000 readings/s client-stream ingest through one replica: "
              f"{fmt(ingest)} ({'met' if ingest >= 300_000 else 'not met'})")
    if follow is not None:
        print(f"target: follow p99 across replicas <= 250 ms: {fmt(follow)} ms "
              f"({'met' if follow <= 250 else 'not met'})")


if __name__ == "__main__":
    args = sys.argv[1:]
    last = "--last" in args
    args = [a for a in args if a != "--last"]
    main(args[0], last)
