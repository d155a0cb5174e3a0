"""Network policies: stored here, distributed to the nodes whose endpoints they select,
reported back per node (see ``bpfleet_api.policies``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request, Response
from sqlmodel import Session, col, select

from bpfleet_api import dashboard, policies
from bpfleet_api.deps import Admin, Reader, SessionDep, SettingsDep
from bpfleet_api.models import Policy, utcnow
from bpfleet_api.routes._changes import wake
from bpfleet_api.routes._paging import TOTAL_RESPONSES, PagingDep
from bpfleet_api.routes.nodes import thresholds
from bpfleet_api.routes.programs import origin_view
from bpfleet_api.views import (
    CountersView,
    NodePolicyView,
    PolicyCountersView,
    PolicySummaryView,
    PolicyView,
    RuleCountersView,
)
from bpfleet_core.protocol import NamespaceName, ObjectName

router = APIRouter(prefix="/v1/policies", tags=["policies"])

PolicyDocument = Annotated[
    dict[str, Any],
    Body(
        description=(
            "A NetworkPolicy: networking.k8s.io/v1, or bpfleet.io/v1alpha1 (adds "
            "spec.nodeSelector and spec.mode). metadata.namespace and metadata.name must "
            "match the path; missing ones are taken from it."
        ),
        examples=[
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"namespace": "shop", "name": "db"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "db"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
                },
            }
        ],
    ),
]


def counters_view(counts: policies.PolicyCounts) -> PolicyCountersView:
    return PolicyCountersView(
        rules=[
            RuleCountersView(direction=direction, index=index, flows=flows)
            for direction, index, flows in counts.rules
        ],
        denied=counts.denied,
        audit_denied=counts.audit_denied,
    )


def policy_views(session: Session, rows: list[Policy]) -> list[PolicyView]:
    summaries = policies.summaries(session, rows)
    counters = dashboard.policy_counters(session)
    counts = policies.policy_counts(session, rows)
    origins = dashboard.origins(session)
    views = []
    for row in rows:
        key = (row.namespace, row.name)
        summary = summaries[key]
        views.append(
            PolicyView(
                namespace=row.namespace,
                name=row.name,
                generation=row.generation,
                mode="audit" if row.mode == "audit" else "enforce",
                document=row.document,
                summary=PolicySummaryView.model_validate(summary),
                status=dashboard.policy_status(summary),
                counters=CountersView.model_validate(counters.get(key, dashboard.Counters())),
                policy_counters=counters_view(counts[key]),
                origin=origin_view(origins.get(("NetworkPolicy", row.namespace, row.name))),
            )
        )
    return views


@router.get("", responses=TOTAL_RESPONSES)
def list_policies(
    session: SessionDep,
    _: Reader,
    response: Response,
    page: PagingDep,
    namespace: Annotated[NamespaceName | None, Query(description="Only this namespace.")] = None,
    status: Annotated[
        Literal["Enforcing", "Pending", "Failed"] | None,
        Query(description="Only policies with this status."),
    ] = None,
) -> list[PolicyView]:
    query = select(Policy).order_by(col(Policy.namespace), col(Policy.name))
    if namespace is not None:
        query = query.where(Policy.namespace == namespace)
    views = policy_views(session, list(session.exec(query).all()))
    if status is not None:
        views = [view for view in views if view.status == status]
    return page.apply(views, response)


@router.get("/{namespace}/{name}")
def get_policy(
    namespace: NamespaceName, name: ObjectName, session: SessionDep, _: Reader
) -> PolicyView:
    return policy_views(session, [policies.get_policy(session, namespace, name)])[0]


@router.put("/{namespace}/{name}")
def put_policy(
    *,
    namespace: NamespaceName,
    name: ObjectName,
    document: PolicyDocument,
    request: Request,
    response: Response,
    session: SessionDep,
    _: Admin,
) -> PolicyView:
    """Store a policy; it reaches every node with an endpoint it selects, at once. The
    same document again is a no-op; a change bumps ``generation``. 422 names each field
    the validator refuses, in its words; its warnings come back as Warning headers."""
    row, warnings, changes = policies.put_policy(session, namespace, name, document)
    session.commit()
    wake(request, changes)
    for warning in warnings:
        text = warning.replace('"', "'").encode("latin-1", "replace").decode("latin-1")
        response.headers.append("Warning", f'299 - "{text}"')
    return policy_views(session, [row])[0]


@router.delete("/{namespace}/{name}", status_code=204)
def delete_policy(
    namespace: NamespaceName, name: ObjectName, request: Request, session: SessionDep, _: Admin
) -> Response:
    """Remove a policy from every node. ``/nodes`` lists each node until it reports the
    policy gone, then the list is empty."""
    changes = policies.delete_policy(session, namespace, name)
    session.commit()
    wake(request, changes)
    return Response(status_code=204)


@router.get("/{namespace}/{name}/nodes")
def policy_nodes(
    namespace: NamespaceName,
    name: ObjectName,
    session: SessionDep,
    settings: SettingsDep,
    _: Reader,
) -> list[NodePolicyView]:
    """Per node: the generation it enforces and its state. Nodes that must enforce the
    policy, and, after a delete or a selector change, nodes that still do."""
    rows = policies.node_rows(session, namespace, name)
    counters = dashboard.node_counters(session, (row.node for row in rows))
    readiness = dashboard.readiness_of(
        session, (row.node for row in rows), thresholds(settings), utcnow()
    )
    stored = session.get(Policy, (namespace, name))
    counts = policies.node_counts(session, stored) if stored is not None else {}
    return [
        NodePolicyView(
            node=row.node,
            generation=row.generation,
            state=row.state,
            message=row.message,
            updated_at=row.updated_at,
            counters=CountersView.model_validate(counters[row.node])
            if row.node in counters
            else None,
            readiness=readiness.get(row.node),
            policy_counters=counters_view(counts[row.node]) if row.node in counts else None,
        )
        for row in rows
    ]
