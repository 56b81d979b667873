"""The connections and channels of real clients (pika): the lists, a connection's page
with its channels, a channel's page with its consumer, and closing a connection from the
UI with a reason the client is told. A connection's row is named as RabbitMQ names it,
"<client address> -> <broker address>", and its channels "<connection> (<number>)"."""

import contextlib
import re

import pika
import pytest
from playwright.sync_api import expect

from ui import (
    cell,
    confirm,
    expect_http_errors,
    expect_rows,
    fact,
    filter_list,
    login,
    open_route,
    path,
    row,
    screenshot,
    toast,
    unique,
    wait_until,
)

PIKA_PRODUCT = "Pika Python Client Library"
PREFETCH = 17


def connection_named(broker, given_name):
    """The API's name of the connection whose client gave it `given_name`."""
    names = []

    def found():
        names[:] = [c["name"] for c in broker.api("GET", "/api/connections") if c.get("user_provided_name") == given_name]
        return names

    wait_until(found, f"the connection {given_name} is listed")
    assert len(names) == 1, f"connections named {given_name}: {names}"
    return names[0]


def leaves_while_shown(page):
    """The client goes as the test ends, while its page is shown: the page's next
    refresh may find it gone (404), which the page says as "closed"."""
    expect_http_errors(page, 404)


@contextlib.contextmanager
def client(broker, given_name, prefetch=None, consume_from=None):
    """A pika connection named `given_name` with one channel (a prefetch and a consumer
    when asked); yields (connection, the API's name of the connection)."""
    with broker.connect(client_properties={"connection_name": given_name}) as connection:
        channel = connection.channel()
        if prefetch is not None:
            channel.basic_qos(prefetch_count=prefetch)
        if consume_from is not None:
            channel.queue_declare(consume_from)
            channel.basic_consume(consume_from, lambda *_: None, consumer_tag=f"ctag-{consume_from}")
        yield connection, connection_named(broker, given_name)


def test_a_named_connection_is_listed_with_its_user_and_client(page, broker):
    given_name = unique("orders-service")
    with client(broker, given_name) as (_, name):
        login(page, "guest", "guest")
        open_route(page, "#/connections")
        listed = row(page, name)
        expect(listed).to_be_visible()
        expect(cell(page, listed, "Name")).to_contain_text(name)
        expect(cell(page, listed, "Name").locator(".hint")).to_have_text(given_name)
        expect(cell(page, listed, "User")).to_have_text("guest")
        expect(cell(page, listed, "Virtual host")).to_have_text("/")
        expect(cell(page, listed, "State")).to_have_text("running")
        expect(cell(page, listed, "TLS")).to_have_text("no")
        expect(cell(page, listed, "Client")).to_have_text(re.compile(f"^{re.escape(PIKA_PRODUCT)} [\\d.]+$"))
        expect(cell(page, listed, "Channels")).to_have_text("1")
        screenshot(page, "connections")

        filter_list(page, name)
        expect_rows(page, [name])
        listed.get_by_role("link", name=name).click()
        expect(page).to_have_url(re.compile(re.escape(path("connections", name)) + "$"))
        expect(page.locator("main h1 code")).to_have_text(name)
        expect(page.locator("table.channels tbody tr")).to_have_count(1)
        leaves_while_shown(page)


