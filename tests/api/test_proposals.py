"""Proposals and shared drafts in the API: checked whole before they are accepted, queued
for the operator, reported stage by stage in order, merged only where the source allows,
and never written to desired state."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests import services
from tests.conftest import SignedCatalog

pytestmark = pytest.mark.services

COMMIT = "a" * 40
OTHER = "b" * 40
POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: NS}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
      ports: [{port: 5432}]
"""
FLOWS = """\
flows:
  - NS/web -> NS/db TCP/5432 expect allow
"""


def spec(**proposals: Any) -> dict[str, Any]:
    return {
        "url": "file:///srv/fleet",
        "ref": {"branch": "main"},
        "path": "policies",
        "proposals": proposals,
    }


@pytest.fixture
def source(api: services.Api) -> Iterator[dict[str, str]]:
    """A GitSource as its operator reports it, in a namespace of its own."""
    namespace = f"p-{uuid.uuid4().hex[:8]}"
    status = {"lastAppliedRevision": f"main@sha1:{COMMIT}"}
    with api.client() as client:
        response = client.put(
            f"/v1/gitsources/{namespace}/fleet/status",
            json={"spec": spec(devMerge=True), "status": status},
        )
        assert response.status_code == 200, response.text
    return {"namespace": namespace, "name": "fleet"}


@pytest.fixture(scope="module")
def proposer(api: services.Api) -> str:
    with api.client() as client:
        minted = client.post("/v1/tokens", json={"name": "alice", "role": "proposer"})
    assert minted.status_code == 201, minted.text
    return str(minted.json()["token"])


def policy(namespace: str, port: int = 5432) -> str:
    return POLICY.replace("NS", namespace).replace("5432", str(port))


def proposal(source: dict[str, str], **changes: Any) -> dict[str, Any]:
    namespace = source["namespace"]
    body: dict[str, Any] = {
        "source": source,
        "files": [
            {
                "path": "policies/db-ingress.yaml",
                "content": policy(namespace),
                "baseRevision": f"main@sha1:{COMMIT}",
            },
            {"path": "policies/db-ingress.flows.yaml", "content": FLOWS.replace("NS", namespace)},
        ],
        "message": "db: web only, on 5432\n\nThe batch jobs moved elsewhere.",
    }
    body.update(changes)
    return body


