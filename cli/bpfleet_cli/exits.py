"""Exit codes of the ``bpfleet`` commands, and the one-line errors that carry them.

CI reads the exit code first: 0 and 1 are answers (1: the check found something: a
diff with changes, incompatible nodes, invalid manifests), 2 and above are errors, each
kind with its own code so a pipeline can tell a broken token from an unreachable API.
"""

from __future__ import annotations

from enum import IntEnum

from bpfleet_core import failures


class ExitCode(IntEnum):
    OK = 0
    FOUND = 1  # changes (diff), incompatible nodes (preflight), problems (validate), no
    USAGE = 2  # an unknown option or a missing argument (the command line itself)
    INVALID_INPUT = 3  # files unreadable or malformed, artifacts unsigned or untrusted
    CONFIGURATION = 4  # unknown context, no API configured, unreadable configuration
    UNAUTHORIZED = 5  # the token is unknown, expired or revoked (HTTP 401)
    FORBIDDEN = 6  # the token's role may not do this (HTTP 403)
    UNREACHABLE = 7  # no answer from the API, or it failed inside (5xx)
    NOT_FOUND = 8  # the program, node, policy, rollout (or the API's route) does not exist
    REFUSED = 9  # the API refused the request as it stands (409, 422, other 4xx)
    TIMED_OUT = 10  # --wait or wait: the condition was not met within --timeout


HELP = (
    "Exit codes: 0 success (diff: no changes); 1 found something (diff: changes; "
    "preflight: more incompatible nodes than allowed; validate: invalid manifests; wait: "
    "the condition can no longer hold; kill: not confirmed).\n\n"
    "Errors: 2 usage; 3 invalid input (files, unsigned or untrusted artifacts); "
    "4 configuration (unknown context, no API URL or token); 5 token unknown, expired or "
    "revoked; 6 the token's role may not do this; 7 API unreachable or failing; "
    "8 not found; 9 refused by the API; 10 timed out waiting."
)


class CommandError(Exception):
    """An expected failure: reported as one line on stderr, ending with ``code``."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def for_failure(failure: failures.Failure) -> ExitCode:
    """The exit code of a failed call to the fleet API."""
    if isinstance(failure, failures.Unauthorized):
        return ExitCode.UNAUTHORIZED
    if isinstance(failure, failures.Forbidden):
        return ExitCode.FORBIDDEN
    if isinstance(failure, failures.NotFound):
        return ExitCode.NOT_FOUND
    if isinstance(failure, failures.TemporaryFailure):
        return ExitCode.UNREACHABLE
    return ExitCode.REFUSED
