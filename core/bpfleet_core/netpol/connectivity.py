"""Every pod pair of a topology at once, for one protocol and port: sets of pods as bits.

``simulating.explain`` judges one flow and says why; a matrix, a semantic diff or a
rating needs every pair of a 1,000-endpoint topology, several times per keystroke in
the editor. Here pod ``i`` (in the topology's order) is bit ``i`` of a Python ``int``,
and everything a policy needs from the topology is computed once per ``Index``:

- pods grouped by identical labels, so a selector is matched once per distinct label
  set, not once per pod; namespaces and nodes as sets of pods;
- pod addresses sorted per IP version with running unions, so an ``ipBlock`` is two
  binary searches and an XOR;
- named container ports as ``(name, protocol) -> port -> pods``.

A pass (``judge``) then gives, per isolated server, the clients its ingress admits and,
per isolated client, the servers its egress reaches; a matrix row is an AND of the two.
The semantics are the simulator's (see its module docstring), and the tests hold both
to the same answers on random policies and topologies.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from bpfleet_core.netpol import models
from bpfleet_core.netpol.models import Protocol

View = Literal["enforce", "audit"]
SelectorKey = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str, tuple[str, ...]], ...]]


def members(bits: int) -> Iterator[int]:
    """The positions of the set bits, lowest first."""
    while bits:
        lowest = bits & -bits
        yield lowest.bit_length() - 1
        bits ^= lowest


def selector_key(selector: models.LabelSelector) -> SelectorKey:
    """A hashable form with the selector's meaning (models are frozen but hold dicts)."""
    return (
        tuple(sorted((selector.match_labels or {}).items())),
        tuple(
            (req.key, req.operator, tuple(req.values or ()))
            for req in selector.match_expressions or ()
        ),
    )


@dataclass
class _Addresses:
    """Pod addresses of one IP version, sorted, with the union of the first ``j`` pods'
    bits at ``unions[j]``: the pods inside ``[low, high]`` are ``unions[b] ^ unions[a]``."""

    values: list[int] = field(default_factory=list)
    unions: list[int] = field(default_factory=lambda: [0])

    def between(self, low: int, high: int) -> int:
        start = bisect.bisect_left(self.values, low)
        end = bisect.bisect_right(self.values, high)
        return self.unions[end] ^ self.unions[start]


