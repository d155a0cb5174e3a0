"""Artifact verification: signature first, then the object's digest, then the schema."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from bpfleet_core import artifacts, signing
from tests.conftest import SignedCatalog


@pytest.fixture
def artifact(signed_catalog: SignedCatalog, tmp_path: Path) -> artifacts.ArtifactFiles:
    source = signed_catalog.files("xdp_counter")
    files = artifacts.ArtifactFiles.in_directory(tmp_path, "xdp_counter")
    for name in ("object", "manifest", "signature"):
        shutil.copyfile(getattr(source, name), getattr(files, name))
    return files


@pytest.fixture
def trust(signed_catalog: SignedCatalog) -> signing.TrustStore:
    return signing.TrustStore.from_paths([signed_catalog.trust])


def test_a_good_artifact_verifies(
    artifact: artifacts.ArtifactFiles, trust: signing.TrustStore
) -> None:
    verified = artifacts.verify(artifact, trust)
    assert verified.manifest.name == "xdp_counter"
    assert verified.manifest.object.sha256 == artifacts.sha256_file(artifact.object)


def test_digest_pinning(artifact: artifacts.ArtifactFiles, trust: signing.TrustStore) -> None:
    with pytest.raises(artifacts.ArtifactRejected, match="the assignment asks for 000000"):
        artifacts.verify(artifact, trust, expected_digest="0" * 64)


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda f: f.signature.unlink(), artifacts.RejectionReason.UNSIGNED),
        (lambda f: f.object.unlink(), artifacts.RejectionReason.NOT_FOUND),
        (
            lambda f: f.object.write_bytes(f.object.read_bytes() + b"\0"),
            artifacts.RejectionReason.DIGEST_MISMATCH,
        ),
        (
            lambda f: f.manifest.write_bytes(f.manifest.read_bytes().replace(b"1.0.0", b"9.9.9")),
            artifacts.RejectionReason.BAD_SIGNATURE,
        ),
    ],
    ids=["unsigned", "missing-object", "tampered-object", "tampered-manifest"],
)
def test_spoiled_artifacts_are_rejected(
    artifact: artifacts.ArtifactFiles,
    trust: signing.TrustStore,
    spoil: object,
    reason: artifacts.RejectionReason,
) -> None:
    spoil(artifact)  # type: ignore[operator]
    with pytest.raises(artifacts.ArtifactRejected) as rejected:
        artifacts.verify(artifact, trust)
    assert rejected.value.reason == reason


def test_signed_but_unparseable_manifest(
    artifact: artifacts.ArtifactFiles, signed_catalog: SignedCatalog, trust: signing.TrustStore
) -> None:
    artifact.manifest.write_bytes(b'{"name": "x"}')
    artifact.signature.write_bytes(
        signing.sign(
            artifact.manifest.read_bytes(), signing.load_private_key(signed_catalog.private_key)
        )
    )
    with pytest.raises(artifacts.ArtifactRejected) as rejected:
        artifacts.verify(artifact, trust)
    assert rejected.value.reason == artifacts.RejectionReason.INVALID_MANIFEST


def test_verification_hands_on_the_bytes_it_hashed(
    artifact: artifacts.ArtifactFiles, trust: signing.TrustStore, signed_catalog: SignedCatalog
) -> None:
    original = artifact.object.read_bytes()
    verified = artifacts.verify(artifact, trust)
    # Swapped after verification: what was verified is still what is handed on.
    shutil.copyfile(signed_catalog.files("tc_counter").object, artifact.object)
    assert verified.object_bytes == original
    assert hashlib.sha256(verified.object_bytes).hexdigest() == verified.manifest.object.sha256


def test_an_unreadable_file_is_a_rejection_not_an_os_error(
    artifact: artifacts.ArtifactFiles, trust: signing.TrustStore
) -> None:
    artifact.object.unlink()
    artifact.object.mkdir()  # present, but reading it fails (EISDIR)
    with pytest.raises(artifacts.ArtifactRejected) as rejected:
        artifacts.verify(artifact, trust)
    assert rejected.value.reason == artifacts.RejectionReason.UNREADABLE
    assert "cannot read" in rejected.value.message


def test_a_validly_signed_artifact_under_another_name_is_refused(
    signed_catalog: SignedCatalog, tmp_path: Path, trust: signing.TrustStore
) -> None:
    source = signed_catalog.files("tc_counter")
    posing = artifacts.ArtifactFiles.in_directory(tmp_path, "xdp_counter")
    for name in ("object", "manifest", "signature"):
        shutil.copyfile(getattr(source, name), getattr(posing, name))
    assert artifacts.verify(posing, trust).manifest.name == "tc_counter"  # signature is fine
    with pytest.raises(artifacts.ArtifactRejected) as rejected:
        artifacts.verify(posing, trust, expected_name="xdp_counter")
    assert rejected.value.reason == artifacts.RejectionReason.NAME_MISMATCH
    assert "signed for tc_counter (tc_counter.bpf.o), not for xdp_counter" in str(rejected.value)
