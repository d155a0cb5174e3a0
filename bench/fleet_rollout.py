"""Rollout of one program to 10,000 simulated agents, and heartbeat latency under load.

Targets (brief): every agent reports Attached within 60 s of the change; heartbeat p99
<= 250 ms meanwhile. One API process (uvicorn), one Celery worker and Redis run here;
the agents are lightweight protocol clients in one asyncio process: each holds a
long-poll open, reports Attached when its assignment arrives, and heartbeats every
HEARTBEAT_SECONDS. Nodes and their credentials are seeded straight into the database
(registration is not what is measured).

    .venv/bin/python bench/fleet_rollout.py [--agents 10000] [--database sqlite|postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bpfleet_api import db, security
from bpfleet_api.models import Node, Role, Token

from bpfleet_core.features import FeatureReport
from tests import services
from tests.conftest import build_catalog, sign_object

REPO = Path(__file__).resolve().parent.parent
HEARTBEAT_SECONDS = 10.0


def seed_nodes(database_url: str, count: int) -> list[tuple[str, str]]:
    """Insert ``count`` registered nodes with agent tokens; return (name, secret) pairs."""
    features = FeatureReport.model_validate_json(
        (REPO / "tests" / "cli" / "feature-report.json").read_text()
    )
    engine = db.make_engine(database_url)
    db.migrate(engine)
    pairs = [
        (f"sim-{index:05d}", f"bpf_sim_{index}_{os.urandom(8).hex()}") for index in range(count)
    ]
    from sqlmodel import Session

    with Session(engine) as session:
        for name, secret in pairs:
            session.add(
                Node(
                    name=name,
                    labels={"sim": "yes"},
                    kernel_release=features.kernel_release,
                    features=features.model_copy(update={"node": name}).model_dump(mode="json"),
                )
            )
            session.add(
                Token(
                    name=f"node:{name}", role=Role.AGENT, digest=security.digest(secret), node=name
                )
            )
        session.commit()
    engine.dispose()
    return pairs


class Agent:
    def __init__(self, session: aiohttp.ClientSession, name: str, token: str) -> None:
        self.session, self.name = session, name
        self.headers = {"Authorization": f"Bearer {token}"}
        self.revision = 0
        self.attached_at: float | None = None
        self.assigned_at: float | None = None

    async def follow(self, program: str, stop: asyncio.Event) -> None:
        while not stop.is_set() and self.attached_at is None:
            try:
                async with self.session.get(
                    "/v1/agent/assignments",
                    params={"after": self.revision, "wait": 30},
                    headers=self.headers,
                ) as response:
                    if response.status != 200:
                        continue
                    document = await response.json()
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(random.uniform(0.5, 1.5))
                continue
            self.revision = document["revision"]
            if any(p["name"] == program for p in document["programs"]):
                self.assigned_at = time.monotonic()
                await self.report(program)

    async def report(self, program: str) -> None:
        body = {
            "node": self.name,
            "revision": self.revision,
            "programs": [
                {"name": program, "state": "Attached", "updatedAt": "2026-01-01T00:00:00Z"}
            ],
            "reportedAt": "2026-01-01T00:00:00Z",
        }
        for _ in range(20):
            try:
                async with self.session.post(
                    "/v1/agent/status", json=body, headers=self.headers
                ) as response:
                    if response.status == 204:
                        self.attached_at = time.monotonic()
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(random.uniform(0.2, 1.0))

    async def heartbeats(self, latencies: list[float], stop: asyncio.Event) -> None:
        await asyncio.sleep(random.uniform(0, HEARTBEAT_SECONDS))
        while not stop.is_set():
            started = time.monotonic()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.session.post(
                    "/v1/agent/heartbeat", json={"revision": self.revision}, headers=self.headers
                ) as response:
                    if response.status == 204:
                        latencies.append(time.monotonic() - started)
            await asyncio.sleep(HEARTBEAT_SECONDS)


async def run(api: services.Api, pairs: list[tuple[str, str]], artifact_dir: Path) -> None:
    connector = aiohttp.TCPConnector(limit=0)  # one connection per agent and call
    timeout = aiohttp.ClientTimeout(total=90)
    async with aiohttp.ClientSession(
        base_url=api.url, connector=connector, timeout=timeout
    ) as session:
        admin = {"Authorization": f"Bearer {api.admin_token}"}
        form = aiohttp.FormData()
        for part, suffix in (
            ("object", ".bpf.o"),
            ("manifest", ".manifest.json"),
            ("signature", ".manifest.json.sig"),
        ):
            form.add_field(part, (artifact_dir / f"syscount{suffix}").read_bytes(), filename=part)
        async with session.post("/v1/artifacts", data=form, headers=admin) as response:
            assert response.status == 201, await response.text()
        agents = [Agent(session, name, token) for name, token in pairs]
        stop, latencies = asyncio.Event(), []
        tasks = [asyncio.create_task(agent.follow("sim", stop)) for agent in agents]
        tasks += [asyncio.create_task(agent.heartbeats(latencies, stop)) for agent in agents]
        await asyncio.sleep(15)  # every long-poll open, heartbeats spread out
        idle = sorted(latencies)
        spec = {
            "artifact": {"name": "syscount", "version": "1.0.0"},
            "attach": [{"entryPoint": "count_sys_enter", "type": "raw_tracepoint"}],
            "nodeSelector": {"matchLabels": {"sim": "yes"}},
            "rollout": {"steps": ["1%", "100%"]},
        }
        started = time.monotonic()
        for _ in range(10):  # the change itself must get through, however busy the API is
            try:
                async with session.put("/v1/programs/sim", json=spec, headers=admin) as response:
                    assert response.status == 200, await response.text()
                    break
            except (aiohttp.ClientError, TimeoutError):
                continue
        load_start = len(latencies)
        summary: dict[str, int] = {}
        while time.monotonic() - started < 600:
            await asyncio.sleep(1.0)
            try:
                async with session.get("/v1/programs/sim", headers=admin) as response:
                    document = await response.json()
            except aiohttp.ClientError:
                continue
            summary = document["summary"]
            if summary["attached"] == len(agents) and document["rollout"]["phase"] == "Succeeded":
                break
        finished = time.monotonic()
        under_load = sorted(latencies[load_start:])
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print_figures(
        agents,
        started=started,
        finished=finished,
        summary=summary,
        idle=idle,
        under_load=under_load,
    )


def print_figures(
    agents: list[Agent],
    *,
    started: float,
    finished: float,
    summary: dict[str, int],
    idle: list[float],
    under_load: list[float],
) -> None:
    assigned = sorted(a.assigned_at - started for a in agents if a.assigned_at)
    attached = sorted(a.attached_at - started for a in agents if a.attached_at)
    print(f"agents: {len(agents)}")
    print(
        f"rollout to all agents reporting Attached: {finished - started:.1f} s (target <= 60 s); summary {summary}"
    )
    if assigned:
        print(
            f"  assignment delivered: first {assigned[0]:.2f} s, median {statistics.median(assigned):.2f} s, last {assigned[-1]:.2f} s"
        )
    if attached:
        print(
            f"  status accepted:      first {attached[0]:.2f} s, median {statistics.median(attached):.2f} s, last {attached[-1]:.2f} s"
        )
    for label, values in (("idle", idle), ("during the rollout", under_load)):
        if values:
            p50 = values[len(values) // 2] * 1000
            p99 = values[int(len(values) * 0.99)] * 1000
            print(
                f"heartbeats {label}: {len(values)}; p50 {p50:.0f} ms, p99 {p99:.0f} ms (target p99 <= 250 ms)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    arguments = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bpfleet-bench-") as temporary,
        contextlib.ExitStack() as stack,
    ):
        root = Path(temporary)
        build_catalog(root / "build")
        key, public = root / "signing.key", root / "trust" / "signing.pub"
        from bpfleet_core import signing

        signing.generate_key_pair(key, public)
        sign_object(root / "build" / "syscount.bpf.o", root / "artifacts", "syscount", "1.0.0", key)
        redis = stack.enter_context(services.redis_server())
        if arguments.database == "postgres":
            database_url = stack.enter_context(services.postgres_server()).create_database()
        else:
            database_url = f"sqlite:///{root}/bpfleet.db"
        seeding = time.monotonic()
        pairs = seed_nodes(database_url, arguments.agents)
        print(
            f"seeded {len(pairs)} nodes in {time.monotonic() - seeding:.1f} s ({arguments.database})"
        )
        api = stack.enter_context(
            services.api_server(
                database_url, redis.url, public.parent, root, rollout_tick_seconds="1.0"
            )
        )
        api.start_worker()
        asyncio.run(run(api, pairs, root / "artifacts"))


if __name__ == "__main__":
    main()
