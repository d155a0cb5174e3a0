"""The object analyser, on objects compiled here from small sources.

The key checks compare the analyser with LLVM's and bpftool's own reading of the same
object: helper calls per section with ``llvm-objdump -d``, code sections with
``llvm-objdump -h``, and map names with ``bpftool btf dump``.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from bpfleet_core import analysing, kernel_enums
from bpfleet_core.analysing import AnalysisError
from bpfleet_core.manifests import AttachKind, ConfigVariable, Manifest, MapSpec
from tests import bpfbuild

PRELUDE = """\
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
"""

CompileBpf = Callable[..., Path]


def _first_tool(*names: str) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


@pytest.fixture
def compile_bpf(tmp_path: Path) -> CompileBpf:
    """Compile a BPF C source (the prelude prepended) into ``tmp_path/<name>.bpf.o``."""

    def compile_source(source: str, name: str = "prog", *, debug_info: bool = True) -> Path:
        source_path = tmp_path / f"{name}.bpf.c"
        object_path = tmp_path / f"{name}.bpf.o"
        source_path.write_text(PRELUDE + textwrap.dedent(source))
        result = bpfbuild.compile_bpf(
            source_path, object_path, debug_info=debug_info, flags=["-D__TARGET_ARCH_x86"]
        )
        assert result.returncode == 0, f"clang failed:\n{result.stderr}"
        return object_path

    return compile_source


def manifest_of(path: Path) -> Manifest:
    return analysing.analyse(path, name="test-object", version="1.0.0")


# --- Calls, subprograms and agreement with llvm-objdump ------------------------------

CALLS_SOURCE = """
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u64);
} counts SEC(".maps");

/* static: reached through a relocation against the .text section symbol */
static __noinline int count(__u32 key)
{
    __u64 *value = bpf_map_lookup_elem(&counts, &key);
    return value ? (int)bpf_ktime_get_ns() : 0;
}

/* static calling static: a plain relative call inside .text */
static __noinline int nested(__u32 key)
{
    return count(key) + (int)bpf_get_prandom_u32();
}

/* global: reached through a relocation against its own symbol */
__noinline int shared(__u32 key)
{
    return nested(key) + (int)bpf_get_smp_processor_id();
}

/* a callback: its address is loaded and handed to bpf_loop */
static int tick(__u32 index, void *ctx)
{
    bpf_get_current_pid_tgid();
    return 0;
}

SEC("xdp")
int via_subprograms(struct xdp_md *ctx)
{
    return shared(ctx->ingress_ifindex) ? XDP_PASS : XDP_DROP;
}

SEC("tc")
int direct_only(struct __sk_buff *skb)
{
    return bpf_get_hash_recalc(skb) ? 0 : 1;
}

SEC("tracepoint/sched/sched_process_exec")
int with_callback(void *ctx)
{
    bpf_loop(2, tick, 0, 0);
    return 0;
}

SEC("kprobe/do_unlinkat")
int first_probe(void *ctx)
{
    return (int)bpf_get_current_uid_gid();
}

