"""Pausing Python's cyclic garbage collector around bursts of allocation.

Decoding, reading and compiling a policy part allocates hundreds of thousands of small
objects, most of which live on until the next part (the part itself, its compiled
rules, the JSON kept to compare the next part with), and no reference cycles. Left
running, the collector would trace all of them again and again meanwhile; merely paused,
it would trace them all once when resumed (a young generation of half a million
objects: 100 ms here). So the pause ends by freezing them (``gc.freeze``): the collector
never traces them again. Garbage among them is freed by reference counting as always.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No collection inside; what was allocated inside is frozen when the outermost
    pause ends."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.enable()
