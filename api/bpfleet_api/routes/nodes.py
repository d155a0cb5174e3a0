from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlmodel import col, select

from bpfleet_api import fleet, policies, security
from bpfleet_api.deps import Admin, Reader, SessionDep, SettingsDep
from bpfleet_api.models import Assignment, Node, NodeProgramStatus, utcnow
from bpfleet_api.routes import agent, programs
from bpfleet_api.routes._changes import wake
from bpfleet_api.settings import ApiSettings
from bpfleet_api.views import LabelsUpdate, NodeDetail, NodeView
from bpfleet_core.protocol import NodeName

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


@router.get("")
def list_nodes(session: SessionDep, settings: SettingsDep, _: Reader) -> list[NodeView]:
    return [
        node_view(node, settings)
        for node in session.exec(select(Node).order_by(col(Node.name))).all()
    ]


@router.get("/{name}")
def get_node(name: NodeName, session: SessionDep, settings: SettingsDep, _: Reader) -> NodeDetail:
    node = fleet.get_node(session, name)
    statuses = session.exec(select(NodeProgramStatus).where(NodeProgramStatus.node == name)).all()
    return NodeDetail.model_validate(
        {
            **node_view(node, settings).model_dump(),
            "features": fleet.features_of(session, name),
            "programs": [programs.node_program_view(status) for status in statuses],
            "endpoints": policies.endpoints_of(session, name),
            "policy": policies.status_of(session, name),
        }
    )


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
