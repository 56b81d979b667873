#!/bin/bash
# Publishing and consuming through a cluster node that does not hold the queue, against
# doing both through the node that does, side by side in one run: a 3-node cluster on
# loopback (release build), then rounds of `wharf perf` in turn: LOCAL (producer, queue
# and consumer on node 1), FORWARDED (producer on node 2; the queue and its consumer on
# node 1) and PUSHED (the consumer on node 2; the queue and its producer on node 1).
# Prints each run's summary as JSON, one line per run.
#
#   bench/cluster_forward.sh WHARF_BINARY ROUNDS SECONDS PERF_FLAGS...
#   e.g. bench/cluster_forward.sh target/release/wharf 3 10 -x 1 -y 1 -s 1024
#        bench/cluster_forward.sh target/release/wharf 3 10 -x 1 -y 1 -s 1024 \
#            --persistent --confirm 1000 -q 100
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '2,12p' "$0"
    exit 2
fi
binary=$1 rounds=$2 seconds=$3
shift 3
dir=$(mktemp -d)
head -c 32 /dev/urandom | base64 >"$dir/secret"
chmod 600 "$dir/secret"
base=${BASE_PORT:-6100}
seeds="127.0.0.1:$((base + 10)),127.0.0.1:$((base + 11)),127.0.0.1:$((base + 12))"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
for i in 0 1 2; do
    "$binary" --node-name "n$i" --data-dir "$dir/n$i" --log-level warn \
        --amqp-listen "127.0.0.1:$((base + i))" --amqps-listen none \
        --http-listen none --prometheus-listen none \
        --cluster-listen "127.0.0.1:$((base + 10 + i))" --cluster-seeds "$seeds" \
        --cluster-secret-file "$dir/secret" >"$dir/n$i.log" 2>&1 &
    pids+=($!)
done
for i in 0 1 2; do
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$((base + i))") 2>/dev/null; then break; fi
        sleep 0.2
    done
done
uri() { echo "amqp://guest:guest@127.0.0.1:$((base + $1))/%2f"; }
for round in $(seq 1 "$rounds"); do
    for path in local forwarded pushed; do
        producer=$(uri 0) consumer=$(uri 0)
        if [ "$path" = forwarded ]; then producer=$(uri 1); fi
        if [ "$path" = pushed ]; then consumer=$(uri 1); fi
        summary=$("$binary" perf --uri "$(uri 0)" --producer-uri "$producer" \
            --consumer-uri "$consumer" \
            --queue-prefix "bench-$path" -z "$seconds" --json "$@" 2>/dev/null)
        echo "{\"round\": $round, \"path\": \"$path\", \"summary\": $summary}"
    done
done
