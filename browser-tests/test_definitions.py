"""The Admin tab's Definitions: the export downloaded as a file, a definitions file in
RabbitMQ's format imported (a vhost with a queue, an exchange and a binding), and a file
that is not JSON refused without changing anything."""

import json
import re

from playwright.sync_api import expect

from ui import login, open_route, toast, unique
from wharf import quote


def open_definitions(page):
    login(page, "guest", "guest")
    open_route(page, "#/admin/definitions")
    expect(page.locator("main h1")).to_have_text("Definitions")


def upload(page, file):
    form = page.locator("form.import")
    form.locator("input[type=file]").set_input_files(file)
    form.get_by_role("button", name="Upload").click()
    return form


def test_export_downloads_the_definitions(page, broker):
    name = unique("exported")
    broker.declare_queue("/", name, arguments={"x-max-length": 5})
    open_definitions(page)
    with page.expect_download() as downloading:
        page.locator("form.export").get_by_role("button", name="Download").click()
    download = downloading.value
    assert re.fullmatch(r"wharf-definitions-[\d-]+\.json", download.suggested_filename), download.suggested_filename
    expect(toast(page)).to_contain_text("Definitions downloaded.")

    with open(download.path(), encoding="utf-8") as file:
        definitions = json.load(file)
    queues = [q for q in definitions["queues"] if q["name"] == name]
    assert len(queues) == 1, f"the export has no queue {name}"
    assert queues[0]["vhost"] == "/" and queues[0]["durable"] is True
    assert queues[0]["arguments"] == {"x-max-length": 5}
    assert any(v["name"] == "/" for v in definitions["vhosts"])
    assert any(u["name"] == "guest" and u["password_hash"] for u in definitions["users"])
    for kind in ("exchanges", "bindings", "permissions", "policies"):
        assert isinstance(definitions[kind], list), f"the export has no list of {kind}"


def test_import_a_vhost_with_a_queue_an_exchange_and_a_binding(page, broker, tmp_path):
    tag = unique("imported")
    vhost, queue, exchange = f"{tag}-vhost", f"{tag}-queue", f"{tag}-exchange"
    file = tmp_path / "definitions.json"
    file.write_text(
        json.dumps(
            {
                "vhosts": [{"name": vhost, "metadata": {"description": "Imported by a browser test", "tags": []}}],
                "permissions": [{"user": "guest", "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}],
                "queues": [
                    {"name": queue, "vhost": vhost, "durable": True, "auto_delete": False, "arguments": {"x-message-ttl": 60000}}
                ],
                "exchanges": [
                    {
                        "name": exchange,
                        "vhost": vhost,
                        "type": "topic",
                        "durable": True,
                        "auto_delete": False,
                        "internal": False,
                        "arguments": {},
                    }
                ],
                "bindings": [
                    {
                        "source": exchange,
                        "vhost": vhost,
                        "destination": queue,
                        "destination_type": "queue",
                        "routing_key": "orders.#",
                        "arguments": {},
                    }
                ],
            }
        )
    )
    open_definitions(page)
    form = upload(page, str(file))
    expect(form.locator(".outcome")).to_have_text("Imported definitions.json.")
    expect(toast(page)).to_contain_text("Definitions imported.")
    expect(form.locator("[role=alert]")).to_be_hidden()

    assert broker.api("GET", f"/api/vhosts/{quote(vhost)}")["description"] == "Imported by a browser test"
    imported_queue = broker.queue(vhost, queue)
    assert imported_queue is not None, "the queue was not imported"
    assert imported_queue["durable"] is True and imported_queue["arguments"] == {"x-message-ttl": 60000}
    imported_exchange = broker.exchange(vhost, exchange)
    assert imported_exchange is not None, "the exchange was not imported"
    assert imported_exchange["type"] == "topic"
    bindings = broker.api("GET", f"/api/exchanges/{quote(vhost)}/{quote(exchange)}/bindings/source")
    assert [(b["destination"], b["destination_type"], b["routing_key"]) for b in bindings] == [(queue, "queue", "orders.#")]

    # What was imported works: a message published to the exchange reaches the queue.
    with broker.connect(vhost) as connection:
        connection.channel().basic_publish(exchange, "orders.new", b"imported and routed")
    routed = broker.api("POST", f"/api/queues/{quote(vhost)}/{quote(queue)}/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})
    assert [m["payload"] for m in routed] == ["imported and routed"]


def test_a_file_that_is_not_json_is_refused_and_changes_nothing(page, broker, tmp_path):
    before = broker.api("GET", "/api/definitions")
    file = tmp_path / "broken.json"
    file.write_text('{"queues": [{"name": "half-written"')
    open_definitions(page)
    form = upload(page, str(file))
    problem = form.locator("[role=alert]")
    expect(problem).to_contain_text("broken.json is not JSON")
    expect(problem).not_to_have_text(re.compile(r"^\s*[{\[]|^HTTP \d+"))
    expect(form.locator(".outcome")).to_have_text("")
    expect(toast(page)).to_have_count(0)
    assert broker.api("GET", "/api/definitions") == before

    # Nor does a form sent without a file.
    form.locator("input[type=file]").set_input_files([])
    form.get_by_role("button", name="Upload").click()
    expect(problem).to_have_text("Choose a definitions file.")
    assert broker.api("GET", "/api/definitions") == before
