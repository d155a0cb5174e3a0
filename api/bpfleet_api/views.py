"""What the API returns and accepts, beyond the shared protocol models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic.alias_generators import to_camel

from bpfleet_core.features import FeatureReport
from bpfleet_core.manifests import Manifest
from bpfleet_core.protocol import BoundedLabels, Endpoint, PolicyReport
from bpfleet_core.resources import BpfProgramSpec, LabelSelector


class View(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class NodeView(View):
    name: str
    labels: dict[str, str] = Field(
        description="What node selectors see: agentLabels, with adminLabels over them."
    )
    agent_labels: dict[str, str] = Field(description="Declared by the agent at registration.")
    admin_labels: dict[str, str] = Field(
        description="Set by an admin (PUT /labels; the operator: the Kubernetes Node's)."
    )
    pod_cidrs: list[str] | None = Field(
        alias="podCIDRs",
        description="Where the agent may declare endpoints; null until an admin sets them.",
    )
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


class NodeDetail(NodeView):
    features: FeatureReport | None
    programs: list[NodeProgramView]
    endpoints: list[Endpoint] = Field(default_factory=list)
    policy: PolicyReport | None = Field(
        default=None, description="What the node's policy datapath enforces, as last reported."
    )


class LabelsUpdate(View):
    labels: BoundedLabels


class NamespaceView(View):
    name: str
    labels: dict[str, str]
    updated_at: datetime


class TombstoneView(View):
    name: str = Field(description="A deleted node's name, refused at registration.")
    deleted_at: datetime


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


# Tokens live at most ten years; a date beyond that is a mistake, not a wish.
MAX_TOKEN_SECONDS = 10 * 365 * 24 * 3600


class TokenRequest(View):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    role: Literal["admin", "ci", "viewer", "bootstrap"]
    expires_at: AwareDatetime | None = Field(
        default=None, description="When the token stops working; never, if neither is set."
    )
    expires_in_seconds: int | None = Field(
        default=None, ge=1, le=MAX_TOKEN_SECONDS, description="Or: this long from now."
    )

    @model_validator(mode="after")
    def _one_expiry(self) -> TokenRequest:
        if self.expires_at is not None and self.expires_in_seconds is not None:
            raise ValueError("give expiresAt or expiresInSeconds, not both")
        return self


class TokenResult(View):
    id: int
    name: str
    role: str
    token: str
    expires_at: datetime | None


class TokenView(View):
    """A token as listed: never its secret, nor its digest."""

    id: int
    name: str
    role: str
    node: str | None = Field(description="The node of an agent token.")
    session_of: int | None = Field(description="For a browser session: the token it opened.")
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


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
