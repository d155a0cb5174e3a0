"""What this node lets the fleet attach, whatever a signature allows. Pure.

A signature says what an object is and, with constraints, where its signer meant it to
run; the fleet API says where it runs here. Neither is this node's word: an operator
narrows what any assignment may do on it with ``BPFLEET_AGENT_ALLOWED_*`` (attach kinds,
interface globs, cgroup patterns) and refuses old versions with
``BPFLEET_AGENT_MINIMUM_VERSIONS``, so an API that is compromised (or a signed object
with a known bug) cannot go below that floor. The defaults permit everything the
catalog's programs need, except the root cgroup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from bpfleet_agent.reconciling import Hook
from bpfleet_core import fitting
from bpfleet_core.manifests import AttachKind

_INTERFACE_KINDS = frozenset({AttachKind.XDP, AttachKind.TC})
_CGROUP_KINDS = frozenset({AttachKind.CGROUP_SKB})
# A release (dotted numbers), then an optional pre-release ("-rc1") and build ("+git5").
_VERSION = re.compile(r"^v?(?P<release>[0-9]+(?:\.[0-9]+)*)(?P<pre>-[^+]*)?(?:\+.*)?$")


def version_key(version: str) -> tuple[tuple[int, ...], int, str] | None:
    """An ordering key for a version, semver-like: releases by their numbers (1.10 after
    1.9, 1.0 equal to 1.0.0), a pre-release before its release; None when the version
    has no leading release number and so cannot be ordered."""
    match = _VERSION.match(version)
    if match is None:
        return None
    numbers = [int(part) for part in match["release"].split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    pre = match["pre"]
    return (tuple(numbers), 0 if pre else 1, pre or "")


@dataclass(frozen=True)
class NodePermits:
    """The defaults are the settings' defaults: what the catalog needs, but no root cgroup."""

    attach_kinds: frozenset[AttachKind] = fitting.ATTACHABLE_KINDS
    interfaces: tuple[str, ...] = ("*",)
    cgroups: tuple[str, ...] = ("/*",)
    minimum_versions: Mapping[str, str] = field(default_factory=dict)

    def hook_problems(self, hooks: Iterable[Hook]) -> list[str]:
        """Why this node does not permit each hook it does not permit."""
        problems: list[str] = []
        for hook in hooks:
            if hook.kind not in self.attach_kinds:
                problems.append(
                    f"this node permits no {hook.kind.value} hooks "
                    f"(BPFLEET_AGENT_ALLOWED_ATTACH_KINDS: {_listed(self.attach_kinds)})"
                )
            elif hook.kind in _INTERFACE_KINDS and not fitting.name_matches(
                hook.target, self.interfaces
            ):
                problems.append(
                    f"this node permits no hooks on interface {hook.target} "
                    f"(BPFLEET_AGENT_ALLOWED_INTERFACES: {', '.join(self.interfaces)})"
                )
            elif hook.kind in _CGROUP_KINDS and not fitting.cgroup_matches(
                hook.target, self.cgroups
            ):
                problems.append(
                    f"this node permits no hooks in cgroup {fitting.cgroup_path(hook.target)} "
                    f"(BPFLEET_AGENT_ALLOWED_CGROUPS: {', '.join(self.cgroups)})"
                )
        return problems

    def version_problem(self, name: str, version: str) -> str | None:
        """Why this node refuses ``name@version`` as older than its floor; None if not."""
        floor = self.minimum_versions.get(name)
        if floor is None:
            return None
        have, least = version_key(version), version_key(floor)
        assert least is not None  # the settings refuse a floor that cannot be ordered
        if have is None:
            return (
                f"{name}@{version} cannot be ordered against this node's minimum {floor} "
                "(BPFLEET_AGENT_MINIMUM_VERSIONS), so it is refused"
            )
        if have < least:
            return (
                f"{name}@{version} is older than this node's minimum {floor} "
                "(BPFLEET_AGENT_MINIMUM_VERSIONS)"
            )
        return None

    def versions_only(self) -> NodePermits:
        """These permits without the hook limits: for the policy datapath, whose hooks
        the node's own endpoints file chooses, never the API."""
        return replace(UNRESTRICTED, minimum_versions=self.minimum_versions)


# Every hook the agent can attach, the root cgroup included, and any version.
UNRESTRICTED = NodePermits(cgroups=("/",))


def _listed(kinds: Iterable[AttachKind]) -> str:
    return ", ".join(sorted(kind.value for kind in kinds)) or "none"
