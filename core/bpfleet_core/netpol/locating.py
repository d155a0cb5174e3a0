"""Where each field of a YAML text is: line and column, for text still being typed.

``parse(text)`` reads a YAML stream into its documents, each with the span of every
field (its key, or its list item, up to the end of its value), by field path. It never
raises for what the text holds: a syntax error, a duplicate key, an alias or nesting
too deep becomes a ``TextProblem`` with its line and column, and the documents read
before it are kept, so an editor still shows something for a half-typed buffer.

Aliases (``*name``) are refused where the first is used, before anything expands: a
few lines of them expand to billions of nodes (the "billion laughs"), and manifests
have no use for them. The ``yamlfiles`` limits apply too (bytes, nodes, depth). Lines
and columns are 1-based; a column counts characters (code points).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from bpfleet_core import yamlfiles

Loc = tuple[str | int, ...]
MAX_DEPTH = 64  # far deeper than any policy, far shallower than the parser's recursion


@dataclass(frozen=True)
class Span:
    """From the start of a field's key (or list item) to the end of its value."""

    line: int
    column: int
    end_line: int
    end_column: int


@dataclass(frozen=True)
class TextProblem:
    """Something wrong with the text itself, before any policy is read from it."""

    message: str
    line: int
    column: int
    loc: Loc = ()
    document: int | None = None


@dataclass(frozen=True)
class LocatedDocument:
    """One document of the stream: its content and where each field of it is."""

    index: int  # 0-based position in the stream, empty documents counted
    span: Span
    content: Any
    spans: Mapping[Loc, Span] = field(default_factory=dict)

    @property
    def line(self) -> int:
        return self.span.line

    def span_of(self, loc: Loc) -> Span:
        """The span of the field at ``loc``, or of its nearest enclosing field."""
        for end in range(len(loc), 0, -1):
            found = self.spans.get(loc[:end])
            if found is not None:
                return found
        return self.span


@dataclass(frozen=True)
class LocatedText:
    documents: tuple[LocatedDocument, ...]  # the non-empty ones, read without problems
    problems: tuple[TextProblem, ...]
    count: int  # documents in the stream, empty and broken ones too


class _Refused(Exception):
    def __init__(self, problem: TextProblem) -> None:
        self.problem = problem


class _AliasUsed(yaml.YAMLError):
    def __init__(self, mark: yaml.Mark) -> None:
        super().__init__("alias")
        self.mark = mark


class _Loader(yamlfiles.Loader):
    """The bounded loader, refusing an alias where it is used, before it expands."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise _AliasUsed(self.peek_event().start_mark)  # type: ignore[no-untyped-call]
        return super().compose_node(parent, index)


@dataclass
class _Walk:
    """One document's nodes: spans by field path, duplicate keys."""

    document: int
    spans: dict[Loc, Span] = field(default_factory=dict)
    problems: list[TextProblem] = field(default_factory=list)

    def node(self, node: yaml.Node, loc: Loc, depth: int) -> tuple[int, int]:
        """Record the spans under ``node``; return where its content ends (1-based line
        and column): a block collection's own end mark is the next token's start."""
        start = node.start_mark
        if depth >= MAX_DEPTH:
            raise _Refused(
                TextProblem(
                    f"nested deeper than {MAX_DEPTH} levels",
                    start.line + 1,
                    start.column + 1,
                    loc,
                    self.document,
                )
            )
        end = (node.end_mark.line + 1, node.end_mark.column + 1)
        block = getattr(node, "flow_style", None) is not True  # None: an indentless list
        last = (start.line + 1, start.column + 1)
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
                here = (*loc, key)
                mark = key_node.start_mark
                if key in keys:
                    self.problems.append(
                        TextProblem(
                            "duplicate key", mark.line + 1, mark.column + 1, here, self.document
                        )
                    )
                keys.add(key)
                last = self.node(value_node, here, depth + 1)
                self.spans[here] = Span(mark.line + 1, mark.column + 1, *last)
        elif isinstance(node, yaml.SequenceNode):
            for position, item in enumerate(node.value):
                here = (*loc, position)
                mark = item.start_mark
                last = self.node(item, here, depth + 1)
                self.spans[here] = Span(mark.line + 1, mark.column + 1, *last)
        else:
            return end
        return last if block and node.value else end


def _syntax_problem(error: yaml.YAMLError, document: int) -> TextProblem:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if isinstance(error, yamlfiles.LimitExceeded):
        message = f"refused: {error.reason}"
    else:
        reason = getattr(error, "problem", None) or str(error)
        context = getattr(error, "context", None)
        message = f"invalid YAML: {context + ', ' if context else ''}{reason}"
    if mark is None:
        return TextProblem(message, 1, 1, document=document)
    return TextProblem(message, mark.line + 1, mark.column + 1, document=document)


def _reader_problem(error: yaml.reader.ReaderError, text: str | bytes) -> TextProblem:
    """A character YAML does not allow, or bytes that are not UTF-8, where they are."""
    if isinstance(text, bytes):
        before = text[: error.position].decode("utf-8", errors="replace")
        reason = f"not UTF-8 text ({error.reason}, at byte {error.position})"
    else:
        before = text[: error.position]
        reason = f"invalid YAML: {error.reason}"
    line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
    return TextProblem(reason, line, column)


def parse(
    text: str | bytes, file: str = "<text>", budget: yamlfiles.Budget | None = None
) -> LocatedText:
    """Every document of ``text`` with its field spans, and every problem of the text.
    The ``yamlfiles`` limits apply (bytes, nodes, depth), with ``budget`` shared by the
    files read together."""
    documents: list[LocatedDocument] = []
    problems: list[TextProblem] = []
    try:
        loader = _Loader(text, file, budget)
    except yaml.reader.ReaderError as error:
        return LocatedText((), (_reader_problem(error, text),), 1)
    except yaml.YAMLError as error:  # too large to read at all
        return LocatedText((), (_syntax_problem(error, 0),), 1)
    index = 0
    try:
        while loader.check_node():
            walk = _Walk(index)
            node = loader.get_node()
            if node is None:
                break
            try:
                end = walk.node(node, (), 0)
            except _Refused as refused:
                problems.append(refused.problem)
                index += 1
                continue
            problems.extend(walk.problems)
            content = loader.construct_document(node)
            if content is not None and not walk.problems:
                span = Span(node.start_mark.line + 1, node.start_mark.column + 1, *end)
                documents.append(LocatedDocument(index, span, content, walk.spans))
            index += 1
    except _AliasUsed as alias:  # a policy has no use for aliases, and they can expand
        message = "YAML aliases are not supported in manifests: write the value out"
        problems.append(TextProblem(message, alias.mark.line + 1, alias.mark.column + 1, (), index))
        index += 1
    except yaml.reader.ReaderError as error:  # found further into the text
        problems.append(_reader_problem(error, text))
        index += 1
    except yaml.YAMLError as error:
        problems.append(_syntax_problem(error, index))
        index += 1
    except RecursionError:
        # The parser itself recurses per level: a document of many thousand nested
        # brackets ends here before our own depth check could see it.
        problems.append(TextProblem(f"nested deeper than {MAX_DEPTH} levels", 1, 1, document=index))
        index += 1
    finally:
        loader.dispose()
    return LocatedText(tuple(documents), tuple(problems), index)
