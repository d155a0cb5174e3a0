"""What applying a revision would change in the fleet, against what is in force (pure).

Programs compare as the API stores them: the spec with the artifact's digest pinned to
the newest upload of that name and version, so a rebuilt artifact shows as a change
even when the manifest text did not move. Policies compare in their validated, stored
form. The fleet is taken as managed by the revision: what the fleet holds and the
revision lacks would be removed (as a GitSource with ``prune`` does).

Connectivity: the simulator judges every pod pair of the fleet's topology before and
after, on every protocol and on one port of each range the policies treat alike, so
the flipped cells are exact, reported as port ranges.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from bpfleet_api.views import ArtifactView, PolicyView, ProgramView
from pydantic import TypeAdapter

from bpfleet_core import bundles
from bpfleet_core.netpol import models, simulating
from bpfleet_core.resources import BpfProgramSpec

Action = Literal["added", "changed", "removed"]
MAX_PORT = 65535
_POLICY = TypeAdapter(models.AnyPolicy)


def _yaml_lines(document: Mapping[str, Any] | None) -> list[str]:
    if document is None:
        return []
    return yaml.safe_dump(dict(document), sort_keys=True, default_flow_style=False).splitlines()


def unified(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The change as a unified diff of the two documents' YAML (all + or all - when one
    side is absent)."""
    lines = difflib.unified_diff(
        _yaml_lines(before), _yaml_lines(after), "in force", "revision", lineterm="", n=2
    )
    return tuple(lines)


# --------------------------------------------------------------------------- programs


@dataclass(frozen=True)
class ProgramChange:
    name: str
    action: Action
    origin: str | None  # "file:line" in the revision; None when removed
    spec_diff: tuple[str, ...]
    artifact: str  # name@version, after (or before, when removed)
    digest_before: str | None
    digest_after: str | None
    nodes: tuple[str, ...]  # nodes that would run the new generation (or detach it)
    nodes_leaving: tuple[str, ...] = ()  # selected before, not after: would detach it
    revived: bool = False  # the kill switch is on; applying puts the program back


def pin(spec: BpfProgramSpec, artifacts: Iterable[ArtifactView]) -> BpfProgramSpec:
    """The spec with the digest the API would pin: the newest upload of its name and
    version (of that digest, when the spec names one). Unchanged when none matches."""
    ref = spec.artifact
    matching = [
        artifact
        for artifact in artifacts
        if (artifact.name, artifact.version) == (ref.name, ref.version)
        and (ref.digest is None or artifact.digest == ref.digest)
    ]
    if not matching:
        return spec
    newest = max(matching, key=lambda artifact: artifact.uploaded_at)
    return spec.model_copy(update={"artifact": ref.model_copy(update={"digest": newest.digest})})


def stored_spec(spec: BpfProgramSpec) -> dict[str, Any]:
    """The spec as the API stores it (and compares it)."""
    return spec.model_dump(mode="json", by_alias=True)


def _selected(spec: BpfProgramSpec, nodes: Mapping[str, Mapping[str, str]]) -> tuple[str, ...]:
    return tuple(name for name in sorted(nodes) if spec.node_selector.matches(dict(nodes[name])))