def operator_work(api: services.Api, **params: Any) -> dict[str, Any]:
    with api.client() as client:
        response = client.get("/v1/operator/proposals", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def all_work(api: services.Api) -> list[dict[str, Any]]:
    """Every pending item, page after page, as an operator that just started takes them."""
    found = operator_work(api)
    items = list(found["work"])
    while found["work"]:
        found = operator_work(api, after=found["cursor"])
        items += found["work"]
    return items


def newest_cursor(api: services.Api) -> int:
    """Past every pending item, as an operator is once it has taken them all."""
    found = operator_work(api)
    while found["work"]:
        found = operator_work(api, after=found["cursor"])
    return int(found["cursor"])


def test_a_proposal_is_accepted_whole_queued_and_never_desired_state(
    api: services.Api, source: dict[str, str], proposer: str
) -> None:
    namespace = source["namespace"]
    with api.client(proposer) as client:
        created = client.post("/v1/proposals", json=proposal(source))
    assert created.status_code == 201, created.text
    card = created.json()
    assert (card["state"], card["stage"], card["author"]) == ("Proposed", "Proposed", "alice")
    assert [f["path"] for f in card["files"]] == [
        "policies/db-ingress.yaml",
        "policies/db-ingress.flows.yaml",
    ]
    assert card["changes"][0]["content"] == policy(namespace)
    assert card["objects"] == [
        {
            "kind": "NetworkPolicy",
            "namespace": namespace,
            "name": "db-ingress",
            "inForce": False,
            "generation": None,
            "ready": 0,
            "desired": 0,
            "failed": 0,
        }
    ]
    assert card["canMerge"] is False  # not pushed yet
    # Nothing of it is desired state: no policy was stored.
    with api.client() as client:
        assert client.get(f"/v1/policies/{namespace}/db-ingress").status_code == 404
    # The operator's work: every pending item when it starts.
    work = [item for item in all_work(api) if item["id"] == card["id"]]
    assert len(work) == 1
    item = work[0]
    assert (item["action"], item["author"], item["subject"]) == (
        "push",
        "alice",
        f"{namespace}/db-ingress",
    )
    assert item["source"] == source
    assert item["files"][0]["baseRevision"] == f"main@sha1:{COMMIT}"
    assert item["message"].startswith("db: web only, on 5432\n\nThe batch jobs")
    # Readers list and read it; filters by source and by state.
    with api.client(proposer) as client:
        listed = client.get("/v1/proposals", params={"source": f"{namespace}/fleet"}).json()
        assert [p["id"] for p in listed] == [card["id"]]
        applied = client.get("/v1/proposals", params={"state": "Applied"}).json()
        assert all(p["state"] == "Applied" for p in applied)
        assert client.get(f"/v1/proposals/{card['id']}").json()["id"] == card["id"]
        assert client.get("/v1/proposals/999999999").status_code == 404


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"path": "../policies/x.yaml"}, "must stay inside the repository"),
        ({"path": "policies/../../etc/x.yaml"}, "must stay inside the repository"),
        ({"path": "/etc/x.yaml"}, "must be relative to the repository"),
        ({"path": "other/x.yaml"}, "outside the GitSource's path 'policies'"),
        ({"path": "policies/.git/config.yaml"}, "may not write into .git"),
        ({"path": "policies/run.sh"}, "only manifests"),
        ({"path": "policies/a\\b.yaml"}, "backslash"),
        ({"path": "policies/a\nb.yaml"}, "control character"),
        ({"baseRevision": "yesterday"}, "names no commit"),
        ({"content": "kind: NetworkPolicy\n"}, "is not one of BpfProgram"),
        ({"content": "# nothing yet\n"}, "declares no BpfProgram or NetworkPolicy"),
        ({"content": "a: [unclosed\n"}, "policies/db-ingress.yaml:"),
    ],
)
def test_bad_files_are_refused_in_the_validators_words(
    api: services.Api, source: dict[str, str], proposer: str, change: dict[str, str], words: str
) -> None:
    body = proposal(source)
    body["files"][0].update(change)
    with api.client(proposer) as client:
        response = client.post("/v1/proposals", json=body)
        assert response.status_code == 422, response.text
        assert words in response.text
        assert (
            client.get("/v1/proposals", params={"source": f"{source['namespace']}/fleet"}).json()
            == []
        )


def test_an_invalid_policy_or_flow_file_says_where(
    api: services.Api, source: dict[str, str], proposer: str
) -> None:
    body = proposal(source)
    body["files"][0]["content"] = policy(source["namespace"], port=0)
    body["files"][1]["content"] = "flows:\n  - web to db\n"
    with api.client(proposer) as client:
        response = client.post("/v1/proposals", json=body)
    assert response.status_code == 422, response.text
    problems = response.json()["problems"]
    assert any(
        p.startswith("policies/db-ingress.yaml:8: spec.ingress[0].ports[0].port: Invalid value: 0")
        for p in problems
    ), problems
    assert any(p.startswith("policies/db-ingress.flows.yaml:2:") for p in problems), problems


def test_a_program_the_fleet_cannot_run_is_refused(
    api: services.Api, source: dict[str, str], proposer: str, signed_catalog: SignedCatalog
) -> None:
    program = {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "BpfProgram",
        "metadata": {"name": "execs"},
        "spec": {
            "artifact": {"name": "execsnoop", "version": "9.9.9"},
            "attach": [{"entryPoint": "handle_exec", "type": "tracepoint"}],
        },
    }
    body = proposal(
        source, files=[{"path": "policies/execs.yaml", "content": yaml.safe_dump(program)}]
    )
    with api.client(proposer) as client:
        response = client.post("/v1/proposals", json=body)
    assert response.status_code == 422, response.text
    assert "9.9.9" in response.text


