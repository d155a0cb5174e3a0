"""Network policies through the API: validation, generations, distribution to the nodes
whose endpoints a policy selects, and the per-node status their reports drive."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from bpfleet_core.features import FeatureReport
from bpfleet_core.netpol import validating
from tests import services
from tests.api.conftest import upload
from tests.conftest import SignedCatalog

pytestmark = pytest.mark.services

NOW = "2026-01-01T00:00:00Z"


class Node:
    """A node speaking the agent protocol: registers, declares endpoints, long-polls,
    reports what its policy datapath enforces. An admin gives it its pod CIDRs first."""

    def __init__(
        self,
        api: services.Api,
        features: FeatureReport,
        labels: dict[str, str] | None = None,
        pod_cidrs: tuple[str, ...] | None = ("10.0.0.0/8",),
    ) -> None:
        self.api, self.name = api, f"pol-{uuid.uuid4().hex[:8]}"
        with api.client(api.bootstrap_token) as client:
            response = client.post(
                "/v1/agent/register",
                json={
                    "node": self.name,
                    "labels": labels or {},
                    "features": features.model_copy(update={"node": self.name}).model_dump(
                        mode="json"
                    ),
                },
            )
        assert response.status_code == 200, response.text
        self.token = response.json()["token"]
        self.revision = 0
        if pod_cidrs is not None:
            with api.client() as admin:
                cidrs = admin.put(f"/v1/nodes/{self.name}/pod-cidrs", json={"podCIDRs": pod_cidrs})
            assert cidrs.status_code == 200, cidrs.text

    def declare(self, *endpoints: dict[str, Any], namespaces: Any = None) -> Any:
        with self.api.client(self.token) as client:
            return client.put(
                "/v1/agent/endpoints",
                json={"endpoints": list(endpoints), "namespaces": namespaces or {}},
            )

    def poll(self, wait: float = 5) -> dict[str, Any] | None:
        with self.api.client(self.token) as client:
            response = client.get(
                "/v1/agent/assignments", params={"after": self.revision, "wait": wait}
            )
        if response.status_code == 204:
            return None
        assert response.status_code == 200, response.text
        document = dict(response.json())
        self.revision = document["revision"]
        return document

    def report(self, policy: dict[str, Any] | None) -> None:
        body = {
            "node": self.name,
            "revision": self.revision,
            "programs": [],
            "reportedAt": NOW,
            "policy": None if policy is None else {"updatedAt": NOW, **policy},
        }
        with self.api.client(self.token) as client:
            response = client.post("/v1/agent/status", json=body)
        assert response.status_code == 204, response.text


def endpoint(namespace: str, name: str, ip: str, **labels: str) -> dict[str, Any]:
    return {
        "namespace": namespace,
        "name": name,
        "labels": labels,
        "ip": ip,
        "interface": f"v{name}"[:15],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def policy(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }


def selecting(**labels: str) -> dict[str, Any]:
    return {"matchLabels": labels}


@pytest.fixture
def namespace() -> str:
    return f"ns-{uuid.uuid4().hex[:8]}"


def test_a_policy_reaches_the_nodes_whose_endpoints_it_selects(
    api: services.Api,
    signed_catalog: SignedCatalog,
    recorded_features: FeatureReport,
    namespace: str,
) -> None:
    db_node, web_node = Node(api, recorded_features), Node(api, recorded_features)
    assert db_node.declare(endpoint(namespace, "db", "10.1.0.1", app="db")).status_code == 204
    response = web_node.declare(endpoint(namespace, "web", "10.1.0.2", app="web"))
    assert response.status_code == 204, response.text
    with api.client() as client:
        labelled = client.put(f"/v1/namespaces/{namespace}", json={"labels": {"team": "a"}})
        assert labelled.status_code == 200, labelled.text
    document = policy(
        namespace,
        "db-ingress",
        podSelector=selecting(app="db"),
        ingress=[{"from": [{"podSelector": selecting(app="web")}], "ports": [{"port": "http"}]}],
    )
    with api.client() as client:
        put = client.put(f"/v1/policies/{namespace}/db-ingress", json=document)
        assert put.status_code == 200, put.text
        view = put.json()
        assert (view["namespace"], view["name"], view["generation"], view["mode"]) == (
            namespace,
            "db-ingress",
            1,
            "enforce",
        )
        assert view["summary"] == {"desired": 1, "enforcing": 0, "failed": 0, "pending": 1}
        assert view["document"]["spec"]["podSelector"] == selecting(app="db")

        part = (db_node.poll() or {})["policy"]
        assert part["artifact"] is None  # no netpol artifact uploaded yet
        assert [(p["generation"], p["document"]["metadata"]["name"]) for p in part["policies"]] == [
            (1, "db-ingress")
        ]
        # Narrowed: its own pod, and the peers the policy can select (where they run is
        # not the node's business); nothing else of the fleet.
        topology = part["topology"]
        assert set(topology["pods"]) == {f"{namespace}/db", f"{namespace}/web"}
        assert topology["pods"][f"{namespace}/db"]["node"] == db_node.name
        assert topology["pods"][f"{namespace}/web"].get("node") is None
        assert topology["pods"][f"{namespace}/web"]["ip"] == "10.1.0.2"
        assert topology["namespaces"] == {
            namespace: {"kubernetes.io/metadata.name": namespace, "team": "a"}
        }
        assert set(topology["nodes"]) == {db_node.name}
        # The web node's endpoint is a peer, not selected: it gets no policy part.
        assert web_node.poll(wait=0.3) is None

        # The datapath artifact, once uploaded, reaches the node, digest pinned.
        netpol = upload(api, signed_catalog, "netpol")
        part = (db_node.poll() or {})["policy"]
        assert part["artifact"] == {
            "name": "netpol",
            "version": netpol["version"],
            "digest": netpol["digest"],
        }
        assert netpol["digest"] not in client.post("/v1/artifacts/gc").json()["removed"]

        # The same document again changes nothing; a change is generation 2.
        again = client.put(f"/v1/policies/{namespace}/db-ingress", json=document)
        assert again.json()["generation"] == 1
        assert db_node.poll(wait=0.3) is None
        document["spec"]["ingress"][0]["ports"] = [{"port": 9090}]
        changed = client.put(f"/v1/policies/{namespace}/db-ingress", json=document)
        assert changed.json()["generation"] == 2
        part = (db_node.poll() or {})["policy"]
        assert part["policies"][0]["generation"] == 2
        assert part["policies"][0]["document"]["spec"]["ingress"][0]["ports"][0]["port"] == 9090
        assert part["revision"] == db_node.revision

        # A new endpoint the policy can select changes the topology the node compiles;
        # one it cannot select concerns the node in nothing: no new revision.
        other = Node(api, recorded_features)
        assert other.declare(endpoint(namespace, "web2", "10.1.0.3", app="web")).status_code == 204
        part = (db_node.poll() or {})["policy"]
        assert part["topology"]["pods"][f"{namespace}/web2"]["ip"] == "10.1.0.3"
        assert (
            other.declare(
                endpoint(namespace, "web2", "10.1.0.3", app="web"),
                endpoint(namespace, "cache", "10.1.0.4", app="cache"),
            ).status_code
            == 204
        )
        assert db_node.poll(wait=0.5) is None
        assert (
            other.declare(endpoint(namespace, "web2", "10.1.0.3", app="cache")).status_code == 204
        )
        part = (db_node.poll() or {})["policy"]
        assert f"{namespace}/web2" not in part["topology"]["pods"]
        listed = client.get("/v1/policies", params={"namespace": namespace}).json()
        assert [(p["name"], p["generation"]) for p in listed] == [("db-ingress", 2)]


def test_invalid_documents_are_refused_naming_the_field(api: services.Api, namespace: str) -> None:
    bad_port = policy(
        namespace, "bad", podSelector={}, ingress=[{"ports": [{"protocol": "TCP", "port": 0}]}]
    )
    expected = None
    try:
        validating.validate(bad_port)
    except validating.PolicyValidationError as error:
        expected = [str(problem) for problem in error.problems]
    assert expected
    assert expected[0].startswith("spec.ingress[0].ports[0].port: ")
    with api.client() as client:
        response = client.put(f"/v1/policies/{namespace}/bad", json=bad_port)
        assert response.status_code == 422
        assert response.json()["problems"] == expected
        assert namespace in response.json()["detail"]

        renamed = client.put(f"/v1/policies/{namespace}/other", json=policy(namespace, "bad"))
        assert renamed.status_code == 422
        assert renamed.json()["problems"] == [
            'metadata.name: Invalid value: "bad": must match the name in the path ("other")'
        ]
        moved = client.put("/v1/policies/elsewhere/bad", json=policy(namespace, "bad"))
        assert moved.status_code == 422
        assert moved.json()["problems"][0].startswith("metadata.namespace: Invalid value")

        unknown = client.put(
            f"/v1/policies/{namespace}/bad", json={**policy(namespace, "bad"), "apiVersion": "v9"}
        )
        assert unknown.status_code == 422
        assert unknown.json()["problems"][0].startswith('apiVersion: Unsupported value: "v9"')
        assert client.get(f"/v1/policies/{namespace}/bad").status_code == 404

        # Metadata left out is taken from the path; host bits in a CIDR are a warning.
        bare = {
            "apiVersion": "bpfleet.io/v1alpha1",
            "kind": "NetworkPolicy",
            "spec": {
                "mode": "audit",
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.9.9.9/16"}}]}],
            },
        }
        accepted = client.put(f"/v1/policies/{namespace}/bare", json=bare)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["mode"] == "audit"
        assert accepted.json()["document"]["metadata"] == {"name": "bare", "namespace": namespace}
        assert (
            accepted.json()["document"]["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidr"]
            == "10.9.0.0/16"
        )
        assert "10.9.9.9/16" in accepted.headers["warning"]

        reserved = client.put(
            "/v1/programs/bpfleet-netpol",
            json={
                "artifact": {"name": "netpol", "version": "1.0.0"},
                "attach": [
                    {
                        "entryPoint": "pod_egress",
                        "type": "tc",
                        "direction": "ingress",
                        "interfaces": ["lo"],
                    }
                ],
            },
        )
        assert reserved.status_code == 422
        assert "reserved" in reserved.json()["detail"]


def test_summary_and_node_rows_follow_what_nodes_report(
    api: services.Api, recorded_features: FeatureReport, namespace: str
) -> None:
    nodes = [Node(api, recorded_features) for _ in range(3)]
    for index, node in enumerate(nodes):
        declared = node.declare(
            endpoint(namespace, f"api{index}", f"10.2.0.{index + 1}", app="api")
        )
        assert declared.status_code == 204, declared.text
    path = f"/v1/policies/{namespace}/api-deny"
    with api.client() as client:
        assert (
            client.put(
                path, json=policy(namespace, "api-deny", podSelector=selecting(app="api"))
            ).status_code
            == 200
        )
        enforcing, failing, silent = nodes
        for node in nodes:
            assert (node.poll() or {})["policy"]["policies"][0]["generation"] == 1
        enforcing.report(
            {
                "state": "Enforcing",
                "revision": enforcing.revision,
                "policies": [f"{namespace}/api-deny@1"],
                "endpoints": 1,
                "rules": 0,
                "entries": 3,
            }
        )
        failing.report(
            {"state": "Failed", "message": "revision 7 not enforced: no room", "policies": []}
        )
        assert client.get(path).json()["summary"] == {
            "desired": 3,
            "enforcing": 1,
            "failed": 1,
            "pending": 1,
        }
        rows = {row["node"]: row for row in client.get(f"{path}/nodes").json()}
        assert {name: (row["state"], row["generation"]) for name, row in rows.items()} == {
            enforcing.name: ("Enforcing", 1),
            failing.name: ("Failed", None),
            silent.name: ("Pending", None),
        }
        assert rows[failing.name]["message"] == "revision 7 not enforced: no room"
        assert set(rows[enforcing.name]) == {
            "node",
            "generation",
            "state",
            "message",
            "updatedAt",
            "counters",
            "readiness",
            "policyCounters",
        }
        assert rows[enforcing.name]["readiness"] == "Ready"
        # The node's datapath counters, as it reported them (none here).
        assert rows[enforcing.name]["counters"] == {"allowed": 0, "denied": 0, "auditDenied": 0}
        assert rows[silent.name]["counters"] is None
        detail = client.get(f"/v1/nodes/{enforcing.name}").json()
        assert detail["policy"]["policies"] == [f"{namespace}/api-deny@1"]
        assert detail["endpoints"][0]["name"] == "api0"

        # Deleted: every node loses its part; the one still enforcing it stays listed
        # until it reports the policy gone.
        assert client.delete(path).status_code == 204
        assert client.get(path).status_code == 404
        assert client.delete(path).status_code == 404
        for node in nodes:
            assert "policy" not in (node.poll() or {"policy": "a part still"})
        rows = client.get(f"{path}/nodes").json()
        assert [(row["node"], row["state"], row["generation"]) for row in rows] == [
            (enforcing.name, "Removing", 1)
        ]
        enforcing.report(None)
        assert client.get(f"{path}/nodes").json() == []
        assert client.get("/v1/policies", params={"namespace": namespace}).json() == []


def test_a_node_selector_keeps_a_policy_off_other_nodes(
    api: services.Api, recorded_features: FeatureReport, namespace: str
) -> None:
    edge = Node(api, recorded_features, {"zone": "edge"})
    core = Node(api, recorded_features, {"zone": "core"})
    assert edge.declare(endpoint(namespace, "a", "10.3.0.1", app="x")).status_code == 204
    assert core.declare(endpoint(namespace, "b", "10.3.0.2", app="x")).status_code == 204
    document = {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": "edge-only"},
        "spec": {"podSelector": selecting(app="x"), "nodeSelector": selecting(zone="edge")},
    }
    path = f"/v1/policies/{namespace}/edge-only"
    with api.client() as client:
        assert client.put(path, json=document).json()["summary"]["desired"] == 1
        assert (edge.poll() or {})["policy"]["policies"][0]["document"]["spec"]["nodeSelector"]
        assert core.poll(wait=0.3) is None
        assert [row["node"] for row in client.get(f"{path}/nodes").json()] == [edge.name]

        # Relabelled into the selector, the other node gets the policy too.
        relabel = client.put(f"/v1/nodes/{core.name}/labels", json={"labels": {"zone": "edge"}})
        assert relabel.status_code == 200
        assert client.get(path).json()["summary"]["desired"] == 2
        assert (core.poll() or {})["policy"]["topology"]["nodes"][core.name] == {"zone": "edge"}


def test_endpoint_declarations_are_checked(
    api: services.Api, recorded_features: FeatureReport, namespace: str
) -> None:
    first, second = Node(api, recorded_features), Node(api, recorded_features)
    assert first.declare(endpoint(namespace, "one", "10.4.0.1")).status_code == 204
    taken = second.declare(endpoint(namespace, "one", "10.4.0.9"))
    assert taken.status_code == 409
    assert taken.json()["problems"] == [f"endpoint {namespace}/one is on node {first.name}"]
    same_ip = second.declare(endpoint(namespace, "two", "10.4.0.1"))
    assert same_ip.status_code == 409
    assert (
        f"IP 10.4.0.1 belongs to {namespace}/one on node {first.name}"
        in same_ip.json()["problems"][0]
    )
    twice = second.declare(
        endpoint(namespace, "x", "10.4.0.5"), endpoint(namespace, "x", "10.4.0.6")
    )
    assert twice.status_code == 422
    assert "listed twice" in twice.text
    assert second.declare({**endpoint(namespace, "y", "10.4.0.7"), "ip": "nope"}).status_code == 422
    # Moving an endpoint: the old node lets go, then the new one may declare it.
    assert first.declare().status_code == 204
    assert second.declare(endpoint(namespace, "one", "10.4.0.1")).status_code == 204
    with api.client() as client:
        detail = client.get(f"/v1/nodes/{second.name}").json()
        assert [e["name"] for e in detail["endpoints"]] == ["one"]
        assert client.get(f"/v1/nodes/{first.name}").json()["endpoints"] == []


def _counters_report(
    node: Node, namespace: str, generation: int, since: int, *counted: dict[str, Any]
) -> None:
    node.report(
        {
            "state": "Enforcing",
            "revision": node.revision,
            "policies": [f"{namespace}/two-rules@{generation}"],
            "countersSince": since,
            "counters": list(counted),
        }
    )


def _rules(view: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(r["direction"], r["index"], r["flows"]) for r in view["policyCounters"]["rules"]]


def test_counters_per_rule_are_kept_per_node_and_summed_per_policy(
    api: services.Api, recorded_features: FeatureReport, namespace: str
) -> None:
    first, second = Node(api, recorded_features), Node(api, recorded_features)
    for index, node in enumerate((first, second)):
        declared = node.declare(endpoint(namespace, f"db{index}", f"10.9.0.{index + 1}", app="db"))
        assert declared.status_code == 204, declared.text
    path = f"/v1/policies/{namespace}/two-rules"
    document = policy(
        namespace,
        "two-rules",
        podSelector=selecting(app="db"),
        ingress=[
            {"from": [{"podSelector": selecting(app="web")}], "ports": [{"port": 5432}]},
            {"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]},
        ],
    )
    with api.client() as client:
        assert client.put(path, json=document).status_code == 200
        for node in (first, second):
            assert (node.poll() or {})["policy"]["policies"][0]["generation"] == 1
        rule = {"direction": "ingress"}
        _counters_report(
            first,
            namespace,
            1,
            7,
            {
                "policy": f"{namespace}/two-rules",
                "denied": 3,
                "rules": [
                    {**rule, "index": 0, "flows": 5},
                    {**rule, "index": 1, "flows": 2},
                    # A rule the policy does not have: not kept, whatever the node says.
                    {**rule, "index": 9, "flows": 100},
                ],
            },
            # A policy the node does not enforce: not kept either.
            {"policy": f"{namespace}/other", "denied": 50},
        )
        _counters_report(
            second,
            namespace,
            1,
            3,
            {"policy": f"{namespace}/two-rules", "rules": [{**rule, "index": 0, "flows": 1}]},
        )
        view = client.get(path).json()
        assert _rules(view) == [("ingress", 0, 6), ("ingress", 1, 2)]
        assert view["policyCounters"]["denied"] == 3
        assert view["policyCounters"]["auditDenied"] == 0

        # Cumulative values: what grew counts; rules left out of a report keep theirs.
        _counters_report(
            first,
            namespace,
            1,
            7,
            {
                "policy": f"{namespace}/two-rules",
                "denied": 3,
                "rules": [{**rule, "index": 0, "flows": 8}],
            },
        )
        # The datapath loaded anew (another life): its counts start from zero again.
        _counters_report(
            second,
            namespace,
            1,
            4,
            {"policy": f"{namespace}/two-rules", "rules": [{**rule, "index": 0, "flows": 2}]},
        )
        rows = {row["node"]: row for row in client.get(f"{path}/nodes").json()}
        assert _rules(rows[first.name]) == [("ingress", 0, 8), ("ingress", 1, 2)]
        assert _rules(rows[second.name]) == [("ingress", 0, 3), ("ingress", 1, 0)]
        assert _rules(client.get(path).json()) == [("ingress", 0, 11), ("ingress", 1, 2)]

        # A new generation counts afresh: from the values a node had when it took it.
        document["spec"]["ingress"].append({"ports": [{"port": 22}]})
        assert client.put(path, json=document).json()["generation"] == 2
        assert (first.poll() or {})["policy"]["policies"][0]["generation"] == 2
        _counters_report(
            first,
            namespace,
            2,
            7,
            {
                "policy": f"{namespace}/two-rules",
                "rules": [{**rule, "index": 0, "flows": 9}, {**rule, "index": 2, "flows": 4}],
            },
        )
        view = client.get(path).json()  # the second node still enforces generation 1
        assert _rules(view) == [("ingress", 0, 1), ("ingress", 1, 0), ("ingress", 2, 4)]
        assert view["policyCounters"]["denied"] == 0

        # Bounded: a report with more rule counters than a report may carry is refused.
        too_many = {
            "policy": f"{namespace}/two-rules",
            "rules": [{**rule, "index": i, "flows": 1} for i in range(513)],
        }
        body = {
            "node": first.name,
            "revision": first.revision,
            "programs": [],
            "reportedAt": NOW,
            "policy": {
                "state": "Enforcing",
                "updatedAt": NOW,
                "countersSince": 7,
                "counters": [too_many],
            },
        }
        with api.client(first.token) as agent:
            refused = agent.post("/v1/agent/status", json=body)
        assert refused.status_code == 422, refused.text
        assert "512" in refused.text
