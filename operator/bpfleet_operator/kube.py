"""The only module of ours that talks to Kubernetes (kopf itself aside): custom objects,
their status, and Secrets, through the official client.

``KubeTarget`` is where a GitSource applies its documents in a cluster: each becomes a
custom object labelled with the source that owns it, so pruning never touches objects
made by hand or by another source.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from bpfleet_core import bundles
from bpfleet_core.resources import API_GROUP, API_VERSION, GROUP_VERSION, InventoryEntry
from bpfleet_operator import gitsource

SOURCE_LABEL = f"{API_GROUP}/gitsource"
REVISION_ANNOTATION = f"{API_GROUP}/revision"
PLURALS = {"BpfProgram": "bpfprograms", "NetworkPolicy": "networkpolicies"}


class KubeError(Exception):
    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def _error(error: ApiException, what: str) -> KubeError:
    # 4xx other than conflicts and throttling will fail the same way next time.
    permanent = 400 <= (error.status or 500) < 500 and error.status not in (409, 429)
    return KubeError(f"{what}: {error.status} {error.reason}", permanent=permanent)


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


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    def _call(self, verb: str, namespace: str | None, *args: Any) -> Any:
        """``<verb>_cluster_custom_object`` or ``<verb>_namespaced_custom_object``: the
        client spells each operation twice, by scope."""
        if namespace is None:
            return getattr(self.custom, f"{verb}_cluster_custom_object")(
                API_GROUP, API_VERSION, *args
            )
        return getattr(self.custom, f"{verb}_namespaced_custom_object")(
            API_GROUP, API_VERSION, namespace, *args
        )

    def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return dict(self._call("get", namespace, plural, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise _error(error, f"reading {plural}/{name}") from None

    def create(self, plural: str, namespace: str | None, body: dict[str, Any]) -> None:
        try:
            self._call("create", namespace, plural, body)
        except ApiException as error:
            raise _error(error, f"creating {plural}/{body['metadata']['name']}") from None

    def patch(self, plural: str, namespace: str | None, name: str, body: dict[str, Any]) -> None:
        try:
            self._call("patch", namespace, plural, name, body)
        except ApiException as error:
            raise _error(error, f"patching {plural}/{name}") from None

    def patch_status(
        self, plural: str, namespace: str | None, name: str, status: Mapping[str, Any]
    ) -> None:
        verb = "patch_cluster" if namespace is None else "patch_namespaced"
        scope = () if namespace is None else (namespace,)
        try:
            getattr(self.custom, f"{verb}_custom_object_status")(
                API_GROUP, API_VERSION, *scope, plural, name, {"status": dict(status)}
            )
        except ApiException as error:
            raise _error(error, f"writing the status of {plural}/{name}") from None

    def delete(self, plural: str, namespace: str | None, name: str) -> None:
        try:
            self._call("delete", namespace, plural, name)
        except ApiException as error:
            if error.status != 404:
                raise _error(error, f"deleting {plural}/{name}") from None

    def secret(self, namespace: str, name: str) -> dict[str, str]:
        """The Secret's data, decoded."""
        try:
            found = self.core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            raise _error(error, f"reading Secret {namespace}/{name}") from None
        return {
            key: base64.b64decode(value).decode("utf-8")
            for key, value in (found.data or {}).items()
        }


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
        "labels": {**labels, SOURCE_LABEL: source.replace("/", ".")},
        "annotations": {REVISION_ANNOTATION: revision},
    }
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": GROUP_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


class KubeTarget:
    """Applies a GitSource's documents as custom objects; corrects hand-made drift."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def apply(self, document: gitsource.Document, revision: str, source: str) -> bool:
        body = custom_object(document, revision, source)
        plural = PLURALS[body["kind"]]
        meta = body["metadata"]
        namespace, name = meta.get("namespace"), meta["name"]
        try:
            live = self.kube.get(plural, namespace, name)
            if live is None:
                self.kube.create(plural, namespace, body)
                return True
            owner = (live.get("metadata", {}).get("labels") or {}).get(SOURCE_LABEL)
            if owner not in (None, meta["labels"][SOURCE_LABEL]):
                raise gitsource.TargetError(
                    f"{body['kind']} {name} belongs to GitSource {owner}", permanent=True
                )
            if _differs(live, body):
                self.kube.patch(
                    plural,
                    namespace,
                    name,
                    # The whole spec goes in as one value: a merge patch of the old and
                    # the new would keep fields that Git no longer has.
                    {
                        "metadata": meta,
                        "spec": _replace_removed(live.get("spec") or {}, body["spec"]),
                    },
                )
                return True
            return False
        except KubeError as error:
            raise gitsource.TargetError(str(error), permanent=error.permanent) from None

    def delete(self, entry: InventoryEntry, source: str) -> None:
        try:
            self.kube.delete(PLURALS[entry.kind], entry.namespace, entry.name)
        except KubeError as error:
            raise gitsource.TargetError(str(error), permanent=error.permanent) from None


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
