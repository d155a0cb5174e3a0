"""``bpfleet validate`` and ``bpfleet preflight``: will this change be accepted, and can
every selected node's kernel run it? For CI, before a change is merged."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bpfleet_cli import inputs
from bpfleet_cli.exits import CommandError, ExitCode
from bpfleet_cli.options import (
    CheckOutputOption,
    ContextOption,
    JunitOption,
    connect,
    label_selector,
)
from bpfleet_cli.reports import Case, Finding, Output, Report, Severity, emit
from bpfleet_core import bundles, failures
from bpfleet_core.netpol.validating import Problem
from bpfleet_core.resources import BpfProgramSpec, LabelSelector

if TYPE_CHECKING:  # the client and the API's views load when a command runs
    from bpfleet_api.views import NodeView, PreflightRequest, PreflightResult

    from bpfleet_cli.client import FleetClient
    from bpfleet_core.netpol import models as netpol

PathsArgument = Annotated[list[Path], typer.Argument(help="Manifest files or directories.")]


def split_origin(origin: str) -> tuple[str, int | None]:
    """``"file:line"`` -> (file, line)."""
    file, _, line = origin.rpartition(":")
    return (file, int(line)) if file and line.isdigit() else (origin, None)


def fleet_check(client: FleetClient) -> bundles.ProgramCheck:
    """What the fleet refuses in each program (artifact missing, unsigned, not fitting).
    A failure to ask (token, network) is the command's failure, not the manifest's."""

    def check(_: str, spec: BpfProgramSpec) -> list[str]:
        result = client.validate(spec)
        return [] if result.valid else result.problems

    return check


def problem_finding(problem: Problem, severity: Severity = "error") -> Finding:
    """A problem of a manifest as an annotation on its line."""
    message = f"{problem.path}: {problem.message}" if problem.loc else problem.message
    title = "invalid manifest" if severity == "error" else "manifest warning"
    return Finding(severity, message, problem.file, problem.line, title)


def _problem_document(problem: Problem) -> dict[str, Any]:
    return {
        "file": problem.file,
        "line": problem.line,
        "field": problem.path,
        "message": problem.message,
    }


def validate(
    paths: PathsArgument,
    *,
    api_url: Annotated[
        str | None,
        typer.Option(help="Also check artifacts and specs against this fleet API."),
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="BPFLEET_TOKEN", help="API token.", show_default=False)
    ] = None,
    fleet: Annotated[
        bool, typer.Option("--fleet", help="Also check against the context's fleet API.")
    ] = False,
    topology: Annotated[
        Path | None,
        typer.Option(
            "--topology",
            help="Run flow tests on this topology (JSON). Without it, flow tests run on the "
            "fleet's live topology when a fleet is given, else on the endpoints each "
            "flow-test file declares.",
        ),
    ] = None,
    context: ContextOption = None,
    output: CheckOutputOption = Output.TEXT,
    junit: JunitOption = None,
) -> None:
    """Validate manifests as a GitSource would, before anything is applied, and run the
    flow tests (*.flows.yaml) beside them with every policy found; for CI. Exit 1 when
    any manifest is invalid or any flow test fails."""
    from bpfleet_cli.client import FleetClient

    texts = inputs.manifest_texts(paths)
    flow_texts = inputs.flow_test_texts(paths)
    client: FleetClient | None = None
    if api_url:
        client = FleetClient(api_url, token)
    elif fleet or context:
        client = connect(context)
    world: netpol.Topology | None = None
    try:
        bundle = bundles.load(texts, fleet_check(client) if client else None)
        if bundle.valid and flow_texts:
            if topology is not None:
                from bpfleet_cli.policy_commands import load_topology

                world = load_topology(topology)
            elif client is not None:
                world = client.topology()
    finally:
        if client is not None:
            client.close()
    cases = {file: Case(file, file) for file in sorted(texts)}
    for problem in bundle.problems:
        cases[problem.file or ""].findings.append(problem_finding(problem))
    for warning in bundle.warnings:
        cases[warning.file or ""].findings.append(problem_finding(warning, "warning"))
    flows = FlowTally()
    if bundle.valid:
        policies = [document.policy for document in bundle.policies]
        for file, text in sorted(flow_texts.items()):
            cases[file] = flow_case(file, text, policies, world, flows)
    flow_summary = []
    if flow_texts and bundle.valid and not flows.failed:
        flow_summary = [f"{flows.passed} flow test(s) passed in {len(flow_texts)} file(s)"]
    report = Report("validate", list(cases.values()), fallback_path=str(paths[0]))
    summary = (
        f"{len(texts)} file(s) valid: {len(bundle.programs)} program(s), "
        f"{len(bundle.policies)} network policy(ies)"
    )
    document = {
        "valid": bundle.valid,
        "files": sorted(texts),
        "programs": [program.name for program in bundle.programs],
        "policies": [item.policy.key for item in bundle.policies],
        "problems": [_problem_document(problem) for problem in bundle.problems],
        "warnings": [_problem_document(warning) for warning in bundle.warnings],
        "flowTests": {"files": sorted(flow_texts), "passed": flows.passed, "failed": flows.failed},
    }
    notes = [f"warning: {warning}" for warning in bundle.warnings]
    notes += [str(problem) for problem in bundle.problems]
    notes += flows.notes
    emit(
        report,
        output,
        text=[summary, *flow_summary] if bundle.valid else [],
        document=document,
        junit=junit,
        notes=notes,
    )
    if not bundle.valid:
        raise CommandError(
            f"{len(bundle.problems)} problem(s) in {len(texts)} file(s)", ExitCode.FOUND
        )
    if flows.failed:
        raise CommandError(
            f"{flows.failed} flow test problem(s) or failure(s); {flows.passed} passed",
            ExitCode.FOUND,
        )


@dataclass
class FlowTally:
    """Flow tests judged so far, and what a person reads about the failures."""

    passed: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)


def flow_case(
    file: str,
    text: str,
    policies: list[netpol.Policy],
    world: netpol.Topology | None,
    tally: FlowTally,
) -> Case:
    """One flow-test file judged with every policy of the revision: on ``world`` when
    given, else on the endpoints the file declares; each failure is a finding on its row."""
    from bpfleet_core.netpol import flowtests

    tests = flowtests.parse(text, file)
    case = Case(file, file)
    for problem in tests.problems:
        case.findings.append(Finding("error", problem.message, file, problem.line, "flow test"))
        tally.notes.append(str(problem))
    tally.failed += len(tests.problems)
    on = world if world is not None else tests.topology
    if on is None:
        if tests.tests:
            message = "declares no endpoints: give --topology, --fleet or --api-url"
            case.findings.append(Finding("error", message, file, 1, "flow test"))
            tally.notes.append(f"{file}: {message}")
            tally.failed += 1
        return case
    for result in flowtests.run(tests.tests, policies, on):
        if result.passed:
            tally.passed += 1
            continue
        tally.failed += 1
        verdict = result.error or ("allowed" if result.allowed else "denied")
        message = f"{result.test.text}: {verdict}"
        case.findings.append(Finding("error", message, file, result.test.line, "flow test"))
        tally.notes.append(f"{file}:{result}")
    return case


# ------------------------------------------------------------------------- preflight


@dataclass(frozen=True)
class Allowance:
    """How many incompatible nodes a program may have: a count, or a share of its nodes."""

    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str | None) -> Allowance:
        if text is None:
            return cls(count=0)
        match = re.fullmatch(r"\s*(\d+)\s*(%?)\s*", text)
        if match is None or (match[2] and int(match[1]) > 100):
            raise CommandError(
                f"--allow-incompatible: {text!r} is neither a node count (3) nor a share "
                "(0% to 100%)",
                ExitCode.USAGE,
            )
        return cls(percent=float(match[1])) if match[2] else cls(count=int(match[1]))

    def allows(self, incompatible: int, selected: int) -> bool:
        if self.percent is not None:
            return incompatible * 100 <= self.percent * selected
        return incompatible <= (self.count or 0)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)


_LACKS = re.compile(r"^kernel (lacks|cannot) ")


def lacking_phrase(missing: str) -> str:
    """'kernel lacks map type ringbuf' -> 'lack map type ringbuf' (after 'N nodes')."""
    return _LACKS.sub(lambda match: "lack " if match[1] == "lacks" else "cannot ", missing)


def _nodes_text(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass
class Verdict:
    """One program's (or artifact's) preflight against the fleet."""

    name: str
    what: str  # "execsnoop@1.0.0" or the artifact manifest's file
    file: str | None
    line: int | None
    result: PreflightResult | None = None
    error: str | None = None

    def by_missing(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = defaultdict(list)
        for verdict in self.result.nodes if self.result else ():
            for missing in verdict.missing:
                grouped[missing].append(verdict.node)
        return dict(grouped)


def _case(verdict: Verdict, nodes: dict[str, NodeView], allowance: Allowance) -> Case:
    case = Case(verdict.name, verdict.file, verdict.line)
    where = f"{verdict.name} ({verdict.what})"
    if verdict.error is not None or verdict.result is None:
        message = f"{where}: cannot preflight: {verdict.error}"
        case.output.append(message)
        case.findings.append(Finding("error", message, verdict.file, verdict.line, "preflight"))
        return case
    result = verdict.result
    selected = result.compatible + result.incompatible
    if selected == 0:
        case.output.append(f"{where}: no node with a feature report is selected")
        return case
    allowed = allowance.allows(result.incompatible, selected)
    if not result.incompatible:
        case.output.append(f"{where}: all {selected} selected node(s) can run it")
        return case
    case.output.append(
        f"{where}: {result.incompatible} of {selected} selected node(s) cannot run it"
        + ("" if allowed else f" (allowed: {allowance})")
    )
    for missing, names in sorted(verdict.by_missing().items()):
        kernels = sorted({nodes[name].kernel_release for name in names if name in nodes})
        line = (
            f"{len(names)} of {selected} nodes {lacking_phrase(missing)}: "
            f"kernel {', '.join(kernels) or 'unknown'} ({_nodes_text(sorted(names))})"
        )
        case.output.append(f"  {line}")
        case.findings.append(
            Finding(
                "warning" if allowed else "error",
                f"{verdict.name}: {line}",
                verdict.file,
                verdict.line,
                "incompatible nodes",
            )
        )
    return case


def _verdict_document(verdict: Verdict, nodes: dict[str, NodeView]) -> dict[str, Any]:
    result = verdict.result
    return {
        "name": verdict.name,
        "artifact": verdict.what,
        "file": verdict.file,
        "line": verdict.line,
        "error": verdict.error,
        "selected": (result.compatible + result.incompatible) if result else None,
        "incompatible": result.incompatible if result else None,
        "missing": [
            {
                "feature": missing,
                "nodes": sorted(names),
                "kernels": sorted({nodes[n].kernel_release for n in names if n in nodes}),
            }
            for missing, names in sorted(verdict.by_missing().items())
        ],
        "nodes": [item.model_dump(by_alias=True) for item in result.nodes] if result else [],
    }


def preflight_or_reason(
    client: FleetClient, request: PreflightRequest
) -> tuple[PreflightResult | None, str | None]:
    """The fleet's verdict, or why this program cannot be preflighted (an artifact not
    uploaded, a spec that does not fit it): the program's problem, not the command's."""
    from bpfleet_cli.client import MissingRoute

    try:
        return client.preflight(request), None
    except failures.PermanentFailure as error:
        if isinstance(error, MissingRoute) or error.status not in (400, 404, 422):
            raise
        return None, error.message


def preflight(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="BpfProgram manifests, artifact manifests (NAME.manifest.json) of artifacts "
            "not deployed yet, or directories holding them."
        ),
    ],
    *,
    selector: Annotated[
        str | None,
        typer.Option(
            "--selector",
            "-l",
            help="Only these nodes (kubectl syntax: tier=edge,zone in (a,b)); ANDed with "
            "each program's nodeSelector.",
            show_default=False,
        ),
    ] = None,
    allow_incompatible: Annotated[
        str | None,
        typer.Option(
            "--allow-incompatible",
            help="Pass while at most this many (N) or this share (P%) of a program's "
            "selected nodes are incompatible. Default: none.",
            show_default=False,
        ),
    ] = None,
    context: ContextOption = None,
    output: CheckOutputOption = Output.TEXT,
    junit: JunitOption = None,
) -> None:
    """Which selected nodes could not run each program, and why, by the kernel features
    they lack. Exit 1 when any program has more incompatible nodes than allowed."""
    from bpfleet_api.views import PreflightRequest

    allowance = Allowance.parse(allow_incompatible)
    extra = label_selector(selector) if selector else LabelSelector()
    texts = inputs.manifest_texts(paths, required=False)
    manifests = inputs.artifact_manifests(paths)
    bundle = bundles.load(texts)
    if not bundle.valid:
        for problem in bundle.problems:
            typer.echo(str(problem), err=True)
        raise CommandError(
            f"{len(bundle.problems)} problem(s) in the manifests; nothing was preflighted",
            ExitCode.INVALID_INPUT,
        )
    if not bundle.programs and not manifests:
        raise CommandError(
            "no BpfProgram manifests or artifact manifests (*.manifest.json) found",
            ExitCode.INVALID_INPUT,
        )
    verdicts: list[Verdict] = []
    with connect(context) as client:
        nodes = {node.name: node for node in client.nodes()}
        for program in bundle.programs:
            file, line = split_origin(program.origin)
            spec = program.spec.model_copy(
                update={"node_selector": program.spec.node_selector.narrowed(extra)}
            )
            artifact = f"{spec.artifact.name}@{spec.artifact.version}"
            result, error = preflight_or_reason(client, PreflightRequest(spec=spec))
            verdicts.append(Verdict(program.name, artifact, file, line, result, error))
        for found in manifests:
            request = PreflightRequest(manifest=found.manifest, node_selector=extra)
            result, error = preflight_or_reason(client, request)
            what = f"artifact {found.manifest.name}@{found.manifest.version}"
            verdicts.append(Verdict(found.manifest.name, what, found.file, 1, result, error))
    cases = [_case(verdict, nodes, allowance) for verdict in verdicts]
    report = Report("preflight", cases, fallback_path=str(paths[0]))
    document = {
        "allowIncompatible": str(allowance),
        "passed": not any(case.failed for case in cases),
        "programs": [_verdict_document(verdict, nodes) for verdict in verdicts],
    }
    lines = [line for case in cases for line in case.output]
    emit(report, output, text=lines, document=document, junit=junit)
    failed = [case.name for case in cases if case.failed]
    if failed:
        raise CommandError(
            f"{len(failed)} of {len(cases)} program(s) cannot run where selected: "
            f"{', '.join(failed)}",
            ExitCode.FOUND,
        )
