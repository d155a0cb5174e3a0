"""The diagram of one policy: what the editor draws around the endpoints it selects.

Ingress sources on one side, egress destinations on the other, each side in the same
boxes: ``namespace`` (the policy's own namespace), ``other-namespaces``, ``outside``
(addresses, ``ipBlock``) and, for egress, ``dns``. Each box says whether the policy
lets that kind of peer through: ``unrestricted`` (the policy does not isolate that
direction), ``allowed`` (some rule admits it; the box names those rules) or ``denied``.
A denied box offers the edits that would allow it ("Allow DNS"), as structured fixes
(``editing``) on the document as written, so an editor applies them keeping comments.

Every rule is listed with its field path and its lines, the peers it names and its
ports in words, and which boxes it admits, so the editor can light a rule's lines
when its box is hovered and the other way round. Which box a peer belongs to is
judged here, on the topology: a ``namespaceSelector`` is "this namespace" when it
matches the policy's own namespace's labels, "other namespaces" when it can match
another; DNS is a rule whose ports take 53 (UDP or TCP) and whose peers include a
DNS server of the topology (any peer, when the topology has none).

The document's mode is here too, with the edits that switch it (a
``networking.k8s.io/v1`` document becomes ``bpfleet.io/v1alpha1`` to say ``audit``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bpfleet_core.netpol import connectivity, models, rating, validating
from bpfleet_core.netpol.editing import Edit, Fix
from bpfleet_core.netpol.locating import Loc, LocatedDocument, Span
from bpfleet_core.netpol.models import Direction

BoxKind = Literal["namespace", "other-namespaces", "outside", "dns"]
BoxState = Literal["unrestricted", "allowed", "denied"]
KINDS: dict[Direction, tuple[BoxKind, ...]] = {
    "ingress": ("namespace", "other-namespaces", "outside"),
    "egress": ("namespace", "other-namespaces", "outside", "dns"),
}
TITLES: dict[BoxKind, str] = {
    "namespace": "this namespace",
    "other-namespaces": "other namespaces",
    "outside": "outside (ipBlock)",
    "dns": "DNS",
}
DNS_PORT = 53
# The Internet: every address but the private ranges of RFC 1918.
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
INTERNET: dict[str, Any] = {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(PRIVATE_RANGES)}}


@dataclass(frozen=True)
class PeerText:
    description: str
    loc: Loc
    span: Span | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "path": list(self.loc),
            "pathText": validating.render_loc(self.loc),
            "line": self.span.line if self.span else None,
        }


@dataclass(frozen=True)
class RuleView:
    direction: Direction
    index: int
    loc: Loc
    span: Span | None
    peers: tuple[PeerText, ...]  # empty: every peer (no from/to)
    ports: str
    boxes: tuple[BoxKind, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "index": self.index,
            "path": list(self.loc),
            "pathText": validating.render_loc(self.loc),
            "line": self.span.line if self.span else None,
            "endLine": self.span.end_line if self.span else None,
            "peers": [peer.to_dict() for peer in self.peers],
            "ports": self.ports,
            "boxes": list(self.boxes),
        }


@dataclass(frozen=True)
class Box:
    direction: Direction
    kind: BoxKind
    state: BoxState
    rules: tuple[int, ...]  # the indexes of the rules admitting it
    summary: str
    actions: tuple[Fix, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "kind": self.kind,
            "title": TITLES[self.kind],
            "state": self.state,
            "rules": list(self.rules),
            "summary": self.summary,
            "actions": [action.to_dict() for action in self.actions],
        }


@dataclass(frozen=True)
class Diagram:
    policy: str
    document: int | None
    namespace: str
    mode: models.Mode
    isolated: Mapping[Direction, bool]
    boxes: tuple[Box, ...]
    rules: tuple[RuleView, ...]
    modes: Mapping[models.Mode, Fix]  # the edits that switch to each other mode

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "document": self.document,
            "namespace": self.namespace,
            "mode": self.mode,
            "ingressIsolated": self.isolated["ingress"],
            "egressIsolated": self.isolated["egress"],
            "boxes": [box.to_dict() for box in self.boxes],
            "rules": [rule.to_dict() for rule in self.rules],
            "modeChanges": [
                {"mode": mode, "fix": fix.to_dict()} for mode, fix in sorted(self.modes.items())
            ],
        }


# --- which boxes a rule admits ----------------------------------------------------


def _own_labels(policy: models.Policy, topology: models.Topology) -> Mapping[str, str]:
    return topology.namespaces.get(
        policy.namespace, {models.NAMESPACE_NAME_LABEL: policy.namespace}
    )


def _peer_boxes(
    peer: models.NetworkPolicyPeer, policy: models.Policy, topology: models.Topology
) -> set[BoxKind]:
    if peer.ip_block is not None:
        return {"outside"}
    selector = peer.namespace_selector
    if selector is None:
        return {"namespace"}
    found: set[BoxKind] = set()
    if selector.matches(_own_labels(policy, topology)):
        found.add("namespace")
    others = [name for name in topology.namespaces if name != policy.namespace]
    if any(selector.matches(topology.namespaces[name]) for name in others) or not found:
        found.add("other-namespaces")
    return found


def _ports_take_dns(rule: models.Rule) -> bool:
    if not rule.ports:
        return True
    for item in rule.ports:
        if item.protocol not in ("UDP", "TCP"):
            continue
        if item.port is None or item.port in ("dns", "dns-tcp"):
            return True
        if isinstance(item.port, int):
            last = item.end_port if item.end_port is not None else item.port
            if item.port <= DNS_PORT <= last:
                return True
    return False


def dns_servers(topology: models.Topology, index: connectivity.Index) -> list[str]:
    """Pods serving DNS (port 53 over UDP), kube-dns first."""
    serving = index.pods(index.serving("UDP", DNS_PORT))
    return sorted(serving, key=lambda name: topology.pods[name].labels.get("k8s-app") != "kube-dns")


def _takes_dns(rule: models.Rule, policy: models.Policy, index: connectivity.Index) -> bool:
    if not _ports_take_dns(rule):
        return False
    if not rule.peers:
        return True
    servers = 0
    for name in dns_servers(index.topology, index):
        servers |= index.bit(name)
    for peer in rule.peers:
        if peer.ip_block is not None or not servers:
            return True
        if index.peer(peer, policy.namespace) & servers:
            return True
    return False


def _rule_boxes(
    rule: models.Rule, direction: Direction, policy: models.Policy, index: connectivity.Index
) -> tuple[BoxKind, ...]:
    found: set[BoxKind] = set()
    if not rule.peers:
        found.update(("namespace", "other-namespaces", "outside"))
    for peer in rule.peers or ():
        found |= _peer_boxes(peer, policy, index.topology)
    if direction == "egress" and _takes_dns(rule, policy, index):
        found.add("dns")
    return tuple(kind for kind in KINDS[direction] if kind in found)


# --- the edits a box offers ------------------------------------------------------


def dns_rule(topology: models.Topology, index: connectivity.Index) -> dict[str, Any]:
    """An egress rule letting DNS out: to the fleet's DNS servers if it has any (by their
    namespace and ``k8s-app`` label), UDP and TCP 53."""
    ports = [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]
    servers = dns_servers(topology, index)
    if not servers:
        return {"ports": ports}
    server = servers[0]
    labels = topology.pods[server].labels
    peer: dict[str, Any] = {
        "namespaceSelector": {
            "matchLabels": {models.NAMESPACE_NAME_LABEL: topology.namespace_of(server)}
        }
    }
    if "k8s-app" in labels:
        peer["podSelector"] = {"matchLabels": {"k8s-app": labels["k8s-app"]}}
    elif labels:
        peer["podSelector"] = {"matchLabels": dict(labels)}
    return {"to": [peer], "ports": ports}


def _raw(content: Any, loc: Loc) -> Any:
    for part in loc:
        if isinstance(part, str) and isinstance(content, Mapping):
            content = content.get(part)
        elif isinstance(part, int) and isinstance(content, list) and part < len(content):
            content = content[part]
        else:
            return None
    return content


def add_rule(content: Any, direction: Direction, rule: Mapping[str, Any]) -> Edit:
    """The edit appending ``rule`` to the direction's rules (creating the list)."""
    rules = _raw(content, ("spec", direction))
    if isinstance(rules, list):
        return Edit("add", ("spec", direction, len(rules)), dict(rule))
    return Edit("add", ("spec", direction), [dict(rule)])


