"""``bpfleet artifact push|list|inspect``: signed artifacts in the fleet API.

A push verifies every artifact here first, against the trust store given (``--trust``,
``BPFLEET_TRUST`` or the context's), and uploads nothing unless all of them are signed
by a trusted key and unchanged since: what the fleet would refuse never leaves CI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml

from bpfleet_cli import contexts, inputs
from bpfleet_cli.exits import CommandError, ExitCode
from bpfleet_cli.options import ContextOption, connect
from bpfleet_cli.tables import age, table
from bpfleet_core import artifacts, signing

if TYPE_CHECKING:
    from bpfleet_api.views import ArtifactView

app = typer.Typer(no_args_is_help=True, help="Signed artifacts in the fleet: push, list, inspect.")

_DIGEST = re.compile(r"^(sha256:)?([0-9a-f]{7,64})$")


def _trust_store(paths: list[Path], context: str | None) -> signing.TrustStore:
    chosen = tuple(paths) or contexts.resolve(context).trust
    if not chosen:
        raise CommandError(
            "no trust store to verify with: pass --trust KEY.pub (or a directory of *.pub), "
            "set BPFLEET_TRUST, or log in with --trust",
            ExitCode.CONFIGURATION,
        )
    try:
        store = signing.TrustStore.from_paths(chosen)
    except (OSError, signing.SignatureError, ValueError) as error:
        raise CommandError(
            f"cannot load the trust store: {error}", ExitCode.CONFIGURATION
        ) from None
    if not store.keys:
        shown = ", ".join(str(path) for path in chosen)
        raise CommandError(f"the trust store ({shown}) holds no keys", ExitCode.CONFIGURATION)
    return store


@app.command("push")
def push(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Built objects (NAME.bpf.o, signed manifest beside it) or directories of them."
        ),
    ],
    trust: Annotated[
        list[Path],
        typer.Option(
            "--trust",
            help="Public key, or directory of *.pub, to verify against.",
            show_default=False,
        ),
    ] = [],  # noqa: B006 - typer reads the default; it is never mutated
    context: ContextOption = None,
) -> None:
    """Verify each artifact locally (signature by a trusted key, object unchanged), then
    upload them all; nothing is uploaded when any is unsigned, untrusted or tampered."""
    store = _trust_store(trust, context)
    found = [files for path in paths for files in inputs.artifact_files(path)]
    verified = []
    for files in found:
        name = files.object.name.removesuffix(artifacts.OBJECT_SUFFIX)
        try:
            verified.append(artifacts.verify(files, store, expected_name=name))
        except artifacts.ArtifactRejected as rejected:
            raise CommandError(
                f"{files.object}: refused before upload ({rejected.reason.value}): "
                f"{rejected.message}; nothing was pushed",
                ExitCode.INVALID_INPUT,
            ) from None
    with connect(context) as client:
        for artifact in verified:
            pushed = client.push_artifact(
                artifact.object_bytes,
                artifact.files.manifest.read_bytes(),
                artifact.files.signature.read_bytes(),
            )
            typer.echo(
                f"pushed {pushed.name}@{pushed.version} sha256:{pushed.digest[:12]} "
                f"(signed by key {artifact.signer.key_id})"
            )


@app.command("list")
def list_artifacts(
    output: Annotated[str, typer.Option("--output", "-o", help="table, json or yaml.")] = "table",
    context: ContextOption = None,
) -> None:
    """Every artifact the fleet holds."""
    with connect(context) as client:
        found = client.artifacts()
    documents = [
        artifact.model_dump(mode="json", by_alias=True, exclude={"manifest"}) for artifact in found
    ]
    if output == "json":
        typer.echo(json.dumps(documents, indent=2))
    elif output == "yaml":
        typer.echo(yaml.safe_dump(documents, sort_keys=False).rstrip())
    elif output == "table":
        rows = [
            [a.name, a.version, f"sha256:{a.digest[:12]}", a.signer, age(a.uploaded_at)]
            for a in found
        ]
        for line in table(("NAME", "VERSION", "DIGEST", "SIGNER", "AGE"), rows):
            typer.echo(line)
    else:
        raise CommandError(f"--output: {output!r} is not table, json or yaml", ExitCode.USAGE)


def find(found: list[ArtifactView], reference: str) -> ArtifactView:
    """``NAME``, ``NAME@VERSION`` (the newest upload), or a digest (or its first 7+ hex)."""
    digest = _DIGEST.match(reference)
    if digest is not None:
        matching = [a for a in found if a.digest.startswith(digest[2])]
        if len(matching) > 1:
            raise CommandError(f"digest {reference} is ambiguous", ExitCode.USAGE)
    else:
        name, _, version = reference.partition("@")
        matching = [a for a in found if a.name == name and (not version or a.version == version)]
    if not matching:
        raise CommandError(f"no artifact {reference} in the fleet", ExitCode.NOT_FOUND)
    return max(matching, key=lambda artifact: artifact.uploaded_at)


@app.command("inspect")
def inspect(
    reference: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or a digest.")],
    output: Annotated[str, typer.Option("--output", "-o", help="text, json or yaml.")] = "text",
    context: ContextOption = None,
) -> None:
    """An artifact's manifest: entry points, maps, configuration, and what it needs of a
    kernel (the requirements preflight checks)."""
    with connect(context) as client:
        artifact = find(client.artifacts(), reference)
    document = artifact.model_dump(mode="json", by_alias=True)
    if output == "json":
        typer.echo(json.dumps(document, indent=2))
        return
    if output == "yaml":
        typer.echo(yaml.safe_dump(document, sort_keys=False).rstrip())
        return
    manifest = artifact.manifest
    needs = manifest.requirements
    lines = [
        f"Name:         {artifact.name}@{artifact.version}",
        f"Digest:       sha256:{artifact.digest}",
        f"Signed by:    key {artifact.signer}",
        f"Uploaded:     {age(artifact.uploaded_at)} ago",
        f"License:      {manifest.license}",
        "Entry points: "
        + ", ".join(f"{entry.name} ({entry.section})" for entry in manifest.entry_points),
        f"Maps:         {', '.join(f'{m.name} ({m.type})' for m in manifest.maps) or '-'}",
        f"Config:       {', '.join(v.name for v in manifest.config) or '-'}",
        "Requires:",
        f"  program types: {', '.join(needs.program_types) or '-'}",
        f"  attach kinds:  {', '.join(kind.value for kind in needs.attach_kinds) or '-'}",
        f"  map types:     {', '.join(needs.map_types) or '-'}",
        "  helpers:       "
        + (
            "; ".join(
                f"{ptype}: {', '.join(names)}" for ptype, names in sorted(needs.helpers.items())
            )
            or "-"
        ),
        f"  kfuncs:        {', '.join(needs.kfuncs) or '-'}",
        f"  kernel BTF:    {'yes' if needs.kernel_btf else 'no'}; global data: "
        f"{'yes' if needs.global_data else 'no'}",
    ]
    for line in lines:
        typer.echo(line)
