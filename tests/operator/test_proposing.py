"""Proposals written to real Git repositories: exactly one commit on a new branch, the
proposer its author; nothing pushed on a conflict; SSH-signed where the source verifies
signatures; branch names and paths held to their rules; a dev merge into a checked-out
local branch; pull requests opened as each forge documents; merged, applied and
rejected proposals found after a GitSource pass."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bpfleet_core.proposals import FileChange, ProposalWork, SourceKey
from bpfleet_core.resources import GitSourceSpec, GitSourceStatus
from bpfleet_operator import git, gitsource, kube, proposer, proposing
from tests.gitrepos import GitRepo
from tests.operator.forgeserver import ForgeServer
from tests.operator.kubernetes import Cluster

DB = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
"""
DB_OTHER = DB.replace("app: web", "app: other")
FLOWS = "flows:\n  - shop/other -> shop/db TCP/5432 expect allow\n"
BROKEN = DB_OTHER.replace("ingress:", "ingress:\n    - ports: [{port: 0}]")


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    found = GitRepo(tmp_path / "repo")
    found.commit("the fleet", {"policies/db.yaml": DB, "README.md": "the fleet\n"})
    return found


def source_spec(repo: GitRepo, **spec: Any) -> GitSourceSpec:
    return GitSourceSpec.model_validate({"url": str(repo.path), "path": "policies", **spec})


def work(
    repo: GitRepo, proposal: int = 7, base: str | None = "head", **fields: Any
) -> ProposalWork:
    revision = f"main@sha1:{repo.head()}" if base == "head" else base
    files = fields.pop(
        "files",
        (
            FileChange(path="policies/db.yaml", content=DB_OTHER, base_revision=revision),
            FileChange(path="policies/db.flows.yaml", content=FLOWS),
        ),
    )
    return ProposalWork(
        id=proposal,
        action="push",
        source=SourceKey(namespace="default", name="fleet"),
        files=tuple(files),
        message="db: other instead of web\n\nweb moved behind the API.",
        author="alice",
        subject="shop/db-ingress",
        **fields,
    )


def workspace(tmp_path: Path, repo: GitRepo, name: str = "proposals") -> git.Checkout:
    return git.Checkout(str(repo.path), tmp_path / name, allow_local=True)


def branches(repo: GitRepo) -> list[str]:
    return repo.git("branch", "--list", "--format=%(refname:short)", "bpfleet/*").split()


def test_a_proposal_becomes_exactly_one_commit_on_a_new_branch(
    repo: GitRepo, tmp_path: Path
) -> None:
    main = repo.head()
    report = proposing.push(
        work(repo), source_spec(repo), workspace(tmp_path, repo), proposing.Setup()
    )
    assert (report.state, report.branch, report.parent) == (
        "Pushed",
        "bpfleet/shop-db-ingress-7",
        main,
    )
    branch = "bpfleet/shop-db-ingress-7"
    assert repo.git("rev-parse", branch) == report.commit
    assert repo.git("rev-list", f"main..{branch}").split() == [report.commit]
    assert repo.git("diff", "--name-only", "main", branch).split() == [
        "policies/db.flows.yaml",
        "policies/db.yaml",
    ]
    assert repo.git("show", f"{branch}:policies/db.yaml") + "\n" == DB_OTHER
    author = repo.git("log", "-1", "--format=%an <%ae>|%cn <%ce>", branch)
    assert author == "alice <alice@bpfleet.invalid>|bpfleet operator <operator@bpfleet.invalid>"
    message = repo.git("log", "-1", "--format=%B", branch)
    assert message.startswith("db: other instead of web\n\nweb moved behind the API.")
    assert message.endswith("Bpfleet-Proposal: 7")
    assert repo.head() == main  # the tracked branch is untouched

    # Asked again (the operator restarted before reporting): the same commit, no second.
    again = proposing.push(
        work(repo, base=f"main@sha1:{main}"),
        source_spec(repo),
        workspace(tmp_path, repo, "after-restart"),
        proposing.Setup(),
    )
    assert (again.state, again.commit) == ("Pushed", report.commit)
    assert repo.git("rev-list", f"main..{branch}").split() == [report.commit]


