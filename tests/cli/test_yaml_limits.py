"""Every command that reads YAML refuses an alias bomb or an oversized file with one line
naming the file and the limit, instead of growing until the machine gives out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bpfleet_core import yamlfiles
from tests.core.test_yamlfiles import alias_bomb

BPFLEET = str(Path(sys.executable).parent / "bpfleet")
BOMB = alias_bomb(10)  # ~550 bytes, 10^9 nodes once expanded


def bpfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BPFLEET, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def bomb(tmp_path: Path) -> Path:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    return path


def refused(done: subprocess.CompletedProcess[str], path: Path, limit: str) -> None:
    assert done.returncode == 1, done.stdout
    assert str(path) in done.stderr
    assert limit in done.stderr
    assert "Traceback" not in done.stderr


def test_validate(bomb: Path, tmp_path: Path) -> None:
    # Manifests and policies refuse aliases where the first is used; the other files
    # (a GitSource document, the catalog) take small aliases and count what they expand to.
    refused(bpfleet("validate", str(bomb)), bomb, "aliases are not supported")
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (yamlfiles.LIMITS.file_bytes // 10 + 1))
    refused(bpfleet("validate", str(big)), big, f"{yamlfiles.LIMITS.file_bytes} bytes")


def test_operator_standalone(bomb: Path) -> None:
    refused(bpfleet("operator", "standalone", str(bomb)), bomb, "YAML nodes")


def test_policy_commands(bomb: Path) -> None:
    refused(bpfleet("policy", "validate", str(bomb)), bomb, "aliases are not supported")


def test_lab_probe(bomb: Path, tmp_path: Path) -> None:
    topology = tmp_path / "topology.json"
    topology.write_text(json.dumps({"namespaces": {"shop": {}}, "pods": {}}))
    done = bpfleet("lab", "probe", "--topology", str(topology), "--port", "80", str(bomb))
    refused(done, bomb, "aliases are not supported")


def test_catalog_sign(bomb: Path, tmp_path: Path) -> None:
    done = bpfleet(
        "catalog", "sign", str(tmp_path), "--key", str(tmp_path / "none"), "--catalog", str(bomb)
    )
    refused(done, bomb, "YAML nodes")
