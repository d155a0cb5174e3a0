"""``bpfleet get`` and ``bpfleet describe``: the fleet as tables, documents, and the
detail a person needs when something did not attach (states with reasons, verifier
excerpts, events)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from pydantic import BaseModel

from bpfleet_cli.exits import CommandError, ExitCode
from bpfleet_cli.options import ContextOption, connect, label_selector, seconds
from bpfleet_cli.tables import age, labels_text, selector_text, short_revision, table
from bpfleet_core.resources import BpfProgramSpec, LabelSelector

if TYPE_CHECKING:  # the client and the API's views load when a command runs
    from bpfleet_api.views import (
        GitSourceView,
        NodeView,
        PolicyView,
        ProgramView,
        ProposalView,
        RolloutView,
    )

    from bpfleet_cli.client import FleetClient

VERIFIER_LINES = 12
EVENTS_SHOWN = 15


class GetOutput(StrEnum):
    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"
    NAME = "name"


@dataclass(frozen=True)
class Kind:
    """How one kind of object is listed: fetched, keyed, labelled, and shown."""

    plural: str
    fetch: Callable[[FleetClient], Sequence[BaseModel]]
    key: Callable[[Any], str]
    headers: tuple[str, ...]
    row: Callable[[Any, bool], list[str]]  # (object, wide) -> cells
    labels: Callable[[Any], dict[str, str]] | None = None  # None: not labelled in the API


def _node_row(node: NodeView, wide: bool) -> list[str]:
    cells = [
        node.name,
        node.readiness,
        node.kernel_release,
        f"{node.applied_revision}/{node.desired_revision}",
        age(node.last_heartbeat),
    ]
    return [*cells, labels_text(node.labels)] if wide else cells


def _program_row(program: ProgramView, wide: bool) -> list[str]:
    spec = BpfProgramSpec.model_validate(program.spec)
    summary, rollout = program.summary, program.rollout
    if program.killed:
        state = "Killed"
    elif rollout is None:
        state = "-"
    else:
        steps = len(spec.rollout.steps)
        state = f"{rollout.phase} {min(rollout.step + 1, steps)}/{steps}"
    cells = [
        program.name,
        str(program.generation),
        f"{spec.artifact.name}@{spec.artifact.version}",
        f"{summary.attached}/{summary.desired}",
        str(summary.incompatible),
        str(summary.failed),
        state,
    ]
    if wide:
        cells += [selector_text(spec.node_selector), (spec.artifact.digest or "-")[:12]]
    return cells


def _policy_labels(policy: PolicyView) -> dict[str, str]:
    metadata = policy.document.get("metadata") or {}
    return dict(metadata.get("labels") or {})


def _policy_row(policy: PolicyView, wide: bool) -> list[str]:
    summary = policy.summary
    cells = [
        policy.namespace,
        policy.name,
        str(policy.generation),
        policy.mode,
        f"{summary.enforcing}/{summary.desired}",
        str(summary.failed),
        str(summary.pending),
    ]
    return [*cells, labels_text(_policy_labels(policy))] if wide else cells


def _rollout_row(rollout: RolloutView, wide: bool) -> list[str]:
    source = rollout.from_generation if rollout.from_generation is not None else "-"
    cells = [
        str(rollout.id),
        rollout.program,
        f"{source}->{rollout.to_generation}",
        rollout.phase,
        str(rollout.step + 1),
        str(len(rollout.updated_nodes)),
        age(rollout.updated_at),
    ]
    return [*cells, rollout.message] if wide else cells


def _gitsource_row(source: GitSourceView, wide: bool) -> list[str]:
    cells = [
        source.namespace,
        source.name,
        source.state + (" (reconcile requested)" if source.reconcile_pending else ""),
        short_revision(source.last_applied_revision),
        short_revision(source.last_attempted_revision),
        age(source.reported_at),
    ]
    return [*cells, source.message] if wide else cells


def _gitsources(client: FleetClient) -> list[GitSourceView]:
    from bpfleet_cli.client import MissingRoute

    try:
        return client.gitsources()
    except MissingRoute as missing:
        raise CommandError(
            f"{missing.message}: this API does not report GitSources yet", ExitCode.NOT_FOUND
        ) from None


def _proposal_row(card: ProposalView, wide: bool) -> list[str]:
    cells = [
        str(card.id),
        f"{card.source.namespace}/{card.source.name}",
        card.stage,
        card.author,
        card.branch or "-",
        f"{card.ready}/{card.desired}" if card.state == "Applied" else "-",
        age(card.created_at),
    ]
    if not wide:
        return cells
    link = card.pull_request.url if card.pull_request is not None else "-"
    return [*cells, link, card.message.splitlines()[0] if card.message else ""]


def _proposals(client: FleetClient) -> list[ProposalView]:
    from bpfleet_cli.client import MissingRoute

    try:
        return client.proposals()
    except MissingRoute as missing:
        raise CommandError(
            f"{missing.message}: this API takes no proposals yet", ExitCode.NOT_FOUND
        ) from None


KINDS = {
    kind.plural: kind
    for kind in (
        Kind(
            "nodes",
            lambda client: client.nodes(),
            lambda node: node.name,
            ("NAME", "READY", "KERNEL", "REVISION", "HEARTBEAT"),
            _node_row,
            lambda node: node.labels,
        ),
        Kind(
            "programs",
            lambda client: client.programs(),
            lambda program: program.name,
            ("NAME", "GEN", "ARTIFACT", "ATTACHED", "INCOMPATIBLE", "FAILED", "ROLLOUT"),
            _program_row,
        ),
        Kind(
            "policies",
            lambda client: client.policies(),
            lambda policy: f"{policy.namespace}/{policy.name}",
            ("NAMESPACE", "NAME", "GEN", "MODE", "ENFORCING", "FAILED", "PENDING"),
            _policy_row,
            _policy_labels,
        ),
        Kind(
            "rollouts",
            lambda client: client.rollouts(),
            lambda rollout: str(rollout.id),
            ("ID", "PROGRAM", "GENERATION", "PHASE", "STEP", "UPDATED", "AGE"),
            _rollout_row,
        ),
        Kind(
            "gitsources",
            _gitsources,
            lambda source: f"{source.namespace}/{source.name}",
            ("NAMESPACE", "NAME", "STATE", "APPLIED", "ATTEMPTED", "REPORTED"),
            _gitsource_row,
        ),
        Kind(
            "proposals",
            _proposals,
            lambda card: str(card.id),
            ("ID", "SOURCE", "STAGE", "AUTHOR", "BRANCH", "ENFORCING", "AGE"),
            _proposal_row,
        ),
    )
}
_WIDE_HEADERS = {
    "nodes": ("LABELS",),
    "programs": ("SELECTOR", "DIGEST"),
    "policies": ("LABELS",),
    "rollouts": ("MESSAGE",),
    "gitsources": ("MESSAGE",),
    "proposals": ("PULL REQUEST", "MESSAGE"),
}
ALIASES = {
    **{plural: plural for plural in KINDS},
    "node": "nodes",
    "program": "programs",
    "bpfprograms": "programs",
    "policy": "policies",
    "networkpolicies": "policies",
    "rollout": "rollouts",
    "gitsource": "gitsources",
    "proposal": "proposals",
}


def kind_of(text: str) -> Kind:
    plural = ALIASES.get(text.lower())
    if plural is None:
        raise CommandError(f"unknown kind {text!r}: one of {', '.join(KINDS)}", ExitCode.USAGE)
    return KINDS[plural]


def _document(item: BaseModel) -> Any:
    return item.model_dump(mode="json", by_alias=True)


def _listed(kind: Kind, client: FleetClient, selector: LabelSelector | None) -> list[Any]:
    items = list(kind.fetch(client))
    if selector is None:
        return items
    labels = kind.labels
    if labels is None:
        raise CommandError(
            f"{kind.plural} carry no labels in the fleet API: -l applies to nodes and policies",
            ExitCode.USAGE,
        )
    return [item for item in items if selector.matches(labels(item))]


def get(
    kind: Annotated[
        str,
        typer.Argument(help="nodes, programs, policies, gitsources, rollouts or proposals."),
    ],
    *,
    output: Annotated[
        GetOutput, typer.Option("--output", "-o", help="table, wide, json, yaml or name.")
    ] = GetOutput.TABLE,
    selector: Annotated[
        str | None,
        typer.Option(
            "--selector", "-l", help="Label selector (kubectl syntax).", show_default=False
        ),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Keep listing: print each row that changes.")
    ] = False,
    interval: Annotated[str, typer.Option(help="How often --watch looks again.")] = "2s",
    context: ContextOption = None,
) -> None:
    """List fleet objects."""
    found = kind_of(kind)
    parsed = label_selector(selector) if selector else None
    every = seconds(interval, "--interval") if watch else 0.0
    if watch and output not in (GetOutput.TABLE, GetOutput.WIDE):
        raise CommandError("--watch prints tables: use -o table or -o wide", ExitCode.USAGE)
    with connect(context) as client:
        items = _listed(found, client, parsed)
        if output in (GetOutput.JSON, GetOutput.YAML, GetOutput.NAME):
            documents = [_document(item) for item in items]
            if output == GetOutput.JSON:
                typer.echo(json.dumps(documents, indent=2))
            elif output == GetOutput.YAML:
                typer.echo(yaml.safe_dump(documents, sort_keys=False).rstrip())
            else:
                for item in items:
                    typer.echo(f"{found.plural}/{found.key(item)}")
            return
        wide = output == GetOutput.WIDE
        headers = found.headers + (_WIDE_HEADERS[found.plural] if wide else ())
        rows = {found.key(item): found.row(item, wide) for item in items}
        if rows or watch:
            for line in table(headers, list(rows.values())):
                typer.echo(line)
        else:
            typer.echo(f"No {found.plural}.")
        if watch:
            _watch(
                found,
                client,
                selector=parsed,
                headers=headers,
                shown=rows,
                wide=wide,
                every=every,
            )


def _watch(
    kind: Kind,
    client: FleetClient,
    *,
    selector: LabelSelector | None,
    headers: tuple[str, ...],
    shown: dict[str, list[str]],
    wide: bool,
    every: float,
) -> None:
    """Print each row that appears or changes, and each that goes; until interrupted."""
    try:
        while True:
            time.sleep(every)
            current = {
                kind.key(item): kind.row(item, wide) for item in _listed(kind, client, selector)
            }
            changed = [row for key, row in current.items() if shown.get(key) != row]
            gone = [key for key in shown if key not in current]
            widths_from = [*shown.values(), *current.values()]
            for line in table(headers, [*widths_from, *changed])[len(widths_from) + 1 :]:
                typer.echo(line)
            for key in gone:
                typer.echo(f"{key} deleted")
            shown = current
    except KeyboardInterrupt:
        return


# -------------------------------------------------------------------------- describe


def _section(title: str, lines: Sequence[str], empty: str = "<none>") -> list[str]:
    return [f"{title}:", *(f"  {line}" for line in lines)] if lines else [f"{title}: {empty}"]


def _excerpt(log: str, limit: int = VERIFIER_LINES) -> list[str]:
    """The verifier's last lines: where it gave up, and why."""
    lines = [line for line in log.splitlines() if line.strip()]
    shown = lines[-limit:]
    return ([f"... ({len(lines) - limit} earlier line(s))"] if len(lines) > limit else []) + shown


