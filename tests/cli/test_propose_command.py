"""`bpfleet propose` and `bpfleet get proposals`: what the policy editor does, from CI or
a terminal, through the fleet API and the standalone operator on a real repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import services
from tests.conftest import SignedCatalog
from tests.gitrepos import GitRepo
from tests.operator.processes import operator_environment, running
from tests.polling import wait_for

pytestmark = pytest.mark.services

BPFLEET = str(Path(sys.executable).parent / "bpfleet")
WEB = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
"""
OTHER = WEB.replace("app: web", "app: other")
FLOWS = "flows:\n  - shop/other -> shop/db TCP/5432 expect allow\n"


class Setup:
    def __init__(self, api: services.Api, repo: GitRepo, tokens: dict[str, str], home: Path):
        self.api, self.repo, self.tokens, self.home = api, repo, tokens, home

    def run(self, *args: str, role: str = "proposer") -> subprocess.CompletedProcess[str]:
        environment = {
            **os.environ,
            "XDG_CONFIG_HOME": str(self.home),
            "BPFLEET_API_URL": self.api.url,
            "BPFLEET_TOKEN": self.tokens[role],
        }
        return subprocess.run(
            [BPFLEET, *args],
            env=environment,
            capture_output=True,
            text=True,
            timeout=180,
            cwd=self.repo.path,
            check=False,
        )


@pytest.fixture(scope="module")
def setup(
    redis: services.Redis, signed_catalog: SignedCatalog, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("propose")
    repo = GitRepo(work / "repo")
    repo.commit("db", {"policies/db.yaml": WEB})
    source = {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "GitSource",
        "metadata": {"name": "fleet", "namespace": "default"},
        "spec": {"url": f"file://{repo.path}", "path": "policies", "interval": "1s"},
    }
    (work / "gitsource.yaml").write_text(yaml.safe_dump(source))
    with services.api_server(
        f"sqlite:///{work}/bpfleet.db", redis.url, signed_catalog.trust, work
    ) as api:
        tokens = {"admin": api.admin_token}
        with api.client() as client:
            for role, name in (("proposer", "alice"), ("viewer", "val")):
                minted = client.post("/v1/tokens", json={"name": name, "role": role})
                tokens[role] = minted.json()["token"]
        with running(
            [BPFLEET, "operator", "standalone", str(work / "gitsource.yaml")],
            operator_environment(api, work / "state", 0),
            work / "standalone.log",
        ):

            def applied() -> bool:
                with api.client() as client:
                    found = client.get("/v1/gitsources/default/fleet")
                return found.status_code == 200 and bool(found.json()["lastAppliedRevision"])

            wait_for(applied, 60, "the source's first pass")
            home = work / "home"
            home.mkdir()
            yield Setup(api, repo, tokens, home)


def test_propose_waits_for_the_branch_and_get_lists_it(setup: Setup) -> None:
    repo = setup.repo
    (repo.path / "policies" / "db.yaml").write_text(OTHER)
    (repo.path / "policies" / "db.flows.yaml").write_text(FLOWS)
    done = setup.run(
        "propose",
        "--source",
        "default/fleet",
        "policies/db.yaml",
        "policies/db.flows.yaml",
        "-m",
        "db: other only",
        "--wait",
    )
    repo.git("checkout", "--", "policies/db.yaml")
    (repo.path / "policies" / "db.flows.yaml").unlink()
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("proposal ")
    assert "(default/fleet): Pushed bpfleet/shop-db-ingress-" in line
    branch = line.split(" Pushed ")[1].split()[0]
    assert repo.git("diff", "--name-only", "main", branch).split() == [
        "policies/db.flows.yaml",
        "policies/db.yaml",
    ]
    assert repo.git("log", "-1", "--format=%an %s", branch) == "alice db: other only"

    listed = setup.run("get", "proposals", role="viewer")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "SOURCE", "STAGE", "AUTHOR", "BRANCH", "ENFORCING", "AGE"]
    assert any(row.split()[1:5] == ["default/fleet", "Pushed", "alice", branch] for row in rows)
    as_json = json.loads(setup.run("get", "proposals", "-o", "json").stdout)
    assert branch in {card["branch"] for card in as_json}
    # The source it came from, with the revision it applies (the default --base).
    sources = setup.run("get", "gitsources").stdout.splitlines()
    assert sources[1].split()[:4] == ["default", "fleet", "Ready", f"main@sha1:{repo.head()[:7]}"]


def test_a_stale_base_is_a_conflict_and_pushes_nothing(setup: Setup) -> None:
    repo = setup.repo
    opened = repo.head()
    repo.commit("someone else", {"policies/db.yaml": WEB.replace("app: web", "app: api")})
    before = repo.git("branch", "--list", "--format=%(refname:short)")
    (repo.path / "policies" / "db.yaml").write_text(OTHER)
    done = setup.run(
        "propose", "--source", "default/fleet", "policies/db.yaml", "-m", "late",
        "--base", opened, "--wait",
    )  # fmt: skip
    repo.git("checkout", "--", "policies/db.yaml")
    assert done.returncode == 1, done.stderr
    assert "changed on the tracked branch since" in done.stderr
    assert "policies/db.yaml; nothing was pushed" in done.stderr
    assert repo.git("branch", "--list", "--format=%(refname:short)") == before


def test_refusals_are_one_line_with_their_codes(setup: Setup, tmp_path: Path) -> None:
    bad = setup.repo.path / "policies" / "bad.yaml"
    bad.write_text(WEB.replace("    - from:", "    - ports: [{port: 0}]\n      from:"))
    refused = setup.run("propose", "--source", "default/fleet", "policies/bad.yaml", "-m", "x")
    bad.unlink()
    assert refused.returncode == 9, refused.stderr
    assert "spec.ingress[0].ports[0].port: Invalid value: 0" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    outside = tmp_path / "x.yaml"
    outside.write_text(WEB)
    elsewhere = setup.run("propose", "--source", "default/fleet", str(outside), "-m", "x")
    assert elsewhere.returncode == 2
    assert "not under --root" in elsewhere.stderr

    viewer = setup.run(
        "propose", "--source", "default/fleet", "policies/db.yaml", "-m", "x", role="viewer"
    )
    assert viewer.returncode == 6, viewer.stderr
    unknown = setup.run("propose", "--source", "default/nowhere", "policies/db.yaml", "-m", "x")
    assert unknown.returncode == 8, unknown.stderr
