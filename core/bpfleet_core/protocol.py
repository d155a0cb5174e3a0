"""Messages between the fleet API and node agents (and the agent's local state files).

The agent's local desired-state file is a ``DesiredState`` document too, so a node runs
the same way whether its assignments come from a file or from the API.

The agent protocol (JSON bodies, ``Authorization: Bearer <token>``):

    POST /v1/agent/register        bootstrap token; Registration -> RegistrationResult
    GET  /v1/agent/assignments?after=N&wait=S
                                   node token; Assignments once revision > N, else
                                   204 after waiting up to S seconds (long-poll)
    GET  /v1/artifacts/{digest}/{object|manifest|signature}
                                   any token; the artifact's files, byte for byte
    POST /v1/agent/status          node token; NodeReport -> 204
    POST /v1/agent/heartbeat       node token; Heartbeat -> 204
    PUT  /v1/agent/features        node token; FeatureReport -> 204 (kernel changed)
    PUT  /v1/agent/endpoints       node token; EndpointSet -> 204 (this node's workloads,
                                   each IP inside the node's pod CIDRs)

A node's first registration returns its token and its node key; registering that name
again takes the node key (or the node's own token, or an admin), so the bootstrap token
alone never takes over a registered node.

Reports and declarations are bounded: strings a node writes for people (messages,
verifier logs) are clipped to a length, lists have a largest size, and the API stores
state only for programs the node was assigned.

Revisions only grow, so an agent that lost its connection resumes with ``after`` set
to the last revision it applied, and misses nothing.

Network policies travel in the same assignments: ``policy`` holds the policies that
select this node's endpoints, the topology they are compiled against (narrowed to what
they can reach: ``bpfleet_core.netpol.narrowing``) and the signed ``netpol`` datapath
that enforces them; ``NodeReport.policy`` says what the node enforces, with counters
per policy and rule (only those that changed, a bounded number per report). A node
whose endpoints no policy selects gets no ``policy`` part at all.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

from bpfleet_core.features import FeatureReport
from bpfleet_core.netpol.models import (
    Address,
    AnyPolicy,
    ContainerPort,
    Network,
    Topology,
)
from bpfleet_core.resources import (
    ArtifactRef,
    BpfProgramSpec,
    InterfaceName,
    Labels,
    ProgramName,
)


class _Message(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# --- bounds: what one node may send --------------------------------------------------

MAX_LABELS = 64  # per endpoint, workload or namespace
MAX_LABEL_KEY = 317  # a DNS subdomain prefix (253), "/", a name (63)
MAX_PORTS = 64  # per endpoint
MAX_ENDPOINTS = 10_000  # per declaration; the API's own per-node limit is lower
MAX_ITEMS = 1024  # links, maps, statistics, ... of one program's report
MAX_PROGRAMS = 4096  # programs in one node's report
SHORT_TEXT = 256  # names, reasons, hooks
MESSAGE_TEXT = 4096  # messages for people
VERIFIER_LOG_TEXT = 16384  # a verifier log excerpt: its end says why


def clipped(limit: int, *, keep_end: bool = False) -> BeforeValidator:
    """Cut a string longer than ``limit`` (marking the cut): a node's words are kept,
    within bounds, rather than its whole report refused. ``keep_end`` keeps the tail."""

    def clip(value: object) -> object:
        if not isinstance(value, str) or len(value) <= limit:
            return value
        if keep_end:
            return "…" + value[len(value) - limit + 1 :]
        return value[: limit - 1] + "…"

    return BeforeValidator(clip)


ShortText = Annotated[str, clipped(SHORT_TEXT)]
MessageText = Annotated[str, clipped(MESSAGE_TEXT)]


def _bounded_label_keys(labels: dict[str, str]) -> dict[str, str]:
    for key in labels:
        if len(key) > MAX_LABEL_KEY:
            raise ValueError(f"label key {key[:40]!r}… is longer than {MAX_LABEL_KEY}")
    return labels


# Kubernetes labels (syntax checked by ``Labels``), at most MAX_LABELS of them.
BoundedLabels = Annotated[Labels, Field(max_length=MAX_LABELS), AfterValidator(_bounded_label_keys)]


class ProgramAssignment(_Message):
    name: ProgramName
    spec: BpfProgramSpec


# Revisions are stored as 64-bit integers everywhere.
MAX_REVISION = 2**62


# --- network policy: endpoints and what a node must enforce ---------------------------

# The catalog artifact that enforces policies, and the name its pins live under on a
# node. The API refuses programs of that name and agents report such an assignment as
# invalid, so a program and the policy datapath never share pins.
POLICY_ARTIFACT = "netpol"
POLICY_PROGRAM = "bpfleet-netpol"

# Kubernetes names: a namespace is a DNS-1123 label, a pod or a policy a subdomain.
NamespaceName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
ObjectName = Annotated[
    str,
    StringConstraints(
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    ),
]


class Workload(_Message):
    """One workload on a node (a pod, in Kubernetes terms): what the topology holds."""

    namespace: NamespaceName
    name: ObjectName
    labels: BoundedLabels = Field(default_factory=dict)
    ip: Address
    ports: list[ContainerPort] = Field(default_factory=list, max_length=MAX_PORTS)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @model_validator(mode="after")
    def _unique_port_names(self) -> Workload:
        names = [port.name for port in self.ports if port.name is not None]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"container port names must be unique: {', '.join(duplicates)}")
        return self


class Endpoint(Workload):
    """A workload as its node's agent declares it: with the host side of its veth."""

    interface: InterfaceName = Field(description="The host-side veth of this endpoint.")


