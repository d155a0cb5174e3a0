"""Real servers for tests: Redis, PostgreSQL, the API under uvicorn, a Celery worker.

Each runs as a child process on a free loopback port and is stopped afterwards; the
binaries come from the Debian packages scripts/install-system-deps.sh installs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bpfleet_cli import localfleet
from bpfleet_cli.localfleet import free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
POSTGRES_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def stop(process: subprocess.Popen[bytes]) -> None:
    localfleet.stop_process(process)


@dataclass
class Redis:
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            lambda: socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close() is None,
            10,
            "redis",
        )

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def redis_server() -> Iterator[Redis]:
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is missing: run scripts/install-system-deps.sh")
    server = Redis(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Postgres:
    port: int
    data: Path

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"bpfleet_{uuid.uuid4().hex[:10]}"
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(POSTGRES_BIN / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                name,
            ],
            check=True,
        )
        return self.url(name)


@contextlib.contextmanager
def postgres_server(*settings: str) -> Iterator[Postgres]:
    """A throwaway cluster (trust auth on loopback) owned by the postgres user;
    ``settings`` are more ``name=value`` server settings."""
    if POSTGRES_BIN is None:
        raise RuntimeError("PostgreSQL is missing: run scripts/install-system-deps.sh")
    root = Path(tempfile.mkdtemp(prefix="bpfleet-pg-"))
    root.chmod(0o755)
    data = root / "data"
    shutil.chown(root, "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [
            *as_postgres,
            str(POSTGRES_BIN / "initdb"),
            "-D",
            str(data),
            "--auth=trust",
            "-U",
            "postgres",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    port = free_port()
    process = subprocess.Popen(
        [
            *as_postgres,
            str(POSTGRES_BIN / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(root),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=300",
            "-c",
            "fsync=off",
            *(argument for setting in settings for argument in ("-c", setting)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: socket.create_connection(("127.0.0.1", port), timeout=0.2).close() is None,
            30,
            "postgres",
        )
        wait_until(
            lambda: (
                subprocess.run(
                    [
                        *as_postgres,
                        str(POSTGRES_BIN / "pg_isready"),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(port),
                    ],
                    check=False,
                    capture_output=True,
                ).returncode
                == 0
            ),
            30,
            "postgres",
        )
        yield Postgres(port, data)
    finally:
        stop(process)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Api:
    url: str
    admin_token: str
    bootstrap_token: str
    environment: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        # Plain HTTP on loopback: skip loading a CA bundle, which dominates a client's cost.
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, verify=False)

    def start_worker(self) -> subprocess.Popen[bytes]:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bpfleet_api.tasks",
                "worker",
                "--pool=solo",
                "--concurrency=1",
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env=self.environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.workers.append(worker)
        return worker


@contextlib.contextmanager
def api_server(
    database_url: str,
    redis_url: str,
    trust: Path,
    log_dir: Path,
    host: str = "127.0.0.1",
    workers: int = 1,
    tls: tuple[Path, Path] | None = None,
    **extra: str,
) -> Iterator[Api]:
    """The API under uvicorn; with ``workers`` > 1, that many processes (their latency
    histograms summed through a multiprocess directory, as the chart sets up); ``tls``:
    (certificate chain, key) to serve https."""
    port = free_port()
    admin, bootstrap = f"admin-{uuid.uuid4().hex}", f"bootstrap-{uuid.uuid4().hex}"
    environment = {
        **os.environ,
        "BPFLEET_API_DATABASE_URL": database_url,
        "BPFLEET_API_REDIS_URL": redis_url,
        "BPFLEET_API_ADMIN_TOKEN": admin,
        "BPFLEET_API_BOOTSTRAP_TOKEN": bootstrap,
        "BPFLEET_API_TRUST": str(trust),
        **{f"BPFLEET_API_{key.upper()}": value for key, value in extra.items()},
    }
    if workers > 1:
        metrics_dir = log_dir / f"metrics-{port}"
        metrics_dir.mkdir()
        environment["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    log = log_dir / f"api-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bpfleet_api.main:app",
                "--host",
                host,
                "--port",
                str(port),
                "--backlog",
                "4096",
                "--log-level",
                "warning",
                # Long-polls of agents already gone would hold a graceful stop for their
                # whole wait, and the test's teardown with it.
                "--timeout-graceful-shutdown",
                "1",
                "--workers",
                str(workers),
                # Agents beat up to a minute apart and keep idle connections up to 120 s:
                # the server keeps them longer, so it never closes one as it is reused.
                "--timeout-keep-alive",
                "130",
                *(
                    (f"--ssl-certfile={tls[0]}", f"--ssl-keyfile={tls[1]}")
                    if tls is not None
                    else ()
                ),
            ],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    scheme = "https" if tls is not None else "http"
    api = Api(f"{scheme}://{host}:{port}", admin, bootstrap, environment, process, log)
    try:
        wait_until(  # up at all: the tests say who may verify its certificate
            lambda: httpx.get(f"{api.url}/healthz", timeout=1, verify=False).status_code == 200,
            60,
            f"the API (log: {log})",
        )
        yield api
    finally:
        for worker in api.workers:
            stop(worker)
        stop(process)
