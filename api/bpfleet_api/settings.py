"""API settings, from ``BPFLEET_API_*`` environment variables."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The built dashboard in a source checkout (`make ui` writes it); images set their own.
BUILT_UI = Path(__file__).resolve().parents[2] / "ui" / "dist"

# Configured tokens shorter than this are refused in production (the chart makes 48).
MIN_TOKEN_LENGTH = 32


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BPFLEET_API_", extra="forbid")

    environment: Literal["dev", "production"] = Field(
        default="dev", description="production refuses the development defaults below."
    )
    database_url: str = Field(
        default="sqlite:///.dev/bpfleet.db",
        description="SQLAlchemy URL: sqlite:///path (embedded) or postgresql+psycopg://...",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Celery broker and notifications."
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Created as the 'admin' token at start-up when set."
    )
    bootstrap_token: SecretStr | None = Field(
        default=None, description="Lets agents register themselves when set."
    )
    trust: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Public keys whose artifact signatures uploads must carry (colon-separated).",
    )
    node_ready_seconds: float = Field(
        default=20.0, gt=0, description="Heartbeat age up to which a node is Ready."
    )
    node_unknown_seconds: float = Field(
        default=120.0, gt=0, description="Heartbeat age beyond which a node is Unknown."
    )
    heartbeats_per_second: float = Field(
        default=250.0,
        gt=0,
        description="The fleet's heartbeats per second the API asks for: each agent's "
        "interval is the node count divided by this, within the bounds below.",
    )
    heartbeat_min_seconds: float = Field(
        default=5.0, gt=0, description="The shortest heartbeat interval agents are told."
    )
    heartbeat_max_seconds: float = Field(
        default=60.0, gt=0, description="The longest heartbeat interval agents are told."
    )
    long_poll_max_seconds: float = Field(default=300.0, gt=0)
    wakes_per_second: float = Field(
        default=1000.0,
        gt=0,
        description="The most changed nodes each API process goes through per second, "
        "waking those whose long-poll it holds: ten thousand waiters are let through in "
        "paced batches, not all at once, and fewer at a time while the event loop falls "
        "behind. Every process goes through every changed node, so this is the fleet's "
        "rate: raise it with the API's cores.",
    )
    worker_threads: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Threads one API process runs database work on; few, so they cannot "
        "starve the event loop that answers heartbeats.",
    )
    session_ttl_seconds: float = Field(
        default=12 * 3600.0,
        gt=0,
        le=7 * 24 * 3600.0,
        description="Lifetime of a browser session opened with a token (at most a week).",
    )
    secure_cookies: bool = Field(
        default=False,
        description="Mark session cookies Secure even when requests reach the API over plain "
        "HTTP (behind a TLS-terminating proxy); they always are over HTTPS.",
    )
    ui_dir: Path = Field(
        default=BUILT_UI, description="The built dashboard (ui/dist), served under /ui."
    )
    rollout_tick_seconds: float = Field(
        default=0.5, gt=0, description="How often an active rollout re-checks its nodes."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body (JSON) any route reads; larger ones get 413.",
    )
    max_upload_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest artifact upload (object, manifest and signature together).",
    )
    max_endpoints_per_node: int = Field(
        default=1024,
        ge=1,
        description="Endpoints (workloads) one node may have in the policy topology.",
    )
    events_kept_per_program: int = Field(
        default=1000, ge=1, description="A program's newest events kept; older ones go."
    )
    drafts_kept_per_author: int = Field(
        default=200,
        ge=1,
        description="Shared policy drafts kept per token name; the oldest go beyond this.",
    )
    agent_token_cache_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long an agent token stays trusted without a database lookup; "
        "revocations reach every API process at once through Redis, or within this.",
    )

    @field_validator("trust", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(part) for part in value.split(":") if part]
        return value

    @model_validator(mode="after")
    def _production_is_explicit(self) -> ApiSettings:
        if self.environment == "production":
            if self.admin_token is None:
                raise ValueError("production needs BPFLEET_API_ADMIN_TOKEN")
            for name, token in (("ADMIN", self.admin_token), ("BOOTSTRAP", self.bootstrap_token)):
                if token is not None and len(token.get_secret_value()) < MIN_TOKEN_LENGTH:
                    raise ValueError(
                        f"production needs BPFLEET_API_{name}_TOKEN of at least "
                        f"{MIN_TOKEN_LENGTH} characters"
                    )
            if not self.trust:
                raise ValueError("production needs BPFLEET_API_TRUST (artifact signing keys)")
            if self.database_url.startswith("sqlite"):
                raise ValueError("production needs a PostgreSQL BPFLEET_API_DATABASE_URL")
        return self


@cache
def get_settings() -> ApiSettings:
    return ApiSettings()
