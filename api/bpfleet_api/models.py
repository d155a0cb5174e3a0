"""Database tables. The fleet's state lives here; Redis only carries tasks and wake-ups.

Per-node detail (assignments, statuses) is kept here and never copied into the
Kubernetes resources, which carry summaries only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, LargeBinary, Text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """``moment`` in UTC: SQLite hands datetimes back without their zone."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _timestamp(**kwargs: Any) -> Any:
    return Field(sa_type=DateTime(timezone=True), **kwargs)


class Role(StrEnum):
    ADMIN = "admin"  # everything
    CI = "ci"  # read, validate, preflight; never writes desired state
    VIEWER = "viewer"  # read
    PROPOSER = "proposer"  # read, validate and simulate policies, propose; never writes
    BOOTSTRAP = "bootstrap"  # registers nodes, nothing else
    AGENT = "agent"  # one node's own assignments and status


class Token(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    role: Role
    digest: str = Field(
        unique=True, description="sha256 of the secret; the secret is never stored."
    )
    node: str | None = Field(default=None, index=True, description="For agent tokens.")
    session_of: int | None = Field(
        default=None,
        foreign_key="token.id",
        index=True,
        description="For browser sessions: the token exchanged for it, whose fate it shares.",
    )
    configured: bool = Field(
        default=False,
        description="Made from a setting (the admin or bootstrap token): a changed setting "
        "revokes the previous one of its name at start-up.",
    )
    created_at: datetime = _timestamp(default_factory=utcnow)
    expires_at: datetime | None = _timestamp(default=None)
    revoked_at: datetime | None = _timestamp(default=None)

    def valid_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < aware(self.expires_at))


class Node(SQLModel, table=True):
    name: str = Field(primary_key=True)
    labels: dict[str, str] = Field(
        default_factory=dict,
        sa_type=JSON,
        description="What node selectors see: agent labels, overridden by admin labels.",
    )
    agent_labels: dict[str, str] = Field(
        default_factory=dict, sa_type=JSON, description="Declared by the agent at registration."
    )
    admin_labels: dict[str, str] = Field(
        default_factory=dict,
        sa_type=JSON,
        description="Set by an admin (the operator copies the Kubernetes Node's labels).",
    )
    key_digest: str | None = Field(
        default=None,
        description="sha256 of the node key: the secret that lets the node register again.",
    )
    pod_cidrs: list[str] | None = Field(
        default=None,
        sa_type=JSON,
        description="Set by an admin: the only ranges the agent may declare endpoints in.",
    )
    kernel_release: str = ""
    registered_at: datetime = _timestamp(default_factory=utcnow)
    last_heartbeat: datetime | None = _timestamp(default=None)
    desired_revision: int = Field(
        default=0, sa_type=BigInteger, description="Grows with every assignment change."
    )
    applied_revision: int = Field(
        default=0, sa_type=BigInteger, description="The revision the agent last applied."
    )


class NodeTombstone(SQLModel, table=True):
    """A node an admin deleted: its name registers again only once an admin allows it."""

    name: str = Field(primary_key=True)
    deleted_at: datetime = _timestamp(default_factory=utcnow)


class NodeFeatures(SQLModel, table=True):
    """A node's feature report: large, and read only by preflights and node detail,
    so it stays out of the rows every heartbeat and rollout tick touches."""

    node: str = Field(primary_key=True)
    report: dict[str, Any] = Field(sa_type=JSON)


class Artifact(SQLModel, table=True):
    digest: str = Field(primary_key=True, description="sha256 of the object.")
    name: str = Field(index=True)
    version: str
    manifest: bytes = Field(sa_type=LargeBinary)
    signature: bytes = Field(sa_type=LargeBinary)
    object: bytes = Field(sa_type=LargeBinary)
    signer: str = Field(description="Key id of the trusted key that signed it.")
    uploaded_at: datetime = _timestamp(default_factory=utcnow)


class Program(SQLModel, table=True):
    name: str = Field(primary_key=True)
    generation: int = Field(default=1, description="Grows with every change of spec.")
    spec: dict[str, Any] = Field(sa_type=JSON, description="The BpfProgramSpec, digest resolved.")
    killed: bool = Field(default=False, description="Kill switch: detached everywhere.")
    created_at: datetime = _timestamp(default_factory=utcnow)
    updated_at: datetime = _timestamp(default_factory=utcnow)


class ProgramRevision(SQLModel, table=True):
    """Every spec a program had, so a rollout can return nodes to the previous one."""

    program: str = Field(primary_key=True)
    generation: int = Field(primary_key=True)
    spec: dict[str, Any] = Field(sa_type=JSON)
    created_at: datetime = _timestamp(default_factory=utcnow)


