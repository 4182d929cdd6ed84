#!/bin/sh
# One-shot init of the compose stack: a CA, server and client certificates,
# a random token for the sensors and one for the profiler, written into the certificates volume (default /certs).
#
# Idempotent: certificates and token are made once and kept across
# `docker compose up` runs (remove the volume, `down -v`, to renew them).
# The server's tokens file is rewritten every run: the generated token, plus
# PYTHON_CLIENT_TOKEN when set (e.g. `sensor_token_abc`, the token the
# original Python clients send), so those clients can be pointed at the stack.
#
# Extra DNS names for the server certificate: CERT_NAMES (space-separated);
# localhost, 127.0.0.1, ::1 and grpc-server are always included.
set -eu

dir="${1:-/certs}"
mkdir -p "$dir"

if [ ! -s "$dir/server.pem" ] || [ ! -s "$dir/server.key" ] || [ ! -s "$dir/ca.pem" ]; then
    set --
    for name in ${CERT_NAMES:-sensorhub}; do
        set -- "$@" --name "$name"
    done
    sensorhub certs --out "$dir" "$@"
    echo "sensorhub-init: certificates written to $dir"
else
    echo "sensorhub-init: keeping the certificates in $dir"
fi

if [ ! -s "$dir/token" ]; then
    umask 077
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > "$dir/token.tmp"
    mv "$dir/token.tmp" "$dir/token"
    echo "sensorhub-init: new token written to $dir/token"
fi

# The profiler's own token (Alloy pulls CPU profiles with it): readable by
# the profiler alone; the server's file holds only its SHA-256.
if [ ! -s "$dir/profiler-token" ]; then
    umask 077
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > "$dir/profiler-token.tmp"
    mv "$dir/profiler-token.tmp" "$dir/profiler-token"
    echo "sensorhub-init: new profiler token written to $dir/profiler-token"
fi

# The `scale` profile's database password, and the URL the replicas use.
# The password file is read by the postgres image's own user (uid 999).
if [ ! -s "$dir/postgres-password" ]; then
    umask 077
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > "$dir/postgres-password.tmp"
    chown 999:999 "$dir/postgres-password.tmp" 2>/dev/null || chmod 0644 "$dir/postgres-password.tmp"
    mv "$dir/postgres-password.tmp" "$dir/postgres-password"
    echo "sensorhub-init: new database password written to $dir/postgres-password"
fi
umask 077
echo "postgres://sensorhub:$(cat "$dir/postgres-password")@postgres:5432/sensorhub?sslmode=disable" > "$dir/database-url.tmp"
mv "$dir/database-url.tmp" "$dir/database-url"

umask 077
{
    echo "# Written by sensorhub-init; rewritten on every start."
    cat "$dir/token"
    echo
    echo "# The profiler (Alloy), for /debug/pprof/profile"
    echo "sha256:$(tr -d '\n' < "$dir/profiler-token" | sha256sum | cut -d' ' -f1) name=profiler"
    if [ -n "${PYTHON_CLIENT_TOKEN:-}" ]; then
        echo "# PYTHON_CLIENT_TOKEN, for the original Python clients"
        echo "$PYTHON_CLIENT_TOKEN"
    fi
} > "$dir/tokens.tmp"
mv "$dir/tokens.tmp" "$dir/tokens"
echo "sensorhub-init: tokens file $dir/tokens ready"
