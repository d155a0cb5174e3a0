"""Agent settings, from ``BPFLEET_AGENT_*`` environment variables."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Lists of paths are written like PATH in the environment: "/one:/two".
PathList = Annotated[list[Path], NoDecode]


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BPFLEET_AGENT_", extra="forbid")

    node_name: str = Field(default_factory=socket.gethostname)
    pin_root: Path = Field(
        default=Path("/sys/fs/bpf/bpfleet"), description="bpffs directory this agent owns."
    )
    state_dir: Path = Field(
        default=Path("/var/lib/bpfleet/agent"),
        description="Feature report cache and the status file.",
    )
    desired_state: Path = Field(
        default=Path("/etc/bpfleet/desired.yaml"), description="Local desired-state file."
    )
    artifact_dirs: PathList = Field(
        default_factory=lambda: [Path("/var/lib/bpfleet/artifacts")],
        description="Where signed artifacts are looked up, in order.",
    )
    trust: PathList = Field(
        default_factory=lambda: [Path("/etc/bpfleet/trust")],
        description="Public keys (files, or directories of *.pub) whose signatures are accepted.",
    )
    poll_interval: float = Field(default=2.0, gt=0, description="Seconds between reconciles.")

    @field_validator("artifact_dirs", "trust", mode="before")
    @classmethod
    def _split_path_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(part) for part in value.split(":") if part]
        return value

    @property
    def status_file(self) -> Path:
        return self.state_dir / "status.json"

    @property
    def features_file(self) -> Path:
        return self.state_dir / "features.json"
