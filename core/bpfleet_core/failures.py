"""One vocabulary for "retry or not", shared by every client of another component.

The agent's and the operator's HTTP clients, the operator's Kubernetes and Git
seams and the pipeline's targets all raise these, so a caller decides what to do
next from the class alone: back off and retry a ``TemporaryFailure``; stop on a
``PermanentFailure`` (and its kinds) until the input or the credential changes.
``Backoff`` is how long a loop that retries waits between tries.
"""

from __future__ import annotations

from collections.abc import Sequence


class Failure(Exception):
    """A call to something outside this process failed; ``status`` is its HTTP status."""

    def __init__(
        self, message: str, *, status: int | None = None, problems: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.problems = list(problems)

    @property
    def temporary(self) -> bool:
        return isinstance(self, TemporaryFailure)


class TemporaryFailure(Failure):
    """Unreachable, timed out, overloaded or failing inside: the same call may pass later."""


class PermanentFailure(Failure):
    """The request itself is wrong: the same call fails again until its input changes."""


class NotFound(PermanentFailure):
    """The thing is not there (or the route is not: a wrong base URL)."""


class Unauthorized(PermanentFailure):
    """The credential is unknown, expired or revoked (HTTP 401)."""


class Forbidden(PermanentFailure):
    """The credential is valid but its role may not do this (HTTP 403)."""


class Conflict(PermanentFailure):
    """Someone else holds what was asked for (HTTP 409)."""


def for_status(status: int, message: str, problems: Sequence[str] = ()) -> Failure | None:
    """The failure an HTTP status stands for; None for success."""
    if 200 <= status < 300:
        return None
    kind: type[Failure]
    if status in (408, 429) or status >= 500:
        kind = TemporaryFailure
    elif status == 401:
        kind = Unauthorized
    elif status == 403:
        kind = Forbidden
    elif status == 404:
        kind = NotFound
    elif status == 409:
        kind = Conflict
    else:
        # Other 4xx, and 1xx/3xx that clients which follow no redirects never asked for.
        kind = PermanentFailure
    return kind(message, status=status, problems=problems)


class Backoff:
    """How long to wait before the next pass: the interval after a success; after a
    failure ``first`` seconds, doubling with each failure in a row, never past the
    interval."""

    def __init__(self, first: float) -> None:
        self.first = first
        self._delay = first

    def wait(self, failed: bool, interval: float) -> float:
        if not failed:
            self._delay = self.first
            return interval
        wait = min(self._delay, interval)
        self._delay = min(self._delay * 2, interval)
        return wait
