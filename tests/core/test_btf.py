"""The BTF parser: every kind from hand-built blobs, errors, and agreement with bpftool."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from bpfleet_core import btf, kernel_enums
from bpfleet_core.btf import (
    Btf,
    BtfArray,
    BtfConst,
    BtfDatasec,
    BtfDeclTag,
    BtfEnum,
    BtfEnum64,
    BtfEnumValue,
    BtfError,
    BtfFloat,
    BtfFunc,
    BtfFuncProto,
    BtfFwd,
    BtfInt,
    BtfKind,
    BtfMember,
    BtfParam,
    BtfPtr,
    BtfRestrict,
    BtfStruct,
    BtfTypedef,
    BtfTypeTag,
    BtfUnion,
    BtfVar,
    BtfVarSecinfo,
    BtfVolatile,
    FuncLinkage,
    IntEncoding,
    VarLinkage,
)
from tests import bpfbuild

VMLINUX = Path("/sys/kernel/btf/vmlinux")


# --- A builder for hand-made BTF, written from the UAPI layout ----------------------


@dataclass
class BtfBuilder:
    """Appends type records and names; ``build`` lays out header, types and strings."""

    byte_order: str = "<"
    records: list[bytes] = field(default_factory=list)
    strings: bytearray = field(default_factory=lambda: bytearray(b"\0"))

    def name(self, text: str) -> int:
        if not text:
            return 0
        offset = len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def add(
        self,
        kind: int,
        name: str = "",
        *,
        vlen: int = 0,
        kind_flag: bool = False,
        size_or_type: int = 0,
        trailer: bytes = b"",
    ) -> int:
        info = (int(kind_flag) << 31) | (kind << 24) | vlen
        record = self._pack("III", self.name(name), info, size_or_type) + trailer
        self.records.append(record)
        return len(self.records)  # the new type's id

    def words(self, fmt: str, *values: int) -> bytes:
        return self._pack(fmt, *values)

    def build(self) -> bytes:
        types = b"".join(self.records)
        strings = bytes(self.strings)
        header = self._pack("HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
        return header + types + strings

    def _pack(self, fmt: str, *values: int) -> bytes:
        return struct.pack(self.byte_order + fmt, *values)


def every_kind(builder: BtfBuilder) -> BtfBuilder:
    """One of each kind, ids 1..20, referring to each other in typical ways."""
    b = builder
    int_id = b.add(1, "int", size_or_type=4, trailer=b.words("I", (1 << 24) | 32))  # 1
    b.add(2, size_or_type=int_id)  # 2: int *
    b.add(3, trailer=b.words("III", int_id, int_id, 16))  # 3: int[16]
    members = b.words("III", b.name("a"), int_id, 0) + b.words(
        "III", b.name("flags"), int_id, (3 << 24) | 32
    )
    b.add(4, "pair", vlen=2, kind_flag=True, size_or_type=8, trailer=members)  # 4
    b.add(5, "either", vlen=1, size_or_type=4, trailer=b.words("III", b.name("x"), 1, 0))  # 5
    values = b.words("Ii", b.name("MINUS"), -1) + b.words("Ii", b.name("TWO"), 2)
    b.add(6, "signed_enum", vlen=2, kind_flag=True, size_or_type=4, trailer=values)  # 6
    b.add(7, "later", kind_flag=True)  # 7: union forward declaration
    b.add(8, "myint", size_or_type=int_id)  # 8: typedef
    b.add(9, size_or_type=8)  # 9: volatile myint
    b.add(10, size_or_type=9)  # 10: const volatile myint
    b.add(11, size_or_type=2)  # 11: int *restrict
    params = b.words("II", b.name("count"), int_id) + b.words("II", 0, 0)
    b.add(13, vlen=2, size_or_type=int_id, trailer=params)  # 12: int (int count, ...)
    b.add(12, "printf_like", vlen=1, size_or_type=12)  # 13: global FUNC
    b.add(14, "threshold", size_or_type=10, trailer=b.words("I", 1))  # 14: VAR
    b.add(15, ".rodata", vlen=1, size_or_type=4, trailer=b.words("III", 14, 0, 4))  # 15
    b.add(16, "double", size_or_type=8)  # 16: FLOAT
    b.add(17, "bpf_kfunc", size_or_type=13, trailer=b.words("i", -1))  # 17: DECL_TAG
    b.add(18, "user", size_or_type=int_id)  # 18: TYPE_TAG
    values64 = b.words("III", b.name("HUGE"), 0, 0x80000000) + b.words("III", b.name("SMALL"), 5, 0)
    b.add(19, "wide", vlen=2, kind_flag=True, size_or_type=8, trailer=values64)  # 19
    b.add(19, "wide_unsigned", vlen=1, size_or_type=8, trailer=b.words("III", 0, 1, 1))  # 20
    return b


@pytest.fixture(params=["<", ">"], ids=["little-endian", "big-endian"])
def every_kind_btf(request: pytest.FixtureRequest) -> Btf:
    return btf.parse_btf(every_kind(BtfBuilder(byte_order=request.param)).build())


def test_every_kind_decodes_to_its_type(every_kind_btf: Btf) -> None:
    types = every_kind_btf.types
    assert types[0] == btf.VOID
    assert types[1] == BtfInt("int", 4, IntEncoding.SIGNED, 0, 32)
    assert types[1].signed  # type: ignore[union-attr]
    assert types[2] == BtfPtr("", 1)
    assert types[3] == BtfArray("", 1, 1, 16)
    assert types[4] == BtfStruct("pair", 8, (BtfMember("a", 1, 0, 0), BtfMember("flags", 1, 32, 3)))
    assert types[5] == BtfUnion("either", 4, (BtfMember("x", 1, 0, 0),))
    assert types[6] == BtfEnum(
        "signed_enum", 4, True, (BtfEnumValue("MINUS", -1), BtfEnumValue("TWO", 2))
    )
    assert types[7] == BtfFwd("later", is_union=True)
    assert types[8] == BtfTypedef("myint", 1)
    assert types[9] == BtfVolatile("", 8)
    assert types[10] == BtfConst("", 9)
    assert types[11] == BtfRestrict("", 2)
    assert types[12] == BtfFuncProto("", 1, (BtfParam("count", 1), BtfParam("", 0)))
    assert types[12].variadic  # type: ignore[union-attr]
    assert types[13] == BtfFunc("printf_like", 12, FuncLinkage.GLOBAL)
    assert types[14] == BtfVar("threshold", 10, VarLinkage.GLOBAL)
    assert types[15] == BtfDatasec(".rodata", 4, (BtfVarSecinfo(14, 0, 4),))
    assert types[16] == BtfFloat("double", 8)
    assert types[17] == BtfDeclTag("bpf_kfunc", 13, -1)
    assert types[18] == BtfTypeTag("user", 1)
    assert types[19] == BtfEnum64(
        "wide", 8, True, (BtfEnumValue("HUGE", -(1 << 63)), BtfEnumValue("SMALL", 5))
    )
    assert types[20] == BtfEnum64("wide_unsigned", 8, False, (BtfEnumValue("", (1 << 32) | 1),))
    kinds = [t.kind for t in types]
    assert sorted(kinds[:20]) == list(BtfKind)  # one of each
    assert kinds[20] == BtfKind.ENUM64


def test_header_records_layout_and_byte_order(every_kind_btf: Btf) -> None:
    header = every_kind_btf.header
    assert (header.version, header.header_length, header.type_offset) == (1, 24, 0)
    assert header.string_offset == header.type_length
    assert header.byte_order in ("<", ">")


def test_resolving_walks_typedefs_and_qualifiers(every_kind_btf: Btf) -> None:
    assert btf.resolve_id(every_kind_btf, 10) == 1
    assert btf.resolve(every_kind_btf, 10) == every_kind_btf.types[1]
    assert btf.qualifiers(every_kind_btf, 10) == {BtfKind.CONST, BtfKind.VOLATILE}
    assert btf.qualifiers(every_kind_btf, 1) == frozenset()
    assert btf.resolve(every_kind_btf, 18) == every_kind_btf.types[1]  # through a type tag


@pytest.mark.parametrize(
    ("type_id", "size"),
    [(1, 4), (2, 8), (3, 64), (4, 8), (5, 4), (6, 4), (10, 4), (14, 4), (15, 4), (16, 8)],
)
def test_type_size_follows_sizeof(every_kind_btf: Btf, type_id: int, size: int) -> None:
    assert btf.type_size(every_kind_btf, type_id) == size


@pytest.mark.parametrize("type_id", [0, 7, 12, 13])
def test_types_without_a_size_are_refused(every_kind_btf: Btf, type_id: int) -> None:
    with pytest.raises(BtfError, match="has no size"):
        btf.type_size(every_kind_btf, type_id)


def test_lookups_by_kind_and_name(every_kind_btf: Btf) -> None:
    assert every_kind_btf.find(BtfStruct, "pair") == every_kind_btf.types[4]
    assert every_kind_btf.find(BtfStruct, "absent") is None
    assert [type_id for type_id, _ in every_kind_btf.of_kind(BtfEnum64)] == [19, 20]
    assert btf.kfunc_names(every_kind_btf) == {"printf_like"}
    assert btf.enum_values(every_kind_btf, "signed_enum") == {"MINUS": -1, "TWO": 2}
    assert btf.enum_values(every_kind_btf, "wide")["HUGE"] == -(1 << 63)
    with pytest.raises(BtfError, match="no enum named 'nope'"):
        btf.enum_values(every_kind_btf, "nope")


def test_decl_tags_on_parameters_do_not_make_kfuncs() -> None:
    builder = BtfBuilder()
    builder.add(13)  # 1: void (void)
    builder.add(12, "not_a_kfunc", vlen=1, size_or_type=1)  # 2
    builder.add(17, "bpf_kfunc", size_or_type=2, trailer=builder.words("i", 0))  # param 0
    builder.add(17, "other_tag", size_or_type=2, trailer=builder.words("i", -1))
    assert btf.kfunc_names(btf.parse_btf(builder.build())) == frozenset()


def test_string_offsets_inside_a_name_are_resolved() -> None:
    builder = BtfBuilder()
    offset = builder.name("unsigned int")
    builder.add(1, "", size_or_type=4, trailer=builder.words("I", 32))
    builder.records[0] = struct.pack("<I", offset + len("unsigned ")) + builder.records[0][4:]
    assert btf.parse_btf(builder.build()).types[1].name == "int"


# --- Malformed input -----------------------------------------------------------------


def test_empty_btf_has_only_void() -> None:
    assert btf.parse_btf(BtfBuilder().build()).types == (btf.VOID,)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda data: data[:10], "shorter than its 24-byte header"),
        (lambda data: b"\x12\x34" + data[2:], "bad BTF magic"),
        (lambda data: data[:2] + b"\x02" + data[3:], "unsupported BTF version 2"),
        (lambda data: data[:-3], "string section ends at byte"),
        (lambda data: data[:4] + struct.pack("<I", 8) + data[8:], "header length 8"),
    ],
    ids=["short", "magic", "version", "cut", "header-length"],
)
def test_malformed_headers_are_refused(mangle: Callable[[bytes], bytes], message: str) -> None:
    data = every_kind(BtfBuilder()).build()
    with pytest.raises(BtfError, match=message):
        btf.parse_btf(mangle(data))


def test_unknown_kind_is_refused() -> None:
    builder = BtfBuilder()
    builder.add(25, "future")
    with pytest.raises(BtfError, match="type id 1: unknown BTF kind 25"):
        btf.parse_btf(builder.build())


def test_record_running_past_the_type_section_is_refused() -> None:
    builder = BtfBuilder()
    builder.add(4, "big", vlen=1000, size_or_type=4)  # claims 1000 members, has none
    with pytest.raises(BtfError, match=r"type id 1 \(STRUCT\): data runs past"):
        btf.parse_btf(builder.build())


def test_bad_string_offset_is_refused() -> None:
    builder = BtfBuilder()
    builder.add(2, size_or_type=0)
    builder.records[0] = struct.pack("<I", 9999) + builder.records[0][4:]
    with pytest.raises(BtfError, match="string offset 9999"):
        btf.parse_btf(builder.build())


def test_dangling_ids_and_cycles_are_refused_on_lookup() -> None:
    builder = BtfBuilder()
    builder.add(8, "loop_a", size_or_type=2)
    builder.add(8, "loop_b", size_or_type=1)
    builder.add(2, size_or_type=99)
    parsed = btf.parse_btf(builder.build())
    with pytest.raises(BtfError, match="too long"):
        btf.resolve(parsed, 1)
    with pytest.raises(BtfError, match="type id 99 is out of range"):
        btf.resolve(parsed, parsed.types[3].type_id)  # type: ignore[union-attr]


# --- .BTF.ext CO-RE relocations ----------------------------------------------------


def btf_ext(core_records_per_section: list[int], *, header_length: int = 32) -> bytes:
    record_size = 16
    block = struct.pack("<I", record_size) + b"".join(
        struct.pack("<II", 1, count) + bytes(record_size * count)
        for count in core_records_per_section
    )
    header = struct.pack("<HBBIIIIIII", 0xEB9F, 1, 0, header_length, 0, 0, 0, 0, 0, len(block))
    return header[:header_length] + block


def test_core_relocations_are_counted_across_sections() -> None:
    assert btf.count_core_relocations(btf_ext([2, 0, 3])) == 5
    assert btf.count_core_relocations(btf_ext([])) == 0
    assert btf.count_core_relocations(btf_ext([], header_length=24)) == 0  # pre-CO-RE


def test_cut_core_relocations_are_refused() -> None:
    with pytest.raises(BtfError, match="run past"):
        btf.count_core_relocations(btf_ext([3])[:-5])


# --- Real BTF: the kernel's and clang's, checked against bpftool -----------------------

_RAW_TYPE_LINE = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'")


def bpftool_types(path: Path) -> dict[int, tuple[str, str]]:
    """type id -> (kind, name) from ``bpftool btf dump file PATH format raw``."""
    bpftool = shutil.which("bpftool")
    if bpftool is None:
        pytest.skip("bpftool is not installed (scripts/install-system-deps.sh installs it)")
    listing = subprocess.run(
        [bpftool, "btf", "dump", "file", str(path), "format", "raw"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    types: dict[int, tuple[str, str]] = {}
    for line in listing.splitlines():
        match = _RAW_TYPE_LINE.match(line)
        if match:
            type_id, kind, name = match.groups()
            types[int(type_id)] = (kind, "" if name == "(anon)" else name)
    return types


def summary(parsed: Btf) -> dict[int, tuple[str, str]]:
    return {type_id: (t.kind.name, t.name) for type_id, t in enumerate(parsed.types) if type_id}


@pytest.fixture(scope="module")
def vmlinux() -> Btf:
    if not VMLINUX.exists():
        pytest.skip(f"{VMLINUX} is missing: this kernel was built without BTF")
    return btf.load_btf(VMLINUX)


def test_kernel_btf_parses_quickly() -> None:
    if not VMLINUX.exists():
        pytest.skip(f"{VMLINUX} is missing: this kernel was built without BTF")
    data = VMLINUX.read_bytes()
    started = time.perf_counter()
    parsed = btf.parse_btf(data)
    elapsed = time.perf_counter() - started
    assert len(parsed.types) > 10_000
    # The target is under 2 s (about 0.8 s on a developer machine); leave room for CI load.
    assert elapsed < 5, f"parsing {len(data)} bytes of kernel BTF took {elapsed:.2f} s"


def test_kernel_btf_matches_bpftool(vmlinux: Btf) -> None:
    assert summary(vmlinux) == bpftool_types(VMLINUX)


def test_kernel_kfuncs_match_bpftool_decl_tags(vmlinux: Btf) -> None:
    listed = bpftool_types(VMLINUX)
    expected = set()
    for line in _bpftool_raw_lines(VMLINUX):
        match = re.match(r"^\[\d+\] DECL_TAG 'bpf_kfunc' type_id=(\d+) component_idx=-1", line)
        if match:
            kind, name = listed[int(match.group(1))]
            if kind == "FUNC":
                expected.add(name)
    kfuncs = btf.kfunc_names(vmlinux)
    assert kfuncs == expected
    if kfuncs:  # kernels before 6.5 or pahole before 1.25 do not tag kfuncs
        assert "bpf_task_acquire" in kfuncs or "bpf_cpumask_create" in kfuncs


def test_kernel_helper_enum_starts_as_the_uapi_says(vmlinux: Btf) -> None:
    values = btf.enum_values(vmlinux, "bpf_func_id")
    assert values["BPF_FUNC_unspec"] == 0
    assert values["BPF_FUNC_map_lookup_elem"] == 1
    assert values["BPF_FUNC_trace_printk"] == 6
    task = vmlinux.find(BtfStruct, "task_struct")
    assert task is not None
    assert task.member("pid") is not None


def _bpftool_raw_lines(path: Path) -> list[str]:
    return subprocess.run(
        ["bpftool", "btf", "dump", "file", str(path), "format", "raw"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()


OBJECT_SOURCE = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

union either { int i; float f; };
enum colour { RED = -1, GREEN = 2 };
struct event { int pid; char comm[16]; union either u; enum colour c; unsigned flags : 3; };
typedef const volatile struct event event_t;

const volatile int threshold = 7;
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 8);
    __type(key, int);
    __type(value, struct event);
} events SEC(".maps");

SEC("xdp")
int prog(struct xdp_md *ctx)
{
    event_t *e = bpf_map_lookup_elem(&events, (const void *)&threshold);
    return e ? e->pid + e->u.i + e->c : XDP_PASS;
}
char LICENSE[] SEC("license") = "GPL";
"""


