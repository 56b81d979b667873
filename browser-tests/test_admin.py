"""The Admin tab, as guest (an administrator): users (adding one who then logs in, their
permissions and tags, a password change that ends their sessions, deleting one), virtual
hosts and their limits, policies, user limits; and which sections other tags see."""

import re

import pika
import pytest
from playwright.sync_api import expect

from ui import (
    confirm,
    delete_from_its_page,
    expect_http_errors,
    fact,
    login,
    open_route,
    path,
    screenshot,
    toast,
    unique,
    wait_until,
)
from wharf import ApiError, quote

LOGIN_ALERT = "form#login [role=alert]"


def open_admin(page, *route):
    login(page, "guest", "guest")
    open_route(page, path("admin", *route))


def table_row(page, table, row_id):
    """A row of one of the Admin tables (table.users, table.permissions...) by its data-id."""
    return page.locator(f"table.{table} tbody tr[data-id='{row_id}']")


def add_user(broker, tags="management", vhost="/"):
    """A user with a password and full permissions in `vhost`: (name, password)."""
    user, password = unique("user"), unique("pw")
    broker.add_user(user, password, tags)
    broker.grant(user, vhost)
    return user, password


def api_or_none(broker, api_path):
    try:
        return broker.api("GET", api_path)
    except ApiError as error:
        if error.status == 404:
            return None
        raise


# --- users


def test_add_a_user_who_then_logs_in(page, broker, other_page):
    user, password = unique("added"), unique("pw")
    open_admin(page, "users")
    expect(page.locator("nav.subtabs a.active")).to_have_text("Users")
    expect(table_row(page, "users", "guest")).to_be_visible()

    form = page.locator("form.add-user")
    form.locator("input[name=name]").fill(user)
    form.locator("input[name=password]").fill(password)
    form.locator("input[name=password_again]").fill(password)
    form.get_by_role("button", name="management", exact=True).click()
    form.get_by_role("button", name="policymaker", exact=True).click()
    expect(form.locator("input[name=tags]")).to_have_value("management, policymaker")
    form.get_by_role("button", name="Add user").click()
    expect(toast(page).last).to_contain_text(f"User {user} added.")
    expect(form.locator("[role=alert]")).to_be_hidden()
    expect(form.locator("input[name=name]")).to_have_value("")

    added = table_row(page, "users", user)
    expect(added.locator("td")).to_have_text([user, "management, policymaker", "none", "yes"])
    screenshot(page, "admin-users")
    assert sorted(broker.api("GET", f"/api/users/{quote(user)}")["tags"]) == ["management", "policymaker"]

    # The password works: the user logs in in another browser.
    login(other_page, user, password)
    expect(other_page.locator("header .who .user")).to_have_text(user)
    expect(other_page.locator("header .who .user")).to_have_attribute("title", "management, policymaker")


def test_refused_user_forms_say_why(page, broker):
    open_admin(page, "users")
    form = page.locator("form.add-user")
    form.locator("input[name=name]").fill(unique("mismatched"))
    form.locator("input[name=password]").fill("one")
    form.locator("input[name=password_again]").fill("two")
    form.get_by_role("button", name="Add user").click()
    expect(form.locator("[role=alert]")).to_have_text("The two passwords differ.")


def test_a_users_permissions_topic_permissions_and_tags(page, broker):
    user, _ = add_user(broker)
    vhost = unique("team")
    broker.add_vhost(vhost)
    open_admin(page, "users")
    table_row(page, "users", user).get_by_role("link", name=user).click()
    expect(page).to_have_url(re.compile(re.escape(path("admin", "users", user)) + "$"))
    expect(page.locator("main h1 code")).to_have_text(user)
    expect(fact(page, "Tags")).to_have_text("management")
    expect(fact(page, "Has password")).to_have_text("yes")
    expect(table_row(page, "permissions", "/")).to_be_visible()

    permission = page.locator("form.set-permission")
    permission.locator("select[name=vhost]").select_option(vhost)
    permission.locator("input[name=configure]").fill("^cfg-.*")
    permission.locator("input[name=write]").fill("^out-.*")
    permission.locator("input[name=read]").fill("^in-.*")
    permission.get_by_role("button", name="Set permission").click()
    expect(toast(page).last).to_contain_text(f"Permissions of {user} in {vhost} set.")
    expect(table_row(page, "permissions", vhost).locator("td")).to_have_text([vhost, "^cfg-.*", "^out-.*", "^in-.*", "Clear"])
    granted = broker.api("GET", f"/api/permissions/{quote(vhost)}/{quote(user)}")
    assert (granted["configure"], granted["write"], granted["read"]) == ("^cfg-.*", "^out-.*", "^in-.*")

    topic = page.locator("form.set-topic-permission")
    topic.locator("select[name=vhost]").select_option(vhost)
    topic.locator("input[name=exchange]").fill("amq.topic")
    topic.locator("input[name=write]").fill("^orders\\.")
    topic.locator("input[name=read]").fill(".*")
    topic.get_by_role("button", name="Set topic permission").click()
    expect(toast(page).last).to_contain_text(f"Topic permissions of {user} in {vhost} set.")
    expect(table_row(page, "topic-permissions", vhost).locator("td")).to_have_text([vhost, "amq.topic", "^orders\\.", ".*", "Clear"])
    topics = broker.api("GET", f"/api/topic-permissions/{quote(vhost)}/{quote(user)}")
    assert [(t["exchange"], t["write"], t["read"]) for t in topics] == [("amq.topic", "^orders\\.", ".*")]

    update = page.locator("form.update-user")
    update.locator("input[name=tags]").fill("")
    update.get_by_role("button", name="monitoring", exact=True).click()
    update.get_by_role("button", name="Update user").click()
    expect(toast(page).last).to_contain_text(f"User {user} updated.")
    expect(fact(page, "Tags")).to_have_text("monitoring")
    expect(fact(page, "Has password")).to_have_text("yes")
    assert broker.api("GET", f"/api/users/{quote(user)}")["tags"] == ["monitoring"]


