"""Every role against every endpoint, and agents confined to their own node."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml

from bpfleet_core.features import FeatureReport
from tests import services
from tests.api.conftest import upload
from tests.conftest import SignedCatalog

pytestmark = pytest.mark.services

ROLES = ("admin", "ci", "viewer", "proposer", "bootstrap", "agent")
READ = {"admin", "ci", "viewer", "proposer"}
PROPOSE = {"admin", "proposer"}  # Git through the operator; never desired state


@pytest.fixture(scope="module")
def tokens(
    api: services.Api, signed_catalog: SignedCatalog, recorded_features: FeatureReport
) -> dict[str, Any]:
    """A token per role, a registered node for the agent, an uploaded artifact."""
    minted: dict[str, Any] = {"admin": api.admin_token, "bootstrap": api.bootstrap_token}
    with api.client() as client:
        for role in ("ci", "viewer", "proposer"):
            minted[role] = client.post(
                "/v1/tokens", json={"name": f"{role}-{uuid.uuid4().hex[:4]}", "role": role}
            ).json()["token"]
    nodes = []
    for _ in range(2):
        name = f"roles-{uuid.uuid4().hex[:6]}"
        with api.client(api.bootstrap_token) as client:
            registered = client.post(
                "/v1/agent/register",
                json={
                    "node": name,
                    "features": recorded_features.model_copy(update={"node": name}).model_dump(
                        mode="json"
                    ),
                },
            ).json()
        nodes.append((name, registered["token"]))
    minted["agent"] = nodes[0][1]
    minted["node"], minted["other_node"] = nodes[0][0], nodes[1][0]
    minted["other_agent"] = nodes[1][1]
    minted["artifact"] = upload(api, signed_catalog, "syscount")
    newcomer = f"roles-new-{uuid.uuid4().hex[:6]}"
    minted["registration"] = {
        "node": newcomer,
        "features": recorded_features.model_copy(update={"node": newcomer}).model_dump(mode="json"),
    }
    return minted


def endpoints(tokens: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], set[str]]]:
    node, digest = tokens["node"], tokens["artifact"]["digest"]
    spec = {
        "artifact": {"name": "syscount", "version": "1.0.0"},
        "attach": [{"entryPoint": "count_sys_enter", "type": "raw_tracepoint"}],
    }
    report = {"node": node, "revision": 0, "programs": [], "reportedAt": "2026-01-01T00:00:00Z"}
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": "roles", "name": "role-check"},
        "spec": {"podSelector": {}},
    }
    draft = yaml.safe_dump(policy)
    proposal = {
        "source": {"namespace": "roles", "name": "nowhere"},
        "files": [{"path": "p.yaml", "content": draft}],
        "message": "role check",
    }
    return [
        ("GET", "/v1/nodes", {}, READ),
        ("GET", f"/v1/nodes/{node}", {}, READ),
        ("PUT", f"/v1/nodes/{node}/labels", {"json": {"labels": {"zone": "a"}}}, {"admin"}),
        ("PUT", f"/v1/nodes/{node}/pod-cidrs", {"json": {"podCIDRs": ["10.9.0.0/24"]}}, {"admin"}),
        ("PUT", f"/v1/nodes/{node}/workloads", {"json": {"workloads": []}}, {"admin"}),
        ("GET", "/v1/node-tombstones", {}, READ),
        ("DELETE", "/v1/node-tombstones/nobody", {}, {"admin"}),
        ("GET", "/v1/namespaces", {}, READ),
        ("PUT", "/v1/namespaces/roles", {"json": {"labels": {"team": "a"}}}, {"admin"}),
        ("DELETE", "/v1/namespaces/roles", {}, {"admin"}),
        ("GET", "/openapi.json", {}, READ),
        ("GET", "/docs", {}, READ),
        ("GET", "/redoc", {}, READ),
        ("GET", "/v1/artifacts", {}, READ),
        ("GET", f"/v1/artifacts/{digest}", {}, READ),
        ("GET", f"/v1/artifacts/{digest}/object", {}, READ | {"agent"}),
        (
            "POST",
            "/v1/artifacts",
            {"files": {"object": b"x", "manifest": b"y", "signature": b"z"}},
            {"admin"},
        ),
        ("POST", "/v1/artifacts/gc", {}, {"admin"}),
        ("GET", "/v1/programs", {}, READ),
        ("PUT", "/v1/programs/role-check", {"json": spec}, {"admin"}),
        ("GET", "/v1/programs/role-check", {}, READ),
        ("GET", "/v1/programs/role-check/nodes", {}, READ),
        ("GET", "/v1/programs/role-check/events", {}, READ),
        ("POST", "/v1/programs/role-check/kill", {}, {"admin"}),
        ("GET", "/v1/rollouts", {}, READ),
        ("POST", "/v1/rollouts/999999/pause", {}, {"admin"}),
        ("POST", "/v1/validate", {"json": {"spec": spec}}, {"admin", "ci"}),
        ("POST", "/v1/preflight", {"json": {"spec": spec}}, {"admin", "ci"}),
        ("POST", "/v1/tokens", {"json": {"name": "t", "role": "viewer"}}, {"admin"}),
        ("GET", "/v1/tokens", {}, {"admin"}),
        ("DELETE", "/v1/tokens/999999", {}, {"admin"}),
        # A new name: an admin registers it; the bootstrap token then finds it taken
        # (409, not a refusal of the role); an agent token registers only its own node.
        ("POST", "/v1/agent/register", {"json": tokens["registration"]}, {"admin", "bootstrap"}),
        ("GET", "/metrics", {}, READ),
        ("GET", "/v1/agent/assignments", {"params": {"wait": 0}}, {"agent"}),
        ("POST", "/v1/agent/status", {"json": report}, {"agent"}),
        ("POST", "/v1/agent/heartbeat", {"json": {"revision": 0}}, {"agent"}),
        ("PUT", "/v1/agent/endpoints", {"json": {"endpoints": []}}, {"agent"}),
        ("GET", "/v1/policies", {}, READ),
        ("PUT", "/v1/policies/roles/role-check", {"json": policy}, {"admin"}),
        ("GET", "/v1/policies/roles/role-check", {}, READ),
        ("GET", "/v1/policies/roles/role-check/nodes", {}, READ),
        ("GET", "/v1/policies/roles/role-check/yaml", {}, READ),
        ("POST", "/v1/policies/validate", {"json": {"text": draft}}, READ),
        ("POST", "/v1/policies/simulate", {"json": {"text": draft}}, READ),
        (
            "POST",
            "/v1/policies/explain",
            {"json": {"text": draft, "client": "10.9.0.1", "server": "10.9.0.2", "port": 80}},
            READ,
        ),
        ("GET", "/v1/topology", {}, READ),
        ("POST", "/v1/topology/match", {"json": {"namespace": "roles"}}, READ),
        ("GET", "/v1/topology/labels", {}, READ),
        ("DELETE", "/v1/policies/roles/role-check", {}, {"admin"}),
        ("GET", "/v1/programs/role-check/progress", {}, READ),
        ("GET", "/v1/overview", {}, READ),
        ("GET", "/v1/kernels", {}, READ),
        ("GET", "/v1/kernels/compare", {"params": {"a": node, "b": node}}, READ),
        ("GET", f"/v1/nodes/{node}/preflight", {}, READ),
        ("PUT", "/v1/gitsources/roles/role-check/status", {"json": {"status": {}}}, {"admin"}),
        ("GET", "/v1/gitsources", {}, READ),
        ("GET", "/v1/gitsources/roles/role-check", {}, READ),
        ("POST", "/v1/gitsources/roles/role-check/reconcile", {}, {"admin"}),
        ("GET", "/v1/gitsources/reconcile-requests", {}, {"admin"}),
        ("DELETE", "/v1/gitsources/roles/role-check", {}, {"admin"}),
        ("POST", "/v1/proposals", {"json": proposal}, PROPOSE),
        ("GET", "/v1/proposals", {}, READ),
        ("GET", "/v1/proposals/999999", {}, READ),
        ("POST", "/v1/proposals/999999/merge", {}, PROPOSE),
        ("PUT", "/v1/proposals/999999/status", {"json": {"state": "Pushed"}}, {"admin"}),
        ("GET", "/v1/operator/proposals", {}, {"admin"}),
        ("POST", "/v1/drafts", {"json": {"text": draft}}, PROPOSE),
        ("GET", "/v1/drafts/no-such-draft", {}, READ),
        ("DELETE", "/v1/programs/role-check", {}, {"admin"}),
    ]


def test_role_matrix(api: services.Api, tokens: dict[str, Any]) -> None:
    failures = []
    for method, path, arguments, allowed in endpoints(tokens):
        for role in ROLES:
            with api.client(tokens[role]) as client:
                status = client.request(method, path, **arguments).status_code
            denied = status in (401, 403)
            if (role in allowed) == denied or status >= 500:
                failures.append(f"{role} {method} {path} -> {status}")
        with api.client("not-a-token") as client:
            if client.request(method, path, **arguments).status_code != 401:
                failures.append(f"unknown token {method} {path} was not refused")
    assert failures == []


def test_only_health_sign_in_and_the_dashboards_files_are_open(api: services.Api) -> None:
    import httpx

    assert httpx.get(f"{api.url}/healthz").status_code == 200
    # The dashboard's page and scripts load without a token (they hold no fleet data)...
    for path in ("/", "/ui", "/ui/", "/ui/nodes"):
        assert httpx.get(f"{api.url}{path}").status_code != 401, path
    # ...but only to be read.
    assert httpx.post(f"{api.url}/ui/x", content=b"x" * 100).status_code == 401
    for path in (
        "/v1/nodes",
        "/v1/programs",
        "/v1/policies",
        "/v1/tokens",
        "/v1/namespaces",
        "/metrics",
        "/v1/agent/assignments",
        "/openapi.json",
        "/docs",
        "/redoc",
    ):
        assert httpx.get(f"{api.url}{path}").status_code == 401, path


def test_an_agent_cannot_touch_another_node(api: services.Api, tokens: dict[str, Any]) -> None:
    other = tokens["other_node"]
    with api.client(tokens["agent"]) as client:
        spoofed = {
            "node": other,
            "revision": 0,
            "programs": [],
            "reportedAt": "2026-01-01T00:00:00Z",
        }
        response = client.post("/v1/agent/status", json=spoofed)
        assert response.status_code == 403
        assert f"not {other}" in response.json()["detail"]
        assert client.get(f"/v1/nodes/{other}").status_code == 403
        features = client.get("/v1/agent/assignments", params={"wait": 0})
        assert features.status_code in (200, 204)
        if features.status_code == 200:
            assert features.json()["node"] == tokens["node"]
