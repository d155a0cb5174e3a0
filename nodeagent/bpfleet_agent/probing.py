"""Real feature probes: what this kernel can load and attach, found by trying.

Program and map types are probed with libbpf's probe loads, helpers with our own (see
``libbpf.probe_helper``). Attaching is probed by attaching trivial programs for real.
The whole probe runs in a child process with a throwaway network namespace, so the
node's interfaces never see a probe program.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bpfleet_agent import libbpf, libc, mounts
from bpfleet_core import btf, kernel_enums
from bpfleet_core.features import FeatureReport
from bpfleet_core.manifests import AttachKind

KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")
_PROBE_TIMEOUT = 120  # seconds; a full probe takes a few
_PROBE_TRACEPOINTS = (
    "sched/sched_process_exec",
    "sched/sched_process_fork",
    "syscalls/sys_enter_getpid",
)
_EVENT_SOURCES = Path("/sys/bus/event_source/devices")
# Program types whose helpers we do not probe: a bare ``call; exit`` of these types
# cannot load without an attach target (a BTF function, a struct_ops member, a hook),
# so the verifier never judges the call. The report leaves them out of ``helpers``, and
# the compatibility check takes that as "unknown", not "missing".
_UNPROBEABLE_HELPERS = {"tracing", "ext", "lsm", "struct_ops", "syscall", "netfilter"}


def _attempt(action: Callable[[], int]) -> bool:
    try:
        fd = action()
    except (libbpf.LibbpfError, OSError):
        return False
    os.close(fd)
    return True


def _link_with_trivial(program_type: str, attach: Callable[[int], int]) -> bool:
    try:
        program_fd = libbpf.load_trivial_program(program_type)
    except libbpf.LibbpfError:
        return False
    try:
        return _attempt(lambda: attach(program_fd))
    finally:
        os.close(program_fd)


def _probe_cgroup_attach(cgroup_root: Path) -> bool:
    directory = cgroup_root / f"bpfleet-probe-{uuid.uuid4().hex[:8]}"
    try:
        directory.mkdir()
    except OSError:
        return False
    try:
        cgroup_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return _link_with_trivial(
                "cgroup_skb", lambda fd: libbpf.link_create(fd, cgroup_fd, "cgroup_inet_ingress")
            )
        finally:
            os.close(cgroup_fd)
    finally:
        directory.rmdir()


def _probe_tracepoint_attach(tracefs: Path) -> bool:
    present = (t for t in _PROBE_TRACEPOINTS if (tracefs / "events" / t / "id").exists())
    target = next(present, None)
    if target is None:
        return False
    category, _, name = target.partition("/")
    return _link_with_trivial(
        "tracepoint", lambda fd: libbpf.attach_tracepoint(fd, tracefs, category, name)
    )


def _network_attach_probes() -> dict[AttachKind, bool]:
    """Inside the probe's own network namespace, ``lo`` is ours alone to attach to."""
    loopback = socket.if_nametoindex("lo")
    return {
        AttachKind.XDP: _link_with_trivial(
            "xdp", lambda fd: libbpf.link_create(fd, loopback, "xdp")
        ),
        AttachKind.TC: _link_with_trivial(
            "sched_cls", lambda fd: libbpf.link_create(fd, loopback, "tcx_ingress")
        ),
    }


def _enter_new_network_namespace() -> None:
    libc.unshare(libc.CLONE_NEWNET)


def attach_kinds(
    program_types: dict[str, bool], tracefs: Path, cgroup_root: Path
) -> dict[AttachKind, bool]:
    kinds = _network_attach_probes()
    kinds[AttachKind.CGROUP_SKB] = _probe_cgroup_attach(cgroup_root)
    kinds[AttachKind.TRACEPOINT] = _probe_tracepoint_attach(tracefs)
    kinds[AttachKind.RAW_TRACEPOINT] = _link_with_trivial(
        "raw_tracepoint", lambda fd: libbpf.attach_raw_tracepoint(fd, "sched_process_exec")
    )
    # kprobes and uprobes attach through their perf PMU (or legacy tracefs events); a
    # kernel without either loads kprobe programs that can never run.
    kinds[AttachKind.KPROBE] = program_types.get("kprobe", False) and (
        (_EVENT_SOURCES / "kprobe").exists() or (tracefs / "kprobe_events").exists()
    )
    kinds[AttachKind.UPROBE] = program_types.get("kprobe", False) and (
        (_EVENT_SOURCES / "uprobe").exists() or (tracefs / "uprobe_events").exists()
    )
    # Trampoline-based kinds: the program type probe already loads against a BTF target.
    kinds[AttachKind.FENTRY] = program_types.get("tracing", False)
    kinds[AttachKind.FEXIT] = program_types.get("tracing", False)
    kinds[AttachKind.LSM] = program_types.get("lsm", False)
    return kinds


