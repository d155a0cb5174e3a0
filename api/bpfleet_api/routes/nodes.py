from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from sqlmodel import col, select

from bpfleet_api import dashboard, fleet, policies, security
from bpfleet_api.deps import Admin, Reader, SessionDep, SettingsDep
from bpfleet_api.models import Assignment, Node, NodeProgramStatus, utcnow
from bpfleet_api.routes import agent
from bpfleet_api.routes._changes import wake
from bpfleet_api.routes._paging import TOTAL_HEADER, TOTAL_RESPONSES, PagingDep
from bpfleet_api.settings import ApiSettings
from bpfleet_api.views import (
    LabelsUpdate,
    NodeDetail,
    NodeProgramView,
    NodeView,
    ProgramFit,
)
from bpfleet_core.protocol import NodeName, ProgramReport
from bpfleet_core.resources import LabelSelector, SelectorSyntaxError, parse_selector

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])


def node_view(node: Node, settings: ApiSettings) -> NodeView:
    readiness = fleet.readiness(
        node, utcnow(), settings.node_ready_seconds, settings.node_unknown_seconds
    )
    return NodeView(
        name=node.name,
        labels=node.labels,
        kernel_release=node.kernel_release,
        readiness=readiness,
        last_heartbeat=node.last_heartbeat,
        desired_revision=node.desired_revision,
        applied_revision=node.applied_revision,
    )


def thresholds(settings: ApiSettings) -> dashboard.Thresholds:
    return dashboard.Thresholds(settings.node_ready_seconds, settings.node_unknown_seconds)


def selector_from(text: str | None) -> LabelSelector | None:
    if not text:
        return None
    try:
        return parse_selector(text)
    except SelectorSyntaxError as error:
        raise fleet.Invalid(str(error)) from None


SelectorQuery = Annotated[
    str | None,
    Query(
        max_length=1000,
        description="A label selector as kubectl takes it: tier=edge,zone in (a,b),!canary.",
    ),
]
NodeSort = Literal[
    "name",
    "-name",
    "kernelRelease",
    "-kernelRelease",
    "lastHeartbeat",
    "-lastHeartbeat",
    "readiness",
    "-readiness",
    "appliedRevision",
    "-appliedRevision",
]


@router.get("", responses=TOTAL_RESPONSES)
def list_nodes(
    *,
    session: SessionDep,
    settings: SettingsDep,
    _: Reader,
    response: Response,
    page: PagingDep,
    selector: SelectorQuery = None,
    readiness: Literal["Ready", "NotReady", "Unknown"] | None = None,
    sort: NodeSort = "name",
) -> list[NodeView]:
    """Nodes matching the filters, sorted (``-`` in front: descending), one page at a
    time with ``limit``; ``X-Total-Count`` says how many match in all."""
    query = dashboard.NodeQuery(selector_from(selector), readiness, sort, page.limit, page.offset)
    nodes, total = dashboard.node_page(session, query, thresholds(settings), utcnow())
    response.headers[TOTAL_HEADER] = str(total)
    return [node_view(node, settings) for node in nodes]


def program_on_node(status: NodeProgramStatus) -> NodeProgramView:
    """A node's state for a program, with what the agent reported beside it."""
    view = NodeProgramView.model_validate(status)
    if not status.report:
        return view
    report = ProgramReport.model_validate(status.report)
    return view.model_copy(
        update={"verifier_log": report.verifier_log, "hooks": report.links, "stats": report.stats}
    )


@router.get("/{name}")
def get_node(name: NodeName, session: SessionDep, settings: SettingsDep, _: Reader) -> NodeDetail:
    node = fleet.get_node(session, name)
    statuses = session.exec(
        select(NodeProgramStatus)
        .where(NodeProgramStatus.node == name)
        .order_by(col(NodeProgramStatus.program))
    ).all()
    return NodeDetail.model_validate(
        {
            **node_view(node, settings).model_dump(),
            "features": fleet.features_of(session, name),
            "programs": [program_on_node(status) for status in statuses],
            "endpoints": policies.endpoints_of(session, name),
            "policy": policies.status_of(session, name),
        }
    )


@router.get("/{name}/preflight")
def node_preflight(name: NodeName, session: SessionDep, _: Reader) -> list[ProgramFit]:
    """For every program of the fleet: could this node's kernel run it, and if not,
    each feature it lacks by name (from its last feature report)."""
    node = fleet.get_node(session, name)
    report = fleet.features_of(session, name)
    if report is None:
        raise fleet.NotFound(f"node {name} has not reported its kernel's features")
    return [
        ProgramFit(
            program=fit.program,
            artifact=fit.artifact,
            selected=fit.selected,
            compatible=not fit.missing,
            missing=fit.missing,
        )
        for fit in dashboard.fits(session, node, report)
    ]


@router.put("/{name}/labels")
def set_labels(
    name: NodeName,
    update: LabelsUpdate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    _: Admin,
) -> NodeView:
    """Replace a node's labels (the operator keeps them in step with Kubernetes Nodes)."""
    policies.lock(session)  # node selectors of policies see labels too
    node = fleet.get_node(session, name)
    node.labels = dict(update.labels)
    session.add(node)
    session.flush()
    changes = fleet.sync_node(session, node).merge(policies.sync(session))
    session.commit()
    wake(request, changes)
    return node_view(node, settings)


@router.delete("/{name}", status_code=204)
def delete_node(name: NodeName, request: Request, session: SessionDep, _: Admin) -> Response:
    """Forget a node and revoke its credential (its kernel keeps what it runs). Its
    endpoints leave the fleet topology, which other nodes' policies may resolve."""
    policies.lock(session)
    node = fleet.get_node(session, name)
    for table in (Assignment, NodeProgramStatus):
        for row in session.exec(select(table).where(table.node == name)).all():
            session.delete(row)
    policies.forget_node(session, name)
    security.revoke_node_tokens(session, name)
    session.delete(node)
    session.flush()
    changes = policies.sync(session)
    session.commit()
    # After the commit: a lookup racing the transaction could cache the token again.
    agent.forget_node(name)
    wake(request, changes)
    return Response(status_code=204)
