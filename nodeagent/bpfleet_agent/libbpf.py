"""The only module that calls libbpf (Debian's libbpf.so.1, through ctypes).

Everything above this module sees Python values: file descriptors as ``int`` (owned by
the caller, closed with ``os.close``), ``bytes`` for keys and values, dataclasses for
kernel object info. Every failure raises ``LibbpfError`` carrying errno and what was
being done. Kernel constants are spelled by name and resolved through ``kernel_enums``.

Supported: libbpf 1.1 (Debian 12) to 1.5 (Debian 13), and later 1.x. The ``*_opts``
structures are declared as libbpf 1.1 lays them out, the oldest supported, and passed
with ``sz`` set to their own size. libbpf versions these structures by ``sz``: it reads
the fields that fit and takes every later one as zero, so a newer libbpf accepts them
as they are (1.5's ``bpf_link_create_opts`` is 80 bytes, ours 64); an older one would
refuse nonzero bytes past its own end. So a field a later libbpf added is declared only
when the agent sets it, and then the oldest supported version rises to the one that has
it. The kernel's info structures (``bpf_prog_info`` ...) follow the same rule with
the kernel: it fills what fits. ``test_agent_units.py`` checks every declared field
against the installed headers: same offset and size, and no structure longer than the
headers' own.
"""

from __future__ import annotations

import ctypes
import errno as errno_codes
import logging
import os
import re
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Self

from bpfleet_agent import libc
from bpfleet_core import kernel_enums

log = logging.getLogger(__name__)

_LIBRARY_NAME = "libbpf.so.1"
_VERIFIER_LOG_SIZE = 1 << 20  # 1 MiB: enough for the tail of a rejected program's log
_NAME_LEN = 16


class LibbpfError(OSError):
    """A libbpf or bpf() call failed; ``errno`` is the kernel's answer."""

    def __init__(self, err: int, doing: str, detail: str = "") -> None:
        message = f"{doing}: {os.strerror(err) if err > 0 else 'failed'} (errno {err})"
        if detail:
            message = f"{message}: {detail}"
        super().__init__(err, message)
        self.doing = doing


# ---------------------------------------------------------------------------- library


@cache
def _lib() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(_LIBRARY_NAME, use_errno=True)
    except OSError as error:
        raise LibbpfError(
            errno_codes.ENOENT, f"loading {_LIBRARY_NAME}", "install Debian's libbpf1"
        ) from error
    _declare(lib)
    _route_messages(lib)
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and result types for every function we call (wrong ones crash, not fail)."""
    p, i, u32, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_char_p
    size = ctypes.c_size_t
    signatures: dict[str, tuple[list[Any], Any]] = {
        "libbpf_major_version": ([], u32),
        "libbpf_minor_version": ([], u32),
        "libbpf_num_possible_cpus": ([], i),
        "libbpf_probe_bpf_prog_type": ([i, p], i),
        "libbpf_probe_bpf_map_type": ([i, p], i),
        "bpf_object__open_mem": ([p, size, p], p),
        "bpf_object__load": ([p], i),
        "bpf_object__close": ([p], None),
        "bpf_object__next_program": ([p, p], p),
        "bpf_object__next_map": ([p, p], p),
        "bpf_program__name": ([p], s),
        "bpf_program__section_name": ([p], s),
        "bpf_program__fd": ([p], i),
        "bpf_program__set_log_buf": ([p, p, size], i),
        "bpf_map__name": ([p], s),
        "bpf_map__fd": ([p], i),
        "bpf_map__type": ([p], i),
        "bpf_map__key_size": ([p], u32),
        "bpf_map__value_size": ([p], u32),
        "bpf_map__max_entries": ([p], u32),
        "bpf_map__map_flags": ([p], u32),
        "bpf_map__reuse_fd": ([p, i], i),
        "bpf_map__initial_value": ([p, ctypes.POINTER(size)], p),
        "bpf_map__set_initial_value": ([p, p, size], i),
        "bpf_obj_pin": ([i, s], i),
        "bpf_obj_get": ([s], i),
        "bpf_obj_get_info_by_fd": ([i, p, ctypes.POINTER(u32)], i),
        "bpf_link_create": ([i, i, i, p], i),
        "bpf_link_update": ([i, i, p], i),
        "bpf_link_detach": ([i], i),
        "bpf_raw_tracepoint_open": ([s, i], i),
        "bpf_prog_query_opts": ([i, i, p], i),
        "bpf_xdp_query": ([i, i, p], i),
        "bpf_enable_stats": ([i], i),
        "bpf_map_lookup_elem": ([i, p, p], i),
        "bpf_map_update_elem": ([i, p, p, ctypes.c_uint64], i),
        "bpf_map_get_next_key": ([i, p, p], i),
        "bpf_map_delete_elem": ([i, p], i),
        "bpf_map_create": ([i, s, u32, u32, u32, p], i),
        "bpf_map_update_batch": ([i, p, p, ctypes.POINTER(u32), p], i),
        "bpf_map_delete_batch": ([i, p, ctypes.POINTER(u32), p], i),
        "bpf_map_lookup_batch": ([i, p, p, p, p, ctypes.POINTER(u32), p], i),
        "bpf_map_get_fd_by_id": ([u32], i),
        "bpf_prog_test_run_opts": ([i, p], i),
        "bpf_prog_get_fd_by_id": ([u32], i),
        "ring_buffer__new": ([i, p, p, p], p),
        "ring_buffer__poll": ([p, i], i),
        "ring_buffer__free": ([p], None),
        "libbpf_set_print": ([p], p),
        "bpf_prog_load": ([i, s, s, p, size, p], i),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = restype


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_LIBBPF_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
_recent_messages = threading.local()


def _on_message(level: int, fmt: bytes | None, args: int | None) -> int:
    # libbpf hands a printf format and a va_list; let libc format it.
    text = libc.vsnprintf(fmt, args).rstrip()
    messages: list[str] | None = getattr(_recent_messages, "lines", None)
    if messages is not None:
        messages.append(text)
    log.log(_LIBBPF_LEVELS.get(level, logging.DEBUG), "libbpf: %s", text)
    return 0


_print_callback = _PRINT_FN(_on_message)  # kept alive for as long as libbpf may call it


def _route_messages(lib: ctypes.CDLL) -> None:
    lib.libbpf_set_print(ctypes.cast(_print_callback, ctypes.c_void_p))


class _CapturedMessages:
    """Collect libbpf's messages while a call runs, to explain a failure."""

    def __enter__(self) -> list[str]:
        self.lines: list[str] = []
        _recent_messages.lines = self.lines
        return self.lines

    def __exit__(self, *_: object) -> None:
        _recent_messages.lines = None


