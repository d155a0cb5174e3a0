"""How fleet objects print for a person: aligned tables, ages, short revisions, selectors."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from bpfleet_core.resources import LabelSelector


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell, kubectl style (the last one unpadded)."""
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]
    return [
        "   ".join(
            str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)
        ).rstrip()
        for row in (headers, *rows)
    ]


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``; ``-`` for never."""
    if moment is None:
        return "-"
    if moment.tzinfo is None:  # the API's SQLite rows come back naive, in UTC
        moment = moment.replace(tzinfo=UTC)
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def short_revision(revision: str) -> str:
    """``main@sha1:0123456789abcdef...`` -> ``main@sha1:0123456``."""
    name, separator, commit = revision.partition("@sha1:")
    return f"{name}{separator}{commit[:7]}" if separator else revision or "-"


def labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items())) or "<none>"


def selector_text(selector: LabelSelector) -> str:
    """kubectl's way of writing a selector; ``<all>`` when it selects every node."""
    return selector.describe() or "<all>"
