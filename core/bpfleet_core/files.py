"""Local files written so a reader never sees half of them."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_atomically(path: Path, data: str | bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` so readers see the old or the new content, never a mix. The file
    is created with ``mode`` (a secret is never readable by others, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    payload = data.encode() if isinstance(data, str) else data
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(payload)
        os.chmod(temporary, mode)  # O_CREAT's mode is filtered by the umask
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
