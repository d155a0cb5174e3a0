"""Bounded YAML: the one way the project reads YAML it did not write itself.

Manifests come from repositories that anyone with push access can fill. Plain safe
loading is not enough for that: a few hundred bytes of nested aliases (the "billion
laughs") expand to billions of nodes in whatever walks the result, deep nesting ends in
a ``RecursionError``, and a number of a million digits raises ``ValueError``. Here every
document is composed under ``Limits``:

- ``file_bytes``: a file larger than this is refused before it is parsed;
- ``document_nodes``: the nodes of one document, each alias counted as the nodes it
  stands for, so expansion is paid for as it is written;
- ``total_nodes``: the same count over every file one ``Budget`` reads (a revision of
  a repository, the files of one command), so many small files cannot add up to a bomb;
- ``depth``: how deeply collections nest.

Anchors and aliases stay usable (merge keys included) as long as they stay small. Every
refusal is a ``LimitExceeded``, a ``yaml.YAMLError`` naming the file, the line and the
limit, so callers that already report YAML errors report these too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

__all__ = ["LIMITS", "Budget", "LimitExceeded", "Limits", "Loader", "load", "read"]


@dataclass(frozen=True)
class Limits:
    file_bytes: int = 1 << 20
    # A policy of 10,000 CIDR peers is ~50,000 nodes: the fleet's own scale target fits
    # four times over, while a bomb's expansion (billions) never comes close.
    document_nodes: int = 200_000
    total_nodes: int = 1_000_000
    depth: int = 100


LIMITS = Limits()
ALIAS_NOTE = "aliases count as the nodes they stand for"


class LimitExceeded(yaml.MarkedYAMLError):
    """A file is larger, deeper or expands further than the limits allow."""

    def __init__(self, file: str, reason: str, mark: yaml.Mark | None = None) -> None:
        # With a mark, the message ends 'in "<file>", line N'; without one it needs the name.
        super().__init__(problem=reason if mark else f"{file}: {reason}", problem_mark=mark)
        self.file = file
        self.reason = reason


class Budget:
    """Nodes left to read, shared by every file read with it."""

    def __init__(self, limits: Limits = LIMITS) -> None:
        self.limits = limits
        self.nodes = 0

    def take(self, count: int, file: str, mark: yaml.Mark) -> None:
        self.nodes += count
        if self.nodes > self.limits.total_nodes:
            raise LimitExceeded(
                file,
                f"these files have more than {self.limits.total_nodes} YAML nodes "
                f"together ({ALIAS_NOTE})",
                mark,
            )


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` composing within a ``Budget``; ``file`` names it in errors."""

    def __init__(self, source: str | bytes, file: str, budget: Budget | None = None) -> None:
        self.budget = budget or Budget()
        self.file = file
        limit = self.budget.limits.file_bytes
        if _size(source, limit) > limit:
            raise LimitExceeded(file, f"larger than the {limit} bytes a YAML file may have")
        try:
            super().__init__(source)
        except yaml.reader.ReaderError as error:  # the first bytes are not UTF-8 already
            error.name = file
            raise
        self.name = file  # what marks (and so error messages) call the stream
        self._sizes: dict[yaml.Node, int] = {}
        self._document_nodes = 0
        self._depth = 0

    def compose_document(self) -> yaml.Node | None:
        self._sizes = {}
        self._document_nodes = 0
        return super().compose_document()

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            target = self.anchors.get(event.anchor)
            if target is not None:  # an unknown anchor: the composer's own error
                size = self._sizes.get(target)
                if size is None:  # its anchor is still open: a collection holding itself
                    raise LimitExceeded(
                        self.file,
                        f"alias *{event.anchor} refers to the collection it is in",
                        event.start_mark,
                    )
                self._count(size, event.start_mark)
            return super().compose_node(parent, index)
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        self._depth += 1
        if self._depth > self.budget.limits.depth:
            raise LimitExceeded(
                self.file, f"nested deeper than {self.budget.limits.depth} levels", mark
            )
        before = self._document_nodes
        self._count(1, mark)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if node is not None:
            self._sizes[node] = self._document_nodes - before
        return node

    def _count(self, nodes: int, mark: yaml.Mark) -> None:
        self._document_nodes += nodes
        limit = self.budget.limits.document_nodes
        if self._document_nodes > limit:
            raise LimitExceeded(
                self.file, f"a document with more than {limit} YAML nodes ({ALIAS_NOTE})", mark
            )
        self.budget.take(nodes, self.file, mark)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except ValueError as error:  # e.g. an integer of more digits than Python converts
            raise ConstructorError(None, None, str(error), node.start_mark) from None


def _size(source: str | bytes, limit: int) -> int:
    """Bytes in ``source``; text is encoded only when its length leaves it in doubt (a
    character is one to four bytes)."""
    if isinstance(source, bytes) or not limit // 4 < len(source) <= limit:
        return len(source)
    return len(source.encode("utf-8", "surrogatepass"))


def load(source: str | bytes, file: str, budget: Budget | None = None) -> Any:
    """The one document of ``source`` (None when empty), like ``yaml.safe_load``."""
    loader = Loader(source, file, budget)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read(path: Path, limits: Limits = LIMITS) -> bytes:
    """A file's bytes, at most one past ``limits.file_bytes``: enough for the loader to
    refuse a larger file without reading all of it."""
    with path.open("rb") as stream:
        return stream.read(limits.file_bytes + 1)
