"""Acting on the fleet and waiting for it: ``rollout status|pause|resume|abort``,
``kill``, ``wait program``, ``reconcile gitsource``.

Waits poll the API; on a terminal the progress is one line rewritten in place, in a log
one line per change. A wait ends with exit 0 once its condition holds, 1 once it can no
longer hold (a rollout rolled back, a program stalled), 10 when ``--timeout`` passes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from bpfleet_cli.exits import CommandError, ExitCode
from bpfleet_cli.options import ContextOption, TimeoutOption, connect, seconds
from bpfleet_cli.progress import Progress
from bpfleet_cli.tables import short_revision
from bpfleet_core import failures
from bpfleet_core.resources import BpfProgramSpec, BpfProgramStatus

if TYPE_CHECKING:  # the client and the API's views load when a command runs
    from bpfleet_api.views import GitSourceView, ProgramView, RolloutView

    from bpfleet_cli.client import FleetClient, RolloutAction

rollout_app = typer.Typer(
    no_args_is_help=True, help="A program's rollout: status, pause, resume, abort."
)
reconcile_app = typer.Typer(no_args_is_help=True, help="Ask for a pass now.")

FINAL_PHASES = frozenset({"Succeeded", "Failed", "RolledBack", "Aborted", "Superseded"})
POLL_SECONDS = 1.0
Done = TypeVar("Done")

ProgramArgument = Annotated[str, typer.Argument(help="The program.")]
WaitOption = Annotated[bool, typer.Option("--wait", help="Wait until it is done.")]


def poll(
    check: Callable[[], tuple[Done | None, str]],
    timeout: float,
    what: str,
    progress: Progress,
) -> Done:
    """Call ``check`` until it returns a result, showing its progress line; a
    ``CommandError`` (TIMED_OUT) naming ``what`` and the last progress after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result, line = check()
        if result is not None:
            progress.finish(line)
            return result
        progress.show(line)
        if time.monotonic() >= deadline:
            progress.finish()
            raise CommandError(
                f"timed out after {timeout:g}s waiting for {what}; last: {line}",
                ExitCode.TIMED_OUT,
            )
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))


# ----------------------------------------------------------------------------- rollouts


def progress_line(program: ProgramView) -> str:
    """``execs: rollout 4 Baking, step 2 of 3 (2 node(s) updated): 2/3 attached, ...``."""
    summary, rollout = program.summary, program.rollout
    counts = (
        f"{summary.attached}/{summary.desired} attached, {summary.incompatible} incompatible, "
        f"{summary.failed} failed, {summary.pending} pending"
    )
    if rollout is None:
        return f"{program.name}: no rollout; {counts}"
    steps = len(BpfProgramSpec.model_validate(program.spec).rollout.steps)
    text = (
        f"{program.name}: rollout {rollout.id} {rollout.phase}, step "
        f"{min(rollout.step + 1, steps)} of {steps} ({len(rollout.updated_nodes)} node(s) "
        f"updated): {counts}"
    )
    return text + (
        f"; {rollout.message}" if rollout.message and rollout.phase in FINAL_PHASES else ""
    )


def _latest_rollout(client: FleetClient, name: str) -> tuple[ProgramView, RolloutView]:
    program = client.program(name)
    if program.rollout is None:
        raise CommandError(f"program {name} has no rollout", ExitCode.NOT_FOUND)
    return program, program.rollout


def _wait_for_rollout(client: FleetClient, name: str, rollout_id: int, timeout: float) -> None:
    """Until rollout ``rollout_id`` ends: exit 0 when it Succeeded, 1 otherwise."""

    def check() -> tuple[RolloutView | None, str]:
        program = client.program(name)
        rollout = program.rollout
        line = progress_line(program)
        if rollout is None or rollout.id != rollout_id:
            superseded = rollout.id if rollout is not None else "none"
            return None, f"{line} (rollout {rollout_id} replaced by {superseded})"
        return (rollout if rollout.phase in FINAL_PHASES else None), line

    rollout = poll(check, timeout, f"rollout {rollout_id} of {name} to end", Progress())
    if rollout.phase != "Succeeded":
        raise CommandError(
            f"rollout {rollout.id} of {name} ended {rollout.phase}"
            + (f": {rollout.message}" if rollout.message else ""),
            ExitCode.FOUND,
        )


