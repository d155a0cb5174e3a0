"""Programs attached by the agent see real traffic, execs and TCP connections."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from bpfleet_agent import libbpf, loading, pins
from bpfleet_agent.daemon import Agent
from bpfleet_core.protocol import NodeReport, ProgramState
from tests.nodeagent.conftest import AgentEnv, program
from tests.nodeagent.netns import entered, veth_pair
from tests.nodeagent.traffic import send_udp, tcp_exchange

pytestmark = pytest.mark.bpf

IPPROTO_UDP = 17


def attached(report: NodeReport, name: str) -> dict[str, int]:
    by_name = {p.name: p for p in report.programs}
    assert by_name[name].state == ProgramState.ATTACHED, by_name[name].message
    return by_name[name].program_ids


def map_path(env: AgentEnv, report: NodeReport, name: str, map_name: str) -> Path:
    program_report = next(p for p in report.programs if p.name == name)
    tag = pins.load_tag(program_report.digest, {})
    return pins.for_program(env.pin_root, name).map(tag, map_name)


def test_xdp_and_tc_count_packets_between_namespaces(agent_env: AgentEnv) -> None:
    with veth_pair(subnet=81) as pair, entered(pair.left):
        agent_env.write_desired(
            program(
                "xdp",
                "xdp_counter",
                "1.0.0",
                {"entryPoint": "xdp_count", "type": "xdp", "interfaces": [pair.left_if]},
            ),
            program(
                "tc",
                "tc_counter",
                "1.0.0",
                {
                    "entryPoint": "tc_ingress",
                    "type": "tc",
                    "direction": "ingress",
                    "interfaces": [pair.left_if],
                },
                {
                    "entryPoint": "tc_egress",
                    "type": "tc",
                    "direction": "egress",
                    "interfaces": [pair.left_if],
                },
            ),
        )
        agent = Agent(agent_env.settings())
        report = agent.reconcile_file(agent_env.desired_file)
        attached(report, "xdp")
        attached(report, "tc")

        sender = send_udp(pair.right, pair.left_ip, 9999, count=200)
        assert sender.wait(timeout=30) == 0

        proto = loading.read_counter_map(map_path(agent_env, report, "xdp", "proto_stats"))
        packets, octets = proto[IPPROTO_UDP]
        assert packets == 200
        assert octets >= 200 * (14 + 20 + 8 + 64)
        directions = loading.read_counter_map(map_path(agent_env, report, "tc", "dir_stats"))
        assert directions[0][0] >= 200  # ingress: the datagrams (and ARP)
        assert 1 in directions  # egress: at least the ARP reply

        # The report carries kernel ids and live statistics.
        again = agent.reconcile_file(agent_env.desired_file)
        xdp = next(p for p in again.programs if p.name == "xdp")
        assert xdp.stats["xdp_count"].run_count >= 200
        assert xdp.links[0].hook == f"xdp on {pair.left_if}"
        assert {m.name for m in xdp.maps} >= {"proto_stats"}


def _read_ring(path: Path, until: float, wanted: object) -> list[bytes]:
    records: list[bytes] = []
    fd = libbpf.get_pinned(path)
    try:
        with libbpf.RingBuffer(fd, records.append) as ring:
            while time.monotonic() < until and not any(wanted(r) for r in records):  # type: ignore[operator]
                ring.poll(100)
    finally:
        os.close(fd)
    return records


def test_exec_tracer_streams_an_exec(agent_env: AgentEnv) -> None:
    agent_env.write_desired(
        program("execs", "execsnoop", "1.0.0", {"entryPoint": "handle_exec", "type": "tracepoint"})
    )
    report = Agent(agent_env.settings()).reconcile_file(agent_env.desired_file)
    attached(report, "execs")
    marker = f"/tmp/bpfleet-exec-{uuid.uuid4().hex[:8]}"
    os.symlink("/bin/true", marker)
    try:
        subprocess.run([marker], check=True)
        records = _read_ring(
            map_path(agent_env, report, "execs", "events"),
            time.monotonic() + 5,
            lambda r: marker.encode() in r,
        )
    finally:
        os.unlink(marker)
    event = next(r for r in records if marker.encode() in r)
    pid, ppid, uid = struct.unpack_from("=III", event)
    filename = event[28:156].split(b"\0")[0].decode()
    assert filename == marker
    assert ppid == os.getpid()
    assert uid == os.getuid()
    assert pid > 0
    counted = loading.read_counter_map(map_path(agent_env, report, "execs", "exec_count"))
    assert counted[0][0] >= 1


def test_tcp_lifetime_tracer_sees_a_connection(agent_env: AgentEnv) -> None:
    with veth_pair(subnet=82) as pair:
        agent_env.write_desired(
            program(
                "tcplife",
                "tcplife",
                "1.0.0",
                {"entryPoint": "handle_set_state", "type": "tracepoint"},
                target_dport=8123,
            )
        )
        report = Agent(agent_env.settings()).reconcile_file(agent_env.desired_file)
        attached(report, "tcplife")
        tag = pins.load_tag(
            next(p for p in report.programs if p.name == "tcplife").digest, {"target_dport": 8123}
        )
        events = pins.for_program(agent_env.pin_root, "tcplife").map(tag, "events")
        tcp_exchange(pair.right, pair.left, pair.left_ip, 8123, payload=5000)
        records = _read_ring(
            events, time.monotonic() + 5, lambda r: struct.unpack_from("=H", r, 70)[0] == 8123
        )
    event = next(r for r in records if struct.unpack_from("=H", r, 70)[0] == 8123)
    rx_bytes, tx_bytes = struct.unpack_from("=QQ", event, 48)
    _sport, dport, family = struct.unpack_from("=HHH", event, 68)
    assert dport == 8123
    assert family == 2  # AF_INET
    assert event[16:20] == bytes([10, 82, 0, 1])  # daddr: the server
    assert rx_bytes >= 5000
    assert tx_bytes >= 5000


SYS_GETPID = {"x86_64": 39, "aarch64": 172}[os.uname().machine]


def test_raw_tracepoint_counts_syscalls_of_one_process(agent_env: AgentEnv) -> None:
    agent_env.write_desired(
        program(
            "syscount",
            "syscount",
            "1.0.0",
            {"entryPoint": "count_sys_enter", "type": "raw_tracepoint"},
            target_tgid=os.getpid(),
        )
    )
    report = Agent(agent_env.settings()).reconcile_file(agent_env.desired_file)
    attached(report, "syscount")
    tag = pins.load_tag(
        next(p for p in report.programs if p.name == "syscount").digest,
        {"target_tgid": os.getpid()},
    )
    counts_path = pins.for_program(agent_env.pin_root, "syscount").map(tag, "syscall_counts")
    before = loading.read_counter_map(counts_path).get(SYS_GETPID, (0,))[0]
    for _ in range(1000):
        os.getpid()
    after = loading.read_counter_map(counts_path).get(SYS_GETPID, (0,))[0]
    assert after - before >= 1000
    # Another process making as many getpid calls: filtered out by target_tgid.
    subprocess.run(
        [sys.executable, "-c", "import os\nfor _ in range(1000): os.getpid()"], check=True
    )
    assert loading.read_counter_map(counts_path).get(SYS_GETPID, (0,))[0] - after < 50


def test_cgroup_skb_counts_traffic_of_processes_in_the_cgroup(agent_env: AgentEnv) -> None:
    from bpfleet_agent import mounts

    cgroup_name = f"bpfleet-test-{uuid.uuid4().hex[:8]}"
    cgroup = mounts.ensure_cgroup2() / cgroup_name
    cgroup.mkdir()
    try:
        agent_env.write_desired(
            program(
                "cgroup",
                "cgroup_counter",
                "1.0.0",
                {"entryPoint": "cgroup_ingress", "type": "cgroup_skb", "cgroup": cgroup_name},
                {
                    "entryPoint": "cgroup_egress",
                    "type": "cgroup_skb",
                    "cgroup": cgroup_name,
                    "direction": "egress",
                },
            )
        )
        report = Agent(agent_env.settings()).reconcile_file(agent_env.desired_file)
        attached(report, "cgroup")
        member = subprocess.run(
            [
                "/bin/sh",
                "-c",
                f'echo $$ > {cgroup}/cgroup.procs && exec {sys.executable} -c "'
                "import socket; r=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.bind(('127.0.0.1', 0));"
                "s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
                "[s.sendto(b'x'*32, r.getsockname()) for _ in range(50)];"
                '[r.recv(64) for _ in range(50)]"',
            ],
            check=True,
            timeout=30,
        )
        assert member.returncode == 0
        counts = loading.read_counter_map(map_path(agent_env, report, "cgroup", "dir_stats"))
        assert counts[0][0] >= 50  # ingress
        assert counts[1][0] >= 50  # egress
    finally:
        from bpfleet_agent import loading as agent_loading

        agent_loading.remove(
            agent_loading.Kernel(
                agent_env.pin_root, mounts.ensure_tracefs(), mounts.ensure_cgroup2()
            ),
            "cgroup",
        )
        cgroup.rmdir()
