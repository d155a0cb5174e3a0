"""Narrowed policy parts from the API's index, differential against the whole topology.

Random fleets (nodes, endpoints, namespace labels, policies) go through the API's own
functions on a real SQLite database; then random changes, one after another. After each
step, every node's part must be exactly ``narrowing.narrowed`` of the whole topology
(which compiles to the rules the whole topology gives: ``tests/core/netpol``), and
every node whose part changed must have been bumped: narrowing never drops a peer a
policy can select, nor does the index miss a node a change concerns.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from bpfleet_api import db, policies
from bpfleet_api.models import Node, Policy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from sqlalchemy import Engine
from sqlmodel import Session, select

from bpfleet_core.netpol import compiling, models, narrowing
from bpfleet_core.protocol import EndpointSet
from tests.core.netpol import test_differential as differential

_POLICY = TypeAdapter[models.Policy](models.AnyPolicy)
NODES = ("n1", "n2", "n3")
ADDRESSES = [f"10.0.{node}.{host}" for node in range(1, 4) for host in range(1, 6)]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    made = db.make_engine(f"sqlite:///{tmp_path_factory.mktemp('narrowing')}/fleet.db")
    db.migrate(made)
    yield made
    made.dispose()


@st.composite
def fleets(draw: st.DrawFn) -> dict[str, Any]:
    world = draw(differential.topologies())
    endpoints: dict[str, list[dict[str, Any]]] = {node: [] for node in NODES}
    for index, (key, pod) in enumerate(world.pods.items()):
        node = NODES[draw(st.integers(0, len(NODES) - 1))]
        namespace, _, name = key.partition("/")
        endpoints[node].append(
            {
                "namespace": namespace,
                "name": name,
                "labels": pod.labels,
                "ip": f"10.0.{NODES.index(node) + 1}.{index + 1}",
                "interface": f"v{index}",
                "ports": [port.model_dump(by_alias=True) for port in pod.ports],
            }
        )
    documents = [
        draw(differential.policy_documents(f"p{index}", world))
        for index in range(draw(st.integers(1, 4)))
    ]
    labels = {
        name: draw(differential.labels(differential.NAMESPACE_LABELS)) for name in world.namespaces
    }
    return {"endpoints": endpoints, "policies": documents, "namespaces": labels, "world": world}


def _parts(session: Session) -> dict[str, Any]:
    return {
        node: part.model_dump(mode="json", by_alias=True, exclude={"revision"})
        if (part := policies.part_of(session, node)) is not None
        else None
        for node in NODES
    }


def _check(session: Session) -> None:
    whole = policies.fleet_topology(session)
    stored = [_POLICY.validate_python(row.document) for row in session.exec(select(Policy)).all()]
    for node in NODES:
        part = policies.part_of(session, node)
        mine = {key for key, pod in whole.pods.items() if pod.node == node}
        chosen = [p for p in stored if any(models.selects(p, whole, key) for key in mine)]
        if part is None:
            assert not chosen, node
            continue
        assert sorted(p.document.key for p in part.policies) == sorted(p.key for p in chosen)
        expected = narrowing.narrowed(whole, chosen, node)
        got = part.topology
        assert list(got.pods) == list(expected.pods), node
        assert {k: p.model_dump() for k, p in got.pods.items()} == {
            k: p.model_dump() for k, p in expected.pods.items()
        }, node
        assert got.namespaces == expected.namespaces, node
        assert got.nodes == expected.nodes, node
        # ... and compiles to what the whole topology gives.
        assert compiling.compile_policies(chosen, got, node_endpoints=mine) == (
            compiling.compile_policies(stored, whole, node_endpoints=mine)
        ), node


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(fleets(), st.randoms(use_true_random=False))
def test_parts_are_the_narrowed_topology_and_changes_bump_whom_they_concern(
    engine: Engine, fleet: dict[str, Any], chance: random.Random
) -> None:
    with Session(engine) as session:
        _wipe(session)
        for node in NODES:
            session.add(
                Node(
                    name=node,
                    labels={"zone": node},
                    pod_cidrs=[f"10.0.{NODES.index(node) + 1}.0/24"],
                )
            )
        session.commit()
        for name, labels in fleet["namespaces"].items():
            policies.put_namespace(session, name, labels)
        for node, endpoints in fleet["endpoints"].items():
            policies.put_endpoints(
                session, node, EndpointSet.model_validate({"endpoints": endpoints}), 100
            )
        for document in fleet["policies"]:
            metadata = document["metadata"]
            policies.put_policy(session, metadata["namespace"], metadata["name"], document)
        session.commit()
        _check(session)
        for _ in range(6):
            before = _parts(session)
            changes = _change(session, fleet, chance)
            session.commit()
            after = _parts(session)
            moved = {node for node in NODES if before[node] != after[node]}
            assert moved <= changes.nodes, f"parts changed without a bump: {moved - changes.nodes}"
            _check(session)


def _change(session: Session, fleet: dict[str, Any], chance: random.Random) -> Any:
    """One random change: an endpoint relabelled, moved, dropped; a namespace relabelled;
    a policy's selector swapped."""
    kind = chance.choice(["relabel", "move", "drop", "namespace", "policy"])
    endpoints: dict[str, list[dict[str, Any]]] = fleet["endpoints"]
    node = chance.choice([n for n in NODES if endpoints[n]] or list(NODES))
    if kind == "namespace":
        name = chance.choice(sorted(fleet["namespaces"]))
        labels = {chance.choice(["team", "env"]): chance.choice(["a", "b", "p", "q"])}
        _, changes = policies.put_namespace(session, name, labels)
        return changes
    if kind == "policy":
        document = chance.choice(fleet["policies"])
        document["spec"]["podSelector"] = chance.choice(
            [{}, {"matchLabels": {"app": "w"}}, {"matchLabels": {"tier": "1"}}]
        )
        metadata = document["metadata"]
        return policies.put_policy(session, metadata["namespace"], metadata["name"], document)[2]
    if not endpoints[node]:
        return policies.put_endpoints(session, node, EndpointSet(), 100)
    at = chance.randrange(len(endpoints[node]))
    if kind == "relabel":
        endpoints[node][at] = {**endpoints[node][at], "labels": {"app": chance.choice(["w", "d"])}}
    elif kind == "drop":
        del endpoints[node][at]
    else:  # move to another node, with an address there
        target = chance.choice([n for n in NODES if n != node])
        moved = endpoints[node].pop(at)
        taken = {e["ip"] for e in endpoints[target]}
        free = next(
            a
            for a in ADDRESSES
            if a.startswith(f"10.0.{NODES.index(target) + 1}.") and a not in taken
        )
        changes = policies.put_endpoints(
            session, node, EndpointSet.model_validate({"endpoints": endpoints[node]}), 100
        )
        endpoints[target].append({**moved, "ip": free})
        return changes.merge(
            policies.put_endpoints(
                session, target, EndpointSet.model_validate({"endpoints": endpoints[target]}), 100
            )
        )
    return policies.put_endpoints(
        session, node, EndpointSet.model_validate({"endpoints": endpoints[node]}), 100
    )


