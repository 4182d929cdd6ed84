#!/usr/bin/env python3
"""Interop check: drive a sensorhub server with a plain grpcio client, written
the way the original Python system's clients were.

Stubs are generated at run time from proto/sensor.proto with grpc_tools.protoc
into a temporary directory (no generated code is committed). The channel is a
grpc.secure_channel trusting the given CA, and every call sends the BARE token
in `authorization` metadata (no "Bearer").

Runs all four original RPC kinds and asserts the results end to end; exits
non-zero with a message on stderr on the first mismatch.

    python3 tests/python/interop_client.py --target localhost:50051 \
        --ca ca.pem --token sensor_token_abc --sensor-id py-interop-1

Needs: pip install -r tests/python/requirements.txt
"""

import argparse
import importlib
import importlib.resources
import os
import sys
import tempfile
import time

try:
    import grpc
    from grpc_tools import protoc
except ImportError as e:  # pragma: no cover - reported to the caller
    sys.stderr.write(
        f"FAIL: grpcio/grpcio-tools not importable ({e}); "
        "run: python3 -m pip install -r tests/python/requirements.txt\n"
    )
    sys.exit(3)

DEFAULT_PROTO = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto", "sensor.proto")
)
CALL_TIMEOUT = 15.0  # seconds, per RPC


class Mismatch(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Mismatch(what)


def generate_stubs(proto_path, out_dir):
    """Compile proto_path into out_dir with grpc_tools.protoc; return (pb2, pb2_grpc)."""
    proto_dir, proto_file = os.path.split(os.path.abspath(proto_path))
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        os.path.join(proto_dir, proto_file),
    ])
    if rc != 0:
        raise Mismatch(f"grpc_tools.protoc failed on {proto_path} (exit {rc})")
    module = os.path.splitext(proto_file)[0]
    sys.path.insert(0, out_dir)
    return importlib.import_module(f"{module}_pb2"), importlib.import_module(f"{module}_pb2_grpc")


def run(args, pb2, pb2_grpc):
    with open(args.ca, "rb") as f:
        ca_pem = f.read()
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    md = [("authorization", args.token)]
    sid = args.sensor_id

    base = int(time.time()) - 120  # distinct, increasing, just in the past
    sent = []

    def reading(temp):
        r = pb2.SensorReading(sensor_id=sid, temperature=temp, timestamp=base + len(sent))
        sent.append((sid, temp, r.timestamp))
        return r

    with grpc.secure_channel(args.target, creds) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT)
        except grpc.FutureTimeoutError:
            raise Mismatch(f"could not connect (TLS) to {args.target} within {CALL_TIMEOUT}s")
        stub = pb2_grpc.SensorServiceStub(channel)

        # 1. Unary.
        ack = stub.SendSingleReading(reading(20.5), metadata=md, timeout=CALL_TIMEOUT)
        check(ack.message == "Reading received.",
              f"SendSingleReading: Ack.message = {ack.message!r}, want 'Reading received.'")
        print(f"SendSingleReading: {ack.message!r}")

        # 2. Client streaming, 5 readings.
        batch = [reading(t) for t in (19.0, 19.5, 20.0, 20.25, 21.0)]
        ack = stub.StreamSensorReadings(iter(batch), metadata=md, timeout=CALL_TIMEOUT)
        check(ack.message == "All readings stored.",
              f"StreamSensorReadings: Ack.message = {ack.message!r}, want 'All readings stored.'")
        print(f"StreamSensorReadings: {ack.message!r}")

        # 3. Bidirectional, 3 readings.
        chat_temps = (22.0, 21.5, 23.25)
        chat = [reading(t) for t in chat_temps]
        replies = list(stub.SensorChat(iter(chat), metadata=md, timeout=CALL_TIMEOUT))
        now = time.time()
        got = [m.message for m in replies]
        want = [f"Received {t}" for t in chat_temps]
        check(got == want, f"SensorChat: replies = {got!r}, want exactly {want!r}")
        for m in replies:
            check(abs(m.server_time - now) <= 60,
                  f"SensorChat: server_time {m.server_time} of {m.message!r} is not within 60 s of now ({int(now)})")
        print(f"SensorChat: {got!r}")

        # 4. Server streaming: exactly what was sent, in timestamp order.
        stored = [
            (r.sensor_id, r.temperature, r.timestamp)
            for r in stub.GetSensorReadings(pb2.SensorRequest(sensor_id=sid), metadata=md, timeout=CALL_TIMEOUT)
        ]
        check(len(sent) == 9, f"internal: sent {len(sent)} readings, expected 9")
        check(stored == sent,
              f"GetSensorReadings: got {len(stored)} readings {stored!r}, want {len(sent)} readings {sent!r}")
        print(f"GetSensorReadings: {len(stored)} readings, in order")

        # 5. A wrong token is refused with UNAUTHENTICATED.
        try:
            stub.SendSingleReading(
                pb2.SensorReading(sensor_id=sid, temperature=99.0, timestamp=base + 100),
                metadata=[("authorization", args.token + "-wrong")],
                timeout=CALL_TIMEOUT,
            )
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.UNAUTHENTICATED,
                  f"wrong token: status {e.code()} ({e.details()!r}), want UNAUTHENTICATED")
            print(f"wrong token: {e.code().name} ({e.details()!r})")
        else:
            raise Mismatch("wrong token: call succeeded, want UNAUTHENTICATED")

    print(f"OK: python grpcio {grpc.__version__}: unary, client-stream, bidi, server-stream "
          f"and auth checks passed ({len(sent)} readings for {sid!r})")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="host:port, e.g. localhost:50051")
    p.add_argument("--ca", required=True, help="PEM file of the CA that signed the server certificate")
    p.add_argument("--token", required=True, help="bearer token, sent bare in `authorization`")
    p.add_argument("--sensor-id", required=True)
    p.add_argument("--proto", default=DEFAULT_PROTO, help="path of sensor.proto (default: %(default)s)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="sensorhub-stubs-") as out_dir:
        try:
            pb2, pb2_grpc = generate_stubs(args.proto, out_dir)
            run(args, pb2, pb2_grpc)
        except Mismatch as e:
            sys.stderr.write(f"FAIL: {e}\n")
            return 1
        except grpc.RpcError as e:
            sys.stderr.write(f"FAIL: unexpected RPC error: {e.code()} {e.details()!r}\n")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
