"""Builds an image's virtualenv, /opt/bpfleet, in a build stage of images/Containerfile.

    python3 images/venv.py dependencies EXTRA   the venv, with what bpfleet[EXTRA] requires
    python3 images/venv.py project              bpfleet itself (from /src), then pip removed

Dependencies come as wheels only, so nothing is compiled; they are read from
pyproject.toml so that their layer changes only with it. A CA bundle handed to the build
as the secret ``build-ca`` is trusted for the downloads.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

VENV = Path("/opt/bpfleet")
PYPROJECT = Path("pyproject.toml")
BUILD_CA = Path("/run/secrets/build-ca")


def requirements(extra: str) -> list[str]:
    """What ``bpfleet[extra]`` installs: the base dependencies and the extra's own."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    if extra not in extras:
        raise SystemExit(f"venv.py: no extra {extra!r} in {PYPROJECT} (known: {sorted(extras)})")
    own = re.compile(rf"^{re.escape(project['name'])}\b")
    wanted = [*project["dependencies"], *extras[extra]]
    if any(own.match(item) for item in wanted):
        raise SystemExit(f"venv.py: extra {extra!r} refers to the project itself")
    return wanted


def pip(*arguments: str) -> None:
    environment = dict(os.environ)
    if BUILD_CA.is_file() and BUILD_CA.stat().st_size > 0:
        environment["PIP_CERT"] = str(BUILD_CA)
    command = [str(VENV / "bin" / "pip"), "--disable-pip-version-check", "--quiet", *arguments]
    subprocess.run(command, check=True, env=environment)


def main(arguments: list[str]) -> None:
    match arguments:
        case ["dependencies", extra]:
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
            pip("install", "--only-binary=:all:", *requirements(extra))
        case ["project"]:
            pip("install", "--no-deps", ".")
            pip("uninstall", "--yes", "pip")
        case _:
            raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
