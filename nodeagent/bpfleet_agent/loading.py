"""Open -> configure -> load -> pin -> attach, and every undo, in one place.

Called only with artifacts that passed signature and compatibility checks (see
``preparing``). Each public function leaves the kernel either in the new state or in
the state it found: a failure part-way undoes what that call did.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bpfleet_agent import libbpf, pins
from bpfleet_agent.reconciling import (
    Hook,
    LinkAction,
    LinkStep,
    ObservedLink,
    ObservedProgram,
    plan_links,
    stale_versions,
)
from bpfleet_core import fitting
from bpfleet_core.manifests import AttachKind, Manifest
from bpfleet_core.resources import ConfigValue

log = logging.getLogger(__name__)

_XDP_FLAGS = {"auto": 0, "generic": 1 << 1, "native": 1 << 2}
_TCX_ATTACH = {"ingress": "tcx_ingress", "egress": "tcx_egress"}
_CGROUP_ATTACH = {"ingress": "cgroup_inet_ingress", "egress": "cgroup_inet_egress"}
_DATA_SECTIONS = (".rodata", ".data", ".bss", ".kconfig")
_VERIFIER_EXCERPT_LINES = 25
_HASH_LIKE_MAPS = {"hash", "lru_hash", "percpu_hash", "lru_percpu_hash", "lpm_trie"}
_MAX_COUNTED_ENTRIES = 100_000
_NEXT_SUFFIX = "~next"
_KERNEL_ENOTSUPP = 524  # the kernel-internal "not supported" some bpf() paths return


class LoadFailure(Exception):
    def __init__(self, message: str, verifier_log: str | None = None) -> None:
        super().__init__(message)
        self.verifier_log = verifier_log


class AttachFailure(Exception):
    pass


@dataclass(frozen=True)
class Kernel:
    """Where this agent's kernel-facing filesystems are."""

    pin_root: Path
    tracefs: Path
    cgroup_root: Path


@dataclass(frozen=True)
class Desired:
    """One program, verified and checked, ready for the kernel."""

    name: str
    object_path: Path
    manifest: Manifest
    config: Mapping[str, ConfigValue]
    hooks: tuple[Hook, ...]
    tag: str


# ------------------------------------------------------------------- observation


def _pinned_info_id(path: Path, read: str) -> int | None:
    try:
        fd = libbpf.get_pinned(path)
    except libbpf.LibbpfError:
        return None
    try:
        return libbpf.program_info(fd).id if read == "program" else libbpf.map_info(fd).id
    finally:
        os.close(fd)


def _observe_link(path: Path) -> ObservedLink | None:
    try:
        fd = libbpf.get_pinned(path)
    except libbpf.LibbpfError:
        return None
    try:
        info = libbpf.link_info(fd)
    finally:
        os.close(fd)
    return ObservedLink(path.name, info.id, info.program_id, alive=not info.detached)


def observe(kernel: Kernel) -> dict[str, ObservedProgram]:
    """Everything pinned under the agent's root, as the kernel reports it now."""
    found: dict[str, ObservedProgram] = {}
    if not kernel.pin_root.is_dir():
        return found
    for program_dir in sorted(p for p in kernel.pin_root.iterdir() if p.is_dir()):
        program = pins.ProgramPins(program_dir)
        versions: dict[str, dict[str, int]] = {}
        for version_dir in sorted(p for p in program_dir.iterdir() if pins.is_tag(p.name)):
            progs = version_dir / pins.PROGS
            entries = sorted(progs.iterdir()) if progs.is_dir() else []
            versions[version_dir.name] = {
                entry.name: program_id
                for entry in entries
                if (program_id := _pinned_info_id(entry, "program")) is not None
            }
        links: dict[str, ObservedLink] = {}
        if program.links.is_dir():
            for link_path in sorted(program.links.iterdir()):
                if link_path.name.endswith(_NEXT_SUFFIX):
                    continue  # an interrupted replacement; its successor will be recreated
                if (link := _observe_link(link_path)) is not None:
                    links[link.name] = link
        found[program_dir.name] = ObservedProgram(program_dir.name, versions, links)
    return found


