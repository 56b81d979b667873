"""The overview: the broker's totals, its listeners, and the banner when the broker goes
away and comes back."""

import pytest
from playwright.sync_api import expect

from ui import expect_unreachable, login, screenshot
from wharf import running_broker

QUEUES = 3
MESSAGES_PER_QUEUE = 4


@pytest.fixture
def broker(wharf_binary):
    """A broker for each test: the tiles count everything in it, and one test restarts it."""
    with running_broker(wharf_binary) as broker:
        yield broker


def tile(page, total):
    return page.locator(f".tile[data-total={total}] b")


def test_tiles_count_what_a_client_made(page, broker):
    with broker.connect() as connection:
        channel = connection.channel()
        for i in range(QUEUES):
            channel.queue_declare(f"overview-{i}")
            for n in range(MESSAGES_PER_QUEUE):
                channel.basic_publish("", f"overview-{i}", f"message {n}".encode())

        login(page, "guest", "guest")
        expect(tile(page, "messages_ready")).to_have_text(str(QUEUES * MESSAGES_PER_QUEUE))
        expect(tile(page, "messages")).to_have_text(str(QUEUES * MESSAGES_PER_QUEUE))
        expect(tile(page, "messages_unacknowledged")).to_have_text("0")
        expect(tile(page, "queues")).to_have_text(str(QUEUES))
        expect(tile(page, "connections")).to_have_text("1")
        expect(tile(page, "channels")).to_have_text("1")
        screenshot(page, "overview-totals")


def test_listeners_are_amqp_and_http(page, broker):
    login(page, "guest", "guest")
    listeners = page.locator("table.listeners tbody tr")
    expect(listeners).to_have_count(2)
    for protocol, port in (("amqp", broker.amqp_port), ("http", broker.http_port)):
        listener = listeners.filter(has=page.locator("td:first-child", has_text=protocol))
        expect(listener.locator("td")).to_have_text([protocol, "127.0.0.1", str(port)])


def test_the_ui_finds_the_broker_again_after_a_restart(page, broker):
    broker.declare_queue("/", "before-restart", durable=True)
    login(page, "guest", "guest")
    expect(tile(page, "queues")).to_have_text("1")
    expect_unreachable(page)

    broker.stop()
    banner = page.locator("#banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("cannot be reached")
    screenshot(page, "overview-broker-unreachable")

    broker.start()
    expect(banner).to_contain_text("answers again")
    broker.declare_queue("/", "after-restart", durable=True)
    expect(tile(page, "queues")).to_have_text("2")
    # Still logged in: the session's key outlives the restart in the data directory.
    expect(page.locator("#logout")).to_be_visible()
    expect(page.locator("form#login")).to_have_count(0)
    expect(page.locator("main [role=alert]:not([hidden])")).to_have_count(0)


def test_charts_draw_the_span_chosen_and_keep_it(page, broker):
    with broker.connect() as connection:
        channel = connection.channel()
        channel.queue_declare("charted")
        channel.basic_publish("", "charted", b"one")
        login(page, "guest", "guest")
        # Samples come every 5 s: once two are in, the chart draws lines.
        expect(page.locator("figure.chart path.series").first).to_be_attached(timeout=15_000)
        legend = page.locator("figure.chart").first.locator("li[data-series=Ready] b")
        expect(legend).to_have_text("1")

        span = page.locator("select.chart-range")
        expect(span).to_have_value("60")
        with page.expect_request(lambda r: "/api/overview?" in r.url and "lengths_age=600" in r.url):
            span.select_option("600")
        page.reload()
        expect(page.locator("select.chart-range")).to_have_value("600")
        with page.expect_request(lambda r: "/api/overview?" in r.url and "msg_rates_age=600" in r.url):
            page.locator("select.chart-range").select_option("60")
            page.locator("select.chart-range").select_option("600")
