"""Fixtures of the browser tests: a wharf broker for each test module (a module may ask
for a fresh one per test by overriding `broker`), one Chromium for the session, and a
page for each test (and `other_page`, a second browser, for a test that asks) that fails
the test when the UI reports a fault the test did not expect.
"""

import contextlib
import os
import re

import pytest
from playwright.sync_api import expect, sync_playwright

import ui
from wharf import running_broker

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIEWPORT = {"width": 1400, "height": 900}
# Longer than the UI's 5 s refresh, so an assertion can wait for the next one.
TIMEOUT_MS = 15_000
# The page fixtures whose faults fail a test, and which a failure report shows.
PAGES = ("page", "other_page")


def pytest_addoption(parser):
    parser.addoption(
        "--wharf-binary",
        default=os.environ.get("WHARF_BINARY", "target/release/wharf"),
        help="the wharf binary to test (default: $WHARF_BINARY or target/release/wharf)",
    )
    parser.addoption(
        "--chromium",
        default=os.environ.get("WHARF_CHROMIUM", "/usr/bin/chromium"),
        help="the Chromium to drive (default: $WHARF_CHROMIUM or /usr/bin/chromium)",
    )


def pytest_configure(config):
    binary = config.getoption("wharf_binary")
    # A relative path is taken from here or, failing that, from the repository's root.
    for candidate in (binary, os.path.join(REPOSITORY, binary)):
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            config.wharf_binary = os.path.abspath(candidate)
            break
    else:
        raise pytest.UsageError(f"no wharf binary at {binary}: build it (cargo build --release -p wharf)")
    expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="session")
def wharf_binary(pytestconfig):
    return pytestconfig.wharf_binary


@pytest.fixture(scope="module")
def broker(wharf_binary):
    with running_broker(wharf_binary) as broker:
        yield broker


@pytest.fixture(scope="session")
def browser(pytestconfig):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=pytestconfig.getoption("chromium"))
        yield browser
        browser.close()


@contextlib.contextmanager
def _watched_page(browser, broker):
    context = browser.new_context(viewport=VIEWPORT, base_url=broker.http_url)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    ui.start_watching(page)
    try:
        yield page
    finally:
        ui.stop_watching(page)
        context.close()


@pytest.fixture
def page(browser, broker):
    """A page of the UI in a context of its own (no session, nothing stored)."""
    with _watched_page(browser, broker) as page:
        yield page


@pytest.fixture
def other_page(browser, broker):
    """A second page in another context: another browser, with a session of its own
    (another user's, or the same user's elsewhere). Watched as `page` is."""
    with _watched_page(browser, broker) as page:
        yield page


def _settle(page):
    """Lets events the page sent at the end of the test reach the watch."""
    with contextlib.suppress(Exception):
        if not page.is_closed():
            page.wait_for_timeout(200)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    for fixture in PAGES:
        page = item.funcargs.get(fixture)
        if page is not None:
            _settle(page)
            unexpected = ui.watch(page).unexpected()
            if unexpected:
                pytest.fail(f"the {fixture} reported problems the test did not expect:\n" + ui.Watch.describe(unexpected))
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        for fixture in PAGES:
            page = item.funcargs.get(fixture)
            if page is None:
                continue
            suffix = "" if fixture == "page" else f"-{fixture}"
            with contextlib.suppress(Exception):
                reports = ui.watch(page).reports
                if reports:
                    report.sections.append((f"what the {fixture} reported", ui.Watch.describe(reports)))
                report.sections.append((f"{fixture} address", page.url))
                ui.screenshot(page, "failed-" + re.sub(r"[^\w.-]+", "_", item.name) + suffix)
        broker = item.funcargs.get("broker")
        if broker is not None:
            report.sections.append(("wharf log (last 40 lines)", broker.log_text(40)))
    return report
