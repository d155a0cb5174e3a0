"""The policy editor's routes on a live fleet (endpoints declared by agents, policies
stored): validate, simulate, explain, the topology pages, selections, labels; that they
write nothing; their limits; and who may call them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml

from bpfleet_core.features import FeatureReport
from bpfleet_core.netpol import editing
from tests import services
from tests.api.test_policies import Node, endpoint, policy, selecting

pytestmark = pytest.mark.services

DB_INGRESS = policy(
    "shop",
    "db-ingress",
    podSelector=selecting(app="db"),
    ingress=[{"from": [{"podSelector": selecting(app="web")}], "ports": [{"port": "pg"}]}],
)
DRAFT = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
  - ports:
    - port: 5432
"""


def db(name: str, ip: str, **labels: str) -> dict[str, Any]:
    found = endpoint("shop", name, ip, **labels)
    found["ports"] = [{"name": "pg", "port": 5432, "protocol": "TCP"}]
    return found


@pytest.fixture(scope="module")
def fleet(api: services.Api, recorded_features: FeatureReport) -> dict[str, Any]:
    """Two nodes: shop's web, batch and db; kube-system's DNS; shop's labels, set by an
    admin; one stored policy."""
    first, second = Node(api, recorded_features), Node(api, recorded_features)
    response = first.declare(
        endpoint("shop", "web", "10.5.0.1", app="web"),
        endpoint("shop", "batch", "10.5.0.2", app="batch"),
    )
    assert response.status_code == 204, response.text
    dns = endpoint("kube-system", "coredns", "10.5.9.10", **{"k8s-app": "kube-dns"})
    dns["ports"] = [{"name": "dns", "port": 53, "protocol": "UDP"}]
    response = second.declare(db("db", "10.5.0.3", app="db"), dns)
    assert response.status_code == 204, response.text
    with api.client() as client:
        # Namespace labels are an admin's (an agent's word is ignored).
        response = client.put("/v1/namespaces/shop", json={"labels": {"team": "payments"}})
        assert response.status_code == 200, response.text
        response = client.put("/v1/policies/shop/db-ingress", json=DB_INGRESS)
        assert response.status_code == 200, response.text
        proposer = client.post(
            "/v1/tokens", json={"name": f"proposer-{uuid.uuid4().hex[:6]}", "role": "proposer"}
        ).json()["token"]
    return {"nodes": [first.name, second.name], "proposer": proposer}


def state(api: services.Api) -> Any:
    """What a write would change: stored policies and every node's revision."""
    with api.client() as client:
        return (
            client.get("/v1/policies").json(),
            sorted((n["name"], n["desiredRevision"]) for n in client.get("/v1/nodes").json()),
        )


def test_validate_locates_problems_in_the_validators_words(
    api: services.Api, fleet: dict[str, Any]
) -> None:
    bad = DRAFT.replace("port: 5432", "port: 0")
    with api.client(fleet["proposer"]) as client:
        response = client.post("/v1/policies/validate", json={"text": bad})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["valid"] is False
    [problem] = result["problems"]
    assert (problem["line"], problem["column"], problem["pathText"]) == (
        10,
        7,
        "spec.ingress[1].ports[0].port",
    )
    with api.client() as client:
        refused = client.put("/v1/policies/shop/db-ingress", json=yaml.safe_load(bad))
    assert refused.status_code == 422
    assert refused.json()["problems"] == [problem["text"]]
    with api.client() as client:
        typing = client.post("/v1/policies/validate", json={"text": DRAFT + "  - from: [{podSel"})
    assert typing.status_code == 200
    assert typing.json()["problems"][0]["message"].startswith("invalid YAML")
    assert typing.json()["problems"][0]["line"] == 11


