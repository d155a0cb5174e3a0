"""The desired-state models users write: what to load and where to attach it.

These are the spec of the ``BpfProgram`` resource (``bpfleet.io/v1alpha1``). Field
names follow Kubernetes conventions (camelCase on the wire, snake_case in Python).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel

from bpfleet_core.manifests import ArtifactName, AttachKind, Sha256Hex


def _printable(value: str) -> str:
    """Hook targets end up in syscalls and pin names: a NUL would cut them short there,
    and no control character belongs in one."""
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in value):
        raise ValueError(f"{value!r} contains a control character")
    return value


def _safe_version(value: str) -> str:
    if ".." in value:
        raise ValueError(f"version {value!r} must not contain '..'")
    return value


# DNS-1123 label: it names a directory under the bpffs root and, later, a Kubernetes object.
ProgramName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
InterfaceName = Annotated[
    str, StringConstraints(pattern=r"^[^/\s:]{1,15}$"), AfterValidator(_printable)
]
# A version names a directory an artifact is looked up in: one path component, no '..'.
ArtifactVersion = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"),
    AfterValidator(_safe_version),
]
ConfigValue = int | bool | str

_TRACEPOINT = re.compile(r"^[a-zA-Z0-9_]+/[a-zA-Z0-9_]+$")
_RAW_TRACEPOINT = re.compile(r"^[a-zA-Z0-9_]+$")
_NEEDS_INTERFACES = {AttachKind.XDP, AttachKind.TC}
_NEEDS_DIRECTION = {AttachKind.TC}


class _Spec(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ArtifactRef(_Spec):
    name: ArtifactName
    version: ArtifactVersion
    digest: Sha256Hex | None = Field(
        default=None, description="sha256 of the object; pins the exact build when set."
    )


class AttachPoint(_Spec):
    """Where one entry point of the object attaches."""

    entry_point: str = Field(min_length=1, description="Function name in the object.")
    type: AttachKind
    interfaces: tuple[InterfaceName, ...] = Field(
        default=(), description="Network interfaces (xdp, tc): one attachment per interface."
    )
    direction: Literal["ingress", "egress"] | None = Field(
        default=None, description="tc: which hook; cgroup_skb: must match the section."
    )
    xdp_mode: Literal["auto", "native", "generic"] = Field(
        default="auto", description="xdp: driver mode, generic (skb) mode, or the kernel's pick."
    )
    cgroup: Annotated[str, AfterValidator(_printable)] | None = Field(
        default=None, description="cgroup_*: a cgroup v2 path, relative to the cgroup2 mount."
    )
    target: Annotated[str, AfterValidator(_printable)] | None = Field(
        default=None,
        description="tracepoint 'category/name' or raw tracepoint name; defaults to the section's.",
    )

    @model_validator(mode="after")
    def _targets_fit_type(self) -> AttachPoint:
        if self.type in _NEEDS_INTERFACES and not self.interfaces:
            raise ValueError(f"attach type {self.type.value} needs at least one interface")
        if self.type not in _NEEDS_INTERFACES and self.interfaces:
            raise ValueError(f"attach type {self.type.value} takes no interfaces")
        if self.type in _NEEDS_DIRECTION and self.direction is None:
            raise ValueError(f"attach type {self.type.value} needs direction ingress or egress")
        if self.type.value.startswith("cgroup_") and not self.cgroup:
            raise ValueError(f"attach type {self.type.value} needs a cgroup path")
        if self.cgroup is not None and ".." in self.cgroup.split("/"):
            raise ValueError("cgroup path must not contain '..'")
        if (
            self.type == AttachKind.TRACEPOINT
            and self.target
            and not _TRACEPOINT.match(self.target)
        ):
            raise ValueError(f"tracepoint target {self.target!r} is not 'category/name'")
        if (
            self.type == AttachKind.RAW_TRACEPOINT
            and self.target
            and not _RAW_TRACEPOINT.match(self.target)
        ):
            raise ValueError(f"raw tracepoint target {self.target!r} is not a tracepoint name")
        return self


_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _check_label(key: str, value: str | None = None) -> None:
    if not _LABEL_KEY.match(key):
        raise ValueError(f"invalid label key {key!r}")
    if value is not None and not _LABEL_VALUE.match(value):
        raise ValueError(f"invalid label value {value!r} for key {key!r}")


def _valid_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        _check_label(key, value)
    return labels


Labels = Annotated[dict[str, str], AfterValidator(_valid_labels)]


class LabelRequirement(_Spec):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelRequirement:
        _check_label(self.key)
        for value in self.values:
            _check_label(self.key, value)
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        match self.operator:
            case "In":
                return labels.get(self.key) in self.values
            case "NotIn":
                return labels.get(self.key) not in self.values
            case "Exists":
                return self.key in labels
            case "DoesNotExist":
                return self.key not in labels


class LabelSelector(_Spec):
    """Kubernetes label selector; the empty selector matches everything."""

    match_labels: Labels = Field(default_factory=dict)
    match_expressions: tuple[LabelRequirement, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            requirement.matches(labels) for requirement in self.match_expressions
        )

    def narrowed(self, extra: LabelSelector) -> LabelSelector:
        """What both select: ``extra``'s terms added as requirements (so ``tier=edge``
        narrowing ``tier=core`` selects nothing, rather than replacing it)."""
        equalities = tuple(
            LabelRequirement(key=key, operator="In", values=(value,))
            for key, value in extra.match_labels.items()
        )
        return self.model_copy(
            update={
                "match_expressions": (
                    *self.match_expressions,
                    *equalities,
                    *extra.match_expressions,
                )
            }
        )

    def describe(self) -> str:
        """The string form ``parse_selector`` reads back; empty when it selects all."""
        parts = [f"{key}={value}" for key, value in self.match_labels.items()]
        for requirement in self.match_expressions:
            values = ",".join(requirement.values)
            parts.append(
                {
                    "In": f"{requirement.key} in ({values})",
                    "NotIn": f"{requirement.key} notin ({values})",
                    "Exists": requirement.key,
                    "DoesNotExist": f"!{requirement.key}",
                }[requirement.operator]
            )
        return ",".join(parts)


class SelectorSyntaxError(ValueError):
    """A selector string that does not parse; the message says where and why."""


# One requirement of a kubectl-style selector: `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
# `k notin (a,b)`, `k` (exists) or `!k` (does not exist).
_REQUIREMENT = re.compile(
    r"""\s*(?:
        (?P<absent>!)\s*(?P<absent_key>[^\s=!(),]+)
      | (?P<set_key>[^\s=!(),]+)\s+(?P<set_op>in|notin)\s*\((?P<values>[^()]*)\)
      | (?P<key>[^\s=!(),]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s=!(),]*))?
    )\s*(?:,|$)""",
    re.VERBOSE,
)


def parse_selector(text: str) -> LabelSelector:
    """A label selector from the string form ``kubectl -l`` takes (``tier=edge,zone in
    (a,b),!canary``): the same requirements a ``nodeSelector`` holds, typed on one line.
    The empty string selects everything."""
    labels: dict[str, str] = {}
    requirements: list[LabelRequirement] = []
    position, text = 0, text.strip()
    while position < len(text):
        match = _REQUIREMENT.match(text, position)
        if match is None or match.end() == position:
            raise SelectorSyntaxError(
                f"selector {text!r}: cannot parse from column {position + 1}: "
                f"{text[position : position + 20]!r}"
            )
        position = match.end()
        try:
            if match["absent"]:
                requirements.append(
                    LabelRequirement(key=match["absent_key"], operator="DoesNotExist")
                )
            elif match["set_key"]:
                values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
                operator: Literal["In", "NotIn"] = "In" if match["set_op"] == "in" else "NotIn"
                requirements.append(
                    LabelRequirement(key=match["set_key"], operator=operator, values=values)
                )
            elif match["op"] in ("=", "=="):
                _check_label(match["key"], match["value"])
                if labels.get(match["key"], match["value"]) != match["value"]:
                    raise ValueError(f"{match['key']} cannot equal two values")
                labels[match["key"]] = match["value"]
            elif match["op"] == "!=":
                requirements.append(
                    LabelRequirement(key=match["key"], operator="NotIn", values=(match["value"],))
                )
            else:
                requirements.append(LabelRequirement(key=match["key"], operator="Exists"))
        except ValueError as error:
            reason = error.errors()[0]["msg"] if hasattr(error, "errors") else str(error)
            raise SelectorSyntaxError(f"selector {text!r}: {reason}") from None
    return LabelSelector(match_labels=labels, match_expressions=tuple(requirements))


_STEP = re.compile(r"^([1-9][0-9]*|([1-9][0-9]?|100)%)$")


class RolloutStrategy(_Spec):
    """How a change reaches the selected nodes: in steps, each baked before the next."""

    steps: tuple[str, ...] = Field(
        default=("100%",),
        description="Cumulative targets: a node count ('1') or a share ('25%'); ends at 100%.",
        # For the CRD only: the validator below says more than a pattern mismatch would.
        json_schema_extra={"items": {"type": "string", "pattern": _STEP.pattern}},
    )
    bake_seconds: float = Field(default=0.0, ge=0, le=86_400)
    failure_budget: int = Field(
        default=0, ge=0, description="Failed nodes tolerated before the rollout stops."
    )
    auto_rollback: bool = Field(
        default=True, description="Return updated nodes to the previous version on failure."
    )
    progress_deadline_seconds: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="How long a step waits for its nodes to report. Past it, nodes that "
        "stopped heartbeating are dealt with as unreachableNodes says; nodes still "
        "heartbeating are waited for.",
    )
    unreachable_nodes: Literal["Skip", "Fail"] = Field(
        default="Skip",
        description="Nodes of a step that stopped heartbeating and have not reported by the "
        "progress deadline: Skip leaves them out (they get the new version when they come "
        "back), Fail counts each against the failure budget.",
    )

    @model_validator(mode="after")
    def _steps_are_targets(self) -> RolloutStrategy:
        for step in self.steps:
            if not _STEP.match(step):
                raise ValueError(f"rollout step {step!r} is neither a node count nor 1%..100%")
        return self


class BpfProgramSpec(_Spec):
    artifact: ArtifactRef
    attach: tuple[AttachPoint, ...] = Field(min_length=1)
    config: dict[str, ConfigValue] = Field(
        default_factory=dict, description="Values for the object's const volatile globals."
    )
    node_selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Nodes to run on; empty selects every node."
    )
    rollout: RolloutStrategy = Field(default_factory=RolloutStrategy)


# --------------------------------------------------------------------- the resources
#
# The custom resources of ``bpfleet.io/v1alpha1``. The CRD YAML is rendered from these
# models; the ``NetworkPolicy`` spec lives in ``netpol.models``.

API_GROUP = "bpfleet.io"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"


class ObjectMeta(BaseModel):
    """What a manifest in Git may say about itself; the cluster fills in the rest."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    name: ProgramName
    namespace: str | None = None
    labels: Labels = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class BpfProgram(_Spec):
    """A ``BpfProgram`` document: cluster-scoped, since a node runs one program by name."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["bpfleet.io/v1alpha1"]
    kind: Literal["BpfProgram"]
    metadata: ObjectMeta
    spec: BpfProgramSpec


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as ``1m``, ``30s`` or ``1h30m``."""
    match = _DURATION.match(text)
    if not text or match is None:
        raise ValueError(f"{text!r} is not a duration like '30s', '5m' or '1h'")
    hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def _duration(text: str) -> str:
    if parse_duration(text) < 1:
        raise ValueError("interval must be at least 1s")
    return text


