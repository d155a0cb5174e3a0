"""A draft: policy text being written, judged against a fleet, all at once.

``read(text)`` turns the text of one or more policy documents (YAML, maybe half typed)
into a ``Draft``: each document with its validated policy, and every problem with its
field path, line and column, in the validator's words. It never raises for the text.

``simulate(draft, stored, topology)`` puts the draft in the fleet: each draft policy
replaces the stored policy of the same namespace and name (or joins them), and the
result is what the editor shows for one keystroke: the endpoints each draft policy
selects, the connectivity matrix before and after on a chosen protocol and port
(restricted by default to the endpoints the draft concerns), the semantic diff over
every cell and over common ports, the lints, the ratings, each policy's diagram
(``diagramming``) and the flow tests.
"This policy only" compares the draft policies alone with their stored versions alone.

``explain(...)`` says why one cell is what it is, with the allowing rules located in
the draft's text or in the stored policy's canonical YAML (``render``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from bpfleet_core.netpol import (
    connectivity,
    diagramming,
    diffing,
    flowtests,
    linting,
    locating,
    models,
    rating,
    simulating,
    validating,
)
from bpfleet_core.netpol.locating import Loc, LocatedDocument, Span
from bpfleet_core.netpol.models import Protocol

MAX_DOCUMENTS = 50
Severity = Literal["error", "warning"]


# --- reading a draft -------------------------------------------------------------------


@dataclass(frozen=True)
class Diagnostic:
    """A problem of the text, located: field path, line and column."""

    severity: Severity
    message: str
    loc: Loc
    span: Span
    document: int | None = None

    @property
    def path(self) -> str:
        return validating.render_loc(self.loc) if self.loc else ""

    def __str__(self) -> str:
        where = f"{self.path}: " if self.loc else ""
        return f"{self.span.line}:{self.span.column}: {where}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "message": self.message,
            "text": f"{self.path}: {self.message}" if self.loc else self.message,
            "path": list(self.loc),
            "pathText": self.path,
            "line": self.span.line,
            "column": self.span.column,
            "endLine": self.span.end_line,
            "endColumn": self.span.end_column,
            "document": self.document,
        }


@dataclass(frozen=True)
class DraftDocument:
    source: LocatedDocument
    policy: models.Policy | None  # None when invalid

    def to_dict(self) -> dict[str, Any]:
        policy = self.policy
        return {
            "document": self.source.index,
            "line": self.source.line,
            "valid": policy is not None,
            "namespace": policy.namespace if policy is not None else None,
            "name": policy.metadata.name if policy is not None else None,
        }


@dataclass(frozen=True)
class Draft:
    documents: tuple[DraftDocument, ...]
    diagnostics: tuple[Diagnostic, ...]

    @property
    def valid(self) -> bool:
        return not any(item.severity == "error" for item in self.diagnostics)

    @property
    def policies(self) -> list[models.Policy]:
        return [item.policy for item in self.documents if item.policy is not None]

    def source_of(self, key: str) -> LocatedDocument | None:
        for item in self.documents:
            if item.policy is not None and item.policy.key == key:
                return item.source
        return None


def _at(line: int, column: int) -> Span:
    return Span(line, column, line, column)


def read(text: str) -> Draft:
    """Parse and validate every document of ``text``; see the module docstring."""
    located = locating.parse(text)
    diagnostics = [
        Diagnostic("error", item.message, item.loc, _at(item.line, item.column), item.document)
        for item in located.problems
    ]
    documents: list[DraftDocument] = []
    if len(located.documents) > MAX_DOCUMENTS:
        extra = located.documents[MAX_DOCUMENTS]
        diagnostics.append(
            Diagnostic(
                "error",
                f"at most {MAX_DOCUMENTS} documents in one draft",
                (),
                extra.span,
                extra.index,
            )
        )
    seen: dict[str, int] = {}
    for source in located.documents[:MAX_DOCUMENTS]:
        try:
            validated = validating.validate(source.content)
        except validating.PolicyValidationError as error:
            diagnostics.extend(
                Diagnostic("error", item.message, item.loc, source.span_of(item.loc), source.index)
                for item in error.problems
            )
            documents.append(DraftDocument(source, None))
            continue
        diagnostics.extend(
            Diagnostic("warning", item.message, item.loc, source.span_of(item.loc), source.index)
            for item in validated.warnings
        )
        key = validated.policy.key
        if key in seen:
            loc: Loc = ("metadata", "name")
            diagnostics.append(
                Diagnostic(
                    "error",
                    f"policy {key} is already defined in document {seen[key] + 1}",
                    loc,
                    source.span_of(loc),
                    source.index,
                )
            )
            documents.append(DraftDocument(source, None))
            continue
        seen[key] = source.index
        documents.append(DraftDocument(source, validated.policy))
    ordered = sorted(diagnostics, key=lambda item: (item.span.line, item.span.column))
    return Draft(tuple(documents), tuple(ordered))


# --- simulating a draft ------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    protocol: Protocol = "TCP"
    port: int = 80
    this_policy_only: bool = False
    everyone: bool = False  # the matrix over every endpoint, not only the relevant ones
    limit: int = 100  # endpoints in the matrix, at most
    cells: int = 200  # changed cells listed one by one (the counts cover all)
    live: bool = True  # the topology is the fleet's own (not made up)


@dataclass(frozen=True)
class Selection:
    policy: str
    document: int
    endpoints: tuple[str, ...]

    def to_dict(self, topology: models.Topology, most: int = 50) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "document": self.document,
            "count": len(self.endpoints),
            "endpoints": [endpoint_view(topology, name) for name in self.endpoints[:most]],
        }


def endpoint_view(topology: models.Topology, name: str) -> dict[str, Any]:
    pod = topology.pods[name]
    namespace, _, pod_name = name.partition("/")
    return {
        "namespace": namespace,
        "name": pod_name,
        "labels": dict(pod.labels),
        "ip": str(pod.ip),
        "node": pod.node,
        "ports": [port.model_dump(exclude_none=True) for port in pod.ports],
    }


@dataclass(frozen=True)
class MatrixView:
    protocol: Protocol
    port: int
    endpoints: tuple[str, ...]
    before: tuple[str, ...]  # one row per endpoint: "." allowed, "X" denied, "-" itself
    after: tuple[str, ...]
    relevant: int  # endpoints the draft concerns (or all, when asked), before the limit
    fleet: int  # endpoints in the topology

    @property
    def truncated(self) -> bool:
        return len(self.endpoints) < self.relevant

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "port": self.port,
            "endpoints": list(self.endpoints),
            "before": list(self.before),
            "after": list(self.after),
            "relevant": self.relevant,
            "fleet": self.fleet,
            "truncated": self.truncated,
        }


@dataclass(frozen=True)
class Simulation:
    draft: Draft
    topology: models.Topology
    selections: tuple[Selection, ...] = ()
    matrix: MatrixView | None = None
    diff: diffing.Diff | None = None
    ports: tuple[diffing.Diff, ...] = ()
    lints: tuple[linting.Lint, ...] = ()
    ratings: tuple[rating.Rating, ...] = ()
    diagrams: tuple[diagramming.Diagram, ...] = ()
    flows: tuple[flowtests.FlowResult, ...] = ()
    flow_problems: tuple[flowtests.FlowProblem, ...] = ()
    replaced: tuple[str, ...] = field(default=())  # stored policies the draft replaces

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.draft.valid,
            "documents": [item.to_dict() for item in self.draft.documents],
            "problems": [item.to_dict() for item in self.draft.diagnostics],
            "replaces": list(self.replaced),
            "selected": [item.to_dict(self.topology) for item in self.selections],
            "matrix": self.matrix.to_dict() if self.matrix is not None else None,
            "diff": self.diff.to_dict() if self.diff is not None else None,
            "ports": [item.to_dict() for item in self.ports],
            "lints": [item.to_dict() for item in self.lints],
            "ratings": [item.to_dict() for item in self.ratings],
            "diagrams": [item.to_dict() for item in self.diagrams],
            "flows": {
                "passed": sum(1 for item in self.flows if item.passed),
                "failed": sum(1 for item in self.flows if not item.passed),
                "results": [item.to_dict() for item in self.flows],
                "problems": [item.to_dict() for item in self.flow_problems],
            },
        }


def policy_sets(
    draft: Draft, stored: Sequence[models.Policy], *, this_policy_only: bool = False
) -> tuple[list[models.Policy], list[models.Policy]]:
    """(before, after): the stored policies, and the same with the draft's in their place."""
    drafted = {policy.key: policy for policy in draft.policies}
    if this_policy_only:
        return [policy for policy in stored if policy.key in drafted], list(drafted.values())
    kept = [policy for policy in stored if policy.key not in drafted]
    return list(stored), [*kept, *drafted.values()]


