"""The rules the API and the operator both apply to proposals: paths, branch names (held
to Git's own verdict), the stages' order, revisions."""

from __future__ import annotations

import subprocess

import pytest

from bpfleet_core import proposals

NAMES = [
    "bpfleet/shop-db-ingress-12",
    "bpfleet/a.b/c_d",
    "bpfleet/--upload-pack=x",
    "-x",
    "bpfleet/a..b",
    "bpfleet/.hidden",
    "bpfleet/x.lock",
    "bpfleet/a b",
    "bpfleet/a\tb",
    "bpfleet/a~1",
    "bpfleet/a^",
    "bpfleet/a:b",
    "bpfleet/a?",
    "bpfleet/a*",
    "bpfleet/a[b",
    "bpfleet/a\\b",
    "bpfleet/@{-1}",
    "@",
    "bpfleet//double",
    "bpfleet/",
    "/bpfleet",
    "bpfleet/end.",
    "bpfleet/ünïcode",
]


@pytest.mark.parametrize("name", NAMES)
def test_branch_names_agree_with_git(name: str) -> None:
    """What the API accepts, Git accepts: the operator never finds out too late."""
    git = subprocess.run(
        ["git", "check-ref-format", f"refs/heads/{name}"], capture_output=True, check=False
    )
    ours = proposals.branch_problems(name)
    if not ours:
        assert git.returncode == 0, name
    if git.returncode != 0:
        assert ours, name


@pytest.mark.parametrize(
    ("path", "root", "fine"),
    [
        ("policies/db.yaml", "policies", True),
        ("policies/team/db.flows.yaml", "policies/", True),
        ("db.yml", ".", True),
        ("policiesx/db.yaml", "policies", False),
        ("policies/../db.yaml", ".", False),
        ("./db.yaml", ".", False),
        ("policies//db.yaml", ".", False),
        ("/db.yaml", ".", False),
        (".git/hooks/x.yaml", ".", False),
        ("a/.GIT/x.yaml", ".", False),
        ("db.json", ".", False),
        ("db\x00.yaml", ".", False),
        ("a\\b.yaml", ".", False),
        ("", ".", False),
        ("x" * 1100 + ".yaml", ".", False),
    ],
)
def test_paths_stay_inside_the_source(path: str, root: str, fine: bool) -> None:
    assert (proposals.path_problems(path, root) == []) is fine


def test_stages_follow_in_order() -> None:
    assert proposals.may_follow("Proposed", "Pushed")
    assert proposals.may_follow("Pushed", "Applied")  # merged and applied in one pass
    assert proposals.may_follow("Rejected", "Applied")  # a later revision applies it
    assert proposals.may_follow("Applied", "Applied")
    for current, new in [
        ("Applied", "Rejected"),
        ("Conflict", "Pushed"),
        ("Failed", "Pushed"),
        ("Pushed", "Conflict"),
        ("Merged", "Pushed"),
        ("Proposed", "Merged"),
    ]:
        assert not proposals.may_follow(current, new), (current, new)


def test_revisions_name_commits() -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert proposals.commit_of(f"main@sha1:{commit}") == commit
    assert proposals.commit_of(commit) == commit
    assert proposals.commit_of("main") is None
    assert proposals.commit_of("main@sha1:--exec=x") is None
    assert proposals.default_branch("bpfleet/", "shop", "db", 3) == "bpfleet/shop-db-3"
