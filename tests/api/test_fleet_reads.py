"""Reads the CLI relies on: the fleet topology (``GET /v1/topology``, every page), and the verifier's
excerpt beside a program's state on each node."""

from __future__ import annotations

import uuid

import pytest

from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import ProgramState
from tests import services
from tests.api.conftest import upload
from tests.api.test_fleet_flow import spec
from tests.api.test_policies import NOW, Node, endpoint
from tests.conftest import SignedCatalog

pytestmark = pytest.mark.services


@pytest.fixture
def namespace() -> str:
    return f"ns-{uuid.uuid4().hex[:8]}"


def test_topology_is_what_the_nodes_declared(
    api: services.Api, recorded_features: FeatureReport, namespace: str
) -> None:
    edge = Node(api, recorded_features, {"tier": "edge"})
    core = Node(api, recorded_features, {"tier": "core"})
    assert edge.declare(endpoint(namespace, "db", "10.99.1.2", app="db")).status_code == 204
    assert core.declare(endpoint(namespace, "web", "10.99.1.3", app="web")).status_code == 204
    from bpfleet_cli.client import FleetClient

    # The CLI's client follows every page (one endpoint a page here) into one topology,
    # the namespace's labels an admin's.
    with api.client() as admin:
        labels = admin.put(f"/v1/namespaces/{namespace}", json={"labels": {"team": "a"}})
        assert labels.status_code == 200, labels.text
    with FleetClient(api.url, api.admin_token) as client:
        topology = client.topology(page_size=1)
    db, web = topology.pods[f"{namespace}/db"], topology.pods[f"{namespace}/web"]
    assert (db.node, str(db.ip), db.labels) == (edge.name, "10.99.1.2", {"app": "db"})
    assert [(port.name, port.port, port.protocol) for port in db.ports] == [("http", 8080, "TCP")]
    assert web.node == core.name
    assert topology.namespaces[namespace] == {
        "kubernetes.io/metadata.name": namespace,
        "team": "a",
    }
    assert topology.nodes[edge.name] == {"tier": "edge"}
    # Readers may read it; a node's credential and no credential may not.
    with api.client() as admin:
        viewer = admin.post("/v1/tokens", json={"name": "v", "role": "viewer"}).json()["token"]
    with api.client(viewer) as client:
        assert client.get("/v1/topology").status_code == 200
    with api.client(edge.token) as client:
        assert client.get("/v1/topology").status_code == 403
    with api.client("") as client:
        client.headers.pop("Authorization")
        assert client.get("/v1/topology").status_code == 401


def test_a_load_failure_carries_the_verifiers_excerpt(
    api: services.Api, signed_catalog: SignedCatalog, recorded_features: FeatureReport
) -> None:
    artifact = upload(api, signed_catalog, "execsnoop")
    node = Node(api, recorded_features, {"verifier": "yes"})
    program = f"v-{node.name}"
    body = spec(artifact)
    body["nodeSelector"] = {"matchLabels": {"verifier": "yes"}}
    api.start_worker()
    with api.client() as client:
        assert client.put(f"/v1/programs/{program}", json=body).status_code == 200
    for _ in range(20):
        found = node.poll(wait=5)
        if found and any(item["name"] == program for item in found["programs"]):
            break
    else:
        raise AssertionError("the program never reached the node")
    log = "0: (b7) r0 = 0\nR1 invalid mem access 'scalar'\nprocessed 2 insns"
    report = {
        "node": node.name,
        "revision": node.revision,
        "programs": [
            {
                "name": program,
                "state": ProgramState.LOAD_FAILED.value,
                "reason": "VerifierRejected",
                "message": "the verifier refused handle_exec",
                "verifierLog": log,
                "updatedAt": NOW,
            }
        ],
        "reportedAt": NOW,
    }
    with api.client(node.token) as client:
        assert client.post("/v1/agent/status", json=report).status_code == 204
    with api.client() as client:
        rows = client.get(f"/v1/programs/{program}/nodes").json()
        assert [(row["state"], row["verifierLog"]) for row in rows] == [("LoadFailed", log)]
        detail = client.get(f"/v1/nodes/{node.name}").json()
        assert [row["verifierLog"] for row in detail["programs"]] == [log]