def _allow(
    kind: BoxKind,
    direction: Direction,
    content: Any,
    topology: models.Topology,
    index: connectivity.Index,
) -> Fix:
    side = "from" if direction == "ingress" else "to"
    if kind == "dns":
        return Fix(
            "Allow DNS (UDP and TCP 53)", (add_rule(content, direction, dns_rule(topology, index)),)
        )
    rule: dict[str, Any]
    if kind == "namespace":
        rule = {side: [{"podSelector": {}}]}
        return Fix("Allow every endpoint of this namespace", (add_rule(content, direction, rule),))
    if kind == "other-namespaces":
        rule = {side: [{"namespaceSelector": {}}]}
        return Fix("Allow every namespace", (add_rule(content, direction, rule),))
    rule = {side: [INTERNET]}
    return Fix("Allow the Internet (except private ranges)", (add_rule(content, direction, rule),))


def mode_changes(policy: models.Policy, content: Any) -> dict[models.Mode, Fix]:
    """The edits that switch the document to the mode it is not in."""
    spec = _raw(content, ("spec",))
    has_mode = isinstance(spec, Mapping) and "mode" in spec
    if policy.mode == "enforce":
        edits: list[Edit] = []
        if policy.api_version == models.KUBERNETES_API_VERSION:
            edits.append(Edit("replace", ("apiVersion",), models.BPFLEET_API_VERSION))
        if isinstance(spec, Mapping):
            edits.append(Edit("replace" if has_mode else "add", ("spec", "mode"), "audit"))
        else:
            edits.append(Edit("add", ("spec",), {"mode": "audit"}))
        return {"audit": Fix("Audit: count what it would deny, deny nothing", tuple(edits))}
    return {"enforce": Fix("Enforce", (Edit("replace", ("spec", "mode"), "enforce"),))}


