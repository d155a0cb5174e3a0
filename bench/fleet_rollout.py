"""A 3-step rollout (1 node, 25%, 100%) to thousands of simulated agents, with heartbeat
latency measured open-loop, and what each process spent.

Targets (brief): 10,000 agents on PostgreSQL report Attached (the API's summary, phase
Succeeded) within 60 s of the change; heartbeat p99 <= 250 ms meanwhile, at the
agent's default heartbeat behaviour (5 s until the API asks for a longer interval).

Placement, all on this machine: PostgreSQL, Redis, the API (``--workers`` uvicorn
processes, uvloop + httptools), one Celery worker, and the simulated agents in
``--generators`` processes of their own (``_simagents.py`` on uvloop and a lean HTTP/1.1
client, ``_rawhttp.py``), never in the API. Each agent holds the agent's connections,
long-polls, downloads the artifact's three files once, reports Attached, and heartbeats
open-loop (latency from the scheduled send time). The API's own histogram
(``/metrics``) is the cross-check. Nodes and tokens are seeded straight into the
database: registration is not what is measured.

    .venv/bin/python bench/fleet_rollout.py [--agents 1000,3000,10000] [--database postgres]
    .venv/bin/python bench/fleet_rollout.py --agents 10000 --idle 300   # steady state
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bpfleet_api import db, security
from bpfleet_api.models import Node, Role, Token
from sqlalchemy import insert, text

from bpfleet_core import signing
from bpfleet_core.features import FeatureReport
from tests import services
from tests.conftest import build_catalog, sign_object

REPO = Path(__file__).resolve().parent.parent
SEEDED_AT = datetime(2026, 1, 1, tzinfo=UTC)  # a datetime: SQLite takes no strings
AGENTS_PER_GENERATOR = 5000
SOURCE_PORTS = 10_000  # connections per source address, well inside what connect() may use
AGENT_DEFAULT_HEARTBEAT = 5.0  # bpfleet_agent's default until the API says otherwise
AGENT_LONG_POLL_WAIT = 300.0  # bpfleet_agent's default
SPEC = {
    "artifact": {"name": "syscount", "version": "1.0.0"},
    "attach": [{"entryPoint": "count_sys_enter", "type": "raw_tracepoint"}],
    "nodeSelector": {"matchLabels": {"sim": "yes"}},
    "rollout": {"steps": ["1", "25%", "100%"]},
}


def seed_nodes(database_url: str, count: int) -> list[tuple[str, str]]:
    """Insert ``count`` registered nodes with agent tokens; return (name, secret) pairs."""
    features = FeatureReport.model_validate_json(
        (REPO / "tests" / "cli" / "feature-report.json").read_text()
    )
    engine = db.make_engine(database_url)
    db.migrate(engine)
    pairs = [(f"sim-{i:05d}", f"bpf_sim_{i}_{os.urandom(8).hex()}") for i in range(count)]
    with engine.begin() as connection:
        for start in range(0, count, 5000):
            chunk = pairs[start : start + 5000]
            connection.execute(
                insert(Node),
                [
                    {
                        "name": name,
                        "labels": {"sim": "yes"},
                        "agent_labels": {"sim": "yes"},
                        "admin_labels": {},
                        "kernel_release": features.kernel_release,
                        "registered_at": SEEDED_AT,
                        "desired_revision": 0,
                        "applied_revision": 0,
                    }
                    for name, _ in chunk
                ],
            )
            connection.execute(
                insert(Token),
                [
                    {
                        "name": f"node:{name}",
                        "role": Role.AGENT,
                        "digest": security.digest(secret),
                        "node": name,
                        "configured": False,
                        "created_at": SEEDED_AT,
                    }
                    for name, secret in chunk
                ],
            )
    engine.dispose()
    return pairs


# ------------------------------------------------------------------ processes and CPU


@dataclass
class Roles:
    """The processes of each role, found again at every sample (workers come and go)."""

    api: psutil.Process
    worker: psutil.Process
    redis: psutil.Process
    postgres: psutil.Process | None
    generators: list[psutil.Process] = field(default_factory=list)

    def members(self) -> dict[str, list[psutil.Process]]:
        found = {
            "api": [self.api, *self.api.children(recursive=True)],
            "celery": [self.worker, *self.worker.children(recursive=True)],
            "redis": [self.redis],
            "generators": list(self.generators),
        }
        if self.postgres is not None:
            found["postgres"] = [self.postgres, *self.postgres.children(recursive=True)]
        return found

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) per role so far."""
        totals: dict[str, float] = {}
        for role, processes in self.members().items():
            total = 0.0
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    total += times.user + times.system
            totals[role] = total
        return totals


