"""The local fleet's Git repository: seeded once from ``examples/fleet``, then the user's.

``bpfleet local up`` follows it with the standalone GitOps pipeline. It is created only
when missing, so commits made in it survive restarts; a post-commit hook tells the
running pipeline to fetch at once rather than at its next poll. Proposals land in it as
``bpfleet/...`` branches, and may be merged from the API ("Merge (dev)").
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SOURCE_NAME = "fleet"
SOURCE_NAMESPACE = "default"
HOOK_MARKER = "# bpfleet local up: notify the local GitOps pipeline."
# A fixed identity for the seed commit, and no signing or hooks: the user's global Git
# settings must not decide whether the first commit can be made.
_SEED_COMMIT = [
    "-c",
    "user.name=bpfleet",
    "-c",
    "user.email=bpfleet@localhost.invalid",
    "-c",
    "commit.gpgsign=false",
    "commit",
    "--quiet",
    "--no-verify",
]


class RepositoryError(Exception):
    """The repository could not be created or read; the message says why."""


def _git(repo: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    if check and done.returncode != 0:
        reason = done.stderr.strip().splitlines()
        raise RepositoryError(f"git {args[0]} in {repo}: {reason[-1] if reason else 'failed'}")
    return done.stdout.strip() if done.returncode == 0 else ""


def seed(repo: Path, examples: Path) -> bool:
    """Create ``repo`` with the files of ``examples`` as its first commit, on ``main``.

    An existing repository is kept as it is. Returns True when it was created."""
    if (repo / ".git").exists():
        return False
    if repo.exists() and any(repo.iterdir()):
        raise RepositoryError(f"{repo} exists and is not a Git repository")
    if not examples.is_dir():
        raise RepositoryError(f"no examples to seed the repository from at {examples}")
    repo.parent.mkdir(parents=True, exist_ok=True)
    # Built aside and renamed into place, so an interrupted seed never leaves a
    # repository without a commit that later runs would keep.
    scratch = Path(tempfile.mkdtemp(prefix=f".{repo.name}-", dir=repo.parent))
    try:
        scratch.chmod(0o755)
        shutil.copytree(examples, scratch, dirs_exist_ok=True)
        _git(scratch, "init", "--quiet", "--initial-branch=main")
        if not _git(scratch, "config", "user.email", check=False):
            # Without an identity `git commit` refuses; this one lets commits work at once.
            _git(scratch, "config", "user.name", "bpfleet local")
            _git(scratch, "config", "user.email", "local@bpfleet.invalid")
        _git(scratch, "add", "--all")
        _git(
            scratch,
            *_SEED_COMMIT,
            "-m",
            f"The local fleet, seeded from {examples.parent.name}/{examples.name}",
        )
        if repo.exists():
            repo.rmdir()
        scratch.rename(repo)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return True


def branch(repo: Path) -> str:
    """The branch checked out in ``repo``: the one the local fleet follows."""
    return _git(repo, "symbolic-ref", "--short", "HEAD", check=False) or "main"


def git_source(repo: Path, ref: str, interval: str) -> dict[str, Any]:
    """The ``GitSource`` document for the standalone pipeline."""
    return {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "GitSource",
        "metadata": {"name": SOURCE_NAME, "namespace": SOURCE_NAMESPACE},
        "spec": {
            "url": f"file://{repo.resolve()}",
            "ref": {"branch": ref},
            "path": ".",
            "interval": interval,
            # Proposals from the editor (or `bpfleet propose`) may be merged from the API:
            # this repository is yours, on this machine, with no review to go through.
            "proposals": {"devMerge": True},
        },
    }


def notify_command(url: str, secret_file: Path) -> str:
    """A shell command that asks the pipeline to fetch now (GitLab-style token header)."""
    header = f'"X-Gitlab-Token: $(cat {shlex.quote(str(secret_file))})"'
    return f"curl -s -o /dev/null --max-time 2 -X POST -H {header} {url}"


def hook_script(url: str, secret_file: Path) -> str:
    return f"""#!/bin/sh
{HOOK_MARKER}
# Rewritten at every start while the line above is in it.
# Only a shortcut: the pipeline polls the repository anyway.
[ -r {shlex.quote(str(secret_file))} ] || exit 0
{notify_command(url, secret_file)} || true
"""


def install_hook(repo: Path, url: str, secret_file: Path) -> Path | None:
    """Write the post-commit hook unless the user has one of their own there; the
    hook's path, or None when theirs was kept."""
    hook = repo / ".git" / "hooks" / "post-commit"
    if hook.exists() and HOOK_MARKER not in hook.read_text(errors="replace"):
        return None
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(hook_script(url, secret_file))
    hook.chmod(0o755)
    return hook