def test_a_connection_page_shows_the_client_and_its_channels(page, broker):
    given_name = unique("billing-service")
    with client(broker, given_name, prefetch=PREFETCH) as (connection, name):
        connection.channel()  # a second channel
        login(page, "guest", "guest")
        open_route(page, path("connections", name))
        expect(page.locator("main h1 code")).to_have_text(name)
        expect(page).to_have_title(f"Connection {name} · Wharf")
        expect(fact(page, "User")).to_have_text("guest")
        expect(fact(page, "Virtual host")).to_have_text("/")
        expect(fact(page, "State")).to_have_text("running")
        expect(fact(page, "Client")).to_contain_text(PIKA_PRODUCT)
        expect(fact(page, "Name given by the client")).to_have_text(given_name)
        expect(fact(page, "Protocol")).to_have_text("AMQP 0-9-1")
        expect(fact(page, "Authentication")).to_have_text("PLAIN")
        expect(fact(page, "TLS")).to_have_text("no")
        expect(fact(page, "Channels")).to_have_text("2")

        channels = page.locator("table.channels tbody tr")
        expect(channels).to_have_count(2)
        first = channels.filter(has=page.get_by_role("link", name=f"{name} (1)", exact=True))
        expect(first.locator("td").nth(2)).to_have_text(str(PREFETCH))
        second = channels.filter(has=page.get_by_role("link", name=f"{name} (2)", exact=True))
        expect(second.locator("td").nth(2)).to_have_text("0")
        screenshot(page, "connection")

        first.get_by_role("link").click()
        expect(page).to_have_url(re.compile(re.escape(path("channels", f"{name} (1)")) + "$"))
        expect(fact(page, "Prefetch (per consumer)")).to_have_text(str(PREFETCH))
        leaves_while_shown(page)


def test_the_channels_list_and_a_channel_page_with_its_consumer(page, broker):
    given_name = unique("shipping-service")
    queue = unique("shipments")
    with client(broker, given_name, prefetch=PREFETCH, consume_from=queue) as (_, name):
        channel_name = f"{name} (1)"
        login(page, "guest", "guest")
        open_route(page, "#/channels")
        listed = row(page, channel_name)
        expect(listed).to_be_visible()
        expect(cell(page, listed, "Prefetch")).to_have_text(str(PREFETCH))
        expect(cell(page, listed, "Consumers")).to_have_text("1")
        expect(cell(page, listed, "User")).to_have_text("guest")
        expect(cell(page, listed, "State")).to_have_text("running")
        expect(cell(page, listed, "Unacked")).to_have_text("0")
        screenshot(page, "channels")

        filter_list(page, name)
        expect_rows(page, [channel_name])
        listed.get_by_role("link", name=channel_name).click()
        expect(page).to_have_url(re.compile(re.escape(path("channels", channel_name)) + "$"))
        expect(page.locator("main h1 code")).to_have_text(channel_name)
        expect(fact(page, "Connection")).to_have_text(name)
        expect(fact(page, "Prefetch (per consumer)")).to_have_text(str(PREFETCH))
        expect(fact(page, "Mode")).to_have_text("plain")
        consumer = page.locator("table.consumers tbody tr")
        expect(consumer).to_have_count(1)
        expect(consumer.locator("td")).to_have_text([queue, f"ctag-{queue}", "yes", str(PREFETCH), ""])
        screenshot(page, "channel")

        consumer.get_by_role("link", name=queue).click()
        expect(page).to_have_url(re.compile(re.escape(path("queues", "/", queue)) + "$"))
        expect(fact(page, "Consumers")).to_have_text("1")


def test_closing_a_connection_tells_the_client_the_reason(page, broker):
    given_name = unique("doomed-service")
    reason = f"maintenance {unique('window')}"
    with client(broker, given_name) as (connection, name):
        login(page, "guest", "guest")
        open_route(page, path("connections", name))
        expect(fact(page, "Name given by the client")).to_have_text(given_name)

        close = page.locator("form.close-connection")
        close.locator("input[name=reason]").fill(reason)
        close.get_by_role("button", name="Close connection").click()
        expect(page.locator("dialog.confirm")).to_contain_text(name)
        confirm(page, "Close")
        expect(page).to_have_url(re.compile(r"#/connections$"))
        expect(toast(page)).to_contain_text("Connection closed.")

        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            connection.process_data_events(time_limit=5)
        assert closed.value.reply_code == 320
        assert reason in closed.value.reply_text
    wait_until(lambda: all(c["name"] != name for c in broker.api("GET", "/api/connections")), "the connection is gone")
    expect(page.locator("table.list")).to_be_visible()
    expect(row(page, name)).to_have_count(0)

    # Its page, opened again, says it is closed and offers nothing to do.
    expect_http_errors(page, 404)
    open_route(page, path("connections", name))
    expect(page.locator("main .alarm")).to_contain_text("is closed")
    expect(page.locator("form.close-connection")).to_be_hidden()
    expect(page.locator("table.channels")).to_have_count(0)
