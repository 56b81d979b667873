#!/usr/bin/env python3
"""Broker memory per idle connection and per queue (issue 4 targets: under 30 KB per
connection, under 10 KB per queue). Works against any AMQP 0-9-1 broker given its port
and the PID whose RSS to read (for RabbitMQ, its beam.smp).

    python3 bench/footprint.py --port 5672 --pid PID [--connections 10000] [--queues 10000]

Each connection does the whole handshake (PLAIN guest/guest, vhost /) and opens channel 1,
then stays idle. Queues are declared non-durable, on one connection. RSS is read from
/proc after a pause, before and after; the difference is divided by the count.
Needs `ulimit -n` above the connection count (the script raises its own soft limit).
Memory freed by the first part is reused by the second: measure each on a fresh broker
(--queues 0, then --connections 0) for figures that do not flatter.
"""

import argparse
import resource
import socket
import struct
import time
from pathlib import Path


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def method(channel, class_id, method_id, args=b""):
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


def shortstr(s):
    b = s.encode()
    return struct.pack(">B", len(b)) + b


def longstr(b):
    return struct.pack(">I", len(b)) + b


def read_frame(sock):
    head = b""
    while len(head) < 7:
        chunk = sock.recv(7 - len(head))
        if not chunk:
            raise ConnectionError("closed by the broker")
        head += chunk
    kind, channel, size = struct.unpack(">BHI", head)
    body = b""
    while len(body) < size + 1:
        chunk = sock.recv(size + 1 - len(body))
        if not chunk:
            raise ConnectionError("closed by the broker")
        body += chunk
    return kind, body[:-1]


def expect(sock, class_id, method_id):
    while True:
        kind, payload = read_frame(sock)
        if kind != 1:
            continue
        got = struct.unpack(">HH", payload[:4])
        if got == (class_id, method_id):
            return payload[4:]
        raise RuntimeError(f"expected {class_id}.{method_id}, got {got[0]}.{got[1]}")


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    expect(sock, 10, 10)
    sock.sendall(method(0, 10, 11, struct.pack(">I", 0) + shortstr("PLAIN")
                        + longstr(b"\x00guest\x00guest") + shortstr("en_US")))
    tune = expect(sock, 10, 30)
    channel_max, frame_max, _ = struct.unpack(">HIH", tune[:8])
    sock.sendall(method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
    sock.sendall(method(0, 10, 40, shortstr("/") + shortstr("") + b"\x00"))
    expect(sock, 10, 41)
    sock.sendall(method(1, 20, 10, shortstr("")))
    expect(sock, 20, 11)
    return sock


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settle(pid):
    time.sleep(2)
    return rss_kb(pid)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--queues", type=int, default=10000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.connections + 1000), hard))

    if args.connections:
        measure_connections(args)
    if args.queues:
        measure_queues(args)


def measure_connections(args):
    before = settle(args.pid)
    sockets = [connect(args.port) for _ in range(args.connections)]
    after = settle(args.pid)
    per_connection = (after - before) / args.connections
    print(f"{args.connections} idle connections (channel 1 open): RSS {before / 1024:.1f} MB -> "
          f"{after / 1024:.1f} MB, {per_connection:.1f} KB each")
    for s in sockets:
        s.close()
    time.sleep(3)


def measure_queues(args):
    sock = connect(args.port)
    before = settle(args.pid)
    for i in range(args.queues):
        # queue.declare: reserved, name, flags (none), arguments (empty table)
        sock.sendall(method(1, 50, 10, struct.pack(">H", 0) + shortstr(f"footprint-{i}")
                            + b"\x00" + struct.pack(">I", 0)))
        expect(sock, 50, 11)
    after = settle(args.pid)
    print(f"{args.queues} queues: RSS {before / 1024:.1f} MB -> {after / 1024:.1f} MB, "
          f"{(after - before) / args.queues:.1f} KB each")
    for i in range(args.queues):
        sock.sendall(method(1, 50, 40, struct.pack(">H", 0) + shortstr(f"footprint-{i}") + b"\x00"))
        expect(sock, 50, 41)
    sock.close()


if __name__ == "__main__":
    main()