def test_simulate_puts_the_draft_in_the_fleet_and_writes_nothing(
    api: services.Api, fleet: dict[str, Any]
) -> None:
    before = state(api)
    flows = "flows:\n  - shop/batch -> shop/db TCP/5432 expect deny\n  - shop/web -> shop/db TCP/pg expect allow\n"
    with api.client(fleet["proposer"]) as client:
        response = client.post(
            "/v1/policies/simulate",
            json={"text": DRAFT, "protocol": "TCP", "port": 5432, "flows": flows},
        )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["valid"]
    assert result["replaces"] == ["shop/db-ingress"]
    assert [e["name"] for e in result["selected"][0]["endpoints"]] == ["db"]
    assert result["selected"][0]["endpoints"][0]["node"] == fleet["nodes"][1]
    # The split `ports` rule opens 5432 to every endpoint: batch and coredns newly allowed.
    diff = result["diff"]
    assert (diff["allowed"], diff["denied"]) == (2, 0)
    assert {(c["client"], c["server"]) for c in diff["cells"]} == {
        ("shop/batch", "shop/db"),
        ("kube-system/coredns", "shop/db"),
    }
    matrix = result["matrix"]
    assert matrix["endpoints"] == sorted(matrix["endpoints"])  # the topology's order
    batch, server = matrix["endpoints"].index("shop/batch"), matrix["endpoints"].index("shop/db")
    assert matrix["before"][batch][server] == "X"
    assert matrix["after"][batch][server] == "."
    [lint] = [item for item in result["lints"] if item["code"] == "split-ports"]
    assert (lint["line"], lint["pathText"]) == (9, "spec.ingress[1].ports")
    assert lint["proof"]["verdict"] == "allow"
    assert lint["proof"]["verdictOnceFixed"] == "deny"
    edited = editing.apply_edits(
        yaml.safe_load(DRAFT),
        [
            editing.Edit(e["op"], tuple(e["path"]), e.get("value"))
            for e in lint["fixes"][0]["edits"]
        ],
    )
    assert edited["spec"]["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 5432}]}
    ]
    assert result["ratings"][0]["ingress"]["grade"] == "D"
    assert result["ratings"][0]["ingress"]["widest"]["line"] == 9
    assert [r["passed"] for r in result["flows"]["results"]] == [False, True]
    assert result["flows"]["results"][0]["reason"][0].endswith("allowed")
    assert state(api) == before


def test_simulate_this_policy_only_and_the_whole_matrix(
    api: services.Api, fleet: dict[str, Any]
) -> None:
    with api.client() as client:
        whole = client.post(
            "/v1/policies/simulate",
            json={"text": DRAFT, "port": 5432, "endpoints": "all", "thisPolicyOnly": True},
        )
    assert whole.status_code == 200, whole.text
    matrix = whole.json()["matrix"]
    assert matrix["fleet"] == matrix["relevant"] == len(matrix["endpoints"]) >= 4
    assert not matrix["truncated"]


def test_explain_names_the_rules_and_their_lines(api: services.Api, fleet: dict[str, Any]) -> None:
    with api.client(fleet["proposer"]) as client:
        drafted = client.post(
            "/v1/policies/explain",
            json={"text": DRAFT, "client": "shop/batch", "server": "shop/db", "port": 5432},
        )
        stored = client.post(
            "/v1/policies/explain",
            json={"client": "shop/web", "server": "shop/db", "port": 5432},
        )
        text = client.get("/v1/policies/shop/db-ingress/yaml")
    assert drafted.status_code == 200, drafted.text
    result = drafted.json()
    assert result["allowed"]
    [rule] = result["allowingRules"]
    assert (rule["ref"], rule["origin"], rule["line"]) == (
        "shop/db-ingress ingress rule 1",
        "draft",
        9,
    )
    assert result["isolatingPolicies"][0]["policy"] == "shop/db-ingress"
    assert stored.status_code == 200, stored.text
    [rule] = stored.json()["allowingRules"]
    assert (rule["ref"], rule["origin"]) == ("shop/db-ingress ingress rule 0", "stored")
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("application/yaml")
    assert text.text.splitlines()[rule["line"] - 1].lstrip().startswith("- from")
    with api.client() as client:
        unknown = client.post(
            "/v1/policies/explain", json={"client": "shop/nope", "server": "shop/db", "port": 1}
        )
        missing = client.get("/v1/policies/shop/nope/yaml")
    assert unknown.status_code == 422
    assert "shop/nope" in unknown.json()["detail"]
    assert missing.status_code == 404