class Index:
    """A topology as sets of pods; pod ``i`` of ``names`` is bit ``i``.

    Selections are remembered (per selector, per block, per policy), so one index
    serves every pass over the same topology: before and after a change, every port.
    """

    def __init__(self, topology: models.Topology) -> None:
        self.topology = topology
        self.names: tuple[str, ...] = topology.pod_order()
        self.position = {name: index for index, name in enumerate(self.names)}
        self.everyone = (1 << len(self.names)) - 1
        self._namespaces: dict[str, int] = {}
        self._label_groups: dict[tuple[tuple[str, str], ...], int] = {}
        self._nodes: dict[str | None, int] = {}
        self._named: dict[tuple[str, Protocol], dict[int, int]] = {}
        self._served: dict[tuple[Protocol, int], int] = {}
        located: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for index, name in enumerate(self.names):
            pod, bit = topology.pods[name], 1 << index
            namespace = topology.namespace_of(name)
            self._namespaces[namespace] = self._namespaces.get(namespace, 0) | bit
            labels = tuple(sorted(pod.labels.items()))
            self._label_groups[labels] = self._label_groups.get(labels, 0) | bit
            node = pod.node if pod.node in topology.nodes else None
            self._nodes[node] = self._nodes.get(node, 0) | bit
            for port in pod.ports:
                served = (port.protocol, port.port)
                self._served[served] = self._served.get(served, 0) | bit
                if port.name is not None:
                    numbers = self._named.setdefault((port.name, port.protocol), {})
                    numbers[port.port] = numbers.get(port.port, 0) | bit
            located[pod.ip.version].append((int(pod.ip), bit))
        self._addresses = {version: _Addresses() for version in located}
        for version, pairs in located.items():
            addresses = self._addresses[version]
            for value, bit in sorted(pairs):
                addresses.values.append(value)
                addresses.unions.append(addresses.unions[-1] | bit)
        self._pod_selections: dict[SelectorKey, int] = {}
        self._namespace_selections: dict[SelectorKey, int] = {}
        self._node_selections: dict[SelectorKey, int] = {}
        self._blocks: dict[tuple[str, tuple[str, ...]], int] = {}
        # id(policy) -> (policy, selected pods, per direction per rule: peer pods); the
        # policy is kept so its id is never reused while remembered.
        self._policies: dict[int, tuple[models.Policy, int, dict[str, list[int]]]] = {}

    # --- what the topology holds

    def bit(self, name: str) -> int:
        return 1 << self.position[name]

    def pods(self, bits: int) -> list[str]:
        return [self.names[index] for index in members(bits)]

    def namespace(self, name: str) -> int:
        return self._namespaces.get(name, 0)

    def serving(self, protocol: Protocol, port: int) -> int:
        """Pods declaring a container port ``port``/``protocol``."""
        return self._served.get((protocol, port), 0)

    def served(self) -> list[tuple[Protocol, int]]:
        """Every (protocol, port) some pod declares, sorted."""
        return sorted(self._served)

    # --- selections

    def pods_matching(self, selector: models.LabelSelector) -> int:
        """Pods (of any namespace) whose labels ``selector`` matches."""
        key = selector_key(selector)
        found = self._pod_selections.get(key)
        if found is None:
            found = 0
            for labels, bits in self._label_groups.items():
                if selector.matches(dict(labels)):
                    found |= bits
            self._pod_selections[key] = found
        return found

    def in_namespaces_matching(self, selector: models.LabelSelector) -> int:
        """Pods in the namespaces whose labels ``selector`` matches."""
        key = selector_key(selector)
        found = self._namespace_selections.get(key)
        if found is None:
            found = 0
            for name, bits in self._namespaces.items():
                if selector.matches(self.topology.namespaces[name]):
                    found |= bits
            self._namespace_selections[key] = found
        return found

    def on_nodes_matching(self, selector: models.LabelSelector) -> int:
        """Pods on nodes whose labels ``selector`` matches (an unknown node has none)."""
        key = selector_key(selector)
        found = self._node_selections.get(key)
        if found is None:
            found = 0
            for node, bits in self._nodes.items():
                labels = self.topology.nodes.get(node, {}) if node is not None else {}
                if selector.matches(labels):
                    found |= bits
            self._node_selections[key] = found
        return found

    def in_block(self, block: models.IPBlock) -> int:
        """Pods whose address is in ``cidr`` and in no ``except``."""
        key = (block.cidr, tuple(block.except_ or ()))
        found = self._blocks.get(key)
        if found is None:
            found = self._range(block.network)
            for excepted in block.excepted:
                found &= ~self._range(excepted)
            self._blocks[key] = found
        return found

    def _range(self, network: models.Network) -> int:
        first = int(network.network_address)
        return self._addresses[network.version].between(first, first + network.num_addresses - 1)

    def peer(self, peer: models.NetworkPolicyPeer, namespace: str) -> int:
        """The pods one peer matches, for a policy of ``namespace``."""
        if peer.ip_block is not None:
            return self.in_block(peer.ip_block)
        if peer.namespace_selector is None:
            pods = self.namespace(namespace)
        else:
            pods = self.in_namespaces_matching(peer.namespace_selector)
        if peer.pod_selector is not None:
            pods &= self.pods_matching(peer.pod_selector)
        return pods

    def peers(self, peers: Sequence[models.NetworkPolicyPeer] | None, namespace: str) -> int:
        """The pods a ``from``/``to`` list matches; missing or empty matches everyone."""
        if not peers:
            return self.everyone
        found = 0
        for peer in peers:
            found |= self.peer(peer, namespace)
        return found

    def selecting(self, policy: models.Policy) -> int:
        """The pods ``policy`` applies to: its namespace, pod selector and node selector."""
        return self._compiled(policy)[1]

    def rule_peers(self, policy: models.Policy, direction: models.Direction) -> list[int]:
        """Per rule of ``direction``, the pods its peers match."""
        return self._compiled(policy)[2][direction]

    def _compiled(self, policy: models.Policy) -> tuple[models.Policy, int, dict[str, list[int]]]:
        found = self._policies.get(id(policy))
        if found is None or found[0] is not policy:
            selected = self.namespace(policy.namespace) & self.pods_matching(
                policy.spec.pod_selector
            )
            if selected and policy.node_selector is not None:
                selected &= self.on_nodes_matching(policy.node_selector)
            peers = {
                direction: [
                    self.peers(rule.peers, policy.namespace)
                    for rule in policy.spec.rules(direction)
                ]
                for direction in ("ingress", "egress")
            }
            found = (policy, selected, peers)
            self._policies[id(policy)] = found
        return found

    def servers_for(self, rule: models.Rule, protocol: Protocol, port: int) -> int:
        """The servers on which ``rule``'s ports match ``protocol``/``port``: every pod
        for a rule without ports; a named port matches where the server names it."""
        if not rule.ports:
            return self.everyone
        found = 0
        for item in rule.ports:
            if item.protocol != protocol:
                continue
            if item.port is None:
                return self.everyone
            if isinstance(item.port, str):
                found |= self._named.get((item.port, protocol), {}).get(port, 0)
                continue
            last = item.end_port if item.end_port is not None else item.port
            if item.port <= port <= last:
                return self.everyone
        return found


