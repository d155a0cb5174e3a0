"""Semantic diff of two policy sets: which connections a change newly allows or denies.

Two sets of policies are compared over one topology, for one protocol and port: every
cell of the connectivity matrix (client pod -> server pod) whose verdict differs is
newly allowed or newly denied. Text diffs say which lines changed; this says which
connections did ("+3 allowed, -12 denied"). ``diff_ports`` does the same for several
ports at once, and ``common_ports`` picks the ports worth looking at for a change.

Policies present (the same object) in both sets are folded in once and shared by both
sides, so a one-policy change over a large fleet costs little more than one pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bpfleet_core.netpol import connectivity, models
from bpfleet_core.netpol.models import Protocol

MAX_CELLS = 1000  # cells listed one by one; counts always cover every cell
COMMON: tuple[tuple[Protocol, int], ...] = (("TCP", 80), ("TCP", 443), ("UDP", 53), ("TCP", 53))
Change = Literal["allowed", "denied"]


@dataclass(frozen=True)
class Cell:
    client: str
    server: str
    change: Change

    def to_dict(self) -> dict[str, str]:
        return {"client": self.client, "server": self.server, "change": self.change}


@dataclass(frozen=True)
class Diff:
    protocol: Protocol
    port: int
    allowed: int  # cells newly allowed
    denied: int  # cells newly denied
    cells: tuple[Cell, ...]  # the first MAX_CELLS (or the limit given), row by row
    complete: bool  # every changed cell is in ``cells``

    @property
    def summary(self) -> str:
        return f"+{self.allowed} allowed, -{self.denied} denied"

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "port": self.port,
            "allowed": self.allowed,
            "denied": self.denied,
            "summary": self.summary,
            "cells": [cell.to_dict() for cell in self.cells],
            "complete": self.complete,
        }


@dataclass(frozen=True)
class Sides:
    """Both sides of a change on one port, as matrix rows (client -> servers it reaches)."""

    before: dict[int, int]
    after: dict[int, int]


def sides(
    index: connectivity.Index,
    before: Sequence[models.Policy],
    after: Sequence[models.Policy],
    protocol: Protocol,
    port: int,
    *,
    view: connectivity.View = "enforce",
) -> Sides:
    """The matrix rows before and after, sharing the policies both sets hold."""
    kept = {id(policy) for policy in after}
    shared = [policy for policy in before if id(policy) in kept]
    shared_ids = {id(policy) for policy in shared}
    base = connectivity.judge(index, shared, protocol, port, view=view)
    old, new = base.copy(), base
    old.add((policy for policy in before if id(policy) not in shared_ids), view)
    new.add((policy for policy in after if id(policy) not in shared_ids), view)
    return Sides(old.rows(), new.rows())


def compare(
    index: connectivity.Index,
    compared: Sides,
    protocol: Protocol,
    port: int,
    *,
    limit: int = MAX_CELLS,
) -> Diff:
    allowed = denied = 0
    cells: list[Cell] = []
    for client, row in compared.after.items():
        old = compared.before[client]
        gained, lost = row & ~old, old & ~row
        if not gained and not lost:
            continue
        allowed += gained.bit_count()
        denied += lost.bit_count()
        if len(cells) < limit:
            name = index.names[client]
            changed: list[tuple[int, Change]] = [
                *((server, "allowed") for server in connectivity.members(gained)),
                *((server, "denied") for server in connectivity.members(lost)),
            ]
            changed.sort()
            cells.extend(
                Cell(name, index.names[server], change)
                for server, change in changed[: limit - len(cells)]
            )
    return Diff(protocol, port, allowed, denied, tuple(cells), len(cells) == allowed + denied)


def diff(
    before: Sequence[models.Policy],
    after: Sequence[models.Policy],
    topology: models.Topology | connectivity.Index,
    protocol: Protocol,
    port: int,
    *,
    view: connectivity.View = "enforce",
    limit: int = MAX_CELLS,
) -> Diff:
    """The cells ``after`` allows that ``before`` did not, and the other way round."""
    index = topology if isinstance(topology, connectivity.Index) else connectivity.Index(topology)
    compared = sides(index, before, after, protocol, port, view=view)
    return compare(index, compared, protocol, port, limit=limit)


def diff_ports(
    before: Sequence[models.Policy],
    after: Sequence[models.Policy],
    topology: models.Topology | connectivity.Index,
    flows: Iterable[tuple[Protocol, int]],
    *,
    view: connectivity.View = "enforce",
    limit: int = 0,
) -> list[Diff]:
    """``diff`` for each (protocol, port); by default counts only, no cells."""
    index = topology if isinstance(topology, connectivity.Index) else connectivity.Index(topology)
    return [
        diff(before, after, index, protocol, port, view=view, limit=limit)
        for protocol, port in flows
    ]


def common_ports(
    policies: Iterable[models.Policy],
    topology: models.Topology,
    *,
    most: int = 12,
) -> list[tuple[Protocol, int]]:
    """The ports worth diffing for a change to ``policies``: the ports their rules name
    (named ports as the topology's endpoints number them), then web and DNS ports."""
    found: dict[tuple[Protocol, int], None] = {}
    named: dict[tuple[str, Protocol], set[int]] = {}
    for pod in topology.pods.values():
        for item in pod.ports:
            if item.name is not None:
                named.setdefault((item.name, item.protocol), set()).add(item.port)
    for policy in policies:
        for direction in ("ingress", "egress"):
            for rule in policy.spec.rules(direction):
                for entry in rule.ports or ():
                    if isinstance(entry.port, int):
                        found[(entry.protocol, entry.port)] = None
                    elif isinstance(entry.port, str):
                        for number in sorted(named.get((entry.port, entry.protocol), ())):
                            found[(entry.protocol, number)] = None
    for flow in COMMON:
        found[flow] = None
    return list(found)[:most]