_MARKS = str.maketrans("10", ".X")


def _row_text(row: int, columns: Sequence[int], at: int, width: int) -> str:
    """One matrix row: ``.`` allowed, ``X`` denied, ``-`` the client itself (column
    ``at``); ``row`` has bit i set for each server i the client may reach."""
    bits = format(row, "b").zfill(width)[::-1]  # character i is bit i
    text = "".join([bits[column] for column in columns]).translate(_MARKS)
    return f"{text[:at]}-{text[at + 1 :]}"


def _relevant(
    index: connectivity.Index,
    policies: Iterable[models.Policy],
    changed: Iterable[diffing.Cell],
    limit: int,
) -> tuple[list[int], int]:
    """The endpoints a draft concerns, most relevant first: those its policies (and
    their stored versions) select, then those on the other side of a changed cell,
    then those their peers match. Returns (the first ``limit``, how many in all)."""
    selected = peers = 0
    for policy in policies:
        selected |= index.selecting(policy)
        for direction in ("ingress", "egress"):
            for found in index.rule_peers(policy, direction):
                if found != index.everyone:
                    peers |= found
    counterparts = 0
    for cell in changed:
        counterparts |= index.bit(cell.client) | index.bit(cell.server)
    ordered: list[int] = []
    taken = 0
    for group in (selected, counterparts, peers):
        fresh = group & ~taken
        ordered.extend(connectivity.members(fresh))
        taken |= fresh
    return sorted(ordered[:limit]), len(ordered)