# --- a pass over the policies ----------------------------------------------------------


def in_view(policy: models.Policy, view: View) -> bool:
    return view == "audit" or policy.mode == "enforce"


@dataclass
class Connectivity:
    """One protocol and port over a topology: who each isolated pod admits or reaches.

    Pods outside ``ingress_isolated`` admit every client; pods outside
    ``egress_isolated`` reach every server. A pod always reaches itself.
    """

    index: Index
    protocol: Protocol
    port: int
    ingress_isolated: int = 0
    egress_isolated: int = 0
    admitted: dict[int, int] = field(default_factory=dict)  # server -> clients
    reached: dict[int, int] = field(default_factory=dict)  # client -> servers

    def add(self, policies: Iterable[models.Policy], view: View = "enforce") -> None:
        """Fold ``policies`` in (the union of what they allow, as in Kubernetes)."""
        index, protocol, port = self.index, self.protocol, self.port
        for policy in policies:
            if not in_view(policy, view):
                continue
            selected = index.selecting(policy)
            if not selected:
                continue
            types = policy.spec.effective_policy_types()
            if "Ingress" in types:
                self.ingress_isolated |= selected
                peers = index.rule_peers(policy, "ingress")
                for ingress, clients in zip(policy.spec.ingress or (), peers, strict=True):
                    servers = (
                        selected & index.servers_for(ingress, protocol, port) if clients else 0
                    )
                    for server in members(servers):
                        self.admitted[server] = self.admitted.get(server, 0) | clients
            if "Egress" in types:
                self.egress_isolated |= selected
                reach = 0
                peers = index.rule_peers(policy, "egress")
                for egress, servers in zip(policy.spec.egress or (), peers, strict=True):
                    if servers:
                        reach |= servers & index.servers_for(egress, protocol, port)
                if reach:
                    for client in members(selected):
                        self.reached[client] = self.reached.get(client, 0) | reach

    def copy(self) -> Connectivity:
        return Connectivity(
            self.index,
            self.protocol,
            self.port,
            self.ingress_isolated,
            self.egress_isolated,
            dict(self.admitted),
            dict(self.reached),
        )

    def clients_of(self, server: int) -> int:
        """The clients ``server``'s ingress admits (by position)."""
        if not self.ingress_isolated >> server & 1:
            return self.index.everyone
        return self.admitted.get(server, 0)

    def servers_of(self, client: int) -> int:
        """The servers ``client``'s egress reaches (by position)."""
        if not self.egress_isolated >> client & 1:
            return self.index.everyone
        return self.reached.get(client, 0)

    def allowed(self, client: int, server: int) -> bool:
        if client == server:
            return True
        return bool(self.servers_of(client) >> server & 1 and self.clients_of(server) >> client & 1)

    def rows(self, clients: int | None = None) -> dict[int, int]:
        """Per client (all, or those in ``clients``), the servers it may connect to."""
        index = self.index
        wanted = index.everyone if clients is None else clients
        # Turn "server -> clients admitted" around: servers sharing one set of admitted
        # clients are handled together, and open servers are open to every client.
        open_servers = index.everyone & ~self.ingress_isolated
        by_admitted: dict[int, int] = {}
        for server in members(self.ingress_isolated):
            admitted = self.admitted.get(server, 0) & wanted
            if admitted:
                by_admitted[admitted] = by_admitted.get(admitted, 0) | 1 << server
        admitting = dict.fromkeys(members(wanted), open_servers)
        for admitted, servers in by_admitted.items():
            for client in members(admitted):
                admitting[client] |= servers
        return {
            client: (self.servers_of(client) & servers) | 1 << client
            for client, servers in admitting.items()
        }


def judge(
    index: Index,
    policies: Iterable[models.Policy],
    protocol: Protocol,
    port: int,
    *,
    view: View = "enforce",
) -> Connectivity:
    """One pass: what ``policies`` allow between the pods of ``index`` on one port."""
    result = Connectivity(index, protocol, port)
    result.add(policies, view)
    return result
