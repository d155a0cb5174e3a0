"""Ratings: how open a policy leaves the endpoints it selects, per direction.

For each direction the policy isolates (its ``policyTypes``), the rating says:

- that it is default-deny for that direction (anything no rule allows is denied);
- its widest peer, with its field and line: rules are ORed, so the widest one is what
  the direction really admits. Peers rank from widest: ``anywhere`` (a rule without
  peers, or ``0.0.0.0/0``/``::/0``), ``addresses`` (other ``ipBlock``s), ``every
  namespace`` (``namespaceSelector: {}``), ``some namespaces``, ``own namespace``
  (``podSelector: {}`` alone), ``some pods``; a rule without ports counts as wider
  than the same peer on listed ports;
- a grade from that widest peer: A (some pods on listed ports, or nothing at all) to
  F (anywhere, on every port);
- how many (endpoint, port) pairs the policy lets in or out, of how many there are,
  over the topology: in, every other endpoint to every port a selected endpoint
  serves; out, every selected endpoint to every port another endpoint serves. Audit
  policies are rated as if enforced. Ports are the container ports endpoints declare.

A direction the policy does not isolate gets no grade: the policy does not restrict it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bpfleet_core.netpol import connectivity, models, validating
from bpfleet_core.netpol.locating import Loc, LocatedDocument, Span
from bpfleet_core.netpol.models import Direction

ANYWHERE, ADDRESSES, EVERY_NAMESPACE, SOME_NAMESPACES, OWN_NAMESPACE, SOME_PODS = (
    "anywhere",
    "addresses",
    "every namespace",
    "some namespaces",
    "own namespace",
    "some pods",
)
REACHES = (ANYWHERE, ADDRESSES, EVERY_NAMESPACE, SOME_NAMESPACES, OWN_NAMESPACE, SOME_PODS)
GRADES = ("A", "B", "C", "D", "F")  # best first
# (reach, every port?) -> grade
_GRADE = {
    (ANYWHERE, True): "F",
    (ANYWHERE, False): "D",
    (ADDRESSES, True): "D",
    (ADDRESSES, False): "C",
    (EVERY_NAMESPACE, True): "D",
    (EVERY_NAMESPACE, False): "C",
    (SOME_NAMESPACES, True): "C",
    (SOME_NAMESPACES, False): "B",
    (OWN_NAMESPACE, True): "C",
    (OWN_NAMESPACE, False): "B",
    (SOME_PODS, True): "B",
    (SOME_PODS, False): "A",
}


@dataclass(frozen=True)
class Peer:
    """One peer of one rule (or a whole rule without peers), as wide as it is."""

    loc: Loc
    reach: str
    description: str
    endpoints: int  # endpoints of the topology it matches
    every_port: bool
    ports: str
    grade: str
    span: Span | None = None

    def to_dict(self) -> dict[str, Any]:
        span = self.span
        return {
            "path": list(self.loc),
            "pathText": validating.render_loc(self.loc),
            "line": span.line if span else None,
            "column": span.column if span else None,
            "reach": self.reach,
            "description": self.description,
            "endpoints": self.endpoints,
            "ports": self.ports,
            "grade": self.grade,
        }


@dataclass(frozen=True)
class DirectionRating:
    direction: Direction
    isolated: bool  # in policyTypes: default-deny for this direction
    grade: str | None  # None when the policy does not restrict this direction
    widest: Peer | None  # None when isolated with no rule: nothing is allowed
    selected: int
    pairs_allowed: int
    pairs_total: int
    outside: bool  # addresses outside the fleet are let through

    @property
    def summary(self) -> str:
        if not self.isolated:
            return f"{self.direction}: not restricted by this policy"
        verb = "in" if self.direction == "ingress" else "out"
        counted = (
            f"{self.pairs_allowed:,} of {self.pairs_total:,} (endpoint, port) pairs let {verb}"
        )
        if self.widest is None:
            return f"{self.direction}: default-deny, grade {self.grade}; nothing allowed; {counted}"
        where = f" (line {self.widest.span.line})" if self.widest.span is not None else ""
        return (
            f"{self.direction}: default-deny, grade {self.grade}; widest: "
            f"{self.widest.description} on {self.widest.ports}{where}; {counted}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "isolated": self.isolated,
            "defaultDeny": self.isolated,
            "grade": self.grade,
            "widest": self.widest.to_dict() if self.widest is not None else None,
            "selected": self.selected,
            "pairsAllowed": self.pairs_allowed,
            "pairsTotal": self.pairs_total,
            "outside": self.outside,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class Rating:
    policy: str
    ingress: DirectionRating
    egress: DirectionRating

    @property
    def grade(self) -> str | None:
        """The worse of the two directions' grades."""
        grades = [item.grade for item in (self.ingress, self.egress) if item.grade is not None]
        return max(grades, key=GRADES.index) if grades else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "grade": self.grade,
            "ingress": self.ingress.to_dict(),
            "egress": self.egress.to_dict(),
        }


