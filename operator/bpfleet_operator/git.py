"""The only module that talks to Git: fetch a ref, list and read files, verify signatures.

It drives the ``git`` command, so every transport Git has works (HTTPS, SSH, file://,
a local path) and signatures are checked by Git itself. Credentials never touch the
repository's config: HTTPS credentials go in as a per-command header, an SSH key as a
per-command ``GIT_SSH_COMMAND``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bpfleet_core.resources import GitRef

TIMEOUT_SECONDS = 120


class GitError(Exception):
    """A Git operation failed; the message says which and why (Git's own words)."""


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    identity: str | None = None  # an SSH private key
    known_hosts: str | None = None


@dataclass(frozen=True)
class Revision:
    ref: str  # "main", "v1.2", or the commit itself
    commit: str

    def __str__(self) -> str:
        # The form Flux prints, so people who know one know the other.
        return f"{self.ref}@sha1:{self.commit}"


def _ref_spec(ref: GitRef) -> tuple[str, str]:
    """(what to fetch, the local ref it lands in)."""
    if ref.commit is not None:
        return ref.commit, ref.commit
    if ref.tag is not None:
        return f"+refs/tags/{ref.tag}:refs/tags/{ref.tag}", f"refs/tags/{ref.tag}"
    branch = ref.branch or "main"
    return f"+refs/heads/{branch}:refs/remotes/origin/{branch}", f"refs/remotes/origin/{branch}"


def _ref_name(ref: GitRef) -> str:
    return ref.commit or ref.tag or ref.branch or "main"


class Checkout:
    """A bare clone of one repository in ``directory``, fetched on demand."""

    def __init__(self, url: str, directory: Path, credentials: Credentials | None = None) -> None:
        self.url = url
        self.directory = directory
        self.credentials = credentials or Credentials()

    def fetch(self, ref: GitRef) -> Revision:
        """Bring ``ref`` from the remote; return the commit it points at."""
        if not (self.directory / "HEAD").exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            self._git("init", "--quiet", "--bare", ".")
        spec, local = _ref_spec(ref)
        with self._transport() as (options, env):
            self._git(*options, "fetch", "--quiet", "--force", "--no-tags", self.url, spec, env=env)
        commit = self._git("rev-parse", "--verify", f"{local}^{{commit}}").strip()
        return Revision(_ref_name(ref), commit)

    def files(self, commit: str, root: str = ".") -> dict[str, str]:
        """Path -> text of every file under ``root`` at ``commit``."""
        prefix = [] if root in ("", ".") else ["--", root.strip("/")]
        listing = self._git("ls-tree", "-r", "-z", "--full-tree", commit, *prefix)
        blobs: dict[str, str] = {}
        for entry in filter(None, listing.split("\0")):
            meta, _, path = entry.partition("\t")
            mode, kind, sha = meta.split()
            if kind == "blob" and mode != "120000":  # symlinks could point out of the tree
                blobs[path] = sha
        return {path: self._blob(sha, path) for path, sha in blobs.items()}

    def verify(self, commit: str, trusted_keys: Sequence[str]) -> None:
        """Raise unless ``commit`` carries a valid SSH signature by one of ``trusted_keys``."""
        with tempfile.NamedTemporaryFile("w", suffix=".allowed-signers") as signers:
            # "*" as principal: any identity, as long as the key is one we trust.
            signers.write("".join(f'* namespaces="git" {key.strip()}\n' for key in trusted_keys))
            signers.flush()
            try:
                self._git(
                    "-c",
                    "gpg.format=ssh",
                    "-c",
                    f"gpg.ssh.allowedSignersFile={signers.name}",
                    "verify-commit",
                    commit,
                )
            except GitError as error:
                raise GitError(f"commit {commit} is not signed by a trusted key: {error}") from None

    def _blob(self, sha: str, path: str) -> str:
        raw = self._git_bytes("cat-file", "blob", sha)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GitError(f"{path} is not UTF-8 text") from None

    @contextlib.contextmanager
    def _transport(self) -> Iterator[tuple[list[str], dict[str, str]]]:
        options: list[str] = ["-c", "credential.helper="]
        env: dict[str, str] = {}
        creds = self.credentials
        if creds.username is not None or creds.password is not None:
            token = base64.b64encode(f"{creds.username or ''}:{creds.password or ''}".encode())
            options += ["-c", f"http.extraHeader=Authorization: Basic {token.decode()}"]
        if creds.identity is None:
            yield options, env
            return
        with tempfile.TemporaryDirectory(prefix="bpfleet-ssh-") as scratch:
            identity = Path(scratch) / "identity"
            identity.write_text(creds.identity.rstrip("\n") + "\n")
            identity.chmod(0o600)
            known_hosts = Path(scratch) / "known_hosts"
            known_hosts.write_text(creds.known_hosts or "")
            # Host keys are checked strictly: a source without known_hosts fails to fetch
            # rather than trusting whatever answers.
            env["GIT_SSH_COMMAND"] = (
                f"ssh -F /dev/null -i {identity} -o IdentitiesOnly=yes "
                f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
            )
            yield options, env

    def _git(self, *args: str, env: dict[str, str] | None = None) -> str:
        return self._git_bytes(*args, env=env).decode("utf-8", "replace")

    def _git_bytes(self, *args: str, env: dict[str, str] | None = None) -> bytes:
        command = ["git", "-C", str(self.directory), *args]
        full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
        try:
            done = subprocess.run(
                command, capture_output=True, env=full_env, timeout=TIMEOUT_SECONDS, check=False
            )
        except subprocess.TimeoutExpired:
            raise GitError(f"git {args[0]} timed out after {TIMEOUT_SECONDS}s") from None
        if done.returncode != 0:
            raise GitError(_reason(done.stderr) or f"git {args[0]} failed")
        return done.stdout


# Git's closing advice after any remote failure; it says nothing about the cause.
_ADVICE = ("Please make sure you have the correct access rights", "and the repository exists.")


def _reason(stderr: bytes) -> str:
    """What Git said went wrong, in its own words, on one line."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    return " ".join(line for line in lines if line and line not in _ADVICE)
