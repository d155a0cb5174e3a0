"""A pure parser for the BPF Type Format (BTF): bytes in, typed types out.

BTF is the type information the kernel exposes at ``/sys/kernel/btf/vmlinux`` and that
clang writes into the ``.BTF`` section of every BPF object. The layout is the kernel's
UAPI (``include/uapi/linux/btf.h``): a header, then a type section of variable-length
records, then a string section of NUL-terminated names. Type ids are positions in the
type section counted from 1; id 0 is ``void``.

Everything here is immutable and free of I/O except :func:`load_btf`, which only reads
the file it is given. The whole kernel BTF (~125k types) parses in well under two seconds.
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from pathlib import Path
from typing import ClassVar, Literal, NamedTuple, TypeVar

BTF_MAGIC = 0xEB9F
_HEADER_LENGTH = 24  # the fixed part every BTF version has; hdr_len may be larger
_TYPE_RECORD_LENGTH = 12  # name_off, info, size-or-type

KFUNC_TAG = "bpf_kfunc"
"""The DECL_TAG recent kernels (6.5+, with pahole 1.25+) attach to every kfunc's FUNC."""

ByteOrder = Literal["<", ">"]


class BtfError(ValueError):
    """The bytes are not well-formed BTF, or a lookup in them failed."""


class BtfKind(IntEnum):
    """The ``BTF_KIND_*`` numbers of the kernel UAPI."""

    VOID = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


class IntEncoding(IntFlag):
    """``BTF_INT_*`` encoding bits; an unsigned plain integer has none of them."""

    SIGNED = 1
    CHAR = 2
    BOOL = 4


class FuncLinkage(IntEnum):
    STATIC = 0
    GLOBAL = 1
    EXTERN = 2


class VarLinkage(IntEnum):
    STATIC = 0
    GLOBAL = 1  # allocated in this object
    EXTERN = 2


@dataclass(frozen=True, slots=True)
class BtfHeader:
    version: int
    flags: int
    header_length: int
    type_offset: int
    type_length: int
    string_offset: int
    string_length: int
    byte_order: ByteOrder


# --- The types, one class per kind. Every type has a ``name`` ("" when anonymous). ---


@dataclass(frozen=True, slots=True)
class BtfVoid:
    kind: ClassVar[BtfKind] = BtfKind.VOID
    name: str = ""


@dataclass(frozen=True, slots=True)
class BtfInt:
    kind: ClassVar[BtfKind] = BtfKind.INT
    name: str
    size: int
    encoding: IntEncoding
    bit_offset: int
    bits: int

    @property
    def signed(self) -> bool:
        return IntEncoding.SIGNED in self.encoding


@dataclass(frozen=True, slots=True)
class BtfPtr:
    kind: ClassVar[BtfKind] = BtfKind.PTR
    name: str
    type_id: int


@dataclass(frozen=True, slots=True)
class BtfArray:
    kind: ClassVar[BtfKind] = BtfKind.ARRAY
    name: str
    element_type_id: int
    index_type_id: int
    element_count: int


@dataclass(frozen=True, slots=True)
class BtfMember:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int  # 0 unless the member is a bitfield


@dataclass(frozen=True, slots=True)
class BtfStruct:
    kind: ClassVar[BtfKind] = BtfKind.STRUCT
    name: str
    size: int
    members: tuple[BtfMember, ...]

    def member(self, name: str) -> BtfMember | None:
        return next((member for member in self.members if member.name == name), None)


@dataclass(frozen=True, slots=True)
class BtfUnion:
    kind: ClassVar[BtfKind] = BtfKind.UNION
    name: str
    size: int
    members: tuple[BtfMember, ...]

    def member(self, name: str) -> BtfMember | None:
        return next((member for member in self.members if member.name == name), None)


@dataclass(frozen=True, slots=True)
class BtfEnumValue:
    name: str
    value: int


@dataclass(frozen=True, slots=True)
class BtfEnum:
    kind: ClassVar[BtfKind] = BtfKind.ENUM
    name: str
    size: int
    signed: bool
    values: tuple[BtfEnumValue, ...]


@dataclass(frozen=True, slots=True)
class BtfFwd:
    kind: ClassVar[BtfKind] = BtfKind.FWD
    name: str
    is_union: bool


@dataclass(frozen=True, slots=True)
class BtfTypedef:
    kind: ClassVar[BtfKind] = BtfKind.TYPEDEF
    name: str
    type_id: int


