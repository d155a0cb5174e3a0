"""The pure planning rules: what is kept, swapped, replaced or removed, and in what order."""

from __future__ import annotations

import pytest

from bpfleet_agent import pins
from bpfleet_agent.reconciling import (
    Hook,
    LinkAction,
    ObservedLink,
    ObservedProgram,
    SpecError,
    expand,
    plan_links,
    stale_versions,
    unwanted_programs,
)
from bpfleet_core.manifests import AttachKind, EntryPoint, Manifest, ObjectRef, Requirements
from bpfleet_core.resources import AttachPoint

XDP = Hook("xdp_count", AttachKind.XDP, "eth0")
EXEC = Hook("handle_exec", AttachKind.TRACEPOINT, "sched/sched_process_exec")


def manifest() -> Manifest:
    return Manifest(
        name="demo",
        version="1.0.0",
        license="GPL",
        object=ObjectRef(filename="demo.bpf.o", sha256="a" * 64, size=1),
        entry_points=(
            EntryPoint(
                name="xdp_count",
                section="xdp",
                program_type="xdp",
                expected_attach_type="xdp",
                attach_kind=AttachKind.XDP,
            ),
            EntryPoint(
                name="tc_in", section="tc", program_type="sched_cls", attach_kind=AttachKind.TC
            ),
            EntryPoint(
                name="cg_in",
                section="cgroup_skb/ingress",
                program_type="cgroup_skb",
                expected_attach_type="cgroup_inet_ingress",
                attach_kind=AttachKind.CGROUP_SKB,
            ),
            EntryPoint(
                name="handle_exec",
                section="tracepoint/sched/sched_process_exec",
                program_type="tracepoint",
                attach_kind=AttachKind.TRACEPOINT,
                attach_target="sched/sched_process_exec",
            ),
        ),
        requirements=Requirements(),
    )


def link(name: str, program_id: int, *, alive: bool = True) -> ObservedLink:
    return ObservedLink(name, link_id=100 + program_id, program_id=program_id, alive=alive)


def test_link_names_are_valid_bpffs_names() -> None:
    hooks = [
        XDP,
        Hook("tc_in", AttachKind.TC, "eth0.100", "ingress"),
        Hook("cg_in", AttachKind.CGROUP_SKB, "/system.slice/web", "ingress"),
        Hook("xdp_count", AttachKind.XDP, "eth1", xdp_mode="generic"),
        EXEC,
    ]
    names = [hook.link_name for hook in hooks]
    assert names == [
        "xdp@eth0",
        "tc-ingress@eth0%2E100",
        "cgroup_skb-ingress@system%2Eslice:web",
        "xdp@eth1@generic",
        "tracepoint@sched:sched_process_exec",
    ]
    assert all("." not in name and "/" not in name and len(name) < 256 for name in names)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("eth0.100", "eth0_100"),  # '.' used to become '_'
        ("a/b", "a:b"),  # '/' becomes ':'
        ("a%3Ab", "a:b"),  # the escape character itself is escaped
        ("x@generic", "x"),  # '@' separates the parts of a link name
        ("a~next", "a"),  # '~' marks transient pins
        ("é", "%C3%A9"),
    ],
)
def test_link_names_are_injective(one: str, other: str) -> None:
    for kind, direction in ((AttachKind.TC, "ingress"), (AttachKind.CGROUP_SKB, "egress")):
        first = Hook("p", kind, one, direction).link_name
        second = Hook("p", kind, other, direction).link_name
        assert first != second
        assert "~" not in first + second
        assert first.count("@") == 1


def test_long_targets_keep_a_digest_and_stay_distinct() -> None:
    base = "/kubepods.slice/" + "x" * 300
    names = {Hook("p", AttachKind.CGROUP_SKB, base + end, "ingress").link_name for end in "ab"}
    assert len(names) == 2
    assert all(len(name) < 255 and "." not in name for name in names)


def test_a_changed_xdp_mode_reattaches_and_a_renamed_entry_swaps() -> None:
    generic = Hook("xdp_count", AttachKind.XDP, "eth0", xdp_mode="generic")
    renamed = Hook("xdp_count_v2", AttachKind.XDP, "eth0")
    observed = {XDP.link_name: link(XDP.link_name, 1)}
    # Same hook, other mode: never a second link on the exclusive hook.
    steps = plan_links([generic], observed, {"xdp_count": 2})
    assert [(s.action, s.link_name, s.previous) for s in steps] == [
        (LinkAction.REATTACH, "xdp@eth0@generic", "xdp@eth0")
    ]
    # Same hook, other entry point: the program behind the same link is swapped.
    steps = plan_links([renamed], observed, {"xdp_count_v2": 2})
    assert [(s.action, s.link_name) for s in steps] == [(LinkAction.UPDATE, "xdp@eth0")]
    # Back to auto from generic.
    observed = {generic.link_name: link(generic.link_name, 1)}
    steps = plan_links([XDP], observed, {"xdp_count": 1})
    assert [(s.action, s.previous) for s in steps] == [(LinkAction.REATTACH, "xdp@eth0@generic")]


