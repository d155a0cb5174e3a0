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

A node compiles again whenever its policy part changes, mostly in small ways. Given a
``CompileCache``, rules whose inputs are the very objects of the last compile (the
agent reuses parsed rules and peers that did not change) come back as the very same
``Rule`` objects, so the datapath can tell what changed by identity alone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from bpfleet_core.netpol import models
from bpfleet_core.netpol.models import Address, Direction
from bpfleet_core.netpol.rules import (
    DirectionRules,
    EndpointRules,
    PeerBlock,
    PortRange,
    Prefix,
    Protocol,
    Rule,
)

View = Literal["enforce", "audit"]
ALL_TRAFFIC = PortRange(None)


def host_block(address: Address) -> PeerBlock:
    return PeerBlock(Prefix.of(address))


class CompileCache:
    """What earlier compiles produced, by the identity of their inputs.

    Entries hold their inputs, so an ``id`` is never mistaken for a later object's;
    ``sweep`` drops what the last compile did not use."""

    def __init__(self) -> None:
        self.rules: dict[tuple[Any, ...], tuple[tuple[object, ...], list[Rule]]] = {}
        self.blocks: dict[int, tuple[models.IPBlock, PeerBlock]] = {}
        self.selected: dict[tuple[int, str], tuple[object, object, list[str]]] = {}
        self._used_rules: set[tuple[Any, ...]] = set()
        self._used_blocks: set[int] = set()

    def block(self, ip_block: models.IPBlock) -> PeerBlock:
        self._used_blocks.add(id(ip_block))
        found = self.blocks.get(id(ip_block))
        if found is not None and found[0] is ip_block:
            return found[1]
        block = _block(ip_block)
        self.blocks[id(ip_block)] = (ip_block, block)
        return block

    def rule(
        self, key: tuple[Any, ...], inputs: tuple[object, ...], compile_rule: Any
    ) -> list[Rule]:
        self._used_rules.add(key)
        found = self.rules.get(key)
        if found is not None and len(found[0]) == len(inputs):
            if all(a is b for a, b in zip(found[0], inputs, strict=True)):
                return found[1]
        compiled: list[Rule] = compile_rule()
        self.rules[key] = (inputs, compiled)
        return compiled

    def sweep(self) -> None:
        for key in self.rules.keys() - self._used_rules:
            del self.rules[key]
        for number in self.blocks.keys() - self._used_blocks:
            del self.blocks[number]
        self.selected.clear()
        self._used_rules, self._used_blocks = set(), set()


def _selected_pods(
    peer: models.NetworkPolicyPeer,
    policy: models.Policy,
    topology: models.Topology,
    cache: CompileCache | None = None,
) -> list[str]:
    """The pods a selector peer selects (``podSelector`` and/or ``namespaceSelector``)."""
    if cache is not None:
        found = cache.selected.get((id(peer), policy.namespace))
        if found is not None and found[0] is peer and found[1] is topology:
            return found[2]
    pods = []
    for key, pod in topology.pods.items():
        namespace = topology.namespace_of(key)
        if peer.namespace_selector is None:
            in_namespace = namespace == policy.namespace
        else:
            in_namespace = peer.namespace_selector.matches(topology.namespaces[namespace])
        if in_namespace and (peer.pod_selector is None or peer.pod_selector.matches(pod.labels)):
            pods.append(key)
    if cache is not None:
        cache.selected[(id(peer), policy.namespace)] = (peer, topology, pods)
    return pods


def _block(ip_block: models.IPBlock) -> PeerBlock:
    excepts = tuple(Prefix.parse(text) for text in ip_block.except_ or ())
    return PeerBlock(Prefix.parse(ip_block.cidr), excepts)


def _peer_blocks(
    peers: Sequence[models.NetworkPolicyPeer] | None,
    policy: models.Policy,
    topology: models.Topology,
    cache: CompileCache | None = None,
) -> tuple[PeerBlock, ...] | None:
    """``None`` (any peer) when there are no peers; otherwise the peers' blocks."""
    if not peers:
        return None
    blocks: dict[PeerBlock, None] = {}  # a dict: ordered, and O(1) to skip repeats
    for peer in peers:
        if peer.ip_block is not None:
            block = cache.block(peer.ip_block) if cache is not None else _block(peer.ip_block)
            blocks[block] = None
        else:
            for key in _selected_pods(peer, policy, topology, cache):
                blocks[host_block(topology.pods[key].ip)] = None
    return tuple(blocks)


