"""``bpfleet operator ...``: the GitOps pipeline from the CLI (``bpfleet validate`` is in
``check_commands``)."""

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
