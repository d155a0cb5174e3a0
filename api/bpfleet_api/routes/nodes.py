"""Nodes: what each runs and reports; the labels, pod CIDRs and workloads an admin (the
operator, from Kubernetes) sets for it; deleting one, and the tombstones that keep a
deleted name from registering again until an admin allows it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from sqlmodel import col, select

from bpfleet_api import changes, dashboard, fleet, heartbeats, policies
from bpfleet_api.deps import Admin, Reader, SessionDep, SettingsDep
from bpfleet_api.models import Node, NodeProgramStatus, utcnow
from bpfleet_api.routes._changes import revoked, wake
from bpfleet_api.routes._paging import TOTAL_HEADER, TOTAL_RESPONSES, PagingDep
from bpfleet_api.settings import ApiSettings
from bpfleet_api.views import (
    LabelsUpdate,
    NodeDetail,
    NodeProgramView,
    NodeView,
    ProgramFit,
    TombstoneView,
)
from bpfleet_core.protocol import NodeName, PodCidrs, ProgramReport, WorkloadSet
from bpfleet_core.resources import LabelSelector, SelectorSyntaxError, parse_selector

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])
tombstones = APIRouter(prefix="/v1/node-tombstones", tags=["nodes"])


def node_view(node: Node, settings: ApiSettings) -> NodeView:
    liveness = heartbeats.current(settings)
    readiness = fleet.readiness(node, utcnow(), liveness.ready_seconds, liveness.unknown_seconds)
    return NodeView(
        name=node.name,
        labels=node.labels,
        agent_labels=node.agent_labels,
        admin_labels=node.admin_labels,
        pod_cidrs=node.pod_cidrs,
        kernel_release=node.kernel_release,
        readiness=readiness,
        last_heartbeat=node.last_heartbeat,
        desired_revision=node.desired_revision,
        applied_revision=node.applied_revision,
    )


def thresholds(settings: ApiSettings) -> dashboard.Thresholds:
    liveness = heartbeats.current(settings)
    return dashboard.Thresholds(liveness.ready_seconds, liveness.unknown_seconds)


def selector_from(text: str | None) -> LabelSelector | None:
    if not text:
        return None
    try:
        return parse_selector(text)
    except SelectorSyntaxError as error:
        raise changes.Invalid(str(error)) from None


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
    node = changes.get_node(session, name)
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
    node = changes.get_node(session, name)
    report = fleet.features_of(session, name)
    if report is None:
        raise changes.NotFound(f"node {name} has not reported its kernel's features")
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
    """Replace the labels an admin sets for a node (the operator keeps them in step with
    the Kubernetes Node). Selectors see them over the ones its agent declares, which a
    registration replaces without touching these."""
    node, changes = fleet.set_admin_labels(session, name, update.labels)
    session.commit()
    wake(request, changes)
    return node_view(node, settings)


@router.put("/{name}/pod-cidrs")
def set_pod_cidrs(
    name: NodeName,
    update: PodCidrs,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    _: Admin,
) -> NodeView:
    """Set the node's pod CIDRs (a Kubernetes Node's ``spec.podCIDRs``): its agent may
    declare endpoint IPs only inside them."""
    node, changes = policies.set_pod_cidrs(session, name, update.pod_cidrs)
    session.commit()
    wake(request, changes)
    return node_view(node, settings)


@router.put("/{name}/workloads", status_code=204)
def set_workloads(
    name: NodeName,
    update: WorkloadSet,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    _: Admin,
) -> Response:
    """Set what runs on the node (the operator sends the pods Kubernetes runs there).
    From then on these are the node's entries in the policy topology, labels and ports
    from here; its agent only supplies each one's interface (matched by namespace/name
    and IP), and endpoints it declares beyond these are ignored."""
    changes = policies.set_workloads(
        session, name, update.workloads, settings.max_endpoints_per_node
    )
    session.commit()
    wake(request, changes)
    return Response(status_code=204)


@router.delete("/{name}", status_code=204)
def delete_node(name: NodeName, request: Request, session: SessionDep, _: Admin) -> Response:
    """Forget a node and revoke its credentials (its kernel keeps what it runs). The
    name cannot register again until an admin lifts its tombstone."""
    changes = fleet.delete_node(session, name)
    session.commit()
    revoked(request, [name])
    wake(request, changes)
    return Response(status_code=204)


@tombstones.get("")
def list_tombstones(session: SessionDep, _: Reader) -> list[TombstoneView]:
    """Deleted nodes whose names may not register again."""
    return [TombstoneView.model_validate(row) for row in fleet.tombstones(session)]


@tombstones.delete("/{name}", status_code=204)
def lift_tombstone(name: NodeName, session: SessionDep, _: Admin) -> Response:
    """Let a deleted node's name register again (with the bootstrap token)."""
    fleet.lift_tombstone(session, name)
    session.commit()
    return Response(status_code=204)
