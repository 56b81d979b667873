"""The queues list with 10,000 queues, on a broker of this module's own: the time from
opening #/queues to its first page's rows, and of sorting, filtering and paging. The
timings are printed and written as JSON to $WHARF_UI_TIMINGS; they are not asserted
(machines are noisy), only that each page shows the right rows."""

import json
import os
import time

from playwright.sync_api import expect

from ui import filter_list, login, open_route, rows, screenshot, sort_header

QUEUES = 10_000
PAGE_SIZE = 100
# Queues given messages, so sorting by Ready puts them first in this order.
DEPTHS = {"many-01234": 30, "many-05000": 20, "many-09999": 10}
FILTER = "many-01"  # many-01000 to many-01999


def queue_name(i):
    return f"many-{i:05d}"


def ids(page):
    return rows(page).evaluate_all("rows => rows.map((r) => r.dataset.id)")


def wait_for_rows(page, count, first_id=None, page_of=None):
    """Waits, checking at each frame, for the list to show `count` rows (the first with
    data-id `first_id`) and the pager to read `page_of`."""
    page.wait_for_function(
        """([count, firstId, pageOf]) => {
            const shown = document.querySelectorAll("table.list tbody tr[data-id]");
            if (shown.length !== count) return false;
            if (firstId !== null && shown[0].dataset.id !== firstId) return false;
            const pager = document.querySelector(".pager .page-of");
            return pageOf === null || (pager && pager.textContent === pageOf);
        }""",
        arg=[count, first_id, page_of],
        polling="raf",
    )


def timed(timings, action, run):
    started = time.perf_counter()
    run()
    timings[action] = round((time.perf_counter() - started) * 1000)


def test_ten_thousand_queues(page, broker, capsys):
    started = time.perf_counter()
    with broker.connect() as connection:
        channel = connection.channel()
        for i in range(QUEUES):
            channel.queue_declare(queue_name(i))
        for name, depth in DEPTHS.items():
            for n in range(depth):
                channel.basic_publish("", name, f"message {n}".encode())
    declared_ms = round((time.perf_counter() - started) * 1000)
    timings = {}

    login(page, "guest", "guest")
    page.goto("about:blank")

    def first_page():
        open_route(page, "#/queues")
        wait_for_rows(page, PAGE_SIZE, "//many-00000", "Page 1 of 100")

    timed(timings, f"first page of {QUEUES} queues", first_page)
    assert ids(page) == [f"//{queue_name(i)}" for i in range(PAGE_SIZE)]
    expect(page.locator(".summary")).to_have_text("10,000 in all")
    screenshot(page, "queues-10k")

    def sort_by_ready():
        sort_header(page, "Ready").locator("button.sort").click()
        wait_for_rows(page, PAGE_SIZE, "//many-01234")

    timed(timings, "sort by Ready", sort_by_ready)
    assert ids(page)[:3] == [f"//{name}" for name in DEPTHS]
    expect(sort_header(page, "Ready")).to_have_attribute("aria-sort", "descending")

    def filter_by_name():
        filter_list(page, FILTER)
        wait_for_rows(page, PAGE_SIZE, "//many-01234", "Page 1 of 10")

    timed(timings, f"filter by name {FILTER!r} (with the UI's 250 ms typing pause)", filter_by_name)
    expect(page.locator(".summary")).to_have_text("1,000 of 10,000 in all")
    assert all(row_id.startswith(f"//{FILTER}") for row_id in ids(page))

    def second_page():
        page.get_by_role("button", name="Next page").click()
        wait_for_rows(page, PAGE_SIZE, None, "Page 2 of 10")

    timed(timings, "go to page 2", second_page)
    expected = broker.api(
        "GET",
        f"/api/queues?page=2&page_size={PAGE_SIZE}&sort=messages_ready&sort_reverse=true&name={FILTER}",
    )
    assert ids(page) == [f"{q['vhost']}/{q['name']}" for q in expected["items"]]

    def five_hundred_per_page():
        page.locator("select[name=page_size]").select_option("500")
        wait_for_rows(page, 500, "//many-01234", "Page 1 of 2")

    timed(timings, "500 per page", five_hundred_per_page)
    screenshot(page, "queues-10k-500")

    with capsys.disabled():
        print(f"\nUI timing: {QUEUES} queues declared over AMQP: {declared_ms} ms")
        for action, ms in timings.items():
            print(f"UI timing: {action}: {ms} ms")
    destination = os.environ.get("WHARF_UI_TIMINGS")
    if destination:
        with open(destination, "w") as out:
            json.dump({"queues": QUEUES, "declare_ms": declared_ms, "actions_ms": timings}, out, indent=2)
