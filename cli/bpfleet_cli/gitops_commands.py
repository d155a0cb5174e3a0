"""``bpfleet operator ...`` and ``bpfleet validate``: the GitOps pipeline from the CLI."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml

if TYPE_CHECKING:
    from bpfleet_core.netpol import models as netpol

app = typer.Typer(no_args_is_help=True, help="The GitOps operator, in a cluster or standalone.")


def _log_to_stderr() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _fail(message: str) -> typer.Exit:
    typer.echo(f"bpfleet: {message}", err=True)
    return typer.Exit(1)


@app.command("run")
def run_operator() -> None:
    """Run the kopf operator against the cluster (BPFLEET_OPERATOR_* settings)."""
    from bpfleet_operator import cluster

    _log_to_stderr()
    cluster.run()


@app.command("standalone")
def standalone(
    source: Annotated[Path, typer.Argument(help="A GitSource manifest: what to follow.")],
) -> None:
    """Follow a Git repository without Kubernetes: Git -> validate all -> the fleet API."""
    from pydantic import ValidationError

    from bpfleet_core.resources import GitSource
    from bpfleet_operator import standalone as pipeline
    from bpfleet_operator.settings import OperatorSettings

    try:
        document = GitSource.model_validate(yaml.safe_load(source.read_text()))
    except OSError as error:
        raise _fail(f"cannot read {source}: {error.strerror}") from None
    except (yaml.YAMLError, ValidationError) as error:
        raise _fail(f"{source} is not a GitSource: {error}") from None
    _log_to_stderr()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    pipeline.serve(document, OperatorSettings(), stop)


def validate(
    paths: Annotated[list[Path], typer.Argument(help="Manifest files or directories.")],
    api_url: Annotated[
        str | None,
        typer.Option(
            help="Also check artifacts and specs against this fleet API, and run flow tests "
            "on its live topology."
        ),
    ] = None,
    token: Annotated[str | None, typer.Option(envvar="BPFLEET_TOKEN", help="API token.")] = None,
    topology: Annotated[
        Path | None,
        typer.Option(
            "--topology",
            help="Run flow tests on this topology (JSON); without it or --api-url, each "
            "flow-test file runs on the endpoints it declares.",
        ),
    ] = None,
) -> None:
    """Validate manifests as a GitSource would, before anything is applied, and run the
    flow tests (*.flows.yaml) beside them with every policy found; for CI."""
    from bpfleet_core import bundles
    from bpfleet_operator import standalone as pipeline
    from bpfleet_operator.fleetapi import FleetApi, FleetApiError

    files, flow_files = _collect(paths)
    if not files:
        raise _fail("no *.yaml or *.yml manifests found")
    api = FleetApi(api_url, token or "") if api_url else None
    try:
        bundle = bundles.load(files, pipeline.program_check(api) if api else None)
        for warning in bundle.warnings:
            typer.echo(f"warning: {warning}", err=True)
        if not bundle.valid:
            for problem in bundle.problems:
                typer.echo(str(problem), err=True)
            raise _fail(f"{len(bundle.problems)} problem(s) in {len(files)} file(s)")
        typer.echo(
            f"{len(files)} file(s) valid: {len(bundle.programs)} program(s), "
            f"{len(bundle.policies)} network policy(ies)"
        )
        if not flow_files:
            return
        world: netpol.Topology | None = None
        if topology is not None:
            from bpfleet_cli.policy_commands import load_topology

            world = load_topology(topology)
        elif api is not None:
            try:
                world = api.topology()
            except FleetApiError as error:
                raise _fail(f"cannot read the fleet's topology: {error}") from None
    finally:
        if api is not None:
            api.close()
    _run_flow_tests(flow_files, [document.policy for document in bundle.policies], world)


def _collect(paths: list[Path]) -> tuple[dict[str, str], dict[str, str]]:
    """The text of every manifest, and of every flow-test file, under ``paths``."""
    from bpfleet_core import bundles
    from bpfleet_core.netpol import flowtests

    files: dict[str, str] = {}
    flow_files: dict[str, str] = {}
    for path in paths:
        if not path.exists():
            raise _fail(f"no such file or directory: {path}")
        found = sorted(path.rglob("*")) if path.is_dir() else [path]
        for item in found:
            hidden = any(part.startswith(".") for part in item.relative_to(path).parts)
            if not item.is_file() or hidden:
                continue
            if flowtests.is_flow_test_file(item.name):
                flow_files[str(item)] = item.read_text(encoding="utf-8")
            elif bundles.is_manifest(item.name):
                files[str(item)] = item.read_text(encoding="utf-8")
    return files, flow_files


def _run_flow_tests(
    flow_files: dict[str, str], policies: list[netpol.Policy], world: netpol.Topology | None
) -> None:
    """Each flow-test file with every policy of the revision: on ``world`` when given,
    else on the endpoints the file declares. Failures are explained on stderr."""
    from bpfleet_core.netpol import flowtests

    failures = passed = 0
    for file, text in flow_files.items():
        tests = flowtests.parse(text, file)
        for problem in tests.problems:
            typer.echo(str(problem), err=True)
        failures += len(tests.problems)
        on = world if world is not None else tests.topology
        if on is None:
            if tests.tests:
                typer.echo(f"{file}: declares no endpoints: give --topology or --api-url", err=True)
                failures += 1
            continue
        for result in flowtests.run(tests.tests, policies, on):
            if result.passed:
                passed += 1
            else:
                failures += 1
                typer.echo(f"{file}:{result}", err=True)
    if failures:
        raise _fail(f"{failures} flow test problem(s) or failure(s); {passed} passed")
    typer.echo(f"{passed} flow test(s) passed in {len(flow_files)} file(s)")