# The pattern repeats _DURATION so the CRD refuses a malformed interval before the operator.
Duration = Annotated[str, StringConstraints(pattern=_DURATION.pattern), AfterValidator(_duration)]


class GitRef(_Spec):
    """Which revision to follow: a branch (its tip), a tag, or one fixed commit."""

    branch: str | None = None
    tag: str | None = None
    commit: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{7,40}$")] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> GitRef:
        if sum(value is not None for value in (self.branch, self.tag, self.commit)) > 1:
            raise ValueError("ref takes one of branch, tag or commit")
        return self


class SecretRef(_Spec):
    name: ProgramName


# Where a repository may be. Git reads a leading '-' as an option (--upload-pack runs a
# command), '<helper>::' as a remote helper (ext:: runs one too), and plain http and
# git:// as a fine way to send credentials and manifests in the clear: none of that is
# an accepted form. Local forms are accepted here and refused by the operator unless it
# allows local sources: that depends on where it runs, not on the document. The pattern
# is also the CRD's, so the API server refuses the same (RE2, Rust and Python agree on it).
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
_USER = r"[A-Za-z0-9_][A-Za-z0-9._~-]*"
_PORT = r"(?::[0-9]{1,5})?"
GIT_URL_PATTERN = (
    rf"^(?:https://{_HOST}{_PORT}(?:/\S*)?"
    rf"|ssh://(?:{_USER}@)?{_HOST}{_PORT}/\S+"
    rf"|{_USER}@{_HOST}:[^\s:]\S*"
    r"|file:///\S+"
    r"|/[^\x00-\x1f\x7f]*)$"
)
_GIT_URL = re.compile(GIT_URL_PATTERN)
_SCP_LIKE = re.compile(rf"^{_USER}@(?P<host>{_HOST}):")
GIT_URL_FORMS = (
    "https://host/path, ssh://[user@]host[:port]/path or user@host:path "
    "(file:///path and /path only where the operator allows local sources)"
)