@dataclass(frozen=True, slots=True)
class BtfVolatile:
    kind: ClassVar[BtfKind] = BtfKind.VOLATILE
    name: str
    type_id: int


@dataclass(frozen=True, slots=True)
class BtfConst:
    kind: ClassVar[BtfKind] = BtfKind.CONST
    name: str
    type_id: int


@dataclass(frozen=True, slots=True)
class BtfRestrict:
    kind: ClassVar[BtfKind] = BtfKind.RESTRICT
    name: str
    type_id: int


@dataclass(frozen=True, slots=True)
class BtfFunc:
    kind: ClassVar[BtfKind] = BtfKind.FUNC
    name: str
    type_id: int  # the FUNC_PROTO
    linkage: FuncLinkage


@dataclass(frozen=True, slots=True)
class BtfParam:
    name: str
    type_id: int


@dataclass(frozen=True, slots=True)
class BtfFuncProto:
    kind: ClassVar[BtfKind] = BtfKind.FUNC_PROTO
    name: str
    return_type_id: int
    params: tuple[BtfParam, ...]

    @property
    def variadic(self) -> bool:
        # C's "..." is encoded as a final unnamed parameter of type void.
        return bool(self.params) and self.params[-1] == BtfParam("", 0)


@dataclass(frozen=True, slots=True)
class BtfVar:
    kind: ClassVar[BtfKind] = BtfKind.VAR
    name: str
    type_id: int
    linkage: VarLinkage


@dataclass(frozen=True, slots=True)
class BtfVarSecinfo:
    type_id: int  # the VAR (or FUNC, for extern kfuncs in ".ksyms")
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class BtfDatasec:
    kind: ClassVar[BtfKind] = BtfKind.DATASEC
    name: str
    size: int
    variables: tuple[BtfVarSecinfo, ...]


@dataclass(frozen=True, slots=True)
class BtfFloat:
    kind: ClassVar[BtfKind] = BtfKind.FLOAT
    name: str
    size: int


@dataclass(frozen=True, slots=True)
class BtfDeclTag:
    kind: ClassVar[BtfKind] = BtfKind.DECL_TAG
    name: str  # the tag's value, e.g. "bpf_kfunc"
    type_id: int
    component_index: int  # -1 tags the type itself, otherwise a member or parameter


@dataclass(frozen=True, slots=True)
class BtfTypeTag:
    kind: ClassVar[BtfKind] = BtfKind.TYPE_TAG
    name: str
    type_id: int


@dataclass(frozen=True, slots=True)
class BtfEnum64:
    kind: ClassVar[BtfKind] = BtfKind.ENUM64
    name: str
    size: int
    signed: bool
    values: tuple[BtfEnumValue, ...]


BtfType = (
    BtfVoid
    | BtfInt
    | BtfPtr
    | BtfArray
    | BtfStruct
    | BtfUnion
    | BtfEnum
    | BtfFwd
    | BtfTypedef
    | BtfVolatile
    | BtfConst
    | BtfRestrict
    | BtfFunc
    | BtfFuncProto
    | BtfVar
    | BtfDatasec
    | BtfFloat
    | BtfDeclTag
    | BtfTypeTag
    | BtfEnum64
)

BtfModifier = BtfTypedef | BtfVolatile | BtfConst | BtfRestrict | BtfTypeTag
"""Kinds that only qualify or rename another type; resolving walks through them."""

_MODIFIERS = (BtfTypedef, BtfVolatile, BtfConst, BtfRestrict, BtfTypeTag)
_QUALIFIERS = (BtfVolatile, BtfConst, BtfRestrict, BtfTypeTag)

VOID = BtfVoid()

_T = TypeVar("_T", bound=BtfType)


@dataclass(frozen=True, slots=True)
class Btf:
    """Parsed BTF. ``types[i]`` is the type with id ``i``; ``types[0]`` is void."""

    header: BtfHeader
    types: tuple[BtfType, ...]

    def get(self, type_id: int) -> BtfType:
        """The type with this id; a dangling id is malformed BTF, not an IndexError."""
        if not 0 <= type_id < len(self.types):
            raise BtfError(f"type id {type_id} is out of range (BTF has {len(self.types)} ids)")
        return self.types[type_id]

    def of_kind(self, kind: type[_T]) -> Iterator[tuple[int, _T]]:
        """(type id, type) for every type of one class, e.g. ``btf.of_kind(BtfFunc)``."""
        for type_id, btf_type in enumerate(self.types):
            if isinstance(btf_type, kind):
                yield type_id, btf_type

    def find(self, kind: type[_T], name: str) -> _T | None:
        """The first type of this class with this name, or None."""
        return next((found for _, found in self.of_kind(kind) if found.name == name), None)


