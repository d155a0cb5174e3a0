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
    PUT  /v1/agent/endpoints       node token; EndpointSet -> 204 (this node's workloads)

Revisions only grow, so an agent that lost its connection resumes with ``after`` set
to the last revision it applied, and misses nothing.

Network policies travel in the same assignments: ``policy`` holds the policies that
select this node's endpoints, the topology they are compiled against and the signed
``netpol`` datapath that enforces them; ``NodeReport.policy`` says what the node
enforces. A node whose endpoints no policy selects gets no ``policy`` part at all.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

from bpfleet_core.features import FeatureReport
from bpfleet_core.netpol.models import Address, AnyPolicy, ContainerPort, Topology
from bpfleet_core.resources import (
    ArtifactRef,
    BpfProgramSpec,
    InterfaceName,
    Labels,
    ProgramName,
)


class _Message(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


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


class Endpoint(_Message):
    """One workload on a node (a pod, in Kubernetes terms), as the node declares it."""

    namespace: NamespaceName
    name: ObjectName
    labels: Labels = Field(default_factory=dict)
    ip: Address
    interface: InterfaceName = Field(description="The host-side veth of this endpoint.")
    ports: list[ContainerPort] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @model_validator(mode="after")
    def _unique_port_names(self) -> Endpoint:
        names = [port.name for port in self.ports if port.name is not None]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"container port names must be unique: {', '.join(duplicates)}")
        return self


class EndpointSet(_Message):
    """A node's endpoints, and labels of their namespaces (the endpoints file's form)."""

    endpoints: list[Endpoint] = Field(default_factory=list)
    namespaces: dict[NamespaceName, Labels] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique(self) -> EndpointSet:
        for what, values in (
            ("endpoint", [endpoint.key for endpoint in self.endpoints]),
            ("IP", [str(endpoint.ip) for endpoint in self.endpoints]),
        ):
            duplicates = sorted({value for value in values if values.count(value) > 1})
            if duplicates:
                raise ValueError(f"{what} listed twice: {', '.join(duplicates)}")
        return self


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
    labels: Labels = Field(default_factory=dict)
    features: FeatureReport


class RegistrationResult(_Message):
    node: str
    token: str = Field(description="This node's credential; shown once.")


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
    name: str = Field(description="The pin name, e.g. 'xdp@eth0' or 'tc-ingress@eth0'.")
    entry_point: str
    hook: str = Field(description="Human form of the hook, e.g. 'xdp on eth0'.")
    link_id: int
    program_id: int


class ProgramStats(_Message):
    program_id: int
    run_count: int
    run_time_ns: int


class MapReport(_Message):
    name: str
    map_id: int
    type: str
    max_entries: int
    entries: int | None = Field(default=None, description="Live entries, for hash-like maps.")


class UnmanagedProgram(_Message):
    hook: str
    program_id: int
    program_name: str


class ProgramReport(_Message):
    name: str
    state: ProgramState
    reason: str = ""
    message: str = ""
    artifact: str = Field(default="", description="name@version")
    digest: str = ""
    verifier_log: str | None = Field(default=None, description="Excerpt, on LoadFailed.")
    program_ids: dict[str, int] = Field(default_factory=dict)
    links: list[LinkReport] = Field(default_factory=list)
    stats: dict[str, ProgramStats] = Field(default_factory=dict)
    maps: list[MapReport] = Field(default_factory=list)
    unmanaged: list[UnmanagedProgram] = Field(default_factory=list)
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
    message: str = ""
    revision: int | None = Field(
        default=None, ge=0, le=MAX_REVISION, description="The policy revision in force."
    )
    policies: list[PolicyRef] = Field(
        default_factory=list, description="Enforced policies, as namespace/name@generation."
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
    node: str
    revision: int = Field(ge=0, le=MAX_REVISION)
    programs: list[ProgramReport]
    reported_at: datetime
    error: str = Field(default="", description="Why the desired state could not be read.")
    policy: PolicyReport | None = Field(
        default=None, description="The policy datapath; None when the node enforces none."
    )
