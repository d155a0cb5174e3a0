"""Agent settings, from ``BPFLEET_AGENT_*`` environment variables.

With ``api_url`` set the agent takes its desired state from the fleet API (API mode);
without it, from the local desired-state file.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Annotated

from pydantic import (
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bpfleet_agent.permits import version_key
from bpfleet_core.fitting import ATTACHABLE_KINDS
from bpfleet_core.manifests import ArtifactName, AttachKind
from bpfleet_core.protocol import NodeName
from bpfleet_core.resources import LabelSelector

# Lists of paths are written like PATH in the environment: "/one:/two".
PathList = Annotated[list[Path], NoDecode]
# Labels (and other pairs) are written "key=value,key2=value2" in the environment.
LabelList = Annotated[dict[str, str], NoDecode]
# Other lists are written "one,two" in the environment.
WordList = Annotated[list[str], NoDecode]
KindList = Annotated[list[AttachKind], NoDecode]


def check_scheme(api_url: str, *, allow_insecure_http: bool) -> None:
    """Refuse a plain http:// API URL unless development says so: the node's tokens,
    its assignments and the artifacts it runs as root would cross the network in clear."""
    if api_url.startswith("http://") and not allow_insecure_http:
        raise ValueError(
            f"refusing plain http for the fleet API ({api_url}): use https:// (with "
            "BPFLEET_AGENT_API_CA for a private CA), or set "
            "BPFLEET_AGENT_ALLOW_INSECURE_HTTP=true in development"
        )


def parse_pairs(text: str) -> dict[str, str]:
    """``"zone=a, role=edge"`` -> ``{"zone": "a", "role": "edge"}``; each key once."""
    labels: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, separator, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not separator or not key:
            raise ValueError(f"{item!r} is not key=value")
        if key in labels:
            raise ValueError(f"{key!r} given twice")
        labels[key] = value
    return labels


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
    endpoints: Path | None = Field(
        default=None,
        description=(
            "YAML or JSON file declaring this node's endpoints (workloads) for network "
            "policies; read again whenever it changes. Unset: the node declares none."
        ),
    )

    api_url: str | None = Field(
        default=None,
        description="The fleet API's base URL; when set, assignments come from it, not a file.",
    )
    bootstrap_token: SecretStr | None = Field(
        default=None, description="Registers this node when it has no credential yet."
    )
    api_ca: Path | None = Field(
        default=None, description="CA bundle for an https API_URL; the system's when unset."
    )
    allow_insecure_http: bool = Field(
        default=False,
        description=(
            "Development only: accept a plain http:// API_URL, whose tokens and artifacts "
            "anyone on the path can read or change."
        ),
    )
    download_timeout: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="Seconds one artifact download (all its files) may take in all.",
    )
    labels: LabelList = Field(
        default_factory=dict, description="This node's labels, sent at registration."
    )
    heartbeat_interval: float = Field(
        default=5.0,
        gt=0,
        description="Seconds between heartbeats until the API says otherwise (it stretches "
        "the interval as the fleet grows).",
    )
    long_poll_wait: float = Field(
        default=300.0,
        gt=0,
        le=300,
        description="Seconds the API may hold an assignments poll (less a random tenth).",
    )
    status_refresh_interval: float = Field(
        default=300.0,
        gt=0,
        description="Unchanged reports are re-sent (with fresh statistics) this often; a "
        "changed one at once.",
    )
    counters_refresh_interval: float = Field(
        default=30.0,
        gt=0,
        description="A report whose only news is policy counters that moved is sent this "
        "often at most (an idle node's counters do not move, so it sends nothing).",
    )

    # What this node permits, whatever the API asks and the signatures allow.
    allowed_attach_kinds: KindList = Field(
        default_factory=lambda: sorted(ATTACHABLE_KINDS),
        description="Attach kinds assignments may use on this node (default: all the agent can).",
    )
    allowed_interfaces: WordList = Field(
        default_factory=lambda: ["*"],
        description="Shell globs; xdp and tc hooks only on interfaces matching one.",
    )
    allowed_cgroups: WordList = Field(
        default_factory=lambda: ["/*"],
        description=(
            "cgroup patterns (globs per path segment); cgroup hooks only at or below a match. "
            "The default, '/*', is every cgroup but the root; '/' permits the root too."
        ),
    )
    minimum_versions: LabelList = Field(
        default_factory=dict,
        description="'name=version,...': older versions of these artifacts are refused.",
    )
    detach_untrusted: bool = Field(
        default=False,
        description=(
            "Detach a running program once no trusted key vouches for it (its signer's key "
            "was removed from the trust store). Default: keep it running, reported as "
            "SignatureRejected."
        ),
    )

    @field_validator("artifact_dirs", "trust", mode="before")
    @classmethod
    def _split_path_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(part) for part in value.split(":") if part]
        return value

    @field_validator("labels", "minimum_versions", mode="before")
    @classmethod
    def _parse_pairs(cls, value: object) -> object:
        return parse_pairs(value) if isinstance(value, str) else value

    @field_validator("allowed_attach_kinds", "allowed_interfaces", "allowed_cgroups", mode="before")
    @classmethod
    def _split_words(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_attach_kinds")
    @classmethod
    def _attachable(cls, value: list[AttachKind]) -> list[AttachKind]:
        unknown = sorted(kind.value for kind in value if kind not in ATTACHABLE_KINDS)
        if unknown:
            raise ValueError(f"the agent cannot attach {', '.join(unknown)}")
        return value

    @field_validator("minimum_versions")
    @classmethod
    def _orderable_versions(cls, value: dict[str, str]) -> dict[str, str]:
        names = TypeAdapter(ArtifactName)
        for name, version in value.items():
            try:
                names.validate_python(name)
            except ValidationError:
                raise ValueError(f"{name!r} is not an artifact name") from None
            if version_key(version) is None:
                raise ValueError(
                    f"minimum version {version!r} of {name} does not start with a release "
                    "number such as 1.2.0"
                )
        return value

    @field_validator("labels")
    @classmethod
    def _labels_are_kubernetes_labels(cls, value: dict[str, str]) -> dict[str, str]:
        # The selector model holds the label syntax rules; reuse them, do not restate them.
        try:
            LabelSelector(match_labels=value)
        except ValidationError as error:
            raise ValueError(
                "; ".join(str(e.get("ctx", {}).get("error", e["msg"])) for e in error.errors())
            ) from error
        return value

    @field_validator("api_url")
    @classmethod
    def _api_url_is_http(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"api_url {value!r} must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("api_ca")
    @classmethod
    def _api_ca_is_a_ca_bundle(cls, value: Path | None) -> Path | None:
        # Read here, so a wrong path fails at start, not later in a background thread.
        if value is not None:
            try:
                ssl.create_default_context(cafile=str(value))
            except (OSError, ssl.SSLError) as error:
                raise ValueError(f"api_ca {value}: not a readable CA bundle ({error})") from error
        return value

    @model_validator(mode="after")
    def _plain_http_only_in_development(self) -> AgentSettings:
        if self.api_url is not None:
            check_scheme(self.api_url, allow_insecure_http=self.allow_insecure_http)
        return self

    @model_validator(mode="after")
    def _node_name_fits_the_api(self) -> AgentSettings:
        # Checked here, not at registration, so a bad hostname fails at start, saying why.
        if self.api_mode:
            try:
                TypeAdapter(NodeName).validate_python(self.node_name)
            except ValidationError as error:
                raise ValueError(
                    f"node_name {self.node_name!r} is not a DNS name the fleet API accepts "
                    "(lower case letters, digits, '-' and '.')"
                ) from error
        return self

    @property
    def api_mode(self) -> bool:
        return self.api_url is not None

    @property
    def status_file(self) -> Path:
        return self.state_dir / "status.json"

    @property
    def features_file(self) -> Path:
        return self.state_dir / "features.json"

    @property
    def credential_file(self) -> Path:
        """The node token the API issued at registration (mode 0600)."""
        return self.state_dir / "credential.json"

    @property
    def assignments_file(self) -> Path:
        """The last assignments received, so a restart without the API still has them."""
        return self.state_dir / "assignments.json"

    @property
    def features_reported_file(self) -> Path:
        """Which feature report the API has acknowledged (its ``probed_at``)."""
        return self.state_dir / "features.reported"

    @property
    def artifact_cache(self) -> Path:
        """Artifacts downloaded from the API, as ``<name>/<version>/<name>.*``."""
        return self.state_dir / "artifacts"

    @property
    def artifact_search_dirs(self) -> list[Path]:
        """Where artifacts are looked up: the download cache first in API mode."""
        if self.api_mode:
            return [self.artifact_cache, *self.artifact_dirs]
        return list(self.artifact_dirs)