# ------------------------------------------------------------------------ loading


def _configure(
    obj: libbpf.BpfObject, manifest: Manifest, config: Mapping[str, ConfigValue]
) -> None:
    if not config:
        return
    rodata = obj.map_for_section(".rodata")
    if rodata is None:
        raise LoadFailure(f"{manifest.name} has no .rodata section to configure")
    data = bytearray(rodata.initial_value())
    for name, value in config.items():
        variable = manifest.config_variable(name)
        assert variable is not None  # validated before
        data[variable.offset : variable.offset + variable.size] = fitting.encode_config(
            variable, value
        )
    rodata.set_initial_value(bytes(data))


def _reuse_maps(obj: libbpf.BpfObject, program: pins.ProgramPins, tag: str | None) -> list[int]:
    """Hand the running version's maps to the new one where their shapes match, so
    counters and state carry across an upgrade. Returns fds to close after load."""
    if tag is None:
        return []
    fds: list[int] = []
    for name, object_map in obj.maps.items():
        if name.endswith(_DATA_SECTIONS):
            continue  # each version has its own code constants
        path = program.map(tag, name)
        if not path.exists():
            continue
        fd = libbpf.get_pinned(path)
        info = libbpf.map_info(fd)
        same_shape = (info.type, info.key_size, info.value_size, info.max_entries) == (
            object_map.type,
            object_map.key_size,
            object_map.value_size,
            object_map.max_entries,
        )
        if same_shape:
            object_map.reuse_fd(fd)
            fds.append(fd)
        else:
            os.close(fd)
    return fds


def _verifier_excerpt(logs: Mapping[str, str]) -> str | None:
    if not logs:
        return None
    excerpts = []
    for name, text in logs.items():
        lines = [line for line in text.splitlines() if line.strip()]
        excerpts.append(f"-- {name} --\n" + "\n".join(lines[-_VERIFIER_EXCERPT_LINES:]))
    return "\n".join(excerpts)


def _remove_tree(path: Path) -> None:
    """Unpin everything under ``path``; bpffs objects go away when unreferenced."""
    if path.exists():
        shutil.rmtree(path)


@dataclass
class _Loaded:
    tag: str
    program_fds: dict[str, int]
    program_ids: dict[str, int]
    fresh: bool = False
    _owned: list[int] = field(default_factory=list)

    def close(self) -> None:
        for fd in [*self.program_fds.values(), *self._owned]:
            with contextlib.suppress(OSError):
                os.close(fd)


def _open_pinned_version(program: pins.ProgramPins, desired: Desired) -> _Loaded | None:
    """Adopt an already pinned, complete copy of this exact version."""
    entries = [entry.name for entry in desired.manifest.entry_points]
    fds: dict[str, int] = {}
    try:
        for entry in entries:
            fds[entry] = libbpf.get_pinned(program.program(desired.tag, entry))
    except libbpf.LibbpfError:
        for fd in fds.values():
            os.close(fd)
        return None
    ids = {entry: libbpf.program_info(fd).id for entry, fd in fds.items()}
    return _Loaded(desired.tag, fds, ids)


def _load_version(program: pins.ProgramPins, desired: Desired, running_tag: str | None) -> _Loaded:
    version_dir = program.version(desired.tag)
    _remove_tree(version_dir)  # an incomplete earlier attempt
    try:
        obj = libbpf.BpfObject(desired.object_path)
    except libbpf.LibbpfError as error:
        raise LoadFailure(f"cannot open {desired.object_path.name}: {error}") from error
    reused: list[int] = []
    try:
        _configure(obj, desired.manifest, desired.config)
        reused = _reuse_maps(obj, program, running_tag)
        try:
            obj.load()
        except libbpf.LoadError as error:
            raise LoadFailure(str(error), _verifier_excerpt(error.verifier_logs)) from error
        (version_dir / pins.PROGS).mkdir(parents=True)
        (version_dir / pins.MAPS).mkdir()
        for name, object_map in obj.maps.items():
            libbpf.pin(object_map.fd, program.map(desired.tag, name))
        fds: dict[str, int] = {}
        for name, object_program in obj.programs.items():
            libbpf.pin(object_program.fd, program.program(desired.tag, name))
            fds[name] = os.dup(object_program.fd)
        ids = {name: libbpf.program_info(fd).id for name, fd in fds.items()}
        return _Loaded(desired.tag, fds, ids, fresh=True)
    except (LoadFailure, libbpf.LibbpfError, OSError, ValueError) as error:
        _remove_tree(version_dir)
        if isinstance(error, LoadFailure):
            raise
        raise LoadFailure(f"loading {desired.manifest.name}: {error}") from error
    finally:
        for fd in reused:
            os.close(fd)
        obj.close()


