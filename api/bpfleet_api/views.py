"""What the API returns and accepts, beyond the shared protocol models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.alias_generators import to_camel

from bpfleet_core.features import FeatureReport
from bpfleet_core.manifests import Manifest
from bpfleet_core.protocol import Endpoint, PolicyReport
from bpfleet_core.resources import BpfProgramSpec, Labels, LabelSelector


class View(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class NodeView(View):
    name: str
    labels: dict[str, str]
    kernel_release: str
    readiness: Literal["Ready", "NotReady", "Unknown"]
    last_heartbeat: datetime | None
    desired_revision: int
    applied_revision: int


class NodeProgramView(View):
    node: str
    program: str
    generation: int | None
    state: str
    reason: str
    message: str
    updated_at: datetime
    verifier_log: str | None = Field(
        default=None, description="The verifier's log excerpt, when the load failed."
    )


class NodeDetail(NodeView):
    features: FeatureReport | None
    programs: list[NodeProgramView]
    endpoints: list[Endpoint] = Field(default_factory=list)
    policy: PolicyReport | None = Field(
        default=None, description="What the node's policy datapath enforces, as last reported."
    )


class LabelsUpdate(View):
    labels: Labels


class SummaryView(View):
    desired: int
    attached: int
    failed: int
    incompatible: int
    pending: int


class RolloutView(View):
    id: int
    program: str
    from_generation: int | None
    to_generation: int
    phase: str
    step: int
    updated_nodes: list[str]
    message: str
    started_at: datetime
    updated_at: datetime


class ProgramView(View):
    name: str
    generation: int
    killed: bool
    spec: dict[str, Any]
    summary: SummaryView
    rollout: RolloutView | None


class EventView(View):
    program: str
    node: str | None
    reason: str
    message: str
    created_at: datetime


class ArtifactView(View):
    digest: str
    name: str
    version: str
    signer: str
    uploaded_at: datetime
    manifest: Manifest


class PreflightRequest(View):
    """A program spec (its artifact must be uploaded), or a manifest not yet deployed."""

    spec: BpfProgramSpec | None = None
    manifest: Manifest | None = None
    node_selector: LabelSelector = Field(default_factory=LabelSelector)


class NodeVerdict(View):
    node: str
    compatible: bool
    missing: list[str]


class PreflightResult(View):
    compatible: int
    incompatible: int
    nodes: list[NodeVerdict]


class ValidateRequest(View):
    spec: dict[str, Any]


class ValidateResult(View):
    valid: bool
    problems: list[str]


class TokenRequest(View):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    role: Literal["admin", "ci", "viewer", "proposer", "bootstrap"]


class TokenResult(View):
    name: str
    role: str
    token: str


class SessionRequest(View):
    token: SecretStr = Field(description="A bpfleet token (bpf_...) of a person's role.")


class SessionView(View):
    name: str
    role: str
    expires_at: datetime | None


class Problem(View):
    detail: str
    problems: list[str] = Field(default_factory=list)


class PolicySummaryView(View):
    desired: int = Field(description="Nodes with an endpoint the policy selects.")
    enforcing: int = Field(description="Of those, nodes enforcing this generation.")
    failed: int = Field(description="Of those, nodes reporting a failure.")
    pending: int


class PolicyView(View):
    namespace: str
    name: str
    generation: int
    mode: Literal["enforce", "audit"]
    document: dict[str, Any] = Field(description="The policy as stored: validated, normalised.")
    summary: PolicySummaryView


class NodePolicyView(View):
    node: str
    generation: int | None = Field(
        description="The generation the node enforces; null while it enforces none."
    )
    state: Literal["Enforcing", "Pending", "Failed", "Removing"] = Field(
        description="Removing: deleted or no longer selecting the node, still enforced there."
    )
    message: str
    updated_at: datetime
