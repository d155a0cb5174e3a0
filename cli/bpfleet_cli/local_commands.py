"""``bpfleet local up``: the whole platform on this host, on embedded defaults.

Redis (started here unless REDIS_URL is given), the API with SQLite, a Celery worker,
and three node agents, each in its own network namespace with its own pins. Ctrl-C
stops everything and detaches what the local agents attached.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import httpx
import typer

from bpfleet_cli import localfleet
from bpfleet_core import artifacts

app = typer.Typer(no_args_is_help=True, help="The platform on this host, for trying it out.")

SUBNET = 214
API_PORT = 8080
NODE_LABELS = [
    {"zone": "a", "tier": "edge"},
    {"zone": "b", "tier": "edge"},
    {"zone": "c", "tier": "core"},
]


def _step(message: str) -> None:
    typer.echo(f"  - {message}", err=True)


def _wait(check: Callable[[], object], timeout: float, what: str) -> None:
    try:
        localfleet.wait_until(check, timeout, what)
    except TimeoutError as error:
        typer.echo(f"bpfleet: {error}", err=True)
        raise typer.Exit(1) from error


@contextlib.contextmanager
def _process(
    command: list[str], environment: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as output:
        process = subprocess.Popen(
            command, env=environment, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        localfleet.stop_process(process)


def _upload_catalog(url: str, token: str, build: Path) -> int:
    count = 0
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        for manifest in sorted(build.glob(f"*{artifacts.MANIFEST_SUFFIX}")):
            files = artifacts.ArtifactFiles.in_directory(
                build, manifest.name.removesuffix(artifacts.MANIFEST_SUFFIX)
            )
            response = client.post(
                "/v1/artifacts",
                files={
                    part: getattr(files, part).read_bytes()
                    for part in ("object", "manifest", "signature")
                },
            )
            response.raise_for_status()
            count += 1
    return count


@app.command("up")
def up(
    workdir: Annotated[Path, typer.Option(help="Where state, logs and the database go.")] = Path(
        ".dev/local"
    ),
    catalog: Annotated[Path, typer.Option(help="Built and signed artifacts to upload.")] = Path(
        "bpf-catalog/build"
    ),
    trust: Annotated[Path, typer.Option(help="Public key the artifacts are signed with.")] = Path(
        ".dev/keys/signing.pub"
    ),
) -> None:
    """Run the API, a worker, Redis and three agents here until Ctrl-C."""
    if os.geteuid() != 0:
        typer.echo(
            "bpfleet: the local fleet needs root (it loads eBPF, makes namespaces)", err=True
        )
        raise typer.Exit(1)
    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "logs").mkdir(parents=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    admin, bootstrap = f"bpf_{secrets.token_urlsafe(24)}", f"bpf_{secrets.token_urlsafe(24)}"
    typer.echo("starting the local fleet:", err=True)
    with contextlib.ExitStack() as stack:
        redis_url = os.environ.get("REDIS_URL")
        if redis_url is None:
            port = localfleet.free_port()
            stack.enter_context(
                _process(
                    ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
                    dict(os.environ),
                    workdir / "logs" / "redis.log",
                )
            )
            redis_url = f"redis://127.0.0.1:{port}/0"
            _wait(lambda: socket.create_connection(("127.0.0.1", port), timeout=0.2), 10, "redis")
        _step(f"redis at {redis_url}")
        network = stack.enter_context(localfleet.bridge(SUBNET))
        api_url = f"http://{network.address}:{API_PORT}"
        environment = {
            **os.environ,
            "BPFLEET_API_DATABASE_URL": f"sqlite:///{workdir}/bpfleet.db",
            "BPFLEET_API_REDIS_URL": redis_url,
            "BPFLEET_API_ADMIN_TOKEN": admin,
            "BPFLEET_API_BOOTSTRAP_TOKEN": bootstrap,
            "BPFLEET_API_TRUST": str(trust.resolve()),
        }
        stack.enter_context(
            _process(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bpfleet_api.main:app",
                    "--host",
                    network.address,
                    "--port",
                    str(API_PORT),
                ],
                environment,
                workdir / "logs" / "api.log",
            )
        )
        _wait(lambda: httpx.get(f"{api_url}/healthz", timeout=1).status_code == 200, 60, "the API")
        _step(f"API at {api_url} (SQLite in {workdir})")
        stack.enter_context(
            _process(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "bpfleet_api.tasks",
                    "worker",
                    "--pool=solo",
                    "--loglevel=INFO",
                ],
                environment,
                workdir / "logs" / "worker.log",
            )
        )
        _step("Celery worker")
        uploaded = _upload_catalog(api_url, admin, catalog)
        _step(f"uploaded {uploaded} signed artifacts from {catalog}")
        nodes = stack.enter_context(
            localfleet.local_fleet(
                api_url,
                bootstrap,
                network,
                trust=trust.resolve(),
                work=workdir / "nodes",
                labels=NODE_LABELS,
            )
        )
        _step("agents: " + ", ".join(f"{n.name} ({n.netns}, {n.address})" for n in nodes))
        (workdir / "admin-token").write_text(admin + "\n")
        typer.echo(
            f"""
bpfleet is up: {api_url}  (OpenAPI: {api_url}/docs)
  admin token in {workdir}/admin-token

Try:
  TOKEN=$(cat {workdir}/admin-token)
  curl -s -H "Authorization: Bearer $TOKEN" {api_url}/v1/nodes
  curl -s -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
    {api_url}/v1/programs/execs -d '{{"artifact": {{"name": "execsnoop", "version": "1.0.0"}},
      "attach": [{{"entryPoint": "handle_exec", "type": "tracepoint"}}],
      "rollout": {{"steps": ["1", "50%", "100%"], "bakeSeconds": 2}}}}'
  curl -s -H "Authorization: Bearer $TOKEN" {api_url}/v1/programs/execs

Logs in {workdir}/logs. Ctrl-C stops everything and detaches what the agents attached.
"""
        )
        stop.wait()
        typer.echo("stopping the local fleet...", err=True)
