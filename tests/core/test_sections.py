"""Section names, read the way libbpf 1.1 reads them."""

from __future__ import annotations

from collections import Counter

import pytest

from bpfleet_core import kernel_enums
from bpfleet_core.manifests import AttachKind
from bpfleet_core.sections import (
    SECTION_CONVENTIONS,
    SectionSpec,
    UnknownSectionError,
    is_known_section,
    section_spec,
)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("xdp", SectionSpec("xdp", "xdp", AttachKind.XDP, None)),
        ("xdp.frags", SectionSpec("xdp", "xdp", AttachKind.XDP, None)),
        ("xdp/devmap", SectionSpec("xdp", "xdp_devmap", None, None)),
        ("tc", SectionSpec("sched_cls", None, AttachKind.TC, None)),
        ("classifier", SectionSpec("sched_cls", None, AttachKind.TC, None)),
        (
            "cgroup_skb/ingress",
            SectionSpec("cgroup_skb", "cgroup_inet_ingress", AttachKind.CGROUP_SKB, None),
        ),
        (
            "cgroup_skb/egress",
            SectionSpec("cgroup_skb", "cgroup_inet_egress", AttachKind.CGROUP_SKB, None),
        ),
        (
            "cgroup/sock_create",
            SectionSpec("cgroup_sock", "cgroup_inet_sock_create", AttachKind.CGROUP_SOCK, None),
        ),
        (
            "cgroup/connect4",
            SectionSpec(
                "cgroup_sock_addr", "cgroup_inet4_connect", AttachKind.CGROUP_SOCK_ADDR, None
            ),
        ),
        (
            "cgroup/connect6",
            SectionSpec(
                "cgroup_sock_addr", "cgroup_inet6_connect", AttachKind.CGROUP_SOCK_ADDR, None
            ),
        ),
        (
            "tracepoint/sched/sched_process_exec",
            SectionSpec("tracepoint", None, AttachKind.TRACEPOINT, "sched/sched_process_exec"),
        ),
        (
            "tp/syscalls/sys_enter_openat",
            SectionSpec("tracepoint", None, AttachKind.TRACEPOINT, "syscalls/sys_enter_openat"),
        ),
        (
            "raw_tracepoint/sys_enter",
            SectionSpec("raw_tracepoint", None, AttachKind.RAW_TRACEPOINT, "sys_enter"),
        ),
        (
            "raw_tp/sys_exit",
            SectionSpec("raw_tracepoint", None, AttachKind.RAW_TRACEPOINT, "sys_exit"),
        ),
        (
            "raw_tp.w/bpf_test_finish",
            SectionSpec(
                "raw_tracepoint_writable", None, AttachKind.RAW_TRACEPOINT, "bpf_test_finish"
            ),
        ),
        ("kprobe/tcp_v4_connect", SectionSpec("kprobe", None, AttachKind.KPROBE, "tcp_v4_connect")),
        ("kprobe", SectionSpec("kprobe", None, AttachKind.KPROBE, None)),
        ("kretprobe/do_unlinkat", SectionSpec("kprobe", None, AttachKind.KPROBE, "do_unlinkat")),
        (
            "uprobe//usr/bin/bash:readline",
            SectionSpec("kprobe", None, AttachKind.UPROBE, "/usr/bin/bash:readline"),
        ),
        ("uretprobe.s", SectionSpec("kprobe", None, AttachKind.UPROBE, None)),
        (
            "kprobe.multi/tcp_*",
            SectionSpec("kprobe", "trace_kprobe_multi", None, "tcp_*"),
        ),
        (
            "fentry/do_unlinkat",
            SectionSpec("tracing", "trace_fentry", AttachKind.FENTRY, "do_unlinkat"),
        ),
        (
            "fexit/do_unlinkat",
            SectionSpec("tracing", "trace_fexit", AttachKind.FEXIT, "do_unlinkat"),
        ),
        ("fentry.s/x", SectionSpec("tracing", "trace_fentry", AttachKind.FENTRY, "x")),
        ("tp_btf/sched_switch", SectionSpec("tracing", "trace_raw_tp", None, "sched_switch")),
        ("lsm/file_open", SectionSpec("lsm", "lsm_mac", AttachKind.LSM, "file_open")),
        ("lsm.s/bprm_check", SectionSpec("lsm", "lsm_mac", AttachKind.LSM, "bprm_check")),
        ("sk_lookup", SectionSpec("sk_lookup", "sk_lookup", AttachKind.SK_LOOKUP, None)),
        (
            "struct_ops/tcp_init",
            SectionSpec("struct_ops", None, AttachKind.STRUCT_OPS, "tcp_init"),
        ),
        ("socket", SectionSpec("socket_filter", None, None, None)),
        ("iter/task", SectionSpec("tracing", "trace_iter", None, "task")),
        ("syscall", SectionSpec("syscall", None, None, None)),
    ],
)
def test_known_sections(section: str, expected: SectionSpec) -> None:
    assert section_spec(section) == expected
    assert is_known_section(section)


def test_leading_question_mark_only_disables_autoload() -> None:
    assert section_spec("?tc") == section_spec("tc")
    assert section_spec("?kprobe/x") == section_spec("kprobe/x")


@pytest.mark.parametrize(
    "section",
    [
        "tcx/ingress",  # libbpf 1.3
        "tc/ingress",
        "netfilter",  # libbpf 1.2
        "uprobe.multi/x",
        "xdp/foo",  # exact names take no target
        "xdp_frags",
        "cgroup_skb",
        "cgroup/connect",
        "kprobes/tcp_v4_connect",
        "Tracepoint/sched/x",
        "",
        ".text",
    ],
)
def test_unknown_sections_are_refused_by_name(section: str) -> None:
    with pytest.raises(UnknownSectionError) as caught:
        section_spec(section)
    assert caught.value.section == section
    assert repr(section) in str(caught.value)
    assert not is_known_section(section)


def test_every_convention_is_listed_once() -> None:
    counts = Counter(convention.name for convention in SECTION_CONVENTIONS)
    assert [name for name, count in counts.items() if count > 1] == []


def test_convention_types_are_the_kernels_names() -> None:
    """Program and attach types must be spelled as in the generated kernel tables."""
    for convention in SECTION_CONVENTIONS:
        assert convention.program_type in kernel_enums.PROGRAM_TYPE_NAMES, convention
        if convention.expected_attach_type is not None:
            assert convention.expected_attach_type in kernel_enums.ATTACH_TYPE_NAMES, convention


def test_every_attach_kind_has_a_section() -> None:
    kinds = {convention.attach_kind for convention in SECTION_CONVENTIONS}
    assert kinds - {None} == set(AttachKind)
