"""Desired state through the API: upload, register, roll out, report — via the protocol."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import ProgramState
from tests import services
from tests.api.conftest import upload
from tests.conftest import SignedCatalog

pytestmark = pytest.mark.services


class ProtocolClient:
    """A node speaking the agent protocol over HTTP (what the benchmark's simulated
    agents are too): registers, long-polls, reports."""

    def __init__(
        self,
        api: services.Api,
        name: str,
        labels: dict[str, str],
        features: FeatureReport,
        node_key: str | None = None,
    ) -> None:
        self.api, self.name = api, name
        body = {
            "node": name,
            "labels": labels,
            "features": features.model_copy(update={"node": name}).model_dump(mode="json"),
        }
        if node_key is not None:  # registering a taken name again
            body["nodeKey"] = node_key
        with api.client(api.bootstrap_token) as client:
            response = client.post("/v1/agent/register", json=body)
        assert response.status_code == 200, response.text
        self.token = response.json()["token"]
        self.node_key = response.json()["nodeKey"]
        self.revision = 0

    def poll(self, wait: float = 10) -> dict[str, Any] | None:
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

    def report(self, states: dict[str, ProgramState], reason: str = "") -> None:
        programs = [
            {
                "name": name,
                "state": state.value,
                "reason": reason,
                "message": "",
                "updatedAt": "2026-01-01T00:00:00Z",
            }
            for name, state in states.items()
        ]
        body = {
            "node": self.name,
            "revision": self.revision,
            "programs": programs,
            "reportedAt": "2026-01-01T00:00:00Z",
        }
        with self.api.client(self.token) as client:
            response = client.post("/v1/agent/status", json=body)
        assert response.status_code == 204, response.text


def spec(artifact: dict[str, Any], **rollout: Any) -> dict[str, Any]:
    return {
        "artifact": {"name": artifact["name"], "version": artifact["version"]},
        "attach": [{"entryPoint": "handle_exec", "type": "tracepoint"}],
        "rollout": rollout,
    }


def wait_for(
    client: httpx.Client, path: str, predicate: Any, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        document = client.get(path).json()
        if predicate(document):
            return dict(document)
        time.sleep(0.1)
    raise AssertionError(f"{path} never satisfied the condition; last: {document}")


def test_rollout_through_the_protocol(
    api: services.Api, signed_catalog: SignedCatalog, recorded_features: FeatureReport
) -> None:
    worker = api.start_worker()
    artifact = upload(api, signed_catalog, "execsnoop")
    group = uuid.uuid4().hex[:6]
    nodes = [
        ProtocolClient(api, f"flow-{group}-{i}", {"group": group}, recorded_features)
        for i in range(3)
    ]
    name = f"execs-{group}"
    document = {
        **spec(artifact, steps=["1", "100%"]),
        "nodeSelector": {"matchLabels": {"group": group}},
    }
    with api.client() as client:
        response = client.put(f"/v1/programs/{name}", json=document)
        assert response.status_code == 200, response.text
        assert response.json()["rollout"]["phase"] == "Progressing"

        by_name = {node.name: node for node in nodes}
        step_one = wait_for(
            client, f"/v1/programs/{name}", lambda p: len(p["rollout"]["updatedNodes"]) == 1
        )
        first = by_name[step_one["rollout"]["updatedNodes"][0]]
        assert first.poll(wait=5) is not None
        others = [node for node in nodes if node is not first]
        assert all(node.poll(wait=0) is None for node in others)  # not yet: step 1 is one node
        first.report({name: ProgramState.ATTACHED})
        wait_for(client, f"/v1/programs/{name}", lambda p: len(p["rollout"]["updatedNodes"]) == 3)
        for node in others:
            assignments = node.poll(wait=5)
            assert assignments is not None
            assert assignments["programs"][0]["spec"]["artifact"]["digest"] == artifact["digest"]
            node.report({name: ProgramState.ATTACHED})
        program = wait_for(
            client, f"/v1/programs/{name}", lambda p: p["rollout"]["phase"] == "Succeeded"
        )
        assert program["summary"] == {
            "desired": 3,
            "attached": 3,
            "failed": 0,
            "incompatible": 0,
            "pending": 0,
        }

        # The same spec again is a no-op; a long-poll then times out with 204.
        assert client.put(f"/v1/programs/{name}", json=document).json()["generation"] == 1
        assert nodes[0].poll(wait=0.5) is None

        # Kill switch: every node loses the program at once.
        assert client.post(f"/v1/programs/{name}/kill").status_code == 200
        for node in nodes:
            assert node.poll(wait=5) == {
                "node": node.name,
                "revision": node.revision,
                "programs": [],
            }
    assert worker.poll() is None


def test_pause_resume_and_abort(
    api: services.Api, signed_catalog: SignedCatalog, recorded_features: FeatureReport
) -> None:
    api.start_worker()
    artifact = upload(api, signed_catalog, "execsnoop")
    group = uuid.uuid4().hex[:6]
    nodes = [
        ProtocolClient(api, f"ctl-{group}-{i}", {"group": group}, recorded_features)
        for i in range(2)
    ]
    name = f"ctl-{group}"
    document = {
        **spec(artifact, steps=["1", "100%"], bakeSeconds=600),
        "nodeSelector": {"matchLabels": {"group": group}},
    }
    with api.client() as client:
        rollout_id = client.put(f"/v1/programs/{name}", json=document).json()["rollout"]["id"]
        step_one = wait_for(
            client, f"/v1/programs/{name}", lambda p: len(p["rollout"]["updatedNodes"]) == 1
        )
        first = next(n for n in nodes if n.name == step_one["rollout"]["updatedNodes"][0])
        assert first.poll(wait=5) is not None
        first.report({name: ProgramState.ATTACHED})
        wait_for(client, f"/v1/programs/{name}", lambda p: p["rollout"]["phase"] == "Baking")

        assert client.post(f"/v1/rollouts/{rollout_id}/pause").json()["phase"] == "Paused"
        assert client.post(f"/v1/rollouts/{rollout_id}/resume").json()["phase"] == "Progressing"
        wait_for(client, f"/v1/programs/{name}", lambda p: p["rollout"]["phase"] == "Baking")

        aborted = client.post(f"/v1/rollouts/{rollout_id}/abort")
        assert aborted.json()["phase"] == "Aborted"
        # A new program has no previous version: aborting takes it off the updated node.
        assert first.poll(wait=5) == {
            "node": first.name,
            "revision": first.revision,
            "programs": [],
        }
        again = client.post(f"/v1/rollouts/{rollout_id}/resume")
        assert again.status_code == 409
        assert "only active rollouts" in again.json()["detail"]


def test_preflight_names_what_each_node_lacks(
    api: services.Api, signed_catalog: SignedCatalog, recorded_features: FeatureReport
) -> None:
    artifact = upload(api, signed_catalog, "execsnoop")
    group = uuid.uuid4().hex[:6]
    old_kernel = recorded_features.model_copy(
        update={"map_types": {**recorded_features.map_types, "ringbuf": False}}
    )
    ProtocolClient(api, f"pre-{group}-new", {"group": group}, recorded_features)
    ProtocolClient(api, f"pre-{group}-old", {"group": group}, old_kernel)
    selector = {"matchLabels": {"group": group}}
    with api.client() as client:
        deployed = client.post(
            "/v1/preflight", json={"spec": {**spec(artifact), "nodeSelector": selector}}
        ).json()
        manifest = json.loads(signed_catalog.files("tcplife").manifest.read_text())
        undeployed = client.post(
            "/v1/preflight", json={"manifest": manifest, "nodeSelector": selector}
        ).json()
        missing_artifact = client.post(
            "/v1/preflight",
            json={"spec": {**spec(artifact), "artifact": {"name": "nope", "version": "1.0.0"}}},
        )
    for result in (deployed, undeployed):
        assert result["compatible"] == 1
        assert result["incompatible"] == 1
        old = next(n for n in result["nodes"] if n["node"].endswith("-old"))
        assert old["missing"] == ["kernel lacks map type ringbuf"]
    assert missing_artifact.status_code == 404
    assert "nope@1.0.0 has not been uploaded" in missing_artifact.json()["detail"]


def test_garbage_collection_keeps_what_programs_use(
    api: services.Api, signed_catalog: SignedCatalog
) -> None:
    used = upload(api, signed_catalog, "syscount")
    unused = upload(api, signed_catalog, "cgroup_counter")
    program = {
        "artifact": {"name": "syscount", "version": "1.0.0"},
        "attach": [{"entryPoint": "count_sys_enter", "type": "raw_tracepoint"}],
    }
    with api.client() as client:
        assert (
            client.put(f"/v1/programs/gc-{uuid.uuid4().hex[:6]}", json=program).status_code == 200
        )
        removed = client.post("/v1/artifacts/gc").json()["removed"]
        assert unused["digest"] in removed
        assert used["digest"] not in removed
        assert client.get(f"/v1/artifacts/{unused['digest']}").status_code == 404
        assert (
            client.get(f"/v1/artifacts/{used['digest']}/object").content
            == signed_catalog.files("syscount").object.read_bytes()
        )
        metrics = client.get("/metrics").text
        assert 'bpfleet_nodes{readiness="Ready"}' in metrics
        assert "bpfleet_rollouts" in metrics
