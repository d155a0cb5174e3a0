"""The agent protocol (see ``bpfleet_core.protocol``). Agent calls authenticate with a
short-lived session of their own, so a 30 s long-poll never holds a database connection."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from bpfleet_api import fleet, policies
from bpfleet_api.changes import get_node
from bpfleet_api.db import get_engine
from bpfleet_api.deps import CallerNode, Registrar, SessionDep, SettingsDep
from bpfleet_api.models import utcnow
from bpfleet_api.routes._changes import revoked, wake
from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import (
    MAX_REVISION,
    Assignments,
    EndpointSet,
    Heartbeat,
    NodeReport,
    Registration,
    RegistrationResult,
)

router = APIRouter(prefix="/v1/agent", tags=["agent"])
# A long-poll re-reads the database this often even without a wake-up; wake-ups come
# in-process or through Redis, so this only bounds the delay when both are lost.
RECHECK_SECONDS = 30.0


@router.post(
    "/register",
    responses={
        403: {"description": "The name was deleted by an admin, or is another node's."},
        409: {"description": "The name is registered, and the caller cannot prove it is it."},
    },
)
def register(
    registration: Registration, request: Request, session: SessionDep, caller: Registrar
) -> RegistrationResult:
    """Register a node: a new name with the bootstrap token; a registered one again with
    its node key (or its own token), or by an admin. Returns a new credential (older ones
    are revoked) and the node key to keep."""
    result, changes = fleet.register_node(session, caller, registration)
    session.commit()
    # After the commit: a lookup racing the transaction could cache an old token again.
    revoked(request, [registration.node])
    wake(request, changes)
    return result


def _assignments_after(node: str, after: int) -> Assignments | None:
    with Session(get_engine()) as session:
        return fleet.assignments_after(session, node, after)


@router.get("/assignments", responses={204: {"description": "No newer revision within the wait."}})
async def assignments(
    request: Request,
    node: CallerNode,
    settings: SettingsDep,
    after: Annotated[
        int, Query(ge=0, le=MAX_REVISION, description="The last revision the agent applied.")
    ] = 0,
    wait: Annotated[float, Query(ge=0, description="Seconds to wait for a newer revision.")] = 0,
) -> Response:
    """This node's desired state once its revision differs from ``after`` (long-poll):
    newer, or older after the API's database was restored from a backup."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, settings.long_poll_max_seconds)
    while True:
        found = await run_in_threadpool(_assignments_after, node, after)
        if found is not None:
            # A node no policy applies to gets the document it always got.
            unused = {"policy"} if found.policy is None else None
            body = found.model_dump_json(by_alias=True, exclude=unused)
            return Response(body, media_type="application/json")
        remaining = deadline - loop.time()
        if remaining <= 0:
            return Response(status_code=204)
        await request.app.state.waiters.wait(node, min(remaining, RECHECK_SECONDS))


def _check_own(node: str, reported: str) -> None:
    if reported != node:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"this credential belongs to node {node}, not {reported}"
        )


@router.post("/status", status_code=204)
def report_status(
    report: NodeReport, node: CallerNode, session: SessionDep, settings: SettingsDep
) -> Response:
    _check_own(node, report.node)
    row = get_node(session, node)
    fleet.record_report(session, row, report, settings.events_kept_per_program)
    policies.record_report(session, node, report.policy)
    session.commit()
    return Response(status_code=204)


@router.put("/endpoints", status_code=204)
def put_endpoints(
    declared: EndpointSet,
    request: Request,
    node: CallerNode,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """This node's endpoints (its workloads), replacing what it declared before. Each
    IP must lie inside the node's pod CIDRs (422 names the ones outside); 409 when
    another node holds one of them or its IP. Namespace labels sent here are ignored:
    they come from ``/v1/namespaces``."""
    changes = policies.put_endpoints(session, node, declared, settings.max_endpoints_per_node)
    session.commit()
    wake(request, changes)
    return Response(status_code=204)


@router.post("/heartbeat", status_code=204)
async def heartbeat(beat: Heartbeat, request: Request, node: CallerNode) -> Response:
    """Cheap by design: buffered and written once a second (see ``heartbeats``)."""
    request.app.state.heartbeats.record(node, beat.revision, utcnow())
    return Response(status_code=204)


@router.put("/features", status_code=204)
def update_features(report: FeatureReport, node: CallerNode, session: SessionDep) -> Response:
    """A node's kernel changed: keep its new feature report for preflights."""
    _check_own(node, report.node)
    fleet.update_features(session, node, report)
    session.commit()
    return Response(status_code=204)
