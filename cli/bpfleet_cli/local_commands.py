"""``bpfleet local up``: the whole platform on this host, on embedded defaults.

Redis (started here unless REDIS_URL is given), the API with SQLite, a Celery worker,
three node agents, each in its own network namespace with its own pins, and the
standalone GitOps pipeline following a local Git repository (seeded from
``examples/fleet`` the first time). Ctrl-C stops everything and detaches what the local
agents attached.
"""

from __future__ import annotations

import contextlib
import json
import logging
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

from bpfleet_cli import fleetrepo, localfleet
from bpfleet_core import artifacts
from bpfleet_core.resources import GitSource

app = typer.Typer(no_args_is_help=True, help="The platform on this host, for trying it out.")

SUBNET = 214
API_PORT = 8080
WEBHOOK_PORT = 9292  # push notifications, on loopback only
NODE_LABELS = [
    {"zone": "a", "tier": "edge"},
    {"zone": "b", "tier": "edge"},
    {"zone": "c", "tier": "core"},
]
# Namespace labels, as the operator would copy them from Kubernetes; the example
# policy (examples/fleet/policies/web.yaml) lives in shop.
NAMESPACES = {"shop": {"team": "shop"}}


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


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


class _Changes(logging.Filter):
    """Drops a record that repeats its logger's previous message: a pass every few
    seconds that finds nothing new should not fill the log."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        repeated = self._last.get(record.name) == message
        self._last[record.name] = message
        return not repeated


@contextlib.contextmanager
def _gitops(
    source: GitSource, api_url: str, admin: str, secret: str, workdir: Path
) -> Iterator[Path]:
    """The standalone pipeline on a thread of this process; yields its status file."""
    from pydantic import SecretStr

    from bpfleet_operator import standalone
    from bpfleet_operator.settings import OperatorSettings

    settings = OperatorSettings(
        api_url=api_url,
        api_token=SecretStr(admin),
        state_dir=workdir / "gitops",
        webhook_host="127.0.0.1",
        webhook_port=WEBHOOK_PORT,
        webhook_secret=SecretStr(secret),
    )
    handler = logging.FileHandler(workdir / "logs" / "gitops.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(_Changes())
    logger = logging.getLogger("bpfleet_operator")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    stop = threading.Event()

    def serve() -> None:
        try:
            standalone.serve(source, settings, stop)
        except Exception as error:  # the rest of the fleet keeps running
            logger.exception("the GitOps pipeline stopped")
            typer.echo(f"bpfleet: the GitOps pipeline stopped: {error}", err=True)

    thread = threading.Thread(target=serve, name="gitops", daemon=True)
    thread.start()
    try:
        yield settings.state_dir / f"gitsource-{source.metadata.name}.status.json"
    finally:
        stop.set()
        thread.join(timeout=40)
        logger.removeHandler(handler)
        handler.close()


def _first_pass(status_file: Path, timeout: float) -> str:
    """What the pipeline's first pass did, once it has done it."""
    with contextlib.suppress(TimeoutError):
        localfleet.wait_until(status_file.exists, timeout, "the first GitOps pass")
    try:
        status = json.loads(status_file.read_text())
    except (OSError, ValueError):
        return f"no pass finished yet (status: {status_file})"
    for condition in status.get("conditions", []):
        if condition.get("type") == "Ready":
            return str(condition.get("message", ""))
    return "done"


def _fleet_source(repo: Path, seed: Path, interval: str) -> tuple[GitSource, bool]:
    """The local repository (seeded if missing) as a GitSource; True if just seeded."""
    try:
        created = fleetrepo.seed(repo, seed)
        return GitSource.model_validate(
            fleetrepo.git_source(repo, fleetrepo.branch(repo), interval)
        ), created
    except fleetrepo.RepositoryError as error:
        typer.echo(f"bpfleet: {error}", err=True)
        raise typer.Exit(1) from error
    except ValueError as error:  # a malformed --interval
        typer.echo(f"bpfleet: --interval {interval}: {error}", err=True)
        raise typer.Exit(1) from error


def _start_gitops(
    stack: contextlib.ExitStack,
    source: GitSource,
    *,
    repo: Path,
    created: bool,
    api_url: str,
    admin: str,
    workdir: Path,
) -> str:
    """Start the pipeline with its push receiver and hook; what to tell the user."""
    secret = secrets.token_urlsafe(24)
    secret_file = workdir / "webhook-secret"
    localfleet.write_secret(secret_file, secret + "\n")
    notify_url = (
        f"http://127.0.0.1:{WEBHOOK_PORT}/hooks/gitsources/"
        f"{fleetrepo.SOURCE_NAMESPACE}/{fleetrepo.SOURCE_NAME}"
    )
    hook = fleetrepo.install_hook(repo, notify_url, secret_file)
    status_file = stack.enter_context(_gitops(source, api_url, admin, secret, workdir))
    ref, interval = source.spec.ref.branch, source.spec.interval
    _step(
        f"GitOps: {'created' if created else 'kept'} {repo}, following {ref} every "
        f"{interval} and on push; {_first_pass(status_file, 20)}"
    )
    bpfleet = Path(sys.executable).parent / "bpfleet"
    notify = (
        f"a post-commit hook ({hook}) notifies it at once"
        if hook
        else "your own post-commit hook was kept; to notify the pipeline from it:\n    "
        + fleetrepo.notify_command(notify_url, secret_file)
    )
    return f"""GitOps: the fleet follows the Git repository {repo} (branch {ref}).
  Commit a manifest there and it rolls out to the three agents; git revert undoes it:
    cd {repo}
    $EDITOR programs/execsnoop.yaml    # e.g. target_uid: 0 (root's execs only)
    {bpfleet} validate . && git commit -am 'execsnoop: root only'
  It is polled every {interval}; {notify}.
  Pipeline status in {status_file}, its log in {workdir}/logs/gitops.log"""