def _destination_pods(
    peers: Sequence[models.NetworkPolicyPeer] | None,
    policy: models.Policy,
    topology: models.Topology,
    cache: CompileCache | None,
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
            chosen.update(_selected_pods(peer, policy, topology, cache))
    return [key for key in topology.pods if key in chosen]


def _numeric_range(port: models.NetworkPolicyPort) -> PortRange:
    protocol: Protocol = port.protocol
    if port.port is None:
        return PortRange(protocol)
    assert isinstance(port.port, int)
    last = port.end_port if port.end_port is not None else port.port
    return PortRange(protocol, port.port, last)


def _named(rule: models.Rule) -> bool:
    return any(isinstance(port.port, str) for port in rule.ports or ())


def _selects_pods(rule: models.Rule) -> bool:
    return any(peer.ip_block is None for peer in rule.peers or ())


def _ingress_rule(
    policy: models.Policy,
    index: int,
    rule: models.NetworkPolicyIngressRule,
    topology: models.Topology,
    pod: models.Pod,
    cache: CompileCache | None,
) -> Rule:
    peers = _peer_blocks(rule.from_, policy, topology, cache)
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
    cache: CompileCache | None,
) -> list[Rule]:
    peers = _peer_blocks(rule.to, policy, topology, cache)
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
        for key in _destination_pods(rule.to, policy, topology, cache):
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


def _compiled_rules(
    policy: models.Policy,
    direction: Direction,
    index: int,
    rule: models.Rule,
    topology: models.Topology,
    pod: models.Pod,
    cache: CompileCache | None,
) -> list[Rule]:
    """One policy rule compiled (an egress rule with named ports may give several)."""
    if isinstance(rule, models.NetworkPolicyIngressRule):

        def compile_rule() -> list[Rule]:
            return [_ingress_rule(policy, index, rule, topology, pod, cache)]

        per_endpoint = _named(rule)  # named ports resolve against the endpoint itself
        needs_topology = _selects_pods(rule)
    else:

        def compile_rule() -> list[Rule]:
            return _egress_rules(policy, index, rule, topology, cache)

        per_endpoint = False
        needs_topology = _selects_pods(rule) or _named(rule)
    if cache is None:
        return compile_rule()
    # What the result depends on: the rule, and the topology or the endpoint if it must.
    inputs = (rule, topology if needs_topology else None, pod if per_endpoint else None)
    key = (policy.key, direction, index, id(pod) if per_endpoint else None)
    return cache.rule(key, inputs, compile_rule)


def _direction(
    policies: Sequence[models.Policy],
    topology: models.Topology,
    key: str,
    direction: Direction,
    view: View,
    cache: CompileCache | None,
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
        for index, rule in enumerate(policy.spec.rules(direction)):
            rules.extend(_compiled_rules(policy, direction, index, rule, topology, pod, cache))
    return DirectionRules(
        isolated=True,
        rules=tuple(rules),
        policies=tuple(dict.fromkeys(policy.key for policy in selecting)),
    )


def compile_policies(
    policies: Iterable[models.Policy],
    topology: models.Topology,
    *,
    node_endpoints: set[str] | None = None,
    cache: CompileCache | None = None,
) -> dict[str, EndpointRules]:
    """The rules of every endpoint (``"ns/pod"``), or only of ``node_endpoints``.

    Policies must be validated (``validating.validate``). Raises ``ValueError`` when
    ``node_endpoints`` names a pod the topology does not have. With ``cache``, what
    did not change since the last compile with it is reused (see the module's
    docstring); the result is the same either way.
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
    keys = topology.pod_order() if node_endpoints is None else sorted(node_endpoints)
    for key in keys:
        ingress = _direction(items, topology, key, "ingress", "enforce", cache)
        egress = _direction(items, topology, key, "egress", "enforce", cache)
        compiled[key] = EndpointRules(
            endpoint=key,
            address=topology.pods[key].ip,
            ingress=ingress,
            egress=egress,
            audit_ingress=_direction(items, topology, key, "ingress", "audit", cache)
            if audited
            else ingress,
            audit_egress=_direction(items, topology, key, "egress", "audit", cache)
            if audited
            else egress,
        )
    if cache is not None:
        cache.sweep()
    return compiled


# --- evaluation, as the datapath does it --------------------------------------------------


def _peer_allows(peers: tuple[PeerBlock, ...] | None, address: Address) -> bool:
    if peers is None:
        return True
    return any(block.contains(address) for block in peers)


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
