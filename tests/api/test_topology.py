"""The policy topology is an admin's, not the nodes': namespace labels only from
``/v1/namespaces``, endpoint IPs only inside a node's pod CIDRs, a node's workloads
(once an admin sets them) exactly as the admin says; and every list a node sends capped."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import MAX_LABELS
from tests import services
from tests.api.test_policies import Node, endpoint, policy, selecting

pytestmark = pytest.mark.services


@pytest.fixture
def namespace() -> str:
    return f"topo-{uuid.uuid4().hex[:8]}"


def _topology(node: Node) -> dict[str, Any]:
    """The fleet topology in the node's newest policy part."""
    part = (node.poll() or {}).get("policy")
    assert part is not None, "the node got no policy part"
    return dict(part["topology"])


def _pods(topology: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The topology's pods in ``namespace`` (other tests' share the fleet)."""
    return {k: v for k, v in topology["pods"].items() if k.startswith(f"{namespace}/")}


def _select_everything(api: services.Api, namespace: str) -> None:
    with api.client() as client:
        response = client.put(
            f"/v1/policies/{namespace}/all", json=policy(namespace, "all", podSelector={})
        )
    assert response.status_code == 200, response.text


def test_namespace_labels_come_from_an_admin_never_from_agents(
    api: services.Api, recorded_features: FeatureReport, namespace: str
) -> None:
    node = Node(api, recorded_features)
    declared = node.declare(
        endpoint(namespace, "db", "10.60.0.1", app="db"),
        namespaces={namespace: {"team": "payments"}},  # a node's say: ignored
    )
    assert declared.status_code == 204, declared.text
    _select_everything(api, namespace)
    name_only = {"kubernetes.io/metadata.name": namespace}
    assert _topology(node)["namespaces"][namespace] == name_only

    with api.client() as admin:
        put = admin.put(f"/v1/namespaces/{namespace}", json={"labels": {"team": "shop"}})
        assert put.status_code == 200, put.text
        assert put.json()["labels"] == {**name_only, "team": "shop"}
        assert _topology(node)["namespaces"][namespace] == {**name_only, "team": "shop"}
        listed = {row["name"]: row["labels"] for row in admin.get("/v1/namespaces").json()}
        assert listed[namespace] == {**name_only, "team": "shop"}

        # The name label is the namespace's name, always.
        renamed = admin.put(
            f"/v1/namespaces/{namespace}",
            json={"labels": {"kubernetes.io/metadata.name": "prod"}},
        )
        assert renamed.status_code == 422
        assert "kubernetes.io/metadata.name" in renamed.json()["detail"]
        same = admin.put(
            f"/v1/namespaces/{namespace}",
            json={"labels": {"kubernetes.io/metadata.name": namespace, "team": "shop"}},
        )
        assert same.status_code == 200
        assert node.poll(wait=0.3) is None  # the same labels again change nothing

        assert admin.delete(f"/v1/namespaces/{namespace}").status_code == 204
        assert admin.delete(f"/v1/namespaces/{namespace}").status_code == 404
        assert _topology(node)["namespaces"][namespace] == name_only
        bad = admin.put("/v1/namespaces/Not_A_Name", json={"labels": {}})
        assert bad.status_code == 422


def test_an_agent_declares_endpoints_only_inside_its_pod_cidrs(
    api: services.Api, recorded_features: FeatureReport, namespace: str
) -> None:
    unset = Node(api, recorded_features, pod_cidrs=None)
    refused = unset.declare(endpoint(namespace, "a", "10.61.1.5"))
    assert refused.status_code == 422
    assert refused.json()["problems"] == [
        f"endpoint {namespace}/a: IP 10.61.1.5 is outside the node's pod CIDRs (none set)"
    ]

    first = Node(api, recorded_features, pod_cidrs=("10.61.1.0/24", "fd00:61::/64"))
    second = Node(api, recorded_features, pod_cidrs=("10.61.2.0/24",))
    assert first.declare(endpoint(namespace, "a", "10.61.1.5", app="a")).status_code == 204
    # Another node cannot claim first's pod, even before first declares it.
    squatter = second.declare(
        endpoint(namespace, "b", "10.61.2.9"), endpoint(namespace, "evil", "10.61.1.6")
    )
    assert squatter.status_code == 422
    assert squatter.json()["problems"] == [
        f"endpoint {namespace}/evil: IP 10.61.1.6 is outside the node's pod CIDRs (10.61.2.0/24)"
    ]
    assert "10.61.2.0/24" in squatter.json()["detail"]
    with api.client() as admin:
        # Nothing of a refused declaration is stored, not even its valid endpoint.
        assert admin.get(f"/v1/nodes/{second.name}").json()["endpoints"] == []
        assert admin.get(f"/v1/nodes/{first.name}").json()["podCIDRs"] == [
            "10.61.1.0/24",
            "fd00:61::/64",
        ]
    assert first.declare(endpoint(namespace, "v6", "fd00:61::5")).status_code == 204

    _select_everything(api, namespace)
    assert set(_pods(_topology(first), namespace)) == {f"{namespace}/v6"}
    with api.client() as admin:
        # New ranges: what was declared outside them leaves the topology.
        moved = admin.put(f"/v1/nodes/{first.name}/pod-cidrs", json={"podCIDRs": ["10.62.0.0/24"]})
        assert moved.status_code == 200
        assert moved.json()["podCIDRs"] == ["10.62.0.0/24"]
        for bad in (["10.61.1.1/24"], ["nope"], ["10.0.0.0/8"] * 17):
            assert (
                admin.put(f"/v1/nodes/{first.name}/pod-cidrs", json={"podCIDRs": bad}).status_code
                == 422
            ), bad
        assert (
            admin.put("/v1/nodes/no-such-node/pod-cidrs", json={"podCIDRs": []}).status_code == 404
        )
    # Its only endpoint gone from the topology, the node has no policy part left.
    assert "policy" not in (first.poll() or {"policy": "still there"})
    with api.client() as admin:
        assert admin.get(f"/v1/nodes/{first.name}").json()["endpoints"] == []


def test_workloads_an_admin_sets_are_the_node_entries(
    api: services.Api, recorded_features: FeatureReport, namespace: str
) -> None:
    node = Node(api, recorded_features, pod_cidrs=("10.63.0.0/24",))
    declared = node.declare(
        endpoint(namespace, "web", "10.63.0.2", app="admin", role="evil"),
        endpoint(namespace, "extra", "10.63.0.3", app="extra"),
    )
    assert declared.status_code == 204, declared.text
    workloads = [
        {
            "namespace": namespace,
            "name": "web",
            "labels": {"app": "web"},
            "ip": "10.63.0.2",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        },
        {"namespace": namespace, "name": "batch", "labels": {"app": "batch"}, "ip": "10.99.0.7"},
    ]
    with api.client() as admin:
        response = admin.put(f"/v1/nodes/{node.name}/workloads", json={"workloads": workloads})
        assert response.status_code == 204, response.text
        missing = admin.put("/v1/nodes/no-such-node/workloads", json={"workloads": workloads})
        assert missing.status_code == 404
        twice = admin.put(
            f"/v1/nodes/{node.name}/workloads", json={"workloads": workloads + workloads[:1]}
        )
        assert twice.status_code == 422
        assert "listed twice" in twice.text
    _select_everything(api, namespace)
    pods = _pods(_topology(node), namespace)
    assert set(pods) == {f"{namespace}/web", f"{namespace}/batch"}  # not the agent's "extra"
    assert pods[f"{namespace}/web"]["labels"] == {"app": "web"}  # the admin's labels
    assert pods[f"{namespace}/web"]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert pods[f"{namespace}/batch"]["node"] == node.name

    # The agent supplies interfaces only: for a workload, even outside its pod CIDRs.
    again = node.declare(
        endpoint(namespace, "web", "10.63.0.2", app="whatever"),
        endpoint(namespace, "batch", "10.99.0.7"),
    )
    assert again.status_code == 204, again.text
    with api.client() as admin:
        shown = admin.get(f"/v1/nodes/{node.name}").json()["endpoints"]
    assert [(e["name"], e["interface"], e["labels"]) for e in shown] == [
        ("web", "vweb", {"app": "web"}),
        ("batch", "vbatch", {"app": "batch"}),
    ]
    outside = node.declare(endpoint(namespace, "other", "10.99.0.8"))
    assert outside.status_code == 422


def test_what_a_node_may_send_is_capped(
    api: services.Api, recorded_features: FeatureReport, namespace: str
) -> None:
    node = Node(api, recorded_features, pod_cidrs=("10.64.0.0/16",))
    many = [endpoint(namespace, f"p{i}", f"10.64.{i // 250}.{i % 250 + 1}") for i in range(1025)]
    refused = node.declare(*many)
    assert refused.status_code == 422
    assert "at most 1024" in refused.json()["detail"]
    assert "BPFLEET_API_MAX_ENDPOINTS_PER_NODE" in refused.json()["detail"]
    workloads = [{k: v for k, v in item.items() if k != "interface"} for item in many]
    with api.client() as admin:
        too_many = admin.put(f"/v1/nodes/{node.name}/workloads", json={"workloads": workloads})
        assert too_many.status_code == 422
        assert "at most 1024" in too_many.json()["detail"]
        assert admin.get(f"/v1/nodes/{node.name}").json()["endpoints"] == []

        labels = {f"k{i}": "v" for i in range(MAX_LABELS + 1)}
        for path, body in (
            (f"/v1/namespaces/{namespace}", {"labels": labels}),
            (f"/v1/nodes/{node.name}/labels", {"labels": labels}),
        ):
            response = admin.put(path, json=body)
            assert response.status_code == 422, path
            assert str(MAX_LABELS) in response.text
    wide = node.declare({**endpoint(namespace, "wide", "10.64.9.9"), "labels": labels})
    assert wide.status_code == 422
    long_key = node.declare(
        {**endpoint(namespace, "long", "10.64.9.9"), "labels": {"a." * 200 + "b/c": "v"}}
    )
    assert long_key.status_code == 422
    assert "longer than 317" in long_key.text
    ports = [{"port": port} for port in range(1, 66)]
    assert node.declare({**endpoint(namespace, "p", "10.64.9.9"), "ports": ports}).status_code == (
        422
    )
    assert node.declare(endpoint(namespace, "fits", "10.64.9.9")).status_code == 204


def test_selecting_namespaces_uses_only_admin_labels(
    api: services.Api, recorded_features: FeatureReport, namespace: str
) -> None:
    """A node that says its namespace is 'trusted' does not open a policy that admits
    namespaces labelled so; an admin's label does."""
    db_node = Node(api, recorded_features, pod_cidrs=("10.65.1.0/24",))
    client_node = Node(api, recorded_features, pod_cidrs=("10.65.2.0/24",))
    other = f"{namespace}-x"
    assert db_node.declare(endpoint(namespace, "db", "10.65.1.2", app="db")).status_code == 204
    sneaky = client_node.declare(
        endpoint(other, "c", "10.65.2.2", app="c"), namespaces={other: {"trust": "yes"}}
    )
    assert sneaky.status_code == 204
    document = policy(
        namespace,
        "db",
        podSelector=selecting(app="db"),
        ingress=[{"from": [{"namespaceSelector": selecting(trust="yes")}]}],
    )
    with api.client() as admin:
        assert admin.put(f"/v1/policies/{namespace}/db", json=document).status_code == 200
        # The node's own word selects nothing: the policy needs no pod of that
        # namespace, so the part (narrowed to what its policies reach) has none.
        topology = _topology(db_node)
        assert other not in topology["namespaces"]
        assert f"{other}/c" not in topology["pods"]
        assert admin.put(
            f"/v1/namespaces/{other}", json={"labels": {"trust": "yes"}}
        ).status_code == (200)
        topology = _topology(db_node)
        assert topology["namespaces"][other]["trust"] == "yes"
        assert f"{other}/c" in topology["pods"]
