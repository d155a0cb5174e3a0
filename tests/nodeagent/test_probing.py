"""The feature report comes from real probes and matches what this kernel really does."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bpfleet_agent import libbpf
from bpfleet_core import kernel_enums
from bpfleet_core.features import FeatureReport
from bpfleet_core.manifests import AttachKind

pytestmark = pytest.mark.bpf

REPO = Path(__file__).resolve().parents[2]


def test_report_matches_this_kernel(feature_report: FeatureReport) -> None:
    assert feature_report.kernel_release == os.uname().release
    assert feature_report.kernel_btf
    for program_type in (
        "xdp",
        "sched_cls",
        "cgroup_skb",
        "tracepoint",
        "raw_tracepoint",
        "kprobe",
    ):
        assert feature_report.program_types[program_type], program_type
    # The brief's facts about these machines: no tracing (fentry) or LSM programs...
    assert not feature_report.program_types["tracing"]
    assert not feature_report.program_types["lsm"]
    for kind in (
        AttachKind.XDP,
        AttachKind.TC,
        AttachKind.CGROUP_SKB,
        AttachKind.TRACEPOINT,
        AttachKind.RAW_TRACEPOINT,
    ):
        assert feature_report.attach_kinds[kind], kind
    # ...and kprobe programs load but have nothing to attach to.
    assert not feature_report.attach_kinds[AttachKind.KPROBE]
    assert feature_report.map_types["ringbuf"]
    assert "bpf_map_lookup_elem" in feature_report.helpers["xdp"]
    assert "bpf_ringbuf_reserve" in feature_report.helpers["tracepoint"]
    assert "bpf_xdp_adjust_head" not in feature_report.helpers["tracepoint"]


# bpftool skips helpers that write to the kernel log and knows none newer than itself.
BPFTOOL_BLIND_SPOTS = {"bpf_trace_printk", "bpf_trace_vprintk", "bpf_probe_write_user"}


def test_report_agrees_with_bpftool(feature_report: FeatureReport) -> None:
    bpftool = json.loads(
        subprocess.run(
            ["bpftool", "-j", "feature", "probe", "kernel"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    for section, ours in (
        ("program_types", feature_report.program_types),
        ("map_types", feature_report.map_types),
    ):
        suffix = "_prog_type" if section == "program_types" else "_map_type"
        theirs = {
            name.removeprefix("have_").removesuffix(suffix): ok
            for name, ok in bpftool[section].items()
        }
        for name, available in theirs.items():
            if name in ours:
                assert ours[name] == available, name
    # bpftool 7.1 (libbpf 1.1) misses this kernel's "cannot use helper" verdict and lists
    # every known helper for every type; ours must be within its list and much shorter
    # where the kernel restricts helpers.
    theirs_xdp = set(bpftool["helpers"]["xdp_available_helpers"])
    ours_xdp = set(feature_report.helpers["xdp"])
    assert ours_xdp - theirs_xdp <= BPFTOOL_BLIND_SPOTS | {
        h for h in ours_xdp if h.startswith("bpf_cgrp_storage")
    }
    assert len(ours_xdp) > 50
    theirs_tracepoint = set(bpftool["helpers"]["tracepoint_available_helpers"])
    ours_tracepoint = set(feature_report.helpers["tracepoint"])
    assert len(ours_tracepoint) < len(theirs_tracepoint)
    # Refused by this kernel for a tracepoint, each for another reason, yet listed by
    # bpftool: another program type's helper, a sleeping helper, a trampoline-only one.
    refused = {"bpf_xdp_adjust_head", "bpf_copy_from_user", "bpf_get_func_ip"}
    assert refused <= theirs_tracepoint
    assert not refused & ours_tracepoint


def _helper(name: str) -> int:
    return kernel_enums.HELPER_NAMES.index(name)


@pytest.mark.parametrize(
    ("program_type", "helper", "available"),
    [
        # Accepted, then "R1 type=ctx expected=map_ptr": the arguments are wrong, not the call.
        ("xdp", "bpf_map_lookup_elem", True),
        # "helper call might sleep in a non-sleepable prog"
        ("xdp", "bpf_copy_from_user", False),
        # "program of this type cannot use helper bpf_xdp_adjust_head#44"
        ("tracepoint", "bpf_xdp_adjust_head", False),
        # "func bpf_get_func_ip#173 not supported for program type 5"
        ("tracepoint", "bpf_get_func_ip", False),
        # Accepted and loaded as is.
        ("tracepoint", "bpf_ktime_get_ns", True),
    ],
)
def test_helper_verdicts_on_this_kernel(program_type: str, helper: str, available: bool) -> None:
    assert libbpf.probe_helper(program_type, _helper(helper)) is available


def test_cli_prints_the_report_as_json() -> None:
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "bpfleet"), "node", "features", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = FeatureReport.model_validate_json(result.stdout)
    assert report.program_types["xdp"]
    assert report.attach_kinds[AttachKind.TRACEPOINT]