def simulate(
    draft: Draft,
    stored: Sequence[models.Policy],
    topology: models.Topology,
    options: Options | None = None,
    flows: flowtests.FlowTestFile | None = None,
) -> Simulation:
    """The draft in the fleet: see the module docstring. Only the draft's valid
    documents take part; invalid ones are in ``draft.diagnostics``."""
    options = options or Options()
    index = connectivity.Index(topology)
    drafted = draft.policies
    before, after = policy_sets(draft, stored, this_policy_only=options.this_policy_only)
    replaced = sorted({policy.key for policy in stored} & {policy.key for policy in drafted})
    sides = diffing.sides(index, before, after, options.protocol, options.port)
    everything = diffing.compare(index, sides, options.protocol, options.port, limit=options.cells)
    if options.everyone:
        shown, relevant = list(range(len(index.names))), len(index.names)
        shown = shown[: options.limit]
    else:
        concerned = [*drafted, *(policy for policy in stored if policy.key in replaced)]
        shown, relevant = _relevant(index, concerned, everything.cells, options.limit)
    width = len(index.names)
    matrix = MatrixView(
        options.protocol,
        options.port,
        tuple(index.names[position] for position in shown),
        tuple(_row_text(sides.before[row], shown, at, width) for at, row in enumerate(shown)),
        tuple(_row_text(sides.after[row], shown, at, width) for at, row in enumerate(shown)),
        relevant,
        len(index.names),
    )
    ports = [
        flow
        for flow in diffing.common_ports(drafted, topology)
        if flow != (options.protocol, options.port)
    ]
    lints: list[linting.Lint] = []
    ratings: list[rating.Rating] = []
    diagrams: list[diagramming.Diagram] = []
    selections: list[Selection] = []
    for item in draft.documents:
        policy = item.policy
        if policy is None:
            continue
        selections.append(
            Selection(policy.key, item.source.index, tuple(index.pods(index.selecting(policy))))
        )
        lints.extend(
            linting.lint(
                policy,
                topology,
                others=[other for other in after if other is not policy],
                source=item.source,
                index=index,
                live=options.live,
            )
        )
        ratings.append(rating.rate(policy, topology, source=item.source, index=index))
        diagrams.append(diagramming.draw(policy, topology, source=item.source, index=index))
    results: list[flowtests.FlowResult] = []
    if flows is not None:
        results = flowtests.run(flows.tests, after, topology)
    return Simulation(
        draft=draft,
        topology=topology,
        selections=tuple(selections),
        matrix=matrix,
        diff=everything,
        ports=tuple(diffing.diff_ports(before, after, index, ports)),
        lints=tuple(lints),
        ratings=tuple(ratings),
        diagrams=tuple(diagrams),
        flows=tuple(results),
        flow_problems=flows.problems if flows is not None else (),
        replaced=tuple(replaced),
    )


