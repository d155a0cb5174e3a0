"""CI against the live fleet: ``bpfleet diff`` says exactly what a commit then changes
(programs and connectivity cells), and the example GitHub and GitLab pipelines run their
own steps against a local fleet of three real agents."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bpfleet_cli.diffing import Flip
from bpfleet_cli.exits import ExitCode
from bpfleet_core.netpol import models, simulating
from bpfleet_core.netpol.validating import validate as validate_policy
from tests.cli.conftest import BPFLEET, REPO, Fleet
from tests.cli.test_fleet_commands import artifacts_of, github_annotations
from tests.conftest import SignedCatalog
from tests.gitrepos import GitRepo
from tests.manifests import program_yaml
from tests.operator.processes import operator_environment, running
from tests.polling import wait_for

pytestmark = [pytest.mark.bpf, pytest.mark.services]

EXAMPLES = REPO / "examples" / "ci"
DB, WEB, OTHER = "shop/db", "shop/web", "shop/other"
PG = 5432
# Ports on either side of each boundary the new policy draws, and elsewhere.
SAMPLES = [("TCP", port) for port in (1, 80, PG - 1, PG, PG + 1, 65535)] + [
    ("UDP", port) for port in (53, PG)
]
POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
      ports: [{port: pg}]
"""


def endpoint(name: str, address: str, **labels: str) -> dict[str, Any]:
    return {
        "namespace": "shop",
        "name": name,
        "labels": labels,
        "ip": address,
        "interface": f"v{name}",
        "ports": [{"name": "pg", "port": PG, "protocol": "TCP"}],
    }


@pytest.fixture(scope="module")
def workloads(fleet: Fleet) -> models.Topology:
    """shop/db on node 0, shop/web and shop/other on node 1 (inside their pod CIDRs), as
    their agents declare them."""
    declared = {
        0: [endpoint("db", "10.216.1.2", app="db")],
        1: [endpoint("web", "10.216.2.2", app="web"), endpoint("other", "10.216.2.3", app="other")],
    }
    for index, endpoints in declared.items():
        document = {"endpoints": endpoints}
        (fleet.nodes[index].state_dir / "endpoints.yaml").write_text(yaml.safe_dump(document))
    with fleet.client() as client:

        def declared_all() -> models.Topology | None:
            found = client.topology()
            return found if len(found.pods) == 3 else None

        topology: models.Topology = wait_for(declared_all, 60, "the endpoints in the topology")
    return topology


def in_force(fleet: Fleet) -> tuple[dict[str, int], dict[str, int], list[models.Policy]]:
    """Program and policy generations, and the policies, as the fleet holds them now."""
    with fleet.client() as client:
        programs = {program.name: program.generation for program in client.programs()}
        views = client.policies()
    policies = [validate_policy(view.document).policy for view in views]
    return programs, {f"{v.namespace}/{v.name}": v.generation for v in views}, policies


def cells(
    before: list[models.Policy], after: list[models.Policy], topology: models.Topology
) -> set[tuple[str, str, str, int]]:
    """The sampled cells the simulator judges differently after than before."""
    found = set()
    for protocol, port in SAMPLES:
        old = simulating.matrix(before, topology, protocol, port)["allowed"]
        new = simulating.matrix(after, topology, protocol, port)["allowed"]
        found |= {
            (client, server, protocol, port)
            for client, row in old.items()
            for server, allowed in row.items()
            if new[client][server] != allowed
        }
    return found


