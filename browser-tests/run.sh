#!/usr/bin/env bash
# Runs the browser tests of the web UI against a wharf binary, in headless Chromium.
# Usage: browser-tests/run.sh target/release/wharf [pytest arguments...]
# WHARF_UI_SCREENSHOTS=DIR saves screenshots there; WHARF_UI_TIMINGS=FILE gets the
# 10,000-queue timings as JSON.
set -euo pipefail
binary=${1:?usage: browser-tests/run.sh BINARY [pytest arguments...]}
shift
binary=$(realpath "$binary")
here=$(cd "$(dirname "$0")" && pwd)

if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"

cd "$here"
WHARF_BINARY="$binary" exec .venv/bin/python -m pytest -v "$@"
