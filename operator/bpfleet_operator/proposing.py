"""A proposal carried out in Git: one commit on a branch of its own, a dev merge, and
following a pushed proposal into the tracked branch and the fleet.

``push`` fetches the tracked branch, refuses (Conflict, nothing pushed) when a file
changed at its tip since the draft was opened, writes the files into the tip's tree,
commits them once (authored by the proposer, committed by the operator, SSH-signed
where the source verifies signatures) and pushes the commit as a new branch under the
operator's prefix; where the source names a forge, ``open_pull_request`` opens the pull
request. ``merge`` merges a pushed branch into the tracked branch of a local repository
(the local fleet). ``track`` tells, after a GitSource pass, which proposals have been
merged, applied or rejected.

Each returns ``ProposalReport``s and never raises for the proposal's own faults;
``Retry`` is for what may pass (the remote unreachable). Proposals are hostile input:
every name and path is checked again here, whatever the API checked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bpfleet_core import proposals as rules
from bpfleet_core.proposals import Conflict, ProposalReport, ProposalWork, PullRequest
from bpfleet_core.resources import GitRef, GitSourceSpec, GitSourceStatus, parse_git_url
from bpfleet_operator import git

# (head, base, title, body) -> the pull request; raises NotOpened.
OpenPullRequest = Callable[[str, str, str, str], PullRequest]


class NotOpened(Exception):
    """The forge did not open the pull request; the message says why."""


class Retry(Exception):
    """It may work later (the remote is unreachable, say): try again, report nothing."""


@dataclass(frozen=True)
class Setup:
    """The operator's side of every proposal."""

    branch_prefix: str = rules.BRANCH_PREFIX
    committer: git.Identity = field(
        default_factory=lambda: git.Identity("bpfleet operator", "operator@bpfleet.invalid")
    )
    author_domain: str = "bpfleet.invalid"
    signing_key: str | None = None  # an OpenSSH private key

    def author(self, token_name: str) -> git.Identity:
        return git.Identity(token_name, f"{token_name}@{self.author_domain}")


@dataclass(frozen=True)
class Tracked:
    """A pushed proposal as the API holds it."""

    id: int
    state: str
    commit: str | None
    merged_commit: str | None = None
    revision: str | None = None


def _failed(message: str) -> ProposalReport:
    return ProposalReport(state="Failed", message=message[:4000])


def _signing_key(spec: GitSourceSpec, setup: Setup) -> str | ProposalReport | None:
    """The key to sign with (None: the source verifies no signatures), or why not."""
    if not spec.trusted_signing_keys:
        return None
    if setup.signing_key is None:
        return _failed(
            "the GitSource applies only commits signed by its trustedSigningKeys, and this "
            "operator has no signing key (BPFLEET_OPERATOR_SIGNING_KEY)"
        )
    try:
        public = git.public_key(setup.signing_key)
    except git.GitError as error:
        return _failed(str(error))
    trusted = {" ".join(key.split()[:2]) for key in spec.trusted_signing_keys}
    if public not in trusted:
        return _failed(
            f"the operator's signing key ({public[:40]}...) is not among the GitSource's "
            "trustedSigningKeys: its commits would never apply"
        )
    return setup.signing_key


def _branch(work: ProposalWork, setup: Setup, workspace: git.Checkout) -> str | ProposalReport:
    namespace, _, name = work.subject.partition("/")
    branch = work.branch or rules.default_branch(setup.branch_prefix, namespace, name, work.id)
    problems = rules.branch_problems(branch)
    if problems:
        return _failed("; ".join(problems))
    if not branch.startswith(setup.branch_prefix) or branch == setup.branch_prefix:
        return _failed(
            f"branch {branch!r} is outside the operator's branch prefix {setup.branch_prefix!r}"
        )
    try:
        workspace.check_branch_name(branch)
    except git.GitError as error:
        return _failed(str(error))
    return branch


def _text(content: bytes | None) -> str | None:
    return content.decode("utf-8", "replace") if content is not None else None


def _file(workspace: git.Checkout, commit: str, path: str) -> bytes | ProposalReport | None:
    entry = workspace.entry(commit, path)
    if entry is None:
        return None
    if entry.kind != "blob":
        return _failed(f"{path} is a {entry.kind} at {commit[:12]}, not a file")
    content = workspace.blob(entry.id, rules.MAX_FILE_BYTES)
    if content is None:
        return _failed(f"{path} at {commit[:12]} is larger than {rules.MAX_FILE_BYTES} bytes")
    return content