def _wipe(session: Session) -> None:
    """An empty fleet for the next example (the index follows the rows)."""
    from bpfleet_api import models as tables
    from sqlmodel import delete

    for table in (
        tables.NodePolicy,
        tables.NodePolicyAssignment,
        tables.NodePolicyStatus,
        tables.NodeEndpoints,
        tables.NodeWorkloads,
        tables.Namespace,
        tables.Policy,
        tables.Node,
    ):
        session.exec(delete(table))  # type: ignore[call-overload]
    session.commit()


def test_relabelling_a_namespace_bumps_the_nodes_whose_parts_show_it(engine: Engine) -> None:
    """A pod that a policy on another node needs lives in a namespace whose labels change
    (still selected): that node's part shows the new labels, so it is bumped; a node
    whose part shows no pod of the namespace is not."""
    with Session(engine) as session:
        _wipe(session)
        for index, node in enumerate(NODES):
            session.add(Node(name=node, pod_cidrs=[f"10.0.{index + 1}.0/24"]))
        session.commit()
        for name in ("shop", "other", "elsewhere"):
            policies.put_namespace(session, name, {"team": "a" if name != "elsewhere" else "z"})

        def declare(node: str, *pods: tuple[str, str, str]) -> None:
            endpoints = [
                {
                    "namespace": ns,
                    "name": name,
                    "labels": {"app": name},
                    "ip": ip,
                    "interface": f"v{i}",
                }
                for i, (ns, name, ip) in enumerate(pods)
            ]
            policies.put_endpoints(
                session, node, EndpointSet.model_validate({"endpoints": endpoints}), 10
            )

        declare("n1", ("shop", "db", "10.0.1.1"))
        declare("n2", ("other", "web", "10.0.2.1"))
        declare("n3", ("elsewhere", "lonely", "10.0.3.1"))
        document = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"namespace": "shop", "name": "db"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}],
            },
        }
        policies.put_policy(session, "shop", "db", document)
        session.commit()
        _, changes = policies.put_namespace(session, "other", {"team": "a", "env": "p"})
        session.commit()
        assert changes.nodes == {"n1"}  # its part shows web, of namespace other
        part = policies.part_of(session, "n1")
        assert part is not None
        assert part.topology.namespaces["other"]["env"] == "p"
        _, changes = policies.put_namespace(session, "elsewhere", {"team": "y"})
        session.commit()
        assert changes.nodes == set()  # nobody's part shows a pod of it
        _check(session)
