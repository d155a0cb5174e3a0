"""Constraints a signer puts in a manifest: where each entry point may attach and which
config values it may be given. The signature then covers where and how an object runs;
``fitting`` refuses what falls outside (the API before any node sees it, each agent
again)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bpfleet_core import fitting, manifests
from bpfleet_core.manifests import AttachKind, Constraints, Manifest
from bpfleet_core.resources import AttachPoint, BpfProgramSpec

ENTRY_POINTS = [
    {"name": "xdp_count", "section": "xdp", "program_type": "xdp", "attach_kind": "xdp"},
    {
        "name": "tc_ingress",
        "section": "tc/ingress",
        "program_type": "sched_cls",
        "attach_kind": "tc",
    },
    {
        "name": "cgroup_ingress",
        "section": "cgroup_skb/ingress",
        "program_type": "cgroup_skb",
        "expected_attach_type": "cgroup_inet_ingress",
        "attach_kind": "cgroup_skb",
    },
    {
        "name": "handle_exec",
        "section": "tp/sched/sched_process_exec",
        "program_type": "tracepoint",
        "attach_kind": "tracepoint",
        "attach_target": "sched/sched_process_exec",
    },
]
CONFIG = [
    {"name": "target_uid", "offset": 0, "size": 8, "kind": "int", "signed": True},
    {"name": "count_non_ip", "offset": 8, "size": 1, "kind": "bool"},
    {"name": "comm", "offset": 9, "size": 16, "kind": "char_array"},
]


def manifest(constraints: dict[str, Any] | None = None) -> Manifest:
    return Manifest.model_validate(
        {
            "name": "demo",
            "version": "1.0.0",
            "license": "GPL",
            "object": {"filename": "demo.bpf.o", "sha256": "ab" * 32, "size": 1},
            "entry_points": ENTRY_POINTS,
            "config": CONFIG,
            "requirements": {},
            "constraints": constraints,
        }
    )


SIGNED = {
    "entry_points": {
        "xdp_count": {"interfaces": ["eth*", "ens[0-9]"]},
        "tc_ingress": {"interfaces": ["veth*"]},
        "cgroup_ingress": {"cgroups": ["/kubepods.slice", "/system.slice/*.service"]},
        "handle_exec": {"targets": ["sched/*"]},
    },
    "config": {
        "target_uid": {"minimum": -1, "maximum": 65535},
        "count_non_ip": {"values": [True]},
        "comm": {"values": ["bash", "sh"]},
    },
}


@pytest.mark.parametrize(
    ("constraints", "complaint"),
    [
        ({"entry_points": {"nope": {"interfaces": ["*"]}}}, "entry point 'nope', which demo lacks"),
        ({"config": {"colour": {"minimum": 1}}}, "config variable 'colour', which demo lacks"),
        ({"entry_points": {"handle_exec": {"interfaces": ["*"]}}}, "interfaces do not apply"),
        ({"entry_points": {"xdp_count": {"cgroups": ["/"]}}}, "cgroups do not apply"),
        ({"entry_points": {"tc_ingress": {"targets": ["x"]}}}, "targets do not apply"),
        ({"config": {"count_non_ip": {"maximum": 1}}}, "minimum/maximum need an int"),
        ({"config": {"target_uid": {"minimum": 5, "maximum": 1}}}, "minimum is above maximum"),
        ({"config": {"target_uid": {"values": ["root"]}}}, "is not of kind int"),
        ({"config": {"target_uid": {"values": [True]}}}, "is not of kind int"),
        ({"config": {"target_uid": {"values": []}}}, "at least 1 item"),
        ({"entry_points": {"xdp_count": {"interfaces": []}}}, "at least 1 item"),
        ({"entry_points": {"xdp_count": {"interface": ["*"]}}}, "Extra inputs"),
    ],
)
def test_constraints_must_fit_the_object_they_constrain(
    constraints: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        manifest(constraints)


def test_a_manifest_without_constraints_keeps_the_bytes_it_always_had() -> None:
    plain = manifests.canonical_bytes(manifest())
    assert b"constraints" not in plain
    assert manifests.parse(plain) == manifest()
    constrained = manifests.canonical_bytes(manifest(SIGNED))
    assert b'"constraints":{' in constrained
    assert manifests.parse(constrained) == manifest(SIGNED)
    assert manifest().constrained(Constraints.model_validate(SIGNED)) == manifest(SIGNED)
    with pytest.raises(ValueError, match="which demo lacks"):
        manifest().constrained(Constraints.model_validate({"config": {"x": {"minimum": 0}}}))


def point(**fields: Any) -> AttachPoint:
    return AttachPoint.model_validate(fields)


@pytest.mark.parametrize(
    ("attach", "complaint"),
    [
        (
            point(entryPoint="xdp_count", type="xdp", interfaces=["eth0", "wlan0"]),
            "allows xdp_count only on interfaces matching eth*, ens[0-9], not on wlan0",
        ),
        (
            point(entryPoint="tc_ingress", type="tc", direction="ingress", interfaces=["eth0"]),
            "not on eth0",
        ),
        (point(entryPoint="cgroup_ingress", type="cgroup_skb", cgroup="/"), "not in /"),
        (point(entryPoint="cgroup_ingress", type="cgroup_skb", cgroup="/./"), "not in /"),
        (point(entryPoint="cgroup_ingress", type="cgroup_skb", cgroup="//"), "not in /"),
        (
            point(entryPoint="cgroup_ingress", type="cgroup_skb", cgroup="/user.slice"),
            "not in /user.slice",
        ),
        (
            point(entryPoint="cgroup_ingress", type="cgroup_skb", cgroup="/system.slice/x.scope"),
            "not in /system.slice/x.scope",
        ),
        (
            point(entryPoint="handle_exec", type="tracepoint", target="syscalls/sys_enter_open"),
            "only on targets sched/*, not on syscalls/sys_enter_open",
        ),
    ],
)
def test_attach_points_outside_the_signed_constraints_are_refused(
    attach: AttachPoint, complaint: str
) -> None:
    problems = fitting.attach_problems((attach,), manifest(SIGNED))
    assert len(problems) == 1
    assert complaint in problems[0]
    assert fitting.attach_problems((attach,), manifest()) == [], "unconstrained: allowed"


@pytest.mark.parametrize(
    "attach",
    [
        point(entryPoint="xdp_count", type="xdp", interfaces=["eth0", "ens3"]),
        point(entryPoint="tc_ingress", type="tc", direction="ingress", interfaces=["veth12ab"]),
        point(entryPoint="cgroup_ingress", type="cgroup_skb", cgroup="/kubepods.slice"),
        point(entryPoint="cgroup_ingress", type="cgroup_skb", cgroup="kubepods.slice/pod1"),
        point(entryPoint="cgroup_ingress", type="cgroup_skb", cgroup="/system.slice/db.service"),
        point(entryPoint="handle_exec", type="tracepoint"),
        point(entryPoint="handle_exec", type="tracepoint", target="sched/sched_process_fork"),
    ],
)
def test_attach_points_inside_the_signed_constraints_fit(attach: AttachPoint) -> None:
    assert fitting.attach_problems((attach,), manifest(SIGNED)) == []


@pytest.mark.parametrize(
    ("config", "complaint"),
    [
        ({"target_uid": -2}, "target_uid=-2 is below the signed minimum -1"),
        ({"target_uid": 65536}, "target_uid=65536 is above the signed maximum 65535"),
        (
            {"count_non_ip": False},
            "count_non_ip=False is not one the signed manifest allows (True)",
        ),
        ({"comm": "python"}, "comm='python' is not one the signed manifest allows ('bash', 'sh')"),
    ],
)
def test_config_values_outside_the_signed_constraints_are_refused(
    config: dict[str, Any], complaint: str
) -> None:
    assert fitting.config_problems(manifest(SIGNED), config) == [f"config {complaint}"]
    assert fitting.config_problems(manifest(), config) == []


def test_config_values_inside_the_signed_constraints_fit() -> None:
    fits = {"target_uid": -1, "count_non_ip": True, "comm": "sh"}
    assert fitting.config_problems(manifest(SIGNED), fits) == []
    # 1 == True in Python, but an integer is not the bool the signer allowed.
    assert fitting.config_problems(manifest(SIGNED), {"count_non_ip": 1}) != []


@pytest.mark.parametrize(
    ("path", "patterns", "allowed"),
    [
        ("/", ["/*"], False),
        ("", ["/*"], False),
        ("/./", ["/*"], False),
        ("//", ["/*"], False),
        ("/a", ["/*"], True),
        ("/a/b", ["/*"], True),
        ("/", ["/"], True),
        ("/a", ["/"], True),
        ("/kubepods.slice/pod1", ["/kubepods.slice"], True),
        ("/kubepods", ["/kubepods.slice"], False),
        ("/system.slice/db.service", ["/system.slice/*.service"], True),
        ("/system.slice", ["/system.slice/*.service"], False),
        ("/system.slice/db.scope", ["/system.slice/*.service"], False),
    ],
)
def test_cgroup_patterns_match_a_cgroup_and_what_lies_below_it(
    path: str, patterns: list[str], allowed: bool
) -> None:
    assert fitting.cgroup_matches(path, patterns) is allowed


def test_a_spec_is_judged_against_the_constraints_of_its_artifact() -> None:
    spec = BpfProgramSpec.model_validate(
        {
            "artifact": {"name": "demo", "version": "1.0.0"},
            "attach": [{"entryPoint": "xdp_count", "type": AttachKind.XDP, "interfaces": ["lo"]}],
            "config": {"target_uid": 70000},
        }
    )
    signed = manifest(SIGNED)
    problems = fitting.attach_problems(spec.attach, signed) + fitting.config_problems(
        signed, spec.config
    )
    assert len(problems) == 2