# --- Parsing ---------------------------------------------------------------------


def parse_header(data: bytes) -> BtfHeader:
    """Read and check the header; the byte order follows from how the magic reads."""
    if len(data) < _HEADER_LENGTH:
        raise BtfError(f"BTF is {len(data)} bytes, shorter than its {_HEADER_LENGTH}-byte header")
    byte_order = _byte_order(data)
    (
        _magic,
        version,
        flags,
        header_length,
        type_offset,
        type_length,
        string_offset,
        string_length,
    ) = struct.unpack_from(byte_order + "HBBIIIII", data)
    header = BtfHeader(
        version=version,
        flags=flags,
        header_length=header_length,
        type_offset=type_offset,
        type_length=type_length,
        string_offset=string_offset,
        string_length=string_length,
        byte_order=byte_order,
    )
    _check_layout(header, len(data))
    return header


def _byte_order(data: bytes) -> ByteOrder:
    if struct.unpack_from("<H", data)[0] == BTF_MAGIC:
        return "<"
    if struct.unpack_from(">H", data)[0] == BTF_MAGIC:
        return ">"
    raise BtfError(f"bad BTF magic {data[:2].hex()} (expected 9feb or eb9f)")


def _check_layout(header: BtfHeader, total_length: int) -> None:
    if header.version != 1:
        raise BtfError(f"unsupported BTF version {header.version}")
    if header.header_length < _HEADER_LENGTH:
        raise BtfError(f"BTF header length {header.header_length} is too small")
    for section, offset, length in (
        ("type", header.type_offset, header.type_length),
        ("string", header.string_offset, header.string_length),
    ):
        # Section offsets count from the end of the header.
        end = header.header_length + offset + length
        if end > total_length:
            raise BtfError(
                f"BTF {section} section ends at byte {end}, past the end of the data "
                f"({total_length} bytes)"
            )


def parse_btf(data: bytes) -> Btf:
    """Parse a complete (not split) BTF blob: a ``.BTF`` section or the kernel's vmlinux."""
    header = parse_header(data)
    body = memoryview(data)[header.header_length :]
    type_section = body[header.type_offset : header.type_offset + header.type_length]
    string_section = bytes(body[header.string_offset : header.string_offset + header.string_length])
    strings = _StringTable(string_section)
    with _collector_paused():
        types = _parse_types(type_section, strings, header.byte_order)
    return Btf(header=header, types=tuple(types))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small acyclic objects.

    The kernel's BTF becomes ~700k objects; without the pause the collector scans them
    over and over, doubling the parse time. Nothing built here can form a cycle.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_btf(path: Path) -> Btf:
    """Parse the BTF file at ``path`` (e.g. ``/sys/kernel/btf/vmlinux``)."""
    return parse_btf(path.read_bytes())


class _StringTable(dict[int, str]):
    """Offset -> name. Names that start a string are indexed up front, so the hot path of
    parsing is a plain dict lookup; other offsets are decoded on first use."""

    def __init__(self, blob: bytes) -> None:
        super().__init__()
        self._blob = blob
        offset = 0
        for raw in blob.split(b"\0"):
            self[offset] = raw.decode("utf-8", "replace")
            offset += len(raw) + 1

    def __missing__(self, offset: int) -> str:
        # Legal but rare: an offset into the middle of another string (suffix sharing).
        if not 0 <= offset < len(self._blob):
            raise BtfError(f"string offset {offset} is outside the string section")
        end = self._blob.find(b"\0", offset)
        name = self._blob[offset : end if end >= 0 else None].decode("utf-8", "replace")
        self[offset] = name
        return name


class _Record(NamedTuple):
    """One type record, split into its fields, with the bytes that follow it."""

    name: str
    vlen: int
    kind_flag: bool
    size_or_type: int
    trailer: memoryview


@dataclass(frozen=True, slots=True)
class _Context:
    strings: _StringTable
    byte_order: ByteOrder


_Decoder = Callable[[_Record, _Context], BtfType]

_NO_TRAILER = memoryview(b"")