def _check(result: int, doing: str, detail: str = "") -> int:
    """libbpf 1.x returns -errno (and sets errno); turn that into an exception."""
    if result < 0:
        raise LibbpfError(-result if result != -1 else ctypes.get_errno(), doing, detail)
    return result


def _check_pointer(pointer: int | None, doing: str, detail: str = "") -> int:
    if not pointer:
        raise LibbpfError(ctypes.get_errno() or errno_codes.EINVAL, doing, detail)
    return pointer


def version() -> str:
    lib = _lib()
    return f"{lib.libbpf_major_version()}.{lib.libbpf_minor_version()}"


def num_possible_cpus() -> int:
    return _check(_lib().libbpf_num_possible_cpus(), "counting possible CPUs")


# ----------------------------------------------------------------------------- probes


def probe_program_type(program_type: str) -> bool:
    """A real probe load of a minimal program of this type."""
    result = _lib().libbpf_probe_bpf_prog_type(kernel_enums.program_type_id(program_type), None)
    return bool(result == 1)


def probe_map_type(map_type: str) -> bool:
    result = _lib().libbpf_probe_bpf_map_type(kernel_enums.map_type_id(map_type), None)
    return bool(result == 1)


class _ProgLoadOptions(ctypes.Structure):
    # struct bpf_prog_load_opts as of libbpf 1.1.
    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("attempts", ctypes.c_int),
        ("expected_attach_type", ctypes.c_uint32),
        ("prog_btf_fd", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_ifindex", ctypes.c_uint32),
        ("kern_version", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("attach_prog_fd", ctypes.c_uint32),
        ("attach_btf_obj_fd", ctypes.c_uint32),
        ("fd_array", ctypes.c_void_p),
        ("func_info", ctypes.c_void_p),
        ("func_info_cnt", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("line_info", ctypes.c_void_p),
        ("line_info_cnt", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_char_p),
    )


# Program types that only load with a matching expected attach type.
_PROBE_ATTACH_TYPES = {
    "cgroup_sock_addr": "cgroup_inet4_connect",
    "cgroup_sockopt": "cgroup_getsockopt",
    "sk_lookup": "sk_lookup",
    "netfilter": "netfilter",
}
_BPF_CALL = 0x85  # BPF_JMP | BPF_CALL, imm = helper id
_BPF_EXIT = 0x95  # BPF_JMP | BPF_EXIT
_BPF_MOV_R0 = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K into r0, imm = value


def _load_instructions(
    program_type: str,
    instructions: tuple[tuple[int, int], ...],
    name: bytes | None,
    options: _ProgLoadOptions | None,
) -> int:
    """bpf_prog_load of (opcode, immediate) instructions that use no other fields;
    returns libbpf's result (an fd, or -errno)."""
    packed = b"".join(struct.pack("=BBhi", opcode, 0, 0, imm) for opcode, imm in instructions)
    code = ctypes.create_string_buffer(packed, len(packed))
    return int(
        _lib().bpf_prog_load(
            kernel_enums.program_type_id(program_type),
            name,
            b"GPL",
            code,
            len(instructions),
            ctypes.byref(options) if options is not None else None,
        )
    )


# The verifier checks a helper call in order: does the helper exist, may this program
# type call it, may a non-GPL program, may it sleep here, ... and only then its argument
# registers. So only a complaint about an argument register ("R1 type=ctx
# expected=map_ptr", "R2 !read_ok"), or reaching the next instruction (a complaint about
# r0 at exit), shows the call itself was accepted.
_ARGUMENT_COMPLAINT = re.compile(r"^R\d+ ")


def helper_accepted(verifier_log: str) -> bool:
    """Whether the log of a refused ``call helper; exit`` shows the call was accepted."""
    lines = [line for line in verifier_log.splitlines() if line.strip()]
    call = next((n for n, line in enumerate(lines) if ": (85) call " in line), None)
    if call is None:
        return False  # refused before verification: no verdict on the helper at all
    after = lines[call + 1 :]
    if any(line.startswith("1: ") for line in after):
        return True  # the verifier went on to the exit instruction
    return bool(after) and _ARGUMENT_COMPLAINT.match(after[0]) is not None


def probe_helper(program_type: str, helper_id: int) -> bool:
    """Load ``call helper; exit``: the helper is available only if that loads or the
    verifier accepted the call and then objected to its arguments (``helper_accepted``).
    """
    verifier_log = ctypes.create_string_buffer(4096)
    options = _ProgLoadOptions(
        sz=ctypes.sizeof(_ProgLoadOptions), log_level=1, log_size=len(verifier_log)
    )
    options.log_buf = ctypes.cast(verifier_log, ctypes.c_char_p)
    if program_type in _PROBE_ATTACH_TYPES:
        options.expected_attach_type = kernel_enums.attach_type_id(
            _PROBE_ATTACH_TYPES[program_type]
        )
    if program_type == "kprobe":
        options.kern_version = _kernel_version_code()
    fd = _load_instructions(program_type, ((_BPF_CALL, helper_id), (_BPF_EXIT, 0)), None, options)
    if fd >= 0:
        os.close(fd)
        return True
    return helper_accepted(verifier_log.value.decode(errors="replace"))


def _kernel_version_code() -> int:
    major, minor, patch = ([*os.uname().release.split("-")[0].split("."), "0", "0"])[:3]
    return (int(major) << 16) + (int(minor) << 8) + min(int(patch), 255)


# ---------------------------------------------------------------------------- objects


class _OpenOptions(ctypes.Structure):
    # struct bpf_object_open_opts as of libbpf 1.1; ``sz`` tells libbpf how much we know.
    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
        ("_removed_attach_prog_fd", ctypes.c_uint32),
        ("kconfig", ctypes.c_char_p),
        ("btf_custom_path", ctypes.c_char_p),
        ("kernel_log_buf", ctypes.c_char_p),
        ("kernel_log_size", ctypes.c_size_t),
        ("kernel_log_level", ctypes.c_uint32),
    )


@dataclass(frozen=True)
class ObjectMap:
    """A map of an opened object. libbpf names the maps it makes for data sections
    ``<object prefix>.rodata`` (or ``.rodata.str1.1`` ...): those names hold a dot."""

    handle: int
    name: str

    @property
    def fd(self) -> int:
        return int(_lib().bpf_map__fd(self.handle))

    @property
    def type(self) -> str:
        return kernel_enums.map_type_name(_lib().bpf_map__type(self.handle))

    @property
    def key_size(self) -> int:
        return int(_lib().bpf_map__key_size(self.handle))

    @property
    def value_size(self) -> int:
        return int(_lib().bpf_map__value_size(self.handle))

    @property
    def max_entries(self) -> int:
        return int(_lib().bpf_map__max_entries(self.handle))

    @property
    def map_flags(self) -> int:
        return int(_lib().bpf_map__map_flags(self.handle))

    def initial_value(self) -> bytes:
        size = ctypes.c_size_t(0)
        pointer = _lib().bpf_map__initial_value(self.handle, ctypes.byref(size))
        if not pointer:
            return b""
        return ctypes.string_at(pointer, size.value)

    def set_initial_value(self, data: bytes) -> None:
        buffer = ctypes.create_string_buffer(data, len(data))
        _check(
            _lib().bpf_map__set_initial_value(self.handle, buffer, len(data)),
            f"setting initial value of map {self.name}",
        )

    def reuse_fd(self, fd: int) -> None:
        _check(_lib().bpf_map__reuse_fd(self.handle, fd), f"reusing a pinned map for {self.name}")


@dataclass(frozen=True)
class ObjectProgram:
    handle: int
    name: str
    section: str

    @property
    def fd(self) -> int:
        return int(_lib().bpf_program__fd(self.handle))


class LoadError(LibbpfError):
    """bpf_object__load failed; ``verifier_logs`` maps program name to its log."""

    def __init__(self, err: int, verifier_logs: dict[str, str], messages: list[str]) -> None:
        detail = "; ".join(line for line in messages if line)[-400:]
        super().__init__(err, "loading the object", detail)
        self.verifier_logs = verifier_logs
        self.messages = messages


class BpfObject:
    """An opened (and then loaded) ``struct bpf_object``; close it, or use ``with``.

    Opened from bytes in memory (``bpf_object__open_mem``), never from a path, so what
    is loaded is exactly what the caller holds: the bytes whose digest it verified.
    ``name`` prefixes the internal map names (``<name>.rodata``), as a file name would.
    """

    def __init__(self, data: bytes, *, name: str) -> None:
        self.name = name
        self._log_buffers: dict[str, ctypes.Array[ctypes.c_char]] = {}
        # libbpf reads the ELF in place until load: the buffer lives as long as we do.
        self._image = ctypes.create_string_buffer(data, len(data))
        options = _OpenOptions(sz=ctypes.sizeof(_OpenOptions), object_name=self.name.encode())
        with _CapturedMessages() as messages:
            handle = _lib().bpf_object__open_mem(self._image, len(data), ctypes.byref(options))
            self._handle = _check_pointer(
                handle, f"opening {self.name}", "; ".join(messages)[-400:]
            )
        self.programs = {program.name: program for program in self._programs()}
        self.maps = {object_map.name: object_map for object_map in self._maps()}

    def _programs(self) -> Iterator[ObjectProgram]:
        lib, cursor = _lib(), None
        while cursor := lib.bpf_object__next_program(self._handle, cursor):
            yield ObjectProgram(
                handle=cursor,
                name=lib.bpf_program__name(cursor).decode(),
                section=lib.bpf_program__section_name(cursor).decode(),
            )

    def _maps(self) -> Iterator[ObjectMap]:
        lib, cursor = _lib(), None
        while cursor := lib.bpf_object__next_map(self._handle, cursor):
            yield ObjectMap(handle=cursor, name=lib.bpf_map__name(cursor).decode())

    def map_for_section(self, section: str) -> ObjectMap | None:
        """The internal map libbpf made for a data section (named '<prefix>.rodata')."""
        return next((m for name, m in self.maps.items() if name.endswith(section)), None)

    def load(self) -> None:
        """Load every program; on failure raise ``LoadError`` with each verifier log."""
        lib = _lib()
        for program in self.programs.values():
            buffer = ctypes.create_string_buffer(_VERIFIER_LOG_SIZE)
            self._log_buffers[program.name] = buffer
            _check(
                lib.bpf_program__set_log_buf(program.handle, buffer, _VERIFIER_LOG_SIZE),
                f"setting the log buffer of {program.name}",
            )
        with _CapturedMessages() as messages:
            result = lib.bpf_object__load(self._handle)
        if result < 0:
            logs = {
                name: buffer.value.decode(errors="replace")
                for name, buffer in self._log_buffers.items()
                if buffer.value
            }
            raise LoadError(-result, logs, messages)

    def close(self) -> None:
        if self._handle:
            _lib().bpf_object__close(self._handle)
            self._handle = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# -------------------------------------------------------------------- pins and fds


def pin(fd: int, path: Path) -> None:
    _check(_lib().bpf_obj_pin(fd, str(path).encode()), f"pinning at {path}")


def get_pinned(path: Path) -> int:
    """Open a pinned program, map or link; the caller owns the returned fd."""
    return _check(_lib().bpf_obj_get(str(path).encode()), f"opening pin {path}")


def program_fd_by_id(program_id: int) -> int:
    return _check(_lib().bpf_prog_get_fd_by_id(program_id), f"opening program id {program_id}")


# ------------------------------------------------------------------------ info


class _ProgramInfo(ctypes.Structure):
    # struct bpf_prog_info up to the statistics we read; the kernel fills what fits.
    _fields_ = (
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * _NAME_LEN),
        ("ifindex", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32),
        ("attach_btf_obj_id", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
    )


class _MapInfo(ctypes.Structure):
    _fields_ = (
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * _NAME_LEN),
        ("ifindex", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    )


class _LinkInfo(ctypes.Structure):
    # struct bpf_link_info: a header and a union that we decode per link type.
    _fields_ = (
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("union", ctypes.c_uint8 * 48),
    )


@dataclass(frozen=True)
class ProgramInfo:
    id: int
    type: str
    name: str
    tag: str
    run_count: int
    run_time_ns: int


@dataclass(frozen=True)
class MapInfo:
    id: int
    type: str
    name: str
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int = 0


@dataclass(frozen=True)
class LinkInfo:
    id: int
    type: str
    program_id: int
    ifindex: int | None = None
    cgroup_id: int | None = None
    attach_type: str | None = None

    @property
    def detached(self) -> bool:
        """A netdev or cgroup link whose target went away stays open but attached to nothing."""
        if self.type in {"xdp", "tcx"}:
            return not self.ifindex
        if self.type == "cgroup":
            return not self.cgroup_id
        return False


def _info(fd: int, info: ctypes.Structure, what: str) -> None:
    length = ctypes.c_uint32(ctypes.sizeof(info))
    _check(
        _lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(length)),
        f"reading {what} info",
    )