def test_limits_hold(api: services.Api, source: dict[str, str], proposer: str) -> None:
    namespace = source["namespace"]
    with api.client(proposer) as client:

        def refused(body: dict[str, Any]) -> httpx.Response:
            response = client.post("/v1/proposals", json=body)
            assert response.status_code in (413, 422), response.text
            return response

        many = [
            {
                "path": f"policies/p{i}.yaml",
                "content": policy(namespace).replace("db-ingress", f"p{i}"),
            }
            for i in range(21)
        ]
        assert "files" in refused(proposal(source, files=many)).text
        twice = proposal(source)
        twice["files"][1] = dict(twice["files"][0])
        assert "is given twice" in refused(twice).text
        deep = proposal(source)
        deep["files"][0]["path"] = "policies/" + "d/" * 600 + "x.yaml"
        assert "path" in refused(deep).text
        big = proposal(source)
        big["files"][0]["content"] = policy(namespace) + "#" * (1 << 20)
        refused(big)  # the body cap (413) or the file's (422): either way, nothing kept
        assert "message" in refused(proposal(source, message="")).text
        assert "message" in refused(proposal(source, message="x" * 5000)).text
        for branch in (
            "-rf",
            "bpfleet/a..b",
            "bpfleet/x.lock",
            "bpfleet/a b",
            "bpfleet/",
            "bpfleet/" + "x" * 300,
        ):
            assert "branch" in refused(proposal(source, branch=branch)).text.lower(), branch
        assert client.get("/v1/proposals", params={"source": f"{namespace}/fleet"}).json() == []


def test_the_source_must_be_known_and_follow_a_branch(
    api: services.Api, source: dict[str, str], proposer: str
) -> None:
    with api.client(proposer) as client:
        unknown = proposal({"namespace": source["namespace"], "name": "nowhere"})
        assert client.post("/v1/proposals", json=unknown).status_code == 404
    with api.client() as client:
        tagged = {**spec(), "ref": {"tag": "v1"}}
        client.put(
            f"/v1/gitsources/{source['namespace']}/tagged/status",
            json={"spec": tagged, "status": {}},
        )
    with api.client(proposer) as client:
        response = client.post(
            "/v1/proposals", json=proposal({"namespace": source["namespace"], "name": "tagged"})
        )
    assert response.status_code == 422
    assert "follows a tag" in response.text


