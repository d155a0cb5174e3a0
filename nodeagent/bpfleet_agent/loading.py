"""Open -> configure -> load -> pin -> attach, and every undo, in one place.

Called only with artifacts that passed signature and compatibility checks (see
``preparing``), and given the very bytes that were verified: nothing is read from the
artifact directory here. ``apply`` leaves the kernel either in the new state or in the
state it found: a failure part-way undoes what that call did, and never removes a pin it
did not make. ``observe`` finishes a link replacement an earlier agent was interrupted
in; ``remove`` and the readers are best-effort.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bpfleet_agent import libbpf, libc, pins
from bpfleet_agent.reconciling import (
    Hook,
    LinkAction,
    LinkStep,
    ObservedLink,
    ObservedProgram,
    plan_links,
    stale_versions,
    xdp_mode_of,
)
from bpfleet_core import fitting
from bpfleet_core.manifests import AttachKind, Manifest
from bpfleet_core.resources import ConfigValue

log = logging.getLogger(__name__)

_XDP_FLAGS = {"auto": 0, "generic": 1 << 1, "native": 1 << 2}
_TCX_ATTACH = {"ingress": "tcx_ingress", "egress": "tcx_egress"}
_CGROUP_ATTACH = {"ingress": "cgroup_inet_ingress", "egress": "cgroup_inet_egress"}
_VERIFIER_EXCERPT_LINES = 25
_HASH_LIKE_MAPS = {"hash", "lru_hash", "percpu_hash", "lru_percpu_hash", "lpm_trie"}
_MAX_COUNTED_ENTRIES = 100_000
_KERNEL_ENOTSUPP = 524  # the kernel-internal "not supported" some bpf() paths return


class NotLoaded(Exception):
    """The object did not load (the verifier's excerpt, when it refused); nothing changed."""

    def __init__(self, message: str, verifier_log: str | None = None) -> None:
        super().__init__(message)
        self.verifier_log = verifier_log


class NotAttached(Exception):
    """A hook could not be attached, swapped or detached; every step taken is undone."""


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
    # The object exactly as verified; loading opens these bytes, never the file again.
    object_bytes: bytes = field(repr=False)
    manifest: Manifest
    config: Mapping[str, ConfigValue]
    hooks: tuple[Hook, ...]
    tag: str


# ------------------------------------------------------------------- observation


def _pinned_info_id(path: Path) -> int | None:
    try:
        fd = libbpf.get_pinned(path)
    except libbpf.LibbpfError:
        return None
    try:
        return libbpf.program_info(fd).id
    except libbpf.LibbpfError:
        return None  # unreadable: as good as not pinned
    finally:
        os.close(fd)


def _observe_link(path: Path) -> ObservedLink | None:
    try:
        fd = libbpf.get_pinned(path)
    except libbpf.LibbpfError:
        return None
    try:
        info = libbpf.link_info(fd)
    except libbpf.LibbpfError:
        return None  # unreadable: as good as not pinned
    finally:
        os.close(fd)
    return ObservedLink(path.name, info.id, info.program_id, alive=not info.detached)


def _finish_replacements(program: pins.ProgramPins) -> None:
    """Settle link replacements an agent was interrupted in.

    A replacement attaches ``<name>~next``, detaches ``<name>``, then renames the first
    to the second. Stopped after the detach, the successor takes its name; stopped
    before it, the old link still runs and the successor goes (the next plan replaces
    again). Either way exactly one link per hook is left, and it is one observe sees.
    """
    try:
        successors = sorted(program.links.glob(f"*{pins.NEXT_SUFFIX}"))
    except OSError:
        return
    for successor in successors:
        primary = successor.with_name(successor.name.removesuffix(pins.NEXT_SUFFIX))
        try:
            if primary.exists():
                detach_pinned_link(successor)
            else:
                libc.rename_noreplace(successor, primary)
        except OSError as error:
            log.warning("cannot settle the interrupted replacement %s: %s", successor, error)


def _observe_program(program: pins.ProgramPins) -> ObservedProgram:
    versions: dict[str, dict[str, int]] = {}
    for version_dir in sorted(p for p in program.root.iterdir() if pins.is_tag(p.name)):
        progs = version_dir / pins.PROGS
        entries = sorted(progs.iterdir()) if progs.is_dir() else []
        versions[version_dir.name] = {
            entry.name: program_id
            for entry in entries
            if (program_id := _pinned_info_id(entry)) is not None
        }
    links: dict[str, ObservedLink] = {}
    if program.links.is_dir():
        for link_path in sorted(program.links.iterdir()):
            if (link := _observe_link(link_path)) is not None:
                links[link.name] = link
    return ObservedProgram(program.name, versions, links)


def observe(kernel: Kernel) -> dict[str, ObservedProgram]:
    """Every program this agent manages under its pin root, as the kernel reports it
    now. Directories without the ownership marker are someone else's: not listed."""
    found: dict[str, ObservedProgram] = {}
    if not kernel.pin_root.is_dir():
        return found
    for program_dir in sorted(p for p in kernel.pin_root.iterdir() if p.is_dir()):
        if not pins.is_owned(program_dir):
            continue
        program = pins.ProgramPins(program_dir)
        _finish_replacements(program)
        try:
            found[program.name] = _observe_program(program)
        except OSError as error:  # removed while we looked
            log.warning("cannot observe %s: %s", program_dir, error)
    return found


# ------------------------------------------------------------------------ loading


def _configure(
    obj: libbpf.BpfObject, manifest: Manifest, config: Mapping[str, ConfigValue]
) -> None:
    if not config:
        return
    rodata = obj.map_for_section(".rodata")
    if rodata is None:
        raise NotLoaded(f"{manifest.name} has no .rodata section to configure")
    data = bytearray(rodata.initial_value())
    for name, value in config.items():
        variable = manifest.config_variable(name)
        assert variable is not None  # validated before
        data[variable.offset : variable.offset + variable.size] = fitting.encode_config(
            variable, value
        )
    rodata.set_initial_value(bytes(data))


def _reuse_maps(
    obj: libbpf.BpfObject,
    program: pins.ProgramPins,
    tag: str | None,
    fds: contextlib.ExitStack,
) -> None:
    """Hand the running version's maps to the new one where their shapes match, so
    counters and state carry across an upgrade. The fds close with ``fds``."""
    if tag is None:
        return
    for name, object_map in obj.maps.items():
        if "." in name:
            continue  # libbpf's own maps (.rodata, .data, .bss, .kconfig...): per version
        try:
            fd = libbpf.get_pinned(program.map(tag, name))
        except libbpf.LibbpfError as error:
            if error.errno == errno.ENOENT:
                continue  # a map the running version does not have
            raise
        fds.callback(os.close, fd)
        info = libbpf.map_info(fd)
        pinned = (info.type, info.key_size, info.value_size, info.max_entries, info.map_flags)
        if pinned == (
            object_map.type,
            object_map.key_size,
            object_map.value_size,
            object_map.max_entries,
            object_map.map_flags,
        ):
            object_map.reuse_fd(fd)


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
    program_fds: dict[str, int] = field(default_factory=dict)
    program_ids: dict[str, int] = field(default_factory=dict)
    fresh: bool = False
    # A fresh load whose tag was pinned already (incomplete, possibly running) swaps
    # those pins aside to here; they are dropped on success and restored on failure.
    displaced: Path | None = None

    def close(self) -> None:
        for fd in self.program_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.program_fds = {}


def _open_pinned_version(program: pins.ProgramPins, desired: Desired) -> _Loaded | None:
    """Adopt an already pinned, complete copy of this exact version."""
    loaded = _Loaded(desired.tag)
    try:
        for entry in desired.manifest.entry_points:
            fd = libbpf.get_pinned(program.program(desired.tag, entry.name))
            loaded.program_fds[entry.name] = fd
            loaded.program_ids[entry.name] = libbpf.program_info(fd).id
    except libbpf.LibbpfError:
        loaded.close()
        return None
    return loaded


def _move_into_place(program: pins.ProgramPins, staging: Path, loaded: _Loaded) -> None:
    """Give the staged pins their tag's name. Pins already there may be what runs now
    (adoption found them incomplete), so they are exchanged, never deleted first."""
    version = program.version(loaded.tag)
    if version.exists():
        libc.rename_exchange(staging, version)
        loaded.displaced = staging
    else:
        libc.rename_noreplace(staging, version)


def _discard(program: pins.ProgramPins, loaded: _Loaded) -> None:
    """Undo a fresh load: its pins go, and any it displaced come back."""
    version = program.version(loaded.tag)
    try:
        if loaded.displaced is not None:
            libc.rename_exchange(loaded.displaced, version)
            _remove_tree(loaded.displaced)
        else:
            _remove_tree(version)
    except OSError as error:
        log.warning("cannot remove the failed load of %s: %s", version, error)


def _load_version(program: pins.ProgramPins, desired: Desired, running_tag: str | None) -> _Loaded:
    """Load the verified bytes, pin programs and maps under a staging name, then move
    them to ``<tag>``."""
    staging = program.staging(desired.tag)
    loaded = _Loaded(desired.tag, fresh=True)
    with contextlib.ExitStack() as resources:
        try:
            _remove_tree(staging)  # left by an agent stopped mid-load; nothing refers to it
            try:
                obj = libbpf.BpfObject(desired.object_bytes, name=desired.manifest.name)
            except libbpf.LibbpfError as error:
                raise NotLoaded(
                    f"cannot open {desired.manifest.object.filename}: {error}"
                ) from error
            resources.callback(obj.close)
            _configure(obj, desired.manifest, desired.config)
            _reuse_maps(obj, program, running_tag, resources)
            try:
                obj.load()
            except libbpf.LoadError as error:
                raise NotLoaded(str(error), _verifier_excerpt(error.verifier_logs)) from error
            (staging / pins.PROGS).mkdir(parents=True)
            (staging / pins.MAPS).mkdir()
            for name, object_map in obj.maps.items():
                libbpf.pin(object_map.fd, staging / pins.MAPS / pins.map_pin_name(name))
            for name, object_program in obj.programs.items():
                libbpf.pin(object_program.fd, staging / pins.PROGS / name)
                loaded.program_fds[name] = os.dup(object_program.fd)
                loaded.program_ids[name] = libbpf.program_info(object_program.fd).id
            _move_into_place(program, staging, loaded)
        except Exception as error:
            loaded.close()
            with contextlib.suppress(OSError):
                _remove_tree(staging)
            if isinstance(error, NotLoaded):
                raise
            raise NotLoaded(f"loading {desired.manifest.name}: {error}") from error
    return loaded


# ------------------------------------------------------------------------ linking


def _ifindex(interface: str) -> int:
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        raise NotAttached(f"interface {interface} does not exist on this node") from None


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
                raise NotAttached(f"cgroup {hook.target} does not exist on this node") from None
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
            raise NotAttached(f"this agent cannot attach {hook.kind.value} programs")


def _attach_pinned(kernel: Kernel, hook: Hook, program_fd: int, path: Path) -> None:
    try:
        link_fd = _attach(kernel, hook, program_fd)
    except libbpf.LibbpfError as error:
        raise NotAttached(f"attaching {hook.entry_point} ({hook.describe()}): {error}") from error
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


def _successor(path: Path) -> Path:
    return path.with_name(path.name + pins.NEXT_SUFFIX)


def _attempt(what: str, action: Callable[..., None], *args: Any) -> None:
    try:
        action(*args)
    except Exception as error:
        log.warning("undo: %s failed: %s", what, error)


@dataclass
class _Undo:
    """What a link transaction did, to reverse it if a later step fails."""

    created: list[Path] = field(default_factory=list)
    swapped: list[tuple[Path, int, int]] = field(default_factory=list)  # path, old fd, new fd
    # Links detached to make room on an exclusive hook: (old hook, pin, old program fd).
    detached: list[tuple[Hook, Path, int]] = field(default_factory=list)

    def run(self, kernel: Kernel) -> None:
        """Reverse every step, each independently: one failing must not stop the rest."""
        for path, old_fd, new_fd in reversed(self.swapped):
            _attempt(f"swapping {path} back", _swap_program, path, old_fd, new_fd)
        for path in reversed(self.created):
            _attempt(f"detaching {path}", detach_pinned_link, path)
        for hook, path, program_fd in reversed(self.detached):
            _attempt(f"attaching {path} again", _attach_pinned, kernel, hook, program_fd, path)
        self.release()

    def release(self) -> None:
        for fd in [old for _, old, _ in self.swapped] + [fd for _, _, fd in self.detached]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.swapped, self.detached = [], []


def _take_step(
    kernel: Kernel, program: pins.ProgramPins, step: LinkStep, loaded: _Loaded, undo: _Undo
) -> None:
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
                raise NotAttached(f"swapping {hook.describe()}: {error}") from error
            undo.swapped.append((path, old_fd, new_fd))
        case LinkAction.REATTACH:
            assert hook is not None
            assert step.previous is not None
            previous = program.link(step.previous)
            old_fd = _program_fd_behind(previous)
            try:
                detach_pinned_link(previous)
            except BaseException:
                os.close(old_fd)
                raise
            old_hook = replace(hook, xdp_mode=xdp_mode_of(step.previous))
            undo.detached.append((old_hook, previous, old_fd))
            _attach_pinned(kernel, hook, loaded.program_fds[hook.entry_point], path)
            undo.created.append(path)
        case LinkAction.REPLACE:
            assert hook is not None
            successor = _successor(path)
            detach_pinned_link(successor)
            _attach_pinned(kernel, hook, loaded.program_fds[hook.entry_point], successor)
            undo.created.append(successor)
        case LinkAction.KEEP | LinkAction.REMOVE:
            pass


def _retire(program: pins.ProgramPins, steps: list[LinkStep]) -> None:
    """After the commit point: drop what the new links replace. Best-effort, since what
    runs is already right; whatever is left over, the next reconcile (and
    ``_finish_replacements``) clears."""
    for step in steps:
        path = program.link(step.link_name)
        try:
            if step.action == LinkAction.REPLACE:
                detach_pinned_link(path)
                libc.rename_noreplace(_successor(path), path)
            elif step.action == LinkAction.REMOVE:
                detach_pinned_link(path)
        except OSError as error:
            log.warning("cannot retire %s: %s", path, error)


def _apply_links(
    kernel: Kernel, program: pins.ProgramPins, steps: list[LinkStep], loaded: _Loaded
) -> None:
    """Carry the link steps out all-or-nothing."""
    program.links.mkdir(parents=True, exist_ok=True)
    undo = _Undo()
    try:
        for step in steps:
            _take_step(kernel, program, step, loaded, undo)
    except BaseException as error:
        undo.run(kernel)
        if isinstance(error, NotAttached) or not isinstance(error, Exception):
            raise
        raise NotAttached(f"attaching {program.name}: {error}") from error
    undo.release()
    _retire(program, steps)


def _program_fd_behind(link_path: Path) -> int:
    link_fd = libbpf.get_pinned(link_path)
    try:
        program_id = libbpf.link_info(link_fd).program_id
    finally:
        os.close(link_fd)
    return libbpf.program_fd_by_id(program_id)


# ------------------------------------------------------------------------ public


def _claim(program: pins.ProgramPins) -> bool:
    """Make sure the program directory is ours; return whether this call created it."""
    program.root.parent.mkdir(parents=True, exist_ok=True)
    try:
        program.root.mkdir()
    except FileExistsError:
        if pins.is_owned(program.root):
            return False
        if any(program.root.iterdir()):
            raise NotLoaded(
                f"{program.root} exists and is not managed by bpfleet (it has no "
                f"{pins.MARKER} marker); remove it or give the program another name"
            ) from None
        program.marker.mkdir()
        return False
    program.marker.mkdir()
    return True


def _remove_if_empty(directory: Path, *, keep: frozenset[str] = frozenset()) -> None:
    """Remove a directory this call made, if nothing but ``keep`` is in it."""
    with contextlib.suppress(OSError):
        if {entry.name for entry in directory.iterdir()} <= keep:
            for name in keep:
                with contextlib.suppress(FileNotFoundError):
                    (directory / name).rmdir()
            directory.rmdir()


def apply(
    kernel: Kernel,
    desired: Desired,
    observed: ObservedProgram | None,
    *,
    before_links: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Make one program exactly ``desired``; return its kernel program ids by entry point.

    ``before_links(tag)`` runs once the version is loaded and pinned, before any link
    runs it: to fill its maps first (an exception there undoes the load like any other).
    Raises ``NotLoaded`` or ``NotAttached``; in both cases whatever ran before
    keeps running, unchanged, and only what this call created is removed.
    """
    program = pins.for_program(kernel.pin_root, desired.name)
    observed = observed or ObservedProgram(desired.name)
    created_root = _claim(program)
    links_existed = program.links.is_dir()
    loaded: _Loaded | None = None
    try:
        if desired.tag in observed.versions:
            loaded = _open_pinned_version(program, desired)
        if loaded is None:
            loaded = _load_version(program, desired, observed.current_tag())
        if before_links is not None:
            try:
                before_links(loaded.tag)
            except Exception as error:
                raise NotLoaded(f"preparing {desired.name}: {error}") from error
        steps = plan_links(desired.hooks, observed.links, loaded.program_ids)
        _apply_links(kernel, program, steps, loaded)
    except Exception as error:
        if loaded is not None:
            if loaded.fresh:
                _discard(program, loaded)
            loaded.close()
        if not links_existed:
            _remove_if_empty(program.links)
        if created_root:
            _remove_if_empty(program.root, keep=frozenset({pins.MARKER}))
        if isinstance(error, NotLoaded | NotAttached):
            raise
        raise NotAttached(f"applying {desired.name}: {error}") from error
    try:
        # Committed: what the links ran before goes, with the pins this load displaced
        # and any staging left by an agent stopped mid-load (nothing refers to those).
        for stale in sorted(program.root.glob(f"*{pins.STAGING_SUFFIX}")):
            _remove_tree(stale)
        for tag in stale_versions(observed, keep=desired.tag):
            _remove_tree(program.version(tag))
    except OSError as error:
        log.warning("cannot unpin the old versions of %s: %s", desired.name, error)
    finally:
        loaded.close()
    return loaded.program_ids


def remove(kernel: Kernel, name: str) -> None:
    """Detach every link of a program and unpin all of it; a directory without the
    ownership marker is someone else's and is left alone."""
    program = pins.for_program(kernel.pin_root, name)
    if not program.root.is_dir():
        return
    if not pins.is_owned(program.root):
        log.warning("not removing %s: it is not managed by bpfleet", program.root)
        return
    if program.links.is_dir():
        for link_path in sorted(program.links.iterdir()):
            detach_pinned_link(link_path)
    # The marker goes last, so a directory half removed is still recognised as ours.
    for entry in program.root.iterdir():
        if entry.name != pins.MARKER:
            _remove_tree(entry)
    _remove_if_empty(program.root, keep=frozenset({pins.MARKER}))


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
    """Run statistics per entry point; entries that cannot be read are left out."""
    progs = pins.for_program(kernel.pin_root, name).version(tag) / pins.PROGS
    stats: dict[str, libbpf.ProgramInfo] = {}
    try:
        entries = sorted(progs.iterdir())
    except OSError:
        return stats
    for entry in entries:
        try:
            fd = libbpf.get_pinned(entry)
        except libbpf.LibbpfError:
            continue
        try:
            stats[entry.name] = libbpf.program_info(fd)
        except libbpf.LibbpfError:
            continue
        finally:
            os.close(fd)
    return stats


def _count_entries(fd: int, info: libbpf.MapInfo) -> int | None:
    if info.type not in _HASH_LIKE_MAPS:
        return None
    try:
        return sum(1 for _ in libbpf.map_keys(fd, info.key_size, _MAX_COUNTED_ENTRIES))
    except libbpf.LibbpfError:
        return None


def map_summaries(kernel: Kernel, name: str, tag: str) -> list[MapSummary]:
    """One summary per pinned map; maps that cannot be read are left out."""
    maps_dir = pins.for_program(kernel.pin_root, name).version(tag) / pins.MAPS
    summaries: list[MapSummary] = []
    try:
        paths = sorted(maps_dir.iterdir())
    except OSError:
        return summaries
    for path in paths:
        try:
            fd = libbpf.get_pinned(path)
        except libbpf.LibbpfError:
            continue
        try:
            info = libbpf.map_info(fd)
            entries = _count_entries(fd, info)
        except libbpf.LibbpfError:
            continue
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
        except (libbpf.LibbpfError, NotAttached, OSError):
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
