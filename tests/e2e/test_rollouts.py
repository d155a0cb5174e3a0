"""Rollouts across three real agents: steps, incompatible nodes, failure budgets with
automatic rollback, and a worker killed while Redis restarts."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from bpfleet_cli.localfleet import Bridge, FleetNode, local_fleet
from bpfleet_core.features import FeatureReport
from tests import services
from tests.conftest import SignedCatalog
from tests.e2e.conftest import program, uploaded
from tests.polling import wait_for

pytestmark = [pytest.mark.bpf, pytest.mark.services]

REPO = Path(__file__).resolve().parents[2]
LABELS = [{"tier": "edge"}, {"tier": "edge"}, {"tier": "edge"}]


def registered(client: httpx.Client, nodes: list[FleetNode]) -> None:
    names = {node.name for node in nodes}
    wait_for(
        lambda: names <= {n["name"] for n in client.get("/v1/nodes").json()},
        60,
        "nodes to register",
    )


def phase_is(client: httpx.Client, name: str, *phases: str) -> Any:
    def check() -> dict[str, Any] | None:
        document = program(client, name)
        return document if document["rollout"]["phase"] in phases else None

    return check


def without_ringbuf() -> dict[str, Any]:
    report = FeatureReport.model_validate_json(
        (REPO / "tests" / "cli" / "feature-report.json").read_text()
    )
    report = report.model_copy(
        update={
            "kernel_release": os.uname().release,
            "map_types": {**report.map_types, "ringbuf": False},
        }
    )
    return dict(json.loads(report.to_json()))


def test_three_step_rollout_with_an_incompatible_node(
    api: services.Api, network: Bridge, signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    api.start_worker()
    uploaded(api, signed_catalog, "execsnoop")
    with (
        local_fleet(
            api.url,
            api.bootstrap_token,
            network,
            trust=signed_catalog.trust,
            work=tmp_path,
            labels=LABELS,
            features={2: without_ringbuf()},
        ) as nodes,
        api.client() as client,
    ):
        registered(client, nodes)
        spec = {
            "artifact": {"name": "execsnoop", "version": "1.0.0"},
            "attach": [{"entryPoint": "handle_exec", "type": "tracepoint"}],
            "nodeSelector": {"matchLabels": {"tier": "edge"}},
            "rollout": {"steps": ["1", "2", "100%"]},
        }
        assert client.put("/v1/programs/execs", json=spec).status_code == 200
        done = wait_for(
            phase_is(client, "execs", "Succeeded", "Failed", "RolledBack"), 90, "the rollout"
        )
        assert done["rollout"]["phase"] == "Succeeded", done
        assert done["summary"] == {
            "desired": 3,
            "attached": 2,
            "failed": 0,
            "incompatible": 1,
            "pending": 0,
        }
        details = {row["node"]: row for row in client.get("/v1/programs/execs/nodes").json()}
        assert details[nodes[2].name]["state"] == "Incompatible"
        assert "kernel lacks map type ringbuf" in details[nodes[2].name]["message"]
        assert nodes[0].program_state("execs") == "Attached"
        events = [e["reason"] for e in client.get("/v1/programs/execs/events").json()]
        assert "RolloutSucceeded" in events
        # The steps happened in order: one node, then two, then all.
        assert json.loads(json.dumps(done["rollout"]["updatedNodes"])) == sorted(
            n.name for n in nodes
        )


def test_failure_budget_rolls_updated_nodes_back(
    api: services.Api, network: Bridge, signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    api.start_worker()
    uploaded(api, signed_catalog, "tc_counter")
    with (
        local_fleet(
            api.url,
            api.bootstrap_token,
            network,
            trust=signed_catalog.trust,
            work=tmp_path,
            labels=LABELS,
        ) as nodes,
        api.client() as client,
    ):
        registered(client, nodes)

        def spec(interface: str) -> dict[str, Any]:
            return {
                "artifact": {"name": "tc_counter", "version": "1.0.0"},
                "attach": [
                    {
                        "entryPoint": "tc_ingress",
                        "type": "tc",
                        "direction": "ingress",
                        "interfaces": [interface],
                    }
                ],
                "rollout": {"steps": ["1", "2", "100%"], "failureBudget": 0},
            }

        assert client.put("/v1/programs/counter", json=spec("eth0")).status_code == 200
        wait_for(phase_is(client, "counter", "Succeeded"), 90, "version 1 everywhere")
        before = {node.name: node.status() for node in nodes}

        # Version 2 attaches to an interface that only exists on node 0.
        from bpfleet_cli.localfleet import ip

        ip("link", "add", "eth1", "type", "veth", "peer", "name", "eth1-peer", netns=nodes[0].netns)
        ip("link", "set", "eth1", "up", netns=nodes[0].netns)
        assert client.put("/v1/programs/counter", json=spec("eth1")).status_code == 200
        done = wait_for(
            phase_is(client, "counter", "RolledBack", "Succeeded", "Failed"),
            90,
            "the second rollout",
        )
        assert done["rollout"]["phase"] == "RolledBack", done
        assert "over the failure budget of 0" in done["rollout"]["message"]
        assert done["rollout"]["updatedNodes"] == [nodes[0].name, nodes[1].name]

        # Nodes 0 and 1 return to version 1 on their own; node 2 never saw version 2.
        def back_on_version_1() -> bool:
            rows = {row["node"]: row for row in client.get("/v1/programs/counter/nodes").json()}
            return all(
                rows[n.name]["generation"] == 1 and rows[n.name]["state"] == "Attached"
                for n in nodes
            )

        wait_for(back_on_version_1, 60, "nodes back on version 1")
        for node in nodes:
            hooks = [
                link["hook"]
                for p in node.status()["programs"]
                if p["name"] == "counter"
                for link in p["links"]
            ]
            assert hooks == ["tc ingress on eth0"], (node.name, hooks)
        assert (
            before[nodes[2].name]["programs"][0]["programIds"]
            == nodes[2].status()["programs"][0]["programIds"]
        )


def test_worker_killed_and_redis_restarted_mid_rollout(
    api: services.Api,
    network: Bridge,
    redis: services.Redis,
    signed_catalog: SignedCatalog,
    tmp_path: Path,
) -> None:
    worker = api.start_worker()
    uploaded(api, signed_catalog, "syscount")
    with (
        local_fleet(
            api.url,
            api.bootstrap_token,
            network,
            trust=signed_catalog.trust,
            work=tmp_path,
            labels=LABELS,
        ) as nodes,
        api.client() as client,
    ):
        registered(client, nodes)
        revisions = {n["name"]: n["desiredRevision"] for n in client.get("/v1/nodes").json()}
        spec = {
            "artifact": {"name": "syscount", "version": "1.0.0"},
            "attach": [{"entryPoint": "count_sys_enter", "type": "raw_tracepoint"}],
            "rollout": {"steps": ["1", "2", "100%"], "bakeSeconds": 2},
        }
        assert client.put("/v1/programs/sys", json=spec).status_code == 200
        wait_for(
            lambda: program(client, "sys")["rollout"]["phase"] == "Baking", 60, "the first bake"
        )

        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        redis.restart()  # no persistence: every queued task is gone
        api.start_worker()

        done = wait_for(
            phase_is(client, "sys", "Succeeded", "Failed", "RolledBack"),
            120,
            "the rollout to finish",
        )
        assert done["rollout"]["phase"] == "Succeeded", done
        assert done["summary"]["attached"] == 3
        # Nothing applied twice: each node got exactly one new revision for this rollout.
        after = {n["name"]: n["desiredRevision"] for n in client.get("/v1/nodes").json()}
        assert {name: after[name] - revisions[name] for name in revisions} == {
            n.name: 1 for n in nodes
        }
        events = [e["reason"] for e in client.get("/v1/programs/sys/events").json()]
        assert events.count("RolloutStarted") == 1
        assert events.count("RolloutSucceeded") == 1