def test_stages_follow_in_order_with_times_and_the_fleet_decides_enforcing(
    api: services.Api, source: dict[str, str], proposer: str
) -> None:
    namespace = source["namespace"]
    with api.client(proposer) as client:
        card = client.post("/v1/proposals", json=proposal(source)).json()
    status = f"/v1/proposals/{card['id']}/status"
    with api.client() as admin:
        pushed = {
            "state": "Pushed",
            "branch": f"bpfleet/{namespace}-db-ingress-{card['id']}",
            "commit": OTHER,
            "parent": COMMIT,
            "pullRequest": {"forge": "gitea", "url": "https://git.example/pulls/7", "number": 7},
        }
        seen = admin.put(status, json=pushed).json()
        assert (seen["state"], seen["branch"], seen["pullRequest"]["number"]) == (
            "Pushed",
            pushed["branch"],
            7,
        )
        assert seen["pushedAt"] is not None
        assert seen["mergedAt"] is None
        assert seen["canMerge"] is True
        assert admin.put(status, json={"state": "Conflict"}).status_code == 409
        rejected = {
            "state": "Rejected",
            "mergedCommit": "c" * 40,
            "revision": f"main@sha1:{'c' * 40}",
            "errors": [{"file": "policies/db-ingress.yaml", "line": 8, "message": "no"}],
        }
        seen = admin.put(status, json=rejected).json()
        assert seen["errors"][0]["line"] == 8
        assert seen["mergedAt"] is not None
        assert seen["rejectedAt"] is not None
        applied = {"state": "Applied", "revision": f"main@sha1:{'d' * 40}"}
        seen = admin.put(status, json=applied).json()
        assert (seen["state"], seen["errors"]) == ("Applied", [])
        # Applied, but the fleet does not hold the policy: not enforcing.
        assert seen["stage"] == "Applied"
        assert admin.put(status, json={"state": "Pushed"}).status_code == 409
        # The fleet holds it as proposed (no node selects it here: 0/0 of 0).
        document = yaml.safe_load(policy(namespace))
        stored = admin.put(f"/v1/policies/{namespace}/db-ingress", json=document)
        assert stored.status_code == 200, stored.text
        seen = admin.get(f"/v1/proposals/{card['id']}").json()
        assert seen["objects"][0]["inForce"] is True
        assert seen["objects"][0]["generation"] == 1
        assert (seen["stage"], seen["ready"], seen["desired"]) == ("Enforcing", 0, 0)
        assert seen["enforcedAt"] is not None
        # A later change of the policy in the fleet: this proposal is no longer in force.
        changed = admin.put(
            f"/v1/policies/{namespace}/db-ingress", json=yaml.safe_load(policy(namespace, 80))
        )
        assert changed.json()["generation"] == 2
        assert admin.get(f"/v1/proposals/{card['id']}").json()["stage"] == "Applied"


def test_a_conflict_keeps_the_three_texts(
    api: services.Api, source: dict[str, str], proposer: str
) -> None:
    with api.client(proposer) as client:
        card = client.post("/v1/proposals", json=proposal(source)).json()
    conflict = {
        "path": "policies/db-ingress.yaml",
        "base": "base text\n",
        "theirs": "their text\n",
        "ours": "our text\n",
    }
    added = {"path": "policies/db-ingress.flows.yaml", "base": None, "theirs": "x", "ours": "y"}
    with api.client() as admin:
        report = {"state": "Conflict", "message": "changed", "conflicts": [conflict, added]}
        assert admin.put(f"/v1/proposals/{card['id']}/status", json=report).status_code == 200
        shown = admin.get(f"/v1/proposals/{card['id']}").json()
        kept = [{**item, "omitted": False} for item in (conflict, added)]
        assert (shown["state"], shown["conflicts"]) == ("Conflict", kept)
        assert shown["pushedAt"] is None
        # Nothing more happens to it: no work, no later stage.
        assert not [w for w in all_work(api) if w["id"] == card["id"]]
        again = admin.put(f"/v1/proposals/{card['id']}/status", json={"state": "Pushed"})
        assert again.status_code == 409


def test_dev_merge_only_where_the_source_allows_it(
    api: services.Api, source: dict[str, str], proposer: str
) -> None:
    namespace = source["namespace"]
    with api.client() as admin:
        admin.put(
            f"/v1/gitsources/{namespace}/reviewed/status", json={"spec": spec(), "status": {}}
        )
    reviewed = {"namespace": namespace, "name": "reviewed"}
    with api.client(proposer) as client:
        card = client.post("/v1/proposals", json=proposal(source)).json()
        elsewhere = client.post("/v1/proposals", json=proposal(reviewed)).json()
        assert client.post(f"/v1/proposals/{card['id']}/merge").status_code == 409  # Proposed
    with api.client() as admin:
        for pushed in (card, elsewhere):
            report = {"state": "Pushed", "branch": "bpfleet/x", "commit": OTHER, "parent": COMMIT}
            admin.put(f"/v1/proposals/{pushed['id']}/status", json=report)
    with api.client(proposer) as client:
        refused = client.post(f"/v1/proposals/{elsewhere['id']}/merge")
        assert refused.status_code == 409
        assert "devMerge" in refused.text
        start = newest_cursor(api)
        asked = client.post(f"/v1/proposals/{card['id']}/merge")
        assert asked.status_code == 202, asked.text
        assert asked.json()["mergeRequested"] is True
    work = operator_work(api, after=start)["work"]
    assert [
        (w["id"], w["action"], w["commit"], w["pushedBranch"], w["requestedBy"]) for w in work
    ] == [(card["id"], "merge", OTHER, "bpfleet/x", "alice")]
    with api.client() as admin:
        merged = {"state": "Merged", "mergedCommit": "c" * 40}
        done = admin.put(f"/v1/proposals/{card['id']}/status", json=merged).json()
    assert (done["state"], done["mergeRequested"], done["mergedCommit"]) == (
        "Merged",
        False,
        "c" * 40,
    )
    assert not [w for w in all_work(api) if w["id"] == card["id"]]


