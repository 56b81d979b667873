#!/usr/bin/env python3
"""Quorum queues side by side: a 3-node Wharf cluster and a 3-node RabbitMQ cluster on
this machine (issue 18).

Starts three Wharf nodes (release build) on loopback as one cluster, and three RabbitMQ
nodes (Debian's rabbitmq-server, installed if missing) joined into one cluster with
`rabbitmqctl join_cluster`, each with throwaway data directories; runs the same
`wharf perf --quorum` scenarios against each, alternating, several runs each, through the
first node of each cluster (which leads the queues it declares: both brokers place a new
quorum queue's leader on the node the client is connected to). Prints the medians and
the Wharf/RabbitMQ ratios and writes them to bench/results/quorum-<timestamp>.json.

    python3 bench/quorum_compare.py [--runs 3] [--seconds 10] [--scenarios Q1,Q2,Q3]
                                    [--wharf-only]

Both clusters share the machine's two cores with the load generator: the figures are
ratios measured side by side, not absolute capacities.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import WHARF, ROOT, amqp_ready, cpu_seconds, free_port  # noqa: E402

SCENARIOS = {
    "Q1": (
        "1 producer, 1 consumer, 1 quorum queue, 1 KB persistent, confirms (1000 outstanding), "
        "manual acks, prefetch 100",
        "-x 1 -y 1 -s 1024 --quorum --persistent --confirm 1000 -q 100",
    ),
    "Q2": (
        "10 quorum queues in parallel, a producer and a consumer each, 1 KB persistent, confirms "
        "(100 outstanding each), manual acks, prefetch 100",
        "-x 10 -y 10 --queues 10 -s 1024 --quorum --persistent --confirm 100 -q 100",
    ),
    "Q3": (
        "publish-to-confirm latency at a fixed 5,000 msg/s, 1 quorum queue, 1 KB persistent",
        "-x 1 -y 1 -s 1024 --quorum --persistent --confirm 1000 -q 100 -r 5000",
    ),
}
SECRET = "a quorum benchmark's cluster secret\n"


class WharfCluster:
    name = "Wharf"

    def __init__(self, workdir):
        secret = workdir / "secret"
        secret.write_text(SECRET)
        secret.chmod(0o600)
        self.nodes = []
        cluster_ports = [free_port() for _ in range(3)]
        seeds = ",".join(f"127.0.0.1:{p}" for p in cluster_ports)
        for i in range(3):
            port = free_port()
            log = open(workdir / f"wharf-{i}.log", "w")
            proc = subprocess.Popen(
                [str(WHARF), "--node-name", f"wharf{i}", "--data-dir", str(workdir / f"wharf{i}"),
                 "--amqp-listen", f"127.0.0.1:{port}", "--amqps-listen", "none",
                 "--http-listen", f"127.0.0.1:{free_port()}",
                 "--prometheus-listen", f"127.0.0.1:{free_port()}",
                 "--cluster-listen", f"127.0.0.1:{cluster_ports[i]}",
                 "--cluster-seeds", seeds, "--cluster-secret-file", str(secret),
                 "--log-level", "warn"],
                stdout=log, stderr=subprocess.STDOUT)
            self.nodes.append((proc, port))
        for proc, port in self.nodes:
            if not amqp_ready(port, timeout=60):
                self.stop()
                sys.exit("a Wharf node did not start; see " + str(workdir))
        self.port = self.nodes[0][1]
        self.pids = [proc.pid for proc, _ in self.nodes]

    def version(self):
        return subprocess.run([str(WHARF), "--version"], capture_output=True,
                              text=True).stdout.strip()

    def stop(self):
        for proc, _ in self.nodes:
            proc.terminate()
        for proc, _ in self.nodes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


class RabbitCluster:
    name = "RabbitMQ"

    def __init__(self, workdir):
        if not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
            print("installing rabbitmq-server from Debian's package", flush=True)
            subprocess.run(["apt-get", "update", "-q"], check=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "rabbitmq-server"], check=True,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        subprocess.run(["service", "rabbitmq-server", "stop"], capture_output=True)
        self.home = workdir / "rabbitmq"
        self.home.mkdir()
        # One Erlang cookie for the three: they share $HOME.
        (self.home / ".erlang.cookie").write_text("wharfquorumbenchcookie")
        (self.home / ".erlang.cookie").chmod(0o400)
        (self.home / "enabled_plugins").write_text("[].\n")
        self.nodes = []
        for i in range(3):
            port = free_port()
            node = f"qqbench{i}x{os.getpid()}@localhost"
            config = self.home / f"node{i}"
            config.with_suffix(".conf").write_text(
                f"listeners.tcp.default = 127.0.0.1:{port}\nloopback_users.guest = true\n")
            env = {
                **os.environ,
                "HOME": str(self.home),
                "RABBITMQ_CONFIG_FILE": str(config),
                "RABBITMQ_MNESIA_BASE": str(self.home / f"mnesia{i}"),
                "RABBITMQ_LOG_BASE": str(self.home / f"log{i}"),
                "RABBITMQ_NODENAME": node,
                "RABBITMQ_DIST_PORT": str(free_port()),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
            }
            log = open(workdir / f"rabbitmq-{i}.log", "w")
            proc = subprocess.Popen(["/usr/lib/rabbitmq/bin/rabbitmq-server"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            self.nodes.append({"proc": proc, "port": port, "node": node, "env": env})
        for n in self.nodes:
            if not amqp_ready(n["port"], timeout=180):
                self.stop()
                sys.exit("a RabbitMQ node did not start; see " + str(workdir))
        first = self.nodes[0]["node"]
        for n in self.nodes[1:]:
            for args in (["stop_app"], ["join_cluster", first], ["start_app"]):
                self.ctl(n, args)
        for n in self.nodes:
            if not amqp_ready(n["port"], timeout=120):
                self.stop()
                sys.exit("a RabbitMQ node did not come back after joining")
        status = self.ctl(self.nodes[0], ["cluster_status", "--formatter", "json"])
        running = json.loads(status).get("running_nodes", [])
        if len(running) != 3:
            self.stop()
            sys.exit(f"RabbitMQ's cluster runs {running}, not three nodes")
        self.port = self.nodes[0]["port"]
        # Each node's Erlang VM runs in the session its start script leads.
        self.pids = [pid for n in self.nodes for pid in beam_in_session(n["proc"].pid)]
        if len(self.pids) != 3:
            self.stop()
            sys.exit(f"found {len(self.pids)} RabbitMQ VMs, not three")

    def ctl(self, n, args):
        done = subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", n["node"], *args],
                              env=n["env"], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {n['node']}: {done.stderr}")
        return done.stdout

    def version(self):
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"],
                             capture_output=True, text=True).stdout
        return "RabbitMQ " + out.strip()

    def stop(self):
        for n in self.nodes:
            subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", n["node"], "stop"],
                           env=n["env"], capture_output=True, timeout=60)
        for n in self.nodes:
            try:
                n["proc"].wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(n["proc"].pid, 9)


def beam_in_session(session):
    """The pids of the Erlang VMs (beam.smp) in session `session`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if comm.startswith("beam") and int(fields[3]) == session:
            found.append(int(entry.name))
    return found


