"""``bpfleet catalog`` and ``bpfleet keys``: analyse, sign, verify and check artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from bpfleet_core import analysing, artifacts, features, manifests, signing, yamlfiles

app = typer.Typer(
    no_args_is_help=True, help="Build manifests for eBPF objects, sign and check them."
)
keys_app = typer.Typer(no_args_is_help=True, help="Signing keys.")

TrustOption = Annotated[
    list[Path], typer.Option("--trust", help="Public key file, or directory of *.pub files.")
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"bpfleet: {message}", err=True)
    return typer.Exit(1)


class CatalogEntry(BaseModel):
    """One program of ``catalog.yaml``: its version, and what its signer allows
    (``constraints``: where each entry point may attach, which config values)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    description: str = ""
    constraints: manifests.Constraints | None = None


def read_catalog(catalog_file: Path) -> dict[str, CatalogEntry]:
    """``catalog.yaml``, by program name; ``ValueError`` saying what is wrong."""
    try:
        document = yamlfiles.load(yamlfiles.read(catalog_file), str(catalog_file)) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read {catalog_file}: {error}") from error
    if not isinstance(document, dict):
        raise ValueError(f"{catalog_file}: not a mapping of program names")
    entries: dict[str, CatalogEntry] = {}
    for name, entry in document.items():
        try:
            entries[str(name)] = CatalogEntry.model_validate(entry)
        except ValidationError as error:
            raise ValueError(f"{catalog_file}: {name}: {error}") from error
    return entries


def sign_object(object_path: Path, name: str, entry: CatalogEntry, key: Path) -> manifests.Manifest:
    """Analyse the object, add the catalog's constraints, and write the signed manifest
    beside it (``<name>.manifest.json`` and its ``.sig``)."""
    manifest = analysing.analyse(object_path, name=name, version=entry.version)
    if entry.constraints is not None:
        manifest = manifest.constrained(entry.constraints)
    directory = object_path.parent
    artifacts.write_signed(manifest, artifacts.ArtifactFiles.in_directory(directory, name), key)
    return manifest


@keys_app.command("generate")
def keys_generate(
    private_key: Annotated[Path, typer.Argument(help="Where to write the private key (PEM).")],
    public_key: Annotated[Path, typer.Argument(help="Where to write the public key (PEM).")],
) -> None:
    """Create an ECDSA P-256 signing key pair (cosign- and openssl-compatible)."""
    key_id = signing.generate_key_pair(private_key, public_key)
    typer.echo(f"key {key_id}: private {private_key}, public {public_key}")


@app.command("analyse")
def analyse(
    object_path: Annotated[Path, typer.Argument(help="A BPF ELF object.")],
    name: Annotated[str | None, typer.Option(help="Artifact name (default: file stem).")] = None,
    version: Annotated[str, typer.Option(help="Artifact version.")] = "0.0.0",
) -> None:
    """Print the manifest derived from an object's ELF (unsigned)."""
    try:
        manifest = analysing.analyse(object_path, name=name or _stem(object_path), version=version)
    except analysing.AnalysisError as error:
        raise _fail(str(error)) from error
    typer.echo(manifest.model_dump_json(indent=2))


def _stem(object_path: Path) -> str:
    return object_path.name.removesuffix(artifacts.OBJECT_SUFFIX).removesuffix(".o")


@app.command("sign")
def sign(
    objects: Annotated[Path, typer.Argument(help="Directory of built <name>.bpf.o objects.")],
    key: Annotated[Path, typer.Option(help="Private signing key (PEM).")],
    catalog: Annotated[Path, typer.Option(help="catalog.yaml with each program's version.")],
) -> None:
    """Analyse every object in a directory and write its signed manifest next to it,
    with the constraints the catalog gives it."""
    try:
        entries = read_catalog(catalog)
    except ValueError as error:
        raise _fail(str(error)) from error
    built = sorted(objects.glob(f"*{artifacts.OBJECT_SUFFIX}"))
    if not built:
        raise _fail(f"no *{artifacts.OBJECT_SUFFIX} objects in {objects}")
    for object_path in built:
        name = _stem(object_path)
        if name not in entries:
            raise _fail(f"{object_path.name} has no entry in {catalog}")
        try:
            manifest = sign_object(object_path, name, entries[name], key)
        except analysing.AnalysisError as error:
            raise _fail(str(error)) from error
        except ValueError as error:
            raise _fail(f"{catalog}: {name}: {error}") from error
        constrained = " (constrained)" if manifest.constraints else ""
        typer.echo(
            f"signed {name}@{manifest.version} sha256:{manifest.object.sha256[:12]}{constrained}"
        )


@app.command("verify")
def verify(
    directory: Annotated[Path, typer.Argument(help="Directory holding the artifact.")],
    name: Annotated[str, typer.Argument(help="Artifact name.")],
    trust: TrustOption,
) -> None:
    """Verify an artifact's signature and object digest against trusted keys."""
    try:
        verified = artifacts.verify(
            artifacts.ArtifactFiles.in_directory(directory, name),
            signing.TrustStore.from_paths(trust),
        )
    except (artifacts.ArtifactRejected, signing.SignatureError) as error:
        raise _fail(f"rejected: {error}") from error
    typer.echo(f"ok: {name}@{verified.manifest.version} signed by key {verified.signer.key_id}")


@app.command("check")
def check(
    manifest_path: Annotated[Path, typer.Argument(help="An artifact's manifest.json.")],
    report_paths: Annotated[list[Path], typer.Argument(help="Saved feature reports (JSON).")],
) -> None:
    """Check an artifact's requirements against saved node feature reports, offline."""
    try:
        manifest = manifests.parse(manifest_path.read_bytes())
    except (OSError, ValueError) as error:
        raise _fail(f"{manifest_path}: {error}") from error
    incompatible = 0
    for report_path in report_paths:
        try:
            report = features.FeatureReport.load(report_path)
        except (OSError, ValueError) as error:
            raise _fail(f"{report_path}: {error}") from error
        missing = features.check(manifest.requirements, report)
        if missing:
            incompatible += 1
            typer.echo(f"{report.node}: incompatible: {features.summarize(missing)}")
        else:
            typer.echo(f"{report.node}: compatible")
    if incompatible:
        raise typer.Exit(1)
