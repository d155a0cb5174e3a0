"""A node's eBPF feature report, and whether an artifact's requirements fit it.

The report is produced on the node by real probe loads (the agent's ``probing``); this
module only holds it and judges against it, so the same check runs on the node, in the
API for every node at once, and offline in CI against saved reports.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bpfleet_core.manifests import AttachKind, Requirements

MissingKind = Literal[
    "kernel_btf", "global_data", "program_type", "attach", "map_type", "helper", "kfunc"
]


class FeatureReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    node: str
    kernel_release: str
    arch: str
    probed_at: datetime
    libbpf_version: str
    kernel_btf: bool = Field(description="/sys/kernel/btf/vmlinux is present (CO-RE works).")
    jit_enabled: bool
    bpffs: bool = Field(description="A bpffs is mounted where the agent pins.")
    bpf_stats: bool = Field(description="Run-time statistics can be enabled (BPF_ENABLE_STATS).")
    global_data: bool = Field(description="Mmapable array maps for .rodata/.data/.bss.")
    program_types: dict[str, bool]
    map_types: dict[str, bool]
    attach_kinds: dict[AttachKind, bool]
    helpers: dict[str, tuple[str, ...]] = Field(
        description="Helpers available, per program type whose helpers were probed. A "
        "program type absent here was not probed (struct_ops, syscall, tracing... cannot "
        "be probed without an attach target): its helpers are unknown, not missing."
    )
    kfuncs: tuple[str, ...] = ()

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def load(cls, path: Path) -> FeatureReport:
        return cls.model_validate_json(path.read_bytes())


class Missing(BaseModel):
    """One thing an object needs that a kernel lacks."""

    model_config = ConfigDict(frozen=True)

    kind: MissingKind
    name: str
    program_type: str | None = None

    def describe(self) -> str:
        match self.kind:
            case "kernel_btf":
                return "kernel lacks BTF (/sys/kernel/btf/vmlinux) needed for CO-RE relocations"
            case "global_data":
                return "kernel lacks global data support (mmapable array maps)"
            case "program_type":
                return f"kernel lacks program type {self.name}"
            case "attach":
                return f"kernel cannot attach {self.name} programs"
            case "map_type":
                return f"kernel lacks map type {self.name}"
            case "helper":
                return f"kernel lacks helper {self.name} for program type {self.program_type}"
            case "kfunc":
                return f"kernel lacks kfunc {self.name}"


def check(requirements: Requirements, report: FeatureReport) -> list[Missing]:
    """Everything ``requirements`` needs that ``report`` lacks; empty means compatible.

    Helpers are checked only for program types the kernel has (a missing program type
    already explains why its helpers cannot be used) and whose helpers were probed: for
    the others the report knows nothing, and the load itself is the judge.
    """
    missing: list[Missing] = []
    if requirements.kernel_btf and not report.kernel_btf:
        missing.append(Missing(kind="kernel_btf", name="vmlinux"))
    if requirements.global_data and not report.global_data:
        missing.append(Missing(kind="global_data", name="global_data"))
    missing += [
        Missing(kind="program_type", name=program_type)
        for program_type in requirements.program_types
        if not report.program_types.get(program_type, False)
    ]
    missing += [
        Missing(kind="attach", name=kind.value)
        for kind in requirements.attach_kinds
        if not report.attach_kinds.get(kind, False)
    ]
    missing += [
        Missing(kind="map_type", name=map_type)
        for map_type in requirements.map_types
        if not report.map_types.get(map_type, False)
    ]
    for program_type, helpers in sorted(requirements.helpers.items()):
        if not report.program_types.get(program_type, False):
            continue
        if program_type not in report.helpers:
            continue  # not probed: unknown, not missing
        available = set(report.helpers[program_type])
        missing += [
            Missing(kind="helper", name=helper, program_type=program_type)
            for helper in helpers
            if helper not in available
        ]
    kfuncs = set(report.kfuncs)
    missing += [
        Missing(kind="kfunc", name=kfunc) for kfunc in requirements.kfuncs if kfunc not in kfuncs
    ]
    return missing


def summarize(missing: list[Missing]) -> str:
    """One line for a status message: 'kernel lacks program type tracing; ...'."""
    return "; ".join(item.describe() for item in missing)


# The groups a report's features fall in, in the order people read them.
FEATURE_GROUPS = (
    "kernel",
    "program type",
    "map type",
    "attach kind",
    "helper",
    "kfunc",
)


def flatten(report: FeatureReport) -> dict[tuple[str, str], bool]:
    """Every feature the report speaks of, as (group, name) -> present. Helpers are
    named ``program_type: helper``; a helper or kfunc the report does not list is
    absent here, so compare only reports whose union you take (see ``differences``)."""
    flat: dict[tuple[str, str], bool] = {
        ("kernel", "BTF"): report.kernel_btf,
        ("kernel", "JIT"): report.jit_enabled,
        ("kernel", "bpffs"): report.bpffs,
        ("kernel", "run-time statistics"): report.bpf_stats,
        ("kernel", "global data"): report.global_data,
    }
    flat |= {("program type", name): ok for name, ok in report.program_types.items()}
    flat |= {("map type", name): ok for name, ok in report.map_types.items()}
    flat |= {("attach kind", kind.value): ok for kind, ok in report.attach_kinds.items()}
    for program_type, helpers in report.helpers.items():
        flat |= {("helper", f"{program_type}: {helper}"): True for helper in helpers}
    flat |= {("kfunc", name): True for name in report.kfuncs}
    return flat


def differences(
    reports: list[FeatureReport],
) -> tuple[list[tuple[str, str]], list[dict[tuple[str, str], bool]], int]:
    """Across ``reports``: the features on which they differ (grouped, sorted), each
    report's value for every feature (unlisted helpers and kfuncs count as absent, and
    helpers only for program types the other reports probed too), and how many
    features they all agree on."""
    flats = [flatten(report) for report in reports]
    probed = [set(report.helpers) for report in reports]
    common_probed = set.intersection(*probed) if probed else set()
    keys: set[tuple[str, str]] = set().union(*flats) if flats else set()
    # A helper of a program type some report did not probe is unknown there, not absent.
    keys = {key for key in keys if key[0] != "helper" or key[1].partition(":")[0] in common_probed}
    values = [{key: flat.get(key, False) for key in keys} for flat in flats]
    differing = sorted(
        (key for key in keys if len({value[key] for value in values}) > 1),
        key=lambda key: (FEATURE_GROUPS.index(key[0]), key[1]),
    )
    return differing, values, len(keys) - len(differing)
