"""A real Git repository for the GitOps tests: write, commit, delete, revert."""

from __future__ import annotations

import subprocess
from pathlib import Path

AUTHOR = ["-c", "user.name=bpfleet tests", "-c", "user.email=tests@bpfleet.invalid"]


class GitRepo:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "--quiet", "--initial-branch=main")

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(self.path), *AUTHOR, *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def commit(
        self, message: str, files: dict[str, str] | None = None, remove: tuple[str, ...] = ()
    ) -> str:
        for name, text in (files or {}).items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            self.git("add", name)
        for name in remove:
            self.git("rm", "--quiet", name)
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        return self.head()

    def revert(self, commit: str) -> str:
        self.git("revert", "--no-edit", commit)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")
