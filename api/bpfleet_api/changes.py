"""What a change to fleet state returns: the nodes to wake after the commit (``Changes``),
or why it was refused (``FleetError`` and its kinds, each an HTTP status); and the one way
a node's assignment revision grows. Shared by ``fleet`` and ``policies``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from bpfleet_api.models import Node

_IN_CHUNK = 500  # values in one IN (...): SQLite limits the parameters of a statement


class FleetError(Exception):
    status_code = 400

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or []


class NotFound(FleetError):
    status_code = 404


class Forbidden(FleetError):
    status_code = 403


class Invalid(FleetError):
    status_code = 422


class Conflict(FleetError):
    status_code = 409


@dataclass
class Changes:
    """Nodes whose assignments changed: to be woken after the commit."""

    nodes: set[str] = field(default_factory=set)

    def merge(self, other: Changes) -> Changes:
        self.nodes |= other.nodes
        return self


def get_node(session: Session, name: str) -> Node:
    node = session.get(Node, name)
    if node is None:
        raise NotFound(f"node {name} is not registered")
    return node


def bump_revision(session: Session, node_name: str) -> int:
    """A node's assignments changed: its revision grows, so its agent sees a newer one."""
    node = get_node(session, node_name)
    node.desired_revision += 1
    session.add(node)
    return node.desired_revision


def bump_revisions(session: Session, names: Iterable[str]) -> dict[str, int]:
    """``bump_revision`` for many nodes at once (a policy change may touch thousands):
    the rows read in a few queries; the unregistered are left out."""
    wanted = sorted(set(names))
    revisions: dict[str, int] = {}
    with session.no_autoflush:
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            for node in session.exec(select(Node).where(col(Node.name).in_(chunk))).all():
                node.desired_revision += 1
                session.add(node)
                revisions[node.name] = node.desired_revision
    return revisions
