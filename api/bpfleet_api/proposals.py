"""Proposals as the API keeps them, and shared drafts. Like ``fleet``, nothing here
commits; and nothing here writes desired state: a proposal reaches the fleet only as a
Git commit, merged and applied by its GitSource.

A proposal is checked whole before it is accepted: the source must be known (its
operator reports it), follow a branch, and take the paths; every manifest is validated
as a GitSource pass would (the fleet's program checks included) and every flow-test
file parsed, each problem in the validator's words. The operator then long-polls for
work (``work_after``, tasks as for "reconcile now") and reports each stage
(``record_report``), which the state machine of ``bpfleet_core.proposals`` orders.

How far the fleet follows is read, not stored: each object the proposal declares is
"in force" when the fleet holds it as proposed, and the proposal is Enforcing once
applied with every object in force on every node it selects.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import delete
from sqlmodel import Session, col, select

from bpfleet_api import fleet, gitsources
from bpfleet_api.changes import Conflict, FleetError, Invalid, NotFound
from bpfleet_api.models import (
    Draft,
    GitSourceRecord,
    NodePolicy,
    NodeProgramStatus,
    Policy,
    Program,
    Proposal,
    ProposalTask,
    aware,
)
from bpfleet_api.policies import stored_form, summaries
from bpfleet_core import bundles
from bpfleet_core import proposals as rules
from bpfleet_core.netpol import flowtests, models
from bpfleet_core.proposals import FileChange, ProposalReport, ProposalWork, SourceKey
from bpfleet_core.resources import BpfProgramSpec, GitSourceSpec, SourceError

WAKE_KEY = "/proposals"  # a waiter key no node name can take (names hold no '/')
WORK_PAGE = 50  # work items in one answer to an operator
WORK_PAGE_BYTES = 4 << 20  # and their files' bytes (one item always goes, whatever its size)
_PENDING = {"push": ("Proposed",), "merge": ("Pushed",)}  # the states that need it
_PUSHED = frozenset({"Pushed", "Merged", "Applied", "Rejected"})


# ------------------------------------------------------------------------ accepting


def _source_spec(session: Session, source: SourceKey) -> GitSourceSpec:
    record = gitsources.get_source(session, source.namespace, source.name)
    spec = gitsources.spec_of(record)
    if spec is None:
        raise Conflict(f"GitSource {source}'s spec is invalid: fix it before proposing to it")
    if spec.ref.branch is None and (spec.ref.tag or spec.ref.commit):
        raise Invalid(
            f"GitSource {source} follows a {'tag' if spec.ref.tag else 'commit'}: "
            "proposals go to a branch, so the source must follow one"
        )
    return spec


def _program_check(session: Session) -> bundles.ProgramCheck:
    """What the fleet says of a program, as ``POST /v1/validate`` says it."""

    def check(_: str, spec: BpfProgramSpec) -> list[str]:
        try:
            fleet.resolve_spec(session, spec)
        except FleetError as error:
            return error.problems or [error.message]
        return []

    return check


def check_files(
    session: Session, spec: GitSourceSpec, files: Sequence[FileChange]
) -> list[dict[str, Any]]:
    """Every problem of the files, or ``Invalid`` naming them all; else the objects the
    manifests declare (kind, namespace, name, and the form the fleet would store)."""
    problems: list[str] = []
    seen: set[str] = set()
    total = 0
    for index, change in enumerate(files):
        where = f"files[{index}]"
        problems += [
            f"{where}.path: {text}" for text in rules.path_problems(change.path, spec.path)
        ]
        if change.path in seen:
            problems.append(f"{where}.path: {change.path!r} is given twice")
        seen.add(change.path)
        size = len(change.content.encode())
        total += size
        if size > rules.MAX_FILE_BYTES:
            problems.append(f"{where}.content: {size} bytes, more than {rules.MAX_FILE_BYTES}")
        if change.base_revision is not None and rules.commit_of(change.base_revision) is None:
            problems.append(
                f"{where}.baseRevision: {change.base_revision[:80]!r} names no commit "
                "(a commit id, or '<ref>@sha1:<commit>')"
            )
    if total > rules.MAX_TOTAL_BYTES:
        problems.append(f"files: {total} bytes together, more than {rules.MAX_TOTAL_BYTES}")
    if problems:
        raise Invalid("the proposal cannot be written as it is", problems)
    manifests = {c.path: c.content for c in files if not rules.is_flow_test(c.path)}
    for change in files:
        if rules.is_flow_test(change.path):
            parsed = flowtests.parse(change.content, change.path)
            problems += [str(problem) for problem in parsed.problems]
    bundle = bundles.load(manifests, _program_check(session))
    problems += [str(problem) for problem in bundle.problems]
    declared = {document.origin.rpartition(":")[0] for document in bundle.documents()}
    problems += [
        f"{path}: declares no BpfProgram or NetworkPolicy"
        for path in sorted(manifests)
        if path not in declared and not any(p.startswith(f"{path}:") for p in problems)
    ]
    if problems:
        raise Invalid("the proposal's files are invalid", problems)
    objects: list[dict[str, Any]] = [
        {"kind": "NetworkPolicy", "namespace": p.policy.namespace, "name": p.policy.metadata.name,
         "form": stored_form(p.policy)}
        for p in bundle.policies
    ]  # fmt: skip
    objects += [
        {"kind": "BpfProgram", "namespace": None, "name": p.name,
         "form": p.spec.model_dump(mode="json", by_alias=True, exclude_none=True)}
        for p in bundle.programs
    ]  # fmt: skip
    return objects


def create(
    session: Session,
    *,
    source: SourceKey,
    files: Sequence[FileChange],
    message: str,
    branch: str | None,
    author: str,
) -> Proposal:
    """Accept a proposal (every check passed) and queue it for its operator."""
    spec = _source_spec(session, source)
    if branch is not None and rules.branch_problems(branch):
        raise Invalid("the branch name is refused", rules.branch_problems(branch))
    if "\0" in message or not message.strip():
        raise Invalid("the message must be text, not empty")
    objects = check_files(session, spec, files)
    proposal = Proposal(
        source_namespace=source.namespace,
        source_name=source.name,
        author=author,
        message=message.strip() + "\n",
        files=[change.model_dump(mode="json", by_alias=True) for change in files],
        objects=objects,
        requested_branch=branch,
    )
    session.add(proposal)
    session.flush()
    session.add(ProposalTask(proposal_id=proposal.id or 0, action="push"))
    return proposal


# -------------------------------------------------------------------------- reading


def get(session: Session, proposal_id: int) -> Proposal:
    found = session.get(Proposal, proposal_id)
    if found is None:
        raise NotFound(f"proposal {proposal_id} does not exist")
    return found


def listed(
    session: Session, source: SourceKey | None = None, states: Iterable[str] = ()
) -> list[Proposal]:
    """Newest first."""
    query = select(Proposal).order_by(col(Proposal.id).desc())
    if source is not None:
        query = query.where(
            Proposal.source_namespace == source.namespace, Proposal.source_name == source.name
        )
    wanted = sorted(set(states))
    if wanted:
        query = query.where(col(Proposal.state).in_(wanted))
    return list(session.exec(query).all())


def source_of(proposal: Proposal) -> SourceKey:
    return SourceKey(namespace=proposal.source_namespace, name=proposal.source_name)


def files_of(proposal: Proposal) -> list[FileChange]:
    return [FileChange.model_validate(item) for item in proposal.files]


# --------------------------------------------------------------- how the fleet follows


@dataclass(frozen=True)
class ObjectState:
    kind: str
    namespace: str | None
    name: str
    in_force: bool
    generation: int | None
    ready: int
    desired: int
    failed: int
    since: datetime | None  # when the last of its nodes caught up


@dataclass(frozen=True)
class Following:
    objects: list[ObjectState]
    stage: str
    enforced_at: datetime | None

    @property
    def ready(self) -> int:
        return sum(item.ready for item in self.objects)

    @property
    def desired(self) -> int:
        return sum(item.desired for item in self.objects)


_POLICY = TypeAdapter[models.Policy](models.AnyPolicy)


def _policy_meaning(document: dict[str, Any]) -> str:
    """What a policy does, whatever form it came in: a plain networking.k8s.io/v1
    policy applied in a cluster is stored as the bpfleet one the operator made of it."""
    policy = _POLICY.validate_python(document)
    spec = policy.spec
    selector = policy.node_selector
    return json.dumps(
        [
            spec.pod_selector.model_dump(mode="json"),
            sorted(spec.effective_policy_types()),
            [rule.model_dump(mode="json") for rule in spec.ingress or ()],
            [rule.model_dump(mode="json") for rule in spec.egress or ()],
            policy.mode,
            selector.model_dump(mode="json") if selector is not None else None,
        ],
        sort_keys=True,
    )


def _program_in_force(proposed: dict[str, Any], stored: dict[str, Any]) -> bool:
    """The stored spec pins the artifact's digest; a proposal that names none accepts any."""
    wanted, held = BpfProgramSpec.model_validate(proposed), BpfProgramSpec.model_validate(stored)
    if wanted.artifact.digest is None:
        held = held.model_copy(
            update={"artifact": held.artifact.model_copy(update={"digest": None})}
        )
    return wanted == held


