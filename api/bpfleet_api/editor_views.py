"""Request and response bodies of the policy editor's routes (``routes/editor.py``).

They mirror what ``bpfleet_core.netpol.drafting`` and its parts return, so the OpenAPI
document types every field the editor renders. Lines and columns are 1-based; a column
counts characters.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from bpfleet_api.views import View
from bpfleet_core.netpol import models
from bpfleet_core.protocol import NamespaceName

MAX_TEXT = 1_000_000  # characters of YAML in one request
MAX_MATRIX = 500  # endpoints in one matrix
MAX_TOPOLOGY = 1000  # endpoints in a topology given with a request
Protocol = Literal["TCP", "UDP", "SCTP"]
Verdict = Literal["allow", "deny"]
Path = list[str | int]

TEXT = Field(
    max_length=MAX_TEXT,
    description="One or more NetworkPolicy documents (YAML), as the editor holds them.",
    examples=[
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: db, namespace: shop}\nspec:\n"
        "  podSelector: {matchLabels: {app: db}}\n"
        "  ingress:\n  - from: [{podSelector: {matchLabels: {app: web}}}]\n"
    ],
)


TOPOLOGY = Field(
    default=None,
    description="A topology to judge the draft on instead of the fleet's (the tutorial's "
    "demo, say): no stored policy takes part then.",
)


def _bounded(topology: models.Topology | None) -> models.Topology | None:
    if topology is not None and len(topology.pods) > MAX_TOPOLOGY:
        raise ValueError(f"at most {MAX_TOPOLOGY} endpoints in a given topology")
    return topology


# --- requests ------------------------------------------------------------------------------


class DraftRequest(View):
    text: str = TEXT


class SimulateRequest(View):
    text: str = TEXT
    protocol: Protocol = "TCP"
    port: int = Field(default=80, ge=1, le=65535, description="The matrix's destination port.")
    this_policy_only: bool = Field(
        default=False,
        description="Compare the draft's policies alone with their stored versions alone.",
    )
    endpoints: Literal["relevant", "all"] = Field(
        default="relevant",
        description="relevant: the endpoints the draft selects, then the other side of "
        "changed cells, then its peers; all: every endpoint (up to limit).",
    )
    limit: int = Field(default=100, ge=1, le=MAX_MATRIX, description="Endpoints in the matrix.")
    flows: str | None = Field(
        default=None,
        max_length=MAX_TEXT,
        description="A flow-test file (<policy>.flows.yaml) to run with the draft in force.",
    )
    topology: models.Topology | None = TOPOLOGY

    _topology_bounded = field_validator("topology")(_bounded)


class ExplainRequest(View):
    text: str = Field(default="", max_length=MAX_TEXT, description="The draft; empty: none.")
    client: str = Field(max_length=320, description="'namespace/name' or an IP address.")
    server: str = Field(max_length=320, description="'namespace/name' or an IP address.")
    protocol: Protocol = "TCP"
    port: int = Field(ge=1, le=65535)
    this_policy_only: bool = False
    topology: models.Topology | None = TOPOLOGY

    _topology_bounded = field_validator("topology")(_bounded)


class SelectionRequest(View):
    namespace: NamespaceName
    pod_selector: dict[str, Any] = Field(
        default_factory=dict, description="A label selector, as in spec.podSelector."
    )
    node_selector: dict[str, Any] | None = Field(
        default=None, description="A label selector over node labels, as in spec.nodeSelector."
    )
    limit: int = Field(default=100, ge=1, le=1000, description="Endpoints listed, at most.")


# --- text and documents ------------------------------------------------------------------


class TextProblemView(View):
    severity: Literal["error", "warning"]
    message: str
    text: str = Field(description="'<field path>: <message>', in the validator's words.")
    path: Path
    path_text: str
    line: int
    column: int
    end_line: int
    end_column: int
    document: int | None = Field(description="0-based document of the text.")


class DocumentView(View):
    document: int
    line: int
    valid: bool
    namespace: str | None
    name: str | None


class ValidationView(View):
    valid: bool = Field(description="No error (warnings allowed).")
    documents: list[DocumentView]
    problems: list[TextProblemView]


# --- endpoints -------------------------------------------------------------------------------


class ContainerPortView(View):
    name: str | None = None
    port: int
    protocol: Protocol


class EndpointView(View):
    namespace: str
    name: str
    labels: dict[str, str]
    ip: str
    node: str | None
    ports: list[ContainerPortView] = Field(description="Container ports, for named ports.")


class SelectionView(View):
    policy: str
    document: int
    count: int
    endpoints: list[EndpointView] = Field(description="The first 50.")


class MatchView(View):
    count: int
    endpoints: list[EndpointView]


class TopologyPageView(View):
    endpoints: list[EndpointView]
    namespaces: dict[str, dict[str, str]] = Field(description="Every namespace, with labels.")
    nodes: dict[str, dict[str, str]] = Field(description="Nodes hosting endpoints, with labels.")
    total: int = Field(description="Endpoints in the fleet.")
    continue_: str | None = Field(
        alias="continue", description="Pass as ?continue= for the next page; null: the last."
    )


class NamedPortView(View):
    name: str
    protocol: Protocol
    ports: list[int]
    endpoints: int


class VocabularyView(View):
    endpoint_labels: dict[str, list[str]]
    namespace_labels: dict[str, list[str]]
    namespaces: list[str]
    named_ports: list[NamedPortView]


# --- verdicts ----------------------------------------------------------------------------------


class DirectionVerdictView(View):
    direction: Literal["ingress", "egress"]
    endpoint: str
    allowed: bool
    policed: bool
    isolating: list[str]
    allowed_by: list[str] = Field(description="Rules as '<namespace>/<name> ingress rule N'.")
    reason: str


class ExplanationView(View):
    client: str
    server: str
    protocol: Protocol
    port: int
    allowed: bool
    loopback: bool
    egress: DirectionVerdictView
    ingress: DirectionVerdictView
    audit_allowed: bool
    audit_egress: DirectionVerdictView
    audit_ingress: DirectionVerdictView


class LocatedView(View):
    policy: str
    origin: Literal["draft", "stored"] = Field(
        description="draft: lines of the request's text; stored: lines of the policy's "
        "canonical YAML (GET /v1/policies/{namespace}/{name}/yaml)."
    )
    document: int | None
    path: Path
    path_text: str
    line: int | None
    end_line: int | None
    ref: str | None = None
    direction: Literal["ingress", "egress"] | None = None
    index: int | None = None


class CellExplanationView(ExplanationView):
    summary: str
    reasons: list[str]
    isolating_policies: list[LocatedView]
    allowing_rules: list[LocatedView]


# --- the simulation ----------------------------------------------------------------------------


class MatrixView(View):
    protocol: Protocol
    port: int
    endpoints: list[str] = Field(description="Rows and columns, in this order.")
    before: list[str] = Field(description="Per row: '.' allowed, 'X' denied, '-' itself.")
    after: list[str]
    relevant: int
    fleet: int
    truncated: bool


class CellView(View):
    client: str
    server: str
    change: Literal["allowed", "denied"]


class DiffView(View):
    protocol: Protocol
    port: int
    allowed: int = Field(description="Cells newly allowed, over the whole fleet.")
    denied: int = Field(description="Cells newly denied, over the whole fleet.")
    summary: str
    cells: list[CellView]
    complete: bool = Field(description="Every changed cell is listed.")


class EditView(View):
    op: Literal["add", "replace", "remove"]
    path: Path
    path_text: str
    value: Any = None


class FixView(View):
    title: str
    edits: list[EditView]


class WitnessView(View):
    name: str
    labels: dict[str, str]
    ip: str
    namespace_labels: dict[str, str]
    node_labels: dict[str, str] | None = None
    ports: list[dict[str, Any]] = Field(default_factory=list)


class ProofView(View):
    client: str
    server: str
    protocol: Protocol
    port: int
    judged_with: Literal["policy", "fleet"]
    verdict: Verdict
    verdict_once_fixed: Verdict | None
    explanation: ExplanationView
    witnesses: list[WitnessView] = Field(
        description="Endpoints made up for the proof because the fleet has none like them."
    )


class LintView(View):
    code: str
    severity: Literal["error", "warning", "info"]
    policy: str
    document: int | None
    path: Path
    path_text: str
    line: int | None
    column: int | None
    end_line: int | None
    end_column: int | None
    message: str
    fixes: list[FixView]
    proof: ProofView


class PeerView(View):
    path: Path
    path_text: str
    line: int | None
    column: int | None
    reach: str
    description: str
    endpoints: int
    ports: str
    grade: str


class DirectionRatingView(View):
    direction: Literal["ingress", "egress"]
    isolated: bool
    default_deny: bool
    grade: str | None
    widest: PeerView | None
    selected: int
    pairs_allowed: int
    pairs_total: int
    outside: bool
    summary: str


class RatingView(View):
    policy: str
    grade: str | None
    ingress: DirectionRatingView
    egress: DirectionRatingView


class FlowResultView(View):
    text: str
    line: int
    column: int
    client: str
    server: str
    protocol: Protocol
    port: int | str
    expect: Verdict
    verdict: Verdict | None
    passed: bool
    error: str | None
    explanation: ExplanationView | None
    reason: list[str] | None = None


class FlowProblemView(View):
    message: str
    line: int
    column: int


class FlowsView(View):
    passed: int
    failed: int
    results: list[FlowResultView]
    problems: list[FlowProblemView]


class DiagramPeerView(View):
    description: str
    path: Path
    path_text: str
    line: int | None


class DiagramRuleView(View):
    direction: Literal["ingress", "egress"]
    index: int
    path: Path
    path_text: str
    line: int | None
    end_line: int | None
    peers: list[DiagramPeerView] = Field(description="Empty: every peer (no from/to).")
    ports: str
    boxes: list[Literal["namespace", "other-namespaces", "outside", "dns"]]


class DiagramBoxView(View):
    direction: Literal["ingress", "egress"]
    kind: Literal["namespace", "other-namespaces", "outside", "dns"]
    title: str
    state: Literal["unrestricted", "allowed", "denied"]
    rules: list[int] = Field(description="The rules of this direction admitting it.")
    summary: str
    actions: list[FixView] = Field(description="Edits that would allow it.")


class ModeChangeView(View):
    mode: Literal["enforce", "audit"]
    fix: FixView


class DiagramView(View):
    policy: str
    document: int | None
    namespace: str
    mode: Literal["enforce", "audit"]
    ingress_isolated: bool
    egress_isolated: bool
    boxes: list[DiagramBoxView]
    rules: list[DiagramRuleView]
    mode_changes: list[ModeChangeView]


class SimulationView(ValidationView):
    replaces: list[str] = Field(description="Stored policies the draft takes the place of.")
    selected: list[SelectionView]
    matrix: MatrixView | None
    diff: DiffView | None
    ports: list[DiffView] = Field(description="Counts on other common ports.")
    lints: list[LintView]
    ratings: list[RatingView]
    diagrams: list[DiagramView]
    flows: FlowsView


# --- starting points -------------------------------------------------------------------------


class TemplateView(View):
    id: str
    title: str
    description: str
    text: str


class LessonView(View):
    id: str
    title: str
    goal: str
    start: str = Field(description="The policy the lesson opens with.")
    flows: str = Field(description="Its flow tests: the lesson is done when they pass.")
    solution: str


class TutorialView(View):
    topology: models.Topology = Field(description="The demo topology every lesson runs on.")
    lessons: list[LessonView]