def plan_programs(
    documents: Sequence[bundles.ProgramDocument],
    fleet: Sequence[ProgramView],
    artifacts: Sequence[ArtifactView],
    nodes: Mapping[str, Mapping[str, str]],
) -> list[ProgramChange]:
    """Programs the revision adds, changes or removes (``nodes``: name -> labels)."""
    current = {program.name: program for program in fleet}
    changes = []
    for document in sorted(documents, key=lambda item: item.name):
        pinned = pin(document.spec, artifacts)
        after = stored_spec(pinned)
        artifact = f"{pinned.artifact.name}@{pinned.artifact.version}"
        now = current.get(document.name)
        if now is None:
            changes.append(
                ProgramChange(
                    document.name,
                    "added",
                    document.origin,
                    unified(None, after),
                    artifact,
                    None,
                    pinned.artifact.digest,
                    _selected(pinned, nodes),
                )
            )
            continue
        if now.spec == after and not now.killed:
            continue
        before = BpfProgramSpec.model_validate(now.spec)
        selected = _selected(pinned, nodes)
        changes.append(
            ProgramChange(
                document.name,
                "changed",
                document.origin,
                unified(now.spec, after),
                artifact,
                before.artifact.digest,
                pinned.artifact.digest,
                selected,
                tuple(n for n in _selected(before, nodes) if n not in selected),
                revived=now.killed,
            )
        )
    wanted = {document.name for document in documents}
    for name in sorted(set(current) - wanted):
        before = BpfProgramSpec.model_validate(current[name].spec)
        changes.append(
            ProgramChange(
                name,
                "removed",
                None,
                unified(current[name].spec, None),
                f"{before.artifact.name}@{before.artifact.version}",
                before.artifact.digest,
                None,
                () if current[name].killed else _selected(before, nodes),
            )
        )
    return changes


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class PolicyChange:
    key: str  # namespace/name
    action: Action
    origin: str | None
    spec_diff: tuple[str, ...]


def stored_policy(policy: models.Policy) -> dict[str, Any]:
    """A validated policy as the API stores (and compares) it."""
    return policy.model_dump(mode="json", by_alias=True, exclude_none=True)


def fleet_policy(view: PolicyView) -> models.Policy:
    return _POLICY.validate_python(view.document)


def plan_policies(
    documents: Sequence[bundles.PolicyDocument], fleet: Sequence[PolicyView]
) -> list[PolicyChange]:
    current = {f"{view.namespace}/{view.name}": view for view in fleet}
    changes = []
    for document in sorted(documents, key=lambda item: item.policy.key):
        key, after = document.policy.key, stored_policy(document.policy)
        now = current.get(key)
        if now is None:
            changes.append(PolicyChange(key, "added", document.origin, unified(None, after)))
        elif now.document != after:
            changes.append(
                PolicyChange(key, "changed", document.origin, unified(now.document, after))
            )
    wanted = {document.policy.key for document in documents}
    for key in sorted(set(current) - wanted):
        changes.append(PolicyChange(key, "removed", None, unified(current[key].document, None)))
    return changes


# ------------------------------------------------------------------------ connectivity

PortRange = tuple[int, int]


@dataclass(frozen=True)
class Flip:
    """A cell of the connectivity matrix that would change: ``client`` opening
    connections to ``server`` on these ports."""

    client: str
    server: str
    protocol: models.Protocol
    ports: tuple[PortRange, ...]
    before: bool
    after: bool
    policies: tuple[str, ...] = ()  # changed policies that select the client or the server

    @property
    def ports_text(self) -> str:
        return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in self.ports)

    def describe(self) -> str:
        verdict = {True: "allowed", False: "denied"}
        return (
            f"{self.client} -> {self.server} {self.protocol} {self.ports_text}: "
            f"{verdict[self.before]} -> {verdict[self.after]}"
        )

    def covers(self, port: int) -> bool:
        return any(low <= port <= high for low, high in self.ports)


def _rule_ports(policies: Iterable[models.Policy]) -> Iterable[models.NetworkPolicyPort]:
    for policy in policies:
        for direction in ("ingress", "egress"):
            for rule in policy.spec.rules(direction):
                yield from rule.ports or ()


def segments(
    policies: Iterable[models.Policy], topology: models.Topology, protocol: models.Protocol
) -> list[PortRange]:
    """The port ranges over which every rule of ``policies`` treats ``protocol`` alike:
    each starts where some rule's range (or a named port of some pod) starts or ends."""
    starts = {1}
    for port in _rule_ports(policies):
        if port.protocol != protocol or port.port is None:
            continue
        if isinstance(port.port, str):
            numbers = [
                number
                for pod in topology.pods.values()
                if (number := pod.named_port(port.port, protocol)) is not None
            ]
            ranges = [(number, number) for number in numbers]
        else:
            ranges = [(port.port, port.end_port if port.end_port is not None else port.port)]
        for low, high in ranges:
            starts.add(low)
            if high < MAX_PORT:
                starts.add(high + 1)
    ordered = sorted(start for start in starts if 1 <= start <= MAX_PORT)
    ends = [*(start - 1 for start in ordered[1:]), MAX_PORT]
    return list(zip(ordered, ends, strict=True))