def _parse_types(
    section: memoryview, strings: _StringTable, byte_order: ByteOrder
) -> list[BtfType]:
    context = _Context(strings, byte_order)
    read_record = struct.Struct(byte_order + "III").unpack_from
    types: list[BtfType] = [VOID]
    offset = 0
    end = len(section)
    while offset < end:
        type_id = len(types)
        if offset + _TYPE_RECORD_LENGTH > end:
            raise BtfError(f"type id {type_id}: record is cut off at the end of the type section")
        name_offset, info, size_or_type = read_record(section, offset)
        offset += _TYPE_RECORD_LENGTH
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        layout = _LAYOUTS.get(kind)
        if layout is None:
            raise BtfError(f"type id {type_id}: unknown BTF kind {kind}")
        fixed_length, per_item_length, decode = layout
        trailer_length = fixed_length + per_item_length * vlen
        if offset + trailer_length > end:
            raise BtfError(
                f"type id {type_id} ({BtfKind(kind).name}): data runs past the type section"
            )
        trailer = section[offset : offset + trailer_length] if trailer_length else _NO_TRAILER
        offset += trailer_length
        record = _Record(strings[name_offset], vlen, bool(info >> 31), size_or_type, trailer)
        types.append(decode(record, context))
    return types


def _referencing(
    type_class: type[BtfPtr | BtfTypedef | BtfVolatile | BtfConst | BtfRestrict | BtfTypeTag],
) -> _Decoder:
    """Decoder for the kinds that are just a name and the id of another type."""

    def decode(record: _Record, context: _Context) -> BtfType:
        return type_class(record.name, record.size_or_type)

    return decode


def _decode_int(record: _Record, context: _Context) -> BtfType:
    (word,) = struct.unpack_from(context.byte_order + "I", record.trailer)
    return BtfInt(
        name=record.name,
        size=record.size_or_type,
        encoding=IntEncoding((word >> 24) & 0x0F),
        bit_offset=(word >> 16) & 0xFF,
        bits=word & 0xFF,
    )


def _decode_array(record: _Record, context: _Context) -> BtfType:
    element_type_id, index_type_id, element_count = struct.unpack_from(
        context.byte_order + "III", record.trailer
    )
    return BtfArray(record.name, element_type_id, index_type_id, element_count)


def _decode_members(record: _Record, context: _Context) -> tuple[BtfMember, ...]:
    strings = context.strings
    words = struct.iter_unpack(context.byte_order + "III", record.trailer)
    if record.kind_flag:
        # With kind_flag set, the offset word packs the bitfield size in its top byte.
        return tuple(
            BtfMember(strings[name_offset], type_id, offset & 0xFFFFFF, offset >> 24)
            for name_offset, type_id, offset in words
        )
    return tuple(
        BtfMember(strings[name_offset], type_id, offset, 0)
        for name_offset, type_id, offset in words
    )


def _decode_struct(record: _Record, context: _Context) -> BtfType:
    return BtfStruct(record.name, record.size_or_type, _decode_members(record, context))


def _decode_union(record: _Record, context: _Context) -> BtfType:
    return BtfUnion(record.name, record.size_or_type, _decode_members(record, context))


def _decode_enum(record: _Record, context: _Context) -> BtfType:
    # kind_flag marks a signed enum; its values are 32-bit two's complement.
    value_format = context.byte_order + ("Ii" if record.kind_flag else "II")
    values = tuple(
        BtfEnumValue(context.strings[name_offset], value)
        for name_offset, value in struct.iter_unpack(value_format, record.trailer)
    )
    return BtfEnum(record.name, record.size_or_type, record.kind_flag, values)


def _decode_enum64(record: _Record, context: _Context) -> BtfType:
    values = tuple(
        BtfEnumValue(context.strings[name_offset], _join_64(low, high, signed=record.kind_flag))
        for name_offset, low, high in struct.iter_unpack(context.byte_order + "III", record.trailer)
    )
    return BtfEnum64(record.name, record.size_or_type, record.kind_flag, values)


def _join_64(low: int, high: int, *, signed: bool) -> int:
    value = (high << 32) | low
    if signed and value >= 1 << 63:
        value -= 1 << 64
    return value


def _decode_fwd(record: _Record, context: _Context) -> BtfType:
    return BtfFwd(record.name, is_union=record.kind_flag)


