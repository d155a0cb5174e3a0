"""Proposals end to end through the operator as it runs, in both modes, against a real
fleet API and real repositories: proposed through the API, pushed as a branch (and a
pull request on a recording forge), merged (dev), applied, followed to Enforcing; a
stale draft is a Conflict and pushes nothing."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bpfleet_core.resources import GitSource
from bpfleet_operator.fleetapi import FleetApi
from bpfleet_operator.settings import OperatorSettings
from bpfleet_operator.standalone import StandaloneSource
from tests import services
from tests.conftest import SignedCatalog
from tests.gitrepos import GitRepo, SmartHttpServer
from tests.operator.forgeserver import ForgeServer
from tests.operator.kubernetes import Cluster, git_source
from tests.operator.processes import BPFLEET, operator, operator_environment, running
from tests.polling import wait_for

pytestmark = pytest.mark.services


def policy(namespace: str, peer: str) -> str:
    return f"""\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: db-ingress, namespace: {namespace}}}
spec:
  podSelector: {{matchLabels: {{app: db}}}}
  ingress:
    - from: [{{podSelector: {{matchLabels: {{app: {peer}}}}}}}]
"""


@pytest.fixture(scope="module")
def api(
    redis: services.Redis, signed_catalog: SignedCatalog, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[services.Api]:
    logs = tmp_path_factory.mktemp("logs")
    with services.api_server(
        f"sqlite:///{logs}/bpfleet.db", redis.url, signed_catalog.trust, logs
    ) as server:
        yield server


@pytest.fixture(scope="module")
def alice(api: services.Api) -> str:
    with api.client() as client:
        minted = client.post("/v1/tokens", json={"name": "alice", "role": "proposer"})
    return str(minted.json()["token"])


def reported(api: services.Api, namespace: str, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        with api.client() as client:
            found = client.get(f"/v1/gitsources/{namespace}/{name}")
        source = found.json() if found.status_code == 200 else {}
        return source if source.get("lastAppliedRevision") else None

    return dict(wait_for(check, 60, f"GitSource {namespace}/{name} reported applied"))


def card_in(api: services.Api, proposal: int, *stages: str) -> Callable[[], Any]:
    def check() -> dict[str, Any] | None:
        with api.client() as client:
            card = client.get(f"/v1/proposals/{proposal}").json()
        return card if card["stage"] in stages else None

    return check


def propose(
    api: services.Api, token: str, namespace: str, text: str, base: str, name: str = "fleet"
) -> dict[str, Any]:
    body = {
        "source": {"namespace": namespace, "name": name},
        "files": [{"path": "policies/db.yaml", "content": text, "baseRevision": base}],
        "message": "db: only other\n\nweb goes through the API now.",
    }
    with api.client(token) as client:
        created = client.post("/v1/proposals", json=body)
    assert created.status_code == 201, created.text
    return dict(created.json())


def follow_to_enforcing(
    api: services.Api, token: str, repo: GitRepo, card: dict[str, Any], what: str
) -> dict[str, Any]:
    """Pushed -> merge (dev) -> Applied -> Enforcing, checking the repository on the way."""
    pushed = wait_for(card_in(api, card["id"], "Pushed"), 60, f"{what}: pushed")
    branch = pushed["branch"]
    assert repo.git("rev-list", f"main..{branch}").split() == [pushed["commit"]]
    assert repo.git("diff", "--name-only", "main", branch).split() == ["policies/db.yaml"]
    assert repo.git("log", "-1", "--format=%an", branch) == "alice"
    assert pushed["canMerge"] is True
    with api.client(token) as client:
        asked = client.post(f"/v1/proposals/{card['id']}/merge")
    assert asked.status_code == 202, asked.text
    done = wait_for(card_in(api, card["id"], "Enforcing"), 60, f"{what}: enforcing")
    assert done["mergedCommit"] == repo.head()
    assert done["revision"] == f"main@sha1:{repo.head()}"
    for stage in ("createdAt", "pushedAt", "mergedAt", "appliedAt", "enforcedAt"):
        assert done[stage] is not None, stage
    assert done["objects"][0]["inForce"] is True
    return dict(done)


def test_standalone_writes_merges_and_follows_a_proposal(
    api: services.Api, alice: str, tmp_path: Path
) -> None:
    namespace = f"shop-{uuid.uuid4().hex[:6]}"
    repo = GitRepo(tmp_path / "repo")
    opened = repo.commit("db", {"policies/db.yaml": policy(namespace, "web")})
    with ForgeServer("gitea") as forge:
        secrets = tmp_path / "secrets" / "forge"
        secrets.mkdir(parents=True)
        (secrets / "token").write_text("gitea-t0ken\n")
        (secrets / "ca.crt").write_text(forge.ca)
        source = git_source(  # passes only at the start and when woken (by the merge)
            "fleet",
            "default",
            f"file://{repo.path}",
            path="policies",
            proposals={
                "devMerge": True,
                "forge": {
                    "type": "gitea",
                    "apiUrl": f"{forge.base}/api/v1",
                    "repository": "platform/fleet",
                    "secretRef": {"name": "forge"},
                },
            },
        )
        source_file = tmp_path / "gitsource.yaml"
        source_file.write_text(yaml.safe_dump(source))
        environment = {
            **operator_environment(api, tmp_path / "state", 0),
            "BPFLEET_OPERATOR_SECRETS_DIR": str(tmp_path / "secrets"),
        }
        with running(
            [BPFLEET, "operator", "standalone", str(source_file)],
            environment,
            tmp_path / "standalone.log",
        ):
            applied = reported(api, "default", "fleet")["lastAppliedRevision"]
            assert applied == f"main@sha1:{opened}"
            card = propose(api, alice, "default", policy(namespace, "other"), applied)
            done = follow_to_enforcing(api, alice, repo, card, "standalone")
            assert done["pullRequest"]["url"] == f"{forge.base}/pulls/1"
            (request,) = forge.requests
            assert request.path == "/api/v1/repos/platform/fleet/pulls"
            assert request.headers["authorization"] == "token gitea-t0ken"
            with api.client() as client:
                stored = client.get(f"/v1/policies/{namespace}/db-ingress").json()
            assert stored["document"]["spec"]["ingress"][0]["from"][0]["podSelector"] == {
                "matchLabels": {"app": "other"}
            }

            # A draft opened before that change: its file changed since, nothing is pushed.
            stale = propose(api, alice, "default", policy(namespace, "batch"), applied)
            conflict = wait_for(card_in(api, stale["id"], "Conflict"), 60, "the conflict")
            (three,) = conflict["conflicts"]
            assert three["base"] == policy(namespace, "web")
            assert three["theirs"] == policy(namespace, "other")
            assert three["ours"] == policy(namespace, "batch")
            assert conflict["branch"] is None
            assert repo.git("branch", "--list", "--format=%(refname:short)").split() == [
                done["branch"],
                "main",
            ]
            assert len(forge.requests) == 1


def test_the_kopf_operator_writes_merges_and_follows_a_proposal(
    api: services.Api, alice: str, cluster: Cluster, tmp_path: Path
) -> None:
    namespace = f"shop-{uuid.uuid4().hex[:6]}"
    repo = GitRepo(tmp_path / "repo")
    repo.commit("db", {"policies/db.yaml": policy(namespace, "web")})
    with ForgeServer("github") as forge, operator(api, cluster.url, tmp_path):
        data = {"token": "ghp-t0ken", "ca.crt": forge.ca}
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "forge", "annotations": {"bpfleet.io/git-host": "127.0.0.1"}},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
        }
        cluster.create("secrets", secret, namespace="default")
        source = git_source(
            "team",
            "default",
            str(repo.path),
            path="policies",
            proposals={
                "devMerge": True,
                "forge": {
                    "type": "github",
                    "apiUrl": forge.base,
                    "repository": "platform/fleet",
                    "secretRef": {"name": "forge"},
                },
            },
        )
        cluster.create("gitsources", source, namespace="default")
        applied = reported(api, "default", "team")["lastAppliedRevision"]
        card = propose(api, alice, "default", policy(namespace, "other"), applied, "team")
        done = follow_to_enforcing(api, alice, repo, card, "kopf")
        assert done["branch"] == f"bpfleet/{namespace}-db-ingress-{card['id']}"
        assert done["pullRequest"] == {
            "forge": "github",
            "url": f"{forge.base}/pulls/1",
            "number": 1,
        }
        (request,) = forge.requests
        assert request.path == "/repos/platform/fleet/pulls"
        assert request.headers["authorization"] == "Bearer ghp-t0ken"
        assert request.headers["x-github-api-version"] == "2022-11-28"
        live = cluster.get("networkpolicies", "db-ingress", namespace)
        assert live is not None
        assert live["spec"]["ingress"][0]["from"][0]["podSelector"] == {
            "matchLabels": {"app": "other"}
        }
        assert live["metadata"]["annotations"]["bpfleet.io/revision"] == done["revision"]


def test_standalone_reads_secrets_from_a_directory_and_says_when_one_is_missing(
    api: services.Api, tmp_path: Path
) -> None:
    """Standalone has no Kubernetes Secrets: a secretRef names a directory of files."""
    namespace = f"shop-{uuid.uuid4().hex[:6]}"
    repo = GitRepo(tmp_path / "repos" / "fleet")
    repo.commit("db", {"policies/db.yaml": policy(namespace, "web")})
    with SmartHttpServer(repo.path.parent, "ci", "t0ken") as server:
        document = {
            "apiVersion": "bpfleet.io/v1alpha1",
            "kind": "GitSource",
            "metadata": {"name": "creds", "namespace": "default"},
            "spec": {"url": server.url("fleet"), "path": "policies", "secretRef": {"name": "git"}},
        }
        source = GitSource.model_validate(document)
        fleet = FleetApi(api.url, api.admin_token)
        try:
            unset = OperatorSettings(state_dir=tmp_path / "state")
            result = StandaloneSource(source, unset, fleet).reconcile_once()
            assert result.outcome == "Failed"
            assert "BPFLEET_OPERATOR_SECRETS_DIR" in result.message
            assert not server.authorizations  # nothing was fetched, nothing sent

            secrets = tmp_path / "secrets"
            settings = OperatorSettings(state_dir=tmp_path / "state", secrets_dir=secrets)
            result = StandaloneSource(source, settings, fleet).reconcile_once()
            assert "no directory" in result.message
            (secrets / "git").mkdir(parents=True)
            for key, value in {"username": "ci", "password": "t0ken", "ca.crt": server.ca}.items():
                (secrets / "git" / key).write_text(value)
            result = StandaloneSource(source, settings, fleet).reconcile_once()
            assert result.outcome == "Applied", result.message
            assert any(server.authorizations)
        finally:
            fleet.close()
