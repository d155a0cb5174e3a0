"""Messages between the fleet API and node agents (and the agent's local state files).

The agent's local desired-state file is a ``DesiredState`` document too, so a node runs
the same way whether its assignments come from a file or from the API.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from bpfleet_core.resources import BpfProgramSpec, ProgramName


class _Message(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ProgramAssignment(_Message):
    name: ProgramName
    spec: BpfProgramSpec


class DesiredState(_Message):
    revision: int = Field(default=0, ge=0)
    programs: list[ProgramAssignment] = Field(default_factory=list)


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
    name: str = Field(description="The pin name, e.g. 'xdp_count.xdp.eth0'.")
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
    revision: int
    programs: list[ProgramReport]
    reported_at: datetime
    error: str = Field(default="", description="Why the desired state could not be read.")
