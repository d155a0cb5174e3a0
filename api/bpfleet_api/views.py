"""What the API returns and accepts, beyond the shared protocol models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from bpfleet_core import proposals
from bpfleet_core.features import FeatureReport
from bpfleet_core.manifests import Manifest
from bpfleet_core.proposals import Conflict, FileChange, ProposalState, PullRequest
from bpfleet_core.protocol import (
    BoundedLabels,
    Endpoint,
    LinkReport,
    NamespaceName,
    ObjectName,
    PolicyReport,
    ProgramStats,
)
from bpfleet_core.resources import (
    SOURCE_FILES_MAX,
    SOURCE_FILES_MAX_BYTES,
    BpfProgramSpec,
    Condition,
    GitSourceSpec,
    GitSourceStatus,
    LabelSelector,
    SourceError,
    SourceFile,
)

MAX_DRAFT_TEXT = 512 * 1024  # characters; a draft's text and its flows each


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
    readiness: Literal["Ready", "NotReady", "Unknown"] | None = Field(
        default=None,
        description="The node's, in per-program lists: an Unknown node (silent past the "
        "unknown window) is not waited for by a deletion; it detaches when it returns.",
    )
    verifier_log: str | None = Field(default=None, description="Excerpt, on LoadFailed.")
    hooks: list[LinkReport] = Field(default_factory=list, description="Where it is attached.")
    stats: dict[str, ProgramStats] = Field(
        default_factory=dict,
        description="Run counts and run time per entry point, where the node reports them.",
    )


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


class OriginView(View):
    """The GitSource whose inventory holds an object, and its applied revision."""

    namespace: str
    name: str
    revision: str
    short_revision: str


ProgramStatus = Literal["Ready", "Progressing", "Failed", "Killed"]
PolicyStatus = Literal["Enforcing", "Pending", "Failed"]


class ProgramView(View):
    name: str
    generation: int
    killed: bool
    spec: dict[str, Any]
    summary: SummaryView
    rollout: RolloutView | None
    status: ProgramStatus = Field(
        default="Ready",
        description="Killed; Failed (a node failed, or the rollout failed or rolled back); "
        "Progressing (a rollout is active or nodes have not reported); else Ready.",
    )
    origin: OriginView | None = Field(
        default=None, description="The GitSource it came from; null: set through the API."
    )


class RolloutStepView(View):
    label: str = Field(description="As the strategy says it: '1', '25%'.")
    target: int = Field(description="Nodes updated once this step is done (cumulative).")
    state: Literal["done", "current", "waiting"]


class RolloutProgressView(View):
    """A program's latest rollout, as steps a person can follow."""

    rollout: RolloutView
    steps: list[RolloutStepView]
    selected: int = Field(description="Nodes the new generation's selector picks.")
    bake_seconds: float
    bake_remaining_seconds: float | None = Field(
        description="While baking: seconds left before the next step."
    )
    failures: int = Field(description="Updated nodes failing; Incompatible ones do not count.")
    failure_budget: int
    auto_rollback: bool


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
    role: Literal["admin", "ci", "viewer", "proposer", "bootstrap"]
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


Permission = Literal["read", "check", "propose", "administer"]


class SessionView(View):
    name: str
    role: str
    may: list[Permission] = Field(
        description="What this role may do: read; check (validate, preflight); propose "
        "(changes to Git, their dev merges, shared drafts); administer (everything else: "
        "desired state, rollouts, the kill switch, tokens, reconcile now)."
    )
    expires_at: datetime | None


class Problem(View):
    detail: str
    problems: list[str] = Field(default_factory=list)


class PolicySummaryView(View):
    desired: int = Field(description="Nodes with an endpoint the policy selects.")
    enforcing: int = Field(description="Of those, nodes enforcing this generation.")
    failed: int = Field(description="Of those, nodes reporting a failure.")
    pending: int


class CountersView(View):
    """Packet counters of the nodes' datapaths. Nodes count per datapath, not per policy:
    for a policy these are the sums over the nodes enforcing it."""

    allowed: int = 0
    denied: int = 0
    audit_denied: int = 0


class RuleCountersView(View):
    """Flows one rule let in (an audit-mode policy's: would let in). A flow is credited
    to one rule: the first, in policy order, that allows it."""

    direction: Literal["ingress", "egress"]
    index: int = Field(description="The rule's place in spec.ingress or spec.egress.")
    flows: int


