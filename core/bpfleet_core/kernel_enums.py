"""Names <-> values of the kernel's BPF enums (program, map, attach and link types)."""

from __future__ import annotations

from bpfleet_core._kernel_enum_tables import ATTACH_TYPES, LINK_TYPES, MAP_TYPES, PROGRAM_TYPES


def _value(table: tuple[str, ...], name: str, what: str) -> int:
    try:
        return table.index(name)
    except ValueError:
        raise ValueError(f"unknown {what} {name!r}") from None


def _name(table: tuple[str, ...], value: int) -> str:
    return table[value] if 0 <= value < len(table) else f"unknown#{value}"


def program_type_id(name: str) -> int:
    return _value(PROGRAM_TYPES, name, "program type")


def program_type_name(value: int) -> str:
    return _name(PROGRAM_TYPES, value)


def map_type_id(name: str) -> int:
    return _value(MAP_TYPES, name, "map type")


def map_type_name(value: int) -> str:
    return _name(MAP_TYPES, value)


def attach_type_id(name: str) -> int:
    return _value(ATTACH_TYPES, name, "attach type")


def attach_type_name(value: int) -> str:
    return _name(ATTACH_TYPES, value)


def link_type_name(value: int) -> str:
    return _name(LINK_TYPES, value)


def program_types() -> tuple[str, ...]:
    """Every program type the tables know, without 'unspec'."""
    return PROGRAM_TYPES[1:]


def map_types() -> tuple[str, ...]:
    return MAP_TYPES[1:]