def _decode_func(record: _Record, context: _Context) -> BtfType:
    # A FUNC keeps its linkage in the vlen field.
    linkage = _enum_member(_FUNC_LINKAGES, record.vlen, f"FUNC {record.name!r} linkage")
    return BtfFunc(record.name, record.size_or_type, linkage)


def _decode_func_proto(record: _Record, context: _Context) -> BtfType:
    params = tuple(
        BtfParam(context.strings[name_offset], type_id)
        for name_offset, type_id in struct.iter_unpack(context.byte_order + "II", record.trailer)
    )
    return BtfFuncProto(record.name, record.size_or_type, params)


def _decode_var(record: _Record, context: _Context) -> BtfType:
    (linkage_value,) = struct.unpack_from(context.byte_order + "I", record.trailer)
    linkage = _enum_member(_VAR_LINKAGES, linkage_value, f"VAR {record.name!r} linkage")
    return BtfVar(record.name, record.size_or_type, linkage)


def _decode_datasec(record: _Record, context: _Context) -> BtfType:
    variables = tuple(
        BtfVarSecinfo(type_id, offset, size)
        for type_id, offset, size in struct.iter_unpack(context.byte_order + "III", record.trailer)
    )
    return BtfDatasec(record.name, record.size_or_type, variables)


def _decode_float(record: _Record, context: _Context) -> BtfType:
    return BtfFloat(record.name, record.size_or_type)


def _decode_decl_tag(record: _Record, context: _Context) -> BtfType:
    (component_index,) = struct.unpack_from(context.byte_order + "i", record.trailer)
    return BtfDeclTag(record.name, record.size_or_type, component_index)


_E = TypeVar("_E", FuncLinkage, VarLinkage)


def _enum_member(members: tuple[_E, ...], value: int, what: str) -> _E:
    # Indexing a tuple of the members is much cheaper than calling the enum class,
    # which matters for the kernel's ~56k FUNCs.
    if value < len(members):
        return members[value]
    raise BtfError(f"{what}: unknown value {value}")


_FUNC_LINKAGES = tuple(FuncLinkage)
_VAR_LINKAGES = tuple(VarLinkage)


# kind -> (fixed trailer bytes, trailer bytes per vlen item, decoder)
_LAYOUTS: dict[int, tuple[int, int, _Decoder]] = {
    BtfKind.INT: (4, 0, _decode_int),
    BtfKind.PTR: (0, 0, _referencing(BtfPtr)),
    BtfKind.ARRAY: (12, 0, _decode_array),
    BtfKind.STRUCT: (0, 12, _decode_struct),
    BtfKind.UNION: (0, 12, _decode_union),
    BtfKind.ENUM: (0, 8, _decode_enum),
    BtfKind.FWD: (0, 0, _decode_fwd),
    BtfKind.TYPEDEF: (0, 0, _referencing(BtfTypedef)),
    BtfKind.VOLATILE: (0, 0, _referencing(BtfVolatile)),
    BtfKind.CONST: (0, 0, _referencing(BtfConst)),
    BtfKind.RESTRICT: (0, 0, _referencing(BtfRestrict)),
    BtfKind.FUNC: (0, 0, _decode_func),
    BtfKind.FUNC_PROTO: (0, 8, _decode_func_proto),
    BtfKind.VAR: (4, 0, _decode_var),
    BtfKind.DATASEC: (0, 12, _decode_datasec),
    BtfKind.FLOAT: (0, 0, _decode_float),
    BtfKind.DECL_TAG: (4, 0, _decode_decl_tag),
    BtfKind.TYPE_TAG: (0, 0, _referencing(BtfTypeTag)),
    BtfKind.ENUM64: (0, 12, _decode_enum64),
}


# --- Resolving ---------------------------------------------------------------------

# Modifier chains are short in practice; a longer one means a cycle in malformed BTF.
_MAX_CHAIN = 64


def resolve_id(btf: Btf, type_id: int) -> int:
    """Follow typedef / const / volatile / restrict / type-tag links to the real type's id."""
    for _ in range(_MAX_CHAIN):
        btf_type = btf.get(type_id)
        if not isinstance(btf_type, _MODIFIERS):
            return type_id
        type_id = btf_type.type_id
    raise BtfError(f"modifier chain from type id {type_id} is too long (a cycle?)")


def resolve(btf: Btf, type_id: int) -> BtfType:
    """The type behind any typedefs and qualifiers, e.g. ``const volatile u32`` -> INT."""
    return btf.get(resolve_id(btf, type_id))


