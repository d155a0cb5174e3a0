"""What agents are sent, computed once: each API process's view of the agent plane.

- A program fragment (``{"name", "spec"}`` of one program generation) is serialised once
  and reused for every node that runs it; a policy part once per fingerprint
  (``policies.sync`` computes one per node), its revision spliced in per node.
- ``known``: each node's revision and what it is assigned, as this process last read
  it. A long-poll whose ``after`` equals the known revision waits without a query; a
  wake-up (a change, from this process or through Redis) reads the woken batch back
  in one statement before its long-polls resume.
- ``refresh``: one statement over every node's revision, every ``REFRESH_SECONDS``,
  catches what a lost wake-up or a database restored from a backup changed, reads
  back in bulk the nodes this process does not know yet (at start: all), and counts
  the fleet (heartbeat intervals stretch with it).

Everything here is a cache of the database and is rebuilt from it; nothing is written.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from bpfleet_api import db, fleet, policies
from bpfleet_api.changes import NotFound
from bpfleet_api.models import Assignment, Node, NodePolicyAssignment, ProgramRevision
from bpfleet_api.notify import Waiters
from bpfleet_core.protocol import ProgramAssignment
from bpfleet_core.resources import BpfProgramSpec

REFRESH_SECONDS = 30.0
MAX_FRAGMENTS = 4096
MAX_POLICY_PARTS = 64
_FragmentKey = tuple[str, int, str]  # program, generation, the revision's creation time


@dataclass(frozen=True)
class NodeDesired:
    """A node's desired state by reference: its revision, its programs' fragment keys,
    and its policy part's revision and fingerprint (None: no policy part)."""

    revision: int
    programs: tuple[_FragmentKey, ...]
    policy: tuple[int, str] | None


def _read(session: Session, names: list[str]) -> dict[str, NodeDesired]:
    """Nodes' desired state by reference, in one statement."""
    rows = session.execute(
        sa_select(
            col(Node.name),
            col(Node.desired_revision),
            col(Assignment.program),
            col(Assignment.generation),
            col(ProgramRevision.created_at),
            col(NodePolicyAssignment.revision),
            col(NodePolicyAssignment.fingerprint),
        )
        .select_from(Node)
        .outerjoin(Assignment, col(Assignment.node) == col(Node.name))
        .outerjoin(
            ProgramRevision,
            (col(ProgramRevision.program) == col(Assignment.program))
            & (col(ProgramRevision.generation) == col(Assignment.generation)),
        )
        .outerjoin(NodePolicyAssignment, col(NodePolicyAssignment.node) == col(Node.name))
        .where(col(Node.name).in_(names))
        .order_by(col(Node.name), col(Assignment.program))
    ).all()
    found: dict[str, tuple[int, list[_FragmentKey], tuple[int, str] | None]] = {}
    for name, revision, program, generation, created, policy_revision, fingerprint in rows:
        policy = (int(policy_revision), fingerprint) if fingerprint is not None else None
        entry = found.setdefault(name, (int(revision), [], policy))
        if program is not None:
            entry[1].append((program, int(generation), str(created)))
    return {
        name: NodeDesired(revision, tuple(programs), policy)
        for name, (revision, programs, policy) in found.items()
    }


