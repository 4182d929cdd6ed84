#!/usr/bin/env python3
"""Follow latency across replicas (issue 15): write through one server, follow
on another, and time each reading from the start of its write to its arrival
on the follow stream.

A follower opens GetSensorReadings(follow=true) on --follow-target for a sensor
of its own; once the stream is open, a writer sends --count readings through
--write-target with SendSingleReading at --rate per second, each with a
distinct timestamp that names it. Prints one JSON object: the count received,
missing and repeated readings, and the latency p50/p90/p99/max in ms, from the
write's start (what a viewer of the follow stream waits after a sensor sent)
and from its acknowledgement.

    target/test-venv/bin/python bench/rpc/follow_latency.py \
        --write-target 127.0.0.1:50051 --follow-target 127.0.0.1:50052 \
        --token T --count 2000 --rate 200

Plaintext (servers run with --insecure). Needs grpcio and grpcio-tools
(tests/python/requirements.txt; `cargo xtask test` installs them into
target/test-venv). Stubs are generated at run time from proto/sensor.proto.
"""

import argparse
import importlib
import importlib.resources
import json
import os
import sys
import tempfile
import threading
import time

import grpc
from grpc_tools import protoc

PROTO = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto", "sensor.proto")
)


def stubs(out_dir):
    proto_dir, proto_file = os.path.split(PROTO)
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    rc = protoc.main([
        "grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}",
        f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", PROTO,
    ])
    if rc != 0:
        sys.exit(f"grpc_tools.protoc failed ({rc})")
    sys.path.insert(0, out_dir)
    return importlib.import_module("sensor_pb2"), importlib.import_module("sensor_pb2_grpc")


def quantile(sorted_ms, q):
    if not sorted_ms:
        return None
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--write-target", required=True)
    p.add_argument("--follow-target", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--sensor-id", default=f"follow-{os.getpid()}")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as out:
        pb2, pb2_grpc = stubs(out)
        md = [("authorization", args.token)]
        base = int(time.time()) - 3 * 3600
        sent_at = {}
        acked_at = {}
        arrived = {}
        repeats = 0
        opened = threading.Event()

        follow_channel = grpc.insecure_channel(args.follow_target)
        stream = pb2_grpc.SensorServiceStub(follow_channel).GetSensorReadings(
            pb2.SensorRequest(sensor_id=args.sensor_id, follow=True), metadata=md
        )

        def follow():
            nonlocal repeats
            opened.set()
            try:
                for r in stream:
                    now = time.monotonic()
                    if r.timestamp in arrived:
                        repeats += 1
                    else:
                        arrived[r.timestamp] = now
                    if len(arrived) >= args.count:
                        return
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.CANCELLED:
                    sys.stderr.write(f"follow ended: {e.code()} {e.details()}\n")

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        opened.wait()
        # The follow's snapshot is taken once the call runs on the server:
        # give it a moment, so the first write comes through the tail.
        time.sleep(0.5)

        write = pb2_grpc.SensorServiceStub(grpc.insecure_channel(args.write_target))
        interval = 1.0 / args.rate
        start = time.monotonic()
        for i in range(args.count):
            due = start + i * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ts = base + i
            sent_at[ts] = time.monotonic()
            write.SendSingleReading(
                pb2.SensorReading(sensor_id=args.sensor_id, temperature=20.0 + (i % 10), timestamp=ts),
                metadata=md, timeout=10,
            )
            acked_at[ts] = time.monotonic()
        follower.join(timeout=10)
        stream.cancel()

        from_send = sorted((arrived[t] - sent_at[t]) * 1e3 for t in sent_at if t in arrived)
        from_ack = sorted(max(0.0, arrived[t] - acked_at[t]) * 1e3 for t in sent_at if t in arrived)
        print(json.dumps({
            "count": args.count,
            "received": len(arrived),
            "missing": args.count - sum(1 for t in sent_at if t in arrived),
            "repeated": repeats,
            "rate": args.rate,
            "from_send_ms": {q: quantile(from_send, v) for q, v in
                             (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))},
            "from_ack_ms": {q: quantile(from_ack, v) for q, v in
                            (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))},
        }))


if __name__ == "__main__":
    main()
