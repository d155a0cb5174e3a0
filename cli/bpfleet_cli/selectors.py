"""Label selectors as kubectl's ``-l`` writes them: ``tier=edge,zone in (a,b),!canary``."""

from __future__ import annotations

import re

from pydantic import ValidationError

from bpfleet_cli.exits import CommandError, ExitCode
from bpfleet_core.resources import LabelRequirement, LabelSelector

_SET = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^()]*)\)\s*$")
_EQUALITY = re.compile(r"^\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")


def _terms(text: str) -> list[str]:
    """Split at the commas that are not inside a set's parentheses."""
    terms, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(text[start:index])
            start = index + 1
    terms.append(text[start:])
    return terms


def _requirement(term: str) -> LabelRequirement:
    if match := _SET.match(term):
        values = tuple(value.strip() for value in match[3].split(",") if value.strip())
        operator = "In" if match[2] == "in" else "NotIn"
        return LabelRequirement(key=match[1], operator=operator, values=values)
    if match := _EQUALITY.match(term):
        operator = "NotIn" if match[2] == "!=" else "In"
        return LabelRequirement(key=match[1], operator=operator, values=(match[3],))
    if match := _EXISTS.match(term):
        operator = "DoesNotExist" if match[1] else "Exists"
        return LabelRequirement(key=match[2], operator=operator)
    raise ValueError(f"cannot read {term.strip()!r}")


def parse(text: str) -> LabelSelector:
    """A selector from kubectl's syntax; an empty string selects everything."""
    if not text.strip():
        return LabelSelector()
    try:
        requirements = tuple(_requirement(term) for term in _terms(text))
    except (ValueError, ValidationError) as error:
        reason = error.errors()[0]["msg"] if isinstance(error, ValidationError) else str(error)
        raise CommandError(
            f"invalid label selector {text!r}: {reason.removeprefix('Value error, ')} "
            "(write key=value, key!=value, 'key in (a,b)', key or !key, joined by commas)",
            ExitCode.USAGE,
        ) from None
    return LabelSelector(match_expressions=requirements)


def narrowed(selector: LabelSelector, extra: LabelSelector) -> LabelSelector:
    """Nodes both select: ``extra``'s requirements are added to ``selector``'s."""
    return selector.model_copy(
        update={"match_expressions": (*selector.match_expressions, *extra.match_expressions)}
    )


def describe(selector: LabelSelector) -> str:
    """kubectl's way of writing it back; ``<all>`` when it selects everything."""
    parts = [f"{key}={value}" for key, value in sorted(selector.match_labels.items())]
    for requirement in selector.match_expressions:
        values = ",".join(requirement.values)
        parts.append(
            {
                "In": f"{requirement.key} in ({values})",
                "NotIn": f"{requirement.key} notin ({values})",
                "Exists": requirement.key,
                "DoesNotExist": f"!{requirement.key}",
            }[requirement.operator]
        )
    return ",".join(parts) or "<all>"