def _unique_workloads(workloads: list[Workload] | list[Endpoint]) -> None:
    for what, values in (
        ("endpoint", [workload.key for workload in workloads]),
        ("IP", [str(workload.ip) for workload in workloads]),
    ):
        duplicates = sorted({value for value in values if values.count(value) > 1})
        if duplicates:
            raise ValueError(f"{what} listed twice: {', '.join(duplicates)}")


class EndpointSet(_Message):
    """A node's endpoints (the endpoints file's form). ``namespaces`` is read from the
    file but ignored by the API: namespace labels come from an admin (``/v1/namespaces``)."""

    endpoints: list[Endpoint] = Field(default_factory=list, max_length=MAX_ENDPOINTS)
    namespaces: dict[NamespaceName, BoundedLabels] = Field(
        default_factory=dict, max_length=MAX_ENDPOINTS
    )

    @model_validator(mode="after")
    def _unique(self) -> EndpointSet:
        _unique_workloads(self.endpoints)
        return self


class WorkloadSet(_Message):
    """What runs on a node, as an admin (the operator, from Kubernetes) says."""

    workloads: list[Workload] = Field(max_length=MAX_ENDPOINTS)

    @model_validator(mode="after")
    def _unique(self) -> WorkloadSet:
        _unique_workloads(self.workloads)
        return self


class PodCidrs(_Message):
    """The address ranges of a node's pods (a Kubernetes Node's ``spec.podCIDRs``)."""

    pod_cidrs: list[Network] = Field(alias="podCIDRs", max_length=16)


# "<namespace>/<name>@<generation>"; generations fit the API's 32-bit columns.
PolicyRef = Annotated[str, StringConstraints(pattern=r"^[^/@\s]+/[^/@\s]+@[0-9]{1,9}$")]


class AssignedPolicy(_Message):
    generation: int = Field(ge=1, le=MAX_REVISION)
    document: AnyPolicy = Field(description="The validated policy, CIDRs normalised.")

    @field_serializer("document")
    def _stored_form(self, document: AnyPolicy) -> dict[str, Any]:
        # Without the fields left out (None means absent in a policy; an empty list is
        # kept): half the bytes of a large allow-list.
        dumped: dict[str, Any] = document.model_dump(mode="json", by_alias=True, exclude_none=True)
        return dumped

    @property
    def ref(self) -> str:
        """``<namespace>/<name>@<generation>``, as reports name it."""
        return f"{self.document.key}@{self.generation}"