@dataclass(frozen=True)
class GitUrl:
    """What a GitSource URL reaches: over which transport, on which host."""

    transport: Literal["https", "ssh", "local"]
    host: str | None  # lower case, without brackets; None for local repositories
    path: str = ""  # local repositories only


def parse_git_url(url: str) -> GitUrl:
    """Sort a repository URL; ``ValueError`` saying why for anything but the accepted forms."""
    if not url.isprintable() or _GIT_URL.fullmatch(url) is None:
        if url.startswith("http://"):
            reason = "plain http is refused (credentials and manifests would travel in clear)"
        elif re.match(r"^https://[^/]*@", url):
            reason = "credentials belong in the secretRef, never in the URL"
        else:
            reason = f"{url!r} is not an accepted form"
        raise ValueError(f"url: {reason}; use {GIT_URL_FORMS}")
    if url.startswith("/"):
        return GitUrl("local", None, url)
    if url.startswith("file://"):
        return GitUrl("local", None, url.removeprefix("file://"))
    if url.startswith(("https://", "ssh://")):
        parts = urlsplit(url)
        transport: Literal["https", "ssh"] = "https" if parts.scheme == "https" else "ssh"
        return GitUrl(transport, parts.hostname)
    scp = _SCP_LIKE.match(url)
    assert scp is not None  # the pattern matched one of its forms
    return GitUrl("ssh", scp["host"].strip("[]").lower())


