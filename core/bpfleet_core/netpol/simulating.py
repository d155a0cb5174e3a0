"""The policy simulator: Kubernetes NetworkPolicy semantics, evaluated directly.

A connection from a client to a server on ``protocol``/``port`` is allowed when the
client's egress allows it AND the server's ingress allows it:

- A pod is isolated for a direction once some policy selects it (its namespace, its
  ``podSelector``, and for bpfleet policies its ``nodeSelector``) and has that direction
  in its effective ``policyTypes`` (Ingress always; Egress when given explicitly or when
  the policy has egress rules). A pod that is not isolated allows everything.
- An isolated pod allows what any rule of any selecting policy allows (a union).
- A rule matches when a peer matches (peers are ORed; ``from``/``to`` missing or empty
  matches every peer) and a port matches (``ports`` missing or empty matches all).
- In one peer, ``podSelector`` and ``namespaceSelector`` are ANDed; ``podSelector``
  alone means the policy's own namespace; ``namespaceSelector`` alone means every pod
  of the matching namespaces; ``ipBlock`` matches any address in ``cidr`` and in no
  ``except``, pod addresses included.
- A named port resolves against the destination (the server) pod's container ports:
  same name, same protocol. A server that is not a pod has no named ports.
- Replies are part of the connection (enforcement is stateful), so only the opening
  direction is judged; a pod's traffic to itself is never policed.
- Addresses outside the topology are not policed: only a pod's own policies judge.

``view="enforce"`` counts enforce-mode policies only (what the datapath drops);
``view="audit"`` counts audit-mode policies as well (what audit would report).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from bpfleet_core.netpol import connectivity, models
from bpfleet_core.netpol.models import Address, Direction, Protocol

View = Literal["enforce", "audit"]


class Matrix(TypedDict):
    protocol: str
    port: int
    allowed: dict[str, dict[str, bool]]


@dataclass(frozen=True)
class Endpoint:
    """A side of a connection: a pod of the topology, or an address outside it."""

    name: str  # "ns/pod", or the address
    address: Address
    pod: models.Pod | None

    @property
    def is_pod(self) -> bool:
        return self.pod is not None


def endpoint(topology: models.Topology, name: str) -> Endpoint:
    """``"ns/pod"`` or an IP address (a pod's address names that pod)."""
    if name in topology.pods:
        return Endpoint(name, topology.pods[name].ip, topology.pods[name])
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        raise ValueError(f"{name!r} is neither a pod of the topology nor an IP address") from None
    owner = topology.pod_at(address)
    if owner is not None:
        return Endpoint(owner, address, topology.pods[owner])
    return Endpoint(str(address), address, None)


@dataclass(frozen=True)
class RuleRef:
    policy: str  # "<namespace>/<name>"
    direction: Direction
    index: int

    def __str__(self) -> str:
        return f"{self.policy} {self.direction} rule {self.index}"


@dataclass(frozen=True)
class DirectionVerdict:
    """What one side's policies say: the client's egress or the server's ingress."""

    direction: Direction
    endpoint: str
    allowed: bool
    policed: bool  # False: not a pod of the topology, so nothing polices it
    isolating: tuple[str, ...]  # policies that select the endpoint for this direction
    allowed_by: tuple[RuleRef, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "endpoint": self.endpoint,
            "allowed": self.allowed,
            "policed": self.policed,
            "isolating": list(self.isolating),
            "allowedBy": [str(ref) for ref in self.allowed_by],
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Explanation:
    client: str
    server: str
    protocol: Protocol
    port: int
    allowed: bool  # the enforced verdict
    egress: DirectionVerdict
    ingress: DirectionVerdict
    audit_allowed: bool  # the verdict with audit-mode policies enforced as well
    audit_egress: DirectionVerdict
    audit_ingress: DirectionVerdict
    loopback: bool = False

    @property
    def audit_denied(self) -> bool:
        """Allowed, but an audit-mode policy would deny it (an audit drop)."""
        return self.allowed and not self.audit_allowed

    def summary(self) -> str:
        flow = f"{self.client} -> {self.server} {self.port}/{self.protocol}"
        if self.loopback:
            return f"{flow}: allowed (a pod's traffic to itself is not policed)"
        verdict = "allowed" if self.allowed else "denied"
        if self.audit_denied:
            verdict += " (audit: would be denied)"
        return f"{flow}: {verdict}"

    def lines(self) -> list[str]:
        lines = [self.summary()]
        if self.loopback:
            return lines
        lines.append(f"  egress:  {self.egress.reason}")
        lines.append(f"  ingress: {self.ingress.reason}")
        if self.audit_denied:
            for audit in (self.audit_egress, self.audit_ingress):
                if not audit.allowed:
                    lines.append(f"  audit {audit.direction}: {audit.reason}")
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def to_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "server": self.server,
            "protocol": self.protocol,
            "port": self.port,
            "allowed": self.allowed,
            "loopback": self.loopback,
            "egress": self.egress.to_dict(),
            "ingress": self.ingress.to_dict(),
            "auditAllowed": self.audit_allowed,
            "auditEgress": self.audit_egress.to_dict(),
            "auditIngress": self.audit_ingress.to_dict(),
        }


# --- matching ----------------------------------------------------------------------


def _in_view(policy: models.Policy, view: View) -> bool:
    return view == "audit" or policy.mode == "enforce"


def peer_matches(
    peer: models.NetworkPolicyPeer,
    policy: models.Policy,
    topology: models.Topology,
    other: Endpoint,
) -> bool:
    """Whether one peer of ``policy`` matches ``other``, the far side of a flow."""
    if peer.ip_block is not None:
        return peer.ip_block.contains(other.address)
    if other.pod is None:
        return False  # selectors only ever select pods
    namespace = topology.namespace_of(other.name)
    if peer.namespace_selector is None:
        if namespace != policy.namespace:
            return False
    elif not peer.namespace_selector.matches(topology.namespaces[namespace]):
        return False
    return peer.pod_selector is None or peer.pod_selector.matches(other.pod.labels)


def port_matches(
    rule_port: models.NetworkPolicyPort, server: Endpoint, protocol: Protocol, port: int
) -> bool:
    """Whether one port entry of a rule matches a flow to ``server`` (named ports resolve
    against the server's container ports)."""
    if rule_port.protocol != protocol:
        return False
    if rule_port.port is None:
        return True
    if isinstance(rule_port.port, str):
        if server.pod is None:
            return False
        return server.pod.named_port(rule_port.port, protocol) == port
    last = rule_port.end_port if rule_port.end_port is not None else rule_port.port
    return rule_port.port <= port <= last


@dataclass(frozen=True)
class _Flow:
    client: Endpoint
    server: Endpoint
    protocol: Protocol
    port: int


def _rule_matches(
    rule: models.Rule,
    policy: models.Policy,
    topology: models.Topology,
    other: Endpoint,
    flow: _Flow,
) -> bool:
    if rule.ports and not any(
        port_matches(item, flow.server, flow.protocol, flow.port) for item in rule.ports
    ):
        return False
    peers = rule.peers
    return not peers or any(peer_matches(peer, policy, topology, other) for peer in peers)


def _judge(
    policies: Sequence[models.Policy],
    topology: models.Topology,
    view: View,
    direction: Direction,
    flow: _Flow,
) -> DirectionVerdict:
    """The verdict of the client's egress, or of the server's ingress, on ``flow``."""
    wanted: models.PolicyType = "Ingress" if direction == "ingress" else "Egress"
    subject, other = (
        (flow.client, flow.server) if direction == "egress" else (flow.server, flow.client)
    )
    where = f"{flow.port}/{flow.protocol}"
    described = f"{other.name}:{where}" if direction == "egress" else f"{other.name} on {where}"
    if subject.pod is None:
        return DirectionVerdict(
            direction,
            subject.name,
            allowed=True,
            policed=False,
            isolating=(),
            allowed_by=(),
            reason=f"{subject.name} is not a pod of the topology: its {direction} is not policed",
        )
    selecting = [
        policy
        for policy in policies
        if _in_view(policy, view)
        and wanted in policy.spec.effective_policy_types()
        and models.selects(policy, topology, subject.name)
    ]
    if not selecting:
        return DirectionVerdict(
            direction,
            subject.name,
            allowed=True,
            policed=True,
            isolating=(),
            allowed_by=(),
            reason=f"{subject.name} is not isolated for {direction}: no policy selects it",
        )
    allowed_by = tuple(
        RuleRef(policy.key, direction, index)
        for policy in selecting
        for index, rule in enumerate(policy.spec.rules(direction))
        if _rule_matches(rule, policy, topology, other, flow)
    )
    names = tuple(policy.key for policy in selecting)
    isolated_by = (
        f"{subject.name} is isolated for {direction} by "
        f"{'policy' if len(names) == 1 else 'policies'} {', '.join(names)}"
    )
    if allowed_by:
        reason = f"{described} is allowed by {', '.join(str(ref) for ref in allowed_by)}"
    else:
        reason = f"{isolated_by} and no {direction} rule allows {described}"
    return DirectionVerdict(
        direction,
        subject.name,
        allowed=bool(allowed_by),
        policed=True,
        isolating=names,
        allowed_by=allowed_by,
        reason=reason,
    )


def _verdicts(
    policies: Sequence[models.Policy], topology: models.Topology, flow: _Flow, view: View
) -> tuple[DirectionVerdict, DirectionVerdict]:
    return (
        _judge(policies, topology, view, "egress", flow),
        _judge(policies, topology, view, "ingress", flow),
    )


def _check_flow(protocol: str, port: int) -> Protocol:
    if protocol not in models.PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(models.PROTOCOLS)}, not {protocol!r}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be between 1 and 65535, not {port}")
    return protocol


