from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlmodel import Session, col, select

from bpfleet_api import fleet
from bpfleet_api.deps import Admin, Reader, SessionDep
from bpfleet_api.models import Event, NodeProgramStatus, Program
from bpfleet_api.routes._changes import start_rollout, wake
from bpfleet_api.views import EventView, NodeProgramView, ProgramView, RolloutView, SummaryView
from bpfleet_core.resources import BpfProgramSpec, ProgramName

router = APIRouter(prefix="/v1/programs", tags=["programs"])


def program_view(session: Session, program: Program) -> ProgramView:
    summary = fleet.summarize(session, program)
    rollout = fleet.latest_rollout(session, program.name)
    return ProgramView(
        name=program.name,
        generation=program.generation,
        killed=program.killed,
        spec=program.spec,
        summary=SummaryView.model_validate(summary),
        rollout=RolloutView.model_validate(rollout) if rollout else None,
    )


@router.get("")
def list_programs(session: SessionDep, _: Reader) -> list[ProgramView]:
    return [
        program_view(session, p)
        for p in session.exec(select(Program).order_by(col(Program.name))).all()
    ]


@router.get("/{name}")
def get_program(name: ProgramName, session: SessionDep, _: Reader) -> ProgramView:
    return program_view(session, fleet.get_program(session, name))


@router.put("/{name}")
def put_program(
    name: ProgramName, spec: BpfProgramSpec, session: SessionDep, _: Admin
) -> ProgramView:
    """Set a program's desired spec. A change starts a rollout; the same spec is a no-op."""
    program, rollout = fleet.put_program(session, name, spec)
    session.commit()
    if rollout is not None and rollout.next_check_at is not None:
        start_rollout(rollout.id)
    return program_view(session, program)


@router.delete("/{name}", status_code=204)
def delete_program(name: ProgramName, request: Request, session: SessionDep, _: Admin) -> Response:
    """Detach the program from every node and forget it."""
    changes = fleet.delete_program(session, name)
    session.commit()
    wake(request, changes)
    return Response(status_code=204)


@router.post("/{name}/kill")
def kill_program(name: ProgramName, request: Request, session: SessionDep, _: Admin) -> ProgramView:
    """Fleet-wide kill switch: detach everywhere at once. Putting a spec again revives it."""
    changes = fleet.kill_program(session, name)
    session.commit()
    wake(request, changes)
    return program_view(session, fleet.get_program(session, name))


@router.get("/{name}/nodes")
def program_nodes(name: ProgramName, session: SessionDep, _: Reader) -> list[NodeProgramView]:
    """Per-node detail: what each node reports for this program."""
    rows = session.exec(
        select(NodeProgramStatus)
        .where(NodeProgramStatus.program == name)
        .order_by(col(NodeProgramStatus.node))
    ).all()
    return [NodeProgramView.model_validate(row) for row in rows]


@router.get("/{name}/events")
def program_events(
    name: ProgramName,
    session: SessionDep,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EventView]:
    rows = session.exec(
        select(Event).where(Event.program == name).order_by(col(Event.id).desc()).limit(limit)
    ).all()
    return [EventView.model_validate(row) for row in rows]
