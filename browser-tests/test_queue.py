"""One queue's page: its facts, publishing and getting messages, purge and delete, its
bindings and consumers, and names that are not plain (markup, slashes, unicode)."""

import re
import threading
import time

from playwright.sync_api import expect

from ui import (
    cell,
    confirm,
    delete_from_its_page,
    expect_http_errors,
    fact,
    filter_list,
    login,
    open_route,
    path,
    row,
    screenshot,
    toast,
    unique,
)

# A name that would run script if the UI put it into markup.
HOSTILE_NAME = "q </b><img src=x onerror=alert(1)> é/ü"


def open_queue(page, vhost, name):
    login(page, "guest", "guest")
    open_route(page, path("queues", vhost, name))
    expect(page.locator("main h1 code")).to_have_text(name)
    expect(page.locator("dl.facts")).to_be_visible()


def wait_until(condition, what, timeout_s=10):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.1)


def publish(broker, name, count):
    with broker.connect() as connection:
        channel = connection.channel()
        for n in range(count):
            channel.basic_publish("", name, f"message {n}".encode())


def test_the_list_links_to_the_queue_page(page, broker):
    name = unique("linked")
    broker.declare_queue("/", name)
    login(page, "guest", "guest")
    open_route(page, "#/queues")
    filter_list(page, name)
    row(page, f"//{name}").get_by_role("link", name=name).click()
    expect(page).to_have_url(re.compile(re.escape(path("queues", "/", name)) + "$"))
    expect(page.locator("main h1 code")).to_have_text(name)
    expect(fact(page, "Virtual host")).to_have_text("/")
    expect(fact(page, "Type")).to_have_text("classic")
    expect(fact(page, "Ready")).to_have_text("0")
    expect(page).to_have_title(f"Queue {name} · Wharf")
    screenshot(page, "queue")


def test_publish_then_get_the_message(page, broker):
    name = unique("messages")
    broker.declare_queue("/", name)
    payload = f"hello from the browser, {name}"
    open_queue(page, "/", name)

    publish_form = page.locator("form.publish")
    headers = publish_form.locator(".key-values .row").first
    headers.locator("input.key").fill("x-origin")
    headers.locator("input.value").fill("browser-test")
    publish_form.locator("details.properties summary").click()
    publish_form.locator("input[name=property_content_type]").fill("text/plain")
    publish_form.locator("input[name=property_correlation_id]").fill("corr-1")
    publish_form.locator("textarea[name=payload]").fill(payload)
    publish_form.get_by_role("button", name="Publish").click()
    expect(publish_form.locator(".outcome")).to_have_text("Published: the message was routed.")
    wait_until(lambda: broker.queue("/", name)["messages"] == 1, "the message is in the queue")

    get_form = page.locator(".get form")
    get_form.locator("select[name=ackmode]").select_option("ack_requeue_false")
    get_form.locator("input[name=count]").fill("1")
    get_form.get_by_role("button", name="Get messages").click()
    message = page.locator(".messages article.message")
    expect(message).to_have_count(1)
    expect(message.locator("pre.payload")).to_have_text(payload)
    expect(message.locator("table.headers")).to_contain_text("x-origin")
    expect(message.locator("table.headers")).to_contain_text("browser-test")
    properties = message.locator("table.facts-table").first
    expect(properties.locator("tr", has_text="content_type").locator("td")).to_have_text("text/plain")
    expect(properties.locator("tr", has_text="correlation_id").locator("td")).to_have_text("corr-1")
    expect(properties.locator("tr", has_text="Routing key").locator("td")).to_have_text(name)
    screenshot(page, "queue-get")
    # Taken with an ack: the queue is empty now.
    wait_until(lambda: broker.queue("/", name)["messages"] == 0, "the message is gone")