def qualifiers(btf: Btf, type_id: int) -> frozenset[BtfKind]:
    """The qualifier kinds (CONST, VOLATILE, ...) met while resolving, typedefs included."""
    found: set[BtfKind] = set()
    for _ in range(_MAX_CHAIN):
        btf_type = btf.get(type_id)
        if not isinstance(btf_type, _MODIFIERS):
            return frozenset(found)
        if isinstance(btf_type, _QUALIFIERS):
            found.add(btf_type.kind)
        type_id = btf_type.type_id
    raise BtfError(f"modifier chain from type id {type_id} is too long (a cycle?)")


def type_size(btf: Btf, type_id: int, *, pointer_size: int = 8) -> int:
    """Size in bytes of a type, as ``sizeof`` would give it (BPF pointers are 8 bytes)."""
    for _ in range(_MAX_CHAIN):
        btf_type = resolve(btf, type_id)
        match btf_type:
            case BtfInt() | BtfEnum() | BtfEnum64() | BtfStruct() | BtfUnion() | BtfFloat():
                return btf_type.size
            case BtfDatasec():
                return btf_type.size
            case BtfPtr():
                return pointer_size
            case BtfArray():
                element_size = type_size(btf, btf_type.element_type_id, pointer_size=pointer_size)
                return btf_type.element_count * element_size
            case BtfVar():
                type_id = btf_type.type_id
            case _:
                raise BtfError(f"type id {type_id} ({btf_type.kind.name}) has no size")
    raise BtfError(f"type id {type_id}: variable chain is too long (a cycle?)")


# --- Kernel-facing lookups --------------------------------------------------------


def kfunc_names(btf: Btf) -> frozenset[str]:
    """Names of the FUNCs tagged ``bpf_kfunc``: the kfuncs this kernel offers BPF programs."""
    names: set[str] = set()
    for _, tag in btf.of_kind(BtfDeclTag):
        if tag.name != KFUNC_TAG or tag.component_index != -1:
            continue
        target = btf.get(tag.type_id)
        if isinstance(target, BtfFunc):
            names.add(target.name)
    return frozenset(names)


def enum_values(btf: Btf, enum_name: str) -> dict[str, int]:
    """Enumerator name -> value of the (32- or 64-bit) enum with this name."""
    for btf_type in btf.types:
        if isinstance(btf_type, BtfEnum | BtfEnum64) and btf_type.name == enum_name:
            return {value.name: value.value for value in btf_type.values}
    raise BtfError(f"BTF has no enum named {enum_name!r}")


# --- .BTF.ext ----------------------------------------------------------------------

_EXT_HEADER_LENGTH = 32  # up to and including the CO-RE relocation section fields


def count_core_relocations(btf_ext: bytes) -> int:
    """How many CO-RE relocation records a ``.BTF.ext`` section carries.

    ``.BTF.ext`` starts with a header whose last two fields (present when the header is
    at least 32 bytes) locate the CO-RE relocations: a record size, then per ELF section
    a (section name, record count) pair followed by that many records.
    """
    if len(btf_ext) < 8:
        raise BtfError(f".BTF.ext is {len(btf_ext)} bytes, too short for its header")
    byte_order = _byte_order(btf_ext)
    (header_length,) = struct.unpack_from(byte_order + "I", btf_ext, 4)
    if header_length < _EXT_HEADER_LENGTH:
        return 0  # written before CO-RE existed
    if len(btf_ext) < _EXT_HEADER_LENGTH:
        raise BtfError(".BTF.ext header is cut off")
    relocations_offset, relocations_length = struct.unpack_from(byte_order + "II", btf_ext, 24)
    start = header_length + relocations_offset
    block = btf_ext[start : start + relocations_length]
    if len(block) != relocations_length:
        raise BtfError(".BTF.ext CO-RE relocations run past the end of the section")
    return _count_ext_records(block, byte_order)


def _count_ext_records(block: bytes, byte_order: ByteOrder) -> int:
    if not block:
        return 0
    (record_size,) = struct.unpack_from(byte_order + "I", block)
    total = 0
    offset = 4
    while offset < len(block):
        if offset + 8 > len(block):
            raise BtfError(".BTF.ext CO-RE relocation section header is cut off")
        _, count = struct.unpack_from(byte_order + "II", block, offset)
        offset += 8 + count * record_size
        if offset > len(block):
            raise BtfError(".BTF.ext CO-RE relocation records run past their block")
        total += count
    return total
