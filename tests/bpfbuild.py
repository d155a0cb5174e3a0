"""Compiling small BPF C sources in tests, the way bpf-catalog/Makefile compiles objects.

``-target bpf`` leaves out the host's system include directories, among them Debian's
multiarch one that holds ``<asm/types.h>`` (which ``<linux/bpf.h>`` includes). As the
Makefile does, they come from clang's own search list for the host and are searched
after the target's: one rule for every clang Debian ships (clang 19 no longer answers
``-print-multiarch``).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import pytest

_SEARCH_LIST_START = "#include <...> search starts here:"
_SEARCH_LIST_END = "End of search list."


def clang() -> str:
    """clang's path; skips the test where it is not installed."""
    path = shutil.which("clang")
    if path is None:
        pytest.skip("clang is not installed (scripts/install-system-deps.sh installs it)")
    return path


def parse_search_list(verbose_output: str) -> tuple[str, ...]:
    """The ``#include <...>`` directories from ``clang -v -E``'s report, in order."""
    lines = verbose_output.splitlines()
    try:
        start = lines.index(_SEARCH_LIST_START) + 1
        end = lines.index(_SEARCH_LIST_END, start)
    except ValueError as error:
        raise ValueError(f"no include search list in clang's output:\n{verbose_output}") from error
    return tuple(line.strip() for line in lines[start:end] if line.startswith(" /"))


@cache
def host_include_flags(compiler: str) -> tuple[str, ...]:
    """``-idirafter DIR`` for each of the host's system include directories."""
    report = subprocess.run(
        [compiler, "-v", "-E", "-x", "c", "-"],
        input="",
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    return tuple(
        flag for directory in parse_search_list(report) for flag in ("-idirafter", directory)
    )


def compile_bpf(
    source: Path, output: Path, *, debug_info: bool = True, flags: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """``clang -target bpf -O2`` of ``source`` into ``output``; the caller checks the result."""
    compiler = clang()
    command = [
        compiler,
        *(["-g"] if debug_info else []),
        "-O2",
        "-target",
        "bpf",
        *flags,
        *host_include_flags(compiler),
        "-c",
        str(source),
        "-o",
        str(output),
    ]
    return subprocess.run(command, capture_output=True, text=True, check=False)
