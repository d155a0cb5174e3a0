"""What the BpfProgram spec refuses before anything reaches a node."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from bpfleet_core.manifests import AttachKind
from bpfleet_core.resources import (
    ArtifactRef,
    AttachPoint,
    GitSourceSpec,
    SelectorSyntaxError,
    parse_git_url,
    parse_selector,
)
from tests.crdschemas import crd_errors


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0-rc.1", "v1+build.7", "2024_01"])
def test_ordinary_versions_are_accepted(version: str) -> None:
    assert ArtifactRef(name="xdp_counter", version=version).version == version


@pytest.mark.parametrize(
    "version", ["../../etc", "1/0", "..", "1..2", ".hidden", "", "x" * 65, "1.0\n", "a b"]
)
def test_versions_that_could_leave_the_artifact_directory_are_refused(version: str) -> None:
    with pytest.raises(ValidationError):
        ArtifactRef(name="xdp_counter", version=version)


@pytest.mark.parametrize(
    "fields",
    [
        {"type": AttachKind.XDP, "interfaces": ("eth\x000",)},
        {"type": AttachKind.TC, "interfaces": ("eth0\x01",), "direction": "ingress"},
        {"type": AttachKind.CGROUP_SKB, "cgroup": "web\x00/../x"},
        {"type": AttachKind.CGROUP_SKB, "cgroup": "web\x7f"},
        {"type": AttachKind.TRACEPOINT, "target": "sched/sched_process_exec\x00"},
        {"type": AttachKind.RAW_TRACEPOINT, "target": "sys_enter\x00"},
        {"type": AttachKind.RAW_TRACEPOINT, "target": "sys/enter"},
    ],
)
def test_control_characters_in_hook_targets_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AttachPoint(entry_point="main", **fields)


def test_ordinary_hook_targets_are_accepted() -> None:
    AttachPoint(entry_point="m", type=AttachKind.XDP, interfaces=("eth0.100", "veth-a"))
    AttachPoint(entry_point="m", type=AttachKind.CGROUP_SKB, cgroup="/system.slice/web")
    AttachPoint(entry_point="m", type=AttachKind.RAW_TRACEPOINT, target="sys_enter")


# --- GitSource URLs ---------------------------------------------------------------

REFUSED_URLS = [
    "--upload-pack=touch PWNED;",  # an option to git fetch: runs a command
    "-uhttps://example.com/repo.git",
    "ext::sh -c touch% /tmp/pwned",  # git's remote helper syntax
    "fd::17",
    "http://git.example.com/fleet.git",  # plain http
    "git://git.example.com/fleet.git",
    "https://ci:t0ken@git.example.com/fleet.git",  # credentials belong in the Secret
    "https://-oProxyCommand=x/fleet.git",
    "ssh://-oProxyCommand=touch%20x/fleet.git",
    "ssh://git@host",  # no path
    "git@-oProxyCommand=x:fleet.git",
    "-git@host:fleet.git",
    "git@host::fleet.git",
    "host:fleet.git",  # scp-like needs the user, as everyone writes it
    "relative/path",
    "file://relative",
    "https://git.example.com/fleet .git",
    "https://git.example.com/fleet.git\n--upload-pack=x",
]
ACCEPTED_URLS = {
    "https://github.com/org/fleet.git": ("https", "github.com"),
    "https://Git.Example.com:8443/a/b": ("https", "git.example.com"),
    "https://[2001:db8::1]/fleet.git": ("https", "2001:db8::1"),
    "ssh://git@github.com/org/fleet.git": ("ssh", "github.com"),
    "ssh://git@127.0.0.1:2222/srv/fleet": ("ssh", "127.0.0.1"),
    "git@github.com:org/fleet.git": ("ssh", "github.com"),
    "file:///srv/git/fleet": ("local", None),
    "/srv/git/fleet": ("local", None),
}


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_git_urls_that_are_options_helpers_or_plain_text_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="url"):
        GitSourceSpec(url=url)
    with pytest.raises(ValueError, match="use https://host/path"):
        parse_git_url(url)


@pytest.mark.parametrize("url", REFUSED_URLS[:-1])  # the CRD's pattern is applied by Go's RE2
def test_the_crd_refuses_the_same_urls(url: str) -> None:
    document = {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "GitSource",
        "metadata": {"name": "fleet", "namespace": "default"},
        "spec": {"url": url},
    }
    assert any("spec.url" in error for error in crd_errors(document))


@pytest.mark.parametrize(("url", "expected"), ACCEPTED_URLS.items())
def test_https_ssh_and_local_forms_are_accepted(url: str, expected: tuple[str, str]) -> None:
    assert GitSourceSpec(url=url).url == url
    found = parse_git_url(url)
    assert (found.transport, found.host) == expected
    document = {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "GitSource",
        "metadata": {"name": "fleet", "namespace": "default"},
        "spec": {"url": url},
    }
    assert crd_errors(document) == []


def test_the_refusal_says_what_is_accepted() -> None:
    with pytest.raises(ValidationError) as raised:
        GitSourceSpec(url="http://git.example.com/fleet.git")
    assert "plain http" in str(raised.value)
    assert "https://" in str(raised.value)


# ------------------------------------------------------------------ selector strings


@pytest.mark.parametrize(
    ("text", "matching", "not_matching"),
    [
        ("", {}, None),
        ("tier=edge", {"tier": "edge"}, {"tier": "core"}),
        ("tier==edge", {"tier": "edge"}, {}),
        ("tier!=edge", {}, {"tier": "edge"}),
        ("zone in (a, b)", {"zone": "b"}, {"zone": "c"}),
        ("zone notin (a,b)", {"zone": "c"}, {"zone": "a"}),
        ("gpu", {"gpu": "x"}, {}),
        ("!canary", {}, {"canary": "1"}),
        ("tier=edge, zone in (a,b), !canary", {"tier": "edge", "zone": "a"}, {"tier": "edge"}),
    ],
)
def test_selector_strings_mean_what_a_node_selector_means(
    text: str, matching: dict[str, str], not_matching: dict[str, str] | None
) -> None:
    selector = parse_selector(text)
    assert selector.matches(matching)
    if not_matching is not None:
        assert not selector.matches(not_matching)
    assert parse_selector(selector.describe()) == selector


def test_a_narrowed_selector_selects_what_both_select() -> None:
    edge = parse_selector("tier=edge").narrowed(parse_selector("zone in (a)"))
    assert edge.matches({"tier": "edge", "zone": "a"})
    assert not edge.matches({"tier": "edge", "zone": "b"})
    assert not edge.matches({"tier": "core", "zone": "a"})
    # An equality adds to the selector's own, never replaces it.
    nothing = parse_selector("tier=core").narrowed(parse_selector("tier=edge"))
    assert not nothing.matches({"tier": "core"})
    assert not nothing.matches({"tier": "edge"})


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("bad key=1", "cannot parse from column 1"),
        ("tier=edge,=v", "cannot parse from column 11"),
        ("zone in ()", "needs at least one value"),
        ("tier=edge,tier=core", "tier cannot equal two values"),
        ("tier=ed ge", "cannot parse"),
        ("UPPER/case=x", "invalid label key"),
        ("x=(", "cannot parse"),
    ],
)
def test_bad_selector_strings_are_refused_saying_where(text: str, words: str) -> None:
    with pytest.raises(SelectorSyntaxError, match=re.escape(words)):
        parse_selector(text)
