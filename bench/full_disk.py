#!/usr/bin/env python3
"""What a broker does when its disk fills (issue 13): publishes persistent messages one at
a time, each waiting for its confirm (5 s at most), and counts what came back: acks,
nacks, timeouts (a blocked publisher), and a connection closed under it. Then, on a
fresh connection, the queue's depth.

    python3 bench/full_disk.py --port 5672 [--messages 2000] [--size 10000]

Run it against a broker whose data directory is on a small file system nearly full
(a tmpfs: `mount -t tmpfs -o size=64m tmpfs /mnt/small`, then a filler file), with the
disk alarm's limit at its lowest (Wharf: --disk-free-limit 1; RabbitMQ:
disk_free_limit.absolute = 1), so that the disk fills rather than the alarm stopping
publishers first. Works against any AMQP 0-9-1 broker.
"""

import argparse
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from footprint import connect, expect, frame, method, read_frame, shortstr  # noqa: E402

QUEUE = "full-disk"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=10000)
    args = parser.parse_args()

    sock = connect(args.port)
    sock.sendall(method(1, 50, 10, struct.pack(">H", 0) + shortstr(QUEUE) + b"\x02" + struct.pack(">I", 0)))
    expect(sock, 50, 11)
    sock.sendall(method(1, 85, 10, b"\x00"))
    expect(sock, 85, 11)
    sock.settimeout(5)
    counts = {"ack": 0, "nack": 0, "timeout": 0, "closed": None}
    body = b"x" * args.size
    for i in range(args.messages):
        try:
            sock.sendall(method(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr(QUEUE) + b"\x00"))
            sock.sendall(frame(2, 1, struct.pack(">HHQH", 60, 0, len(body), 0x1000) + b"\x02"))
            sock.sendall(frame(3, 1, body))
            while True:
                kind, payload = read_frame(sock)
                if kind != 1:
                    continue
                ids = struct.unpack(">HH", payload[:4])
                if ids == (60, 80):
                    counts["ack"] += 1
                    break
                if ids == (60, 120):
                    counts["nack"] += 1
                    break
                if ids in ((10, 50), (20, 40)):
                    code = struct.unpack(">H", payload[4:6])[0]
                    text = payload[7:7 + payload[6]].decode(errors="replace")
                    counts["closed"] = f"after {i} publishes: {code} {text}"
                    raise ConnectionError
        except socket.timeout:
            counts["timeout"] += 1
            break
        except (ConnectionError, OSError) as error:
            counts["closed"] = counts["closed"] or f"after {i} publishes: {error!r}"
            break
    print(f"published one at a time: {counts['ack']} acked, {counts['nack']} nacked, "
          f"{counts['timeout']} timed out (blocked), connection closed: {counts['closed']}")
    try:
        check = connect(args.port)
        check.settimeout(10)
        check.sendall(method(1, 50, 10, struct.pack(">H", 0) + shortstr(QUEUE) + b"\x01" + struct.pack(">I", 0)))
        ok = expect(check, 50, 11)
        name_len = ok[0]
        depth = struct.unpack(">I", ok[1 + name_len:5 + name_len])[0]
        print(f"queue depth afterwards: {depth}")
    except (OSError, RuntimeError) as error:
        print(f"queue depth afterwards: cannot tell ({error!r})")


if __name__ == "__main__":
    main()
