#!/usr/bin/env python3
"""The original Python SensorService, re-expressed with grpcio from PyPI, as
the peer that sensorhub's users are leaving (bench/rpc/run.sh).

What it does is what the original did (shared/field-notes.md, section 1):

- readings go into an unbounded in-memory dict (sensor id -> list of the
  received messages), with no lock and no persistence;
- every SensorService call must carry the bare token in `authorization`
  metadata, anything else is UNAUTHENTICATED "Invalid token"; health (when
  grpcio-health-checking is installed) needs no token;
- replies: Ack("Reading received."), Ack("All readings stored.") (also for
  an empty stream), one ServerMessage("Received <temperature>", server_time)
  per chat reading; GetSensorReadings streams every stored reading of the
  sensor in arrival order, an unknown sensor gives an empty stream;
- GetSensorStats did not exist: UNIMPLEMENTED;
- a thread pool of 10 workers (grpcio's usual `ThreadPoolExecutor(max_workers=10)`;
  a streaming call holds a worker for as long as it is open);
- plaintext, as the original could run (`--tls-cert/--tls-key` to serve TLS).

Stubs are generated at start-up from proto/sensor.proto with grpc_tools.protoc
into a temporary directory (no generated code is committed).

    python3 bench/python-original/server.py --listen 127.0.0.1:50053 [--token sensor_token_abc]

It prints `python original SensorService on HOST:PORT` to stderr once it
serves (the port it got, with --listen HOST:0).

Needs: pip install -r bench/python-original/requirements.txt
"""

import argparse
import importlib
import importlib.resources
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
from grpc_tools import protoc

DEFAULT_PROTO = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto", "sensor.proto")
)


def generate_stubs(proto_path, out_dir):
    """Compile proto_path into out_dir; return the (pb2, pb2_grpc) modules."""
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
        sys.exit(f"grpc_tools.protoc failed on {proto_path} (exit {rc})")
    module = os.path.splitext(proto_file)[0]
    sys.path.insert(0, out_dir)
    return importlib.import_module(f"{module}_pb2"), importlib.import_module(f"{module}_pb2_grpc")


class TokenInterceptor(grpc.ServerInterceptor):
    """Lets SensorService calls through only with the bare token in `authorization`."""

    def __init__(self, token):
        self.token = token

    def intercept_service(self, continuation, details):
        if not details.method.startswith("/SensorService/"):
            return continuation(details)
        for key, value in details.invocation_metadata:
            if key == "authorization" and value == self.token:
                return continuation(details)
        handler = continuation(details)
        if handler is None:
            return None

        def deny(_request_or_iterator, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "Invalid token")

        # The refusal must have the method's shape.
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)


def make_servicer(pb2, pb2_grpc):
    class SensorService(pb2_grpc.SensorServiceServicer):
        def __init__(self):
            self.readings = {}  # sensor_id -> [SensorReading]; no lock, as the original

        def _store(self, reading):
            self.readings.setdefault(reading.sensor_id, []).append(reading)

        def SendSingleReading(self, request, context):
            self._store(request)
            return pb2.Ack(message="Reading received.")

        def StreamSensorReadings(self, request_iterator, context):
            for reading in request_iterator:
                self._store(reading)
            return pb2.Ack(message="All readings stored.")

        def GetSensorReadings(self, request, context):
            for reading in list(self.readings.get(request.sensor_id, ())):
                yield reading

        def SensorChat(self, request_iterator, context):
            for reading in request_iterator:
                self._store(reading)
                yield pb2.ServerMessage(
                    message=f"Received {reading.temperature}",
                    server_time=int(time.time()),
                )

        # GetSensorStats is not overridden: the original had no such method (UNIMPLEMENTED).

    return SensorService()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:50053")
    parser.add_argument("--token", default="sensor_token_abc")
    parser.add_argument("--workers", type=int, default=10, help="thread pool size")
    parser.add_argument("--proto", default=DEFAULT_PROTO)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sensor-stubs-") as out_dir:
        pb2, pb2_grpc = generate_stubs(args.proto, out_dir)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=args.workers),
            interceptors=[TokenInterceptor(args.token)],
        )
        pb2_grpc.add_SensorServiceServicer_to_server(make_servicer(pb2, pb2_grpc), server)
        try:
            from grpc_health.v1 import health, health_pb2, health_pb2_grpc

            checker = health.HealthServicer()
            checker.set("", health_pb2.HealthCheckResponse.SERVING)
            checker.set("SensorService", health_pb2.HealthCheckResponse.SERVING)
            health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        except ImportError:
            pass
        if args.tls_cert and args.tls_key:
            with open(args.tls_cert, "rb") as c, open(args.tls_key, "rb") as k:
                creds = grpc.ssl_server_credentials([(k.read(), c.read())])
            port = server.add_secure_port(args.listen, creds)
        else:
            port = server.add_insecure_port(args.listen)
        if port == 0:
            sys.exit(f"cannot listen on {args.listen}")
        server.start()
        # The port bound, also when --listen asked for port 0.
        host = args.listen.rsplit(":", 1)[0]
        print(f"python original SensorService on {host}:{port}", file=sys.stderr, flush=True)

        stopped = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopped.set())
        stopped.wait()
        server.stop(grace=2).wait()


if __name__ == "__main__":
    main()