class PolicyCountersView(View):
    """What the policy itself did, as the nodes' datapaths count it, for the generation
    they enforce (from about when they started enforcing it)."""

    rules: list[RuleCountersView] = Field(
        default_factory=list,
        description="Every rule of the document, ingress then egress, each in order.",
    )
    denied: int = Field(
        default=0, description="Packets dropped at endpoints it isolates (no policy allowed)."
    )
    audit_denied: int = Field(default=0, description="Flows it would drop (audit mode).")


class PolicyView(View):
    namespace: str
    name: str
    generation: int
    mode: Literal["enforce", "audit"]
    document: dict[str, Any] = Field(description="The policy as stored: validated, normalised.")
    summary: PolicySummaryView
    status: PolicyStatus = Field(
        default="Enforcing",
        description="Failed (a node failed), Pending (a node does not enforce this "
        "generation yet), else Enforcing.",
    )
    counters: CountersView = Field(default_factory=CountersView)
    policy_counters: PolicyCountersView = Field(
        default_factory=PolicyCountersView,
        description="This policy's own counts, per rule, summed over the nodes enforcing "
        "its current generation.",
    )
    origin: OriginView | None = None


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
    counters: CountersView | None = Field(
        default=None, description="The node's datapath counters (all its policies)."
    )
    readiness: Literal["Ready", "NotReady", "Unknown"] | None = Field(
        default=None,
        description="The node's: an Unknown node (silent past the unknown window) is not "
        "waited for by a deletion; it removes the policy when it returns.",
    )
    policy_counters: PolicyCountersView | None = Field(
        default=None,
        description="What this node counted for this policy, for the generation it enforces.",
    )


# ------------------------------------------------------------------------ dashboard


class ReadinessCounts(View):
    ready: int
    not_ready: int
    unknown: int


class ProgramCounts(View):
    total: int
    by_status: dict[str, int] = Field(description="Programs per status (see ProgramView).")
    nodes: SummaryView = Field(description="Node x program outcomes, summed.")


class PolicyCounts(View):
    total: int
    by_status: dict[str, int] = Field(description="Policies per status (see PolicyView).")


class SyncView(View):
    """Sync in two stages, never one word: Git -> fleet, then fleet -> nodes."""

    source: str | None = Field(description="namespace/name of the GitSource; null: the fleet.")
    applied_revision: str
    short_revision: str
    applied_at: datetime | None
    ready: Literal["True", "False", "Unknown"]
    reason: str
    nodes_ready: int = Field(
        description="Programs attached (or incompatible) and policies "
        "enforcing, over node x object pairs."
    )
    nodes_desired: int


class OverviewView(View):
    nodes: ReadinessCounts
    programs: ProgramCounts
    policies: PolicyCounts
    sources: list[SyncView]
    fleet: SyncView = Field(description="Every program and policy, from Git or not.")


class GitSourceView(View):
    namespace: str
    name: str
    spec: GitSourceSpec | None = Field(description="null when the spec itself is invalid.")
    conditions: list[Condition]
    state: Literal["Ready", "Reconciling", "Stalled", "Failed", "Unknown"]
    reason: str
    message: str
    last_fetched_revision: str
    last_attempted_revision: str
    last_applied_revision: str
    short_revision: str
    applied_at: datetime | None
    errors: list[SourceError]
    reported_at: datetime
    reconcile_requested_at: datetime | None
    reconcile_pending: bool = Field(description="Requested, and no pass reported since.")


class HistoryView(View):
    revision: str
    short_revision: str
    time: datetime
    result: Literal["Applied", "Rejected", "Failed"]
    message: str
    errors: list[SourceError] = Field(description="Rejected: each problem, located.")


class SourceFileView(View):
    """A file of a GitSource at a revision, and what was wrong with it there."""

    namespace: str = Field(description="The GitSource's.")
    name: str = Field(description="The GitSource's.")
    revision: str
    short_revision: str
    applied: bool = Field(description="The revision is the one in force.")
    path: str
    text: str
    errors: list[SourceError] = Field(description="The rejection's problems in this file.")


class PolicySourceView(SourceFileView):
    """Where a policy in force is written in Git: its file at the applied revision."""

    line: int = Field(description="Where the policy's document starts.")