def test_a_password_change_ends_the_users_sessions(page, broker, other_page):
    user, password = add_user(broker)
    login(other_page, user, password)
    expect(other_page.locator("main#page h1")).to_have_text("Overview")

    open_admin(page, "users", user)
    expect(fact(page, "Tags")).to_have_text("management")
    update = page.locator("form.update-user")
    new_password = unique("new-pw")
    update.locator("input[name=password]").fill(new_password)
    update.locator("input[name=password_again]").fill(new_password)
    update.get_by_role("button", name="Update user").click()
    expect(toast(page).last).to_contain_text(f"User {user} updated.")
    expect(fact(page, "Tags")).to_have_text("management")

    # The other browser's session was signed over the old password's hash: its next
    # refresh is refused, and it is told why.
    expect_http_errors(other_page, 401)
    expect(other_page.locator("form#login")).to_be_visible()
    expect(other_page.locator(LOGIN_ALERT)).to_contain_text("session has ended")
    expect(other_page.locator("#logout")).to_have_count(0)
    login(other_page, user, new_password)
    expect(other_page.locator("header .who .user")).to_have_text(user)


def test_delete_a_user(page, broker):
    user, _ = add_user(broker)
    open_admin(page, "users", user)
    expect(fact(page, "Tags")).to_have_text("management")
    delete_from_its_page(page, "admin/users", f"User {user} deleted.")
    expect(table_row(page, "users", "guest")).to_be_visible()
    expect(table_row(page, "users", user)).to_have_count(0)
    assert api_or_none(broker, f"/api/users/{quote(user)}") is None


# --- virtual hosts


def test_a_vhost_with_a_queue_limit(page, broker):
    vhost = unique("limited")
    open_admin(page, "vhosts")
    expect(page.locator("main h1")).to_have_text("Virtual hosts")
    form = page.locator("form.add-vhost")
    form.locator("input[name=name]").fill(vhost)
    form.locator("input[name=description]").fill("A vhost of few queues")
    form.get_by_role("button", name="Add virtual host").click()
    expect(toast(page).last).to_contain_text(f"Virtual host {vhost} added")
    listed = table_row(page, "vhosts", vhost)
    expect(listed.locator("td").nth(1)).to_have_text("A vhost of few queues")

    listed.get_by_role("link", name=vhost).click()
    expect(page).to_have_url(re.compile(re.escape(path("admin", "vhosts", vhost)) + "$"))
    expect(page.locator("main h1 code")).to_have_text(vhost)
    expect(fact(page, "Description")).to_have_text("A vhost of few queues")
    expect(table_row(page, "permissions", "guest")).to_be_visible()

    limits = page.locator("form.limits")
    limits.locator("input[name=max-queues]").fill("2")
    limits.get_by_role("button", name="Save limits").click()
    expect(toast(page).last).to_contain_text("Limits saved.")
    expect(page.locator("form.limits input[name=max-queues]")).to_have_value("2")
    assert {"vhost": vhost, "value": {"max-queues": 2}} in broker.api("GET", "/api/vhost-limits")
    screenshot(page, "admin-vhost")

    with broker.connect(vhost) as connection:
        channel = connection.channel()
        channel.queue_declare("first")
        channel.queue_declare("second")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_declare("third")
        assert refused.value.reply_code == 406
    assert broker.queue(vhost, "third") is None

    delete_from_its_page(page, "admin/vhosts", f"Virtual host {vhost} deleted.")
    expect(table_row(page, "vhosts", "/")).to_be_visible()
    expect(table_row(page, "vhosts", vhost)).to_have_count(0)
    assert api_or_none(broker, f"/api/vhosts/{quote(vhost)}") is None


