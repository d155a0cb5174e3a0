"""Waiting for something that happens elsewhere (another process, the kernel)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    check: Callable[[], Any], timeout: float = 60, what: str = "condition", every: float = 0.1
) -> Any:
    """``check()``'s first truthy result; fails naming ``what`` and the last result."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")
