"""Simulated agents: one load-generator process of the fleet benchmark (never inside the
API's processes). Each agent speaks the agent protocol as ``bpfleet_agent`` does:

- a long-poll for its assignments (the agent's wait, jittered), and for each new
  artifact digest the three files downloaded once, then a status report (Attached);
- heartbeats: one as the agent starts, as ``bpfleet_agent``'s reporter sends it, then
  open-loop: agent k beats at ``first + phase_k + i * interval`` whether or not earlier
  beats were answered, following the interval the API's answers ask for; a beat's
  latency runs from its *scheduled* time, so a stalled server cannot hide. The random
  phase stands for a fleet whose agents started at different times.
- its connections as the agent's three clients hold them: one for the long-poll, one
  for status reports and heartbeats (kept alive between beats), one for downloads
  (idle between rollouts, so its keep-alive has lapsed and a rollout opens it anew).
  With two connections per agent, downloads share the long-poll's.

A 10 ms ticker measures this process's own loop lag: a generator that falls behind is
flagged in the results rather than blamed on the API.

    python bench/_simagents.py CONFIG.json   # reads "start" / "stop" lines on stdin
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import random
import resource
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import uvloop
from _rawhttp import Client, Waited

INTERVAL_HEADER = b"x-bpfleet-heartbeat-interval"
JSON = b"Content-Type: application/json\r\n"
PARTS = ("object", "manifest", "signature")


class Agent:
    def __init__(self, fleet: Fleet, name: str, token: str) -> None:
        self.fleet, self.name = fleet, name
        self.watching = fleet.client()
        self.reporting = fleet.client()
        self.fetching = (
            fleet.client() if fleet.config["connections_per_agent"] >= 3 else self.watching
        )
        self.authorization = f"Authorization: Bearer {token}\r\n".encode()
        self.revision = 0
        self.fetched: set[str] = set()
        self.assigned_at: float | None = None
        self.attached_at: float | None = None

    async def follow(self) -> None:
        program = self.fleet.program
        while True:
            wait = self.fleet.long_poll_wait * random.uniform(0.9, 1.0)
            try:
                response = await self.watching.request(
                    "GET",
                    f"/v1/agent/assignments?after={self.revision}&wait={wait:.1f}",
                    self.authorization,
                )
            except (OSError, TimeoutError):
                self.fleet.errors += 1
                await asyncio.sleep(random.uniform(0.5, 1.5))
                continue
            if response.status == 204:
                continue
            if response.status != 200:
                await asyncio.sleep(random.uniform(0.5, 1.5))
                continue
            document = json.loads(response.body)
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
                    response = await self.fetching.request(
                        "GET", f"/v1/artifacts/{digest}/{part}", self.authorization
                    )
                    if response.status == 200:
                        break
                except (OSError, TimeoutError):
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
        content = json.dumps(body).encode()
        for _ in range(30):
            try:
                response = await self.reporting.request(
                    "POST", "/v1/agent/status", self.authorization + JSON, content
                )
                if response.status == 204:
                    self.attached_at = time.time()
                    return
            except (OSError, TimeoutError):
                self.fleet.errors += 1
            await asyncio.sleep(random.uniform(0.2, 1.0))

    async def heartbeats(self) -> None:
        """The first beat as the agent starts, then open loop: each beat goes at its
        scheduled time; answers are awaited apart."""
        first = time.time()
        await self.beat(first)
        scheduled = first + random.uniform(0, self.fleet.interval)
        while True:
            delay = scheduled - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.beat(scheduled))
            self.fleet.beats.add(task)
            task.add_done_callback(self.fleet.beats.discard)
            scheduled += self.fleet.interval

    async def beat(self, scheduled: float) -> None:
        started = time.time()
        waited = Waited()
        content = b'{"revision":%d}' % self.revision
        try:
            response = await self.reporting.request(
                "POST",
                "/v1/agent/heartbeat",
                self.authorization + JSON,
                content,
                waited=waited,
            )
        except (OSError, TimeoutError) as error:
            self.fleet.failed_beats.append(scheduled)
            self.fleet.why[f"{type(error).__name__}: {str(error)[:60]}"] += 1
            return
        if response.status != 204:
            self.fleet.failed_beats.append(scheduled)
            self.fleet.why[f"HTTP {response.status}"] += 1
            return
        done = time.time()
        self.fleet.latencies.append((scheduled, done - scheduled))
        self.fleet.phases.append(
            (
                scheduled,
                started - scheduled,  # this process late to send
                waited.queued,  # the connection busy with a status report or a beat
                waited.connecting,  # opening a new one
                done - (waited.sent or started),  # on the wire and in the API
            )
        )
        asked = response.headers.get(INTERVAL_HEADER)
        if asked:
            self.fleet.interval = float(asked)


class Fleet:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.clients: list[Client] = []
        url = urllib.parse.urlsplit(config["api_url"])
        if url.scheme != "http" or not url.hostname or not url.port:
            raise ValueError(f"the generator speaks plain http to host:port, not {url}")
        self.host, self.port = url.hostname, url.port
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

    def client(self) -> Client:
        """One of an agent's clients: a single connection, as one of bpfleet_agent's
        threads uses it, opened on first use and kept alive between calls (the agent
        keeps idle ones 120 s, the API 130 s)."""
        sources = self.config["source_addresses"]
        client = Client(self.host, self.port, sources[len(self.clients) % len(sources)])
        self.clients.append(client)
        return client

    async def measure_lag(self) -> None:
        while True:
            expected = time.perf_counter() + 0.01
            await asyncio.sleep(0.01)
            self.lags.append((time.time(), time.perf_counter() - expected))


async def run(config: dict[str, Any]) -> None:
    pairs = json.loads(Path(config["agents_file"]).read_text())
    fleet = Fleet(config)
    agents = [Agent(fleet, name, token) for name, token in pairs]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks = [asyncio.create_task(fleet.measure_lag())]
    for index, agent in enumerate(agents):
        tasks.append(asyncio.create_task(agent.follow()))
        tasks.append(asyncio.create_task(agent.heartbeats()))
        if index % 500 == 499:
            await asyncio.sleep(0.05)  # connect gradually
    # Each real agent is a process of its own with a small heap; ten thousand in one
    # process would stop for whole-heap collections a real agent never makes.
    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 10, 1_000_000)
    print("ready", flush=True)
    while (line := await reader.readline()) and line.strip() != b"stop":
        pass
    for task in tasks:
        task.cancel()
    for task in list(fleet.beats):
        task.cancel()
    await asyncio.gather(*tasks, *fleet.beats, return_exceptions=True)
    for client in fleet.clients:
        client.close()
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
