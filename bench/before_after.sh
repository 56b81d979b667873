#!/bin/bash
# Two builds of the broker side by side: each round starts BEFORE, then AFTER, on a fresh
# data dir, runs `wharf perf` against it and prints what perf measured, the broker's CPU
# time and the bytes sent over loopback during the run (lo's tx bytes: both directions of
# every connection, so keep the machine otherwise quiet).
#
#   bench/before_after.sh BEFORE_BINARY AFTER_BINARY ROUNDS SECONDS PERF_FLAGS...
#   e.g. bench/before_after.sh /tmp/base/wharf target/release/wharf 3 15 \
#            -x 1 -y 1 -s 1024 --persistent --confirm 1000 -q 100
#
# AFTER_FLAGS: more flags for the AFTER broker only. POLL_URLS: URLs fetched (as guest)
# once a second while perf runs against AFTER, e.g. to measure with the management API
# and Prometheus being polled:
#   AFTER_FLAGS="--http-listen 127.0.0.1:15901 --prometheus-listen 127.0.0.1:15902" \
#   POLL_URLS="http://127.0.0.1:15901/api/overview http://127.0.0.1:15901/api/queues \
#              http://127.0.0.1:15902/metrics" bench/before_after.sh ...
set -euo pipefail
if [ $# -lt 4 ]; then
    sed -n '2,16p' "$0"
    exit 2
fi
after_flags=${AFTER_FLAGS:-}
poll_urls=${POLL_URLS:-}
before=$1 after=$2 rounds=$3 seconds=$4
shift 4
port=${PORT:-5901}
perf=$after
lo_tx() { awk '/^ *lo:/{print $10}' /proc/net/dev; }
for round in $(seq 1 "$rounds"); do
    for which in before after; do
        binary=$before extra=""
        if [ "$which" = after ]; then
            binary=$after extra=$after_flags
        fi
        data=$(mktemp -d)
        # shellcheck disable=SC2086 # extra is a list of flags
        "$binary" --amqp-listen "127.0.0.1:$port" --data-dir "$data" --log-level warn $extra \
            >"$data.log" 2>&1 &
        pid=$!
        for _ in $(seq 1 50); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null || { cat "$data.log"; exit 1; }
        poller=""
        if [ "$which" = after ] && [ -n "$poll_urls" ]; then
            (
                while true; do
                    for url in $poll_urls; do
                        curl -s -o /dev/null -u guest:guest "$url" || true
                    done
                    sleep 1
                done
            ) &
            poller=$!
        fi
        lo0=$(lo_tx)
        summary=$("$perf" perf --uri "amqp://guest:guest@127.0.0.1:$port/%2f" -z "$seconds" "$@" 2>&1 |
            awk '/^  (sent|confirmed|received) /{printf "%s %s msg/s  ", $1, $4}')
        lo1=$(lo_tx)
        [ -n "$poller" ] && kill "$poller" 2>/dev/null && wait "$poller" 2>/dev/null || true
        cpu=$(awk '{printf "%.1f", ($14 + $15) / 100}' "/proc/$pid/stat")
        echo "round $round $which: $summary| broker CPU ${cpu} s | loopback bytes $((lo1 - lo0))"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        rm -rf "$data" "$data.log"
    done
done
