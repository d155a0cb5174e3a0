"""Kernels across the fleet: nodes x the features on which they differ, and two nodes
compared (each node's "which programs could not run here" is ``/v1/nodes/{name}/preflight``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from bpfleet_api import changes, dashboard
from bpfleet_api.deps import Reader, SessionDep, SettingsDep
from bpfleet_api.models import utcnow
from bpfleet_api.routes._paging import TOTAL_HEADER, TOTAL_RESPONSES
from bpfleet_api.routes.nodes import SelectorQuery, selector_from, thresholds
from bpfleet_api.views import (
    FeatureDiff,
    FeatureKeyView,
    KernelComparison,
    KernelMatrix,
    KernelRow,
)
from bpfleet_core.protocol import NodeName

router = APIRouter(prefix="/v1/kernels", tags=["dashboard"])
MAX_MATRIX_NODES = 100  # each row carries a whole feature report's worth of reading


@router.get("", responses=TOTAL_RESPONSES)
def kernel_matrix(
    *,
    session: SessionDep,
    settings: SettingsDep,
    _: Reader,
    response: Response,
    selector: SelectorQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_MATRIX_NODES)] = 25,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> KernelMatrix:
    """One page of nodes (by name) x the features on which their kernels differ."""
    now = utcnow()
    query = dashboard.NodeQuery(selector_from(selector), None, "name", limit, offset)
    nodes, total = dashboard.node_page(session, query, thresholds(settings), now)
    matrix = dashboard.kernel_matrix(session, nodes)
    response.headers[TOTAL_HEADER] = str(total)
    return KernelMatrix(
        features=[FeatureKeyView(group=group, name=name) for group, name in matrix.keys],
        nodes=[
            KernelRow(
                node=node.name,
                kernel_release=node.kernel_release,
                readiness=thresholds(settings).readiness(node.last_heartbeat, now),
                reported=report is not None,
                values=values,
            )
            for node, report, values in matrix.rows
        ],
        same=matrix.same,
        total=total,
    )


@router.get("/compare")
def compare(a: NodeName, b: NodeName, session: SessionDep, _: Reader) -> KernelComparison:
    """What each of two nodes' kernels has that the other's lacks, by feature group."""
    reports = dashboard.reports_of(session, (a, b))
    for name in (a, b):
        changes.get_node(session, name)
        if name not in reports:
            raise changes.NotFound(f"node {name} has not reported its kernel's features")
    groups = dashboard.compare(reports[a], reports[b])
    return KernelComparison(
        a=a,
        b=b,
        kernel_release_a=reports[a].kernel_release,
        kernel_release_b=reports[b].kernel_release,
        groups=[
            FeatureDiff(group=g.group, only_a=g.only_a, only_b=g.only_b, same=g.same)
            for g in groups
        ],
    )