# --- what a peer picker offers ----------------------------------------------------------

MAX_VALUES = 200  # label values listed per key


def vocabulary(topology: models.Topology) -> dict[str, Any]:
    """The label keys and values of endpoints and of namespaces, and the named ports
    endpoints declare (with their numbers and how many endpoints name each)."""

    def catalogue(label_sets: Iterable[dict[str, str]]) -> dict[str, list[str]]:
        found: dict[str, set[str]] = {}
        for labels in label_sets:
            for key, value in labels.items():
                found.setdefault(key, set()).add(value)
        return {key: sorted(found[key])[:MAX_VALUES] for key in sorted(found)}

    ports: dict[tuple[str, str], tuple[set[int], set[str]]] = {}
    for name, pod in topology.pods.items():
        for port in pod.ports:
            if port.name is not None:
                numbers, owners = ports.setdefault((port.name, port.protocol), (set(), set()))
                numbers.add(port.port)
                owners.add(name)
    return {
        "endpointLabels": catalogue(pod.labels for pod in topology.pods.values()),
        "namespaceLabels": catalogue(topology.namespaces.values()),
        "namespaces": sorted(topology.namespaces),
        "namedPorts": [
            {
                "name": name,
                "protocol": protocol,
                "ports": sorted(numbers),
                "endpoints": len(owners),
            }
            for (name, protocol), (numbers, owners) in sorted(ports.items())
        ],
    }


# --- explaining one cell ------------------------------------------------------------------


def render(policy: models.Policy) -> str:
    """A stored policy's canonical YAML: what lines of stored policies refer to."""
    document = policy.model_dump(mode="json", by_alias=True, exclude_none=True)
    return yaml.safe_dump(document, sort_keys=False)


@dataclass(frozen=True)
class Located:
    """A policy or one of its rules, and where it is written."""

    policy: str
    origin: Literal["draft", "stored"]
    loc: Loc
    span: Span | None
    document: int | None = None
    rule: simulating.RuleRef | None = None

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "policy": self.policy,
            "origin": self.origin,
            "document": self.document,
            "path": list(self.loc),
            "pathText": validating.render_loc(self.loc) if self.loc else "",
            "line": self.span.line if self.span else None,
            "endLine": self.span.end_line if self.span else None,
        }
        if self.rule is not None:
            found.update(ref=str(self.rule), direction=self.rule.direction, index=self.rule.index)
        return found


def _locate(
    key: str,
    loc: Loc,
    draft: Draft,
    stored: Sequence[models.Policy],
    rule: simulating.RuleRef | None = None,
) -> Located:
    source = draft.source_of(key)
    if source is not None:
        return Located(key, "draft", loc, source.span_of(loc), source.index, rule)
    for policy in stored:
        if policy.key == key:
            rendered = locating.parse(render(policy))
            span = rendered.documents[0].span_of(loc) if rendered.documents else None
            return Located(key, "stored", loc, span, None, rule)
    return Located(key, "stored", loc, None, None, rule)


