"""Signed artifacts on disk: an object, its manifest, and the manifest's signature.

Layout, in one directory: ``<name>.bpf.o``, ``<name>.manifest.json`` and
``<name>.manifest.json.sig``. Verification checks the signature over the manifest's
exact bytes first, then that the object is the one the manifest names; only then is
the manifest parsed and trusted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import ValidationError

from bpfleet_core import manifests, signing

OBJECT_SUFFIX = ".bpf.o"
MANIFEST_SUFFIX = ".manifest.json"
SIGNATURE_SUFFIX = ".manifest.json.sig"


class RejectionReason(StrEnum):
    NOT_FOUND = "ArtifactNotFound"
    UNSIGNED = "Unsigned"
    BAD_SIGNATURE = "BadSignature"
    DIGEST_MISMATCH = "ObjectDigestMismatch"
    INVALID_MANIFEST = "InvalidManifest"


class ArtifactRejected(Exception):
    def __init__(self, reason: RejectionReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ArtifactFiles:
    object: Path
    manifest: Path
    signature: Path

    @classmethod
    def in_directory(cls, directory: Path, name: str) -> ArtifactFiles:
        return cls(
            object=directory / f"{name}{OBJECT_SUFFIX}",
            manifest=directory / f"{name}{MANIFEST_SUFFIX}",
            signature=directory / f"{name}{SIGNATURE_SUFFIX}",
        )


@dataclass(frozen=True)
class VerifiedArtifact:
    files: ArtifactFiles
    manifest: manifests.Manifest
    signer: signing.TrustedKey


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def write_signed(
    manifest: manifests.Manifest, files: ArtifactFiles, private_key_path: Path
) -> None:
    """Write the manifest's canonical bytes and their signature next to the object."""
    private_key = signing.load_private_key(private_key_path)
    data = manifests.write(manifest, files.manifest)
    files.signature.write_bytes(signing.sign(data, private_key) + b"\n")


def verify(
    files: ArtifactFiles, trust: signing.TrustStore, expected_digest: str | None = None
) -> VerifiedArtifact:
    """Verify signature, then object digest, then manifest schema; raise ``ArtifactRejected``."""
    for path in (files.object, files.manifest):
        if not path.is_file():
            raise ArtifactRejected(RejectionReason.NOT_FOUND, f"missing artifact file {path}")
    if not files.signature.is_file():
        raise ArtifactRejected(
            RejectionReason.UNSIGNED, f"no signature for {files.manifest.name}: unsigned artifact"
        )
    manifest, signer = verify_bytes(
        object_digest=sha256_file(files.object),
        manifest_bytes=files.manifest.read_bytes(),
        signature=files.signature.read_bytes(),
        trust=trust,
        label=files.manifest.name,
        expected_digest=expected_digest,
    )
    return VerifiedArtifact(files=files, manifest=manifest, signer=signer)


def verify_bytes(
    *,
    object_digest: str,
    manifest_bytes: bytes,
    signature: bytes,
    trust: signing.TrustStore,
    label: str = "manifest",
    expected_digest: str | None = None,
) -> tuple[manifests.Manifest, signing.TrustedKey]:
    """The checks of ``verify`` on bytes in memory (uploads, downloads)."""
    if not signature.strip():
        raise ArtifactRejected(RejectionReason.UNSIGNED, f"no signature for {label}: unsigned")
    try:
        signer = trust.verify(manifest_bytes, signature)
    except signing.SignatureError as error:
        raise ArtifactRejected(RejectionReason.BAD_SIGNATURE, f"{label}: {error}") from error
    try:
        manifest = manifests.parse(manifest_bytes)
    except (ValidationError, ValueError) as error:
        # Signed but unparseable: the signer shipped a manifest this version cannot read.
        raise ArtifactRejected(RejectionReason.INVALID_MANIFEST, f"{label}: {error}") from error
    if object_digest != manifest.object.sha256:
        raise ArtifactRejected(
            RejectionReason.DIGEST_MISMATCH,
            f"the object has sha256 {object_digest[:16]}…, the signed manifest names "
            f"{manifest.object.sha256[:16]}…: the object was modified after signing",
        )
    if expected_digest is not None and expected_digest != object_digest:
        raise ArtifactRejected(
            RejectionReason.DIGEST_MISMATCH,
            f"the object has sha256 {object_digest[:16]}…, the assignment asks for "
            f"{expected_digest[:16]}…",
        )
    return manifest, signer
