#!/usr/bin/env bash
# Runs pika over TLS against a wharf binary: makes a CA, a server and a client certificate
# with openssl, starts the broker with an amqps listener (client certificates optional),
# adds the certificate's user with `wharf ctl`, then runs python/check_pika_tls.py.
# Usage: interop/run_tls.sh path/to/wharf   (after interop/run.sh made the venv)
set -euo pipefail
wharf=$(realpath "${1:?usage: interop/run_tls.sh path/to/wharf}")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
broker=""
cleanup() {
  if [ -n "$broker" ] && kill -0 "$broker" 2>/dev/null; then
    kill -TERM "$broker"
    wait "$broker" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
  -subj "/CN=wharf interop CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
  -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile server.ext -out server.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr \
  -subj "/CN=interop-cert-user" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' >client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile client.ext -out client.pem 2>/dev/null

port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
amqp_port=$(port)
amqps_port=$(port)
https_port=$(port)
mkdir data
# The certificate's user, without a password, set up before the first start.
"$wharf" --amqp-listen "127.0.0.1:$amqp_port" --http-listen none --prometheus-listen none --data-dir data >seed.log 2>&1 &
broker=$!
for _ in $(seq 100); do grep -q "wharf ready" seed.log && break; sleep 0.1; done
"$wharf" ctl --data-dir data add_user interop-cert-user --no-password
"$wharf" ctl --data-dir data set_permissions interop-cert-user '.*' '.*' '.*'
kill -TERM "$broker"
wait "$broker" || true

"$wharf" --amqp-listen "127.0.0.1:$amqp_port" --amqps-listen "127.0.0.1:$amqps_port" \
  --data-dir data --tls-cert server.pem --tls-key server.key --tls-ca ca.pem \
  --tls-client-certificates optional --http-listen none --prometheus-listen none \
  --https-listen "127.0.0.1:$https_port" \
  >wharf.log 2>&1 &
broker=$!
for _ in $(seq 100); do grep -q "wharf ready" wharf.log && break; sleep 0.1; done
grep -q "wharf ready" wharf.log || { echo "wharf did not start:"; cat wharf.log; exit 1; }
echo "--- pika over TLS"
"$here/python/.venv/bin/python" "$here/python/check_pika_tls.py" --port "$amqps_port" \
  --ca ca.pem --cert client.pem --key client.key --https-port "$https_port"
echo "--- the management API over HTTPS, with the broker's certificate"
overview=$(curl -sS --fail --cacert ca.pem -u guest:guest "https://localhost:$https_port/api/overview")
echo "$overview" | python3 -c 'import json, sys; o = json.load(sys.stdin); assert o["management_version"], o; print("HTTPS overview:", o["node"])'
