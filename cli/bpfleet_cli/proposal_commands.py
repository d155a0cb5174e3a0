"""``bpfleet propose``: files of a GitSource's repository proposed as a change, as the
policy editor proposes them. The fleet's operator writes them as one commit on a branch
(and a pull request where the source names a forge); nothing changes in the fleet until
the change is merged and its revision applied.

Files are given as paths under ``--root`` (the repository's checkout, by default the
current directory), which are their paths in the repository. Each is checked by the API
first: a refusal names every problem, in the validator's words, and exits 9.

With ``--wait`` the command waits for the operator: exit 0 once pushed (the branch and
the pull request printed), 1 on a conflict (a file changed on the tracked branch since
``--base``; nothing was pushed), 9 when it failed, 10 when ``--timeout`` passes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bpfleet_cli.exits import CommandError, ExitCode
from bpfleet_cli.inputs import read_text
from bpfleet_cli.options import ContextOption, TimeoutOption, connect, seconds
from bpfleet_cli.progress import Progress
from bpfleet_cli.rollout_commands import poll
from bpfleet_core import proposals

if TYPE_CHECKING:  # the client and the API's views load when a command runs
    from bpfleet_api.views import ProposalDetail, ProposalView

SETTLED = frozenset({"Pushed", "Conflict", "Failed", "Merged", "Applied", "Rejected", "Enforcing"})


def repository_path(file: Path, root: Path) -> str:
    """``file``'s path in the repository checked out at ``root``."""
    try:
        return file.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise CommandError(
            f"{file} is not under --root {root}: give files of the repository's checkout",
            ExitCode.USAGE,
        ) from None


def describe(card: ProposalView) -> str:
    """``proposal 12 (default/fleet): Pushed bpfleet/shop-db-12 at 0a1b2c3, pull request URL``."""
    source = f"{card.source.namespace}/{card.source.name}"
    line = f"proposal {card.id} ({source}): {card.stage}"
    if card.branch and card.commit:
        line += f" {card.branch} at {card.commit[:7]}"
    if card.pull_request is not None:
        line += f", pull request {card.pull_request.url}"
    if card.stage in ("Applied", "Enforcing"):
        line += f", enforcing {card.ready}/{card.desired}"
    if card.state_message:
        line += f": {card.state_message}"
    return line


def propose(
    files: Annotated[
        list[Path],
        typer.Argument(help="Manifests and flow-test files, whole, under --root.", exists=True),
    ],
    *,
    source: Annotated[
        str, typer.Option("--source", help="The GitSource: NAMESPACE/NAME.", show_default=False)
    ],
    message: Annotated[
        str,
        typer.Option("--message", "-m", help="The commit message.", show_default=False),
    ],
    root: Annotated[
        Path, typer.Option("--root", help="The repository's checkout the files are in.")
    ] = Path(),
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="The revision the files were edited from (a commit); default: the one the "
            "source applies now. A file changed on the branch since then is a conflict.",
            show_default=False,
        ),
    ] = None,
    branch: Annotated[
        str | None,
        typer.Option(
            "--branch", help="The branch to push (under the operator's prefix).", show_default=False
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the operator pushed it.")
    ] = False,
    timeout: TimeoutOption = "2m",
    as_json: Annotated[bool, typer.Option("--json", help="Print the proposal as JSON.")] = False,
    context: ContextOption = None,
) -> None:
    """Propose files for a GitSource's repository: one commit on a branch, never a write
    to the fleet."""
    from bpfleet_api.views import ProposalRequest

    namespace, _, name = source.partition("/")
    if not namespace or not name:
        raise CommandError(f"--source {source!r}: give NAMESPACE/NAME", ExitCode.USAGE)
    limit = seconds(timeout) if wait else 0.0
    with connect(context) as client:
        if base is None:
            base = client.gitsource(namespace, name).last_applied_revision or None
        changes = [
            proposals.FileChange(
                path=repository_path(file, root),
                content=read_text(file, proposals.MAX_FILE_BYTES),
                base_revision=base,
            )
            for file in files
        ]
        request = ProposalRequest.model_validate(
            {
                "source": {"namespace": namespace, "name": name},
                "files": changes,
                "message": message,
                "branch": branch,
            }
        )
        card = client.propose(request)
        if wait:
            proposal = card.id

            def settled() -> tuple[ProposalDetail | None, str]:
                found = client.proposal(proposal)
                return (found if found.stage in SETTLED else None), describe(found)

            card = poll(settled, limit, f"proposal {proposal} to be pushed", Progress())
    if as_json:
        typer.echo(json.dumps(card.model_dump(mode="json", by_alias=True), indent=2))
    elif not wait:
        typer.echo(describe(card))
    if card.stage == "Conflict":
        names = ", ".join(item.path for item in card.conflicts)
        raise CommandError(
            f"proposal {card.id}: changed on the tracked branch since {base}: {names}; "
            "nothing was pushed",
            ExitCode.FOUND,
        )
    if card.stage == "Failed":
        raise CommandError(f"proposal {card.id} failed: {card.state_message}", ExitCode.REFUSED)