def _policy_state(session: Session, item: dict[str, Any]) -> ObjectState:
    namespace, name = str(item["namespace"]), str(item["name"])
    row = session.get(Policy, (namespace, name))
    if row is None:
        return ObjectState("NetworkPolicy", namespace, name, False, None, 0, 0, 0, None)
    summary = summaries(session, [row])[(namespace, name)]
    marks = session.exec(
        select(NodePolicy).where(NodePolicy.namespace == namespace, NodePolicy.name == name)
    ).all()
    caught_up = [
        aware(mark.updated_at)
        for mark in marks
        if mark.desired_generation is not None
        and mark.enforced_generation == mark.desired_generation
    ]
    return ObjectState(
        "NetworkPolicy",
        namespace,
        name,
        _policy_meaning(row.document) == _policy_meaning(item["form"]),
        row.generation,
        summary.enforcing,
        summary.desired,
        summary.failed,
        max(caught_up, default=None),
    )


def _program_state(session: Session, item: dict[str, Any]) -> ObjectState:
    name = str(item["name"])
    row = session.get(Program, name)
    if row is None:
        return ObjectState("BpfProgram", None, name, False, None, 0, 0, 0, None)
    summary = fleet.summarize(session, row)
    statuses = session.exec(
        select(NodeProgramStatus).where(
            NodeProgramStatus.program == name, NodeProgramStatus.generation == row.generation
        )
    ).all()
    return ObjectState(
        "BpfProgram",
        None,
        name,
        _program_in_force(dict(item["form"]), row.spec) and not row.killed,
        row.generation,
        summary.attached,
        summary.desired,
        summary.failed,
        max((aware(status.updated_at) for status in statuses), default=None),
    )


