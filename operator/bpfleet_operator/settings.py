"""Operator and standalone settings, from ``BPFLEET_OPERATOR_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BPFLEET_OPERATOR_", extra="forbid")

    api_url: str = Field(default="http://127.0.0.1:8080", description="The fleet API.")
    api_token: SecretStr = Field(
        default=SecretStr(""), description="An admin token of the fleet API."
    )
    kube_url: str | None = Field(
        default=None,
        description="Kubernetes API URL without credentials; unset: in-cluster or kubeconfig.",
    )
    state_dir: Path = Field(
        default=Path(".dev/operator"), description="Git clones, and standalone status files."
    )
    webhook_host: str = Field(default="0.0.0.0", description="Where push notifications arrive.")  # noqa: S104 - a receiver for Git hosts
    webhook_port: int = Field(default=9292, ge=0, le=65535, description="0: no receiver.")
    status_interval_seconds: float = Field(
        default=2.0, gt=0, description="How often resource status follows the fleet API."
    )
    retry_seconds: float = Field(
        default=5.0, gt=0, description="First retry delay after a temporary failure; doubles."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="Standalone: the shared secret of push notifications."
    )
    allow_local_sources: bool | None = Field(
        default=None,
        description=(
            "GitSources may follow file:// URLs and local paths (never the operator's own "
            "clones). Unset: on standalone, where the one source is the operator's own "
            "file; off in a cluster, where anyone who may create a GitSource would read "
            "the operator's disk."
        ),
    )

    def allows_local_sources(self, *, standalone: bool) -> bool:
        return standalone if self.allow_local_sources is None else self.allow_local_sources
