"""The images this tree builds (`make images`), and the chart rendered to run them."""

from __future__ import annotations

import json
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CHART, HELM
from tests.images.pods import Manifests

REPO = Path(__file__).resolve().parents[2]
IMAGES_LIST = REPO / "images" / "images.txt"


def project_version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def targets() -> list[str]:
    return [
        line.split()[0]
        for line in IMAGES_LIST.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def inspect(image: str) -> dict[str, Any]:
    done = subprocess.run(
        ["buildah", "inspect", "--type", "image", image],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def tree_revision() -> str:
    revision = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    clean = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=REPO, check=False)
    return revision if clean.returncode == 0 else f"{revision}-dirty"


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """target -> image name, built from this tree: the build script reuses every cached
    layer, so this costs little when `make images` just ran."""
    done = subprocess.run(
        [str(REPO / "scripts" / "build-images.sh")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"scripts/build-images.sh failed:\n{done.stdout}\n{done.stderr}"
    version = project_version()
    return {target: f"localhost/bpfleet/{target}:{version}" for target in targets()}


@pytest.fixture(scope="session")
def helm_template() -> Callable[..., Manifests]:
    subprocess.run([str(REPO / "scripts" / "install-helm.sh")], check=True, capture_output=True)

    def render(*arguments: str) -> Manifests:
        done = subprocess.run(
            [str(HELM), "template", "bpfleet", str(CHART), "--namespace", "bpfleet", *arguments],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return Manifests([doc for doc in yaml.safe_load_all(done.stdout) if doc])

    return render