class PolicyAssignment(_Message):
    """What a node must enforce: every policy that selects one of its endpoints."""

    revision: int = Field(
        ge=0, le=MAX_REVISION, description="The node revision that last changed this part."
    )
    artifact: ArtifactRef | None = Field(
        description="The netpol datapath, digest pinned; None while none is uploaded."
    )
    policies: list[AssignedPolicy]
    topology: Topology = Field(
        description="Every endpoint of the fleet (with its node), namespaces and node labels."
    )


class DesiredState(_Message):
    revision: int = Field(default=0, ge=0, le=MAX_REVISION)
    programs: list[ProgramAssignment] = Field(default_factory=list)
    policy: PolicyAssignment | None = None


NodeName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")]


class Registration(_Message):
    node: NodeName
    labels: BoundedLabels = Field(default_factory=dict)
    features: FeatureReport
    node_key: SecretStr | None = Field(
        default=None,
        min_length=32,
        max_length=256,
        description="The node key a registration returned: registering a taken name needs it.",
    )


class RegistrationResult(_Message):
    node: str
    token: str = Field(description="This node's credential; shown once.")
    node_key: str = Field(
        description="The node key to keep (mode 0600) and send when registering again."
    )


class Assignments(DesiredState):
    """A node's whole desired state at one revision."""

    node: str


class Heartbeat(_Message):
    revision: int = Field(
        ge=0, le=MAX_REVISION, description="The assignment revision the agent has applied."
    )


class ProgramState(StrEnum):
    """Where a program stands on a node. Every state but Attached carries a reason."""

    PENDING = "Pending"
    ATTACHED = "Attached"
    INVALID = "Invalid"
    INCOMPATIBLE = "Incompatible"
    SIGNATURE_REJECTED = "SignatureRejected"
    LOAD_FAILED = "LoadFailed"
    ATTACH_FAILED = "AttachFailed"
    DETACHED = "Detached"


class LinkReport(_Message):
    name: ShortText = Field(description="The pin name, e.g. 'xdp@eth0' or 'tc-ingress@eth0'.")
    entry_point: ShortText
    hook: ShortText = Field(description="Human form of the hook, e.g. 'xdp on eth0'.")
    link_id: int
    program_id: int


class ProgramStats(_Message):
    program_id: int
    run_count: int
    run_time_ns: int


class MapReport(_Message):
    name: ShortText
    map_id: int
    type: ShortText
    max_entries: int
    entries: int | None = Field(default=None, description="Live entries, for hash-like maps.")


class UnmanagedProgram(_Message):
    hook: ShortText
    program_id: int
    program_name: ShortText


class ProgramReport(_Message):
    name: str = Field(max_length=253)
    state: ProgramState
    reason: ShortText = ""
    message: MessageText = ""
    artifact: ShortText = Field(default="", description="name@version")
    digest: ShortText = ""
    verifier_log: Annotated[str, clipped(VERIFIER_LOG_TEXT, keep_end=True)] | None = Field(
        default=None, description="Excerpt, on LoadFailed (its end, if long)."
    )
    program_ids: dict[ShortText, int] = Field(default_factory=dict, max_length=MAX_ITEMS)
    links: list[LinkReport] = Field(default_factory=list, max_length=MAX_ITEMS)
    stats: dict[ShortText, ProgramStats] = Field(default_factory=dict, max_length=MAX_ITEMS)
    maps: list[MapReport] = Field(default_factory=list, max_length=MAX_ITEMS)
    unmanaged: list[UnmanagedProgram] = Field(default_factory=list, max_length=MAX_ITEMS)
    updated_at: datetime