SEC("kprobe/do_unlinkat")
int second_probe(void *ctx)
{
    return (int)bpf_ktime_get_boot_ns();
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
"""


@pytest.fixture
def calls_object(compile_bpf: CompileBpf) -> Path:
    return compile_bpf(CALLS_SOURCE, "calls")


def llvm_objdump() -> str:
    tool = _first_tool("llvm-objdump", "llvm-objdump-14")
    if tool is None:
        pytest.skip("llvm-objdump is not installed (the llvm package provides it)")
    return tool


_DISASSEMBLY_HEADER = re.compile(r"^Disassembly of section (.+):$")
_DISASSEMBLED = re.compile(r"^\s*\d+:\t([0-9a-f ]+?)\s*\t(.*)$")


def objdump_helper_calls(path: Path) -> dict[str, tuple[int, ...]]:
    """Section -> helper ids of its direct helper calls, as ``llvm-objdump -d`` shows them."""
    listing = subprocess.run(
        [llvm_objdump(), "-d", str(path)], capture_output=True, text=True, check=True
    ).stdout
    calls: dict[str, list[int]] = {}
    section = None
    for line in listing.splitlines():
        if header := _DISASSEMBLY_HEADER.match(line):
            section = header.group(1)
            calls[section] = []
        elif (instruction := _DISASSEMBLED.match(line)) and section is not None:
            raw = bytes.fromhex(instruction.group(1))
            if raw[0] == 0x85 and raw[1] >> 4 == 0:  # call, src_reg 0: a helper
                helper_id = int.from_bytes(raw[4:8], "little", signed=True)
                # LLVM 14 prints "call 8", LLVM 19 "call 0x8".
                mnemonic, operand = instruction.group(2).split()
                assert (mnemonic, int(operand, 0)) == ("call", helper_id)
                calls[section].append(helper_id)
    return {name: tuple(ids) for name, ids in calls.items()}


def objdump_code_sections(path: Path) -> list[str]:
    """Names of the sections ``llvm-objdump -h`` types as TEXT."""
    listing = subprocess.run(
        [llvm_objdump(), "-h", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return [
        fields[1]
        for line in listing.splitlines()
        if (fields := line.split()) and fields[0].isdigit() and fields[-1] == "TEXT"
    ]


def bpftool_datasec_variables(path: Path, datasec: str) -> list[str]:
    """Names of the VARs in one DATASEC, from ``bpftool btf dump file PATH format raw``."""
    bpftool = shutil.which("bpftool")
    if bpftool is None:
        pytest.skip("bpftool is not installed (scripts/install-system-deps.sh installs it)")
    listing = subprocess.run(
        [bpftool, "btf", "dump", "file", str(path), "format", "raw"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names: list[str] = []
    inside = False
    for line in listing.splitlines():
        if line.startswith("["):
            inside = line.split()[1:3] == ["DATASEC", f"'{datasec}'"]
        elif inside and (variable := re.search(r"\(VAR '([^']+)'\)", line)):
            names.append(variable.group(1))
    return names


def test_helper_calls_per_section_agree_with_llvm_objdump(calls_object: Path) -> None:
    obj = analysing.read_elf(calls_object.read_bytes(), source=str(calls_object))
    ours = {
        section.name: analysing.helper_call_ids(section.data)
        for section in obj.sections
        if section.executable
    }
    theirs = objdump_helper_calls(calls_object)
    assert ours == theirs
    assert sum(len(ids) for ids in ours.values()) >= 9  # the comparison compared something


def test_code_sections_agree_with_llvm_objdump(calls_object: Path) -> None:
    obj = analysing.read_elf(calls_object.read_bytes(), source=str(calls_object))
    assert [s.name for s in obj.sections if s.executable] == objdump_code_sections(calls_object)


def test_entry_points_follow_sections_and_symbols(calls_object: Path) -> None:
    entry_points = manifest_of(calls_object).entry_points
    assert [(e.name, e.section) for e in entry_points] == [
        ("via_subprograms", "xdp"),
        ("direct_only", "tc"),
        ("with_callback", "tracepoint/sched/sched_process_exec"),
        ("first_probe", "kprobe/do_unlinkat"),
        ("second_probe", "kprobe/do_unlinkat"),
    ]
    shared = next(e for e in entry_points if e.name == "via_subprograms")
    assert (shared.program_type, shared.expected_attach_type) == ("xdp", "xdp")
    assert shared.attach_kind is AttachKind.XDP
    probe = next(e for e in entry_points if e.name == "first_probe")
    assert (probe.program_type, probe.attach_kind, probe.attach_target) == (
        "kprobe",
        AttachKind.KPROBE,
        "do_unlinkat",
    )


def test_subprogram_helpers_are_charged_to_the_calling_program(calls_object: Path) -> None:
    helpers_by_program = {e.name: set(e.helpers) for e in manifest_of(calls_object).entry_points}
    assert helpers_by_program == {
        # Only through shared() -> nested() -> count(): none of these are called directly.
        "via_subprograms": {
            "bpf_get_smp_processor_id",
            "bpf_get_prandom_u32",
            "bpf_map_lookup_elem",
            "bpf_ktime_get_ns",
        },
        "direct_only": {"bpf_get_hash_recalc"},
        # tick() runs inside bpf_loop, so the program needs what tick() calls.
        "with_callback": {"bpf_loop", "bpf_get_current_pid_tgid"},
        # Two programs in one section are told apart by their symbols' extents.
        "first_probe": {"bpf_get_current_uid_gid"},
        "second_probe": {"bpf_ktime_get_boot_ns"},
    }


def test_requirements_are_the_union_over_entry_points(calls_object: Path) -> None:
    requirements = manifest_of(calls_object).requirements
    assert requirements.program_types == ("kprobe", "sched_cls", "tracepoint", "xdp")
    assert requirements.attach_kinds == (
        AttachKind.KPROBE,
        AttachKind.TC,
        AttachKind.TRACEPOINT,
        AttachKind.XDP,
    )
    assert requirements.helpers["kprobe"] == ("bpf_get_current_uid_gid", "bpf_ktime_get_boot_ns")
    assert requirements.helpers["sched_cls"] == ("bpf_get_hash_recalc",)
    assert requirements.map_types == ("hash",)
    assert (requirements.kfuncs, requirements.kernel_btf, requirements.global_data) == (
        (),
        False,
        False,
    )


def test_manifest_binds_the_object(calls_object: Path) -> None:
    manifest = manifest_of(calls_object)
    data = calls_object.read_bytes()
    assert manifest.object.filename == "calls.bpf.o"
    assert manifest.object.sha256 == hashlib.sha256(data).hexdigest()
    assert manifest.object.size == len(data)
    assert (manifest.name, manifest.version, manifest.license) == (
        "test-object",
        "1.0.0",
        "Dual BSD/GPL",
    )


def test_helper_call_ids_decode_only_helper_calls() -> None:
    def instruction(opcode: int, src_reg: int, imm: int) -> bytes:
        return struct.pack("<BBhi", opcode, src_reg << 4, 0, imm)

    code = b"".join(
        [
            instruction(0x85, 0, 1),  # call bpf_map_lookup_elem
            instruction(0x85, 1, 3),  # call a BPF function
            instruction(0x85, 2, 77),  # call a kfunc by BTF id
            instruction(0x18, 0, 0x85),  # 64-bit load whose immediate looks like a call
            instruction(0x00, 0, 0),
            instruction(0x85, 0, 212),
        ]
    )
    assert analysing.helper_call_ids(code) == (1, 212)


def test_unknown_helper_ids_keep_their_number() -> None:
    assert kernel_enums.helper_name(1) == "bpf_map_lookup_elem"
    assert kernel_enums.helper_name(100_000) == "helper#100000"


# --- Maps ----------------------------------------------------------------------------

MAPS_SOURCE = """
struct flow { __u32 addr; __u16 port; __u16 proto; };

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 16);
} events SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u64);
} per_cpu SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 1024);
    __type(key, struct flow);
    __type(value, __u32);
} flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __uint(max_entries, 16);
    __uint(key_size, 4);
    __uint(value_size, 12);
} sized SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
} perf SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 2);
    __uint(key_size, 4);
    __array(values, int (void *));
} jumps SEC(".maps");

