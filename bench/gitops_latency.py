"""Commit -> Ready on a local three-node fleet, through the standalone GitOps pipeline.

Target (brief): p50 <= 2 s push-notified (Flux polls every 1 m, Argo CD up to 3 m).
Everything is real: Redis, the API (uvicorn, SQLite, default settings), a Celery
worker, three agents in network namespaces that verify, load and attach for real, a Git
repository, and `bpfleet operator standalone` following it. Each commit changes
execsnoop's `target_uid` (a const volatile global), so each one is a new generation to
roll out (one step, 100%, no bake); syscount rides along unchanged, as a repository
holds more than the program that changed. Two runs:

  (a) push-notified: interval 1h, a signed push notification right after each commit;
  (b) polling only: the interval below, no notification.

Ready: the API's generation is the commit's, every node reports Attached at it, and
the rollout has Succeeded. Where the time goes, per commit:

  fetched     the pipeline's clone holds the commit (waiting for a push or a poll, git fetch)
  applied     the API's generation is bumped (read files, validate with the fleet's
              checks, put)
  attached    every node reports Attached at the generation (rollout task, long-poll
              wake-up, verify + load + attach, status report)
  succeeded   the rollout is Succeeded (its next tick sees every node)

    .venv/bin/python bench/gitops_latency.py [--commits 8] [--poll-interval 10]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from _fleet import signed_catalog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bpfleet_api.settings import ApiSettings

from bpfleet_cli.localfleet import bridge, free_port, local_fleet, stop_process
from bpfleet_core import artifacts
from bpfleet_core.resources import parse_duration
from tests import services
from tests.gitrepos import GitRepo

SUBNET = 215  # apart from `make up` (214) and the end-to-end tests (213)
SECRET = "bench-push-secret"
POLL_SECONDS = 0.02  # how often this script looks; the resolution of every figure
TIMEOUT_SECONDS = 120


def execsnoop(uid: int) -> str:
    return f"""\
apiVersion: bpfleet.io/v1alpha1
kind: BpfProgram
metadata:
  name: execsnoop
spec:
  artifact: {{name: execsnoop, version: "1.0.0"}}
  attach:
    - {{entryPoint: handle_exec, type: tracepoint}}
  config: {{target_uid: {uid}}}
"""


SYSCOUNT = """\
apiVersion: bpfleet.io/v1alpha1
kind: BpfProgram
metadata:
  name: syscount
spec:
  artifact: {name: syscount, version: "1.0.0"}
  attach:
    - {entryPoint: count_sys_enter, type: raw_tracepoint}
