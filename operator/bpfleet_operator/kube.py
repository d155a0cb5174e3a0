"""The only module of ours that talks to Kubernetes (kopf itself aside): custom objects,
their status, and Secrets, through the official client.

Every call has a timeout (the client has none of its own, and a half-open connection
would hang a GitSource's daemon for good), and every failure is one of
``bpfleet_core.failures``.

``KubeTarget`` is where a GitSource applies its documents in a cluster: each becomes a
custom object labelled with the source that owns it. It never adopts an object that
has no owner label or another owner, and deletes (prunes) only objects whose label
names the source doing it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from bpfleet_core import bundles, failures
from bpfleet_core.resources import API_GROUP, API_VERSION, GROUP_VERSION, InventoryEntry
from bpfleet_operator import gitsource

SOURCE_LABEL = f"{API_GROUP}/gitsource"
REVISION_ANNOTATION = f"{API_GROUP}/revision"
PLURALS = {"BpfProgram": "bpfprograms", "NetworkPolicy": "networkpolicies"}
TIMEOUT_SECONDS = 30.0
T = TypeVar("T")


def source_label(source: str) -> str:
    """The owner label's value for ``<namespace>/<name>`` (a label value has no '/')."""
    return source.replace("/", ".")


def _failure(error: Exception, what: str) -> failures.Failure:
    if isinstance(error, ApiException) and error.status:
        message = f"{what}: {error.status} {error.reason}"
        return failures.for_status(error.status, message) or failures.TemporaryFailure(message)
    # No answer: refused, reset, timed out, or a proxy's garbage. Worth another try.
    return failures.TemporaryFailure(f"{what}: Kubernetes API unreachable: {error}")


def connect(url: str | None) -> client.ApiClient:
    """A client for ``url`` (no credentials: tests and local proxies), else in-cluster
    credentials, else the kubeconfig."""
    if url is not None:
        configuration = client.Configuration()
        configuration.host = url
        return client.ApiClient(configuration)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


@dataclass(frozen=True)
class Secret:
    data: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)


class Kube:
    def __init__(self, api_client: client.ApiClient, timeout: float = TIMEOUT_SECONDS) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        # (connect, read): a dead server is noticed sooner than a slow answer.
        self.timeout = (min(5.0, timeout), timeout)

    def _send(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call(...)`` within the timeout; its failure as a ``failures.Failure``."""
        try:
            return call(*args, **kwargs, _request_timeout=self.timeout)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            raise _failure(error, what) from None

    def _custom(self, verb: str, namespace: str | None, part: str = "") -> Callable[..., Any]:
        """``<verb>_cluster_custom_object<part>`` or ``<verb>_namespaced_custom_object<part>``
        with the group and version filled in: the client spells each call twice, by scope."""
        scope = "cluster" if namespace is None else "namespaced"
        method = getattr(self.custom, f"{verb}_{scope}_custom_object{part}")

        def call(*args: Any, **kwargs: Any) -> Any:
            where = () if namespace is None else (namespace,)
            return method(API_GROUP, API_VERSION, *where, *args, **kwargs)

        return call

    def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            found = self._send(
                f"reading {plural}/{name}", self._custom("get", namespace), plural, name
            )
        except failures.NotFound:
            return None
        return dict(found)

    def create(self, plural: str, namespace: str | None, body: dict[str, Any]) -> None:
        what = f"creating {plural}/{body['metadata']['name']}"
        self._send(what, self._custom("create", namespace), plural, body)

    def patch(self, plural: str, namespace: str | None, name: str, body: dict[str, Any]) -> None:
        self._send(
            f"patching {plural}/{name}", self._custom("patch", namespace), plural, name, body
        )

    def patch_status(
        self, plural: str, namespace: str | None, name: str, status: Mapping[str, Any]
    ) -> None:
        what = f"writing the status of {plural}/{name}"
        call = self._custom("patch", namespace, "_status")
        self._send(what, call, plural, name, {"status": dict(status)})

    def delete(
        self, plural: str, namespace: str | None, name: str, *, uid: str | None = None
    ) -> None:
        """Delete it (absent already is fine); with ``uid``, only that very object."""
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=uid) if uid else None
        )
        try:
            self._send(
                f"deleting {plural}/{name}",
                self._custom("delete", namespace),
                plural,
                name,
                body=options,
            )
        except failures.NotFound:
            return

    def secret(self, namespace: str, name: str) -> Secret:
        """The Secret's data, decoded, and its annotations."""
        found = self._send(
            f"reading Secret {namespace}/{name}", self.core.read_namespaced_secret, name, namespace
        )
        data = {
            key: base64.b64decode(value).decode("utf-8")
            for key, value in (found.data or {}).items()
        }
        return Secret(data, dict(found.metadata.annotations or {}))


def custom_object(document: gitsource.Document, revision: str, source: str) -> dict[str, Any]:
    """The cluster object for a document from Git; plain ``networking.k8s.io/v1`` policies
    become bpfleet ones (enforced on every node), so one handler serves both."""
    if isinstance(document, bundles.ProgramDocument):
        kind, namespace = "BpfProgram", None
        name, labels = document.name, dict(document.labels)
        spec = document.spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    else:
        policy = document.policy
        kind, namespace, name = "NetworkPolicy", policy.metadata.namespace, policy.metadata.name
        labels = dict(policy.metadata.labels or {})
        spec = policy.spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {**labels, SOURCE_LABEL: source_label(source)},
        "annotations": {REVISION_ANNOTATION: revision},
    }
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": GROUP_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


