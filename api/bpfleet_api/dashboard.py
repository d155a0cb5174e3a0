"""What the dashboard reads: the overview, node pages (filter, sort, page), one-word
statuses of programs and policies, the kernel matrix and comparisons, and which
programs a node could run. Reads only; every judgement the UI shows is made here, so
the browser renders and never decides.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, cast

from sqlalchemy import case, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from bpfleet_api import changes, fleet, gitsources, policies
from bpfleet_api.models import (
    GitSourceRecord,
    Node,
    NodeFeatures,
    NodePolicyStatus,
    Policy,
    Program,
    Rollout,
    RolloutPhase,
    aware,
)
from bpfleet_core import features
from bpfleet_core.protocol import parse_policy_ref
from bpfleet_core.resources import BpfProgramSpec, LabelSelector

NodeReadiness = fleet.NodeReadiness
ProgramStatus = Literal["Ready", "Progressing", "Failed", "Killed"]
PolicyStatus = Literal["Enforcing", "Pending", "Failed"]
NODE_SORTS = ("name", "kernelRelease", "lastHeartbeat", "readiness", "appliedRevision")
_READINESS_ORDER = {"Ready": 0, "NotReady": 1, "Unknown": 2}
_FAILED_PHASES = frozenset({RolloutPhase.FAILED, RolloutPhase.ROLLED_BACK})
_ACTIVE_PHASES = frozenset({RolloutPhase.PROGRESSING, RolloutPhase.BAKING, RolloutPhase.PAUSED})


@dataclass(frozen=True)
class Thresholds:
    """Heartbeat ages that make a node Ready, NotReady or Unknown."""

    ready_seconds: float
    unknown_seconds: float

    def readiness(self, heartbeat: datetime | None, now: datetime) -> NodeReadiness:
        return fleet.readiness_at(heartbeat, now, self.ready_seconds, self.unknown_seconds)


# ---------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class NodeQuery:
    selector: LabelSelector | None = None
    readiness: NodeReadiness | None = None
    sort: str = "name"  # one of NODE_SORTS, '-' in front for descending
    limit: int | None = None
    offset: int = 0


def node_page(
    session: Session, query: NodeQuery, thresholds: Thresholds, now: datetime
) -> tuple[list[Node], int]:
    """One page of nodes, filtered and sorted, and how many match over all pages. Only
    the columns that filter and sort are read for every node; whole rows for the page."""
    descending, key = query.sort.startswith("-"), query.sort.removeprefix("-")
    if key not in NODE_SORTS:
        raise changes.Invalid(
            f"cannot sort nodes by {key!r}; choose one of {', '.join(NODE_SORTS)}"
        )
    rows = session.execute(
        sa_select(
            col(Node.name),
            col(Node.labels),
            col(Node.kernel_release),
            col(Node.last_heartbeat),
            col(Node.applied_revision),
        )
    ).all()
    matching = []
    for name, labels, kernel, heartbeat, applied in rows:
        if query.selector is not None and not query.selector.matches(dict(labels)):
            continue
        readiness = thresholds.readiness(heartbeat, now)
        if query.readiness is not None and readiness != query.readiness:
            continue
        heartbeat_key = aware(heartbeat).timestamp() if heartbeat is not None else 0.0
        sort_value: object = {
            "name": name,
            "kernelRelease": kernel,
            "lastHeartbeat": heartbeat_key,
            "readiness": _READINESS_ORDER[readiness],
            "appliedRevision": applied,
        }[key]
        matching.append((sort_value, name))
    # Ties (same kernel, same readiness) keep name order in both directions.
    matching.sort(key=lambda item: item[1])
    matching.sort(key=lambda item: item[0], reverse=descending)  # type: ignore[arg-type,return-value]
    names = [name for _, name in matching]
    end = None if query.limit is None else query.offset + query.limit
    page = names[query.offset : end]
    found = {
        node.name: node for node in session.exec(select(Node).where(col(Node.name).in_(page))).all()
    }
    return [found[name] for name in page if name in found], len(names)


def readiness_of(
    session: Session, names: Iterable[str], thresholds: Thresholds, now: datetime
) -> dict[str, NodeReadiness]:
    """These nodes' readiness, read in one statement."""
    wanted = sorted(set(names))
    rows = session.execute(
        sa_select(col(Node.name), col(Node.last_heartbeat)).where(col(Node.name).in_(wanted))
    ).all()
    return {name: thresholds.readiness(heartbeat, now) for name, heartbeat in rows}


