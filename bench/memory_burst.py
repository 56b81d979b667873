#!/usr/bin/env python3
"""A burst of large messages against the memory alarm (issue 13, item 4): N connections
each publish one large persistent message at the same moment to one queue; the queue is
then purged and every client goes away. Prints the broker's RSS, sampled every 100 ms,
at its peak and once idle, and whether a new publisher gets through afterwards (a
memory alarm that never clears blocks it for good).

    python3 bench/memory_burst.py --port 5672 --pid PID [--connections 20] [--mib 100]

Works against any AMQP 0-9-1 broker (for RabbitMQ, the PID of its beam.smp). Start the
broker with a high watermark below the burst (Wharf: --vm-memory-high-watermark-bytes,
RabbitMQ: vm_memory_high_watermark.absolute).
"""

import argparse
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from footprint import connect, expect, frame, method, read_frame, rss_kb, shortstr  # noqa: E402

QUEUE = "memory-burst"


def publish(sock, body_size, frame_max=131072):
    """basic.publish of a persistent message of body_size bytes to QUEUE."""
    sock.sendall(method(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr(QUEUE) + b"\x00"))
    # content header: class 60, weight 0, body size, flags (delivery-mode), delivery-mode 2
    sock.sendall(frame(2, 1, struct.pack(">HHQH", 60, 0, body_size, 0x1000) + b"\x02"))
    chunk = b"x" * (frame_max - 8)
    left = body_size
    while left > 0:
        n = min(left, len(chunk))
        sock.sendall(frame(3, 1, chunk[:n]))
        left -= n


def confirmed_publish(port, body_size, start, done, timeout):
    try:
        sock = connect(port)
        sock.settimeout(timeout)
        sock.sendall(method(1, 85, 10, b"\x00"))  # confirm.select
        expect(sock, 85, 11)
        start.wait()
        publish(sock, body_size)
        while True:
            kind, payload = read_method(sock)
            if payload[:4] in (struct.pack(">HH", 60, 80), struct.pack(">HH", 60, 120)):
                done.append(payload[:4] == struct.pack(">HH", 60, 80))
                break
        sock.close()
    except (OSError, RuntimeError) as error:
        done.append(f"failed: {error}")


def read_method(sock):
    while True:
        kind, payload = read_frame(sock)
        if kind == 1:
            return kind, payload


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()

    admin = connect(args.port)
    # queue.declare durable
    admin.sendall(method(1, 50, 10, struct.pack(">H", 0) + shortstr(QUEUE) + b"\x02" + struct.pack(">I", 0)))
    expect(admin, 50, 11)
    before = rss_kb(args.pid)

    start = threading.Event()
    done = []
    threads = [threading.Thread(target=confirmed_publish,
                                args=(args.port, args.mib << 20, start, done, args.timeout))
               for _ in range(args.connections)]
    for t in threads:
        t.start()
    time.sleep(1)
    peak = before
    began = time.time()
    start.set()
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_kb(args.pid))
        time.sleep(0.1)
    burst_seconds = time.time() - began
    acks = sum(1 for d in done if d is True)
    print(f"{args.connections} x {args.mib} MiB: {acks} confirmed, {len(done) - acks} not "
          f"({[d for d in done if d is not True][:3]}), in {burst_seconds:.1f} s")

    admin.sendall(method(1, 50, 30, struct.pack(">H", 0) + shortstr(QUEUE) + b"\x00"))  # purge
    expect(admin, 50, 31)
    admin.close()
    for _ in range(50):
        peak = max(peak, rss_kb(args.pid))
        time.sleep(0.1)
    idle = rss_kb(args.pid)
    time.sleep(5)
    idle_later = rss_kb(args.pid)

    # A new publisher after the burst: blocked for good if the alarm never clears.
    got_through = []
    go = threading.Event()
    go.set()
    late = threading.Thread(target=confirmed_publish, args=(args.port, 1024, go, got_through, 10))
    late.start()
    late.join()
    print(f"RSS: before {before / 1024:.0f} MB, peak {peak / 1024:.0f} MB, idle after the purge "
          f"{idle / 1024:.0f} MB, 5 s later {idle_later / 1024:.0f} MB; a new publisher: "
          f"{'confirmed' if got_through == [True] else got_through}")


if __name__ == "__main__":
    main()
