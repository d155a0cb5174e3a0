"""The kernel filesystems the agent needs, mounted if a fresh machine lacks them."""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from pathlib import Path

from bpfleet_agent import libc

BPFFS = Path("/sys/fs/bpf")
TRACEFS = Path("/sys/kernel/tracing")
CGROUP2 = Path("/sys/fs/cgroup")
FALLBACK_CGROUP2 = Path("/run/bpfleet/cgroup2")
# The source name of a bpffs the agent mounts for itself at a pin root outside
# /sys/fs/bpf: such a mount holds nothing but the agent's own pins.
PRIVATE_BPFFS_SOURCE = "bpfleet"

_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


class MountError(OSError):
    pass


@dataclass(frozen=True)
class Mount:
    source: str
    target: Path
    fstype: str


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as ``\\ooo``."""
    raw = _OCTAL_ESCAPE.sub(lambda match: bytes([int(match.group(1), 8)]), field.encode())
    return raw.decode(errors="surrogateescape")


def parse_mountinfo(text: str) -> list[Mount]:
    found = []
    for line in text.splitlines():
        fields = line.split()
        separator = fields.index("-")
        found.append(
            Mount(
                source=_unescape(fields[separator + 2]),
                target=Path(_unescape(fields[4])),
                fstype=fields[separator + 1],
            )
        )
    return found


def mounts() -> list[Mount]:
    """The mount table of this process's mount namespace."""
    return parse_mountinfo(Path("/proc/self/mountinfo").read_text())


def find(fstype: str) -> Path | None:
    return next((mount.target for mount in mounts() if mount.fstype == fstype), None)


def _mount(fstype: str, target: Path, source: str | None = None) -> None:
    target.mkdir(parents=True, exist_ok=True)
    try:
        libc.mount(source or fstype, target, fstype)
    except OSError as error:
        raise MountError(error.errno, str(error)) from error


def ensure_bpffs(root: Path) -> None:
    """Pins need a bpffs; mount one if the pin root lies on none.

    The pin root must be a directory of its own: a bpffs mount point itself (such as
    /sys/fs/bpf) is shared with every other tool's pins, so it is refused; only a bpffs
    the agent mounted for itself there is accepted.
    """
    covering = [m for m in mounts() if m.fstype == "bpf" and root.is_relative_to(m.target)]
    # The last mount at a path is the one in effect there.
    exact = next((m for m in reversed(covering) if m.target == root), None)
    if root == BPFFS or (exact is not None and exact.source != PRIVATE_BPFFS_SOURCE):
        raise MountError(
            errno.EINVAL,
            f"pin root {root} is a bpffs mount point shared with other tools; "
            f"use a directory of its own under it, e.g. {root / 'bpfleet'}",
        )
    if covering:
        return
    if root.is_relative_to(BPFFS):
        _mount("bpf", BPFFS)
        return
    # Never mount over a directory that holds something: that would hide it.
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise MountError(
            errno.ENOTEMPTY,
            f"pin root {root} is on no bpffs and is not an empty directory to mount one at",
        )
    _mount("bpf", root, source=PRIVATE_BPFFS_SOURCE)


def ensure_tracefs() -> Path:
    """Tracepoint attachment looks event ids up in tracefs."""
    existing = find("tracefs")
    if existing is not None:
        return existing
    _mount("tracefs", TRACEFS)
    return TRACEFS


def ensure_cgroup2() -> Path:
    """cgroup_skb programs attach to cgroup v2 directories; find or mount the hierarchy."""
    existing = find("cgroup2")
    if existing is not None:
        return existing
    target = CGROUP2 if not any(CGROUP2.iterdir()) else FALLBACK_CGROUP2
    _mount("cgroup2", target)
    return target