def test_a_file_changed_since_the_draft_was_opened_pushes_nothing(
    repo: GitRepo, tmp_path: Path
) -> None:
    opened = f"main@sha1:{repo.head()}"
    theirs = DB.replace("app: web", "app: api")
    repo.commit("someone else", {"policies/db.yaml": theirs, "policies/db.flows.yaml": "x: 1\n"})
    report = proposing.push(
        work(repo, base=opened), source_spec(repo), workspace(tmp_path, repo), proposing.Setup()
    )
    assert report.state == "Conflict"
    assert {c.path: (c.base, c.theirs, c.ours) for c in report.conflicts} == {
        "policies/db.yaml": (DB, theirs, DB_OTHER),
        # New in the draft, but someone added it meanwhile: no base, theirs, ours.
        "policies/db.flows.yaml": (None, "x: 1\n", FLOWS),
    }
    assert report.parent == repo.head()
    assert branches(repo) == []


def test_nothing_changed_is_no_commit(repo: GitRepo, tmp_path: Path) -> None:
    same = (FileChange(path="policies/db.yaml", content=DB, base_revision=repo.head()),)
    report = proposing.push(
        work(repo, files=same), source_spec(repo), workspace(tmp_path, repo), proposing.Setup()
    )
    assert report.state == "Failed"
    assert "nothing to commit" in report.message
    assert branches(repo) == []


def _ssh_key(path: Path) -> tuple[str, str]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.read_text(), Path(f"{path}.pub").read_text().strip()


