"""The desired-state models users write: what to load and where to attach it.

These are the spec of the ``BpfProgram`` resource (``bpfleet.io/v1alpha1``). Field
names follow Kubernetes conventions (camelCase on the wire, snake_case in Python).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from bpfleet_core.manifests import ArtifactName, AttachKind, Sha256Hex

# DNS-1123 label: it names a directory under the bpffs root and, later, a Kubernetes object.
ProgramName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
InterfaceName = Annotated[str, StringConstraints(pattern=r"^[^/\s:]{1,15}$")]
ConfigValue = int | bool | str

_TRACEPOINT = re.compile(r"^[a-zA-Z0-9_]+/[a-zA-Z0-9_]+$")
_NEEDS_INTERFACES = {AttachKind.XDP, AttachKind.TC}
_NEEDS_DIRECTION = {AttachKind.TC}


class _Spec(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ArtifactRef(_Spec):
    name: ArtifactName
    version: str = Field(min_length=1, max_length=64)
    digest: Sha256Hex | None = Field(
        default=None, description="sha256 of the object; pins the exact build when set."
    )


class AttachPoint(_Spec):
    """Where one entry point of the object attaches."""

    entry_point: str = Field(min_length=1, description="Function name in the object.")
    type: AttachKind
    interfaces: tuple[InterfaceName, ...] = Field(
        default=(), description="Network interfaces (xdp, tc): one attachment per interface."
    )
    direction: Literal["ingress", "egress"] | None = Field(
        default=None, description="tc: which hook; cgroup_skb: must match the section."
    )
    xdp_mode: Literal["auto", "native", "generic"] = Field(
        default="auto", description="xdp: driver mode, generic (skb) mode, or the kernel's pick."
    )
    cgroup: str | None = Field(
        default=None, description="cgroup_*: a cgroup v2 path, relative to the cgroup2 mount."
    )
    target: str | None = Field(
        default=None,
        description="tracepoint 'category/name' or raw tracepoint name; defaults to the section's.",
    )

    @model_validator(mode="after")
    def _targets_fit_type(self) -> AttachPoint:
        if self.type in _NEEDS_INTERFACES and not self.interfaces:
            raise ValueError(f"attach type {self.type.value} needs at least one interface")
        if self.type not in _NEEDS_INTERFACES and self.interfaces:
            raise ValueError(f"attach type {self.type.value} takes no interfaces")
        if self.type in _NEEDS_DIRECTION and self.direction is None:
            raise ValueError(f"attach type {self.type.value} needs direction ingress or egress")
        if self.type.value.startswith("cgroup_") and not self.cgroup:
            raise ValueError(f"attach type {self.type.value} needs a cgroup path")
        if self.cgroup is not None and ".." in self.cgroup.split("/"):
            raise ValueError("cgroup path must not contain '..'")
        if (
            self.type == AttachKind.TRACEPOINT
            and self.target
            and not _TRACEPOINT.match(self.target)
        ):
            raise ValueError(f"tracepoint target {self.target!r} is not 'category/name'")
        return self


class BpfProgramSpec(_Spec):
    artifact: ArtifactRef
    attach: tuple[AttachPoint, ...] = Field(min_length=1)
    config: dict[str, ConfigValue] = Field(
        default_factory=dict, description="Values for the object's const volatile globals."
    )