def following(session: Session, proposal: Proposal) -> Following:
    """Each object of the proposal in the fleet now, and the stage that makes."""
    objects = [
        _policy_state(session, item) if item["kind"] == "NetworkPolicy"
        else _program_state(session, item)
        for item in proposal.objects
    ]  # fmt: skip
    enforcing = (
        proposal.state == "Applied"
        and bool(objects)
        and all(item.in_force and item.ready == item.desired for item in objects)
    )
    if not enforcing:
        return Following(objects, proposal.state, None)
    times = [item.since for item in objects if item.since is not None]
    applied = aware(proposal.applied_at) if proposal.applied_at is not None else None
    return Following(objects, "Enforcing", max(times, default=applied))


def can_merge(session: Session, proposal: Proposal) -> bool:
    """A dev merge is offered: the proposal is pushed and its source allows merging."""
    record = session.get(GitSourceRecord, (proposal.source_namespace, proposal.source_name))
    spec = gitsources.spec_of(record) if record is not None else None
    return spec is not None and spec.proposals.dev_merge and proposal.state == "Pushed"


# ------------------------------------------------------------------- the operator's side


def request_merge(session: Session, proposal_id: int, requested_by: str, now: datetime) -> Proposal:
    """Ask the operator to merge a pushed proposal into the tracked branch (sources that
    allow it: local repositories, the local fleet)."""
    proposal = get(session, proposal_id)
    source = source_of(proposal)
    spec = gitsources.spec_of(gitsources.get_source(session, source.namespace, source.name))
    if spec is None or not spec.proposals.dev_merge:
        raise Conflict(
            f"GitSource {source} does not take merges from the API "
            "(spec.proposals.devMerge): merge the pull request where it was opened"
        )
    if proposal.state != "Pushed":
        raise Conflict(f"proposal {proposal_id} is {proposal.state}: only a pushed one merges")
    if proposal.merge_requested_at is None:
        proposal.merge_requested_by, proposal.merge_requested_at = requested_by, now
        session.add(proposal)
        session.add(ProposalTask(proposal_id=proposal_id, action="merge"))
    return proposal


