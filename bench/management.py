#!/usr/bin/env python3
"""How fast the management API and Prometheus answer with many queues (issue 15).

Starts a release build of Wharf with its API and metrics on free ports, declares N
queues through the API, and times, over several requests each:
  GET /api/queues?page=1&page_size=100              (the UI's and KEDA's first page)
  GET /api/queues?page=1&page_size=100&sort=name    (sorted by name: the default order)
  GET /api/queues?page=1&page_size=100&sort=messages (a sort that renders every queue)
  GET /api/overview
  GET /metrics and GET /metrics/per-object
With --rabbitmq API_URL METRICS_URL it times the same requests against a running
RabbitMQ (its queues declared the same way, and deleted afterwards).

    python3 bench/management.py [--queues 10000] [--repeat 20]
    python3 bench/management.py --rabbitmq http://127.0.0.1:15672 http://127.0.0.1:15692
"""

import argparse
import base64
import http.client
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHARF = ROOT / "target" / "release" / "wharf"
AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One keep-alive HTTP connection."""

    def __init__(self, base):
        parsed = urllib.parse.urlparse(base)
        self.host, self.port = parsed.hostname, parsed.port
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=120)

    def request(self, method, path, body=None):
        headers = {"Authorization": AUTH}
        if body is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(body)
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        return response.status, data


def wait_http(base, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            status, _ = Client(base).request("GET", "/api/overview")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"{base} did not answer")


def declare(api, vhost, names):
    client = Client(api)
    for name in names:
        status, body = client.request("PUT", f"/api/queues/{vhost}/{name}", {"durable": False})
        if status not in (201, 204):
            sys.exit(f"declare {name}: {status} {body[:200]}")


def delete(api, vhost, names):
    client = Client(api)
    for name in names:
        client.request("DELETE", f"/api/queues/{vhost}/{name}")


def timed(base, path, repeat):
    """Milliseconds per request (a fresh connection is opened once, then kept)."""
    client = Client(base)
    status, body = client.request("GET", path)
    if status != 200:
        sys.exit(f"GET {path}: {status} {body[:200]}")
    times = []
    size = len(body)
    for _ in range(repeat):
        started = time.perf_counter()
        status, body = client.request("GET", path)
        times.append((time.perf_counter() - started) * 1000)
        if status != 200:
            sys.exit(f"GET {path}: {status}")
    return {"median_ms": statistics.median(times), "max_ms": max(times), "bytes": size}


def measure(name, api, metrics, queues, repeat):
    results = {}
    for label, base, path, count in [
        ("first page of queues", api, "/api/queues?page=1&page_size=100", repeat),
        ("first page, sorted by name", api, "/api/queues?page=1&page_size=100&sort=name", repeat),
        ("first page, sorted by messages", api,
         "/api/queues?page=1&page_size=100&sort=messages", max(3, repeat // 4)),
        ("overview", api, "/api/overview", repeat),
        ("/metrics", metrics, "/metrics", max(3, repeat // 4)),
        ("/metrics/per-object", metrics, "/metrics/per-object", max(3, repeat // 4)),
    ]:
        results[label] = timed(base, path, count)
        r = results[label]
        print(f"{name:9} {queues:6} queues  {label:32} median {r['median_ms']:8.1f} ms"
              f"  max {r['max_ms']:8.1f} ms  {r['bytes']:>10} bytes", flush=True)
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--queues", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rabbitmq", nargs=2, metavar=("API_URL", "METRICS_URL"))
    args = parser.parse_args()
    if not WHARF.exists():
        sys.exit("build it first: cargo build --release -p wharf")
    names = [f"bench-mgmt-{i:05}" for i in range(args.queues)]

    workdir = Path(tempfile.mkdtemp(prefix="wharf-mgmt-bench-"))
    amqp, http_port, metrics_port = free_port(), free_port(), free_port()
    api, metrics = f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{metrics_port}"
    log = open(workdir / "wharf.log", "w")
    broker = subprocess.Popen(
        [str(WHARF), "--amqp-listen", f"127.0.0.1:{amqp}", "--http-listen", f"127.0.0.1:{http_port}",
         "--prometheus-listen", f"127.0.0.1:{metrics_port}", "--data-dir", str(workdir / "data"),
         "--log-level", "warn"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(api)
        started = time.time()
        declare(api, "%2F", names)
        print(f"Wharf: declared {args.queues} queues through the API in {time.time() - started:.1f} s",
              flush=True)
        measure("Wharf", api, metrics, args.queues, args.repeat)
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)

    if args.rabbitmq:
        api, metrics = args.rabbitmq
        started = time.time()
        declare(api, "%2F", names)
        print(f"RabbitMQ: declared {args.queues} queues through the API in "
              f"{time.time() - started:.1f} s", flush=True)
        try:
            # RabbitMQ's queue statistics arrive every 5 s.
            time.sleep(6)
            measure("RabbitMQ", api, metrics, args.queues, args.repeat)
        finally:
            delete(api, "%2F", names)


if __name__ == "__main__":
    main()
