"""What a node must know of the fleet's topology to compile its policies: its own pods,
and the pods its policies' rules can reach. The rest of the fleet changes nothing it
enforces, so it need not hear of it, nor be told again when it changes.

A pod is *needed* by a policy when the compiler can resolve one of its rules to it
(``compiling`` is the reference):

- a peer's selectors select it (``podSelector`` within the policy's namespace, or
  ``namespaceSelector`` with or without ``podSelector``): its address becomes a block;
- it is the destination of an egress rule with named ports and has one of those ports
  (name and protocol): inside an ``ipBlock`` peer, or anywhere when the rule names no
  peers. (``ipBlock`` peers need nothing else: they are addresses already.)

Only the directions a policy isolates count (``policyTypes``). A selector evaluated
against the narrowed topology selects exactly what it selects against the whole one,
because every pod it selects is there with its namespace's labels: the compiled rules
are the same (``tests/core/netpol/test_narrowing.py`` checks it). Other nodes' pods are
told without their node: compiling needs only the node of the pods it enforces on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bpfleet_core.netpol import models
from bpfleet_core.netpol.models import Labels


def selects_peer(
    peer: models.NetworkPolicyPeer,
    policy_namespace: str,
    namespace: str,
    labels: Mapping[str, str],
    namespace_labels: Mapping[str, str],
) -> bool:
    """Whether a selector peer of a policy in ``policy_namespace`` selects a pod of
    ``namespace`` with these labels (an ``ipBlock`` peer selects no pod)."""
    if peer.ip_block is not None:
        return False
    if peer.namespace_selector is None:
        if namespace != policy_namespace:
            return False
    elif not peer.namespace_selector.matches(namespace_labels):
        return False
    return peer.pod_selector is None or peer.pod_selector.matches(labels)


def _named_ports(rule: models.Rule) -> set[tuple[str, models.Protocol]]:
    return {(port.port, port.protocol) for port in rule.ports or () if isinstance(port.port, str)}


def needs(
    policy: models.Policy, key: str, pod: models.Pod, namespace_labels: Mapping[str, str]
) -> bool:
    """Whether ``policy``'s rules can resolve to the pod ``key`` (see the module)."""
    namespace = key.partition("/")[0]
    types = policy.spec.effective_policy_types()
    for direction, kind in (("ingress", "Ingress"), ("egress", "Egress")):
        if kind not in types:
            continue
        for rule in policy.spec.rules(direction):  # type: ignore[arg-type]
            peers = rule.peers or ()
            if any(
                selects_peer(peer, policy.namespace, namespace, pod.labels, namespace_labels)
                for peer in peers
            ):
                return True
            if direction != "egress":
                continue
            named = _named_ports(rule)
            if not named or not any((p.name, p.protocol) in named for p in pod.ports):
                continue
            if not peers or any(
                peer.ip_block is not None and peer.ip_block.contains(pod.ip) for peer in peers
            ):
                return True
    return False


def needed_pods(policy: models.Policy, topology: models.Topology) -> set[str]:
    """Every pod of ``topology`` the policy's rules can resolve to."""
    return {
        key
        for key, pod in topology.pods.items()
        if needs(policy, key, pod, topology.namespace_labels(key))
    }


def narrowed(
    topology: models.Topology, policies: Iterable[models.Policy], node: str
) -> models.Topology:
    """What ``node`` needs of ``topology`` to compile ``policies`` (the policies that
    select its pods): its own pods, the pods the policies need, the namespaces of those
    pods (with their labels) and its own node labels; in the whole topology's order.
    Other nodes' pods come without their node: where they run is none of its business."""
    chosen = {key for key, pod in topology.pods.items() if pod.node == node}
    for policy in policies:
        chosen |= needed_pods(policy, topology)
    pods = {
        key: pod if pod.node == node else pod.model_copy(update={"node": None})
        for key, pod in topology.pods.items()
        if key in chosen
    }
    names = {key.partition("/")[0] for key in pods}
    nodes: dict[str, Labels] = {node: topology.nodes[node]} if node in topology.nodes else {}
    return models.Topology(
        namespaces={name: labels for name, labels in topology.namespaces.items() if name in names},
        pods=pods,
        nodes=nodes,
    )
