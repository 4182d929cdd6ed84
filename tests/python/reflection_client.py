#!/usr/bin/env python3
"""A gRPC reflection client that knows nothing of sensorhub's protos, for
tests/reflection.rs: grpcio-reflection's own client
(ProtoReflectionDescriptorDatabase feeding a protobuf DescriptorPool), as a
tool like grpcurl uses reflection.

grpcio-reflection ships only the v1alpha stubs. grpc.reflection.v1 has the
same messages with the same field numbers, so for `--api v1` the same client
is pointed at the v1 method path.

It prints one JSON object: the services listed, and for each service asked
to describe (--describe), its methods with their input and output types and
streaming flags, or the error reflection gave.
"""

import argparse
import json
import sys

import grpc
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

V1ALPHA_PATH = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
V1_PATH = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


class ReflectionPath:
    """A channel whose reflection calls go to `path`; everything else passes through."""

    def __init__(self, channel, path):
        self._channel = channel
        self._path = path

    def stream_stream(self, method, *args, **kwargs):
        if method == V1ALPHA_PATH:
            method = self._path
        return self._channel.stream_stream(method, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._channel, name)


def describe(pool, service_name):
    service = pool.FindServiceByName(service_name)
    return {
        "methods": [
            {
                "name": m.name,
                "input": m.input_type.full_name,
                "output": m.output_type.full_name,
                "client_streaming": m.client_streaming,
                "server_streaming": m.server_streaming,
            }
            for m in service.methods
        ]
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--ca", required=True, help="CA certificate (PEM) to trust")
    parser.add_argument("--api", choices=["v1", "v1alpha"], required=True)
    parser.add_argument("--describe", action="append", default=[])
    args = parser.parse_args()

    with open(args.ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    with grpc.secure_channel(args.target, creds) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        path = V1_PATH if args.api == "v1" else V1ALPHA_PATH
        database = ProtoReflectionDescriptorDatabase(ReflectionPath(channel, path))
        pool = descriptor_pool.DescriptorPool(database)
        report = {"services": sorted(database.get_services()), "described": {}}
        for name in args.describe:
            try:
                report["described"][name] = describe(pool, name)
            except Exception as e:  # what a user of the tool would see
                report["described"][name] = {"error": f"{type(e).__name__}: {e}"}
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