__u64 packets;                      /* .bss */
__u32 seed = 7;                     /* .data */
const volatile __u32 limit = 3;     /* .rodata */

SEC("xdp")
int use_maps(struct xdp_md *ctx)
{
    __u32 key = 0;
    __u64 *value = bpf_map_lookup_elem(&per_cpu, &key);
    packets += seed + limit;
    return value ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
"""


def test_maps_and_global_data(compile_bpf: CompileBpf) -> None:
    manifest = manifest_of(compile_bpf(MAPS_SOURCE, "maps"))
    # The order is the DATASEC's, then the sections': clang's choices, not the source's.
    assert sorted(manifest.maps, key=lambda spec: spec.name) == [
        MapSpec(name=".bss", type="array", key_size=4, value_size=8, max_entries=1),
        MapSpec(name=".data", type="array", key_size=4, value_size=4, max_entries=1),
        MapSpec(name=".rodata", type="array", key_size=4, value_size=4, max_entries=1),
        MapSpec(name="events", type="ringbuf", key_size=0, value_size=0, max_entries=1 << 16),
        MapSpec(name="flows", type="lru_hash", key_size=8, value_size=4, max_entries=1024),
        # libbpf sizes tail-call arrays and perf event arrays itself: 4-byte fds.
        MapSpec(name="jumps", type="prog_array", key_size=4, value_size=4, max_entries=2),
        MapSpec(name="per_cpu", type="percpu_array", key_size=4, value_size=8, max_entries=4),
        MapSpec(name="perf", type="perf_event_array", key_size=4, value_size=4, max_entries=0),
        MapSpec(name="sized", type="percpu_hash", key_size=4, value_size=12, max_entries=16),
    ]
    assert manifest.requirements.global_data
    assert manifest.requirements.map_types == (
        "array",
        "lru_hash",
        "percpu_array",
        "percpu_hash",
        "perf_event_array",
        "prog_array",
        "ringbuf",
    )


def test_map_names_agree_with_bpftool(compile_bpf: CompileBpf) -> None:
    path = compile_bpf(MAPS_SOURCE, "maps")
    btf_maps = [m.name for m in manifest_of(path).maps if not m.name.startswith(".")]
    assert btf_maps == bpftool_datasec_variables(path, ".maps")
    assert "limit" in bpftool_datasec_variables(path, ".rodata")


# --- Configuration variables ----------------------------------------------------------

CONFIG_SOURCE = """
enum mode { MODE_OFF, MODE_ON = 5 };

const volatile int threshold = -5;
const volatile __u64 big = 123456789012ULL;
const volatile _Bool enabled = 1;
const volatile char iface[16] = "eth0";
const volatile __u8 mac[6] = { 1, 2, 3, 4, 5, 6 };
const volatile enum mode mode = MODE_ON;
const volatile __s16 delta = -300;
const volatile __u32 zero;
static const volatile int hidden = 9;   /* static: libbpf's skeleton cannot set it */
const int folded = 4;                   /* not volatile: the compiler may fold it */

SEC("tc")
int read_config(struct __sk_buff *skb)
{
    if (!enabled || mode == MODE_OFF)
        return 0;
    return threshold + big + iface[0] + mac[5] + delta + zero + hidden + folded;
}

char LICENSE[] SEC("license") = "GPL";
"""


def test_config_variables_and_their_compiled_defaults(compile_bpf: CompileBpf) -> None:
    path = compile_bpf(CONFIG_SOURCE, "config")
    config = {variable.name: variable for variable in manifest_of(path).config}
    assert set(config) == {"threshold", "big", "enabled", "iface", "mac", "mode", "delta", "zero"}
    expected = {
        "threshold": ("int", 4, True, -5),
        "big": ("int", 8, False, 123456789012),
        "enabled": ("bool", 1, False, True),
        "iface": ("char_array", 16, False, "eth0"),
        "mac": ("other", 6, False, None),
        "mode": ("int", 4, False, 5),
        "delta": ("int", 2, True, -300),
        "zero": ("int", 4, False, 0),
    }
    for name, (kind, size, signed, default) in expected.items():
        variable = config[name]
        assert (variable.kind, variable.size, variable.signed, variable.default) == (
            kind,
            size,
            signed,
            default,
        ), name


def test_config_offsets_match_the_symbol_table(compile_bpf: CompileBpf) -> None:
    path = compile_bpf(CONFIG_SOURCE, "config")
    with path.open("rb") as stream:
        elf = ELFFile(stream)
        rodata_index = next(
            index for index, s in enumerate(elf.iter_sections()) if s.name == ".rodata"
        )
        offsets = {
            symbol.name: symbol["st_value"]
            for symbol in elf.get_section_by_name(".symtab").iter_symbols()
            if symbol["st_shndx"] == rodata_index
        }
    config: tuple[ConfigVariable, ...] = manifest_of(path).config
    assert {v.name: v.offset for v in config} == {v.name: offsets[v.name] for v in config}
    assert [v.offset for v in config] == sorted(v.offset for v in config)


# --- CO-RE, kfuncs and kernel BTF ----------------------------------------------------

CORE_SOURCE = """
#include <bpf/bpf_core_read.h>

struct task_struct { int pid; } __attribute__((preserve_access_index));

SEC("kprobe/do_exit")
int core_read(void *ctx)
{
    struct task_struct *task = (void *)bpf_get_current_task();
    return BPF_CORE_READ(task, pid);
}

char LICENSE[] SEC("license") = "GPL";
"""

PLAIN_SOURCE = """
SEC("xdp")
int plain(struct xdp_md *ctx)
{
    return ctx->data_end - ctx->data > 64 ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
"""

KFUNC_SOURCE = """
struct task_struct;
extern struct task_struct *bpf_task_acquire(struct task_struct *task) __ksym;
extern void bpf_task_release(struct task_struct *task) __ksym;

SEC("tp_btf/task_newtask")
int on_new_task(unsigned long long *ctx)
{
    struct task_struct *task = bpf_task_acquire((struct task_struct *)ctx[0]);
    if (task)
        bpf_task_release(task);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


def test_core_relocations_are_detected(compile_bpf: CompileBpf) -> None:
    core = compile_bpf(CORE_SOURCE, "core")
    plain = compile_bpf(PLAIN_SOURCE, "plain")
    assert analysing.has_core_relocations(analysing.read_elf(core.read_bytes(), source="core"))
    assert not analysing.has_core_relocations(
        analysing.read_elf(plain.read_bytes(), source="plain")
    )
    assert manifest_of(core).requirements.kernel_btf
    assert not manifest_of(plain).requirements.kernel_btf


def test_kfunc_calls_are_named_from_their_extern_symbols(compile_bpf: CompileBpf) -> None:
    manifest = manifest_of(compile_bpf(KFUNC_SOURCE, "kfunc"))
    (entry,) = manifest.entry_points
    assert entry.kfuncs == ("bpf_task_acquire", "bpf_task_release")
    assert entry.helpers == ()
    assert (entry.program_type, entry.expected_attach_type, entry.attach_target) == (
        "tracing",
        "trace_raw_tp",
        "task_newtask",
    )
    assert manifest.requirements.kfuncs == ("bpf_task_acquire", "bpf_task_release")
    assert manifest.requirements.kernel_btf  # kfuncs resolve against the kernel's BTF


# --- Refusals --------------------------------------------------------------------------


def analysis_error(path: Path) -> str:
    with pytest.raises(AnalysisError) as caught:
        manifest_of(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    return message


def test_garbage_is_not_an_elf_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.bpf.o"
    path.write_bytes(bytes(range(256)) * 4)
    assert "not an ELF file" in analysis_error(path)


def test_empty_file_is_not_an_elf_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.bpf.o"
    path.write_bytes(b"")
    assert "not an ELF file (0 bytes, too short)" in analysis_error(path)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    assert "cannot read" in analysis_error(tmp_path / "absent.bpf.o")


@pytest.mark.parametrize("keep", [20, 64, 300, 0.5, 0.9])
def test_truncated_objects_are_refused(calls_object: Path, tmp_path: Path, keep: float) -> None:
    data = calls_object.read_bytes()
    length = keep if isinstance(keep, int) else int(len(data) * keep)
    path = tmp_path / "truncated.bpf.o"
    path.write_bytes(data[:length])
    message = analysis_error(path)
    assert "not an ELF file" in message or "malformed" in message


def test_a_host_executable_is_not_a_bpf_object(tmp_path: Path) -> None:
    host_binary = Path("/bin/true")
    if not host_binary.exists():
        pytest.skip("/bin/true is missing")
    path = tmp_path / "true"
    shutil.copyfile(host_binary, path)
    message = analysis_error(path)
    assert "not a BPF object" in message
    assert "expected EM_BPF (247)" in message


def test_object_without_btf_is_refused(compile_bpf: CompileBpf) -> None:
    path = compile_bpf(PLAIN_SOURCE, "no_btf", debug_info=False)
    assert "no .BTF section" in analysis_error(path)


def test_unknown_section_is_named(compile_bpf: CompileBpf) -> None:
    path = compile_bpf(
        """
        SEC("tcx/ingress")
        int too_new(struct __sk_buff *skb) { return 0; }
        """,
        "tcx",
    )
    message = analysis_error(path)
    assert "'tcx/ingress'" in message
    assert "too_new" in message


def test_object_without_programs_is_refused(compile_bpf: CompileBpf) -> None:
    path = compile_bpf("int only_data = 1;\n", "data_only")
    assert "no programs" in analysis_error(path)