def test_diff_lists_exactly_what_the_commit_then_changes(
    fleet: Fleet, workloads: models.Topology, signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    build = artifacts_of(signed_catalog, tmp_path / "build", "execsnoop", "syscount")
    assert fleet.run("artifact", "push", str(build), "--trust", str(fleet.trust)).returncode == 0
    repo = GitRepo(tmp_path / "repo")
    repo.commit(
        "execs everywhere, old on the core",
        {
            "fleet/programs/execs.yaml": program_yaml(),
            "fleet/programs/old.yaml": program_yaml(
                "old", "syscount", "count_sys_enter", "raw_tracepoint"
            ),
        },
    )
    source = {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "GitSource",
        "metadata": {"name": "fleet", "namespace": "default"},
        "spec": {
            "url": f"file://{repo.path}",
            "ref": {"branch": "main"},
            "path": "fleet",
            "interval": "1s",
        },
    }
    source_file = tmp_path / "gitsource.yaml"
    source_file.write_text(yaml.safe_dump(source))
    state = tmp_path / "standalone"
    status_file = state / "gitsource-fleet.status.json"

    def applied(commit: str) -> Any:
        def check() -> bool:
            try:
                status = json.loads(status_file.read_text())
            except (OSError, ValueError):
                return False
            return bool(status.get("lastAppliedRevision") == f"main@sha1:{commit}")

        return check

    with running(
        [BPFLEET, "operator", "standalone", str(source_file)],
        operator_environment(fleet.api, state, 0),
        tmp_path / "standalone.log",
    ):
        wait_for(applied(repo.head()), 120, "the first revision applied")
        programs_before, policies_before, policy_docs_before = in_force(fleet)
        assert {"execs", "old"} <= set(programs_before)
        assert fleet.run("diff", str(repo.path / "fleet"), "--no-prune").returncode == 0

        # The change, as a pull request holds it: not committed yet.
        manifests = repo.path / "fleet"
        (manifests / "programs" / "execs.yaml").write_text(
            program_yaml() + "  config: {target_uid: 0}\n"
        )
        (manifests / "programs" / "old.yaml").unlink()
        (manifests / "programs" / "syscalls.yaml").write_text(
            program_yaml("syscalls", "syscount", "count_sys_enter", "raw_tracepoint")
            + "  nodeSelector: {matchLabels: {tier: edge}}\n"
        )
        (manifests / "policies").mkdir()
        (manifests / "policies" / "db.yaml").write_text(POLICY)

        done = fleet.run("diff", str(manifests), "--no-prune", "-o", "json")
        assert done.returncode == ExitCode.FOUND, done.stderr
        assert done.stdout, done.stderr
        kept = json.loads(done.stdout)  # --no-prune: the removal is not counted
        assert {(p["name"], p["action"]) for p in kept["programs"]} == {
            ("execs", "changed"),
            ("syscalls", "added"),
        }
        done = fleet.run("diff", str(manifests), "-o", "json")
        assert done.returncode == ExitCode.FOUND, done.stderr
        plan = json.loads(done.stdout)
        listed = {(p["name"], p["action"]) for p in plan["programs"]}
        others = set(programs_before) - {"execs", "old"}  # other tests' programs, pruned too
        assert listed == {
            ("execs", "changed"),
            ("old", "removed"),
            ("syscalls", "added"),
            *((name, "removed") for name in others),
        }
        programs = {p["name"]: p for p in plan["programs"]}
        names = [node.name for node in fleet.nodes]
        assert programs["execs"]["nodes"] == sorted(names)
        assert programs["execs"]["incompatible"] == [
            f"1 of 3 nodes lack map type ringbuf ({names[2]})"
        ]
        assert "+  target_uid: 0" in programs["execs"]["spec_diff"]
        assert programs["syscalls"]["nodes"] == sorted(names[:2])  # the edge nodes
        assert [(p["key"], p["action"]) for p in plan["policies"]] == [("shop/db-ingress", "added")]
        flips = [
            Flip(
                f["client"],
                f["server"],
                f["protocol"],
                tuple(
                    (int(low), int(high or low))
                    for low, _, high in (part.partition("-") for part in f["ports"].split(","))
                ),
                f["before"] == "allowed",
                f["after"] == "allowed",
            )
            for f in plan["connectivity"]
        ]
        assert {(f.client, f.server, f.protocol, f.ports_text) for f in flips} == {
            (WEB, DB, "TCP", f"1-{PG - 1},{PG + 1}-65535"),
            (WEB, DB, "UDP", "1-65535"),
            (OTHER, DB, "TCP", "1-65535"),
            (OTHER, DB, "UDP", "1-65535"),
        }
        assert all(f["policies"] == ["shop/db-ingress"] for f in plan["connectivity"])

        # The text a person reads, and the annotations on the pull request.
        text = fleet.run("diff", str(manifests))
        assert "BpfProgram execs changed (" in text.stdout
        assert (
            f"shop/web -> shop/db TCP 1-{PG - 1},{PG + 1}-65535: allowed -> denied" in text.stdout
        )
        notices = github_annotations(fleet.run("diff", str(manifests), "-o", "github").stdout)
        added = next(
            a for a in notices if a["message"].startswith("NetworkPolicy shop/db-ingress added")
        )
        assert (added["severity"], added["file"], added["line"]) == (
            "notice",
            str(manifests / "policies" / "db.yaml"),
            "3",
        )
        assert "other -> shop/db TCP 1-65535: allowed -> denied" in added["message"]

        # Applied: exactly those programs get a new generation or go, and exactly those
        # cells flip, by the fleet's own policies and topology.
        repo.git("add", "-A")
        commit = repo.commit("the change")
        wait_for(applied(commit), 120, "the change applied")
        programs_after, policies_after, policy_docs_after = in_force(fleet)
        changed = {
            name
            for name in set(programs_before) | set(programs_after)
            if programs_before.get(name) != programs_after.get(name)
        }
        assert changed == {name for name, _ in listed}
        assert set(policies_after) - set(policies_before) == {"shop/db-ingress"}
        with fleet.client() as client:
            topology = client.topology()
        expected = cells(policy_docs_before, policy_docs_after, topology)
        predicted = {
            (flip.client, flip.server, protocol, port)
            for flip in flips
            for protocol, port in SAMPLES
            if flip.protocol == protocol and flip.covers(port)
        }
        assert predicted == expected
        assert fleet.run("diff", str(manifests)).returncode == 0  # in force now: no change


# ------------------------------------------------------------------- the CI examples


def checkout(tmp_path: Path) -> Path:
    """The repository's tracked files the pipelines read, as a CI checkout holds them."""
    target = tmp_path / "checkout"
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "bpf-catalog", "examples"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in tracked:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes((REPO / name).read_bytes())
    return target


def ci_variables(fleet: Fleet, **extra: str) -> dict[str, str]:
    """What the CI system's secrets and variables hold for the fleet under test."""
    return {
        "BPFLEET_API_URL": fleet.api.url,
        "BPFLEET_TOKEN": fleet.api.admin_token,
        "BPFLEET_SIGNING_KEY": fleet.ci_key.read_text(),
        "BPFLEET_CI_PUBLIC_KEY": (fleet.trust / "ci.pub").read_text(),
        "BPFLEET_ALLOW_INCOMPATIBLE": "0",  # the workflow's default when the variable is unset
        **extra,
    }


def bash(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """A step as the runners run one: bash, exiting at the first failure; ``bpfleet`` on
    the PATH, as the pipelines' install step leaves it."""
    env = {**env, "PATH": f"{Path(BPFLEET).parent}:{env.get('PATH', '')}"}
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def run_github_workflow(
    fleet: Fleet, work: Path, variables: dict[str, str]
) -> list[tuple[str, subprocess.CompletedProcess[str]]]:
    """Every ``run`` step of the workflow's job in order, as the runner would, until one
    fails. ``uses`` steps and the install step are the runner's own setup, done here."""
    workflow = yaml.safe_load((EXAMPLES / "github" / "bpfleet.yml").read_text())
    [job] = workflow["jobs"].values()
    temp = work / "runner-temp"
    temp.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(work / "home"),
        "RUNNER_TEMP": str(temp),
        "GITHUB_WORKSPACE": str(work / "checkout"),
    }
    for scope in (workflow.get("env", {}), job.get("env", {})):
        for key, value in scope.items():
            text = str(value)
            if "${{" in text:
                assert key in variables, f"the test gives no value for {key} ({text})"
                env[key] = variables[key]
            else:
                env[key] = text
    ran = []
    for step in job["steps"]:
        if "uses" in step or step.get("id") == "install":
            continue
        done = bash(step["run"], {**env, **step.get("env", {})}, work / "checkout")
        ran.append((step["id"], done))
        if done.returncode != 0:
            break
    return ran


@pytest.fixture
def ci_checkout(tmp_path: Path) -> Path:
    checkout(tmp_path)
    return tmp_path


def test_the_github_workflow_checks_a_pull_request(fleet: Fleet, ci_checkout: Path) -> None:
    # With no incompatible node allowed, the pull request fails at preflight, on the
    # manifest's own line.
    ran = run_github_workflow(fleet, ci_checkout, ci_variables(fleet))
    assert [step for step, _ in ran] == ["build", "sign", "push", "validate", "preflight"], [
        (step, done.stdout, done.stderr) for step, done in ran
    ]
    for step, done in ran[:-1]:
        assert done.returncode == 0, (step, done.stdout, done.stderr)
    preflight = ran[-1][1]
    assert preflight.returncode == ExitCode.FOUND
    [error] = [a for a in github_annotations(preflight.stdout) if a["severity"] == "error"]
    assert error["file"] == "examples/fleet/programs/execsnoop.yaml"
    assert error["line"] == "5"  # metadata.name
    assert (
        f"lack map type ringbuf: kernel {os.uname().release} ({fleet.nodes[2].name})"
        in error["message"]
    )
    assert "pushed execsnoop@1.0.0" in ran[2][1].stdout

    # Allowing one: every step passes, and the diff says what merging would change.
    ran = run_github_workflow(
        fleet, ci_checkout, ci_variables(fleet, BPFLEET_ALLOW_INCOMPATIBLE="1")
    )
    assert [step for step, _ in ran] == ["build", "sign", "push", "validate", "preflight", "diff"]
    for step, done in ran:
        assert done.returncode == 0, (step, done.stdout, done.stderr)
    diff = ran[-1][1]
    notices = github_annotations(diff.stdout)
    assert {a["message"].split(" (")[0] for a in notices if a["title"] == "program added"} == {
        "BpfProgram execsnoop added",
        "BpfProgram syscount added",
    }
    junit = ci_checkout / "runner-temp" / "diff.xml"
    assert junit.exists()


def test_the_gitlab_pipeline_checks_a_merge_request(fleet: Fleet, ci_checkout: Path) -> None:
    pipeline = yaml.safe_load((EXAMPLES / "gitlab" / ".gitlab-ci.yml").read_text())
    job = pipeline["bpfleet"]
    project = ci_checkout / "checkout"
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(ci_checkout / "home"),
        "CI_PROJECT_DIR": str(project),
        **{key: str(value) for key, value in job["variables"].items()},
        **ci_variables(fleet),
    }
    done = bash("\n".join(job["script"]), env, project)
    # Node 2 cannot run execsnoop and no incompatible node is allowed: the job fails, and
    # its reports say why, where.
    assert done.returncode == 1, (done.stdout, done.stderr)
    report = json.loads((project / job["artifacts"]["reports"]["codequality"]).read_text())
    errors = [issue for issue in report if issue["severity"] == "major"]
    assert [issue["location"] for issue in errors] == [
        {"path": "examples/fleet/programs/execsnoop.yaml", "lines": {"begin": 5}}
    ]
    assert "lack map type ringbuf" in errors[0]["description"]
    assert {issue["check_name"] for issue in report} >= {
        "bpfleet/preflight/incompatible nodes",
        "bpfleet/diff/program added",
    }
    assert len({issue["fingerprint"] for issue in report}) == len(report)
    for name in ("validate", "preflight", "diff"):
        assert (project / f"bpfleet-{name}.xml").exists()