def program_info(fd: int) -> ProgramInfo:
    info = _ProgramInfo()
    _info(fd, info, "program")
    return ProgramInfo(
        id=info.id,
        type=kernel_enums.program_type_name(info.type),
        name=info.name.decode(errors="replace"),
        tag=bytes(info.tag).hex(),
        run_count=info.run_cnt,
        run_time_ns=info.run_time_ns,
    )


def map_info(fd: int) -> MapInfo:
    info = _MapInfo()
    _info(fd, info, "map")
    return MapInfo(
        id=info.id,
        type=kernel_enums.map_type_name(info.type),
        name=info.name.decode(errors="replace"),
        key_size=info.key_size,
        value_size=info.value_size,
        max_entries=info.max_entries,
        map_flags=info.map_flags,
    )


def link_info(fd: int) -> LinkInfo:
    info = _LinkInfo()
    _info(fd, info, "link")
    link_type = kernel_enums.link_type_name(info.type)
    union = bytes(info.union)
    if link_type in {"xdp"}:
        (ifindex,) = struct.unpack_from("=I", union)
        return LinkInfo(info.id, link_type, info.prog_id, ifindex=ifindex)
    if link_type == "tcx":
        ifindex, attach_type = struct.unpack_from("=II", union)
        return LinkInfo(
            info.id,
            link_type,
            info.prog_id,
            ifindex=ifindex,
            attach_type=kernel_enums.attach_type_name(attach_type),
        )
    if link_type == "cgroup":
        cgroup_id, attach_type = struct.unpack_from("=QI", union)
        return LinkInfo(
            info.id,
            link_type,
            info.prog_id,
            cgroup_id=cgroup_id,
            attach_type=kernel_enums.attach_type_name(attach_type),
        )
    return LinkInfo(info.id, link_type, info.prog_id)


