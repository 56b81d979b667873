#!/usr/bin/env python3
"""Checks a broker's amqps listener with pika over TLS: a password login on TLS 1.2 and
TLS 1.3, a login by client certificate (SASL EXTERNAL, the certificate's CN as the
user), and a client without the CA's trust turned away. With --https-port, also that the
management API lists the certificate's connection with its TLS details. Prints
"ok <name>" per check.

Usage: check_pika_tls.py --port 5671 --ca ca.pem --cert client.pem --key client.key
       [--https-port 15671]
"""
import argparse
import base64
import json
import ssl
import sys
import urllib.request

import pika
from pika.credentials import ExternalCredentials, PlainCredentials


def params(args, context, credentials):
    return pika.ConnectionParameters(
        host="127.0.0.1",
        port=args.port,
        credentials=credentials,
        ssl_options=pika.SSLOptions(context, "localhost"),
        connection_attempts=1,
    )


def round_trip(connection, label):
    ch = connection.channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", queue, f"over {label}".encode())
    method, _, body = ch.basic_get(queue, auto_ack=True)
    if body != f"over {label}".encode():
        raise AssertionError(f"{label}: got {body!r}")
    connection.close()


def check_listed_tls(args, context):
    """The open EXTERNAL connection, as GET /api/connections lists it."""
    request = urllib.request.Request(
        f"https://localhost:{args.https_port}/api/connections",
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()},
    )
    trusting = ssl.create_default_context(cafile=args.ca)
    with urllib.request.urlopen(request, context=trusting, timeout=10) as answer:
        listed = json.load(answer)
    mine = [c for c in listed if c["user"] == "interop-cert-user"]
    if len(mine) != 1:
        raise AssertionError(f"the certificate's connection is not listed once: {listed}")
    c = mine[0]
    if not (c["ssl"] and c["ssl_protocol"] in ("tlsv1.2", "tlsv1.3") and c["ssl_cipher"]):
        raise AssertionError(f"TLS details: {c}")
    if "CN=interop-cert-user" not in (c["peer_cert_subject"] or ""):
        raise AssertionError(f"peer_cert_subject: {c['peer_cert_subject']!r}")
    if "CN=wharf interop CA" not in (c["peer_cert_issuer"] or ""):
        raise AssertionError(f"peer_cert_issuer: {c['peer_cert_issuer']!r}")
    print(f"ok the API lists the connection over {c['ssl_protocol']} with {c['ssl_cipher']}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--https-port", type=int)
    args = parser.parse_args()

    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = ssl.create_default_context(cafile=args.ca)
        context.minimum_version = version
        context.maximum_version = version
        connection = pika.BlockingConnection(
            params(args, context, PlainCredentials("guest", "guest"))
        )
        round_trip(connection, version.name)
        print(f"ok password login over {version.name}")

    context = ssl.create_default_context(cafile=args.ca)
    context.load_cert_chain(args.cert, args.key)
    connection = pika.BlockingConnection(params(args, context, ExternalCredentials()))
    if args.https_port:
        check_listed_tls(args, context)
    round_trip(connection, "EXTERNAL")
    print("ok certificate login (EXTERNAL)")

    untrusting = ssl.create_default_context()  # the system's CAs, not the test CA
    try:
        pika.BlockingConnection(params(args, untrusting, PlainCredentials("guest", "guest")))
    except (pika.exceptions.AMQPConnectionError, ssl.SSLError):
        print("ok a client that does not trust the server's CA is turned away")
    else:
        raise AssertionError("connected without trusting the server's certificate")


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # noqa: BLE001 - report any failure the same way
        print(f"FAIL {error!r}", file=sys.stderr)
        sys.exit(1)
