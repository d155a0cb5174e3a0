"""``bpfleet get gitsources`` and ``bpfleet reconcile gitsource [--wait]`` against a real
API and a real standalone operator following a real repository: the table is what the
operator reported, and ``--wait`` ends only with a pass reported after its request."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from bpfleet_cli import fleetrepo
from bpfleet_cli.exits import ExitCode
from tests import services
from tests.cli.conftest import BPFLEET
from tests.cli.test_fleet_commands import one_line_error
from tests.conftest import SignedCatalog
from tests.gitrepos import GitRepo
from tests.operator.processes import operator_environment, running
from tests.polling import wait_for

pytestmark = pytest.mark.services

POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - ports:
        - port: 8080
"""
# A port range that ends before it starts: the operator rejects the revision.
BROKEN = POLICY.replace("        - port: 8080\n", "        - port: 8080\n          endPort: 80\n")
KEY = f"{fleetrepo.SOURCE_NAMESPACE}/{fleetrepo.SOURCE_NAME}"


def _row(listed: subprocess.CompletedProcess[str]) -> list[str]:
    """The source's row of ``get gitsources``, split into its cells (three spaces apart)."""
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:6] == ["NAMESPACE", "NAME", "STATE", "APPLIED", "ATTEMPTED", "REPORTED"]
    [row] = rows
    return [cell.strip() for cell in re.split(r" {3,}", row)]


def test_get_and_reconcile_gitsources_follow_the_operators_passes(
    redis: services.Redis, signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    repo = GitRepo(tmp_path / "repo")
    first = repo.commit("the web policy", {"policies/web.yaml": POLICY})
    # An hour between passes: every later pass here is one that was asked for.
    source_file = tmp_path / "gitsource.yaml"
    source_file.write_text(yaml.safe_dump(fleetrepo.git_source(repo.path, "main", "1h")))
    with services.api_server(
        f"sqlite:///{tmp_path}/bpfleet.db", redis.url, signed_catalog.trust, tmp_path
    ) as api:
        home = tmp_path / "home"
        home.mkdir()
        environment = {
            **os.environ,
            "XDG_CONFIG_HOME": str(home),
            "BPFLEET_API_URL": api.url,
            "BPFLEET_TOKEN": api.admin_token,
        }

        def bpfleet(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [BPFLEET, *args],
                env=environment,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        with running(
            [BPFLEET, "operator", "standalone", str(source_file)],
            operator_environment(api, tmp_path / "operator", 0),
            tmp_path / "operator.log",
        ):
            wait_for(lambda: "Ready" in bpfleet("get", "gitsources").stdout, 60, "the first pass")
            assert _row(bpfleet("get", "gitsources"))[:5] == [
                "default",
                "fleet",
                "Ready",
                f"main@sha1:{first[:7]}",
                f"main@sha1:{first[:7]}",
            ]
            documents = json.loads(bpfleet("get", "gitsources", "-o", "json").stdout)
            assert [d["lastAppliedRevision"] for d in documents] == [f"main@sha1:{first}"]
            assert documents[0]["reconcileRequestedAt"] is None

            # A broken commit: only the pass asked for now sees it, and --wait says how
            # it ended (rejected), where, and that nothing was applied.
            broken = repo.commit("a broken policy", {"policies/web.yaml": BROKEN})
            rejected = bpfleet("reconcile", "gitsource", KEY, "--wait", "--timeout", "2m")
            assert rejected.returncode == ExitCode.FOUND, (rejected.stdout, rejected.stderr)
            assert f"gitsource {KEY}: reconcile requested" in rejected.stdout
            one_line_error(
                rejected,
                ExitCode.FOUND,
                f"gitsource {KEY} Stalled",
                "policies/web.yaml:9: spec.ingress[0].ports[0].endPort",
            )
            assert _row(bpfleet("get", "gitsources", "-o", "wide"))[2:5] == [
                "Stalled",
                f"main@sha1:{first[:7]}",
                f"main@sha1:{broken[:7]}",
            ]

            fixed = repo.commit("fixed", {"policies/web.yaml": POLICY.replace("8080", "8081")})
            done = bpfleet("reconcile", "gitsource", "fleet", "-n", "default", "--wait")
            assert done.returncode == 0, (done.stdout, done.stderr)
            assert f"{KEY}: Ready, applied main@sha1:{fixed[:7]}" in done.stdout
            assert _row(bpfleet("get", "gitsources"))[2:5] == [
                "Ready",
                f"main@sha1:{fixed[:7]}",
                f"main@sha1:{fixed[:7]}",
            ]
            with api.client() as client:
                stored = client.get("/v1/policies/shop/web").json()
            assert stored["document"]["spec"]["ingress"][0]["ports"][0]["port"] == 8081

        # No operator any more: the pass reported before the request does not end the
        # wait, and the source shows the request as pending.
        waited = bpfleet("reconcile", "gitsource", KEY, "--wait", "--timeout", "3s")
        one_line_error(waited, ExitCode.TIMED_OUT, f"a pass of gitsource {KEY}", "waiting")
        assert _row(bpfleet("get", "gitsources"))[2] == "Ready (reconcile requested)"
        pending = json.loads(bpfleet("get", "gitsources", "-o", "json").stdout)[0]
        assert pending["reconcilePending"] is True
        assert pending["reconcileRequestedAt"] is not None
        one_line_error(
            bpfleet("reconcile", "gitsource", "default/nope"), ExitCode.NOT_FOUND, "default/nope"
        )
