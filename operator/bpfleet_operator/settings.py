"""Operator and standalone settings, from ``BPFLEET_OPERATOR_*`` environment variables."""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bpfleet_core.proposals import BRANCH_PREFIX, branch_problems


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BPFLEET_OPERATOR_", extra="forbid")

    api_url: str = Field(default="http://127.0.0.1:8080", description="The fleet API.")
    api_token: SecretStr = Field(
        default=SecretStr(""), description="An admin token of the fleet API."
    )
    api_ca: Path | None = Field(
        default=None,
        description="CA bundle for an https API_URL (a private CA, as the chart's); the "
        "system's when unset. Only the API's client uses it: Git and Kubernetes keep theirs.",
    )
    kube_url: str | None = Field(
        default=None,
        description="Kubernetes API URL without credentials; unset: in-cluster or kubeconfig.",
    )
    state_dir: Path = Field(
        default=Path(".dev/operator"), description="Git clones, and standalone status files."
    )
    webhook_host: str | None = Field(
        default=None,
        description=(
            "Where push notifications arrive. Unset: 127.0.0.1 standalone; every "
            "interface in a cluster, where the chart's Service must reach the pod."
        ),
    )
    webhook_port: int = Field(default=9292, ge=0, le=65535, description="0: no receiver.")
    webhook_connections: int = Field(
        default=16, ge=1, description="Push notifications handled at once; more are refused."
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long a push notification may take to arrive."
    )
    status_interval_seconds: float = Field(
        default=2.0, gt=0, description="How often resource status follows the fleet API."
    )
    retry_seconds: float = Field(
        default=5.0, gt=0, description="First retry delay after a temporary failure; doubles."
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Standalone: the shared secret of push notifications; unset: no receiver.",
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

    cluster_source_namespaces: list[str] | None = Field(
        default=None,
        description=(
            "Namespaces whose GitSources may apply BpfPrograms (cluster-scoped: they load "
            "code on nodes) and NetworkPolicies of any namespace; '*' for all. GitSources "
            "elsewhere apply NetworkPolicies of their own namespace only. Unset: the "
            "operator's own namespace (a single-tenant install keeps its sources there)."
        ),
    )
    kube_timeout_seconds: float = Field(
        default=30.0, gt=0, description="How long a Kubernetes API call may take."
    )
    resync_seconds: float = Field(
        default=60.0,
        gt=0,
        description=(
            "How often node labels, pod CIDRs, workloads and namespace labels the fleet "
            "API lacks (a node registered or re-registered since) are pushed again."
        ),
    )

    @field_validator("api_ca")
    @classmethod
    def _api_ca_is_a_ca_bundle(cls, value: Path | None) -> Path | None:
        # Read here, so a wrong path fails at start, not at the first call to the API.
        if value is not None:
            try:
                ssl.create_default_context(cafile=str(value))
            except (OSError, ssl.SSLError) as error:
                raise ValueError(f"api_ca {value}: not a readable CA bundle ({error})") from error
        return value

    proposal_branch_prefix: str = Field(
        default=BRANCH_PREFIX,
        description=(
            "Proposals are pushed as new branches under this prefix, and nowhere else (the "
            "tracked branch only by a dev merge, where a source allows one)."
        ),
    )
    signing_key: Path | None = Field(
        default=None,
        description=(
            "An OpenSSH private key (unencrypted) that signs proposal and merge commits for "
            "GitSources with trustedSigningKeys; its public key must be one of them. Unset: "
            "proposals to such sources fail, saying so."
        ),
    )
    committer_name: str = Field(
        default="bpfleet operator", description="The committer of proposal commits."
    )
    committer_email: str = Field(default="operator@bpfleet.invalid")
    author_email_domain: str = Field(
        default="bpfleet.invalid",
        description="Proposal commits are authored by <token name>@<this domain>.",
    )
    secrets_dir: Path | None = Field(
        default=None,
        description=(
            "Standalone: where a GitSource's secretRef (and its forge's) are read, one "
            "directory per Secret name holding a file per key (username, password, "
            "identity, known_hosts, ca.crt, token), as Kubernetes mounts a Secret."
        ),
    )

    @field_validator("proposal_branch_prefix")
    @classmethod
    def _a_branch_prefix(cls, prefix: str) -> str:
        problems = branch_problems(f"{prefix}x")
        if problems or not prefix.endswith("/"):
            raise ValueError(
                f"{prefix!r} is no branch prefix: it ends with '/' and makes valid branch names"
            )
        return prefix

    @field_validator("webhook_secret")
    @classmethod
    def _not_empty(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and not secret.get_secret_value():
            # An empty token would match an empty X-Gitlab-Token header: anyone's.
            raise ValueError("must not be empty (leave it unset for no receiver)")
        return secret

    def allows_local_sources(self, *, standalone: bool) -> bool:
        return standalone if self.allow_local_sources is None else self.allow_local_sources

    def receiver_host(self, *, standalone: bool) -> str:
        if self.webhook_host is not None:
            return self.webhook_host
        return "127.0.0.1" if standalone else "0.0.0.0"  # noqa: S104 - the Service reaches the pod
