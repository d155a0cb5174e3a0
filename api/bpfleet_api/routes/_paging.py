"""Paging for list routes: ``limit`` and ``offset`` in, ``X-Total-Count`` out.

Without ``limit`` a list is whole, as it always was, so existing callers see no change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Response

T = TypeVar("T")
MAX_PAGE = 500
TOTAL_HEADER = "X-Total-Count"
Responses = dict[int | str, dict[str, Any]]
TOTAL_RESPONSES: Responses = {
    200: {
        "headers": {
            TOTAL_HEADER: {
                "description": "Items matching the filters, over all pages.",
                "schema": {"type": "integer"},
            }
        }
    }
}


@dataclass(frozen=True)
class Paging:
    limit: int | None
    offset: int

    def apply(self, items: Sequence[T], response: Response) -> list[T]:
        response.headers[TOTAL_HEADER] = str(len(items))
        end = None if self.limit is None else self.offset + self.limit
        return list(items[self.offset : end])


def paging(
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_PAGE, description="Page size; absent: every item.")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1, description="Items to skip.")] = 0,
) -> Paging:
    return Paging(limit, offset)


PagingDep = Annotated[Paging, Depends(paging)]
