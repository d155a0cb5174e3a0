"""Structured edits of a policy document: what a lint's fix does, field by field.

Edits are in the manner of JSON Patch, on the document's field paths (``("spec",
"ingress", 0, "from")``): ``add`` (a mapping key, or a list index equal to the list's
length: an append), ``replace`` and ``remove``, applied in order. ``apply_edits``
applies them here; an editor applies the same edits with a comment-preserving YAML
library, so a fix keeps the user's comments and key order.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bpfleet_core.netpol import validating
from bpfleet_core.netpol.locating import Loc


@dataclass(frozen=True)
class Edit:
    op: Literal["add", "replace", "remove"]
    path: Loc
    value: Any = None

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "op": self.op,
            "path": list(self.path),
            "pathText": validating.render_loc(self.path),
        }
        if self.op != "remove":
            found["value"] = self.value
        return found


@dataclass(frozen=True)
class Fix:
    title: str
    edits: tuple[Edit, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "edits": [edit.to_dict() for edit in self.edits]}


class EditError(ValueError):
    """An edit whose path does not fit the document."""


def apply_edits(document: Mapping[str, Any], edits: Sequence[Edit]) -> dict[str, Any]:
    """``document`` with ``edits`` applied in order. Containers along each edit's path
    are copied; the rest is shared with ``document``, which is never changed."""
    result: dict[str, Any] = dict(document)
    for edit in edits:
        if not edit.path:
            raise EditError("an edit needs a path")
        parent: Any = result
        for part in edit.path[:-1]:
            try:
                child = parent[part]
            except (KeyError, IndexError, TypeError):
                raise EditError(f"no field {validating.render_loc(edit.path)}") from None
            if isinstance(child, Mapping):
                child = dict(child)
            elif isinstance(child, list):
                child = list(child)
            else:
                raise EditError(f"no field {validating.render_loc(edit.path)}")
            parent[part] = child
            parent = child
        _apply(parent, edit)
    return result


def _apply(parent: Any, edit: Edit) -> None:
    last = edit.path[-1]
    if isinstance(parent, dict) and isinstance(last, str):
        if edit.op == "remove":
            parent.pop(last, None)
        elif edit.op == "replace" and last not in parent:
            raise EditError(f"no field {validating.render_loc(edit.path)} to replace")
        else:
            parent[last] = copy.deepcopy(edit.value)
    elif isinstance(parent, list) and isinstance(last, int) and 0 <= last <= len(parent):
        if edit.op == "add":
            parent.insert(last, copy.deepcopy(edit.value))
        elif last == len(parent):
            raise EditError(f"no item {validating.render_loc(edit.path)}")
        elif edit.op == "remove":
            del parent[last]
        else:
            parent[last] = copy.deepcopy(edit.value)
    else:
        raise EditError(f"no field {validating.render_loc(edit.path)}")
