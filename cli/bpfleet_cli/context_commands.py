"""``bpfleet login`` and ``bpfleet context list|use|delete``: where the fleet commands go.

``login`` checks the token with the API before it keeps anything, and never echoes it;
the file it writes is readable by its owner only (see ``contexts``).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from pydantic import SecretStr, ValidationError

from bpfleet_cli import contexts
from bpfleet_cli.exits import CommandError, ExitCode
from bpfleet_cli.tables import table

app = typer.Typer(no_args_is_help=True, help="Named contexts: which fleet API, which token.")


def _token(from_stdin: bool) -> str:
    if from_stdin:
        token = sys.stdin.readline().strip()
    elif os.environ.get("BPFLEET_TOKEN"):
        token = os.environ["BPFLEET_TOKEN"]
    elif sys.stdin.isatty():
        token = typer.prompt("Token", hide_input=True).strip()
    else:
        raise CommandError(
            "no token: pipe it with --token-stdin, or set BPFLEET_TOKEN", ExitCode.USAGE
        )
    if not token:
        raise CommandError("the token is empty", ExitCode.USAGE)
    return token


def login(
    url: Annotated[str, typer.Argument(help="The fleet API, e.g. https://fleet.example.com.")],
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="The context's name (default: the URL's host).", show_default=False
        ),
    ] = None,
    token_stdin: Annotated[
        bool,
        typer.Option(
            "--token-stdin", help="Read the token from stdin (else BPFLEET_TOKEN, else a prompt)."
        ),
    ] = False,
    ca: Annotated[
        Path | None,
        typer.Option(
            "--ca", help="CA bundle that signed the API's certificate.", show_default=False
        ),
    ] = None,
    trust: Annotated[
        list[Path],
        typer.Option(
            "--trust",
            help="Public key (or directory of *.pub) 'artifact push' verifies with.",
            show_default=False,
        ),
    ] = [],  # noqa: B006 - typer reads the default; it is never mutated
) -> None:
    """Check a token against the fleet API and keep it as a named context, made current."""
    from bpfleet_cli.client import FleetClient

    token = _token(token_stdin)
    try:
        context = contexts.Context(
            url=url,
            token=SecretStr(token),
            ca=ca.resolve() if ca else None,
            trust=tuple(path.resolve() for path in trust),
        )
    except ValidationError as error:
        message = error.errors()[0]["msg"].removeprefix("Value error, ")
        raise CommandError(f"login: {message}", ExitCode.USAGE) from None
    chosen = name or urlsplit(context.url).netloc
    if not re.match(contexts.NAME_PATTERN, chosen):
        raise CommandError(f"--name: {chosen!r} is not a context name", ExitCode.USAGE)
    if ca is not None and not ca.is_file():
        raise CommandError(f"--ca: no such file: {ca}", ExitCode.CONFIGURATION)
    with FleetClient(context.url, token, ca=str(context.ca) if context.ca else None) as client:
        who = client.whoami()
    path = contexts.config_path()
    config = contexts.load(path)
    config.contexts[chosen] = context
    config.current_context = chosen
    contexts.save(config, path)
    typer.echo(
        f"logged in to {context.url} as {who.name} (role {who.role}); context {chosen!r} "
        f"saved in {path} and made current"
    )


@app.command("list")
def list_contexts() -> None:
    """Every context (tokens are never shown: only whether one is kept)."""
    path = contexts.config_path()
    config = contexts.load(path)
    rows = [
        [
            "*" if name == config.current_context else "",
            name,
            context.url,
            "yes" if context.token else "no",
            str(context.ca or "-"),
            ":".join(str(item) for item in context.trust) or "-",
        ]
        for name, context in sorted(config.contexts.items())
    ]
    if not rows:
        typer.echo(f"no contexts in {path}: run 'bpfleet login URL'")
        return
    for line in table(("CURRENT", "NAME", "URL", "TOKEN", "CA", "TRUST"), rows):
        typer.echo(line)


@app.command("use")
def use(name: Annotated[str, typer.Argument(help="The context to make current.")]) -> None:
    """Make a context the current one."""
    path = contexts.config_path()
    config = contexts.load(path)
    if name not in config.contexts:
        known = ", ".join(sorted(config.contexts)) or "none"
        raise CommandError(f"unknown context {name!r} (known: {known})", ExitCode.CONFIGURATION)
    config.current_context = name
    contexts.save(config, path)
    typer.echo(f"current context: {name}")


@app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="The context to forget, token and all.")],
) -> None:
    """Forget a context and its token."""
    path = contexts.config_path()
    config = contexts.load(path)
    if config.contexts.pop(name, None) is None:
        raise CommandError(f"unknown context {name!r}", ExitCode.CONFIGURATION)
    if config.current_context == name:
        config.current_context = None
    contexts.save(config, path)
    typer.echo(f"context {name} deleted")
