"""Proposals: a change to a GitSource's repository, written by the operator as exactly
one commit on a branch of its own (and a pull request where a forge is configured).

What the API and the operator say to each other about a proposal, and the rules both
apply to it: the API checks a proposal before it accepts one, and the operator, the only
Git client, checks again before it runs a Git command.

The state machine (``may_follow``)::

    Proposed --> Pushed --> Merged --> Applied
        |          |          `-----> Rejected --> Applied (a later revision)
        |          `--> Applied | Rejected  (merged and applied in one pass)
        +--> Conflict   (the file changed at the tip since the draft was opened; nothing pushed)
        `--> Failed     (nothing pushed: why is in the message)

``Enforcing`` is no state of its own: the API derives it from the fleet (every object of
an applied proposal in force, on every node it selects).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from bpfleet_core import yamlfiles
from bpfleet_core.netpol import validating
from bpfleet_core.protocol import NamespaceName, ObjectName
from bpfleet_core.resources import SourceError

ProposalState = Literal["Proposed", "Pushed", "Conflict", "Failed", "Merged", "Applied", "Rejected"]
ForgeType = Literal["github", "gitlab", "gitea"]

MAX_FILES = 20
MAX_FILE_BYTES = yamlfiles.LIMITS.file_bytes
MAX_TOTAL_BYTES = 1 << 20  # all files together: what one JSON body carries anyway
CONFLICT_TEXT_BYTES = 640 << 10  # the texts a Conflict report carries in all (one body)
MAX_MESSAGE = 4096
MAX_PATH = 1024
MAX_BRANCH = 200
BRANCH_PREFIX = "bpfleet/"
# A trailer in every proposal commit: how the operator recognises its own commit on a
# branch it pushed before (a retry after a crash pushes nothing twice).
TRAILER = "Bpfleet-Proposal"

_NEXT: dict[str, frozenset[str]] = {
    "Proposed": frozenset({"Pushed", "Conflict", "Failed"}),
    "Pushed": frozenset({"Pushed", "Merged", "Applied", "Rejected"}),
    "Merged": frozenset({"Applied", "Rejected"}),
    "Rejected": frozenset({"Rejected", "Applied"}),
    "Applied": frozenset(),
    "Conflict": frozenset(),
    "Failed": frozenset(),
}
OPEN_STATES: tuple[ProposalState, ...] = ("Pushed", "Merged", "Rejected")  # the operator tracks


def may_follow(current: str, new: str) -> bool:
    """May a proposal in state ``current`` be reported in state ``new``? The same state
    again is always fine (a report repeated)."""
    return new == current or new in _NEXT.get(current, frozenset())


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


Commit = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{7,64}$")]
Text = Annotated[str, StringConstraints(max_length=MAX_FILE_BYTES)]


class SourceKey(_Model):
    namespace: NamespaceName
    name: ObjectName

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class FileChange(_Model):
    """One file of a proposal, whole."""

    path: str = Field(
        max_length=MAX_PATH,
        description="Inside the repository, under the GitSource's path: a manifest "
        "(.yaml, .yml) or a flow-test file (<policy>.flows.yaml).",
        examples=["policies/db-ingress.yaml"],
    )
    content: str = Field(max_length=MAX_FILE_BYTES, description="The whole new text.")
    base_revision: str | None = Field(
        default=None,
        max_length=300,
        description="The revision the draft was opened from (a commit, or the GitSource's "
        "'<ref>@sha1:<commit>'); null for a file that did not exist. If the file at the "
        "branch tip differs from it there, nothing is pushed (Conflict).",
    )


class Conflict(_Model):
    """A file that changed at the branch tip since the draft was opened: the three
    texts of a three-way view."""

    path: str
    base: str | None = Field(description="The file as the draft was opened; null: absent.")
    theirs: str | None = Field(description="The file at the branch tip now; null: absent.")
    ours: str = Field(description="The file as proposed.")
    omitted: bool = Field(
        default=False,
        description="The texts were too large to carry with the others (base, theirs and "
        "ours are then empty): open the file at the tip.",
    )


class PullRequest(_Model):
    forge: ForgeType
    url: str = Field(max_length=2048, description="The pull (merge) request's page.")
    number: int = Field(ge=0, description="Its number (GitLab: the iid).")


class ProposalWork(_Model):
    """What the operator is asked to do: push a proposal, or merge one (dev merge)."""

    id: int
    action: Literal["push", "merge"]
    source: SourceKey
    files: tuple[FileChange, ...] = ()
    message: str = ""
    branch: str | None = Field(default=None, description="Requested; null: the default.")
    author: str = Field(description="The proposer's token name.")
    subject: str = Field(
        default="",
        description="namespace/name of the first object the files declare: the default "
        "branch's name.",
    )
    commit: Commit | None = Field(default=None, description="merge: the proposal's commit.")
    pushed_branch: str | None = Field(default=None, description="merge: the branch pushed.")
    requested_by: str = Field(default="", description="merge: who asked for it.")


class ProposalReport(_Model):
    """What the operator says happened to a proposal."""

    state: ProposalState
    message: str = Field(default="", max_length=4096, description="Why, in words.")
    branch: str | None = None
    commit: Commit | None = None
    parent: Commit | None = Field(default=None, description="The tip the commit was made on.")
    pull_request: PullRequest | None = None
    merged_commit: Commit | None = None
    revision: str | None = Field(
        default=None, max_length=300, description="Applied or rejected: that revision."
    )
    errors: tuple[SourceError, ...] = Field(default=(), max_length=100)
    conflicts: tuple[Conflict, ...] = Field(default=(), max_length=MAX_FILES)


class ProposalWorkList(_Model):
    """The operator's long-poll: what to do, and the cursor to pass next."""

    cursor: int
    work: tuple[ProposalWork, ...]


