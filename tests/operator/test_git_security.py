"""Git as an attacker would use it: URLs that are options or helpers, local paths into
other sources' clones, credentials on command lines, in the clear or to another host."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from bpfleet_core.resources import GitRef
from bpfleet_operator import git
from bpfleet_operator.settings import OperatorSettings
from tests.gitrepos import GitRepo, SmartHttpServer
from tests.manifests import program_yaml

MAIN = GitRef(branch="main")
PASSWORD = "t0ken-never-on-a-command-line"


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    found = GitRepo(tmp_path / "repo")
    found.commit("alpha", {"a.yaml": program_yaml("alpha")})
    return found


@pytest.mark.parametrize(
    "url",
    [
        "--upload-pack=touch {marker};",
        "-u touch {marker};",
        "ext::sh -c touch% {marker}",
    ],
)
def test_urls_that_git_would_run_as_commands_run_nothing(url: str, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    checkout = git.Checkout(url.format(marker=marker), tmp_path / "clone", allow_local=True)
    with pytest.raises(git.GitError):
        checkout.fetch(MAIN)
    assert not marker.exists()


def test_local_repositories_only_where_allowed_and_never_into_the_clones(
    repo: GitRepo, tmp_path: Path
) -> None:
    for url in (str(repo.path), f"file://{repo.path}"):
        with pytest.raises(git.GitError, match="local repositories are not allowed"):
            git.Checkout(url, tmp_path / "refused").fetch(MAIN)
    allowed = git.Checkout(str(repo.path), tmp_path / "clones" / "a", allow_local=True)
    assert allowed.fetch(MAIN).commit == repo.head()
    # Another source's clone is a local repository too, full of what it fetched.
    snooping = git.Checkout(
        f"file://{tmp_path / 'clones' / 'a'}",
        tmp_path / "clones" / "b",
        allow_local=True,
        state_dir=tmp_path / "clones",
    )
    with pytest.raises(git.GitError, match="clones"):
        snooping.fetch(MAIN)


def test_local_repositories_are_off_in_a_cluster_and_on_standalone_by_default() -> None:
    settings = OperatorSettings()
    assert settings.allows_local_sources(standalone=False) is False
    assert settings.allows_local_sources(standalone=True) is True
    assert (
        OperatorSettings(allow_local_sources=False).allows_local_sources(standalone=True) is False
    )


def git_command_lines() -> list[str]:
    """The command lines of the git processes running now, as any local user sees them."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        if line.startswith("git ") or "/git " in line or "git-remote" in line:
            found.append(line)
    return found


def test_https_passwords_never_appear_on_a_command_line(repo: GitRepo, tmp_path: Path) -> None:
    seen: list[str] = []
    with SmartHttpServer(
        repo.path.parent, "ci", PASSWORD, on_request=lambda: seen.extend(git_command_lines())
    ) as server:
        credentials = git.Credentials("ci", PASSWORD, ca=server.ca)
        checkout = git.Checkout(server.url(repo.path.name), tmp_path / "clone", credentials)
        assert checkout.fetch(MAIN).commit == repo.head()
    assert seen, "no git process was seen while it talked to the server"
    basic = base64.b64encode(f"ci:{PASSWORD}".encode()).decode()
    assert not [line for line in seen if PASSWORD in line or basic in line]
    assert os.environ.get("GIT_CONFIG_COUNT") is None  # nothing leaked into our own process


def test_no_basic_credentials_over_plain_http(repo: GitRepo, tmp_path: Path) -> None:
    with SmartHttpServer(repo.path.parent, "ci", PASSWORD, tls=False) as server:
        credentials = git.Credentials("ci", PASSWORD)
        checkout = git.Checkout(server.url(repo.path.name), tmp_path / "clone", credentials)
        with pytest.raises(git.GitError, match="plain http"):
            checkout.fetch(MAIN)
    assert not any(server.authorizations)


def test_credentials_go_only_to_the_host_of_the_url(repo: GitRepo, tmp_path: Path) -> None:
    # The repository's host redirects elsewhere: the other host must not get the password.
    with (
        SmartHttpServer(repo.path.parent, "ci", PASSWORD) as elsewhere,
        SmartHttpServer(
            repo.path.parent,
            "ci",
            PASSWORD,
            redirect=elsewhere.base.replace("127.0.0.1", "localhost"),
        ) as server,
    ):
        credentials = git.Credentials("ci", PASSWORD, ca=server.ca + elsewhere.ca)
        checkout = git.Checkout(server.url(repo.path.name), tmp_path / "clone", credentials)
        with pytest.raises(git.GitError):
            checkout.fetch(MAIN)
    assert elsewhere.authorizations  # the redirect was followed
    assert not any(elsewhere.authorizations)