def test_purge_after_a_cancel(page, broker):
    name = unique("purged")
    broker.declare_queue("/", name)
    publish(broker, name, 3)
    open_queue(page, "/", name)
    expect(fact(page, "Ready")).to_have_text("3")

    page.locator("button#purge").click()
    dialog = page.locator("dialog.confirm")
    expect(dialog).to_contain_text(name)
    dialog.locator("button[value=cancel]").click()
    expect(dialog).to_have_count(0)
    assert broker.queue("/", name)["messages"] == 3, "a cancelled purge purged"

    page.locator("button#purge").click()
    confirm(page, "Purge")
    expect(toast(page)).to_contain_text(f"Queue {name} purged.")
    wait_until(lambda: broker.queue("/", name)["messages"] == 0, "the queue is empty")
    expect(fact(page, "Ready")).to_have_text("0")


def test_delete_returns_to_the_list(page, broker):
    name = unique("deleted")
    broker.declare_queue("/", name)
    open_queue(page, "/", name)
    delete_from_its_page(page, "queues", f"Queue {name} deleted.")
    expect(page.locator("main h1")).to_have_text("Queues")
    assert broker.queue("/", name) is None


def test_bind_and_unbind(page, broker):
    name, key = unique("bound"), unique("key")
    broker.declare_queue("/", name)
    open_queue(page, "/", name)
    bindings = page.locator("table.bindings tbody tr")
    expect(bindings).to_have_count(1)  # the default exchange's
    expect(bindings.first).to_contain_text("(default exchange)")

    bind = page.locator("form.bind")
    bind.locator("input[name=source]").fill("amq.direct")
    bind.locator("input[name=routing_key]").fill(key)
    bind.get_by_role("button", name="Bind").click()
    expect(toast(page)).to_contain_text("Binding added.")
    added = bindings.filter(has_text=key)
    expect(added).to_have_count(1)
    expect(added.locator("td").first).to_have_text("amq.direct")
    assert [b["routing_key"] for b in broker.queue_bindings("/", name) if b["source"] == "amq.direct"] == [key]
    screenshot(page, "queue-bindings")

    added.get_by_role("button", name="Unbind").click()
    confirm(page, "Unbind")
    expect(added).to_have_count(0)
    expect(bindings).to_have_count(1)
    assert [b for b in broker.queue_bindings("/", name) if b["source"] == "amq.direct"] == []


def test_a_consumer_shows_with_its_prefetch(page, broker):
    name = unique("consumed")
    broker.declare_queue("/", name)
    consuming = threading.Event()
    done = threading.Event()

    def consume():
        # pika's connections belong to one thread: this one keeps it answered.
        with broker.connect() as connection:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=10)
            channel.basic_consume(name, lambda *_: None, consumer_tag=f"ctag-{name}")
            consuming.set()
            while not done.is_set():
                connection.process_data_events(time_limit=0.1)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    try:
        assert consuming.wait(10), "the consumer did not start"
        open_queue(page, "/", name)
        consumers = page.locator("table.consumers")
        consumer_row = consumers.locator("tbody tr")
        expect(consumer_row).to_have_count(1)
        headings = [t.strip() for t in consumers.locator("thead th").all_inner_texts()]
        expect(consumer_row.locator("td").nth(headings.index("Prefetch"))).to_have_text("10")
        expect(consumer_row.locator("td").nth(headings.index("Consumer tag"))).to_have_text(f"ctag-{name}")
        expect(consumer_row.locator("td").nth(headings.index("Ack required"))).to_have_text("yes")
        expect(fact(page, "Consumers")).to_have_text("1")
        screenshot(page, "queue-consumers")
    finally:
        done.set()
        consumer.join(10)


def test_a_name_with_markup_slashes_and_unicode_is_text(page, broker):
    tag = unique("odd")
    name = f"{HOSTILE_NAME} {tag}"
    broker.declare_queue("/", name)
    login(page, "guest", "guest")
    open_route(page, "#/queues")
    filter_list(page, tag)
    link = row(page, f"//{name}").get_by_role("link")
    expect(link).to_have_text(name)
    expect(page.locator("main img")).to_have_count(0)
    screenshot(page, "queues-odd-name")

    link.click()
    expect(page).to_have_url(re.compile(re.escape(path("queues", "/", name)) + "$"))
    expect(page.locator("main h1 code")).to_have_text(name)
    expect(fact(page, "Virtual host")).to_have_text("/")
    expect(page.locator("main img")).to_have_count(0)

    # Its actions reach it too.
    publish(broker, name, 2)
    expect(fact(page, "Ready")).to_have_text("2")
    page.locator("button#purge").click()
    confirm(page, "Purge")
    wait_until(lambda: broker.queue("/", name)["messages"] == 0, "the odd queue is purged")
    screenshot(page, "queue-odd-name")