_TRIVIAL_RETURN = {"xdp": 2, "sched_cls": -1, "cgroup_skb": 1}  # XDP_PASS, TC_ACT_UNSPEC, allow


def load_trivial_program(program_type: str) -> int:
    """Load ``r0 = <pass>; exit`` of a program type, for attach probes; return its fd."""
    instructions = ((_BPF_MOV_R0, _TRIVIAL_RETURN.get(program_type, 0)), (_BPF_EXIT, 0))
    return _check(
        _load_instructions(program_type, instructions, b"bpfleet_probe", None),
        f"loading a probe {program_type} program",
    )


# ------------------------------------------------------------------------ links


class _LinkCreateOptions(ctypes.Structure):
    # struct bpf_link_create_opts as of libbpf 1.1: 64 bytes, its largest union member
    # (kprobe_multi: flags, cnt and three pointers) 32. Later versions grew the union
    # (80 bytes in 1.5); we set only ``flags``, and libbpf takes the rest as zero.
    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("flags", ctypes.c_uint32),
        ("iter_info", ctypes.c_void_p),
        ("iter_info_len", ctypes.c_uint32),
        ("target_btf_id", ctypes.c_uint32),
        ("union", ctypes.c_uint8 * 32),
    )


class _LinkUpdateOptions(ctypes.Structure):
    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("flags", ctypes.c_uint32),
        ("old_prog_fd", ctypes.c_uint32),
    )