# --- policies


def test_a_policy_applies_to_the_queues_it_matches(page, broker):
    tag = unique("capped")
    name, matching, other = f"{tag}-policy", f"{tag}-queue", unique("uncapped")
    broker.declare_queue("/", matching)
    broker.declare_queue("/", other)
    open_admin(page, "policies")
    expect(page.locator("main h1")).to_have_text("Policies")

    form = page.locator("form.set-policy")
    form.locator("select[name=vhost]").select_option("/")
    form.locator("input[name=name]").fill(name)
    form.locator("input[name=pattern]").fill(f"^{tag}-")
    form.locator("select[name=apply-to]").select_option("queues")
    form.locator("input[name=priority]").fill("3")
    form.get_by_role("button", name="max-length", exact=True).click()
    definition = form.locator(".key-values .row").first
    expect(definition.locator("input.key")).to_have_value("max-length")
    expect(definition.locator("select")).to_have_value("number")
    definition.locator("input.value").fill("10")
    form.get_by_role("button", name="Save policy").click()
    expect(toast(page).last).to_contain_text(f"Policy {name} saved.")

    listed = table_row(page, "policies", f"//{name}")
    expect(listed.locator("td")).to_have_text(["/", name, f"^{tag}-", "queues", "max-length: 10", "3", "Delete"])
    policy = broker.api("GET", f"/api/policies/%2F/{quote(name)}")
    assert policy["definition"] == {"max-length": 10} and policy["priority"] == 3
    wait_until(lambda: broker.queue("/", matching).get("policy") == name, "the policy applies to the matching queue")
    assert broker.queue("/", other).get("policy") in (None, "")
    screenshot(page, "admin-policies")

    listed.get_by_role("button", name="Delete").click()
    confirm(page, "Delete")
    expect(toast(page).last).to_contain_text(f"Policy {name} deleted.")
    expect(listed).to_have_count(0)
    assert api_or_none(broker, f"/api/policies/%2F/{quote(name)}") is None
    wait_until(lambda: broker.queue("/", matching).get("policy") in (None, ""), "the policy no longer applies")


# --- limits


def test_a_user_connection_limit(page, broker):
    user, password = add_user(broker)
    open_admin(page, "limits")
    expect(page.locator("main h1")).to_have_text("Limits")
    form = page.locator("form.set-user-limit")
    form.locator("select[name=user]").select_option(user)
    form.locator("select[name=limit]").select_option("max-connections")
    form.locator("input[name=value]").fill("1")
    form.get_by_role("button", name="Set limit").click()
    expect(toast(page).last).to_contain_text("Limit set.")
    limit = page.locator("table.user-limits tbody tr").filter(has=page.get_by_role("link", name=user, exact=True))
    expect(limit.locator("td")).to_have_text([user, "max-connections", "1", "Clear"])
    assert broker.api("GET", f"/api/user-limits/{quote(user)}") == [{"user": user, "value": {"max-connections": 1}}]

    with broker.connect(user=user, password=password):
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            broker.connect(user=user, password=password)


# --- what other tags see


def test_a_policymaker_sees_only_the_policies(page, broker):
    user, password = add_user(broker, "policymaker")
    login(page, user, password)
    page.locator("nav.tabs a[data-tab=admin]").click()
    sections = page.locator("nav.subtabs a[data-section]")
    expect(sections).to_have_count(1)
    expect(sections).to_have_attribute("data-section", "policies")
    expect(page.locator("main h1")).to_have_text("Policies")
    expect(page.locator("form.set-policy")).to_be_visible()

    open_route(page, "#/admin/users")
    expect(page.locator("main .admin .page-error")).to_have_text("There is no such section, or your tags do not let you see it.")
    expect(page.locator("table.users")).to_have_count(0)


def test_a_management_user_has_no_admin_tab(page, broker):
    user, password = add_user(broker, "management")
    login(page, user, password)
    expect(page.locator("nav.tabs a[data-tab=queues]")).to_be_visible()
    expect(page.locator("nav.tabs a[data-tab=admin]")).to_have_count(0)

    open_route(page, "#/admin")
    expect(page.locator("main .admin .page-error")).to_have_text("Your tags do not let you see the Admin sections.")
    expect(page.locator("nav.subtabs a[data-section]")).to_have_count(0)
