"""The kernel filesystems the agent needs, mounted if a fresh machine lacks them."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from pathlib import Path

BPFFS = Path("/sys/fs/bpf")
TRACEFS = Path("/sys/kernel/tracing")
CGROUP2 = Path("/sys/fs/cgroup")
FALLBACK_CGROUP2 = Path("/run/bpfleet/cgroup2")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 4 + [ctypes.c_void_p]


class MountError(OSError):
    pass


@dataclass(frozen=True)
class Mount:
    source: str
    target: Path
    fstype: str


def mounts() -> list[Mount]:
    """The mount table of this process's mount namespace."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        target = fields[4].replace("\\040", " ")
        found.append(
            Mount(source=fields[separator + 2], target=Path(target), fstype=fields[separator + 1])
        )
    return found


def find(fstype: str) -> Path | None:
    return next((mount.target for mount in mounts() if mount.fstype == fstype), None)


def is_mounted(path: Path, fstype: str) -> bool:
    return any(mount.target == path and mount.fstype == fstype for mount in mounts())


def _mount(fstype: str, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    if _libc.mount(fstype.encode(), str(target).encode(), fstype.encode(), 0, None) != 0:
        error = ctypes.get_errno()
        raise MountError(error, f"mounting {fstype} at {target}: {os.strerror(error)}")


def ensure_bpffs(root: Path) -> None:
    """Pins need a bpffs; mount the standard one if the pin root lies under it unmounted."""
    if any(mount.fstype == "bpf" and root.is_relative_to(mount.target) for mount in mounts()):
        return
    _mount("bpf", BPFFS if root.is_relative_to(BPFFS) else root)


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