class InventoryItemView(View):
    kind: Literal["BpfProgram", "NetworkPolicy"]
    namespace: str | None
    name: str
    ready: int = Field(description="Nodes attached (or incompatible) / enforcing.")
    desired: int
    status: str = Field(description="The object's status in the fleet; Missing if absent.")


class GitSourceDetail(GitSourceView):
    history: list[HistoryView] = Field(description="Newest first.")
    inventory: list[InventoryItemView]


class GitSourceReport(View):
    """What an operator reports at the end of each pass over a GitSource."""

    spec: GitSourceSpec | None = None
    status: GitSourceStatus
    files: list[SourceFile] = Field(
        default_factory=list,
        max_length=SOURCE_FILES_MAX,
        description="The text of the files the policy editor opens: those holding policies "
        "of the applied revision, those a rejected revision's errors name.",
    )

    @field_validator("files")
    @classmethod
    def _files_are_small(cls, files: list[SourceFile]) -> list[SourceFile]:
        size = sum(len(item.text.encode()) for item in files)
        if size > SOURCE_FILES_MAX_BYTES:
            raise ValueError(f"{size} bytes of file text, more than {SOURCE_FILES_MAX_BYTES}")
        return files

    @model_validator(mode="after")
    def _times_are_rfc3339(self) -> GitSourceReport:
        for index, entry in enumerate(self.status.history):
            if parse_time(entry.time) is None:
                raise ValueError(f"status.history[{index}].time: {entry.time!r} is not RFC 3339")
        return self


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 time as the operator writes it; None when it is not one."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


class ReconcileRequests(View):
    cursor: int = Field(description="Pass it as `after` next time.")
    sources: list[str] = Field(description="namespace/name of each source asked to reconcile.")


class FeatureKeyView(View):
    group: str
    name: str


class KernelRow(View):
    node: str
    kernel_release: str
    readiness: Literal["Ready", "NotReady", "Unknown"]
    reported: bool = Field(description="False: the node sent no feature report.")
    values: list[bool] = Field(description="One per feature of the matrix, in its order.")


class KernelMatrix(View):
    """Nodes x the features on which they differ (of one page of nodes)."""

    features: list[FeatureKeyView]
    nodes: list[KernelRow]
    same: int = Field(description="Features every node of the page agrees on.")
    total: int = Field(description="Nodes matching the filter, over all pages.")


class FeatureDiff(View):
    group: str
    only_a: list[str]
    only_b: list[str]
    same: int


class KernelComparison(View):
    a: str
    b: str
    kernel_release_a: str
    kernel_release_b: str
    groups: list[FeatureDiff]


class ProgramFit(View):
    program: str
    artifact: str
    selected: bool = Field(description="The program's node selector picks this node.")
    compatible: bool
    missing: list[str] = Field(description="Each missing feature, by name.")


# --------------------------------------------------------------------------- proposals


ProposalStage = Literal[
    "Proposed", "Pushed", "Conflict", "Failed", "Merged", "Applied", "Rejected", "Enforcing"
]


class SourceRefView(View):
    namespace: NamespaceName
    name: ObjectName


class ProposalRequest(View):
    """A change to a GitSource's repository: the operator writes it as one commit on a
    branch (and opens a pull request where the source names a forge). Nothing of it
    reaches the fleet until it is merged."""

    source: SourceRefView = Field(description="The GitSource whose repository it changes.")
    files: list[FileChange] = Field(
        min_length=1,
        max_length=proposals.MAX_FILES,
        description="Each file whole: manifests (validated as a GitSource pass would) and "
        "flow-test files (parsed). Paths stay under the source's spec.path.",
    )
    message: str = Field(
        min_length=1,
        max_length=proposals.MAX_MESSAGE,
        description="The commit message; its first line titles the pull request.",
    )
    branch: str | None = Field(
        default=None,
        max_length=proposals.MAX_BRANCH,
        description="The branch to create (under the operator's branch prefix, 'bpfleet/' "
        "by default); absent: <prefix><namespace>-<name>-<id> of the first object changed.",
    )


