"""Progress of a long wait: one line rewritten in place on a terminal, a plain line for
each change otherwise (CI logs keep every step, and no control characters)."""

from __future__ import annotations

import sys
from typing import TextIO

import typer


class Progress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.last: str | None = None

    def show(self, line: str) -> None:
        if line == self.last:
            return
        self.last = line
        if self.live:
            typer.echo(f"\r\x1b[2K{line}", file=self.stream, nl=False)
        else:
            typer.echo(line, file=self.stream)

    def finish(self, line: str | None = None) -> None:
        """End the live line (with ``line`` in its place, if given)."""
        if self.live:
            if line is not None:
                typer.echo(f"\r\x1b[2K{line}", file=self.stream)
            elif self.last is not None:
                typer.echo("", file=self.stream)
        elif line is not None and line != self.last:
            typer.echo(line, file=self.stream)
        self.last = None
