"""Each component started from its image, as the chart starts it, against real services.

The chart is rendered with the real helm (its generated CA and certificate, tokens,
trust keys, commands, environment, volumes, users and capabilities) and every workload
runs from the image it names under `buildah run`: the API migrates a real PostgreSQL
and serves TLS; the worker serves Celery through a real Redis and drives a rollout; the
agent, in a network namespace with exactly the chart's capabilities, probes this
kernel, registers over TLS, and loads and attaches a signed program on its veth; the
operator follows a local Git repository into the API standalone, and runs the chart's
own command (kopf) against an emulated Kubernetes API.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from bpfleet_api import db

from bpfleet_cli.localfleet import ip, wait_until
from tests import services
from tests.conftest import SignedCatalog
from tests.images.pods import (
    Container,
    Manifests,
    Mount,
    Running,
    container_of,
    run_once,
    running,
)
from tests.operator.kubernetes import emulated_cluster

pytestmark = [pytest.mark.images, pytest.mark.services, pytest.mark.bpf]

SERVICE = "bpfleet-api.bpfleet.svc"  # the API's name in the chart's certificate and URLs
BPFFS = Path("/sys/fs/bpf")
# `buildah run` makes /sys and every mount under it read-only, the host's bpffs included:
# the agent pins on a bpffs of its own, mounted beside it (the one thing of the agent's
# container the test changes: BPFLEET_AGENT_PIN_ROOT, which the chart puts under /sys).
PIN_BPFFS = "/run/bpfleet/bpffs"
# Capability numbers (linux/capability.h) of those the chart may grant the agent.
CAPABILITY_BITS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}


def free_port() -> int:
    """A port free on every address (the chart's API and receiver bind 0.0.0.0), below
    the kernel's ephemeral range: the seconds until the container binds it, no outgoing
    connection of another program on this machine can take it meanwhile."""
    lowest_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(20000, lowest_ephemeral), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_while_running(
    check: Callable[[], object], process: Running, timeout: float, what: str
) -> None:
    """``wait_until``, failing at once (with the log's end) when ``process`` exits."""

    def alive_and_done() -> object:
        return not process.alive() or check()

    wait_until(alive_and_done, timeout, f"{what} (log: {process.log})")
    assert process.alive(), f"exited while waiting for {what}:\n{process.output()[-3000:]}"


@dataclass
class Deployment:
    """The rendered chart, its API and worker running from the api image."""

    manifests: Manifests
    scratch: Path
    port: int
    run: str
    pin_bpffs: Path  # on the host: a bpffs the agent's container mounts at PIN_BPFFS
    ca: Path
    admin_token: str
    database_url: str
    api: Container
    worker: Container
    worker_log: Path

    def request(
        self, method: str, path: str, token: str | None = "admin", **kwargs: Any
    ) -> httpx.Response:
        """A request as a client in the cluster makes it: to the Service's name (here on
        the loopback), verifying the certificate with the chart's CA."""
        headers = {"Authorization": f"Bearer {self.admin_token}"} if token == "admin" else {}
        context = ssl.create_default_context(cafile=str(self.ca))
        with httpx.Client(verify=context, timeout=30) as client:
            return client.request(
                method,
                f"https://127.0.0.1:{self.port}{path}",
                headers=headers,
                extensions={"sni_hostname": SERVICE},
                **kwargs,
            )

    def hosts_file(self, name: str, address: str) -> Mount:
        """An /etc/hosts where the API's Service name is ``address``."""
        path = self.scratch / f"hosts-{name}"
        path.write_text(f"127.0.0.1\tlocalhost\n{address}\t{SERVICE}\n")
        path.chmod(0o644)
        return Mount(path, "/etc/hosts", True)


@pytest.fixture(scope="module")
def deployment(
    images: dict[str, str],
    helm_template: Callable[..., Manifests],
    postgres: services.Postgres,
    redis: services.Redis,
    signed_catalog: SignedCatalog,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    scratch = tmp_path_factory.mktemp("chart")
    scratch.chmod(0o755)
    run = uuid.uuid4().hex[:6]
    port = free_port()
    database_url = postgres.create_database()
    manifests = helm_template(
        f"--set=api.port={port}",
        f"--set=database.url={database_url}",
        f"--set=redis.url={redis.url}",
        f"--set-file=trust.keys.fleet\\.pub={signed_catalog.trust / 'signing.pub'}",
        f"--set-string=agent.labels.images-test={run}",
        "--set=agent.settings.pollInterval=0.5",
        "--set=agent.settings.heartbeatInterval=2",
        "--set=api.settings.rolloutTickSeconds=0.3",
        f"--set=operator.webhook.port={free_port()}",
    )
    ca = scratch / "ca.crt"
    ca.write_bytes(manifests.data("ConfigMap", "bpfleet-api-ca")["ca.crt"])
    api = container_of(manifests, "Deployment", "api", scratch / "api")
    worker = container_of(manifests, "Deployment", "worker", scratch / "worker")
    deployment = Deployment(
        manifests=manifests,
        scratch=scratch,
        port=port,
        run=run,
        pin_bpffs=scratch / "bpffs",
        ca=ca,
        admin_token=api.env["BPFLEET_API_ADMIN_TOKEN"],
        database_url=database_url,
        api=api,
        worker=worker,
        worker_log=scratch / "worker.log",
    )
    with (
        running(api, scratch / "api.log") as api_process,
        running(worker, deployment.worker_log) as worker_process,
    ):

        def answers() -> bool:
            return deployment.request("GET", "/healthz", token=None).status_code == 200

        wait_while_running(answers, api_process, 180, "the API from its image")
        yield deployment
        assert worker_process.alive(), worker_process.output()[-3000:]


# --------------------------------------------------------------------------------- API


def test_api_image_migrates_postgresql_and_serves_tls(deployment: Deployment) -> None:
    assert deployment.request("GET", "/healthz", token=None).status_code == 200
    # The gate: everything else needs a token.
    assert deployment.request("GET", "/v1/nodes", token=None).status_code == 401
    assert deployment.request("GET", "/v1/nodes").status_code == 200
    # The schema is the migrations' newest revision, in the real PostgreSQL.
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    url = deployment.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as connection:
        (version,) = connection.execute("SELECT version_num FROM alembic_version").fetchone() or ()
    assert version == head
    # The dashboard built into the image.
    page = deployment.request("GET", "/ui/", token=None)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<div id="root">' in page.text
    # Plain http is not served: the chart's clients speak TLS only.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{deployment.port}/healthz", timeout=5)


def test_api_image_health_check(deployment: Deployment) -> None:
    # Its PID 1 is not the API here: the port comes from the environment.
    check = deployment.api.with_command(
        "bpfleet-healthcheck", "api", BPFLEET_HEALTHCHECK_PORT=str(deployment.port)
    )
    done = run_once(check, check.command)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"https://127.0.0.1:{deployment.port}/healthz answered 200" in done.stdout
    silent = free_port()  # nothing listens there
    done = run_once(
        replace(check, env={**check.env, "BPFLEET_HEALTHCHECK_PORT": str(silent)}), check.command
    )
    assert done.returncode == 1, done.stdout
    assert f"127.0.0.1:{silent}/healthz" in done.stderr


# ------------------------------------------------------------------------------ worker


def test_worker_image_answers_through_redis(deployment: Deployment) -> None:
    # A fresh container with the worker's hostname: its check pings that worker by name.
    done = run_once(deployment.worker, ["bpfleet-healthcheck", "worker"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"celery@{deployment.worker.hostname} answered a ping" in done.stdout
    nobody = replace(deployment.worker, hostname="no-such-worker")
    done = run_once(nobody, ["bpfleet-healthcheck", "worker"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "did not answer a ping" in done.stderr


# ------------------------------------------------------------------------------- agent


@contextlib.contextmanager
def node_namespace(run: str) -> Iterator[tuple[str, str, str]]:
    """A network namespace joined to this host by a veth: (namespace, host address,
    the namespace's interface)."""
    netns, host_end, node_end = f"bpfl-img-{run}", f"bpfli{run}h", f"bpfli{run}n"
    subnet = 200 + int(run, 16) % 50
    ip("netns", "add", netns)
    try:
        ip("link", "add", host_end, "type", "veth", "peer", "name", node_end)
        ip("addr", "add", f"10.{subnet}.0.1/24", "dev", host_end)
        ip("link", "set", host_end, "up")
        ip("link", "set", node_end, "netns", netns)
        ip("link", "set", node_end, "name", "eth0", netns=netns)
        ip("addr", "add", f"10.{subnet}.0.2/24", "dev", "eth0", netns=netns)
        ip("link", "set", "eth0", "up", netns=netns)
        ip("link", "set", "lo", "up", netns=netns)
        yield netns, f"10.{subnet}.0.1", "eth0"
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("link", "del", host_end)
        ip("netns", "del", netns)


def effective_capabilities(status: str) -> set[str]:
    (line,) = (line for line in status.splitlines() if line.startswith("CapEff:"))
    bits = int(line.split()[1], 16)
    known = {name for name, bit in CAPABILITY_BITS.items() if bits & (1 << bit)}
    assert bits == sum(1 << CAPABILITY_BITS[name] for name in known), f"more than {known}: {line}"
    return known


def test_agent_image_probes_and_attaches_a_signed_program_on_a_veth(
    deployment: Deployment, signed_catalog: SignedCatalog
) -> None:
    node = f"images-node-{deployment.run}"
    state = deployment.scratch / "agent-state"
    state.mkdir(mode=0o700)
    agent = container_of(
        deployment.manifests,
        "DaemonSet",
        "agent",
        deployment.scratch / "agent",
        node_name=node,
        host_paths={
            "bpffs": BPFFS,
            "btf": Path("/sys/kernel/btf"),
            "cgroup": Path("/sys/fs/cgroup"),
            "tracefs": Path("/sys/kernel/tracing"),
            "state": state,
        },
    )
    assert agent.env["BPFLEET_AGENT_PIN_ROOT"].startswith(f"{BPFFS}/")
    agent = replace(agent, env={**agent.env, "BPFLEET_AGENT_PIN_ROOT": f"{PIN_BPFFS}/bpfleet"})
    (spec,) = deployment.manifests.find("DaemonSet", "-agent")["spec"]["template"]["spec"][
        "containers"
    ]
    chart_capabilities = {f"CAP_{name}" for name in spec["securityContext"]["capabilities"]["add"]}
    assert agent.capabilities == chart_capabilities
    done = run_once(agent, ["cat", "/proc/self/status"])
    assert done.returncode == 0, done.stderr
    assert effective_capabilities(done.stdout) == chart_capabilities
    assert "Uid:\t0\t" in done.stdout

    program = f"xdp-images-{deployment.run}"
    deployment.pin_bpffs.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(deployment.pin_bpffs)], check=True)
    with node_namespace(deployment.run) as (netns, host_address, interface):
        mounts = [
            deployment.hosts_file("agent", host_address),
            Mount(deployment.pin_bpffs, PIN_BPFFS, False),
        ]
        try:
            with running(
                agent, deployment.scratch / "agent.log", netns=netns, extra_mounts=mounts
            ) as process:

                def registered() -> dict[str, Any] | None:
                    answer = deployment.request("GET", f"/v1/nodes/{node}")
                    return (
                        answer.json()
                        if answer.status_code == 200 and answer.json()["features"]
                        else None
                    )

                wait_while_running(registered, process, 180, f"node {node} with its features")
                features = deployment.request("GET", f"/v1/nodes/{node}").json()["features"]
                assert features["kernel_release"] == os.uname().release
                assert features["program_types"]["xdp"] is True
                assert features["bpffs"] is True

                files = signed_catalog.files("xdp_counter")
                upload = deployment.request(
                    "POST",
                    "/v1/artifacts",
                    files={
                        "object": files.object.read_bytes(),
                        "manifest": files.manifest.read_bytes(),
                        "signature": files.signature.read_bytes(),
                    },
                )
                assert upload.status_code in (200, 201), upload.text
                spec = {
                    "artifact": {
                        "name": "xdp_counter",
                        "version": signed_catalog.versions["xdp_counter"],
                    },
                    "attach": [
                        {"entryPoint": "xdp_count", "type": "xdp", "interfaces": [interface]}
                    ],
                    "nodeSelector": {"matchLabels": {"images-test": deployment.run}},
                    "rollout": {"steps": ["100%"], "bakeSeconds": 0, "failureBudget": 0},
                }
                put = deployment.request("PUT", f"/v1/programs/{program}", json=spec)
                assert put.status_code in (200, 201), put.text

                def state_on_node() -> str | None:
                    answer = deployment.request("GET", f"/v1/programs/{program}/nodes")
                    assert answer.status_code == 200, answer.text
                    for row in answer.json():
                        if row["node"] == node:
                            return str(row["state"])
                    return None

                # The worker (its image) advances the rollout; the agent (its image) attaches.
                wait_while_running(
                    lambda: state_on_node() == "Attached",
                    process,
                    180,
                    f"{program} Attached on {node}",
                )
                # The rollout's steps ran in the worker (from the api image), through Redis.
                assert re.search(
                    r"Task bpfleet\.advance_rollout\[[-0-9a-f]+\] succeeded",
                    deployment.worker_log.read_text(),
                ), deployment.worker_log.read_text()[-3000:]
                link = subprocess.run(
                    ["ip", "-n", netns, "-d", "link", "show", interface],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                assert "prog/xdp" in link, link

                check = run_once(
                    agent, ["bpfleet-healthcheck", "agent"], netns=netns, extra_mounts=mounts
                )
                assert check.returncode == 0, check.stdout + check.stderr

                assert deployment.request("DELETE", f"/v1/programs/{program}").status_code == 204
                wait_until(
                    lambda: (
                        "prog/xdp"
                        not in subprocess.run(
                            ["ip", "-n", netns, "-d", "link", "show", interface],
                            capture_output=True,
                            text=True,
                            check=True,
                        ).stdout
                    ),
                    120,
                    f"{program} detached from {interface}",
                )
                assert not any((deployment.pin_bpffs / "bpfleet").iterdir()), "pins left"
        finally:
            subprocess.run(["umount", str(deployment.pin_bpffs)], check=False)


# ---------------------------------------------------------------------------- operator

POLICY = """\
apiVersion: bpfleet.io/v1alpha1
kind: NetworkPolicy
metadata:
  name: web
  namespace: shop
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress]
  ingress:
    - from:
        - podSelector:
            matchLabels: {app: frontend}
      ports:
        - {protocol: TCP, port: 8080}
  mode: audit
"""


def git(repository: Path, *arguments: str) -> None:
    subprocess.run(
        [
            "git",
            "-C",
            str(repository),
            # The repository is the operator's uid's; these commits are root's.
            "-c",
            "safe.directory=*",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.org",
            *arguments,
        ],
        check=True,
        capture_output=True,
    )


def test_operator_image_standalone_follows_a_local_repository(deployment: Deployment) -> None:
    repository = deployment.scratch / "fleet-repo"
    (repository / "policies").mkdir(parents=True)
    git(repository, "init", "--quiet", "--initial-branch=main")
    (repository / "policies" / "web.yaml").write_text(POLICY)
    git(repository, "add", ".")
    git(repository, "commit", "--quiet", "-m", "web: audit ingress from the frontend")
    # The operator runs as the chart's uid; Git reads only repositories that uid owns.
    shutil.chown(repository, 65532, 65532)
    for path in repository.rglob("*"):
        shutil.chown(path, 65532, 65532)
    source = deployment.scratch / "source"
    source.mkdir(mode=0o755)
    (source / "source.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "bpfleet.io/v1alpha1",
                "kind": "GitSource",
                "metadata": {"name": "fleet", "namespace": "bpfleet"},
                "spec": {
                    "url": "file:///fleet-repo",
                    "ref": {"branch": "main"},
                    "path": ".",
                    "interval": "1s",
                    "prune": True,
                },
            }
        )
    )
    (source / "source.yaml").chmod(0o644)
    operator = container_of(
        deployment.manifests, "Deployment", "operator", deployment.scratch / "operator"
    ).with_command(
        "bpfleet",
        "operator",
        "standalone",
        "/etc/bpfleet/source/source.yaml",
        BPFLEET_OPERATOR_WEBHOOK_SECRET=uuid.uuid4().hex,
    )
    mounts = [
        Mount(repository, "/fleet-repo", True),
        Mount(source, "/etc/bpfleet/source", True),
        deployment.hosts_file("operator", "127.0.0.1"),
    ]
    with running(operator, deployment.scratch / "operator.log", extra_mounts=mounts) as process:

        def policy_status() -> int:
            return deployment.request("GET", "/v1/policies/shop/web").status_code

        wait_while_running(lambda: policy_status() == 200, process, 120, "shop/web in the API")
        check = run_once(operator, ["bpfleet-healthcheck", "operator"], extra_mounts=mounts)
        assert check.returncode == 0, check.stdout + check.stderr

        git(repository, "rm", "--quiet", "policies/web.yaml")
        git(repository, "commit", "--quiet", "-m", "web: removed")
        wait_while_running(
            lambda: policy_status() == 404, process, 120, "shop/web pruned from the API"
        )


def test_operator_image_runs_the_charts_command_against_a_cluster(deployment: Deployment) -> None:
    """`bpfleet operator run`, the chart's command, against kmock's emulated Kubernetes API
    (the one setting added: its URL, where a cluster gives the pod's service account)."""
    with emulated_cluster() as cluster:
        operator = container_of(
            deployment.manifests, "Deployment", "operator", deployment.scratch / "operator-kopf"
        )
        assert operator.command == ["bpfleet", "operator", "run"]
        operator = replace(operator, env={**operator.env, "BPFLEET_OPERATOR_KUBE_URL": cluster.url})
        mounts = [deployment.hosts_file("operator-kopf", "127.0.0.1")]
        with running(
            operator, deployment.scratch / "operator-kopf.log", extra_mounts=mounts
        ) as process:
            policy = {
                "apiVersion": "bpfleet.io/v1alpha1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "db-ingress", "namespace": "shop"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "db"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
                    "mode": "audit",
                },
            }
            cluster.create("networkpolicies", policy, namespace="shop")

            def handed_over() -> bool:
                return deployment.request("GET", "/v1/policies/shop/db-ingress").status_code == 200

            wait_while_running(handed_over, process, 120, "shop/db-ingress handed to the API")

            def summarised() -> bool:
                found = cluster.get("networkpolicies", "db-ingress", "shop") or {}
                return bool(found.get("status", {}).get("conditions"))

            wait_while_running(summarised, process, 120, "shop/db-ingress's status written back")