def _git_url(url: str) -> str:
    parse_git_url(url)
    return url


# A forge's REST API: https only (a token goes with every request), no credentials, query
# or fragment in the URL.
FORGE_URL_PATTERN = rf"^https://{_HOST}{_PORT}(?:/[A-Za-z0-9._~/-]*)?$"
# owner/name (GitHub, Gitea), group/.../project or a numeric id (GitLab).
_FORGE_REPOSITORY = r"^(?:[0-9]+|[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)+)$"


class Forge(_Spec):
    """Where proposals become pull requests (merge requests on GitLab)."""

    type: Literal["github", "gitlab", "gitea"]
    api_url: str = Field(
        pattern=FORGE_URL_PATTERN,
        description=(
            "The forge's REST API: https://api.github.com (GitHub Enterprise: "
            "https://HOST/api/v3), https://HOST/api/v4 (GitLab), https://HOST/api/v1 (Gitea)."
        ),
    )
    repository: str = Field(
        pattern=_FORGE_REPOSITORY,
        max_length=255,
        description="owner/name (GitHub, Gitea); the project's path or numeric id (GitLab).",
    )
    secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "Secret whose 'token' (else 'password') authenticates to the forge; its "
            "bpfleet.io/git-host annotation must name the API's host. Absent: the "
            "source's secretRef."
        ),
    )

    @model_validator(mode="after")
    def _repository_fits_type(self) -> Forge:
        if self.type != "gitlab" and self.repository.count("/") != 1:
            raise ValueError(f"repository: {self.type} names a repository as owner/name")
        return self


class ProposalSettings(_Spec):
    """What proposals (changes written through the API) may do with this source."""

    forge: Forge | None = Field(
        default=None, description="Open a pull request for each proposal on this forge."
    )
    dev_merge: bool = Field(
        default=False,
        description=(
            "Local repositories only (the local fleet): the API may merge a proposal into "
            "the tracked branch. Off: a person merges on the forge, as review requires."
        ),
    )


