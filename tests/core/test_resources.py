"""What the BpfProgram spec refuses before anything reaches a node."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bpfleet_core.manifests import AttachKind
from bpfleet_core.resources import ArtifactRef, AttachPoint


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