@rollout_app.command("status")
def rollout_status(
    program: ProgramArgument,
    wait: WaitOption = False,
    timeout: TimeoutOption = "5m",
    context: ContextOption = None,
) -> None:
    """Where the program's latest rollout stands; with --wait, follow it to its end (exit 0
    when it Succeeded, 1 when it ended otherwise)."""
    limit = seconds(timeout)
    with connect(context) as client:
        current, rollout = _latest_rollout(client, program)
        if not wait:
            typer.echo(progress_line(current))
            return
        _wait_for_rollout(client, program, rollout.id, limit)


def _act(
    action: RolloutAction, program: str, wait: bool, timeout: str, context: str | None
) -> None:
    limit = seconds(timeout)
    with connect(context) as client:
        _, rollout = _latest_rollout(client, program)
        acted = client.act_on_rollout(rollout.id, action)
        typer.echo(f"rollout {acted.id} of {program}: {acted.phase}")
        if not wait:
            return
        if action == "resume":
            _wait_for_rollout(client, program, acted.id, limit)
        elif action == "abort":
            _wait_settled(client, program, limit)


def _wait_settled(client: FleetClient, name: str, timeout: float) -> None:
    """Until no node is pending for the program (after an abort: all back)."""

    def check() -> tuple[ProgramView | None, str]:
        program = client.program(name)
        return (program if program.summary.pending == 0 else None), progress_line(program)

    poll(check, timeout, f"the nodes of {name} to settle", Progress())


@rollout_app.command("pause")
def rollout_pause(
    program: ProgramArgument, timeout: TimeoutOption = "5m", context: ContextOption = None
) -> None:
    """Hold the rollout where it is: no further step until resumed."""
    _act("pause", program, False, timeout, context)


@rollout_app.command("resume")
def rollout_resume(
    program: ProgramArgument,
    wait: WaitOption = False,
    timeout: TimeoutOption = "5m",
    context: ContextOption = None,
) -> None:
    """Go on with a paused rollout; with --wait, follow it to its end."""
    _act("resume", program, wait, timeout, context)


@rollout_app.command("abort")
def rollout_abort(
    program: ProgramArgument,
    wait: WaitOption = False,
    timeout: TimeoutOption = "5m",
    context: ContextOption = None,
) -> None:
    """Stop the rollout and return its updated nodes to the previous generation; with
    --wait, until every node has reported back."""
    _act("abort", program, wait, timeout, context)


# ------------------------------------------------------------------------------- kill


def kill(
    program: ProgramArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    context: ContextOption = None,
) -> None:
    """The kill switch: detach the program from every node at once, no rollout. Putting
    its spec again (a new commit) brings it back."""
    with connect(context) as client:
        current = client.program(program)
        if not yes:
            question = (
                f"Detach {program} from all {current.summary.desired} node(s) now, "
                "without a rollout?"
            )
            if not sys.stdin.isatty():
                raise CommandError(
                    f"not confirmed: {question} Pass --yes to kill without asking",
                    ExitCode.FOUND,
                )
            if not typer.confirm(question, default=False):
                raise CommandError(f"{program} not killed", ExitCode.FOUND)
        killed = client.kill_program(program)
        typer.echo(f"{killed.name} killed: detaching from every node")


# ------------------------------------------------------------------------------- wait


class Condition(StrEnum):
    READY = "ready"
    DELETED = "deleted"


_CONDITIONS = {
    "ready": Condition.READY,
    "condition=ready": Condition.READY,
    "deleted": Condition.DELETED,
    "delete": Condition.DELETED,
}


def _ready(view: ProgramView) -> tuple[str, str, bool]:
    """The program's Ready condition as its BpfProgram status would carry it (the
    operator's own function), and whether it is Stalled."""
    from bpfleet_operator import statuses

    status = statuses.program_status(
        view.model_dump(mode="json", by_alias=True),
        BpfProgramStatus(),
        datetime.now(UTC),
        view.generation,
        "",
    )
    ready = next(c for c in status.conditions if c.type == "Ready")
    stalled = any(c.type == "Stalled" for c in status.conditions)
    return ready.status, ready.message or ready.reason, stalled


