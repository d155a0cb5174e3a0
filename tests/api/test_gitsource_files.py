"""The text of GitSource files, as operators ship it with their reports: kept for the
applied revision and the rejected ones the history lists, served with the rejection's
problems in that file, and where a policy in force is written; bounded."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests import services
from tests.api.test_dashboard import SPEC, source_status

pytestmark = pytest.mark.services

POLICY = """\
# the database: web only
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: %s, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
"""
BROKEN = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nspec:\n  podSelector: 3\n"


def revision(letter: str) -> str:
    return "main@sha1:" + letter * 40


def report(client: Any, source: str, status: dict[str, Any], files: list[dict[str, str]]) -> Any:
    return client.put(
        f"/v1/gitsources/default/{source}/status",
        json={"spec": SPEC, "status": status, "files": files},
    )


def test_files_at_the_applied_and_rejected_revisions(api: services.Api) -> None:
    source, web = f"src-{uuid.uuid4().hex[:6]}", f"web-{uuid.uuid4().hex[:6]}"
    first, second, third = revision("a"), revision("b"), revision("c")
    inventory = [{"kind": "NetworkPolicy", "namespace": "shop", "name": web}]
    text = POLICY % web
    with api.client() as client:
        applied = source_status(first, applied=first, result="Applied", inventory=inventory)
        files = [{"revision": first, "path": "policies/shop.yaml", "text": text}]
        assert report(client, source, applied, files).status_code == 200
        found = client.get(f"/v1/policies/shop/{web}/source")
        assert found.status_code == 200, found.text
        assert found.json() == {
            "namespace": "default",
            "name": source,
            "revision": first,
            "shortRevision": "aaaaaaa",
            "applied": True,
            "path": "policies/shop.yaml",
            "text": text,
            "errors": [],
            "line": 8,
        }

        error = {
            "file": "policies/broken.yaml",
            "line": 4,
            "field": "spec.podSelector",
            "message": "Invalid value: 3: must be a label selector",
        }
        rejected = source_status(
            second,
            applied=first,
            result="Rejected",
            inventory=inventory,
            errors=[error],
            history=applied["history"],
        )
        broken = [{"revision": second, "path": "policies/broken.yaml", "text": BROKEN}]
        assert report(client, source, rejected, broken).status_code == 200
        opened = client.get(
            f"/v1/gitsources/default/{source}/file",
            params={"path": "policies/broken.yaml", "revision": second},
        ).json()
        assert (opened["text"], opened["applied"], opened["errors"]) == (BROKEN, False, [error])
        applied_file = client.get(
            f"/v1/gitsources/default/{source}/file", params={"path": "policies/shop.yaml"}
        ).json()
        assert (applied_file["revision"], applied_file["applied"]) == (first, True)

        # A later applied revision: the first's files go (nothing refers to it), the
        # rejected one's stay while the history lists it.
        fixed = source_status(
            third,
            applied=third,
            result="Applied",
            inventory=inventory,
            history=rejected["history"],
        )
        files = [{"revision": third, "path": "policies/shop.yaml", "text": text + "# c\n"}]
        assert report(client, source, fixed, files).status_code == 200
        gone = client.get(
            f"/v1/gitsources/default/{source}/file",
            params={"path": "policies/shop.yaml", "revision": first},
        )
        assert gone.status_code == 404
        assert "no text of policies/shop.yaml" in gone.json()["detail"]
        kept = client.get(
            f"/v1/gitsources/default/{source}/file",
            params={"path": "policies/broken.yaml", "revision": second},
        )
        assert kept.status_code == 200
        assert client.get(f"/v1/policies/shop/{web}/source").json()["revision"] == third

        # Files of revisions the report does not refer to are not stored at all.
        stray = [{"revision": revision("d"), "path": "x.yaml", "text": "a: 1\n"}]
        assert report(client, source, fixed, stray).status_code == 200
        assert (
            client.get(
                f"/v1/gitsources/default/{source}/file",
                params={"path": "x.yaml", "revision": revision("d")},
            ).status_code
            == 404
        )


def test_a_policy_set_through_the_api_has_no_source(api: services.Api) -> None:
    with api.client() as client:
        missing = client.get("/v1/policies/shop/nowhere/source")
    assert missing.status_code == 404
    assert "set through the API" in missing.json()["detail"]


def test_file_text_is_bounded(api: services.Api) -> None:
    source = f"src-{uuid.uuid4().hex[:6]}"
    first = revision("e")
    status = source_status(first, applied=first, result="Applied", inventory=[])
    big = [{"revision": first, "path": f"p{i}.yaml", "text": "#" * (200 * 1024)} for i in range(3)]
    many = [{"revision": first, "path": f"p{i}.yaml", "text": ""} for i in range(201)]
    with api.client() as client:
        refused = report(client, source, status, big)
        assert refused.status_code == 422
        assert "more than 524288" in refused.text
        assert report(client, source, status, many).status_code == 422
        assert report(client, source, status, big[:2]).status_code == 200


def test_a_viewer_reads_files_and_cannot_report_them(api: services.Api) -> None:
    source = f"src-{uuid.uuid4().hex[:6]}"
    first = revision("f")
    status = source_status(first, applied=first, result="Applied", inventory=[])
    files = [{"revision": first, "path": "a.yaml", "text": "a: 1\n"}]
    with api.client() as client:
        assert report(client, source, status, files).status_code == 200
        viewer = client.post(
            "/v1/tokens", json={"name": f"v-{uuid.uuid4().hex[:6]}", "role": "viewer"}
        ).json()["token"]
    with api.client(viewer) as client:
        assert (
            client.get(
                f"/v1/gitsources/default/{source}/file", params={"path": "a.yaml"}
            ).status_code
            == 200
        )
        assert report(client, source, status, files).status_code == 403