_BPF_F_REPLACE = 1 << 2


def link_create(program_fd: int, target: int, attach_type: str, flags: int = 0) -> int:
    """BPF_LINK_CREATE: ``target`` is an ifindex (xdp, tcx) or a cgroup fd."""
    options = _LinkCreateOptions(sz=ctypes.sizeof(_LinkCreateOptions), flags=flags)
    return _check(
        _lib().bpf_link_create(
            program_fd, target, kernel_enums.attach_type_id(attach_type), ctypes.byref(options)
        ),
        f"creating a {attach_type} link",
    )


def link_update(link_fd: int, new_program_fd: int, expected_program_fd: int | None) -> None:
    """Swap the program behind a link atomically; with an expected program, only if it is
    still the one attached (BPF_F_REPLACE), so a concurrent change is never overwritten."""
    options = _LinkUpdateOptions(sz=ctypes.sizeof(_LinkUpdateOptions))
    if expected_program_fd is not None:
        options.flags = _BPF_F_REPLACE
        options.old_prog_fd = expected_program_fd
    _check(
        _lib().bpf_link_update(link_fd, new_program_fd, ctypes.byref(options)),
        "replacing the program behind a link",
    )


def link_detach(link_fd: int) -> None:
    """Force-detach a link even if other fds or pins still hold it."""
    _check(_lib().bpf_link_detach(link_fd), "detaching a link")


