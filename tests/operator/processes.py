"""The operator as it runs for real: ``bpfleet operator run`` in its own process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from bpfleet_cli.localfleet import stop_process
from tests import services

BPFLEET = str(Path(sys.executable).parent / "bpfleet")


def operator_environment(api: services.Api, state: Path, webhook_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "BPFLEET_OPERATOR_API_URL": api.url,
        "BPFLEET_OPERATOR_API_TOKEN": api.admin_token,
        "BPFLEET_OPERATOR_STATE_DIR": str(state),
        "BPFLEET_OPERATOR_WEBHOOK_HOST": "127.0.0.1",
        "BPFLEET_OPERATOR_WEBHOOK_PORT": str(webhook_port),
    }


LOG_LINES_ON_FAILURE = 80


@contextlib.contextmanager
def running(command: list[str], environment: dict[str, str], log: Path) -> Iterator[None]:
    """Run ``command`` for the block; if the block fails, the end of the process's log
    goes to stderr, where the test report shows it."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=environment, stdout=output, stderr=output)
    try:
        yield
    except BaseException:
        stop_process(process)
        tail = log.read_text(errors="replace").splitlines()[-LOG_LINES_ON_FAILURE:]
        print(
            f"--- last lines of {' '.join(command[1:3])}'s log ---",
            *tail,
            sep="\n",
            file=sys.stderr,
        )
        raise
    else:
        stop_process(process)


@contextlib.contextmanager
def operator(
    api: services.Api,
    kube_url: str,
    work: Path,
    webhook_port: int = 0,
    resync_seconds: float = 60,
) -> Iterator[Path]:
    """Run the kopf operator against ``kube_url``; yields its log file."""
    log = work / "operator.log"
    environment = {
        **operator_environment(api, work / "operator", webhook_port),
        "BPFLEET_OPERATOR_KUBE_URL": kube_url,
        # The tests' repositories are local; a real cluster leaves this off.
        "BPFLEET_OPERATOR_ALLOW_LOCAL_SOURCES": "true",
        "BPFLEET_OPERATOR_RESYNC_SECONDS": str(resync_seconds),
    }
    with running([BPFLEET, "operator", "run"], environment, log):
        yield log