class PolicyState(StrEnum):
    ENFORCING = "Enforcing"  # the assigned policies are in force, as listed
    PENDING = "Pending"  # waiting for the datapath artifact
    FAILED = "Failed"  # the assignment could not be enforced; what was enforced stays


# Counters per rule in one report at most: a node may enforce ten thousand rules, and
# the rest follow in later reports (an agent sends what changed since the API had it).
MAX_REPORTED_RULES = 512
MAX_REPORTED_POLICIES = 256
PolicyKey = Annotated[str, StringConstraints(pattern=r"^[^/@\s]+/[^/@\s]+$")]


class RuleCounter(_Message):
    """Flows one rule let in (in audit mode: would let in). A flow is credited to one
    rule per view: the first, in policy order, that allows it."""

    direction: Literal["ingress", "egress"]
    index: int = Field(ge=0, le=2**31, description="The rule's place in ingress or egress.")
    flows: int = Field(ge=0)


class PolicyCounters(_Message):
    """What one policy did on a node, counted since ``PolicyReport.countersSince``."""

    policy: PolicyKey = Field(description="namespace/name")
    denied: int = Field(
        default=0, ge=0, description="Packets dropped at endpoints it isolates (none allowed)."
    )
    audit_denied: int = Field(
        default=0, ge=0, description="Flows passed that it would drop (an audit-mode policy)."
    )
    rules: list[RuleCounter] = Field(default_factory=list, max_length=MAX_REPORTED_RULES)


class PolicyReport(_Message):
    """What a node's policy datapath enforces now; counters since it was loaded."""

    state: PolicyState
    message: MessageText = ""
    revision: int | None = Field(
        default=None, ge=0, le=MAX_REVISION, description="The policy revision in force."
    )
    policies: list[PolicyRef] = Field(
        default_factory=list,
        max_length=MAX_PROGRAMS,
        description="Enforced policies, as namespace/name@generation.",
    )
    endpoints: int = Field(default=0, ge=0)
    rules: int = Field(default=0, ge=0)
    entries: int = Field(default=0, ge=0)
    allowed: int = Field(
        default=0, ge=0, description="Packets let through when decided (not tracked flows)."
    )
    denied: int = Field(default=0, ge=0, description="Packets dropped, either direction.")
    audit_denied: int = Field(default=0, ge=0, description="Packets audit mode would drop.")
    counters_since: int | None = Field(
        default=None,
        ge=0,
        le=MAX_REVISION,
        description="Which life of the counters these are: another value means they "
        "started again from zero (the datapath was loaded anew).",
    )
    counters: list[PolicyCounters] = Field(
        default_factory=list,
        max_length=MAX_REPORTED_POLICIES,
        description="Per policy and rule, cumulative; only what changed since the API "
        f"last had it, at most {MAX_REPORTED_RULES} rules a report.",
    )
    updated_at: datetime

    @model_validator(mode="after")
    def _bounded(self) -> PolicyReport:
        rules = sum(len(counters.rules) for counters in self.counters)
        if rules > MAX_REPORTED_RULES:
            raise ValueError(f"{rules} rule counters in one report; at most {MAX_REPORTED_RULES}")
        return self


def parse_policy_ref(ref: str) -> tuple[str, str, int]:
    """``ns/name@3`` -> ``("ns", "name", 3)``."""
    key, _, generation = ref.rpartition("@")
    namespace, _, name = key.partition("/")
    return namespace, name, int(generation)


class NodeReport(_Message):
    node: str = Field(max_length=253)
    revision: int = Field(ge=0, le=MAX_REVISION)
    programs: list[ProgramReport] = Field(max_length=MAX_PROGRAMS)
    reported_at: datetime
    error: MessageText = Field(default="", description="Why the desired state could not be read.")
    policy: PolicyReport | None = Field(
        default=None, description="The policy datapath; None when the node enforces none."
    )
