"""A GitSource's Secret goes only to the Git host its owner named on it: a source that
may name the Secret cannot have its credentials sent to a URL of its own choosing."""

from __future__ import annotations

import pytest

from bpfleet_core import failures
from bpfleet_operator import context, kube

DATA = {"username": "ci", "password": "t0ken", "ca.crt": "PEM"}


def secret(hosts: str | None) -> kube.Secret:
    annotations = {} if hosts is None else {context.GIT_HOST_ANNOTATION: hosts}
    return kube.Secret(DATA, annotations)


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        ("https://git.example.com/fleet.git", "git.example.com"),
        ("https://GIT.example.com:8443/fleet.git", "mirror.example.com, git.example.com"),
        ("ssh://git@git.example.com/fleet.git", "git.example.com"),
        ("git@git.example.com:fleet.git", "Git.Example.com"),
    ],
)
def test_credentials_go_to_the_hosts_the_secret_names(url: str, hosts: str) -> None:
    found = context.bind_credentials(url, "git", secret(hosts))
    assert (found.username, found.password, found.ca) == ("ci", "t0ken", "PEM")


def test_a_secret_without_the_annotation_is_refused() -> None:
    with pytest.raises(failures.PermanentFailure, match=r"no bpfleet\.io/git-host annotation"):
        context.bind_credentials("https://git.example.com/fleet.git", "git", secret(None))


def test_a_secret_for_another_host_is_refused() -> None:
    with pytest.raises(
        failures.PermanentFailure, match=r"is for git\.example\.com, not evil\.test"
    ):
        context.bind_credentials("https://evil.test/x.git", "git", secret("git.example.com"))
    with pytest.raises(failures.PermanentFailure, match=r"not git\.example\.com\.evil\.test"):
        context.bind_credentials(
            "https://git.example.com.evil.test/x.git", "git", secret("git.example.com")
        )
