"""Agent pieces that need no kernel: pin names, mount tables, verifier verdicts, ABI sizes."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bpfleet_agent import libbpf, mounts, pins


@pytest.mark.parametrize(
    ("map_name", "pin_name"),
    [
        ("proto_stats", "proto_stats"),
        ("xdp_coun.rodata", "rodata"),
        ("xdp_coun.bss", "bss"),
        (".rodata.str1.1", "rodata_str1_1"),
        (".rodata.cst16", "rodata_cst16"),
        ("xdp_coun.kconfig", "kconfig"),
    ],
)
def test_map_pin_names_keep_the_whole_section_name(map_name: str, pin_name: str) -> None:
    assert pins.map_pin_name(map_name) == pin_name


def test_mountinfo_paths_are_fully_unescaped() -> None:
    line = (
        "36 25 0:32 / /mnt/with\\040space\\011tab\\134back\\012nl rw,relatime shared:1 - "
        "bpf my\\040bpf rw\n"
    )
    (mount,) = mounts.parse_mountinfo(line)
    assert mount.target == Path("/mnt/with space\ttab\\back\nnl")
    assert mount.source == "my bpf"
    assert mount.fstype == "bpf"


# Verifier logs of ``call helper; exit`` probes, as this kernel writes them.
ACCEPTED_THEN_ARGUMENTS = """0: R1=ctx() R10=fp0
0: (85) call bpf_map_lookup_elem#1
R1 type=ctx expected=map_ptr
processed 1 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0
"""
ACCEPTED_THEN_EXIT = """0: R1=ctx() R10=fp0
0: (85) call bpf_ktime_get_ns#5       ; R0=scalar()
1: (95) exit
At program exit the register R0 has unknown scalar value should have been in [0, 1]
"""
REFUSED = {
    "wrong type": "program of this type cannot use helper bpf_xdp_adjust_head#44",
    "sleeps": "helper call might sleep in a non-sleepable prog",
    "probe": "helper call is not allowed in probe",
    "gpl": "cannot call GPL-restricted function from non-GPL compatible program",
    "unsupported": "func bpf_get_func_ip#173 not supported for program type 5",
    "unknown": "invalid func unknown#999",
}


@pytest.mark.parametrize("why", sorted(REFUSED))
def test_refusals_of_the_call_mean_unavailable(why: str) -> None:
    log = f"0: R1=ctx() R10=fp0\n0: (85) call x#1\n{REFUSED[why]}\nprocessed 1 insns\n"
    assert not libbpf.helper_accepted(log)


def test_only_complaints_after_the_call_mean_available() -> None:
    assert libbpf.helper_accepted(ACCEPTED_THEN_ARGUMENTS)
    assert libbpf.helper_accepted(ACCEPTED_THEN_EXIT)
    assert not libbpf.helper_accepted("")  # refused before the verifier ran
    assert not libbpf.helper_accepted("0: R1=ctx() R10=fp0\n0: (85) call x#1\n")


# Every ctypes mirror of a C structure in libbpf.py: libbpf's option structures (its
# headers) and the kernel's info structures (the UAPI headers), with where each lives.
MIRRORS: dict[type[ctypes.Structure], tuple[str, str]] = {
    libbpf._ProgLoadOptions: ("bpf/bpf.h", "bpf_prog_load_opts"),
    libbpf._OpenOptions: ("bpf/libbpf.h", "bpf_object_open_opts"),
    libbpf._LinkCreateOptions: ("bpf/bpf.h", "bpf_link_create_opts"),
    libbpf._LinkUpdateOptions: ("bpf/bpf.h", "bpf_link_update_opts"),
    libbpf._ProgQueryOptions: ("bpf/bpf.h", "bpf_prog_query_opts"),
    libbpf._XdpQueryOptions: ("bpf/libbpf.h", "bpf_xdp_query_opts"),
    libbpf._MapBatchOptions: ("bpf/bpf.h", "bpf_map_batch_opts"),
    libbpf._MapCreateOptions: ("bpf/bpf.h", "bpf_map_create_opts"),
    libbpf._TestRunOptions: ("bpf/bpf.h", "bpf_test_run_opts"),
    libbpf._ProgramInfo: ("linux/bpf.h", "bpf_prog_info"),
    libbpf._MapInfo: ("linux/bpf.h", "bpf_map_info"),
    libbpf._LinkInfo: ("linux/bpf.h", "bpf_link_info"),
    libbpf._PerfEventAttr: ("linux/perf_event.h", "perf_event_attr"),
}
# The kernel's structures: the kernel fills as much as it and we both know, so their
# length is a matter between the mirror and the running kernel, not the headers.
KERNEL_STRUCTS = {libbpf._ProgramInfo, libbpf._MapInfo, libbpf._LinkInfo, libbpf._PerfEventAttr}
# Our fields that stand for an anonymous union: the C member that starts it. Fields
# named ``_...`` stand for unnamed padding, and the ``flags`` words for bitfields:
# neither has a name in C to check against.
UNION_STARTS = {
    (libbpf._LinkCreateOptions, "union"): "perf_event",
    (libbpf._LinkInfo, "union"): "raw_tracepoint",
}
UNNAMED = {(libbpf._PerfEventAttr, "flags"), (libbpf._ProgramInfo, "flags")}


def layout_assertions(
    mirror: type[ctypes.Structure], mirrors: dict[type[ctypes.Structure], tuple[str, str]]
) -> list[str]:
    """C static assertions of the rule in libbpf.py's docstring, for one mirror: each
    declared field where the header puts it, and an options structure no longer than
    the header's (a newer header's may be longer: the ``sz`` we pass says what we know)."""
    _, struct_name = mirrors[mirror]
    checks = []
    if mirror not in KERNEL_STRUCTS:
        checks.append(f"sizeof(struct {struct_name}) >= {ctypes.sizeof(mirror)}")
    for name, *_ in mirror._fields_:
        field = getattr(mirror, name)
        if name.startswith("_") or (mirror, name) in UNNAMED:
            continue
        member = UNION_STARTS.get((mirror, name), name)
        checks.append(f"offsetof(struct {struct_name}, {member}) == {field.offset}")
        if member == name:
            checks.append(f"sizeof(((struct {struct_name} *)0)->{name}) == {field.size}")
    where = mirror.__name__
    # The message is marked, as compilers quote it in other ways.
    return [f'_Static_assert({check}, "{{{{{where}: {check}}}}}");' for check in checks]


def failed_assertions(
    tmp_path: Path, mirrors: dict[type[ctypes.Structure], tuple[str, str]]
) -> list[str]:
    """Compile the mirrors' assertions against the installed headers; what failed."""
    compiler = shutil.which("clang") or shutil.which("cc")
    if compiler is None or not Path("/usr/include/bpf/bpf.h").exists():
        pytest.skip("needs a C compiler and libbpf-dev's headers")
    headers = sorted({header for header, _ in mirrors.values()})
    source = tmp_path / "layouts.c"
    source.write_text(
        "#include <stddef.h>\n"
        + "".join(f"#include <{header}>\n" for header in headers)
        + "\n".join(line for mirror in mirrors for line in layout_assertions(mirror, mirrors))
        + "\n"
    )
    result = subprocess.run(
        [compiler, "-fsyntax-only", str(source)], capture_output=True, text=True, check=False
    )
    # Each message shows twice: in the error, and in the source line quoted under it.
    failed = list(dict.fromkeys(re.findall(r"\{\{(.*?)\}\}", result.stderr)))
    assert result.returncode == 0 or failed, result.stderr
    return failed