# ------------------------------------------------------------------------ linking


def _ifindex(interface: str) -> int:
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        raise AttachFailure(f"interface {interface} does not exist on this node") from None


def _attach(kernel: Kernel, hook: Hook, program_fd: int) -> int:
    """Create the link for one hook; return its fd."""
    match hook.kind:
        case AttachKind.XDP:
            return libbpf.link_create(
                program_fd, _ifindex(hook.target), "xdp", _XDP_FLAGS[hook.xdp_mode]
            )
        case AttachKind.TC:
            return libbpf.link_create(
                program_fd, _ifindex(hook.target), _TCX_ATTACH[str(hook.direction)]
            )
        case AttachKind.CGROUP_SKB:
            path = kernel.cgroup_root / hook.target.lstrip("/")
            try:
                cgroup_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                raise AttachFailure(f"cgroup {hook.target} does not exist on this node") from None
            try:
                return libbpf.link_create(
                    program_fd, cgroup_fd, _CGROUP_ATTACH[str(hook.direction)]
                )
            finally:
                os.close(cgroup_fd)
        case AttachKind.TRACEPOINT:
            category, _, name = hook.target.partition("/")
            return libbpf.attach_tracepoint(program_fd, kernel.tracefs, category, name)
        case AttachKind.RAW_TRACEPOINT:
            return libbpf.attach_raw_tracepoint(program_fd, hook.target)
        case _:
            raise AttachFailure(f"this agent cannot attach {hook.kind.value} programs")


def _attach_pinned(kernel: Kernel, hook: Hook, program_fd: int, path: Path) -> None:
    try:
        link_fd = _attach(kernel, hook, program_fd)
    except libbpf.LibbpfError as error:
        raise AttachFailure(f"attaching {hook.entry_point} ({hook.describe()}): {error}") from error
    try:
        libbpf.pin(link_fd, path)
    except libbpf.LibbpfError:
        libbpf.link_detach(link_fd)
        raise
    finally:
        os.close(link_fd)


def detach_pinned_link(path: Path) -> None:
    """Detach a pinned link for certain (even if someone holds an fd) and unpin it."""
    try:
        fd = libbpf.get_pinned(path)
    except libbpf.LibbpfError:
        fd = -1
    try:
        if fd >= 0:
            try:
                libbpf.link_detach(fd)
            except libbpf.LibbpfError as error:
                # Perf-event links cannot be force-detached; unpinning releases them.
                if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, _KERNEL_ENOTSUPP):
                    raise
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _swap_program(path: Path, new_fd: int, expected_fd: int | None) -> None:
    link_fd = libbpf.get_pinned(path)
    try:
        libbpf.link_update(link_fd, new_fd, expected_fd)
    finally:
        os.close(link_fd)


@dataclass
class _Undo:
    """What a link transaction did, to reverse it if a later step fails."""

    created: list[Path] = field(default_factory=list)
    swapped: list[tuple[Path, int, int]] = field(default_factory=list)  # path, old fd, new fd

    def run(self) -> None:
        for path, old_fd, new_fd in reversed(self.swapped):
            with contextlib.suppress(libbpf.LibbpfError, OSError):
                _swap_program(path, old_fd, new_fd)
        for path in reversed(self.created):
            with contextlib.suppress(libbpf.LibbpfError, OSError):
                detach_pinned_link(path)
        for _, old_fd, _ in self.swapped:
            with contextlib.suppress(OSError):
                os.close(old_fd)


