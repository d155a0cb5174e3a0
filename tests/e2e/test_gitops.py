"""Git -> operator (kopf, on the Kubernetes emulator) or standalone pipeline -> fleet API
-> real agents: apply, keep the last good revision, prune, push notifications."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bpfleet_cli.localfleet import Bridge, FleetNode, free_port, local_fleet
from tests import services
from tests.conftest import SignedCatalog
from tests.e2e.conftest import uploaded
from tests.e2e.test_rollouts import registered
from tests.gitrepos import GitRepo
from tests.manifests import program_yaml
from tests.operator.kubernetes import emulated_cluster
from tests.operator.processes import BPFLEET, operator, operator_environment, running
from tests.polling import wait_for

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.services,
    pytest.mark.parametrize("api", ["sqlite"], indirect=True),  # tests/api covers both
]

SECRET = "push-secret"

EXECS = program_yaml()
SYSCALLS = program_yaml("syscalls", "syscount", "count_sys_enter", "raw_tracepoint")
# Line 9 holds the mistake: endPort below port.
BROKEN = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {}
  ingress:
    - ports:
        - port: 8080
          endPort: 80
"""


@pytest.fixture
def fleet(
    api: services.Api, network: Bridge, signed_catalog: SignedCatalog, tmp_path: Path
) -> Iterator[list[FleetNode]]:
    api.start_worker()
    uploaded(api, signed_catalog, "execsnoop", "syscount")
    with (
        local_fleet(
            api.url,
            api.bootstrap_token,
            network,
            trust=signed_catalog.trust,
            work=tmp_path / "agents",
            labels=[{"tier": "edge"}] * 3,
        ) as nodes,
        api.client() as client,
    ):
        registered(client, nodes)
        yield nodes


