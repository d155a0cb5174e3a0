"""Analyse a compiled BPF object (an ELF file) into the manifest bpfleet signs and ships.

The analysis is static and pure: it reads the object's bytes and never the kernel. It
reads the object the way libbpf 1.x opens it:

* every executable section other than ``.text`` holds programs, one per FUNC symbol, and
  the section name says what kind of program (see :mod:`bpfleet_core.sections`);
  ``.text`` holds the subprograms they call;
* a call instruction (opcode 0x85) calls a helper by number (src_reg 0), another BPF
  function (src_reg 1), or a kfunc (src_reg 2, or any call relocated against an
  undefined extern symbol); calls are followed into subprograms, so a helper called
  from a subprogram counts for every program that reaches it;
* maps are the variables of the BTF DATASEC ``.maps``, whose struct members encode the
  map's attributes (libbpf's ``__uint``/``__type`` macros); ``.rodata``, ``.data`` and
  ``.bss`` become single-entry array maps;
* ``const volatile`` globals in ``.rodata`` are the load-time configuration.

Every problem surfaces as one :class:`AnalysisError` naming the file.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Literal, TypeGuard

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import Section, Symbol, SymbolTableSection
from pydantic import ValidationError

from bpfleet_core import kernel_enums
from bpfleet_core.btf import (
    Btf,
    BtfArray,
    BtfDatasec,
    BtfEnum,
    BtfEnum64,
    BtfError,
    BtfInt,
    BtfKind,
    BtfMember,
    BtfPtr,
    BtfStruct,
    BtfType,
    BtfVar,
    IntEncoding,
    VarLinkage,
    count_core_relocations,
    parse_btf,
    qualifiers,
    resolve,
    type_size,
)
from bpfleet_core.manifests import (
    ConfigVariable,
    EntryPoint,
    Manifest,
    MapSpec,
    ObjectRef,
    Requirements,
)
from bpfleet_core.sections import UnknownSectionError, section_spec

EM_BPF = 247
INSTRUCTION_SIZE = 8

_ELF_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_ET_REL = 1
_MACHINE_NAMES = {3: "x86", 40: "ARM", 62: "x86-64", 183: "AArch64", 243: "RISC-V"}
_SHF_EXECINSTR = 0x4

_OPCODE_CALL = 0x85  # BPF_JMP | BPF_CALL
_OPCODE_LOAD_IMM64 = 0x18  # BPF_LD | BPF_IMM | BPF_DW, two instruction slots

_TEXT_SECTION = ".text"
_MAPS_SECTION = ".maps"
_LEGACY_MAPS_SECTION = "maps"
_LICENSE_SECTION = "license"
_GLOBAL_DATA_SECTIONS = (".rodata", ".data", ".bss")
_CONFIG_SECTION = ".rodata"

# Program types whose load needs the kernel's BTF to find their attach point.
_BTF_ATTACHED_PROGRAM_TYPES = frozenset({"tracing", "lsm", "struct_ops", "ext"})


class AnalysisError(ValueError):
    """The file is not a BPF object bpfleet can describe; the message says why."""


class CallSource(IntEnum):
    """What the src_reg field of a call instruction says is being called."""

    HELPER = 0  # imm is the helper's id
    BPF_FUNCTION = 1  # BPF_PSEUDO_CALL: imm is a relative instruction offset
    KFUNC = 2  # BPF_PSEUDO_KFUNC_CALL: imm is a kernel BTF id (set by the loader)


# --- A typed, pyelftools-free view of the ELF file --------------------------------


@dataclass(frozen=True, slots=True)
class ElfSection:
    index: int
    name: str
    type: str  # "SHT_PROGBITS", "SHT_NOBITS", ...
    flags: int
    size: int
    data: bytes = field(repr=False)  # empty for SHT_NOBITS

    @property
    def executable(self) -> bool:
        return self.type == "SHT_PROGBITS" and bool(self.flags & _SHF_EXECINSTR)


@dataclass(frozen=True, slots=True)
class ElfSymbol:
    name: str
    value: int
    size: int
    type: str  # "STT_FUNC", "STT_OBJECT", "STT_SECTION", ...
    bind: str  # "STB_GLOBAL", "STB_LOCAL", "STB_WEAK"
    section_index: int | None  # None when undefined (an extern) or absolute

    @property
    def is_function(self) -> bool:
        return self.type == "STT_FUNC"


@dataclass(frozen=True, slots=True)
class ElfObject:
    """What the analysis needs from an ELF file, read once and checked for bounds."""

    source: str  # the file name, for messages
    sections: tuple[ElfSection, ...]
    symbols: tuple[ElfSymbol, ...]
    # target section index -> byte offset in it -> the symbol relocated there
    relocations: Mapping[int, Mapping[int, ElfSymbol]]

    def section(self, name: str) -> ElfSection | None:
        return next((section for section in self.sections if section.name == name), None)

    def error(self, problem: str) -> AnalysisError:
        return AnalysisError(f"{self.source}: {problem}")


def read_elf(data: bytes, *, source: str) -> ElfObject:
    """Read a BPF ELF object; raises :class:`AnalysisError` for anything else."""
    _check_identity(data, source)
    try:
        elf = ELFFile(io.BytesIO(data))
        sections = tuple(
            _read_section(index, section, data, source)
            for index, section in enumerate(elf.iter_sections())
        )
        symbol_table = _only_symbol_table(elf, source)
        symbols = tuple(_read_symbol(symbol) for symbol in symbol_table.iter_symbols())
        _check_symbol_sections(symbols, len(sections), source)
        relocations = _read_relocations(elf, sections, symbols, source)
    except AnalysisError:
        raise
    except (ELFError, struct.error, OverflowError, ValueError, IndexError, KeyError) as error:
        raise AnalysisError(f"{source}: malformed ELF file: {error}") from error
    return ElfObject(source, sections, symbols, relocations)


def _check_identity(data: bytes, source: str) -> None:
    """Check the ELF identification by hand, so common mistakes get a precise message."""
    if len(data) < 64:
        raise AnalysisError(f"{source}: not an ELF file ({len(data)} bytes, too short)")
    if not data.startswith(_ELF_MAGIC):
        raise AnalysisError(f"{source}: not an ELF file (starts with {data[:4]!r})")
    if data[4] != _ELFCLASS64:
        raise AnalysisError(f"{source}: not a BPF object (32-bit ELF; BPF objects are 64-bit)")
    if data[5] != _ELFDATA2LSB:
        raise AnalysisError(f"{source}: big-endian BPF objects are not supported")
    elf_type, machine = struct.unpack_from("<HH", data, 16)
    if machine != EM_BPF:
        machine_name = _MACHINE_NAMES.get(machine, "unknown")
        raise AnalysisError(
            f"{source}: not a BPF object (ELF machine {machine} ({machine_name}), "
            f"expected EM_BPF ({EM_BPF}))"
        )
    if elf_type != _ET_REL:
        raise AnalysisError(f"{source}: not a relocatable BPF object (ELF type {elf_type})")


def _read_section(index: int, section: Section, data: bytes, source: str) -> ElfSection:
    header = section.header
    name: str = section.name
    section_type: str = header["sh_type"]
    offset: int = header["sh_offset"]
    size: int = header["sh_size"]
    if section_type == "SHT_NOBITS":
        contents = b""
    else:
        # Bounds first: a corrupt header must not make us read past the file.
        if offset + size > len(data):
            raise AnalysisError(
                f"{source}: malformed ELF file: section {name!r} runs past the end "
                f"of the file ({offset} + {size} > {len(data)} bytes)"
            )
        contents = data[offset : offset + size]
    return ElfSection(index, name, section_type, header["sh_flags"], size, contents)


def _only_symbol_table(elf: ELFFile, source: str) -> SymbolTableSection:
    tables = [s for s in elf.iter_sections() if isinstance(s, SymbolTableSection)]
    if len(tables) != 1:
        raise AnalysisError(f"{source}: expected one symbol table, found {len(tables)}")
    return tables[0]


def _read_symbol(symbol: Symbol) -> ElfSymbol:
    section_index = symbol["st_shndx"]
    return ElfSymbol(
        name=symbol.name,
        value=symbol["st_value"],
        size=symbol["st_size"],
        type=symbol["st_info"]["type"],
        bind=symbol["st_info"]["bind"],
        # pyelftools spells special indexes as strings: "SHN_UNDEF", "SHN_ABS", ...
        section_index=section_index if isinstance(section_index, int) else None,
    )


def _check_symbol_sections(symbols: tuple[ElfSymbol, ...], section_count: int, source: str) -> None:
    for symbol in symbols:
        if symbol.section_index is not None and symbol.section_index >= section_count:
            raise AnalysisError(
                f"{source}: malformed ELF file: symbol {symbol.name!r} is in section "
                f"{symbol.section_index}, but there are {section_count}"
            )


def _read_relocations(
    elf: ELFFile, sections: tuple[ElfSection, ...], symbols: tuple[ElfSymbol, ...], source: str
) -> dict[int, dict[int, ElfSymbol]]:
    """Relocations of code only; those of debug info are many and of no interest here."""
    relocations: dict[int, dict[int, ElfSymbol]] = {}
    for section in elf.iter_sections():
        if not isinstance(section, RelocationSection):
            continue
        target_index: int = section.header["sh_info"]
        if target_index >= len(sections) or not sections[target_index].executable:
            continue
        target = relocations.setdefault(target_index, {})
        for relocation in section.iter_relocations():
            symbol_index: int = relocation["r_info_sym"]
            if symbol_index >= len(symbols):
                raise AnalysisError(
                    f"{source}: relocation in {section.name!r} names symbol {symbol_index}, "
                    f"but there are {len(symbols)}"
                )
            target[relocation["r_offset"]] = symbols[symbol_index]
    return relocations


# --- Instructions and calls -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    offset: int  # in bytes, within its section
    opcode: int
    src_reg: int
    imm: int


_INSTRUCTION = struct.Struct("<BBhi")  # opcode, dst_reg | src_reg << 4, offset, imm


def decode_instructions(code: bytes) -> Iterator[Instruction]:
    """Every 8-byte instruction slot (the second half of a 64-bit load comes as opcode 0)."""
    for index, (opcode, registers, _, imm) in enumerate(_INSTRUCTION.iter_unpack(code)):
        yield Instruction(index * INSTRUCTION_SIZE, opcode, registers >> 4, imm)


def helper_call_ids(code: bytes) -> tuple[int, ...]:
    """The helper ids of the direct helper calls in a piece of code, in order."""
    return tuple(
        instruction.imm
        for instruction in decode_instructions(code)
        if instruction.opcode == _OPCODE_CALL and instruction.src_reg == CallSource.HELPER
    )


@dataclass(frozen=True, slots=True, order=True)
class CodeAddress:
    section_index: int
    offset: int


@dataclass(frozen=True, slots=True)
class HelperCall:
    helper_id: int


@dataclass(frozen=True, slots=True)
class KfuncCall:
    name: str


@dataclass(frozen=True, slots=True)
class CodeReference:
    """A call to another BPF function, or its address passed as a callback (bpf_loop)."""

    target: CodeAddress


CodeEdge = HelperCall | KfuncCall | CodeReference


def code_edges(obj: ElfObject, section: ElfSection, start: int, end: int) -> Iterator[CodeEdge]:
    """Helpers, kfuncs and BPF functions the code in ``section[start:end]`` refers to."""
    relocated = obj.relocations.get(section.index, {})
    for instruction in decode_instructions(section.data[start:end]):
        offset = start + instruction.offset
        edge = _edge(obj, section, instruction, offset, relocated.get(offset))
        if edge is not None:
            yield edge


def _edge(
    obj: ElfObject,
    section: ElfSection,
    instruction: Instruction,
    offset: int,
    symbol: ElfSymbol | None,
) -> CodeEdge | None:
    if instruction.opcode == _OPCODE_LOAD_IMM64:
        return _function_address(obj, section, instruction, offset, symbol)
    if instruction.opcode != _OPCODE_CALL:
        return None
    if symbol is None:
        return _unrelocated_call(obj, section, instruction, offset)
    if symbol.section_index is None:
        return KfuncCall(symbol.name)  # an extern, resolved against the kernel's BTF
    # Relative to the symbol, the immediate counts instructions minus one.
    target = symbol.value + (instruction.imm + 1) * INSTRUCTION_SIZE
    return CodeReference(_code_address(obj, symbol.section_index, target, section, offset))


def _unrelocated_call(
    obj: ElfObject, section: ElfSection, instruction: Instruction, offset: int
) -> CodeEdge:
    match instruction.src_reg:
        case CallSource.HELPER:
            return HelperCall(instruction.imm)
        case CallSource.BPF_FUNCTION:
            # A call within the section: relative to the next instruction.
            target = offset + (instruction.imm + 1) * INSTRUCTION_SIZE
            return CodeReference(_code_address(obj, section.index, target, section, offset))
        case CallSource.KFUNC:
            return KfuncCall(f"kfunc#{instruction.imm}")  # no symbol left to name it
        case _:
            raise obj.error(
                f"call at {section.name}+{offset:#x} has unknown src_reg {instruction.src_reg}"
            )


def _function_address(
    obj: ElfObject,
    section: ElfSection,
    instruction: Instruction,
    offset: int,
    symbol: ElfSymbol | None,
) -> CodeEdge | None:
    """A 64-bit load of a code address: a callback handed to a helper such as bpf_loop."""
    if symbol is None or symbol.section_index is None:
        return None
    if not obj.sections[symbol.section_index].executable:
        return None  # the address of a map or a global variable
    target = symbol.value + instruction.imm  # here the immediate is a byte offset
    return CodeReference(_code_address(obj, symbol.section_index, target, section, offset))


def _code_address(
    obj: ElfObject, section_index: int, target: int, referrer: ElfSection, offset: int
) -> CodeAddress:
    """The address a call or callback load leads to, checked to be an instruction."""
    section = obj.sections[section_index]  # read_elf checked symbol section indexes
    if section.executable and 0 <= target < section.size and target % INSTRUCTION_SIZE == 0:
        return CodeAddress(section_index, target)
    raise obj.error(f"code at {referrer.name}+{offset:#x} refers to no instruction")


@dataclass(frozen=True, slots=True)
class ReachableCalls:
    helper_ids: frozenset[int]
    kfuncs: frozenset[str]


class CallGraph:
    """Follows BPF-to-BPF calls so each program is charged with what its callees call.

    A function spans from its address to the next function symbol in its section (or
    the section's end); that also covers static functions that lack a symbol.
    """

    def __init__(self, obj: ElfObject) -> None:
        self._obj = obj
        self._function_starts = _function_starts(obj)
        self._edges: dict[CodeAddress, tuple[CodeEdge, ...]] = {}

    def reachable(self, entry: CodeAddress) -> ReachableCalls:
        helper_ids: set[int] = set()
        kfuncs: set[str] = set()
        pending = [entry]
        visited = {entry}
        while pending:
            for edge in self._edges_from(pending.pop()):
                match edge:
                    case HelperCall(helper_id):
                        helper_ids.add(helper_id)
                    case KfuncCall(name):
                        kfuncs.add(name)
                    case CodeReference(target) if target not in visited:
                        visited.add(target)
                        pending.append(target)
        return ReachableCalls(frozenset(helper_ids), frozenset(kfuncs))

    def _edges_from(self, address: CodeAddress) -> tuple[CodeEdge, ...]:
        if address not in self._edges:
            section = self._obj.sections[address.section_index]
            end = self._function_end(address, section.size)
            self._edges[address] = tuple(code_edges(self._obj, section, address.offset, end))
        return self._edges[address]

    def _function_end(self, address: CodeAddress, section_size: int) -> int:
        starts = self._function_starts.get(address.section_index, [])
        return next((start for start in starts if start > address.offset), section_size)


def _function_starts(obj: ElfObject) -> dict[int, list[int]]:
    """Sorted function offsets per executable section, checked to be instruction-aligned."""
    starts: dict[int, list[int]] = {
        section.index: [] for section in obj.sections if section.executable
    }
    for section_index in starts:
        section = obj.sections[section_index]
        if section.size % INSTRUCTION_SIZE:
            raise obj.error(f"code section {section.name!r} is not whole instructions")
    for symbol in obj.symbols:
        if not symbol.is_function or symbol.section_index not in starts:
            continue
        section = obj.sections[symbol.section_index]
        if symbol.value % INSTRUCTION_SIZE or not 0 <= symbol.value < section.size:
            raise obj.error(
                f"function {symbol.name!r} does not start on an instruction of {section.name!r}"
            )
        starts[symbol.section_index].append(symbol.value)
    for offsets in starts.values():
        offsets.sort()
    return starts


# --- Entry points ------------------------------------------------------------------


def find_entry_points(obj: ElfObject) -> tuple[EntryPoint, ...]:
    """One entry point per FUNC symbol in a program section, in file order."""
    graph = CallGraph(obj)
    entry_points: list[EntryPoint] = []
    for section in obj.sections:
        if not section.executable or section.name == _TEXT_SECTION:
            continue
        programs = sorted(
            (s for s in obj.symbols if s.is_function and s.section_index == section.index),
            key=lambda symbol: symbol.value,
        )
        entry_points.extend(_entry_point(obj, graph, section, symbol) for symbol in programs)
    return tuple(entry_points)


def _entry_point(
    obj: ElfObject, graph: CallGraph, section: ElfSection, symbol: ElfSymbol
) -> EntryPoint:
    if symbol.bind == "STB_LOCAL":
        raise obj.error(
            f"program {symbol.name!r} in section {section.name!r} is static; "
            "libbpf only loads global functions as programs"
        )
    try:
        spec = section_spec(section.name)
    except UnknownSectionError as error:
        raise obj.error(f"program {symbol.name!r}: {error}") from None
    calls = graph.reachable(CodeAddress(section.index, symbol.value))
    return EntryPoint(
        name=symbol.name,
        section=section.name,
        program_type=spec.program_type,
        expected_attach_type=spec.expected_attach_type,
        attach_kind=spec.attach_kind,
        attach_target=spec.attach_target,
        helpers=tuple(sorted(kernel_enums.helper_name(i) for i in calls.helper_ids)),
        kfuncs=tuple(sorted(calls.kfuncs)),
    )


# --- BTF, maps and configuration --------------------------------------------------


def object_btf(obj: ElfObject) -> Btf:
    section = obj.section(".BTF")
    if section is None:
        raise obj.error("no .BTF section (compile with clang -g); bpfleet needs BTF")
    try:
        return parse_btf(section.data)
    except BtfError as error:
        raise obj.error(f"malformed .BTF section: {error}") from None


def has_core_relocations(obj: ElfObject) -> bool:
    """True when ``.BTF.ext`` holds CO-RE relocations (e.g. from BPF_CORE_READ)."""
    section = obj.section(".BTF.ext")
    if section is None:
        return False
    try:
        return count_core_relocations(section.data) > 0
    except BtfError as error:
        raise obj.error(f"malformed .BTF.ext section: {error}") from None


def find_maps(obj: ElfObject, btf: Btf) -> tuple[MapSpec, ...]:
    """BTF-defined maps (in ``.maps`` order), then one array map per global-data section."""
    if obj.section(_LEGACY_MAPS_SECTION) is not None:
        raise obj.error(
            "legacy 'maps' section (struct bpf_map_def) is not supported by libbpf 1.x; "
            'declare maps with __uint/__type in SEC(".maps")'
        )
    return _btf_maps(obj, btf) + tuple(
        MapSpec(name=s.name, type="array", key_size=4, value_size=s.size, max_entries=1)
        for s in global_data_sections(obj)
    )


def global_data_sections(obj: ElfObject) -> tuple[ElfSection, ...]:
    """Non-empty ``.rodata``/``.data``/``.bss`` sections (and ``.rodata.*`` etc.)."""
    return tuple(
        section
        for section in obj.sections
        if section.size > 0 and not section.executable and _is_global_data(section.name)
    )


def _is_global_data(section_name: str) -> bool:
    return any(
        section_name == base or section_name.startswith(base + ".")
        for base in _GLOBAL_DATA_SECTIONS
    )


def _btf_maps(obj: ElfObject, btf: Btf) -> tuple[MapSpec, ...]:
    datasec = btf.find(BtfDatasec, _MAPS_SECTION)
    if datasec is None:
        if obj.section(_MAPS_SECTION) is not None:
            raise obj.error("section '.maps' has no BTF DATASEC describing its maps")
        return ()
    maps: list[MapSpec] = []
    for variable_info in datasec.variables:
        variable = btf.get(variable_info.type_id)
        if not isinstance(variable, BtfVar):
            raise obj.error(f"DATASEC '.maps' entry {variable_info.type_id} is not a VAR")
        maps.append(_btf_map(obj, btf, variable))
    return tuple(maps)


def _btf_map(obj: ElfObject, btf: Btf, variable: BtfVar) -> MapSpec:
    definition = resolve(btf, variable.type_id)
    if not isinstance(definition, BtfStruct):
        raise obj.error(f"map {variable.name!r} is not defined by a struct")
    attributes: dict[str, int] = {}
    for member in definition.members:
        value = _map_attribute(btf, member)
        if value is not None:
            attributes[member.name] = value
    if "type" not in attributes:
        raise obj.error(f"map {variable.name!r} has no type (__uint(type, ...))")
    map_type = kernel_enums.map_type_name(attributes["type"])
    # __type(key, T) gives the type, __uint(key_size, n) the size; either will do.
    key_size = attributes.get("key_size", attributes.get("key", 0))
    value_size = attributes.get("value_size", attributes.get("value", 0))
    if not key_size and map_type == "perf_event_array":
        key_size = 4  # libbpf fills in the only sizes the kernel accepts
    holds_fds = map_type == "perf_event_array" or definition.member("values") is not None
    if not value_size and holds_fds:
        value_size = 4  # a file descriptor: perf events, inner maps, tail-call programs
    return MapSpec(
        name=variable.name,
        type=map_type,
        key_size=key_size,
        value_size=value_size,
        max_entries=attributes.get("max_entries", 0),
    )


def _map_attribute(btf: Btf, member: BtfMember) -> int | None:
    """A map definition member's value: sizes for ``key``/``value``, else ``__uint``'s.

    ``__uint(name, n)`` declares ``int (*name)[n]``, so n is the pointed-to array's
    length; ``__type(name, T)`` declares ``T *name``. Anything else (``__array(values,
    ...)`` for the initial contents of a map of maps) has no integer value.
    """
    member_type = resolve(btf, member.type_id)
    if not isinstance(member_type, BtfPtr):
        return None
    if member.name in ("key", "value"):
        return type_size(btf, member_type.type_id)
    target = resolve(btf, member_type.type_id)
    return target.element_count if isinstance(target, BtfArray) else None


ConfigKind = Literal["int", "bool", "char_array", "other"]


def find_config_variables(obj: ElfObject, btf: Btf) -> tuple[ConfigVariable, ...]:
    """The ``const volatile`` globals of ``.rodata``, with their compiled-in defaults."""
    datasec = btf.find(BtfDatasec, _CONFIG_SECTION)
    rodata = obj.section(_CONFIG_SECTION)
    if datasec is None or rodata is None:
        return ()
    # clang leaves DATASEC offsets of globals at 0; the ELF symbols have the real ones.
    offsets = {
        symbol.name: symbol.value
        for symbol in obj.symbols
        if symbol.section_index == rodata.index and symbol.type == "STT_OBJECT"
    }
    variables: list[ConfigVariable] = []
    for variable_info in datasec.variables:
        variable = btf.get(variable_info.type_id)
        if not _is_config_variable(variable, btf):
            continue
        offset = offsets.get(variable.name, variable_info.offset)
        size = variable_info.size or type_size(btf, variable.type_id)
        raw = rodata.data[offset : offset + size]
        if len(raw) != size:
            raise obj.error(f"config variable {variable.name!r} lies outside .rodata")
        kind, signed = _config_kind(btf, variable.type_id)
        variables.append(
            ConfigVariable(
                name=variable.name,
                offset=offset,
                size=size,
                kind=kind,
                signed=signed,
                default=_decode_default(raw, kind, signed=signed),
            )
        )
    return tuple(sorted(variables, key=lambda variable: variable.offset))


def _is_config_variable(variable: BtfType, btf: Btf) -> TypeGuard[BtfVar]:
    """A global (not static) VAR that is volatile itself or, for arrays, per element."""
    if not isinstance(variable, BtfVar) or variable.linkage != VarLinkage.GLOBAL:
        return False
    found = qualifiers(btf, variable.type_id)
    resolved = resolve(btf, variable.type_id)
    if isinstance(resolved, BtfArray):
        found |= qualifiers(btf, resolved.element_type_id)
    return BtfKind.VOLATILE in found


def _config_kind(btf: Btf, type_id: int) -> tuple[ConfigKind, bool]:
    """The variable's kind and signedness."""
    resolved = resolve(btf, type_id)
    match resolved:
        case BtfInt() if IntEncoding.BOOL in resolved.encoding:
            return "bool", False
        case BtfInt():
            return "int", resolved.signed
        case BtfEnum() | BtfEnum64():
            return "int", resolved.signed
        case BtfArray() if _is_char(resolve(btf, resolved.element_type_id)):
            return "char_array", False
        case _:
            return "other", False


def _is_char(element: BtfType) -> bool:
    # Plain C strings only: a __u8 array (unsigned char) is bytes, not text.
    return (
        isinstance(element, BtfInt)
        and element.size == 1
        and (element.name == "char" or IntEncoding.CHAR in element.encoding)
    )


def _decode_default(raw: bytes, kind: ConfigKind, *, signed: bool) -> int | str | bool | None:
    match kind:
        case "int":
            return int.from_bytes(raw, "little", signed=signed)
        case "bool":
            return any(raw)
        case "char_array":
            text = raw.split(b"\0", 1)[0]
            try:
                return text.decode("utf-8")
            except UnicodeDecodeError:
                return None  # not text after all; the bytes stay in the object
        case _:
            return None


def read_license(obj: ElfObject) -> str:
    """The NUL-terminated string in the ``license`` section ("" when there is none)."""
    section = obj.section(_LICENSE_SECTION)
    if section is None:
        return ""
    text = section.data.split(b"\0", 1)[0]
    try:
        return text.decode("ascii")
    except UnicodeDecodeError:
        raise obj.error(f"license {text!r} is not ASCII") from None


# --- Requirements and the manifest --------------------------------------------------


def needs_kernel_btf(entry_points: Iterable[EntryPoint], *, core_relocations: bool) -> bool:
    """CO-RE relocations, kfuncs and BTF-attached programs all need the kernel's BTF."""
    return core_relocations or any(
        entry.kfuncs or entry.program_type in _BTF_ATTACHED_PROGRAM_TYPES for entry in entry_points
    )


def summarise_requirements(
    entry_points: tuple[EntryPoint, ...],
    maps: tuple[MapSpec, ...],
    *,
    kernel_btf: bool,
    global_data: bool,
) -> Requirements:
    """The union over entry points and maps, each list sorted so manifests are stable."""
    helpers_by_type: dict[str, set[str]] = {}
    for entry in entry_points:
        helpers_by_type.setdefault(entry.program_type, set()).update(entry.helpers)
    attach_kinds = {entry.attach_kind for entry in entry_points if entry.attach_kind}
    return Requirements(
        program_types=tuple(sorted({entry.program_type for entry in entry_points})),
        attach_kinds=tuple(sorted(attach_kinds)),
        map_types=tuple(sorted({spec.type for spec in maps})),
        helpers={
            program_type: tuple(sorted(names))
            for program_type, names in sorted(helpers_by_type.items())
        },
        kfuncs=tuple(sorted({name for entry in entry_points for name in entry.kfuncs})),
        kernel_btf=kernel_btf,
        global_data=global_data,
    )


def analyse_bytes(data: bytes, *, filename: str, name: str, version: str) -> Manifest:
    """Analyse an object's bytes; ``filename`` is recorded and used in messages."""
    obj = read_elf(data, source=filename)
    try:
        return _describe(obj, data, name=name, version=version)
    except BtfError as error:  # a dangling type id or the like deep in the BTF
        raise obj.error(f"malformed BTF: {error}") from None
    except ValidationError as error:
        raise obj.error(f"cannot be described by a manifest: {error}") from None


def _describe(obj: ElfObject, data: bytes, *, name: str, version: str) -> Manifest:
    btf = object_btf(obj)
    entry_points = find_entry_points(obj)
    if not entry_points:
        raise obj.error("no programs (no functions outside .text)")
    maps = find_maps(obj, btf)
    core_relocations = has_core_relocations(obj)
    return Manifest(
        name=name,
        version=version,
        license=read_license(obj),
        object=ObjectRef(
            filename=Path(obj.source).name,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
        ),
        entry_points=entry_points,
        maps=maps,
        config=find_config_variables(obj, btf),
        requirements=summarise_requirements(
            entry_points,
            maps,
            kernel_btf=needs_kernel_btf(entry_points, core_relocations=core_relocations),
            global_data=bool(global_data_sections(obj)),
        ),
    )


def analyse(object_path: Path, *, name: str, version: str) -> Manifest:
    """Analyse the BPF object at ``object_path`` into its (unsigned) manifest."""
    try:
        data = object_path.read_bytes()
    except OSError as error:
        raise AnalysisError(f"{object_path}: cannot read: {error.strerror}") from error
    return analyse_bytes(data, filename=str(object_path), name=name, version=version)
