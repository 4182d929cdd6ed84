#!/usr/bin/env python3
"""Splits a `perf record --call-graph dwarf` profile of the server by thread and crate.

    perf script -i FILE | bench/rpc/profile_by_crate.py

(FILE from `PERF=FILE bench/rpc/threads.sh ...`, or any `perf record -p` of the
server.) Each sample goes to its thread
group (tokio-rt-worker, store-writer, store-indexer, OpenTelemetry.T, ...), and
within it to the first frame, walking the stack from the leaf, whose symbol
names a crate below: kernel and libc frames are passed over, so a syscall's
kernel time and a `memmove` count for the crate that asked for them. A sample
with no such frame counts as `other:` and its leaf symbol. Prints each group's
sample count and its share per crate, largest first.

Why by crate and not by symbol: the question BENCHMARKS.md asks of a profile
is whose work a thread does (bare tonic's transport, sensorhub's call path,
telemetry, the store), and the leaf symbols of async Rust are spread over
hundreds of generic instances.
"""

import collections
import re
import sys

# (crate label, pattern on a demangled symbol), first match wins. Specific
# before general: sensorhub's own crates, then the telemetry SDK and exporter,
# then the transport stack.
CRATES = [
    ("rpc-telemetry", r"sensorhub_rpc_telemetry"),
    ("sensorhub-grpc", r"sensorhub_grpc|sensorhub::|sensorhub_proto"),
    ("core", r"sensorhub_core"),
    ("store", r"sensorhub_store|sqlite3|rusqlite"),
    ("otel-export", r"opentelemetry_otlp|opentelemetry_proto"),
    ("otel-sdk", r"opentelemetry_sdk|opentelemetry::|tracing_opentelemetry"),
    ("tracing", r"tracing_subscriber|tracing_core|tracing::"),
    ("prometheus", r"prometheus"),
    ("prost", r"prost::|prost_"),
    ("tonic", r"tonic::|tonic_"),
    ("h2", r"\bh2::"),
    ("hyper", r"hyper::|hyper_util"),
    ("rustls", r"rustls::|\bring::|ring_core|aes_gcm|gcm_|ChaCha|sha256_block"),
    ("tokio", r"tokio::|mio::|tokio_util|tokio_stream"),
    ("tower", r"tower::|tower_"),
    ("jemalloc", r"_rjem_|jemalloc"),
]
PATTERNS = [(label, re.compile(pattern)) for label, pattern in CRATES]
HEADER = re.compile(r"^(\S.*?)\s+\d+(?:/\d+)?\s+")


def crate_of(symbol):
    for label, pattern in PATTERNS:
        if pattern.search(symbol):
            return label
    return None


def samples(lines):
    """Yields (thread name, [symbol, ...] from the leaf) per sample."""
    thread, frames = None, []
    for line in lines:
        if not line.strip():
            if thread is not None:
                yield thread, frames
            thread, frames = None, []
        elif line[0] in " \t":
            parts = line.split(None, 1)
            if len(parts) == 2:
                frames.append(parts[1].rsplit(" (", 1)[0])
        else:
            match = HEADER.match(line)
            thread = match.group(1) if match else line.split()[0]
    if thread is not None:
        yield thread, frames


def group_of(thread):
    # tokio names every worker alike; the store's threads are named once each.
    return re.sub(r"[-_ ]?\d+$", "", thread)


def main():
    counts = collections.defaultdict(collections.Counter)
    for thread, frames in samples(sys.stdin):
        label = next((c for c in map(crate_of, frames) if c), None)
        if label is None:
            label = "other:" + (frames[0].split("+")[0] if frames else "?")
        counts[group_of(thread)][label] += 1
    for group, by_crate in sorted(counts.items(), key=lambda kv: -sum(kv[1].values())):
        total = sum(by_crate.values())
        print(f"{group} {total}")
        for label, n in by_crate.most_common(12):
            print(f"    {100 * n / total:5.1f}%  {label}")


if __name__ == "__main__":
    main()
