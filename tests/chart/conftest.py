"""The real helm binary, and the chart rendered by it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "bpfleet"
OVERRIDE = Path(__file__).with_name("values-override.yaml")
HELM = REPO / ".dev" / "bin" / "helm"


@dataclass(frozen=True)
class Rendered:
    """``helm template`` output: the text and its documents."""

    text: str
    documents: list[dict[str, Any]]

    def find(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [
            doc
            for doc in self.documents
            if doc["kind"] == kind and doc["metadata"]["name"].endswith(name_suffix)
        ]
        assert len(found) == 1, f"expected one {kind} *{name_suffix}, found {len(found)}"
        return found[0]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.documents if doc["kind"] == kind]


@pytest.fixture(scope="session")
def helm() -> Path:
    # Idempotent: a no-op once the pinned version is in .dev/bin.
    result = subprocess.run(
        [str(REPO / "scripts" / "install-helm.sh")], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/install-helm.sh failed:\n{result.stdout}\n{result.stderr}")
    return HELM


HelmRun = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def run_helm(helm: Path) -> HelmRun:
    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(helm), *arguments], capture_output=True, text=True, check=False, timeout=60
        )

    return run


@pytest.fixture(scope="session")
def render(run_helm: HelmRun) -> Callable[..., Rendered]:
    def rendered(*arguments: str) -> Rendered:
        result = run_helm("template", "bpfleet", str(CHART), "--namespace", "bpfleet", *arguments)
        assert result.returncode == 0, result.stderr
        documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return Rendered(result.stdout, documents)

    return rendered


@pytest.fixture(scope="session")
def default(render: Callable[..., Rendered]) -> Rendered:
    return render()


@pytest.fixture(scope="session")
def override(render: Callable[..., Rendered]) -> Rendered:
    return render("--values", str(OVERRIDE))
