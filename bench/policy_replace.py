"""Replace a 10,000-rule policy: netpol's atomic trie swap next to iptables-restore.

Target (brief): <= 100 ms, atomic; iptables takes seconds at this size.

Both replace policy A (10,000 CIDR rules) by policy B (10,000 other CIDRs) for one
endpoint, alternately, ROUNDS times:
- the node's whole path, as the agent takes it when the API sends a new policy part:
  parse the part (a NetworkPolicy with 10,000 ipBlock peers, and the topology),
  compile it to endpoint rules, then ``apply`` as below.
- netpol: ``PolicyDatapath.apply`` = compile (pure Python) + create and fill a fresh
  LPM trie (one batch syscall) + one outer-map update that makes it the rule set.
  Printed split into those three, since only the last one is the switch itself.
- iptables: ``iptables-restore --noflush`` of the same rules into one chain (the chain
  is flushed and refilled in one nf_tables transaction, so it is atomic too), in a
  network namespace of its own. Process start-up is part of its figure: that is how
  the tool is used.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

from _fleet import signed_catalog
from policy_throughput import ADDRESSES, SERVER, cidr_rules, in_netns, iptables_restore_input

from bpfleet_agent import datapath, lab, loading, mounts, probing
from bpfleet_core import signing
from bpfleet_core.netpol import compiling, validating
from bpfleet_core.netpol.rules import EndpointRules, PeerBlock
from bpfleet_core.protocol import PolicyAssignment

RULES = 10_000
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))


def shifted(rules: EndpointRules) -> EndpointRules:
    """The same number of rules over other CIDRs (policy B)."""
    moved = tuple(
        replace(
            rule,
            peers=tuple(
                PeerBlock(ipaddress.ip_network(f"{block.cidr.network_address + (1 << 20)}/32"))
                for block in rule.peers or ()
            ),
        )
        for rule in rules.ingress.rules
    )
    return replace(rules, ingress=replace(rules.ingress, rules=moved))


def netpol_rounds(path: datapath.PolicyDatapath, policies: list[EndpointRules]) -> None:
    applied, cpu = [], []
    for index in range(ROUNDS):
        started = time.process_time()
        applied.append(path.apply([policies[index % 2]]))
        cpu.append(time.process_time() - started)
    total = [a.compile_seconds + a.load_seconds + a.swap_seconds for a in applied]
    print(
        f"  netpol apply: median {statistics.median(total) * 1000:7.1f} ms "
        f"(best {min(total) * 1000:.1f}; {statistics.median(cpu) * 1000:.1f} ms of CPU) "
        f"for {applied[-1].entries:,} trie entries"
    )
    for label, values in (
        ("compile", [a.compile_seconds for a in applied]),
        ("fill trie", [a.load_seconds for a in applied]),
        ("swap", [a.swap_seconds for a in applied]),
    ):
        print(f"    {label:<10} median {statistics.median(values) * 1000:8.3f} ms")
    print("    (swap = the outer-map update; the kernel returns from it after an RCU grace")
    print("     period, so when apply() returns no packet still runs on the old rules)")


def policy_part(shift: int) -> str:
    """What the API sends a node: one policy allowing 10,000 source /32s, and the topology."""
    peers = [
        {
            "ipBlock": {
                "cidr": f"100.{64 + (i + shift >> 16)}.{i + shift >> 8 & 255}.{i + shift & 255}/32"
            }
        }
        for i in range(RULES)
    ]
    document = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-list", "namespace": "bench"},
        "spec": {
            "podSelector": {},
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": 5201}]}],
        },
    }
    part = {
        "revision": 1,
        "artifact": None,
        "policies": [
            {
                "generation": 1,
                "document": validating.validate(document).policy.model_dump(
                    mode="json", by_alias=True, exclude_none=True
                ),
            }
        ],
        "topology": {
            "namespaces": {"bench": {}},
            "pods": {"bench/server": {"ip": str(ADDRESSES[SERVER]), "node": "bench"}},
        },
    }
    return json.dumps(part)


def node_path_rounds(path: datapath.PolicyDatapath) -> None:
    # New CIDRs every round: nothing of one round is remembered in the next.
    parts = [policy_part((index + 1) << 16) for index in range(ROUNDS)]
    parse, compile_, apply = [], [], []
    for index in range(ROUNDS):
        started = time.perf_counter()
        part = PolicyAssignment.model_validate_json(parts[index])
        parsed = time.perf_counter()
        rules = compiling.compile_policies(
            [assigned.document for assigned in part.policies],
            part.topology,
            node_endpoints={"bench/server"},
        )
        compiled = time.perf_counter()
        path.apply(rules.values())
        parse.append(parsed - started)
        compile_.append(compiled - parsed)
        apply.append(time.perf_counter() - compiled)
    total = [sum(step) for step in zip(parse, compile_, apply, strict=True)]
    print(
        f"  node path (new policy part -> in force): median {statistics.median(total) * 1000:7.1f} ms"
    )
    for label, values in (("parse", parse), ("policy->rules", compile_), ("apply", apply)):
        print(f"    {label:<14} median {statistics.median(values) * 1000:8.3f} ms")


def iptables_rounds(netns: str, policies: list[EndpointRules]) -> None:
    inputs = [iptables_restore_input(rules, "eth0", stateful=False) for rules in policies]
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
    print(
        f"  iptables-restore: median {statistics.median(seconds) * 1000:7.1f} ms "
        f"(best {min(seconds) * 1000:.1f}) for {RULES:,} rules"
    )


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("policy_replace needs root (eBPF, a network namespace for iptables)")
    policies = [cidr_rules(RULES, "TCP")]
    policies.append(shifted(policies[0]))
    print(f"== replacing a {RULES:,}-rule policy, {ROUNDS} times, A and B alternately")
    with signed_catalog() as (artifacts, trust_dir):
        pin_root = Path("/sys/fs/bpf") / f"bpfleet-lab-{os.getpid()}-replace"
        mounts.ensure_bpffs(pin_root)
        kernel = loading.Kernel(pin_root, mounts.ensure_tracefs(), mounts.ensure_cgroup2())
        report = probing.probe("bench", pin_root, kernel.tracefs, kernel.cgroup_root)
        desired = datapath.prepare(
            [],
            artifact_dirs=[artifacts],
            trust=signing.TrustStore.from_paths([trust_dir]),
            report=report,
        )
        path = datapath.PolicyDatapath(kernel, desired)
        try:
            path.start([])  # loaded and pinned; no hook needed to time a swap
            netpol_rounds(path, policies)
            node_path_rounds(path)
        finally:
            path.remove()
            with contextlib.suppress(OSError):
                pin_root.rmdir()
    netns = f"bpfl-lab-{os.getpid()}-{uuid.uuid4().hex[:6]}-ipt"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        iptables_rounds(netns, policies)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=True)
    lab.clean_stale()


if __name__ == "__main__":
    main()
