#!/usr/bin/env python3
"""Time from starting Wharf on an existing data directory to serving: the ready line, and
the first message got from a queue. With --cold, drops the page cache first (root only).

    python3 bench/restart_time.py DATA_DIR QUEUE [--cold] [--port 5801]

Needs pika (interop/run.sh makes a venv with it: interop/python/.venv/bin/python).
"""

import argparse
import atexit
import os
import subprocess
import time
from pathlib import Path

import pika

WHARF = Path(__file__).resolve().parent.parent / "target" / "release" / "wharf"

parser = argparse.ArgumentParser()
parser.add_argument("data_dir")
parser.add_argument("queue")
parser.add_argument("--cold", action="store_true")
parser.add_argument("--port", type=int, default=5801)
args = parser.parse_args()

if args.cold:
    subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True, check=True)
started = time.time()
broker = subprocess.Popen(
    [str(WHARF), "--amqp-listen", f"127.0.0.1:{args.port}", "--data-dir", args.data_dir],
    stdout=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"})
atexit.register(lambda: (broker.terminate(), broker.wait()))
for line in broker.stdout:
    if "wharf ready" in line:
        break
ready = time.time() - started
connection = pika.BlockingConnection(
    pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{args.port}/%2f"))
channel = connection.channel()
depth = channel.queue_declare(args.queue, passive=True).method.message_count
_, _, body = channel.basic_get(args.queue, auto_ack=False)
served = time.time() - started
rss_kb = int(Path(f"/proc/{broker.pid}/status").read_text().split("VmRSS:")[1].split()[0])
print(f"{'cold' if args.cold else 'warm'}: ready {ready:.2f} s, first message served "
      f"{served:.2f} s, {depth} messages, first body {len(body or b'')} B, RSS {rss_kb / 1024:.1f} MB")
connection.close()
