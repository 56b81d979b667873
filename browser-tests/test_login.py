"""Logging in and out, what the browser keeps of a session, and what each user tag may see."""

import pytest
from playwright.sync_api import expect

from ui import (
    cell,
    confirm,
    expect_http_errors,
    expect_rows,
    filter_list,
    login,
    open_route,
    path,
    row,
    screenshot,
    session_entry,
    storage,
    submit_login,
    toast,
    unique,
)

LOGIN_ALERT = "form#login [role=alert]"


def test_wrong_password_is_refused_and_the_form_stays(page):
    expect_http_errors(page, 401)
    submit_login(page, "guest", "not-the-password")
    expect(page.locator(LOGIN_ALERT)).to_have_text("Wrong username or password.")
    expect(page.locator("form#login")).to_be_visible()
    expect(page.locator("#logout")).to_have_count(0)
    assert session_entry(page) is None
    screenshot(page, "login-wrong-password")


def test_guest_logs_in_to_the_overview_and_out_again(page):
    open_route(page, "")
    screenshot(page, "login")
    login(page, "guest", "guest")
    expect(page.locator("main#page h1")).to_have_text("Overview")
    expect(page.locator("nav.tabs a.active")).to_have_text("Overview")
    expect(page.locator("header .who .user")).to_have_text("guest")
    screenshot(page, "overview")

    page.locator("#logout").click()
    expect(page.locator("form#login")).to_be_visible()
    expect(page.locator(LOGIN_ALERT)).to_have_text("You have logged out.")
    assert session_entry(page) is None


def test_the_browser_keeps_a_token_and_never_the_password(page, broker):
    user, password = unique("keeper"), unique("secret-password")
    broker.add_user(user, password, "administrator")
    login(page, user, password)

    session = session_entry(page)
    assert session["name"] == user
    assert session["token"]
    kept = storage(page)
    for area, entries in kept.items():
        for key, value in entries.items():
            assert password not in key and password not in (value or ""), f"{area}Storage[{key!r}] holds the password"
    for cookie in page.context.cookies():
        assert password not in cookie["value"], f"cookie {cookie['name']} holds the password"

    page.reload()
    expect(page.locator("#logout")).to_be_visible()
    expect(page.locator("main#page h1")).to_have_text("Overview")
    expect(page.locator("header .who .user")).to_have_text(user)


@pytest.mark.parametrize(
    "tags, sees_admin",
    [("administrator", True), ("monitoring", False), ("policymaker", True), ("management", False)],
)
def test_each_management_tag_logs_in(page, broker, tags, sees_admin):
    user, password = unique(tags), unique("pw")
    broker.add_user(user, password, tags)
    login(page, user, password)
    expect(page.locator("main#page h1")).to_have_text("Overview")
    expect(page.locator("nav.tabs a[data-tab=queues]")).to_be_visible()
    expect(page.locator("nav.tabs a[data-tab=admin]")).to_have_count(1 if sees_admin else 0)
    expect(page.locator("header .who .user")).to_have_attribute("title", tags)


def test_a_user_without_tags_is_refused(page, broker):
    user, password = unique("tagless"), unique("pw")
    broker.add_user(user, password, "")
    expect_http_errors(page, 401)
    submit_login(page, user, password)
    expect(page.locator(LOGIN_ALERT)).to_have_text("Not management user")
    expect(page.locator("#logout")).to_have_count(0)
    assert session_entry(page) is None


def test_a_management_user_sees_only_the_queues_of_its_vhosts(page, broker):
    tag = unique("mine")
    vhost, user, password = f"v1-{tag}", f"manager-{tag}", unique("pw")
    broker.add_vhost(vhost)
    broker.add_user(user, password, "management")
    broker.grant(user, vhost)
    broker.declare_queue(vhost, f"{tag}-in-v1")
    broker.declare_queue("/", f"{tag}-in-root")

    login(page, user, password)
    open_route(page, "#/queues")
    filter_list(page, tag)
    expect_rows(page, [f"{vhost}/{tag}-in-v1"])
    expect(cell(page, row(page, f"{vhost}/{tag}-in-v1"), "Virtual host")).to_have_text(vhost)
    expect(page.locator(".summary")).to_have_text("1 in all")  # the user's whole list
    screenshot(page, "queues-management-user")


def test_a_monitor_without_permissions_cannot_delete_a_queue(page, broker):
    user, password = unique("monitor"), unique("pw")
    broker.add_user(user, password, "monitoring")
    name = unique("kept")
    broker.declare_queue("/", name)
    # The API refuses such a user the queue, as RabbitMQ's does: 401 "User not authorised
    # to access virtual host" (403 would do as well).
    expect_http_errors(page, 401, 403)

    login(page, user, password)
    queue_api = f"/api/queues/%2F/{name}"
    with page.expect_response(lambda r: queue_api in r.url and r.request.method == "GET"):
        open_route(page, path("queues", "/", name))
    page.wait_for_timeout(300)  # the UI acts on the refusal
    # A refusal of one request is not the end of the session.
    assert page.locator("form#login").count() == 0, (
        "the refused GET of the queue logged the user out: " + page.locator(LOGIN_ALERT).inner_text()
    )

    page.locator("button#delete").click()
    confirm(page, "Delete")
    refusal = page.locator("#toasts .toast.error, main [role=alert]:not([hidden])")
    expect(refusal.first).to_contain_text("not authorised", ignore_case=True)
    expect(toast(page, "ok")).to_have_count(0)
    screenshot(page, "queue-delete-refused")
    assert broker.queue("/", name) is not None, "the queue was deleted"
    expect(page.locator("#logout")).to_be_visible()
    expect(page.locator("form#login")).to_have_count(0)
