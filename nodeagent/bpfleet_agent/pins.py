"""The bpffs layout the agent owns. Pure: paths and names only, no kernel calls.

    <root>/<program>/<tag>/progs/<entry point>   one loaded version of the object
    <root>/<program>/<tag>/maps/<map>
    <root>/<program>/links/<link name>           one per hook, stable across versions

bpffs refuses names with a dot, so pin names never have one: link names join their
parts with ``@`` and libbpf's internal maps (``<prefix>.rodata``) are pinned as ``rodata``.

``tag`` identifies a load: the object digest plus the load-time configuration, so what
is pinned says by itself which version it is, and a restarted agent needs no records
of its own to adopt it. Links sit outside version directories because an upgrade swaps
the program behind a link instead of making a new one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from bpfleet_core.resources import ConfigValue

LINKS = "links"
PROGS = "progs"
MAPS = "maps"
_TAG_LENGTH = 16


def load_tag(digest: str, config: dict[str, ConfigValue]) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{digest}\n{canonical}".encode()).hexdigest()[:_TAG_LENGTH]


def is_tag(name: str) -> bool:
    return len(name) == _TAG_LENGTH and all(c in "0123456789abcdef" for c in name)


@dataclass(frozen=True)
class ProgramPins:
    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def links(self) -> Path:
        return self.root / LINKS

    def version(self, tag: str) -> Path:
        return self.root / tag

    def program(self, tag: str, entry_point: str) -> Path:
        return self.root / tag / PROGS / entry_point

    def map(self, tag: str, map_name: str) -> Path:
        return self.root / tag / MAPS / map_pin_name(map_name)

    def link(self, link_name: str) -> Path:
        return self.links / link_name


def map_pin_name(map_name: str) -> str:
    """``xdp_coun.rodata`` -> ``rodata``; other map names are kept."""
    return map_name.rpartition(".")[2]


def for_program(pin_root: Path, program: str) -> ProgramPins:
    return ProgramPins(pin_root / program)