def _apply_links(
    kernel: Kernel, program: pins.ProgramPins, steps: list[LinkStep], loaded: _Loaded
) -> None:
    """Carry the link steps out all-or-nothing."""
    program.links.mkdir(parents=True, exist_ok=True)
    undo = _Undo()
    try:
        for step in steps:
            path = program.link(step.link_name)
            hook = step.hook
            match step.action:
                case LinkAction.CREATE | LinkAction.RECREATE:
                    assert hook is not None
                    if step.action == LinkAction.RECREATE:
                        detach_pinned_link(path)
                    _attach_pinned(kernel, hook, loaded.program_fds[hook.entry_point], path)
                    undo.created.append(path)
                case LinkAction.UPDATE:
                    assert hook is not None
                    new_fd = loaded.program_fds[hook.entry_point]
                    old_fd = _program_fd_behind(path)
                    try:
                        _swap_program(path, new_fd, old_fd)
                    except libbpf.LibbpfError as error:
                        os.close(old_fd)
                        raise AttachFailure(f"swapping {hook.describe()}: {error}") from error
                    undo.swapped.append((path, old_fd, new_fd))
                case LinkAction.REPLACE:
                    assert hook is not None
                    successor = path.with_name(path.name + _NEXT_SUFFIX)
                    detach_pinned_link(successor)
                    _attach_pinned(kernel, hook, loaded.program_fds[hook.entry_point], successor)
                    undo.created.append(successor)
                case LinkAction.KEEP | LinkAction.REMOVE:
                    pass
    except (AttachFailure, libbpf.LibbpfError, OSError) as error:
        undo.run()
        if isinstance(error, AttachFailure):
            raise
        raise AttachFailure(str(error)) from error
    # Commit: everything new is in place; now retire what it replaces.
    for _, old_fd, _ in undo.swapped:
        os.close(old_fd)
    for step in steps:
        path = program.link(step.link_name)
        if step.action == LinkAction.REPLACE:
            detach_pinned_link(path)
            path.with_name(path.name + _NEXT_SUFFIX).rename(path)
        elif step.action == LinkAction.REMOVE:
            detach_pinned_link(path)


def _program_fd_behind(link_path: Path) -> int:
    link_fd = libbpf.get_pinned(link_path)
    try:
        program_id = libbpf.link_info(link_fd).program_id
    finally:
        os.close(link_fd)
    return libbpf.program_fd_by_id(program_id)


# ------------------------------------------------------------------------ public


def apply(kernel: Kernel, desired: Desired, observed: ObservedProgram | None) -> dict[str, int]:
    """Make one program exactly ``desired``; return its kernel program ids by entry point.

    Raises ``LoadFailure`` or ``AttachFailure``; in both cases whatever ran before
    keeps running, unchanged.
    """
    program = pins.for_program(kernel.pin_root, desired.name)
    observed = observed or ObservedProgram(desired.name)
    running_tag = observed.current_tag()
    loaded = _open_pinned_version(program, desired) if desired.tag in observed.versions else None
    loaded = loaded or _load_version(program, desired, running_tag)
    try:
        steps = plan_links(desired.hooks, observed.links, loaded.program_ids)
        try:
            _apply_links(kernel, program, steps, loaded)
        except AttachFailure:
            if not observed.versions:
                _remove_tree(program.root)  # nothing ran before: leave no trace
            elif loaded.fresh and desired.tag != running_tag:
                _remove_tree(program.version(desired.tag))
            raise
        for tag in stale_versions(observed, keep=desired.tag):
            _remove_tree(program.version(tag))
        return loaded.program_ids
    finally:
        loaded.close()


def remove(kernel: Kernel, name: str) -> None:
    """Detach every link of a program and unpin all of it."""
    program = pins.for_program(kernel.pin_root, name)
    if program.links.is_dir():
        for link_path in sorted(program.links.iterdir()):
            detach_pinned_link(link_path)
    _remove_tree(program.root)


# ------------------------------------------------------------------------ reporting