def ports_text(rule: models.Rule) -> tuple[bool, str]:
    """(every port?, the ports in words)."""
    if not rule.ports:
        return True, "every port"
    every = any(item.port is None for item in rule.ports)
    words = []
    for item in rule.ports:
        if item.port is None:
            words.append(f"{item.protocol}/every port")
        elif item.end_port is not None:
            words.append(f"{item.protocol}/{item.port}-{item.end_port}")
        else:
            words.append(f"{item.protocol}/{item.port}")
    return every, ", ".join(words)


def describe_peer(peer: models.NetworkPolicyPeer, policy: models.Policy) -> tuple[str, str, Loc]:
    """(reach, description, where in the peer) for one peer."""
    if peer.ip_block is not None:
        block = peer.ip_block
        excepted = f" except {', '.join(block.except_)}" if block.except_ else ""
        reach = ANYWHERE if block.network.prefixlen == 0 else ADDRESSES
        return reach, f"{block.cidr}{excepted}", ("ipBlock", "cidr")
    pods = peer.pod_selector
    namespaces = peer.namespace_selector
    if namespaces is None:
        assert pods is not None
        if not pods.match_labels and not pods.match_expressions:
            return OWN_NAMESPACE, f"every pod of namespace {policy.namespace}", ("podSelector",)
        return (
            SOME_PODS,
            f"pods {pods.describe()} of namespace {policy.namespace}",
            ("podSelector",),
        )
    every_namespace = not namespaces.match_labels and not namespaces.match_expressions
    in_namespaces = "every namespace" if every_namespace else f"namespaces {namespaces.describe()}"
    if pods is None or (not pods.match_labels and not pods.match_expressions):
        text = f"every pod of {in_namespaces}"
    else:
        text = f"pods {pods.describe()} of {in_namespaces}"
    return (EVERY_NAMESPACE if every_namespace else SOME_NAMESPACES), text, ("namespaceSelector",)


def _peers(
    policy: models.Policy, direction: Direction, index: connectivity.Index
) -> Iterator[Peer]:
    field_name = "from" if direction == "ingress" else "to"
    sides = "source" if direction == "ingress" else "destination"
    for number, rule in enumerate(policy.spec.rules(direction)):
        every_port, ports = ports_text(rule)
        if not rule.peers:
            yield Peer(
                ("spec", direction, number),
                ANYWHERE,
                f"every {sides} (no `{field_name}`)",
                index.everyone.bit_count(),
                every_port,
                ports,
                _GRADE[(ANYWHERE, every_port)],
            )
            continue
        for position, peer in enumerate(rule.peers):
            reach, description, inner = describe_peer(peer, policy)
            yield Peer(
                ("spec", direction, number, field_name, position, *inner),
                reach,
                description,
                index.peer(peer, policy.namespace).bit_count(),
                every_port,
                ports,
                _GRADE[(reach, every_port)],
            )


def _widest(peers: Sequence[Peer]) -> Peer | None:
    if not peers:
        return None
    return max(
        peers,
        key=lambda peer: (
            GRADES.index(peer.grade),
            -REACHES.index(peer.reach),
            peer.every_port,
            peer.endpoints,
        ),
    )


def _count(
    policy: models.Policy, index: connectivity.Index, direction: Direction
) -> tuple[int, int]:
    """(pairs allowed, pairs there are): see the module docstring."""
    selected = index.selecting(policy)
    allowed = total = 0
    if not selected:
        return 0, 0
    for protocol, port in index.served():
        serving = index.serving(protocol, port)
        judged = connectivity.judge(index, [policy], protocol, port, view="audit")
        if direction == "ingress":
            for server in connectivity.members(selected & serving):
                others = index.everyone & ~(1 << server)
                allowed += (judged.clients_of(server) & others).bit_count()
                total += others.bit_count()
        else:
            for client in connectivity.members(selected):
                destinations = serving & ~(1 << client)
                allowed += (judged.servers_of(client) & destinations).bit_count()
                total += destinations.bit_count()
    return allowed, total


def _direction(
    policy: models.Policy,
    direction: Direction,
    index: connectivity.Index,
    source: LocatedDocument | None,
) -> DirectionRating:
    wanted: models.PolicyType = "Ingress" if direction == "ingress" else "Egress"
    selected = index.selecting(policy).bit_count()
    isolated = wanted in policy.spec.effective_policy_types()
    allowed, total = _count(policy, index, direction)
    if not isolated:
        return DirectionRating(direction, False, None, None, selected, allowed, total, True)
    peers = list(_peers(policy, direction, index))
    widest = _widest(peers)
    if widest is not None and source is not None:
        widest = replace(widest, span=source.span_of(widest.loc))
    outside = any(peer.reach in (ANYWHERE, ADDRESSES) for peer in peers)
    grade = widest.grade if widest is not None else "A"
    return DirectionRating(direction, True, grade, widest, selected, allowed, total, outside)


def rate(
    policy: models.Policy,
    topology: models.Topology,
    *,
    source: LocatedDocument | None = None,
    index: connectivity.Index | None = None,
) -> Rating:
    """The rating of one policy over ``topology`` (lines from ``source``, when given)."""
    if index is None or index.topology is not topology:
        index = connectivity.Index(topology)
    return Rating(
        policy.key,
        _direction(policy, "ingress", index, source),
        _direction(policy, "egress", index, source),
    )