def _protocols(
    policies: Iterable[models.Policy], topology: models.Topology
) -> list[models.Protocol]:
    used: set[models.Protocol] = {"TCP", "UDP"}
    used |= {port.protocol for port in _rule_ports(policies)}
    used |= {port.protocol for pod in topology.pods.values() for port in pod.ports}
    return [protocol for protocol in models.PROTOCOLS if protocol in used]


def _merged(ranges: list[PortRange]) -> tuple[PortRange, ...]:
    merged: list[PortRange] = []
    for low, high in sorted(ranges):
        if merged and merged[-1][1] + 1 == low:
            merged[-1] = (merged[-1][0], high)
        else:
            merged.append((low, high))
    return tuple(merged)


def _credited(policy: models.Policy, topology: models.Topology, client: str, server: str) -> bool:
    """Whether the policy has a say on the flow: it isolates the server's ingress or the
    client's egress."""
    types = policy.spec.effective_policy_types()
    return ("Ingress" in types and models.selects(policy, topology, server)) or (
        "Egress" in types and models.selects(policy, topology, client)
    )


def flips(
    before: Sequence[models.Policy],
    after: Sequence[models.Policy],
    topology: models.Topology,
    changed: Sequence[models.Policy] = (),
) -> list[Flip]:
    """Every matrix cell whose enforced verdict differs between ``before`` and ``after``
    (``changed``: the policies, old and new versions, to credit with each flip)."""
    if not topology.pods:
        return []
    cells: dict[tuple[str, str, models.Protocol, bool, bool], list[PortRange]] = {}
    every = [*before, *after]
    for protocol in _protocols(every, topology):
        for low, high in segments(every, topology, protocol):
            old = simulating.matrix(before, topology, protocol, low)["allowed"]
            new = simulating.matrix(after, topology, protocol, low)["allowed"]
            for client, row in old.items():
                for server, allowed in row.items():
                    if new[client][server] != allowed:
                        key = (client, server, protocol, allowed, new[client][server])
                        cells.setdefault(key, []).append((low, high))
    found = []
    for (client, server, protocol, old_verdict, new_verdict), ranges in cells.items():
        credited = sorted(
            {policy.key for policy in changed if _credited(policy, topology, client, server)}
        )
        found.append(
            Flip(
                client, server, protocol, _merged(ranges), old_verdict, new_verdict, tuple(credited)
            )
        )
    return sorted(found, key=lambda flip: (flip.client, flip.server, flip.protocol, flip.ports))


# ------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class Plan:
    programs: tuple[ProgramChange, ...]
    policies: tuple[PolicyChange, ...]
    flips: tuple[Flip, ...]

    @property
    def changed(self) -> bool:
        return bool(self.programs or self.policies)


def plan(
    bundle: bundles.Bundle,
    *,
    programs: Sequence[ProgramView],
    artifacts: Sequence[ArtifactView],
    nodes: Mapping[str, Mapping[str, str]],
    policies: Sequence[PolicyView],
    topology: models.Topology,
) -> Plan:
    """Everything applying ``bundle`` would change, against the fleet as it stands."""
    program_changes = plan_programs(bundle.programs, programs, artifacts, nodes)
    policy_changes = plan_policies(bundle.policies, policies)
    found: list[Flip] = []
    if policy_changes:
        before = [fleet_policy(view) for view in policies]
        after = [document.policy for document in bundle.policies]
        keys = {change.key for change in policy_changes}
        changed = [policy for policy in (*before, *after) if policy.key in keys]
        found = flips(before, after, topology, changed)
    return Plan(tuple(program_changes), tuple(policy_changes), tuple(found))