class _PerfEventAttr(ctypes.Structure):
    # The first version of struct perf_event_attr (PERF_ATTR_SIZE_VER0): all we need.
    _fields_ = (
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
    )


_PERF_TYPE_TRACEPOINT = 2
_PERF_FLAG_FD_CLOEXEC = 1 << 3
_SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}


def attach_tracepoint(program_fd: int, tracefs: Path, category: str, name: str) -> int:
    """Attach to a tracepoint through a perf-event link; return the link fd.

    The link holds the perf event, so the event fd is closed here and a pinned link
    keeps the program attached after the agent exits.
    """
    id_file = tracefs / "events" / category / name / "id"
    try:
        event_id = int(id_file.read_text())
    except (OSError, ValueError) as error:
        raise LibbpfError(
            errno_codes.ENOENT, f"finding tracepoint {category}/{name}", str(error)
        ) from error
    attr = _PerfEventAttr(
        type=_PERF_TYPE_TRACEPOINT,
        size=ctypes.sizeof(_PerfEventAttr),
        config=event_id,
        sample_period=1,
        wakeup_events=1,
    )
    machine = os.uname().machine
    number = _SYS_PERF_EVENT_OPEN.get(machine)
    if number is None:
        raise LibbpfError(
            errno_codes.ENOSYS,
            f"opening perf event for tracepoint {category}/{name}",
            f"perf_event_open's number on {machine} is not known here",
        )
    # syscall() is variadic: every argument must be passed at full register width.
    pid, cpu, group = ctypes.c_long(-1), ctypes.c_long(0), ctypes.c_long(-1)
    event_fd = libc.syscall(
        number, ctypes.byref(attr), pid, cpu, group, ctypes.c_long(_PERF_FLAG_FD_CLOEXEC)
    )
    if event_fd < 0:
        raise LibbpfError(libc.errno(), f"opening perf event for tracepoint {category}/{name}")
    try:
        return link_create(program_fd, event_fd, "perf_event")
    finally:
        os.close(event_fd)


def attach_raw_tracepoint(program_fd: int, name: str) -> int:
    return _check(
        _lib().bpf_raw_tracepoint_open(name.encode(), program_fd),
        f"attaching raw tracepoint {name}",
    )


# ------------------------------------------------------------------------ queries


class _ProgQueryOptions(ctypes.Structure):
    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("query_flags", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("prog_ids", ctypes.POINTER(ctypes.c_uint32)),
        ("prog_cnt", ctypes.c_uint32),
        ("prog_attach_flags", ctypes.POINTER(ctypes.c_uint32)),
    )


class _XdpQueryOptions(ctypes.Structure):
    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("prog_id", ctypes.c_uint32),
        ("drv_prog_id", ctypes.c_uint32),
        ("hw_prog_id", ctypes.c_uint32),
        ("skb_prog_id", ctypes.c_uint32),
        ("attach_mode", ctypes.c_uint8),
    )


def query_programs(target: int, attach_type: str, capacity: int = 64) -> list[int]:
    """Program ids attached at a hook (ifindex for tcx, cgroup fd for cgroup hooks)."""
    ids = (ctypes.c_uint32 * capacity)()
    options = _ProgQueryOptions(
        sz=ctypes.sizeof(_ProgQueryOptions), prog_ids=ids, prog_cnt=capacity
    )
    _check(
        _lib().bpf_prog_query_opts(
            target, kernel_enums.attach_type_id(attach_type), ctypes.byref(options)
        ),
        f"querying {attach_type} programs",
    )
    return list(ids[: options.prog_cnt])


def query_xdp(ifindex: int) -> list[int]:
    """Program ids attached by XDP on an interface, in any mode."""
    options = _XdpQueryOptions(sz=ctypes.sizeof(_XdpQueryOptions))
    _check(_lib().bpf_xdp_query(ifindex, 0, ctypes.byref(options)), "querying xdp programs")
    found = (options.drv_prog_id, options.skb_prog_id, options.hw_prog_id, options.prog_id)
    return sorted({program_id for program_id in found if program_id})


def enable_run_time_stats() -> int:
    """BPF_ENABLE_STATS: statistics are collected for as long as the returned fd is open."""
    return _check(_lib().bpf_enable_stats(0), "enabling BPF run-time statistics")


# -------------------------------------------------------------------------- maps


