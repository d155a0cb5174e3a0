"""Test data: the shared conformance files (``../shared/netpol`` beside the repository),
and the standard topology built in code so unit tests run without them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bpfleet_core.netpol import models, validating

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO / ".." / "shared" / "netpol"
TOPOLOGY = SHARED / "topology.json"
CASES = SHARED / "cases.json"
ABSENT = f"the shared conformance data is not at {SHARED.resolve()} (CI has it beside the clone)"
ORDER = ("x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c")


def cases() -> list[dict[str, Any]]:
    """The published cases, or [] when the shared data is absent."""
    if not CASES.exists():
        return []
    loaded: list[dict[str, Any]] = json.loads(CASES.read_text())["cases"]
    return loaded


def shared_topology() -> models.Topology:
    if not TOPOLOGY.exists():
        pytest.skip(ABSENT)
    return models.Topology.model_validate_json(TOPOLOGY.read_text())


def standard_topology() -> models.Topology:
    """Namespaces x, y, z; pods a, b, c in each, serving 80 and 81 on TCP, UDP and SCTP."""
    ports = [
        {"name": f"serve-{port}-{protocol.lower()}", "port": port, "protocol": protocol}
        for port in (80, 81)
        for protocol in ("TCP", "UDP", "SCTP")
    ]
    return models.Topology.model_validate(
        {
            "namespaces": {ns: {"ns": ns} for ns in "xyz"},
            "pods": {
                f"{ns}/{pod}": {
                    "labels": {"pod": pod},
                    "ip": f"10.0.{'xyz'.index(ns) + 1}.{'abc'.index(pod) + 1}",
                    "ports": ports,
                }
                for ns in "xyz"
                for pod in "abc"
            },
        }
    )


def policy(name: str, spec: dict[str, Any], namespace: str = "x", **bpfleet: Any) -> dict[str, Any]:
    """A policy document: networking.k8s.io/v1, or bpfleet.io/v1alpha1 with extra fields."""
    return {
        "apiVersion": "bpfleet.io/v1alpha1" if bpfleet else "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {**spec, **bpfleet},
    }


def policies(documents: list[dict[str, Any]]) -> list[models.Policy]:
    return [validating.validate(document).policy for document in documents]


def column(rows: dict[str, str], server: str) -> str:
    """The characters of one server's column, client by client."""
    index = ORDER.index(server)
    return "".join(rows[client][index] for client in ORDER)