@dataclass(frozen=True)
class CellExplanation:
    explanation: simulating.Explanation
    isolating: tuple[Located, ...]
    allowing: tuple[Located, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.explanation.to_dict(),
            "summary": self.explanation.summary(),
            "reasons": self.explanation.lines(),
            "isolatingPolicies": [item.to_dict() for item in self.isolating],
            "allowingRules": [item.to_dict() for item in self.allowing],
        }


def explain(
    draft: Draft,
    stored: Sequence[models.Policy],
    topology: models.Topology,
    *,
    client: str,
    server: str,
    protocol: Protocol,
    port: int,
    this_policy_only: bool = False,
) -> CellExplanation:
    """Why ``client -> server`` is allowed or denied with the draft in the fleet.
    Raises ``ValueError`` for an unknown endpoint or a bad protocol or port."""
    _, after = policy_sets(draft, stored, this_policy_only=this_policy_only)
    explanation = simulating.explain(after, topology, client, server, protocol, port)
    isolating: dict[str, Located] = {}
    allowing: list[Located] = []
    for verdict in (
        explanation.egress,
        explanation.ingress,
        explanation.audit_egress,
        explanation.audit_ingress,
    ):
        for key in verdict.isolating:
            isolating.setdefault(key, _locate(key, ("spec", "podSelector"), draft, stored))
        for ref in verdict.allowed_by:
            located = _locate(ref.policy, ("spec", ref.direction, ref.index), draft, stored, ref)
            if located not in allowing:
                allowing.append(located)
    return CellExplanation(explanation, tuple(isolating.values()), tuple(allowing))


MESSAGE_CELLS = 10  # changed cells a proposal's message names one by one (then "and N more")


def _headline(simulation: Simulation) -> diffing.Diff | None:
    """The port a proposal's title speaks of: the chosen one if the draft changes
    anything there, else the first judged port where it does (a policy of port 5432
    judged by default on TCP/80 is about 5432)."""
    chosen = simulation.diff
    if chosen is None or chosen.allowed or chosen.denied:
        return chosen
    return next((item for item in simulation.ports if item.allowed or item.denied), chosen)


def proposal_message(simulation: Simulation) -> str:
    """A commit message for proposing the draft, from what the simulator said of it: a
    title naming the policies and the change on the port it is about; in the body (the
    pull request's description) the matrix delta on every port judged, the cells
    changed, the lints with their lines, and the flow tests."""
    names = ", ".join(policy.key for policy in simulation.draft.policies) or "network policy"
    diff = _headline(simulation)
    change = f"{diff.summary} on {diff.protocol}/{diff.port}" if diff is not None else "changed"
    lines = [f"{names}: {change}", "", "Connectivity before -> after, simulated on the fleet:"]
    if diff is not None:
        lines.append(f"- {diff.protocol}/{diff.port}: {diff.summary}")
        for cell in diff.cells[:MESSAGE_CELLS]:
            lines.append(f"  - newly {cell.change}: {cell.client} -> {cell.server}")
        hidden = diff.allowed + diff.denied - min(len(diff.cells), MESSAGE_CELLS)
        if hidden > 0 and diff.cells:  # other ports are judged by their counts alone
            lines.append(f"  - and {hidden} more")
    chosen = (diff.protocol, diff.port) if diff is not None else None
    others = [item for item in simulation.ports if (item.protocol, item.port) != chosen]
    lines += [
        f"- {item.protocol}/{item.port}: {item.summary}"
        for item in others
        if item.allowed or item.denied
    ]
    unchanged = [
        f"{item.protocol}/{item.port}" for item in others if not (item.allowed or item.denied)
    ]
    if unchanged:
        lines.append(f"- no change on {', '.join(unchanged)}")
    lines.append("")
    if simulation.lints:
        lines.append("Lints:")
        for lint in simulation.lints:
            where = f" (line {lint.line})" if lint.line is not None else ""
            lines.append(f"- {lint.code}{where}: {lint.message}")
    else:
        lines.append("Lints: none.")
    if simulation.flows or simulation.flow_problems:
        passed = sum(1 for item in simulation.flows if item.passed)
        failed = len(simulation.flows) - passed
        lines.append(f"Flow tests: {passed} passed, {failed} failed.")
    return "\n".join(lines)