class AgentPlane:
    """One API process's cache of what agents are sent (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.known: dict[str, NodeDesired] = {}
        self._fragments: dict[_FragmentKey, bytes] = {}
        self._policy_parts: dict[str, bytes] = {}
        self.node_count = 0

    # ------------------------------------------------------------ reading (in threads)

    def load(self, session: Session, names: Iterable[str]) -> None:
        """Read these nodes' desired state, and whatever they need that is not cached,
        in a few statements whatever their number."""
        wanted = sorted(set(names))
        for start in range(0, len(wanted), fleet.CHUNK):
            chunk = wanted[start : start + fleet.CHUNK]
            read = _read(session, chunk)
            self._load_fragments(session, read.values())
            self._load_policy_parts(session, read)
            with self._lock:
                for name in chunk:
                    if name in read:
                        self.known[name] = read[name]
                    else:
                        self.known.pop(name, None)

    def _load_fragments(self, session: Session, desired: Iterable[NodeDesired]) -> None:
        missing = {key for entry in desired for key in entry.programs} - self._fragments.keys()
        if not missing:
            return
        programs = sorted({program for program, _, _ in missing})
        rows = session.exec(
            select(ProgramRevision).where(col(ProgramRevision.program).in_(programs))
        ).all()
        with self._lock:
            if len(self._fragments) + len(missing) > MAX_FRAGMENTS:
                self._fragments.clear()
            for row in rows:
                key = (row.program, row.generation, str(row.created_at))
                if key in missing:
                    fragment = ProgramAssignment(
                        name=row.program, spec=BpfProgramSpec.model_validate(row.spec)
                    )
                    self._fragments[key] = fragment.model_dump_json(by_alias=True).encode()

    def _load_policy_parts(self, session: Session, read: dict[str, NodeDesired]) -> None:
        for name, entry in read.items():
            if entry.policy is None or entry.policy[1] in self._policy_parts:
                continue
            part = policies.part_of(session, name)
            if part is None:
                continue
            body = part.model_dump_json(by_alias=True, exclude={"revision"}).encode()
            with self._lock:
                if len(self._policy_parts) >= MAX_POLICY_PARTS:
                    self._policy_parts.clear()
                self._policy_parts[entry.policy[1]] = body

    def refresh(self, session: Session) -> list[str]:
        """Compare every node's revision with what is known; forget and return the nodes
        whose revision moved without a wake-up reaching this process; read back those
        and any node not known yet."""
        revisions = dict(
            session.execute(sa_select(col(Node.name), col(Node.desired_revision))).all()
        )
        moved = []
        with self._lock:
            self.node_count = len(revisions)
            for name, entry in list(self.known.items()):
                if revisions.get(name) != entry.revision:
                    del self.known[name]
                    moved.append(name)
            unknown = [name for name in revisions if name not in self.known]
        # In bulk, before their long-polls come: at start the whole fleet, so that ten
        # thousand first long-polls do not each read their node on a few threads.
        self.load(session, unknown)
        return moved

    # ------------------------------------------------------------ answering (on the loop)

    def forget(self, names: Iterable[str]) -> None:
        with self._lock:
            for name in names:
                self.known.pop(name, None)

    def revision_of(self, node: str) -> int | None:
        entry = self.known.get(node)
        return entry.revision if entry is not None else None

    def document(self, node: str) -> bytes | None:
        """The node's assignments as the agent receives them (``protocol.Assignments``),
        from cached parts; None when something it needs is not cached."""
        entry = self.known.get(node)
        if entry is None:
            return None
        fragments = [self._fragments.get(key) for key in entry.programs]
        if any(fragment is None for fragment in fragments):
            return None
        parts = [
            b'{"revision":%d,"programs":[' % entry.revision,
            b",".join(fragment for fragment in fragments if fragment is not None),
            b"]",
        ]
        if entry.policy is not None:
            body = self._policy_parts.get(entry.policy[1])
            if body is None:
                return None
            parts.append(b',"policy":{"revision":%d,' % entry.policy[0] + body[1:])
        parts.append(b',"node":' + json.dumps(node).encode() + b"}")
        return b"".join(parts)


# ------------------------------------------------------------------ the long-poll


def load_nodes(plane: AgentPlane, nodes: list[str]) -> None:
    with Session(db.get_engine()) as session:
        plane.load(session, nodes)


async def answer(plane: AgentPlane, node: str, after: int) -> bytes | None:
    """The node's document if its revision is not ``after``, else None. Reads the
    database only when this process does not know the node's revision. Raises
    ``NotFound`` for a node that is not registered."""
    if plane.revision_of(node) is None:
        await run_in_threadpool(load_nodes, plane, [node])
    revision = plane.revision_of(node)
    if revision is None:
        raise NotFound(f"node {node} is not registered")
    if revision == after:
        return None
    document = plane.document(node)
    if document is None:  # a part fell out of the cache meanwhile
        await run_in_threadpool(load_nodes, plane, [node])
        document = plane.document(node)
    return document


async def long_poll(
    plane: AgentPlane, waiters: Waiters, node: str, after: int, wait_seconds: float
) -> bytes | None:
    """The node's document once its revision differs from ``after`` (newer, or older
    after a restore), within ``wait_seconds``; None if it did not. A poll with nothing
    new costs no query: it waits for a wake-up, which the pacer has read back for it. A
    wake-up that never came is made up by ``refresh`` (every node's revision compared
    with the database every REFRESH_SECONDS), not by each long-poll reading its node
    again: 10,000 of those opened together would come back together."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        document = await answer(plane, node, after)
        if document is not None:
            return document
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        await waiters.wait(node, remaining)