def push(port: int, namespace: str, name: str) -> None:
    """What a Git host sends on push, signed with the shared secret."""
    body = b'{"ref": "refs/heads/main"}'
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = httpx.post(
        f"http://127.0.0.1:{port}/hooks/gitsources/{namespace}/{name}",
        content=body,
        headers={"X-Hub-Signature-256": f"sha256={signature}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text


def condition(obj: dict[str, Any] | None, kind: str = "Ready") -> dict[str, Any] | None:
    for item in (obj or {}).get("status", {}).get("conditions", []):
        if item["type"] == kind:
            return dict(item)
    return None


def git_source(repo: GitRepo) -> dict[str, Any]:
    return {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "GitSource",
        "metadata": {"name": "fleet", "namespace": "default"},
        "spec": {
            "url": f"file://{repo.path}",
            "ref": {"branch": "main"},
            "path": "programs",
            "interval": "1h",  # so anything sooner is the push notification's doing
            "webhookSecretRef": {"name": "push"},
        },
    }


def test_operator_applies_keeps_the_last_good_revision_and_prunes(
    api: services.Api, fleet: list[FleetNode], tmp_path: Path
) -> None:
    repo = GitRepo(tmp_path / "repo")
    first = repo.commit("execs everywhere", {"programs/execs.yaml": EXECS})
    webhook_port = free_port()
    with (
        emulated_cluster() as cluster,
        operator(api, cluster.url, tmp_path, webhook_port),
    ):
        token = base64.b64encode(SECRET.encode()).decode()
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "push"}}
        cluster.create("secrets", {**secret, "data": {"token": token}}, namespace="default")
        cluster.create("gitsources", git_source(repo), namespace="default")

        # Committed -> applied -> rolled out -> Ready, with the revision and the counts.
        def execs_ready() -> dict[str, Any] | None:
            found = cluster.get("bpfprograms", "execs")
            ready = condition(found)
            return found if ready and ready["status"] == "True" else None

        program = wait_for(execs_ready, 120, "BpfProgram execs to be Ready")
        status = program["status"]
        assert status["revision"] == f"main@sha1:{first}"
        assert status["ready"] == "3/3"
        assert status["counts"]["attached"] == 3
        assert status["observedGeneration"] == program["metadata"]["generation"]
        assert all(node.program_state("execs") == "Attached" for node in fleet)
        source = cluster.get("gitsources", "fleet", "default")
        assert source is not None
        assert source["status"]["lastAppliedRevision"] == f"main@sha1:{first}"
        assert source["status"]["inventory"] == [{"kind": "BpfProgram", "name": "execs"}]

        # One invalid manifest among valid ones: nothing applies, the first revision stays.
        second = repo.commit(
            "syscalls, and a broken policy",
            {"programs/syscalls.yaml": SYSCALLS, "programs/broken.yaml": BROKEN},
        )
        push(webhook_port, "default", "fleet")

        def attempted(commit: str) -> Any:
            def check() -> dict[str, Any] | None:
                found = cluster.get("gitsources", "fleet", "default") or {}
                revision = found.get("status", {}).get("lastAttemptedRevision")
                return found if revision == f"main@sha1:{commit}" else None

            return check

        source = wait_for(attempted(second), 60, "the push to trigger a fetch")
        status = source["status"]
        assert status["lastAppliedRevision"] == f"main@sha1:{first}"
        assert status["errors"][0]["file"] == "programs/broken.yaml"
        assert status["errors"][0]["line"] == 9
        assert status["errors"][0]["field"] == "spec.ingress[0].ports[0].endPort"
        assert "must be greater than or equal to" in status["errors"][0]["message"]
        ready = condition(source)
        assert ready is not None
        assert (ready["status"], ready["reason"]) == ("False", "ValidationFailed")
        assert condition(source, "Stalled") is not None
        assert cluster.get("bpfprograms", "syscalls") is None
        assert all(node.program_state("syscalls") is None for node in fleet)

        # Fixed, and execs removed from Git: syscalls applies, execs is pruned, and the
        # object goes only once no node runs the program any more.
        repo.commit(
            "drop execs, fix the policy", remove=("programs/execs.yaml", "programs/broken.yaml")
        )
        push(webhook_port, "default", "fleet")
        wait_for(lambda: cluster.get("bpfprograms", "execs") is None, 90, "execs to be pruned")
        assert all(node.program_state("execs") in (None, "Detached") for node in fleet)
        assert not any((node.pin_root / "execs").exists() for node in fleet)
        with api.client() as client:
            assert client.get("/v1/programs/execs").status_code == 404
            assert client.get("/v1/programs/execs/nodes").json() == []
        wait_for(lambda: condition(cluster.get("bpfprograms", "syscalls")), 60, "syscalls")


def test_standalone_commit_attaches_and_revert_detaches(
    api: services.Api, fleet: list[FleetNode], tmp_path: Path
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("empty fleet", {"programs/README.md": "Programs for the local fleet.\n"})
    source = git_source(repo)
    source["spec"]["interval"] = "1s"  # polling only; push is covered in the cluster test
    source_file = tmp_path / "gitsource.yaml"
    source_file.write_text(yaml.safe_dump(source))
    with running(
        [BPFLEET, "operator", "standalone", str(source_file)],
        operator_environment(api, tmp_path / "standalone", 0),
        tmp_path / "standalone.log",
    ):
        added = repo.commit("execs everywhere", {"programs/execs.yaml": EXECS})
        wait_for(
            lambda: all(node.program_state("execs") == "Attached" for node in fleet),
            120,
            "execs attached on every node",
        )
        repo.revert(added)
        wait_for(
            lambda: all(node.program_state("execs") in (None, "Detached") for node in fleet),
            120,
            "execs detached everywhere",
        )
        assert not any((node.pin_root / "execs").exists() for node in fleet)
        status = yaml.safe_load(
            (tmp_path / "standalone" / "gitsource-fleet.status.json").read_text()
        )
        assert status["lastAppliedRevision"] == f"main@sha1:{repo.head()}"
        assert status["inventory"] == []
