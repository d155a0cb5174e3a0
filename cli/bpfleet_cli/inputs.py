"""What the commands read from disk: YAML documents, the manifests under a path, signed
artifacts, artifact manifests. Every problem is a ``CommandError`` naming the file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bpfleet_cli.exits import CommandError, ExitCode
from bpfleet_core import artifacts, bundles, manifests, yamlfiles
from bpfleet_core.netpol.validating import FLOW_TEST_SUFFIXES


def read_yaml(text: str, source: str) -> Any:
    """The one place the CLI parses YAML of its own (not manifests: ``bundles`` does)."""
    try:
        return yamlfiles.load(text, source)
    except yaml.YAMLError as error:
        raise CommandError(
            f"{source} is not valid YAML: {' '.join(str(error).split())}", ExitCode.INVALID_INPUT
        ) from None


def read_text(path: Path, limit: int | None = None) -> str:
    """A text file; with ``limit``, at most one byte past it (the YAML loader then
    refuses the file as too large, naming it, without all of it in memory)."""
    try:
        with path.open("rb") as stream:
            data = stream.read(-1 if limit is None else limit + 1)
        return data.decode("utf-8")
    except OSError as error:
        raise CommandError(
            f"cannot read {path}: {error.strerror or error}", ExitCode.INVALID_INPUT
        ) from None
    except UnicodeDecodeError:
        raise CommandError(f"{path} is not UTF-8 text", ExitCode.INVALID_INPUT) from None


def _files_under(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files with one of ``suffixes`` under ``path`` (or ``path`` itself), skipping hidden
    directories such as ``.git``."""
    if not path.exists():
        raise CommandError(f"no such file or directory: {path}", ExitCode.INVALID_INPUT)
    if not path.is_dir():
        return [path] if path.name.endswith(suffixes) else []
    return [
        item
        for item in sorted(path.rglob("*"))
        if item.is_file()
        and item.name.endswith(suffixes)
        and not any(part.startswith(".") for part in item.relative_to(path).parts)
    ]


def manifest_texts(paths: list[Path], *, required: bool = True) -> dict[str, str]:
    """Every ``*.yaml``/``*.yml`` manifest under ``paths``: file name -> text."""
    found = {
        str(item): read_text(item, yamlfiles.LIMITS.file_bytes)
        for path in paths
        for item in _files_under(path, bundles.MANIFEST_SUFFIXES)
        if bundles.is_manifest(item.name)
    }
    if required and not found:
        raise CommandError("no *.yaml or *.yml manifests found", ExitCode.INVALID_INPUT)
    return found


def flow_test_texts(paths: list[Path]) -> dict[str, str]:
    """Every flow-test file (``*.flows.yaml``) under ``paths``: file name -> text."""
    return {
        str(item): read_text(item, yamlfiles.LIMITS.file_bytes)
        for path in paths
        for item in _files_under(path, FLOW_TEST_SUFFIXES)
    }


@dataclass(frozen=True)
class ArtifactManifest:
    """An artifact's manifest read from disk, for a preflight before it is deployed."""

    file: str
    manifest: manifests.Manifest


def artifact_manifests(paths: list[Path]) -> list[ArtifactManifest]:
    """Every ``<name>.manifest.json`` under ``paths``."""
    found = []
    for path in paths:
        for item in _files_under(path, (artifacts.MANIFEST_SUFFIX,)):
            try:
                manifest = manifests.parse(item.read_bytes())
            except OSError as error:
                raise CommandError(
                    f"cannot read {item}: {error.strerror or error}", ExitCode.INVALID_INPUT
                ) from None
            except (ValidationError, ValueError) as error:
                first = error.errors()[0]["msg"] if isinstance(error, ValidationError) else error
                raise CommandError(
                    f"{item} is not an artifact manifest: {first}", ExitCode.INVALID_INPUT
                ) from None
            found.append(ArtifactManifest(str(item), manifest))
    return found


def artifact_files(path: Path) -> list[artifacts.ArtifactFiles]:
    """The signed artifacts at ``path``: an object ``<name>.bpf.o`` (its manifest and
    signature beside it), or every object in a directory."""
    if path.is_dir():
        objects = sorted(path.glob(f"*{artifacts.OBJECT_SUFFIX}"))
        if not objects:
            raise CommandError(
                f"no *{artifacts.OBJECT_SUFFIX} objects in {path}", ExitCode.INVALID_INPUT
            )
    elif path.is_file() and path.name.endswith(artifacts.OBJECT_SUFFIX):
        objects = [path]
    elif path.exists():
        raise CommandError(
            f"{path} is neither a directory nor a *{artifacts.OBJECT_SUFFIX} object",
            ExitCode.INVALID_INPUT,
        )
    else:
        raise CommandError(f"no such file or directory: {path}", ExitCode.INVALID_INPUT)
    return [
        artifacts.ArtifactFiles.in_directory(
            item.parent, item.name.removesuffix(artifacts.OBJECT_SUFFIX)
        )
        for item in objects
    ]
