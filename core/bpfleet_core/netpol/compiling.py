"""The policy compiler: validated policies + a topology -> per-endpoint rules (``rules``).

Everything that needs the cluster's state is resolved here, so the datapath only
compares addresses and ports:

- Selector peers become the ``/32`` (or ``/128``) blocks of the pods they select;
  ``ipBlock`` peers stay blocks, with their ``except`` list.
- Named ports resolve against the destination pod: for ingress that is the endpoint
  itself; for egress it is each destination, so an egress rule with named ports is
  split into one rule per resolved port whose peers are exactly the destination pods
  that have that port (an ``ipBlock`` peer contributes the pods inside the block, as
  only pods have named ports).
- A rule without ports allows every protocol and port (``PortRange(None)``); a port
  without ``endPort`` is a range of one; a protocol without a port is its whole range.
- ``enforce`` views come from enforce-mode policies, ``audit`` views from all of them.

``verdict`` evaluates compiled rules the way the datapath does, so tests can check
that the compiled form decides every flow exactly as the simulator does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from bpfleet_core.netpol import models
from bpfleet_core.netpol.models import Address, Direction
from bpfleet_core.netpol.rules import (
    DirectionRules,
    EndpointRules,
    PeerBlock,
    PortRange,
    Protocol,
    Rule,
)

View = Literal["enforce", "audit"]
ALL_TRAFFIC = PortRange(None)


def host_block(address: Address) -> PeerBlock:
    return PeerBlock(ipaddress.ip_network(f"{address}/{address.max_prefixlen}"))


def _selected_pods(
    peer: models.NetworkPolicyPeer, policy: models.Policy, topology: models.Topology
) -> list[str]:
    """The pods a selector peer selects (``podSelector`` and/or ``namespaceSelector``)."""
    pods = []
    for key, pod in topology.pods.items():
        namespace = topology.namespace_of(key)
        if peer.namespace_selector is None:
            in_namespace = namespace == policy.namespace
        else:
            in_namespace = peer.namespace_selector.matches(topology.namespaces[namespace])
        if in_namespace and (peer.pod_selector is None or peer.pod_selector.matches(pod.labels)):
            pods.append(key)
    return pods


def _block(ip_block: models.IPBlock) -> PeerBlock:
    return PeerBlock(ip_block.network, ip_block.excepted)


def _peer_blocks(
    peers: Sequence[models.NetworkPolicyPeer] | None,
    policy: models.Policy,
    topology: models.Topology,
) -> tuple[PeerBlock, ...] | None:
    """``None`` (any peer) when there are no peers; otherwise the peers' blocks."""
    if not peers:
        return None
    blocks: dict[PeerBlock, None] = {}  # a dict: ordered, and O(1) to skip repeats
    for peer in peers:
        if peer.ip_block is not None:
            blocks[_block(peer.ip_block)] = None
        else:
            for key in _selected_pods(peer, policy, topology):
                blocks[host_block(topology.pods[key].ip)] = None
    return tuple(blocks)


def _destination_pods(
    peers: Sequence[models.NetworkPolicyPeer] | None,
    policy: models.Policy,
    topology: models.Topology,
) -> list[str]:
    """Every pod a ``to`` list reaches (all pods when it is missing or empty)."""
    if not peers:
        return list(topology.pods)
    chosen: set[str] = set()
    for peer in peers:
        if peer.ip_block is not None:
            chosen.update(
                key for key, pod in topology.pods.items() if peer.ip_block.contains(pod.ip)
            )
        else:
            chosen.update(_selected_pods(peer, policy, topology))
    return [key for key in topology.pods if key in chosen]


def _numeric_range(port: models.NetworkPolicyPort) -> PortRange:
    protocol: Protocol = port.protocol
    if port.port is None:
        return PortRange(protocol)
    assert isinstance(port.port, int)
    last = port.end_port if port.end_port is not None else port.port
    return PortRange(protocol, port.port, last)


def _ingress_rule(
    policy: models.Policy,
    index: int,
    rule: models.NetworkPolicyIngressRule,
    topology: models.Topology,
    pod: models.Pod,
) -> Rule:
    peers = _peer_blocks(rule.from_, policy, topology)
    if not rule.ports:
        return Rule(policy.key, index, peers, (ALL_TRAFFIC,))
    ranges: list[PortRange] = []
    for port in rule.ports:
        if isinstance(port.port, str):
            number = pod.named_port(port.port, port.protocol)
            if number is None:
                continue  # the endpoint has no such port: this entry allows nothing
            resolved = PortRange(port.protocol, number, number)
        else:
            resolved = _numeric_range(port)
        if resolved not in ranges:
            ranges.append(resolved)
    return Rule(policy.key, index, peers, tuple(ranges))


