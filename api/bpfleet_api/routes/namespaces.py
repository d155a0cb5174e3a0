"""Namespace labels, set by an admin (the operator copies Kubernetes Namespaces): the
only labels namespaceSelector peers are matched against."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from bpfleet_api import policies
from bpfleet_api.deps import Admin, Reader, SessionDep
from bpfleet_api.routes._changes import wake
from bpfleet_api.views import LabelsUpdate, NamespaceView
from bpfleet_core.protocol import NamespaceName

router = APIRouter(prefix="/v1/namespaces", tags=["namespaces"])


@router.get("")
def list_namespaces(session: SessionDep, _: Reader) -> list[NamespaceView]:
    return [NamespaceView.model_validate(row) for row in policies.namespaces(session)]


@router.put("/{name}")
def put_namespace(
    name: NamespaceName, update: LabelsUpdate, request: Request, session: SessionDep, _: Admin
) -> NamespaceView:
    """Set a namespace's labels; ``kubernetes.io/metadata.name`` is added, always the
    namespace's name. Nodes whose policies resolve peers by namespace get the change."""
    row, changes = policies.put_namespace(session, name, update.labels)
    session.commit()
    wake(request, changes)
    return NamespaceView.model_validate(row)


@router.delete("/{name}", status_code=204)
def delete_namespace(
    name: NamespaceName, request: Request, session: SessionDep, _: Admin
) -> Response:
    """Forget a namespace's labels (its pods' namespace then carries only its name)."""
    changes = policies.delete_namespace(session, name)
    session.commit()
    wake(request, changes)
    return Response(status_code=204)
