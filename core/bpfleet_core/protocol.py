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

Revisions only grow, so an agent that lost its connection resumes with ``after`` set
to the last revision it applied, and misses nothing.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from bpfleet_core.features import FeatureReport
from bpfleet_core.resources import BpfProgramSpec, Labels, ProgramName


class _Message(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ProgramAssignment(_Message):
    name: ProgramName
    spec: BpfProgramSpec


# Revisions are stored as 64-bit integers everywhere.
MAX_REVISION = 2**62


class DesiredState(_Message):
    revision: int = Field(default=0, ge=0, le=MAX_REVISION)
    programs: list[ProgramAssignment] = Field(default_factory=list)


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


class NodeReport(_Message):
    node: str
    revision: int = Field(ge=0, le=MAX_REVISION)
    programs: list[ProgramReport]
    reported_at: datetime
    error: str = Field(default="", description="Why the desired state could not be read.")
