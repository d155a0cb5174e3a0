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

import functools
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
    Prefix,
    Protocol,
    Rule,
)

View = Literal["enforce", "audit"]
ALL_TRAFFIC = PortRange(None)


def host_block(address: Address) -> PeerBlock:
    return PeerBlock(Prefix.of(address))


_NEEDS_TOPOLOGY, _NEEDS_ENDPOINT = 1, 2


class _Compiled:
    """One policy's rules in one direction, and what they were compiled from: per rule,
    its model, its result, and whether that depends on the topology or the endpoint."""

    __slots__ = ("needs", "parts", "pod", "policy", "rules", "sources", "topology")

    def __init__(
        self,
        policy: models.Policy,
        topology: models.Topology,
        pod: models.Pod,
        *,
        sources: tuple[models.Rule, ...],
        parts: list[list[Rule]],
        needs: list[int],
    ) -> None:
        self.policy, self.topology, self.pod = policy, topology, pod
        self.sources, self.parts, self.needs = sources, parts, needs
        self.rules = [rule for part in parts for rule in part]

    def holds(self, policy: models.Policy, topology: models.Topology, pod: models.Pod) -> bool:
        """Whether this is what ``policy`` compiles to against ``topology`` for ``pod``."""
        if self.policy is not policy:
            return False
        needs = 0
        for need in self.needs:
            needs |= need
        return (not needs & _NEEDS_TOPOLOGY or self.topology is topology) and (
            not needs & _NEEDS_ENDPOINT or self.pod is pod
        )


