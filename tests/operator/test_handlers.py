"""The kopf handlers, running for real against the Kubernetes emulator and a real API:
hand-over, summary status, explicit errors, finalizers, node labels."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bpfleet_cli.localfleet import free_port
from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import ProgramState
from tests import services
from tests.api.conftest import recorded_features, upload
from tests.api.test_fleet_flow import ProtocolClient
from tests.conftest import SignedCatalog
from tests.gitrepos import GitRepo, SmartHttpServer
from tests.operator.kubernetes import Cluster, git_source
from tests.operator.processes import operator
from tests.polling import wait_for

pytestmark = pytest.mark.services
__all__ = ["recorded_features"]  # a fixture, shared with the API tests


@pytest.fixture(scope="module")
def api(
    redis: services.Redis,
    signed_catalog: SignedCatalog,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[services.Api]:
    logs = tmp_path_factory.mktemp("logs")
    with services.api_server(
        f"sqlite:///{logs}/bpfleet.db",
        redis.url,
        signed_catalog.trust,
        logs,
        rollout_tick_seconds="0.2",
        # A node silent for 12 s is Unknown (nodes here beat only when they report).
        heartbeat_min_seconds="1",
        node_unknown_seconds="12",
    ) as server:
        server.start_worker()
        upload(server, signed_catalog, "execsnoop")
        yield server


@pytest.fixture
def running_operator(api: services.Api, cluster: Cluster, tmp_path: Path) -> Iterator[Path]:
    with operator(api, cluster.url, tmp_path) as log:
        yield log


def program(name: str, group: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "BpfProgram",
        "metadata": {"name": name},
        "spec": {
            "artifact": {"name": "execsnoop", "version": "1.0.0"},
            "attach": [{"entryPoint": "handle_exec", "type": "tracepoint"}],
            "nodeSelector": {"matchLabels": {"group": group}},
            **spec,
        },
    }


def ready_condition(cluster: Cluster, name: str, status: str, reason: str) -> Any:
    def check() -> dict[str, Any] | None:
        found = cluster.get("bpfprograms", name) or {}
        for item in found.get("status", {}).get("conditions", []):
            if item["type"] == "Ready" and (item["status"], item["reason"]) == (status, reason):
                return found
        return None

    return check


def events_for(cluster: Cluster, name: str) -> list[str]:
    return [
        event["reason"]
        for event in cluster.items("events")
        if event.get("involvedObject", {}).get("name") == name
    ]


def test_a_program_is_handed_to_the_fleet_and_its_status_follows(
    api: services.Api,
    cluster: Cluster,
    running_operator: Path,
    recorded_features: FeatureReport,
) -> None:
    group = uuid.uuid4().hex[:6]
    node = ProtocolClient(api, f"kube-{group}", {"group": group}, recorded_features)
    cluster.create("bpfprograms", program(f"execs-{group}", group))
    wait_for(lambda: node.poll(wait=1), 30, "the assignment to reach the node")
    found = cluster.get("bpfprograms", f"execs-{group}")
    assert found is not None
    assert found["metadata"]["finalizers"] == ["bpfleet.io/finalizer"]

    node.report({f"execs-{group}": ProgramState.ATTACHED})
    done = wait_for(ready_condition(cluster, f"execs-{group}", "True", "Attached"), 30, "Ready")
    status = done["status"]
    assert status["ready"] == "1/1"
    assert status["counts"] == {
        "desired": 1,
        "attached": 1,
        "failed": 0,
        "incompatible": 0,
        "pending": 0,
    }
    assert status["observedGeneration"] == done["metadata"]["generation"] == 1
    # Summary only: nothing per node in the object.
    assert node.name not in str(status)
    wait_for(lambda: "Attached" in events_for(cluster, f"execs-{group}"), 10, "an Event")

    # A change of spec: a new generation goes to the fleet, Ready follows it.
    cluster.patch("bpfprograms", f"execs-{group}", {"spec": {"config": {"target_uid": 0}}})
    wait_for(lambda: node.poll(wait=1), 30, "the new assignment")
    node.report({f"execs-{group}": ProgramState.ATTACHED})

    def observed_two() -> bool:
        found = cluster.get("bpfprograms", f"execs-{group}") or {}
        status = found.get("status", {})
        return status.get("observedGeneration") == 2 and status.get("apiGeneration") == 2

    wait_for(observed_two, 30, "generation 2 to be observed")

    # Deleting waits for the node to report the program gone (the finalizer).
    cluster.delete("bpfprograms", f"execs-{group}")
    wait_for(lambda: node.poll(wait=1), 30, "the removal to reach the node")
    time.sleep(2)
    assert cluster.get("bpfprograms", f"execs-{group}") is not None  # still attached
    node.report({f"execs-{group}": ProgramState.DETACHED})
    wait_for(lambda: cluster.get("bpfprograms", f"execs-{group}") is None, 30, "the deletion")
    with api.client() as client:
        assert client.get(f"/v1/programs/execs-{group}").status_code == 404


def test_a_dead_node_does_not_hold_a_deletion_forever(
    api: services.Api,
    cluster: Cluster,
    running_operator: Path,
    recorded_features: FeatureReport,
) -> None:
    group = uuid.uuid4().hex[:6]
    name = f"dead-{group}"
    node = ProtocolClient(api, f"dead-{group}", {"group": group}, recorded_features)
    cluster.create("bpfprograms", program(name, group))
    wait_for(lambda: node.poll(wait=1), 30, "the assignment to reach the node")
    node.report({name: ProgramState.ATTACHED})
    wait_for(ready_condition(cluster, name, "True", "Attached"), 30, "Ready")

    # The node dies: it never says the program is gone. Its row stays, marked Unknown
    # once the node is silent past the unknown window, and the deletion goes through.
    cluster.delete("bpfprograms", name)
    wait_for(lambda: cluster.get("bpfprograms", name) is None, 60, "the deletion")
    with api.client() as client:
        rows = client.get(f"/v1/programs/{name}/nodes").json()
    assert [(row["node"], row["readiness"]) for row in rows] == [(node.name, "Unknown")]


def test_what_the_fleet_refuses_stalls_with_a_reason(
    cluster: Cluster, running_operator: Path
) -> None:
    missing = program("missing-artifact", "none")
    missing["spec"]["artifact"] = {"name": "execsnoop", "version": "9.9.9"}
    cluster.create("bpfprograms", missing)
    found = wait_for(
        ready_condition(cluster, "missing-artifact", "False", "Rejected"), 30, "Stalled"
    )
    stalled = {c["type"]: c for c in found["status"]["conditions"]}["Stalled"]
    assert "execsnoop" in stalled["message"]
    assert "9.9.9" in stalled["message"]

    invalid = program("invalid-spec", "none")
    invalid["spec"]["attach"] = [{"entryPoint": "handle_exec", "type": "tc"}]
    cluster.create("bpfprograms", invalid)
    found = wait_for(
        ready_condition(cluster, "invalid-spec", "False", "InvalidSpec"), 30, "Stalled"
    )
    ready = {c["type"]: c for c in found["status"]["conditions"]}["Ready"]
    assert "needs at least one interface" in ready["message"]


def test_node_labels_follow_kubernetes(
    api: services.Api,
    cluster: Cluster,
    running_operator: Path,
    recorded_features: FeatureReport,
) -> None:
    name = f"labelled-{uuid.uuid4().hex[:6]}"
    ProtocolClient(api, name, {"from": "agent"}, recorded_features)
    cluster.create(
        "nodes",
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"zone": "a"}}},
    )

    def labels() -> dict[str, str] | None:
        with api.client() as client:
            found = client.get(f"/v1/nodes/{name}").json()
        return found if found["adminLabels"] == {"zone": "a"} else None

    found = wait_for(labels, 30, "the node's labels to be synced")
    # Selectors see both, the operator's (Kubernetes') over the agent's.
    assert found["labels"] == {"from": "agent", "zone": "a"}


def test_node_labels_come_back_after_the_agent_registers_again(
    api: services.Api,
    cluster: Cluster,
    recorded_features: FeatureReport,
    tmp_path: Path,
) -> None:
    name = f"again-{uuid.uuid4().hex[:6]}"
    agent = ProtocolClient(api, name, {}, recorded_features)
    cluster.create(
        "nodes",
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"zone": "b"}}},
    )

    def labels() -> dict[str, str]:
        with api.client() as client:
            return dict(client.get(f"/v1/nodes/{name}").json()["labels"])

    with operator(api, cluster.url, tmp_path, resync_seconds=1):
        wait_for(lambda: labels() == {"zone": "b"}, 30, "the node's labels to be synced")
        # A lost token, a restored database: the agent registers again (with its node
        # key), declaring labels of its own; the operator's stay.
        ProtocolClient(api, name, {"from": "agent"}, recorded_features, node_key=agent.node_key)
        assert labels() == {"from": "agent", "zone": "b"}
        # An admin's labels wiped by hand (say, an API restored from an old backup) are
        # pushed again by the operator's resync.
        with api.client() as client:
            assert client.put(f"/v1/nodes/{name}/labels", json={"labels": {}}).status_code == 200
        wait_for(
            lambda: labels() == {"from": "agent", "zone": "b"}, 30, "the labels to be synced again"
        )


def source_condition(cluster: Cluster, name: str, namespace: str, reason: str) -> Any:
    def check() -> dict[str, Any] | None:
        found = cluster.get("gitsources", name, namespace) or {}
        for item in found.get("status", {}).get("conditions", []):
            if item["type"] == "Ready" and item["reason"] == reason:
                return dict(item)
        return None

    return check


def test_a_source_outside_the_trusted_namespaces_applies_no_program(
    cluster: Cluster, running_operator: Path, tmp_path: Path
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("one program", {"p.yaml": yaml.safe_dump(program("from-team", "nobody"))})
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    cluster.create("namespaces", namespace)
    cluster.create("gitsources", git_source("fleet", "team", str(repo.path)), namespace="team")
    ready = wait_for(source_condition(cluster, "fleet", "team", "OutOfScope"), 30, "OutOfScope")
    assert "cluster-scoped" in ready["message"]
    assert cluster.get("bpfprograms", "from-team") is None


def test_credentials_go_only_to_the_host_their_secret_names(
    cluster: Cluster, running_operator: Path, tmp_path: Path
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("one program", {"p.yaml": yaml.safe_dump(program("with-creds", "nobody"))})
    with SmartHttpServer(repo.path.parent, "ci", "t0ken") as server:
        data = {"username": "ci", "password": "t0ken", "ca.crt": server.ca}
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "git"},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
        }
        cluster.create("secrets", secret, namespace="default")
        source = git_source("creds", "default", server.url("repo"), secretRef={"name": "git"})
        cluster.create("gitsources", source, namespace="default")
        ready = wait_for(
            source_condition(cluster, "creds", "default", "SecretFailed"), 30, "refused"
        )
        assert "bpfleet.io/git-host" in ready["message"]
        assert not any(server.authorizations)  # nothing was sent anywhere

        # The Secret's owner says where its credentials may go: now they are used.
        annotations = {"bpfleet.io/git-host": "127.0.0.1"}
        cluster.patch("secrets", "git", {"metadata": {"annotations": annotations}}, "default")
        wait_for(lambda: cluster.get("bpfprograms", "with-creds"), 60, "the applied program")
    assert any(server.authorizations)


def test_deleting_a_source_with_prune_takes_its_objects_along(
    cluster: Cluster, running_operator: Path, tmp_path: Path
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("one program", {"p.yaml": yaml.safe_dump(program("from-git", "nobody"))})
    source = {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "GitSource",
        "metadata": {"name": "team", "namespace": "default"},
        "spec": {"url": str(repo.path), "interval": "1h"},
    }
    cluster.create("gitsources", source, namespace="default")
    found = wait_for(lambda: cluster.get("bpfprograms", "from-git"), 30, "the applied program")
    assert found["metadata"]["labels"]["bpfleet.io/gitsource"] == "default.team"
    wait_for(ready_condition(cluster, "from-git", "True", "NoNodesSelected"), 30, "Ready")
    cluster.delete("gitsources", "team", "default")
    wait_for(lambda: cluster.get("bpfprograms", "from-git") is None, 30, "the pruned program")
    wait_for(lambda: cluster.get("gitsources", "team", "default") is None, 30, "the source gone")


def test_sources_reach_the_dashboard_and_reconcile_now_wakes_them(
    api: services.Api, cluster: Cluster, running_operator: Path, tmp_path: Path
) -> None:
    """The operator reports each pass to the fleet API; "reconcile now" there runs a
    pass at once though the interval is an hour."""
    repo = GitRepo(tmp_path / "repo")
    first = repo.commit("one program", {"p.yaml": yaml.safe_dump(program("shown", "nobody"))})
    source = {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "GitSource",
        "metadata": {"name": "shown", "namespace": "default"},
        "spec": {"url": str(repo.path), "interval": "1h"},
    }
    cluster.create("gitsources", source, namespace="default")
    with api.client() as client:

        def reported(commit: str) -> Any:
            def check() -> dict[str, Any] | None:
                found = client.get("/v1/gitsources/default/shown")
                if found.status_code != 200:
                    return None
                document = dict(found.json())
                return document if document["lastAttemptedRevision"].endswith(commit) else None

            return check

        shown = wait_for(reported(first), 60, "the first pass reported to the fleet")
        assert shown["state"] == "Ready"
        assert shown["spec"]["interval"] == "1h"
        # Each inventory object with its nodes, once handed over and rolled out (to none).
        item = wait_for(
            lambda: next(
                (
                    i
                    for i in client.get("/v1/gitsources/default/shown").json()["inventory"]
                    if i["status"] == "Ready"
                ),
                None,
            ),
            30,
            "the program in the fleet",
        )
        assert item == {
            "kind": "BpfProgram",
            "namespace": None,
            "name": "shown",
            "ready": 0,
            "desired": 0,
            "status": "Ready",
        }
        assert client.get("/v1/programs/shown").json()["origin"]["name"] == "shown"

        second = repo.commit("a broken one", {"q.yaml": "kind: BpfProgram\nspec: {}\n"})
        assert client.post("/v1/gitsources/default/shown/reconcile").status_code == 202
        rejected = wait_for(reported(second), 30, "the requested pass reported")
        assert rejected["state"] in ("Stalled", "Failed")
        assert rejected["reconcilePending"] is False
        assert rejected["history"][0]["result"] == "Rejected"
        assert rejected["history"][0]["errors"][0]["file"] == "q.yaml"
    cluster.delete("gitsources", "shown", "default")
    with api.client() as client:
        wait_for(
            lambda: client.get("/v1/gitsources/default/shown").status_code == 404,
            30,
            "the deleted source forgotten by the fleet",
        )


def test_an_unreachable_fleet_is_retried_with_backoff_not_stalled(
    cluster: Cluster, tmp_path: Path
) -> None:
    unreachable = services.Api(f"http://127.0.0.1:{free_port()}", "token", "", {})
    with operator(unreachable, cluster.url, tmp_path):
        cluster.create("bpfprograms", program("waiting", "none"))

        def retried_twice() -> dict[str, Any] | None:
            found = cluster.get("bpfprograms", "waiting") or {}
            progress = (
                found.get("metadata", {}).get("annotations", {}).get("bpfleet.io/program_submitted")
            )
            record = json.loads(progress) if progress else {}
            return record if record.get("retries", 0) >= 2 else None

        record = wait_for(retried_twice, 30, "two retries")
        assert "fleet API unreachable" in record["message"]
        assert record["failure"] is False  # temporary: kopf keeps trying
        found = cluster.get("bpfprograms", "waiting") or {}
        kinds = {c["type"] for c in found.get("status", {}).get("conditions", [])}
        assert "Stalled" not in kinds


def report_policies(node: ProtocolClient, refs: list[str]) -> None:
    body = {
        "node": node.name,
        "revision": node.revision,
        "programs": [],
        "reportedAt": "2026-01-01T00:00:00Z",
        "policy": {
            "state": "Enforcing",
            "revision": node.revision,
            "policies": refs,
            "updatedAt": "2026-01-01T00:00:00Z",
        },
    }
    with node.api.client(node.token) as client:
        response = client.post("/v1/agent/status", json=body)
    assert response.status_code == 204, response.text


def test_a_network_policy_reaches_the_fleet_and_its_finalizer_waits_for_removal(
    api: services.Api,
    cluster: Cluster,
    running_operator: Path,
    recorded_features: FeatureReport,
) -> None:
    group = uuid.uuid4().hex[:6]
    namespace = f"shop-{group}"
    node = ProtocolClient(api, f"pods-{group}", {}, recorded_features)
    endpoints = {
        "endpoints": [
            {
                "namespace": namespace,
                "name": "db",
                "labels": {"app": "db"},
                "ip": f"10.{int(group[:2], 16)}.{int(group[2:4], 16)}.{int(group[4:], 16) % 250 + 2}",
                "interface": f"veth{group}",
            }
        ]
    }
    ip = endpoints["endpoints"][0]["ip"]
    with api.client() as admin:  # agents declare endpoints only inside their pod CIDRs
        cidrs = {"podCIDRs": [f"{ip}/32"]}
        assert admin.put(f"/v1/nodes/{node.name}/pod-cidrs", json=cidrs).status_code == 200
    with api.client(node.token) as client:
        assert client.put("/v1/agent/endpoints", json=endpoints).status_code == 204
    policy = {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "db-ingress", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
            "mode": "audit",
        },
    }
    cluster.create("networkpolicies", policy, namespace=namespace)

    def assigned() -> dict[str, Any] | None:
        document = node.poll(wait=1)
        return document if document and document.get("policy") else None

    part = wait_for(assigned, 30, "the policy to reach the node")["policy"]
    assert [p["document"]["metadata"]["name"] for p in part["policies"]] == ["db-ingress"]
    report_policies(node, [f"{namespace}/db-ingress@1"])

    def enforcing() -> dict[str, Any] | None:
        found = cluster.get("networkpolicies", "db-ingress", namespace) or {}
        status = found.get("status", {})
        return found if status.get("ready") == "1/1" else None

    found = wait_for(enforcing, 30, "the policy to be enforcing")
    ready = {c["type"]: c for c in found["status"]["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "Enforcing")

    cluster.delete("networkpolicies", "db-ingress", namespace)
    wait_for(lambda: node.poll(wait=1), 30, "the removal to reach the node")
    time.sleep(2)
    assert cluster.get("networkpolicies", "db-ingress", namespace) is not None  # still enforced
    report_policies(node, [])
    wait_for(
        lambda: cluster.get("networkpolicies", "db-ingress", namespace) is None, 30, "the deletion"
    )
