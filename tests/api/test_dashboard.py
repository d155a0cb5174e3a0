"""What the dashboard reads: node pages filtered, sorted and paged by the server; the
overview with sync in two stages; GitSources as operators report them, with "reconcile
now" reaching a long-polling operator; kernels compared; conditional GETs."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import ProgramState
from tests import services
from tests.api.conftest import upload
from tests.api.test_fleet_flow import ProtocolClient, spec, wait_for
from tests.conftest import SignedCatalog

pytestmark = pytest.mark.services


def group() -> str:
    return uuid.uuid4().hex[:8]


def without_ringbuf(report: FeatureReport) -> FeatureReport:
    return report.model_copy(update={"map_types": {**report.map_types, "ringbuf": False}})


# ------------------------------------------------------------------------------ nodes


def test_nodes_are_filtered_sorted_and_paged_by_the_server(
    api: services.Api, recorded_features: FeatureReport
) -> None:
    run = group()
    tiers = ["edge", "core", "edge", "edge", "core"]
    for index, tier in enumerate(tiers):
        ProtocolClient(api, f"page-{run}-{index}", {"run": run, "tier": tier}, recorded_features)
    with api.client() as client:
        edge = client.get(
            "/v1/nodes", params={"selector": f"run={run},tier=edge", "limit": 2, "sort": "-name"}
        )
        assert edge.status_code == 200, edge.text
        assert edge.headers["X-Total-Count"] == "3"
        assert [n["name"] for n in edge.json()] == [f"page-{run}-3", f"page-{run}-2"]
        rest = client.get(
            "/v1/nodes",
            params={"selector": f"run={run},tier=edge", "limit": 2, "offset": 2, "sort": "-name"},
        )
        assert [n["name"] for n in rest.json()] == [f"page-{run}-0"]

        notin = client.get("/v1/nodes", params={"selector": f"run={run},tier notin (edge)"})
        assert [n["name"] for n in notin.json()] == [f"page-{run}-1", f"page-{run}-4"]
        ready = client.get("/v1/nodes", params={"selector": f"run={run}", "readiness": "Ready"})
        assert ready.headers["X-Total-Count"] == "5"
        unknown = client.get("/v1/nodes", params={"selector": f"run={run}", "readiness": "Unknown"})
        assert unknown.json() == []
        beyond = client.get("/v1/nodes", params={"selector": f"run={run}", "offset": 50})
        assert beyond.json() == []
        assert beyond.headers["X-Total-Count"] == "5"

        # Without paging parameters the list is whole, as every existing caller expects.
        everything = client.get("/v1/nodes").json()
        assert {f"page-{run}-{i}" for i in range(5)} <= {n["name"] for n in everything}

        bad = client.get("/v1/nodes", params={"selector": "tier=edge,=x"})
        assert bad.status_code == 422
        assert "cannot parse from column 11" in bad.json()["detail"]
        assert client.get("/v1/nodes", params={"sort": "labels"}).status_code == 422
        assert client.get("/v1/nodes", params={"limit": 0}).status_code == 422
        assert client.get("/v1/nodes", params={"limit": 501}).status_code == 422
        assert client.get("/v1/nodes", params={"offset": -1}).status_code == 422


# --------------------------------------------------------------- GitSources, overview


def source_status(
    revision: str,
    *,
    applied: str,
    result: str,
    inventory: list[dict[str, Any]],
    errors: list[dict[str, Any]] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ready = "True" if result == "Applied" else "False"
    reason = "Succeeded" if result == "Applied" else "ValidationFailed"
    entry = {"revision": revision, "time": now, "result": result, "message": f"{result} it"}
    return {
        "conditions": [
            {
                "type": "Ready",
                "status": ready,
                "reason": reason,
                "message": f"{result} {revision}",
                "lastTransitionTime": now,
            }
        ],
        "lastFetchedRevision": revision,
        "lastAttemptedRevision": revision,
        "lastAppliedRevision": applied,
        "errors": errors or [],
        "history": [entry, *(history or [])],
        "inventory": inventory,
    }


SPEC = {"url": "file:///srv/fleet.git", "ref": {"branch": "main"}, "path": ".", "interval": "1m"}


def test_gitsource_reports_overview_and_origins(
    api: services.Api, signed_catalog: SignedCatalog, recorded_features: FeatureReport
) -> None:
    api.start_worker()
    artifact = upload(api, signed_catalog, "execsnoop")
    run = group()
    nodes = [ProtocolClient(api, f"ov-{run}-{i}", {"run": run}, recorded_features) for i in (0, 1)]
    name, source = f"execs-{run}", f"src-{run}"
    first, second = "main@sha1:" + "a" * 40, "main@sha1:" + "b" * 40
    with api.client() as client:
        document = {
            **spec(artifact, steps=["1", "100%"]),
            "nodeSelector": {"matchLabels": {"run": run}},
        }
        assert client.put(f"/v1/programs/{name}", json=document).status_code == 200
        inventory = [{"kind": "BpfProgram", "name": name}]
        applied = source_status(first, applied=first, result="Applied", inventory=inventory)
        response = client.put(
            f"/v1/gitsources/default/{source}/status", json={"spec": SPEC, "status": applied}
        )
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "Ready"
        assert response.json()["shortRevision"] == "aaaaaaa"

        error = {"file": "programs/broken.yaml", "line": 9, "field": "spec.x", "message": "bad"}
        rejected = source_status(
            second,
            applied=first,
            result="Rejected",
            inventory=inventory,
            errors=[error],
            history=applied["history"],
        )
        client.put(
            f"/v1/gitsources/default/{source}/status", json={"spec": SPEC, "status": rejected}
        )
        detail = client.get(f"/v1/gitsources/default/{source}").json()
        assert detail["state"] == "Failed"
        assert detail["lastAppliedRevision"] == first
        assert [(h["result"], h["shortRevision"]) for h in detail["history"]] == [
            ("Rejected", "bbbbbbb"),
            ("Applied", "aaaaaaa"),
        ]
        assert detail["history"][0]["errors"] == [error]
        assert detail["history"][1]["errors"] == []
        assert detail["appliedAt"] is not None
        # A later pass with other errors keeps each rejection's own problems.
        fixed = source_status(
            second,
            applied=second,
            result="Applied",
            inventory=inventory,
            history=rejected["history"],
        )
        client.put(f"/v1/gitsources/default/{source}/status", json={"spec": SPEC, "status": fixed})
        detail = client.get(f"/v1/gitsources/default/{source}").json()
        assert [h["result"] for h in detail["history"]] == ["Applied", "Rejected", "Applied"]
        assert detail["history"][1]["errors"] == [error]

        # Where the program came from, and its nodes' progress: fleet -> nodes.
        program = client.get(f"/v1/programs/{name}").json()
        assert program["origin"] == {
            "namespace": "default",
            "name": source,
            "revision": second,
            "shortRevision": "bbbbbbb",
        }
        by_name = {node.name: node for node in nodes}
        step = wait_for(client, f"/v1/programs/{name}", lambda p: p["rollout"]["updatedNodes"])
        progress = client.get(f"/v1/programs/{name}/progress").json()
        assert [(s["label"], s["target"]) for s in progress["steps"]] == [("1", 1), ("100%", 2)]
        assert progress["steps"][0]["state"] == "current"
        assert (progress["failures"], progress["failureBudget"]) == (0, 0)
        first_node = by_name[step["rollout"]["updatedNodes"][0]]
        first_node.poll(wait=5)
        first_node.report({name: ProgramState.ATTACHED})
        wait_for(client, f"/v1/programs/{name}", lambda p: len(p["rollout"]["updatedNodes"]) == 2)
        # Sync in two stages: Git -> fleet (the revision), fleet -> nodes (1 of 2 so far).
        overview = client.get("/v1/overview").json()
        ours = next(s for s in overview["sources"] if s["source"] == f"default/{source}")
        assert (ours["shortRevision"], ours["ready"]) == ("bbbbbbb", "True")
        assert (ours["nodesReady"], ours["nodesDesired"]) == (1, 2)
        for node in nodes:
            if node is not first_node:
                node.poll(wait=5)
                node.report({name: ProgramState.LOAD_FAILED}, reason="VerifierRejected")
        program = wait_for(
            client, f"/v1/programs/{name}", lambda p: p["rollout"]["phase"] == "RolledBack"
        )
        assert program["status"] == "Failed"
        progress = client.get(f"/v1/programs/{name}/progress").json()
        assert progress["failures"] == 1
        assert all(step["state"] != "current" for step in progress["steps"])

        listed = client.get("/v1/programs", params={"status": "Failed", "limit": 500})
        assert name in [p["name"] for p in listed.json()]
        ready = client.get("/v1/programs", params={"status": "Ready"}).json()
        assert name not in [p["name"] for p in ready]

        overview = client.get("/v1/overview").json()
        assert overview["programs"]["byStatus"]["Failed"] >= 1
        assert overview["nodes"]["ready"] >= 2
        assert overview["fleet"]["source"] is None

        # An object in no inventory was set through the API.
        other = f"direct-{run}"
        assert client.put(f"/v1/programs/{other}", json=document).status_code == 200
        assert client.get(f"/v1/programs/{other}").json()["origin"] is None


def test_reconcile_now_wakes_a_long_polling_operator(api: services.Api) -> None:
    source = f"rec-{group()}"
    revision = "main@sha1:" + "c" * 40
    status = source_status(revision, applied=revision, result="Applied", inventory=[])
    with api.client() as client:
        assert client.post(f"/v1/gitsources/default/{source}/reconcile").status_code == 404
        client.put(f"/v1/gitsources/default/{source}/status", json={"spec": SPEC, "status": status})
        start = client.get("/v1/gitsources/reconcile-requests").json()
        assert start["sources"] == []
        answer: dict[str, Any] = {}

        def operator() -> None:
            with api.client() as own:
                answer.update(
                    own.get(
                        "/v1/gitsources/reconcile-requests",
                        params={"after": start["cursor"], "wait": 30},
                    ).json()
                )

        waiting = threading.Thread(target=operator)
        waiting.start()
        requested = client.post(f"/v1/gitsources/default/{source}/reconcile")
        assert requested.status_code == 202, requested.text
        assert requested.json()["reconcilePending"] is True
        waiting.join(timeout=30)
        assert not waiting.is_alive()
        assert f"default/{source}" in answer["sources"]
        assert answer["cursor"] > start["cursor"]
        # The next pass's report answers the request.
        client.put(f"/v1/gitsources/default/{source}/status", json={"spec": SPEC, "status": status})
        assert client.get(f"/v1/gitsources/default/{source}").json()["reconcilePending"] is False
        # Nothing new since: a short wait ends empty, with the same cursor.
        later = client.get(
            "/v1/gitsources/reconcile-requests", params={"after": answer["cursor"], "wait": 0.2}
        ).json()
        assert later == {"cursor": answer["cursor"], "sources": []}

        created = client.post("/v1/tokens", json={"name": f"v-{source}", "role": "viewer"})
        viewer = created.json()["token"]
    with api.client(viewer) as client:
        assert client.get(f"/v1/gitsources/default/{source}").status_code == 200
        assert client.post(f"/v1/gitsources/default/{source}/reconcile").status_code == 403
        assert client.get("/v1/gitsources/reconcile-requests").status_code == 403
        put = client.put(
            f"/v1/gitsources/default/{source}/status", json={"spec": SPEC, "status": status}
        )
        assert put.status_code == 403


def test_a_malformed_status_report_is_refused_naming_the_field(api: services.Api) -> None:
    with api.client() as client:
        response = client.put(
            "/v1/gitsources/default/odd/status",
            json={"status": {"history": [{"revision": "x", "time": "t", "result": "Maybe"}]}},
        )
        assert response.status_code == 422
        assert "result" in response.text
        response = client.put(
            "/v1/gitsources/default/odd/status",
            json={"status": {"history": [{"revision": "x", "time": "soon", "result": "Applied"}]}},
        )
        assert response.status_code == 422
        assert "status.history[0].time: 'soon' is not RFC 3339" in response.text
        assert client.get("/v1/gitsources/default/odd").status_code == 404


# ---------------------------------------------------------------------------- kernels


def test_kernels_compared_and_what_a_node_cannot_run(
    api: services.Api, signed_catalog: SignedCatalog, recorded_features: FeatureReport
) -> None:
    artifact = upload(api, signed_catalog, "execsnoop")
    run = group()
    ProtocolClient(api, f"k-{run}-new", {"run": run}, recorded_features)
    ProtocolClient(api, f"k-{run}-old", {"run": run}, without_ringbuf(recorded_features))
    with api.client() as client:
        matrix = client.get("/v1/kernels", params={"selector": f"run={run}"}).json()
        assert {"group": "map type", "name": "ringbuf"} in matrix["features"]
        assert len(matrix["features"]) == 1
        assert [(row["node"], row["values"]) for row in matrix["nodes"]] == [
            (f"k-{run}-new", [True]),
            (f"k-{run}-old", [False]),
        ]
        assert matrix["same"] > 100
        compared = client.get(
            "/v1/kernels/compare", params={"a": f"k-{run}-new", "b": f"k-{run}-old"}
        ).json()
        maps = next(g for g in compared["groups"] if g["group"] == "map type")
        assert (maps["onlyA"], maps["onlyB"]) == (["ringbuf"], [])
        missing = client.get("/v1/kernels/compare", params={"a": f"k-{run}-new", "b": "nosuch"})
        assert missing.status_code == 404

        name = f"needs-ringbuf-{run}"
        document = {**spec(artifact), "nodeSelector": {"matchLabels": {"run": run}}}
        assert client.put(f"/v1/programs/{name}", json=document).status_code == 200
        fits = {f["program"]: f for f in client.get(f"/v1/nodes/k-{run}-old/preflight").json()}
        assert fits[name]["compatible"] is False
        assert fits[name]["selected"] is True
        assert fits[name]["missing"] == ["kernel lacks map type ringbuf"]
        fits = {f["program"]: f for f in client.get(f"/v1/nodes/k-{run}-new/preflight").json()}
        assert fits[name] == {
            "program": name,
            "artifact": "execsnoop@1.0.0",
            "selected": True,
            "compatible": True,
            "missing": [],
        }


# ----------------------------------------------------------------- conditional GETs


def test_unchanged_answers_cost_a_304(api: services.Api) -> None:
    with api.client() as client:
        first = client.get("/v1/overview")
        etag = first.headers["ETag"]
        assert first.headers["Cache-Control"] == "no-cache"
        again = client.get("/v1/overview", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["ETag"] == etag
        stale = client.get("/v1/overview", headers={"If-None-Match": '"other"'})
        assert stale.status_code == 200
        assert stale.json() == first.json()
        # Errors and the agent protocol carry none.
        assert "ETag" not in client.get("/v1/programs/nosuch").headers
    with httpx.Client(base_url=api.url, timeout=10) as anonymous:
        assert "ETag" not in anonymous.get("/v1/agent/assignments").headers
