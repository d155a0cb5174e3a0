"""Restarts, upgrades and removal, with real traffic counted throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bpfleet_agent import libbpf, loading, pins
from bpfleet_agent.daemon import Agent
from tests.conftest import build_catalog, sign_object
from tests.nodeagent.conftest import AgentEnv, program
from tests.nodeagent.netns import entered, in_netns, veth_pair
from tests.nodeagent.traffic import send_udp

pytestmark = pytest.mark.bpf

IPPROTO_UDP = 17


def xdp_program(interface: str, version: str = "1.0.0") -> dict[str, Any]:
    return program(
        "xdp",
        "xdp_counter",
        version,
        {"entryPoint": "xdp_count", "type": "xdp", "interfaces": [interface]},
    )


def udp_packets(env: AgentEnv, name: str = "xdp") -> int:
    program_pins = pins.for_program(env.pin_root, name)
    tag = next(p.name for p in program_pins.root.iterdir() if pins.is_tag(p.name))
    return loading.read_counter_map(program_pins.map(tag, "proto_stats")).get(IPPROTO_UDP, (0, 0))[
        0
    ]


def wait_for_status(
    env: AgentEnv, predicate: Any, after: float, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            document = json.loads((env.state_dir / "status.json").read_text())
        except (OSError, ValueError):
            document = None
        if (
            document
            and os.stat(env.state_dir / "status.json").st_mtime > after
            and predicate(document)
        ):
            return dict(document)
        time.sleep(0.1)
    raise AssertionError("the agent never reported the expected status")


def start_agent(env: AgentEnv, netns: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        in_netns(netns, sys.executable, "-m", "bpfleet_agent"),
        env={**os.environ, **env.environment()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def programs_by_name(document: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: p for p in document["programs"]}


def test_kill_9_keeps_programs_counting_and_restart_adopts_them(agent_env: AgentEnv) -> None:
    with veth_pair(subnet=84) as pair:
        agent_env.write_desired(xdp_program(pair.left_if))
        started = time.time()
        agent = start_agent(agent_env, pair.left)
        try:
            first = wait_for_status(
                agent_env,
                lambda d: programs_by_name(d).get("xdp", {}).get("state") == "Attached",
                started,
            )
            agent.send_signal(signal.SIGKILL)
            agent.wait(timeout=10)

            before = udp_packets(agent_env)
            assert send_udp(pair.right, pair.left_ip, 9000, count=100).wait(timeout=30) == 0
            assert udp_packets(agent_env) == before + 100  # attached and counting with no agent

            restarted = time.time()
            agent = start_agent(agent_env, pair.left)
            second = wait_for_status(
                agent_env,
                lambda d: programs_by_name(d).get("xdp", {}).get("state") == "Attached",
                restarted,
            )
            old, new = programs_by_name(first)["xdp"], programs_by_name(second)["xdp"]
            assert new["programIds"] == old["programIds"]
            assert [link["linkId"] for link in new["links"]] == [
                link["linkId"] for link in old["links"]
            ]

            removed = time.time()
            agent_env.write_desired()
            third = wait_for_status(
                agent_env,
                lambda d: programs_by_name(d).get("xdp", {}).get("state") == "Detached",
                removed,
            )
            assert programs_by_name(third)["xdp"]["reason"] == "RemovedFromDesiredState"
            assert not (agent_env.pin_root / "xdp").exists()
            with entered(pair.left):
                assert libbpf.query_xdp(__import__("socket").if_nametoindex(pair.left_if)) == []
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=10)


@pytest.fixture(scope="module")
def upgraded_xdp_counter(tmp_path_factory: pytest.TempPathFactory, signed_catalog: Any) -> Path:
    """xdp_counter built again as revision 2 (different bytes), signed as 2.0.0."""
    root = tmp_path_factory.mktemp("xdp-v2")
    build_catalog(root / "build", "-DXDP_COUNTER_REVISION=2")
    sign_object(
        root / "build" / "xdp_counter.bpf.o",
        root / "artifacts" / "xdp_counter" / "2.0.0",
        "xdp_counter",
        "2.0.0",
        signed_catalog.private_key,
    )
    return root / "artifacts"


def test_upgrade_swaps_the_program_without_losing_a_packet(
    agent_env: AgentEnv, upgraded_xdp_counter: Path
) -> None:
    agent_env.artifact_dirs.append(upgraded_xdp_counter)
    with veth_pair(subnet=85) as pair, entered(pair.left):
        agent = Agent(agent_env.settings())
        agent_env.write_desired(xdp_program(pair.left_if, "1.0.0"))
        v1 = {p.name: p for p in agent.reconcile_file(agent_env.desired_file).programs}["xdp"]
        assert v1.state == "Attached"

        sender = send_udp(pair.right, pair.left_ip, 9001, count=1500, rate=500)
        time.sleep(1.0)
        agent_env.write_desired(xdp_program(pair.left_if, "2.0.0"), revision=2)
        v2 = {p.name: p for p in agent.reconcile_file(agent_env.desired_file).programs}["xdp"]
        assert sender.poll() is None, "the upgrade must happen while traffic flows"
        assert sender.wait(timeout=60) == 0

        assert v2.state == "Attached", v2.message
        assert v2.artifact == "xdp_counter@2.0.0"
        assert v2.program_ids["xdp_count"] != v1.program_ids["xdp_count"]
        assert v2.links[0].link_id == v1.links[0].link_id  # swapped behind the same link
        assert {m.name: m.map_id for m in v2.maps}["proto_stats"] == {
            m.name: m.map_id for m in v1.maps
        }["proto_stats"]
        assert udp_packets(agent_env) == 1500  # every datagram counted, by one version or the other
        versions = [p.name for p in (agent_env.pin_root / "xdp").iterdir() if pins.is_tag(p.name)]
        assert len(versions) == 1  # the old version is unpinned
