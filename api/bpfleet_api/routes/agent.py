"""The agent protocol (see ``bpfleet_core.protocol``). Agent calls authenticate with a
short-lived session of their own, so a long-poll never holds a database connection; the
hot calls (assignments, heartbeats, status) are served from each process's memory and
written in batches."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from bpfleet_api import fleet, heartbeats, policies
from bpfleet_api.deps import CallerNode, Registrar, SessionDep, SettingsDep
from bpfleet_api.documents import AgentPlane, long_poll
from bpfleet_api.models import utcnow
from bpfleet_api.routes._changes import revoked, wake
from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import (
    MAX_REVISION,
    EndpointSet,
    Heartbeat,
    NodeReport,
    Registration,
    RegistrationResult,
)

router = APIRouter(prefix="/v1/agent", tags=["agent"])


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
    newer, or older after the API's database was restored from a backup. Served from
    this process's cache: a long-poll with nothing new costs no query."""
    plane: AgentPlane = request.app.state.plane
    waited = min(wait, settings.long_poll_max_seconds)
    document = await long_poll(plane, request.app.state.waiters, node, after, waited)
    if document is None:
        return Response(status_code=204)
    return Response(
        document,
        media_type="application/json",
        headers={"ETag": f'"{node}@{plane.revision_of(node)}"'},
    )


def _check_own(node: str, reported: str) -> None:
    if reported != node:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"this credential belongs to node {node}, not {reported}"
        )


@router.post(
    "/status",
    status_code=204,
    responses={503: {"description": "The report could not be stored; send it again."}},
)
async def report_status(report: NodeReport, request: Request, node: CallerNode) -> Response:
    """Store what the node runs. Reports are written in batches (``ingest``); the answer
    comes once this one is committed."""
    _check_own(node, report.node)
    await request.app.state.reports.submit(report)
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


@router.post(
    "/heartbeat",
    status_code=204,
    responses={
        204: {
            "description": "Seen. The interval to the next heartbeat, in seconds, is in the "
            f"{heartbeats.INTERVAL_HEADER} header."
        }
    },
)
async def heartbeat(
    beat: Heartbeat, request: Request, node: CallerNode, settings: SettingsDep
) -> Response:
    """Cheap by design: buffered and written in bulk (see ``heartbeats``). The answer
    says when to beat next: less often as the fleet grows."""
    request.app.state.heartbeats.record(node, beat.revision, utcnow())
    interval = heartbeats.current(settings).interval_seconds
    return Response(status_code=204, headers={heartbeats.INTERVAL_HEADER: f"{interval:g}"})


@router.put("/features", status_code=204)
def update_features(report: FeatureReport, node: CallerNode, session: SessionDep) -> Response:
    """A node's kernel changed: keep its new feature report for preflights."""
    _check_own(node, report.node)
    fleet.update_features(session, node, report)
    session.commit()
    return Response(status_code=204)
