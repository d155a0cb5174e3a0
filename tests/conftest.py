"""Fixtures shared by every test folder: the built catalog, signed with a throwaway key."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bpfleet_cli.catalog_commands import read_catalog
from bpfleet_core import analysing, artifacts, manifests, signing
from tests import services

REPO = Path(__file__).resolve().parent.parent
CATALOG = REPO / "bpf-catalog"


def bpf_unavailable() -> str | None:
    """Why real eBPF cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "eBPF tests need root"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "the kernel has no BTF"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = bpf_unavailable()
    if reason is None:
        return
    for item in items:
        if "bpf" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"BPF unavailable: {reason}"))


@dataclass(frozen=True)
class SignedCatalog:
    directory: Path
    private_key: Path
    trust: Path
    versions: dict[str, str]

    def files(self, name: str) -> artifacts.ArtifactFiles:
        return artifacts.ArtifactFiles.in_directory(self.directory, name)


def build_catalog(build_dir: Path, extra_cflags: str = "") -> None:
    subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(CATALOG),
            f"BUILD_DIR={build_dir}",
            f"EXTRA_CFLAGS={extra_cflags}",
        ],
        check=True,
    )


def sign_object(
    object_path: Path,
    directory: Path,
    name: str,
    version: str,
    key: Path,
    constraints: manifests.Constraints | None = None,
) -> None:
    """Copy an object into ``directory`` as ``<name>.bpf.o`` with a signed manifest."""
    files = artifacts.ArtifactFiles.in_directory(directory, name)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(object_path, files.object)
    manifest = analysing.analyse(files.object, name=name, version=version)
    artifacts.write_signed(manifest.constrained(constraints), files, key)


@pytest.fixture(scope="session")
def signed_catalog(tmp_path_factory: pytest.TempPathFactory) -> SignedCatalog:
    root = tmp_path_factory.mktemp("catalog")
    build_dir = root / "build"
    build_catalog(build_dir)
    key, public = root / "keys" / "signing.key", root / "trust" / "signing.pub"
    signing.generate_key_pair(key, public)
    # Signed as `bpfleet catalog sign` signs them: with the catalog's constraints.
    entries = read_catalog(CATALOG / "catalog.yaml")
    signed = root / "artifacts"
    for object_path in sorted(build_dir.glob("*.bpf.o")):
        name = object_path.name.removesuffix(".bpf.o")
        entry = entries[name]
        sign_object(object_path, signed, name, entry.version, key, entry.constraints)
    versions = {name: entry.version for name, entry in entries.items()}
    return SignedCatalog(signed, key, public.parent, versions)


@pytest.fixture(scope="session")
def redis() -> Iterator[services.Redis]:
    with services.redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[services.Postgres]:
    with services.postgres_server() as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Each module that uses it runs twice: on embedded SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db')}/bpfleet.db"
    server: services.Postgres = request.getfixturevalue("postgres")
    return server.create_database()