def test_the_topology_comes_in_pages(api: services.Api, fleet: dict[str, Any]) -> None:
    seen: list[str] = []
    token = None
    with api.client(fleet["proposer"]) as client:
        for _ in range(10):
            params: dict[str, Any] = {"limit": 2}
            if token is not None:
                params["continue"] = token
            page = client.get("/v1/topology", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            seen += [f"{e['namespace']}/{e['name']}" for e in body["endpoints"]]
            assert body["namespaces"]["shop"] == {
                "kubernetes.io/metadata.name": "shop",
                "team": "payments",
            }
            assert set(body["nodes"]) == set(fleet["nodes"])
            token = body["continue"]
            if token is None:
                break
        bad = client.get("/v1/topology", params={"continue": "%%%"})
    assert seen == sorted(seen)
    assert seen == ["kube-system/coredns", "shop/batch", "shop/db", "shop/web"]
    assert body["total"] == 4
    assert bad.status_code == 422


def test_selections_and_the_pickers_vocabulary(api: services.Api, fleet: dict[str, Any]) -> None:
    with api.client(fleet["proposer"]) as client:
        matched = client.post(
            "/v1/topology/match",
            json={
                "namespace": "shop",
                "podSelector": {
                    "matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]
                },
            },
        )
        nothing = client.post(
            "/v1/topology/match",
            json={"namespace": "shop", "nodeSelector": {"matchLabels": {"zone": "z"}}},
        )
        broken = client.post(
            "/v1/topology/match",
            json={"namespace": "shop", "podSelector": {"matchLabels": {"a": "b c"}}},
        )
        vocabulary = client.get("/v1/topology/labels")
    assert matched.status_code == 200, matched.text
    assert matched.json()["count"] == 2
    assert [e["name"] for e in matched.json()["endpoints"]] == ["db", "web"]
    assert nothing.json() == {"count": 0, "endpoints": []}
    assert broken.status_code == 422
    assert broken.json()["problems"][0].startswith("spec.podSelector.matchLabels.a: ")
    words = vocabulary.json()
    assert words["endpointLabels"]["app"] == ["batch", "db", "web"]
    assert words["namespaceLabels"]["team"] == ["payments"]
    assert {"name": "dns", "protocol": "UDP", "ports": [53], "endpoints": 1} in words["namedPorts"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/policies/validate", {"text": "#" * 1_000_001}),
        ("/v1/policies/simulate", {"text": "#" * 1_000_001}),
        ("/v1/policies/simulate", {"text": DRAFT, "flows": "#" * 1_000_001}),
        ("/v1/policies/simulate", {"text": DRAFT, "limit": 501}),
        ("/v1/policies/simulate", {"text": DRAFT, "port": 0}),
        ("/v1/policies/simulate", {"text": DRAFT, "protocol": "ICMP"}),
        ("/v1/policies/explain", {"client": "a" * 321, "server": "shop/db", "port": 1}),
        ("/v1/topology/match", {"namespace": "Not A Namespace"}),
    ],
)
def test_limits_refuse_with_the_reason(
    api: services.Api, fleet: dict[str, Any], path: str, body: dict[str, Any]
) -> None:
    with api.client() as client:
        response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_text_at_the_limit_is_read(api: services.Api, fleet: dict[str, Any]) -> None:
    with api.client() as client:
        response = client.post(
            "/v1/policies/validate", json={"text": DRAFT + "#" * (1_000_000 - len(DRAFT))}
        )
        page = client.get("/v1/topology", params={"limit": 1001})
    assert response.status_code == 200, response.text
    assert response.json()["valid"]
    assert page.status_code == 422


def test_a_proposer_reads_and_simulates_but_never_writes(
    api: services.Api, fleet: dict[str, Any]
) -> None:
    with api.client(fleet["proposer"]) as client:
        assert client.get("/v1/policies").status_code == 200
        assert client.put("/v1/policies/shop/db-ingress", json=DB_INGRESS).status_code == 403
        assert client.delete("/v1/policies/shop/db-ingress").status_code == 403
        assert client.post("/v1/tokens", json={"name": "x", "role": "admin"}).status_code == 403
        assert client.post("/v1/session", json={"token": fleet["proposer"]}).status_code == 200


