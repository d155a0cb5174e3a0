"""The built images: what they are labelled, who they run as, what they hold and leave
out, their size against its budget, and that the chart names exactly them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.images.conftest import REPO, inspect, project_version, targets, tree_revision
from tests.images.pods import Container, Manifests, run_once

pytestmark = pytest.mark.images

# The chart runs every component but the agent as this uid (restrictedSecurityContext).
CHART_UID = "65532"
COMPILERS = ("cc", "gcc", "c++", "g++", "clang", "ld", "as", "make", "rustc", "go")


def config(image: str) -> dict[str, Any]:
    return dict(inspect(image)["Docker"]["config"])


def test_every_target_is_built_and_labelled(images: dict[str, str]) -> None:
    assert sorted(images) == sorted(targets()) == ["agent", "api", "operator"]
    for target, image in images.items():
        labels = config(image)["Labels"]
        assert labels["org.opencontainers.image.version"] == project_version()
        assert labels["org.opencontainers.image.revision"] == tree_revision()
        assert labels["org.opencontainers.image.source"], target
        assert labels["org.opencontainers.image.title"] == f"bpfleet-{target}"


def test_components_run_as_the_chart_runs_them(images: dict[str, str]) -> None:
    assert config(images["api"])["User"] == f"{CHART_UID}:{CHART_UID}"
    assert config(images["operator"])["User"] == f"{CHART_UID}:{CHART_UID}"
    # The agent is uid 0 with only the capabilities the chart adds (test_agent_... below).
    assert config(images["agent"])["User"] == "0:0"
    assert config(images["api"])["Cmd"][0] == "uvicorn"
    assert config(images["operator"])["Cmd"] == ["bpfleet", "operator", "run"]
    assert config(images["agent"])["Cmd"] == ["bpfleet-agent"]


def test_every_image_has_a_health_check(images: dict[str, str]) -> None:
    for image in images.values():
        check = config(image)["Healthcheck"]
        assert check["Test"] == ["CMD", "bpfleet-healthcheck"], image


@pytest.mark.parametrize("target", targets())
def test_runtime_images_hold_no_compiler_no_pip_and_no_catalog(
    images: dict[str, str], target: str
) -> None:
    probe = " ".join(f"command -v {tool};" for tool in COMPILERS)
    # eBPF objects are artifacts uploaded to the API, never part of an image.
    objects = "find / -xdev -name '*.bpf.o' -o -name '*.manifest.json.sig'"
    container = Container(images[target], [], {}, [], None, None)
    done = run_once(
        container,
        ["sh", "-c", f"{probe} ls /opt/bpfleet/bin; ls /usr/lib/gcc 2>/dev/null; {objects}; true"],
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    found = [line for line in lines if line.rsplit("/", 1)[-1] in COMPILERS]
    assert found == [], f"{target} holds compilers: {found}"
    assert not any(name.startswith("pip") for name in lines), f"{target} holds pip: {lines}"
    assert not any(line.endswith((".bpf.o", ".sig")) for line in lines), lines


def test_the_api_image_holds_the_dashboard_and_the_migrations(images: dict[str, str]) -> None:
    container = Container(images["api"], [], {}, [], None, None)
    script = (
        "import os; from bpfleet_api import db; from bpfleet_api.settings import ApiSettings; "
        "print(ApiSettings().ui_dir / 'index.html'); print(sorted(os.listdir(db.MIGRATIONS / 'versions')))"
    )
    done = run_once(container, ["python", "-c", script])
    assert done.returncode == 0, done.stderr
    index, versions = done.stdout.splitlines()
    assert index == "/opt/bpfleet/ui/index.html"
    shipped = sorted(
        path.name for path in (REPO / "api/bpfleet_api/migrations/versions").glob("*.py")
    )
    assert all(name in versions for name in shipped), (versions, shipped)
    done = run_once(container, ["test", "-s", index])
    assert done.returncode == 0, "the built dashboard is missing from the api image"


def test_sizes_are_within_their_budgets(images: dict[str, str]) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "image_sizes.py"),
            "--version",
            project_version(),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    measured = {item["target"]: item for item in json.loads(done.stdout)}
    assert sorted(measured) == sorted(images)
    for item in measured.values():
        assert 0 < item["size_bytes"] <= item["budget_mib"] * 1024 * 1024, item


def test_the_chart_renders_exactly_the_built_images(
    images: dict[str, str], helm_template: Callable[..., Manifests]
) -> None:
    rendered = helm_template()
    used = {
        container["image"]
        for doc in rendered.documents
        if doc["kind"] in ("Deployment", "DaemonSet")
        for container in doc["spec"]["template"]["spec"]["containers"]
    }
    built = {image.removeprefix("localhost/") for image in images.values()}
    assert used == built
    done = subprocess.run(
        ["buildah", "images", "--format", "{{.Name}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    present = set(done.stdout.split())
    assert {f"localhost/{image}" for image in used} <= present
