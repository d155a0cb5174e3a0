"""Signatures over artifact manifests: ECDSA P-256 with SHA-256, in cosign's blob format.

A signature file holds the base64 of a DER-encoded ECDSA signature, exactly what
``cosign sign-blob --key`` writes; keys are PEM (PKCS#8 private, SubjectPublicKeyInfo
public). So any standard tool verifies our signatures, e.g.::

    base64 -d X.manifest.json.sig > sig.der
    openssl dgst -sha256 -verify signing.pub -signature sig.der X.manifest.json
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

PUBLIC_KEY_SUFFIX = ".pub"


class SignatureError(Exception):
    """A signature is missing, malformed, or matches no trusted key."""


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    public_key: ec.EllipticCurvePublicKey
    source: str


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """A short, stable fingerprint: sha256 of the DER public key, first 16 hex digits."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def generate_key_pair(private_path: Path, public_path: Path) -> str:
    """Write a new P-256 key pair (private key readable by the owner only); return its id.

    An existing private key is never overwritten (``FileExistsError``): it may be the
    only copy of the key a fleet's artifacts are signed with.
    """
    private_key = ec.generate_private_key(ec.SECP256R1())
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: created here, owner-only from the start, or not at all.
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FileExistsError(
            f"{private_path} already exists; refusing to overwrite a private key"
        ) from None
    with os.fdopen(fd, "wb") as stream:
        stream.write(private_pem)
    public_path.write_bytes(public_pem)
    return key_id(private_key.public_key())


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise SignatureError(f"cannot read private key {path}: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SignatureError(f"{path} is not an ECDSA P-256 private key")
    return key


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as error:
        raise SignatureError(f"cannot read public key {path}: {error}") from error
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise SignatureError(f"{path} is not an ECDSA P-256 public key")
    return key


def sign(data: bytes, private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """Return the signature file's content: base64(DER(ECDSA-SHA256(data)))."""
    der = private_key.sign(data, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der)


def _decode_signature(signature: bytes) -> bytes:
    text = signature.strip()
    if not text:
        raise SignatureError("signature file is empty")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise SignatureError("signature is not valid base64") from error


def key_files(paths: Iterable[Path]) -> list[Path]:
    """The public key files a trust store is read from: each file given, and the
    ``*.pub`` files of each directory given, in name order."""
    files: list[Path] = []
    for path in paths:
        files += sorted(path.glob(f"*{PUBLIC_KEY_SUFFIX}")) if path.is_dir() else [path]
    return files


class TrustStore:
    """The public keys an agent or the API accepts signatures from."""

    def __init__(self, keys: Sequence[TrustedKey]) -> None:
        self.keys = tuple(keys)

    @classmethod
    def from_paths(cls, paths: Iterable[Path]) -> TrustStore:
        """Load keys from files and from directories of ``*.pub`` files."""
        keys: list[TrustedKey] = []
        for file in key_files(paths):
            public_key = load_public_key(file)
            keys.append(TrustedKey(key_id(public_key), public_key, str(file)))
        return cls(keys)

    def verify(self, data: bytes, signature: bytes) -> TrustedKey:
        """Return the trusted key that signed ``data``; raise ``SignatureError`` otherwise."""
        if not self.keys:
            raise SignatureError("the trust store holds no keys; nothing can be trusted")
        der = _decode_signature(signature)
        for trusted in self.keys:
            try:
                trusted.public_key.verify(der, data, ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                continue
            return trusted
        raise SignatureError(
            f"signature does not verify against any of the {len(self.keys)} trusted key(s)"
        )