def test_every_mirror_fits_the_installed_headers_by_the_sz_rule(tmp_path: Path) -> None:
    assert failed_assertions(tmp_path, MIRRORS) == []


def test_the_rule_refuses_a_field_out_of_place_and_a_longer_struct(tmp_path: Path) -> None:
    class Moved(ctypes.Structure):  # old_prog_fd is at 12, after flags
        _fields_ = (("sz", ctypes.c_size_t), ("old_prog_fd", ctypes.c_uint32))

    class Longer(ctypes.Structure):  # longer than any libbpf's bpf_link_update_opts
        _fields_ = (("sz", ctypes.c_size_t), ("_future", ctypes.c_uint8 * 256))

    update_opts = ("bpf/bpf.h", "bpf_link_update_opts")
    failed = failed_assertions(tmp_path, {Moved: update_opts, Longer: update_opts})
    assert failed == [
        "Moved: offsetof(struct bpf_link_update_opts, old_prog_fd) == 8",
        "Longer: sizeof(struct bpf_link_update_opts) >= 264",
    ]


def test_unknown_architecture_is_enosys_not_a_key_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = tmp_path / "events" / "sched" / "sched_process_exec"
    event.mkdir(parents=True)
    (event / "id").write_text("1\n")
    real = os.uname()
    machine = os.uname_result((*real[:4], "pdp11"))
    monkeypatch.setattr(os, "uname", lambda: machine)
    with pytest.raises(libbpf.LibbpfError) as raised:
        libbpf.attach_tracepoint(-1, tmp_path, "sched", "sched_process_exec")
    assert raised.value.errno == errno.ENOSYS