class ProposalPreviewRequest(View):
    """A draft the editor holds, to see what proposing it would send."""

    text: str = Field(max_length=proposals.MAX_FILE_BYTES, description="The policy draft (YAML).")
    flows: str | None = Field(
        default=None,
        max_length=proposals.MAX_FILE_BYTES,
        description="Its flow tests: proposed beside it as <policy>.flows.yaml.",
    )
    source: SourceRefView | None = Field(
        default=None,
        description="The GitSource to propose to; absent: where the policy is written, "
        "else the only GitSource known.",
    )
    path: str | None = Field(
        default=None,
        max_length=proposals.MAX_PATH,
        description="The policy's file; absent: where it is written, else "
        "<spec.path>/<namespace>-<name>.yaml.",
    )
    base_revision: str | None = Field(
        default=None,
        max_length=300,
        description="The revision the draft was opened from; absent: the source's applied one.",
    )
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    port: int = Field(default=80, ge=1, le=65535, description="The port the message leads with.")


class ProposalPreview(View):
    """What POST /v1/proposals would be sent for the draft; nothing is kept."""

    source: SourceRefView
    sources: list[SourceRefView] = Field(description="Every GitSource one may propose to.")
    path: str
    branch: str = Field(description="The default branch, '<id>' standing for the proposal's.")
    message: str = Field(
        description="A summary title, then the matrix delta, the lints and flow tests."
    )
    files: list[FileChange]


class ProposalFileView(View):
    path: str
    base_revision: str | None
    bytes: int = Field(description="Size of the proposed content, UTF-8.")


class ProposalObjectView(View):
    """One object the proposal declares, as the fleet holds it now."""

    kind: Literal["BpfProgram", "NetworkPolicy"]
    namespace: str | None
    name: str
    in_force: bool = Field(description="The fleet holds this object as proposed.")
    generation: int | None = Field(description="Its generation in the fleet; null: absent.")
    ready: int = Field(description="Nodes enforcing it (policies) or running it (programs).")
    desired: int = Field(description="Nodes it selects.")
    failed: int


class ProposalView(View):
    """A proposal's card: its stages with their times, what the operator made of it, and
    how far the fleet follows."""

    id: int
    source: SourceRefView
    state: ProposalState = Field(description="The stage the operator last reported.")
    stage: ProposalStage = Field(
        description="state, or Enforcing once applied and every object is in force on "
        "every node it selects."
    )
    state_message: str = Field(description="Why it failed, or what else happened (words).")
    message: str = Field(description="The commit message.")
    author: str = Field(description="The proposer's token name: the commit's author.")
    files: list[ProposalFileView]
    requested_branch: str | None
    branch: str | None = Field(description="The branch pushed; null until then.")
    commit: str | None
    parent: str | None = Field(description="The tip of the tracked branch it was made on.")
    pull_request: PullRequest | None
    merged_commit: str | None = Field(description="Where it entered the tracked branch.")
    revision: str | None = Field(description="The revision applied (or rejected) with it.")
    errors: list[SourceError] = Field(description="Rejected: each problem, file:line.")
    objects: list[ProposalObjectView]
    ready: int = Field(description="Enforcing n/N: n, over every object.")
    desired: int = Field(description="Enforcing n/N: N, over every object.")
    can_merge: bool = Field(description="A dev merge is offered: the source allows it.")
    merge_requested: bool = Field(description="A merge was asked for and is not done yet.")
    created_at: datetime
    updated_at: datetime
    pushed_at: datetime | None
    merged_at: datetime | None
    applied_at: datetime | None
    rejected_at: datetime | None
    enforced_at: datetime | None = Field(description="When the last node caught up.")


class ProposalDetail(ProposalView):
    changes: list[FileChange] = Field(description="The files as proposed, whole.")
    conflicts: list[Conflict] = Field(
        description="Conflict: each file's base, theirs (at the tip) and ours."
    )


class SharedDraft(View):
    """A policy draft as the editor holds it, to reopen by link."""

    text: str = Field(max_length=MAX_DRAFT_TEXT, description="The policy documents (YAML).")
    flows: str | None = Field(
        default=None, max_length=MAX_DRAFT_TEXT, description="Its flow-test file, if any."
    )
    source: SourceRefView | None = Field(default=None, description="The GitSource it is from.")
    path: str | None = Field(
        default=None, max_length=proposals.MAX_PATH, description="Its file in that source."
    )
    base_revision: str | None = Field(
        default=None, max_length=300, description="The revision it was opened from."
    )
    title: str = Field(default="", max_length=200)


class SharedDraftView(SharedDraft):
    id: str = Field(description="Part of the link; hard to guess.")
    author: str
    created_at: datetime
