"""Shared set-up for benchmarks: a signed catalog, a veth pair in a namespace."""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import yaml

from bpfleet_core import analysing, artifacts, signing

REPO = Path(__file__).resolve().parent.parent
_CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def signed_catalog() -> Iterator[tuple[Path, Path]]:
    """Build and sign the catalog into a temporary directory; yield (artifacts, trust)."""
    with tempfile.TemporaryDirectory(prefix="bpfleet-bench-") as temporary:
        root = Path(temporary)
        subprocess.run(
            ["make", "-s", "-C", str(REPO / "bpf-catalog"), f"BUILD_DIR={root}/build"], check=True
        )
        key, public = root / "signing.key", root / "trust" / "signing.pub"
        signing.generate_key_pair(key, public)
        versions = yaml.safe_load((REPO / "bpf-catalog" / "catalog.yaml").read_text())
        for object_path in sorted((root / "build").glob("*.bpf.o")):
            name = object_path.name.removesuffix(".bpf.o")
            manifest = analysing.analyse(
                object_path, name=name, version=str(versions[name]["version"])
            )
            artifacts.write_signed(
                manifest, artifacts.ArtifactFiles.in_directory(root / "build", name), key
            )
        yield root / "build", public.parent


@contextlib.contextmanager
def namespace_with_veth() -> Iterator[str]:
    """A network namespace holding an up veth pair; this thread is moved into it."""
    name = f"bpfleet-bench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        for command in (
            ["link", "add", "bench0", "type", "veth", "peer", "name", "bench1"],
            ["link", "set", "bench0", "up"],
            ["link", "set", "bench1", "up"],
        ):
            subprocess.run(["ip", "-n", name, *command], check=True)
        libc.setns(target, _CLONE_NEWNET)
        yield name
    finally:
        libc.setns(original, _CLONE_NEWNET)
        os.close(original)
        os.close(target)
        subprocess.run(["ip", "netns", "del", name], check=True)