class Assignment(SQLModel, table=True):
    """A program at one generation on one node. The spec is the generation's
    (``ProgramRevision``), never copied per node: a step writes narrow rows."""

    node: str = Field(primary_key=True)
    program: str = Field(primary_key=True, index=True)
    generation: int
    revision: int = Field(
        sa_type=BigInteger, description="The node revision that introduced this assignment."
    )


class NodeProgramStatus(SQLModel, table=True):
    node: str = Field(primary_key=True)
    program: str = Field(primary_key=True, index=True)
    generation: int | None = Field(
        default=None, description="The generation this state is about, once the node applied it."
    )
    state: str
    reason: str = ""
    message: str = ""
    report: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    reported_at: datetime | None = _timestamp(
        default=None,
        description="When the node made the report this row holds: an older one (a batch "
        "delivered again) never overwrites it.",
    )
    updated_at: datetime = _timestamp(default_factory=utcnow)


class Event(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    program: str = Field(index=True)
    node: str | None = None
    reason: str
    message: str
    created_at: datetime = _timestamp(default_factory=utcnow, index=True)


class RolloutPhase(StrEnum):
    PROGRESSING = "Progressing"
    BAKING = "Baking"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"  # budget exceeded, no automatic rollback
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"
    SUPERSEDED = "Superseded"


ACTIVE_PHASES = frozenset({RolloutPhase.PROGRESSING, RolloutPhase.BAKING, RolloutPhase.PAUSED})


class Rollout(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    program: str = Field(index=True)
    from_generation: int | None = Field(default=None, description="None for a new program.")
    to_generation: int
    phase: RolloutPhase = Field(default=RolloutPhase.PROGRESSING, index=True)
    step: int = 0
    updated_nodes: list[str] = Field(default_factory=list, sa_type=JSON)
    skipped_nodes: list[str] = Field(
        default_factory=list,
        sa_type=JSON,
        description="Updated nodes given up on at the progress deadline (unreachable).",
    )
    step_started_at: datetime | None = _timestamp(
        default=None, description="When the current step's last nodes were assigned."
    )
    step_settled_at: datetime | None = _timestamp(default=None)
    chain: int = Field(
        default=0,
        description="The task chain that advances this rollout; tasks of an older chain "
        "stop (one chain per rollout, whatever re-queues it).",
    )
    next_check_at: datetime | None = _timestamp(
        default=None, index=True, description="When the rollout should be looked at again."
    )
    started_at: datetime = _timestamp(default_factory=utcnow)
    updated_at: datetime = _timestamp(default_factory=utcnow)
    message: str = ""


# ------------------------------------------------------------------- network policies


class Policy(SQLModel, table=True):
    """A NetworkPolicy, validated; ``document`` is its normalised form."""

    namespace: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    generation: int = Field(default=1, description="Grows with every change of the document.")
    mode: str = Field(description="enforce or audit.")
    document: dict[str, Any] = Field(sa_type=JSON)
    created_at: datetime = _timestamp(default_factory=utcnow)
    updated_at: datetime = _timestamp(default_factory=utcnow)


class NodeEndpoints(SQLModel, table=True):
    """What a node's agent declared last: its endpoints, each inside the node's pod CIDRs."""

    node: str = Field(primary_key=True)
    endpoints: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    updated_at: datetime = _timestamp(default_factory=utcnow)


class NodeWorkloads(SQLModel, table=True):
    """The workloads an admin says run on a node (the operator sends the node's pods).
    Once set, they are the node's entries in the topology; the agent adds interfaces only."""

    node: str = Field(primary_key=True)
    workloads: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    updated_at: datetime = _timestamp(default_factory=utcnow)


class Namespace(SQLModel, table=True):
    """A namespace's labels, set by an admin: the only source of namespace labels that
    namespaceSelector peers are matched against."""

    name: str = Field(primary_key=True)
    labels: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    updated_at: datetime = _timestamp(default_factory=utcnow)


class NodePolicy(SQLModel, table=True):
    """One policy on one node: whether the node must enforce it (at which generation),
    and which generation it reports enforcing. Kept while either is set, so a deleted
    policy stays listed on the nodes that still enforce it."""

    __table_args__ = (Index("ix_nodepolicy_policy", "namespace", "name"),)

    node: str = Field(primary_key=True)
    namespace: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    desired_generation: int | None = None
    enforced_generation: int | None = None
    counters: dict[str, Any] | None = Field(
        default=None,
        sa_type=JSON,
        description="What the node counted for it (policies.record_counters' form).",
    )
    updated_at: datetime = _timestamp(default_factory=utcnow)


class NodePolicyAssignment(SQLModel, table=True):
    """A node's policy part: present while some policy selects one of its endpoints.
    ``fingerprint`` covers everything the node is sent, so a change is noticed (and the
    node's revision bumped) exactly when what it would receive differs."""

    node: str = Field(primary_key=True)
    revision: int = Field(sa_type=BigInteger, description="The node revision of the last change.")
    fingerprint: str
    artifact: dict[str, Any] | None = Field(default=None, sa_type=JSON)


class NodePolicyStatus(SQLModel, table=True):
    """A node's last policy report."""

    node: str = Field(primary_key=True)
    state: str
    message: str = ""
    revision: int | None = Field(default=None, sa_type=BigInteger)
    report: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    updated_at: datetime = _timestamp(default_factory=utcnow)


class PolicyEpoch(SQLModel, table=True):
    """One row, updated first by every change that redistributes policies: the update
    serialises them, so each recomputes from what the previous one committed."""

    id: int = Field(primary_key=True)
    epoch: int = Field(default=0, sa_type=BigInteger)


# -------------------------------------------------------------------------- GitSources


class GitSourceRecord(SQLModel, table=True):
    """A GitSource as its operator last reported it (in a cluster or standalone): the
    spec, the status, and a longer history than the status keeps, each rejected revision
    with its problems. The operator owns the source; the API keeps what it says."""

    __tablename__ = "gitsource"

    namespace: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    spec: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    status: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    history: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    reported_at: datetime = _timestamp(default_factory=utcnow)
    reconcile_requested_at: datetime | None = _timestamp(default=None)


class GitSourceFile(SQLModel, table=True):
    """A manifest file's text at a revision of a GitSource, as its operator shipped it:
    what the policy editor opens. Kept for the applied revision and the rejected ones
    the history still lists."""

    __tablename__ = "gitsource_file"

    namespace: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    revision: str = Field(primary_key=True)
    path: str = Field(primary_key=True)
    text: str = Field(sa_type=Text)


class ReconcileRequest(SQLModel, table=True):
    """ "Reconcile now", asked of a GitSource; operators long-poll for ids above theirs."""

    id: int | None = Field(default=None, primary_key=True)
    namespace: str
    name: str
    requested_at: datetime = _timestamp(default_factory=utcnow, index=True)


# --------------------------------------------------------------------------- proposals


class Proposal(SQLModel, table=True):
    """A change to a GitSource's repository, asked for through the API; the operator
    writes it as one commit on a branch and reports each stage here. Never desired state:
    it reaches the fleet only through Git, when merged."""

    id: int | None = Field(default=None, primary_key=True)
    source_namespace: str
    source_name: str
    author: str = Field(description="The proposer's token name: the commit's author.")
    message: str
    files: list[dict[str, Any]] = Field(
        sa_type=JSON, description="FileChanges: path, content, baseRevision."
    )
    objects: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_type=JSON,
        description="What the files declare: kind, namespace, name and the stored form.",
    )
    requested_branch: str | None = None
    state: str = Field(default="Proposed", index=True)
    state_message: str = ""
    branch: str | None = None
    commit: str | None = None
    parent: str | None = None
    pull_request: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    merged_commit: str | None = None
    revision: str | None = None
    errors: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    conflicts: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    merge_requested_by: str | None = None
    created_at: datetime = _timestamp(default_factory=utcnow)
    updated_at: datetime = _timestamp(default_factory=utcnow)
    pushed_at: datetime | None = _timestamp(default=None)
    merged_at: datetime | None = _timestamp(default=None)
    applied_at: datetime | None = _timestamp(default=None)
    rejected_at: datetime | None = _timestamp(default=None)
    merge_requested_at: datetime | None = _timestamp(default=None)

    __table_args__ = (Index("ix_proposal_source", "source_namespace", "source_name"),)


class ProposalTask(SQLModel, table=True):
    """Work for an operator (push a proposal, or merge it); operators long-poll for ids
    above the last they saw, as for reconcile requests."""

    id: int | None = Field(default=None, primary_key=True)
    proposal_id: int = Field(foreign_key="proposal.id", index=True)
    action: str = Field(description="push or merge.")
    requested_at: datetime = _timestamp(default_factory=utcnow)


class Draft(SQLModel, table=True):
    """A policy draft shared by link: the editor's text as it was when shared."""

    id: str = Field(primary_key=True)
    author: str = Field(index=True)
    document: dict[str, Any] = Field(sa_type=JSON)
    created_at: datetime = _timestamp(default_factory=utcnow, index=True)
