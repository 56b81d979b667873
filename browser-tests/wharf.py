"""A wharf broker run as a subprocess for the browser tests, and its management API.

The broker listens on ports the OS picks (port 0); its ready line in the log says which,
and a restart binds the same ones again over the same data directory, as an operator's
restart would.
"""

import base64
import contextlib
import json
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pika

READY_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
AMQP_ADDRESS = re.compile(r"AMQP listening on 127\.0\.0\.1:(\d+)")
HTTP_ADDRESS = re.compile(r"HTTP API on 127\.0\.0\.1:(\d+)")


def quote(segment):
    """One path segment of the API, percent-encoded (a vhost "/" is "%2F")."""
    return urllib.parse.quote(segment, safe="")


class ApiError(Exception):
    def __init__(self, method, path, status, body):
        super().__init__(f"{method} {path} answered {status}: {body}")
        self.status = status
        self.body = body


class Broker:
    def __init__(self, binary):
        self.binary = binary
        self.data_dir = tempfile.mkdtemp(prefix="wharf-browser-")
        self.amqp_port = 0
        self.http_port = 0
        self.process = None
        self.log = []
        self._log_changed = threading.Condition()

    # --- running it

    def start(self):
        assert self.process is None, "the broker is already running"
        command = [
            self.binary,
            "--amqp-listen", f"127.0.0.1:{self.amqp_port}",
            "--http-listen", f"127.0.0.1:{self.http_port}",
            "--prometheus-listen", "none",
            "--data-dir", self.data_dir,
        ]
        self.log.append(f"$ {' '.join(command)}")
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        log_ended = threading.Event()
        threading.Thread(target=self._read_log, args=(self.process, log_ended), daemon=True).start()
        line = self._wait_for_ready(log_ended)
        self.amqp_port = int(AMQP_ADDRESS.search(line).group(1))
        self.http_port = int(HTTP_ADDRESS.search(line).group(1))

    def _read_log(self, process, log_ended):
        # Drained to the end, so a chatty broker never blocks on a full pipe.
        for line in process.stdout:
            with self._log_changed:
                self.log.append(ANSI_ESCAPE.sub("", line.rstrip("\n")))
                self._log_changed.notify_all()
        with self._log_changed:
            log_ended.set()
            self._log_changed.notify_all()

    def _wait_for_ready(self, log_ended):
        """The ready line, which names the ports; the log is shown if it does not come."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        seen = len(self.log)
        with self._log_changed:
            while True:
                for line in self.log[seen:]:
                    if "wharf ready" in line and AMQP_ADDRESS.search(line) and HTTP_ADDRESS.search(line):
                        return line
                seen = len(self.log)
                left = deadline - time.monotonic()
                if left <= 0 or log_ended.is_set():
                    break
                self._log_changed.wait(min(left, 0.5))
        status = self.process.poll()
        self.stop()
        raise RuntimeError(
            f"wharf was not ready within {READY_TIMEOUT_S} s (exit status {status}); its log:\n"
            + self.log_text()
        )

    def stop(self):
        """SIGTERM, then SIGKILL if it has not exited after 10 s."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.log.append(f"(did not exit {STOP_TIMEOUT_S} s after SIGTERM: killed)")
            process.kill()
            process.wait()

    def restart(self):
        """Stops it and starts it again on the same ports, over the same data."""
        self.stop()
        self.start()

    def close(self):
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_text(self, last=200):
        return "\n".join(self.log[-last:])

    # --- addresses

    @property
    def amqp_url(self):
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2f"

    @property
    def http_url(self):
        return f"http://127.0.0.1:{self.http_port}"

    def connect(self, vhost="/", user="guest", password="guest", client_properties=None):
        """A pika connection, as guest unless told; use it in a `with` block.
        `client_properties` are added to pika's own (a "connection_name" names it)."""
        parameters = pika.ConnectionParameters(
            host="127.0.0.1",
            port=self.amqp_port,
            virtual_host=vhost,
            credentials=pika.PlainCredentials(user, password),
            client_properties=client_properties,
        )
        return pika.BlockingConnection(parameters)

    # --- the management API, as guest unless told

    def api(self, method, path, body=None, user="guest", password="guest"):
        """One request: answers the parsed JSON (None when empty), or raises ApiError."""
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(
            self.http_url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Basic {credentials}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            raise ApiError(method, path, error.code, error.read().decode(errors="replace")) from None
        return json.loads(text) if text else None

    def add_user(self, name, password, tags=""):
        self.api("PUT", f"/api/users/{quote(name)}", {"password": password, "tags": tags})

    def add_vhost(self, name):
        self.api("PUT", f"/api/vhosts/{quote(name)}", {})

    def grant(self, user, vhost, configure=".*", write=".*", read=".*"):
        self.api(
            "PUT",
            f"/api/permissions/{quote(vhost)}/{quote(user)}",
            {"configure": configure, "write": write, "read": read},
        )

    def declare_queue(self, vhost, name, durable=True, auto_delete=False, arguments=None):
        self.api(
            "PUT",
            f"/api/queues/{quote(vhost)}/{quote(name)}",
            {"durable": durable, "auto_delete": auto_delete, "arguments": arguments or {}},
        )

    def queue(self, vhost, name):
        """The queue as the API shows it, or None when there is none."""
        try:
            return self.api("GET", f"/api/queues/{quote(vhost)}/{quote(name)}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def exchange(self, vhost, name):
        """The exchange as the API shows it, or None when there is none."""
        try:
            return self.api("GET", f"/api/exchanges/{quote(vhost)}/{quote(name)}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def queue_bindings(self, vhost, name):
        return self.api("GET", f"/api/queues/{quote(vhost)}/{quote(name)}/bindings")


@contextlib.contextmanager
def running_broker(binary):
    """A started broker, stopped and its data removed at the end of the block."""
    broker = Broker(binary)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()
