"""``bpfleet catalog`` and ``bpfleet keys``: analyse, sign, verify and check artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

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


def _versions(catalog_file: Path) -> dict[str, str]:
    try:
        document = yamlfiles.load(yamlfiles.read(catalog_file), str(catalog_file)) or {}
    except (OSError, yaml.YAMLError) as error:
        raise _fail(f"cannot read {catalog_file}: {' '.join(str(error).split())}") from error
    if not isinstance(document, dict) or not all(
        isinstance(entry, dict) and "version" in entry for entry in document.values()
    ):
        raise _fail(f"{catalog_file}: expected each program's name mapped to {{version: ...}}")
    return {str(name): str(entry["version"]) for name, entry in document.items()}


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
    """Analyse every object in a directory and write its signed manifest next to it."""
    versions = _versions(catalog)
    built = sorted(objects.glob(f"*{artifacts.OBJECT_SUFFIX}"))
    if not built:
        raise _fail(f"no *{artifacts.OBJECT_SUFFIX} objects in {objects}")
    for object_path in built:
        name = _stem(object_path)
        if name not in versions:
            raise _fail(f"{object_path.name} has no entry in {catalog}")
        try:
            manifest = analysing.analyse(object_path, name=name, version=versions[name])
        except analysing.AnalysisError as error:
            raise _fail(str(error)) from error
        artifacts.write_signed(manifest, artifacts.ArtifactFiles.in_directory(objects, name), key)
        typer.echo(f"signed {name}@{manifest.version} sha256:{manifest.object.sha256[:12]}")


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
