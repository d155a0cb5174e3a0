"""Kubernetes as the truth of the policy topology: pods, namespaces and nodes mirrored to
the fleet API, pushed only when changed, pushed again when the API lacks them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bpfleet_operator import workloads
from bpfleet_operator.fleetapi import FleetApi
from bpfleet_operator.mirror import Mirror
from tests import services
from tests.operator.fleetrecorder import FleetRecorder
from tests.operator.kubernetes import Cluster
from tests.operator.processes import operator
from tests.polling import wait_for


def pod(
    name: str,
    node: str | None = "node-a",
    ip: str | None = "10.244.1.5",
    phase: str = "Running",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name}},
        "spec": {
            **({"nodeName": node} if node else {}),
            "containers": [
                {
                    "name": "main",
                    "image": "web",
                    "ports": [
                        {"name": "http", "containerPort": 8080},
                        {"containerPort": 53, "protocol": "UDP"},
                    ],
                }
            ],
            **spec,
        },
        "status": {"phase": phase, **({"podIP": ip} if ip else {})},
    }


WEB = {
    "namespace": "shop",
    "name": "web",
    "labels": {"app": "web"},
    "ip": "10.244.1.5",
    "ports": [
        {"name": "http", "port": 8080, "protocol": "TCP"},
        {"name": None, "port": 53, "protocol": "UDP"},
    ],
}


def test_a_running_pod_with_an_ip_of_its_own_is_a_workload() -> None:
    found = workloads.workload(pod("web"))
    assert found is not None
    assert (found.node, found.to_json()) == ("node-a", WEB)


@pytest.mark.parametrize(
    "not_one",
    [
        pod("pending", ip=None, phase="Pending"),
        pod("done", phase="Succeeded"),
        pod("unscheduled", node=None, ip=None, phase="Pending"),
        pod("host", hostNetwork=True),
    ],
)
def test_pods_without_an_ip_of_their_own_or_not_running_are_not(not_one: dict[str, Any]) -> None:
    assert workloads.workload(not_one) is None


def test_pod_cidrs_of_a_node() -> None:
    assert workloads.pod_cidrs({"spec": {"podCIDRs": ["10.244.1.0/24", "fd00::/64"]}}) == [
        "10.244.1.0/24",
        "fd00::/64",
    ]
    assert workloads.pod_cidrs({"spec": {"podCIDR": "10.244.2.0/24"}}) == ["10.244.2.0/24"]
    assert workloads.pod_cidrs({"spec": {}}) == []


@pytest.fixture
def fleet() -> Iterator[FleetRecorder]:
    with FleetRecorder() as recorder:
        yield recorder


@pytest.fixture
def mirror(fleet: FleetRecorder) -> Iterator[Mirror]:
    api = FleetApi(fleet.url, "token")
    yield Mirror(api)
    api.close()


def test_only_what_changed_is_pushed(fleet: FleetRecorder, mirror: Mirror) -> None:
    fleet.register("node-a")
    mirror.node("node-a", labels={"zone": "a"}, pod_cidrs=["10.244.1.0/24"], workloads=[WEB])
    mirror.node("node-a", labels={"zone": "a"}, pod_cidrs=["10.244.1.0/24"], workloads=[WEB])
    assert len(fleet.requests) == 3
    assert (fleet.labels, fleet.pod_cidrs, fleet.workloads) == (
        {"node-a": {"zone": "a"}},
        {"node-a": ["10.244.1.0/24"]},
        {"node-a": [WEB]},
    )
    mirror.node("node-a", workloads=[])
    assert fleet.sent("PUT", "/v1/nodes/node-a/workloads") == [
        {"workloads": [WEB]},
        {"workloads": []},
    ]
    assert len(fleet.requests) == 4


def test_a_node_the_fleet_does_not_know_yet_is_pushed_once_it_does(
    fleet: FleetRecorder, mirror: Mirror
) -> None:
    mirror.node("node-b", labels={"zone": "b"}, pod_cidrs=["10.244.2.0/24"], workloads=[])
    assert fleet.sent("PUT", "/v1/nodes/node-b/labels") == [{"labels": {"zone": "b"}}]
    assert "node-b" not in fleet.workloads
    mirror.resync()  # still unknown: one listing, and nothing sent to a node with no agent
    assert len(fleet.sent("PUT", "/v1/nodes/node-b/labels")) == 1
    fleet.register("node-b", {"from": "agent"})
    mirror.resync()
    assert fleet.labels["node-b"] == {"zone": "b"}
    assert fleet.pod_cidrs["node-b"] == ["10.244.2.0/24"]
    assert fleet.workloads["node-b"] == []


def test_labels_lost_to_a_re_registration_are_pushed_again(
    fleet: FleetRecorder, mirror: Mirror
) -> None:
    fleet.register("node-a")
    mirror.node("node-a", labels={"zone": "a"}, pod_cidrs=["10.244.1.0/24"], workloads=[WEB])
    before = len(fleet.requests)
    mirror.resync()  # nothing lost: one listing, nothing pushed
    assert len(fleet.requests) == before + 1
    fleet.register("node-a", {"from": "agent"})  # the agent registered again
    mirror.resync()
    assert fleet.labels["node-a"] == {"zone": "a"}
    assert len(fleet.sent("PUT", "/v1/nodes/node-a/workloads")) == 2  # everything again


def test_namespaces_are_pushed_once_retried_when_the_fleet_was_down_and_removed(
    fleet: FleetRecorder, mirror: Mirror
) -> None:
    mirror.namespace("shop", {"team": "a"})
    mirror.namespace("shop", {"team": "a"})
    assert fleet.sent("PUT", "/v1/namespaces/shop") == [{"labels": {"team": "a"}}]
    fleet.failing = True
    mirror.namespace("shop", {"team": "b"})
    mirror.namespace_gone("gone")
    fleet.failing = False
    mirror.resync()
    assert fleet.namespaces == {"shop": {"team": "b"}}
    assert fleet.sent("DELETE", "/v1/namespaces/gone") == [None, None]


def test_the_operator_mirrors_pods_namespaces_and_nodes(
    fleet: FleetRecorder, cluster: Cluster, tmp_path: Path
) -> None:
    node_a, node_b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    fleet.register(node_a)
    cluster.create(
        "namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "shop", "labels": {"team": "a"}},
        },
    )
    for name, cidr in ((node_a, "10.244.1.0/24"), (node_b, "10.244.2.0/24")):
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"zone": name[0]}},
            "spec": {"podCIDRs": [cidr]},
        }
        cluster.create("nodes", node)
    cluster.create("pods", pod("web", node_a), namespace="shop")
    cluster.create("pods", pod("starting", node_a, ip=None, phase="Pending"), namespace="shop")
    cluster.create(
        "pods", pod("agent", node_a, ip="192.168.0.10", hostNetwork=True), namespace="shop"
    )
    cluster.create("pods", pod("db", node_b, ip="10.244.2.7"), namespace="shop")
    api = services.Api(fleet.url, "token", "", {})
    with operator(api, cluster.url, tmp_path, resync_seconds=1):

        def node_a_mirrored() -> bool:
            return (
                fleet.workloads.get(node_a) == [WEB]
                and fleet.pod_cidrs.get(node_a) == ["10.244.1.0/24"]
                and fleet.labels.get(node_a) == {"zone": "a"}
            )

        wait_for(node_a_mirrored, 60, "node a's workloads, pod CIDRs and labels")
        wait_for(lambda: fleet.namespaces.get("shop") == {"team": "a"}, 30, "shop's labels")

        # The pod starts: it is a workload now. Another one goes.
        cluster.patch(
            "pods", "starting", {"status": {"phase": "Running", "podIP": "10.244.1.6"}}, "shop"
        )
        cluster.delete("pods", "web", "shop")
        wait_for(
            lambda: [w["name"] for w in fleet.workloads.get(node_a, [])] == ["starting"],
            30,
            "the workloads to follow the pods",
        )

        # Node b's agent registers late; node a's registers again and loses its labels.
        fleet.register(node_b)
        fleet.register(node_a, {"from": "agent"})
        wait_for(lambda: fleet.workloads.get(node_b), 30, "node b's workloads after it registered")
        assert fleet.workloads[node_b][0]["ip"] == "10.244.2.7"
        wait_for(lambda: fleet.labels[node_a] == {"zone": "a"}, 30, "node a's labels again")

        cluster.delete("namespaces", "shop")
        wait_for(lambda: "shop" not in fleet.namespaces, 30, "shop to be removed")
