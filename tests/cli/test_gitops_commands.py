"""`bpfleet validate` (for CI) and `bpfleet operator standalone`'s input errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bpfleet_cli.localfleet import free_port
from tests import services
from tests.api.conftest import upload
from tests.conftest import SignedCatalog
from tests.manifests import program_yaml

BPFLEET = str(Path(sys.executable).parent / "bpfleet")
PROGRAM = program_yaml()


def bpfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BPFLEET, *args], capture_output=True, text=True, timeout=60, check=False)


def test_validate_passes_good_manifests_and_names_each_problem(tmp_path: Path) -> None:
    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "execs.yaml").write_text(PROGRAM)
    (tmp_path / ".git").mkdir()  # hidden directories are not manifests
    (tmp_path / ".git" / "junk.yaml").write_text("{not: [valid")
    done = bpfleet("validate", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "1 file(s) valid: 1 program(s)" in done.stdout

    (tmp_path / "programs" / "bad.yaml").write_text(
        PROGRAM.replace("  name: execs\n", "  name: Bad_Name\n")
    )
    done = bpfleet("validate", str(tmp_path))
    assert done.returncode == 1
    assert (
        f"{tmp_path}/programs/bad.yaml:4: metadata.name: String should match pattern" in done.stderr
    )
    assert "bpfleet: 1 problem(s) in 2 file(s)" in done.stderr

    assert "no such file or directory" in bpfleet("validate", str(tmp_path / "nope")).stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no *.yaml or *.yml manifests found" in bpfleet("validate", str(empty)).stderr


@pytest.mark.services
def test_validate_against_the_fleet_checks_artifacts(
    redis: services.Redis, signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    manifest = tmp_path / "execs.yaml"
    manifest.write_text(PROGRAM)
    with services.api_server(
        f"sqlite:///{tmp_path}/bpfleet.db", redis.url, signed_catalog.trust, tmp_path
    ) as api:
        refused = bpfleet(
            "validate", str(manifest), "--api-url", api.url, "--token", api.admin_token
        )
        assert refused.returncode == 1
        assert (
            "execs.yaml:5: spec: artifact execsnoop@1.0.0 has not been uploaded" in refused.stderr
        )
        upload(api, signed_catalog, "execsnoop")
        done = bpfleet("validate", str(manifest), "--api-url", api.url, "--token", api.admin_token)
        assert done.returncode == 0, done.stderr


def test_standalone_refuses_what_is_not_a_git_source(tmp_path: Path) -> None:
    source = tmp_path / "source.yaml"
    source.write_text(PROGRAM)
    done = bpfleet("operator", "standalone", str(source))
    assert done.returncode == 1
    assert f"bpfleet: {source} is not a GitSource" in done.stderr
    assert "Traceback" not in done.stderr
    missing = bpfleet("operator", "standalone", str(tmp_path / "absent.yaml"))
    assert "cannot read" in missing.stderr


def test_validate_says_so_when_the_fleet_cannot_be_asked(tmp_path: Path) -> None:
    manifest = tmp_path / "execs.yaml"
    manifest.write_text(PROGRAM)
    done = bpfleet("validate", str(manifest), "--api-url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 7  # the API is unreachable
    assert "is unreachable" in done.stderr
    assert "Traceback" not in done.stderr