def readiness_counts(
    session: Session, thresholds: Thresholds, now: datetime
) -> Counter[NodeReadiness]:
    """Nodes by readiness, counted by the database."""
    heartbeat = col(Node.last_heartbeat)
    readiness = case(
        (heartbeat.is_(None), "Unknown"),
        (heartbeat >= now - timedelta(seconds=thresholds.ready_seconds), "Ready"),
        (heartbeat >= now - timedelta(seconds=thresholds.unknown_seconds), "NotReady"),
        else_="Unknown",
    )
    rows = session.execute(sa_select(readiness, func.count()).group_by(readiness)).all()
    return Counter({cast(NodeReadiness, state): int(number) for state, number in rows})


# ------------------------------------------------------------------------- programs


def program_status(summary: fleet.Summary, rollout: Rollout | None, killed: bool) -> ProgramStatus:
    if killed:
        return "Killed"
    if summary.failed or (rollout is not None and rollout.phase in _FAILED_PHASES):
        return "Failed"
    if summary.pending or (rollout is not None and rollout.phase in _ACTIVE_PHASES):
        return "Progressing"
    return "Ready"


@dataclass(frozen=True)
class ProgramRow:
    program: Program
    summary: fleet.Summary
    rollout: Rollout | None
    status: ProgramStatus


def program_rows(session: Session, programs: Iterable[Program]) -> list[ProgramRow]:
    rows = []
    for program in programs:
        summary = fleet.summarize(session, program)
        rollout = fleet.latest_rollout(session, program.name)
        rows.append(
            ProgramRow(program, summary, rollout, program_status(summary, rollout, program.killed))
        )
    return rows


def all_programs(session: Session) -> list[Program]:
    return list(session.exec(select(Program).order_by(col(Program.name))).all())


# ------------------------------------------------------------------------- policies


def policy_status(summary: policies.PolicySummary) -> PolicyStatus:
    if summary.failed:
        return "Failed"
    if summary.pending:
        return "Pending"
    return "Enforcing"


@dataclass(frozen=True)
class Counters:
    allowed: int = 0
    denied: int = 0
    audit_denied: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(
            self.allowed + other.allowed,
            self.denied + other.denied,
            self.audit_denied + other.audit_denied,
        )


def node_counters(session: Session, nodes: Iterable[str] | None = None) -> dict[str, Counters]:
    """Each node's datapath counters, from its last policy report."""
    query = select(NodePolicyStatus)
    if nodes is not None:
        query = query.where(col(NodePolicyStatus.node).in_(sorted(set(nodes))))
    found = {}
    for row in session.exec(query).all():
        report = row.report or {}
        found[row.node] = Counters(
            int(report.get("allowed", 0)),
            int(report.get("denied", 0)),
            int(report.get("auditDenied", 0)),
        )
    return found


def policy_counters(session: Session) -> dict[tuple[str, str], Counters]:
    """Per policy, the counters of the nodes enforcing it, summed. The datapath counts
    per node, so a node enforcing two policies adds its counters to both."""
    sums: dict[tuple[str, str], Counters] = {}
    for row in session.exec(select(NodePolicyStatus)).all():
        report = row.report or {}
        counters = Counters(
            int(report.get("allowed", 0)),
            int(report.get("denied", 0)),
            int(report.get("auditDenied", 0)),
        )
        for ref in report.get("policies", []):
            namespace, name, _ = parse_policy_ref(str(ref))
            sums[(namespace, name)] = sums.get((namespace, name), Counters()) + counters
    return sums


# ------------------------------------------------------------------------- overview


@dataclass(frozen=True)
class Sync:
    """Git -> fleet (the revision applied) and fleet -> nodes (objects in force)."""

    source: GitSourceRecord | None
    ready: int
    desired: int