def run_perf(cluster, flags, seconds, prefix):
    uri = f"amqp://guest:guest@127.0.0.1:{cluster.port}/%2f"
    command = [str(WHARF), "perf", "--uri", uri, "-z", str(seconds), "--json",
               "--queue-prefix", prefix] + flags.split()
    cpu_before = sum(cpu_seconds(pid) for pid in cluster.pids)
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 180)
    wall = time.time() - started
    cpu = sum(cpu_seconds(pid) for pid in cluster.pids) - cpu_before
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        raise RuntimeError(f"perf failed against {cluster.name}: {' '.join(command)}")
    result = json.loads(done.stdout)
    result["cluster_cpu_cores"] = cpu / wall
    result["command"] = "wharf perf " + " ".join(command[2:])
    return result


def summarize(runs):
    median = lambda values: statistics.median(values) if values else 0.0
    return {
        "confirmed": median([r["confirmed_per_second"] for r in runs]),
        "received": median([r["consumed_per_second"] for r in runs]),
        "confirm_p50_us": median([r["confirm_latency"]["p50_us"] for r in runs]),
        "confirm_p99_us": median([r["confirm_latency"]["p99_us"] for r in runs]),
        "cluster_cpu": median([r["cluster_cpu_cores"] for r in runs]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--wharf-only", action="store_true",
                        help="measure the Wharf cluster alone (to compare two builds)")
    args = parser.parse_args()
    scenarios = [s.strip().upper() for s in args.scenarios.split(",")]
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "wharf"], cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="wharf-quorum-bench-"))
    wharf = WharfCluster(work)
    rabbit = None
    if not args.wharf_only:
        try:
            rabbit = RabbitCluster(work)
        except BaseException:
            wharf.stop()
            raise
    clusters = [c for c in (wharf, rabbit) if c]
    results = {s: {c.name: [] for c in clusters} for s in scenarios}
    try:
        for run in range(args.runs):
            for scenario in scenarios:
                for cluster in clusters:
                    prefix = f"qq{scenario.lower()}r{run}"
                    result = run_perf(cluster, SCENARIOS[scenario][1], args.seconds, prefix)
                    results[scenario][cluster.name].append(result)
                    print(f"run {run + 1} {scenario} {cluster.name}: "
                          f"confirmed {result['confirmed_per_second']:,.0f} msg/s, received "
                          f"{result['consumed_per_second']:,.0f} msg/s, confirm p99 "
                          f"{result['confirm_latency']['p99_us']:,.0f} µs", flush=True)
        versions = (wharf.version(), rabbit.version() if rabbit else "no RabbitMQ")
    finally:
        wharf.stop()
        if rabbit:
            rabbit.stop()
    summary = {s: {name: summarize(runs) for name, runs in by.items()}
               for s, by in results.items()}
    print()
    print(f"{versions[0]} vs {versions[1]}, 3 nodes each, {args.runs} runs of {args.seconds} s, "
          "medians:")
    for scenario, by in summary.items():
        w = by["Wharf"]
        if "RabbitMQ" not in by:
            print(f"{scenario}: {SCENARIOS[scenario][0]}\n"
                  f"    Wharf    confirmed {w['confirmed']:>9,.0f}  received "
                  f"{w['received']:>9,.0f} msg/s  confirm p50/p99 "
                  f"{w['confirm_p50_us']:,.0f}/{w['confirm_p99_us']:,.0f} µs")
            continue
        r = by["RabbitMQ"]
        ratio = (w["received"] / r["received"]) if r["received"] else float("nan")
        print(f"{scenario}: {SCENARIOS[scenario][0]}\n"
              f"    Wharf    confirmed {w['confirmed']:>9,.0f}  received {w['received']:>9,.0f} "
              f"msg/s  confirm p50/p99 {w['confirm_p50_us']:,.0f}/{w['confirm_p99_us']:,.0f} µs  "
              f"CPU {w['cluster_cpu']:.2f}\n"
              f"    RabbitMQ confirmed {r['confirmed']:>9,.0f}  received {r['received']:>9,.0f} "
              f"msg/s  confirm p50/p99 {r['confirm_p50_us']:,.0f}/{r['confirm_p99_us']:,.0f} µs  "
              f"CPU {r['cluster_cpu']:.2f}\n"
              f"    received Wharf/RabbitMQ: {ratio:.1f}x")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"quorum-{stamp}.json"
    path.write_text(json.dumps({
        "date": stamp, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "versions": versions, "runs": args.runs, "seconds": args.seconds,
        "scenarios": {s: SCENARIOS[s] for s in scenarios}, "summary": summary,
        "results": results}, indent=1))
    print(f"\nwritten to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
