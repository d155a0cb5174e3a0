"""Signatures interoperate with openssl both ways, and verification is strict."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from bpfleet_core import signing


@pytest.fixture
def key_pair(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "signing.key", tmp_path / "signing.pub"
    signing.generate_key_pair(private, public)
    return private, public


def test_openssl_verifies_our_signature(key_pair: tuple[Path, Path], tmp_path: Path) -> None:
    private, public = key_pair
    data = tmp_path / "manifest.json"
    data.write_bytes(b'{"name":"xdp_counter"}\n')
    signature = tmp_path / "manifest.json.sig"
    signature.write_bytes(signing.sign(data.read_bytes(), signing.load_private_key(private)))
    # The documented one-liner: base64 -d sig > sig.der; openssl dgst -sha256 -verify ...
    der = tmp_path / "sig.der"
    der.write_bytes(base64.b64decode(signature.read_bytes()))
    result = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(public), "-signature", str(der), str(data)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Verified OK" in result.stdout
    data.write_bytes(b'{"name":"evil"}\n')
    tampered = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(public), "-signature", str(der), str(data)],
        capture_output=True,
        check=False,
    )
    assert tampered.returncode != 0


def test_we_verify_an_openssl_signature(tmp_path: Path) -> None:
    private, public = tmp_path / "openssl.key", tmp_path / "openssl.pub"
    subprocess.run(
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(private)],
        check=True,
    )
    subprocess.run(
        ["openssl", "ec", "-in", str(private), "-pubout", "-out", str(public)],
        check=True,
        capture_output=True,
    )
    data = tmp_path / "manifest.json"
    data.write_bytes(b'{"name":"tc_counter"}\n')
    der = tmp_path / "sig.der"
    subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(private), "-out", str(der), str(data)],
        check=True,
    )
    trust = signing.TrustStore.from_paths([public])
    signer = trust.verify(data.read_bytes(), base64.b64encode(der.read_bytes()))
    assert signer.key_id == signing.key_id(signing.load_public_key(public))
    with pytest.raises(
        signing.SignatureError, match="does not verify against any of the 1 trusted key"
    ):
        trust.verify(b"other bytes", base64.b64encode(der.read_bytes()))


def test_trust_store_from_a_directory_picks_the_right_key(tmp_path: Path) -> None:
    for name in ("a", "b"):
        signing.generate_key_pair(tmp_path / f"{name}.key", tmp_path / "trust" / f"{name}.pub")
    trust = signing.TrustStore.from_paths([tmp_path / "trust"])
    signature = signing.sign(b"data", signing.load_private_key(tmp_path / "b.key"))
    assert trust.verify(b"data", signature).source.endswith("b.pub")


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        (b"", "signature file is empty"),
        (b"***", "not valid base64"),
        (base64.b64encode(b"junk"), "does not verify"),
    ],
)
def test_malformed_signatures_are_refused(
    key_pair: tuple[Path, Path], signature: bytes, message: str
) -> None:
    trust = signing.TrustStore.from_paths([key_pair[1]])
    with pytest.raises(signing.SignatureError, match=message):
        trust.verify(b"data", signature)


def test_an_empty_trust_store_trusts_nothing(key_pair: tuple[Path, Path]) -> None:
    signature = signing.sign(b"data", signing.load_private_key(key_pair[0]))
    with pytest.raises(signing.SignatureError, match="holds no keys"):
        signing.TrustStore([]).verify(b"data", signature)


def test_private_key_is_owner_only_and_wrong_key_types_are_named(
    key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    assert key_pair[0].stat().st_mode & 0o777 == 0o600
    rsa = tmp_path / "rsa.key"
    subprocess.run(["openssl", "genrsa", "-out", str(rsa), "2048"], check=True, capture_output=True)
    with pytest.raises(signing.SignatureError, match="not an ECDSA P-256 private key"):
        signing.load_private_key(rsa)


def test_an_existing_private_key_is_never_overwritten(key_pair: tuple[Path, Path]) -> None:
    private, public = key_pair
    before = private.read_bytes(), public.read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite a private key"):
        signing.generate_key_pair(private, public)
    assert (private.read_bytes(), public.read_bytes()) == before
    assert private.stat().st_mode & 0o777 == 0o600
