#!/usr/bin/env python3
"""Write the dashboard's API types (ui/src/api/schema.d.ts) from the API itself.

The OpenAPI document comes from ``bpfleet_api.main.create_app().openapi()`` in this
process (no server, no token), then ``openapi-typescript`` (from ui/node_modules, run by
the project's pinned Node) turns it into TypeScript. The types are committed; a test
regenerates them and fails when they drift from the API.

Usage:
    .venv/bin/python scripts/gen_ui_api.py [--output FILE] [--check]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bpfleet_api.main import create_app

REPOSITORY = Path(__file__).resolve().parent.parent
UI = REPOSITORY / "ui"
SCHEMA = UI / "src" / "api" / "schema.d.ts"
NODE = Path(sys.executable).parent / "node"


def openapi() -> dict[str, object]:
    return create_app().openapi()


def render() -> str:
    """The TypeScript types of the API as it is now."""
    with tempfile.TemporaryDirectory(prefix="bpfleet-openapi-") as temporary:
        document = Path(temporary) / "openapi.json"
        document.write_text(json.dumps(openapi(), indent=1, sort_keys=True))
        output = Path(temporary) / "schema.d.ts"
        subprocess.run(
            [
                str(NODE),
                str(UI / "node_modules" / "openapi-typescript" / "bin" / "cli.js"),
                str(document),
                "--output",
                str(output),
                "--alphabetize",
            ],
            check=True,
            capture_output=True,
            cwd=UI,
        )
        return output.read_text()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=SCHEMA)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    arguments = parser.parse_args()
    rendered = render()
    if arguments.check:
        current = arguments.output.read_text() if arguments.output.exists() else ""
        if current != rendered:
            print(f"{arguments.output} is stale: run scripts/gen_ui_api.py", file=sys.stderr)
            return 1
        return 0
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