def describe_node(client: FleetClient, name: str) -> list[str]:
    node = client.node(name)
    lines = [
        f"Name:        {node.name}",
        f"Labels:      {labels_text(node.labels)}",
        f"Readiness:   {node.readiness} (last heartbeat {age(node.last_heartbeat)} ago)",
        f"Kernel:      {node.kernel_release}",
        f"Revision:    applied {node.applied_revision} of {node.desired_revision}",
    ]
    features = node.features
    if features is None:
        lines.append("Features:    no report yet")
    else:
        lines.append(
            f"Features:    {features.arch}, libbpf {features.libbpf_version}, BTF "
            f"{'yes' if features.kernel_btf else 'no'}, JIT {features.jit_enabled}"
        )
        for title, found in (
            ("program types", features.program_types),
            ("map types", features.map_types),
            ("attach kinds", features.attach_kinds),
        ):
            lacking = sorted(str(key) for key, ok in found.items() if not ok)
            lines.append(
                f"  {title}: {sum(found.values())} available; lacking: "
                f"{', '.join(lacking) or 'none'}"
            )
    rows = [
        [
            status.program,
            str(status.generation if status.generation is not None else "-"),
            status.state,
            status.reason or "-",
            status.message,
        ]
        for status in sorted(node.programs, key=lambda item: item.program)
    ]
    lines += _section(
        "Programs", table(("NAME", "GEN", "STATE", "REASON", "MESSAGE"), rows) if rows else []
    )
    for status in node.programs:
        if status.verifier_log:
            lines += _section(f"Verifier log of {status.program}", _excerpt(status.verifier_log))
    lines += _section(
        "Endpoints",
        [f"{item.key} {item.ip} {labels_text(item.labels)}" for item in node.endpoints],
    )
    report = node.policy
    if report is not None:
        lines += _section(
            f"Network policies: {report.state}"
            + (f" ({report.message})" if report.message else ""),
            [
                f"enforcing {', '.join(str(ref) for ref in report.policies) or 'none'}",
                f"{report.endpoints} endpoint(s), {report.rules} rule(s), {report.entries} "
                f"map entries; packets allowed {report.allowed}, denied {report.denied}, "
                f"audit-denied {report.audit_denied}",
            ],
        )
    return lines