def conflicts(
    work: ProposalWork, tip: str, workspace: git.Checkout
) -> list[Conflict] | ProposalReport:
    """The files that changed at ``tip`` since the revision each was opened from (and
    are not already as proposed there)."""
    found = []
    budget = rules.CONFLICT_TEXT_BYTES
    for change in work.files:
        at_tip = _file(workspace, tip, change.path)
        if isinstance(at_tip, ProposalReport):
            return at_tip
        base: bytes | None = None
        if change.base_revision is not None:
            commit = rules.commit_of(change.base_revision)
            if commit is None or not workspace.has_commit(commit):
                return _failed(
                    f"{change.path}: the base revision {change.base_revision[:80]} is not in "
                    "the tracked branch's history (reopen the file and propose again)"
                )
            at_base = _file(workspace, commit, change.path)
            if isinstance(at_base, ProposalReport):
                return at_base
            base = at_base
        ours = change.content.encode()
        if at_tip not in (base, ours):
            size = len(base or b"") + len(at_tip or b"") + len(ours)
            if size > budget:  # the report must fit the API's body: say so, without texts
                found.append(
                    Conflict(path=change.path, base=None, theirs=None, ours="", omitted=True)
                )
                continue
            budget -= size
            found.append(
                Conflict(
                    path=change.path, base=_text(base), theirs=_text(at_tip), ours=change.content
                )
            )
    return found


def _message(work: ProposalWork) -> str:
    return f"{work.message.rstrip()}\n\n{rules.trailer(work.id)}\n"


def push(
    work: ProposalWork,
    spec: GitSourceSpec,
    workspace: git.Checkout,
    setup: Setup,
    open_pull_request: OpenPullRequest | None = None,
) -> ProposalReport:
    """One commit on a new branch; see the module docstring."""
    tracked = spec.ref.branch
    if tracked is None:
        return _failed("the GitSource follows a tag or a commit, not a branch")
    for change in work.files:
        problems = rules.path_problems(change.path, spec.path)
        if problems:
            return _failed("; ".join(problems))
    branch = _branch(work, setup, workspace)
    if isinstance(branch, ProposalReport):
        return branch
    signing_key = _signing_key(spec, setup)
    if isinstance(signing_key, ProposalReport):
        return signing_key
    try:
        tip = workspace.fetch(GitRef(branch=tracked)).commit
    except git.GitError as error:
        raise Retry(f"fetching {tracked} failed: {error}") from None
    try:
        found = conflicts(work, tip, workspace)
        if isinstance(found, ProposalReport):
            return found
        if found:
            names = ", ".join(item.path for item in found)
            return ProposalReport(
                state="Conflict",
                message=f"changed on {tracked} since the draft was opened: {names}; nothing pushed",
                parent=tip,
                conflicts=tuple(found),
            )
        tree = workspace.write_tree(tip, {c.path: c.content.encode() for c in work.files})
        if tree == workspace.tree_of(tip):
            return _failed(f"nothing to commit: every file is as proposed at {tip[:12]}")
        existing = workspace.remote_branch(branch)
        if existing is not None:
            return _pushed_before(work, branch, existing, workspace, tip)
        commit = workspace.commit(
            tree,
            [tip],
            _message(work),
            author=setup.author(work.author),
            committer=setup.committer,
            signing_key=signing_key,
        )
    except git.GitError as error:
        return _failed(f"the commit could not be made: {error}")
    try:
        workspace.push(commit, branch, new=True)
    except git.GitError as error:
        raise Retry(f"pushing {branch} failed: {error}") from None
    pull_request, note = _pull_request(work, branch, tracked, open_pull_request)
    return ProposalReport(
        state="Pushed",
        message=note,
        branch=branch,
        commit=commit,
        parent=tip,
        pull_request=pull_request,
    )


def _pushed_before(
    work: ProposalWork, branch: str, existing: str, workspace: git.Checkout, tip: str
) -> ProposalReport:
    """The branch exists: ours from an earlier attempt (its commit carries our trailer),
    or someone else's, which is never overwritten."""
    try:
        workspace.fetch(GitRef(branch=branch))
        ours = rules.trailer(work.id) in workspace.message(existing).splitlines()
    except git.GitError:
        ours = False
    if not ours:
        return _failed(f"branch {branch} already exists on the remote; propose with another name")
    return ProposalReport(
        state="Pushed",
        message="pushed earlier (the operator restarted before saying so)",
        branch=branch,
        commit=existing,
        parent=tip,
    )