# --- the public API ------------------------------------------------------------------


def allowed(  # noqa: PLR0917 - the flow reads best positionally, as in explain()
    policies: Iterable[models.Policy],
    topology: models.Topology,
    client: str,
    server: str,
    protocol: Protocol,
    port: int,
    *,
    view: View = "enforce",
) -> bool:
    """Whether ``client`` may open a connection to ``server`` (pods or addresses)."""
    result = explain(policies, topology, client, server, protocol, port)
    return result.allowed if view == "enforce" else result.audit_allowed


def explain(  # noqa: PLR0917 - (policies, topology, client, server, protocol, port)
    policies: Iterable[models.Policy],
    topology: models.Topology,
    client: str,
    server: str,
    protocol: Protocol | str,
    port: int,
) -> Explanation:
    """Why ``client`` may or may not connect to ``server``: which policy and rule decided.

    ``client`` and ``server`` are ``"ns/pod"`` or IP addresses (outside the topology, an
    address is not policed). Raises ``ValueError`` for an unknown pod or a bad flow.
    """
    checked = _check_flow(protocol, port)
    items = list(policies)
    source = endpoint(topology, client)
    target = endpoint(topology, server)
    flow = _Flow(source, target, checked, port)
    egress, ingress = _verdicts(items, topology, flow, "enforce")
    audit_egress, audit_ingress = _verdicts(items, topology, flow, "audit")
    loopback = source.address == target.address
    return Explanation(
        client=source.name,
        server=target.name,
        protocol=checked,
        port=port,
        allowed=loopback or (egress.allowed and ingress.allowed),
        egress=egress,
        ingress=ingress,
        audit_allowed=loopback or (audit_egress.allowed and audit_ingress.allowed),
        audit_egress=audit_egress,
        audit_ingress=audit_ingress,
        loopback=loopback,
    )


def matrix(
    policies: Iterable[models.Policy],
    topology: models.Topology,
    protocol: Protocol | str,
    port: int,
    *,
    view: View = "enforce",
) -> Matrix:
    """``{"protocol", "port", "allowed": {client: {server: bool}}}`` for every pod pair.

    Pods come in the topology's order; a pod to itself is always True (not judged).
    Computed all at once (``connectivity``), with the same verdicts as ``explain``.
    """
    checked = _check_flow(protocol, port)
    index = connectivity.Index(topology)
    rows = connectivity.judge(index, policies, checked, port, view=view).rows()
    table = {
        client: {
            server: bool(rows[position] >> column & 1) for column, server in enumerate(index.names)
        }
        for position, client in enumerate(index.names)
    }
    return {"protocol": checked, "port": port, "allowed": table}


def rows(result: Matrix, order: Sequence[str]) -> dict[str, str]:
    """A matrix as the conformance data writes it: ``.`` allowed, ``X`` blocked, ``-`` self."""
    return {
        client: "".join(
            "-" if client == server else ("." if result["allowed"][client][server] else "X")
            for server in order
        )
        for client in order
    }
