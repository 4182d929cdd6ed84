"""A webhook receiver for Alertmanager that a person can read.

Prints one line per alert of every notification it receives (so
`docker compose logs -f alert-log` is a live alert feed), and serves the
last notifications as plain text on GET /. GET /healthz answers "ok".
Standard library only: it runs in the stock python image.

    python alert_log.py --port 8080
"""

import argparse
import collections
import datetime
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEEP = 200
received = collections.deque(maxlen=KEEP)
lock = threading.Lock()


def describe(notification):
    """One line per alert: status, name, severity, labels, summary."""
    lines = []
    for alert in notification.get("alerts", []):
        labels = dict(alert.get("labels", {}))
        name = labels.pop("alertname", "?")
        severity = labels.pop("severity", "-")
        summary = alert.get("annotations", {}).get("summary", "")
        rest = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        status = alert.get("status", notification.get("status", "?")).upper()
        lines.append(f"{status:8} {name} severity={severity} {{{rest}}} {summary}".rstrip())
    return lines


class Handler(BaseHTTPRequestHandler):
    server_version = "alert-log/1"

    def _reply(self, code, body, content_type="text/plain; charset=utf-8"):
        data = body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/healthz":
            self._reply(200, "ok\n")
        elif self.path in ("/", "/alerts"):
            with lock:
                entries = list(received)
            if not entries:
                self._reply(200, "No notification from Alertmanager yet.\n")
                return
            out = [f"Last {len(entries)} notification(s) from Alertmanager, newest first:", ""]
            for at, lines in reversed(entries):
                out.append(at)
                out.extend("  " + line for line in lines)
            self._reply(200, "\n".join(out) + "\n")
        else:
            self._reply(404, "not found\n")

    def do_POST(self):
        if self.path not in ("/", "/alerts"):
            self._reply(404, "not found\n")
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            notification = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._reply(400, "not JSON\n")
            return
        at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        lines = describe(notification)
        with lock:
            received.append((at, lines))
        for line in lines:
            print(f"{at} {line}", flush=True)
        self._reply(200, "ok\n")

    def log_message(self, format, *args):
        # One line per alert is printed above; skip the access log.
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    # As PID 1 in a container nothing ends the process on SIGTERM unless it
    # says so itself.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"alert-log listening on {args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