def record_report(
    session: Session, proposal_id: int, report: ProposalReport, now: datetime
) -> Proposal:
    """What the operator did; a report out of order (say Pushed after Applied) is a 409."""
    proposal = get(session, proposal_id)
    if not rules.may_follow(proposal.state, report.state):
        raise Conflict(
            f"proposal {proposal_id} is {proposal.state}; it cannot become {report.state}"
        )
    changed = report.state != proposal.state
    proposal.state = report.state
    proposal.state_message = report.message
    for field in ("branch", "commit", "parent", "merged_commit", "revision"):
        value = getattr(report, field)
        if value is not None:
            setattr(proposal, field, value)
    if report.pull_request is not None:
        proposal.pull_request = report.pull_request.model_dump(mode="json", by_alias=True)
    if report.state in ("Rejected", "Failed") or (changed and report.state == "Applied"):
        proposal.errors = [error.model_dump(mode="json", by_alias=True) for error in report.errors]
    if report.state == "Conflict":
        proposal.conflicts = [
            item.model_dump(mode="json", by_alias=True) for item in report.conflicts
        ]
    if report.state in _PUSHED and proposal.pushed_at is None:
        proposal.pushed_at = now
    if report.state in ("Merged", "Applied", "Rejected") and proposal.merged_at is None:
        proposal.merged_at = now
    if report.state != "Pushed" or changed is False:
        # Merged, or a merge tried and failed (Pushed again, with the reason): either way
        # the request is answered.
        proposal.merge_requested_at = None
    if report.state == "Applied" and changed:
        proposal.applied_at = now
    if report.state == "Rejected" and changed:
        proposal.rejected_at = now
    proposal.updated_at = now
    session.add(proposal)
    done = ["push"] if proposal.state != "Proposed" else []
    if proposal.merge_requested_at is None:
        done.append("merge")
    session.execute(
        delete(ProposalTask).where(
            col(ProposalTask.proposal_id) == proposal_id, col(ProposalTask.action).in_(done)
        )
    )
    return proposal


def _subject(proposal: Proposal) -> str:
    """namespace/name of the first object (a program: in the source's namespace)."""
    first = proposal.objects[0] if proposal.objects else {}
    namespace = first.get("namespace") or proposal.source_namespace
    return f"{namespace}/{first.get('name') or proposal.source_name}"


def _work(proposal: Proposal, action: str) -> ProposalWork:
    return ProposalWork(
        id=proposal.id or 0,
        action="merge" if action == "merge" else "push",
        source=source_of(proposal),
        files=tuple(files_of(proposal)),
        message=proposal.message,
        branch=proposal.requested_branch,
        author=proposal.author,
        subject=_subject(proposal),
        commit=proposal.commit,
        pushed_branch=proposal.branch,
        requested_by=proposal.merge_requested_by or "",
    )


def latest_task(session: Session) -> int:
    newest = session.exec(select(ProposalTask.id).order_by(col(ProposalTask.id).desc())).first()
    return newest or 0


def work_after(session: Session, cursor: int | None) -> tuple[int, list[ProposalWork]]:
    """What operators should do: every pending task (``cursor`` None: an operator that
    just started), or those queued after ``cursor``; and the cursor to pass next."""
    latest = latest_task(session)
    after = 0 if cursor is None or cursor > latest else cursor
    rows = session.exec(
        select(ProposalTask, Proposal)
        .join(Proposal, col(Proposal.id) == col(ProposalTask.proposal_id))
        .where(col(ProposalTask.id) > after)
        .order_by(col(ProposalTask.id))
    ).all()
    work: list[ProposalWork] = []
    seen: set[tuple[int, str]] = set()
    size, last = 0, after
    for task, proposal in rows:
        key = (task.proposal_id, task.action)
        waiting = task.action == "push" or proposal.merge_requested_at is not None
        if key in seen or not waiting or proposal.state not in _PENDING.get(task.action, ()):
            continue
        item = _work(proposal, task.action)
        item_size = sum(len(change.content) for change in item.files)
        if work and (len(work) == WORK_PAGE or size + item_size > WORK_PAGE_BYTES):
            return last, work  # more to come: the operator asks again at once
        seen.add(key)
        work.append(item)
        size, last = size + item_size, task.id or last
    return max(latest, last), work


# --------------------------------------------------------------------------- drafts


def save_draft(session: Session, author: str, document: dict[str, Any], keep: int) -> Draft:
    """Keep a draft under a fresh id; the author's oldest go beyond ``keep``."""
    draft = Draft(id=secrets.token_urlsafe(12), author=author, document=document)
    session.add(draft)
    session.flush()
    kept = session.exec(
        select(Draft.id)
        .where(Draft.author == author)
        .order_by(col(Draft.created_at).desc(), col(Draft.id))
        .offset(keep)
    ).all()
    if kept:
        session.execute(delete(Draft).where(col(Draft.id).in_(list(kept))))
    return draft


def get_draft(session: Session, draft_id: str) -> Draft:
    found = session.get(Draft, draft_id)
    if found is None:
        raise NotFound(f"draft {draft_id} does not exist (or was dropped: each author keeps "
                       "the newest only)")  # fmt: skip
    return found


def errors_of(proposal: Proposal) -> list[SourceError]:
    return [SourceError.model_validate(item) for item in proposal.errors]
