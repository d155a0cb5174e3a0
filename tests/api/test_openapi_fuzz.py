"""Schemathesis against the API's own OpenAPI: no input makes the server fail."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests import services

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]


def test_no_input_causes_a_server_error(api: services.Api, tmp_path: Path) -> None:
    schemathesis = shutil.which("schemathesis", path=str(REPO / ".venv" / "bin"))
    assert schemathesis is not None, "schemathesis is a dev dependency"
    # The boundary-value (coverage) phase is the slow one: run it against PostgreSQL,
    # whose column limits are the stricter, and plain fuzzing against both.
    postgres = api.environment["BPFLEET_API_DATABASE_URL"].startswith("postgresql")
    phases = "examples,coverage,fuzzing" if postgres else "examples,fuzzing"
    result = subprocess.run(
        [
            schemathesis,
            "run",
            f"{api.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {api.admin_token}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "10",
            "--request-timeout",
            "20",
            "--seed",
            "1",
            "--phases",
            phases,
            # Long-polls would make every generated request wait; keep them short.
            "--exclude-path",
            "/v1/agent/assignments",
            "--exclude-path",
            "/v1/gitsources/reconcile-requests",
            "--exclude-path",
            "/v1/operator/proposals",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