def test_the_operators_work_comes_in_pages(
    api: services.Api, source: dict[str, str], proposer: str
) -> None:
    start = newest_cursor(api)
    with api.client(proposer) as client:
        ids = [client.post("/v1/proposals", json=proposal(source)).json()["id"] for _ in range(51)]
    first = operator_work(api, after=start)
    assert [item["id"] for item in first["work"]] == ids[:50]  # a page at most
    rest = operator_work(api, after=first["cursor"])
    assert [item["id"] for item in rest["work"]] == ids[50:]


def test_the_operators_long_poll_wakes_for_a_new_proposal(
    api: services.Api, source: dict[str, str], proposer: str
) -> None:
    cursor = newest_cursor(api)
    answer: dict[str, Any] = {}

    def poll() -> None:
        answer.update(operator_work(api, after=cursor, wait=30))

    waiter = threading.Thread(target=poll)
    waiter.start()
    with api.client(proposer) as client:
        card = client.post("/v1/proposals", json=proposal(source)).json()
    waiter.join(40)
    assert [item["id"] for item in answer["work"]] == [card["id"]]
    assert answer["cursor"] > cursor


def test_drafts_are_shared_by_link_and_bounded(
    api: services.Api, source: dict[str, str], proposer: str
) -> None:
    draft = {
        "text": policy(source["namespace"]),
        "flows": FLOWS,
        "source": source,
        "path": "policies/db-ingress.yaml",
        "baseRevision": f"main@sha1:{COMMIT}",
        "title": "db ingress, tighter",
    }
    with api.client(proposer) as client:
        shared = client.post("/v1/drafts", json=draft)
        assert shared.status_code == 201, shared.text
        link = shared.json()["id"]
        assert len(link) >= 16
        too_big = client.post("/v1/drafts", json={**draft, "text": "#" * (512 * 1024 + 1)})
        assert too_big.status_code == 422
    with api.client() as admin:
        viewer = admin.post("/v1/tokens", json={"name": "bob", "role": "viewer"}).json()["token"]
    with api.client(viewer) as client:
        reopened = client.get(f"/v1/drafts/{link}").json()
        assert {key: reopened[key] for key in draft} == draft
        assert reopened["author"] == "alice"
        assert client.get("/v1/drafts/no-such-draft").status_code == 404
        assert client.post("/v1/drafts", json=draft).status_code == 403


def test_each_author_keeps_only_the_newest_drafts(
    redis: services.Redis, signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    with (
        services.api_server(
            f"sqlite:///{tmp_path}/bpfleet.db",
            redis.url,
            signed_catalog.trust,
            tmp_path,
            drafts_kept_per_author="2",
        ) as server,
        server.client() as client,
    ):
        ids = [client.post("/v1/drafts", json={"text": f"# {i}\n"}).json()["id"] for i in range(3)]
        assert client.get(f"/v1/drafts/{ids[0]}").status_code == 404
        assert [client.get(f"/v1/drafts/{i}").json()["text"] for i in ids[1:]] == ["# 1\n", "# 2\n"]
