"""``bpfleet operator ...`` and ``bpfleet validate``: the GitOps pipeline from the CLI."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
import yaml

from bpfleet_core import yamlfiles

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
        document = GitSource.model_validate(yamlfiles.load(yamlfiles.read(source), str(source)))
    except OSError as error:
        raise _fail(f"cannot read {source}: {error.strerror}") from None
    except (yaml.YAMLError, ValidationError) as error:
        raise _fail(f"{source} is not a GitSource: {' '.join(str(error).split())}") from None
    _log_to_stderr()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    pipeline.serve(document, OperatorSettings(), stop)


def validate(
    paths: Annotated[list[Path], typer.Argument(help="Manifest files or directories.")],
    api_url: Annotated[
        str | None,
        typer.Option(help="Also check artifacts and specs against this fleet API."),
    ] = None,
    token: Annotated[str | None, typer.Option(envvar="BPFLEET_TOKEN", help="API token.")] = None,
) -> None:
    """Validate manifests as a GitSource would, before anything is applied; for CI."""
    from bpfleet_core import bundles, failures
    from bpfleet_operator import standalone as pipeline
    from bpfleet_operator.fleetapi import FleetApi

    files: dict[str, bytes] = {}
    for path in paths:
        if not path.exists():
            raise _fail(f"no such file or directory: {path}")
        found = sorted(path.rglob("*")) if path.is_dir() else [path]
        for item in found:
            hidden = any(part.startswith(".") for part in item.relative_to(path).parts)
            if item.is_file() and item.suffix in bundles.MANIFEST_SUFFIXES and not hidden:
                # Bounded here and in bundles.load, which names the file if it is too big.
                files[str(item)] = yamlfiles.read(item)
    if not files:
        raise _fail("no *.yaml or *.yml manifests found")
    api = FleetApi(api_url, token or "") if api_url else None
    try:
        bundle = bundles.load(files, pipeline.program_check(api) if api else None)
    except failures.TemporaryFailure as error:  # the fleet could not be asked
        raise _fail(str(error)) from None
    finally:
        if api is not None:
            api.close()
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
