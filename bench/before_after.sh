#!/bin/bash
# Two builds of the broker side by side: each round starts BEFORE, then AFTER, on a fresh
# data dir, runs `wharf perf` against it and prints what perf measured, the broker's CPU
# time and the bytes sent over loopback during the run (lo's tx bytes: both directions of
# every connection, so keep the machine otherwise quiet).
#
#   bench/before_after.sh BEFORE_BINARY AFTER_BINARY ROUNDS SECONDS PERF_FLAGS...
#   e.g. bench/before_after.sh /tmp/base/wharf target/release/wharf 3 15 \
#            -x 1 -y 1 -s 1024 --persistent --confirm 1000 -q 100
set -euo pipefail
if [ $# -lt 4 ]; then
    sed -n '2,9p' "$0"
    exit 2
fi
before=$1 after=$2 rounds=$3 seconds=$4
shift 4
port=${PORT:-5901}
perf=$after
lo_tx() { awk '/^ *lo:/{print $10}' /proc/net/dev; }
for round in $(seq 1 "$rounds"); do
    for which in before after; do
        binary=$before
        [ "$which" = after ] && binary=$after
        data=$(mktemp -d)
        "$binary" --amqp-listen "127.0.0.1:$port" --data-dir "$data" --log-level warn \
            >"$data.log" 2>&1 &
        pid=$!
        for _ in $(seq 1 50); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null || { cat "$data.log"; exit 1; }
        lo0=$(lo_tx)
        summary=$("$perf" perf --uri "amqp://guest:guest@127.0.0.1:$port/%2f" -z "$seconds" "$@" 2>&1 |
            awk '/^  (sent|confirmed|received) /{printf "%s %s msg/s  ", $1, $4}')
        lo1=$(lo_tx)
        cpu=$(awk '{printf "%.1f", ($14 + $15) / 100}' "/proc/$pid/stat")
        echo "round $round $which: $summary| broker CPU ${cpu} s | loopback bytes $((lo1 - lo0))"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        rm -rf "$data" "$data.log"
    done
done