def map_lookup(map_fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value for ``key``, or None if absent. Per-CPU maps need value_size * CPUs."""
    key_buffer = ctypes.create_string_buffer(key, len(key))
    value_buffer = ctypes.create_string_buffer(value_size)
    result = _lib().bpf_map_lookup_elem(map_fd, key_buffer, value_buffer)
    if result < 0:
        if -result == errno_codes.ENOENT:
            return None
        _check(result, "looking up a map element")
    return value_buffer.raw


def map_update(map_fd: int, key: bytes, value: bytes) -> None:
    key_buffer = ctypes.create_string_buffer(key, len(key))
    value_buffer = ctypes.create_string_buffer(value, len(value))
    _check(_lib().bpf_map_update_elem(map_fd, key_buffer, value_buffer, 0), "updating a map")


def map_delete(map_fd: int, key: bytes) -> bool:
    """Delete ``key``; False if it was not there."""
    key_buffer = ctypes.create_string_buffer(key, len(key))
    result = _lib().bpf_map_delete_elem(map_fd, key_buffer)
    if result < 0:
        if -result == errno_codes.ENOENT:
            return False
        _check(result, "deleting a map element")
    return True


_KERNEL_ENOTSUPP = 524  # the kernel-internal "not supported" some bpf() paths return


class _MapBatchOptions(ctypes.Structure):
    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    )


def map_update_batch(map_fd: int, keys: bytes, values: bytes, count: int) -> None:
    """BPF_MAP_UPDATE_BATCH: ``keys`` and ``values`` are ``count`` packed records each.

    One syscall for the lot where the map type supports batches; otherwise (EINVAL,
    ENOTSUPP) one update per element, so callers need not know which map types do.
    """
    if count == 0:
        return
    key_size, value_size = len(keys) // count, len(values) // count
    key_buffer = (ctypes.c_char * len(keys)).from_buffer_copy(keys)
    value_buffer = (ctypes.c_char * len(values)).from_buffer_copy(values)
    options = _MapBatchOptions(sz=ctypes.sizeof(_MapBatchOptions))
    done = ctypes.c_uint32(count)
    result = _lib().bpf_map_update_batch(
        map_fd, key_buffer, value_buffer, ctypes.byref(done), ctypes.byref(options)
    )
    if result >= 0:
        return
    if -result not in (errno_codes.EINVAL, errno_codes.EOPNOTSUPP, _KERNEL_ENOTSUPP):
        _check(result, f"updating a map in a batch (done {done.value} of {count})")
    # Element by element, addressing into the same buffers to avoid a copy per element.
    update = _lib().bpf_map_update_elem
    key_base = ctypes.addressof(key_buffer)
    value_base = ctypes.addressof(value_buffer)
    for index in range(count):
        result = update(map_fd, key_base + index * key_size, value_base + index * value_size, 0)
        if result < 0:
            _check(result, f"updating a map (element {index} of {count})")


def map_delete_batch(map_fd: int, keys: bytes, count: int) -> None:
    """BPF_MAP_DELETE_BATCH of ``count`` packed keys, element by element where the map
    type has no batches (or a key is already gone)."""
    if count == 0:
        return
    key_size = len(keys) // count
    key_buffer = (ctypes.c_char * len(keys)).from_buffer_copy(keys)
    options = _MapBatchOptions(sz=ctypes.sizeof(_MapBatchOptions))
    done = ctypes.c_uint32(count)
    result = _lib().bpf_map_delete_batch(
        map_fd, key_buffer, ctypes.byref(done), ctypes.byref(options)
    )
    if result >= 0:
        return
    if -result not in (
        errno_codes.EINVAL,
        errno_codes.EOPNOTSUPP,
        _KERNEL_ENOTSUPP,
        errno_codes.ENOENT,
    ):
        _check(result, f"deleting from a map in a batch (done {done.value} of {count})")
    delete = _lib().bpf_map_delete_elem
    key_base = ctypes.addressof(key_buffer)
    for index in range(done.value if -result == errno_codes.ENOENT else 0, count):
        result = delete(map_fd, key_base + index * key_size)
        if result < 0 and -result != errno_codes.ENOENT:
            _check(result, f"deleting from a map (element {index} of {count})")


def map_items(
    map_fd: int, key_size: int, value_size: int, *, batch: int = 1024
) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of a hash-like map: BPF_MAP_LOOKUP_BATCH, a batch per syscall,
    or key by key where the map type has no batches. Per-CPU maps need value_size *
    CPUs (each CPU's value 8-byte aligned)."""
    lib = _lib()
    token_in = ctypes.create_string_buffer(max(key_size, 8))
    token_out = ctypes.create_string_buffer(max(key_size, 8))
    first = True
    while True:
        keys = ctypes.create_string_buffer(key_size * batch)
        values = ctypes.create_string_buffer(value_size * batch)
        count = ctypes.c_uint32(batch)
        options = _MapBatchOptions(sz=ctypes.sizeof(_MapBatchOptions))
        result = lib.bpf_map_lookup_batch(
            map_fd, None if first else token_in, token_out, keys, values,
            ctypes.byref(count), ctypes.byref(options),
        )  # fmt: skip
        if result < 0 and -result == errno_codes.ENOSPC:
            batch *= 4  # one bucket holds more than a batch
            continue
        if result < 0 and -result in (errno_codes.EINVAL, errno_codes.EOPNOTSUPP, _KERNEL_ENOTSUPP):
            if first:
                yield from _items_one_by_one(map_fd, key_size, value_size)
                return
            _check(result, "reading a map in batches")
        if result < 0 and -result != errno_codes.ENOENT:
            _check(result, "reading a map in batches")
        raw_keys, raw_values = keys.raw, values.raw
        for index in range(count.value):
            yield (
                raw_keys[index * key_size : (index + 1) * key_size],
                raw_values[index * value_size : (index + 1) * value_size],
            )
        if result < 0:  # ENOENT: that was the last batch
            return
        ctypes.memmove(token_in, token_out, len(token_out))
        first = False


def _items_one_by_one(map_fd: int, key_size: int, value_size: int) -> Iterator[tuple[bytes, bytes]]:
    for key in list(map_keys(map_fd, key_size)):
        value = map_lookup(map_fd, key, value_size)
        if value is not None:
            yield key, value


class _MapCreateOptions(ctypes.Structure):
    # struct bpf_map_create_opts as of libbpf 1.1.
    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("btf_fd", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
        ("numa_node", ctypes.c_uint32),
        ("map_ifindex", ctypes.c_uint32),
    )


def map_create(
    map_type: str,
    name: str,
    key_size: int,
    value_size: int,
    max_entries: int,
    *,
    flags: int = 0,
    inner_map_fd: int | None = None,
) -> int:
    """BPF_MAP_CREATE; return the new map's fd (owned by the caller)."""
    options = _MapCreateOptions(sz=ctypes.sizeof(_MapCreateOptions), map_flags=flags)
    if inner_map_fd is not None:
        options.inner_map_fd = inner_map_fd
    return _check(
        _lib().bpf_map_create(
            kernel_enums.map_type_id(map_type),
            name[: _NAME_LEN - 1].encode(),
            key_size,
            value_size,
            max_entries,
            ctypes.byref(options),
        ),
        f"creating a {map_type} map ({max_entries} entries)",
    )


def map_fd_by_id(map_id: int) -> int:
    return _check(_lib().bpf_map_get_fd_by_id(map_id), f"opening map id {map_id}")


class _TestRunOptions(ctypes.Structure):
    # struct bpf_test_run_opts as of libbpf 1.1.
    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    )


