"""Agent settings, from ``BPFLEET_AGENT_*`` environment variables."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    artifact_dirs: list[Path] = Field(
        default_factory=lambda: [Path("/var/lib/bpfleet/artifacts")],
        description="Where signed artifacts are looked up, in order.",
    )
    trust: list[Path] = Field(
        default_factory=lambda: [Path("/etc/bpfleet/trust")],
        description="Public keys (files, or directories of *.pub) whose signatures are accepted.",
    )
    poll_interval: float = Field(default=2.0, gt=0, description="Seconds between reconciles.")

    @property
    def status_file(self) -> Path:
        return self.state_dir / "status.json"

    @property
    def features_file(self) -> Path:
        return self.state_dir / "features.json"
