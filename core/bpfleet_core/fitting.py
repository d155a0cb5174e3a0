"""Does a program spec fit its artifact? Entry points, attach kinds, config values, and
the constraints its signer put in the manifest (where it may attach, which values).

Pure, so the API refuses a spec that cannot work before any node sees it, and the
agent checks the same rules again against the artifact it verified itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from bpfleet_core.manifests import (
    AttachKind,
    ConfigConstraint,
    ConfigVariable,
    EntryPoint,
    HookConstraints,
    Manifest,
)
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


def _segments(path: str) -> list[str]:
    return [segment for segment in path.split("/") if segment not in ("", ".")]


def cgroup_path(path: str) -> str:
    """A cgroup path as the kernel resolves it under the cgroup2 mount: empty and '.'
    segments dropped, so '', '.', '//' and '/./' all name the root, '/'."""
    return "/" + "/".join(_segments(path))


def cgroup_matches(path: str, patterns: Iterable[str]) -> bool:
    """Whether the cgroup is, or lies below, one a pattern names. A pattern is a cgroup
    path whose segments are shell globs: '/kubepods.slice' is that subtree,
    '/system.slice/*.service' every service's, '/*' any cgroup but the root, '/' all."""
    have = _segments(path)
    return any(
        len(have) >= len(want) and all(map(fnmatchcase, have, want))
        for want in map(_segments, patterns)
    )


def name_matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether the name matches one of the shell globs (``*``, ``?``, ``[...]``)."""
    return any(fnmatchcase(name, pattern) for pattern in patterns)


def _outside_constraints(
    point: AttachPoint, entry: EntryPoint, allowed: HookConstraints
) -> list[str]:
    """Where the point attaches that the entry point's signer did not allow."""
    problems: list[str] = []
    signed = f"the signed manifest allows {entry.name} only"
    if allowed.interfaces is not None:
        refused = [i for i in point.interfaces if not name_matches(i, allowed.interfaces)]
        if refused:
            problems.append(
                f"{signed} on interfaces matching {', '.join(allowed.interfaces)}, "
                f"not on {', '.join(refused)}"
            )
    if (
        allowed.cgroups is not None
        and point.cgroup is not None
        and not cgroup_matches(point.cgroup, allowed.cgroups)
    ):
        problems.append(
            f"{signed} in cgroups {', '.join(allowed.cgroups)}, not in {cgroup_path(point.cgroup)}"
        )
    target = point.target or entry.attach_target
    if allowed.targets is not None and target and not name_matches(target, allowed.targets):
        problems.append(f"{signed} on targets {', '.join(allowed.targets)}, not on {target}")
    return problems


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
        allowed = (
            manifest.constraints.entry_points.get(entry.name) if manifest.constraints else None
        )
        if allowed is not None:
            problems += _outside_constraints(point, entry, allowed)
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


def _outside_limits(name: str, value: ConfigValue, limits: ConfigConstraint) -> str | None:
    """Why the signer does not allow ``value``; None when it does."""
    signed = f"config {name}={value!r} is"
    if limits.values is not None and not any(
        # True == 1 in Python; a bool is no integer here, nor the other way round.
        type(allowed) is type(value) and allowed == value
        for allowed in limits.values
    ):
        allowed = ", ".join(repr(v) for v in limits.values)
        return f"{signed} not one the signed manifest allows ({allowed})"
    if isinstance(value, int) and not isinstance(value, bool):
        if limits.minimum is not None and value < limits.minimum:
            return f"{signed} below the signed minimum {limits.minimum}"
        if limits.maximum is not None and value > limits.maximum:
            return f"{signed} above the signed maximum {limits.maximum}"
    return None


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
            continue
        limits = manifest.constraints.config.get(name) if manifest.constraints else None
        problem = _outside_limits(name, value, limits) if limits is not None else None
        if problem is not None:
            problems.append(problem)
    return problems