def test_simulate_draws_each_policy_and_its_edits(api: services.Api, fleet: dict[str, Any]) -> None:
    egress = DRAFT.replace("spec:\n", "spec:\n  policyTypes: [Ingress, Egress]\n")
    with api.client(fleet["proposer"]) as client:
        result = client.post("/v1/policies/simulate", json={"text": egress}).json()
    [diagram] = result["diagrams"]
    assert (diagram["policy"], diagram["ingressIsolated"], diagram["egressIsolated"]) == (
        "shop/db-ingress",
        True,
        True,
    )
    boxes = {(box["direction"], box["kind"]): box for box in diagram["boxes"]}
    assert boxes["ingress", "namespace"]["state"] == "allowed"
    assert boxes["ingress", "namespace"]["rules"] == [0, 1]
    dns = boxes["egress", "dns"]
    assert dns["state"] == "denied"
    [action] = dns["actions"]
    assert action["edits"][0]["path"] == ["spec", "egress"]  # none yet: the list is added
    assert action["edits"][0]["value"][0]["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert [(rule["line"], rule["endLine"]) for rule in diagram["rules"]] == [(8, 9), (10, 11)]
    assert diagram["modeChanges"][0]["mode"] == "audit"


def test_a_given_topology_takes_the_fleets_place(api: services.Api, fleet: dict[str, Any]) -> None:
    with api.client(fleet["proposer"]) as client:
        tutorial = client.get("/v1/policies/lessons").json()
        lesson = next(item for item in tutorial["lessons"] if item["id"] == "dns")
        body = {"text": lesson["start"], "flows": lesson["flows"], "topology": tutorial["topology"]}
        start = client.post("/v1/policies/simulate", json=body).json()
        solved = client.post(
            "/v1/policies/simulate", json={**body, "text": lesson["solution"]}
        ).json()
        explained = client.post(
            "/v1/policies/explain",
            json={
                "text": lesson["start"],
                "client": "shop/batch",
                "server": "kube-system/coredns",
                "protocol": "UDP",
                "port": 53,
                "topology": tutorial["topology"],
            },
        ).json()
        # The fleet's own endpoints are not in the demo, and its stored policies take no part.
        unknown = client.post(
            "/v1/policies/explain",
            json={
                "client": "shop/web",
                "server": "shop/batch",
                "port": 80,
                "topology": tutorial["topology"],
            },
        ).json()
    assert (start["flows"]["passed"], start["flows"]["failed"]) == (2, 1)
    assert (solved["flows"]["passed"], solved["flows"]["failed"]) == (3, 0)
    assert start["replaces"] == []
    assert start["matrix"]["fleet"] == 5
    assert explained["allowed"] is False
    assert explained["allowingRules"] == []
    assert unknown["allowed"] is True
    assert unknown["isolatingPolicies"] == []


def test_a_given_topology_is_bounded(api: services.Api, fleet: dict[str, Any]) -> None:
    pods = {f"a/p{i}": {"ip": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"} for i in range(1001)}
    with api.client() as client:
        refused = client.post(
            "/v1/policies/simulate",
            json={"text": DRAFT, "topology": {"namespaces": {"a": {}}, "pods": pods}},
        )
        inconsistent = client.post(
            "/v1/policies/simulate",
            json={
                "text": DRAFT,
                "topology": {"namespaces": {}, "pods": {"a/p": {"ip": "10.0.0.1"}}},
            },
        )
    assert refused.status_code == 422
    assert "at most 1000 endpoints" in refused.text
    assert inconsistent.status_code == 422
    assert "namespace 'a' is not in namespaces" in inconsistent.text


def test_templates_are_written_for_the_namespace_asked(
    api: services.Api, fleet: dict[str, Any]
) -> None:
    with api.client(fleet["proposer"]) as client:
        found = client.get(
            "/v1/policies/templates", params={"namespace": "shop", "peerNamespace": "batch"}
        )
        bad = client.get("/v1/policies/templates", params={"namespace": "Not/A"})
    assert found.status_code == 200, found.text
    assert [item["id"] for item in found.json()] == [
        "default-deny-ingress",
        "default-deny-egress",
        "same-namespace",
        "from-namespace",
        "internet",
    ]
    assert all("namespace: shop" in item["text"] for item in found.json())
    assert "kubernetes.io/metadata.name: batch" in found.json()[3]["text"]
    assert bad.status_code == 422