def _owner(live: Mapping[str, Any]) -> str | None:
    return (live.get("metadata", {}).get("labels") or {}).get(SOURCE_LABEL)


class KubeTarget:
    """Applies a GitSource's documents as custom objects; corrects hand-made drift."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def apply(self, document: gitsource.Document, revision: str, source: str) -> bool:
        body = custom_object(document, revision, source)
        plural = PLURALS[body["kind"]]
        meta = body["metadata"]
        namespace, name = meta.get("namespace"), meta["name"]
        live = self.kube.get(plural, namespace, name)
        if live is None:
            self.kube.create(plural, namespace, body)
            return True
        owner = _owner(live)
        if owner is None:
            raise failures.Conflict(
                f"{body['kind']} {name} exists and no GitSource made it; it is not adopted "
                "(delete it, or rename the one in Git)"
            )
        if owner != source_label(source):
            raise failures.Conflict(f"{body['kind']} {name} belongs to GitSource {owner}")
        if not _differs(live, body):
            return False
        # The whole spec goes in as one value: a merge patch of the old and the new
        # would keep fields that Git no longer has.
        patch = {"metadata": meta, "spec": _replace_removed(live.get("spec") or {}, body["spec"])}
        self.kube.patch(plural, namespace, name, patch)
        return True

    def delete(self, entry: InventoryEntry, source: str) -> None:
        """Delete the object only while ``source`` owns it: one made by hand or by
        another source since (after ours was deleted) under the same name stays."""
        plural = PLURALS[entry.kind]
        live = self.kube.get(plural, entry.namespace, entry.name)
        if live is None or _owner(live) != source_label(source):
            return
        uid = live.get("metadata", {}).get("uid")
        self.kube.delete(plural, entry.namespace, entry.name, uid=uid)


def _differs(live: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    meta = live.get("metadata", {})
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return (
        live.get("spec") != wanted["spec"]
        or any(labels.get(k) != v for k, v in wanted["metadata"]["labels"].items())
        or any(annotations.get(k) != v for k, v in wanted["metadata"]["annotations"].items())
    )


def _replace_removed(live: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch turning ``live`` into ``wanted``: keys gone from ``wanted`` set to null."""
    patch: dict[str, Any] = {key: None for key in live if key not in wanted}
    for key, value in wanted.items():
        old = live.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            patch[key] = _replace_removed(old, value)
        else:
            patch[key] = value
    return patch
