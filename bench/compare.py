#!/usr/bin/env python3
"""Side-by-side benchmark of Wharf and RabbitMQ on this machine (issue 4).

Installs RabbitMQ from Debian's package if it is missing, starts it on loopback with a
throwaway data directory, starts a release build of Wharf the same way, and runs the same
`wharf perf` scenarios against both, alternating, several runs each. Records each run's
rates and latencies, the CPU time of the broker process and of perf, and writes the
medians and the Wharf/RabbitMQ ratios into docs/performance.md (between the bench markers)
and bench/results/<timestamp>.json. Both brokers are stopped at the end.

    python3 bench/compare.py [--runs 3] [--seconds 10] [--scenarios A,B,C,D,E,F,G]
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHARF = ROOT / "target" / "release" / "wharf"
DOC = ROOT / "docs" / "performance.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

# name: (description, wharf perf flags)
SCENARIOS = {
    "A": ("1 producer, 1 consumer, 1 queue, 16 B, transient, autoack", "-x 1 -y 1 -s 16 -a"),
    "B": ("as A with manual acks, prefetch 100", "-x 1 -y 1 -s 16 -q 100"),
    "C": (
        "persistent 1 KB, durable queue, confirms (1000 outstanding), manual acks, prefetch 100",
        "-x 1 -y 1 -s 1024 --persistent --confirm 1000 -q 100",
    ),
    "D": ("publish only, 16 B, no consumer", "-x 1 -y 0 -s 16"),
    "E": ("4 producers, 4 consumers, 4 queues, 16 B, autoack", "-x 4 -y 4 --queues 4 -s 16 -a"),
    "F": (
        "fanout to 10 queues, a consumer each, 16 B, autoack",
        "-x 1 -y 10 --queues 10 -e perf.fanout -t fanout -s 16 -a",
    ),
    "G": ("latency at a fixed 10,000 msg/s, 16 B, autoack", "-x 1 -y 1 -s 16 -a -r 10000"),
}


def amqp_ready(port, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"AMQP\x00\x00\x09\x01")
                s.settimeout(2)
                if s.recv(1) == b"\x01":
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Wharf:
    name = "Wharf"

    def __init__(self, workdir):
        self.port = free_port()
        self.data = workdir / "wharf-data"
        self.log = open(workdir / "wharf.log", "w")
        self.proc = subprocess.Popen(
            [str(WHARF), "--amqp-listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data),
             "--log-level", "warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        if not amqp_ready(self.port):
            self.proc.kill()
            sys.exit("wharf did not start; see " + self.log.name)
        self.pid = self.proc.pid

    def version(self):
        return subprocess.run([str(WHARF), "--version"], capture_output=True, text=True).stdout.strip()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


class RabbitMQ:
    name = "RabbitMQ"

    def __init__(self, workdir):
        if not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
            print("installing rabbitmq-server from Debian's package", flush=True)
            subprocess.run(["apt-get", "update", "-q"], check=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "rabbitmq-server"], check=True,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        # Debian's package starts a server when installed on a machine with an init system.
        subprocess.run(["service", "rabbitmq-server", "stop"], capture_output=True)
        self.port = free_port()
        self.home = workdir / "rabbitmq"
        self.home.mkdir()
        (self.home / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users.guest = true\n")
        self.node = f"wharfbench{os.getpid()}@localhost"
        self.env = {
            **os.environ,
            "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq"),
            "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.home / "log"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(free_port()),
            "HOME": str(self.home),
        }
        self.log = open(workdir / "rabbitmq.log", "w")
        self.proc = subprocess.Popen(["/usr/lib/rabbitmq/bin/rabbitmq-server"], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if not amqp_ready(self.port, timeout=120):
            self.stop()
            sys.exit("RabbitMQ did not start; see " + self.log.name)
        found = subprocess.run(["pgrep", "-f", f"beam.smp.*-home {self.home} "], capture_output=True,
                               text=True).stdout.split()
        if not found:
            self.stop()
            sys.exit("cannot find RabbitMQ's beam.smp process")
        self.pid = int(found[0])

    def version(self):
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"],
                             capture_output=True, text=True).stdout
        return "RabbitMQ " + out.strip()

    def stop(self):
        if not hasattr(self, "proc"):
            return
        subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", self.node, "stop"],
                       env=self.env, capture_output=True, timeout=60)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def run_perf(broker, flags, seconds, prefix):
    uri = f"amqp://guest:guest@127.0.0.1:{broker.port}/%2f"
    command = [str(WHARF), "perf", "--uri", uri, "-z", str(seconds), "--json",
               "--queue-prefix", prefix] + flags.split()
    cpu_before = cpu_seconds(broker.pid)
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    wall = time.time() - started
    cpu = cpu_seconds(broker.pid) - cpu_before
    if done.returncode != 0:
        interesting = [line for line in done.stderr.splitlines()
                       if not line.lstrip()[:1].isdigit() and not line.lstrip().startswith("at ")]
        print("\n".join(interesting[:40]), file=sys.stderr)
        raise RuntimeError(f"perf failed against {broker.name}: {' '.join(command)}")
    result = json.loads(done.stdout)
    result["broker_cpu_cores"] = cpu / wall
    result["perf_cpu_cores"] = result["perf_cpu_seconds"] / result["seconds"]
    result["broker_rss_mb"] = rss_mb(broker.pid)
    result["command"] = "wharf perf " + " ".join(command[2:])
    return result


def median(values):
    return statistics.median(values) if values else 0.0


def summarize(runs):
    """Medians of the figures that matter, over a scenario's runs on one broker."""
    return {
        "sent": median([r["published_per_second"] for r in runs]),
        "received": median([r["consumed_per_second"] for r in runs]),
        "confirmed": median([r["confirmed_per_second"] for r in runs]),
        "p50": median([r["latency"]["p50_us"] for r in runs]),
        "p99": median([r["latency"]["p99_us"] for r in runs]),
        "p999": median([r["latency"]["p999_us"] for r in runs]),
        "broker_cpu": median([r["broker_cpu_cores"] for r in runs]),
        "perf_cpu": median([r["perf_cpu_cores"] for r in runs]),
    }


