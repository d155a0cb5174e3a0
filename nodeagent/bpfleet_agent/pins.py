"""The bpffs layout the agent owns. Pure: paths and names only, no kernel calls.

    <root>/<program>/managed-by-bpfleet          ownership marker (an empty directory)
    <root>/<program>/<tag>/progs/<entry point>   one loaded version of the object
    <root>/<program>/<tag>/maps/<map>
    <root>/<program>/links/<link name>           one per hook, stable across versions

bpffs holds only directories and pinned objects, so the ownership marker is a
directory: the agent manages a program directory only if it carries one, and so never
mistakes another tool's pins for its own.

bpffs refuses names with a dot, so pin names never have one: link names are built
from escaped parts joined with ``@`` (see ``escape``) and libbpf's internal maps
(``<prefix>.rodata``, ``.rodata.str1.1``) are pinned as ``rodata``, ``rodata_str1_1``.

``tag`` identifies a load: the object digest plus the load-time configuration, so what
is pinned says by itself which version it is, and a restarted agent needs no records
of its own to adopt it. Links sit outside version directories because an upgrade swaps
the program behind a link instead of making a new one.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass
from pathlib import Path

from bpfleet_core.resources import ConfigValue

LINKS = "links"
PROGS = "progs"
MAPS = "maps"
MARKER = "managed-by-bpfleet"
# Suffixes of transient pins; '~' never occurs in an escaped name, nor in a tag.
NEXT_SUFFIX = "~next"  # a replacement link, before it takes the old one's name
STAGING_SUFFIX = "~staging"  # a version being loaded, before it takes its tag's name
_TAG_LENGTH = 16
_SAFE = frozenset(string.ascii_letters + string.digits + "_-")
_MAX_ESCAPED = 200  # bpffs names are at most 255 bytes; leave room for kind and suffixes
_HASHED_PREFIX = 180


def load_tag(digest: str, config: dict[str, ConfigValue]) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{digest}\n{canonical}".encode()).hexdigest()[:_TAG_LENGTH]


def is_tag(name: str) -> bool:
    return len(name) == _TAG_LENGTH and all(c in "0123456789abcdef" for c in name)


def escape(text: str) -> str:
    """An injective, bpffs-safe form of a hook target: ``/`` becomes ``:``, and every
    byte outside ``[A-Za-z0-9_-]`` (``:``, ``.``, ``@``, ``%``, ``~``...) becomes ``%XX``.

    So ``eth0.100`` -> ``eth0%2E100`` differs from ``eth0_100``, and ``a/b`` -> ``a:b``
    from ``a:b`` -> ``a%3Ab``. Very long results keep a prefix and a digest of the whole.
    """
    parts = []
    for character in text:
        if character in _SAFE:
            parts.append(character)
        elif character == "/":
            parts.append(":")
        else:
            parts.append("".join(f"%{byte:02X}" for byte in character.encode()))
    escaped = "".join(parts)
    if len(escaped) <= _MAX_ESCAPED:
        return escaped
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{escaped[:_HASHED_PREFIX]}~{digest}"


@dataclass(frozen=True)
class ProgramPins:
    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def links(self) -> Path:
        return self.root / LINKS

    def version(self, tag: str) -> Path:
        return self.root / tag

    def staging(self, tag: str) -> Path:
        return self.root / f"{tag}{STAGING_SUFFIX}"

    def program(self, tag: str, entry_point: str) -> Path:
        return self.version(tag) / PROGS / entry_point

    def map(self, tag: str, map_name: str) -> Path:
        return self.version(tag) / MAPS / map_pin_name(map_name)

    def link(self, link_name: str) -> Path:
        return self.links / link_name


def is_owned(program_dir: Path) -> bool:
    """Whether a directory under the pin root is a program this agent manages."""
    return (program_dir / MARKER).is_dir()


def map_pin_name(map_name: str) -> str:
    """libbpf's internal maps lose the object prefix and their dots:
    ``xdp_coun.rodata`` -> ``rodata``, ``.rodata.str1.1`` -> ``rodata_str1_1``.
    Other map names cannot contain a dot and are kept."""
    if "." not in map_name:
        return map_name
    return map_name.partition(".")[2].replace(".", "_")


def for_program(pin_root: Path, program: str) -> ProgramPins:
    return ProgramPins(pin_root / program)
