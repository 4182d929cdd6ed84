#!/bin/sh
# Entrypoint of the sensorhub image: runs `sensorhub "$@"`.
#
# Client commands (`sensor`, `readings`, `stats`) take their token from
# SENSORHUB_TOKEN. In compose the token is a file that the one-shot init
# service wrote into the certificates volume, so when SENSORHUB_TOKEN is unset
# and SENSORHUB_TOKEN_FILE names a file, the first line of that file that is
# neither blank nor a comment becomes SENSORHUB_TOKEN. The server reads its
# accepted tokens itself (SENSORHUB_TOKENS_FILE).
set -eu

if [ -z "${SENSORHUB_TOKEN:-}" ] && [ -n "${SENSORHUB_TOKEN_FILE:-}" ]; then
    if [ ! -r "$SENSORHUB_TOKEN_FILE" ]; then
        echo "sensorhub-entrypoint: cannot read SENSORHUB_TOKEN_FILE=$SENSORHUB_TOKEN_FILE" >&2
        exit 64
    fi
    token=$(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$SENSORHUB_TOKEN_FILE" | head -n 1 | tr -d '[:space:]')
    if [ -z "$token" ]; then
        echo "sensorhub-entrypoint: no token in $SENSORHUB_TOKEN_FILE" >&2
        exit 64
    fi
    SENSORHUB_TOKEN=$token
    export SENSORHUB_TOKEN
fi

# The `scale` profile's replicas: the database URL (with its password) is a
# file sensorhub-init wrote, so it stays out of compose.yaml and `ps`.
if [ -z "${SENSORHUB_DATABASE_URL:-}" ] && [ -n "${SENSORHUB_DATABASE_URL_FILE:-}" ]; then
    if [ ! -r "$SENSORHUB_DATABASE_URL_FILE" ]; then
        echo "sensorhub-entrypoint: cannot read SENSORHUB_DATABASE_URL_FILE=$SENSORHUB_DATABASE_URL_FILE" >&2
        exit 64
    fi
    SENSORHUB_DATABASE_URL=$(head -n 1 "$SENSORHUB_DATABASE_URL_FILE" | tr -d '[:space:]')
    export SENSORHUB_DATABASE_URL
fi

exec sensorhub "$@"