def describe_program(client: FleetClient, name: str) -> list[str]:
    program = client.program(name)
    spec = BpfProgramSpec.model_validate(program.spec)
    summary = program.summary
    lines = [
        f"Name:          {program.name}",
        f"Generation:    {program.generation}" + (" (killed)" if program.killed else ""),
        f"Artifact:      {spec.artifact.name}@{spec.artifact.version} "
        f"sha256:{spec.artifact.digest or '-'}",
        f"Node selector: {selector_text(spec.node_selector)}",
        "Attach:        "
        + "; ".join(
            f"{point.entry_point} {point.type}"
            + (f" on {','.join(point.interfaces)}" if point.interfaces else "")
            + (f" {point.target}" if point.target else "")
            for point in spec.attach
        ),
        f"Rollout:       steps {', '.join(spec.rollout.steps)}, bake "
        f"{spec.rollout.bake_seconds:g}s, failure budget {spec.rollout.failure_budget}",
        f"Nodes:         {summary.attached}/{summary.desired} attached, {summary.incompatible} "
        f"incompatible, {summary.failed} failed, {summary.pending} pending",
    ]
    rollout = program.rollout
    if rollout is not None:
        steps = len(spec.rollout.steps)
        lines.append(
            f"Last rollout:  {rollout.id}: generation {rollout.from_generation or '-'} -> "
            f"{rollout.to_generation}, {rollout.phase}, step {min(rollout.step + 1, steps)} of "
            f"{steps}, {len(rollout.updated_nodes)} node(s) updated"
            + (f": {rollout.message}" if rollout.message else "")
        )
    statuses = client.program_nodes(name)
    rows = [
        [
            status.node,
            str(status.generation if status.generation is not None else "-"),
            status.state,
            status.reason or "-",
            status.message,
        ]
        for status in statuses
    ]
    lines += _section(
        "Per node", table(("NODE", "GEN", "STATE", "REASON", "MESSAGE"), rows) if rows else []
    )
    for status in statuses:
        if status.verifier_log:
            lines += _section(f"Verifier log on {status.node}", _excerpt(status.verifier_log))
    events = list(reversed(client.program_events(name, limit=EVENTS_SHOWN)))
    lines += _section(
        "Events",
        table(
            ("AGE", "REASON", "NODE", "MESSAGE"),
            [
                [age(event.created_at), event.reason, event.node or "-", event.message]
                for event in events
            ],
        )
        if events
        else [],
    )
    return lines


