"""A node's whole path for a policy part: a never-seen 10,000-CIDR policy, then a change
of one rule of it; iptables-restore with the same rules beside, in the same run.

Targets (issue #15): the never-seen policy in force <= 100 ms p50, the one-rule change
<= 20 ms p50, for the node's whole path (receive, parse, compile, fill, swap).

The path is the agent's own code, in the order its threads take it:
- receive: ``ApiClient.assignments`` over HTTP from a local server holding the body the
  API would send (``Assignments`` as the API serialises it), decoded once;
- store: the assignments file, as received;
- parse: the policy part validated, reusing what the last part had (``policyparts``);
- rules: the enforcer verifies the datapath (once) and compiles policies -> rules for
  the node's endpoint, through its compile cache;
- build, write, flip: the rule-set builder's change, written into the idle slot, made
  the rule set in force by one write. "in force" ends there.
- settle (after it, not counted): an RCU grace period, then the same change into the
  slot left behind, so the next change is written once per slot again.

Two shapes of 10,000 CIDRs: one ingress rule with 10,000 ipBlock peers (the shape the
earlier 310-340 ms figure was measured with), and 10,000 rules of one ipBlock each.
Each round's policy has a new name and new CIDRs: nothing of one round is remembered in
the next. iptables-restore --noflush replaces a chain of the same 10,000 rules (one
nf_tables transaction, atomic too), in a namespace of its own, process start included.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from _fleet import namespace_with_veth, signed_catalog
from policy_throughput import PORT, cidr_rules, in_netns, iptables_restore_input

from bpfleet_agent import datapath, loading, mounts, probing
from bpfleet_agent.api_client import ApiClient
from bpfleet_agent.desired import EndpointsFile, desired_from_document
from bpfleet_agent.enforcing import PolicyEnforcer
from bpfleet_agent.fleetlink import save_assignments
from bpfleet_agent.gcpause import gc_paused
from bpfleet_agent.policyparts import PolicyPartReader
from bpfleet_core import signing
from bpfleet_core.netpol import validating
from bpfleet_core.protocol import POLICY_PROGRAM, Assignments, PolicyAssignment

CIDRS = 10_000
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "9"))
NODE, SERVER, SERVER_IP, INTERFACE = "bench", "bench/server", "10.88.0.2", "bench0"


def cidr(number: int) -> str:
    return f"{ipaddress.IPv4Address((100 << 24 | 64 << 16) + number)}/32"


def policy_document(name: str, shape: str, first: int, changed: int | None) -> dict[str, Any]:
    """10,000 CIDRs from ``first``; ``changed``: that one replaced by another."""
    numbers = [first + i for i in range(CIDRS)]
    if changed is not None:
        numbers[changed] = first + CIDRS + 7
    ports = [{"protocol": "TCP", "port": PORT}]
    if shape == "cidrs":
        ingress = [{"from": [{"ipBlock": {"cidr": cidr(n)}} for n in numbers], "ports": ports}]
    else:
        ingress = [{"from": [{"ipBlock": {"cidr": cidr(n)}}], "ports": ports} for n in numbers]
    document = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"podSelector": {}, "ingress": ingress},
    }
    return validating.validate(document).policy.model_dump(
        mode="json", by_alias=True, exclude_none=True
    )


def assignments_body(
    revision: int, generation: int, document: dict[str, Any], artifact: Any
) -> bytes:
    """The body the API sends for this node, serialised as the API does."""
    part = PolicyAssignment.model_validate(
        {
            "revision": revision,
            "artifact": artifact.model_dump(mode="json"),
            "policies": [{"generation": generation, "document": document}],
            "topology": {
                "namespaces": {"bench": {}},
                "pods": {SERVER: {"ip": SERVER_IP, "node": NODE}},
            },
        }
    )
    found = Assignments(node=NODE, revision=revision, programs=[], policy=part)
    return found.model_dump_json(by_alias=True).encode()


class Served:
    """The body the API would send, answered by a server process of its own (as the API
    is: in this process it would take the agent's CPU and interpreter lock)."""

    def __init__(self, netns: str, work: Path) -> None:
        self.file = work / "served" / "v1" / "agent" / "assignments"
        self.file.parent.mkdir(parents=True)
        self.set(b"{}")
        port = 18080
        self.process = subprocess.Popen(
            in_netns(
                netns, sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                "--directory", str(work / "served"), str(port),
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the body server did not start")
            time.sleep(0.05)

    def set(self, body: bytes) -> None:
        staged = self.file.with_suffix(".next")
        staged.write_bytes(body)
        staged.replace(self.file)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait()


@dataclass
class Run:
    """Seconds per step, one list per step; CPU seconds of the whole path."""

    steps: dict[str, list[float]] = field(default_factory=dict)
    cpu: list[float] = field(default_factory=list)
    written: list[int] = field(default_factory=list)

    def add(self, **seconds: float) -> None:
        for name, value in seconds.items():
            self.steps.setdefault(name, []).append(value)


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.1f}"


def p90_ms(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * 1000:7.1f}"


class NodePath:
    """The agent's pieces for one node, as its threads use them."""

    def __init__(
        self, kernel: loading.Kernel, artifacts: Path, trust: Path, work: Path, netns: str
    ) -> None:
        self.served = Served(netns, work)
        self.client = ApiClient(self.served.url, allow_insecure_http=True)
        endpoints = work / "endpoints.yaml"
        endpoints.write_text(
            yaml.safe_dump(
                {
                    "endpoints": [
                        {
                            "namespace": "bench",
                            "name": "server",
                            "ip": SERVER_IP,
                            "interface": INTERFACE,
                        }
                    ]
                }
            )
        )
        self.assignments = work / "assignments.json"
        self.enforcer = PolicyEnforcer(
            kernel, node_name=NODE, artifact_dirs=[artifacts], endpoints=EndpointsFile(endpoints)
        )
        self.reader = PolicyPartReader()
        self.trust = signing.TrustStore.from_paths([trust])
        self.report = probing.probe(NODE, kernel.pin_root, kernel.tracefs, kernel.cgroup_root)
        self.revision = 0

    def take(self, body: bytes, run: Run) -> None:
        """The node's path for one new body; its steps' times go into ``run``."""
        self.served.set(body)
        cpu = time.process_time()
        started = time.perf_counter()
        received = self.client.assignments("bench", after=self.revision, wait=0)
        assert received is not None
        received_at = time.perf_counter()
        save_assignments(self.assignments, received)
        stored_at = time.perf_counter()
        with gc_paused():
            parsed = desired_from_document(received.document, self.reader)
        parsed_at = time.perf_counter()
        assert not parsed.policy_error, parsed.policy_error
        status = self.enforcer.reconcile(
            parsed.state.policy,
            "",
            None,
            pinned=False,
            trust=self.trust,
            report=self.report,
        )
        cpu = time.process_time() - cpu
        self.reader.release()  # as the agent does after reconciling
        assert status is not None, "a part to enforce"
        assert status.state == "Enforcing", status
        enforcement = self.enforcer.last_enforcement
        assert enforcement is not None, "enforced"
        assert enforcement.applied is not None, "a rule set applied"
        assert enforcement.revision == received.revision, "this body was enforced"
        applied = enforcement.applied
        self.revision = received.revision
        run.add(
            receive=received_at - started,
            store=stored_at - received_at,
            parse=parsed_at - stored_at,
            rules=enforcement.rules_seconds,
            build=applied.compile_seconds,
            write=applied.write_seconds,
            flip=applied.flip_seconds,
            settle=applied.settle_seconds,
            in_force=parsed_at - started + enforcement.in_force_seconds,
        )
        run.cpu.append(cpu)
        run.written.append(applied.written)

    def close(self) -> None:
        self.client.close()
        self.served.close()


def measure(path: NodePath, shape: str, artifact: Any) -> tuple[Run, Run]:
    fresh, changed = Run(), Run()
    for index in range(ROUNDS + 1):  # the first round also loads the program: not counted
        name, first = f"allow-{shape}-{uuid.uuid4().hex[:8]}", (index + 1) * 4 * CIDRS
        revision = path.revision
        body = assignments_body(
            revision + 1, 1, policy_document(name, shape, first, None), artifact
        )
        one_rule = assignments_body(
            revision + 2, 2, policy_document(name, shape, first, CIDRS // 2), artifact
        )
        path.take(body, fresh if index else Run())
        path.take(one_rule, changed if index else Run())
    return fresh, changed


def print_run(title: str, run: Run) -> None:
    print(
        f"  {title}: in force p50 {median_ms(run.steps['in_force'])} ms, "
        f"p90 {p90_ms(run.steps['in_force'])} ms "
        f"({median_ms(run.cpu).strip()} ms of CPU for the whole path; "
        f"{statistics.median(run.written):,.0f} entries written)"
    )
    for name in ("receive", "store", "parse", "rules", "build", "write", "flip", "settle"):
        note = "   (after: not in the figure)" if name == "settle" else ""
        print(f"    {name:<8} median {median_ms(run.steps[name])} ms{note}")


def iptables_rounds(netns: str) -> list[float]:
    inputs = [
        iptables_restore_input(
            cidr_rules(CIDRS, "TCP", shift=index * CIDRS), "eth0", stateful=False
        )
        for index in range(2)
    ]
    seconds = []
    for index in range(ROUNDS):
        started = time.perf_counter()
        subprocess.run(
            in_netns(netns, "iptables-restore", "--noflush"),
            input=inputs[index % 2],
            text=True,
            check=True,
        )
        seconds.append(time.perf_counter() - started)
    return seconds


@contextlib.contextmanager
def kernel_for(pin_root: Path) -> Iterator[loading.Kernel]:
    mounts.ensure_bpffs(pin_root)
    kernel = loading.Kernel(pin_root, mounts.ensure_tracefs(), mounts.ensure_cgroup2())
    try:
        yield kernel
    finally:
        loading.remove(kernel, POLICY_PROGRAM)
        with contextlib.suppress(OSError):
            pin_root.rmdir()


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("policy_replace needs root (eBPF, network namespaces, iptables)")
    print(
        f"== a node's whole path: a never-seen {CIDRS:,}-CIDR policy, then one rule of it "
        f"changed; {ROUNDS} rounds each (load: {os.getloadavg()[0]:.1f})"
    )
    results: dict[str, tuple[Run, Run]] = {}
    with (
        signed_catalog() as (artifacts, trust_dir),
        namespace_with_veth() as netns,
        tempfile.TemporaryDirectory(prefix="bpfleet-bench-") as work,
    ):
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        manifest = json.loads((artifacts / "netpol.manifest.json").read_text())
        artifact = datapath.ARTIFACT.model_copy(update={"version": manifest["version"]})
        with kernel_for(Path("/sys/fs/bpf") / f"bpfleet-lab-{os.getpid()}-replace") as kernel:
            path = NodePath(kernel, artifacts, trust_dir, Path(work), netns)
            try:
                for shape in ("cidrs", "rules"):
                    results[shape] = measure(path, shape, artifact)
            finally:
                path.close()
    netns = f"bpfl-lab-{os.getpid()}-{uuid.uuid4().hex[:6]}-ipt"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        iptables = iptables_rounds(netns)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=True)
    labels = {
        "cidrs": f"one rule of {CIDRS:,} CIDRs",
        "rules": f"{CIDRS:,} rules of one CIDR",
    }
    for shape, (fresh, changed) in results.items():
        print(f"-- {labels[shape]}")
        print_run("never-seen policy", fresh)
        print_run("one rule changed ", changed)
    print(
        f"-- iptables-restore --noflush of the same {CIDRS:,} rules: median "
        f"{median_ms(iptables).strip()} ms, p90 {p90_ms(iptables).strip()} ms"
    )
    print(f"   (load at the end: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
