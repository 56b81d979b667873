"""The queues list: depths, filtering by name or regex, sorting, paging, and declaring a
queue through its form. Each test names its queues with a prefix of its own and filters
the list by it, as the broker is shared by the module's tests. A row's data-id is
"<vhost>/<name>": "//name" for a queue in "/"."""

import re

from playwright.sync_api import expect

from ui import (
    cell,
    expect_http_errors,
    expect_rows,
    filter_list,
    login,
    open_route,
    path,
    row,
    rows,
    screenshot,
    sort_header,
    toast,
    unique,
)


def declare(broker, depths):
    """Declares queues over AMQP with `depths[name]` messages in each."""
    with broker.connect() as connection:
        channel = connection.channel()
        for name, depth in depths.items():
            channel.queue_declare(name)
            for n in range(depth):
                channel.basic_publish("", name, f"message {n}".encode())


def open_queues(page):
    login(page, "guest", "guest")
    open_route(page, "#/queues")
    expect(page.locator("table.list")).to_be_visible()


def test_a_queue_declared_over_amqp_shows_with_its_depth(page, broker):
    name = unique("depth")
    declare(broker, {name: 3})
    open_queues(page)
    filter_list(page, name)
    queue = row(page, f"//{name}")
    expect(queue).to_be_visible()
    expect(cell(page, queue, "Name")).to_have_text(name)
    expect(cell(page, queue, "Virtual host")).to_have_text("/")
    expect(cell(page, queue, "Ready")).to_have_text("3")
    expect(cell(page, queue, "Unacked")).to_have_text("0")
    expect(cell(page, queue, "Total")).to_have_text("3")
    screenshot(page, "queues")


def test_filter_by_name_and_by_regex(page, broker):
    tag = unique("filter")
    declare(broker, {f"{tag}-alpha": 0, f"{tag}-beta": 0, f"{tag}-gamma": 0})
    open_queues(page)

    filter_list(page, f"{tag}-beta")
    expect_rows(page, [f"//{tag}-beta"])
    expect(page.locator(".summary")).to_have_text(re.compile(r"^1 of [\d,]+ in all$"))

    filter_list(page, f"{tag}-(alpha|gamma)$")
    expect(rows(page)).to_have_count(0)
    expect(page.locator("table.list tbody td.empty")).to_have_text("No names match the filter.")

    filter_list(page, f"{tag}-(alpha|gamma)$", regex=True)
    expect_rows(page, [f"//{tag}-alpha", f"//{tag}-gamma"])
    # The list's settings are in the address: a reload shows the same rows.
    page.reload()
    expect(page.locator("input[name=filter]")).to_have_value(f"{tag}-(alpha|gamma)$")
    expect(page.locator("input[name=use_regex]")).to_be_checked()
    expect_rows(page, [f"//{tag}-alpha", f"//{tag}-gamma"])


def test_an_invalid_regex_is_said_so(page, broker):
    open_queues(page)
    expect_http_errors(page, 400)
    filter_list(page, "(", regex=True)
    problem = page.locator("section.paged [role=alert]")
    expect(problem).to_be_visible()
    expect(problem).not_to_have_text(re.compile(r"^\s*$|^\s*[{\[]|^HTTP \d+"))
    screenshot(page, "queues-invalid-regex")
    # A valid filter again clears the error.
    filter_list(page, "(x)?", regex=True)
    expect(problem).to_be_hidden()


def test_sort_by_a_column(page, broker):
    tag = unique("sort")
    declare(broker, {f"{tag}-a": 3, f"{tag}-b": 1, f"{tag}-c": 2})
    open_queues(page)
    filter_list(page, tag)
    expect_rows(page, [f"//{tag}-a", f"//{tag}-b", f"//{tag}-c"])
    expect(sort_header(page, "Name")).to_have_attribute("aria-sort", "ascending")

    ready = sort_header(page, "Ready")
    ready.locator("button.sort").click()
    expect(ready).to_have_attribute("aria-sort", "descending")
    expect(sort_header(page, "Name")).to_have_attribute("aria-sort", "none")
    expect_rows(page, [f"//{tag}-a", f"//{tag}-c", f"//{tag}-b"])

    ready.locator("button.sort").click()
    expect(ready).to_have_attribute("aria-sort", "ascending")
    expect_rows(page, [f"//{tag}-b", f"//{tag}-c", f"//{tag}-a"])

    name = sort_header(page, "Name")
    name.locator("button.sort").click()
    expect(name).to_have_attribute("aria-sort", "ascending")
    expect_rows(page, [f"//{tag}-a", f"//{tag}-b", f"//{tag}-c"])
    name.locator("button.sort").click()
    expect(name).to_have_attribute("aria-sort", "descending")
    expect_rows(page, [f"//{tag}-c", f"//{tag}-b", f"//{tag}-a"])


