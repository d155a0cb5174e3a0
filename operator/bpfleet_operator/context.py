"""What the handlers share: settings, the fleet API, the cluster, wake-up events, what
was last mirrored to the fleet, and how a GitSource's Secret becomes Git credentials."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from bpfleet_core import failures
from bpfleet_core.resources import API_GROUP, GitSourceSpec, parse_git_url
from bpfleet_operator import git, gitsource, kube
from bpfleet_operator.fleetapi import FleetApi
from bpfleet_operator.mirror import Mirror
from bpfleet_operator.settings import OperatorSettings

# Set by whoever owns a Secret: the Git hosts its credentials may be sent to (a comma
# separated list). Without it a GitSource could name the Secret with a URL of its own
# choosing and receive the credentials there.
GIT_HOST_ANNOTATION = f"{API_GROUP}/git-host"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def bind_credentials(url: str, secret_name: str, secret: kube.Secret) -> git.Credentials:
    """The Secret's credentials for ``url``, if the Secret says they are meant for its
    host; ``PermanentFailure`` otherwise (the Secret or the URL must change)."""
    hosts = {
        host.strip().lower()
        for host in secret.annotations.get(GIT_HOST_ANNOTATION, "").split(",")
        if host.strip()
    }
    target = parse_git_url(url).host
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
    data = secret.data
    return git.Credentials(
        username=data.get("username"),
        password=data.get("password"),
        identity=data.get("identity"),
        known_hosts=data.get("known_hosts"),
        ca=data.get("ca.crt"),
    )


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

    def scope(self, namespace: str) -> gitsource.Scope:
        """Where a GitSource of ``namespace`` may apply: anywhere for the namespaces
        trusted with the whole cluster, else its own namespace's policies."""
        trusted = self.settings.cluster_source_namespaces
        if trusted is None:
            trusted = [own_namespace()]
        if "*" in trusted or namespace in trusted:
            return gitsource.ANYWHERE
        return gitsource.Scope(namespace)