def _egress_rules(
    policy: models.Policy,
    index: int,
    rule: models.NetworkPolicyEgressRule,
    topology: models.Topology,
) -> list[Rule]:
    peers = _peer_blocks(rule.to, policy, topology)
    if not rule.ports:
        return [Rule(policy.key, index, peers, (ALL_TRAFFIC,))]
    numeric: list[PortRange] = []
    named: list[models.NetworkPolicyPort] = []
    for port in rule.ports:
        if isinstance(port.port, str):
            named.append(port)
        elif (resolved := _numeric_range(port)) not in numeric:
            numeric.append(resolved)
    compiled: list[Rule] = []
    if numeric:
        compiled.append(Rule(policy.key, index, peers, tuple(numeric)))
    by_port: dict[PortRange, list[PeerBlock]] = {}
    if named:
        for key in _destination_pods(rule.to, policy, topology):
            destination = topology.pods[key]
            for port in named:
                assert isinstance(port.port, str)
                number = destination.named_port(port.port, port.protocol)
                if number is None:
                    continue
                blocks = by_port.setdefault(PortRange(port.protocol, number, number), [])
                if host_block(destination.ip) not in blocks:
                    blocks.append(host_block(destination.ip))
    compiled.extend(
        Rule(policy.key, index, tuple(blocks), (port_range,))
        for port_range, blocks in sorted(by_port.items())
    )
    if not compiled:
        compiled.append(Rule(policy.key, index, peers, ()))  # named ports no pod has
    return compiled


def _direction(
    policies: Sequence[models.Policy],
    topology: models.Topology,
    key: str,
    direction: Direction,
    view: View,
) -> DirectionRules:
    wanted: models.PolicyType = "Ingress" if direction == "ingress" else "Egress"
    selecting = [
        policy
        for policy in policies
        if (view == "audit" or policy.mode == "enforce")
        and wanted in policy.spec.effective_policy_types()
        and models.selects(policy, topology, key)
    ]
    if not selecting:
        return DirectionRules()
    pod = topology.pods[key]
    rules: list[Rule] = []
    for policy in selecting:
        if direction == "ingress":
            for index, ingress in enumerate(policy.spec.ingress or ()):
                rules.append(_ingress_rule(policy, index, ingress, topology, pod))
        else:
            for index, egress in enumerate(policy.spec.egress or ()):
                rules.extend(_egress_rules(policy, index, egress, topology))
    return DirectionRules(isolated=True, rules=tuple(rules))


def compile_policies(
    policies: Iterable[models.Policy],
    topology: models.Topology,
    *,
    node_endpoints: set[str] | None = None,
) -> dict[str, EndpointRules]:
    """The rules of every endpoint (``"ns/pod"``), or only of ``node_endpoints``.

    Policies must be validated (``validating.validate``). Raises ``ValueError`` when
    ``node_endpoints`` names a pod the topology does not have.
    """
    items = list(policies)
    if node_endpoints is not None:
        unknown = sorted(node_endpoints - set(topology.pods))
        if unknown:
            raise ValueError(f"not pods of the topology: {', '.join(unknown)}")
    # Without audit-mode policies both views are one: compile it once, and hand the same
    # object to both (the datapath then skips comparing them rule by rule).
    audited = any(policy.mode == "audit" for policy in items)
    compiled: dict[str, EndpointRules] = {}
    for key in topology.pod_order():
        if node_endpoints is not None and key not in node_endpoints:
            continue
        ingress = _direction(items, topology, key, "ingress", "enforce")
        egress = _direction(items, topology, key, "egress", "enforce")
        compiled[key] = EndpointRules(
            endpoint=key,
            address=topology.pods[key].ip,
            ingress=ingress,
            egress=egress,
            audit_ingress=_direction(items, topology, key, "ingress", "audit")
            if audited
            else ingress,
            audit_egress=_direction(items, topology, key, "egress", "audit") if audited else egress,
        )
    return compiled


# --- evaluation, as the datapath does it --------------------------------------------------


def _peer_allows(peers: tuple[PeerBlock, ...] | None, address: Address) -> bool:
    if peers is None:
        return True
    return any(
        address in block.cidr and not any(address in item for item in block.excepts)
        for block in peers
    )


def _port_allows(ranges: tuple[PortRange, ...], protocol: Protocol, port: int) -> bool:
    return any(
        item.protocol is None or (item.protocol == protocol and item.first <= port <= item.last)
        for item in ranges
    )


def allows(rules: DirectionRules, peer: Address, protocol: Protocol, port: int) -> bool:
    """Whether one direction of one endpoint lets a flow with ``peer`` through."""
    if not rules.isolated:
        return True
    return any(
        _peer_allows(rule.peers, peer) and _port_allows(rule.ports, protocol, port)
        for rule in rules.rules
    )


def verdict(
    rules_by_endpoint: Mapping[str, EndpointRules],
    src_ip: Address | str,
    dst_ip: Address | str,
    protocol: Protocol,
    port: int,
    *,
    view: View = "enforce",
) -> bool:
    """Whether a connection from ``src_ip`` to ``dst_ip`` passes the compiled rules.

    The source endpoint's egress rules AND the destination endpoint's ingress rules must
    allow it; an address that is no endpoint is not policed; an endpoint's traffic to
    itself is never policed. ``view="audit"`` evaluates the audit rules instead.
    """
    source = ipaddress.ip_address(src_ip) if isinstance(src_ip, str) else src_ip
    destination = ipaddress.ip_address(dst_ip) if isinstance(dst_ip, str) else dst_ip
    if source == destination:
        return True
    by_address = {rules.address: rules for rules in rules_by_endpoint.values()}
    client = by_address.get(source)
    server = by_address.get(destination)
    if client is not None:
        egress = client.egress if view == "enforce" else client.audit_egress
        if not allows(egress, destination, protocol, port):
            return False
    if server is not None:
        ingress = server.ingress if view == "enforce" else server.audit_ingress
        if not allows(ingress, source, protocol, port):
            return False
    return True