def test_paging(page, broker):
    tag = unique("paging")
    names = [f"{tag}-{i:02d}" for i in range(25)]
    # One queue the filter leaves out, so the summary counts both ways whatever ran before.
    declare(broker, {**{name: 0 for name in names}, unique("not-paged"): 0})
    open_queues(page)
    filter_list(page, tag)
    expect(rows(page)).to_have_count(25)
    expect(page.locator(".pager .page-of")).to_have_text("Page 1 of 1")

    page.locator("select[name=page_size]").select_option("20")
    expect(page.locator(".pager .page-of")).to_have_text("Page 1 of 2")
    expect(page.locator(".summary")).to_have_text(re.compile(r"^25 of [\d,]+ in all$"))
    expect_rows(page, [f"//{name}" for name in names[:20]])
    previous = page.get_by_role("button", name="Previous page")
    following = page.get_by_role("button", name="Next page")
    expect(previous).to_be_disabled()

    following.click()
    expect(page.locator(".pager .page-of")).to_have_text("Page 2 of 2")
    expect_rows(page, [f"//{name}" for name in names[20:]])
    expect(following).to_be_disabled()
    screenshot(page, "queues-page-2")
    page.reload()
    expect(page.locator(".pager .page-of")).to_have_text("Page 2 of 2")
    expect_rows(page, [f"//{name}" for name in names[20:]])

    previous.click()
    expect(page.locator(".pager .page-of")).to_have_text("Page 1 of 2")
    expect(rows(page)).to_have_count(20)

    page.locator("select[name=page_size]").select_option("50")
    expect(page.locator(".pager .page-of")).to_have_text("Page 1 of 1")
    expect(rows(page)).to_have_count(25)

    filter_list(page, "")
    expect(page.locator(".summary")).to_have_text(re.compile(r"^[\d,]+ in all$"))


def fill_declare_form(page, name, argument=None):
    """Fills form.declare for a durable classic queue in "/"; `argument` is (key, value, type)."""
    form = page.locator("form.declare")
    form.locator("select[name=vhost]").select_option("/")
    form.locator("input[name=name]").fill(name)
    form.locator(".grid select[name=type]").select_option("classic")
    form.locator("select[name=durable]").select_option("true")
    form.locator("select[name=auto_delete]").select_option("false")
    if argument:
        key, value, kind = argument
        first = form.locator(".key-values .row").first
        first.locator("input.key").fill(key)
        first.locator("input.value").fill(value)
        first.locator("select").select_option(kind)
    return form


def test_declare_a_queue_with_an_argument(page, broker):
    name = unique("declared")
    open_queues(page)
    filter_list(page, name)
    expect(page.locator("table.list tbody td.empty")).to_be_visible()
    form = fill_declare_form(page, name, ("x-message-ttl", "60000", "number"))
    screenshot(page, "queues-declare-form")
    form.get_by_role("button", name="Add queue").click()
    expect(toast(page)).to_contain_text(f"Queue {name} added.")
    expect(form.locator("[role=alert]")).to_be_hidden()

    queue = broker.queue("/", name)
    assert queue is not None, "the queue was not declared"
    assert queue["arguments"] == {"x-message-ttl": 60000}
    assert queue["durable"] is True and queue["auto_delete"] is False
    expect(row(page, f"//{name}")).to_be_visible()
    expect(cell(page, row(page, f"//{name}"), "Features")).to_contain_text("MessageTTL")


def test_declaring_with_a_bad_argument_says_why(page, broker):
    name = unique("refused")
    open_queues(page)

    # Refused in the browser: not a number.
    form = fill_declare_form(page, name, ("x-message-ttl", "sixty", "number"))
    form.get_by_role("button", name="Add queue").click()
    expect(form.locator("[role=alert]")).to_have_text('"sixty" is not a number')

    # Refused by the broker: a TTL that is text.
    expect_http_errors(page, 400)
    form = fill_declare_form(page, name, ("x-message-ttl", "sixty", "string"))
    form.get_by_role("button", name="Add queue").click()
    expect(form.locator("[role=alert]")).to_contain_text("x-message-ttl")
    expect(form.locator("[role=alert]")).not_to_have_text(re.compile(r"^\s*[{\[]"))
    screenshot(page, "queues-declare-refused")
    assert broker.queue("/", name) is None


def test_a_filter_still_being_typed_stays_on_its_list(page, broker):
    name = unique("typing")
    declare(broker, {name: 0})
    open_queues(page)
    filter_list(page, name)
    link = row(page, f"//{name}").get_by_role("link", name=name)
    expect(link).to_be_visible()

    # Following a link within the UI's pause in typing (250 ms) before it filters.
    page.locator("input[name=filter]").fill(name[:-1])
    link.click()
    expect(page.locator("main h1 code")).to_have_text(name)
    page.wait_for_timeout(500)
    assert page.url.endswith(path("queues", "/", name)), f"the list's filter followed to the queue's page: {page.url}"