"""


@dataclass
class Sample:
    fetched: float | None = None
    applied: float | None = None
    attached: float | None = None
    succeeded: float | None = None
    pass_done: float | None = None  # the pipeline wrote its status (after applying)

    @property
    def ready(self) -> float | None:
        if self.attached is None or self.succeeded is None:
            return None
        return max(self.attached, self.succeeded)


def upload(client: httpx.Client, directory: Path, *names: str) -> None:
    for name in names:
        files = artifacts.ArtifactFiles.in_directory(directory, name)
        response = client.post(
            "/v1/artifacts",
            files={
                part: getattr(files, part).read_bytes()
                for part in ("object", "manifest", "signature")
            },
        )
        response.raise_for_status()


def program(client: httpx.Client, name: str) -> dict[str, Any]:
    response = client.get(f"/v1/programs/{name}")
    response.raise_for_status()
    return dict(response.json())


def all_attached(client: httpx.Client, name: str, generation: int, count: int) -> bool:
    nodes = client.get(f"/v1/programs/{name}/nodes").json()
    return len(nodes) == count and all(
        n["state"] == "Attached" and n["generation"] == generation for n in nodes
    )


def push(port: int) -> None:
    """What a Git host sends on push, signed the GitHub way."""
    body = b'{"ref": "refs/heads/main"}'
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = httpx.post(
        f"http://127.0.0.1:{port}/hooks/gitsources/default/fleet",
        content=body,
        headers={"X-Hub-Signature-256": f"sha256={signature}"},
        timeout=10,
    )
    response.raise_for_status()


def read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@contextlib.contextmanager
def pipeline(
    api: services.Api, repo: GitRepo, state: Path, interval: str, webhook_port: int
) -> Iterator[None]:
    source = {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "GitSource",
        "metadata": {"name": "fleet", "namespace": "default"},
        "spec": {"url": f"file://{repo.path}", "ref": {"branch": "main"}, "interval": interval},
    }
    state.mkdir(parents=True)
    (state / "source.yaml").write_text(yaml.safe_dump(source))
    environment = {
        **os.environ,
        "BPFLEET_OPERATOR_API_URL": api.url,
        "BPFLEET_OPERATOR_API_TOKEN": api.admin_token,
        "BPFLEET_OPERATOR_STATE_DIR": str(state),
        "BPFLEET_OPERATOR_WEBHOOK_HOST": "127.0.0.1",
        "BPFLEET_OPERATOR_WEBHOOK_PORT": str(webhook_port),
        "BPFLEET_OPERATOR_WEBHOOK_SECRET": SECRET,
    }
    with (state / "pipeline.log").open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bpfleet_cli.main",
                "operator",
                "standalone",
                str(state / "source.yaml"),
            ],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield
    finally:
        stop_process(process)


def wait_ready(client: httpx.Client, generation: int, nodes: int) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        document = program(client, "execsnoop")
        rollout = document["rollout"] or {}
        if (
            document["generation"] == generation
            and rollout.get("phase") == "Succeeded"
            and all_attached(client, "execsnoop", generation, nodes)
        ):
            return
        time.sleep(0.2)
    raise TimeoutError(f"execsnoop generation {generation} never became Ready")


def measure(
    client: httpx.Client, repo: GitRepo, state: Path, *, uid: int, nodes: int, webhook_port: int
) -> Sample:
    """One commit, followed until Ready; seconds from the commit to each step."""
    before = program(client, "execsnoop")["generation"]
    clone_ref = state / "gitsource-fleet" / "repository" / "refs" / "remotes" / "origin" / "main"
    status_file = state / "gitsource-fleet.status.json"
    commit = repo.commit(f"execsnoop: uid {uid}", {"programs/execsnoop.yaml": execsnoop(uid)})
    started = time.monotonic()
    if webhook_port:
        push(webhook_port)
    sample, generation = Sample(), None
    while sample.ready is None or sample.pass_done is None:
        now = time.monotonic() - started
        if now > TIMEOUT_SECONDS:
            raise TimeoutError(f"commit {commit} not Ready after {TIMEOUT_SECONDS} s: {sample}")
        if sample.fetched is None and read(clone_ref).strip() == commit:
            sample.fetched = now
        if sample.pass_done is None and commit in read(status_file):
            sample.pass_done = now
        document = program(client, "execsnoop")
        if generation is None and document["generation"] > before:
            generation, sample.applied = document["generation"], now
        if generation is not None:
            rollout = document["rollout"] or {}
            if (
                sample.succeeded is None
                and rollout.get("toGeneration") == generation
                and rollout.get("phase") == "Succeeded"
            ):
                sample.succeeded = now
            if sample.attached is None and all_attached(client, "execsnoop", generation, nodes):
                sample.attached = now
        time.sleep(POLL_SECONDS)
    if sample.fetched is None:  # refs got packed: the fetch happened before the apply
        sample.fetched = sample.applied
    return sample


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def report(title: str, samples: list[Sample]) -> float:
    totals = [s.ready for s in samples if s.ready is not None]
    print(f"{title}: {len(samples)} commits")
    print(
        f"  commit -> Ready   p50 {statistics.median(totals):6.2f} s   p90 {percentile(totals, 0.9):6.2f} s"
        f"   (min {min(totals):.2f}, max {max(totals):.2f})"
    )
    steps: list[tuple[str, list[float]]] = [
        ("commit -> fetched", [s.fetched or 0 for s in samples]),
        (
            "fetched -> applied (generation bumped)",
            [(s.applied or 0) - (s.fetched or 0) for s in samples],
        ),
        ("applied -> every node Attached", [(s.attached or 0) - (s.applied or 0) for s in samples]),
        ("applied -> rollout Succeeded", [(s.succeeded or 0) - (s.applied or 0) for s in samples]),
        (
            "(applied -> pipeline pass written)",
            [(s.pass_done or 0) - (s.applied or 0) for s in samples],
        ),
    ]
    print("  where the time goes (seconds, p50 / p90):")
    for label, values in steps:
        print(f"    {label:<40} {statistics.median(values):6.2f} / {percentile(values, 0.9):6.2f}")
    print("  per commit (fetched, applied, attached, succeeded -> Ready):")
    for sample in samples:
        print(
            f"    {sample.fetched:5.2f} {sample.applied:5.2f} {sample.attached:5.2f} "
            f"{sample.succeeded:5.2f} -> {sample.ready:5.2f}"
        )
    return statistics.median(totals)


def run_mode(
    api: services.Api,
    client: httpx.Client,
    repo: GitRepo,
    state: Path,
    *,
    interval: str,
    push_port: int,
    commits: int,
    nodes: int,
    first_uid: int,
) -> list[Sample]:
    samples = []
    with pipeline(api, repo, state, interval, push_port):
        # The pipeline's first pass finds nothing new; wait for it, so it is not measured.
        deadline = time.monotonic() + 60
        while repo.head() not in read(state / "gitsource-fleet.status.json"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the pipeline made no pass (log: {state / 'pipeline.log'})")
            time.sleep(0.1)
        for index in range(commits):
            # Polling: a commit lands anywhere in the interval, not in step with the passes.
            time.sleep(random.uniform(0, parse_duration(interval)) if not push_port else 0.5)
            samples.append(
                measure(
                    client, repo, state, uid=first_uid + index, nodes=nodes, webhook_port=push_port
                )
            )
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=8, help="commits per run")
    parser.add_argument("--poll-interval", type=int, default=10, help="seconds, run (b)")
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("gitops_latency needs root (agents load eBPF in network namespaces)")
    labels = [{"tier": "edge"}] * 3
    tick = ApiSettings.model_fields["rollout_tick_seconds"].default  # what the API runs with
    with (
        tempfile.TemporaryDirectory(prefix="bpfleet-bench-") as temporary,
        signed_catalog() as (artifact_dir, trust_dir),
        services.redis_server() as redis,
        bridge(SUBNET) as network,
    ):
        root = Path(temporary)
        with (
            services.api_server(
                f"sqlite:///{root}/bpfleet.db", redis.url, trust_dir, root, host=network.address
            ) as api,
            api.client() as client,
        ):
            api.start_worker()
            upload(client, artifact_dir, "execsnoop", "syscount")
            with local_fleet(
                api.url,
                api.bootstrap_token,
                network,
                trust=trust_dir,
                work=root / "agents",
                labels=labels,
            ) as fleet:
                names = {node.name for node in fleet}
                deadline = time.monotonic() + 60
                while not names <= {n["name"] for n in client.get("/v1/nodes").json()}:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the agents did not register")
                    time.sleep(0.2)
                repo = GitRepo(root / "repo")
                repo.commit(
                    "the fleet",
                    {"programs/execsnoop.yaml": execsnoop(-1), "programs/syscount.yaml": SYSCOUNT},
                )
                print(
                    f"gitops_latency: commit -> Ready on {len(fleet)} agents (real loads), "
                    f"standalone pipeline, API rollout tick {tick} s, "
                    f"agent poll {fleet[0].environment['BPFLEET_AGENT_POLL_INTERVAL']} s"
                )
                # The first rollout (artifact downloads, first loads) is not what is measured.
                with pipeline(api, repo, root / "warm-up", "1s", 0):
                    deadline = time.monotonic() + TIMEOUT_SECONDS
                    while client.get("/v1/programs/execsnoop").status_code != 200:
                        if time.monotonic() > deadline:
                            raise TimeoutError("the first revision was never applied")
                        time.sleep(0.2)
                    wait_ready(client, program(client, "execsnoop")["generation"], len(fleet))
                pushed = run_mode(
                    api,
                    client,
                    repo,
                    root / "pushed",
                    interval="1h",
                    push_port=free_port(),
                    commits=arguments.commits,
                    nodes=len(fleet),
                    first_uid=1000,
                )
                polled = run_mode(
                    api,
                    client,
                    repo,
                    root / "polled",
                    interval=f"{arguments.poll_interval}s",
                    push_port=0,
                    commits=arguments.commits,
                    nodes=len(fleet),
                    first_uid=2000,
                )
    p50 = report("(a) push-notified (interval 1h, a push right after each commit)", pushed)
    report(f"(b) polling only (interval {arguments.poll_interval}s, no push)", polled)
    verdict = "met" if p50 <= 2.0 else "missed"
    print(f"target push-notified p50 <= 2 s: {verdict} ({p50:.2f} s)")


if __name__ == "__main__":
    main()