def test_a_vhost_with_a_slash_in_its_name(page, broker):
    tag = unique("slashed")
    vhost, name = f"team/{tag}", f"{tag}-queue"
    broker.add_vhost(vhost)
    broker.grant("guest", vhost)
    broker.declare_queue(vhost, name)
    login(page, "guest", "guest")
    open_route(page, "#/queues")
    filter_list(page, tag)
    queue_row = row(page, f"{vhost}/{name}")
    expect(cell(page, queue_row, "Virtual host")).to_have_text(vhost)

    # Narrowed to that vhost by the header's choice.
    page.locator("select#vhost").select_option(vhost)
    expect(page.locator("main h1")).to_have_text(f"Queues in {vhost}")
    filter_list(page, tag)
    expect(row(page, f"{vhost}/{name}")).to_be_visible()

    row(page, f"{vhost}/{name}").get_by_role("link", name=name).click()
    expect(page).to_have_url(re.compile(re.escape(path("queues", vhost, name)) + "$"))
    expect(fact(page, "Virtual host")).to_have_text(vhost)
    publish_form = page.locator("form.publish")
    publish_form.locator("textarea[name=payload]").fill("to a slashed vhost")
    publish_form.get_by_role("button", name="Publish").click()
    expect(publish_form.locator(".outcome")).to_have_text("Published: the message was routed.")
    wait_until(lambda: broker.queue(vhost, name)["messages"] == 1, "the message reached the queue")


def test_move_messages_to_another_queue(page, broker):
    tag = unique("moved")
    source, destination = f"{tag}-from", f"{tag}-to"
    broker.declare_queue("/", source)
    broker.declare_queue("/", destination)
    publish(broker, source, 30)
    open_queue(page, "/", source)
    expect(fact(page, "Ready")).to_have_text("30")

    move = page.locator("form.move")
    move.locator("input[name=destination]").fill(destination)
    move.get_by_role("button", name="Move messages").click()
    expect(toast(page)).to_contain_text(f"30 messages moved to {destination}.")
    expect(move.locator("[role=alert]")).to_be_hidden()
    wait_until(lambda: broker.queue("/", source)["messages"] == 0, "the source is empty")
    wait_until(lambda: broker.queue("/", destination)["messages"] == 30, "the destination holds the 30 messages")
    expect(fact(page, "Ready")).to_have_text("0")
    screenshot(page, "queue-moved")

    # In the order they were published.
    with broker.connect() as connection:
        channel = connection.channel()
        first = channel.basic_get(destination, auto_ack=True)[2]
    assert first == b"message 0"


def test_moving_to_a_queue_that_does_not_exist_says_so(page, broker):
    source, missing = unique("unmoved"), unique("missing")
    broker.declare_queue("/", source)
    publish(broker, source, 3)
    open_queue(page, "/", source)
    expect(fact(page, "Ready")).to_have_text("3")

    expect_http_errors(page, 404)
    move = page.locator("form.move")
    move.locator("input[name=destination]").fill(missing)
    move.get_by_role("button", name="Move messages").click()
    problem = move.locator("[role=alert]")
    expect(problem).to_be_visible()
    expect(problem).not_to_have_text(re.compile(r"^\s*[{\[]|^HTTP \d+"))
    # Which queue is missing: the one named in the form, not the one shown.
    expect(problem).to_contain_text(missing)
    expect(toast(page)).to_have_count(0)
    screenshot(page, "queue-move-refused")
    assert broker.queue("/", source)["messages"] == 3
    assert broker.queue("/", missing) is None
