"""The shared retry vocabulary: what each HTTP status means for a caller."""

from __future__ import annotations

import pytest

from bpfleet_core import failures


@pytest.mark.parametrize(
    ("status", "kind", "temporary"),
    [
        (408, failures.TemporaryFailure, True),
        (429, failures.TemporaryFailure, True),
        (500, failures.TemporaryFailure, True),
        (503, failures.TemporaryFailure, True),
        (400, failures.PermanentFailure, False),
        (401, failures.Unauthorized, False),
        (403, failures.Forbidden, False),
        (404, failures.NotFound, False),
        (409, failures.Conflict, False),
        (422, failures.PermanentFailure, False),
        (302, failures.PermanentFailure, False),
    ],
)
def test_each_status_maps_to_what_the_caller_should_do(
    status: int, kind: type[failures.Failure], temporary: bool
) -> None:
    failure = failures.for_status(status, f"{status} GET /x", ["spec.x: bad"])
    assert type(failure) is kind
    assert failure.temporary is temporary
    assert failure.status == status
    assert failure.problems == ["spec.x: bad"]
    assert str(failure) == f"{status} GET /x"


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_success_is_no_failure(status: int) -> None:
    assert failures.for_status(status, "fine") is None


def test_kinds_of_permanent_failure_are_permanent() -> None:
    for kind in (failures.NotFound, failures.Unauthorized, failures.Forbidden, failures.Conflict):
        assert issubclass(kind, failures.PermanentFailure)
        assert not kind("x").temporary