def test_object_btf_matches_bpftool(tmp_path: Path) -> None:
    source, obj = tmp_path / "types.bpf.c", tmp_path / "types.bpf.o"
    source.write_text(OBJECT_SOURCE)
    compiled = bpfbuild.compile_bpf(source, obj)
    assert compiled.returncode == 0, f"clang failed:\n{compiled.stderr}"
    with obj.open("rb") as stream:
        parsed = btf.parse_btf(ELFFile(stream).get_section_by_name(".BTF").data())
    assert summary(parsed) == bpftool_types(obj)
    kinds = Counter(t.kind for t in parsed.types)
    for kind in (BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM, BtfKind.DATASEC, BtfKind.VAR):
        assert kinds[kind] > 0
    event = parsed.find(BtfStruct, "event")
    assert event is not None
    assert event.members[-1] == BtfMember("flags", event.members[-1].type_id, 224, 3)


@pytest.mark.parametrize(
    ("enum_name", "prefix", "table", "lowercase"),
    [
        ("bpf_func_id", "BPF_FUNC_", kernel_enums.HELPER_NAMES, False),
        ("bpf_prog_type", "BPF_PROG_TYPE_", kernel_enums.PROGRAM_TYPE_NAMES, True),
        ("bpf_map_type", "BPF_MAP_TYPE_", kernel_enums.MAP_TYPE_NAMES, True),
        ("bpf_attach_type", "BPF_", kernel_enums.ATTACH_TYPE_NAMES, True),
    ],
)
def test_generated_tables_agree_with_the_running_kernel(
    vmlinux: Btf, enum_name: str, prefix: str, table: tuple[str, ...], lowercase: bool
) -> None:
    """Ids only get added, so the kernel and the table agree on every id both know."""
    kernel = btf.enum_values(vmlinux, enum_name)
    spelled = {
        value: (name.removeprefix(prefix).lower() if lowercase else name.removeprefix(prefix))
        for name, value in kernel.items()
        if not name.startswith("__") and not name.endswith("_DEPRECATED")
    }
    shared = range(min(len(table), max(spelled) + 1))
    expected = [("bpf_" if not lowercase else "") + spelled[value] for value in shared]
    assert list(table[: len(shared)]) == expected
