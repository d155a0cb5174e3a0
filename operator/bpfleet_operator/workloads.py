"""Pure: what the fleet's policy topology takes from Kubernetes objects.

A workload is a pod as network policies see it: namespace, name, labels, IP and named
container ports, on one node. Only pods that have an IP of their own and run are
workloads: a pending pod has no IP yet, a finished one holds none, and a host-network
pod shares the node's address, which no pod policy may claim.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Port:
    name: str | None
    port: int
    protocol: str


@dataclass(frozen=True)
class Workload:
    node: str
    namespace: str
    name: str
    labels: tuple[tuple[str, str], ...]
    ip: str
    ports: tuple[Port, ...]

    def to_json(self) -> dict[str, Any]:
        """The body the fleet API takes (``PUT /v1/nodes/{node}/workloads``)."""
        return {
            "namespace": self.namespace,
            "name": self.name,
            "labels": dict(self.labels),
            "ip": self.ip,
            "ports": [
                {"name": port.name, "port": port.port, "protocol": port.protocol}
                for port in self.ports
            ],
        }


def workload(pod: Mapping[str, Any]) -> Workload | None:
    """The pod as a workload, or None when it is not one (see the module docstring)."""
    meta, spec, status = (pod.get(key) or {} for key in ("metadata", "spec", "status"))
    node, ip = spec.get("nodeName"), status.get("podIP")
    if not node or not ip or status.get("phase") != "Running" or spec.get("hostNetwork"):
        return None
    ports = tuple(
        Port(port.get("name"), int(port["containerPort"]), port.get("protocol") or "TCP")
        for container in spec.get("containers") or []
        for port in container.get("ports") or []
        if port.get("containerPort")
    )
    return Workload(
        node=node,
        namespace=meta.get("namespace") or "default",
        name=meta["name"],
        labels=tuple(sorted((meta.get("labels") or {}).items())),
        ip=ip,
        ports=ports,
    )


def pod_cidrs(node: Mapping[str, Any]) -> list[str]:
    """The node's pod CIDRs (``spec.podCIDRs``, or the older single ``spec.podCIDR``)."""
    spec = node.get("spec") or {}
    return list(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))


def as_body(found: Iterable[Workload]) -> list[dict[str, Any]]:
    """Workloads in a stable order, as the API takes them."""
    return [item.to_json() for item in sorted(found, key=lambda item: (item.namespace, item.name))]
