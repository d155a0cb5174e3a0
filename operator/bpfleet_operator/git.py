"""The only module that talks to Git: fetch a ref, list and read files, verify signatures;
and, for proposals, write a tree and a commit (SSH-signed when asked) and push it.

It drives the ``git`` command, so signatures are checked by Git itself. What Git may
do is narrowed for every command, through the environment (never the command line,
which any local user can read in ``/proc``):

- transports: https and ssh only; ``file`` (local paths) only when the caller allows
  local repositories, and never into ``state_dir``, where other sources' clones live;
  ``ext`` and every other remote helper never. The URL comes after ``--``, so it is
  never read as an option.
- no system or user configuration and none of the host's ``GIT_*`` variables (no
  ``insteadOf`` rewriting, no credential helpers, no ``GIT_SSL_NO_VERIFY``): a fetch
  behaves the same on every machine.
- HTTPS credentials come from a credential helper bound to ``https://<the URL's host>``
  that reads them from the environment: Git offers them to that host alone, only over
  TLS, and only when it asks. An SSH key goes in as a per-command ``GIT_SSH_COMMAND``
  with strict host key checking. Credentials never touch the repository's config.
- writing: every ref pushed is built here from a checked branch name (``git
  check-ref-format``) and a commit id, after ``--``; a new branch is pushed only if it
  does not exist yet (``--force-with-lease=<ref>:``), nothing is ever force-pushed, and
  the tracked branch is written only by a fast-forward that expects its tip.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from bpfleet_core import bundles, yamlfiles
from bpfleet_core.resources import GitRef, parse_git_url

TIMEOUT_SECONDS = 120


class GitError(Exception):
    """A Git operation failed; the message says which and why (Git's own words), and
    ``file`` the file of the repository it concerns, if one."""

    def __init__(self, message: str, *, file: str = "") -> None:
        super().__init__(message)
        self.file = file


@dataclass(frozen=True)
class ReadLimits:
    """How much of a revision is read: manifests only, and this many of them."""

    files: int = 2_000
    file_bytes: int = yamlfiles.LIMITS.file_bytes
    total_bytes: int = 16 << 20


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    identity: str | None = None  # an SSH private key
    known_hosts: str | None = None
    ca: str | None = None  # PEM certificates trusted for https instead of the system's


@dataclass(frozen=True)
class Identity:
    """Who a commit says wrote (author) or made (committer) it."""

    name: str
    email: str

    def environment(self, role: Literal["AUTHOR", "COMMITTER"]) -> dict[str, str]:
        for value in (self.name, self.email):
            if any(character in value for character in "<>\n\0") or not value.strip():
                raise GitError(f"{role.lower()} {value!r} is not a name or an email Git accepts")
        return {f"GIT_{role}_NAME": self.name, f"GIT_{role}_EMAIL": self.email}


@dataclass(frozen=True)
class Entry:
    """A path in a commit's tree."""

    mode: str
    kind: str  # blob, tree, commit (a submodule)
    id: str


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


# Git runs this with the action appended ("get", "store", "erase"): it answers "get"
# from the environment and ignores the rest, so nothing is ever stored anywhere.
_CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    'printf \'username=%s\\npassword=%s\\n\' "$BPFLEET_GIT_USERNAME" "$BPFLEET_GIT_PASSWORD"; }; f'
)


