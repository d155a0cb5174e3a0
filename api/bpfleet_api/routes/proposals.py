"""Proposals: changes to a GitSource's repository, asked for here and written by the
operator as one commit on a branch (see ``bpfleet_api.proposals``). People propose and
follow; operators long-poll for work and report each stage."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlmodel import Session

from bpfleet_api import notify, proposals
from bpfleet_api.changes import Invalid
from bpfleet_api.db import get_engine
from bpfleet_api.deps import Admin, Proposer, Reader, SessionDep, SettingsDep
from bpfleet_api.models import Proposal, utcnow
from bpfleet_api.routes._paging import TOTAL_RESPONSES, PagingDep
from bpfleet_api.settings import get_settings
from bpfleet_api.views import (
    ProposalDetail,
    ProposalFileView,
    ProposalObjectView,
    ProposalRequest,
    ProposalView,
    SourceRefView,
)
from bpfleet_core.proposals import (
    Conflict,
    ProposalReport,
    ProposalState,
    ProposalWork,
    ProposalWorkList,
    PullRequest,
    SourceKey,
)

router = APIRouter(tags=["proposals"])
ProposalId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The proposal's id.")]
SOURCE_PATTERN = (
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/"
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
RECHECK_SECONDS = 30.0  # a long-poll re-reads the database this often without a wake-up
REFUSALS: dict[int | str, dict[str, str]] = {
    404: {"description": "No such proposal, or the GitSource was never reported."},
    409: {"description": "Not now: the state or the source does not allow it (says why)."},
    422: {"description": "Invalid: each problem in the validator's words."},
}


def proposal_view(session: Session, proposal: Proposal) -> ProposalView:
    follows = proposals.following(session, proposal)
    return ProposalView(
        id=proposal.id or 0,
        source=SourceRefView(namespace=proposal.source_namespace, name=proposal.source_name),
        state=proposal.state,
        stage=follows.stage,
        state_message=proposal.state_message,
        message=proposal.message,
        author=proposal.author,
        files=[
            ProposalFileView(
                path=change.path,
                base_revision=change.base_revision,
                bytes=len(change.content.encode()),
            )
            for change in proposals.files_of(proposal)
        ],
        requested_branch=proposal.requested_branch,
        branch=proposal.branch,
        commit=proposal.commit,
        parent=proposal.parent,
        pull_request=(
            PullRequest.model_validate(proposal.pull_request) if proposal.pull_request else None
        ),
        merged_commit=proposal.merged_commit,
        revision=proposal.revision,
        errors=proposals.errors_of(proposal),
        objects=[
            ProposalObjectView(
                kind=item.kind,
                namespace=item.namespace,
                name=item.name,
                in_force=item.in_force,
                generation=item.generation,
                ready=item.ready,
                desired=item.desired,
                failed=item.failed,
            )
            for item in follows.objects
        ],
        ready=follows.ready,
        desired=follows.desired,
        can_merge=proposals.can_merge(session, proposal),
        merge_requested=proposal.merge_requested_at is not None,
        created_at=proposal.created_at,
        updated_at=proposal.updated_at,
        pushed_at=proposal.pushed_at,
        merged_at=proposal.merged_at,
        applied_at=proposal.applied_at,
        rejected_at=proposal.rejected_at,
        enforced_at=follows.enforced_at,
    )


def proposal_detail(session: Session, proposal: Proposal) -> ProposalDetail:
    return ProposalDetail(
        **proposal_view(session, proposal).model_dump(),
        changes=proposals.files_of(proposal),
        conflicts=[Conflict.model_validate(item) for item in proposal.conflicts],
    )


def _wake_operators(request: Request) -> None:
    request.app.state.waiters.wake([proposals.WAKE_KEY])
    notify.publish(get_settings().redis_url, [proposals.WAKE_KEY])


@router.post("/v1/proposals", status_code=201, responses=REFUSALS)
def propose(
    body: ProposalRequest, request: Request, session: SessionDep, token: Proposer
) -> ProposalDetail:
    """Propose files for a GitSource's repository. Every file is checked first (paths
    under the source's spec.path, manifests validated as a GitSource pass would, flow
    tests parsed); the operator then writes one commit on a branch, authored by this
    token's name, and opens a pull request where the source names a forge. Nothing
    reaches the fleet until the change is merged and its revision applied."""
    proposal = proposals.create(
        session,
        source=SourceKey(namespace=body.source.namespace, name=body.source.name),
        files=body.files,
        message=body.message,
        branch=body.branch,
        author=token.name,
    )
    session.commit()
    _wake_operators(request)
    return proposal_detail(session, proposal)


@router.get("/v1/proposals", responses=TOTAL_RESPONSES)
def list_proposals(
    session: SessionDep,
    _: Reader,
    response: Response,
    paging: PagingDep,
    source: Annotated[
        str | None,
        Query(
            max_length=317,
            pattern=SOURCE_PATTERN,
            description="namespace/name of a GitSource: its proposals only.",
        ),
    ] = None,
    state: Annotated[
        list[ProposalState] | None,
        Query(description="Only proposals in these states (repeat it for several)."),
    ] = None,
) -> list[ProposalView]:
    """Proposals, newest first."""
    key = None
    if source is not None:
        namespace, name = source.split("/", 1)
        try:
            key = SourceKey(namespace=namespace, name=name)
        except ValidationError:
            raise Invalid(f"source: {source[:80]!r} is no NAMESPACE/NAME of a GitSource") from None
    found = proposals.listed(session, key, state or ())
    return [proposal_view(session, proposal) for proposal in paging.apply(found, response)]


@router.get("/v1/proposals/{proposal_id}", responses=REFUSALS)
def get_proposal(proposal_id: ProposalId, session: SessionDep, _: Reader) -> ProposalDetail:
    """A proposal's card, with its files whole and, in Conflict, the three texts of each
    conflicting file (base, theirs at the branch tip, ours)."""
    return proposal_detail(session, proposals.get(session, proposal_id))


@router.post("/v1/proposals/{proposal_id}/merge", status_code=202, responses=REFUSALS)
def merge(
    proposal_id: ProposalId, request: Request, session: SessionDep, token: Proposer
) -> ProposalView:
    """Dev merge: the operator merges the pushed branch into the tracked branch. Only
    where the GitSource allows it (spec.proposals.devMerge: local repositories, the local
    fleet); elsewhere the pull request is merged on the forge, as review requires."""
    proposal = proposals.request_merge(session, proposal_id, token.name, utcnow())
    session.commit()
    _wake_operators(request)
    return proposal_view(session, proposal)


@router.put("/v1/proposals/{proposal_id}/status", responses=REFUSALS)
def report(
    proposal_id: ProposalId, body: ProposalReport, session: SessionDep, _: Admin
) -> ProposalView:
    """For operators: what became of a proposal (pushed, conflict, failed, merged,
    applied or rejected). A stage out of order is refused (409)."""
    proposal = proposals.record_report(session, proposal_id, body, utcnow())
    session.commit()
    return proposal_view(session, proposal)


@router.get("/v1/operator/proposals")
async def operator_work(
    request: Request,
    settings: SettingsDep,
    _: Admin,
    after: Annotated[
        int | None,
        Query(
            ge=0, le=2**31 - 1, description="The cursor last returned; absent: all pending work."
        ),
    ] = None,
    wait: Annotated[float, Query(ge=0, le=3600, description="Seconds to wait for work.")] = 0,
) -> ProposalWorkList:
    """For operators: proposals to push and merges to make, queued since ``after``
    (long-poll). Without ``after`` every pending item comes at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, settings.long_poll_max_seconds)
    while True:
        cursor, work = await run_in_threadpool(_work_after, after)
        if work or after is None:
            return ProposalWorkList(cursor=cursor, work=tuple(work))
        remaining = deadline - loop.time()
        if remaining <= 0:
            return ProposalWorkList(cursor=cursor, work=())
        after = cursor
        await request.app.state.waiters.wait(proposals.WAKE_KEY, min(remaining, RECHECK_SECONDS))


def _work_after(after: int | None) -> tuple[int, list[ProposalWork]]:
    with Session(get_engine()) as session:
        return proposals.work_after(session, after)