def wait(
    kind: Annotated[str, typer.Argument(help="program")],
    name: Annotated[str, typer.Argument(help="Its name.")],
    for_: Annotated[
        str,
        typer.Option(
            "--for",
            help="ready: Ready as its BpfProgram status would say (every selected node "
            "attached, or incompatible, and the rollout done); deleted: gone from the fleet.",
        ),
    ] = "ready",
    timeout: TimeoutOption = "5m",
    context: ContextOption = None,
) -> None:
    """Wait until a program is ready (or deleted), like kubectl wait. Exit 0 when it is,
    1 when it cannot become so (stalled: rolled back, failed nodes, killed), 10 on timeout."""
    if kind.lower() not in ("program", "programs", "bpfprogram"):
        raise CommandError(f"wait takes program, not {kind!r}", ExitCode.USAGE)
    condition = _CONDITIONS.get(for_.lower())
    if condition is None:
        raise CommandError(f"--for: {for_!r} is neither ready nor deleted", ExitCode.USAGE)
    from bpfleet_cli.client import MissingRoute

    limit = seconds(timeout)
    with connect(context) as client:

        def check() -> tuple[str | None, str]:
            try:
                view = client.program(name)
            except MissingRoute:
                raise
            except failures.NotFound:
                if condition == Condition.DELETED:
                    return f"program {name} deleted", f"{name}: gone"
                return None, f"{name}: not in the fleet yet"
            line = progress_line(view)
            if condition == Condition.DELETED:
                return None, line
            status, message, stalled = _ready(view)
            if status == "True":
                return f"{name} ready: {message}", line
            if stalled:
                raise CommandError(f"{name} cannot become ready: {message}", ExitCode.FOUND)
            return None, line

        done = poll(check, limit, f"program {name} to be {condition.value}", Progress())
        typer.echo(done)


# -------------------------------------------------------------------------- reconcile


def _split_key(key: str, namespace: str) -> tuple[str, str]:
    found, _, name = key.rpartition("/")
    return (found or namespace), name


@reconcile_app.command("gitsource")
def reconcile_gitsource(
    name: Annotated[str, typer.Argument(help="NAME or NAMESPACE/NAME.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    wait: WaitOption = False,
    timeout: TimeoutOption = "5m",
    context: ContextOption = None,
) -> None:
    """Fetch and apply a GitSource now, instead of at its next interval; with --wait,
    until its operator reports a pass made after the request (exit 1 if that pass
    applied nothing: rejected or failed)."""
    from bpfleet_cli.client import MissingRoute

    limit = seconds(timeout)
    source_namespace, source_name = _split_key(name, namespace)
    key = f"{source_namespace}/{source_name}"
    with connect(context) as client:
        try:
            requested = client.reconcile_gitsource(source_namespace, source_name)
        except MissingRoute as missing:
            raise CommandError(
                f"{missing.message}: this API does not reconcile GitSources yet",
                ExitCode.NOT_FOUND,
            ) from None
        typer.echo(f"gitsource {key}: reconcile requested")
        asked_at = requested.reconcile_requested_at
        if not wait or asked_at is None:
            return

        def check() -> tuple[GitSourceView | None, str]:
            now = client.gitsource(source_namespace, source_name)
            reported = _utc(now.reported_at) >= _utc(asked_at)
            if not reported:
                return None, f"{key}: waiting for its operator's pass"
            return now, _source_line(now)

        source = poll(check, limit, f"a pass of gitsource {key}", Progress())
        if source.state != "Ready":  # the message names the first problem, located
            raise CommandError(
                f"gitsource {key} {source.state}: {source.message or source.reason}",
                ExitCode.FOUND,
            )


def _source_line(source: GitSourceView) -> str:
    """``default/fleet: Ready, applied main@sha1:0123456: <its message>``."""
    line = (
        f"{source.namespace}/{source.name}: {source.state}, applied "
        f"{short_revision(source.last_applied_revision)}"
    )
    return f"{line}: {source.message}" if source.message else line


def _utc(moment: datetime) -> datetime:
    """An API time as an aware UTC one (SQLite gives it back naive, in UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