def profile(roles: Roles, directory: Path, agents: int) -> list[subprocess.Popen[bytes]]:
    """py-spy on each API process (by thread: the event loop apart), the Celery
    worker and the generators, collapsed stacks in ``directory``, until sent SIGINT."""
    directory.mkdir(parents=True, exist_ok=True)
    members = roles.members()
    spies = []
    for role in ("api", "celery", "generators"):
        for process in members[role]:
            options = ["--threads", "--gil"] if role == "api" else []
            output = directory / f"{agents}-{role}-{process.pid}.txt"
            spies.append(
                subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        *options,
                        "-r",
                        "100",
                        "-f",
                        "raw",
                        "-o",
                        str(output),
                        "-p",
                        str(process.pid),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    return spies


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {role: after[role] - before.get(role, 0.0) for role in after}


def postgres_process(port: int) -> psutil.Process | None:
    for process in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            line = process.info["cmdline"] or []
            if line and line[0].endswith("/postgres") and str(port) in line:
                return process
    return None


# ------------------------------------------------------------------ measuring


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


_BUCKET = re.compile(r'^(\w+)_bucket\{(?:call="(\w+)",)?le="([^"]+)"\} ([0-9.e+]+)$')


def histograms(client: httpx.Client) -> dict[str, dict[float, float]]:
    """Cumulative buckets of the heartbeat histogram and the event loop's lag."""
    found: dict[str, dict[float, float]] = {"heartbeat": {}, "loop": {}}
    for line in client.get("/metrics").text.splitlines():
        match = _BUCKET.match(line)
        if match is None:
            continue
        name, call, bound, value = match.groups()
        if name == "bpfleet_agent_request_seconds" and call == "heartbeat":
            found["heartbeat"][float(bound)] = float(value)
        elif name == "bpfleet_event_loop_lag_seconds":
            found["loop"][float(bound)] = float(value)
    return found


def server_p99(before: dict[float, float], after: dict[float, float]) -> tuple[float, int]:
    """The server-side heartbeat p99 (the upper bound of its bucket), and the count."""
    counts = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    if not counts or counts[-1][1] <= 0:
        return math.nan, 0
    total = counts[-1][1]
    for bound, cumulative in counts:
        if cumulative >= 0.99 * total:
            return bound, int(total)
    return math.inf, int(total)


@dataclass
class Generators:
    processes: list[subprocess.Popen[str]]
    results: list[Path]

    def stop(self) -> list[dict[str, Any]]:
        for process in self.processes:
            with contextlib.suppress(BrokenPipeError):
                assert process.stdin is not None
                process.stdin.write("stop\n")
                process.stdin.flush()
        for process in self.processes:
            process.wait(timeout=120)
        return [json.loads(path.read_text()) for path in self.results]


@contextlib.contextmanager
def generators(
    api: services.Api, pairs: list[tuple[str, str]], count: int, root: Path, connections: int
) -> Iterator[Generators]:
    processes, results = [], []
    size = math.ceil(len(pairs) / count)
    for index in range(count):
        agents_file, results_file = root / f"agents-{index}.json", root / f"results-{index}.json"
        agents_file.write_text(json.dumps(pairs[index * size : (index + 1) * size]))
        config = root / f"generator-{index}.json"
        config.write_text(
            json.dumps(
                {
                    "api_url": api.url,
                    "agents_file": str(agents_file),
                    "results_file": str(results_file),
                    # Connections to one address and port from one source address
                    # share half the ephemeral ports (connect() takes the even ones).
                    "source_addresses": [
                        f"127.0.{1 + index}.{1 + k}"
                        for k in range(math.ceil(size * connections / SOURCE_PORTS))
                    ],
                    "program": "sim",
                    "heartbeat_seconds": AGENT_DEFAULT_HEARTBEAT,
                    "long_poll_wait": AGENT_LONG_POLL_WAIT,
                    "connections_per_agent": connections,
                }
            )
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, str(REPO / "bench" / "_simagents.py"), str(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
        results.append(results_file)
    running = Generators(processes, results)
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        yield running
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()


def upload_artifact(client: httpx.Client, artifacts: Path) -> None:
    files = {
        part: (artifacts / f"syscount{suffix}").read_bytes()
        for part, suffix in (
            ("object", ".bpf.o"),
            ("manifest", ".manifest.json"),
            ("signature", ".manifest.json.sig"),
        )
    }
    response = client.post("/v1/artifacts", files=files)
    assert response.status_code in (200, 201), response.text


def statements(database_url: str, reset: bool = False) -> float:
    """SQL statements the server ran so far (pg_stat_statements), counted again from 0
    after ``reset``."""
    engine = db.make_engine(database_url)
    try:
        with engine.begin() as connection:
            if reset:
                connection.execute(text("SELECT pg_stat_statements_reset()"))
            return float(
                connection.execute(
                    text("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements")
                ).scalar()
                or 0
            )
    finally:
        engine.dispose()


def top_statements(database_url: str, count: int = 8) -> list[tuple[int, str]]:
    """The statements run most often so far (calls, text), to say where SQL goes."""
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT calls, query FROM pg_stat_statements ORDER BY calls DESC LIMIT :n"),
                {"n": count},
            ).all()
            return [(int(calls), " ".join(query.split())[:160]) for calls, query in rows]
    finally:
        engine.dispose()


def measure_idle(
    seconds: float,
    *,
    agents: int,
    roles: Roles,
    running: Generators,
    database_url: str,
    postgres: services.Postgres | None,
) -> dict[str, Any]:
    """Steady state: what every process spends, and the SQL run, with nothing changing."""
    if postgres:  # the top statements are the idle ones only
        statements(database_url, reset=True)
    cpu, sql = roles.cpu(), statements(database_url) if postgres else math.nan
    time.sleep(seconds)
    spent = delta(roles.cpu(), cpu)
    sql_rate = (statements(database_url) - sql) / seconds if postgres else math.nan
    top = top_statements(database_url) if postgres else []
    running.stop()
    return {
        "agents": agents,
        "idle": seconds,
        "cpu": spent,
        "sql_per_second": sql_rate,
        "top_statements": top,
    }


def run_once(arguments: argparse.Namespace, agents: int, root: Path) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(services.redis_server())
        postgres = None
        if arguments.database == "postgres":
            postgres = stack.enter_context(
                services.postgres_server(
                    "shared_preload_libraries=pg_stat_statements", "max_connections=400"
                )
            )
            database_url = postgres.create_database()
            engine = db.make_engine(database_url)
            with engine.begin() as connection:
                connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
            engine.dispose()
        else:
            database_url = f"sqlite:///{root}/bpfleet-{agents}.db"
        pairs = seed_nodes(database_url, agents)
        api = stack.enter_context(
            services.api_server(
                database_url,
                redis.url,
                root / "trust",
                root,
                workers=arguments.workers,
                rollout_tick_seconds="0.5",
            )
        )
        worker = api.start_worker()
        client = stack.enter_context(api.client())
        upload_artifact(client, root / "artifacts")
        count = arguments.generators or max(2, math.ceil(agents / AGENTS_PER_GENERATOR))
        running = stack.enter_context(generators(api, pairs, count, root, arguments.connections))
        roles = Roles(
            api=psutil.Process(api.process.pid),  # type: ignore[union-attr]
            worker=psutil.Process(worker.pid),
            redis=psutil.Process(redis.process.pid),  # type: ignore[union-attr]
            postgres=postgres_process(postgres.port) if postgres else None,
            generators=[psutil.Process(p.pid) for p in running.processes],
        )
        time.sleep(arguments.settle)  # every long-poll open, heartbeats under way
        if arguments.idle:
            return measure_idle(
                arguments.idle,
                agents=agents,
                roles=roles,
                running=running,
                database_url=database_url,
                postgres=postgres,
            )
        cpu_before, buckets_before = roles.cpu(), histograms(client)
        spies = profile(roles, arguments.profile, agents) if arguments.profile else []
        started = time.time()
        response = client.put("/v1/programs/sim", json=SPEC)
        assert response.status_code == 200, response.text
        summary: dict[str, int] = {}
        phase = ""
        while time.time() - started < arguments.timeout:
            time.sleep(1.0)
            with contextlib.suppress(httpx.HTTPError):
                document = client.get("/v1/programs/sim").json()
                summary, phase = document["summary"], document["rollout"]["phase"]
                if summary["attached"] == agents and phase == "Succeeded":
                    break
        finished = time.time()
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled, and exits
        cpu = delta(roles.cpu(), cpu_before)
        buckets_after = histograms(client)
        server, served = server_p99(buckets_before["heartbeat"], buckets_after["heartbeat"])
        lag, _ = server_p99(buckets_before["loop"], buckets_after["loop"])
        results = running.stop()
    return figures(
        results,
        agents=agents,
        started=started,
        finished=finished,
        done=summary.get("attached") == agents and phase == "Succeeded",
        state=(summary, phase),
        server=(server, served, lag),
        cpu=cpu,
    )


def figures(
    results: list[dict[str, Any]],
    *,
    agents: int,
    started: float,
    finished: float,
    done: bool,
    state: tuple[dict[str, int], str],
    server: tuple[float, int, float],
    cpu: dict[str, float],
) -> dict[str, Any]:
    """One run's figures: what the generators saw within the rollout, and the server's."""
    latencies = [
        latency
        for result in results
        for scheduled, latency in result["latencies"]
        if started <= scheduled <= finished
    ]
    failed = sum(
        1
        for result in results
        for scheduled in result["failed_beats"]
        if started <= scheduled <= finished
    )
    lags = [lag for result in results for at, lag in result["lags"] if started <= at <= finished]
    phases = [p[1:] for result in results for p in result["phases"] if started <= p[0] <= finished]
    slow = [p for p in phases if sum(p) > 0.25]  # where the beats over the target waited
    waited = {
        name: round(statistics.mean(p[i] for p in slow) * 1000) if slow else 0
        for i, name in enumerate(("late_to_send_ms", "queued_ms", "connecting_ms", "answer_ms"))
    }
    assigned = [t - started for result in results for t in result["assigned"]]
    attached = [t - started for result in results for t in result["attached"]]
    return {
        "agents": agents,
        "seconds": finished - started,
        "done": done,
        "summary": state[0],
        "phase": state[1],
        "heartbeats": len(latencies),
        "failed_beats": failed,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "server_p99_ms": server[0] * 1000,
        "server_beats": server[1],
        "loop_lag_p99_ms": server[2] * 1000,
        "generator_lag_p99_ms": percentile(lags, 0.99) * 1000,
        "slow_beats": len(slow),
        "slow_beats_waited": waited,
        "interval": results[0]["interval"] if results else math.nan,
        "assigned": (min(assigned), statistics.median(assigned), max(assigned))
        if assigned
        else None,
        "attached": (min(attached), statistics.median(attached), max(attached))
        if attached
        else None,
        "errors": sum(result["errors"] for result in results),
        "why": [result["why"] for result in results],
        "cpu": cpu,
        "load": os.getloadavg(),
    }


def show(result: dict[str, Any]) -> str:
    cpu = " ".join(f"{role} {seconds:.1f}" for role, seconds in sorted(result["cpu"].items()))
    if "idle" in result:
        top = "".join(f"\n    {calls:>8} {query}" for calls, query in result["top_statements"])
        return (
            f"{result['agents']:>6} agents idle {result['idle']} s: CPU s {cpu}; "
            f"SQL statements/s {result['sql_per_second']:.1f}; most run:{top}"
        )
    spread = ""
    if result["assigned"]:
        spread = "delivered {:.1f}/{:.1f}/{:.1f} s, ".format(*result["assigned"])
    if result["attached"]:
        spread += "accepted {:.1f}/{:.1f}/{:.1f} s".format(*result["attached"])
    return (
        f"{result['agents']:>6} agents: {result['seconds']:.1f} s "
        f"({'Succeeded' if result['done'] else 'NOT DONE: ' + str(result['summary'])}); "
        f"heartbeats {result['heartbeats']} (failed {result['failed_beats']}, interval "
        f"{result['interval']:g} s) p50 {result['p50_ms']:.0f} ms p99 {result['p99_ms']:.0f} ms, "
        f"server p99 <= {result['server_p99_ms']:.0f} ms ({result['server_beats']}), "
        f"API loop lag p99 <= {result['loop_lag_p99_ms']:.0f} ms; "
        f"generator lag p99 {result['generator_lag_p99_ms']:.0f} ms; {spread}; CPU s {cpu}; "
        f"load {result['load'][0]:.2f}; failures {result['why']}; beats over 250 ms: "
        f"{result['slow_beats']}, on average {result['slow_beats_waited']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="10000", help="comma-separated fleet sizes")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--workers", type=int, default=2, help="API processes")
    parser.add_argument("--generators", type=int, default=0, help="default: 5,000 agents each")
    parser.add_argument("--connections", type=int, default=3, help="per agent (the agent holds 3)")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds before the change")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--idle", type=float, default=0.0, help="no rollout: seconds of steady state"
    )
    parser.add_argument("--json", type=Path, help="append results to this file")
    parser.add_argument("--profile", type=Path, help="py-spy the API and worker into here")
    parser.add_argument(
        "--keep", type=Path, help="work in this directory and keep it (the API's logs)"
    )
    arguments = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the API inherits it
    with contextlib.ExitStack() as stack:
        if arguments.keep:
            arguments.keep.mkdir(parents=True, exist_ok=True)
            root = arguments.keep
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bpfleet-bench-")))
        build_catalog(root / "build")
        key = root / "signing.key"
        signing.generate_key_pair(key, root / "trust" / "signing.pub")
        sign_object(root / "build" / "syscount.bpf.o", root / "artifacts", "syscount", "1.0.0", key)
        for agents in (int(size) for size in arguments.agents.split(",")):
            result = run_once(arguments, agents, root)
            print(show(result), flush=True)
            if arguments.json:
                with arguments.json.open("a") as output:
                    output.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