def _pull_request(
    work: ProposalWork, branch: str, tracked: str, open_pull_request: OpenPullRequest | None
) -> tuple[PullRequest | None, str]:
    if open_pull_request is None:
        return None, ""
    title, _, rest = work.message.strip().partition("\n")
    body = (
        f"{rest.strip()}\n\n" if rest.strip() else ""
    ) + f"Proposed by {work.author} through bpfleet (proposal {work.id})."
    try:
        return open_pull_request(branch, tracked, title[:250], body), ""
    except NotOpened as error:  # the branch is pushed either way: say why there is no PR
        return None, f"pushed; the pull request was not opened: {error}"


def merge(
    work: ProposalWork, spec: GitSourceSpec, workspace: git.Checkout, setup: Setup
) -> ProposalReport:
    """Dev merge: the proposal's branch merged into the tracked branch of a local
    repository, by a merge commit pushed as a fast-forward. A merge that cannot be made
    leaves the proposal Pushed, saying why."""

    def refused(reason: str) -> ProposalReport:
        return ProposalReport(state="Pushed", message=f"not merged: {reason}"[:4000])

    tracked, commit, branch = spec.ref.branch, work.commit, work.pushed_branch
    if not spec.proposals.dev_merge or parse_git_url(spec.url).transport != "local":
        return refused("the GitSource does not allow merging from the API")
    if tracked is None or commit is None or branch is None:
        return refused("the proposal was never pushed, or the source follows no branch")
    if not branch.startswith(setup.branch_prefix) or rules.branch_problems(branch):
        return refused(f"branch {branch!r} is not one the operator pushed")
    signing_key = _signing_key(spec, setup)
    if isinstance(signing_key, ProposalReport):
        return refused(signing_key.message)
    try:
        tip = workspace.fetch(GitRef(branch=tracked)).commit
        workspace.fetch(GitRef(branch=branch))
        if not workspace.has_commit(commit):
            return refused(f"commit {commit[:12]} is no longer on {branch}")
        if workspace.is_ancestor(commit, tip):
            return ProposalReport(
                state="Merged", merged_commit=workspace.first_descendant(commit, tip)
            )
        tree, clashes = workspace.merge_trees(tip, commit)
        if tree is None:
            return refused(f"{', '.join(clashes)} changed on {tracked} too; merge by hand")
        merged = workspace.commit(
            tree,
            [tip, commit],
            f"Merge {branch} into {tracked}\n\n{rules.trailer(work.id)}\n",
            author=setup.author(work.requested_by or work.author),
            committer=setup.committer,
            signing_key=signing_key,
        )
        workspace.push(merged, tracked, expect=tip, update_worktree=True)
    except git.GitError as error:
        return refused(str(error))
    return ProposalReport(state="Merged", merged_commit=merged)


def track(
    proposals: Sequence[Tracked],
    status: GitSourceStatus,
    rejected: bool,
    checkout: git.Checkout,
) -> list[tuple[int, ProposalReport]]:
    """After a pass over the source (whose ``checkout`` fetched the tracked branch):
    each pushed proposal whose commit is now in the tracked branch is Merged, Applied
    when the revision in force contains it, Rejected when the revision this pass
    rejected does. Only changes are returned."""
    fetched = rules.commit_of(status.last_fetched_revision)
    applied = rules.commit_of(status.last_applied_revision)
    attempted = rules.commit_of(status.last_attempted_revision)
    found = []
    for proposal in proposals:
        commit = proposal.commit
        if proposal.state == "Applied":
            continue  # followed to the end: the fleet says the rest
        if commit is None or fetched is None or not checkout.is_ancestor(commit, fetched):
            continue
        merged = proposal.merged_commit or checkout.first_descendant(commit, fetched)
        if applied is not None and checkout.is_ancestor(commit, applied):
            report = ProposalReport(
                state="Applied", merged_commit=merged, revision=status.last_applied_revision
            )
        elif rejected and attempted is not None and checkout.is_ancestor(commit, attempted):
            report = ProposalReport(
                state="Rejected",
                message=f"{status.last_attempted_revision} was rejected",
                merged_commit=merged,
                revision=status.last_attempted_revision,
                errors=status.errors,
            )
        else:
            report = ProposalReport(state="Merged", merged_commit=merged)
        same = report.state == proposal.state and report.revision in (None, proposal.revision)
        if not same and rules.may_follow(proposal.state, report.state):
            found.append((proposal.id, report))
    return found
