"""Desired versus actual, as ordered steps. Pure: no kernel calls, tested directly.

The executor in ``loading`` carries the steps out; this module decides them, so the
rules (what is kept, what is swapped in place, what goes last) are in one place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from bpfleet_agent import pins
from bpfleet_core import fitting
from bpfleet_core.manifests import AttachKind, Manifest
from bpfleet_core.resources import AttachPoint

# Link types whose program the kernel can swap atomically (BPF_LINK_UPDATE). Perf-event
# (tracepoint) and raw tracepoint links cannot: a new link goes in before the old goes out.
UPDATABLE_KINDS = frozenset({AttachKind.XDP, AttachKind.TC, AttachKind.CGROUP_SKB})


class SpecError(ValueError):
    """The attach spec does not fit the object; the message says how."""


@dataclass(frozen=True)
class Hook:
    """One concrete attachment: an entry point on one target."""

    entry_point: str
    kind: AttachKind
    target: str
    direction: str | None = None
    xdp_mode: str = "auto"

    @property
    def identity(self) -> str:
        """Which hook this is: kind, direction and target, e.g. ``tc-ingress@eth0``.

        The entry point is not part of it: a program has one link per hook, so renaming
        the entry point swaps the program behind the same link (and an exclusive hook
        such as XDP is never asked to hold two links of ours).
        """
        kind = f"{self.kind.value}-{self.direction}" if self.direction else self.kind.value
        return f"{kind}@{pins.escape(self.target.strip('/'))}"

    @property
    def link_name(self) -> str:
        """The pin name: the identity, plus the XDP mode when it is not ``auto``
        (``xdp@eth0@generic``), since a mode change needs a new link."""
        if self.kind == AttachKind.XDP and self.xdp_mode != "auto":
            return f"{self.identity}@{self.xdp_mode}"
        return self.identity

    def describe(self) -> str:
        direction = f" {self.direction}" if self.direction else ""
        return f"{self.kind.value}{direction} on {self.target}"


def expand(attach_points: Iterable[AttachPoint], manifest: Manifest) -> list[Hook]:
    """Turn the spec into hooks; raise ``SpecError`` if it does not fit the object."""
    points = tuple(attach_points)
    problems = fitting.attach_problems(points, manifest)
    if problems:
        raise SpecError("; ".join(problems))
    hooks: list[Hook] = []
    for point in points:
        entry = manifest.entry_point(point.entry_point)
        assert entry is not None  # checked above
        match point.type:
            case AttachKind.XDP | AttachKind.TC:
                hooks += [
                    Hook(entry.name, point.type, interface, point.direction, point.xdp_mode)
                    for interface in point.interfaces
                ]
            case AttachKind.CGROUP_SKB:
                direction = fitting.CGROUP_DIRECTIONS[entry.expected_attach_type or ""]
                # As the kernel resolves it: '/./' is the root, and is named '/'.
                cgroup = fitting.cgroup_path(str(point.cgroup))
                hooks.append(Hook(entry.name, point.type, cgroup, direction))
            case _:
                hooks.append(Hook(entry.name, point.type, str(point.target or entry.attach_target)))
    identities = Counter(hook.identity for hook in hooks)
    duplicated = sorted({hook.describe() for hook in hooks if identities[hook.identity] > 1})
    if duplicated:
        raise SpecError(f"the same hook is listed twice: {', '.join(duplicated)}")
    return hooks


def link_identity(link_name: str) -> str:
    """The hook identity a pinned link name stands for (its name minus an XDP mode)."""
    return "@".join(link_name.split("@")[:2])


def xdp_mode_of(link_name: str) -> str:
    """The XDP mode a pinned link name records (``auto`` when none is named)."""
    parts = link_name.split("@")
    return parts[2] if len(parts) > 2 else "auto"


@dataclass(frozen=True)
class ObservedLink:
    name: str
    link_id: int
    program_id: int
    alive: bool


@dataclass(frozen=True)
class ObservedProgram:
    """What the kernel holds under one program's pin directory."""

    name: str
    versions: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    links: Mapping[str, ObservedLink] = field(default_factory=dict)

    def current_tag(self) -> str | None:
        """The version the live links run; with no live link, the only version pinned."""
        owners = {pid: tag for tag, progs in self.versions.items() for pid in progs.values()}
        used = Counter(
            owners[link.program_id]
            for link in self.links.values()
            if link.alive and link.program_id in owners
        )
        if used:
            return used.most_common(1)[0][0]
        return next(iter(self.versions)) if len(self.versions) == 1 else None


class LinkAction(StrEnum):
    KEEP = "keep"
    CREATE = "create"
    UPDATE = "update"  # swap the program behind the link, atomically
    REPLACE = "replace"  # attach a new link, then drop the old one
    RECREATE = "recreate"  # the old link lost its target: drop it, attach anew
    # The same hook under another XDP mode: an exclusive hook cannot hold both links,
    # so the old one goes first (a short, honest gap) and comes back if a step fails.
    REATTACH = "reattach"
    REMOVE = "remove"


@dataclass(frozen=True)
class LinkStep:
    action: LinkAction
    link_name: str
    hook: Hook | None = None
    previous: str | None = None  # REATTACH: the pinned link it takes over from


def plan_links(
    hooks: Iterable[Hook], observed: Mapping[str, ObservedLink], program_ids: Mapping[str, int]
) -> list[LinkStep]:
    """Steps that make the links exactly ``hooks``, running ``program_ids``.

    Links are matched by hook identity, so a changed entry point is a swap and a changed
    XDP mode a reattach, never a second link on the same hook. Removals come last:
    whatever is being replaced keeps running until its successor is in place.
    """
    steps: list[LinkStep] = []
    claimed: set[str] = set()
    for hook in hooks:
        name = hook.link_name
        link = observed.get(name)
        if link is None:
            previous = next(
                (
                    pinned
                    for pinned in sorted(observed)
                    if pinned not in claimed and link_identity(pinned) == hook.identity
                ),
                None,
            )
            if previous is not None:
                claimed.add(previous)
                steps.append(LinkStep(LinkAction.REATTACH, name, hook, previous=previous))
            else:
                steps.append(LinkStep(LinkAction.CREATE, name, hook))
            continue
        claimed.add(name)
        if not link.alive:
            steps.append(LinkStep(LinkAction.RECREATE, name, hook))
        elif link.program_id == program_ids[hook.entry_point]:
            steps.append(LinkStep(LinkAction.KEEP, name, hook))
        elif hook.kind in UPDATABLE_KINDS:
            steps.append(LinkStep(LinkAction.UPDATE, name, hook))
        else:
            steps.append(LinkStep(LinkAction.REPLACE, name, hook))
    steps += [LinkStep(LinkAction.REMOVE, name) for name in sorted(observed) if name not in claimed]
    return steps


def stale_versions(observed: ObservedProgram, keep: str) -> list[str]:
    return sorted(tag for tag in observed.versions if tag != keep)


def unwanted_programs(desired: Iterable[str], observed: Iterable[str]) -> list[str]:
    wanted = set(desired)
    return sorted(name for name in observed if name not in wanted)
