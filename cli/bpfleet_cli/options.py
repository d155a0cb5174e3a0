"""Options the fleet commands share, and the client a command gets from them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bpfleet_cli import contexts
from bpfleet_cli.exits import CommandError, ExitCode
from bpfleet_cli.reports import Output
from bpfleet_core.resources import LabelSelector, parse_duration, parse_selector

if TYPE_CHECKING:
    from bpfleet_cli.client import FleetClient

ContextOption = Annotated[
    str | None,
    typer.Option(
        "--context",
        help="The context to use (see 'bpfleet login'); default: BPFLEET_CONTEXT, then the "
        "current one. BPFLEET_API_URL, BPFLEET_TOKEN and BPFLEET_CA override its fields.",
        show_default=False,
    ),
]
CheckOutputOption = Annotated[
    Output,
    typer.Option(
        "--output",
        "-o",
        help="text; json; github (workflow-command annotations); gitlab (a Code Quality "
        "report on stdout, the text on stderr).",
    ),
]
JunitOption = Annotated[
    Path | None,
    typer.Option("--junit", help="Also write a JUnit XML report to this file.", show_default=False),
]
TimeoutOption = Annotated[str, typer.Option("--timeout", help="How long to wait: 30s, 5m, 1h30m.")]
SELECTOR_SYNTAX = "write key=value, key!=value, 'key in (a,b)', key or !key, joined by commas"


def connect(context: str | None) -> FleetClient:
    """A client for the command's target (see ``contexts.resolve``)."""
    from bpfleet_cli.client import FleetClient

    target = contexts.resolve(context)
    if not target.token:
        raise CommandError(
            f"no token for {target.describe()}: run 'bpfleet login' or set BPFLEET_TOKEN",
            ExitCode.CONFIGURATION,
        )
    return FleetClient.to(target)


def seconds(text: str, option: str = "--timeout") -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise CommandError(f"{option}: {error}", ExitCode.USAGE) from None


def label_selector(text: str) -> LabelSelector:
    """``-l``'s selector (kubectl syntax, read by the resources' own parser); a usage
    error in one line naming what it cannot read."""
    try:
        return parse_selector(text)
    except ValueError as error:  # SelectorSyntaxError, or a label the resources refuse
        reason = " ".join(str(error).split())
        raise CommandError(f"invalid label {reason} ({SELECTOR_SYNTAX})", ExitCode.USAGE) from None