class GitSourceSpec(_Spec):
    url: Annotated[str, AfterValidator(_git_url)] = Field(
        json_schema_extra={"pattern": GIT_URL_PATTERN},
        description=(
            "The repository: https://host/path, ssh://[user@]host/path or user@host:path; "
            "file:///path or /path only where the operator allows local sources."
        ),
    )
    ref: GitRef = Field(
        default_factory=lambda: GitRef(branch="main"),
        description="A branch (its tip), a tag or one commit; the branch main when absent.",
    )
    path: str = Field(default=".", description="Directory of the manifests in the repository.")
    interval: Duration = Field(default="1m", description="How often to fetch, e.g. 30s, 5m.")
    secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "Secret with the credentials: username and password (HTTPS), or identity "
            "and known_hosts (SSH)."
        ),
    )
    webhook_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret whose 'token' signs push notifications (X-Hub-Signature-256).",
    )
    trusted_signing_keys: tuple[str, ...] = Field(
        default=(),
        description="SSH public keys; when set, only commits signed by one of them apply.",
    )
    suspend: bool = Field(default=False, description="Stop fetching, applying and pruning.")
    prune: bool = Field(default=True, description="Delete what was removed from Git.")
    proposals: ProposalSettings = Field(
        default_factory=ProposalSettings,
        description="Changes proposed through the API: a pull request, or a dev merge.",
    )

    @model_validator(mode="after")
    def _relative_path(self) -> GitSourceSpec:
        if self.path.startswith("/") or ".." in self.path.split("/"):
            raise ValueError("path must be relative to the repository and stay inside it")
        if self.proposals.dev_merge and parse_git_url(self.url).transport != "local":
            raise ValueError(
                "proposals.devMerge: only for local repositories; elsewhere merge on the forge"
            )
        return self


class GitSource(_Spec):
    model_config = ConfigDict(extra="ignore")

    api_version: Literal["bpfleet.io/v1alpha1"]
    kind: Literal["GitSource"]
    metadata: ObjectMeta
    spec: GitSourceSpec


# ------------------------------------------------------------------------- statuses
#
# kstatus conventions, so ``kubectl wait --for=condition=Ready`` and Flux and Argo CD
# health checks understand the objects: Ready, Reconciling, Stalled, observedGeneration.


class ConditionType(StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


class Condition(_Spec):
    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: str = Field(description="RFC 3339.")
    observed_generation: int | None = None


# One condition per type: a list-map lets status patches merge conditions by type.
Conditions = Annotated[
    tuple[Condition, ...],
    Field(
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
    ),
]


class ProgramCounts(_Spec):
    desired: int = 0
    attached: int = 0
    failed: int = 0
    incompatible: int = 0
    pending: int = 0


class BpfProgramStatus(_Spec):
    observed_generation: int | None = None
    conditions: Conditions = ()
    revision: str = Field(default="", description="The Git revision the spec came from.")
    ready: str = Field(default="", description="attached/desired, e.g. 3/3.")
    counts: ProgramCounts = Field(default_factory=ProgramCounts)
    api_generation: int | None = Field(
        default=None, description="The program's generation in the fleet API."
    )


class PolicyCounts(_Spec):
    desired: int = 0
    enforcing: int = 0
    failed: int = 0
    pending: int = 0


class NetworkPolicyStatus(_Spec):
    observed_generation: int | None = None
    conditions: Conditions = ()
    revision: str = ""
    ready: str = Field(default="", description="enforcing/desired, e.g. 2/2.")
    counts: PolicyCounts = Field(default_factory=PolicyCounts)
    api_generation: int | None = None


class SourceError(_Spec):
    """One thing wrong with a revision, located so a person can fix it."""

    file: str
    line: int | None = None
    field: str = ""
    message: str


class SourceFile(_Spec):
    """A manifest file's text at a revision, as the operator read it: what the policy
    editor opens (the files holding policies of an applied revision, and the files a
    rejected revision's errors name)."""

    revision: str
    path: str
    text: str


SOURCE_FILES_MAX_BYTES = 512 * 1024  # of text in one report: small beside the body cap
SOURCE_FILES_MAX = 200  # files in one report


class InventoryEntry(_Spec):
    kind: Literal["BpfProgram", "NetworkPolicy"]
    name: str
    namespace: str | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace + '/' if self.namespace else ''}{self.name}"


class HistoryEntry(_Spec):
    revision: str
    time: str = Field(description="RFC 3339.")
    result: Literal["Applied", "Rejected", "Failed"]
    message: str = ""


class GitSourceStatus(_Spec):
    observed_generation: int | None = None
    conditions: Conditions = ()
    last_fetched_revision: str = ""
    last_attempted_revision: str = ""
    last_applied_revision: str = ""
    errors: tuple[SourceError, ...] = ()
    history: tuple[HistoryEntry, ...] = Field(default=(), description="Newest first; a few.")
    inventory: tuple[InventoryEntry, ...] = ()
