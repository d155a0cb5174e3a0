"""A local fleet on one host: node agents, each in its own network namespace with its
own bpffs pins, reaching the API over a bridge. `make up` runs it; so do the
end-to-end tests. Given the admin token, it sets what the operator sets in a cluster:
each node's pod CIDRs (node i: 10.<subnet>.<i+1>.0/24) and namespace labels."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bpfleet_agent import loading, mounts
from bpfleet_core import files

BPFFS = Path("/sys/fs/bpf")


def ip(*args: str, netns: str | None = None) -> None:
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    subprocess.run([*prefix, *args], check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(check: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``check`` until it is truthy (errors count as not yet); TimeoutError after."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f}s")


def write_secret(path: Path, text: str) -> None:
    """A secret file: readable by its owner only, from the moment it exists."""
    files.write_atomically(path, text, mode=0o600)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Bridge:
    name: str
    address: str  # the root namespace's address on the bridge; the API listens here
    prefix: str


@contextlib.contextmanager
def bridge(subnet: int) -> Iterator[Bridge]:
    name = f"bpflbr{uuid.uuid4().hex[:6]}"
    prefix = f"10.{subnet}.0"
    ip("link", "add", name, "type", "bridge")
    try:
        ip("addr", "add", f"{prefix}.1/24", "dev", name)
        ip("link", "set", name, "up")
        yield Bridge(name, f"{prefix}.1", prefix)
    finally:
        ip("link", "del", name)


@dataclass
class FleetNode:
    name: str
    netns: str
    address: str
    pin_root: Path
    state_dir: Path
    labels: dict[str, str]
    pod_cidr: str = ""  # where its pods' addresses come from (the API checks endpoints)
    environment: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            "nsenter",
            f"--net=/var/run/netns/{self.netns}",
            sys.executable,
            "-m",
            "bpfleet_agent",
        ]
        log = (self.state_dir / "agent.log").open("ab")
        self.process = subprocess.Popen(
            command, env=self.environment, stdout=log, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.state_dir / "status.json").read_text()))
        except (OSError, ValueError):
            return {}

    def program_state(self, program: str) -> str | None:
        for report in self.status().get("programs", []):
            if report["name"] == program:
                return str(report["state"])
        return None


def remove_pins(node: FleetNode) -> None:
    """Detach and unpin everything a node's agent attached."""
    kernel = loading.Kernel(node.pin_root, mounts.ensure_tracefs(), mounts.ensure_cgroup2())
    if node.pin_root.exists():
        for program_dir in node.pin_root.iterdir():
            with contextlib.suppress(Exception):
                loading.remove(kernel, program_dir.name)
        shutil.rmtree(node.pin_root, ignore_errors=True)


def set_topology(
    api_url: str,
    admin_token: str,
    nodes: list[FleetNode],
    namespaces: dict[str, dict[str, str]],
    timeout: float = 60,
) -> None:
    """Once the nodes registered, give each its pod CIDR and set namespace labels, as
    the operator does from Kubernetes: the API takes endpoints only inside pod CIDRs,
    and namespace labels only from an admin."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=10) as client:
        for node in nodes:

            def registered(name: str = node.name) -> bool:
                return client.get(f"/v1/nodes/{name}").status_code == 200

            wait_until(registered, timeout, f"node {node.name}'s registration")
            client.put(
                f"/v1/nodes/{node.name}/pod-cidrs", json={"podCIDRs": [node.pod_cidr]}
            ).raise_for_status()
        for name, labels in namespaces.items():
            client.put(f"/v1/namespaces/{name}", json={"labels": labels}).raise_for_status()


@contextlib.contextmanager
def local_fleet(
    api_url: str,
    bootstrap_token: str,
    network: Bridge,
    *,
    trust: Path,
    work: Path,
    labels: list[dict[str, str]],
    features: dict[int, dict[str, Any]] | None = None,
    admin_token: str | None = None,
    namespaces: dict[str, dict[str, str]] | None = None,
) -> Iterator[list[FleetNode]]:
    """Start one agent per entry of ``labels``. ``features`` pre-seeds a node's cached
    feature report, to stand for a node whose kernel is older than this one. With
    ``admin_token``, the nodes get their pod CIDRs and ``namespaces`` their labels once
    the agents registered (without it, the API refuses every endpoint they declare)."""
    run = uuid.uuid4().hex[:6]
    work.mkdir(parents=True, exist_ok=True)
    nodes: list[FleetNode] = []
    try:
        for index, node_labels in enumerate(labels):
            name = f"node-{index}-{run}"
            netns = f"bpfl-{run}-{index}"
            address = f"{network.prefix}.{10 + index}"
            ip("netns", "add", netns)
            host_end, node_end = f"bpfl{run}h{index}", f"bpfl{run}n{index}"
            ip("link", "add", host_end, "type", "veth", "peer", "name", node_end)
            ip("link", "set", host_end, "master", network.name)
            ip("link", "set", host_end, "up")
            ip("link", "set", node_end, "netns", netns)
            ip("link", "set", node_end, "name", "eth0", netns=netns)
            ip("addr", "add", f"{address}/24", "dev", "eth0", netns=netns)
            ip("link", "set", "eth0", "up", netns=netns)
            ip("link", "set", "lo", "up", netns=netns)
            state = work / name
            state.mkdir(parents=True)
            node = FleetNode(
                name,
                netns,
                address,
                BPFFS / f"bpfleet-e2e-{run}-{index}",
                state,
                node_labels,
                pod_cidr=f"{network.prefix.rsplit('.', 1)[0]}.{index + 1}.0/24",
            )
            node.environment = {
                **os.environ,
                "BPFLEET_AGENT_NODE_NAME": name,
                "BPFLEET_AGENT_PIN_ROOT": str(node.pin_root),
                "BPFLEET_AGENT_STATE_DIR": str(state),
                "BPFLEET_AGENT_DESIRED_STATE": str(state / "unused-in-api-mode.yaml"),
                "BPFLEET_AGENT_ARTIFACT_DIRS": str(state / "no-local-artifacts"),
                # Absent until someone writes it: then the node declares those endpoints.
                "BPFLEET_AGENT_ENDPOINTS": str(state / "endpoints.yaml"),
                "BPFLEET_AGENT_TRUST": str(trust),
                "BPFLEET_AGENT_API_URL": api_url,
                # The local API listens on plain http, on a bridge of this host only.
                "BPFLEET_AGENT_ALLOW_INSECURE_HTTP": "true",
                "BPFLEET_AGENT_BOOTSTRAP_TOKEN": bootstrap_token,
                "BPFLEET_AGENT_LABELS": ",".join(f"{k}={v}" for k, v in node_labels.items()),
                "BPFLEET_AGENT_POLL_INTERVAL": "0.5",
                "BPFLEET_AGENT_HEARTBEAT_INTERVAL": "2",
                # Three nodes on one host: policy counters on screen within seconds.
                "BPFLEET_AGENT_COUNTERS_REFRESH_INTERVAL": "2",
            }
            if features and index in features:
                (state / "features.json").write_text(json.dumps({**features[index], "node": name}))
            nodes.append(node)
        for node in nodes:
            node.start()
        if admin_token is not None:
            set_topology(api_url, admin_token, nodes, namespaces or {})
        yield nodes
    finally:
        # Signal every agent first, then wait: they shut down in parallel.
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in nodes:
            node.stop()
        for node in nodes:
            remove_pins(node)
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("netns", "del", node.netns)
