#!/usr/bin/env python3
"""What an `fdatasync` after a small append costs, by how the file grows.

    python3 bench/journal/fsync.py [DIR] [--writes N] [--reps R]

The journal (crates/sensorhub-core/src/store/journal.rs) appends one frame
per group commit and syncs it. This writes N frames of 600 bytes (a group of
about 20 unary readings) into a file in DIR (default: target/, which is on
the disk the store uses in the benches) and syncs after each, in three ways:

- append:    the file grows with every write, so every sync also commits
             the new file size (an inode update through the file system's
             own journal);
- grown:     the file was first extended past the writes (`ftruncate`, a
             sparse extension, what the journal does, 4 MiB at a time);
- allocated: the same with `posix_fallocate` (blocks reserved up front).

It prints, per way, the median over R alternating repetitions of syncs per
second, p50 and p99 latency, and CPU time (user + system) per sync.
"""

import argparse
import os
import resource
import statistics
import tempfile
import time

FRAME = b"x" * 600


def one_run(directory, writes, prepare):
    fd, path = tempfile.mkstemp(dir=directory, prefix="fsync-bench-")
    try:
        prepare(fd, writes * len(FRAME) + 4096)
        os.fsync(fd)
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        latencies = []
        offset = 0
        for _ in range(writes):
            t = time.perf_counter()
            os.pwrite(fd, FRAME, offset)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - t)
            offset += len(FRAME)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        os.close(fd)
        os.unlink(path)
    latencies.sort()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {
        "syncs/s": writes / elapsed,
        "p50 us": latencies[len(latencies) // 2] * 1e6,
        "p99 us": latencies[int(len(latencies) * 0.99)] * 1e6,
        "cpu us/sync": cpu / writes * 1e6,
    }


WAYS = {
    "append": lambda fd, size: None,
    "grown": lambda fd, size: os.ftruncate(fd, size),
    "allocated": lambda fd, size: os.posix_fallocate(fd, 0, size),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default="target")
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    runs = {way: [] for way in WAYS}
    for _ in range(args.reps):
        for way, prepare in WAYS.items():
            runs[way].append(one_run(args.dir, args.writes, prepare))
    print(f"{args.writes} writes of {len(FRAME)} B + fdatasync each, in {args.dir}, "
          f"medians of {args.reps}")
    print(f"{'way':<10} {'syncs/s':>8} {'p50 us':>7} {'p99 us':>7} {'cpu us/sync':>12}")
    for way, results in runs.items():
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(f"{way:<10} {med['syncs/s']:>8.0f} {med['p50 us']:>7.0f} "
              f"{med['p99 us']:>7.0f} {med['cpu us/sync']:>12.1f}")


if __name__ == "__main__":
    main()
