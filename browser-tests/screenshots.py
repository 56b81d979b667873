#!/usr/bin/env python3
"""The screenshots in docs/ui/: the UI's main pages with a broker at work, so that the
charts and tables show something. Starts the given wharf, runs pika clients for a while
(a publisher with confirms at ~200 msg/s, a consumer acking a little slower, a backlog in
another queue, a policy, a second vhost and user), then logs in and photographs each page.

    browser-tests/.venv/bin/python browser-tests/screenshots.py target/release/wharf docs/ui

This is documentation, not a test: the browser tests check the pages (and save their own
screenshots with WHARF_UI_SCREENSHOTS).
"""

import os
import sys
import threading
import time

import pika
from playwright.sync_api import expect, sync_playwright

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ui import login, path  # noqa: E402
from wharf import running_broker  # noqa: E402

# How long the clients run before the pictures: enough samples (every 5 s) for the charts.
WARM_UP_S = 60


def publish(broker, stop):
    with broker.connect(client_properties={"connection_name": "orders-publisher"}) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        n = 0
        while not stop.is_set():
            properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")
            channel.basic_publish("orders", "eu", f'{{"order": {n}}}'.encode(), properties)
            n += 1
            time.sleep(0.005)


def consume(broker, stop):
    with broker.connect(client_properties={"connection_name": "orders-worker"}) as connection:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=50)

        def handle(ch, method, _properties, _body):
            time.sleep(0.006)
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume("orders.eu", handle, consumer_tag="worker-1")
        while not stop.is_set():
            connection.process_data_events(time_limit=0.5)


def set_up(broker):
    with broker.connect() as connection:
        channel = connection.channel()
        channel.exchange_declare("orders", "topic", durable=True)
        channel.queue_declare("orders.eu", durable=True)
        channel.queue_bind("orders.eu", "orders", "eu")
        channel.queue_declare("payments", durable=True, arguments={"x-message-ttl": 3_600_000})
        channel.queue_declare("audit", durable=True, arguments={"x-max-length": 100_000})
        for n in range(1200):
            channel.basic_publish("", "payments", f"payment {n}".encode())
        for name in ("emails", "invoices", "notifications"):
            channel.queue_declare(name, durable=True)
    broker.api("PUT", "/api/policies/%2F/audit-limits",
               {"pattern": "^audit", "definition": {"max-length": 100000, "overflow": "reject-publish"},
                "apply-to": "queues", "priority": 1})
    broker.add_vhost("staging")
    broker.add_user("grafana", "grafana-secret", "monitoring")
    broker.add_user("app", "app-secret", "management")
    broker.grant("app", "staging")


def main():
    binary, directory = sys.argv[1], sys.argv[2]
    os.makedirs(directory, exist_ok=True)
    with running_broker(os.path.abspath(binary)) as broker:
        set_up(broker)
        stop = threading.Event()
        clients = [threading.Thread(target=f, args=(broker, stop)) for f in (publish, consume)]
        for client in clients:
            client.start()
        try:
            time.sleep(WARM_UP_S)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(broker.http_url + "/")
                login(page, "guest", "guest")
                for name, route, ready in [
                    ("overview", "#/", "figure.chart path.series"),
                    ("queues", "#/queues", "table.list tbody tr[data-id]"),
                    ("queue", path("queues", "/", "orders.eu"), "figure.chart path.series"),
                    ("exchanges", "#/exchanges", "table.list tbody tr[data-id]"),
                    ("exchange", path("exchanges", "/", "orders"), "table.bindings"),
                    ("connections", "#/connections", "table.list tbody tr[data-id]"),
                    ("channels", "#/channels", "table.list tbody tr[data-id]"),
                    ("admin-users", "#/admin/users", "table.users"),
                    ("admin-policies", "#/admin/policies", "table.policies"),
                ]:
                    page.goto(broker.http_url + "/" + route)
                    expect(page.locator(ready).first).to_be_visible(timeout=15_000)
                    page.wait_for_timeout(500)
                    page.screenshot(path=os.path.join(directory, f"{name}.png"), full_page=True)
                    print(f"{directory}/{name}.png")
                page.goto(broker.http_url + "/#/connections")
                page.locator("table.list tbody a", has_text="orders-publisher").or_(
                    page.locator("table.list tbody tr", has_text="orders-publisher").locator("a")
                ).first.click()
                expect(page.locator("dl.facts")).to_be_visible()
                page.wait_for_timeout(500)
                page.screenshot(path=os.path.join(directory, "connection.png"), full_page=True)
                print(f"{directory}/connection.png")
                browser.close()
        finally:
            stop.set()
            for client in clients:
                client.join()


if __name__ == "__main__":
    main()
