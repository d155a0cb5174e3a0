from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from sqlmodel import col, select

from bpfleet_api import fleet
from bpfleet_api.changes import NotFound
from bpfleet_api.deps import Admin, Reader, SessionDep
from bpfleet_api.models import Rollout
from bpfleet_api.routes._changes import start_rollout, wake
from bpfleet_api.views import RolloutView

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"])
RolloutId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("")
def list_rollouts(session: SessionDep, _: Reader, program: str | None = None) -> list[RolloutView]:
    query = select(Rollout).order_by(col(Rollout.id).desc()).limit(200)
    if program:
        query = query.where(Rollout.program == program)
    return [RolloutView.model_validate(row) for row in session.exec(query).all()]


@router.get("/{rollout_id}")
def get_rollout(rollout_id: RolloutId, session: SessionDep, _: Reader) -> RolloutView:
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFound(f"rollout {rollout_id} does not exist")
    return RolloutView.model_validate(rollout)


@router.post("/{rollout_id}/{action}")
def act(
    rollout_id: RolloutId,
    action: Literal["pause", "resume", "abort"],
    request: Request,
    session: SessionDep,
    _: Admin,
) -> RolloutView:
    """Pause, resume, or abort (which returns updated nodes to the previous version)."""
    rollout, changes = fleet.set_rollout_phase(session, rollout_id, action)
    session.commit()
    wake(request, changes)
    if action == "resume":
        start_rollout(rollout.id)
    return RolloutView.model_validate(rollout)