@dataclass(frozen=True)
class MapSummary:
    name: str
    map_id: int
    type: str
    max_entries: int
    entries: int | None


@dataclass(frozen=True)
class Unmanaged:
    hook: str
    program_id: int
    program_name: str


def program_stats(kernel: Kernel, name: str, tag: str) -> dict[str, libbpf.ProgramInfo]:
    program = pins.for_program(kernel.pin_root, name)
    stats: dict[str, libbpf.ProgramInfo] = {}
    progs = program.version(tag) / pins.PROGS
    for entry in sorted(progs.iterdir()) if progs.is_dir() else []:
        fd = libbpf.get_pinned(entry)
        try:
            stats[entry.name] = libbpf.program_info(fd)
        finally:
            os.close(fd)
    return stats


def map_summaries(kernel: Kernel, name: str, tag: str) -> list[MapSummary]:
    program = pins.for_program(kernel.pin_root, name)
    maps_dir = program.version(tag) / pins.MAPS
    summaries = []
    for path in sorted(maps_dir.iterdir()) if maps_dir.is_dir() else []:
        fd = libbpf.get_pinned(path)
        try:
            info = libbpf.map_info(fd)
            entries = None
            if info.type in _HASH_LIKE_MAPS:
                entries = sum(1 for _ in libbpf.map_keys(fd, info.key_size, _MAX_COUNTED_ENTRIES))
        finally:
            os.close(fd)
        summaries.append(MapSummary(path.name, info.id, info.type, info.max_entries, entries))
    return summaries


def _hook_program_ids(kernel: Kernel, hook: Hook) -> list[int]:
    match hook.kind:
        case AttachKind.XDP:
            return libbpf.query_xdp(_ifindex(hook.target))
        case AttachKind.TC:
            return libbpf.query_programs(_ifindex(hook.target), _TCX_ATTACH[str(hook.direction)])
        case AttachKind.CGROUP_SKB:
            fd = os.open(kernel.cgroup_root / hook.target.lstrip("/"), os.O_RDONLY | os.O_DIRECTORY)
            try:
                return libbpf.query_programs(fd, _CGROUP_ATTACH[str(hook.direction)])
            finally:
                os.close(fd)
        case _:
            return []  # tracepoints can't be listed per hook


def unmanaged_programs(
    kernel: Kernel, hooks: Iterator[Hook] | tuple[Hook, ...], ours: set[int]
) -> list[Unmanaged]:
    """Programs on our hooks that this agent did not put there."""
    found: list[Unmanaged] = []
    for hook in hooks:
        try:
            foreign = [pid for pid in _hook_program_ids(kernel, hook) if pid not in ours]
        except (libbpf.LibbpfError, AttachFailure, OSError):
            continue
        for program_id in foreign:
            name = "?"
            with contextlib.suppress(libbpf.LibbpfError):
                fd = libbpf.program_fd_by_id(program_id)
                try:
                    name = libbpf.program_info(fd).name
                finally:
                    os.close(fd)
            found.append(Unmanaged(hook.describe(), program_id, name))
    return found


def read_counter_map(path: Path) -> dict[int, tuple[int, ...]]:
    """Sum a per-CPU array of u64 tuples over CPUs; keyed by index. For tests and the CLI."""
    fd = libbpf.get_pinned(path)
    try:
        info = libbpf.map_info(fd)
        cpus = libbpf.num_possible_cpus() if info.type.startswith("percpu") else 1
        stride = (info.value_size + 7) // 8 * 8
        fields = info.value_size // 8
        totals: dict[int, tuple[int, ...]] = {}
        for index in range(info.max_entries):
            raw = libbpf.map_lookup(fd, struct.pack("=I", index), stride * cpus)
            if raw is None:
                continue
            sums = [0] * fields
            for cpu in range(cpus):
                values = struct.unpack_from(f"={fields}Q", raw, cpu * stride)
                sums = [a + b for a, b in zip(sums, values, strict=True)]
            if any(sums):
                totals[index] = tuple(sums)
        return totals
    finally:
        os.close(fd)
