"""What the handlers share: settings, the fleet API, the cluster, wake-up events, what
was last mirrored to the fleet, the proposals' writer, and how a GitSource's Secret
becomes Git credentials (and a forge token)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError

from bpfleet_core import failures
from bpfleet_core.proposals import SourceKey
from bpfleet_core.resources import API_GROUP, GitSourceSpec, parse_git_url
from bpfleet_operator import git, gitsource, kube, proposer
from bpfleet_operator.fleetapi import FleetApi
from bpfleet_operator.mirror import Mirror
from bpfleet_operator.settings import OperatorSettings

# Set by whoever owns a Secret: the Git hosts its credentials may be sent to (a comma
# separated list). Without it a GitSource could name the Secret with a URL of its own
# choosing and receive the credentials there.
GIT_HOST_ANNOTATION = f"{API_GROUP}/git-host"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _check_host(target: str | None, secret_name: str, secret: kube.Secret) -> None:
    """``PermanentFailure`` unless the Secret's annotation names ``target``."""
    hosts = {
        host.strip().lower()
        for host in secret.annotations.get(GIT_HOST_ANNOTATION, "").split(",")
        if host.strip()
    }
    if not hosts:
        raise failures.PermanentFailure(
            f"Secret {secret_name} has no {GIT_HOST_ANNOTATION} annotation: set it to the "
            "Git host its credentials are for"
        )
    if target not in hosts:
        raise failures.PermanentFailure(
            f"Secret {secret_name} is for {', '.join(sorted(hosts))}, not {target} "
            f"(its {GIT_HOST_ANNOTATION} annotation)"
        )


def bind_credentials(url: str, secret_name: str, secret: kube.Secret) -> git.Credentials:
    """The Secret's credentials for ``url``, if the Secret says they are meant for its
    host; ``PermanentFailure`` otherwise (the Secret or the URL must change)."""
    _check_host(parse_git_url(url).host, secret_name, secret)
    data = secret.data
    return git.Credentials(
        username=data.get("username"),
        password=data.get("password"),
        identity=data.get("identity"),
        known_hosts=data.get("known_hosts"),
        ca=data.get("ca.crt"),
    )


def bind_forge_token(api_url: str, secret_name: str, secret: kube.Secret) -> str | None:
    """The Secret's forge token, if the Secret says it is meant for the API's host."""
    _check_host((urlsplit(api_url).hostname or "").lower(), secret_name, secret)
    return proposer.forge_token(dict(secret.data))


def own_namespace() -> str:
    """The namespace the operator runs in (its service account's), or ``default``
    outside a cluster."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


@dataclass
class Context:
    settings: OperatorSettings
    api: FleetApi
    kube: kube.Kube
    sources: dict[tuple[str, str], GitSourceSpec] = field(default_factory=dict)
    last_message: dict[str, str] = field(default_factory=dict)
    mirror: Mirror = field(init=False)
    proposals: proposer.Proposer | None = None  # set by the runner
    _wakers: dict[tuple[str, str], threading.Event] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.mirror = Mirror(self.api)

    def waker(self, namespace: str, name: str) -> threading.Event:
        with self._lock:
            return self._wakers.setdefault((namespace, name), threading.Event())

    def wake(self, namespace: str, name: str) -> None:
        self.waker(namespace, name).set()

    def webhook_secret(self, namespace: str, name: str) -> bytes | None:
        """The push secret of a known source with a webhook Secret; None otherwise."""
        spec = self.sources.get((namespace, name))
        if spec is None or spec.webhook_secret_ref is None:
            return None
        try:
            secret = self.kube.secret(namespace, spec.webhook_secret_ref.name)
        except failures.Failure:
            return None
        token = secret.data.get("token")
        return token.encode() if token else None

    def credentials(self, namespace: str, spec: GitSourceSpec) -> git.Credentials:
        if spec.secret_ref is None:
            return git.Credentials()
        name = spec.secret_ref.name
        return bind_credentials(spec.url, name, self.kube.secret(namespace, name))

    def access(self, source: SourceKey) -> proposer.Access | None:
        """For proposals: the source's spec (as last seen, or read from the cluster when
        its daemon has not run yet), its credentials and its forge token; None when no
        such GitSource exists here."""
        spec = self.sources.get((source.namespace, source.name))
        if spec is None:
            found = self.kube.get("gitsources", source.namespace, source.name)
            if found is None:
                return None
            try:
                spec = GitSourceSpec.model_validate(found.get("spec", {}))
            except ValidationError as error:
                raise failures.PermanentFailure(
                    f"GitSource {source}: invalid spec: {error}"
                ) from None
        credentials = self.credentials(source.namespace, spec)
        forge = spec.proposals.forge
        ref = (forge.secret_ref or spec.secret_ref) if forge is not None else None
        if forge is None or ref is None:
            return proposer.Access(spec, credentials)
        secret = self.kube.secret(source.namespace, ref.name)
        token = bind_forge_token(forge.api_url, ref.name, secret)
        return proposer.Access(spec, credentials, token, secret.data.get("ca.crt"))

    def scope(self, namespace: str) -> gitsource.Scope:
        """Where a GitSource of ``namespace`` may apply: anywhere for the namespaces
        trusted with the whole cluster, else its own namespace's policies."""
        trusted = self.settings.cluster_source_namespaces
        if trusted is None:
            trusted = [own_namespace()]
        if "*" in trusted or namespace in trusted:
            return gitsource.ANYWHERE
        return gitsource.Scope(namespace)