# --------------------------------------------------------------------------- rules


def commit_of(revision: str) -> str | None:
    """The commit a revision names: ``main@sha1:<commit>`` or the commit itself."""
    commit = revision.rpartition("@sha1:")[2].strip()
    return commit if re.fullmatch(r"[0-9a-f]{7,64}", commit) else None


def is_flow_test(path: str) -> bool:
    return path.endswith(validating.FLOW_TEST_SUFFIXES)


def _under(path: str, root: str) -> bool:
    prefix = root.strip("/")
    return prefix in ("", ".") or path.startswith(prefix + "/")


def path_problems(path: str, root: str) -> list[str]:
    """Why ``path`` may not be written by a proposal to a source whose manifests are
    under ``root``; empty when it may."""
    shown = repr(path[:80])
    if not path:
        return ["the path is empty"]
    if len(path) > MAX_PATH:
        return [f"{shown}: longer than {MAX_PATH} characters"]
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in path):
        return [f"{shown}: contains a control character"]
    if "\\" in path:
        return [f"{shown}: contains a backslash; separate directories with '/'"]
    if path.startswith("/"):
        return [f"{shown}: must be relative to the repository, not absolute"]
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return [f"{shown}: must stay inside the repository (no '..', '.' or empty parts)"]
    if any(part.lower() == ".git" for part in parts):
        return [f"{shown}: may not write into .git"]
    if not _under(path, root):
        return [f"{shown}: outside the GitSource's path {root!r}"]
    if not path.endswith((".yaml", ".yml")):
        return [f"{shown}: only manifests (.yaml, .yml) and flow-test files are proposed"]
    return []


_BAD_REF_CHARACTERS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def branch_problems(name: str) -> list[str]:
    """Why ``name`` is no branch name Git accepts (``git check-ref-format --branch``'s
    rules, checked again by the operator with Git itself); empty when it is one."""
    shown = repr(name[:80])
    if not name:
        return ["the branch name is empty"]
    if len(name) > MAX_BRANCH:
        return [f"{shown}: longer than {MAX_BRANCH} characters"]
    problems = []
    if _BAD_REF_CHARACTERS.search(name):
        problems.append("spaces, control characters and ~ ^ : ? * [ \\ are not allowed")
    if name.startswith("-"):
        problems.append("may not start with '-'")
    if ".." in name or "@{" in name or name == "@":
        problems.append("may not contain '..' or '@{', nor be '@'")
    parts = name.split("/")
    if any(not part for part in parts):
        problems.append("may not begin or end with '/' nor contain '//'")
    if any(part.startswith(".") or part.endswith(".lock") for part in parts):
        problems.append("no part may begin with '.' or end with '.lock'")
    if name.endswith("."):
        problems.append("may not end with '.'")
    return [f"{shown}: {problem}" for problem in problems]


def default_branch(prefix: str, namespace: str, name: str, proposal: int) -> str:
    """``<prefix><namespace>-<name>-<id>``: the object the proposal changes, and its id."""
    return f"{prefix}{namespace}-{name}-{proposal}"


def trailer(proposal: int) -> str:
    return f"{TRAILER}: {proposal}"
