"""The artifact manifest: what a built eBPF object holds and what it needs from a kernel.

A manifest is produced by analysing the ELF object (never typed by hand), signed, and
shipped next to the object. Its canonical JSON bytes are what the signature covers, and
it binds the object through ``object.sha256``.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

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

    def entry_point(self, name: str) -> EntryPoint | None:
        return next((entry for entry in self.entry_points if entry.name == name), None)

    def config_variable(self, name: str) -> ConfigVariable | None:
        return next((var for var in self.config if var.name == name), None)


def canonical_bytes(manifest: Manifest) -> bytes:
    """The exact bytes written to disk and signed: sorted keys, no insignificant space."""
    document = manifest.model_dump(mode="json")
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def parse(data: bytes) -> Manifest:
    """Parse manifest bytes; raises ``pydantic.ValidationError`` or ``ValueError``."""
    return Manifest.model_validate_json(data)


def write(manifest: Manifest, path: Path) -> bytes:
    data = canonical_bytes(manifest)
    path.write_bytes(data)
    return data
