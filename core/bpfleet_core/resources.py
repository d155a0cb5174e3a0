"""The desired-state models users write: what to load and where to attach it.

These are the spec of the ``BpfProgram`` resource (``bpfleet.io/v1alpha1``). Field
names follow Kubernetes conventions (camelCase on the wire, snake_case in Python).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel

from bpfleet_core.manifests import ArtifactName, AttachKind, Sha256Hex


def _printable(value: str) -> str:
    """Hook targets end up in syscalls and pin names: a NUL would cut them short there,
    and no control character belongs in one."""
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in value):
        raise ValueError(f"{value!r} contains a control character")
    return value


def _safe_version(value: str) -> str:
    if ".." in value:
        raise ValueError(f"version {value!r} must not contain '..'")
    return value


# DNS-1123 label: it names a directory under the bpffs root and, later, a Kubernetes object.
ProgramName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
InterfaceName = Annotated[
    str, StringConstraints(pattern=r"^[^/\s:]{1,15}$"), AfterValidator(_printable)
]
# A version names a directory an artifact is looked up in: one path component, no '..'.
ArtifactVersion = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"),
    AfterValidator(_safe_version),
]
ConfigValue = int | bool | str

_TRACEPOINT = re.compile(r"^[a-zA-Z0-9_]+/[a-zA-Z0-9_]+$")
_RAW_TRACEPOINT = re.compile(r"^[a-zA-Z0-9_]+$")
_NEEDS_INTERFACES = {AttachKind.XDP, AttachKind.TC}
_NEEDS_DIRECTION = {AttachKind.TC}


class _Spec(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ArtifactRef(_Spec):
    name: ArtifactName
    version: ArtifactVersion
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
    cgroup: Annotated[str, AfterValidator(_printable)] | None = Field(
        default=None, description="cgroup_*: a cgroup v2 path, relative to the cgroup2 mount."
    )
    target: Annotated[str, AfterValidator(_printable)] | None = Field(
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
        if (
            self.type == AttachKind.RAW_TRACEPOINT
            and self.target
            and not _RAW_TRACEPOINT.match(self.target)
        ):
            raise ValueError(f"raw tracepoint target {self.target!r} is not a tracepoint name")
        return self


_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _check_label(key: str, value: str | None = None) -> None:
    if not _LABEL_KEY.match(key):
        raise ValueError(f"invalid label key {key!r}")
    if value is not None and not _LABEL_VALUE.match(value):
        raise ValueError(f"invalid label value {value!r} for key {key!r}")


def _valid_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        _check_label(key, value)
    return labels


Labels = Annotated[dict[str, str], AfterValidator(_valid_labels)]


class LabelRequirement(_Spec):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelRequirement:
        _check_label(self.key)
        for value in self.values:
            _check_label(self.key, value)
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        match self.operator:
            case "In":
                return labels.get(self.key) in self.values
            case "NotIn":
                return labels.get(self.key) not in self.values
            case "Exists":
                return self.key in labels
            case "DoesNotExist":
                return self.key not in labels


class LabelSelector(_Spec):
    """Kubernetes label selector; the empty selector matches everything."""

    match_labels: Labels = Field(default_factory=dict)
    match_expressions: tuple[LabelRequirement, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            requirement.matches(labels) for requirement in self.match_expressions
        )


_STEP = re.compile(r"^([1-9][0-9]*|([1-9][0-9]?|100)%)$")


class RolloutStrategy(_Spec):
    """How a change reaches the selected nodes: in steps, each baked before the next."""

    steps: tuple[str, ...] = Field(
        default=("100%",),
        description="Cumulative targets: a node count ('1') or a share ('25%'); ends at 100%.",
    )
    bake_seconds: float = Field(default=0.0, ge=0, le=86_400)
    failure_budget: int = Field(
        default=0, ge=0, description="Failed nodes tolerated before the rollout stops."
    )
    auto_rollback: bool = Field(
        default=True, description="Return updated nodes to the previous version on failure."
    )

    @model_validator(mode="after")
    def _steps_are_targets(self) -> RolloutStrategy:
        for step in self.steps:
            if not _STEP.match(step):
                raise ValueError(f"rollout step {step!r} is neither a node count nor 1%..100%")
        return self


class BpfProgramSpec(_Spec):
    artifact: ArtifactRef
    attach: tuple[AttachPoint, ...] = Field(min_length=1)
    config: dict[str, ConfigValue] = Field(
        default_factory=dict, description="Values for the object's const volatile globals."
    )
    node_selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Nodes to run on; empty selects every node."
    )
    rollout: RolloutStrategy = Field(default_factory=RolloutStrategy)
