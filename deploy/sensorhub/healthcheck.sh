#!/bin/bash
# Docker HEALTHCHECK of `sensorhub serve`: healthy when GET /readyz on the
# HTTP listener answers 200. /readyz answers 503 while the server drains on
# SIGTERM, so a stopping container stops being "healthy" first.
#
# The port comes from SENSORHUB_HTTP (as the server reads it; default 9464).
# bash's /dev/tcp does the request, so the image needs no curl or wget.
set -euo pipefail

addr="${SENSORHUB_HTTP:-127.0.0.1:9464}"
port="${addr##*:}"
case "$port" in
    '' | *[!0-9]*)
        echo "sensorhub-healthcheck: no HTTP port in SENSORHUB_HTTP=$addr" >&2
        exit 1
        ;;
esac

exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
status_line=""
read -r -t 5 status_line <&3 || true
exec 3<&-

case "$status_line" in
    HTTP/1.?' 200'*) exit 0 ;;
    *)
        echo "sensorhub-healthcheck: /readyz answered: ${status_line:-nothing}" >&2
        exit 1
        ;;
esac
