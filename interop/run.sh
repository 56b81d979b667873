#!/usr/bin/env bash
# Runs the pika (Python) and amqplib (Node) interoperability checks against a broker.
# Usage: interop/run.sh amqp://guest:guest@127.0.0.1:5672/%2f
set -euo pipefail
url=${1:?usage: interop/run.sh AMQP_URL}
here=$(cd "$(dirname "$0")" && pwd)

if [ ! -x "$here/python/.venv/bin/python" ]; then
  python3 -m venv "$here/python/.venv"
fi
"$here/python/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python/requirements.txt"
(cd "$here/node" && npm ci --no-audit --no-fund --silent)

echo "--- pika"
"$here/python/.venv/bin/python" "$here/python/check_pika.py" --url "$url"
echo "--- amqplib"
node "$here/node/check_amqplib.js" "$url"
