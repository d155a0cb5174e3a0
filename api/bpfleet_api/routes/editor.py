"""The policy editor: validate and simulate drafts against the live fleet, explain a
cell, and the topology the editor draws from. Every route reads; none writes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from bpfleet_api import editor, gitsources
from bpfleet_api.deps import Reader, SessionDep
from bpfleet_api.editor_views import (
    CellExplanationView,
    DraftRequest,
    ExplainRequest,
    LessonView,
    MatchView,
    SelectionRequest,
    SimulateRequest,
    SimulationView,
    TemplateView,
    TopologyPageView,
    TutorialView,
    ValidationView,
    VocabularyView,
)
from bpfleet_api.routes.gitsources import file_view
from bpfleet_api.views import PolicySourceView
from bpfleet_core.netpol import drafting, lessons, templates
from bpfleet_core.protocol import NamespaceName, ObjectName

router = APIRouter(prefix="/v1", tags=["policy editor"])


@router.post("/policies/validate")
def validate_text(body: DraftRequest, _: Reader) -> ValidationView:
    """Problems of policy text with field path, line and column, in the validator's
    words (``spec.ingress[0].ports[0].port: Invalid value: 0: ...``). Half-typed text
    is fine: a YAML syntax error is a problem with its line and column."""
    draft = drafting.read(body.text)
    return ValidationView.model_validate(
        {
            "valid": draft.valid,
            "documents": [item.to_dict() for item in draft.documents],
            "problems": [item.to_dict() for item in draft.diagnostics],
        }
    )


@router.post("/policies/simulate")
def simulate(body: SimulateRequest, session: SessionDep, _: Reader) -> SimulationView:
    """The draft in the live fleet, each of its policies replacing the stored one of the
    same namespace and name: the endpoints it selects, the matrix before and after on
    one protocol and port, the semantic diff over every cell (and counts on common
    ports), lints with their proving flows, ratings, and flow tests if given."""
    options = drafting.Options(
        protocol=body.protocol,
        port=body.port,
        this_policy_only=body.this_policy_only,
        everyone=body.endpoints == "all",
        limit=body.limit,
    )
    result = editor.simulate(session, body.text, options, body.flows, body.topology)
    return SimulationView.model_validate(result.to_dict())


@router.post("/policies/explain", responses={422: {"description": "An unknown endpoint."}})
def explain(body: ExplainRequest, session: SessionDep, _: Reader) -> CellExplanationView:
    """Why one cell is allowed or denied: both sides' verdicts, the isolating policies
    and the allowing rules, located in the draft's text or the stored policy's YAML."""
    result = editor.explain(
        session,
        body.text,
        client=body.client,
        server=body.server,
        protocol=body.protocol,
        port=body.port,
        this_policy_only=body.this_policy_only,
        given=body.topology,
    )
    return CellExplanationView.model_validate(result.to_dict())


@router.get("/policies/templates")
def policy_templates(
    _: Reader,
    namespace: Annotated[NamespaceName, Query(description="The new policy's namespace.")],
    peer_namespace: Annotated[
        NamespaceName,
        Query(alias="peerNamespace", description="The namespace 'from-namespace' admits."),
    ] = templates.DEFAULT_PEER_NAMESPACE,
) -> list[TemplateView]:
    """Policies to start from (default-deny ingress, default-deny egress with DNS, same
    namespace only, from one namespace, the Internet but private ranges), written for
    ``namespace``."""
    return [
        TemplateView.model_validate(item.to_dict())
        for item in templates.render(namespace, peer_namespace)
    ]


@router.get("/policies/lessons")
def tutorial(_: Reader) -> TutorialView:
    """The tutorial: lessons on a demo topology. A lesson is done when its flow tests
    pass: simulate its policy with ``topology`` set to this one and its flows."""
    return TutorialView(
        topology=lessons.DEMO_TOPOLOGY,
        lessons=[LessonView.model_validate(item.to_dict()) for item in lessons.LESSONS],
    )


@router.get(
    "/policies/{namespace}/{name}/yaml",
    response_class=PlainTextResponse,
    responses={200: {"content": {"application/yaml": {}}}},
)
def policy_yaml(
    namespace: NamespaceName, name: ObjectName, session: SessionDep, _: Reader
) -> PlainTextResponse:
    """A stored policy as canonical YAML: the text lines of stored rules refer to."""
    text = drafting.render(editor.stored_policy(session, namespace, name))
    return PlainTextResponse(text, media_type="application/yaml")


@router.get("/policies/{namespace}/{name}/source")
def policy_source(
    namespace: NamespaceName, name: ObjectName, session: SessionDep, _: Reader
) -> PolicySourceView:
    """Where a policy in force is written in Git: its GitSource, the applied revision,
    the file and the line its document starts on, with the file's text (404 for a
    policy set through the API)."""
    found, line = gitsources.policy_file(session, namespace, name)
    return PolicySourceView(**file_view(found).model_dump(), line=line)


@router.get("/topology")
def topology(
    session: SessionDep,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=1000, description="Endpoints per page.")] = 200,
    continue_: Annotated[
        str | None,
        Query(alias="continue", max_length=512, description="The token of the previous page."),
    ] = None,
) -> TopologyPageView:
    """The fleet's endpoints (namespace, name, labels, IP, node) a page at a time, in
    namespace/name order, with the namespaces' and the nodes' labels."""
    page = editor.topology_page(session, limit, continue_)
    return TopologyPageView.model_validate(
        {
            "endpoints": page.endpoints,
            "namespaces": page.namespaces,
            "nodes": page.nodes,
            "total": page.total,
            "continue": page.next,
        }
    )


@router.post("/topology/match")
def match(body: SelectionRequest, session: SessionDep, _: Reader) -> MatchView:
    """The endpoints a policy in ``namespace`` with these selectors selects now."""
    count, endpoints = editor.matching(
        session, body.namespace, body.pod_selector, body.node_selector, body.limit
    )
    return MatchView.model_validate({"count": count, "endpoints": endpoints})


@router.get("/topology/labels")
def labels(session: SessionDep, _: Reader) -> VocabularyView:
    """Label keys and values of endpoints and namespaces, and named ports: what a peer
    picker offers."""
    return VocabularyView.model_validate(drafting.vocabulary(editor.topology(session)))
