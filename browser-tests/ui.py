"""What the tests do to the UI and see of it: logging in, the problems a page reports
(errors in its console, uncaught exceptions, failed requests, error answers) and which of
them a test expects, screenshots, and the pieces of the list and queue pages.
"""

import json
import os
import re
import time
import uuid
from urllib.parse import quote

from playwright.sync_api import expect

FAILED_LOAD = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")
NETWORK_FAILURE = re.compile(r"^Failed to load resource: net::")


def unique(prefix):
    """A name no other test uses, so tests sharing a broker never see each other's."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(condition, what, timeout_s=10):
    """Waits for the broker (asked through its API or a client) to get there."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.1)


class Watch:
    """Everything a page reported that may be a fault, and what the test said to expect."""

    def __init__(self):
        self.reports = []
        self.expected_statuses = set()
        self.network_failures_expected = False

    def attach(self, page):
        page.on("console", self._console)
        page.on("pageerror", lambda error: self._report("uncaught exception", str(error)))
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)
        page.on("dialog", self._dialog)

    def _report(self, kind, text, status=None):
        self.reports.append({"kind": kind, "text": text, "status": status})

    def _console(self, message):
        if message.type != "error":
            return
        url = (message.location or {}).get("url", "")
        failed = FAILED_LOAD.match(message.text)
        if failed:
            self._report("console", f"{message.text} ({url})", status=int(failed.group(1)))
        elif NETWORK_FAILURE.match(message.text):
            self._report("console network", f"{message.text} ({url})")
        else:
            self._report("console", f"{message.text} ({url})")

    def _request_failed(self, request):
        # Cancelled, not failed: the page was left (a test's goto) or the UI dropped a
        # request it no longer needs.
        if request.failure == "net::ERR_ABORTED":
            return
        self._report("request failed", f"{request.method} {request.url}: {request.failure}")

    def _response(self, response):
        if response.status >= 400:
            request = response.request
            self._report("http", f"{response.status} {request.method} {response.url}", status=response.status)

    def _dialog(self, dialog):
        # The UI never opens alert(): one is a sign of markup run from data (XSS).
        self._report("dialog", f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _excused(self, report):
        if report["status"] is not None and report["status"] in self.expected_statuses:
            return True
        if self.network_failures_expected and report["kind"] in ("console network", "request failed"):
            return True
        return False

    def unexpected(self):
        return [r for r in self.reports if not self._excused(r)]

    @staticmethod
    def describe(reports):
        return "\n".join(f"  {r['kind']}: {r['text']}" for r in reports)


_watches = {}


def watch(page):
    return _watches[id(page)]


def start_watching(page):
    _watches[id(page)] = Watch()
    _watches[id(page)].attach(page)


def stop_watching(page):
    _watches.pop(id(page), None)


def expect_http_errors(page, *statuses):
    """The test makes the UI meet these error answers on purpose: they, and the console
    line Chromium logs for each, are not faults."""
    watch(page).expected_statuses.update(statuses)


def expect_unreachable(page):
    """The test stops the broker: requests that find nothing listening are not faults."""
    watch(page).network_failures_expected = True


def screenshot(page, name):
    """Saves <WHARF_UI_SCREENSHOTS>/<name>.png when that variable names a directory."""
    directory = os.environ.get("WHARF_UI_SCREENSHOTS")
    if not directory:
        return
    os.makedirs(directory, exist_ok=True)
    # From the top, so the sticky header is at the top of the picture.
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=os.path.join(directory, f"{name}.png"), full_page=True)


# --- logging in


def submit_login(page, user, password):
    """Fills the login form and sends it, whatever the answer."""
    if not page.url.startswith("http"):
        page.goto("/")
    form = page.locator("form#login")
    form.locator("input[name=username]").fill(user)
    form.locator("input[name=password]").fill(password)
    form.get_by_role("button", name="Log in").click()


def login(page, user, password):
    """Logs in and waits for the shell (the header with its Log out button)."""
    submit_login(page, user, password)
    expect(page.locator("#logout")).to_be_visible()
    expect(page.locator("form#login")).to_have_count(0)


def storage(page):
    """localStorage and sessionStorage, as {"local": {...}, "session": {...}}."""
    return page.evaluate(
        """() => {
            const read = (area) => Object.fromEntries(
                Array.from({ length: area.length }, (_, i) => area.key(i)).map((k) => [k, area.getItem(k)]));
            return { local: read(localStorage), session: read(sessionStorage) };
        }"""
    )


def session_entry(page):
    text = storage(page)["local"].get("wharf.session")
    return json.loads(text) if text else None


# --- pages


def path(*segments):
    """A hash route with segments encoded as the UI's links are (encodeURIComponent)."""
    return "#/" + "/".join(quote(s, safe="!'()*") for s in segments)


def open_route(page, route):
    page.goto("/" + route)


def toast(page, kind="ok"):
    return page.locator(f"#toasts .toast.{kind}")


def confirm(page, action):
    """Answers the confirmation dialog with its `action` button."""
    dialog = page.locator("dialog.confirm")
    expect(dialog).to_be_visible()
    button = dialog.locator("button[value=confirm]")
    expect(button).to_have_text(action)
    button.click()
    expect(dialog).to_have_count(0)


def delete_from_its_page(page, list_route, announced):
    """Deletes the object whose page is open (its Delete button, then the confirmation)
    and expects the list at `list_route` (e.g. "queues") back, with `announced` in a
    toast."""
    page.locator("button#delete").click()
    confirm(page, "Delete")
    expect(page).to_have_url(re.compile(r"#/" + re.escape(list_route) + "$"))
    expect(toast(page).last).to_contain_text(announced)


def fact(page, label):
    """The value shown for `label` in the page's facts (dl.facts)."""
    return page.locator(f"xpath=//dl[contains(@class,'facts')]/dt[normalize-space()='{label}']/following-sibling::dd[1]")


# --- the paged lists (table.list)


def css_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rows(page):
    return page.locator("table.list tbody tr[data-id]")


def row(page, row_id):
    """A list's row by its data-id (for a queue: "<vhost>/<name>")."""
    return page.locator(f"table.list tbody tr[data-id={css_string(row_id)}]")


def column_index(page, label):
    labels = [t.strip() for t in page.locator("table.list thead th").all_inner_texts()]
    return labels.index(label)


def cell(page, row_locator, label):
    return row_locator.locator("td").nth(column_index(page, label))


def sort_header(page, label):
    """The column heading whose sort button reads `label` (its aria-sort tells the order)."""
    button = page.locator("button.sort").filter(has_text=re.compile(f"^{re.escape(label)}$"))
    return page.locator("table.list thead th").filter(has=button)


def filter_list(page, text, regex=None):
    """Sets the list's filter and waits until the list has taken it (the UI waits for a
    pause in typing), so that a click after it is on the filtered list's page."""
    if regex is not None:
        page.locator("input[name=use_regex]").set_checked(regex)
    page.locator("input[name=filter]").fill(text)
    page.wait_for_function(
        """([text, regex]) => {
            const search = new URLSearchParams(location.hash.split("?")[1] || "");
            return (search.get("name") || "") === text
                && (regex === null || (search.get("use_regex") === "true") === regex);
        }""",
        arg=[text, regex],
    )


def expect_rows(page, ids):
    """The list shows exactly these rows, in this order."""
    expect(rows(page)).to_have_count(len(ids))
    for i, row_id in enumerate(ids):
        expect(rows(page).nth(i)).to_have_attribute("data-id", row_id)