class CompileCache:
    """What the last compile produced, kept by policy (name, direction, and endpoint when
    the rules depend on it), reused by the identity of its inputs: a policy that is the
    same object compiles to the same rules; in one that is not, each rule that is the
    same object at the same place does. Each compile keeps what it used (``sweep``);
    what it no longer needs is freed by ``release``, when it suits the caller."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, int], _Compiled] = {}
        self._next: dict[tuple[str, str, int], _Compiled] = {}
        self._blocks: dict[int, tuple[models.IPBlock, PeerBlock]] = {}
        self._next_blocks: dict[int, tuple[models.IPBlock, PeerBlock]] = {}
        self.selected: dict[tuple[int, str], tuple[object, object, list[str]]] = {}
        self._retired: list[object] = []

    def block(self, ip_block: models.IPBlock) -> PeerBlock:
        # Objects sit at multiples of 16: the low bits of an id would only collide.
        number = id(ip_block) >> 4
        found = self._next_blocks.get(number) or self._blocks.get(number)
        if found is None or found[0] is not ip_block:
            found = (ip_block, _block(ip_block))
        self._next_blocks[number] = found
        return found[1]

    def find(self, name: str, direction: str, pod: models.Pod) -> _Compiled | None:
        """The last entry of this policy and direction that may serve ``pod``."""
        for key in ((name, direction, 0), (name, direction, id(pod))):
            found = self._next.get(key) or self._entries.get(key)
            if found is None:
                continue
            per_endpoint = any(need & _NEEDS_ENDPOINT for need in found.needs)
            if key[2] == 0 and not per_endpoint:
                return found
            if key[2] != 0 and found.pod is pod:
                return found
        return None

    def keep(self, name: str, direction: str, pod: models.Pod, compiled: _Compiled) -> None:
        per_endpoint = any(need & _NEEDS_ENDPOINT for need in compiled.needs)
        self._next[(name, direction, id(pod) if per_endpoint else 0)] = compiled

    def sweep(self) -> None:
        """End of a compile: what it did not use is retired."""
        self._retired = [self._entries, self._blocks]
        self._entries, self._next = self._next, {}
        self._blocks, self._next_blocks = self._next_blocks, {}
        self.selected.clear()

    def release(self) -> None:
        """Free what the last compile retired (as many objects as it compiled: the
        caller may want the new rules in force first)."""
        self._retired = []


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
    if len(peers) == 1 and (ip_block := peers[0].ip_block) is not None:
        # The most common rule of a long allow-list, taken without the dict.
        return (cache.block(ip_block) if cache is not None else _block(ip_block),)
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
    return _port_range(protocol, port.port, last)


# The same few ranges come up in thousands of rules: one object each.
_port_range = functools.lru_cache(maxsize=4096)(PortRange)


def _dependencies(rule: models.Rule) -> tuple[bool, bool]:
    """(has named ports, has selector peers): what besides the rule a result needs."""
    named = selects = False
    for port in rule.ports or ():
        if isinstance(port.port, str):
            named = True
            break
    for peer in rule.peers or ():
        if peer.ip_block is None:
            selects = True
            break
    return named, selects


def _ingress_rule(
    policy: models.Policy,
    index: int,
    rule: models.NetworkPolicyIngressRule,
    topology: models.Topology,
    pod: models.Pod,
    *,
    cache: CompileCache | None,
) -> Rule:
    peers = _peer_blocks(rule.from_, policy, topology, cache)
    if not rule.ports:
        return Rule(policy.key, index, peers, (ALL_TRAFFIC,))
    if len(rule.ports) == 1 and not isinstance(rule.ports[0].port, str):
        return Rule(policy.key, index, peers, (_numeric_range(rule.ports[0]),))
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
    index: int,
    rule: models.Rule,
    topology: models.Topology,
    pod: models.Pod,
    *,
    cache: CompileCache | None,
) -> tuple[list[Rule], int]:
    """One policy rule compiled (an egress rule with named ports may give several), and
    what the result depends on besides the rule (``_NEEDS_*``)."""
    named, selects = _dependencies(rule)
    if isinstance(rule, models.NetworkPolicyIngressRule):
        # An ingress rule's named ports resolve against the endpoint itself.
        needs = (_NEEDS_ENDPOINT if named else 0) | (_NEEDS_TOPOLOGY if selects else 0)
        return [_ingress_rule(policy, index, rule, topology, pod, cache=cache)], needs
    needs = _NEEDS_TOPOLOGY if selects or named else 0
    return _egress_rules(policy, index, rule, topology, cache), needs


def _policy_rules(
    policy: models.Policy,
    direction: Direction,
    topology: models.Topology,
    pod: models.Pod,
    cache: CompileCache | None,
) -> list[Rule]:
    """One policy's rules in one direction, for the endpoint ``pod``."""
    sources = policy.spec.rules(direction)
    if cache is None:
        return [
            compiled
            for index, rule in enumerate(sources)
            for compiled in _compiled_rules(policy, index, rule, topology, pod, cache=None)[0]
        ]
    found = cache.find(policy.key, direction, pod)
    if found is not None and found.holds(policy, topology, pod):
        cache.keep(policy.key, direction, pod, found)
        return found.rules
    parts: list[list[Rule]] = []
    needs: list[int] = []
    old_sources = found.sources if found is not None else ()
    for index, rule in enumerate(sources):
        if index < len(old_sources) and old_sources[index] is rule:
            assert found is not None
            need = found.needs[index]
            if (not need & _NEEDS_TOPOLOGY or found.topology is topology) and (
                not need & _NEEDS_ENDPOINT or found.pod is pod
            ):
                parts.append(found.parts[index])
                needs.append(need)
                continue
        compiled, need = _compiled_rules(policy, index, rule, topology, pod, cache=cache)
        parts.append(compiled)
        needs.append(need)
    entry = _Compiled(policy, topology, pod, sources=sources, parts=parts, needs=needs)
    cache.keep(policy.key, direction, pod, entry)
    return entry.rules


def _direction(
    policies: Sequence[models.Policy],
    topology: models.Topology,
    key: str,
    direction: Direction,
    view: View,
    *,
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
        rules.extend(_policy_rules(policy, direction, topology, pod, cache))
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
        ingress = _direction(items, topology, key, "ingress", "enforce", cache=cache)
        egress = _direction(items, topology, key, "egress", "enforce", cache=cache)
        compiled[key] = EndpointRules(
            endpoint=key,
            address=topology.pods[key].ip,
            ingress=ingress,
            egress=egress,
            audit_ingress=_direction(items, topology, key, "ingress", "audit", cache=cache)
            if audited
            else ingress,
            audit_egress=_direction(items, topology, key, "egress", "audit", cache=cache)
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
