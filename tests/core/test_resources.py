"""What the BpfProgram spec refuses before anything reaches a node."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from bpfleet_core.manifests import AttachKind
from bpfleet_core.resources import ArtifactRef, AttachPoint, SelectorSyntaxError, parse_selector


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
