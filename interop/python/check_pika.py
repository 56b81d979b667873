#!/usr/bin/env python3
"""Checks a broker with pika, the most used Python AMQP client: each check asserts what
RabbitMQ answers, and prints "ok <name>". Exits non-zero at the first failure.

Usage: check_pika.py --url amqp://guest:guest@127.0.0.1:5672/%2f
"""
import argparse
import os
import sys
import time
import uuid

import pika
from pika.exceptions import ChannelClosedByBroker, ProbableAuthenticationError, UnroutableError

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def name(prefix):
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def expect(actual, expected, what):
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def wait_count(ch, queue, expected):
    deadline = time.time() + 5
    while True:
        count = ch.queue_declare(queue, passive=True).method.message_count
        if count == expected or time.time() > deadline:
            expect(count, expected, f"message count of {queue}")
            return


@check
def publish_get_properties(conn, url):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    expect(q.startswith("amq.gen-"), True, "server-named queue")
    props = pika.BasicProperties(
        content_type="text/plain", delivery_mode=2, priority=3, correlation_id="c",
        reply_to="r", message_id="m", timestamp=1700000000, type="t", app_id="a",
        headers={"int": 1, "str": "x", "list": [1, "two"], "nested": {"k": True}},
    )
    ch.basic_publish("", q, b"hello", props)
    method, got, body = ch.basic_get(q, auto_ack=True)
    expect(body, b"hello", "body")
    expect(method.redelivered, False, "redelivered")
    for field in ("content_type", "delivery_mode", "priority", "correlation_id", "reply_to",
                  "message_id", "timestamp", "type", "app_id", "headers"):
        expect(getattr(got, field), getattr(props, field), field)
    expect(ch.basic_get(q)[0], None, "get-empty")
    ch.close()


@check
def exchanges_of_each_type(conn, url):
    ch = conn.channel()
    for kind in ("direct", "fanout", "topic", "headers"):
        ex = name(kind)
        ch.exchange_declare(ex, kind)
        ch.exchange_declare(ex, kind, passive=True)
        ch.exchange_delete(ex)
    ch.close()


@check
def consume_ack_nack_reject(conn, url):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    seen = []

    def on_message(channel, method, props, body):
        seen.append((body, method.redelivered))
        if body == b"0" and not method.redelivered:
            channel.basic_nack(method.delivery_tag, requeue=True)
        elif body == b"1":
            channel.basic_reject(method.delivery_tag, requeue=False)
        else:
            channel.basic_ack(method.delivery_tag)
        if len(seen) == 4:
            channel.stop_consuming()

    ch.basic_qos(prefetch_count=1)  # one at a time: a requeued message comes straight back
    ch.basic_consume(q, on_message)
    conn.call_later(5, ch.stop_consuming)
    ch.start_consuming()
    expect(seen, [(b"0", False), (b"0", True), (b"1", False), (b"2", False)], "deliveries")
    expect(ch.queue_declare(q, passive=True).method.message_count, 0, "queue drained")
    ch.close()


@check
def prefetch_limits_in_flight(conn, url):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(10):
        ch.basic_publish("", q, str(i).encode())
    ch.basic_qos(prefetch_count=2)
    held = []
    ch.basic_consume(q, lambda c, m, p, b: held.append(m.delivery_tag))
    conn.process_data_events(time_limit=0.5)
    expect(len(held), 2, "unacked deliveries with prefetch 2")
    ch.basic_ack(held[-1], multiple=True)
    conn.process_data_events(time_limit=0.5)
    expect(len(held), 4, "deliveries after acking two")
    ch.close()


@check
def publisher_confirms_and_mandatory(conn, url):
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(20):
        ch.basic_publish("", q, str(i).encode())  # raises if nacked
    wait_count(ch, q, 20)
    try:
        ch.basic_publish("amq.direct", name("nowhere"), b"x", mandatory=True)
    except UnroutableError as e:
        expect(len(e.messages), 1, "returned messages")
        expect(e.messages[0].method.reply_code, 312, "reply code")
        expect(e.messages[0].method.reply_text, "NO_ROUTE", "reply text")
    else:
        raise AssertionError("mandatory unroutable publish was not returned")
    ch.close()