@app.command("up")
def up(
    *,
    workdir: Annotated[Path, typer.Option(help="Where state, logs and the database go.")] = Path(
        ".dev/local"
    ),
    catalog: Annotated[Path, typer.Option(help="Built and signed artifacts to upload.")] = Path(
        "bpf-catalog/build"
    ),
    trust: Annotated[Path, typer.Option(help="Public key the artifacts are signed with.")] = Path(
        ".dev/keys/signing.pub"
    ),
    repo: Annotated[
        Path, typer.Option(help="The Git repository the fleet follows; made if missing.")
    ] = Path(".dev/fleet-repo"),
    seed: Annotated[Path, typer.Option(help="What a new repository's first commit holds.")] = Path(
        "examples/fleet"
    ),
    interval: Annotated[str, typer.Option(help="How often the repository is polled.")] = "2s",
) -> None:
    """Run the API, a worker, Redis, three agents and the GitOps pipeline here until
    Ctrl-C; the pipeline follows a local Git repository, seeded if missing."""
    if os.geteuid() != 0:
        typer.echo(
            "bpfleet: the local fleet needs root (it loads eBPF, makes namespaces)", err=True
        )
        raise typer.Exit(1)
    if _port_taken("127.0.0.1", WEBHOOK_PORT):
        typer.echo(f"bpfleet: port {WEBHOOK_PORT} (push notifications) is in use", err=True)
        raise typer.Exit(1)
    repo = repo.resolve()
    source, created = _fleet_source(repo, seed, interval)
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
        try:
            nodes = stack.enter_context(
                localfleet.local_fleet(
                    api_url,
                    bootstrap,
                    network,
                    trust=trust.resolve(),
                    work=workdir / "nodes",
                    labels=NODE_LABELS,
                    # Waits for every registration: the first revision then rolls out
                    # over every node, not the first to register.
                    admin_token=admin,
                    namespaces=NAMESPACES,
                )
            )
        except TimeoutError as error:  # an agent never registered: its log says why
            typer.echo(f"bpfleet: {error} (logs in {workdir}/nodes)", err=True)
            raise typer.Exit(1) from error
        _step(
            "agents: "
            + ", ".join(f"{n.name} ({n.netns}, {n.address}, pods {n.pod_cidr})" for n in nodes)
        )
        localfleet.write_secret(workdir / "admin-token", admin + "\n")
        gitops = _start_gitops(
            stack, source, repo=repo, created=created, api_url=api_url, admin=admin, workdir=workdir
        )
        typer.echo(
            f"""
bpfleet is up: {api_url}  (OpenAPI: {api_url}/openapi.json, with the token)
  admin token in {workdir}/admin-token

Dashboard: {api_url}/ui/
  Sign in with the admin token: paste the contents of {workdir}/admin-token
  (it becomes a session cookie). For read-only people, mint a viewer token:
    curl -s -X POST -H "Authorization: Bearer $(cat {workdir}/admin-token)" \\
      -H 'Content-Type: application/json' {api_url}/v1/tokens \\
      -d '{{"name": "me", "role": "viewer"}}'

{gitops}

Try:
  TOKEN=$(cat {workdir}/admin-token)
  curl -s -H "Authorization: Bearer $TOKEN" {api_url}/v1/nodes
  curl -s -H "Authorization: Bearer $TOKEN" {api_url}/v1/programs/execsnoop/nodes
  # Programs put through the API directly sit beside Git's; the pipeline leaves them be.
  curl -s -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
    {api_url}/v1/programs/execs -d '{{"artifact": {{"name": "execsnoop", "version": "1.0.0"}},
      "attach": [{{"entryPoint": "handle_exec", "type": "tracepoint"}}],
      "rollout": {{"steps": ["1", "50%", "100%"], "bakeSeconds": 2}}}}'
  curl -s -H "Authorization: Bearer $TOKEN" {api_url}/v1/programs/execs

Logs in {workdir}/logs. Ctrl-C stops everything and detaches what the agents attached.
"""
        )
        # Ctrl-C may land on another thread; Python runs the handler only in the main
        # thread, which an untimed wait would keep asleep (seen with Python 3.11).
        while not stop.wait(timeout=0.5):
            pass
        typer.echo("stopping the local fleet...", err=True)
