"""What Kubernetes knows about the fleet, mirrored to the fleet API: each node's labels,
pod CIDRs and workloads, and each namespace's labels.

In a cluster these are the truth network policies are compiled against, so they come
from Kubernetes, not from what agents declare. Handlers say what Kubernetes holds; the
mirror pushes only what the API has not taken yet, so an unchanged object costs no
request. What could not be pushed is pushed again by ``run``, a loop of resyncs: a
node the API does not know yet (404: its agent has not registered), an API that was
unreachable, and a node whose labels the API lost (an agent that registered again
replaces them) are all noticed there, with one listing of the fleet's nodes per resync.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bpfleet_core import failures
from bpfleet_operator.fleetapi import FleetApi

log = logging.getLogger(__name__)

Labels = Mapping[str, str]


@dataclass(frozen=True)
class NodeView:
    """A node as Kubernetes holds it; None: not known yet."""

    labels: Labels | None = None
    pod_cidrs: tuple[str, ...] | None = None
    workloads: tuple[Mapping[str, Any], ...] | None = None


class Mirror:
    def __init__(self, api: FleetApi) -> None:
        self.api = api
        self._lock = threading.Lock()
        self._wanted: dict[str, NodeView] = {}
        self._pushed: dict[str, NodeView] = {}
        self._node_locks: dict[str, threading.Lock] = {}
        self._namespaces_wanted: dict[str, dict[str, str]] = {}
        self._namespaces: dict[str, dict[str, str]] = {}  # what the API took
        self._deleted: set[str] = set()  # namespaces whose removal the API has not taken

    # -- nodes

    def node(
        self,
        name: str,
        *,
        labels: Labels | None = None,
        pod_cidrs: Sequence[str] | None = None,
        workloads: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Kubernetes holds this of the node now (None: unchanged); push what is new."""
        update: dict[str, Any] = {}
        if labels is not None:
            update["labels"] = dict(labels)
        if pod_cidrs is not None:
            update["pod_cidrs"] = tuple(pod_cidrs)
        if workloads is not None:
            update["workloads"] = tuple(workloads)
        with self._lock:
            self._wanted[name] = replace(self._wanted.get(name, NodeView()), **update)
        self._push(name)

    def node_gone(self, name: str) -> None:
        with self._lock:
            self._wanted.pop(name, None)
            self._pushed.pop(name, None)

    def resync(self) -> None:
        """Push again whatever the API lacks: all of a node that registered since or
        lost labels it was given, whatever was never taken, and the namespaces."""
        try:
            fleet = self.api.node_labels()
        except failures.Failure as error:
            log.warning("not resynced with the fleet: %s", error)
            return
        with self._lock:
            for name, wanted in self._wanted.items():
                known = fleet.get(name)
                lost = known is not None and any(
                    known.get(key) != value for key, value in (wanted.labels or {}).items()
                )
                if known is None or lost:
                    self._pushed.pop(name, None)
            # A node the fleet does not list has no agent yet: nothing to push to.
            nodes = sorted(name for name in self._wanted if name in fleet)
            namespaces = {
                name: labels
                for name, labels in self._namespaces_wanted.items()
                if self._namespaces.get(name) != labels
            }
        for name in nodes:
            self._push(name)
        for name, labels in namespaces.items():
            self.namespace(name, labels)
        self._retry_deletions()

    def run(self, stop: threading.Event, interval: float) -> None:
        """Resync every ``interval`` seconds until ``stop``."""
        while not stop.wait(interval):
            self.resync()

    def _push(self, name: str) -> None:
        with self._lock:
            lock = self._node_locks.setdefault(name, threading.Lock())
        with lock:  # one push per node at a time, so the last one sent is the newest
            with self._lock:
                wanted = self._wanted.get(name)
                pushed = self._pushed.get(name, NodeView())
            if wanted is None:
                return
            try:
                taken = self._send(name, wanted, pushed)
            except failures.Failure as error:
                log.warning("node %s: not mirrored to the fleet: %s", name, error)
                return
            with self._lock:
                if name in self._wanted:
                    self._pushed[name] = taken

    def _send(self, name: str, wanted: NodeView, pushed: NodeView) -> NodeView:
        """Send what differs; what the API holds afterwards. A 404 (the node is not
        registered) leaves it holding nothing: the next resync tries again."""
        sends: tuple[tuple[str, Callable[[str, Any], bool]], ...] = (
            ("labels", self.api.set_node_labels),
            ("pod_cidrs", self.api.set_pod_cidrs),
            ("workloads", self.api.set_workloads),
        )
        for part, send in sends:
            value = getattr(wanted, part)
            if value is None or value == getattr(pushed, part):
                continue
            if not send(name, value):
                return NodeView()
            pushed = replace(pushed, **{part: value})
        return pushed

    # -- namespaces

    def namespace(self, name: str, labels: Labels) -> None:
        """The namespace's labels, pushed unless the API has them already; deletions
        that failed before are tried again here too."""
        wanted = dict(labels)
        with self._lock:
            self._deleted.discard(name)  # it exists (again): never remove it now
            self._namespaces_wanted[name] = wanted
        self._retry_deletions()
        with self._lock:
            if self._namespaces.get(name) == wanted:
                return
        try:
            self.api.set_namespace_labels(name, wanted)
        except failures.Failure as error:
            log.warning("namespace %s: labels not mirrored to the fleet: %s", name, error)
            return
        with self._lock:
            self._namespaces[name] = wanted

    def namespace_gone(self, name: str) -> None:
        with self._lock:
            self._namespaces.pop(name, None)
            self._namespaces_wanted.pop(name, None)
            self._deleted.add(name)
        self._retry_deletions()

    def _retry_deletions(self) -> None:
        with self._lock:
            pending = sorted(self._deleted)
        for name in pending:
            try:
                self.api.delete_namespace(name)
            except failures.Failure as error:
                log.warning("namespace %s: not removed from the fleet: %s", name, error)
                continue
            with self._lock:
                self._deleted.discard(name)
