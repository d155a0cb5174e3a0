"""The local fleet's Git repository (`bpfleet local up`): seeded once from examples/fleet,
kept across restarts, valid as the pipeline reads it, and its hook notifies the pipeline."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bpfleet_cli import fleetrepo
from bpfleet_cli.localfleet import free_port
from bpfleet_cli.main import app
from bpfleet_core import bundles, fitting, manifests
from bpfleet_core.resources import GitRef, GitSource
from bpfleet_operator import git, webhooks
from tests.conftest import SignedCatalog
from tests.gitrepos import GitRepo

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "fleet"


def example_files() -> set[str]:
    return {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*") if p.is_file()}


def test_seeding_makes_one_commit_of_the_examples_on_main(tmp_path: Path) -> None:
    repo = tmp_path / "fleet-repo"
    assert fleetrepo.seed(repo, EXAMPLES) is True
    seeded = GitRepo(repo)
    assert seeded.git("rev-list", "--count", "HEAD") == "1"
    assert set(seeded.git("ls-files").splitlines()) == example_files()
    assert seeded.git("status", "--porcelain") == ""
    assert fleetrepo.branch(repo) == "main"
    assert not [p for p in tmp_path.iterdir() if p != repo]  # no scratch left behind


def test_seeding_again_keeps_the_repository_and_its_commits(tmp_path: Path) -> None:
    repo = tmp_path / "fleet-repo"
    fleetrepo.seed(repo, EXAMPLES)
    seeded = GitRepo(repo)
    (repo / "programs" / "syscount.yaml").unlink()
    mine = seeded.commit("no syscount", remove=("programs/syscount.yaml",))
    seeded.git("checkout", "--quiet", "-b", "experiments")

    assert fleetrepo.seed(repo, EXAMPLES) is False
    assert seeded.head() == mine
    assert seeded.git("rev-list", "--count", "HEAD") == "2"
    assert not (repo / "programs" / "syscount.yaml").exists()
    assert fleetrepo.branch(repo) == "experiments"  # what the fleet then follows


def test_seeding_an_empty_directory_works_and_a_foreign_one_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert fleetrepo.seed(empty, EXAMPLES) is True
    assert (empty / "programs" / "execsnoop.yaml").exists()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    with pytest.raises(fleetrepo.RepositoryError, match="not a Git repository"):
        fleetrepo.seed(foreign, EXAMPLES)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    with pytest.raises(fleetrepo.RepositoryError, match="no examples"):
        fleetrepo.seed(tmp_path / "other", tmp_path / "missing")
    assert not (tmp_path / "other").exists()


def test_examples_fleet_validates() -> None:
    result = CliRunner().invoke(app, ["validate", str(EXAMPLES)])
    assert result.exit_code == 0, result.output
    assert "2 program(s)" in result.output


def test_the_commented_policy_validates_once_uncommented(tmp_path: Path) -> None:
    lines = (EXAMPLES / "policies" / "web.yaml").read_text().splitlines()
    start = lines.index("# apiVersion: bpfleet.io/v1alpha1")
    policy = tmp_path / "web.yaml"
    policy.write_text("\n".join(line.removeprefix("# ") for line in lines[start:]) + "\n")
    result = CliRunner().invoke(app, ["validate", str(policy)])
    assert result.exit_code == 0, result.output
    assert "1 network policy(ies)" in result.output


def test_the_seeded_repository_as_the_pipeline_reads_it(
    tmp_path: Path, signed_catalog: SignedCatalog
) -> None:
    repo = tmp_path / "fleet-repo"
    fleetrepo.seed(repo, EXAMPLES)
    source = GitSource.model_validate(fleetrepo.git_source(repo, "main", "2s"))
    assert source.spec.proposals.dev_merge  # "Merge (dev)" for the local fleet's proposals
    checkout = git.Checkout(source.spec.url, tmp_path / "clone", allow_local=True)
    revision = checkout.fetch(GitRef(branch="main"))
    files = checkout.manifests(revision.commit, source.spec.path)
    assert "README.md" in example_files()
    assert "README.md" not in files  # only manifests are read

    bundle = bundles.load(files)
    assert bundle.valid, bundle.problems
    assert {p.name for p in bundle.programs} == {"execsnoop", "syscount"}
    # What the fleet API checks before taking a spec: entry points, attach kinds, config.
    for program in bundle.programs:
        manifest = manifests.Manifest.model_validate_json(
            signed_catalog.files(program.spec.artifact.name).manifest.read_text()
        )
        assert fitting.attach_problems(program.spec.attach, manifest) == []
        assert fitting.config_problems(manifest, program.spec.config) == []


def test_the_post_commit_hook_notifies_the_pipeline(tmp_path: Path) -> None:
    repo = tmp_path / "fleet-repo"
    fleetrepo.seed(repo, EXAMPLES)
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text("s3cret\n")
    notified = threading.Event()
    receiver = webhooks.Receiver(
        "127.0.0.1",
        free_port(),
        lambda ns, name: b"s3cret" if (ns, name) == ("default", "fleet") else None,
        lambda *_: notified.set(),
    ).start()
    try:
        url = f"http://127.0.0.1:{receiver.port}/hooks/gitsources/default/fleet"
        hook = fleetrepo.install_hook(repo, url, secret_file)
        assert hook is not None
        assert fleetrepo.install_hook(repo, url, secret_file) == hook  # ours: rewritten
        document = yaml.safe_load((repo / "programs" / "execsnoop.yaml").read_text())
        document["spec"]["config"]["target_uid"] = 0
        GitRepo(repo).commit("root only", {"programs/execsnoop.yaml": yaml.safe_dump(document)})
        assert notified.wait(10)
    finally:
        receiver.stop()


def test_a_hook_of_the_users_own_is_kept(tmp_path: Path) -> None:
    repo = tmp_path / "fleet-repo"
    fleetrepo.seed(repo, EXAMPLES)
    theirs = repo / ".git" / "hooks" / "post-commit"
    theirs.write_text("#!/bin/sh\necho mine\n")
    assert fleetrepo.install_hook(repo, "http://127.0.0.1:1/", tmp_path / "secret") is None
    assert theirs.read_text() == "#!/bin/sh\necho mine\n"
