"""Narrowing: a node compiles its policies against the pods they can reach, and gets
exactly the rules it would get from the whole topology (differential, random)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfleet_core.netpol import compiling, models, narrowing, validating
from tests.core.netpol import test_differential as differential

NODES = ("n1", "n2", "n3")
NODE_LABELS = {"zone": ("a", "b")}


@st.composite
def fleets(draw: st.DrawFn) -> tuple[models.Topology, list[models.Policy]]:
    """A random topology with its pods on nodes, and random policies over it (some of
    them with a node selector)."""
    world = draw(differential.topologies())
    placed = world.model_copy(
        update={
            "pods": {
                key: pod.model_copy(update={"node": draw(st.sampled_from(NODES))})
                for key, pod in world.pods.items()
            },
            "nodes": {node: draw(differential.labels(NODE_LABELS)) for node in NODES},
        }
    )
    documents: list[dict[str, Any]] = []
    for index in range(draw(st.integers(1, 4))):
        document = draw(differential.policy_documents(f"p{index}", placed))
        if document["apiVersion"].startswith("bpfleet") and draw(st.booleans()):
            document["spec"]["nodeSelector"] = draw(differential.selectors(NODE_LABELS))
        documents.append(document)
    return placed, [validating.validate(document).policy for document in documents]


def assigned(policies: list[models.Policy], topology: models.Topology, node: str) -> list[Any]:
    """The policies a node is given: those selecting one of its pods (as the API does)."""
    mine = [key for key, pod in topology.pods.items() if pod.node == node]
    return [p for p in policies if any(models.selects(p, topology, key) for key in mine)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_a_narrowed_topology_compiles_to_the_same_rules(
    fleet: tuple[models.Topology, list[models.Policy]],
) -> None:
    topology, policies = fleet
    for node in NODES:
        mine = {key for key, pod in topology.pods.items() if pod.node == node}
        given_policies = assigned(policies, topology, node)
        small = narrowing.narrowed(topology, given_policies, node)
        assert compiling.compile_policies(given_policies, small, node_endpoints=mine) == (
            compiling.compile_policies(policies, topology, node_endpoints=mine)
        ), node
        needed = set().union(*(narrowing.needed_pods(p, topology) for p in given_policies))
        assert set(small.pods) == mine | needed, "nothing else travels"
        assert set(small.nodes) <= {node}
        assert all(pod.node in (node, None) for pod in small.pods.values())


def test_ip_blocks_need_only_what_named_ports_resolve() -> None:
    topology = models.Topology.model_validate(
        {
            "namespaces": {"x": {}},
            "pods": {
                "x/a": {"ip": "10.0.0.1", "node": "n1"},
                "x/web": {
                    "ip": "10.0.1.1",
                    "node": "n2",
                    "ports": [{"name": "http", "port": 8080}],
                },
                "x/other": {"ip": "10.0.1.2", "node": "n2"},
                "x/far": {"ip": "192.0.2.1", "node": "n3", "ports": [{"name": "http", "port": 80}]},
            },
        }
    )
    base = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy"}
    by_block = validating.validate(
        {
            **base,
            "metadata": {"namespace": "x", "name": "out"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "10.0.1.0/24"}}], "ports": [{"port": "http"}]},
                    {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 53}]},
                ],
            },
        }
    ).policy
    # Inside the block with the named port: web; other lacks the port, far is outside.
    assert narrowing.needed_pods(by_block, topology) == {"x/web"}
    anywhere = by_block.model_copy(
        update={
            "spec": by_block.spec.model_copy(
                update={
                    "egress": (models.NetworkPolicyEgressRule(ports=by_block.spec.egress[0].ports),)
                }  # type: ignore[index]
            )
        }
    )
    assert narrowing.needed_pods(anywhere, topology) == {"x/web", "x/far"}
    # Ingress only isolates: its egress rules are not the compiler's, nor needed.
    ingress_only = by_block.model_copy(
        update={"spec": by_block.spec.model_copy(update={"policy_types": ("Ingress",)})}
    )
    assert narrowing.needed_pods(ingress_only, topology) == set()
