"""A Kubernetes API for the operator's tests: kmock's KubernetesEmulator on a real port.

No kube-apiserver can run here. The emulator keeps objects in memory and serves list,
watch, get, create, patch and delete over HTTP; what the API server would add itself
is added here: ``uid``, ``resourceVersion``, ``generation`` (grown on spec changes)
and ``creationTimestamp``. Tests change objects through HTTP, never through the store.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import attrs
import httpx
import kmock
from kmock._internal import parsing, rendering  # the request type the emulator's hook receives

from tests.crdschemas import crd_errors

GROUP_VERSION = "bpfleet.io/v1alpha1"
CUSTOM_RESOURCES = {
    "bpfleet.io/v1alpha1/bpfprograms": dict(kind="BpfProgram", namespaced=False),
    "bpfleet.io/v1alpha1/networkpolicies": dict(kind="NetworkPolicy", namespaced=True),
    "bpfleet.io/v1alpha1/gitsources": dict(kind="GitSource", namespaced=True),
}


_parse_path = parsing.parse_path


def _parse_core_namespaces(path: str) -> parsing.ParsedPath:
    """kmock 0.8 reads every ``/api/v1/namespaces/...`` path as a namespace prefix. In the
    core group ``namespaces`` is itself a (cluster-scoped) resource unless a namespaced
    resource follows, which is how the API server reads it: ``/api/v1/namespaces`` and
    ``/api/v1/namespaces/<name>`` are the Namespace objects."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        name = parts[3] if len(parts) == 4 else None
        return parsing.ParsedPath(group="", version="v1", plural="namespaces", name=name)
    return _parse_path(path)


parsing.parse_path = _parse_core_namespaces


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesEmulator):
    """The emulator, plus the fields the API server owns."""

    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    async def _handle(self, request: rendering.Request) -> Any:
        data = request.data if isinstance(request.data, dict) else None
        if request.resource is not None and data is not None:
            meta = data.setdefault("metadata", {})
            meta["resourceVersion"] = str(next(self._versions))
            if request.action == kmock.action.CREATE:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("generation", 1)
                meta.setdefault(
                    "creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                )
            elif request.action == kmock.action.UPDATE and "spec" in data:
                current = self._current(request)
                if current is not None and current.get("spec") != _merged(
                    current.get("spec"), data["spec"]
                ):
                    meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
            if request.resource.group == "bpfleet.io":
                self._validate(request, data)
        return await super()._handle(request)

    def _validate(self, request: rendering.Request, data: dict[str, Any]) -> None:
        """Refuse what the CRD's schema refuses, as the API server does (422)."""
        if request.action == kmock.action.CREATE:
            document = data
        elif request.action == kmock.action.UPDATE:
            current = self._current(request)
            if current is None:
                return  # the emulator answers 404 itself
            document = _merged(current, data)
        else:
            return
        errors = crd_errors(document)
        if errors:
            raise kmock.KubernetesError(status=422, reason="Invalid", message="; ".join(errors[:5]))

    def _current(self, request: rendering.Request) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            return dict(self.objects[key].raw)
        return None


def _merged(old: Any, patch: Any) -> Any:
    if not isinstance(old, dict) or not isinstance(patch, dict):
        return patch
    result = dict(old)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merged(old.get(key), value)
    return result


class Cluster:
    """The emulator served from a background thread, and a client for the tests."""

    def __init__(self) -> None:
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, name="kube-emulator", daemon=True)

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with ApiServerEmulator() as emulator, kmock.Server(emulator) as server:
            emulator.resources.load_bundled()
            for key, info in CUSTOM_RESOURCES.items():
                emulator.resources[key] = kmock.ResourceInfo(
                    **info,
                    verbs={"list", "watch", "get", "create", "patch", "update", "delete"},
                    subresources={"status"},
                )
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def start(self) -> Cluster:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Kubernetes emulator did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    # -- a client, through the HTTP API like kubectl

    def path(self, plural: str, name: str | None = None, namespace: str | None = None) -> str:
        base = (
            "/api/v1"
            if plural in ("nodes", "secrets", "events", "namespaces", "pods")
            else (f"/apis/{GROUP_VERSION}")
        )
        scope = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{scope}/{plural}" + (f"/{name}" if name else "")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        with httpx.Client(base_url=self.url, timeout=10) as client:
            return client.request(method, path, headers=headers, **kwargs)

    def create(self, plural: str, body: dict[str, Any], namespace: str | None = None) -> None:
        response = self.request("POST", self.path(plural, namespace=namespace), json=body)
        assert response.status_code in (200, 201), response.text

    def get(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        response = self.request("GET", self.path(plural, name, namespace))
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return dict(response.json())

    def patch(
        self, plural: str, name: str, body: dict[str, Any], namespace: str | None = None
    ) -> None:
        response = self.request("PATCH", self.path(plural, name, namespace), json=body)
        assert response.status_code == 200, response.text

    def delete(self, plural: str, name: str, namespace: str | None = None) -> None:
        response = self.request("DELETE", self.path(plural, name, namespace))
        assert response.status_code in (200, 202, 404), response.text

    def items(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        response = self.request("GET", self.path(plural, namespace=namespace))
        assert response.status_code == 200, response.text
        return list(response.json()["items"])


@contextmanager
def emulated_cluster() -> Iterator[Cluster]:
    cluster = Cluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


def git_source(name: str, namespace: str, url: str, **spec: Any) -> dict[str, Any]:
    """A GitSource object as a cluster holds it (interval 1 h: passes at the start and
    when woken)."""
    return {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "GitSource",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"url": url, "interval": "1h", **spec},
    }
