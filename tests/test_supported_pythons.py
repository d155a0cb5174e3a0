"""The supported Python range, declared once in pyproject.toml and kept in step.

The lowest supported version is Debian 12's Python; the highest declared is the newest
that the whole suite ran on (Debian 13's, through scripts/test-in-debian-root.sh). The
linters check the code as the lowest version reads it.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
_CLASSIFIER = re.compile(r"^Programming Language :: Python :: 3\.(\d+)$")


def declared_minors() -> list[int]:
    return sorted(
        int(match.group(1))
        for classifier in PYPROJECT["project"]["classifiers"]
        if (match := _CLASSIFIER.match(classifier))
    )


def test_classifiers_run_without_gaps_from_the_lowest_supported_python() -> None:
    lowest = re.fullmatch(r">=3\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert lowest is not None, "requires-python is a lower bound only: >=3.N"
    minors = declared_minors()
    assert minors[0] == int(lowest.group(1))
    assert minors == list(range(minors[0], minors[-1] + 1))


def test_the_linters_read_the_code_as_the_lowest_supported_python() -> None:
    lowest = declared_minors()[0]
    assert PYPROJECT["tool"]["ruff"]["target-version"] == f"py3{lowest}"
    assert PYPROJECT["tool"]["mypy"]["python_version"] == f"3.{lowest}"


def test_this_python_is_a_declared_one() -> None:
    """A suite that passes on a newer Python is what adds its classifier."""
    running = sys.version_info
    assert running.major == 3
    assert running.minor in declared_minors(), (
        f"Python 3.{running.minor} is not declared in pyproject.toml's classifiers: "
        "add it once the whole suite passes on it"
    )
