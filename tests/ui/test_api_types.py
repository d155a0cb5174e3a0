"""The dashboard's API types are generated from the API; they must not drift from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_ui_types_match_the_api() -> None:
    assert (REPO / "ui" / "node_modules" / "openapi-typescript").is_dir(), (
        "ui/node_modules is missing: run `make ui`"
    )
    checked = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_ui_api.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr + " (regenerate with scripts/gen_ui_api.py)"
