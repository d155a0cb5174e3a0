"""The compatibility check names exactly what a kernel lacks."""

from __future__ import annotations

from datetime import UTC, datetime

from bpfleet_core import features
from bpfleet_core.manifests import AttachKind, Requirements


def report(**changes: object) -> features.FeatureReport:
    base = features.FeatureReport(
        node="n1",
        kernel_release="6.18.0",
        arch="x86_64",
        probed_at=datetime(2026, 1, 1, tzinfo=UTC),
        libbpf_version="1.1",
        kernel_btf=True,
        jit_enabled=True,
        bpffs=True,
        bpf_stats=True,
        global_data=True,
        program_types={"xdp": True, "tracepoint": True, "tracing": False, "kprobe": True},
        map_types={"array": True, "ringbuf": True, "percpu_array": True},
        attach_kinds={AttachKind.XDP: True, AttachKind.TRACEPOINT: True, AttachKind.KPROBE: False},
        helpers={
            "xdp": ("bpf_map_lookup_elem",),
            "tracepoint": ("bpf_ringbuf_reserve", "bpf_ringbuf_submit"),
        },
        kfuncs=("bpf_task_acquire",),
    )
    return base.model_copy(update=changes)


def test_compatible_when_everything_is_there() -> None:
    needs = Requirements(
        program_types=("xdp",),
        attach_kinds=(AttachKind.XDP,),
        map_types=("percpu_array",),
        helpers={"xdp": ("bpf_map_lookup_elem",)},
        kernel_btf=True,
        global_data=True,
    )
    assert features.check(needs, report()) == []


def test_each_missing_feature_is_named() -> None:
    needs = Requirements(
        program_types=("tracepoint", "tracing", "kprobe"),
        attach_kinds=(AttachKind.TRACEPOINT, AttachKind.KPROBE),
        map_types=("ringbuf", "arena"),
        helpers={"tracepoint": ("bpf_ringbuf_reserve", "bpf_loop"), "tracing": ("bpf_loop",)},
        kfuncs=("bpf_task_acquire", "bpf_no_such_kfunc"),
        kernel_btf=True,
    )
    missing = features.check(needs, report(kernel_btf=False))
    assert [m.describe() for m in missing] == [
        "kernel lacks BTF (/sys/kernel/btf/vmlinux) needed for CO-RE relocations",
        "kernel lacks program type tracing",
        "kernel cannot attach kprobe programs",
        "kernel lacks map type arena",
        # helpers of a missing program type are not listed again
        "kernel lacks helper bpf_loop for program type tracepoint",
        "kernel lacks kfunc bpf_no_such_kfunc",
    ]


def test_unknown_names_count_as_missing_and_report_round_trips(tmp_path: object) -> None:
    needs = Requirements(program_types=("future_type",))
    assert (
        features.summarize(features.check(needs, report()))
        == "kernel lacks program type future_type"
    )
    original = report()
    assert features.FeatureReport.model_validate_json(original.to_json()) == original


def test_helpers_of_unprobed_program_types_are_unknown_not_missing() -> None:
    # struct_ops and syscall programs cannot be probed for helpers without an attach
    # target, so the report has no entry for them: that must not make them Incompatible.
    needs = Requirements(
        program_types=("struct_ops", "syscall", "xdp"),
        helpers={
            "struct_ops": ("bpf_ktime_get_ns",),
            "syscall": ("bpf_sys_bpf",),
            "xdp": ("bpf_ktime_get_ns",),
        },
    )
    probed = report(program_types={"struct_ops": True, "syscall": True, "xdp": True})
    assert [m.describe() for m in features.check(needs, probed)] == [
        "kernel lacks helper bpf_ktime_get_ns for program type xdp"  # probed, and absent
    ]


def test_differences_name_what_two_kernels_do_not_share() -> None:
    base = report(kfuncs=("bpf_task_acquire", "bpf_task_release"))
    older = base.model_copy(
        update={
            "node": "older",
            "map_types": {**base.map_types, "ringbuf": False},
            "kfuncs": base.kfuncs[1:],
        }
    )
    differing, values, same = features.differences([base, older])
    assert ("map type", "ringbuf") in differing
    assert ("kfunc", base.kfuncs[0]) in differing
    assert len(differing) == 2
    assert [value[("map type", "ringbuf")] for value in values] == [True, False]
    assert same == len(features.flatten(base)) - 2
    assert features.differences([base, base])[0] == []
    # Helpers of a program type one report did not probe are unknown there, not missing.
    unprobed = base.model_copy(
        update={"node": "unprobed", "helpers": {"xdp": ("bpf_map_lookup_elem",)}}
    )
    assert features.differences([base, unprobed])[0] == []
