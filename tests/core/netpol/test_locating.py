"""YAML text with positions: fields by path with line and column, and text still being
typed (syntax errors, duplicates, aliases, deep nesting) as problems, never exceptions."""

from __future__ import annotations

import pytest

from bpfleet_core.netpol import locating, validating
from bpfleet_core.netpol.locating import Span

TEXT = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector:
    matchLabels: {app: db}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
    ports:
    - port: 0
---
# an empty document is counted, not returned
---
kind: Other
"""


def test_every_field_has_a_line_and_a_column() -> None:
    located = locating.parse(TEXT)
    assert located.problems == ()
    assert located.count == 3
    first, second = located.documents
    assert (first.index, first.line, second.index, second.line) == (0, 1, 2, 15)
    assert first.spans[("spec", "ingress", 0, "ports", 0, "port")] == Span(11, 7, 11, 14)
    assert first.spans[("spec", "ingress", 0)] == Span(8, 5, 11, 14)
    assert first.spans[("metadata", "namespace")].column == 22
    # A path the document lacks falls back to its nearest enclosing field.
    assert first.span_of(("spec", "ingress", 0, "ports", 0, "endPort")) == Span(11, 7, 11, 14)
    assert first.span_of(("nowhere",)) == first.span


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("spec:\n  podSelector: {matchLabels: {app: db}\n", 3, 1, "invalid YAML"),
        ("spec:\n  ingress:\n  - from: [\n", 4, 1, "invalid YAML"),
        ("spec:\n\tpodSelector: {}\n", 2, 1, "invalid YAML"),
        ("a: 1\nb: 2\na: 3\n", 3, 1, "duplicate key"),
    ],
)
def test_broken_text_is_a_located_problem(text: str, line: int, column: int, words: str) -> None:
    located = locating.parse(text)
    [problem] = located.problems
    assert (problem.line, problem.column) == (line, column), problem
    assert words in problem.message
    assert located.documents == ()


def test_documents_before_a_syntax_error_are_kept() -> None:
    located = locating.parse("a: 1\n---\nb: [\n")
    assert [document.content for document in located.documents] == [{"a": 1}]
    assert located.problems[0].document == 1


def test_aliases_are_refused_before_they_expand() -> None:
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 12):
        previous = chr(ord("a") + level - 1)
        name = chr(ord("a") + level)
        laughs.append(f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]")
    located = locating.parse("\n".join(laughs))
    [problem] = located.problems
    assert "aliases are not supported" in problem.message
    assert problem.line == 2
    assert located.documents == ()


@pytest.mark.parametrize("depth", [locating.MAX_DEPTH + 1, 100_000])
def test_nesting_too_deep_is_a_problem(depth: int) -> None:
    located = locating.parse("[" * depth + "]" * depth)
    [problem] = located.problems
    assert "nested deeper than" in problem.message


def test_the_file_loader_reads_through_it() -> None:
    sources = validating.parse_yaml(TEXT, "p.yaml")
    assert [source.line for source in sources] == [1, 15]
    assert sources[0].line_of(("spec", "ingress", 0, "ports", 0, "port")) == 11
    with pytest.raises(validating.PolicyValidationError) as raised:
        validating.parse_yaml("a: &x 1\nb: *x\n", "p.yaml")
    assert str(raised.value.problems[0]).startswith("p.yaml:2: YAML aliases")


def test_nesting_up_to_the_limit_is_read() -> None:
    depth = locating.MAX_DEPTH
    located = locating.parse("[" * depth + "]" * depth)
    assert located.problems == ()
    assert len(located.documents) == 1


def test_characters_yaml_refuses_are_located() -> None:
    located = locating.parse("spec:\n  podSelector: {}\u001d\n")
    [problem] = located.problems
    assert (problem.line, problem.column) == (2, 18)
    assert "special characters are not allowed" in problem.message