def helpers_by_program_type(program_types: dict[str, bool]) -> dict[str, tuple[str, ...]]:
    report: dict[str, tuple[str, ...]] = {}
    for program_type, available in program_types.items():
        if not available or program_type in _UNPROBEABLE_HELPERS:
            continue
        report[program_type] = tuple(
            name
            for helper_id, name in enumerate(kernel_enums.HELPER_NAMES)
            if helper_id and libbpf.probe_helper(program_type, helper_id)
        )
    return report


def _jit_enabled() -> bool:
    try:
        return Path("/proc/sys/net/core/bpf_jit_enable").read_text().strip() != "0"
    except OSError:
        return False


def _stats_available() -> bool:
    return _attempt(libbpf.enable_run_time_stats)


def _kfuncs() -> tuple[str, ...]:
    if not KERNEL_BTF.exists():
        return ()
    return tuple(sorted(btf.kfunc_names(btf.load_btf(KERNEL_BTF))))


def probe_here(node: str, pin_root: Path, tracefs: Path, cgroup_root: Path) -> FeatureReport:
    """Probe from this process; run it where attaching to ``lo`` disturbs nothing."""
    program_types = {
        name: libbpf.probe_program_type(name) for name in kernel_enums.PROGRAM_TYPE_NAMES[1:]
    }
    map_types = {name: libbpf.probe_map_type(name) for name in kernel_enums.MAP_TYPE_NAMES[1:]}
    return FeatureReport(
        node=node,
        kernel_release=platform.release(),
        arch=platform.machine(),
        probed_at=datetime.now(UTC),
        libbpf_version=libbpf.version(),
        kernel_btf=KERNEL_BTF.exists(),
        jit_enabled=_jit_enabled(),
        bpffs=any(m.fstype == "bpf" and pin_root.is_relative_to(m.target) for m in mounts.mounts()),
        bpf_stats=_stats_available(),
        global_data=map_types.get("array", False) and program_types.get("socket_filter", False),
        program_types=program_types,
        map_types=map_types,
        attach_kinds=attach_kinds(program_types, tracefs, cgroup_root),
        helpers=helpers_by_program_type(program_types),
        kfuncs=_kfuncs(),
    )


class ProbeError(RuntimeError):
    pass


def probe(node: str, pin_root: Path, tracefs: Path, cgroup_root: Path) -> FeatureReport:
    """Probe in a child process with a network namespace of its own.

    The namespace keeps attach probes off the node's interfaces; the process keeps the
    kernel BTF parsed for kfuncs (tens of MB) out of a long-running agent's memory.
    """
    command = [
        sys.executable,
        "-m",
        "bpfleet_agent.probing",
        node,
        str(pin_root),
        str(tracefs),
        str(cgroup_root),
    ]
    try:
        result = subprocess.run(
            command,
            preexec_fn=_enter_new_network_namespace,
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise ProbeError(f"feature probe did not finish within {_PROBE_TIMEOUT} s") from error
    except (OSError, subprocess.SubprocessError) as error:
        # e.g. no permission to create a network namespace for the probe
        raise ProbeError(f"cannot start the feature probe: {error}") from error
    if result.returncode != 0:
        raise ProbeError(f"feature probe failed: {result.stderr.strip()[-500:]}")
    return FeatureReport.model_validate_json(result.stdout)


if __name__ == "__main__":
    node_name, pin_root_arg, tracefs_arg, cgroup_arg = sys.argv[1:5]
    report = probe_here(node_name, Path(pin_root_arg), Path(tracefs_arg), Path(cgroup_arg))
    print(report.to_json())