@dataclass(frozen=True)
class TestRun:
    return_value: int
    nanoseconds_per_run: int


def prog_test_run(program_fd: int, packet: bytes, repeat: int = 1) -> TestRun:
    """BPF_PROG_TEST_RUN: run a program on ``packet`` ``repeat`` times in the kernel."""
    data = ctypes.create_string_buffer(packet, len(packet))
    options = _TestRunOptions(
        sz=ctypes.sizeof(_TestRunOptions),
        data_in=ctypes.cast(data, ctypes.c_void_p),
        data_size_in=len(packet),
        repeat=repeat,
    )
    _check(
        _lib().bpf_prog_test_run_opts(program_fd, ctypes.byref(options)), "test-running a program"
    )
    return TestRun(ctypes.c_int32(options.retval).value, options.duration)


def map_keys(map_fd: int, key_size: int, limit: int = 1 << 20) -> Iterator[bytes]:
    lib = _lib()
    current: ctypes.Array[ctypes.c_char] | None = None
    following = ctypes.create_string_buffer(key_size)
    for _ in range(limit):
        result = lib.bpf_map_get_next_key(map_fd, current, following)
        if result < 0:
            if -result == errno_codes.ENOENT:
                return
            _check(result, "walking map keys")
        yield following.raw
        current = ctypes.create_string_buffer(following.raw, key_size)


_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class RingBuffer:
    """Consume a BPF ring buffer map; ``on_sample`` gets each record's bytes."""

    def __init__(self, map_fd: int, on_sample: Callable[[bytes], None]) -> None:
        def deliver(_context: int | None, data: int | None, size: int) -> int:
            on_sample(ctypes.string_at(data, size) if data else b"")
            return 0

        self._callback = _SAMPLE_FN(deliver)
        handle = _lib().ring_buffer__new(
            map_fd, ctypes.cast(self._callback, ctypes.c_void_p), None, None
        )
        self._handle = _check_pointer(handle, "opening a ring buffer")

    def poll(self, timeout_ms: int) -> int:
        """Deliver what is ready (waiting up to ``timeout_ms``); return how many records."""
        return _check(_lib().ring_buffer__poll(self._handle, timeout_ms), "polling a ring buffer")

    def close(self) -> None:
        if self._handle:
            _lib().ring_buffer__free(self._handle)
            self._handle = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
