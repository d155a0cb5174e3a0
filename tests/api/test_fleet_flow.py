"""Desired state through the API: upload, register, roll out, report — via the protocol."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import ProgramState
from tests import services
from tests.api.conftest import upload
from tests.conftest import SignedCatalog


class ProtocolClient:
    """A node speaking the agent protocol over HTTP (what the benchmark's simulated
    agents are too): registers, long-polls, reports."""

    def __init__(
        self, api: services.Api, name: str, labels: dict[str, str], features: FeatureReport
    ) -> None:
        self.api, self.name = api, name
        with api.client(api.bootstrap_token) as client:
            response = client.post(
                "/v1/agent/register",
                json={
                    "node": name,
                    "labels": labels,
                    "features": features.model_copy(update={"node": name}).model_dump(mode="json"),
                },
            )
        assert response.status_code == 200, response.text
        self.token = response.json()["token"]
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