@check
def topic_routing(conn, url):
    ch = conn.channel()
    ex = name("topic")
    ch.exchange_declare(ex, "topic")
    star = ch.queue_declare("", exclusive=True).method.queue
    hash_ = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(star, ex, "a.*.c")
    ch.queue_bind(hash_, ex, "a.#")
    for key in ("a.b.c", "a", "a.b.b.c", "b.a"):
        ch.basic_publish(ex, key, key.encode())
    wait_count(ch, star, 1)
    wait_count(ch, hash_, 3)
    ch.exchange_delete(ex)
    ch.close()


@check
def headers_routing(conn, url):
    ch = conn.channel()
    ex = name("headers")
    ch.exchange_declare(ex, "headers")
    all_q = ch.queue_declare("", exclusive=True).method.queue
    any_q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(all_q, ex, arguments={"x-match": "all", "a": "1", "b": "2"})
    ch.queue_bind(any_q, ex, arguments={"x-match": "any", "a": "1", "b": "2"})
    for headers in ({"a": "1", "b": "2"}, {"a": "1"}, {"c": "3"}):
        ch.basic_publish(ex, "", b"m", pika.BasicProperties(headers=headers))
    wait_count(ch, all_q, 1)
    wait_count(ch, any_q, 2)
    ch.exchange_delete(ex)
    ch.close()


@check
def errors_close_the_channel(conn, url):
    ch = conn.channel()
    missing = name("missing")
    try:
        ch.queue_declare(missing, passive=True)
        raise AssertionError("passive declare of a missing queue succeeded")
    except ChannelClosedByBroker as e:
        expect((e.reply_code, e.reply_text), (404, f"NOT_FOUND - no queue '{missing}' in vhost '/'"), "close")
    ch = conn.channel()
    ex = name("ex")
    ch.exchange_declare(ex, "direct")
    try:
        ch.exchange_declare(ex, "fanout")
        raise AssertionError("redeclare with another type succeeded")
    except ChannelClosedByBroker as e:
        expect(e.reply_code, 406, "reply code")
        expect(e.reply_text, f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{ex}' "
               "in vhost '/': received 'fanout' but current is 'direct'", "reply text")
    conn.channel().exchange_delete(ex)


@check
def wrong_password_is_refused(conn, url):
    bad = pika.URLParameters(url)
    bad.credentials = pika.PlainCredentials("guest", "not-the-password")
    try:
        pika.BlockingConnection(bad).close()
        raise AssertionError("login with a wrong password succeeded")
    except ProbableAuthenticationError as e:
        expect("ACCESS_REFUSED" in str(e), True, f"auth error text {e}")


@check
def transactions(conn, url):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.tx_select()
    ch.basic_publish("", q, b"a")
    expect(ch.queue_declare(q, passive=True).method.message_count, 0, "before commit")
    ch.tx_commit()
    wait_count(ch, q, 1)
    ch.basic_publish("", q, b"b")
    ch.tx_rollback()
    ch.tx_commit()
    wait_count(ch, q, 1)
    ch.close()


@check
def purge_and_delete_counts(conn, url):
    ch = conn.channel()
    q = name("q")
    ch.queue_declare(q)
    for i in range(4):
        ch.basic_publish("", q, b"x")
    wait_count(ch, q, 4)
    expect(ch.queue_purge(q).method.message_count, 4, "purge count")
    ch.basic_publish("", q, b"y")
    wait_count(ch, q, 1)
    expect(ch.queue_delete(q).method.message_count, 1, "delete count")
    ch.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    conn = pika.BlockingConnection(pika.URLParameters(args.url))
    for fn in CHECKS:
        try:
            fn(conn, args.url)
        except Exception as e:  # report which check failed, then stop
            print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        print(f"ok {fn.__name__}")
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