def fmt_rate(x):
    return f"{x:,.0f}"


def fmt_us(x):
    return f"{x / 1000:.2f} ms" if x >= 1000 else f"{x:.0f} µs"


def headline(scenario, m):
    """The figure a scenario is judged on."""
    if scenario == "D":
        return m["sent"]
    if scenario == "C":
        return min(m["confirmed"], m["received"]) if m["received"] else m["confirmed"]
    return m["received"]


def markdown(results, meta):
    lines = [START, "",
             f"Run {meta['date']} with `{meta['command']}`: {meta['runs']} runs of "
             f"{meta['seconds']} s per scenario and broker, alternating; medians.",
             f"Machine: {meta['machine']}. {meta['wharf']}; {meta['rabbitmq']}. "
             "Load generator: `wharf perf` on the same machine (its CPU is shown).", "",
             "| scenario | Wharf msg/s | RabbitMQ msg/s | Wharf/RabbitMQ | Wharf p50 / p99 / p99.9 | "
             "RabbitMQ p50 / p99 / p99.9 | CPU cores: Wharf, perf | CPU cores: RabbitMQ, perf |",
             "|---|---|---|---|---|---|---|---|"]
    for scenario, by_broker in results.items():
        w, r = by_broker["Wharf"], by_broker["RabbitMQ"]
        hw, hr = headline(scenario, w), headline(scenario, r)
        ratio = f"{hw / hr:.1f}x" if hr else "n/a"
        lat = lambda m: (f"{fmt_us(m['p50'])} / {fmt_us(m['p99'])} / {fmt_us(m['p999'])}"
                         if m["p50"] else "n/a")
        lines.append(
            f"| {scenario}: {SCENARIOS[scenario][0]} | {fmt_rate(hw)} | {fmt_rate(hr)} | {ratio} | "
            f"{lat(w)} | {lat(r)} | {w['broker_cpu']:.2f}, {w['perf_cpu']:.2f} | "
            f"{r['broker_cpu']:.2f}, {r['perf_cpu']:.2f} |")
    lines += ["", "Msg/s is what consumers received (D: what was sent; C: confirmed and received, "
              "the lower). Flags of each scenario: " +
              "; ".join(f"{k}: `{SCENARIOS[k][1]}`" for k in results) + ".", "", END]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    args = parser.parse_args()
    scenarios = [s.strip().upper() for s in args.scenarios.split(",")]
    for s in scenarios:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s}; known: {', '.join(SCENARIOS)}")

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "wharf"], cwd=ROOT, check=True)
    workdir = Path(tempfile.mkdtemp(prefix="wharf-bench-"))
    brokers = []
    try:
        brokers.append(Wharf(workdir))
        brokers.append(RabbitMQ(workdir))
        raw = {s: {b.name: [] for b in brokers} for s in scenarios}
        for scenario in scenarios:
            for run in range(args.runs):
                order = brokers if run % 2 == 0 else list(reversed(brokers))
                for broker in order:
                    prefix = f"bench-{scenario.lower()}-{run}"
                    result = run_perf(broker, SCENARIOS[scenario][1], args.seconds, prefix)
                    raw[scenario][broker.name].append(result)
                    print(f"{scenario} run {run + 1} {broker.name:8}: sent {result['published_per_second']:>11,.0f}"
                          f"  received {result['consumed_per_second']:>11,.0f}"
                          f"  confirmed {result['confirmed_per_second']:>9,.0f}"
                          f"  p99 {fmt_us(result['latency']['p99_us']):>9}"
                          f"  broker CPU {result['broker_cpu_cores']:.2f}", flush=True)
        meta = {
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "command": "python3 bench/compare.py " + " ".join(sys.argv[1:]),
            "runs": args.runs,
            "seconds": args.seconds,
            "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
            "wharf": brokers[0].version(),
            "rabbitmq": brokers[1].version(),
        }
    finally:
        for broker in brokers:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    results = {s: {name: summarize(runs) for name, runs in by.items()} for s, by in raw.items()}
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (out_dir / f"{stamp}.json").write_text(json.dumps({"meta": meta, "runs": raw}, indent=1))
    table = markdown(results, meta)
    print(table)
    if not args.no_doc:
        text = DOC.read_text()
        if START in text and END in text:
            before, rest = text.split(START, 1)
            after = rest.split(END, 1)[1]
            DOC.write_text(before + table + after)
        else:
            DOC.write_text(text.rstrip() + "\n\n## Side by side with RabbitMQ (bench/compare.py)\n\n" + table + "\n")
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
