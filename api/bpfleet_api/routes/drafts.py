"""Policy drafts shared by link: the editor stores what it holds, anyone who may read the
fleet reopens it by id. Drafts are no desired state and no proposal: nothing reads them
but the editor."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from bpfleet_api import proposals
from bpfleet_api.deps import Proposer, Reader, SessionDep, SettingsDep
from bpfleet_api.models import Draft
from bpfleet_api.views import SharedDraft, SharedDraftView

router = APIRouter(prefix="/v1/drafts", tags=["policy editor"])
DraftId = Annotated[
    str, Path(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="From POST.")
]


def draft_view(draft: Draft) -> SharedDraftView:
    return SharedDraftView(
        **SharedDraft.model_validate(draft.document).model_dump(),
        id=draft.id,
        author=draft.author,
        created_at=draft.created_at,
    )


@router.post("", status_code=201)
def share(
    body: SharedDraft, session: SessionDep, settings: SettingsDep, token: Proposer
) -> SharedDraftView:
    """Keep a draft to share by link (its id). Each token name keeps its newest
    ``BPFLEET_API_DRAFTS_KEPT_PER_AUTHOR`` drafts; text and flows are bounded."""
    draft = proposals.save_draft(
        session,
        token.name,
        body.model_dump(mode="json", by_alias=True),
        settings.drafts_kept_per_author,
    )
    session.commit()
    return draft_view(draft)


@router.get("/{draft_id}", responses={404: {"description": "No such draft (or dropped)."}})
def reopen(draft_id: DraftId, session: SessionDep, _: Reader) -> SharedDraftView:
    """A shared draft, as it was when shared."""
    return draft_view(proposals.get_draft(session, draft_id))