def describe_policy(client: FleetClient, key: str) -> list[str]:
    namespace, _, name = key.rpartition("/")
    policy = client.policy(namespace or "default", name)
    summary = policy.summary
    lines = [
        f"Name:       {policy.namespace}/{policy.name}",
        f"Generation: {policy.generation}",
        f"Mode:       {policy.mode}",
        f"Nodes:      {summary.enforcing}/{summary.desired} enforcing, {summary.failed} failed, "
        f"{summary.pending} pending",
    ]
    rows = [
        [
            row.node,
            str(row.generation if row.generation is not None else "-"),
            row.state,
            row.message,
        ]
        for row in client.policy_nodes(policy.namespace, policy.name)
    ]
    lines += _section("Per node", table(("NODE", "GEN", "STATE", "MESSAGE"), rows) if rows else [])
    lines += _section("Document", yaml.safe_dump(policy.document, sort_keys=False).splitlines())
    return lines


DESCRIBERS: dict[str, Callable[[FleetClient, str], list[str]]] = {
    "nodes": describe_node,
    "programs": describe_program,
    "policies": describe_policy,
}


def describe(
    kind: Annotated[str, typer.Argument(help="node, program or policy.")],
    name: Annotated[str, typer.Argument(help="Its name (a policy: NAMESPACE/NAME).")],
    context: ContextOption = None,
) -> None:
    """Everything the fleet knows about one node, program or policy: states with their
    reasons, verifier log excerpts, events."""
    found = kind_of(kind)
    describer = DESCRIBERS.get(found.plural)
    if describer is None:
        raise CommandError(f"describe takes node, program or policy, not {kind!r}", ExitCode.USAGE)
    with connect(context) as client:
        for line in describer(client, name):
            typer.echo(line)
