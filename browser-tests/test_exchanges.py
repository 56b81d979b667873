"""The exchanges list and one exchange's page: the built-in exchanges and declared ones,
filtering, declaring through the form (and a refused declare), the bindings from an
exchange, publishing to it (routed or not), the default exchange, and deleting one. A
row's data-id is "<vhost>/<name>": "//amq.direct" in "/", and "//" for the default
exchange."""

import re

from playwright.sync_api import expect

from ui import (
    cell,
    delete_from_its_page,
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

BUILT_IN = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.headers": "headers",
    "amq.match": "headers",
    "amq.topic": "topic",
}


def open_exchanges(page):
    login(page, "guest", "guest")
    open_route(page, "#/exchanges")
    expect(page.locator("table.list")).to_be_visible()


def open_exchange(page, vhost, name):
    login(page, "guest", "guest")
    open_route(page, path("exchanges", vhost, name))
    expect(page.locator("main h1 code")).to_have_text(name)
    expect(page.locator("dl.facts")).to_be_visible()


def declare(broker, exchange, kind, bindings=()):
    """Declares an exchange over AMQP and binds queues to it: `bindings` are (queue, key)."""
    with broker.connect() as connection:
        channel = connection.channel()
        channel.exchange_declare(exchange, kind, durable=True)
        for queue, key in bindings:
            channel.queue_declare(queue)
            channel.queue_bind(queue, exchange, key)


def test_the_list_shows_the_built_in_exchanges_and_a_declared_one(page, broker):
    name = unique("declared-fanout")
    declare(broker, name, "fanout")
    open_exchanges(page)
    for built_in, kind in BUILT_IN.items():
        exchange = row(page, f"//{built_in}")
        expect(cell(page, exchange, "Name")).to_have_text(built_in)
        expect(cell(page, exchange, "Type")).to_have_text(kind)
        expect(cell(page, exchange, "Virtual host")).to_have_text("/")
    expect(cell(page, row(page, "//"), "Name")).to_have_text("(AMQP default)")
    expect(cell(page, row(page, f"//{name}"), "Type")).to_have_text("fanout")
    screenshot(page, "exchanges")

    filter_list(page, name)
    expect_rows(page, [f"//{name}"])
    expect(cell(page, row(page, f"//{name}"), "Features")).to_have_text("D")
    filter_list(page, "amq.t")
    expect_rows(page, ["//amq.topic"])


def test_declare_a_topic_exchange_with_an_alternate_exchange(page, broker):
    name = unique("declared-topic")
    open_exchanges(page)
    filter_list(page, name)
    expect(page.locator("table.list tbody td.empty")).to_be_visible()

    form = page.locator("form.declare")
    form.locator("select[name=vhost]").select_option("/")
    form.locator("input[name=name]").fill(name)
    form.locator(".grid select[name=type]").select_option("topic")
    form.get_by_role("button", name="Alternate exchange").click()
    argument = form.locator(".key-values .row").first
    expect(argument.locator("input.key")).to_have_value("alternate-exchange")
    argument.locator("input.value").fill("amq.fanout")
    form.get_by_role("button", name="Add exchange").click()
    expect(toast(page)).to_contain_text(f"Exchange {name} added.")
    expect(form.locator("[role=alert]")).to_be_hidden()

    exchange = broker.exchange("/", name)
    assert exchange is not None, "the exchange was not declared"
    assert exchange["type"] == "topic"
    assert exchange["arguments"] == {"alternate-exchange": "amq.fanout"}
    assert exchange["durable"] is True and exchange["auto_delete"] is False and exchange["internal"] is False
    declared = row(page, f"//{name}")
    expect(cell(page, declared, "Type")).to_have_text("topic")
    expect(cell(page, declared, "Features")).to_contain_text("alternate-exchange")


def test_an_exchange_page_shows_its_facts_and_bindings(page, broker):
    tag = unique("routed")
    name, orders, audit = f"{tag}-exchange", f"{tag}-orders", f"{tag}-audit"
    declare(broker, name, "topic", [(orders, "orders.*")])
    broker.declare_queue("/", audit)
    open_exchanges(page)
    filter_list(page, name)
    row(page, f"//{name}").get_by_role("link", name=name).click()
    expect(page).to_have_url(re.compile(re.escape(path("exchanges", "/", name)) + "$"))
    expect(page.locator("main h1 code")).to_have_text(name)
    expect(page).to_have_title(f"Exchange {name} · Wharf")
    expect(fact(page, "Virtual host")).to_have_text("/")
    expect(fact(page, "Type")).to_have_text("topic")
    expect(fact(page, "Features")).to_have_text("D")

    bindings = page.locator("table.bindings tbody tr")
    expect(bindings).to_have_count(1)
    expect(bindings.first.locator("td").nth(0)).to_have_text(f"queue {orders}")
    expect(bindings.first.locator("td").nth(1)).to_have_text("orders.*")

    bind = page.locator("form.bind")
    bind.locator("select[name=destination_type]").select_option("queue")
    bind.locator("input[name=destination]").fill(audit)
    bind.locator("input[name=routing_key]").fill("audit.#")
    bind.get_by_role("button", name="Bind").click()
    expect(toast(page)).to_contain_text("Binding added.")
    added = bindings.filter(has_text=audit)
    expect(added).to_have_count(1)
    expect(added.locator("td").nth(1)).to_have_text("audit.#")
    expect(bindings).to_have_count(2)
    screenshot(page, "exchange")

    outgoing = broker.api("GET", f"/api/exchanges/%2F/{name}/bindings/source")
    assert sorted((b["destination"], b["routing_key"]) for b in outgoing) == [(audit, "audit.#"), (orders, "orders.*")]
    # The link in the row leads to the queue.
    added.get_by_role("link", name=audit).click()
    expect(page).to_have_url(re.compile(re.escape(path("queues", "/", audit)) + "$"))
    expect(page.locator("main h1 code")).to_have_text(audit)


