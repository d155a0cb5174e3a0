"""What the handlers share: settings, the fleet API, the cluster, and wake-up events."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from bpfleet_core.resources import GitSourceSpec
from bpfleet_operator import git, kube
from bpfleet_operator.fleetapi import FleetApi
from bpfleet_operator.settings import OperatorSettings


@dataclass
class Context:
    settings: OperatorSettings
    api: FleetApi
    kube: kube.Kube
    sources: dict[tuple[str, str], GitSourceSpec] = field(default_factory=dict)
    last_message: dict[str, str] = field(default_factory=dict)
    node_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    _wakers: dict[tuple[str, str], threading.Event] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

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
            data = self.kube.secret(namespace, spec.webhook_secret_ref.name)
        except kube.KubeError:
            return None
        token = data.get("token")
        return token.encode() if token else None

    def credentials(self, namespace: str, spec: GitSourceSpec) -> git.Credentials:
        if spec.secret_ref is None:
            return git.Credentials()
        data = self.kube.secret(namespace, spec.secret_ref.name)
        return git.Credentials(
            username=data.get("username"),
            password=data.get("password"),
            identity=data.get("identity"),
            known_hosts=data.get("known_hosts"),
            ca=data.get("ca.crt"),
        )
