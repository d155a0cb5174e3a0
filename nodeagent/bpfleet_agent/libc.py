"""The C library calls Python 3.11's ``os`` lacks, from one loaded handle.

mount (for ``mounts``), unshare and setns (network namespaces), renameat2 (swapping
pinned directories), raw syscall (perf_event_open, for ``libbpf``) and vsnprintf
(formatting libbpf's log messages). Each wrapper raises ``OSError`` with errno.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

CLONE_NEWNET = 0x40000000
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1 << 0
_RENAME_EXCHANGE = 1 << 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.renameat2.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_uint,
]
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
# syscall() is variadic: no argtypes, so callers pass full-width ctypes values.
_libc.syscall.restype = ctypes.c_long


def _raise(doing: str) -> None:
    error = ctypes.get_errno()
    raise OSError(error, f"{doing}: {os.strerror(error)}")


def mount(source: str, target: Path, fstype: str) -> None:
    if _libc.mount(source.encode(), str(target).encode(), fstype.encode(), 0, None) != 0:
        _raise(f"mounting {fstype} at {target}")


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        _raise(f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        _raise("setns")


def rename_exchange(first: Path, second: Path) -> None:
    """Swap two existing paths atomically (renameat2 RENAME_EXCHANGE; bpffs supports it)."""
    if _libc.renameat2(_AT_FDCWD, bytes(first), _AT_FDCWD, bytes(second), _RENAME_EXCHANGE):
        _raise(f"exchanging {first} and {second}")


def rename_noreplace(source: Path, target: Path) -> None:
    """Rename, failing with EEXIST instead of replacing ``target``."""
    if _libc.renameat2(_AT_FDCWD, bytes(source), _AT_FDCWD, bytes(target), _RENAME_NOREPLACE):
        _raise(f"renaming {source} to {target}")


def syscall(number: int, *args: object) -> int:
    """A raw system call; returns its result (negative on failure, errno set)."""
    return int(_libc.syscall(ctypes.c_long(number), *args))


def errno() -> int:
    return ctypes.get_errno()


def vsnprintf(fmt: bytes | None, va_list: int | None, size: int = 4096) -> str:
    """Format a C format string and ``va_list`` (as libbpf's print callback gets them)."""
    buffer = ctypes.create_string_buffer(size)
    _libc.vsnprintf(buffer, size, fmt, va_list)
    return buffer.value.decode(errors="replace")