def test_publish_routed_and_not_routed(page, broker):
    tag = unique("published")
    name, queue = f"{tag}-exchange", f"{tag}-queue"
    declare(broker, name, "direct", [(queue, "to-queue")])
    open_exchange(page, "/", name)

    form = page.locator("form.publish")
    form.locator("input[name=routing_key]").fill("to-queue")
    header = form.locator(".key-values .row").first
    header.locator("input.key").fill("x-origin")
    header.locator("input.value").fill("browser-test")
    form.locator("details.properties summary").click()
    form.locator("input[name=property_content_type]").fill("application/json")
    form.locator("textarea[name=payload]").fill('{"order": 1}')
    form.get_by_role("button", name="Publish").click()
    outcome = form.locator(".outcome")
    expect(outcome).to_have_text("Published: the message was routed.")
    expect(toast(page)).to_contain_text("Message published.")
    wait_until(lambda: broker.queue("/", queue)["messages"] == 1, "the message is in the queue")

    with broker.connect() as connection:
        method, properties, body = connection.channel().basic_get(queue, auto_ack=True)
    assert method is not None, "the queue had no message"
    assert body == b'{"order": 1}'
    assert method.exchange == name and method.routing_key == "to-queue"
    assert properties.headers == {"x-origin": "browser-test"}
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2

    form.locator("input[name=routing_key]").fill("to-nowhere")
    form.get_by_role("button", name="Publish").click()
    expect(outcome).to_contain_text("not routed")
    page.wait_for_timeout(300)  # the message would have reached the queue by now
    assert broker.queue("/", queue)["messages"] == 0, "the unroutable message reached the queue"


def test_the_default_exchange_opens_and_cannot_be_deleted(page, broker):
    open_exchanges(page)
    row(page, "//").get_by_role("link", name="(AMQP default)").click()
    expect(page).to_have_url(re.compile(re.escape(path("exchanges", "/", "amq.default")) + "$"))
    expect(page.locator("main h1 code")).to_have_text("(AMQP default)")
    expect(fact(page, "Type")).to_have_text("direct")
    expect(page.locator("main")).to_contain_text("The default exchange routes to the queue named by the routing key")
    expect(page.locator("form.publish")).to_be_visible()
    expect(page.locator("#delete")).to_have_count(0)
    expect(page.locator("form.bind")).to_have_count(0)

    # Nor can the other built-in ones.
    open_route(page, path("exchanges", "/", "amq.direct"))
    expect(page.locator("main h1 code")).to_have_text("amq.direct")
    expect(fact(page, "Type")).to_have_text("direct")
    expect(page.locator("#delete")).to_have_count(0)


def test_delete_returns_to_the_list(page, broker):
    name = unique("deleted")
    declare(broker, name, "fanout")
    open_exchange(page, "/", name)
    delete_from_its_page(page, "exchanges", f"Exchange {name} deleted.")
    expect(page.locator("main h1")).to_have_text("Exchanges")
    assert broker.exchange("/", name) is None


def test_a_refused_declare_says_why(page, broker):
    open_exchanges(page)
    form = page.locator("form.declare")
    problem = form.locator("[role=alert]")

    # The API's reason, as it gives it: amq.direct is a direct exchange.
    expect_http_errors(page, 400)
    form.locator("input[name=name]").fill("amq.direct")
    form.locator(".grid select[name=type]").select_option("fanout")
    form.get_by_role("button", name="Add exchange").click()
    expect(problem).to_contain_text("inequivalent arg 'type'")
    expect(problem).not_to_have_text(re.compile(r"^\s*[{\[]|^HTTP \d+"))
    screenshot(page, "exchanges-declare-refused")
    assert broker.exchange("/", "amq.direct")["type"] == "direct"

    # A name of the reserved "amq." prefix: RabbitMQ refuses it as access_refused.
    expect_http_errors(page, 401, 403)
    name = unique("amq.reserved")
    form.locator("input[name=name]").fill(name)
    form.get_by_role("button", name="Add exchange").click()
    expect(problem).to_be_visible()
    expect(problem).to_contain_text("amq.")
    assert broker.exchange("/", name) is None
    # A refusal of one request is not the end of the session.
    expect(page.locator("#logout")).to_be_visible()
    expect(page.locator("form#login")).to_have_count(0)

