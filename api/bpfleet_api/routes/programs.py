from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from sqlmodel import Session, col, select

from bpfleet_api import changes, dashboard, fleet, gitsources, rollouts
from bpfleet_api.deps import Admin, Reader, SessionDep, SettingsDep
from bpfleet_api.models import Event, NodeProgramStatus, Program, ProgramRevision, utcnow
from bpfleet_api.routes._changes import start_rollout, wake
from bpfleet_api.routes._paging import TOTAL_RESPONSES, PagingDep
from bpfleet_api.routes.nodes import program_on_node, thresholds
from bpfleet_api.views import (
    EventView,
    NodeProgramView,
    OriginView,
    ProgramView,
    RolloutProgressView,
    RolloutStepView,
    RolloutView,
    SummaryView,
)
from bpfleet_core.resources import BpfProgramSpec, ProgramName

router = APIRouter(prefix="/v1/programs", tags=["programs"])
Origins = dict[tuple[str, str | None, str], gitsources.Origin]


def origin_view(origin: gitsources.Origin | None) -> OriginView | None:
    if origin is None:
        return None
    return OriginView(
        namespace=origin.namespace,
        name=origin.name,
        revision=origin.revision,
        short_revision=gitsources.short_revision(origin.revision),
    )


def row_view(row: dashboard.ProgramRow, origins: Origins) -> ProgramView:
    program = row.program
    return ProgramView(
        name=program.name,
        generation=program.generation,
        killed=program.killed,
        spec=program.spec,
        summary=SummaryView.model_validate(row.summary),
        rollout=RolloutView.model_validate(row.rollout) if row.rollout else None,
        status=row.status,
        origin=origin_view(origins.get(("BpfProgram", None, program.name))),
    )


def program_view(session: Session, program: Program) -> ProgramView:
    return row_view(dashboard.program_rows(session, [program])[0], dashboard.origins(session))


@router.get("", responses=TOTAL_RESPONSES)
def list_programs(
    session: SessionDep,
    _: Reader,
    response: Response,
    page: PagingDep,
    status: Annotated[
        Literal["Ready", "Progressing", "Failed", "Killed"] | None,
        Query(description="Only programs with this status."),
    ] = None,
) -> list[ProgramView]:
    """Programs by name, with their status and where they came from."""
    rows = dashboard.program_rows(session, dashboard.all_programs(session))
    if status is not None:
        rows = [row for row in rows if row.status == status]
    origins = dashboard.origins(session)
    return [row_view(row, origins) for row in page.apply(rows, response)]


@router.get("/{name}")
def get_program(name: ProgramName, session: SessionDep, _: Reader) -> ProgramView:
    return program_view(session, fleet.get_program(session, name))


@router.put("/{name}")
def put_program(
    name: ProgramName, spec: BpfProgramSpec, session: SessionDep, _: Admin
) -> ProgramView:
    """Set a program's desired spec. A change starts a rollout; the same spec is a no-op."""
    program, rollout, changed = fleet.put_program(session, name, spec)
    session.commit()
    if changed and rollout is not None:
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


@router.get("/{name}/nodes", responses=TOTAL_RESPONSES)
def program_nodes(
    name: ProgramName,
    session: SessionDep,
    settings: SettingsDep,
    _: Reader,
    response: Response,
    page: PagingDep,
) -> list[NodeProgramView]:
    """Per-node detail: what each node reports for this program (a LoadFailed node's
    verifier excerpt, run counts and run time per entry point), and the node's
    readiness."""
    rows = session.exec(
        select(NodeProgramStatus)
        .where(NodeProgramStatus.program == name)
        .order_by(col(NodeProgramStatus.node))
    ).all()
    shown = page.apply(rows, response)
    readiness = dashboard.readiness_of(
        session, (row.node for row in shown), thresholds(settings), utcnow()
    )
    return [
        program_on_node(row).model_copy(update={"readiness": readiness.get(row.node)})
        for row in shown
    ]


@router.get("/{name}/progress", responses={404: {"description": "No rollout yet."}})
def program_progress(name: ProgramName, session: SessionDep, _: Reader) -> RolloutProgressView:
    """The latest rollout as steps: which is current, the bake left, the failure budget
    used (Incompatible nodes do not count against it)."""
    fleet.get_program(session, name)
    rollout = fleet.latest_rollout(session, name)
    if rollout is None:
        raise changes.NotFound(f"program {name} has had no rollout")
    revision = session.get(ProgramRevision, (name, rollout.to_generation))
    if revision is None:
        raise changes.NotFound(f"program {name} generation {rollout.to_generation} is gone")
    spec = BpfProgramSpec.model_validate(revision.spec)
    strategy = spec.rollout
    selected = fleet.selected_nodes(session, spec.node_selector)
    outcomes = fleet.outcomes_of(session, name, rollout.to_generation)
    progress = rollouts.describe(
        strategy, fleet.progress_of(rollout), len(selected), outcomes, utcnow()
    )
    return RolloutProgressView(
        rollout=RolloutView.model_validate(rollout),
        steps=[
            RolloutStepView(label=step.label, target=step.target, state=step.state)
            for step in progress.steps
        ],
        selected=len(selected),
        bake_seconds=strategy.bake_seconds,
        bake_remaining_seconds=progress.bake_remaining_seconds,
        failures=progress.failures,
        failure_budget=strategy.failure_budget,
        auto_rollback=strategy.auto_rollback,
    )


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
