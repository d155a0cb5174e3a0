"""The rendered chart through the real kubectl's client-side dry run, which checks every
object against Kubernetes' schemas (served by a stand-in API server, tests/chart/apiserver)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart.apiserver import StandInApiServer
from tests.chart.conftest import CHART, REPO, Rendered

KUBECTL = REPO / ".dev" / "bin" / "kubectl"

BROKEN_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken, namespace: bpfleet}
spec:
  selector: {matchLabels: {app: broken}}
  template:
    metadata: {labels: {app: broken}}
    spec:
      containers:
        - name: broken
          image: bpfleet/api:0.1.0
          imagePullPolicyy: Always
          ports: [{containerPort: "eighty"}]
"""


def kubernetes_version(helm: Path) -> str:
    """The minor version of the kubectl scripts/install-helm.sh installs, as x.y.0."""
    done = subprocess.run(
        [str(KUBECTL), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    client = json.loads(done.stdout)["clientVersion"]
    return f"{client['major']}.{client['minor'].rstrip('+')}.0"


@pytest.fixture(scope="module")
def api_server(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandInApiServer]:
    with StandInApiServer(kubernetes_version(helm)).serving() as server:
        server.cache = tmp_path_factory.mktemp("kube-cache")
        yield server


def dry_run(server: StandInApiServer, manifests: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(KUBECTL),
            f"--server={server.url}",
            # Discovery cached apart from this machine's, and from other servers' answers.
            f"--cache-dir={server.cache}",
            "apply",
            "--dry-run=client",
            "--validate=strict",
            "-f",
            "-",
        ],
        input=manifests,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "KUBECONFIG": "/nonexistent"},  # no kubeconfig of this machine's
    )


@pytest.mark.parametrize("which", ["default", "override"])
def test_rendered_manifests_pass_kubectl_dry_run(
    api_server: StandInApiServer, which: str, request: pytest.FixtureRequest
) -> None:
    rendered: Rendered = request.getfixturevalue(which)
    done = dry_run(api_server, rendered.text)
    assert done.returncode == 0, done.stderr
    # cert-manager's Certificate (override) has no schema in Kubernetes itself.
    expected = [doc for doc in rendered.documents if doc["apiVersion"] != "cert-manager.io/v1"]
    assert done.stdout.count("(dry run)") == len(expected), done.stdout
    assert "GET /openapi/v2" in api_server.requests  # validated, not skipped


def test_crds_pass_kubectl_dry_run(api_server: StandInApiServer) -> None:
    crds = "\n---\n".join(path.read_text() for path in sorted((CHART / "crds").glob("*.yaml")))
    done = dry_run(api_server, crds)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("customresourcedefinition.apiextensions.k8s.io/") == 3


def test_kubectl_refuses_what_the_api_server_would(api_server: StandInApiServer) -> None:
    done = dry_run(api_server, BROKEN_DEPLOYMENT)
    assert done.returncode != 0
    assert 'unknown field "imagePullPolicyy"' in done.stderr, done.stderr
    assert (
        'containerPort): invalid type for io.k8s.api.core.v1.ContainerPort.containerPort: got "string", expected "integer"'
        in done.stderr
    ), done.stderr
