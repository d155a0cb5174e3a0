"""The agent protocol (see ``bpfleet_core.protocol``). Agent calls authenticate with a
short-lived session of their own, so a 30 s long-poll never holds a database connection."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from bpfleet_api import fleet, security
from bpfleet_api.db import get_engine
from bpfleet_api.deps import Registrar, SessionDep, SettingsDep
from bpfleet_api.models import Role, utcnow
from bpfleet_api.routes._changes import wake
from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import (
    MAX_REVISION,
    Assignments,
    Heartbeat,
    NodeReport,
    Registration,
    RegistrationResult,
)

router = APIRouter(prefix="/v1/agent", tags=["agent"])
_bearer = HTTPBearer(auto_error=False)
RECHECK_SECONDS = 5.0  # a long-poll re-reads the database this often even without a wake-up


def _authenticate(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    with Session(get_engine()) as session:
        token = security.lookup(session, credentials.credentials)
    if token is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "unknown or revoked token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if token.role != Role.AGENT or token.node is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"role {token.role.value} may not do this; needs agent"
        )
    return token.node


def node_of_caller(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    return _authenticate(credentials)


CallerNode = Annotated[str, Depends(node_of_caller)]


@router.post("/register")
def register(
    registration: Registration, request: Request, session: SessionDep, _: Registrar
) -> RegistrationResult:
    """Register (or re-register) a node; returns its credential, replacing any older one."""
    security.revoke_node_tokens(session, registration.node)
    changes = fleet.register_node(
        session, registration.node, registration.labels, registration.features
    )
    secret = security.mint(session, f"node:{registration.node}", Role.AGENT, node=registration.node)
    session.commit()
    wake(request, changes)
    return RegistrationResult(node=registration.node, token=secret)


def _assignments_after(node_name: str, after: int) -> Assignments | None:
    with Session(get_engine()) as session:
        node = fleet.get_node(session, node_name)
        if node.desired_revision <= after:
            return None
        return fleet.assignments_of(session, node)


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
    """This node's desired state once it is newer than ``after`` (long-poll)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, settings.long_poll_max_seconds)
    while True:
        found = await run_in_threadpool(_assignments_after, node, after)
        if found is not None:
            return Response(found.model_dump_json(by_alias=True), media_type="application/json")
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
def report_status(report: NodeReport, node: CallerNode, session: SessionDep) -> Response:
    _check_own(node, report.node)
    fleet.record_report(session, fleet.get_node(session, node), report)
    session.commit()
    return Response(status_code=204)


@router.post("/heartbeat", status_code=204)
def heartbeat(beat: Heartbeat, node: CallerNode, session: SessionDep) -> Response:
    row = fleet.get_node(session, node)
    row.last_heartbeat = utcnow()
    row.applied_revision = max(row.applied_revision, beat.revision)
    session.add(row)
    session.commit()
    return Response(status_code=204)


@router.put("/features", status_code=204)
def update_features(report: FeatureReport, node: CallerNode, session: SessionDep) -> Response:
    """A node's kernel changed: keep its new feature report for preflights."""
    _check_own(node, report.node)
    row = fleet.get_node(session, node)
    row.features = report.model_dump(mode="json")
    row.kernel_release = report.kernel_release
    session.add(row)
    session.commit()
    return Response(status_code=204)
