"""Node identity: the bootstrap token registers new names only; a registered node comes
back with its node key (or its own token) or through an admin; a deleted one stays out
until an admin lifts its tombstone; and labels an admin set survive re-registration."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from bpfleet_core.features import FeatureReport
from tests import services

pytestmark = pytest.mark.services


def register(
    api: services.Api,
    token: str,
    name: str,
    features: FeatureReport,
    labels: dict[str, str] | None = None,
    node_key: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {
        "node": name,
        "labels": labels or {},
        "features": features.model_copy(update={"node": name}).model_dump(mode="json"),
    }
    if node_key is not None:
        body["nodeKey"] = node_key
    with api.client(token) as client:
        return client.post("/v1/agent/register", json=body)


def heartbeat(api: services.Api, token: str) -> int:
    with api.client(token) as client:
        return client.post("/v1/agent/heartbeat", json={"revision": 0}).status_code


def node(api: services.Api, name: str) -> dict[str, Any]:
    with api.client() as client:
        response = client.get(f"/v1/nodes/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture
def name() -> str:
    return f"ident-{uuid.uuid4().hex[:8]}"


def test_the_bootstrap_token_cannot_take_over_a_registered_node(
    api: services.Api, recorded_features: FeatureReport, name: str
) -> None:
    first = register(api, api.bootstrap_token, name, recorded_features, {"zone": "a"})
    assert first.status_code == 200, first.text
    token, key = first.json()["token"], first.json()["nodeKey"]
    assert key
    assert key != token

    taken = register(api, api.bootstrap_token, name, recorded_features, {"zone": "evil"})
    assert taken.status_code == 409
    assert f"node {name} is registered already" in taken.json()["detail"]
    assert "no node key" in taken.json()["detail"]
    wrong = register(api, api.bootstrap_token, name, recorded_features, node_key="bpf_" + "x" * 40)
    assert wrong.status_code == 409
    assert "a node key that is not its" in wrong.json()["detail"]
    # Nothing of the refused attempts stuck: labels, credential.
    assert node(api, name)["labels"] == {"zone": "a"}
    assert heartbeat(api, token) == 204


def test_a_node_registers_again_with_its_key_or_its_token(
    api: services.Api, recorded_features: FeatureReport, name: str
) -> None:
    first = register(api, api.bootstrap_token, name, recorded_features).json()
    again = register(api, api.bootstrap_token, name, recorded_features, node_key=first["nodeKey"])
    assert again.status_code == 200, again.text
    assert again.json()["nodeKey"] == first["nodeKey"]  # the key it holds stays its key
    assert again.json()["token"] != first["token"]
    assert heartbeat(api, first["token"]) == 401  # the old credential is revoked
    assert heartbeat(api, again.json()["token"]) == 204

    # Its own token proves it too (a node registered before node keys has only that).
    itself = register(api, again.json()["token"], name, recorded_features)
    assert itself.status_code == 200, itself.text
    other = f"ident-{uuid.uuid4().hex[:8]}"
    assert register(api, api.bootstrap_token, other, recorded_features).status_code == 200
    stolen = register(api, itself.json()["token"], other, recorded_features)
    assert stolen.status_code == 403
    assert f"belongs to node {name}, not {other}" in stolen.json()["detail"]


def test_an_admin_may_register_any_node(
    api: services.Api, recorded_features: FeatureReport, name: str
) -> None:
    first = register(api, api.bootstrap_token, name, recorded_features).json()
    replaced = register(api, api.admin_token, name, recorded_features)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["nodeKey"] != first["nodeKey"]
    # The old key no longer proves anything.
    old = register(api, api.bootstrap_token, name, recorded_features, node_key=first["nodeKey"])
    assert old.status_code == 409


def test_a_deleted_node_stays_out_until_an_admin_lifts_its_tombstone(
    api: services.Api, recorded_features: FeatureReport, name: str
) -> None:
    first = register(api, api.bootstrap_token, name, recorded_features).json()
    with api.client() as admin:
        assert admin.delete(f"/v1/nodes/{name}").status_code == 204
        assert name in [row["name"] for row in admin.get("/v1/node-tombstones").json()]
    assert heartbeat(api, first["token"]) == 401
    for attempt in (
        register(api, api.bootstrap_token, name, recorded_features),
        register(api, api.bootstrap_token, name, recorded_features, node_key=first["nodeKey"]),
    ):
        assert attempt.status_code == 403
        assert f"node {name} was deleted by an admin" in attempt.json()["detail"]
        assert f"DELETE /v1/node-tombstones/{name}" in attempt.json()["detail"]
    with api.client() as admin:
        assert admin.get(f"/v1/nodes/{name}").status_code == 404
        assert admin.delete(f"/v1/node-tombstones/{name}").status_code == 204
        assert admin.delete(f"/v1/node-tombstones/{name}").status_code == 404
    back = register(api, api.bootstrap_token, name, recorded_features)
    assert back.status_code == 200, back.text


def test_labels_an_admin_set_survive_re_registration(
    api: services.Api, recorded_features: FeatureReport, name: str
) -> None:
    first = register(api, api.bootstrap_token, name, recorded_features, {"role": "edge"}).json()
    with api.client() as admin:
        response = admin.put(
            f"/v1/nodes/{name}/labels", json={"labels": {"zone": "eu-1a", "role": "core"}}
        )
        assert response.status_code == 200, response.text
    shown = node(api, name)
    assert shown["adminLabels"] == {"zone": "eu-1a", "role": "core"}
    assert shown["agentLabels"] == {"role": "edge"}
    assert shown["labels"] == {"zone": "eu-1a", "role": "core"}  # the admin's win

    again = register(
        api,
        api.bootstrap_token,
        name,
        recorded_features,
        {"role": "edge", "disk": "ssd"},
        node_key=first["nodeKey"],
    )
    assert again.status_code == 200, again.text
    shown = node(api, name)
    assert shown["labels"] == {"zone": "eu-1a", "role": "core", "disk": "ssd"}
    assert shown["agentLabels"] == {"role": "edge", "disk": "ssd"}
