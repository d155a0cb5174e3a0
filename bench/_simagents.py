"""Simulated agents: one load-generator process of the fleet benchmark (never inside the
API's processes). Each agent speaks the agent protocol as ``bpfleet_agent`` does:

- a long-poll for its assignments (the agent's wait, jittered), and for each new
  artifact digest the three files downloaded once, then a status report (Attached);
- heartbeats, open-loop: agent k beats at ``start + phase_k + i * interval`` whether or
  not earlier beats were answered, following the interval the API's answers ask for;
  a beat's latency runs from its *scheduled* time, so a stalled server cannot hide.

A 10 ms ticker measures this process's own loop lag: a generator that falls behind is
flagged in the results rather than blamed on the API.

    python bench/_simagents.py CONFIG.json   # reads "start" / "stop" lines on stdin
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

HEADER = "X-Bpfleet-Heartbeat-Interval"
PARTS = ("object", "manifest", "signature")


class Agent:
    def __init__(self, fleet: Fleet, name: str, token: str) -> None:
        self.fleet, self.name = fleet, name
        self.session = fleet.session_for_agent()
        self.headers = {"Authorization": f"Bearer {token}"}
        self.revision = 0
        self.fetched: set[str] = set()
        self.assigned_at: float | None = None
        self.attached_at: float | None = None

    async def follow(self) -> None:
        session, program = self.session, self.fleet.program
        while True:
            wait = self.fleet.long_poll_wait * random.uniform(0.9, 1.0)
            try:
                async with session.get(
                    "/v1/agent/assignments",
                    params={"after": self.revision, "wait": f"{wait:.1f}"},
                    headers=self.headers,
                ) as response:
                    if response.status == 204:
                        continue
                    if response.status != 200:
                        await asyncio.sleep(random.uniform(0.5, 1.5))
                        continue
                    document = await response.json()
            except (aiohttp.ClientError, TimeoutError):
                self.fleet.errors += 1
                await asyncio.sleep(random.uniform(0.5, 1.5))
                continue
            self.revision = document["revision"]
            programs = [p for p in document["programs"] if p["name"] == program]
            if not programs:
                continue
            self.assigned_at = time.time()
            digest = programs[0]["spec"]["artifact"].get("digest")
            if digest and digest not in self.fetched:
                await self.download(digest)
            await self.report()

    async def download(self, digest: str) -> None:
        for part in PARTS:
            for _ in range(20):
                try:
                    async with self.session.get(
                        f"/v1/artifacts/{digest}/{part}", headers=self.headers
                    ) as response:
                        await response.read()
                        if response.status == 200:
                            break
                except (aiohttp.ClientError, TimeoutError):
                    self.fleet.errors += 1
                await asyncio.sleep(random.uniform(0.2, 1.0))
        self.fetched.add(digest)

    async def report(self) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = {
            "node": self.name,
            "revision": self.revision,
            "programs": [
                {
                    "name": self.fleet.program,
                    "state": "Attached",
                    "artifact": "syscount@1.0.0",
                    "message": "1 link(s) attached",
                    "updatedAt": now,
                }
            ],
            "reportedAt": now,
        }
        for _ in range(30):
            try:
                async with self.session.post(
                    "/v1/agent/status", json=body, headers=self.headers
                ) as response:
                    if response.status == 204:
                        self.attached_at = time.time()
                        return
            except (aiohttp.ClientError, TimeoutError):
                self.fleet.errors += 1
            await asyncio.sleep(random.uniform(0.2, 1.0))

    async def heartbeats(self, start: float) -> None:
        """Open loop: each beat goes at its scheduled time; answers are awaited apart."""
        interval = self.fleet.interval
        scheduled = start + random.uniform(0, interval)
        while True:
            delay = scheduled - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.beat(scheduled))
            self.fleet.beats.add(task)
            task.add_done_callback(self.fleet.beats.discard)
            scheduled += self.fleet.interval

    async def beat(self, scheduled: float, again: bool = True) -> None:
        phases: dict[str, float] = {"started": time.time()}
        try:
            async with self.session.post(
                "/v1/agent/heartbeat",
                json={"revision": self.revision},
                headers=self.headers,
                trace_request_ctx=phases,
            ) as response:
                if response.status == 204:
                    done = time.time()
                    self.fleet.latencies.append((scheduled, done - scheduled))
                    sent = phases.get("sent", phases["started"])
                    self.fleet.phases.append(
                        (
                            scheduled,
                            phases["started"] - scheduled,  # this process late to send
                            phases.get("queued", 0.0),  # waiting for a connection
                            phases.get("connecting", 0.0),  # opening a new one
                            done - sent,  # on the wire and in the API
                        )
                    )
                    asked = response.headers.get(HEADER)
                    if asked:
                        self.fleet.interval = float(asked)
                else:
                    self.fleet.failed_beats.append(scheduled)
                    self.fleet.why[f"HTTP {response.status}"] += 1
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            # A pooled connection the server had closed: HTTP clients (httpx included)
            # send again on a new one; the latency still counts from the schedule.
            if again:
                await self.beat(scheduled, again=False)
                return
            self.fleet.failed_beats.append(scheduled)
        except (aiohttp.ClientError, TimeoutError) as error:
            self.fleet.failed_beats.append(scheduled)
            self.fleet.why[f"{type(error).__name__}: {str(error)[:60]}"] += 1


class Fleet:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.sessions: list[aiohttp.ClientSession] = []
        self.program = config["program"]
        self.interval = float(config["heartbeat_seconds"])
        self.long_poll_wait = float(config["long_poll_wait"])
        self.latencies: list[tuple[float, float]] = []
        self.failed_beats: list[float] = []
        self.lags: list[tuple[float, float]] = []
        self.phases: list[tuple[float, float, float, float, float]] = []
        self.errors = 0
        self.why: collections.Counter[str] = collections.Counter()
        self.beats: set[asyncio.Task[None]] = set()

    def session_for_agent(self) -> aiohttp.ClientSession:
        """An agent's own connections, as a real agent holds them (its watcher's long-poll,
        its reporter's status and heartbeats, its downloads), kept alive between
        heartbeats (bpfleet_agent keeps idle ones 120 s; the API 130 s)."""
        trace = aiohttp.TraceConfig()
        trace.on_connection_queued_start.append(_mark("queue_start"))
        trace.on_connection_queued_end.append(_took("queue_start", "queued"))
        trace.on_connection_create_start.append(_mark("create_start"))
        trace.on_connection_create_end.append(_took("create_start", "connecting"))
        trace.on_request_headers_sent.append(_mark("sent"))
        connector = aiohttp.TCPConnector(
            limit=self.config["connections_per_agent"],
            local_addr=(self.config["source_address"], 0),
            ttl_dns_cache=None,
            keepalive_timeout=120,
        )
        session = aiohttp.ClientSession(
            base_url=self.config["api_url"],
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=400),
            trace_configs=[trace],
        )
        self.sessions.append(session)
        return session

    async def measure_lag(self) -> None:
        while True:
            expected = time.perf_counter() + 0.01
            await asyncio.sleep(0.01)
            self.lags.append((time.time(), time.perf_counter() - expected))


def _mark(name: str) -> Any:
    async def mark(_session: object, context: Any, _params: object) -> None:
        if isinstance(context.trace_request_ctx, dict):
            context.trace_request_ctx[name] = time.time()

    return mark


def _took(start: str, name: str) -> Any:
    async def took(_session: object, context: Any, _params: object) -> None:
        phases = context.trace_request_ctx
        if isinstance(phases, dict) and start in phases:
            phases[name] = time.time() - phases[start]

    return took


async def run(config: dict[str, Any]) -> None:
    pairs = json.loads(Path(config["agents_file"]).read_text())
    fleet = Fleet(config)
    agents = [Agent(fleet, name, token) for name, token in pairs]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks = [asyncio.create_task(fleet.measure_lag())]
    start = time.time()
    for index, agent in enumerate(agents):
        tasks.append(asyncio.create_task(agent.follow()))
        tasks.append(asyncio.create_task(agent.heartbeats(start)))
        if index % 500 == 499:
            await asyncio.sleep(0.05)  # connect gradually
    print("ready", flush=True)
    while (line := await reader.readline()) and line.strip() != b"stop":
        pass
    for task in tasks:
        task.cancel()
    for task in list(fleet.beats):
        task.cancel()
    await asyncio.gather(*tasks, *fleet.beats, return_exceptions=True)
    await asyncio.gather(*(session.close() for session in fleet.sessions))
    Path(config["results_file"]).write_text(
        json.dumps(
            {
                "assigned": [a.assigned_at for a in agents if a.assigned_at],
                "attached": [a.attached_at for a in agents if a.attached_at],
                "latencies": fleet.latencies,
                "failed_beats": fleet.failed_beats,
                "lags": fleet.lags,
                "phases": fleet.phases,
                "errors": fleet.errors,
                "why": dict(fleet.why),
                "interval": fleet.interval,
            }
        )
    )


def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    config = json.loads(Path(sys.argv[1]).read_text())
    uvloop.run(run(config))


if __name__ == "__main__":
    main()
