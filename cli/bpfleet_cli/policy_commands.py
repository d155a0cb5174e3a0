"""``bpfleet policy``: validate network policies, simulate them over a topology, explain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from bpfleet_core.netpol import models, simulating, validating

app = typer.Typer(
    no_args_is_help=True,
    help="Network policies: validate and lint them, simulate a topology's matrix, explain a "
    "verdict.",
)

PolicyPaths = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Policy YAML files (several documents each) or directories of *.yaml/*.yml.",
        show_default=False,
    ),
]
TopologyOption = Annotated[
    Path,
    typer.Option("--topology", help="Topology JSON: namespaces, pods with labels, IP and ports."),
]
ProtocolOption = Annotated[str, typer.Option("--protocol", help="TCP, UDP or SCTP.")]
PortOption = Annotated[int, typer.Option("--port", help="Destination port, 1-65535.")]


def _fail(message: str) -> NoReturn:
    typer.echo(f"bpfleet: {message}", err=True)
    raise typer.Exit(1)


def _fail_with(error: validating.PolicyValidationError) -> NoReturn:
    """Warnings first, then one line per problem: ``file:line: field: reason``."""
    for warning in error.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for problem in error.problems:
        typer.echo(str(problem), err=True)
    raise typer.Exit(1)


def load_policy_files(paths: list[Path] | None, *, required: bool = False) -> list[models.Policy]:
    given = paths or []
    if required and not given:
        _fail("no policy files given")
    missing = [str(path) for path in given if not path.exists()]
    if missing:
        _fail(f"no such file or directory: {', '.join(missing)}")
    if required and not validating.policy_files(given):
        _fail(f"no *.yaml or *.yml files in {', '.join(str(path) for path in given)}")
    try:
        loaded = validating.load_policies(given)
    except validating.PolicyValidationError as error:
        _fail_with(error)
    for item in loaded:
        for warning in item.warnings:
            typer.echo(f"warning: {warning}", err=True)
    return [item.policy for item in loaded]


def load_topology(path: Path) -> models.Topology:
    from pydantic import ValidationError

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        _fail(f"cannot read topology {path}: {error.strerror}")
    except (ValueError, UnicodeDecodeError) as error:
        _fail(f"topology {path} is not JSON: {error}")
    try:
        return models.Topology.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        where = validating.render_loc(tuple(first["loc"]))
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        _fail(f"topology {path}: {where}: {first['msg']}{more}")


def parse_flow(protocol: str, port: int) -> models.Protocol:
    name = protocol.upper()
    for known in models.PROTOCOLS:
        if known == name:
            if not 1 <= port <= 65535:
                _fail(f"--port must be between 1 and 65535, not {port}")
            return known
    _fail(f"--protocol must be TCP, UDP or SCTP, not {protocol!r}")


@app.command("matrix")
def matrix(
    *,
    topology: TopologyOption,
    port: PortOption,
    policies: PolicyPaths = None,
    protocol: ProtocolOption = "TCP",
    audit: Annotated[
        bool,
        typer.Option("--audit", help="Count audit-mode policies too: what audit would deny."),
    ] = False,
) -> None:
    """Print which pod may connect to which: {"protocol", "port", "allowed": {client: {server}}}."""
    checked = parse_flow(protocol, port)
    loaded = load_policy_files(policies)
    result = simulating.matrix(
        loaded, load_topology(topology), checked, port, view="audit" if audit else "enforce"
    )
    typer.echo(json.dumps(result))


@app.command("explain")
def explain(
    *,
    topology: TopologyOption,
    client: Annotated[str, typer.Option("--from", help="Client: 'ns/pod' or an IP address.")],
    server: Annotated[str, typer.Option("--to", help="Server: 'ns/pod' or an IP address.")],
    port: PortOption,
    policies: PolicyPaths = None,
    protocol: ProtocolOption = "TCP",
    as_json: Annotated[bool, typer.Option("--json", help="Print the explanation as JSON.")] = False,
) -> None:
    """Say whether a connection is allowed, and which policy and rule decided each side."""
    checked = parse_flow(protocol, port)
    loaded = load_policy_files(policies)
    world = load_topology(topology)
    try:
        result = simulating.explain(loaded, world, client, server, checked, port)
    except ValueError as error:
        _fail(str(error))
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else str(result))


@app.command("validate")
def validate(*, policies: PolicyPaths = None) -> None:
    """Check policies as the Kubernetes API server would; exit 1 on any problem."""
    loaded = load_policy_files(policies, required=True)
    typer.echo(f"{len(loaded)} {'policy' if len(loaded) == 1 else 'policies'} valid")


@app.command("lint")
def lint(
    *,
    policies: PolicyPaths = None,
    topology: Annotated[
        Path | None,
        typer.Option(
            "--topology",
            help="Topology JSON to judge against; without it, lints that need the real "
            "endpoints are skipped and proofs use made-up ones.",
        ),
    ] = None,
    fail_on: Annotated[
        str,
        typer.Option("--fail-on", help="Exit 1 on this severity or worse: error, warning, info."),
    ] = "error",
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
) -> None:
    """Lint policies (each finding proved by the simulator) and rate them; exit 1 on
    problems of the --fail-on severity or worse (validation errors always)."""
    from bpfleet_core.netpol import drafting, linting, rating

    if fail_on not in linting.SEVERITIES:
        _fail(f"--fail-on must be error, warning or info, not {fail_on!r}")
    given = policies or []
    if not given:
        _fail("no policy files given")
    missing = [str(path) for path in given if not path.exists()]
    if missing:
        _fail(f"no such file or directory: {', '.join(missing)}")
    files = validating.policy_files(given)
    if not files:
        _fail(f"no *.yaml or *.yml files in {', '.join(str(path) for path in given)}")
    drafts: dict[str, drafting.Draft] = {}
    for path in files:
        try:
            drafts[str(path)] = drafting.read(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else str(error)
            _fail(f"cannot read {path}: {reason}")
    world = (
        load_topology(topology) if topology is not None else models.Topology(namespaces={}, pods={})
    )
    everything = [policy for draft in drafts.values() for policy in draft.policies]
    worst = linting.SEVERITIES.index(fail_on)
    failed = False
    report: list[dict[str, object]] = []
    for file, draft in drafts.items():
        found: list[linting.Lint] = []
        ratings: list[rating.Rating] = []
        for item in draft.documents:
            if item.policy is None:
                continue
            others = [policy for policy in everything if policy is not item.policy]
            found += linting.lint(
                item.policy, world, others=others, source=item.source, live=topology is not None
            )
            ratings.append(rating.rate(item.policy, world, source=item.source))
        failed |= not draft.valid
        failed |= any(linting.SEVERITIES.index(lint.severity) <= worst for lint in found)
        if as_json:
            report.append(
                {
                    "file": file,
                    "problems": [problem.to_dict() for problem in draft.diagnostics],
                    "lints": [lint.to_dict() for lint in found],
                    "ratings": [result.to_dict() for result in ratings],
                }
            )
            continue
        for problem in draft.diagnostics:
            where = f"{problem.path}: " if problem.loc else ""
            typer.echo(
                f"{file}:{problem.span.line}:{problem.span.column}: {problem.severity}: "
                f"{where}{problem.message}"
            )
        for lint in found:
            where = f"{lint.span.line}:{lint.span.column}" if lint.span else "?"
            typer.echo(f"{file}:{where}: {lint.severity}: {lint.code}: {lint.path}: {lint.message}")
            made_up = " (made-up endpoints)" if lint.proof.witnesses else ""
            typer.echo(f"    proof: {lint.proof}{made_up}")
            for fix in lint.fixes:
                typer.echo(f"    fix: {fix.title}")
        for result in ratings:
            typer.echo(f"{file}: {result.policy}: grade {result.grade or '-'}")
            typer.echo(f"    {result.ingress.summary}")
            typer.echo(f"    {result.egress.summary}")
    if as_json:
        typer.echo(json.dumps({"files": report}, indent=2))
    if failed:
        raise typer.Exit(1)