def test_a_hook_is_listed_once_whatever_the_entry_point() -> None:
    points = [
        AttachPoint(entry_point="xdp_count", type=AttachKind.XDP, interfaces=("eth0",)),
        AttachPoint(entry_point="xdp_count", type=AttachKind.XDP, interfaces=("eth0",)),
    ]
    with pytest.raises(SpecError, match="the same hook is listed twice: xdp on eth0"):
        expand(points, manifest())


def test_expand_makes_one_hook_per_interface_and_defaults_targets() -> None:
    hooks = expand(
        [
            AttachPoint(entry_point="xdp_count", type=AttachKind.XDP, interfaces=("eth0", "eth1")),
            AttachPoint(entry_point="handle_exec", type=AttachKind.TRACEPOINT),
            AttachPoint(entry_point="cg_in", type=AttachKind.CGROUP_SKB, cgroup="web/./"),
        ],
        manifest(),
    )
    assert [(h.entry_point, h.target, h.direction) for h in hooks] == [
        ("xdp_count", "eth0", None),
        ("xdp_count", "eth1", None),
        ("handle_exec", "sched/sched_process_exec", None),
        ("cg_in", "/web", "ingress"),  # the cgroup as the kernel resolves it
    ]


@pytest.mark.parametrize(
    ("point", "message"),
    [
        (
            AttachPoint(entry_point="nope", type=AttachKind.XDP, interfaces=("eth0",)),
            "has no entry point 'nope'",
        ),
        (
            AttachPoint(entry_point="tc_in", type=AttachKind.XDP, interfaces=("eth0",)),
            "attaches as tc, not as xdp",
        ),
        (
            AttachPoint(
                entry_point="cg_in", type=AttachKind.CGROUP_SKB, cgroup="web", direction="egress"
            ),
            "built for ingress, not egress",
        ),
        (
            AttachPoint(entry_point="xdp_count", type=AttachKind.XDP, interfaces=("eth0", "eth0")),
            "listed twice",
        ),
    ],
)
def test_expand_refuses_what_does_not_fit(point: AttachPoint, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        expand([point], manifest())


def test_plan_keeps_what_is_right_and_removes_last() -> None:
    observed = {XDP.link_name: link(XDP.link_name, 1), "xdp@eth9": link("xdp@eth9", 7)}
    steps = plan_links([XDP, EXEC], observed, {"xdp_count": 1, "handle_exec": 2})
    assert [(s.action, s.link_name) for s in steps] == [
        (LinkAction.KEEP, XDP.link_name),
        (LinkAction.CREATE, EXEC.link_name),
        (LinkAction.REMOVE, "xdp@eth9"),
    ]


def test_plan_swaps_updatable_links_and_replaces_the_others() -> None:
    observed = {XDP.link_name: link(XDP.link_name, 1), EXEC.link_name: link(EXEC.link_name, 2)}
    steps = plan_links([XDP, EXEC], observed, {"xdp_count": 11, "handle_exec": 12})
    assert [s.action for s in steps] == [LinkAction.UPDATE, LinkAction.REPLACE]


def test_plan_recreates_links_whose_target_went_away() -> None:
    observed = {XDP.link_name: link(XDP.link_name, 1, alive=False)}
    assert [s.action for s in plan_links([XDP], observed, {"xdp_count": 1})] == [
        LinkAction.RECREATE
    ]


def test_current_version_is_the_one_links_run() -> None:
    observed = ObservedProgram(
        "demo",
        versions={"a" * 16: {"xdp_count": 1}, "b" * 16: {"xdp_count": 2}},
        links={XDP.link_name: link(XDP.link_name, 2)},
    )
    assert observed.current_tag() == "b" * 16
    assert stale_versions(observed, keep="b" * 16) == ["a" * 16]
    assert ObservedProgram("demo", versions={"c" * 16: {}}).current_tag() == "c" * 16
    assert ObservedProgram("demo").current_tag() is None


def test_load_tags_follow_digest_and_config() -> None:
    tag = pins.load_tag("d" * 64, {"a": 1, "b": True})
    assert pins.is_tag(tag)
    assert tag == pins.load_tag("d" * 64, {"b": True, "a": 1})
    assert tag != pins.load_tag("d" * 64, {"a": 2, "b": True})
    assert tag != pins.load_tag("e" * 64, {"a": 1, "b": True})
    assert unwanted_programs(["a"], ["a", "b"]) == ["b"]
