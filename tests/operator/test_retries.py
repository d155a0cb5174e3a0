"""How long the operator waits before trying a handler again."""

from __future__ import annotations

from bpfleet_operator import handlers


def test_failures_back_off_exponentially_up_to_a_minute() -> None:
    delays = [handlers.retry_later("API unavailable", retry).delay for retry in range(9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_a_finalizer_that_polled_for_long_still_retries_a_failure_within_seconds() -> None:
    # Forty one-second polls while nodes detach, then the API fails once.
    late = handlers.retry_later("API unavailable", 40, handlers.MAX_FINALIZER_RETRY_DELAY)
    assert late.delay == handlers.MAX_FINALIZER_RETRY_DELAY
    assert handlers.retry_later("API unavailable", 1, handlers.MAX_FINALIZER_RETRY_DELAY).delay == 2
