"""``bpfleet diff``: what applying a revision would change in the fleet, before merging it.

Like ``flux diff``, with what a cluster diff cannot know: which nodes would run each
changed program and which of their kernels cannot, and which connections between the
fleet's endpoints the policy changes would allow or deny.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bpfleet_cli import inputs
from bpfleet_cli.check_commands import (
    fleet_check,
    lacking_phrase,
    preflight_or_reason,
    problem_finding,
    split_origin,
)
from bpfleet_cli.exits import CommandError, ExitCode
from bpfleet_cli.options import CheckOutputOption, ContextOption, JunitOption, connect
from bpfleet_cli.reports import Case, Finding, Output, Report, emit
from bpfleet_core import bundles
from bpfleet_core.netpol.models import Topology
from bpfleet_core.resources import BpfProgramSpec

if TYPE_CHECKING:  # the client, the API's views and the simulator load when diff runs
    from bpfleet_api.views import ArtifactView

    from bpfleet_cli import diffing
    from bpfleet_cli.client import FleetClient

MAX_FLIPS_SHOWN = 50


def _incompatible(
    client: FleetClient, change: diffing.ProgramChange, spec: BpfProgramSpec
) -> list[str]:
    """Lines naming the nodes that would report the new generation Incompatible."""
    from bpfleet_api.views import PreflightRequest

    if change.action == "removed" or not change.nodes:
        return []
    result, reason = preflight_or_reason(client, PreflightRequest(spec=spec))
    if result is None:
        return [f"cannot preflight: {reason}"]
    grouped: dict[str, list[str]] = {}
    for verdict in result.nodes:
        for missing in verdict.missing:
            grouped.setdefault(missing, []).append(verdict.node)
    selected = result.compatible + result.incompatible
    return [
        f"{len(names)} of {selected} nodes {lacking_phrase(missing)} ({', '.join(sorted(names))})"
        for missing, names in sorted(grouped.items())
    ]


def _program_lines(change: diffing.ProgramChange, incompatible: list[str]) -> list[str]:
    where = f" ({change.origin})" if change.origin else ""
    lines = [f"BpfProgram {change.name} {change.action}{where}"]
    if change.revived:
        lines.append("  the kill switch is on: applying puts the program back")
    if change.digest_before != change.digest_after and change.action != "removed":
        before = f"sha256:{change.digest_before[:12]} -> " if change.digest_before else ""
        after = f"sha256:{change.digest_after[:12]}" if change.digest_after else "not uploaded"
        lines.append(f"  artifact {change.artifact}: {before}{after}")
    if change.action == "removed":
        lines.append(
            f"  {len(change.nodes)} node(s) would detach it: {', '.join(change.nodes) or '-'}"
        )
    else:
        lines.append(
            f"  {len(change.nodes)} node(s) would run it: {', '.join(change.nodes) or '-'}"
        )
        if change.nodes_leaving:
            lines.append(
                f"  {len(change.nodes_leaving)} node(s) no longer selected would detach it: "
                f"{', '.join(change.nodes_leaving)}"
            )
    lines += [f"  incompatible: {line}" for line in incompatible]
    lines += [f"  {line}" for line in change.spec_diff]
    return lines


def _policy_lines(change: diffing.PolicyChange, flips: list[diffing.Flip]) -> list[str]:
    where = f" ({change.origin})" if change.origin else ""
    lines = [f"NetworkPolicy {change.key} {change.action}{where}"]
    mine = [flip for flip in flips if change.key in flip.policies]
    if mine:
        lines.append(f"  {len(mine)} connectivity cell(s) it has a say on would change")
    lines += [f"  {line}" for line in change.spec_diff]
    return lines


def _location(origin: str | None) -> tuple[str | None, int | None]:
    return split_origin(origin) if origin else (None, None)


def diff(
    paths: Annotated[
        list[Path], typer.Argument(help="The revision's manifest files or directories.")
    ],
    prune: Annotated[
        bool,
        typer.Option(
            help="Count what the fleet holds and the revision lacks as removed (as a "
            "GitSource with prune does); --no-prune when the fleet holds more than "
            "this revision manages."
        ),
    ] = True,
    context: ContextOption = None,
    output: CheckOutputOption = Output.TEXT,
    junit: JunitOption = None,
) -> None:
    """What applying this revision would change in the fleet: programs added, changed
    (spec diff, artifact digest, the nodes that would get it, kernels that cannot run
    it) or removed; policies added, changed or removed, with every connection between
    the fleet's endpoints that would flip. Exit 0: no change; 1: changes; 2 and above:
    an error (3: the revision would be rejected)."""
    from bpfleet_cli import diffing

    texts = inputs.manifest_texts(paths)
    with connect(context) as client:
        bundle = bundles.load(texts, fleet_check(client))
        if not bundle.valid:
            cases = [
                Case(str(problem), problem.file, problem.line, [problem_finding(problem)])
                for problem in bundle.problems
            ]
            emit(
                Report("diff", cases, fallback_path=str(paths[0])),
                output,
                text=[],
                document={"valid": False, "problems": [str(p) for p in bundle.problems]},
                junit=junit,
                notes=[str(problem) for problem in bundle.problems],
            )
            raise CommandError(
                f"the revision would be rejected ({len(bundle.problems)} problem(s)): "
                "nothing of it would be applied",
                ExitCode.INVALID_INPUT,
            )
        programs = client.programs()
        policies = client.policies()
        if not prune:
            wanted = {program.name for program in bundle.programs}
            programs = [program for program in programs if program.name in wanted]
            keys = {document.policy.key for document in bundle.policies}
            policies = [view for view in policies if f"{view.namespace}/{view.name}" in keys]
        artifacts = client.artifacts()
        nodes = {node.name: node.labels for node in client.nodes()}
        # The topology only matters (and is only asked for) when a policy changes.
        policies_change = bool(diffing.plan_policies(bundle.policies, policies))
        plan = diffing.plan(
            bundle,
            programs=programs,
            artifacts=artifacts,
            nodes=nodes,
            policies=policies,
            topology=client.topology() if policies_change else Topology(namespaces={}, pods={}),
        )
        incompatible = {
            change.name: _incompatible(client, change, _pinned(bundle, change, artifacts))
            for change in plan.programs
            if change.action != "removed"
        }
    report, lines = _report(plan, incompatible, str(paths[0]))
    document = {
        "changed": plan.changed,
        "programs": [
            {**dataclasses.asdict(change), "incompatible": incompatible.get(change.name, [])}
            for change in plan.programs
        ],
        "policies": [dataclasses.asdict(change) for change in plan.policies],
        "connectivity": [_flip_document(flip) for flip in plan.flips],
    }
    emit(report, output, text=lines, document=document, junit=junit)
    if plan.changed:
        raise typer.Exit(ExitCode.FOUND)


def _pinned(
    bundle: bundles.Bundle, change: diffing.ProgramChange, artifacts: list[ArtifactView]
) -> BpfProgramSpec:
    from bpfleet_cli import diffing

    document = next(item for item in bundle.programs if item.name == change.name)
    return diffing.pin(document.spec, artifacts)


def _flip_document(flip: diffing.Flip) -> dict[str, Any]:
    return {
        "client": flip.client,
        "server": flip.server,
        "protocol": flip.protocol,
        "ports": flip.ports_text,
        "before": "allowed" if flip.before else "denied",
        "after": "allowed" if flip.after else "denied",
        "policies": list(flip.policies),
    }


def _report(
    plan: diffing.Plan, incompatible: dict[str, list[str]], fallback: str
) -> tuple[Report, list[str]]:
    report = Report("diff", fallback_path=fallback)
    lines: list[str] = []
    flips = list(plan.flips)
    for change in plan.programs:
        file, line = _location(change.origin)
        body = _program_lines(change, incompatible.get(change.name, []))
        case = Case(f"BpfProgram {change.name}", file, line, output=body)
        case.findings.append(Finding("notice", body[0], file, line, f"program {change.action}"))
        case.findings += [
            Finding("warning", f"{change.name}: {text}", file, line, "incompatible nodes")
            for text in incompatible.get(change.name, [])
        ]
        report.cases.append(case)
        lines += body
    for policy_change in plan.policies:
        file, line = _location(policy_change.origin)
        body = _policy_lines(policy_change, flips)
        case = Case(f"NetworkPolicy {policy_change.key}", file, line, output=body)
        mine = [flip.describe() for flip in flips if policy_change.key in flip.policies]
        message = body[0] + (
            f": {len(mine)} connection(s) would flip: " + "; ".join(mine[:MAX_FLIPS_SHOWN])
            if mine
            else ""
        )
        case.findings.append(
            Finding("notice", message, file, line, f"policy {policy_change.action}")
        )
        report.cases.append(case)
        lines += body
    if flips:
        lines.append(f"Connectivity (enforced): {len(flips)} cell(s) would change")
        lines += [f"  {flip.describe()}" for flip in flips[:MAX_FLIPS_SHOWN]]
        if len(flips) > MAX_FLIPS_SHOWN:
            lines.append(f"  ... and {len(flips) - MAX_FLIPS_SHOWN} more (-o json lists all)")
    if plan.changed:
        lines.append(
            f"{len(plan.programs)} program change(s), {len(plan.policies)} policy change(s), "
            f"{len(flips)} connectivity cell(s)"
        )
    else:
        lines.append("no changes: the fleet already runs this revision")
    return report, lines
