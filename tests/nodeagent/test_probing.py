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
from tests import bpfbuild

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


# bpftool leaves out helpers that write to the kernel log, and knows none newer than
# its libbpf. It also reads fewer of the verifier's refusals than our probe, and which
# ones depends on its version: 7.1 (libbpf 1.1) reads none of "program of this type
# cannot use helper" and lists every helper it knows for every type; 7.5 (libbpf 1.5)
# reads that one, but neither "helper call might sleep in a non-sleepable prog" nor
# "not supported for program type". Where the lists differ that way, real loads settle
# which is right (test_helper_verdicts_agree_with_real_loads): the kernel refuses.
BPFTOOL_LEAVES_OUT = {"bpf_trace_printk", "bpf_trace_vprintk", "bpf_probe_write_user"}


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
    listed = {
        name.removesuffix("_available_helpers"): set(helpers)
        for name, helpers in bpftool["helpers"].items()
    }
    known_to_bpftool = set().union(*listed.values())
    compared = [program_type for program_type in listed if program_type in feature_report.helpers]
    for program_type in compared:
        ours = set(feature_report.helpers[program_type])
        # What the kernel accepts, bpftool finds too, unless it leaves it out or predates it.
        beyond = ours - listed[program_type]
        assert beyond <= BPFTOOL_LEAVES_OUT | (ours - known_to_bpftool), program_type
    assert len(compared) > 20
    assert len(feature_report.helpers["xdp"]) > 50
    # bpftool lists the helpers whose refusals it cannot read: more than the kernel allows.
    assert len(feature_report.helpers["tracepoint"]) < len(listed["tracepoint"])


TRACEPOINT = "tracepoint/sched/sched_process_exec"


@pytest.mark.parametrize(
    ("section", "helper", "body", "refusal"),
    [
        ("xdp", "bpf_xdp_adjust_head", "return bpf_xdp_adjust_head(ctx, 0) ? 1 : 2;", None),
        (
            TRACEPOINT,
            "bpf_xdp_adjust_head",
            "return bpf_xdp_adjust_head(ctx, 0);",
            "program of this type cannot use helper",
        ),
        (
            "xdp",
            "bpf_copy_from_user",
            "char b[8]; return bpf_copy_from_user(b, sizeof(b), (void *)0) ? 1 : 2;",
            "helper call might sleep in a non-sleepable prog",
        ),
        (
            TRACEPOINT,
            "bpf_get_func_ip",
            "return bpf_get_func_ip(ctx) != 0;",
            "not supported for program type",
        ),
        (TRACEPOINT, "bpf_ktime_get_ns", "return bpf_ktime_get_ns() != 0;", None),
    ],
)
def test_helper_verdicts_agree_with_real_loads(
    feature_report: FeatureReport,
    tmp_path: Path,
    section: str,
    helper: str,
    body: str,
    refusal: str | None,
) -> None:
    """A well-formed call of the helper, compiled and loaded for real, is accepted or
    refused as the report says; for the helpers bpftool disagrees on, this decides."""
    source, built = tmp_path / "call.bpf.c", tmp_path / "call.bpf.o"
    source.write_text(
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
        f'SEC("{section}") int call(void *ctx) {{ {body} }}\n'
        'char LICENSE[] SEC("license") = "GPL";\n'
    )
    compiled = bpfbuild.compile_bpf(source, built)
    assert compiled.returncode == 0, compiled.stderr
    with libbpf.BpfObject(built.read_bytes(), name="helper_call") as loaded:
        if refusal is None:
            loaded.load()
        else:
            with pytest.raises(libbpf.LoadError) as refused:
                loaded.load()
            assert refusal in refused.value.verifier_logs["call"]
    program_type = "xdp" if section == "xdp" else "tracepoint"
    assert (helper in feature_report.helpers[program_type]) is (refusal is None)


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
