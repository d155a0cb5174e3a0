"""Agent pieces that need no kernel: pin names, mount tables, verifier verdicts, ABI sizes."""

from __future__ import annotations

import ctypes
import errno
import os
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


SIZES_PROGRAM = """
#include <stdio.h>
#include <bpf/bpf.h>
int main(void) {
    printf("%zu %zu %zu\\n", sizeof(struct bpf_link_create_opts),
           sizeof(struct bpf_prog_load_opts), sizeof(struct bpf_link_update_opts));
    return 0;
}
"""


def test_option_structs_match_the_installed_libbpf_headers(tmp_path: Path) -> None:
    compiler = shutil.which("cc") or shutil.which("clang")
    if compiler is None or not Path("/usr/include/bpf/bpf.h").exists():
        pytest.skip("needs a C compiler and libbpf-dev's headers")
    source, binary = tmp_path / "sizes.c", tmp_path / "sizes"
    source.write_text(SIZES_PROGRAM)
    subprocess.run([compiler, "-o", str(binary), str(source)], check=True)
    output = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    link_create, prog_load, link_update = (int(size) for size in output.split())
    assert ctypes.sizeof(libbpf._LinkCreateOptions) == link_create == 64
    assert ctypes.sizeof(libbpf._ProgLoadOptions) == prog_load
    assert ctypes.sizeof(libbpf._LinkUpdateOptions) == link_update


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