def verify(
    repo: GitRepo, commit: str, public: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    signers = tmp_path / "allowed-signers"
    signers.write_text(f'* namespaces="git" {public}\n')
    return subprocess.run(
        ["git", "-C", str(repo.path), "-c", f"gpg.ssh.allowedSignersFile={signers}",
         "verify-commit", commit],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_signed_where_the_source_verifies_signatures(repo: GitRepo, tmp_path: Path) -> None:
    private, public = _ssh_key(tmp_path / "operator")
    stranger, _ = _ssh_key(tmp_path / "stranger")
    spec = source_spec(repo, trustedSigningKeys=[public])
    unsigned = proposing.push(work(repo), spec, workspace(tmp_path, repo), proposing.Setup())
    assert unsigned.state == "Failed"
    assert "BPFLEET_OPERATOR_SIGNING_KEY" in unsigned.message
    untrusted = proposing.push(
        work(repo), spec, workspace(tmp_path, repo), proposing.Setup(signing_key=stranger)
    )
    assert untrusted.state == "Failed"
    assert "not among the GitSource's trustedSigningKeys" in untrusted.message
    assert branches(repo) == []

    report = proposing.push(
        work(repo), spec, workspace(tmp_path, repo), proposing.Setup(signing_key=private)
    )
    assert report.state == "Pushed"
    assert report.commit is not None
    checked = verify(repo, report.commit, public, tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "Good" in checked.stderr
    # The operator's own check, as a GitSource pass makes it, agrees.
    checkout = git.Checkout(str(repo.path), tmp_path / "check", allow_local=True)
    checkout.fetch(spec.ref.model_copy(update={"branch": report.branch}))
    checkout.verify(report.commit, [public])
    with pytest.raises(git.GitError, match="not signed by a trusted key"):
        checkout.verify(repo.head(), [public])  # the unsigned commit the repo started with


@pytest.mark.parametrize(
    ("branch", "words"),
    [
        ("main", "outside the operator's branch prefix"),
        ("bpfleet", "outside the operator's branch prefix"),
        ("-f", "may not start with '-'"),
        ("bpfleet/../main", "'..'"),
        ("bpfleet/x.lock", ".lock"),
        ("bpfleet/a b", "spaces"),
        ("bpfleet/a~1", "spaces, control characters"),
        ("bpfleet/@{-1}", "'@{'"),
    ],
)
def test_branch_names_are_checked_and_kept_under_the_prefix(
    repo: GitRepo, tmp_path: Path, branch: str, words: str
) -> None:
    report = proposing.push(
        work(repo, branch=branch), source_spec(repo), workspace(tmp_path, repo), proposing.Setup()
    )
    assert report.state == "Failed"
    assert words in report.message
    assert branches(repo) == []
    assert repo.git("branch", "--list").split() == ["*", "main"]


def test_a_branch_someone_else_made_is_never_overwritten(repo: GitRepo, tmp_path: Path) -> None:
    repo.git("branch", "bpfleet/taken")
    theirs = repo.git("rev-parse", "bpfleet/taken")
    report = proposing.push(
        work(repo, branch="bpfleet/taken"),
        source_spec(repo),
        workspace(tmp_path, repo),
        proposing.Setup(),
    )
    assert report.state == "Failed"
    assert "already exists" in report.message
    assert repo.git("rev-parse", "bpfleet/taken") == theirs


@pytest.mark.parametrize(
    "path", ["../escape.yaml", "policies/../../x.yaml", "README.md", "other/x.yaml", "/tmp/x.yaml"]
)
def test_paths_outside_the_source_are_refused_by_the_operator_too(
    repo: GitRepo, tmp_path: Path, path: str
) -> None:
    files = (FileChange(path=path, content=DB_OTHER),)
    report = proposing.push(
        work(repo, files=files), source_spec(repo), workspace(tmp_path, repo), proposing.Setup()
    )
    assert report.state == "Failed"
    assert branches(repo) == []


def merge_work(report: Any, proposal: int = 7) -> ProposalWork:
    return ProposalWork(
        id=proposal,
        action="merge",
        source=SourceKey(namespace="default", name="fleet"),
        author="alice",
        commit=report.commit,
        pushed_branch=report.branch,
        requested_by="bob",
    )


def test_dev_merge_into_the_checked_out_branch_of_a_local_repository(
    repo: GitRepo, tmp_path: Path
) -> None:
    private, public = _ssh_key(tmp_path / "operator")
    spec = source_spec(repo, proposals={"devMerge": True}, trustedSigningKeys=[public])
    setup = proposing.Setup(signing_key=private)
    pushed = proposing.push(work(repo), spec, workspace(tmp_path, repo), setup)
    assert pushed.state == "Pushed"
    # Someone commits elsewhere meanwhile: a real merge, not a fast-forward.
    repo.commit("docs", {"README.md": "the fleet, documented\n"})
    before = repo.head()

    reviewed = source_spec(repo, trustedSigningKeys=[public])  # devMerge off
    refused = proposing.merge(merge_work(pushed), reviewed, workspace(tmp_path, repo), setup)
    assert (refused.state, refused.message) == (
        "Pushed",
        "not merged: the GitSource does not allow merging from the API",
    )
    (repo.path / "README.md").write_text("uncommitted\n")  # a dirty checkout is not overwritten
    dirty = proposing.merge(merge_work(pushed), spec, workspace(tmp_path, repo), setup)
    assert dirty.state == "Pushed"
    assert dirty.message.startswith("not merged:")
    assert repo.head() == before
    repo.git("checkout", "--", "README.md")

    merged = proposing.merge(merge_work(pushed), spec, workspace(tmp_path, repo), setup)
    assert merged.state == "Merged"
    assert repo.head() == merged.merged_commit
    assert repo.git("log", "-1", "--format=%P").split() == [before, pushed.commit]
    assert repo.git("log", "-1", "--format=%an").strip() == "bob"
    assert (repo.path / "policies" / "db.yaml").read_text() == DB_OTHER  # the checkout follows
    assert repo.git("status", "--porcelain") == ""
    assert merged.merged_commit is not None
    assert verify(repo, merged.merged_commit, public, tmp_path).returncode == 0
    # Merged already: says so, merges nothing twice.
    twice = proposing.merge(merge_work(pushed), spec, workspace(tmp_path, repo), setup)
    assert (twice.state, twice.merged_commit) == ("Merged", merged.merged_commit)
    assert repo.head() == merged.merged_commit


@pytest.mark.parametrize(
    ("kind", "repository", "path", "auth"),
    [
        ("github", "platform/fleet", "/repos/platform/fleet/pulls", ("authorization", "Bearer t0k")),
        ("gitea", "platform/fleet", "/api/v1/repos/platform/fleet/pulls", ("authorization", "token t0k")),
        ("gitlab", "platform/net/fleet", "/api/v4/projects/platform%2Fnet%2Ffleet/merge_requests",
         ("private-token", "t0k")),
    ],
)  # fmt: skip
def test_pull_requests_are_opened_as_each_forge_documents(
    repo: GitRepo, tmp_path: Path, kind: str, repository: str, path: str, auth: tuple[str, str]
) -> None:
    with ForgeServer(kind) as forge:
        prefix = {"github": "", "gitea": "/api/v1", "gitlab": "/api/v4"}[kind]
        spec = source_spec(
            repo,
            proposals={
                "forge": {"type": kind, "apiUrl": forge.base + prefix, "repository": repository}
            },
        )
        access = proposer.Access(spec, git.Credentials(), "t0k", forge.ca)
        opener = proposer._opener(access)
        report = proposing.push(
            work(repo), spec, workspace(tmp_path, repo), proposing.Setup(), opener
        )
        assert report.state == "Pushed", report.message
        assert report.pull_request is not None
        assert report.pull_request.forge == kind
        assert report.pull_request.number == 1
        assert report.pull_request.url.startswith(forge.base)
        (request,) = forge.requests
        assert (request.method, request.path) == ("POST", path)
        assert request.headers[auth[0]] == auth[1]
        assert request.headers["content-type"] == "application/json"
        title, body = "db: other instead of web", request.body
        if kind == "gitlab":
            assert body["source_branch"] == "bpfleet/shop-db-ingress-7"
            assert (body["target_branch"], body["title"]) == ("main", title)
            assert "web moved behind the API." in body["description"]
        else:
            assert (body["head"], body["base"], body["title"]) == (
                "bpfleet/shop-db-ingress-7",
                "main",
                title,
            )
            assert "Proposed by alice through bpfleet (proposal 7)." in body["body"]
        if kind == "github":
            assert request.headers["accept"] == "application/vnd.github+json"
            assert request.headers["x-github-api-version"] == "2022-11-28"

        # Refused by the forge: the branch is pushed all the same, and the card says why.
        forge.status = 422
        refused = proposing.push(
            work(repo, proposal=8), spec, workspace(tmp_path, repo), proposing.Setup(), opener
        )
        assert (refused.state, refused.pull_request) == ("Pushed", None)
        assert "pull request was not opened" in refused.message
        assert "Validation Failed" in refused.message
        # A redirect is not followed: the token goes to the configured API only.
        forge.status, forge.redirect = 201, "https://127.0.0.1:1"
        moved = proposing.push(
            work(repo, proposal=9), spec, workspace(tmp_path, repo), proposing.Setup(), opener
        )
        assert moved.pull_request is None
        assert "307" in moved.message
        assert len(forge.requests) == 3


def test_merged_applied_and_rejected_proposals_are_found_after_a_pass(
    repo: GitRepo, cluster: Cluster, tmp_path: Path
) -> None:
    spec = source_spec(repo, proposals={"devMerge": True})
    setup = proposing.Setup()
    checkout = git.Checkout(str(repo.path), tmp_path / "source", allow_local=True)
    target = kube.KubeTarget(kube.Kube(kube.connect(cluster.url)))
    status = GitSourceStatus()

    def one_pass() -> gitsource.Result:
        nonlocal status
        result = gitsource.reconcile(
            spec, status, checkout, target, source="default/fleet", now=datetime.now(UTC)
        )
        status = result.status
        return result

    one_pass()
    good = proposing.push(work(repo, proposal=1), spec, workspace(tmp_path, repo), setup)
    bad_files = (FileChange(path="policies/db.yaml", content=BROKEN, base_revision=repo.head()),)
    bad = proposing.push(
        work(repo, proposal=2, files=bad_files), spec, workspace(tmp_path, repo), setup
    )
    tracked = [
        proposing.Tracked(1, "Pushed", good.commit),
        proposing.Tracked(2, "Pushed", bad.commit),
    ]
    result = one_pass()
    assert proposing.track(tracked, result.status, False, checkout) == []  # neither merged

    merged = proposing.merge(merge_work(good, 1), spec, workspace(tmp_path, repo), setup)
    result = one_pass()
    assert result.outcome == "Applied"
    (found,) = proposing.track(tracked, result.status, False, checkout)
    assert found[0] == 1
    assert (found[1].state, found[1].merged_commit) == ("Applied", merged.merged_commit)
    assert found[1].revision == f"main@sha1:{merged.merged_commit}"
    policy = cluster.get("networkpolicies", "db-ingress", "shop")
    assert policy is not None
    assert policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == {"app": "other"}

    # The broken one, merged by hand: its revision is rejected, with file and line.
    repo.git("merge", "--no-edit", "-X", "theirs", "bpfleet/shop-db-ingress-2")
    result = one_pass()
    assert result.outcome == "Rejected"
    tracked = [
        proposing.Tracked(1, "Applied", good.commit),
        proposing.Tracked(2, "Pushed", bad.commit),
    ]
    (found,) = proposing.track(tracked, result.status, True, checkout)
    assert (found[0], found[1].state) == (2, "Rejected")
    assert found[1].merged_commit == repo.head()
    assert found[1].errors[0].file == "policies/db.yaml"
    assert found[1].errors[0].line == 7


def test_conflict_texts_stay_within_what_one_report_carries(repo: GitRepo, tmp_path: Path) -> None:
    """A conflict's three texts go to the API in one body: past the budget, a file is
    named without its texts."""
    filler = "#" * (300 << 10) + "\n"
    opened = repo.commit("big", {"policies/big.yaml": DB + filler})
    repo.commit("theirs", {"policies/big.yaml": DB_OTHER + filler, "policies/db.yaml": DB_OTHER})
    files = (
        FileChange(path="policies/big.yaml", content=DB + "#\n" + filler, base_revision=opened),
        FileChange(path="policies/db.yaml", content=DB + "# ours\n", base_revision=opened),
    )
    report = proposing.push(
        work(repo, files=files), source_spec(repo), workspace(tmp_path, repo), proposing.Setup()
    )
    assert report.state == "Conflict"
    big, small = report.conflicts
    assert (big.path, big.omitted, big.base, big.theirs, big.ours) == (
        "policies/big.yaml",
        True,
        None,
        None,
        "",
    )
    assert (small.omitted, small.base, small.theirs) == (False, DB, DB_OTHER)
    assert len(report.model_dump_json(by_alias=True)) < (1 << 20)


def test_hostile_names_are_data_never_options(repo: GitRepo, tmp_path: Path) -> None:
    """A path or branch that reads like an option is written as a name, and runs nothing."""
    marker = tmp_path / "PWNED"
    path = f"policies/--exec=touch {marker}.yaml"
    files = (FileChange(path=path, content=DB_OTHER),)
    branch = f"bpfleet/--upload-pack=touch {marker}".replace(" ", "-")
    report = proposing.push(
        work(repo, files=files, branch=branch),
        source_spec(repo),
        workspace(tmp_path, repo),
        proposing.Setup(),
    )
    assert report.state == "Pushed", report.message
    assert not marker.exists()
    assert repo.git("rev-parse", "--verify", f"refs/heads/{branch}") == report.commit
    assert repo.git("diff", "--name-only", "main", f"refs/heads/{branch}") == path
