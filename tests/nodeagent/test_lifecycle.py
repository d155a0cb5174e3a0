"""Restarts, upgrades and removal, with real traffic counted throughout."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bpfleet_agent import libbpf, loading, mounts, pins
from bpfleet_agent.daemon import Agent
from tests.conftest import build_catalog, sign_object
from tests.nodeagent.conftest import AgentEnv, program
from tests.nodeagent.netns import entered, in_netns, ip, veth_pair
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
                assert libbpf.query_xdp(socket.if_nametoindex(pair.left_if)) == []
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


def signed_build(root: Path, catalog: Any, name: str, version: str, extra_cflags: str) -> Path:
    """The catalog built again with ``extra_cflags``; ``name`` signed as ``version``."""
    build_catalog(root / "build", extra_cflags)
    sign_object(
        root / "build" / f"{name}.bpf.o",
        root / "artifacts" / name / version,
        name,
        version,
        catalog.private_key,
    )
    return root / "artifacts"


@pytest.fixture(scope="module")
def execsnoop_v2(tmp_path_factory: pytest.TempPathFactory, signed_catalog: Any) -> Path:
    """execsnoop with one more .rodata constant (other bytes, same maps), signed as 2.0.0."""
    root = tmp_path_factory.mktemp("execsnoop-v2")
    revision = root / "revision.h"
    revision.write_text("const volatile int bpfleet_test_revision = 2;\n")
    return signed_build(root, signed_catalog, "execsnoop", "2.0.0", f"-include {revision}")


@pytest.fixture(scope="module")
def renamed_xdp_counter(tmp_path_factory: pytest.TempPathFactory, signed_catalog: Any) -> Path:
    """xdp_counter whose entry point is called xdp_count_v3, signed as 3.0.0."""
    root = tmp_path_factory.mktemp("xdp-v3")
    return signed_build(root, signed_catalog, "xdp_counter", "3.0.0", "-Dxdp_count=xdp_count_v3")


def bpftool_json(*args: str) -> Any:
    output = subprocess.run(
        ["bpftool", "-j", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output or "null")


def exec_marker() -> str:
    marker = f"/tmp/bpfleet-exec-{os.urandom(4).hex()}"
    os.symlink("/bin/true", marker)
    try:
        subprocess.run([marker], check=True)
    finally:
        os.unlink(marker)
    return marker


def test_tracepoint_upgrade_replaces_the_link_and_events_keep_flowing(
    agent_env: AgentEnv, execsnoop_v2: Path
) -> None:
    agent_env.artifact_dirs.append(execsnoop_v2)
    agent = Agent(agent_env.settings())

    def execsnoop(version: str) -> Any:
        agent_env.write_desired(
            program(
                "execs", "execsnoop", version, {"entryPoint": "handle_exec", "type": "tracepoint"}
            )
        )
        report = {p.name: p for p in agent.reconcile_file(agent_env.desired_file).programs}
        assert report["execs"].state == "Attached", report["execs"].message
        return report["execs"]

    v1 = execsnoop("1.0.0")
    tag = pins.load_tag(v1.digest, {})
    events = pins.for_program(agent_env.pin_root, "execs").map(tag, "events")
    seen: list[bytes] = []
    ring_fd = libbpf.get_pinned(events)  # one reader, from before the upgrade to after it
    try:
        with libbpf.RingBuffer(ring_fd, seen.append) as ring:
            before = exec_marker()
            v2 = execsnoop("2.0.0")
            after = exec_marker()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(after.encode() in r for r in seen):
                ring.poll(100)
    finally:
        os.close(ring_fd)
    assert any(before.encode() in record for record in seen)
    assert any(after.encode() in record for record in seen)  # v2 writes into the same ring

    assert v2.program_ids["handle_exec"] != v1.program_ids["handle_exec"]
    assert [link.program_id for link in v2.links] == [v2.program_ids["handle_exec"]]
    assert v2.links[0].link_id != v1.links[0].link_id  # tracepoint links cannot be updated
    links_dir = pins.for_program(agent_env.pin_root, "execs").links
    assert [p.name for p in links_dir.iterdir()] == [v2.links[0].name]  # no ~next left
    ours = {v1.program_ids["handle_exec"], v2.program_ids["handle_exec"]}
    live = [link for link in bpftool_json("link", "show") or [] if link["prog_id"] in ours]
    assert [link["id"] for link in live] == [v2.links[0].link_id]  # exactly one, the new one


def test_a_failed_hook_swaps_the_upgraded_ones_back(
    agent_env: AgentEnv, upgraded_xdp_counter: Path
) -> None:
    agent_env.artifact_dirs.append(upgraded_xdp_counter)
    with veth_pair(subnet=89) as pair, entered(pair.left):
        ip("link", "add", "veth-c", "type", "veth", "peer", "name", "veth-d")
        ip("link", "set", "veth-c", "up")
        agent = Agent(agent_env.settings())

        def xdp_on_both(version: str) -> Any:
            entry = program(
                "xdp",
                "xdp_counter",
                version,
                {"entryPoint": "xdp_count", "type": "xdp", "interfaces": [pair.left_if, "veth-c"]},
            )
            agent_env.write_desired(entry)
            return {p.name: p for p in agent.reconcile_file(agent_env.desired_file).programs}

        v1 = xdp_on_both("1.0.0")["xdp"]
        assert v1.state == "Attached", v1.message
        old = v1.program_ids["xdp_count"]
        ip("link", "del", "veth-c")  # the second hook can no longer be attached
        failed = xdp_on_both("2.0.0")["xdp"]
        assert failed.state == "AttachFailed"
        assert "veth-c" in failed.message
        # The first link was swapped to 2.0.0, then back when the second hook failed.
        assert libbpf.query_xdp(socket.if_nametoindex(pair.left_if)) == [old]
        kernel = loading.Kernel(
            agent_env.pin_root, mounts.ensure_tracefs(), mounts.ensure_cgroup2()
        )
        observed = loading.observe(kernel)["xdp"]
        assert observed.links[f"xdp@{pair.left_if}"].program_id == old
        assert list(observed.versions) == [pins.load_tag(v1.digest, {})]


def test_xdp_mode_change_and_entry_rename_never_stack_two_links_on_one_hook(
    agent_env: AgentEnv, renamed_xdp_counter: Path
) -> None:
    agent_env.artifact_dirs.append(renamed_xdp_counter)
    with veth_pair(subnet=80) as pair, entered(pair.left):
        agent = Agent(agent_env.settings())

        def attach(version: str, entry_point: str, mode: str) -> Any:
            agent_env.write_desired(
                program(
                    "xdp",
                    "xdp_counter",
                    version,
                    {
                        "entryPoint": entry_point,
                        "type": "xdp",
                        "interfaces": [pair.left_if],
                        "xdpMode": mode,
                    },
                )
            )
            report = {p.name: p for p in agent.reconcile_file(agent_env.desired_file).programs}
            assert report["xdp"].state == "Attached", report["xdp"].message
            return report["xdp"]

        def xdp_mode() -> str:
            (device,) = bpftool_json("net", "show", "dev", pair.left_if)[0]["xdp"]
            return str(device["mode"])

        auto = attach("1.0.0", "xdp_count", "auto")
        assert xdp_mode() == "driver"  # veth has native XDP: auto picks it
        generic = attach("1.0.0", "xdp_count", "generic")
        assert xdp_mode() == "generic"
        assert [link.name for link in generic.links] == [f"xdp@{pair.left_if}@generic"]
        assert generic.links[0].link_id != auto.links[0].link_id

        before = udp_packets(agent_env)
        assert send_udp(pair.right, pair.left_ip, 9002, count=50).wait(timeout=30) == 0
        assert udp_packets(agent_env) == before + 50  # counting in generic mode

        renamed = attach("3.0.0", "xdp_count_v3", "generic")
        assert set(renamed.program_ids) == {"xdp_count_v3"}
        assert renamed.links[0].link_id == generic.links[0].link_id  # swapped behind it
        assert libbpf.query_xdp(socket.if_nametoindex(pair.left_if)) == [
            renamed.program_ids["xdp_count_v3"]
        ]
