"""The node's trust store, read again whenever its files change.

Removing a key (a leaked one, say) takes effect on the next reconcile pass, without a
restart; so does adding one. At start the store must be read whole, or the agent does
not start. Afterwards a key file that cannot be read is simply not trusted, and said
so: a half-written or broken file can only take trust away, never add it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from bpfleet_core import signing

log = logging.getLogger(__name__)

_Stamp = tuple[tuple[str, tuple[int, int, int, int] | None], ...]


def _stat(path: Path) -> tuple[int, int, int, int] | None:
    try:
        stat = os.stat(path)  # follows symlinks: a ConfigMap swaps its files that way
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_dev)


class TrustFiles:
    """The trust store of the files at ``paths``, as they are now."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = list(paths)
        self._stamp = self._stamp_now()
        self.store = signing.TrustStore.from_paths(self.paths)  # raises: refuse to start
        self.problems: list[str] = []

    def _stamp_now(self) -> _Stamp:
        """What identifies the files' content: each path and key file, and its stat."""
        watched = [*self.paths, *signing.key_files(self.paths)]
        return tuple((str(path), _stat(path)) for path in watched)

    @property
    def whole(self) -> bool:
        """Every key file was read, and there is at least one key."""
        return not self.problems and bool(self.store.keys)

    def current(self) -> signing.TrustStore:
        """The store, read again first if any of its files changed."""
        stamp = self._stamp_now()
        if stamp == self._stamp:
            return self.store
        # The stamp is taken before reading: a change during the read is seen next time.
        self._stamp = stamp
        keys: list[signing.TrustedKey] = []
        problems: list[str] = []
        for file in signing.key_files(self.paths):
            try:
                public_key = signing.load_public_key(file)
            except signing.SignatureError as error:
                problems.append(str(error))
                continue
            keys.append(signing.TrustedKey(signing.key_id(public_key), public_key, str(file)))
        before = {key.key_id for key in self.store.keys}
        self.store, self.problems = signing.TrustStore(keys), problems
        after = {key.key_id for key in keys}
        log.info(
            "trust store changed: %d key(s)%s%s",
            len(keys),
            f"; no longer trusted: {', '.join(sorted(before - after))}" if before - after else "",
            f"; newly trusted: {', '.join(sorted(after - before))}" if after - before else "",
        )
        for problem in problems:
            log.error("trust store: %s; that key is not trusted", problem)
        return self.store
