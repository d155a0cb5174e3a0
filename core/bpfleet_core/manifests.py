"""The artifact manifest: what a built eBPF object holds and what it needs from a kernel.

A manifest is produced by analysing the ELF object (never typed by hand), signed, and
shipped next to the object. Its canonical JSON bytes are what the signature covers, and
it binds the object through ``object.sha256``.

The signer may add ``constraints`` (from the catalog, at signing time): where each entry
point may attach and which config values it may be given. The signature then covers
where and how the object runs, not only what it is, so a compromised fleet API cannot
point a signed program at a hook or a value its signer never meant
(``fitting`` checks them, in the API and again on every node).
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

# Final keeps the Literal types, so they are valid defaults of the Literal fields below.
MANIFEST_API_VERSION: Final = "bpfleet.io/v1alpha1"
MANIFEST_KIND: Final = "BpfArtifact"

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ArtifactName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AttachKind(StrEnum):
    """How bpfleet attaches an entry point; each maps to one kernel mechanism."""

    XDP = "xdp"
    TC = "tc"
    CGROUP_SKB = "cgroup_skb"
    CGROUP_SOCK = "cgroup_sock"
    CGROUP_SOCK_ADDR = "cgroup_sock_addr"
    TRACEPOINT = "tracepoint"
    RAW_TRACEPOINT = "raw_tracepoint"
    KPROBE = "kprobe"
    UPROBE = "uprobe"
    FENTRY = "fentry"
    FEXIT = "fexit"
    LSM = "lsm"
    SK_LOOKUP = "sk_lookup"
    STRUCT_OPS = "struct_ops"


class EntryPoint(_Frozen):
    """One program in the object, as its ELF section declares it."""

    name: str = Field(description="The C function name; also the kernel program name (truncated).")
    section: str = Field(description="The ELF section, i.e. the SEC() annotation.")
    program_type: str = Field(description="Kernel program type, bpftool spelling (e.g. sched_cls).")
    expected_attach_type: str | None = Field(
        default=None, description="Kernel attach type the program is loaded for, if any."
    )
    attach_kind: AttachKind | None = Field(
        default=None, description="How bpfleet attaches it; None if bpfleet cannot."
    )
    attach_target: str | None = Field(
        default=None,
        description="Target fixed by the section, e.g. 'sched/sched_process_exec'.",
    )
    helpers: tuple[str, ...] = Field(
        default=(), description="Helper functions called, including from subprograms."
    )
    kfuncs: tuple[str, ...] = Field(default=(), description="Kernel functions called.")


class MapSpec(_Frozen):
    """A map the object defines (BTF-defined or a global-data section)."""

    name: str
    type: str = Field(description="Kernel map type, bpftool spelling (e.g. percpu_array).")
    key_size: int = Field(ge=0)
    value_size: int = Field(ge=0)
    max_entries: int = Field(ge=0)


class ConfigVariable(_Frozen):
    """A ``const volatile`` global that can be set at load time."""

    name: str
    offset: int = Field(ge=0, description="Byte offset inside the .rodata section.")
    size: int = Field(gt=0)
    kind: Literal["int", "bool", "char_array", "other"]
    signed: bool = False
    default: int | str | bool | None = Field(
        default=None, description="The value compiled into the object."
    )


class Requirements(_Frozen):
    """What a kernel must offer for every entry point of the object to load and attach."""

    program_types: tuple[str, ...] = ()
    attach_kinds: tuple[AttachKind, ...] = ()
    map_types: tuple[str, ...] = ()
    helpers: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="Helpers needed, per program type."
    )
    kfuncs: tuple[str, ...] = ()
    kernel_btf: bool = Field(
        default=False, description="CO-RE relocations need the kernel's BTF (vmlinux)."
    )
    global_data: bool = Field(
        default=False, description="Uses .rodata/.data/.bss (needs mmapable array maps)."
    )


class ObjectRef(_Frozen):
    filename: str
    sha256: Sha256Hex
    size: int = Field(ge=0)


# A shell glob (fnmatch: *, ?, [...]) or a cgroup pattern (globs per path segment).
Pattern = Annotated[str, StringConstraints(min_length=1, max_length=256)]
_INTERFACE_KINDS = frozenset({AttachKind.XDP, AttachKind.TC})
_CGROUP_KINDS = frozenset(
    {AttachKind.CGROUP_SKB, AttachKind.CGROUP_SOCK, AttachKind.CGROUP_SOCK_ADDR}
)
_TARGET_KINDS = frozenset({AttachKind.TRACEPOINT, AttachKind.RAW_TRACEPOINT})


class HookConstraints(_Frozen):
    """Where one entry point may attach; a field left out constrains nothing."""

    interfaces: tuple[Pattern, ...] | None = Field(
        default=None,
        min_length=1,
        description="xdp, tc: shell globs; every interface must match one.",
    )
    cgroups: tuple[Pattern, ...] | None = Field(
        default=None,
        min_length=1,
        description=(
            "cgroup_*: cgroup patterns, globs per path segment; the cgroup must be one a "
            "pattern matches or lie below it. '/*' is any cgroup but the root."
        ),
    )
    targets: tuple[Pattern, ...] | None = Field(
        default=None,
        min_length=1,
        description="tracepoint, raw_tracepoint: shell globs the target must match.",
    )


class ConfigConstraint(_Frozen):
    """The values one config variable may be given; a field left out constrains nothing."""

    minimum: int | None = Field(default=None, description="int: the least value allowed.")
    maximum: int | None = Field(default=None, description="int: the greatest value allowed.")
    values: tuple[bool | int | str, ...] | None = Field(
        default=None, min_length=1, description="The only values allowed."
    )


class Constraints(_Frozen):
    """What the signer allows, by entry point and by config variable."""

    entry_points: dict[str, HookConstraints] = Field(default_factory=dict)
    config: dict[str, ConfigConstraint] = Field(default_factory=dict)


def _value_fits_kind(value: bool | int | str, kind: str) -> bool:
    match kind:
        case "bool":
            return isinstance(value, bool)
        case "int":
            return isinstance(value, int) and not isinstance(value, bool)
        case "char_array":
            return isinstance(value, str)
    return False


class Manifest(_Frozen):
    api_version: Literal["bpfleet.io/v1alpha1"] = MANIFEST_API_VERSION
    kind: Literal["BpfArtifact"] = MANIFEST_KIND
    name: ArtifactName
    version: str = Field(min_length=1, max_length=64)
    license: str
    object: ObjectRef
    entry_points: tuple[EntryPoint, ...]
    maps: tuple[MapSpec, ...] = ()
    config: tuple[ConfigVariable, ...] = ()
    requirements: Requirements
    constraints: Constraints | None = Field(
        default=None, description="Set by the signer: where it may attach, which config values."
    )

    def entry_point(self, name: str) -> EntryPoint | None:
        return next((entry for entry in self.entry_points if entry.name == name), None)

    def config_variable(self, name: str) -> ConfigVariable | None:
        return next((var for var in self.config if var.name == name), None)

    def constrained(self, constraints: Constraints | None) -> Manifest:
        """This manifest with ``constraints`` (checked against it; ``ValueError`` if they
        name what the object lacks or do not fit it)."""
        return Manifest.model_validate(
            {**self.model_dump(exclude={"constraints"}), "constraints": constraints}
        )

    @model_validator(mode="after")
    def _constraints_fit_the_object(self) -> Manifest:
        # A constraint on nothing would read as a safeguard and guard nothing.
        if self.constraints is None:
            return self
        problems: list[str] = []
        for name, hooks in self.constraints.entry_points.items():
            entry = self.entry_point(name)
            if entry is None:
                problems.append(f"constraints name entry point {name!r}, which {self.name} lacks")
                continue
            kind = entry.attach_kind
            fitting = {
                "interfaces": kind in _INTERFACE_KINDS,
                "cgroups": kind in _CGROUP_KINDS,
                "targets": kind in _TARGET_KINDS,
            }
            problems += [
                f"constraints on {name}: {field} do not apply to "
                f"{kind.value if kind else 'unattachable'} entry points"
                for field, applies in fitting.items()
                if getattr(hooks, field) is not None and not applies
            ]
        for name, limits in self.constraints.config.items():
            variable = self.config_variable(name)
            if variable is None:
                problems.append(
                    f"constraints name config variable {name!r}, which {self.name} lacks"
                )
                continue
            if (
                limits.minimum is not None or limits.maximum is not None
            ) and variable.kind != "int":
                problems.append(
                    f"constraints on {name}: minimum/maximum need an int, not {variable.kind}"
                )
            if (
                limits.minimum is not None
                and limits.maximum is not None
                and limits.minimum > limits.maximum
            ):
                problems.append(f"constraints on {name}: minimum is above maximum")
            wrong = [v for v in limits.values or () if not _value_fits_kind(v, variable.kind)]
            if wrong:
                problems.append(f"constraints on {name}: {wrong!r} is not of kind {variable.kind}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def canonical_bytes(manifest: Manifest) -> bytes:
    """The exact bytes written to disk and signed: sorted keys, no insignificant space.
    A manifest without constraints has no ``constraints`` key, so its bytes are what
    they were before constraints existed (and agents of that time still read it)."""
    document = manifest.model_dump(
        mode="json", exclude={"constraints"} if manifest.constraints is None else None
    )
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def parse(data: bytes) -> Manifest:
    """Parse manifest bytes; raises ``pydantic.ValidationError`` or ``ValueError``."""
    return Manifest.model_validate_json(data)


def write(manifest: Manifest, path: Path) -> bytes:
    data = canonical_bytes(manifest)
    path.write_bytes(data)
    return data
