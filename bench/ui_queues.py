#!/usr/bin/env python3
"""How long the web UI takes to show the first page of the queue list with many queues
(issue 16), in headless Chromium, side by side with RabbitMQ's management UI.

Starts a release build of Wharf on free ports, declares N queues through the API, logs in
to the UI, then loads `#/queues` afresh R times (a full page load: the UI's files, the
login kept by the browser, the API's first page) and times each load until the table
shows its first page of rows. With --rabbitmq API_URL it does the same against a running
RabbitMQ's management UI (its queues declared the same way, and deleted afterwards).

Needs the browser tests' venv (Playwright) and Debian's chromium:
    bash browser-tests/run.sh target/release/wharf --co -q    # makes the venv once
    browser-tests/.venv/bin/python bench/ui_queues.py [--queues 10000] [--repeat 5]
    browser-tests/.venv/bin/python bench/ui_queues.py --rabbitmq http://127.0.0.1:15672
"""

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
import management  # noqa: E402  (the API helpers of bench/management.py)

CHROMIUM = "/usr/bin/chromium"

# How each UI logs in and shows its queue list's rows.
UIS = {
    "Wharf": {
        "username": "form#login input[name=username]",
        "password": "form#login input[name=password]",
        "submit": "form#login button[type=submit]",
        "logged_in": "nav.tabs",
        "rows": "table.list tbody tr[data-id]",
    },
    "RabbitMQ": {
        "username": "input[name=username]",
        "password": "input[name=password]",
        "submit": "input[type=submit]",
        "logged_in": "#tabs",
        "rows": "#main table.list tbody tr",
    },
}


def first_page_times(name, base, rows_expected, repeat):
    ui = UIS[name]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(base + "/")
        page.fill(ui["username"], "guest")
        page.fill(ui["password"], "guest")
        page.click(ui["submit"])
        page.wait_for_selector(ui["logged_in"], timeout=30000)
        times = []
        for _ in range(repeat):
            page.goto("about:blank")
            started = time.perf_counter()
            page.goto(base + "/#/queues")
            page.wait_for_function(
                "([selector, n]) => document.querySelectorAll(selector).length >= n",
                arg=[ui["rows"], rows_expected],
                timeout=60000,
            )
            times.append((time.perf_counter() - started) * 1000)
        browser.close()
    print(f"{name:9} first page of the queue list: median {statistics.median(times):7.1f} ms, "
          f"max {max(times):7.1f} ms over {repeat} loads", flush=True)
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--queues", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rabbitmq", metavar="API_URL")
    args = parser.parse_args()
    if not management.WHARF.exists():
        sys.exit("build it first: cargo build --release -p wharf")
    names = [f"bench-ui-{i:05}" for i in range(args.queues)]
    # Both UIs show 100 rows a page by default.
    rows = min(100, args.queues)

    workdir = Path(tempfile.mkdtemp(prefix="wharf-ui-bench-"))
    amqp, http_port = management.free_port(), management.free_port()
    api = f"http://127.0.0.1:{http_port}"
    log = open(workdir / "wharf.log", "w")
    broker = subprocess.Popen(
        [str(management.WHARF), "--amqp-listen", f"127.0.0.1:{amqp}", "--http-listen",
         f"127.0.0.1:{http_port}", "--prometheus-listen", "none", "--data-dir",
         str(workdir / "data"), "--log-level", "warn"], stdout=log, stderr=subprocess.STDOUT)
    try:
        management.wait_http(api)
        management.declare(api, "%2F", names)
        first_page_times("Wharf", api, rows, args.repeat)
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)

    if args.rabbitmq:
        management.declare(args.rabbitmq, "%2F", names)
        try:
            time.sleep(6)  # RabbitMQ's statistics arrive every 5 s
            first_page_times("RabbitMQ", args.rabbitmq, rows, args.repeat)
        finally:
            management.delete(args.rabbitmq, "%2F", names)


if __name__ == "__main__":
    main()