class Checkout:
    """A bare clone of one repository in ``directory``, fetched on demand.

    ``allow_local``: file:// URLs and local paths may be fetched (standalone mode and
    the local fleet); even then never from under ``state_dir``.
    """

    def __init__(
        self,
        url: str,
        directory: Path,
        credentials: Credentials | None = None,
        *,
        allow_local: bool = False,
        state_dir: Path | None = None,
    ) -> None:
        self.url = url
        self.directory = directory
        self.credentials = credentials or Credentials()
        self.allow_local = allow_local
        self.state_dir = state_dir

    def _init(self) -> None:
        if not (self.directory / "HEAD").exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            self._git("init", "--quiet", "--bare", ".")

    def fetch(self, ref: GitRef) -> Revision:
        """Bring ``ref`` from the remote; return the commit it points at."""
        self._check_url()
        self._init()
        spec, local = _ref_spec(ref)
        with self._transport() as (config, env):
            self._git(
                "fetch", "--quiet", "--force", "--no-tags", "--", self.url, spec,
                config=config, env=env,
            )  # fmt: skip
        commit = self._git("rev-parse", "--verify", "--end-of-options", f"{local}^{{commit}}")
        return Revision(_ref_name(ref), commit.strip())

    def _check_url(self) -> None:
        """The model refuses these already; the one module that runs Git checks again."""
        try:
            where = parse_git_url(self.url)
        except ValueError as error:
            raise GitError(str(error)) from None
        if where.transport != "local":
            return
        if not self.allow_local:
            raise GitError(
                "local repositories are not allowed here (file:// URLs and paths): "
                "the operator fetches from https and ssh remotes only"
            )
        if self.state_dir is not None:
            target = Path(where.path).resolve()
            if target.is_relative_to(self.state_dir.resolve()):
                raise GitError("a local repository may not be one of the operator's own clones")

    def manifests(
        self, commit: str, root: str = ".", limits: ReadLimits | None = None
    ) -> dict[str, bytes]:
        """Path -> bytes of every manifest file under ``root`` at ``commit``.

        Nothing else is read: sizes come from the tree listing, so a file over the
        limits is refused before any of it is, and the blobs come from one
        ``git cat-file --batch``. Symlinks and submodules are skipped (a symlink could
        point out of the tree)."""
        limits = limits or ReadLimits()
        prefix = [] if root in ("", ".") else [root.strip("/")]  # after --end-of-options
        listing = self._git(
            "ls-tree", "-r", "-z", "-l", "--full-tree", "--end-of-options", commit, *prefix
        )
        blobs: dict[str, tuple[str, int]] = {}
        for entry in filter(None, listing.split("\0")):
            meta, _, path = entry.partition("\t")
            mode, kind, sha, length = meta.split()
            if kind == "blob" and mode != "120000":
                blobs[path] = (sha, int(length))
        wanted = bundles.manifest_files(list(blobs), root)
        if len(wanted) > limits.files:
            raise GitError(f"more than {limits.files} manifest files under {root!r}")
        for path in wanted:
            if blobs[path][1] > limits.file_bytes:
                raise GitError(
                    f"{path} is {blobs[path][1]} bytes, more than the {limits.file_bytes} "
                    "bytes a manifest may have",
                    file=path,
                )
        if sum(blobs[path][1] for path in wanted) > limits.total_bytes:
            raise GitError(
                f"the manifests under {root!r} are more than {limits.total_bytes} bytes together"
            )
        if not wanted:
            return {}
        batch = "".join(f"{blobs[path][0]}\n" for path in wanted).encode()
        output = self._git_bytes("cat-file", "--batch", stdin=batch)
        found: dict[str, bytes] = {}
        offset = 0
        for path in wanted:
            header_end = output.index(b"\n", offset)
            size = int(output[offset:header_end].split()[2])  # "<sha> blob <size>"
            start = header_end + 1
            found[path] = output[start : start + size]
            offset = start + size + 1  # the content is followed by a newline of its own
        return found

    def verify(self, commit: str, trusted_keys: Sequence[str]) -> None:
        """Raise unless ``commit`` carries a valid SSH signature by one of ``trusted_keys``."""
        with tempfile.NamedTemporaryFile("w", suffix=".allowed-signers") as signers:
            # "*" as principal: any identity, as long as the key is one we trust.
            signers.write("".join(f'* namespaces="git" {key.strip()}\n' for key in trusted_keys))
            signers.flush()
            try:
                self._git(
                    "verify-commit",
                    "--end-of-options",
                    commit,
                    config=[("gpg.format", "ssh"), ("gpg.ssh.allowedSignersFile", signers.name)],
                )
            except GitError as error:
                raise GitError(f"commit {commit} is not signed by a trusted key: {error}") from None

    # -- reading one revision's files (proposals)

    def has_commit(self, commit: str) -> bool:
        _commit_id(commit)
        return self._succeeds("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Is ``ancestor`` in the history of ``descendant`` (or the same commit)?"""
        if not (self.has_commit(ancestor) and self.has_commit(descendant)):
            return False
        return self._succeeds("merge-base", "--is-ancestor", ancestor, descendant)

    def first_descendant(self, commit: str, tip: str) -> str:
        """The first commit on the way from ``commit`` to ``tip`` (the merge that brought
        it in); ``commit`` itself when it is the tip (a fast-forward)."""
        found = self._git(
            "rev-list", "--ancestry-path", "--reverse", "--end-of-options",
            f"{_commit_id(commit)}..{_commit_id(tip)}",
        ).split()  # fmt: skip
        return found[0] if found else commit

    def entry(self, commit: str, path: str) -> Entry | None:
        """What ``path`` is at ``commit``; None when it is absent."""
        listing = self._git("ls-tree", "-z", "--full-tree", _commit_id(commit), "--", path)
        for item in filter(None, listing.split("\0")):
            meta, _, name = item.partition("\t")
            if name == path:
                mode, kind, object_id = meta.split()
                return Entry(mode, kind, object_id)
        return None

    def blob(self, object_id: str, limit: int) -> bytes | None:
        """A blob's content; None when it is larger than ``limit`` bytes."""
        if int(self._git("cat-file", "-s", _commit_id(object_id)).strip()) > limit:
            return None
        return self._git_bytes("cat-file", "blob", object_id)

    def message(self, commit: str) -> str:
        raw = self._git("cat-file", "commit", _commit_id(commit))
        return raw.partition("\n\n")[2]

    # -- writing (proposals)

    def check_branch_name(self, branch: str) -> None:
        """Git's own verdict on a branch name (the full ref, so it is never an option)."""
        self._init()
        if not self._succeeds("check-ref-format", f"refs/heads/{branch}"):
            raise GitError(f"{branch!r} is not a valid branch name (git check-ref-format)")

    def remote_branch(self, branch: str) -> str | None:
        """The commit ``branch`` points at on the remote; None when it does not exist."""
        self._check_url()
        self._init()
        ref = f"refs/heads/{branch}"
        with self._transport() as (config, env):
            listing = self._git("ls-remote", "--heads", "--", self.url, ref, config=config, env=env)
        for line in listing.splitlines():
            commit, _, name = line.partition("\t")
            if name == ref:
                return commit
        return None

    def write_tree(self, base: str, files: Mapping[str, bytes]) -> str:
        """The tree of ``base`` with ``files`` (path -> content) written into it."""
        with tempfile.TemporaryDirectory(prefix="bpfleet-index-") as scratch:
            index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
            self._git("read-tree", _commit_id(base), env=index)
            for path, content in sorted(files.items()):
                blob = self._git("hash-object", "-w", "--stdin", stdin=content).strip()
                # The path is the third part of one argument: never read as an option.
                self._git(
                    "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=index
                )
            return self._git("write-tree", env=index).strip()

    def tree_of(self, commit: str) -> str:
        return self._git(
            "rev-parse", "--verify", "--end-of-options", f"{_commit_id(commit)}^{{tree}}"
        ).strip()

    def merge_trees(self, ours: str, theirs: str) -> tuple[str | None, list[str]]:
        """The tree of merging ``theirs`` into ``ours``, or None and the conflicting paths."""
        done = self._run("merge-tree", "--write-tree", "--name-only", "--no-messages", "-z",
                         _commit_id(ours), _commit_id(theirs))  # fmt: skip
        parts = done.stdout.decode("utf-8", "replace").split("\0")
        if done.returncode == 0:
            return parts[0].strip(), []
        if done.returncode == 1:
            return None, [part for part in parts[1:] if part]
        raise GitError(_reason(done.stderr) or "git merge-tree failed")

    def commit(
        self,
        tree: str,
        parents: Sequence[str],
        message: str,
        *,
        author: Identity,
        committer: Identity,
        signing_key: str | None = None,
    ) -> str:
        """Make a commit (``signing_key``: an OpenSSH private key that signs it)."""
        arguments = ["commit-tree"]
        for parent in parents:
            arguments += ["-p", _commit_id(parent)]
        env = {**author.environment("AUTHOR"), **committer.environment("COMMITTER")}
        with tempfile.TemporaryDirectory(prefix="bpfleet-sign-") as scratch:
            config: list[tuple[str, str]] = []
            if signing_key is not None:
                key = Path(scratch) / "signing-key"
                key.write_text(signing_key.rstrip("\n") + "\n")
                key.chmod(0o600)
                config = [("gpg.format", "ssh"), ("user.signingKey", str(key))]
                arguments.append("-S")
            return self._git(
                *arguments, "-F", "-", _commit_id(tree),
                stdin=message.encode(), config=config, env=env,
            ).strip()  # fmt: skip

    def push(
        self,
        commit: str,
        branch: str,
        *,
        new: bool = False,
        expect: str | None = None,
        update_worktree: bool = False,
    ) -> None:
        """Push ``commit`` to ``refs/heads/<branch>`` on the remote, never by force:
        ``new`` only if the branch does not exist yet; ``expect`` only while it still
        points there (a fast-forward from it). ``update_worktree``: a local repository
        with that branch checked out gets its files updated, if they are clean."""
        self._check_url()
        ref = f"refs/heads/{branch}"
        arguments = ["push", "--quiet", "--no-verify"]
        if new:
            arguments.append(f"--force-with-lease={ref}:")
        elif expect is not None:
            arguments.append(f"--force-with-lease={ref}:{_commit_id(expect)}")
        if update_worktree:
            if parse_git_url(self.url).transport != "local":
                raise GitError("only a local repository's checkout is updated by a push")
            arguments.append(f"--receive-pack={_UPDATE_INSTEAD}")
        with self._transport() as (config, env):
            self._git(*arguments, "--", self.url, f"{_commit_id(commit)}:{ref}",
                      config=config, env=env)  # fmt: skip

    @contextlib.contextmanager
    def _transport(self) -> Iterator[tuple[list[tuple[str, str]], dict[str, str]]]:
        """Configuration and environment that carry the credentials to the remote."""
        config: list[tuple[str, str]] = []
        env: dict[str, str] = {}
        creds = self.credentials
        with tempfile.TemporaryDirectory(prefix="bpfleet-git-") as scratch:
            if creds.username is not None or creds.password is not None:
                config.append((f"credential.{self._https_origin()}.helper", _CREDENTIAL_HELPER))
                env["BPFLEET_GIT_USERNAME"] = _one_line(creds.username or "", "username")
                env["BPFLEET_GIT_PASSWORD"] = _one_line(creds.password or "", "password")
            if creds.ca is not None:
                ca = Path(scratch) / "ca.crt"
                ca.write_text(creds.ca)
                env["GIT_SSL_CAINFO"] = str(ca)
            if creds.identity is not None:
                identity = Path(scratch) / "identity"
                identity.write_text(creds.identity.rstrip("\n") + "\n")
                identity.chmod(0o600)
                known_hosts = Path(scratch) / "known_hosts"
                known_hosts.write_text(creds.known_hosts or "")
                # Host keys are checked strictly: a source without known_hosts fails to
                # fetch rather than trusting whatever answers.
                env["GIT_SSH_COMMAND"] = (
                    f"ssh -F /dev/null -i {identity} -o IdentitiesOnly=yes "
                    f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
                )
            yield config, env

    def _https_origin(self) -> str:
        """``https://host[:port]`` of the URL: the only place a password may go."""
        parts = urlsplit(self.url)
        if parts.scheme != "https":
            raise GitError(f"a username and password are sent over https only, not to {self.url}")
        return f"https://{parts.netloc}"

    def _protocols(self) -> list[tuple[str, str]]:
        local = "always" if self.allow_local else "never"
        return [
            ("protocol.allow", "never"),
            ("protocol.https.allow", "always"),
            ("protocol.ssh.allow", "always"),
            ("protocol.file.allow", local),
            ("protocol.ext.allow", "never"),
            ("credential.helper", ""),  # none of the host's helpers: ours or nothing
        ]

    def _git(
        self,
        *args: str,
        config: Sequence[tuple[str, str]] = (),
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> str:
        return self._git_bytes(*args, config=config, env=env, stdin=stdin).decode(
            "utf-8", "replace"
        )

    def _git_bytes(
        self,
        *args: str,
        config: Sequence[tuple[str, str]] = (),
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> bytes:
        done = self._run(*args, config=config, env=env, stdin=stdin)
        if done.returncode != 0:
            raise GitError(_reason(done.stderr) or f"git {args[0]} failed")
        return done.stdout

    def _succeeds(self, *args: str) -> bool:
        """True when Git exits 0, False when 1 (its "no"); an error otherwise."""
        done = self._run(*args)
        if done.returncode in (0, 1):
            return done.returncode == 0
        raise GitError(_reason(done.stderr) or f"git {args[0]} failed")

    def _run(
        self,
        *args: str,
        config: Sequence[tuple[str, str]] = (),
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        command = ["git", "-C", str(self.directory), *args]
        settings = [*self._protocols(), *config]
        full_env = {
            # None of the host's GIT_* variables (GIT_SSL_NO_VERIFY, GIT_SSH_COMMAND, ...).
            **{key: value for key, value in os.environ.items() if not key.startswith("GIT_")},
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_PROTOCOL_FROM_USER": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_COUNT": str(len(settings)),
            **{f"GIT_CONFIG_KEY_{index}": key for index, (key, _) in enumerate(settings)},
            **{f"GIT_CONFIG_VALUE_{index}": value for index, (_, value) in enumerate(settings)},
            **(env or {}),
        }
        try:
            return subprocess.run(
                command,
                input=stdin,
                capture_output=True,
                env=full_env,
                timeout=TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise GitError(f"git {args[0]} timed out after {TIMEOUT_SECONDS}s") from None


# A local repository with the branch checked out (the local fleet's) takes a push to it
# by updating its files, if they are clean: what a commit made there would have done.
_UPDATE_INSTEAD = "git -c receive.denyCurrentBranch=updateInstead receive-pack"
_COMMIT_ID = re.compile(r"^[0-9a-f]{7,64}$")


def _commit_id(value: str) -> str:
    """Object ids are the only revisions written into a command: never an option."""
    if not _COMMIT_ID.match(value):
        raise GitError(f"{value[:80]!r} is not an object id")
    return value


def public_key(private_key: str) -> str:
    """``<type> <base64>`` of an OpenSSH private key (``ssh-keygen -y``)."""
    with tempfile.TemporaryDirectory(prefix="bpfleet-key-") as scratch:
        key = Path(scratch) / "key"
        key.write_text(private_key.rstrip("\n") + "\n")
        key.chmod(0o600)
        done = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(key)], capture_output=True, check=False, timeout=30
        )
    if done.returncode != 0:
        raise GitError(f"the signing key is not an OpenSSH private key: {_reason(done.stderr)}")
    return " ".join(done.stdout.decode().split()[:2])


def _one_line(value: str, what: str) -> str:
    if "\n" in value or "\0" in value:
        raise GitError(f"the {what} must be one line")  # Git's credential protocol is lines
    return value


# Git's closing advice after any remote failure; it says nothing about the cause.
_ADVICE = ("Please make sure you have the correct access rights", "and the repository exists.")


def _reason(stderr: bytes) -> str:
    """What Git said went wrong, in its own words, on one line."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    return " ".join(line for line in lines if line and line not in _ADVICE)
