"""Does a program spec fit its artifact? Entry points, attach kinds, config values.

Pure, so the API refuses a spec that cannot work before any node sees it, and the
agent checks the same rules again against the artifact it verified itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from bpfleet_core.manifests import AttachKind, ConfigVariable, Manifest
from bpfleet_core.resources import AttachPoint, ConfigValue

# How the agent attaches each kind today; others load nowhere yet.
ATTACHABLE_KINDS = frozenset(
    {
        AttachKind.XDP,
        AttachKind.TC,
        AttachKind.CGROUP_SKB,
        AttachKind.TRACEPOINT,
        AttachKind.RAW_TRACEPOINT,
    }
)
CGROUP_DIRECTIONS = {"cgroup_inet_ingress": "ingress", "cgroup_inet_egress": "egress"}


def attach_problems(points: tuple[AttachPoint, ...], manifest: Manifest) -> list[str]:
    problems: list[str] = []
    for point in points:
        entry = manifest.entry_point(point.entry_point)
        if entry is None:
            known = ", ".join(e.name for e in manifest.entry_points)
            problems.append(
                f"{manifest.name} has no entry point {point.entry_point!r} (it has: {known})"
            )
            continue
        if entry.attach_kind != point.type:
            actual = entry.attach_kind.value if entry.attach_kind else "nothing bpfleet attaches"
            problems.append(
                f"entry point {entry.name} (section {entry.section}) attaches as {actual}, "
                f"not as {point.type.value}"
            )
            continue
        if point.type not in ATTACHABLE_KINDS:
            problems.append(f"bpfleet cannot attach {point.type.value} programs yet")
        elif point.type == AttachKind.CGROUP_SKB:
            direction = CGROUP_DIRECTIONS.get(entry.expected_attach_type or "")
            if direction is None:
                problems.append(f"entry point {entry.name} has no cgroup_skb direction")
            elif point.direction not in (None, direction):
                problems.append(
                    f"entry point {entry.name} is built for {direction}, not {point.direction}"
                )
        elif point.type in (AttachKind.TRACEPOINT, AttachKind.RAW_TRACEPOINT) and not (
            point.target or entry.attach_target
        ):
            problems.append(f"entry point {entry.name} needs a target")
    return problems


def encode_config(variable: ConfigVariable, value: ConfigValue) -> bytes:
    """The bytes a ``const volatile`` global holds for ``value``; ValueError if it can't."""
    match variable.kind:
        case "bool":
            if not isinstance(value, bool):
                raise ValueError(f"config {variable.name} is a bool, got {value!r}")
            return bytes([int(value)]).ljust(variable.size, b"\0")
        case "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"config {variable.name} is an integer, got {value!r}")
            try:
                return value.to_bytes(variable.size, "little", signed=variable.signed)
            except OverflowError:
                raise ValueError(
                    f"config {variable.name} does not fit {variable.size} byte(s): {value}"
                ) from None
        case "char_array":
            if not isinstance(value, str):
                raise ValueError(f"config {variable.name} is a string, got {value!r}")
            data = value.encode()
            if len(data) >= variable.size:
                raise ValueError(f"config {variable.name} holds {variable.size - 1} bytes at most")
            return data.ljust(variable.size, b"\0")
        case _:
            raise ValueError(f"config {variable.name} has a type bpfleet cannot set")


def config_problems(manifest: Manifest, config: Mapping[str, ConfigValue]) -> list[str]:
    problems: list[str] = []
    for name, value in config.items():
        variable = manifest.config_variable(name)
        if variable is None:
            known = ", ".join(v.name for v in manifest.config) or "none"
            problems.append(f"{manifest.name} has no config variable {name!r} (it has: {known})")
            continue
        try:
            encode_config(variable, value)
        except ValueError as error:
            problems.append(str(error))
    return problems
