"""The agent protocol (see ``bpfleet_core.protocol``). Agent calls authenticate with a
short-lived session of their own, so a 30 s long-poll never holds a database connection."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from bpfleet_api import fleet, policies, security
from bpfleet_api.db import get_engine
from bpfleet_api.deps import Registrar, SessionDep, SettingsDep
from bpfleet_api.models import Role, utcnow
from bpfleet_api.routes._changes import wake
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
# Agent calls are most of the API's traffic; their tokens are looked up once a minute.
_node_tokens = security.TokenCache(ttl_seconds=60.0)
_bearer = HTTPBearer(auto_error=False)
# A long-poll re-reads the database this often even without a wake-up; wake-ups come
# in-process or through Redis, so this only bounds the delay when both are lost.
RECHECK_SECONDS = 30.0


def _lookup_node(secret: str) -> str:
    with Session(get_engine()) as session:
        token = security.lookup(session, secret)
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
    _node_tokens.put(secret, token.node)
    return token.node


def forget_node(node: str) -> None:
    """Drop a node's cached credentials (after a revocation in this process)."""
    _node_tokens.evict(node)


async def node_of_caller(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's node; on the event loop, reaching the database only on a cache miss."""
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    cached = _node_tokens.get(credentials.credentials)
    if cached is not None:
        return cached
    return await run_in_threadpool(_lookup_node, credentials.credentials)


CallerNode = Annotated[str, Depends(node_of_caller)]


@router.post("/register")
def register(
    registration: Registration, request: Request, session: SessionDep, _: Registrar
) -> RegistrationResult:
    """Register (or re-register) a node; returns its credential, replacing any older one."""
    # A node that declared endpoints may come back with other labels, which node
    # selectors see: redistribute then (locking first, before the node row changes).
    hosting = policies.hosts_endpoints(session, registration.node)
    if hosting:
        policies.lock(session)
    security.revoke_node_tokens(session, registration.node)
    changes = fleet.register_node(
        session, registration.node, registration.labels, registration.features
    )
    if hosting:
        changes.merge(policies.sync(session))
    secret = security.mint(session, f"node:{registration.node}", Role.AGENT, node=registration.node)
    session.commit()
    # After the commit: a lookup racing the transaction could cache an old token again.
    forget_node(registration.node)
    wake(request, changes)
    return RegistrationResult(node=registration.node, token=secret)


def _assignments_after(node_name: str, after: int) -> Assignments | None:
    with Session(get_engine()) as session:
        node = fleet.get_node(session, node_name)
        if node.desired_revision <= after:
            return None
        found = fleet.assignments_of(session, node)
        return found.model_copy(update={"policy": policies.part_of(session, node_name)})


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
def report_status(report: NodeReport, node: CallerNode, session: SessionDep) -> Response:
    _check_own(node, report.node)
    fleet.record_report(session, fleet.get_node(session, node), report)
    policies.record_report(session, node, report.policy)
    session.commit()
    return Response(status_code=204)


@router.put("/endpoints", status_code=204)
def put_endpoints(
    declared: EndpointSet, request: Request, node: CallerNode, session: SessionDep
) -> Response:
    """This node's endpoints (its workloads) and their namespaces' labels, replacing what
    it declared before; 409 when another node holds one of them or its IP."""
    fleet.get_node(session, node)
    changes = policies.put_endpoints(session, node, declared)
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
    row = fleet.get_node(session, node)
    row.kernel_release = report.kernel_release
    session.add(row)
    fleet.store_features(session, node, report)
    session.commit()
    return Response(status_code=204)