def sync_of(
    objects: Sequence[tuple[str, str | None, str]],
    program_rows_by_name: dict[str, ProgramRow],
    policy_summaries: dict[tuple[str, str], policies.PolicySummary],
) -> tuple[int, int]:
    """(ready, desired) over node x object pairs: programs attached or incompatible on
    their nodes, policies enforced on theirs."""
    ready = desired = 0
    for kind, namespace, name in objects:
        if kind == "BpfProgram":
            row = program_rows_by_name.get(name)
            if row is not None:
                ready += row.summary.attached + row.summary.incompatible
                desired += row.summary.desired
        else:
            summary = policy_summaries.get((namespace or "default", name))
            if summary is not None:
                ready += summary.enforcing
                desired += summary.desired
    return ready, desired


def all_policies(session: Session) -> list[Policy]:
    return list(
        session.exec(select(Policy).order_by(col(Policy.namespace), col(Policy.name))).all()
    )


# -------------------------------------------------------------------------- kernels


@dataclass(frozen=True)
class KernelMatrix:
    keys: list[tuple[str, str]]
    rows: list[tuple[Node, features.FeatureReport | None, list[bool]]]
    same: int


def reports_of(session: Session, names: Iterable[str]) -> dict[str, features.FeatureReport]:
    wanted = sorted(set(names))
    return {
        row.node: features.FeatureReport.model_validate(row.report)
        for row in session.exec(select(NodeFeatures).where(col(NodeFeatures.node).in_(wanted)))
    }


def kernel_matrix(session: Session, nodes: list[Node]) -> KernelMatrix:
    """The features on which these nodes' kernels differ, and each node's values."""
    reports = reports_of(session, (node.name for node in nodes))
    reported = [node for node in nodes if node.name in reports]
    differing, values, same = features.differences([reports[node.name] for node in reported])
    by_node = dict(zip((node.name for node in reported), values, strict=True))
    rows = []
    for node in nodes:
        value = by_node.get(node.name)
        rows.append(
            (
                node,
                reports.get(node.name),
                [value[key] for key in differing] if value is not None else [],
            )
        )
    return KernelMatrix(differing, rows, same)


@dataclass(frozen=True)
class GroupDiff:
    group: str
    only_a: list[str]
    only_b: list[str]
    same: int


def compare(a: features.FeatureReport, b: features.FeatureReport) -> list[GroupDiff]:
    """What each kernel has that the other lacks, per group."""
    differing, values, _ = features.differences([a, b])
    counts = Counter(group for group, _ in values[0])
    groups = []
    for group in features.FEATURE_GROUPS:
        in_group = [key for key in differing if key[0] == group]
        groups.append(
            GroupDiff(
                group,
                [name for key in in_group if values[0][key] for name in [key[1]]],
                [name for key in in_group if values[1][key] for name in [key[1]]],
                counts[group] - len(in_group),
            )
        )
    return groups


@dataclass(frozen=True)
class Fit:
    program: str
    artifact: str
    selected: bool
    missing: list[str]


def fits(session: Session, node: Node, report: features.FeatureReport) -> list[Fit]:
    """For every program of the fleet (not killed): could this node's kernel run it?"""
    found = []
    for program in all_programs(session):
        if program.killed:
            continue
        spec = BpfProgramSpec.model_validate(program.spec)
        try:
            manifest = fleet.manifest_of(fleet.find_artifact(session, spec.artifact))
        except changes.NotFound as error:
            found.append(
                Fit(
                    program.name,
                    _artifact(spec),
                    spec.node_selector.matches(node.labels),
                    [error.message],
                )
            )
            continue
        missing = features.check(manifest.requirements, report)
        found.append(
            Fit(
                program.name,
                _artifact(spec),
                spec.node_selector.matches(node.labels),
                [item.describe() for item in missing],
            )
        )
    return found


def _artifact(spec: BpfProgramSpec) -> str:
    return f"{spec.artifact.name}@{spec.artifact.version}"


def origins(session: Session) -> dict[tuple[str, str | None, str], gitsources.Origin]:
    return gitsources.origins(gitsources.list_sources(session))
