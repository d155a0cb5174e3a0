"""Signed artifacts on disk: an object, its manifest, and the manifest's signature.

Layout, in one directory: ``<name>.bpf.o``, ``<name>.manifest.json`` and
``<name>.manifest.json.sig``. Verification checks the signature over the manifest's
exact bytes first, then that the object is the one the manifest names; only then is
the manifest parsed and trusted. Each file is read once: the object bytes that were
hashed are the ones handed on (``VerifiedArtifact.object_bytes``), so replacing the file
after verification changes nothing that is loaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pydantic import ValidationError

from bpfleet_core import manifests, signing

OBJECT_SUFFIX = ".bpf.o"
MANIFEST_SUFFIX = ".manifest.json"
SIGNATURE_SUFFIX = ".manifest.json.sig"


class RejectionReason(StrEnum):
    NOT_FOUND = "ArtifactNotFound"
    UNREADABLE = "ArtifactUnreadable"
    NAME_MISMATCH = "ArtifactNameMismatch"
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
    # The object as read and hashed: load these bytes, never ``files.object`` again.
    object_bytes: bytes = field(repr=False)


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


def _read(path: Path, missing: RejectionReason = RejectionReason.NOT_FOUND) -> bytes:
    """The file's bytes; a missing file is rejected as ``missing``, an unreadable one as
    UNREADABLE (reading once, instead of checking first, leaves no window between)."""
    try:
        return path.read_bytes()
    except FileNotFoundError as error:
        unsigned = missing == RejectionReason.UNSIGNED
        what = "unsigned artifact, no signature" if unsigned else "missing artifact file"
        raise ArtifactRejected(missing, f"{what} {path}") from error
    except OSError as error:
        raise ArtifactRejected(
            RejectionReason.UNREADABLE, f"cannot read {path}: {error.strerror or error}"
        ) from error


def verify(
    files: ArtifactFiles,
    trust: signing.TrustStore,
    expected_digest: str | None = None,
    *,
    expected_name: str | None = None,
) -> VerifiedArtifact:
    """Verify signature, then object digest, then manifest schema; raise ``ArtifactRejected``.

    With ``expected_name``, the signed manifest must also be that artifact's, object file
    name included: a validly signed artifact copied in under another name is refused.
    """
    object_bytes = _read(files.object)
    manifest_bytes = _read(files.manifest)
    signature = _read(files.signature, RejectionReason.UNSIGNED)
    manifest, signer = verify_bytes(
        object_digest=sha256_bytes(object_bytes),
        manifest_bytes=manifest_bytes,
        signature=signature,
        trust=trust,
        label=files.manifest.name,
        expected_digest=expected_digest,
    )
    if expected_name is not None:
        expected_file = f"{expected_name}{OBJECT_SUFFIX}"
        if (manifest.name, manifest.object.filename) != (expected_name, expected_file):
            raise ArtifactRejected(
                RejectionReason.NAME_MISMATCH,
                f"{files.manifest.name} is signed for {manifest.name} "
                f"({manifest.object.filename}), not for {expected_name} ({expected_file})",
            )
    return VerifiedArtifact(
        files=files, manifest=manifest, signer=signer, object_bytes=object_bytes
    )


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
