"""Network namespaces joined by veth pairs: real hosts for datapath tests."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from bpfleet_agent import libc
from bpfleet_cli.localfleet import ip


def in_netns(netns: str, *command: str) -> list[str]:
    """A command line running in ``netns`` without a new mount namespace (unlike
    ``ip netns exec``), so the host's bpffs and cgroup mounts stay visible."""
    return ["nsenter", f"--net=/var/run/netns/{netns}", *command]


@contextlib.contextmanager
def entered(netns: str) -> Iterator[None]:
    """Move this thread into ``netns`` for the block, and back."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        libc.setns(target, libc.CLONE_NEWNET)
        yield
    finally:
        libc.setns(original, libc.CLONE_NEWNET)
        os.close(original)
        os.close(target)


@dataclass(frozen=True)
class VethPair:
    """Two namespaces, ``left`` and ``right``, joined by one veth pair."""

    left: str
    right: str
    left_if: str
    right_if: str
    left_ip: str
    right_ip: str


@contextlib.contextmanager
def veth_pair(subnet: int = 77) -> Iterator[VethPair]:
    suffix = uuid.uuid4().hex[:6]
    pair = VethPair(
        left=f"bpfl-a-{suffix}",
        right=f"bpfl-b-{suffix}",
        left_if="veth-a",
        right_if="veth-b",
        left_ip=f"10.{subnet}.0.1",
        right_ip=f"10.{subnet}.0.2",
    )
    ip("netns", "add", pair.left)
    ip("netns", "add", pair.right)
    try:
        ip(
            "link",
            "add",
            pair.left_if,
            "type",
            "veth",
            "peer",
            "name",
            pair.right_if,
            netns=pair.left,
        )
        ip("link", "set", pair.right_if, "netns", pair.right, netns=pair.left)
        for netns, interface, address in (
            (pair.left, pair.left_if, pair.left_ip),
            (pair.right, pair.right_if, pair.right_ip),
        ):
            ip("addr", "add", f"{address}/24", "dev", interface, netns=netns)
            ip("link", "set", interface, "up", netns=netns)
            ip("link", "set", "lo", "up", netns=netns)
        yield pair
    finally:
        ip("netns", "del", pair.left)
        ip("netns", "del", pair.right)