# --- the diagram -------------------------------------------------------------------


def _summary(kind: BoxKind, direction: Direction, state: BoxState, rules: Sequence[int]) -> str:
    what = TITLES[kind]
    verb = "in from" if direction == "ingress" else "out to"
    if state == "unrestricted":
        return f"allowed: this policy does not restrict {direction}"
    if state == "denied":
        return f"denied: no {direction} rule lets {what} {verb.split(maxsplit=1)[0]}"
    named = ", ".join(f"rule {index}" for index in rules)
    return f"allowed {verb} {what} by {direction} {named}"


def draw(
    policy: models.Policy,
    topology: models.Topology,
    *,
    source: LocatedDocument | None = None,
    index: connectivity.Index | None = None,
) -> Diagram:
    """The diagram of ``policy`` over ``topology``; lines and edits from ``source``."""
    if index is None or index.topology is not topology:
        index = connectivity.Index(topology)
    content = source.content if source is not None else None
    if not isinstance(content, Mapping):
        content = policy.model_dump(mode="json", by_alias=True, exclude_none=True)

    def span(loc: Loc) -> Span | None:
        return source.span_of(loc) if source is not None else None

    types = policy.spec.effective_policy_types()
    isolated: dict[Direction, bool] = {
        "ingress": "Ingress" in types,
        "egress": "Egress" in types,
    }
    rules: list[RuleView] = []
    boxes: list[Box] = []
    for direction in ("ingress", "egress"):
        side = "from" if direction == "ingress" else "to"
        views = []
        for number, rule in enumerate(policy.spec.rules(direction)):
            peers = []
            for position, peer in enumerate(rule.peers or ()):
                _, description, _ = rating.describe_peer(peer, policy)
                loc: Loc = ("spec", direction, number, side, position)
                peers.append(PeerText(description, loc, span(loc)))
            _, ports = rating.ports_text(rule)
            loc = ("spec", direction, number)
            views.append(
                RuleView(
                    direction,
                    number,
                    loc,
                    span(loc),
                    tuple(peers),
                    ports,
                    _rule_boxes(rule, direction, policy, index),
                )
            )
        rules.extend(views)
        for kind in KINDS[direction]:
            admitting = tuple(view.index for view in views if kind in view.boxes)
            state: BoxState
            if not isolated[direction]:
                state = "unrestricted"
            else:
                state = "allowed" if admitting else "denied"
            actions = (
                (_allow(kind, direction, content, topology, index),) if state == "denied" else ()
            )
            boxes.append(
                Box(
                    direction,
                    kind,
                    state,
                    admitting,
                    _summary(kind, direction, state, admitting),
                    actions,
                )
            )
    return Diagram(
        policy.key,
        source.index if source is not None else None,
        policy.namespace,
        policy.mode,
        isolated,
        tuple(boxes),
        tuple(rules),
        mode_changes(policy, content),
    )
